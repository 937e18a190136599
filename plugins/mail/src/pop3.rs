//! The sans-IO POP3 session (RFC 1939, CAPA from RFC 2449): lines in, replies out.
//!
//! AUTHORIZATION takes USER/PASS (`user@domain`, or a bare user of the default domain) or
//! APOP; TRANSACTION locks the mailbox (flock on a file inside it, so two sessions, even of two
//! processes during a restart, never share it) and serves STAT, LIST, UIDL, RETR, TOP, DELE,
//! RSET, NOOP; QUIT enters UPDATE and only then removes what was deleted.

use std::fs::File;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use crate::config::MailConfig;
use crate::maildir::{Message, pop3_body, read_mailbox};

/// Command lines longer than this are refused (RFC 2449 allows 255 octets of arguments).
const MAX_LINE: usize = 512;
/// Failed logins before the connection is closed.
const MAX_FAILURES: u32 = 3;

/// What the caller must do.
#[derive(Debug)]
pub enum Action {
    /// Send `reply` after `delay` (a failed login), then carry on.
    Delay(Duration, Vec<u8>),
    /// Close once the replies are flushed.
    Close,
}

struct Mailbox {
    msgs: Vec<Message>,
    _lock: nix::fcntl::Flock<File>,
}

enum State {
    Auth { user: Option<String> },
    Transaction { login: String, mbox: Mailbox },
    Closed,
}

/// One POP3 session.
pub struct Pop3 {
    cfg: Rc<MailConfig>,
    banner: String,
    input: Vec<u8>,
    skipping: bool,
    state: State,
    failures: u32,
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
            cfg,
            banner,
            input: Vec::new(),
            skipping: false,
            state: State::Auth { user: None },
            failures: 0,
        }
    }

    pub fn greeting(&self, out: &mut Vec<u8>) {
        ok(out, &self.banner);
    }

    pub fn feed(&mut self, data: &[u8]) {
        if !matches!(self.state, State::Closed) {
            self.input.extend_from_slice(data);
        }
    }

    /// Processes whole lines until an action is needed or more input is.
    pub fn step(&mut self, out: &mut Vec<u8>) -> Option<Action> {
        loop {
            if matches!(self.state, State::Closed) {
                return None;
            }
            let line = match self.input.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    let l: Vec<u8> = self.input.drain(..=i).collect();
                    if std::mem::take(&mut self.skipping) || l.len() > MAX_LINE {
                        err(out, "Line too long");
                        continue;
                    }
                    l
                }
                None => {
                    if self.input.len() > MAX_LINE {
                        self.input.clear();
                        self.skipping = true;
                    }
                    return None;
                }
            };
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\r', '\n']);
            let (cmd, arg) = text.split_once(' ').unwrap_or((text, ""));
            if let Some(a) = self.command(&cmd.to_ascii_uppercase(), arg.trim(), out) {
                return Some(a);
            }
        }
    }

    fn command(&mut self, cmd: &str, arg: &str, out: &mut Vec<u8>) -> Option<Action> {
        if cmd == "CAPA" {
            out.extend_from_slice(
                b"+OK Capability list follows\r\nTOP\r\nUSER\r\nUIDL\r\nRESP-CODES\r\n.\r\n",
            );
            return None;
        }
        if cmd == "NOOP" && !matches!(self.state, State::Auth { .. }) {
            ok(out, "");
            return None;
        }
        match &mut self.state {
            State::Auth { user } => match cmd {
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
            State::Transaction { login, mbox } => {
                let n = arg.split_whitespace().next().map(str::parse::<usize>);
                let pick =
                    |mbox: &Mailbox, n: Option<Result<usize, _>>| -> Result<usize, &'static str> {
                        match n {
                            Some(Ok(i))
                                if i >= 1 && i <= mbox.msgs.len() && !mbox.msgs[i - 1].deleted =>
                            {
                                Ok(i - 1)
                            }
                            Some(Ok(_)) => Err("No such message"),
                            _ => Err("Bad message number"),
                        }
                    };
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
                        let lines = if cmd == "TOP" {
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
                            Ok(i) => match std::fs::read(&mbox.msgs[i].path) {
                                Ok(data) => {
                                    ok(out, &format!("{} octets", mbox.msgs[i].size));
                                    out.extend_from_slice(&pop3_body(&data, lines));
                                }
                                Err(e) => {
                                    log::error!(target: "twistrs.mail.pop3", "{login}: {e}");
                                    err(out, "Cannot read the message");
                                }
                            },
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
                    "QUIT" => {
                        // UPDATE: deletions take effect now, and only now.
                        let mut failed = 0;
                        for m in mbox.msgs.iter().filter(|m| m.deleted) {
                            if std::fs::remove_file(&m.path).is_err() {
                                failed += 1;
                            }
                        }
                        if failed == 0 {
                            ok(out, "Bye");
                        } else {
                            err(out, "Some deleted messages were not removed");
                        }
                        self.state = State::Closed;
                        return Some(Action::Close);
                    }
                    _ => err(out, "Unknown command"),
                }
            }
            State::Closed => {}
        }
        None
    }

    fn login(&mut self, login: String, good: bool, out: &mut Vec<u8>) -> Option<Action> {
        if !good {
            self.failures += 1;
            log::info!(target: "twistrs.mail.pop3", "authentication failed for {login:?}");
            let mut reply = Vec::new();
            err(&mut reply, "Authentication failed");
            if self.failures >= MAX_FAILURES {
                self.state = State::Closed;
                out.extend_from_slice(&reply);
                return Some(Action::Close);
            }
            return Some(Action::Delay(self.cfg.pop3_fail_delay, reply));
        }
        let Some((dom, user)) = self.cfg.pop3_user(&login) else {
            err(out, "Authentication failed");
            return None;
        };
        let dir: PathBuf = dom.path.join(&user);
        let lock = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(".twistrs-pop3.lock"))
            .map_err(|e| e.to_string())
            .and_then(|f| {
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
                    .map_err(|(_, e)| e.to_string())
            });
        let lock = match lock {
            Ok(l) => l,
            Err(_) => {
                err(out, "[IN-USE] Mailbox is locked by another session");
                return None;
            }
        };
        match read_mailbox(&dir) {
            Ok(msgs) => {
                ok(out, &format!("Maildrop has {} messages", msgs.len()));
                self.state = State::Transaction {
                    login,
                    mbox: Mailbox { msgs, _lock: lock },
                };
            }
            Err(e) => {
                log::error!(target: "twistrs.mail.pop3", "{}: {e}", dir.display());
                err(out, "[SYS/TEMP] Cannot open the mailbox");
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture;
    use crate::maildir::{Job, deliver_batch};

    fn setup(dir: &std::path::Path) -> Rc<MailConfig> {
        let d = fixture::example_domain(dir);
        let path = d.path.clone();
        let jobs: Vec<Job> = ["one", "two"]
            .iter()
            .map(|s| Job {
                data: format!("Subject: {s}\n\n.{s}\n").into_bytes(),
                targets: vec![(path.join("joe"), "joe@example.com".into())],
            })
            .collect();
        assert!(deliver_batch(&jobs, "h").iter().all(Result::is_ok));
        Rc::new(MailConfig {
            default: Some(0),
            ..fixture::config(vec![d])
        })
    }

    fn run(cfg: Rc<MailConfig>, input: &[u8], chunk: usize) -> String {
        let mut p = Pop3::new(cfg, "<1.2@h>".into());
        let mut out = Vec::new();
        p.greeting(&mut out);
        'outer: for piece in input.chunks(chunk) {
            p.feed(piece);
            loop {
                match p.step(&mut out) {
                    Some(Action::Delay(_, r)) => out.extend_from_slice(&r),
                    Some(Action::Close) => break 'outer,
                    None => break,
                }
            }
        }
        String::from_utf8(out).unwrap()
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
        first.step(&mut o);
        let out = run(cfg, b"USER joe\r\nPASS secret\r\n", 100);
        assert!(out.contains("[IN-USE]"), "{out}");
    }
}
