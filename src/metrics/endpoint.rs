//! The metrics listener: plain HTTP/1.1 on a port of its own, `GET /metrics` and nothing else.
//!
//! It is kept apart from the webhook so that scraping needs no client certificate or CA, and
//! so that a scraper can never take a slot the API server needs. It is small and bounded like
//! the webhook: a few connections at once, request heads of a few KiB, no request body ever
//! read, a deadline for each request head and a lifetime for each connection. It stops when
//! told to, after the webhook has drained, so a scrape during shutdown still answers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::{Format, Metrics};
use crate::server::accept_under;

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 8;
/// Largest request head, bytes.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Time for a request head to arrive, the first and every next one on a kept-alive connection.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open, whatever it does.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long open connections get to finish once the listener stops.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// The router: `GET /metrics` (and `HEAD`); 404 elsewhere, 405 for other methods.
pub fn router(metrics: Metrics) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(metrics)
}

async fn scrape(State(metrics): State<Metrics>, headers: HeaderMap) -> Response {
    let format = Format::negotiate(
        headers
            .get(header::ACCEPT)
            .and_then(|accept| accept.to_str().ok()),
    );
    match metrics.encode(format) {
        Ok(text) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot encode the metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Serves `/metrics` on `listener` until `stop` completes, then gives open connections
/// [`STOP_GRACE`] to finish.
pub async fn serve(listener: TcpListener, metrics: Metrics, stop: impl Future<Output = ()>) {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening");
    }
    let router = router(metrics);
    let cap = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stopping, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = accept_under(&cap, &listener) => {
                let Some((permit, tcp, peer)) = accepted else { break };
                let service = TowerToHyperService::new(router.clone());
                let mut stopped = stopped.clone();
                connections.spawn(async move {
                    let _permit = permit;
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEAD_TIMEOUT)
                        .max_buf_size(MAX_HEAD_BYTES)
                        .serve_connection(TokioIo::new(tcp), service);
                    tokio::pin!(conn);
                    let lifetime = tokio::time::sleep(CONNECTION_LIFETIME);
                    tokio::pin!(lifetime);
                    let mut closing = false;
                    loop {
                        tokio::select! {
                            result = conn.as_mut() => {
                                if let Err(error) = result {
                                    tracing::debug!(%peer, %error, "metrics connection ended with an error");
                                }
                                return;
                            }
                            () = &mut lifetime => {
                                tracing::debug!(%peer, "metrics connection outlived its lifetime");
                                return;
                            }
                            _ = stopped.wait_for(|stop| *stop), if !closing => {
                                conn.as_mut().graceful_shutdown();
                                closing = true;
                            }
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = &mut stop => break,
        }
    }
    drop(listener);
    // No receiver left means no connection is open: nothing to tell.
    let _ = stopping.send(true);
    let drained = tokio::time::timeout(STOP_GRACE, async {
        while connections.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        connections.shutdown().await;
    }
    tracing::info!("metrics stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for() {
        let om = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(om)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
    }
}
