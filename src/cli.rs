//! The command line: twistd's global options, then one subcommand per plugin.
//!
//! Option names, short flags and defaults are twistd's (`twistd --help`, Twisted 26.10). The
//! options that only make sense for Python (`--python`, `--profile`, ...) are accepted by the
//! parser so that they can be refused with a clear message instead of "unknown option".

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use twistrs_core::Plugin;
use twistrs_core::options::Refused;

/// Options twistd has that load or debug Python code; twistrs refuses each by name.
pub const PYTHON_ONLY: &[Refused] = &[
    Refused::new("python", Some('y'), true, "loads a Python .tac file"),
    Refused::new(
        "file",
        Some('f'),
        true,
        "loads a pickled Python application",
    ),
    Refused::new("source", Some('s'), true, "loads a Python AOT source file"),
    Refused::new(
        "encrypted",
        Some('e'),
        false,
        "decrypts a pickled Python application",
    ),
    Refused::new("profile", Some('p'), true, "runs the Python profiler"),
    Refused::new("profiler", None, true, "selects a Python profiler"),
    Refused::new("savestats", None, false, "saves Python profiler statistics"),
    Refused::new("debug", Some('b'), false, "runs under the Python debugger"),
    Refused::new("spew", None, false, "traces every Python function call"),
    Refused::new("logger", None, true, "names a Python log observer"),
];

/// `--umask`: octal digits, with or without Python's `0o` (twistd parses it with `int(v, 8)`,
/// which takes `0o022` too). Beyond 0777 is refused: no umask has those bits.
fn octal(s: &str) -> Result<u32, String> {
    let digits = s
        .strip_prefix("0o")
        .or_else(|| s.strip_prefix("0O"))
        .unwrap_or(s);
    Some(digits)
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|d| u32::from_str_radix(d, 8).ok())
        .filter(|v| *v <= 0o777)
        .ok_or_else(|| format!("'{s}' is not an octal umask such as 022"))
}

/// `--workers`: a count of at least 1, or `auto` (0 here: one per CPU of the affinity mask).
fn workers(s: &str) -> Result<usize, String> {
    if s == "auto" {
        return Ok(0);
    }
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .ok_or_else(|| format!("'{s}' is not a number of workers (1 to 1024, or 'auto')"))
}

/// `--shutdown-timeout`'s default, which `stop` also assumes when it cannot read the running
/// service's own.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A number of seconds, fractions allowed (`--shutdown-timeout`, `stop --timeout`). One too
/// long for a `Duration` (`1e300`, `18446744073709551615`) is the longest wait there is, which
/// every deadline caps at a century: an operator who writes such a number means "never give
/// up", and converting it must not panic.
fn seconds(s: &str) -> Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| Duration::try_from_secs_f64(v).unwrap_or(Duration::MAX))
        .ok_or_else(|| format!("'{s}' is not a number of seconds"))
}

/// `--version`, which twistd takes before a plugin's name and after it alike.
fn version_arg() -> Arg {
    Arg::new("version")
        .long("version")
        .action(ArgAction::SetTrue)
        .help("Print the version and exit")
}

/// The whole command line, with `plugins` as subcommands sorted by name.
pub fn build_command(plugins: &[Plugin]) -> Command {
    let mut cmd = Command::new("twistrs")
        .about("Twisted's twistd, rebuilt in Rust: runs a service plugin as a daemon")
        .long_about(
            "Twisted's twistd, rebuilt in Rust: runs a service plugin as a daemon.\n\n\
             A command line that works with twistd works with twistrs in its place, for every \
             option and plugin the two share. Global options come before PLUGIN, the plugin's \
             options after it.",
        )
        .override_usage("twistrs [options] PLUGIN [plugin options]")
        .subcommand_value_name("PLUGIN")
        .subcommand_help_heading("Plugins and commands")
        .disable_version_flag(true)
        .arg_required_else_help(true)
        .disable_help_subcommand(true)
        // twistd's option parser takes an option given twice, the last value winning
        // (`--pidfile= $EXTRA --pidfile=app.pid`, a wrapper adding `-n`): so does this one,
        // for every option of every plugin. Repeatable options (`--listen`) still add up.
        .args_override_self(true)
        // twistd's parser is Python's getopt, which takes any unambiguous prefix of a long
        // option (`--pid=app.pid`, `--nodaem`, `web --pa=/srv`): so does this one, for the
        // plugins' options too (the setting is global). An ambiguous prefix is an error.
        .infer_long_args(true)
        .after_help("Run 'twistrs PLUGIN --help' for a plugin's options.")
        .arg(version_arg())
        .arg(
            Arg::new("nodaemon")
                .short('n')
                .long("nodaemon")
                .action(ArgAction::SetTrue)
                .help("Don't daemonize, don't use the default umask of 0077"),
        )
        .arg(
            // twistd pickles a .tac application's state at shutdown unless told not to;
            // twistrs keeps none, so `twistd -no web ...` means the same here.
            Arg::new("no_save")
                .short('o')
                .long("no_save")
                .action(ArgAction::SetTrue)
                .help("Do not save state on shutdown (twistd's; twistrs never saves any)"),
        )
        .arg(
            Arg::new("logfile")
                .short('l')
                .long("logfile")
                .value_name("FILE")
                // twistd takes `--logfile=` (a wrapper's empty $LOGFILE) as no -l at all.
                .value_parser(twistrs_core::options::optional_path())
                .help("Log to FILE; '-' for stdout, empty (--logfile=) for the default [default: stdout with -n, else twistrs.log]"),
        )
        .arg(
            Arg::new("pidfile")
                .long("pidfile")
                .value_name("FILE")
                .default_value("twistrs.pid")
                // Any bytes, as twistd takes them: a file name need not be UTF-8.
                .value_parser(value_parser!(OsString))
                .help("Name of the pidfile; --pidfile= for none"),
        )
        .arg(
            Arg::new("rundir")
                .short('d')
                .long("rundir")
                .value_name("DIR")
                .default_value(".")
                .value_parser(value_parser!(PathBuf))
                .help("Change to DIR before running"),
        )
        .arg(
            Arg::new("umask")
                .long("umask")
                .value_name("OCTAL")
                .value_parser(octal)
                .help("The umask to set (octal) [default: 0077 as a daemon, inherited with -n]"),
        )
        .arg(
            Arg::new("uid")
                .short('u')
                .long("uid")
                .value_name("USER")
                .help("The user to run as, a name or a number, after binding ports"),
        )
        .arg(
            Arg::new("gid")
                .short('g')
                .long("gid")
                .value_name("GROUP")
                .help("The group to run as [default: the --uid user's primary group]"),
        )
        .arg(
            Arg::new("euid")
                .long("euid")
                .action(ArgAction::SetTrue)
                .help("Set only the effective user and group ids"),
        )
        .arg(
            Arg::new("chroot")
                .long("chroot")
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf))
                .help("Chroot to DIR before binding ports (UNIX socket paths, TLS files and web's --path and --logfile are then inside DIR)"),
        )
        .arg(
            Arg::new("syslog")
                .long("syslog")
                .action(ArgAction::SetTrue)
                .help("Log to syslog, not to a file"),
        )
        .arg(
            Arg::new("prefix")
                .long("prefix")
                .value_name("IDENT")
                .default_value("twistrs")
                .help("The syslog ident"),
        )
        .arg(
            Arg::new("reactor")
                .short('r')
                .long("reactor")
                .value_name("NAME")
                .default_value("default")
                .help("The reactor: 'default' (or 'epoll'), the only one twistrs has"),
        )
        .arg(
            Arg::new("check")
                .long("check")
                .action(ArgAction::SetTrue)
                .help(
                    "Check the options, files and endpoints as a start would, start nothing, \
                     and exit 0 if a start would succeed (as nginx -t; twistd has none)",
                ),
        )
        .arg(
            Arg::new("help-reactors")
                .long("help-reactors")
                .action(ArgAction::SetTrue)
                .help("List the available reactors and exit"),
        )
        .arg(
            Arg::new("originalname")
                .long("originalname")
                .action(ArgAction::SetTrue)
                .hide(true),
        )
        .arg(
            Arg::new("shutdown-timeout")
                .long("shutdown-timeout")
                .value_name("SECONDS")
                .default_value(SHUTDOWN_TIMEOUT.as_secs().to_string())
                .value_parser(seconds)
                .help("On SIGTERM/SIGINT, wait this long for open connections to finish"),
        )
        .arg(
            Arg::new("workers")
                .long("workers")
                .value_name("N")
                .default_value("1")
                .value_parser(workers)
                .help("Serve from N worker processes on the same listeners, supervised by a master ('auto': one per CPU); 1 is a single process"),
        );
    cmd = cmd.args(Refused::args(PYTHON_ONLY));
    cmd = cmd
        .arg(
            Arg::new("log-rotate-size")
                .long("log-rotate-size")
                .value_name("BYTES")
                .value_parser(value_parser!(u64))
                .help("Rotate the log file when it passes BYTES (off by default: use logrotate and SIGHUP)"),
        )
        .arg(
            Arg::new("log-keep")
                .long("log-keep")
                .value_name("N")
                .default_value("10")
                .value_parser(value_parser!(u32).range(1..=1000))
                .help("Rotated log files to keep, FILE.1 to FILE.N"),
        )
        .arg(
            Arg::new("log-format")
                .long("log-format")
                .value_name("FORMAT")
                .default_value("text")
                .value_parser(["text", "json"])
                .help("Log lines as twistd's text, or one JSON object per line (as twist's --log-format)"),
        )
        .arg(
            Arg::new("log-level")
                .long("log-level")
                .value_name("LEVEL")
                .default_value("info")
                .value_parser(["debug", "info", "warn", "error", "critical"])
                .help("Log only lines of LEVEL and above (twist's names; critical is error)"),
        )
        .arg(
            Arg::new("metrics")
                .long("metrics")
                .value_name("ENDPOINT")
                .help("Serve Prometheus metrics on GET /metrics at ENDPOINT (e.g. tcp:9100:interface=127.0.0.1); with --workers the master serves every worker's figures added up"),
        );
    let mut sorted: Vec<&Plugin> = plugins.iter().collect();
    sorted.sort_by_key(|p| p.tapname);
    for p in sorted {
        let mut sub = (p.options)().name(p.tapname).about(p.description);
        // twistd's every plugin takes --version too (`twistd web --version`).
        if !sub.get_arguments().any(|a| a.get_long() == Some("version")) {
            sub = sub.arg(version_arg());
        }
        cmd = cmd.subcommand(sub);
    }
    for c in control_commands() {
        cmd = cmd.subcommand(c);
    }
    cmd.mut_args(getopt_value)
        .mut_subcommands(|sub| sub.mut_args(getopt_value))
}

/// Drops a `--` that ends the global options (`twistd -n -- web`): getopt stops there and
/// twistd reads the next word as the plugin's name, where clap would read a stray argument.
/// A `--` that is an option's value (`--pidfile --`) or comes after the plugin's name stays.
pub fn drop_end_of_global_options(cmd: &Command, mut args: Vec<OsString>) -> Vec<OsString> {
    // Whether the global option a word names takes the next word as its value; as clap finds
    // it: the exact long name, else the one long name the word begins (infer_long_args).
    let takes_value = |a: Option<&Arg>| {
        a.is_some_and(|a| a.get_action().takes_values() && a.get_num_args().is_none())
    };
    let by_long = |name: &str| {
        let exact = cmd.get_arguments().find(|a| a.get_long() == Some(name));
        exact.or_else(|| {
            let mut found = cmd
                .get_arguments()
                .filter(|a| a.get_long().is_some_and(|l| l.starts_with(name)));
            found.next().filter(|_| found.next().is_none())
        })
    };
    let mut i = 1;
    // Lossy: a word need not be UTF-8 (`--pidfile=` a non-UTF-8 name) and only its ASCII
    // dashes, letters and `=` matter here.
    while let Some(word) = args.get(i).map(|w| w.to_string_lossy().into_owned()) {
        let word = word.as_str();
        if word == "--" {
            args.remove(i);
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            if !long.contains('=') && takes_value(by_long(long)) {
                i += 1;
            }
        } else if let Some(shorts) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            // Bundled flags, then perhaps one option with its value (`-nl-`, `-nl x.log`).
            for (at, c) in shorts.char_indices() {
                if takes_value(cmd.get_arguments().find(|a| a.get_short() == Some(c))) {
                    if at + c.len_utf8() == shorts.len() {
                        i += 1;
                    }
                    break;
                }
            }
        } else {
            break; // the plugin's name: what follows is the plugin's
        }
        i += 1;
    }
    args
}

/// An option that takes one value takes the next word whatever it is, as getopt does:
/// `--pidfile -app.pid`, `-l -x.log` work in twistd, where clap would read an option.
fn getopt_value(a: Arg) -> Arg {
    let named = a.get_long().is_some() || a.get_short().is_some();
    if named && a.get_action().takes_values() && a.get_num_args().is_none() {
        a.allow_hyphen_values(true)
    } else {
        a
    }
}

/// The names of the control commands, which are not plugins.
pub const CONTROL: &[&str] = &["completions", "reload", "restart", "status", "stop"];

/// The shells `twistrs completions` writes a script for, with the file each goes in under
/// `completions/` (the names bash-completion, zsh and fish look for).
pub const SHELLS: &[(&str, &str)] = &[
    ("bash", "twistrs.bash"),
    ("fish", "twistrs.fish"),
    ("zsh", "_twistrs"),
];

/// The completion script for `shell` (`bash`, `fish` or `zsh`), generated from the command
/// line with `plugins`; `None` for another shell.
pub fn completion(plugins: &[Plugin], shell: &str) -> Option<String> {
    use clap_complete::Shell;
    let sh = match shell {
        "bash" => Shell::Bash,
        "fish" => Shell::Fish,
        "zsh" => Shell::Zsh,
        _ => return None,
    };
    let mut cmd = build_command(plugins);
    let mut out = Vec::new();
    clap_complete::generate(sh, &mut cmd, "twistrs", &mut out);
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn pidfile_arg() -> Arg {
    Arg::new("pidfile")
        .long("pidfile")
        .value_name("FILE")
        .value_parser(value_parser!(OsString))
        .help("The running service's pidfile [default: the global --pidfile, twistrs.pid]")
}

/// `stop`, `status`, `restart` and `reload`, for scripts and init systems.
fn control_commands() -> Vec<Command> {
    vec![
        Command::new("completions")
            .about("Print the completion script for SHELL (bash, zsh or fish)")
            .arg(
                Arg::new("shell")
                    .value_name("SHELL")
                    .required(true)
                    .value_parser(["bash", "zsh", "fish"])
                    .help("The shell"),
            )
            .after_help("bash: twistrs completions bash > /etc/bash_completion.d/twistrs (or source it); zsh: into a directory of $fpath as _twistrs; fish: into ~/.config/fish/completions/twistrs.fish. The package installs them."),
        Command::new("reload")
            .about("Control: make the running service reopen its logs and re-read its files (SIGHUP), without a restart")
            .arg(pidfile_arg())
            .after_help("What SIGHUP re-reads: the log file (reopened by name, after logrotate moved it), plugins' log files, TLS certificates, dns zones, the hosts file and resolv.conf, inetd.conf (mail's aliases are read again whenever they change, without a signal); with --workers, the master passes it on to every worker. With -u or -g they are read as that user (the start read them before dropping privileges): a file only root may read fails at each reload and keeps its old data, which the start and --check warn of. No new binary and no new command line: for those, restart. SIGHUP goes only to a process seen in /proc to hold the pidfile's lock, never merely to the PID the file holds (kill -HUP $(cat PIDFILE) may hit a stranger).\n\nExit status: 0 once the signal is sent; 1 if nothing runs, or no single holder of the lock could be found."),
        Command::new("restart")
            .about("Control: restart the running service without downtime (re-exec, hand over sockets)")
            .arg(pidfile_arg())
            .arg(
                Arg::new("timeout")
                    .long("timeout")
                    .value_name("SECONDS")
                    .default_value("30")
                    .value_parser(seconds)
                    .help("How long to wait for the new process to serve"),
            )
            .after_help("SIGUSR2 goes only to a process seen in /proc to hold the pidfile's lock, never merely to the PID the file holds. A restart asked for while one is in progress runs once that one is over (the new process restarts again); a stop or a reload that comes meanwhile reaches the new process too. A restart of a service that is already stopping is refused at once, and its drain goes on.\n\nExit status: 0 once the new process serves; 1 if it failed (the old one keeps serving), a stop came meanwhile (neither serves on) or before (the service is stopping), no outcome was known within --timeout (the service writes it to PIDFILE.restart as its own user; where that user cannot create it, restart run as root makes the file for it first, and a success is also told from the pidfile, which the new process writes once it serves), nothing runs, or no single holder of the lock could be found."),
        Command::new("status")
            .about("Control: tell whether the service runs, and its PID (LSB exit status 0, 1, 3 or 4)")
            .arg(pidfile_arg())
            .arg(
                Arg::new("json")
                    .long("json")
                    .action(ArgAction::SetTrue)
                    .help("Print one JSON object: running, status, pid, pidfile, since, version, plugin, listeners, generation"),
            )
            .after_help("The PID reported is the process holding the pidfile's lock, checked in /proc; a file naming another PID is reported on stderr.\n\nExit status: 0 running; 1 dead, but its pidfile is left; 3 not running; 4 unknown (--pidfile= given, so none to read; a pidfile that cannot be read or is refused; or its lock's holder cannot be seen)."),
        Command::new("stop")
            .about("Control: stop the running service (SIGTERM, then SIGKILL after --timeout)")
            .arg(pidfile_arg())
            .arg(
                Arg::new("timeout")
                    .long("timeout")
                    .value_name("SECONDS")
                    .value_parser(seconds)
                    .help("Seconds to wait after SIGTERM before SIGKILL [default: the service's --shutdown-timeout, read from its command line, plus 10; 20 with its default, and (with a warning) when its command line cannot be read]"),
            )
            .after_help("Only a process seen in /proc to hold the pidfile's lock is signalled, never merely the PID the file holds.\n\nExit status: 0 once stopped, also when it was not running; 1 if it could not be stopped, or no single holder of the lock could be found."),
    ]
}

/// The first Python-only option present, with why twistrs refuses it.
pub fn python_only_option(m: &ArgMatches) -> Option<(&'static str, &'static str)> {
    Refused::find(PYTHON_ONLY, m).map(|r| (r.long, r.why))
}

/// Sections of `twistrs(1)` beyond what clap renders, in roff.
pub const MAN_EXTRA: &str = r#".SH OPTION SYNTAX
As twistd's (Python's getopt): \fB--opt=value\fR, \fB--opt value\fR, \fB-l value\fR,
\fB-lvalue\fR and bundled flags (\fB-no\fR); a long option may be shortened to any prefix
that names one option only (\fB--pid=app.pid\fR, \fB--nodaem\fR, \fBweb --pa=/srv\fR);
an option's value is the next word, even one that begins with "-" (\fB--pidfile -x.pid\fR);
an option given twice keeps its last value, except the repeatable ones (\fB--listen\fR), which
add up; \fB--\fR ends the global options (\fBtwistrs -n -- web\fR).
.SH ENDPOINTS
Listeners are given as endpoint strings in twistd's grammar:
.B TYPE:ARG:KEY=VALUE...
A segment with "=" is a keyword argument (only the first "=" separates); a backslash
escapes the next character, so IPv6 addresses are written \fBtcp6:80:interface=\e:\e:1\fR.
.TP
.B tcp:PORT[:interface=ADDR][:backlog=511]
TCP over IPv4 (over IPv6 if \fBinterface\fR is an IPv6 address, as in twistd); all
interfaces unless \fBinterface\fR is given. Port 0 picks a free port,
which the "starting on" log line names. ADDR may be a host name, looked up once at start
(/etc/hosts, DNS): its first IPv4 address (for \fBtcp6\fR, its first IPv6 address);
a name that does not resolve stops the start with one line naming the endpoint.
.TP
.B tcp6:PORT[:interface=ADDR][:backlog=511]
TCP over IPv6.
.TP
.B unix:PATH[:mode=666][:backlog=511][:lockfile=1]
A UNIX socket. With \fBlockfile=1\fR (the default) a \fIPATH\fB.lock\fR symlink names the
owning process: a socket left by a dead process is replaced, one owned by a live process is not.
The socket and its lock are removed at a clean exit.
.TP
.B udp:PORT[:interface=ADDR]
UDP, for plugins with a datagram service.
.TP
.B systemd:domain=INET|INET6|UNIX:index=N
A socket passed by systemd socket activation (LISTEN_PID, LISTEN_FDS; LISTEN_FDNAMES is not
required).
.TP
.ad l
.B ssl:PORT[:privateKey=server.pem]\:[:certKey=FILE]\:[:extraCertChain=FILE]\:[:dhParameters=FILE]\:[:sslmethod=NAME]\:[:interface=ADDR]\:[:backlog=511]
.ad b
TLS over TCP/IPv4, TLS 1.3 and 1.2 only (rustls). PEM files: \fBprivateKey\fR holds the key,
and the certificate too unless \fBcertKey\fR names another file; \fBextraCertChain\fR adds every
certificate of its file to the chain sent (the intermediates; a file without one is an error).
\fBdhParameters\fR must name a file of DH parameters, which are not used (only ECDHE key exchange
is offered; the log says so once). \fBsslmethod\fR: \fBTLS_METHOD\fR or \fBSSLv23_METHOD\fR (the
default, 1.2 and 1.3), \fBTLSv1_2_METHOD\fR or \fBTLSv1_3_METHOD\fR; the older ones are refused by
name.
.TP
.B tls:CERTDIR[:port=443][:interface=ADDR][:backlog=511]
TLS over TCP/IPv6 (all interfaces by default). Every \fB*.pem\fR file of CERTDIR is read; keys
are paired with certificates by public key, in the same file or in separate ones. The name the
client asks for (SNI) picks the certificate with that name in its subjectAltName;
\fB*.example.com\fR serves one label below example.com; without SNI, or for a name no
certificate has, the first certificate by file name is served. Such a name also has the
directory read again in the background (at most every 3 seconds, and only when its *.pem
files changed), so a certificate added to
it is served from the next handshake on, without a signal. twistd's re-scan only refreshes
its default certificate: a new file is never served.
.TP
.ad l
.B systemd:domain=INET|INET6:index=N:privateKey=FILE[:certKey=FILE]\:[:extraCertChain=FILE]\:[:dhParameters=FILE]\:[:sslmethod=NAME]
.ad b
.TQ
.B systemd:domain=INET|INET6:index=N:certDir=CERTDIR
TLS on a socket passed by systemd, with \fBssl:\fR's keywords or a \fBtls:\fR directory.
twistd cannot serve TLS on a systemd socket.
.PP
A certificate or key that cannot be used (a missing or unreadable file, an encrypted key, a
key that does not match its certificate, a file without a certificate) is a start-up error:
one line naming the file and the problem, exit 1, with \fB-n\fR and as a daemon. An expired
certificate is served, with a warning in the log. SIGHUP (and SIGUSR1) read every certificate
and key again: new handshakes use them, established connections go on with the old ones; if a
new file is bad, the old certificates stay in service and the log says why (twistd reads them
only at start; reloading needs a restart). Files that several listeners name are read once
per signal, and logged once. \fBtwistrs restart\fR reads them again in the new
process. A client that has not finished its handshake after 10 seconds, or that speaks
plaintext, garbage or TLS 1.1 or older, is closed (with an alert where TLS allows one) and
logged in one line. At the plugin's \fB--max-connections\fR, with a client waiting, the
connection in its handshake that has sent nothing for longest is closed for it once it has been
silent for over 1 second (twice its retransmission timeout where that is longer, on a slow
path; the service has had nothing from it); one whose handshake is done never is.
.SH DAEMON
Without \fB-n\fR, twistrs starts in twistd's order: the pidfile is checked (a running twistrs
holds a lock on it), the log file opened, the plugin's service built, \fB--chroot\fR and \fB--rundir\fR entered, the umask
set (0077 unless \fB--umask\fR), the process forked twice into its own session with stdio on
/dev/null, the pidfile written, the listeners bound as the starting user (so root can bind port
80), privileges dropped (\fB-u\fR naming the user twistrs already runs as is a warning, as in
twistd, not an error), and the services started. The starting process waits and exits 0 only
once all of that succeeded; otherwise it prints the whole error and exits 1. Options the
plugin refuses as its service is built leave no pidfile and no log file that the start made
behind; a log file that was there gets the error.
.PP
The pidfile is created with the run's umask (0600 for a daemon, as twistd's) and locked
(flock) for the daemon's whole life. A pidfile nobody holds (stale, empty,
garbage, or naming a PID now used by another program) never blocks a start: it is replaced and
the log says so. It is never opened through a symbolic link: a path that is a link, a
directory, a FIFO, a device or a file with several hard links is refused (exit 1). With
\fB-u\fR, the log file is given to that user first, so the daemon can reopen it, and so is a
plugin's log file that the start made (web's and socks's \fB-l\fR; one that was there is left
as it is). With \fB-g\fR alone the process stays root, which reopens any file, and the log
files are left as they are, as twistd leaves them. Then each file a reload reads again
(certificates and keys, a \fBtls:\fR directory, dns zones, inetd.conf, mail's aliases, a
plugin's log file) is opened as that
user, inside the chroot: one that cannot be is a warning naming the file and the user
(\fBreload will not be able to re-read\fR ...), since every reload would fail and keep its old
data. A single process restarts as that user too, so only a stop and a start read such a file
again; a \fB--workers\fR master keeps root, and its restart does. The pidfile
stays the starting user's and is written through the descriptor opened before the privilege
drop, then removed at exit if the directory allows it, else emptied (as in \fB--chroot\fR,
whose jail does not reach it; a failed start removes it from inside the jail too).
.PP
\fBstop\fR, \fBstatus\fR and \fBrestart\fR act on the process holding the pidfile's lock,
found in /proc (its descriptors and their fdinfo lock lines), never merely on the PID the file
holds: a file naming another process is reported and overruled; several holders none of which
the file names (a restart handing over), or a lock whose holder cannot be seen, make them
refuse (exit 1; \fBstatus\fR: 4).
.PP
\fB--check\fR goes through the same steps without starting: the options and the files they
name, certificates, each endpoint's interface (or a UNIX socket's directory), the log, the
pidfile, \fB--chroot\fR, \fB--rundir\fR and the user to run as. Stand-ins on port 0 are bound
instead of the ports, so it works beside the running server; when no twistrs holds the
pidfile, each port is also bound for a moment (never listened on), so a port in use or one
the user may not bind fails the check. It writes no file and starts no process. It prints what would be served and exits 0, or the start's error and exits 1. Files a reload
could not read again as the user to run as are warnings on stderr, as the start logs them,
not failures.
.SH SIGNALS
.TP
.B SIGTERM, SIGINT
Stop gracefully: close the listeners, let connections finish (idle ones close after a second),
close what is left after \fB--shutdown-timeout\fR seconds (a second signal closes at once,
unless it comes within half a second of the first: several at once, as systemd sends to every
process, are one stop; a time too long for the clock, such as 1e300, never comes), then exit
by re-raising the signal, as twistd does. A process that handed over to a restart's new
process passes the signal on to it. A SIGINT ignored when twistrs started (a
background job) stays ignored.
.TP
.B SIGHUP, SIGUSR1
Reopen the log file by name, so logrotate can move it and signal, and read TLS certificates
again (see ENDPOINTS), and what the plugin re-reads (its page says); \fBtwistrs reload\fR sends
it. Until its handlers exist, a starting twistrs ignores SIGHUP, SIGUSR1 and SIGUSR2 rather
than die of them. twistd renames its own log on SIGUSR1 and dies on SIGHUP.
.TP
.B SIGUSR2
Restart without downtime (what \fBtwistrs restart\fR sends): start the same binary with the
same command line, hand it the listening sockets and the locked pidfile, and once it serves,
stop accepting and drain. If it fails, keep serving. In that drain, SMTP and POP3 sessions run
on until the client quits or idles out, and are stopped as at a stop 3 s before the
\fB--shutdown-timeout\fR (half of it if shorter), or as soon as the service stops for real.
.TP
.B SIGURG
Between a restart's two processes: the new one sends it to the old one, still draining, when it
stops for real, so the sessions served on through the drain finish at once; a \fB--workers\fR
master sends it to its workers to have them drain as after a hand-over. Ignored otherwise.
.TP
.B SIGXFSZ, SIGPIPE
Ignored, as twistd (Python) ignores them: a file grown to RLIMIT_FSIZE (systemd's
\fBLimitFSIZE=\fR, \fBulimit -f\fR) fails its write with EFBIG instead of killing the
server; the log counts the lines it loses (as on a full disk: the count is logged once the file takes lines again), a mail gets
451. Programs that procmon and inetd start get both back at their defaults.
.SH WORKERS
With \fB--workers\fR \fIN\fR (or \fBauto\fR, one per CPU of the affinity mask), a master process
binds every listener, holds the pidfile (which names it) and starts \fIN\fR workers, each the
same binary and command line serving on the inherited sockets (one shared accept queue per
listener), dropping privileges and chrooting itself. The master runs none of the plugin's
services. A worker that dies is logged and started again, after a delay doubling from 0.1 s to
30 s when it dies within a second of its start. The plugin's start-up warnings (a missing
option, an expired certificate, a log outside \fB--chroot\fR) are logged by the master as it
checks the options and files, and not again by the workers it starts with them; a worker started
later, to replace one, logs them again, since the files may have changed. SIGTERM and SIGINT
drain every worker (a second one closes what is left at once), then the master exits; workers
have process groups of their own; SIGHUP and SIGUSR1 reopen the master's log and are passed on
to the workers; SIGUSR2 starts a new master whose workers all serve before the old ones drain.
\fBstatus\fR lists the workers; systemd gets READY=1 once every worker serves. A worker that
fails to start fails the start. \fB--max-connections\fR counts per worker.
\fB--log-rotate-size\fR is refused with workers (use logrotate and SIGHUP), and so is a plugin
that must run in one process (procmon).
.SH EXIT STATUS
.TP
.B 0
Stopped normally (help and version output included); for \fBstop\fR, stopped or not running;
for \fBstatus\fR, running; for \fBrestart\fR, the new process serves.
.TP
.B 1
A usage error (unknown plugin or option, malformed endpoint), or a start-up failure (another
twistrs holds the pidfile, a port in use, an unreadable file, a failed privilege drop); one
message on stderr says which. For \fBstatus\fR: not running, but the pidfile is left naming a PID. For
\fBstop\fR/\fBrestart\fR: it could not stop / the new process failed (the old one keeps serving)
or its outcome was not known within \fB--timeout\fR, or no single process holding the pidfile's lock
could be found.
.TP
.B 3
\fBstatus\fR: not running (no pidfile, or an empty one: a clean stop that could not remove it).
.TP
.B 4
\fBstatus\fR: the pidfile cannot be read or is disabled, or the holder of its lock cannot be seen.
.TP
.B 143, 130
Stopped by SIGTERM or SIGINT: the process ends by the signal, which a shell reports as
128 + the signal number.
.SH FILES
.TP
.I twistrs.pid
The default pidfile, in the directory twistrs was started from (\fB--pidfile\fR).
.TP
.I twistrs.log
The daemon's default log file, in the same directory (\fB-l\fR).
.TP
.I PIDFILE.restart
Where a restart's outcome is written for \fBtwistrs restart\fR.
.SH ENVIRONMENT
.TP
.B LISTEN_PID, LISTEN_FDS
Sockets passed by systemd, used by \fBsystemd:\fR endpoints (LISTEN_FDNAMES is not needed).
.TP
.B NOTIFY_SOCKET
When set, twistrs sends READY=1 once serving and STOPPING=1 when stopping (Type=notify).
.SH DIFFERENCES FROM TWISTD
Plugins are compiled in; the Python-only options (\fB-y\fR, \fB-f\fR, \fB-s\fR, \fB-e\fR,
\fB-p\fR, \fB--profiler\fR, \fB--savestats\fR, \fB-b\fR, \fB--spew\fR,
\fB--logger\fR) are refused by name; \fB-o\fR is accepted, as twistrs saves no state. There is one reactor. Start-up errors are printed whole
(twistd cuts them to 100 bytes). The pidfile is locked, so stale pidfiles never block a start, and
\fBstop\fR, \fBstatus\fR and \fBrestart\fR act on the process holding that lock.
The log file is reopened on SIGHUP and SIGUSR1 and is rotated by size only if asked
(\fB--log-rotate-size\fR, bounded by \fB--log-keep\fR; never a non-regular file). twistd has
no \fBstop\fR, \fBstatus\fR, \fBrestart\fR or \fB--check\fR, no sd_notify, and needs LISTEN_FDNAMES. The
syslog ident defaults to \fBtwistrs\fR, and the listen backlog to 511 (twistd's 50 overflows
in a burst of connects).
.SH SEE ALSO
.BR twistd (1)
"#;

/// The man pages: `twistrs.1` and `twistrs-PLUGIN.1`, as (file name, roff text).
pub fn man_pages(plugins: &[Plugin]) -> Vec<(String, String)> {
    let cmd = build_command(plugins);
    let mut pages = Vec::new();
    let mut main = Vec::new();
    let man = clap_mangen::Man::new(cmd.clone());
    let _ = man.render_title(&mut main);
    let _ = man.render_name_section(&mut main);
    let _ = man.render_synopsis_section(&mut main);
    let _ = man.render_description_section(&mut main);
    let _ = man.render_options_section(&mut main);
    let _ = man.render_subcommands_section(&mut main);
    main.extend_from_slice(MAN_EXTRA.as_bytes());
    pages.push((
        "twistrs.1".to_string(),
        String::from_utf8_lossy(&main).into_owned(),
    ));
    for sub in cmd.get_subcommands() {
        let name = format!("twistrs-{}", sub.get_name());
        let page = sub
            .clone()
            .name(name.clone())
            .bin_name(format!("twistrs {}", sub.get_name()));
        let mut out = Vec::new();
        let _ = clap_mangen::Man::new(page).render(&mut out);
        out.extend_from_slice(b".SH SEE ALSO\n.BR twistrs (1)\n");
        pages.push((
            format!("{name}.1"),
            String::from_utf8_lossy(&out).into_owned(),
        ));
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_past_what_a_duration_holds_are_the_longest_wait_not_a_panic() {
        assert_eq!(seconds("10"), Ok(Duration::from_secs(10)));
        assert_eq!(seconds("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(seconds("-0"), Ok(Duration::ZERO));
        assert_eq!(
            seconds("1e19"),
            Ok(Duration::from_secs(10_000_000_000_000_000_000))
        );
        for huge in ["18446744073709551615", "1e300", "99999999999999999999"] {
            assert_eq!(seconds(huge), Ok(Duration::MAX), "{huge}");
        }
        for bad in ["inf", "-inf", "nan", "-1", "", "ten"] {
            assert_eq!(
                seconds(bad),
                Err(format!("'{bad}' is not a number of seconds")),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_double_dash_ends_the_global_options_only_where_getopt_sees_one() {
        let cmd = build_command(&crate::builtin_plugins());
        let drop = |words: &str| {
            let args = std::iter::once("twistrs")
                .chain(words.split(' '))
                .map(OsString::from)
                .collect();
            let kept: Vec<String> = drop_end_of_global_options(&cmd, args)
                .iter()
                .skip(1)
                .map(|w| w.to_string_lossy().into_owned())
                .collect();
            kept.join(" ")
        };
        assert_eq!(drop("-n -- web"), "-n web");
        assert_eq!(drop("-- web --path x"), "web --path x");
        assert_eq!(drop("-nl- -- web"), "-nl- web");
        assert_eq!(drop("-l x.log -- web"), "-l x.log web");
        assert_eq!(drop("--pid= -- web"), "--pid= web");
        // A value, not the end: `--pidfile --` names a pidfile `--`, as in getopt.
        assert_eq!(drop("--pidfile -- web"), "--pidfile -- web");
        assert_eq!(drop("--pidf -- web"), "--pidf -- web");
        assert_eq!(drop("-l -- web"), "-l -- web");
        assert_eq!(drop("-nl -- web"), "-nl -- web");
        // After the plugin's name, the plugin's own.
        assert_eq!(drop("-n procmon -- sleep 1"), "-n procmon -- sleep 1");
        // A word that is not UTF-8 does not end the search.
        use std::os::unix::ffi::OsStringExt;
        let args = vec![
            OsString::from("twistrs"),
            OsString::from_vec(b"--pidfile=\xff.pid".to_vec()),
            OsString::from("--"),
            OsString::from("web"),
        ];
        assert_eq!(drop_end_of_global_options(&cmd, args).len(), 3);
    }
}
