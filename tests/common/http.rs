//! A deliberately plain HTTP/1.1 client and recording server over std sockets, so tests can
//! send exactly the bytes they mean (odd header spellings, duplicates) and see exactly what
//! arrived.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Seen;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<String> {
        self.all(name).into_iter().next()
    }
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http:// URL");
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

/// Send one request with `Connection: close` and read the whole answer.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let (host, bytes) = request_bytes(method, url, headers, body);
    raw(&host, &bytes)
}

/// `request` for a server that may die mid-way: `None` instead of a panic when the
/// connection fails or the answer is cut short.
pub fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<Response> {
    let (host, bytes) = request_bytes(method, url, headers, body);
    let mut s = TcpStream::connect(&host).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(&bytes).ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    find(&buf, b"\r\n\r\n")?;
    Some(parse_response(&buf))
}

fn request_bytes(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (String, Vec<u8>) {
    let (host, target) = split_url(url);
    assert!(
        host.starts_with("127.0.0.1:"),
        "tests talk to loopback only: {host}"
    );
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    (host, bytes)
}

/// Send raw bytes and parse the answer.
pub fn raw(host: &str, bytes: &[u8]) -> Response {
    let mut s = TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(bytes).expect("write request");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read response");
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Response {
    let end = find(buf, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = buf[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = find(b, b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + size]);
        b = &b[i + 2 + size + 2..];
    }
    out
}

/// Read one request head (through the blank line) byte by byte, so nothing after it is
/// consumed; `None` if the peer closes first.
pub fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap_or(0) == 0 {
            return None;
        }
        head.push(b[0]);
    }
    Some(head)
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Serve one connection: record each request, answer 200 "backend ok", keep the connection
/// alive as HTTP/1.1 expects.
pub fn serve_recording(mut s: TcpStream, rec: Arc<Mutex<Vec<Seen>>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let end = loop {
            if let Some(e) = find(&buf, b"\r\n\r\n") {
                break e;
            }
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = buf[..end].to_vec();
        let mut lines = head
            .split(|b| *b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let request_line = String::from_utf8_lossy(lines.next().unwrap_or(b"")).into_owned();
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let headers: Vec<(String, Vec<u8>)> = lines
            .filter_map(|l| {
                let i = l.iter().position(|b| *b == b':')?;
                let name = String::from_utf8_lossy(&l[..i]).trim().to_ascii_lowercase();
                let v = l[i + 1..].to_vec();
                let v = String::from_utf8_lossy(&v).trim().as_bytes().to_vec();
                Some((name, v))
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| String::from_utf8_lossy(v).parse().ok())
            .unwrap_or(0);
        buf.drain(..end + 4);
        while buf.len() < len {
            let mut chunk = [0u8; 8192];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..len);
        let set_cookies = target.ends_with("/set-cookies");
        rec.lock().expect("lock").push(Seen {
            method,
            path_and_query: target,
            headers,
        });
        let body = b"backend ok";
        // A backend that tries to set the gateway's cookie, for the test that it cannot.
        let extra = if set_cookies {
            // Nameless cookies come back from a browser as their bare value.
            "Set-Cookie: samlgate_session=planted; Path=/\r\nSet-Cookie: =samlgate_session=planted2; Path=/\r\nSet-Cookie: =samlgate_session_state=planted3; Path=/_saml/\r\nSet-Cookie: samlgate_session; Path=/\r\nSet-Cookie: app=1; Path=/\r\n"
        } else {
            ""
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        );
        if s.write_all(resp.as_bytes())
            .and_then(|_| s.write_all(body))
            .is_err()
        {
            return;
        }
    }
}

/// A plain-HTTP GET that may fail (for checking what a TLS port does with plain HTTP).
pub fn request_result(method: &str, url: &str) -> std::io::Result<String> {
    let (host, target) = split_url(url);
    let mut s = TcpStream::connect(&host)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(
        format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}
