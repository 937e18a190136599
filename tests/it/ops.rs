//! Operating twistrs: `status --json` before, during and after a restart.

use std::time::{Duration, Instant};

use crate::mail::py;
use crate::support::*;

/// `status --json` in `dir`: (exit status, the object's fields as `key=repr` lines, parsed by
/// Python's json).
fn status_json(dir: &std::path::Path) -> (i32, Vec<String>) {
    let (code, out, err) = run_in(dir, &["status", "--json"]);
    let (pc, fields, perr) = py(
        "import json,sys\no = json.loads(sys.argv[1])\nfor k in sorted(o): print(k + '=' + repr(o[k]))",
        &[&out],
    );
    assert_eq!(pc, 0, "not one JSON object: {out:?} {err} {perr}");
    (code, fields.lines().map(str::to_string).collect())
}

fn field<'a>(fields: &'a [String], key: &str) -> &'a str {
    fields
        .iter()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {fields:?}"))
}

#[test]
fn status_json_before_during_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s.sock");
    let unix = format!("unix:{}", sock.display());
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "echo",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--listen",
            &unix,
        ],
    );
    assert_eq!(code, 0, "{out} {err}");
    let (code, before) = status_json(dir.path());
    assert_eq!(code, 0, "{before:?}");
    let old = field(&before, "pid").to_string();
    assert_eq!(field(&before, "running"), "True");
    assert_eq!(field(&before, "plugin"), "'echo'");
    assert_eq!(field(&before, "generation"), "0");
    assert_eq!(
        field(&before, "version"),
        format!("'{}'", env!("CARGO_PKG_VERSION"))
    );
    assert!(field(&before, "since").ends_with("Z'"), "{before:?}");
    let listeners = field(&before, "listeners").to_string();
    assert!(
        listeners.starts_with("['tcp:127.0.0.1:") && listeners.ends_with(&format!(", '{unix}']")),
        "{listeners}"
    );

    // During: every answer is JSON, running, and names the old process (generation 0, its
    // listeners closing) or the new one (1, all of them), never a mix; or, while both hold the
    // lock, unknown (4).
    let d = dir.path().to_path_buf();
    let restart = std::thread::spawn(move || run_in(&d, &["restart"]));
    let mut seen = Vec::new();
    let end = Instant::now() + Duration::from_secs(30);
    while !restart.is_finished() && Instant::now() < end {
        let (code, during) = status_json(dir.path());
        match code {
            0 => {
                let pid = field(&during, "pid").to_string();
                let generation = field(&during, "generation").to_string();
                assert_eq!(generation == "0", pid == old, "{during:?}");
                // The old process closes its copies of the sockets as it hands over.
                let now = field(&during, "listeners");
                if generation == "0" {
                    let mut inner = now.trim_matches(['[', ']']).split(", ");
                    assert!(inner.all(|l| listeners.contains(l)), "{during:?}");
                } else {
                    assert_eq!(now, listeners, "{during:?}");
                }
                seen.push(generation);
            }
            4 => assert_eq!(field(&during, "status"), "'unknown'"),
            other => panic!("status {other} during a restart: {during:?}"),
        }
    }
    let (code, out, err) = restart.join().unwrap();
    assert_eq!(code, 0, "{out} {err}");
    assert!(!seen.is_empty(), "status answered during the restart");

    let (code, after) = status_json(dir.path());
    assert_eq!(code, 0);
    assert_ne!(field(&after, "pid"), old);
    assert!(
        out.contains(&format!("handed over to PID {}", field(&after, "pid"))),
        "{out}"
    );
    assert_eq!(field(&after, "generation"), "1");
    assert_eq!(
        field(&after, "listeners"),
        listeners,
        "the same sockets, inherited"
    );

    let (code, out, err) = run_in(dir.path(), &["stop"]);
    assert_eq!(code, 0, "{out} {err}");
    let (code, stopped) = status_json(dir.path());
    assert_eq!(code, 3, "LSB: not running");
    assert_eq!(field(&stopped, "running"), "False");
    assert_eq!(field(&stopped, "pid"), "None");
}
