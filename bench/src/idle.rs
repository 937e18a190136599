//! `idle` mode: opens CONNS connections that never send, prints `connected=N`, holds them
//! (so the server's memory per connection can be sampled), then closes them.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use crate::Failure;
use crate::args::IdleArgs;
use crate::connect::{ConnectOpts, connect_all, ignore_eintr};
use crate::sys;

const STDIN: Token = Token(usize::MAX);

pub fn run(a: &IdleArgs) -> Result<(), Failure> {
    let limit = sys::raise_nofile(a.conns as u64 + 16).map_err(Failure::Run)?;
    let mut poll = Poll::new().map_err(|e| Failure::Run(format!("epoll_create: {e}")))?;
    let started = Instant::now();
    let opts = ConnectOpts {
        batch: a.inflight,
        tries: 5,
        attempt_timeout: Duration::from_secs(10),
        timeout: a.connect_timeout,
        nodelay: false,
    };
    let mut streams = connect_all(&mut poll, a.addr, a.conns, &opts).map_err(Failure::Run)?;
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
    let mut unexpected_data = 0usize;
    let mut byte = [0u8; 1];
    for (s, early) in streams.iter_mut().zip(&closed_early) {
        match s.read(&mut byte) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && !early => {}
            Ok(n) if n > 0 => unexpected_data += 1,
            _ => dropped += 1,
        }
    }
    println!("dropped={dropped} unexpected_data={unexpected_data} held_secs={held:.3}");
    let _ = io::stdout().flush();
    drop(streams);
    Ok(())
}
