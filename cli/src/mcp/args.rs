//! A tool call's arguments, read strictly: a name that could change the path it lands in (a
//! `/`, `..`, a percent sign, a control character) or an argument the tool does not take is an
//! error before any request is built, so every request a tool sends is one the policy is asked
//! about exactly as it reaches the API server.

use serde_json::{Map, Value};

use super::tool_error::ToolError;

/// The most bytes any one argument may hold (a manifest or a patch: the API server takes
/// bodies up to 3 MiB).
pub const MAX_ARGUMENT: usize = 3 * 1024 * 1024;
/// The most bytes a name, selector or other short argument may hold.
const MAX_SHORT: usize = 4096;

pub struct Args<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Args<'a> {
    /// The arguments, refused if one is not among `known`.
    pub fn new(map: &'a Map<String, Value>, known: &[&str]) -> Result<Args<'a>, ToolError> {
        if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(ToolError::invalid(format!(
                "this tool takes no argument `{}`; it takes {}",
                quoted(k, 64),
                known.join(", ")
            )));
        }
        Ok(Args { map })
    }

    /// A string argument, if given.
    pub fn text(&self, key: &str) -> Result<Option<&'a str>, ToolError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX_ARGUMENT => Ok(Some(s.as_str())),
            Some(Value::String(s)) => Err(ToolError::invalid(format!(
                "`{key}` is {} bytes, more than the {MAX_ARGUMENT} a request body may hold",
                s.len()
            ))),
            Some(_) => Err(ToolError::invalid(format!("`{key}` must be a string"))),
        }
    }

    /// A short string argument (a selector, a verb), if given: printable, at most 4 KiB.
    pub fn short(&self, key: &str) -> Result<Option<&'a str>, ToolError> {
        let Some(s) = self.text(key)? else {
            return Ok(None);
        };
        if s.len() > MAX_SHORT || s.chars().any(char::is_control) {
            return Err(ToolError::invalid(format!(
                "`{key}` must be printable text of at most {MAX_SHORT} bytes, not `{}`",
                quoted(s, 64)
            )));
        }
        Ok(Some(s))
    }

    /// A required string argument.
    pub fn required(&self, key: &str) -> Result<&'a str, ToolError> {
        self.short(key)?
            .ok_or_else(|| ToolError::invalid(format!("`{key}` is required")))
    }

    /// An object name: one path segment, as the API server's path validation allows, and no
    /// character a URL would read as more than the name.
    pub fn name(&self, key: &str) -> Result<Option<&'a str>, ToolError> {
        let Some(s) = self.short(key)? else {
            return Ok(None);
        };
        check_name(key, s)?;
        Ok(Some(s))
    }

    /// A namespace: a DNS label (lowercase letters, digits, `-`; at most 63).
    pub fn namespace(&self, key: &str) -> Result<Option<&'a str>, ToolError> {
        let Some(s) = self.short(key)? else {
            return Ok(None);
        };
        check_namespace(s)?;
        Ok(Some(s))
    }

    /// A resource word (`pods`, `deployments.apps`) or an apiVersion (`apps/v1`).
    pub fn word(&self, key: &str) -> Result<Option<&'a str>, ToolError> {
        let Some(s) = self.short(key)? else {
            return Ok(None);
        };
        let ok = !s.is_empty()
            && s.len() <= 253
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._/".contains(&b))
            && !s.contains("..")
            && !s.starts_with(['/', '.'])
            && s.bytes().filter(|b| *b == b'/').count() <= 1;
        if !ok {
            return Err(ToolError::invalid(format!(
                "`{key}` must be a resource type or API version as kubectl writes them (pods, deployments.apps, apps/v1), not `{}`",
                quoted(s, 64)
            )));
        }
        Ok(Some(s))
    }

    pub fn flag(&self, key: &str) -> Result<bool, ToolError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ToolError::invalid(format!("`{key}` must be true or false"))),
        }
    }

    /// A whole number in `range`, if given.
    pub fn number(
        &self,
        key: &str,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Option<u64>, ToolError> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if range.contains(&n) => Ok(Some(n)),
                _ => Err(ToolError::invalid(format!(
                    "`{key}` must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ))),
            },
        }
    }

    /// Any JSON value, if given.
    pub fn value(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }
}

/// An object name a request path can carry as one segment, exactly.
pub fn check_name(key: &str, s: &str) -> Result<(), ToolError> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:@+=~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ToolError::invalid(format!(
            "`{key}` must be one object name (letters, digits and - . _ : @, at most 253; no `/`, `%` or `..`), not `{}`",
            quoted(s, 64)
        )))
    }
}

/// A namespace name: a DNS label.
pub fn check_namespace(s: &str) -> Result<(), ToolError> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ToolError::invalid(format!(
            "`namespace` must be a namespace name (lowercase letters, digits and -, at most 63), not `{}`",
            quoted(s, 64)
        )))
    }
}

/// `s` for an error message: at most `max` characters, control characters escaped.
pub fn quoted(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use proptest::prelude::*;

    use super::{check_name, check_namespace};
    use kubeleash_core::request::classify;

    /// Strings heavy in what could change a path: separators, dots, escapes, controls,
    /// look-alikes.
    fn tricky() -> impl Strategy<Value = String> {
        let pieces = prop::sample::select(vec![
            "a", "web", "-", ".", "..", "/", "%", "%2f", "%2e", "?", "#", ":", "@", "\\", " ",
            "\n", "\r", "\0", "\u{2215}", "\u{ff0f}", "=", "+", "~", "*", "&", ";",
        ]);
        prop::collection::vec(pieces, 0..12).prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// A name and namespace the checks accept land in the request as exactly that name
        /// and namespace, as the API server reads the path; the checks refuse every other.
        #[test]
        fn an_accepted_name_is_exactly_the_name_the_server_reads(
            name in prop_oneof![tricky(), "\\PC{0,20}"],
            ns in prop_oneof![tricky(), "[a-z0-9-]{1,10}"],
        ) {
            let (Ok(()), Ok(())) = (check_name("name", &name), check_namespace(&ns)) else {
                return Ok(());
            };
            for path in [
                format!("/api/v1/namespaces/{ns}/configmaps/{name}"),
                format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale"),
                format!("/api/v1/namespaces/{ns}/pods/{name}/log?tailLines=500"),
            ] {
                let r = classify("GET", &path, &http::HeaderMap::new()).unwrap();
                prop_assert_eq!(&r.attributes.name, &name, "{}", path);
                prop_assert_eq!(&r.attributes.namespace, &ns, "{}", path);
            }
        }
    }

    #[test]
    fn names_that_would_move_the_path_are_refused() {
        for bad in [
            "..", ".", "a/b", "%2e%2e", "a?b", "a#b", "a b", "a\nb", "", "a\\b",
        ] {
            assert!(check_name("name", bad).is_err(), "{bad:?}");
        }
        for good in ["web-1", "system:controller:x", "a.b_c", "user@example.com"] {
            assert!(check_name("name", good).is_ok(), "{good:?}");
        }
    }
}
