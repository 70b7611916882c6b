//! The shutdown signal: one future that completes on the first SIGTERM or SIGINT.
//!
//! Kubernetes sends SIGTERM when it stops a pod; an operator at a terminal sends SIGINT. Both
//! mean the same thing here: turn unready, stop accepting, drain, exit 0.

/// Completes when the process is asked to stop. If a handler cannot be installed the error is
/// logged and that signal is never observed (the other still works).
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!(signal = "SIGINT", "shutting down"),
        () = term => tracing::info!(signal = "SIGTERM", "shutting down"),
    }
}
