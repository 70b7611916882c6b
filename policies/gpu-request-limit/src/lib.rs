//! Placeholder for the `gpu-request-limit` policy; its owner replaces this file.
