//! Sockets a service opens itself, on a real reactor: hand-off ports (accepted sockets go to a
//! program, blocking and never shut down), watched ports (readable: one callback until watched
//! again), adopted datagram and stream ports, and ports opened from a callback.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use twistrs_core::{
    Accepted, DatagramProtocol, DatagramTransport, Endpoint, ListenerId, ProcessProtocol,
    ProcessSpec, ProcessStatus, ProcessTransport, Protocol, ProtocolFactory, Reactor,
    ReactorConfig, Transport, WatchId,
};

fn quiet_reactor() -> Reactor {
    Reactor::with_config(ReactorConfig {
        handle_signals: false,
        ..ReactorConfig::default()
    })
    .expect("reactor")
}

/// O_NONBLOCK and FD_CLOEXEC of `fd`.
fn flags(fd: i32) -> (bool, bool) {
    // SAFETY: fcntl F_GETFL/F_GETFD on a descriptor the caller holds open.
    unsafe {
        (
            libc::fcntl(fd, libc::F_GETFL) & libc::O_NONBLOCK != 0,
            libc::fcntl(fd, libc::F_GETFD) & libc::FD_CLOEXEC != 0,
        )
    }
}

/// Turns the reactor until `done` or 10 s.
fn turn_until(r: &mut Reactor, what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        r.turn(Some(Duration::from_millis(20))).expect("turn");
    }
}

/// Stops the reactor when the child ends, keeping its status.
struct Ended(Rc<Cell<Option<ProcessStatus>>>);

impl ProcessProtocol for Ended {
    fn process_ended(&mut self, t: &mut ProcessTransport<'_>, st: ProcessStatus) {
        self.0.set(Some(st));
        t.handle().stop();
    }
}

/// The state of `pid` from /proc (R, S, Z...), if it exists.
fn state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.get(s.rfind(')')? + 2..)?.chars().next()
}

#[test]
fn a_handoff_port_gives_each_connection_to_a_program_that_keeps_it() {
    let mut r = quiet_reactor();
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().unwrap();
    let ep: Endpoint = format!("tcp:{}:interface=127.0.0.1", addr.port())
        .parse()
        .unwrap();
    let pid = Arc::new(AtomicU32::new(0));
    let status = Rc::new(Cell::new(None));
    let seen: Rc<RefCell<Vec<(bool, bool, String)>>> = Rc::default();
    let h = r.handle();
    let (pid2, status2, seen2) = (pid.clone(), status.clone(), seen.clone());
    let id = r
        .adopt_handoff_port(
            OwnedFd::from(l),
            &ep,
            "cat",
            Box::new(move |a: Accepted| {
                let (nonblocking, cloexec) = flags(a.socket.as_raw_fd());
                seen2
                    .borrow_mut()
                    .push((nonblocking, cloexec, a.host.to_string()));
                let spec = ProcessSpec::new("cat").stdio_fd(a.socket);
                let child = h.spawn_process(spec, Box::new(Ended(status2.clone())));
                pid2.store(child.expect("spawn cat").pid(), Ordering::SeqCst);
            }),
        )
        .expect("hand-off port");
    assert!(
        r.listener_fds().iter().any(|(e, _)| *e == ep.to_string()),
        "a restart hands the port over"
    );
    let client = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // Only once cat sleeps in its first read: on a non-blocking socket that read would
        // have failed (EAGAIN) and cat would be gone.
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let p = pid.load(Ordering::SeqCst);
            if p != 0 && state(p) != Some('R') || Instant::now() > end {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        s.write_all(b"hello").unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).expect("cat's answer");
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("EOF once cat is done");
        (got, rest)
    });
    let guard = r.handle().call_later(Duration::from_secs(10), {
        let h = r.handle();
        move || h.stop()
    });
    r.run().expect("run");
    assert!(guard.active(), "cat did not end within 10 s");
    let (got, rest) = client.join().expect("client");
    assert_eq!(
        &got, b"hello",
        "the reactor's copy closed without cutting the program's"
    );
    assert!(rest.is_empty());
    assert_eq!(status.get(), Some(ProcessStatus::Exited(0)));
    assert_eq!(
        seen.borrow().as_slice(),
        [(false, true, addr.to_string())],
        "blocking, close-on-exec, with the local address"
    );
    r.stop_listening(id);
    assert!(r.listener_fds().is_empty());
}

#[test]
fn a_watched_port_calls_once_until_watched_again() {
    let mut r = quiet_reactor();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_nonblocking(true).unwrap();
    let port = sock.local_addr().unwrap().port();
    let ep: Endpoint = format!("udp:{port}:interface=127.0.0.1").parse().unwrap();
    let calls = Rc::new(Cell::new(0));
    let last: Rc<Cell<Option<WatchId>>> = Rc::default();
    let blocking = Rc::new(Cell::new(false));
    let (calls2, last2, blocking2) = (calls.clone(), last.clone(), blocking.clone());
    let id = r
        .adopt_watched_port(
            OwnedFd::from(sock),
            &ep,
            "Watched",
            Box::new(move |w, fd| {
                calls2.set(calls2.get() + 1);
                last2.set(Some(w));
                blocking2.set(!flags(fd.as_raw_fd()).0);
            }),
        )
        .expect("watched port");
    assert_eq!(
        r.listener_address(id.listener()).map(|a| a.to_string()),
        Some(format!("127.0.0.1:{port}"))
    );
    assert!(r.listener_fds().iter().any(|(e, _)| *e == ep.to_string()));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.send_to(b"one", ("127.0.0.1", port)).unwrap();
    turn_until(&mut r, "the first call", || calls.get() == 1);
    assert!(blocking.get(), "the socket is blocking, for the program");
    assert_eq!(last.get(), Some(id));
    // More datagrams, and the first one still unread: no call until watched again.
    client.send_to(b"two", ("127.0.0.1", port)).unwrap();
    for _ in 0..5 {
        r.turn(Some(Duration::from_millis(20))).unwrap();
    }
    assert_eq!(calls.get(), 1);
    r.handle().watch_again(id);
    turn_until(&mut r, "the call after watch_again", || calls.get() == 2);
    // A port closed makes its id stale, even once the slot is used again.
    r.stop_listening(id.listener());
    r.turn(Some(Duration::ZERO)).unwrap();
    let other = UdpSocket::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port();
    let ep2: Endpoint = format!("udp:{other_port}:interface=127.0.0.1")
        .parse()
        .unwrap();
    let calls3 = Rc::new(Cell::new(0));
    let c3 = calls3.clone();
    let id2 = r
        .adopt_watched_port(
            OwnedFd::from(other),
            &ep2,
            "Other",
            Box::new(move |_, _| c3.set(c3.get() + 1)),
        )
        .unwrap();
    assert_eq!(id2.listener(), id.listener(), "the slot is reused");
    client.send_to(b"x", ("127.0.0.1", other_port)).unwrap();
    turn_until(&mut r, "the new port's call", || calls3.get() == 1);
    r.handle().watch_again(id);
    client.send_to(b"y", ("127.0.0.1", other_port)).unwrap();
    for _ in 0..5 {
        r.turn(Some(Duration::from_millis(20))).unwrap();
    }
    assert_eq!(calls3.get(), 1, "the stale id armed nothing");
}

struct Upper;

impl DatagramProtocol for Upper {
    fn name(&self) -> &'static str {
        "Upper"
    }

    fn datagram_received(&mut self, t: &mut DatagramTransport<'_>, d: &[u8], from: SocketAddr) {
        t.write(&d.to_ascii_uppercase(), from);
    }
}

struct Hello;

impl Protocol for Hello {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.write(b"hello\n");
        t.lose_connection();
    }

    fn data_received(&mut self, _t: &mut Transport<'_>, _d: &[u8]) {}
}

#[test]
fn ports_opened_from_a_callback_are_served() {
    let mut r = quiet_reactor();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_port = udp.local_addr().unwrap().port();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap();
    let ids: Rc<RefCell<Vec<ListenerId>>> = Rc::default();
    let ids2 = ids.clone();
    let h = r.handle();
    let (udp, tcp) = (OwnedFd::from(udp), OwnedFd::from(tcp));
    // From a timer, as inetd does from its SIGHUP hook.
    let _t = r.handle().call_later(Duration::ZERO, move || {
        h.with_service_host(move |host| {
            let ep: Endpoint = format!("udp:{udp_port}:interface=127.0.0.1")
                .parse()
                .unwrap();
            ids2.borrow_mut()
                .push(host.adopt_datagram_port(udp, &ep, Box::new(Upper)).unwrap());
            let f = host.add_factory(Box::new(ProtocolFactory::for_protocol("Hello", || {
                Box::new(Hello) as Box<dyn Protocol>
            })));
            let ep: Endpoint = format!("tcp:{}:interface=127.0.0.1", tcp_addr.port())
                .parse()
                .unwrap();
            ids2.borrow_mut()
                .push(host.adopt_stream_port(tcp, &ep, f).unwrap());
        });
    });
    turn_until(&mut r, "the ports", || ids.borrow().len() == 2);
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_nonblocking(true).unwrap();
    client.send_to(b"ping", ("127.0.0.1", udp_port)).unwrap();
    let mut buf = [0u8; 16];
    let mut answer = None;
    turn_until(&mut r, "the datagram's answer", || {
        answer = client.recv(&mut buf).ok();
        answer.is_some()
    });
    assert_eq!(&buf[..answer.unwrap()], b"PING");
    let mut s = TcpStream::connect(tcp_addr).unwrap();
    s.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    turn_until(&mut r, "the stream's greeting and close", || {
        let mut b = [0u8; 64];
        match s.read(&mut b) {
            Ok(0) => true,
            Ok(n) => {
                got.extend_from_slice(&b[..n]);
                false
            }
            Err(_) => false,
        }
    });
    assert_eq!(got, b"hello\n");
}
