//! Policy ABIs ("transports"): how bytes get into a policy instance and a verdict out of it.
//!
//! Version 1 is the core-module ABI in [`core_v1`]; [`component`] carries the same JSON to a
//! WebAssembly component. Later transports (WASI command modules, Kubewarden's waPC) are added
//! here as further variants of [`Transport`], chosen
//! from a module's imports and exports at compile time, behind the same
//! [`crate::engine::CompiledModule::call`].

pub mod component;
pub mod core_v1;

/// The ABI a compiled module speaks, detected once at compile time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// ABI v1: `memory`, `allocate`, `validate` and optionally `validate_settings` and
    /// `_initialize`.
    CoreV1 {
        /// Whether the module exports `validate_settings`.
        validates_settings: bool,
        /// Whether the module exports `_initialize`, the WASI reactor's constructor (Go's
        /// `-buildmode=c-shared` runtime, C++ static constructors), called once per instance
        /// before any other export.
        initializes: bool,
    },
    /// A component of the `portcullis:policy` world (`policies/wit/`): `validate` and
    /// optionally `validate-settings`, each `func(string) -> string`. See [`component`].
    Component {
        /// Whether the component exports `validate-settings`.
        validates_settings: bool,
    },
}

impl Transport {
    /// Works out which ABI `module` implements from its exports, or says what is missing.
    pub fn detect(module: &wasmtime::Module) -> Result<Self, String> {
        core_v1::detect(module)
    }
}
