//! Opening many connections to an echo server without overrunning its listen backlog.
//!
//! A client cannot see the server's accept queue: a connect completes once the kernel has
//! done the handshake, accepted or not. A burst larger than the backlog (50 for twistrs
//! and Twisted) makes Linux drop handshakes and answer with SYN cookies, which costs
//! seconds of retransmits and can leave half-dead sockets on the server. So connections
//! are opened in batches smaller than the backlog, and after each batch a fresh probe
//! connection sends one byte and waits for its echo: the accept queue is FIFO, so once
//! the probe is served, every connection of the batch has been accepted.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

pub struct ConnectOpts {
    /// Connects in flight at once, and connections per probe; keep it below the backlog.
    pub batch: usize,
    /// Attempts per connection before giving up on the whole run.
    pub tries: u32,
    /// How long one attempt may take.
    pub attempt_timeout: Duration,
    /// When the whole phase gives up.
    pub timeout: Duration,
    pub nodelay: bool,
}

/// Opens `n` connections to the echo server at `addr`, connection `i` registered on
/// `poll` as `Token(i)` for reading and writing; returns once the server accepted all.
pub fn connect_all(
    poll: &mut Poll,
    addr: SocketAddr,
    n: usize,
    o: &ConnectOpts,
) -> Result<Vec<TcpStream>, String> {
    let deadline = Instant::now() + o.timeout;
    let mut all = Vec::with_capacity(n);
    let mut retries = 0u64;
    while all.len() < n {
        let k = (n - all.len()).min(o.batch);
        let batch = connect_batch(poll, addr, all.len(), k, o, deadline, &mut retries)
            .map_err(|e| format!("{e} ({} connections were open)", all.len()))?;
        all.extend(batch);
        probe(addr, o, deadline)?;
    }
    Ok(all)
}

/// Connects `k` sockets at once (tokens `first..first + k`), retrying failed attempts.
fn connect_batch(
    poll: &mut Poll,
    addr: SocketAddr,
    first: usize,
    k: usize,
    o: &ConnectOpts,
    deadline: Instant,
    retries: &mut u64,
) -> Result<Vec<TcpStream>, String> {
    let mut st = State {
        slots: (0..k).map(|_| None).collect(),
        tries: vec![0; k],
        queue: (0..k).collect(),
    };
    // Batch index and start of each attempt in progress.
    let mut pending: Vec<(usize, Instant)> = Vec::with_capacity(k);
    let mut events = Events::with_capacity(k.max(16));
    let mut done = 0;
    while done < k {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "connecting to {addr} took longer than {:?} ({retries} retries)",
                o.timeout
            ));
        }
        while let Some(i) = st.queue.pop_front() {
            match start(poll, addr, Token(first + i), o.nodelay) {
                Ok(s) => {
                    st.slots[i] = Some(s);
                    pending.push((i, now));
                }
                Err(e) => st.fail(poll, addr, o, i, e, retries)?,
            }
        }
        let wait = (deadline - now).min(Duration::from_millis(20));
        poll.poll(&mut events, Some(wait))
            .or_else(|e| ignore_eintr(e, "epoll_wait"))?;
        for ev in events.iter() {
            let Some(i) = ev.token().0.checked_sub(first) else {
                continue;
            };
            let Some(pos) = pending.iter().position(|&(p, _)| p == i) else {
                continue; // already connected, or a stale event
            };
            let Some(s) = st.slots[i].as_ref() else {
                continue;
            };
            match connected(s) {
                Ok(true) => {
                    pending.swap_remove(pos);
                    done += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    pending.swap_remove(pos);
                    st.fail(poll, addr, o, i, e, retries)?;
                }
            }
        }
        let now = Instant::now();
        let mut j = 0;
        while j < pending.len() {
            let (i, started) = pending[j];
            if now - started > o.attempt_timeout {
                pending.swap_remove(j);
                let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                st.fail(poll, addr, o, i, e, retries)?;
            } else {
                j += 1;
            }
        }
    }
    Ok(st.slots.into_iter().flatten().collect())
}

struct State {
    slots: Vec<Option<TcpStream>>,
    tries: Vec<u32>,
    queue: VecDeque<usize>,
}

impl State {
    /// Drops a failed attempt and queues a retry, or fails the phase when out of tries.
    fn fail(
        &mut self,
        poll: &Poll,
        addr: SocketAddr,
        o: &ConnectOpts,
        i: usize,
        e: io::Error,
        retries: &mut u64,
    ) -> Result<(), String> {
        if let Some(mut s) = self.slots[i].take() {
            let _ = poll.registry().deregister(&mut s);
        }
        self.tries[i] += 1;
        *retries += 1;
        if self.tries[i] >= o.tries {
            return Err(format!(
                "connect to {addr} failed {} times: {e}",
                self.tries[i]
            ));
        }
        self.queue.push_back(i);
        Ok(())
    }
}

fn start(poll: &Poll, addr: SocketAddr, token: Token, nodelay: bool) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    if nodelay {
        s.set_nodelay(true)?;
    }
    poll.registry()
        .register(&mut s, token, Interest::READABLE | Interest::WRITABLE)?;
    Ok(s)
}

/// mio's recipe: a pending error means failure, a peer address means connected.
fn connected(s: &TcpStream) -> io::Result<bool> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    match s.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One byte echoed on a fresh connection: the server has accepted all earlier ones.
fn probe(addr: SocketAddr, o: &ConnectOpts, deadline: Instant) -> Result<(), String> {
    let mut last = None;
    for _ in 0..o.tries {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match probe_once(addr, left.min(o.attempt_timeout)) {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => format!("probe connection to {addr} (1-byte echo) failed: {e}"),
        None => format!("probe connection to {addr}: no time left"),
    })
}

fn probe_once(addr: SocketAddr, timeout: Duration) -> io::Result<()> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"p")?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    if b[0] != b'p' {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "probe byte came back changed",
        ));
    }
    Ok(())
}

/// A signal interrupting `poll` is not an error: the caller's loop just goes round again.
pub fn ignore_eintr(e: io::Error, what: &str) -> Result<(), String> {
    if e.kind() == io::ErrorKind::Interrupted {
        Ok(())
    } else {
        Err(format!("{what}: {e}"))
    }
}
