//! Services (Twisted's `IService`): what the launcher starts and stops, in order.
//!
//! Start-up is in two steps as in twistd: `privileged_start_service` binds ports while the
//! process may still be root, `start_service` runs after privileges were dropped. A service
//! sees the reactor through a [`ServiceHost`]: factories, ports and a handle, not the
//! launcher's own controls (signals, the restart hand-over).

use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use crate::address::Address;
use crate::deferred::Deferred;
use crate::endpoint::Endpoint;
use crate::error::Failure;
use crate::protocol::{DatagramProtocol, Factory};
use crate::reactor::{
    FactoryId, Handle, ListenError, ListenerId, OnAccept, OnReadable, Reactor, WatchId,
};

/// The reactor as a service sees it while starting and stopping.
pub struct ServiceHost<'a> {
    reactor: &'a mut Reactor,
}

impl Reactor {
    /// The reactor as services see it (what the launcher hands to `Service` methods).
    pub fn service_host(&mut self) -> ServiceHost<'_> {
        ServiceHost { reactor: self }
    }
}

impl ServiceHost<'_> {
    /// Registers a factory; listeners started with its id share it.
    pub fn add_factory(&mut self, factory: Box<dyn Factory>) -> FactoryId {
        self.reactor.add_factory(factory)
    }

    /// Opens a stream endpoint for `factory` (a successor of a restart gets the socket its
    /// predecessor had for the same endpoint).
    pub fn listen(&mut self, ep: &Endpoint, factory: FactoryId) -> Result<ListenerId, ListenError> {
        self.reactor.listen(ep, factory)
    }

    /// Opens a datagram endpoint for `proto`.
    pub fn listen_udp(
        &mut self,
        ep: &Endpoint,
        proto: Box<dyn DatagramProtocol>,
    ) -> Result<ListenerId, ListenError> {
        self.reactor.listen_udp(ep, proto)
    }

    /// Serves a listening socket the service opened itself (see
    /// [`Reactor::adopt_stream_port`]).
    pub fn adopt_stream_port(
        &mut self,
        fd: OwnedFd,
        ep: &Endpoint,
        factory: FactoryId,
    ) -> Result<ListenerId, ListenError> {
        self.reactor.adopt_stream_port(fd, ep, factory)
    }

    /// Serves a UDP socket the service opened itself (see [`Reactor::adopt_datagram_port`]).
    pub fn adopt_datagram_port(
        &mut self,
        fd: OwnedFd,
        ep: &Endpoint,
        proto: Box<dyn DatagramProtocol>,
    ) -> Result<ListenerId, ListenError> {
        self.reactor.adopt_datagram_port(fd, ep, proto)
    }

    /// Accepts on a listening socket and hands each connection over as a descriptor (see
    /// [`Reactor::adopt_handoff_port`]).
    pub fn adopt_handoff_port(
        &mut self,
        fd: OwnedFd,
        ep: &Endpoint,
        name: &str,
        on_accept: OnAccept,
    ) -> Result<ListenerId, ListenError> {
        self.reactor.adopt_handoff_port(fd, ep, name, on_accept)
    }

    /// Says when a socket is readable, without reading it (see
    /// [`Reactor::adopt_watched_port`]).
    pub fn adopt_watched_port(
        &mut self,
        fd: OwnedFd,
        ep: &Endpoint,
        name: &str,
        on_ready: OnReadable,
    ) -> Result<WatchId, ListenError> {
        self.reactor.adopt_watched_port(fd, ep, name, on_ready)
    }

    /// The socket a restart's predecessor handed over for `ep`: a service that opens its
    /// own sockets takes this one instead of binding anew.
    pub fn take_inherited_socket(&mut self, ep: &Endpoint) -> Option<OwnedFd> {
        self.reactor.take_inherited_socket(ep)
    }

    /// Closes a listening port.
    pub fn stop_listening(&mut self, id: ListenerId) {
        self.reactor.stop_listening(id)
    }

    /// The address a port is bound to.
    pub fn listener_address(&self, id: ListenerId) -> Option<Address> {
        self.reactor.listener_address(id)
    }

    /// The reactor's handle, for timers, threads and connections.
    pub fn handle(&self) -> Handle {
        self.reactor.handle()
    }
}

/// Something with a start and a stop.
pub trait Service {
    /// A name for log lines and errors.
    fn name(&self) -> &str;

    /// Binds ports and opens what needs privileges. Runs before privileges are dropped.
    fn privileged_start_service(&mut self, _h: &mut ServiceHost<'_>) -> Result<(), Failure> {
        Ok(())
    }

    /// Starts the service proper.
    fn start_service(&mut self, _h: &mut ServiceHost<'_>) -> Result<(), Failure> {
        Ok(())
    }

    /// Stops accepting new work; open connections are drained by the reactor afterwards.
    fn stop_service(&mut self, _h: &mut ServiceHost<'_>) {}

    /// A check (the launcher's `--check`, as `nginx -t`) runs this in place of
    /// `start_service`, privileges dropped as for a start: what `start_service` would open
    /// and could fail on (web's root) is opened here and let go; nothing starts. The default
    /// has nothing to check.
    fn check_service(&mut self) -> Result<(), Failure> {
        Ok(())
    }

    /// A restart (`twistrs restart`, SIGUSR2) is about to start the successor, which will
    /// run this service too while this process drains. What must never run twice (procmon's
    /// children: two copies of a program) stops here; the successor starts once the Deferred
    /// fires. Work that may overlap (connections, inetd's per-connection children) stays and
    /// is drained as at a stop. The default has nothing to stop.
    fn prepare_handover(&mut self, _h: &mut ServiceHost<'_>) -> Deferred<()> {
        Deferred::succeed(())
    }

    /// The successor failed: this process serves on, and takes back up what
    /// `prepare_handover` stopped.
    fn handover_failed(&mut self, _h: &mut ServiceHost<'_>) {}

    /// `Some(why)` if this service must run in one process only: `--workers N` would run a
    /// copy in each worker, so state that cannot be shared (a supervisor of programs, which
    /// would run each program N times) must say so here, and the launcher refuses `--workers`
    /// with `why` in its message. The default (None) is a service that scales: every worker
    /// runs it on the shared listeners.
    fn single_process(&self) -> Option<&str> {
        None
    }
}

/// A Deferred that fires once all of `ds` have (Twisted's `gatherResults`, for `()`), with
/// success whatever their outcomes: a hand-over waits for every part, not for its verdict.
pub fn when_all(ds: Vec<Deferred<()>>) -> Deferred<()> {
    let all = Deferred::new();
    let left = Rc::new(Cell::new(ds.len()));
    if ds.is_empty() {
        let _ = all.callback(());
    }
    for d in ds {
        let (all, left) = (all.clone(), left.clone());
        d.consume(move |_| {
            left.set(left.get() - 1);
            if left.get() == 0 {
                let _ = all.callback(());
            }
        });
    }
    all
}

/// A service made of services: started in order, stopped in reverse.
pub struct MultiService {
    name: String,
    children: Vec<Box<dyn Service>>,
}

impl MultiService {
    /// An empty one; `name` is for log lines and errors.
    pub fn new(name: impl Into<String>) -> Self {
        MultiService {
            name: name.into(),
            children: Vec::new(),
        }
    }

    /// Adds a child (Twisted's `setServiceParent`).
    pub fn add(&mut self, s: Box<dyn Service>) {
        self.children.push(s);
    }
}

impl Service for MultiService {
    fn name(&self) -> &str {
        &self.name
    }

    fn privileged_start_service(&mut self, r: &mut ServiceHost<'_>) -> Result<(), Failure> {
        self.children
            .iter_mut()
            .try_for_each(|c| c.privileged_start_service(r))
    }

    fn start_service(&mut self, r: &mut ServiceHost<'_>) -> Result<(), Failure> {
        self.children
            .iter_mut()
            .try_for_each(|c| c.start_service(r))
    }

    fn stop_service(&mut self, r: &mut ServiceHost<'_>) {
        for c in self.children.iter_mut().rev() {
            c.stop_service(r);
        }
    }

    fn check_service(&mut self) -> Result<(), Failure> {
        self.children.iter_mut().try_for_each(|c| c.check_service())
    }

    fn prepare_handover(&mut self, r: &mut ServiceHost<'_>) -> Deferred<()> {
        when_all(
            self.children
                .iter_mut()
                .map(|c| c.prepare_handover(r))
                .collect(),
        )
    }

    fn handover_failed(&mut self, r: &mut ServiceHost<'_>) {
        for c in &mut self.children {
            c.handover_failed(r);
        }
    }

    fn single_process(&self) -> Option<&str> {
        self.children.iter().find_map(|c| c.single_process())
    }
}

/// Builds one datagram protocol per UDP endpoint.
pub type DatagramBuilder = Box<dyn FnMut() -> Box<dyn DatagramProtocol>>;

/// Listens on every endpoint with one shared factory (twistd's repeated `--listen`), and
/// on `udp:` endpoints with a datagram protocol when the plugin has one.
pub struct ListeningService {
    name: String,
    endpoints: Vec<Endpoint>,
    factory: Option<Box<dyn Factory>>,
    datagram: Option<DatagramBuilder>,
    ports: Vec<ListenerId>,
}

impl ListeningService {
    /// Listens on each of `endpoints` with `factory` (one factory for them all, as Twisted's
    /// repeated `listenTCP` with one factory). `datagram` builds the protocol of each `udp:`
    /// endpoint; with `None`, a `udp:` endpoint is a start-up error naming the service.
    pub fn new(
        name: impl Into<String>,
        endpoints: Vec<Endpoint>,
        factory: Box<dyn Factory>,
        datagram: Option<DatagramBuilder>,
    ) -> Self {
        ListeningService {
            name: name.into(),
            endpoints,
            factory: Some(factory),
            datagram,
            ports: Vec::new(),
        }
    }

    /// The ports opened so far.
    pub fn ports(&self) -> &[ListenerId] {
        &self.ports
    }
}

impl Service for ListeningService {
    fn name(&self) -> &str {
        &self.name
    }

    fn privileged_start_service(&mut self, r: &mut ServiceHost<'_>) -> Result<(), Failure> {
        let Some(factory) = self.factory.take() else {
            return Ok(());
        };
        let fid = r.add_factory(factory);
        for ep in &self.endpoints {
            let id = if ep.is_datagram() {
                match &mut self.datagram {
                    Some(build) => r.listen_udp(ep, build()),
                    None => {
                        return Err(Failure::msg(format!(
                            "{}: '{ep}' is a datagram endpoint, but {} has no UDP service",
                            self.name, self.name
                        )));
                    }
                }
            } else {
                r.listen(ep, fid)
            };
            self.ports
                .push(id.map_err(|e| Failure::msg(e.to_string()))?);
        }
        Ok(())
    }

    fn stop_service(&mut self, r: &mut ServiceHost<'_>) {
        for id in self.ports.drain(..) {
            r.stop_listening(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_all_waits_for_every_part_and_ignores_failures() {
        assert!(when_all(Vec::new()).called());
        let (a, b) = (Deferred::new(), Deferred::new());
        let all = when_all(vec![a.clone(), b.clone(), Deferred::succeed(())]);
        assert!(!all.called());
        let _ = a.errback(Failure::msg("one part failed"));
        assert!(!all.called());
        let _ = b.callback(());
        assert!(all.called());
    }
}
