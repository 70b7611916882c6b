//! The HTTPS server: accept TCP under a connection cap, handshake TLS, serve HTTP/1.1 or
//! HTTP/2 with the review router under the HTTP limits, and on shutdown turn unready, keep
//! serving while load balancers catch up, then drain in-flight reviews.
//!
//! The server knows HTTP and TLS, not Wasm: it hands decoded reviews to the policy layer on a
//! blocking thread, under a semaphore sized to the engine's instance pool.

pub mod connection;
pub mod intake;
pub mod limits;
pub mod load;
pub mod memory;
pub mod routes;
pub mod shutdown;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

pub use limits::{BodyLimit, HttpLimits};

use crate::metrics::Metrics;
use crate::policy::PolicySet;
use intake::Intake;
use load::Load;

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

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The live policy set, swapped whole.
    pub policies: Arc<ArcSwap<PolicySet>>,
    /// One permit per Wasm instance the engine's pool can hold.
    pub permits: Arc<Semaphore>,
    /// `/readyz`.
    pub readiness: Readiness,
    /// The bounds of the HTTP layer.
    pub limits: HttpLimits,
    /// Request slots and the body budget, taken before a body is read.
    pub intake: Arc<Intake>,
    /// What the server holds now, and the most it has held.
    pub load: Arc<Load>,
    /// The metrics every answered request is counted in.
    pub metrics: Metrics,
}

/// How shutdown proceeds once asked for.
#[derive(Clone, Copy, Debug)]
pub struct ShutdownTiming {
    /// How long the server stays unready but serving, old and new connections alike, so that
    /// load balancers and the API server's endpoints stop sending it reviews first.
    pub delay: Duration,
    /// How long it then waits for in-flight reviews before closing what is left.
    pub drain: Duration,
}

/// Serves HTTPS on `listener` until `shutdown` completes; then reports unready and goes on
/// serving for `timing.delay` (cut short when `hurry` completes), stops accepting, and waits up
/// to `timing.drain` for open connections' in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()>,
    hurry: impl Future<Output = ()>,
    timing: ShutdownTiming,
) {
    let readiness = state.readiness.clone();
    let limits = state.limits;
    let shared = Arc::new(connection::Shared::new(
        TlsAcceptor::from(tls),
        routes::router(state.clone()),
        limits,
        Arc::clone(&state.load),
    ));
    let cap = Arc::new(Semaphore::new(limits.max_connections.get()));
    // Tells every connection, in its handshake or serving, that the server is stopping.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    let mut delay = None;
    tokio::pin!(shutdown, hurry);
    loop {
        tokio::select! {
            accepted = accept_under(&cap, &listener) => {
                let Some((permit, tcp, peer)) = accepted else { break };
                connections.spawn(connection::serve(tcp, peer, permit, Arc::clone(&shared), stop.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut shutdown, if delay.is_none() => {
                readiness.set(false);
                if timing.delay.is_zero() {
                    break;
                }
                tracing::info!(delay_ms = timing.delay.as_millis() as u64, "unready; serving on while endpoints update");
                delay = Some(Box::pin(tokio::time::sleep(timing.delay)));
            }
            () = async { if let Some(d) = delay.as_mut() { d.await } }, if delay.is_some() => break,
            () = &mut hurry, if delay.is_some() => {
                tracing::info!("asked again; ending the shutdown delay early");
                break;
            }
        }
    }
    readiness.set(false);
    drop(listener);
    // Receivers may all be gone already (no connection open); nothing to tell then.
    let _ = stopping.send(true);
    tracing::info!(connections = connections.len(), "draining");
    let drained = tokio::time::timeout(timing.drain, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_ok() {
        tracing::info!("drained");
    } else {
        tracing::warn!(
            after_ms = timing.drain.as_millis() as u64,
            connections = connections.len(),
            "drain timed out; closing remaining connections"
        );
        connections.shutdown().await;
    }
}

/// The next connection on `listener`, once a place under `cap` is free: at the cap, new
/// connections wait in the kernel's backlog. A failed accept (usually EMFILE) is logged and
/// retried after a short back-off instead of spinning. `None` once `cap` is closed.
pub(crate) async fn accept_under(
    cap: &Arc<Semaphore>,
    listener: &TcpListener,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = Arc::clone(cap).acquire_owned().await.ok()?;
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => return Some((permit, tcp, peer)),
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
