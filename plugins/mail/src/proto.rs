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

use twistrs_core::{ConnId, Handle, Protocol, Transport};

use crate::config::MailConfig;
use crate::maildir::{Job, deliver_batch};
use crate::pop3::{self, Pop3};
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
    let (ids, jobs, host): (Vec<ConnId>, Vec<Job>, String) = {
        let mut d = this.borrow_mut();
        if d.queue.is_empty() {
            return;
        }
        d.busy = true;
        let (ids, jobs) = std::mem::take(&mut d.queue).into_iter().unzip();
        (ids, jobs, d.host.clone())
    };
    let done = h.defer_to_thread(move || Ok(deliver_batch(&jobs, &host)));
    let (this_ok, h_ok, ids_ok) = (this.clone(), h.clone(), ids.clone());
    let (this_err, h_err) = (this.clone(), h.clone());
    done.add_callbacks(
        move |results| {
            for (id, r) in ids_ok.iter().zip(results) {
                h_ok.notify(*id, Box::new(Delivered(r)));
            }
            this_ok.borrow_mut().busy = false;
            start(&this_ok, &h_ok);
            Ok(Vec::new())
        },
        move |f| {
            for id in &ids {
                h_err.notify(*id, Box::new(Delivered(Err(f.to_string()))));
            }
            this_err.borrow_mut().busy = false;
            start(&this_err, &h_err);
            Ok(Vec::new())
        },
    );
}

/// Unprocessed input a session may hold while it waits (for the disk, or a login delay).
const PENDING_INPUT_MAX: usize = 64 * 1024;

/// An SMTP connection.
pub struct SmtpProtocol {
    core: Smtp,
    cfg: Rc<MailConfig>,
    store: Rc<RefCell<Deliveries>>,
    out: Vec<u8>,
    stopping: bool,
}

impl SmtpProtocol {
    pub fn new(cfg: Rc<MailConfig>, store: Rc<RefCell<Deliveries>>, peer: String) -> Self {
        SmtpProtocol {
            core: Smtp::new(cfg.clone(), peer),
            cfg,
            store,
            out: Vec::new(),
            stopping: false,
        }
    }

    fn flush(&mut self, t: &mut Transport<'_>) {
        if !self.out.is_empty() {
            t.write(&self.out);
            self.out.clear();
        }
    }

    /// Runs the session as far as it goes.
    fn pump(&mut self, t: &mut Transport<'_>) {
        match self.core.step(&mut self.out) {
            // The session waits in `delivering` until `notified` brings the result.
            Some(smtp::Action::Deliver(job)) => submit(&self.store, t.handle(), t.id(), job),
            Some(smtp::Action::Close) => {
                self.flush(t);
                t.lose_connection();
                return;
            }
            None => {}
        }
        if self.stopping && !self.core.in_transaction() {
            self.core.shutdown(&mut self.out);
            self.flush(t);
            t.lose_connection();
            return;
        }
        self.flush(t);
    }
}

impl Protocol for SmtpProtocol {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.set_timeout(Some(self.cfg.timeout));
        self.core.greeting(&mut self.out);
        self.flush(t);
    }

    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        self.core.feed(data);
        if !self.core.delivering() {
            self.pump(t);
        } else if self.core.pending_input() > PENDING_INPUT_MAX {
            // Pipelined input piles up while the disk works: stop reading until it is done.
            t.pause_producing();
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

    fn timeout_connection(&mut self, t: &mut Transport<'_>) {
        if self.core.delivering() {
            // The disk is slow, not the client: wait for the delivery.
            t.reset_timeout();
            return;
        }
        self.core.timeout(&mut self.out);
        self.flush(t);
        t.lose_connection();
    }

    /// Graceful stop: a message in DATA or being written is finished and answered first.
    fn stop_requested(&mut self, t: &mut Transport<'_>) {
        self.stopping = true;
        if !self.core.in_transaction() {
            self.pump(t);
        }
    }
}

/// Timer key: the delayed reply to a failed login is due.
const DELAY_TIMER: u64 = 1;

/// A POP3 connection.
pub struct Pop3Protocol {
    core: Pop3,
    cfg: Rc<MailConfig>,
    out: Vec<u8>,
    delayed: Option<Vec<u8>>,
}

impl Pop3Protocol {
    pub fn new(cfg: Rc<MailConfig>, banner: String) -> Self {
        Pop3Protocol {
            core: Pop3::new(cfg.clone(), banner),
            cfg,
            out: Vec::new(),
            delayed: None,
        }
    }

    fn pump(&mut self, t: &mut Transport<'_>) {
        if self.delayed.is_some() {
            return;
        }
        match self.core.step(&mut self.out) {
            Some(pop3::Action::Delay(d, reply)) => {
                self.delayed = Some(reply);
                t.pause_producing();
                t.call_later(d, DELAY_TIMER);
            }
            Some(pop3::Action::Close) => {
                t.write(&self.out);
                self.out.clear();
                t.lose_connection();
                return;
            }
            None => {}
        }
        // Each reply in one write: no waiting on Nagle and delayed ACKs (TCP_NODELAY is on too).
        if !self.out.is_empty() {
            t.write(&self.out);
            self.out.clear();
        }
    }
}

impl Protocol for Pop3Protocol {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.set_timeout(Some(self.cfg.timeout));
        self.core.greeting(&mut self.out);
        t.write(&self.out);
        self.out.clear();
    }

    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        self.core.feed(data);
        self.pump(t);
    }

    fn timer_fired(&mut self, t: &mut Transport<'_>, key: u64) {
        if key == DELAY_TIMER
            && let Some(reply) = self.delayed.take()
        {
            t.write(&reply);
            t.resume_producing();
            self.pump(t);
        }
    }

    fn timeout_connection(&mut self, t: &mut Transport<'_>) {
        t.write(b"-ERR Timeout, closing connection\r\n");
        t.lose_connection();
    }

    fn stop_requested(&mut self, t: &mut Transport<'_>) {
        t.write(b"-ERR Server shutting down\r\n");
        t.lose_connection();
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
    use crate::config::{MailConfig, fixture};
    use twistrs_core::testing::Harness;

    #[test]
    fn idle_sessions_are_told_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Rc::new(fixture::config(vec![fixture::example_domain(dir.path())]));
        let mut pop = Harness::new(Pop3Protocol::new(cfg.clone(), "<b@h>".into()));
        pop.connect().take_output();
        pop.advance(cfg.timeout - Duration::from_secs(1));
        assert!(!pop.disconnecting(), "not before the timeout");
        pop.advance(Duration::from_secs(1));
        assert_eq!(pop.take_output(), b"-ERR Timeout, closing connection\r\n");
        assert!(pop.lost().is_some(), "closed after the reply was flushed");
        let store = Deliveries::new("h".into());
        let mut smtp = Harness::new(SmtpProtocol::new(cfg.clone(), store, "127.0.0.1".into()));
        smtp.connect().take_output();
        smtp.advance(cfg.timeout);
        let out = String::from_utf8(smtp.take_output()).unwrap();
        assert!(out.starts_with("421 h Timeout"), "{out}");
        assert!(smtp.lost().is_some());
    }

    #[test]
    fn input_piled_up_behind_a_delivery_pauses_reading() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Rc::new(MailConfig {
            max_message: 1 << 20,
            ..fixture::config(vec![fixture::example_domain(dir.path())])
        });
        let store = Deliveries::new("h".into());
        let mut h = Harness::new(SmtpProtocol::new(cfg, store, "127.0.0.1".into()));
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
        let after = String::from_utf8(h.take_output()).unwrap();
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
            crate::maildir::read_mailbox(&dir.path().join("example.com/joe"))
                .unwrap()
                .len(),
            1
        );
    }
}
