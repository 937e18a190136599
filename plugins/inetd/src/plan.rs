//! From the lines of inetd.conf to the sockets to open: each line's addresses (its own, or
//! `--interface`'s of its family, or every interface), its user and group looked up, the
//! internal services left out under `--nointernal`, and two lines on one socket refused.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use twistrs_core::endpoint::DEFAULT_BACKLOG;
use twistrs_core::files::read_config_string;
use twistrs_core::{Credentials, Endpoint};

use crate::conf::{self, Program, Proto, ServiceConf, SockType};
use crate::services::Services;

/// How a socket is served; a change of mode on reload means another socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// By twistrs itself, with the wire protocols of this service name.
    Internal(&'static str),
    /// A program per connection (stream `nowait`).
    NoWait,
    /// A program handed the socket itself (`wait`).
    Wait,
}

/// What identifies a socket across a reload: the same key keeps the socket open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub proto: Proto,
    pub addr: SocketAddr,
    pub mode: Mode,
    /// Set when the socket is made: other sizes take another socket.
    pub bufs: conf::Buffers,
}

/// One socket to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub conf: ServiceConf,
    pub key: Key,
    /// The user and group the program runs as; `None` when they are ours already.
    pub creds: Option<Credentials>,
}

impl Socket {
    /// The endpoint that names the socket: in the "starting on" line and for a restart's
    /// successor (`tcp:7`, `tcp6:7:interface=\:\:1`, `udp:7:interface=127.0.0.1`).
    pub fn endpoint(&self) -> Endpoint {
        let ip = self.key.addr.ip();
        let interface = if ip.is_unspecified() && !(self.key.proto == Proto::Udp6) {
            None
        } else {
            Some(ip.into())
        };
        let port = self.key.addr.port();
        match self.key.proto.socktype() {
            SockType::Stream => Endpoint::Tcp {
                port,
                interface,
                backlog: DEFAULT_BACKLOG,
                v6: self.key.proto.v6(),
                tls: None,
            },
            SockType::Dgram => Endpoint::Udp { port, interface },
        }
    }

    /// How the log names it: the line's label, with the address when `--interface` gave it.
    pub fn label(&self) -> String {
        if self.conf.addr.is_some() || self.key.addr.ip().is_unspecified() {
            self.conf.label()
        } else {
            let ip = self.key.addr.ip();
            let ip = if ip.is_ipv6() {
                format!("[{ip}]")
            } else {
                ip.to_string()
            };
            format!("{ip}:{}", self.conf.label())
        }
    }
}

/// The command line's part in the plan.
#[derive(Clone, Debug)]
pub struct Options {
    pub file: PathBuf,
    pub services_file: PathBuf,
    /// `-i`: leave the internal services out.
    pub nointernal: bool,
    /// `--interface`: the addresses lines without one of their own bind to.
    pub interfaces: Vec<IpAddr>,
}

/// A file that cannot be served: `FILE:LINE: why` (LINE absent for the file as a whole).
pub fn describe(file: &Path, line: Option<usize>, msg: &str) -> String {
    match line {
        Some(l) => format!("{}:{l}: {msg}", file.display()),
        None => format!("{}: {msg}", file.display()),
    }
}

/// The sockets of a file, and warnings (lines skipped), each message naming file and line.
#[derive(Debug, Default)]
pub struct Plan {
    pub sockets: Vec<Socket>,
    pub warnings: Vec<String>,
}

/// inetd.conf or a services file: a line per service, so 16 MiB is far more than any holds.
pub const CONF_MAX: u64 = 16 << 20;

/// Reads the files and makes the plan.
pub fn load(opts: &Options) -> Result<Plan, String> {
    let text = read_config_string(&opts.file, CONF_MAX)
        .map_err(|e| describe(&opts.file, None, &format!("cannot read: {e}")))?;
    let services = read_config_string(&opts.services_file, CONF_MAX)
        .map(|t| Services::parse(&t))
        .map_err(|e| describe(&opts.services_file, None, &format!("cannot read: {e}")))?;
    let conf = conf::parse(&text, &services, &internal_names(opts))
        .map_err(|e| describe(&opts.file, Some(e.line), &e.msg))?;
    make(opts, conf, &|u, g| resolve_user(u, g))
}

/// The names an `internal` line may carry: the wire services', or any at all under
/// `--nointernal`, which drops those lines unread, as twistd does (`8000 stream tcp nowait
/// root internal` is skipped there, not refused).
fn internal_names(opts: &Options) -> impl Fn(&str) -> bool + '_ {
    move |n| opts.nointernal || twistrs_wire::internal(n).is_some()
}

/// Looks up a line's user and group: the credentials its program runs with (`None`: ours).
pub type Users<'a> = &'a dyn Fn(&str, Option<&str>) -> Result<Option<Credentials>, String>;

/// The plan of parsed lines.
pub fn make(opts: &Options, conf: conf::Conf, users: Users<'_>) -> Result<Plan, String> {
    let mut plan = Plan::default();
    for (line, why) in &conf.skipped {
        plan.warnings.push(describe(&opts.file, Some(*line), why));
    }
    for c in conf.services {
        let mode = match &c.program {
            Program::Internal if opts.nointernal => continue,
            Program::Internal => match twistrs_wire::INTERNAL.iter().find(|n| **n == c.name) {
                Some(n) => Mode::Internal(n),
                None => {
                    return Err(describe(
                        &opts.file,
                        Some(c.line),
                        &format!("'{}' is not an internal service", c.name),
                    ));
                }
            },
            Program::External { .. } if c.wait => Mode::Wait,
            Program::External { .. } => Mode::NoWait,
        };
        let creds = users(&c.user, c.group.as_deref())
            .map_err(|e| describe(&opts.file, Some(c.line), &e))?;
        let addrs: Vec<IpAddr> = match c.addr {
            Some(a) => vec![a],
            None if opts.interfaces.is_empty() => vec![if c.proto.v6() {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            }],
            None => opts
                .interfaces
                .iter()
                .copied()
                .filter(|a| a.is_ipv6() == c.proto.v6())
                .collect(),
        };
        if addrs.is_empty() {
            plan.warnings.push(describe(
                &opts.file,
                Some(c.line),
                &format!(
                    "no --interface is an {} address, as '{}' needs; line skipped",
                    if c.proto.v6() { "IPv6" } else { "IPv4" },
                    c.proto
                ),
            ));
            continue;
        }
        for ip in addrs {
            let addr = SocketAddr::new(ip, c.port);
            if let Some(other) = plan
                .sockets
                .iter()
                .find(|s| s.key.proto.base() == c.proto.base() && s.key.addr == addr)
            {
                return Err(describe(
                    &opts.file,
                    Some(c.line),
                    &format!(
                        "{} port {} on {} is line {}'s already",
                        c.proto.base(),
                        c.port,
                        ip,
                        other.conf.line
                    ),
                ));
            }
            plan.sockets.push(Socket {
                conf: c.clone(),
                key: Key {
                    proto: c.proto,
                    addr,
                    mode,
                    bufs: c.bufs,
                },
                creds: creds.clone(),
            });
        }
    }
    Ok(plan)
}

/// The credentials of a line's `user[.group]`: `None` when they are the ones we run with
/// (nothing to change, and a non-root twistrs can run its own services), as twistd does.
pub fn resolve_user(user: &str, group: Option<&str>) -> Result<Option<Credentials>, String> {
    let c = Credentials::resolve(Some(user), group)?;
    // SAFETY: geteuid and getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid != 0 && c.uid == uid && c.gid == gid {
        return Ok(None);
    }
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(interfaces: &[&str], nointernal: bool) -> Options {
        Options {
            file: "/etc/inetd.conf".into(),
            services_file: "/etc/services".into(),
            nointernal,
            interfaces: interfaces.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn plan(text: &str, o: &Options) -> Result<Plan, String> {
        let services = Services::parse("echo 7/tcp\necho 7/udp\n");
        let conf = conf::parse(text, &services, &internal_names(o))
            .map_err(|e| describe(&o.file, Some(e.line), &e.msg))?;
        make(o, conf, &|u, _| {
            if u == "ghost" {
                Err("no such user: ghost".into())
            } else {
                Ok(None)
            }
        })
    }

    const FILE: &str = "echo stream tcp nowait root internal\n\
                        echo dgram udp wait root internal\n\
                        7001 stream tcp nowait root /bin/cat cat\n\
                        7001 stream tcp6 nowait root /bin/cat cat\n\
                        7002 dgram udp wait root /bin/sh sh -c read\n";

    #[test]
    fn every_interface_by_default_and_modes_from_the_lines() {
        let p = plan(FILE, &opts(&[], false)).unwrap();
        let got: Vec<(String, Mode, String)> = p
            .sockets
            .iter()
            .map(|s| (s.key.addr.to_string(), s.key.mode, s.endpoint().to_string()))
            .collect();
        assert_eq!(
            got,
            [
                ("0.0.0.0:7".into(), Mode::Internal("echo"), "tcp:7".into()),
                ("0.0.0.0:7".into(), Mode::Internal("echo"), "udp:7".into()),
                ("0.0.0.0:7001".into(), Mode::NoWait, "tcp:7001".into()),
                ("[::]:7001".into(), Mode::NoWait, "tcp6:7001".into()),
                ("0.0.0.0:7002".into(), Mode::Wait, "udp:7002".into()),
            ]
        );
    }

    #[test]
    fn interfaces_go_to_the_lines_of_their_family() {
        let p = plan(FILE, &opts(&["127.0.0.1", "127.0.0.2"], false)).unwrap();
        let eps: Vec<String> = p.sockets.iter().map(|s| s.endpoint().to_string()).collect();
        assert_eq!(
            eps,
            [
                "tcp:7:interface=127.0.0.1",
                "tcp:7:interface=127.0.0.2",
                "udp:7:interface=127.0.0.1",
                "udp:7:interface=127.0.0.2",
                "tcp:7001:interface=127.0.0.1",
                "tcp:7001:interface=127.0.0.2",
                "udp:7002:interface=127.0.0.1",
                "udp:7002:interface=127.0.0.2",
            ]
        );
        assert_eq!(p.sockets[1].label(), "127.0.0.2:echo/tcp");
        assert_eq!(p.warnings.len(), 1);
        assert!(
            p.warnings[0].starts_with("/etc/inetd.conf:4: no --interface is an IPv6"),
            "{:?}",
            p.warnings
        );
        let p = plan(FILE, &opts(&["::1"], false)).unwrap();
        assert_eq!(p.sockets.len(), 1);
        assert_eq!(
            p.sockets[0].endpoint().to_string(),
            "tcp6:7001:interface=\\:\\:1"
        );
        assert_eq!(p.warnings.len(), 4);
    }

    #[test]
    fn nointernal_leaves_internal_services_out() {
        let p = plan(FILE, &opts(&[], true)).unwrap();
        assert!(
            p.sockets
                .iter()
                .all(|s| !matches!(s.key.mode, Mode::Internal(_)))
        );
        assert_eq!(p.sockets.len(), 3);
    }

    #[test]
    fn one_socket_per_line_and_users_must_exist() {
        let e = plan(
            "7001 stream tcp nowait root /bin/cat cat\n\
             127.0.0.1:7001 stream tcp nowait root /bin/cat cat\n\
             7001 stream tcp nowait root /bin/true true\n",
            &opts(&["127.0.0.1"], false),
        )
        .unwrap_err();
        assert_eq!(
            e,
            "/etc/inetd.conf:2: tcp port 7001 on 127.0.0.1 is line 1's already"
        );
        // tcp and udp on one port are two sockets; tcp and tcp6 too.
        assert!(plan(FILE, &opts(&[], false)).is_ok());
        let e = plan(
            "\n7001 stream tcp nowait ghost /bin/cat\n",
            &opts(&[], false),
        )
        .unwrap_err();
        assert_eq!(e, "/etc/inetd.conf:2: no such user: ghost");
    }

    #[test]
    fn a_udp6_wildcard_keeps_its_address_in_the_endpoint() {
        let p = plan(
            "7003 dgram udp6 wait root /bin/cat cat\n",
            &opts(&[], false),
        )
        .unwrap();
        assert_eq!(
            p.sockets[0].endpoint().to_string(),
            "udp:7003:interface=\\:\\:"
        );
    }
}
