//! The command line: help, version, usage errors and their exit statuses.

use crate::support::run;

#[test]
fn no_arguments_prints_help_and_exits_0() {
    let (code, out, _) = run(&[]);
    assert_eq!(code, 0);
    assert!(out.contains("Usage: twistrs [options] PLUGIN"), "{out}");
}

#[test]
fn help_lists_every_plugin_sorted_with_descriptions() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    let names: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("Plugins and commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| !twistrs::cli::CONTROL.contains(n))
        .collect();
    let mut want: Vec<&str> = twistrs::builtin_plugins()
        .iter()
        .map(|p| p.tapname)
        .collect();
    want.sort_unstable();
    assert_eq!(names, want, "every plugin, sorted by name");
    assert!(names.contains(&"echo") && names.contains(&"web"));
    assert!(out.contains("RFC 862"), "descriptions shown");
    for opt in [
        "--nodaemon",
        "--logfile",
        "--pidfile",
        "--rundir",
        "--umask",
        "--uid",
        "--gid",
    ] {
        assert!(out.contains(opt), "{opt} in help");
    }
}

#[test]
fn plugin_help_and_version() {
    let (code, out, _) = run(&["echo", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--listen <ENDPOINT>") && out.contains("tcp:7"),
        "{out}"
    );
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("twistrs (the Twisted daemon, in Rust) "),
        "{out}"
    );
    // After a plugin's name too, as twistd's `twistd web --version`; in the foreground on a
    // loopback port, so a start instead would be bounded by run().
    for plugin in ["web", "procmon"] {
        let (code, version, err) = run(&["-n", "--pidfile=", plugin, "--version"]);
        assert_eq!(
            (code, version.as_str()),
            (0, out.as_str()),
            "{plugin}: {err}"
        );
    }
}

#[test]
fn unknown_plugin_and_option_exit_1_with_usage() {
    let (code, _, err) = run(&["-n", "bogus"]);
    assert_eq!(code, 1, "twistd's status for an unknown command");
    assert!(err.contains("'bogus'") && err.contains("Usage:"), "{err}");
    let (code, _, err) = run(&["--bogus", "echo"]);
    assert_eq!(code, 1);
    assert!(err.contains("--bogus"), "{err}");
    let (code, _, err) = run(&["-n", "echo", "--bogus"]);
    assert_eq!(code, 1);
    assert!(err.contains("--bogus"), "{err}");
}

#[test]
fn malformed_endpoints_are_one_line_errors() {
    for bad in [
        "8080",
        "tcp:abc",
        "tcp:99999",
        "tcp:80:foo=bar",
        "tcp:80:interface=no host",
        "unix:",
        "unix:/x:mode=9z",
        "bogus:1",
        "tcp:80\\",
    ] {
        let (code, out, err) = run(&["-n", "echo", "--listen", bad]);
        assert_eq!(code, 1, "{bad}: {err}");
        assert!(
            err.contains(&format!("'{bad}'")),
            "quotes the string: {err}"
        );
        assert!(!err.contains("panicked") && !out.contains("panicked"));
        let first = err.lines().next().unwrap_or("");
        assert!(first.starts_with("error: invalid value"), "{first}");
    }
}

#[test]
fn python_only_options_and_other_reactors_are_refused() {
    let (code, _, err) = run(&["-y", "app.tac"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("--python") && err.contains("not support"),
        "{err}"
    );
    let (code, _, err) = run(&["--reactor=select", "-n", "echo"]);
    assert_eq!(code, 1);
    assert!(err.contains("reactor 'select'"), "{err}");
}

/// `twistd -no PLUGIN`: `-o` (don't save state at shutdown) is twistd's and means nothing
/// to a launcher that saves none, so the same command line serves here.
#[test]
fn no_save_is_accepted_as_twistd_accepts_it() {
    use std::io::{Read, Write};
    for flag in ["-o", "--no_save"] {
        let srv =
            crate::support::Server::start(&[flag, "echo", "--listen", "tcp:0:interface=127.0.0.1"]);
        let mut c =
            crate::support::connect(std::net::SocketAddr::from(([127, 0, 0, 1], srv.ports()[0])));
        c.write_all(b"hi").unwrap();
        let mut b = [0u8; 2];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi", "{flag}");
    }
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("--no_save"), "{out}");
}

/// Numbers that cannot be used are one-line usage errors naming the value, exit 1, never a
/// panic: infinities, NaN, negatives, values past the option's type or range.
#[test]
fn unusable_numbers_are_one_line_errors_never_panics() {
    let cases: &[(&[&str], &str)] = &[
        (&["-n", "--shutdown-timeout", "inf", "echo"], "'inf'"),
        (&["-n", "--shutdown-timeout", "nan", "echo"], "'nan'"),
        (&["-n", "--shutdown-timeout=-1", "echo"], "'-1'"),
        (
            &["-n", "--workers", "18446744073709551615", "echo"],
            "'18446744073709551615'",
        ),
        (
            &["-n", "--log-keep", "18446744073709551615", "echo"],
            "'18446744073709551615'",
        ),
        (&["-n", "--log-rotate-size", "1e300", "echo"], "'1e300'"),
        (&["-n", "echo", "--max-connections", "1e300"], "'1e300'"),
        (
            &["-n", "web", "--timeout", "18446744073709551616"],
            "'18446744073709551616'",
        ),
        (&["-n", "web", "--timeout", "0"], "'0'"),
        (&["-n", "socks", "--connect-timeout", "inf"], "'inf'"),
        (
            &["-n", "mail", "--max-recipients", "4294967296"],
            "'4294967296'",
        ),
        (&["-n", "mail", "--max-message-size", "1e300"], "'1e300'"),
        (
            &["-n", "dns", "--cache-size", "18446744073709551615"],
            "'18446744073709551615'",
        ),
        (
            &["-n", "procmon", "-k", "1e300", "sleep", "1"],
            "'1e300' is not a number of seconds from 0 to below 1000000000",
        ),
        (
            &["-n", "procmon", "-M", "18446744073709551615", "sleep", "1"],
            "'18446744073709551615' is not a number of seconds from 0 to below 1000000000",
        ),
        (&["stop", "--timeout", "inf"], "'inf'"),
        (&["restart", "--timeout=-5"], "'-5'"),
    ];
    for (args, want) in cases {
        let (code, out, err) = run(args);
        assert_eq!(code, 1, "{args:?}: {out} {err}");
        assert!(
            !err.contains("panicked") && !out.contains("panicked"),
            "{args:?}: {err}"
        );
        let first = err.lines().next().unwrap_or("");
        assert!(first.starts_with("error: invalid value"), "{args:?}: {err}");
        assert!(first.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn mail_help_auth_prints_the_auth_types_and_starts_nothing() {
    // twistd mail --help-auth / --help-auth-type TYPE: printed, exit 0, nothing started.
    let dir = tempfile::tempdir().unwrap();
    // In the foreground on loopback ports: without the help, a start is bounded by run_in.
    let mail = |extra: &[&str]| {
        let mut a = vec!["-n", "mail", "-s", "tcp:0:interface=127.0.0.1"];
        a.extend_from_slice(&["-p", "tcp:0:interface=127.0.0.1"]);
        a.extend_from_slice(extra);
        crate::support::run_in(dir.path(), &a)
    };
    let (code, out, err) = mail(&["--help-auth"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("Usage: --auth AuthType[:ArgString]\n"),
        "{out}"
    );
    for t in ["anonymous", "file", "memory"] {
        assert!(out.contains(&format!("\n  {t}")), "{t}: {out}");
    }
    let (code, out, _) = mail(&["--help-auth-type", "memory"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("Usage: --auth memory[:ArgString]\nArgString format: A colon-separated"),
        "{out}"
    );
    let (code, out, err) = mail(&["--help-auth-type", "bogus"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("Invalid auth type: bogus"), "{err}");
    assert!(
        !dir.path().join("twistrs.pid").exists() && !dir.path().join("twistrs.log").exists(),
        "no daemon was started"
    );
}

/// An option given twice is not an error, as in twistd (twisted.python.usage): the last value
/// wins, for the global options and a plugin's alike, and a flag may be repeated. A wrapper
/// script that appends its own `--pidfile=`, or `-n` to a command line that has it, works.
#[test]
fn an_option_given_twice_takes_its_last_value_as_in_twistd() {
    let first = tempfile::tempdir().unwrap();
    let last = tempfile::tempdir().unwrap();
    std::fs::write(first.path().join("f.txt"), "first").unwrap();
    std::fs::write(last.path().join("f.txt"), "last").unwrap();
    let (a, b) = (
        first.path().to_str().unwrap(),
        last.path().to_str().unwrap(),
    );
    let srv = crate::support::Server::start(&[
        "-n",
        "--pidfile=x.pid",
        "--pidfile=",
        "web",
        "--path",
        a,
        "--path",
        b,
        "-m",
        "a/b",
        "-m",
        "text/plain",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    let (code, body) = crate::web::curl(&[&format!("http://{}/f.txt", srv.addr())]);
    assert_eq!(
        (code, body.as_slice()),
        (0, &b"last"[..]),
        "{:?}",
        srv.lines()
    );
    let (code, _, err) = run(&[
        "-n",
        "-n",
        "--rundir",
        "/",
        "--rundir",
        "/",
        "echo",
        "--version",
    ]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn long_options_may_be_abbreviated_as_getopt_allows() {
    // twistd takes `--pid=`, `--nodaem` and `web --pa=.`: getopt's unique prefixes.
    let (code, out, err) = run(&[
        "--pid=",
        "--nodaem",
        "--check",
        "web",
        "--pa=.",
        "--list=tcp:0:interface=127.0.0.1",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("would listen on tcp:0"), "{out}");
    // An ambiguous prefix is an error, as getopt's `--log` (logfile, logger) is in twistd.
    let (code, _, err) = run(&["--log=x", "--check", "web"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--log"), "{err}");
}

#[test]
fn an_option_takes_the_next_word_even_with_a_leading_hyphen() {
    // getopt's rule, which twistd follows: `--pidfile -x.pid` names a pidfile.
    let dir = tempfile::tempdir().expect("tempdir");
    // Both checks below: `--pidfile -x.pid`, then `log`, then web with `--path -www`.
    let check = |log: &[&str]| {
        let mut args = vec!["--pidfile", "-x.pid"];
        args.extend_from_slice(log);
        args.extend_from_slice(&["--check", "web", "--path", "-www"]);
        args.extend_from_slice(&["--listen", "tcp:0:interface=127.0.0.1"]);
        crate::support::run_in(dir.path(), &args)
    };
    let (code, out, err) = check(&["-l", "-x.log"]);
    // --path names a directory that is not there: the error names it, so the value was taken.
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("-www") && !err.contains("unexpected argument"),
        "{err}"
    );
    std::fs::create_dir(dir.path().join("-www")).expect("mkdir");
    let (code, out, err) = check(&[]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_double_dash_may_end_the_global_options_as_in_twistd() {
    // twistd (getopt) takes `twistd -n -- web`: the word after `--` is the plugin.
    let (code, out, err) = run(&[
        "-n",
        "--check",
        "--",
        "web",
        "--listen",
        "tcp:0:interface=127.0.0.1",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("web: the options"), "{out}");
}

/// A plugin's file option given empty (a wrapper's empty `$ACCESS_LOG`) is not given, as
/// twistd reads it (`if config["logfile"]:`), where a usage error stopped the start: web's
/// `--logfile=` logs to the main log and `--path=` serves the start directory (twistd's
/// `abspath('')`), socks's `-l ''` logs to the main log, and dns's `--hosts-file=` and
/// `--resolv-conf=` read no file.
#[test]
fn an_empty_file_option_of_a_plugin_is_not_given_as_in_twistd() {
    use crate::support::Server;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("marker.txt"),
        "served from the start directory",
    )
    .unwrap();
    let web = Server::spawn_in(
        dir.path(),
        &[
            "--pidfile=",
            "web",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--path=",
            "--logfile=",
        ],
    );
    assert!(
        web.wait_until(
            |l| crate::support::count_ports(l) >= 1,
            std::time::Duration::from_secs(10)
        )
        .is_some(),
        "{:?}",
        web.lines()
    );
    let url = format!("http://127.0.0.1:{}/marker.txt", web.port());
    let (code, body) = crate::web::curl(&[&url]);
    assert_eq!(
        (code, body.as_slice()),
        (0, &b"served from the start directory"[..])
    );
    assert!(
        web.log_contains("\"GET /marker.txt HTTP/1.1\" 200"),
        "{:?}",
        web.lines()
    );
    let socks = Server::start(&["--pidfile=", "socks", "-p", "0", "-l", ""]);
    assert!(socks.port() > 0);
    let dns = Server::spawn_in(
        dir.path(),
        &[
            "--pidfile=",
            "dns",
            "-p",
            "0",
            "-i",
            "127.0.0.1",
            "--hosts-file=",
            "--resolv-conf=",
        ],
    );
    assert!(
        dns.wait_until(
            |l| crate::support::count_ports(l) >= 1,
            std::time::Duration::from_secs(10)
        )
        .is_some(),
        "{:?}",
        dns.lines()
    );
    // Not a forwarder: a name outside its (no) zones is refused, not asked upstream.
    let out = std::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &dns.port().to_string(),
            "+tries=1",
            "+time=5",
        ])
        .arg("example.com")
        .output()
        .expect("dig");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("status: REFUSED"), "{out}");
}

/// An error line on stderr is one write(2): written in pieces (`eprintln!` writes
/// `twistrs: `, the message and the newline apart), the lines of `--workers` sharing a
/// journal stream were cut into one another, `twistrs:` an entry of its own.
#[test]
fn an_error_line_on_stderr_is_one_write() {
    let test = "an_error_line_on_stderr_is_one_write";
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    // 192.0.2.0/24 (TEST-NET-1) is on no interface here: the bind fails.
    let out = std::process::Command::new("strace")
        .args(["-f", "-s", "300", "-e", "trace=write", "-o"])
        .arg(&trace)
        .arg(crate::support::BIN)
        .args([
            "-n",
            "--pidfile=",
            "echo",
            "--listen",
            "tcp:7:interface=192.0.2.55",
        ])
        .output();
    let Ok(out) = out else {
        crate::support::skip(test, "no strace");
        return;
    };
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    if text.is_empty() {
        crate::support::skip(test, "strace traced nothing (no ptrace here)");
        return;
    }
    assert_eq!(out.status.code(), Some(1));
    let writes: Vec<&str> = text.lines().filter(|l| l.contains("write(2, ")).collect();
    assert!(
        writes.iter().any(
            |l| l.contains("\"twistrs: Couldn't listen on 192.0.2.55:7") && l.contains("\\n\"")
        ),
        "{writes:#?}"
    );
    assert!(
        writes.iter().all(|l| l.contains("twistrs: ")),
        "a piece of a line: {writes:#?}"
    );
}
