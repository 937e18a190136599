//! bench/relay.sh's loads through a SOCKS proxy (`bulk`, `cycle`, `idle` with `--socks`),
//! each connection first asking for its backend with a SOCKS4 or SOCKS5 CONNECT (no login):
//! `bulk` (one relay pushing bytes into `sink`, checked by its count), `rr` (`cycle`: a new
//! relay per request, connect, handshake, SIZE bytes answered by `reply`, which closes first;
//! CONNS at a time) and `idle` (CONNS relayed pairs to `floor` held open, for the proxy's
//! memory per pair).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::Failure;
use crate::args::Opts;
use crate::connect::ignore_eintr;
use crate::hist::Hist;
use crate::sys;

/// The SOCKS version spoken.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Socks {
    V4,
    V5,
}

pub struct SocksArgs {
    pub addr: SocketAddr,
    pub socks: Socks,
    pub target: SocketAddr,
    pub conns: usize,
    pub size: usize,
    pub secs: Duration,
    pub warmup: Duration,
    pub inflight: usize,
    pub hold: Duration,
    pub connect_timeout: Duration,
}

impl SocksArgs {
    pub fn parse(args: &[String]) -> Result<Self, Failure> {
        let o = Opts::parse(
            args,
            &[
                "addr",
                "socks",
                "target",
                "conns",
                "size",
                "secs",
                "warmup",
                "inflight",
                "hold-secs",
                "connect-timeout-secs",
            ],
        )?;
        let socks = match o.raw("socks").unwrap_or("5") {
            "4" => Socks::V4,
            "5" => Socks::V5,
            s => return Err(Failure::Usage(format!("--socks {s:?}: 4 or 5"))),
        };
        let t = o
            .raw("target")
            .ok_or_else(|| Failure::Usage("--target 127.0.0.1:PORT is required".into()))?;
        let target: SocketAddr = t
            .parse()
            .map_err(|_| Failure::Usage(format!("--target: not IP:PORT: {t:?}")))?;
        if !target.ip().is_loopback() || !target.is_ipv4() || target.port() == 0 {
            return Err(Failure::Usage(format!(
                "--target {target}: only an IPv4 loopback address with a port"
            )));
        }
        Ok(SocksArgs {
            addr: o.addr()?,
            socks,
            target,
            conns: o.num("conns", 64, 1, 60_000)?,
            size: o.num("size", 64, 1, 1 << 16)?,
            secs: o.secs("secs", 5.0, 0.1, 3600.0)?,
            warmup: o.secs("warmup", 1.0, 0.0, 600.0)?,
            inflight: o.num("inflight", 32, 1, 4096)?,
            hold: o.secs("hold-secs", 600.0, 0.0, 3600.0)?,
            connect_timeout: o.secs("connect-timeout-secs", 120.0, 1.0, 600.0)?,
        })
    }
}

/// The first message: SOCKS5's greeting, or SOCKS4's request.
fn first_message(a: &SocksArgs) -> Vec<u8> {
    match a.socks {
        Socks::V4 => request(a),
        Socks::V5 => vec![5, 1, 0],
    }
}

/// The CONNECT request for the target (IPv4).
fn request(a: &SocksArgs) -> Vec<u8> {
    let SocketAddr::V4(t) = a.target else {
        return Vec::new();
    };
    let (port, ip) = (t.port().to_be_bytes(), t.ip().octets());
    match a.socks {
        Socks::V4 => vec![4, 1, port[0], port[1], ip[0], ip[1], ip[2], ip[3], 0],
        _ => vec![5, 1, 0, 1, ip[0], ip[1], ip[2], ip[3], port[0], port[1]],
    }
}

/// Where a client is in its handshake with the relay.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    Connecting,
    /// SOCKS5: waiting for the method selection (2 bytes).
    Method,
    /// Waiting for the request's reply.
    Reply,
    /// Relayed to the backend.
    Ready,
}

/// One connection through the relay, driven without blocking.
struct Client {
    stream: TcpStream,
    step: Step,
    buf: [u8; 32],
    have: usize,
}

fn fault(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Writes a short message whole (a fresh socket's buffer always takes it).
fn write_all_now(s: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    match s.write(msg) {
        Ok(n) if n == msg.len() => Ok(()),
        Ok(n) => Err(fault(format!("only {n} of {} bytes written", msg.len()))),
        Err(e) => Err(e),
    }
}

impl Client {
    fn start(poll: &Poll, addr: SocketAddr, token: Token) -> io::Result<Client> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        poll.registry()
            .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        Ok(Client {
            stream,
            step: Step::Connecting,
            buf: [0; 32],
            have: 0,
        })
    }

    /// Bytes of the reply awaited, as far as they are known yet.
    fn need(&self, a: &SocksArgs) -> usize {
        match (self.step, a.socks) {
            (Step::Method, _) => 2,
            (Step::Reply, Socks::V4) => 8,
            (Step::Reply, _) if self.have < 4 => 4,
            (Step::Reply, _) => match self.buf[3] {
                4 => 22,
                3 if self.have >= 5 => 7 + usize::from(self.buf[4]),
                3 => 5,
                _ => 10,
            },
            _ => 0,
        }
    }

    /// Reads what the current step awaits, never past it (the backend's bytes follow).
    fn read_step(&mut self, a: &SocksArgs) -> io::Result<bool> {
        loop {
            let need = self.need(a);
            if self.have >= need {
                return Ok(true);
            }
            match self.stream.read(&mut self.buf[self.have..need]) {
                Ok(0) => return Err(fault("the relay closed during the handshake")),
                Ok(n) => self.have += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves the handshake on as far as the socket allows; true once relayed.
    fn drive(&mut self, a: &SocksArgs) -> io::Result<bool> {
        loop {
            match self.step {
                Step::Ready => return Ok(true),
                Step::Connecting => {
                    if let Some(e) = self.stream.take_error()? {
                        return Err(e);
                    }
                    match self.stream.peer_addr() {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
                        Err(e) => return Err(e),
                    }
                    write_all_now(&mut self.stream, &first_message(a))?;
                    self.step = match a.socks {
                        Socks::V4 => Step::Reply,
                        Socks::V5 => Step::Method,
                    };
                }
                Step::Method => {
                    if !self.read_step(a)? {
                        return Ok(false);
                    }
                    if self.buf[..2] != [5, 0] {
                        return Err(fault(format!("method selection {:?}", &self.buf[..2])));
                    }
                    self.have = 0;
                    write_all_now(&mut self.stream, &request(a))?;
                    self.step = Step::Reply;
                }
                Step::Reply => {
                    if !self.read_step(a)? {
                        return Ok(false);
                    }
                    let ok = match a.socks {
                        Socks::V4 => self.buf[1] == 90,
                        _ => self.buf[1] == 0,
                    };
                    if !ok {
                        return Err(fault(format!("refused with code {}", self.buf[1])));
                    }
                    self.step = Step::Ready;
                }
            }
        }
    }
}

// --- bulk --------------------------------------------------------------------------

/// `bulk --socks`: one relay to `sink`, written to as `crate::relay::bulk` does (256 KiB
/// chunks for the warm-up, then SECS counted, then a half-close and the sink's count back).
pub fn bulk(a: &SocksArgs) -> Result<(), Failure> {
    let run = |what: &str, e: io::Error| Failure::Run(format!("{what}: {e}"));
    let mut poll = Poll::new().map_err(|e| run("epoll_create", e))?;
    let mut c = Client::start(&poll, a.addr, Token(0)).map_err(|e| run("connect", e))?;
    let mut events = Events::with_capacity(16);
    let deadline = Instant::now() + a.connect_timeout;
    while !c.drive(a).map_err(|e| run("handshake", e))? {
        if Instant::now() > deadline {
            return Err(Failure::Run("the handshake took too long".into()));
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .or_else(|e| ignore_eintr(e, "epoll_wait"))
            .map_err(Failure::Run)?;
    }
    poll.registry()
        .deregister(&mut c.stream)
        .map_err(|e| run("deregister", e))?;
    let mut s = {
        use std::os::fd::{FromRawFd, IntoRawFd};
        // SAFETY: the descriptor moves from the mio stream to the std one, owned once.
        unsafe { std::net::TcpStream::from_raw_fd(c.stream.into_raw_fd()) }
    };
    s.set_nonblocking(false).map_err(|e| run("blocking", e))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| run("setsockopt", e))?;
    let chunk: Vec<u8> = (0..256 * 1024u32)
        .map(|i| (i * 7 + i / 251) as u8)
        .collect();
    let mut total = 0u64;
    let warm_end = Instant::now() + a.warmup;
    while Instant::now() < warm_end {
        s.write_all(&chunk).map_err(|e| run("write", e))?;
        total += chunk.len() as u64;
    }
    let (t0, cpu0) = (Instant::now(), sys::cpu_time());
    let mut bytes = 0u64;
    while t0.elapsed() < a.secs {
        s.write_all(&chunk).map_err(|e| run("write", e))?;
        bytes += chunk.len() as u64;
    }
    total += bytes;
    s.shutdown(Shutdown::Write)
        .map_err(|e| run("shutdown", e))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| run("setsockopt", e))?;
    let mut back = Vec::new();
    let eof = s.read_to_end(&mut back);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (sys::cpu_time() - cpu0).as_secs_f64();
    let verified = match (eof, <[u8; 8]>::try_from(back.as_slice())) {
        (Ok(_), Ok(n)) if u64::from_be_bytes(n) == total => "yes",
        (Ok(_), Err(_)) if back.is_empty() => "no",
        (Err(e), _) if back.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => "no",
        (Err(e), _) => return Err(run("waiting for the sink's count", e)),
        _ => "MISMATCH",
    };
    println!(
        "mb_per_sec={:.1} bytes={bytes} secs={secs:.3} total={total} verified={verified} \
         client_cpu={:.2}",
        bytes as f64 / secs / 1e6,
        cpu / secs
    );
    Ok(())
}

// --- cycle ----------------------------------------------------------------------------

struct Slot {
    client: Option<Client>,
    started: Instant,
    sent: bool,
    got: usize,
}

/// `cycle --socks`: CONNS slots, each a relay after another: connect, handshake, SIZE bytes to
/// `reply --size SIZE` and back (checked), then its close (it closes first).
pub fn rr(a: &SocksArgs) -> Result<(), Failure> {
    let mut poll = Poll::new().map_err(|e| Failure::Run(format!("epoll_create: {e}")))?;
    sys::raise_nofile(2 * a.conns as u64 + 64).map_err(Failure::Run)?;
    let msg: Vec<u8> = (0..a.size).map(|i| (i * 7 + 3) as u8).collect();
    let mut scratch = vec![0u8; 64 * 1024];
    let now = Instant::now();
    let mut slots: Vec<Slot> = (0..a.conns)
        .map(|_| Slot {
            client: None,
            started: now,
            sent: false,
            got: 0,
        })
        .collect();
    let (mut done, mut errors, mut hist) = (0u64, 0u64, Hist::new());
    let restart = |poll: &Poll, i: usize, s: &mut Slot, errors: &mut u64| {
        s.client = None;
        s.sent = false;
        s.got = 0;
        s.started = Instant::now();
        // A refused connect (the backlog is full) is an error and a retry.
        for _ in 0..3 {
            match Client::start(poll, a.addr, Token(i)) {
                Ok(c) => {
                    s.client = Some(c);
                    return;
                }
                Err(e) => {
                    *errors += 1;
                    if *errors <= 5 {
                        eprintln!("twistrs-bench: connect: {e}");
                    }
                }
            }
        }
    };
    for (i, s) in slots.iter_mut().enumerate() {
        restart(&poll, i, s, &mut errors);
    }
    let mut events = Events::with_capacity(1024);
    let measure_from = now + a.warmup;
    let (mut measuring, mut t0, mut cpu0) = (false, now, sys::cpu_time());
    let mut end = measure_from + a.secs;
    loop {
        let now = Instant::now();
        if !measuring && now >= measure_from {
            (measuring, done, t0, cpu0) = (true, 0, now, sys::cpu_time());
            hist.clear();
            end = now + a.secs;
        }
        if now >= end {
            break;
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .or_else(|e| ignore_eintr(e, "epoll_wait"))
            .map_err(Failure::Run)?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(s) = slots.get_mut(i) else {
                continue;
            };
            let Some(c) = s.client.as_mut() else {
                restart(&poll, i, s, &mut errors);
                continue;
            };
            let r = (|| -> io::Result<bool> {
                if !c.drive(a)? {
                    return Ok(false);
                }
                if !s.sent {
                    write_all_now(&mut c.stream, &msg)?;
                    s.sent = true;
                }
                loop {
                    match c.stream.read(&mut scratch) {
                        // The backend closes after its answer: a relay is done at its EOF.
                        Ok(0) if s.got == msg.len() => return Ok(true),
                        Ok(0) => return Err(fault("closed before the whole echo")),
                        Ok(n) => {
                            if s.got + n > msg.len() || scratch[..n] != msg[s.got..s.got + n] {
                                return Err(fault("the echo differs"));
                            }
                            s.got += n;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            })();
            match r {
                Ok(false) => {}
                Ok(true) => {
                    let at = Instant::now();
                    if measuring && at < end {
                        done += 1;
                        hist.record((at - s.started).as_nanos() as u64);
                    }
                    restart(&poll, i, s, &mut errors);
                }
                Err(e) => {
                    errors += 1;
                    if errors <= 5 {
                        eprintln!("twistrs-bench: relay: {e}");
                    }
                    restart(&poll, i, s, &mut errors);
                }
            }
        }
        // A connect that failed at once is tried again; a relay past 10 s is an error.
        let now = Instant::now();
        for (i, s) in slots.iter_mut().enumerate() {
            if s.client.is_none() {
                restart(&poll, i, s, &mut errors);
            } else if now.duration_since(s.started) > Duration::from_secs(10) {
                errors += 1;
                restart(&poll, i, s, &mut errors);
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (sys::cpu_time() - cpu0).as_secs_f64();
    let ms = |ns: u64| ns as f64 / 1e6;
    println!(
        "conns_per_sec={:.0} completed={done} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} \
         errors={errors} secs={secs:.3} conns={} size={} client_cpu={:.2}",
        done as f64 / secs,
        ms(hist.quantile(0.50)),
        ms(hist.quantile(0.99)),
        ms(hist.max()),
        a.conns,
        a.size,
        cpu / secs
    );
    Ok(())
}

// --- idle --------------------------------------------------------------------------

/// `idle --socks`: CONNS relayed pairs, INFLIGHT being set up at a time, each checked with one
/// byte echoed by the backend; prints `connected=N`, holds them until stdin closes (or
/// HOLD-SECS), then prints `dropped=K` (pairs the relay closed meanwhile).
pub fn idle(a: &SocksArgs) -> Result<(), Failure> {
    let limit = sys::raise_nofile(a.conns as u64 + 64).map_err(Failure::Run)?;
    let mut poll = Poll::new().map_err(|e| Failure::Run(format!("epoll_create: {e}")))?;
    let started = Instant::now();
    let deadline = started + a.connect_timeout;
    let mut all: Vec<Option<Client>> = (0..a.conns).map(|_| None).collect();
    // Pairs set up and checked, and those whose probe byte is on its way.
    let (mut ready, mut probing) = (vec![false; a.conns], vec![false; a.conns]);
    let (mut held, mut in_flight, mut errors, mut next) = (0usize, 0usize, 0u64, 0usize);
    // Slots to (re)start: a connect that failed at once, or a pair that failed, goes back here.
    let mut to_start: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut byte = [0u8; 1];
    while held < a.conns {
        if Instant::now() > deadline {
            return Err(Failure::Run(format!(
                "only {held} of {} pairs within {:?} ({errors} errors)",
                a.conns, a.connect_timeout
            )));
        }
        while in_flight < a.inflight && next < a.conns {
            to_start.push(next);
            next += 1;
            in_flight += 1;
        }
        for i in std::mem::take(&mut to_start) {
            probing[i] = false;
            all[i] = Client::start(&poll, a.addr, Token(i)).ok();
            if all[i].is_none() {
                errors += 1;
                to_start.push(i);
            }
        }
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .or_else(|e| ignore_eintr(e, "epoll_wait"))
            .map_err(Failure::Run)?;
        for ev in events.iter() {
            let i = ev.token().0;
            if ready.get(i).copied().unwrap_or(true) {
                continue;
            }
            let Some(Some(c)) = all.get_mut(i) else {
                continue;
            };
            let r = (|| -> io::Result<bool> {
                if !c.drive(a)? {
                    return Ok(false);
                }
                if !probing[i] {
                    write_all_now(&mut c.stream, b"p")?;
                    probing[i] = true;
                }
                match c.stream.read(&mut byte) {
                    Ok(1) if byte[0] == b'p' => Ok(true),
                    Ok(_) => Err(fault("the probe byte did not come back")),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                    Err(e) => Err(e),
                }
            })();
            match r {
                Ok(false) => {}
                Ok(true) => {
                    ready[i] = true;
                    held += 1;
                    in_flight -= 1;
                }
                Err(e) => {
                    errors += 1;
                    if errors <= 5 {
                        eprintln!("twistrs-bench: pair {i}: {e}");
                    }
                    // Set up again in the same slot.
                    all[i] = None;
                    to_start.push(i);
                }
            }
        }
    }
    println!(
        "connected={held} connect_secs={:.3} errors={errors} nofile={limit}",
        started.elapsed().as_secs_f64()
    );
    let _ = io::stdout().flush();
    let held_from = Instant::now();
    let hold_end = held_from + a.hold;
    while Instant::now() < hold_end && !sys::stdin_closed() {
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut dropped = 0;
    let mut buf = [0u8; 64];
    for c in all.iter_mut().flatten() {
        match c.stream.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            _ => dropped += 1,
        }
    }
    println!(
        "dropped={dropped} held_secs={:.3}",
        held_from.elapsed().as_secs_f64()
    );
    Ok(())
}
