//! The documentation names only options that exist: every `twistrs` command line in README.md's
//! code blocks parses with the launcher's clap definitions, and every `--option` in a code span
//! of README.md or ARCHITECTURE.md that starts with an option is one of twistrs's (or a prefix
//! that names one, as getopt's shortening). An operator copies these; an option renamed or
//! dropped in the code must not live on in the docs.

use std::collections::BTreeSet;
use std::path::Path;

use clap::Command;

/// Options of other programs that the docs name in spans of their own: curl's (README's socks
/// section lists the clients its tests run) and cargo's (ARCHITECTURE.md's binary sizes).
const OTHER_PROGRAMS: &[&str] = &[
    "--features",
    "--no-default-features",
    "--socks4",
    "--socks4a",
    "--socks5",
    "--socks5-hostname",
    "--proxy-user",
];

fn read(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn launcher() -> Command {
    twistrs::cli::build_command(&twistrs::builtin_plugins())
}

/// Every long option of the launcher, its plugins and control commands, with their aliases
/// and the hidden ones (the Python-only options twistrs refuses by name).
fn long_options(cmd: &Command) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    let mut add = |c: &Command| {
        for a in c.get_arguments() {
            all.extend(a.get_long().map(|l| format!("--{l}")));
            for alias in a.get_all_aliases().unwrap_or_default() {
                all.insert(format!("--{alias}"));
            }
        }
    };
    add(cmd);
    for sub in cmd.get_subcommands() {
        add(sub);
    }
    all
}

/// A shell line's words: blanks separate them, single and double quotes group (nothing is
/// expanded), a backslash escapes the next character outside single quotes, and an unquoted
/// `#` starting a word begins a comment.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => out.extend(word.take()),
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                w.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    out.extend(word);
    out
}

/// The `twistrs ...` command lines of a Markdown file's fenced code blocks, continuation
/// lines joined, a `$ ` prompt dropped.
fn fenced_command_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut fenced = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            pending.clear();
            continue;
        }
        if !fenced {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                pending.push_str(head);
                pending.push(' ');
            }
            None => {
                pending.push_str(line);
                let whole = std::mem::take(&mut pending);
                let whole = whole.trim_start();
                let whole = whole.strip_prefix("$ ").unwrap_or(whole);
                let first = words(whole);
                if first.first().map(String::as_str) == Some("twistrs")
                    && first.get(1).is_some_and(|w| w != "=")
                {
                    lines.push(whole.to_string());
                }
            }
        }
    }
    lines
}

#[test]
fn readme_command_lines_parse() {
    let readme = read("README.md");
    let lines = fenced_command_lines(&readme);
    // The usage block alone has a dozen; a parser that found none would pass anything.
    assert!(
        lines.len() >= 25,
        "found only {} command lines",
        lines.len()
    );
    let mut refused = Vec::new();
    for line in &lines {
        let args = twistrs::cli::drop_end_of_global_options(
            &launcher(),
            words(line).into_iter().map(Into::into).collect(),
        );
        match launcher().try_get_matches_from(args) {
            Ok(m) => {
                if let Some((name, _)) = twistrs::cli::python_only_option(&m) {
                    refused.push(format!("{line}\n  --{name} is refused by name"));
                }
            }
            Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {}
            Err(e) => refused.push(format!("{line}\n  {}", e.kind())),
        }
    }
    assert!(
        refused.is_empty(),
        "README.md shows command lines twistrs refuses:\n{}",
        refused.join("\n")
    );
}

#[test]
fn options_named_in_the_docs_exist() {
    let known = long_options(&launcher());
    assert!(known.contains("--shutdown-timeout") && known.contains("--hide-dotfiles"));
    let mut unknown = BTreeSet::new();
    for name in ["README.md", "ARCHITECTURE.md"] {
        // Fenced blocks out (their command lines are parsed above): inline code spans that
        // start with an option or with `twistrs`, the ones that name twistrs's own options.
        let mut fenced = false;
        let prose: String = read(name)
            .lines()
            .filter(|l| {
                fenced ^= l.starts_with("```");
                !fenced && !l.starts_with("```")
            })
            .flat_map(|l| [l, "\n"])
            .collect();
        for span in prose.split('`').skip(1).step_by(2) {
            let span = span.trim_start_matches("$ ");
            if !(span.starts_with("--") || span.starts_with("twistrs ")) {
                continue;
            }
            for word in words(span) {
                let Some(option) = word.split('=').next().filter(|o| o.starts_with("--")) else {
                    continue;
                };
                if option == "--" || OTHER_PROGRAMS.contains(&option) {
                    continue;
                }
                // getopt's shortening: a prefix that names an option (`--pid=app.pid`).
                if !known.iter().any(|k| k.starts_with(option)) {
                    unknown.insert(format!("{name}: {option} (in `{span}`)"));
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "options the docs name that twistrs does not have:\n{}",
        unknown.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_shell_words_are_split_as_a_shell_splits_them() {
    assert_eq!(
        words(r#"twistrs -n procmon --process 'cache: a -p 1' "x y" a\ b # note"#),
        [
            "twistrs",
            "-n",
            "procmon",
            "--process",
            "cache: a -p 1",
            "x y",
            "a b"
        ]
    );
    assert_eq!(words("--pidfile= x"), ["--pidfile=", "x"]);
}
