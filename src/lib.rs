//! Portcullis: a Kubernetes admission webhook that runs sandboxed WebAssembly policies.
//!
//! The modules follow the data path: [`server`] (socket, TLS, HTTP) → [`review`] (decode the
//! AdmissionReview, encode the answer) → [`policy`] (match, evaluate, merge verdicts) →
//! [`engine`] (the Wasm sandbox). [`config`] turns the YAML file into policy specs; [`certs`]
//! makes the TLS material; [`reload`] swaps the certificate and the policy set while serving;
//! [`metrics`] counts what the server does; [`app`] composes them into the `serve` command;
//! [`check`] runs the
//! same policies over manifest files, offline; [`audit`] runs them over what a cluster already
//! stores.

pub mod app;
pub mod audit;
pub mod authoring;
pub mod certs;
pub mod check;
pub mod cli;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod policy;
pub mod reload;
pub mod review;
pub mod server;
pub mod telemetry;
