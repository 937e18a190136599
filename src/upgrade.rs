//! `twistrs restart` without downtime: the running daemon re-executes its own binary and hands
//! over its listening sockets and its locked pidfile.
//!
//! On SIGUSR2 the daemon starts its successor with its original command line and working
//! directory. The listening sockets, the pidfile descriptor (and with it the lock), a ready
//! pipe and a pipe holding the TLS session tickets' key chain (so that sessions resume across
//! the restart) are inherited; TWISTRS_UPGRADE names them. The successor listens on the inherited
//! sockets instead of binding, writes the pidfile once it serves and reports `0` on the pipe;
//! only then does the old daemon stop accepting and drain its connections. Both processes share
//! the same listening sockets the whole time, so no connection is refused. If the successor
//! fails, the old daemon keeps serving. Either way the outcome is written to `PIDFILE.restart`
//! for the waiting `twistrs restart`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;

use crate::holder::FileId;
use crate::pidfile::Held;

/// The environment variable that tells a process it is a restart's successor.
pub const ENV: &str = "TWISTRS_UPGRADE";

/// What a successor inherited.
pub struct Inherited {
    /// Taken by the status writer; closing it is what tells the predecessor we are done.
    pub ready: Option<OwnedFd>,
    pub pidfile: Option<RawFd>,
    pub listeners: Vec<(String, RawFd)>,
}

/// Set once TWISTRS_UPGRADE was found: this process took over from a predecessor (or was
/// started by its master).
static INHERITS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process is a restart's successor (or a master's worker): it runs as the user
/// its predecessor dropped to already, and says nothing of that again.
pub fn inherits() -> bool {
    INHERITS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Reads and clears TWISTRS_UPGRADE: `READY_FD PIDFILE_FD TICKETS_FD` on the first line (`-`
/// for none; a predecessor older than the session tickets' hand-over gives two), then one
/// `FD ENDPOINT` per line. The TLS session tickets' key chain is read from its pipe now.
pub fn from_env() -> Option<Inherited> {
    let v = std::env::var(ENV).ok()?;
    INHERITS.store(true, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: called at start-up, before any thread exists.
    unsafe { std::env::remove_var(ENV) };
    let mut lines = v.lines();
    let mut head = lines.next()?.split(' ');
    let ready: RawFd = head.next()?.parse().ok()?;
    let pidfile = head.next().and_then(|p| p.parse().ok());
    if let Some(fd) = head.next().and_then(|p| p.parse::<RawFd>().ok()) {
        // SAFETY: our predecessor (or master) passed this descriptor for this purpose, once.
        take_ticket_chain(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let listeners = lines
        .filter_map(|l| {
            let (fd, ep) = l.split_once(' ')?;
            Some((ep.to_string(), fd.parse().ok()?))
        })
        .collect();
    Some(Inherited {
        // SAFETY: our predecessor passed this descriptor for this purpose.
        ready: Some(unsafe { OwnedFd::from_raw_fd(ready) }),
        pidfile,
        listeners,
    })
}

/// Reads the TLS session tickets' chain from the pipe our predecessor (or master) filled
/// (`ticket_pipe`), and closes it. A short read (a predecessor of another format) leaves
/// none: this process makes its own when it first needs one, and sessions resumed elsewhere
/// get a full handshake here.
fn take_ticket_chain(fd: OwnedFd) {
    let mut handover = [0u8; twistrs_core::tls::HANDOVER_LEN];
    let mut f = File::from(fd);
    let mut more = [0u8; 1];
    if f.read_exact(&mut handover).is_ok() && matches!(f.read(&mut more), Ok(0)) {
        twistrs_core::tls::set_ticket_handover(handover);
    }
}

/// A pipe holding this service's TLS session tickets' chain (made now if this process has
/// none yet), for a worker or successor to read at start: it is never in argv, the
/// environment or a file, and the pipe is empty once read. Its write end is closed already
/// (36 bytes fit in any pipe's buffer). `None` if the OS random source failed.
fn ticket_pipe() -> Result<Option<OwnedFd>, String> {
    use std::io::Write;
    let Some(handover) = twistrs_core::tls::ticket_handover() else {
        return Ok(None);
    };
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot create the session tickets' pipe: {e}"))?;
    File::from(w)
        .write_all(&handover)
        .map_err(|e| format!("cannot fill the session tickets' pipe: {e}"))?;
    Ok(Some(r))
}

fn set_inheritable(fd: RawFd, yes: bool) -> nix::Result<()> {
    // SAFETY: fcntl on a descriptor we own for the duration of the call.
    let bfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = if yes {
        FdFlag::empty()
    } else {
        FdFlag::FD_CLOEXEC
    };
    fcntl(bfd, FcntlArg::F_SETFD(flags)).map(|_| ())
}

/// A successor being started.
pub struct Successor {
    child: Child,
    ready: File,
    report: Vec<u8>,
}

/// How the successor is doing.
pub enum Progress {
    Waiting,
    Ready(u32),
    Failed(String),
}

/// Starts the successor: `exe` with `args`, in `cwd`, inheriting `listeners` and `pidfile`.
pub fn spawn(
    exe: &Path,
    args: &[OsString],
    cwd: &Path,
    listeners: &[(String, RawFd)],
    pidfile: Option<RawFd>,
) -> Result<Successor, String> {
    spawn_as(exe, args, cwd, listeners, pidfile, None)
}

/// Starts a successor, or with `worker` (the values of `crate::workers::ENV` and, unless
/// empty, `crate::workers::KNOWN_ENV`) a worker of a `--workers` master: the same hand-over
/// of listeners and ready pipe, without the pidfile; the worker keeps the master's stdout
/// and stderr (a `-n` log goes there) and gets neither systemd's variables (the master is
/// the one systemd knows) nor, through `PR_SET_PDEATHSIG`, a life longer than its master's;
/// it runs in a process group of its own.
pub fn spawn_as(
    exe: &Path,
    args: &[OsString],
    cwd: &Path,
    listeners: &[(String, RawFd)],
    pidfile: Option<RawFd>,
    worker: Option<(&str, &str)>,
) -> Result<Successor, String> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
        .map_err(|e| format!("cannot create the ready pipe: {e}"))?;
    // The successor's end blocks; ours polls.
    let _ = fcntl(&w, FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()));
    let tickets = ticket_pipe()?;
    let mut env = format!(
        "{} {} {}",
        w.as_raw_fd(),
        pidfile.map_or("-".to_string(), |p| p.to_string()),
        tickets
            .as_ref()
            .map_or("-".to_string(), |t| t.as_raw_fd().to_string())
    );
    let mut pass: Vec<RawFd> = vec![w.as_raw_fd()];
    pass.extend(pidfile);
    pass.extend(tickets.as_ref().map(AsRawFd::as_raw_fd));
    for (ep, fd) in listeners {
        env.push_str(&format!("\n{fd} {ep}"));
        pass.push(*fd);
    }
    for fd in &pass {
        set_inheritable(*fd, true).map_err(|e| format!("cannot pass descriptor {fd}: {e}"))?;
    }
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .current_dir(cwd)
        .env(ENV, env)
        .stdin(Stdio::null());
    if let Some((w, known)) = worker {
        cmd.env(crate::workers::ENV, w);
        // Our own copy was removed at start (`workers::from_env`): a replacement gets none.
        if !known.is_empty() {
            cmd.env(crate::workers::KNOWN_ENV, known);
        }
        for v in twistrs_core::process::NOT_INHERITED
            .iter()
            .filter(|v| **v != ENV)
        {
            cmd.env_remove(v);
        }
        // A worker is of its master's generation (`status --json` reads it in /proc/PID/environ).
        cmd.env(
            crate::status::GENERATION,
            crate::status::generation().to_string(),
        );
        // SAFETY: prctl is a system call; nothing is allocated after the fork.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
                // A process group of its own: a Ctrl-C in the foreground reaches the master
                // alone, which stops the workers gracefully (a second SIGINT of their own
                // would end their drain at once).
                libc::setpgid(0, 0);
                Ok(())
            });
        }
    } else {
        // A successor is the next generation (`status --json` reads it in /proc/PID/environ).
        cmd.env(
            crate::status::GENERATION,
            (crate::status::generation() + 1).to_string(),
        );
        // stdout and stderr stay ours: with -n they are the terminal or the journal the
        // service logs to (`-l -`, or no -l), and the successor logs on there.
    }
    // The successor starts with the descriptor limit we started with (we raised ours), so it
    // raises its own the same way and gives its children the same.
    if let Some(l) = twistrs_core::process::child_nofile_rlimit() {
        // SAFETY: setrlimit is a system call on a value prepared before the fork.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::setrlimit64(libc::RLIMIT_NOFILE, &l) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let spawned = cmd.spawn();
    for fd in &pass {
        let _ = set_inheritable(*fd, false);
    }
    drop(w);
    drop(tickets);
    let child = spawned.map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    // Ours to wait for: the reactor's orphan reaping (as PID 1) must leave it alone.
    twistrs_core::process::claim_child(child.id());
    Ok(Successor {
        child,
        ready: File::from(r),
        report: Vec::new(),
    })
}

impl Successor {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Checks the ready pipe and the child without blocking.
    pub fn poll(&mut self) -> Progress {
        let mut buf = [0u8; 4096];
        loop {
            match self.ready.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.report.extend_from_slice(&buf[..n]);
                    if self.report.len() > 64 * 1024 {
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if self.report.first() == Some(&b'0') {
                        return Progress::Ready(self.pid());
                    }
                    return match self.child.try_wait() {
                        Ok(Some(st)) => Progress::Failed(format!("the new process exited ({st})")),
                        _ => Progress::Waiting,
                    };
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Progress::Failed(format!("ready pipe: {e}")),
            }
        }
        self.verdict()
    }

    fn verdict(&mut self) -> Progress {
        let text = String::from_utf8_lossy(&self.report).into_owned();
        match crate::daemon::verdict(&text, None) {
            (0, _) => Progress::Ready(self.pid()),
            (_, msg) => {
                let ended = self.child.wait();
                // No word on the pipe: say how it ended (killed by SIGKILL, by a stop passed
                // on), rather than only that it did.
                match ended {
                    Ok(st) if text.is_empty() => Progress::Failed(format!(
                        "PID {} {} before it served",
                        self.pid(),
                        crate::workers::ended(st)
                    )),
                    _ => Progress::Failed(msg.unwrap_or_default()),
                }
            }
        }
    }

    /// Reaps the child if it has exited (a worker that served, watched by its master).
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// Gives up on a successor that took too long.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        // Reaped, or given up: as PID 1, the reactor reaps it if it is still to be.
        twistrs_core::process::release_child(self.child.id());
    }
}

/// The signal of a hand-over's end. To the old process of a restart, still draining after
/// the hand-over, from its successor (or a new `--workers` master) as that stops for real:
/// the sessions the old one serves on through the hand-over are asked to finish now
/// (`Reactor::drain_handover`), so a `stop` does not wait for them. To a worker, from its
/// master handing over to a new master's workers: drain as after a hand-over (SIGUSR2 is
/// a stop). SIGURG: ignored by default (by a predecessor of a version without it, or a
/// worker still starting), and never sent by the kernel to a process that did not ask
/// for it with F_SETOWN, nor by a terminal (as SIGWINCH is at a resize, to a foreground
/// `-n` run and its workers).
pub const HANDOVER_END: i32 = libc::SIGURG;

/// The predecessor (our parent when we started as a restart's successor), to tell when we
/// stop for real.
static PREDECESSOR: std::sync::OnceLock<i32> = std::sync::OnceLock::new();

/// Notes our parent as our predecessor: call once at start in a restart's successor (not a
/// worker, whose parent is its master).
pub fn note_predecessor() {
    // SAFETY: getppid(2) has no preconditions.
    let _ = PREDECESSOR.set(unsafe { libc::getppid() });
}

/// The service stops for real: tells the predecessor, if it still drains after handing over
/// to us (it is still our parent), with [`HANDOVER_END`].
pub fn tell_predecessor() {
    let Some(&pid) = PREDECESSOR.get() else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // The check and the signal go through one pidfd, taken before checking that the PID is
    // still our parent's: a predecessor that ended meanwhile (we were reparented) is never
    // mistaken for a process that took its PID.
    // SAFETY: pidfd_open(2) takes a PID and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return;
    }
    // SAFETY: a descriptor pidfd_open just returned to us, owned from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // SAFETY: getppid(2) has no preconditions.
    if unsafe { libc::getppid() } != pid {
        return;
    }
    // SAFETY: pidfd_send_signal(2) on our pidfd, with no siginfo and no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            HANDOVER_END,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// What came while a restart's successor was starting, acted on once it is known how the
/// restart went. Deploy tools interleave: a `stop` (or systemd's SIGTERM to the whole unit)
/// during a restart would otherwise be lost once the successor takes over and keeps serving;
/// a `reload` after a log rotation would reach only the old process, while the successor,
/// which opened its log and read its files before it, kept writing into the rotated file; a
/// second `restart`, made to run a binary installed meanwhile, would pass unnoticed.
#[derive(Default)]
pub struct Meanwhile {
    /// The first stop (SIGTERM, SIGINT, or a service's own stop): passed on to the
    /// successor as it comes (one still starting dies of it, or stops as soon as it serves),
    /// and the old process stops too whatever the outcome.
    pub stop: Option<twistrs_core::StopReason>,
    /// SIGUSR2: another restart, made once this one is over (by the successor, or by us
    /// again if this one failed).
    pub restart: bool,
    /// SIGHUP or SIGUSR1: passed on to a successor that took over.
    pub reload: bool,
}

impl Meanwhile {
    /// Takes the stop that `reactor`'s last turn saw, if any, while successor `pid` starts.
    pub fn take(&mut self, reactor: &mut twistrs_core::Reactor, pid: u32) {
        match reactor.take_stop() {
            None => {}
            Some(twistrs_core::StopReason::Signal(libc::SIGUSR2)) => {
                // Said once; moot once a stop came.
                if !self.restart && self.stop.is_none() {
                    log::info!(target: crate::launcher::LAUNCHER,
                        "Received SIGUSR2 during the restart: restarting again once it is over.");
                }
                self.restart = true;
            }
            Some(r) => {
                let sig = match r {
                    twistrs_core::StopReason::Signal(s) => s,
                    twistrs_core::StopReason::Requested => libc::SIGTERM,
                };
                let name = twistrs_core::process::signal_name(sig);
                log::info!(target: crate::launcher::LAUNCHER,
                    "Received {name} during the restart, shutting down: passing it on to the \
                     new process (PID {pid}).");
                // SAFETY: a signal to our own child, not reaped yet (its PID cannot be reused).
                unsafe { libc::kill(pid as i32, sig) };
                self.stop.get_or_insert(r);
            }
        }
    }

    /// After the hand-over to `pid`: the reload and the restart that came meanwhile are its
    /// own now (it serves, so it has its handlers). A stop was passed on already.
    pub fn handed_over(&self, pid: u32) {
        if self.stop.is_some() {
            return;
        }
        let pass = |sig: i32, what: &str| {
            log::info!(target: crate::launcher::LAUNCHER,
                "Passing the {what} that came during the restart on to PID {pid}.");
            // SAFETY: as in `take`: our child, unreaped.
            unsafe { libc::kill(pid as i32, sig) };
        };
        if self.reload {
            pass(libc::SIGHUP, "reload (SIGHUP)");
        }
        if self.restart {
            pass(libc::SIGUSR2, "restart (SIGUSR2)");
        }
    }

    /// Logs and reports (`report`) a restart that failed with `msg`: the old process keeps
    /// serving, unless a stop came meanwhile (the successor's end is then most likely that
    /// stop, passed on), and both are stopping.
    pub fn failed(&self, msg: &str, report: impl Fn(&str)) {
        match &self.stop {
            None => {
                log::error!(target: crate::launcher::LAUNCHER, "Restart failed: {msg}; still serving.");
                report(&format!("failed {msg}"));
            }
            Some(r) => {
                let why = match r {
                    twistrs_core::StopReason::Signal(s) => twistrs_core::process::signal_name(*s),
                    twistrs_core::StopReason::Requested => "a stop".into(),
                };
                log::info!(target: crate::launcher::LAUNCHER,
                    "The restart ends with the stop: {msg}.");
                report(&format!(
                    "stopped {why} came during the restart: PID {} and the new process stop \
                     ({msg})",
                    std::process::id()
                ));
            }
        }
    }

    /// After a failed restart: what the old process, still serving, does next (a stop, or
    /// the restart asked for meanwhile).
    pub fn next(self) -> Option<twistrs_core::StopReason> {
        self.stop.or(self
            .restart
            .then_some(twistrs_core::StopReason::Signal(libc::SIGUSR2)))
    }
}

/// Where a daemon writes a restart's report (`NAME.restart` beside the pidfile `NAME`): the
/// pidfile's directory as the start opened it, or, without it (a chrooted daemon, which
/// lets go of it), the pidfile's path.
pub struct ReportPlace {
    pub(crate) dir: Option<(OwnedFd, OsString)>,
    pub(crate) pidfile: PathBuf,
}

/// Records the outcome of a restart. The temporary file is created afresh (O_EXCL, never
/// through a link someone planted in the pidfile's directory) and renamed over the report,
/// which replaces whatever name was there without following it. Through the directory held
/// ([`ReportPlace`]): a `--workers` master writes it as root, and a path through a directory
/// the service user owns could lead it elsewhere by now.
pub fn write_status(place: &ReportPlace, text: &str) {
    match &place.dir {
        Some((dir, name)) => write_status_at(dir.as_fd(), name, text),
        None => write_status_by_path(&place.pidfile, text),
    }
}

fn write_status_at(dir: std::os::fd::BorrowedFd, pidfile: &std::ffi::OsStr, text: &str) {
    use std::io::Write;
    let mut report = pidfile.to_owned();
    report.push(".restart");
    let mut tmp = report.clone();
    tmp.push(".tmp");
    // A leftover from a crash, or a planted link: unlinking removes the name, not its target.
    let _ = nix::unistd::unlinkat(dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
    let written = nix::fcntl::openat(
        dir,
        tmp.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(std::io::Error::from)
    .and_then(|fd| File::from(fd).write_all(text.as_bytes()));
    if written.is_ok()
        && nix::fcntl::renameat(dir, tmp.as_os_str(), dir, report.as_os_str()).is_ok()
    {
        return;
    }
    let _ = nix::unistd::unlinkat(dir, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
    // A daemon that dropped privileges may not create files beside a pidfile in a directory
    // of root's: `twistrs restart`, run as root, made the empty report for it (see
    // `ReportDir::prepare`), and it is written in place, never through a link or into a FIFO.
    if let Ok(mut f) = crate::pidfile::open_plain_at(dir, &report, OFlag::O_WRONLY, 0) {
        let _ = f.write_all(text.as_bytes());
    }
}

/// Without the directory held (a chrooted daemon lets go of it): the pidfile's directory as
/// its path leads now, then the same steps relative to it.
fn write_status_by_path(pidfile: &Path, text: &str) {
    let Some(name) = pidfile.file_name() else {
        return;
    };
    if let Ok(dir) = nix::fcntl::open(
        twistrs_core::plugin::dir_of(pidfile),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        write_status_at(dir.as_fd(), name, text);
    }
}

/// The pidfile's directory as `twistrs restart` found it, held open: the report beside the
/// pidfile is made, given away, read and removed relative to it, never through the pidfile's
/// path again. Root runs `restart` for a daemon whose user may own a directory higher up that
/// path; that user could otherwise swap a directory on it (for a link) between the check of
/// the lock's holder and the report, and have root make the report, and give it to them, in
/// a directory of their choosing.
pub struct ReportDir {
    /// O_PATH: enough for the *at calls, and needs only search permission.
    dir: OwnedFd,
    /// `NAME.restart`, for the pidfile `NAME`.
    name: OsString,
}

/// Why no report is made.
#[derive(Debug, PartialEq, Eq)]
pub enum Unverified {
    /// The pidfile is gone (the daemon exited) or its directory cannot be opened.
    Gone,
    /// The pidfile still has a name, but its path now leads to another file, or to none: a
    /// directory on it was moved or replaced since the pidfile was checked.
    Elsewhere,
}

impl ReportDir {
    /// Opens the directory of `pidfile` and checks that the file of the pidfile's name in it
    /// is `held`, the locked pidfile (same device and inode, one name, not a link). The
    /// directory itself may be reached through links (a configured `/var/run`): what counts is
    /// that it holds this pidfile.
    pub fn open(pidfile: &Path, held: &Held) -> Result<ReportDir, Unverified> {
        let unverified = || {
            if held.linked() {
                Unverified::Elsewhere
            } else {
                Unverified::Gone
            }
        };
        let Some(name) = pidfile.file_name() else {
            return Err(Unverified::Gone);
        };
        let parent = twistrs_core::plugin::dir_of(pidfile);
        let dir = nix::fcntl::open(
            parent,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|_| unverified())?;
        match crate::pidfile::metadata_at(dir.as_fd(), name) {
            Ok(Some(md)) if FileId::of(&md) == held.id() && md.is_file() && md.nlink() == 1 => {
                let mut report = name.to_owned();
                report.push(".restart");
                Ok(ReportDir { dir, name: report })
            }
            _ => Err(unverified()),
        }
    }

    /// Removes the report, if any (a link or a directory of that name is not followed).
    pub fn remove(&self) {
        let _ = nix::unistd::unlinkat(&self.dir, self.name.as_os_str(), UnlinkatFlags::NoRemoveDir);
    }

    /// Makes the empty report that a daemon whose user may not create files beside its
    /// pidfile writes into in place, and gives it to that user: `twistrs restart` run as root
    /// for a `-u` daemon in a directory of root's (a systemd unit's RuntimeDirectory without
    /// User=) would otherwise hear of a failed restart only from the log. An empty report is
    /// no report yet.
    pub fn prepare(&self, pid: i32) {
        let Ok(f) = crate::pidfile::open_plain_at(
            self.dir.as_fd(),
            &self.name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
            0o644,
        ) else {
            return;
        };
        // Its effective uid (from /proc/PID/status: its /proc directory is root's once it
        // has dropped privileges).
        if let Some((uid, _)) = twistrs_core::owner::effective_ids(pid)
            && uid != nix::unistd::geteuid().as_raw()
        {
            // Not ours to give (the caller is not root): the daemon may still create its own.
            let _ = std::os::unix::fs::fchown(&f, Some(uid), None);
        }
    }

    /// The outcome of a restart, once written: read as the pidfile is, never through a link.
    /// Written by the daemon's user: not necessarily UTF-8, nor free of control characters.
    pub fn read(&self) -> Option<String> {
        let f =
            crate::pidfile::open_plain_at(self.dir.as_fd(), &self.name, OFlag::O_RDONLY, 0).ok()?;
        let mut raw = Vec::new();
        f.take(4096).read_to_end(&mut raw).ok()?;
        // Empty: made by `prepare` and not written yet.
        (!raw.is_empty()).then(|| String::from_utf8_lossy(&raw).into_owned())
    }
}

/// `text` (from the daemon's user) made safe for root's terminal: control characters, an
/// escape sequence's start among them, are shown escaped (`\u{1b}`, `\n`) instead of acted on.
pub fn printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pidfile::{Pidfile, State};

    /// A pidfile at `DIR/a/b/t.pid`, held by this process, and `held`, as `restart` sees it.
    fn held_pidfile(dir: &Path) -> (Pidfile, Held, PathBuf) {
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        let path = dir.join("a/b/t.pid");
        let mut own = Pidfile::acquire(&path, None).unwrap();
        own.write_pid().unwrap();
        let State::Running(held) = crate::pidfile::state(&path).unwrap() else {
            panic!("not running");
        };
        (own, held, path)
    }

    #[test]
    fn the_report_stays_in_the_directory_checked_when_the_path_is_swapped_after() {
        let tmp = tempfile::tempdir().unwrap();
        let (_own, held, path) = held_pidfile(tmp.path());
        let report = ReportDir::open(&path, &held).expect("the pidfile's own directory");
        // The service user swaps a directory on the path for a link to one of theirs.
        std::fs::rename(tmp.path().join("a"), tmp.path().join("orig")).unwrap();
        std::fs::create_dir_all(tmp.path().join("evil/b")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("evil"), tmp.path().join("a")).unwrap();
        let real = tmp.path().join("orig/b/t.pid.restart");
        let planted = tmp.path().join("evil/b/t.pid.restart");

        report.prepare(std::process::id() as i32);
        assert_eq!(
            std::fs::read(&real).unwrap(),
            b"",
            "made where the pidfile is"
        );
        assert!(!planted.exists(), "nothing made through the swapped path");

        std::fs::write(&planted, "ok 1").unwrap();
        assert_eq!(report.read(), None, "the planted report is not read");
        std::fs::write(&real, "failed it broke").unwrap();
        assert_eq!(report.read().as_deref(), Some("failed it broke"));

        report.remove();
        assert!(!real.exists(), "removed where it was made");
        assert_eq!(std::fs::read(&planted).unwrap(), b"ok 1", "left alone");
    }

    #[test]
    fn the_daemon_writes_its_report_where_its_pidfile_is_when_the_path_is_swapped() {
        let tmp = tempfile::tempdir().unwrap();
        let (own, _held, _path) = held_pidfile(tmp.path());
        let place = own.report_place();
        std::fs::rename(tmp.path().join("a"), tmp.path().join("orig")).unwrap();
        std::fs::create_dir_all(tmp.path().join("evil/b")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("evil"), tmp.path().join("a")).unwrap();
        let real = tmp.path().join("orig/b/t.pid.restart");
        let planted = tmp.path().join("evil/b/t.pid.restart");
        std::fs::write(&planted, "ok 1").unwrap();
        write_status(&place, "failed it broke");
        assert_eq!(std::fs::read(&real).unwrap(), b"failed it broke");
        assert_eq!(std::fs::read(&planted).unwrap(), b"ok 1", "left alone");
        assert!(!tmp.path().join("orig/b/t.pid.restart.tmp").exists());
        // A report already there is replaced, and a link at the temporary name is not
        // followed.
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "mine").unwrap();
        std::os::unix::fs::symlink(&victim, tmp.path().join("orig/b/t.pid.restart.tmp")).unwrap();
        write_status(&place, "ok 2");
        assert_eq!(std::fs::read(&real).unwrap(), b"ok 2");
        assert_eq!(std::fs::read(&victim).unwrap(), b"mine");
    }

    #[test]
    fn a_path_that_leads_elsewhere_gets_no_report() {
        let tmp = tempfile::tempdir().unwrap();
        let (own, held, path) = held_pidfile(tmp.path());
        let pidfile = tmp.path().join("orig/b/t.pid");
        let evil = tmp.path().join("evil/b");
        std::fs::rename(tmp.path().join("a"), tmp.path().join("orig")).unwrap();
        std::fs::create_dir_all(&evil).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("evil"), tmp.path().join("a")).unwrap();
        let fake = evil.join("t.pid");
        let cases: [(&str, &dyn Fn()); 4] = [
            ("no pidfile there", &|| {}),
            ("another file", &|| std::fs::write(&fake, "1").unwrap()),
            ("a link to the pidfile", &|| {
                std::os::unix::fs::symlink(&pidfile, &fake).unwrap()
            }),
            ("a second name of the pidfile", &|| {
                std::fs::hard_link(&pidfile, &fake).unwrap()
            }),
        ];
        for (what, plant) in cases {
            let _ = std::fs::remove_file(&fake);
            plant();
            assert_eq!(
                ReportDir::open(&path, &held).err(),
                Some(Unverified::Elsewhere),
                "{what}"
            );
        }
        let _ = std::fs::remove_file(&fake);
        assert_eq!(std::fs::read_dir(&evil).unwrap().count(), 0);

        // A directory reached through a link that leads to the pidfile is fine.
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("orig/b"), &link).unwrap();
        assert!(ReportDir::open(&link.join("t.pid"), &held).is_ok());

        // Removed (the daemon exited): nothing to say.
        std::fs::remove_file(&pidfile).unwrap();
        drop(own);
        assert_eq!(
            ReportDir::open(&pidfile, &held).err(),
            Some(Unverified::Gone)
        );
    }

    #[test]
    fn a_report_is_never_read_from_a_link_or_a_fifo() {
        let tmp = tempfile::tempdir().unwrap();
        let (_own, held, path) = held_pidfile(tmp.path());
        let report = ReportDir::open(&path, &held).unwrap();
        let name = tmp.path().join("a/b/t.pid.restart");
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "ok 1").unwrap();
        std::os::unix::fs::symlink(&victim, &name).unwrap();
        assert_eq!(report.read(), None);
        report.prepare(1);
        report.remove();
        assert!(name.symlink_metadata().is_err(), "the link removed");
        assert_eq!(std::fs::read(&victim).unwrap(), b"ok 1", "its target not");
        nix::unistd::mkfifo(&name, Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(report.read(), None, "not opened, so no hang");
    }

    #[test]
    fn control_characters_are_shown_not_acted_on() {
        assert_eq!(
            printable("failed \u{1b}[2J\r\nbye\u{7}\t\u{7f}\u{9b}1m é ok"),
            "failed \\u{1b}[2J\\r\\nbye\\u{7}\\t\\u{7f}\\u{9b}1m é ok"
        );
        assert_eq!(printable("ok 1234"), "ok 1234");
    }
}
