//! Maildir delivery that loses nothing, and reading a mailbox for POP3.
//!
//! A batch of messages is written into `tmp/` and made durable (fsync for one file, one
//! syncfs(2) for several), then renamed into `new/` under unique names, and the `new/`
//! directories are made durable the same way; only then is any of them acknowledged.
//! Concurrent deliveries share one batch (group commit), so the disk flushes are paid once per
//! batch, not once per message.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
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

struct Written {
    job: usize,
    tmp: PathBuf,
    new: PathBuf,
    file: File,
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Delivers every job; one result per job, `Ok` only once the message is durable everywhere.
pub fn deliver_batch(jobs: &[Job], host: &str) -> Vec<Result<(), String>> {
    let mut results: Vec<Result<(), String>> = vec![Ok(()); jobs.len()];
    let mut written: Vec<Written> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        for (dir, rcpt) in &job.targets {
            let name = unique_name(host);
            let tmp = dir.join("tmp").join(&name);
            let head = format!("Delivered-To: {rcpt}\n");
            let size = head.len() + job.data.len();
            let new = dir.join("new").join(format!("{name},S={size}"));
            let r = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| {
                    // One write for the header and the message.
                    let mut whole = Vec::with_capacity(size);
                    whole.extend_from_slice(head.as_bytes());
                    whole.extend_from_slice(&job.data);
                    f.write_all(&whole)?;
                    Ok(f)
                });
            match r {
                Ok(file) => written.push(Written {
                    job: j,
                    tmp,
                    new,
                    file,
                }),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    results[j] = Err(format!("cannot write {}: {e}", tmp.display()));
                }
            }
        }
    }
    // Make every file durable. One file: fsync it. Several: one syncfs(2) flushes them all
    // with a single journal commit, where fsyncing each in turn would commit once per file.
    if written.len() == 1 {
        let w = &written[0];
        if let Err(e) = w.file.sync_all() {
            results[w.job] = Err(format!("cannot sync {}: {e}", w.tmp.display()));
        }
    } else if let Some(first) = written.first()
        && let Err(e) = nix::unistd::syncfs(&first.file)
    {
        for w in &written {
            results[w.job] = Err(format!("cannot sync {}: {e}", w.tmp.display()));
        }
    }
    let mut dirs = BTreeSet::new();
    for w in &written {
        if results[w.job].is_err() {
            let _ = std::fs::remove_file(&w.tmp);
            continue;
        }
        match std::fs::rename(&w.tmp, &w.new) {
            Ok(()) => {
                if let Some(d) = w.new.parent() {
                    dirs.insert(d.to_path_buf());
                }
            }
            Err(e) => {
                let _ = std::fs::remove_file(&w.tmp);
                results[w.job] = Err(format!("cannot move into {}: {e}", w.new.display()));
            }
        }
    }
    // The renames are durable once each new/ directory is: one fsync for one directory,
    // one syncfs for many.
    let synced = if dirs.len() > 1 {
        File::open(dirs.iter().next().map_or(Path::new("."), |d| d.as_path()))
            .map_err(|e| e.to_string())
            .and_then(|f| nix::unistd::syncfs(&f).map_err(|e| e.to_string()))
    } else {
        dirs.iter()
            .try_for_each(|d| fsync_dir(d))
            .map_err(|e| e.to_string())
    };
    if let Err(e) = synced {
        for w in &written {
            if results[w.job].is_ok() {
                results[w.job] = Err(format!("cannot sync {}: {e}", w.new.display()));
            }
        }
    }
    results
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
