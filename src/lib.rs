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

/// `eprintln!` in one write(2). Rust's stderr is unbuffered and `eprintln!` writes a line in
/// pieces (`twistrs: `, the message, the newline), so the lines of workers sharing a stream
/// (a journal's, a terminal) were cut into one another.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stderr_line(&format!($($arg)*))
    };
}

/// Writes `text` and a newline to stderr at once (see `say!`).
pub(crate) fn stderr_line(text: &str) {
    let mut line = String::with_capacity(text.len() + 1);
    line.push_str(text);
    line.push('\n');
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
}

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
