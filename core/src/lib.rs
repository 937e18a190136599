//! twistrs-core: the single-threaded mio reactor and the plugin API, in Twisted's vocabulary.
//!
//! A plugin author who knows Twisted finds the same concepts here: a [`Protocol`] is built per
//! connection by a [`Factory`] and talks to its peer through a [`Transport`]; timers are
//! [`DelayedCall`]s; one-shot results are [`Deferred`]s; a [`Service`] tree is started and
//! stopped by the launcher; a [`Plugin`] is Twisted's `IServiceMaker`.
//!
//! Twisted's echo server reads almost line for line:
//!
//! ```no_run
//! use twistrs_core::{Address, Factory, Protocol, Reactor, Transport, Endpoint};
//!
//! struct Echo;
//! impl Protocol for Echo {
//!     fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
//!         t.write(data);
//!     }
//! }
//!
//! struct EchoFactory;
//! impl Factory for EchoFactory {
//!     fn name(&self) -> &'static str { "Echo" }
//!     fn build_protocol(&mut self, _peer: &Address) -> Option<Box<dyn Protocol>> {
//!         Some(Box::new(Echo))
//!     }
//! }
//!
//! let mut reactor = Reactor::new().unwrap();
//! let factory = reactor.add_factory(Box::new(EchoFactory));
//! let endpoint: Endpoint = "tcp:8000:interface=127.0.0.1".parse().unwrap();
//! reactor.listen(&endpoint, factory).unwrap();
//! reactor.run().unwrap();
//! ```

#![warn(missing_docs)]

pub mod address;
pub mod addrinfo;
pub mod auth;
pub mod client;
mod connection;
pub mod deferred;
pub mod endpoint;
pub mod error;
pub mod limit;
pub mod line;
pub mod linelog;
pub mod logsys;
pub mod metrics;
pub mod options;
mod output;
pub mod plugin;
pub mod process;
#[cfg(test)]
mod prop;
pub mod protocol;
pub mod reactor;
pub mod relay;
pub mod service;
pub mod testing;
pub mod threads;
pub mod timer;
pub mod tls;
pub mod transport;

/// The clap the plugin API is built on, so a plugin outside this repository uses the same one.
pub use clap;
/// The logging facade the launcher installs its logger for: a plugin logs with
/// `twistrs_core::log::info!(target: &t.system(), ...)` without a `log` dependency of its own.
pub use log;

pub use address::Address;
pub use client::{ClientEndpoint, ConnectError, Destination};
pub use deferred::Deferred;
pub use endpoint::{Endpoint, Interface};
pub use error::{Failure, Reason};
pub use plugin::{Plugin, PluginError};
pub use process::{
    ChildFd, ChildIo, Credentials, ProcessError, ProcessId, ProcessProtocol, ProcessSpec,
    ProcessStatus, ProcessTransport,
};
pub use protocol::{
    ClientFactory, DatagramProtocol, Factory, Protocol, ProtocolFactory, STOP_GRACE,
};
pub use reactor::{
    Accepted, FactoryId, Handle, ListenError, ListenerId, OnAccept, OnReadable, OwnedPort, PortId,
    Reactor, ReactorConfig, SignalAction, StopReason, WatchId,
};
pub use relay::{Ending, OnEnd, Outgoing, RelayEnd, RelayOptions, RelayRequest, SharedOnEnd};
pub use service::{ListeningService, MultiService, Service, ServiceHost};
pub use timer::{Clock, DelayedCall};
pub use transport::{ConnId, DatagramTransport, Transport};
