//! SIGHUP asks for a policy reload, as it asks most Unix daemons to reread their
//! configuration. The set is rebuilt even when no file changed, so an operator can retry a
//! reload that was refused for a reason outside the files (the memory budget).

use crate::reload::ReloadHandle;

/// Reloads the policies through `handle` on every SIGHUP, for the life of the process. Must be
/// called on a Tokio runtime; when the handler cannot be installed, that is logged and SIGHUP
/// keeps its default action.
pub fn listen(handle: ReloadHandle) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        tracing::info!(signal = "SIGHUP", "reloading the policies");
                        handle.reload_policies();
                    }
                });
            }
            Err(error) => tracing::error!(%error, "cannot listen for SIGHUP"),
        }
    }
    #[cfg(not(unix))]
    drop(handle);
}
