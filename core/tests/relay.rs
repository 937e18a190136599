//! Relays in the reactor over real sockets on 127.0.0.1: connecting out (names resolved on a
//! worker thread, every address tried, a deadline), unix destinations, bytes both ways, the
//! half-close and the end report.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use twistrs_core::client::{Host, Resolver};
use twistrs_core::{
    Address, ConnectError, Destination, Endpoint, Factory, Outgoing, Protocol, Reactor,
    ReactorConfig, RelayEnd, RelayRequest, StopReason, Transport,
};

/// What the forwarder tells the test.
#[derive(Debug)]
enum Event {
    Connected(Address),
    Failed(String, Duration),
    Ended(RelayEnd),
}

/// Relays each connection to `dest`.
struct Forward {
    dest: Destination,
    timeout: Duration,
    events: mpsc::Sender<Event>,
    started: Option<Instant>,
    /// Says `done_when_joined`: its relay (of plain sockets) becomes a compact pair.
    done: bool,
}

impl Protocol for Forward {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        self.started = Some(Instant::now());
        let tx = self.events.clone();
        t.connect_relay(
            RelayRequest::new(self.dest.clone())
                .connect_timeout(self.timeout)
                .forward(b"hello|".to_vec())
                .on_end(move |e| {
                    let _ = tx.send(Event::Ended(e.clone()));
                }),
        );
    }
    fn data_received(&mut self, _t: &mut Transport<'_>, _d: &[u8]) {
        panic!("a relay's bytes never reach its protocol");
    }
    fn relay_connected(&mut self, _t: &mut Transport<'_>, out: &Outgoing) {
        let _ = self.events.send(Event::Connected(out.peer.clone()));
    }
    fn relay_connection_failed(&mut self, t: &mut Transport<'_>, e: &ConnectError) {
        let took = self.started.map_or(Duration::ZERO, |s| s.elapsed());
        let _ = self.events.send(Event::Failed(e.to_string(), took));
        t.lose_connection();
    }
    fn done_when_joined(&self) -> bool {
        self.done
    }
}

/// Chooses each connection's destination by the order connections arrive.
struct Dests {
    dests: Vec<Destination>,
    timeout: Duration,
    events: mpsc::Sender<Event>,
    done: bool,
}

impl Factory for Dests {
    fn name(&self) -> &'static str {
        "Forward"
    }
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        let dest = if self.dests.len() > 1 {
            self.dests.remove(0)
        } else {
            self.dests[0].clone()
        };
        Some(Box::new(Forward {
            dest,
            timeout: self.timeout,
            events: self.events.clone(),
            started: None,
            done: self.done,
        }))
    }
}

/// A reactor thread serving the factory `make` adds on 127.0.0.1 until the stopper is
/// called (then a stop, a drain, and a check that the stop was the one asked for).
fn serve(
    make: impl FnOnce(&mut Reactor) -> twistrs_core::FactoryId + Send + 'static,
) -> (SocketAddr, impl FnOnce()) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let mut r = Reactor::with_config(ReactorConfig {
            handle_signals: false,
            ..ReactorConfig::default()
        })
        .expect("reactor");
        let f = make(&mut r);
        let ep: Endpoint = "tcp:0:interface=127.0.0.1".parse().unwrap();
        let id = r.listen(&ep, f).expect("listen");
        ready_tx
            .send(r.listener_address(id).unwrap().socket_addr().unwrap())
            .unwrap();
        fn poll_stop(h: twistrs_core::Handle, rx: mpsc::Receiver<()>) {
            if rx.try_recv().is_ok() {
                return h.stop();
            }
            let h2 = h.clone();
            h.call_later(Duration::from_millis(20), move || poll_stop(h2, rx));
        }
        poll_stop(r.handle(), stop_rx);
        let reason = r.run().expect("run");
        r.drain(Duration::from_secs(2)).expect("drain");
        assert_eq!(reason, StopReason::Requested);
    });
    let addr = ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("ready");
    (addr, move || {
        let _ = stop_tx.send(());
        t.join().expect("reactor thread");
    })
}

/// A reactor thread forwarding to `dests` (one per connection, the last for the rest), with
/// `resolver`; returns its address, the events and a stopper.
fn forwarder(
    dests: Vec<Destination>,
    timeout: Duration,
    resolver: Option<Resolver>,
) -> (SocketAddr, mpsc::Receiver<Event>, impl FnOnce()) {
    forwarder_done(dests, timeout, resolver, false)
}

/// `forwarder`, its protocols done once joined if `done` (compact relays).
fn forwarder_done(
    dests: Vec<Destination>,
    timeout: Duration,
    resolver: Option<Resolver>,
    done: bool,
) -> (SocketAddr, mpsc::Receiver<Event>, impl FnOnce()) {
    let (tx, rx) = mpsc::channel();
    let (addr, stop) = serve(move |r| {
        if let Some(res) = resolver {
            r.handle().set_resolver(res);
        }
        r.add_factory(Box::new(Dests {
            dests,
            timeout,
            events: tx,
            done,
        }))
    });
    (addr, rx, stop)
}

fn client(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn next(rx: &mpsc::Receiver<Event>) -> Event {
    rx.recv_timeout(Duration::from_secs(10)).expect("an event")
}

fn accept(l: &TcpListener) -> TcpStream {
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn bytes_both_ways_the_half_close_and_the_end_report() {
    both_ways_the_half_close_and_the_end_report(false);
}

/// The same through a compact relay (issue 11): its protocols done at the join, its plain
/// sockets kept as one pair by the reactor.
#[test]
fn a_compact_relay_carries_both_ways_the_half_close_and_the_end_report() {
    both_ways_the_half_close_and_the_end_report(true);
}

fn both_ways_the_half_close_and_the_end_report(done: bool) {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let baddr = backend.local_addr().unwrap();
    let (addr, rx, stop) = forwarder_done(vec![baddr.into()], Duration::from_secs(5), None, done);
    let mut c = client(addr);
    c.write_all(b"request").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut b = accept(&backend);
    let mut got = Vec::new();
    b.read_to_end(&mut got).unwrap();
    assert_eq!(
        got, b"hello|request",
        "forwarded bytes first, then the client's, then EOF"
    );
    b.write_all(b"the reply after the client's FIN").unwrap();
    drop(b);
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"the reply after the client's FIN");
    assert!(matches!(next(&rx), Event::Connected(a) if a == Address::Tcp(baddr)));
    let Event::Ended(end) = next(&rx) else {
        panic!("no end report")
    };
    assert_eq!((end.to_dest, end.to_client), (13, 32), "{end:?}");
    assert!(end.clean, "{end:?}");
    assert!(end.joined, "{end:?}");
    stop();
}

#[test]
fn a_slow_resolver_does_not_hold_up_other_relays() {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = backend.local_addr().unwrap().port();
    let resolver: Resolver = Arc::new(|host, port| {
        if host == "slow.test" {
            std::thread::sleep(Duration::from_secs(3));
        }
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    });
    let (addr, rx, stop) = forwarder(
        vec![
            Destination::tcp("slow.test", port),
            Destination::tcp("fast.test", port),
        ],
        Duration::from_secs(10),
        Some(resolver),
    );
    let start = Instant::now();
    let _slow = client(addr);
    std::thread::sleep(Duration::from_millis(100));
    let mut fast = client(addr);
    let mut b = accept(&backend);
    fast.write_all(b"x").unwrap();
    let mut got = [0u8; 7];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello|x");
    b.write_all(b"y").unwrap();
    let mut y = [0u8; 1];
    fast.read_exact(&mut y).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the fast relay waited for the slow name: {:?}",
        start.elapsed()
    );
    // The slow one connects too, once its name resolves.
    let _b2 = accept(&backend);
    assert!(start.elapsed() >= Duration::from_secs(2));
    assert!(matches!(next(&rx), Event::Connected(_)));
    assert!(matches!(next(&rx), Event::Connected(_)));
    stop();
}

#[test]
fn every_address_is_tried_in_turn() {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let good = backend.local_addr().unwrap();
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let resolver: Resolver = Arc::new(move |_, _| Ok(vec![closed, good]));
    let (addr, rx, stop) = forwarder(
        vec![Destination::tcp("two.test", 1)],
        Duration::from_secs(5),
        Some(resolver),
    );
    let _c = client(addr);
    let _b = accept(&backend);
    assert!(matches!(next(&rx), Event::Connected(a) if a == Address::Tcp(good)));
    stop();
}

#[test]
fn failures_are_reported_refused_unresolved_and_timed_out() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // A listener that never accepts, with its one-place queue taken: SYNs are dropped, so a
    // connection to it neither succeeds nor fails until the deadline.
    let full = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    full.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    full.listen(0).unwrap();
    let full_addr = full.local_addr().unwrap().as_socket().unwrap();
    let _queued = TcpStream::connect(full_addr).unwrap();
    let resolver: Resolver = Arc::new(|host, _| match host {
        "stuck.test" => {
            std::thread::sleep(Duration::from_secs(2));
            Ok(vec![])
        }
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such host",
        )),
    });
    let (addr, rx, stop) = forwarder(
        vec![
            closed.into(),
            Destination::tcp("nowhere.test", 1),
            full_addr.into(),
            Destination::tcp("stuck.test", 1),
        ],
        Duration::from_millis(700),
        Some(resolver),
    );
    let expect = |why: &str, slow: bool| {
        let mut c = client(addr);
        let mut buf = Vec::new();
        let _ = c.read_to_end(&mut buf);
        assert!(buf.is_empty());
        match next(&rx) {
            Event::Failed(e, took) => {
                assert!(e.contains(why), "{e}");
                if slow {
                    assert!(
                        took >= Duration::from_millis(600) && took < Duration::from_secs(3),
                        "{why}: {took:?}"
                    );
                } else {
                    assert!(took < Duration::from_millis(500), "{why}: {took:?}");
                }
            }
            other => panic!("{why}: {other:?}"),
        }
    };
    expect("refused", false);
    expect("cannot resolve 'nowhere.test': no such host", false);
    expect("no connection within 0.7 s", true);
    expect("no connection within 0.7 s", true);
    stop();
}

#[test]
fn a_unix_socket_destination() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backend.sock");
    let backend = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (addr, rx, stop) = forwarder(
        vec![Destination::Unix(path.clone())],
        Duration::from_secs(5),
        None,
    );
    let mut c = client(addr);
    c.write_all(b"over unix").unwrap();
    let (mut b, _) = backend.accept().unwrap();
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = [0u8; 15];
    b.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello|over unix");
    b.write_all(b"and back").unwrap();
    drop(b);
    let mut back = Vec::new();
    c.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"and back");
    assert!(matches!(next(&rx), Event::Connected(Address::Unix(Some(p))) if p == path));
    stop();
}

#[test]
fn host_names_parse_as_addresses_when_they_are() {
    assert_eq!(
        Destination::tcp("::1", 80),
        Destination::Tcp {
            host: Host::Ip("::1".parse().unwrap()),
            port: 80
        }
    );
}

/// A compact relay whose destination stops reading stops reading its client (the client's
/// writes block after the buffers on the way and the high-water mark), and then carries
/// everything, in order, once the destination reads again; a clean close at the destination
/// closes the client.
#[test]
fn a_compact_relay_holds_back_a_client_its_destination_does_not_read() {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let baddr = backend.local_addr().unwrap();
    let (addr, rx, stop) = forwarder_done(vec![baddr.into()], Duration::from_secs(5), None, true);
    let mut c = client(addr);
    let mut b = accept(&backend);
    let mut hello = [0; 6];
    b.read_exact(&mut hello).unwrap();
    assert!(matches!(next(&rx), Event::Connected(_)));
    // Write until the client's socket takes no more, within a bound in bytes and in time.
    c.set_nonblocking(true).unwrap();
    let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let (mut sent, limit, until) = (0usize, 256 << 20, Instant::now() + Duration::from_secs(10));
    let mut idle_since = Instant::now();
    while sent < limit && Instant::now() < until {
        match c.write(&chunk[sent % chunk.len()..]) {
            Ok(n) => {
                sent += n;
                idle_since = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Held back for a while: the relay stopped reading.
                if idle_since.elapsed() > Duration::from_millis(500) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("write: {e}"),
        }
    }
    assert!(
        sent < limit,
        "the client was never held back: {sent} bytes taken"
    );
    c.set_nonblocking(false).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    b.read_to_end(&mut got).unwrap();
    assert_eq!(
        got.len(),
        sent,
        "everything arrives once the destination reads"
    );
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, x)| *x == chunk[i % chunk.len()]),
        "in order"
    );
    drop(b);
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let Event::Ended(end) = next(&rx) else {
        panic!("no end report")
    };
    assert_eq!(
        (end.to_dest as usize, end.to_client),
        (sent + 6, 0),
        "{end:?}"
    );
    stop();
}

/// Relays to `dest`; says `done_when_joined` if `done`. `marker` counts the live ones.
struct Marked {
    dest: Destination,
    done: bool,
    _marker: Arc<()>,
}

impl Protocol for Marked {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.connect_relay(RelayRequest::new(self.dest.clone()));
    }
    fn data_received(&mut self, _t: &mut Transport<'_>, _d: &[u8]) {}
    fn done_when_joined(&self) -> bool {
        self.done
    }
}

struct MarkedFactory(Destination, bool, Arc<()>);

impl Factory for MarkedFactory {
    fn name(&self) -> &'static str {
        "Marked"
    }
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(Marked {
            dest: self.0.clone(),
            done: self.1,
            _marker: self.2.clone(),
        }))
    }
}

/// Whether a joined relay still holds its client's protocol, for `done_when_joined` = `done`.
fn protocol_kept_when_joined(done: bool) -> bool {
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let dest: Destination = backend.local_addr().unwrap().into();
    let marker = Arc::new(());
    let m = marker.clone();
    let (addr, stop) = serve(move |r| r.add_factory(Box::new(MarkedFactory(dest, done, m))));
    let mut c = client(addr);
    let mut b = accept(&backend);
    // A round trip through the relay: it is joined, relay_connected has run.
    c.write_all(b"ping").unwrap();
    let mut got = [0; 4];
    b.read_exact(&mut got).unwrap();
    b.write_all(b"pong").unwrap();
    c.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"pong");
    // The factory's and the test's, and the protocol's if it is kept.
    let kept = Arc::strong_count(&marker) == 3;
    drop((c, b));
    stop();
    kept
}

#[test]
fn a_protocol_done_when_joined_is_dropped_at_the_join() {
    assert!(protocol_kept_when_joined(false));
    assert!(!protocol_kept_when_joined(true));
}

/// Joins each connection with the one before it, which has closed by then.
struct JoinStale {
    last: std::rc::Rc<std::cell::Cell<Option<twistrs_core::ConnId>>>,
    events: mpsc::Sender<Event>,
}

impl Protocol for JoinStale {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        let Some(gone) = self.last.replace(Some(t.id())) else {
            return t.lose_connection();
        };
        let tx = self.events.clone();
        t.handle().join(
            t.id(),
            gone,
            twistrs_core::RelayOptions {
                idle_timeout: None,
                on_join: None,
                on_end: Some(twistrs_core::relay::OnEnd::Once(Box::new(
                    move |e: &RelayEnd| {
                        let _ = tx.send(Event::Ended(e.clone()));
                    },
                ))),
            },
        );
    }
    fn data_received(&mut self, _t: &mut Transport<'_>, _d: &[u8]) {}
}

struct JoinStaleFactory(JoinStale);

impl Factory for JoinStaleFactory {
    fn name(&self) -> &'static str {
        "JoinStale"
    }
    fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
        Some(Box::new(JoinStale {
            last: self.0.last.clone(),
            events: self.0.events.clone(),
        }))
    }
}

#[test]
fn a_join_with_a_side_already_gone_still_ends_and_closes_the_other() {
    let (tx, rx) = mpsc::channel();
    let (addr, stop) = serve(move |r| {
        r.add_factory(Box::new(JoinStaleFactory(JoinStale {
            last: Default::default(),
            events: tx,
        })))
    });
    // The first connection closes at once; the second is joined with it.
    let mut first = client(addr);
    let mut got = Vec::new();
    first.read_to_end(&mut got).unwrap();
    let mut second = client(addr);
    let Event::Ended(end) = next(&rx) else {
        panic!("no end report")
    };
    assert!(!end.clean, "{end:?}");
    assert!(!end.joined, "{end:?}");
    assert_eq!((end.to_dest, end.to_client), (0, 0), "{end:?}");
    assert_eq!(end.ended_by, twistrs_core::relay::Side::Dest, "{end:?}");
    assert!(
        end.reason.contains("before the relay was joined"),
        "{end:?}"
    );
    assert_eq!(end.client, Address::Tcp(second.local_addr().unwrap()));
    // The side left open is closed, not left waiting for nobody.
    let mut rest = Vec::new();
    second.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "on_end once"
    );
    stop();
}
