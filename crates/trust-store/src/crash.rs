//! Crash points: named places where a fault-injection test makes the process die at once,
//! as `kill -9` would, to check what the next start finds there.
//!
//! The windows worth a crash are the ones between two durable steps: a certificate signed
//! but not yet recorded, a revocation recorded but its CRL not yet published, a file half
//! written, a renewed key saved before its certificate. Each caller names its window with
//! [`point`]; the end-to-end tests (`tests/e2e/faults.rs`) start the real process with
//! `FAILPOINTS=<name>=return` (the syntax of the `fail` crate, e.g. `1*off->return` to
//! pass the first time and die the second) and assert it died by SIGKILL there.
//!
//! Compiled to nothing unless the `failpoints` feature is on, which only the end-to-end
//! tests turn on (through a dev-dependency); a release build has no crash points.

/// Reads `FAILPOINTS` once, at start-up. A no-op without the `failpoints` feature.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}

/// Dies here, by SIGKILL to itself, when the test armed `name`.
#[inline]
pub fn point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| kill_self());
    let _ = name;
}

/// As [`point`], for the window `what` of writing the file `path`: the point's name is
/// `<what>:<file name>` (e.g. `half-written:crl.der`).
#[inline]
pub fn file_point(what: &str, path: &std::path::Path) {
    #[cfg(feature = "failpoints")]
    {
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        point(&format!("{what}:{file}"));
    }
    let _ = (what, path);
}

#[cfg(feature = "failpoints")]
fn kill_self() {
    use rustix::process::{Signal, getpid, kill_process};
    let _ = kill_process(getpid(), Signal::KILL);
    // SIGKILL cannot be caught; should sending it have failed, abort is the nearest thing.
    std::process::abort();
}
