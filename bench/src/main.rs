//! `twistrs-bench`: the load generator behind bench/echo.sh (`echo` for throughput and
//! latency, `idle` for memory per held connection) and bench/tls.sh (`handshake` for full
//! TLS handshakes per second, `idle --tls-cert` for memory per idle TLS connection) and
//! bench/socks.sh (`relay-bulk`, `relay-rr`, `relay-idle` through a SOCKS proxy or a port
//! forwarder, with `source`, `reply` and `floor` as backends); run by hand, see
//! bench/README.md.

mod args;
mod connect;
mod echo;
mod floor;
mod handshake;
mod hist;
mod idle;
mod relay;
mod sys;
mod tls;

use std::process::ExitCode;

const USAGE: &str = "\
usage:
  twistrs-bench echo --addr 127.0.0.1:PORT [--conns 64] [--size 64] [--secs 5] [--warmup 1]
  twistrs-bench idle --addr 127.0.0.1:PORT [--conns 10000] [--hold-secs 60]
                     [--inflight 32] [--connect-timeout-secs 120]
                     [--tls-cert CERT.pem [--verify-signatures 0|1]]
  twistrs-bench handshake --addr 127.0.0.1:PORT --cert CERT.pem [--path /]
                     [--conns 32] [--secs 5] [--warmup 1] [--verify-signatures 0|1]
  twistrs-bench floor
  twistrs-bench source
  twistrs-bench reply
  twistrs-bench relay-bulk --addr RELAY [--socks none|4|5 --target BACKEND] [--secs 5] [--warmup 1]
  twistrs-bench relay-rr --addr RELAY [--socks none|4|5 --target BACKEND] [--conns 64]
                     [--size 64] [--secs 5] [--warmup 1]
  twistrs-bench relay-idle --addr RELAY [--socks none|4|5 --target BACKEND] [--conns 5000]
                     [--inflight 32] [--hold-secs 600] [--connect-timeout-secs 120]

echo: CONNS connections, each with one SIZE-byte message in flight; prints
  msgs_per_sec=.. p50_ms=.. p99_ms=.. errors=.. (and more key=value fields).
idle: opens CONNS idle connections, prints connected=N, holds them for HOLD-SECS
  or until stdin (a pipe or terminal) closes, then prints dropped=K and closes them.
  With --tls-cert, each connection first completes a full TLS 1.3 handshake with a
  server whose certificate is CERT.pem (no probe then: any server will do).
handshake: CONNS at a time, a new connection per request: TCP connect, full TLS 1.3
  handshake (no resumption), GET PATH with Connection: close, the whole 200 response
  and the server's close; prints handshakes_per_sec=.. p50_ms=.. p99_ms=.. errors=..
  full=.. resumed=.. and the protocol, cipher suite and key exchange used.
floor: a minimal echo server on mio (the floor for CPU per message), on 127.0.0.1,
  prints listening PORT and runs until killed.
source: on 127.0.0.1, writes a pattern to every connection as fast as it is taken;
  prints listening PORT and runs until killed (the backend of relay-bulk).
reply: on 127.0.0.1, answers each connection's first message with itself, then closes;
  prints listening PORT and runs until killed (the backend of relay-rr).
relay-*: through a relay at RELAY (a SOCKS4 or SOCKS5 CONNECT to BACKEND, no login, or
  plain TCP to a port forwarder): relay-bulk reads one relay from `source` and prints
  mb_per_sec=..; relay-rr runs CONNS relays at a time, each connect, handshake, SIZE
  bytes answered by `reply` up to its close, and prints relays_per_sec=.. p50_ms=.. p99_ms=..
  errors=..; relay-idle sets up CONNS relayed pairs to `floor` (each checked with one
  echoed byte), prints connected=N, holds them until stdin closes, prints dropped=K.";

/// A failure to report: usage errors exit 2, everything else 1.
pub enum Failure {
    Usage(String),
    Run(String),
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.first().map(String::as_str) {
        Some("echo") => args::EchoArgs::parse(&argv[1..]).and_then(|a| echo::run(&a)),
        Some("idle") => args::IdleArgs::parse(&argv[1..]).and_then(|a| idle::run(&a)),
        Some("handshake") => {
            args::HandshakeArgs::parse(&argv[1..]).and_then(|a| handshake::run(&a))
        }
        Some("floor") => floor::run(),
        Some("source") => relay::source(),
        Some("reply") => relay::reply(),
        Some("relay-bulk") => relay::RelayArgs::parse(&argv[1..]).and_then(|a| relay::bulk(&a)),
        Some("relay-rr") => relay::RelayArgs::parse(&argv[1..]).and_then(|a| relay::rr(&a)),
        Some("relay-idle") => relay::RelayArgs::parse(&argv[1..]).and_then(|a| relay::idle(&a)),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(Failure::Usage(format!("unknown subcommand {other:?}"))),
        None => Err(Failure::Usage("missing subcommand".into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("twistrs-bench: {msg}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Run(msg)) => {
            eprintln!("twistrs-bench: {msg}");
            ExitCode::from(1)
        }
    }
}
