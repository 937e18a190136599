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
//!
//! Only [`run`], [`builtin_plugins`], [`VERSION`] and [`cli`] (the command line, for man
//! pages and completions) are public: the rest is the launcher's own.

#![warn(missing_docs)]

pub mod cli;
pub(crate) mod control;
pub(crate) mod daemon;
pub(crate) mod holder;
pub(crate) mod jsonlog;
pub(crate) mod launcher;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod notify;
pub(crate) mod pidfile;
pub(crate) mod privileges;
pub(crate) mod registry;
pub(crate) mod status;
pub(crate) mod upgrade;
pub(crate) mod workers;

pub use launcher::run;
pub use registry::builtin_plugins;

/// The version printed by `--version` and the start-up line.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
