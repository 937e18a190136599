//! The access log in twistd's combined format, into the main log or its own file.
//!
//! `"127.0.0.1" - - [26/Nov/2026:17:47:53 +0000] "GET / HTTP/1.1" 200 5 "-" "curl/8.0"`:
//! the client in quotes, UTC time cached per second, strings escaped, the length `-` when
//! nothing was sent. A file is buffered and flushed every second (and at stop), and reopened
//! by name on SIGHUP/SIGUSR1 together with the main log.

use std::path::PathBuf;

use twistrs_core::linelog::LineFile;

enum Sink {
    Main,
    File(LineFile),
}

pub struct AccessLog {
    sink: Sink,
    stamp_secs: u64,
    stamp: String,
    /// The line being formatted, reused.
    line: String,
}

/// One request's entry.
pub struct Line<'a> {
    pub client: &'a str,
    pub request: &'a str,
    pub status: u16,
    pub bytes: u64,
    /// As the client sent them, bytes that are not UTF-8 included.
    pub referer: Option<&'a [u8]>,
    pub agent: Option<&'a [u8]>,
    /// From the request taken up to its response's last byte leaving.
    pub duration: std::time::Duration,
}

/// Appends `s` escaped as twistd does (Python's `repr` of the bytes): quotes and backslashes,
/// `\t`, `\n`, `\r`, and every other byte outside printable ASCII as `\xHH` (nginx escapes
/// the same bytes): a UTF-8 name is logged as its bytes, a byte that is not UTF-8 as itself
/// (`\xff`, as twistd logs it), and no character in a request can make the line read
/// otherwise on a terminal (a bidi override, a C1 control). Most fields need nothing, and
/// are copied as they are.
fn escape_into(out: &mut String, s: &[u8]) {
    let plain = |b: u8| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\';
    if s.iter().all(|b| plain(*b)) {
        // All printable ASCII.
        out.extend(s.iter().map(|b| char::from(*b)));
        return;
    }
    for &b in s {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b if plain(b) => out.push(char::from(b)),
            b => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("\\x{b:02x}"));
            }
        }
    }
}

/// The method and the target of a request line (`GET /a HTTP/1.1`); `-` for both when the
/// request could not be read.
fn split_request(line: &str) -> (&str, &str) {
    let mut parts = line.splitn(2, ' ');
    match (parts.next(), parts.next()) {
        (Some(m), Some(rest)) => (m, rest.rsplit_once(' ').map_or(rest, |(p, _)| p)),
        _ => ("-", "-"),
    }
}

/// `26/Nov/2026:17:47:53 +0000` from the HTTP date of the same second.
fn clf_time(now: std::time::SystemTime) -> String {
    let http = httpdate::fmt_http_date(now); // "Thu, 26 Nov 2026 17:47:53 GMT"
    let p: Vec<&str> = http.split_whitespace().collect();
    match p.as_slice() {
        [_, day, mon, year, time, _] => format!("{day}/{mon}/{year}:{time} +0000"),
        _ => http,
    }
}

impl AccessLog {
    /// Into the main log.
    pub fn main() -> Self {
        AccessLog {
            sink: Sink::Main,
            stamp_secs: u64::MAX,
            stamp: String::new(),
            line: String::new(),
        }
    }

    /// Into its own file (appending).
    pub fn file(path: PathBuf) -> std::io::Result<Self> {
        Ok(AccessLog {
            sink: Sink::File(LineFile::open(path, "twistrs.web")?),
            stamp_secs: u64::MAX,
            stamp: String::new(),
            line: String::new(),
        })
    }

    /// Formats `l` into the reused line buffer.
    fn format_line(&mut self, l: &Line<'_>) {
        use std::fmt::Write as _;
        let now = std::time::SystemTime::now();
        let secs = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if secs != self.stamp_secs {
            self.stamp_secs = secs;
            self.stamp = clf_time(now);
        }
        let out = &mut self.line;
        out.clear();
        out.push('"');
        escape_into(out, l.client.as_bytes());
        out.push_str("\" - - [");
        out.push_str(&self.stamp);
        out.push_str("] \"");
        escape_into(out, l.request.as_bytes());
        let _ = write!(out, "\" {} ", l.status);
        if l.bytes == 0 {
            out.push('-');
        } else {
            let _ = write!(out, "{}", l.bytes);
        }
        out.push_str(" \"");
        escape_into(out, l.referer.unwrap_or(b"-"));
        out.push_str("\" \"");
        escape_into(out, l.agent.unwrap_or(b"-"));
        out.push('"');
    }

    /// The line for `l`, as it is logged.
    pub fn format(&mut self, l: &Line<'_>) -> String {
        self.format_line(l);
        self.line.clone()
    }

    pub fn log(&mut self, l: &Line<'_>) {
        self.format_line(l);
        match &mut self.sink {
            Sink::Main => {
                // The fields travel as key-values, for `--log-format json`; text ignores them.
                // JSON holds text: a byte that is not UTF-8 is U+FFFD there (the line itself,
                // in its `msg`, has it escaped as twistd logs it).
                let (method, path) = split_request(l.request);
                let referrer = String::from_utf8_lossy(l.referer.unwrap_or(b"-"));
                let agent = String::from_utf8_lossy(l.agent.unwrap_or(b"-"));
                log::info!(target: "twistrs.web.access",
                    client = l.client, method = method, path = path, status = l.status,
                    bytes = l.bytes, referrer = referrer.as_ref(), agent = agent.as_ref(),
                    duration = l.duration.as_secs_f64();
                    "{}", self.line)
            }
            Sink::File(f) => {
                // The line and its newline in one piece: the buffer then only ever holds, and
                // writes, whole lines, which matters when `--workers` processes all append.
                self.line.push('\n');
                f.write_line(self.line.as_bytes());
                self.line.pop();
            }
        }
    }

    pub fn flush(&mut self) {
        if let Sink::File(f) = &mut self.sink {
            f.flush();
        }
    }

    /// Opens the file again by name (after logrotate moved it).
    pub fn reopen(&mut self) {
        if let Sink::File(f) = &mut self.sink {
            f.reopen();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_format_as_twistd() {
        let mut a = AccessLog::main();
        let s = a.format(&Line {
            client: "127.0.0.1",
            request: "GET /a\"b HTTP/1.1",
            status: 200,
            bytes: 5,
            referer: None,
            agent: Some(b"curl/8.0"),
            duration: std::time::Duration::ZERO,
        });
        assert!(s.starts_with("\"127.0.0.1\" - - ["), "{s}");
        assert!(
            s.ends_with("] \"GET /a\\\"b HTTP/1.1\" 200 5 \"-\" \"curl/8.0\""),
            "{s}"
        );
        let t = &s[s.find('[').unwrap() + 1..s.find(']').unwrap()];
        assert_eq!(t.len(), "26/Nov/2026:17:47:53 +0000".len(), "{t}");
        assert!(t.ends_with(" +0000"));
        let zero = a.format(&Line {
            client: "::1",
            request: "HEAD / HTTP/1.1",
            status: 200,
            bytes: 0,
            referer: Some(b"http://x/"),
            agent: None,
            duration: std::time::Duration::ZERO,
        });
        assert!(zero.contains("\" 200 - \"http://x/\" \"-\""), "{zero}");
        // As twistd 26.10 logged the same request (its `repr` of the bytes).
        let odd = a.format(&Line {
            client: "127.0.0.1",
            request: "GET /x HTTP/1.1",
            status: 200,
            bytes: 1,
            referer: Some(b"http://r/\"x\"\xfe"),
            agent: Some("ua \"q\" \\ \u{e9} \u{1} \t \u{202e}".as_bytes()),
            duration: std::time::Duration::ZERO,
        });
        assert!(
            odd.ends_with(r#""http://r/\"x\"\xfe" "ua \"q\" \\ \xc3\xa9 \x01 \t \xe2\x80\xae""#),
            "{odd}"
        );
        // A byte that is not UTF-8 is logged as itself, as twistd 26.10 logs it
        // (`User-Agent: a\xffb` gives `"a\xffb"`), not as U+FFFD's bytes.
        let raw = a.format(&Line {
            client: "127.0.0.1",
            request: "GET / HTTP/1.1",
            status: 200,
            bytes: 1,
            referer: None,
            agent: Some(b"a\xffb"),
            duration: std::time::Duration::ZERO,
        });
        assert!(raw.ends_with(r#" "-" "a\xffb""#), "{raw}");
        assert_eq!(split_request("GET /a b HTTP/1.1"), ("GET", "/a b"));
        assert_eq!(split_request("-"), ("-", "-"));
    }

    /// With `--workers`, every worker appends to the same access log: what one writes must be
    /// whole lines, even when its buffer fills up exactly at a line's end.
    #[test]
    fn two_writers_of_one_file_never_tear_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let mut a = AccessLog::file(path.clone()).unwrap();
        let mut b = AccessLog::file(path.clone()).unwrap();
        fn line(request: &str) -> Line<'_> {
            Line {
                client: "127.0.0.1",
                request,
                status: 200,
                bytes: 5,
                referer: None,
                agent: None,
                duration: std::time::Duration::ZERO,
            }
        }
        let base = a.format(&line("")).len();
        let request = |len: usize| format!("GET /{} HTTP/1.1", "x".repeat(len - 14));
        // 327 lines of 200 bytes with their newlines: 65,400 of the 65,536-byte buffer used.
        let r199 = request(199 - base);
        for _ in 0..327 {
            a.log(&line(&r199));
        }
        // A line that fills the buffer exactly, without room for its newline.
        let last = request(65_536 - 65_400 - base);
        assert_eq!(a.format(&line(&last)).len(), 136);
        a.log(&line(&last));
        b.log(&line("GET /from-b HTTP/1.1"));
        b.flush();
        a.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 329, "one line per record");
        for l in text.lines() {
            assert_eq!(l.matches("\"127.0.0.1\"").count(), 1, "a torn line: {l}");
        }
    }
}
