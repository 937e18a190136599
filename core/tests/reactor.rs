//! The reactor over real sockets on 127.0.0.1: timers, threads, outgoing connections,
//! idle timeouts, half-close and the graceful drain.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use twistrs_core::{
    Address, ClientFactory, Endpoint, Factory, Failure, Protocol, ProtocolFactory, Reactor,
    ReactorConfig, Reason, Room, StopReason, Transport,
};

fn quiet_reactor() -> Reactor {
    Reactor::with_config(ReactorConfig {
        handle_signals: false,
        ..ReactorConfig::default()
    })
    .expect("reactor")
}

/// Runs `setup` on a reactor in its own thread; returns its first listener's address and the
/// thread, which yields how `run` ended.
fn serve(
    setup: impl FnOnce(&mut Reactor) -> Option<twistrs_core::FactoryId> + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<StopReason>) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut r = quiet_reactor();
        let f = setup(&mut r);
        let addr = f.map(|f| {
            let ep: Endpoint = "tcp:0:interface=127.0.0.1".parse().unwrap();
            let id = r.listen(&ep, f).expect("listen");
            r.listener_address(id).unwrap().socket_addr().unwrap()
        });
        tx.send(addr.unwrap_or_else(|| "127.0.0.1:1".parse().unwrap()))
            .unwrap();
        let reason = r.run().expect("run");
        r.drain(Duration::from_secs(2)).expect("drain");
        reason
    });
    (rx.recv_timeout(Duration::from_secs(5)).expect("ready"), t)
}

fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

#[test]
fn call_later_cancel_and_stop() {
    let (_, t) = serve(|r| {
        let h = r.handle();
        let fired = Rc::new(RefCell::new(Vec::new()));
        let f = fired.clone();
        let cancelled = h.call_later(Duration::from_millis(10), move || {
            f.borrow_mut().push("cancelled")
        });
        cancelled.cancel();
        let f = fired.clone();
        let h2 = h.clone();
        h.call_later(Duration::from_millis(30), move || {
            f.borrow_mut().push("ran");
            assert_eq!(*f.borrow(), vec!["ran"]);
            h2.stop();
        });
        None
    });
    assert_eq!(t.join().unwrap(), StopReason::Requested);
}

#[test]
fn defer_to_thread_comes_back_through_the_waker() {
    let (_, t) = serve(|r| {
        let h = r.handle();
        let main = std::thread::current().id();
        let d = h.defer_to_thread(move || {
            assert_ne!(std::thread::current().id(), main, "runs on a worker");
            std::thread::sleep(Duration::from_millis(50));
            Ok::<_, Failure>(21)
        });
        let h2 = h.clone();
        d.add_callback(move |v| {
            assert_eq!(
                std::thread::current().id(),
                main,
                "fires on the reactor thread"
            );
            assert_eq!(v, 21);
            h2.stop();
            Ok(v)
        });
        None
    });
    assert_eq!(t.join().unwrap(), StopReason::Requested);
}

struct Greeter {
    sent: Rc<RefCell<Vec<String>>>,
}

impl Protocol for Greeter {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        self.sent.borrow_mut().push(format!("made {}", t.peer()));
        t.write(b"hello from the client side");
        t.lose_connection();
    }
    fn data_received(&mut self, _t: &mut Transport<'_>, _d: &[u8]) {}
    fn connection_lost(&mut self, _t: &mut Transport<'_>, reason: &Reason) {
        self.sent
            .borrow_mut()
            .push(format!("lost clean={}", reason.is_clean()));
    }
}

struct Client {
    log: Rc<RefCell<Vec<String>>>,
    stop_after: usize,
    h: twistrs_core::Handle,
}

impl ClientFactory for Client {
    fn name(&self) -> &'static str {
        "Greeter"
    }
    fn build_protocol(&mut self, _peer: &Address) -> Box<dyn Protocol> {
        Box::new(Greeter {
            sent: self.log.clone(),
        })
    }
    fn client_connection_failed(&mut self, reason: &Reason) {
        self.log.borrow_mut().push(format!("failed {reason}"));
        if self.log.borrow().len() >= self.stop_after {
            self.h.stop();
        }
    }
}

#[test]
fn connect_tcp_reports_success_and_failure() {
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let taddr = target.local_addr().unwrap();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let caddr = closed.local_addr().unwrap();
    drop(closed);
    let (tx, rx) = mpsc::channel();
    let (_, t) = serve(move |r| {
        let h = r.handle();
        let log = Rc::new(RefCell::new(Vec::new()));
        h.connect_tcp(
            taddr,
            Box::new(Client {
                log: log.clone(),
                stop_after: 99,
                h: h.clone(),
            }),
            Duration::from_secs(5),
        );
        h.connect_tcp(
            caddr,
            Box::new(Client {
                log: log.clone(),
                stop_after: 99,
                h: h.clone(),
            }),
            Duration::from_secs(5),
        );
        let h2 = h.clone();
        h.call_later(Duration::from_secs(3), move || {
            tx.send(log.borrow().clone()).unwrap();
            h2.stop();
        });
        None
    });
    let (mut s, _) = target.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello from the client side");
    t.join().unwrap();
    let log = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(log.contains(&format!("made {taddr}")), "{log:?}");
    assert!(log.contains(&"lost clean=true".to_string()), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l.starts_with("failed") && l.contains("refused")),
        "{log:?}"
    );
}

/// A connect timeout or a drain deadline too far for the clock (`--connect-timeout
/// 18446744073709551615`, `--shutdown-timeout 1e300`) waits as long as it takes: the
/// connection is made, and the drain with nothing left returns at once; neither panics.
#[test]
fn timeouts_past_any_clock_wait_as_long_as_it_takes() {
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let taddr = target.local_addr().unwrap();
    let (_, t) = serve(move |r| {
        let h = r.handle();
        h.connect_tcp(
            taddr,
            Box::new(Client {
                log: Rc::new(RefCell::new(Vec::new())),
                stop_after: 1,
                h: h.clone(),
            }),
            Duration::MAX,
        );
        let h2 = h.clone();
        h.call_later(Duration::from_secs(1), move || h2.stop());
        None
    });
    // The reactor stops itself after a second; the connection waits in the listen queue.
    t.join().expect("the reactor ran without panicking");
    target.set_nonblocking(true).unwrap();
    let (mut s, _) = target.accept().expect("the connection was made");
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello from the client side");
    let mut r = quiet_reactor();
    let h = r.handle();
    h.clone().call_later(Duration::ZERO, move || h.stop());
    r.run().expect("run");
    let start = Instant::now();
    r.drain(Duration::MAX).expect("drain");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

struct Idle;
impl Protocol for Idle {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.set_timeout(Some(Duration::from_millis(300)));
    }
    fn data_received(&mut self, t: &mut Transport<'_>, d: &[u8]) {
        t.write(d);
        t.lose_write_connection();
    }
}

#[test]
fn idle_timeout_closes_and_half_close_keeps_reading() {
    let (addr, _t) = serve(|r| {
        Some(
            r.add_factory(Box::new(ProtocolFactory::for_protocol("Idle", || {
                Box::new(Idle) as Box<dyn Protocol>
            }))),
        )
    });
    // Idle: closed by the server after about 300 ms.
    let mut c = client(addr);
    let start = Instant::now();
    let mut buf = [0u8; 8];
    assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "closed");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // Half-close: the server shuts its side after answering; ours can still write.
    let mut c = client(addr);
    c.write_all(b"abc").unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"abc", "EOF after the answer");
    c.write_all(b"still open").unwrap();
}

/// Ignores the stop request: only the drain deadline closes it.
struct Stubborn;
impl Protocol for Stubborn {
    fn data_received(&mut self, _t: &mut Transport<'_>, _d: &[u8]) {}
    fn stop_requested(&mut self, _t: &mut Transport<'_>) {}
}

struct StubbornFactory;
impl Factory for StubbornFactory {
    fn name(&self) -> &'static str {
        "Stubborn"
    }
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Stubborn))
    }
}

#[test]
fn drain_closes_what_is_left_at_the_deadline() {
    let (tx, rx) = mpsc::channel::<()>();
    let (addr, t) = serve(move |r| {
        let h = r.handle();
        let h2 = h.clone();
        h.call_later(Duration::from_millis(300), move || {
            let _ = tx.send(());
            h2.stop();
        });
        Some(r.add_factory(Box::new(StubbornFactory)))
    });
    let mut c = client(addr);
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4];
    assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "closed at the deadline");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "waited for the 2 s deadline: {waited:?}"
    );
    t.join().unwrap();
}

/// Live connections of [`Roomy`], oldest first, with when each was made.
type Live = Rc<RefCell<std::collections::VecDeque<(twistrs_core::ConnId, Instant)>>>;

/// Says "hi" when accepted; keeps its place in [`Live`] until it closes.
struct RoomyConn(Live, Option<twistrs_core::ConnId>);
impl Protocol for RoomyConn {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        self.1 = Some(t.id());
        self.0.borrow_mut().push_back((t.id(), Instant::now()));
        t.write(b"hi");
    }
    fn data_received(&mut self, _t: &mut Transport<'_>, _d: &[u8]) {}
    fn connection_lost(&mut self, _t: &mut Transport<'_>, _r: &Reason) {
        let me = self.1;
        self.0.borrow_mut().retain(|(id, _)| Some(*id) != me);
    }
}

/// Two connections at most; at the limit it gives up its oldest once 300 ms old.
struct Roomy(Live);
impl Factory for Roomy {
    fn name(&self) -> &'static str {
        "Roomy"
    }
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(RoomyConn(self.0.clone(), None)))
    }
    fn max_connections(&self) -> Option<usize> {
        Some(2)
    }
    fn make_room(&mut self) -> Room {
        let grace = Duration::from_millis(300);
        match self.0.borrow().front() {
            Some(&(id, since)) if since.elapsed() >= grace => Room::Close(id),
            Some(&(_, since)) => Room::After(since + grace),
            None => Room::Full,
        }
    }
}

#[test]
fn a_factory_at_its_limit_can_make_room_now_or_later() {
    let (addr, t) = serve(|r| {
        let h = r.handle();
        let h2 = h.clone();
        h.call_later(Duration::from_secs(3), move || h2.stop());
        Some(r.add_factory(Box::new(Roomy(Live::default()))))
    });
    let hi = |c: &mut TcpStream| {
        let mut b = [0u8; 2];
        c.read_exact(&mut b).map(|_| b)
    };
    let mut first = client(addr);
    let start = Instant::now();
    assert_eq!(hi(&mut first).unwrap(), *b"hi");
    let mut second = client(addr);
    assert_eq!(hi(&mut second).unwrap(), *b"hi");
    // The third waits until the first is old enough to give up (`Room::After`), not until a
    // connection closes by itself (none would).
    let mut third = client(addr);
    assert_eq!(hi(&mut third).unwrap(), *b"hi");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
    let mut b = [0u8; 1];
    assert!(
        matches!(first.read(&mut b), Ok(0) | Err(_)),
        "the oldest was closed to make room"
    );
    second
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    assert!(
        matches!(second.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the other one stays"
    );
    drop((second, third));
    t.join().unwrap();
}

/// Answers each byte received with "<", the file, ">" (files interleaved with bytes).
struct FileServer {
    file: Rc<std::fs::File>,
    len: u64,
}

impl Protocol for FileServer {
    fn data_received(&mut self, t: &mut Transport<'_>, d: &[u8]) {
        for _ in d {
            t.write(b"<");
            t.send_file(self.file.clone(), 0, self.len);
            t.write(b">");
        }
    }
}

#[test]
fn send_file_keeps_order_with_written_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.bin");
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&path, &body).unwrap();
    let (addr, _t) = serve(move |r| {
        let file = Rc::new(std::fs::File::open(&path).unwrap());
        let len = file.metadata().unwrap().len();
        Some(r.add_factory(Box::new(ProtocolFactory::for_protocol(
            "Files",
            move || {
                Box::new(FileServer {
                    file: file.clone(),
                    len,
                }) as Box<dyn Protocol>
            },
        ))))
    });
    let mut c = client(addr);
    c.write_all(b"ab").unwrap();
    let mut want = Vec::new();
    for _ in 0..2 {
        want.push(b'<');
        want.extend_from_slice(&body);
        want.push(b'>');
    }
    let mut got = vec![0u8; want.len()];
    c.read_exact(&mut got).unwrap();
    assert!(got == want, "two files, each between its markers, in order");
}

/// Arms an idle timeout and a protocol timer far ahead, answers, and closes.
struct Timed;

impl Protocol for Timed {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.set_timeout(Some(Duration::from_secs(600)));
        t.call_later(Duration::from_secs(600), 7);
    }
    fn data_received(&mut self, t: &mut Transport<'_>, _d: &[u8]) {
        t.write(b"bye");
        t.lose_connection();
    }
}

#[test]
fn closed_connections_leave_no_timers_behind() {
    let (tx, rx) = mpsc::channel();
    let (addr, t) = serve(move |r| {
        let h = r.handle();
        // Report the timer count every 50 ms until told to stop.
        fn tick(h: twistrs_core::Handle, tx: mpsc::Sender<usize>) {
            if tx.send(h.timer_count()).is_ok() {
                let h2 = h.clone();
                h.call_later(Duration::from_millis(50), move || tick(h2, tx));
            } else {
                h.stop();
            }
        }
        tick(h, tx);
        Some(
            r.add_factory(Box::new(ProtocolFactory::for_protocol("Timed", || {
                Box::new(Timed) as Box<dyn Protocol>
            }))),
        )
    });
    for _ in 0..2000 {
        let mut c = client(addr);
        c.write_all(b"x").unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye");
    }
    // Every connection is closed; what the queue holds now is the ticker and what awaits
    // removal, not 4,000 timers due in ten minutes. Counts sent before now are stale.
    while rx.try_recv().is_ok() {}
    let last = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a fresh count");
    assert!(
        last < 200,
        "{last} timers left after 2,000 closed connections"
    );
    drop(rx);
    assert_eq!(t.join().unwrap(), StopReason::Requested);
}

#[test]
fn a_stop_queued_before_run_returns_without_waiting_for_an_event() {
    let mut r = Reactor::with_config(ReactorConfig {
        handle_signals: false,
        ..ReactorConfig::default()
    })
    .expect("reactor");
    let h = r.handle();
    // Only a far timer would wake the poll: the stop must be seen before it.
    let guard = h.call_later(Duration::from_secs(5), || {});
    h.stop();
    let t0 = Instant::now();
    assert_eq!(r.run().expect("run"), StopReason::Requested);
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    guard.cancel();
}

/// A resolver's pattern: a listener takes a question, a client port opened with
/// `Handle::open_udp` asks an upstream server, and its answer leaves through the listener with
/// `Handle::send_datagram`, outside the listener's own callback; `close_port` closes it.
#[test]
fn client_udp_ports_relay_through_a_listener() {
    use std::net::UdpSocket;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use twistrs_core::{DatagramProtocol, DatagramTransport, Handle, PortId};

    struct Upstream {
        server: SocketAddr,
        question: Vec<u8>,
        listener: PortId,
        client: SocketAddr,
        me: Option<PortId>,
        closed: Arc<AtomicUsize>,
    }
    impl DatagramProtocol for Upstream {
        fn name(&self) -> &'static str {
            "Upstream"
        }
        fn port_opened(&mut self, t: &mut DatagramTransport<'_>) {
            self.me = Some(t.port());
            t.write(&self.question, self.server);
        }
        fn datagram_received(&mut self, t: &mut DatagramTransport<'_>, data: &[u8], _: SocketAddr) {
            let mut answer = b"via relay: ".to_vec();
            answer.extend_from_slice(data);
            t.handle().send_datagram(self.listener, answer, self.client);
            if let Some(me) = self.me {
                t.handle().close_port(me);
            }
        }
        fn stop_protocol(&mut self) {
            self.me = None;
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
    }
    struct Front {
        server: SocketAddr,
        handle: Option<Handle>,
        closed: Arc<AtomicUsize>,
    }
    impl DatagramProtocol for Front {
        fn name(&self) -> &'static str {
            "Front"
        }
        fn start_protocol(&mut self, h: &Handle) {
            self.handle = Some(h.clone());
        }
        fn datagram_received(
            &mut self,
            t: &mut DatagramTransport<'_>,
            data: &[u8],
            from: SocketAddr,
        ) {
            if data == b"stop" {
                return t.handle().stop();
            }
            let up = Upstream {
                server: self.server,
                question: data.to_vec(),
                listener: t.port(),
                client: from,
                me: None,
                closed: self.closed.clone(),
            };
            t.handle()
                .open_udp("127.0.0.1:0".parse().unwrap(), Box::new(up));
        }
    }

    // The upstream server: answers each datagram in upper case, from a thread of its own.
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    upstream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let server = upstream.local_addr().unwrap();
    let up = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..3 {
            let Ok((n, from)) = upstream.recv_from(&mut buf) else {
                break;
            };
            seen.push(from.port());
            upstream
                .send_to(&buf[..n].to_ascii_uppercase(), from)
                .unwrap();
        }
        seen
    });
    let (tx, rx) = mpsc::channel();
    let closed = Arc::new(AtomicUsize::new(0));
    let closed2 = closed.clone();
    let t = std::thread::spawn(move || {
        let mut r = quiet_reactor();
        let ep: Endpoint = "udp:0:interface=127.0.0.1".parse().unwrap();
        let id = r
            .listen_udp(
                &ep,
                Box::new(Front {
                    server,
                    handle: None,
                    closed: closed2,
                }),
            )
            .unwrap();
        tx.send(r.listener_address(id).unwrap().socket_addr().unwrap())
            .unwrap();
        r.run().unwrap()
    });
    let front = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for q in ["one", "two", "three"] {
        c.send_to(q.as_bytes(), front).unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = c.recv_from(&mut buf).expect("an answer through the relay");
        assert_eq!(from, front, "the answer comes from the listener's port");
        assert_eq!(
            &buf[..n],
            format!("via relay: {}", q.to_uppercase()).as_bytes()
        );
    }
    let ports = up.join().unwrap();
    assert_eq!(ports.len(), 3);
    assert!(
        !ports.contains(&front.port()),
        "questions left from client ports"
    );
    c.send_to(b"stop", front).unwrap();
    assert_eq!(t.join().unwrap(), StopReason::Requested);
    assert_eq!(
        closed.load(Ordering::SeqCst),
        3,
        "each client port was closed"
    );
}

/// A datagram sent with `Handle::send_datagram` that cannot leave the port (an IPv6
/// destination from an IPv4 port) is reported to the port's protocol, so a resolver can move
/// on to its next server at once; one that leaves is not. Before, it was dropped with a debug
/// line only, and the resolver waited out a try that never went.
#[test]
fn a_datagram_that_cannot_leave_is_reported_to_its_port() {
    use std::net::UdpSocket;
    use twistrs_core::{DatagramProtocol, DatagramTransport, Handle};

    struct Client {
        handle: Handle,
        live: SocketAddr,
        failed: Rc<RefCell<Vec<(SocketAddr, std::io::ErrorKind)>>>,
    }
    impl DatagramProtocol for Client {
        fn name(&self) -> &'static str {
            "Client"
        }
        fn port_opened(&mut self, t: &mut DatagramTransport<'_>) {
            let port = t.port();
            self.handle.send_datagram(port, b"one".to_vec(), self.live);
            self.handle
                .send_datagram(port, b"two".to_vec(), "[::1]:9".parse().unwrap());
        }
        fn datagram_received(&mut self, _: &mut DatagramTransport<'_>, _: &[u8], _: SocketAddr) {}
        fn send_failed(&mut self, to: SocketAddr, error: &std::io::Error) {
            self.failed.borrow_mut().push((to, error.kind()));
            self.handle.stop();
        }
    }

    let live = UdpSocket::bind("127.0.0.1:0").unwrap();
    live.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = quiet_reactor();
    let h = r.handle();
    let failed = Rc::new(RefCell::new(Vec::new()));
    h.open_udp(
        "127.0.0.1:0".parse().unwrap(),
        Box::new(Client {
            handle: h.clone(),
            live: live.local_addr().unwrap(),
            failed: failed.clone(),
        }),
    );
    let guard = h.call_later(Duration::from_secs(5), {
        let h = h.clone();
        move || h.stop()
    });
    r.run().expect("run");
    guard.cancel();
    let mut buf = [0u8; 16];
    let (n, _) = live.recv_from(&mut buf).expect("the first datagram left");
    assert_eq!(&buf[..n], b"one");
    let failed = failed.borrow();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "[::1]:9".parse::<SocketAddr>().unwrap());
}

/// Writes its connection's log system and closes.
struct SaySystem;
impl Protocol for SaySystem {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        let system = t.system();
        t.write(system.as_bytes());
        t.lose_connection();
    }
    fn data_received(&mut self, _t: &mut Transport<'_>, _d: &[u8]) {}
}

#[test]
fn sessions_are_numbered_from_first_by_step_and_from_zero_by_one_by_default() {
    for (first, step, want) in [(None, 0, [0, 1, 2]), (Some(1), 3, [1, 4, 7])] {
        let (addr, t) = serve(move |r| {
            if let Some(first) = first {
                r.number_sessions(first, step);
            }
            let f = r.add_factory(Box::new(ProtocolFactory::for_protocol("Say", || {
                Box::new(SaySystem) as Box<dyn Protocol>
            })));
            // Bounded: the thread is not joined.
            let h = r.handle();
            let stop = h.clone();
            h.call_later(Duration::from_secs(10), move || stop.stop());
            Some(f)
        });
        let got: Vec<String> = (0..3)
            .map(|_| {
                let mut s = String::new();
                client(addr).read_to_string(&mut s).unwrap();
                s
            })
            .collect();
        let want: Vec<String> = want.iter().map(|n| format!("Say,{n},127.0.0.1")).collect();
        assert_eq!(got, want);
        drop(t);
    }
}
