//! `--log-format json`: one JSON object per line, the same lines as
//! `tracing_subscriber`'s JSON format with `flatten_event(true)` and no spans
//! (`{"timestamp":...,"level":...,"message":...,<fields>,"target":...}`),
//! built in a reused `String` and handed to the writer in one piece.
//!
//! The stock formatter goes through `serde_json` and an adaptor that checks
//! every few bytes it writes for UTF-8, formats each `Debug` field (the
//! message included) into a `String` of its own, and the timestamp into
//! another: about 22,600 instructions for the per-review event (callgrind).
//! This one writes each piece once, escapes only strings that need it, and
//! takes about 5,000.

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON line formatter.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        thread_local! {
            static LINE: RefCell<String> = RefCell::new(String::with_capacity(1024));
        }
        // The line is built in a plain `String` (inlined pushes) and handed
        // to the writer (a `dyn fmt::Write`) in one piece.
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                format_line(&mut line, event)?;
                writer.write_str(&line)
            }
            // A field's Debug that logs itself: no shared buffer then.
            Err(_) => {
                let mut line = String::new();
                format_line(&mut line, event)?;
                writer.write_str(&line)
            }
        })
    }
}

fn format_line(line: &mut String, event: &Event<'_>) -> fmt::Result {
    let meta = event.metadata();
    line.push_str("{\"timestamp\":\"");
    write_timestamp(line, std::time::SystemTime::now())?;
    line.push_str("\",\"level\":\"");
    line.push_str(meta.level().as_str());
    line.push('"');
    let mut fields = JsonFields { out: line, result: Ok(()) };
    event.record(&mut fields);
    fields.result?;
    line.push_str(",\"target\":");
    write_str(line, meta.target())?;
    line.push_str("}\n");
    Ok(())
}

/// Writes each field as `,"name":value`.
struct JsonFields<'a> {
    out: &'a mut String,
    result: fmt::Result,
}

impl JsonFields<'_> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut String) -> fmt::Result) {
        if self.result.is_ok() {
            self.out.push(',');
            self.result = write_str(self.out, field.name()).and_then(|()| {
                self.out.push(':');
                value(self.out)
            });
        }
    }
}

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.push('"');
            write!(Escaped(out), "{value:?}")?;
            out.push('"');
            Ok(())
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| write_str(out, value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| {
            out.push_str(if value { "true" } else { "false" });
            Ok(())
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json writes an f64: shortest round-trip form, null if not finite.
        self.entry(field, |out| match serde_json::Number::from_f64(value) {
            Some(number) => write!(out, "{number}"),
            None => {
                out.push_str("null");
                Ok(())
            }
        });
    }
}

/// The timer of `--log-format text`: the same RFC 3339 timestamp as the
/// JSON lines, so every time podgate prints comes from jiff.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rfc3339Time;

impl FormatTime for Rfc3339Time {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let mut text = String::with_capacity(32);
        write_timestamp(&mut text, std::time::SystemTime::now())?;
        w.write_str(&text)
    }
}

/// `now` as `tracing_subscriber`'s `SystemTime` timer writes it,
/// `2026-11-28T11:43:33.911320Z` (RFC 3339, UTC, microseconds): the calendar
/// from jiff (as every date podgate prints, see [`crate::time`]), the digits
/// put in place without going through `fmt` for each part.
fn write_timestamp(out: &mut String, now: std::time::SystemTime) -> fmt::Result {
    let since_epoch =
        now.duration_since(std::time::UNIX_EPOCH).ok().and_then(|d| jiff::SignedDuration::try_from(d).ok());
    let Some(civil) = since_epoch.and_then(crate::time::utc_date_time) else {
        // Before 1970 or after 9999: the stock formatter's way.
        return SystemTime.format_time(&mut Writer::new(out));
    };
    let year = civil.year().unsigned_abs().into();
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, civil.month().unsigned_abs().into());
    put(8, 2, civil.day().unsigned_abs().into());
    put(11, 2, civil.hour().unsigned_abs().into());
    put(14, 2, civil.minute().unsigned_abs().into());
    put(17, 2, civil.second().unsigned_abs().into());
    put(20, 6, u64::from(civil.subsec_nanosecond().unsigned_abs() / 1000));
    // Digits, dashes, colons and letters only.
    out.push_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?);
    Ok(())
}

/// `text` as a JSON string.
fn write_str(out: &mut impl fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(text)?;
    out.write_char('"')
}

/// Escapes what it is given as the inside of a JSON string, as serde_json
/// does: `"`, `\` and control characters; everything else as it is.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let bytes = text.as_bytes();
        // Nearly every string has nothing to escape: find out without
        // branching on each byte (the compiler vectorises this).
        if !bytes.iter().fold(false, |any, &b| any | (b < 0x20) | (b == b'"') | (b == b'\\')) {
            return self.0.write_str(text);
        }
        let mut start = 0;
        for (i, &byte) in bytes.iter().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            // Escapes are ASCII, so `i` is on a character boundary.
            self.0.write_str(&text[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&text[start..])
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    fn events() {
        let error = io::Error::other("broken \"pipe\"\n\u{1}");
        tracing::info!(
            uid = "705ab4f5",
            kind = "Pod",
            namespace = "pröd\t\"x\"\\",
            dry_run = false,
            latency_us = 42u64,
            delta = -7i64,
            ratio = 0.25f64,
            nan = f64::NAN,
            checks = "",
            "admission review"
        );
        tracing::warn!(reason = "not_json", %error, debug = ?Some("a\u{7f}b"), "rejected a request without a verdict");
        tracing::error!(error = format!("{:#}", "x"), "cannot start: {}", 5);
    }

    /// The lines the formatter (ours, or the stock one) makes of [`events`],
    /// with the timestamp's value blanked.
    fn lines(ours: bool) -> Vec<String> {
        let buffer = Buffer::default();
        let builder = tracing_subscriber::fmt().with_writer(buffer.clone()).with_max_level(tracing::Level::INFO);
        let dispatch = if ours {
            tracing::Dispatch::new(builder.event_format(JsonLines).finish())
        } else {
            let stock = builder.json().flatten_event(true).with_current_span(false).with_span_list(false);
            tracing::Dispatch::new(stock.finish())
        };
        tracing::dispatcher::with_default(&dispatch, events);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let prefix = r#"{"timestamp":""#;
        text.lines()
            .map(|line| {
                let rest = line.strip_prefix(prefix).unwrap();
                let (timestamp, rest) = rest.split_once('"').unwrap();
                assert_eq!(timestamp.len(), "2026-11-28T11:43:33.911320Z".len(), "{line}");
                assert!(timestamp.ends_with('Z'), "{line}");
                format!("{prefix}\"{rest}")
            })
            .collect()
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        for seconds in [0u64, 951_782_400, 1_709_164_799, 1_764_329_013, 4_102_444_800, 253_402_300_799] {
            for micros in [0u32, 1, 911_320, 999_999] {
                let time = std::time::UNIX_EPOCH + std::time::Duration::new(seconds, micros * 1000);
                let mut ours = String::new();
                write_timestamp(&mut ours, time).unwrap();
                let expected = reference_timestamp(seconds, micros);
                assert_eq!(ours, expected, "{seconds}.{micros}");
            }
        }
    }

    /// The timestamp computed the slow, obvious way.
    fn reference_timestamp(seconds: u64, micros: u32) -> String {
        let mut days = seconds / 86_400;
        let mut year = 1970;
        loop {
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let length = if leap { 366 } else { 365 };
            if days < length {
                let lengths = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
                let mut month = 0;
                while days >= lengths[month] {
                    days -= lengths[month];
                    month += 1;
                }
                let s = seconds % 86_400;
                return format!(
                    "{year:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}Z",
                    month + 1,
                    days + 1,
                    s / 3600,
                    s / 60 % 60,
                    s % 60
                );
            }
            days -= length;
            year += 1;
        }
    }

    #[test]
    fn text_lines_carry_the_same_timestamp_as_the_stock_timer() {
        let line = |ours: bool| {
            let buffer = Buffer::default();
            let builder = tracing_subscriber::fmt().with_writer(buffer.clone()).with_ansi(false);
            let dispatch = if ours {
                tracing::Dispatch::new(builder.with_timer(Rfc3339Time).finish())
            } else {
                tracing::Dispatch::new(builder.finish())
            };
            tracing::dispatcher::with_default(&dispatch, || tracing::info!(answer = 42, "hello"));
            let bytes = buffer.0.lock().unwrap().clone();
            String::from_utf8(bytes).unwrap()
        };
        let (ours, stock) = (line(true), line(false));
        let (time, rest) = ours.split_once(' ').unwrap();
        let (_, stock_rest) = stock.split_once(' ').unwrap();
        assert_eq!(rest, stock_rest);
        assert_eq!(time.len(), "2026-11-28T11:43:33.911320Z".len(), "{ours}");
        let parsed: jiff::Timestamp = time.parse().unwrap();
        assert!(jiff::Timestamp::now().duration_since(parsed).as_secs() < 60, "{ours}");
    }

    #[test]
    fn same_lines_as_the_stock_json_format() {
        let ours = lines(true);
        assert_eq!(ours.len(), 3);
        assert_eq!(ours, lines(false));
        let first: serde_json::Value = serde_json::from_str(&ours[0]).unwrap();
        assert_eq!(first["message"], "admission review");
        assert_eq!(first["namespace"], "pröd\t\"x\"\\");
        let second: serde_json::Value = serde_json::from_str(&ours[1]).unwrap();
        assert_eq!(second["error"], "broken \"pipe\"\n\u{1}");
    }
}
