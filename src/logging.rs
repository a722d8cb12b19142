//! Log lines for people (`text`) and for log pipelines (`json`, `logfmt`), all through the
//! `log` crate so pingora's own messages come out in the same format as ours.
//!
//! Call sites attach fields with the `kv` syntax:
//! `log::info!(target: "samlgate::request", id = cid, user = user, status = 200; "request")`.
//! A pipeline then filters on `user` without parsing the message.
//!
//! Every format keeps one record on one line: messages and values can carry attacker-supplied
//! text (a NameID, a RelayState, a header), and a raw newline in them would let that text
//! forge a second, genuine-looking log line.

use std::fmt::Write as _;
use std::io::Write as _;
use std::str::FromStr;

use log::kv::{Key, Value, VisitSource, VisitValue};
use log::Record;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// env_logger's usual `[ts LEVEL target] msg`, then ` key=value` per field.
    #[default]
    Text,
    /// One JSON object per line: `ts`, `level`, `target`, `msg`, then one member per field.
    Json,
    /// `ts=… level=… target=… msg="…" key=value …`, quoted where logfmt needs it.
    Logfmt,
}

/// The names `FromStr` accepts, in the order the error message lists them.
pub const LOG_FORMATS: &[&str] = &["text", "json", "logfmt"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format `{0}`: choose one of text, json, logfmt")]
pub struct UnknownLogFormat(pub String);

impl FromStr for LogFormat {
    type Err = UnknownLogFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            "logfmt" => Ok(LogFormat::Logfmt),
            _ => Err(UnknownLogFormat(s.to_string())),
        }
    }
}

impl std::fmt::Display for LogFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
            LogFormat::Logfmt => "logfmt",
        })
    }
}

/// The format `init`'s logger writes in, switchable after installation: the logger has to
/// exist before the config is read (loading it logs warnings), yet the config is what names
/// the format.
static CURRENT: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

impl LogFormat {
    fn to_u8(self) -> u8 {
        match self {
            LogFormat::Text => 0,
            LogFormat::Json => 1,
            LogFormat::Logfmt => 2,
        }
    }
    fn from_u8(v: u8) -> LogFormat {
        match v {
            1 => LogFormat::Json,
            2 => LogFormat::Logfmt,
            _ => LogFormat::Text,
        }
    }
}

/// Installs the process-wide logger (`info` and up unless `RUST_LOG` says otherwise), or, when
/// it is already installed, switches it to `format`. So `main` can log in text from the
/// start and call this again once the config says `json`: the `log` crate allows only one
/// logger, and env_logger would panic on a second install.
pub fn init(format: LogFormat) {
    CURRENT.store(format.to_u8(), std::sync::atomic::Ordering::Relaxed);
    let _ = with_format(|| LogFormat::from_u8(CURRENT.load(std::sync::atomic::Ordering::Relaxed)))
        .try_init();
}

/// The env_logger builder for one fixed format, for callers that want to adjust it (a test
/// writer, another target) before installing it themselves.
pub fn builder(format: LogFormat) -> env_logger::Builder {
    with_format(move || format)
}

fn with_format(format: impl Fn() -> LogFormat + Send + Sync + 'static) -> env_logger::Builder {
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    b.format(move |buf, record| {
        let now = chrono::Utc::now();
        let line = match format() {
            LogFormat::Text => {
                let style = buf.default_level_style(record.level());
                let subtle = if style == env_logger::fmt::style::Style::new() {
                    env_logger::fmt::style::Style::new()
                } else {
                    env_logger::fmt::style::AnsiColor::BrightBlack.on_default()
                };
                let styles = TextStyles {
                    level: (style.render().to_string(), style.render_reset().to_string()),
                    bracket: (
                        subtle.render().to_string(),
                        subtle.render_reset().to_string(),
                    ),
                };
                text_line(now, record, &styles)
            }
            LogFormat::Json => json_line(now, record),
            LogFormat::Logfmt => logfmt_line(now, record),
        };
        buf.write_all(line.as_bytes())?;
        buf.write_all(b"\n")
    });
    b
}

/// ANSI escapes around the level and the brackets: empty when colour is off (not a terminal,
/// `RUST_LOG_STYLE=never`), which is what the unit tests use.
#[derive(Default)]
struct TextStyles {
    level: (String, String),
    bracket: (String, String),
}

fn text_line(now: chrono::DateTime<chrono::Utc>, record: &Record<'_>, s: &TextStyles) -> String {
    let mut line = format!(
        "{}[{}{} {}{:<5}{} {}{}]{} ",
        s.bracket.0,
        s.bracket.1,
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        s.level.0,
        record.level(),
        s.level.1,
        one_line(record.target()),
        s.bracket.0,
        s.bracket.1,
    );
    line.push_str(&one_line(&record.args().to_string()));
    for (key, value) in fields(record) {
        let _ = write!(
            line,
            " {}={}",
            logfmt_key(&key),
            logfmt_value(&value.to_string())
        );
    }
    line
}

fn json_line(now: chrono::DateTime<chrono::Utc>, record: &Record<'_>) -> String {
    // Written member by member, not through a serde_json::Map, to keep this order (ts first,
    // fields as the call site lists them) without serde_json's `preserve_order` feature.
    let member = |line: &mut String, key: &str, value: serde_json::Value| {
        if line.len() > 1 {
            line.push(',');
        }
        // serde_json escapes every control character, newlines included: one line per record.
        line.push_str(&serde_json::Value::from(key).to_string());
        line.push(':');
        line.push_str(&value.to_string());
    };
    let mut line = String::from("{");
    let ts = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    member(&mut line, "ts", ts.into());
    let level = record.level().as_str().to_ascii_lowercase();
    member(&mut line, "level", level.into());
    member(&mut line, "target", record.target().into());
    member(&mut line, "msg", record.args().to_string().into());
    for (key, value) in fields(record) {
        member(&mut line, &unreserved(key), value.to_json());
    }
    line.push('}');
    line
}

fn logfmt_line(now: chrono::DateTime<chrono::Utc>, record: &Record<'_>) -> String {
    let mut line = format!(
        "ts={} level={} target={} msg={}",
        now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        record.level().as_str().to_ascii_lowercase(),
        logfmt_value(record.target()),
        quoted(&record.args().to_string()),
    );
    for (key, value) in fields(record) {
        let _ = write!(
            line,
            " {}={}",
            logfmt_key(&unreserved(key)),
            logfmt_value(&value.to_string())
        );
    }
    line
}

/// A field's value, kept typed so JSON can write numbers and booleans as such.
enum FieldValue {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
}

impl FieldValue {
    fn to_json(&self) -> serde_json::Value {
        match self {
            FieldValue::Null => serde_json::Value::Null,
            FieldValue::Bool(b) => (*b).into(),
            FieldValue::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(i), _) => i.into(),
                (_, Ok(u)) => u.into(),
                // Beyond 64 bits JSON readers lose precision: keep the digits as text.
                _ => i.to_string().into(),
            },
            FieldValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| f.to_string().into()),
            FieldValue::Str(s) => s.clone().into(),
        }
    }
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Null => f.write_str("null"),
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::Float(x) => write!(f, "{x}"),
            FieldValue::Str(s) => f.write_str(s),
        }
    }
}

struct Capture(Option<FieldValue>);

impl<'v> VisitValue<'v> for Capture {
    fn visit_any(&mut self, value: Value<'_>) -> Result<(), log::kv::Error> {
        self.0 = Some(FieldValue::Str(value.to_string()));
        Ok(())
    }
    fn visit_null(&mut self) -> Result<(), log::kv::Error> {
        self.0 = Some(FieldValue::Null);
        Ok(())
    }
    fn visit_u64(&mut self, v: u64) -> Result<(), log::kv::Error> {
        self.0 = Some(FieldValue::Int(v.into()));
        Ok(())
    }
    fn visit_i64(&mut self, v: i64) -> Result<(), log::kv::Error> {
        self.0 = Some(FieldValue::Int(v.into()));
        Ok(())
    }
    fn visit_u128(&mut self, v: u128) -> Result<(), log::kv::Error> {
        self.0 = Some(match i128::try_from(v) {
            Ok(i) => FieldValue::Int(i),
            Err(_) => FieldValue::Str(v.to_string()),
        });
        Ok(())
    }
    fn visit_i128(&mut self, v: i128) -> Result<(), log::kv::Error> {
        self.0 = Some(FieldValue::Int(v));
        Ok(())
    }
    fn visit_f64(&mut self, v: f64) -> Result<(), log::kv::Error> {
        self.0 = Some(FieldValue::Float(v));
        Ok(())
    }
    fn visit_bool(&mut self, v: bool) -> Result<(), log::kv::Error> {
        self.0 = Some(FieldValue::Bool(v));
        Ok(())
    }
    fn visit_str(&mut self, v: &str) -> Result<(), log::kv::Error> {
        self.0 = Some(FieldValue::Str(v.to_string()));
        Ok(())
    }
}

struct Collect(Vec<(String, FieldValue)>);

impl<'kvs> VisitSource<'kvs> for Collect {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let mut c = Capture(None);
        // A value that refuses to be visited is still logged, as its Display text.
        let v = match value.visit(&mut c) {
            Ok(()) => c.0.unwrap_or(FieldValue::Null),
            Err(_) => FieldValue::Str(value.to_string()),
        };
        self.0.push((key.as_str().to_string(), v));
        Ok(())
    }
}

fn fields(record: &Record<'_>) -> Vec<(String, FieldValue)> {
    let mut c = Collect(Vec::new());
    // Collect never fails; a failing Source just ends the list early.
    let _ = record.key_values().visit(&mut c);
    c.0
}

/// A field named like one of the fixed members would shadow it (JSON readers keep the last
/// duplicate): rename it rather than let a field replace the message or the level.
fn unreserved(key: String) -> String {
    match key.as_str() {
        "ts" | "level" | "target" | "msg" => format!("field.{key}"),
        _ => key,
    }
}

/// Characters a line-oriented reader could take as the end of a line, or a terminal as a
/// command: C0/C1 controls (newline, carriage return, escape, NEL) and the Unicode line and
/// paragraph separators.
fn breaks_lines(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
    }
}

/// Text-format message: as written, except characters that would break the line.
fn one_line(s: &str) -> String {
    if !s.chars().any(breaks_lines) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if breaks_lines(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// logfmt has no quoting for keys: anything but a plain identifier character becomes `_`.
fn logfmt_key(key: &str) -> String {
    if key.is_empty() {
        return "_".into();
    }
    key.chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Bare when that is unambiguous (go-logfmt's rule: no space, `=`, `"` or control
/// characters, not empty), else quoted.
fn logfmt_value(v: &str) -> String {
    let needs_quotes = v.is_empty()
        || v.chars()
            .any(|c| c <= ' ' || c == '=' || c == '"' || c.is_whitespace() || breaks_lines(c));
    if needs_quotes {
        quoted(v)
    } else {
        v.to_string()
    }
}

fn quoted(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if breaks_lines(c) => push_escaped(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc
            .with_ymd_and_hms(2026, 12, 4, 5, 6, 7)
            .unwrap()
            .checked_add_signed(chrono::Duration::milliseconds(89))
            .unwrap()
    }

    /// Renders one record carrying the same awkward fields in `f`.
    fn render(f: fn(chrono::DateTime<chrono::Utc>, &Record<'_>) -> String) -> String {
        let kvs: [(&str, Value<'_>); 6] = [
            ("id", Value::from(42u64)),
            ("user", Value::from("eve\nlevel=error msg=\"forged\"")),
            ("ok", Value::from(true)),
            ("path", Value::from("/a b")),
            ("plain", Value::from("x/y")),
            ("msg", Value::from("shadow")),
        ];
        let line = f(
            at(),
            &Record::builder()
                .level(log::Level::Warn)
                .target("samlgate::request")
                .args(format_args!("login by \"eve\"\r\nINFO forged"))
                .key_values(&kvs)
                .build(),
        );
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
        line
    }

    #[test]
    fn json_is_one_object_per_line_with_typed_fields() {
        let line = render(json_line);
        assert!(
            line.starts_with(r#"{"ts":"2026-12-04T05:06:07.089Z","level":"warn","target":"#),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "2026-12-04T05:06:07.089Z");
        assert_eq!(v["level"], "warn");
        assert_eq!(v["target"], "samlgate::request");
        assert_eq!(v["msg"], "login by \"eve\"\r\nINFO forged");
        assert_eq!(v["id"], 42);
        assert_eq!(v["ok"], true);
        assert_eq!(v["user"], "eve\nlevel=error msg=\"forged\"");
        assert_eq!(v["field.msg"], "shadow");
    }

    #[test]
    fn logfmt_quotes_where_needed_and_escapes_newlines_and_quotes() {
        let line = render(logfmt_line);
        assert_eq!(
            line,
            "ts=2026-12-04T05:06:07.089Z level=warn target=samlgate::request \
             msg=\"login by \\\"eve\\\"\\r\\nINFO forged\" id=42 \
             user=\"eve\\nlevel=error msg=\\\"forged\\\"\" ok=true path=\"/a b\" plain=x/y \
             field.msg=shadow"
        );
    }

    #[test]
    fn text_keeps_env_loggers_look_and_appends_fields() {
        let line = render(|now, r| text_line(now, r, &TextStyles::default()));
        assert_eq!(
            line,
            "[2026-12-04T05:06:07Z WARN  samlgate::request] login by \"eve\"\\r\\nINFO forged \
             id=42 user=\"eve\\nlevel=error msg=\\\"forged\\\"\" ok=true path=\"/a b\" plain=x/y \
             msg=shadow"
        );
    }

    #[test]
    fn terminal_escapes_and_unicode_line_separators_are_escaped_too() {
        assert_eq!(one_line("a\u{1b}[2Jb\u{2028}c"), "a\\u001b[2Jb\\u2028c");
        assert_eq!(logfmt_value(""), "\"\"");
        assert_eq!(logfmt_value("a=b"), "\"a=b\"");
        assert_eq!(logfmt_value("tab\there"), "\"tab\\there\"");
        assert_eq!(logfmt_key("bad key=\"x\""), "bad_key__x_");
    }

    /// What `init` would install, fed one record directly (installing it would be global).
    fn through_env_logger(format: LogFormat) -> String {
        through(builder(format))
    }

    fn through(mut builder: env_logger::Builder) -> String {
        #[derive(Clone, Default)]
        struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let logger = builder
            .filter_level(log::LevelFilter::Trace)
            .write_style(env_logger::WriteStyle::Never)
            .target(env_logger::Target::Pipe(Box::new(sink.clone())))
            .build();
        let kvs = [("user", Value::from("a\nb"))];
        log::Log::log(
            &logger,
            &Record::builder()
                .level(log::Level::Info)
                .target("samlgate::request")
                .args(format_args!("two\nlines"))
                .key_values(&kvs)
                .build(),
        );
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert_eq!(out.matches('\n').count(), 1, "one line: {out:?}");
        out
    }

    #[test]
    fn the_format_init_installs_can_be_switched_after_installation() {
        // The closure `init` installs, without installing it (that would be process-wide).
        let switchable = || {
            with_format(|| LogFormat::from_u8(CURRENT.load(std::sync::atomic::Ordering::Relaxed)))
        };
        assert!(
            through(switchable()).starts_with('['),
            "text before the config is read"
        );
        CURRENT.store(
            LogFormat::Json.to_u8(),
            std::sync::atomic::Ordering::Relaxed,
        );
        assert!(through(switchable()).starts_with('{'));
        CURRENT.store(
            LogFormat::Logfmt.to_u8(),
            std::sync::atomic::Ordering::Relaxed,
        );
        assert!(through(switchable()).starts_with("ts="));
        CURRENT.store(
            LogFormat::Text.to_u8(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    #[test]
    fn init_installs_the_chosen_format() {
        let json: serde_json::Value =
            serde_json::from_str(&through_env_logger(LogFormat::Json)).unwrap();
        assert_eq!(
            (&json["msg"], &json["user"]),
            (&"two\nlines".into(), &"a\nb".into())
        );
        let logfmt = through_env_logger(LogFormat::Logfmt);
        assert!(
            logfmt.starts_with("ts=") && logfmt.ends_with(" msg=\"two\\nlines\" user=\"a\\nb\"\n"),
            "{logfmt}"
        );
        let text = through_env_logger(LogFormat::Text);
        assert!(
            text.starts_with('[')
                && text.ends_with(" INFO  samlgate::request] two\\nlines user=\"a\\nb\"\n"),
            "{text}"
        );
    }

    #[test]
    fn the_call_site_syntax_from_the_module_docs_compiles() {
        let (cid, user) = (7u64, String::from("dora"));
        log::info!(target: "samlgate::request", id = cid, user = user, status = 200; "request");
        log::info!(target: "samlgate::request", peer:% = "127.0.0.1:1".parse::<std::net::SocketAddr>().unwrap(); "peer");
    }

    #[test]
    fn format_names_parse_and_the_error_lists_the_choices() {
        assert_eq!("json".parse::<LogFormat>(), Ok(LogFormat::Json));
        assert_eq!("Logfmt".parse::<LogFormat>(), Ok(LogFormat::Logfmt));
        assert_eq!("text".parse::<LogFormat>(), Ok(LogFormat::Text));
        for f in LOG_FORMATS {
            assert_eq!(f.parse::<LogFormat>().unwrap().to_string(), *f);
        }
        let err = "yaml".parse::<LogFormat>().unwrap_err().to_string();
        assert!(
            err.contains("`yaml`") && err.contains("text, json, logfmt"),
            "{err}"
        );
    }
}
