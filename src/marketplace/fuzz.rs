//! Property-test support for the payload parsers (tests only): inputs that are arbitrary bytes, recorded
//! fixtures mutated at the byte level, and — for JSON — fixtures with one node replaced by an awkward
//! value, so the conversions behind the parsers see well-formed documents of the wrong shape too.
//!
//! The property every parser must hold ([`check`]): it returns, without panicking, and an error says
//! something (a non-empty message). Each run prints how many inputs were tried; `PROPTEST_CASES`
//! raises the count (the soak does).

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

/// Byte sequences that often break parsers: delimiters, escapes, huge numbers, entities, NULs.
const TOKENS: &[&str] = &[
    "null",
    "\"\"",
    "-1",
    "0",
    "1e309",
    "-0.0",
    "99999999999999999999999999999",
    "[]",
    "{}",
    "\"\\u0000\"",
    "\\",
    "\"",
    ",",
    ":",
    "<",
    ">",
    "&amp;",
    "&bogus;",
    "<![CDATA[x]]>",
    "</",
    "<?xml",
    "\u{feff}",
    "\u{fffd}",
    "ğüşıöç",
    "\0",
    "\r\n",
    "2026-02-30T25:61:61",
    "31/02/2026 24:00:00",
    "NaN",
    "true",
];

/// One edit of a byte string; positions are taken modulo its length.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Token(usize, &'static str),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Flip(at, b)),
        (any::<usize>(), 1..64usize).prop_map(|(at, n)| Edit::Delete(at, n)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Edit::Insert(at, bytes)),
        (any::<usize>(), select(TOKENS)).prop_map(|(at, t)| Edit::Token(at, t)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 1..256usize).prop_map(|(at, n)| Edit::Duplicate(at, n)),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            Edit::Flip(at, b) => {
                if !bytes.is_empty() {
                    bytes[at % len] ^= b | 1;
                }
            }
            Edit::Delete(at, n) => {
                let start = (at % len).min(bytes.len());
                let end = (start + n).min(bytes.len());
                bytes.drain(start..end);
            }
            Edit::Insert(at, new) => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, new.iter().copied());
            }
            Edit::Token(at, token) => {
                let at = (at % len).min(bytes.len());
                bytes.splice(at..at, token.bytes());
            }
            Edit::Truncate(at) => bytes.truncate(at % len),
            Edit::Duplicate(at, n) => {
                let start = (at % len).min(bytes.len());
                let end = (start + n).min(bytes.len());
                let copy = bytes[start..end].to_vec();
                bytes.splice(end..end, copy);
            }
        }
    }
    bytes
}

/// Awkward JSON values to put where a fixture had something else.
fn awkward() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        select(TOKENS).prop_map(|t| Value::String(t.to_owned())),
        proptest::collection::vec(any::<char>(), 0..12)
            .prop_map(|c| Value::String(c.into_iter().collect())),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::vec((select(TOKENS), inner), 0..3).prop_map(|entries| {
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect(),
                )
            }),
        ]
    })
}

/// Replaces the `pick`-th node (pre-order, modulo the count) of `value` with `new`.
fn replace_node(value: &mut Value, pick: usize, new: Value) {
    fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(items) => items.iter().map(count).sum(),
            Value::Object(map) => map.values().map(count).sum(),
            _ => 0,
        }
    }
    fn walk(v: &mut Value, target: &mut usize, new: &mut Option<Value>) {
        if *target == 0 {
            if let Some(n) = new.take() {
                *v = n;
            }
            return;
        }
        *target -= 1;
        let children: Vec<&mut Value> = match v {
            Value::Array(items) => items.iter_mut().collect(),
            Value::Object(map) => map.values_mut().collect(),
            _ => Vec::new(),
        };
        for child in children {
            if new.is_none() {
                return;
            }
            walk(child, target, new);
        }
    }
    let mut target = pick % count(value);
    walk(value, &mut target, &mut Some(new));
}

/// Inputs for a parser: arbitrary bytes, byte-mutated fixtures, and (for JSON fixtures) fixtures with
/// nodes replaced by awkward values. Fixtures must be valid for the parser before mutation.
pub fn inputs(fixtures: &'static [&'static str]) -> BoxedStrategy<Vec<u8>> {
    let arbitrary = proptest::collection::vec(any::<u8>(), 0..512);
    let mutated = (select(fixtures), proptest::collection::vec(edit(), 1..6))
        .prop_map(|(fixture, edits)| apply(fixture.as_bytes().to_vec(), &edits));
    let json_fixtures: Vec<&'static str> = fixtures
        .iter()
        .copied()
        .filter(|f| serde_json::from_str::<Value>(f).is_ok())
        .collect();
    if json_fixtures.is_empty() {
        return prop_oneof![1 => arbitrary, 3 => mutated].boxed();
    }
    let reshaped = (
        select(json_fixtures),
        proptest::collection::vec((any::<usize>(), awkward()), 1..4),
    )
        .prop_map(|(fixture, replacements)| {
            let mut value: Value = serde_json::from_str(fixture).unwrap_or(Value::Null);
            for (pick, new) in replacements {
                replace_node(&mut value, pick, new);
            }
            serde_json::to_vec(&value).unwrap_or_default()
        });
    prop_oneof![1 => arbitrary, 2 => mutated, 3 => reshaped].boxed()
}

/// Runs `parse` on the inputs: it must not panic, and an error must carry a message. Prints the number
/// of inputs tried.
pub fn check(
    name: &str,
    inputs: BoxedStrategy<Vec<u8>>,
    parse: impl Fn(&[u8]) -> Result<(), String>,
) {
    let config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let result = runner.run(&inputs, |bytes| {
        if let Err(message) = parse(&bytes) {
            prop_assert!(
                !message.trim().is_empty(),
                "an empty error message for {:?}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{name}: {failure}");
    }
    println!("proptests: {name}: {cases} inputs tried, no panic, every error has a message");
}
