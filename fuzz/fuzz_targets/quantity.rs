//! Fuzzes Kubernetes quantity parsing in the policy SDK: `Quantity` from text (`FromStr`) and
//! `Quantity::parse` over the JSON value a policy reads (a string, or a number).
//!
//! Properties of every parsed quantity:
//! - Display is canonical: its text parses back to the same value and prints the same again;
//! - signs are symmetric: `+x` is `x`, and `-x` is the negation of `x`;
//! - the JSON string of the text and the text agree; a JSON number parses as its printed text;
//! - for two quantities `a/b` with `b > 0`, `ratio_display` rounds the ratio up to thousandths:
//!   the ratio never exceeds the shown value, and exceeds it less one thousandth.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_policy_sdk::quantity::Quantity;
use serde_json::Value;

fn check_text(text: &str) -> Option<Quantity> {
    let parsed = text.parse::<Quantity>();
    let via_json = Quantity::parse(&Value::String(text.to_owned()));
    assert_eq!(parsed.is_ok(), via_json.is_ok(), "{text:?}");
    let q = parsed.ok()?;
    assert_eq!(via_json, Ok(q));

    let shown = q.to_string();
    let back = shown.parse::<Quantity>();
    assert_eq!(back, Ok(q), "{text:?} shown as {shown:?}");
    assert_eq!(q.to_string(), shown);
    assert_eq!(back.map(|b| b.to_string()), Ok(shown));

    if !text.starts_with(['+', '-']) {
        assert_eq!(format!("+{text}").parse::<Quantity>(), Ok(q), "+{text:?}");
        let negated = Quantity::from_nanos(-q.nanos()).expect("the range is symmetric");
        assert_eq!(format!("-{text}").parse::<Quantity>(), Ok(negated), "-{text:?}");
    }
    Some(q)
}

fn check_ratio(numerator: Quantity, denominator: Quantity) {
    let shown = Quantity::ratio_display(numerator, denominator);
    if denominator.nanos() <= 0 {
        assert_eq!(shown, "infinite");
        return;
    }
    // Ratios beyond 2^63-1 print but are not quantities.
    let Ok(bound) = shown.parse::<Quantity>() else {
        return;
    };
    assert!(
        !Quantity::ratio_exceeds(numerator, denominator, bound),
        "{numerator}/{denominator} exceeds its shown ratio {shown}"
    );
    if let Some(below) = Quantity::from_nanos(bound.nanos() - 1_000_000) {
        assert!(
            Quantity::ratio_exceeds(numerator, denominator, below),
            "{numerator}/{denominator} shown as {shown} is more than a thousandth over"
        );
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Some((a, b)) = text.split_once('/') {
        if let (Some(a), Some(b)) = (check_text(a), check_text(b)) {
            check_ratio(a, b);
        }
        return;
    }
    check_text(text);
    if let Ok(number @ Value::Number(_)) = serde_json::from_str::<Value>(text) {
        let printed = number.to_string().parse::<Quantity>().map_err(|e| e.to_string());
        assert_eq!(Quantity::parse(&number), printed, "{text:?}");
    }
});
