//! The audit's progress bar: objects judged out of objects listed so far, on standard error,
//! and only when standard error is a terminal, so logs and CI output stay clean.
//!
//! The total grows as pages arrive; while a kind is still being paged through, the API
//! server's `remainingItemCount` is added as an estimate, so the bar does not jump to full
//! after each page.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether a bar is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Draw on standard error when it is a terminal.
    Terminal,
    /// Never draw.
    Hidden,
}

/// The bar, cheap to clone and share between the listing and the judging.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
    /// The objects the current listing still announces (`remainingItemCount`), counted in the
    /// bar's length until their pages arrive.
    announced: Arc<AtomicU64>,
}

impl Progress {
    /// A bar drawn as `display` asks and standard error allows.
    pub fn new(display: Display) -> Self {
        let drawn = display == Display::Terminal && std::io::stderr().is_terminal();
        if !drawn {
            return Self {
                bar: ProgressBar::hidden(),
                announced: Arc::default(),
            };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        // The template is a literal known to be valid; a bad one would only lose the styling.
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} {bar:30} {pos}/{len} objects judged  {msg}")
        {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar,
            announced: Arc::default(),
        }
    }

    /// A page of `objects` was listed from `what`, with `remaining` more announced (none on a
    /// listing's last page).
    pub fn listed(&self, what: &str, objects: usize, remaining: Option<u64>) {
        let objects = u64::try_from(objects).unwrap_or(u64::MAX);
        let announced = remaining.unwrap_or(0);
        // The last announcement is now part listed and part announced again.
        let before = self.announced.swap(announced, Ordering::Relaxed);
        let known = self.bar.length().unwrap_or(0).saturating_sub(before);
        self.bar
            .set_length(known.saturating_add(objects).saturating_add(announced));
        self.bar.set_message(what.to_owned());
    }

    /// `n` more objects were judged.
    pub fn judged(&self, n: usize) {
        self.bar.inc(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_what_was_listed_plus_what_is_announced() {
        let progress = Progress::new(Display::Hidden);
        let total = |p: &Progress| p.bar.length();
        // Five Pods over pages of two: the first page announces three more.
        progress.listed("Pod", 2, Some(3));
        assert_eq!(total(&progress), Some(5));
        progress.listed("Pod", 2, Some(1));
        assert_eq!(total(&progress), Some(5));
        progress.listed("Pod", 1, None);
        assert_eq!(total(&progress), Some(5));
        // The next kind adds to it.
        progress.listed("Deployment.apps", 2, None);
        assert_eq!(total(&progress), Some(7));
        progress.judged(7);
        assert_eq!(progress.bar.position(), 7);
    }
}
