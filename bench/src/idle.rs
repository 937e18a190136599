//! `idle` mode: opens CONNS connections that never send, prints `connected=N`, holds them
//! (so the server's memory per connection can be sampled), then closes them. With
//! `--tls-cert`, each connection first completes a TLS 1.3 handshake (and then sends
//! nothing more).

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::Failure;
use crate::args::IdleArgs;
use crate::connect::{ConnectOpts, connect_all, ignore_eintr};
use crate::sys;
use crate::tls;

const STDIN: Token = Token(usize::MAX);

pub fn run(a: &IdleArgs) -> Result<(), Failure> {
    let limit = sys::raise_nofile(a.conns as u64 + 16).map_err(Failure::Run)?;
    let mut poll = Poll::new().map_err(|e| Failure::Run(format!("epoll_create: {e}")))?;
    let started = Instant::now();
    // Per connection: whether the server already sent something after the TLS handshake.
    let mut sent = vec![false; a.conns];
    let mut streams = match &a.tls_cert {
        Some(cert) => {
            let config = tls::client_config(cert, a.verify).map_err(Failure::Run)?;
            tls::establish_all(
                &mut poll,
                a.addr,
                a.conns,
                a.inflight,
                &config,
                a.connect_timeout,
            )
            .map(|all| {
                let (streams, got): (Vec<_>, Vec<_>) = all.into_iter().unzip();
                sent = got;
                streams
            })
        }
        None => {
            let opts = ConnectOpts {
                batch: a.inflight,
                tries: 5,
                attempt_timeout: Duration::from_secs(10),
                timeout: a.connect_timeout,
                nodelay: false,
            };
            connect_all(&mut poll, a.addr, a.conns, &opts)
        }
    }
    .map_err(Failure::Run)?;
    println!(
        "connected={} connect_secs={:.3} nofile={limit}",
        streams.len(),
        started.elapsed().as_secs_f64()
    );
    let _ = io::stdout().flush();

    // A pipe or terminal on stdin ends the hold when it closes; /dev/null and regular
    // files cannot be registered with epoll and are simply not watched.
    let stdin = io::stdin().as_raw_fd();
    let watch_stdin = poll
        .registry()
        .register(&mut SourceFd(&stdin), STDIN, Interest::READABLE)
        .is_ok();

    let held_from = Instant::now();
    let hold_end = held_from + a.hold;
    let mut events = Events::with_capacity(1024);
    let mut closed_early = vec![false; streams.len()];
    loop {
        let now = Instant::now();
        if now >= hold_end || (watch_stdin && sys::stdin_closed()) {
            break;
        }
        // Woken at least every 200 ms to look at stdin, whatever epoll reports.
        let wait = (hold_end - now).min(Duration::from_millis(200));
        poll.poll(&mut events, Some(wait))
            .or_else(|e| ignore_eintr(e, "epoll_wait"))
            .map_err(Failure::Run)?;
        for ev in events.iter() {
            if let Some(flag) = closed_early.get_mut(ev.token().0)
                && (ev.is_read_closed() || ev.is_error())
            {
                *flag = true;
            }
        }
    }
    let held = held_from.elapsed().as_secs_f64();

    // Events can be missed during the connect phase, so ask every socket directly.
    let mut dropped = 0usize;
    let mut with_data = 0usize;
    for ((s, early), before) in streams.iter_mut().zip(&closed_early).zip(&sent) {
        match drain(s) {
            Ok(got) if !early => with_data += usize::from(got || *before),
            _ => dropped += 1,
        }
    }
    // Over TLS the server may send session tickets after the handshake (a sign that it
    // finished it); over plain TCP an echo server has nothing to send.
    let data_name = if a.tls_cert.is_some() {
        "sent_after_handshake"
    } else {
        "unexpected_data"
    };
    println!("dropped={dropped} {data_name}={with_data} held_secs={held:.3}");
    let _ = io::stdout().flush();
    drop(streams);
    Ok(())
}

/// What a held socket has seen, read without blocking: `Ok(true)` if the peer sent bytes
/// (after a TLS handshake: session tickets), `Err` if it closed or failed.
fn drain(s: &mut mio::net::TcpStream) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    let mut got = false;
    for _ in 0..64 {
        match s.read(&mut buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => got = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(got),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
