//! The request log as a log pipeline reads it: `[log] format = "json"` gives one JSON object
//! per line with the request's fields, `logfmt` after a SIGHUP reload, and neither carries a
//! query string, a session cookie or the SAML response.

mod common;

use common::{Harness, Opts};

/// The JSON request lines of the log whose `path` is `path`.
fn request_lines(log: &str, path: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "samlgate::request" && v["path"] == path)
        .collect()
}

#[test]
fn json_request_lines_carry_id_user_route_status_and_latency_and_no_secrets() {
    let h = Harness::start_with(Opts {
        extra_config: "[log]\nformat = \"json\"\n".into(),
        ..Default::default()
    });
    let mut b = h.browser();
    let (acs, last) = b.login(&h.url("/reports/q3?token=sekrit-query-value"));
    assert_eq!(last.status, 200);
    let saml_response_sample = {
        // A stretch of the base64 SAMLResponse the IdP posted: it must not reach the log.
        let (_, form) = h.browser().visit_to_idp(&h.url("/other"));
        form.saml_response[40..80].to_string()
    };
    let miss = b.get(&h.url("/_saml/nope"));
    assert_eq!(miss.status, 404);
    let cid = miss
        .header("x-correlation-id")
        .expect("error page names its correlation id");

    // A target pingora would read as `/` is logged as it came, without its query.
    let bad = common::http::raw(
        &format!("127.0.0.1:{}", h.gw_port),
        format!(
            "GET admin/users?token=sekrit-query-value HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            h.gw_port
        )
        .as_bytes(),
    );
    assert_eq!(bad.status, 400);
    let bad_cid = bad.header("x-correlation-id").expect("correlation id");
    h.wait_for_log(&bad_cid);
    let log = h.wait_for_log(&cid);
    let bad_line = request_lines(&log, "admin/users");
    assert_eq!(bad_line.len(), 1, "{log}");
    assert_eq!(bad_line[0]["route"], "bad_path");
    assert_eq!(bad_line[0]["id"], bad_cid.as_str());
    // Every line is one JSON object: pingora's own lines and ours alike.
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {line}"));
        for k in ["ts", "level", "target", "msg"] {
            assert!(v.get(k).is_some(), "log line without `{k}`: {line}");
        }
    }

    let lines = request_lines(&log, "/reports/q3");
    // The first visit (redirect to the IdP, no user yet) and the one after the login.
    assert_eq!(lines.len(), 2, "two requests for /reports/q3 in:\n{log}");
    let before = &lines[0];
    assert_eq!(before["status"], 302);
    assert_eq!(before["user"], "-");
    let after = &lines[1];
    assert_eq!(after["msg"], "request");
    assert_eq!(after["method"], "GET");
    assert_eq!(after["route"], "protected");
    assert_eq!(after["app"], "default");
    assert_eq!(after["user"], "alice");
    assert_eq!(after["status"], 200);
    assert_eq!(after["upstream_status"], 200, "the backend's status");
    assert_eq!(after["client"], "127.0.0.1");
    let id = after["id"].as_str().expect("id is a string");
    assert_eq!(id.len(), 16, "correlation id {id}");
    assert!(
        after["us"].as_u64().is_some(),
        "latency in microseconds: {after}"
    );

    // The error page's reference is the id of its log line.
    let miss_line = request_lines(&log, "/_saml/nope");
    assert_eq!(miss_line.len(), 1);
    assert_eq!(miss_line[0]["id"], cid.as_str());
    assert_eq!(miss_line[0]["status"], 404);

    // The ACS line is there, without the form it received.
    assert_eq!(request_lines(&log, "/_saml/acs").len(), 1);
    assert_eq!(acs.status, 303);
    assert!(!log.contains("sekrit-query-value"), "query string logged");
    assert!(!log.contains(&saml_response_sample), "SAMLResponse logged");
    for (name, (value, _)) in &b.jar {
        assert!(
            value.len() < 8 || !log.contains(value.as_str()),
            "cookie {name} logged"
        );
    }
}

#[test]
fn a_reload_switches_the_log_format_to_logfmt() {
    let h = Harness::start_with(Opts {
        extra_config: "[log]\nformat = \"json\"\n".into(),
        ..Default::default()
    });
    h.edit_config("format = \"json\"", "format = \"logfmt\"");
    h.signal_gateway("HUP");
    h.wait_for_log("reload: log format logfmt from here on");
    let r = common::http::request("GET", &h.url("/public/after-reload"), &[], b"");
    assert_eq!(r.status, 200);
    let log = h.wait_for_log("path=/public/after-reload");
    let line = log
        .lines()
        .find(|l| l.contains("path=/public/after-reload"))
        .expect("the request line");
    assert!(line.starts_with("ts="), "logfmt line: {line}");
    for field in [
        "target=samlgate::request",
        "msg=\"request\"",
        "route=public",
        "status=200",
        "upstream_status=200",
        "user=-",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
}
