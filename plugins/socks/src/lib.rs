//! The `socks` plugin: a SOCKS 4, 4a and 5 proxy with twistd's `socks` command line.

pub mod negotiate;
#[cfg(test)]
mod prop;
pub mod rules;
pub mod udp_header;
