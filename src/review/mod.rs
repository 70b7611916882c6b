//! The AdmissionReview v1 wire format: decoding what the kube-apiserver sends and encoding
//! the answer exactly as it expects, including the RFC 6902 patch.
//!
//! No I/O here: bytes in, bytes out.

pub mod answer;
pub mod decode;
pub mod patch;
pub mod respond;
pub mod synthetic;

pub use answer::{Admission, Answer};
pub use decode::{DecodeError, Operation, Review};
