//! The only place identity headers are written to the upstream request.
//!
//! Encoding (documented in the README, with a decoder): every byte of the UTF-8 value outside
//! printable ASCII `!`..`~`, and `%` and `,` themselves, becomes `%XX`. Lists (groups) are the
//! encoded values joined by `,`. So a value never contains a space, CR, LF, NUL or a bare comma,
//! no header can be smuggled, and percent-decoding each comma-separated item restores the
//! original strings exactly.

use percent_encoding::{AsciiSet, CONTROLS};
use pingora::http::RequestHeader;

use crate::config::HeaderNames;
use crate::session::Identity;

/// Bytes escaped on top of non-ASCII and controls (which `percent_encoding` always escapes).
const ESCAPED: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b',');

pub fn encode_value(v: &str) -> String {
    percent_encoding::utf8_percent_encode(v, ESCAPED).to_string()
}

pub fn encode_list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| encode_value(v))
        .collect::<Vec<_>>()
        .join(",")
}

/// Set the identity headers for `id`. Called after `sanitize::strip`, so `insert_header`
/// leaves exactly one copy of each.
pub fn apply(req: &mut RequestHeader, id: &Identity, names: &HeaderNames) {
    let mut set = |name: &str, value: String| {
        // Encoded values are visible ASCII only, so this cannot fail; if it ever did, the
        // header is absent rather than wrong.
        if req.insert_header(name.to_string(), value).is_err() {
            log::error!("could not set header {name}");
        }
    };
    set(&names.user, encode_value(&id.username));
    set(&names.groups, encode_list(&id.groups));
    if let Some(e) = &id.email {
        set(&names.email, encode_value(e));
    }
    if let Some(n) = &id.display_name {
        set(&names.display_name, encode_value(n));
    }
    for (key, header) in &names.extra {
        if let Some(v) = id.attributes.get(key) {
            set(header, encode_value(v));
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
        let enc = encode_list(&groups);
        assert!(enc.bytes().all(|b| (0x21..=0x7e).contains(&b)), "{enc}");
        assert_eq!(decode_list(&enc), groups);
    }
}
