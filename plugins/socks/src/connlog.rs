//! The connection log (`-l/--log FILE`): one line per client connection when it ends, with
//! who asked for what, the outcome, the bytes carried each way and how long it lasted.
//!
//! `2026-12-05T10:00:00+0000 client=127.0.0.1:53422 version=5 command=CONNECT
//! dest=example.com:80 address=93.184.216.34:80 user=- result=ok up=120 down=1532
//! duration=0.530` (one line). `up` is what reached the destination, `down` what reached the
//! client; a refusal says why in `reason="..."`. Without `-l` the lines go to the main log.
//! The file is buffered, flushed every second and at stop, and reopened by name on SIGHUP and
//! SIGUSR1 with the main log (twistd's `-l` writes a hex dump of every byte, and crashes).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use twistrs_core::linelog::LineFile;

use crate::negotiate::{Cmd, Target, Version};

enum Sink {
    Main,
    File(LineFile),
}

/// Where connection lines go.
pub struct ConnLog {
    sink: Sink,
    stamp_secs: i64,
    stamp: String,
    line: String,
}

/// What one connection did.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub client: Option<SocketAddr>,
    pub version: Option<Version>,
    pub cmd: Option<Cmd>,
    pub target: Option<Target>,
    /// The address connected to (CONNECT), bound for the peer (BIND), or relaying (UDP).
    pub address: Option<SocketAddr>,
    pub user: Option<String>,
    /// `ok`, `refused` (by the rules, the login, a malformed request) or `failed` (the
    /// destination could not be reached).
    pub result: &'static str,
    pub reason: Option<String>,
    pub up: u64,
    pub down: u64,
    pub duration: Duration,
}

/// Appends `s` in double quotes, with quotes, backslashes and control characters escaped.
fn quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl ConnLog {
    /// Into the main log.
    pub fn main() -> Self {
        ConnLog {
            sink: Sink::Main,
            stamp_secs: i64::MIN,
            stamp: String::new(),
            line: String::new(),
        }
    }

    /// Into its own file, appending.
    pub fn file(path: PathBuf) -> std::io::Result<Self> {
        Ok(ConnLog {
            sink: Sink::File(LineFile::open(path, "twistrs.socks")?),
            ..ConnLog::main()
        })
    }

    /// The line for `e`, without the time stamp.
    pub fn format(e: &Entry, out: &mut String) {
        Self::format_head(e, out);
        Self::format_tail(e.result, e.up, e.down, e.duration, e.reason.as_deref(), out);
    }

    /// The part of `e`'s line known when its relay is joined: who asked for what, and where
    /// it went (a joined relay keeps this text, not the whole entry: issue 11).
    pub fn format_head(e: &Entry, out: &mut String) {
        let dash = |o: Option<String>| o.unwrap_or_else(|| "-".into());
        let _ = write!(
            out,
            "client={} version={} command={} dest={} address={} user=",
            dash(e.client.map(|c| c.to_string())),
            match e.version {
                Some(Version::V4) => "4",
                Some(Version::V5) => "5",
                None => "-",
            },
            dash(e.cmd.map(|c| c.to_string())),
            dash(e.target.as_ref().map(|t| t.to_string())),
            dash(e.address.map(|a| a.to_string())),
        );
        match &e.user {
            Some(u) => quoted(out, u),
            None => out.push('-'),
        }
    }

    /// The part of a line known when the connection ends.
    fn format_tail(
        result: &str,
        up: u64,
        down: u64,
        duration: Duration,
        reason: Option<&str>,
        out: &mut String,
    ) {
        let _ = write!(
            out,
            " result={result} up={up} down={down} duration={:.3}",
            duration.as_secs_f64()
        );
        if let Some(r) = reason {
            out.push_str(" reason=");
            quoted(out, r);
        }
    }

    /// Writes one connection's line.
    pub fn log(&mut self, e: &Entry) {
        self.write_line(|out| Self::format(e, out));
    }

    /// Writes the line of a relay that ended: `head` from [`ConnLog::format_head`], then the
    /// outcome (`ok`, or `failed` for a join that could not be made).
    pub fn log_relay(
        &mut self,
        head: &str,
        result: &str,
        up: u64,
        down: u64,
        duration: Duration,
        reason: Option<&str>,
    ) {
        self.write_line(|out| {
            out.push_str(head);
            Self::format_tail(result, up, down, duration, reason, out);
        });
    }

    fn write_line(&mut self, format: impl FnOnce(&mut String)) {
        self.line.clear();
        match &mut self.sink {
            Sink::Main => {
                format(&mut self.line);
                log::info!(target: "twistrs.socks", "{}", self.line);
            }
            Sink::File(f) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                if secs != self.stamp_secs {
                    self.stamp_secs = secs;
                    self.stamp = twistrs_core::logsys::timestamp(secs);
                }
                self.line.push_str(&self.stamp);
                self.line.push(' ');
                format(&mut self.line);
                self.line.push('\n');
                f.write_line(self.line.as_bytes());
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
    use crate::negotiate::Host;

    #[test]
    fn one_line_with_every_field() {
        let mut s = String::new();
        ConnLog::format(
            &Entry {
                client: Some("127.0.0.1:5000".parse().unwrap()),
                version: Some(Version::V5),
                cmd: Some(Cmd::Connect),
                target: Some(Target {
                    host: Host::Name("example.com".into()),
                    port: 80,
                }),
                address: Some("[::1]:80".parse().unwrap()),
                user: Some("jo \"e\"\n".into()),
                result: "ok",
                reason: None,
                up: 12,
                down: 3456,
                duration: Duration::from_millis(1500),
            },
            &mut s,
        );
        assert_eq!(
            s,
            "client=127.0.0.1:5000 version=5 command=CONNECT dest=example.com:80 \
             address=[::1]:80 user=\"jo \\\"e\\\"\\x0a\" result=ok up=12 down=3456 duration=1.500"
        );
        s.clear();
        ConnLog::format(
            &Entry {
                client: Some("127.0.0.1:5000".parse().unwrap()),
                result: "refused",
                reason: Some("not a SOCKS request (first byte 0x47)".into()),
                ..Entry::default()
            },
            &mut s,
        );
        assert_eq!(
            s,
            "client=127.0.0.1:5000 version=- command=- dest=- address=- user=- result=refused \
             up=0 down=0 duration=0.000 reason=\"not a SOCKS request (first byte 0x47)\""
        );
    }

    #[test]
    fn the_file_is_appended_and_reopened_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socks.log");
        let mut l = ConnLog::file(path.clone()).unwrap();
        let e = Entry {
            result: "ok",
            ..Entry::default()
        };
        l.log(&e);
        l.flush();
        std::fs::rename(&path, dir.path().join("socks.log.1")).unwrap();
        l.log(&e);
        l.reopen();
        l.log(&e);
        l.flush();
        let old = std::fs::read_to_string(dir.path().join("socks.log.1")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert_eq!((old.lines().count(), new.lines().count()), (2, 1));
        assert!(new.contains(" client=- version=- "), "{new}");
    }
}
