//! The web plugin's series for `--metrics`: requests by method and status class, response
//! body bytes, and the request duration (taken up to the last byte leaving, as the access log's).

use std::time::Duration;

use twistrs_core::metrics::{self, Counter, Histogram, LATENCY_BUCKETS};

/// Methods counted by name; any other is `other` (a client picks the method: no unbounded
/// label values).
const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "other"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub struct WebMetrics {
    /// Indexed by method, then class.
    requests: Vec<Counter>,
    bytes: Counter,
    duration: Histogram,
}

impl Default for WebMetrics {
    fn default() -> Self {
        let mut requests = Vec::with_capacity(METHODS.len() * CLASSES.len());
        for m in METHODS {
            for c in CLASSES {
                requests.push(metrics::counter(
                    "twistrs_web_requests_total",
                    "HTTP requests answered, by method and status class.",
                    &[("method", m), ("code", c)],
                ));
            }
        }
        WebMetrics {
            requests,
            bytes: metrics::counter(
                "twistrs_web_response_bytes_total",
                "HTTP response body bytes sent.",
                &[],
            ),
            duration: metrics::histogram(
                "twistrs_web_request_duration_seconds",
                "From a request taken up to its response's last byte leaving.",
                &[],
                LATENCY_BUCKETS,
            ),
        }
    }
}

impl WebMetrics {
    /// One answered request, from its request line (`-` when it could not be read).
    pub fn record(&self, line: &str, status: u16, bytes: u64, duration: Duration) {
        let method = line.split(' ').next().unwrap_or("");
        let m = METHODS
            .iter()
            .position(|&x| x == method)
            .unwrap_or(METHODS.len() - 1);
        if let Some(c) = (status / 100).checked_sub(1).map(usize::from)
            && c < CLASSES.len()
            && let Some(counter) = self.requests.get(m * CLASSES.len() + c)
        {
            counter.inc();
        }
        self.bytes.add(bytes);
        self.duration.observe(duration.as_secs_f64());
    }
}
