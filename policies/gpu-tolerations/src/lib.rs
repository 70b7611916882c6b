//! Placeholder for the `gpu-tolerations` policy; its owner replaces this file.
