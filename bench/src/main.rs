//! `twistrs-bench`: the load generator behind bench/echo.sh (`echo` for throughput and
//! latency, `idle` for memory per held connection), bench/tls.sh (`handshake` for full
//! TLS handshakes per second, `idle --tls-cert` for memory per idle TLS connection) and
//! bench/inetd.sh (`sessions`: a new connection per exchange, for per-connection
//! programs) and bench/relay.sh (`sink`, `bulk` and `cycle` through relays, and with
//! `--socks` the same and `idle` through a SOCKS proxy); run by hand, see bench/README.md.

mod args;
mod connect;
mod echo;
mod floor;
mod handshake;
mod hist;
mod idle;
mod relay;
mod sessions;
mod socks;
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
                     [--resume 0|1]
  twistrs-bench sessions --addr 127.0.0.1:PORT [--conns 32] [--send 0]
                     [--close server|client] [--secs 5] [--warmup 1]
  twistrs-bench floor
  twistrs-bench sink
  twistrs-bench reply [--size 64]
  twistrs-bench bulk --addr 127.0.0.1:PORT [--secs 5] [--warmup 1]
  twistrs-bench cycle --addr 127.0.0.1:PORT [--conns 64] [--size 64] [--secs 5] [--warmup 1]
  twistrs-bench bulk|cycle|idle --addr PROXY --socks 5|4 --target BACKEND [their options]
                     [--inflight 32]

echo: CONNS connections, each with one SIZE-byte message in flight; prints
  msgs_per_sec=.. p50_ms=.. p99_ms=.. errors=.. (and more key=value fields).
idle: opens CONNS idle connections, prints connected=N, holds them for HOLD-SECS
  or until stdin (a pipe or terminal) closes, then prints dropped=K and closes them.
  With --tls-cert, each connection first completes a full TLS 1.3 handshake with a
  server whose certificate is CERT.pem (no probe then: any server will do).
handshake: CONNS at a time, a new connection per request: TCP connect, full TLS 1.3
  handshake (no resumption; with --resume 1, each resumes with a ticket an earlier
  connection was given, and only the first ones are full), GET PATH with Connection: close, the whole 200 response
  and the server's close; prints handshakes_per_sec=.. p50_ms=.. p99_ms=.. errors=..
  full=.. resumed=.. and the protocol, cipher suite and key exchange used.
sessions: CONNS at a time, a new connection per session: connect, send SEND bytes
  and read them back (an echo; none with --send 0), then half-close and wait for the
  server's close (--close server), or close (--close client); prints
  sessions_per_sec=.. p50_ms=.. p99_ms=.. errors=.. done=..
floor: a minimal echo server on mio (the floor for CPU per message), on 127.0.0.1,
  prints listening PORT and runs until killed.
sink: on 127.0.0.1, prints listening PORT; reads each connection to its EOF, answers
  with the count (8 bytes, big-endian) and closes; runs until killed.
bulk: one connection writing 256 KiB chunks (to a sink, through a relay); prints
  mb_per_sec=.. bytes=.. secs=.. total=.. verified=yes|no|MISMATCH (the sink's count
  came back, or the relay closed without a half-close, or it differs).
reply: on 127.0.0.1, prints listening PORT; reads SIZE bytes of each connection, sends
  them back and closes first (so TIME_WAIT stays on its port); runs until killed.
cycle: CONNS clients, each looping connect, SIZE bytes out, the echo and the close back,
  close (to a reply server, through a relay); prints conns_per_sec=.. completed=.. p50_ms=.. p99_ms=..
  errors=..
--socks 5|4 --target BACKEND: bulk, cycle and idle through a SOCKS proxy at PROXY, each
  connection first asking for BACKEND (a sink, a reply server, a floor server) with a
  SOCKS5 or SOCKS4 CONNECT, no login; same output. idle then sets up CONNS relayed pairs,
  INFLIGHT at a time, each checked with one byte echoed by the floor server.";

/// A failure to report: usage errors exit 2, everything else 1.
pub enum Failure {
    Usage(String),
    Run(String),
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let result = match argv.first().map(String::as_str) {
        Some("echo") => args::EchoArgs::parse(&argv[1..]).and_then(|a| echo::run(&a)),
        // Through a SOCKS proxy (`--socks`), the loads of relay.sh are the socks ones.
        Some("bulk" | "cycle" | "idle") if argv.iter().any(|a| a.starts_with("--socks")) => {
            let a = socks::SocksArgs::parse(&argv[1..]);
            match argv[0].as_str() {
                "bulk" => a.and_then(|a| socks::bulk(&a)),
                "cycle" => a.and_then(|a| socks::rr(&a)),
                _ => a.and_then(|a| socks::idle(&a)),
            }
        }
        Some("idle") => args::IdleArgs::parse(&argv[1..]).and_then(|a| idle::run(&a)),
        Some("handshake") => {
            args::HandshakeArgs::parse(&argv[1..]).and_then(|a| handshake::run(&a))
        }
        Some("sessions") => args::SessionsArgs::parse(&argv[1..]).and_then(|a| sessions::run(&a)),
        Some("floor") => floor::run(),
        Some("sink") => relay::sink(),
        Some("reply") => args::ReplyArgs::parse(&argv[1..]).and_then(|a| relay::reply(a.size)),
        Some("bulk") => args::BulkArgs::parse(&argv[1..]).and_then(|a| relay::bulk(&a)),
        Some("cycle") => args::CycleArgs::parse(&argv[1..]).and_then(|a| relay::cycle(&a)),
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
