//! Quote of the day (RFC 865): one quote per connection or datagram, from a file or built in.
//!
//! The quotes file is in fortune(6) style: quotes separated by lines holding only `%`; a file
//! without such lines has one quote per non-blank line. RFC 865 asks for quotes under 512
//! characters, so a longer one is refused when the file is read, not cut short on the wire.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use twistrs_core::clap::{Arg, ArgMatches, value_parser};
use twistrs_core::options::ListenOpt;
use twistrs_core::{
    DatagramProtocol, DatagramTransport, Plugin, PluginError, Protocol, ProtocolFactory, Service,
    Transport,
};

/// RFC 865's recommended maximum message length.
const MAX_QUOTE: usize = 512;

/// A quotes file: thousands of 512-byte quotes fit in 1 MiB.
pub const QUOTES_FILE_MAX: u64 = 1 << 20;

const BUILT_IN: &[&str] = &[
    "An apple a day keeps the doctor away.",
    "Simple is better than complex.",
    "There is no place like 127.0.0.1.",
    "Premature optimization is the root of all evil. -- Donald Knuth",
    "Be conservative in what you send, liberal in what you accept. -- RFC 760",
];

/// The quotes, each stored with CRLF line ends, and the next one to send.
#[derive(Debug)]
pub struct Quotes {
    list: Vec<Vec<u8>>,
    next: std::cell::Cell<usize>,
}

impl Quotes {
    /// Twisted's quote and a few more.
    pub fn built_in() -> Self {
        Self::from_list(BUILT_IN.iter().map(|s| s.to_string()).collect(), 0)
    }

    fn from_list(quotes: Vec<String>, start: usize) -> Self {
        let list: Vec<Vec<u8>> = quotes
            .into_iter()
            .map(|q| {
                let mut out = q.trim_end().replace("\r\n", "\n").replace('\n', "\r\n");
                out.push_str("\r\n");
                out.into_bytes()
            })
            .collect();
        let start = if list.is_empty() {
            0
        } else {
            start % list.len()
        };
        Quotes {
            list,
            next: std::cell::Cell::new(start),
        }
    }

    /// Parses a quotes file's text; `start` picks the first quote served.
    pub fn parse(text: &str, start: usize) -> Result<Self, String> {
        let fortune = text.lines().any(|l| l.trim_end() == "%");
        let quotes: Vec<String> = if fortune {
            let mut out = vec![String::new()];
            for line in text.lines() {
                if line.trim_end() == "%" {
                    out.push(String::new());
                } else if let Some(cur) = out.last_mut() {
                    cur.push_str(line);
                    cur.push('\n');
                }
            }
            out.into_iter()
                .map(|q| q.trim().to_string())
                .filter(|q| !q.is_empty())
                .collect()
        } else {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()
        };
        if quotes.is_empty() {
            return Err("holds no quotes".into());
        }
        let q = Self::from_list(quotes, start);
        if let Some((i, long)) = q.list.iter().enumerate().find(|(_, q)| q.len() > MAX_QUOTE) {
            return Err(format!(
                "quote {} is {} bytes; RFC 865 allows {MAX_QUOTE}",
                i + 1,
                long.len()
            ));
        }
        Ok(q)
    }

    /// Reads a quotes file.
    pub fn load(path: &Path, start: usize) -> Result<Self, String> {
        let text = twistrs_core::files::read_config_string(path, QUOTES_FILE_MAX)
            .map_err(|e| e.to_string())?;
        Self::parse(&text, start)
    }

    /// The next quote, in turn.
    pub fn next_quote(&self) -> &[u8] {
        let i = self.next.get();
        self.next.set((i + 1) % self.list.len().max(1));
        self.list.get(i).map_or(b"\r\n".as_slice(), Vec::as_slice)
    }

    /// How many quotes there are.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// Sends one quote, then closes.
pub struct Qotd {
    quotes: Rc<Quotes>,
}

impl Qotd {
    pub fn new(quotes: Rc<Quotes>) -> Self {
        Qotd { quotes }
    }
}

impl Protocol for Qotd {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.write(self.quotes.next_quote());
        t.lose_connection();
    }

    fn data_received(&mut self, _t: &mut Transport<'_>, _data: &[u8]) {}
}

impl DatagramProtocol for Qotd {
    fn name(&self) -> &'static str {
        "QOTD"
    }

    fn datagram_received(&mut self, t: &mut DatagramTransport<'_>, _d: &[u8], from: SocketAddr) {
        t.write(self.quotes.next_quote(), from);
    }
}

fn make(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400) as usize);
    let quotes = match m.get_one::<PathBuf>("file") {
        Some(p) => Quotes::load(p, start)
            .map_err(|e| PluginError::new(format!("qotd: quotes file {}: {e}", p.display())))?,
        None => Quotes::built_in(),
    };
    let quotes = Rc::new(quotes);
    let q = quotes.clone();
    let f = ProtocolFactory::for_protocol("QOTD", move || {
        Box::new(Qotd::new(q.clone())) as Box<dyn Protocol>
    })
    .max_connections(crate::max_connections(m));
    crate::service(
        "qotd",
        m,
        &LISTEN,
        Box::new(f),
        Some(Box::new(move || Box::new(Qotd::new(quotes.clone())))),
    )
}

const ABOUT: &str = "A quote of the day server (RFC 865), over TCP and UDP.";

const LISTEN: ListenOpt = ListenOpt::listen(&["tcp:17"]);

pub(crate) const PLUGIN: Plugin = Plugin {
    tapname: "qotd",
    description: ABOUT,
    options: || {
        crate::command("qotd", ABOUT, &LISTEN).arg(
            Arg::new("file")
                .short('f')
                .long("file")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .help(
                    "Quotes to serve in turn: fortune style (quotes separated by '%' lines) or \
                     one per line; each at most 512 bytes [default: a built-in list]",
                ),
        )
    },
    make_service: make,
};

#[cfg(test)]
mod tests {
    use super::*;
    use twistrs_core::testing::Harness;

    #[test]
    fn fortune_and_line_files() {
        let q = Quotes::parse("one\nline two\n%\nsecond\n%\n\n", 0).unwrap();
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_quote(), b"one\r\nline two\r\n");
        assert_eq!(q.next_quote(), b"second\r\n");
        assert_eq!(q.next_quote(), b"one\r\nline two\r\n", "wraps around");
        let q = Quotes::parse("a\n\nb\n", 1).unwrap();
        assert_eq!(q.next_quote(), b"b\r\n", "start picks the first");
    }

    #[test]
    fn bad_files_are_refused() {
        assert!(
            Quotes::parse("\n\n%\n", 0)
                .unwrap_err()
                .contains("no quotes")
        );
        let long = "x".repeat(600);
        assert!(Quotes::parse(&long, 0).unwrap_err().contains("RFC 865"));
    }

    #[test]
    fn sends_one_quote_and_closes() {
        let q = Rc::new(Quotes::built_in());
        let mut h = Harness::new(Qotd::new(q));
        h.connect();
        assert_eq!(h.output(), b"An apple a day keeps the doctor away.\r\n");
        assert!(h.disconnecting());
    }
}
