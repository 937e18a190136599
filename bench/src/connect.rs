//! Opening many connections without overrunning the server's listen backlog: a bounded
//! number of non-blocking connects in flight, each retried a bounded number of times.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

pub struct ConnectOpts {
    /// Connects in progress at once.
    pub inflight: usize,
    /// Attempts per connection before giving up on the whole run.
    pub tries: u32,
    /// How long one attempt may take (a SYN dropped on a full backlog is resent after 1 s).
    pub attempt_timeout: Duration,
    /// When the whole phase gives up.
    pub timeout: Duration,
    pub nodelay: bool,
}

/// Opens `n` connections to `addr`, connection `i` registered on `poll` as `Token(i)` for
/// reading and writing.
pub fn connect_all(
    poll: &Poll,
    addr: SocketAddr,
    n: usize,
    o: &ConnectOpts,
) -> Result<Vec<TcpStream>, String> {
    let deadline = Instant::now() + o.timeout;
    let mut slots: Vec<Option<TcpStream>> = (0..n).map(|_| None).collect();
    let mut tries = vec![0u32; n];
    let mut queue: VecDeque<usize> = (0..n).collect();
    // Index and start of each attempt in progress; at most `o.inflight` long.
    let mut pending: Vec<(usize, Instant)> = Vec::with_capacity(o.inflight);
    let mut events = Events::with_capacity(1024);
    let mut done = 0;
    let mut retries = 0u64;

    // Drops a failed attempt and queues a retry, or fails the phase when out of tries.
    let mut fail = |i: usize,
                    e: io::Error,
                    slots: &mut [Option<TcpStream>],
                    queue: &mut VecDeque<usize>|
     -> Result<(), String> {
        if let Some(mut s) = slots[i].take() {
            let _ = poll.registry().deregister(&mut s);
        }
        tries[i] += 1;
        retries += 1;
        if tries[i] >= o.tries {
            return Err(format!(
                "connect to {addr} failed {} times (connection {i}): {e}",
                tries[i]
            ));
        }
        queue.push_back(i);
        Ok(())
    };

    while done < n {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!(
                "only {done} of {n} connections to {addr} were established within {:?} \
                 ({retries} retries)",
                o.timeout
            ));
        }
        while pending.len() < o.inflight {
            let Some(i) = queue.pop_front() else { break };
            match start(poll, addr, i, o.nodelay) {
                Ok(s) => {
                    slots[i] = Some(s);
                    pending.push((i, now));
                }
                Err(e) => fail(i, e, &mut slots, &mut queue)?,
            }
        }
        let wait = (deadline - now).min(Duration::from_millis(20));
        poll.poll(&mut events, Some(wait))
            .or_else(|e| ignore_eintr(e, "poll"))?;
        for ev in events.iter() {
            let i = ev.token().0;
            let Some(pos) = pending.iter().position(|&(p, _)| p == i) else {
                continue; // an already connected stream, or a stale event
            };
            let Some(s) = slots[i].as_ref() else { continue };
            match connected(s) {
                Ok(true) => {
                    pending.swap_remove(pos);
                    done += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    pending.swap_remove(pos);
                    fail(i, e, &mut slots, &mut queue)?;
                }
            }
        }
        let now = Instant::now();
        let mut k = 0;
        while k < pending.len() {
            let (i, started) = pending[k];
            if now - started > o.attempt_timeout {
                pending.swap_remove(k);
                let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                fail(i, e, &mut slots, &mut queue)?;
            } else {
                k += 1;
            }
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

fn start(poll: &Poll, addr: SocketAddr, i: usize, nodelay: bool) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr)?;
    if nodelay {
        s.set_nodelay(true)?;
    }
    poll.registry()
        .register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
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

/// A signal interrupting `poll` is not an error: the caller's loop just goes round again.
pub fn ignore_eintr(e: io::Error, what: &str) -> Result<(), String> {
    if e.kind() == io::ErrorKind::Interrupted {
        Ok(())
    } else {
        Err(format!("{what}: {e}"))
    }
}
