//! `--auth` credentials, as twistd's `--auth` takes them: `memory:USER:PASS[:USER:PASS...]`
//! and `file:PATH` (one `user:pass` a line). Shared by the plugins that check passwords
//! (mail's SMTP AUTH and POP3, socks' username/password method).

use std::collections::HashMap;

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

fn parse_values(plugin: &str, values: &[&String]) -> Result<Option<Credentials>, PluginError> {
    if values.is_empty() {
        return Ok(None);
    }
    let mut creds = HashMap::new();
    for v in values {
        if let Some(path) = v.strip_prefix("file:") {
            let text = std::fs::read_to_string(path)
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
        } else if v.as_str() == "anonymous" {
            // twistd's default checker: nothing to add.
        } else {
            return Err(PluginError::new(format!(
                "{plugin}: --auth {v}: only file:PATH and memory:USER:PASS are supported"
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
    fn malformed_values_are_refused_by_name() {
        assert!(
            parse(&["memory:a"])
                .unwrap_err()
                .contains("memory:USER:PASS")
        );
        assert!(
            parse(&["ldap:x"])
                .unwrap_err()
                .contains("only file:PATH and memory:USER:PASS")
        );
        let e = parse(&["file:/nonexistent/x"]).unwrap_err();
        assert!(e.starts_with("t: --auth file:/nonexistent/x: "), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("bad");
        std::fs::write(&f, "nocolon\n").unwrap();
        let e = parse(&[&format!("file:{}", f.display())]).unwrap_err();
        assert!(e.contains("'nocolon' is not user:pass"), "{e}");
    }
}
