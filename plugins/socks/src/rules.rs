//! Destination rules: `--allow NETWORK[:PORT]` and `--deny NETWORK[:PORT]`, checked in
//! command-line order, the first match decides, and a destination no rule matches is allowed.
//!
//! A rule is checked against the address the proxy would connect to (a host name is resolved
//! first), with IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) taken as the IPv4 address they
//! are, so `--deny 10.0.0.0/8` cannot be passed by writing the address the other way.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// One `--allow` or `--deny`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub allow: bool,
    net: IpAddr,
    prefix: u8,
    /// An inclusive port range; `None` for every port.
    ports: Option<(u16, u16)>,
}

impl Rule {
    /// Parses `NETWORK[/PREFIX][:PORT[-PORT]]`; an IPv6 network with a port is written in
    /// brackets: `[2001:db8::/32]:443`.
    pub fn parse(allow: bool, s: &str) -> Result<Rule, String> {
        let bad = |why: &str| format!("'{s}': {why}");
        let (net, ports) = if let Some(rest) = s.strip_prefix('[') {
            let (net, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("a '[' without its ']'"))?;
            match after {
                "" => (net, None),
                p => (
                    net,
                    Some(
                        p.strip_prefix(':')
                            .ok_or_else(|| bad("expected ':PORT' after ']'"))?,
                    ),
                ),
            }
        } else if s.matches(':').count() == 1 {
            let (net, p) = s.split_once(':').unwrap_or((s, ""));
            (net, Some(p))
        } else {
            (s, None)
        };
        let (addr, prefix) = match net.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (net, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| bad("expected an IPv4 or IPv6 network such as 10.0.0.0/8 or fd00::/8"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad(&format!("the prefix length must be 0 to {max}")))?,
        };
        // An IPv4-mapped network is the IPv4 network, as destinations are.
        let (net, prefix) = match net.to_canonical() {
            IpAddr::V4(v4) if net.is_ipv6() => {
                let p = prefix
                    .checked_sub(96)
                    .ok_or_else(|| bad("an IPv4-mapped network needs a prefix of at least 96"))?;
                (IpAddr::V4(v4), p)
            }
            _ => (net, prefix),
        };
        let ports = match ports {
            None => None,
            Some(p) => {
                let port = |x: &str| {
                    x.parse::<u16>()
                        .map_err(|_| bad("expected a port (1-65535) or a range such as 1-1023"))
                };
                let (lo, hi) = match p.split_once('-') {
                    Some((lo, hi)) => (port(lo)?, port(hi)?),
                    None => (port(p)?, port(p)?),
                };
                if lo > hi {
                    return Err(bad("the port range is backwards"));
                }
                Some((lo, hi))
            }
        };
        if mask(net, prefix) != net {
            return Err(bad(&format!(
                "host bits are set: the network is {}/{prefix}",
                mask(net, prefix)
            )));
        }
        Ok(Rule {
            allow,
            net,
            prefix,
            ports,
        })
    }

    /// True if `a` (already canonical) is in this rule's network and ports.
    fn matches(&self, ip: IpAddr, port: u16) -> bool {
        ip.is_ipv4() == self.net.is_ipv4()
            && mask(ip, self.prefix) == self.net
            && self.ports.is_none_or(|(lo, hi)| (lo..=hi).contains(&port))
    }
}

/// `ip` with all but the first `prefix` bits cleared.
fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((bits & m).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((bits & m).into())
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.allow { "--allow" } else { "--deny" };
        let net = match self.net {
            IpAddr::V6(_) if self.ports.is_some() => format!("[{}/{}]", self.net, self.prefix),
            _ => format!("{}/{}", self.net, self.prefix),
        };
        match self.ports {
            None => write!(f, "{kind} {net}"),
            Some((lo, hi)) if lo == hi => write!(f, "{kind} {net}:{lo}"),
            Some((lo, hi)) => write!(f, "{kind} {net}:{lo}-{hi}"),
        }
    }
}

/// The rules in command-line order.
#[derive(Clone, Debug, Default)]
pub struct Rules(pub Vec<Rule>);

impl Rules {
    /// The rule that decides for `a`, if any; `None` means allowed by default.
    pub fn decide(&self, a: SocketAddr) -> Option<&Rule> {
        let ip = a.ip().to_canonical();
        self.0.iter().find(|r| r.matches(ip, a.port()))
    }

    /// True if `a` may be reached.
    pub fn allows(&self, a: SocketAddr) -> bool {
        self.decide(a).is_none_or(|r| r.allow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(bool, &str)]) -> Rules {
        Rules(
            list.iter()
                .map(|(a, s)| Rule::parse(*a, s).unwrap())
                .collect(),
        )
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_match_wins_and_the_default_allows() {
        let r = rules(&[
            (true, "10.1.0.0/16"),
            (false, "10.0.0.0/8"),
            (false, "127.0.0.1/32:25"),
            (false, "127.0.0.0/8:1-1023"),
            (false, "[::1]:22"),
            (false, "fd00::/8"),
        ]);
        assert!(r.allows(sa("10.1.2.3:80")), "allowed before the deny");
        assert!(!r.allows(sa("10.2.0.1:80")));
        assert!(!r.allows(sa("127.0.0.1:25")));
        assert!(!r.allows(sa("127.0.0.1:80")), "the range");
        assert!(r.allows(sa("127.0.0.1:8080")));
        assert!(!r.allows(sa("[::1]:22")));
        assert!(r.allows(sa("[::1]:80")));
        assert!(!r.allows(sa("[fd12::1]:80")));
        assert!(r.allows(sa("192.0.2.1:25")), "no rule: allowed");
        // An IPv4-mapped address is the IPv4 address.
        assert!(!r.allows(sa("[::ffff:10.9.9.9]:80")));
        assert!(!r.allows(sa("[::ffff:127.0.0.1]:25")));
        assert_eq!(
            r.decide(sa("10.2.0.1:80")).map(|r| r.to_string()),
            Some("--deny 10.0.0.0/8".into())
        );
        let all = rules(&[(false, "0.0.0.0/0"), (false, "::/0")]);
        assert!(!all.allows(sa("1.2.3.4:1")) && !all.allows(sa("[2001:db8::1]:1")));
    }

    #[test]
    fn the_forms_and_their_errors() {
        let shown = |s: &str| Rule::parse(false, s).map(|r| r.to_string());
        assert_eq!(shown("10.0.0.0/8"), Ok("--deny 10.0.0.0/8".into()));
        assert_eq!(shown("127.0.0.1:25"), Ok("--deny 127.0.0.1/32:25".into()));
        assert_eq!(shown("::1"), Ok("--deny ::1/128".into()));
        assert_eq!(
            shown("[fd00::/8]:1-1023"),
            Ok("--deny [fd00::/8]:1-1023".into())
        );
        assert_eq!(shown("::ffff:10.0.0.0/104"), Ok("--deny 10.0.0.0/8".into()));
        assert_eq!(shown("0.0.0.0/0:53"), Ok("--deny 0.0.0.0/0:53".into()));
        for bad in [
            "10.0.0.0/33",
            "10.0.0.1/8",
            "example.com",
            "10.0.0.0/8:x",
            "10.0.0.0/8:9-1",
            "[::1",
            "[::1]25",
            "::ffff:10.0.0.0/8",
            "",
        ] {
            assert!(Rule::parse(true, bad).is_err(), "{bad}");
        }
        assert!(
            Rule::parse(true, "10.0.0.1/8")
                .unwrap_err()
                .contains("the network is 10.0.0.0/8")
        );
    }
}
