//! Placeholder for the `no-plaintext-secrets` policy; its owner replaces this file.
