#!/usr/bin/env python3
"""Test SAML 2.0 IdP for samlgate integration tests (pysaml2 7.5.5 + /usr/bin/xmlsec1).

Usage:
  python3 tests/idp/pysaml2_idp.py --port P --key idp-key.pem --cert idp-cert.pem \
      --metadata-out idp-metadata.xml --sp-metadata sp-metadata.xml [--extra-cert c.pem ...]

Entity id http://127.0.0.1:P/idp, SSO http://127.0.0.1:P/sso (Redirect; POST also
accepted), SLO http://127.0.0.1:P/slo (Redirect). IdP metadata is written to
--metadata-out before listening; then exactly one line "READY" goes to stdout.
Each --extra-cert adds another signing KeyDescriptor (key rollover tests), after the signing
key's own, or before it with --signer-last.
The SP metadata is re-read on every request (it may appear after start-up).
Binds 127.0.0.1 only; request logs go to stderr.

HTTP API:
  GET  /sso?SAMLRequest=..&RelayState=..  parse the (unsigned) AuthnRequest with
       pysaml2, answer 200 with an auto-submitting HTML form:
       <form method="post" action="ACS"> + hidden inputs SAMLResponse / RelayState
       (RelayState only when the request had one).
  POST /control/next   JSON body; replaces the settings (missing keys = defaults,
       sticky until the next call). Answers {"ok":true}; 400 on unknown keys/values.
       name_id "alice" | name_id_format "persistent"|"email"|"transient"|"unspecified"
       attributes {name: [values]} (exact Names, xs:string values, given order)
       split_attributes [names]: one Attribute element per value
       friendly_names {name: friendly}: FriendlyName on those Attributes
       unique_name_id false: true appends "-<n>" (a counter) to the NameID of each response,
              so concurrent logins are distinct new subjects
       sign_assertion true | sign_response false
       sign_alg "rsa-sha256"|"rsa-sha1"|"rsa-sha512" | digest_alg "sha256"|"sha1"|"sha512"
       status "Success" | second-level code e.g. "AuthnFailed", "RequestDenied"
              (top-level Responder, no assertion)
       in_response_to true (false = omit InResponseTo everywhere)
       session_index null | not_on_or_after_seconds 300 | not_before_offset_seconds -60
       tamper null | "inject_unsigned_assertion_first" | "inject_unsigned_assertion_last"
              | "strip_signatures" | "edit_name_id"   (applied after signing)
              | "comment_in_name_id": put <!--x--> after the first `.` of the NameID text
                (exclusive c14n drops comments, so the signature still verifies)
              | "comment_in_attribute": put <!--x--> before the first `-` of the first
                AttributeValue that has one (same c14n effect as above)
              | "plant_digest_in_extensions": (sign_response) edit the NameID, sign the edited
                Response on the side and plant that recomputed DigestValue in a samlp:Extensions;
                the real SignedInfo and SignatureValue are untouched
              | "duplicate_id": a samlp:Extensions child carries the signed element's ID
              | "move_signed_into_extensions": the signed Assertion goes into samlp:Extensions
                and a forged unsigned Assertion for tamper_name_id takes its place
              | "hmac_signature": the Assertion is signed with HMAC-SHA256 (xmlsec1) keyed with
                the IdP certificate's DER bytes, instead of with the RSA key
       tamper_name_id "admin"  (NameID of the injected assertion / edited NameID)
       sign_with "idp" | "attacker": an RSA key listed nowhere (made at start), whose own
              certificate goes into ds:KeyInfo
       encrypt false: sign (if sign_assertion), then encrypt the Assertion into an
              EncryptedAssertion (xmlsec1), then sign the Response (if sign_response)
       enc_data "aes256-cbc" | "aes128-cbc" | "aes128-gcm" | "aes256-gcm"
       enc_key "rsa-oaep-mgf1p" | "rsa-oaep" | "rsa-1_5"  (key transport)
       enc_digest null | "sha256" (OAEP DigestMethod; null = SHA-1, none written)
       enc_cert 0: which `use="encryption"` certificate of the SP metadata to encrypt to
       enc_tamper null | "flip_ciphertext" (a bit of the data CipherValue) | "flip_key"
              (a bit of the EncryptedKey's CipherValue)
       require_signed_requests false: AuthnRequests and LogoutRequests must carry a valid
              HTTP-Redirect signature by the SP's metadata signing key (pysaml2 verifies it)
       assertion_issuer null | str (Assertion Issuer; null = this IdP's entity id)
       destination "acs" | str | null (Response Destination; null = omitted)
       recipient "acs" | str (SubjectConfirmationData Recipient)
       time_format "seconds" | "millis" | "7digits" | "offset" (every timestamp: 12:00:00Z,
              12:00:00.123Z, 12:00:00.1234567Z, 12:00:00+00:00)
       issue_instant_offset_seconds 0 (Assertion IssueInstant = now + offset)
       audience "sp" (the SP entity id) | another string | null (no AudienceRestriction)
       session_not_on_or_after_seconds null | N (AuthnStatement SessionNotOnOrAfter = now + N)
  GET  /slo?SAMLRequest=..  (minimal) answer a LogoutRequest with a 302 to the SP's Redirect
       SingleLogoutService carrying an unsigned Success LogoutResponse.
  GET  /control/last        {"SAMLResponse": b64, "RelayState": str|null, "acs": url}
  GET  /control/last_request  the last AuthnRequest as pysaml2 read it:
       {"id", "force_authn", "authn_context": [class refs], "comparison", "signed"}
  GET  /control/last_logout   the last LogoutRequest /slo received:
       {"name_id", "format", "session_indexes", "signed"}
  POST /control/logout_request  an IdP-initiated LogoutRequest to the SP's SingleLogoutService:
       body {"name_id", "format": "persistent", "session_indexes": [], "binding": "redirect"|"post",
             "sign": "idp"|"none"|"attacker", "relay_state": null, "tamper_name_id": null,
             "issue_instant_offset_seconds": 0}
       answers {"url"} (redirect) or {"action", "SAMLRequest", "RelayState"} (post).
  POST /control/unsolicited  build an IdP-initiated response (no InResponseTo), same JSON.
"""
import argparse
import base64
import html
import json
import os
import re
import subprocess
import tempfile
import sys
import threading
import time
import urllib.parse
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

warnings.filterwarnings("ignore", message=".*CFB")  # noise from pysaml2's cryptography imports
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT, class_name, md, saml, samlp
from saml2 import xmldsig as ds
from saml2.config import IdPConfig
from saml2.s_utils import sid
from saml2.server import Server
from saml2.sigver import pre_signature_part

XMLSEC = "/usr/bin/xmlsec1"
# Conventional prefixes on the wire (pysaml2 would otherwise emit ns0:, ns1:, ...).
PREFIXES = {"samlp": samlp.NAMESPACE, "saml": saml.NAMESPACE, "ds": ds.NAMESPACE, "md": md.NAMESPACE}
NAMEID_FORMATS = {"persistent": saml.NAMEID_FORMAT_PERSISTENT, "email": saml.NAMEID_FORMAT_EMAILADDRESS,
                  "transient": saml.NAMEID_FORMAT_TRANSIENT, "unspecified": saml.NAMEID_FORMAT_UNSPECIFIED}
SIGN_ALGS = {"rsa-sha1": ds.SIG_RSA_SHA1, "rsa-sha256": ds.SIG_RSA_SHA256, "rsa-sha512": ds.SIG_RSA_SHA512}
DIGEST_ALGS = {"sha1": ds.DIGEST_SHA1, "sha256": ds.DIGEST_SHA256, "sha512": ds.DIGEST_SHA512}
TAMPERS = (None, "inject_unsigned_assertion_first", "inject_unsigned_assertion_last",
           "strip_signatures", "edit_name_id", "comment_in_name_id", "comment_in_attribute",
           "plant_digest_in_extensions", "duplicate_id", "move_signed_into_extensions", "hmac_signature")
TIME_FORMATS = ("seconds", "millis", "7digits", "offset")
HMAC_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#hmac-sha256"
DEFAULTS = {
    "name_id": "alice", "name_id_format": "persistent", "attributes": {}, "split_attributes": [],
    "friendly_names": {}, "unique_name_id": False,
    "sign_assertion": True, "sign_response": False, "sign_alg": "rsa-sha256", "digest_alg": "sha256",
    "status": "Success", "in_response_to": True, "session_index": None,
    "not_on_or_after_seconds": 300, "not_before_offset_seconds": -60,
    "tamper": None, "tamper_name_id": "admin",
    "issue_instant_offset_seconds": 0, "audience": "sp", "session_not_on_or_after_seconds": None,
    "sign_with": "idp", "assertion_issuer": None, "destination": "acs", "recipient": "acs",
    "time_format": "seconds",
    "encrypt": False, "enc_data": "aes256-cbc", "enc_key": "rsa-oaep-mgf1p", "enc_digest": None,
    "enc_cert": 0, "enc_tamper": None, "require_signed_requests": False,
}
ENC_DATA = {"aes128-cbc": ("http://www.w3.org/2001/04/xmlenc#aes128-cbc", "aes-128"),
            "aes256-cbc": ("http://www.w3.org/2001/04/xmlenc#aes256-cbc", "aes-256"),
            "aes128-gcm": ("http://www.w3.org/2009/xmlenc11#aes128-gcm", "aes-128"),
            "aes256-gcm": ("http://www.w3.org/2009/xmlenc11#aes256-gcm", "aes-256")}
ENC_KEY = {"rsa-oaep-mgf1p": "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
           "rsa-oaep": "http://www.w3.org/2009/xmlenc11#rsa-oaep",
           "rsa-1_5": "http://www.w3.org/2001/04/xmlenc#rsa-1_5"}


class BadRequest(Exception):
    pass


def validate_settings(body):
    unknown = set(body) - set(DEFAULTS)
    if unknown:
        raise BadRequest(f"unknown keys: {sorted(unknown)}")
    s = dict(DEFAULTS, **body)
    checks = [
        (s["name_id_format"] in NAMEID_FORMATS, "name_id_format"),
        (s["sign_alg"] in SIGN_ALGS, "sign_alg"),
        (s["digest_alg"] in DIGEST_ALGS, "digest_alg"),
        (s["tamper"] in TAMPERS, "tamper"),
        (s["sign_with"] in ("idp", "attacker"), "sign_with"),
        (isinstance(s["encrypt"], bool), "encrypt"),
        (isinstance(s["require_signed_requests"], bool), "require_signed_requests"),
        (s["enc_data"] in ENC_DATA, "enc_data"),
        (s["enc_key"] in ENC_KEY, "enc_key"),
        (s["enc_digest"] in (None, "sha256"), "enc_digest"),
        (isinstance(s["enc_cert"], int), "enc_cert"),
        (s["enc_tamper"] in (None, "flip_ciphertext", "flip_key"), "enc_tamper"),
        (s["time_format"] in TIME_FORMATS, "time_format"),
        (s["assertion_issuer"] is None or isinstance(s["assertion_issuer"], str), "assertion_issuer"),
        (s["destination"] is None or isinstance(s["destination"], str), "destination"),
        (isinstance(s["recipient"], str), "recipient"),
        (isinstance(s["attributes"], dict) and all(
            isinstance(v, list) and all(isinstance(x, str) for x in v) for v in s["attributes"].values()),
         "attributes (object of string lists)"),
        (isinstance(s["split_attributes"], list), "split_attributes"),
        (isinstance(s["friendly_names"], dict) and all(isinstance(v, str) for v in s["friendly_names"].values()),
         "friendly_names (object of strings)"),
        (isinstance(s["unique_name_id"], bool), "unique_name_id"),
        (isinstance(s["status"], str) and s["status"], "status"),
        (all(isinstance(s[k], str) for k in ("name_id", "tamper_name_id")), "name_id/tamper_name_id"),
        (s["session_index"] is None or isinstance(s["session_index"], str), "session_index"),
        (s["audience"] is None or isinstance(s["audience"], str), "audience"),
        (isinstance(s["issue_instant_offset_seconds"], (int, float)), "issue_instant_offset_seconds"),
        (s["session_not_on_or_after_seconds"] is None
         or isinstance(s["session_not_on_or_after_seconds"], (int, float)), "session_not_on_or_after_seconds"),
        (all(isinstance(s[k], bool) for k in ("sign_assertion", "sign_response", "in_response_to")),
         "sign_assertion/sign_response/in_response_to (booleans)"),
        (all(isinstance(s[k], (int, float)) and not isinstance(s[k], bool)
             for k in ("not_on_or_after_seconds", "not_before_offset_seconds")), "*_seconds (numbers)"),
    ]
    for ok, what in checks:
        if not ok:
            raise BadRequest(f"bad value for {what}")
    return s


def pem_body(path):
    """Base64 body of a PEM certificate (as used in KeyInfo / metadata)."""
    with open(path) as f:
        text = f.read()
    m = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S)
    if not m:
        raise SystemExit(f"no certificate in {path}")
    return "".join(m.group(1).split())


def utc(ts, fmt="seconds"):
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
    frac = ts - int(ts)
    return base + {"seconds": "Z", "millis": f".{int(frac * 1000):03d}Z",
                   "7digits": f".{int(frac * 10_000_000):07d}Z", "offset": "+00:00"}[fmt]


def edit_name_id(xml, s):
    xml, n = re.subn(r"(<(?:\w+:)?NameID\b[^>]*>)[^<]*(</(?:\w+:)?NameID>)",
                     lambda m: m.group(1) + html.escape(s["tamper_name_id"]) + m.group(2), xml, count=1)
    if not n:
        raise BadRequest("edit_name_id: no NameID in response (status not Success?)")
    return xml


def add_extensions(xml, inner):
    """Put `inner` in a samlp:Extensions, where the schema has it: just before samlp:Status."""
    m = re.search(r"<(\w+:)?Status[\s>]", xml)
    if not m:
        raise BadRequest("no Status element")
    return xml[:m.start()] + f'<samlp:Extensions xmlns:samlp="{samlp.NAMESPACE}">{inner}</samlp:Extensions>' + xml[m.start():]


def key_descriptor(b64):
    x509 = ds.X509Data(x509_certificate=ds.X509Certificate(text=b64))
    return md.KeyDescriptor(use="signing", key_info=ds.KeyInfo(x509_data=[x509]))


class IdP:
    def __init__(self, args):
        base = f"http://127.0.0.1:{args.port}"
        self.entity_id, self.sso, self.slo = base + "/idp", base + "/sso", base + "/slo"
        self.args = args
        self.cert_b64 = pem_body(args.cert)
        self.lock = threading.Lock()
        self.settings = dict(DEFAULTS)
        self.last = None

    # ---- pysaml2 plumbing -------------------------------------------------
    def server(self, attacker=False):
        """A fresh pysaml2 Server; re-reads the SP metadata every time. With `attacker`, it
        signs with the key listed nowhere."""
        if not os.path.exists(self.args.sp_metadata):
            raise BadRequest(f"SP metadata {self.args.sp_metadata} does not exist (yet)")
        with self.lock:
            must_sign = self.settings["require_signed_requests"]
        key, cert = (self.args.key, self.args.cert)
        if attacker:
            key, cert = self.attacker()[0], self.attacker()[0].replace("kx-key", "kx-cert")
        conf = IdPConfig().load({
            "entityid": self.entity_id,
            "xmlsec_binary": XMLSEC, "crypto_backend": "xmlsec1",
            "key_file": key, "cert_file": cert,
            "metadata": {"local": [self.args.sp_metadata]},
            "service": {"idp": {
                "endpoints": {
                    "single_sign_on_service": [(self.sso, BINDING_HTTP_REDIRECT), (self.sso, BINDING_HTTP_POST)],
                    "single_logout_service": [(self.slo, BINDING_HTTP_REDIRECT)],
                },
                "want_authn_requests_signed": must_sign,
                "want_authn_requests_only_with_valid_cert": False,
                "want_logout_requests_signed": must_sign,
            }},
        })
        return Server(config=conf)

    def write_metadata(self):
        extra = [pem_body(c) for c in self.args.extra_cert]
        certs = extra + [self.cert_b64] if self.args.signer_last else [self.cert_b64] + extra
        idpsso = md.IDPSSODescriptor(
            protocol_support_enumeration=samlp.NAMESPACE, want_authn_requests_signed="false",
            key_descriptor=[key_descriptor(c) for c in certs],
            single_logout_service=[md.SingleLogoutService(binding=BINDING_HTTP_REDIRECT, location=self.slo)],
            name_id_format=[md.NameIDFormat(text=f) for f in NAMEID_FORMATS.values()],
            single_sign_on_service=[md.SingleSignOnService(binding=b, location=self.sso)
                                    for b in (BINDING_HTTP_REDIRECT, BINDING_HTTP_POST)])
        ed = md.EntityDescriptor(entity_id=self.entity_id, idpsso_descriptor=[idpsso])
        tmp = self.args.metadata_out + ".tmp"
        with open(tmp, "w") as f:
            f.write(ed.to_string(PREFIXES).decode("utf-8"))
        os.replace(tmp, self.args.metadata_out)

    @staticmethod
    def pick_sp(srv, issuer):
        """(sp entity id, [POST ACS urls in metadata order, default first])."""
        sps = list(srv.metadata.with_descriptor("spsso").keys())
        if not sps:
            raise BadRequest("no SPSSODescriptor in SP metadata")
        sp = issuer if issuer in sps else sps[0]
        acs = srv.metadata.assertion_consumer_service(sp, BINDING_HTTP_POST)
        if not acs:
            raise BadRequest(f"SP {sp} has no HTTP-POST AssertionConsumerService")
        acs.sort(key=lambda a: a.get("is_default") != "true")
        return sp, acs

    # ---- response building -------------------------------------------------
    def assertion(self, s, sp, acs, req_id, name_id):
        now = time.time()
        fmt = s["time_format"]
        utc_ = lambda ts: utc(ts, fmt)
        nooa = utc_(now + s["not_on_or_after_seconds"])
        attrs = []
        for name, values in s["attributes"].items():
            groups = [[v] for v in values] if name in s["split_attributes"] else [values]
            for vals in groups:
                avs = []
                for v in vals:
                    av = saml.AttributeValue()
                    av.set_text(v)  # str -> xsi:type="xs:string"
                    avs.append(av)
                attrs.append(saml.Attribute(name=name, name_format=saml.NAME_FORMAT_URI, attribute_value=avs,
                                            friendly_name=s["friendly_names"].get(name)))
        # "sp" = the SP's entity id; another string = that audience; None = no AudienceRestriction.
        audience = sp if s["audience"] == "sp" else s["audience"]
        restriction = [saml.AudienceRestriction(audience=[saml.Audience(text=audience)])] if audience else []
        sn = s["session_not_on_or_after_seconds"]
        return saml.Assertion(
            id=sid(), version="2.0", issue_instant=utc_(now + s["issue_instant_offset_seconds"]),
            issuer=saml.Issuer(text=s["assertion_issuer"] or self.entity_id, format=saml.NAMEID_FORMAT_ENTITY),
            subject=saml.Subject(
                name_id=saml.NameID(format=NAMEID_FORMATS[s["name_id_format"]], text=name_id),
                subject_confirmation=[saml.SubjectConfirmation(
                    method=saml.SCM_BEARER,
                    subject_confirmation_data=saml.SubjectConfirmationData(
                        recipient=acs if s["recipient"] == "acs" else s["recipient"], not_on_or_after=nooa, in_response_to=req_id))]),
            conditions=saml.Conditions(
                not_before=utc_(now + s["not_before_offset_seconds"]), not_on_or_after=nooa,
                audience_restriction=restriction),
            authn_statement=[saml.AuthnStatement(
                authn_instant=utc_(now), session_index=s["session_index"],
                session_not_on_or_after=utc_(now + sn) if sn is not None else None,
                authn_context=saml.AuthnContext(authn_context_class_ref=saml.AuthnContextClassRef(
                    text=saml.AUTHN_PASSWORD_PROTECTED)))],
            attribute_statement=[saml.AttributeStatement(attribute=attrs)] if attrs else [])

    def build(self, srv, sp, acs, req_id):
        """Signed (and possibly tampered) Response XML as a str."""
        with self.lock:
            s = dict(self.settings)
        if not s["in_response_to"]:
            req_id = None
        key_file, cert_b64 = (self.args.key, self.cert_b64) if s["sign_with"] == "idp" else self.attacker()
        hmac = s["tamper"] == "hmac_signature"
        sig = dict(public_key=None if hmac else cert_b64,
                   sign_alg=HMAC_SHA256 if hmac else SIGN_ALGS[s["sign_alg"]],
                   digest_alg=DIGEST_ALGS[s["digest_alg"]])
        resp = samlp.Response(
            id=sid(), version="2.0", issue_instant=utc(time.time(), s["time_format"]),
            destination=acs if s["destination"] == "acs" else s["destination"], in_response_to=req_id,
            issuer=saml.Issuer(text=self.entity_id, format=saml.NAMEID_FORMAT_ENTITY))
        assertion = None
        if s["status"] in ("Success", samlp.STATUS_SUCCESS):
            resp.status = samlp.Status(status_code=samlp.StatusCode(value=samlp.STATUS_SUCCESS))
            name_id = s["name_id"]
            if s["unique_name_id"]:
                with self.lock:
                    self.counter = getattr(self, "counter", 0) + 1
                    name_id = f"{name_id}-{self.counter}"
            assertion = self.assertion(s, sp, acs, req_id, name_id)
            if s["sign_assertion"]:
                assertion.signature = pre_signature_part(assertion.id, **sig)
            resp.assertion = [assertion]
        else:
            code = s["status"] if s["status"].startswith("urn:") else "urn:oasis:names:tc:SAML:2.0:status:" + s["status"]
            resp.status = samlp.Status(status_code=samlp.StatusCode(
                value=samlp.STATUS_RESPONDER, status_code=samlp.StatusCode(value=code)))
        if s["sign_response"]:
            resp.signature = pre_signature_part(resp.id, **sig)
        unsigned = resp.to_string(PREFIXES).decode("utf-8")

        def sign(xml):
            # Inner element first, so the Response signature covers the signed assertion.
            if assertion is not None and s["sign_assertion"]:
                if hmac:
                    xml = self.hmac_sign(xml, "urn:oasis:names:tc:SAML:2.0:assertion:Assertion")
                else:
                    xml = srv.sec.sign_statement(xml, class_name(assertion), key_file=key_file,
                                                 node_id=assertion.id)
            if assertion is not None and s["encrypt"]:
                xml = self.encrypt(xml, s)
            if s["sign_response"]:
                xml = srv.sec.sign_statement(xml, class_name(resp), key_file=key_file, node_id=resp.id)
            return xml

        xml = sign(unsigned)
        if s["tamper"] == "plant_digest_in_extensions":
            if not s["sign_response"]:
                raise BadRequest("plant_digest_in_extensions needs sign_response")
            # What an attacker can compute: the digest of the edited Response (signed on the side
            # only to get libxmlsec1's canonical digest of it).
            digest = re.findall(r"<(?:\w+:)?DigestValue>([^<]*)<", sign(edit_name_id(unsigned, s)))[-1]
            xml = edit_name_id(xml, s)
            xml = add_extensions(xml, f'<ds:Reference xmlns:ds="{ds.NAMESPACE}" URI="#{resp.id}">'
                                      f'<ds:DigestValue>{digest}</ds:DigestValue></ds:Reference>')
            return xml
        if s["tamper"] == "duplicate_id":
            signed_id = assertion.id if s["sign_assertion"] else resp.id
            return add_extensions(xml, f'<x:Decoy xmlns:x="urn:test:decoy" ID="{signed_id}"/>')
        return self.tamper(xml, s, sp, acs, req_id)

    def tamper(self, xml, s, sp, acs, req_id):
        t = s["tamper"]
        if t in ("inject_unsigned_assertion_first", "inject_unsigned_assertion_last"):
            extra = self.assertion(s, sp, acs, req_id, s["tamper_name_id"]).to_string(PREFIXES)
            extra = re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", extra.decode("utf-8"))  # drop XML declaration
            if t.endswith("first"):
                m = re.search(r"<(\w+:)?Assertion[\s>]", xml)
                pos = m.start() if m else xml.rindex("</")
            else:
                ends = list(re.finditer(r"</(\w+:)?Assertion>", xml))
                pos = ends[-1].end() if ends else xml.rindex("</")
            xml = xml[:pos] + extra + xml[pos:]
        elif t == "strip_signatures":
            xml = re.sub(r"<(\w+:)?Signature[\s>].*?</(\w+:)?Signature>", "", xml, flags=re.S)
        elif t == "comment_in_name_id":
            xml, n = re.subn(r"(<(?:\w+:)?NameID\b[^>]*>)([^<.]*\.)([^<]*</(?:\w+:)?NameID>)",
                             lambda m: m.group(1) + m.group(2) + "<!--x-->" + m.group(3), xml, count=1)
            if not n:
                raise BadRequest("comment_in_name_id: the NameID needs a '.'")
        elif t == "comment_in_attribute":
            xml, n = re.subn(r"(<(?:\w+:)?AttributeValue\b[^>]*>)([^<-]*)(-[^<]*</(?:\w+:)?AttributeValue>)",
                             lambda m: m.group(1) + m.group(2) + "<!--x-->" + m.group(3), xml, count=1)
            if not n:
                raise BadRequest("comment_in_attribute: no AttributeValue with a '-'")
        elif t == "edit_name_id":
            xml = edit_name_id(xml, s)
        elif t == "move_signed_into_extensions":
            m = re.search(r"<(\w+:)?Assertion[\s>].*</(\w+:)?Assertion>", xml, flags=re.S)
            if not m:
                raise BadRequest("move_signed_into_extensions: no Assertion")
            forged = self.assertion(s, sp, acs, req_id, s["tamper_name_id"]).to_string(PREFIXES)
            forged = re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", forged.decode("utf-8"))
            xml = xml[:m.start()] + forged + xml[m.end():]
            xml = add_extensions(xml, m.group(0))
        return xml

    def logout_request(self, b):
        """An IdP-initiated LogoutRequest for the SP, Redirect or POST binding."""
        sign = b.get("sign", "idp")
        if sign not in ("idp", "none", "attacker"):
            raise BadRequest("sign must be idp, none or attacker")
        binding = {"redirect": BINDING_HTTP_REDIRECT, "post": BINDING_HTTP_POST}.get(b.get("binding", "redirect"))
        if binding is None:
            raise BadRequest("binding must be redirect or post")
        srv = self.server(attacker=sign == "attacker")
        sp, _ = self.pick_sp(srv, None)
        dests = srv.metadata.single_logout_service(sp, binding, "spsso")
        if not dests:
            raise BadRequest("the SP metadata has no SingleLogoutService for that binding")
        dest = dests[0]["location"]
        name_id = saml.NameID(format=NAMEID_FORMATS[b.get("format", "persistent")], text=b["name_id"])
        offset = b.get("issue_instant_offset_seconds", 0)
        req_id, req = srv.create_logout_request(
            dest, sp, name_id=name_id, session_indexes=b.get("session_indexes") or None,
            sign=False)
        if offset:
            req.issue_instant = utc(time.time() + offset)
        relay = b.get("relay_state") or ""
        sig = dict(sign_alg=ds.SIG_RSA_SHA256, digest_alg=ds.DIGEST_SHA256)
        if binding == BINDING_HTTP_POST:
            if sign != "none":
                cert_b64 = self.cert_b64 if sign == "idp" else self.attacker()[1]
                req.signature = pre_signature_part(req.id, public_key=cert_b64, **sig)
                xml = srv.sec.sign_statement(req.to_string(PREFIXES).decode("utf-8"), class_name(req),
                                             node_id=req.id)
            else:
                xml = req.to_string(PREFIXES).decode("utf-8")
            if b.get("tamper_name_id"):
                xml = edit_name_id(xml, {"tamper_name_id": b["tamper_name_id"]})
            return {"action": dest, "SAMLRequest": base64.b64encode(xml.encode("utf-8")).decode("ascii"),
                    "RelayState": relay or None}
        info = srv.apply_binding(BINDING_HTTP_REDIRECT, req.to_string(PREFIXES).decode("utf-8"), dest, relay,
                                 sign=sign != "none", sigalg=ds.SIG_RSA_SHA256 if sign != "none" else None)
        return {"url": dict(info["headers"])["Location"]}

    def attacker(self):
        """(key file, certificate base64) of a key listed in no metadata; made once."""
        with self.lock:
            if not hasattr(self, "attacker_pair"):
                d = tempfile.mkdtemp(prefix="attacker-")
                key, cert = os.path.join(d, "kx-key.pem"), os.path.join(d, "kx-cert.pem")
                subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                                "-subj", "/CN=attacker", "-keyout", key, "-out", cert],
                               check=True, capture_output=True)
                self.attacker_pair = (key, pem_body(cert))
            return self.attacker_pair

    def encrypt(self, xml, s):
        """Replace the Assertion by an EncryptedAssertion for the SP's encryption certificate."""
        with open(self.args.sp_metadata) as f:
            meta = f.read()
        certs = [re.search(r"<(?:\w+:)?X509Certificate>([^<]*)<", m.group(0)).group(1)
                 for m in re.finditer(r'<(?:\w+:)?KeyDescriptor use="encryption">.*?</(?:\w+:)?KeyDescriptor>',
                                      meta, flags=re.S)]
        if s["enc_cert"] >= len(certs):
            raise BadRequest(f"the SP metadata has {len(certs)} encryption certificates")
        data_uri, session = ENC_DATA[s["enc_data"]]
        if s["enc_digest"] == "sha256" or s["enc_key"] == "rsa-oaep":
            xml = self.encrypt_oaep_sha256(xml, s, certs[s["enc_cert"]], data_uri)
            return self.enc_tamper(xml, s)
        digest = ('<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>'
                  if s["enc_digest"] == "sha256" else "")
        template = (
            f'<xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" '
            f'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" Type="http://www.w3.org/2001/04/xmlenc#Element">'
            f'<xenc:EncryptionMethod Algorithm="{data_uri}"/>'
            f'<ds:KeyInfo><xenc:EncryptedKey><xenc:EncryptionMethod Algorithm="{ENC_KEY[s["enc_key"]]}">{digest}'
            f'</xenc:EncryptionMethod><xenc:CipherData><xenc:CipherValue/></xenc:CipherData></xenc:EncryptedKey>'
            f'</ds:KeyInfo><xenc:CipherData><xenc:CipherValue/></xenc:CipherData></xenc:EncryptedData>')
        with tempfile.TemporaryDirectory() as d:
            paths = {n: os.path.join(d, n) for n in ("cert.pem", "doc.xml", "tmpl.xml")}
            b64 = "\n".join(certs[s["enc_cert"]][i:i + 64] for i in range(0, len(certs[s["enc_cert"]]), 64))
            for name, text in (("cert.pem", f"-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n"),
                               ("doc.xml", xml), ("tmpl.xml", template)):
                with open(paths[name], "w") as f:
                    f.write(text)
            out = subprocess.run([XMLSEC, "--encrypt", "--pubkey-cert-pem", paths["cert.pem"],
                                  "--session-key", session, "--xml-data", paths["doc.xml"],
                                  "--node-name", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
                                  paths["tmpl.xml"]], capture_output=True)
            if out.returncode != 0:
                raise BadRequest(f"xmlsec1 encryption failed: {out.stderr.decode()[-800:]}")
        xml = out.stdout.decode("utf-8")
        xml = re.sub(r"(<xenc:EncryptedData\b.*?</xenc:EncryptedData>)",
                     lambda m: f'<saml:EncryptedAssertion xmlns:saml="{saml.NAMESPACE}">{m.group(1)}</saml:EncryptedAssertion>',
                     xml, count=1, flags=re.S)
        return self.enc_tamper(xml, s)

    @staticmethod
    def encrypt_oaep_sha256(xml, s, cert_b64, data_uri):
        """RSA-OAEP with SHA-256 (xmlsec1 1.2 cannot): the `cryptography` package does the
        cryptography, the XML Encryption structure is written here."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, padding as sympad
        from cryptography.hazmat.primitives.asymmetric import padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
        m = re.search(r"<(\w+:)?Assertion[\s>].*</(\w+:)?Assertion>", xml, flags=re.S)
        plain = m.group(0).encode("utf-8")
        size = 16 if "128" in data_uri else 32
        key = os.urandom(size)
        if data_uri.endswith("gcm"):
            iv = os.urandom(12)
            data = iv + AESGCM(key).encrypt(iv, plain, None)
        else:
            iv = os.urandom(16)
            padder = sympad.PKCS7(128).padder()
            padded = padder.update(plain) + padder.finalize()
            enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
            data = iv + enc.update(padded) + enc.finalize()
        public = x509.load_der_x509_certificate(base64.b64decode(cert_b64)).public_key()
        xenc11 = s["enc_key"] == "rsa-oaep"
        mgf = hashes.SHA256() if xenc11 else hashes.SHA1()
        wrapped = public.encrypt(key, padding.OAEP(mgf=padding.MGF1(mgf), algorithm=hashes.SHA256(), label=None))
        b64 = lambda b: base64.b64encode(b).decode("ascii")
        mgf_el = ('<xenc11:MGF xmlns:xenc11="http://www.w3.org/2009/xmlenc11#" '
                  'Algorithm="http://www.w3.org/2009/xmlenc11#mgf1sha256"/>' if xenc11 else "")
        enc = (f'<saml:EncryptedAssertion xmlns:saml="{saml.NAMESPACE}">'
               f'<xenc:EncryptedData xmlns:xenc="http://www.w3.org/2001/04/xmlenc#" '
               f'Type="http://www.w3.org/2001/04/xmlenc#Element">'
               f'<xenc:EncryptionMethod Algorithm="{data_uri}"/>'
               f'<ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><xenc:EncryptedKey>'
               f'<xenc:EncryptionMethod Algorithm="{ENC_KEY[s["enc_key"]]}">'
               f'<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>{mgf_el}'
               f'</xenc:EncryptionMethod><xenc:CipherData><xenc:CipherValue>{b64(wrapped)}</xenc:CipherValue>'
               f'</xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo>'
               f'<xenc:CipherData><xenc:CipherValue>{b64(data)}</xenc:CipherValue></xenc:CipherData>'
               f'</xenc:EncryptedData></saml:EncryptedAssertion>')
        return xml[:m.start()] + enc + xml[m.end():]

    @staticmethod
    def enc_tamper(xml, s):
        if s["enc_tamper"]:
            values = list(re.finditer(r"<xenc:CipherValue>([^<]*)</xenc:CipherValue>", xml))
            m = values[0] if s["enc_tamper"] == "flip_key" else values[-1]
            raw = bytearray(base64.b64decode(m.group(1)))
            raw[len(raw) // 2] ^= 0x01
            xml = xml[:m.start(1)] + base64.b64encode(bytes(raw)).decode() + xml[m.end(1):]
        return xml

    def hmac_sign(self, xml, node):
        """Sign `node` with HMAC-SHA256 keyed with the IdP certificate's DER bytes (xmlsec1)."""
        der = base64.b64decode(self.cert_b64)
        with tempfile.TemporaryDirectory() as d:
            key, src = os.path.join(d, "hmac.bin"), os.path.join(d, "in.xml")
            with open(key, "wb") as f:
                f.write(der)
            with open(src, "w") as f:
                f.write(xml)
            out = subprocess.run([XMLSEC, "--sign", "--hmackey", key, "--id-attr:ID", node, src],
                                 capture_output=True)
            if out.returncode != 0:
                raise BadRequest(f"xmlsec1 HMAC signing failed: {out.stderr.decode()[-500:]}")
            return out.stdout.decode("utf-8")

    def respond(self, srv, sp, acs, req_id, relay_state):
        xml = self.build(srv, sp, acs, req_id)
        if not xml.lstrip().startswith("<?xml"):
            xml = '<?xml version="1.0" encoding="UTF-8"?>\n' + xml
        result = {"SAMLResponse": base64.b64encode(xml.encode("utf-8")).decode("ascii"),
                  "RelayState": relay_state, "acs": acs}
        with self.lock:
            self.last = result
        return result


def post_form(result):
    esc = lambda v: html.escape(v, quote=True)
    rs = ("" if result["RelayState"] is None else
          f'<input type="hidden" name="RelayState" value="{esc(result["RelayState"])}"/>\n')
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>SAML POST</title></head>\n'
            f'<body onload="document.forms[0].submit()">\n'
            f'<form method="post" action="{esc(result["acs"])}">\n'
            f'<input type="hidden" name="SAMLResponse" value="{esc(result["SAMLResponse"])}"/>\n{rs}'
            f'<noscript><input type="submit" value="Continue"/></noscript>\n</form>\n</body></html>\n')


class Handler(BaseHTTPRequestHandler):
    idp = None  # set in main()
    protocol_version = "HTTP/1.1"

    def send(self, code, body, ctype="application/json", headers=()):
        if not isinstance(body, (str, bytes)):
            body = json.dumps(body)
        data = body.encode("utf-8") if isinstance(body, str) else body
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def dispatch(self, method):
        url = urllib.parse.urlsplit(self.path)
        try:
            if url.path == "/sso" and method in ("GET", "POST"):
                q = url.query if method == "GET" else self.body().decode("utf-8")
                return self.sso(urllib.parse.parse_qs(q, keep_blank_values=True), method)
            if url.path == "/slo" and method == "GET":
                return self.slo(urllib.parse.parse_qs(url.query, keep_blank_values=True))
            if url.path == "/control/next" and method == "POST":
                body = json.loads(self.body() or b"{}")
                if not isinstance(body, dict):
                    raise BadRequest("body must be a JSON object")
                settings = validate_settings(body)
                with self.idp.lock:
                    self.idp.settings = settings
                return self.send(200, {"ok": True})
            if url.path == "/control/last" and method == "GET":
                with self.idp.lock:
                    last = self.idp.last
                return self.send(200, last) if last else self.send(404, {"error": "no response yet"})
            if url.path in ("/control/last_request", "/control/last_logout") and method == "GET":
                with self.idp.lock:
                    last = getattr(self.idp, url.path.rsplit("/", 1)[1], None)
                return self.send(200, last) if last else self.send(404, {"error": "nothing yet"})
            if url.path == "/control/logout_request" and method == "POST":
                body = json.loads(self.body() or b"{}")
                return self.send(200, self.idp.logout_request(body))
            if url.path == "/control/unsolicited" and method == "POST":
                self.body()
                srv = self.idp.server()
                sp, acs = self.idp.pick_sp(srv, None)
                return self.send(200, self.idp.respond(srv, sp, acs[0]["location"], None, None))
            self.send(404, {"error": "not found"})
        except (BadRequest, ValueError) as e:
            self.log_message("bad request: %r", e)
            self.send(400, {"error": str(e)})
        except Exception as e:  # pysaml2 raises many exception types
            self.log_message("error: %r", e)
            self.send(500, {"error": f"{type(e).__name__}: {e}"})

    def sso(self, q, method):
        if "SAMLRequest" not in q:
            raise BadRequest("missing SAMLRequest")
        relay = q["RelayState"][0] if "RelayState" in q else None
        srv = self.idp.server()
        binding = BINDING_HTTP_REDIRECT if method == "GET" else BINDING_HTTP_POST
        sigalg = q["SigAlg"][0] if "SigAlg" in q else None
        signature = q["Signature"][0] if "Signature" in q else None
        try:
            req = srv.parse_authn_request(q["SAMLRequest"][0], binding, relay_state=relay,
                                          sigalg=sigalg, signature=signature)
        except Exception as e:
            raise BadRequest(f"AuthnRequest rejected by pysaml2: {type(e).__name__}: {e}") from e
        if req is None:
            raise BadRequest("AuthnRequest rejected by pysaml2 (signature)")
        msg = req.message
        rac = msg.requested_authn_context
        with self.idp.lock:
            self.idp.last_request = {
                "id": msg.id, "force_authn": msg.force_authn,
                "authn_context": [c.text for c in (rac.authn_context_class_ref if rac else [])],
                "comparison": rac.comparison if rac else None, "signed": signature is not None}
        issuer = msg.issuer.text if msg.issuer is not None else None
        sp, acs_list = self.idp.pick_sp(srv, issuer)
        urls = [a["location"] for a in acs_list]
        acs = urls[0]
        if msg.assertion_consumer_service_url in urls:
            acs = msg.assertion_consumer_service_url
        elif msg.assertion_consumer_service_index is not None:
            acs = next((a["location"] for a in acs_list if a.get("index") == msg.assertion_consumer_service_index), acs)
        result = self.idp.respond(srv, sp, acs, msg.id, relay)
        self.send(200, post_form(result), "text/html; charset=utf-8")

    def slo(self, q):
        """Minimal SP-initiated logout: answer a LogoutRequest with a Success LogoutResponse."""
        if "SAMLRequest" not in q:
            raise BadRequest("missing SAMLRequest")
        relay = q["RelayState"][0] if "RelayState" in q else ""
        srv = self.idp.server()
        sigalg = q["SigAlg"][0] if "SigAlg" in q else None
        signature = q["Signature"][0] if "Signature" in q else None
        try:
            req = srv.parse_logout_request(q["SAMLRequest"][0], BINDING_HTTP_REDIRECT, relay_state=relay or None,
                                           sigalg=sigalg, signature=signature)
        except Exception as e:
            raise BadRequest(f"LogoutRequest rejected by pysaml2: {type(e).__name__}: {e}") from e
        if req is None:
            raise BadRequest("LogoutRequest rejected by pysaml2 (signature)")
        m = req.message
        with self.idp.lock:
            self.idp.last_logout = {
                "name_id": m.name_id.text if m.name_id is not None else None,
                "format": m.name_id.format if m.name_id is not None else None,
                "session_indexes": [i.text for i in m.session_index], "signed": signature is not None}
        sp = req.message.issuer.text
        dests = srv.metadata.single_logout_service(sp, BINDING_HTTP_REDIRECT, "spsso")
        if not dests:
            return self.send(200, "logged out (SP has no Redirect SingleLogoutService)\n", "text/plain")
        dest = dests[0].get("response_location") or dests[0]["location"]
        resp = srv.create_logout_response(req.message, [BINDING_HTTP_REDIRECT], sign=False)
        info = srv.apply_binding(BINDING_HTTP_REDIRECT, str(resp), dest, relay, response=True)
        location = dict(info["headers"])["Location"]
        self.send(302, "", "text/plain", headers=[("Location", location)])

    def do_GET(self):  # noqa: N802
        self.dispatch("GET")

    def do_POST(self):  # noqa: N802
        self.dispatch("POST")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--metadata-out", required=True)
    ap.add_argument("--sp-metadata", required=True)
    ap.add_argument("--extra-cert", action="append", default=[])
    ap.add_argument("--signer-last", action="store_true")
    args = ap.parse_args()
    for _ in range(600):  # xmlsec1 may still be being installed by apt
        if os.access(XMLSEC, os.X_OK):
            break
        time.sleep(0.1)
    else:
        sys.exit(f"{XMLSEC} not found")
    idp = IdP(args)
    idp.write_metadata()
    Handler.idp = idp
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    httpd.daemon_threads = True
    print("READY", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
