//! The reactor's part of relays ([`crate::relay`]): joining two connections, and telling the
//! other side when one closes.

use super::conn::{NetSocket, Stream};
use super::{Entry, Reactor};
use std::time::Duration;

use crate::address::Address;
use crate::error::Reason;
use crate::output::Socket;
use crate::relay::{
    self, ConnectRelay, Ending, Link, Outbound, Outgoing, Record, RelayEnd, RelayOptions, Side,
};
use crate::tls::stream::TlsStream;
use crate::transport::{ConnId, ConnState, Flag, Transport};

impl Reactor {
    /// `Transport::connect_relay`: connects to the destination, unless the client's TLS
    /// handshake has not ended. Then the request waits in the client's state, the handshake
    /// is read (nothing else), and its end asks again (`Conn::read_handshake`); a client that
    /// fails or never finishes its handshake closes without a connection ever made for it.
    pub(crate) fn connect_relay(&mut self, r: Box<ConnectRelay>) {
        if let Some(c) = self.conn_mut(r.from)
            && c.conn.st.link() == Link::Pending
            && c.conn.socket.handshaking()
        {
            let key = r.from.key as usize;
            c.conn.st.defer_relay(r);
            // The handshake may be waiting already: no readiness edge will come for it.
            c.conn.st.set(Flag::ReadPending, true);
            self.redrive.push(key);
            return;
        }
        let (dest, timeout) = (r.request.dest.clone(), r.request.connect_timeout);
        self.connect(dest, super::connect::Client::Relay(r), timeout);
    }

    /// The outgoing connection of a relay is up (in slot `key`, still registered from its
    /// connect): adopt it, join it with the connection that asked, and tell that one's
    /// protocol.
    pub(crate) fn relay_connected(
        &mut self,
        key: usize,
        id: ConnId,
        stream: Stream,
        peer: Address,
        host: Address,
        r: ConnectRelay,
    ) {
        // The client may have gone while this connected: then this one goes too.
        let (name, session) = match self.conn_mut(r.from) {
            Some(c) if c.conn.st.link() == Link::Pending => (c.conn.st.name(), c.conn.st.session),
            _ => {
                let mut stream = stream;
                let _ = self.poll.registry().deregister(stream.source());
                self.to_free.push(key);
                return;
            }
        };
        let now = self.handle.tick();
        let mut st = ConnState::new(id, peer.clone(), host.clone(), name, session, now);
        // Nothing is read before the join: its bytes are the client's (the join reads what
        // is already there: no readiness edge will come again for it).
        st.set(Flag::ReadPaused, true);
        let socket = match &r.request.tls {
            None => NetSocket::Plain(stream),
            // The ClientHello, queued when the session is made, leaves now, whether or not
            // the client ever sends anything. A destination already gone is a failed connect
            // (were it met in the adoption's drive, the destination would close unjoined and
            // the client wait for its relay forever).
            Some(tls) => match TlsStream::client(stream, tls.config.clone(), tls.name.clone())
                .and_then(|mut t| t.flush_pending().map(|_| t))
            {
                Ok(t) => NetSocket::TlsClient(Box::new(t)),
                // The stream is closed with it (and so out of the poll).
                Err(e) => {
                    self.to_free.push(key);
                    return self.relay_failed(r.from, &crate::client::ConnectError::Io(e));
                }
            },
        };
        self.adopt_connection(key, socket, Box::new(Outbound), st, None);
        // The idle checks are armed below, once it is known whether the pair is compact.
        let idle = r.request.options.idle_timeout;
        let options = RelayOptions {
            idle_timeout: None,
            on_end: r.request.options.on_end,
            on_join: r.request.options.on_join,
        };
        if !self.join_pair(r.from, id, options) {
            return;
        }
        if let Some(Entry::Conn(c)) = self.entries.get_mut(key) {
            c.conn.st.write(&r.request.forward);
        }
        let out = Outgoing { peer, host };
        self.with_conn(r.from.key as usize, |p, t| p.relay_connected(t, &out));
        if let Some(c) = self.conn_mut(r.from)
            && c.conn.st.link().peer().is_some()
            && c.proto.done_when_joined()
        {
            c.proto = Box::new(relay::Joined);
            if self.compact_pair(r.from, id, idle) {
                return;
            }
        }
        if idle.is_some() {
            let handle = self.handle.clone();
            for side in [r.from, id] {
                if let Some(c) = self.conn_mut(side)
                    && c.conn.st.link().peer().is_some()
                {
                    Transport::new(&mut c.conn.st, &handle).set_timeout(idle);
                }
            }
        }
        self.redrive.push(key);
    }

    /// `Handle::join`: two open connections without a relay become one.
    pub(crate) fn join_command(&mut self, client: ConnId, dest: ConnId, options: RelayOptions) {
        let free = |r: &mut Self, id| {
            r.conn_mut(id)
                .is_some_and(|c| c.conn.st.link() == Link::None && c.conn.st.accepts_output())
        };
        let (client_free, dest_free) = (free(self, client), free(self, dest));
        if client != dest && client_free && dest_free {
            self.join_pair(client, dest, options);
            return;
        }
        // A side went (or is closing) before the join: the relay ends before it began. Its
        // `on_end` still hears it, once, so that what counts open relays or writes a line per
        // relay stays true, and a side left open (with no relay of its own) closes after its
        // flush instead of waiting for nobody.
        let side = |r: &mut Self, id| {
            r.conn_mut(id)
                .map(|c| (c.conn.st.addrs.peer(), c.conn.st.system()))
        };
        let (c, d) = (side(self, client), side(self, dest));
        if let Some(f) = options.on_end {
            let (ended_by, gone) = if dest_free {
                (Side::Client, "the client")
            } else {
                (Side::Dest, "the destination")
            };
            let unknown = || Address::Unix(None);
            f.call(&RelayEnd {
                system: c.as_ref().map(|x| x.1.clone()).unwrap_or_default(),
                client: c.as_ref().map_or_else(unknown, |x| x.0.clone()),
                dest: d.as_ref().map_or_else(unknown, |x| x.0.clone()),
                to_dest: 0,
                to_client: 0,
                duration: Duration::ZERO,
                ended_by,
                reason: format!("{gone} closed before the relay was joined"),
                clean: false,
                joined: false,
                ending: Ending::Closed,
            });
        }
        if client != dest {
            for (id, free) in [(client, client_free), (dest, dest_free)] {
                if free {
                    self.handle.lose_connection(id);
                }
            }
        }
    }

    /// Joins `client` and `dest` (both open) and records the relay; false if either is gone.
    fn join_pair(&mut self, client: ConnId, dest: ConnId, options: RelayOptions) -> bool {
        let (kc, kd) = (client.key as usize, dest.key as usize);
        let Some((Entry::Conn(c), Entry::Conn(d))) = self.entries.get2_mut(kc, kd) else {
            return false;
        };
        if c.conn.st.id != client || d.conn.st.id != dest {
            return false;
        }
        let now = self.handle.tick();
        let record = Record::new(&c.conn.st, options.on_end, now);
        let id = self.relays.insert(record) as u32;
        relay::join(
            &mut c.conn.st,
            &mut d.conn.st,
            id,
            options.idle_timeout,
            &self.handle,
        );
        self.redrive.push(kc);
        self.redrive.push(kd);
        if let Some(f) = options.on_join {
            f();
        }
        true
    }

    /// Connection `st` of a relay closed for `reason`: the record learns it (and calls
    /// `on_end` after the second), and the other side closes after its flush, or at once if
    /// this one did not close cleanly.
    pub(crate) fn relay_side_closed(&mut self, st: &ConnState, reason: &Reason, fin_carried: bool) {
        if let Some(r) = st.link().relay().map(|r| r as usize)
            && let Some(rec) = self.relays.get_mut(r)
            && rec.closed(st, reason, self.handle.tick(), fin_carried)
        {
            self.relays.remove(r);
        }
        let Some(peer) = st.link().peer() else {
            return;
        };
        let Some(c) = self.conn_mut(peer) else {
            return;
        };
        if relay::widow(&mut c.conn.st, reason) {
            self.close(peer.key as usize, Reason::Aborted);
        } else {
            self.redrive.push(peer.key as usize);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::Arc;

    use mio::net::UnixStream;
    use mio::{Interest, Token};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, RootCertStore};

    use super::*;
    use crate::client::{ConnectError, Destination};
    use crate::protocol::Protocol;
    use crate::reactor::ReactorConfig;
    use crate::relay::RelayRequest;
    use crate::tls::ClientTls;
    use crate::transport::Transport;

    /// Says what its relay became.
    struct Told(Rc<RefCell<Vec<String>>>);

    impl Protocol for Told {
        fn data_received(&mut self, _t: &mut Transport<'_>, _data: &[u8]) {}
        fn relay_connected(&mut self, _t: &mut Transport<'_>, _out: &Outgoing) {
            self.0.borrow_mut().push("connected".into());
        }
        fn relay_connection_failed(&mut self, t: &mut Transport<'_>, e: &ConnectError) {
            self.0.borrow_mut().push(format!("failed: {e}"));
            t.lose_connection();
        }
    }

    #[test]
    fn a_tls_destination_gone_before_its_client_hello_leaves_fails_the_connect() {
        let mut r = Reactor::with_config(ReactorConfig {
            handle_signals: false,
            ..ReactorConfig::default()
        })
        .expect("reactor");
        let told = Rc::new(RefCell::new(Vec::new()));
        // The client, waiting for its relay as `connect_relay` leaves it.
        let (client, _client_end) = UnixStream::pair().expect("a socket pair");
        let ckey = r.entries.insert(Entry::Closed);
        let from = r.next_id(ckey);
        let unix = || Address::Unix(None);
        let mut st = ConnState::new(from, unix(), unix(), "Test", 0, r.handle.tick());
        st.set_link(Link::Pending);
        st.pause_reading();
        let proto = Box::new(Told(told.clone()));
        r.add_connection(
            ckey,
            NetSocket::Plain(Stream::Unix(client)),
            proto,
            st,
            None,
        )
        .expect("add the client");
        // Its destination connected, and its peer is already gone: the ClientHello cannot
        // be sent.
        let (mut dest, gone) = UnixStream::pair().expect("a socket pair");
        drop(gone);
        let dkey = r.entries.insert(Entry::Closed);
        let id = r.next_id(dkey);
        r.poll
            .registry()
            .register(
                &mut dest,
                Token(dkey),
                Interest::READABLE | Interest::WRITABLE,
            )
            .expect("register");
        let config = ClientConfig::builder_with_provider(crate::tls::provider())
            .with_protocol_versions(rustls::DEFAULT_VERSIONS)
            .expect("versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth();
        let tls = ClientTls {
            config: Arc::new(config),
            name: ServerName::try_from("backend.test").expect("a name"),
        };
        let request = RelayRequest::new(Destination::Unix("/nowhere".into())).tls(Some(tls));
        let r2 = ConnectRelay { from, request };
        r.relay_connected(dkey, id, Stream::Unix(dest), unix(), unix(), r2);
        let got = told.borrow().clone();
        assert_eq!(got.len(), 1, "the client hears once: {got:?}");
        assert!(got[0].starts_with("failed: "), "{got:?}");
        assert!(
            r.conn_mut(from)
                .is_none_or(|c| c.conn.st.link() == Link::None)
        );
    }
}
