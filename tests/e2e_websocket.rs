//! WebSocket (and other upgrades) through the gateway: the upgrade request carries the
//! identity headers, a request without a session gets 401 (not a redirect), and the
//! connection ends soon after its session does. The backend is a real WebSocket handshake
//! server on 127.0.0.1 that echoes what it gets.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{Harness, Opts};
use serde_json::json;

/// A WebSocket server: answers the handshake (RFC 6455 accept key), records the upgrade
/// request's header lines, then echoes bytes until the connection closes.
struct WsBackend {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
}

fn start_ws_backend() -> WsBackend {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let rec = heads.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let rec = rec.clone();
            std::thread::spawn(move || {
                let Some(head) = common::http::read_head(&mut s) else {
                    return;
                };
                let head = String::from_utf8_lossy(&head).into_owned();
                let key = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("sec-websocket-key")
                            .then(|| v.trim().to_string())
                    })
                    .unwrap_or_default();
                rec.lock().unwrap().push(head);
                let digest = openssl::sha::sha1(
                    format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
                );
                let accept = base64::engine::general_purpose::STANDARD.encode(digest);
                let _ = s.write_all(
                    format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").as_bytes(),
                );
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    WsBackend { port, heads }
}

fn upgrade(h: &Harness, cookie: Option<&str>) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", h.gw_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /chat/socket HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Auth-User: admin\r\n{cookie}\r\n",
        h.gw_port
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).expect("read head"),
            1,
            "closed during the handshake"
        );
        head.push(b[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

#[test]
fn websockets_carry_identity_need_a_session_and_end_with_it() {
    let ws = start_ws_backend();
    let h = Harness::start_with(Opts {
        extra_config: format!(
            "[[routes]]\nname = \"chat\"\npath_prefix = \"/chat\"\nupstream = \"http://127.0.0.1:{}\"\n",
            ws.port
        ),
        ..Default::default()
    });

    // No session: 401 with the login URL, never a redirect a socket cannot follow.
    let (mut s, head) = upgrade(&h, None);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("Content-Length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    assert!(
        String::from_utf8_lossy(&body).contains("login_url"),
        "{head}"
    );
    assert!(ws.heads.lock().unwrap().is_empty());

    h.idp_next(json!({"name_id": "alice", "attributes": {"groups": ["chat"]}}));
    let mut b = h.browser();
    b.login(&h.url("/"));
    let (token, _) = b.jar.get("samlgate_session").cloned().expect("session");
    let cookie = format!("samlgate_session={token}");
    let (mut s, head) = upgrade(&h, Some(&cookie));
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let seen = ws
        .heads
        .lock()
        .unwrap()
        .last()
        .cloned()
        .expect("upgrade reached the backend");
    assert!(
        seen.contains("X-Auth-User: alice\r\n") || seen.contains("x-auth-user: alice\r\n"),
        "{seen}"
    );
    assert!(
        !seen.contains("admin"),
        "the spoofed header is gone: {seen}"
    );
    assert!(
        !seen.contains(&token),
        "the session cookie is not forwarded: {seen}"
    );

    // Traffic flows both ways.
    s.write_all(b"ping-1").unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ping-1");

    // Sign out in the browser: the socket closes at its next traffic after the session ends.
    b.get(&h.url("/_saml/logout"));
    std::thread::sleep(Duration::from_millis(1200));
    let started = Instant::now();
    let _ = s.write_all(b"ping-2");
    // A read timeout shorter than the allowance: a socket left open fails here, not later.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the socket stayed open 5 s after the session ended")
            }
            // Reset by the gateway: closed too.
            Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the socket stayed open"
        );
    }
    assert!(
        got.is_empty(),
        "nothing was relayed after the session ended: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(h.gateway_log().contains("closing the upgraded connection"));

    // And the old cookie cannot open a new one.
    let (_, head) = upgrade(&h, Some(&cookie));
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
}
