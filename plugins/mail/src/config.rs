//! Mail domains, users and aliases, stored as twistd lays them out.
//!
//! A domain given with `-d NAME=PATH` keeps its passwords in `PATH/passwd/` (twistd's DirDBM:
//! one file per user, named with base64 where `\n` is `_` and `/` is `-`, holding the password)
//! and one Maildir per user at `PATH/USER/{new,cur,tmp}`. Both are read when needed, so users
//! added to the directory while the server runs are seen, as with twistd.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine;
use twistrs_core::tls::TlsContext;

use crate::dirfd::Dir;
use crate::memory::DataMemory;

/// One virtual domain.
#[derive(Debug)]
pub struct Domain {
    pub name: String,
    pub path: PathBuf,
    pub aliases: Option<Aliases>,
    pub bounce_to_postmaster: bool,
    /// The users by case-folded name, as of passwd/'s mtime (`find_user`).
    pub folded: Folded,
}

/// `passwd/`'s mtime when it was listed, and each folded user name with the one user it
/// stands for (`None` for two that differ by case alone).
pub type Folded = std::cell::RefCell<(
    Option<std::time::SystemTime>,
    HashMap<String, Option<String>>,
)>;

/// The parsed file and the mtime it was read at.
type Loaded = (Option<SystemTime>, HashMap<String, Vec<String>>);

/// An aliases(5) file, reloaded when it changes.
#[derive(Debug)]
pub struct Aliases {
    pub path: PathBuf,
    loaded: std::cell::RefCell<Loaded>,
}

/// The whole mail configuration.
#[derive(Debug)]
pub struct MailConfig {
    pub domains: Vec<Domain>,
    /// The domain for addresses in no other domain, and for bare POP3 user names.
    pub default: Option<usize>,
    pub hostname: String,
    pub esmtp: bool,
    /// SMTP AUTH credentials (`--auth file:` and `memory:`).
    pub auth: Option<HashMap<String, String>>,
    pub max_message: usize,
    /// The process's budget for message data in memory (`--max-data-memory`), shared by
    /// every SMTP session.
    pub data_memory: Arc<DataMemory>,
    pub max_recipients: usize,
    pub max_errors: u32,
    pub timeout: Duration,
    /// POP3's idle time: `--timeout` where given, else at least RFC 1939's ten minutes.
    pub pop3_timeout: Duration,
    /// How long the answer to a failed login waits (POP3 USER/PASS, APOP; SMTP AUTH), as
    /// dovecot's `auth_failure_delay`: a password guesser gets one try a second per session.
    pub fail_delay: Duration,
    /// The certificate for STARTTLS and STLS (`--certificate`, `--privkey`).
    pub tls: Option<Rc<TlsContext>>,
    /// Refuse AUTH, USER, PASS and APOP on connections that are not TLS
    /// (`--auth-requires-tls`).
    pub auth_requires_tls: bool,
}

/// What a session has of TLS: it decides what is advertised, what a login may do, and the
/// `Received:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tls {
    /// Plaintext, and no certificate to upgrade with.
    Unavailable,
    /// Plaintext; STARTTLS/STLS can upgrade it.
    Offered,
    /// TLS: an `ssl:`/`tls:` endpoint, or upgraded.
    Active,
}

impl Tls {
    /// A new connection's: `secure` if it came through a TLS endpoint.
    pub fn of(cfg: &MailConfig, secure: bool) -> Tls {
        match (secure, cfg.tls.is_some()) {
            (true, _) => Tls::Active,
            (false, true) => Tls::Offered,
            (false, false) => Tls::Unavailable,
        }
    }

    /// True when a login may go ahead here.
    pub fn allows_auth(self, cfg: &MailConfig) -> bool {
        self == Tls::Active || !cfg.auth_requires_tls
    }
}

/// The key a user or alias name is matched by whatever its case. An ASCII name is in ASCII
/// lower case, as it always was; a name with other letters is in Unicode lower case, so a
/// local part in another case reaches the same Maildir, as postfix 3.7 (`smtputf8_enable`)
/// takes it: `ÖLAF` and `Ölaf` reach `ölaf`, `ΣΟΦΊΑ` reaches `σοφία`. Not postfix's full
/// case folding (ICU's), where `ß` is `ss`: `STRASSE`, an ASCII name, would then reach
/// `straße`, and an ASCII name's match must not depend on the non-ASCII users. For the same
/// reason a name that lower-cases to ASCII (the Kelvin sign is `k`) keeps the ASCII rule.
/// Users whose names meet are each reached only as written ([`Domain::find_user`]);
/// aliases whose names meet are joined, as `Team` and `team` always were.
pub fn fold(name: &str) -> String {
    if !name.is_ascii() {
        let lower = name.to_lowercase();
        if !lower.is_ascii() {
            return lower;
        }
    }
    name.to_ascii_lowercase()
}

/// The user a DirDBM file name stands for (the inverse of [`dirdbm_name`]), if it is one.
fn dirdbm_key(name: &str) -> Option<String> {
    let b64: String = name
        .strip_suffix('_')?
        .chars()
        .filter(|&c| c != '_')
        .map(|c| if c == '-' { '/' } else { c })
        .collect();
    let key = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(key).ok()
}

/// twistd's DirDBM file name for a key: Python's `base64.encodebytes` (a newline after every
/// 76 characters and at the end), then `\n` -> `_` and `/` -> `-`.
pub fn dirdbm_name(key: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(key.as_bytes());
    let mut out = String::new();
    for (i, c) in b64.chars().enumerate() {
        if i > 0 && i % 76 == 0 {
            out.push('_');
        }
        out.push(match c {
            '/' => '-',
            c => c,
        });
    }
    out.push('_');
    out
}

/// What `-d` and `-u` do with the files they name: make them (a start), or check that a
/// start could (`--check`, which writes nothing the running server may be using). One code
/// path takes both, so a check fails where the start would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    Make,
    Check,
}

impl Setup {
    /// A start's; a check's while the launcher runs `--check`.
    pub fn now() -> Setup {
        if twistrs_core::plugin::checking() {
            Setup::Check
        } else {
            Setup::Make
        }
    }

    /// Makes the domain directory `path` and its `passwd/` (and the directories above, as
    /// `create_dir_all`), or checks that a start could. The two a start makes are given to
    /// the `-u` user ([`Dir::make_top`]); those above are not the domain's and stay as made.
    /// `passwd/` is made by descriptor: a link the user put there is refused.
    pub fn domain(self, path: &Path) -> std::io::Result<()> {
        match self {
            Setup::Make => {
                if let Some(up) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(up)?;
                }
                Dir::make_top(path, 0o777)?.make_dir("passwd", 0o777)?;
                Ok(())
            }
            Setup::Check => could_create(&path.join("passwd")),
        }
    }
}

/// A check's stand-in for writing a file into `dir`, which the check may not have made:
/// `dir` writable if it is there, else creatable.
fn could_write_in(dir: &Path) -> std::io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(_) => twistrs_core::plugin::writable_dir(dir),
        Err(_) => could_create(dir),
    }
}

/// The directories of a Maildir, with twistd's `.Trash` folder beside them.
const MAILDIR: [&str; 6] = [
    "new",
    "cur",
    "tmp",
    ".Trash/new",
    ".Trash/cur",
    ".Trash/tmp",
];

/// Creates a Maildir (`new`, `cur`, `tmp`) and twistd's `.Trash` beside them.
pub fn make_maildir(dir: &Path) -> std::io::Result<()> {
    maildir(dir, Setup::Make)
}

/// Why a Maildir must be the service's: the warning's words.
const MAILDIR_USE: &str = "delivery and POP3 make, rename and remove files in it";

fn maildir(dir: &Path, how: Setup) -> std::io::Result<()> {
    match how {
        Setup::Make => {
            let up = dir.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(up) = up {
                std::fs::create_dir_all(up)?;
            }
            let name = dir.file_name().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{} names no directory", dir.display()),
                )
            })?;
            return maildir_in(&Dir::open(up.unwrap_or(Path::new(".")))?, name);
        }
        Setup::Check => {
            for sub in MAILDIR {
                could_create(&dir.join(sub))?;
            }
            if !dir.join(".Trash/maildirfolder").exists() {
                could_write_in(&dir.join(".Trash"))?;
            }
        }
    }
    note_maildir(dir);
    Ok(())
}

/// Makes the Maildir `name` in `up`, each directory by descriptor (the Maildir may be the
/// `-u` user's, and root must not follow a link the user put in it). Only what this call
/// made is noted to be given to that user.
fn maildir_in(up: &Dir, name: &std::ffi::OsStr) -> std::io::Result<()> {
    let dir = up.make_dir(name, 0o700)?;
    let trash = dir.make_dir(".Trash", 0o700)?;
    for sub in ["new", "cur", "tmp"] {
        dir.make_dir(sub, 0o700)?;
    }
    for sub in ["new", "cur", "tmp"] {
        trash.make_dir(sub, 0o700)?;
    }
    match trash.create_file("maildirfolder", 0o666) {
        Ok(f) => twistrs_core::reread::note_created(&f),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    note_maildir(dir.path());
    Ok(())
}

/// Notes what delivery and POP3 use of the Maildir `dir`, to be tried as the -u user once the
/// launcher has dropped to it: made by this start, it is that user's; there before, it may be
/// root's.
pub fn note_maildir(dir: &Path) {
    for p in [
        dir.to_path_buf(),
        dir.join("tmp"),
        dir.join("new"),
        dir.join("cur"),
        dir.join(crate::mailbox::LOCK),
    ] {
        twistrs_core::reread::note_writes(&p, MAILDIR_USE);
    }
}

/// Whether `create_dir_all(dir)` could succeed, without making anything: `dir` is a
/// directory, or its nearest existing ancestor is one we may write (`--check`).
pub fn could_create(dir: &Path) -> std::io::Result<()> {
    let mut at = dir;
    loop {
        match std::fs::metadata(at) {
            Ok(md) if !md.is_dir() => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", at.display()),
                ));
            }
            Ok(_) if at == dir => return Ok(()),
            Ok(_) => {
                return twistrs_core::plugin::writable_dir(at).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match at.parent() {
                Some(p) if !p.as_os_str().is_empty() => at = p,
                _ => return Err(e),
            },
            Err(e) => return Err(e),
        }
    }
}

/// A user name that may name a directory: no separators, dots-only names or NUL.
pub fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && u != "."
        && u != ".."
        && !u.contains(['/', '\\', '\0', '\n', '\r'])
        && u.len() <= 255
}

/// Writes `pass` to `name` in `passwd` whole: aside (`NAME.PID.new`, as DirDBM writes
/// `NAME.new`), then renamed over the old, so no login reads a truncated file. The file is
/// new, never one found there (what the service put there must not be written through); the
/// leftover of a start that died here is removed first.
fn write_password(passwd: &Dir, name: &str, pass: &str) -> std::io::Result<()> {
    let tmp = format!("{name}.{}.new", std::process::id());
    let _ = passwd.remove(&tmp);
    let written = passwd.create_file(&tmp, 0o600).and_then(|mut f| {
        std::io::Write::write_all(&mut f, pass.as_bytes())?;
        passwd.rename(&tmp, name)?;
        // Made by this start: the -u user's, as the Maildir is.
        twistrs_core::reread::note_created(&f);
        Ok(())
    });
    if written.is_err() {
        let _ = passwd.remove(&tmp);
    }
    written
}

impl Domain {
    /// The stored password of `user`, if the user exists.
    pub fn password(&self, user: &str) -> Option<String> {
        if !valid_user(user) {
            return None;
        }
        std::fs::read_to_string(self.path.join("passwd").join(dirdbm_name(user))).ok()
    }

    /// True if `user` has an entry (one stat, no read).
    pub fn exists(&self, user: &str) -> bool {
        valid_user(user) && self.path.join("passwd").join(dirdbm_name(user)).is_file()
    }

    /// The stored name of user `u`: as given, else in lower case (`JOE` reaches `joe`), else
    /// the one user whose name is the same but for case ([`fold`]: `bob` reaches `Bob`,
    /// `ÖLAF` reaches `Ölaf`, as postfix folds the case of local parts), the same rule for
    /// SMTP recipients and POP3 logins.
    pub fn find_user(&self, u: &str) -> Option<String> {
        if self.exists(u) {
            return Some(u.to_string());
        }
        let lower = u.to_ascii_lowercase();
        if lower != u && self.exists(&lower) {
            return Some(lower);
        }
        if !valid_user(u) {
            return None;
        }
        // The users by folded name, listed again only when passwd/ has changed (users are
        // added while running), so a recipient unknown in any case costs a stat.
        let passwd = self.path.join("passwd");
        let mtime = std::fs::metadata(&passwd).and_then(|m| m.modified()).ok()?;
        let mut folded = self.folded.borrow_mut();
        if folded.0 != Some(mtime) {
            let mut map: HashMap<String, Option<String>> = HashMap::new();
            let keys = std::fs::read_dir(&passwd).ok()?.flatten();
            for k in keys.filter_map(|e| dirdbm_key(e.file_name().to_str()?)) {
                // Two users told apart by case alone: which one is meant cannot be known.
                map.entry(fold(&k))
                    .and_modify(|v| *v = None)
                    .or_insert(Some(k));
            }
            *folded = (Some(mtime), map);
        }
        folded
            .1
            .get(&fold(u))
            .cloned()
            .flatten()
            .filter(|k| self.exists(k))
    }

    /// Adds a user as twistd's `-u USER=PASS` does, or (`Setup::Check`) checks that it could
    /// be added, writing nothing. With `--workers`, every worker runs this at its start while
    /// the others read the file at logins: an unchanged password is left alone, and a new one
    /// is written aside (`NAME.PID.new`, as DirDBM writes `NAME.new`) and renamed over the
    /// old, so no login ever reads a truncated file.
    pub fn add_user(&self, user: &str, pass: &str, how: Setup) -> std::io::Result<()> {
        // Read at each login, as the -u user: tried as that user once the launcher drops.
        let p = self.path.join("passwd").join(dirdbm_name(user));
        twistrs_core::reread::note_reads(&p, "POP3 logins read the password in it");
        match how {
            Setup::Make => self.make_user(user, pass),
            Setup::Check => {
                if !std::fs::read(&p).is_ok_and(|cur| cur == pass.as_bytes()) {
                    could_write_in(&self.path.join("passwd"))?;
                }
                maildir(&self.path.join(user), how)
            }
        }
    }

    /// A start's [`Domain::add_user`]: below the domain directory, which may be the `-u`
    /// user's, everything is done by descriptor and a link is refused.
    fn make_user(&self, user: &str, pass: &str) -> std::io::Result<()> {
        let dom = Dir::open(&self.path)?;
        let passwd = dom.open_dir("passwd")?;
        let name = dirdbm_name(user);
        // Only as much as the password: a longer file differs, whatever else it holds.
        let cur = passwd.read_file(&name, pass.len() as u64)?;
        if cur.as_deref() != Some(pass.as_bytes()) {
            write_password(&passwd, &name, pass)?;
        }
        maildir_in(&dom, user.as_ref())
    }

    /// What the alias `local` (folded, [`fold`]) names, if it is one, as the file was last read
    /// ([`Aliases::refresh`]).
    pub fn expand(&self, local: &str) -> Option<Vec<String>> {
        self.aliases.as_ref()?.get(local)
    }
}

/// Parses an aliases(5) file as twistd does: `name: target, target`, continuation lines
/// start with whitespace, a line whose first non-blank character is `#` is a comment, and
/// a name given twice has the targets of both. Targets are local users and addresses: a
/// program (`|cmd`), a file (`/path`) or an `:include:`, which twistd would run or write
/// and postfix's local(8) too, is not delivered to, and each is logged (with `FILE:LINE`)
/// as it is read, so mail for such an alias is not refused or dropped without a word.
fn parse_aliases(text: &str, file: &str) -> HashMap<String, Vec<String>> {
    // (first line number, the logical line)
    let mut logical: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) && !logical.is_empty() {
            if let Some((_, last)) = logical.last_mut() {
                last.push_str(line);
            }
        } else if !line.trim().is_empty() {
            logical.push((i + 1, line.to_string()));
        }
    }
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for (n, l) in logical {
        let Some((name, targets)) = l.split_once(':') else {
            log::warn!(target: "twistrs.mail", "aliases {file}:{n}: no ':' in {l:?}, line skipped");
            continue;
        };
        let name = fold(name.trim());
        let mut kept = Vec::new();
        for t in targets.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let bare = t.trim_matches('"');
            let what = if bare.starts_with('|') {
                Some("a program")
            } else if bare.starts_with('/') {
                Some("a file")
            } else if bare.to_ascii_lowercase().starts_with(":include:") {
                Some("an :include: list")
            } else {
                None
            };
            match what {
                Some(what) => log::warn!(target: "twistrs.mail",
                    "aliases {file}:{n}: {name}: {t} is {what}, which twistrs does not deliver to \
                     (local users and addresses only): left out"),
                None => kept.push(bare.to_string()),
            }
        }
        map.entry(name).or_default().extend(kept);
    }
    map
}

impl Aliases {
    pub fn new(path: PathBuf) -> std::io::Result<Aliases> {
        // Read again when it changes, as the user privileges were dropped to.
        twistrs_core::reread::note_file(&path);
        let a = Aliases {
            path,
            loaded: std::cell::RefCell::new((None, HashMap::new())),
        };
        a.reload()?;
        Ok(a)
    }

    fn reload(&self) -> std::io::Result<()> {
        let mtime = std::fs::metadata(&self.path)?.modified().ok();
        if self.loaded.borrow().0 == mtime && mtime.is_some() {
            return Ok(());
        }
        /// An aliases file is a line per name: 16 MiB is far more than any holds.
        const ALIASES_MAX: u64 = 16 << 20;
        let text = twistrs_core::files::read_config_string(&self.path, ALIASES_MAX)?;
        let map = parse_aliases(&text, &self.path.display().to_string());
        *self.loaded.borrow_mut() = (mtime, map);
        Ok(())
    }

    /// Reads the file again if it changed (a failure is logged, the old aliases kept):
    /// once per recipient, before its expansion looks names up with [`Aliases::get`].
    pub fn refresh(&self) {
        if let Err(e) = self.reload() {
            log::warn!(target: "twistrs.mail", "aliases {}: {e}", self.path.display());
        }
    }

    /// The targets of `name` (folded, [`fold`]), as last read.
    pub fn get(&self, name: &str) -> Option<Vec<String>> {
        self.loaded.borrow().1.get(name).cloned()
    }
}

/// Why a recipient was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a domain we receive for: we never relay.
    Foreign,
    /// A domain of ours, but no such user (and no postmaster bounce).
    NoUser,
    Syntax,
}

impl MailConfig {
    /// The domain of ours named `name` (in any case), if any.
    fn domain_named(&self, name: &str) -> Option<&Domain> {
        let name = name.to_ascii_lowercase();
        self.domains.iter().find(|d| d.name == name)
    }

    /// The domain of ours named `name`, or the default one (`-D`).
    fn domain_of(&self, name: &str) -> Option<&Domain> {
        self.domain_named(name)
            .or_else(|| self.default.and_then(|i| self.domains.get(i)))
    }

    /// The Maildirs `addr` delivers to, each with the address for `Delivered-To:`.
    pub fn resolve(&self, addr: &str) -> Result<Vec<(PathBuf, String)>, Refusal> {
        let (local, domain) = addr.rsplit_once('@').ok_or(Refusal::Syntax)?;
        if local.is_empty() || domain.is_empty() {
            return Err(Refusal::Syntax);
        }
        let d = self.domain_of(domain).ok_or(Refusal::Foreign)?;
        // Each aliases file is looked at once per recipient, not once per name expanded.
        for a in self.domains.iter().filter_map(|d| d.aliases.as_ref()) {
            a.refresh();
        }
        let mut out = Vec::new();
        // Aliases one recipient may go through: far more than any file nests.
        let mut budget = 100;
        self.expand_into(d, local, &mut Vec::new(), &mut budget, &mut out);
        if out.is_empty() {
            return Err(Refusal::NoUser);
        }
        Ok(out)
    }

    /// Adds to `out` the Maildirs `local` of `d` reaches: through its alias, whose targets
    /// are aliases in turn (as twistd's and postfix's are), or as a user. `path` holds the
    /// aliases that led here: one met again on it is taken for the user of that name
    /// (postfix's `joe: joe, ann` keeps a copy for joe), so a loop ends; `budget` bounds the
    /// aliases one recipient may go through, whatever the file.
    fn expand_into(
        &self,
        d: &Domain,
        local: &str,
        path: &mut Vec<(String, String)>,
        budget: &mut usize,
        out: &mut Vec<(PathBuf, String)>,
    ) {
        let key = (d.name.clone(), fold(local));
        let targets = if path.contains(&key) {
            None
        } else if *budget == 0 {
            log::warn!(target: "twistrs.mail",
                "alias {local}@{}: too many aliases for one recipient, taken as a user", d.name);
            None
        } else {
            d.expand(&key.1)
        };
        let Some(targets) = targets else {
            let found = if let Some(u) = d.find_user(local) {
                (d.path.join(&u), format!("{u}@{}", d.name))
            } else if d.bounce_to_postmaster {
                // Its Maildir is made, and flushed, at its first delivery.
                (d.path.join("postmaster"), format!("postmaster@{}", d.name))
            } else {
                return;
            };
            if !out.contains(&found) {
                out.push(found);
            }
            return;
        };
        *budget -= 1;
        path.push(key);
        for target in targets {
            // An alias may name user@domain in another of our domains; not through `-D`,
            // which takes in mail for other domains: an alias's someone@elsewhere.org is
            // someone else than our someone, and twistrs does not relay.
            match target.rsplit_once('@') {
                Some((u, dd)) => match self.domain_named(dd) {
                    Some(dd) => self.expand_into(dd, u, path, budget, out),
                    None => log::warn!(target: "twistrs.mail",
                        "alias {local}@{}: {target} is not in a domain of ours, and twistrs \
                         does not relay: left out", d.name),
                },
                None => self.expand_into(d, &target, path, budget, out),
            }
        }
        path.pop();
    }

    /// The address `RCPT TO:<Postmaster>` (no domain) means: postmaster of the default
    /// domain, else of the first.
    pub fn postmaster(&self) -> Option<String> {
        let d = self.default.and_then(|i| self.domains.get(i));
        d.or(self.domains.first())
            .map(|d| format!("postmaster@{}", d.name))
    }

    /// The domain and stored user name a POP3 login names: `user@domain`, or a bare `user`
    /// of the default; case as for SMTP recipients (the domain and the user in any case,
    /// `Domain::find_user`).
    pub fn pop3_user(&self, login: &str) -> Option<(&Domain, String)> {
        let (user, dom) = match login.rsplit_once('@') {
            Some((u, d)) => (u, self.domain_named(d)?),
            None => (login, self.domains.get(self.default?)?),
        };
        Some((dom, dom.find_user(user)?))
    }
}

/// Test fixtures: a domain `example.com` under `dir` with `joe` (password `secret`), and a
/// configuration around it that each test adjusts with struct update syntax.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    /// A connection slot of no limit, for a session on the test harness (which has no
    /// factory to give one).
    pub(crate) fn slot() -> twistrs_core::limit::PeerSlot {
        twistrs_core::limit::PeerLimit::new(0)
            .admit(&twistrs_core::Address::Unix(None))
            .expect("no limit")
    }

    pub(crate) fn example_domain(dir: &Path) -> Domain {
        let path = dir.join("example.com");
        std::fs::create_dir_all(path.join("passwd")).expect("domain directory");
        let d = example_com(path, None);
        d.add_user("joe", "secret", Setup::Make).expect("user joe");
        d
    }

    /// The domain `example.com` at `path` (made by the caller, as its test needs), with
    /// `aliases` and no postmaster bounce.
    pub(crate) fn example_com(path: PathBuf, aliases: Option<Aliases>) -> Domain {
        Domain {
            name: "example.com".into(),
            path,
            aliases,
            bounce_to_postmaster: false,
            folded: Default::default(),
        }
    }

    pub(crate) fn config(domains: Vec<Domain>) -> MailConfig {
        MailConfig {
            domains,
            default: None,
            hostname: "h".into(),
            esmtp: false,
            auth: None,
            max_message: 1000,
            data_memory: DataMemory::new(usize::MAX),
            max_recipients: 10,
            max_errors: 3,
            timeout: Duration::from_secs(60),
            pop3_timeout: Duration::from_secs(60),
            fail_delay: Duration::ZERO,
            tls: None,
            auth_requires_tls: false,
        }
    }

    /// A STARTTLS context from a certificate made now with the openssl command (no key is
    /// ever committed).
    pub(crate) fn tls_context(dir: &Path) -> Rc<TlsContext> {
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("the openssl command makes the test certificate");
        assert!(status.success(), "openssl req failed");
        Rc::new(TlsContext::from_files(&key, Some(&cert), &[]).expect("a fresh certificate loads"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirdbm_names_match_twistd() {
        assert_eq!(dirdbm_name("joe"), "am9l_");
        assert_eq!(dirdbm_name("???"), "Pz8-_", "'/' becomes '-'");
        let long = "x".repeat(60);
        let n = dirdbm_name(&long);
        assert_eq!(
            n.matches('_').count(),
            2,
            "a newline every 76 characters: {n}"
        );
    }

    #[test]
    fn add_user_leaves_an_unchanged_password_alone_and_replaces_a_new_one_whole() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.com");
        std::fs::create_dir_all(path.join("passwd")).unwrap();
        let d = fixture::example_com(path.clone(), None);
        let file = path.join("passwd/am9l_");
        let stat = || {
            let m = std::fs::metadata(&file).unwrap();
            (m.ino(), m.mtime(), m.mtime_nsec(), m.mode() & 0o777)
        };
        d.add_user("joe", "secret", Setup::Make).unwrap();
        let first = stat();
        // What every `--workers` worker does when it starts (and again when one is restarted)
        // while the others serve logins: an unchanged password is not written again, so no
        // reader ever finds the file truncated.
        d.add_user("joe", "secret", Setup::Make).unwrap();
        assert_eq!(stat(), first);
        // A new one replaces the file whole (written aside, then renamed over it).
        d.add_user("joe", "other", Setup::Make).unwrap();
        let second = stat();
        assert_ne!(second.0, first.0, "a new file, renamed into place");
        assert_eq!(second.3, 0o600);
        assert_eq!(d.password("joe").as_deref(), Some("other"));
        let names: Vec<_> = std::fs::read_dir(path.join("passwd"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left");
        // A longer file that begins with the password (read only that far, and one byte
        // more) is not the password: replaced whole.
        let mut long = b"other".to_vec();
        long.resize(4 << 20, b'x');
        std::fs::write(&file, &long).unwrap();
        d.add_user("joe", "other", Setup::Make).unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"other");
    }

    /// A fresh domain under a temporary directory: `-d` and `-u joe=secret` as a start does.
    fn fresh(dir: &Path) -> Domain {
        let path = dir.join("example.com");
        Setup::Make.domain(&path).unwrap();
        let d = fixture::example_com(path, None);
        d.add_user("joe", "secret", Setup::Make).unwrap();
        d
    }

    /// What a directory holds, by name.
    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    #[test]
    fn a_start_makes_the_domain_with_its_modes_and_a_second_leaves_it_alone() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // The umask, read without setting it (other tests run alongside).
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
            .unwrap();
        let open = 0o777 & !umask;
        let d = fresh(dir.path());
        let mode = |p: &str| {
            let m = std::fs::symlink_metadata(d.path.join(p)).unwrap();
            (
                m.mode() & 0o777,
                m.ino(),
                m.mtime_nsec(),
                m.file_type().is_dir(),
            )
        };
        let want = [
            ("", open),
            ("passwd", open),
            ("passwd/am9l_", 0o600),
            ("joe", 0o700),
            ("joe/new", 0o700),
            ("joe/cur", 0o700),
            ("joe/tmp", 0o700),
            ("joe/.Trash", 0o700),
            ("joe/.Trash/new", 0o700),
            ("joe/.Trash/cur", 0o700),
            ("joe/.Trash/tmp", 0o700),
        ];
        let before: Vec<_> = want.iter().map(|(p, _)| mode(p)).collect();
        for ((p, m), got) in want.iter().zip(&before) {
            assert_eq!(got.0, m & !umask, "{p}");
            assert_eq!(got.3, *p != "passwd/am9l_", "{p}");
        }
        assert!(d.path.join("joe/.Trash/maildirfolder").is_file());
        let again = fresh(dir.path());
        let after: Vec<_> = want.iter().map(|(p, _)| mode(p)).collect();
        assert_eq!(before, after, "a second start leaves the tree as it was");
        assert_eq!(again.password("joe").as_deref(), Some("secret"));
        assert_eq!(names(&d.path.join("passwd")).len(), 1);
    }

    /// A link where the service user could have put one, to an empty directory: the start
    /// fails naming the link, and nothing is made or written in what it names.
    fn refused(link: &str) {
        let dir = tempfile::tempdir().unwrap();
        let d = fresh(dir.path());
        let target = dir.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let at = d.path.join(link);
        std::fs::remove_dir_all(&at).unwrap();
        std::os::unix::fs::symlink(&target, &at).unwrap();
        let e = Setup::Make
            .domain(&d.path)
            .and_then(|()| d.add_user("joe", "new password", Setup::Make))
            .expect_err(link);
        assert_eq!(
            e.to_string(),
            format!(
                "{} is a symbolic link: refused (it must be a directory)",
                at.display()
            )
        );
        assert!(names(&target).is_empty(), "{link}: {:?}", names(&target));
        assert!(std::fs::symlink_metadata(&at).unwrap().is_symlink());
    }

    #[test]
    fn a_link_at_the_users_maildir_is_refused() {
        refused("joe");
    }

    #[test]
    fn a_link_at_passwd_is_refused() {
        refused("passwd");
    }

    #[test]
    fn a_link_at_new_in_the_maildir_is_refused() {
        refused("joe/new");
    }

    #[test]
    fn a_link_at_the_trash_is_refused() {
        refused("joe/.Trash");
    }

    #[test]
    fn a_link_at_the_password_file_is_refused_and_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = fresh(dir.path());
        let secret = dir.path().join("shadow");
        std::fs::write(&secret, "secret").unwrap();
        let at = d.path.join("passwd/am9l_");
        std::fs::remove_file(&at).unwrap();
        std::os::unix::fs::symlink(&secret, &at).unwrap();
        let e = d.add_user("joe", "secret", Setup::Make).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{} is a symbolic link: refused (it must be a file)",
                at.display()
            )
        );
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "secret");
    }

    #[test]
    fn a_user_is_found_whatever_the_case_unless_two_differ_by_case_alone() {
        let dir = tempfile::tempdir().unwrap();
        let d = fresh(dir.path());
        for u in ["joe", "Bob", "Ann", "ANN"] {
            d.add_user(u, "pw", Setup::Make).unwrap();
        }
        assert_eq!(dirdbm_key(&dirdbm_name("Bob")).as_deref(), Some("Bob"));
        assert_eq!(d.find_user("JOE").as_deref(), Some("joe"));
        assert_eq!(d.find_user("bob").as_deref(), Some("Bob"));
        assert_eq!(d.find_user("BOB").as_deref(), Some("Bob"));
        assert_eq!(d.find_user("Ann").as_deref(), Some("Ann"), "as given first");
        assert_eq!(d.find_user("ann"), None, "Ann or ANN: not known");
        assert_eq!(d.find_user("nobody"), None);
        assert_eq!(d.find_user("carl"), None);
        d.add_user("Carl", "pw", Setup::Make).unwrap();
        assert_eq!(
            d.find_user("carl").as_deref(),
            Some("Carl"),
            "a user added while running"
        );
    }

    #[test]
    fn aliases_are_read_as_twistd_reads_them() {
        let text = "# a comment\n\
                    team: joe, ann\n\
                    Team: bob\n\
                    \t, carl\n\
                    tag: joe#work\n\
                    quoted: \"joe\"\n\
                    mixed: joe, \"|/usr/bin/procmail\", /var/log/mail, :include:/etc/list\n\
                    only: |/bin/cat\n\
                    nocolon\n";
        let map = parse_aliases(text, "aliases");
        let get = |n: &str| map.get(n).cloned();
        assert_eq!(
            get("team").unwrap(),
            ["joe", "ann", "bob", "carl"],
            "joined"
        );
        assert_eq!(
            get("tag").unwrap(),
            ["joe#work"],
            "# only starts a comment line"
        );
        assert_eq!(get("quoted").unwrap(), ["joe"]);
        assert_eq!(
            get("mixed").unwrap(),
            ["joe"],
            "programs, files, includes left out"
        );
        assert_eq!(get("only").unwrap(), Vec::<String>::new());
        assert_eq!(map.len(), 5, "{map:?}");
    }

    #[test]
    fn resolve_users_aliases_postmaster_and_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.com");
        std::fs::create_dir_all(path.join("passwd")).unwrap();
        let aliases = dir.path().join("aliases");
        std::fs::write(
            &aliases,
            "# comment\nsales: joe,\n  ann\nroot: joe\next: joe@elsewhere.org, ann@EXAMPLE.com\n\
             a: b\nb: joe\ndiamond: a, b\nsam: sam, ann\nloop1: loop2\nloop2: loop1\n",
        )
        .unwrap();
        let d = fixture::example_com(path.clone(), Some(Aliases::new(aliases).unwrap()));
        d.add_user("joe", "secret", Setup::Make).unwrap();
        d.add_user("ann", "pw", Setup::Make).unwrap();
        d.add_user("sam", "pw", Setup::Make).unwrap();
        assert!(path.join("passwd/am9l_").exists());
        assert!(path.join("joe/new").is_dir() && path.join("joe/.Trash/maildirfolder").exists());
        assert_eq!(d.password("joe").as_deref(), Some("secret"));
        let cfg = |d: Domain| fixture::config(vec![d]);
        let c = cfg(d);
        assert_eq!(
            c.resolve("JOE@Example.COM").unwrap(),
            vec![(path.join("joe"), "joe@example.com".into())]
        );
        assert_eq!(c.resolve("sales@example.com").unwrap().len(), 2);
        // Aliases of aliases, as twistd and postfix expand them; a loop ends.
        let joe = vec![(path.join("joe"), "joe@example.com".to_string())];
        assert_eq!(c.resolve("a@example.com").unwrap(), joe);
        assert_eq!(c.resolve("diamond@example.com").unwrap(), joe, "once");
        assert_eq!(c.resolve("loop1@example.com"), Err(Refusal::NoUser));
        assert_eq!(
            c.resolve("sam@example.com").unwrap(),
            [
                (path.join("sam"), "sam@example.com".to_string()),
                (path.join("ann"), "ann@example.com".to_string())
            ],
            "an alias that names itself keeps a copy for its user"
        );
        assert_eq!(c.resolve("nobody@example.com"), Err(Refusal::NoUser));
        assert_eq!(c.resolve("joe@elsewhere.org"), Err(Refusal::Foreign));
        assert_eq!(c.resolve("no-at-sign"), Err(Refusal::Syntax));
        assert_eq!(c.resolve("../../etc@example.com"), Err(Refusal::NoUser));
        // A foreign alias target is not our namesake, even where -D takes other domains in.
        let c = MailConfig {
            default: Some(0),
            ..c
        };
        assert_eq!(
            c.resolve("ext@example.com").unwrap(),
            vec![(path.join("ann"), "ann@example.com".into())]
        );
        assert_eq!(c.resolve("joe@elsewhere.org").unwrap().len(), 1, "-D");
        let mut d = c.domains.into_iter().next().unwrap();
        d.bounce_to_postmaster = true;
        let c = cfg(d);
        assert_eq!(
            c.resolve("nobody@example.com").unwrap()[0].1,
            "postmaster@example.com"
        );
        assert!(c.pop3_user("joe").is_none(), "no default domain");
        assert_eq!(
            c.pop3_user("joe@example.com").map(|(_, u)| u),
            Some("joe".into())
        );
        assert_eq!(
            c.pop3_user("JOE@EXAMPLE.COM").map(|(_, u)| u),
            Some("joe".into()),
            "the same case rule as resolve"
        );
        assert!(c.pop3_user("nobody@example.com").is_none());
    }

    /// UTF-8 user names and aliases (reached with SMTPUTF8) are matched whatever their case,
    /// as postfix 3.7 matches them with smtputf8_enable: `JÖE` reaches `jöe`; `Ø` is another
    /// letter than `Ö`; an ASCII name keeps the ASCII rule (`STRASSE` is not `straße`). Two
    /// names that fold alike are each reached only as written.
    #[test]
    fn utf8_users_and_aliases_fold_unicode_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("example.com");
        std::fs::create_dir_all(path.join("passwd")).unwrap();
        let aliases = dir.path().join("aliases");
        std::fs::write(&aliases, "ålias: jöe\nDÉV: Åsa\n").unwrap();
        let d = fixture::example_com(path.clone(), Some(Aliases::new(aliases).unwrap()));
        for u in ["jöe", "Åsa", "straße", "σοφία", "Ωmega", "ωMEGA"] {
            d.add_user(u, "pw", Setup::Make).unwrap();
        }
        assert!(path.join("jöe/new").is_dir());
        let c = fixture::config(vec![d]);
        let to = |a: &str| c.resolve(a).map(|v| v[0].1.clone());
        assert_eq!(to("jöe@example.com").unwrap(), "jöe@example.com");
        assert_eq!(to("JöE@EXAMPLE.com").unwrap(), "jöe@example.com");
        assert_eq!(to("JÖE@example.com").unwrap(), "jöe@example.com");
        assert_eq!(to("JØE@example.com"), Err(Refusal::NoUser), "Ø is not Ö");
        assert_eq!(to("ÅSA@example.com").unwrap(), "Åsa@example.com");
        assert_eq!(to("åsa@example.com").unwrap(), "Åsa@example.com");
        assert_eq!(
            to("STRASSE@example.com"),
            Err(Refusal::NoUser),
            "ASCII: as before"
        );
        assert_eq!(to("STRAẞE@example.com").unwrap(), "straße@example.com");
        assert_eq!(to("ΣΟΦΊΑ@example.com").unwrap(), "σοφία@example.com");
        assert_eq!(
            to("Ωmega@example.com").unwrap(),
            "Ωmega@example.com",
            "as given"
        );
        assert_eq!(
            to("ωmega@example.com"),
            Err(Refusal::NoUser),
            "Ωmega or ωMEGA"
        );
        assert_eq!(to("ålias@example.com").unwrap(), "jöe@example.com");
        assert_eq!(to("ÅLIAS@example.com").unwrap(), "jöe@example.com");
        assert_eq!(to("dév@example.com").unwrap(), "Åsa@example.com");
        assert_eq!(
            c.pop3_user("JÖE@example.com").map(|(_, u)| u),
            Some("jöe".into()),
            "POP3 logins by the same rule"
        );
        assert!(c.pop3_user("JØE@example.com").is_none());
    }

    /// An ASCII name is matched as it always was, whatever the non-ASCII users: one that
    /// lower-cases to ASCII (the Kelvin sign is `k`) stands for no ASCII user and makes none
    /// ambiguous; it keeps the ASCII rule itself.
    #[test]
    fn ascii_names_fold_as_before_whatever_the_other_users() {
        let dir = tempfile::tempdir().unwrap();
        let d = fresh(dir.path());
        for u in ["Kim", "\u{212A}im", "ſam", "Sam"] {
            d.add_user(u, "pw", Setup::Make).unwrap();
        }
        assert_eq!(fold("JoE"), "joe");
        assert_eq!(fold("\u{212A}IM"), "\u{212A}im");
        assert_eq!(d.find_user("KIM").as_deref(), Some("Kim"));
        assert_eq!(d.find_user("kim").as_deref(), Some("Kim"));
        assert_eq!(d.find_user("SAM").as_deref(), Some("Sam"));
        assert_eq!(d.find_user("\u{212A}IM").as_deref(), Some("\u{212A}im"));
        assert_eq!(d.find_user("ſAM").as_deref(), Some("ſam"));
        assert_eq!(d.find_user("\u{212A}am"), None, "no ASCII user by its fold");
    }
}
