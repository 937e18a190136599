//! `--workers N`: a master process that binds the listeners and supervises N worker processes
//! serving on them, as nginx's `worker_processes`.
//!
//! The master binds every endpoint (the plugin's `privileged_start_service`, as root before any
//! privilege drop), keeps the listening sockets, and starts each worker by re-executing its own
//! binary with the same command line and the sockets inherited, as a restart's successor
//! inherits them (`upgrade::spawn_as`, which hands over the TLS session tickets' key chain too,
//! so a session resumes in whichever worker a client reaches), plus `TWISTRS_WORKER`. A worker is a one-process
//! twistrs that takes its listeners from the master, has no pidfile, drops privileges itself
//! and reports on its ready pipe once it serves. The master never starts a service, accepts a
//! connection or runs a protocol: it holds the pidfile, forwards signals, restarts a worker that
//! dies (with a backoff when it dies soon after starting) and hands over on SIGUSR2 like a
//! single process does.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use twistrs_core::timer::later;
use twistrs_core::{Reactor, Service, SignalAction, StopReason};

use crate::daemon::StatusWriter;
use crate::launcher::{self, Ended, LAUNCHER, Plan};
use crate::pidfile::Pidfile;
use crate::{logging, notify, upgrade};

/// Set in a worker's environment: `INDEX MASTER_PID FILE_LOG [METRICS_ENDPOINT]`.
pub const ENV: &str = "TWISTRS_WORKER";
/// Set in a first worker's environment: the warnings its master logged as it checked the
/// plugin (`logging::warning_id`, in hex, comma-separated), for it not to repeat them. A
/// variable of its own, so that a master and a worker of different versions (a binary
/// replaced on disk before a worker is replaced) still read `ENV` alike.
pub const KNOWN_ENV: &str = "TWISTRS_WORKER_KNOWN";

/// A worker that died sooner than this after its start (or before it served) counts as a
/// crash loop: its restart waits, twice as long each time, from `FIRST_DELAY` to `MAX_DELAY`.
const QUICK_DEATH: Duration = Duration::from_secs(1);
const FIRST_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(30);
/// At most this many warnings are passed to a first worker (a few bytes each in its
/// environment); any beyond are simply logged again.
const MAX_KNOWN: usize = 64;
/// How long workers get to serve at start and at a hand-over.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What a worker learned from its master.
#[derive(Debug)]
pub struct WorkerEnv {
    pub index: usize,
    pub master: i32,
    /// The master logs to a file by default even with `-n` (it is a restart's successor).
    pub file_log: bool,
    /// The warnings the master logged as it checked the plugin's options and files just
    /// before starting this worker (a first worker; empty for a replacement): not repeated.
    pub known: Vec<u64>,
    /// The private socket (inherited) on which the master asks for this worker's metrics.
    pub metrics: Option<twistrs_core::Endpoint>,
}

static THIS: OnceLock<Option<WorkerEnv>> = OnceLock::new();

/// Reads and clears `TWISTRS_WORKER` and `TWISTRS_WORKER_KNOWN` (once, at start-up, before
/// any thread exists).
pub fn from_env() -> Option<&'static WorkerEnv> {
    THIS.get_or_init(|| {
        let known = std::env::var(KNOWN_ENV).unwrap_or_default();
        let v = std::env::var(ENV);
        // SAFETY: called at start-up, single-threaded.
        unsafe {
            std::env::remove_var(KNOWN_ENV);
            std::env::remove_var(ENV);
        }
        // The endpoint is last: its path may hold spaces.
        let v = v.ok()?;
        let mut it = v.splitn(4, ' ');
        Some(WorkerEnv {
            index: it.next()?.parse().ok()?,
            master: it.next()?.parse().ok()?,
            file_log: it.next() == Some("1"),
            known: known
                .split(',')
                .filter_map(|h| u64::from_str_radix(h, 16).ok())
                .collect(),
            metrics: it.next().and_then(|ep| ep.parse().ok()),
        })
    })
    .as_ref()
}

/// This process's worker identity, if it is a worker.
pub fn this_worker() -> Option<&'static WorkerEnv> {
    THIS.get().and_then(Option::as_ref)
}

/// In a worker, after the privilege drop (which clears the parent-death signal): a worker
/// never outlives its master, so no orphan keeps the ports of a master killed by SIGKILL.
pub fn after_privilege_drop() {
    if let Some(w) = this_worker() {
        // SAFETY: plain system calls.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            if libc::getppid() != w.master {
                libc::raise(libc::SIGTERM);
            }
        }
    }
}

/// Debug builds only: `TWISTRS_TEST_WORKER_EXIT` set makes every worker exit (status 70) as
/// soon as it has reported that it serves, so the tests can watch a crash loop back off.
pub fn test_crash() {
    #[cfg(debug_assertions)]
    if this_worker().is_some() && std::env::var_os("TWISTRS_TEST_WORKER_EXIT").is_some() {
        log::logger().flush();
        // SAFETY: ends the process at once, as a crash would.
        unsafe { libc::_exit(70) };
    }
}

/// The number of workers `--workers` asks for: `auto` (0) is one per CPU this process may
/// run on (the affinity mask, and a cgroup quota), at least 1. A worker is one process.
pub fn count(m: &clap::ArgMatches) -> usize {
    if this_worker().is_some() {
        return 1;
    }
    pool_size(m)
}

/// `--workers` as a number (`auto`: the CPUs of the affinity mask), in the master and in each
/// worker alike (the worker inherits its master's mask and command line).
fn pool_size(m: &clap::ArgMatches) -> usize {
    match m.get_one::<usize>("workers").copied().unwrap_or(1) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// In a worker, numbers its connections apart from every other worker's (worker 1 of 4:
/// 0, 4, 8, ...; worker 2: 1, 5, 9, ...), so a connection's log system (`Echo,5,127.0.0.1`)
/// names one connection in the log they share. Nothing in a master or a single process.
pub fn number_sessions(m: &clap::ArgMatches, reactor: &mut Reactor) {
    if let Some(w) = this_worker() {
        let step = pool_size(m).max(w.index);
        reactor.number_sessions(
            u32::try_from(w.index.saturating_sub(1)).unwrap_or(0),
            u32::try_from(step).unwrap_or(u32::MAX),
        );
        // The master's UNIX socket files and their locks (naming the master) are its own.
        reactor.sockets_owned_elsewhere();
    }
}

/// The worker PIDs of master `pid`: its children started with `TWISTRS_WORKER`.
pub fn of(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            let ppid = crate::status::stat_fields(&stat)
                .get(4 - 3)
                .and_then(|p| p.parse::<i32>().ok());
            ppid == Some(pid)
                && std::fs::read(format!("/proc/{child}/environ")).is_ok_and(|env| {
                    env.split(|b| *b == 0)
                        .any(|v| v.starts_with(ENV.as_bytes()) && v.get(ENV.len()) == Some(&b'='))
                })
        })
        .collect();
    out.sort_unstable();
    out
}

/// How a child ended, as the log says it.
pub(crate) fn ended(st: std::process::ExitStatus) -> String {
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("ended with exit status {c}"),
        (_, Some(s)) => {
            let name = nix::sys::signal::Signal::try_from(s).map_or("?", |s| s.as_str());
            format!("ended by signal {name}")
        }
        _ => "ended".into(),
    }
}

struct Worker {
    index: usize,
    proc: Option<upgrade::Successor>,
    serving: bool,
    /// A reopen was asked for while it was starting: it may have opened the log before the
    /// rotation, so it is told once it serves (before, SIGHUP would kill it).
    reopen_due: bool,
    started: Instant,
    delay: Duration,
    restart_at: Option<Instant>,
}

impl Worker {
    /// A starting worker's ready pipe: it is marked serving once it says so; what went wrong
    /// if it ended or failed first.
    fn poll_start(&mut self) -> Option<String> {
        let p = self.proc.as_mut().filter(|_| !self.serving)?;
        match p.poll() {
            upgrade::Progress::Waiting => None,
            upgrade::Progress::Ready(pid) => {
                self.serving = true;
                log::info!(target: LAUNCHER, "Worker {} (PID {pid}) serves.", self.index);
                if std::mem::take(&mut self.reopen_due) {
                    // SAFETY: a signal to our own unreaped child.
                    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
                }
                None
            }
            upgrade::Progress::Failed(msg) => Some(msg),
        }
    }
}

/// The workers and what they need to be started again.
struct Pool {
    exe: PathBuf,
    args: Vec<OsString>,
    cwd: PathBuf,
    listeners: Vec<(String, OwnedFd)>,
    /// The UNIX socket files the master made, removed once every worker is gone.
    socket_files: Vec<twistrs_core::reactor::SocketFile>,
    file_log: bool,
    workers: Vec<Worker>,
    metrics: Option<WorkerMetrics>,
}

/// `--metrics` with workers: the master serves the endpoint and asks each worker on a UNIX
/// socket of its own, which the master binds in a private directory and keeps across the
/// worker's restarts (a worker inherits it as it inherits the listeners).
struct WorkerMetrics {
    dir: PathBuf,
    /// Per worker, in index order: the endpoint string it inherits the socket under.
    private: Vec<(String, OwnedFd)>,
    view: Rc<crate::metrics::WorkerView>,
}

/// The start of the name of a master's private directory for its workers' metrics sockets,
/// in the temporary directory: `twistrs-metrics-PID-` and mkdtemp's six characters.
const METRICS_DIR: &str = "twistrs-metrics-";

/// [`METRICS_DIR`] with master `pid`'s PID: what `status` leaves out of its listeners.
pub(crate) fn metrics_dir_prefix(pid: i32) -> String {
    format!("{METRICS_DIR}{pid}-")
}

impl WorkerMetrics {
    fn new(n: usize) -> Result<WorkerMetrics, String> {
        remove_dead_masters_dirs(&std::env::temp_dir());
        // The master's PID in the name: a master killed by SIGKILL cannot remove its
        // directory, and the next one to start removes it for it.
        let template = std::env::temp_dir().join(format!(
            "{}XXXXXX",
            metrics_dir_prefix(std::process::id() as i32)
        ));
        // mkdtemp: a fresh directory of mode 0700, so only the master's user reaches them.
        let dir = nix::unistd::mkdtemp(&template)
            .map_err(|e| format!("cannot make a directory in {}: {e}", template.display()))?;
        let mut private = Vec::new();
        for i in 1..=n {
            let path = dir.join(format!("worker-{i}.sock"));
            let l = std::os::unix::net::UnixListener::bind(&path).map_err(|e| {
                let _ = std::fs::remove_dir_all(&dir);
                format!("cannot bind {}: {e}", path.display())
            })?;
            let ep = twistrs_core::Endpoint::Unix {
                path,
                mode: 0o600,
                backlog: 16,
                lockfile: false,
            };
            private.push((ep.to_string(), OwnedFd::from(l)));
        }
        let sockets = (1..=n)
            .map(|i| dir.join(format!("worker-{i}.sock")))
            .collect();
        Ok(WorkerMetrics {
            dir,
            private,
            view: Rc::new(crate::metrics::WorkerView::new(sockets)),
        })
    }
}

/// Removes the metrics directories in `tmp` that masters of this user left when they were
/// killed (SIGKILL, or `twistrs stop` past its timeout): those whose PID no process has. A
/// PID that was reused since keeps its directory, which is the safe mistake.
fn remove_dead_masters_dirs(tmp: &Path) {
    use std::os::unix::fs::MetadataExt;
    // Without /proc, every PID would look gone: a live master's directory is not ours to take.
    if std::fs::metadata("/proc/self/stat").is_err() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(METRICS_DIR))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
            .filter(|pid| *pid > 0)
        else {
            continue;
        };
        // symlink_metadata: a link planted under that name is not followed, nor removed.
        let Ok(md) = e.path().symlink_metadata() else {
            continue;
        };
        // No such process, or a zombie not reaped yet (its parent is slow, or a subreaper).
        let gone = match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => crate::status::stat_fields(&stat).first() == Some(&"Z"),
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if md.is_dir() && md.uid() == me && gone && !anyone_listens_in(&e.path()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// True if a socket in `dir` takes connections (or a full queue says someone listens): the
/// master is alive whatever its PID says. A master in another PID namespace (a container
/// sharing TMPDIR) has a PID that means nothing here, and seems gone.
fn anyone_listens_in(dir: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        // Cannot look inside: not ours to take.
        return true;
    };
    entries.flatten().any(|e| {
        if !e.file_type().is_ok_and(|t| t.is_socket()) {
            return false;
        }
        // Without blocking: a stuck worker's full backlog would block a plain connect.
        let connected = (|| {
            let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
            s.set_nonblocking(true)?;
            s.connect(&socket2::SockAddr::unix(e.path())?)
        })();
        match connected {
            Ok(()) => true,
            Err(err) => {
                err.kind() == std::io::ErrorKind::WouldBlock
                    || err.raw_os_error() == Some(libc::EINPROGRESS)
            }
        }
    })
}

impl Drop for WorkerMetrics {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pool {
    fn raw_listeners(&self) -> Vec<(String, RawFd)> {
        self.listeners
            .iter()
            .map(|(e, fd)| (e.clone(), fd.as_raw_fd()))
            .collect()
    }

    /// Starts worker `i`, telling it the warnings `known` (`KNOWN_ENV`; empty: none) that it
    /// need not repeat.
    fn spawn(&mut self, i: usize, known: &str) -> Result<(), String> {
        let env = format!(
            "{} {} {}",
            self.workers[i].index,
            std::process::id(),
            u8::from(self.file_log)
        );
        let mut env = env;
        let mut listeners = self.raw_listeners();
        if let Some((ep, fd)) = self.metrics.as_ref().and_then(|m| m.private.get(i)) {
            listeners.push((ep.clone(), fd.as_raw_fd()));
            env = format!("{env} {ep}");
        }
        let w = &mut self.workers[i];
        w.started = Instant::now();
        w.serving = false;
        w.reopen_due = false;
        w.restart_at = None;
        let p = upgrade::spawn_as(
            &self.exe,
            &self.args,
            &self.cwd,
            &listeners,
            None,
            Some((&env, known)),
        )?;
        log::info!(target: LAUNCHER, "Worker {} started, PID {}.", w.index, p.pid());
        w.proc = Some(p);
        Ok(())
    }

    fn pids(&self) -> Vec<u32> {
        self.workers
            .iter()
            .filter_map(|w| w.proc.as_ref().map(upgrade::Successor::pid))
            .collect()
    }

    fn signal_all(&self, sig: i32) {
        for pid in self.pids() {
            // SAFETY: a signal to our own unreaped child (its PID cannot be reused before we
            // reap it).
            unsafe { libc::kill(pid as i32, sig) };
        }
    }

    /// Asks every worker to reopen its log: now if it serves; one still starting has no
    /// handler yet (SIGHUP would kill it), so it is told once it serves.
    fn reopen_logs(&mut self) {
        for w in &mut self.workers {
            match (&w.proc, w.serving) {
                (Some(p), true) => {
                    // SAFETY: a signal to our own unreaped child.
                    unsafe { libc::kill(p.pid() as i32, libc::SIGHUP) };
                }
                (Some(_), false) => w.reopen_due = true,
                (None, _) => {}
            }
        }
    }

    /// Checks each worker: ready pipes, deaths (logged, and a restart scheduled), restarts
    /// that are due.
    fn supervise(&mut self, stopping: bool) {
        let now = Instant::now();
        for i in 0..self.workers.len() {
            let w = &mut self.workers[i];
            let death = if w.serving {
                w.proc
                    .as_mut()
                    .and_then(|p| p.try_wait().ok().flatten())
                    .map(ended)
            } else {
                w.poll_start().map(|msg| format!("failed: {msg}"))
            };
            if let Some(how) = death {
                let pid = w.proc.take().map_or(0, |p| p.pid());
                if let Some(m) = &self.metrics {
                    m.view.ended(i);
                }
                let ran = now.duration_since(w.started);
                if stopping {
                    log::info!(target: LAUNCHER, "Worker {} (PID {pid}) {how}.", w.index);
                    continue;
                }
                w.delay = if !w.serving || ran < QUICK_DEATH {
                    (w.delay * 2).clamp(FIRST_DELAY, MAX_DELAY)
                } else {
                    Duration::ZERO
                };
                let when = if w.delay.is_zero() {
                    String::new()
                } else {
                    format!(" in {:.1} s", w.delay.as_secs_f64())
                };
                log::warn!(target: LAUNCHER,
                    "Worker {} (PID {pid}) {how} after {:.3} s; restarting it{when}.",
                    w.index, ran.as_secs_f64());
                w.serving = false;
                w.restart_at = Some(now + w.delay);
                if let Some(m) = &self.metrics {
                    m.view.restarts.set(m.view.restarts.get() + 1);
                }
            }
            if !stopping
                && self.workers[i].restart_at.is_some_and(|t| t <= now)
                && let Err(e) = self.spawn(i, "")
            {
                let w = &mut self.workers[i];
                w.delay = (w.delay * 2).clamp(FIRST_DELAY, MAX_DELAY);
                log::error!(target: LAUNCHER, "Worker {}: {e}; retrying in {:.1} s.",
                    w.index, w.delay.as_secs_f64());
                w.restart_at = Some(now + w.delay);
            }
        }
        self.count_serving();
    }

    /// Tells the metrics which workers serve now.
    fn count_serving(&self) {
        if let Some(m) = &self.metrics {
            for (i, w) in self.workers.iter().enumerate() {
                m.view.set_serving(i, w.serving);
            }
        }
    }

    /// The next moment `supervise` has a restart to make.
    fn next_due(&self) -> Option<Instant> {
        self.workers.iter().filter_map(|w| w.restart_at).min()
    }

    fn all_serving(&self) -> bool {
        self.workers.iter().all(|w| w.serving)
    }

    fn any_alive(&self) -> bool {
        self.workers.iter().any(|w| w.proc.is_some())
    }

    /// SIGUSR2 to every worker that serves (SIGTERM to one still starting): the master's stop
    /// request (each drains as a single process does on SIGTERM, and once draining ignores
    /// SIGTERM, SIGINT and SIGUSR2, so a SIGTERM sent to the whole service and this request
    /// do not add up to a second signal), then
    /// waits for them; a second stop signal to the master becomes a SIGQUIT, which ends the
    /// drains at once; what is left after the drain's deadline and a margin is killed.
    ///
    /// With `handover` (a restart's old master, once the new one's workers serve) a serving
    /// worker gets `upgrade::HANDOVER_END` instead of SIGUSR2: it drains as after a hand-over,
    /// serving on the sessions that can (`Reactor::drain_handover`), until SIGUSR2, sent
    /// once the service stops for real (`Handle::end_handover`).
    fn stop_all(&mut self, reactor: &mut Reactor, timeout: Duration, handover: bool) {
        let mut handing_over = handover;
        for w in &mut self.workers {
            w.restart_at = None;
            if let Some(p) = &w.proc {
                // A worker still starting ignores SIGUSR2 until its handlers are in place
                // (it would serve on, and be killed at the deadline): SIGTERM ends it before
                // then, and after, stops it as soon as it serves (it has no connection yet).
                let sig = if w.serving && handover {
                    upgrade::HANDOVER_END
                } else if w.serving {
                    libc::SIGUSR2
                } else {
                    libc::SIGTERM
                };
                // SAFETY: a signal to our own unreaped child.
                unsafe { libc::kill(p.pid() as i32, sig) };
            }
        }
        let deadline = later(
            Instant::now(),
            timeout.saturating_add(Duration::from_secs(5)),
        );
        let began = Instant::now();
        while self.any_alive() && Instant::now() < deadline {
            let _ = reactor.turn(Some(Duration::from_millis(20)));
            // One soon after the first is the same stop (`SAME_STOP`: systemd's SIGTERM to
            // every process, a restart's old master passing one on, two `stop`s at once).
            if reactor.take_stop().is_some() && began.elapsed() >= twistrs_core::SAME_STOP {
                // A second signal: the workers close their connections at once.
                self.signal_all(libc::SIGQUIT);
            }
            if handing_over && reactor.handle().handover_ended() {
                handing_over = false;
                self.signal_all(libc::SIGUSR2);
            }
            self.supervise(true);
        }
        for w in &mut self.workers {
            if let Some(p) = w.proc.take() {
                log::warn!(target: LAUNCHER, "Worker {} (PID {}) did not stop: killing it.",
                    w.index, p.pid());
                p.kill();
            }
        }
    }
}

/// The master's run: the steps of `launcher::serve` that are not the plugin's, then the
/// workers instead of the services.
#[allow(clippy::too_many_arguments)]
pub(crate) fn master(
    n: usize,
    plan: &Plan,
    service: &mut Box<dyn Service>,
    pidfile: &mut Option<Pidfile>,
    status: &mut StatusWriter,
    inherited: Option<upgrade::Inherited>,
    exe: &Path,
    args: &[OsString],
    systemd_fds: bool,
    logger: &'static logging::Logger,
) -> Result<Ended, String> {
    // As a single process, but no chroot: the master must re-execute its binary (for each
    // worker and at a restart), so each worker chroots itself.
    crate::launcher::settle(plan, false, status, systemd_fds, logger)?;
    // A log outside the jail: each worker finds it as it chroots; said here, for them all.
    if let Some(dir) = &plan.chroot
        && let Err(e) = logger.check_chroot(dir)
    {
        launcher::log_outside_jail(&e);
    }
    let successor = inherited.is_some();
    if !successor && let Some(p) = pidfile.as_mut() {
        p.write_pid()
            .map_err(|e| format!("cannot write pidfile {}: {e}", p.path().display()))?;
    }
    launcher::raise_fd_limit();
    // `--metrics` is the master's own listener, not the workers': a predecessor's socket for
    // it is taken out before the plugin's endpoints are bound.
    let mut inherited = inherited;
    let metrics_fd = plan.metrics.as_ref().and_then(|ep| {
        let key = ep.to_string();
        let inh = inherited.as_mut()?;
        let at = inh.listeners.iter().position(|(e, _)| *e == key)?;
        Some((key, inh.listeners.swap_remove(at).1))
    });
    let (listeners, socket_files) = bind(service, inherited)?;
    // The workers drop privileges and must be able to reopen the log after a rotation. Called
    // without `-u` too: it takes (and so closes) the descriptors the plugin's start noted.
    launcher::give_logs(plan, logger);
    let mut reactor = Reactor::new().map_err(|e| format!("cannot create the reactor: {e}"))?;
    launcher::keep_tickets_current(&reactor.handle());
    let reopen = std::rc::Rc::new(std::cell::Cell::new(false));
    watch_signals(&mut reactor, &reopen).map_err(|e| format!("cannot watch signals: {e}"))?;
    let metrics = match &plan.metrics {
        Some(ep) => {
            let m = WorkerMetrics::new(n)?;
            if let Some((key, fd)) = metrics_fd {
                // SAFETY: our predecessor passed each listening socket exactly once.
                let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                reactor.inherit_listener(key, owned);
            }
            let f = reactor.add_factory(Box::new(crate::metrics::MetricsFactory::new(
                crate::metrics::Source::Workers(m.view.clone()),
            )));
            let id = reactor.listen(ep, f).map_err(|e| e.to_string())?;
            Some((m, id))
        }
        None => None,
    };
    let (metrics, metrics_listener) = metrics.unzip();
    let mut pool = Pool {
        exe: exe.to_path_buf(),
        args: args[1..].to_vec(),
        cwd: plan.start_dir.clone(),
        listeners,
        socket_files,
        file_log: successor,
        workers: (1..=n)
            .map(|index| Worker {
                index,
                proc: None,
                serving: false,
                reopen_due: false,
                started: Instant::now(),
                delay: Duration::ZERO,
                restart_at: None,
            })
            .collect(),
        metrics,
    };
    log::info!(target: LAUNCHER, "Master (PID {}) starting {n} workers.", std::process::id());
    // Each worker drops privileges itself; the warning for a `-u` already ours (the master
    // runs as the workers start) is said here, for them all.
    if let Some(w) = plan.target.already() {
        log::warn!(target: LAUNCHER, "{w}");
    }
    // The warnings said while the plugin's options and files were checked (building the
    // service, binding): the first workers check the same moments later and would only
    // repeat them. A worker started later, to replace one, says them again: files change.
    let known: Vec<String> = logger
        .started()
        .iter()
        .take(MAX_KNOWN)
        .map(|h| format!("{h:x}"))
        .collect();
    let known = known.join(",");
    let mut restart_due = false;
    let started = start_workers(&mut pool, &mut reactor, &known, &mut restart_due);
    if let Ok(Some(sig)) = started {
        let name = twistrs_core::process::signal_name(sig);
        log::info!(target: "twistrs.reactor", "Received {name} while the workers started, shutting down.");
    }
    if !matches!(started, Ok(None)) {
        pool.stop_all(&mut reactor, Duration::from_secs(1), false);
        // A start that failed or was stopped leaves no socket file behind, as a single
        // process's does; a restart's successor leaves them to its predecessor, which
        // serves on them.
        if !successor {
            remove_socket_files(&mut pool);
        }
    }
    match started {
        Ok(None) => {}
        // A stop before every worker served: the start did not complete (the waiting starter,
        // or a restart's predecessor, hears why), and the master ends as a stop ends it.
        Ok(Some(sig)) => {
            let name = twistrs_core::process::signal_name(sig);
            status.fail(&format!("stopped by {name} while the workers started"));
            log::info!(target: "twistrs.reactor", "Main loop terminated.");
            return Ok(Ended::Signal(sig));
        }
        Err(e) => return Err(e),
    }
    if successor && let Some(p) = pidfile.as_mut() {
        p.write_pid()
            .map_err(|e| format!("cannot write pidfile {}: {e}", p.path().display()))?;
    }
    if let Some(p) = pidfile.as_mut() {
        // The master never chroots (each worker does).
        p.serving(false);
    }
    status.ok();
    if successor {
        notify::notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
    } else {
        notify::notify("READY=1");
    }
    log::info!(target: LAUNCHER, "{n} workers serve.");
    // What a failed restart left to do: a stop, or a restart asked for during it (said in
    // the log as it came), or during the start.
    let mut next: Option<StopReason> = restart_due.then_some(StopReason::Signal(libc::SIGUSR2));
    let ended = loop {
        let said = next.is_some();
        if !said {
            let wait = pool.next_due().map_or(Duration::from_millis(500), |t| {
                t.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(500))
            });
            reactor
                .turn(Some(wait))
                .map_err(|e| format!("the reactor failed: {e}"))?;
            if reopen.replace(false) {
                pool.reopen_logs();
            }
        }
        match next.take().or_else(|| reactor.take_stop()) {
            Some(StopReason::Signal(libc::SIGUSR2)) => {
                let mut meanwhile = upgrade::Meanwhile::default();
                let restarted = restart(
                    &mut pool,
                    &mut reactor,
                    plan,
                    pidfile.as_ref(),
                    exe,
                    (&reopen, &mut meanwhile),
                )?;
                if let Some(pid) = restarted {
                    // The successor serves `--metrics` on the same socket now: a scrape that
                    // reached us while our workers drain would tell the old figures, every
                    // other one, and the service's counters would jump back and forth.
                    reactor.abandon_listeners();
                    if let Some(id) = metrics_listener {
                        reactor.stop_listening(id);
                    }
                    meanwhile.handed_over(pid);
                    break Ended::HandedOver(pid);
                }
                next = meanwhile.next();
                if next.is_some() {
                    continue;
                }
            }
            Some(StopReason::Signal(sig)) => {
                let name = if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                if !said {
                    log::info!(target: "twistrs.reactor", "Received {name}, shutting down.");
                }
                break Ended::Signal(sig);
            }
            Some(StopReason::Requested) => break Ended::Requested,
            None => {}
        }
        pool.supervise(false);
    };
    let handover = matches!(ended, Ended::HandedOver(_));
    // Not after a hand-over: the successor is the service now (see the launcher's loop).
    if !handover {
        notify::notify("STOPPING=1");
    }
    if !handover {
        // A predecessor still draining after it handed over to us serves on no longer.
        upgrade::tell_predecessor();
    }
    launcher::no_restart_while_stopping(&mut reactor, pidfile.as_ref(), &ended)
        .map_err(|e| format!("cannot watch signals: {e}"))?;
    if let Ended::HandedOver(succ) = ended {
        launcher::pass_stops_on(&mut reactor, succ)
            .map_err(|e| format!("cannot watch signals: {e}"))?;
    }
    pool.stop_all(&mut reactor, plan.shutdown_timeout, handover);
    if matches!(ended, Ended::HandedOver(_)) {
        // The metrics socket is the successor's now (a UNIX one stays in place).
        reactor.abandon_listeners();
    } else {
        remove_socket_files(&mut pool);
    }
    log::info!(target: "twistrs.reactor", "Main loop terminated.");
    Ok(ended)
}

/// The sockets the master binds (a copy of each, with its endpoint string) and the UNIX
/// socket files it made.
type Bound = (
    Vec<(String, OwnedFd)>,
    Vec<twistrs_core::reactor::SocketFile>,
);

/// Binds every endpoint on a reactor used for nothing else (or takes a predecessor's
/// sockets), keeps a copy of each socket, and closes the reactor without unlinking anything.
fn bind(
    service: &mut Box<dyn Service>,
    inherited: Option<upgrade::Inherited>,
) -> Result<Bound, String> {
    let mut r = Reactor::new().map_err(|e| format!("cannot create the reactor: {e}"))?;
    if let Some(inh) = &inherited {
        for (ep, fd) in &inh.listeners {
            // SAFETY: our predecessor passed each listening socket exactly once.
            let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(*fd) };
            r.inherit_listener(ep.clone(), owned);
        }
    }
    // Bound for the workers; the plugin's factories start in them, not here.
    r.bind_only();
    service
        .privileged_start_service(&mut r.service_host())
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (ep, fd) in r.listener_fds() {
        // SAFETY: the reactor owns `fd` until it is dropped below; we take a copy.
        let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let copy = b
            .try_clone_to_owned()
            .map_err(|e| format!("cannot keep the socket of {ep}: {e}"))?;
        out.push((ep, copy));
    }
    let files = r.take_socket_files();
    drop(r);
    Ok((out, files))
}

/// Starts every worker and waits until each serves; the first failure is the start's. A stop
/// (SIGTERM, SIGINT: `twistrs stop` or a restart's predecessor passing one on) ends the wait
/// too, rather than let it last up to 60 s for workers that may never serve: its signal is
/// returned. A SIGUSR2 is kept (`restart_due`) for once they serve.
fn start_workers(
    pool: &mut Pool,
    reactor: &mut Reactor,
    known: &str,
    restart_due: &mut bool,
) -> Result<Option<i32>, String> {
    for i in 0..pool.workers.len() {
        pool.spawn(i, known)?;
    }
    let deadline = Instant::now() + START_TIMEOUT;
    while !pool.all_serving() {
        if Instant::now() >= deadline {
            return Err("the workers did not serve within 60 s".into());
        }
        reactor
            .turn(Some(Duration::from_millis(10)))
            .map_err(|e| format!("the reactor failed: {e}"))?;
        match reactor.take_stop() {
            Some(StopReason::Signal(libc::SIGUSR2)) => *restart_due = true,
            Some(StopReason::Signal(sig)) => return Ok(Some(sig)),
            // The master runs no service that could ask.
            Some(StopReason::Requested) => return Ok(Some(libc::SIGTERM)),
            None => {}
        }
        for w in &mut pool.workers {
            if let Some(msg) = w.poll_start() {
                w.proc = None;
                return Err(format!("worker {} failed to start: {msg}", w.index));
            }
        }
    }
    Ok(None)
}

/// SIGUSR2: a new master with its own workers; once they all serve, ours drain. What came
/// meanwhile (a stop, a reload: `reopen` is set by one, another restart) is left in
/// `meanwhile`; our workers are told of a reload at once, and none is restarted once a stop
/// came (systemd's SIGTERM to every process ends them too).
fn restart(
    pool: &mut Pool,
    reactor: &mut Reactor,
    plan: &Plan,
    pidfile: Option<&Pidfile>,
    exe: &Path,
    (reopen, meanwhile): (&std::cell::Cell<bool>, &mut upgrade::Meanwhile),
) -> Result<Option<u32>, String> {
    log::info!(target: LAUNCHER, "Received SIGUSR2, restarting: starting {}.", exe.display());
    let report = |text: &str| {
        if let Some(p) = pidfile {
            upgrade::write_status(&p.report_place(), text);
        }
    };
    if let Some(msg) = crate::launcher::cannot_restart(false) {
        log::error!(target: LAUNCHER, "Restart failed: {msg}; still serving.");
        report(&format!("failed {msg}"));
        return Ok(None);
    }
    // The master's own listener (`--metrics`) first, then the plugin's: the successor takes
    // the first socket of a given endpoint string for `--metrics`, so one given the same
    // string as a plugin's (`tcp:0`, say) is still matched up with its own.
    let mut listeners = reactor.listener_fds();
    listeners.extend(pool.raw_listeners());
    let mut succ = match upgrade::spawn(
        exe,
        &pool.args,
        &plan.start_dir,
        &listeners,
        pidfile.map(Pidfile::raw_fd),
    ) {
        Ok(s) => s,
        Err(e) => {
            log::error!(target: LAUNCHER, "Restart failed: {e}");
            report(&format!("failed {e}"));
            return Ok(None);
        }
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        reactor
            .turn(Some(Duration::from_millis(20)))
            .map_err(|e| format!("the reactor failed: {e}"))?;
        meanwhile.take(reactor, succ.pid());
        if reopen.replace(false) {
            pool.reopen_logs();
            meanwhile.reload = true;
        }
        pool.supervise(meanwhile.stop.is_some());
        let msg = match succ.poll() {
            upgrade::Progress::Waiting if Instant::now() < deadline => continue,
            upgrade::Progress::Waiting => {
                let pid = succ.pid();
                succ.kill();
                format!("the new process (PID {pid}) did not serve within 60 s")
            }
            upgrade::Progress::Failed(msg) => msg,
            upgrade::Progress::Ready(pid) => {
                log::info!(target: LAUNCHER,
                    "PID {pid} and its workers serve; stopping ours, which drain their connections.");
                report(&format!("ok {pid}"));
                return Ok(Some(pid));
            }
        };
        meanwhile.failed(&msg, report);
        return Ok(None);
    }
}

/// The master's signals: SIGTERM/SIGINT stop (the reactor's), SIGUSR2 restarts, SIGHUP and
/// SIGUSR1 reopen the master's log and are passed on to the workers.
fn watch_signals(
    reactor: &mut Reactor,
    reopen: &std::rc::Rc<std::cell::Cell<bool>>,
) -> std::io::Result<()> {
    reactor.on_signal(libc::SIGUSR2, SignalAction::Stop)?;
    for sig in [libc::SIGHUP, libc::SIGUSR1] {
        let flag = reopen.clone();
        reactor.on_signal(
            sig,
            SignalAction::Call(Box::new(move || {
                launcher::reopen_log();
                flag.set(true);
            })),
        )?;
    }
    Ok(())
}

/// At a stop the workers leave UNIX socket files in place (the master's sockets outlive
/// each of them); the master removes them once every worker is gone, through the
/// directories it made them in (it is root for its whole life, and the directories may be
/// under one the service user owns: `SocketFile`).
fn remove_socket_files(pool: &mut Pool) {
    for f in pool.socket_files.drain(..) {
        f.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_masters_directory_goes_unless_someone_listens_in_it() {
        let tmp = tempfile::tempdir().unwrap();
        // No process has this PID (above any pid_max), as a master in another PID namespace
        // seems from here.
        let pid = i32::MAX - 1;
        let dead = tmp.path().join(format!("twistrs-metrics-{pid}-aaaaaa"));
        let alive = tmp.path().join(format!("twistrs-metrics-{pid}-bbbbbb"));
        let mine = tmp
            .path()
            .join(format!("twistrs-metrics-{}-cccccc", std::process::id()));
        for d in [&dead, &alive, &mine] {
            std::fs::create_dir(d).unwrap();
        }
        // A dead master's socket file stays, with nobody listening on it.
        drop(std::os::unix::net::UnixListener::bind(dead.join("worker-1.sock")).unwrap());
        let _live = std::os::unix::net::UnixListener::bind(alive.join("worker-1.sock")).unwrap();
        remove_dead_masters_dirs(tmp.path());
        assert!(!dead.exists(), "nobody listens: removed");
        assert!(alive.is_dir(), "its socket takes connections: kept");
        assert!(mine.is_dir(), "a live PID: kept");
    }
}
