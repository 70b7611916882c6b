//! The bounds of one evaluation: a memory cap enforced by a resource limiter, and a time cap
//! enforced by epoch interruption.
//!
//! Memory growth past the cap traps (rather than returning -1 from `memory.grow`) with a typed
//! [`MemoryExhausted`] error, so a fault can be reported as exactly that instead of as whatever
//! the guest's allocator does when it sees a failed grow.

use std::time::Duration;

/// The largest `memory_mib` a policy may ask for; it sizes the pooling allocator's slots.
pub const MAX_POLICY_MEMORY_MIB: u64 = 1024;

/// How often the epoch ticker advances the engine's epoch. Deadlines are whole ticks, so a
/// timeout fires between `timeout` and `timeout + TICK` after the call starts.
pub const TICK: Duration = Duration::from_millis(2);

/// Tables a policy may grow to; far beyond any real module, small enough to bound memory.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The resource bounds of one call.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Wall-clock bound, instantiation included.
    pub timeout: Duration,
    /// Linear memory bound in bytes.
    pub memory_bytes: u64,
}

impl Limits {
    /// The epoch deadline, in ticks from now, that guarantees at least `timeout` of run time:
    /// the current tick may be almost over, hence the extra one.
    pub fn deadline_ticks(&self) -> u64 {
        let tick = TICK.as_micros();
        let ticks = self.timeout.as_micros().div_ceil(tick);
        u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1)
    }
}

/// A memory grow was refused because it would exceed the policy's cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (asked for {desired} bytes)")]
pub struct MemoryExhausted {
    /// The cap.
    pub limit: u64,
    /// The total of the Store's memories the guest asked for.
    pub desired: u64,
}

/// How many instances, memories and tables one Store may create: a core module is one
/// instance; a component is several (componentize-py's Python has a dozen core instances).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreShape {
    /// Core instances.
    pub instances: usize,
    /// Linear memories, all of them under the one cap.
    pub memories: usize,
    /// Tables.
    pub tables: usize,
}

impl StoreShape {
    /// One core module: one instance, one memory, up to four tables.
    pub const MODULE: Self = Self {
        instances: 1,
        memories: 1,
        tables: 4,
    };
}

/// Installed in every Store: caps the sum of all its linear memories and its tables, and traps
/// when a cap is hit.
///
/// The cap is on the total, not per memory, so a component with several memories gets the same
/// budget as a module with one. The limiter only sees one memory's current and desired size, so
/// the total is kept as the running sum of granted growth (a grow the pool then refuses stays
/// counted, which only makes the cap stricter).
#[derive(Debug)]
pub struct MemoryCap {
    limit: u64,
    granted: u64,
    shape: StoreShape,
}

impl MemoryCap {
    /// A cap of `limit` bytes for a Store holding one core module.
    pub fn new(limit: u64) -> Self {
        Self::shaped(limit, StoreShape::MODULE)
    }

    /// A cap of `limit` bytes over all memories of a Store of `shape`.
    pub fn shaped(limit: u64, shape: StoreShape) -> Self {
        Self {
            limit,
            granted: 0,
            shape,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let growth = u64::try_from(desired.saturating_sub(current)).unwrap_or(u64::MAX);
        let total = self.granted.saturating_add(growth);
        if total > self.limit {
            return Err(MemoryExhausted {
                limit: self.limit,
                desired: total,
            }
            .into());
        }
        self.granted = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        self.shape.instances
    }

    fn memories(&self) -> usize {
        self.shape.memories
    }

    fn tables(&self) -> usize {
        self.shape.tables
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_covers_the_whole_timeout() {
        let l = |ms| Limits {
            timeout: Duration::from_millis(ms),
            memory_bytes: 0,
        };
        assert_eq!(l(100).deadline_ticks(), 51);
        assert_eq!(l(1).deadline_ticks(), 2);
        assert_eq!(l(3).deadline_ticks(), 3);
    }
}
