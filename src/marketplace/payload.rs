//! Reading marketplace payloads, the rules every adapter shares: which content types are JSON, large
//! arrays read element by element, money written as literals, scalar text, Turkish text folding, and
//! scrubbing echoed credentials.

use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Europe::Istanbul;
use rust_decimal::Decimal;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::http::Redactor;

/// A JSON text read one level deep: an array as its elements' texts (borrowed from the body), anything
/// else as a value. An API without pagination may answer thousands of orders in one array; turning each
/// element into a value only when its order is converted keeps one order's tree in memory at a time
/// instead of the whole answer's, which costs many times the body's size.
#[derive(Debug)]
pub enum Json<'a> {
    Array(Vec<&'a RawValue>),
    Other(Value),
}

impl<'a> Json<'a> {
    pub fn parse(text: &'a [u8]) -> Result<Json<'a>, serde_json::Error> {
        let raw: &'a RawValue = serde_json::from_slice(text)?;
        Json::of(raw)
    }

    pub fn of(raw: &'a RawValue) -> Result<Json<'a>, serde_json::Error> {
        if raw.get().trim_start().starts_with('[') {
            serde_json::from_str(raw.get()).map(Json::Array)
        } else {
            serde_json::from_str(raw.get()).map(Json::Other)
        }
    }
}

/// A reader that keeps the last bytes it passed on, so that a body read as it arrives (never held
/// whole) can still be recorded near where it went wrong.
pub(crate) struct Tail<R> {
    inner: R,
    kept: Vec<u8>,
    limit: usize,
    /// Bytes passed on so far.
    read: u64,
}

impl<R> Tail<R> {
    pub(crate) fn new(inner: R, limit: usize) -> Tail<R> {
        Tail {
            inner,
            kept: Vec::new(),
            limit,
            read: 0,
        }
    }

    /// The last (at most `limit`) bytes passed on, and how many were passed on in all.
    pub(crate) fn last(&self) -> (&[u8], u64) {
        let start = self.kept.len().saturating_sub(self.limit);
        (&self.kept[start..], self.read)
    }
}

impl<R: std::io::Read> std::io::Read for Tail<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.kept.extend_from_slice(&buf[..n]);
        // Trimmed to the limit once it holds twice as much, so that each byte is moved at most once.
        if self.kept.len() > 2 * self.limit {
            self.kept.drain(..self.kept.len() - self.limit);
        }
        self.read += n as u64;
        Ok(n)
    }
}

/// Whether a response's content type is JSON; a missing one is given the benefit of the doubt.
pub(crate) fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|ct| {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
    })
}

/// A decimal from its literal text: plain (`149.90`), exponent (`1.5e2`) or Turkish (`1.234,56`).
/// Never through `f64`, so `23.19` stays `23.19`.
pub(crate) fn decimal(text: &str) -> Option<Decimal> {
    let text = text.trim();
    if let Ok(d) = Decimal::from_str(text) {
        return Some(d);
    }
    if text.contains(['e', 'E']) {
        return Decimal::from_scientific(text).ok();
    }
    if text.contains(',') {
        return Decimal::from_str(&text.replace('.', "").replace(',', ".")).ok();
    }
    None
}

/// An amount sent as a JSON number or a string; absent, null or blank is `None`.
pub(crate) fn amount(value: Option<&Value>) -> Result<Option<Decimal>, String> {
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_str().to_owned(),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(None),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(other) => return Err(format!("a {} is not an amount", kind(other))),
    };
    decimal(&text)
        .map(Some)
        .ok_or_else(|| format!("`{text}` is not an amount"))
}

/// The JSON type of a value, for messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A string, or a number's literal text.
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Removes credentials an API may echo in an order: members named like `secret_keys` (any case)
/// anywhere, and the account's secret values inside any string.
pub(crate) fn scrub(value: &mut Value, redactor: &Redactor, secret_keys: &[&str]) {
    match value {
        Value::Object(map) => {
            map.retain(|k, _| !secret_keys.iter().any(|s| k.eq_ignore_ascii_case(s)));
            map.values_mut()
                .for_each(|v| scrub(v, redactor, secret_keys));
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| scrub(v, redactor, secret_keys)),
        Value::String(s) => {
            let redacted = redactor.redact(s);
            if redacted != *s {
                *s = redacted;
            }
        }
        _ => {}
    }
}

/// Lowercases, strips Turkish diacritics and collapses spacing, so that "İPTAL  EDİLDİ", "İptal
/// edildi" and "Iptal edildi" all read `iptal edildi` (plain `to_lowercase` turns `İ` into `i` plus a
/// combining dot).
pub(crate) fn fold(text: &str) -> String {
    let lowered: String = text
        .chars()
        .flat_map(char::to_lowercase)
        .filter_map(|c| match c {
            '\u{307}' => None,
            'ı' => Some('i'),
            'ş' => Some('s'),
            'ğ' => Some('g'),
            'ü' => Some('u'),
            'ö' => Some('o'),
            'ç' => Some('c'),
            c => Some(c),
        })
        .collect();
    lowered.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A local date-time without an offset, read as Europe/Istanbul time (the house rule for every API);
/// `None` for a time that does not exist there.
pub(crate) fn istanbul(naive: &NaiveDateTime) -> Option<DateTime<Utc>> {
    Istanbul
        .from_local_datetime(naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// Serde helpers for wire types whose fields arrive as strings or numbers.
pub(crate) mod de {
    use super::*;

    /// A string or a number, as text.
    pub(crate) fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        let value = Value::deserialize(d)?;
        scalar_text(&value).ok_or_else(|| {
            D::Error::custom(format!("expected a string or a number, found {value}"))
        })
    }

    /// Like [`text`], with null or absent as `None`.
    pub(crate) fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Option::<Value>::deserialize(d)? {
            None | Some(Value::Null) => Ok(None),
            Some(value) => scalar_text(&value).map(Some).ok_or_else(|| {
                D::Error::custom(format!("expected a string or a number, found {value}"))
            }),
        }
    }

    /// An amount from its literal text (see [`super::amount`]).
    pub(crate) fn amount<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        let value = Option::<Value>::deserialize(d)?;
        super::amount(value.as_ref()).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_are_read_element_by_element_and_keep_number_literals() {
        let body = br#" [ {"id": 1, "amount": 12.50}, [2], null ] "#;
        let Json::Array(elements) = Json::parse(body).unwrap() else {
            panic!("an array");
        };
        let texts: Vec<&str> = elements.iter().map(|e| e.get()).collect();
        assert_eq!(texts, [r#"{"id": 1, "amount": 12.50}"#, "[2]", "null"]);
        assert!(matches!(
            Json::parse(b"null").unwrap(),
            Json::Other(Value::Null)
        ));
        assert!(matches!(
            Json::parse(br#"{"hata": "x"}"#).unwrap(),
            Json::Other(Value::Object(_))
        ));
        assert!(Json::parse(b"[1,").is_err());
    }

    #[test]
    fn the_tail_keeps_the_last_bytes_read() {
        use std::io::Read;
        let body: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut tail = Tail::new(body.as_slice(), 100);
        let mut buf = [0u8; 7];
        let mut seen = Vec::new();
        while let Ok(n @ 1..) = tail.read(&mut buf) {
            seen.extend_from_slice(&buf[..n]);
            let (last, read) = tail.last();
            assert_eq!(read, seen.len() as u64);
            assert_eq!(last, &seen[seen.len().saturating_sub(100)..]);
            assert!(tail.kept.len() <= 200);
        }
        assert_eq!(seen, body);
    }

    #[test]
    fn decimals_keep_their_literal() {
        assert_eq!(decimal("0.10").unwrap().to_string(), "0.10");
        assert_eq!(decimal("1.5e2").unwrap(), Decimal::from(150));
        assert_eq!(decimal("1.234,56").unwrap().to_string(), "1234.56");
        assert!(decimal("NaN").is_none());
        let n: Value = serde_json::from_str("23.19").unwrap();
        assert_eq!(amount(Some(&n)).unwrap().unwrap().to_string(), "23.19");
        assert!(amount(Some(&Value::Bool(true))).is_err());
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(None));
        assert!(is_json(Some("application/json; charset=utf-8")));
        assert!(is_json(Some("application/problem+json")));
        assert!(!is_json(Some("text/html")));
    }

    #[test]
    fn folding_ignores_case_diacritics_and_spacing() {
        assert_eq!(fold("İPTAL  EDİLDİ"), "iptal edildi");
        assert_eq!(fold("Ödeme Bekliyor"), "odeme bekliyor");
    }

    #[test]
    fn scrubbing_removes_keys_and_values() {
        let redactor = Redactor::new(vec!["tok-secret".into()]);
        let mut v = serde_json::json!({"ApiKey": "x", "note": "sent tok-secret", "n": [{"access_token": 1}]});
        scrub(&mut v, &redactor, &["apikey", "access_token"]);
        assert_eq!(v, serde_json::json!({"note": "sent ***", "n": [{}]}));
    }
}
