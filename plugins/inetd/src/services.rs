//! services(5): service names to port numbers, as `/etc/services` lists them (sans-IO).
//!
//! Twisted's `ServicesConf` reads the file itself rather than calling getservbyname(3); so
//! does this, so a test (or `--services`) can give another file.

use std::collections::HashMap;

/// Port numbers by (name or alias, protocol).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Services {
    ports: HashMap<(String, String), u16>,
}

impl Services {
    /// Reads `name port/protocol [aliases...] [# comment]` lines. Lines that do not have that
    /// shape are ignored, as the C library ignores them; the first entry for a name wins.
    pub fn parse(text: &str) -> Self {
        let mut ports = HashMap::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(name), Some(pp)) = (words.next(), words.next()) else {
                continue;
            };
            let Some((port, proto)) = pp.split_once('/') else {
                continue;
            };
            // Port 0 would bind wherever the kernel likes: not a service's port.
            let Ok(port @ 1..) = port.parse::<u16>() else {
                continue;
            };
            for n in std::iter::once(name).chain(words) {
                ports
                    .entry((n.to_string(), proto.to_ascii_lowercase()))
                    .or_insert(port);
            }
        }
        Services { ports }
    }

    /// The port of `name` for `proto` (`tcp` or `udp`).
    pub fn port(&self, name: &str, proto: &str) -> Option<u16> {
        self.ports
            .get(&(name.to_string(), proto.to_string()))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_aliases_and_protocols() {
        let s = Services::parse(
            "# Network services\n\
             echo\t\t7/tcp\n\
             echo\t\t7/udp\n\
             ftp\t\t21/tcp\n\
             smtp\t\t25/tcp\t\tmail\t# with an alias\n\
             broken\n\
             bad\t\tx/tcp\n\
             noproto\t\t99\n\
             zero\t\t0/tcp\n\
             echo\t\t1007/tcp\n",
        );
        assert_eq!(s.port("echo", "tcp"), Some(7));
        assert_eq!(s.port("echo", "udp"), Some(7));
        assert_eq!(s.port("ftp", "udp"), None);
        assert_eq!(s.port("mail", "tcp"), Some(25));
        assert_eq!(s.port("bad", "tcp"), None);
        assert_eq!(s.port("noproto", "tcp"), None);
        assert_eq!(s.port("zero", "tcp"), None, "port 0 is no service's");
        assert_eq!(s.port("with", "tcp"), None, "comments are not aliases");
    }
}
