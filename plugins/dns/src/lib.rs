//! The `dns` plugin: twistd's `dns` (Twisted Names) on the twistrs reactor.
//!
//! Authoritative answers from BIND zone files and a hosts file, a forwarder with a cache for
//! other names (`-r`, `-c`), and secondary zones copied by AXFR. The message handling is
//! sans-IO (bytes in, bytes out: `responder`, `forward`, `secondary`) and unit-tested
//! without sockets; `server` runs it on the reactor.

#[cfg(test)]
mod answer_tests;
pub mod axfr;
pub mod bindsyntax;
pub mod cache;
pub mod forward;
#[cfg(test)]
mod fuzz;
pub mod generate;
pub mod hosts;
pub mod lookup;
#[cfg(test)]
mod memory_tests;
pub mod message;
pub mod metrics;
pub mod name;
pub mod responder;
pub mod secondary;
pub mod server;
pub mod stream;
#[cfg(test)]
mod tests;
pub mod zone;
pub mod zonefile;

use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use twistrs_core::clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use twistrs_core::endpoint::DEFAULT_BACKLOG;
use twistrs_core::options::{ListenOpt, MaxConnectionsOpt, SecondsOpt, TimeoutOpt};
use twistrs_core::{Endpoint, Failure, ListenerId, Plugin, PluginError, Service, ServiceHost};

use crate::responder::AxfrAllow;
use crate::secondary::SecondarySpec;
use crate::server::{Config, DnsDatagram, DnsFactory, Server, Shared};

const ABOUT: &str = "A domain name server (twistd's dns): zone files, a hosts file, a caching \
                     forwarder, secondary zones.";

/// The behaviour, for `--help` and the man page.
const NOTES: &str = "\
Listens on UDP and TCP on the same port (-p, 53 by default; -p 0 picks one free for both) on \
-i's address (all IPv4 addresses by default), as twistd does; --listen udp:.../tcp:... adds \
endpoints of any kind and, unless -p or -i is given too, replaces that pair. \
Answers, in this order: the zones of --bindzone files and --secondary zones (authoritative: \
AA, NXDOMAIN and NODATA with the SOA, wildcards, delegations with glue, CNAMEs followed inside \
the zone, addresses of MX, NS and SRV targets); the --hosts-file (A, AAAA and PTR); with -r, \
the cache (-c) and then the name servers of --resolv-conf (/etc/resolv.conf), over UDP, \
asked in turn (its timeout:N and attempts:N, all the tries within 4 s, then SERVFAIL; the \
same question asked again meanwhile joins the one on its way, and within 1 s after the 4 s \
gets SERVFAIL at once), over TCP when the answer is \
truncated; with -r, a CNAME chain that leaves a zone is followed into the other zones, the \
hosts file and the forwarder, and a name below a delegation of ours asked with RD is \
forwarded. Without -r, other names are \
REFUSED. UDP answers over 512 bytes, or over the client's EDNS0 size (at most 1232), are \
truncated (TC) and complete over TCP. Zone transfers (AXFR, TCP) are served to loopback \
clients and to --allow-transfer networks. A --secondary zone answers SERVFAIL until its first \
transfer, and is refreshed by its SOA's refresh and retry; a transfer that goes on past \
--transfer-timeout, or that hears nothing for 30 s, fails and is tried again by the retry \
timer; so does one holding a record of another class than IN, of a meta type (OPT, TSIG), \
an SOA anywhere but at the apex, or a closing SOA of another serial than the opening one, \
the old copy kept. Records outside the zone are left out of the copy, and one log line per transfer counts them. SIGHUP (and SIGUSR1) re-read the \
zone files, the hosts file and resolv.conf; a file that fails to load keeps its old data, \
and the log says why; a stop does not wait for a reload still parsing. Zone files may use \
$ORIGIN, $TTL, $INCLUDE and BIND's $GENERATE. \
A zone file error at start names the file and line, exit 1.";

/// The plugin.
pub fn plugin() -> Plugin {
    Plugin {
        tapname: "dns",
        description: ABOUT,
        options,
        make_service,
    }
}

/// `--listen`: no default of its own (the -i/-p pair is the default).
const LISTEN: ListenOpt = ListenOpt {
    id: "listen",
    short: None,
    default: &[],
    help: "Endpoint to listen on, repeatable: udp:PORT or tcp:PORT (tcp6:, unix:, ...) with \
           options such as :interface=127.0.0.1 [default: udp and tcp on -i and -p]",
};
const TIMEOUT: TimeoutOpt = TimeoutOpt {
    default: 30,
    help: "Idle time before a TCP connection is closed, and the most a query may take to arrive whole",
};
const TRANSFER_TIMEOUT: SecondsOpt = SecondsOpt {
    name: "transfer-timeout",
    default: 600,
    help: "How long a zone transfer may take in all: a --secondary's fails and its retry timer takes over; an AXFR served is cut off",
};
const MAX_CONNECTIONS: MaxConnectionsOpt = MaxConnectionsOpt {
    default: Some(1000),
};

fn options() -> Command {
    Command::new("dns")
        .about(ABOUT)
        .after_long_help(NOTES)
        .arg(Arg::new("interface").short('i').long("interface").value_name("ADDRESS")
            .default_value("").hide_default_value(true)
            .help("The address to listen on [default: all IPv4 addresses]"))
        .arg(Arg::new("port").short('p').long("port").value_name("PORT").default_value("53")
            .help("The port to listen on, UDP and TCP"))
        .arg(Arg::new("bindzone").long("bindzone").value_name("FILE").action(ArgAction::Append)
            .value_parser(value_parser!(PathBuf)).help("A BIND zone file to serve, repeatable"))
        .arg(Arg::new("pyzone").long("pyzone").value_name("FILE").action(ArgAction::Append)
            .help("A Python zone file: refused (convert it to a BIND zone file)"))
        .arg(Arg::new("secondary").long("secondary").value_name("IP[:PORT]/DOMAIN")
            .action(ArgAction::Append).value_parser(SecondarySpec::parse)
            .help("Be a secondary for DOMAIN, copying it by zone transfer from IP, repeatable"))
        .arg(Arg::new("hosts-file").long("hosts-file").value_name("FILE")
            .value_parser(twistrs_core::options::optional_path()).help("Answer from a hosts file"))
        .arg(Arg::new("recursive").short('r').long("recursive").action(ArgAction::SetTrue)
            .help("Forward other questions to the name servers of --resolv-conf"))
        .arg(Arg::new("resolv-conf").long("resolv-conf").value_name("FILE")
            .value_parser(twistrs_core::options::optional_path())
            .help("The resolv.conf naming the servers to forward to (implies -r) [default: /etc/resolv.conf]"))
        .arg(Arg::new("cache").short('c').long("cache").action(ArgAction::SetTrue)
            .help("Keep forwarded answers for their TTL (negative ones by the SOA's)"))
        .arg(Arg::new("cache-size").long("cache-size").value_name("N")
            .default_value(cache::MAX_ENTRIES.to_string()).value_parser(value_parser!(u32).range(1..))
            .help("Answers the cache keeps at most; the oldest goes first"))
        .arg(Arg::new("verbose").short('v').long("verbose").action(ArgAction::Count)
            .help("Log each question and its answer"))
        .arg(Arg::new("allow-transfer").long("allow-transfer").value_name("ADDRESS[/BITS]")
            .action(ArgAction::Append).value_parser(parse_net)
            .help("A network allowed zone transfers (AXFR), besides loopback, repeatable"))
        .arg(LISTEN.arg())
        .arg(TIMEOUT.arg())
        .arg(TRANSFER_TIMEOUT.arg())
        .arg(MAX_CONNECTIONS.arg())
}

fn parse_net(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, bits) = match s.split_once('/') {
        Some((ip, b)) => (ip, Some(b)),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| format!("not an address: {ip:?}"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        Some(b) => b
            .parse::<u8>()
            .ok()
            .filter(|b| *b <= max)
            .ok_or_else(|| format!("not a prefix length: {b:?}"))?,
        None => max,
    };
    Ok((ip, bits))
}

/// `-i` as twistd takes it: empty for every IPv4 address, an address, or a host name.
fn interface(s: &str) -> Result<Option<IpAddr>, PluginError> {
    if s.is_empty() {
        return Ok(None);
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(Some(ip));
    }
    (s, 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.find(|a| a.is_ipv4()))
        .map(|a| Some(a.ip()))
        .ok_or_else(|| PluginError::new(format!("Invalid interface: {s:?}")))
}

fn make_service(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    if let Some(f) = m.get_many::<String>("pyzone").and_then(|mut v| v.next()) {
        return Err(PluginError::new(format!(
            "--pyzone {f}: Python zone files run Python code, which twistrs cannot; write the \
             zone as a BIND zone file (RFC 1035 master file) and give it with --bindzone"
        )));
    }
    let port_s = m.get_one::<String>("port").map_or("53", String::as_str);
    let port: u16 = port_s
        .parse()
        .map_err(|_| PluginError::new(format!("Invalid port: {port_s:?}")))?;
    let iface = interface(m.get_one::<String>("interface").map_or("", String::as_str))?;
    let given =
        |id| m.value_source(id) == Some(twistrs_core::clap::parser::ValueSource::CommandLine);
    let listen = LISTEN.given(m);
    let pair = (listen.is_empty() || given("port") || given("interface")).then_some((iface, port));
    // An empty value is none, as in twistd (`--resolv-conf=`: not recursive unless -r).
    let resolv_conf = match twistrs_core::options::path_given(m, "resolv-conf") {
        Some(p) => Some(p.clone()),
        None if m.get_flag("recursive") => Some(PathBuf::from("/etc/resolv.conf")),
        None => None,
    };
    let config = Config {
        zone_files: m
            .get_many::<PathBuf>("bindzone")
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
        hosts_file: twistrs_core::options::path_given(m, "hosts-file").cloned(),
        secondaries: m
            .get_many::<SecondarySpec>("secondary")
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
        resolv_conf,
        cache: m.get_flag("cache"),
        cache_size: m
            .get_one::<u32>("cache-size")
            .map_or(cache::MAX_ENTRIES, |n| *n as usize),
        verbose: m.get_count("verbose"),
        axfr: AxfrAllow(
            m.get_many::<(IpAddr, u8)>("allow-transfer")
                .map(|v| v.copied().collect())
                .unwrap_or_default(),
        ),
        tcp_timeout: TIMEOUT.get(m),
        xfr_deadline: TRANSFER_TIMEOUT.get(m),
    };
    let server = Server::load(config).map_err(PluginError::new)?;
    Ok(Box::new(DnsService {
        server,
        pair,
        listen,
        max: MAX_CONNECTIONS.get(m),
        timeout: TIMEOUT.get(m),
        xfr_deadline: TRANSFER_TIMEOUT.get(m),
        ports: Vec::new(),
    }))
}

/// UDP and TCP on one port (twistd's pair), any `--listen` endpoints, and the server.
struct DnsService {
    server: Shared,
    pair: Option<(Option<IpAddr>, u16)>,
    listen: Vec<Endpoint>,
    max: Option<usize>,
    timeout: Duration,
    xfr_deadline: Duration,
    ports: Vec<ListenerId>,
}

impl DnsService {
    fn datagram(&self) -> Box<DnsDatagram> {
        Box::new(DnsDatagram {
            server: Rc::downgrade(&self.server),
        })
    }
}

fn failure(e: twistrs_core::ListenError) -> Failure {
    Failure::msg(e.to_string())
}

impl Service for DnsService {
    fn name(&self) -> &str {
        "dns"
    }

    fn privileged_start_service(&mut self, h: &mut ServiceHost<'_>) -> Result<(), Failure> {
        let fid = h.add_factory(Box::new(DnsFactory {
            server: Rc::downgrade(&self.server),
            max: self.max,
            timeout: self.timeout,
            xfr_deadline: self.xfr_deadline,
        }));
        if let Some((interface, port)) = self.pair {
            // Port 0: TCP takes the port UDP was given, so the pair stays one port; if that
            // TCP port is taken, both try again elsewhere.
            for attempt in 1.. {
                let udp = Endpoint::Udp {
                    port,
                    interface: interface.map(Into::into),
                };
                let id = h.listen_udp(&udp, self.datagram()).map_err(failure)?;
                let got = h
                    .listener_address(id)
                    .and_then(|a| a.socket_addr())
                    .map_or(port, |a| a.port());
                let tcp = Endpoint::Tcp {
                    port: got,
                    interface: interface.map(Into::into),
                    backlog: DEFAULT_BACKLOG,
                    v6: interface.is_some_and(|i| i.is_ipv6()),
                    tls: None,
                };
                match h.listen(&tcp, fid) {
                    Ok(tid) => {
                        self.ports.extend([id, tid]);
                        break;
                    }
                    Err(e)
                        if port == 0
                            && attempt < 32
                            && e.error.kind() == std::io::ErrorKind::AddrInUse =>
                    {
                        h.stop_listening(id);
                    }
                    Err(e) => {
                        h.stop_listening(id);
                        return Err(failure(e));
                    }
                }
            }
        }
        for ep in &self.listen {
            let id = if ep.is_datagram() {
                h.listen_udp(ep, self.datagram())
            } else {
                h.listen(ep, fid)
            };
            self.ports.push(id.map_err(failure)?);
        }
        Ok(())
    }

    fn start_service(&mut self, h: &mut ServiceHost<'_>) -> Result<(), Failure> {
        self.server.borrow_mut().start(&h.handle());
        Ok(())
    }

    fn stop_service(&mut self, h: &mut ServiceHost<'_>) {
        for id in self.ports.drain(..) {
            h.stop_listening(id);
        }
        self.server.borrow_mut().stop();
    }
}

#[cfg(test)]
mod option_tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Box<dyn Service>, String> {
        let mut v = vec!["dns"];
        v.extend_from_slice(args);
        let m = options()
            .try_get_matches_from(v)
            .map_err(|e| e.to_string())?;
        make_service(&m).map_err(|e| e.to_string())
    }

    #[test]
    fn twistd_options_and_refusals() {
        let e = parse(&["--pyzone", "zone.py"]).err().unwrap();
        assert!(
            e.contains("--pyzone zone.py") && e.contains("BIND zone file"),
            "{e}"
        );
        let e = parse(&["-p", "x"]).err().unwrap();
        assert_eq!(e, "Invalid port: \"x\"");
        let e = parse(&["--secondary", "192.0.2.1"]).err().unwrap();
        assert!(e.contains("IP[:port]/domain"), "{e}");
        let e = parse(&["--bindzone", "/nonexistent/example.com"])
            .err()
            .unwrap();
        assert!(e.starts_with("/nonexistent/example.com:"), "{e}");
        assert!(parse(&["-p", "5353", "-i", "127.0.0.1", "-v", "-v", "-c"]).is_ok());
        assert_eq!(
            parse_net("10.0.0.0/8"),
            Ok(("10.0.0.0".parse().unwrap(), 8))
        );
        assert!(parse_net("10.0.0.0/33").is_err());
        assert_eq!(interface("").unwrap(), None);
        assert_eq!(interface("::1").unwrap(), Some("::1".parse().unwrap()));
        assert_eq!(
            interface("localhost").unwrap(),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
