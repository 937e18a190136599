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
//!
//! # A plugin
//!
//! A launcher does not call `listen` itself: a [`Plugin`] names a command (`twistrs upper`),
//! declares its options with [`clap`], and turns the parsed options into a [`Service`]; the
//! launcher runs it as a daemon with logs, a pidfile, `stop` and `restart`. This one answers
//! each line in upper case, worked out on a worker thread as Twisted's `deferToThread` would.
//! A callback cannot keep the [`Transport`] (it is lent to one callback), so where Twisted
//! writes `deferToThread(f).addCallback(self.sendLine)`, the protocol asks
//! [`Transport::call_in_thread`] and the thread's `Result<T, Failure>` comes back to
//! [`Protocol::notified`], boxed as `Any`, on the reactor thread:
//!
//! ```
//! use std::any::Any;
//! use std::time::Duration;
//! use twistrs_core::clap::{ArgMatches, Command};
//! use twistrs_core::line::{Line, LineReceiver};
//! use twistrs_core::options::ListenOpt;
//! use twistrs_core::testing::Harness;
//! use twistrs_core::{
//!     Failure, ListeningService, Plugin, PluginError, Protocol, ProtocolFactory, Service,
//!     Transport,
//! };
//!
//! const LISTEN: ListenOpt = ListenOpt::listen_stream(&["tcp:8024"]);
//!
//! /// Twisted's `LineReceiver` subclass: one answer at a time, in order.
//! struct Upper {
//!     lines: LineReceiver,
//!     busy: bool, // a line is on a worker thread
//!     eof: bool,  // the client has sent everything
//! }
//!
//! impl Upper {
//!     fn new() -> Self {
//!         Upper { lines: LineReceiver::new(b"\r\n", 1024), busy: false, eof: false }
//!     }
//!
//!     fn next_line(&mut self, t: &mut Transport<'_>) {
//!         while !self.busy {
//!             match self.lines.next_line() {
//!                 Some(Line::Complete(line)) => {
//!                     let line = line.to_vec();
//!                     self.busy = true;
//!                     t.call_in_thread(move || Ok::<_, Failure>(line.to_ascii_uppercase()));
//!                 }
//!                 Some(Line::TooLong) => t.write(b"-ERR line too long\r\n"),
//!                 None if self.eof => return t.lose_connection(),
//!                 None => return,
//!             }
//!         }
//!     }
//! }
//!
//! impl Protocol for Upper {
//!     fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
//!         self.lines.feed(data);
//!         self.next_line(t);
//!     }
//!
//!     fn notified(&mut self, t: &mut Transport<'_>, msg: Box<dyn Any>) {
//!         // Exactly the type the closure returned, in a Result with Failure.
//!         let Ok(result) = msg.downcast::<Result<Vec<u8>, Failure>>() else { return };
//!         self.busy = false;
//!         match *result {
//!             Ok(upper) => t.write(&[&upper[..], b"\r\n"].concat()),
//!             Err(f) => twistrs_core::log::error!(target: &t.system(), "upper failed: {f}"),
//!         }
//!         self.next_line(t);
//!     }
//!
//!     // The default closes at the client's EOF, and an answer still on a thread would be
//!     // lost (`printf 'hi\r\n' | nc` would get nothing): close once the last one is written.
//!     fn read_eof(&mut self, t: &mut Transport<'_>) {
//!         self.eof = true;
//!         self.next_line(t);
//!     }
//! }
//!
//! fn make_service(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
//!     let factory = ProtocolFactory::for_protocol("Upper", || {
//!         Box::new(Upper::new()) as Box<dyn Protocol>
//!     });
//!     // One factory on every `--listen` endpoint; no UDP protocol, so `udp:` is refused.
//!     Ok(Box::new(ListeningService::new("upper", LISTEN.get(m)?, Box::new(factory), None)))
//! }
//!
//! /// What the launcher's list takes: `twistrs::builtin_plugins()` plus this.
//! pub fn plugin() -> Plugin {
//!     const ABOUT: &str = "Answers each line in upper case.";
//!     Plugin {
//!         tapname: "upper",
//!         description: ABOUT,
//!         options: || Command::new("upper").about(ABOUT).arg(LISTEN.arg()),
//!         make_service,
//!     }
//! }
//!
//! // The protocol on a string transport (Twisted's `proto_helpers.StringTransport`), in any
//! // chunking; `wait_for_threads` delivers the workers' results as the reactor would.
//! let mut h = Harness::new(Upper::new());
//! h.connect().feed(b"hello\r\nwor").feed(b"ld\r\n").eof();
//! h.wait_for_threads(Duration::from_secs(10));
//! assert_eq!(h.take_output(), b"HELLO\r\nWORLD\r\n");
//! assert!(h.lost().is_some_and(|r| r.is_clean()), "closed after the last answer");
//!
//! // The options as the launcher parses them (`twistrs upper --listen tcp:0`).
//! let p = plugin();
//! let m = (p.options)().get_matches_from(["upper", "--listen", "tcp:0"]);
//! assert_eq!((p.make_service)(&m).unwrap().name(), "upper");
//! ```
//!
//! The launcher around it is a `main` of four lines on the `twistrs` crate (see its docs);
//! `examples/greeter` in the repository is a whole one, with a test that runs the binary.

#![warn(missing_docs)]

pub mod address;
pub mod addrinfo;
pub mod auth;
pub mod client;
mod connection;
pub mod deferred;
pub mod endpoint;
pub mod error;
pub mod files;
pub mod limit;
pub mod line;
pub mod linelog;
pub mod logsys;
pub mod metrics;
pub mod options;
mod output;
pub mod owner;
pub mod plugin;
pub mod process;
#[cfg(test)]
mod prop;
pub mod protocol;
pub mod reactor;
pub mod relay;
pub mod reread;
pub mod service;
pub mod testing;
pub mod threads;
pub mod throttle;
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
    ClientFactory, DatagramProtocol, Factory, Protocol, ProtocolFactory, Room, STOP_GRACE,
};
pub use reactor::{
    Accepted, FactoryId, Handle, ListenError, ListenerId, OnAccept, OnReadable, OwnedPort, PortId,
    Reactor, ReactorConfig, SAME_STOP, SignalAction, StopReason, WatchId,
};
pub use relay::{Ending, OnEnd, Outgoing, RelayEnd, RelayOptions, RelayRequest, SharedOnEnd};
pub use service::{ListeningService, MultiService, Service, ServiceHost};
pub use timer::{Clock, DelayedCall};
pub use transport::{ConnId, DatagramTransport, Transport};
