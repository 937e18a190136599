//! Splitting `--process "NAME: CMD ARGS"` into a name and words, as a POSIX shell splits a
//! simple command, without running one: blanks separate words, '...' is literal, "..." keeps
//! blanks and takes `\"`, `\\`, `\$` and `` \` ``, a backslash outside quotes escapes the next
//! character. Nothing is expanded: no variables, globs or redirections.

/// A `--process` value: `NAME: CMD ARGS...`.
pub fn process(spec: &str) -> Result<(String, Vec<String>), String> {
    let (name, cmd) = spec
        .split_once(':')
        .ok_or_else(|| format!("--process {spec:?}: expected NAME: COMMAND [ARGS...]"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(format!("--process {spec:?}: the name before ':' is empty"));
    }
    let words = split(cmd).map_err(|e| format!("--process {spec:?}: {e}"))?;
    if words.is_empty() {
        return Err(format!("--process {spec:?}: no command after '{name}:'"));
    }
    Ok((name.to_string(), words))
}

/// Splits `s` into words.
pub fn split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated \"".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(c) => cur.push(c),
                    None => return Err("a backslash at the end".into()),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_as_a_shell_splits_them() {
        assert_eq!(
            split(r#"sh -c 'echo "a  b"; exit 3' x\ y "q\"uote" '' end"#).unwrap(),
            [
                "sh",
                "-c",
                r#"echo "a  b"; exit 3"#,
                "x y",
                "q\"uote",
                "",
                "end"
            ]
        );
        assert_eq!(split("  ").unwrap(), Vec::<String>::new());
        assert!(split("'open").is_err() && split("\"open").is_err() && split("x\\").is_err());
    }

    #[test]
    fn process_values() {
        let (n, w) = process("web: /usr/bin/python3 -m http.server 8000").unwrap();
        assert_eq!(n, "web");
        assert_eq!(w, ["/usr/bin/python3", "-m", "http.server", "8000"]);
        // Only the first colon separates the name.
        let (n, w) = process("clock:date +%H:%M").unwrap();
        assert_eq!(
            (n.as_str(), w),
            ("clock", vec!["date".to_string(), "+%H:%M".into()])
        );
        assert!(
            process("no colon here")
                .unwrap_err()
                .contains("NAME: COMMAND")
        );
        assert!(process(": cmd").unwrap_err().contains("name"));
        assert!(process("name:   ").unwrap_err().contains("no command"));
    }
}
