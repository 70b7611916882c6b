//! The HTTPS server: accept TCP, handshake TLS, serve HTTP/1.1 or HTTP/2 with the review
//! router, and drain in-flight reviews on shutdown.
//!
//! The server knows HTTP and TLS, not Wasm: it hands decoded reviews to the policy layer on a
//! blocking thread, under a semaphore sized to the engine's instance pool.

pub mod routes;
pub mod shutdown;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::policy::PolicySet;

/// How long a client may take to complete the TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the server should receive traffic: set once everything is loaded, cleared when
/// shutdown begins so that `/readyz` steers new reviews elsewhere while in-flight ones drain.
#[derive(Clone, Debug, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the server ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Is the server ready?
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// A request body size bound, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimit(pub usize);

impl BodyLimit {
    /// 3 MiB: the API server's own request limit, plus room for the review envelope.
    pub const DEFAULT: Self = Self(3 * 1024 * 1024);
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The live policy set, swapped whole.
    pub policies: Arc<ArcSwap<PolicySet>>,
    /// One permit per Wasm instance the engine's pool can hold.
    pub permits: Arc<Semaphore>,
    /// `/readyz`.
    pub readiness: Readiness,
    /// The request body bound.
    pub body_limit: BodyLimit,
}

/// Serves HTTPS on `listener` until `shutdown` completes, then stops accepting and waits up
/// to `drain` for open connections' in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let readiness = state.readiness.clone();
    let router = routes::router(state);
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    // Tells connections still in their TLS handshake that shutdown has begun: a client that
    // never sends a ClientHello must not hold the drain for the whole handshake timeout.
    let (stopping, stop_seen) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses are a few small frames (HTTP/2 HEADERS then DATA); with Nagle's algorithm on,
        // the second waits for the client's delayed ACK, ~40 ms per review.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let mut stop_seen = stop_seen.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
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
                _ = stop_seen.wait_for(|stop| *stop) => {
                    tracing::debug!(%peer, "shutting down during the TLS handshake");
                    return;
                }
            };
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(error) = watcher.watch(conn).await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    readiness.set(false);
    drop(listener);
    // Receivers may all be gone already (no connection in its handshake); nothing to tell then.
    let _ = stopping.send(true);
    tracing::info!(connections = graceful.count(), "draining");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(drain) => tracing::warn!(after_ms = drain.as_millis() as u64, "drain timed out; closing remaining connections"),
    }
}
