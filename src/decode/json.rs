//! A strict JSON deserializer for the webhook's hot path, over text already
//! checked to be UTF-8. It feeds the same `Deserialize` impls as serde_json
//! (the model's derives, duplicate-field checks and all) and accepts a subset
//! of what serde_json accepts, giving the same values; what it refuses, or
//! does not support, [`crate::decode::review::decode_str`] hands to
//! serde_json, whose answer (a value or its exact error message, line and
//! column) is then the answer. Its own errors carry no detail: they only say
//! "ask serde_json".
//!
//! Why: decoding is most of what a review costs, and most of a review is
//! skipped (managedFields, env, volumes, status...). Skipping an ignored
//! value here is one tight loop over the bytes with a word-at-a-time string
//! scan, where serde_json goes through its generic reader for every token;
//! strings the model keeps are borrowed from the input without a second
//! UTF-8 check.
//!
//! Differences from serde_json, all of them refusals (so serde_json decides):
//! floating-point numbers and integers beyond 64 bits where a value is read
//! (no model field takes one), enums, byte buffers, nesting deeper than
//! [`MAX_DEPTH`], and any error. Skipped values are validated as strictly as
//! serde_json validates them (literals, numbers, escapes, control
//! characters, structure). `tests/fuzz_decoders.rs` checks on mutated
//! reviews that whenever this deserializer accepts a body, serde_json
//! accepts it too with an equal result.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;

/// Nesting deeper than this is left to serde_json (whose limit is 128 for
/// values it reads; it skips ignored values of any depth).
pub const MAX_DEPTH: usize = 120;

/// serde_json's marker for `RawValue` (`serde_json::value::RawValue`
/// deserialises through `deserialize_newtype_struct` with this name and
/// expects a one-entry map from it to the raw text).
const RAW_VALUE_TOKEN: &str = "$serde_json::private::RawValue";

/// The name under which [`Captured`] asks for a value with its raw text.
const CAPTURE_TOKEN: &str = "$podgate::decode::json::Captured";

/// A value and, when this deserializer read it, its raw JSON text (what
/// serde_json's `RawValue` would hold), at no extra cost. Another
/// deserializer (serde_json) reads the value alone: `raw` is a shortcut,
/// never the only way to the text. `Debug` shows the value only.
pub struct Captured<'a, T> {
    pub value: T,
    pub raw: Option<&'a str>,
}

impl<T> std::ops::Deref for Captured<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Captured<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<'de: 'a, 'a, T: de::Deserialize<'de>> de::Deserialize<'de> for Captured<'a, T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CapturedVisitor<'a, T>(std::marker::PhantomData<(&'a (), T)>);

        impl<'de: 'a, 'a, T: de::Deserialize<'de>> Visitor<'de> for CapturedVisitor<'a, T> {
            type Value = Captured<'a, T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            // Any other deserializer: the value alone.
            fn visit_newtype_struct<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
                T::deserialize(deserializer).map(|value| Captured { value, raw: None })
            }
            // This one: the value, then its text.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let value = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let raw: Option<&'de str> = seq.next_element()?;
                Ok(Captured { value, raw })
            }
        }

        deserializer.deserialize_newtype_struct(CAPTURE_TOKEN, CapturedVisitor(std::marker::PhantomData))
    }
}

/// "Not decoded here": the caller asks serde_json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused;

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not decoded by the fast path")
    }
}

impl std::error::Error for Refused {}

impl de::Error for Refused {
    fn custom<T: fmt::Display>(_message: T) -> Self {
        Refused
    }
}

/// Decodes `text` as a `T`, or [`Refused`].
pub fn from_str<'de, T: de::Deserialize<'de>>(text: &'de str) -> Result<T, Refused> {
    from_str_seed(text, std::marker::PhantomData::<T>)
}

/// Decodes `text` with `seed`, or [`Refused`].
pub fn from_str_seed<'de, S: DeserializeSeed<'de>>(text: &'de str, seed: S) -> Result<S::Value, Refused> {
    let mut deserializer = Deserializer { text, bytes: text.as_bytes(), pos: 0, depth: 0 };
    let value = seed.deserialize(&mut deserializer)?;
    deserializer.skip_whitespace();
    if deserializer.pos == deserializer.bytes.len() {
        Ok(value)
    } else {
        Err(Refused)
    }
}

struct Deserializer<'de> {
    text: &'de str,
    bytes: &'de [u8],
    pos: usize,
    /// Arrays and objects open around the value being read.
    depth: usize,
}

const ONES: u64 = u64::MAX / 255;
const HIGH_BITS: u64 = ONES << 7;

/// A bit set in the high bit of each byte of `chunk` that is `"`, `\` or a
/// control character (below 0x20): where a string's plain run ends.
#[inline(always)]
fn string_stops(chunk: u64) -> u64 {
    let control = chunk.wrapping_sub(ONES * 0x20) & !chunk;
    let quote = chunk ^ (ONES * u64::from(b'"'));
    let quote = quote.wrapping_sub(ONES) & !quote;
    let backslash = chunk ^ (ONES * u64::from(b'\\'));
    let backslash = backslash.wrapping_sub(ONES) & !backslash;
    (control | quote | backslash) & HIGH_BITS
}

#[inline(always)]
fn skip_whitespace(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(pos) {
        pos += 1;
    }
    pos
}

/// From `pos` (inside a string) to the first `"`, `\` or control character,
/// a word at a time.
#[inline(always)]
fn plain_end(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(chunk) = bytes.get(pos..pos + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let stops = string_stops(u64::from_le_bytes(word));
        if stops != 0 {
            return pos + (stops.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    while let Some(&byte) = bytes.get(pos) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            break;
        }
        pos += 1;
    }
    pos
}

/// Skips the rest of a string from just after its opening quote; returns
/// the position after the closing quote.
#[inline(always)]
fn skip_string(bytes: &[u8], mut pos: usize) -> Result<usize, Refused> {
    loop {
        pos = plain_end(bytes, pos);
        match bytes.get(pos) {
            Some(b'"') => return Ok(pos + 1),
            Some(b'\\') => pos = skip_escape(bytes, pos + 1)?,
            _ => return Err(Refused),
        }
    }
}

/// An escape in a skipped string, after its backslash: checked as serde_json
/// checks one it skips (a known escape, or `u` and four hex digits).
#[cold]
fn skip_escape(bytes: &[u8], pos: usize) -> Result<usize, Refused> {
    match bytes.get(pos) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(pos + 1),
        Some(b'u') => match bytes.get(pos + 1..pos + 5) {
            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => Ok(pos + 5),
            _ => Err(Refused),
        },
        _ => Err(Refused),
    }
}

/// Skips a number from `pos`, checking its syntax; returns the position
/// after it and whether it is an integer (no fraction, no exponent).
#[inline(always)]
fn skip_number(bytes: &[u8], mut pos: usize) -> Result<(usize, bool), Refused> {
    let digits = |mut pos: usize| {
        while let Some(b'0'..=b'9') = bytes.get(pos) {
            pos += 1;
        }
        pos
    };
    if bytes.get(pos) == Some(&b'-') {
        pos += 1;
    }
    match bytes.get(pos) {
        Some(b'0') => pos += 1,
        Some(b'1'..=b'9') => pos = digits(pos + 1),
        _ => return Err(Refused),
    }
    let mut integer = true;
    if bytes.get(pos) == Some(&b'.') {
        if !matches!(bytes.get(pos + 1), Some(b'0'..=b'9')) {
            return Err(Refused);
        }
        pos = digits(pos + 1);
        integer = false;
    }
    if let Some(b'e' | b'E') = bytes.get(pos) {
        pos += 1;
        if let Some(b'+' | b'-') = bytes.get(pos) {
            pos += 1;
        }
        if !matches!(bytes.get(pos), Some(b'0'..=b'9')) {
            return Err(Refused);
        }
        pos = digits(pos);
        integer = false;
    }
    Ok((pos, integer))
}

/// `"key":` inside an object being skipped, from the opening quote.
#[inline(always)]
fn skip_key(bytes: &[u8], pos: usize) -> Result<usize, Refused> {
    if bytes.get(pos) != Some(&b'"') {
        return Err(Refused);
    }
    let pos = skip_whitespace(bytes, skip_string(bytes, pos + 1)?);
    if bytes.get(pos) != Some(&b':') {
        return Err(Refused);
    }
    Ok(pos + 1)
}

/// Skips one value of any depth from `pos` (no recursion), validating it as
/// serde_json validates what it skips; returns the position after it.
fn skip_value(bytes: &[u8], mut pos: usize) -> Result<usize, Refused> {
    // One bit per open container, 1 for an object; serde_json skips any
    // depth, so deeper nesting is refused and left to it.
    let mut objects: u128 = 0;
    let mut depth = 0u32;
    'value: loop {
        pos = skip_whitespace(bytes, pos);
        match bytes.get(pos) {
            Some(b'"') => pos = skip_string(bytes, pos + 1)?,
            Some(b'{') => {
                pos = skip_whitespace(bytes, pos + 1);
                if bytes.get(pos) == Some(&b'}') {
                    pos += 1;
                } else {
                    if depth == 127 {
                        return Err(Refused);
                    }
                    objects = (objects << 1) | 1;
                    depth += 1;
                    pos = skip_key(bytes, pos)?;
                    continue 'value;
                }
            }
            Some(b'[') => {
                pos = skip_whitespace(bytes, pos + 1);
                if bytes.get(pos) == Some(&b']') {
                    pos += 1;
                } else {
                    if depth == 127 {
                        return Err(Refused);
                    }
                    objects <<= 1;
                    depth += 1;
                    continue 'value;
                }
            }
            Some(b'n') if bytes.get(pos..pos + 4) == Some(b"null") => pos += 4,
            Some(b't') if bytes.get(pos..pos + 4) == Some(b"true") => pos += 4,
            Some(b'f') if bytes.get(pos..pos + 5) == Some(b"false") => pos += 5,
            Some(b'-' | b'0'..=b'9') => pos = skip_number(bytes, pos)?.0,
            _ => return Err(Refused),
        }
        // After a value: close containers until one continues.
        loop {
            if depth == 0 {
                return Ok(pos);
            }
            pos = skip_whitespace(bytes, pos);
            let in_object = objects & 1 == 1;
            match bytes.get(pos) {
                Some(b',') => {
                    pos = skip_whitespace(bytes, pos + 1);
                    if in_object {
                        pos = skip_key(bytes, pos)?;
                    }
                    continue 'value;
                }
                Some(b'}') if in_object => {}
                Some(b']') if !in_object => {}
                _ => return Err(Refused),
            }
            pos += 1;
            objects >>= 1;
            depth -= 1;
        }
    }
}

impl<'de> Deserializer<'de> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline(always)]
    fn skip_whitespace(&mut self) {
        self.pos = skip_whitespace(self.bytes, self.pos);
    }

    /// The next byte after whitespace.
    #[inline(always)]
    fn next_token(&mut self) -> Result<u8, Refused> {
        self.skip_whitespace();
        self.peek().ok_or(Refused)
    }

    #[inline(always)]
    fn expect(&mut self, byte: u8) -> Result<(), Refused> {
        if self.next_token()? == byte {
            self.pos += 1;
            Ok(())
        } else {
            Err(Refused)
        }
    }

    #[inline(always)]
    fn literal(&mut self, word: &'static [u8]) -> Result<(), Refused> {
        if self.bytes.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Refused)
        }
    }

    /// From just after an opening quote to the first `"`, `\` or control
    /// character.
    #[inline(always)]
    fn scan_plain(&mut self) {
        self.pos = plain_end(self.bytes, self.pos);
    }

    /// A string whose opening quote was consumed: borrowed from the input
    /// when it has no escapes, else unescaped into a new `String`.
    #[inline]
    fn string(&mut self) -> Result<Str<'de>, Refused> {
        let start = self.pos;
        self.scan_plain();
        match self.peek() {
            Some(b'"') => {
                let text = self.text.get(start..self.pos).ok_or(Refused)?;
                self.pos += 1;
                Ok(Str::Borrowed(text))
            }
            Some(b'\\') => self.escaped_string(start),
            _ => Err(Refused),
        }
    }

    /// The rest of a string from its first backslash, unescaped into a new
    /// `String`. Out of line: escapes are rare in reviews, and without this
    /// loop [`Self::string`], called about 200 times per review, is small
    /// (fewer registers saved per call, a tighter hot path).
    #[cold]
    #[inline(never)]
    fn escaped_string(&mut self, start: usize) -> Result<Str<'de>, Refused> {
        let mut owned = String::from(self.text.get(start..self.pos).ok_or(Refused)?);
        loop {
            self.pos += 1; // the backslash
            self.escape(&mut owned)?;
            let run = self.pos;
            self.scan_plain();
            owned.push_str(self.text.get(run..self.pos).ok_or(Refused)?);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Str::Owned(owned));
                }
                Some(b'\\') => {}
                _ => return Err(Refused),
            }
        }
    }

    /// An escape in a string being read, after its backslash; appends what
    /// it stands for to `out`. `\u` escapes must form valid characters
    /// (surrogates in pairs), as serde_json requires of strings it reads.
    fn escape(&mut self, out: &mut String) -> Result<(), Refused> {
        let byte = self.peek().ok_or(Refused)?;
        self.pos += 1;
        let decoded = match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                let code = match first {
                    0xD800..=0xDBFF => {
                        if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                            return Err(Refused);
                        }
                        self.pos += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(Refused);
                        }
                        0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(second) - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(Refused),
                    other => u32::from(other),
                };
                char::from_u32(code).ok_or(Refused)?
            }
            _ => return Err(Refused),
        };
        out.push(decoded);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u16, Refused> {
        let digits = self.bytes.get(self.pos..self.pos + 4).ok_or(Refused)?;
        let mut value = 0u16;
        for &digit in digits {
            let nibble = match digit {
                b'0'..=b'9' => digit - b'0',
                b'a'..=b'f' => digit - b'a' + 10,
                b'A'..=b'F' => digit - b'A' + 10,
                _ => return Err(Refused),
            };
            value = (value << 4) | u16::from(nibble);
        }
        self.pos += 4;
        Ok(value)
    }

    /// Skips one value of any depth (no recursion), validating it.
    fn skip_value(&mut self) -> Result<(), Refused> {
        self.pos = skip_value(self.bytes, self.pos)?;
        Ok(())
    }

    /// An integer read for a visitor: `u64` if non-negative, `i64` if
    /// negative, as serde_json gives them; anything else is refused.
    fn integer<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Refused> {
        let start = self.pos;
        let (end, integer) = skip_number(self.bytes, start)?;
        if !integer {
            return Err(Refused);
        }
        self.pos = end;
        let digits = self.text.get(start..self.pos).ok_or(Refused)?;
        if digits.starts_with('-') {
            // serde_json reads `-0` as the float -0.0.
            match digits.parse().map_err(|_| Refused)? {
                0 => Err(Refused),
                value => visitor.visit_i64(value),
            }
        } else {
            visitor.visit_u64(digits.parse().map_err(|_| Refused)?)
        }
    }

    fn enter(&mut self) -> Result<(), Refused> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Refused);
        }
        Ok(())
    }

    /// After a visitor read an array: its end (serde_json's `end_seq`).
    fn end_seq(&mut self) -> Result<(), Refused> {
        self.depth -= 1;
        self.expect(b']')
    }

    /// After a visitor read an object: its end (serde_json's `end_map`).
    fn end_map(&mut self) -> Result<(), Refused> {
        self.depth -= 1;
        self.expect(b'}')
    }
}

/// A string as read: borrowed, or unescaped.
enum Str<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl<'de> Str<'de> {
    fn visit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self {
            Str::Borrowed(text) => visitor.visit_borrowed_str(text),
            Str::Owned(text) => visitor.visit_string(text),
        }
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        match self.next_token()? {
            b'"' => {
                self.pos += 1;
                self.string()?.visit(visitor)
            }
            b'{' => {
                self.pos += 1;
                self.enter()?;
                let value = visitor.visit_map(Entries { de: &mut *self, first: true })?;
                self.end_map()?;
                Ok(value)
            }
            b'[' => {
                self.pos += 1;
                self.enter()?;
                let value = visitor.visit_seq(Elements { de: &mut *self, first: true })?;
                self.end_seq()?;
                Ok(value)
            }
            b'n' => {
                self.literal(b"null")?;
                visitor.visit_unit()
            }
            b't' => {
                self.literal(b"true")?;
                visitor.visit_bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                visitor.visit_bool(false)
            }
            b'-' | b'0'..=b'9' => self.integer(visitor),
            _ => Err(Refused),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        if self.next_token()? == b'n' {
            self.literal(b"null")?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Refused> {
        if name == RAW_VALUE_TOKEN {
            self.skip_whitespace();
            let start = self.pos;
            self.skip_value()?;
            let raw = self.text.get(start..self.pos).ok_or(Refused)?;
            return visitor.visit_map(RawValueEntry(Some(raw)));
        }
        if name == CAPTURE_TOKEN {
            self.skip_whitespace();
            let start = self.pos;
            return visitor.visit_seq(Capture { de: self, start, step: 0 });
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.skip_value()?;
        visitor.visit_unit()
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        unit unit_struct seq tuple tuple_struct map struct identifier
    }
}

/// The elements of an array (serde_json's `SeqAccess`).
struct Elements<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    first: bool,
}

impl<'de> SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Refused> {
        match self.de.next_token()? {
            b']' => return Ok(None),
            b',' if !self.first => {
                self.de.pos += 1;
                if self.de.next_token()? == b']' {
                    return Err(Refused); // trailing comma
                }
            }
            _ if self.first => {}
            _ => return Err(Refused),
        }
        self.first = false;
        seed.deserialize(&mut *self.de).map(Some)
    }
}

/// The entries of an object (serde_json's `MapAccess`).
struct Entries<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    first: bool,
}

impl<'de> MapAccess<'de> for Entries<'_, 'de> {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Refused> {
        match self.de.next_token()? {
            b'}' => return Ok(None),
            b',' if !self.first => {
                self.de.pos += 1;
                self.de.skip_whitespace();
            }
            _ if self.first => {}
            _ => return Err(Refused),
        }
        self.first = false;
        if self.de.peek() != Some(b'"') {
            return Err(Refused);
        }
        self.de.pos += 1;
        let key = self.de.string()?;
        seed.deserialize(Key(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Refused> {
        self.de.expect(b':')?;
        seed.deserialize(&mut *self.de)
    }
}

/// An object key: always a string (serde_json's `MapKey`, without its
/// numeric keys, which the model never asks for).
struct Key<'de>(Str<'de>);

impl<'de> de::Deserializer<'de> for Key<'de> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.0.visit(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, name: &'static str, visitor: V) -> Result<V::Value, Refused> {
        if name == RAW_VALUE_TOKEN {
            return Err(Refused);
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Refused> {
        Err(Refused)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Refused> {
        Err(Refused) // serde_json parses `"true"` keys as booleans; not needed here
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// What [`Captured`] reads from this deserializer: the value, then the text
/// it was read from.
struct Capture<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    start: usize,
    step: u8,
}

impl<'de> SeqAccess<'de> for Capture<'_, 'de> {
    type Error = Refused;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Refused> {
        self.step += 1;
        match self.step {
            1 => seed.deserialize(&mut *self.de).map(Some),
            2 => {
                let raw = self.de.text.get(self.start..self.de.pos).ok_or(Refused)?;
                seed.deserialize(de::value::BorrowedStrDeserializer::new(raw)).map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// What serde_json hands `RawValue`'s visitor: one entry, from the marker
/// to the raw text.
struct RawValueEntry<'de>(Option<&'de str>);

impl<'de> MapAccess<'de> for RawValueEntry<'de> {
    type Error = Refused;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Refused> {
        if self.0.is_none() {
            return Ok(None);
        }
        seed.deserialize(RAW_VALUE_TOKEN.into_deserializer()).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Refused> {
        let raw = self.0.take().ok_or(Refused)?;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(raw))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::collections::BTreeMap;

    use serde::Deserialize;
    use serde_json::value::RawValue;

    use super::*;
    use crate::decode::model::Text;

    #[derive(Debug, Deserialize)]
    struct Sample<'a> {
        #[serde(borrow, default)]
        name: Option<Text<'a>>,
        #[serde(default)]
        count: Option<i64>,
        #[serde(default)]
        flag: Option<bool>,
        #[serde(default)]
        list: Vec<u32>,
        #[serde(borrow, default)]
        raw: Option<&'a RawValue>,
    }

    /// Both decoders, compared: the fast one accepts only what serde_json
    /// accepts, with the same value.
    fn both<'a, T>(text: &'a str) -> Option<T>
    where
        T: Deserialize<'a> + fmt::Debug,
    {
        let fast = from_str::<T>(text);
        let slow = serde_json::from_str::<T>(text);
        match (&fast, &slow) {
            (Ok(fast), Ok(slow)) => assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text}"),
            (Ok(fast), Err(error)) => panic!("accepted what serde_json refuses ({error}): {text} -> {fast:?}"),
            _ => {}
        }
        fast.ok()
    }

    #[test]
    fn reads_values_borrowing_plain_strings() {
        let text = r#" {"name": "web", "count": -5, "flag": true, "list": [1, 2 ,3], "raw": {"a": [1, "x\"y"]} ,"other": {"x": [null, 1.5e3, "\u00e9"]}} "#;
        let sample: Sample = both(text).unwrap();
        assert!(matches!(sample.name.map(|n| n.0), Some(Cow::Borrowed("web"))));
        assert_eq!(sample.count, Some(-5));
        assert_eq!(sample.flag, Some(true));
        assert_eq!(sample.list, [1, 2, 3]);
        assert_eq!(sample.raw.unwrap().get(), r#"{"a": [1, "x\"y"]}"#);
    }

    #[test]
    fn unescapes_strings_as_serde_json_does() {
        for text in [
            r#"{"name": "a\nb\t\"c\"\\\/\b\f\r"}"#,
            r#"{"name": "\u00e9\u20ac\ud83d\ude00x"}"#,
            r#"{"name": "plain but long enough to cross a few eight byte words"}"#,
            r#"{"name": "ünïcödé ✓"}"#,
        ] {
            let sample: Sample = both(text).unwrap();
            let borrowed = matches!(sample.name.map(|n| n.0), Some(Cow::Borrowed(_)));
            assert_eq!(borrowed, !text.contains('\\'), "{text}");
        }
        let sample: Sample = both(r#"{"name": "\ud83d\ude00"}"#).unwrap();
        assert_eq!(sample.name.as_deref(), Some("😀"));
    }

    #[test]
    fn refuses_what_serde_json_refuses_or_reads_differently() {
        for text in [
            "",
            "{",
            r#"{"name": "x"} x"#,
            r#"{"name": "x",}"#,
            r#"{"list": [1,]}"#,
            r#"{"list": [1 2]}"#,
            r#"{"count": 1.0}"#,
            r#"{"count": 1e2}"#,
            r#"{"count": 99999999999999999999}"#,
            r#"{"count": 01}"#,
            r#"{"count": -}"#,
            r#"{"count": -0}"#,
            r#"{"count": -9223372036854775809}"#,
            r#"{"name": "\x"}"#,
            r#"{"name": "\ud800"}"#,
            r#"{"name": "\udc00"}"#,
            "{\"name\": \"a\tb\"}",
            r#"{"other": [1, 2,]}"#,
            r#"{"other": {"a" 1}}"#,
            r#"{"other": {"a": 1,}}"#,
            r#"{"other": [01]}"#,
            r#"{"other": [1.]}"#,
            r#"{"other": [1e]}"#,
            r#"{"other": nul}"#,
            r#"{"other": [}"#,
            r#"{"other": "\u12"}"#,
            "{\"other\": \"a\u{1}b\"}",
            r#"{"name": "x", "name": "y"}"#,
        ] {
            assert!(both::<Sample>(text).is_none(), "accepted {text:?}");
        }
    }

    #[test]
    fn skips_any_valid_json() {
        let deep_but_allowed = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        for other in [
            "null",
            "true",
            "-0.5e-7",
            r#""\ud800""#,
            r#"{"a":{"b":{"c":[[],{},[{}],"\\"]}}}"#,
            "[1, -2, 3.25, 4E+2, \"x\", [true, false, null], {\"k\": {}}]",
            &deep_but_allowed,
        ] {
            // (serde_json skips a lone surrogate in a string it does not read.)
            let text = format!(r#"{{"other": {other}, "count": 7}}"#);
            assert_eq!(both::<Sample>(&text).unwrap().count, Some(7), "{text}");
        }
        let too_deep = format!(r#"{{"other": {}1{}}}"#, "[".repeat(200), "]".repeat(200));
        assert!(from_str::<Sample>(&too_deep).is_err());
    }

    #[test]
    fn captures_the_text_of_a_value_it_reads() {
        #[derive(Debug, Deserialize)]
        struct Outer<'a> {
            #[serde(borrow, default)]
            inner: Option<Captured<'a, Sample<'a>>>,
        }
        let text = r#"{"inner":  {"count": 3, "other": [1, {"x": null}]} , "z": 1}"#;
        let fast: Outer = from_str(text).unwrap();
        let inner = fast.inner.unwrap();
        assert_eq!(inner.count, Some(3));
        assert_eq!(inner.raw, Some(r#"{"count": 3, "other": [1, {"x": null}]}"#));
        let slow: Outer = serde_json::from_str(text).unwrap();
        let inner = slow.inner.unwrap();
        assert_eq!((inner.count, inner.raw), (Some(3), None));
        let null: Outer = from_str(r#"{"inner": null}"#).unwrap();
        assert!(null.inner.is_none());
    }

    #[test]
    fn arrays_for_structs_and_maps_of_keys() {
        // serde_json reads a struct from an array too.
        let sample: Sample = both(r#"["n", 1, false, [2], null]"#).unwrap();
        assert_eq!(sample.count, Some(1));
        let map: BTreeMap<Cow<str>, i64> = both(r#"{"a": 1, "b\n": -2}"#).unwrap();
        assert_eq!(map.len(), 2);
    }
}
