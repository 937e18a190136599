//! Maildir delivery that loses nothing, and reading a mailbox for POP3.
//!
//! Delivery (in `deliver`) takes a batch of messages from concurrent sessions: each copy is
//! written into `tmp/` and flushed by its own fsync, renamed into `new/` under a unique name,
//! and each `new/` directory is flushed by its own fsync; only then is any of them
//! acknowledged. The flushes of a batch are issued together (group commit), so the disk's
//! cost is paid about once per batch, not once per message; a message reaches all its
//! Maildirs or none.

mod deliver;

pub use deliver::deliver_batch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// One message for one or more Maildirs.
#[derive(Debug)]
pub struct Job {
    /// The message with our `Received:` header, LF line ends.
    pub data: Vec<u8>,
    /// Each Maildir with the address its `Delivered-To:` names.
    pub targets: Vec<(PathBuf, String)>,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// twistd's unique name: `<secs>.M<usec>P<pid>Q<counter>.<host>`, the microseconds padded to
/// seven digits as twistd does, so names sort in arrival order.
pub fn unique_name(host: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let q = COUNTER.fetch_add(1, Ordering::Relaxed);
    let host = host.replace(['/', ':'], "_");
    format!(
        "{}.M{:07}P{}Q{q}.{host}",
        now.as_secs(),
        now.subsec_micros(),
        PID.get_or_init(std::process::id)
    )
}

/// One message in a mailbox.
#[derive(Debug)]
pub struct Message {
    pub path: PathBuf,
    /// The unique name, for UIDL.
    pub uid: String,
    /// Octets as sent over POP3 (LF counted as CRLF).
    pub size: u64,
    pub deleted: bool,
}

/// Lists `new/` and `cur/` oldest first, sizing each message as POP3 sends it.
pub fn read_mailbox(dir: &Path) -> std::io::Result<Vec<Message>> {
    let mut msgs = Vec::new();
    for sub in ["cur", "new"] {
        let rd = match std::fs::read_dir(dir.join(sub)) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !e.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let data = std::fs::read(e.path())?;
            let lf = data.iter().filter(|b| **b == b'\n').count() as u64;
            let crlf = data.windows(2).filter(|w| w == b"\r\n").count() as u64;
            msgs.push(Message {
                path: e.path(),
                uid: name.split([':', ',']).next().unwrap_or(&name).to_string(),
                size: data.len() as u64 + lf - crlf,
                deleted: false,
            });
        }
    }
    // Maildir names start with the delivery time: name order is arrival order.
    msgs.sort_by(|a, b| a.uid.cmp(&b.uid));
    Ok(msgs)
}

/// The message as POP3 sends it: CRLF line ends, lines starting with `.` stuffed, and with
/// `body_lines` set, only the headers, the blank line and that many body lines (TOP).
pub fn pop3_body(data: &[u8], body_lines: Option<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 32 + 8);
    let mut in_body = false;
    let mut sent_body = 0usize;
    let text = data.strip_suffix(b"\n").unwrap_or(data);
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if in_body {
            if body_lines.is_some_and(|n| sent_body >= n) {
                break;
            }
            sent_body += 1;
        }
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        if !in_body && line.is_empty() {
            in_body = true;
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_delivery_lands_whole_in_new() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        crate::config::make_maildir(&a).unwrap();
        crate::config::make_maildir(&b).unwrap();
        let jobs = vec![
            Job {
                data: b"Subject: one\n\nbody\n".to_vec(),
                targets: vec![(a.clone(), "a@x".into()), (b.clone(), "b@x".into())],
            },
            Job {
                data: b"Subject: two\n\n".to_vec(),
                targets: vec![(dir.path().join("missing"), "m@x".into())],
            },
        ];
        let r = deliver_batch(&jobs, "host");
        assert!(r[0].is_ok());
        assert!(r[1].is_err(), "a missing maildir fails that job only");
        let box_a = read_mailbox(&a).unwrap();
        assert_eq!(box_a.len(), 1);
        let text = std::fs::read_to_string(&box_a[0].path).unwrap();
        assert_eq!(text, "Delivered-To: a@x\nSubject: one\n\nbody\n");
        assert_eq!(box_a[0].size, text.len() as u64 + 4, "CRLF octets");
        assert!(
            box_a[0]
                .path
                .to_string_lossy()
                .contains(&format!(",S={}", text.len()))
        );
        assert_eq!(
            std::fs::read_dir(a.join("tmp")).unwrap().count(),
            0,
            "nothing left in tmp/"
        );
    }

    #[test]
    fn pop3_bodies_are_crlf_and_dot_stuffed() {
        let msg = b"Subject: s\n\n.dot line\nline 2\nline 3\n";
        assert_eq!(
            pop3_body(msg, None),
            b"Subject: s\r\n\r\n..dot line\r\nline 2\r\nline 3\r\n.\r\n"
        );
        assert_eq!(
            pop3_body(msg, Some(1)),
            b"Subject: s\r\n\r\n..dot line\r\n.\r\n"
        );
        assert_eq!(pop3_body(msg, Some(0)), b"Subject: s\r\n\r\n.\r\n");
    }
}
