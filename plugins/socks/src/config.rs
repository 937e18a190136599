//! What every connection of one `socks` service shares: logins, rules, limits and the log.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use twistrs_core::auth::Credentials;

use crate::connlog::ConnLog;
use crate::rules::Rules;

pub struct Config {
    /// `--auth`: SOCKS5 clients must log in, SOCKS4 is refused.
    pub creds: Option<Rc<Credentials>>,
    pub rules: Rules,
    /// The greeting, login and request must arrive within this.
    pub request_timeout: Duration,
    /// Resolving and connecting to a destination; a BIND's wait for its peer.
    pub connect_timeout: Duration,
    /// A relay (or a UDP association's connection) idle this long is closed.
    pub idle_timeout: Duration,
    pub log: Rc<RefCell<ConnLog>>,
}
