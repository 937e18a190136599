//! The process monitor: Twisted's `ProcessMonitor` as a twistrs [`Service`].
//!
//! Each program runs once at a time. When it dies it is restarted: at once if it ran for the
//! threshold or longer (and its delay goes back to the minimum), else after its delay, which
//! then doubles up to the maximum, as twistd does. Its output is logged a line at a time as
//! `[NAME] line`; every start and end is logged with the PID and the exit status or signal.
//! A stop sends SIGTERM, then SIGKILL after the kill time; the reactor's drain waits for it.
//! A restart's old process stops its programs before the successor starts them
//! ([`Service::prepare_handover`]), so no program ever runs twice.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use twistrs_core::metrics::{self, Counter, Gauge};
use twistrs_core::{
    Deferred, DelayedCall, Failure, Handle, ProcessId, ProcessProtocol, ProcessSpec, ProcessStatus,
    ProcessTransport, Service, ServiceHost,
};

use crate::lines::{Lines, MAX_LINE, text};

/// The log system of procmon's lines (twistd's `twisted.runner.procmon.ProcessMonitor`).
pub const SYSTEM: &str = "twistrs.procmon";

/// twistd's `-t`, `-k`, `-m` and `-M`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    /// A program that dies sooner than this after its start died "instantly".
    pub threshold: Duration,
    /// Between SIGTERM and SIGKILL when stopping.
    pub kill_time: Duration,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for Policy {
    /// twistd's defaults: 1 s, 5 s, 1 s, 3600 s.
    fn default() -> Self {
        Policy {
            threshold: Duration::from_secs(1),
            kill_time: Duration::from_secs(5),
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(3600),
        }
    }
}

impl Policy {
    /// twistd's rule, from a death after `ran` with the current `delay`: how long until the
    /// restart, and the delay for the next death.
    pub fn after_death(&self, ran: Duration, delay: Duration) -> (Duration, Duration) {
        if ran < self.threshold {
            (delay, (delay * 2).min(self.max_delay))
        } else {
            (Duration::ZERO, self.min_delay)
        }
    }
}

/// A program to keep running.
#[derive(Clone, Debug)]
pub struct Program {
    /// Its name in the log (twistd: the command line joined with spaces).
    pub name: String,
    pub spec: ProcessSpec,
}

enum State {
    /// Not running, no restart planned (before the start, after a stop).
    Idle,
    Running {
        id: ProcessId,
        started: Instant,
    },
    /// Dead; the restart is this timer.
    Waiting(DelayedCall),
}

struct Entry {
    prog: Program,
    delay: Duration,
    state: State,
    metrics: ProgramMetrics,
}

/// One program's series for `--metrics`, labelled with its name.
struct ProgramMetrics {
    starts: Counter,
    /// Starts after the first: what a watcher of a crash loop looks at.
    restarts: Counter,
    start_failures: Counter,
    /// Ends by how: exit 0, another exit status, a signal, unknown (reaped elsewhere).
    exits: [Counter; 4],
    running: Gauge,
}

impl ProgramMetrics {
    fn new(name: &str) -> Self {
        let l = [("process", name)];
        let exit = |how: &str| {
            metrics::counter(
                "twistrs_procmon_exits_total",
                "Ends of a program, by how: exit 0 (ok), another status (error), signal, unknown.",
                &[("process", name), ("status", how)],
            )
        };
        ProgramMetrics {
            starts: metrics::counter(
                "twistrs_procmon_starts_total",
                "Times a program was started (the first start included).",
                &l,
            ),
            restarts: metrics::counter(
                "twistrs_procmon_restarts_total",
                "Times a program was started again after it ended or failed to start.",
                &l,
            ),
            start_failures: metrics::counter(
                "twistrs_procmon_start_failures_total",
                "Starts that failed (the program could not be executed).",
                &l,
            ),
            exits: ["ok", "error", "signal", "unknown"].map(exit),
            running: metrics::gauge("twistrs_procmon_running", "1 while the program runs.", &l),
        }
    }
}

struct Monitor {
    policy: Policy,
    entries: Vec<Entry>,
    /// Started and not stopped: a death is followed by a restart.
    active: bool,
    handle: Option<Handle>,
    /// A restart's hand-over waits for every program to be gone.
    handover: Option<Deferred<()>>,
}

/// The service: runs every program from `start_service` on.
pub struct ProcessMonitor(Rc<RefCell<Monitor>>);

impl ProcessMonitor {
    pub fn new(policy: Policy, programs: Vec<Program>) -> Self {
        let entries = programs
            .into_iter()
            .map(|prog| Entry {
                metrics: ProgramMetrics::new(&prog.name),
                prog,
                delay: policy.min_delay,
                state: State::Idle,
            })
            .collect();
        ProcessMonitor(Rc::new(RefCell::new(Monitor {
            policy,
            entries,
            active: false,
            handle: None,
            handover: None,
        })))
    }
}

/// Seconds for the log: `0.25 s`, `2 s`.
pub fn secs(d: Duration) -> String {
    let s = format!("{:.3}", d.as_secs_f64());
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} s")
}

/// Starts program `i` unless it runs or the monitor is stopped.
fn start(mon: &Rc<RefCell<Monitor>>, i: usize) {
    let (spec, name, handle) = {
        let m = mon.borrow();
        let Some(e) = m.entries.get(i) else { return };
        let Some(h) = m.handle.clone() else { return };
        if !m.active || matches!(e.state, State::Running { .. }) {
            return;
        }
        (e.prog.spec.clone(), e.prog.name.clone(), h)
    };
    let proto = LoggingProtocol {
        mon: Rc::downgrade(mon),
        index: i,
        name: name.clone(),
        out: Lines::new(MAX_LINE),
        err: Lines::new(MAX_LINE),
    };
    let now = handle.now();
    match handle.spawn_process(spec, Box::new(proto)) {
        Ok(id) => {
            log::info!(target: SYSTEM, "'{name}' started, PID {}.", id.pid());
            if let Some(e) = mon.borrow_mut().entries.get_mut(i) {
                e.state = State::Running { id, started: now };
                if e.metrics.starts.get() + e.metrics.start_failures.get() > 0 {
                    e.metrics.restarts.inc();
                }
                e.metrics.starts.inc();
                e.metrics.running.set(1);
            }
        }
        Err(err) => {
            if let Some(e) = mon.borrow().entries.get(i) {
                if e.metrics.starts.get() + e.metrics.start_failures.get() > 0 {
                    e.metrics.restarts.inc();
                }
                e.metrics.start_failures.inc();
            }
            // As twistd: a program that cannot start counts as an instant death.
            let next = plan_restart(mon, i, Duration::ZERO);
            log::error!(target: SYSTEM, "Cannot start '{name}': {err}{}.", restart_words(next));
        }
    }
}

/// After a death of program `i` that ran for `ran`: the restart timer, if the monitor is
/// active. Returns its delay.
fn plan_restart(mon: &Rc<RefCell<Monitor>>, i: usize, ran: Duration) -> Option<Duration> {
    let mut m = mon.borrow_mut();
    let policy = m.policy;
    let active = m.active;
    let handle = m.handle.clone();
    let e = m.entries.get_mut(i)?;
    let (next, delay) = policy.after_death(ran, e.delay);
    e.delay = delay;
    e.state = State::Idle;
    if !active {
        return None;
    }
    let h = handle?;
    let weak = Rc::downgrade(mon);
    e.state = State::Waiting(h.call_later(next, move || {
        if let Some(mon) = weak.upgrade() {
            if let Some(e) = mon.borrow_mut().entries.get_mut(i) {
                e.state = State::Idle;
            }
            start(&mon, i);
        }
    }));
    Some(next)
}

fn restart_words(next: Option<Duration>) -> String {
    match next {
        Some(d) if d.is_zero() => "; restarting at once".into(),
        Some(d) => format!("; restarting in {}", secs(d)),
        None => String::new(),
    }
}

/// Program `i` (PID `pid`) was reaped.
fn exited(mon: &Rc<RefCell<Monitor>>, i: usize, pid: u32, st: ProcessStatus) {
    let (name, ran) = {
        let m = mon.borrow();
        let Some(e) = m.entries.get(i) else { return };
        let now = m.handle.as_ref().map_or_else(Instant::now, Handle::now);
        let ran = match e.state {
            State::Running { started, .. } => now.saturating_duration_since(started),
            _ => Duration::ZERO,
        };
        let how = match st {
            ProcessStatus::Exited(0) => 0,
            ProcessStatus::Exited(_) => 1,
            ProcessStatus::Signaled { .. } => 2,
            ProcessStatus::Unknown => 3,
        };
        e.metrics.exits[how].inc();
        e.metrics.running.set(0);
        (e.prog.name.clone(), ran)
    };
    let next = plan_restart(mon, i, ran);
    let how = match st {
        ProcessStatus::Exited(_) | ProcessStatus::Unknown => format!("with {st}"),
        ProcessStatus::Signaled { .. } => format!("by {st}"),
    };
    log::info!(target: SYSTEM, "'{name}' (PID {pid}) ended {how} after {}{}.",
        secs(ran), restart_words(next));
    let done = {
        let mut m = mon.borrow_mut();
        let running = m
            .entries
            .iter()
            .any(|e| matches!(e.state, State::Running { .. }));
        if running { None } else { m.handover.take() }
    };
    if let Some(d) = done {
        let _ = d.callback(());
    }
}

/// Stops every program: cancels planned restarts, SIGTERM (then SIGKILL after the kill time)
/// to those running. Returns how many run.
fn stop_all(mon: &Rc<RefCell<Monitor>>, why: &str) -> usize {
    let mut m = mon.borrow_mut();
    m.active = false;
    let handle = m.handle.clone();
    let kill = m.policy.kill_time;
    let mut running = 0;
    for e in &mut m.entries {
        match &e.state {
            State::Waiting(t) => {
                t.cancel();
                e.state = State::Idle;
            }
            State::Running { id, .. } => {
                running += 1;
                log::info!(target: SYSTEM,
                    "Stopping '{}' (PID {}){why}: SIGTERM, then SIGKILL after {}.",
                    e.prog.name, id.pid(), secs(kill));
                if let Some(h) = &handle {
                    h.stop_process(*id);
                }
            }
            State::Idle => {}
        }
    }
    running
}

impl Service for ProcessMonitor {
    fn name(&self) -> &str {
        "procmon"
    }

    fn start_service(&mut self, h: &mut ServiceHost<'_>) -> Result<(), Failure> {
        let n = {
            let mut m = self.0.borrow_mut();
            m.handle = Some(h.handle());
            m.active = true;
            m.entries.len()
        };
        for i in 0..n {
            start(&self.0, i);
        }
        Ok(())
    }

    fn stop_service(&mut self, _h: &mut ServiceHost<'_>) {
        stop_all(&self.0, "");
    }

    fn prepare_handover(&mut self, _h: &mut ServiceHost<'_>) -> Deferred<()> {
        let d = Deferred::new();
        if stop_all(&self.0, " before the new process starts it") == 0 {
            let _ = d.callback(());
        } else {
            self.0.borrow_mut().handover = Some(d.clone());
        }
        d
    }

    fn single_process(&self) -> Option<&str> {
        Some(
            "it supervises programs, and a copy in each worker would run every program once per worker",
        )
    }

    fn handover_failed(&mut self, _h: &mut ServiceHost<'_>) {
        let n = {
            let mut m = self.0.borrow_mut();
            m.active = true;
            m.handover = None;
            let min = m.policy.min_delay;
            for e in &mut m.entries {
                e.delay = min;
            }
            m.entries.len()
        };
        log::info!(target: SYSTEM, "The restart failed: starting the programs again.");
        for i in 0..n {
            start(&self.0, i);
        }
    }
}

/// One run of a program: its output to the log, its death to the monitor.
struct LoggingProtocol {
    mon: Weak<RefCell<Monitor>>,
    index: usize,
    name: String,
    out: Lines,
    err: Lines,
}

fn log_line(name: &str, line: &[u8]) {
    log::info!(target: SYSTEM, "[{name}] {}", text(line));
}

impl ProcessProtocol for LoggingProtocol {
    fn out_received(&mut self, _p: &mut ProcessTransport<'_>, data: &[u8]) {
        let name = &self.name;
        self.out.feed(data, |l| log_line(name, l));
    }

    fn err_received(&mut self, _p: &mut ProcessTransport<'_>, data: &[u8]) {
        let name = &self.name;
        self.err.feed(data, |l| log_line(name, l));
    }

    fn out_connection_lost(&mut self, _p: &mut ProcessTransport<'_>) {
        let name = &self.name;
        self.out.finish(|l| log_line(name, l));
    }

    fn err_connection_lost(&mut self, _p: &mut ProcessTransport<'_>) {
        let name = &self.name;
        self.err.finish(|l| log_line(name, l));
    }

    fn process_exited(&mut self, p: &mut ProcessTransport<'_>, st: ProcessStatus) {
        if let Some(mon) = self.mon.upgrade() {
            exited(&mon, self.index, p.pid(), st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twistds_backoff() {
        let p = Policy {
            threshold: Duration::from_secs(1),
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(500),
            ..Policy::default()
        };
        let quick = Duration::from_millis(10);
        let mut delay = p.min_delay;
        let mut waits = Vec::new();
        for _ in 0..5 {
            let (next, d) = p.after_death(quick, delay);
            waits.push(next.as_millis());
            delay = d;
        }
        assert_eq!(waits, [100, 200, 400, 500, 500]);
        // A run past the threshold restarts at once and starts the delays again.
        let (next, d) = p.after_death(Duration::from_secs(2), delay);
        assert_eq!((next, d), (Duration::ZERO, p.min_delay));
    }

    #[test]
    fn seconds_for_the_log() {
        assert_eq!(secs(Duration::from_millis(250)), "0.25 s");
        assert_eq!(secs(Duration::from_secs(2)), "2 s");
        assert_eq!(secs(Duration::from_micros(1)), "0 s");
    }
}
