//! Placeholder for the `gpu-node-isolation` policy; its owner replaces this file.
