//! Policy ABI version 1 for core Wasm modules, as specified in `policies/README.md`.
//!
//! The module exports `memory`, `allocate(len: i32) -> i32`, `validate(ptr: i32, len: i32) ->
//! i64` and optionally `validate_settings(ptr, len) -> i64`. The host asks `allocate` for room,
//! writes the UTF-8 JSON input there, calls the entry point and reads the output whose pointer
//! and length are packed into the i64 (pointer in the high 32 bits). Every guest-supplied
//! pointer and length is checked against linear memory before it is read: the guest is hostile.

use wasmtime::{Instance, Module, Store, ValType};

use super::{Transport, exports_func, exports_memory};
use crate::engine::compiled::{CallError, Export, HostState};

/// The most output a policy may return; larger output is an ABI violation, checked before
/// anything is allocated. Room for a mutated object as large as the API server accepts in a
/// request (3 MiB, also our default body limit) plus 1 MiB of message and warnings. It bounds
/// what one policy can add to a response; the policy layer bounds the response as a whole.
pub const MAX_OUTPUT_BYTES: u32 = 4 << 20;

/// The WASI reactor constructor: when exported, called once on every fresh instance, before
/// `allocate`, under the same deadline and memory cap.
pub const INITIALIZE: &str = "_initialize";

/// Runs the module's `_initialize` on a fresh `instance`.
pub async fn initialize(store: &mut Store<HostState>, instance: &Instance) -> Result<(), CallError> {
    let init = instance
        .get_typed_func::<(), ()>(&mut *store, INITIALIZE)
        .map_err(|e| CallError::Abi(format!("export `{INITIALIZE}`: {e}")))?;
    init.call_async(&mut *store, ())
        .await
        .map_err(|e| match CallError::from_wasmtime(e, store) {
            CallError::Trap(msg) => CallError::Instantiate(format!("{INITIALIZE} trapped: {msg}")),
            other => other,
        })
}

/// Checks the exports ABI v1 requires and their signatures.
pub fn detect(module: &Module) -> Result<Transport, String> {
    detect_exports(module).map_err(|problem| format!("policy ABI v1: {problem}"))
}

fn detect_exports(module: &Module) -> Result<Transport, String> {
    use ValType::{I32, I64};
    if !exports_memory(module) {
        return Err("missing export `memory` (a linear memory)".into());
    }
    if !exports_func(module, "allocate", &[I32], &[I32])? {
        return Err("missing export `allocate(len: i32) -> i32`".into());
    }
    if !exports_func(module, Export::Validate.name(), &[I32, I32], &[I64])? {
        return Err("missing export `validate(ptr: i32, len: i32) -> i64`".into());
    }
    let validates_settings = exports_func(module, Export::ValidateSettings.name(), &[I32, I32], &[I64])?;
    let initializes = exports_func(module, INITIALIZE, &[], &[])?;
    Ok(Transport::CoreV1 {
        validates_settings,
        initializes,
    })
}

/// Runs `export` over `input` in a fresh `instance` and returns the output bytes.
pub async fn call(
    store: &mut Store<HostState>,
    instance: &Instance,
    export: Export,
    input: &[u8],
) -> Result<Vec<u8>, CallError> {
    let memory = instance
        .get_memory(&mut *store, "memory")
        .ok_or_else(|| CallError::Abi("missing export `memory`".into()))?;
    let allocate = instance
        .get_typed_func::<i32, i32>(&mut *store, "allocate")
        .map_err(|e| CallError::Abi(format!("export `allocate`: {e}")))?;
    let entry = instance
        .get_typed_func::<(i32, i32), i64>(&mut *store, export.name())
        .map_err(|e| CallError::Abi(format!("export `{}`: {e}", export.name())))?;
    let len = i32::try_from(input.len()).map_err(|_| {
        CallError::Abi(format!(
            "input of {} bytes does not fit an i32 length",
            input.len()
        ))
    })?;
    let ptr = allocate
        .call_async(&mut *store, len)
        .await
        .map_err(|e| CallError::from_wasmtime(e, store))?;
    // Reinterpret the guest's i32 as the unsigned address it stands for.
    let start = ptr.cast_unsigned() as usize;
    memory.write(&mut *store, start, input).map_err(|_| {
        CallError::Abi(format!(
            "allocate({len}) returned {start:#x}, which does not leave {len} bytes inside linear memory of {} bytes",
            memory.data_size(&*store)
        ))
    })?;
    let packed = entry
        .call_async(&mut *store, (ptr, len))
        .await
        .map_err(|e| CallError::from_wasmtime(e, store))?;
    let (out_ptr, out_len) = unpack(packed);
    if out_len > MAX_OUTPUT_BYTES {
        return Err(CallError::Abi(format!(
            "output of {out_len} bytes exceeds the limit of {MAX_OUTPUT_BYTES} bytes"
        )));
    }
    let mut out = vec![0; out_len as usize];
    memory.read(&*store, out_ptr as usize, &mut out).map_err(|_| {
        CallError::Abi(format!(
            "output at {out_ptr:#x} with length {out_len} lies outside linear memory of {} bytes",
            memory.data_size(&*store)
        ))
    })?;
    Ok(out)
}

/// Splits the packed result: pointer in the high 32 bits, length in the low 32 bits.
pub fn unpack(packed: i64) -> (u32, u32) {
    let bits = packed.cast_unsigned();
    ((bits >> 32) as u32, (bits & 0xffff_ffff) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpack_splits_pointer_and_length() {
        assert_eq!(unpack(0), (0, 0));
        assert_eq!(unpack((0x1234_i64 << 32) | 0x56), (0x1234, 0x56));
        assert_eq!(unpack(-1), (u32::MAX, u32::MAX));
        assert_eq!(unpack(i64::MIN), (0x8000_0000, 0));
    }
}
