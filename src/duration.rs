//! Durations in Go's `time.ParseDuration` syntax, the one every Kubernetes
//! component, Helm chart and operator writes (`1m30s`, `1.5h`, `300ms`,
//! `2h45m0.5s`), so that a value copied from any of them means the same here.
//!
//! The grammar, exactly as Go's: an optional sign, then `0` alone or one or
//! more decimal numbers (optional fraction: `1.5`, `.5`, `1.`), each followed
//! by a unit `ns`, `us`, `µs` (U+00B5), `μs` (U+03BC), `ms`, `s`, `m` or
//! `h`, with no spaces; units may repeat and come in any order (`10.5s4m`).
//! The value is int64 nanoseconds (about 292 years); more is an overflow.
//! A fraction is scaled with float64 arithmetic as Go does, so that every
//! input gets Go's nanosecond.
//!
//! Why not a crate: none parses this grammar. `go-parse-duration` 0.1.1 (a
//! port of this same function) panics on `µs` and `μs` (byte and character
//! indices mixed), loops forever on a fraction longer than 19 digits, and
//! rejects everything from 2^62 ns up (`1 << 63 - 1` is `1 << 62` in Rust).
//! jiff's "friendly" format is not a superset: it rejects `0`, `.5s`, `5.s`,
//! `10.5s4m`, `1.5h30m`, `1s1s` and `μs`, and accepts `1 m` and `1 hour`.
//! This module is a port of Go's `time.ParseDuration` (Go's source is
//! BSD-licensed), tested against Go's own table (`parseDurationTests`).

/// A duration as Go's `time.Duration` holds it: signed nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub i64);

impl GoDuration {
    /// As a `std::time::Duration`; `None` when negative.
    pub fn to_std(self) -> Option<std::time::Duration> {
        u64::try_from(self.0).ok().map(std::time::Duration::from_nanos)
    }
}

/// Why a text is not a duration. The message quotes the whole input and says
/// what was expected; it names no unit outside Go's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Not Go's grammar (empty, a space, a stray character, no digits).
    #[error(
        "invalid duration {0:?}: expected a number and a unit (ns, us, µs, ms, s, m, h) like 10s, 1m30s, 1.5h or 500ms"
    )]
    Invalid(String),
    /// A number without its unit (Go accepts a bare `0` only).
    #[error("missing unit in duration {0:?}: add one of ns, us, µs, ms, s, m, h (10s, not 10)")]
    MissingUnit(String),
    /// A unit Go does not have (`d`, `sec`, `min`, ...).
    #[error("unknown unit {unit:?} in duration {input:?}: use ns, us, µs, ms, s, m or h (1d is 24h)")]
    UnknownUnit { unit: String, input: String },
    /// More than int64 nanoseconds (about 292 years).
    #[error("duration {0:?} is too long (at most 2562047h47m16.854775807s)")]
    Overflow(String),
    /// Valid Go, but a negative time span where only zero or more makes sense.
    #[error("duration {0:?} is negative; give zero or more")]
    Negative(String),
}

/// Parses `text` as Go's `time.ParseDuration` does: the same values
/// accepted, with the same nanoseconds, and the same ones refused.
pub fn parse_go(text: &str) -> Result<GoDuration, DurationError> {
    let invalid = || DurationError::Invalid(text.to_owned());
    let overflow = || DurationError::Overflow(text.to_owned());
    let mut s = text.as_bytes();
    let mut negative = false;
    if let Some((&sign @ (b'-' | b'+'), rest)) = s.split_first() {
        negative = sign == b'-';
        s = rest;
    }
    if s == b"0" {
        return Ok(GoDuration(0));
    }
    if s.is_empty() {
        return Err(invalid());
    }
    // Accumulated as Go does: unsigned, at most 2^63 (the magnitude of the
    // smallest int64), checked after every component.
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        let before = s.len();
        let (mut value, rest) = leading_int(s).ok_or_else(overflow)?;
        s = rest;
        let had_integer = s.len() != before;
        let (mut fraction, mut scale, mut had_fraction) = (0u64, 1f64, false);
        if let Some((b'.', rest)) = s.split_first() {
            let before = rest.len();
            let (f, sc, rest) = leading_fraction(rest);
            (fraction, scale, s) = (f, sc, rest);
            had_fraction = s.len() != before;
        }
        if !had_integer && !had_fraction {
            // ".s", "-.", "."
            return Err(invalid());
        }
        let unit_len = s.iter().position(|&c| c == b'.' || c.is_ascii_digit()).unwrap_or(s.len());
        if unit_len == 0 {
            return Err(DurationError::MissingUnit(text.to_owned()));
        }
        let (unit_bytes, rest) = s.split_at(unit_len);
        s = rest;
        let unit = unit_nanos(unit_bytes).ok_or_else(|| DurationError::UnknownUnit {
            unit: String::from_utf8_lossy(unit_bytes).into_owned(),
            input: text.to_owned(),
        })?;
        if value > (1 << 63) / unit {
            return Err(overflow());
        }
        value *= unit;
        if fraction > 0 {
            // float64 as in Go: nanosecond-accurate for fractions of hours,
            // and the same rounding as Go for longer fractions.
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
            if value > 1 << 63 {
                return Err(overflow());
            }
        }
        total += value;
        if total > 1 << 63 {
            return Err(overflow());
        }
    }
    if negative {
        // total <= 2^63, so this is in range (i64::MIN for exactly 2^63).
        return Ok(GoDuration(0i64.wrapping_sub_unsigned(total)));
    }
    i64::try_from(total).map(GoDuration).map_err(|_| overflow())
}

/// Parses a Go duration that must not be negative (timeouts, intervals,
/// delays): Go's grammar first, then the sign, so `-1s` is refused as
/// negative rather than as malformed. `-0` and `-0s` are zero, as in Go.
pub fn parse_non_negative(text: &str) -> Result<std::time::Duration, DurationError> {
    parse_go(text)?.to_std().ok_or_else(|| DurationError::Negative(text.to_owned()))
}

fn unit_nanos(unit: &[u8]) -> Option<u64> {
    Some(match unit {
        b"ns" => 1,
        // "µs": U+00B5 MICRO SIGN; "μs": U+03BC GREEK SMALL LETTER MU (UTF-8).
        b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
        b"ms" => 1_000_000,
        b"s" => 1_000_000_000,
        b"m" => 60_000_000_000,
        b"h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// Consumes leading `[0-9]*`; `None` when the number exceeds 2^63.
fn leading_int(s: &[u8]) -> Option<(u64, &[u8])> {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut x: u64 = 0;
    for &c in &s[..digits] {
        if x > (1 << 63) / 10 {
            return None;
        }
        x = x * 10 + u64::from(c - b'0');
        if x > 1 << 63 {
            return None;
        }
    }
    Some((x, &s[digits..]))
}

/// Consumes leading `[0-9]*` after a decimal point: the digits as an integer
/// and the power of ten to divide it by. Past 19 digits precision stops
/// accumulating, but the digits are still consumed (as in Go).
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let (mut x, mut scale, mut overflowed) = (0u64, 1f64, false);
    for &c in &s[..digits] {
        if overflowed {
            continue;
        }
        if x > (1 << 63) / 10 {
            overflowed = true;
            continue;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > 1 << 63 {
            overflowed = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[digits..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: i64 = 1;
    const US: i64 = 1_000 * NS;
    const MS: i64 = 1_000 * US;
    const S: i64 = 1_000 * MS;
    const M: i64 = 60 * S;
    const H: i64 = 60 * M;

    /// Go's `parseDurationTests` (src/time/time_test.go), every entry.
    const ACCEPTED: &[(&str, i64)] = &[
        // simple
        ("0", 0),
        ("5s", 5 * S),
        ("30s", 30 * S),
        ("1478s", 1478 * S),
        // sign
        ("-5s", -5 * S),
        ("+5s", 5 * S),
        ("-0", 0),
        ("+0", 0),
        // decimal
        ("5.0s", 5 * S),
        ("5.6s", 5 * S + 600 * MS),
        ("5.s", 5 * S),
        (".5s", 500 * MS),
        ("1.0s", S),
        ("1.00s", S),
        ("1.004s", S + 4 * MS),
        ("1.0040s", S + 4 * MS),
        ("100.00100s", 100 * S + MS),
        // different units
        ("10ns", 10 * NS),
        ("11us", 11 * US),
        ("12µs", 12 * US), // U+00B5
        ("12μs", 12 * US), // U+03BC
        ("13ms", 13 * MS),
        ("14s", 14 * S),
        ("15m", 15 * M),
        ("16h", 16 * H),
        // composite durations
        ("3h30m", 3 * H + 30 * M),
        ("10.5s4m", 4 * M + 10 * S + 500 * MS),
        ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
        ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
        ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
        // large value
        ("52763797000ns", 52763797000 * NS),
        // more than 9 digits after decimal point, see https://golang.org/issue/6617
        ("0.3333333333333333333h", 20 * M),
        // 9007199254740993 = 1<<53+1 cannot be stored precisely in a float64
        ("9007199254740993ns", ((1 << 53) + 1) * NS),
        // largest duration that can be represented by int64 in nanoseconds
        ("9223372036854775807ns", i64::MAX),
        ("9223372036854775.807us", i64::MAX),
        ("9223372036s854ms775us807ns", i64::MAX),
        ("-9223372036854775808ns", i64::MIN),
        ("-9223372036854775.808us", i64::MIN),
        ("-9223372036s854ms775us808ns", i64::MIN),
        // largest negative round trip value, see https://golang.org/issue/48629
        ("-2562047h47m16.854775808s", i64::MIN),
        // huge string; issue 15011.
        ("0.100000000000000000000h", 6 * M),
        // This value tests the first overflow check in leadingFraction.
        ("0.830103483285477580700h", 49 * M + 48 * S + 372539827 * NS),
    ];

    /// Go's `parseDurationErrorTests`, every entry.
    const REJECTED: &[&str] = &[
        // invalid
        "",
        "3",
        "-",
        "s",
        ".",
        "-.",
        ".s",
        "+.s",
        "1d",
        "\u{FFFD}",
        "\u{FFFD} hello \u{FFFD} world",
        // overflow
        "9223372036854775810ns",
        "9223372036854775808ns",
        "-9223372036854775809ns",
        "9223372036854776us",
        "3000000h",
        "9223372036854775.808us",
        "9223372036854ms775us808ns",
    ];

    #[test]
    fn accepts_what_go_accepts_with_the_same_nanoseconds() {
        for &(text, nanos) in ACCEPTED {
            assert_eq!(parse_go(text), Ok(GoDuration(nanos)), "{text:?}");
        }
    }

    #[test]
    fn rejects_what_go_rejects() {
        for &text in REJECTED {
            assert!(parse_go(text).is_err(), "{text:?} was accepted: {:?}", parse_go(text));
        }
        // Go's table also has invalid UTF-8 ("\x85\x85", "\xffff", "hello
        // \xffff world"); a Rust &str cannot hold it: the command line and
        // YAML readers refuse it before a duration is parsed.
    }

    #[test]
    fn what_users_copy_from_kubernetes_and_helm() {
        for (text, nanos) in [("1m30s", 90 * S), ("1h30m", 90 * M), ("1.5h", 90 * M), ("300ms", 300 * MS)] {
            assert_eq!(parse_go(text), Ok(GoDuration(nanos)), "{text:?}");
        }
        assert_eq!(parse_go("2h45m0.5s"), Ok(GoDuration(2 * H + 45 * M + 500 * MS)));
        assert_eq!(parse_go("1s1s"), Ok(GoDuration(2 * S)), "units may repeat, as in Go");
        assert_eq!(parse_go("1.5h30m"), Ok(GoDuration(2 * H)), "a fraction on any unit");
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let message = |text: &str| parse_go(text).unwrap_err().to_string();
        assert_eq!(message("10"), r#"missing unit in duration "10": add one of ns, us, µs, ms, s, m, h (10s, not 10)"#);
        assert!(message("1d").starts_with(r#"unknown unit "d" in duration "1d""#), "{}", message("1d"));
        assert!(message("1 m").starts_with(r#"unknown unit " m" in duration "1 m""#), "{}", message("1 m"));
        assert!(message(" 1m").starts_with(r#"invalid duration " 1m""#), "{}", message(" 1m"));
        assert!(message("").starts_with(r#"invalid duration """#));
        assert!(message("3000000h").contains("too long"));
        assert!(message("99999999999999999999s").contains("too long"));
        assert!(message("1.5.5s").starts_with(r#"missing unit in duration "1.5.5s""#), "{}", message("1.5.5s"));
    }

    #[test]
    fn negative_is_refused_after_parsing_and_zero_is_not_negative() {
        assert_eq!(parse_non_negative("-1.5h").unwrap_err(), DurationError::Negative("-1.5h".to_owned()));
        assert_eq!(
            parse_non_negative("-1.5h").unwrap_err().to_string(),
            r#"duration "-1.5h" is negative; give zero or more"#
        );
        // Malformed stays malformed, whatever its sign.
        assert!(matches!(parse_non_negative("-1x"), Err(DurationError::UnknownUnit { .. })));
        for zero in ["0", "-0", "+0", "-0s", "0.0h"] {
            assert_eq!(parse_non_negative(zero), Ok(std::time::Duration::ZERO), "{zero:?}");
        }
        assert_eq!(parse_non_negative("9223372036854775807ns"), Ok(std::time::Duration::from_nanos(i64::MAX as u64)));
        assert_eq!(parse_non_negative("1m30s"), Ok(std::time::Duration::from_secs(90)));
    }

    /// Any duration written the way Go's `Duration.String` writes it
    /// (`72h3m0.5s`, `-1m30s`, `1.5µs`) parses back to itself, and
    /// arbitrary text never panics.
    #[test]
    fn go_formatted_durations_round_trip_and_nothing_panics() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        fn go_string(nanos: i64) -> String {
            let sign = if nanos < 0 { "-" } else { "" };
            let n = nanos.unsigned_abs();
            if n == 0 {
                return "0s".to_owned();
            }
            let fraction = |value: u64, digits: u32| {
                let text = format!("{value:0width$}", width = digits as usize);
                let text = text.trim_end_matches('0');
                if text.is_empty() {
                    String::new()
                } else {
                    format!(".{text}")
                }
            };
            if n < 1_000 {
                return format!("{sign}{n}ns");
            }
            if n < 1_000_000 {
                return format!("{sign}{}{}µs", n / 1_000, fraction(n % 1_000, 3));
            }
            if n < 1_000_000_000 {
                return format!("{sign}{}{}ms", n / 1_000_000, fraction(n % 1_000_000, 6));
            }
            let (seconds, sub) = (n / 1_000_000_000, n % 1_000_000_000);
            let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
            let tail = format!("{s}{}s", fraction(sub, 9));
            match (h, m) {
                (0, 0) => format!("{sign}{tail}"),
                (0, m) => format!("{sign}{m}m{tail}"),
                (h, m) => format!("{sign}{h}h{m}m{tail}"),
            }
        }
        assert_eq!(go_string(-(2 * M + 3 * S + 400 * MS)), "-2m3.4s");
        assert_eq!(go_string(i64::MIN), "-2562047h47m16.854775808s");

        let mut runner = TestRunner::new(Config { cases: 2_000, ..Config::default() });
        runner
            .run(&any::<i64>(), |nanos| {
                prop_assert_eq!(parse_go(&go_string(nanos)), Ok(GoDuration(nanos)));
                Ok(())
            })
            .unwrap();
        runner
            .run(&"[-+.0-9nuµμmsh d]{0,24}", |text| {
                let _ = parse_go(&text);
                Ok(())
            })
            .unwrap();
        runner
            .run(&any::<String>(), |text| {
                let _ = parse_go(&text);
                Ok(())
            })
            .unwrap();
    }
}
