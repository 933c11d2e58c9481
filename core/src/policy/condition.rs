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

use jsonpath_rust::parser::model::JpQuery;
use jsonpath_rust::parser::parse_json_path;
use jsonpath_rust::query::js_path_process;
use serde_json::Value;

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

    fn test_one(&self, v: &Value) -> bool {
        match &self.test {
            Test::Equals(want) => v == want,
            Test::NotEquals(want) => v != want,
            Test::In(set) => set.contains(v),
            Test::NotIn(set) => !set.contains(v),
            Test::Matches(globs, _) => v.as_str().is_some_and(|s| globs.is_match(s)),
            Test::Exists(_) => true,
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
        }
    }
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
