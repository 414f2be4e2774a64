//! Reading a [`Transition`]'s arguments, for the adapters' `validate_transition`.
//!
//! Arguments arrive as a JSON object, often built from command-line `key=value` pairs, so every
//! value may be a string even when a number is meant: numbers are accepted as JSON numbers or as
//! digit strings. Texts are trimmed and never empty. An argument the kind does not know is refused
//! rather than ignored, so that a misspelt optional argument is not silently dropped. Every refusal
//! names the argument and says what is wrong with it.

use serde_json::{Map, Value};

use super::{Transition, TransitionRefusal};

/// The arguments of one transition of kind `kind`.
pub(crate) struct Args<'a> {
    kind: &'a str,
    args: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    pub(crate) fn new(transition: &'a Transition) -> Args<'a> {
        Args {
            kind: &transition.kind,
            args: &transition.args,
        }
    }

    /// Refuses any argument not in `known`.
    pub(crate) fn only(&self, known: &[&str]) -> Result<(), TransitionRefusal> {
        match self.args.keys().find(|k| !known.contains(&k.as_str())) {
            None => Ok(()),
            Some(unknown) if known.is_empty() => Err(refuse(format!(
                "`{}` takes no arguments, got `{unknown}`",
                self.kind
            ))),
            Some(unknown) => Err(refuse(format!(
                "`{}` has no argument `{unknown}` (it takes {})",
                self.kind,
                known.join(", ")
            ))),
        }
    }

    /// A required text (a string or a number written as text), trimmed and not empty.
    pub(crate) fn text(&self, name: &str) -> Result<String, TransitionRefusal> {
        self.optional_text(name)?
            .ok_or_else(|| refuse(format!("`{}` needs the argument `{name}`", self.kind)))
    }

    /// An optional text; present but empty is refused.
    pub(crate) fn optional_text(&self, name: &str) -> Result<Option<String>, TransitionRefusal> {
        let text = match self.args.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.trim().to_owned(),
            Some(Value::Number(n)) => n.as_str().to_owned(),
            Some(other) => {
                return Err(refuse(format!(
                    "`{name}` must be a text, not {}",
                    describe(other)
                )));
            }
        };
        if text.is_empty() {
            return Err(refuse(format!("`{name}` must not be empty")));
        }
        Ok(Some(text))
    }

    /// A required whole number in `min..=max`, given as a JSON integer or as digits.
    pub(crate) fn integer(&self, name: &str, min: i64, max: i64) -> Result<i64, TransitionRefusal> {
        let text = self.text(name)?;
        let value: i64 = text.parse().map_err(|_| {
            refuse(format!(
                "`{name}` must be a whole number from {min} to {max}, got `{text}`"
            ))
        })?;
        if !(min..=max).contains(&value) {
            return Err(refuse(format!(
                "`{name}` must be a whole number from {min} to {max}, got {value}"
            )));
        }
        Ok(value)
    }

    /// An optional list of texts: a JSON array of strings or numbers, or one text holding
    /// comma-separated values (as a command line gives it). An empty list is refused.
    pub(crate) fn optional_list(
        &self,
        name: &str,
    ) -> Result<Option<Vec<String>>, TransitionRefusal> {
        let values: Vec<String> = match self.args.get(name) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(s)) => s.split(',').map(|v| v.trim().to_owned()).collect(),
            Some(Value::Number(n)) => vec![n.as_str().to_owned()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.trim().to_owned()),
                    Value::Number(n) => Ok(n.as_str().to_owned()),
                    other => Err(refuse(format!(
                        "`{name}` must hold texts, not {}",
                        describe(other)
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(refuse(format!(
                    "`{name}` must be a list of texts, not {}",
                    describe(other)
                )));
            }
        };
        if values.iter().any(String::is_empty) || values.is_empty() {
            return Err(refuse(format!(
                "`{name}` must not be empty nor hold empty values"
            )));
        }
        Ok(Some(values))
    }
}

/// A refusal with `message`.
pub(crate) fn refuse(message: impl Into<String>) -> TransitionRefusal {
    TransitionRefusal(message.into())
}

/// The refusal of a kind the marketplace does not have.
pub(crate) fn unknown_kind(marketplace: &str, kind: &str, kinds: &[&str]) -> TransitionRefusal {
    refuse(format!(
        "{marketplace} has no transition `{kind}` (it has {})",
        kinds.join(", ")
    ))
}

fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn transition(args: Value) -> Transition {
        Transition {
            order_external_id: "1".into(),
            kind: "ship".into(),
            args: args.as_object().unwrap().clone(),
            idempotency_key: "k".into(),
        }
    }

    #[test]
    fn texts_are_trimmed_numbers_accepted_and_empties_refused() {
        let t = transition(json!({"a": "  x ", "n": 77, "e": "  ", "b": true}));
        let args = Args::new(&t);
        assert_eq!(args.text("a").unwrap(), "x");
        assert_eq!(args.text("n").unwrap(), "77");
        assert_eq!(
            args.text("missing").unwrap_err().0,
            "`ship` needs the argument `missing`"
        );
        assert_eq!(args.text("e").unwrap_err().0, "`e` must not be empty");
        assert_eq!(
            args.text("b").unwrap_err().0,
            "`b` must be a text, not a boolean"
        );
        assert_eq!(args.optional_text("missing").unwrap(), None);
    }

    #[test]
    fn integers_come_as_numbers_or_digits_within_range() {
        let t = transition(json!({"a": "3", "b": 9, "c": "iki", "d": 2.5}));
        let args = Args::new(&t);
        assert_eq!(args.integer("a", 0, 8).unwrap(), 3);
        assert_eq!(
            args.integer("b", 0, 8).unwrap_err().0,
            "`b` must be a whole number from 0 to 8, got 9"
        );
        assert!(args.integer("c", 0, 8).is_err());
        assert!(args.integer("d", 0, 8).is_err());
    }

    #[test]
    fn lists_come_as_arrays_or_comma_separated_text() {
        let t = transition(json!({"a": ["X", 2], "b": "X, Y", "c": [], "d": "X,,Y", "e": {}}));
        let args = Args::new(&t);
        assert_eq!(args.optional_list("a").unwrap().unwrap(), ["X", "2"]);
        assert_eq!(args.optional_list("b").unwrap().unwrap(), ["X", "Y"]);
        assert!(args.optional_list("c").is_err());
        assert!(args.optional_list("d").is_err());
        assert!(args.optional_list("e").is_err());
        assert_eq!(args.optional_list("z").unwrap(), None);
    }

    #[test]
    fn unknown_arguments_are_refused() {
        let t = transition(json!({"package_id": "1", "reasn": "x"}));
        assert_eq!(
            Args::new(&t).only(&["package_id", "reason"]).unwrap_err().0,
            "`ship` has no argument `reasn` (it takes package_id, reason)"
        );
        assert!(Args::new(&t).only(&["package_id", "reasn"]).is_ok());
    }
}
