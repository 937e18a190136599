//! Hand-rolled `--key value` parsing for the subcommands, with range checks so every
//! run is bounded in connections and time, and a loopback-only target address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::Failure;

pub struct EchoArgs {
    pub addr: SocketAddr,
    pub conns: usize,
    pub size: usize,
    pub secs: Duration,
    pub warmup: Duration,
}

pub struct IdleArgs {
    pub addr: SocketAddr,
    pub conns: usize,
    pub hold: Duration,
    pub inflight: usize,
    pub connect_timeout: Duration,
    /// With a certificate, every connection completes a TLS handshake first.
    pub tls_cert: Option<PathBuf>,
    pub verify: bool,
}

pub struct SessionsArgs {
    pub addr: SocketAddr,
    pub conns: usize,
    /// Bytes each session sends and expects back (0: none, the program just closes).
    pub send: usize,
    /// The session ends with the server's close (after our half-close), or with ours once
    /// the echo is back.
    pub server_closes: bool,
    pub secs: Duration,
    pub warmup: Duration,
}

pub struct HandshakeArgs {
    pub addr: SocketAddr,
    pub conns: usize,
    pub secs: Duration,
    pub warmup: Duration,
    pub path: String,
    pub cert: PathBuf,
    pub verify: bool,
    /// Resume with the session tickets earlier connections were given (a returning client).
    pub resume: bool,
}

pub struct BulkArgs {
    pub addr: SocketAddr,
    pub secs: Duration,
    pub warmup: Duration,
}

pub struct ReplyArgs {
    pub size: usize,
}

pub struct CycleArgs {
    pub addr: SocketAddr,
    pub conns: usize,
    pub size: usize,
    pub secs: Duration,
    pub warmup: Duration,
}

/// The `--key value` pairs of one command line, each used at most once.
pub(crate) struct Opts<'a> {
    pairs: Vec<(&'a str, &'a str)>,
}

impl<'a> Opts<'a> {
    pub(crate) fn parse(args: &'a [String], known: &[&str]) -> Result<Self, Failure> {
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (key, inline) = match arg.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (arg.as_str(), None),
            };
            let Some(name) = key.strip_prefix("--").filter(|n| known.contains(n)) else {
                return Err(Failure::Usage(format!("unknown option {arg:?}")));
            };
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .map(String::as_str)
                    .ok_or_else(|| Failure::Usage(format!("--{name} needs a value")))?,
            };
            if pairs.iter().any(|(k, _)| *k == name) {
                return Err(Failure::Usage(format!("--{name} given twice")));
            }
            pairs.push((name, value));
        }
        Ok(Opts { pairs })
    }

    pub(crate) fn raw(&self, name: &str) -> Option<&'a str> {
        self.pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    /// A number within `lo..=hi`, or `default` when absent.
    pub(crate) fn num<T>(&self, name: &str, default: T, lo: T, hi: T) -> Result<T, Failure>
    where
        T: FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        let Some(raw) = self.raw(name) else {
            return Ok(default);
        };
        let v: T = raw
            .parse()
            .map_err(|_| Failure::Usage(format!("--{name}: not a number: {raw:?}")))?;
        if v < lo || v > hi {
            return Err(Failure::Usage(format!(
                "--{name}: {v} is outside {lo}..={hi}"
            )));
        }
        Ok(v)
    }

    /// `--verify-signatures 0|1`: whether the TLS client checks the handshake signature.
    fn verify(&self) -> Result<bool, Failure> {
        Ok(self.num("verify-signatures", 0u8, 0, 1)? == 1)
    }

    pub(crate) fn secs(
        &self,
        name: &str,
        default: f64,
        lo: f64,
        hi: f64,
    ) -> Result<Duration, Failure> {
        Ok(Duration::from_secs_f64(self.num(name, default, lo, hi)?))
    }

    /// The required target; only loopback, since this tool must never load another host.
    pub(crate) fn addr(&self) -> Result<SocketAddr, Failure> {
        let raw = self
            .raw("addr")
            .ok_or_else(|| Failure::Usage("--addr 127.0.0.1:PORT is required".into()))?;
        let addr: SocketAddr = raw
            .parse()
            .map_err(|_| Failure::Usage(format!("--addr: not IP:PORT: {raw:?}")))?;
        if !addr.ip().is_loopback() || addr.port() == 0 {
            return Err(Failure::Usage(format!(
                "--addr {addr}: only a loopback address with a port is allowed"
            )));
        }
        Ok(addr)
    }
}

impl EchoArgs {
    pub fn parse(args: &[String]) -> Result<Self, Failure> {
        let o = Opts::parse(args, &["addr", "conns", "size", "secs", "warmup"])?;
        Ok(EchoArgs {
            addr: o.addr()?,
            conns: o.num("conns", 64, 1, 10_000)?,
            size: o.num("size", 64, 1, 1 << 20)?,
            secs: o.secs("secs", 5.0, 0.1, 3600.0)?,
            warmup: o.secs("warmup", 1.0, 0.0, 600.0)?,
        })
    }
}

impl BulkArgs {
    pub fn parse(args: &[String]) -> Result<Self, Failure> {
        let o = Opts::parse(args, &["addr", "secs", "warmup"])?;
        Ok(BulkArgs {
            addr: o.addr()?,
            secs: o.secs("secs", 5.0, 0.1, 3600.0)?,
            warmup: o.secs("warmup", 1.0, 0.0, 600.0)?,
        })
    }
}

impl ReplyArgs {
    pub fn parse(args: &[String]) -> Result<Self, Failure> {
        let o = Opts::parse(args, &["size"])?;
        Ok(ReplyArgs {
            size: o.num("size", 64, 1, 1 << 20)?,
        })
    }
}

impl CycleArgs {
    pub fn parse(args: &[String]) -> Result<Self, Failure> {
        let o = Opts::parse(args, &["addr", "conns", "size", "secs", "warmup"])?;
        Ok(CycleArgs {
            addr: o.addr()?,
            conns: o.num("conns", 64, 1, 10_000)?,
            size: o.num("size", 64, 1, 1 << 20)?,
            secs: o.secs("secs", 5.0, 0.1, 3600.0)?,
            warmup: o.secs("warmup", 1.0, 0.0, 600.0)?,
        })
    }
}

impl IdleArgs {
    pub fn parse(args: &[String]) -> Result<Self, Failure> {
        let o = Opts::parse(
            args,
            &[
                "addr",
                "conns",
                "hold-secs",
                "inflight",
                "connect-timeout-secs",
                "tls-cert",
                "verify-signatures",
            ],
        )?;
        Ok(IdleArgs {
            addr: o.addr()?,
            conns: o.num("conns", 10_000, 1, 60_000)?,
            hold: o.secs("hold-secs", 60.0, 0.0, 3600.0)?,
            inflight: o.num("inflight", 32, 1, 4096)?,
            connect_timeout: o.secs("connect-timeout-secs", 120.0, 1.0, 600.0)?,
            tls_cert: o.raw("tls-cert").map(PathBuf::from),
            verify: o.verify()?,
        })
    }
}

impl SessionsArgs {
    pub fn parse(args: &[String]) -> Result<Self, Failure> {
        let o = Opts::parse(args, &["addr", "conns", "send", "close", "secs", "warmup"])?;
        let server_closes = match o.raw("close").unwrap_or("server") {
            "server" => true,
            "client" => false,
            other => {
                return Err(Failure::Usage(format!(
                    "--close {other:?}: server or client"
                )));
            }
        };
        Ok(SessionsArgs {
            addr: o.addr()?,
            conns: o.num("conns", 32, 1, 1000)?,
            send: o.num("send", 0, 0, 1 << 20)?,
            server_closes,
            secs: o.secs("secs", 5.0, 0.1, 3600.0)?,
            warmup: o.secs("warmup", 1.0, 0.0, 600.0)?,
        })
    }
}

impl HandshakeArgs {
    pub fn parse(args: &[String]) -> Result<Self, Failure> {
        let o = Opts::parse(
            args,
            &[
                "addr",
                "conns",
                "secs",
                "warmup",
                "path",
                "cert",
                "verify-signatures",
                "resume",
            ],
        )?;
        let path = o.raw("path").unwrap_or("/");
        if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(Failure::Usage(format!(
                "--path {path:?}: an absolute path without spaces or control characters"
            )));
        }
        Ok(HandshakeArgs {
            addr: o.addr()?,
            conns: o.num("conns", 32, 1, 1000)?,
            secs: o.secs("secs", 5.0, 0.1, 3600.0)?,
            warmup: o.secs("warmup", 1.0, 0.0, 600.0)?,
            path: path.to_string(),
            cert: o
                .raw("cert")
                .map(PathBuf::from)
                .ok_or_else(|| Failure::Usage("--cert CERT.pem is required".into()))?,
            verify: o.verify()?,
            resume: o.num("resume", 0u8, 0, 1)? == 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_echo_with_defaults_and_inline_values() {
        let a = EchoArgs::parse(&argv("--addr 127.0.0.1:7 --size=4096")).unwrap_or_else(|_| {
            panic!("should parse");
        });
        assert_eq!(a.addr.port(), 7);
        assert_eq!((a.conns, a.size), (64, 4096));
        assert_eq!(a.secs, Duration::from_secs(5));
    }

    #[test]
    fn parses_handshake_and_refuses_a_bad_path_or_no_certificate() {
        let a = HandshakeArgs::parse(&argv("--addr 127.0.0.1:7 --cert c.pem --path /1k.bin"))
            .unwrap_or_else(|_| panic!("should parse"));
        assert_eq!((a.conns, a.path.as_str(), a.verify), (32, "/1k.bin", false));
        for bad in [
            "--addr 127.0.0.1:7 --path /x",
            "--addr 127.0.0.1:7 --cert c.pem --path x",
            "--addr 127.0.0.1:7 --cert c.pem --verify-signatures 2",
        ] {
            assert!(HandshakeArgs::parse(&argv(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_non_loopback_unknown_and_out_of_range() {
        for bad in [
            "--addr 10.0.0.1:7",
            "--addr 127.0.0.1:0",
            "--addr 127.0.0.1:7 --bogus 1",
            "--addr 127.0.0.1:7 --conns 0",
            "--addr 127.0.0.1:7 --secs",
            "--addr 127.0.0.1:7 --size 1 --size 2",
        ] {
            assert!(EchoArgs::parse(&argv(bad)).is_err(), "{bad}");
        }
    }
}
