//! `--metrics ENDPOINT`: the Prometheus text exposition format (0.0.4) on `GET /metrics`,
//! served by a tiny HTTP/1.1 responder on the same reactor. Process figures come from
//! /proc/self at scrape time and the listeners' counters from the reactor's own integers, so
//! serving requests counts nothing more than a few additions.

use std::fmt::Write as _;
use std::time::Duration;

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

/// Builds one [`MetricsProtocol`] per scrape connection.
pub(crate) struct MetricsFactory;

impl Factory for MetricsFactory {
    fn name(&self) -> &'static str {
        "Metrics"
    }

    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(MetricsProtocol {
            head: Vec::new(),
            answered: false,
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
                        t.handle().listener_stats(move |stats, ports| {
                            let body = render(&stats, &ports);
                            handle.write_to(
                                id,
                                response(
                                    "200 OK",
                                    "text/plain; version=0.0.4; charset=utf-8",
                                    &body,
                                ),
                            );
                            handle.lose_connection(id);
                        });
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
