//! The HTTP surface: `/validate`, `/mutate` (and their per-policy forms), `/healthz`,
//! `/readyz`. Handlers stay thin: decode, pick policies, evaluate on a blocking thread, encode.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::Instrument as _;
use tracing::field::Empty;

use super::AppState;
use super::intake::{Admitted, IntakeError};
use crate::metrics::Metrics;
use crate::metrics::labels::{Answered, Endpoint, StatusClass};
use crate::policy::spec::PolicyKind;
use crate::policy::{Decision, PolicySet, Target, evaluate};
use crate::review::respond::respond;
use crate::review::{DecodeError, Review};

/// Builds the router over `state`. Request bodies are read by [`super::intake`], under its
/// limits, and nowhere else. Every answered request, whatever its route, is counted.
pub fn router(state: AppState) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/validate", post(validate_all))
        .route("/validate/{policy}", post(validate_one))
        .route("/mutate", post(mutate_all))
        .route("/mutate/{policy}", post(mutate_one))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(state)
        .layer(middleware::from_fn_with_state(metrics, count))
}

/// Counts the answer to one request: under the review's decision when the handler attached
/// one, under its status class otherwise, with its latency.
async fn count(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = Endpoint::of_path(request.uri().path());
    let response = next.run(request).await;
    let answered = response
        .extensions()
        .get::<Answered>()
        .copied()
        .unwrap_or_else(|| Answered::Status(StatusClass::of(response.status().as_u16())));
    metrics.request(endpoint, answered, started.elapsed());
    response
}

/// Every way a review request can fail before a decision exists. A policy fault is not here:
/// it is a decision.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not an AdmissionReview v1.
    #[error(transparent)]
    BadReview(#[from] DecodeError),
    /// The body was not taken in: too large, too slow, or no capacity for it.
    #[error(transparent)]
    Intake(#[from] IntakeError),
    /// No policy of that name and kind.
    #[error("no {kind} policy named `{name}`")]
    UnknownPolicy {
        /// validating or mutating.
        kind: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The evaluation task failed (a bug: evaluation itself never panics on guest input).
    #[error("evaluation failed: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            Self::BadReview(_) => StatusCode::BAD_REQUEST,
            Self::Intake(e) => e.status(),
            Self::UnknownPolicy { .. } => StatusCode::NOT_FOUND,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        tracing::info!(status = status.as_u16(), error = %self, "review refused");
        if let Self::Intake(e) = self {
            return e.into_response();
        }
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}\n"),
        )
            .into_response()
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn validate_all(State(s): State<AppState>, request: Request) -> Result<Response, ApiError> {
    review(s, request, PolicyKind::Validating, None).await
}

async fn validate_one(
    State(s): State<AppState>,
    Path(policy): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    review(s, request, PolicyKind::Validating, Some(policy)).await
}

async fn mutate_all(State(s): State<AppState>, request: Request) -> Result<Response, ApiError> {
    review(s, request, PolicyKind::Mutating, None).await
}

async fn mutate_one(
    State(s): State<AppState>,
    Path(policy): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    review(s, request, PolicyKind::Mutating, Some(policy)).await
}

async fn review(
    state: AppState,
    request: Request,
    kind: PolicyKind,
    only: Option<String>,
) -> Result<Response, ApiError> {
    // One span per review; its fields are filled in as they become known, and each policy's
    // span (opened on the blocking thread) is its child.
    let span = tracing::info_span!(
        "review",
        route = ?kind,
        uid = Empty,
        kind = Empty,
        namespace = Empty,
        name = Empty,
        operation = Empty,
        decision = Empty,
    );
    review_in(state, request, kind, only, span.clone())
        .instrument(span)
        .await
}

async fn review_in(
    state: AppState,
    request: Request,
    kind: PolicyKind,
    only: Option<String>,
    span: tracing::Span,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    // The set this review started with is the one it finishes on, whatever is swapped in.
    let set: Arc<PolicySet> = state.policies.load_full();
    let label = match kind {
        PolicyKind::Validating => "validating",
        PolicyKind::Mutating => "mutating",
    };
    // An unknown policy is a wrong URL: say so before looking at the body.
    if let Some(name) = &only
        && !set.get(name).is_some_and(|p| p.spec.kind == kind)
    {
        return Err(ApiError::UnknownPolicy {
            kind: label,
            name: name.clone(),
        });
    }
    // Held until the answer is ready: decoding and evaluating cost memory in proportion to the
    // body, and the body budget stands for that too.
    let Admitted { body, ticket } = state.intake.admit(request).await?;
    let review = Review::decode(&body)?;
    drop(body);
    span.record("uid", review.uid.as_str());
    span.record("kind", review.kind.as_str());
    span.record("namespace", review.namespace.as_deref().unwrap_or(""));
    span.record("name", review.name.as_str());
    span.record("operation", tracing::field::display(review.operation));
    let permit = Arc::clone(&state.permits)
        .acquire_owned()
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let blocking_span = span.clone();
    let (review, decision) = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let _entered = blocking_span.enter();
        let target = match only.as_deref().and_then(|n| set.get(n)) {
            Some(p) => Target::One(p),
            None => Target::All,
        };
        let decision = match kind {
            PolicyKind::Validating => evaluate::validate(&set, &review, target),
            PolicyKind::Mutating => evaluate::mutate(&set, &review, target),
        };
        (review, decision)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let bytes = respond(&review.uid, &decision.answer);
    drop(ticket);
    span.record("decision", decision.answer.admission.outcome());
    log_review(&review, &decision, label, started);
    let mut response = ([(header::CONTENT_TYPE, "application/json")], bytes).into_response();
    response
        .extensions_mut()
        .insert(Answered::of(&decision.answer.admission));
    Ok(response)
}

/// The one log line per review: who, what, which policies, the decision and the latency.
/// Objects and settings are never logged.
fn log_review(review: &Review, decision: &Decision, route: &'static str, started: Instant) {
    let outcome = decision.answer.admission.outcome();
    let policies = decision
        .evaluated
        .iter()
        .map(|r| format!("{}={}", r.name, r.verdict))
        .collect::<Vec<_>>()
        .join(",");
    tracing::info!(
        uid = %review.uid,
        kind = %review.kind,
        namespace = review.namespace.as_deref().unwrap_or(""),
        name = %review.name,
        operation = %review.operation,
        dry_run = review.dry_run,
        route,
        policies = %policies,
        decision = outcome,
        subresource = review.subresource.as_deref().unwrap_or(""),
        warnings = decision.answer.warnings.len(),
        latency_us = started.elapsed().as_micros() as u64,
        "review"
    );
}
