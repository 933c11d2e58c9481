//! Request-target parsing with Go's rules, which the API server inherits: the path is
//! percent-decoded before it is split, query pairs holding `;` are dropped, `+` is a space, and a
//! repeated parameter counts by its first value.

/// Percent-decode `s`; `plus_is_space` for query components. `None` on a malformed escape
/// (Go's server answers those with 400).
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Decoded query parameters in request order.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut pairs = Vec::new();
        for part in raw.unwrap_or("").split('&') {
            if part.is_empty() || part.contains(';') {
                continue;
            }
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            if let (Some(k), Some(v)) = (percent_decode(k, true), percent_decode(v, true)) {
                pairs.push((k, v));
            }
        }
        Query { pairs }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean as `Convert_Slice_string_To_bool` reads it: absent is false, `0` and any-case
    /// `false` are false, anything else (even empty) is true.
    pub fn flag(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => !(v == "0" || v.eq_ignore_ascii_case("false")),
        }
    }

    /// A non-empty value of `key`.
    pub fn non_empty(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| !v.is_empty())
    }

    /// An integer parameter; `Err` carries the API server's message for a bad one.
    pub fn int(&self, key: &str) -> Result<Option<i64>, String> {
        match self.non_empty(key) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| format!("strconv.ParseInt: parsing {v:?}: invalid syntax")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_query_rules() {
        let q = Query::parse(Some(
            "watch=0&watch=1&x=1;y=2&w%61tch2=&label+Selector=a%3Db",
        ));
        assert!(!q.flag("watch"));
        assert_eq!(q.get("x"), None);
        assert!(q.flag("watch2"));
        assert_eq!(q.get("label Selector"), Some("a=b"));
        assert_eq!(
            percent_decode("%73ecrets", false).as_deref(),
            Some("secrets")
        );
        assert_eq!(percent_decode("%zz", false), None);
    }
}
