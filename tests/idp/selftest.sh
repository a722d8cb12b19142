#!/usr/bin/env bash
# Standalone self-test for tests/idp/pysaml2_idp.py.
# Needs: python3 with pysaml2==7.5.5, openssl, /usr/bin/xmlsec1. Uses 127.0.0.1 only.
# Usage: bash tests/idp/selftest.sh   (prints "N passed, N failed"; exit 1 on any failure)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
T="$(mktemp -d)"
IDP_PID=""
cleanup() { [ -n "$IDP_PID" ] && kill "$IDP_PID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT

PASS=0; FAIL=0
ok()   { PASS=$((PASS + 1)); echo "ok   - $1"; }
bad()  { FAIL=$((FAIL + 1)); echo "FAIL - $1"; }
check() { local d="$1" out; shift
    if out="$("$@" 2>&1)"; then ok "$d"; else bad "$d"; printf '%s\n' "$out" | tail -n 3 | sed 's/^/    /'; fi; }
check_not() { local d="$1"; shift; if "$@" >/dev/null 2>&1; then bad "$d"; else ok "$d"; fi; }
has()  { grep -q -- "$2" "$1"; }                 # has FILE REGEX
count() { grep -o -- "$2" "$1" | wc -l; }        # count FILE REGEX
eq()   { [ "$1" = "$2" ] || { echo "    expected [$2] got [$1]" >&2; return 1; }; }

# ---- keys, SP metadata, free port -----------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/idp-key.pem" -out "$T/idp-cert.pem" \
    -days 2 -subj /CN=selftest-idp 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$T/other-key.pem" -out "$T/other-cert.pem" \
    -days 2 -subj /CN=selftest-other 2>/dev/null
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
SP_ID="http://127.0.0.1:18080/_saml/metadata"
ACS="http://127.0.0.1:18080/_saml/acs"
ASSERTION="urn:oasis:names:tc:SAML:2.0:assertion:Assertion"
RESPONSE="urn:oasis:names:tc:SAML:2.0:protocol:Response"

# ---- tiny HTTP/SAML client --------------------------------------------------------
cat >"$T/client.py" <<'EOF'
import base64, json, re, sys, time, uuid, zlib, urllib.error, urllib.parse, urllib.request
port, cmd = sys.argv[1], sys.argv[2]
base = f"http://127.0.0.1:{port}"
def http(method, path, body=None):
    req = urllib.request.Request(base + path, data=body, method=method,
                                 headers={"Content-Type": "application/json"} if body is not None else {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
if cmd == "ctl":  # ctl METHOD PATH [JSON]  -> prints "STATUS BODY"
    body = sys.argv[5].encode() if len(sys.argv) > 5 else (b"" if sys.argv[3] == "POST" else None)
    st, text = http(sys.argv[3], sys.argv[4], body)
    print(st, text)
elif cmd == "sso":  # sso OUT.xml RELAY|- [DESTINATION]  -> writes response XML, prints facts
    out, relay = sys.argv[3], sys.argv[4]
    dest = sys.argv[5] if len(sys.argv) > 5 else base + "/sso"
    rid = "_" + uuid.uuid4().hex
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    xml = (f'<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" '
           f'xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{rid}" Version="2.0" '
           f'IssueInstant="{now}" Destination="{dest}" '
           f'AssertionConsumerServiceURL="http://127.0.0.1:18080/_saml/acs" '
           f'ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST">'
           f'<saml:Issuer>http://127.0.0.1:18080/_saml/metadata</saml:Issuer></samlp:AuthnRequest>')
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    q = {"SAMLRequest": base64.b64encode(c.compress(xml.encode()) + c.flush()).decode()}
    if relay != "-":
        q["RelayState"] = relay
    st, page = http("GET", "/sso?" + urllib.parse.urlencode(q))
    print("status=%d" % st)
    print("reqid=" + rid)
    if st != 200:
        sys.exit(0)
    m = re.search(r'action="([^"]*)"', page); print("action=" + m.group(1))
    m = re.search(r'name="RelayState" value="([^"]*)"', page)
    print("relay=" + (m.group(1) if m else "<none>"))
    m = re.search(r'name="SAMLResponse" value="([^"]*)"', page)
    open(out, "wb").write(base64.b64decode(m.group(1)))
elif cmd == "json":  # json FIELD < json  -> prints a field ("SAMLResponse" is decoded)
    d = json.loads(sys.stdin.read().split(" ", 1)[1])
    v = d[sys.argv[3]]
    print(base64.b64decode(v).decode() if sys.argv[3] == "SAMLResponse" else json.dumps(v))
EOF
cli() { python3 "$T/client.py" "$PORT" "$@"; }
ctl() { cli ctl POST /control/next "$1" | grep -q '^200 {"ok": *true}'; }
sso() { cli sso "$@" >"$T/facts"; }                  # sso OUT.xml RELAY|-
fact() { sed -n "s/^$1=//p" "$T/facts"; }
verify() { # verify FILE CERT NODE-ID ELEMENT
    xmlsec1 --verify --pubkey-cert-pem "$2" --id-attr:ID "$4" --node-id "$3" "$1"; }
xsd_valid() { python3 -c 'import re,sys; from saml2.xml.schema import validate
validate(re.sub(r"^<\?xml[^>]*\?>\s*", "", open(sys.argv[1]).read()))' "$1"; }
id_of() { grep -o "<$2 [^>]*" "$1" | grep -o ' ID="[^"]*"' | head -1 | cut -d'"' -f2; } # id_of FILE saml:Assertion

# ---- start the IdP (before the SP metadata exists) ---------------------------------
python3 "$HERE/pysaml2_idp.py" --port "$PORT" --key "$T/idp-key.pem" --cert "$T/idp-cert.pem" \
    --metadata-out "$T/idp-metadata.xml" --sp-metadata "$T/sp-metadata.xml" \
    --extra-cert "$T/other-cert.pem" >"$T/idp.out" 2>"$T/idp.err" &
IDP_PID=$!
for _ in $(seq 100); do grep -q READY "$T/idp.out" 2>/dev/null && break; sleep 0.1; done
check "IdP prints READY" eq "$(cat "$T/idp.out")" "READY"
check "metadata entityID" has "$T/idp-metadata.xml" "entityID=\"http://127.0.0.1:$PORT/idp\""
check "metadata has 2 signing KeyDescriptors" eq "$(count "$T/idp-metadata.xml" 'KeyDescriptor use="signing"')" 2
check "metadata SSO Redirect" has "$T/idp-metadata.xml" "HTTP-Redirect\" Location=\"http://127.0.0.1:$PORT/sso\""
check "metadata SSO POST" has "$T/idp-metadata.xml" "HTTP-POST\" Location=\"http://127.0.0.1:$PORT/sso\""
sso "$T/r.xml" -
check "SSO before SP metadata exists fails cleanly" eq "$(fact status)" 400

cat >"$T/sp-metadata.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="$SP_ID">
  <md:SPSSODescriptor AuthnRequestsSigned="false" WantAssertionsSigned="true"
      protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:SingleLogoutService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
        Location="http://127.0.0.1:18080/_saml/slo"/>
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
        Location="$ACS" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
EOF

# ---- default response ---------------------------------------------------------------
RS='/after?x=1&y=2'
sso "$T/r.xml" "$RS"
check "SSO answers 200" eq "$(fact status)" 200
check "form action is the ACS" eq "$(fact action)" "$ACS"
check "RelayState echoed (HTML-escaped)" eq "$(fact relay)" '/after?x=1&amp;y=2'
A_ID="$(id_of "$T/r.xml" saml:Assertion)"
check "assertion signature valid (sha256)" \
    xmlsec1 --verify --pubkey-cert-pem "$T/idp-cert.pem" --id-attr:ID "$ASSERTION" "$T/r.xml"
check_not "assertion signature rejects other key" verify "$T/r.xml" "$T/other-cert.pem" "$A_ID" "$ASSERTION"
check "SignatureMethod rsa-sha256" has "$T/r.xml" 'SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"'
check "DigestMethod sha256" has "$T/r.xml" 'DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"'
check "exactly one signature (assertion only)" eq "$(count "$T/r.xml" '<ds:Signature>')" 1
check "Response InResponseTo" has "$T/r.xml" "<samlp:Response [^>]*InResponseTo=\"$(fact reqid)\""
check "SubjectConfirmationData InResponseTo+Recipient" has "$T/r.xml" \
    "SubjectConfirmationData [^>]*Recipient=\"$ACS\" InResponseTo=\"$(fact reqid)\""
check "Destination = ACS" has "$T/r.xml" "Destination=\"$ACS\""
check "Audience = SP entity id" has "$T/r.xml" "<saml:Audience>$SP_ID</saml:Audience>"
check "two Issuers = IdP entity id" eq "$(count "$T/r.xml" "\">http://127.0.0.1:$PORT/idp</saml:Issuer>")" 2
check "persistent NameID alice" has "$T/r.xml" 'nameid-format:persistent">alice</saml:NameID>'
check "AuthnStatement present" has "$T/r.xml" '<saml:AuthnStatement '
check "response is schema-valid (pysaml2 XSDs)" xsd_valid "$T/r.xml"
check "IdP metadata is schema-valid" xsd_valid "$T/idp-metadata.xml"
cli ctl GET /control/last >"$T/last"
check "/control/last returns the response" eq "$(cli json SAMLResponse <"$T/last")" "$(cat "$T/r.xml")"
check "/control/last RelayState" eq "$(cli json RelayState <"$T/last")" "\"$RS\""

# ---- attributes, split, no RelayState, session index -------------------------------
ctl '{"name_id":"alice@corp.test","name_id_format":"email","session_index":"s-42",
      "attributes":{"mail":["alice@corp.test"],"displayName":["Alice Example"],"groups":["eng","everyone","x<y"]},
      "split_attributes":["groups"]}'
sso "$T/r.xml" -
check "no RelayState input without RelayState" eq "$(fact relay)" "<none>"
check "email NameID" has "$T/r.xml" 'emailAddress">alice@corp.test</saml:NameID>'
check "attribute order and exact names" eq "$(grep -o '<saml:Attribute Name="[^"]*"' "$T/r.xml" | cut -d'"' -f2 | tr '\n' ' ')" \
    "mail displayName groups groups groups "
check "xs:string values, escaped" has "$T/r.xml" 'xsi:type="xs:string"[^>]*>x&lt;y</saml:AttributeValue>'
check "SessionIndex" has "$T/r.xml" 'SessionIndex="s-42"'
check "attribute response is schema-valid" xsd_valid "$T/r.xml"
check "signature still valid" verify "$T/r.xml" "$T/idp-cert.pem" "$(id_of "$T/r.xml" saml:Assertion)" "$ASSERTION"

# ---- algorithms / response signing ---------------------------------------------------
ctl '{"sign_alg":"rsa-sha1","digest_alg":"sha1"}'
sso "$T/r.xml" -
check "sha1 mode: SignatureMethod rsa-sha1" has "$T/r.xml" 'SignatureMethod Algorithm="http://www.w3.org/2000/09/xmldsig#rsa-sha1"'
check "sha1 mode: DigestMethod sha1" has "$T/r.xml" 'DigestMethod Algorithm="http://www.w3.org/2000/09/xmldsig#sha1"'
check "sha1 mode: signature valid" verify "$T/r.xml" "$T/idp-cert.pem" "$(id_of "$T/r.xml" saml:Assertion)" "$ASSERTION"
ctl '{"sign_alg":"rsa-sha512","sign_response":true}'
sso "$T/r.xml" -
check "rsa-sha512" has "$T/r.xml" 'xmldsig-more#rsa-sha512'
check "both signed: two signatures" eq "$(count "$T/r.xml" '<ds:Signature>')" 2
check "both signed: response signature valid" \
    verify "$T/r.xml" "$T/idp-cert.pem" "$(id_of "$T/r.xml" samlp:Response)" "$RESPONSE"
check "both signed: assertion signature valid" \
    verify "$T/r.xml" "$T/idp-cert.pem" "$(id_of "$T/r.xml" saml:Assertion)" "$ASSERTION"
ctl '{"sign_assertion":false,"sign_response":true}'
sso "$T/r.xml" -
check "response-only: one signature, before Status" has "$T/r.xml" '</saml:Issuer><ds:Signature>'
check "response-only: assertion unsigned" eq "$(count "$T/r.xml" '<ds:Signature>')" 1

# ---- status / unsolicited --------------------------------------------------------------
ctl '{"status":"AuthnFailed"}'
sso "$T/r.xml" -
check "error status: Responder + AuthnFailed" has "$T/r.xml" \
    'status:Responder"><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"'
check_not "error status: no assertion" has "$T/r.xml" '<saml:Assertion'
ctl '{"in_response_to":false}'
sso "$T/r.xml" -
check_not "in_response_to=false omits InResponseTo" has "$T/r.xml" 'InResponseTo'
ctl '{}'
cli ctl POST /control/unsolicited >"$T/uns"
check "unsolicited: acs" eq "$(cli json acs <"$T/uns")" "\"$ACS\""
check "unsolicited: RelayState null" eq "$(cli json RelayState <"$T/uns")" null
cli json SAMLResponse <"$T/uns" >"$T/u.xml"
check_not "unsolicited: no InResponseTo" has "$T/u.xml" 'InResponseTo'
check "unsolicited: signed" verify "$T/u.xml" "$T/idp-cert.pem" "$(id_of "$T/u.xml" saml:Assertion)" "$ASSERTION"
cli ctl GET /control/last >"$T/last"
check "/control/last = unsolicited" eq "$(cli json SAMLResponse <"$T/last")" "$(cat "$T/u.xml")"

# ---- tamper modes ------------------------------------------------------------------------
for where in first last; do
    ctl "{\"tamper\":\"inject_unsigned_assertion_$where\"}"
    sso "$T/r.xml" -
    check "inject_$where: two assertions" eq "$(count "$T/r.xml" '<saml:Assertion ')" 2
    check "inject_$where: one signature" eq "$(count "$T/r.xml" '<ds:Signature>')" 1
    want="admin alice "; [ "$where" = last ] && want="alice admin "
    check "inject_$where: order" eq "$(grep -o 'persistent">[a-z]*<' "$T/r.xml" | sed 's/.*">//; s/<//' | tr '\n' ' ')" "$want"
    signed_id="$(grep -o '<ds:Reference URI="#[^"]*"' "$T/r.xml" | cut -d'#' -f2 | tr -d '"')"
    check "inject_$where: original still verifies" verify "$T/r.xml" "$T/idp-cert.pem" "$signed_id" "$ASSERTION"
done
ctl '{"tamper":"strip_signatures","sign_response":true}'
sso "$T/r.xml" -
check "strip_signatures: no Signature at all" eq "$(count "$T/r.xml" 'Signature')" 0
check "strip_signatures: assertion kept" has "$T/r.xml" '<saml:Assertion '
ctl '{"tamper":"edit_name_id","tamper_name_id":"mallory"}'
sso "$T/r.xml" -
check "edit_name_id: NameID changed" has "$T/r.xml" '>mallory</saml:NameID>'
check_not "edit_name_id: signature fails" verify "$T/r.xml" "$T/idp-cert.pem" "$(id_of "$T/r.xml" saml:Assertion)" "$ASSERTION"

# ---- errors ---------------------------------------------------------------------------------
check "unknown path 404" eq "$(cli ctl GET /nope | cut -d' ' -f1)" 404
check "unknown control key 400" eq "$(cli ctl POST /control/next '{"sign_algo":"x"}' | cut -d' ' -f1)" 400
sso "$T/r.xml" - "http://127.0.0.1:1/wrong"
check "wrong Destination rejected" eq "$(fact status)" 400
check "nothing but READY on stdout" eq "$(cat "$T/idp.out")" "READY"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
