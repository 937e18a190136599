//! The `procmon` plugin: runs programs and restarts them when they die, twistd's procmon.
//!
//! `twistrs procmon [-t T] [-k K] [-m MIN] [-M MAX] COMMAND [ARGS...]` works as `twistd
//! procmon` does, with its defaults and its restart policy. Beyond twistd: `--name`, `--env`,
//! `--clear-env`, `--cwd`, `--user`/`--group` for the programs, several programs in one
//! procmon (`--process "NAME: COMMAND ARGS"`, repeatable), the exit status or signal of every
//! death in the log, and a bound on the length of a logged line.

pub mod lines;
pub mod monitor;
pub mod words;

use std::path::PathBuf;
use std::time::Duration;

use twistrs_core::clap::{Arg, ArgAction, ArgMatches, Command};
use twistrs_core::{Credentials, Plugin, PluginError, ProcessSpec, Service};

pub use monitor::{Policy, ProcessMonitor, Program};

const ABOUT: &str = "Runs programs and restarts them when they die (twistd's procmon).";

/// The behaviour, for `--help` and the man page.
const NOTES: &str = "\
procmon runs processes, monitors their progress, and restarts them when they die. procmon \
will not attempt to restart a process that appears to die instantly; with each \"instant\" \
death (less than --threshold after its start), it will delay twice as long before restarting \
it, from --minrestartdelay up to --maxrestartdelay. A process that ran longer is restarted at \
once and its delay starts again from the minimum. Eg twistrs procmon sleep 10.\n\n\
Every line a process writes on stdout or stderr is logged as '[NAME] line' (NAME is the \
command line unless --name or --process gives one); a line longer than 16 KiB is logged in \
16 KiB pieces. Every start and end is logged with the PID and the exit status or signal. A \
program gets twistrs' environment (less its own variables: LISTEN_*, NOTIFY_SOCKET) with \
--env added, stdin from /dev/null, and no descriptor of twistrs. A stop (SIGTERM, twistrs \
stop) sends SIGTERM to every program, then SIGKILL after --killtime, and waits for them. \
twistrs restart stops the programs (the same way) before the new process starts them again, \
so a program never runs twice; if the new process fails, the old one starts them again.";

/// Longer than any restart delay or kill time makes sense (31 years): doubling a delay
/// stays far from what a `Duration` holds.
const MAX_SECONDS: f64 = 1e9;

/// A number of seconds, as twistd's float options, below [`MAX_SECONDS`]; the message says
/// the range, since a huge number is a number all the same.
fn seconds(s: &str) -> Result<f64, String> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0 && *v < MAX_SECONDS)
        .ok_or_else(|| format!("'{s}' is not a number of seconds from 0 to below {MAX_SECONDS}"))
}

fn secs_arg(id: &'static str, short: char, default: &'static str, help: &'static str) -> Arg {
    Arg::new(id)
        .short(short)
        .long(id)
        .value_name("SECONDS")
        .default_value(default)
        .value_parser(seconds)
        .help(help)
}

/// The plugin's options.
pub fn options() -> Command {
    Command::new("procmon")
        .about(ABOUT)
        .after_help(NOTES)
        .arg(secs_arg(
            "threshold",
            't',
            "1",
            "How long a process has to live before the death is considered instant, in seconds",
        ))
        .arg(secs_arg(
            "killtime",
            'k',
            "5",
            "How long a process being killed has to get its affairs in order before it gets \
             killed with an unmaskable signal",
        ))
        .arg(secs_arg(
            "minrestartdelay",
            'm',
            "1",
            "The minimum time (in seconds) to wait before attempting to restart a process",
        ))
        .arg(secs_arg(
            "maxrestartdelay",
            'M',
            "3600",
            "The maximum time (in seconds) to wait before attempting to restart a process",
        ))
        .arg(
            Arg::new("name")
                .long("name")
                .value_name("NAME")
                .help("The name of COMMAND in the log [default: the command line]"),
        )
        .arg(
            Arg::new("process")
                .long("process")
                .value_name("NAME: COMMAND [ARGS]")
                .action(ArgAction::Append)
                .help(
                    "Another program to run, repeatable; the command is split into words as a \
                   shell would (quotes, backslashes), without expanding anything",
                ),
        )
        .arg(
            Arg::new("env")
                .long("env")
                .value_name("NAME=VALUE")
                .action(ArgAction::Append)
                .help("Sets a variable in the programs' environment, repeatable"),
        )
        .arg(
            Arg::new("clear-env")
                .long("clear-env")
                .action(ArgAction::SetTrue)
                .help("Start the programs with no variable but --env's (twistd gives them none)"),
        )
        .arg(
            Arg::new("cwd")
                .long("cwd")
                .value_name("DIR")
                .value_parser(twistrs_core::clap::value_parser!(PathBuf))
                .help("The programs' working directory [default: twistrs']"),
        )
        .arg(Arg::new("user").long("user").value_name("USER").help(
            "Run the programs as USER (a name or a number), with the user's groups; \
                   twistrs must run as root",
        ))
        .arg(
            Arg::new("group")
                .long("group")
                .value_name("GROUP")
                .help("Run the programs with GROUP as their group [default: USER's]"),
        )
        .arg(
            Arg::new("command")
                .value_name("COMMAND")
                .num_args(1..)
                .trailing_var_arg(true)
                .allow_hyphen_values(true)
                .help("The program to run and its arguments (after '--' if they start with '-')"),
        )
}

/// The plugin.
pub fn plugin() -> Plugin {
    Plugin {
        tapname: "procmon",
        description: ABOUT,
        options,
        make_service,
    }
}

fn duration(m: &ArgMatches, id: &str) -> Duration {
    Duration::from_secs_f64(m.get_one::<f64>(id).copied().unwrap_or(0.0))
}

/// The policy and the programs from the options.
pub fn programs(m: &ArgMatches) -> Result<(Policy, Vec<Program>), PluginError> {
    let policy = Policy {
        threshold: duration(m, "threshold"),
        kill_time: duration(m, "killtime"),
        min_delay: duration(m, "minrestartdelay"),
        max_delay: duration(m, "maxrestartdelay"),
    };
    let mut named: Vec<(String, Vec<String>)> = Vec::new();
    if let Some(cmd) = m.get_many::<String>("command") {
        let words: Vec<String> = cmd.cloned().collect();
        let name = m
            .get_one::<String>("name")
            .cloned()
            .unwrap_or_else(|| words.join(" "));
        named.push((name, words));
    } else if m.get_one::<String>("name").is_some() {
        return Err(PluginError::new(
            "--name names the COMMAND, and none is given",
        ));
    }
    for p in m.get_many::<String>("process").into_iter().flatten() {
        named.push(words::process(p).map_err(PluginError::new)?);
    }
    if named.is_empty() {
        return Err(PluginError::new("Please specify a process commandline"));
    }
    for (i, (n, _)) in named.iter().enumerate() {
        if named[..i].iter().any(|(o, _)| o == n) {
            return Err(PluginError::new(format!("two processes are named '{n}'")));
        }
    }
    let creds = match (m.get_one::<String>("user"), m.get_one::<String>("group")) {
        (None, None) => None,
        (u, g) => Some(
            Credentials::resolve(u.map(String::as_str), g.map(String::as_str))
                .map_err(|e| PluginError::new(format!("procmon: {e}")))?,
        ),
    };
    let mut env = Vec::new();
    for v in m.get_many::<String>("env").into_iter().flatten() {
        match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => env.push((k.to_string(), val.to_string())),
            _ => {
                return Err(PluginError::new(format!(
                    "--env {v:?}: expected NAME=VALUE"
                )));
            }
        }
    }
    let cwd = m.get_one::<PathBuf>("cwd");
    if let Some(d) = cwd
        && !d.is_dir()
    {
        return Err(PluginError::new(format!(
            "procmon: --cwd {}: not a directory",
            d.display()
        )));
    }
    let clear = m.get_flag("clear-env");
    let programs = named
        .into_iter()
        .map(|(name, words)| {
            // If twistrs dies without stopping them, they die too: a new start never runs a
            // second copy beside one left over. Nor does a restart: when a program dies,
            // what it left in its session dies with it. In a session of their own, a Ctrl-C in the
            // foreground reaches twistrs alone, which stops them in order (SIGTERM, then
            // SIGKILL) instead of seeing them die of SIGINT and restarting them.
            let mut spec = ProcessSpec::new(&words[0])
                .args(&words[1..])
                .kill_time(policy.kill_time)
                .parent_death_signal(Some(libc::SIGKILL))
                .new_session(true)
                .group_dies_with_it(true);
            if clear {
                spec = spec.env_clear();
            }
            for (k, v) in &env {
                spec = spec.env(k, v);
            }
            if let Some(d) = cwd {
                spec = spec.cwd(d);
            }
            if let Some(c) = &creds {
                spec = spec.credentials(c.clone());
            }
            Program { name, spec }
        })
        .collect();
    Ok((policy, programs))
}

/// Builds the monitor.
pub fn make_service(m: &ArgMatches) -> Result<Box<dyn Service>, PluginError> {
    let (policy, programs) = programs(m)?;
    Ok(Box::new(ProcessMonitor::new(policy, programs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<(Policy, Vec<Program>), String> {
        let m = options()
            .try_get_matches_from(std::iter::once("procmon").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        programs(&m).map_err(|e| e.to_string())
    }

    #[test]
    fn twistds_command_lines() {
        let (p, progs) = parse(&["sleep", "10"]).unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(progs.len(), 1);
        assert_eq!(progs[0].name, "sleep 10");
        let (p, progs) = parse(&[
            "-t", "2", "-k", "0.5", "-m", "0.1", "-M", "9", "--", "ls", "-l",
        ])
        .unwrap();
        assert_eq!(p.threshold, Duration::from_secs(2));
        assert_eq!(p.kill_time, Duration::from_millis(500));
        assert_eq!(p.min_delay, Duration::from_millis(100));
        assert_eq!(p.max_delay, Duration::from_secs(9));
        assert_eq!(progs[0].name, "ls -l");
        // Without '--' too: what follows the command is its own.
        let (p, progs) = parse(&["--threshold=3", "ls", "-l", "-t", "5"]).unwrap();
        assert_eq!(p.threshold, Duration::from_secs(3));
        assert_eq!(progs[0].name, "ls -l -t 5");
        assert_eq!(
            parse(&[]).unwrap_err(),
            "Please specify a process commandline"
        );
        for bad in [
            "-1",
            "1e9",
            "1e300",
            "18446744073709551615",
            "inf",
            "nan",
            "x",
        ] {
            let e = parse(&["-t", bad, "x"]).unwrap_err();
            assert!(
                e.contains(&format!(
                    "'{bad}' is not a number of seconds from 0 to below 1000000000"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn beyond_twistd() {
        let (_, progs) = parse(&[
            "--name",
            "main",
            "--process",
            "web: python3 -m http.server",
            "--process",
            "clock: sh -c 'date; sleep 60'",
            "--env",
            "A=1=2",
            "--cwd",
            "/",
            "sleep",
            "5",
        ])
        .unwrap();
        let names: Vec<&str> = progs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["main", "web", "clock"]);
        assert!(
            parse(&["--process", "a: x", "--process", "a: y"])
                .unwrap_err()
                .contains("two processes are named 'a'")
        );
        assert!(
            parse(&["--env", "NOEQUALS", "x"])
                .unwrap_err()
                .contains("NAME=VALUE")
        );
        assert!(
            parse(&["--cwd", "/no/such/dir", "x"])
                .unwrap_err()
                .contains("not a directory")
        );
        assert!(
            parse(&["--user", "no-such-user-xyz", "x"])
                .unwrap_err()
                .contains("no such user")
        );
        assert!(
            parse(&["--name", "n"])
                .unwrap_err()
                .contains("none is given")
        );
    }
}
