//! The `socks` plugin: a SOCKS 4, 4a and 5 proxy with twistd's `socks` command line.
//!
//! `twistd socks -i IFACE -p PORT -l FILE` works here with the same meaning and defaults;
//! twistd serves SOCKS4 and 4a only, and its `-l` crashes. Beyond twistd: SOCKS5 (RFC 1928)
//! with CONNECT, BIND and UDP ASSOCIATE, username/password logins (RFC 1929) from `--auth`,
//! destination rules (`--allow`, `--deny`), `--listen` endpoints, and limits on the request's
//! size and time, the connect and idle times, and the connections.

pub mod bind;
pub mod config;
pub mod connlog;
#[cfg(test)]
mod fuzz;
pub mod metrics;
pub mod negotiate;
#[cfg(test)]
mod prop;
pub mod rules;
pub mod session;
pub mod udp;
pub mod udp_header;

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::time::Duration;

use twistrs_core::auth::{auth_arg, parse_auth};
use twistrs_core::clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use twistrs_core::endpoint::{Endpoint, SystemdDomain};
use twistrs_core::options::{ListenOpt, MaxConnectionsOpt, SecondsOpt, TimeoutOpt};
use twistrs_core::{
    Address, Factory, Handle, ListeningService, Plugin, PluginError, Protocol, Service,
};

use crate::config::Config;
use crate::connlog::ConnLog;
use crate::rules::{Rule, Rules};
use crate::session::Socks;

const ABOUT: &str = "A SOCKS 4, 4a and 5 proxy (twistd's socks, with SOCKS5, logins and rules).";

/// The behaviour, for `--help` and the man page.
const SOCKS_NOTES: &str = "\
Protocols: SOCKS4 CONNECT and BIND, SOCKS4a (host names), SOCKS5 (RFC 1928) CONNECT, BIND and \
UDP ASSOCIATE with IPv4, IPv6 and host-name addresses. Host names are resolved on a worker \
thread, never on the thread that serves the connections. \
Authentication: without --auth, SOCKS5's method \"no authentication\"; with --auth, only \
username/password (RFC 1929), and SOCKS4 and 4a are refused (reply 91): they carry no password. \
Destination rules: --allow and --deny are checked in the order given, the first that matches \
decides, and a destination no rule matches is allowed. They apply to the address connected to: \
a host name is resolved first, and the addresses the rules allow are tried in turn. For \
BIND they apply to the address the client expects its peer at, and for UDP to each datagram's \
destination. The unspecified address (0.0.0.0, ::), which a connect takes to this host, is \
refused whatever the rules say (0x02, 91), and a datagram to it is dropped. For example, to keep clients off the local networks and mail ports: \
--deny 10.0.0.0/8 --deny 172.16.0.0/12 --deny 192.168.0.0/16 --deny 127.0.0.0/8 --deny ::1 \
--deny 0.0.0.0/0:25 --deny [::/0]:25. Or to allow only web ports: --allow 0.0.0.0/0:80 \
--allow 0.0.0.0/0:443 --deny 0.0.0.0/0 --deny ::/0. \
Every refusal is answered with the protocol's own reply: SOCKS4 91; SOCKS5 0x01 general \
failure, 0x02 not allowed by the rules, 0x03 network unreachable, 0x04 host unreachable (or a \
name that does not resolve), 0x05 connection refused, 0x06 TTL expired (the connect timed \
out), 0x07 command not supported, 0x08 address type not supported. A request must arrive \
whole within --request-timeout, and a SOCKS4 user id or SOCKS4a host name may be at most 255 \
bytes; a malformed, truncated or late request gets the refusal and the connection closes. \
BIND listens on the address the client connected to and waits --connect-timeout for one \
connection, from the address in the request unless that is 0.0.0.0. A UDP association \
relays datagrams from the client's address only (its port too, if the request gave one, \
else the port of its first datagram), and back only from destinations the client has sent \
to; fragments are dropped. Datagrams leave by a port of their own on the unspecified \
address, one per address family, so a loopback listener's client reaches other hosts. It \
ends when its TCP connection closes. \
Listening beyond the loopback interface without --auth logs a warning: anyone who can \
reach the port can use the proxy. The connection log (-l, or the main log without it) has \
one line per connection when it ends: client, version, command, destination, the address \
used, user, result, bytes each way (up: to the destination) and duration; it is reopened on \
SIGHUP and SIGUSR1.";

/// The plugin.
pub fn plugin() -> Plugin {
    Plugin {
        tapname: "socks",
        description: ABOUT,
        options,
        make_service,
    }
}

const LISTEN: ListenOpt = ListenOpt {
    help: "Endpoint to listen on, repeatable, as tcp:PORT:interface=127.0.0.1 or unix:PATH; \
           with it, -i and -p add their endpoint only when given",
    ..ListenOpt::listen(&[])
};
const MAX_CONNECTIONS: MaxConnectionsOpt = MaxConnectionsOpt { default: None };
const TIMEOUT: TimeoutOpt = TimeoutOpt {
    default: 3600,
    help: "Idle time after which a relay (or a UDP association's connection) is closed",
};
const DEFAULT_INTERFACE: &str = "127.0.0.1";
const DEFAULT_PORT: u16 = 1080;

const CONNECT_TIMEOUT: SecondsOpt = SecondsOpt {
    name: "connect-timeout",
    default: 30,
    help: "Time to resolve and connect to a destination (SOCKS5 reply 0x06 after it), and for \
           a BIND's peer to connect",
};
const REQUEST_TIMEOUT: SecondsOpt = SecondsOpt {
    name: "request-timeout",
    default: 30,
    help: "Time for a client to send its greeting, login and request",
};

fn options() -> Command {
    Command::new("socks")
        .about(ABOUT)
        .after_long_help(SOCKS_NOTES)
        .arg(
            Arg::new("interface")
                .short('i')
                .long("interface")
                .value_name("IP")
                .default_value(DEFAULT_INTERFACE)
                .help("The interface to listen on (twistd's -i)"),
        )
        .arg(
            Arg::new("port")
                .short('p')
                .long("port")
                .value_name("PORT")
                .default_value(DEFAULT_PORT.to_string())
                .value_parser(value_parser!(u16))
                .help("The port to listen on (twistd's -p)"),
        )
        .arg(
            Arg::new("log")
                .short('l')
                .long("log")
                .value_name("FILE")
                .value_parser(twistrs_core::options::optional_path())
                .help("The connection log: a line per connection [default: the main log]"),
        )
        .arg(LISTEN.arg())
        .arg(auth_arg(
            "Require a SOCKS5 username/password login: memory:USER:PASS[:USER:PASS...] or \
             file:PATH (user:pass lines), repeatable; SOCKS4 is then refused",
        ))
        .arg(
            Arg::new("allow")
                .long("allow")
                .value_name("NETWORK[:PORT]")
                .action(ArgAction::Append)
                .help(
                    "Allow destinations in NETWORK (and PORT or PORT-PORT), as 192.168.1.0/24:443 \
                     or [2001:db8::/32]:443; rules are checked in order, the first match wins",
                ),
        )
        .arg(
            Arg::new("deny")
                .long("deny")
                .value_name("NETWORK[:PORT]")
                .action(ArgAction::Append)
                .help(
                    "Refuse destinations in NETWORK (and PORT), as 10.0.0.0/8 or 127.0.0.1/32:25",
                ),
        )
        .arg(TIMEOUT.arg())
        .arg(CONNECT_TIMEOUT.arg())
        .arg(REQUEST_TIMEOUT.arg())
        .arg(MAX_CONNECTIONS.arg())
}

/// `--allow` and `--deny` in the order they were given.
fn rules(m: &ArgMatches) -> Result<Rules, PluginError> {
    let mut all: Vec<(usize, bool, &String)> = Vec::new();
    for (id, allow) in [("allow", true), ("deny", false)] {
        if let (Some(at), Some(v)) = (m.indices_of(id), m.get_many::<String>(id)) {
            all.extend(at.zip(v).map(|(i, s)| (i, allow, s)));
        }
    }
    all.sort_by_key(|(i, _, _)| *i);
    all.into_iter()
        .map(|(_, allow, s)| {
            Rule::parse(allow, s).map_err(|e| {
                PluginError::new(format!(
                    "socks: --{} {e}",
                    if allow { "allow" } else { "deny" }
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Rules)
}

/// The endpoints: every `--listen`, and twistd's `-i`/`-p` endpoint unless `--listen` was
/// given without them.
fn endpoints(m: &ArgMatches) -> Result<Vec<Endpoint>, PluginError> {
    use twistrs_core::clap::parser::ValueSource;
    let mut eps = LISTEN.given(m);
    let given = |id: &str| m.value_source(id) == Some(ValueSource::CommandLine);
    if eps.is_empty() || given("interface") || given("port") {
        let iface = m
            .get_one::<String>("interface")
            .map_or(DEFAULT_INTERFACE, String::as_str);
        let port = m.get_one::<u16>("port").copied().unwrap_or(DEFAULT_PORT);
        let s = match iface {
            "" => format!("tcp:{port}"),
            i => match interface(i) {
                Some(IpAddr::V6(a)) => format!(
                    "tcp6:{port}:interface={}",
                    twistrs_core::endpoint::quote_argument(&a.to_string())
                ),
                Some(IpAddr::V4(a)) => format!("tcp:{port}:interface={a}"),
                None => {
                    return Err(PluginError::new(format!(
                        "socks: -i {i}: neither an IP address nor a host name with an IPv4 address"
                    )));
                }
            },
        };
        eps.push(
            s.parse()
                .map_err(|e| PluginError::new(format!("socks: {e}")))?,
        );
    }
    if let Some(ep) = eps.iter().find(|e| e.is_datagram() || e.tls().is_some()) {
        return Err(PluginError::new(format!(
            "socks: '{ep}': SOCKS needs a plain stream endpoint (tcp:, tcp6:, unix:, systemd:)"
        )));
    }
    Ok(eps)
}

/// `-i` as twistd takes it: an address, or a host name bound as its first IPv4 address
/// (twistd hands the name to an IPv4 socket's bind, which resolves it so).
fn interface(s: &str) -> Option<IpAddr> {
    match s.parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        // The endpoints' own look-up: in the IPv4 family, as Python's bind asks.
        Err(_) => twistrs_core::addrinfo::lookup(s, false).ok().flatten(),
    }
}

/// True if `ep` may be reachable from other hosts.
fn beyond_loopback(ep: &Endpoint) -> bool {
    match ep {
        Endpoint::Tcp { interface, .. } => !interface
            .as_ref()
            .and_then(|i| i.ip())
            .is_some_and(|i| i.is_loopback()),
        Endpoint::Systemd { domain, .. } => *domain != SystemdDomain::Unix,
        Endpoint::Unix { .. } | Endpoint::Udp { .. } => false,
    }
}

/// `--auth` as the mail plugin reads it, but `anonymous`: for mail it adds no login, which
/// here would leave a proxy that asks for a login nobody has. Without `--auth` no login is
/// asked, which is what `anonymous` would mean.
fn socks_auth(m: &ArgMatches) -> Result<Option<twistrs_core::auth::Credentials>, PluginError> {
    if m.get_many::<String>("auth")
        .is_some_and(|mut v| v.any(|a| a == "anonymous"))
    {
        return Err(PluginError::new(
            "socks: --auth anonymous: leave --auth out to accept clients without a login",
        ));
    }
    parse_auth("socks", m)
}

/// Builds the configuration from the command line (files are read now: errors name them).
pub fn build_config(m: &ArgMatches) -> Result<Config, PluginError> {
    let log = match twistrs_core::options::path_given(m, "log") {
        // Absolute, so a reopen after the daemon's chdir finds the same file.
        Some(p) => ConnLog::file(std::path::absolute(p).unwrap_or_else(|_| p.clone()))
            .map_err(|e| PluginError::new(format!("socks: -l {}: {e}", p.display())))?,
        None => ConnLog::main(),
    };
    Ok(Config {
        creds: socks_auth(m)?.map(Rc::new),
        rules: rules(m)?,
        request_timeout: REQUEST_TIMEOUT.get(m),
        connect_timeout: CONNECT_TIMEOUT.get(m),
        idle_timeout: TIMEOUT.get(m),
        log: Rc::new(RefCell::new(log)),
    })
}

/// Builds a `Socks` per connection; opens and flushes the log.
struct SocksFactory {
    cfg: Rc<Config>,
    max: Option<usize>,
}

impl Factory for SocksFactory {
    fn name(&self) -> &'static str {
        "SOCKS"
    }

    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Socks::new(self.cfg.clone())))
    }

    fn start_factory(&mut self, handle: &Handle) {
        let log = self.cfg.log.clone();
        handle.on_reopen(Box::new(move || log.borrow_mut().reopen()));
        schedule_flush(handle.clone(), self.cfg.log.clone());
    }

    fn stop_factory(&mut self) {
        self.cfg.log.borrow_mut().flush();
    }

    fn max_connections(&self) -> Option<usize> {
        self.max
    }
}

/// Flushes the connection log every second.
fn schedule_flush(h: Handle, log: Rc<RefCell<ConnLog>>) {
    let h2 = h.clone();
    h.call_later(Duration::from_secs(1), move || {
        log.borrow_mut().flush();
        schedule_flush(h2, log);
    });
}

fn make_service(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    let cfg = build_config(m)?;
    let eps = endpoints(m)?;
    if cfg.creds.is_none() {
        for ep in eps.iter().filter(|e| beyond_loopback(e)) {
            log::warn!(target: twistrs_core::logsys::BARE,
                "WARNING: socks listens on {ep}, beyond the loopback interface, without --auth: \
                 anyone who can reach it can use this proxy, and through it your network");
        }
    }
    // Registered now, so a scrape shows them at zero.
    metrics::with(|_| {});
    let factory = SocksFactory {
        cfg: Rc::new(cfg),
        max: MAX_CONNECTIONS.get(m),
    };
    Ok(Box::new(ListeningService::new(
        "socks",
        eps,
        Box::new(factory),
        None,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(args: &[&str]) -> ArgMatches {
        options().get_matches_from(std::iter::once("socks").chain(args.iter().copied()))
    }

    fn eps(args: &[&str]) -> Result<Vec<String>, String> {
        endpoints(&matches(args))
            .map(|v| v.iter().map(|e| e.to_string()).collect())
            .map_err(|e| e.0)
    }

    #[test]
    fn auth_anonymous_is_refused_with_what_to_do() {
        let e = build_config(&matches(&["--auth", "anonymous"]))
            .err()
            .expect("refused");
        assert!(e.0.contains("leave --auth out"), "{}", e.0);
        assert!(build_config(&matches(&["--auth", "memory:a:b"])).is_ok());
    }

    #[test]
    fn twistds_interface_and_port_or_listen() {
        assert_eq!(eps(&[]), Ok(vec!["tcp:1080:interface=127.0.0.1".into()]));
        assert_eq!(
            eps(&["-i", "0.0.0.0", "-p", "1081"]),
            Ok(vec!["tcp:1081:interface=0.0.0.0".into()])
        );
        assert_eq!(eps(&["-i", ""]), Ok(vec!["tcp:1080".into()]));
        assert_eq!(
            eps(&["-i", "::1"]),
            Ok(vec!["tcp6:1080:interface=\\:\\:1".into()])
        );
        let unix = eps(&["--listen", "unix:/s"]).unwrap();
        assert!(
            unix.len() == 1 && unix[0].starts_with("unix:/s:"),
            "{unix:?}"
        );
        let both = eps(&["--listen", "unix:/s", "-p", "9"]).unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(both[1], "tcp:9:interface=127.0.0.1");
        assert_eq!(
            eps(&["-i", "localhost", "-p", "9"]),
            Ok(vec!["tcp:9:interface=127.0.0.1".into()])
        );
        assert!(
            eps(&["-i", "no-such-host.invalid"])
                .unwrap_err()
                .contains("neither an IP address nor a host name")
        );
        assert!(
            eps(&["--listen", "udp:1080"])
                .unwrap_err()
                .contains("plain stream")
        );
    }

    #[test]
    fn loopback_or_not() {
        let ep = |s: &str| s.parse::<Endpoint>().unwrap();
        assert!(!beyond_loopback(&ep("tcp:1080:interface=127.0.0.1")));
        assert!(!beyond_loopback(&ep("tcp6:1080:interface=\\:\\:1")));
        assert!(!beyond_loopback(&ep("unix:/s")));
        assert!(beyond_loopback(&ep("tcp:1080")));
        assert!(beyond_loopback(&ep("tcp:1080:interface=192.0.2.1")));
    }

    #[test]
    fn rules_keep_command_line_order() {
        let r = rules(&matches(&[
            "--deny",
            "10.0.0.0/8",
            "--allow",
            "10.1.0.0/16",
            "--deny",
            "0.0.0.0/0:25",
        ]))
        .unwrap();
        let shown: Vec<String> = r.0.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            shown,
            [
                "--deny 10.0.0.0/8",
                "--allow 10.1.0.0/16",
                "--deny 0.0.0.0/0:25"
            ]
        );
        let e = rules(&matches(&["--allow", "10.0.0.1/8"])).unwrap_err().0;
        assert!(
            e.starts_with("socks: --allow '10.0.0.1/8': host bits"),
            "{e}"
        );
    }
}
