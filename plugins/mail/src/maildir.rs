//! Maildir delivery that loses nothing (reading a mailbox for POP3 is `crate::mailbox`).
//!
//! Delivery (in `deliver`) takes a batch of messages from concurrent sessions: each copy is
//! written into `tmp/` and flushed by its own fsync, renamed into `new/` under a unique name,
//! and each `new/` directory is flushed by its own fsync; only then is any of them
//! acknowledged. The flushes of a batch are issued together (group commit), so the disk's
//! cost is paid about once per batch, not once per message; a message reaches all its
//! Maildirs or none.

mod deliver;

pub use deliver::deliver_batch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// One message for one or more Maildirs.
#[derive(Debug)]
pub struct Job {
    /// The envelope sender (MAIL FROM, empty for `<>`), as a path's text: the
    /// `Return-Path:` that final delivery writes first (RFC 5321 4.4).
    pub sender: String,
    /// Our `Received:` header, written before `data`: kept apart so that a message of
    /// megabytes is not copied to put a few hundred octets in front of it.
    pub head: String,
    /// The message as received, LF line ends.
    pub data: Vec<u8>,
    /// Each Maildir with the address its `Delivered-To:` names.
    pub targets: Vec<(PathBuf, String)>,
    /// `data`'s octets in the process's budget, given back when the job is dropped (after
    /// its batch, on the delivery thread).
    pub memory: crate::memory::Reservation,
    /// What the log says of the message once its batch is done (boxed: a job travels in
    /// `smtp::Action`, whose other variants are small). Taken out (`Option::take`, which
    /// allocates nothing) for the reactor thread when the job goes to the delivery thread.
    pub receipt: Option<Box<Receipt>>,
}

/// A message's log line and metrics, written when its batch is done whether or not its
/// session is still there to answer: a client that went away before its 250 may still have
/// had its message delivered, and the log must say so.
#[derive(Debug)]
pub struct Receipt {
    pub peer: String,
    pub id: String,
    pub from: String,
    /// The recipients, comma-separated.
    pub to: String,
    pub size: usize,
    /// The end of DATA.
    pub start: std::time::Instant,
}

impl Receipt {
    /// Logs the message's outcome and counts it.
    pub fn log(&self, result: &Result<(), String>) {
        let durable = self.start.elapsed();
        let (peer, id, from, to, size) = (&self.peer, &self.id, &self.from, &self.to, self.size);
        match result {
            Ok(()) => {
                crate::metrics::with(|m| {
                    m.accepted.inc();
                    m.durable.observe(durable.as_secs_f64());
                });
                log::info!(target: "twistrs.mail.smtp",
                    client = peer.as_str(), queue_id = id.as_str(),
                    sender = from.as_str(), recipients = to.as_str(), size = size,
                    durable = durable.as_secs_f64();
                    "{peer}: {id} from <{from}> to <{}>, {size} bytes, durable in {:.1} ms",
                    to.replace(',', ">, <"), durable.as_secs_f64() * 1000.0);
            }
            Err(e) => {
                crate::metrics::with(|m| m.failed.inc());
                log::error!(target: "twistrs.mail.smtp",
                    client = peer.as_str(), queue_id = id.as_str(),
                    sender = from.as_str(), recipients = to.as_str(), size = size;
                    "{peer}: {id} delivery failed: {e}");
            }
        }
    }
}

#[cfg(test)]
impl Job {
    /// The message as stored, less its `Return-Path:` and `Delivered-To:` lines, for tests to
    /// compare whole.
    pub fn whole(&self) -> Vec<u8> {
        [self.head.as_bytes(), &self.data].concat()
    }
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
                sender: "s@y".into(),
                head: String::new(),
                data: b"Subject: one\n\nbody\n".to_vec(),
                targets: vec![(a.clone(), "a@x".into()), (b.clone(), "b@x".into())],
                memory: Default::default(),
                receipt: Default::default(),
            },
            Job {
                sender: "s@y".into(),
                head: String::new(),
                data: b"Subject: two\n\n".to_vec(),
                targets: vec![(dir.path().join("gone/missing"), "m@x".into())],
                memory: Default::default(),
                receipt: Default::default(),
            },
        ];
        let r = deliver_batch(&jobs, "host");
        assert!(r[0].is_ok());
        assert!(r[1].is_err(), "a missing maildir fails that job only");
        let box_a = crate::mailbox::scan(&a).unwrap();
        assert_eq!(box_a.len(), 1);
        let text = std::fs::read_to_string(&box_a[0].path).unwrap();
        assert_eq!(
            text,
            "Return-Path: <s@y>\nDelivered-To: a@x\nSubject: one\n\nbody\n"
        );
        assert_eq!(box_a[0].size, text.len() as u64 + 5, "CRLF octets");
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
}
