//! Outgoing TCP connections (Twisted's `connectTCP`): non-blocking connect, then a protocol.

use std::net::SocketAddr;
use std::time::Duration;

use mio::{Interest, Token};

use super::conn::{NetSocket, Stream};
use super::{Entry, Reactor};
use crate::address::Address;
use crate::error::Reason;
use crate::protocol::ClientFactory;
use crate::timer::{DelayedCall, Target};
use crate::transport::{ConnId, ConnState, IDLE_KEY};

pub(crate) struct Connecting {
    pub(crate) id: ConnId,
    pub(crate) stream: mio::net::TcpStream,
    pub(crate) factory: Box<dyn ClientFactory>,
    pub(crate) timer: DelayedCall,
}

impl Reactor {
    pub(crate) fn start_connect(
        &mut self,
        addr: SocketAddr,
        mut factory: Box<dyn ClientFactory>,
        timeout: Duration,
    ) {
        let mut stream = match mio::net::TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => {
                factory.client_connection_failed(&Reason::Io(e));
                return;
            }
        };
        let key = self.entries.vacant_key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            factory.client_connection_failed(&Reason::Io(e));
            return;
        }
        let id = self.next_id(key);
        let timer = self
            .handle
            .timers()
            .schedule(timeout, Target::Conn(id, IDLE_KEY));
        self.entries.insert(Entry::Connecting(Connecting {
            id,
            stream,
            factory,
            timer,
        }));
        self.live_conns += 1;
    }

    /// The connecting socket became ready: connected, or failed.
    pub(crate) fn connect_ready(&mut self, key: usize) {
        let Some(Entry::Connecting(c)) = self.entries.get_mut(key) else {
            return;
        };
        match c.stream.take_error() {
            Ok(Some(e)) | Err(e) => return self.close(key, Reason::Io(e)),
            Ok(None) => {}
        }
        let peer = match c.stream.peer_addr() {
            Ok(p) => p,
            // Not connected yet (a spurious wake-up): wait for the next event.
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => return,
            Err(e) => return self.close(key, Reason::Io(e)),
        };
        let Entry::Connecting(mut c) = std::mem::replace(&mut self.entries[key], Entry::Closed)
        else {
            return;
        };
        c.timer.cancel();
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.live_conns -= 1;
        let _ = c.stream.set_nodelay(true);
        let host = c
            .stream
            .local_addr()
            .map_or(Address::Tcp(peer), Address::Tcp);
        let proto = c.factory.build_protocol(&Address::Tcp(peer));
        let st = ConnState::new(
            c.id,
            Address::Tcp(peer),
            host,
            c.factory.name(),
            0,
            self.handle.now(),
        );
        if let Err(e) = self.add_connection(
            key,
            NetSocket::Plain(Stream::Tcp(c.stream)),
            proto,
            st,
            None,
        ) {
            log::error!(target: "twistrs.reactor", "cannot register connection: {e}");
            self.to_free.push(key);
        }
    }

    pub(crate) fn connect_timed_out(&mut self, key: usize) {
        self.close(
            key,
            Reason::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection timed out",
            )),
        );
    }
}
