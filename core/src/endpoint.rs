//! Endpoint strings in twistd's grammar (`tcp:8080:interface=127.0.0.1`, `unix:/run/x.sock`, ...).
//!
//! The grammar follows `twisted.internet.endpoints`: the string is split on `:`, a segment with an
//! `=` is a keyword argument (only the first `=` separates), anything else is positional, and a
//! backslash escapes the next character (`tcp6:80:interface=\:\:1`). Positional arguments map onto
//! the parameters in twistd's order, so `tcp:port=80` and `tcp:80` are the same endpoint.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

pub use crate::tls::TlsSpec;
use std::str::FromStr;

/// The default listen backlog for stream endpoints: nginx's 511. twistd's 50 overflows in a
/// burst of a few hundred connects, and the kernel then drops SYNs (seconds of retransmits).
pub const DEFAULT_BACKLOG: u32 = 511;

/// A parsed server endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `tcp:PORT[:interface=][:backlog=]` and `tcp6:...`; with `tls`, twistd's
    /// `ssl:PORT:privateKey=...` (IPv4) or `tls:CERTDIR:port=...` (IPv6, all interfaces).
    Tcp {
        /// The port; 0 lets the kernel pick one (the log's "starting on" line says which).
        port: u16,
        /// `None` means every interface (`0.0.0.0`, or `::` for tcp6).
        interface: Option<Interface>,
        /// The listen queue's length (`backlog=`, [`DEFAULT_BACKLOG`] unless given).
        backlog: u32,
        /// `tcp6` (and `tls:`): an IPv6 socket.
        v6: bool,
        /// `ssl:` and `tls:`: the certificates and keys this port serves TLS with.
        tls: Option<Box<TlsSpec>>,
    },
    /// `unix:PATH[:mode=][:backlog=][:lockfile=]`.
    Unix {
        /// The socket's path (`address=`).
        path: PathBuf,
        /// The socket file's permissions (`mode=`, octal; 0o666 unless given).
        mode: u32,
        /// The listen queue's length.
        backlog: u32,
        /// `lockfile=1` (the default, as twistd): a `PATH.lock` held while listening, so a
        /// second server does not unlink a live socket, and a stale socket is replaced.
        lockfile: bool,
    },
    /// `udp:PORT[:interface=]`, for datagram plugins.
    Udp {
        /// The port; 0 lets the kernel pick one.
        port: u16,
        /// `None` means every interface.
        interface: Option<Interface>,
    },
    /// `systemd:domain=INET|INET6|UNIX:index=N`: a socket passed in by systemd, with TLS
    /// from `privateKey=`/`certKey=`/`extraCertChain=` or `certDir=` (twistd has no TLS
    /// on inherited sockets).
    Systemd {
        /// The family the inherited socket must have (checked at start).
        domain: SystemdDomain,
        /// Which of the passed sockets (`LISTEN_FDS`), from 0.
        index: u32,
        /// TLS on the inherited socket, as for `ssl:`.
        tls: Option<Box<TlsSpec>>,
    },
}

/// An endpoint's `interface=`: an address, or a host name that is resolved when the socket
/// is bound (twistd hands the name to `bind`, which resolves it). The name is kept as given,
/// so the endpoint's string, which a restart matches inherited sockets by, stays the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interface {
    /// A literal address (`interface=127.0.0.1`, `interface=\:\:1`).
    Ip(IpAddr),
    /// A host name, resolved at bind time.
    Name(String),
}

impl Interface {
    /// The address, when it is one (a name is not resolved here).
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Interface::Ip(ip) => Some(*ip),
            Interface::Name(_) => None,
        }
    }

    /// The address to bind: the name's first IPv6 address for `v6` (tcp6), else its first
    /// IPv4 address (tcp, ssl, udp), as Python's `bind` on an `AF_INET` socket picks.
    pub fn resolve(&self, v6: bool) -> std::io::Result<IpAddr> {
        let name = match self {
            Interface::Ip(ip) => return Ok(*ip),
            Interface::Name(n) => n,
        };
        let family = if v6 { "IPv6" } else { "IPv4" };
        let not_found = |why: String| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("cannot resolve interface '{name}' to an {family} address: {why}"),
            )
        };
        crate::addrinfo::lookup(name, v6)
            .map_err(not_found)?
            .ok_or_else(|| not_found(format!("it has no {family} address")))
    }
}

impl From<IpAddr> for Interface {
    fn from(ip: IpAddr) -> Self {
        Interface::Ip(ip)
    }
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interface::Ip(ip) => ip.fmt(f),
            Interface::Name(n) => f.write_str(n),
        }
    }
}

/// A host name as `getaddrinfo` takes one: labels of letters, digits, `-` and `_`, dot-separated.
fn is_host_name(v: &str) -> bool {
    let v = v.strip_suffix('.').unwrap_or(v);
    v.len() <= 253
        && v.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The address family of a socket-activated endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemdDomain {
    /// `domain=INET`: an IPv4 socket.
    Inet,
    /// `domain=INET6`: an IPv6 socket.
    Inet6,
    /// `domain=UNIX`: a UNIX socket.
    Unix,
}

/// Why an endpoint string was refused; its `Display` is the whole one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint '{input}': {problem}")]
pub struct EndpointError {
    /// The endpoint string as given.
    pub input: String,
    /// What is wrong with it, for the message.
    pub problem: String,
}

impl Endpoint {
    /// True for a datagram endpoint.
    pub fn is_datagram(&self) -> bool {
        matches!(self, Endpoint::Udp { .. })
    }

    /// Where the endpoint's certificates come from, for a TLS endpoint.
    pub fn tls(&self) -> Option<&TlsSpec> {
        match self {
            Endpoint::Tcp { tls, .. } | Endpoint::Systemd { tls, .. } => tls.as_deref(),
            _ => None,
        }
    }
}

/// One `:`-separated segment: positional, or `key=value`.
#[derive(Debug)]
pub(crate) enum Arg {
    Pos(String),
    Kw(String, String),
}

/// Splits on unescaped `:`; the first unescaped `=` of a segment makes it a keyword.
fn tokenize(s: &str) -> Result<Vec<Arg>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut key: Option<String> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n) => cur.push(n),
                None => return Err("trailing backslash".into()),
            },
            ':' => {
                out.push(match key.take() {
                    Some(k) => Arg::Kw(k, std::mem::take(&mut cur)),
                    None => Arg::Pos(std::mem::take(&mut cur)),
                });
            }
            '=' if key.is_none() => key = Some(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(match key {
        Some(k) => Arg::Kw(k, cur),
        None => Arg::Pos(cur),
    });
    Ok(out)
}

/// Binds positional and keyword arguments onto named parameters, as a Python call does:
/// positionals fill parameters in order, keywords by name (the last of a repeated keyword
/// wins), and a parameter given both ways is an error.
fn bind<'a>(params: &[&'a str], args: Vec<Arg>) -> Result<Vec<(&'a str, String)>, String> {
    let mut bound: Vec<(&'a str, String)> = Vec::new();
    let mut keywords: Vec<(String, String)> = Vec::new();
    // An empty argument beside one of these errors is most often an IPv6 address written
    // with bare colons, which split it into more arguments (twistd's error is no clearer).
    let hint = if args
        .iter()
        .any(|a| matches!(a, Arg::Pos(v) | Arg::Kw(_, v) if v.is_empty()))
    {
        " (a ':' inside a value is written '\\:', as in interface=\\:\\:1)"
    } else {
        ""
    };
    for arg in args {
        match arg {
            Arg::Pos(v) => {
                let Some(p) = params.get(bound.len()) else {
                    return Err(format!(
                        "too many positional arguments (takes at most {}){hint}",
                        params.len()
                    ));
                };
                bound.push((p, v));
            }
            Arg::Kw(k, v) => keywords.push((k, v)),
        }
    }
    let positional = bound.len();
    for (k, v) in keywords {
        let Some(i) = params.iter().position(|p| *p == k) else {
            return Err(format!(
                "unknown argument '{k}' (expected one of: {})",
                params.join(", ")
            ));
        };
        if i < positional {
            return Err(format!("argument '{k}' given twice{hint}"));
        }
        match bound.iter_mut().find(|(n, _)| *n == params[i]) {
            Some(slot) => slot.1 = v,
            None => bound.push((params[i], v)),
        }
    }
    Ok(bound)
}

/// The type (in lower case) and the arguments of an endpoint string; shared with the client
/// endpoints of [`crate::client`].
pub(crate) fn split_arguments(s: &str) -> Result<(String, Vec<Arg>), String> {
    let mut args = tokenize(s)?;
    let kind = match args.first() {
        Some(Arg::Pos(k)) if !k.is_empty() => k.to_ascii_lowercase(),
        _ => return Err("missing endpoint type".into()),
    };
    args.remove(0);
    Ok((kind, args))
}

/// Arguments bound to parameter names by [`bind_arguments`].
pub(crate) struct Bound<'a>(Vec<(&'a str, String)>);

impl Bound<'_> {
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        get(&self.0, name)
    }
}

/// [`bind`] for the client endpoints.
pub(crate) fn bind_arguments<'a>(params: &[&'a str], args: Vec<Arg>) -> Result<Bound<'a>, String> {
    bind(params, args).map(Bound)
}

fn get<'b>(bound: &'b [(&str, String)], name: &str) -> Option<&'b str> {
    bound
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

fn parse_port(v: Option<&str>) -> Result<u16, String> {
    let v = v.ok_or("a port is required")?;
    v.parse::<u16>()
        .map_err(|_| format!("port must be an integer from 0 to 65535, not '{v}'"))
}

fn parse_backlog(v: Option<&str>) -> Result<u32, String> {
    match v {
        None => Ok(DEFAULT_BACKLOG),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("backlog must be a positive integer, not '{v}'")),
        },
    }
}

/// An interface that can only be an IPv6 address (a host name has no colon): what makes
/// `tcp:`, `ssl:` and `udp:` IPv6 sockets.
fn ipv6_literal(v: Option<&str>) -> bool {
    v.is_some_and(|i| i.contains(':'))
}

fn parse_interface(v: Option<&str>, v6: bool) -> Result<Option<Interface>, String> {
    let v = match v {
        None | Some("") => return Ok(None),
        Some(v) => v,
    };
    if v == "localhost" {
        return Ok(Some(Interface::Ip(if v6 {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        })));
    }
    match v.parse::<IpAddr>() {
        Ok(ip @ IpAddr::V4(_)) if !v6 => Ok(Some(Interface::Ip(ip))),
        Ok(ip @ IpAddr::V6(_)) if v6 => Ok(Some(Interface::Ip(ip))),
        Ok(IpAddr::V6(_)) => Err(format!("interface '{v}' is not an IPv4 address")),
        Ok(IpAddr::V4(_)) => Err(format!("interface '{v}' is not an IPv6 address")),
        Err(_) if is_host_name(v) => Ok(Some(Interface::Name(v.to_string()))),
        Err(_) => Err(format!(
            "interface '{v}' is neither an IP address nor a host name"
        )),
    }
}

/// A path given in an endpoint, made absolute against the directory the command line was
/// given in (twistd opens the files then, before any `--rundir`).
fn abs_path(p: &str) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| PathBuf::from(p))
}

/// `ssl:`'s certificate keywords (shared with `systemd:`): `None` when none is given.
fn files_spec(
    private_key: Option<&str>,
    cert_key: Option<&str>,
    extra_chain: Option<&str>,
    dh_parameters: Option<&str>,
    method: Option<&str>,
) -> Result<TlsSpec, String> {
    if let Some(m) = method {
        crate::tls::parse_method(m)?;
    }
    let nonempty = |v: Option<&str>| v.filter(|v| !v.is_empty()).map(abs_path);
    Ok(TlsSpec::Files {
        private_key: abs_path(private_key.unwrap_or("server.pem")),
        cert_key: nonempty(cert_key),
        extra_chain: nonempty(extra_chain),
        dh_parameters: nonempty(dh_parameters),
        method: method.map(str::to_string),
    })
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let mut args = tokenize(s)?;
    let kind = match args.first() {
        Some(Arg::Pos(k)) if !k.is_empty() => k.to_ascii_lowercase(),
        _ => return Err("missing endpoint type (tcp, tcp6, ssl, tls, unix, udp, systemd)".into()),
    };
    args.remove(0);
    if args.is_empty() && kind.parse::<u32>().is_ok() {
        return Err(format!(
            "unknown endpoint type '{kind}' (bare port numbers are not endpoints: use tcp:{kind})"
        ));
    }
    match kind.as_str() {
        "tcp" | "tcp6" => {
            let b = bind(&["port", "interface", "backlog"], args)?;
            let iface = get(&b, "interface");
            // `tcp:` on an IPv6 address is an IPv6 socket, as Twisted's tcp.Port makes one
            // for an IPv6 literal (a host name stays IPv4).
            let v6 = kind == "tcp6" || ipv6_literal(iface);
            Ok(Endpoint::Tcp {
                port: parse_port(get(&b, "port"))?,
                interface: parse_interface(iface, v6)?,
                backlog: parse_backlog(get(&b, "backlog"))?,
                v6,
                tls: None,
            })
        }
        "ssl" => {
            let b = bind(
                &[
                    "port",
                    "privateKey",
                    "certKey",
                    "sslmethod",
                    "interface",
                    "backlog",
                    "extraCertChain",
                    "dhParameters",
                ],
                args,
            )?;
            let tls = files_spec(
                get(&b, "privateKey"),
                get(&b, "certKey"),
                get(&b, "extraCertChain"),
                get(&b, "dhParameters"),
                get(&b, "sslmethod"),
            )?;
            // As `tcp:`: Twisted's ssl.Port is a tcp.Port.
            let iface = get(&b, "interface");
            let v6 = ipv6_literal(iface);
            Ok(Endpoint::Tcp {
                port: parse_port(get(&b, "port"))?,
                interface: parse_interface(iface, v6)?,
                backlog: parse_backlog(get(&b, "backlog"))?,
                v6,
                tls: Some(Box::new(tls)),
            })
        }
        "tls" => {
            let b = bind(&["certificates", "port", "interface", "backlog"], args)?;
            let dir = match get(&b, "certificates") {
                Some(d) if !d.is_empty() => abs_path(d),
                _ => return Err("a certificate directory is required: tls:CERTDIR".into()),
            };
            let iface = get(&b, "interface");
            let v6 = iface.is_none_or(|i| i.is_empty() || i.contains(':'));
            Ok(Endpoint::Tcp {
                port: match get(&b, "port") {
                    None => 443,
                    p => parse_port(p)?,
                },
                interface: parse_interface(iface, v6)?,
                backlog: parse_backlog(get(&b, "backlog"))?,
                v6,
                tls: Some(Box::new(TlsSpec::Dir(dir))),
            })
        }
        "udp" => {
            let b = bind(&["port", "interface"], args)?;
            let iface = get(&b, "interface");
            let v6 = ipv6_literal(iface);
            Ok(Endpoint::Udp {
                port: parse_port(get(&b, "port"))?,
                interface: parse_interface(iface, v6)?,
            })
        }
        "unix" => {
            let b = bind(&["address", "mode", "backlog", "lockfile"], args)?;
            let path = match get(&b, "address") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => return Err("a socket path is required".into()),
            };
            let mode = match get(&b, "mode") {
                None => 0o666,
                Some(m) => u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| format!("mode must be an octal number, not '{m}'"))?,
            };
            let lockfile = match get(&b, "lockfile") {
                None | Some("1") => true,
                Some("0") => false,
                Some(v) => return Err(format!("lockfile must be 0 or 1, not '{v}'")),
            };
            Ok(Endpoint::Unix {
                path,
                mode,
                backlog: parse_backlog(get(&b, "backlog"))?,
                lockfile,
            })
        }
        "systemd" => {
            let b = bind(
                &[
                    "domain",
                    "index",
                    "privateKey",
                    "certKey",
                    "extraCertChain",
                    "dhParameters",
                    "sslmethod",
                    "certDir",
                ],
                args,
            )?;
            let domain = match get(&b, "domain") {
                Some("INET") => SystemdDomain::Inet,
                Some("INET6") => SystemdDomain::Inet6,
                Some("UNIX") => SystemdDomain::Unix,
                Some(d) => return Err(format!("domain must be INET, INET6 or UNIX, not '{d}'")),
                None => return Err("domain= is required (INET, INET6 or UNIX)".into()),
            };
            let index = match get(&b, "index") {
                Some(i) => i
                    .parse::<u32>()
                    .map_err(|_| format!("index must be a non-negative integer, not '{i}'"))?,
                None => return Err("index= is required".into()),
            };
            let files = [
                "privateKey",
                "certKey",
                "extraCertChain",
                "dhParameters",
                "sslmethod",
            ];
            let tls = match (
                get(&b, "certDir"),
                files.iter().any(|k| get(&b, k).is_some()),
            ) {
                (Some(_), true) => {
                    return Err("certDir= and privateKey=/certKey= exclude each other".into());
                }
                (Some(d), false) => Some(Box::new(TlsSpec::Dir(abs_path(d)))),
                (None, true) => Some(Box::new(files_spec(
                    get(&b, "privateKey"),
                    get(&b, "certKey"),
                    get(&b, "extraCertChain"),
                    get(&b, "dhParameters"),
                    get(&b, "sslmethod"),
                )?)),
                (None, false) => None,
            };
            if tls.is_some() && domain == SystemdDomain::Unix {
                return Err("TLS is for INET and INET6 sockets".into());
            }
            Ok(Endpoint::Systemd { domain, index, tls })
        }
        other => Err(format!(
            "unknown endpoint type '{other}' (expected tcp, tcp6, ssl, tls, unix, udp or systemd)"
        )),
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_endpoint(s).map_err(|problem| EndpointError {
            input: s.to_string(),
            problem,
        })
    }
}

/// Escapes `\` and `:` so a value survives the grammar (Twisted's `quoteStringArgument`).
pub fn quote_argument(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

/// `ssl:`'s keywords for a `TlsSpec::Files`.
fn write_files(f: &mut fmt::Formatter<'_>, spec: &TlsSpec) -> fmt::Result {
    let TlsSpec::Files {
        private_key,
        cert_key,
        extra_chain,
        dh_parameters,
        method,
    } = spec
    else {
        return Ok(());
    };
    let q = |p: &std::path::Path| quote_argument(&p.to_string_lossy());
    write!(f, ":privateKey={}", q(private_key))?;
    for (k, v) in [
        ("certKey", cert_key),
        ("extraCertChain", extra_chain),
        ("dhParameters", dh_parameters),
    ] {
        if let Some(v) = v {
            write!(f, ":{k}={}", q(v))?;
        }
    }
    if let Some(m) = method {
        write!(f, ":sslmethod={}", quote_argument(m))?;
    }
    Ok(())
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp {
                port,
                interface,
                backlog,
                v6,
                tls,
            } => {
                match tls.as_deref() {
                    None => write!(f, "{}:{port}", if *v6 { "tcp6" } else { "tcp" })?,
                    Some(TlsSpec::Dir(d)) => write!(
                        f,
                        "tls:{}:port={port}",
                        quote_argument(&d.to_string_lossy())
                    )?,
                    Some(files) => {
                        write!(f, "ssl:{port}")?;
                        write_files(f, files)?;
                    }
                }
                if let Some(i) = interface {
                    write!(f, ":interface={}", quote_argument(&i.to_string()))?;
                }
                if *backlog != DEFAULT_BACKLOG {
                    write!(f, ":backlog={backlog}")?;
                }
                Ok(())
            }
            Endpoint::Unix {
                path,
                mode,
                backlog,
                lockfile,
            } => {
                // A path with `=` in it would read as a keyword: name it as one.
                let path = path.to_string_lossy();
                let key = if path.contains('=') { "address=" } else { "" };
                write!(
                    f,
                    "unix:{key}{}:mode={mode:o}:backlog={backlog}:lockfile={}",
                    quote_argument(&path),
                    u8::from(*lockfile)
                )
            }
            Endpoint::Udp { port, interface } => {
                write!(f, "udp:{port}")?;
                if let Some(i) = interface {
                    write!(f, ":interface={}", quote_argument(&i.to_string()))?;
                }
                Ok(())
            }
            Endpoint::Systemd { domain, index, tls } => {
                let d = match domain {
                    SystemdDomain::Inet => "INET",
                    SystemdDomain::Inet6 => "INET6",
                    SystemdDomain::Unix => "UNIX",
                };
                write!(f, "systemd:domain={d}:index={index}")?;
                match tls.as_deref() {
                    None => Ok(()),
                    Some(TlsSpec::Dir(dir)) => {
                        write!(f, ":certDir={}", quote_argument(&dir.to_string_lossy()))
                    }
                    Some(files) => write_files(f, files),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Endpoint {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// As Twisted's tcp.Port (and ssl.Port, one of its kind) does, an IPv6 address makes an
    /// IPv6 socket of `tcp:` and `ssl:`: twistd's `tcp:80:interface=\:\:` works.
    #[test]
    fn tcp_and_ssl_on_an_ipv6_address_are_ipv6_sockets() {
        for (s, want) in [
            ("tcp:80:interface=\\:\\:", "::"),
            ("tcp:80:interface=\\:\\:1", "::1"),
            ("ssl:443:privateKey=k.pem:interface=fd77\\:\\:1", "fd77::1"),
        ] {
            match ok(s) {
                Endpoint::Tcp {
                    interface: Some(Interface::Ip(ip)),
                    v6,
                    ..
                } => {
                    assert!(v6, "{s}");
                    assert_eq!(ip, want.parse::<IpAddr>().unwrap(), "{s}");
                }
                other => panic!("{s}: {other:?}"),
            }
        }
        assert!(
            ok("tcp:80:interface=\\:\\:1")
                .to_string()
                .starts_with("tcp6:80")
        );
    }

    #[test]
    fn interface_may_be_a_host_name_kept_as_given() {
        for (s, v6) in [
            ("tcp:80:interface=myhost", false),
            ("tcp6:80:interface=my-host.example.", true),
            ("ssl:443:interface=web_1.lan", false),
        ] {
            match ok(s) {
                Endpoint::Tcp {
                    interface: Some(Interface::Name(n)),
                    v6: got,
                    ..
                } => {
                    assert_eq!(got, v6, "{s}");
                    assert!(s.contains(&format!("interface={n}")), "{s}: {n}");
                }
                other => panic!("{s}: {other:?}"),
            }
        }
        match ok("udp:53:interface=dnshost") {
            Endpoint::Udp { interface, .. } => {
                assert_eq!(interface, Some(Interface::Name("dnshost".into())))
            }
            other => panic!("{other:?}"),
        }
        // The string a restart matches inherited sockets by keeps the name.
        let ep = ok("tcp:80:interface=myhost:backlog=9");
        assert_eq!(ep.to_string(), "tcp:80:interface=myhost:backlog=9");
        assert_eq!(ok(&ep.to_string()), ep);
    }

    #[test]
    fn a_host_name_resolves_in_the_endpoints_family() {
        let name = Interface::Name("localhost".into());
        assert!(name.resolve(false).unwrap().is_loopback());
        assert!(name.resolve(false).unwrap().is_ipv4());
        let ip = Interface::Ip("127.0.0.2".parse().unwrap());
        assert_eq!(ip.resolve(true).unwrap(), ip.ip().unwrap());
        let e = Interface::Name("no-such-host.invalid".into())
            .resolve(false)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot resolve interface 'no-such-host.invalid' to an IPv4 address"),
            "{e}"
        );
    }

    fn err(s: &str) -> String {
        match s.parse::<Endpoint>() {
            Ok(e) => panic!("{s} parsed as {e:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tcp_positional_and_keyword_are_the_same() {
        let a = ok("tcp:8080:interface=127.0.0.1");
        assert_eq!(a, ok("tcp:port=8080:interface=127.0.0.1"));
        assert_eq!(a, ok("tcp:8080:127.0.0.1"));
        assert_eq!(a, ok("TCP:8080:127.0.0.1"));
        match a {
            Endpoint::Tcp {
                port,
                interface,
                backlog,
                v6,
                ..
            } => {
                assert_eq!(port, 8080);
                assert_eq!(interface, Some(Interface::Ip("127.0.0.1".parse().unwrap())));
                assert_eq!(backlog, DEFAULT_BACKLOG);
                assert!(!v6);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tcp6_needs_escaped_colons() {
        match ok(r"tcp6:80:interface=\:\:1:backlog=7") {
            Endpoint::Tcp {
                interface, backlog, ..
            } => {
                assert_eq!(interface, Some(Interface::Ip("::1".parse().unwrap())));
                assert_eq!(backlog, 7);
            }
            other => panic!("{other:?}"),
        }
        // Unescaped, the colons split the string into more arguments.
        assert!(err("tcp6:80:interface=::1").contains("given twice"));
        assert!(
            err("tcp6:80:interface=::1").contains("is written '\\:', as in interface=\\:\\:1"),
            "{}",
            err("tcp6:80:interface=::1")
        );
        assert!(!err("tcp:80:port=81").contains("written"));
        assert!(err("tcp6:80:\\:\\:1:1:2").contains("too many"));
        // A path with '=' must be given by keyword, as in twistd.
        assert!(err("unix:/tmp/a=b").contains("unknown argument '/tmp/a'"));
    }

    #[test]
    fn only_first_equals_separates() {
        match ok("unix:address=/tmp/a=b:mode=600") {
            Endpoint::Unix { path, mode, .. } => {
                assert_eq!(path, PathBuf::from("/tmp/a=b"));
                assert_eq!(mode, 0o600);
            }
            other => panic!("{other:?}"),
        }
        match ok("unix:address=/tmp/x=y") {
            Endpoint::Unix { path, .. } => assert_eq!(path, PathBuf::from("/tmp/x=y")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unix_defaults_and_escapes() {
        match ok(r"unix:/tmp/a\:b.sock") {
            Endpoint::Unix {
                path,
                mode,
                backlog,
                lockfile,
            } => {
                assert_eq!(path, PathBuf::from("/tmp/a:b.sock"));
                assert_eq!(mode, 0o666);
                assert_eq!(backlog, DEFAULT_BACKLOG);
                assert!(lockfile);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            ok("unix:/x:lockfile=0"),
            Endpoint::Unix {
                lockfile: false,
                ..
            }
        ));
    }

    #[test]
    fn udp_and_systemd() {
        assert_eq!(
            ok("udp:7:interface=127.0.0.1"),
            Endpoint::Udp {
                port: 7,
                interface: Some(Interface::Ip("127.0.0.1".parse().unwrap()))
            }
        );
        assert!(ok("udp:0").is_datagram());
        assert_eq!(
            ok("systemd:domain=INET:index=0"),
            Endpoint::Systemd {
                domain: SystemdDomain::Inet,
                index: 0,
                tls: None,
            }
        );
    }

    #[test]
    fn ssl_tls_and_tls_on_systemd() {
        let here = std::env::current_dir().unwrap();
        match ok("ssl:8443:privateKey=k.pem:certKey=c.pem:interface=127.0.0.1") {
            Endpoint::Tcp {
                port,
                v6,
                tls: Some(spec),
                ..
            } => {
                assert_eq!((port, v6), (8443, false));
                assert_eq!(
                    *spec,
                    TlsSpec::Files {
                        private_key: here.join("k.pem"),
                        cert_key: Some(here.join("c.pem")),
                        extra_chain: None,
                        dh_parameters: None,
                        method: None,
                    }
                );
            }
            other => panic!("{other:?}"),
        }
        match ok("ssl:443") {
            Endpoint::Tcp {
                tls: Some(spec), ..
            } => match *spec {
                TlsSpec::Files { private_key, .. } => assert!(private_key.ends_with("server.pem")),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
        match ok("tls:/etc/certs") {
            Endpoint::Tcp {
                port,
                v6,
                interface,
                tls: Some(spec),
                ..
            } => {
                assert_eq!((port, v6, interface), (443, true, None));
                assert_eq!(*spec, TlsSpec::Dir("/etc/certs".into()));
            }
            other => panic!("{other:?}"),
        }
        assert!(ok("tls:/c:port=8443:interface=127.0.0.1").tls().is_some());
        assert!(err("ssl:443:sslmethod=TLSv1_1_METHOD").contains("older than TLS 1.2"));
        assert!(err("ssl:443:sslmethod=BOGUS").contains("not a method"));
        assert!(ok("ssl:443:sslmethod=TLSv1_2_METHOD").tls().is_some());
        assert!(err("tls:").contains("certificate directory"));
        let sd = ok("systemd:domain=INET6:index=0:certDir=/c");
        assert_eq!(sd.tls(), Some(&TlsSpec::Dir("/c".into())));
        assert!(
            ok("systemd:domain=INET:index=1:privateKey=/k.pem")
                .tls()
                .is_some()
        );
        assert!(err("systemd:domain=UNIX:index=0:certDir=/c").contains("INET"));
        assert!(err("systemd:domain=INET:index=0:certDir=/c:privateKey=/k").contains("exclude"));
        // Every form prints back to itself (restart matches listeners by their string).
        for s in [
            "ssl:443:privateKey=/k.pem:certKey=/c.pem:extraCertChain=/x.pem:sslmethod=TLS_METHOD",
            "tls:/etc/certs:port=8443",
            "tls:/etc/certs:port=8443:interface=127.0.0.1",
            "systemd:domain=INET:index=0:privateKey=/k.pem",
            "systemd:domain=INET6:index=2:certDir=/c",
        ] {
            let ep = ok(s);
            assert_eq!(ok(&ep.to_string()), ep, "{s} -> {ep}");
        }
    }

    #[test]
    fn malformed_strings_say_what_is_wrong() {
        let cases = [
            ("8080", "bare port"),
            ("", "missing endpoint type"),
            ("tcp", "port is required"),
            ("tcp:abc", "port must be an integer"),
            ("tcp:70000", "port must be an integer"),
            ("tcp:80:foo=1", "unknown argument 'foo'"),
            (
                "tcp:80:interface=no host",
                "neither an IP address nor a host name",
            ),
            ("tcp:80:interface=a..b", "nor a host name"),
            ("tcp:80:interface=a..", "nor a host name"),
            ("tcp:80:interface=-a", "nor a host name"),
            ("tcp6:80:interface=127.0.0.1", "not an IPv6 address"),
            (
                "tcp:80:interface=1\\:2",
                "neither an IP address nor a host name",
            ),
            ("tcp:80:backlog=0", "backlog must be"),
            ("tcp:80:port=81", "given twice"),
            ("unix:", "socket path is required"),
            ("unix:/x:mode=999", "octal"),
            ("unix:/x:lockfile=yes", "lockfile must be 0 or 1"),
            ("ssh:22", "unknown endpoint type 'ssh'"),
            ("tcp:80\\", "trailing backslash"),
            ("systemd:domain=FOO:index=0", "domain must be"),
            ("systemd:domain=INET", "index= is required"),
        ];
        for (input, want) in cases {
            let msg = err(input);
            assert!(msg.contains(want), "{input:?} -> {msg}");
            assert!(msg.contains(&format!("'{input}'")), "quotes input: {msg}");
            assert!(!msg.contains('\n'));
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "tcp:8080",
            "tcp:0:interface=127.0.0.1:backlog=9",
            r"tcp6:80:interface=\:\:1",
            r"unix:/tmp/a\:b:mode=600:backlog=50:lockfile=0",
            "udp:9:interface=127.0.0.1",
            "systemd:domain=UNIX:index=2",
        ] {
            let e = ok(s);
            assert_eq!(ok(&e.to_string()), e, "{s}");
        }
    }
}
