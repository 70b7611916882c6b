//! What the server holds right now, and the most it has held: open connections, requests
//! admitted and request body bytes reserved.
//!
//! Each is a gauge that remembers its peak, so that a test can show a bound held through a
//! whole attack without sampling at the right instant, and a log line can say how close to a
//! limit the server came.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// A count of something held, with its high-water mark.
#[derive(Debug, Default)]
pub struct Gauge {
    current: AtomicU64,
    peak: AtomicU64,
}

impl Gauge {
    /// Adds `n` until the returned guard is dropped.
    pub fn hold(self: &Arc<Self>, n: u64) -> Held {
        let now = self.current.fetch_add(n, Ordering::AcqRel) + n;
        self.peak.fetch_max(now, Ordering::AcqRel);
        Held {
            gauge: Arc::clone(self),
            n,
        }
    }

    /// How much is held now.
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// The most ever held at once.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Acquire)
    }
}

/// A share of a [`Gauge`], given back on drop.
#[derive(Debug)]
pub struct Held {
    gauge: Arc<Gauge>,
    n: u64,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.current.fetch_sub(self.n, Ordering::AcqRel);
    }
}

/// The server's gauges.
#[derive(Debug, Default)]
pub struct Load {
    /// Open connections, from accept to close.
    pub connections: Arc<Gauge>,
    /// Review requests admitted: from their slot until their answer is ready.
    pub requests: Arc<Gauge>,
    /// Request body bytes reserved from the budget.
    pub body_bytes: Arc<Gauge>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_gives_back_on_drop_and_keeps_its_peak() {
        let gauge = Arc::new(Gauge::default());
        let a = gauge.hold(3);
        let b = gauge.hold(4);
        assert_eq!((gauge.current(), gauge.peak()), (7, 7));
        drop(a);
        let _c = gauge.hold(1);
        assert_eq!((gauge.current(), gauge.peak()), (5, 7));
        drop(b);
        assert_eq!(gauge.current(), 1);
    }
}
