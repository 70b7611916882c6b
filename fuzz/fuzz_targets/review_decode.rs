//! Fuzzes AdmissionReview decoding ([`Review::decode`]): whatever a client POSTs, decoding returns
//! a value or an error, never a panic, and a decoded review keeps its request verbatim.
//!
//! Properties checked on every decoded review:
//! - the raw request is a byte-for-byte slice of the body (policies get what the API server sent);
//! - `uid` is not empty and `namespace` is never `Some("")`;
//! - the raw request, wrapped in a fresh envelope, decodes to the same fields and the same raw
//!   text (the envelope's formatting and other keys play no part);
//! - when the raw request is a JSON value serde_json can hold, that value re-encoded decodes to
//!   the same fields too (the typed view depends on the JSON, not on its spelling).

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::review::Review;
use portcullis::review::decode::{API_VERSION, KIND};

/// The fields a review is matched on, for comparing two decodings.
fn facts(r: &Review) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        r.uid.as_str(),
        r.kind.as_str(),
        r.operation,
        r.namespace.as_deref(),
        r.name.as_str(),
        r.dry_run,
    )
}

fn envelope(request: &str) -> String {
    format!(r#"{{"apiVersion":"{API_VERSION}","kind":"{KIND}","request":{request}}}"#)
}

fuzz_target!(|body: &[u8]| {
    let Ok(review) = Review::decode(body) else {
        return;
    };
    let raw = review.raw_request.get();
    assert!(
        body.windows(raw.len()).any(|w| w == raw.as_bytes()),
        "the raw request is not a slice of the body"
    );
    assert!(!review.uid.is_empty());
    assert_ne!(review.namespace.as_deref(), Some(""));

    let rewrapped = Review::decode(envelope(raw).as_bytes()).expect("the raw request decodes alone");
    assert_eq!(facts(&rewrapped), facts(&review));
    assert_eq!(rewrapped.raw_request.get(), raw);

    // Numbers beyond f64 pass the raw (unparsed) request but not serde_json::Value.
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(raw) {
        let reencoded = Review::decode(envelope(&value.to_string()).as_bytes())
            .expect("the request re-encoded from its JSON value decodes");
        assert_eq!(facts(&reencoded), facts(&review));
    }
});
