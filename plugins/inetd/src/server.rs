//! The inetd service: one socket per service line, served by twistrs itself (`internal`),
//! by a program per connection (`nowait`: the accepted socket is its stdin, stdout and
//! stderr), or by a program handed the socket itself (`wait`: not watched again until it
//! exits). SIGHUP re-reads the file: sockets whose line is gone close, new ones open, and a
//! changed line applies from the next connection; connections and programs already running
//! are left alone.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use twistrs_core::endpoint::DEFAULT_BACKLOG;
use twistrs_core::{
    Accepted, Deferred, DelayedCall, FactoryId, Failure, Handle, ListenError, ListenerId,
    ProcessId, ProcessProtocol, ProcessSpec, ProcessStatus, ProcessTransport, Protocol,
    ProtocolFactory, Service, ServiceHost, WatchId,
};

use twistrs_core::metrics::{self, Counter, Gauge};

use crate::conf::{Program, SockType};
use crate::plan::{self, Mode, Options, Socket};
use crate::rate::Rate;

/// The log system of inetd's own lines.
pub const SYSTEM: &str = "twistrs.inetd";

/// How long a `wait` service whose program could not be started waits before the next try
/// (the datagram that woke it is still there: without a pause it would spin).
const RETRY: Duration = Duration::from_secs(1);

/// The starts per minute of a `wait` line without `.max`: openbsd-inetd's default (256). A
/// `wait` stream program that exits without accepting (a `/bin/cat` line written for
/// `nowait`) leaves the connection pending and is started again at once: without a limit,
/// hundreds of forks a second for as long as the client waits.
pub const WAIT_DEFAULT_MAX: u32 = 256;

enum Kind {
    Internal,
    NoWait {
        rate: Option<Rate>,
        /// Connections refused since the limit was reached (0: not refusing).
        refused: u64,
    },
    Wait {
        watch: WatchId,
        child: Option<ProcessId>,
        rate: Option<Rate>,
        /// The next watch, after a refusal by `.max` or a failed start.
        retry: Option<DelayedCall>,
    },
}

/// A program service's series for `--metrics`, labelled with its label (`tcp:8007`);
/// internal services count as their factory's or datagram port's (theirs is the default:
/// handles registered nowhere, never shown).
#[derive(Clone, Default)]
struct PortMetrics {
    sessions: Counter,
    refused: Counter,
    start_failures: Counter,
    running: Gauge,
}

impl PortMetrics {
    fn new(label: &str) -> Self {
        let l = [("service", label)];
        PortMetrics {
            sessions: metrics::counter(
                "twistrs_inetd_sessions_total",
                "Programs started for a service (one per connection for nowait).",
                &l,
            ),
            refused: metrics::counter(
                "twistrs_inetd_refused_total",
                "Connections closed (nowait) or starts put off (wait) by the service's .max rate.",
                &l,
            ),
            start_failures: metrics::counter(
                "twistrs_inetd_start_failures_total",
                "Programs that could not be started.",
                &l,
            ),
            running: metrics::gauge(
                "twistrs_inetd_children_running",
                "A service's programs running now.",
                &l,
            ),
        }
    }
}

/// An open socket and how it is served.
struct Port {
    id: u64,
    sock: Socket,
    label: Rc<str>,
    /// The program's spec without its descriptors (`None` for internal services).
    spec: Option<ProcessSpec>,
    listener: ListenerId,
    kind: Kind,
    metrics: PortMetrics,
}

/// The program of a line, ready to be given its socket.
fn spec_of(sock: &Socket) -> Option<ProcessSpec> {
    let Program::External { path, argv } = &sock.conf.program else {
        return None;
    };
    // A process group of its own: a Ctrl-C on twistrs in the foreground is not the
    // program's. Not a session: each would be a scheduling group of its own, and one
    // program in a thousand waited a second for the CPU beside the others.
    let mut spec = ProcessSpec::new(path).new_process_group(true);
    if let Some((arg0, rest)) = argv.split_first() {
        spec = spec.arg0(arg0).args(rest);
    }
    if let Some(c) = &sock.creds {
        spec = spec.credentials(c.clone());
    }
    Some(spec)
}

fn rate_of(sock: &Socket, old: Option<Rate>) -> Option<Rate> {
    let max = sock.conf.max.or(sock.conf.wait.then_some(WAIT_DEFAULT_MAX));
    match (old, max) {
        (Some(mut r), Some(m)) => {
            r.set_max(m);
            Some(r)
        }
        (None, Some(m)) => Some(Rate::new(m)),
        (_, None) => None,
    }
}

struct State {
    opts: Options,
    handle: Option<Handle>,
    /// Planned by `make_service`, opened by `privileged_start_service`.
    planned: Vec<Socket>,
    ports: Vec<Port>,
    next_id: u64,
    /// One factory per internal service, shared by its TCP ports.
    factories: HashMap<&'static str, FactoryId>,
    /// Started and not stopped.
    active: bool,
    /// A restart is handing over: `wait` programs stop and are not started again.
    handing_over: bool,
    handover: Option<Deferred<()>>,
}

/// The service.
pub struct Inetd(Rc<RefCell<State>>);

impl Inetd {
    /// The service for the sockets of `planned`, read from `opts.file`.
    pub fn new(opts: Options, planned: Vec<Socket>) -> Self {
        Inetd(Rc::new(RefCell::new(State {
            opts,
            handle: None,
            planned,
            ports: Vec::new(),
            next_id: 0,
            factories: HashMap::new(),
            active: false,
            handing_over: false,
            handover: None,
        })))
    }
}

/// Binds a line's socket: IPv6 sockets take IPv6 only (`tcp` and `tcp6` lines for one port
/// are two sockets, as inetd(8) has them), stream sockets listen.
fn bind(sock: &Socket) -> io::Result<OwnedFd> {
    use socket2::{Domain, Protocol as P, Socket as S, Type};
    let addr = sock.key.addr;
    let stream = sock.key.proto.socktype() == SockType::Stream;
    let (ty, proto) = if stream {
        (Type::STREAM, P::TCP)
    } else {
        (Type::DGRAM, P::UDP)
    };
    let s = S::new(Domain::for_address(addr), ty, Some(proto))?;
    s.set_cloexec(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if stream {
        s.set_reuse_address(true)?;
    }
    if let Some(n) = sock.key.bufs.send {
        s.set_send_buffer_size(n)?;
    }
    if let Some(n) = sock.key.bufs.recv {
        s.set_recv_buffer_size(n)?;
    }
    s.bind(&addr.into())?;
    if stream {
        s.listen(DEFAULT_BACKLOG as i32)?;
    }
    Ok(s.into())
}

/// Opens `sock` (or takes the one a restart's predecessor handed over) and serves it.
fn open(rc: &Rc<RefCell<State>>, h: &mut ServiceHost<'_>, sock: Socket) -> Result<(), String> {
    let ep = sock.endpoint();
    let fd = match h.take_inherited_socket(&ep) {
        Some(fd) => fd,
        None => bind(&sock).map_err(|error| {
            ListenError {
                what: sock.key.addr.to_string(),
                error,
            }
            .to_string()
        })?,
    };
    let label: Rc<str> = sock.label().into();
    let id = {
        let mut s = rc.borrow_mut();
        s.next_id += 1;
        s.next_id
    };
    let weak = Rc::downgrade(rc);
    let stream = sock.key.proto.socktype() == SockType::Stream;
    let (listener, kind) = match sock.key.mode {
        Mode::Internal(name) => {
            let int = twistrs_wire::internal(name)
                .ok_or_else(|| format!("'{name}' is not an internal service"))?;
            let l = if stream {
                let known = rc.borrow().factories.get(name).copied();
                let fid = match known {
                    Some(f) => f,
                    None => {
                        let f = h.add_factory(Box::new(ProtocolFactory::for_protocol(
                            int.name,
                            int.stream as fn() -> Box<dyn Protocol>,
                        )));
                        rc.borrow_mut().factories.insert(name, f);
                        f
                    }
                };
                h.adopt_stream_port(fd, &ep, fid)
            } else {
                // openbsd-inetd's guard: no answer to a privileged port (another small
                // service: a loop) or to an address no answer goes to.
                let guarded = twistrs_wire::guard::Guarded::new((int.datagram)(), &label, SYSTEM);
                h.adopt_datagram_port(fd, &ep, Box::new(guarded))
            };
            (l.map_err(|e| e.to_string())?, Kind::Internal)
        }
        Mode::NoWait => {
            let l = h
                .adopt_handoff_port(fd, &ep, &label, Box::new(move |a| accepted(&weak, id, a)))
                .map_err(|e| e.to_string())?;
            let rate = rate_of(&sock, None);
            (l, Kind::NoWait { rate, refused: 0 })
        }
        Mode::Wait => {
            let w = h
                .adopt_watched_port(
                    fd,
                    &ep,
                    &label,
                    Box::new(move |w, fd| readable(&weak, id, w, fd)),
                )
                .map_err(|e| e.to_string())?;
            let rate = rate_of(&sock, None);
            (
                w.listener(),
                Kind::Wait {
                    watch: w,
                    child: None,
                    rate,
                    retry: None,
                },
            )
        }
    };
    rc.borrow_mut().ports.push(Port {
        id,
        metrics: if matches!(kind, Kind::Internal) {
            PortMetrics::default()
        } else {
            PortMetrics::new(&label)
        },
        spec: spec_of(&sock),
        sock,
        label,
        listener,
        kind,
    });
    Ok(())
}

/// A `nowait` port accepted a connection: a child gets it, unless `.max` says no (then the
/// connection is closed).
fn accepted(weak: &Weak<RefCell<State>>, id: u64, a: Accepted) {
    let Some(rc) = weak.upgrade() else { return };
    let (spec, label, handle, m) = {
        let mut s = rc.borrow_mut();
        let Some(h) = s.handle.clone() else { return };
        let Some(p) = s.ports.iter_mut().find(|p| p.id == id) else {
            return;
        };
        let Kind::NoWait { rate, refused } = &mut p.kind else {
            return;
        };
        if let Some(r) = rate {
            let now = h.now();
            if !r.try_start(now) {
                if *refused == 0 {
                    let wait = r.next_start(now).saturating_duration_since(now);
                    log::warn!(target: SYSTEM,
                        "'{}': {} programs started in the last minute (nowait.{}): refusing \
                         connections for {} s.", p.label, r.max(), r.max(), wait.as_secs().max(1));
                }
                *refused += 1;
                p.metrics.refused.inc();
                return;
            }
            if *refused > 0 {
                log::info!(target: SYSTEM,
                    "'{}': starting programs again; {} connection(s) refused.", p.label, *refused);
                *refused = 0;
            }
        }
        let Some(spec) = p.spec.clone() else { return };
        (
            spec.stdio_fd(a.socket),
            p.label.clone(),
            h,
            p.metrics.clone(),
        )
    };
    let program = spec.program().to_string_lossy().into_owned();
    match handle.spawn_process(
        spec,
        Box::new(NoWaitChild {
            state: weak.clone(),
            label: label.clone(),
            running: m.running.clone(),
        }),
    ) {
        Ok(pid) => {
            m.sessions.inc();
            m.running.inc();
            log::debug!(target: SYSTEM, "'{label}': PID {} for {}.", pid.pid(), a.peer)
        }
        Err(e) => {
            m.start_failures.inc();
            log::error!(target: SYSTEM, "'{label}': cannot start {program}: {e}")
        }
    }
}

/// A `wait` port is readable: its program gets the socket, unless `.max` says wait.
fn readable(weak: &Weak<RefCell<State>>, id: u64, w: WatchId, fd: BorrowedFd<'_>) {
    let Some(rc) = weak.upgrade() else { return };
    let (spec, label, handle, m) = {
        let mut s = rc.borrow_mut();
        // During a hand-over the socket is left for the successor (watched again if the
        // hand-over fails).
        if !s.active || s.handing_over {
            return;
        }
        let Some(h) = s.handle.clone() else { return };
        let Some(p) = s.ports.iter_mut().find(|p| p.id == id) else {
            return;
        };
        let Kind::Wait { rate, retry, .. } = &mut p.kind else {
            return;
        };
        if let Some(r) = rate {
            let now = h.now();
            if !r.try_start(now) {
                let wait = r.next_start(now).saturating_duration_since(now);
                let why = match (p.sock.conf.max, p.sock.key.proto.socktype()) {
                    (Some(_), _) => "",
                    (None, SockType::Stream) => {
                        " (the default for wait: a wait program must take the socket's \
                         connections; for a program per connection, write nowait)"
                    }
                    // nowait is no answer here: a datagram line with a program must wait.
                    (None, SockType::Dgram) => {
                        " (the default for wait: a wait program must read the socket's \
                         datagrams before it exits)"
                    }
                };
                log::warn!(target: SYSTEM,
                    "'{}': {} programs started in the last minute (wait.{}){why}: the next in {} s.",
                    p.label, r.max(), r.max(), wait.as_secs().max(1));
                p.metrics.refused.inc();
                let again = h.clone();
                *retry = Some(h.call_later(wait, move || again.watch_again(w)));
                return;
            }
        }
        let Some(spec) = p.spec.clone() else { return };
        let copy = match fd.try_clone_to_owned() {
            Ok(c) => c,
            Err(e) => {
                log::error!(target: SYSTEM, "'{}': cannot copy the socket: {e}", p.label);
                let again = h.clone();
                *retry = Some(h.call_later(RETRY, move || again.watch_again(w)));
                return;
            }
        };
        // The program holds the port: if twistrs dies, it dies too, so a new start can
        // bind the port again.
        let spec = spec.stdio_fd(copy).parent_death_signal(Some(libc::SIGKILL));
        (spec, p.label.clone(), h, p.metrics.clone())
    };
    let program = spec.program().to_string_lossy().into_owned();
    let child = WaitChild {
        state: weak.clone(),
        port: id,
        label: label.clone(),
        running: m.running.clone(),
    };
    let started = handle.spawn_process(spec, Box::new(child));
    let mut s = rc.borrow_mut();
    let Some(Kind::Wait { child, retry, .. }) =
        s.ports.iter_mut().find(|p| p.id == id).map(|p| &mut p.kind)
    else {
        return;
    };
    match started {
        Ok(pid) => {
            m.sessions.inc();
            m.running.inc();
            log::debug!(target: SYSTEM, "'{label}': PID {}.", pid.pid());
            *child = Some(pid);
        }
        Err(e) => {
            m.start_failures.inc();
            log::error!(target: SYSTEM,
                "'{label}': cannot start {program}: {e}; trying again in {} s.", RETRY.as_secs());
            let again = handle.clone();
            *retry = Some(handle.call_later(RETRY, move || again.watch_again(w)));
        }
    }
}

/// A `wait` program ended: its port is watched again (or the hand-over learns it is gone).
fn wait_ended(rc: &Rc<RefCell<State>>, port: u64, pid: ProcessId) {
    let done = {
        let mut s = rc.borrow_mut();
        let watch_again = s.active && !s.handing_over;
        let handle = s.handle.clone();
        if let Some(Kind::Wait { watch, child, .. }) = s
            .ports
            .iter_mut()
            .find(|p| p.id == port)
            .map(|p| &mut p.kind)
            && *child == Some(pid)
        {
            *child = None;
            if watch_again && let Some(h) = &handle {
                h.watch_again(*watch);
            }
        }
        if s.handing_over && !wait_children_left(&s) {
            s.handover.take()
        } else {
            None
        }
    };
    if let Some(d) = done {
        let _ = d.callback(());
    }
}

fn wait_children_left(s: &State) -> bool {
    s.ports
        .iter()
        .any(|p| matches!(p.kind, Kind::Wait { child: Some(_), .. }))
}

/// Logs how a program ended when it did not exit 0: a warning, unless inetd is stopping
/// (or handing over), which signals its programs itself.
fn log_end(state: &Weak<RefCell<State>>, label: &str, pid: u32, st: ProcessStatus) {
    if st.success() {
        return;
    }
    let how = match st {
        ProcessStatus::Signaled { .. } => "by",
        _ => "with",
    };
    let stopping = state
        .upgrade()
        .is_none_or(|rc| rc.try_borrow().is_ok_and(|s| !s.active || s.handing_over));
    if stopping {
        log::info!(target: SYSTEM, "'{label}' (PID {pid}) ended {how} {st}.");
    } else {
        log::warn!(target: SYSTEM, "'{label}' (PID {pid}) ended {how} {st}.");
    }
}

/// A `nowait` program: its session is a connection in progress.
struct NoWaitChild {
    state: Weak<RefCell<State>>,
    label: Rc<str>,
    running: Gauge,
}

impl ProcessProtocol for NoWaitChild {
    fn process_exited(&mut self, p: &mut ProcessTransport<'_>, st: ProcessStatus) {
        self.running.dec();
        log_end(&self.state, &self.label, p.pid(), st);
    }

    /// A stop lets the session finish, as a connection's; the reactor's drain kills what
    /// is left at the shutdown deadline.
    fn stop_requested(&mut self, _p: &mut ProcessTransport<'_>) {}
}

/// A `wait` program: the port waits for it.
struct WaitChild {
    state: Weak<RefCell<State>>,
    port: u64,
    label: Rc<str>,
    running: Gauge,
}

impl ProcessProtocol for WaitChild {
    fn process_exited(&mut self, p: &mut ProcessTransport<'_>, st: ProcessStatus) {
        self.running.dec();
        log_end(&self.state, &self.label, p.pid(), st);
        if let Some(rc) = self.state.upgrade() {
            wait_ended(&rc, self.port, p.id());
        }
    }
}

/// SIGHUP: the file again. A file that does not read leaves everything as it was.
fn reload(rc: &Rc<RefCell<State>>, h: &mut ServiceHost<'_>) {
    let opts = {
        let s = rc.borrow();
        if !s.active || s.handing_over {
            return;
        }
        s.opts.clone()
    };
    let plan = match plan::load(&opts) {
        Ok(p) => p,
        Err(e) => {
            log::error!(target: SYSTEM, "{e}; the services stay as they were.");
            return;
        }
    };
    for w in &plan.warnings {
        log::warn!(target: SYSTEM, "{w}");
    }
    let total = plan.sockets.len();
    let mut wanted: Vec<Option<Socket>> = plan.sockets.into_iter().map(Some).collect();
    let mut removed = Vec::new();
    let mut changed = 0;
    {
        let mut s = rc.borrow_mut();
        let ports = std::mem::take(&mut s.ports);
        for mut p in ports {
            let new = wanted
                .iter_mut()
                .find(|w| w.as_ref().is_some_and(|w| w.key == p.sock.key))
                .and_then(Option::take);
            let Some(new) = new else {
                removed.push(p);
                continue;
            };
            let mut same = new.clone();
            same.conf.line = p.sock.conf.line;
            if same != p.sock {
                changed += 1;
                log::info!(target: SYSTEM, "'{}' changed (line {}).", p.label, new.conf.line);
                p.spec = spec_of(&new);
                match &mut p.kind {
                    Kind::Internal => {}
                    Kind::NoWait { rate, .. } | Kind::Wait { rate, .. } => {
                        *rate = rate_of(&new, rate.take());
                    }
                }
            }
            p.sock = new;
            s.ports.push(p);
        }
    }
    let n_removed = removed.len();
    for p in removed {
        if let Kind::Wait { retry: Some(t), .. } = &p.kind {
            t.cancel();
        }
        h.stop_listening(p.listener);
        log::info!(target: SYSTEM, "'{}' removed.", p.label);
    }
    let mut added = 0;
    for new in wanted.into_iter().flatten() {
        let label = new.label();
        let line = new.conf.line;
        match open(rc, h, new) {
            Ok(()) => {
                added += 1;
                log::info!(target: SYSTEM, "'{label}' added (line {line}).");
            }
            Err(e) => log::error!(target: SYSTEM,
                "{}", plan::describe(&opts.file, Some(line), &e)),
        }
    }
    log::info!(target: SYSTEM,
        "Read {} again: {total} socket(s); {added} added, {n_removed} removed, {changed} changed.",
        opts.file.display());
}

impl Service for Inetd {
    fn name(&self) -> &str {
        "inetd"
    }

    fn single_process(&self) -> Option<&str> {
        Some(
            "its wait services hand one socket to one program, and nowait.max counts the programs \
             of one process",
        )
    }

    fn privileged_start_service(&mut self, h: &mut ServiceHost<'_>) -> Result<(), Failure> {
        let (planned, file) = {
            let mut s = self.0.borrow_mut();
            s.handle = Some(h.handle());
            (std::mem::take(&mut s.planned), s.opts.file.clone())
        };
        for sock in planned {
            let line = sock.conf.line;
            open(&self.0, h, sock)
                .map_err(|e| Failure::msg(plan::describe(&file, Some(line), &e)))?;
        }
        Ok(())
    }

    fn start_service(&mut self, h: &mut ServiceHost<'_>) -> Result<(), Failure> {
        self.0.borrow_mut().active = true;
        let weak = Rc::downgrade(&self.0);
        let handle = h.handle();
        h.handle().on_reopen(Box::new(move || {
            let weak = weak.clone();
            handle.with_service_host(move |host| {
                if let Some(rc) = weak.upgrade() {
                    reload(&rc, host);
                }
            });
        }));
        Ok(())
    }

    fn stop_service(&mut self, h: &mut ServiceHost<'_>) {
        let ports = {
            let mut s = self.0.borrow_mut();
            s.active = false;
            std::mem::take(&mut s.ports)
        };
        for p in ports {
            if let Kind::Wait { retry: Some(t), .. } = &p.kind {
                t.cancel();
            }
            h.stop_listening(p.listener);
        }
    }

    /// `wait` programs hold their socket, which the successor will serve: they stop first
    /// (SIGTERM, then SIGKILL after 5 s), so no two serve it. `nowait` programs are sessions
    /// in progress and finish in this process's drain.
    fn prepare_handover(&mut self, h: &mut ServiceHost<'_>) -> Deferred<()> {
        let d = Deferred::new();
        let handle = h.handle();
        let mut s = self.0.borrow_mut();
        s.handing_over = true;
        for p in &mut s.ports {
            if let Kind::Wait { child, retry, .. } = &mut p.kind {
                if let Some(t) = retry.take() {
                    t.cancel();
                }
                if let Some(c) = child {
                    log::info!(target: SYSTEM,
                        "Stopping '{}' (PID {}) before the new process serves its socket.",
                        p.label, c.pid());
                    handle.stop_process(*c);
                }
            }
        }
        if wait_children_left(&s) {
            s.handover = Some(d.clone());
        } else {
            let _ = d.callback(());
        }
        d
    }

    fn handover_failed(&mut self, _h: &mut ServiceHost<'_>) {
        let mut s = self.0.borrow_mut();
        s.handing_over = false;
        s.handover = None;
        if let Some(h) = s.handle.clone() {
            for p in &s.ports {
                if let Kind::Wait {
                    watch, child: None, ..
                } = &p.kind
                {
                    h.watch_again(*watch);
                }
            }
        }
    }
}
