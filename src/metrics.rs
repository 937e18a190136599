//! `--metrics ENDPOINT`: the Prometheus text exposition format (0.0.4) on `GET /metrics`,
//! served by a tiny HTTP/1.1 responder on the same reactor. Process figures come from
//! /proc/self at scrape time and the listeners' counters from the reactor's own integers, so
//! serving requests counts nothing more than a few additions.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use twistrs_core::address::Address;
use twistrs_core::metrics::render_labels;
use twistrs_core::protocol::{Factory, Protocol};
use twistrs_core::reactor::{ListenerStats, PortStats};
use twistrs_core::transport::Transport;

/// A request head larger than this is answered 431 and closed.
const MAX_REQUEST: usize = 8 * 1024;
/// A scraper whose request head has not arrived this long after it connected is dropped: a
/// whole-head deadline, as the web plugin's, so a client trickling a byte at a time cannot hold
/// one of the few slots.
const HEAD_DEADLINE: Duration = Duration::from_secs(10);
/// The most header fields a scrape may carry.
const MAX_HEADERS: usize = 32;

/// How long a master waits for all its workers' expositions at a scrape: a worker stuck or
/// being replaced is left out (and `twistrs_workers_scraped` says so), the scrape still answers.
const WORKERS_DEADLINE: Duration = Duration::from_secs(3);
/// The most a worker's exposition may be.
const MAX_WORKER_EXPOSITION: u64 = 64 << 20;

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
    pub(crate) sockets: Vec<PathBuf>,
    pub(crate) serving: Cell<usize>,
    pub(crate) restarts: Cell<u64>,
}

/// Builds one [`MetricsProtocol`] per scrape connection.
pub(crate) struct MetricsFactory(pub(crate) Source);

impl Factory for MetricsFactory {
    fn name(&self) -> &'static str {
        "Metrics"
    }

    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(MetricsProtocol {
            head: Vec::new(),
            answered: false,
            source: self.0.clone(),
        }))
    }

    fn max_connections(&self) -> Option<usize> {
        Some(64)
    }
}

/// Reads one request head, answers it, and closes (`Connection: close`).
struct MetricsProtocol {
    head: Vec<u8>,
    /// One request per connection: what follows its head is ignored.
    answered: bool,
    source: Source,
}

impl Protocol for MetricsProtocol {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        // Idle covers a scraper that stops reading the answer; the deadline one that never
        // finishes asking.
        t.set_timeout(Some(HEAD_DEADLINE));
        t.call_later(HEAD_DEADLINE, 0);
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
                                    let paths = view.sockets.clone();
                                    // Blocking socket reads, off the master's reactor thread.
                                    handle
                                        .defer_to_thread_abandonable(move || Ok(gather(&paths)))
                                        .consume(move |r| {
                                            let texts = r.unwrap_or_default();
                                            let own =
                                                master_own(&view, &stats, &ports, texts.len());
                                            answer(&merge(&own, &texts));
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
        view.serving.get() as u64,
    );
    one(
        "twistrs_workers_scraped",
        "gauge",
        "Workers whose figures this scrape adds up (the others did not answer in time).",
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

/// Each worker's exposition, asked on its private socket as a scraper would, within one
/// deadline for them all; a worker that fails is logged and left out.
fn gather(paths: &[PathBuf]) -> Vec<String> {
    let end = Instant::now() + WORKERS_DEADLINE;
    paths
        .iter()
        .filter_map(|p| {
            scrape_worker(p, end)
                .map_err(|e| {
                    log::warn!(target: "twistrs.metrics",
                        "A worker's metrics ({}) are left out of this scrape: {e}", p.display());
                })
                .ok()
        })
        .collect()
}

fn scrape_worker(path: &Path, end: Instant) -> std::io::Result<String> {
    let left = end.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    // Connected without blocking: a stuck worker's full backlog would block a plain connect
    // for as long as the worker is stuck, and the pool's threads with it.
    let sock = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None)?;
    sock.set_nonblocking(true)?;
    sock.connect(&socket2::SockAddr::unix(path)?)?;
    sock.set_nonblocking(false)?;
    let mut s = UnixStream::from(std::os::fd::OwnedFd::from(sock));
    s.set_read_timeout(Some(left))?;
    s.set_write_timeout(Some(left))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: master\r\n\r\n")?;
    let mut raw = Vec::new();
    (&mut s).take(MAX_WORKER_EXPOSITION).read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let text = String::from_utf8(raw).map_err(|_| bad("not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no whole answer"))?;
    if !head.starts_with("HTTP/1.1 200 ") {
        return Err(bad(head.lines().next().unwrap_or_default()));
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
    let series: [Series; 5] = [
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
    out
}

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
    for (i, text) in std::iter::once(master)
        .chain(workers.iter().map(String::as_str))
        .enumerate()
    {
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
            if i > 0
                && (MASTER_ONLY.contains(&f.name.as_str()) || key.contains("factory=\"Metrics\""))
            {
                continue;
            }
            match f.samples.iter_mut().find(|(k, _)| k == key) {
                Some((_, v)) => *v = v.add(value),
                None => f.samples.push((key.to_string(), value)),
            }
        }
    }
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
