//! Running the shards of one window on several threads.
//!
//! The coordinator (the thread that calls [`Pool::window`]) publishes a
//! window's end, then works beside the pool's threads: each claims the next
//! unclaimed shard with a compare-and-swap on a counter that carries the
//! window's number, so a thread late from the previous window can never
//! claim a shard of this one, runs it to the window's end, and counts it
//! done. The coordinator returns when every shard is done.
//!
//! Waiting: a thread with nothing to claim spins for a few tens of
//! microseconds (a window is about that much work), then parks until woken
//! (by the last shard done, or by the next window). Parking matters on a
//! busy machine: a thread that spun while the thread it waits for was
//! preempted would keep that thread off the core.
//!
//! On a machine busy with other work, threads that meet every few tens of
//! microseconds lose more to waiting for a preempted partner than they gain:
//! [`Chooser`] times blocks of windows run on the pool and on the
//! coordinator alone, and keeps to whichever is faster at the moment,
//! trying the other now and then.
//!
//! Which thread runs which shard changes nothing in what a shard computes:
//! a shard only touches its own state during a window.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long a waiting thread spins before it parks.
const SPIN: Duration = Duration::from_micros(40);
/// A parked thread looks again after this long even if nobody woke it.
const NAP: Duration = Duration::from_micros(500);

/// The shared state of one run's pool.
pub(super) struct Pool {
    /// Window number in the high 32 bits, next shard index in the low 32.
    next: AtomicU64,
    /// The current window's number (threads wait for it to change).
    epoch: AtomicU64,
    /// The current window's end (exclusive), simulated µs.
    end: AtomicU64,
    /// Shards finished in the current window.
    done: AtomicUsize,
    /// Set once: the threads leave.
    stop: AtomicBool,
    /// A shard's work panicked on some thread.
    panicked: AtomicBool,
    /// Threads parked (or about to park).
    sleepers: AtomicUsize,
    /// Every thread of the run, the coordinator's included, to wake them.
    threads: Mutex<Vec<Thread>>,
}

impl Pool {
    pub(super) fn new() -> Self {
        Pool {
            next: AtomicU64::new(u64::from(u32::MAX)),
            epoch: AtomicU64::new(0),
            end: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            threads: Mutex::new(vec![std::thread::current()]),
        }
    }

    /// Runs `work(shard, end)` once for every shard, on this thread and the
    /// pool's, and returns when all are done.
    pub(super) fn window<S>(
        &self,
        shards: &[Mutex<S>],
        end: u64,
        work: &(impl Fn(&mut S, u64) + Sync),
    ) {
        let epoch = self.epoch.load(Ordering::Relaxed) + 1;
        self.done.store(0, Ordering::Relaxed);
        self.end.store(end, Ordering::Relaxed);
        self.next.store(epoch << 32, Ordering::Release);
        self.epoch.store(epoch, Ordering::SeqCst);
        self.wake();
        self.claim_all(epoch, shards, work);
        self.wait_for(|| self.done.load(Ordering::SeqCst) >= shards.len());
        assert!(
            !self.panicked.load(Ordering::SeqCst),
            "a thread of the auction's run panicked (its message is above)"
        );
    }

    /// The loop of one pool thread, until [`Pool::stop`].
    pub(super) fn serve<S>(&self, shards: &[Mutex<S>], work: &(impl Fn(&mut S, u64) + Sync)) {
        if let Ok(mut t) = self.threads.lock() {
            t.push(std::thread::current());
        }
        let mut seen = 0;
        loop {
            self.wait_for(|| {
                self.stop.load(Ordering::SeqCst) || self.epoch.load(Ordering::SeqCst) != seen
            });
            if self.stop.load(Ordering::SeqCst) {
                return;
            }
            seen = self.epoch.load(Ordering::Acquire);
            self.claim_all(seen, shards, work);
        }
    }

    /// Tells the pool's threads to leave.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    fn claim_all<S>(&self, epoch: u64, shards: &[Mutex<S>], work: &(impl Fn(&mut S, u64) + Sync)) {
        loop {
            let cur = self.next.load(Ordering::Acquire);
            let i = (cur & u64::from(u32::MAX)) as usize;
            if cur >> 32 != epoch || i >= shards.len() {
                return;
            }
            if self
                .next
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // A successful claim of this window's counter happens after the
            // coordinator stored this window's end.
            let end = self.end.load(Ordering::Acquire);
            // Counted done even if `work` panics, so that the coordinator
            // does not wait for it forever; it then panics itself.
            let _done = Done(self, shards.len());
            let mut s = shards[i].lock().unwrap_or_else(|e| e.into_inner());
            work(&mut s, end);
        }
    }

    /// Spins, then parks, until `ready()`.
    fn wait_for(&self, ready: impl Fn() -> bool) {
        let start = Instant::now();
        let mut spins = 0u32;
        while !ready() {
            spins += 1;
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            if !ready() {
                std::thread::park_timeout(NAP);
            }
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Wakes the parked threads, if any.
    fn wake(&self) {
        if self.sleepers.load(Ordering::SeqCst) > 0
            && let Ok(t) = self.threads.lock()
        {
            for t in t.iter() {
                t.unpark();
            }
        }
    }
}

/// Stops the pool when dropped.
pub(super) struct StopOnDrop<'a>(pub(super) &'a Pool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Counts one shard done when dropped (after its work, or while a panic
/// unwinds through it).
struct Done<'a>(&'a Pool, usize);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.panicked.store(true, Ordering::SeqCst);
        }
        if self.0.done.fetch_add(1, Ordering::SeqCst) + 1 == self.1 {
            self.0.wake();
        }
    }
}

/// Windows in one timed block.
const BLOCK: u32 = 2_048;
/// One block in this many tries the mode that is slower at the moment.
const PROBE_EVERY: u32 = 8;

/// Chooses, block by block, between running windows on the pool and on the
/// coordinator alone, by the wall time each took lately.
pub(super) struct Chooser {
    enabled: bool,
    parallel: bool,
    windows: u32,
    blocks: u32,
    started: Instant,
    /// Smoothed seconds per block: [alone, parallel].
    cost: [Option<f64>; 2],
}

impl Chooser {
    /// `enabled`: more than one thread and more than one shard.
    pub(super) fn new(enabled: bool) -> Self {
        Chooser {
            enabled,
            parallel: enabled,
            windows: 0,
            blocks: 0,
            started: Instant::now(),
            cost: [None, None],
        }
    }

    /// Whether the next window runs on the pool.
    pub(super) fn parallel(&self) -> bool {
        self.parallel
    }

    /// One window done.
    pub(super) fn tick(&mut self) {
        if !self.enabled {
            return;
        }
        self.windows += 1;
        if self.windows < BLOCK {
            return;
        }
        let took = self.started.elapsed().as_secs_f64();
        let m = usize::from(self.parallel);
        self.cost[m] = Some(self.cost[m].map_or(took, |c| 0.7 * c + 0.3 * took));
        self.blocks += 1;
        let best = match self.cost {
            [Some(alone), Some(par)] => par <= alone,
            // Measure each mode once before choosing.
            [None, _] => false,
            [_, None] => true,
        };
        self.parallel = if self.blocks.is_multiple_of(PROBE_EVERY) {
            !best
        } else {
            best
        };
        self.windows = 0;
        self.started = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::AssertUnwindSafe;

    fn run_windows(threads: usize, windows: u64, shards: &[Mutex<(u64, u64)>]) {
        let pool = Pool::new();
        // Each shard counts its windows and checks it is given them in order.
        let work = |s: &mut (u64, u64), end: u64| {
            assert_eq!(s.1 + 1, end, "windows in order");
            s.0 += 1;
            s.1 = end;
        };
        std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(|| pool.serve(shards, &work));
            }
            let _stop = StopOnDrop(&pool);
            for end in 1..=windows {
                pool.window(shards, end, &work);
            }
        });
    }

    #[test]
    fn every_shard_runs_once_in_every_window_on_any_number_of_threads() {
        for threads in [1, 2, 3] {
            let shards: Vec<Mutex<(u64, u64)>> = (0..7).map(|_| Mutex::new((0, 0))).collect();
            run_windows(threads, 2_000, &shards);
            for s in &shards {
                assert_eq!(s.lock().unwrap().0, 2_000, "{threads} threads");
            }
        }
    }

    #[test]
    fn a_panicking_shard_ends_the_run_instead_of_hanging_it() {
        let pool = Pool::new();
        let shards: Vec<Mutex<u32>> = (0..8).map(Mutex::new).collect();
        let work = |s: &mut u32, end: u64| {
            if *s == 5 && end == 3 {
                panic!("shard 5 breaks in window 3");
            }
        };
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
            std::thread::scope(|scope| {
                scope.spawn(|| pool.serve(&shards, &work));
                let _stop = StopOnDrop(&pool);
                for end in 1..10 {
                    pool.window(&shards, end, &work);
                }
            })
        }));
        assert!(r.is_err(), "the panic reaches the caller");
    }
}
