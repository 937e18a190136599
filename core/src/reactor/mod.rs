//! The reactor: one thread, one mio `Poll`, every socket, timer, signal and thread result.
//!
//! One turn: read the clock once; poll with the next timer's deadline; dispatch readiness
//! (signals, accepts, connection I/O, UDP, outgoing connects, worker results); carry out queued
//! commands; fire due timers; re-drive connections whose reading was resumed (epoll is
//! edge-triggered, so no new wake-up would come); free closed slots only after the batch so no
//! token is reused mid-batch.

mod conn;
mod connect;
mod handle;
mod listen;
mod owned;
mod relay;
mod udp;

use std::io;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use slab::Slab;

pub(crate) use handle::Command;
pub use handle::Handle;
pub use listen::{ListenError, ListenerId};
pub use owned::OwnedPort;

use crate::protocol::Factory;
use crate::timer::{Clock, Target};
use crate::transport::ConnId;

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
}

/// What a poll token refers to.
pub(crate) enum Entry {
    Conn(conn::Connection),
    Listener(listen::Listener),
    Udp(udp::UdpPort),
    Connecting(connect::Connecting),
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
    accept_retry_at: Option<Instant>,
    to_free: Vec<usize>,
    /// What each watched signal does.
    signal_actions: Vec<(i32, SignalAction)>,
    live_conns: usize,
    /// Listening sockets handed over by a predecessor, by endpoint string.
    inherited: Vec<(String, std::os::fd::OwnedFd)>,
    /// Host names of outgoing connections being resolved on worker threads.
    resolving: Slab<connect::Resolving>,
    resolve_serial: u64,
    /// Relays joined and not yet ended.
    relays: Slab<crate::relay::Record>,
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
            accept_retry_at: None,
            to_free: Vec::new(),
            signal_actions,
            live_conns: 0,
            inherited: Vec::new(),
            resolving: Slab::new(),
            resolve_serial: 0,
            relays: Slab::new(),
        })
    }

    /// A handle for timers, threads and commands.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Registers a factory; listeners started with its id share it.
    pub fn add_factory(&mut self, factory: Box<dyn Factory>) -> FactoryId {
        let max = factory.max_connections();
        self.factories.push(FactorySlot {
            factory,
            listeners: 0,
            conns: 0,
            sessions: 0,
            max,
        });
        FactoryId(self.factories.len() - 1)
    }

    /// Watches `sig` in the poll and gives it `action` (replacing what it did before). The
    /// reactor gives no signal a meaning of its own but SIGTERM and SIGINT (stop): the
    /// launcher says which one restarts and which one reopens the logs.
    pub fn on_signal(&mut self, sig: i32, action: SignalAction) -> io::Result<()> {
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
        self.signal_actions.retain(|(s, _)| *s != sig);
        self.signal_actions.push((sig, action));
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

    /// Graceful stop: asks every connection to finish (`Protocol::stop_requested`), runs until
    /// they have closed, and aborts what remains after `timeout`. A second SIGTERM/SIGINT
    /// during the drain aborts at once.
    pub fn drain(&mut self, timeout: Duration) -> io::Result<()> {
        let keys: Vec<usize> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Conn(_)))
            .map(|(k, _)| k)
            .collect();
        for k in keys {
            self.stop_requested(k);
        }
        self.after_batch();
        let deadline = Instant::now() + timeout;
        self.stop = None;
        while self.live_conns > 0 {
            let now = Instant::now();
            if now >= deadline || self.stop.take().is_some() {
                break;
            }
            self.turn(Some(deadline - now))?;
        }
        let left: Vec<usize> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Conn(_) | Entry::Connecting(_)))
            .map(|(k, _)| k)
            .collect();
        if !left.is_empty() {
            log::info!(target: "twistrs.reactor",
                "Shutdown deadline passed: closing {} connection(s).", left.len());
        }
        for k in left {
            self.close(k, crate::error::Reason::Shutdown);
        }
        self.after_batch();
        Ok(())
    }

    /// One turn of the loop. `max_wait` bounds the poll.
    pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<()> {
        let now = Instant::now();
        self.handle.clock().set(now);
        // Commands queued outside a callback (during set-up, by a service) run before polling.
        self.run_commands();
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
            let keys: Vec<usize> = self
                .entries
                .iter()
                .filter(|(_, e)| {
                    matches!(e, Entry::Listener(l) if l.accepting == listen::Accepting::BackingOff)
                })
                .map(|(k, _)| k)
                .collect();
            self.resume_accept.extend(keys);
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
                        c.conn.st.peer_closed = true;
                    }
                    self.drive(key, readable, writable)
                }
                Some(Entry::Listener(_)) => self.accept(key),
                Some(Entry::Udp(_)) => self.udp_readable(key),
                Some(Entry::Connecting(_)) => self.connect_ready(key),
                Some(Entry::AcceptOne(_)) => self.accept_one_ready(key),
                Some(Entry::Closed) | None => {}
            },
        }
    }

    fn handle_signals(&mut self) {
        let mut got = Vec::new();
        if let Some(s) = &mut self.signals {
            got.extend(s.pending());
        }
        for sig in got {
            match self.signal_actions.iter_mut().find(|(s, _)| *s == sig) {
                Some((_, SignalAction::Stop)) if self.stop.is_none() => {
                    self.stop = Some(StopReason::Signal(sig));
                }
                Some((_, SignalAction::Call(f))) => f(),
                _ => {}
            }
        }
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
    }

    fn conn_timer(&mut self, id: ConnId, key: u64) {
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
                Command::AcceptOne {
                    listener,
                    factory,
                    timeout,
                    reg,
                } => self.start_accept_one(listener, factory, timeout, reg),
                Command::OpenUdp { sock, proto, reg } => self.add_owned_udp(sock, proto, reg),
                Command::ClosePort(reg) => self.close_owned(&reg),
                Command::ConnectRelay(r) => {
                    let (dest, timeout) = (r.request.dest.clone(), r.request.connect_timeout);
                    self.connect(dest, connect::Client::Relay(r), timeout);
                }
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
    }
}

impl Drop for Reactor {
    /// Timer closures and queued commands may hold `Handle`s; dropping them frees the reactor.
    fn drop(&mut self) {
        self.handle.timers().clear();
        while self.handle.pop_command().is_some() {}
        self.handle.forget_completions();
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
