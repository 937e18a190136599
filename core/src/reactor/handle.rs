//! `Handle`: a cheap, clonable reference to the reactor for timers, threads and commands.
//!
//! Commands (write to another connection, connect out, stop) are queued and carried out by the
//! reactor right after the current callback returns, so no callback ever re-enters another.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::owned::Registration;
use crate::client::{Destination, Resolver, system_resolver};
use crate::deferred::Deferred;
use crate::error::Failure;
use crate::process::{ProcessError, ProcessId, ProcessProtocol, ProcessSpec, ProcessStatus};
use crate::protocol::{ClientFactory, DatagramProtocol};
use crate::reactor::PortId;
use crate::relay::{ConnectRelay, RelayOptions};
use crate::service::ServiceHost;
use crate::threads::{JobResult, ThreadPool};
use crate::timer::{Clock, DelayedCall, Target, TimerQueue};
use crate::transport::ConnId;

/// Something for the reactor to do once the current callback returns.
pub(crate) enum Command {
    Write(ConnId, Vec<u8>),
    Lose(ConnId),
    Abort(ConnId),
    PauseReading(ConnId),
    ResumeReading(ConnId),
    Notify(ConnId, Box<dyn Any>),
    Connect {
        dest: Destination,
        factory: Box<dyn ClientFactory>,
        timeout: Duration,
    },
    OpenUdp(SocketAddr, Box<dyn DatagramProtocol>),
    SendDatagram(PortId, Vec<u8>, SocketAddr),
    ClosePort(PortId),
    AcceptOne {
        listener: std::net::TcpListener,
        factory: Box<dyn ClientFactory>,
        timeout: Duration,
        reg: Rc<Registration>,
    },
    OpenOwnedUdp {
        sock: std::net::UdpSocket,
        proto: Box<dyn DatagramProtocol>,
        reg: Rc<Registration>,
    },
    CloseOwned(Rc<Registration>),
    /// `Transport::connect_relay`.
    ConnectRelay(Box<ConnectRelay>),
    /// `Handle::join`.
    Join {
        client: ConnId,
        dest: ConnId,
        options: RelayOptions,
    },
    /// A host name of an outgoing connection resolved (or not), on a worker thread.
    Resolved {
        key: usize,
        serial: u64,
        result: std::io::Result<Vec<SocketAddr>>,
    },
    /// The connect deadline passed while the name was resolving.
    ResolveTimedOut {
        key: usize,
        serial: u64,
    },
    Stop,
    /// A child forked by `spawn_process`, for the reactor to take in before its next poll.
    Adopt(Box<Adopted>),
    WriteToProcess(ProcessId, Vec<u8>),
    CloseProcessStdin(ProcessId),
    WatchAgain(super::WatchId),
    WithHost(Box<dyn FnOnce(&mut ServiceHost<'_>)>),
    /// Calls back with a snapshot of the listeners' counters (for a metrics scrape).
    Stats(Box<dyn FnOnce(Vec<crate::reactor::ListenerStats>, Vec<crate::reactor::PortStats>)>),
}

/// A child just forked: its protocol and our ends of its pipes.
pub(crate) struct Adopted {
    pub(crate) id: ProcessId,
    pub(crate) pipes: [Option<std::os::fd::OwnedFd>; 3],
    pub(crate) proto: Box<dyn ProcessProtocol>,
}

/// A child not reaped yet: what signalling and stopping it need.
pub(crate) struct Child {
    pub(crate) id: ProcessId,
    /// It leads a process group of its own (`new_process_group`, `new_session`): a stop is
    /// sent to the whole group.
    group: bool,
    /// `ProcessSpec::group_dies_with_it`: the rest of the group gets SIGKILL at its exit.
    group_dies_with_it: bool,
    kill_time: Duration,
    /// When the SIGKILL of a stop is due (a stop was asked for).
    pub(crate) kill_at: Option<Instant>,
    kill_timer: Option<DelayedCall>,
}

type Completion = Box<dyn FnOnce(JobResult)>;

pub(crate) struct Shared {
    pub(crate) clock: Clock,
    pub(crate) timers: Rc<TimerQueue>,
    pub(crate) commands: RefCell<VecDeque<Command>>,
    pool: RefCell<Option<ThreadPool>>,
    pool_size: usize,
    waker: Option<Arc<mio::Waker>>,
    completions: RefCell<HashMap<u64, Completion>>,
    next_job: Cell<u64>,
    pub(crate) reopen_hooks: RefCell<Vec<Box<dyn FnMut()>>>,
    /// Children not reaped yet, by serial.
    pub(crate) children: RefCell<BTreeMap<u64, Child>>,
    next_process: Cell<u64>,
    resolver: RefCell<Option<Resolver>>,
    /// `Handle::end_handover` was called.
    handover_ended: Cell<bool>,
}

/// A reference to the reactor, usable from any callback on the reactor thread.
#[derive(Clone)]
pub struct Handle(pub(crate) Rc<Shared>);

impl Handle {
    pub(crate) fn new(clock: Clock, waker: Option<Arc<mio::Waker>>, pool_size: usize) -> Self {
        Handle(Rc::new(Shared {
            timers: TimerQueue::new(clock.clone()),
            clock,
            commands: RefCell::new(VecDeque::new()),
            pool: RefCell::new(None),
            pool_size,
            waker,
            completions: RefCell::new(HashMap::new()),
            next_job: Cell::new(0),
            reopen_hooks: RefCell::new(Vec::new()),
            children: RefCell::new(BTreeMap::new()),
            next_process: Cell::new(0),
            resolver: RefCell::new(None),
            handover_ended: Cell::new(false),
        }))
    }

    /// A handle with no reactor behind it, for tests (see [`crate::testing`]).
    pub fn detached(clock: Clock) -> Self {
        Handle::new(clock, None, 2)
    }

    pub(crate) fn timers(&self) -> &Rc<TimerQueue> {
        &self.0.timers
    }

    pub(crate) fn push(&self, c: Command) {
        self.0.commands.borrow_mut().push_back(c);
    }

    pub(crate) fn pop_command(&self) -> Option<Command> {
        self.0.commands.borrow_mut().pop_front()
    }

    /// The time as of the start of this reactor turn (cheap: no system call).
    pub fn now(&self) -> Instant {
        self.0.clock.now()
    }

    /// `now` as a compact [`crate::timer::Tick`].
    pub(crate) fn tick(&self) -> crate::timer::Tick {
        self.0.clock.tick()
    }

    /// The reactor's clock.
    pub fn clock(&self) -> &Clock {
        &self.0.clock
    }

    /// Runs `f` on the reactor thread after `delay` (Twisted's `callLater`).
    pub fn call_later(&self, delay: Duration, f: impl FnOnce() + 'static) -> DelayedCall {
        self.0.timers.schedule(delay, Target::Call(Box::new(f)))
    }

    /// Timers in the reactor's queue, live or awaiting removal (for diagnostics and tests:
    /// it stays proportional to the live timers).
    pub fn timer_count(&self) -> usize {
        self.0.timers.len()
    }

    /// Queues `data` on another connection.
    pub fn write_to(&self, conn: ConnId, data: Vec<u8>) {
        self.push(Command::Write(conn, data));
    }

    /// Closes another connection after its output is flushed.
    pub fn lose_connection(&self, conn: ConnId) {
        self.push(Command::Lose(conn));
    }

    /// Calls `f` with a snapshot of every factory's counters once the current callback returns:
    /// counting stays plain integers in the reactor, read only when someone asks.
    pub fn listener_stats(
        &self,
        f: impl FnOnce(Vec<crate::reactor::ListenerStats>, Vec<crate::reactor::PortStats>) + 'static,
    ) {
        self.push(Command::Stats(Box::new(f)));
    }

    /// Closes another connection now.
    pub fn abort_connection(&self, conn: ConnId) {
        self.push(Command::Abort(conn));
    }

    /// Stops reading from another connection (for relays whose other side is slow).
    pub fn pause_reading(&self, conn: ConnId) {
        self.push(Command::PauseReading(conn));
    }

    /// Resumes reading from another connection.
    pub fn resume_reading(&self, conn: ConnId) {
        self.push(Command::ResumeReading(conn));
    }

    /// Delivers `msg` to a connection's `Protocol::notified`.
    pub fn notify(&self, conn: ConnId, msg: Box<dyn Any>) {
        self.push(Command::Notify(conn, msg));
    }

    /// Opens an outgoing TCP connection to an address (Twisted's `connectTCP`).
    pub fn connect_tcp(
        &self,
        addr: SocketAddr,
        factory: Box<dyn ClientFactory>,
        timeout: Duration,
    ) {
        self.connect(addr.into(), factory, timeout);
    }

    /// Opens an outgoing connection to `dest`: a host name is resolved on a worker thread, and
    /// each of its addresses is tried in turn until one connects; resolving and connecting
    /// together must finish within `timeout`. The factory builds the protocol, or hears why
    /// not (`client_connection_failed`).
    pub fn connect(&self, dest: Destination, factory: Box<dyn ClientFactory>, timeout: Duration) {
        self.push(Command::Connect {
            dest,
            factory,
            timeout,
        });
    }

    /// Opens a client datagram port bound to `bind` (Twisted's `listenUDP(0, proto)` as a
    /// resolver uses it): `proto` hears `port_opened` with its transport, then the datagrams
    /// that arrive, until `close_port`.
    pub fn open_udp(&self, bind: SocketAddr, proto: Box<dyn DatagramProtocol>) {
        self.push(Command::OpenUdp(bind, proto));
    }

    /// Sends one datagram from `port` (a listener or a client port) outside its callbacks.
    pub fn send_datagram(&self, port: PortId, data: Vec<u8>, to: SocketAddr) {
        self.push(Command::SendDatagram(port, data, to));
    }

    /// Closes a datagram port; its protocol hears `stop_protocol`.
    pub fn close_port(&self, port: PortId) {
        self.push(Command::ClosePort(port));
    }

    /// Joins two open connections into a relay ([`crate::relay`]), as `connect_relay` does
    /// with its new connection: `client` is the side `on_end` calls the client. If either is
    /// gone, closing or already in a relay, there is no relay: `on_end` hears at once that it
    /// ended unclean with nothing carried, and a side still open without a relay closes.
    pub fn join(&self, client: ConnId, dest: ConnId, options: RelayOptions) {
        self.push(Command::Join {
            client,
            dest,
            options,
        });
    }

    /// Replaces the resolver of outgoing connections to host names (Twisted's
    /// `installResolver`); the system's (`getaddrinfo`) by default.
    pub fn set_resolver(&self, resolver: Resolver) {
        *self.0.resolver.borrow_mut() = Some(resolver);
    }

    pub(crate) fn resolver(&self) -> Resolver {
        self.0
            .resolver
            .borrow_mut()
            .get_or_insert_with(system_resolver)
            .clone()
    }

    /// Calls `hook` whenever files are reopened (the launcher does so on SIGHUP and SIGUSR1,
    /// with its own log): for a plugin's own files, such as an access log.
    pub fn on_reopen(&self, hook: Box<dyn FnMut()>) {
        self.0.reopen_hooks.borrow_mut().push(hook);
    }

    /// Runs the `on_reopen` hooks (a hook may add hooks: they run next time), as one reload:
    /// certificate files that several hooks reload are read and reported once.
    pub fn reopen_files(&self) {
        let mut hooks = std::mem::take(&mut *self.0.reopen_hooks.borrow_mut());
        crate::tls::reloading(|| {
            for h in &mut hooks {
                h();
            }
        });
        let mut shared = self.0.reopen_hooks.borrow_mut();
        hooks.append(&mut shared);
        *shared = hooks;
    }

    /// Runs `f` with the reactor as services see it, once the current callback returns: for
    /// a service that opens or closes ports after its start (inetd re-reading its file on
    /// SIGHUP, from an [`on_reopen`](Handle::on_reopen) hook).
    pub fn with_service_host(&self, f: impl FnOnce(&mut ServiceHost<'_>) + 'static) {
        self.push(Command::WithHost(Box::new(f)));
    }

    /// Watches a watched port again after its callback (inetd: the `wait` service's child
    /// exited). A stale id (the port closed since) is ignored.
    pub fn watch_again(&self, id: super::WatchId) {
        self.push(Command::WatchAgain(id));
    }

    /// The service is stopped for real while this process drains after a hand-over (the
    /// successor stops): the connections still serving on through the hand-over are asked
    /// to stop now (`Reactor::drain_handover`), not at the margin before the deadline.
    pub fn end_handover(&self) {
        self.0.handover_ended.set(true);
    }

    /// True once [`Handle::end_handover`] was called.
    pub fn handover_ended(&self) -> bool {
        self.0.handover_ended.get()
    }

    /// Asks the reactor to stop (Twisted's `reactor.stop()`).
    pub fn stop(&self) {
        self.push(Command::Stop);
    }

    /// Starts a child (Twisted's `spawnProcess`): forks and executes `spec` now, and returns
    /// its id once it runs (an exec that fails, a missing program or directory, a refused
    /// privilege change, is this error, and leaves no child). `proto` hears from it from the
    /// reactor's next step on, starting with `connection_made`.
    pub fn spawn_process(
        &self,
        spec: ProcessSpec,
        proto: Box<dyn ProcessProtocol>,
    ) -> std::io::Result<ProcessId> {
        let forked = crate::process::fork_exec(&spec)?;
        let serial = self.0.next_process.get();
        self.0.next_process.set(serial + 1);
        let id = ProcessId {
            serial,
            pid: forked.pid,
        };
        self.0.children.borrow_mut().insert(
            serial,
            Child {
                id,
                group: spec.new_process_group || spec.new_session,
                group_dies_with_it: spec.group_dies_with_it
                    && (spec.new_process_group || spec.new_session),
                kill_time: spec.kill_time,
                kill_at: None,
                kill_timer: None,
            },
        );
        self.push(Command::Adopt(Box::new(Adopted {
            id,
            pipes: forked.pipes,
            proto,
        })));
        Ok(id)
    }

    /// Sends `sig` to a child not reaped yet (so its PID is still its own).
    pub fn signal_process(&self, id: ProcessId, sig: i32) -> Result<(), ProcessError> {
        if !self.0.children.borrow().contains_key(&id.serial) {
            return Err(ProcessError::ExitedAlready);
        }
        // SAFETY: kill(2) on the PID of our own child, which is not reaped: no other process
        // can have that PID.
        if unsafe { libc::kill(id.pid as libc::pid_t, sig) } < 0 {
            return Err(ProcessError::Io(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Stops a child: SIGTERM now, SIGKILL after its spec's kill time if it still runs.
    /// Asking again changes nothing; a child gone already is left alone. A child in a
    /// process group of its own is stopped with its group: a shell's `sleep`, a program's
    /// helper, would otherwise live on, holding what it inherited (inetd's socket, which a
    /// new start then cannot bind).
    pub fn stop_process(&self, id: ProcessId) {
        let kill_time = match self.0.children.borrow().get(&id.serial) {
            Some(c) if c.kill_at.is_none() => c.kill_time,
            _ => return,
        };
        let _ = self.stop_signal(id, libc::SIGTERM);
        let h = self.clone();
        let timer = self.call_later(kill_time, move || {
            let _ = h.stop_signal(id, libc::SIGKILL);
        });
        if let Some(c) = self.0.children.borrow_mut().get_mut(&id.serial) {
            c.kill_at = Some(timer.deadline());
            c.kill_timer = Some(timer);
        }
    }

    /// A stop's `sig` to a child not reaped yet: to its process group if it leads one (its
    /// PGID is its PID, which no other group can have while it is unreaped), else to it.
    pub(crate) fn stop_signal(&self, id: ProcessId, sig: i32) -> Result<(), ProcessError> {
        let group = match self.0.children.borrow().get(&id.serial) {
            Some(c) => c.group,
            None => return Err(ProcessError::ExitedAlready),
        };
        let pid = id.pid as libc::pid_t;
        // SAFETY: getpgid(2) and kill(2) on our unreaped child and the group it still leads
        // (a child that moved to another group is signalled alone, as are its own).
        if group && unsafe { libc::getpgid(pid) } == pid && unsafe { libc::kill(-pid, sig) } == 0 {
            return Ok(());
        }
        self.signal_process(id, sig)
    }

    /// True if a stop was asked for this child and it has not been reaped.
    pub fn process_stopping(&self, id: ProcessId) -> bool {
        self.0
            .children
            .borrow()
            .get(&id.serial)
            .is_some_and(|c| c.kill_at.is_some())
    }

    /// Queues `data` for a child's stdin pipe.
    pub fn write_to_process(&self, id: ProcessId, data: Vec<u8>) {
        self.push(Command::WriteToProcess(id, data));
    }

    /// Closes a child's stdin once what was queued has been written.
    pub fn close_process_stdin(&self, id: ProcessId) {
        self.push(Command::CloseProcessStdin(id));
    }

    /// Children started and not reaped yet.
    pub fn running_processes(&self) -> usize {
        self.0.children.borrow().len()
    }

    /// The PIDs of the children the reactor started and has not reaped.
    pub(crate) fn own_child_pids(&self) -> std::collections::HashSet<i32> {
        self.0
            .children
            .borrow()
            .values()
            .map(|c| c.id.pid as i32)
            .collect()
    }

    /// Reaps every child of ours that has exited (waitpid with WNOHANG on each: a child
    /// started by other code in this process is never taken from it).
    pub(crate) fn reap_children(&self) -> Vec<(ProcessId, ProcessStatus)> {
        use nix::sys::wait::{WaitPidFlag, waitpid};
        let ids: Vec<(ProcessId, bool)> = self
            .0
            .children
            .borrow()
            .values()
            .map(|c| (c.id, c.group_dies_with_it))
            .collect();
        let mut out = Vec::new();
        for (id, group_dies) in ids {
            let pid = nix::unistd::Pid::from_raw(id.pid as i32);
            if group_dies {
                kill_group_if_exited(id.pid as libc::pid_t);
            }
            let status = loop {
                match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                    Ok(ws) => break ProcessStatus::from_wait(ws),
                    Err(nix::errno::Errno::EINTR) => continue,
                    // Reaped elsewhere (SIGCHLD ignored, or a waitpid(-1) in other code).
                    Err(_) => break Some(ProcessStatus::Unknown),
                }
            };
            if let Some(st) = status {
                if let Some(c) = self.0.children.borrow_mut().remove(&id.serial)
                    && let Some(t) = c.kill_timer
                {
                    t.cancel();
                }
                out.push((id, st));
            }
        }
        out
    }

    /// The latest SIGKILL deadline of the children being stopped.
    pub(crate) fn last_kill_deadline(&self) -> Option<Instant> {
        self.0
            .children
            .borrow()
            .values()
            .filter_map(|c| c.kill_at)
            .max()
    }

    /// Runs blocking `f` on a worker thread; the Deferred fires on the reactor thread. A
    /// process that exits waits for `f` to finish (a delivery must reach the disk whole).
    pub fn defer_to_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
    ) -> Deferred<T> {
        self.submit_job(false, f)
    }

    /// As [`Handle::defer_to_thread`], for work whose result is worth nothing once the reactor
    /// is gone: a name lookup, a file parsed to be swapped in. A process that exits does not
    /// wait for it (a stop is not held up by a resolver's timeouts or a large zone's parse),
    /// and it does not start once the process is exiting.
    pub fn defer_to_thread_abandonable<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
    ) -> Deferred<T> {
        self.submit_job(true, f)
    }

    fn submit_job<T: Send + 'static>(
        &self,
        abandonable: bool,
        f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
    ) -> Deferred<T> {
        let d = Deferred::new();
        let id = self.0.next_job.get();
        self.0.next_job.set(id + 1);
        let d2 = d.clone();
        self.0.completions.borrow_mut().insert(
            id,
            Box::new(move |r: JobResult| {
                let out = match r.downcast::<Result<T, Failure>>() {
                    Ok(b) => *b,
                    Err(other) => Err(match other.downcast::<Failure>() {
                        Ok(f) => *f,
                        Err(_) => Failure::msg("worker returned an unexpected type"),
                    }),
                };
                let _ = match out {
                    Ok(v) => d2.callback(v),
                    Err(e) => d2.errback(e),
                };
            }),
        );
        let mut pool = self.0.pool.borrow_mut();
        let pool =
            pool.get_or_insert_with(|| ThreadPool::new(self.0.pool_size, self.0.waker.clone()));
        pool.submit(
            id,
            abandonable,
            Box::new(move || Box::new(f()) as JobResult),
        );
        d
    }

    /// Fires the Deferreds of finished thread jobs; returns how many.
    pub(crate) fn run_thread_results(&self) -> usize {
        let results = match &*self.0.pool.borrow() {
            Some(p) => p.take_results(),
            None => return 0,
        };
        self.complete(results)
    }

    fn complete(&self, results: Vec<(u64, JobResult)>) -> usize {
        let n = results.len();
        for (id, r) in results {
            let c = self.0.completions.borrow_mut().remove(&id);
            if let Some(c) = c {
                c(r);
            }
        }
        n
    }

    /// Forgets what waits for thread results: their closures may hold `Handle`s (dropping the
    /// reactor must free it).
    pub(crate) fn forget_completions(&self) {
        self.0.completions.borrow_mut().clear();
    }

    /// Thread jobs whose result has not been delivered yet.
    pub fn threads_pending(&self) -> usize {
        self.0.completions.borrow().len()
    }

    /// Blocks until some thread job finishes (or `timeout`), then fires its Deferred.
    /// For tests and shutdown, where no reactor loop is running.
    pub fn wait_for_threads(&self, timeout: Duration) -> usize {
        let results = match &*self.0.pool.borrow() {
            Some(p) => p.wait_results(timeout),
            None => return 0,
        };
        self.complete(results)
    }
}

/// If our child `pid` has exited and is not reaped yet, SIGKILL to what is left of the
/// process group it leads: unreaped, its PID is still the group's ID, which no other group
/// can have (see [`ProcessSpec::group_dies_with_it`](crate::ProcessSpec::group_dies_with_it)).
fn kill_group_if_exited(pid: libc::pid_t) {
    // SAFETY: waitid(2) with WNOWAIT only looks (the child stays a zombie, its PID ours);
    // getpgid(2) and kill(2) on that PID and the group it leads.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if r == 0 && info.si_pid() == pid && libc::getpgid(pid) == pid {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}
