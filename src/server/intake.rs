//! Taking in a review's body: a request slot and a share of the body budget are taken before
//! a byte of the body is buffered, the body is read under the size limit and a deadline, and a
//! body over the limit gets a `413` that the client can read.
//!
//! Memory is bounded by configuration, not by clients: a request reserves its declared length
//! (or the whole limit when it declares none) from its connection's share and from the
//! server's budget, and waits, up to the body-read timeout, until both have room.
//!
//! A client still sending when the server refuses it must be able to read the answer:
//!
//! - HTTP/1.1 with `Expect: 100-continue`: the answer goes out before `100 Continue`, so the
//!   client never sends the body.
//! - HTTP/1.1 otherwise: the rest of the body is read and discarded (up to [`LINGER_BYTES`]
//!   and the body-read timeout), then the answer goes out with `Connection: close`. Closing a
//!   socket with unread bytes makes the kernel send a reset, which destroys the answer in the
//!   client's receive buffer before it reads it.
//! - HTTP/2: the answer goes out whole (END_STREAM), then the rest of the body is read and
//!   discarded under the same bounds, and the stream closes cleanly when the client has sent
//!   it all. Past the bounds the request body is let go, and the h2 library resets the stream
//!   with `RST_STREAM(NO_ERROR)`, which RFC 9113 §8.1 allows after a complete response. It
//!   would be enough for the RFC, but not for every client: curl 7.88 fails such a transfer
//!   (exit 92) although the response arrived whole; draining first serves it too.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::limits::{BodyLimit, HttpLimits};
use super::load::{Held, Load};

/// The most a refused HTTP/1.1 request's body is read and discarded so that the client can
/// read its answer; a client sending more than that is cut off.
pub const LINGER_BYTES: u64 = 64 * 1024 * 1024;

/// One connection's share of the body budget, put in each request's extensions by the
/// connection that carried it.
#[derive(Clone, Debug)]
pub struct ConnectionShare(Arc<Semaphore>);

impl ConnectionShare {
    /// A share of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self(Arc::new(Semaphore::new(bytes.min(Semaphore::MAX_PERMITS))))
    }
}

/// The server-wide side of intake: request slots and the body budget.
#[derive(Debug)]
pub struct Intake {
    limit: BodyLimit,
    read_timeout: Duration,
    slots: Arc<Semaphore>,
    budget: Arc<Semaphore>,
    load: Arc<Load>,
}

/// A request whose body has been read whole.
#[derive(Debug)]
pub struct Admitted {
    /// The body.
    pub body: Bytes,
    /// Its slot and reservations.
    pub ticket: Ticket,
}

/// A request's slot and its share of the body budget, given back on drop. Hold it until the
/// answer is ready: decoding and evaluating a body cost memory in proportion to it.
#[derive(Debug)]
pub struct Ticket {
    _slot: OwnedSemaphorePermit,
    _request: Held,
    _share: Option<OwnedSemaphorePermit>,
    _budget: OwnedSemaphorePermit,
    _bytes: Held,
}

/// What happens to the connection or stream after a refusal is sent.
#[derive(Debug)]
pub enum Tail {
    /// Nothing more to do.
    Done,
    /// HTTP/1.1: close the connection after the answer (`Connection: close`).
    Close,
    /// HTTP/2: keep the request body until the answer has been sent, then drain it.
    Hold(Body, Duration),
}

/// Why a request was not admitted. Each is answered with its status and a one-line reason.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The body is (or declares to be) larger than `--max-body-bytes`.
    #[error("request body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
        /// What to do after answering.
        tail: Tail,
    },
    /// No request slot or budget share came free before the body-read timeout.
    #[error("server busy: no capacity for the request within {} ms", waited.as_millis())]
    Busy {
        /// How long the request waited.
        waited: Duration,
        /// What to do after answering.
        tail: Tail,
    },
    /// The body did not arrive whole before the body-read timeout.
    #[error("request body not received within {} ms", timeout.as_millis())]
    SlowBody {
        /// The timeout.
        timeout: Duration,
        /// What to do after answering.
        tail: Tail,
    },
    /// The connection failed while the body was read.
    #[error("cannot read request body: {0}")]
    Unreadable(#[source] axum::Error),
}

impl IntakeError {
    /// The status code the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::SlowBody { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Unreadable(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for IntakeError {
    fn into_response(self) -> Response {
        let status = self.status();
        let text = Bytes::from(format!("{self}\n"));
        let tail = match self {
            Self::TooLarge { tail, .. } | Self::Busy { tail, .. } | Self::SlowBody { tail, .. } => tail,
            Self::Unreadable(_) => Tail::Done,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        let body = match tail {
            Tail::Done => Body::from(text),
            Tail::Close => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
                Body::from(text)
            }
            Tail::Hold(request, linger) => Body::new(Holding {
                text: Some(text),
                request: Some(request),
                linger,
            }),
        };
        (status, headers, body).into_response()
    }
}

/// How the client speaks, which decides how a refusal is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    /// HTTP/1.x that asked for `100 Continue` before sending its body.
    Http1Expecting,
    /// HTTP/1.x sending its body straight away.
    Http1,
    /// HTTP/2 (or anything with streams of its own).
    Http2,
}

impl Wire {
    fn of(version: Version, headers: &HeaderMap) -> Self {
        if version >= Version::HTTP_2 {
            return Self::Http2;
        }
        let expects = headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if expects {
            Self::Http1Expecting
        } else {
            Self::Http1
        }
    }
}

/// Why reading stopped before the end of the body.
enum ReadError {
    TooLarge,
    Body(axum::Error),
}

impl Intake {
    /// The server-wide slots and budget for `limits`, counted in `load`.
    pub fn new(limits: &HttpLimits, load: Arc<Load>) -> Self {
        Self {
            limit: limits.body,
            read_timeout: limits.body_read_timeout,
            slots: Arc::new(Semaphore::new(limits.requests_in_flight.get())),
            budget: Arc::new(Semaphore::new(limits.body_budget.0.min(Semaphore::MAX_PERMITS))),
            load,
        }
    }

    /// Takes a slot and a share of the budget, then reads the body whole; all within the
    /// body-read timeout.
    pub async fn admit(&self, request: Request) -> Result<Admitted, IntakeError> {
        let started = Instant::now();
        let deadline = started + self.read_timeout;
        let (parts, mut body) = request.into_parts();
        let wire = Wire::of(parts.version, &parts.headers);
        let limit = self.limit.0;
        let declared = declared_length(&parts.headers);
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(IntakeError::TooLarge {
                limit,
                tail: self.refuse(wire, body).await,
            });
        }
        // A body of unknown length may be as large as the limit: reserve that much.
        let want = declared.map_or(limit, |len| len as usize);
        let permits = u32::try_from(want).unwrap_or(u32::MAX);
        let share = parts.extensions.get::<ConnectionShare>().cloned();
        let reserved = tokio::time::timeout_at(deadline, async {
            let slot = Arc::clone(&self.slots).acquire_owned().await.ok()?;
            let counted = self.load.requests.hold(1);
            let share = match share {
                Some(ConnectionShare(s)) => Some(s.acquire_many_owned(permits).await.ok()?),
                None => None,
            };
            let budget = Arc::clone(&self.budget).acquire_many_owned(permits).await.ok()?;
            Some(Ticket {
                _slot: slot,
                _request: counted,
                _share: share,
                _budget: budget,
                _bytes: self.load.body_bytes.hold(want as u64),
            })
        })
        .await;
        let Ok(Some(ticket)) = reserved else {
            return Err(IntakeError::Busy {
                waited: started.elapsed(),
                tail: self.refuse(wire, body).await,
            });
        };
        match tokio::time::timeout_at(deadline, read(&mut body, limit, want)).await {
            Ok(Ok(bytes)) => Ok(Admitted { body: bytes, ticket }),
            Ok(Err(ReadError::TooLarge)) => {
                drop(ticket);
                // The client was sending (it had its `100 Continue`): discard or hold.
                let wire = if wire == Wire::Http1Expecting {
                    Wire::Http1
                } else {
                    wire
                };
                Err(IntakeError::TooLarge {
                    limit,
                    tail: self.refuse(wire, body).await,
                })
            }
            Ok(Err(ReadError::Body(error))) => Err(IntakeError::Unreadable(error)),
            Err(_) => Err(IntakeError::SlowBody {
                timeout: self.read_timeout,
                tail: match wire {
                    Wire::Http2 => Tail::Done,
                    Wire::Http1 | Wire::Http1Expecting => Tail::Close,
                },
            }),
        }
    }

    /// Prepares the refusal of a request whose body has not been read (or not whole) so that
    /// the client can read it; see the module documentation.
    async fn refuse(&self, wire: Wire, body: Body) -> Tail {
        match wire {
            Wire::Http2 => Tail::Hold(body, self.read_timeout),
            Wire::Http1Expecting => Tail::Close,
            Wire::Http1 => {
                linger(body, self.read_timeout).await;
                Tail::Close
            }
        }
    }
}

/// The `Content-Length` the client declared, if any (hyper has already refused malformed or
/// conflicting ones).
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Reads `body` whole, failing as soon as it passes `limit`. A body that arrives as one frame
/// (most reviews) is kept as it came; one in pieces is gathered into a buffer of `capacity`.
async fn read(body: &mut Body, limit: usize, capacity: usize) -> Result<Bytes, ReadError> {
    let mut first: Option<Bytes> = None;
    let mut gathered: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = next_frame(body).await {
        let frame = frame.map_err(ReadError::Body)?;
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len();
        if seen > limit {
            return Err(ReadError::TooLarge);
        }
        match first.take() {
            None if gathered.is_empty() => first = Some(data),
            held => {
                if let Some(held) = held {
                    gathered.reserve(capacity.max(seen));
                    gathered.extend_from_slice(&held);
                }
                gathered.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| Bytes::from(gathered)))
}

/// Reads and drops what is left of a refused request's body, up to [`LINGER_BYTES`] and for
/// at most `time`, so that the client can finish sending and read its answer.
async fn linger(body: Body, time: Duration) {
    match tokio::time::timeout(time, discard(body, LINGER_BYTES)).await {
        Ok(true) => {}
        Ok(false) => tracing::debug!("refused body is larger than the linger bound; cutting off"),
        Err(_) => tracing::debug!("refused body still arriving after the linger time; cutting off"),
    }
}

/// Reads and drops `body` up to `bound` bytes; true if it ended within the bound.
async fn discard(mut body: Body, bound: u64) -> bool {
    let mut seen = 0u64;
    while let Some(frame) = next_frame(&mut body).await {
        let Ok(frame) = frame else { return false };
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen > bound {
                return false;
            }
        }
    }
    true
}

async fn next_frame(body: &mut Body) -> Option<Result<Frame<Bytes>, axum::Error>> {
    std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
}

/// A response body that keeps the request body alive until the response has been sent whole
/// (hyper drops a response body only after its last frame went out with END_STREAM), then
/// drains it on a task of its own.
struct Holding {
    text: Option<Bytes>,
    request: Option<Body>,
    linger: Duration,
}

impl Drop for Holding {
    fn drop(&mut self) {
        if let (Some(request), Ok(runtime)) = (self.request.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(linger(request, self.linger));
        }
    }
}

impl HttpBody for Holding {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().text.take().map(|t| Ok(Frame::data(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.text.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.text.as_ref().map_or(0, |t| t.len() as u64))
    }
}
