//! A minimal metrics registry for plugins: counters and histograms kept on the reactor's
//! thread (plain `Cell`s, no atomics), rendered in the Prometheus text format by the launcher's
//! `--metrics` responder. A plugin registers its series once (when it builds its service) and
//! keeps the handles; bumping one is an addition.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::rc::Rc;

/// A monotonic count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Rc<Cell<u64>>);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.set(self.0.get().wrapping_add(1));
    }

    /// Adds `n` (bytes, say).
    pub fn add(&self, n: u64) {
        self.0.set(self.0.get().wrapping_add(n));
    }

    /// The count so far.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

/// A value that goes up and down (open relays, running children, entries in a cache).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Rc<Cell<i64>>);

impl Gauge {
    /// One more (a relay opened).
    pub fn inc(&self) {
        self.0.set(self.0.get().wrapping_add(1));
    }

    /// One fewer (it closed).
    pub fn dec(&self) {
        self.0.set(self.0.get().wrapping_sub(1));
    }

    /// Sets the value outright (a cache's size after a sweep).
    pub fn set(&self, v: i64) {
        self.0.set(v);
    }

    /// The value now.
    pub fn get(&self) -> i64 {
        self.0.get()
    }
}

#[derive(Debug)]
struct Buckets {
    bounds: &'static [f64],
    /// Per bound, observations at or below it (not cumulative: summed when rendered).
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

/// A distribution of observations (seconds, by Prometheus's convention) over fixed buckets.
#[derive(Clone, Debug)]
pub struct Histogram(Rc<RefCell<Buckets>>);

impl Histogram {
    /// Records one observation (in seconds, for a duration).
    pub fn observe(&self, v: f64) {
        let mut b = self.0.borrow_mut();
        if let Some(i) = b.bounds.iter().position(|&le| v <= le) {
            b.counts[i] += 1;
        }
        b.count += 1;
        b.sum += v;
    }
}

/// Buckets for latencies from a tenth of a millisecond to ten seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
];

#[derive(Debug)]
enum Value {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
    Live(LiveGauge),
}

/// A gauge read at each scrape from a figure kept elsewhere: one that other threads change
/// (an atomic), which no event on the reactor thread would keep a plain [`Gauge`] up to date
/// with.
#[derive(Clone)]
pub struct LiveGauge(Rc<dyn Fn() -> i64>);

impl std::fmt::Debug for LiveGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LiveGauge({})", (self.0)())
    }
}

#[derive(Debug)]
struct Series {
    name: &'static str,
    help: &'static str,
    /// Rendered `k="v",...` (values escaped), without braces.
    labels: String,
    value: Value,
}

thread_local! {
    static REGISTRY: RefCell<Vec<Series>> = const { RefCell::new(Vec::new()) };
}

/// `k="v"` pairs, values escaped as the exposition format wants (backslash, quote, newline);
/// the launcher's per-listener series use it too.
pub fn render_labels(labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(out, "{k}=\"{v}\"");
    }
    out
}

/// The series `name{labels}` of the kind `get` picks out: the one registered, or the one
/// `make` gives (the handle and its value), registered now.
fn series<T: Clone>(
    name: &'static str,
    help: &'static str,
    labels: &[(&str, &str)],
    get: fn(&Value) -> Option<&T>,
    make: impl FnOnce() -> (T, Value),
) -> T {
    let labels = render_labels(labels);
    REGISTRY.with_borrow_mut(|r| {
        if let Some(v) = r
            .iter()
            .find(|s| s.name == name && s.labels == labels)
            .and_then(|s| get(&s.value))
        {
            return v.clone();
        }
        let (v, value) = make();
        r.push(Series {
            name,
            help,
            labels,
            value,
        });
        v
    })
}

/// The counter `name{labels}`, registered on first use; the same one after.
pub fn counter(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Counter {
    let get: fn(&Value) -> Option<&Counter> = |v| match v {
        Value::Counter(c) => Some(c),
        _ => None,
    };
    series(name, help, labels, get, || {
        let c = Counter::default();
        (c.clone(), Value::Counter(c))
    })
}

/// The gauge `name{labels}`, registered on first use; the same one after.
pub fn gauge(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Gauge {
    let get: fn(&Value) -> Option<&Gauge> = |v| match v {
        Value::Gauge(g) => Some(g),
        _ => None,
    };
    series(name, help, labels, get, || {
        let g = Gauge::default();
        (g.clone(), Value::Gauge(g))
    })
}

/// The gauge `name{labels}` whose value `read` gives at each scrape, registered now (in place
/// of one registered before under the same name and labels).
pub fn live_gauge(
    name: &'static str,
    help: &'static str,
    labels: &[(&str, &str)],
    read: impl Fn() -> i64 + 'static,
) {
    let labels = render_labels(labels);
    let value = Value::Live(LiveGauge(Rc::new(read)));
    REGISTRY.with_borrow_mut(|r| {
        match r.iter_mut().find(|s| s.name == name && s.labels == labels) {
            Some(s) => s.value = value,
            None => r.push(Series {
                name,
                help,
                labels,
                value,
            }),
        }
    });
}

/// The histogram `name{labels}` over `bounds` (ascending), registered on first use.
pub fn histogram(
    name: &'static str,
    help: &'static str,
    labels: &[(&str, &str)],
    bounds: &'static [f64],
) -> Histogram {
    let get: fn(&Value) -> Option<&Histogram> = |v| match v {
        Value::Histogram(h) => Some(h),
        _ => None,
    };
    series(name, help, labels, get, || {
        let h = Histogram(Rc::new(RefCell::new(Buckets {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        })));
        (h.clone(), Value::Histogram(h))
    })
}

/// The series of a plugin whose clients are relayed (portforward, socks), labelled with the
/// plugin: relays joined and open, bytes each way, failed connects by reason.
pub struct RelayMetrics {
    total: Counter,
    open: Gauge,
    to_dest: Counter,
    to_client: Counter,
    /// resolve, timeout, refused, unreachable, other.
    failures: [Counter; 5],
}

impl RelayMetrics {
    /// Registers the relay series, labelled `plugin="NAME"`; call once per service.
    pub fn new(plugin: &str) -> Self {
        let l = [("plugin", plugin)];
        let bytes = |direction: &str| {
            counter(
                "twistrs_relay_bytes_total",
                "Bytes relayed, by direction (to_dest: from the client to the destination), counted when the relay ends.",
                &[("plugin", plugin), ("direction", direction)],
            )
        };
        let failed = |reason: &str| {
            counter(
                "twistrs_relay_connect_failures_total",
                "Connects to a destination that failed, by reason.",
                &[("plugin", plugin), ("reason", reason)],
            )
        };
        RelayMetrics {
            total: counter(
                "twistrs_relays_total",
                "Relays joined (the destination connected).",
                &l,
            ),
            open: gauge("twistrs_relays_open", "Relays open now.", &l),
            to_dest: bytes("to_dest"),
            to_client: bytes("to_client"),
            failures: ["resolve", "timeout", "refused", "unreachable", "other"].map(failed),
        }
    }

    /// A relay was joined (its `on_end` will run: [`RelayMetrics::ended`]). Call it once the
    /// join is made (`Protocol::relay_connected`, `RelayOptions::on_join`), never before a
    /// `Handle::join` that may find a side gone.
    pub fn joined(&self) {
        self.total.inc();
        self.open.inc();
    }

    /// A relay ended; one that was never joined (`joined` false) was never counted open.
    pub fn ended(&self, e: &crate::relay::RelayEnd) {
        if e.joined {
            self.open.dec();
        }
        self.to_dest.add(e.to_dest);
        self.to_client.add(e.to_client);
    }

    /// A connect to a destination failed; counted by reason (resolve, timeout, refused,
    /// unreachable, other).
    pub fn connect_failed(&self, e: &crate::client::ConnectError) {
        use crate::client::ConnectError;
        use std::io::ErrorKind;
        let i = match e {
            ConnectError::NameNotResolved { .. } => 0,
            ConnectError::TimedOut(_) => 1,
            ConnectError::Io(e) => match e.kind() {
                ErrorKind::ConnectionRefused => 2,
                ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => 3,
                _ => 4,
            },
        };
        self.failures[i].inc();
    }
}

/// Appends every registered series, grouped by name (each name's HELP and TYPE once).
pub fn render(out: &mut String) {
    REGISTRY.with_borrow(|r| {
        let mut names: Vec<&'static str> = Vec::new();
        for s in r {
            if !names.contains(&s.name) {
                names.push(s.name);
            }
        }
        for name in names {
            let mut first = true;
            for s in r.iter().filter(|s| s.name == name) {
                let kind = match s.value {
                    Value::Counter(_) => "counter",
                    Value::Gauge(_) | Value::Live(_) => "gauge",
                    Value::Histogram(_) => "histogram",
                };
                if first {
                    let _ = write!(out, "# HELP {name} {}\n# TYPE {name} {kind}\n", s.help);
                    first = false;
                }
                let sep = if s.labels.is_empty() { "" } else { "," };
                let braced = if s.labels.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", s.labels)
                };
                match &s.value {
                    Value::Counter(c) => {
                        let _ = writeln!(out, "{name}{braced} {}", c.get());
                    }
                    Value::Gauge(g) => {
                        let _ = writeln!(out, "{name}{braced} {}", g.get());
                    }
                    Value::Live(g) => {
                        let _ = writeln!(out, "{name}{braced} {}", (g.0)());
                    }
                    Value::Histogram(h) => {
                        let b = h.0.borrow();
                        let mut cum = 0;
                        for (le, n) in b.bounds.iter().zip(&b.counts) {
                            cum += n;
                            let _ =
                                writeln!(out, "{name}_bucket{{{}{sep}le=\"{le}\"}} {cum}", s.labels);
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{{{}{sep}le=\"+Inf\"}} {}\n{name}_sum{braced} {}\n{name}_count{braced} {}",
                            s.labels, b.count, b.sum, b.count
                        );
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_gauge_is_read_at_each_render_and_a_second_registration_replaces_it() {
        let figure = Rc::new(Cell::new(7));
        let f = figure.clone();
        live_gauge("t_live_bytes", "Live.", &[], move || f.get());
        let render_now = || {
            let mut out = String::new();
            render(&mut out);
            out
        };
        assert!(render_now().contains("# TYPE t_live_bytes gauge\nt_live_bytes 7\n"));
        figure.set(9);
        assert!(render_now().contains("t_live_bytes 9\n"));
        live_gauge("t_live_bytes", "Live.", &[], || 1);
        let out = render_now();
        let samples = out
            .lines()
            .filter(|l| l.starts_with("t_live_bytes "))
            .count();
        assert_eq!(samples, 1, "{out}");
        assert!(out.contains("t_live_bytes 1\n"), "{out}");
    }

    #[test]
    fn counters_are_shared_by_name_and_labels_and_histograms_cumulate() {
        let a = counter("t_requests_total", "Requests.", &[("method", "GET")]);
        let b = counter("t_requests_total", "Requests.", &[("method", "GET")]);
        let c = counter("t_requests_total", "Requests.", &[("method", "P\"UT")]);
        a.inc();
        b.add(2);
        c.inc();
        let g = gauge("t_open", "Open now.", &[]);
        g.inc();
        g.inc();
        g.dec();
        let h = histogram("t_seconds", "Durations.", &[], &[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(3.0);
        let mut out = String::new();
        render(&mut out);
        assert_eq!(
            out.matches("# TYPE t_requests_total counter").count(),
            1,
            "{out}"
        );
        assert!(
            out.contains("t_requests_total{method=\"GET\"} 3\n"),
            "{out}"
        );
        assert!(
            out.contains("t_requests_total{method=\"P\\\"UT\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("# TYPE t_open gauge\nt_open 1\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"0.1\"} 1\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("t_seconds_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("t_seconds_count 3\n"), "{out}");
    }
}
