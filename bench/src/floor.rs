//! `twistrs-bench floor`: the least an echo server on mio can do, the floor any reactor on mio
//! can reach. One thread, edge-triggered, read until `WouldBlock` and write back at once; no
//! timers, no limits, no protocol layer. Listens on 127.0.0.1:0 and prints `listening PORT`.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::Failure;

const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet written back (only when the socket would block).
    pending: Vec<u8>,
}

/// Echoes what `c` has to read; false once it should close.
fn serve(c: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        if !c.pending.is_empty() {
            match c.stream.write(&c.pending) {
                Ok(n) => {
                    c.pending.drain(..n);
                    if !c.pending.is_empty() {
                        continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        match c.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => match c.stream.write(&buf[..n]) {
                Ok(w) => c.pending.extend_from_slice(&buf[w..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.pending.extend_from_slice(&buf[..n])
                }
                Err(_) => return false,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

pub fn run() -> Result<(), Failure> {
    let fail = |e: io::Error| Failure::Run(e.to_string());
    let mut poll = Poll::new().map_err(fail)?;
    let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut listener = TcpListener::bind(addr).map_err(fail)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .map_err(fail)?;
    println!("listening {}", listener.local_addr().map_err(fail)?.port());
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match poll.poll(&mut events, None) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fail(e)),
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let key = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            if poll
                                .registry()
                                .register(
                                    &mut stream,
                                    Token(key),
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .is_ok()
                            {
                                conns[key] = Some(Conn {
                                    stream,
                                    pending: Vec::new(),
                                });
                            } else {
                                free.push(key);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => break,
                    }
                }
                continue;
            }
            let key = ev.token().0;
            let Some(Some(c)) = conns.get_mut(key) else {
                continue;
            };
            if !serve(c, &mut buf) {
                if let Some(mut c) = conns[key].take() {
                    let _ = poll.registry().deregister(&mut c.stream);
                }
                free.push(key);
            }
        }
    }
}
