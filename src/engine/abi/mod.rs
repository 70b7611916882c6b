//! Policy ABIs ("transports"): how bytes get into a policy instance and a verdict out of it.
//!
//! Every transport carries the same payload, ABI v1's ValidationRequest and ValidationResponse
//! JSON (policies/README.md), so nothing above the engine learns which one a policy speaks:
//!
//! - [`core_v1`]: ABI v1's core-module exports (`allocate`, `validate`), the fastest;
//! - [`wasi_command`]: a WASI preview 1 command (`_start`), JSON on stdin and stdout;
//! - [`wapc`]: waPC as Kubewarden's policy-server speaks it, so Kubewarden policies run
//!   unmodified;
//! - [`component`]: a WebAssembly component of the `portcullis:policy` WIT world
//!   (`policies/wit/`), the door for Python and JavaScript.
//!
//! A component is told from a core module by its header; a core module's transport is detected
//! once at compile time from its exports, or taken from the policy's `abi:` setting ([`Abi`])
//! when the configuration insists on one.

pub mod component;
pub mod core_v1;
pub mod wapc;
pub mod wasi_command;

use std::fmt;

use serde::Deserialize;
use wasmtime::{ExternType, Module, ValType};

/// The transport a policy's configuration may insist on (`abi:`), instead of detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Abi {
    /// ABI v1's core-module exports.
    Core,
    /// A WASI preview 1 command.
    Wasi,
    /// Kubewarden's waPC.
    Wapc,
    /// A WebAssembly component.
    Component,
}

impl fmt::Display for Abi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Core => "core",
            Self::Wasi => "wasi",
            Self::Wapc => "wapc",
            Self::Component => "component",
        })
    }
}

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
    /// A WASI preview 1 command: `_start` reads the input on stdin and writes the output on
    /// stdout; the operation is its first argument.
    WasiCommand,
    /// Kubewarden's waPC: `__guest_call` and the `wapc` host functions.
    Wapc {
        /// Whether the module exports `_start` (TinyGo's runtime start), called first.
        starts: bool,
        /// Whether the module exports `wapc_init`, where the guest registers its operations.
        registers: bool,
    },
    /// A component of the `portcullis:policy` world (`policies/wit/`): `validate` and
    /// optionally `validate-settings`, each `func(string) -> string`. See [`component`].
    Component {
        /// Whether the component exports `validate-settings`.
        validates_settings: bool,
    },
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CoreV1 {
                validates_settings,
                initializes,
            } => {
                write!(f, "core (ABI v1)")?;
                if *validates_settings {
                    write!(f, ", validate_settings")?;
                }
                if *initializes {
                    write!(f, ", _initialize")?;
                }
                Ok(())
            }
            Self::WasiCommand => write!(f, "wasi (WASI preview 1 command, `_start`)"),
            Self::Wapc { starts, registers } => {
                write!(f, "wapc (Kubewarden waPC, `__guest_call`)")?;
                if *starts {
                    write!(f, ", _start")?;
                }
                if *registers {
                    write!(f, ", wapc_init")?;
                }
                Ok(())
            }
            Self::Component { validates_settings } => {
                write!(f, "component (WIT world portcullis:policy)")?;
                if *validates_settings {
                    write!(f, ", validate-settings")?;
                }
                Ok(())
            }
        }
    }
}

impl Transport {
    /// Works out which ABI `module` implements from its exports, or says what is missing. A
    /// `__guest_call` export means waPC; ABI v1's `allocate` or `validate` means core; otherwise a
    /// `_start` export means a WASI command. A module that is none of these is judged as a core
    /// module, whose missing exports the error names.
    pub fn detect(module: &Module) -> Result<Self, String> {
        if module.get_export(wapc::GUEST_CALL).is_some() {
            return wapc::detect(module);
        }
        let core = ["allocate", "validate"]
            .iter()
            .any(|name| module.get_export(name).is_some());
        if !core && module.get_export(wasi_command::START).is_some() {
            return wasi_command::detect(module);
        }
        core_v1::detect(module)
    }

    /// Checks that `module` implements `abi`, as the configuration insists.
    pub fn detect_as(module: &Module, abi: Abi) -> Result<Self, String> {
        match abi {
            Abi::Core => core_v1::detect(module),
            Abi::Wasi => wasi_command::detect(module),
            Abi::Wapc => wapc::detect(module),
            Abi::Component => Err("a component: the binary is a core module".to_owned()),
        }
    }

    /// Whether the module can judge its own settings. The WASI and waPC transports always can:
    /// like Kubewarden, they require the operation.
    pub fn validates_settings(self) -> bool {
        match self {
            Self::CoreV1 {
                validates_settings, ..
            } => validates_settings,
            Self::Component {
                validates_settings, ..
            } => validates_settings,
            Self::WasiCommand | Self::Wapc { .. } => true,
        }
    }
}

/// Whether `module` exports a function `name` of exactly `params -> results`: `Ok(false)` when it
/// has no such export, an error naming the export when it has one of another type.
pub(crate) fn exports_func(
    module: &Module,
    name: &str,
    params: &[ValType],
    results: &[ValType],
) -> Result<bool, String> {
    let f = match module.get_export(name) {
        None => return Ok(false),
        Some(ExternType::Func(f)) => f,
        Some(other) => return Err(format!("export `{name}` must be a function, found {other:?}")),
    };
    let same = |a: &mut dyn ExactSizeIterator<Item = ValType>, b: &[ValType]| {
        a.len() == b.len() && a.zip(b).all(|(x, y)| ValType::eq(&x, y))
    };
    if same(&mut f.params(), params) && same(&mut f.results(), results) {
        Ok(true)
    } else {
        Err(format!(
            "export `{name}` has signature {f}, expected {}",
            signature(params, results)
        ))
    }
}

/// `(func (param i32 i32) (result i64))`, as wasmtime prints a function type.
pub(crate) fn signature(params: &[ValType], results: &[ValType]) -> String {
    let list = |v: &[ValType]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
    format!("(func (param {}) (result {}))", list(params), list(results))
}

/// Whether `module` exports a linear memory called `memory`.
pub(crate) fn exports_memory(module: &Module) -> bool {
    matches!(module.get_export("memory"), Some(ExternType::Memory(_)))
}

/// ABI v1 input, with Kubewarden's settings convention: Kubewarden hands a policy without
/// settings an empty object, where ABI v1 hands it `null`, and a Kubewarden policy decoding its
/// settings into a struct refuses `null`. `validate` input is ABI v1's
/// `{"request":...,"settings":<settings>}` built by concatenation, so the settings are its tail.
pub(crate) fn kubewarden_input(export: crate::engine::Export, input: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    use crate::engine::Export;
    const NULL_TAIL: &[u8] = br#","settings":null}"#;
    match export {
        Export::ValidateSettings if input.trim_ascii() == b"null" => std::borrow::Cow::Borrowed(b"{}"),
        Export::Validate if input.ends_with(NULL_TAIL) => {
            let mut owned = input[..input.len() - NULL_TAIL.len()].to_vec();
            owned.extend_from_slice(br#","settings":{}}"#);
            std::borrow::Cow::Owned(owned)
        }
        _ => std::borrow::Cow::Borrowed(input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Export;

    #[test]
    fn kubewarden_policies_get_an_empty_object_for_absent_settings() {
        let got = |export, input: &[u8]| kubewarden_input(export, input).into_owned();
        assert_eq!(got(Export::ValidateSettings, b" null "), b"{}");
        assert_eq!(got(Export::ValidateSettings, b"{\"a\":null}"), b"{\"a\":null}");
        assert_eq!(
            got(Export::Validate, br#"{"request":{"uid":"1"},"settings":null}"#),
            br#"{"request":{"uid":"1"},"settings":{}}"#
        );
        assert_eq!(
            got(Export::Validate, br#"{"request":{},"settings":{"x":null}}"#),
            br#"{"request":{},"settings":{"x":null}}"#
        );
    }

    #[test]
    fn abi_names_parse_as_the_configuration_writes_them() {
        for (text, abi) in [
            ("core", Abi::Core),
            ("wasi", Abi::Wasi),
            ("wapc", Abi::Wapc),
            ("component", Abi::Component),
        ] {
            let parsed: Abi = serde_json::from_value(serde_json::json!(text)).expect("parses");
            assert_eq!(parsed, abi);
            assert_eq!(parsed.to_string(), text);
        }
        assert!(serde_json::from_value::<Abi>(serde_json::json!("WASI")).is_err());
    }
}
