//! The command line: twistd's global options, then one subcommand per plugin.
//!
//! Option names, short flags and defaults are twistd's (`twistd --help`, Twisted 26.10). The
//! options that only make sense for Python (`--python`, `--profile`, ...) are accepted by the
//! parser so that they can be refused with a clear message instead of "unknown option".

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use twistrs_core::Plugin;

/// Options twistd has that load or debug Python code; twistrs refuses each by name.
pub const PYTHON_ONLY: &[(&str, Option<char>, bool, &str)] = &[
    ("python", Some('y'), true, "loads a Python .tac file"),
    (
        "file",
        Some('f'),
        true,
        "loads a pickled Python application",
    ),
    ("source", Some('s'), true, "loads a Python AOT source file"),
    (
        "encrypted",
        Some('e'),
        false,
        "decrypts a pickled Python application",
    ),
    (
        "no_save",
        Some('o'),
        false,
        "controls pickling of Python state",
    ),
    ("profile", Some('p'), true, "runs the Python profiler"),
    ("profiler", None, true, "selects a Python profiler"),
    ("savestats", None, false, "saves Python profiler statistics"),
    ("debug", Some('b'), false, "runs under the Python debugger"),
    ("spew", None, false, "traces every Python function call"),
    ("logger", None, true, "names a Python log observer"),
];

fn octal(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|v| *v <= 0o777)
        .ok_or_else(|| format!("'{s}' is not an octal umask such as 022"))
}

fn seconds(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("'{s}' is not a number of seconds"))
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
        .subcommand_help_heading("Plugins")
        .disable_version_flag(true)
        .arg_required_else_help(true)
        .disable_help_subcommand(true)
        .after_help("Run 'twistrs PLUGIN --help' for a plugin's options.")
        .arg(
            Arg::new("version")
                .long("version")
                .action(ArgAction::SetTrue)
                .help("Print the version and exit"),
        )
        .arg(
            Arg::new("nodaemon")
                .short('n')
                .long("nodaemon")
                .action(ArgAction::SetTrue)
                .help("Don't daemonize, don't use the default umask of 0077"),
        )
        .arg(
            Arg::new("logfile")
                .short('l')
                .long("logfile")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .help("Log to FILE; '-' for stdout [default: stdout with -n, else twistrs.log]"),
        )
        .arg(
            Arg::new("pidfile")
                .long("pidfile")
                .value_name("FILE")
                .default_value("twistrs.pid")
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
                .help("Chroot to DIR after binding ports"),
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
                .default_value("10")
                .value_parser(seconds)
                .help("On SIGTERM/SIGINT, wait this long for open connections to finish"),
        );
    for (name, short, takes_value, _) in PYTHON_ONLY {
        let mut a = Arg::new(*name).long(*name).hide(true);
        if let Some(s) = short {
            a = a.short(*s);
        }
        a = if *takes_value {
            a.action(ArgAction::Set).value_name("VALUE")
        } else {
            a.action(ArgAction::SetTrue)
        };
        cmd = cmd.arg(a);
    }
    let mut sorted: Vec<&Plugin> = plugins.iter().collect();
    sorted.sort_by_key(|p| p.tapname);
    for p in sorted {
        cmd = cmd.subcommand((p.options)().name(p.tapname).about(p.description));
    }
    cmd
}

/// The first Python-only option present, with why twistrs refuses it.
pub fn python_only_option(m: &ArgMatches) -> Option<(&'static str, &'static str)> {
    PYTHON_ONLY.iter().find_map(|(name, _, takes_value, why)| {
        let used = if *takes_value {
            m.contains_id(name) && m.get_one::<String>(name).is_some()
        } else {
            m.get_flag(name)
        };
        used.then_some((*name, *why))
    })
}
