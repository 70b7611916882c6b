//! The Portcullis policy SDK: everything a Rust policy needs to speak ABI v1.
//!
//! A policy is a pure function from a [`ValidationRequest`] to a [`ValidationResponse`]. The SDK
//! owns the wire types ([`request`], [`response`]), the settings contract ([`settings`]), the raw
//! Wasm exports ([`abi`], via [`export_policy!`]), the Kubernetes knowledge every workload policy
//! needs ([`pods`]: where pod specs live in Pods, Deployments, Jobs and ML CRDs), quantities
//! ([`quantity`]) and, natively only, the fixture harness ([`testing`]).
//!
//! Every evaluation runs in a fresh Wasm instance, so nothing here caches or initialises lazily:
//! set-up per call must stay trivial.

pub mod abi;
#[cfg(target_arch = "wasm32")]
pub mod bump;
pub mod gpu;
pub mod pods;
pub mod quantity;
pub mod request;
pub mod response;
pub mod settings;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

pub use pods::{
    ContainerList, ContainerRef, PodSpecLocation, container_pointers, containers, describe,
    describe_pod_spec, object_name, pod_spec_pointers, pod_specs,
};
pub use request::{AdmissionRequest, GroupVersionKind, Operation, ValidationRequest};
pub use response::{SettingsValidation, ValidationResponse};
pub use serde_json::{Value, json};
pub use settings::Settings;
