//! Kubernetes `resource.Quantity`: the numbers in `resources.requests`, `resources.limits` and
//! LimitRange-style settings.
//!
//! Policies compare quantities (`"1"`, `1` and `"1000m"` are the same GPU count; `"1Gi"` is more
//! than `"1G"`), so this module parses every form the API server accepts into one exact integer
//! and never goes through floating point. It is hand-written rather than a dependency because each
//! evaluation runs in a fresh Wasm instance: parsing must cost nothing to set up (no regex, no
//! tables built at start).
//!
//! Grammar, as in `k8s.io/apimachinery/pkg/api/resource`:
//!
//! ```text
//! quantity        ::= signedNumber suffix
//! signedNumber    ::= number | sign number
//! sign            ::= "+" | "-"
//! number          ::= digits | digits "." digits | digits "." | "." digits
//! suffix          ::= binarySI | decimalExponent | decimalSI
//! binarySI        ::= Ki | Mi | Gi | Ti | Pi | Ei
//! decimalSI       ::= n | u | m | "" | k | M | G | T | P | E
//! decimalExponent ::= "e" signedInteger | "E" signedInteger
//! ```
//!
//! Values are held in nano-units (10⁻⁹), the finest precision Kubernetes keeps; anything finer
//! is rounded away from zero to the next nano-unit, as the API server does (`0.1n` → `1n`).
//! Magnitudes above 2⁶³−1 whole units are refused: the API server cannot represent them either.

use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// Nano-units in one whole unit.
const NANOS_PER_UNIT: i128 = 1_000_000_000;

/// The largest magnitude accepted, in nano-units: 2⁶³−1 whole units.
const MAX_NANOS: i128 = i64::MAX as i128 * NANOS_PER_UNIT;

/// An exact Kubernetes resource quantity.
///
/// Invariant: `|nanos| <= MAX_NANOS`, so products of a quantity with 10⁹ never overflow `i128`.
/// Equality, ordering and hashing are by value: `"1"`, `1` and `"1000m"` are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quantity {
    nanos: i128,
}

/// Why a quantity could not be parsed.
///
/// The Display text is written for denial messages: it quotes the offending input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantityError {
    /// The input was the empty string.
    Empty,
    /// The JSON value was neither a string nor a number.
    NotAQuantity(String),
    /// The number part had no digits (`"Mi"`, `"."`, `"-"`).
    NoDigits(String),
    /// The text after the number is not a known suffix (`"5GB"`, `"1.2.3"`).
    UnknownSuffix {
        /// The whole input.
        input: String,
        /// The part after the number that is not a suffix.
        suffix: String,
    },
    /// The value is larger than 2⁶³−1 whole units.
    OutOfRange(String),
}

impl fmt::Display for QuantityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => write!(f, "empty string is not a quantity"),
            Self::NotAQuantity(v) => {
                write!(f, "{v} is not a quantity (expected a string or a number)")
            }
            Self::NoDigits(s) => write!(f, "quantity {s:?} has no digits before its suffix"),
            Self::UnknownSuffix { input, suffix } => write!(
                f,
                "quantity {input:?} has unknown suffix {suffix:?} \
                 (expected one of n u m k M G T P E, Ki Mi Gi Ti Pi Ei, or an exponent like e3)"
            ),
            Self::OutOfRange(s) => write!(f, "quantity {s:?} is out of range (more than 2^63-1)"),
        }
    }
}

impl std::error::Error for QuantityError {}

impl Quantity {
    /// Zero, which is what an absent request or limit amounts to.
    pub const ZERO: Quantity = Quantity { nanos: 0 };

    /// A quantity of `units` whole units (`Quantity::from_units(2)` is `"2"`).
    pub fn from_units(units: i64) -> Self {
        Quantity {
            nanos: i128::from(units) * NANOS_PER_UNIT,
        }
    }

    /// The quantity with exactly `nanos` nano-units, if within range.
    pub fn from_nanos(nanos: i128) -> Option<Self> {
        (nanos.abs() <= MAX_NANOS).then_some(Quantity { nanos })
    }

    /// The exact value in nano-units (10⁻⁹).
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// Whether this is zero (`"0"`, `"0Gi"`, `0`).
    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    /// Whether this is below zero. The API server refuses negative requests and limits, but a
    /// policy may see them first.
    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// Parses a quantity as it appears in a Kubernetes object: a JSON string (`"500m"`) or a
    /// JSON number (`1`, `0.5`), both of which the API server accepts.
    ///
    /// The error is a sentence that quotes the value, ready for a denial message.
    pub fn parse(value: &Value) -> Result<Quantity, String> {
        match value {
            Value::String(s) => s.parse().map_err(|e: QuantityError| e.to_string()),
            // serde_json prints finite numbers in a form this grammar accepts (`0.5`, `1e-7`,
            // `1e30`), so numbers share the string path and its exactness.
            Value::Number(n) => n.to_string().parse().map_err(|e: QuantityError| e.to_string()),
            other => Err(QuantityError::NotAQuantity(other.to_string()).to_string()),
        }
    }

    /// Whether `numerator / denominator > bound`, computed exactly in integers.
    ///
    /// This is LimitRange's `maxLimitRequestRatio` test (limit / request). A denominator of zero
    /// or less makes every positive numerator exceed the bound: a limit with a zero request is an
    /// unbounded ratio.
    pub fn ratio_exceeds(numerator: Quantity, denominator: Quantity, bound: Quantity) -> bool {
        if denominator.nanos <= 0 {
            return numerator.nanos > 0;
        }
        // n/d > b/10⁹  ⇔  n·10⁹ > b·d  (d > 0). The left side fits by the MAX_NANOS invariant;
        // the right side may not, and then its sign alone decides.
        let lhs = numerator.nanos * NANOS_PER_UNIT;
        match bound.nanos.checked_mul(denominator.nanos) {
            Some(rhs) => lhs > rhs,
            None => bound.nanos < 0,
        }
    }

    /// `numerator / denominator` as a decimal string with up to three places, rounded up, for
    /// messages ("limit/request ratio 4.5"). Zero or negative denominators give "infinite".
    pub fn ratio_display(numerator: Quantity, denominator: Quantity) -> String {
        if denominator.nanos <= 0 {
            return "infinite".to_string();
        }
        // n·1000 fits in i128 by the MAX_NANOS invariant.
        let scaled = numerator.nanos * 1000;
        let milli =
            scaled.div_euclid(denominator.nanos) + i128::from(scaled.rem_euclid(denominator.nanos) != 0);
        let sign = if milli < 0 { "-" } else { "" };
        let milli = milli.abs();
        let (whole, frac) = (milli / 1000, milli % 1000);
        if frac == 0 {
            format!("{sign}{whole}")
        } else {
            let frac = format!("{frac:03}");
            format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        if input.is_empty() {
            return Err(QuantityError::Empty);
        }
        let (negative, rest) = match input.as_bytes()[0] {
            b'-' => (true, &input[1..]),
            b'+' => (false, &input[1..]),
            _ => (false, input),
        };
        let number = Number::split(rest);
        if number.int.is_empty() && number.frac.is_empty() {
            return Err(QuantityError::NoDigits(input.to_string()));
        }
        let scale = Scale::of_suffix(number.suffix).ok_or_else(|| QuantityError::UnknownSuffix {
            input: input.to_string(),
            suffix: number.suffix.to_string(),
        })?;
        let magnitude = number
            .to_nanos(scale)
            .ok_or_else(|| QuantityError::OutOfRange(input.to_string()))?;
        Ok(Quantity {
            nanos: if negative { -magnitude } else { magnitude },
        })
    }
}

/// The digits of a quantity split at the decimal point, and what follows them.
struct Number<'a> {
    /// Digits before the point (may be empty: `.5`).
    int: &'a str,
    /// Digits after the point (may be empty: `5`, `5.`).
    frac: &'a str,
    /// Everything after the number: the suffix, or garbage such as `.3` in `1.2.3`.
    suffix: &'a str,
}

impl<'a> Number<'a> {
    fn split(s: &'a str) -> Self {
        let int_end = digits_end(s, 0);
        let (frac, suffix_start) = if s.as_bytes().get(int_end) == Some(&b'.') {
            let frac_end = digits_end(s, int_end + 1);
            (&s[int_end + 1..frac_end], frac_end)
        } else {
            ("", int_end)
        };
        Number {
            int: &s[..int_end],
            frac,
            suffix: &s[suffix_start..],
        }
    }

    /// The magnitude in nano-units, rounded up; `None` past `MAX_NANOS`.
    ///
    /// Works on the decimal digits themselves, so that no input loses precision: the digits are
    /// doubled once per power of two in the suffix, then the decimal point is moved by the power
    /// of ten (plus 9 for nano-units), and any non-zero digit left after the point rounds up.
    fn to_nanos(&self, scale: Scale) -> Option<i128> {
        let mut digits: Vec<u8> = self
            .int
            .bytes()
            .chain(self.frac.bytes())
            .map(|b| b - b'0')
            .collect();
        // Position of the decimal point, counted in digits from the left.
        let mut point = i64::try_from(self.int.len()).ok()?;
        for _ in 0..scale.pow2 {
            if double(&mut digits) {
                point += 1;
            }
        }
        point = point.checked_add(i64::from(scale.pow10))?.checked_add(9)?;
        let leading_zeros = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..leading_zeros);
        point -= i64::try_from(leading_zeros).ok()?;
        if digits.is_empty() {
            return Some(0);
        }
        // MAX_NANOS has 29 digits; more integer digits than that cannot be in range. Checking
        // before building the integer keeps `1e999999999` from allocating.
        if point > 29 {
            return None;
        }
        let mut value: i128 = 0;
        for i in 0..point.max(0) {
            let digit = usize::try_from(i)
                .ok()
                .and_then(|i| digits.get(i))
                .copied()
                .unwrap_or(0);
            value = value * 10 + i128::from(digit);
        }
        let kept = usize::try_from(point.max(0)).ok()?;
        if digits.iter().skip(kept).any(|&d| d != 0) {
            value += 1;
        }
        (value <= MAX_NANOS).then_some(value)
    }
}

/// The index just past the run of ASCII digits starting at `start`.
fn digits_end(s: &str, start: usize) -> usize {
    start
        + s.as_bytes()[start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
}

/// Doubles a big-endian decimal digit vector in place; true when it grew by a leading digit.
fn double(digits: &mut Vec<u8>) -> bool {
    let mut carry = 0;
    for d in digits.iter_mut().rev() {
        let v = *d * 2 + carry;
        *d = v % 10;
        carry = v / 10;
    }
    if carry > 0 {
        digits.insert(0, carry);
        true
    } else {
        false
    }
}

/// What a suffix multiplies by: 10^pow10 · 2^pow2.
#[derive(Debug, Clone, Copy)]
struct Scale {
    pow10: i32,
    pow2: u32,
}

impl Scale {
    fn of_suffix(suffix: &str) -> Option<Scale> {
        let decimal = |pow10| Some(Scale { pow10, pow2: 0 });
        let binary = |pow2| Some(Scale { pow10: 0, pow2 });
        match suffix {
            "n" => decimal(-9),
            "u" => decimal(-6),
            "m" => decimal(-3),
            "" => decimal(0),
            "k" => decimal(3),
            "M" => decimal(6),
            "G" => decimal(9),
            "T" => decimal(12),
            "P" => decimal(15),
            "E" => decimal(18),
            "Ki" => binary(10),
            "Mi" => binary(20),
            "Gi" => binary(30),
            "Ti" => binary(40),
            "Pi" => binary(50),
            "Ei" => binary(60),
            _ => Scale::of_exponent(suffix),
        }
    }

    /// `e3`, `E-2`, `e+10`: a decimal exponent, which must be a whole number.
    fn of_exponent(suffix: &str) -> Option<Scale> {
        let exponent = suffix.strip_prefix(['e', 'E'])?;
        let unsigned = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
        if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Exponents too large for i32 are out of range anyway; clamp so that they are reported
        // as such rather than as a bad suffix.
        let pow10 = exponent.parse::<i32>().unwrap_or(if exponent.starts_with('-') {
            i32::MIN / 2
        } else {
            i32::MAX / 2
        });
        Some(Scale { pow10, pow2: 0 })
    }
}

/// Canonical text: the shortest exact spelling, so equal quantities print the same.
///
/// Fractions use the largest of `m`, `u`, `n` that keeps the number whole (`250m`, `1500u`).
/// Whole numbers use the largest decimal suffix (`2k`, `16G`) or binary suffix (`512Mi`) that
/// keeps them whole, whichever is shorter, preferring decimal on a tie (`1000` → `1k`,
/// `1073741824` → `1Gi`). This is not Kubernetes' format-preserving serialization; it is meant
/// for messages and tests.
impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let magnitude = self.nanos.unsigned_abs();
        let nanos_per_unit = NANOS_PER_UNIT.unsigned_abs();
        if !magnitude.is_multiple_of(nanos_per_unit) {
            let (value, suffix) = if magnitude.is_multiple_of(1_000_000) {
                (magnitude / 1_000_000, "m")
            } else if magnitude.is_multiple_of(1_000) {
                (magnitude / 1_000, "u")
            } else {
                (magnitude, "n")
            };
            return write!(f, "{sign}{value}{suffix}");
        }
        let units = magnitude / nanos_per_unit;
        let decimal = largest_whole(units, 1000, &["", "k", "M", "G", "T", "P", "E"]);
        let text = if units == 0 {
            decimal
        } else {
            let binary = largest_whole(units, 1024, &["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]);
            if binary.len() < decimal.len() {
                binary
            } else {
                decimal
            }
        };
        write!(f, "{sign}{text}")
    }
}

/// `units` written with the largest suffix (each `base` times the previous) that keeps it whole.
fn largest_whole(units: u128, base: u128, suffixes: &[&str]) -> String {
    let mut value = units;
    let mut index = 0;
    while value != 0 && value.is_multiple_of(base) && index + 1 < suffixes.len() {
        value /= base;
        index += 1;
    }
    format!("{value}{}", suffixes[index])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const N: i128 = NANOS_PER_UNIT;

    fn q(s: &str) -> Quantity {
        match s.parse() {
            Ok(q) => q,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn parses_every_suffix_exactly() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("1", N),
            ("1n", 1),
            ("1u", 1_000),
            ("1m", 1_000_000),
            ("250m", 250_000_000),
            ("1k", 1_000 * N),
            ("1M", 1_000_000 * N),
            ("1G", 1_000_000_000 * N),
            ("1T", 1_000_000_000_000 * N),
            ("1P", 1_000_000_000_000_000 * N),
            ("1E", 1_000_000_000_000_000_000 * N),
            ("1Ki", 1024 * N),
            ("1Mi", 1024 * 1024 * N),
            ("1Gi", 1024 * 1024 * 1024 * N),
            ("1Ti", (1i128 << 40) * N),
            ("1Pi", (1i128 << 50) * N),
            ("1Ei", (1i128 << 60) * N),
            ("7Ei", 7 * (1i128 << 60) * N),
            ("512Mi", 512 * (1 << 20) * N),
            ("48Gi", 48 * (1i128 << 30) * N),
        ];
        for &(input, nanos) in cases {
            assert_eq!(q(input).nanos(), nanos, "{input}");
        }
    }

    #[test]
    fn parses_fractions_signs_and_exponents() {
        let cases: &[(&str, i128)] = &[
            ("0.5", N / 2),
            (".5", N / 2),
            ("5.", 5 * N),
            ("1.5Gi", 3 * (1i128 << 29) * N),
            ("0.1Ki", 102_400_000_000),
            ("1.5m", 1_500_000),
            ("+2", 2 * N),
            ("-2", -2 * N),
            ("-0.5", -N / 2),
            ("-0", 0),
            ("1e3", 1_000 * N),
            ("1E3", 1_000 * N),
            ("1e+3", 1_000 * N),
            ("1e-3", 1_000_000),
            ("2.5e2", 250 * N),
            ("1e0", N),
            ("007", 7 * N),
            ("0.000000001", 1),
            ("12e-1", 1_200_000_000),
        ];
        for &(input, nanos) in cases {
            assert_eq!(q(input).nanos(), nanos, "{input}");
        }
    }

    #[test]
    fn rounds_below_a_nano_away_from_zero() {
        let cases: &[(&str, i128)] = &[
            ("0.1n", 1),
            ("1.1n", 2),
            ("0.0000000001", 1),
            ("1e-12", 1),
            ("-0.1n", -1),
            ("0.5u", 500),
            ("0.0000000001Ki", 103),
            ("1.0000000000000000000000000000000000000001", N + 1),
            ("1.00000000000000000000000000000000000000000", N),
        ];
        for &(input, nanos) in cases {
            assert_eq!(q(input).nanos(), nanos, "{input}");
        }
    }

    #[test]
    fn rejects_malformed_quantities_with_the_reason() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("Mi", "no digits"),
            (".", "no digits"),
            ("-", "no digits"),
            ("+Gi", "no digits"),
            ("1.2.3", "unknown suffix \".3\""),
            ("5GB", "unknown suffix \"GB\""),
            ("1 Gi", "unknown suffix \" Gi\""),
            (" 1", "no digits"),
            ("1gi", "unknown suffix \"gi\""),
            ("1KI", "unknown suffix \"KI\""),
            ("1K", "unknown suffix \"K\""),
            ("1e", "unknown suffix \"e\""),
            ("1e3.5", "unknown suffix \"e3.5\""),
            ("1e+", "unknown suffix \"e+\""),
            ("--1", "no digits"),
            ("1mm", "unknown suffix \"mm\""),
            ("0x10", "unknown suffix \"x10\""),
            ("１", "no digits"),
            ("9223372036854775808", "out of range"),
            ("8Ei", "out of range"),
            ("1e19", "out of range"),
            ("1e999999999999", "out of range"),
        ];
        for &(input, reason) in cases {
            match input.parse::<Quantity>() {
                Ok(q) => panic!("{input:?} should be rejected, got {q}"),
                Err(e) => assert!(e.to_string().contains(reason), "{input:?}: {e}"),
            }
        }
    }

    #[test]
    fn accepts_the_largest_representable_value() {
        assert_eq!(q("9223372036854775807").nanos(), MAX_NANOS);
        assert_eq!(q("-9223372036854775807").nanos(), -MAX_NANOS);
        assert_eq!(q("1e-999999999999").nanos(), 1);
    }

    #[test]
    fn parses_json_strings_and_numbers_alike() {
        let cases = [
            (json!("1"), json!(1)),
            (json!("1000m"), json!(1)),
            (json!("0.5"), json!(0.5)),
            (json!("2"), json!(2.0)),
            (json!("1e-7"), json!(0.0000001)),
            (json!("-3"), json!(-3)),
        ];
        for (a, b) in cases {
            assert_eq!(Quantity::parse(&a), Quantity::parse(&b), "{a} vs {b}");
        }
        assert!(
            Quantity::parse(&json!(1e30))
                .expect_err("must be rejected")
                .contains("out of range")
        );
    }

    #[test]
    fn rejects_json_values_that_are_not_quantities() {
        for v in [json!(null), json!(true), json!([1]), json!({"a": 1})] {
            let e = Quantity::parse(&v).expect_err("must be rejected");
            assert!(e.contains("is not a quantity"), "{v}: {e}");
        }
        assert!(
            Quantity::parse(&json!("5GB"))
                .expect_err("must be rejected")
                .contains("5GB")
        );
    }

    #[test]
    fn equal_values_compare_and_hash_equal() {
        use std::collections::HashSet;
        let equal = ["1", "1000m", "1000000u", "1e0", "0.001k", "+1", "1.0"];
        let set: HashSet<Quantity> = equal.iter().map(|s| q(s)).collect();
        assert_eq!(set.len(), 1);
        assert!(q("1Gi") > q("1G"));
        assert!(q("999m") < q("1"));
        assert!(q("-1") < Quantity::ZERO);
        assert!(q("1Ki") == q("1024"));
        assert!(q("0Gi").is_zero() && q("0.0").is_zero() && !q("1n").is_zero());
        assert!(q("-1n").is_negative() && !q("0").is_negative());
    }

    #[test]
    fn displays_the_shortest_exact_form() {
        let cases: &[(&str, &str)] = &[
            ("0", "0"),
            ("1000m", "1"),
            ("250m", "250m"),
            ("1.5m", "1500u"),
            ("1n", "1n"),
            ("1000", "1k"),
            ("1024", "1Ki"),
            ("1Gi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("1G", "1G"),
            ("48Gi", "48Gi"),
            ("2048", "2Ki"),
            ("3000", "3k"),
            ("1234", "1234"),
            ("-512Mi", "-512Mi"),
            ("-0.5", "-500m"),
            ("1e18", "1E"),
            ("4096000", "4096k"),
            ("9223372036854775807", "9223372036854775807"),
        ];
        for &(input, shown) in cases {
            assert_eq!(q(input).to_string(), shown, "{input}");
            assert_eq!(q(shown), q(input), "{shown} must parse back to {input}");
        }
    }

    /// Properties over random strings of quantity characters: parsing never panics, and every
    /// parsed value prints in a canonical form that parses back to the same value.
    #[test]
    fn parsing_is_total_and_display_round_trips() {
        let mut rng = crate::testing::Rng::new(0x0A17);
        let mut parsed = 0;
        for _ in 0..20_000 {
            let input = rng.string("0123456789.+-eEkKMGTPinum ", 14);
            if let Ok(q) = input.parse::<Quantity>() {
                parsed += 1;
                let shown = q.to_string();
                assert_eq!(shown.parse::<Quantity>(), Ok(q), "{input:?} shown as {shown:?}");
            }
        }
        assert!(
            parsed > 1_000,
            "the generator should hit valid quantities ({parsed})"
        );
    }

    /// Every suffix scales exactly as its definition says, checked against i128 arithmetic for
    /// random mantissas with up to three decimals.
    #[test]
    fn suffixes_scale_exactly() {
        let suffixes: &[(&str, i128, i128)] = &[
            ("n", 1, 1),
            ("u", 1_000, 1),
            ("m", 1_000_000, 1),
            ("", N, 1),
            ("k", 1_000 * N, 1),
            ("M", 1_000_000 * N, 1),
            ("G", 1_000_000_000 * N, 1),
            ("Ki", 1 << 10, N),
            ("Mi", 1 << 20, N),
            ("Gi", 1 << 30, N),
            ("Ti", 1 << 40, N),
            ("e2", 100 * N, 1),
            ("e-1", N / 10, 1),
        ];
        let mut rng = crate::testing::Rng::new(0x5CA1E);
        for _ in 0..5_000 {
            let thousandths = i128::from(rng.next_u64() % 10_000_000);
            let (suffix, factor, unit) = suffixes[rng.below(suffixes.len())];
            let input = format!("{}.{:03}{suffix}", thousandths / 1000, thousandths % 1000);
            // value = thousandths / 1000 * factor * unit, rounded up to a whole nano-unit.
            let scaled = thousandths * factor * unit;
            let expected = scaled / 1000 + i128::from(scaled % 1000 != 0);
            assert_eq!(q(&input).nanos(), expected, "{input}");
        }
    }

    /// `ratio_exceeds` agrees with cross-multiplication on small values, and with
    /// `ratio_display`'s rounding.
    #[test]
    fn ratio_agrees_with_cross_multiplication() {
        let mut rng = crate::testing::Rng::new(0x2A710);
        for _ in 0..5_000 {
            let [n, d, b] = [0; 3].map(|_| rng.below(5_000) as i128);
            let (num, den, bound) = [n, d, b]
                .map(|m| Quantity::from_nanos(m * 1_000_000).expect("in range"))
                .into();
            let exceeds = if d == 0 { n > 0 } else { n * 1000 > b * d };
            assert_eq!(
                Quantity::ratio_exceeds(num, den, bound),
                exceeds,
                "{n}m/{d}m > {b}m"
            );
        }
    }

    #[test]
    fn ratio_is_exact() {
        let cases: &[(&str, &str, &str, bool)] = &[
            ("2", "1", "2", false),
            ("2001m", "1", "2", true),
            ("4Gi", "1Gi", "4", false),
            ("4Gi", "1023Mi", "4", true),
            ("1", "3", "333m", true),
            ("1", "3", "334m", false),
            ("1", "0", "100", true),
            ("0", "0", "1", false),
            (
                "9223372036854775807",
                "9223372036854775807",
                "9223372036854775807",
                false,
            ),
            ("9223372036854775807", "1n", "9223372036854775807", true),
        ];
        for &(n, d, b, exceeds) in cases {
            assert_eq!(
                Quantity::ratio_exceeds(q(n), q(d), q(b)),
                exceeds,
                "{n}/{d} > {b}"
            );
        }
    }

    #[test]
    fn ratio_display_rounds_up_to_thousandths() {
        let cases: &[(&str, &str, &str)] = &[
            ("4", "1", "4"),
            ("1", "3", "0.334"),
            ("3", "2", "1.5"),
            ("2Gi", "512Mi", "4"),
            ("1", "0", "infinite"),
        ];
        for &(n, d, shown) in cases {
            assert_eq!(Quantity::ratio_display(q(n), q(d)), shown, "{n}/{d}");
        }
    }
}
