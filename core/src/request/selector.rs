//! Field selectors, read exactly as `k8s.io/apimachinery/pkg/fields` reads them
//! (`ParseSelector` then `RequiresExactMatch`), for the one question classification asks:
//! which object name does a list or watch pin with `metadata.name=X`?

use std::borrow::Cow;

/// The field selector does not parse; the API server then logs the error and sets no name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Invalid;

/// The value `selector` requires `field` to equal (`field=X` or `field==X`), or `None`.
///
/// Mirrors Go: terms are split on unescaped commas; every non-empty term must have an operator
/// (the first `!=`, `==` or `=` from the left) and a validly escaped value, or the whole
/// selector is invalid; among the equality terms on `field`, the one whose raw text sorts first
/// wins, because `parseSelector` sorts the terms and `andTerm.RequiresExactMatch` returns the
/// first match.
///
/// A selector with `(` or `)` is treated as invalid: newer or patched `fields` packages give
/// parentheses meaning (`f in (a,b)`), and leaving the name unset is the stricter reading.
pub(super) fn exact_match<'s>(
    selector: &'s str,
    field: &str,
) -> Result<Option<Cow<'s, str>>, Invalid> {
    if selector.contains(['(', ')']) {
        return Err(Invalid);
    }
    let mut best: Option<(&str, Cow<'s, str>)> = None;
    for term in split_terms(selector) {
        if term.is_empty() {
            continue;
        }
        let (lhs, op, rhs) = split_term(term).ok_or(Invalid)?;
        let value = unescape_value(rhs)?;
        let is_equality = op != "!=";
        let sorts_first = best.as_ref().is_none_or(|(raw, _)| term < *raw);
        if is_equality && lhs == field && sorts_first {
            best = Some((term, value));
        }
    }
    Ok(best.map(|(_, value)| value))
}

/// Go's `splitTerms`: split on commas not escaped by a backslash; escapes stay in the terms.
fn split_terms(selector: &str) -> impl Iterator<Item = &str> {
    let mut escaped = false;
    selector.split(move |c: char| match (escaped, c) {
        (true, _) => {
            escaped = false;
            false
        }
        (false, '\\') => {
            escaped = true;
            false
        }
        (false, c) => c == ',',
    })
}

/// Go's `splitTerm`: the first position (from the left) where `!=`, `==` or `=` starts, trying
/// the operators in that order at each position.
fn split_term(term: &str) -> Option<(&str, &'static str, &str)> {
    let bytes = term.as_bytes();
    (0..bytes.len()).find_map(|i| {
        let op = match bytes.get(i..)? {
            [b'!', b'=', ..] => "!=",
            [b'=', b'=', ..] => "==",
            [b'=', ..] => "=",
            _ => return None,
        };
        // `i` is at an ASCII byte, so both cuts are on character boundaries.
        Some((term.get(..i)?, op, term.get(i + op.len()..)?))
    })
}

/// Go's `UnescapeValue`: `\\`, `\,` and `\=` are the only escapes; an unescaped `,` or `=`, any
/// other escape, or a trailing `\` is an error.
fn unescape_value(raw: &str) -> Result<Cow<'_, str>, Invalid> {
    if !raw.contains(['\\', ',', '=']) {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('\\' | ',' | '=')) => out.push(escaped),
                _ => return Err(Invalid),
            },
            ',' | '=' => return Err(Invalid),
            other => out.push(other),
        }
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn name(selector: &str) -> Result<Option<String>, Invalid> {
        exact_match(selector, "metadata.name").map(|v| v.map(Cow::into_owned))
    }

    #[test]
    fn single_requirement() {
        assert_eq!(name("metadata.name=web"), Ok(Some("web".into())));
        assert_eq!(name("metadata.name==web"), Ok(Some("web".into())));
        assert_eq!(name("metadata.name!=web"), Ok(None));
        assert_eq!(name("metadata.name="), Ok(Some(String::new())));
        assert_eq!(name(""), Ok(None));
        assert_eq!(name(" metadata.name=web"), Ok(None));
    }

    #[test]
    fn several_requirements() {
        assert_eq!(
            name("metadata.namespace=default,metadata.name=web"),
            Ok(Some("web".into()))
        );
        assert_eq!(
            name("status.phase=Running,,metadata.name=web,"),
            Ok(Some("web".into()))
        );
        // Go sorts the raw terms and the first match wins.
        assert_eq!(
            name("metadata.name=b,metadata.name=a"),
            Ok(Some("a".into()))
        );
        assert_eq!(
            name("metadata.name=a,metadata.name==b"),
            Ok(Some("b".into()))
        );
    }

    #[test]
    fn escapes() {
        assert_eq!(name(r"metadata.name=a\,b"), Ok(Some("a,b".into())));
        assert_eq!(name(r"metadata.name=a\=b\\"), Ok(Some(r"a=b\".into())));
        assert_eq!(name(r"metadata.name=a\b"), Err(Invalid));
        assert_eq!(name(r"metadata.name=a\"), Err(Invalid));
        assert_eq!(name("metadata.name===a"), Err(Invalid));
        assert_eq!(name("metadata.name=a=b"), Err(Invalid));
    }

    #[test]
    fn any_invalid_term_invalidates_the_selector() {
        assert_eq!(name("metadata.name=web,garbage"), Err(Invalid));
        assert_eq!(name("garbage,metadata.name=web"), Err(Invalid));
        assert_eq!(name("metadata.name in (web)"), Err(Invalid));
    }

    #[test]
    fn operator_is_the_first_from_the_left() {
        assert_eq!(split_term("a!b=c"), Some(("a!b", "=", "c")));
        assert_eq!(split_term("a!=b"), Some(("a", "!=", "b")));
        assert_eq!(split_term("é=x"), Some(("é", "=", "x")));
        assert_eq!(split_term("nothing"), None);
    }
}
