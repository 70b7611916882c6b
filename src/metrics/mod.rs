//! Portcullis's metrics: one registry of typed families, scraped over plain HTTP by
//! [`endpoint`], in the Prometheus text format or OpenMetrics.
//!
//! The request path touches only handles made in advance: each policy's [`PolicyMeter`] is made
//! when its policy set is built, and the request families have a handful of fixed label sets.
//! Events off the request path (a policy set or certificate installed, a reload refused) have a
//! method each, for whatever installs them.
//!
//! | family | type | labels |
//! | --- | --- | --- |
//! | `portcullis_requests_total` | counter | `endpoint`, `decision` |
//! | `portcullis_request_duration_seconds` | histogram | `endpoint` |
//! | `portcullis_policy_evaluations_total` | counter | `policy`, `mode`, `outcome` |
//! | `portcullis_policy_evaluation_duration_seconds` | histogram | `policy` |
//! | `portcullis_policy_faults_total` | counter | `policy`, `kind` |
//! | `portcullis_policy_set_generation` | gauge | |
//! | `portcullis_policy_reload_failures_total` | counter | |
//! | `portcullis_tls_certificate_expiry_timestamp_seconds` | gauge | |
//! | `portcullis_tls_certificate_reload_failures_total` | counter | |
//! | `portcullis_build_info` | info | `version` |
//! | `portcullis_open_connections`, `portcullis_requests_in_flight`, `portcullis_request_body_reserved_bytes`, and their peaks (`..._peak`, `..._reserved_peak_bytes`) | gauge | |

pub mod certificate;
pub mod endpoint;
pub mod labels;
mod load;
pub mod policy;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use rustls::pki_types::CertificateDer;

pub use policy::PolicyMeter;

use crate::policy::spec::Mode;
use crate::server::load::Load;
use labels::{
    Answered, Endpoint, EndpointLabels, EvaluationLabels, FaultLabels, PolicyLabels, RequestLabels,
};

/// Upper bounds of the evaluation latency buckets, seconds: 50 µs (a small policy on a small
/// object) to 10 s (past the longest sensible timeout, under which a timed-out call lands).
pub const EVALUATION_BUCKETS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// Upper bounds of the request latency buckets, seconds: from a review answered by an empty set
/// to the API server's longest webhook timeout (30 s).
pub const REQUEST_BUCKETS: [f64; 15] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// The families that policy meters are made from.
#[derive(Debug)]
pub(crate) struct Families {
    evaluations: Family<EvaluationLabels, Counter>,
    evaluation_duration: Family<PolicyLabels, Histogram, fn() -> Histogram>,
    faults: Family<FaultLabels, Counter>,
}

/// Every metric Portcullis exports, and the registry that encodes them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    families: Families,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    policy_set_generation: Gauge,
    policy_reload_failures: Counter,
    certificate_expiry: Gauge,
    certificate_reload_failures: Counter,
}

/// Which text format a scrape asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format, version 0.0.4.
    Prometheus,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the scraper's `Accept` header lists it (Prometheus does), the Prometheus
    /// text format otherwise (curl, older scrapers).
    pub fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(accept) if accept.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }

    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

impl Metrics {
    /// Registers every family, with the server's gauges in `load`. The policy set generation
    /// starts at 0 and the certificate expiry is unset until [`Metrics::policy_set_installed`]
    /// and [`Metrics::certificate_installed`] are called.
    pub fn new(load: Arc<Load>) -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let families = Families {
            evaluations: Family::default(),
            evaluation_duration: Family::new_with_constructor(|| Histogram::new(EVALUATION_BUCKETS)),
            faults: Family::default(),
        };
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration: Family<EndpointLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(REQUEST_BUCKETS));
        let policy_set_generation = Gauge::default();
        let policy_reload_failures = Counter::default();
        let certificate_expiry = Gauge::default();
        let certificate_reload_failures = Counter::default();
        registry.register(
            "requests",
            "HTTP requests answered, by endpoint and by the review's decision (the status class when there was none)",
            requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its answer, by endpoint",
            Unit::Seconds,
            request_duration.clone(),
        );
        registry.register(
            "policy_evaluations",
            "Policy evaluations, by policy, mode and verdict (a review's old object judged too counts once)",
            families.evaluations.clone(),
        );
        registry.register_with_unit(
            "policy_evaluation_duration",
            "Wall time of one policy's evaluation of one review",
            Unit::Seconds,
            families.evaluation_duration.clone(),
        );
        registry.register(
            "policy_faults",
            "Policy evaluations that failed, by policy and kind of fault",
            families.faults.clone(),
        );
        registry.register(
            "policy_set_generation",
            "How many policy sets have been installed since start; 1 is the one loaded at start",
            policy_set_generation.clone(),
        );
        registry.register(
            "policy_reload_failures",
            "Policy set reloads refused (the previous set kept serving)",
            policy_reload_failures.clone(),
        );
        registry.register_with_unit(
            "tls_certificate_expiry_timestamp",
            "notAfter of the serving certificate, seconds since the Unix epoch",
            Unit::Seconds,
            certificate_expiry.clone(),
        );
        registry.register(
            "tls_certificate_reload_failures",
            "Certificate reloads refused (the previous pair kept serving)",
            certificate_reload_failures.clone(),
        );
        registry.register(
            "build",
            "The running build",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(load::LoadCollector(load)));
        Self {
            inner: Arc::new(Inner {
                registry,
                families,
                requests,
                request_duration,
                policy_set_generation,
                policy_reload_failures,
                certificate_expiry,
                certificate_reload_failures,
            }),
        }
    }

    /// Handles for policy `name` in `mode`, made once when its set is built. A policy of the
    /// same name and mode in a later set shares its series.
    pub fn policy_meter(&self, name: &str, mode: Mode) -> PolicyMeter {
        PolicyMeter::registered(&self.inner.families, name, mode)
    }

    /// Records one answered request.
    pub fn request(&self, endpoint: Endpoint, answered: Answered, elapsed: Duration) {
        self.inner
            .requests
            .get_or_create(&RequestLabels {
                endpoint,
                decision: answered,
            })
            .inc();
        self.inner
            .request_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }

    /// A policy set was installed: the generation goes up by one (to 1 for the set loaded at
    /// start).
    pub fn policy_set_installed(&self) {
        self.inner.policy_set_generation.inc();
    }

    /// A policy set reload was refused.
    pub fn policy_reload_failed(&self) {
        self.inner.policy_reload_failures.inc();
    }

    /// A serving certificate chain was installed: the expiry gauge becomes its leaf's
    /// `notAfter`. A leaf whose dates cannot be read leaves the gauge as it was, and says why.
    pub fn certificate_installed(
        &self,
        chain: &[CertificateDer<'_>],
    ) -> Result<(), certificate::ExpiryError> {
        let not_after = certificate::not_after(chain)?;
        self.inner.certificate_expiry.set(not_after);
        Ok(())
    }

    /// A certificate reload was refused.
    pub fn certificate_reload_failed(&self) {
        self.inner.certificate_reload_failures.inc();
    }

    /// Every metric, as text in `format`.
    pub fn encode(&self, format: Format) -> Result<String, std::fmt::Error> {
        let mut text = String::with_capacity(16 * 1024);
        match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry)?
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.inner.registry)?
            }
        }
        Ok(text)
    }
}
