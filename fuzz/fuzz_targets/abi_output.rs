//! Fuzzes the decoding of a policy's ABI v1 output: [`Verdict::from_output`] over the bytes a
//! guest returned, for both policy kinds, and [`core_v1::unpack`] over the packed i64 that
//! locates them. A guest is hostile, so any bytes must give a verdict (a fault at worst).
//!
//! Properties:
//! - `unpack` loses nothing: the pointer and length pack back into the same i64;
//! - the two kinds agree on every output except those carrying a `mutated_object`, and a
//!   validating policy never yields a mutation;
//! - a rejection's code is an HTTP error status and its message is not empty; a mutation is a
//!   JSON object;
//! - a decided verdict (accept or reject), written back as canonical ABI output, decodes to the
//!   same verdict.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::engine::abi::core_v1::unpack;
use portcullis::policy::bounded;
use portcullis::policy::spec::PolicyKind;
use portcullis::policy::verdict::{Fault, Verdict};
use serde_json::{Value, json};

/// The canonical ABI v1 output for a decided verdict; `None` for a fault.
fn wire(verdict: &Verdict) -> Option<Value> {
    match verdict {
        Verdict::Accept {
            mutated,
            warnings,
            audit,
        } => Some(json!({
            "accepted": true,
            "mutated_object": mutated,
            "warnings": warnings,
            "audit_annotations": audit,
        })),
        Verdict::Reject {
            message,
            code,
            warnings,
            audit,
        } => Some(json!({
            "accepted": false,
            "message": message,
            "code": code,
            "warnings": warnings,
            "audit_annotations": audit,
        })),
        // Only the host makes this verdict, from two policy answers, never from output.
        Verdict::Existing { .. } => panic!("policy output decoded as an existing violation"),
        Verdict::Fault(_) => None,
    }
}

/// Equality of JSON values up to the last bits of a float. serde_json's default float parser
/// (without its `float_roundtrip` feature) is not correctly rounded: the float it reads back
/// from its own output can be a few ulps off (1.1111111110000001e39 becomes
/// 1.1111111109999998e39; regressions/abi_output/float-reprinted-inexactly.json), and more
/// among subnormals.
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            let difference = (x - y).abs();
            x == y || difference <= 1e-12 * x.abs().max(y.abs()) || difference <= f64::MIN_POSITIVE
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && same_json(vx, vy))
        }
        _ => a == b,
    }
}

fn same_verdict(a: &Verdict, b: &Verdict) -> bool {
    match (a, b) {
        (
            Verdict::Accept {
                mutated: Some(x),
                warnings: wx,
                audit: ax,
            },
            Verdict::Accept {
                mutated: Some(y),
                warnings: wy,
                audit: ay,
            },
        ) => same_json(x, y) && wx == wy && ax == ay,
        _ => a == b,
    }
}

fn check_decided(verdict: &Verdict, kind: PolicyKind) {
    match verdict {
        Verdict::Accept { mutated, .. } => {
            if let Some(object) = mutated {
                assert_eq!(kind, PolicyKind::Mutating, "a validating policy mutated");
                assert!(object.is_object(), "a mutation that is not an object");
            }
        }
        Verdict::Reject { message, code, .. } => {
            assert!((400..=599).contains(code), "code {code}");
            assert!(!message.is_empty());
        }
        Verdict::Existing { .. } => panic!("policy output decoded as an existing violation"),
        Verdict::Fault(_) => return,
    }
    let Some(canonical) = wire(verdict) else {
        return;
    };
    // Past the warning bound the host appends a count line, which would be cut again: the round
    // trip holds only for what the bounds kept whole.
    if canonical["warnings"]
        .as_array()
        .is_some_and(|w| w.len() > bounded::WARNINGS)
    {
        return;
    }
    let again = Verdict::from_output(canonical.to_string().as_bytes(), kind);
    assert!(
        same_verdict(&again, verdict),
        "{verdict:?} written as {canonical} decodes as {again:?}"
    );
}

fuzz_target!(|bytes: &[u8]| {
    if let Some(head) = bytes.first_chunk::<8>() {
        let packed = i64::from_le_bytes(*head);
        let (ptr, len) = unpack(packed);
        assert_eq!(((u64::from(ptr) << 32) | u64::from(len)).cast_signed(), packed);
    }

    let validating = Verdict::from_output(bytes, PolicyKind::Validating);
    let mutating = Verdict::from_output(bytes, PolicyKind::Mutating);
    if validating == Verdict::Fault(Fault::UnexpectedMutation) {
        assert!(
            matches!(
                &mutating,
                Verdict::Accept { mutated: Some(_), .. } | Verdict::Fault(Fault::MutationOnReject)
            ) || matches!(&mutating, Verdict::Fault(Fault::InvalidOutput(m)) if m.contains("mutated_object")),
            "a mutation refused for a validating policy became {mutating:?} for a mutating one"
        );
    } else {
        assert!(
            same_verdict(&validating, &mutating),
            "{validating:?} != {mutating:?}"
        );
    }
    check_decided(&validating, PolicyKind::Validating);
    check_decided(&mutating, PolicyKind::Mutating);
});
