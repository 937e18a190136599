//! BIND: the one connection that comes to a BIND's port (`Handle::accept_one`), held with
//! its reading paused until the client's protocol has checked it, answered, and joined the
//! two into a relay.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use twistrs_core::{Address, ClientFactory, ConnId, Handle, Protocol, Reason, Transport};

/// What the client's protocol hears (through `Handle::notify`).
pub enum BindEvent {
    /// The peer connected; `joined` is set once the client joined it into a relay.
    Incoming {
        conn: ConnId,
        peer: SocketAddr,
        joined: Rc<Cell<bool>>,
    },
    /// No connection came in time (or the port failed).
    Failed(String),
}

/// Builds the protocol of the BIND port's one connection.
pub struct BindFactory {
    client: ConnId,
    handle: Handle,
    /// How long the peer may wait for the client to join it before it is closed.
    wait: Duration,
}

impl BindFactory {
    pub fn new(client: ConnId, handle: Handle, wait: Duration) -> Self {
        BindFactory {
            client,
            handle,
            wait,
        }
    }
}

impl ClientFactory for BindFactory {
    fn name(&self) -> &'static str {
        "SOCKSBind"
    }

    fn build_protocol(&mut self, peer: &Address) -> Box<dyn Protocol> {
        Box::new(BindPeer {
            client: self.client,
            peer: peer.socket_addr(),
            wait: self.wait,
            joined: Rc::default(),
        })
    }

    fn client_connection_failed(&mut self, reason: &Reason) {
        let why = match reason {
            Reason::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => format!(
                "no connection to the BIND port within {} s",
                self.wait.as_secs()
            ),
            r => format!("the BIND port failed: {r}"),
        };
        self.handle
            .notify(self.client, Box::new(BindEvent::Failed(why)));
    }
}

/// The peer's connection until it is joined: its reading paused, so nothing it sends is lost.
struct BindPeer {
    client: ConnId,
    peer: Option<SocketAddr>,
    wait: Duration,
    joined: Rc<Cell<bool>>,
}

const GIVE_UP: u64 = 1;

impl Protocol for BindPeer {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.pause_producing();
        let Some(peer) = self.peer else {
            return t.abort_connection();
        };
        let ev = BindEvent::Incoming {
            conn: t.id(),
            peer,
            joined: self.joined.clone(),
        };
        t.handle().notify(self.client, Box::new(ev));
        // If the client is gone (the notice finds no one), nobody joins this: give up.
        t.call_later(self.wait, GIVE_UP);
    }

    fn data_received(&mut self, _t: &mut Transport<'_>, _data: &[u8]) {}

    fn timer_fired(&mut self, t: &mut Transport<'_>, key: u64) {
        if key == GIVE_UP && !self.joined.get() {
            t.abort_connection();
        }
    }
}
