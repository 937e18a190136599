//! `echo` mode: CONNS connections, each with exactly one SIZE-byte message in flight;
//! checks every echoed byte and prints msgs/s, latency percentiles and errors on one line.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Poll};

use crate::Failure;
use crate::args::EchoArgs;
use crate::connect::{ConnectOpts, connect_all, ignore_eintr};
use crate::hist::Hist;
use crate::sys;

/// Messages start at `seq % OFFSETS` in one random pattern, so consecutive messages differ
/// (a server replaying stale bytes is caught) without building a buffer per message.
const OFFSETS: usize = 251;
/// At most this many errors are described on stderr; all are counted.
const MAX_REPORTED: u64 = 5;

struct Conn {
    stream: Option<TcpStream>,
    seq: usize,
    sent: usize,
    recvd: usize,
    started: Instant,
}

impl Conn {
    fn msg<'a>(&self, pattern: &'a [u8], size: usize) -> &'a [u8] {
        let off = self.seq % OFFSETS;
        &pattern[off..off + size]
    }
}

enum Fault {
    Io(io::Error),
    Eof,
    Mismatch(usize),
    Extra(usize),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Io(e) => write!(f, "{e}"),
            Fault::Eof => f.write_str("server closed the connection"),
            Fault::Mismatch(at) => write!(f, "echoed bytes differ at offset {at}"),
            Fault::Extra(n) => write!(f, "{n} bytes more than sent were echoed"),
        }
    }
}

struct Stats {
    msgs: u64,
    hist: Hist,
    errors: u64,
}

pub fn run(a: &EchoArgs) -> Result<(), Failure> {
    let run_err = |what: &str, e: io::Error| Failure::Run(format!("{what}: {e}"));
    let mut poll = Poll::new().map_err(|e| run_err("epoll_create", e))?;
    sys::raise_nofile(a.conns as u64 + 16).map_err(Failure::Run)?;
    let opts = ConnectOpts {
        batch: 32,
        tries: 5,
        attempt_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
        nodelay: true,
    };
    let streams = connect_all(&mut poll, a.addr, a.conns, &opts).map_err(Failure::Run)?;

    let pattern = random_bytes(a.size + OFFSETS);
    let mut scratch = vec![0u8; 64 * 1024];
    let now = Instant::now();
    let mut conns: Vec<Conn> = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| Conn {
            stream: Some(s),
            seq: i,
            sent: 0,
            recvd: 0,
            started: now,
        })
        .collect();
    let mut st = Stats {
        msgs: 0,
        hist: Hist::new(),
        errors: 0,
    };
    let mut alive = conns.len();
    for c in &mut conns {
        if let Err(e) = write_more(c, &pattern, a.size) {
            close(&poll, c, &mut st, &mut alive, &e);
        }
    }

    let mut events = Events::with_capacity(a.conns.clamp(64, 1024));
    let measure_from = now + a.warmup;
    let mut measuring = false;
    let (mut t0, mut cpu0) = (now, sys::cpu_time());
    let mut end = measure_from + a.secs;
    loop {
        let now = Instant::now();
        if !measuring && now >= measure_from {
            // Warm-up over: forget its messages, and time the window from here.
            measuring = true;
            st.msgs = 0;
            st.hist.clear();
            (t0, cpu0) = (now, sys::cpu_time());
            end = now + a.secs;
        }
        if now >= end || alive == 0 {
            break;
        }
        let next = if measuring { end } else { measure_from };
        let wait = (next - now).min(Duration::from_millis(100));
        poll.poll(&mut events, Some(wait))
            .or_else(|e| ignore_eintr(e, "epoll_wait"))
            .map_err(Failure::Run)?;
        for ev in events.iter() {
            let Some(c) = conns.get_mut(ev.token().0) else {
                continue;
            };
            if c.stream.is_none() {
                continue;
            }
            if ev.is_writable()
                && c.sent < a.size
                && let Err(e) = write_more(c, &pattern, a.size)
            {
                close(&poll, c, &mut st, &mut alive, &e);
                continue;
            }
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                match read_more(c, &pattern, a.size, &mut scratch) {
                    Ok(None) => {}
                    Ok(Some(done_at)) => {
                        if measuring && done_at < end {
                            st.msgs += 1;
                            st.hist.record((done_at - c.started).as_nanos() as u64);
                        }
                        c.seq += 1;
                        c.sent = 0;
                        c.recvd = 0;
                        c.started = done_at;
                        if let Err(e) = write_more(c, &pattern, a.size) {
                            close(&poll, c, &mut st, &mut alive, &e);
                        }
                    }
                    Err(e) => close(&poll, c, &mut st, &mut alive, &e),
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (sys::cpu_time() - cpu0).as_secs_f64();
    if !measuring {
        return Err(Failure::Run(format!(
            "all connections failed during warm-up ({} errors)",
            st.errors
        )));
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "msgs_per_sec={:.0} p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3} errors={} \
         msgs={} secs={:.3} conns={} alive={} size={} client_cpu={:.2}",
        st.msgs as f64 / secs,
        ms(st.hist.quantile(0.50)),
        ms(st.hist.quantile(0.99)),
        ms(st.hist.quantile(0.999)),
        ms(st.hist.max()),
        st.errors,
        st.msgs,
        secs,
        a.conns,
        alive,
        a.size,
        cpu / secs,
    );
    let _ = io::stdout().flush();
    Ok(())
}

/// Sends the rest of the current message, stopping at `WouldBlock` (a writable event
/// resumes it).
fn write_more(c: &mut Conn, pattern: &[u8], size: usize) -> Result<(), Fault> {
    let msg = c.msg(pattern, size);
    let Some(s) = c.stream.as_mut() else {
        return Ok(());
    };
    // Each pass moves at least one byte or stops, so this ends within SIZE passes.
    while c.sent < size {
        match s.write(&msg[c.sent..]) {
            Ok(0) => return Err(Fault::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Fault::Io(e)),
        }
    }
    Ok(())
}

/// Reads and checks echoed bytes; returns the completion time once all SIZE are back.
///
/// It stops right after the last expected byte instead of reading on to `WouldBlock`:
/// nothing more may arrive until the next message is sent, and epoll signals every new
/// arrival, so that saves one failing `read` per message. Stray extra bytes are still
/// caught by the next read.
fn read_more(
    c: &mut Conn,
    pattern: &[u8],
    size: usize,
    scratch: &mut [u8],
) -> Result<Option<Instant>, Fault> {
    let msg = c.msg(pattern, size);
    let Some(s) = c.stream.as_mut() else {
        return Ok(None);
    };
    loop {
        match s.read(scratch) {
            Ok(0) => return Err(Fault::Eof),
            Ok(n) => {
                let want = size - c.recvd;
                if n > want {
                    return Err(Fault::Extra(n - want));
                }
                if scratch[..n] != msg[c.recvd..c.recvd + n] {
                    let at = (0..n)
                        .find(|&k| scratch[k] != msg[c.recvd + k])
                        .unwrap_or(0);
                    return Err(Fault::Mismatch(c.recvd + at));
                }
                c.recvd += n;
                if c.recvd == size {
                    return Ok(Some(Instant::now()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Fault::Io(e)),
        }
    }
}

fn close(poll: &Poll, c: &mut Conn, st: &mut Stats, alive: &mut usize, why: &Fault) {
    if let Some(mut s) = c.stream.take() {
        let _ = poll.registry().deregister(&mut s);
        *alive -= 1;
    }
    st.errors += 1;
    if st.errors <= MAX_REPORTED {
        eprintln!(
            "twistrs-bench: connection error (message {}, {} of {} bytes back): {why}",
            c.seq, c.recvd, c.sent
        );
    }
}

/// Deterministic pseudo-random bytes (xorshift64), so runs are reproducible.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
