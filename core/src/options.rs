//! The options plugins share, each defined once with its parser and its default:
//! `--listen`, `--max-connections`, `--max-connections-per-client`, `--timeout`, and the
//! refusal of options that only make sense for Python.
//!
//! A plugin declares each option as a `const` value (its default and help in one place) and
//! uses the same value to build the clap argument and to read it back, so no default is
//! written twice:
//!
//! ```
//! use twistrs_core::options::{ListenOpt, TimeoutOpt};
//! const LISTEN: ListenOpt = ListenOpt::listen(&["tcp:7"]);
//! const TIMEOUT: TimeoutOpt = TimeoutOpt { default: 60, help: "Idle time before closing" };
//!
//! let cmd = clap::Command::new("echo").arg(LISTEN.arg()).arg(TIMEOUT.arg());
//! let m = cmd.get_matches_from(["echo", "--timeout", "5"]);
//! assert_eq!(LISTEN.get(&m).unwrap()[0].to_string(), "tcp:7");
//! assert_eq!(TIMEOUT.get(&m), std::time::Duration::from_secs(5));
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, value_parser};

use crate::endpoint::Endpoint;
use crate::plugin::PluginError;

/// clap's value parser for endpoint strings: the error is the endpoint's one-line message.
pub fn endpoint(s: &str) -> Result<Endpoint, String> {
    s.parse::<Endpoint>().map_err(|e| e.to_string())
}

/// clap's value parser for a file option whose empty value (`--logfile=`, a wrapper's empty
/// `$ACCESS_LOG`) twistd takes as not given (`if self["logfile"]:`): clap's own `PathBuf`
/// parser refuses it as a usage error. Read it back with [`path_given`].
pub fn optional_path() -> impl clap::builder::TypedValueParser<Value = PathBuf> {
    clap::builder::TypedValueParser::map(clap::builder::OsStringValueParser::new(), PathBuf::from)
}

/// The value of an [`optional_path`] option, unless it was not given or given empty.
pub fn path_given<'a>(m: &'a ArgMatches, id: &str) -> Option<&'a PathBuf> {
    m.get_one::<PathBuf>(id)
        .filter(|p| !p.as_os_str().is_empty())
}

/// A repeatable endpoint option (`--listen`, or mail's `-s/--smtp`) and its default.
#[derive(Clone, Copy, Debug)]
pub struct ListenOpt {
    /// The long name, also the argument's id (`listen`, `smtp`).
    pub id: &'static str,
    /// A short form (mail's `-s`), if any.
    pub short: Option<char>,
    /// Used when the option is not given.
    pub default: &'static [&'static str],
    /// The help line; the default is appended to it.
    pub help: &'static str,
}

impl ListenOpt {
    /// `--listen`, the option every plugin has.
    pub const fn listen(default: &'static [&'static str]) -> ListenOpt {
        ListenOpt {
            id: "listen",
            short: None,
            default,
            help: "Endpoint to listen on, repeatable: tcp:PORT, tcp6:PORT, unix:PATH or udp:PORT, \
                   with options such as :interface=127.0.0.1",
        }
    }

    /// `--listen` for a plugin with no datagram protocol: its help offers no `udp:`, which
    /// such a plugin refuses at start.
    pub const fn listen_stream(default: &'static [&'static str]) -> ListenOpt {
        ListenOpt {
            help: "Endpoint to listen on, repeatable: tcp:PORT, tcp6:PORT, unix:PATH or \
                   ssl:PORT:privateKey=KEY.pem, with options such as :interface=127.0.0.1",
            ..ListenOpt::listen(default)
        }
    }

    /// The clap argument: repeatable, each value parsed as an endpoint.
    pub fn arg(&self) -> Arg {
        let help = if self.default.is_empty() {
            self.help.to_string()
        } else {
            format!("{} [default: {}]", self.help, self.default.join(", "))
        };
        let mut a = Arg::new(self.id)
            .long(self.id)
            .value_name("ENDPOINT")
            .action(ArgAction::Append)
            .value_parser(endpoint)
            .help(help);
        if let Some(s) = self.short {
            a = a.short(s);
        }
        a
    }

    /// The endpoints given on the command line (none if the option was not used).
    pub fn given(&self, m: &ArgMatches) -> Vec<Endpoint> {
        m.get_many::<Endpoint>(self.id)
            .map(|v| v.cloned().collect())
            .unwrap_or_default()
    }

    /// The endpoints given, or the default ones.
    pub fn get(&self, m: &ArgMatches) -> Result<Vec<Endpoint>, PluginError> {
        let given = self.given(m);
        if !given.is_empty() {
            return Ok(given);
        }
        self.default
            .iter()
            .map(|s| s.parse().map_err(|e| PluginError::new(format!("{e}"))))
            .collect()
    }
}

/// `--max-connections N`: connections at once per listening service; accepting pauses at the
/// limit (clients wait in the listen queue). 0 or no default: no limit.
#[derive(Clone, Copy, Debug)]
pub struct MaxConnectionsOpt {
    /// The limit when the option is not given; `None` for none.
    pub default: Option<usize>,
}

impl MaxConnectionsOpt {
    /// The clap argument.
    pub fn arg(&self) -> Arg {
        let a = Arg::new("max-connections")
            .long("max-connections")
            .value_name("N")
            .value_parser(value_parser!(usize))
            .help(
                "Connections at once; accepting pauses at N and clients wait in the listen \
                 queue; 0: no limit",
            );
        match self.default {
            Some(n) => a.default_value(n.to_string()),
            None => a,
        }
    }

    /// The limit, for `ProtocolFactory::max_connections`; `None` (also for 0) is no limit.
    pub fn get(&self, m: &ArgMatches) -> Option<usize> {
        m.get_one::<usize>("max-connections")
            .copied()
            .or(self.default)
            .filter(|n| *n > 0)
    }
}

/// `--max-connections-per-client N`: connections at once from one client address.
#[derive(Clone, Copy, Debug)]
pub struct PerClientOpt {
    /// The limit when the option is not given; 0 is none.
    pub default: usize,
    /// The help line.
    pub help: &'static str,
}

impl PerClientOpt {
    /// The clap argument.
    pub fn arg(&self) -> Arg {
        Arg::new("max-connections-per-client")
            .long("max-connections-per-client")
            .value_name("N")
            .default_value(self.default.to_string())
            .value_parser(value_parser!(usize))
            .help(self.help)
    }

    /// The limit; 0 means none.
    pub fn get(&self, m: &ArgMatches) -> usize {
        m.get_one::<usize>("max-connections-per-client")
            .copied()
            .unwrap_or(self.default)
    }
}

/// `--timeout SECONDS` (at least 1).
#[derive(Clone, Copy, Debug)]
pub struct TimeoutOpt {
    /// Seconds when the option is not given.
    pub default: u64,
    /// The help line.
    pub help: &'static str,
}

impl TimeoutOpt {
    /// The clap argument.
    pub fn arg(&self) -> Arg {
        self.seconds().arg()
    }

    /// The timeout given, or the default.
    pub fn get(&self, m: &ArgMatches) -> Duration {
        self.seconds().get(m)
    }

    fn seconds(&self) -> SecondsOpt {
        SecondsOpt {
            name: "timeout",
            default: self.default,
            help: self.help,
        }
    }
}

/// Any other time limit in whole seconds, at least 1 (`--connect-timeout`,
/// `--request-timeout`): the default is written once, here.
#[derive(Clone, Copy, Debug)]
pub struct SecondsOpt {
    /// The long name, also the argument's id.
    pub name: &'static str,
    /// Seconds when the option is not given.
    pub default: u64,
    /// The help line.
    pub help: &'static str,
}

impl SecondsOpt {
    /// The clap argument (a whole number of seconds, at least 1).
    pub fn arg(&self) -> Arg {
        Arg::new(self.name)
            .long(self.name)
            .value_name("SECONDS")
            .default_value(self.default.to_string())
            .value_parser(value_parser!(u64).range(1..))
            .help(self.help)
    }

    /// The duration given, or the default.
    pub fn get(&self, m: &ArgMatches) -> Duration {
        Duration::from_secs(m.get_one::<u64>(self.name).copied().unwrap_or(self.default))
    }
}

/// An option twistd has that loads or runs Python code: accepted by the parser (hidden), so
/// it is refused by name with a clear message instead of "unknown option".
#[derive(Clone, Copy, Debug)]
pub struct Refused {
    /// twistd's long name.
    pub long: &'static str,
    /// twistd's short form, if any.
    pub short: Option<char>,
    /// True if twistd's option takes a value (parsed with it, not taken for the next argument).
    pub takes_value: bool,
    /// Why twistrs cannot do it: "loads a Python .tac file".
    pub why: &'static str,
}

impl Refused {
    /// One refused option (a `const` list reads best built with this).
    pub const fn new(
        long: &'static str,
        short: Option<char>,
        takes_value: bool,
        why: &'static str,
    ) -> Refused {
        Refused {
            long,
            short,
            takes_value,
            why,
        }
    }

    /// The hidden clap arguments for `list`.
    pub fn args(list: &[Refused]) -> Vec<Arg> {
        list.iter()
            .map(|r| {
                let mut a = Arg::new(r.long).long(r.long).hide(true);
                if let Some(s) = r.short {
                    a = a.short(s);
                }
                if r.takes_value {
                    a.action(ArgAction::Set).value_name("VALUE")
                } else {
                    a.action(ArgAction::SetTrue)
                }
            })
            .collect()
    }

    /// The first option of `list` given on the command line.
    pub fn find<'a>(list: &'a [Refused], m: &ArgMatches) -> Option<&'a Refused> {
        list.iter()
            .find(|r| m.value_source(r.long) == Some(clap::parser::ValueSource::CommandLine))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTEN: ListenOpt = ListenOpt::listen(&["tcp:7", "udp:7"]);
    const MAX: MaxConnectionsOpt = MaxConnectionsOpt { default: Some(10) };
    const TIMEOUT: TimeoutOpt = TimeoutOpt {
        default: 60,
        help: "idle",
    };
    const REFUSED: &[Refused] = &[Refused {
        long: "wsgi",
        short: None,
        takes_value: true,
        why: "runs Python",
    }];

    fn cmd() -> clap::Command {
        clap::Command::new("t")
            .arg(LISTEN.arg())
            .arg(MAX.arg())
            .arg(TIMEOUT.arg())
            .args(Refused::args(REFUSED))
    }

    #[test]
    fn defaults_come_from_the_declaration() {
        let m = cmd().get_matches_from(["t"]);
        let eps: Vec<String> = LISTEN
            .get(&m)
            .unwrap()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(eps, ["tcp:7", "udp:7"]);
        assert!(LISTEN.given(&m).is_empty());
        assert_eq!(MAX.get(&m), Some(10));
        assert_eq!(TIMEOUT.get(&m), Duration::from_secs(60));
        assert!(Refused::find(REFUSED, &m).is_none());
        let listen_help = LISTEN
            .arg()
            .get_help()
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(
            listen_help.ends_with("[default: tcp:7, udp:7]"),
            "{listen_help}"
        );
        assert_eq!(TIMEOUT.arg().get_default_values(), ["60"]);
        let help = cmd().render_help().to_string();
        assert!(!help.contains("wsgi"), "refused options are hidden");
    }

    #[test]
    fn given_values_and_refusals() {
        let m = cmd()
            .try_get_matches_from([
                "t",
                "--listen",
                "tcp:80",
                "--max-connections",
                "0",
                "--timeout",
                "5",
                "--wsgi",
                "app",
            ])
            .unwrap();
        assert_eq!(LISTEN.get(&m).unwrap().len(), 1);
        assert_eq!(MAX.get(&m), None, "0 is no limit");
        assert_eq!(TIMEOUT.get(&m), Duration::from_secs(5));
        assert_eq!(Refused::find(REFUSED, &m).map(|r| r.long), Some("wsgi"));
        let bad = cmd().try_get_matches_from(["t", "--listen", "tcp:x"]);
        assert!(
            bad.unwrap_err()
                .to_string()
                .contains("invalid endpoint 'tcp:x'")
        );
    }
}
