//! Endpoint strings in twistd's grammar (`tcp:8080:interface=127.0.0.1`, `unix:/run/x.sock`, ...).
//!
//! The grammar follows `twisted.internet.endpoints`: the string is split on `:`, a segment with an
//! `=` is a keyword argument (only the first `=` separates), anything else is positional, and a
//! backslash escapes the next character (`tcp6:80:interface=\:\:1`). Positional arguments map onto
//! the parameters in twistd's order, so `tcp:port=80` and `tcp:80` are the same endpoint.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::str::FromStr;

/// The default listen backlog for stream endpoints: nginx's 511. twistd's 50 overflows in a
/// burst of a few hundred connects, and the kernel then drops SYNs (seconds of retransmits).
pub const DEFAULT_BACKLOG: u32 = 511;

/// A parsed server endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `tcp:PORT[:interface=][:backlog=]` and `tcp6:...`.
    Tcp {
        port: u16,
        /// `None` means every interface (`0.0.0.0`, or `::` for tcp6).
        interface: Option<IpAddr>,
        backlog: u32,
        v6: bool,
    },
    /// `unix:PATH[:mode=][:backlog=][:lockfile=]`.
    Unix {
        path: PathBuf,
        mode: u32,
        backlog: u32,
        lockfile: bool,
    },
    /// `udp:PORT[:interface=]`, for datagram plugins.
    Udp {
        port: u16,
        interface: Option<IpAddr>,
    },
    /// `systemd:domain=INET|INET6|UNIX:index=N`: a socket passed in by systemd.
    Systemd { domain: SystemdDomain, index: u32 },
}

/// The address family of a socket-activated endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemdDomain {
    Inet,
    Inet6,
    Unix,
}

/// Why an endpoint string was refused; its `Display` is the whole one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint '{input}': {problem}")]
pub struct EndpointError {
    pub input: String,
    pub problem: String,
}

impl Endpoint {
    /// True for a datagram endpoint.
    pub fn is_datagram(&self) -> bool {
        matches!(self, Endpoint::Udp { .. })
    }
}

/// One `:`-separated segment: positional, or `key=value`.
#[derive(Debug)]
enum Arg {
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
    for arg in args {
        match arg {
            Arg::Pos(v) => {
                let Some(p) = params.get(bound.len()) else {
                    return Err(format!(
                        "too many positional arguments (takes at most {})",
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
            return Err(format!("argument '{k}' given twice"));
        }
        match bound.iter_mut().find(|(n, _)| *n == params[i]) {
            Some(slot) => slot.1 = v,
            None => bound.push((params[i], v)),
        }
    }
    Ok(bound)
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

fn parse_interface(v: Option<&str>, v6: bool) -> Result<Option<IpAddr>, String> {
    let v = match v {
        None | Some("") => return Ok(None),
        Some(v) => v,
    };
    if v == "localhost" {
        return Ok(Some(if v6 {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }));
    }
    match v.parse::<IpAddr>() {
        Ok(ip @ IpAddr::V4(_)) if !v6 => Ok(Some(ip)),
        Ok(ip @ IpAddr::V6(_)) if v6 => Ok(Some(ip)),
        Ok(IpAddr::V6(_)) => Err(format!(
            "interface '{v}' is an IPv6 address: use tcp6 (and escape colons: \\:)"
        )),
        Ok(IpAddr::V4(_)) => Err(format!("interface '{v}' is not an IPv6 address")),
        Err(_) => Err(format!("interface '{v}' is not an IP address")),
    }
}

fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let mut args = tokenize(s)?;
    let kind = match args.first() {
        Some(Arg::Pos(k)) if !k.is_empty() => k.to_ascii_lowercase(),
        _ => return Err("missing endpoint type (tcp, tcp6, unix, udp, systemd)".into()),
    };
    args.remove(0);
    if args.is_empty() && kind.parse::<u32>().is_ok() {
        return Err(format!(
            "unknown endpoint type '{kind}' (bare port numbers are not endpoints: use tcp:{kind})"
        ));
    }
    match kind.as_str() {
        "tcp" | "tcp6" => {
            let v6 = kind == "tcp6";
            let b = bind(&["port", "interface", "backlog"], args)?;
            Ok(Endpoint::Tcp {
                port: parse_port(get(&b, "port"))?,
                interface: parse_interface(get(&b, "interface"), v6)?,
                backlog: parse_backlog(get(&b, "backlog"))?,
                v6,
            })
        }
        "udp" => {
            let b = bind(&["port", "interface"], args)?;
            let iface = get(&b, "interface");
            let v6 = iface.is_some_and(|i| i.contains(':'));
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
            let b = bind(&["domain", "index"], args)?;
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
            Ok(Endpoint::Systemd { domain, index })
        }
        other => Err(format!(
            "unknown endpoint type '{other}' (expected tcp, tcp6, unix, udp or systemd)"
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

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp {
                port,
                interface,
                backlog,
                v6,
            } => {
                write!(f, "{}:{port}", if *v6 { "tcp6" } else { "tcp" })?;
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
            Endpoint::Systemd { domain, index } => {
                let d = match domain {
                    SystemdDomain::Inet => "INET",
                    SystemdDomain::Inet6 => "INET6",
                    SystemdDomain::Unix => "UNIX",
                };
                write!(f, "systemd:domain={d}:index={index}")
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
            } => {
                assert_eq!(port, 8080);
                assert_eq!(interface, Some("127.0.0.1".parse().unwrap()));
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
                assert_eq!(interface, Some("::1".parse().unwrap()));
                assert_eq!(backlog, 7);
            }
            other => panic!("{other:?}"),
        }
        // Unescaped, the colons split the string into more arguments.
        assert!(err("tcp6:80:interface=::1").contains("given twice"));
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
                interface: Some("127.0.0.1".parse().unwrap())
            }
        );
        assert!(ok("udp:0").is_datagram());
        assert_eq!(
            ok("systemd:domain=INET:index=0"),
            Endpoint::Systemd {
                domain: SystemdDomain::Inet,
                index: 0
            }
        );
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
            ("tcp:80:interface=nothost", "not an IP address"),
            ("tcp:80:interface=\\:\\:1", "use tcp6"),
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
