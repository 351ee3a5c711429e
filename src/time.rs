//! Dates and times, RFC 3339 in and out, through one date-time crate: jiff
//! (maintained, already the time type of `k8s-openapi`, and exact calendar
//! arithmetic without a timezone database).
//!
//! In: [`parse_instant`] takes what a policy file's dates look like, either
//! a calendar date `2026-12-31` (the start of that day, UTC) or an RFC 3339
//! date-time `2026-12-31T18:00:00Z` / `2026-12-31T18:00:00.5+02:00`; RFC
//! 3339's grammar exactly (`T` and `Z` in either case), not the looser ISO
//! 8601 or RFC 9557 forms jiff would also read, so a value means the same to
//! podgate as to any other RFC 3339 reader. [`parse_date_or_time`] keeps
//! which of the two was written, for a caller that treats a bare date
//! differently (the whole day, say).
//!
//! Out: [`format_rfc3339`] writes `2026-12-31T16:00:00Z` (UTC, fractional
//! seconds only when there are some); [`format_unix_seconds`] the same for
//! a Unix time that may lie past jiff's [`Timestamp::MAX`] (a certificate's
//! `99991231235959Z`, RFC 5280's "no expiry").
//!
//! There is no clock here: callers pass the instant they compare with.

use jiff::civil::{Date, DateTime};
use jiff::SignedDuration;
pub use jiff::Timestamp;

/// Why a text is not a date or RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not the shape of `2026-12-31` or `2026-12-31T18:00:00Z`.
    #[error("{0:?} is not a date (2026-12-31) or an RFC 3339 time (2026-12-31T18:00:00Z, 2026-12-31T18:00:00+02:00)")]
    Syntax(String),
    /// The right shape, but no such date or time (`2026-02-30`, `25:00`).
    #[error("{input:?} is not a valid date or time: {reason}")]
    Invalid { input: String, reason: String },
}

/// A calendar date or an exact instant, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateOrTime {
    /// `2026-12-31`: a whole day, in no particular time zone.
    Date(Date),
    /// An RFC 3339 date-time, with its offset applied.
    Time(Timestamp),
}

impl DateOrTime {
    /// The instant it stands for: a date is the start of that day in UTC.
    /// 9999-12-31 starts after [`Timestamp::MAX`] and is clamped to it.
    pub fn start(self) -> Timestamp {
        match self {
            DateOrTime::Date(date) => match date.to_zoned(jiff::tz::TimeZone::UTC) {
                Ok(zoned) => zoned.timestamp(),
                Err(_) if date.year() > 0 => Timestamp::MAX,
                Err(_) => Timestamp::MIN,
            },
            DateOrTime::Time(time) => time,
        }
    }
}

/// Parses `2026-12-31` (the start of that day, UTC) or an RFC 3339
/// date-time into an instant.
pub fn parse_instant(text: &str) -> Result<Timestamp, TimeError> {
    parse_date_or_time(text).map(DateOrTime::start)
}

/// Parses `2026-12-31` or an RFC 3339 date-time, keeping which it was.
pub fn parse_date_or_time(text: &str) -> Result<DateOrTime, TimeError> {
    let invalid = |error: jiff::Error| TimeError::Invalid { input: text.to_owned(), reason: error.to_string() };
    let bytes = text.as_bytes();
    if bytes.len() == 10 && is_full_date(bytes) {
        return text.parse::<Date>().map(DateOrTime::Date).map_err(invalid);
    }
    if !is_rfc3339_date_time(bytes) {
        return Err(TimeError::Syntax(text.to_owned()));
    }
    // RFC 3339's offsets stop at 23:59; jiff's go further (25:59:59).
    if let [.., sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] = bytes {
        let (hours, minutes) = ((h1 - b'0') * 10 + (h2 - b'0'), (m1 - b'0') * 10 + (m2 - b'0'));
        if hours > 23 || minutes > 59 {
            let offset = format!("{}{}{}:{}{}", *sign as char, *h1 as char, *h2 as char, *m1 as char, *m2 as char);
            let reason = format!("offset {offset} is out of range (RFC 3339: -23:59 to +23:59)");
            return Err(TimeError::Invalid { input: text.to_owned(), reason });
        }
    }
    text.parse::<Timestamp>().map(DateOrTime::Time).map_err(invalid)
}

/// `instant` in RFC 3339, in UTC: `2026-12-31T16:00:00Z`, with a fraction
/// of a second only when it has one (`...:00.5Z`).
pub fn format_rfc3339(instant: Timestamp) -> String {
    // jiff's Display is RFC 3339 (and RFC 9557) in UTC with `Z`.
    instant.to_string()
}

/// A Unix time in RFC 3339 (UTC), for any second X.509 can express (years
/// 0000 to 9999), including those past [`Timestamp::MAX`]; the bare number
/// where even that is exceeded.
pub fn format_unix_seconds(seconds: i64) -> String {
    if let Ok(instant) = Timestamp::from_second(seconds) {
        return format_rfc3339(instant);
    }
    match utc_date_time(SignedDuration::from_secs(seconds)) {
        Some(civil) => format!("{civil}Z"),
        None => format!("{seconds} (Unix time)"),
    }
}

/// The UTC calendar date and time `since_epoch` after 1970-01-01T00:00:00Z,
/// up to 9999-12-31T23:59:59.999999999; `None` outside years -9999..=9999.
pub fn utc_date_time(since_epoch: SignedDuration) -> Option<DateTime> {
    if let Ok(instant) = Timestamp::from_duration(since_epoch) {
        return Some(jiff::tz::Offset::UTC.to_datetime(instant));
    }
    // Timestamp stops about a day short of 9999-12-31T23:59:59Z so that any
    // offset fits; in UTC the civil calendar goes the whole way.
    DateTime::constant(1970, 1, 1, 0, 0, 0, 0).checked_add(since_epoch).ok()
}

/// `YYYY-MM-DD`.
fn is_full_date(b: &[u8]) -> bool {
    b.len() >= 10 && digits(&b[0..4]) && b[4] == b'-' && digits(&b[5..7]) && b[7] == b'-' && digits(&b[8..10])
}

/// RFC 3339 `date-time`: `full-date "T" partial-time time-offset`, where
/// `partial-time` is `HH:MM:SS[.fraction]` and `time-offset` is `Z` or
/// `+HH:MM`/`-HH:MM`; `T` and `Z` may be lower case (RFC 3339, 5.6).
fn is_rfc3339_date_time(b: &[u8]) -> bool {
    if b.len() < 20 || !is_full_date(b) || !matches!(b[10], b'T' | b't') {
        return false;
    }
    let time = &b[11..];
    if !(digits(&time[0..2]) && time[2] == b':' && digits(&time[3..5]) && time[5] == b':' && digits(&time[6..8])) {
        return false;
    }
    let mut rest = &time[8..];
    if let Some((b'.', fraction)) = rest.split_first() {
        let count = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if count == 0 {
            return false;
        }
        rest = &fraction[count..];
    }
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => digits(&[*h1, *h2, *m1, *m2]),
        _ => false,
    }
}

fn digits(b: &[u8]) -> bool {
    b.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instant(text: &str) -> String {
        parse_instant(text).map(format_rfc3339).unwrap_or_else(|e| format!("error: {e}"))
    }

    #[test]
    fn dates_are_the_start_of_the_day_in_utc() {
        assert_eq!(instant("2026-12-31"), "2026-12-31T00:00:00Z");
        assert_eq!(instant("2024-02-29"), "2024-02-29T00:00:00Z");
        assert_eq!(parse_date_or_time("2026-12-31"), Ok(DateOrTime::Date(jiff::civil::date(2026, 12, 31))));
        assert_eq!(parse_instant("1970-01-01").unwrap().as_second(), 0);
        assert_eq!(instant("0000-01-01"), "0000-01-01T00:00:00Z");
        // The last day starts past jiff's Timestamp::MAX: clamped, still the far future.
        assert_eq!(parse_instant("9999-12-31"), Ok(Timestamp::MAX));
        assert!(parse_instant("9999-12-30").unwrap() < Timestamp::MAX);
    }

    #[test]
    fn rfc3339_times_with_offsets_and_fractions() {
        assert_eq!(instant("2026-12-31T18:00:00Z"), "2026-12-31T18:00:00Z");
        assert_eq!(instant("2026-12-31t18:00:00z"), "2026-12-31T18:00:00Z");
        assert_eq!(instant("2026-12-31T18:00:00+02:00"), "2026-12-31T16:00:00Z");
        assert_eq!(instant("2026-12-31T23:30:00-01:00"), "2027-01-01T00:30:00Z");
        assert_eq!(instant("2026-12-31T18:00:00.5Z"), "2026-12-31T18:00:00.5Z");
        assert_eq!(instant("2026-12-31T18:00:00.123456789Z"), "2026-12-31T18:00:00.123456789Z");
        assert_eq!(instant("2026-12-31T18:00:00-00:00"), "2026-12-31T18:00:00Z");
        assert!(matches!(parse_date_or_time("2026-12-31T18:00:00Z"), Ok(DateOrTime::Time(_))));
    }

    #[test]
    fn only_rfc3339_shapes() {
        for text in [
            "",
            "2026-12-31 18:00:00Z", // a space (RFC 3339 allows it only as an application's choice)
            "2026-12-31T18:00Z",    // no seconds
            "2026-12-31T18:00:00",  // no offset: which instant is that?
            "2026-12-31T18:00:00+0200", // ISO 8601 basic offset
            "2026-12-31T18:00:00+02",
            "20261231T180000Z",                   // ISO 8601 basic format
            "2026-12-31T18:00:00Z[Europe/Paris]", // RFC 9557
            "2026-12-31T18:00:00.Z",
            "2026-W53",
            "31.12.2026",
            "+002026-12-31",
            "2026-1-31",
            "tomorrow",
            " 2026-12-31",
            "2026-12-31\n",
        ] {
            assert_eq!(parse_instant(text), Err(TimeError::Syntax(text.to_owned())), "{text:?}");
        }
    }

    #[test]
    fn impossible_dates_and_times_name_the_reason() {
        for text in [
            "2026-02-30",
            "2026-13-01",
            "2026-12-31T25:00:00Z",
            "2026-12-31T18:61:00Z",
            "2026-12-31T18:00:00+24:00",
            "2026-12-31T18:00:00-01:60",
        ] {
            match parse_instant(text) {
                Err(TimeError::Invalid { input, reason }) => {
                    assert_eq!(input, text);
                    assert!(!reason.is_empty());
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let message = parse_instant("2026-02-30").unwrap_err().to_string();
        assert!(message.starts_with(r#""2026-02-30" is not a valid date or time: "#), "{message}");
    }

    #[test]
    fn formats_unix_seconds_over_the_whole_x509_range() {
        assert_eq!(format_unix_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix_seconds(2_524_521_600), "2049-12-31T00:00:00Z");
        assert_eq!(format_unix_seconds(-2_208_988_800), "1900-01-01T00:00:00Z");
        // RFC 5280's "no well-defined expiration", past jiff's Timestamp::MAX.
        assert_eq!(format_unix_seconds(253_402_300_799), "9999-12-31T23:59:59Z");
        assert_eq!(format_unix_seconds(i64::MAX), format!("{} (Unix time)", i64::MAX));
    }

    #[test]
    fn round_trips_through_rfc3339() {
        for seconds in [0, 951_782_400, 1_709_164_799, 4_102_444_800] {
            let text = format_unix_seconds(seconds);
            assert_eq!(parse_instant(&text).unwrap().as_second(), seconds, "{text}");
        }
    }

    #[test]
    fn every_second_round_trips_and_nothing_panics() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        let mut runner = TestRunner::new(Config { cases: 2_000, ..Config::default() });
        // Years 0001 to 9999, the range of RFC 3339's four-digit year.
        runner
            .run(&(-62_135_596_800i64..=253_402_300_799, 0u32..1_000_000_000), |(seconds, nanos)| {
                let text = format_unix_seconds(seconds);
                prop_assert!(text.len() == 20 && text.ends_with('Z'), "{}", text);
                if let Ok(instant) = Timestamp::new(seconds, i32::try_from(nanos).unwrap()) {
                    prop_assert_eq!(parse_instant(&format_rfc3339(instant)), Ok(instant));
                    prop_assert_eq!(parse_instant(&text).map(|t| t.as_second()), Ok(seconds));
                }
                Ok(())
            })
            .unwrap();
        runner
            .run(&"[-+:.0-9TtZz ]{0,32}", |text| {
                let _ = parse_date_or_time(&text);
                Ok(())
            })
            .unwrap();
    }
}
