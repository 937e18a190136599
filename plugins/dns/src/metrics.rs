//! The dns plugin's series for `--metrics`: queries by transport, answers by rcode and by
//! where they came from (zone, cache, forwarded), the cache, forwarding timeouts, zone
//! transfers served and taken in, and reloads.

use twistrs_core::metrics::{self, Counter, Gauge};

use crate::responder::Via;

pub struct DnsMetrics {
    pub queries_udp: Counter,
    pub queries_tcp: Counter,
    /// Answers by rcode 0 to 5 (NOERROR ... REFUSED), then any other.
    rcodes: [Counter; 7],
    pub from_zone: Counter,
    /// This server's own error answers (FORMERR, NOTIMP, REFUSED, ...): not the zones'.
    pub local_errors: Counter,
    pub from_cache: Counter,
    pub forwarded: Counter,
    pub cache_misses: Counter,
    pub cache_entries: Gauge,
    pub forward_timeouts: Counter,
    pub axfr_served: Counter,
    pub transfers_in_ok: Counter,
    pub transfers_in_failed: Counter,
    pub reloads_ok: Counter,
    pub reloads_failed: Counter,
}

const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other",
];

impl DnsMetrics {
    fn new() -> Self {
        let query = by(
            "twistrs_dns_queries_total",
            "DNS messages received, by transport.",
            "transport",
        );
        let answered = by(
            "twistrs_dns_answers_total",
            "Answers sent, by where they came from: zone (zones and hosts), cache, forwarded, error (this server's own error answers).",
            "source",
        );
        let transfer = by(
            "twistrs_dns_zone_transfers_in_total",
            "Refreshes of secondary zones, by outcome (ok: a new copy or up to date).",
            "result",
        );
        let reload = by(
            "twistrs_dns_reloads_total",
            "Zone and hosts files read on reload (SIGHUP), by outcome.",
            "result",
        );
        DnsMetrics {
            queries_udp: query("udp"),
            queries_tcp: query("tcp"),
            rcodes: RCODES.map(by(
                "twistrs_dns_responses_total",
                "Answers sent, by rcode.",
                "rcode",
            )),
            from_zone: answered("zone"),
            local_errors: answered("error"),
            from_cache: answered("cache"),
            forwarded: answered("forwarded"),
            cache_misses: metrics::counter(
                "twistrs_dns_cache_misses_total",
                "Forwarded questions the cache did not have (hits are answers with source=\"cache\").",
                &[],
            ),
            cache_entries: metrics::gauge(
                "twistrs_dns_cache_entries",
                "Answers kept in the cache.",
                &[],
            ),
            forward_timeouts: metrics::counter(
                "twistrs_dns_forward_timeouts_total",
                "Tries of an upstream server that got no answer in time.",
                &[],
            ),
            axfr_served: metrics::counter(
                "twistrs_dns_axfr_served_total",
                "Zone transfers (AXFR) served.",
                &[],
            ),
            transfers_in_ok: transfer("ok"),
            transfers_in_failed: transfer("failed"),
            reloads_ok: reload("ok"),
            reloads_failed: reload("failed"),
        }
    }

    pub fn query(&self, via: Via) {
        match via {
            Via::Udp => self.queries_udp.inc(),
            Via::Tcp => self.queries_tcp.inc(),
        }
    }

    /// Counts an answer made here: from the zones or the hosts file when it says NOERROR or
    /// NXDOMAIN, else one of this server's own errors.
    pub fn local(&self, msg: &[u8]) {
        match full_rcode(msg) {
            0 | 3 => self.from_zone.inc(),
            _ => self.local_errors.inc(),
        }
    }

    /// Counts an answer by its rcode (extended ones, such as BADVERS, are `other`).
    pub fn rcode(&self, msg: &[u8]) {
        self.rcodes[usize::from(full_rcode(msg)).min(6)].inc();
    }
}

/// An answer's rcode: the header's four bits, and the upper eight from an OPT record when
/// the answer ends with one. Only this server's answers are read so, and its OPT is always
/// the last record and has no options (`message::push_opt`): 11 bytes, the root's name,
/// type 41, the payload size, then the extended rcode. Anything else reads as the header's.
fn full_rcode(msg: &[u8]) -> u16 {
    let low = msg.get(3).map_or(6, |b| u16::from(b & 0x0f));
    let additional = msg
        .get(10..12)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let opt = msg.len().checked_sub(11).and_then(|at| msg.get(at..));
    match opt {
        Some([0, 0, 41, _, _, ext, _, _, _, 0, 0]) if additional > 0 && msg.len() >= 12 + 11 => {
            u16::from(*ext) << 4 | low
        }
        _ => low,
    }
}

/// The counters of series `name`, one per value of its one label `key`.
fn by(name: &'static str, help: &'static str, key: &'static str) -> impl Fn(&str) -> Counter {
    move |value| metrics::counter(name, help, &[(key, value)])
}

thread_local! {
    static METRICS: DnsMetrics = DnsMetrics::new();
}

/// Runs `f` with the dns series (registered on first use).
pub fn with(f: impl FnOnce(&DnsMetrics)) {
    METRICS.with(f);
}
