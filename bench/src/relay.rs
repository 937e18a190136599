//! The load of bench/relay.sh: `sink` (a backend that counts what it reads), `bulk` (one
//! connection pushing bytes through a relay into a sink) and `cycle` (a new connection per
//! request and response through a relay to an echo backend, CONNS at a time).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::Failure;
use crate::args::{BulkArgs, CycleArgs};
use crate::connect::ignore_eintr;
use crate::hist::Hist;
use crate::sys;

/// `sink`: on 127.0.0.1, prints `listening PORT`; each connection is read to its EOF on a
/// thread of its own, then answered with the byte count (8 bytes, big-endian) and closed.
pub fn sink() -> Result<(), Failure> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| Failure::Run(format!("bind: {e}")))?;
    let port = l
        .local_addr()
        .map_err(|e| Failure::Run(e.to_string()))?
        .port();
    println!("listening {port}");
    let _ = io::stdout().flush();
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            let mut n = 0u64;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => n += k as u64,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
            let _ = s.write_all(&n.to_be_bytes());
        });
    }
    Ok(())
}

/// `bulk`: writes 256 KiB chunks to `addr` for the warm-up, then for SECS counting, then
/// half-closes and waits for the sink's count and EOF: MB/s is what was written in the
/// measured window over the time until the EOF came back (every byte had arrived by then).
/// `verified=yes` if the count came back equal to all that was written, `no` if the relay
/// closed without passing it (no half-close: twistd), `MISMATCH` otherwise.
pub fn bulk(a: &BulkArgs) -> Result<(), Failure> {
    let err = |what: &str, e: io::Error| Failure::Run(format!("{what}: {e}"));
    let mut s = std::net::TcpStream::connect_timeout(&a.addr, Duration::from_secs(10))
        .map_err(|e| err("connect", e))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| err("setsockopt", e))?;
    let mut chunk = vec![0u8; 256 * 1024];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in chunk.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut total = 0u64;
    let warm_end = Instant::now() + a.warmup;
    while Instant::now() < warm_end {
        s.write_all(&chunk).map_err(|e| err("write", e))?;
        total += chunk.len() as u64;
    }
    let t0 = Instant::now();
    let mut bytes = 0u64;
    while t0.elapsed() < a.secs {
        s.write_all(&chunk).map_err(|e| err("write", e))?;
        bytes += chunk.len() as u64;
    }
    total += bytes;
    s.shutdown(Shutdown::Write)
        .map_err(|e| err("shutdown", e))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| err("setsockopt", e))?;
    let mut back = Vec::new();
    let eof = s.read_to_end(&mut back);
    let secs = t0.elapsed().as_secs_f64();
    let verified = match (eof, <[u8; 8]>::try_from(back.as_slice())) {
        (Ok(_), Ok(n)) if u64::from_be_bytes(n) == total => "yes",
        (Ok(_), Err(_)) if back.is_empty() => "no",
        (Err(e), _) if back.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => "no",
        (Err(e), _) => return Err(err("waiting for the sink's count", e)),
        _ => "MISMATCH",
    };
    println!(
        "mb_per_sec={:.1} bytes={bytes} secs={secs:.3} total={total} verified={verified}",
        bytes as f64 / secs / 1e6
    );
    Ok(())
}

/// One connection of `reply`: the request read so far, then what is left to send.
struct Req {
    stream: TcpStream,
    got: Vec<u8>,
    sent: usize,
}

/// `reply --size N`: on 127.0.0.1, prints `listening PORT`; on each connection reads N
/// bytes, sends them back and closes first (an HTTP/1.0 server's order), so the TIME_WAIT
/// of every connection of a `cycle` run stays on this side's fixed port rather than taking
/// the clients' ephemeral ports. Runs until killed.
pub fn reply(size: usize) -> Result<(), Failure> {
    let fail = |e: io::Error| Failure::Run(e.to_string());
    let mut poll = Poll::new().map_err(fail)?;
    let mut l = mio::net::TcpListener::bind(([127, 0, 0, 1], 0).into()).map_err(fail)?;
    const LISTENER: Token = Token(usize::MAX);
    poll.registry()
        .register(&mut l, LISTENER, Interest::READABLE)
        .map_err(fail)?;
    println!("listening {}", l.local_addr().map_err(fail)?.port());
    let _ = io::stdout().flush();
    let mut conns: Vec<Option<Req>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        poll.poll(&mut events, None)
            .or_else(|e| ignore_eintr(e, "epoll_wait"))
            .map_err(Failure::Run)?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut stream, _)) = l.accept() {
                    let _ = stream.set_nodelay(true);
                    let key = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    let r = poll.registry().register(
                        &mut stream,
                        Token(key),
                        Interest::READABLE | Interest::WRITABLE,
                    );
                    match r {
                        Ok(()) => {
                            conns[key] = Some(Req {
                                stream,
                                got: Vec::with_capacity(size),
                                sent: 0,
                            })
                        }
                        Err(_) => free.push(key),
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let Some(Some(c)) = conns.get_mut(key) else {
                continue;
            };
            if !serve(c, size, &mut buf) {
                if let Some(mut c) = conns[key].take() {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
                free.push(key);
            }
        }
    }
}

/// Reads the request, sends it back; false once done (or failed): close it.
fn serve(c: &mut Req, size: usize, buf: &mut [u8]) -> bool {
    while c.got.len() < size {
        match c.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => c.got.extend_from_slice(&buf[..n.min(size - c.got.len())]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    while c.sent < size {
        match c.stream.write(&c.got[c.sent..]) {
            Ok(n) => c.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    false
}

/// One client of `cycle`.
struct Slot {
    stream: Option<TcpStream>,
    connected: bool,
    sent: usize,
    got: usize,
    started: Instant,
}

/// `cycle`: CONNS clients, each in a loop: connect, send SIZE bytes, read them echoed and the
/// server's close, close (to a `reply` backend, which closes first: the clients' ports are
/// not left in TIME_WAIT); prints `conns_per_sec=..` (cycles completed in the measured
/// window per second), latency percentiles of whole cycles, and errors (refused, reset, cut
/// short, wrong bytes, more bytes than sent, or a cycle longer than 10 s).
pub fn cycle(a: &CycleArgs) -> Result<(), Failure> {
    let run_err = |what: &str, e: io::Error| Failure::Run(format!("{what}: {e}"));
    sys::raise_nofile(a.conns as u64 + 16).map_err(Failure::Run)?;
    let mut poll = Poll::new().map_err(|e| run_err("epoll_create", e))?;
    let msg: Vec<u8> = (0..a.size).map(|i| (i % 251) as u8).collect();
    let mut slots: Vec<Slot> = (0..a.conns)
        .map(|_| Slot {
            stream: None,
            connected: false,
            sent: 0,
            got: 0,
            started: Instant::now(),
        })
        .collect();
    let start = Instant::now();
    let (measure_from, end) = (start + a.warmup, start + a.warmup + a.secs);
    let (mut done, mut errors, mut hist) = (0u64, 0u64, Hist::new());
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    for (i, slot) in slots.iter_mut().enumerate() {
        begin(&poll, a.addr, slot, i, &mut errors);
    }
    while Instant::now() < end {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .or_else(|e| ignore_eintr(e, "epoll_wait"))
            .map_err(Failure::Run)?;
        let now = Instant::now();
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(slot) = slots.get_mut(i) else {
                continue;
            };
            match step(slot, &msg, &mut buf) {
                Ok(false) => continue,
                Ok(true) => {
                    if now >= measure_from {
                        done += 1;
                        hist.record(now.duration_since(slot.started).as_nanos() as u64);
                    }
                }
                Err(e) => {
                    if errors < 5 {
                        eprintln!("cycle: {e}");
                    }
                    errors += 1;
                }
            }
            finish(&poll, slot);
            begin(&poll, a.addr, slot, i, &mut errors);
        }
        for (i, slot) in slots.iter_mut().enumerate() {
            // A connect that failed at once is tried again; a cycle past 10 s is an error.
            if slot.stream.is_none() {
                begin(&poll, a.addr, slot, i, &mut errors);
            } else if now.duration_since(slot.started) > Duration::from_secs(10) {
                errors += 1;
                finish(&poll, slot);
                begin(&poll, a.addr, slot, i, &mut errors);
            }
        }
    }
    let ms = |q| hist.quantile(q) as f64 / 1e6;
    println!(
        "conns_per_sec={:.0} completed={done} p50_ms={:.3} p99_ms={:.3} errors={errors}",
        done as f64 / a.secs.as_secs_f64(),
        ms(0.5),
        ms(0.99)
    );
    Ok(())
}

/// Starts slot `i`'s next cycle.
fn begin(poll: &Poll, addr: SocketAddr, slot: &mut Slot, i: usize, errors: &mut u64) {
    *slot = Slot {
        stream: None,
        connected: false,
        sent: 0,
        got: 0,
        started: Instant::now(),
    };
    match TcpStream::connect(addr) {
        Ok(mut s) => {
            let _ = s.set_nodelay(true);
            match poll.registry().register(
                &mut s,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                Ok(()) => slot.stream = Some(s),
                Err(_) => *errors += 1,
            }
        }
        Err(_) => *errors += 1,
    }
}

/// Closes slot's connection.
fn finish(poll: &Poll, slot: &mut Slot) {
    if let Some(mut s) = slot.stream.take() {
        let _ = poll.registry().deregister(&mut s);
    }
}

/// Advances one cycle on readiness: `Ok(true)` when the whole echo and the close came back.
fn step(slot: &mut Slot, msg: &[u8], buf: &mut [u8]) -> Result<bool, String> {
    let Some(s) = slot.stream.as_mut() else {
        return Err("no connection".into());
    };
    if !slot.connected {
        if let Some(e) = s.take_error().map_err(|e| e.to_string())? {
            return Err(format!("connect: {e}"));
        }
        match s.peer_addr() {
            Ok(_) => slot.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(format!("connect: {e}")),
        }
    }
    while slot.sent < msg.len() {
        match s.write(&msg[slot.sent..]) {
            Ok(n) => slot.sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    loop {
        match s.read(buf) {
            Ok(0) if slot.got == msg.len() => return Ok(true),
            Ok(0) => return Err(format!("closed after {} of {} bytes", slot.got, msg.len())),
            Ok(n) => {
                if slot.got + n > msg.len() || buf[..n] != msg[slot.got..slot.got + n] {
                    return Err("wrong bytes echoed".into());
                }
                slot.got += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}
