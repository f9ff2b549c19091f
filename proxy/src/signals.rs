//! The process's signals: SIGTERM and Ctrl-C stop a long-running command (draining
//! first); SIGHUP asks the sidecar to reload. Only the binary listens for signals; the
//! libraries take a cancellation token and a [`sidecar::Reload`] handle instead.

use tokio_util::sync::CancellationToken;

/// Cancels `shutdown` on SIGTERM or Ctrl-C.
pub async fn wait_for_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: draining"),
    }
    shutdown.cancel();
}

/// Asks `reload` for a reload on every SIGHUP, until the process ends. Where SIGHUP cannot
/// be listened for, says so once: the certificate and the policy then reload on their own
/// schedule only.
pub async fn forward_hangups(reload: sidecar::Reload) {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(mut hangups) => {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the node certificate and the policy sets");
                reload.request();
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; the certificate and the policy reload on their own schedule only");
        }
    }
}
