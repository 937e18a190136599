//! Logging in twistd's line format: `2026-11-26T17:36:39+0000 [system] text`.
//!
//! A small `log::Log` of our own rather than simplelog: simplelog cannot print the system in
//! brackets as twistd does and cannot reopen its file. The timestamp is local time with a
//! numeric offset, cached per second. Each line is written with one `write(2)`, so lines from
//! worker threads never interleave. `reopen` (SIGHUP/SIGUSR1) opens the path again, which is
//! what logrotate's move-then-signal needs.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use log::{Level, LevelFilter, Log, Metadata, Record};
use twistrs_core::linelog::open_or_make;

/// Where log lines go.
pub enum Destination {
    Stdout,
    /// Standard error: `--check` reports there, as `nginx -t` does.
    Stderr,
    File(PathBuf),
    /// syslog(3) with this ident, facility LOG_USER.
    Syslog(String),
}

/// How lines are written: twistd's text, or one JSON object per line (twist's
/// `--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// `--log-level`'s value (twist's names) as the most verbose level written; Twisted's
/// `critical` is `error`, the `log` crate's most severe.
pub fn level_filter(name: Option<&str>) -> LevelFilter {
    match name {
        Some("debug") => LevelFilter::Debug,
        Some("warn") => LevelFilter::Warn,
        Some("error" | "critical") => LevelFilter::Error,
        _ => LevelFilter::Info,
    }
}

/// Built-in rotation by size: rotate past `max` bytes, keep `keep` old files.
#[derive(Clone, Copy, Debug)]
pub struct Rotation {
    pub max: u64,
    pub keep: u32,
}

enum Sink {
    Stdout(io::Stdout),
    Stderr(io::Stderr),
    File {
        /// The path as given (made absolute): what messages name.
        path: PathBuf,
        /// The path to reopen and rotate by: `path`, or after `--chroot` the same file's
        /// path inside the jail; `Err(jail)` when the file is outside it and cannot be
        /// reached again (no descriptor outside the jail is kept: that would undo it).
        reach: Result<PathBuf, PathBuf>,
        file: File,
        size: u64,
        loss: Loss,
        /// This start made the file (it was not there): [`Logger::unmake`] may remove it.
        made: bool,
    },
    Syslog,
}

/// Log lines the file would not take (a full disk, a quota): counted, and said in the first
/// line that gets through, so a gap in the log is never silent. twistd drops them unsaid.
#[derive(Default)]
struct Loss {
    lines: u64,
    why: String,
    /// The last write stopped inside a line: the next starts with a newline, so the
    /// fragment is not glued to the line after it.
    torn: bool,
}

impl Loss {
    /// The count to log before the next line, if lines were lost.
    fn notice(&self) -> Option<String> {
        (self.lines > 0).then(|| {
            format!(
                "{} log line(s) lost: the log file could not be written: {}",
                self.lines, self.why
            )
        })
    }

    /// Accounts for one write of `out`, whose first `told` bytes were the fragment's end and
    /// the notice: `written` of it went out, then `result`. True when this failure begins an
    /// outage.
    fn after(&mut self, out: &[u8], told: usize, written: usize, result: io::Result<()>) -> bool {
        let Err(e) = result else {
            *self = Loss::default();
            return false;
        };
        let first = self.lines == 0;
        if written >= told {
            self.lines = 0; // the notice went out: only this line is lost now
        }
        self.lines += 1;
        self.why = e.to_string();
        if written > 0 {
            self.torn = out[written - 1] != b'\n';
        }
        first
    }
}

struct State {
    sink: Sink,
    rotation: Option<Rotation>,
    /// Who a log file made later (a reopen after logrotate moved it, a rotation) is given to,
    /// when root makes it: the `-u` user, set by [`Logger::chown`]. A `--workers` master
    /// keeps root and reopens too: a file it made would be closed to its workers.
    owner: Option<Owner>,
    format: Format,
    stamp_secs: i64,
    stamp: String,
    /// The process writing, for JSON lines: kept here, not asked of the kernel per line
    /// (`getpid` is a system call), and updated by [`Logger::forked`].
    writer: crate::jsonlog::Writer,
    /// While the process starts ([`Logger::start_up`]): the warnings said so far, by
    /// [`warning_id`] (and, in a first worker, those its master said), each said once.
    said: Option<Vec<u64>>,
    /// stdout or stderr is systemd's journal stream: each line starts with its priority.
    journal: bool,
}

/// The process's logger; reachable through [`logger`] for `reopen`.
pub struct Logger {
    state: Mutex<State>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// This process, as its JSON lines name it.
fn this_writer() -> crate::jsonlog::Writer {
    crate::jsonlog::Writer {
        pid: std::process::id(),
        worker: crate::workers::this_worker().map(|w| w.index),
    }
}

/// Why the log file cannot be reopened or rotated: it is outside the jail.
fn outside(path: &Path, jail: &Path) -> io::Error {
    io::Error::other(format!(
        "{} is outside the chroot {}: it cannot be reopened or rotated, and the file opened at \
         start is still written (rotate it with logrotate's copytruncate, or put the log inside \
         the jail)",
        path.display(),
        jail.display()
    ))
}

/// The path of the log file `path` inside the jail `dir`, or `Err(jail)` when it lies outside.
fn in_jail(path: &Path, dir: &Path) -> Result<PathBuf, PathBuf> {
    let jail = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let real = match (path.parent(), path.file_name()) {
        (Some(d), Some(f)) => std::fs::canonicalize(d).map(|d| d.join(f)),
        _ => Err(io::Error::from(io::ErrorKind::NotFound)),
    };
    match real.as_ref().map(|r| r.strip_prefix(&jail)) {
        Ok(Ok(inside)) => Ok(Path::new("/").join(inside)),
        _ => Err(jail),
    }
}

/// A warning as the master and its workers both name it: FNV-1a of its target and text,
/// stable across builds (a restart may bring a new binary, whose workers must still match).
pub fn warning_id(target: &str, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in target.bytes().chain([0]).chain(text.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The user and group a log file is given to.
type Owner = (Option<nix::unistd::Uid>, Option<nix::unistd::Gid>);

/// Opens `path` for appending, made if missing (a reopen, a rotation); one made by root is
/// given to `owner`.
fn open_append(path: &Path, owner: Option<Owner>) -> io::Result<File> {
    let (f, made) = open_or_make(path)?;
    if made
        && let Some((uid, gid)) = owner
        && nix::unistd::geteuid().is_root()
    {
        let _ = nix::unistd::fchown(&f, uid, gid);
    }
    Ok(f)
}

/// Installs the logger. Fails if the log file cannot be opened.
pub fn init(dest: Destination, rotation: Option<Rotation>) -> io::Result<&'static Logger> {
    let sink = match dest {
        Destination::Stdout => Sink::Stdout(io::stdout()),
        Destination::Stderr => Sink::Stderr(io::stderr()),
        Destination::File(path) => {
            let path = std::path::absolute(&path)?;
            let (file, made) = open_or_make(&path)?;
            let size = file.metadata().map_or(0, |m| m.len());
            Sink::File {
                reach: Ok(path.clone()),
                path,
                file,
                size,
                loss: Loss::default(),
                made,
            }
        }
        Destination::Syslog(ident) => {
            // openlog keeps the pointer: the ident must live for the whole process.
            let ident = std::ffi::CString::new(ident).unwrap_or_default();
            let ident: &'static std::ffi::CStr = Box::leak(ident.into_boxed_c_str());
            // SAFETY: a static NUL-terminated ident; plain libc call.
            unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_USER) };
            // syslog(3) drops every line without a word when no daemon listens on /dev/log
            // (a container, say): said once, on stderr, while the start is watched.
            if let Err(e) = syslog_reachable() {
                say!(
                    "twistrs: --syslog: no syslog daemon answers at /dev/log ({e}): log lines \
                     are lost until one listens there"
                );
            }
            Sink::Syslog
        }
    };
    let logger = LOGGER.get_or_init(|| Logger::new(Sink::Stdout(io::stdout())));
    {
        let mut st = logger.lock();
        st.journal = journal_of(&sink);
        st.sink = sink;
        st.rotation = rotation;
    }
    // A second init (tests, embedding) keeps the first registration; that is fine.
    let _ = log::set_logger(logger);
    log::set_max_level(LevelFilter::Info);
    Ok(logger)
}

/// The installed logger, if any.
pub fn logger() -> Option<&'static Logger> {
    LOGGER.get()
}

impl Logger {
    /// A logger writing text lines to `sink`, not rotating.
    fn new(sink: Sink) -> Logger {
        let journal = journal_of(&sink);
        Logger {
            state: Mutex::new(State {
                journal,
                sink,
                rotation: None,
                owner: None,
                format: Format::Text,
                stamp_secs: i64::MIN,
                stamp: String::new(),
                writer: this_writer(),
                said: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The process forked (a daemon going into the background): its lines now name the
    /// child's PID.
    pub fn forked(&self) {
        self.lock().writer = this_writer();
    }

    /// The start begins: until [`started`](Logger::started), a warning already said (the
    /// same target and text), or among `known`, is not written again. Start-up warnings are
    /// about the options and files, which several listeners or a plugin and its listeners
    /// may check alike (one expired certificate named three times); a first worker's
    /// `known` are what its master said as it checked the same moments before. Errors and
    /// other levels are always written.
    pub fn start_up(&self, known: Vec<u64>) {
        self.lock().said = Some(known);
    }

    /// The start is over (the process serves, or a master starts its workers): every
    /// warning is written from now on. Returns those said (and known) during the start.
    pub fn started(&self) -> Vec<u64> {
        // The plugin logs the start made are kept now, whatever fails later.
        twistrs_core::reread::keep_logs();
        self.lock().said.take().unwrap_or_default()
    }

    /// Sets the line format and the most verbose level written (`--log-format`,
    /// `--log-level`; text and info by default).
    pub fn configure(&self, format: Format, level: LevelFilter) {
        let mut st = self.lock();
        if st.format != format {
            st.format = format;
            st.stamp_secs = i64::MIN;
        }
        log::set_max_level(level);
    }

    /// Opens the log file again by name (after logrotate moved it). Stdout is left alone.
    /// After `--chroot` the name is looked up inside the jail; a file outside it cannot be
    /// reopened, and the error says so (the file opened at start is still written).
    pub fn reopen(&self) -> io::Result<()> {
        let mut st = self.lock();
        let owner = st.owner;
        if let Sink::File {
            path,
            reach,
            file,
            size,
            loss,
            ..
        } = &mut st.sink
        {
            let at = reach.as_ref().map_err(|jail| outside(path, jail))?;
            *file = open_append(at, owner)?;
            *size = file.metadata().map_or(0, |m| m.len());
            // A fresh file has no fragment to end; the count of lost lines still stands.
            loss.torn &= *size > 0;
        }
        Ok(())
    }

    /// Called just before `chroot(dir)`: from then on the log file is reopened and rotated by
    /// its path inside the jail. A file outside the jail cannot be: the error, for the start
    /// to log, says what that means.
    pub fn enter_chroot(&self, dir: &Path) -> Result<(), String> {
        let mut st = self.lock();
        let Sink::File { path, reach, .. } = &mut st.sink else {
            return Ok(());
        };
        *reach = in_jail(path, dir);
        match reach {
            Ok(_) => Ok(()),
            Err(jail) => Err(outside(path, jail).to_string()),
        }
    }

    /// What [`enter_chroot`](Logger::enter_chroot) would say, without entering: a workers'
    /// master (which stays outside) says it once for the workers it starts.
    pub fn check_chroot(&self, dir: &Path) -> Result<(), String> {
        let st = self.lock();
        let Sink::File { path, .. } = &st.sink else {
            return Ok(());
        };
        in_jail(path, dir)
            .map(drop)
            .map_err(|jail| outside(path, &jail).to_string())
    }

    /// The log file's path, when logging to a file.
    pub fn path(&self) -> Option<PathBuf> {
        match &self.lock().sink {
            Sink::File { path, .. } => Some(path.clone()),
            _ => None,
        }
    }

    /// A start refused before anything of it ran (the plugin's options, as twistd refuses
    /// them before it opens its log): removes the log file if this start made it and the path
    /// still names that file, so the refusal leaves nothing behind. A file that was there is
    /// kept, with the refusal logged in it. Lines written after this go nowhere.
    pub fn unmake(&self) {
        let st = self.lock();
        if let Sink::File {
            path,
            file,
            made: true,
            ..
        } = &st.sink
        {
            twistrs_core::linelog::unmake(path, file, false);
        }
    }

    /// Gives the log file to the user privileges are dropped to, so it can reopen it: only
    /// one this start made. One that was there keeps its owner (the operator's choice, or
    /// that user's already from an earlier start): a file anyone but root could have put at
    /// that name must never be given away by root. The launcher tries it as that user, and
    /// warns if a reopen would fail.
    /// Files made later (a reopen, a rotation) by a process still root (a `--workers`
    /// master) are given to the same user.
    pub fn chown(&self, uid: Option<nix::unistd::Uid>, gid: Option<nix::unistd::Gid>) {
        let mut st = self.lock();
        st.owner = Some((uid, gid));
        if let Sink::File {
            file, made: true, ..
        } = &st.sink
        {
            let _ = nix::unistd::fchown(file, uid, gid);
        }
    }
}

/// Writes as much of `bytes` as the file takes: how much, and the error that stopped it
/// (`write_all` would not say how much of a line went out before a full disk).
fn write_some(file: &mut File, bytes: &[u8]) -> (usize, io::Result<()>) {
    let mut done = 0;
    while done < bytes.len() {
        match file.write(&bytes[done..]) {
            Ok(0) => return (done, Err(io::Error::from(io::ErrorKind::WriteZero))),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (done, Err(e)),
        }
    }
    (done, Ok(()))
}

/// `FILE.N` for rotation.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".{n}"));
    PathBuf::from(p)
}

/// Renames FILE.N-1 to FILE.N (dropping the oldest), FILE to FILE.1, and opens a new FILE.
/// Anything but a regular file is never renamed: `-l /dev/null` stays /dev/null.
fn rotate(path: &Path, keep: u32, owner: Option<Owner>) -> io::Result<Option<File>> {
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Ok(None);
    }
    for n in (1..keep).rev() {
        let from = numbered(path, n);
        if from.exists() {
            std::fs::rename(&from, numbered(path, n + 1))?;
        }
    }
    std::fs::rename(path, numbered(path, 1))?;
    open_append(path, owner).map(Some)
}

/// twistd's timestamp (in the core, for plugins' own log files too).
pub use twistrs_core::logsys::timestamp;

/// The bracketed system, by the core's convention (`twistrs_core::logsys`): a connection's
/// prefix (`Echo,3,127.0.0.1`) or `-` as given, otherwise the target as a dotted namespace
/// with the level (`twistrs.launcher#info`).
pub fn system(target: &str, level: Level) -> String {
    if twistrs_core::logsys::is_verbatim(target) {
        target.to_string()
    } else {
        format!(
            "{}#{}",
            target.replace("::", "."),
            level.as_str().to_ascii_lowercase()
        )
    }
}

/// True if `fd` is the stream systemd's journal gave the service (`JOURNAL_STREAM=DEV:INODE`,
/// systemd.exec(5)). Its lines then start with `<N>`, which journald takes as the line's
/// priority (sd-daemon(3)): without it every line, errors too, was priority 6 and
/// `journalctl -p err` showed none. On a terminal or a pipe the prefix would be clutter.
fn on_journal(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_dev == dev && st.st_ino == ino)
}

/// True if `sink` is systemd's journal stream: stdout or stderr as `JOURNAL_STREAM` names it;
/// a file or syslog never is, whatever stdout is.
fn journal_of(sink: &Sink) -> bool {
    match sink {
        Sink::Stdout(s) => on_journal(s.as_fd()),
        Sink::Stderr(s) => on_journal(s.as_fd()),
        _ => false,
    }
}

/// `line` with `<p>` before each of its lines: journald reads each line of the stream on
/// its own, so a message's continuation lines need it too.
fn with_priority(line: &str, p: u8) -> String {
    // One buffer, so that the line still leaves in one write.
    let mut out = String::with_capacity(line.len() + 8);
    for piece in line.split_inclusive('\n') {
        out.push('<');
        out.push(char::from(b'0' + p % 10));
        out.push('>');
        out.push_str(piece);
    }
    out
}

/// The syslog priority of a level, as journald reads it from a `<N>` prefix.
fn priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// One formatted line; continuation lines are indented with a tab, as twistd does.
pub fn format_line(stamp: &str, system: &str, text: &str) -> String {
    let mut line = format!("{stamp} [{system}] {}", text.replace('\n', "\n\t"));
    line.push('\n');
    line
}

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let now = since.as_secs() as i64;
        let text = r.args().to_string();
        let sys = system(r.target(), r.level());
        let mut st = self.lock();
        if r.level() == Level::Warn
            && let Some(said) = st.said.as_mut()
        {
            let id = warning_id(r.target(), &text);
            if said.contains(&id) {
                return;
            }
            said.push(id);
        }
        let json = st.format == Format::Json;
        if st.stamp_secs != now {
            st.stamp_secs = now;
            st.stamp = if json {
                crate::jsonlog::utc_seconds(now)
            } else {
                timestamp(now)
            };
        }
        let line = if json {
            crate::jsonlog::format_line(
                &st.stamp,
                since.subsec_millis(),
                r.level(),
                &sys,
                &text,
                st.writer,
                r.key_values(),
            )
        } else {
            format_line(&st.stamp, &sys, &text)
        };
        let (rotation, owner) = (st.rotation, st.owner);
        let st = &mut *st;
        // Only stdout and stderr are ever the journal's stream (`journal_of`); every line of
        // a message (text continuation lines too) gets the priority.
        let line = if st.journal {
            with_priority(&line, priority(r.level()))
        } else {
            line
        };
        match &mut st.sink {
            Sink::Stdout(s) => {
                let _ = s.write_all(line.as_bytes()).and_then(|_| s.flush());
            }
            Sink::Stderr(s) => {
                let _ = s.write_all(line.as_bytes());
            }
            Sink::File {
                path,
                reach,
                file,
                size,
                loss,
                ..
            } => {
                // Only after a failed write does a line carry more than itself: the common
                // line is written as it is, without a copy.
                let notice = loss.notice().map(|text| {
                    let sys = system("twistrs.logging", Level::Warn);
                    if json {
                        let none: Option<(&str, &str)> = None;
                        crate::jsonlog::format_line(
                            &st.stamp,
                            since.subsec_millis(),
                            Level::Warn,
                            &sys,
                            &text,
                            st.writer,
                            &none,
                        )
                    } else {
                        format_line(&st.stamp, &sys, &text)
                    }
                });
                let joined;
                let (out, told) = match (loss.torn, notice) {
                    (false, None) => (line.as_bytes(), 0),
                    (torn, notice) => {
                        let notice = notice.unwrap_or_default();
                        let head = if torn { "\n" } else { "" };
                        joined = format!("{head}{notice}{line}");
                        (joined.as_bytes(), head.len() + notice.len())
                    }
                };
                let (written, result) = write_some(file, out);
                *size += written as u64;
                if loss.after(out, told, written, result) {
                    // Once per outage, for whoever watches a foreground process.
                    say!(
                        "twistrs: cannot write to the log file {}: {}; the lines lost are \
                         counted and the count logged once it can be written again",
                        path.display(),
                        loss.why
                    );
                }
                // Outside the jail: never rotated (said at start).
                if let Some(r) = rotation
                    && *size >= r.max
                    && let Ok(path) = reach
                {
                    match rotate(path, r.keep, owner) {
                        Ok(Some(f)) => {
                            *file = f;
                            *size = 0;
                        }
                        // Not a regular file: never renamed, never rotated.
                        Ok(None) => *size = 0,
                        Err(_) => *size = 0,
                    }
                }
            }
            Sink::Syslog => {
                let prio = if r.level() <= Level::Error {
                    libc::LOG_ALERT
                } else {
                    libc::LOG_INFO
                };
                // A JSON line is one syslog message, without its newline.
                let parts: Vec<&str> = if json {
                    vec![line.trim_end()]
                } else {
                    text.split('\n').collect()
                };
                for (i, part) in parts.into_iter().enumerate() {
                    let msg = if json {
                        part.to_string()
                    } else if i == 0 {
                        format!("[{sys}] {part}")
                    } else {
                        format!("\t{part}")
                    };
                    let msg = std::ffi::CString::new(msg.replace('\0', "")).unwrap_or_default();
                    // SAFETY: a "%s" format with one NUL-terminated argument.
                    unsafe { libc::syslog(prio, c"%s".as_ptr(), msg.as_ptr()) };
                }
            }
        }
    }

    fn flush(&self) {
        if let Sink::Stdout(s) = &mut self.lock().sink {
            let _ = s.flush();
        }
    }
}

/// Whether /dev/log takes a connection, as syslog(3) makes one: a datagram socket, or a
/// stream one where the daemon listens so (glibc tries both).
fn syslog_reachable() -> io::Result<()> {
    let dgram = std::os::unix::net::UnixDatagram::unbound()?.connect("/dev/log");
    match dgram {
        Err(e) if e.raw_os_error() == Some(libc::EPROTOTYPE) => {
            std::os::unix::net::UnixStream::connect("/dev/log").map(drop)
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_a_message_to_the_journal_has_its_priority() {
        assert_eq!(with_priority("a\n", 3), "<3>a\n");
        assert_eq!(with_priority("a\n\tb\n\tc\n", 6), "<6>a\n<6>\tb\n<6>\tc\n");
        assert_eq!(with_priority("{}", 4), "<4>{}");
        assert_eq!(priority(Level::Error), 3);
        assert_eq!(priority(Level::Debug), 7);
    }

    #[test]
    fn systems_render_as_twistd_does() {
        assert_eq!(system("-", Level::Info), "-");
        assert_eq!(system("Echo,3,127.0.0.1", Level::Info), "Echo,3,127.0.0.1");
        assert_eq!(
            system("twistrs::launcher", Level::Info),
            "twistrs.launcher#info"
        );
        assert_eq!(
            system("twistrs.reactor", Level::Error),
            "twistrs.reactor#error"
        );
    }

    #[test]
    fn rotation_keeps_n_files_and_never_renames_special_files() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("app.log");
        for i in 0..5 {
            std::fs::write(&log, format!("gen {i}")).unwrap();
            let f = rotate(&log, 3, None).unwrap();
            assert!(f.is_some());
        }
        assert_eq!(std::fs::read_to_string(numbered(&log, 1)).unwrap(), "gen 4");
        assert_eq!(std::fs::read_to_string(numbered(&log, 3)).unwrap(), "gen 2");
        assert!(!numbered(&log, 4).exists(), "at most 3 kept");
        // Only where /dev/null is the device it should be (a broken machine is not a test).
        use std::os::unix::fs::FileTypeExt;
        if std::fs::metadata("/dev/null").is_ok_and(|m| m.file_type().is_char_device()) {
            assert!(rotate(Path::new("/dev/null"), 3, None).unwrap().is_none());
        }
        assert!(Path::new("/dev/null").exists());
    }

    #[test]
    fn a_start_up_warning_is_written_once_and_errors_always() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.log");
        let logger = Logger::new(Sink::File {
            path: path.clone(),
            reach: Ok(path.clone()),
            file: open_append(&path, None).unwrap(),
            size: 0,
            loss: Loss::default(),
            made: true,
        });
        log::set_max_level(LevelFilter::Info);
        let say = |level: Level, text: &str| {
            logger.log(
                &Record::builder()
                    .level(level)
                    .target("t")
                    .args(format_args!("{text}"))
                    .build(),
            );
        };
        // What the master said (a first worker's `known`).
        logger.start_up(vec![warning_id("t", "known")]);
        for _ in 0..2 {
            say(Level::Warn, "known");
            say(Level::Warn, "twice");
            say(Level::Error, "an error");
            say(Level::Info, "info");
        }
        // Another target, the same text: another warning.
        logger.log(
            &Record::builder()
                .level(Level::Warn)
                .target("u")
                .args(format_args!("twice"))
                .build(),
        );
        let said = logger.started();
        assert!(
            said.contains(&warning_id("t", "twice")) && said.len() == 3,
            "{said:?}"
        );
        say(Level::Warn, "twice");
        let text = std::fs::read_to_string(&path).unwrap();
        let count = |s: &str| text.lines().filter(|l| l.ends_with(s)).count();
        assert_eq!(count("] known"), 0, "{text}");
        assert_eq!(
            count("[t#warn] twice"),
            2,
            "once at start, once after: {text}"
        );
        assert_eq!(count("[u#warn] twice"), 1, "{text}");
        assert_eq!(count("] an error"), 2, "{text}");
        assert_eq!(count("] info"), 2, "{text}");
        // Stable across builds: a restart's new binary and its workers must agree.
        assert_eq!(
            warning_id("twistrs.mail", "no -d domain"),
            0x944e_bee9_50f0_4484
        );
    }

    #[test]
    fn lines_have_twistd_shape() {
        let s = timestamp(1_795_714_599);
        assert_eq!(s.len(), "2026-11-26T17:36:39+0000".len(), "{s}");
        assert!(s.starts_with("2026-11-2"));
        assert_eq!(
            format_line("T", "-", "a\nb"),
            "T [-] a\n\tb\n",
            "continuation lines are tab-indented"
        );
    }
}
