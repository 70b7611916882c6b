//! The shutdown signals: SIGTERM or SIGINT asks the server to stop; a second one asks it to
//! hurry.
//!
//! Kubernetes sends SIGTERM when it stops a pod; an operator at a terminal sends SIGINT. Both
//! mean the same thing here: turn unready, keep serving through the shutdown delay while
//! endpoints update, stop accepting, drain, exit 0. A second signal ends the delay at once
//! (an operator pressing Ctrl-C twice); Kubernetes sends only one.

use std::future::Future;

use tokio::sync::watch;

/// Two futures over one listener for SIGTERM and SIGINT: the first completes on the first
/// signal, the second on the second. Must be called on a Tokio runtime; a handler that cannot
/// be installed is logged and that signal is never observed (the other still works).
pub fn signals() -> (impl Future<Output = ()>, impl Future<Output = ()>) {
    let (count, seen) = watch::channel(0u32);
    tokio::spawn(async move {
        let mut signals = Listener::install();
        loop {
            let name = signals.next().await;
            tracing::info!(signal = name, "shutting down");
            count.send_modify(|n| *n += 1);
        }
    });
    let nth = |n: u32| {
        let mut seen = seen.clone();
        async move {
            // The sender lives as long as the listening task, which never ends.
            let _ = seen.wait_for(|count| *count >= n).await;
        }
    };
    (nth(1), nth(2))
}

/// SIGTERM and SIGINT streams, kept for the life of the process so that no signal is missed
/// between two waits.
struct Listener {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Listener {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let install = |kind: SignalKind, name: &str| match signal(kind) {
                Ok(s) => Some(s),
                Err(error) => {
                    tracing::error!(%error, "cannot listen for {name}");
                    None
                }
            };
            Self {
                term: install(SignalKind::terminate(), "SIGTERM"),
                int: install(SignalKind::interrupt(), "SIGINT"),
            }
        }
        #[cfg(not(unix))]
        Self {}
    }

    /// Waits for the next signal and names it.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                let received = match s {
                    Some(s) => s.recv().await.is_some(),
                    None => false,
                };
                if !received {
                    std::future::pending::<()>().await;
                }
            }
            tokio::select! {
                () = recv(&mut self.term) => "SIGTERM",
                () = recv(&mut self.int) => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            "SIGINT"
        }
    }
}
