//! The socks plugin's series for `--metrics`: requests by version and command, failure
//! replies by code, negotiations refused (authentication failures among them), and the
//! relays (`twistrs_relay*{plugin="socks"}`).

use std::rc::Rc;

use twistrs_core::metrics::{self, Counter, RelayMetrics};

use crate::negotiate::{Cmd, Failure, Refusal, Version};

pub struct SocksMetrics {
    pub relays: Rc<RelayMetrics>,
    /// SOCKS4's commands (connect, bind) and SOCKS5's (connect, bind, udp_associate): SOCKS4
    /// has no UDP ASSOCIATE, so no series says it could.
    requests4: [Counter; 2],
    requests5: [Counter; 3],
    /// By [`Failure`], in its declaration order.
    failures: [Counter; 8],
    /// not_socks, no_method, auth_failed, socks4_with_auth, malformed.
    refusals: [Counter; 5],
}

impl SocksMetrics {
    fn new() -> Self {
        let req = |version: &str, cmd: &str| {
            metrics::counter(
                "twistrs_socks_requests_total",
                "Requests negotiated, by SOCKS version and command.",
                &[("version", version), ("command", cmd)],
            )
        };
        SocksMetrics {
            relays: Rc::new(RelayMetrics::new("socks")),
            requests4: ["connect", "bind"].map(|cmd| req("4", cmd)),
            requests5: ["connect", "bind", "udp_associate"].map(|cmd| req("5", cmd)),
            failures: [
                "general",
                "not_allowed",
                "network_unreachable",
                "host_unreachable",
                "connection_refused",
                "ttl_expired",
                "command_not_supported",
                "address_type_not_supported",
            ]
            .map(|reply| {
                metrics::counter(
                    "twistrs_socks_failures_total",
                    "Requests answered with a failure, by SOCKS5 reply (SOCKS4 clients get 91 for each).",
                    &[("reply", reply)],
                )
            }),
            refusals: [
                "not_socks",
                "no_method",
                "auth_failed",
                "socks4_with_auth",
                "malformed",
            ]
            .map(|reason| {
                metrics::counter(
                    "twistrs_socks_negotiations_refused_total",
                    "Connections closed before a request, by reason (auth_failed: a wrong username or password).",
                    &[("reason", reason)],
                )
            }),
        }
    }

    /// A request negotiated. A SOCKS4 UDP ASSOCIATE cannot be one (its command 3 is refused
    /// by the negotiation), and is not counted.
    pub fn request(&self, version: Version, cmd: Cmd) {
        let counter = match (version, cmd) {
            (Version::V4, Cmd::Connect) => &self.requests4[0],
            (Version::V4, Cmd::Bind) => &self.requests4[1],
            (Version::V4, Cmd::UdpAssociate) => return,
            (Version::V5, Cmd::Connect) => &self.requests5[0],
            (Version::V5, Cmd::Bind) => &self.requests5[1],
            (Version::V5, Cmd::UdpAssociate) => &self.requests5[2],
        };
        counter.inc();
    }

    pub fn failure(&self, f: Failure) {
        let i = match f {
            Failure::General => 0,
            Failure::NotAllowed => 1,
            Failure::NetworkUnreachable => 2,
            Failure::HostUnreachable => 3,
            Failure::Refused => 4,
            Failure::TtlExpired => 5,
            Failure::CommandNotSupported => 6,
            Failure::AddressTypeNotSupported => 7,
        };
        self.failures[i].inc();
    }

    /// A negotiation cut off: an unknown command or address type is answered with its reply
    /// code and counted there.
    pub fn refusal(&self, r: &Refusal) {
        let i = match r {
            Refusal::Command(_) => return self.failure(Failure::CommandNotSupported),
            Refusal::AddressType(_) => return self.failure(Failure::AddressTypeNotSupported),
            Refusal::NotSocks(_) => 0,
            Refusal::NoMethod { .. } => 1,
            Refusal::AuthFailed(_) => 2,
            Refusal::Socks4WithAuth => 3,
            Refusal::BadAuthVersion(_)
            | Refusal::BadRequestVersion(_)
            | Refusal::TooLong(_)
            | Refusal::BadName => 4,
        };
        self.refusals[i].inc();
    }
}

thread_local! {
    static METRICS: SocksMetrics = SocksMetrics::new();
}

/// Runs `f` with the socks series (registered on first use).
pub fn with<R>(f: impl FnOnce(&SocksMetrics) -> R) -> R {
    METRICS.with(f)
}
