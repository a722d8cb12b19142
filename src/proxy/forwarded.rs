//! X-Forwarded-For/-Proto/-Host and Forwarded: believed only from configured trusted proxies,
//! otherwise replaced, and always set for the upstream. The gateway's own URLs never come from
//! these headers (case S23); this is only what the application is told.

use std::net::IpAddr;

use pingora::http::RequestHeader;

use crate::config::Cidr;

/// What the upstream is told about where a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The client's address as far as trusted proxies vouch for it.
    pub client: Option<IpAddr>,
    pub x_forwarded_for: String,
    pub proto: String,
    pub host: Option<String>,
}

fn header<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Work out the origin of `req` arriving from `peer` over a connection with scheme `scheme`.
pub fn origin(req: &RequestHeader, peer: Option<IpAddr>, scheme: &str, trusted: &[Cidr]) -> Origin {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let host = header(req, "host")
        .map(str::to_string)
        .or_else(|| req.uri.authority().map(|a| a.to_string()));
    let Some(peer) = peer else {
        return Origin {
            client: None,
            x_forwarded_for: String::new(),
            proto: scheme.into(),
            host,
        };
    };
    if !is_trusted(peer) {
        return Origin {
            client: Some(peer),
            x_forwarded_for: peer.to_string(),
            proto: scheme.into(),
            host,
        };
    }
    // A trusted proxy: append it to the chain it sent, and take as the client the right-most
    // address that is not itself a trusted proxy (everything left of it could be forged).
    let sent: Vec<&str> = req
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut client = peer;
    for hop in sent.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let mut chain = sent.join(", ");
    if !chain.is_empty() {
        chain.push_str(", ");
    }
    chain.push_str(&peer.to_string());
    let proto = match header(req, "x-forwarded-proto").map(str::trim) {
        Some(p @ ("http" | "https")) => p.to_string(),
        _ => scheme.into(),
    };
    let host = header(req, "x-forwarded-host")
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .or(host);
    Origin {
        client: Some(client),
        x_forwarded_for: chain,
        proto,
        host,
    }
}

/// Replace whatever the client sent with `o`.
pub fn apply(req: &mut RequestHeader, o: &Origin) {
    for n in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "forwarded",
    ] {
        req.remove_header(n);
    }
    let mut set = |n: &'static str, v: &str| {
        if !v.is_empty() && req.insert_header(n, v).is_err() {
            log::warn!("could not set {n}");
        }
    };
    set("X-Forwarded-For", &o.x_forwarded_for);
    set("X-Forwarded-Proto", &o.proto);
    if let Some(h) = &o.host {
        set("X-Forwarded-Host", h);
    }
    if let Some(c) = o.client {
        set("X-Real-IP", &c.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(lines: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("Host", "app.test").unwrap();
        for (n, v) in lines {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn forwarded_headers_are_believed_only_from_trusted_peers() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let spoof = req(&[
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.test"),
        ]);
        let o = origin(&spoof, Some("192.0.2.9".parse().unwrap()), "http", &trusted);
        assert_eq!(o.client, Some("192.0.2.9".parse().unwrap()));
        assert_eq!(o.x_forwarded_for, "192.0.2.9");
        assert_eq!(o.proto, "http");
        assert_eq!(o.host.as_deref(), Some("app.test"));

        let via_lb = req(&[
            ("X-Forwarded-For", "6.6.6.6, 198.51.100.7"),
            ("X-Forwarded-For", "10.0.0.3"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "sso.corp.test"),
        ]);
        let o = origin(&via_lb, Some("10.0.0.2".parse().unwrap()), "http", &trusted);
        assert_eq!(
            o.client,
            Some("198.51.100.7".parse().unwrap()),
            "not the forgeable left end"
        );
        assert_eq!(
            o.x_forwarded_for,
            "6.6.6.6, 198.51.100.7, 10.0.0.3, 10.0.0.2"
        );
        assert_eq!(o.proto, "https");
        assert_eq!(o.host.as_deref(), Some("sso.corp.test"));

        let mut up = via_lb.clone();
        up.append_header("Forwarded", "for=1.1.1.1").unwrap();
        apply(&mut up, &o);
        assert_eq!(up.headers.get_all("x-forwarded-for").iter().count(), 1);
        assert!(up.headers.get("forwarded").is_none());
        assert_eq!(up.headers.get("x-real-ip").unwrap(), "198.51.100.7");
    }
}
