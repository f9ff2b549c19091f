//! The engine's epoch clock: what turns a plugin's `timeout_ms` into a wall-clock deadline.
//!
//! wasmtime stops a call once the engine's epoch passes the deadline its store was given
//! ([`wasmtime::Store::set_epoch_deadline`], counted from the epoch at the time it is set).
//! A thread advances the epoch every [`TICK`] while a plugin may be running. When no call
//! has started for [`IDLE`] and none is in flight, the thread parks, so an idle sidecar is
//! not woken 200 times a second; the next call wakes it before it runs. A parked clock
//! cannot cut a deadline short (the epoch does not move) nor leave one unenforced (the call
//! that needs it wakes it first).
//!
//! The hand-off between a call and a clock about to park is the classic two-flag one: the
//! call counts itself in, then looks at `asleep`; the clock sets `asleep`, then looks at
//! the counts. With sequentially consistent operations on both sides, at least one of them
//! sees the other's write: either the clock sees the call and stays awake, or the call sees
//! `asleep` and unparks the clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

use crate::error::{Error, Result};

/// How often the epoch advances while the clock runs; deadlines are rounded up to whole
/// ticks, so a call is stopped within one tick of its deadline. At 1 ms an idle sidecar
/// woke 1000 times a second (100 sidecars of a testnet on two cores, 100 000), for a
/// precision the 100 ms default timeout does not need.
pub const TICK: Duration = Duration::from_millis(5);

/// How long the clock keeps ticking after the last call started before it parks.
pub const IDLE: Duration = Duration::from_secs(1);

/// Owns the clock thread; dropping it stops the thread.
pub(crate) struct Clock {
    shared: Arc<Shared>,
    thread: Thread,
}

/// What a call uses to keep the clock running while it runs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Running {
    shared: Arc<Shared>,
    thread: Thread,
}

struct Shared {
    /// Calls started and finished; equal when none is in flight.
    started: AtomicU64,
    finished: AtomicU64,
    /// The clock is parked (or about to park) until a call wakes it.
    asleep: AtomicBool,
    /// The owner is gone: the thread exits.
    stopped: AtomicBool,
}

impl Clock {
    /// Starts the clock for `engine`. Without it no deadline would ever fire, so a thread
    /// that cannot be started is an error, not a warning.
    pub(crate) fn start(engine: &Engine) -> Result<Self> {
        let shared = Arc::new(Shared {
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            asleep: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        });
        let weak = engine.weak();
        let state = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("policy-epoch".into())
            .spawn(move || tick(&weak, &state))
            .map_err(|e| {
                Error::Engine(format!(
                    "cannot start the epoch clock thread that enforces plugin deadlines: {e} \
                     (raise the process or thread limit)"
                ))
            })?;
        Ok(Self {
            shared,
            thread: handle.thread().clone(),
        })
    }

    /// The handle calls hold.
    pub(crate) fn running(&self) -> Running {
        Running {
            shared: Arc::clone(&self.shared),
            thread: self.thread.clone(),
        }
    }

    /// Whether the clock is parked: no call for [`IDLE`].
    pub(crate) fn asleep(&self) -> bool {
        self.shared.asleep.load(Ordering::SeqCst)
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.thread.unpark();
    }
}

impl Running {
    /// Counts a call in (waking the clock if it sleeps) until the guard drops. Take it
    /// before the store's deadline is set.
    pub(crate) fn enter(&self) -> InFlight<'_> {
        self.shared.started.fetch_add(1, Ordering::SeqCst);
        if self.shared.asleep.load(Ordering::SeqCst)
            && self.shared.asleep.swap(false, Ordering::SeqCst)
        {
            self.thread.unpark();
        }
        InFlight(&self.shared)
    }
}

/// One call in flight; see [`Running::enter`].
pub(crate) struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.finished.fetch_add(1, Ordering::Release);
    }
}

/// The clock thread: tick while calls come, park once they stop, exit with the engine.
fn tick(engine: &wasmtime::EngineWeak, shared: &Shared) {
    let idle_ticks = (IDLE.as_millis() / TICK.as_millis()).max(1);
    let mut quiet = 0u128;
    let mut last = shared.started.load(Ordering::SeqCst);
    loop {
        std::thread::sleep(TICK);
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        engine.increment_epoch();
        drop(engine);

        let started = shared.started.load(Ordering::SeqCst);
        let idle = started == last && shared.finished.load(Ordering::Acquire) == started;
        last = started;
        quiet = if idle { quiet + 1 } else { 0 };
        if quiet < idle_ticks {
            continue;
        }
        quiet = 0;
        shared.asleep.store(true, Ordering::SeqCst);
        if shared.started.load(Ordering::SeqCst) != started {
            // A call came in while the clock was deciding; it may not have seen `asleep`.
            shared.asleep.store(false, Ordering::SeqCst);
            continue;
        }
        while shared.asleep.load(Ordering::SeqCst) && !shared.stopped.load(Ordering::SeqCst) {
            std::thread::park();
        }
    }
}
