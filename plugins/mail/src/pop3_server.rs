//! The POP3 session on the reactor: disk work on worker threads, messages streamed.
//!
//! Opening a mailbox (lock and listing), reading a message and removing deleted ones run on
//! the reactor's worker threads (`Transport::call_in_thread`), so a slow disk delays only the
//! session waiting for it. A message goes out a chunk at a time: the next chunk is read only
//! once the transport has drained below the low-water mark (the reactor calls
//! `resume_producing`), so a client that does not read holds at most a chunk and the
//! high-water mark of its output, however large the message or however many RETRs it
//! pipelines. Commands are taken only while the output has room.

use std::any::Any;
use std::fs::File;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use twistrs_core::limit::PeerSlot;
use twistrs_core::{DelayedCall, Failure, Protocol, Transport};

use crate::config::{MailConfig, Tls};
use crate::mailbox::{self, Encoder, Mailbox, OpenError, Whereabouts};
use crate::pop3::{self, Pop3};

/// Timer key: the delayed reply to a failed login is due.
const DELAY_TIMER: u64 = 1;
/// Timer key: a command line did not arrive whole in time.
const DEADLINE_TIMER: u64 = 2;
/// Unprocessed input a session may hold while it waits (for the disk, a login delay).
const PENDING_INPUT_MAX: usize = 64 * 1024;
/// Commands are taken only while less than this waits to be sent (and one `step` writes no
/// more than about this much before it stops taking them).
const OUTPUT_MAX: usize = pop3::STEP_OUTPUT;

/// A mailbox opened on a worker thread.
struct Opened(Result<Mailbox, OpenError>);

/// The next chunk of a message, read on a worker thread, with the file to read on from.
struct Chunk {
    file: File,
    data: Vec<u8>,
    /// The message had been moved by another reader: where every message is now.
    moved: Option<Whereabouts>,
}

/// UPDATE done on a worker thread: how many files could not be removed.
struct Removed(usize);

/// A message on its way to the client.
struct Sending {
    path: PathBuf,
    size: u64,
    encoder: Encoder,
    /// The open file, between reads; `None` before the first read and while one runs.
    file: Option<File>,
    offset: u64,
    reading: bool,
    /// `+OK` went out: an error now can only close the connection.
    started: bool,
}

/// A POP3 connection.
pub struct Pop3Protocol {
    core: Pop3,
    cfg: Rc<MailConfig>,
    out: Vec<u8>,
    delayed: Option<Vec<u8>>,
    sending: Option<Sending>,
    /// The client half-closed: answer what it sent, then close.
    eof: bool,
    /// A graceful stop: finish the message on its way, then say so and close.
    stopping: bool,
    deadline: Option<DelayedCall>,
    /// This session's place in `--max-connections-per-client`, given back as soon as the
    /// session is over (`close`), not when the client gets round to closing its socket.
    slot: Option<PeerSlot>,
}

impl Pop3Protocol {
    pub fn new(cfg: Rc<MailConfig>, banner: String, slot: PeerSlot) -> Self {
        Pop3Protocol {
            core: Pop3::new(cfg.clone(), banner),
            cfg,
            out: Vec::new(),
            delayed: None,
            sending: None,
            eof: false,
            stopping: false,
            deadline: None,
            slot: Some(slot),
        }
    }

    /// Each reply in one write: no waiting on Nagle and delayed ACKs.
    fn flush(&mut self, t: &mut Transport<'_>) {
        if !self.out.is_empty() {
            t.write(&self.out);
            crate::release(&mut self.out);
        }
    }

    fn close(&mut self, t: &mut Transport<'_>) {
        self.flush(t);
        if let Some(d) = self.deadline.take() {
            d.cancel();
        }
        self.slot = None;
        t.lose_connection();
    }

    /// Runs the session as far as it goes: until it waits for the disk, a login delay, more
    /// input, or room in the output.
    fn pump(&mut self, t: &mut Transport<'_>) {
        while self.delayed.is_none() && self.sending.is_none() && t.buffered() < OUTPUT_MAX {
            let action = self.core.step(&mut self.out);
            self.flush(t);
            match action {
                None => break,
                Some(pop3::Action::Delay(d, reply)) => {
                    self.delayed = Some(reply);
                    t.call_later(d, DELAY_TIMER);
                }
                Some(pop3::Action::Close) => return self.close(t),
                // The +OK went out in plaintext above, then the handshake; the session
                // already threw away what followed the command.
                Some(pop3::Action::StartTls) => match self.cfg.tls.clone() {
                    Some(tls) => t.start_tls(&tls),
                    None => return self.close(t),
                },
                Some(pop3::Action::Open(dir)) => {
                    t.call_in_thread(move || Ok(Opened(mailbox::open(&dir))));
                }
                Some(pop3::Action::Send { path, size, top }) => {
                    self.sending = Some(Sending {
                        path,
                        size,
                        encoder: Encoder::new(top),
                        file: None,
                        offset: 0,
                        reading: false,
                        started: false,
                    });
                    self.read_next(t);
                }
                Some(pop3::Action::Update(paths)) => {
                    t.call_in_thread(move || {
                        let failed = mailbox::remove_all(&paths);
                        for (p, e) in &failed {
                            log::error!(target: "twistrs.mail.pop3",
                                "cannot remove {}: {e}", p.display());
                        }
                        Ok(Removed(failed.len()))
                    });
                }
            }
        }
        if self.stopping && !self.busy() && !self.core.closed() {
            t.write(b"-ERR Server shutting down\r\n");
            return self.close(t);
        }
        // After a half-close, commands still buffered behind a full output are answered
        // first (`resume_producing` takes them once it drains); only then is it the end.
        let answers_due = t.buffered() >= OUTPUT_MAX && self.core.pending_input() > 0;
        if self.eof && !self.busy() && !answers_due {
            return self.close(t);
        }
        // Stop reading while commands pile up behind a wait.
        if self.core.pending_input() > PENDING_INPUT_MAX {
            t.pause_producing();
        } else {
            t.resume_producing();
        }
        self.watch_deadline(t);
    }

    /// Waiting for something other than the client.
    fn busy(&self) -> bool {
        self.delayed.is_some() || self.sending.is_some() || self.core.waiting()
    }

    /// A command line that has begun must end within the timeout: a client that trickles a
    /// byte at a time cannot hold a session forever.
    fn watch_deadline(&mut self, t: &mut Transport<'_>) {
        let partial = self.core.partial_command() && !self.busy();
        match (&self.deadline, partial) {
            (None, true) => {
                self.deadline = Some(t.call_later(self.cfg.pop3_timeout, DEADLINE_TIMER))
            }
            (Some(_), false) => {
                if let Some(d) = self.deadline.take() {
                    d.cancel();
                }
            }
            _ => {}
        }
    }

    /// Reads the next chunk of the message being sent, on a worker thread.
    fn read_next(&mut self, t: &mut Transport<'_>) {
        let Some(s) = self.sending.as_mut() else {
            return;
        };
        if s.reading {
            return;
        }
        s.reading = true;
        let (file, path, offset) = (s.file.take(), s.path.clone(), s.offset);
        t.call_in_thread(move || {
            let (file, moved) = match file {
                Some(f) => (f, None),
                None => mailbox::open_message(&path)
                    .map_err(|e| Failure::msg(format!("{}: {e}", path.display())))?,
            };
            let data = mailbox::read_chunk(&file, offset)
                .map_err(|e| Failure::msg(format!("{}: {e}", path.display())))?;
            Ok(Chunk { file, data, moved })
        });
    }

    fn chunk_arrived(&mut self, t: &mut Transport<'_>, r: Result<Chunk, Failure>) {
        let Some(s) = self.sending.as_mut() else {
            return;
        };
        s.reading = false;
        let mut chunk = match r {
            Ok(c) => c,
            Err(f) if !s.started => {
                self.sending = None;
                self.core.sent(Err(f.to_string()), &mut self.out);
                return self.pump(t);
            }
            Err(f) => {
                // Part of the message went out: the reply cannot be mended, only cut.
                log::error!(target: "twistrs.mail.pop3", "message cut short: {f}");
                self.sending = None;
                return t.abort_connection();
            }
        };
        if let Some(now) = chunk.moved.take() {
            self.core.relocated(&now);
        }
        if !s.started {
            s.started = true;
            self.out
                .extend_from_slice(format!("+OK {} octets\r\n", s.size).as_bytes());
        }
        let at_end = chunk.data.is_empty();
        s.offset += chunk.data.len() as u64;
        s.encoder.feed(&chunk.data, &mut self.out);
        if at_end || s.encoder.done() {
            s.encoder.finish(&mut self.out);
            self.sending = None;
            self.core.sent(Ok(()), &mut self.out);
            self.flush(t);
            return self.pump(t);
        }
        s.file = Some(chunk.file);
        self.flush(t);
        if t.buffered() < OUTPUT_MAX {
            self.read_next(t);
        }
    }
}

impl Protocol for Pop3Protocol {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.register_producer();
        t.set_timeout(Some(self.cfg.pop3_timeout));
        self.core.set_tls(Tls::of(&self.cfg, t.is_secure()));
        self.core.greeting(&mut self.out);
        self.flush(t);
    }

    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        self.core.feed(data);
        self.pump(t);
    }

    /// A half-close is not a QUIT: what arrived before it is answered, then the connection
    /// closes (a QUIT among it still removes the deleted messages first).
    fn read_eof(&mut self, t: &mut Transport<'_>) {
        self.eof = true;
        self.pump(t);
    }

    fn notified(&mut self, t: &mut Transport<'_>, msg: Box<dyn Any>) {
        let msg = match msg.downcast::<Result<Chunk, Failure>>() {
            Ok(r) => return self.chunk_arrived(t, *r),
            Err(m) => m,
        };
        let msg = match msg.downcast::<Result<Opened, Failure>>() {
            Ok(r) => {
                let opened = r.map_or_else(
                    |f| Err(OpenError::Io(std::io::Error::other(f.to_string()))),
                    |o| o.0,
                );
                self.core.opened(opened, &mut self.out);
                t.reset_timeout();
                return self.pump(t);
            }
            Err(m) => m,
        };
        if let Ok(r) = msg.downcast::<Result<Removed, Failure>>() {
            let failed = r.map_or(usize::MAX, |r| r.0);
            if let Some(pop3::Action::Close) = self.core.updated(failed, &mut self.out) {
                self.close(t);
            }
        }
    }

    /// The output drained: send more of the message, or take more commands.
    fn resume_producing(&mut self, t: &mut Transport<'_>) {
        match &self.sending {
            Some(s) if s.file.is_some() && !s.reading => self.read_next(t),
            Some(_) => {}
            None => {
                if self.core.pending_input() > 0 && !self.busy() && !self.core.closed() {
                    self.pump(t);
                }
            }
        }
    }

    fn timer_fired(&mut self, t: &mut Transport<'_>, key: u64) {
        match key {
            DELAY_TIMER => {
                if let Some(reply) = self.delayed.take() {
                    t.write(&reply);
                    self.pump(t);
                }
            }
            DEADLINE_TIMER => {
                self.deadline = None;
                if self.core.partial_command() {
                    log::info!(target: "twistrs.mail.pop3", "{}: command too slow, closing",
                        t.peer().host_string());
                    t.write(b"-ERR Timeout, closing connection\r\n");
                    self.close(t);
                }
            }
            _ => {}
        }
    }

    fn timeout_connection(&mut self, t: &mut Transport<'_>) {
        t.write(b"-ERR Timeout, closing connection\r\n");
        self.close(t);
    }

    /// A restart's old process drains: the session goes on as usual (new transactions too)
    /// until the client quits or idles out, as `postfix reload` lets smtpd finish its
    /// client: a sender with a batch would otherwise be told 421 mid-way and defer the rest.
    /// The reactor asks it to stop a few seconds before the drain's deadline, so a message
    /// in flight can still finish then.
    fn serves_through_handover(&self) -> bool {
        true
    }

    /// Graceful stop: a message on its way (or a mailbox being opened or updated) is
    /// finished first; the reactor's shutdown deadline bounds the wait.
    fn stop_requested(&mut self, t: &mut Transport<'_>) {
        self.stopping = true;
        if !self.busy() {
            self.pump(t);
        }
    }
}

/// The POP3 APOP banner: `<secs.pid.rand@host>`, unique per connection.
pub fn apop_banner(host: &str, n: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    format!(
        "<{}.{}.{}{n}@{host}>",
        now.as_secs(),
        std::process::id(),
        now.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture::{self, slot};
    use twistrs_core::testing::Harness;

    /// A session fed `input` in `chunk`-byte pieces by a client that reads nothing until it
    /// has sent it all (and then half-closes, with `eof`); the worker threads' results
    /// (the mailbox, each chunk of a message, QUIT's removals) are delivered after every
    /// `wait_every`th piece, or only once the input is all in. Everything the client got.
    fn session(
        cfg: &Rc<MailConfig>,
        input: &[u8],
        chunk: usize,
        wait_every: usize,
        eof: bool,
    ) -> (Vec<u8>, bool) {
        let mut h = Harness::new(Pop3Protocol::new(cfg.clone(), "<b@h>".into(), slot()));
        h.connect();
        for (i, piece) in input.chunks(chunk).enumerate() {
            h.feed(piece);
            if wait_every != 0 && i % wait_every == 0 {
                h.wait_for_threads(Duration::from_secs(10));
            }
        }
        if eof {
            h.eof();
        }
        let mut out = Vec::new();
        for _ in 0..10_000 {
            h.wait_for_threads(Duration::from_secs(10));
            out.extend(h.take_output());
            if h.lost().is_some() {
                break;
            }
        }
        (out, h.lost().is_some())
    }

    /// Commands pipelined in one write, or cut anywhere, are answered in order on the
    /// reactor side too: behind the mailbox being opened on a worker thread, behind a RETR
    /// streamed a chunk at a time to a client that reads nothing meanwhile (commands are
    /// taken only while the output has room), and behind QUIT's removals; a client that
    /// half-closes after sending them all still gets every answer.
    #[test]
    fn pipelined_commands_are_answered_in_order_behind_the_worker_threads() {
        let dir = tempfile::tempdir().unwrap();
        let d = fixture::example_domain(dir.path());
        let new = d.path.join("joe/new");
        crate::config::make_maildir(&d.path.join("joe")).unwrap();
        let cfg = Rc::new(MailConfig {
            default: Some(0),
            ..fixture::config(vec![d])
        });
        let mut big = b"Subject: big\n\n".to_vec();
        for i in 0..8000 {
            let dot = if i % 5 == 0 { "." } else { "" };
            big.extend_from_slice(format!("{dot}line {i} of the big one\n").as_bytes());
        }
        let msgs: [(&str, &[u8]); 3] = [
            ("1.M1P1Q1.h", b"Subject: one\n\nhi\n"),
            ("2.M1P1Q1.h", &big),
            ("3.M1P1Q1.h", b"Subject: three\n\n.\n"),
        ];
        let pop3 = |data: &[u8], top| {
            let mut out = Vec::new();
            let mut e = Encoder::new(top);
            e.feed(data, &mut out);
            e.finish(&mut out);
            out
        };
        let size = |data: &[u8]| data.len() + data.iter().filter(|&&b| b == b'\n').count();
        let want = [
            b"+OK <b@h>\r\n+OK USER accepted, send PASS\r\n+OK Maildrop has 3 messages\r\n"
                .to_vec(),
            format!("+OK {} octets\r\n", size(&big)).into_bytes(),
            pop3(&big, None),
            format!(
                "+OK \r\n+OK message 1 deleted\r\n+OK {} octets\r\n",
                size(msgs[2].1)
            )
            .into_bytes(),
            pop3(msgs[2].1, None),
            format!("+OK {} octets\r\n", size(&big)).into_bytes(),
            pop3(&big, Some(4000)),
            format!(
                "+OK \r\n2 {}\r\n3 {}\r\n.\r\n+OK 2 {}\r\n+OK Bye\r\n",
                size(&big),
                size(msgs[2].1),
                size(&big) + size(msgs[2].1)
            )
            .into_bytes(),
        ]
        .concat();
        let input =
            b"USER joe\r\nPASS secret\r\nRETR 2\r\nNOOP\r\nDELE 1\r\nRETR 3\r\nTOP 2 4000\r\nLIST\r\nSTAT\r\nQUIT\r\nNOOP\r\n";
        for (wait_every, eof) in [(0, false), (1, false), (4, true), (0, true)] {
            for chunk in 1..=input.len() {
                for (name, data) in msgs {
                    std::fs::write(new.join(name), data).unwrap();
                }
                let (out, closed) = session(&cfg, input, chunk, wait_every, eof);
                assert!(
                    out == want,
                    "wait every {wait_every}, eof {eof}, chunk {chunk}: {:?}",
                    String::from_utf8_lossy(&out[out.len().saturating_sub(300)..])
                );
                assert!(closed, "closed after QUIT");
                assert!(!new.join(msgs[0].0).exists(), "removed at QUIT");
                assert!(new.join(msgs[1].0).exists());
            }
        }
    }

    /// A client that sends its commands and half-closes gets the answers to all of them,
    /// however much output they make: the session stopped taking commands while the output
    /// was full (LIST and UIDL of a large mailbox), then took the half-close for the end and
    /// closed, so the rest were never answered and QUIT's deletions never done.
    #[test]
    fn a_half_closed_client_gets_every_answer_however_much_they_fill_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let d = fixture::example_domain(dir.path());
        let new = d.path.join("joe/new");
        crate::config::make_maildir(&d.path.join("joe")).unwrap();
        for i in 0..4000 {
            std::fs::write(new.join(format!("{i:05}.M1P1Q1.h")), "Subject: s\n\nhi\n").unwrap();
        }
        let cfg = Rc::new(MailConfig {
            default: Some(0),
            ..fixture::config(vec![d])
        });
        let input = b"USER joe\r\nPASS secret\r\nLIST\r\nUIDL\r\nLIST\r\nDELE 1\r\nQUIT\r\n";
        for chunk in [1, 5, input.len()] {
            let (out, closed) = session(&cfg, input, chunk, 0, true);
            let out = String::from_utf8(out).unwrap();
            assert!(closed);
            assert_eq!(out.matches("\r\n4000 ").count(), 3, "LIST, UIDL, LIST");
            assert!(
                out.ends_with("\r\n.\r\n+OK message 1 deleted\r\n+OK Bye\r\n"),
                "chunk {chunk}: {:?}",
                &out[out.len().saturating_sub(100)..]
            );
            assert!(!new.join("00000.M1P1Q1.h").exists(), "removed at QUIT");
            std::fs::write(new.join("00000.M1P1Q1.h"), "Subject: s\n\nhi\n").unwrap();
        }
    }

    /// A client that pipelines a burst of LISTs of a large mailbox and reads nothing holds
    /// about [`OUTPUT_MAX`] of output and the input it sent, not an answer per LIST: the
    /// session takes commands only while the output has room, one step at a time.
    #[test]
    fn pipelined_lists_to_a_client_that_reads_nothing_hold_little() {
        let dir = tempfile::tempdir().unwrap();
        let d = fixture::example_domain(dir.path());
        let new = d.path.join("joe/new");
        crate::config::make_maildir(&d.path.join("joe")).unwrap();
        for i in 0..1000 {
            std::fs::write(new.join(format!("{i:05}.M1P1Q1.h")), "x\n").unwrap();
        }
        let cfg = Rc::new(MailConfig {
            default: Some(0),
            ..fixture::config(vec![d])
        });
        let mut h = Harness::new(Pop3Protocol::new(cfg, "<b@h>".into(), slot()));
        h.connect();
        h.feed(b"USER joe\r\nPASS secret\r\n");
        h.wait_for_threads(Duration::from_secs(10));
        h.feed(&b"LIST\r\n".repeat(2000));
        let held = h.output().len();
        // One LIST is about 9 KiB: 2,000 of them would be 18 MiB.
        assert!(held < 2 * OUTPUT_MAX, "{held} octets held for the client");
        // The client reads as long as more comes.
        let out = h.take_all_output();
        assert_eq!(
            out.windows(10).filter(|w| w == b"\r\n1000 3\r\n").count(),
            2000,
            "all answered once the client reads"
        );
        // The session, idle again, keeps no step's worth of scratch for its life.
        assert!(h.proto.out.capacity() <= 4096, "{}", h.proto.out.capacity());
    }
}
