//! inetd.conf(5), sans-IO: `service socktype proto wait|nowait[.max] user[.group] program
//! [argv0 args...]` per line.
//!
//! As inetd(8) and twistd read it: blank lines and `#` comments (a word starting with `#`
//! ends the line, as Twisted strips comments; a `#` inside a word is kept); the service is a
//! name from services(5) for the protocol, or a port number; the protocol is `tcp`, `tcp6`,
//! `udp` or `udp6` (`tcp4`, `udp4` as OpenBSD's aliases), with OpenBSD's `,sndbuf=SIZE` and
//! `,rcvbuf=SIZE` (bytes, or with `k`/`m`); `user.group` or `user:group`; the
//! arguments start with argv[0]; `internal` names a service served without a program. From
//! OpenBSD's inetd: an address before the service (`127.0.0.1:echo`, `[::1]:echo`, `*:echo`),
//! and a line holding only an address and a colon sets the address of the lines after it.
//! RPC services, other socket types and UNIX sockets are skipped with a warning, as twistd
//! skips RPC; anything else that does not read is an error with the line number.

use std::fmt;
use std::net::IpAddr;

use crate::services::Services;

/// A line's socket type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SockType {
    Stream,
    Dgram,
}

/// A line's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Tcp6,
    Udp,
    Udp6,
}

impl Proto {
    /// The services(5) protocol: `tcp` or `udp`.
    pub fn base(self) -> &'static str {
        match self {
            Proto::Tcp | Proto::Tcp6 => "tcp",
            Proto::Udp | Proto::Udp6 => "udp",
        }
    }

    pub fn v6(self) -> bool {
        matches!(self, Proto::Tcp6 | Proto::Udp6)
    }

    pub fn socktype(self) -> SockType {
        match self {
            Proto::Tcp | Proto::Tcp6 => SockType::Stream,
            Proto::Udp | Proto::Udp6 => SockType::Dgram,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Tcp6 => "tcp6",
            Proto::Udp => "udp",
            Proto::Udp6 => "udp6",
        })
    }
}

/// What serves a line's connections or datagrams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Program {
    /// One of the services inetd serves itself (echo, discard, chargen, daytime, time).
    Internal,
    /// A program and its argv (argv[0] first, as the file gives it).
    External { path: String, argv: Vec<String> },
}

/// One service line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConf {
    /// 1-based, for messages.
    pub line: usize,
    /// The service as written: a name (`echo`) or a port number.
    pub name: String,
    /// The address the line names (its own, or an address line's before it); `None`: every
    /// interface (or `--interface`).
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub proto: Proto,
    pub wait: bool,
    /// `nowait.max`: children started per minute at most.
    pub max: Option<u32>,
    pub user: String,
    pub group: Option<String>,
    pub program: Program,
    /// `,sndbuf=` and `,rcvbuf=` after the protocol: the socket's buffer sizes.
    pub bufs: Buffers,
}

/// SO_SNDBUF and SO_RCVBUF for a socket, when the line sets them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Buffers {
    pub send: Option<usize>,
    pub recv: Option<usize>,
}

/// `,sndbuf=64k,rcvbuf=1m` after a protocol.
fn buffers(opts: &[&str]) -> Result<Buffers, String> {
    let mut b = Buffers::default();
    for o in opts {
        let (key, v) = o.split_once('=').unwrap_or((o, ""));
        let (digits, unit) = match v.char_indices().last() {
            Some((i, 'k' | 'K')) => (&v[..i], 1024),
            Some((i, 'm' | 'M')) => (&v[..i], 1024 * 1024),
            _ => (v, 1),
        };
        let size = digits
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .filter(|n| (1..=1 << 30).contains(n))
            .ok_or_else(|| format!("'{o}': expected sndbuf=SIZE or rcvbuf=SIZE (bytes, k or m)"))?;
        match key {
            "sndbuf" => b.send = Some(size),
            "rcvbuf" => b.recv = Some(size),
            _ => return Err(format!("'{o}': expected sndbuf=SIZE or rcvbuf=SIZE")),
        }
    }
    Ok(b)
}

impl ServiceConf {
    /// `echo/tcp`, `127.0.0.1:echo/tcp`: how the log names the line.
    pub fn label(&self) -> String {
        match self.addr {
            None => format!("{}/{}", self.name, self.proto),
            Some(IpAddr::V6(a)) => format!("[{a}]:{}/{}", self.name, self.proto),
            Some(a) => format!("{a}:{}/{}", self.name, self.proto),
        }
    }
}

/// A line that could not be read: its number and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfError {
    pub line: usize,
    pub msg: String,
}

/// The services of a file, and the lines skipped (number, why).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conf {
    pub services: Vec<ServiceConf>,
    pub skipped: Vec<(usize, String)>,
}

/// Reads a whole file. `internal` says which names `internal` may serve.
pub fn parse(
    text: &str,
    services: &Services,
    internal: &dyn Fn(&str) -> bool,
) -> Result<Conf, ConfError> {
    let mut conf = Conf::default();
    let mut default_addr: Option<IpAddr> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let words: Vec<&str> = raw
            .split_whitespace()
            .take_while(|w| !w.starts_with('#'))
            .collect();
        if words.is_empty() {
            continue;
        }
        let err = |msg: String| ConfError { line, msg };
        // `ADDR:` alone: the address of the lines that follow (`*:` is every interface).
        if let [only] = words.as_slice()
            && let Some(a) = only.strip_suffix(':')
        {
            default_addr = address(a).map_err(err)?;
            continue;
        }
        match parse_line(line, &words, default_addr, services, internal) {
            Ok(Parsed::Service(s)) => conf.services.push(s),
            Ok(Parsed::Skipped(why)) => conf.skipped.push((line, why)),
            Err(msg) => return Err(err(msg)),
        }
    }
    Ok(conf)
}

enum Parsed {
    Service(ServiceConf),
    Skipped(String),
}

/// An address before a service: `*`, `1.2.3.4`, `[::1]` or `::1`.
fn address(a: &str) -> Result<Option<IpAddr>, String> {
    if a == "*" || a.is_empty() {
        return Ok(None);
    }
    let bare = a
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(a);
    bare.parse::<IpAddr>()
        .map(Some)
        .map_err(|_| format!("'{a}' is not an IP address"))
}

fn parse_line(
    line: usize,
    w: &[&str],
    default_addr: Option<IpAddr>,
    services: &Services,
    internal: &dyn Fn(&str) -> bool,
) -> Result<Parsed, String> {
    if w.len() < 6 {
        return Err(format!(
            "expected 'service socktype protocol wait|nowait user program [arguments]', \
             found {} field{}",
            w.len(),
            if w.len() == 1 { "" } else { "s" }
        ));
    }
    let proto_field = w[2].to_ascii_lowercase();
    let mut parts = proto_field.split(',');
    let proto_name = parts.next().unwrap_or("");
    let proto_opts: Vec<&str> = parts.collect();
    let proto = match proto_name {
        "tcp" | "tcp4" => Proto::Tcp,
        "tcp6" => Proto::Tcp6,
        "udp" | "udp4" => Proto::Udp,
        "udp6" => Proto::Udp6,
        p if p.starts_with("rpc/") => {
            return Ok(Parsed::Skipped(format!(
                "RPC services are not supported ('{p}'); line skipped"
            )));
        }
        p @ ("unix" | "tcp46" | "udp46") => {
            return Ok(Parsed::Skipped(format!(
                "protocol '{p}' is not supported; line skipped"
            )));
        }
        p => {
            return Err(format!(
                "unknown protocol '{p}' (expected tcp, tcp6, udp or udp6)"
            ));
        }
    };
    let socktype = match w[1] {
        "stream" => SockType::Stream,
        "dgram" => SockType::Dgram,
        t @ ("raw" | "rdm" | "seqpacket") => {
            return Ok(Parsed::Skipped(format!(
                "socket type '{t}' is not supported; line skipped"
            )));
        }
        t => {
            return Err(format!(
                "unknown socket type '{t}' (expected stream or dgram)"
            ));
        }
    };
    let bufs = buffers(&proto_opts)?;
    if socktype != proto.socktype() {
        return Err(format!(
            "socket type '{}' does not go with protocol '{proto}' (stream is tcp, dgram is udp)",
            w[1]
        ));
    }
    // `ADDR:service`: the last colon separates, so `::1:echo` works too.
    let (addr, name) = match w[0].rsplit_once(':') {
        Some((a, n)) => (address(a)?, n),
        None => (default_addr, w[0]),
    };
    if let Some(a) = addr
        && a.is_ipv6() != proto.v6()
    {
        return Err(format!(
            "address {a} is not an {} address, as '{proto}' needs",
            if proto.v6() { "IPv6" } else { "IPv4" }
        ));
    }
    if name.is_empty() {
        return Err("no service name".into());
    }
    if name.starts_with("tcpmux/") {
        return Ok(Parsed::Skipped(
            "tcpmux services are not supported; line skipped".into(),
        ));
    }
    let port = if name.bytes().all(|b| b.is_ascii_digit()) {
        match name.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(format!("port {name} is not from 1 to 65535")),
        }
    } else {
        services.port(name, proto.base()).ok_or_else(|| {
            format!(
                "unknown service '{name}' for {} (not in the services file)",
                proto.base()
            )
        })?
    };
    let (wait, max) = {
        let (mode, max) = match w[3].split_once('.') {
            Some((m, n)) => match n.parse::<u32>() {
                Ok(v) if v > 0 => (m, Some(v)),
                _ => {
                    return Err(format!(
                        "'{}': the maximum after the dot must be a number from 1 on",
                        w[3]
                    ));
                }
            },
            None => (w[3], None),
        };
        match mode {
            "wait" => (true, max),
            "nowait" => (false, max),
            _ => {
                return Err(format!(
                    "'{}' is neither wait nor nowait (optionally .MAX)",
                    w[3]
                ));
            }
        }
    };
    let (user, group) = match w[4].rsplit_once(':').or_else(|| w[4].rsplit_once('.')) {
        Some((u, g)) if !u.is_empty() && !g.is_empty() => (u, Some(g.to_string())),
        Some(_) => {
            return Err(format!(
                "'{}': expected user, user.group or user:group",
                w[4]
            ));
        }
        None => (w[4], None),
    };
    let program = if w[5] == "internal" {
        if !internal(name) {
            return Err(format!(
                "'{name}' is not an internal service (echo, discard, chargen, daytime, time)"
            ));
        }
        Program::Internal
    } else {
        if socktype == SockType::Dgram && !wait {
            return Err(
                "a datagram service with a program must be 'wait': the program gets the socket"
                    .into(),
            );
        }
        let argv: Vec<String> = if w.len() > 6 {
            w[6..].iter().map(|s| s.to_string()).collect()
        } else {
            vec![w[5].to_string()]
        };
        Program::External {
            path: w[5].to_string(),
            argv,
        }
    };
    Ok(Parsed::Service(ServiceConf {
        line,
        name: name.to_string(),
        addr,
        port,
        proto,
        wait,
        max,
        user: user.to_string(),
        group,
        program,
        bufs,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn services() -> Services {
        Services::parse(
            "echo 7/tcp\necho 7/udp\ndaytime 13/tcp\nftp 21/tcp\ntftp 69/udp\n\
             chargen 19/tcp ttytst source\n",
        )
    }

    fn internal(n: &str) -> bool {
        ["echo", "discard", "chargen", "daytime", "time"].contains(&n)
    }

    fn parse_ok(text: &str) -> Conf {
        parse(text, &services(), &internal).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn parse_err(text: &str) -> ConfError {
        parse(text, &services(), &internal).expect_err("refused")
    }

    #[test]
    fn a_debian_style_file() {
        let c = parse_ok(
            "# /etc/inetd.conf: see inetd(8) for further informations.\n\
             \n\
             #:INTERNAL: Internal services\n\
             #discard\t\tstream\ttcp\tnowait\troot\tinternal\n\
             echo\tstream\ttcp\tnowait\troot\tinternal\n\
             echo\tdgram\tudp\twait\troot\tinternal\n\
             \t  \n\
             ftp\tstream\ttcp\tnowait.40\tftp:ftp\t/usr/sbin/in.ftpd\tin.ftpd -l # logs\n\
             tftp\tdgram\tudp\twait\tnobody.nogroup\t/usr/sbin/in.tftpd in.tftpd -s /srv\n\
             4242 stream tcp6 nowait nobody /bin/cat\n",
        );
        assert!(c.skipped.is_empty());
        let s = &c.services;
        assert_eq!(s.len(), 5);
        assert_eq!(
            (
                s[0].line,
                s[0].name.as_str(),
                s[0].port,
                s[0].proto,
                s[0].wait
            ),
            (5, "echo", 7, Proto::Tcp, false)
        );
        assert_eq!(s[0].program, Program::Internal);
        assert_eq!((s[1].proto, s[1].wait), (Proto::Udp, true));
        assert_eq!(s[2].max, Some(40));
        assert_eq!(
            (s[2].user.as_str(), s[2].group.as_deref()),
            ("ftp", Some("ftp"))
        );
        assert_eq!(
            s[2].program,
            Program::External {
                path: "/usr/sbin/in.ftpd".into(),
                argv: vec!["in.ftpd".into(), "-l".into()]
            },
            "argv[0] comes from the file; a word starting with # ends the line"
        );
        assert_eq!(
            (s[3].user.as_str(), s[3].group.as_deref(), s[3].port),
            ("nobody", Some("nogroup"), 69)
        );
        assert_eq!(
            (s[4].port, s[4].proto, s[4].addr),
            (4242, Proto::Tcp6, None)
        );
        assert_eq!(
            s[4].program,
            Program::External {
                path: "/bin/cat".into(),
                argv: vec!["/bin/cat".into()]
            },
            "no arguments: argv[0] is the program"
        );
        assert_eq!(s[2].label(), "ftp/tcp");
    }

    #[test]
    fn aliases_and_a_hash_inside_a_word() {
        let c = parse_ok("ttytst stream tcp nowait root /bin/echo echo a#b\n");
        assert_eq!(c.services[0].port, 19);
        assert_eq!(
            c.services[0].program,
            Program::External {
                path: "/bin/echo".into(),
                argv: vec!["echo".into(), "a#b".into()]
            }
        );
    }

    #[test]
    fn addresses_before_services_and_on_lines_of_their_own() {
        let c = parse_ok(
            "127.0.0.1:echo stream tcp nowait root internal\n\
             [::1]:echo stream tcp6 nowait root internal\n\
             ::1:7001 stream tcp6 nowait root /bin/cat cat\n\
             10.1.2.3:\n\
             daytime stream tcp nowait root internal\n\
             *:7002 stream tcp nowait root /bin/cat cat\n\
             *:\n\
             7003 stream tcp nowait root /bin/cat cat\n",
        );
        let a: Vec<Option<IpAddr>> = c.services.iter().map(|s| s.addr).collect();
        assert_eq!(
            a,
            [
                Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                Some(IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3))),
                None,
                None,
            ]
        );
        assert_eq!(c.services[0].label(), "127.0.0.1:echo/tcp");
        assert_eq!(c.services[1].label(), "[::1]:echo/tcp6");
        let e = parse_err("::1:echo stream tcp nowait root internal\n");
        assert!(e.msg.contains("not an IPv4 address"), "{e:?}");
        let e = parse_err("\n\nnowhere: \n");
        assert_eq!(e.line, 3);
        assert!(e.msg.contains("'nowhere' is not an IP address"), "{e:?}");
    }

    #[test]
    fn unsupported_lines_are_skipped_with_the_reason() {
        let c = parse_ok(
            "rstatd/1-3 dgram rpc/udp wait root /usr/sbin/rpc.rstatd rpc.rstatd\n\
             echo raw tcp nowait root internal\n\
             tcpmux/+hello stream tcp nowait root /bin/echo echo hi\n\
             /run/x.sock stream unix nowait root /bin/cat cat\n\
             echo stream tcp nowait root internal\n",
        );
        assert_eq!(c.services.len(), 1);
        let lines: Vec<usize> = c.skipped.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, [1, 2, 3, 4]);
        assert!(c.skipped[0].1.contains("RPC"), "{:?}", c.skipped);
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        for (text, line, want) in [
            ("echo stream tcp nowait root\n", 1, "found 5 fields"),
            (
                "\necho stream sctp nowait root internal\n",
                2,
                "unknown protocol 'sctp'",
            ),
            (
                "echo pipe tcp nowait root internal\n",
                1,
                "unknown socket type 'pipe'",
            ),
            ("echo dgram tcp wait root internal\n", 1, "does not go with"),
            (
                "nosuch stream tcp nowait root /bin/cat\n",
                1,
                "unknown service 'nosuch' for tcp",
            ),
            (
                "ftp dgram udp wait root /bin/cat\n",
                1,
                "unknown service 'ftp' for udp",
            ),
            ("0 stream tcp nowait root /bin/cat\n", 1, "port 0"),
            ("70000 stream tcp nowait root /bin/cat\n", 1, "port 70000"),
            (
                "echo stream tcp sometimes root internal\n",
                1,
                "neither wait nor nowait",
            ),
            (
                "echo stream tcp nowait.0 root internal\n",
                1,
                "number from 1",
            ),
            (
                "echo stream tcp nowait.x root internal\n",
                1,
                "number from 1",
            ),
            ("echo stream tcp nowait root. internal\n", 1, "user.group"),
            (
                "ftp stream tcp nowait root internal\n",
                1,
                "'ftp' is not an internal",
            ),
            (
                "7001 stream tcp nowait root internal\n",
                1,
                "'7001' is not an internal",
            ),
            ("tftp dgram udp nowait root /bin/cat\n", 1, "must be 'wait'"),
        ] {
            let e = parse_err(text);
            assert_eq!(e.line, line, "{text:?}: {e:?}");
            assert!(e.msg.contains(want), "{text:?}: {e:?}");
        }
    }

    #[test]
    fn buffer_sizes_after_the_protocol() {
        let c = parse_ok(
            "echo stream tcp,sndbuf=64k,rcvbuf=1m nowait root internal\n\
             echo dgram udp,rcvbuf=4096 wait root internal\n",
        );
        assert_eq!(
            c.services[0].bufs,
            Buffers {
                send: Some(65536),
                recv: Some(1 << 20)
            }
        );
        assert_eq!(c.services[1].bufs.recv, Some(4096));
        for bad in [
            "tcp,sndbuf=",
            "tcp,sndbuf=x",
            "tcp,sndbuf=0",
            "tcp,window=5",
        ] {
            let e = parse_err(&format!("echo stream {bad} nowait root internal\n"));
            assert!(e.msg.contains("expected sndbuf=SIZE"), "{bad}: {e:?}");
        }
    }

    #[test]
    fn max_goes_with_wait_too_and_groups_take_either_separator() {
        let c = parse_ok(
            "tftp dgram udp wait.10 nobody:nogroup /usr/sbin/in.tftpd in.tftpd\n\
             7001 stream tcp nowait first.last.grp /bin/cat cat\n",
        );
        assert_eq!((c.services[0].wait, c.services[0].max), (true, Some(10)));
        assert_eq!(
            (c.services[1].user.as_str(), c.services[1].group.as_deref()),
            ("first.last", Some("grp")),
            "the last dot separates"
        );
    }
}
