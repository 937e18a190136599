//! Test support: start the binary, read its log, find its ports, stop it by PID.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_twistrs");

/// A running `twistrs -n ...` in its own temporary directory.
pub struct Server {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// How many of the two pipes (stdout, stderr) their reader threads have read to the end.
    ended: Arc<std::sync::atomic::AtomicUsize>,
    /// The working directory, removed when the server is dropped.
    _dir: tempfile::TempDir,
    status: Option<ExitStatus>,
}

impl Server {
    /// Starts `twistrs -n ARGS...` in its own temporary directory (its pidfile and any files
    /// land there) and waits until every listener logged its port.
    pub fn start(args: &[&str]) -> Server {
        let s = Self::spawn(args);
        let want = args.iter().filter(|a| **a == "--listen").count().max(1);
        s.wait_until(|l| count_ports(l) >= want, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("server did not start: {:?}", s.lines()));
        s
    }

    /// Starts without waiting for anything.
    pub fn spawn(args: &[&str]) -> Server {
        Self::spawn_wrapped(&[], args)
    }

    /// Starts `twistrs -n ARGS...` with `cwd` as its working directory (for relative paths
    /// in ARGS), without waiting for anything.
    pub fn spawn_in(cwd: &std::path::Path, args: &[&str]) -> Server {
        // env execs twistrs in place: the PID is still the server's.
        Self::spawn_wrapped(&["env", "-C", cwd.to_str().expect("a UTF-8 path")], args)
    }

    /// Starts `twistrs -n ARGS...` through `wrapper` (a command that execs what follows it,
    /// such as `prlimit --nofile=64:64`, so the PID is still the server's) and waits until
    /// every listener logged its port.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Server {
        let s = Self::spawn_wrapped(wrapper, args);
        let want = args.iter().filter(|a| **a == "--listen").count().max(1);
        s.wait_until(|l| count_ports(l) >= want, Duration::from_secs(10))
            .unwrap_or_else(|| panic!("server did not start: {:?}", s.lines()));
        s
    }

    pub fn spawn_wrapped(wrapper: &[&str], args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut full = vec!["-n"];
        full.extend_from_slice(args);
        let mut child = match wrapper.split_first() {
            None => spawn_in(dir.path(), &full),
            Some((cmd, rest)) => Command::new(cmd)
                .args(rest)
                .arg(BIN)
                .args(&full)
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the wrapped twistrs"),
        };
        let lines = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for pipe in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let (l, ended) = (lines.clone(), ended.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    l.lock().unwrap().push(line);
                }
                ended.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        Server {
            child,
            lines,
            ended,
            _dir: dir,
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything logged so far (stdout and stderr).
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// True once a logged line contains `needle`, waiting (bounded) for the log to arrive:
    /// the server writes it to a pipe that a thread of ours reads.
    pub fn log_contains(&self, needle: &str) -> bool {
        self.wait_until(
            |l| l.iter().any(|x| x.contains(needle)),
            Duration::from_secs(5),
        )
        .is_some()
    }

    /// Polls `cond` over the log until it holds or `timeout` passes.
    pub fn wait_until(&self, cond: impl Fn(&[String]) -> bool, timeout: Duration) -> Option<()> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if cond(&self.lines()) {
                return Some(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// The ports from `X starting on PORT` lines, in listen order.
    pub fn ports(&self) -> Vec<u16> {
        ports_of(&self.lines())
    }

    pub fn port(&self) -> u16 {
        self.ports()[0]
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port()))
    }

    /// Sends a signal to this server only.
    pub fn signal(&self, sig: i32) {
        use nix::sys::signal::{Signal, kill};
        let sig = Signal::try_from(sig).expect("signal number");
        kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).expect("kill");
    }

    /// Waits (bounded) for the process to exit.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
                // The reader threads drain the pipes: wait for both to reach their end (a
                // busy machine may not have run them yet), bounded, since a child the server
                // started may still hold them open.
                let drained = Instant::now() + Duration::from_secs(3);
                while self.ended.load(std::sync::atomic::Ordering::SeqCst) < 2
                    && Instant::now() < drained
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                return self.status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// SIGTERM, then wait; the exit status.
    pub fn term(&mut self) -> ExitStatus {
        self.signal(15);
        self.wait(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("server did not stop: {:?}", self.lines()))
    }

    /// Waits (bounded) until the process catches `sig`, i.e. its handler is installed.
    pub fn wait_catches(&self, sig: u32) -> bool {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            let status =
                std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
            let caught = status
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(0);
            if caught & (1 << (sig - 1)) != 0 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn ports_of(lines: &[String]) -> Vec<u16> {
    lines
        .iter()
        .filter_map(|l| l.split(" starting on ").nth(1))
        // The port's digits: a JSON line (`--log-format json`) goes on after them.
        .filter_map(|p| {
            let p = p.trim();
            p[..p.find(|c: char| !c.is_ascii_digit()).unwrap_or(p.len())]
                .parse()
                .ok()
        })
        .collect()
}

/// The text of the file at `path` once `done` holds for it, or as it is after `timeout` (a
/// log written by the server after its answer: the caller's assertions say what was missing).
pub fn file_when(path: &std::path::Path, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) || Instant::now() >= end {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn count_ports(lines: &[String]) -> usize {
    lines.iter().filter(|l| l.contains(" starting on ")).count()
}

/// Starts the binary in `dir` with stdin empty and stdout/stderr piped.
pub fn spawn_in(dir: &std::path::Path, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn twistrs")
}

/// Runs the binary in `dir` to completion (bounded); (status code, stdout, stderr).
/// Stops, when dropped, whatever holds `pidfile`'s lock (`twistrs stop`): a restart's
/// successor is no child of the test, and a test that fails midway must not leave it running.
pub struct StopOnDrop(pub std::path::PathBuf);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let (Some(dir), Some(p)) = (self.0.parent(), self.0.to_str()) {
            let _ = run_in(dir, &["stop", "--pidfile", p, "--timeout", "5"]);
        }
    }
}

pub fn run_in(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let mut child = spawn_in(dir, args);
    let end = Instant::now() + Duration::from_secs(40);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("twistrs {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `BEFORE dns -p 0 -i 127.0.0.1 AFTER`: the dns plugin on 127.0.0.1, on a port picked at
/// start, as the tests of several modules run it.
pub fn dns_args<'a>(before: &[&'a str], after: &[&'a str]) -> Vec<&'a str> {
    let mut args = before.to_vec();
    args.extend_from_slice(&["dns", "-p", "0", "-i", "127.0.0.1"]);
    args.extend_from_slice(after);
    args
}

/// Runs the binary to completion in a fresh directory.
pub fn run(args: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    run_in(dir.path(), args)
}

/// A TCP client with a read timeout.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Reads exactly `n` bytes (bounded by the socket's read timeout).
pub fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until EOF (bounded by the socket's read timeout).
pub fn read_to_end(s: &mut impl Read) -> Vec<u8> {
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read to EOF");
    out
}

/// Writes all of `data`.
pub fn send(s: &mut impl Write, data: &[u8]) {
    s.write_all(data).expect("write");
}

/// Whether the server closed `c`, for the connection-limit tests that must tell a connection
/// given up from one kept: EOF or a reset within `within`, `false` if it is still open (the
/// read times out). A byte from it panics: `what` (such a connection) should send none.
pub fn closed_within(c: &mut TcpStream, within: Duration, what: &str) -> bool {
    c.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    match c.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("{n} bytes from {what}"),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            false
        }
        Err(e) => panic!("{e}"),
    }
}

/// The command (`unshare ... sh -c SCRIPT`) to put before another so that it runs with
/// `hosts` as its /etc/hosts, and with `hostname` as its host name if given, in mount (and
/// UTS) namespaces of its own: the machine's are never touched. The hosts file is written in
/// `dir`. None, after a skip line for `test`, where such namespaces cannot be made (not root).
pub fn private_hosts(
    test: &str,
    dir: &std::path::Path,
    hosts: &str,
    hostname: Option<&str>,
) -> Option<Vec<String>> {
    let file = dir.join("hosts");
    std::fs::write(&file, hosts).unwrap();
    let mut script = format!("mount --bind '{}' /etc/hosts", file.display());
    if let Some(h) = hostname {
        script.push_str(&format!(" && hostname '{h}'"));
    }
    script.push_str(" && exec \"$0\" \"$@\"");
    let flags = if hostname.is_some() { "-mu" } else { "-m" };
    unshared(test, flags, &script, "mount")
}

/// `unshare FLAGS sh -c SCRIPT`, where SCRIPT ends by exec'ing what follows it, once it
/// has run `true` here; None after a skip line where it cannot (not root).
pub fn unshared(test: &str, flags: &str, script: &str, what: &str) -> Option<Vec<String>> {
    let wrapper: Vec<String> = ["unshare", flags, "sh", "-c", script]
        .iter()
        .map(|a| a.to_string())
        .collect();
    let probe = std::process::Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg("true")
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        skip(
            test,
            &format!("no unshare {flags} with {what} (needs root)"),
        );
        return None;
    }
    Some(wrapper)
}

/// The command (`unshare -m sh -c ...`) that runs what follows it with a `size` tmpfs of its
/// own mounted on `dir`, in a mount namespace of its own (the machine's mounts are never
/// touched); the test reaches the tmpfs through `/proc/PID/root`. None, after a skip line,
/// where such namespaces cannot be made (not root).
pub fn small_disk(test: &str, dir: &std::path::Path, size: &str) -> Option<Vec<String>> {
    let script = format!(
        "mount -t tmpfs -o size={size} tmpfs '{}' && exec \"$0\" \"$@\"",
        dir.display()
    );
    unshared(test, "-m", &script, "a tmpfs mount")
}

/// Fills the disk under `dir` (as the server sees it) until it refuses a byte more.
pub fn fill_disk(dir: &std::path::Path) -> std::path::PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 4096];
    for _ in 0..100_000 {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    filler
}

/// Records that `test` did not run what it tests, and why: on stderr, and in a list that
/// `.ci/run` prints after the suite, so a skip is never silent.
pub fn skip(test: &str, why: &str) {
    let line = format!("SKIPPED {test}: {why}\n");
    eprint!("{line}");
    let list = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(list)
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// True when the tests run as root; otherwise `test` is skipped, with `why` recorded.
pub fn as_root(test: &str, why: &str) -> bool {
    let root = nix::unistd::Uid::effective().is_root();
    if !root {
        skip(test, why);
    }
    root
}

/// The user `nobody`, for a test that drops privileges to it: `None`, the test skipped and
/// the reason recorded, unless we run as root and the user exists.
pub fn nobody_as_root(test: &str) -> Option<nix::unistd::User> {
    if !as_root(test, "not root") {
        return None;
    }
    let nobody = nix::unistd::User::from_name("nobody").ok().flatten();
    if nobody.is_none() {
        skip(test, "no user nobody");
    }
    nobody
}

/// A free port below 1024 on 127.0.0.1, searched from the top of 600..1000 or from its
/// bottom (two tests running at once start from different ends).
pub fn free_privileged_port(from_top: bool) -> u16 {
    let free = |p: &u16| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok();
    if from_top {
        (600..1000).rev().find(free)
    } else {
        (600..1000).find(free)
    }
    .expect("a free privileged port")
}

/// Raises this test process's descriptor limit to the hard limit.
pub fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A UDP socket on 127.0.0.1 with a read timeout.
pub fn udp() -> std::net::UdpSocket {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp bind");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Sends one datagram to `port` and returns the answer.
pub fn udp_ask(port: u16, data: &[u8]) -> Vec<u8> {
    let s = udp();
    s.send_to(data, ("127.0.0.1", port)).expect("send_to");
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf).expect("udp answer");
    buf[..n].to_vec()
}

/// Puts the socket `fd` on descriptor 3 of the child `cmd` starts, as systemd passes a socket
/// (`LISTEN_FDS=1`): dup2 onto 3, or, if it is 3 already, clears its close-on-exec flag (dup2
/// onto itself would leave FD_CLOEXEC set).
pub fn pass_as_fd3(cmd: &mut Command, fd: std::os::fd::RawFd) {
    use std::os::unix::process::CommandExt;
    // SAFETY: dup2 and fcntl are async-signal-safe; nothing is allocated after the fork.
    unsafe {
        cmd.pre_exec(move || {
            let r = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// (state, ppid) of `pid`, from /proc/PID/stat.
pub fn stat(pid: u32) -> Option<(char, u32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut f = s.get(s.rfind(')')? + 2..)?.split(' ');
    let state = f.next()?.chars().next()?;
    Some((state, f.next()?.parse().ok()?))
}

/// The children of `parent`: (PID, state, argv).
pub fn children(parent: u32) -> Vec<(u32, char, Vec<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some((st, ppid)) = stat(pid)
            && ppid == parent
        {
            out.push((pid, st, argv(pid)));
        }
    }
    out
}

/// The argv of `pid`, from /proc/PID/cmdline.
pub fn argv(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// A daemon (`twistrs ARGS`, no `-n`) in a directory of its own; `twistrs stop` (by its
/// pidfile) when dropped.
pub struct Daemon {
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `twistrs ARGS` as a daemon in a new directory; it must start.
    pub fn start(args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let (code, out, err) = run_in(dir.path(), args);
        assert_eq!(code, 0, "daemon start {args:?}: {out} {err}");
        Daemon { dir }
    }

    /// The PID in the pidfile now (a restart changes it); 0 if there is none.
    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("twistrs.pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("twistrs.log")).unwrap_or_default()
    }

    /// The log so far, a line each.
    pub fn log_lines(&self) -> Vec<String> {
        self.log().lines().map(String::from).collect()
    }

    /// `twistrs ARGS` in the daemon's directory (`stop`, `restart`, `status`).
    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        run_in(self.dir.path(), args)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = run_in(self.dir.path(), &["stop", "--timeout", "5"]);
    }
}

/// Makes the close of `s` a reset (SO_LINGER 0), for tests of a peer that vanishes.
pub fn reset_on_close(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on an open socket, with a linger of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

/// Starts python3 running `script` with `arg` and waits for its first line, "ready": a
/// stand-in that holds a pidfile's lock (say) before the test acts on it.
pub fn python_ready(script: &str, arg: &std::path::Path) -> std::process::Child {
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(arg)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("a line from the stand-in");
    assert_eq!(line.trim(), "ready");
    child
}

/// Writes `data` to the FIFO at `path` for the one process blocked reading it, if one opens
/// it for reading within `within` (a non-blocking open for writing fails with ENXIO until a
/// reader waits). True if one did. Tests hold a start at a file read this way.
pub fn feed_fifo(path: &std::path::Path, data: &[u8], within: Duration) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("a path");
    let end = Instant::now() + within;
    while Instant::now() < end {
        // SAFETY: open/write/close of a FIFO the test made, with a valid C string.
        unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK);
            if fd >= 0 {
                libc::write(fd, data.as_ptr().cast(), data.len());
                libc::close(fd);
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
