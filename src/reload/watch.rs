//! Change notices for a set of directories: inotify (through `notify`) where it works, a slow
//! poll always, and bursts of events folded into one notice.
//!
//! Directories, not files, are watched. Kubernetes updates a Secret or ConfigMap volume by
//! writing a new timestamped directory and renaming a `..data` symlink over the old one
//! (kubelet's AtomicWriter), so the file a pod names (`tls.crt -> ..data/tls.crt`) is never
//! written, and a watch on it would see nothing, or follow a directory that is then deleted. A
//! non-recursive watch on the volume's directory sees the rename. Watches are set up again
//! after every notice, so a watched path that is itself a symlink follows its new target.
//!
//! A notice only says that something may have changed: the reader compares content
//! ([`super::fingerprint`]) before rebuilding anything. Access events (our own reads) are not
//! notices. Where inotify cannot be used (no instances left, a filesystem without it) the poll
//! still notices every change, within [`POLL`].

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// How long the directories must stay quiet before a burst of events becomes a notice: a
/// kubelet update is a handful of events within a millisecond, an editor's save a few more.
pub const QUIET: Duration = Duration::from_millis(100);

/// The longest a notice waits for quiet: a directory written to without pause still gets
/// noticed.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// The poll that notices changes inotify missed or could not report. Kubelet itself refreshes
/// mounted Secrets and ConfigMaps only every minute or so, so a change is picked up at most
/// this much later than Kubernetes delivers it.
pub const POLL: Duration = Duration::from_secs(30);

/// Why a notice was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The filesystem reported events in a watched directory.
    Events,
    /// The poll's timer fired.
    Poll,
}

/// Watches a set of directories and hands out notices.
pub struct Watch {
    dirs: BTreeSet<PathBuf>,
    /// `None` when inotify is unavailable: only the poll gives notices then.
    watcher: Option<RecommendedWatcher>,
    events: mpsc::Receiver<()>,
    poll: Interval,
}

impl Watch {
    /// Watches `dirs`. Must be called on a Tokio runtime (the poll is a Tokio timer).
    pub fn new(dirs: impl IntoIterator<Item = PathBuf>) -> Self {
        // One slot: events arriving while a notice is pending fold into it.
        let (tx, events) = mpsc::channel(1);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match &event {
                Ok(event) => !matches!(event.kind, EventKind::Access(_)),
                // An overflowed queue or a failing watch: something may have changed.
                Err(_) => true,
            };
            if relevant {
                // Full means a notice is already pending; closed means nobody listens.
                let _ = tx.try_send(());
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(error) => {
                tracing::warn!(%error, poll_secs = POLL.as_secs(), "cannot watch files; polling for changes instead");
                None
            }
        };
        let mut poll = tokio::time::interval_at(Instant::now() + POLL, POLL);
        poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut watch = Self {
            dirs: dirs.into_iter().collect(),
            watcher,
            events,
            poll,
        };
        watch.arm();
        watch
    }

    /// Watches `dirs` from now on instead of the directories given so far.
    pub fn set_dirs(&mut self, dirs: impl IntoIterator<Item = PathBuf>) {
        let dirs: BTreeSet<PathBuf> = dirs.into_iter().collect();
        if dirs == self.dirs {
            return;
        }
        if let Some(watcher) = &mut self.watcher {
            for gone in self.dirs.difference(&dirs) {
                let _ = watcher.unwatch(gone);
            }
        }
        self.dirs = dirs;
        self.arm();
    }

    /// Waits for the next notice: a burst of events once the directories have been quiet for
    /// [`QUIET`] (at most [`MAX_DELAY`] after its first event), or the poll.
    pub async fn next(&mut self) -> Notice {
        let notice = tokio::select! {
            Some(()) = self.events.recv(), if self.watcher.is_some() => Notice::Events,
            _ = self.poll.tick() => Notice::Poll,
        };
        if notice == Notice::Events {
            let deadline = Instant::now() + MAX_DELAY;
            loop {
                let quiet_at = (Instant::now() + QUIET).min(deadline);
                match tokio::time::timeout_at(quiet_at, self.events.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
        }
        self.arm();
        notice
    }

    /// (Re)establishes a watch on every directory, following symlinks to their current target.
    fn arm(&mut self) {
        let Some(watcher) = &mut self.watcher else {
            return;
        };
        // Watching a directory watched already only refreshes it, and raises no event.
        for dir in &self.dirs {
            if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), %error, poll_secs = POLL.as_secs(), "cannot watch a directory; its changes are noticed by polling");
            }
        }
    }
}
