//! `Deferred`: a one-shot result with callback and errback chains, as in Twisted.
//!
//! Callbacks run in the order they were added; each gets the result of the previous one, and an
//! `Err` skips callbacks until an errback handles it. Callbacks added after the result arrived run
//! at once. A failure nobody handled is logged when the last handle is dropped, as Twisted does
//! ("Unhandled error in Deferred").

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::rc::Rc;

use crate::error::Failure;

/// A step of the chain; `None` from a step means it took the result for good (`consume`).
type Step<T> = Box<dyn FnOnce(Result<T, Failure>) -> Option<Result<T, Failure>>>;

struct Inner<T> {
    result: Option<Result<T, Failure>>,
    fired: bool,
    running: bool,
    chain: VecDeque<Step<T>>,
}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        if let Some(Err(f)) = &self.result {
            log::error!(target: "twistrs.deferred", "Unhandled error in Deferred: {f}");
        }
    }
}

/// A result that will arrive later. Cloning gives another handle to the same result.
pub struct Deferred<T: 'static>(Rc<RefCell<Inner<T>>>);

impl<T> Clone for Deferred<T> {
    fn clone(&self) -> Self {
        Deferred(self.0.clone())
    }
}

/// `callback` or `errback` was called on a Deferred that already had its result.
#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyCalled;

impl fmt::Display for AlreadyCalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Deferred already called")
    }
}

impl std::error::Error for AlreadyCalled {}

impl<T: 'static> Default for Deferred<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: 'static> Deferred<T> {
    /// A Deferred waiting for its result.
    pub fn new() -> Self {
        Deferred(Rc::new(RefCell::new(Inner {
            result: None,
            fired: false,
            running: false,
            chain: VecDeque::new(),
        })))
    }

    /// A Deferred that already succeeded (Twisted's `succeed`).
    pub fn succeed(value: T) -> Self {
        let d = Self::new();
        let _ = d.callback(value);
        d
    }

    /// A Deferred that already failed (Twisted's `fail`).
    pub fn fail(f: Failure) -> Self {
        let d = Self::new();
        let _ = d.errback(f);
        d
    }

    /// Delivers the result and runs the chain.
    pub fn callback(&self, value: T) -> Result<(), AlreadyCalled> {
        self.fire(Ok(value))
    }

    /// Delivers a failure and runs the chain.
    pub fn errback(&self, failure: Failure) -> Result<(), AlreadyCalled> {
        self.fire(Err(failure))
    }

    fn fire(&self, r: Result<T, Failure>) -> Result<(), AlreadyCalled> {
        {
            let mut i = self.0.borrow_mut();
            if i.fired {
                return Err(AlreadyCalled);
            }
            i.fired = true;
            i.result = Some(r);
        }
        self.run();
        Ok(())
    }

    /// True once `callback` or `errback` was called.
    pub fn called(&self) -> bool {
        self.0.borrow().fired
    }

    /// Adds a step that sees either outcome (Twisted's `addBoth`).
    pub fn add_both(&self, f: impl FnOnce(Result<T, Failure>) -> Result<T, Failure> + 'static) {
        self.0
            .borrow_mut()
            .chain
            .push_back(Box::new(move |r| Some(f(r))));
        self.run();
    }

    /// Ends the chain: `f` takes the outcome by value (a file, a lock: something that cannot
    /// be handed back), and steps added later never run. A failure given to `f` counts as
    /// handled.
    pub fn consume(&self, f: impl FnOnce(Result<T, Failure>) + 'static) {
        self.0.borrow_mut().chain.push_back(Box::new(move |r| {
            f(r);
            None
        }));
        self.run();
    }

    /// Adds a callback and an errback as one step (Twisted's `addCallbacks`).
    pub fn add_callbacks(
        &self,
        cb: impl FnOnce(T) -> Result<T, Failure> + 'static,
        eb: impl FnOnce(Failure) -> Result<T, Failure> + 'static,
    ) {
        self.add_both(move |r| match r {
            Ok(v) => cb(v),
            Err(f) => eb(f),
        })
    }

    /// Adds a callback; failures pass it by.
    pub fn add_callback(&self, cb: impl FnOnce(T) -> Result<T, Failure> + 'static) {
        self.add_both(move |r| r.and_then(cb))
    }

    /// Adds an errback; successes pass it by.
    pub fn add_errback(&self, eb: impl FnOnce(Failure) -> Result<T, Failure> + 'static) {
        self.add_both(move |r| r.or_else(eb))
    }

    /// Runs queued steps if the result is here; re-entrant calls just queue.
    fn run(&self) {
        {
            let mut i = self.0.borrow_mut();
            if !i.fired || i.running {
                return;
            }
            i.running = true;
        }
        loop {
            let (step, r) = {
                let mut i = self.0.borrow_mut();
                match i.chain.pop_front() {
                    Some(step) => match i.result.take() {
                        Some(r) => (step, r),
                        None => {
                            i.running = false;
                            return;
                        }
                    },
                    None => {
                        i.running = false;
                        return;
                    }
                }
            };
            let out = step(r);
            self.0.borrow_mut().result = out;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn chain_runs_in_order_and_errors_skip_callbacks() {
        let d: Deferred<i32> = Deferred::new();
        let seen = Rc::new(RefCell::new(Vec::new()));
        let s = seen.clone();
        d.add_callback(move |v| {
            s.borrow_mut().push(format!("cb1 {v}"));
            Err(Failure::msg("boom"))
        });
        let s = seen.clone();
        d.add_callback(move |v| {
            s.borrow_mut().push(format!("cb2 {v}"));
            Ok(v)
        });
        let s = seen.clone();
        d.add_errback(move |f| {
            s.borrow_mut().push(format!("eb {f}"));
            Ok(7)
        });
        assert!(seen.borrow().is_empty(), "nothing runs before the result");
        d.callback(1).unwrap();
        assert_eq!(*seen.borrow(), vec!["cb1 1", "eb boom"]);
        let s = seen.clone();
        d.add_callback(move |v| {
            s.borrow_mut().push(format!("late {v}"));
            Ok(v)
        });
        assert_eq!(seen.borrow().last().unwrap(), "late 7");
        assert_eq!(d.callback(2), Err(AlreadyCalled));
        assert_eq!(d.errback(Failure::msg("x")), Err(AlreadyCalled));
    }

    #[test]
    fn reentrant_add_from_a_callback_runs_after() {
        let d: Deferred<u8> = Deferred::new();
        let hits = Rc::new(Cell::new(0));
        let (d2, h) = (d.clone(), hits.clone());
        d.add_callback(move |v| {
            let h2 = h.clone();
            d2.add_callback(move |v| {
                h2.set(h2.get() + 10);
                Ok(v + 1)
            });
            h.set(h.get() + 1);
            Ok(v)
        });
        d.callback(1).unwrap();
        assert_eq!(hits.get(), 11);
        assert!(d.called());
    }

    #[test]
    fn consume_takes_the_outcome_and_ends_the_chain() {
        let d: Deferred<String> = Deferred::new();
        let got = Rc::new(RefCell::new(String::new()));
        let g = got.clone();
        d.add_callback(|v| Ok(v + "!"));
        d.consume(move |r| *g.borrow_mut() = r.unwrap_or_default());
        d.add_callback(|_| panic!("never runs after consume"));
        d.callback("owned".into()).unwrap();
        assert_eq!(*got.borrow(), "owned!");
    }

    #[test]
    fn succeed_and_fail_are_already_fired() {
        let got = Rc::new(Cell::new(0));
        let g = got.clone();
        Deferred::succeed(5).add_callback(move |v| {
            g.set(v);
            Ok(v)
        });
        assert_eq!(got.get(), 5);
        let g = got.clone();
        Deferred::<i32>::fail(Failure::msg("no")).add_errback(move |_| {
            g.set(-1);
            Ok(0)
        });
        assert_eq!(got.get(), -1);
    }
}
