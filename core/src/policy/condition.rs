//! `when` conditions: JSONPath queries over the decoded request body.
//!
//! How a path that selects several values quantifies depends on the rule's effect, so that a
//! second container can slip past neither kind of rule:
//!
//! - in a `deny` or `approve` rule a condition holds when **any** selected value satisfies it;
//! - in an `allow` rule it holds only when **every** selected value satisfies it and at least
//!   one value was selected.
//!
//! `exists: false` holds exactly when nothing is selected, and `exists: true` when something is,
//! whatever the effect. A rule's conditions all have to hold (they are and-ed).
//!
//! Values compare as the API server's decoder reads them: numbers by value, so `0`, `-0` and
//! `0.0` are one number (Go decodes `-0` into an integer field as `0`, and a whole float into an
//! integer-typed custom resource field).

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::{Number, Value};

use super::glob::GlobList;

/// How a condition tests one selected value.
#[derive(Debug, Clone)]
pub(crate) enum Test {
    Equals(Value),
    NotEquals(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Matches(GlobList, String),
    Exists(bool),
    /// A number within `[min, max]`, both included.
    Between(f64, f64),
}

/// A compiled condition.
#[derive(Debug, Clone)]
pub(crate) struct Condition {
    pub path: String,
    query: JpQuery,
    test: Test,
}

/// Whether a rule's condition is to be read as "any value" or "every value".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Quantifier {
    Any,
    All,
}

impl Condition {
    pub(crate) fn new(path: &str, test: Test) -> Result<Condition, String> {
        let query = parse_json_path(path).map_err(|e| e.to_string())?;
        Ok(Condition {
            path: path.to_string(),
            query,
            test,
        })
    }

    pub(crate) fn holds(&self, body: &Value, q: Quantifier) -> bool {
        // A query that fails to run (a type error inside a filter, say) selects nothing.
        let found = js_path_process(&self.query, body).unwrap_or_default();
        if let Test::Exists(want) = &self.test {
            return found.is_empty() != *want;
        }
        match q {
            Quantifier::Any => found.iter().any(|r| self.test_one(r.val)),
            Quantifier::All => !found.is_empty() && found.iter().all(|r| self.test_one(r.val)),
        }
    }

    /// Whether the condition can come to hold because a field was removed: it tests for a
    /// value's absence or inequality (`exists: false`, `notEquals`, `notIn`, `equals: null`), or
    /// its path has a negated filter. Judging such a condition on a patch that can remove fields
    /// without seeing them (server-side apply) would miss what the removal does.
    pub(crate) fn absence_sensitive(&self) -> bool {
        let null_test = match &self.test {
            Test::Equals(v) => v.is_null(),
            Test::In(vs) => vs.iter().any(Value::is_null),
            _ => false,
        };
        null_test
            || matches!(
                self.test,
                Test::NotEquals(_) | Test::NotIn(_) | Test::Exists(false)
            )
            || self.path.contains('!')
    }

    /// Whether the condition holds only for a body whose top-level `type` is a Secret type that
    /// mints a credential: the form a rule uses to allow token-typed Secrets by name.
    pub(crate) fn pins_secret_type(&self, token_type: impl Fn(&str) -> bool) -> bool {
        let top_level_type = matches!(
            self.path.replace(' ', "").as_str(),
            "$.type" | "$['type']" | "$[\"type\"]"
        );
        let token = |v: &Value| v.as_str().is_some_and(&token_type);
        top_level_type
            && match &self.test {
                Test::Equals(v) => token(v),
                Test::In(vs) => !vs.is_empty() && vs.iter().all(token),
                _ => false,
            }
    }

    fn test_one(&self, v: &Value) -> bool {
        match &self.test {
            Test::Equals(want) => json_eq(v, want),
            Test::NotEquals(want) => !json_eq(v, want),
            Test::In(set) => set.iter().any(|w| json_eq(v, w)),
            Test::NotIn(set) => !set.iter().any(|w| json_eq(v, w)),
            Test::Matches(globs, _) => v.as_str().is_some_and(|s| globs.is_match(s)),
            Test::Exists(_) => true,
            Test::Between(min, max) => v.as_f64().is_some_and(|n| *min <= n && n <= *max),
        }
    }

    /// The condition as a person reads it, for decision reasons.
    pub(crate) fn describe(&self) -> String {
        let show = |v: &Value| v.to_string();
        let list = |vs: &[Value]| vs.iter().map(show).collect::<Vec<_>>().join(", ");
        match &self.test {
            Test::Equals(v) => format!("{} equals {}", self.path, show(v)),
            Test::NotEquals(v) => format!("{} does not equal {}", self.path, show(v)),
            Test::In(vs) => format!("{} is one of [{}]", self.path, list(vs)),
            Test::NotIn(vs) => format!("{} is none of [{}]", self.path, list(vs)),
            Test::Matches(_, g) => format!("{} matches `{}`", self.path, g),
            Test::Exists(true) => format!("{} is set", self.path),
            Test::Exists(false) => format!("{} is not set", self.path),
            Test::Between(min, max) => format!("{} is between {min} and {max}", self.path),
        }
    }
}

/// JSON equality with numbers compared by value; everything else compares structurally.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// `serde_json` keeps `-0` and `1.0` as floats and `0` and `1` as integers, and its own
/// equality tells them apart; the API server does not.
fn number_eq(x: &Number, y: &Number) -> bool {
    match (whole(x), whole(y)) {
        (Some(a), Some(b)) => a == b,
        _ => x.as_f64().zip(y.as_f64()).is_some_and(|(a, b)| a == b),
    }
}

/// The number as an integer when it is a whole number, exactly.
fn whole(n: &Number) -> Option<i128> {
    if let Some(i) = n.as_i64() {
        return Some(i.into());
    }
    if let Some(u) = n.as_u64() {
        return Some(u.into());
    }
    let f = n.as_f64()?;
    // Whole and below 2^64 in magnitude, so the cast is exact; larger floats are left to the
    // float comparison.
    (f.fract() == 0.0 && f.abs() < 18_446_744_073_709_551_616.0).then_some(f as i128)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(privileged: &[bool]) -> Value {
        let containers: Vec<Value> = privileged
            .iter()
            .map(|p| json!({"name": "c", "securityContext": {"privileged": p}}))
            .collect();
        json!({"spec": {"containers": containers}})
    }

    #[test]
    fn any_catches_a_second_container() -> Result<(), String> {
        let c = Condition::new(
            "$.spec.containers[*].securityContext.privileged",
            Test::Equals(json!(true)),
        )?;
        assert!(c.holds(&pod(&[false, true]), Quantifier::Any));
        assert!(!c.holds(&pod(&[false, false]), Quantifier::Any));
        Ok(())
    }

    #[test]
    fn all_needs_every_container_and_at_least_one() -> Result<(), String> {
        let c = Condition::new(
            "$.spec.containers[*].securityContext.privileged",
            Test::Equals(json!(false)),
        )?;
        assert!(c.holds(&pod(&[false, false]), Quantifier::All));
        assert!(!c.holds(&pod(&[false, true]), Quantifier::All));
        assert!(!c.holds(&json!({"spec": {}}), Quantifier::All));
        Ok(())
    }

    #[test]
    fn numbers_compare_by_value() -> Result<(), String> {
        let root = Condition::new("$..runAsUser", Test::Equals(json!(0)))?;
        for body in [
            json!({"runAsUser": 0}),
            json!({"runAsUser": -0.0}),
            json!({"runAsUser": 0.0}),
        ] {
            assert!(root.holds(&body, Quantifier::Any), "{body}");
        }
        assert!(!root.holds(&json!({"runAsUser": 0.5}), Quantifier::Any));
        let some = Condition::new("$.n", Test::In(vec![json!(1000), json!(2.5)]))?;
        assert!(some.holds(&json!({"n": 1000.0}), Quantifier::All));
        assert!(some.holds(&json!({"n": 2.5}), Quantifier::All));
        assert!(!some.holds(&json!({"n": 1001}), Quantifier::All));
        let big = Condition::new("$.n", Test::Equals(json!(u64::MAX)))?;
        assert!(big.holds(&json!({"n": u64::MAX}), Quantifier::All));
        assert!(!big.holds(&json!({"n": i64::MAX}), Quantifier::All));
        let nested = Condition::new("$.a", Test::NotEquals(json!({"b": [0]})))?;
        assert!(!nested.holds(&json!({"a": {"b": [-0.0]}}), Quantifier::All));
        Ok(())
    }

    #[test]
    fn exists_and_filters() -> Result<(), String> {
        let env =
            json!({"env": [{"name": "DB_TOKEN", "value": "x"}, {"name": "MODE", "value": "y"}]});
        let c = Condition::new(
            "$.env[?search(@.name, '(?i)token')].value",
            Test::Exists(true),
        )?;
        assert!(c.holds(&env, Quantifier::Any));
        let none = Condition::new("$.missing", Test::Exists(false))?;
        assert!(none.holds(&env, Quantifier::All));
        Ok(())
    }
}
