//! The `inetd` plugin: twistd's inetd(8) replacement, reading inetd.conf(5).
//!
//! `twistrs inetd [-f FILE] [-i]` works as `twistd inetd` does: one socket per line, an
//! `internal` service served by the wire protocols, any other by its program with the socket
//! as its stdin, stdout and stderr, as the line's user. Beyond twistd: UDP and `wait`
//! services (twistd refuses UDP), `nowait.max`, SIGHUP re-reading the file, `--interface`,
//! `--services`, and a line that does not read is an error naming the file and the line.

pub mod conf;
pub mod plan;
pub mod rate;
pub mod server;
pub mod services;

use std::net::IpAddr;
use std::path::PathBuf;

use twistrs_core::clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use twistrs_core::{Plugin, PluginError, Service};

pub use server::Inetd;

const ABOUT: &str =
    "An inetd(8) replacement: serves the services of inetd.conf (twistd's inetd, with UDP).";

/// The behaviour, for `--help` and the man page.
const NOTES: &str = "\
Each line of FILE is 'service socktype protocol wait|nowait[.max] user[.group] program \
[argv0 arguments...]', as inetd.conf(5) has it: the service is a name from --services or a \
port number; socktype stream goes with protocol tcp or tcp6, dgram with udp or udp6 (tcp6 \
and udp6 sockets are IPv6 only), and ,sndbuf=SIZE or ,rcvbuf=SIZE may follow the protocol \
(bytes, or with k or m); an address may come first (127.0.0.1:echo), and a line \
holding only an address and a colon sets the address of the lines after it. Blank lines and \
lines starting with # are skipped, and a word starting with # ends a line. RPC lines, tcpmux \
and other socket types are skipped with a warning; any other line that does not read, an \
unknown user or group, or two lines on one socket stops the start with FILE:LINE and the \
reason (exit status 1).\n\n\
program 'internal' is served by twistrs itself: echo, discard, chargen, daytime and time, \
over TCP and UDP (-i leaves them out); as openbsd-inetd, a datagram from a port below 1024 \
(or 2049), or from a multicast, broadcast or 0.0.0.0/8 address, is dropped unanswered, so \
that a spoofed one cannot start a loop between two services. A 'nowait' stream service starts its program for each \
connection, with the connection as its stdin, stdout and stderr, in a process group of its own. A \
'wait' service (datagram services with a program must be 'wait') hands its program the \
socket itself, and is not watched again until the program exits. The program runs as user \
and group (the user's primary group by default, with the user's groups), which takes root \
unless they are twistrs' own; it gets twistrs' environment less twistrs' own variables. \
'.max' starts at most that many programs in any 60 seconds: beyond that, nowait connections \
are closed at once (logged once, with a count when programs start again), and a wait service \
waits. A wait line without '.max' starts at most 256 a minute (OpenBSD's default), so a wait \
program that exits without accepting cannot loop. A program that ends with a status other than 0, or by a signal, is logged.\n\n\
SIGHUP (and SIGUSR1, which also reopen the log) read FILE again: sockets whose line is gone \
close, new lines open theirs, and a changed line (program, arguments, user, .max) applies \
from the next connection, on the same socket; connections and programs in progress go on. A \
FILE that does not read is logged and changes nothing. A stop lets nowait programs finish \
until --shutdown-timeout and stops wait programs (SIGTERM, then SIGKILL after 5 s); twistrs \
restart stops wait programs before the new process serves their sockets.";

/// The plugin's options.
pub fn options() -> Command {
    Command::new("inetd")
        .about(ABOUT)
        .after_help(NOTES)
        .arg(
            Arg::new("file")
                .short('f')
                .long("file")
                .value_name("FILE")
                .default_value("/etc/inetd.conf")
                .value_parser(value_parser!(PathBuf))
                .help("Service configuration file"),
        )
        .arg(
            Arg::new("nointernal")
                .short('i')
                .long("nointernal")
                .action(ArgAction::SetTrue)
                .help("Don't run internal services"),
        )
        .arg(
            Arg::new("rpc")
                .short('r')
                .long("rpc")
                .value_name("FILE")
                .help("DEPRECATED. RPC procedures table file (ignored: RPC lines are skipped)"),
        )
        .arg(
            Arg::new("interface")
                .long("interface")
                .value_name("ADDR")
                .action(ArgAction::Append)
                .value_parser(value_parser!(IpAddr))
                .help(
                    "Bind the lines that name no address to ADDR instead of every interface, \
                     repeatable: IPv4 addresses for tcp and udp lines, IPv6 ones for tcp6 and \
                     udp6 (a line of a family no ADDR has is skipped)",
                ),
        )
        .arg(
            Arg::new("services")
                .long("services")
                .value_name("FILE")
                .default_value("/etc/services")
                .value_parser(value_parser!(PathBuf))
                .help("Where service names are looked up (services(5))"),
        )
}

/// The plugin.
pub fn plugin() -> Plugin {
    Plugin {
        tapname: "inetd",
        description: ABOUT,
        options,
        make_service,
    }
}

/// The options as the plan needs them.
pub fn plan_options(m: &ArgMatches) -> plan::Options {
    plan::Options {
        file: m
            .get_one::<PathBuf>("file")
            .cloned()
            .unwrap_or_else(|| "/etc/inetd.conf".into()),
        services_file: m
            .get_one::<PathBuf>("services")
            .cloned()
            .unwrap_or_else(|| "/etc/services".into()),
        nointernal: m.get_flag("nointernal"),
        interfaces: m
            .get_many::<IpAddr>("interface")
            .map(|v| v.copied().collect())
            .unwrap_or_default(),
    }
}

/// Reads the file and builds the service; a file that does not read is the start's error.
pub fn make_service(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    let mut opts = plan_options(m);
    // Relative paths are the command line's: a daemon changes to --rundir before a reload.
    for p in [&mut opts.file, &mut opts.services_file] {
        if let Ok(abs) = std::path::absolute(&*p) {
            *p = abs;
        }
    }
    if m.get_one::<String>("rpc").is_some() {
        log::warn!(target: server::SYSTEM,
            "--rpc is deprecated and ignored: RPC services are skipped, as twistd skips them.");
    }
    let plan = plan::load(&opts).map_err(PluginError::new)?;
    // Both read again on SIGHUP, as the user privileges were dropped to.
    twistrs_core::reread::note_file(&opts.file);
    twistrs_core::reread::note_file(&opts.services_file);
    for w in &plan.warnings {
        log::warn!(target: server::SYSTEM, "{w}");
    }
    Ok(Box::new(Inetd::new(opts, plan.sockets)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[&str]) -> Result<plan::Options, String> {
        let m = options()
            .try_get_matches_from(std::iter::once("inetd").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Ok(plan_options(&m))
    }

    #[test]
    fn twistds_options_and_ours() {
        let o = opts(&[]).unwrap();
        assert_eq!(o.file, PathBuf::from("/etc/inetd.conf"));
        assert_eq!(o.services_file, PathBuf::from("/etc/services"));
        assert!(!o.nointernal && o.interfaces.is_empty());
        let o = opts(&[
            "-f",
            "x.conf",
            "-i",
            "-r",
            "rpc",
            "--interface",
            "127.0.0.1",
        ])
        .unwrap();
        assert_eq!(o.file, PathBuf::from("x.conf"));
        assert!(o.nointernal);
        assert_eq!(o.interfaces, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
        let o = opts(&["--file=y", "--nointernal", "--interface", "::1"]).unwrap();
        assert_eq!(o.file, PathBuf::from("y"));
        assert!(o.interfaces[0].is_ipv6());
        assert!(opts(&["--interface", "localhost"]).is_err());
    }

    #[test]
    fn a_file_that_does_not_read_names_itself_and_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("inetd.conf");
        std::fs::write(
            &f,
            "# fine\necho stream tcp nowait root internal\nbad line\n",
        )
        .unwrap();
        let m = options()
            .try_get_matches_from(["inetd", "-f", f.to_str().unwrap()])
            .unwrap();
        let e = make_service(&m).err().expect("refused").to_string();
        assert_eq!(
            e,
            format!(
                "{}:3: expected 'service socktype protocol wait|nowait user program \
                 [arguments]', found 2 fields",
                f.display()
            )
        );
        let m = options()
            .try_get_matches_from(["inetd", "-f", "/no/such/inetd.conf"])
            .unwrap();
        let e = make_service(&m).err().expect("refused").to_string();
        assert!(e.starts_with("/no/such/inetd.conf: cannot read: "), "{e}");
    }
}
