//! Every parameter of a classified request's query, decoded as Go's `url.ParseQuery` decodes
//! it, for the readers that need more than the single-valued parameters classification checks
//! (the `kubectl` line). Reading the query here, rather than splitting the target again, keeps
//! one owner of how a key and a value decode (`f%6Fllow` is `follow`) and of how a boolean
//! reads ([`flag_value`](super::flag_value)).

use std::borrow::Cow;

use super::query::{flag_value, percent_decode};

/// The decoded query of a request: every `key=value` pair in order, repeats kept.
///
/// Built from a target [`classify`](super::classify) accepted, so every escape is valid; a
/// value that is not UTF-8 (possible only for parameters classification does not read) is
/// decoded lossily.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    pairs: Vec<(String, String)>,
}

impl QueryParams {
    /// Decode the query of a request target (the part after the first `?`).
    pub fn of_target(target: &str) -> QueryParams {
        QueryParams::parse(target.split_once('?').map_or("", |(_, q)| q))
    }

    /// Decode a raw query (without the `?`). Empty pairs are skipped and a pair without `=`
    /// has an empty value, as in Go.
    pub fn parse(raw: &str) -> QueryParams {
        let decode = |s: &str| match percent_decode(s) {
            Some(Cow::Borrowed(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Cow::Owned(b)) => String::from_utf8_lossy(&b).into_owned(),
            None => s.to_string(),
        };
        let pairs = raw
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        QueryParams { pairs }
    }

    /// The first value of `key`, which is the one the API server reads.
    pub fn first(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'s>(&'s self, key: &'s str) -> impl Iterator<Item = &'s str> + 's {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the boolean parameter `key` is true as the API server reads it: present, and
    /// its first value is neither `0` nor `false` in any letter case.
    pub fn flag(&self, key: &str) -> bool {
        self.first(key).is_some_and(flag_value)
    }

    /// Every distinct key, in order of first appearance.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        let mut seen = std::collections::HashSet::new();
        self.pairs
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(move |k| seen.insert(*k))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn decodes_keys_values_and_keeps_repeats() {
        let q = QueryParams::of_target("/x?f%6Fllow=True&command=a&command=b+c&&stdin");
        assert_eq!(q.first("follow"), Some("True"));
        assert!(q.flag("follow"));
        assert!(q.flag("stdin"));
        assert!(!q.flag("tty"));
        assert_eq!(q.all("command").collect::<Vec<_>>(), ["a", "b c"]);
        assert_eq!(q.keys().collect::<Vec<_>>(), ["follow", "command", "stdin"]);
        assert_eq!(QueryParams::of_target("/x"), QueryParams::default());
    }

    #[test]
    fn flags_read_as_the_api_server_reads_them() {
        for (v, want) in [
            ("1", true),
            ("t", true),
            ("T", true),
            ("TRUE", true),
            ("true", true),
            ("True", true),
            ("yes", true),
            ("", true),
            ("0", false),
            ("f", true),
            ("false", false),
            ("FALSE", false),
            ("fAlSe", false),
        ] {
            assert_eq!(QueryParams::parse(&format!("k={v}")).flag("k"), want, "{v}");
        }
    }
}
