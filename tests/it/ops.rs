//! Operating twistrs: `status --json` before, during and after a restart, and against a
//! holder of the lock that is not twistrs.

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
    let _stop = StopOnDrop(dir.path().join("twistrs.pid"));
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
            4 => {
                assert_eq!(field(&during, "status"), "'unknown'");
                seen.push("unknown".to_string());
            }
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

#[test]
fn status_json_of_a_workers_master_lists_the_services_listeners_only() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run_in(
        dir.path(),
        &[
            "--workers",
            "2",
            "--metrics",
            "tcp:0:interface=127.0.0.1",
            "echo",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        ],
    );
    assert_eq!(code, 0, "{out} {err}");
    let _stop = StopOnDrop(dir.path().join("twistrs.pid"));
    let (code, fields) = status_json(dir.path());
    assert_eq!(code, 0, "{fields:?}");
    // --metrics and echo's port; not the master's private sockets to its workers.
    let listeners = field(&fields, "listeners");
    assert_eq!(
        listeners.matches("'tcp:127.0.0.1:").count(),
        2,
        "{listeners}"
    );
    assert!(!listeners.contains("unix:"), "{listeners}");
}

/// The scripts under completions/ match the clap definitions; `UPDATE_COMPLETIONS=1 cargo test
/// --test it completions` rewrites them. `twistrs completions SHELL` prints the same.
#[test]
fn completions_are_current_and_printed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("completions");
    let update = std::env::var_os("UPDATE_COMPLETIONS").is_some();
    let plugins = twistrs::builtin_plugins();
    for (shell, file) in twistrs::cli::SHELLS {
        let text = twistrs::cli::completion(&plugins, shell).expect("a known shell");
        let path = dir.join(file);
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some(text.as_str()),
            "stale {file}: run UPDATE_COMPLETIONS=1 cargo test --test it completions"
        );
        let (code, out, err) = run(&["completions", shell]);
        assert_eq!((code, out.as_str()), (0, text.as_str()), "{err}");
    }
    let (code, _, err) = run(&["completions", "tcsh"]);
    assert_eq!(code, 1, "{err}");
}

/// bash loads the script and completes plugin names and their options with it.
#[test]
fn bash_loads_the_completions() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/completions/twistrs.bash");
    let probe = format!(
        "source {script}\ncomplete -p twistrs\n\
         COMP_WORDS=(twistrs we); COMP_CWORD=1; _twistrs twistrs we twistrs; echo \"words: ${{COMPREPLY[*]}}\"\n\
         COMP_WORDS=(twistrs web --pa); COMP_CWORD=2; _twistrs twistrs --pa web; echo \"opts: ${{COMPREPLY[*]}}\"\n"
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "-c", &probe])
        .output()
        .expect("bash");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("-F _twistrs twistrs"), "{text}");
    assert!(text.contains("words: web"), "{text}");
    assert!(text.contains("opts: --path"), "{text}");
}

/// A completion shell to run, or the test recorded as skipped without it.
fn shell(test: &str, name: &str) -> Option<std::process::Command> {
    let found = std::process::Command::new(name)
        .arg("-c")
        .arg("exit 0")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        skip(test, &format!("no {name} (apt-get install {name})"));
        return None;
    }
    Some(std::process::Command::new(name))
}

/// zsh finds `_twistrs` on its fpath (as the package installs it) and by `source` after
/// compinit, and binds it to twistrs either way.
#[test]
fn zsh_loads_the_completions() {
    let Some(mut zsh) = shell("zsh_loads_the_completions", "zsh") else {
        return;
    };
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/completions");
    let dump = tempfile::tempdir().unwrap();
    let probe = format!(
        "fpath=({dir} $fpath); autoload -U compinit; compinit -u -d {d}/a; \
         print -r -- \"fpath: $_comps[twistrs]\"; \
         unset '_comps[twistrs]'; unfunction _twistrs 2>/dev/null; \
         source {dir}/_twistrs; print -r -- \"sourced: $_comps[twistrs]\"; \
         (( $+functions[_twistrs] )) && print defined",
        d = dump.path().display()
    );
    let out = zsh.args(["-f", "-c", &probe]).output().expect("zsh");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}{err}");
    assert!(err.is_empty(), "zsh complained: {err}");
    for want in ["fpath: _twistrs", "sourced: _twistrs", "defined"] {
        assert!(text.lines().any(|l| l == want), "{want}: {text}");
    }
}

/// fish loads twistrs.fish and completes the plugin names and a plugin's options with it.
#[test]
fn fish_loads_the_completions() {
    let Some(mut fish) = shell("fish_loads_the_completions", "fish") else {
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/completions/twistrs.fish");
    // A HOME of its own: fish writes its universal variables there.
    let home = tempfile::tempdir().unwrap();
    let probe = format!(
        "source {script}; complete -C 'twistrs '; echo ---; complete -C 'twistrs web --pa'"
    );
    let out = fish
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path())
        .env("XDG_DATA_HOME", home.path())
        .args(["--no-config", "-c", &probe])
        .output()
        .expect("fish");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}{err}");
    let (names, opts) = text.split_once("---\n").expect("both completions");
    let names: Vec<&str> = names.lines().filter_map(|l| l.split('\t').next()).collect();
    for p in twistrs::builtin_plugins() {
        assert!(
            names.contains(&p.tapname),
            "{} missing: {names:?}",
            p.tapname
        );
    }
    assert!(opts.lines().any(|l| l.starts_with("--path")), "{opts}");
}

/// `systemd-analyze verify` on every unit under contrib/ (the examples, and the package's
/// template made for two plugins as build.sh makes it), with the binary just built in the
/// place of /usr/bin/twistrs (verify checks that ExecStart= can run). It says what is wrong
/// on stderr and may still exit 0, so nothing there is allowed. The man pages the units name
/// are checked by contrib/debian/test.sh once the package installed them.
#[test]
fn systemd_units_verify() {
    let test = "systemd_units_verify";
    let present = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        skip(test, "no systemd-analyze (Debian's systemd package)");
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = env!("CARGO_BIN_EXE_twistrs");
    let dir = tempfile::tempdir().unwrap();
    let fix = |text: &str| {
        text.replace("/usr/local/bin/twistrs", bin)
            .replace("/usr/bin/twistrs", bin)
    };
    let mut units = Vec::new();
    for e in std::fs::read_dir(root.join("contrib/systemd")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        std::fs::write(
            dir.path().join(&name),
            fix(&std::fs::read_to_string(&path).unwrap()),
        )
        .unwrap();
        units.push(dir.path().join(name));
    }
    let template = std::fs::read_to_string(root.join("contrib/debian/unit.in")).unwrap();
    for plugin in ["web", "echo"] {
        let path = dir.path().join(format!("twistrs-{plugin}@.service"));
        std::fs::write(&path, fix(&template.replace("PLUGIN", plugin))).unwrap();
        units.push(path);
    }
    assert!(units.len() >= 6, "{units:?}");
    let out = std::process::Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&units)
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.is_empty(), "{units:?}: {err}");
}

/// A holder of the pidfile's lock that is not twistrs: `--version` prints the uid it runs as.
const HOLDER: &str = include_str!("holder.c");

/// The pidfile held by a process of the service user's that runs a binary of its own (it
/// may exec one and keep the locked pidfile): root's `status --json` asks that binary its
/// version as that user, never as root.
#[test]
fn status_json_never_runs_a_service_users_binary_as_root() {
    use std::os::unix::fs::PermissionsExt;
    let test = "status_json_never_runs_a_service_users_binary_as_root";
    let Some(nobody) = nobody_as_root(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = dir.path().join("holder.c");
    std::fs::write(&src, HOLDER).unwrap();
    let bin = dir.path().join("holder");
    match std::process::Command::new("cc")
        .arg("-o")
        .arg(&bin)
        .arg(&src)
        .status()
    {
        Ok(s) if s.success() => {}
        other => {
            skip(test, &format!("no C compiler: {other:?}"));
            return;
        }
    }
    // Not readable by the user: on most kernels its process is then not dumpable and its
    // /proc directory root's, so the user it runs as is read from /proc/PID/status.
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o711)).unwrap();
    let pidfile = dir.path().join("twistrs.pid");
    std::fs::write(&pidfile, "").unwrap();
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    std::os::unix::fs::chown(&pidfile, Some(uid), Some(gid)).unwrap();
    let mut holder = std::process::Command::new("setpriv")
        .args([
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".to_string(),
        ])
        .arg(&bin)
        .arg(&pidfile)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "locked\n");
    let (code, fields) = status_json(dir.path());
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(code, 0, "{fields:?}");
    assert_eq!(field(&fields, "pid"), holder.id().to_string());
    assert_eq!(
        field(&fields, "version"),
        format!("'uid{uid}'"),
        "asked as the holder's user"
    );
}
