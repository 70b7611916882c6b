//! Placeholder for the `default-resources` policy; its owner replaces this file.
