//! `defer_to_thread`'s worker pool: blocking work (fsync, DNS, ...) off the reactor thread.
//!
//! Workers start lazily, so a process that forks to daemonize does so while single-threaded.
//! Each result comes back tagged with its job id; the worker wakes the reactor through mio's
//! `Waker`, and the reactor fires the matching `Deferred` on its own thread.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub(crate) type JobResult = Box<dyn Any + Send>;
type Job = (u64, Box<dyn FnOnce() -> JobResult + Send>);

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
    workers: Vec<JoinHandle<()>>,
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

    pub(crate) fn submit(&mut self, id: u64, job: Box<dyn FnOnce() -> JobResult + Send>) {
        self.shared
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back((id, job));
        if self.shared.idle.load(Ordering::SeqCst) == 0 && self.workers.len() < self.max {
            let shared = self.shared.clone();
            match std::thread::Builder::new()
                .name("twistrs-worker".into())
                .spawn(move || worker(shared))
            {
                Ok(h) => self.workers.push(h),
                Err(e) => {
                    log::error!(target: "twistrs.threads", "cannot start a worker thread: {e}")
                }
            }
        }
        self.shared.jobs_cv.notify_one();
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
        let deadline = Instant::now() + timeout;
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
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.jobs_cv.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

fn worker(shared: Arc<Shared>) {
    loop {
        let job = {
            let mut q = shared.jobs.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(j) = q.pop_front() {
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
        let Some((id, f)) = job else { return };
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
