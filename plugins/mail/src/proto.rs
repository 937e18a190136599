//! The SMTP and POP3 sessions on the reactor, and group-committed delivery.
//!
//! Deliveries from every SMTP session go through one [`Deliveries`] queue: while a batch is
//! being written and synced on a worker thread (`defer_to_thread`), new messages wait, and all
//! of them form the next batch. Each session hears its own result through `Handle::notify`
//! and only then answers 250.

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use twistrs_core::limit::PeerSlot;
use twistrs_core::timer::later;
use twistrs_core::{ConnId, DelayedCall, Handle, Protocol, Transport};

use crate::config::{MailConfig, Tls};
use crate::maildir::{Job, Receipt, deliver_batch};
use crate::smtp::{self, Smtp};

/// A delivery's outcome, sent to its session.
pub struct Delivered(pub Result<(), String>);

/// The queue of messages waiting for the disk.
#[derive(Default)]
pub struct Deliveries {
    queue: Vec<(ConnId, Job)>,
    busy: bool,
    host: String,
}

impl Deliveries {
    pub fn new(host: String) -> Rc<RefCell<Deliveries>> {
        Rc::new(RefCell::new(Deliveries {
            queue: Vec::new(),
            busy: false,
            host,
        }))
    }
}

/// Queues `job`; starts a batch unless one is being written.
pub fn submit(this: &Rc<RefCell<Deliveries>>, h: &Handle, conn: ConnId, job: Job) {
    this.borrow_mut().queue.push((conn, job));
    if !this.borrow().busy {
        start(this, h);
    }
}

fn start(this: &Rc<RefCell<Deliveries>>, h: &Handle) {
    let (ids, mut jobs, host): (Vec<ConnId>, Vec<Job>, String) = {
        let mut d = this.borrow_mut();
        if d.queue.is_empty() {
            return;
        }
        d.busy = true;
        let (ids, jobs) = std::mem::take(&mut d.queue).into_iter().unzip();
        (ids, jobs, d.host.clone())
    };
    // Logged here, not by the session: its client may have gone before its 250.
    let receipts: Vec<Option<Box<Receipt>>> = jobs.iter_mut().map(|j| j.receipt.take()).collect();
    let done = h.defer_to_thread(move || Ok(deliver_batch(&jobs, &host)));
    let (this_ok, h_ok, ids_ok) = (this.clone(), h.clone(), ids.clone());
    let (this_err, h_err) = (this.clone(), h.clone());
    let receipts = Rc::new(receipts);
    let receipts_err = receipts.clone();
    done.add_callbacks(
        move |results| {
            for ((id, r), receipt) in ids_ok.iter().zip(results).zip(receipts.iter()) {
                if let Some(receipt) = receipt {
                    receipt.log(&r);
                }
                h_ok.notify(*id, Box::new(Delivered(r)));
            }
            this_ok.borrow_mut().busy = false;
            start(&this_ok, &h_ok);
            Ok(Vec::new())
        },
        move |f| {
            for (id, receipt) in ids.iter().zip(receipts_err.iter()) {
                let r = Err(f.to_string());
                if let Some(receipt) = receipt {
                    receipt.log(&r);
                }
                h_err.notify(*id, Box::new(Delivered(r)));
            }
            this_err.borrow_mut().busy = false;
            start(&this_err, &h_err);
            Ok(Vec::new())
        },
    );
}

/// Unprocessed input a session may hold while it waits (for the disk, or a login delay).
const PENDING_INPUT_MAX: usize = 64 * 1024;

/// Timer key: the deadline of a command line or of a DATA transfer.
const DEADLINE_TIMER: u64 = 2;
/// Timer key: the held answer to a failed AUTH is due.
const DELAY_TIMER: u64 = 3;

/// The slowest a DATA transfer may go once it has used up `--timeout` (postfix's
/// `smtpd_min_data_rate`): a 10 MiB message gets the timeout plus 5.8 hours at most.
const MIN_DATA_RATE: u64 = 500;

/// What the deadline timer is watching.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing: no partial command, not in DATA.
    Idle,
    /// A command line has begun and not ended.
    Command,
    /// A DATA transfer, since the given instant.
    Data(std::time::Instant),
}

/// An SMTP connection.
pub struct SmtpProtocol {
    core: Smtp,
    cfg: Rc<MailConfig>,
    store: Rc<RefCell<Deliveries>>,
    out: Vec<u8>,
    stopping: bool,
    /// The client half-closed: answer what it sent, then close.
    eof: bool,
    phase: Phase,
    deadline: Option<DelayedCall>,
    /// The replies are held (a failed AUTH's 535 waits `fail_delay`): nothing is written or
    /// stepped until `DELAY_TIMER`.
    held: bool,
    /// This session's place in `--max-connections-per-client`, given back as soon as the
    /// session is over (`close`), not when the client gets round to closing its socket.
    slot: Option<PeerSlot>,
}

impl SmtpProtocol {
    pub fn new(
        cfg: Rc<MailConfig>,
        store: Rc<RefCell<Deliveries>>,
        peer: String,
        slot: PeerSlot,
    ) -> Self {
        SmtpProtocol {
            core: Smtp::new(cfg.clone(), peer),
            cfg,
            store,
            out: Vec::new(),
            stopping: false,
            eof: false,
            phase: Phase::Idle,
            deadline: None,
            held: false,
            slot: Some(slot),
        }
    }

    fn flush(&mut self, t: &mut Transport<'_>) {
        if !self.out.is_empty() {
            t.write(&self.out);
            crate::release(&mut self.out);
        }
    }

    /// Runs the session as far as it goes.
    fn pump(&mut self, t: &mut Transport<'_>) {
        if self.held {
            return;
        }
        match self.core.step(&mut self.out) {
            // The session waits in `delivering` until `notified` brings the result.
            Some(smtp::Action::Deliver(job)) => submit(&self.store, t.handle(), t.id(), job),
            Some(smtp::Action::Close) => {
                self.close(t);
                return;
            }
            // The 220 goes out in plaintext, then the handshake; the session already threw
            // away what followed the command.
            Some(smtp::Action::StartTls) => match self.cfg.tls.clone() {
                Some(tls) => {
                    self.flush(t);
                    t.start_tls(&tls);
                }
                None => {
                    self.close(t);
                    return;
                }
            },
            Some(smtp::Action::Delay(d)) => {
                self.held = true;
                t.call_later(d, DELAY_TIMER);
                return;
            }
            None => {}
        }
        if self.stopping && !self.core.in_transaction() {
            self.core.shutdown(&mut self.out);
            self.close(t);
            return;
        }
        // After a half-close, commands still buffered behind a full output are answered
        // first (`resume_producing` takes them once it drains); only then is it the end.
        // (This step's replies are still in `out`.)
        let held = t.buffered() + self.out.len();
        let answers_due = held >= crate::STEP_OUTPUT && self.core.pending_input() > 0;
        if self.eof && !self.core.delivering() && !answers_due {
            // Everything the client sent before its FIN has been answered.
            self.close(t);
            return;
        }
        self.flush(t);
        self.watch_deadline(t);
    }

    fn close(&mut self, t: &mut Transport<'_>) {
        self.flush(t);
        self.set_phase(t, Phase::Idle);
        self.slot = None;
        t.lose_connection();
    }

    /// Arms the deadline for what the session is in the middle of (a command line, a DATA
    /// transfer), so a client that trickles a byte at a time cannot hold a session forever.
    fn watch_deadline(&mut self, t: &mut Transport<'_>) {
        let phase = if self.core.data_size().is_some() {
            match self.phase {
                Phase::Data(since) => Phase::Data(since),
                _ => Phase::Data(t.handle().now()),
            }
        } else if self.core.partial_command() {
            Phase::Command
        } else {
            Phase::Idle
        };
        self.set_phase(t, phase);
    }

    fn set_phase(&mut self, t: &mut Transport<'_>, phase: Phase) {
        if phase == self.phase {
            return;
        }
        self.phase = phase;
        if let Some(d) = self.deadline.take() {
            d.cancel();
        }
        if phase != Phase::Idle {
            self.deadline = Some(t.call_later(self.cfg.timeout, DEADLINE_TIMER));
        }
    }

    /// The deadline timer fired: close if the command or the transfer is over its time.
    fn deadline_fired(&mut self, t: &mut Transport<'_>) {
        self.deadline = None;
        let late = match self.phase {
            Phase::Idle => false,
            Phase::Command => self.core.partial_command(),
            Phase::Data(since) => {
                let size = self.core.data_size().unwrap_or(0) as u64;
                // Saturating: --timeout takes any u64 of seconds, which means "never".
                let allowed = self
                    .cfg
                    .timeout
                    .saturating_add(Duration::from_secs(size / MIN_DATA_RATE));
                let (now, until) = (t.handle().now(), later(since, allowed));
                if now < until {
                    self.deadline = Some(t.call_later(until - now, DEADLINE_TIMER));
                    false
                } else {
                    true
                }
            }
        };
        if late {
            self.core.deadline(&mut self.out);
            self.close(t);
        }
    }
}

impl Protocol for SmtpProtocol {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        // A producer: told when a full output drains, to take the commands behind it.
        t.register_producer();
        t.set_timeout(Some(self.cfg.timeout));
        self.core.set_tls(Tls::of(&self.cfg, t.is_secure()));
        self.core.greeting(&mut self.out);
        self.flush(t);
    }

    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        self.core.feed(data);
        if !self.core.delivering() && !self.held {
            self.pump(t);
        } else if self.core.pending_input() > PENDING_INPUT_MAX {
            // Pipelined input piles up while the disk works (or a failed AUTH's answer
            // waits): stop reading until it is done.
            t.pause_producing();
        }
    }

    /// A half-close is not a QUIT: what arrived before it is answered (a message already on
    /// its way to the disk gets its 250), then the connection closes.
    fn read_eof(&mut self, t: &mut Transport<'_>) {
        self.eof = true;
        if !self.core.delivering() {
            self.pump(t);
        }
    }

    /// The output drained: take the pipelined commands a full output held back.
    fn resume_producing(&mut self, t: &mut Transport<'_>) {
        if self.core.pending_input() > 0 && !self.core.delivering() && !self.held {
            self.pump(t);
        }
    }

    fn notified(&mut self, t: &mut Transport<'_>, msg: Box<dyn Any>) {
        if let Ok(d) = msg.downcast::<Delivered>() {
            t.resume_producing();
            t.reset_timeout();
            self.core.delivered(d.0, &mut self.out);
            self.pump(t);
        }
    }

    fn timer_fired(&mut self, t: &mut Transport<'_>, key: u64) {
        if key == DEADLINE_TIMER {
            self.deadline_fired(t);
        } else if key == DELAY_TIMER && self.held {
            self.held = false;
            t.resume_producing();
            self.flush(t);
            self.pump(t);
        }
    }

    fn timeout_connection(&mut self, t: &mut Transport<'_>) {
        if self.core.delivering() {
            // The disk is slow, not the client: wait for the delivery.
            t.reset_timeout();
            return;
        }
        self.core.timeout(&mut self.out);
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

    /// Graceful stop: a message in DATA or being written is finished and answered first.
    fn stop_requested(&mut self, t: &mut Transport<'_>) {
        self.stopping = true;
        if !self.core.in_transaction() {
            self.pump(t);
        }
    }
}

/// A connection refused at once with one line (too many connections from one address).
pub struct Refused(pub &'static [u8]);

impl Protocol for Refused {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        // On an implicit-TLS port the line could only go out after the client's handshake,
        // and the connection would hold its `--max-connections` slot until then (up to the
        // 10 s handshake deadline): one address that never handshakes would hold them all.
        // It is closed at once instead; the client sees the connection fail and retries.
        if t.is_secure() {
            return t.abort_connection();
        }
        t.write(self.0);
        t.lose_connection();
    }

    fn data_received(&mut self, _t: &mut Transport<'_>, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MailConfig;
    use crate::config::fixture::{self, slot};
    use twistrs_core::testing::Harness;

    #[test]
    fn idle_sessions_are_told_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Rc::new(fixture::config(vec![fixture::example_domain(dir.path())]));
        let mut pop = Harness::new(crate::pop3_server::Pop3Protocol::new(
            cfg.clone(),
            "<b@h>".into(),
            slot(),
        ));
        pop.connect().take_output();
        pop.advance(cfg.timeout - Duration::from_secs(1));
        assert!(!pop.disconnecting(), "not before the timeout");
        pop.advance(Duration::from_secs(1));
        assert_eq!(pop.take_output(), b"-ERR Timeout, closing connection\r\n");
        assert!(pop.lost().is_some(), "closed after the reply was flushed");
        let store = Deliveries::new("h".into());
        let mut smtp = Harness::new(SmtpProtocol::new(
            cfg.clone(),
            store,
            "127.0.0.1".into(),
            slot(),
        ));
        smtp.connect().take_output();
        smtp.advance(cfg.timeout);
        let out = String::from_utf8(smtp.take_output()).unwrap();
        assert!(out.starts_with("421 h Timeout"), "{out}");
        assert!(smtp.lost().is_some());
    }

    /// `--timeout 18446744073709551615` is "never": the DATA deadline, which adds the
    /// transfer's allowance to it, comes after a century (the longest timer) and closes the
    /// session then, instead of overflowing.
    #[test]
    fn a_timeout_past_any_clock_is_a_century_not_an_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Rc::new(MailConfig {
            timeout: Duration::MAX,
            ..fixture::config(vec![fixture::example_domain(dir.path())])
        });
        let store = Deliveries::new("h".into());
        let mut h = Harness::new(SmtpProtocol::new(cfg, store, "127.0.0.1".into(), slot()));
        h.connect();
        h.feed(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\n");
        h.feed(&[b'x'; 2000]);
        h.advance(Duration::from_secs(365 * 86_400));
        assert!(!h.disconnecting(), "a year is not too long");
        h.advance(twistrs_core::timer::CENTURY);
        assert!(h.disconnecting(), "a century is");
    }

    #[test]
    fn input_piled_up_behind_a_delivery_pauses_reading() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Rc::new(MailConfig {
            max_message: 1 << 20,
            ..fixture::config(vec![fixture::example_domain(dir.path())])
        });
        let store = Deliveries::new("h".into());
        let mut h = Harness::new(SmtpProtocol::new(cfg, store, "127.0.0.1".into(), slot()));
        h.connect();
        h.feed(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nhi\r\n.\r\n");
        let before = String::from_utf8(h.take_output()).unwrap();
        assert!(
            before.ends_with("354 Continue\r\n"),
            "no 250 before the disk: {before}"
        );
        // Pipelined commands keep coming while the message is being written.
        h.feed(&b"NOOP\r\n".repeat(20_000));
        assert!(
            h.reading_paused(),
            "past 64 KiB of waiting input, reading stops"
        );
        // The worker finishes; the session hears it (the reactor would deliver this notify).
        h.handle().wait_for_threads(Duration::from_secs(10));
        h.notify(Box::new(Delivered(Ok(()))));
        assert!(!h.reading_paused(), "reading resumes once answered");
        let after = String::from_utf8(h.take_all_output()).unwrap();
        assert!(
            after.starts_with("250 Delivery in progress\r\n250 Nothing happens\r\n"),
            "{}",
            &after[..60]
        );
        assert_eq!(
            after.matches("250 Nothing happens").count(),
            20_000,
            "every pipelined command answered in order"
        );
        assert_eq!(
            crate::mailbox::scan(&dir.path().join("example.com/joe"))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn the_memory_budget_is_held_until_the_batch_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Rc::new(MailConfig {
            data_memory: crate::memory::DataMemory::new(1 << 20),
            ..fixture::config(vec![fixture::example_domain(dir.path())])
        });
        let store = Deliveries::new("h".into());
        let mut h = Harness::new(SmtpProtocol::new(
            cfg.clone(),
            store,
            "127.0.0.1".into(),
            slot(),
        ));
        h.connect();
        h.feed(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nhi\r\n");
        assert_eq!(cfg.data_memory.used(), 3, "DATA in progress");
        h.feed(b".\r\n");
        assert!(
            cfg.data_memory.used() > 3,
            "with its Received: header, on its way"
        );
        h.handle().wait_for_threads(Duration::from_secs(10));
        assert_eq!(
            cfg.data_memory.used(),
            0,
            "given back with the buffer, on the delivery thread"
        );
        h.notify(Box::new(Delivered(Ok(()))));
        assert!(
            String::from_utf8(h.take_output())
                .unwrap()
                .ends_with("250 Delivery in progress\r\n")
        );
    }

    #[test]
    fn starttls_upgrades_after_the_220_and_drops_what_followed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Rc::new(MailConfig {
            esmtp: true,
            tls: Some(fixture::tls_context(dir.path())),
            ..fixture::config(vec![fixture::example_domain(dir.path())])
        });
        let store = Deliveries::new("h".into());
        let mut h = Harness::new(SmtpProtocol::new(cfg, store, "127.0.0.1".into(), slot()));
        h.connect().take_output();
        h.feed(b"EHLO c\r\n");
        let ehlo = String::from_utf8(h.take_output()).unwrap();
        assert!(ehlo.ends_with("250 STARTTLS\r\n"), "{ehlo}");
        // One packet: the command and, behind it, what a man in the middle added.
        h.feed(b"STARTTLS\r\nRSET\r\nQUIT\r\n");
        assert_eq!(h.take_output(), b"220 2.0.0 Ready to start TLS\r\n");
        assert!(h.tls_started(), "upgraded once the 220 left");
        assert!(!h.disconnecting(), "the injected QUIT did not run");
        // Over TLS (the harness plays it in plaintext): the client's new EHLO.
        h.feed(b"EHLO c\r\n");
        let ehlo = String::from_utf8(h.take_output()).unwrap();
        assert!(
            ehlo.starts_with("250-h Hello") && !ehlo.contains("STARTTLS"),
            "{ehlo}"
        );
    }

    #[test]
    fn stls_upgrades_after_the_ok_and_drops_what_followed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Rc::new(MailConfig {
            tls: Some(fixture::tls_context(dir.path())),
            default: Some(0),
            ..fixture::config(vec![fixture::example_domain(dir.path())])
        });
        let mut h = Harness::new(crate::pop3_server::Pop3Protocol::new(
            cfg,
            "<b@h>".into(),
            slot(),
        ));
        h.connect().take_output();
        h.feed(b"STLS\r\nQUIT\r\n");
        assert_eq!(h.take_output(), b"+OK Begin TLS negotiation\r\n");
        assert!(h.tls_started());
        assert!(!h.disconnecting(), "the injected QUIT did not run");
        h.feed(b"CAPA\r\nUSER joe\r\n");
        let out = String::from_utf8(h.take_output()).unwrap();
        assert!(
            !out.contains("STLS") && out.ends_with(".\r\n+OK USER accepted, send PASS\r\n"),
            "still AUTHORIZATION: {out}"
        );
    }

    /// An EHLO session of `cfg` (ESMTP on).
    fn ehlo_session(dir: &std::path::Path) -> Harness<SmtpProtocol> {
        let cfg = Rc::new(MailConfig {
            esmtp: true,
            ..fixture::config(vec![fixture::example_domain(dir)])
        });
        let store = Deliveries::new("h".into());
        let mut h = Harness::new(SmtpProtocol::new(cfg, store, "127.0.0.1".into(), slot()));
        h.connect().take_output();
        h
    }

    /// A client that pipelines a burst of EHLOs (each reply many times its command) and
    /// reads nothing holds about [`crate::STEP_OUTPUT`] of output, not an answer per EHLO:
    /// the session takes commands only while the output has room.
    #[test]
    fn pipelined_ehlos_to_a_client_that_reads_nothing_hold_little() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = ehlo_session(dir.path());
        h.feed(b"EHLO c\r\n");
        let one = h.take_output().len();
        h.feed(&b"EHLO c\r\n".repeat(20_000));
        let held = h.output().len();
        assert!(
            held < 2 * crate::STEP_OUTPUT,
            "{held} octets held for the client (all: {})",
            20_000 * one
        );
        let out = h.take_all_output();
        assert_eq!(
            out.len(),
            20_000 * one,
            "all answered once the client reads"
        );
        // The session, idle again, keeps no step's worth of scratch for its life.
        assert!(h.proto.out.capacity() <= 4096, "{}", h.proto.out.capacity());
    }

    /// A client that sends its commands and half-closes gets the answers to all of them,
    /// however much output they make, QUIT's included: the output filling up is not the end.
    #[test]
    fn a_half_closed_client_gets_every_answer_however_much_they_fill_the_output() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = ehlo_session(dir.path());
        let mut input = b"EHLO c\r\n".repeat(5000);
        input.extend_from_slice(b"NOOP\r\nQUIT\r\n");
        h.feed(&input).eof();
        let out = h.take_all_output();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out.matches("250-h Hello").count(), 5000, "every EHLO");
        assert!(
            out.ends_with("250 2.0.0 Nothing happens\r\n221 2.0.0 See you later\r\n"),
            "{}",
            &out[out.len().saturating_sub(80)..]
        );
        assert!(h.lost().is_some(), "closed at the end");
    }
}
