//! Where outgoing connections go: destinations, twistd's client endpoint strings
//! (`tcp:HOST:PORT`, `unix:PATH`, Twisted's `clientFromString`), host-name resolution off the
//! reactor thread, and why a connection could not be made.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The host part of a TCP destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// An address: connected to at once.
    Ip(IpAddr),
    /// A name: resolved on a worker thread first (`getaddrinfo` may block for seconds).
    Name(String),
}

impl Host {
    /// An address if `s` is one (`::1` and `[::1]` both), else a name.
    pub fn parse(s: &str) -> Host {
        let bare = s
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(s);
        match bare.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) => Host::Name(s.to_string()),
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// Where an outgoing connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// TCP to a host (an address, or a name resolved off the reactor thread) and port.
    Tcp {
        /// An address, or a name resolved off the reactor thread.
        host: Host,
        /// The port.
        port: u16,
    },
    /// A UNIX stream socket.
    Unix(PathBuf),
}

impl Destination {
    /// TCP to `host` (an address or a name) and `port`.
    pub fn tcp(host: &str, port: u16) -> Destination {
        Destination::Tcp {
            host: Host::parse(host),
            port,
        }
    }
}

impl From<SocketAddr> for Destination {
    fn from(a: SocketAddr) -> Self {
        Destination::Tcp {
            host: Host::Ip(a.ip()),
            port: a.port(),
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Tcp { host, port } => write!(f, "{host}:{port}"),
            Destination::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A client endpoint string, Twisted's `clientFromString`: `tcp:HOST:PORT[:timeout=SECONDS]`
/// (also `tcp:host=HOST:port=PORT`; an IPv6 address escaped, `tcp:\:\:1:80`, or in brackets,
/// `tcp:[::1]:80`), `unix:PATH[:timeout=SECONDS]`, and `ssl:HOST:PORT` (also
/// `ssl:host=HOST:port=PORT`) with `timeout=`, `caCertsDir=DIR`, `hostname=NAME`, `certKey=`
/// and `privateKey=`. Unlike Twisted, which verifies nothing without `hostname=`, an `ssl:`
/// endpoint always verifies the server: against `hostname` (the host by default), with the
/// system's trust roots when there is no `caCertsDir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientEndpoint {
    /// Where it connects.
    pub dest: Destination,
    /// `timeout=`: the connect timeout, when the string gives one.
    pub timeout: Option<Duration>,
    /// `ssl:`: TLS over the connection.
    pub tls: Option<crate::tls::ClientTlsSpec>,
}

impl fmt::Display for ClientEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = crate::endpoint::quote_argument;
        let kind = if self.tls.is_some() { "ssl" } else { "tcp" };
        match &self.dest {
            Destination::Tcp { host, port } => {
                let host = match host {
                    Host::Ip(ip) => ip.to_string(),
                    Host::Name(n) => n.clone(),
                };
                write!(f, "{kind}:{}:{port}", q(&host))?
            }
            Destination::Unix(p) => write!(f, "unix:{}", q(&p.to_string_lossy()))?,
        }
        if let Some(t) = self.timeout {
            write!(f, ":timeout={}", t.as_secs())?;
        }
        if let Some(tls) = &self.tls {
            write!(f, ":hostname={}", q(&tls.hostname))?;
            let paths = [
                ("caCertsDir", &tls.ca_certs_dir),
                ("certKey", &tls.cert_key),
                ("privateKey", &tls.private_key),
            ];
            for (name, p) in paths {
                if let Some(p) = p {
                    write!(f, ":{name}={}", q(&p.to_string_lossy()))?;
                }
            }
        }
        Ok(())
    }
}

/// Why a client endpoint string was refused; `Display` is the whole one-line message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid client endpoint '{input}': {problem}")]
pub struct ClientEndpointError {
    /// The endpoint string as given.
    pub input: String,
    /// What is wrong with it, for the message.
    pub problem: String,
}

fn parse_timeout(v: Option<&str>) -> Result<Option<Duration>, String> {
    match v {
        None => Ok(None),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(Duration::from_secs(n))),
            _ => Err(format!(
                "timeout must be a positive number of seconds, not '{v}'"
            )),
        },
    }
}

/// `tcp:[::1]:80`: the colons of a bracketed address escaped, as `tcp:\:\:1:80` has them.
fn escape_brackets(s: &str) -> String {
    if let Some(open) = s.find(":[")
        && let Some(len) = s[open..].find(']')
    {
        let inside = &s[open + 2..open + len];
        return format!(
            "{}:{}{}",
            &s[..open],
            inside.replace(':', "\\:"),
            &s[open + len + 1..]
        );
    }
    s.to_string()
}

fn parse_client(s: &str) -> Result<ClientEndpoint, String> {
    let (kind, args) = crate::endpoint::split_arguments(&escape_brackets(s))?;
    match kind.as_str() {
        "tcp" | "ssl" => {
            let ssl = kind == "ssl";
            let params: &[&str] = if ssl {
                &[
                    "host",
                    "port",
                    "timeout",
                    "caCertsDir",
                    "hostname",
                    "certKey",
                    "privateKey",
                ]
            } else {
                &["host", "port", "timeout"]
            };
            let b = crate::endpoint::bind_arguments(params, args)?;
            let host = match b.get("host") {
                Some(h) if !h.is_empty() => Host::parse(h),
                _ => return Err(format!("a host is required: {kind}:HOST:PORT")),
            };
            let port =
                match b.get("port") {
                    Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                        format!("port must be an integer from 1 to 65535, not '{p}'")
                    })?,
                    None => return Err(format!("a port is required: {kind}:HOST:PORT")),
                };
            let tls = if ssl {
                let path = |n: &str| b.get(n).filter(|v| !v.is_empty()).map(PathBuf::from);
                let hostname = match b.get("hostname") {
                    Some(n) if !n.is_empty() => n.to_string(),
                    _ => match &host {
                        Host::Ip(ip) => ip.to_string(),
                        Host::Name(n) => n.clone(),
                    },
                };
                let spec = crate::tls::ClientTlsSpec {
                    hostname,
                    ca_certs_dir: path("caCertsDir"),
                    cert_key: path("certKey"),
                    private_key: path("privateKey"),
                };
                spec.check()?;
                Some(spec)
            } else {
                None
            };
            Ok(ClientEndpoint {
                dest: Destination::Tcp { host, port },
                timeout: parse_timeout(b.get("timeout"))?,
                tls,
            })
        }
        "unix" => {
            let b = crate::endpoint::bind_arguments(&["path", "timeout", "checkPID"], args)?;
            let path = match b.get("path") {
                Some(p) if !p.is_empty() => PathBuf::from(p),
                _ => return Err("a socket path is required: unix:PATH".into()),
            };
            if b.get("checkPID").is_some_and(|v| v != "0") {
                return Err("checkPID is not supported".into());
            }
            Ok(ClientEndpoint {
                dest: Destination::Unix(path),
                timeout: parse_timeout(b.get("timeout"))?,
                tls: None,
            })
        }
        other => Err(format!(
            "unknown client endpoint type '{other}' (expected tcp, ssl or unix)"
        )),
    }
}

impl FromStr for ClientEndpoint {
    type Err = ClientEndpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_client(s).map_err(|problem| ClientEndpointError {
            input: s.to_string(),
            problem,
        })
    }
}

/// Resolves a host name and port to addresses, in the order to try them. It runs on a worker
/// thread and may block. Replace the system's with [`crate::Handle::set_resolver`] (Twisted's
/// `installResolver`), for instance in tests.
pub type Resolver = Arc<dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync>;

/// The system resolver: `getaddrinfo`, so `/etc/hosts` and nsswitch apply.
pub fn system_resolver() -> Resolver {
    Arc::new(|host, port| Ok((host, port).to_socket_addrs()?.collect()))
}

/// Why an outgoing connection could not be made.
#[derive(Debug)]
pub enum ConnectError {
    /// The host name did not resolve, or resolved to no address.
    NameNotResolved {
        /// The name as given.
        host: String,
        /// The resolver's error.
        error: io::Error,
    },
    /// No connection within the connect timeout (resolving included).
    TimedOut(Duration),
    /// Every address failed; the last error (`ConnectionRefused`, `HostUnreachable`,
    /// `NetworkUnreachable`, ...).
    Io(io::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::NameNotResolved { host, error } => {
                write!(f, "cannot resolve '{host}': {error}")
            }
            // To the millisecond: a timeout that is what was left of a deadline (socks's, after
            // a lookup) says 6 s, not 5.999985468 s.
            ConnectError::TimedOut(d) => {
                let secs = (d.as_secs_f64() * 1000.0).round() / 1000.0;
                write!(f, "no connection within {secs} s")
            }
            ConnectError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

impl From<ConnectError> for io::Error {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Io(e) => e,
            ConnectError::TimedOut(_) => io::Error::new(io::ErrorKind::TimedOut, e.to_string()),
            ConnectError::NameNotResolved { .. } => {
                io::Error::new(io::ErrorKind::NotFound, e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> ClientEndpoint {
        s.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_connect_timeout_is_told_to_the_millisecond() {
        let told = |d| ConnectError::TimedOut(d).to_string();
        assert_eq!(
            told(Duration::from_nanos(5_999_985_468)),
            "no connection within 6 s"
        );
        assert_eq!(
            told(Duration::from_millis(2500)),
            "no connection within 2.5 s"
        );
        assert_eq!(told(Duration::from_secs(30)), "no connection within 30 s");
    }

    #[test]
    fn tcp_and_unix_strings() {
        assert_eq!(
            ep("tcp:example.com:80").dest,
            Destination::tcp("example.com", 80)
        );
        assert_eq!(
            ep("tcp:host=127.0.0.1:port=6665:timeout=5"),
            ClientEndpoint {
                dest: Destination::Tcp {
                    host: Host::Ip([127, 0, 0, 1].into()),
                    port: 6665
                },
                timeout: Some(Duration::from_secs(5)),
                tls: None,
            }
        );
        let v6 = Destination::Tcp {
            host: Host::Ip("::1".parse().unwrap()),
            port: 80,
        };
        assert_eq!(ep(r"tcp:\:\:1:80").dest, v6);
        assert_eq!(ep("tcp:[::1]:80").dest, v6);
        assert_eq!(v6.to_string(), "[::1]:80");
        assert_eq!(
            ep("unix:/run/app.sock").dest,
            Destination::Unix("/run/app.sock".into())
        );
        assert_eq!(
            ep("TCP:h:1").dest,
            Destination::tcp("h", 1),
            "types ignore case"
        );
        for s in ["tcp:h:1:timeout=3", r"tcp:\:\:1:80", r"unix:/a\:b"] {
            assert_eq!(ep(&ep(s).to_string()), ep(s), "{s} round-trips");
        }
    }

    #[test]
    fn ssl_strings() {
        let e = ep("ssl:example.com:443");
        assert_eq!(e.dest, Destination::tcp("example.com", 443));
        let tls = e.tls.clone().unwrap();
        assert_eq!(
            tls.hostname, "example.com",
            "the host is verified by default"
        );
        assert_eq!(tls.ca_certs_dir, None);
        let e = ep(
            "ssl:host=127.0.0.1:port=8443:timeout=4:caCertsDir=/ca:hostname=www.test:\
                    certKey=c.pem:privateKey=k.pem",
        );
        assert_eq!(e.dest, Destination::tcp("127.0.0.1", 8443));
        assert_eq!(e.timeout, Some(Duration::from_secs(4)));
        assert_eq!(
            e.tls,
            Some(crate::tls::ClientTlsSpec {
                hostname: "www.test".into(),
                ca_certs_dir: Some("/ca".into()),
                cert_key: Some("c.pem".into()),
                private_key: Some("k.pem".into()),
            })
        );
        assert_eq!(ep("ssl:[::1]:443").tls.unwrap().hostname, "::1");
        for s in [
            "ssl:h:443",
            "ssl:h:443:timeout=3:caCertsDir=/a\\:b:hostname=x",
            r"ssl:\:\:1:443:certKey=c.pem",
        ] {
            assert_eq!(ep(&ep(s).to_string()), ep(s), "{s} round-trips");
        }
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        for (s, why) in [
            ("tcp:h", "a port is required"),
            ("tcp::80", "a host is required"),
            ("tcp:h:0", "from 1 to 65535"),
            ("tcp:h:http", "from 1 to 65535"),
            ("tcp:h:80:timeout=0", "positive number"),
            ("tcp:h:80:bindAddress=x", "unknown argument 'bindAddress'"),
            ("unix:", "socket path is required"),
            ("ssl:h", "a port is required: ssl:HOST:PORT"),
            ("ssl:h:443:privateKey=k.pem", "privateKey needs certKey"),
            ("ssl:h:443:hostname=a b", "not a valid DNS name"),
            ("ssl:h:443:bindAddress=x", "unknown argument 'bindAddress'"),
            ("tls:h:443", "unknown client endpoint type 'tls'"),
            ("udp:h:53", "unknown client endpoint type 'udp'"),
            ("6665", "unknown client endpoint type"),
        ] {
            let e = s.parse::<ClientEndpoint>().unwrap_err().to_string();
            assert!(e.contains(why), "{s}: {e}");
            assert!(
                e.starts_with(&format!("invalid client endpoint '{s}'")),
                "{e}"
            );
        }
    }
}
