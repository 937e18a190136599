//! `defer_to_thread`'s worker pool: blocking work (fsync, DNS, ...) off the reactor thread.
//!
//! Workers start lazily, so a process that forks to daemonize does so while single-threaded.
//! Each result comes back tagged with its job id; the worker wakes the reactor through mio's
//! `Waker`, and the reactor fires the matching `Deferred` on its own thread.
//!
//! Dropping the pool (the process is exiting) runs the jobs already queued and waits for them,
//! except jobs submitted as abandonable (a name lookup, a zone parse to swap in): those not
//! started are dropped, and a thread running one is left to die with the process, so a stop is
//! never held up by work whose result nobody will read.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) type JobResult = Box<dyn Any + Send>;
type Job = (u64, bool, Box<dyn FnOnce() -> JobResult + Send>);

struct Shared {
    jobs: Mutex<VecDeque<Job>>,
    jobs_cv: Condvar,
    results: Mutex<Vec<(u64, JobResult)>>,
    results_cv: Condvar,
    waker: Option<Arc<mio::Waker>>,
    shutdown: AtomicBool,
    idle: AtomicUsize,
}

/// A small pool of worker threads.
pub(crate) struct ThreadPool {
    shared: Arc<Shared>,
    /// Each thread, and whether the job it runs now may be abandoned.
    workers: Vec<(JoinHandle<()>, Arc<AtomicBool>)>,
    max: usize,
}

impl ThreadPool {
    pub(crate) fn new(max: usize, waker: Option<Arc<mio::Waker>>) -> Self {
        ThreadPool {
            shared: Arc::new(Shared {
                jobs: Mutex::new(VecDeque::new()),
                jobs_cv: Condvar::new(),
                results: Mutex::new(Vec::new()),
                results_cv: Condvar::new(),
                waker,
                shutdown: AtomicBool::new(false),
                idle: AtomicUsize::new(0),
            }),
            workers: Vec::new(),
            max: max.max(1),
        }
    }

    /// Queues `job`. An `abandonable` one is not waited for when the pool is dropped.
    pub(crate) fn submit(
        &mut self,
        id: u64,
        abandonable: bool,
        job: Box<dyn FnOnce() -> JobResult + Send>,
    ) {
        let queued = {
            let mut q = self
                .shared
                .jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            q.push_back((id, abandonable, job));
            q.len()
        };
        // More jobs waiting than threads waiting: one more thread. An idle thread already
        // woken for an earlier job still counts as idle until it takes that job, so "no idle
        // thread" alone let a burst of jobs queue behind one thread, each waiting for the last.
        if queued > self.shared.idle.load(Ordering::SeqCst) && self.workers.len() < self.max {
            self.spawn_worker();
        }
        self.shared.jobs_cv.notify_one();
    }

    /// Starts one more worker thread (logged if it cannot be started).
    fn spawn_worker(&mut self) {
        let shared = self.shared.clone();
        let running_abandonable = Arc::new(AtomicBool::new(false));
        let flag = running_abandonable.clone();
        match std::thread::Builder::new()
            .name("twistrs-worker".into())
            .spawn(move || worker(shared, flag))
        {
            Ok(h) => self.workers.push((h, running_abandonable)),
            Err(e) => log::error!(target: "twistrs.threads", "cannot start a worker thread: {e}"),
        }
    }

    /// Results that are ready, without blocking.
    pub(crate) fn take_results(&self) -> Vec<(u64, JobResult)> {
        std::mem::take(
            &mut *self
                .shared
                .results
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Blocks until at least one result is ready or `timeout` passes.
    pub(crate) fn wait_results(&self, timeout: Duration) -> Vec<(u64, JobResult)> {
        let deadline = crate::timer::later(Instant::now(), timeout);
        let mut r = self
            .shared
            .results
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while r.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            r = self
                .shared
                .results_cv
                .wait_timeout(r, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        std::mem::take(&mut *r)
    }
}

impl Drop for ThreadPool {
    /// Waits for the jobs that must finish (a mail delivery); abandonable ones not started
    /// are dropped, and a thread busy with one is not joined: the process ends it as it exits.
    /// Jobs that must finish still queued are first waited out of the queue (by a thread
    /// started for them if every thread is busy with abandonable work, which may never end).
    fn drop(&mut self) {
        let queued = {
            let mut q = self
                .shared
                .jobs
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            q.retain(|(_, abandonable, _)| !abandonable);
            self.shared.shutdown.store(true, Ordering::SeqCst);
            !q.is_empty()
        };
        self.shared.jobs_cv.notify_all();
        if queued
            && self
                .workers
                .iter()
                .all(|(_, running_abandonable)| running_abandonable.load(Ordering::SeqCst))
        {
            // If it cannot start, a busy thread takes the queue once its job ends.
            self.spawn_worker();
        }
        while !self
            .shared
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        // A thread sets its flag under the queue's lock as it takes a job, and the queue is
        // empty now: each flag tells what its thread runs to the end.
        for (w, running_abandonable) in self.workers.drain(..) {
            if !running_abandonable.load(Ordering::SeqCst) {
                let _ = w.join();
            }
        }
    }
}

fn worker(shared: Arc<Shared>, running_abandonable: Arc<AtomicBool>) {
    loop {
        let job = {
            let mut q = shared.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            running_abandonable.store(false, Ordering::SeqCst);
            loop {
                if let Some(j) = q.pop_front() {
                    running_abandonable.store(j.1, Ordering::SeqCst);
                    break Some(j);
                }
                if shared.shutdown.load(Ordering::SeqCst) {
                    break None;
                }
                shared.idle.fetch_add(1, Ordering::SeqCst);
                q = shared
                    .jobs_cv
                    .wait(q)
                    .unwrap_or_else(PoisonError::into_inner);
                shared.idle.fetch_sub(1, Ordering::SeqCst);
            }
        };
        let Some((id, _, f)) = job else { return };
        let out = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(v) => v,
            Err(_) => Box::new(crate::error::Failure::msg("worker job panicked")) as JobResult,
        };
        shared
            .results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, out));
        shared.results_cv.notify_all();
        if let Some(w) = &shared.waker {
            let _ = w.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Jobs submitted in a burst while one thread is idle run side by side, each on a thread
    /// of its own (up to the pool's size), not one after another on the idle one.
    #[test]
    fn a_burst_of_jobs_gets_threads_of_its_own() {
        let mut pool = ThreadPool::new(4, None);
        // One thread, idle once its first job is done.
        pool.submit(0, false, Box::new(|| Box::new(()) as JobResult));
        let first = pool.wait_results(Duration::from_secs(10));
        assert_eq!(first.len(), 1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.shared.idle.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Three jobs that each wait (2 s at most) until all three have started.
        let started = Arc::new(AtomicUsize::new(0));
        for id in 1..=3 {
            let started = started.clone();
            pool.submit(
                id,
                false,
                Box::new(move || {
                    started.fetch_add(1, Ordering::SeqCst);
                    let until = Instant::now() + Duration::from_secs(2);
                    while started.load(Ordering::SeqCst) < 3 && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Box::new(started.load(Ordering::SeqCst)) as JobResult
                }),
            );
        }
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while seen.len() < 3 && Instant::now() < deadline {
            for (_, r) in pool.wait_results(Duration::from_secs(1)) {
                seen.push(*r.downcast::<usize>().expect("a count"));
            }
        }
        assert_eq!(seen.len(), 3);
        assert!(
            seen.iter().all(|&n| n == 3),
            "a job ran before the others had started: {seen:?}"
        );
    }

    /// A job that must finish, queued while every thread runs an abandonable job that does not
    /// end (a reload blocked opening a FIFO): it still runs whole, and the drop returns
    /// without waiting for the stuck one.
    #[test]
    fn a_job_that_must_finish_behind_a_stuck_abandonable_one_runs_and_drop_returns() {
        let mut pool = ThreadPool::new(1, None);
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        pool.submit(
            1,
            true,
            Box::new(move || {
                let _ = started_tx.send(());
                let _ = release_rx.recv_timeout(Duration::from_secs(60));
                Box::new(()) as JobResult
            }),
        );
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the abandonable job started");
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        pool.submit(
            2,
            false,
            Box::new(move || {
                std::thread::sleep(Duration::from_millis(50));
                flag.store(true, Ordering::SeqCst);
                Box::new(()) as JobResult
            }),
        );
        let (dropped_tx, dropped_rx) = mpsc::channel();
        std::thread::spawn(move || {
            drop(pool);
            let _ = dropped_tx.send(());
        });
        let dropped = dropped_rx.recv_timeout(Duration::from_secs(10));
        let _ = release_tx.send(());
        assert!(
            dropped.is_ok(),
            "the drop waited for the stuck abandonable job"
        );
        assert!(
            done.load(Ordering::SeqCst),
            "the job that must finish ran before the drop returned"
        );
    }
}
