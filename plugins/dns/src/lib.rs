//! The `dns` plugin: twistd's `dns` (Twisted Names) on the twistrs reactor.
//!
//! Authoritative answers from BIND zone files and a hosts file, a forwarder with a cache for
//! other names (`-r`, `-c`), and secondary zones copied by AXFR. The message handling is
//! sans-IO (bytes in, bytes out) and unit-tested without sockets.

pub mod hosts;
pub mod lookup;
pub mod message;
pub mod name;
pub mod responder;
#[cfg(test)]
mod tests;
pub mod zone;
pub mod zonefile;
