//! The run sequence, in twistd's order, as straight-line code: one named step per function.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgMatches;
use clap::error::ErrorKind;
use twistrs_core::{Plugin, Reactor, StopReason};

use crate::cli;
use crate::logging::{self, Destination};

const LAUNCHER: &str = "twistrs.launcher";

/// Exit status for every start-up failure, as twistd.
const EXIT_FAILURE: i32 = 1;

/// Runs the launcher with `args` (argv, program name first) and `plugins`; returns the exit
/// status. A stop by SIGTERM/SIGINT re-raises the signal, as twistd does, so the process ends
/// with 128+signal and this function does not return.
pub fn run(args: impl IntoIterator<Item = OsString>, plugins: Vec<Plugin>) -> i32 {
    let mut cmd = cli::build_command(&plugins);
    let matches = match cmd.try_get_matches_from_mut(args) {
        Ok(m) => m,
        Err(e) => return usage_error(&mut cmd, e),
    };
    if matches.get_flag("version") {
        println!("twistrs (the Twisted daemon, in Rust) {}", crate::VERSION);
        println!("A native rebuild of Twisted's twistd; see 'man twistrs'.");
        return 0;
    }
    if matches.get_flag("help-reactors") {
        println!("    default  mio (epoll on Linux): twistrs' only reactor");
        return 0;
    }
    if let Some((name, why)) = cli::python_only_option(&matches) {
        eprintln!("twistrs: --{name} {why}; twistrs runs native plugins and does not support it");
        return EXIT_FAILURE;
    }
    if matches.subcommand().is_none() {
        eprintln!("twistrs: no plugin given\n\n{}", cmd.render_usage());
        eprintln!("Run 'twistrs --help' for the list of plugins.");
        return EXIT_FAILURE;
    }
    match start(&matches, &plugins) {
        Ok(status) => status,
        Err(msg) => {
            log::error!(target: LAUNCHER, "{msg}");
            eprintln!("twistrs: {msg}");
            EXIT_FAILURE
        }
    }
}

/// Prints help or a usage error and picks the exit status twistd would.
fn usage_error(cmd: &mut clap::Command, e: clap::Error) -> i32 {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            0
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // No arguments at all: twistd prints its help to stdout and exits 0.
            let _ = cmd.print_help();
            0
        }
        _ => {
            let _ = e.print();
            EXIT_FAILURE
        }
    }
}

/// Refuses options that cannot work, before anything is touched.
fn check_options(m: &ArgMatches) -> Result<(), String> {
    match m.get_one::<String>("reactor").map(String::as_str) {
        Some("default" | "epoll") | None => {}
        Some(other) => {
            return Err(format!(
                "reactor '{other}' is not available: twistrs has one reactor, 'default' (epoll)"
            ));
        }
    }
    if !m.get_flag("nodaemon") {
        return Err(
            "daemon mode is not implemented yet: run in the foreground with -n \
                    (under systemd, use Type=simple)"
                .into(),
        );
    }
    for opt in ["uid", "gid", "chroot"] {
        if m.contains_id(opt) && m.value_source(opt) == Some(clap::parser::ValueSource::CommandLine)
        {
            return Err(format!("--{opt} is not implemented yet"));
        }
    }
    if m.get_flag("euid") || m.get_flag("syslog") {
        return Err("--euid and --syslog are not implemented yet".into());
    }
    Ok(())
}

fn start(m: &ArgMatches, plugins: &[Plugin]) -> Result<i32, String> {
    check_options(m)?;
    let (name, sub) = m.subcommand().ok_or("no plugin given")?;
    let plugin = plugins
        .iter()
        .find(|p| p.tapname == name)
        .ok_or_else(|| format!("Unknown command: {name}"))?;
    let mut service = (plugin.make_service)(sub).map_err(|e| e.to_string())?;
    open_log(m)?;
    log::info!(target: LAUNCHER, "twistrs {} ({}) starting up.", crate::VERSION, exe());
    log::info!(target: LAUNCHER, "reactor class: twistrs_core::Reactor (mio, epoll).");
    enter_rundir(m)?;
    set_umask(m);
    raise_fd_limit();
    let mut reactor = Reactor::new().map_err(|e| format!("cannot create the reactor: {e}"))?;
    reactor.on_reopen(Box::new(reopen_log));
    if let Err(e) = service.privileged_start_service(&mut reactor) {
        service.stop_service(&mut reactor);
        return Err(e.to_string());
    }
    if let Err(e) = service.start_service(&mut reactor) {
        service.stop_service(&mut reactor);
        return Err(e.to_string());
    }
    let reason = reactor
        .run()
        .map_err(|e| format!("the reactor failed: {e}"))?;
    let signal = announce_stop(reason);
    service.stop_service(&mut reactor);
    let timeout = m
        .get_one::<f64>("shutdown-timeout")
        .copied()
        .unwrap_or(10.0);
    if let Err(e) = reactor.drain(Duration::from_secs_f64(timeout)) {
        log::error!(target: LAUNCHER, "error while draining connections: {e}");
    }
    log::info!(target: "twistrs.reactor", "Main loop terminated.");
    log::info!(target: LAUNCHER, "Server Shut Down.");
    log::logger().flush();
    drop(reactor);
    if let Some(sig) = signal {
        exit_with_signal(sig);
    }
    Ok(0)
}

fn exe() -> String {
    std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "twistrs".into())
}

/// `-l FILE` (resolved against the start directory, before `--rundir`), `-l -` or stdout.
fn open_log(m: &ArgMatches) -> Result<(), String> {
    let dest = match m.get_one::<PathBuf>("logfile") {
        Some(p) if p.as_os_str() == "-" => Destination::Stdout,
        Some(p) => Destination::File(p.clone()),
        None => Destination::Stdout,
    };
    let shown = match &dest {
        Destination::File(p) => p.display().to_string(),
        Destination::Stdout => "-".into(),
    };
    logging::init(dest).map_err(|e| format!("cannot open log file {shown}: {e}"))?;
    Ok(())
}

fn reopen_log() {
    if let Some(l) = logging::logger() {
        match l.reopen() {
            Ok(()) => {
                if let Some(p) = l.path() {
                    log::info!(target: LAUNCHER, "Reopened log file {}.", p.display());
                }
            }
            Err(e) => eprintln!("twistrs: cannot reopen the log file: {e}"),
        }
    }
}

fn enter_rundir(m: &ArgMatches) -> Result<(), String> {
    if let Some(dir) = m.get_one::<PathBuf>("rundir")
        && dir != Path::new(".")
    {
        std::env::set_current_dir(dir)
            .map_err(|e| format!("cannot change to directory {}: {e}", dir.display()))?;
    }
    Ok(())
}

fn set_umask(m: &ArgMatches) {
    if let Some(mask) = m.get_one::<u32>("umask") {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(*mask));
    }
}

/// Lifts the soft descriptor limit to the hard one: every connection is a descriptor.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        log::warn!(target: LAUNCHER, "cannot raise the open-file limit from {soft}: {e}");
    }
}

/// Logs twistd's shutdown line; returns the signal to exit with.
fn announce_stop(reason: StopReason) -> Option<i32> {
    match reason {
        StopReason::Signal(sig) => {
            let name = match sig {
                libc::SIGTERM => "SIGTERM",
                libc::SIGINT => "SIGINT",
                _ => "a signal",
            };
            log::info!(target: "twistrs.reactor", "Received {name}, shutting down.");
            Some(sig)
        }
        StopReason::Requested => None,
    }
}

/// Ends the process by `sig` with its default action, so the exit status is 128+sig.
fn exit_with_signal(sig: i32) -> ! {
    // SAFETY: restoring the default action and raising a signal at exit; nothing runs after.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
}
