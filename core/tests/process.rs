//! Child processes on a real reactor: pipes, exit statuses, signals, stdin, a given socket,
//! descriptors, users, reaping and the drain.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use twistrs_core::{
    ChildFd, ChildIo, Credentials, ProcessError, ProcessProtocol, ProcessSpec, ProcessStatus,
    ProcessTransport, Reactor, ReactorConfig,
};

fn quiet_reactor() -> Reactor {
    Reactor::with_config(ReactorConfig {
        handle_signals: false,
        ..ReactorConfig::default()
    })
    .expect("reactor")
}

#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Made,
    Out(Vec<u8>),
    Err(Vec<u8>),
    Lost(ChildFd),
    Exited(ProcessStatus),
    Ended(ProcessStatus),
}

type Hook = Box<dyn FnMut(&mut ProcessTransport<'_>, &Ev)>;

/// Records every callback; `hook` sees each event with the transport; the reactor stops when
/// the child has ended (or when `stop_after_ended` children have).
struct Recorder {
    events: Rc<RefCell<Vec<Ev>>>,
    hook: Option<Hook>,
    ended: Rc<RefCell<usize>>,
    stop_after_ended: usize,
}

impl Recorder {
    fn push(&mut self, t: &mut ProcessTransport<'_>, e: Ev) {
        if let Some(h) = &mut self.hook {
            h(t, &e);
        }
        self.events.borrow_mut().push(e);
    }
}

impl ProcessProtocol for Recorder {
    fn connection_made(&mut self, t: &mut ProcessTransport<'_>) {
        self.push(t, Ev::Made);
    }
    fn out_received(&mut self, t: &mut ProcessTransport<'_>, data: &[u8]) {
        self.push(t, Ev::Out(data.to_vec()));
    }
    fn err_received(&mut self, t: &mut ProcessTransport<'_>, data: &[u8]) {
        self.push(t, Ev::Err(data.to_vec()));
    }
    fn child_connection_lost(&mut self, t: &mut ProcessTransport<'_>, fd: ChildFd) {
        self.push(t, Ev::Lost(fd));
    }
    fn process_exited(&mut self, t: &mut ProcessTransport<'_>, st: ProcessStatus) {
        self.push(t, Ev::Exited(st));
    }
    fn process_ended(&mut self, t: &mut ProcessTransport<'_>, st: ProcessStatus) {
        self.push(t, Ev::Ended(st));
        *self.ended.borrow_mut() += 1;
        if *self.ended.borrow() >= self.stop_after_ended {
            t.handle().stop();
        }
    }
}

fn recorder(hook: Option<Hook>) -> (Box<Recorder>, Rc<RefCell<Vec<Ev>>>) {
    let events = Rc::new(RefCell::new(Vec::new()));
    let r = Recorder {
        events: events.clone(),
        hook,
        ended: Rc::new(RefCell::new(0)),
        stop_after_ended: 1,
    };
    (Box::new(r), events)
}

/// Runs the reactor until a protocol stops it, at most 10 s.
fn run(r: &mut Reactor) {
    let h = r.handle();
    let guard = h.call_later(Duration::from_secs(10), {
        let h = h.clone();
        move || h.stop()
    });
    r.run().expect("run");
    assert!(
        guard.active(),
        "the child did not end within 10 s: {:?}",
        h.running_processes()
    );
    guard.cancel();
}

/// Everything the child wrote on stdout (or stderr).
fn collected(events: &[Ev], fd: ChildFd) -> Vec<u8> {
    events
        .iter()
        .flat_map(|e| match (e, fd) {
            (Ev::Out(d), ChildFd::Stdout) | (Ev::Err(d), ChildFd::Stderr) => d.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn sh(script: &str) -> ProcessSpec {
    ProcessSpec::new("/bin/sh").arg("-c").arg(script)
}

#[test]
fn output_arrives_before_the_exit_status_and_ended_comes_last() {
    let mut r = quiet_reactor();
    let (p, events) = recorder(None);
    let id = r
        .handle()
        .spawn_process(sh("echo out; echo err >&2; printf tail; exit 3"), p)
        .expect("spawn");
    assert!(id.pid() > 0);
    run(&mut r);
    let ev = events.borrow().clone();
    assert_eq!(ev.first(), Some(&Ev::Made), "{ev:?}");
    assert_eq!(collected(&ev, ChildFd::Stdout), b"out\ntail");
    assert_eq!(collected(&ev, ChildFd::Stderr), b"err\n");
    let exited = ev
        .iter()
        .position(|e| *e == Ev::Exited(ProcessStatus::Exited(3)))
        .expect("exited");
    let last_data = ev
        .iter()
        .rposition(|e| matches!(e, Ev::Out(_) | Ev::Err(_)))
        .unwrap();
    assert!(last_data < exited, "{ev:?}");
    assert!(ev.contains(&Ev::Lost(ChildFd::Stdout)) && ev.contains(&Ev::Lost(ChildFd::Stderr)));
    assert_eq!(ev.last(), Some(&Ev::Ended(ProcessStatus::Exited(3))));
    assert_eq!(r.handle().running_processes(), 0);
}

#[test]
fn stdin_is_written_then_closed() {
    let mut r = quiet_reactor();
    let hook: Hook = Box::new(|t, e| {
        if *e == Ev::Made {
            t.write(b"hello ");
            t.write(b"child\n");
            t.close_stdin();
        }
    });
    let (p, events) = recorder(Some(hook));
    let spec = ProcessSpec::new("cat").stdio(ChildFd::Stdin, ChildIo::Pipe);
    r.handle().spawn_process(spec, p).expect("spawn");
    run(&mut r);
    let ev = events.borrow().clone();
    assert_eq!(collected(&ev, ChildFd::Stdout), b"hello child\n");
    assert!(ev.contains(&Ev::Lost(ChildFd::Stdin)), "{ev:?}");
    assert_eq!(ev.last(), Some(&Ev::Ended(ProcessStatus::Exited(0))));
}

/// A large stdin goes out in time linear in its size: each write takes what the pipe holds
/// (64 KiB) off the front of the queue without moving the rest (a `Vec::drain` per write
/// moved the whole remainder: 128 GiB of copies for these 128 MiB).
#[test]
fn a_large_stdin_goes_out_whole_and_in_linear_time() {
    const SIZE: usize = 128 << 20;
    let mut r = quiet_reactor();
    let hook: Hook = Box::new(|t, e| {
        if *e == Ev::Made {
            t.write(&vec![b'x'; SIZE]);
            t.close_stdin();
        }
    });
    let (p, events) = recorder(Some(hook));
    let spec = ProcessSpec::new("wc")
        .arg("-c")
        .stdio(ChildFd::Stdin, ChildIo::Pipe);
    r.handle().spawn_process(spec, p).expect("spawn");
    let started = Instant::now();
    run(&mut r);
    let took = started.elapsed();
    let out = collected(&events.borrow(), ChildFd::Stdout);
    assert_eq!(String::from_utf8_lossy(&out).trim(), SIZE.to_string());
    assert!(
        took < Duration::from_secs(3),
        "{SIZE} bytes of stdin took {took:?}"
    );
}

#[test]
fn a_large_output_arrives_whole() {
    let mut r = quiet_reactor();
    let (p, events) = recorder(None);
    r.handle()
        .spawn_process(sh("head -c 3000000 /dev/zero"), p)
        .expect("spawn");
    run(&mut r);
    assert_eq!(
        collected(&events.borrow(), ChildFd::Stdout).len(),
        3_000_000
    );
}

#[test]
fn signals_reach_the_child_and_a_reaped_child_refuses_them() {
    let mut r = quiet_reactor();
    let hook: Hook = Box::new(|t, e| {
        if *e == Ev::Made {
            t.signal(libc::SIGTERM).expect("signal");
        }
    });
    let (p, events) = recorder(Some(hook));
    let id = r
        .handle()
        .spawn_process(ProcessSpec::new("sleep").arg("30"), p)
        .expect("spawn");
    run(&mut r);
    let term = ProcessStatus::Signaled {
        signal: libc::SIGTERM,
        core_dumped: false,
    };
    assert_eq!(events.borrow().last(), Some(&Ev::Ended(term)));
    assert!(matches!(
        r.handle().signal_process(id, libc::SIGKILL),
        Err(ProcessError::ExitedAlready)
    ));
}

#[test]
fn a_program_that_cannot_run_is_an_error_and_no_child() {
    let r = quiet_reactor();
    let (p, _) = recorder(None);
    let e = r
        .handle()
        .spawn_process(ProcessSpec::new("/no/such/program"), p)
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(r.handle().running_processes(), 0);
}

#[test]
fn environment_and_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = quiet_reactor();
    let (p, events) = recorder(None);
    let spec = sh("echo \"$GREETING|$NOTIFY_SOCKET|$HOME|$(pwd)\"")
        .env("GREETING", "hi")
        .env("NOTIFY_SOCKET", "/run/x")
        .env_remove("HOME")
        .cwd(dir.path());
    r.handle().spawn_process(spec, p).expect("spawn");
    run(&mut r);
    let out = String::from_utf8(collected(&events.borrow(), ChildFd::Stdout)).unwrap();
    let want = format!(
        "hi|/run/x||{}\n",
        dir.path().canonicalize().unwrap().display()
    );
    assert_eq!(out, want);
}

#[test]
fn a_child_sees_only_descriptors_0_1_and_2() {
    // A descriptor that is not close-on-exec (a library's leak): the child must not get it.
    let f = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: dup(2) of a descriptor we own; the copy is closed below.
    let leaked = unsafe { libc::dup(f.as_raw_fd()) };
    assert!(leaked > 2);
    let mut r = quiet_reactor();
    let (p, events) = recorder(None);
    r.handle()
        .spawn_process(ProcessSpec::new("ls").arg("/proc/self/fd"), p)
        .expect("spawn");
    run(&mut r);
    // SAFETY: closing our own copy.
    unsafe { libc::close(leaked) };
    let out = String::from_utf8(collected(&events.borrow(), ChildFd::Stdout)).unwrap();
    let fds: Vec<&str> = out.lines().collect();
    // 3 is ls's own handle on the directory it lists.
    assert_eq!(fds, ["0", "1", "2", "3"], "{out}");
}

#[test]
fn a_given_socket_is_the_childs_stdin_stdout_and_stderr() {
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut r = quiet_reactor();
    let (p, events) = recorder(None);
    let spec = sh("read line; echo \"got $line\"; echo oops >&2").stdio_fd(theirs);
    r.handle().spawn_process(spec, p).expect("spawn");
    (&ours).write_all(b"ping\n").unwrap();
    run(&mut r);
    ours.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    (&ours).read_to_string(&mut got).unwrap();
    // EOF: the child's copies are gone, and so is ours (the spec's, dropped after the fork).
    assert_eq!(got, "got ping\noops\n");
    assert_eq!(
        events.borrow().last(),
        Some(&Ev::Ended(ProcessStatus::Exited(0)))
    );
}

#[test]
fn a_child_runs_as_the_user_it_is_given() {
    if nix::unistd::Uid::effective().as_raw() != 0 {
        eprintln!("SKIPPED a_child_runs_as_the_user_it_is_given: not root");
        return;
    }
    let c = Credentials::resolve(Some("nobody"), None).expect("nobody");
    let mut r = quiet_reactor();
    let (p, events) = recorder(None);
    r.handle()
        .spawn_process(sh("id -u; id -g; id -G").credentials(c.clone()), p)
        .expect("spawn");
    run(&mut r);
    let out = String::from_utf8(collected(&events.borrow(), ChildFd::Stdout)).unwrap();
    let mut groups: Vec<u32> = c.groups.clone();
    groups.sort_unstable();
    groups.dedup();
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some(c.uid.to_string().as_str()), "{out}");
    assert_eq!(lines.next(), Some(c.gid.to_string().as_str()), "{out}");
    let mut seen: Vec<u32> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen, groups, "{out}");
}

#[test]
fn a_child_that_exited_before_the_reactor_ran_is_reaped() {
    let mut r = quiet_reactor();
    let (p, events) = recorder(None);
    let id = r
        .handle()
        .spawn_process(ProcessSpec::new("true"), p)
        .expect("spawn");
    // The child exits while no SIGCHLD handler exists: its signal is lost.
    let end = Instant::now() + Duration::from_secs(5);
    while state(id.pid()) != Some('Z') && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(state(id.pid()), Some('Z'));
    run(&mut r);
    assert_eq!(
        events.borrow().last(),
        Some(&Ev::Ended(ProcessStatus::Exited(0)))
    );
    assert_eq!(state(id.pid()), None, "a zombie is left");
}

/// The state letter of `pid` if it is a child of this process.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split(' ');
    let st = f.next()?.chars().next()?;
    let ppid: u32 = f.next()?.parse().ok()?;
    (ppid == std::process::id()).then_some(st)
}

#[test]
fn many_children_leave_no_zombie() {
    let mut r = quiet_reactor();
    let h = r.handle();
    let events = Rc::new(RefCell::new(Vec::new()));
    let ended = Rc::new(RefCell::new(0));
    let mut pids = Vec::new();
    for i in 0..40 {
        let p = Recorder {
            events: events.clone(),
            hook: None,
            ended: ended.clone(),
            stop_after_ended: 40,
        };
        let spec = sh(&format!("exit {}", i % 5));
        pids.push(h.spawn_process(spec, Box::new(p)).expect("spawn").pid());
    }
    run(&mut r);
    assert_eq!(*ended.borrow(), 40);
    assert_eq!(h.running_processes(), 0);
    for pid in pids {
        assert_eq!(state(pid), None, "PID {pid} is left");
    }
}

#[test]
fn the_drain_kills_a_child_that_ignores_sigterm_after_its_kill_time() {
    let mut r = quiet_reactor();
    let hook: Hook = Box::new(|t, e| {
        if matches!(e, Ev::Out(_)) {
            t.handle().stop();
        }
    });
    let (p, events) = recorder(Some(hook));
    let spec = sh("trap '' TERM; echo ready; exec sleep 30").kill_time(Duration::from_millis(300));
    let id = r.handle().spawn_process(spec, p).expect("spawn");
    r.run().expect("run");
    let t0 = Instant::now();
    r.drain(Duration::from_millis(100)).expect("drain");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let killed = ProcessStatus::Signaled {
        signal: libc::SIGKILL,
        core_dumped: false,
    };
    assert!(
        events.borrow().contains(&Ev::Exited(killed)),
        "{:?}",
        events.borrow()
    );
    assert_eq!(r.handle().running_processes(), 0);
    assert_eq!(state(id.pid()), None);
}

#[test]
fn the_drain_stops_a_polite_child_with_sigterm() {
    let mut r = quiet_reactor();
    let h = r.handle();
    let (p, events) = recorder(None);
    r.handle()
        .spawn_process(ProcessSpec::new("sleep").arg("30"), p)
        .expect("spawn");
    h.call_later(Duration::from_millis(50), {
        let h = h.clone();
        move || h.stop()
    });
    r.run().expect("run");
    let t0 = Instant::now();
    r.drain(Duration::from_secs(5)).expect("drain");
    assert!(t0.elapsed() < Duration::from_secs(2));
    let term = ProcessStatus::Signaled {
        signal: libc::SIGTERM,
        core_dumped: false,
    };
    assert_eq!(events.borrow().last(), Some(&Ev::Ended(term)));
}

#[test]
fn a_parent_death_signal_is_set_after_the_privilege_change() {
    // /proc/self/status has no field for it: the child reads it back with prctl through a
    // tiny program, python3.
    if std::process::Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .map_or(true, |s| !s.success())
    {
        eprintln!("SKIPPED a_parent_death_signal_is_set_after_the_privilege_change: no python3");
        return;
    }
    let script = "import ctypes; v = ctypes.c_int(); \
                  ctypes.CDLL(None).prctl(2, ctypes.byref(v)); print(v.value)";
    let mut spec = ProcessSpec::new("python3")
        .args(["-c", script])
        .parent_death_signal(Some(libc::SIGKILL));
    if nix::unistd::Uid::effective().is_root() {
        spec = spec.credentials(Credentials::resolve(Some("nobody"), None).unwrap());
    }
    let mut r = quiet_reactor();
    let (p, events) = recorder(None);
    r.handle().spawn_process(spec, p).expect("spawn");
    run(&mut r);
    let out = String::from_utf8(collected(&events.borrow(), ChildFd::Stdout)).unwrap();
    assert_eq!(out.trim(), libc::SIGKILL.to_string());
}

#[test]
fn an_exit_that_comes_with_a_stop_is_delivered_after_run_returns() {
    // systemd's KillMode=control-group: the child and twistrs get SIGTERM together. A
    // supervisor must hear of the death only once its service is stopped, or it restarts it.
    let mut r = quiet_reactor();
    r.on_signal(libc::SIGUSR2, twistrs_core::SignalAction::Stop)
        .expect("watch SIGUSR2");
    let h = r.handle();
    let restarted = Rc::new(RefCell::new(false));
    let flag = restarted.clone();
    let hook: Hook = Box::new(move |t, e| {
        if matches!(e, Ev::Exited(_)) {
            let flag = flag.clone();
            t.handle()
                .call_later(Duration::ZERO, move || *flag.borrow_mut() = true);
        }
    });
    let (p, events) = recorder(Some(hook));
    let id = h
        .spawn_process(ProcessSpec::new("sleep").arg("0.2"), p)
        .expect("spawn");
    // Adopt it (and watch SIGCHLD) now; then let it exit and raise the stop, both pending.
    r.turn(Some(Duration::ZERO)).expect("turn");
    let end = Instant::now() + Duration::from_secs(5);
    while state(id.pid()) != Some('Z') && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: raise(3) of a signal this reactor watches.
    unsafe { libc::raise(libc::SIGUSR2) };
    assert_eq!(
        r.run().expect("run"),
        twistrs_core::StopReason::Signal(libc::SIGUSR2)
    );
    assert!(
        !events.borrow().iter().any(|e| matches!(e, Ev::Exited(_))),
        "{:?}",
        events.borrow()
    );
    assert!(!*restarted.borrow());
    r.drain(Duration::from_secs(2)).expect("drain");
    assert!(
        events
            .borrow()
            .contains(&Ev::Exited(ProcessStatus::Exited(0)))
    );
    assert_eq!(state(id.pid()), None);
}

#[test]
fn a_session_or_a_process_group_of_its_own() {
    // The child reports its PID, process group and session (fields 5-7 of /proc/self/stat
    // as seen by sh: $$ is the shell's PID).
    let report = "read -r _ _ _ _ pgrp sid _ < /proc/$$/stat; echo $$ $pgrp $sid";
    // SAFETY: getsid/getpgrp of this process cannot fail.
    let (our_pgrp, our_sid) = unsafe { (libc::getpgrp(), libc::getsid(0)) };
    for (group, session) in [(false, false), (true, false), (false, true)] {
        let mut r = quiet_reactor();
        let (p, events) = recorder(None);
        let spec = sh(report).new_process_group(group).new_session(session);
        r.handle().spawn_process(spec, p).expect("spawn");
        run(&mut r);
        let out = String::from_utf8(collected(&events.borrow(), ChildFd::Stdout)).unwrap();
        let v: Vec<i32> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let (pid, pgrp, sid) = (v[0], v[1], v[2]);
        match (group, session) {
            (false, false) => assert_eq!((pgrp, sid), (our_pgrp, our_sid)),
            (true, false) => assert_eq!((pgrp, sid), (pid, our_sid), "its own group, our session"),
            _ => assert_eq!((pgrp, sid), (pid, pid), "its own session"),
        }
    }
}

#[test]
fn a_script_without_a_shebang_line_runs_with_sh_as_execvp_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("no-shebang");
    // Written by a child process, not by this one: a file this process held open for writing
    // would be inherited by any child another test thread forks meanwhile, and executing the
    // script while such a child still holds it fails with ETXTBSY ("Text file busy").
    let written = std::process::Command::new("sh")
        .args([
            "-c",
            "printf 'echo from sh \"$1\"\\n' > \"$0\" && chmod 755 \"$0\"",
        ])
        .arg(&script)
        .status()
        .expect("sh");
    assert!(written.success());
    assert_eq!(
        std::fs::read_to_string(&script).unwrap(),
        "echo from sh \"$1\"\n"
    );
    let mut r = quiet_reactor();
    let (p, events) = recorder(None);
    r.handle()
        .spawn_process(ProcessSpec::new(&script).arg("arg1"), p)
        .expect("spawn");
    run(&mut r);
    assert_eq!(
        collected(&events.borrow(), ChildFd::Stdout),
        b"from sh arg1\n"
    );
}
