//! The sans-IO SMTP session (RFC 5321): bytes in, replies and deliveries out.
//!
//! Command lines are framed by the core's `LineReceiver` and parsed by the `smtp-proto` crate;
//! this module keeps the session state and the limits (line length, message size, recipients,
//! errors in a row). DATA switches the receiver to raw mode and hands the bytes to the
//! [`DataReader`] (which alone decides where the message ends). When a message is complete,
//! `step` returns [`Action::Deliver`] and waits: the caller writes it to disk and calls
//! `delivered`, and only then is 250 sent, so commands pipelined behind DATA are answered in
//! order and nothing is acknowledged before it is durable.
//!
//! STARTTLS (RFC 3207) returns [`Action::StartTls`] after its 220: the session throws away
//! whatever the client sent behind the command (plaintext that an attacker in the middle could
//! have injected) and starts again as after the greeting, so the client's new EHLO is the
//! first thing it hears over TLS.

use std::borrow::Cow;
use std::rc::Rc;

use base64::Engine;
use smtp_proto::{
    AUTH_LOGIN, AUTH_PLAIN, Error as ParseError, MAIL_BODY_BINARYMIME, MAIL_BY_NOTIFY,
    MAIL_BY_RETURN, MAIL_BY_TRACE, MAIL_CONPERM, MAIL_REQUIRETLS, MAIL_RET_FULL, MAIL_RET_HDRS,
    MAIL_SMTPUTF8, MailFrom, RCPT_CONNEG, RCPT_NOTIFY_DELAY, RCPT_NOTIFY_FAILURE,
    RCPT_NOTIFY_NEVER, RCPT_NOTIFY_SUCCESS, RCPT_RRVS_CONTINUE, RCPT_RRVS_REJECT, RcptTo, Request,
};
use twistrs_core::line::{Line, LineReceiver};

use crate::config::{MailConfig, Refusal, Tls};
use crate::data::{self, DataReader, Outcome};
use crate::maildir::{Job, Receipt};
use crate::memory::Reservation;

/// A command line is at most 1000 octets with its CRLF (RFC 5321 4.5.3.1.4's 512, with
/// room for extensions' parameters); message lines have their own limit, [`data::MAX_TEXT`].
pub const MAX_LINE: usize = 1000;
/// Failed AUTHs before the session is closed (421), as POP3 closes after three failed logins;
/// five, as a client with a wrong password tries each mechanism offered (smtplib: PLAIN,
/// then LOGIN) before it gives up, and may be given a second password.
const MAX_AUTH_FAILURES: u32 = 5;

/// What the caller must do.
#[derive(Debug)]
pub enum Action {
    /// Write this message to its Maildirs, then call `delivered`.
    Deliver(Job),
    /// Close the connection once the replies are flushed.
    Close,
    /// Upgrade the connection to TLS once the replies are flushed (`Transport::start_tls`).
    StartTls,
    /// Hold the replies so far (a failed AUTH's 535 last) for this long, then write them and
    /// step again; nothing more is read meanwhile.
    Delay(std::time::Duration),
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Command,
    Data,
    AuthPlain,
    AuthLoginUser,
    AuthLoginPass(String),
    Delivering,
    Closed,
}

/// One SMTP session: the line framing, and the session state it feeds.
pub struct Smtp {
    lines: LineReceiver,
    /// The current command line with its LF, as smtp-proto parses it.
    scratch: Vec<u8>,
    s: Session,
}

/// Everything but the framing.
struct Session {
    cfg: Rc<MailConfig>,
    peer: String,
    state: State,
    helo: Option<String>,
    extended: bool,
    from: Option<String>,
    rcpts: Vec<(std::path::PathBuf, String)>,
    rcpt_addrs: Vec<String>,
    data: Option<DataReader>,
    errors: u32,
    /// Failed AUTHs in this session, whatever came between them (not reset by STARTTLS).
    auth_failures: u32,
    authed: Option<String>,
    tls: Tls,
    /// The transaction's MAIL said SMTPUTF8 (RFC 6531): its `Received:` says UTF8SMTP.
    smtputf8: bool,
}

/// A message's queue id, in its `Received:` header and its log line: the second and a
/// counter in hex, unique for this host over restarts.
fn queue_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{secs:X}{:X}{n:04X}", std::process::id())
}

/// Text that goes into headers we write (`Received:`) and into the log: printable, no
/// control characters, no DEL (RFC 5321 4.1.2 has no room for them in a domain or a path).
fn clean_text(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(char::is_control)
}

/// An address as a path's text (RFC 5321 4.1.2) for the headers we write: smtp-proto takes
/// the quotes off a quoted local part (`"a b"@c` is `a b@c`), so a local part that is not a
/// dot-atom is quoted again.
fn path_text(addr: &str) -> String {
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return addr.to_string();
    };
    let atext =
        |c: char| c.is_ascii_alphanumeric() || !c.is_ascii() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = local
        .split('.')
        .all(|w| !w.is_empty() && w.chars().all(atext));
    if dot_atom {
        addr.to_string()
    } else {
        let q = local.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{q}\"@{domain}")
    }
}

/// The first MAIL parameter of an extension this server does not offer, which RFC 5321
/// 4.1.1.11 answers with 555 (smtp-proto parses them all): only SIZE, BODY=7BIT or 8BITMIME,
/// SMTPUTF8 after EHLO, and AUTH= where AUTH is offered, are taken. Accepting DSN's RET and
/// ENVID, or BODY=BINARYMIME, without doing what they ask would be a silent lie.
fn unoffered_mail_param(
    f: &MailFrom<Cow<'_, str>>,
    auth: bool,
    extended: bool,
) -> Option<&'static str> {
    let by = MAIL_BY_NOTIFY | MAIL_BY_RETURN | MAIL_BY_TRACE;
    [
        (f.flags & MAIL_BODY_BINARYMIME != 0, "BODY=BINARYMIME"),
        (f.flags & MAIL_SMTPUTF8 != 0 && !extended, "SMTPUTF8"),
        (f.flags & (MAIL_RET_FULL | MAIL_RET_HDRS) != 0, "RET"),
        (f.env_id.is_some(), "ENVID"),
        (f.flags & MAIL_REQUIRETLS != 0, "REQUIRETLS"),
        (f.flags & MAIL_CONPERM != 0, "CONPERM"),
        (f.by != 0 || f.flags & by != 0, "BY"),
        (f.trans_id.is_some(), "TRANSID"),
        (f.solicit.is_some(), "SOLICIT"),
        (f.mtrk.is_some(), "MTRK"),
        (f.hold_for != 0, "HOLDFOR"),
        (f.hold_until != 0, "HOLDUNTIL"),
        (f.mt_priority != 0, "MT-PRIORITY"),
        (f.auth.is_some() && !auth, "AUTH"),
    ]
    .into_iter()
    .find_map(|(given, name)| given.then_some(name))
}

/// The first RCPT parameter of an extension this server does not offer (DSN's NOTIFY and
/// ORCPT, RRVS, CONNEG): none is.
fn unoffered_rcpt_param(t: &RcptTo<Cow<'_, str>>) -> Option<&'static str> {
    let notify = RCPT_NOTIFY_SUCCESS | RCPT_NOTIFY_FAILURE | RCPT_NOTIFY_DELAY | RCPT_NOTIFY_NEVER;
    [
        (t.flags & notify != 0, "NOTIFY"),
        (t.orcpt.is_some(), "ORCPT"),
        (
            t.rrvs != 0 || t.flags & (RCPT_RRVS_REJECT | RCPT_RRVS_CONTINUE) != 0,
            "RRVS",
        ),
        (t.flags & RCPT_CONNEG != 0, "CONNEG"),
    ]
    .into_iter()
    .find_map(|(given, name)| given.then_some(name))
}

/// The refusal of an address that is not ASCII nor UTF-8.
const NOT_UTF8: &str = "Non-ASCII address not permitted: not UTF-8";

/// A MAIL or RCPT line whose octets beyond ASCII are not UTF-8. RFC 6531 allows UTF-8 in
/// addresses after SMTPUTF8; one sent without it is taken all the same, as postfix takes it
/// (pre-SMTPUTF8 mail flows carry UTF-8 local parts, and postfix relays such mail on without
/// the parameter). Octets that are not UTF-8 at all (Latin-1, garbage) name no one: smtp-proto
/// would put U+FFFD in their place, and that would reach the log and `Return-Path:`.
fn not_utf8(line: &[u8]) -> bool {
    !line.is_ascii() && std::str::from_utf8(line).is_err()
}

/// True if the RCPT line's path is `<postmaster>`, in any case.
fn names_postmaster(line: &[u8]) -> bool {
    line.iter().position(|&b| b == b'<').is_some_and(|i| {
        line[i..]
            .get(..12)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"<postmaster>"))
    })
}

/// A HELO/EHLO argument: a domain or an address literal, printable ASCII only.
fn clean_helo(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

impl Smtp {
    pub fn new(cfg: Rc<MailConfig>, peer: String) -> Self {
        Smtp {
            // The limit counts the LF; a CR before it is part of the line here.
            lines: LineReceiver::new(b"\n", MAX_LINE - 1),
            scratch: Vec::with_capacity(128),
            s: Session {
                peer,
                state: State::Command,
                helo: None,
                extended: false,
                from: None,
                rcpts: Vec::new(),
                rcpt_addrs: Vec::new(),
                data: None,
                errors: 0,
                auth_failures: 0,
                authed: None,
                tls: Tls::of(&cfg, false),
                smtputf8: false,
                cfg,
            },
        }
    }

    /// What the connection has of TLS (a connection accepted on a TLS endpoint is `Active`).
    pub fn set_tls(&mut self, tls: Tls) {
        self.s.tls = tls;
    }

    /// The greeting, sent once the connection is up.
    pub fn greeting(&self, out: &mut Vec<u8>) {
        let esmtp = if self.s.cfg.esmtp { " ESMTP" } else { "" };
        let line = format!(
            "220 {} NO UCE NO UBE NO RELAY PROBES{esmtp}\r\n",
            self.s.cfg.hostname
        );
        out.extend_from_slice(line.as_bytes());
    }

    pub fn feed(&mut self, data: &[u8]) {
        if self.s.state != State::Closed {
            self.lines.feed(data);
        }
    }

    /// Input received and not yet processed.
    pub fn pending_input(&self) -> usize {
        self.lines.buffered()
    }

    /// True while a delivery is being written.
    pub fn delivering(&self) -> bool {
        self.s.state == State::Delivering
    }

    /// True between DATA and its final dot: a stop should let it finish.
    pub fn in_transaction(&self) -> bool {
        matches!(self.s.state, State::Data | State::Delivering)
    }

    /// Octets of message data received so far, while in DATA.
    pub fn data_size(&self) -> Option<usize> {
        self.s.data.as_ref().map(DataReader::size)
    }

    /// True when part of a command line is buffered: its end has not arrived yet.
    pub fn partial_command(&self) -> bool {
        !matches!(
            self.s.state,
            State::Data | State::Delivering | State::Closed
        ) && self.lines.buffered() > 0
    }

    /// True once the session is over (QUIT, too many errors, a timeout).
    pub fn closed(&self) -> bool {
        self.s.state == State::Closed
    }

    /// Processes input until an action is needed, more input is, or this call has written
    /// [`STEP_OUTPUT`](crate::STEP_OUTPUT) octets of replies (step again when they are sent).
    pub fn step(&mut self, out: &mut Vec<u8>) -> Option<Action> {
        let start = out.len();
        loop {
            if out.len() - start >= crate::STEP_OUTPUT {
                return None;
            }
            match self.s.state {
                State::Delivering | State::Closed => return None,
                State::Data => {
                    let reader = self.s.data.as_mut()?;
                    let (used, end) = reader.feed(self.lines.raw());
                    self.lines.consume(used);
                    let outcome = end?;
                    self.lines.set_line_mode();
                    if let Some(a) = self.s.end_of_data(outcome, out) {
                        return Some(a);
                    }
                }
                _ => {
                    let line = match self.lines.next_line()? {
                        Line::Complete(l) => {
                            self.scratch.clear();
                            self.scratch.extend_from_slice(l);
                            self.scratch.push(b'\n');
                            Ok(&self.scratch[..])
                        }
                        Line::TooLong => Err(()),
                    };
                    let action = self.s.line(line, out);
                    if self.s.state == State::Data {
                        self.lines.set_raw_mode();
                    }
                    if let Some(Action::StartTls) = action {
                        self.discard_before_tls();
                    }
                    if action.is_some() {
                        return action;
                    }
                }
            }
        }
    }

    /// RFC 3207 4.2: what followed STARTTLS in plaintext is thrown away, never executed.
    fn discard_before_tls(&mut self) {
        let n = self.lines.buffered();
        if n > 0 {
            log::info!(target: "twistrs.mail.smtp",
                "{}: {n} bytes sent behind STARTTLS, before the handshake, thrown away", self.s.peer);
        }
        self.lines.clear();
    }

    /// The delivery of the last message finished: acknowledge it or not.
    pub fn delivered(&mut self, result: Result<(), String>, out: &mut Vec<u8>) {
        self.s.delivered(result, out);
    }

    /// The idle timeout: say so and close.
    pub fn timeout(&mut self, out: &mut Vec<u8>) {
        let text = format!("{} Timeout, closing connection", self.s.cfg.hostname);
        self.s.reply(out, 421, "4.4.2", &text);
        self.s.close();
    }

    /// A command line or a DATA transfer took longer than allowed: say so and close.
    pub fn deadline(&mut self, out: &mut Vec<u8>) {
        log::info!(target: "twistrs.mail.smtp", "{}: command or DATA too slow, closing", self.s.peer);
        let text = format!("{} Timeout, closing connection", self.s.cfg.hostname);
        self.s.reply(out, 421, "4.4.2", &text);
        self.s.close();
    }

    /// A graceful stop between transactions.
    pub fn shutdown(&mut self, out: &mut Vec<u8>) {
        let text = format!("{} Service shutting down", self.s.cfg.hostname);
        self.s.reply(out, 421, "4.3.2", &text);
        self.s.close();
    }
}

impl Session {
    /// Writes a reply, with its enhanced status code when the client asked for ESMTP.
    fn reply(&self, out: &mut Vec<u8>, code: u16, enh: &str, text: &str) {
        let line = if self.extended && !enh.is_empty() {
            format!("{code} {enh} {text}\r\n")
        } else {
            format!("{code} {text}\r\n")
        };
        out.extend_from_slice(line.as_bytes());
    }

    fn reset(&mut self) {
        self.from = None;
        self.smtputf8 = false;
        self.rcpts.clear();
        self.rcpt_addrs.clear();
        self.data = None;
    }

    /// The session is over: a message half received is dropped now, and its octets go back
    /// to the budget without waiting for the connection to be torn down.
    fn close(&mut self) {
        self.reset();
        self.state = State::Closed;
    }

    /// STARTTLS: answer 220 and forget everything learnt in plaintext (RFC 3207 4.2: the HELO,
    /// the authentication, the transaction), as if the greeting had just been sent.
    fn start_tls(&mut self, out: &mut Vec<u8>) -> Option<Action> {
        match self.tls {
            Tls::Active => return self.bad(out, 503, "5.5.1", "TLS already active"),
            Tls::Unavailable => return self.bad(out, 454, "4.7.0", "TLS not available"),
            Tls::Offered => {}
        }
        if self.from.is_some() {
            return self.bad(out, 503, "5.5.1", "MAIL transaction in progress");
        }
        self.reply(out, 220, "2.0.0", "Ready to start TLS");
        self.reset();
        self.helo = None;
        self.extended = false;
        self.authed = None;
        self.tls = Tls::Active;
        Some(Action::StartTls)
    }

    /// One line (with its LF) in a command or AUTH state, or `Err` for an over-long one.
    fn line(&mut self, line: Result<&[u8], ()>, out: &mut Vec<u8>) -> Option<Action> {
        match self.state {
            State::AuthPlain | State::AuthLoginUser | State::AuthLoginPass(_) => {
                self.auth_line(line, out)
            }
            _ => match line {
                Err(()) => self.bad(out, 500, "5.5.2", "Line too long"),
                Ok(l) => self.command(l, out),
            },
        }
    }

    /// A bad command: after `max_errors` in a row, give up on the client.
    fn bad(&mut self, out: &mut Vec<u8>, code: u16, enh: &str, text: &str) -> Option<Action> {
        self.reply(out, code, enh, text);
        self.errors += 1;
        log::info!(target: "twistrs.mail.smtp", "{}: {code} {text}", self.peer);
        if self.errors >= self.cfg.max_errors {
            self.reply(
                out,
                421,
                "4.7.0",
                &format!("{} Too many errors, closing", self.cfg.hostname),
            );
            self.state = State::Closed;
            return Some(Action::Close);
        }
        None
    }

    /// One command; a command that is not refused ends a run of errors.
    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Action> {
        let before = self.errors;
        let action = self.command_inner(line, out);
        if self.errors == before {
            self.errors = 0;
        }
        action
    }

    fn command_inner(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Action> {
        let parsed = Request::parse(&mut line.iter());
        let req = match parsed {
            Ok(r) => r,
            Err(ParseError::UnknownCommand) => {
                return self.bad(out, 500, "5.5.1", "Command not implemented");
            }
            Err(ParseError::SyntaxError { syntax }) => {
                return self.bad(out, 501, "5.5.4", &format!("Syntax: {syntax}"));
            }
            Err(ParseError::InvalidSenderAddress) => {
                return self.bad(out, 501, "5.1.7", "Invalid sender address");
            }
            Err(ParseError::InvalidRecipientAddress) => {
                return self.bad(out, 501, "5.1.3", "Invalid recipient address");
            }
            // RFC 5321 4.1.1.11, as postfix: a parameter not recognised is 555.
            Err(ParseError::UnsupportedParameter { param }) => {
                let param: String = param.chars().filter(char::is_ascii_graphic).collect();
                return self.bad(out, 555, "5.5.4", &format!("Unsupported option: {param}"));
            }
            Err(ParseError::InvalidParameter { param }) => {
                return self.bad(out, 501, "5.5.4", &format!("Bad {param} parameter syntax"));
            }
            Err(_) => return self.bad(out, 501, "5.5.4", "Invalid parameters"),
        };
        let host = self.cfg.hostname.clone();
        match req {
            Request::Helo { host: h } | Request::Ehlo { host: h } if !clean_helo(&h) => {
                return self.bad(out, 501, "5.5.2", "Invalid domain name");
            }
            Request::Helo { host: h } => {
                self.reset();
                self.helo = Some(h.to_string());
                self.extended = false;
                let text = format!("{host} Hello {}, nice to meet you", self.peer);
                self.reply(out, 250, "", &text);
            }
            Request::Ehlo { host: h } => {
                if !self.cfg.esmtp {
                    return self.bad(out, 500, "", "Command not implemented");
                }
                self.reset();
                self.helo = Some(h.to_string());
                self.extended = true;
                let mut lines = vec![
                    format!("{host} Hello {}, nice to meet you", self.peer),
                    "PIPELINING".to_string(),
                    "8BITMIME".to_string(),
                    // RFC 6531: UTF-8 addresses; the message itself passes as it came.
                    "SMTPUTF8".to_string(),
                    // RFC 1870: a bare SIZE where there is no fixed limit, as postfix says it.
                    match self.cfg.max_message {
                        usize::MAX => "SIZE".to_string(),
                        n => format!("SIZE {n}"),
                    },
                    "ENHANCEDSTATUSCODES".to_string(),
                ];
                if self.cfg.auth.is_some() && self.tls.allows_auth(&self.cfg) {
                    lines.push("AUTH PLAIN LOGIN".to_string());
                }
                if self.tls == Tls::Offered {
                    lines.push("STARTTLS".to_string());
                }
                for (i, l) in lines.iter().enumerate() {
                    let sep = if i + 1 == lines.len() { ' ' } else { '-' };
                    out.extend_from_slice(format!("250{sep}{l}\r\n").as_bytes());
                }
            }
            Request::Mail { from } => {
                if self.helo.is_none() {
                    return self.bad(out, 503, "5.5.1", "Send HELO first");
                }
                if self.from.is_some() {
                    return self.bad(out, 503, "5.5.1", "Nested MAIL command");
                }
                let auth =
                    self.extended && self.cfg.auth.is_some() && self.tls.allows_auth(&self.cfg);
                if let Some(p) = unoffered_mail_param(&from, auth, self.extended) {
                    return self.bad(out, 555, "5.5.4", &format!("Unsupported option: {p}"));
                }
                // RFC 6531 3.5: 550 and X.6.7 for a sender refused for its non-ASCII.
                if not_utf8(line) {
                    return self.bad(out, 550, "5.6.7", NOT_UTF8);
                }
                if !from.address.is_empty() && !clean_text(&from.address) {
                    return self.bad(out, 501, "5.1.7", "Invalid sender address");
                }
                if from.size > self.cfg.max_message {
                    crate::metrics::with(|m| m.rejected_too_big.inc());
                    self.reply(
                        out,
                        552,
                        "5.3.4",
                        "Message size exceeds fixed maximum message size",
                    );
                    return None;
                }
                // A declared SIZE (RFC 1870) is checked against the data memory budget here,
                // before the client spends the transfer on a message DATA would refuse: past
                // the whole budget it never fits (permanent), past what is free now a retry
                // may (452, RFC 1870's answer for storage that is short for now).
                let mem = &self.cfg.data_memory;
                if from.size > mem.limit() {
                    crate::metrics::with(|m| m.rejected_too_big.inc());
                    log::warn!(target: "twistrs.mail.smtp",
                        "{}: 552 MAIL with SIZE={} refused: larger than the whole --max-data-memory {}",
                        self.peer, from.size, mem.limit());
                    self.reply(
                        out,
                        552,
                        "5.3.4",
                        "Message size exceeds the memory this server gives a message",
                    );
                    return None;
                }
                if from.size > mem.limit().saturating_sub(mem.used()) {
                    crate::metrics::with(|m| m.rejected_no_storage.inc());
                    log::warn!(target: "twistrs.mail.smtp",
                        "{}: 452 MAIL with SIZE={} refused: --max-data-memory {} is in use ({} held)",
                        self.peer, from.size, mem.limit(), mem.used());
                    self.reply(out, 452, "4.3.1", "Insufficient system storage");
                    return None;
                }
                self.from = Some(from.address.to_string());
                self.smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
                self.reply(out, 250, "2.1.0", "Sender address accepted");
            }
            Request::Rcpt { to } => {
                if self.from.is_none() {
                    return self.bad(out, 503, "5.5.1", "Must have sender before recipient");
                }
                if let Some(p) = unoffered_rcpt_param(&to) {
                    return self.bad(out, 555, "5.5.4", &format!("Unsupported option: {p}"));
                }
                // RFC 6531 3.5: 553 and X.6.7 for a recipient refused for its non-ASCII.
                if not_utf8(line) {
                    crate::metrics::with(|m| m.recipients_refused.inc());
                    return self.bad(out, 553, "5.6.7", NOT_UTF8);
                }
                // RFC 5321 4.5.1: `RCPT TO:<Postmaster>`, no domain, MUST be supported; it
                // is ours (the default domain's, else the first's), and smtp-proto hands it
                // over as an empty address, as it does `<>`.
                let postmaster = (to.address.is_empty() && names_postmaster(line))
                    .then(|| self.cfg.postmaster())
                    .flatten();
                let to: &str = postmaster.as_deref().unwrap_or(&to.address);
                if !clean_text(to) {
                    return self.bad(out, 501, "5.1.3", "Invalid recipient address");
                }
                if self.rcpt_addrs.len() >= self.cfg.max_recipients {
                    self.reply(out, 452, "4.5.3", "Too many recipients");
                    return None;
                }
                match self.cfg.resolve(to) {
                    Ok(targets) => {
                        for t in targets {
                            if !self.rcpts.contains(&t) {
                                self.rcpts.push(t);
                            }
                        }
                        self.rcpt_addrs.push(to.to_string());
                        self.reply(out, 250, "2.1.5", "Recipient address accepted");
                    }
                    Err(r) => {
                        let enh = match r {
                            Refusal::Foreign => "5.7.1",
                            Refusal::NoUser => "5.1.1",
                            Refusal::Syntax => "5.1.3",
                        };
                        log::info!(target: "twistrs.mail.smtp",
                            "{}: refused recipient <{}> ({r:?})", self.peer, to);
                        crate::metrics::with(|m| m.recipients_refused.inc());
                        self.reply(out, 550, enh, "Cannot receive for specified address");
                    }
                }
            }
            Request::Data => {
                if self.rcpts.is_empty() {
                    return self.bad(out, 503, "5.5.1", "Must have valid receiver and originator");
                }
                self.state = State::Data;
                let after_crlf = line.ends_with(b"\r\n");
                let memory = Reservation::new(&self.cfg.data_memory);
                self.data =
                    Some(DataReader::new(self.cfg.max_message, after_crlf).with_memory(memory));
                self.reply(out, 354, "", "Continue");
            }
            Request::Rset => {
                self.reset();
                self.reply(out, 250, "2.0.0", "I remember nothing.");
            }
            Request::Noop { .. } => self.reply(out, 250, "2.0.0", "Nothing happens"),
            Request::Vrfy { .. } => self.reply(
                out,
                252,
                "2.5.0",
                "Cannot VRFY user, but will accept message and attempt delivery",
            ),
            Request::StartTls => return self.start_tls(out),
            Request::Quit => {
                self.reply(out, 221, "2.0.0", "See you later");
                self.state = State::Closed;
                return Some(Action::Close);
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => {
                if !self.extended || self.cfg.auth.is_none() {
                    return self.bad(out, 500, "5.5.1", "Command not implemented");
                }
                if !self.tls.allows_auth(&self.cfg) {
                    // RFC 4954 6; AUTH is not advertised on such a connection either.
                    return self.bad(
                        out,
                        538,
                        "5.7.11",
                        "Encryption required for requested authentication mechanism",
                    );
                }
                if self.authed.is_some() {
                    return self.bad(out, 503, "5.5.1", "Already authenticated");
                }
                // RFC 4954 4: "MUST be rejected with a 503 reply", as postfix does.
                if self.from.is_some() {
                    return self.bad(out, 503, "5.5.1", "MAIL transaction in progress");
                }
                let ir = initial_response.to_string();
                if mechanism == AUTH_PLAIN {
                    if ir.is_empty() {
                        self.state = State::AuthPlain;
                        out.extend_from_slice(b"334 \r\n");
                    } else {
                        return self.check_plain(&ir, out);
                    }
                } else if mechanism == AUTH_LOGIN {
                    // An initial response (RFC 4954 4, `curl --sasl-ir`) is the user name,
                    // as dovecot and Cyrus take it; `=` is an empty one, asked for again.
                    if ir.is_empty() || ir == "=" {
                        self.state = State::AuthLoginUser;
                        out.extend_from_slice(b"334 VXNlcm5hbWU6\r\n");
                    } else {
                        return self.login_user(ir.as_bytes(), out);
                    }
                } else {
                    self.reply(out, 504, "5.5.4", "Unrecognized authentication type");
                }
            }
            _ => return self.bad(out, 500, "5.5.1", "Command not implemented"),
        }
        None
    }

    fn b64(s: &[u8]) -> Option<Vec<u8>> {
        let t = std::str::from_utf8(s).ok()?.trim();
        base64::engine::general_purpose::STANDARD.decode(t).ok()
    }

    fn check_plain(&mut self, b64: &str, out: &mut Vec<u8>) -> Option<Action> {
        let creds = Self::b64(b64.as_bytes()).and_then(|d| {
            let mut parts = d.split(|b| *b == 0);
            let authz = parts.next()?;
            let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
            let pass = String::from_utf8(parts.next()?.to_vec()).ok()?;
            // RFC 4616 5: acting as another identity must be refused where no one may; here
            // no one may (dovecot: only its master users).
            if !authz.is_empty() && authz != user.as_bytes() {
                return None;
            }
            Some((user, pass))
        });
        self.finish_auth(creds, out)
    }

    /// Answers an AUTH's credentials: 235, or 535 after `fail_delay` ([`Action::Delay`]),
    /// and the close at the `MAX_AUTH_FAILURES`th failure.
    fn finish_auth(
        &mut self,
        creds: Option<(String, String)>,
        out: &mut Vec<u8>,
    ) -> Option<Action> {
        self.state = State::Command;
        let ok = creds.as_ref().is_some_and(|(u, p)| {
            self.cfg
                .auth
                .as_ref()
                .and_then(|m| m.get(u))
                .is_some_and(|want| want == p)
        });
        if ok {
            self.authed = creds.map(|(u, _)| u);
            self.reply(out, 235, "2.7.0", "Authentication successful");
            return None;
        }
        self.auth_failures += 1;
        log::info!(target: "twistrs.mail.smtp", "{}: authentication failed", self.peer);
        self.reply(out, 535, "5.7.8", "Authentication credentials invalid");
        if self.auth_failures >= MAX_AUTH_FAILURES {
            // A password guesser gets a few tries per connection, not thousands.
            log::info!(target: "twistrs.mail.smtp",
                "{}: {MAX_AUTH_FAILURES} failed AUTHs, closing", self.peer);
            let text = format!(
                "{} Too many authentication failures, closing",
                self.cfg.hostname
            );
            self.reply(out, 421, "4.7.0", &text);
            self.state = State::Closed;
            return Some(Action::Close);
        }
        (!self.cfg.fail_delay.is_zero()).then_some(Action::Delay(self.cfg.fail_delay))
    }

    /// AUTH LOGIN's user name, base64: ask for the password, or fail.
    fn login_user(&mut self, b64: &[u8], out: &mut Vec<u8>) -> Option<Action> {
        match Self::b64(b64).and_then(|u| String::from_utf8(u).ok()) {
            Some(u) => {
                self.state = State::AuthLoginPass(u);
                out.extend_from_slice(b"334 UGFzc3dvcmQ6\r\n");
                None
            }
            None => self.finish_auth(None, out),
        }
    }

    fn auth_line(&mut self, line: Result<&[u8], ()>, out: &mut Vec<u8>) -> Option<Action> {
        let Ok(line) = line else {
            self.state = State::Command;
            self.reply(out, 500, "5.5.2", "Line too long");
            return None;
        };
        let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        if trimmed == b"*" {
            self.state = State::Command;
            self.reply(out, 501, "5.7.0", "Authentication cancelled");
            return None;
        }
        match std::mem::replace(&mut self.state, State::Command) {
            State::AuthPlain => {
                let s = String::from_utf8_lossy(trimmed).into_owned();
                self.check_plain(&s, out)
            }
            State::AuthLoginUser => self.login_user(trimmed, out),
            State::AuthLoginPass(user) => {
                let pass = Self::b64(trimmed).and_then(|p| String::from_utf8(p).ok());
                self.finish_auth(pass.map(|p| (user, p)), out)
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The DATA transfer ended: hand the message over, or refuse it.
    fn end_of_data(&mut self, outcome: Outcome, out: &mut Vec<u8>) -> Option<Action> {
        self.state = State::Command;
        if self.data.as_ref().is_some_and(|d| d.bare_lf) {
            log::info!(target: "twistrs.mail.smtp",
                "{}: bare LF line ends in DATA, taken as CRLF", self.peer);
        }
        match outcome {
            Outcome::TooBig => {
                crate::metrics::with(|m| m.rejected_too_big.inc());
                self.reset();
                self.reply(out, 552, "5.3.4", "Message too big");
                None
            }
            Outcome::LongLine => {
                crate::metrics::with(|m| m.rejected_long_line.inc());
                self.reset();
                let why = format!("Line too long ({} octets at most)", data::MAX_TEXT);
                self.reply(out, 500, "5.5.2", &why);
                None
            }
            Outcome::NoStorage => {
                crate::metrics::with(|m| m.rejected_no_storage.inc());
                let size = self.data.as_ref().map_or(0, DataReader::size);
                let mem = &self.cfg.data_memory;
                log::warn!(target: "twistrs.mail.smtp",
                    "{}: 452 message of {size} bytes refused: --max-data-memory {} is in use ({} held)",
                    self.peer, mem.limit(), mem.used());
                self.reset();
                self.reply(out, 452, "4.3.1", "Insufficient system storage");
                None
            }
            Outcome::Message(body) => Some(self.make_job(body)),
        }
    }

    fn make_job(&mut self, body: Vec<u8>) -> Action {
        let helo = self.helo.clone().unwrap_or_default();
        // RFC 3848's protocol types: S for TLS, A for an authenticated client; RFC 6531
        // 4.3's UTF8SMTP ones for a transaction that said SMTPUTF8 (which needs EHLO).
        let with = match (
            self.extended,
            self.smtputf8,
            self.tls == Tls::Active,
            self.authed.is_some(),
        ) {
            (false, _, _, _) => "smtp",
            (true, false, false, false) => "esmtp",
            (true, false, false, true) => "esmtpa",
            (true, false, true, false) => "esmtps",
            (true, false, true, true) => "esmtpsa",
            (true, true, false, false) => "UTF8SMTP",
            (true, true, false, true) => "UTF8SMTPA",
            (true, true, true, false) => "UTF8SMTPS",
            (true, true, true, true) => "UTF8SMTPSA",
        };
        let date = httpdate::fmt_http_date(std::time::SystemTime::now()).replace(" GMT", " +0000");
        let id = queue_id();
        // RFC 5321 4.4's FOR clause names one recipient. Only a message for one gets it, as
        // postfix does: every copy has the same header, and a list of all the recipients
        // would show each of them the others, Bcc included.
        let tail = match &self.rcpt_addrs[..] {
            [one] => format!("\n\tfor <{}>; {date}", path_text(one)),
            _ => format!(";\n\t{date}"),
        };
        let received = format!(
            "Received: from {helo} ([{}] helo={helo})\n\tby {} with {with} id {id} (twistrs {}){tail}\n",
            self.peer,
            self.cfg.hostname,
            env!("CARGO_PKG_VERSION")
        );
        let mut memory = self
            .data
            .as_mut()
            .map(DataReader::take_memory)
            .unwrap_or_default();
        // The header is a few hundred octets on a message already admitted: taken whatever
        // the limit.
        memory.grow(received.len());
        let receipt = Receipt {
            peer: self.peer.clone(),
            id,
            from: self.from.clone().unwrap_or_default(),
            to: self.rcpt_addrs.join(","),
            size: received.len() + body.len(),
            start: std::time::Instant::now(),
        };
        let job = Job {
            sender: self.from.as_deref().map(path_text).unwrap_or_default(),
            head: received,
            data: body,
            targets: std::mem::take(&mut self.rcpts),
            memory,
            receipt: Some(Box::new(receipt)),
        };
        self.reset();
        self.state = State::Delivering;
        Action::Deliver(job)
    }

    fn delivered(&mut self, result: Result<(), String>, out: &mut Vec<u8>) {
        if self.state != State::Delivering {
            return;
        }
        self.state = State::Command;
        // The log line is the batch's (`Receipt::log`), written even if the client is gone.
        match result {
            Ok(()) => self.reply(out, 250, "2.0.0", "Delivery in progress"),
            Err(_) => self.reply(
                out,
                451,
                "4.3.0",
                "Requested action aborted: local error in processing",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MailConfig, fixture};
    use std::collections::HashMap;

    fn cfg(dir: &std::path::Path, esmtp: bool) -> Rc<MailConfig> {
        cfg_sized(dir, esmtp, 200)
    }

    fn cfg_sized(dir: &std::path::Path, esmtp: bool, max_message: usize) -> Rc<MailConfig> {
        Rc::new(MailConfig {
            hostname: "mx.test".into(),
            esmtp,
            auth: Some(HashMap::from([("joe".to_string(), "secret".to_string())])),
            max_message,
            max_recipients: 2,
            ..fixture::config(vec![fixture::example_domain(dir)])
        })
    }

    /// Runs a whole session fed in `chunk`-byte pieces; deliveries succeed at once.
    fn session(cfg: Rc<MailConfig>, input: &[u8], chunk: usize) -> (String, Vec<Job>) {
        let tls = Tls::of(&cfg, false);
        let parts: Vec<&[u8]> = input.chunks(chunk).collect();
        let (out, jobs, _) = session_parts(cfg, tls, &parts);
        (out, jobs)
    }

    /// Runs a whole session fed `parts` one after another; deliveries succeed at once, and a
    /// STARTTLS upgrade at once too (what is fed after it came over TLS). Also says how many
    /// upgrades there were.
    fn session_parts(cfg: Rc<MailConfig>, tls: Tls, parts: &[&[u8]]) -> (String, Vec<Job>, usize) {
        let mut s = Smtp::new(cfg, "127.0.0.1".into());
        s.set_tls(tls);
        let mut out = Vec::new();
        let mut jobs = Vec::new();
        let mut upgrades = 0;
        s.greeting(&mut out);
        'outer: for piece in parts {
            s.feed(piece);
            loop {
                match s.step(&mut out) {
                    Some(Action::Deliver(j)) => {
                        jobs.push(j);
                        s.delivered(Ok(()), &mut out);
                    }
                    Some(Action::Close) => break 'outer,
                    Some(Action::StartTls) => upgrades += 1,
                    Some(Action::Delay(_)) => {}
                    None => break,
                }
            }
        }
        (String::from_utf8(out).unwrap(), jobs, upgrades)
    }

    const MAIL: &[u8] = b"HELO client\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nRCPT TO:<x@elsewhere.org>\r\nDATA\r\nSubject: hi\r\n\r\n..leading dot\r\nbody\r\n.\r\nNOOP\r\nQUIT\r\n";

    #[test]
    fn a_session_is_the_same_in_every_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), false);
        let (first, jobs) = session(c.clone(), MAIL, MAIL.len());
        let codes: Vec<&str> = first.lines().map(|l| &l[..3]).collect();
        assert_eq!(
            codes,
            [
                "220", "250", "250", "250", "550", "354", "250", "250", "221"
            ]
        );
        assert_eq!(jobs.len(), 1);
        let text = String::from_utf8(jobs[0].whole()).unwrap();
        assert!(
            text.starts_with(
                "Received: from client ([127.0.0.1] helo=client)\n\tby mx.test with smtp"
            ),
            "{text}"
        );
        assert!(
            text.ends_with("Subject: hi\n\n.leading dot\nbody\n"),
            "dot-unstuffed, LF: {text}"
        );
        assert_eq!(jobs[0].targets[0].1, "joe@example.com");
        for chunk in 1..MAIL.len() {
            let (out, jobs2) = session(c.clone(), MAIL, chunk);
            assert_eq!(out, first, "chunk {chunk}");
            assert_eq!(jobs2.len(), 1);
        }
    }

    #[test]
    fn esmtp_auth_limits_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let plain = base64::engine::general_purpose::STANDARD.encode(b"\0joe\0secret");
        let input = format!(
            "EHLO c\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<a@b> SIZE=999\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nRCPT TO:<joe@example.com>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\n{}\r\n.\r\nQUIT\r\n",
            "x".repeat(250)
        );
        let (out, jobs) = session(cfg(dir.path(), true), input.as_bytes(), 7);
        assert!(out.contains("250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-SIZE 200\r\n250-ENHANCEDSTATUSCODES\r\n250 AUTH PLAIN LOGIN"), "{out}");
        assert!(out.contains("235 2.7.0"));
        assert!(
            out.contains("552 5.3.4 Message size exceeds"),
            "SIZE= over the limit"
        );
        assert!(out.contains("452 4.5.3 Too many recipients"));
        assert!(out.contains("552 5.3.4 Message too big"), "{out}");
        assert!(jobs.is_empty());
        let (out, _) = session(cfg(dir.path(), false), b"EHLO c\r\n", 1);
        assert!(
            out.contains("500 Command not implemented"),
            "EHLO needs -E, as twistd"
        );
        let login = "EHLO c\r\nAUTH LOGIN\r\nam9l\r\nd3Jvbmc=\r\nQUIT\r\n";
        let (out, _) = session(cfg(dir.path(), true), login.as_bytes(), 3);
        assert!(
            out.contains("334 VXNlcm5hbWU6") && out.contains("535 5.7.8"),
            "{out}"
        );
        // An authorization identity: the user's own, or refused (RFC 4616 5).
        for (authz, want) in [("joe", "235 2.7.0"), ("ann", "535 5.7.8")] {
            let ir =
                base64::engine::general_purpose::STANDARD.encode(format!("{authz}\0joe\0secret"));
            let (out, _) = session(
                cfg(dir.path(), true),
                format!("EHLO c\r\nAUTH PLAIN {ir}\r\n").as_bytes(),
                4,
            );
            assert!(
                out.lines().last().is_some_and(|l| l.starts_with(want)),
                "{authz}: {out}"
            );
        }
        // Not inside a transaction (RFC 4954 4); after RSET it is.
        let plain_in = format!(
            "EHLO c\r\nMAIL FROM:<a@b>\r\nAUTH PLAIN {plain}\r\nRSET\r\nAUTH PLAIN {plain}\r\n"
        );
        let (out, _) = session(cfg(dir.path(), true), plain_in.as_bytes(), 5);
        assert!(
            out.ends_with(
                "250 2.1.0 Sender address accepted\r\n503 5.5.1 MAIL transaction in progress\r\n\
                 250 2.0.0 I remember nothing.\r\n235 2.7.0 Authentication successful\r\n"
            ),
            "{out}"
        );
        // The user name as an initial response (curl --sasl-ir), and `=` for none.
        for login in [
            "EHLO c\r\nAUTH LOGIN am9l\r\nc2VjcmV0\r\nQUIT\r\n",
            "EHLO c\r\nAUTH LOGIN =\r\nam9l\r\nc2VjcmV0\r\nQUIT\r\n",
        ] {
            let (out, _) = session(cfg(dir.path(), true), login.as_bytes(), 3);
            assert!(
                out.contains("334 UGFzc3dvcmQ6\r\n235 2.7.0"),
                "{login:?}: {out}"
            );
        }
        let (out, _) = session(
            cfg(dir.path(), false),
            b"bogus\r\nMAIL FROM:<a@b>\r\nfoo\r\nNOOP\r\n",
            1,
        );
        assert!(
            out.ends_with("421 mx.test Too many errors, closing\r\n"),
            "{out}"
        );
        let long = format!("HELO {}\r\nNOOP\r\n", "h".repeat(1200));
        let (out, _) = session(cfg(dir.path(), false), long.as_bytes(), 50);
        assert!(
            out.contains("500 Line too long") && out.ends_with("250 Nothing happens\r\n"),
            "{out}"
        );
        let data = format!(
            "HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\n{}\r\n.\r\nQUIT\r\n",
            "y".repeat(16_385)
        );
        let (out, jobs) = session(cfg(dir.path(), false), data.as_bytes(), 64);
        assert!(out.contains("500 Line too long (16384"), "{out}");
        assert!(jobs.is_empty());
    }

    #[test]
    fn parameters_of_extensions_not_offered_are_555() {
        let dir = tempfile::tempdir().unwrap();
        // A NOOP after each, or the test configuration's errors in a row close the session.
        let input = [
            "EHLO c",
            "MAIL FROM:<a@b> SMTPUTF8=yes",
            "MAIL FROM:<a@b> BODY=BINARYMIME",
            "MAIL FROM:<a@b> RET=HDRS ENVID=x",
            "MAIL FROM:<a@b> FOO=bar",
            "MAIL FROM:<a@b> SIZE",
            "MAIL FROM:<a@b> SIZE=x",
            "MAIL FROM:<a@b> AUTH=<> BODY=8BITMIME SIZE=10",
            "RCPT TO:<joe@example.com> NOTIFY=NEVER",
            "RCPT TO:<joe@example.com> ORCPT=rfc822;joe@example.com",
            "RCPT TO:<joe@example.com>",
        ]
        .join("\r\nNOOP\r\n");
        let (out, _) = session(cfg(dir.path(), true), format!("{input}\r\n").as_bytes(), 9);
        let replies: Vec<&str> = out
            .lines()
            .skip(1)
            .filter(|l| !l.starts_with("250-") && !l.ends_with("Nothing happens"))
            .collect();
        assert_eq!(
            replies[1..],
            [
                "555 5.5.4 Unsupported option: SMTPUTF8=YES",
                "555 5.5.4 Unsupported option: BODY=BINARYMIME",
                "555 5.5.4 Unsupported option: RET",
                "555 5.5.4 Unsupported option: FOO=BAR",
                "555 5.5.4 Unsupported option: SIZE",
                "501 5.5.4 Bad SIZE parameter syntax",
                "250 2.1.0 Sender address accepted",
                "555 5.5.4 Unsupported option: NOTIFY",
                "555 5.5.4 Unsupported option: ORCPT",
                "250 2.1.5 Recipient address accepted",
            ],
            "{out}"
        );
        // AUTH= only where AUTH is offered: not to a HELO client.
        let (out, _) = session(
            cfg(dir.path(), true),
            b"HELO c\r\nMAIL FROM:<a@b> AUTH=<>\r\n",
            3,
        );
        assert!(out.ends_with("555 Unsupported option: AUTH\r\n"), "{out}");
        // SMTPUTF8 likewise: offered by EHLO only.
        let (out, _) = session(
            cfg(dir.path(), true),
            b"HELO c\r\nMAIL FROM:<a@b> SMTPUTF8\r\n",
            3,
        );
        assert!(
            out.ends_with("555 Unsupported option: SMTPUTF8\r\n"),
            "{out}"
        );
    }

    /// RFC 6531: EHLO offers SMTPUTF8, and UTF-8 addresses reach UTF-8 users and aliases
    /// in any case (`config::fold`); a message whose MAIL said SMTPUTF8
    /// gets `with UTF8SMTP` in its `Received:`. UTF-8 sent without the parameter is taken
    /// too, as postfix takes it (postfix relays such pre-SMTPUTF8 mail on without it). An
    /// address with octets that are not UTF-8 gets RFC 6531 3.5's refusal, 550 or 553 5.6.7:
    /// it was taken, and smtp-proto's U+FFFD for each bad octet went into `Return-Path:`.
    /// The message passes as it came, UTF-8 headers and all.
    #[test]
    fn smtputf8_in_every_chunking() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = fixture::example_domain(dir.path());
        d.add_user("jöe", "pw", crate::config::Setup::Make).unwrap();
        let aliases = dir.path().join("aliases");
        std::fs::write(&aliases, "ålias: jöe\n").unwrap();
        d.aliases = Some(crate::config::Aliases::new(aliases).unwrap());
        let c = Rc::new(MailConfig {
            hostname: "mx.test".into(),
            esmtp: true,
            max_message: 10_000,
            ..fixture::config(vec![d])
        });
        let message =
            "From: Jöran <jöran@b.test>\r\nSubject: grüße ✓\r\n\r\nbody ü\r\n.".as_bytes();
        let lines: [&[u8]; 20] = [
            b"EHLO c",
            "MAIL FROM:<jöran@b.test>".as_bytes(),
            "RCPT TO:<jöe@example.com>".as_bytes(),
            b"RCPT TO:<j\xf6e@example.com>",
            b"DATA",
            message,
            "MAIL FROM:<jöran@b.test> SMTPUTF8".as_bytes(),
            b"RCPT TO:<j\xc3@example.com>",
            "RCPT TO:<JØE@example.com>".as_bytes(),
            "RCPT TO:<JÖE@Example.COM>".as_bytes(),
            b"DATA",
            message,
            b"MAIL FROM:<a@b.test> BODY=8BITMIME SMTPUTF8",
            "RCPT TO:<ålias@example.com>".as_bytes(),
            b"RCPT TO:<joe@example.com>",
            b"DATA",
            message,
            b"MAIL FROM:<j\xf6ran@b.test>",
            b"QUIT",
            b"",
        ];
        let input = lines.join(&b"\r\n"[..]);
        let (first, jobs) = session(c.clone(), &input, input.len());
        let replies: Vec<&str> = first.lines().filter(|l| !l.starts_with("250-")).collect();
        let not_utf8 = "5.6.7 Non-ASCII address not permitted: not UTF-8";
        assert_eq!(
            replies[1..],
            [
                "250 ENHANCEDSTATUSCODES",
                "250 2.1.0 Sender address accepted",
                "250 2.1.5 Recipient address accepted",
                &format!("553 {not_utf8}"),
                "354 Continue",
                "250 2.0.0 Delivery in progress",
                "250 2.1.0 Sender address accepted",
                &format!("553 {not_utf8}"),
                "550 5.1.1 Cannot receive for specified address",
                "250 2.1.5 Recipient address accepted",
                "354 Continue",
                "250 2.0.0 Delivery in progress",
                "250 2.1.0 Sender address accepted",
                "250 2.1.5 Recipient address accepted",
                "250 2.1.5 Recipient address accepted",
                "354 Continue",
                "250 2.0.0 Delivery in progress",
                &format!("550 {not_utf8}"),
                "221 2.0.0 See you later",
            ],
            "{first}"
        );
        assert!(
            first.contains("250-8BITMIME\r\n250-SMTPUTF8\r\n"),
            "{first}"
        );
        let text = |j: &Job| String::from_utf8(j.whole()).unwrap();
        let joe = (
            dir.path().join("example.com/jöe"),
            "jöe@example.com".to_string(),
        );
        assert_eq!(jobs.len(), 3);
        for j in &jobs[..2] {
            assert_eq!(j.sender, "jöran@b.test");
            assert_eq!(j.targets, std::slice::from_ref(&joe));
            assert!(
                text(j).ends_with("\nFrom: Jöran <jöran@b.test>\nSubject: grüße ✓\n\nbody ü\n"),
                "{}",
                text(j)
            );
        }
        assert!(
            text(&jobs[0]).contains(" with esmtp id ")
                && text(&jobs[0]).contains("\tfor <jöe@example.com>; "),
            "no SMTPUTF8 said: {}",
            text(&jobs[0])
        );
        assert!(
            text(&jobs[1]).contains(" with UTF8SMTP id ")
                && text(&jobs[1]).contains("\tfor <JÖE@Example.COM>; "),
            "{}",
            text(&jobs[1])
        );
        assert_eq!(jobs[2].targets.len(), 2, "the alias's jöe and joe");
        for chunk in 1..input.len() {
            let (out, again) = session(c.clone(), &input, chunk);
            assert_eq!(out, first, "chunk {chunk}");
            assert_eq!(again.len(), 3);
        }
        // A HELO client cannot say SMTPUTF8 (555); its UTF-8 is taken, other octets are not.
        let (out, jobs) = session(
            c.clone(),
            b"HELO c\r\nMAIL FROM:<a@b> SMTPUTF8\r\nMAIL FROM:<j\xc3\xb6ran@b.test>\r\nRCPT TO:<j\xf6e@example.com>\r\nRCPT TO:<j\xc3\xb6e@example.com>\r\nDATA\r\nx\r\n.\r\n",
            5,
        );
        assert!(
            out.ends_with(
                "555 Unsupported option: SMTPUTF8\r\n250 Sender address accepted\r\n\
                 553 Non-ASCII address not permitted: not UTF-8\r\n250 Recipient address accepted\r\n\
                 354 Continue\r\n250 Delivery in progress\r\n"
            ),
            "{out}"
        );
        assert!(text(&jobs[0]).contains(" with smtp id "));
    }

    /// RFC 6531 4.3's WITH types, by TLS and AUTH, as RFC 3848's are for ESMTP.
    #[test]
    fn received_says_utf8smtp_with_its_s_and_a() {
        let dir = tempfile::tempdir().unwrap();
        let plain = base64::engine::general_purpose::STANDARD.encode(b"\0joe\0secret");
        for (tls, auth, with) in [
            (Tls::Unavailable, false, "UTF8SMTP"),
            (Tls::Unavailable, true, "UTF8SMTPA"),
            (Tls::Active, false, "UTF8SMTPS"),
            (Tls::Active, true, "UTF8SMTPSA"),
        ] {
            let auth = if auth {
                format!("AUTH PLAIN {plain}\r\n")
            } else {
                String::new()
            };
            let input = format!(
                "EHLO c\r\n{auth}MAIL FROM:<a@b> SMTPUTF8\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nx\r\n.\r\n"
            );
            let (out, jobs, _) = session_parts(cfg(dir.path(), true), tls, &[input.as_bytes()]);
            let text = String::from_utf8(jobs[0].whole()).expect(&out);
            assert!(text.contains(&format!(" with {with} id ")), "{text}");
        }
    }

    /// A UTF-8 address is held to smtp-proto's 256 octets (not characters), and a MAIL line
    /// to the 1000 octets of any command line, SMTPUTF8 or not.
    #[test]
    fn utf8_addresses_keep_the_limits_in_octets() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg_sized(dir.path(), true, 10_000);
        let fits = format!("{}@b.test", "ö".repeat(124));
        let over = format!("{}@b.test", "ö".repeat(125));
        assert_eq!((fits.len(), over.chars().count()), (255, 132));
        let input = format!(
            "EHLO c\r\nMAIL FROM:<{over}> SMTPUTF8\r\nMAIL FROM:<{fits}> SMTPUTF8\r\nRSET\r\n\
             MAIL FROM:<a@b> SMTPUTF8 {}\r\nNOOP\r\n",
            "x".repeat(990)
        );
        let mut input = input.into_bytes();
        input.extend_from_slice(b"MAIL FROM:<j\xff@b> SMTPUTF8\r\n");
        for chunk in [1, 7, input.len()] {
            let (out, _) = session(c.clone(), &input, chunk);
            let replies: Vec<&str> = out.lines().filter(|l| !l.starts_with("250-")).collect();
            assert_eq!(
                replies[2..],
                [
                    "501 5.1.7 Invalid sender address",
                    "250 2.1.0 Sender address accepted",
                    "250 2.0.0 I remember nothing.",
                    "500 5.5.2 Line too long",
                    "250 2.0.0 Nothing happens",
                    "550 5.6.7 Non-ASCII address not permitted: not UTF-8",
                ],
                "chunk {chunk}: {out}"
            );
        }
    }

    #[test]
    fn postmaster_without_a_domain_is_told_from_the_null_path() {
        for (line, want) in [
            (&b"RCPT TO:<Postmaster>\r\n"[..], true),
            (b"RCPT TO: <POSTMASTER>\n", true),
            (b"RCPT TO:<>\r\n", false),
            (b"RCPT TO:<postmaster\r\n", false),
            (b"RCPT TO:<postmasterx>\r\n", false),
        ] {
            assert_eq!(names_postmaster(line), want, "{line:?}");
        }
    }

    #[test]
    fn a_smuggled_second_message_stays_inside_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg_sized(dir.path(), false, 10_000);
        for end in ["\n.\n", "\r\n.\n", "\n.\r\n"] {
            let input = format!(
                "HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nfirst{end}MAIL FROM:<boss@example.com>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n"
            );
            for chunk in 1..=input.len() {
                let (out, jobs) = session(c.clone(), input.as_bytes(), chunk);
                assert_eq!(jobs.len(), 1, "{end:?} chunk {chunk}: {out}");
                let text = String::from_utf8_lossy(&jobs[0].whole()).into_owned();
                assert!(
                    text.ends_with("first\n.\nMAIL FROM:<boss@example.com>\nRCPT TO:<joe@example.com>\nDATA\nsmuggled\n"),
                    "{end:?}: the rest is content: {text}"
                );
                assert!(
                    out.ends_with(
                        "354 Continue\r\n250 Delivery in progress\r\n221 See you later\r\n"
                    ),
                    "{out}"
                );
            }
        }
    }

    #[test]
    fn control_characters_never_reach_the_headers() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path(), false);
        for bad in ["HELO ev\x1bil\r\n", "HELO ev\x7fil\r\n"] {
            let input = format!(
                "{bad}MAIL FROM:<a@b>\r\nHELO good\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nx\r\n.\r\n"
            );
            let (out, jobs) = session(c.clone(), input.as_bytes(), 3);
            assert!(out.contains("501 Invalid domain name"), "{out}");
            assert!(
                out.contains("503 Send HELO first"),
                "the bad HELO did not count: {out}"
            );
            assert_eq!(jobs.len(), 1);
            let text = String::from_utf8_lossy(&jobs[0].whole()).into_owned();
            assert!(text.starts_with("Received: from good "), "{text}");
            assert!(!text.contains('\x1b') && !text.contains('\x7f'));
        }
        let (out, jobs) = session(
            c,
            b"HELO c\r\nMAIL FROM:<a\x1b@b>\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe\x7f@example.com>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nx\r\n.\r\n",
            1,
        );
        assert!(out.contains("501 Invalid sender address"), "{out}");
        assert!(out.contains("501 Invalid recipient address"), "{out}");
        assert_eq!(jobs.len(), 1);
    }

    #[test]
    fn size_is_what_was_transmitted() {
        let dir = tempfile::tempdir().unwrap();
        // 20 lines of 8 octets: 180 stored with LF, 200 on the wire (limit 200).
        let body = "12345678\r\n".repeat(20);
        for (limit, code) in [(200, "250"), (199, "552")] {
            let c = cfg_sized(dir.path(), false, limit);
            let input = format!(
                "HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\n{body}.\r\n"
            );
            let (out, _) = session(c, input.as_bytes(), 11);
            assert_eq!(
                out.lines().last().map(|l| &l[..3]),
                Some(code),
                "{limit}: {out}"
            );
        }
    }

    /// The ESMTP configuration with a budget of `budget` octets for message data.
    fn cfg_budget(dir: &std::path::Path, budget: usize) -> Rc<MailConfig> {
        Rc::new(MailConfig {
            data_memory: crate::memory::DataMemory::new(budget),
            ..Rc::into_inner(cfg_sized(dir, true, 10_000)).unwrap()
        })
    }

    #[test]
    fn over_the_memory_budget_is_452_after_the_whole_data_in_every_chunking() {
        let dir = tempfile::tempdir().unwrap();
        // The message takes 440 octets stored: beside another session's 100 of 500 it does not
        // fit now (452, a retry may); past a budget of 400 it never can (552, permanent).
        let now = "452 4.3.1 Insufficient system storage";
        let never = "552 5.3.4 Message too big";
        for (budget, other, refusal) in [(500, 100, now), (400, 0, never)] {
            let c = cfg_budget(dir.path(), budget);
            let mut held = crate::memory::Reservation::new(&c.data_memory);
            assert!(held.try_grow(other));
            // 460 octets of lines that would be commands if the session stopped reading them as
            // data; then a RCPT with no transaction (the 452 left none), and a small message.
            let input = format!(
                "EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\n{}.\r\nRCPT TO:<joe@example.com>\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nsmall\r\n.\r\nQUIT\r\n",
                "NOOP padding xxxxxxxx\r\n".repeat(20)
            );
            let mut first: Option<String> = None;
            for chunk in 1..=input.len() {
                let (out, jobs) = session(c.clone(), input.as_bytes(), chunk);
                let codes: Vec<&str> = out.lines().map(|l| &l[..4]).collect();
                assert_eq!(
                    codes,
                    [
                        "220 ",
                        "250-",
                        "250-",
                        "250-",
                        "250-",
                        "250-",
                        "250-",
                        "250 ",
                        "250 ",
                        "250 ",
                        "354 ",
                        &refusal[..4],
                        "503 ",
                        "250 ",
                        "250 ",
                        "354 ",
                        "250 ",
                        "221 "
                    ],
                    "chunk {chunk}: {out}"
                );
                assert!(
                    out.contains(&format!(
                        "354 Continue\r\n{refusal}\r\n503 5.5.1 Must have sender"
                    )),
                    "{out}"
                );
                assert_eq!(jobs.len(), 1, "the small one fits");
                assert!(String::from_utf8_lossy(&jobs[0].whole()).ends_with("\nsmall\n"));
                assert_eq!(
                    c.data_memory.used(),
                    other + jobs[0].data.capacity() + jobs[0].head.len(),
                    "chunk {chunk}: the job holds its octets, the refused message none"
                );
                drop(jobs);
                assert_eq!(c.data_memory.used(), other, "chunk {chunk}: all given back");
                match &first {
                    None => first = Some(out),
                    Some(f) => assert_eq!(&out, f, "chunk {chunk}"),
                }
            }
        }
    }

    #[test]
    fn a_declared_size_past_the_memory_budget_is_refused_at_mail_in_every_chunking() {
        let dir = tempfile::tempdir().unwrap();
        // Budget 500, another session holding 100: SIZE=400 fits, 401 not now (452), 501
        // never (552); SIZE above --max-message-size (10,000) keeps its own 552.
        let c = cfg_budget(dir.path(), 500);
        let mut held = crate::memory::Reservation::new(&c.data_memory);
        assert!(held.try_grow(100));
        let input = "EHLO c\r\nMAIL FROM:<a@b> SIZE=401\r\nMAIL FROM:<a@b> SIZE=501\r\nMAIL FROM:<a@b> SIZE=10001\r\nMAIL FROM:<a@b> SIZE=400\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nsmall\r\n.\r\nQUIT\r\n";
        let mut first: Option<String> = None;
        for chunk in 1..=input.len() {
            let (out, jobs) = session(c.clone(), input.as_bytes(), chunk);
            let replies: Vec<&str> = out.lines().filter(|l| !l.starts_with("250-")).collect();
            let codes: Vec<&str> = replies.iter().map(|l| &l[..4]).collect();
            assert_eq!(
                codes,
                [
                    "220 ", "250 ", "452 ", "552 ", "552 ", "250 ", "250 ", "354 ", "250 ", "221 "
                ],
                "chunk {chunk}: {out}"
            );
            assert_eq!(replies[2], "452 4.3.1 Insufficient system storage");
            assert!(replies[3].contains("memory"), "{out}");
            assert!(replies[4].contains("fixed maximum"), "{out}");
            assert_eq!(jobs.len(), 1, "chunk {chunk}: the one that fits is taken");
            match &first {
                None => first = Some(out),
                Some(f) => assert_eq!(&out, f, "chunk {chunk}"),
            }
        }
        drop(held);
        assert_eq!(c.data_memory.used(), 0);
        // With the other session gone, SIZE=401 fits.
        let (out, _) = session(c.clone(), b"EHLO c\r\nMAIL FROM:<a@b> SIZE=401\r\n", 1);
        assert!(
            out.ends_with("250 2.1.0 Sender address accepted\r\n"),
            "{out}"
        );
    }

    /// Feeds `input` and runs the session until it waits; the replies and the job, if any.
    fn run(s: &mut Smtp, input: &[u8]) -> (String, Option<Job>) {
        let mut out = Vec::new();
        s.feed(input);
        let job = match s.step(&mut out) {
            Some(Action::Deliver(j)) => Some(j),
            _ => None,
        };
        (String::from_utf8(out).unwrap(), job)
    }

    #[test]
    fn the_memory_budget_is_given_back_on_every_path() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg_budget(dir.path(), 1000);
        let start = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\n";
        let body = "y".repeat(98) + "\r\n";
        let body = body.repeat(6);
        let open = |mem: usize| {
            let mut s = Smtp::new(c.clone(), "127.0.0.1".into());
            let (out, job) = run(&mut s, start);
            assert!(out.ends_with("354 Continue\r\n") && job.is_none(), "{out}");
            run(&mut s, body.as_bytes());
            assert_eq!(c.data_memory.used(), mem, "DATA in progress is counted");
            s
        };
        // Six lines of 99 octets stored are 594 in a buffer of 792 (99, 198, 396, 792): the
        // budget counts the buffer.
        // Delivered, then failed: given back when the job is dropped (after its batch).
        for result in [Ok(()), Err("disk on fire".to_string())] {
            let mut a = open(792);
            // A second session's message cannot fit beside the first: 452 once it ends.
            let mut b = Smtp::new(c.clone(), "127.0.0.2".into());
            run(&mut b, start);
            let (out, job) = run(&mut b, format!("{body}.\r\n").as_bytes());
            assert!(
                job.is_none() && out.ends_with("452 4.3.1 Insufficient system storage\r\n"),
                "{out}"
            );
            assert_eq!(
                c.data_memory.used(),
                792,
                "the refused message holds nothing"
            );
            let (_, job) = run(&mut a, b".\r\n");
            let job = job.expect("a job");
            assert_eq!(
                c.data_memory.used(),
                job.data.capacity() + job.head.len(),
                "the job holds its buffer's octets"
            );
            let mut out = Vec::new();
            let ok = result.is_ok();
            a.delivered(result, &mut out);
            assert!(String::from_utf8_lossy(&out).starts_with(if ok { "250 " } else { "451 " }));
            drop(job);
            assert_eq!(c.data_memory.used(), 0);
            // b's retry fits now.
            let (out, job) = run(
                &mut b,
                b"MAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\n.\r\n",
            );
            assert!(job.is_some(), "{out}");
        }
        assert_eq!(c.data_memory.used(), 0);
        // Mid-DATA: the connection lost, the idle timeout, the DATA deadline, a stop.
        drop(open(792));
        assert_eq!(c.data_memory.used(), 0, "session dropped");
        let ends: [fn(&mut Smtp, &mut Vec<u8>); 3] =
            [Smtp::timeout, Smtp::deadline, Smtp::shutdown];
        for end in ends {
            let mut s = open(792);
            end(&mut s, &mut Vec::new());
            assert!(s.closed());
            assert_eq!(
                c.data_memory.used(),
                0,
                "given back at once, not when dropped"
            );
        }
        // RSET cannot come mid-DATA, but a message refused as too big or with a long line
        // gives its octets back as soon as it is.
        let mut s = open(792);
        run(&mut s, format!("{}\r\n", "z".repeat(16_400)).as_bytes());
        assert_eq!(c.data_memory.used(), 0, "long line");
        let (out, _) = run(&mut s, b".\r\n");
        assert!(out.starts_with("500 5.5.2 Line too long"), "{out}");
    }

    /// The ESMTP configuration with AUTH (joe/secret), and STARTTLS offered.
    fn tls_cfg(dir: &std::path::Path, auth_requires_tls: bool) -> Rc<MailConfig> {
        Rc::new(MailConfig {
            auth_requires_tls,
            ..Rc::into_inner(cfg_sized(dir, true, 10_000)).unwrap()
        })
    }

    /// The replies after the 220 of STARTTLS.
    fn after_220(out: &str) -> &str {
        let at = out.find("220 2.0.0 Ready to start TLS\r\n").expect(out);
        &out[at + 30..]
    }

    #[test]
    fn starttls_throws_away_what_followed_and_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let c = tls_cfg(dir.path(), false);
        let plain = base64::engine::general_purpose::STANDARD.encode(b"\0joe\0secret");
        // Sent in plaintext: the command, and an attacker's commands behind it (the last one
        // cut short), all before the handshake.
        let before = format!("EHLO c\r\nAUTH PLAIN {plain}\r\nSTARTTLS\r\n");
        let injected = "RSET\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<joe@example.com>\r\nNOO";
        let whole = format!("{before}{injected}");
        // Over TLS.
        let after = b"P\r\nMAIL FROM:<a@b>\r\nEHLO c2\r\nMAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
        let mut first = None;
        // The injection arrives with the end of the STARTTLS line, in every chunking of what
        // came before it.
        for k in 0..before.len() {
            for chunk in [1, 3, 7, 1000] {
                let mut parts: Vec<&[u8]> = whole.as_bytes()[..k].chunks(chunk).collect();
                parts.push(&whole.as_bytes()[k..]);
                parts.extend(after.chunks(chunk));
                let (out, jobs, upgrades) = session_parts(c.clone(), Tls::Offered, &parts);
                assert_eq!(upgrades, 1, "{k}/{chunk}: {out}");
                assert!(
                    out.contains("250 STARTTLS\r\n"),
                    "offered in plaintext: {out}"
                );
                assert!(out.contains("235 2.7.0"), "{out}");
                let tls = after_220(&out);
                assert_eq!(
                    tls.lines().map(|l| &l[..4]).collect::<Vec<_>>(),
                    // "P": unknown; MAIL before a new EHLO; EHLO; MAIL, RCPT, DATA, 250, QUIT.
                    [
                        "500 ", "503 ", "250-", "250-", "250-", "250-", "250-", "250-", "250 ",
                        "250 ", "250 ", "354 ", "250 ", "221 "
                    ],
                    "{k}/{chunk}: nothing injected ran, the session starts over: {tls}"
                );
                assert!(tls.contains("503 Send HELO first"), "{tls}");
                assert!(!tls.contains("STARTTLS"), "not offered again: {tls}");
                assert!(tls.contains("250 AUTH PLAIN LOGIN\r\n"), "{tls}");
                assert_eq!(jobs.len(), 1);
                let text = String::from_utf8_lossy(&jobs[0].whole()).into_owned();
                assert!(
                    text.starts_with(
                        "Received: from c2 ([127.0.0.1] helo=c2)\n\tby mx.test with esmtps "
                    ),
                    "over TLS, and the login before it forgotten: {text}"
                );
                assert!(!text.contains("evil"));
                match &first {
                    None => first = Some(out),
                    Some(f) => assert_eq!(&out, f, "{k}/{chunk}"),
                }
            }
        }
    }

    #[test]
    fn starttls_when_it_cannot_be() {
        let dir = tempfile::tempdir().unwrap();
        let c = tls_cfg(dir.path(), false);
        // Each line in a packet of its own, as a client waiting for each reply sends them.
        let run = |tls, input: &str| {
            let lines: Vec<&[u8]> = input.split_inclusive('\n').map(str::as_bytes).collect();
            let (out, _, upgrades) = session_parts(c.clone(), tls, &lines);
            (out, upgrades)
        };
        // No certificate: not offered, and refused (RFC 3207 4: 454).
        let (out, n) = run(Tls::Unavailable, "EHLO c\r\nSTARTTLS\r\nNOOP\r\n");
        assert!(!out.contains("STARTTLS"), "{out}");
        assert!(
            out.contains("454 4.7.0 TLS not available\r\n250 2.0.0"),
            "{out}"
        );
        assert_eq!(n, 0);
        // Already TLS (an ssl: endpoint, or a second STARTTLS).
        let (out, n) = run(Tls::Active, "EHLO c\r\nSTARTTLS\r\nNOOP\r\n");
        assert!(!out.contains("STARTTLS"), "{out}");
        assert!(
            out.contains("503 5.5.1 TLS already active\r\n250 2.0.0"),
            "{out}"
        );
        assert_eq!(n, 0);
        let (out, n) = run(Tls::Offered, "EHLO c\r\nSTARTTLS\r\nEHLO c\r\nSTARTTLS\r\n");
        assert!(out.ends_with("503 5.5.1 TLS already active\r\n"), "{out}");
        assert_eq!(n, 1);
        // Not in the middle of a transaction.
        let (out, n) = run(
            Tls::Offered,
            "EHLO c\r\nMAIL FROM:<a@b>\r\nSTARTTLS\r\nRSET\r\n",
        );
        assert!(
            out.contains("503 5.5.1 MAIL transaction in progress\r\n250 2.0.0 I remember"),
            "{out}"
        );
        assert_eq!(n, 0);
    }

    #[test]
    fn auth_requires_tls_refuses_plaintext_logins() {
        let dir = tempfile::tempdir().unwrap();
        let c = tls_cfg(dir.path(), true);
        let plain = base64::engine::general_purpose::STANDARD.encode(b"\0joe\0secret");
        let login = format!("AUTH PLAIN {plain}\r\n");
        let mail = "MAIL FROM:<a@b>\r\nRCPT TO:<joe@example.com>\r\nDATA\r\nx\r\n.\r\n";
        let plaintext = format!("EHLO c\r\n{login}AUTH LOGIN\r\nSTARTTLS\r\n");
        let over_tls = format!("EHLO c\r\n{login}{mail}");
        for chunk in [1, 5, 1000] {
            let mut parts: Vec<&[u8]> = plaintext.as_bytes().chunks(chunk).collect();
            parts.extend(over_tls.as_bytes().chunks(chunk));
            let (out, jobs, _) = session_parts(c.clone(), Tls::Offered, &parts);
            let (plaintext, tls) = out.split_at(out.find("220 2.0.0").expect(&out));
            assert!(!plaintext.contains("AUTH"), "not advertised: {plaintext}");
            assert_eq!(
                plaintext
                    .matches(
                        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
                    )
                    .count(),
                2,
                "PLAIN and LOGIN: {plaintext}"
            );
            assert!(
                tls.contains("250 AUTH PLAIN LOGIN\r\n") && tls.contains("235 2.7.0"),
                "{tls}"
            );
            let text = String::from_utf8_lossy(&jobs[0].whole()).into_owned();
            assert!(text.contains("with esmtpsa "), "{text}");
        }
        // Over an ssl: endpoint, at once.
        let (out, jobs, _) = session_parts(
            c.clone(),
            Tls::Active,
            &[format!("EHLO c\r\n{login}{mail}").as_bytes()],
        );
        assert!(
            out.contains("235 2.7.0") && !out.contains("STARTTLS"),
            "{out}"
        );
        assert!(String::from_utf8_lossy(&jobs[0].whole()).contains("with esmtpsa "));
        // Without the option, plaintext logins go on as before.
        let c = tls_cfg(dir.path(), false);
        let (out, jobs, _) = session_parts(
            c,
            Tls::Offered,
            &[format!("EHLO c\r\n{login}{mail}").as_bytes()],
        );
        assert!(out.contains("235 2.7.0"), "{out}");
        assert!(String::from_utf8_lossy(&jobs[0].whole()).contains("with esmtpa "));
    }

    /// One step writes about [`crate::STEP_OUTPUT`] of replies at most, then leaves the rest
    /// of the pipelined commands for the next: a client that sends a burst of EHLOs (a reply
    /// many times its command) and reads nothing cannot make the server hold every answer.
    #[test]
    fn a_step_stops_taking_commands_once_its_replies_fill_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Smtp::new(cfg(dir.path(), true), "127.0.0.1".into());
        let mut out = Vec::new();
        s.greeting(&mut out);
        let one = {
            let mut o = Vec::new();
            s.feed(b"EHLO c\r\n");
            assert!(s.step(&mut o).is_none());
            o.len()
        };
        assert!(one > 100, "EHLO's reply is many times its command: {one}");
        s.feed(&b"EHLO c\r\n".repeat(5000));
        let (mut calls, mut replies) = (0, 0);
        while s.pending_input() > 0 && calls < 10_000 {
            let mut o = Vec::new();
            assert!(s.step(&mut o).is_none());
            assert!(
                o.len() < crate::STEP_OUTPUT + one,
                "{} octets in one step",
                o.len()
            );
            replies += o.len() / one;
            calls += 1;
        }
        assert_eq!(replies, 5000, "every EHLO answered, in {calls} steps");
        assert!(
            calls >= 5000 * one / (crate::STEP_OUTPUT + one),
            "{calls} steps"
        );
    }
}
