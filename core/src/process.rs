//! Child processes: Twisted's `spawnProcess` and `ProcessProtocol`.
//!
//! [`Handle::spawn_process`](crate::Handle::spawn_process) forks and executes a
//! [`ProcessSpec`] at once and returns its [`ProcessId`] (with the PID); the reactor then
//! adopts it before its next poll: it calls the protocol's `connection_made`, reads the
//! child's stdout and stderr pipes without blocking, writes what the protocol queued for its
//! stdin, and reaps it on SIGCHLD (`waitpid` on each of its own children, so a child started
//! elsewhere in the process is never taken from its owner). Before `process_exited`, whatever
//! the child left in its pipes is read, so its last lines come first; `process_ended` follows
//! once every pipe is closed too (a grandchild may hold them longer).
//!
//! A child inherits no descriptor but its 0, 1 and 2: everything twistrs opens is
//! close-on-exec, and in the child, just before `exec`, every descriptor above 2 is marked
//! close-on-exec again (`close_range`), so a descriptor leaked by a library or a plugin does
//! not leak further. The variables of systemd's socket activation and notification and of the
//! restart hand-over are removed from the child's environment: they are twistrs' own.
//!
//! A graceful stop ([`Reactor::drain`](crate::Reactor::drain)) asks every child's protocol to
//! finish (`stop_requested`, by default SIGTERM, then SIGKILL after the spec's kill time) and
//! waits for them, so none outlives twistrs.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use crate::reactor::Handle;

mod orphans;
mod spawn;

pub(crate) use orphans::reap_orphans;
pub use orphans::{claim_child, receives_orphans, release_child};

/// Variables that describe twistrs' own situation, never a child's: systemd's socket
/// activation and notification socket, and the restart hand-over and its generation.
pub const NOT_INHERITED: &[&str] = &[
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "TWISTRS_UPGRADE",
    "TWISTRS_GENERATION",
];

/// The soft RLIMIT_NOFILE children get (0: what we have). A launcher that raises its own
/// limit for its connections records the one it was started with here, so a child starts
/// with the limit it would have had without twistrs (select(2) users break above 1024).
static CHILD_NOFILE_SOFT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets the soft descriptor limit of the children spawned from now on (see above).
pub fn set_child_nofile_limit(soft: u64) {
    CHILD_NOFILE_SOFT.store(soft, std::sync::atomic::Ordering::Relaxed);
}

/// The soft descriptor limit children get, if one was set.
pub fn child_nofile_limit() -> Option<u64> {
    match CHILD_NOFILE_SOFT.load(std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        n => Some(n),
    }
}

/// The RLIMIT_NOFILE to give a child: [`child_nofile_limit`] under our hard limit, if one was
/// set; computed before a fork, the child only applies it.
pub fn child_nofile_rlimit() -> Option<libc::rlimit64> {
    let soft = child_nofile_limit()?;
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok()?;
    // rlim_t is 32 bits on 32-bit targets; the 64-bit structure is what prlimit64 reads.
    #[allow(clippy::unnecessary_cast)]
    let hard = hard as u64;
    Some(libc::rlimit64 {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    })
}

/// How long a stopped child has between SIGTERM and SIGKILL unless its spec says otherwise
/// (procmon's `--killtime` default).
pub const DEFAULT_KILL_TIME: Duration = Duration::from_secs(5);

/// Names a spawned child in [`Handle`] calls; it stays valid (and answers "exited") after the
/// child is gone. Carries the PID, as Twisted's `transport.pid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcessId {
    pub(crate) serial: u64,
    pub(crate) pid: u32,
}

impl ProcessId {
    /// The child's process ID (it may belong to another process once this one is reaped).
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// One of the child's standard descriptors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildFd {
    /// Descriptor 0.
    Stdin,
    /// Descriptor 1.
    Stdout,
    /// Descriptor 2.
    Stderr,
}

impl ChildFd {
    pub(crate) const ALL: [ChildFd; 3] = [ChildFd::Stdin, ChildFd::Stdout, ChildFd::Stderr];

    pub(crate) fn index(self) -> usize {
        match self {
            ChildFd::Stdin => 0,
            ChildFd::Stdout => 1,
            ChildFd::Stderr => 2,
        }
    }
}

/// What one of the child's descriptors 0, 1, 2 is.
#[derive(Clone, Debug)]
pub enum ChildIo {
    /// A pipe to the reactor: stdin is written from `ProcessTransport::write`, stdout and
    /// stderr arrive in `out_received` and `err_received`.
    Pipe,
    /// `/dev/null`.
    Null,
    /// A descriptor of ours (a connected socket for an inetd `nowait` service, a listening
    /// one for a `wait` service). The child gets a copy; ours is closed when the spec is
    /// dropped, unless another `Rc` holds it.
    Fd(Rc<OwnedFd>),
}

impl ChildIo {
    /// Gives the child `fd` (see [`ChildIo::Fd`]).
    pub fn fd(fd: impl Into<OwnedFd>) -> Self {
        ChildIo::Fd(Rc::new(fd.into()))
    }
}

/// The user, group and supplementary groups a child runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The user id, set with setuid(2).
    pub uid: u32,
    /// The primary group id, set with setgid(2).
    pub gid: u32,
    /// The supplementary groups, set with setgroups(2) (an empty list clears them).
    pub groups: Vec<u32>,
    /// For messages: `nobody`, `nobody:nogroup`, `1000`.
    pub label: String,
}

impl Credentials {
    /// Resolves `user` (a name or a number) and `group` (idem; default: the user's primary
    /// group) as login(1) would: the supplementary groups are the user's (initgroups(3)).
    /// Either may be absent: `None` for the user keeps ours; a group alone changes only the
    /// group, and leaves no supplementary group.
    pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Self, String> {
        use nix::unistd::{Gid, Group, Uid, User, getgrouplist};
        // A number without a passwd entry stands for itself (and its group, as chown(1)).
        let pw: Option<Result<User, u32>> = match user {
            None => None,
            Some(u) => Some(match u.parse::<u32>() {
                Ok(n) => User::from_uid(Uid::from_raw(n))
                    .map_err(|e| format!("cannot look up user {u}: {e}"))?
                    .ok_or(n),
                Err(_) => Ok(User::from_name(u)
                    .map_err(|e| format!("cannot look up user {u}: {e}"))?
                    .ok_or_else(|| format!("no such user: {u}"))?),
            }),
        };
        let gid = match group {
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => Group::from_name(g)
                    .map_err(|e| format!("cannot look up group {g}: {e}"))?
                    .ok_or_else(|| format!("no such group: {g}"))?
                    .gid
                    .as_raw(),
            },
            None => match &pw {
                Some(Ok(p)) => p.gid.as_raw(),
                Some(Err(n)) => *n,
                None => Gid::current().as_raw(),
            },
        };
        let (uid, groups) = match &pw {
            Some(Ok(p)) => {
                let name = CString::new(p.name.as_bytes())
                    .map_err(|_| format!("user name {:?} has a NUL byte", p.name))?;
                let groups = getgrouplist(&name, Gid::from_raw(gid))
                    .map_err(|e| format!("cannot list the groups of {}: {e}", p.name))?;
                (
                    p.uid.as_raw(),
                    groups.into_iter().map(Gid::as_raw).collect(),
                )
            }
            Some(Err(n)) => (*n, vec![gid]),
            None => (Uid::current().as_raw(), vec![gid]),
        };
        let label = match (user, group) {
            (Some(u), Some(g)) => format!("{u}:{g}"),
            (Some(u), None) => u.to_string(),
            (None, Some(g)) => format!(":{g}"),
            (None, None) => uid.to_string(),
        };
        Ok(Credentials {
            uid,
            gid,
            groups,
            label,
        })
    }
}

/// Everything about a child to start: Twisted's `spawnProcess` arguments.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) arg0: Option<OsString>,
    pub(crate) env_clear: bool,
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) credentials: Option<Credentials>,
    pub(crate) stdio: [ChildIo; 3],
    pub(crate) kill_time: Duration,
    pub(crate) new_session: bool,
    pub(crate) new_process_group: bool,
    pub(crate) parent_death_signal: Option<i32>,
    pub(crate) group_dies_with_it: bool,
}

impl ProcessSpec {
    /// Runs `program` (a path, or a name looked up in `PATH`) with no arguments, our
    /// environment (less [`NOT_INHERITED`]), our working directory and user, stdin from
    /// /dev/null and stdout and stderr as pipes.
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        ProcessSpec {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            arg0: None,
            env_clear: false,
            env: Vec::new(),
            cwd: None,
            credentials: None,
            stdio: [ChildIo::Null, ChildIo::Pipe, ChildIo::Pipe],
            kill_time: DEFAULT_KILL_TIME,
            new_session: false,
            new_process_group: false,
            parent_death_signal: None,
            group_dies_with_it: false,
        }
    }

    /// Adds an argument (`argv[1]` onwards).
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_owned());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, it: I) -> Self {
        self.args
            .extend(it.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// `argv[0]` (the program by default).
    pub fn arg0(mut self, a: impl AsRef<OsStr>) -> Self {
        self.arg0 = Some(a.as_ref().to_owned());
        self
    }

    /// Starts from an empty environment (Twisted's `env={}`).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// Sets a variable.
    pub fn env(mut self, k: impl AsRef<OsStr>, v: impl AsRef<OsStr>) -> Self {
        self.env
            .push((k.as_ref().to_owned(), Some(v.as_ref().to_owned())));
        self
    }

    /// Removes a variable.
    pub fn env_remove(mut self, k: impl AsRef<OsStr>) -> Self {
        self.env.push((k.as_ref().to_owned(), None));
        self
    }

    /// The child's working directory (entered as the child's user, after the privilege
    /// change, so it must be reachable by that user).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Runs the child as this user and group (needs root).
    pub fn credentials(mut self, c: Credentials) -> Self {
        self.credentials = Some(c);
        self
    }

    /// What the child's descriptor `which` is.
    pub fn stdio(mut self, which: ChildFd, io: ChildIo) -> Self {
        self.stdio[which.index()] = io;
        self
    }

    /// Gives `fd` to the child as its stdin, stdout and stderr (inetd's way).
    pub fn stdio_fd(mut self, fd: impl Into<OwnedFd>) -> Self {
        let io = ChildIo::fd(fd);
        self.stdio = [io.clone(), io.clone(), io];
        self
    }

    /// How long a stop waits between SIGTERM and SIGKILL ([`DEFAULT_KILL_TIME`]).
    pub fn kill_time(mut self, d: Duration) -> Self {
        self.kill_time = d;
        self
    }

    /// Starts the child in a session (and process group) of its own, away from our terminal:
    /// a Ctrl-C in the foreground then reaches twistrs only, which stops the child in order.
    pub fn new_session(mut self, yes: bool) -> Self {
        self.new_session = yes;
        self
    }

    /// Starts the child in a process group of its own (setpgid), in our session: a Ctrl-C
    /// in the foreground reaches twistrs only, as with `new_session`, but the child stays in
    /// our session, and so in our scheduling autogroup (a session of its own is a group of
    /// its own for the scheduler, which made one in a thousand of inetd's short-lived
    /// programs wait a second for the CPU beside many others).
    pub fn new_process_group(mut self, yes: bool) -> Self {
        self.new_process_group = yes;
        self
    }

    /// The signal the child gets if twistrs dies without stopping it (SIGKILL, the OOM
    /// killer, a crash), so a supervised program never outlives its supervisor and a new
    /// start never runs a second copy beside it (prctl PR_SET_PDEATHSIG, set after the
    /// privilege change, which would clear it).
    pub fn parent_death_signal(mut self, sig: Option<i32>) -> Self {
        self.parent_death_signal = sig;
        self
    }

    /// When the child (the leader of a process group of its own: `new_session` or
    /// `new_process_group`) exits, what is left in its group gets SIGKILL before the child
    /// is reaped, while its PID still names the group. A supervisor's program is then gone
    /// whole once its `process_exited` comes: a shell's `sleep &`, or the workers of a master
    /// that crashed, would otherwise live on beside the next start (holding its port), and
    /// a stop's SIGKILL, sent to the group only while the child is unreaped, would never
    /// reach one that ignores SIGTERM after the child died of it.
    pub fn group_dies_with_it(mut self, yes: bool) -> Self {
        self.group_dies_with_it = yes;
        self
    }

    /// The program, as given.
    pub fn program(&self) -> &OsStr {
        &self.program
    }
}

/// How a child ended (from waitpid).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcessStatus {
    /// exit(code).
    Exited(i32),
    /// Killed by a signal.
    Signaled {
        /// The signal's number (9 for SIGKILL).
        signal: i32,
        /// The child left a core dump.
        core_dumped: bool,
    },
    /// Reaped by someone else (waitpid said ECHILD): the status is lost.
    Unknown,
}

impl ProcessStatus {
    /// Exit status 0 (Twisted's `ProcessDone`).
    pub fn success(&self) -> bool {
        *self == ProcessStatus::Exited(0)
    }

    pub(crate) fn from_wait(ws: nix::sys::wait::WaitStatus) -> Option<Self> {
        use nix::sys::wait::WaitStatus;
        match ws {
            WaitStatus::Exited(_, code) => Some(ProcessStatus::Exited(code)),
            WaitStatus::Signaled(_, sig, core) => Some(ProcessStatus::Signaled {
                signal: sig as i32,
                core_dumped: core,
            }),
            _ => None,
        }
    }
}

/// The name of signal `sig`: `SIGTERM`, or the number for one nix does not know.
pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) => format!("signal {sig}"),
    }
}

impl fmt::Display for ProcessStatus {
    /// `exit status 3`, `signal SIGKILL`, `signal SIGSEGV (core dumped)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessStatus::Exited(c) => write!(f, "exit status {c}"),
            ProcessStatus::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "signal {}", signal_name(*signal))?;
                if *core_dumped {
                    f.write_str(" (core dumped)")?;
                }
                Ok(())
            }
            ProcessStatus::Unknown => f.write_str("an unknown status (reaped elsewhere)"),
        }
    }
}

/// A signal could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// Twisted's `ProcessExitedAlready`: the child was reaped (its PID may be another's now).
    #[error("the process has exited already")]
    ExitedAlready,
    /// kill(2) failed otherwise.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A child's callbacks (Twisted's `ProcessProtocol`), on the reactor thread.
pub trait ProcessProtocol {
    /// The child runs; the transport writes to its stdin and signals it.
    fn connection_made(&mut self, _p: &mut ProcessTransport<'_>) {}

    /// Bytes from the child's stdout or stderr. The default hands them to `out_received` or
    /// `err_received`.
    fn child_data_received(&mut self, p: &mut ProcessTransport<'_>, fd: ChildFd, data: &[u8]) {
        match fd {
            ChildFd::Stdout => self.out_received(p, data),
            ChildFd::Stderr => self.err_received(p, data),
            ChildFd::Stdin => {}
        }
    }

    /// Bytes from stdout, in any pieces (a line may arrive in several).
    fn out_received(&mut self, _p: &mut ProcessTransport<'_>, _data: &[u8]) {}

    /// Bytes from stderr.
    fn err_received(&mut self, _p: &mut ProcessTransport<'_>, _data: &[u8]) {}

    /// A pipe closed: the child closed it (or exited), or we did. The default hands it to
    /// `in_connection_lost`, `out_connection_lost` or `err_connection_lost`.
    fn child_connection_lost(&mut self, p: &mut ProcessTransport<'_>, fd: ChildFd) {
        match fd {
            ChildFd::Stdin => self.in_connection_lost(p),
            ChildFd::Stdout => self.out_connection_lost(p),
            ChildFd::Stderr => self.err_connection_lost(p),
        }
    }

    /// The child's stdin pipe closed.
    fn in_connection_lost(&mut self, _p: &mut ProcessTransport<'_>) {}
    /// The child's stdout pipe closed.
    fn out_connection_lost(&mut self, _p: &mut ProcessTransport<'_>) {}
    /// The child's stderr pipe closed.
    fn err_connection_lost(&mut self, _p: &mut ProcessTransport<'_>) {}

    /// The child was reaped; what it wrote before is delivered already. Pipes a grandchild
    /// still holds stay open.
    fn process_exited(&mut self, _p: &mut ProcessTransport<'_>, _status: ProcessStatus) {}

    /// The child was reaped and every pipe is closed: the last callback.
    fn process_ended(&mut self, _p: &mut ProcessTransport<'_>, _status: ProcessStatus) {}

    /// A graceful stop of the reactor (or of the old process of a restart) wants the child
    /// gone. The default sends SIGTERM, then SIGKILL after the spec's kill time.
    fn stop_requested(&mut self, p: &mut ProcessTransport<'_>) {
        p.stop();
    }
}

/// The reactor's side of a child that a [`ProcessTransport`] reads and writes.
#[derive(Default)]
pub(crate) struct ProcIo {
    /// Entry keys of the open pipes, by descriptor.
    pub(crate) pipes: [Option<usize>; 3],
    /// Queued for stdin; a write takes its bytes off the front without moving the rest.
    pub(crate) stdin_out: crate::line::InputBuffer,
    /// Close stdin once `stdin_out` is written.
    pub(crate) close_stdin: bool,
    /// Pipes the protocol asked to close.
    pub(crate) close: [bool; 3],
    pub(crate) status: Option<ProcessStatus>,
}

/// What a [`ProcessProtocol`] uses to talk to its child (Twisted's `IProcessTransport`).
pub struct ProcessTransport<'a> {
    pub(crate) id: ProcessId,
    pub(crate) io: &'a mut ProcIo,
    pub(crate) handle: &'a Handle,
}

impl ProcessTransport<'_> {
    /// The child's id for [`Handle`] calls.
    pub fn id(&self) -> ProcessId {
        self.id
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.id.pid
    }

    /// The reactor's handle.
    pub fn handle(&self) -> &Handle {
        self.handle
    }

    /// How it ended, once reaped.
    pub fn status(&self) -> Option<ProcessStatus> {
        self.io.status
    }

    /// Queues `data` for the child's stdin (if it is a pipe still open); never blocks.
    pub fn write(&mut self, data: &[u8]) {
        if self.io.pipes[0].is_some() && !self.io.close_stdin {
            self.io.stdin_out.feed(data);
        }
    }

    /// Closes stdin once what was written has gone (Twisted's `closeStdin`).
    pub fn close_stdin(&mut self) {
        self.io.close_stdin = true;
    }

    /// Closes one of our ends now (stdin without waiting for its output).
    pub fn close_child_fd(&mut self, fd: ChildFd) {
        self.io.close[fd.index()] = true;
    }

    /// Closes every pipe (Twisted's `loseConnection`); the child is not signalled.
    pub fn lose_connection(&mut self) {
        self.io.close_stdin = true;
        self.io.close[1] = true;
        self.io.close[2] = true;
    }

    /// Sends `sig` to the child (Twisted's `signalProcess`).
    pub fn signal(&self, sig: i32) -> Result<(), ProcessError> {
        self.handle.signal_process(self.id, sig)
    }

    /// SIGTERM now, SIGKILL after the spec's kill time if it has not exited by then; a
    /// second call changes nothing.
    pub fn stop(&self) {
        self.handle.stop_process(self.id);
    }
}

/// The child as forked: its PID and our ends of its pipes.
pub(crate) struct Forked {
    pub(crate) pid: u32,
    pub(crate) pipes: [Option<OwnedFd>; 3],
}

/// Forks and executes `spec` (without copying this process: see `spawn`). Blocks only until
/// the child has executed; a failed exec, chdir or privilege change is the error, and leaves
/// no child.
pub(crate) fn fork_exec(spec: &ProcessSpec) -> io::Result<Forked> {
    spawn::fork_exec(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_twistd_users_expect() {
        assert_eq!(ProcessStatus::Exited(3).to_string(), "exit status 3");
        assert_eq!(
            ProcessStatus::Signaled {
                signal: 9,
                core_dumped: false
            }
            .to_string(),
            "signal SIGKILL"
        );
        assert_eq!(
            ProcessStatus::Signaled {
                signal: 11,
                core_dumped: true
            }
            .to_string(),
            "signal SIGSEGV (core dumped)"
        );
        assert!(ProcessStatus::Exited(0).success());
        assert!(!ProcessStatus::Exited(1).success());
        assert_eq!(signal_name(200), "signal 200");
    }

    #[test]
    fn credentials_resolve_names_numbers_and_groups() {
        let root = Credentials::resolve(Some("root"), None).unwrap();
        assert_eq!((root.uid, root.gid), (0, 0));
        assert!(root.groups.contains(&0), "{root:?}");
        let n = Credentials::resolve(Some("0"), Some("0")).unwrap();
        assert_eq!((n.uid, n.gid, n.label.as_str()), (0, 0, "0:0"));
        // A number without a passwd entry stands for itself, its group too.
        let lone = Credentials::resolve(Some("54321"), None).unwrap();
        assert_eq!(
            (lone.uid, lone.gid, lone.groups),
            (54321, 54321, vec![54321])
        );
        let e = Credentials::resolve(Some("no-such-user-xyz"), None).unwrap_err();
        assert!(e.contains("no such user: no-such-user-xyz"), "{e}");
        let e = Credentials::resolve(None, Some("no-such-group-xyz")).unwrap_err();
        assert!(e.contains("no such group"), "{e}");
    }

    #[test]
    fn a_missing_working_directory_is_named() {
        let e = fork_exec(&ProcessSpec::new("true").cwd("/no/such/dir"))
            .err()
            .expect("refused");
        assert!(e.to_string().contains("/no/such/dir"), "{e}");
        let e = fork_exec(&ProcessSpec::new("/no/such/program"))
            .err()
            .expect("refused");
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
