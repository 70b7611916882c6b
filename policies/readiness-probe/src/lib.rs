//! Placeholder for the `readiness-probe` policy; its owner replaces this file.
