//! # policy-host
//!
//! The sidecar's admission step runs WebAssembly policy plugins: components of the
//! `policy` world in `wit/policy.wit`, listed in a policy set (`policies/<name>.toml`).
//! This crate compiles them with wasmtime, runs them under a deadline and a memory limit,
//! gives them the host imports (clock, shared seen-before store, log, settings, and a way
//! to say that a denial refuses the signature), and swaps in a changed set atomically when
//! its folder changes.
//!
//! | module | what |
//! |---|---|
//! | [`set`] | the policy-set file: plugins in order, settings, fail mode, routes, shadow |
//! | [`plugin`] | one compiled plugin: checked at load (world, probe call), a pool of reusable instances, one call |
//! | [`chain`] | [`PolicyHost`]: the current chain, evaluation (deny wins), reload, the folder watcher |
//! | [`epoch`] | the clock behind plugin deadlines: ticks while plugins run, parks when idle |
//! | [`cache`] | the compile cache on disk (optional): which folders may hold compiled plugins |
//! | [`seen`] | the seen-before store plugins share (replay windows) |
//! | `watch` | which file events in the watched folders are the policy (the set, its plugins) |
//! | [`error`] | [`Error`] |
//!
//! Fail closed: a trap, a deadline or a memory limit is a denial unless the set marks that
//! plugin `fail = "open"`; a set that does not load (missing file, not a component, wrong
//! world, a probe that traps) is refused and the previous one keeps serving.
//!
//! Instances are reused across requests (a fresh instance costs ~20 us, a call on a warm
//! one about 2 us, most of it lowering the request record: `benches/policy.rs`): one
//! request at a time per instance, an instance that trapped is thrown away. A plugin's own memory therefore persists between the requests it serves; state
//! shared across requests belongs in the host's seen-before store.

pub mod cache;
pub mod chain;
pub mod epoch;
pub mod error;
pub mod plugin;
pub mod seen;
pub mod set;
mod watch;

pub use chain::{Evaluation, Observer, PolicyHost, Recorder, Verdict};
pub use error::{Error, Result};
pub use plugin::bindings::sovereign::policy::host::SignatureRefusal;
pub use plugin::bindings::sovereign::policy::types::{
    Decision, Denial, Peer, Request, SignatureFacts,
};

/// Where the build put the plugins in `plugins/` (`target/plugins/wasm32-wasip2/release`).
pub const BUILT_PLUGIN_DIR: &str = env!("BUILT_PLUGIN_DIR");
