//! Why a connection ended ([`Reason`]) and what a failed computation carries ([`Failure`]).

use std::fmt;
use std::io;

/// Why a connection was lost, passed to `Protocol::connection_lost` (Twisted's `reason`).
#[derive(Debug)]
pub enum Reason {
    /// Closed cleanly: by `lose_connection`, or the peer closed after we had finished.
    Done,
    /// Closed by `abort_connection` or an idle timeout.
    Aborted,
    /// The server stopped with the connection still open: the shutdown deadline passed, or
    /// a second stop signal closed what was left at once.
    Shutdown,
    /// The socket failed (reset, broken pipe, ...).
    Io(io::Error),
}

impl Reason {
    /// True for a clean close (Twisted's `ConnectionDone`).
    pub fn is_clean(&self) -> bool {
        matches!(self, Reason::Done)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Done => f.write_str("Connection was closed cleanly."),
            Reason::Aborted => f.write_str("Connection was aborted."),
            Reason::Shutdown => f.write_str("Connection was closed as the server stopped."),
            Reason::Io(e) => write!(f, "Connection was lost: {e}."),
        }
    }
}

/// The error side of a [`crate::Deferred`] (Twisted's `Failure`): any error, boxed.
#[derive(Debug)]
pub struct Failure(Box<dyn std::error::Error + Send + Sync + 'static>);

impl Failure {
    /// A failure carrying just a message.
    pub fn msg(text: impl Into<String>) -> Self {
        Failure(text.into().into())
    }

    /// The underlying error.
    pub fn error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure(Box::new(e))
    }
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::msg(e)
    }
}

impl From<&str> for Failure {
    fn from(e: &str) -> Self {
        Failure::msg(e)
    }
}
