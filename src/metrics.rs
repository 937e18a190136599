//! `--metrics ENDPOINT`: the Prometheus text exposition format (0.0.4) on `GET /metrics`,
//! served by a tiny HTTP/1.1 responder on the same reactor. Process figures come from
//! /proc/self at scrape time and the listeners' counters from the reactor's own integers, so
//! serving requests counts nothing more than a few additions.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use twistrs_core::address::Address;
use twistrs_core::metrics::render_labels;
use twistrs_core::protocol::{Factory, Protocol, Room};
use twistrs_core::reactor::{ListenerStats, PortStats};
use twistrs_core::transport::{ConnId, Transport};

/// The most connections at once. At the limit a newcomer is let in by closing the connection
/// that has waited longest for its request head ([`HEAD_GRACE`]), so clients trickling heads
/// cannot keep a scrape waiting in the backlog past its timeout.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection's request head may take before, with every slot taken, it can be
/// closed for a newcomer: a scraper sends its whole head at once, so this only has to cover
/// the round trips of connecting (a TLS handshake's too) on a slow link. Not shorter, or a
/// scraper let in by a burst of newcomers could be closed by the next ones before its head
/// arrives.
const HEAD_GRACE: Duration = Duration::from_secs(1);
/// A request head larger than this is answered 431 and closed.
const MAX_REQUEST: usize = 8 * 1024;
/// A scraper whose request head has not arrived this long after it connected is dropped: a
/// whole-head deadline, as the web plugin's, so a client trickling a byte at a time cannot hold
/// one of the few slots.
const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// The most header fields a scrape may carry.
const MAX_HEADERS: usize = 32;

/// How long a master waits for all its workers' expositions at a scrape, asked all at once: a
/// worker stuck counts with the figures it last gave (and `twistrs_workers_scraped` says
/// so), the scrape still answers.
const WORKERS_DEADLINE: Duration = Duration::from_secs(3);
/// The most a worker's exposition may be.
const MAX_WORKER_EXPOSITION: usize = 64 << 20;
/// What a master asks each worker, as a scraper would.
const WORKER_REQUEST: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: master\r\n\r\n";

/// Where a scrape's figures come from.
#[derive(Clone)]
pub(crate) enum Source {
    /// This process's reactor (one process, or a worker asked by its master).
    Local,
    /// A master's workers, each asked on its private socket, added up with the master's own.
    Workers(Rc<WorkerView>),
}

/// What a master's scrape needs: its workers' private metrics sockets, and the master's own
/// figures about them, kept current by its supervision loop.
pub(crate) struct WorkerView {
    sockets: Vec<PathBuf>,
    pub(crate) restarts: Cell<u64>,
    slots: RefCell<Vec<Slot>>,
    /// The counters (and histograms) of the workers that ended, as last scraped: they stay in
    /// the sums, so a counter of the service never goes down when a worker is replaced (a
    /// sum that drops is a reset to Prometheus, and `rate()` would count the whole of what
    /// the other workers had counted again).
    retired: RefCell<String>,
}

/// What the master knows of one worker slot.
#[derive(Default)]
struct Slot {
    serving: bool,
    /// Bumped when the slot's worker ends: an answer asked of an earlier one is not its.
    generation: u64,
    /// What the slot's current worker last answered; it stands in while the worker does not.
    last: Option<String>,
    /// Its last scrape went unanswered (logged once, until it answers again).
    silent: bool,
}

impl WorkerView {
    pub(crate) fn new(sockets: Vec<PathBuf>) -> WorkerView {
        WorkerView {
            slots: RefCell::new(sockets.iter().map(|_| Slot::default()).collect()),
            sockets,
            restarts: Cell::new(0),
            retired: RefCell::new(String::new()),
        }
    }

    /// The supervision loop's news: slot `i`'s worker serves now, or not yet.
    pub(crate) fn set_serving(&self, i: usize, serving: bool) {
        if let Some(s) = self.slots.borrow_mut().get_mut(i) {
            s.serving = serving;
        }
    }

    /// Slot `i`'s worker ended: what it counted, as last scraped, stays in the sums; its
    /// gauges go with it.
    pub(crate) fn ended(&self, i: usize) {
        let mut slots = self.slots.borrow_mut();
        let Some(s) = slots.get_mut(i) else {
            return;
        };
        s.generation += 1;
        s.serving = false;
        s.silent = false;
        if let Some(last) = s.last.take() {
            let mut retired = self.retired.borrow_mut();
            *retired = counters_only(&merge("", &[std::mem::take(&mut *retired), last]));
        }
    }

    /// The serving slots to ask at a scrape: index, generation, socket.
    fn to_ask(&self) -> Vec<(usize, u64, PathBuf)> {
        self.slots
            .borrow()
            .iter()
            .zip(&self.sockets)
            .enumerate()
            .filter(|(_, (s, _))| s.serving)
            .map(|(i, (s, p))| (i, s.generation, p.clone()))
            .collect()
    }

    /// Takes a scrape's answers in (those of a worker that ended meanwhile are dropped),
    /// logging a worker that falls silent once and once more when it answers again. Returns
    /// how many answered.
    fn take_answers(
        &self,
        asked: &[(usize, u64, PathBuf)],
        answers: Vec<Result<String, String>>,
    ) -> usize {
        let mut slots = self.slots.borrow_mut();
        let mut fresh = 0;
        for ((i, generation, path), answer) in asked.iter().zip(answers) {
            let Some(s) = slots.get_mut(*i).filter(|s| s.generation == *generation) else {
                continue;
            };
            match answer {
                Ok(text) => {
                    if std::mem::take(&mut s.silent) {
                        log::info!(target: "twistrs.metrics",
                            "Worker {} answers for its metrics again.", i + 1);
                    }
                    s.last = Some(text);
                    fresh += 1;
                }
                Err(e) => {
                    if !std::mem::replace(&mut s.silent, true) {
                        log::warn!(target: "twistrs.metrics",
                            "Worker {}'s metrics ({}): {e}; the figures it last gave stand in \
                             until it answers.", i + 1, path.display());
                    }
                }
            }
        }
        fresh
    }

    /// What the sums are made of besides the master's own: the retired counters and each
    /// worker's latest answer.
    fn expositions(&self) -> Vec<String> {
        let retired = self.retired.borrow();
        (!retired.is_empty())
            .then(|| retired.clone())
            .into_iter()
            .chain(self.slots.borrow().iter().filter_map(|s| s.last.clone()))
            .collect()
    }

    fn serving(&self) -> usize {
        self.slots.borrow().iter().filter(|s| s.serving).count()
    }
}

/// The connections still waiting for their request head, oldest first, with when each
/// connected: the ones the factory may close for a newcomer at the limit.
type Waiting = Rc<RefCell<VecDeque<(ConnId, Instant)>>>;

/// Builds one [`MetricsProtocol`] per scrape connection.
pub(crate) struct MetricsFactory {
    source: Source,
    waiting: Waiting,
}

impl MetricsFactory {
    pub(crate) fn new(source: Source) -> MetricsFactory {
        MetricsFactory {
            source,
            waiting: Waiting::default(),
        }
    }
}

impl Factory for MetricsFactory {
    fn name(&self) -> &'static str {
        "Metrics"
    }

    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(MetricsProtocol {
            head: Vec::new(),
            answered: false,
            source: self.source.clone(),
            waiting: self.waiting.clone(),
            id: None,
        }))
    }

    fn max_connections(&self) -> Option<usize> {
        Some(MAX_CONNECTIONS)
    }

    /// The connection that has waited longest for its head, once past [`HEAD_GRACE`]; one
    /// whose request is being answered is never closed.
    fn make_room(&mut self) -> Room {
        match self.waiting.borrow().front() {
            Some(&(id, since)) if since.elapsed() >= HEAD_GRACE => Room::Close(id),
            Some(&(_, since)) => Room::After(since + HEAD_GRACE),
            None => Room::Full,
        }
    }
}

/// Reads one request head, answers it, and closes (`Connection: close`).
struct MetricsProtocol {
    head: Vec<u8>,
    /// One request per connection: what follows its head is ignored.
    answered: bool,
    source: Source,
    /// The factory's connections waiting for their heads: this one is there until its head
    /// is complete (or it closes).
    waiting: Waiting,
    id: Option<ConnId>,
}

impl MetricsProtocol {
    /// Its head is complete, or it closed: it is no longer one to give up at the limit.
    fn stop_waiting(&mut self) {
        if let Some(id) = self.id.take() {
            self.waiting.borrow_mut().retain(|(w, _)| *w != id);
        }
    }
}

impl Protocol for MetricsProtocol {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        // Idle covers a scraper that stops reading the answer; the deadline one that never
        // finishes asking.
        t.set_timeout(Some(HEAD_DEADLINE));
        t.call_later(HEAD_DEADLINE, 0);
        self.id = Some(t.id());
        self.waiting
            .borrow_mut()
            .push_back((t.id(), Instant::now()));
    }

    fn connection_lost(&mut self, _t: &mut Transport<'_>, _reason: &twistrs_core::Reason) {
        self.stop_waiting();
    }

    fn timer_fired(&mut self, t: &mut Transport<'_>, _key: u64) {
        if !self.answered {
            t.abort_connection();
        }
    }

    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        if self.answered {
            return;
        }
        // A head can only end at a new LF: not parsed again for every byte of a slow one.
        self.head.extend_from_slice(data);
        if !data.contains(&b'\n') && self.head.len() <= MAX_REQUEST {
            return;
        }
        // httparse, the grammar the web plugin's parser uses too.
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut storage);
        let reply = match req.parse(&self.head) {
            Ok(httparse::Status::Partial) if self.head.len() <= MAX_REQUEST => return,
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => response(
                "431 Request Header Fields Too Large",
                "text/plain",
                "too large\n",
            ),
            Err(_) => response("400 Bad Request", "text/plain", "malformed request\n"),
            Ok(httparse::Status::Complete(_)) => {
                let path = req.path.map(|p| p.split('?').next().unwrap_or(p));
                match (req.method, path) {
                    (Some("GET"), Some("/metrics")) => {
                        self.answered = true;
                        self.stop_waiting();
                        let (handle, id) = (t.handle().clone(), t.id());
                        let answer = move |body: &str| {
                            handle.write_to(
                                id,
                                response(
                                    "200 OK",
                                    "text/plain; version=0.0.4; charset=utf-8",
                                    body,
                                ),
                            );
                            handle.lose_connection(id);
                        };
                        match &self.source {
                            Source::Local => t.handle().listener_stats(move |stats, ports| {
                                answer(&render(&stats, &ports));
                            }),
                            Source::Workers(view) => {
                                let view = view.clone();
                                let handle = t.handle().clone();
                                t.handle().listener_stats(move |stats, ports| {
                                    let asked = view.to_ask();
                                    let paths: Vec<PathBuf> =
                                        asked.iter().map(|(_, _, p)| p.clone()).collect();
                                    // Waiting on sockets, off the master's reactor thread.
                                    handle
                                        .defer_to_thread_abandonable(move || Ok(gather(&paths)))
                                        .consume(move |r| {
                                            let fresh =
                                                view.take_answers(&asked, r.unwrap_or_default());
                                            let own = master_own(&view, &stats, &ports, fresh);
                                            answer(&merge(&own, &view.expositions()));
                                        });
                                });
                            }
                        }
                        return;
                    }
                    (Some("GET" | "HEAD"), _) => {
                        response("404 Not Found", "text/plain", "not found\n")
                    }
                    _ => response("405 Method Not Allowed", "text/plain", "GET only\n"),
                }
            }
        };
        self.answered = true;
        self.stop_waiting();
        t.write(&reply);
        t.lose_connection();
    }
}

fn response(status: &str, ctype: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A master's own exposition: its process figures and what it knows of its workers.
fn master_own(
    view: &WorkerView,
    stats: &[ListenerStats],
    ports: &[PortStats],
    scraped: usize,
) -> String {
    let mut out = render(stats, ports);
    let mut one = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
        );
    };
    one(
        "twistrs_workers",
        "gauge",
        "Worker processes the master runs (--workers).",
        view.sockets.len() as u64,
    );
    one(
        "twistrs_workers_serving",
        "gauge",
        "Workers serving now.",
        view.serving() as u64,
    );
    one(
        "twistrs_workers_scraped",
        "gauge",
        "Workers that answered this scrape (one that did not counts with the figures it last gave).",
        scraped as u64,
    );
    one(
        "twistrs_worker_restarts_total",
        "counter",
        "Workers that died and were started again.",
        view.restarts.get(),
    );
    out
}

/// Each worker's exposition, asked on its private socket as a scraper would: all at once and
/// within one deadline, so a stuck worker costs the scrape that deadline and never the others
/// their answers. Per socket, in order: the exposition, or why there is none.
fn gather(paths: &[PathBuf]) -> Vec<Result<String, String>> {
    let end = Instant::now() + WORKERS_DEADLINE;
    let mut asks: Vec<Ask> = paths.iter().map(|p| Ask::connect(p)).collect();
    loop {
        let pending: Vec<usize> = (0..asks.len())
            .filter(|&i| asks[i].outcome.is_none())
            .collect();
        let left = end.saturating_duration_since(Instant::now());
        if pending.is_empty() || left.is_zero() {
            break;
        }
        let mut fds: Vec<libc::pollfd> = pending
            .iter()
            .map(|&i| libc::pollfd {
                fd: asks[i].sock.as_ref().map_or(-1, |s| s.as_raw_fd()),
                events: if asks[i].sent < WORKER_REQUEST.len() {
                    libc::POLLOUT
                } else {
                    libc::POLLIN
                },
                revents: 0,
            })
            .collect();
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: `fds` holds `fds.len()` initialised pollfds and outlives the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            for &i in &pending {
                asks[i].outcome = Some(Err(e.to_string()));
            }
            break;
        }
        for (fd, &i) in fds.iter().zip(&pending) {
            if fd.revents != 0 {
                asks[i].step();
            }
        }
    }
    asks.into_iter()
        .map(|a| {
            a.outcome.unwrap_or_else(|| {
                Err(format!("no answer within {} s", WORKERS_DEADLINE.as_secs()))
            })
        })
        .collect()
}

/// One worker being asked for its exposition, without blocking.
struct Ask {
    sock: Option<UnixStream>,
    /// How much of the request is written.
    sent: usize,
    answer: Vec<u8>,
    outcome: Option<Result<String, String>>,
}

impl Ask {
    /// Connected without blocking: a stuck worker's full backlog would block a plain connect.
    fn connect(path: &std::path::Path) -> Ask {
        let sock = (|| {
            let s = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
            s.set_nonblocking(true)?;
            match s.connect(&socket2::SockAddr::unix(path)?) {
                Err(e) if e.raw_os_error() != Some(libc::EINPROGRESS) => Err(e),
                _ => Ok(UnixStream::from(std::os::fd::OwnedFd::from(s))),
            }
        })();
        let outcome = match &sock {
            Ok(_) => None,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                Some(Err("its queue is full: it does not accept".to_string()))
            }
            Err(e) => Some(Err(e.to_string())),
        };
        Ask {
            sock: sock.ok(),
            sent: 0,
            answer: Vec::new(),
            outcome,
        }
    }

    /// Writes what is left of the request, or reads what has come of the answer.
    fn step(&mut self) {
        let Some(s) = self.sock.as_mut() else {
            return;
        };
        if self.sent < WORKER_REQUEST.len() {
            match s.write(&WORKER_REQUEST[self.sent..]) {
                Ok(0) => self.done(Err("it does not take the request".into())),
                Ok(n) => self.sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => self.done(Err(e.to_string())),
            }
            return;
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            match s.read(&mut buf) {
                // The worker answers one request per connection, then closes it.
                Ok(0) => {
                    let answer = std::mem::take(&mut self.answer);
                    return self.done(exposition(answer));
                }
                Ok(n) if self.answer.len() + n > MAX_WORKER_EXPOSITION => {
                    return self.done(Err("its answer is larger than 64 MiB".into()));
                }
                Ok(n) => self.answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => return self.done(Err(e.to_string())),
            }
        }
    }

    fn done(&mut self, outcome: Result<String, String>) {
        self.sock = None;
        self.outcome = Some(outcome);
    }
}

/// The body of a worker's whole answer, if it is a 200 in UTF-8.
fn exposition(raw: Vec<u8>) -> Result<String, String> {
    let text = String::from_utf8(raw).map_err(|_| "its answer is not UTF-8".to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "its answer ended early".to_string())?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(head.lines().next().unwrap_or_default().to_string());
    }
    Ok(body.to_string())
}

/// A per-factory metric: name, type, help, and how to read it from a snapshot.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ListenerStats) -> u64,
);

/// A per-`udp:`-listener counter: name, help, and how to read it.
type PortSeries = (&'static str, &'static str, fn(&PortStats) -> u64);

/// The whole exposition: process metrics, the plugins' series, then one series per listener
/// (factory and endpoint) and counter and one per `udp:` listener.
pub(crate) fn render(stats: &[ListenerStats], ports: &[PortStats]) -> String {
    let mut out = String::new();
    let p = process();
    let mut one = |name: &str, kind: &str, help: &str, v: Option<f64>| {
        if let Some(v) = v {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        }
    };
    one(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the epoch in seconds.",
        p.start_time,
    );
    one(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time spent in seconds.",
        p.cpu_seconds,
    );
    one(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        p.resident,
    );
    one(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        p.open_fds,
    );
    one(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        p.max_fds,
    );
    let _ = write!(
        out,
        "# HELP twistrs_build_info The twistrs version serving.\n# TYPE twistrs_build_info gauge\n\
         twistrs_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    let series: [Series; 6] = [
        (
            "twistrs_connections_accepted_total",
            "counter",
            "Connections accepted.",
            |s| s.accepted,
        ),
        (
            "twistrs_connections_open",
            "gauge",
            "Connections open now.",
            |s| s.open,
        ),
        (
            "twistrs_connection_limit_pauses_total",
            "counter",
            "Times accepting paused at the connection limit.",
            |s| s.limit_pauses,
        ),
        (
            "twistrs_connection_limit_closes_total",
            "counter",
            "Connections closed at the connection limit to let a new one in.",
            |s| s.limit_closes,
        ),
        (
            "twistrs_received_bytes_total",
            "counter",
            "Bytes received from peers (after TLS).",
            |s| s.bytes_received,
        ),
        (
            "twistrs_sent_bytes_total",
            "counter",
            "Bytes sent to peers (before TLS).",
            |s| s.bytes_sent,
        ),
    ];
    twistrs_core::metrics::render(&mut out);
    let labels: Vec<String> = stats
        .iter()
        .map(|s| render_labels(&[("factory", &s.factory), ("listener", &s.listener)]))
        .collect();
    for (name, kind, help, get) in series {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (s, labels) in stats.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{labels}}} {}", get(s));
        }
    }
    let port_series: [PortSeries; 2] = [
        (
            "twistrs_datagrams_received_total",
            "Datagrams received on a udp: listener.",
            |p| p.datagrams,
        ),
        (
            "twistrs_datagram_received_bytes_total",
            "Bytes of the datagrams received on a udp: listener.",
            |p| p.bytes,
        ),
    ];
    if !ports.is_empty() {
        for (name, help, get) in port_series {
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} counter\n");
            for p in ports {
                let labels = render_labels(&[("protocol", &p.protocol), ("listener", &p.listener)]);
                let _ = writeln!(out, "{name}{{{labels}}} {}", get(p));
            }
        }
    }
    render_tls(&mut out, stats, &labels);
    out
}

/// The TLS series, for the listeners that serve TLS (or took STARTTLS): handshakes done and
/// failed, and each certificate's expiry, which an operator alerts on before clients do.
fn render_tls(out: &mut String, stats: &[ListenerStats], labels: &[String]) {
    let tls: Vec<(&ListenerStats, &String)> = stats
        .iter()
        .zip(labels)
        .filter(|(s, _)| {
            !s.certificates.is_empty() || s.tls_handshakes > 0 || s.tls_handshake_failures > 0
        })
        .collect();
    if tls.is_empty() {
        return;
    }
    let counts: [Series; 2] = [
        (
            "twistrs_tls_handshakes_total",
            "counter",
            "TLS handshakes completed.",
            |s| s.tls_handshakes,
        ),
        (
            "twistrs_tls_handshake_failures_total",
            "counter",
            "TLS connections closed before their handshake completed (refused, timed out, or \
             left by the client).",
            |s| s.tls_handshake_failures,
        ),
    ];
    for (name, kind, help, get) in counts {
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        for (s, labels) in &tls {
            let _ = writeln!(out, "{name}{{{labels}}} {}", get(s));
        }
    }
    if tls.iter().any(|(s, _)| !s.certificates.is_empty()) {
        let name = CERT_EXPIRY;
        let _ = write!(
            out,
            "# HELP {name} When a certificate in service expires (its notAfter), in seconds \
             since the epoch.\n# TYPE {name} gauge\n"
        );
        for (s, labels) in &tls {
            for (file, t) in &s.certificates {
                let file = render_labels(&[("file", file)]);
                let _ = writeln!(out, "{name}{{{labels},{file}}} {t}");
            }
        }
    }
}

/// The certificates' expiry: the same file in every worker, so merged by the earliest, not
/// summed (workers that reloaded at different moments may briefly differ).
const CERT_EXPIRY: &str = "twistrs_tls_certificate_expiry_timestamp_seconds";

/// Families a master's exposition gives for the whole service, taken from the master alone:
/// one start time, one descriptor limit, one version (summed, they would mean nothing).
const MASTER_ONLY: [&str; 3] = [
    "process_start_time_seconds",
    "process_max_fds",
    "twistrs_build_info",
];

/// One family of an exposition being merged: its HELP and TYPE lines and its samples (the
/// name and labels, and the value so far), in the order they first appeared.
struct Family {
    name: String,
    head: Vec<String>,
    samples: Vec<(String, Value)>,
}

impl Family {
    /// What its TYPE line says: counter, gauge, histogram, summary or untyped.
    fn kind(&self) -> Option<&str> {
        self.head
            .iter()
            .find_map(|h| h.strip_prefix("# TYPE ")?.split(' ').nth(1))
    }
}

/// A sample's value: counts add up exactly as integers; anything else as a float.
#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

impl Value {
    fn parse(v: &str) -> Option<Value> {
        v.parse()
            .map(Value::Int)
            .ok()
            .or_else(|| v.parse().ok().map(Value::Float))
    }

    fn add(self, other: Value) -> Value {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Value::Int(a.saturating_add(b)),
            (a, b) => Value::Float(a.float() + b.float()),
        }
    }

    fn float(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Float(v) => v,
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Int(v) => write!(f, "{v}"),
            // The text format's spelling (Rust's is `inf`).
            Value::Float(v) if v.is_infinite() => {
                f.write_str(if *v > 0.0 { "+Inf" } else { "-Inf" })
            }
            Value::Float(v) => write!(f, "{v}"),
        }
    }
}

/// The service's exposition under `--workers`: the master's own (first) and each worker's,
/// every sample with the same name and labels added up across processes (counters, gauges,
/// histograms' buckets, sums and counts alike), except the [`MASTER_ONLY`] families, which
/// are the master's. Families and samples keep the order they first appeared in.
pub(crate) fn merge(master: &str, workers: &[String]) -> String {
    let mut families: Vec<Family> = Vec::new();
    add_exposition(&mut families, master, true);
    for text in workers {
        add_exposition(&mut families, text, false);
    }
    write_families(&families)
}

/// Only what counts up in `text` (counters, histograms, and a summary's sum and count): what
/// a worker that ended leaves in the sums. Its gauges went with it.
fn counters_only(text: &str) -> String {
    let mut families: Vec<Family> = Vec::new();
    add_exposition(&mut families, text, true);
    families.retain_mut(|f| match f.kind() {
        Some("counter" | "histogram") => true,
        Some("summary") => {
            let name = f.name.clone();
            f.samples
                .retain(|(k, _)| k.split('{').next() != Some(name.as_str()));
            true
        }
        _ => false,
    });
    write_families(&families)
}

/// Adds the samples of one process's exposition into `families`; `master` says whether the
/// master's own, which alone gives the [`MASTER_ONLY`] families and its metrics listener's.
fn add_exposition(families: &mut Vec<Family>, text: &str, master: bool) {
    // The family declared last, for a sample whose name matches none.
    let mut current: Option<usize> = None;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("# HELP ")
            .or_else(|| line.strip_prefix("# TYPE "))
        {
            let name = rest.split(' ').next().unwrap_or_default();
            let at = match families.iter().position(|f| f.name == name) {
                Some(at) => at,
                None => {
                    families.push(Family {
                        name: name.to_string(),
                        head: Vec::new(),
                        samples: Vec::new(),
                    });
                    families.len() - 1
                }
            };
            let f = &mut families[at];
            if !f.head.iter().any(|h| h == line) && f.head.len() < 2 {
                f.head.push(line.to_string());
            }
            current = Some(at);
            continue;
        }
        let Some((key, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = key.split('{').next().unwrap_or_default();
        let belongs = |f: &Family| {
            name.strip_prefix(f.name.as_str())
                .is_some_and(|rest| ["", "_bucket", "_sum", "_count"].contains(&rest))
        };
        // Its own family's, if declared anywhere (the one last declared, else).
        let at = families
            .iter()
            .position(|f| f.name == name)
            .or_else(|| families.iter().position(belongs))
            .or(current);
        let (Some(at), Some(value)) = (at, Value::parse(value)) else {
            continue;
        };
        let f = &mut families[at];
        // A worker's own metrics listener is the master's private line to it: its scrapes
        // are not the service's (the master's `--metrics` listener counts those).
        if !master
            && (MASTER_ONLY.contains(&f.name.as_str()) || key.contains("factory=\"Metrics\""))
        {
            continue;
        }
        match f.samples.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) if f.name == CERT_EXPIRY => {
                if value.float() < v.float() {
                    *v = value;
                }
            }
            Some((_, v)) => *v = v.add(value),
            None => f.samples.push((key.to_string(), value)),
        }
    }
}

fn write_families(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        for h in &f.head {
            let _ = writeln!(out, "{h}");
        }
        for (key, v) in &f.samples {
            let _ = writeln!(out, "{key} {v}");
        }
    }
    out
}

/// What /proc/self says about us; `None` where it cannot be read (then the metric is left out).
#[derive(Default)]
struct Process {
    start_time: Option<f64>,
    cpu_seconds: Option<f64>,
    resident: Option<f64>,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
}

fn process() -> Process {
    // SAFETY: sysconf has no preconditions.
    let (tick, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let mut p = Process::default();
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // utime 14, stime 15, starttime 22, rss 24.
        let rest = crate::status::stat_fields(&stat);
        let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<f64>().ok());
        if tick > 0 {
            if let (Some(u), Some(s)) = (field(14), field(15)) {
                p.cpu_seconds = Some((u + s) / tick as f64);
            }
            p.start_time = field(22)
                .and_then(|st| crate::status::boot_time().map(|b| b as f64 + st / tick as f64));
        }
        if page > 0 {
            p.resident = field(24).map(|r| r * page as f64);
        }
    }
    p.open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        p.max_fds = Some(lim.rlim_cur as f64);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_ended_leaves_its_counts_and_takes_its_gauges() {
        let view = WorkerView::new(vec![PathBuf::from("w1"), PathBuf::from("w2")]);
        view.set_serving(0, true);
        view.set_serving(1, true);
        let asked = view.to_ask();
        assert_eq!(asked.len(), 2);
        let text = |n: u64| {
            format!(
                "# HELP c C.\n# TYPE c counter\nc{{l=\"a b\"}} {n}\n# HELP g G.\n# TYPE g gauge\n\
                 g {n}\n# HELP h H.\n# TYPE h histogram\nh_bucket{{le=\"+Inf\"}} {n}\nh_sum 0.5\n\
                 h_count {n}\n# HELP s S.\n# TYPE s summary\ns{{quantile=\"0.5\"}} 1\ns_sum 2\n\
                 s_count {n}\n"
            )
        };
        assert_eq!(view.take_answers(&asked, vec![Ok(text(3)), Ok(text(4))]), 2);
        // Worker 1 ends and its successor starts from zero: the counts stay, the gauge goes.
        view.ended(0);
        assert!(view.to_ask().iter().all(|(i, _, _)| *i == 1));
        // An answer asked of the worker that ended is not its successor's.
        assert_eq!(
            view.take_answers(&asked, vec![Ok(text(9)), Err("x".into())]),
            0
        );
        view.set_serving(0, true);
        let asked = view.to_ask();
        // Worker 2 does not answer: the figures it last gave stand in.
        assert_eq!(
            view.take_answers(&asked, vec![Ok(text(1)), Err("stuck".into())]),
            1
        );
        let out = merge("", &view.expositions());
        for want in [
            "c{l=\"a b\"} 8\n",
            "g 5\n",
            "h_bucket{le=\"+Inf\"} 8\n",
            "h_sum 1.5\n",
            "h_count 8\n",
            "s{quantile=\"0.5\"} 2\n",
            "s_sum 6\n",
            "s_count 8\n",
        ] {
            assert!(out.contains(want), "{want:?} in:\n{out}");
        }
    }

    #[test]
    fn merged_infinities_are_spelled_as_the_text_format_does() {
        let out = merge(
            "# TYPE a gauge\na +Inf\n# TYPE b gauge\nb -Inf\n# TYPE c gauge\nc NaN\n",
            &["# TYPE a gauge\na 1\n".to_string()],
        );
        assert_eq!(
            out,
            "# TYPE a gauge\na +Inf\n# TYPE b gauge\nb -Inf\n# TYPE c gauge\nc NaN\n"
        );
    }

    #[test]
    fn merging_adds_the_workers_samples_and_keeps_the_masters_own() {
        let master = "# HELP process_start_time_seconds S.\n# TYPE process_start_time_seconds gauge\n\
            process_start_time_seconds 100.5\n# HELP process_cpu_seconds_total C.\n\
            # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 0.25\n\
            # HELP twistrs_connections_open O.\n# TYPE twistrs_connections_open gauge\n";
        let w1 = "# HELP process_start_time_seconds S.\n# TYPE process_start_time_seconds gauge\n\
            process_start_time_seconds 200\n# HELP process_cpu_seconds_total C.\n\
            # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.5\n\
            # HELP twistrs_connections_open O.\n# TYPE twistrs_connections_open gauge\n\
            twistrs_connections_open{factory=\"Echo\",listener=\"tcp:7\"} 3\n\
            # HELP lat L.\n# TYPE lat histogram\nlat_bucket{le=\"1\"} 2\nlat_bucket{le=\"+Inf\"} 4\n\
            lat_sum 0.5\nlat_count 4\n";
        let w2 = "# HELP twistrs_connections_open O.\n# TYPE twistrs_connections_open gauge\n\
            twistrs_connections_open{factory=\"Echo\",listener=\"tcp:7\"} 18446744073709551615\n\
            twistrs_connections_open{factory=\"Echo\",listener=\"tcp:8\"} 1\n\
            # HELP lat L.\n# TYPE lat histogram\nlat_bucket{le=\"1\"} 1\nlat_bucket{le=\"+Inf\"} 1\n\
            lat_sum 0.25\nlat_count 1\nprocess_start_time_seconds 1\n";
        let out = merge(master, &[w1.to_string(), w2.to_string()]);
        let want = "# HELP process_start_time_seconds S.\n# TYPE process_start_time_seconds gauge\n\
            process_start_time_seconds 100.5\n# HELP process_cpu_seconds_total C.\n\
            # TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 1.75\n\
            # HELP twistrs_connections_open O.\n# TYPE twistrs_connections_open gauge\n\
            twistrs_connections_open{factory=\"Echo\",listener=\"tcp:7\"} 18446744073709551615\n\
            twistrs_connections_open{factory=\"Echo\",listener=\"tcp:8\"} 1\n\
            # HELP lat L.\n# TYPE lat histogram\nlat_bucket{le=\"1\"} 3\nlat_bucket{le=\"+Inf\"} 5\n\
            lat_sum 0.75\nlat_count 5\n";
        assert_eq!(out, want);
    }

    #[test]
    fn certificate_expiry_is_merged_by_the_earliest_not_summed() {
        let head = "# HELP twistrs_tls_certificate_expiry_timestamp_seconds E.\n\
            # TYPE twistrs_tls_certificate_expiry_timestamp_seconds gauge\n";
        let sample = |t: u64| {
            format!(
                "{head}twistrs_tls_certificate_expiry_timestamp_seconds\
                 {{factory=\"Site\",listener=\"ssl:443\",file=\"/c.pem\"}} {t}\n"
            )
        };
        let out = merge("", &[sample(2_000_000_000), sample(1_900_000_000)]);
        assert_eq!(out, sample(1_900_000_000));
        let out = merge("", &[sample(1_900_000_000), sample(2_000_000_000)]);
        assert_eq!(out, sample(1_900_000_000));
    }

    #[test]
    fn renders_process_metrics_and_escaped_labels() {
        let s = ListenerStats {
            factory: "Site".into(),
            listener: "unix:/tmp/a\"b".into(),
            accepted: 3,
            open: 1,
            ..ListenerStats::default()
        };
        let p = PortStats {
            protocol: "Echo".into(),
            listener: "udp:7".into(),
            datagrams: 2,
            bytes: 9,
        };
        let text = render(&[s], &[p]);
        assert!(text.contains(
            "twistrs_datagrams_received_total{protocol=\"Echo\",listener=\"udp:7\"} 2\n"
        ));
        assert!(text.contains("process_open_fds "), "{text}");
        assert!(text.contains("process_start_time_seconds "), "{text}");
        assert!(text.contains(
            "twistrs_connections_accepted_total{factory=\"Site\",listener=\"unix:/tmp/a\\\"b\"} 3\n"
        ));
        assert!(text.contains(
            "twistrs_connections_open{factory=\"Site\",listener=\"unix:/tmp/a\\\"b\"} 1\n"
        ));
    }
}
