//! The memory budget: the most the configuration lets the server hold at once, checked at
//! start against the container's memory limit, so that a busy hour is settled by the limits
//! (a review waits) and never by the kernel's OOM killer (every review in flight is lost).
//!
//! The terms are bounds, not estimates of a typical hour: evaluations at once times the
//! largest memory cap any policy has, the body budget times what a body costs once decoded,
//! and the connection cap times a connection's buffers; plus what the process holds after
//! loading its policies, measured.

use std::fmt;
use std::path::Path;

/// Where the budget comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryBudget {
    /// `--memory-budget-mib`.
    Mib(u64),
    /// The cgroup's limit (`memory.max` under cgroup v2, `memory.limit_in_bytes` under v1),
    /// when there is one; unchecked otherwise.
    FromCgroup,
    /// Not checked.
    Unchecked,
}

/// How much one byte of request body costs the host while its review is decoded and
/// evaluated: the body, the request kept verbatim for the policies, the copy handed to each
/// policy, and above all the typed tree `review::decode` builds of `object` and `oldObject`.
/// Measured: one 6 MiB UPDATE review of a Deployment with 30,000 environment variables raised
/// an empty-set server's peak resident memory by 90 MiB (15 bytes a byte), rounded up.
pub const DECODED_BYTES_PER_BODY_BYTE: u64 = 16;

const MIB: u64 = 1024 * 1024;

/// What the configuration may hold at once, term by term, in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Resident memory after loading the policies; `None` where it cannot be measured.
    pub baseline: Option<u64>,
    /// Evaluations that may run at once.
    pub evaluations: u64,
    /// The largest `memory_mib` of any policy, with the policy's name.
    pub largest_policy: Option<(String, u64)>,
    /// The body budget.
    pub body_budget: u64,
    /// Open connections allowed.
    pub connections: u64,
    /// Buffers of all connections at the cap.
    pub connection_bytes: u64,
}

impl MemoryPlan {
    fn evaluation_bytes(&self) -> u64 {
        self.evaluations
            .saturating_mul(self.largest_policy.as_ref().map_or(0, |(_, bytes)| *bytes))
    }

    fn body_bytes(&self) -> u64 {
        self.body_budget.saturating_mul(DECODED_BYTES_PER_BODY_BYTE)
    }

    /// The sum of the terms.
    pub fn total(&self) -> u64 {
        self.baseline
            .unwrap_or(0)
            .saturating_add(self.evaluation_bytes())
            .saturating_add(self.body_bytes())
            .saturating_add(self.connection_bytes)
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b.div_ceil(MIB);
        match self.baseline {
            Some(b) => writeln!(
                f,
                "  {:>6} MiB  the process after loading its policies (measured)",
                mib(b)
            )?,
            None => writeln!(
                f,
                "       ? MiB  the process after loading its policies (not measurable here)"
            )?,
        }
        let (policy, cap) = self
            .largest_policy
            .as_ref()
            .map_or(("none", 0), |(name, bytes)| (name.as_str(), *bytes));
        writeln!(
            f,
            "  {:>6} MiB  evaluations: {} at once (--max-concurrent-evaluations) x {} MiB (largest memory_mib, policy `{policy}`)",
            mib(self.evaluation_bytes()),
            self.evaluations,
            mib(cap),
        )?;
        writeln!(
            f,
            "  {:>6} MiB  request bodies: {} MiB (--body-budget-bytes) x {DECODED_BYTES_PER_BODY_BYTE} while decoded and evaluated",
            mib(self.body_bytes()),
            mib(self.body_budget),
        )?;
        write!(
            f,
            "  {:>6} MiB  connections: {} (--max-connections) x {} KiB of buffers",
            mib(self.connection_bytes),
            self.connections,
            self.connection_bytes / self.connections.max(1) / 1024,
        )
    }
}

/// The configuration may hold more than the budget allows.
#[derive(Debug, thiserror::Error)]
#[error(
    "the configuration may hold {} MiB at once, more than the memory budget of {} MiB ({origin}):\n{plan}\nlower one of these, or raise the container's memory limit",
    plan.total().div_ceil(MIB),
    budget / MIB
)]
pub struct MemoryError {
    /// The terms.
    pub plan: MemoryPlan,
    /// The budget in bytes.
    pub budget: u64,
    /// Where the budget came from.
    pub origin: &'static str,
}

/// Checks `plan` against `budget`. Returns the budget that was checked against, if any.
pub fn check(plan: &MemoryPlan, budget: MemoryBudget) -> Result<Option<u64>, MemoryError> {
    let (limit, source) = match budget {
        MemoryBudget::Unchecked => return Ok(None),
        MemoryBudget::Mib(mib) => (mib.saturating_mul(MIB), "--memory-budget-mib"),
        MemoryBudget::FromCgroup => match cgroup_limit(Path::new("/sys/fs/cgroup")) {
            Some(limit) => limit,
            None => return Ok(None),
        },
    };
    if plan.total() > limit {
        return Err(MemoryError {
            plan: plan.clone(),
            budget: limit,
            origin: source,
        });
    }
    Ok(Some(limit))
}

/// The memory limit of the cgroup mounted at `root`, and which file said so. `None` when
/// there is no limit (`max`, or v1's "unlimited" near `i64::MAX`) or no cgroup file.
pub fn cgroup_limit(root: &Path) -> Option<(u64, &'static str)> {
    let candidates: [(&str, &'static str); 2] = [
        ("memory.max", "cgroup memory.max"),
        ("memory/memory.limit_in_bytes", "cgroup memory.limit_in_bytes"),
    ];
    candidates.iter().find_map(|(file, source)| {
        let text = std::fs::read_to_string(root.join(file)).ok()?;
        let bytes: u64 = text.trim().parse().ok()?;
        // cgroup v1 reports "no limit" as the largest page-aligned i64.
        (bytes < 1 << 60).then_some((bytes, *source))
    })
}

/// This process's resident memory, from `/proc/self/status`.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> MemoryPlan {
        MemoryPlan {
            baseline: Some(40 * MIB),
            evaluations: 4,
            largest_policy: Some(("default-resources".into(), 64 * MIB)),
            body_budget: 32 * MIB,
            connections: 256,
            connection_bytes: 256 * 464 * 1024,
        }
    }

    #[test]
    fn the_total_is_every_term() {
        assert_eq!(plan().total(), (40 + 256 + 512 + 116) * MIB);
    }

    #[test]
    fn a_budget_too_small_names_every_term() {
        let error = check(&plan(), MemoryBudget::Mib(512)).expect_err("924 MiB > 512 MiB");
        let text = error.to_string();
        assert!(
            text.starts_with(
                "the configuration may hold 924 MiB at once, more than the memory budget of 512 MiB (--memory-budget-mib):\n"
            ),
            "{text}"
        );
        for term in [
            "      40 MiB  the process after loading its policies (measured)",
            "     256 MiB  evaluations: 4 at once (--max-concurrent-evaluations) x 64 MiB (largest memory_mib, policy `default-resources`)",
            "     512 MiB  request bodies: 32 MiB (--body-budget-bytes) x 16 while decoded and evaluated",
            "     116 MiB  connections: 256 (--max-connections) x 464 KiB of buffers",
        ] {
            assert!(text.contains(term), "missing {term:?} in\n{text}");
        }
        assert_eq!(check(&plan(), MemoryBudget::Mib(924)).ok(), Some(Some(924 * MIB)));
        assert_eq!(check(&plan(), MemoryBudget::Unchecked).ok(), Some(None));
    }

    #[test]
    fn cgroup_limits_are_read_from_v2_then_v1() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(cgroup_limit(dir.path()), None);
        std::fs::create_dir(dir.path().join("memory")).expect("mkdir");
        std::fs::write(
            dir.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .expect("write");
        assert_eq!(cgroup_limit(dir.path()), None, "v1 without a limit");
        std::fs::write(dir.path().join("memory/memory.limit_in_bytes"), "1073741824\n").expect("write");
        assert_eq!(
            cgroup_limit(dir.path()),
            Some((1 << 30, "cgroup memory.limit_in_bytes"))
        );
        std::fs::write(dir.path().join("memory.max"), "max\n").expect("write");
        assert_eq!(
            cgroup_limit(dir.path()),
            Some((1 << 30, "cgroup memory.limit_in_bytes")),
            "v2 without a limit falls through"
        );
        std::fs::write(dir.path().join("memory.max"), "536870912\n").expect("write");
        assert_eq!(cgroup_limit(dir.path()), Some((512 << 20, "cgroup memory.max")));
    }

    #[test]
    fn resident_memory_is_measured_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().is_some_and(|b| b > MIB));
        }
    }
}
