//! Daytime (RFC 867) and time (RFC 868): one answer per connection or datagram.
//!
//! Daytime sends `asctime` in UTC (`Thu Nov 26 17:36:39 2026\r\n`), as Twisted's `Daytime`
//! means to (it is broken on Python 3). Time sends the seconds since 1900-01-01 as a 32-bit
//! big-endian number, as RFC 868 says; Twisted's `Time` sends Unix seconds, which is wrong.

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use twistrs_core::clap::ArgMatches;
use twistrs_core::options::ListenOpt;
use twistrs_core::{
    DatagramProtocol, DatagramTransport, Plugin, PluginError, Protocol, ProtocolFactory, Service,
    Transport,
};

/// Seconds from 1900-01-01 to 1970-01-01 (RFC 868).
const EPOCH_1900: u64 = 2_208_988_800;

/// RFC 868's value for `unix` seconds: it wraps in 2036, as the RFC's 32 bits do.
pub fn rfc868_seconds(unix: u64) -> u32 {
    (unix + EPOCH_1900) as u32
}

/// `asctime` of a Unix time in UTC: `Thu Nov 26 17:36:39 2026`.
pub fn asctime(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        day,
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        year
    )
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sends the date and time as text, then closes (RFC 867).
pub struct Daytime {
    pub now: fn() -> u64,
}

impl Daytime {
    fn answer(&self) -> Vec<u8> {
        format!("{}\r\n", asctime((self.now)())).into_bytes()
    }
}

impl Protocol for Daytime {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.write(&self.answer());
        t.lose_connection();
    }

    fn data_received(&mut self, _t: &mut Transport<'_>, _data: &[u8]) {}
}

impl DatagramProtocol for Daytime {
    fn name(&self) -> &'static str {
        "Daytime"
    }

    fn datagram_received(&mut self, t: &mut DatagramTransport<'_>, _d: &[u8], from: SocketAddr) {
        t.write(&self.answer(), from);
    }
}

/// Sends the time as 32-bit seconds since 1900, then closes (RFC 868).
pub struct Time {
    pub now: fn() -> u64,
}

impl Protocol for Time {
    fn connection_made(&mut self, t: &mut Transport<'_>) {
        t.write(&rfc868_seconds((self.now)()).to_be_bytes());
        t.lose_connection();
    }

    fn data_received(&mut self, _t: &mut Transport<'_>, _data: &[u8]) {}
}

impl DatagramProtocol for Time {
    fn name(&self) -> &'static str {
        "Time"
    }

    fn datagram_received(&mut self, t: &mut DatagramTransport<'_>, _d: &[u8], from: SocketAddr) {
        t.write(&rfc868_seconds((self.now)()).to_be_bytes(), from);
    }
}

fn make_daytime(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    let f = ProtocolFactory::for_protocol("Daytime", || {
        Box::new(Daytime { now: unix_now }) as Box<dyn Protocol>
    })
    .max_connections(crate::max_connections(m));
    crate::service(
        "daytime",
        m,
        &DAYTIME_LISTEN,
        Box::new(f),
        Some(Box::new(|| Box::new(Daytime { now: unix_now }))),
    )
}

fn make_time(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    let f = ProtocolFactory::for_protocol("Time", || {
        Box::new(Time { now: unix_now }) as Box<dyn Protocol>
    })
    .max_connections(crate::max_connections(m));
    crate::service(
        "time",
        m,
        &TIME_LISTEN,
        Box::new(f),
        Some(Box::new(|| Box::new(Time { now: unix_now }))),
    )
}

const DAYTIME_ABOUT: &str =
    "A daytime server (RFC 867): the UTC date and time as text, over TCP and UDP.";
const TIME_ABOUT: &str =
    "A time server (RFC 868): seconds since 1900 as 32 bits, over TCP and UDP.";

const DAYTIME_LISTEN: ListenOpt = ListenOpt::listen(&["tcp:13"]);
const TIME_LISTEN: ListenOpt = ListenOpt::listen(&["tcp:37"]);

pub(crate) const DAYTIME: Plugin = Plugin {
    tapname: "daytime",
    description: DAYTIME_ABOUT,
    options: || crate::command("daytime", DAYTIME_ABOUT, &DAYTIME_LISTEN),
    make_service: make_daytime,
};

pub(crate) const TIME: Plugin = Plugin {
    tapname: "time",
    description: TIME_ABOUT,
    options: || crate::command("time", TIME_ABOUT, &TIME_LISTEN),
    make_service: make_time,
};

#[cfg(test)]
mod tests {
    use super::*;
    use twistrs_core::testing::{DatagramHarness, Harness};

    #[test]
    fn asctime_matches_known_dates() {
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(951_782_400), "Tue Feb 29 00:00:00 2000");
        assert_eq!(asctime(1_795_714_599), "Thu Nov 26 17:36:39 2026");
        assert_eq!(asctime(4_107_542_399), "Sun Feb 28 23:59:59 2100");
    }

    #[test]
    fn rfc868_counts_from_1900() {
        assert_eq!(rfc868_seconds(0), 2_208_988_800);
        // 2036-02-07T06:28:16Z is where the 32-bit count wraps to zero.
        assert_eq!(rfc868_seconds(2_085_978_496), 0);
    }

    #[test]
    fn daytime_and_time_answer_then_close() {
        let mut h = Harness::new(Daytime {
            now: || 1_795_714_599,
        });
        h.connect();
        assert_eq!(h.output(), b"Thu Nov 26 17:36:39 2026\r\n");
        assert!(h.disconnecting());

        let mut h = Harness::new(Time { now: || 0 });
        h.connect();
        assert_eq!(h.output(), 2_208_988_800u32.to_be_bytes());
        assert!(h.disconnecting());

        let from: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let sent = DatagramHarness::new(Time { now: || 1 }).receive(b"", from);
        assert_eq!(sent, vec![(2_208_988_801u32.to_be_bytes().to_vec(), from)]);
    }
}
