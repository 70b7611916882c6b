//! The HTTP layer's bounds: how long a client may take, how many connections and streams it
//! may open, how large a request may be, and how many bytes of request bodies the server holds
//! at once.
//!
//! Every bound here is what keeps one slow, broken or hostile client from holding memory or
//! connections that others need. Each has a `serve` flag and a default; [`HttpLimits::check`]
//! refuses combinations that could never admit a request the body limit allows.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

/// A request body size bound, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

impl BodyLimit {
    /// 8 MiB: an UPDATE review of the largest object the API server stores, with room to spare.
    ///
    /// etcd refuses requests over 1.5 MiB (its `--max-request-bytes` default), and the API
    /// server decodes request bodies up to 3 MiB (`MaxRequestBodyBytes` in
    /// `staging/src/k8s.io/apiserver/pkg/server/config.go`): twice etcd's limit, because the
    /// JSON a client sends is larger than the protobuf that is stored. So one object is at most
    /// about 3 MiB of JSON, and an UPDATE review carries two of them:
    ///
    /// | part | bytes |
    /// | --- | --- |
    /// | `object` | 3 MiB = 3,145,728 |
    /// | `oldObject` | 3 MiB = 3,145,728 |
    /// | envelope: uid, kinds, resources, `userInfo` with groups and extra, `options` | 64 KiB = 65,536 |
    /// | escaping headroom | 2,031,616 |
    /// | **total** | **8 MiB = 8,388,608** |
    ///
    /// The headroom is for escaping: the API server encodes the review with Go's
    /// `encoding/json` (`json.NewEncoder` in
    /// `staging/src/k8s.io/apimachinery/pkg/runtime/serializer/json/json.go`), which writes each
    /// `<`, `>` and `&` as the six bytes `\u003c`, five more than the client sent. That is room
    /// for about 200,000 of them in each object (shell `&&` in commands, markup in annotations).
    pub const DEFAULT: Self = Self(8 * 1024 * 1024);
}

/// Bytes of request bodies held at once, across requests: the budget a request takes its
/// share from before a byte of its body is buffered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyBudget(pub usize);

impl BodyBudget {
    /// 32 MiB for the whole server: four bodies of the largest size, or about 4,500 typical
    /// reviews (a Deployment's review is about 7 KB). A body costs many times its size while
    /// it is decoded ([`super::memory::DECODED_BYTES_PER_BODY_BYTE`]), so this is what keeps a
    /// burst of large reviews within a 1 GiB container.
    pub const DEFAULT: Self = Self(32 * 1024 * 1024);

    /// 16 MiB for one connection: two bodies of the largest size, so that one connection (one
    /// HTTP/2 client with many streams) cannot take the whole server's budget.
    pub const PER_CONNECTION: Self = Self(16 * 1024 * 1024);
}

/// The largest request head: an HTTP/1.1 request line and headers, or an HTTP/2 header list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderLimit(usize);

impl HeaderLimit {
    /// The smallest limit hyper's HTTP/1.1 reader accepts (its minimum buffer size).
    pub const MIN: usize = 8 * 1024;

    /// 16 KiB: the API server sends a few hundred bytes of headers; this is hyper's HTTP/2
    /// default and twice what most proxies allow.
    pub const DEFAULT: Self = Self(16 * 1024);

    /// A limit of `bytes`, if it is at least [`HeaderLimit::MIN`] and fits an HTTP/2 setting.
    pub fn new(bytes: usize) -> Option<Self> {
        (bytes >= Self::MIN && u32::try_from(bytes).is_ok()).then_some(Self(bytes))
    }

    /// The limit in bytes.
    pub fn bytes(self) -> usize {
        self.0
    }
}

impl std::fmt::Display for HeaderLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Every bound of the HTTP layer. [`HttpLimits::default`] is the `serve` defaults.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// The largest request body (`--max-body-bytes`).
    pub body: BodyLimit,
    /// Request body bytes held at once by the whole server (`--body-budget-bytes`).
    pub body_budget: BodyBudget,
    /// Request body bytes held at once by one connection (`--connection-body-budget-bytes`).
    pub connection_body_budget: BodyBudget,
    /// Review requests admitted at once, counted from before their body is read until their
    /// answer is ready (`--max-requests-in-flight`). Requests beyond it wait.
    pub requests_in_flight: NonZeroUsize,
    /// From accepting a TCP connection to a completed TLS handshake (`--handshake-timeout-secs`).
    pub handshake_timeout: Duration,
    /// For an HTTP/1.1 request head, counted from when the server starts waiting for it; so it
    /// also closes HTTP/1.1 keep-alive connections idle this long (`--header-read-timeout-secs`).
    pub header_read_timeout: Duration,
    /// For a request to be admitted and its body read whole, waiting for a slot and budget
    /// included (`--body-read-timeout-secs`).
    pub body_read_timeout: Duration,
    /// A connection with no request in flight this long is closed (`--idle-timeout-secs`).
    pub idle_timeout: Duration,
    /// Open connections, TLS handshakes included; beyond it the server stops accepting
    /// (`--max-connections`).
    pub max_connections: NonZeroUsize,
    /// HTTP/2 streams one connection may have open (`--http2-max-concurrent-streams`).
    pub h2_max_concurrent_streams: NonZeroU32,
    /// HTTP/2 PING interval, and how long an answer may take before the connection is closed
    /// (`--http2-keep-alive-secs`).
    pub h2_keep_alive: Duration,
    /// The largest request head (`--max-header-bytes`).
    pub max_header_bytes: HeaderLimit,
}

const REQUESTS_IN_FLIGHT: NonZeroUsize = NonZeroUsize::new(128).expect("nonzero");
const MAX_CONNECTIONS: NonZeroUsize = NonZeroUsize::new(256).expect("nonzero");
const H2_STREAMS: NonZeroU32 = NonZeroU32::new(32).expect("nonzero");

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            body: BodyLimit::DEFAULT,
            body_budget: BodyBudget::DEFAULT,
            connection_body_budget: BodyBudget::PER_CONNECTION,
            requests_in_flight: REQUESTS_IN_FLIGHT,
            handshake_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            // The API server gives a webhook 10 s by default (at most 30 s): a body slower than
            // that is answered by nobody.
            body_read_timeout: Duration::from_secs(10),
            // Longer than Go's HTTP/2 client keeps idle connections (90 s), so that it is the
            // API server that closes, with no race against a request it is about to send.
            idle_timeout: Duration::from_secs(120),
            max_connections: MAX_CONNECTIONS,
            max_header_bytes: HeaderLimit::DEFAULT,
            // Go's HTTP/2 client opens another connection when a server's stream limit is
            // reached, so this spreads a busy API server over connections without failing it.
            h2_max_concurrent_streams: H2_STREAMS,
            h2_keep_alive: Duration::from_secs(20),
        }
    }
}

/// The HTTP/2 flow-control window, for a stream and for a connection: how many body bytes a
/// client may send that the server has not read yet. 256 KiB streams a body at 256 MB/s over
/// a 1 ms round trip, and bounds what a client can park in a connection it never reads from.
pub const H2_WINDOW: u32 = 256 * 1024;

/// What a connection costs in buffers beyond its HTTP/2 window and body budget share: TLS and
/// HTTP state (measured: 30 KiB for an idle HTTP/2 connection, 11 KiB for HTTP/1.1), TLS
/// records in flight (up to 16 KiB each way), and the kernel's socket receive buffer, which
/// the cgroup is charged for too (128 KiB to start; it grows only while the server reads).
const CONNECTION_BUFFERS: u64 = 192 * 1024;

/// Why a set of limits cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitsError {
    /// A request of the largest allowed size would wait forever for a share of the budget.
    #[error(
        "--{flag} ({budget} bytes) is smaller than --max-body-bytes ({body} bytes): a body of the allowed size could never be read"
    )]
    BudgetBelowBody {
        /// Which budget.
        flag: &'static str,
        /// The budget.
        budget: usize,
        /// The body limit.
        body: usize,
    },
    /// The body limit does not fit one semaphore acquisition.
    #[error("--max-body-bytes must be between 1 and {max} bytes, got {got}")]
    BodyLimit {
        /// The largest supported limit.
        max: u64,
        /// What was asked for.
        got: usize,
    },
    /// A timeout of zero would refuse every connection or request.
    #[error("--{0} must be greater than zero")]
    ZeroTimeout(&'static str),
}

impl HttpLimits {
    /// Checks that the limits can admit a request of every size the body limit allows.
    pub fn check(&self) -> Result<(), LimitsError> {
        if self.body.0 == 0 || u32::try_from(self.body.0).is_err() {
            return Err(LimitsError::BodyLimit {
                max: u64::from(u32::MAX),
                got: self.body.0,
            });
        }
        for (flag, budget) in [
            ("body-budget-bytes", self.body_budget),
            ("connection-body-budget-bytes", self.connection_body_budget),
        ] {
            if budget.0 < self.body.0 {
                return Err(LimitsError::BudgetBelowBody {
                    flag,
                    budget: budget.0,
                    body: self.body.0,
                });
            }
        }
        for (flag, timeout) in [
            ("handshake-timeout-secs", self.handshake_timeout),
            ("header-read-timeout-secs", self.header_read_timeout),
            ("body-read-timeout-secs", self.body_read_timeout),
            ("idle-timeout-secs", self.idle_timeout),
            ("http2-keep-alive-secs", self.h2_keep_alive),
        ] {
            if timeout.is_zero() {
                return Err(LimitsError::ZeroTimeout(flag));
            }
        }
        Ok(())
    }

    /// The most memory the open connections can hold in buffers, body budget aside:
    /// `max_connections × (HTTP/2 window + request head + TLS, HTTP and socket buffers)`.
    pub fn connection_bytes(&self) -> u64 {
        let one = u64::from(H2_WINDOW) + self.max_header_bytes.bytes() as u64 + CONNECTION_BUFFERS;
        self.max_connections.get() as u64 * one
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_admit_the_largest_update_review() {
        let limits = HttpLimits::default();
        assert_eq!(limits.check(), Ok(()));
        // object + oldObject at the API server's 3 MiB, plus envelope.
        let update = 2 * 3 * 1024 * 1024 + 64 * 1024;
        assert!(limits.body.0 > update);
        assert!(limits.connection_body_budget.0 >= 2 * limits.body.0);
        assert!(limits.body_budget.0 >= 2 * limits.connection_body_budget.0);
    }

    #[test]
    fn a_budget_smaller_than_one_body_is_refused() {
        let limits = HttpLimits {
            connection_body_budget: BodyBudget(1024),
            ..HttpLimits::default()
        };
        assert_eq!(
            limits.check(),
            Err(LimitsError::BudgetBelowBody {
                flag: "connection-body-budget-bytes",
                budget: 1024,
                body: BodyLimit::DEFAULT.0
            })
        );
        let limits = HttpLimits {
            body_read_timeout: Duration::ZERO,
            ..HttpLimits::default()
        };
        assert_eq!(
            limits.check().map_err(|e| e.to_string()),
            Err("--body-read-timeout-secs must be greater than zero".to_owned())
        );
    }

    #[test]
    fn header_limits_below_hypers_minimum_are_refused() {
        assert_eq!(HeaderLimit::new(8191), None);
        assert_eq!(HeaderLimit::new(8192).map(HeaderLimit::bytes), Some(8192));
    }

    #[test]
    fn connection_buffers_are_bounded_by_the_connection_cap() {
        let limits = HttpLimits::default();
        // 256 connections × (256 KiB window + 16 KiB head + 192 KiB buffers) = 116 MiB.
        assert_eq!(limits.connection_bytes(), 256 * 464 * 1024);
    }
}
