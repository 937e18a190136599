//! Ports a protocol opens for itself (`Handle::accept_one`, `Handle::open_owned_udp`) over real
//! sockets on 127.0.0.1: one connection and closed, a timeout, closed when dropped.

use std::cell::RefCell;
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use twistrs_core::{
    Address, ClientFactory, DatagramProtocol, DatagramTransport, Handle, OwnedPort, Protocol,
    Reactor, ReactorConfig, Reason, Transport,
};

/// Runs a reactor in a thread; `setup` opens ports and sends what the test needs on `tx`.
fn run_reactor<T: Send + 'static>(
    setup: impl FnOnce(&Handle, mpsc::Sender<T>) + Send + 'static,
) -> (mpsc::Receiver<T>, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut r = Reactor::with_config(ReactorConfig {
            handle_signals: false,
            ..ReactorConfig::default()
        })
        .expect("reactor");
        setup(&r.handle(), tx);
        r.run().expect("run");
    });
    (rx, t)
}

struct Greet;
impl Protocol for Greet {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.write(format!("hello {}\n", t.peer()).as_bytes());
        t.lose_connection();
    }
    fn data_received(&mut self, _t: &mut Transport<'_>, _data: &[u8]) {}
}

/// Builds `Greet`, or reports a failure on `failed` and stops the reactor.
struct OneGreeter {
    failed: Option<mpsc::Sender<String>>,
    handle: Handle,
}
impl ClientFactory for OneGreeter {
    fn name(&self) -> &'static str {
        "Greeter"
    }
    fn build_protocol(&mut self, _peer: &Address) -> Box<dyn Protocol> {
        Box::new(Greet)
    }
    fn client_connection_failed(&mut self, reason: &Reason) {
        if let Some(tx) = self.failed.take() {
            let _ = tx.send(reason.to_string());
        }
        self.handle.stop();
    }
}

fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

#[test]
fn accept_one_takes_one_connection_then_closes() {
    let (rx, t) = run_reactor(|h, tx| {
        let f = OneGreeter {
            failed: None,
            handle: h.clone(),
        };
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let port = h
            .accept_one(any, Box::new(f), Duration::from_secs(10))
            .expect("bind");
        tx.send(port.local_addr()).unwrap();
        // Kept until the test is done with it: the port closes after one connection anyway.
        let keep = RefCell::new(Some(port));
        let h2 = h.clone();
        h.call_later(Duration::from_millis(500), move || {
            keep.borrow_mut().take();
            h2.stop();
        });
    });
    let addr = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    c.read_to_string(&mut got).unwrap();
    assert_eq!(got, format!("hello {}\n", c.local_addr().unwrap()));
    assert!(
        refused(addr),
        "the listener closed after its one connection"
    );
    t.join().unwrap();
}

#[test]
fn accept_one_times_out_and_a_dropped_port_closes_silently() {
    let (rx, t) = run_reactor(
        |h, tx: mpsc::Sender<(SocketAddr, SocketAddr, mpsc::Receiver<String>)>| {
            let (ftx, frx) = mpsc::channel();
            let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
            let waiting = h
                .accept_one(
                    any,
                    Box::new(OneGreeter {
                        failed: Some(ftx),
                        handle: h.clone(),
                    }),
                    Duration::from_millis(300),
                )
                .expect("bind");
            let (dtx, _drx) = mpsc::channel();
            let dropped = h
                .accept_one(
                    any,
                    Box::new(OneGreeter {
                        failed: Some(dtx),
                        handle: h.clone(),
                    }),
                    Duration::from_secs(10),
                )
                .expect("bind");
            tx.send((waiting.local_addr(), dropped.local_addr(), frx))
                .unwrap();
            drop(dropped);
            // The timed-out one stays owned until the reactor stops.
            std::mem::forget(waiting);
        },
    );
    let (waiting, dropped, failed) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let why = failed.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(why.contains("no connection came in time"), "{why}");
    assert!(refused(waiting), "closed at the timeout");
    assert!(refused(dropped), "closed when its owner dropped it");
    t.join().unwrap();
}

/// Echoes datagrams behind a `>`, and stops the reactor on "stop".
struct UdpEcho {
    handle: Option<Handle>,
    stopped: Rc<RefCell<bool>>,
}
impl DatagramProtocol for UdpEcho {
    fn name(&self) -> &'static str {
        "UdpEcho"
    }
    fn start_protocol(&mut self, handle: &Handle) {
        self.handle = Some(handle.clone());
    }
    fn datagram_received(&mut self, t: &mut DatagramTransport<'_>, data: &[u8], from: SocketAddr) {
        t.write(&[b">", data].concat(), from);
    }
    fn stop_protocol(&mut self) {
        *self.stopped.borrow_mut() = true;
    }
}

#[test]
fn open_udp_serves_sends_and_closes_when_dropped() {
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    let (rx, t) = run_reactor(move |h, tx| {
        let stopped = Rc::new(RefCell::new(false));
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let port: OwnedPort = h
            .open_owned_udp(
                any,
                Box::new(UdpEcho {
                    handle: None,
                    stopped: stopped.clone(),
                }),
            )
            .expect("bind");
        port.send_to(b"first", peer_addr).unwrap();
        tx.send(port.local_addr()).unwrap();
        let keep = RefCell::new(Some(port));
        let h2 = h.clone();
        h.call_later(Duration::from_millis(500), move || {
            keep.borrow_mut().take();
            let h3 = h2.clone();
            h2.call_later(Duration::from_millis(50), move || {
                assert!(*stopped.borrow(), "the protocol heard it stop");
                h3.stop();
            });
        });
    });
    let port = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut buf = [0; 64];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"first"[..], port));
    peer.send_to(b"ping", port).unwrap();
    let (n, _) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b">ping");
    t.join().unwrap();
    // Gone: the port can be bound again.
    UdpSocket::bind(port).expect("the port was closed");
}
