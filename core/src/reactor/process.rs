//! Children in the reactor: adopting a forked child, reading and writing its pipes, reaping it
//! on SIGCHLD, and stopping children at the end of a drain.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use mio::Interest;
use mio::unix::pipe::{Receiver, Sender};

use super::handle::Adopted;
use super::{Entry, Reactor};
use crate::process::{
    ChildFd, ProcIo, ProcessId, ProcessProtocol, ProcessStatus, ProcessTransport,
};

/// Reads per pipe per readiness event before other sources have their go (64 KiB each).
const READS_PER_TURN: usize = 16;

/// How long the end of a drain waits for children it sent SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Our end of one of a child's pipes.
pub(crate) enum PipeEnd {
    /// stdout or stderr.
    Read(Receiver),
    /// stdin.
    Write(Sender),
}

/// A pipe's poll entry.
pub(crate) struct Pipe {
    serial: u64,
    fd: ChildFd,
    end: PipeEnd,
}

/// A child the reactor has adopted.
pub(crate) struct Process {
    id: ProcessId,
    /// Out only while one of its callbacks runs.
    proto: Option<Box<dyn ProcessProtocol>>,
    io: ProcIo,
}

/// The reactor's children.
#[derive(Default)]
pub(crate) struct Children {
    procs: HashMap<u64, Process>,
    /// Children reaped before their adoption (they exited at once): their status, delivered
    /// right after `connection_made`.
    early: HashMap<u64, ProcessStatus>,
    /// SIGCHLD is watched.
    pub(crate) watching: bool,
    /// Pipes that used up their read budget and may hold more.
    pub(crate) redrive: Vec<usize>,
    /// A SIGCHLD came while a stop was pending: reap at the next turn.
    pub(crate) reap_pending: bool,
    /// Orphans are handed to this process (PID 1 of a container, a subreaper): each SIGCHLD
    /// also reaps the exited children nobody waits for (`process::reap_orphans`).
    pub(crate) orphans: bool,
}

impl Reactor {
    /// Takes in a child forked by `Handle::spawn_process`: its pipes into the poll, then
    /// `connection_made`.
    pub(crate) fn adopt(&mut self, a: Adopted) {
        if !self.children.watching {
            match self.watch_signal(libc::SIGCHLD) {
                Ok(()) => {
                    self.children.watching = true;
                    // A child that exited before the handler was there sent its SIGCHLD
                    // into the void: look now.
                    self.reap();
                }
                Err(e) => log::error!(target: "twistrs.reactor",
                    "cannot watch SIGCHLD ({e}): children will be reaped only at the next one"),
            }
        }
        let serial = a.id.serial;
        let mut io = ProcIo::default();
        for (i, fd) in a.pipes.into_iter().enumerate() {
            let Some(fd) = fd else { continue };
            match self.register_pipe(serial, ChildFd::ALL[i], fd) {
                Ok(key) => io.pipes[i] = Some(key),
                Err(e) => log::error!(target: "twistrs.reactor",
                    "cannot watch a pipe of PID {}: {e}", a.id.pid),
            }
        }
        self.children.procs.insert(
            serial,
            Process {
                id: a.id,
                proto: Some(a.proto),
                io,
            },
        );
        self.with_process(serial, |p, t| p.connection_made(t));
        if let Some(st) = self.children.early.remove(&serial) {
            self.exited(serial, st);
        }
    }

    fn register_pipe(&mut self, serial: u64, fd: ChildFd, owned: OwnedFd) -> io::Result<usize> {
        let entry = self.entries.vacant_entry();
        let key = entry.key();
        let token = mio::Token(key);
        let end = if fd == ChildFd::Stdin {
            let mut s = Sender::from(owned);
            s.set_nonblocking(true)?;
            self.poll
                .registry()
                .register(&mut s, token, Interest::WRITABLE)?;
            PipeEnd::Write(s)
        } else {
            let mut r = Receiver::from(owned);
            r.set_nonblocking(true)?;
            self.poll
                .registry()
                .register(&mut r, token, Interest::READABLE)?;
            PipeEnd::Read(r)
        };
        entry.insert(Entry::Pipe(Pipe { serial, fd, end }));
        Ok(key)
    }

    /// Runs one callback of a child's protocol, then carries out what it asked (closes,
    /// stdin output) and delivers `process_ended` when it is due.
    fn with_process(
        &mut self,
        serial: u64,
        f: impl FnOnce(&mut dyn ProcessProtocol, &mut ProcessTransport<'_>),
    ) {
        let Some(p) = self.children.procs.get_mut(&serial) else {
            return;
        };
        let Some(mut proto) = p.proto.take() else {
            return;
        };
        {
            let mut t = ProcessTransport {
                id: p.id,
                io: &mut p.io,
                handle: &self.handle,
            };
            f(&mut *proto, &mut t);
        }
        if let Some(p) = self.children.procs.get_mut(&serial) {
            p.proto = Some(proto);
        }
        self.settle(serial);
    }

    /// After a callback: closes the pipes asked for, writes stdin, ends a finished child.
    fn settle(&mut self, serial: u64) {
        let Some(p) = self.children.procs.get_mut(&serial) else {
            return;
        };
        let close = std::mem::take(&mut p.io.close);
        for fd in ChildFd::ALL {
            if close[fd.index()] {
                self.close_pipe(serial, fd);
            }
        }
        self.flush_stdin(serial);
        self.maybe_ended(serial);
    }

    /// Writes what is queued for stdin until the pipe is full; closes it when asked and
    /// empty, or when the child closed its end.
    fn flush_stdin(&mut self, serial: u64) {
        let Some(p) = self.children.procs.get_mut(&serial) else {
            return;
        };
        let Some(key) = p.io.pipes[0] else {
            p.io.stdin_out.clear();
            return;
        };
        let Some(Entry::Pipe(Pipe {
            end: PipeEnd::Write(s),
            ..
        })) = self.entries.get_mut(key)
        else {
            return;
        };
        let mut failed = false;
        while !p.io.stdin_out.is_empty() {
            match s.write(p.io.stdin_out.peek()) {
                Ok(n) => p.io.stdin_out.consume(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        p.io.stdin_out.release_if_empty();
        if failed || (p.io.close_stdin && p.io.stdin_out.is_empty()) {
            p.io.stdin_out = Default::default();
            self.close_pipe(serial, ChildFd::Stdin);
        }
    }

    /// Closes our end of a pipe and tells the protocol.
    fn close_pipe(&mut self, serial: u64, fd: ChildFd) {
        let Some(p) = self.children.procs.get_mut(&serial) else {
            return;
        };
        let Some(key) = p.io.pipes[fd.index()].take() else {
            return;
        };
        if let Some(entry) = self.entries.get_mut(key) {
            if let Entry::Pipe(pipe) = std::mem::replace(entry, Entry::Closed) {
                let reg = self.poll.registry();
                let _ = match pipe.end {
                    PipeEnd::Read(mut r) => reg.deregister(&mut r),
                    PipeEnd::Write(mut s) => reg.deregister(&mut s),
                };
            }
            self.to_free.push(key);
        }
        self.with_process(serial, |p, t| p.child_connection_lost(t, fd));
    }

    /// `process_ended` once the child is reaped and its pipes are closed; then it is gone.
    fn maybe_ended(&mut self, serial: u64) {
        let Some(p) = self.children.procs.get(&serial) else {
            return;
        };
        let Some(st) = p.io.status else { return };
        if p.io.pipes.iter().any(Option::is_some) || p.proto.is_none() {
            return;
        }
        if let Some(mut p) = self.children.procs.remove(&serial)
            && let Some(mut proto) = p.proto.take()
        {
            let mut t = ProcessTransport {
                id: p.id,
                io: &mut p.io,
                handle: &self.handle,
            };
            proto.process_ended(&mut t, st);
        }
    }

    /// A pipe is ready.
    pub(crate) fn pipe_ready(&mut self, key: usize, hup: bool) {
        let Some(Entry::Pipe(pipe)) = self.entries.get(key) else {
            return;
        };
        let (serial, fd) = (pipe.serial, pipe.fd);
        if fd == ChildFd::Stdin {
            if hup {
                // The child closed its stdin (or exited): what is queued can never go.
                self.close_pipe(serial, fd);
            } else {
                self.flush_stdin(serial);
            }
            self.maybe_ended(serial);
            return;
        }
        self.pipe_read(key, READS_PER_TURN);
    }

    /// Reads a stdout or stderr pipe until it is empty (or `budget` reads, then it is read
    /// again next turn), hands the data to the protocol, closes it at EOF.
    fn pipe_read(&mut self, key: usize, budget: usize) {
        for _ in 0..budget {
            let Some(Entry::Pipe(Pipe {
                serial,
                fd,
                end: PipeEnd::Read(r),
            })) = self.entries.get_mut(key)
            else {
                return;
            };
            let (serial, fd) = (*serial, *fd);
            match r.read(&mut self.read_buf) {
                Ok(0) => {
                    self.close_pipe(serial, fd);
                    return;
                }
                Ok(n) => {
                    let data = std::mem::take(&mut self.read_buf);
                    self.with_process(serial, |p, t| p.child_data_received(t, fd, &data[..n]));
                    self.read_buf = data;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.close_pipe(serial, fd);
                    return;
                }
            }
        }
        self.children.redrive.push(key);
    }

    /// Pipes that had more to read than one turn's budget.
    pub(crate) fn redrive_pipes(&mut self) {
        for key in std::mem::take(&mut self.children.redrive) {
            self.pipe_read(key, READS_PER_TURN);
            self.run_commands();
        }
    }

    /// SIGCHLD: reaps every child of ours that exited and tells its protocol.
    pub(crate) fn reap(&mut self) {
        for (id, st) in self.handle.reap_children() {
            if self.children.procs.contains_key(&id.serial) {
                self.exited(id.serial, st);
            } else {
                self.children.early.insert(id.serial, st);
            }
            self.run_commands();
        }
    }

    /// As PID 1 (or a subreaper): reaps the exited children that are neither ours nor
    /// claimed by other code (orphans of our children's children), so no zombie piles up.
    pub(crate) fn reap_orphans(&mut self) {
        if self.children.orphans {
            let own = self.handle.own_child_pids();
            let n = crate::process::reap_orphans(|pid| own.contains(&pid));
            if n > 0 {
                log::debug!(target: "twistrs.reactor", "reaped {n} orphaned process(es)");
            }
        }
    }

    /// A child was reaped: what it left in its pipes first, then `process_exited`.
    fn exited(&mut self, serial: u64, st: ProcessStatus) {
        let Some(p) = self.children.procs.get(&serial) else {
            return;
        };
        let pipes = [p.io.pipes[1], p.io.pipes[2]];
        for key in pipes.into_iter().flatten() {
            // A grandchild may keep writing: take what is there now, bounded.
            self.pipe_read(key, 64);
        }
        // Only now: with the status set, closing the last pipe would end the child before
        // `process_exited`.
        if let Some(p) = self.children.procs.get_mut(&serial) {
            p.io.status = Some(st);
        }
        self.with_process(serial, |p, t| p.process_exited(t, st));
    }

    /// Asks every running child's protocol to stop (the start of a drain).
    pub(crate) fn stop_children(&mut self) {
        let running: Vec<u64> = self
            .children
            .procs
            .iter()
            .filter(|(_, p)| p.io.status.is_none())
            .map(|(s, _)| *s)
            .collect();
        for s in running {
            self.with_process(s, |p, t| p.stop_requested(t));
            self.run_commands();
        }
    }

    /// The end of a drain: SIGKILL to every child still there, and a bounded wait for them.
    pub(crate) fn kill_children(&mut self) {
        let left: Vec<ProcessId> = self
            .handle
            .0
            .children
            .borrow()
            .values()
            .map(|c| c.id)
            .collect();
        if left.is_empty() {
            return;
        }
        log::info!(target: "twistrs.reactor",
            "Shutdown deadline passed: killing {} child process(es).", left.len());
        for id in &left {
            let _ = self.handle.stop_signal(*id, libc::SIGKILL);
        }
        let end = Instant::now() + KILL_WAIT;
        while self.handle.running_processes() > 0 && Instant::now() < end {
            self.reap();
            if self.handle.running_processes() > 0 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for c in self.handle.0.children.borrow().values() {
            log::error!(target: "twistrs.reactor",
                "PID {} did not exit within {} s of SIGKILL; left behind.",
                c.id.pid, KILL_WAIT.as_secs());
        }
    }

    /// Queued stdin output from `Handle::write_to_process`.
    pub(crate) fn write_to_process(&mut self, id: ProcessId, data: Vec<u8>) {
        if let Some(p) = self.children.procs.get_mut(&id.serial)
            && p.io.pipes[0].is_some()
            && !p.io.close_stdin
        {
            p.io.stdin_out.feed(&data);
            self.flush_stdin(id.serial);
        }
    }

    /// `Handle::close_process_stdin`.
    pub(crate) fn close_process_stdin(&mut self, id: ProcessId) {
        if let Some(p) = self.children.procs.get_mut(&id.serial) {
            p.io.close_stdin = true;
            self.flush_stdin(id.serial);
            self.maybe_ended(id.serial);
        }
    }
}
