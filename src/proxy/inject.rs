//! The only place identity headers are written to the upstream request.
//!
//! Which headers a route gets is its `HeaderContract`; this file turns an identity into those
//! headers. Two encodings, both documented in the README with a decoder, both reversible, both
//! leaving only visible ASCII in the header (no CR, LF or NUL can smuggle a header):
//! - `percent` (default): every byte of the UTF-8 value outside `!`..`~`, and `%` and `,`
//!   themselves, becomes `%XX`; lists are the encoded values joined by `,`.
//! - `json`: a JSON string per value, a JSON array per list, non-ASCII as `\uXXXX`.
//!
//! The total is capped (`max_bytes`): over it, the request is refused or the group list is
//! cut with a count of what was left out, as the contract says; never a silent drop.

use percent_encoding::{AsciiSet, CONTROLS};
use pingora::http::RequestHeader;

use crate::config::{Encoding, HeaderContract, Overflow};
use crate::session::Identity;

/// Bytes escaped on top of non-ASCII and controls (which `percent_encoding` always escapes).
const ESCAPED: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b',');

pub fn encode_value(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, ESCAPED).to_string()
}

pub fn encode_list<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.extend(percent_encoding::utf8_percent_encode(v, ESCAPED));
    }
    out
}

/// A JSON string with every character outside printable ASCII escaped, so that any JSON
/// parser gets the original back and the header stays visible ASCII.
pub fn json_string(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
    out
}

fn json_list<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let items: Vec<String> = values.into_iter().map(json_string).collect();
    format!("[{}]", items.join(","))
}

/// The identity headers of one request, ready to set: (name, value).
pub type Prepared = Vec<(String, String)>;

/// The identity does not fit under the contract's `max_bytes`.
#[derive(Debug)]
pub struct TooLarge {
    pub bytes: usize,
    pub max: usize,
}

/// The headers `c` sends for `id`; `session_id` and `jwt` when the contract asks for them.
pub fn prepare(
    id: &Identity,
    c: &HeaderContract,
    session_id: Option<&str>,
    jwt: Option<&str>,
) -> Result<Prepared, TooLarge> {
    let one = |v: &str| match c.encoding {
        Encoding::Percent => encode_value(v),
        Encoding::Json => json_string(v),
    };
    let list = |v: &mut dyn Iterator<Item = &str>| match c.encoding {
        Encoding::Percent => encode_list(v),
        Encoding::Json => json_list(v),
    };
    let mut out: Prepared = Vec::with_capacity(6);
    let mut push = |name: &Option<String>, value: Option<String>| {
        if let (Some(n), Some(v)) = (name, value) {
            out.push((n.clone(), v));
        }
    };
    push(&c.user, Some(one(&id.username)));
    push(&c.email, id.email.as_deref().map(one));
    push(&c.display_name, id.display_name.as_deref().map(one));
    push(&c.session_id, session_id.map(str::to_string));
    for (key, header) in &c.extra {
        if let Some(v) = id.attributes.get(key) {
            out.push((header.clone(), one(v)));
        }
    }
    if let (Some(j), Some(token)) = (&c.jwt, jwt) {
        out.push((j.header.clone(), token.to_string()));
    }
    let size = |h: &Prepared| h.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>();
    let Some(groups_header) = &c.groups else {
        let bytes = size(&out);
        return if bytes > c.max_bytes {
            Err(TooLarge {
                bytes,
                max: c.max_bytes,
            })
        } else {
            Ok(out)
        };
    };
    let rest = size(&out) + groups_header.len() + 4;
    let full = list(&mut id.groups.iter());
    if rest + full.len() <= c.max_bytes {
        out.push((groups_header.clone(), full));
        return Ok(out);
    }
    let needed = rest + full.len();
    match (c.on_overflow, &c.truncated_header) {
        (Overflow::Truncate, Some(t)) => {
            // Keep the longest leading run of the (sorted) groups that fits, and say how many
            // were left out: never a silent drop.
            let budget = c.max_bytes.saturating_sub(rest + t.len() + 4 + 10);
            let mut kept = id.groups.len();
            let mut value = full;
            while kept > 0 && value.len() > budget {
                kept -= 1;
                value = list(&mut id.groups.iter().take(kept));
            }
            if value.len() > budget {
                return Err(TooLarge {
                    bytes: needed,
                    max: c.max_bytes,
                });
            }
            out.push((groups_header.clone(), value));
            out.push((t.clone(), (id.groups.len() - kept).to_string()));
            Ok(out)
        }
        _ => Err(TooLarge {
            bytes: needed,
            max: c.max_bytes,
        }),
    }
}

/// Set prepared identity headers. Called after `sanitize::strip`, so `insert_header`
/// leaves exactly one copy of each.
pub fn apply(req: &mut RequestHeader, headers: &Prepared) {
    for (name, value) in headers {
        // Encoded values are visible ASCII only, so this cannot fail; if it ever did, the
        // header is absent rather than wrong.
        if req.insert_header(name.clone(), value.as_str()).is_err() {
            log::error!("could not set header {name}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_list(s: &str) -> Vec<String> {
        if s.is_empty() {
            return vec![];
        }
        s.split(',')
            .map(|v| {
                percent_encoding::percent_decode_str(v)
                    .decode_utf8()
                    .unwrap()
                    .into_owned()
            })
            .collect()
    }

    #[test]
    fn encoding_is_reversible_and_header_safe() {
        let groups: Vec<String> = [
            "CN=eng,OU=Groups,DC=corp",
            "a;b",
            "back\\slash",
            "\"quoted\"",
            " padded ",
            "50%",
            "Ünïcødé",
            "Alice\r\nX-Auth-Groups: admins",
            "nul\0byte",
            "",
        ]
        .map(String::from)
        .to_vec();
        let enc = encode_list(groups.iter().map(String::as_str));
        assert!(enc.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{enc}");
        assert_eq!(decode_list(&enc), groups);
    }

    fn alice(groups: &[&str]) -> Identity {
        Identity {
            user_id: 1,
            username: "alice".into(),
            email: Some("alice@corp.test".into()),
            display_name: Some("Ålice \"A\" Smith".into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            attributes: Default::default(),
        }
    }

    fn contract(extra: &str) -> HeaderContract {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("idp.xml"),
            include_str!("../../conf/idp-metadata.example.xml"),
        )
        .unwrap();
        let text = format!(
            "[server]\npublic_url = \"http://127.0.0.1:1\"\n[upstream]\nurl = \"http://127.0.0.1:2\"\n[idp]\nmetadata_file = \"idp.xml\"\n[headers]\n{extra}"
        );
        crate::config::Config::parse(&dir.path().join("c.toml"), &text)
            .unwrap()
            .routes
            .remove(0)
            .headers
    }

    #[test]
    fn json_encoding_is_reversible_and_ascii() {
        let groups = [
            "CN=eng,OU=Groups,DC=corp",
            "\"q\"",
            "back\\slash",
            "Ünïcødé 🦀",
            "a\r\nX-Auth-Groups: admins",
            "nul\0",
        ];
        let c = contract("encoding = \"json\"");
        let h = prepare(&alice(&groups), &c, None, None).unwrap();
        for (_, v) in &h {
            assert!(v.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{v}");
        }
        let get = |n: &str| h.iter().find(|(k, _)| k == n).unwrap().1.clone();
        let back: Vec<String> = serde_json::from_str(&get("X-Auth-Groups")).unwrap();
        assert_eq!(back, groups);
        let name: String = serde_json::from_str(&get("X-Auth-Name")).unwrap();
        assert_eq!(name, "Ålice \"A\" Smith");
    }

    #[test]
    fn too_many_groups_are_refused_or_cut_with_a_count_never_silently() {
        let many: Vec<String> = (0..200).map(|i| format!("group-{i:03}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let id = alice(&refs);
        let strict = contract("max_bytes = 1024");
        let e = prepare(&id, &strict, None, None).unwrap_err();
        assert!(e.bytes > 1024 && e.max == 1024);
        let cut = contract("max_bytes = 1024\non_overflow = \"truncate\"");
        let h = prepare(&id, &cut, None, None).unwrap();
        let total: usize = h.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
        assert!(total <= 1024, "{total}");
        let groups = &h.iter().find(|(k, _)| k == "X-Auth-Groups").unwrap().1;
        let kept = groups.split(',').count();
        let dropped: usize = h
            .iter()
            .find(|(k, _)| k == "X-Auth-Groups-Truncated")
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert_eq!(kept + dropped, 200);
        assert!(kept > 10 && groups.starts_with("group-000,group-001"));
        // Small identities are untouched and carry no truncation marker.
        let h = prepare(&alice(&["a"]), &cut, None, None).unwrap();
        assert!(h.iter().all(|(k, _)| k != "X-Auth-Groups-Truncated"));
    }

    #[test]
    fn a_header_switched_off_is_not_sent() {
        let c = contract("email = \"\"\ndisplay_name = \"\"\nsession_id = \"X-Auth-Session\"");
        let h = prepare(&alice(&["a"]), &c, Some("abcd"), None).unwrap();
        let names: Vec<&str> = h.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["X-Auth-User", "X-Auth-Session", "X-Auth-Groups"]);
    }
}
