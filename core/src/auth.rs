//! `--auth` credentials, as twistd's `--auth` takes them: `memory:USER:PASS[:USER:PASS...]`
//! and `file:PATH` (one `user:pass` a line). Shared by the plugins that check passwords
//! (mail's SMTP AUTH and POP3, socks' username/password method).

use std::collections::HashMap;
use std::path::Path;

use clap::{Arg, ArgAction, ArgMatches};

use crate::plugin::PluginError;

/// User names and their passwords.
pub type Credentials = HashMap<String, String>;

/// The `--auth TYPE:ARG` argument (repeatable), with `help` saying what it is for.
pub fn auth_arg(help: &'static str) -> Arg {
    Arg::new("auth")
        .long("auth")
        .value_name("TYPE:ARG")
        .action(ArgAction::Append)
        .help(help)
}

/// The `--auth` types twistrs takes, as twistd's `--help-auth` lists them: (name, what
/// follows the colon, the long help).
const TYPES: &[(&str, &str, &str)] = &[
    (
        "anonymous",
        "No argstring required.",
        "This allows anonymous authentication for servers that support it.",
    ),
    (
        "file",
        "Location of a FilePasswordDB-formatted file.",
        "This checker expects to receive the location of a file that\n  conforms to the \
         FilePasswordDB format. Each line in the file\n  should be of the format \
         'username:password', in plain text.",
    ),
    (
        "memory",
        "A colon-separated list (name:password:...)",
        "A checker that uses an in-memory user database.",
    ),
];

/// twistd's `--help-auth` and `--help-auth-type TYPE`, which print and exit at once (see
/// [`auth_help`]).
pub fn auth_help_args() -> [Arg; 2] {
    [
        Arg::new("help-auth")
            .long("help-auth")
            .action(ArgAction::SetTrue)
            .help("Show all authentication methods available, and exit"),
        Arg::new("help-auth-type")
            .long("help-auth-type")
            .value_name("TYPE")
            .help("Show help for a particular authentication type, and exit"),
    ]
}

/// What `--help-auth` or `--help-auth-type` asks to print (Ok: to stdout, exit 0; Err: an
/// unknown type, exit 1), if either was given: twistd prints it while parsing the options,
/// before anything starts. `None` also for a command without these options.
pub fn auth_help(m: &ArgMatches) -> Option<Result<String, String>> {
    if let Ok(Some(t)) = m.try_get_one::<String>("help-auth-type") {
        return Some(match TYPES.iter().find(|(name, _, _)| name == t) {
            Some((name, arg, long)) => Ok(format!(
                "Usage: --auth {name}[:ArgString]\nArgString format: {arg}\n\n  {long}\n"
            )),
            None => Err(format!(
                "Invalid auth type: {t} (twistrs has {})",
                TYPES
                    .iter()
                    .map(|(n, _, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        });
    }
    if let Ok(Some(true)) = m.try_get_one::<bool>("help-auth") {
        let mut out = String::from(
            "Usage: --auth AuthType[:ArgString]\nFor detailed help: --help-auth-type AuthType\n\n  \
             AuthType \tArgString format\n  ======== \t================\n",
        );
        for (name, arg, _) in TYPES {
            out.push_str(&format!("  {name:<9}\t{arg}\n"));
        }
        return Some(Ok(out));
    }
    None
}

/// The credentials of every `--auth` given, merged; `None` if there was none. `plugin`
/// prefixes the messages (`mail: --auth file:x: ...`). A file is read now, so an unreadable
/// or malformed one is a start-up error naming it.
pub fn parse_auth(plugin: &str, m: &ArgMatches) -> Result<Option<Credentials>, PluginError> {
    let values: Vec<&String> = m
        .get_many::<String>("auth")
        .map(|v| v.collect())
        .unwrap_or_default();
    parse_values(plugin, &values)
}

/// A `--auth file:` password file: a line per user; 16 MiB is hundreds of thousands of them.
pub const AUTH_FILE_MAX: u64 = 16 << 20;

fn parse_values(plugin: &str, values: &[&String]) -> Result<Option<Credentials>, PluginError> {
    if values.is_empty() {
        return Ok(None);
    }
    let mut creds = HashMap::new();
    for v in values {
        if let Some(path) = v.strip_prefix("file:") {
            let text = crate::files::read_config_string(Path::new(path), AUTH_FILE_MAX)
                .map_err(|e| PluginError::new(format!("{plugin}: --auth file:{path}: {e}")))?;
            for line in text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            {
                let (u, p) = line.split_once(':').ok_or_else(|| {
                    PluginError::new(format!(
                        "{plugin}: --auth file:{path}: '{line}' is not user:pass"
                    ))
                })?;
                creds.insert(u.to_string(), p.to_string());
            }
        } else if let Some(list) = v.strip_prefix("memory:") {
            let parts: Vec<&str> = list.split(':').collect();
            if !parts.len().is_multiple_of(2) || parts.is_empty() {
                return Err(PluginError::new(format!(
                    "{plugin}: --auth memory:USER:PASS[:USER:PASS...]"
                )));
            }
            for c in parts.chunks_exact(2) {
                if let [u, p] = c {
                    creds.insert(u.to_string(), p.to_string());
                }
            }
        } else if v.as_str() == "anonymous" || v.starts_with("anonymous:") {
            // twistd's default checker: nothing to add (its factory ignores an argument).
        } else {
            return Err(PluginError::new(format!(
                "{plugin}: --auth {v}: only anonymous, file:PATH and memory:USER:PASS are supported"
            )));
        }
    }
    Ok(Some(creds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Credentials>, String> {
        let mut argv = vec!["t"];
        for a in args {
            argv.extend(["--auth", a]);
        }
        let m = clap::Command::new("t")
            .arg(auth_arg("x"))
            .get_matches_from(argv);
        parse_auth("t", &m).map_err(|e| e.0)
    }

    #[test]
    fn memory_and_file_forms_merge() {
        assert_eq!(parse(&[]), Ok(None));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("users");
        std::fs::write(&f, "# users\njoe:se:cret\n\nann:x\n").unwrap();
        let c = parse(&["memory:a:1:b:2", &format!("file:{}", f.display())])
            .unwrap()
            .unwrap();
        assert_eq!(c.len(), 4);
        assert_eq!(c["a"], "1");
        assert_eq!(c["b"], "2");
        assert_eq!(c["joe"], "se:cret", "a password may hold a colon");
        assert_eq!(c["ann"], "x");
        assert_eq!(parse(&["anonymous"]), Ok(Some(Credentials::new())));
    }

    #[test]
    fn twistds_help_auth_and_help_auth_type() {
        let cmd = || clap::Command::new("t").args(auth_help_args());
        let help = |args: &[&str]| {
            let m = cmd().get_matches_from(std::iter::once("t").chain(args.iter().copied()));
            auth_help(&m)
        };
        assert_eq!(help(&[]), None);
        let all = help(&["--help-auth"]).unwrap().unwrap();
        assert!(
            all.starts_with("Usage: --auth AuthType[:ArgString]\n"),
            "{all}"
        );
        assert!(all.contains("  memory   \tA colon-separated list (name:password:...)\n"));
        let file = help(&["--help-auth-type", "file"]).unwrap().unwrap();
        assert!(file.starts_with("Usage: --auth file[:ArgString]\nArgString format: Location"));
        let bad = help(&["--help-auth-type", "unix"]).unwrap().unwrap_err();
        assert!(bad.starts_with("Invalid auth type: unix"), "{bad}");
        // A command without the options has no such help.
        let m = clap::Command::new("t").get_matches_from(["t"]);
        assert_eq!(auth_help(&m), None);
    }

    #[test]
    fn malformed_values_are_refused_by_name() {
        assert!(
            parse(&["memory:a"])
                .unwrap_err()
                .contains("memory:USER:PASS")
        );
        assert!(
            parse(&["ldap:x"])
                .unwrap_err()
                .contains("only anonymous, file:PATH and memory:USER:PASS")
        );
        assert_eq!(parse(&["anonymous:x"]), Ok(Some(HashMap::new())));
        let e = parse(&["file:/nonexistent/x"]).unwrap_err();
        assert!(e.starts_with("t: --auth file:/nonexistent/x: "), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad");
        std::fs::write(&f, "nocolon\n").unwrap();
        let e = parse(&[&format!("file:{}", f.display())]).unwrap_err();
        assert!(e.contains("'nocolon' is not user:pass"), "{e}");
    }
}
