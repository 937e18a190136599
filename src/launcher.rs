//! The run sequence, in twistd's order, as straight-line code: one named step per function.
//!
//! Order (twistd's, `scripts/_twistd_unix.py`): pidfile check; log opened; the plugin's service
//! built (twistd builds it first, so a refused start has already run the plugin's options, and
//! what they log is lost); chroot; chdir to --rundir; umask; double fork; pidfile written;
//! listeners bound as the starting user; privileges dropped; services started; status
//! reported to the waiting parent.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::ArgMatches;
use clap::error::ErrorKind;
use twistrs_core::{Plugin, Reactor, Service, SignalAction, StopReason};

use crate::daemon::{self, StatusWriter};
use crate::logging::{self, Destination, Rotation};
use crate::pidfile::Pidfile;
use crate::{cli, control, notify, privileges, upgrade, workers};

pub(crate) const LAUNCHER: &str = "twistrs.launcher";
/// Why a chrooted single process cannot restart (its binary is outside the jail): said by
/// the daemon, and by `twistrs restart` before it signals one.
pub(crate) const CHROOTED_RESTART: &str =
    "a chrooted service cannot re-execute its binary; stop and start it instead";

/// Why PID 1 of a PID namespace (a container's first process) cannot restart: a restart
/// hands over to a new process and the old one exits, and the kernel ends every process of
/// the namespace when its PID 1 exits. Said by the daemon, and by `twistrs restart` before it
/// signals one.
pub(crate) const PID1_RESTART: &str = "PID 1 of its PID namespace (a container's first \
     process) cannot hand over to a new process: the namespace and every process in it end \
     when PID 1 exits; restart the container instead";

/// Why PID 1 does not daemonize: the daemon would be killed as its starter exits.
const PID1_DAEMON: &str = "this process is PID 1 of its PID namespace (a container's first \
     process): a daemon forked from it would be killed as it exits, and the container would \
     stop; run twistrs in the foreground with -n (--nodaemon)";

/// True if this process is PID 1 of its PID namespace.
pub(crate) fn is_pid1() -> bool {
    std::process::id() == 1
}

/// Why this process cannot hand over to a successor at all, if it cannot: the one check for
/// the single process and the master (`chrooted` is false for a master, which never chroots).
pub(crate) fn cannot_restart(chrooted: bool) -> Option<&'static str> {
    if is_pid1() {
        Some(PID1_RESTART)
    } else if chrooted {
        Some(CHROOTED_RESTART)
    } else {
        None
    }
}

/// Exit status for every start-up failure, as twistd.
const EXIT_FAILURE: i32 = 1;

/// Runs the launcher with `args` (argv, program name first) and `plugins`; returns the exit
/// status. A stop by SIGTERM/SIGINT re-raises the signal, as twistd does, so the process ends
/// with 128+signal and this function does not return.
pub fn run(args: impl IntoIterator<Item = OsString>, plugins: Vec<Plugin>) -> i32 {
    close_inherited_on_exec();
    return_large_buffers();
    let args: Vec<OsString> = args.into_iter().collect();
    if let Err(e) = crate::registry::check_names(&plugins) {
        say!("twistrs: {e}");
        return EXIT_FAILURE;
    }
    let mut cmd = cli::build_command(&plugins);
    let args = cli::drop_end_of_global_options(&cmd, args);
    let matches = match cmd.try_get_matches_from_mut(args.clone()) {
        Ok(m) => m,
        Err(e) => return usage_error(&mut cmd, e),
    };
    let plugin_version = matches
        .subcommand()
        .is_some_and(|(_, sub)| matches!(sub.try_get_one::<bool>("version"), Ok(Some(true))));
    if matches.get_flag("version") || plugin_version {
        println!("twistrs (the Twisted daemon, in Rust) {}", crate::VERSION);
        println!("A native rebuild of Twisted's twistd; see 'man twistrs'.");
        return 0;
    }
    if matches.get_flag("help-reactors") {
        println!("    default  mio (epoll on Linux): twistrs' only reactor");
        return 0;
    }
    if let Some((name, why)) = cli::python_only_option(&matches) {
        say!("twistrs: --{name} {why}; twistrs runs native plugins and does not support it");
        return EXIT_FAILURE;
    }
    match matches.subcommand() {
        None => {
            say!("twistrs: no plugin given\n\n{}", cmd.render_usage());
            say!("Run 'twistrs --help' for the list of plugins.");
            return EXIT_FAILURE;
        }
        Some(("completions", sub)) => {
            let shell = sub.get_one::<String>("shell").map_or("", String::as_str);
            return match cli::completion(&plugins, shell) {
                Some(script) => {
                    print!("{script}");
                    0
                }
                None => EXIT_FAILURE,
            };
        }
        // A dry run of `stop` must not stop anything.
        Some((name, _)) if cli::CONTROL.contains(&name) && matches.get_flag("check") => {
            say!("twistrs: --check checks a start (twistrs --check PLUGIN ...), not '{name}'");
            return EXIT_FAILURE;
        }
        Some((name, sub)) if cli::CONTROL.contains(&name) => {
            return control::run(name, &matches, sub, &cmd);
        }
        // twistd's `mail --help-auth`: printed while the options are read, nothing started.
        Some((_, sub)) => match twistrs_core::auth::auth_help(sub) {
            Some(Ok(text)) => {
                print!("{text}");
                return 0;
            }
            Some(Err(msg)) => {
                say!("twistrs: {msg}");
                return EXIT_FAILURE;
            }
            None => {}
        },
    }
    if matches.get_flag("check") {
        return check(&matches, &plugins);
    }
    let mut status = StatusWriter::none();
    match start(&matches, &plugins, &args, &mut status) {
        Ok(code) => code,
        Err(msg) => {
            log::error!(target: LAUNCHER, "{msg}");
            log::logger().flush();
            // A daemon's starter prints it; the daemon's own stderr may still be the same.
            if !status.fail(&msg) {
                say!("twistrs: {msg}");
            }
            EXIT_FAILURE
        }
    }
}

/// `--check` (nginx's `-t`): reads and checks what a start would (options, the files they
/// name, certificates, each endpoint's address, the log, the pidfile, `--chroot`, `--rundir`,
/// the user to run as) and changes nothing: no port is taken (stand-ins are bound on port
/// 0; a port is bound for a moment, never listened on, only when no server of ours holds
/// it), no file is written, no process is started. Problems go to stderr; a summary of what
/// would be served to stdout. Exit 0 when a start would get as far as serving, 1 otherwise.
fn check(m: &ArgMatches, plugins: &[Plugin]) -> i32 {
    twistrs_core::plugin::set_checking();
    match check_start(m, plugins) {
        Ok(summary) => {
            print!("{summary}");
            0
        }
        Err(msg) => {
            say!("twistrs: {msg}");
            say!("twistrs: check failed: a start would fail");
            EXIT_FAILURE
        }
    }
}

fn check_start(m: &ArgMatches, plugins: &[Plugin]) -> Result<String, String> {
    use std::fmt::Write as _;
    let mut plan = plan(m, false)?;
    let (name, plugin, sub) = named_plugin(m, plugins)?;
    // Warnings (an expired certificate, mail without -d) as a start would log them.
    let logger = logging::init(Destination::Stderr, None)
        .map_err(|e| format!("cannot write to stderr: {e}"))?;
    logger.configure(logging::Format::Text, log::LevelFilter::Warn);
    // Each warning once, as a start logs it (one expired certificate on two ports).
    logger.start_up(Vec::new());
    let mut note = None;
    // The ports are probed unless our running server holds them (it hands them to a restart).
    let mut probe = true;
    if let Some(p) = &plan.pidfile {
        match crate::pidfile::state(p) {
            Ok(crate::pidfile::State::Running(held)) => {
                let who = match held.holder() {
                    Ok(crate::holder::Holder::Named(pid) | crate::holder::Holder::Other(pid)) => {
                        format!("PID {pid}")
                    }
                    _ => format!("'{}'", held.named.trim()),
                };
                note = Some(format!(
                    "  note: {} is held by a running twistrs ({who}): a start would be \
                     refused; 'twistrs restart' replaces it (the ports were not probed: it \
                     holds them)",
                    p.display()
                ));
                probe = false;
            }
            Ok(_) => twistrs_core::linelog::check_append(p)
                .map(drop)
                .map_err(|e| format!("cannot write pidfile {}: {e}", p.display()))?,
            Err(e) => return Err(format!("cannot read pidfile {}: {e}", p.display())),
        }
    }
    if let Destination::File(p) = &plan.log {
        twistrs_core::linelog::check_append(p)
            .map_err(|e| format!("cannot open log file {}: {e}", p.display()))?;
    }
    let n = workers::count(m);
    workers_allowed(n, &plan)?;
    let mut service = make_service(name, plugin, sub, n)?;
    // --chroot, --rundir and --umask as a start takes them; never into the background.
    plan.daemon = false;
    settle(&plan, true, &mut StatusWriter::none(), false, logger)?;
    let mut reactor = Reactor::new().map_err(|e| format!("cannot create the reactor: {e}"))?;
    reactor.check_only(probe);
    if let Some(ep) = &plan.metrics {
        let f = reactor.add_factory(Box::new(crate::metrics::MetricsFactory::new(
            crate::metrics::Source::Local,
        )));
        reactor.listen(ep, f).map_err(|e| e.to_string())?;
    }
    service
        .privileged_start_service(&mut reactor.service_host())
        .map_err(|e| e.to_string())?;
    let endpoints: Vec<String> = reactor.listener_fds().into_iter().map(|(e, _)| e).collect();
    reactor.abandon_listeners();
    drop(reactor);
    if plan.target.any() {
        plan.target.drop_privileges()?;
    }
    warn_reread(&plan, n > 1, true);
    service.check_service().map_err(|e| e.to_string())?;
    let mut out = format!(
        "twistrs: {name}: the options, files and endpoints check out; nothing was started\n"
    );
    for ep in endpoints {
        let _ = writeln!(out, "  would listen on {ep}");
    }
    if n > 1 {
        let _ = writeln!(out, "  with {n} worker processes");
    }
    if let Some(n) = note {
        let _ = writeln!(out, "{n}");
    }
    Ok(out)
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

fn check_reactor(m: &ArgMatches) -> Result<(), String> {
    match m.get_one::<String>("reactor").map(String::as_str) {
        Some("default" | "epoll") | None => Ok(()),
        Some(other) => Err(format!(
            "reactor '{other}' is not available: twistrs has one reactor, 'default' (epoll)"
        )),
    }
}

/// Everything decided from the command line before anything is touched.
pub(crate) struct Plan {
    pub(crate) daemon: bool,
    pub(crate) start_dir: PathBuf,
    pidfile: Option<PathBuf>,
    log: Destination,
    rotation: Option<Rotation>,
    log_format: logging::Format,
    log_level: log::LevelFilter,
    /// Where `--metrics` serves, if asked.
    pub(crate) metrics: Option<twistrs_core::Endpoint>,
    pub(crate) rundir: PathBuf,
    umask: Option<u32>,
    pub(crate) chroot: Option<PathBuf>,
    pub(crate) target: privileges::Target,
    /// Who `target` is, by name: looked up before the chroot, whose jail may have no passwd.
    who: String,
    pub(crate) shutdown_timeout: Duration,
}

impl Plan {
    /// The umask the run uses: `--umask`, else twistd's 0077 for a daemon, else the inherited
    /// one (`None`).
    pub(crate) fn umask(&self) -> Option<u32> {
        self.umask.or(self.daemon.then_some(0o077))
    }
}

fn plan(m: &ArgMatches, successor: bool) -> Result<Plan, String> {
    check_reactor(m)?;
    let daemon = !m.get_flag("nodaemon") && !successor;
    if daemon && is_pid1() {
        // twistd forks, exits 0, and its daemon dies with the namespace at once.
        return Err(PID1_DAEMON.into());
    }
    let start_dir =
        std::env::current_dir().map_err(|e| format!("cannot read the current directory: {e}"))?;
    // Both paths resolve against the start directory, before --rundir, as in twistd.
    let pidfile = control::pidfile_path(m, None);
    let log = if m.get_flag("syslog") {
        Destination::Syslog(m.get_one::<String>("prefix").cloned().unwrap_or_default())
    } else {
        // An empty -l is no -l, as in twistd (`--logfile=` logs where the default does).
        match twistrs_core::options::path_given(m, "logfile") {
            Some(p) if p.as_os_str() == "-" => {
                if daemon {
                    return Err("Daemons cannot log to stdout, exiting!".into());
                }
                Destination::Stdout
            }
            Some(p) => Destination::File(start_dir.join(p)),
            // A daemon's successor (not daemonizing again) logs to the file as the daemon
            // did; under -n a successor has our stdout and logs on there.
            None if !m.get_flag("nodaemon") => Destination::File(start_dir.join("twistrs.log")),
            None => Destination::Stdout,
        }
    };
    let rotation = m.get_one::<u64>("log-rotate-size").map(|max| Rotation {
        max: (*max).max(1),
        keep: m.get_one::<u32>("log-keep").copied().unwrap_or(10),
    });
    let target = privileges::resolve(
        m.get_one::<String>("uid").map(String::as_str),
        m.get_one::<String>("gid").map(String::as_str),
        m.get_flag("euid"),
    )?;
    Ok(Plan {
        daemon,
        start_dir,
        pidfile,
        log,
        rotation,
        log_format: match m.get_one::<String>("log-format").map(String::as_str) {
            Some("json") => logging::Format::Json,
            _ => logging::Format::Text,
        },
        log_level: logging::level_filter(m.get_one::<String>("log-level").map(String::as_str)),
        metrics: match m.get_one::<String>("metrics") {
            Some(ep) => Some(ep.parse().map_err(|e| format!("--metrics {ep}: {e}"))?),
            None => None,
        },
        rundir: m
            .get_one::<PathBuf>("rundir")
            .cloned()
            .unwrap_or_else(|| ".".into()),
        umask: m.get_one::<u32>("umask").copied(),
        chroot: m.get_one::<PathBuf>("chroot").cloned(),
        who: target.describe(),
        target,
        shutdown_timeout: m
            .get_one::<Duration>("shutdown-timeout")
            .copied()
            .unwrap_or(cli::SHUTDOWN_TIMEOUT),
    })
}

/// The plugin the command line names, and its options.
fn named_plugin<'a>(
    m: &'a ArgMatches,
    plugins: &'a [Plugin],
) -> Result<(&'a str, &'a Plugin, &'a ArgMatches), String> {
    let (name, sub) = m.subcommand().ok_or("no plugin given")?;
    let plugin = plugins
        .iter()
        .find(|p| p.tapname == name)
        .ok_or_else(|| format!("Unknown command: {name}"))?;
    Ok((name, plugin, sub))
}

/// What `--workers N` (N > 1) refuses of the global options: a start and `--check` alike.
fn workers_allowed(n: usize, plan: &Plan) -> Result<(), String> {
    if n > 1 && plan.rotation.is_some() {
        return Err(
            "--log-rotate-size cannot be used with --workers: several processes \
                    write the log; rotate it with logrotate and SIGHUP"
                .into(),
        );
    }
    Ok(())
}

/// The plugin's service, refused under `--workers N` (N > 1) if it runs in one process only.
fn make_service(
    name: &str,
    plugin: &Plugin,
    sub: &ArgMatches,
    n: usize,
) -> Result<Box<dyn Service>, String> {
    let service = (plugin.make_service)(sub).map_err(|e| e.to_string())?;
    if n > 1
        && let Some(why) = service.single_process()
    {
        return Err(format!(
            "{name} cannot run with --workers {n}: {why}; it runs in one process only"
        ));
    }
    Ok(service)
}

fn start(
    m: &ArgMatches,
    plugins: &[Plugin],
    args: &[OsString],
    status: &mut StatusWriter,
) -> Result<i32, String> {
    // From the pidfile's lock on, `twistrs reload` and `restart` may aim SIGHUP or SIGUSR2 at
    // this process, whose handlers come with the reactor: until then the signals are ignored,
    // not the default (death). Handlers replace this, and exec gives children the default.
    for sig in [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: setting a disposition at start-up, before any thread exists.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    // A file grown to RLIMIT_FSIZE (systemd's LimitFSIZE=, `ulimit -f`) kills by default:
    // the log reaching it, or one large mail, would end every connection. Ignored, the
    // write fails with EFBIG and is handled as any write error. Python ignores it too, so
    // twistd does; children get the default back (`core::process`).
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    let worker = workers::from_env();
    let mut inherited = upgrade::from_env();
    // A restart's successor (or a worker) reports every failure, even an early one, to its
    // predecessor (its master).
    if let Some(fd) = inherited.as_mut().and_then(|i| i.ready.take()) {
        *status = StatusWriter::from_fd(fd);
    }
    if inherited.is_some() && worker.is_none() {
        upgrade::note_predecessor();
    }
    // A worker logs where its master does, and never goes into the background itself.
    let mut plan = plan(m, inherited.is_some() && worker.is_none_or(|w| w.file_log))?;
    if worker.is_some() {
        plan.daemon = false;
    }
    let n = workers::count(m);
    workers_allowed(n, &plan)?;
    let (name, plugin, sub) = named_plugin(m, plugins)?;
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("twistrs"));
    let systemd_fds = systemd_fds_for_us();

    // 1. The pidfile check: a live twistrs holds its lock.
    let mut pidfile = match (&plan.pidfile, &inherited) {
        // The master holds it.
        _ if worker.is_some() => None,
        (None, _) => None,
        (Some(p), Some(inh)) if inh.pidfile.is_some() => {
            Some(Pidfile::inherit(p, inh.pidfile.unwrap_or(-1)).map_err(|e| e.to_string())?)
        }
        (Some(p), _) => Some(Pidfile::acquire(p, plan.umask()).map_err(|e| e.to_string())?),
    };

    // 2. The log; then the service, built only now (twistd builds it first): a refused start
    // changes nothing a plugin writes (mail's passwords), and what it logs reaches the log.
    // Options the plugin refuses leave no log file of this start's making behind, as twistd
    // (which refuses them before it opens its log) leaves none.
    let built = open_log(&plan, &exe, pidfile.as_ref()).and_then(|logger| {
        let service = make_service(name, plugin, sub, n).inspect_err(|_| {
            logger.unmake();
            twistrs_core::reread::unmake_logs();
        })?;
        Ok((logger, service))
    });
    let (logger, mut service) = match built {
        Ok(b) => b,
        Err(e) => {
            if let Some(p) = pidfile {
                p.give_up();
            }
            return Err(e);
        }
    };
    let result = if n > 1 {
        workers::master(
            n,
            &plan,
            &mut service,
            &mut pidfile,
            status,
            inherited,
            &exe,
            args,
            systemd_fds,
            logger,
        )
    } else {
        serve(
            m,
            &plan,
            &mut service,
            &mut pidfile,
            status,
            inherited,
            &exe,
            args,
            systemd_fds,
            logger,
        )
    };
    match result {
        Ok(Ended::Signal(sig)) => {
            if let Some(p) = pidfile {
                p.remove();
            }
            log_shut_down();
            log::logger().flush();
            exit_with_signal(sig);
        }
        Ok(Ended::Requested) => {
            if let Some(p) = pidfile {
                p.remove();
            }
            log_shut_down();
            Ok(0)
        }
        Ok(Ended::HandedOver(pid)) => {
            if let Some(p) = pidfile {
                p.release();
            }
            log::info!(target: LAUNCHER, "Server Shut Down (handed over to PID {pid}).");
            Ok(0)
        }
        Err(e) => {
            if let Some(p) = pidfile {
                p.give_up();
            }
            // A start that failed leaves no plugin log of its making (one past the start was
            // kept by then: `Logger::started`).
            twistrs_core::reread::unmake_logs();
            Err(e)
        }
    }
}

/// Opens the log and writes the start-up lines.
fn open_log(
    plan: &Plan,
    exe: &Path,
    pidfile: Option<&Pidfile>,
) -> Result<&'static logging::Logger, String> {
    let shown = match &plan.log {
        Destination::File(p) => p.display().to_string(),
        _ => "-".into(),
    };
    let logger = logging::init(clone_dest(&plan.log), plan.rotation)
        .map_err(|e| format!("cannot open log file {shown}: {e}"))?;
    logger.configure(plan.log_format, plan.log_level);
    // Reopened by name on SIGHUP as the user the start drops to: tried as that user with the
    // plugins' files. One that was there is not given to that user (`Logger::chown`), and may
    // be closed to it. In a chroot it is reopened by another path, and said so there.
    if plan.chroot.is_none()
        && let Some(p) = logger.path()
    {
        twistrs_core::reread::note_append(&p);
    }
    // Each start-up warning once; a first worker's master said some a moment ago, checking
    // the same options and files (a replacement knows none: files may have changed since).
    logger.start_up(workers::this_worker().map_or_else(Vec::new, |w| w.known.clone()));
    // A worker's own line says what it is; twistd's two start-up lines are the master's, not
    // repeated by every worker into the same log.
    if let Some(w) = workers::this_worker() {
        log::info!(target: LAUNCHER, "Worker {} of master PID {}, PID {}.",
            w.index, w.master, std::process::id());
    } else {
        log::info!(target: LAUNCHER, "twistrs {} ({}) starting up.", crate::VERSION, exe.display());
        log::info!(target: LAUNCHER, "reactor class: twistrs_core::Reactor (mio, epoll).");
    }
    if let Some(p) = pidfile
        && let Some(prev) = &p.previous
    {
        log::info!(target: LAUNCHER,
            "Replacing stale pidfile {} (it held '{prev}'; no process holds its lock).",
            p.path().display());
    }
    Ok(logger)
}

fn clone_dest(d: &Destination) -> Destination {
    match d {
        Destination::Stdout => Destination::Stdout,
        Destination::Stderr => Destination::Stderr,
        Destination::File(p) => Destination::File(p.clone()),
        Destination::Syslog(i) => Destination::Syslog(i.clone()),
    }
}

/// twistd's last line, "Server Shut Down.", is the master's: in the one log master and
/// workers share, a worker's last line says which one it is (whether its master or a signal
/// of its own, systemd's SIGTERM to every process, stopped it).
fn log_shut_down() {
    match workers::this_worker() {
        Some(w) => log::info!(target: LAUNCHER,
            "Worker {} (PID {}) shut down.", w.index, std::process::id()),
        None => log::info!(target: LAUNCHER, "Server Shut Down."),
    }
}

/// The warning for a log file outside `--chroot`: in a single process or a worker as it
/// chroots, in a workers' master for its workers (the same text, which a first worker then
/// does not repeat).
pub(crate) fn log_outside_jail(e: &str) {
    log::warn!(target: LAUNCHER, "The log file {e}.");
}

/// How the service ended.
pub(crate) enum Ended {
    Signal(i32),
    Requested,
    HandedOver(u32),
}

/// Steps 3-6 of a start: chroot (if `chroot`), chdir, umask, into the background (the parent
/// waits on the status pipe and never returns), and LISTEN_PID for socket activation. A
/// workers' master passes `chroot: false`: it re-executes its binary for each worker and at a
/// restart, so each worker chroots itself.
pub(crate) fn settle(
    plan: &Plan,
    chroot: bool,
    status: &mut StatusWriter,
    systemd_fds: bool,
    logger: &'static logging::Logger,
) -> Result<(), String> {
    if chroot && let Some(dir) = &plan.chroot {
        if let Err(e) = logger.enter_chroot(dir) {
            log_outside_jail(&e);
        }
        privileges::chroot(dir)?;
    }
    if (chroot || plan.chroot.is_none()) && plan.rundir != Path::new(".") {
        std::env::set_current_dir(&plan.rundir)
            .map_err(|e| format!("cannot change to directory {}: {e}", plan.rundir.display()))?;
    }
    let umask = plan.umask();
    if let Some(mask) = umask {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    if plan.daemon {
        let log_path = logger.path();
        // A failure in the forked process comes back as an error (and `status` as its pipe):
        // the start gives its pidfile up and logs it as any failure.
        let detached = daemon::daemonize(
            Path::new("."),
            umask.unwrap_or(0o077),
            log_path.as_deref(),
            status,
        );
        logger.forked();
        detached?;
    }
    if systemd_fds {
        // Socket activation names the PID systemd started; after a fork that is us.
        // SAFETY: single-threaded at this point (the reactor and its threads come later).
        unsafe { std::env::set_var("LISTEN_PID", std::process::id().to_string()) };
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn serve(
    m: &ArgMatches,
    plan: &Plan,
    service: &mut Box<dyn Service>,
    pidfile: &mut Option<Pidfile>,
    status: &mut StatusWriter,
    inherited: Option<upgrade::Inherited>,
    exe: &Path,
    args: &[OsString],
    systemd_fds: bool,
    logger: &'static logging::Logger,
) -> Result<Ended, String> {
    settle(plan, true, status, systemd_fds, logger)?;
    // 7. The pidfile names the process that serves (a successor writes it once it serves).
    if inherited.is_none()
        && let Some(p) = pidfile.as_mut()
    {
        p.write_pid()
            .map_err(|e| format!("cannot write pidfile {}: {e}", p.path().display()))?;
    }
    raise_fd_limit();
    // 8. Listeners, bound as the starting user (port 80 as root), or inherited.
    let mut reactor = Reactor::new().map_err(|e| format!("cannot create the reactor: {e}"))?;
    workers::number_sessions(m, &mut reactor);
    keep_tickets_current(&reactor.handle());
    let reloaded = watch_signals(&mut reactor, plan.chroot.clone())
        .map_err(|e| format!("cannot watch signals: {e}"))?;
    if let Some(inh) = &inherited {
        for (ep, fd) in &inh.listeners {
            // SAFETY: our predecessor passed each listening socket exactly once.
            let owned =
                unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(*fd) };
            reactor.inherit_listener(ep.clone(), owned);
        }
    }
    // A worker serves its figures on the private socket its master asks them on; the
    // master serves `--metrics` itself (`workers::master`).
    let metrics = match workers::this_worker() {
        Some(w) => w.metrics.as_ref(),
        None => plan.metrics.as_ref(),
    };
    let metrics_listener = match metrics {
        Some(ep) => {
            let f = reactor.add_factory(Box::new(crate::metrics::MetricsFactory::new(
                crate::metrics::Source::Local,
            )));
            Some(reactor.listen(ep, f).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let started = service
        .privileged_start_service(&mut reactor.service_host())
        .map_err(|e| e.to_string())
        // 9. Privileges dropped. The log goes to the new user (`-u`), who reopens it by name
        // after a rotation. The pidfile stays the starter's: the new user writes and empties it only
        // through the descriptor opened before, so it can never aim the starter's `stop` at
        // another process (which the lock check forbids anyway).
        .and_then(|()| {
            if plan.target.any() {
                give_logs(plan, logger);
                plan.target.drop_privileges()?;
            }
            workers::after_privilege_drop();
            // Said by one worker of a master, not by each.
            let say = workers::this_worker().is_none_or(|w| w.index == 1);
            warn_reread(plan, workers::this_worker().is_some(), say);
            Ok(())
        })
        // 10. Services.
        .and_then(|()| {
            service
                .start_service(&mut reactor.service_host())
                .map_err(|e| e.to_string())
        });
    if let Err(e) = started {
        service.stop_service(&mut reactor.service_host());
        // Children a service started before another failed are stopped and reaped before the
        // failure is reported: a restart's predecessor then starts its own again, never
        // beside them.
        if let Err(e) = reactor.drain(plan.shutdown_timeout) {
            log::error!(target: LAUNCHER, "error while stopping: {e}");
        }
        return Err(e);
    }
    if inherited.is_some()
        && let Some(p) = pidfile.as_mut()
    {
        p.write_pid()
            .map_err(|e| format!("cannot write pidfile {}: {e}", p.path().display()))?;
    }
    // 11. Serving: tell the parent (or predecessor, or master) and systemd.
    if let Some(p) = pidfile.as_mut() {
        p.serving(plan.chroot.is_some());
    }
    status.ok();
    // The start is over: a warning from now on is news, whatever its text.
    logger.started();
    workers::test_crash();
    if inherited.is_some() {
        notify::notify(&format!("MAINPID={}\nREADY=1", std::process::id()));
    } else {
        notify::notify("READY=1");
    }
    // What a failed restart left to do: a stop, or a restart asked for during it (said in
    // the log as it came).
    let mut next: Option<StopReason> = None;
    // A worker whose master hands over to a new master's workers.
    let mut worker_handover = false;
    let ended = loop {
        let (reason, said) = match next.take() {
            Some(r) => (r, true),
            None => (
                reactor
                    .run()
                    .map_err(|e| format!("the reactor failed: {e}"))?,
                false,
            ),
        };
        match reason {
            // A worker's master restarts, never the worker: SIGUSR2 is the master's request
            // to drain and exit (at a stop or once a restart's new workers serve).
            StopReason::Signal(libc::SIGUSR2) if workers::this_worker().is_some() => {
                log::info!(target: "twistrs.reactor", "The master asked to stop; shutting down.");
                break Ended::Requested;
            }
            StopReason::Signal(upgrade::HANDOVER_END) if workers::this_worker().is_some() => {
                log::info!(target: "twistrs.reactor",
                    "The master hands over to new workers; draining.");
                worker_handover = true;
                break Ended::Requested;
            }
            StopReason::Signal(libc::SIGUSR2) => {
                let mut meanwhile = upgrade::Meanwhile::default();
                match restart(
                    &mut reactor,
                    service,
                    plan,
                    pidfile.as_ref(),
                    (exe, args),
                    &reloaded,
                    &mut meanwhile,
                )? {
                    Some(pid) => {
                        // `--metrics` is the successor's too: our figures while we drain
                        // would answer every other scrape, and the counters would jump back
                        // and forth.
                        if let Some(id) = metrics_listener {
                            reactor.stop_listening(id);
                        }
                        meanwhile.handed_over(pid);
                        break Ended::HandedOver(pid);
                    }
                    None => next = meanwhile.next(),
                }
            }
            StopReason::Signal(sig) => {
                let name = if sig == libc::SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                if !said {
                    log::info!(target: "twistrs.reactor", "Received {name}, shutting down.");
                }
                break Ended::Signal(sig);
            }
            StopReason::Requested => break Ended::Requested,
        }
    };
    let handover = worker_handover || matches!(ended, Ended::HandedOver(_));
    // After a hand-over the successor is the service (it sent MAINPID= and READY=1): our
    // STOPPING=1, which systemd takes under NotifyAccess=all, would put the unit into
    // "stopping" and have it kill the successor at TimeoutStopSec.
    if !handover {
        notify::notify("STOPPING=1");
    }
    if !handover && workers::this_worker().is_none() {
        // A predecessor still draining after it handed over to us serves on no longer.
        upgrade::tell_predecessor();
    }
    if workers::this_worker().is_some() {
        // The master's sockets outlive a worker: its UNIX socket files stay until it stops.
        reactor.abandon_listeners();
        // systemd's SIGTERM to every process of the service and the master's own request
        // (SIGUSR2) both arrive, in either order: neither may end the drain as a second
        // signal does in a single process. The master's SIGQUIT does (a second stop signal
        // to the master: close at once). In a hand-over's drain they make it a stop's.
        for sig in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGUSR2,
            upgrade::HANDOVER_END,
        ] {
            let h = reactor.handle();
            let end = handover && sig != upgrade::HANDOVER_END;
            reactor
                .on_signal(
                    sig,
                    SignalAction::Call(Box::new(move || {
                        if end {
                            h.end_handover();
                        }
                    })),
                )
                .map_err(|e| format!("cannot watch signals: {e}"))?;
        }
        reactor
            .on_signal(libc::SIGQUIT, SignalAction::Stop)
            .map_err(|e| format!("cannot watch signals: {e}"))?;
    } else {
        no_restart_while_stopping(&mut reactor, pidfile.as_ref(), &ended)
            .map_err(|e| format!("cannot watch signals: {e}"))?;
        if let Ended::HandedOver(succ) = ended {
            pass_stops_on(&mut reactor, succ).map_err(|e| format!("cannot watch signals: {e}"))?;
        }
    }
    service.stop_service(&mut reactor.service_host());
    let drained = if handover {
        reactor.drain_handover(plan.shutdown_timeout)
    } else {
        reactor.drain(plan.shutdown_timeout)
    };
    if let Err(e) = drained {
        log::error!(target: LAUNCHER, "error while draining connections: {e}");
    }
    // twistd's line is the master's; a worker's own last line follows (`start`).
    if workers::this_worker().is_none() {
        log::info!(target: "twistrs.reactor", "Main loop terminated.");
    }
    let _ = m;
    Ok(ended)
}

/// Once the service is stopping (or draining after a hand-over), SIGUSR2 is no longer a
/// restart, and not a second stop either: as a Stop signal it would end the drain at once,
/// as a second SIGTERM does, and `twistrs restart` would wait out its whole --timeout for a
/// report that never comes. It is logged, and a stop's report tells that command at once
/// (not after a hand-over: the successor is the one restarts aim at, and a report from us
/// could be taken for its).
pub(crate) fn no_restart_while_stopping(
    reactor: &mut Reactor,
    pidfile: Option<&Pidfile>,
    ended: &Ended,
) -> std::io::Result<()> {
    let report = match ended {
        Ended::HandedOver(_) => None,
        Ended::Signal(sig) => Some(twistrs_core::process::signal_name(*sig)),
        Ended::Requested => Some("a stop".to_string()),
    }
    .and_then(|why| Some((pidfile?.report_place(), why)));
    reactor.on_signal(
        libc::SIGUSR2,
        SignalAction::Call(Box::new(move || {
            log::info!(target: LAUNCHER, "Received SIGUSR2 while shutting down: not restarting.");
            if let Some((path, why)) = &report {
                upgrade::write_status(
                    path,
                    &format!(
                        "stopped not restarted: PID {} is stopping ({why} came first)",
                        std::process::id()
                    ),
                );
            }
        })),
    )
}

/// After a hand-over the successor is the service: a SIGTERM or SIGINT that reaches us while
/// we drain (a `stop` that read the pidfile just before the successor wrote its PID there,
/// a `kill` of the PID a script kept) is passed on to it, or it would serve on, and our own
/// drain goes on (it is not a second stop of ours), as a stop's now: the sessions served on
/// through the hand-over are asked to finish (`Handle::end_handover`), as they are when
/// the successor says it stops (`upgrade::HANDOVER_END`), and the news goes on to our own
/// predecessor if it still drains. The successor is our child, not reaped while we live, so
/// its PID cannot be another process's.
pub(crate) fn pass_stops_on(reactor: &mut Reactor, succ: u32) -> std::io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let h = reactor.handle();
        reactor.on_signal(
            sig,
            SignalAction::Call(Box::new(move || {
                let name = twistrs_core::process::signal_name(sig);
                log::info!(target: LAUNCHER,
                    "Received {name} after the hand-over: passing it on to PID {succ}.");
                // SAFETY: a signal to our own child (see above).
                unsafe { libc::kill(succ as i32, sig) };
                h.end_handover();
                upgrade::tell_predecessor();
            })),
        )?;
    }
    let h = reactor.handle();
    reactor.on_signal(
        upgrade::HANDOVER_END,
        SignalAction::Call(Box::new(move || {
            if !h.handover_ended() {
                log::info!(target: LAUNCHER, "PID {succ} stops: the hand-over is over.");
            }
            h.end_handover();
            upgrade::tell_predecessor();
        })),
    )?;
    Ok(())
}

/// SIGUSR2: start the successor and wait (serving all along) until it serves or fails.
/// Returns its PID once it took over. What came meanwhile (a stop, a reload, another
/// restart: `reloaded` is set by a reload) is left in `meanwhile`.
fn restart(
    reactor: &mut Reactor,
    service: &mut Box<dyn Service>,
    plan: &Plan,
    pidfile: Option<&Pidfile>,
    (exe, args): (&Path, &[OsString]),
    reloaded: &std::cell::Cell<bool>,
    meanwhile: &mut upgrade::Meanwhile,
) -> Result<Option<u32>, String> {
    log::info!(target: LAUNCHER, "Received SIGUSR2, restarting: starting {}.", exe.display());
    let report = |text: &str| {
        if let Some(p) = pidfile {
            upgrade::write_status(&p.report_place(), text);
        }
    };
    if let Some(msg) = cannot_restart(plan.chroot.is_some()) {
        log::error!(target: LAUNCHER, "Restart failed: {msg}; still serving.");
        report(&format!("failed {msg}"));
        return Ok(None);
    }
    // What must not run twice (procmon's children) stops before the successor exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    let prepared = service.prepare_handover(&mut reactor.service_host());
    while !prepared.called() {
        if Instant::now() >= deadline {
            let msg = "the services did not get ready for the hand-over within 60 s";
            log::error!(target: LAUNCHER, "Restart failed: {msg}; still serving.");
            report(&format!("failed {msg}"));
            service.handover_failed(&mut reactor.service_host());
            return Ok(None);
        }
        reactor
            .turn(Some(Duration::from_millis(20)))
            .map_err(|e| format!("the reactor failed: {e}"))?;
    }
    let mut succ = match upgrade::spawn(
        exe,
        &args[1..],
        &plan.start_dir,
        &reactor.listener_fds(),
        pidfile.map(Pidfile::raw_fd),
    ) {
        Ok(s) => s,
        Err(e) => {
            log::error!(target: LAUNCHER, "Restart failed: {e}");
            report(&format!("failed {e}"));
            service.handover_failed(&mut reactor.service_host());
            return Ok(None);
        }
    };
    reloaded.set(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        reactor
            .turn(Some(Duration::from_millis(20)))
            .map_err(|e| format!("the reactor failed: {e}"))?;
        meanwhile.take(reactor, succ.pid());
        meanwhile.reload |= reloaded.replace(false);
        match succ.poll() {
            upgrade::Progress::Waiting if Instant::now() < deadline => continue,
            upgrade::Progress::Waiting => {
                let pid = succ.pid();
                succ.kill();
                let msg = format!("the new process (PID {pid}) did not serve within 60 s");
                meanwhile.failed(&msg, report);
                service.handover_failed(&mut reactor.service_host());
                return Ok(None);
            }
            upgrade::Progress::Failed(msg) => {
                meanwhile.failed(&msg, report);
                service.handover_failed(&mut reactor.service_host());
                return Ok(None);
            }
            upgrade::Progress::Ready(pid) => {
                log::info!(target: LAUNCHER,
                    "PID {pid} serves; stopping accepting and draining connections.");
                reactor.abandon_listeners();
                report(&format!("ok {pid}"));
                return Ok(Some(pid));
            }
        }
    }
}

/// True if systemd passed sockets to this process (checked before any fork changes our PID).
fn systemd_fds_for_us() -> bool {
    std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id())
}

/// Marks every descriptor above 2 close-on-exec. Whatever this process inherited (sockets
/// from systemd or from a restart's predecessor, which are taken by number all the same, or
/// something its starter leaked) then reaches no child and no successor unless handed over on
/// purpose; everything twistrs opens itself is close-on-exec already.
fn close_inherited_on_exec() {
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC changes only descriptor flags; ENOSYS on
    // kernels before 5.11 is left alone (children get the same treatment before exec).
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        );
    }
}

/// At each 6-hour period's start, lets go of the TLS session tickets' chain values and keys
/// that open only older tickets (`twistrs_core::tls::forget_expired_tickets`), whether or not
/// this process makes handshakes: a `--workers` master makes none, and would otherwise keep
/// for good the value it first handed to its workers, which opens every ticket made since.
pub(crate) fn keep_tickets_current(handle: &twistrs_core::Handle) {
    let wait = twistrs_core::tls::forget_expired_tickets();
    let h = handle.clone();
    handle.call_later(wait, move || keep_tickets_current(&h));
}

/// Fixes glibc's mmap threshold at its default (128 KiB) so that every large buffer (a
/// mail's DATA, a relay's or a TLS peer's backlog) goes back to the system when freed. Left
/// dynamic, glibc raises the threshold to the size of the first large buffer freed, and the
/// next one of that size comes from the heap and stays resident: 10 MB held for good after
/// the second 10 MiB message (bench/README.md, "Memory after large messages"). An operator's
/// own `MALLOC_MMAP_THRESHOLD_` or `GLIBC_TUNABLES` wins.
fn return_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tuned = std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_some()
            || std::env::var_os("GLIBC_TUNABLES")
                .is_some_and(|t| t.to_string_lossy().contains("mmap_threshold"));
        if !tuned {
            // SAFETY: mallopt only sets an allocator parameter; nothing is allocated yet on
            // another thread (none has been started).
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
            }
        }
    }
}

/// Gives the log and the plugin's own log files that the start made (web's access log,
/// socks's connection log) to the user privileges are dropped to (`-u`): a SIGHUP reopens
/// them by name as that user, and a start makes them root's. With `-g` alone the process
/// stays root, which reopens any file, so they are left as they are, as twistd leaves them:
/// handing them to the group would only change who may read them (a log kept `root:adm`
/// 0640 would become the service group's). So too what a plugin's start made for the
/// service to use (mail's domain directories, Maildirs and password files): only what this
/// start made, by the descriptors it made them with.
pub(crate) fn give_logs(plan: &Plan, logger: &logging::Logger) {
    let plugin_logs = twistrs_core::reread::take_logs();
    if plan.target.uid.is_none() {
        return;
    }
    logger.chown(plan.target.uid, plan.target.gid);
    for f in plugin_logs {
        let _ = nix::unistd::fchown(&f, plan.target.uid, plan.target.gid);
    }
}

/// Tries, once privileges are dropped and the chroot entered, each file a reload (SIGHUP)
/// reads again (`twistrs_core::reread`), and warns of those it could not read: the start
/// read them as root, outside the jail, so without this the first sign is a failed reload in
/// the log. At start and in `--check` (which still exits 0). `workers`: the master stays root
/// and its restart re-reads them as root; a single process restarts as the user it dropped
/// to (and not at all in a chroot), so only a stop and a start read them again. `say`: false
/// where another process says it (a master's workers but the first). What a service uses
/// while it serves (mail's Maildirs and password files) is tried here too, and warned of in
/// its own words: there, the first delivery or login fails, not a reload.
fn warn_reread(plan: &Plan, workers: bool, say: bool) {
    let failed = twistrs_core::reread::unreachable();
    if !say {
        return;
    }
    let who = &plan.who;
    let instead = if workers {
        "use 'twistrs restart' (its new master reads it as root)".to_string()
    } else if plan.target.any() && plan.chroot.is_none() {
        format!("stop and start instead of reloading (a restart, too, opens it as {who})")
    } else {
        "stop and start instead of reloading".to_string()
    };
    for (path, kind, e) in failed {
        use twistrs_core::reread::Kind;
        let jail = plan
            .chroot
            .as_ref()
            .map(|d| format!(" inside the chroot {}", d.display()))
            .unwrap_or_default();
        // Used while serving: the service fails at its first use, not only at a reload.
        if let Kind::Reads(why) | Kind::Writes(why) = kind {
            let (can, fix) = match kind {
                Kind::Reads(_) => ("read", "readable"),
                _ => ("write in", "readable and writable"),
            };
            log::warn!(target: LAUNCHER,
                "{who} cannot {can} {}{jail} ({e}), and {why}: make it {fix} by {who} (and \
                 its directories searchable)",
                path.display());
            continue;
        }
        let what = match kind {
            Kind::File => "re-read",
            Kind::Dir => "list the directory",
            Kind::Append | Kind::Made => "reopen the log file",
            Kind::Reads(_) | Kind::Writes(_) => continue,
        };
        let fix = match e.kind() {
            std::io::ErrorKind::NotFound if plan.chroot.is_some() => {
                "put it at that path inside the chroot".to_string()
            }
            std::io::ErrorKind::PermissionDenied => match kind {
                // The file may be fine and a directory above it closed to the user.
                Kind::File => format!("make it readable by {who} (and its directories searchable)"),
                Kind::Dir => format!("make it readable and searchable by {who}"),
                Kind::Append | Kind::Made | Kind::Reads(_) | Kind::Writes(_) => {
                    format!("make it writable by {who} (and its directories searchable)")
                }
            },
            _ => "fix it".to_string(),
        };
        log::warn!(target: LAUNCHER,
            "reload will not be able to {what} {}{jail} as {who} ({e}); {fix}, or {instead}",
            path.display());
    }
}

/// What the signals mean, on top of the reactor's SIGTERM/SIGINT (stop): SIGUSR2 restarts
/// (`run` returns, then `restart`), SIGHUP and SIGUSR1 reopen the log and every plugin's files.
/// In a chroot, a plugin's files are read again by their paths inside the jail: said at each
/// reload, so an error naming `/etc/...` is not taken for the file outside.
fn watch_signals(
    reactor: &mut Reactor,
    chroot: Option<PathBuf>,
) -> std::io::Result<std::rc::Rc<std::cell::Cell<bool>>> {
    reactor.on_signal(libc::SIGUSR2, SignalAction::Stop)?;
    if workers::this_worker().is_some() {
        // The master hands over to a new master's workers.
        reactor.on_signal(upgrade::HANDOVER_END, SignalAction::Stop)?;
    }
    // Set at each reload, for a restart to tell whether one came while its successor started.
    let reloaded = std::rc::Rc::new(std::cell::Cell::new(false));
    for sig in [libc::SIGHUP, libc::SIGUSR1] {
        let h = reactor.handle();
        let chroot = chroot.clone();
        let flag = reloaded.clone();
        reactor.on_signal(
            sig,
            SignalAction::Call(Box::new(move || {
                flag.set(true);
                reopen_log();
                if let Some(dir) = &chroot {
                    log::info!(target: LAUNCHER,
                        "Reloading in the chroot {}: files are read again by their paths inside it.",
                        dir.display());
                }
                h.reopen_files();
            })),
        )?;
    }
    Ok(reloaded)
}

pub(crate) fn reopen_log() {
    if let Some(l) = logging::logger() {
        match l.reopen() {
            Ok(()) => {
                if let Some(p) = l.path() {
                    log::info!(target: LAUNCHER, "Reopened log file {}.", p.display());
                }
            }
            // Said in the log (still the file opened before) and on stderr.
            Err(e) => {
                let path = l.path().unwrap_or_default();
                // The usual case: logrotate moved it, and the user we dropped to may not
                // make files in a directory of root's.
                let hint = if e.kind() == std::io::ErrorKind::PermissionDenied
                    && std::fs::symlink_metadata(&path).is_err()
                {
                    "; have logrotate make the new file (its 'create' option, as 'create 0640 \
                     USER adm') or use 'copytruncate'"
                } else {
                    ""
                };
                log::error!(target: LAUNCHER,
                    "Cannot reopen the log file {}: {e}{hint}; still writing to the one opened before.",
                    path.display());
                say!(
                    "twistrs: cannot reopen the log file {}: {e}",
                    path.display()
                );
            }
        }
    }
}

/// Lifts the soft descriptor limit to the hard one: every connection is a descriptor. Child
/// processes, and a restart's successor (which then does the same), get the limit we were
/// started with.
pub(crate) fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    twistrs_core::process::set_child_nofile_limit(soft);
    if soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        log::warn!(target: LAUNCHER, "cannot raise the open-file limit from {soft}: {e}");
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
