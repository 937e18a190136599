//! The reactor: one thread, one mio `Poll`, every socket, timer, signal and thread result.
//!
//! One turn: read the clock once; poll with the next timer's deadline; dispatch readiness
//! (signals, accepts, connection I/O, UDP, outgoing connects, worker results); carry out queued
//! commands; fire due timers; re-drive connections whose reading was resumed (epoll is
//! edge-triggered, so no new wake-up would come); free closed slots only after the batch so no
//! token is reused mid-batch.

mod adopt;
mod conn;
mod connect;
mod handle;
mod listen;
mod owned;
mod pair;
mod process;
mod relay;
mod sockfile;
mod stats;
mod udp;

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGTERM};
use slab::Slab;

pub use adopt::{OnReadable, WatchId};
pub(crate) use handle::Command;
pub use handle::Handle;
pub use listen::{Accepted, ListenError, ListenerId, OnAccept};
pub use owned::OwnedPort;
pub use sockfile::SocketFile;
pub use stats::{ListenerStats, PortStats};
pub use udp::PortId;

use crate::protocol::Factory;
use crate::timer::{Clock, Target};
use crate::transport::{ConnId, Flag};

/// Compact relays the reactor has room for from the start: 168 KiB of address space, which
/// takes memory only as it is used, where growing through the small sizes would leave each
/// smaller copy behind in the heap, resident (issue 11).
const RESERVED_PAIRS: usize = 1024;

const SIGNAL_TOKEN: Token = Token(usize::MAX - 1);
const WAKER_TOKEN: Token = Token(usize::MAX - 2);

/// Tunables; the defaults suit every built-in plugin.
#[derive(Clone, Debug)]
pub struct ReactorConfig {
    /// Size of the one read buffer shared by all connections.
    pub read_buffer: usize,
    /// Output above this stops reading from the peer and pauses producers.
    pub high_water: usize,
    /// Output below this resumes reading and producers.
    pub low_water: usize,
    /// Worker threads for `defer_to_thread`.
    pub thread_pool_size: usize,
    /// Stop on SIGTERM and SIGINT, handled in the poll, as Twisted's reactor does. Other
    /// signals mean what the launcher says ([`Reactor::on_signal`]).
    pub handle_signals: bool,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            read_buffer: 64 * 1024,
            high_water: 64 * 1024,
            low_water: 16 * 1024,
            thread_pool_size: 4,
            handle_signals: true,
        }
    }
}

/// Why `run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A signal watched with [`SignalAction::Stop`] arrived (SIGTERM or SIGINT unless the
    /// launcher watches others); what it means is the launcher's business.
    Signal(i32),
    /// `Handle::stop` was called.
    Requested,
}

/// A stop that comes this soon after the drain began is the same stop, not the second one
/// that ends the drain at once: systemd's `KillMode=control-group` (SIGTERM to every process),
/// a stop passed on by a restart's old process, and two `twistrs stop` at once each send
/// several within milliseconds, while an operator's second Ctrl-C comes later.
pub const SAME_STOP: Duration = Duration::from_millis(500);

/// What a signal watched by the reactor does ([`Reactor::on_signal`]).
pub enum SignalAction {
    /// `run` returns `StopReason::Signal(sig)`.
    Stop,
    /// A callback on the reactor thread, between two callbacks of everything else.
    Call(Box<dyn FnMut()>),
}

/// Identifies a factory added with [`Reactor::add_factory`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FactoryId(pub(crate) usize);

pub(crate) struct FactorySlot {
    pub(crate) factory: Box<dyn Factory>,
    pub(crate) listeners: usize,
    pub(crate) conns: usize,
    pub(crate) sessions: u32,
    pub(crate) max: Option<usize>,
    /// What the metrics count, per listener endpoint it has had (kept when a listener
    /// closes, so a counter never goes back; the same endpoint opened again continues it):
    /// see [`ListenerStats`].
    pub(crate) origins: Vec<stats::Origin>,
    /// Under a limit only: the connections its TLS listeners accepted, while they may still
    /// be in their handshake (one whose handshake ended or that closed is dropped when met),
    /// each with the time it was last seen silent from (its accept, or the last bytes it
    /// sent, as of when it was moved to the back), in that order, so that at the limit the
    /// one silent longest is found at the front (`Reactor::stalled_handshake`).
    pub(crate) handshaking: std::collections::VecDeque<(ConnId, crate::timer::Tick)>,
}

/// What a poll token refers to.
pub(crate) enum Entry {
    Conn(conn::Connection),
    /// Boxed: a listener is larger than a connection, which sets the size of every slot.
    Listener(Box<listen::Listener>),
    Udp(udp::UdpPort),
    Connecting(connect::Connecting),
    /// One of a child's pipes.
    Pipe(process::Pipe),
    /// A socket watched for readability on a service's behalf (inetd's `wait` services).
    Watched(adopt::Watched),
    /// A listener a protocol opened to take one connection (`Handle::accept_one`).
    AcceptOne(owned::AcceptOne),
    /// Closed during this batch; freed at the end of the turn.
    Closed,
}

/// The event loop. Create it after daemonizing (it may own threads later).
pub struct Reactor {
    poll: Poll,
    events: Events,
    ready: Vec<(Token, bool, bool, bool)>,
    handle: Handle,
    cfg: ReactorConfig,
    entries: Slab<Entry>,
    factories: Vec<FactorySlot>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    read_buf: Vec<u8>,
    serial: u32,
    stop: Option<StopReason>,
    /// Connections to drive again this turn (resumed, written to by a command).
    redrive: Vec<usize>,
    /// UDP ports that used up their read budget and may hold more datagrams.
    redrive_udp: Vec<usize>,
    /// Listeners to accept on again (slots freed, or an fd shortage passed).
    resume_accept: Vec<usize>,
    /// The slots of the listening sockets (`Entry::Listener`), so that the closing of a
    /// connection looks at the few listeners to resume, not at every connection's slot.
    listener_keys: Vec<usize>,
    /// When listeners out of descriptors, or at a limit whose factory can make room later
    /// (`Room::After`), try accepting again.
    accept_retry_at: Option<Instant>,
    to_free: Vec<usize>,
    /// What each watched signal does.
    signal_actions: Vec<(i32, SignalAction)>,
    live_conns: usize,
    /// Listening sockets handed over by a predecessor, by endpoint string.
    inherited: Vec<(String, std::os::fd::OwnedFd)>,
    /// Child processes.
    children: process::Children,
    /// Host names of outgoing connections being resolved on worker threads.
    resolving: Slab<connect::Resolving>,
    resolve_serial: u64,
    /// Relays joined and not yet ended (those kept as two connections).
    relays: Slab<crate::relay::Record>,
    /// Relays kept compactly, and those of them whose sides have both closed this batch.
    pairs: Slab<pair::Pair>,
    free_pairs: Vec<usize>,
    /// Connection numbers (the `3` of `Echo,3,127.0.0.1`): each factory's first, and the step
    /// between two ([`Reactor::number_sessions`]).
    session_first: u32,
    session_step: u32,
    /// Listeners are bound and registered but their factories and datagram protocols never
    /// started ([`Reactor::bind_only`]).
    bind_only: bool,
    /// A dry run: every endpoint is checked and a stand-in bound ([`Reactor::check_only`]).
    pub(crate) check_only: bool,
    /// In a dry run, each port is also bound for a moment ([`Reactor::check_only`]).
    pub(crate) probe_ports: bool,
    /// In a dry run, the TCP addresses checked so far: a second listener on one (or on one
    /// the same family's wildcard covers) fails the check, as its bind would fail the start.
    pub(crate) checked_tcp: Vec<std::net::SocketAddr>,
    /// The UNIX socket files of inherited listeners, and their locks, belong to another
    /// process (a `--workers` worker's master): left as they are.
    pub(crate) sockets_elsewhere: bool,
}

impl Reactor {
    /// A reactor with the default configuration.
    pub fn new() -> io::Result<Self> {
        Self::with_config(ReactorConfig::default())
    }

    /// A reactor with `cfg`.
    pub fn with_config(cfg: ReactorConfig) -> io::Result<Self> {
        let poll = Poll::new()?;
        let waker = std::sync::Arc::new(Waker::new(poll.registry(), WAKER_TOKEN)?);
        let mut stops = Vec::new();
        if cfg.handle_signals {
            stops.push(SIGTERM);
            // As twistd: a SIGINT ignored at exec time (a background job) stays ignored.
            if !signal_is_ignored(SIGINT) {
                stops.push(SIGINT);
            }
        }
        let signals = if stops.is_empty() {
            None
        } else {
            let mut s = signal_hook_mio::v1_0::Signals::new(&stops)?;
            poll.registry()
                .register(&mut s, SIGNAL_TOKEN, Interest::READABLE)?;
            Some(s)
        };
        let signal_actions = stops.into_iter().map(|s| (s, SignalAction::Stop)).collect();
        let read_buf = vec![0; cfg.read_buffer.max(512)];
        Ok(Reactor {
            poll,
            events: Events::with_capacity(1024),
            ready: Vec::with_capacity(1024),
            handle: Handle::new(Clock::new(), Some(waker), cfg.thread_pool_size),
            cfg,
            entries: Slab::new(),
            factories: Vec::new(),
            signals,
            read_buf,
            serial: 0,
            stop: None,
            redrive: Vec::new(),
            redrive_udp: Vec::new(),
            resume_accept: Vec::new(),
            listener_keys: Vec::new(),
            accept_retry_at: None,
            to_free: Vec::new(),
            signal_actions,
            live_conns: 0,
            inherited: Vec::new(),
            resolving: Slab::new(),
            resolve_serial: 0,
            relays: Slab::new(),
            // Reserved, not touched (see `RESERVED_PAIRS`).
            pairs: Slab::with_capacity(RESERVED_PAIRS),
            free_pairs: Vec::new(),
            children: process::Children::default(),
            session_first: 0,
            session_step: 1,
            bind_only: false,
            check_only: false,
            probe_ports: false,
            checked_tcp: Vec::new(),
            sockets_elsewhere: false,
        })
        .and_then(|mut r| {
            if r.cfg.handle_signals {
                // As Twisted's reactor: children are reaped from the start, whatever SIGCHLD's
                // disposition and mask were at exec (ignored would lose exit statuses).
                r.watch_signal(SIGCHLD)?;
                r.children.watching = true;
                // As PID 1 of a container, every orphan of the namespace is ours to reap.
                r.children.orphans = crate::process::receives_orphans();
                // Children of the program that exec'd us (an entrypoint script's background
                // helper) that exited before the handler was there: no SIGCHLD will come.
                r.reap_orphans();
            }
            Ok(r)
        })
    }

    /// A handle for timers, threads and commands.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Numbers each factory's connections `first`, `first + step`, `first + 2 * step`, ...
    /// instead of Twisted's 0, 1, 2, ...: processes that serve the same listeners (the
    /// launcher's workers, `first` the worker's index from 0 and `step` their count) then never
    /// give two connections the same log system, so one connection's lines can be picked out
    /// of a log they all write. For factories added after the call.
    pub fn number_sessions(&mut self, first: u32, step: u32) {
        self.session_first = first;
        self.session_step = step.max(1);
    }

    /// From now on listeners are bound but their factories and datagram protocols are not
    /// started: a launcher's `--workers` master binds every endpoint for its workers and
    /// serves none, so no plugin code of the service runs in it and its log does not claim
    /// a factory started.
    pub fn bind_only(&mut self) {
        self.bind_only = true;
    }

    /// A dry run, for a launcher's `--check` (nginx's `-t`): every endpoint is checked as
    /// binding it would (its certificates loaded, its interface resolved and local, a UNIX
    /// socket's directory there and writable) but a stand-in is bound in its place, on port
    /// 0 or an abstract UNIX address, so a check beside the running server neither fails on
    /// its ports nor takes them, and no socket file or lock is touched. Implies
    /// [`Reactor::bind_only`]: no factory starts. With `probe_ports` (no server of ours holds
    /// them), each TCP and UDP port is also bound for a moment, without listening, so a port
    /// in use by another program, or one below 1024 for a user who may not bind it, fails the
    /// check as it would fail the start.
    pub fn check_only(&mut self, probe_ports: bool) {
        self.check_only = true;
        self.bind_only = true;
        self.probe_ports = probe_ports;
    }

    /// The listeners this reactor inherits are another process's, which keeps their UNIX
    /// socket files and locks (a `--workers` worker's master): their locks are not pointed
    /// at this process, nor their files removed by it.
    pub fn sockets_owned_elsewhere(&mut self) {
        self.sockets_elsewhere = true;
    }

    /// Registers a factory; listeners started with its id share it.
    pub fn add_factory(&mut self, factory: Box<dyn Factory>) -> FactoryId {
        let max = factory.max_connections();
        self.factories.push(FactorySlot {
            factory,
            listeners: 0,
            conns: 0,
            sessions: self.session_first,
            max,
            origins: Vec::new(),
            handshaking: std::collections::VecDeque::new(),
        });
        FactoryId(self.factories.len() - 1)
    }

    /// Watches `sig` in the poll and gives it `action` (replacing what it did before). The
    /// reactor gives no signal a meaning of its own but SIGTERM and SIGINT (stop): the
    /// launcher says which one restarts and which one reopens the logs.
    pub fn on_signal(&mut self, sig: i32, action: SignalAction) -> io::Result<()> {
        self.watch_signal(sig)?;
        self.signal_actions.retain(|(s, _)| *s != sig);
        self.signal_actions.push((sig, action));
        Ok(())
    }

    /// Adds `sig` to the signals read in the poll, and unblocks it: a mask inherited at exec
    /// would otherwise keep it from ever arriving.
    fn watch_signal(&mut self, sig: i32) -> io::Result<()> {
        match &mut self.signals {
            Some(s) => s.add_signal(sig)?,
            None => {
                let mut s = signal_hook_mio::v1_0::Signals::new([sig])?;
                self.poll
                    .registry()
                    .register(&mut s, SIGNAL_TOKEN, Interest::READABLE)?;
                self.signals = Some(s);
            }
        }
        unblock_signal(sig);
        Ok(())
    }

    /// Open connections, incoming and outgoing.
    pub fn connection_count(&self) -> usize {
        self.live_conns
    }

    fn next_id(&mut self, key: usize) -> ConnId {
        self.serial = self.serial.wrapping_add(1);
        ConnId::new(key as u32, self.serial)
    }

    /// Runs until SIGTERM/SIGINT or `Handle::stop`. The caller then stops its services and
    /// calls [`Reactor::drain`].
    pub fn run(&mut self) -> io::Result<StopReason> {
        loop {
            if let Some(r) = self.stop.take() {
                return Ok(r);
            }
            self.turn(None)?;
        }
    }

    /// The stop that `turn` saw (SIGTERM/SIGINT, a `SignalAction::Stop` signal, or
    /// `Handle::stop`), taken: for a caller that drives its own loop of turns (the `--workers`
    /// master, which supervises between them).
    pub fn take_stop(&mut self) -> Option<StopReason> {
        self.stop.take()
    }

    /// Graceful stop: asks every connection to finish (`Protocol::stop_requested`) and every
    /// child to stop (`ProcessProtocol::stop_requested`: SIGTERM, SIGKILL after its kill
    /// time), runs until they are gone, and closes what remains after `timeout`. Children
    /// are waited for until their last SIGKILL deadline if that is later, and whatever is
    /// left then is killed, so none outlives the reactor. A second SIGTERM/SIGINT during the
    /// drain ends it at once, unless it comes within [`SAME_STOP`] of the drain's start.
    pub fn drain(&mut self, timeout: Duration) -> io::Result<()> {
        self.drain_as(timeout, false)
    }

    /// [`Reactor::drain`] for the old process of a restart, once its successor took over:
    /// a connection whose protocol serves through it (`Protocol::serves_through_handover`)
    /// goes on, and one that serves on is asked to stop (`stop_requested`) [`HANDOVER_MARGIN`] before the
    /// deadline (half the drain if it is shorter than twice that), or as soon as
    /// [`Handle::end_handover`] says the service is stopped for real. Children stop at once,
    /// as at a stop.
    ///
    /// [`HANDOVER_MARGIN`]: crate::protocol::HANDOVER_MARGIN
    pub fn drain_handover(&mut self, timeout: Duration) -> io::Result<()> {
        self.drain_as(timeout, true)
    }

    /// The open connections' keys.
    fn conn_keys(&self) -> Vec<usize> {
        self.entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Conn(_)))
            .map(|(k, _)| k)
            .collect()
    }

    fn drain_as(&mut self, timeout: Duration, handover: bool) -> io::Result<()> {
        let began = Instant::now();
        let deadline = crate::timer::later(began, timeout);
        for k in self.conn_keys() {
            if handover {
                self.handover_requested(k);
            } else {
                self.stop_requested(k);
            }
        }
        self.stop_children();
        self.after_batch();
        // When the connections serving on through a hand-over are asked to stop.
        let margin = crate::protocol::HANDOVER_MARGIN.min(timeout / 2);
        let mut stop_at = handover.then(|| deadline.checked_sub(margin).unwrap_or(began));
        self.stop = None;
        // A second stop that ended the drain early, for the log line that says why.
        let mut again: Option<StopReason> = None;
        // A stop within `SAME_STOP` of the start is the first one again, and is dropped.
        let second =
            |stop: &mut Option<StopReason>| stop.take().filter(|_| began.elapsed() >= SAME_STOP);
        while self.live_conns > 0 || self.handle.running_processes() > 0 {
            let now = Instant::now();
            if let Some(r) = second(&mut self.stop) {
                again = Some(r);
                break;
            }
            if now >= deadline {
                break;
            }
            if let Some(at) = stop_at
                && (now >= at || self.handle.handover_ended())
            {
                stop_at = None;
                let why = if self.handle.handover_ended() {
                    "the service stops"
                } else {
                    "the shutdown deadline nears"
                };
                log::info!(target: "twistrs.reactor",
                    "Hand-over drain: {why}; asking {} connection(s) to finish.",
                    self.live_conns);
                for k in self.conn_keys() {
                    self.stop_requested(k);
                }
                self.after_batch();
                continue;
            }
            let wake = stop_at.map_or(deadline, |at| at.min(deadline));
            self.turn(Some(wake.saturating_duration_since(now)))?;
        }
        let left: Vec<usize> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Conn(_) | Entry::Connecting(_)))
            .map(|(k, _)| k)
            .collect();
        let paired = self.pair_sides_open();
        if !left.is_empty() || paired > 0 {
            let n = left.len() + paired;
            match &again {
                // Not the deadline: an operator who pressed Ctrl-C twice reads why.
                Some(StopReason::Signal(sig)) => log::info!(target: "twistrs.reactor",
                    "Received {} again: closing {n} connection(s) now.",
                    crate::process::signal_name(*sig)),
                Some(StopReason::Requested) => log::info!(target: "twistrs.reactor",
                    "Asked to stop again: closing {n} connection(s) now."),
                None => log::info!(target: "twistrs.reactor",
                    "Shutdown deadline passed: closing {n} connection(s)."),
            }
        }
        for k in left {
            self.close(k, crate::error::Reason::Shutdown);
        }
        self.close_pairs();
        self.after_batch();
        // Children being stopped get until their SIGKILL (and a little for it to work).
        while again.is_none() && self.handle.running_processes() > 0 {
            let until = self
                .handle
                .last_kill_deadline()
                .map_or(deadline, |k| k + Duration::from_millis(500));
            let now = Instant::now();
            if second(&mut self.stop).is_some() || now >= until {
                break;
            }
            self.turn(Some(until - now))?;
        }
        self.kill_children();
        self.after_batch();
        Ok(())
    }

    /// One turn of the loop. `max_wait` bounds the poll.
    pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        let now = Instant::now();
        self.handle.clock().set(now);
        // Commands queued outside a callback (during set-up, by a service) run before polling.
        self.run_commands();
        // Exits held back while a stop was pending (the drain's or a restart's turns). What
        // they change (no child left to drain) is for the caller to see now, not after a
        // poll that nothing may wake before the drain's deadline.
        let reaped = self.reap_if_running();
        self.after_batch();
        let mut timeout = self
            .handle
            .timers()
            .next_deadline()
            .map(|t| t.saturating_duration_since(now));
        if let Some(at) = self.accept_retry_at {
            let d = at.saturating_duration_since(now);
            timeout = Some(timeout.map_or(d, |t| t.min(d)));
        }
        if let Some(m) = max_wait {
            timeout = Some(timeout.map_or(m, |t| t.min(m)));
        }
        if !self.redrive.is_empty()
            || !self.resume_accept.is_empty()
            || !self.redrive_udp.is_empty()
            || !self.children.redrive.is_empty()
            // A stop asked for by the commands just run (a child that ended as it was
            // adopted): `run` must see it without waiting for an event.
            || self.stop.is_some()
            || reaped
        {
            timeout = Some(Duration::ZERO);
        }
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.handle.clock().set(Instant::now());
        self.ready.clear();
        for ev in self.events.iter() {
            let hup = ev.is_read_closed() || ev.is_error();
            let readable = ev.is_readable() || hup;
            let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
            self.ready.push((ev.token(), readable, writable, hup));
        }
        for k in std::mem::take(&mut self.redrive_udp) {
            self.udp_readable(k);
            self.run_commands();
        }
        self.redrive_pipes();
        for i in 0..self.ready.len() {
            let (token, readable, writable, hup) = self.ready[i];
            self.dispatch(token, readable, writable, hup);
            self.run_commands();
        }
        self.fire_timers();
        if let Some(at) = self.accept_retry_at
            && Instant::now() >= at
        {
            self.accept_retry_at = None;
            for &k in &self.listener_keys {
                if matches!(self.entries.get(k),
                    Some(Entry::Listener(l)) if matches!(l.accepting,
                        listen::Accepting::BackingOff | listen::Accepting::AtLimit))
                {
                    self.resume_accept.push(k);
                }
            }
        }
        self.after_batch();
        Ok(())
    }

    fn dispatch(&mut self, token: Token, readable: bool, writable: bool, hup: bool) {
        match token {
            SIGNAL_TOKEN => self.handle_signals(),
            WAKER_TOKEN => {
                self.handle.run_thread_results();
            }
            Token(key) => match self.entries.get(key) {
                Some(Entry::Conn(_)) => {
                    if hup && let Some(Entry::Conn(c)) = self.entries.get_mut(key) {
                        c.conn.st.set(Flag::PeerClosed, true);
                    }
                    self.drive(key, readable, writable)
                }
                Some(Entry::Listener(_)) => self.accept(key),
                Some(Entry::Udp(_)) => self.udp_readable(key),
                Some(Entry::Connecting(_)) => self.connect_ready(key),
                Some(Entry::Pipe(_)) => self.pipe_ready(key, hup),
                Some(Entry::Watched(_)) => self.watch_ready(key),
                Some(Entry::AcceptOne(_)) => self.accept_one_ready(key),
                Some(Entry::Closed) => {}
                None => self.pair_drive(key, readable, writable, hup),
            },
        }
    }

    fn handle_signals(&mut self) {
        let mut got = Vec::new();
        if let Some(s) = &mut self.signals {
            got.extend(s.pending());
        }
        for sig in &got {
            match self.signal_actions.iter_mut().find(|(s, _)| s == sig) {
                // The first stop wins, except that SIGTERM and SIGINT, which end the
                // process, win over another signal watched as a stop (the launcher's SIGUSR2,
                // a restart) that came in the same batch: `kill -USR2; kill -TERM` stops.
                Some((_, SignalAction::Stop))
                    if self.stop.is_none()
                        || (matches!(*sig, SIGTERM | SIGINT)
                            && matches!(self.stop, Some(StopReason::Signal(s))
                                if !matches!(s, SIGTERM | SIGINT))) =>
                {
                    self.stop = Some(StopReason::Signal(*sig));
                }
                Some((_, SignalAction::Call(f))) => f(),
                _ => {}
            }
        }
        if got.contains(&SIGCHLD) {
            // Exits that arrive with a stop are delivered after `run` returns (in the drain,
            // once services were stopped), so a supervisor does not restart what a stop of
            // the whole process group (systemd's KillMode) just ended.
            self.children.reap_pending = true;
            self.reap_if_running();
            // Orphans, even while a stop is pending: no one hears of them.
            self.reap_orphans();
        }
    }

    /// Reaps if SIGCHLD came and no stop is pending; true if it did.
    fn reap_if_running(&mut self) -> bool {
        if self.children.reap_pending && self.stop.is_none() {
            self.children.reap_pending = false;
            self.reap();
            return true;
        }
        false
    }

    fn fire_timers(&mut self) {
        let now = self.handle.now();
        let timers = self.handle.timers().clone();
        while let Some(t) = timers.pop_due(now) {
            match t {
                Target::Call(f) => f(),
                Target::Conn(id, key) => self.conn_timer(id, key),
            }
            self.run_commands();
        }
        // Idle checks of connections that closed or changed their timeout go, once they
        // are the majority.
        let (entries, pairs) = (&self.entries, &self.pairs);
        timers.compact_idle(|id, at| match pair::id_side(id) {
            Some((k, _)) => pairs.get(k).is_some_and(|p| p.idle_live(id, at)),
            None => matches!(entries.get(id.key as usize),
                Some(Entry::Conn(c)) if c.conn.st.id == id && c.conn.st.idle_at == Some(at)),
        });
    }

    fn conn_timer(&mut self, id: ConnId, key: u64) {
        if pair::id_side(id).is_some() {
            return self.pair_timer(id, key);
        }
        let k = id.key as usize;
        match self.entries.get(k) {
            Some(Entry::Conn(c)) if c.conn.st.id == id => self.conn_timer_due(k, key),
            Some(Entry::Connecting(c)) if c.id == id => self.connect_timed_out(k),
            Some(Entry::AcceptOne(a)) if a.id == id => self.accept_one_timed_out(k),
            _ => {}
        }
    }

    /// Carries out queued commands until none are left.
    fn run_commands(&mut self) {
        while let Some(cmd) = self.handle.pop_command() {
            match cmd {
                Command::Write(id, data) => {
                    if let Some(c) = self.conn_mut(id) {
                        c.conn.st.write(&data);
                        self.redrive.push(id.key as usize);
                    }
                }
                Command::Stats(f) => f(self.listener_stats(), self.port_stats()),
                Command::Lose(id) => {
                    if let Some(c) = self.conn_mut(id) {
                        c.conn.st.lose();
                        self.redrive.push(id.key as usize);
                    }
                }
                Command::Abort(id) => {
                    if self.conn_mut(id).is_some() {
                        self.close(id.key as usize, crate::error::Reason::Aborted);
                    }
                }
                Command::PauseReading(id) => {
                    if let Some(c) = self.conn_mut(id) {
                        c.conn.st.pause_reading();
                    }
                }
                Command::ResumeReading(id) => {
                    if let Some(c) = self.conn_mut(id)
                        && c.conn.st.resume_reading()
                    {
                        self.redrive.push(id.key as usize);
                    }
                }
                Command::Notify(id, msg) => {
                    if self.conn_mut(id).is_some() {
                        self.with_conn(id.key as usize, move |p, t| p.notified(t, msg));
                    }
                }
                Command::Connect {
                    dest,
                    factory,
                    timeout,
                } => self.connect(dest, connect::Client::Factory(factory), timeout),
                Command::OpenUdp(bind, proto) => self.open_udp(bind, proto),
                Command::SendDatagram(port, data, to) => self.send_datagram(port, &data, to),
                Command::ClosePort(port) => self.close_port(port),
                Command::AcceptOne {
                    listener,
                    factory,
                    timeout,
                    reg,
                } => self.start_accept_one(listener, factory, timeout, reg),
                Command::OpenOwnedUdp { sock, proto, reg } => self.add_owned_udp(sock, proto, reg),
                Command::CloseOwned(reg) => self.close_owned(&reg),
                Command::ConnectRelay(r) => self.connect_relay(r),
                Command::Join {
                    client,
                    dest,
                    options,
                } => self.join_command(client, dest, options),
                Command::Resolved {
                    key,
                    serial,
                    result,
                } => self.resolved(key, serial, result),
                Command::ResolveTimedOut { key, serial } => self.resolve_timed_out(key, serial),
                Command::Stop => {
                    if self.stop.is_none() {
                        self.stop = Some(StopReason::Requested);
                    }
                }
                Command::Adopt(a) => self.adopt(*a),
                Command::WriteToProcess(id, data) => self.write_to_process(id, data),
                Command::CloseProcessStdin(id) => self.close_process_stdin(id),
                Command::WatchAgain(id) => self.watch_again(id),
                Command::WithHost(f) => f(&mut self.service_host()),
            }
        }
    }

    /// Re-drives, resumes accepting and frees closed slots; the end of every batch.
    fn after_batch(&mut self) {
        for _ in 0..8 {
            if self.redrive.is_empty() && self.resume_accept.is_empty() {
                break;
            }
            let mut keys = std::mem::take(&mut self.redrive);
            keys.sort_unstable();
            keys.dedup();
            for k in keys {
                if matches!(self.entries.get(k), Some(Entry::Conn(_))) {
                    self.drive(k, false, false);
                    self.run_commands();
                } else if pair::token_side(k).is_some() {
                    self.pair_drive(k, false, false, false);
                    self.run_commands();
                }
            }
            let keys = std::mem::take(&mut self.resume_accept);
            for k in keys {
                if matches!(self.entries.get(k), Some(Entry::Listener(_))) {
                    self.accept(k);
                    self.run_commands();
                }
            }
        }
        for k in self.to_free.drain(..) {
            if matches!(self.entries.get(k), Some(Entry::Closed)) {
                self.entries.remove(k);
            }
        }
        self.free_closed_pairs();
    }
}

impl Drop for Reactor {
    /// Timer closures and queued commands may hold `Handle`s; dropping them frees the reactor.
    fn drop(&mut self) {
        self.handle.timers().clear();
        while self.handle.pop_command().is_some() {}
        self.handle.forget_completions();
        // No child outlives its reactor (a drain has normally stopped them already).
        if self.handle.running_processes() > 0 {
            self.kill_children();
        }
    }
}

/// Unblocks `sig` for this thread (and the threads it starts later).
fn unblock_signal(sig: i32) {
    // SAFETY: pthread_sigmask on a set built here.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// True if `sig` is set to SIG_IGN (inherited from the parent).
fn signal_is_ignored(sig: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current disposition.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// Every idle connection pays for these (issue 11): no other kind of slot is larger than
    /// a connection's, and its state stays small. (mio's sockets carry a selector id in
    /// debug builds only: a connection is 8 bytes smaller in release, 136.)
    #[test]
    fn a_connection_sets_the_slot_size_and_stays_small() {
        assert_eq!(size_of::<Entry>(), size_of::<conn::Connection>());
        assert!(size_of::<crate::transport::ConnState>() <= 96);
        assert!(size_of::<conn::Connection>() <= 144);
        assert!(size_of::<crate::relay::Record>() <= 40);
    }

    /// A compact relay's entry is all an idle relay of plain sockets keeps but its one idle
    /// check (16 bytes): 168 bytes in release (its two sockets are 8 bytes each there, more
    /// in debug builds), where two connection slots and a record took 312 (issue 11's
    /// target is 230 bytes per pair, everything included).
    #[test]
    fn a_compact_relay_stays_small() {
        let sockets = 2 * size_of::<Option<conn::Stream>>();
        assert!(size_of::<pair::Pair>() - sockets <= 152);
        assert!(size_of::<crate::transport::PairState>() <= 104);
    }
}
