//! [`PolicyHost`]: the chain of plugins in force, evaluated per request (deny wins), swapped
//! atomically when the set or a plugin changes, with the folder watcher that triggers it.
//!
//! A reload compiles and probes the whole new set off the request path; only a set that
//! loads completely replaces the old one. Requests already evaluating keep the chain they
//! started with (they hold it), so a reload never fails a request.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use wasmtime::Engine;

use crate::epoch::{Clock, Running};
use crate::error::{Error, Result};
use crate::plugin::bindings::sovereign::policy::host::SignatureRefusal;
use crate::plugin::{CompileCache, Outcome, Plugin};
use crate::seen::SeenStore;
use crate::set::PolicySet;
use crate::watch::Interest;
use crate::{Decision, Denial, Request};

/// Receives what the host does, for metrics.
pub trait Observer: Send + Sync {
    /// The recorder for one plugin of a set about to be put in force (at start or by a
    /// reload), `shadow` when it is a shadow plugin. Asked once per load, so a request
    /// records its evaluations on handles already resolved: no label lookup, lock or
    /// reference count shared by the ingress threads on the request path. An observer can
    /// export the plugin's series here, before its first request.
    fn plugin(&self, plugin: &str, shadow: bool) -> Arc<dyn Recorder>;
    /// A reload finished.
    fn reloaded(&self, ok: bool);
}

/// Records one plugin's evaluations (see [`Observer::plugin`]).
pub trait Recorder: Send + Sync {
    /// The plugin was evaluated in `seconds` with `outcome`.
    fn evaluated(&self, outcome: Evaluation, seconds: f64);
}

/// How one evaluation of a plugin ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    /// It admitted the request.
    Allow,
    /// It refused it.
    Deny,
    /// It trapped, ran past its deadline or hit its memory limit.
    Error,
}

impl Evaluation {
    /// Every outcome, in label order.
    pub const ALL: [Evaluation; 3] = [Evaluation::Allow, Evaluation::Deny, Evaluation::Error];

    /// The metric label: `allow`, `deny` or `error`.
    pub fn label(self) -> &'static str {
        match self {
            Evaluation::Allow => "allow",
            Evaluation::Deny => "deny",
            Evaluation::Error => "error",
        }
    }
}

/// An observer that records nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    fn plugin(&self, _: &str, _: bool) -> Arc<dyn Recorder> {
        Arc::new(NoObserver)
    }
    fn reloaded(&self, _: bool) {}
}

impl Recorder for NoObserver {
    fn evaluated(&self, _: Evaluation, _: f64) {}
}

/// The answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Allow, or the first enforcing denial.
    pub decision: Decision,
    /// `name@version` of the plugin that denied.
    pub by: Option<String>,
    /// With a denial: the plugin said it refuses the request's signature, and why.
    pub signature_refusal: Option<SignatureRefusal>,
}

struct Chain {
    /// Each plugin with the recorder of its evaluations.
    plugins: Vec<(Plugin, Arc<dyn Recorder>)>,
}

/// The policy chain in force and what reloads it.
pub struct PolicyHost {
    engine: Engine,
    clock: Clock,
    set_path: PathBuf,
    plugin_dir: PathBuf,
    seen: Arc<SeenStore>,
    current: ArcSwap<Chain>,
    observer: Arc<dyn Observer>,
    compiled: CompileCache,
    /// Compiled plugins on disk, shared with other processes (optional).
    disk_cache: Option<wasmtime::Cache>,
    /// The names in the watched folders that are the policy, refreshed per read of the set.
    interest: Arc<Interest>,
}

impl PolicyHost {
    /// Loads the set at `set_path` (plugins from `plugin_dir`); a set that does not load
    /// is an error (the sidecar does not start without its policies).
    pub fn new(
        set_path: &Path,
        plugin_dir: &Path,
        seen: Arc<SeenStore>,
        observer: Arc<dyn Observer>,
    ) -> Result<Self> {
        Self::build(set_path, plugin_dir, seen, observer, None)
    }

    /// As [`Self::new`], with compiled plugins kept in and taken from `dir` (wasmtime's
    /// compilation cache, keyed by the plugin's bytes, the engine's settings and this CPU's
    /// features), so a plugin compiled once, e.g. when a container image is built, is not
    /// compiled again by every process that loads it. `dir` holds native code this process
    /// will run: it must be as trusted as the binary, so one that group or others may
    /// write is refused ([`crate::cache::check_dir`]). A cache that cannot be written (a
    /// read-only image folder) still serves what it holds.
    pub fn with_compile_cache(
        set_path: &Path,
        plugin_dir: &Path,
        seen: Arc<SeenStore>,
        observer: Arc<dyn Observer>,
        dir: &Path,
    ) -> Result<Self> {
        Self::build(set_path, plugin_dir, seen, observer, Some(dir))
    }

    fn build(
        set_path: &Path,
        plugin_dir: &Path,
        seen: Arc<SeenStore>,
        observer: Arc<dyn Observer>,
        compile_cache: Option<&Path>,
    ) -> Result<Self> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let disk_cache = compile_cache.map(crate::cache::open).transpose()?;
        config.cache(disk_cache.clone());
        let engine = Engine::new(&config).map_err(|e| Error::Engine(format!("{e:#}")))?;
        let clock = Clock::start(&engine)?;
        let compiled = CompileCache::default();
        let set = PolicySet::load(set_path, plugin_dir)?;
        let interest = Arc::new(Interest::new(set_path, Some(&set)));
        let chain = load_chain(
            &engine,
            &clock.running(),
            set,
            &seen,
            &compiled,
            observer.as_ref(),
        )?;
        Ok(Self {
            interest,
            compiled,
            disk_cache,
            engine,
            clock,
            set_path: set_path.to_owned(),
            plugin_dir: plugin_dir.to_owned(),
            seen,
            current: ArcSwap::from_pointee(chain),
            observer,
        })
    }

    /// The set file in force.
    pub fn set_path(&self) -> &Path {
        &self.set_path
    }

    /// Whether the epoch clock that enforces plugin deadlines is parked because no plugin
    /// has run for [`crate::epoch::IDLE`] (the next call wakes it).
    pub fn clock_asleep(&self) -> bool {
        self.clock.asleep()
    }

    /// Compiled plugin versions held (those of the set in force after a reload).
    pub fn compiled_versions(&self) -> usize {
        self.compiled.len()
    }

    /// With a compile cache: how many compilations it answered and how many it did not
    /// (each then compiled here).
    pub fn compile_cache_counts(&self) -> Option<(usize, usize)> {
        self.disk_cache
            .as_ref()
            .map(|c| (c.cache_hits(), c.cache_misses()))
    }

    /// `name@version` of each plugin in force, in order.
    pub fn plugins(&self) -> Vec<String> {
        self.current
            .load()
            .plugins
            .iter()
            .map(|(p, _)| format!("{}@{}", p.entry.name, p.version))
            .collect()
    }

    /// Evaluates `request`: plugins in order, skipping those whose routes do not cover
    /// the path; the first enforcing denial wins; shadow plugins are counted, never enforced.
    ///
    /// `request.path` must be canonical ([`request_path::canonical_path`]), as the sidecar
    /// hands it over: routes and plugins compare that one form. A path that is not is
    /// denied (400) before any plugin runs, so a caller's mistake cannot become a way
    /// around a route.
    pub fn evaluate(&self, request: &Request) -> Verdict {
        if !request_path::is_canonical(&request.path) {
            tracing::error!(path = %request.path, "policy asked about a path not in canonical form; denied");
            return Verdict {
                decision: Decision::Deny(Denial {
                    status: 400,
                    reason: "request path is not in canonical form".into(),
                }),
                by: Some("policy-host".into()),
                signature_refusal: None,
            };
        }
        // A guard, not a clone of the Arc: two threads bumping one reference count on
        // every request bounce its cache line between the cores.
        let chain = self.current.load();
        for (plugin, recorder) in &chain.plugins {
            let entry = &plugin.entry;
            if !entry.routes.is_empty() && !entry.routes.iter().any(|r| r.covers(&request.path)) {
                continue;
            }
            let started = Instant::now();
            let outcome = plugin.call(request);
            let (counted, denial, refusal) = match outcome {
                Outcome::Decided(Decision::Allow, _) => (Evaluation::Allow, None, None),
                Outcome::Decided(Decision::Deny(d), refusal) => {
                    (Evaluation::Deny, Some(d), refusal)
                }
                Outcome::Failed(why) => {
                    tracing::warn!(plugin = %entry.name, version = %plugin.version, reason = %why, fail_open = entry.fail_open, "policy plugin failed");
                    let denial = (!entry.fail_open).then(|| Denial {
                        status: 403,
                        reason: "refused by policy".into(),
                    });
                    (Evaluation::Error, denial, None)
                }
            };
            recorder.evaluated(counted, started.elapsed().as_secs_f64());
            if let Some(denial) = denial {
                if entry.shadow {
                    tracing::info!(plugin = %entry.name, version = %plugin.version, reason = %denial.reason, path = %request.path, "shadow policy would deny");
                    continue;
                }
                return Verdict {
                    decision: Decision::Deny(denial),
                    by: Some(format!("{}@{}", entry.name, plugin.version)),
                    signature_refusal: refusal,
                };
            }
        }
        Verdict {
            decision: Decision::Allow,
            by: None,
            signature_refusal: None,
        }
    }

    /// Loads the set again and swaps it in if it loads completely; otherwise the chain in
    /// force stays and the error says why.
    pub fn reload(&self) -> Result<()> {
        let started = Instant::now();
        let set = PolicySet::load(&self.set_path, &self.plugin_dir);
        self.interest.update(&self.set_path, set.as_ref().ok());
        match set.and_then(|set| {
            load_chain(
                &self.engine,
                &self.clock.running(),
                set,
                &self.seen,
                &self.compiled,
                self.observer.as_ref(),
            )
        }) {
            Ok(chain) => {
                let in_use: Vec<[u8; 32]> = chain.plugins.iter().map(|(p, _)| p.digest).collect();
                self.compiled.retain(&in_use);
                self.current.store(Arc::new(chain));
                self.observer.reloaded(true);
                tracing::info!(set = %self.set_path.display(), plugins = ?self.plugins(), took = ?started.elapsed(), "policy set reloaded");
                Ok(())
            }
            Err(e) => {
                self.observer.reloaded(false);
                tracing::error!(set = %self.set_path.display(), error = %e, "policy reload refused; the previous set keeps serving");
                Err(e)
            }
        }
    }

    /// Watches the set's folder and the plugin folder (folders, not files: an atomic
    /// replace swaps the file's inode) and reloads `debounce` after the last change to
    /// the set file or a plugin file it names; other files in those folders are not
    /// changes (see the `watch` module).
    pub fn watch(self: &Arc<Self>, debounce: Duration) -> Result<Watcher> {
        use notify::Watcher as _;
        let (tx, rx) = mpsc::channel::<()>();
        let interest = Arc::clone(&self.interest);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| interest.matters(&e)) {
                    let _ = tx.send(());
                }
            })
            .map_err(|e| Error::Watch {
                path: self.set_path.clone(),
                detail: e.to_string(),
            })?;
        let set_dir = self
            .set_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        let mut dirs = vec![set_dir];
        if !dirs.contains(&self.plugin_dir) {
            dirs.push(self.plugin_dir.clone());
        }
        for dir in &dirs {
            watcher
                .watch(dir, notify::RecursiveMode::NonRecursive)
                .map_err(|e| Error::Watch {
                    path: dir.clone(),
                    detail: e.to_string(),
                })?;
        }
        let host = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("policy-reload".into())
            .spawn(move || {
                // Wait for a change, then for `debounce` of quiet, then reload.
                while rx.recv().is_ok() {
                    while rx.recv_timeout(debounce).is_ok() {}
                    let Some(host) = host.upgrade() else { return };
                    let _ = host.reload();
                }
            })
            .map_err(|e| Error::Watch {
                path: self.set_path.clone(),
                detail: e.to_string(),
            })?;
        Ok(Watcher { _inner: watcher })
    }
}

/// Keeps the folder watch alive; dropping it stops reloading.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

fn load_chain(
    engine: &Engine,
    clock: &Running,
    set: PolicySet,
    seen: &Arc<SeenStore>,
    compiled: &CompileCache,
    observer: &dyn Observer,
) -> Result<Chain> {
    let plugins = set
        .plugins
        .into_iter()
        .map(|entry| Plugin::load(engine, clock, entry, Arc::clone(seen), compiled))
        .collect::<Result<Vec<_>>>()?;
    // Recorders only once the whole set has loaded: a refused set exports nothing.
    let plugins = plugins
        .into_iter()
        .map(|p| {
            let recorder = observer.plugin(&p.entry.name, p.entry.shadow);
            (p, recorder)
        })
        .collect();
    Ok(Chain { plugins })
}
