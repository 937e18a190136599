//! The small RFC wire services as twistrs plugins: echo, discard, chargen, daytime, time, qotd.
//!
//! Twisted keeps these as protocol classes in `twisted.protocols.wire`, reachable only through
//! `twistd inetd`; here each is a plugin of its own, over TCP and UDP as its RFC describes.
//! They share one crate because each is a few dozen lines (see ARCHITECTURE.md).

mod chargen;
mod clock;
mod echo;
mod qotd;

use twistrs_core::clap::{ArgMatches, Command};
use twistrs_core::options::{ListenOpt, MaxConnectionsOpt};
use twistrs_core::service::DatagramBuilder;
use twistrs_core::{Factory, ListeningService, Plugin, PluginError, Service};

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
    Ok(Box::new(ListeningService::new(
        name,
        listen.get(m)?,
        factory,
        udp,
    )))
}

/// The `--max-connections` value.
pub(crate) fn max_connections(m: &ArgMatches) -> Option<usize> {
    MAX_CONNECTIONS.get(m)
}
