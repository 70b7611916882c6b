//! ABI v1: how the webhook and a policy module exchange bytes.
//!
//! The host calls `allocate(len) -> ptr`, writes `len` bytes of JSON there, then calls
//! `validate(ptr, len)` (or `validate_settings(ptr, len)`), which returns an `i64` packing the
//! output's pointer and length as `(ptr << 32) | len`. Every evaluation runs in a fresh instance,
//! so nothing is ever freed: buffers are leaked on purpose and vanish with the instance.
//!
//! The pure parts (packing, JSON in → JSON out) are ordinary functions tested natively; only the
//! few lines that turn guest addresses into slices live in [`guest`], compiled for wasm32 alone.
//! This module is the only place in the SDK allowed to use `unsafe`.
#![allow(unsafe_code)]

use serde::Serialize;

use crate::request::ValidationRequest;
use crate::response::{SettingsValidation, ValidationResponse};
use crate::settings::Settings;

/// Emitted if serialising a response ever fails (it cannot for these types, but a policy fault
/// must still be a well-formed rejection, never a trap).
const UNSERIALISABLE: &[u8] =
    br#"{"accepted":false,"message":"policy error: the response could not be serialised"}"#;

/// Packs an output location into the `i64` that `validate` returns: pointer high, length low.
pub fn pack(ptr: u32, len: u32) -> i64 {
    ((u64::from(ptr) << 32) | u64::from(len)) as i64
}

/// Inverse of [`pack`], as the host performs it.
pub fn unpack(packed: i64) -> (u32, u32) {
    let bits = packed as u64;
    ((bits >> 32) as u32, bits as u32)
}

/// Runs a policy over raw ABI input bytes and returns the raw output bytes.
///
/// Malformed input (not JSON, missing `request`, settings of the wrong shape) and settings that
/// fail [`Settings::validate`] become rejections whose message says so, never a panic.
pub fn run_validate<S: Settings>(
    input: &[u8],
    validate: fn(&ValidationRequest<S>) -> ValidationResponse,
) -> Vec<u8> {
    let response = match serde_json::from_slice::<ValidationRequest<S>>(input) {
        Err(e) => ValidationResponse::reject(format!(
            "policy input was malformed (expected {{\"request\": <AdmissionRequest>, \"settings\": <settings>}}): {e}"
        )),
        Ok(request) => match request.settings.validate() {
            Err(e) => ValidationResponse::reject(format!("policy settings are invalid: {e}")),
            Ok(()) => validate(&request),
        },
    };
    to_json(&response)
}

/// Checks raw settings bytes: invalid if they do not deserialise into `S` (the message is serde's
/// error) or if [`Settings::validate`] fails. `null` means the defaults, as in [`run_validate`].
pub fn run_validate_settings<S: Settings>(input: &[u8]) -> Vec<u8> {
    let answer = match serde_json::from_slice::<Option<S>>(input) {
        Err(e) => SettingsValidation::invalid(format!("settings do not deserialise: {e}")),
        Ok(settings) => match settings.unwrap_or_default().validate() {
            Err(e) => SettingsValidation::invalid(e),
            Ok(()) => SettingsValidation::valid(),
        },
    };
    to_json(&answer)
}

fn to_json(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| UNSERIALISABLE.to_vec())
}

/// Rejection for a call whose pointer/length pair cannot describe an input buffer.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn bad_location(len: i32) -> Vec<u8> {
    to_json(&ValidationResponse::reject(format!(
        "policy input was malformed: invalid input location (length {len})"
    )))
}

/// The wasm32 side: raw exports' bodies. `export_policy!` forwards to these.
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod guest {
    use super::*;

    /// `allocate(len) -> ptr`: `len` zeroed, writable bytes that stay valid for the instance's
    /// lifetime (leaked). A negative length yields 0, which no valid buffer has.
    pub fn allocate(len: i32) -> i32 {
        let Ok(len) = usize::try_from(len) else {
            return 0;
        };
        let buffer: &'static mut [u8] = Box::leak(vec![0u8; len].into_boxed_slice());
        buffer.as_mut_ptr() as usize as i32
    }

    /// Reads the input the host placed at `ptr`.
    fn input(ptr: i32, len: i32) -> Option<&'static [u8]> {
        let len = usize::try_from(len).ok()?;
        let ptr = ptr as u32 as usize as *const u8;
        if ptr.is_null() && len > 0 {
            return None;
        }
        if len == 0 {
            return Some(&[]);
        }
        // SAFETY: ABI v1 requires `ptr` to come from `allocate(len)` in this same instance, which
        // leaked a live, initialised buffer of exactly `len` bytes that nothing else mutates.
        // Should a host break that contract, the worst case is a read outside linear memory, which
        // Wasm bounds checks turn into a trap (a policy fault), not undefined host behaviour.
        Some(unsafe { core::slice::from_raw_parts(ptr, len) })
    }

    /// Leaks `output` and returns its packed location.
    fn output(output: Vec<u8>) -> i64 {
        let leaked: &'static mut [u8] = Box::leak(output.into_boxed_slice());
        pack(leaked.as_ptr() as usize as u32, leaked.len() as u32)
    }

    /// Body of the `validate` export.
    pub fn validate<S: Settings>(
        ptr: i32,
        len: i32,
        policy: fn(&ValidationRequest<S>) -> ValidationResponse,
    ) -> i64 {
        output(match input(ptr, len) {
            Some(bytes) => run_validate(bytes, policy),
            None => bad_location(len),
        })
    }

    /// Body of the `validate_settings` export.
    pub fn validate_settings<S: Settings>(ptr: i32, len: i32) -> i64 {
        output(match input(ptr, len) {
            Some(bytes) => run_validate_settings::<S>(bytes),
            None => to_json(&SettingsValidation::invalid(format!(
                "settings input location is invalid (length {len})"
            ))),
        })
    }
}

/// Exports a policy under ABI v1.
///
/// `export_policy!(MySettings, my_validate)` where `my_validate: fn(&ValidationRequest<MySettings>)
/// -> ValidationResponse`. On wasm32 this generates the `allocate`, `validate` and
/// `validate_settings` exports; natively it only type-checks the pair, so the policy's rlib can be
/// unit-tested and linked into the fixture harness without symbol clashes. Use it once per crate,
/// at the crate root.
#[macro_export]
macro_rules! export_policy {
    ($settings:ty, $validate:path) => {
        const _: fn(&$crate::ValidationRequest<$settings>) -> $crate::ValidationResponse = $validate;

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        type __PortcullisSettings = $settings;

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        const __PORTCULLIS_VALIDATE: fn(&$crate::ValidationRequest<$settings>) -> $crate::ValidationResponse =
            $validate;

        /// ABI v1 exports, generated by `export_policy!`.
        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        #[allow(unsafe_code)]
        mod __portcullis_abi_v1 {
            /// ABI v1 `allocate(len) -> ptr`.
            #[unsafe(no_mangle)]
            pub extern "C" fn allocate(len: i32) -> i32 {
                $crate::abi::guest::allocate(len)
            }

            /// ABI v1 `validate(ptr, len) -> (out_ptr << 32) | out_len`.
            #[unsafe(no_mangle)]
            pub extern "C" fn validate(ptr: i32, len: i32) -> i64 {
                $crate::abi::guest::validate::<super::__PortcullisSettings>(
                    ptr,
                    len,
                    super::__PORTCULLIS_VALIDATE,
                )
            }

            /// ABI v1 `validate_settings(ptr, len) -> (out_ptr << 32) | out_len`.
            #[unsafe(no_mangle)]
            pub extern "C" fn validate_settings(ptr: i32, len: i32) -> i64 {
                $crate::abi::guest::validate_settings::<super::__PortcullisSettings>(ptr, len)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::{Value, json};

    #[derive(Deserialize, Default, Debug)]
    #[serde(default, deny_unknown_fields)]
    struct Knobs {
        max: u32,
    }
    impl Settings for Knobs {
        fn validate(&self) -> Result<(), String> {
            if self.max > 10 {
                Err(format!("max must be at most 10, got {}", self.max))
            } else {
                Ok(())
            }
        }
    }

    fn echo_max(r: &ValidationRequest<Knobs>) -> ValidationResponse {
        ValidationResponse::reject(format!("{} max={}", r.request.uid, r.settings.max))
    }

    fn call(input: Value) -> Value {
        let bytes = serde_json::to_vec(&input).expect("test input serialises");
        serde_json::from_slice(&run_validate(&bytes, echo_max)).expect("output is JSON")
    }

    fn request() -> Value {
        json!({"uid": "u1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE"})
    }

    #[test]
    fn pack_round_trips_extremes() {
        for (p, l) in [
            (0, 0),
            (1, 2),
            (u32::MAX, 0),
            (0, u32::MAX),
            (u32::MAX, u32::MAX),
            (0x10_0000, 77),
        ] {
            assert_eq!(unpack(pack(p, l)), (p, l));
        }
        assert_eq!(pack(1, 2), (1i64 << 32) | 2);
        assert!(
            pack(u32::MAX, 1) < 0,
            "high pointers set the sign bit; hosts must unpack as u64"
        );
    }

    #[test]
    fn validate_passes_request_and_settings() {
        let out = call(json!({"request": request(), "settings": {"max": 4}}));
        assert_eq!(out, json!({"accepted": false, "message": "u1 max=4"}));
        let out = call(json!({"request": request()}));
        assert_eq!(out["message"], "u1 max=0");
    }

    #[test]
    fn malformed_input_is_a_rejection_not_a_panic() {
        for bytes in [&b""[..], b"{", b"[]", b"{\"settings\": {}}", b"\xff\xfe"] {
            let out: Value = serde_json::from_slice(&run_validate(bytes, echo_max)).expect("output is JSON");
            assert_eq!(out["accepted"], false);
            let msg = out["message"].as_str().expect("message");
            assert!(msg.starts_with("policy input was malformed"), "{msg}");
        }
        let out = call(json!({"request": request(), "settings": {"max": "four"}}));
        assert!(out["message"].as_str().expect("message").contains("malformed"));
    }

    #[test]
    fn settings_that_fail_validation_reject_the_request() {
        let out = call(json!({"request": request(), "settings": {"max": 11}}));
        assert_eq!(
            out,
            json!({"accepted": false, "message": "policy settings are invalid: max must be at most 10, got 11"})
        );
    }

    #[test]
    fn validate_settings_reports_serde_and_semantic_errors() {
        let check = |s: &str| -> Value {
            serde_json::from_slice(&run_validate_settings::<Knobs>(s.as_bytes())).expect("JSON")
        };
        assert_eq!(check("{}"), json!({"valid": true}));
        assert_eq!(check("null"), json!({"valid": true}));
        assert_eq!(check(r#"{"max": 3}"#), json!({"valid": true}));
        assert_eq!(
            check(r#"{"max": 30}"#),
            json!({"valid": false, "message": "max must be at most 10, got 30"})
        );
        let typo = check(r#"{"maxx": 3}"#);
        assert_eq!(typo["valid"], false);
        assert!(
            typo["message"]
                .as_str()
                .expect("message")
                .contains("unknown field `maxx`")
        );
        assert_eq!(check("not json")["valid"], false);
    }

    /// Property: whatever bytes arrive (valid input with random corruption, or noise), the
    /// output is a JSON response with a boolean verdict, never a panic.
    #[test]
    fn any_input_yields_a_well_formed_response() {
        let mut rng = crate::testing::Rng::new(0xAB1);
        let valid =
            serde_json::to_vec(&json!({"request": request(), "settings": {"max": 2}})).expect("serialises");
        for case in 0..2000 {
            let mut bytes = valid.clone();
            match case % 3 {
                0 => {
                    for _ in 0..=rng.below(4) {
                        let at = rng.below(bytes.len());
                        bytes[at] = rng.next_u64() as u8;
                    }
                }
                1 => bytes.truncate(rng.below(bytes.len())),
                _ => bytes = rng.string("{}[]\":,0123456789truefalsn \\", 40).into_bytes(),
            }
            for output in [
                run_validate(&bytes, echo_max),
                run_validate_settings::<Knobs>(&bytes),
            ] {
                let out: Value = serde_json::from_slice(&output).expect("output is JSON");
                assert!(out["accepted"].is_boolean() || out["valid"].is_boolean(), "{out}");
            }
        }
    }

    #[test]
    fn bad_location_is_a_malformed_input_rejection() {
        let out: Value = serde_json::from_slice(&bad_location(-1)).expect("JSON");
        assert_eq!(out["accepted"], false);
        assert!(out["message"].as_str().expect("message").contains("malformed"));
    }
}
