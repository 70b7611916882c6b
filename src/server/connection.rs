//! One accepted connection: the TLS handshake under a deadline, then HTTP/1.1 or HTTP/2 (as
//! ALPN settled) under the HTTP limits, closed gracefully once it has been idle too long or
//! the server stops.
//!
//! A connection counts as idle while no request is in flight on it, whatever the client
//! sends otherwise (HTTP/2 PINGs, a partial request head), so a client cannot hold a
//! connection open, and a slot under the connection cap, by keeping it barely alive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::intake::ConnectionShare;
use super::limits::{H2_WINDOW, HttpLimits};
use super::load::Load;

/// What every connection shares: the TLS acceptor, the router, hyper's configuration for each
/// protocol, the limits and the gauges.
pub(super) struct Shared {
    acceptor: TlsAcceptor,
    router: Router,
    limits: HttpLimits,
    load: Arc<Load>,
    http1: auto::Builder<TokioExecutor>,
    http2: auto::Builder<TokioExecutor>,
    either: auto::Builder<TokioExecutor>,
}

impl Shared {
    /// hyper configured with `limits`: HTTP/1.1 header timeout and size, HTTP/2 stream limit,
    /// windows, header list size and keep-alive. Both need a timer for their timeouts.
    pub(super) fn new(acceptor: TlsAcceptor, router: Router, limits: HttpLimits, load: Arc<Load>) -> Self {
        let mut either = auto::Builder::new(TokioExecutor::new());
        either
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.bytes());
        let header_list = u32::try_from(limits.max_header_bytes.bytes()).unwrap_or(u32::MAX);
        either
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams.get())
            .max_header_list_size(header_list)
            .initial_stream_window_size(H2_WINDOW)
            .initial_connection_window_size(H2_WINDOW)
            .keep_alive_interval(limits.h2_keep_alive)
            .keep_alive_timeout(limits.h2_keep_alive);
        Self {
            acceptor,
            router,
            limits,
            load,
            http1: either.clone().http1_only(),
            http2: either.clone().http2_only(),
            either,
        }
    }
}

/// Serves one accepted TCP connection until it closes, the handshake fails or times out, it
/// idles out, or `stop` turns true (then in-flight requests finish first). `permit` is its
/// place under the connection cap.
pub(super) async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    permit: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let _permit = permit;
    let _open = shared.load.connections.hold(1);
    // Responses are a few small frames (HTTP/2 HEADERS then DATA); with Nagle's algorithm on,
    // the second waits for the client's delayed ACK, ~40 ms per review.
    if let Err(error) = tcp.set_nodelay(true) {
        tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
    }
    let handshake = tokio::time::timeout(shared.limits.handshake_timeout, shared.acceptor.accept(tcp));
    // A client that never sends a ClientHello must not hold the drain for the handshake timeout.
    let stream = tokio::select! {
        result = handshake => match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
        _ = stop.wait_for(|stop| *stop) => {
            tracing::debug!(%peer, "shutting down during the TLS handshake");
            return;
        }
    };
    let builder = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => &shared.http2,
        Some(b"http/1.1") => &shared.http1,
        _ => &shared.either,
    };
    let activity = Arc::new(Activity::default());
    let share = ConnectionShare::new(shared.limits.connection_body_budget.0);
    let busy = Arc::clone(&activity);
    let service = shared
        .router
        .clone()
        .map_request(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(share.clone());
            request
        })
        .map_future(move |response| {
            let busy = busy.begin();
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        });
    let conn = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
                return;
            }
            () = activity.idle_for(shared.limits.idle_timeout), if !closing => {
                tracing::debug!(%peer, "closing an idle connection");
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = stop.wait_for(|stop| *stop), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Requests in flight on one connection, and a signal whenever that number changes.
#[derive(Debug, Default)]
struct Activity {
    in_flight: AtomicUsize,
    changed: Notify,
}

/// One request in flight; ends on drop.
struct InFlight(Arc<Activity>);

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        InFlight(Arc::clone(self))
    }

    /// Completes once no request has been in flight for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the count is read, so no change between the two is missed.
            changed.as_mut().enable();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                tokio::select! {
                    () = tokio::time::sleep(idle) => return,
                    () = changed => {}
                }
            } else {
                changed.await;
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}
