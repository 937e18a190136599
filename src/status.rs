//! `twistrs status --json`: what a deploy script needs, read from /proc.
//!
//! Everything comes from the process holding the pidfile's lock, so nothing is written by the
//! daemon for it and nothing can be stale: its start time (`/proc/PID/stat` and the boot
//! time), its command line (the plugin, the first word that is not a global option), the
//! sockets it listens on (its descriptors matched against `/proc/PID/net/*`), its restart
//! generation (`TWISTRS_GENERATION` in its environment, set by its predecessor) and the
//! version of the binary it runs (ours if it is the same file, else asked with `--version`).

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::jsonlog::push_str;

/// The environment variable naming a process's restart generation (0 for the first start).
pub const GENERATION: &str = "TWISTRS_GENERATION";

/// This process's generation, as its predecessor set it.
pub fn generation() -> u64 {
    std::env::var(GENERATION)
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}

/// The JSON report of a running service.
pub fn running(pidfile: &Path, pid: i32) -> String {
    let mut out = String::from("{\"running\":true,\"status\":\"running\",");
    let _ = write!(out, "\"pid\":{pid},\"pidfile\":");
    push_str(&mut out, &pidfile.to_string_lossy());
    out.push_str(",\"since\":");
    match since(pid) {
        Some(secs) => push_str(&mut out, &format!("{}Z", crate::jsonlog::utc_seconds(secs))),
        None => out.push_str("null"),
    }
    out.push_str(",\"version\":");
    match version(pid) {
        Some(v) => push_str(&mut out, &v),
        None => out.push_str("null"),
    }
    out.push_str(",\"plugin\":");
    match plugin(pid) {
        Some(p) => push_str(&mut out, &p),
        None => out.push_str("null"),
    }
    out.push_str(",\"listeners\":[");
    for (i, l) in listeners(pid).iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(&mut out, l);
    }
    let _ = write!(out, "],\"generation\":{}}}", env_generation(pid));
    out
}

/// The JSON report when nothing runs (`status` is `dead` or `not running`) or the state
/// cannot be told (`unknown`, with why).
pub fn not_running(pidfile: Option<&Path>, status: &str, error: Option<&str>) -> String {
    let mut out = String::from("{\"running\":");
    out.push_str(if status == "unknown" { "null" } else { "false" });
    out.push_str(",\"status\":");
    push_str(&mut out, status);
    out.push_str(",\"pid\":null,\"pidfile\":");
    match pidfile {
        Some(p) => push_str(&mut out, &p.to_string_lossy()),
        None => out.push_str("null"),
    }
    if let Some(e) = error {
        out.push_str(",\"error\":");
        push_str(&mut out, e);
    }
    out.push('}');
    out
}

/// The process's start, in seconds since the epoch: its start time in clock ticks after
/// boot (field 22 of /proc/PID/stat) plus the boot time.
fn since(pid: i32) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks: i64 = stat_fields(&stat).get(22 - 3)?.parse().ok()?;
    let boot = boot_time()?;
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| boot + ticks / hz as i64)
}

/// The fields of a /proc/PID/stat text after the command name, which may hold spaces and
/// parentheses: the first is field 3 (the state), so field N is at N - 3.
pub(crate) fn stat_fields(stat: &str) -> Vec<&str> {
    stat.rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default()
}

/// The boot time in seconds since the epoch, /proc/stat's `btime`.
pub(crate) fn boot_time() -> Option<i64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The version of the binary the process runs: ours when it is the same file, else what it
/// says to `--version` (a package upgraded under a running daemon), waited for 5 seconds.
/// Run as the user the process runs as, never as root for a process that is not root's:
/// that process chose its binary (it may have exec'd one of its own, keeping the locked
/// pidfile), and root's `status` must not run it.
fn version(pid: i32) -> Option<String> {
    use std::os::unix::process::CommandExt;
    let exe = format!("/proc/{pid}/exe");
    let theirs = std::fs::metadata(&exe).ok()?;
    let ours = std::fs::metadata("/proc/self/exe").ok()?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Some(crate::VERSION.to_string());
    }
    // Its effective ids, not its /proc directory's owner (root's for a process that is not
    // dumpable, which one that runs a binary it may not read is).
    let (uid, gid) = twistrs_core::owner::effective_ids(pid)?;
    let mut cmd = std::process::Command::new(&exe);
    if nix::unistd::geteuid().is_root() && uid != 0 {
        // std drops root's supplementary groups with the uid.
        cmd.uid(uid).gid(gid);
    }
    let mut child = cmd
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let end = Instant::now() + Duration::from_secs(5);
    while child.try_wait().ok()?.is_none() {
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .next()?
        .split_whitespace()
        .last()
        .map(str::to_string)
}

/// The plugin: the first word of the command line that is neither a global option nor its
/// value.
fn plugin(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    plugin_of(&args)
}

/// The plugin of a command line, program name first: its first word that is neither a global
/// option nor its value (what `status --json` reports of a running process's /proc cmdline).
pub fn plugin_of(args: &[String]) -> Option<String> {
    let cmd = crate::cli::build_command(&[]);
    let takes = |a: &clap::Arg| a.get_action().takes_values();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if let Some(long) = a.strip_prefix("--") {
            if long.is_empty() {
                return it.next().cloned();
            }
            if !long.contains('=')
                && cmd
                    .get_arguments()
                    .any(|x| x.get_long() == Some(long) && takes(x))
            {
                it.next();
            }
        } else if let Some(shorts) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            // A cluster of flags; the first that takes a value takes the rest, or the next word.
            for (i, c) in shorts.char_indices() {
                if cmd
                    .get_arguments()
                    .any(|x| x.get_short() == Some(c) && takes(x))
                {
                    if i + c.len_utf8() == shorts.len() {
                        it.next();
                    }
                    break;
                }
            }
        } else {
            return Some(a.clone());
        }
    }
    None
}

/// The generation its predecessor gave the process (0 if none).
fn env_generation(pid: i32) -> u64 {
    let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
        return 0;
    };
    let key = format!("{GENERATION}=");
    env.split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(key.as_bytes()))
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

/// The sockets the process listens on, in descriptor order: `tcp:127.0.0.1:8080`,
/// `tcp6:[::1]:8080`, `udp:0.0.0.0:7`, `unix:/run/x.sock`.
fn listeners(pid: i32) -> Vec<String> {
    let mut fds: Vec<(u32, u64)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: u32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let inode = target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()?;
            Some((fd, inode))
        })
        .collect();
    fds.sort_unstable();
    let mut known: Vec<(u64, String)> = Vec::new();
    for (table, kind) in [
        ("tcp", "tcp"),
        ("tcp6", "tcp6"),
        ("udp", "udp"),
        ("udp6", "udp6"),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        known.extend(text.lines().skip(1).filter_map(|l| inet_line(l, kind)));
    }
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/unix")) {
        known.extend(text.lines().skip(1).filter_map(unix_line));
    }
    // A `--workers` master's private sockets, on which it asks its workers for their
    // figures: not listeners of the service.
    let private = format!("/{}", crate::workers::metrics_dir_prefix(pid));
    fds.iter()
        .filter_map(|(_, ino)| known.iter().find(|(k, _)| k == ino).map(|(_, s)| s.clone()))
        .filter(|l| !(l.starts_with("unix:") && l.contains(&private)))
        .collect()
}

/// A listening line of /proc/net/tcp* (state 0A) or a bound one of udp* (state 07):
/// (inode, `KIND:ADDR:PORT`).
fn inet_line(line: &str, kind: &str) -> Option<(u64, String)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
    let want = if kind.starts_with("tcp") { "0A" } else { "07" };
    if *state != want {
        return None;
    }
    let (addr, port) = local.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    // The kernel prints each 32-bit word of the address as a number in host order.
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let shown = match bytes.len() {
        4 => format!(
            "{}:{port}",
            Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?)
        ),
        16 => format!(
            "[{}]:{port}",
            Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?)
        ),
        _ => return None,
    };
    Some((inode.parse().ok()?, format!("{kind}:{shown}")))
}

/// A listening line of /proc/net/unix (the accept flag, 0x10000): (inode, `unix:PATH`).
fn unix_line(line: &str) -> Option<(u64, String)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
    if flags & 0x10000 == 0 {
        return None;
    }
    let path = f.get(7).unwrap_or(&"");
    Some((f.get(6)?.parse().ok()?, format!("unix:{path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn the_plugin_is_the_first_word_past_the_global_options() {
        assert_eq!(
            plugin_of(&words("twistrs -n web --path .")).as_deref(),
            Some("web")
        );
        let long = "twistrs --pidfile x.pid -l log --log-format json -u 0 mail -d a=b";
        assert_eq!(plugin_of(&words(long)).as_deref(), Some("mail"));
        assert_eq!(
            plugin_of(&words("twistrs -nl log echo")).as_deref(),
            Some("echo")
        );
        assert_eq!(
            plugin_of(&words("twistrs --logfile=x -n qotd")).as_deref(),
            Some("qotd")
        );
        assert_eq!(plugin_of(&words("twistrs -n")), None);
    }

    #[test]
    fn proc_net_lines_give_addresses() {
        let tcp = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0 100 0 0 10 0";
        assert_eq!(
            inet_line(tcp, "tcp"),
            Some((4242, "tcp:127.0.0.1:8080".into()))
        );
        let est = tcp.replace(" 0A ", " 01 ");
        assert_eq!(
            inet_line(&est, "tcp"),
            None,
            "a connection is not a listener"
        );
        let tcp6 = "   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0";
        assert_eq!(inet_line(tcp6, "tcp6"), Some((77, "tcp6:[::1]:80".into())));
        let unix = "0000000000000000: 00000002 00000000 00010000 0001 01 99 /run/x.sock";
        assert_eq!(unix_line(unix), Some((99, "unix:/run/x.sock".into())));
        assert_eq!(unix_line(&unix.replace("00010000", "00000000")), None);
    }
}
