//! SIGTERM: requests in flight finish, and the gateway is gone within the configured grace
//! period (plus pingora's shutdown timeout, which is set to the same value).

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{http, Harness, Opts};

/// A backend that takes `delay` to answer each request.
fn slow_backend(delay: Duration) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                if common::http::read_head(&mut s).is_none() {
                    return;
                }
                std::thread::sleep(delay);
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nslow done",
                );
            });
        }
    });
    port
}

#[test]
fn sigterm_lets_requests_in_flight_finish_and_exits_within_the_grace_period() {
    let slow = slow_backend(Duration::from_millis(1500));
    let mut h = Harness::start_with(Opts {
        extra_config: format!(
            "[[routes]]\nname = \"slow\"\npath_prefix = \"/slow\"\naccess = \"public\"\nupstream = \"http://127.0.0.1:{slow}\"\n"
        ),
        ..Default::default()
    });
    h.edit_config("grace_period_seconds = 1", "grace_period_seconds = 3");
    h.restart_gateway();
    let url = h.url("/slow/report");
    let inflight = std::thread::spawn(move || http::request("GET", &url, &[], b""));
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    h.signal_gateway("TERM");
    let r = inflight.join().expect("request thread");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "slow done",
        "the request in flight was finished, not cut"
    );
    let st = h.wait_gateway_exit(Duration::from_secs(3 + 3 + 3));
    assert!(
        st.is_some(),
        "still running {:?} after SIGTERM",
        t.elapsed()
    );
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "grace 3 s + shutdown timeout 3 s, took {:?}",
        t.elapsed()
    );
}
