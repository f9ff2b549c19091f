//! Builds the policy plugins in `plugins/` as WebAssembly components (`wasm32-wasip2`,
//! release) into `target/plugins/`, so `cargo build` and `cargo test` always have them,
//! and tells the crate where they are (`BUILT_PLUGIN_DIR`). A nested cargo with its own
//! target directory, as wasmtime's own test programs are built.

use std::path::PathBuf;
use std::process::Command;

/// The shipped plugins, and the fixtures the tests load (never deployed).
const PLUGINS: [&str; 7] = [
    "admin-only-revoke",
    "replay-window",
    "route-allow-list",
    "misbehave",
    "wrong-world",
    "contract-0-1-0",
    "contract-newer",
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let root = manifest
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    for watched in ["plugins", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = root.join("target").join("plugins");
    let dir = target_dir.join("wasm32-wasip2").join("release");
    // The fuzz build (nightly, which has no wasm target here) loads no plugin: it sets this
    // to skip the nested build. Nothing else should.
    println!("cargo:rerun-if-env-changed=POLICY_HOST_SKIP_PLUGIN_BUILD");
    if std::env::var_os("POLICY_HOST_SKIP_PLUGIN_BUILD").is_some() {
        println!("cargo:rustc-env=BUILT_PLUGIN_DIR={}", dir.display());
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&target_dir);
    for p in PLUGINS {
        cmd.args(["-p", p]);
    }
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not for
    // wasm; the plugins are linted natively as workspace members.
    for var in [
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_WRAPPER",
        "CLIPPY_ARGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_MAKEFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "building the policy plugins failed ({s}); is the wasm32-wasip2 target installed? (rustup target add wasm32-wasip2)"
        ),
        Err(e) => panic!("cannot run cargo to build the policy plugins: {e}"),
    }
    println!("cargo:rustc-env=BUILT_PLUGIN_DIR={}", dir.display());
}
