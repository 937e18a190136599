//! `--log-format json`: one JSON object per line, for log shippers.
//!
//! `{"time":"2026-11-26T17:36:39.123Z","level":"info","system":"-","message":"...",...}`:
//! the time in RFC 3339 UTC with milliseconds, twist's level names, the system as the text
//! line's `[...]`, the message, the writing process's `pid` (and `worker`, its number under
//! `--workers`), then the record's key-values (the `log` crate's `kv`) as
//! fields, so an access log line carries its client, method, path and status as values. Every
//! string is escaped here, so a line is valid JSON whatever bytes a client sent: Rust strings
//! are UTF-8 already, and quotes, backslashes and control characters are escaped.

use std::fmt::Write as _;

use log::Level;
use log::kv::{Error, Key, Source, Value, VisitSource};

/// Appends `s` as a JSON string, quotes included.
pub fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A level as twist names it (`--log-level`'s values).
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// `2026-11-26T17:36:39` in UTC (the part before the milliseconds), cached per second by the
/// caller.
pub fn utc_seconds(secs: i64) -> String {
    // SAFETY: gmtime_r writes only into the tm we pass.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        let t: libc::time_t = secs;
        if libc::gmtime_r(&t, &mut tm).is_null() {
            return "1970-01-01T00:00:00".into();
        }
        tm
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Writes each key-value as `,"key":value`: numbers and booleans as JSON numbers and
/// booleans, anything else as a string. Keys the line already has are renamed, never
/// duplicated.
struct Fields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), Error> {
        let out = &mut *self.0;
        out.push(',');
        let k = key.as_str();
        if matches!(
            k,
            "time" | "level" | "system" | "message" | "pid" | "worker"
        ) {
            push_str(out, &format!("field_{k}"));
        } else {
            push_str(out, k);
        }
        out.push(':');
        if let Some(b) = value.to_bool() {
            out.push_str(if b { "true" } else { "false" });
        } else if let Some(n) = value.to_u64() {
            let _ = write!(out, "{n}");
        } else if let Some(n) = value.to_i64() {
            let _ = write!(out, "{n}");
        } else if let Some(f) = value.to_f64().filter(|f| f.is_finite()) {
            let _ = write!(out, "{f}");
        } else if let Some(s) = value.to_borrowed_str() {
            push_str(out, s);
        } else {
            push_str(out, &value.to_string());
        }
        Ok(())
    }
}

/// Which process wrote a line: its PID, and under `--workers` the worker's number (absent in
/// a master or a single process), so lines that several processes write into one log can be
/// told apart, as nginx's `PID#TID` and gunicorn's `[PID]` do.
#[derive(Clone, Copy, Debug)]
pub struct Writer {
    pub pid: u32,
    pub worker: Option<usize>,
}

/// One JSON line, newline included. `stamp` is [`utc_seconds`] of the current second.
pub fn format_line(
    stamp: &str,
    millis: u32,
    level: Level,
    system: &str,
    message: &str,
    writer: Writer,
    kvs: &dyn Source,
) -> String {
    let mut out = String::with_capacity(112 + message.len());
    let _ = write!(out, "{{\"time\":\"{stamp}.{millis:03}Z\",\"level\":");
    push_str(&mut out, level_name(level));
    out.push_str(",\"system\":");
    push_str(&mut out, system);
    out.push_str(",\"message\":");
    push_str(&mut out, message);
    let _ = write!(out, ",\"pid\":{}", writer.pid);
    if let Some(w) = writer.worker {
        let _ = write!(out, ",\"worker\":{w}");
    }
    let _ = kvs.visit(&mut Fields(&mut out));
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_whatever_they_hold() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\n\u{1}\u{7f}é\u{fffd}");
        assert_eq!(s, r#""a\"b\\c\n\u0001\u007fé�""#);
    }

    #[test]
    fn a_line_has_its_fields_in_order() {
        let kvs: &[(&str, Value<'_>)] = &[
            ("status", Value::from(404u16)),
            ("path", Value::from("/x\"y")),
            ("message", Value::from("clash")),
            ("pid", Value::from(1u8)),
        ];
        let single = Writer {
            pid: 42,
            worker: None,
        };
        let line = format_line(
            "2026-11-26T17:36:39",
            7,
            Level::Info,
            "-",
            "hi",
            single,
            &kvs,
        );
        assert_eq!(
            line,
            "{\"time\":\"2026-11-26T17:36:39.007Z\",\"level\":\"info\",\"system\":\"-\",\
             \"message\":\"hi\",\"pid\":42,\"status\":404,\"path\":\"/x\\\"y\",\
             \"field_message\":\"clash\",\"field_pid\":1}\n"
        );
        let worker = Writer {
            pid: 43,
            worker: Some(2),
        };
        let none: &[(&str, Value<'_>)] = &[];
        let line = format_line(
            "2026-11-26T17:36:39",
            7,
            Level::Warn,
            "-",
            "w",
            worker,
            &none,
        );
        assert!(
            line.ends_with("\"message\":\"w\",\"pid\":43,\"worker\":2}\n"),
            "{line}"
        );
        assert_eq!(utc_seconds(1_795_714_599), "2026-11-26T17:36:39");
    }
}
