//! An example plugin, `greet`: asks who you are and says hello, on twistrs' plugin API.
//!
//! A plugin is a `Plugin` value: a name, one line of description, its options (clap, through
//! `twistrs_core::clap`) and a function that turns parsed options into a `Service`. The
//! protocol is Twisted's: one `Protocol` per connection, built by a factory.

use twistrs_core::clap::{Arg, ArgMatches, Command};
use twistrs_core::line::{Line, LineReceiver};
use twistrs_core::options::ListenOpt;
use twistrs_core::{
    ListeningService, Plugin, PluginError, Protocol, ProtocolFactory, Service, Transport,
};

const ABOUT: &str = "Asks who you are and says hello (an example plugin).";
const LISTEN: ListenOpt = ListenOpt::listen_stream(&["tcp:8023"]);

/// One connection: a greeting, one line in, one line out, then close.
struct Greeter {
    lines: LineReceiver,
    greeting: String,
}

impl Protocol for Greeter {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.write(b"Who are you?\r\n");
    }

    fn data_received(&mut self, t: &mut Transport<'_>, data: &[u8]) {
        self.lines.feed(data);
        // One line is all this protocol reads. A protocol that goes on takes `next_line()` in
        // a loop: one read can bring several lines, and none arrives again by itself.
        match self.lines.next_line() {
            Some(Line::Complete(name)) => {
                let name = String::from_utf8_lossy(name);
                t.write(format!("{}, {}!\r\n", self.greeting, name.trim()).as_bytes());
                t.lose_connection();
            }
            Some(Line::TooLong) => {
                t.write(b"That name is too long.\r\n");
                t.lose_connection();
            }
            None => {}
        }
    }
}

fn make_service(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    let greeting = m.get_one::<String>("greeting").cloned().unwrap_or_default();
    let factory = ProtocolFactory::for_protocol("Greeter", move || {
        Box::new(Greeter {
            lines: LineReceiver::new(b"\r\n", 100),
            greeting: greeting.clone(),
        }) as Box<dyn Protocol>
    });
    Ok(Box::new(ListeningService::new(
        "greet",
        LISTEN.get(m)?,
        Box::new(factory),
        None,
    )))
}

/// The plugin, for a launcher's list.
pub fn plugin() -> Plugin {
    Plugin {
        tapname: "greet",
        description: ABOUT,
        options: || {
            Command::new("greet").about(ABOUT).arg(LISTEN.arg()).arg(
                Arg::new("greeting")
                    .long("greeting")
                    .default_value("Hello")
                    .help("What to say"),
            )
        },
        make_service,
    }
}

#[cfg(test)]
mod tests {
    //! The protocol on a string transport (Twisted's `proto_helpers.StringTransport`): no
    //! socket, the same connection code the reactor runs.

    use super::*;
    use twistrs_core::testing::Harness;

    fn greeter() -> Harness<Greeter> {
        Harness::new(Greeter {
            lines: LineReceiver::new(b"\r\n", 100),
            greeting: "Hello".into(),
        })
    }

    #[test]
    fn greets_the_name_however_it_is_cut() {
        let name = b"Ada Lovelace\r\n";
        for chunk in 1..=name.len() {
            let mut h = greeter();
            h.connect();
            assert_eq!(h.take_output(), b"Who are you?\r\n");
            h.feed_chunked(name, chunk);
            assert_eq!(
                h.take_output(),
                b"Hello, Ada Lovelace!\r\n",
                "chunk {chunk}"
            );
            assert!(
                h.lost().is_some_and(|r| r.is_clean()),
                "closed after the answer"
            );
        }
    }

    #[test]
    fn a_name_past_the_limit_is_refused() {
        let mut h = greeter();
        h.connect().take_output();
        h.feed(&[b'x'; 102]); // past 100 bytes and a delimiter's first byte
        assert_eq!(h.take_output(), b"That name is too long.\r\n");
        assert!(h.lost().is_some());
    }
}
