//! The `portforward` plugin: twistd's port forwarder. Every connection accepted on `-p/--port`
//! is relayed to `-h/--host` and `-d/--dest_port` (or `--dest ENDPOINT`), by the core's relay
//! (`twistrs_core::relay`): backpressure both ways, half-closes carried through, one log line
//! per relay with the bytes carried.
//!
//! A `twistd portforward` command line works here with the same meaning and defaults; beyond
//! it, `-p` may be repeated (twistd keeps only the last), and `--dest`, `--connect-timeout`,
//! `--timeout` and `--max-connections`.

mod forward;

use twistrs_core::clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use twistrs_core::client::{ClientEndpoint, Destination};
use twistrs_core::options::{ListenOpt, MaxConnectionsOpt, SecondsOpt, TimeoutOpt};
use twistrs_core::tls::ClientTlsSpec;
use twistrs_core::{ListeningService, Plugin, PluginError, Service};

pub use forward::{Config, Forward, ForwardFactory};

const ABOUT: &str =
    "A port forwarder: each connection relayed to a destination (twistd's portforward).";

/// The behaviour, for `--help` and the man page.
const NOTES: &str = "\
Each connection accepted is relayed to the destination: the bytes flow both ways as they come, \
and when one side reads slowly the other is no longer read (at most about 128 KiB is held per \
direction). A half-close (FIN) is passed on and the other direction goes on, so a client that \
half-closes after its request still gets the reply (twistd closes both). A clean close of one \
side closes the other once its output has left; a reset from one side is passed on to the \
other as a reset; an error or the idle timeout closes both. The destination's name is resolved for each connection, on a worker thread, and each \
of its addresses is tried in turn. A destination that cannot be reached closes the client \
at once with one log line saying why; every relay logs one line when it ends, with the bytes \
carried each way. On SIGTERM, relays in progress go on until they end or the shutdown \
deadline (--shutdown-timeout) passes. Examples: \
twistrs portforward -p tcp:8080 -h backend.example -d 80; \
twistrs portforward -p tcp:2222:interface=127.0.0.1 --dest unix:/run/app.sock";

/// The plugin.
pub fn plugin() -> Plugin {
    Plugin {
        tapname: "portforward",
        description: ABOUT,
        options,
        make_service,
    }
}

/// `-p/--port`: twistd's listening endpoint, here repeatable (`--listen` is the same option,
/// the name every other plugin has).
const PORT: ListenOpt = ListenOpt {
    id: "port",
    short: Some('p'),
    default: &["tcp:6666"],
    help: "Endpoint to listen on, repeatable (twistd keeps only the last): tcp:PORT, tcp6:PORT, \
           unix:PATH, ssl:PORT:privateKey=KEY.pem, with options such as :interface=127.0.0.1",
};
const MAX_CONNECTIONS: MaxConnectionsOpt = MaxConnectionsOpt { default: None };
const TIMEOUT: TimeoutOpt = TimeoutOpt {
    default: 3600,
    help: "Close a relay after SECONDS with nothing carried either way (twistd: never)",
};
/// twistd's defaults.
const CONNECT_TIMEOUT: SecondsOpt = SecondsOpt {
    name: "connect-timeout",
    default: 30,
    help: "Give up on a destination that does not answer within SECONDS (resolving included)",
};
const DEFAULT_HOST: &str = "localhost";
const DEFAULT_DEST_PORT: u16 = 6665;

fn options() -> Command {
    Command::new("portforward")
        .about(ABOUT)
        .after_long_help(NOTES)
        // -h is the host, as in twistd: help is --help only.
        .disable_help_flag(true)
        .arg(
            Arg::new("help")
                .long("help")
                .action(ArgAction::Help)
                .help("Print help"),
        )
        .arg(PORT.arg().visible_alias("listen"))
        .arg(
            Arg::new("host")
                .short('h')
                .long("host")
                .value_name("HOST")
                .default_value(DEFAULT_HOST)
                .help("The destination host to connect to: a name or an address"),
        )
        .arg(
            Arg::new("dest_port")
                .short('d')
                .long("dest_port")
                .alias("dest-port")
                .value_name("PORT")
                .default_value(DEFAULT_DEST_PORT.to_string())
                .value_parser(value_parser!(u16).range(1..))
                .help("The destination port to connect to"),
        )
        .arg(
            Arg::new("dest")
                .long("dest")
                .value_name("ENDPOINT")
                .value_parser(|s: &str| s.parse::<ClientEndpoint>().map_err(|e| e.to_string()))
                .conflicts_with_all(["host", "dest_port"])
                .help(
                    "The destination as a client endpoint, instead of -h and -d: \
                     tcp:HOST:PORT[:timeout=SECONDS], unix:PATH, or ssl:HOST:PORT (TLS, \
                     the server verified) with options caCertsDir=DIR (trust roots: the \
                     *.pem certificates there; default the system's), hostname=NAME (the name \
                     verified and sent as SNI; default HOST), certKey=FILE[:privateKey=FILE] \
                     (a client certificate) and timeout=SECONDS",
                ),
        )
        .arg(CONNECT_TIMEOUT.arg())
        .arg(TIMEOUT.arg())
        .arg(MAX_CONNECTIONS.arg())
}

/// Where the relays go and how, from the options.
fn config(m: &ArgMatches) -> Config {
    let mut connect_timeout = CONNECT_TIMEOUT.get(m);
    let dest = match m.get_one::<ClientEndpoint>("dest") {
        Some(ep) => {
            if let Some(t) = ep.timeout {
                connect_timeout = t;
            }
            ep.dest.clone()
        }
        None => {
            let host = m
                .get_one::<String>("host")
                .map_or(DEFAULT_HOST, String::as_str);
            let port = m
                .get_one::<u16>("dest_port")
                .copied()
                .unwrap_or(DEFAULT_DEST_PORT);
            Destination::tcp(host, port)
        }
    };
    Config {
        dest,
        connect_timeout,
        idle_timeout: Some(TIMEOUT.get(m)),
        tls: None,
    }
}

/// The TLS an `ssl:` destination asks for, as given (read by `make_service`).
fn dest_tls(m: &ArgMatches) -> Option<&ClientTlsSpec> {
    m.get_one::<ClientEndpoint>("dest")
        .and_then(|ep| ep.tls.as_ref())
}

fn make_service(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    let endpoints = PORT.get(m)?;
    let mut config = config(m);
    if let Some(spec) = dest_tls(m) {
        // Read once, at start: a missing CA directory or key is a start-up error.
        config.tls = Some(
            spec.load()
                .map_err(|e| PluginError::new(format!("--dest: {e}")))?,
        );
    }
    let factory = ForwardFactory::new(config, MAX_CONNECTIONS.get(m));
    Ok(Box::new(ListeningService::new(
        "portforward",
        endpoints,
        Box::new(factory),
        None,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Result<ArgMatches, String> {
        let mut argv = vec!["portforward"];
        argv.extend_from_slice(args);
        options()
            .try_get_matches_from(argv)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn twistd_defaults_and_forms() {
        let m = parse(&[]).unwrap();
        let c = config(&m);
        assert_eq!(c.dest, Destination::tcp("localhost", 6665));
        assert_eq!(c.connect_timeout, Duration::from_secs(30));
        let eps: Vec<String> = PORT
            .get(&m)
            .unwrap()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(eps, ["tcp:6666"]);
        for args in [
            &["-h", "example.com", "-d", "80"][..],
            &["--host=example.com", "--dest_port=80"],
            &["-hexample.com", "-d80"],
            &["--host", "example.com", "--dest-port", "80"],
        ] {
            let c = config(&parse(args).unwrap());
            assert_eq!(c.dest, Destination::tcp("example.com", 80), "{args:?}");
        }
        let m = parse(&["-p", "tcp:1", "--port=tcp:2", "--listen", "tcp:3"]).unwrap();
        assert_eq!(PORT.get(&m).unwrap().len(), 3, "each -p listens");
    }

    #[test]
    fn beyond_twistd() {
        let c = config(&parse(&["--dest", "unix:/run/a.sock", "--connect-timeout", "5"]).unwrap());
        assert_eq!(c.dest, Destination::Unix("/run/a.sock".into()));
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        let c = config(&parse(&["--dest", "tcp:10.0.0.1:22:timeout=2", "--timeout", "9"]).unwrap());
        assert_eq!(c.dest, Destination::tcp("10.0.0.1", 22));
        assert_eq!(
            c.connect_timeout,
            Duration::from_secs(2),
            "the endpoint's own timeout"
        );
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(9)));
        let m = parse(&["--dest", "ssl:h.test:443:hostname=other.test:timeout=3"]).unwrap();
        let c = config(&m);
        assert_eq!(c.dest, Destination::tcp("h.test", 443));
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(
            dest_tls(&m).map(|t| t.hostname.as_str()),
            Some("other.test")
        );
        let m = parse(&["--dest", "ssl:h:443:caCertsDir=/nonexistent-twistrs"]).unwrap();
        let e = make_service(&m).err().map(|e| e.0).unwrap_or_default();
        assert!(e.contains("/nonexistent-twistrs"), "{e}");
    }

    #[test]
    fn refusals() {
        for (args, why) in [
            (&["-d", "http"][..], "invalid value 'http'"),
            (&["-d", "0"], "invalid value '0'"),
            (&["-d", "70000"], "invalid value '70000'"),
            (
                &["--dest", "ssl:h:443:privateKey=k.pem"],
                "privateKey needs certKey",
            ),
            (&["--dest", "tcp:h:1", "-h", "x"], "cannot be used with"),
            (&["-p", "tcp:x"], "invalid endpoint 'tcp:x'"),
            (&["-h"], "a value is required"),
            (&["--connect-timeout", "0"], "invalid value '0'"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(why), "{args:?}: {e}");
        }
        let help = options().render_long_help().to_string();
        assert!(
            help.contains("--help") && !help.contains("-h, --help"),
            "{help}"
        );
        assert!(help.contains("-h, --host <HOST>"), "{help}");
    }
}
