//! What the server holds, read at scrape time: open connections, requests admitted and body
//! bytes reserved, each now and at its peak.
//!
//! The gauges of [`crate::server::load::Load`] are kept by the request path anyway; a collector
//! reads them when scraped, so exposing them costs the request path nothing.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::server::load::{Gauge, Load};

/// Encodes a [`Load`]'s gauges on every scrape.
#[derive(Debug)]
pub(super) struct LoadCollector(pub(super) Arc<Load>);

/// One gauge of [`Load`] as exported: its name, its unit, and the help of its current value
/// and of its peak.
struct Exported<'a> {
    name: &'static str,
    unit: Option<Unit>,
    now: &'static str,
    peak: &'static str,
    gauge: &'a Gauge,
}

impl Collector for LoadCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let load = &self.0;
        let exported = [
            Exported {
                name: "open_connections",
                unit: None,
                now: "Connections open now.",
                peak: "The most connections open at once since start.",
                gauge: &load.connections,
            },
            Exported {
                name: "requests_in_flight",
                unit: None,
                now: "Review requests admitted and not yet answered.",
                peak: "The most review requests in flight at once since start.",
                gauge: &load.requests,
            },
            Exported {
                name: "request_body_reserved",
                unit: Some(Unit::Bytes),
                now: "Request body bytes reserved from the body budget now.",
                peak: "The most request body bytes reserved at once since start.",
                gauge: &load.body_bytes,
            },
        ];
        for e in exported {
            let now = ConstGauge::new(clamp(e.gauge.current()));
            now.encode(encoder.encode_descriptor(e.name, e.now, e.unit.as_ref(), now.metric_type())?)?;
            // With a unit, the encoder appends it: `request_body_reserved_peak_bytes`.
            let peak_name = format!("{}_peak", e.name);
            let peak = ConstGauge::new(clamp(e.gauge.peak()));
            peak.encode(encoder.encode_descriptor(
                &peak_name,
                e.peak,
                e.unit.as_ref(),
                peak.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
