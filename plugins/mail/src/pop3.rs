//! The sans-IO POP3 session (RFC 1939, CAPA from RFC 2449): lines in, replies and disk work
//! out.
//!
//! AUTHORIZATION takes USER/PASS (`user@domain`, or a bare user of the default domain) or
//! APOP; TRANSACTION serves STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP; QUIT enters UPDATE
//! and only then removes what was deleted. The session never touches the disk itself: opening
//! the mailbox (lock and listing), sending a message and removing deleted ones are
//! [`Action`]s the caller carries out off the reactor thread, and the session waits, with
//! pipelined commands buffered, until it hears back (`opened`, `sent`, `updated`).
//!
//! STLS (RFC 2595 4) returns [`Action::StartTls`] after its `+OK`: what the client sent
//! behind the command is thrown away, and the session is still in AUTHORIZATION, with no
//! USER remembered.

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use twistrs_core::line::{Line, LineReceiver};

use crate::config::{MailConfig, Tls};
use crate::mailbox::{Mailbox, Message, OpenError, Whereabouts};

/// Command lines longer than this are refused (RFC 2449 allows 255 octets of arguments).
const MAX_LINE: usize = 512;
/// Failed logins before the connection is closed.
const MAX_FAILURES: u32 = 3;
/// Replies one [`Pop3::step`] writes before it stops taking commands (shared with SMTP: see
/// [`crate::STEP_OUTPUT`]).
pub use crate::STEP_OUTPUT;

/// What the caller must do.
#[derive(Debug)]
pub enum Action {
    /// Send `reply` after `delay` (a failed login), then carry on.
    Delay(Duration, Vec<u8>),
    /// Close once the replies are flushed.
    Close,
    /// Open the Maildir at the path (`mailbox::open`), then call `opened`.
    Open(PathBuf),
    /// Send a message: `+OK <size> octets`, then the message through a `mailbox::Encoder`
    /// (TOP: `Some(lines)`), then call `sent(Ok)`; if it cannot be read before anything
    /// went out, call `sent(Err)` and the client gets -ERR.
    Send {
        path: PathBuf,
        size: u64,
        top: Option<usize>,
    },
    /// Remove these files (UPDATE), then call `updated` with how many could not be.
    Update(Vec<PathBuf>),
    /// Upgrade the connection to TLS once the replies are flushed (`Transport::start_tls`).
    StartTls,
}

enum State {
    Auth {
        user: Option<String>,
    },
    /// Waiting for the mailbox to be opened for this login.
    Opening(String),
    Transaction {
        login: String,
        mbox: Mailbox,
    },
    /// A message is on its way: commands wait behind it.
    Sending {
        login: String,
        mbox: Mailbox,
    },
    /// Deleted messages are being removed; the lock is held until they are gone.
    Updating {
        _held: Mailbox,
    },
    Closed,
}

/// One POP3 session: the line framing, and the session state it feeds.
pub struct Pop3 {
    lines: LineReceiver,
    s: Session,
}

struct Session {
    cfg: Rc<MailConfig>,
    banner: String,
    state: State,
    failures: u32,
    tls: Tls,
}

fn ok(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(format!("+OK {text}\r\n").as_bytes());
}

fn err(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(format!("-ERR {text}\r\n").as_bytes());
}

impl Pop3 {
    /// `banner` is the APOP timestamp, `<...@host>`.
    pub fn new(cfg: Rc<MailConfig>, banner: String) -> Self {
        Pop3 {
            // The limit counts the LF; a CR before it is part of the line here.
            lines: LineReceiver::new(b"\n", MAX_LINE - 1),
            s: Session {
                tls: Tls::of(&cfg, false),
                cfg,
                banner,
                state: State::Auth { user: None },
                failures: 0,
            },
        }
    }

    /// What the connection has of TLS (a connection accepted on a TLS endpoint is `Active`).
    pub fn set_tls(&mut self, tls: Tls) {
        self.s.tls = tls;
    }

    pub fn greeting(&self, out: &mut Vec<u8>) {
        ok(out, &self.s.banner);
    }

    pub fn feed(&mut self, data: &[u8]) {
        if !matches!(self.s.state, State::Closed) {
            self.lines.feed(data);
        }
    }

    /// Input received and not yet processed.
    pub fn pending_input(&self) -> usize {
        self.lines.buffered()
    }

    /// True while the session waits for the disk (opening, sending, removing).
    pub fn waiting(&self) -> bool {
        matches!(
            self.s.state,
            State::Opening(_) | State::Sending { .. } | State::Updating { .. }
        )
    }

    /// True when part of a command line is buffered: its end has not arrived yet.
    pub fn partial_command(&self) -> bool {
        !self.waiting() && !self.closed() && self.lines.buffered() > 0
    }

    /// True once the session is over.
    pub fn closed(&self) -> bool {
        matches!(self.s.state, State::Closed)
    }

    /// Processes whole lines until an action is needed, more input is, or this call has
    /// written [`STEP_OUTPUT`] octets of replies (step again when they are sent).
    pub fn step(&mut self, out: &mut Vec<u8>) -> Option<Action> {
        let start = out.len();
        loop {
            if self.waiting() || self.closed() || out.len() - start >= STEP_OUTPUT {
                return None;
            }
            let line = match self.lines.next_line()? {
                Line::Complete(l) => l,
                Line::TooLong => {
                    err(out, "Line too long");
                    continue;
                }
            };
            let text = String::from_utf8_lossy(line);
            let text = text.trim_end_matches('\r');
            let (cmd, arg) = text.split_once(' ').unwrap_or((text, ""));
            let cmd = cmd.to_ascii_uppercase();
            if let Some(a) = self.s.command(&cmd, arg.trim(), out) {
                if let Action::StartTls = a {
                    self.discard_before_tls();
                }
                return Some(a);
            }
        }
    }

    /// RFC 2595 4: what followed STLS in plaintext is thrown away, never executed.
    fn discard_before_tls(&mut self) {
        let n = self.lines.buffered();
        if n > 0 {
            log::info!(target: "twistrs.mail.pop3",
                "{n} bytes sent behind STLS, before the handshake, thrown away");
        }
        self.lines.clear();
    }

    /// The mailbox asked for with [`Action::Open`] is open, or not.
    pub fn opened(&mut self, result: Result<Mailbox, OpenError>, out: &mut Vec<u8>) {
        let State::Opening(login) = std::mem::replace(&mut self.s.state, State::Closed) else {
            return;
        };
        self.s.state = State::Auth { user: None };
        match result {
            Ok(mbox) => {
                crate::metrics::with(|m| m.pop3_ok.inc());
                ok(out, &format!("Maildrop has {} messages", mbox.msgs.len()));
                self.s.state = State::Transaction { login, mbox };
            }
            Err(OpenError::Locked) => err(out, "[IN-USE] Mailbox is locked by another session"),
            Err(OpenError::Io(e)) => {
                log::error!(target: "twistrs.mail.pop3", "{login}: cannot open the mailbox: {e}");
                err(out, "[SYS/TEMP] Cannot open the mailbox");
            }
        }
    }

    /// The message asked for with [`Action::Send`] went out (`Ok`), or could not be read
    /// before anything was sent (`Err`: the client gets -ERR).
    pub fn sent(&mut self, result: Result<(), String>, out: &mut Vec<u8>) {
        let State::Sending { login, mbox } = std::mem::replace(&mut self.s.state, State::Closed)
        else {
            return;
        };
        if let Err(e) = result {
            log::error!(target: "twistrs.mail.pop3", "{login}: {e}");
            err(out, "Cannot read the message");
        }
        self.s.state = State::Transaction { login, mbox };
    }

    /// Reading a message found it moved by another reader of the Maildir, and with it where
    /// every message is now: the mailbox follows them all.
    pub fn relocated(&mut self, now: &Whereabouts) {
        if let State::Transaction { mbox, .. } | State::Sending { mbox, .. } = &mut self.s.state {
            mbox.follow(now);
        }
    }

    /// UPDATE finished; `failed` files could not be removed. The lock goes now.
    pub fn updated(&mut self, failed: usize, out: &mut Vec<u8>) -> Option<Action> {
        if !matches!(self.s.state, State::Updating { .. }) {
            return None;
        }
        if failed == 0 {
            ok(out, "Bye");
        } else {
            err(out, "Some deleted messages were not removed");
        }
        self.s.state = State::Closed;
        Some(Action::Close)
    }
}

/// The index of message `n` (1-based) if it exists and is not deleted.
fn pick(
    mbox: &Mailbox,
    n: Option<Result<usize, std::num::ParseIntError>>,
) -> Result<usize, &'static str> {
    match n {
        Some(Ok(i)) if i >= 1 && i <= mbox.msgs.len() && !mbox.msgs[i - 1].deleted => Ok(i - 1),
        Some(Ok(_)) => Err("No such message"),
        _ => Err("Bad message number"),
    }
}

impl Session {
    fn command(&mut self, cmd: &str, arg: &str, out: &mut Vec<u8>) -> Option<Action> {
        if cmd == "CAPA" {
            self.capa(out);
            return None;
        }
        if cmd == "NOOP" && !matches!(self.state, State::Auth { .. }) {
            ok(out, "");
            return None;
        }
        match &mut self.state {
            State::Auth { user } => match cmd {
                "STLS" => return self.stls(out),
                "USER" | "PASS" if !self.tls.allows_auth(&self.cfg) => {
                    // dovecot's words for disable_plaintext_auth.
                    err(
                        out,
                        "[AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.",
                    );
                }
                "APOP" if !self.tls.allows_auth(&self.cfg) => {
                    err(
                        out,
                        "[AUTH] Authentication disallowed on non-secure (SSL/TLS) connections.",
                    );
                }
                "USER" if !arg.is_empty() => {
                    *user = Some(arg.to_string());
                    ok(out, "USER accepted, send PASS");
                }
                "PASS" => match user.take() {
                    None => err(out, "USER required"),
                    Some(u) => {
                        let good = self
                            .cfg
                            .pop3_user(&u)
                            .and_then(|(d, name)| d.password(&name))
                            .is_some_and(|p| p == arg);
                        return self.login(u, good, out);
                    }
                },
                "APOP" => {
                    let (name, digest) = arg.split_once(' ').unwrap_or((arg, ""));
                    let good = self
                        .cfg
                        .pop3_user(name)
                        .and_then(|(d, n)| d.password(&n))
                        .is_some_and(|p| {
                            let want = md5::compute(format!("{}{p}", self.banner));
                            format!("{want:x}") == digest.trim().to_ascii_lowercase()
                        });
                    return self.login(name.to_string(), good, out);
                }
                "QUIT" => {
                    ok(out, "Bye");
                    self.state = State::Closed;
                    return Some(Action::Close);
                }
                _ => err(out, "Authentication required"),
            },
            State::Transaction { .. } => return self.transaction(cmd, arg, out),
            State::Opening(_) | State::Sending { .. } | State::Updating { .. } | State::Closed => {}
        }
        None
    }

    /// CAPA (RFC 2449): USER only where a login may go ahead, STLS only before one and only
    /// where it can upgrade (RFC 2595 4).
    fn capa(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"+OK Capability list follows\r\nTOP\r\n");
        if self.tls.allows_auth(&self.cfg) {
            out.extend_from_slice(b"USER\r\n");
        }
        out.extend_from_slice(b"UIDL\r\nRESP-CODES\r\nPIPELINING\r\n");
        if self.tls == Tls::Offered && matches!(self.state, State::Auth { .. }) {
            out.extend_from_slice(b"STLS\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }

    /// STLS in AUTHORIZATION: `+OK`, then TLS; the state stays AUTHORIZATION and a USER given
    /// before is forgotten.
    fn stls(&mut self, out: &mut Vec<u8>) -> Option<Action> {
        match self.tls {
            Tls::Active => err(out, "Command not permitted when TLS active"),
            Tls::Unavailable => err(out, "TLS not available"),
            Tls::Offered => {
                ok(out, "Begin TLS negotiation");
                self.state = State::Auth { user: None };
                self.tls = Tls::Active;
                return Some(Action::StartTls);
            }
        }
        None
    }

    /// A command in the TRANSACTION state.
    fn transaction(&mut self, cmd: &str, arg: &str, out: &mut Vec<u8>) -> Option<Action> {
        let State::Transaction { mbox, .. } = &mut self.state else {
            return None;
        };
        let n = arg.split_whitespace().next().map(str::parse::<usize>);
        match cmd {
            "STAT" => {
                let live = mbox.msgs.iter().filter(|m| !m.deleted);
                let (count, size) = live.fold((0, 0), |(c, s), m| (c + 1, s + m.size));
                ok(out, &format!("{count} {size}"));
            }
            "LIST" | "UIDL" => {
                let field = |i: usize, m: &Message| {
                    if cmd == "LIST" {
                        format!("{} {}", i + 1, m.size)
                    } else {
                        format!("{} {}", i + 1, m.uid)
                    }
                };
                if arg.is_empty() {
                    ok(out, "");
                    for (i, m) in mbox.msgs.iter().enumerate().filter(|(_, m)| !m.deleted) {
                        out.extend_from_slice(format!("{}\r\n", field(i, m)).as_bytes());
                    }
                    out.extend_from_slice(b".\r\n");
                } else {
                    match pick(mbox, n) {
                        Ok(i) => ok(out, &field(i, &mbox.msgs[i])),
                        Err(e) => err(out, e),
                    }
                }
            }
            "RETR" | "TOP" => {
                let top = if cmd == "TOP" {
                    match arg.split_whitespace().nth(1).map(str::parse::<usize>) {
                        Some(Ok(k)) => Some(k),
                        _ => {
                            err(out, "Usage: TOP msg lines");
                            return None;
                        }
                    }
                } else {
                    None
                };
                match pick(mbox, n) {
                    Ok(i) => {
                        let m = &mbox.msgs[i];
                        let action = Action::Send {
                            path: m.path.clone(),
                            size: m.size,
                            top,
                        };
                        if let State::Transaction { login, mbox } =
                            std::mem::replace(&mut self.state, State::Closed)
                        {
                            self.state = State::Sending { login, mbox };
                        }
                        return Some(action);
                    }
                    Err(e) => err(out, e),
                }
            }
            "DELE" => match pick(mbox, n) {
                Ok(i) => {
                    mbox.msgs[i].deleted = true;
                    ok(out, &format!("message {} deleted", i + 1));
                }
                Err(e) => err(out, e),
            },
            "RSET" => {
                for m in &mut mbox.msgs {
                    m.deleted = false;
                }
                ok(out, "");
            }
            "STLS" => err(out, "Command not permitted in TRANSACTION state"),
            "QUIT" => {
                // UPDATE: deletions take effect now, and only now.
                let gone: Vec<PathBuf> = mbox
                    .msgs
                    .iter()
                    .filter(|m| m.deleted)
                    .map(|m| m.path.clone())
                    .collect();
                if let State::Transaction { mbox, .. } =
                    std::mem::replace(&mut self.state, State::Closed)
                {
                    self.state = State::Updating { _held: mbox };
                }
                return Some(Action::Update(gone));
            }
            _ => err(out, "Unknown command"),
        }
        None
    }

    fn login(&mut self, login: String, good: bool, out: &mut Vec<u8>) -> Option<Action> {
        if !good {
            crate::metrics::with(|m| m.pop3_failed.inc());
            self.failures += 1;
            log::info!(target: "twistrs.mail.pop3", "authentication failed for {login:?}");
            let mut reply = Vec::new();
            err(&mut reply, "Authentication failed");
            if self.failures >= MAX_FAILURES {
                self.state = State::Closed;
                out.extend_from_slice(&reply);
                return Some(Action::Close);
            }
            return Some(Action::Delay(self.cfg.fail_delay, reply));
        }
        let Some((dom, user)) = self.cfg.pop3_user(&login) else {
            crate::metrics::with(|m| m.pop3_failed.inc());
            err(out, "Authentication failed");
            return None;
        };
        let dir = dom.path.join(&user);
        self.state = State::Opening(login);
        Some(Action::Open(dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture;
    use crate::mailbox::scan as read_mailbox;
    use crate::maildir::{Job, deliver_batch};

    fn setup(dir: &std::path::Path) -> Rc<MailConfig> {
        let d = fixture::example_domain(dir);
        let path = d.path.clone();
        let jobs: Vec<Job> = ["one", "two"]
            .iter()
            .map(|s| Job {
                sender: String::new(),
                head: String::new(),
                data: format!("Subject: {s}\n\n.{s}\n").into_bytes(),
                targets: vec![(path.join("joe"), "joe@example.com".into())],
                memory: Default::default(),
                receipt: Default::default(),
            })
            .collect();
        assert!(deliver_batch(&jobs, "h").iter().all(Result::is_ok));
        Rc::new(MailConfig {
            default: Some(0),
            ..fixture::config(vec![d])
        })
    }

    /// Carries out one action at once, as the reactor side does on worker threads; true
    /// when the session is over.
    fn carry_out(p: &mut Pop3, action: Action, out: &mut Vec<u8>) -> bool {
        match action {
            Action::Delay(_, r) => out.extend_from_slice(&r),
            Action::Close => return true,
            Action::Open(dir) => p.opened(crate::mailbox::open(&dir), out),
            Action::Send { path, size, top } => match crate::mailbox::open_message(&path) {
                Ok((mut file, moved)) => {
                    if let Some(now) = moved {
                        p.relocated(&now);
                    }
                    let mut data = Vec::new();
                    std::io::Read::read_to_end(&mut file, &mut data).unwrap();
                    out.extend_from_slice(format!("+OK {size} octets\r\n").as_bytes());
                    let mut e = crate::mailbox::Encoder::new(top);
                    e.feed(&data, out);
                    e.finish(out);
                    p.sent(Ok(()), out);
                }
                Err(e) => p.sent(Err(e.to_string()), out),
            },
            Action::Update(paths) => {
                let failed = paths
                    .iter()
                    .filter(|p| std::fs::remove_file(p).is_err())
                    .count();
                return p.updated(failed, out).is_some();
            }
            // The handshake is taken as done: what is fed next came over TLS.
            Action::StartTls => {}
        }
        false
    }

    fn run(cfg: Rc<MailConfig>, input: &[u8], chunk: usize) -> String {
        let tls = Tls::of(&cfg, false);
        let parts: Vec<&[u8]> = input.chunks(chunk).collect();
        run_parts(cfg, tls, &parts).0
    }

    /// A session fed `parts` one after another, with TLS as given; also how many STLS
    /// upgrades there were.
    fn run_parts(cfg: Rc<MailConfig>, tls: Tls, parts: &[&[u8]]) -> (String, usize) {
        let mut p = Pop3::new(cfg, "<1.2@h>".into());
        p.set_tls(tls);
        let mut out = Vec::new();
        let mut upgrades = 0;
        p.greeting(&mut out);
        'outer: for piece in parts {
            p.feed(piece);
            while let Some(a) = p.step(&mut out) {
                upgrades += usize::from(matches!(a, Action::StartTls));
                if carry_out(&mut p, a, &mut out) {
                    break 'outer;
                }
            }
        }
        (String::from_utf8(out).unwrap(), upgrades)
    }

    #[test]
    fn a_session_in_every_chunking_and_deletes_at_quit() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path());
        let input = b"CAPA\r\nUSER joe@example.com\r\nPASS secret\r\nSTAT\r\nLIST\r\nUIDL 2\r\nTOP 1 0\r\nRETR 2\r\nDELE 1\r\nRETR 1\r\nRSET\r\nDELE 2\r\nNOOP\r\n";
        let first = run(cfg.clone(), input, input.len());
        assert!(first.contains("+OK Maildrop has 2 messages"), "{first}");
        assert!(first.contains("+OK 2 "), "{first}");
        assert!(first.contains("..two\r\n.\r\n"), "byte-stuffed: {first}");
        assert!(
            first.contains("-ERR No such message"),
            "deleted messages are gone from view"
        );
        for chunk in 1..input.len() {
            assert_eq!(run(cfg.clone(), input, chunk), first, "chunk {chunk}");
        }
        // No QUIT: nothing was removed. With QUIT: message 2 goes.
        let joe = dir.path().join("example.com/joe");
        assert_eq!(read_mailbox(&joe).unwrap().len(), 2);
        let out = run(
            cfg.clone(),
            b"USER joe\r\nPASS secret\r\nDELE 2\r\nQUIT\r\n",
            5,
        );
        assert!(out.ends_with("+OK Bye\r\n"), "{out}");
        let left = read_mailbox(&joe).unwrap();
        assert_eq!(left.len(), 1);
        assert!(
            std::fs::read_to_string(&left[0].path)
                .unwrap()
                .contains("Subject: one")
        );
    }

    /// A message of `lines` lines, some beginning with a dot, put in joe's new/ after the
    /// two `setup` delivered (as another program would); its POP3 form, whole.
    fn add_big(dir: &std::path::Path, lines: usize) -> (PathBuf, Vec<u8>) {
        let mut data = b"Subject: big\n\n".to_vec();
        for i in 0..lines {
            let dot = if i % 7 == 0 { "." } else { "" };
            data.extend_from_slice(format!("{dot}line {i} of the big one\n").as_bytes());
        }
        let path = dir.join("example.com/joe/new/9999999999.M1P1Q1.big");
        std::fs::write(&path, &data).unwrap();
        let mut want = Vec::new();
        let mut e = crate::mailbox::Encoder::new(None);
        e.feed(&data, &mut want);
        e.finish(&mut want);
        (path, want)
    }

    /// The replies in `out` (after the greeting) cut one per command of `cmds`: multi-line
    /// ones (CAPA, LIST and UIDL without an argument, RETR, TOP) up to their final dot.
    fn replies(out: &[u8], cmds: &[&str]) -> Vec<Vec<u8>> {
        let line_end = |from: usize| {
            out[from..]
                .windows(2)
                .position(|w| w == b"\r\n")
                .map(|n| from + n + 2)
        };
        let mut at = line_end(0).expect("a greeting");
        let mut got = Vec::new();
        for cmd in cmds {
            let Some(mut end) = line_end(at) else { break };
            let multi = ["CAPA", "LIST", "UIDL", "RETR", "TOP"]
                .iter()
                .any(|m| cmd.starts_with(m))
                && !matches!(*cmd, "LIST 1" | "UIDL 1")
                && out[at..].starts_with(b"+OK");
            // Lines after the first up to one that is a dot alone.
            let mut line = end;
            while multi && &out[line..end] != b".\r\n" {
                line = end;
                end = line_end(end).expect("a multi-line reply's end");
            }
            got.push(out[at..end].to_vec());
            at = end;
        }
        assert_eq!(at, out.len(), "nothing after the last reply");
        got
    }

    /// A session whose disk work (the mailbox opened at PASS, each message read, QUIT's
    /// removals) is carried out only once `lag` more pieces of input have arrived, or the
    /// input is all in: the commands pipelined behind each wait are buffered meanwhile.
    fn run_lagging(cfg: Rc<MailConfig>, input: &[u8], chunk: usize, lag: usize) -> String {
        let mut p = Pop3::new(cfg, "<1.2@h>".into());
        let mut out = Vec::new();
        p.greeting(&mut out);
        let pieces: Vec<&[u8]> = input.chunks(chunk).collect();
        let (mut next, mut pending) = (0, None::<(Action, usize)>);
        // Each turn feeds a piece or carries out an action: bounded by their number.
        for _ in 0..10 * (pieces.len() + 100) {
            if let Some((_, fed)) = &pending
                && (*fed >= lag || next == pieces.len())
            {
                let (a, _) = pending.take().expect("pending");
                if carry_out(&mut p, a, &mut out) {
                    break;
                }
            }
            if pending.is_none()
                && let Some(a) = p.step(&mut out)
            {
                pending = Some((a, 0));
                continue;
            }
            if next == pieces.len() {
                if pending.is_none() {
                    break;
                }
                continue;
            }
            p.feed(pieces[next]);
            next += 1;
            if let Some((_, fed)) = &mut pending {
                *fed += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// RFC 2449 6.6: commands sent together, without waiting, are answered in order, each
    /// one once, whatever the cuts between them and whenever the disk work (opening the
    /// mailbox, reading a large message, QUIT's removals) finishes with more commands
    /// already buffered behind it; what follows QUIT is not answered.
    #[test]
    fn a_pipelined_session_is_answered_in_order_however_cut_and_whenever_the_disk_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path());
        let (big, big_pop3) = add_big(dir.path(), 6000);
        let joe = dir.path().join("example.com/joe");
        let first = read_mailbox(&joe).unwrap().remove(0);
        let first_data = std::fs::read(&first.path).unwrap();
        let cmds = [
            "CAPA",
            "USER joe@example.com",
            "PASS secret",
            "STAT",
            "LIST",
            "RETR 3",
            "UIDL 1",
            "TOP 1 0",
            "DELE 1",
            "NOOP",
            "LIST 1",
            "RETR 2",
            "QUIT",
            "NOOP",
        ];
        let input: String = cmds.iter().map(|c| format!("{c}\r\n")).collect();
        let input = input.as_bytes();
        let mut first_out = None;
        for lag in [0, 1, 3, usize::MAX] {
            for chunk in 1..=input.len() {
                let out = run_lagging(cfg.clone(), input, chunk, lag);
                // QUIT removed message 1: put it back for the next run.
                assert!(!first.path.exists(), "{lag}/{chunk}: removed at QUIT");
                std::fs::write(&first.path, &first_data).unwrap();
                match &first_out {
                    Some(f) => assert_eq!(&out, f, "lag {lag}, chunk {chunk}"),
                    None => first_out = Some(out),
                }
            }
        }
        let out = first_out.unwrap();
        let r = replies(out.as_bytes(), &cmds);
        let text = |i: usize| String::from_utf8_lossy(&r[i]).into_owned();
        assert_eq!(r.len(), cmds.len() - 1, "nothing after QUIT: {out}");
        assert!(text(0).contains("\r\nPIPELINING\r\n"), "{}", text(0));
        assert_eq!(text(1), "+OK USER accepted, send PASS\r\n");
        assert_eq!(text(2), "+OK Maildrop has 3 messages\r\n");
        let stored = std::fs::read(&big).unwrap();
        let size = stored.len() + stored.iter().filter(|&&b| b == b'\n').count();
        assert!(text(3).starts_with("+OK 3 ") && text(4).ends_with(&format!("3 {size}\r\n.\r\n")));
        let retr = format!("+OK {size} octets\r\n");
        assert_eq!(
            r[5],
            [retr.as_bytes(), &big_pop3].concat(),
            "the big one whole"
        );
        assert!(text(6).starts_with("+OK 1 "));
        assert!(text(7).starts_with("+OK ") && text(7).ends_with("Subject: one\r\n\r\n.\r\n"));
        assert_eq!(text(8), "+OK message 1 deleted\r\n");
        assert_eq!(text(9), "+OK \r\n");
        assert_eq!(text(10), "-ERR No such message\r\n", "deleted");
        assert!(text(11).ends_with("Subject: two\r\n\r\n..two\r\n.\r\n"));
        assert_eq!(text(12), "+OK Bye\r\n");
    }

    /// One step writes about [`STEP_OUTPUT`] of replies at most, then leaves the rest of
    /// the pipelined commands for the next: a client that sends a burst of LISTs of a large
    /// mailbox and reads nothing cannot make the server hold all their answers at once.
    #[test]
    fn a_step_stops_taking_commands_once_its_replies_fill_the_budget() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path());
        let new = dir.path().join("example.com/joe/new");
        for i in 0..1000 {
            std::fs::write(new.join(format!("9{i:04}.M1P1Q1.h")), "x\n").unwrap();
        }
        let mut p = Pop3::new(cfg, "<1.2@h>".into());
        let mut out = Vec::new();
        p.feed(b"USER joe\r\nPASS secret\r\n");
        let open = p.step(&mut out).expect("the mailbox is opened");
        assert!(!carry_out(&mut p, open, &mut out));
        let one_list = {
            let mut o = Vec::new();
            p.feed(b"LIST\r\n");
            assert!(p.step(&mut o).is_none());
            o.len()
        };
        p.feed(&b"LIST\r\n".repeat(200));
        let (mut calls, mut lists) = (0, 0);
        while p.pending_input() > 0 && calls < 1000 {
            let mut o = Vec::new();
            assert!(p.step(&mut o).is_none());
            assert!(
                o.len() < STEP_OUTPUT + one_list,
                "{} octets in one step",
                o.len()
            );
            lists += o.len() / one_list;
            calls += 1;
        }
        assert_eq!(lists, 200, "every LIST answered, in {calls} steps");
        assert!(
            calls >= 200 * one_list / (STEP_OUTPUT + one_list),
            "{calls} steps"
        );
    }

    /// Messages another reader moved to cur/ with flags after the login are retrieved and
    /// removed all the same; the session follows the listing the first RETR made.
    #[test]
    fn a_session_follows_messages_another_reader_moved() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path());
        let joe = dir.path().join("example.com/joe");
        let mut p = Pop3::new(cfg, "<1.2@h>".into());
        let mut out = Vec::new();
        p.feed(b"USER joe\r\nPASS secret\r\n");
        while let Some(a) = p.step(&mut out) {
            carry_out(&mut p, a, &mut out);
        }
        for e in std::fs::read_dir(joe.join("new")).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            std::fs::rename(
                joe.join("new").join(&name),
                joe.join(format!("cur/{name}:2,S")),
            )
            .unwrap();
        }
        p.feed(b"RETR 2\r\nRETR 1\r\nDELE 1\r\nDELE 2\r\nQUIT\r\n");
        while let Some(a) = p.step(&mut out) {
            if carry_out(&mut p, a, &mut out) {
                break;
            }
        }
        let out = String::from_utf8(out).unwrap();
        let (two, one) = (
            out.find("..two").expect(&out),
            out.find("..one").expect(&out),
        );
        assert!(two < one && out.ends_with("+OK Bye\r\n"), "{out}");
        assert!(
            read_mailbox(&joe).unwrap().is_empty(),
            "both removed from cur/"
        );
    }

    #[test]
    fn an_over_long_line_is_refused_and_the_session_goes_on() {
        let long = format!(
            "USER {}\r\nUSER joe\r\nPASS secret\r\nSTAT\r\n",
            "x".repeat(2000)
        );
        for chunk in [1, 7, 600, long.len()] {
            let dir = tempfile::tempdir().unwrap();
            let out = run(setup(dir.path()), long.as_bytes(), chunk);
            assert_eq!(
                out.matches("-ERR Line too long").count(),
                1,
                "chunk {chunk}: {out}"
            );
            assert!(out.contains("+OK 2 "), "chunk {chunk}: {out}");
        }
    }

    #[test]
    fn wrong_passwords_apop_and_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path());
        let out = run(
            cfg.clone(),
            b"USER joe\r\nPASS nope\r\nUSER joe\r\nPASS x\r\nUSER joe\r\nPASS y\r\nNOOP\r\n",
            4,
        );
        assert_eq!(
            out.matches("-ERR Authentication failed").count(),
            3,
            "{out}"
        );
        assert!(!out.contains("NOOP"), "closed after three failures");
        let digest = format!("{:x}", md5::compute("<1.2@h>secret"));
        let out = run(
            cfg.clone(),
            format!("APOP joe@example.com {digest}\r\nSTAT\r\n").as_bytes(),
            3,
        );
        assert!(out.contains("+OK Maildrop has 2"), "{out}");
        // A second session while the first holds the mailbox.
        let mut first = Pop3::new(cfg.clone(), "<b>".into());
        let mut o = Vec::new();
        first.feed(b"USER joe\r\nPASS secret\r\n");
        while let Some(a) = first.step(&mut o) {
            carry_out(&mut first, a, &mut o);
        }
        assert!(String::from_utf8_lossy(&o).contains("+OK Maildrop has 2"));
        let out = run(cfg, b"USER joe\r\nPASS secret\r\n", 100);
        assert!(out.contains("[IN-USE]"), "{out}");
    }

    const CAPA_TLS: &str =
        "+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\n.\r\n";

    #[test]
    fn stls_throws_away_what_followed_and_stays_in_authorization() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path());
        // Sent in plaintext before the handshake: an attacker's commands behind STLS, the
        // last one cut short.
        let before = "CAPA\r\nUSER joe@example.com\r\nSTLS\r\n";
        let whole = format!("{before}PASS secret\r\nDELE 1\r\nQUIT\r\nLI");
        // Over TLS.
        let after = b"ST\r\nPASS secret\r\nCAPA\r\nUSER joe@example.com\r\nPASS secret\r\nCAPA\r\nSTLS\r\nSTAT\r\n";
        let mut first = None;
        for k in 0..before.len() {
            for chunk in [1, 3, 7, 1000] {
                let mut parts: Vec<&[u8]> = whole.as_bytes()[..k].chunks(chunk).collect();
                parts.push(&whole.as_bytes()[k..]);
                parts.extend(after.chunks(chunk));
                let (out, upgrades) = run_parts(cfg.clone(), Tls::Offered, &parts);
                assert_eq!(upgrades, 1, "{k}/{chunk}: {out}");
                assert!(
                    out.contains("RESP-CODES\r\nPIPELINING\r\nSTLS\r\n.\r\n"),
                    "offered: {out}"
                );
                let at = out.find("+OK Begin TLS negotiation\r\n").expect(&out);
                let tls = &out[at + 27..];
                let want = format!(
                    "-ERR Authentication required\r\n-ERR USER required\r\n{CAPA_TLS}\
                     +OK USER accepted, send PASS\r\n+OK Maildrop has 2 messages\r\n{CAPA_TLS}\
                     -ERR Command not permitted in TRANSACTION state\r\n+OK 2 "
                );
                assert!(
                    tls.starts_with(&want),
                    "{k}/{chunk}: nothing injected ran, the USER was forgotten: {tls}"
                );
                match &first {
                    None => first = Some(out),
                    Some(f) => assert_eq!(&out, f, "{k}/{chunk}"),
                }
            }
        }
        let joe = dir.path().join("example.com/joe");
        assert_eq!(
            read_mailbox(&joe).unwrap().len(),
            2,
            "the injected DELE, QUIT never ran"
        );
    }

    #[test]
    fn stls_when_it_cannot_be() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = setup(dir.path());
        let (out, n) = run_parts(
            cfg.clone(),
            Tls::Unavailable,
            &[b"CAPA\r\n", b"STLS\r\n", b"NOOP\r\n"],
        );
        assert!(
            out.ends_with(&format!(
                "{CAPA_TLS}-ERR TLS not available\r\n-ERR Authentication required\r\n"
            )),
            "not offered, refused: {out}"
        );
        assert_eq!(n, 0);
        let (out, n) = run_parts(cfg.clone(), Tls::Active, &[b"CAPA\r\nSTLS\r\n"]);
        assert!(
            out.ends_with(&format!(
                "{CAPA_TLS}-ERR Command not permitted when TLS active\r\n"
            )),
            "{out}"
        );
        assert_eq!(n, 0);
    }

    #[test]
    fn auth_requires_tls_refuses_plaintext_logins() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Rc::new(MailConfig {
            auth_requires_tls: true,
            ..Rc::into_inner(setup(dir.path())).unwrap()
        });
        let digest = format!("{:x}", md5::compute("<1.2@h>secret"));
        let plaintext = format!(
            "CAPA\r\nUSER joe\r\nPASS secret\r\nAPOP joe {digest}\r\nUSER joe\r\nPASS secret\r\nSTLS\r\n"
        );
        let over_tls = b"CAPA\r\nUSER joe\r\nPASS secret\r\nSTAT\r\n";
        for chunk in [1, 4, 1000] {
            let mut parts: Vec<&[u8]> = plaintext.as_bytes().chunks(chunk).collect();
            parts.extend(over_tls.chunks(chunk));
            let (out, n) = run_parts(cfg.clone(), Tls::Offered, &parts);
            assert_eq!(n, 1);
            let (plain, tls) = out.split_at(out.find("+OK Begin TLS").expect(&out));
            assert!(
                plain.contains(
                    "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nSTLS\r\n.\r\n"
                ),
                "no USER before TLS: {plain}"
            );
            let refused = "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n";
            assert_eq!(plain.matches(refused).count(), 4, "{plain}");
            assert!(
                plain.contains(
                    "-ERR [AUTH] Authentication disallowed on non-secure (SSL/TLS) connections.\r\n"
                ),
                "APOP: {plain}"
            );
            assert!(
                !plain.contains("Authentication failed"),
                "not counted as failures"
            );
            assert!(tls.contains(CAPA_TLS), "USER after TLS: {tls}");
            assert!(
                tls.contains("+OK Maildrop has 2") && tls.contains("+OK 2 "),
                "{tls}"
            );
        }
        let (out, _) = run_parts(cfg, Tls::Active, &[b"USER joe\r\nPASS secret\r\n"]);
        assert!(
            out.contains("+OK Maildrop has 2"),
            "over an ssl: endpoint: {out}"
        );
    }
}
