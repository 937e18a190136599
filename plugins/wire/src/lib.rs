//! The small RFC wire services as twistrs plugins: echo, discard, chargen, daytime, time, qotd.
//!
//! Twisted keeps these as protocol classes in `twisted.protocols.wire`, reachable only through
//! `twistd inetd`; here each is a plugin of its own, over TCP and UDP as its RFC describes.
//! They share one crate because each is a few dozen lines (see ARCHITECTURE.md).

mod chargen;
mod clock;
mod echo;
mod qotd;

use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use twistrs_core::service::DatagramBuilder;
use twistrs_core::{Endpoint, Factory, ListeningService, Plugin, PluginError, Service};

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

/// The options every wire plugin has: `--listen` (repeatable) and `--max-connections`.
pub(crate) fn command(name: &'static str, about: &'static str, default: &'static str) -> Command {
    Command::new(name)
        .about(about)
        .arg(
            Arg::new("listen")
                .long("listen")
                .value_name("ENDPOINT")
                .action(ArgAction::Append)
                .default_value(default)
                .value_parser(|s: &str| s.parse::<Endpoint>().map_err(|e| e.to_string()))
                .help(format!(
                    "Endpoint to listen on, repeatable: tcp:PORT, tcp6:PORT, unix:PATH or \
                     udp:PORT, with options such as :interface=127.0.0.1 [default: {default}]"
                ))
                .hide_default_value(true),
        )
        .arg(
            Arg::new("max-connections")
                .long("max-connections")
                .value_name("N")
                .value_parser(value_parser!(usize))
                .help(
                    "Accept at most N TCP connections at once; further clients wait in the backlog",
                ),
        )
}

/// A service listening on every `--listen` endpoint with `factory` (and `udp` for datagrams).
pub(crate) fn service(
    name: &str,
    m: &ArgMatches,
    factory: Box<dyn Factory>,
    udp: Option<DatagramBuilder>,
) -> Result<Box<dyn Service>, PluginError> {
    let endpoints: Vec<Endpoint> = m
        .get_many::<Endpoint>("listen")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    if endpoints.is_empty() {
        return Err(PluginError::new(format!("{name}: no --listen endpoint")));
    }
    Ok(Box::new(ListeningService::new(
        name, endpoints, factory, udp,
    )))
}

/// The `--max-connections` value.
pub(crate) fn max_connections(m: &ArgMatches) -> Option<usize> {
    m.get_one::<usize>("max-connections").copied()
}
