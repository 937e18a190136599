//! `sessions` mode: CONNS sessions at a time, each a new TCP connection that sends SEND
//! bytes, reads them back (or, with `--send 0`, nothing), then half-closes and waits for
//! the server's close (`--close server`), or closes (`--close client`); then the next one.
//! For inetd's per-connection programs: `/bin/true` (nothing either way) and `/bin/cat` (an
//! echo). Prints sessions per second on one line.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::Failure;
use crate::args::SessionsArgs;
use crate::connect::ignore_eintr;
use crate::hist::Hist;
use crate::sys;

/// A session that has not ended by then is an error.
const SESSION_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REPORTED: u64 = 5;

/// Where a session is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connecting, then sending.
    Sending,
    /// All sent; reading the echo.
    Reading,
    /// Echo read and our side shut: waiting for the server's close.
    Closing,
}

struct Session {
    sock: TcpStream,
    phase: Phase,
    sent: usize,
    got: usize,
    started: Instant,
}

struct Stats {
    done: u64,
    errors: u64,
    hist: Hist,
}

/// What one session sends: a recognisable pattern, checked as it comes back.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

pub fn run(a: &SessionsArgs) -> Result<(), Failure> {
    sys::raise_nofile(a.conns as u64 + 16).map_err(Failure::Run)?;
    let mut poll = Poll::new().map_err(|e| Failure::Run(format!("epoll_create: {e}")))?;
    let data = payload(a.send);
    let mut st = Stats {
        done: 0,
        errors: 0,
        hist: Hist::new(),
    };
    let mut slots: Vec<Option<Session>> = (0..a.conns).map(|_| None).collect();
    for (i, slot) in slots.iter_mut().enumerate() {
        open(&poll, a, i, slot, &mut st);
    }
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let measure_from = start + a.warmup;
    let mut measuring = false;
    let (mut t0, mut cpu0) = (start, sys::cpu_time());
    let mut end = measure_from + a.secs;
    let mut last_sweep = start;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if !measuring && now >= measure_from {
            measuring = true;
            st.done = 0;
            st.hist.clear();
            (t0, cpu0) = (now, sys::cpu_time());
            end = now + a.secs;
        }
        if now >= end {
            break;
        }
        let next = if measuring { end } else { measure_from };
        let wait = (next - now).min(Duration::from_millis(100));
        poll.poll(&mut events, Some(wait))
            .or_else(|e| ignore_eintr(e, "epoll_wait"))
            .map_err(Failure::Run)?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            let Some(s) = slot.as_mut() else { continue };
            match drive(s, &data, &mut buf, a.server_closes) {
                Ok(false) => {}
                Ok(true) => {
                    finish(
                        &poll,
                        slot,
                        Ok(()),
                        measuring && Instant::now() < end,
                        &mut st,
                    );
                    open(&poll, a, i, slot, &mut st);
                }
                Err(e) => {
                    finish(&poll, slot, Err(e), false, &mut st);
                    open(&poll, a, i, slot, &mut st);
                }
            }
        }
        let now = Instant::now();
        if now - last_sweep >= Duration::from_millis(100) {
            last_sweep = now;
            for (i, slot) in slots.iter_mut().enumerate() {
                match slot {
                    Some(s) if now - s.started > SESSION_TIMEOUT => {
                        let e = format!(
                            "no close within {SESSION_TIMEOUT:?} (sent {}, got {})",
                            s.sent, s.got
                        );
                        finish(&poll, slot, Err(e), false, &mut st);
                        open(&poll, a, i, slot, &mut st);
                    }
                    Some(_) => {}
                    None => open(&poll, a, i, slot, &mut st),
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (sys::cpu_time() - cpu0).as_secs_f64();
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "sessions_per_sec={:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} errors={} done={} \
         bytes_per_session={} secs={:.3} conns={} client_cpu={:.2}",
        st.done as f64 / secs,
        ms(st.hist.quantile(0.50)),
        ms(st.hist.quantile(0.99)),
        ms(st.hist.max()),
        st.errors,
        st.done,
        a.send,
        secs,
        a.conns,
        cpu / secs,
    );
    let _ = io::stdout().flush();
    Ok(())
}

/// Moves a session on; `Ok(true)` once the whole echo is back and the server has closed
/// (or, unless `server_closes`, as soon as the echo is back).
fn drive(
    s: &mut Session,
    data: &[u8],
    buf: &mut [u8],
    server_closes: bool,
) -> Result<bool, String> {
    if s.phase == Phase::Sending {
        if let Some(e) = s.sock.take_error().map_err(|e| e.to_string())? {
            return Err(format!("connect: {e}"));
        }
        while s.sent < data.len() {
            match s.sock.write(&data[s.sent..]) {
                Ok(n) => s.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                // Not connected yet: the writable event will come.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write after {} bytes: {e}", s.sent)),
            }
        }
        if data.is_empty() && s.sock.peer_addr().is_err() {
            return Ok(false);
        }
        s.phase = Phase::Reading;
    }
    loop {
        if s.phase == Phase::Reading && s.got == data.len() {
            if !server_closes {
                return Ok(true);
            }
            s.sock
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("shutdown: {e}"))?;
            s.phase = Phase::Closing;
        }
        match s.sock.read(buf) {
            Ok(0) if s.phase == Phase::Closing => return Ok(true),
            Ok(0) => return Err(format!("closed after {} of {} bytes", s.got, data.len())),
            Ok(n) => {
                let want = data.get(s.got..s.got + n);
                if want != Some(&buf[..n]) {
                    return Err(format!(
                        "{} bytes back where {} were sent, or changed",
                        s.got + n,
                        data.len()
                    ));
                }
                s.got += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read after {} bytes: {e}", s.got)),
        }
    }
}

/// Starts a new session in `slot`; a failure to start is counted and retried by the sweep.
fn open(poll: &Poll, a: &SessionsArgs, i: usize, slot: &mut Option<Session>, st: &mut Stats) {
    let started = TcpStream::connect(a.addr).and_then(|mut sock| {
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)?;
        Ok(sock)
    });
    match started {
        Ok(sock) => {
            *slot = Some(Session {
                sock,
                phase: Phase::Sending,
                sent: 0,
                got: 0,
                started: Instant::now(),
            })
        }
        Err(e) => report(st, &format!("connect: {e}")),
    }
}

/// Closes the session of `slot`, counting it when `count` (inside the measured window).
fn finish(
    poll: &Poll,
    slot: &mut Option<Session>,
    result: Result<(), String>,
    count: bool,
    st: &mut Stats,
) {
    let Some(mut s) = slot.take() else { return };
    let _ = poll.registry().deregister(&mut s.sock);
    match result {
        Ok(()) if count => {
            st.done += 1;
            st.hist.record(s.started.elapsed().as_nanos() as u64);
        }
        Ok(()) => {}
        Err(e) => report(st, &e),
    }
}

fn report(st: &mut Stats, e: &str) {
    st.errors += 1;
    if st.errors <= MAX_REPORTED {
        eprintln!("twistrs-bench: session error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_a_recognisable_pattern() {
        let p = payload(30);
        assert_eq!(&p[..3], b"abc");
        assert_eq!(p[26], b'a');
        assert!(payload(0).is_empty());
    }
}
