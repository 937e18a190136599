//! The small RFC wire services as twistrs plugins: echo, discard, chargen, daytime, time, qotd.
//!
//! Twisted keeps these as protocol classes in `twisted.protocols.wire`, reachable only through
//! `twistd inetd`; here each is a plugin of its own, over TCP and UDP as its RFC describes.
//! They share one crate because each is a few dozen lines (see ARCHITECTURE.md).

mod chargen;
mod clock;
mod echo;
pub mod guard;
mod qotd;

use twistrs_core::clap::{ArgMatches, Command};
use twistrs_core::options::{ListenOpt, MaxConnectionsOpt};
use twistrs_core::service::DatagramBuilder;
use twistrs_core::{
    DatagramProtocol, Factory, ListeningService, Plugin, PluginError, Protocol, Service,
};

pub use chargen::{Chargen, ChargenUdp, pattern as chargen_pattern};
pub use clock::{Daytime, Time, asctime, rfc868_seconds};
pub use echo::{Discard, Echo};
pub use qotd::{Qotd, Quotes};

/// Every plugin of this crate.
pub fn plugins() -> Vec<Plugin> {
    vec![
        echo::ECHO,
        echo::DISCARD,
        chargen::PLUGIN,
        clock::DAYTIME,
        clock::TIME,
        qotd::PLUGIN,
    ]
}

/// One of inetd's internal services: its protocols over TCP and UDP.
#[derive(Clone, Copy)]
pub struct Internal {
    /// The log name (`Echo starting on 7`).
    pub name: &'static str,
    pub stream: fn() -> Box<dyn Protocol>,
    pub datagram: fn() -> Box<dyn DatagramProtocol>,
}

/// The services inetd(8) serves itself (`internal` in inetd.conf), by their /etc/services
/// names, as Twisted's `twisted.runner.inetd.internalProtocols`.
pub fn internal(service: &str) -> Option<Internal> {
    Some(match service {
        "echo" => Internal {
            name: "Echo",
            stream: || Box::new(Echo),
            datagram: || Box::new(Echo),
        },
        "discard" => Internal {
            name: "Discard",
            stream: || Box::new(Discard),
            datagram: || Box::new(Discard),
        },
        "chargen" => Internal {
            name: "Chargen",
            stream: || Box::new(Chargen::new()),
            datagram: || Box::new(ChargenUdp::new(chargen::seed())),
        },
        "daytime" => Internal {
            name: "Daytime",
            stream: || {
                Box::new(Daytime {
                    now: clock::unix_now,
                })
            },
            datagram: || {
                Box::new(Daytime {
                    now: clock::unix_now,
                })
            },
        },
        "time" => Internal {
            name: "Time",
            stream: || {
                Box::new(Time {
                    now: clock::unix_now,
                })
            },
            datagram: || {
                Box::new(Time {
                    now: clock::unix_now,
                })
            },
        },
        _ => return None,
    })
}

/// The names [`internal`] knows.
pub const INTERNAL: [&str; 5] = ["echo", "discard", "chargen", "daytime", "time"];

/// Connections at once: no limit unless given.
const MAX_CONNECTIONS: MaxConnectionsOpt = MaxConnectionsOpt { default: None };

/// The options every wire plugin has: `--listen` (repeatable) and `--max-connections`.
pub(crate) fn command(name: &'static str, about: &'static str, listen: &ListenOpt) -> Command {
    Command::new(name)
        .about(about)
        .arg(listen.arg())
        .arg(MAX_CONNECTIONS.arg())
}

/// A service listening on every `--listen` endpoint with `factory` (and `udp` for datagrams).
pub(crate) fn service(
    name: &str,
    m: &ArgMatches,
    listen: &ListenOpt,
    factory: Box<dyn Factory>,
    udp: Option<DatagramBuilder>,
) -> Result<Box<dyn Service>, PluginError> {
    // openbsd-inetd's guard, as inetd's internal services have it: without it one spoofed
    // datagram from one small service's port to another's (echo to chargen) loops forever.
    let label = format!("{}/udp", name.to_ascii_lowercase());
    let udp = udp.map(|mut make| -> DatagramBuilder {
        Box::new(move || Box::new(guard::Guarded::new(make(), &label, LOG_SYSTEM)))
    });
    Ok(Box::new(ListeningService::new(
        name,
        listen.get(m)?,
        factory,
        udp,
    )))
}

/// The log system of the guard's warning.
const LOG_SYSTEM: &str = "twistrs.wire";

/// The `--max-connections` value.
pub(crate) fn max_connections(m: &ArgMatches) -> Option<usize> {
    MAX_CONNECTIONS.get(m)
}
