//! # log-sampling
//!
//! Log lines that a client can cause, at a rate no client controls.
//!
//! Every refused handshake and refused request is counted exactly in the metrics; what
//! reaches the log is sampled here. Without it, a revoked peer looping on its keep-alive
//! connection, anyone sending handshakes from an unknown CA, or anyone posting bad
//! enrollments writes a line per attempt: thousands of lines a second, a full disk for the
//! price of a loop.
//!
//! The rule, per event kind (a type implementing [`EventKind`]: the sidecar's and the
//! authority's `Event`) and window ([`WINDOW`]): the first event from each remote address
//! is logged in full, for up to [`DETAILED_PER_WINDOW`] addresses (events with no address,
//! such as the local app's calls out, take a place each); any other event of that kind is
//! only counted (`tpm_log_lines_suppressed_total{event}`), and when the window closes one
//! summary line per kind says how many were not logged. So each kind writes at most
//! `DETAILED_PER_WINDOW + 1` lines per window, however many addresses or connections the
//! client uses, and the kinds are a closed set.
//!
//! Why not a general log-throttling layer (tracing-throttle): the bound has to hold
//! against an adversary by construction. A layer that keys on field values gives each new
//! source port a new key, and one that fails open under load gives the attacker the log
//! back; here only the paths a client can drive are sampled, the key is ours, and the bound
//! is a constant.
//!
//! ```
//! # use log_sampling::{EventKind, LogSampler};
//! #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
//! enum Event { Refused }
//! impl EventKind for Event {
//!     const ALL: &'static [Self] = &[Self::Refused];
//!     fn label(self) -> &'static str { "refused" }
//! }
//! let sampler = LogSampler::<Event>::new(&prometheus::Registry::new()).unwrap();
//! let from = Some("10.0.0.1".parse().unwrap());
//! assert!(sampler.admit(Event::Refused, from));   // logged in full
//! assert!(!sampler.admit(Event::Refused, from));  // counted, summed up later
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use prometheus::{IntCounterVec, Opts, Registry};

/// A closed set of event kinds, each with its `event` label.
pub trait EventKind: Copy + Ord + Send + 'static {
    /// Every kind (their series start at zero).
    const ALL: &'static [Self];
    /// The `event` label, and the `event` field of a summary line.
    fn label(self) -> &'static str;
}

/// How long a sampling window lasts; also how often the summary lines come.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Events of one kind logged in full per window (each from a different remote address).
pub const DETAILED_PER_WINDOW: usize = 5;

/// Decides which client-caused events are logged in full; counts the rest.
pub struct LogSampler<E: EventKind> {
    window: Duration,
    detailed: usize,
    open: Mutex<Window<E>>,
    suppressed: IntCounterVec,
}

/// The window being filled.
struct Window<E> {
    opened: Instant,
    kinds: BTreeMap<E, Tally>,
}

/// One kind's events in the window.
#[derive(Default)]
struct Tally {
    /// Addresses logged in full (at most `detailed`; `None` for an event with none, which
    /// cannot be told from another and takes a place of its own each time).
    logged: Vec<Option<IpAddr>>,
    /// Events only counted.
    suppressed: u64,
}

impl<E: EventKind> LogSampler<E> {
    /// A sampler with the default window and budget, its counter registered in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        Self::with_budget(registry, WINDOW, DETAILED_PER_WINDOW)
    }

    /// A sampler logging `detailed` events per kind per `window`.
    pub fn with_budget(
        registry: &Registry,
        window: Duration,
        detailed: usize,
    ) -> prometheus::Result<Self> {
        let suppressed = IntCounterVec::new(
            Opts::new(
                "tpm_log_lines_suppressed_total",
                "Client-caused events counted but not logged one by one (sampling), by event kind",
            ),
            &["event"],
        )?;
        registry.register(Box::new(suppressed.clone()))?;
        // Every series exists from the start, so `increase()` sees the first suppression.
        for event in E::ALL {
            suppressed.with_label_values(&[event.label()]);
        }
        Ok(Self {
            window,
            detailed,
            open: Mutex::new(Window {
                opened: Instant::now(),
                kinds: BTreeMap::new(),
            }),
            suppressed,
        })
    }

    /// Whether to log this event of `kind` from `from` in full. `false` means: do not log
    /// it (it is counted, and the window's summary line will include it).
    pub fn admit(&self, kind: E, from: Option<IpAddr>) -> bool {
        self.admit_at(kind, from, Instant::now())
    }

    /// Closes the window if it is over, logging its summary lines. Called periodically so
    /// the summary of an attack that stopped still appears.
    pub fn flush(&self) {
        self.roll_over(Instant::now());
    }

    /// Closes the open window now, whatever its age, logging its summary lines (at
    /// shutdown: nothing counted goes unsaid).
    pub fn flush_all(&self) {
        let opened = self
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .opened;
        self.roll_over(opened + self.window);
    }

    /// Writes the summary lines on time until `stop` completes, then closes the last
    /// window: the summary of an attack that stopped comes at most one and a half windows
    /// after its end, and nothing counted goes unsaid at shutdown.
    pub async fn summarise_until(&self, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.window / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = tick.tick() => self.flush(),
            }
        }
        self.flush_all();
    }

    fn admit_at(&self, kind: E, from: Option<IpAddr>, now: Instant) -> bool {
        self.roll_over(now);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let tally = open.kinds.entry(kind).or_default();
        let new_address = from.is_none() || !tally.logged.contains(&from);
        if tally.logged.len() < self.detailed && new_address {
            tally.logged.push(from);
            return true;
        }
        tally.suppressed += 1;
        drop(open);
        self.suppressed.with_label_values(&[kind.label()]).inc();
        false
    }

    /// Starts a new window when the open one is over, and logs what the old one
    /// suppressed (outside the lock).
    fn roll_over(&self, now: Instant) {
        let closed = {
            let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
            if now.duration_since(open.opened) < self.window {
                return;
            }
            open.opened = now;
            std::mem::take(&mut open.kinds)
        };
        for (kind, tally) in closed {
            if tally.suppressed > 0 {
                tracing::warn!(
                    event = kind.label(),
                    not_logged = tally.suppressed,
                    logged = tally.logged.len(),
                    window_seconds = self.window.as_secs(),
                    "more events of this kind than are logged one by one; \
                     tpm_log_lines_suppressed_total counts them"
                );
            }
        }
    }

    /// Events of `kind` counted but not logged, since start.
    pub fn suppressed(&self, kind: E) -> u64 {
        self.suppressed.with_label_values(&[kind.label()]).get()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use prometheus::Encoder as _;

    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    enum Event {
        TlsHandshakeRefused,
        TlsHandshakeTimeout,
        UpstreamFailed,
    }

    impl EventKind for Event {
        const ALL: &'static [Self] = &[
            Self::TlsHandshakeRefused,
            Self::TlsHandshakeTimeout,
            Self::UpstreamFailed,
        ];
        fn label(self) -> &'static str {
            match self {
                Self::TlsHandshakeRefused => "tls_handshake_refused",
                Self::TlsHandshakeTimeout => "tls_handshake_timeout",
                Self::UpstreamFailed => "upstream_failed",
            }
        }
    }

    type Sampler = LogSampler<Event>;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn each_address_is_logged_once_per_window_up_to_the_budget() {
        let sampler = Sampler::with_budget(&Registry::new(), WINDOW, 3).unwrap();
        let t0 = Instant::now();
        // One address looping: its first event only.
        assert!(sampler.admit_at(Event::TlsHandshakeRefused, ip(1), t0));
        for _ in 0..1000 {
            assert!(!sampler.admit_at(Event::TlsHandshakeRefused, ip(1), t0));
        }
        // New addresses: two more in full, then none, however many addresses come.
        assert!(sampler.admit_at(Event::TlsHandshakeRefused, ip(2), t0));
        assert!(sampler.admit_at(Event::TlsHandshakeRefused, ip(3), t0));
        for last in 4..=200 {
            assert!(!sampler.admit_at(Event::TlsHandshakeRefused, ip(last), t0));
        }
        assert_eq!(sampler.suppressed(Event::TlsHandshakeRefused), 1000 + 197);
        // Kinds have budgets of their own.
        assert!(sampler.admit_at(Event::TlsHandshakeTimeout, ip(1), t0));
        // Events with no address (the app's own calls out) use the budget one by one.
        for _ in 0..3 {
            assert!(sampler.admit_at(Event::UpstreamFailed, None, t0));
        }
        assert!(!sampler.admit_at(Event::UpstreamFailed, None, t0));
    }

    #[test]
    fn a_new_window_logs_again_and_the_count_keeps_everything() {
        let sampler = Sampler::with_budget(&Registry::new(), WINDOW, 1).unwrap();
        let t0 = Instant::now();
        assert!(sampler.admit_at(Event::TlsHandshakeRefused, ip(1), t0));
        assert!(!sampler.admit_at(Event::TlsHandshakeRefused, ip(1), t0 + WINDOW / 2));
        let next = t0 + WINDOW;
        assert!(sampler.admit_at(Event::TlsHandshakeRefused, ip(1), next));
        assert!(!sampler.admit_at(Event::TlsHandshakeRefused, ip(1), next));
        assert_eq!(sampler.suppressed(Event::TlsHandshakeRefused), 2);
    }

    #[test]
    fn the_counter_is_exported() {
        let registry = Registry::new();
        let sampler = Sampler::with_budget(&registry, WINDOW, 0).unwrap();
        assert!(!sampler.admit(Event::TlsHandshakeRefused, None));
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("tpm_log_lines_suppressed_total{event=\"tls_handshake_refused\"} 1"),
            "{text}"
        );
    }
}
