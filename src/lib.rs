//! twistrs, the launcher: command line, plugin registry, logging and the run sequence.
//!
//! It is a library so that a third party can build its own launcher with extra plugins
//! (Twisted's plugin system, at compile time):
//!
//! ```no_run
//! let mut plugins = twistrs::builtin_plugins();
//! // plugins.push(my_crate::plugin());
//! std::process::exit(twistrs::run(std::env::args_os(), plugins));
//! ```
//!
//! The built-in plugins are this crate's features (`wire`, `web`, `mail`, `procmon`, `dns`,
//! `inetd`, `portforward`, `socks`, all on by default): `default-features = false,
//! features = ["wire"]` builds a launcher with only those. A plugin is written on
//! `twistrs-core` alone; its crate documentation starts with a whole one.

pub mod cli;
pub mod control;
pub mod daemon;
pub mod holder;
pub mod jsonlog;
pub mod launcher;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pidfile;
pub mod privileges;
pub mod registry;
pub mod status;
pub mod upgrade;
pub mod workers;

pub use launcher::run;
pub use registry::builtin_plugins;

/// The version printed by `--version` and the start-up line.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
