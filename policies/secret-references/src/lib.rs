//! Placeholder for the `secret-references` policy; its owner replaces this file.
