//! Integration tests: the real `twistrs` binary against real clients on 127.0.0.1.

mod check;
mod cli;
mod daemon;
mod dns;
mod dns_answer;
mod inetd;
mod interleave;
mod lifecycle;
mod load;
mod logs;
mod mail;
mod mail_tls;
mod man;
mod metrics;
mod ops;
mod pidfile;
mod portforward;
mod procmon;
mod socks;
mod support;
mod tls;
mod web;
mod web_room;
mod web_tls;
mod wire;
mod workers;
