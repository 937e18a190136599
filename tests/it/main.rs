//! Integration tests: the real `twistrs` binary against real clients on 127.0.0.1.

mod cli;
mod daemon;
mod lifecycle;
mod load;
mod mail;
mod mail_tls;
mod man;
mod pidfile;
mod portforward;
mod socks;
mod support;
mod tls;
mod web;
mod web_tls;
mod wire;
