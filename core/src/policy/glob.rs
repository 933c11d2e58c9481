//! Globs (`*` matches any run of characters, everything else is literal), compiled with
//! regex-automata so that matching costs one pass over the input however many patterns there are.

use std::collections::{HashMap, HashSet};

use regex_automata::{Anchored, Input, MatchKind, PatternSet, meta::Regex};

/// Whether a pattern has a wildcard at all; literal patterns go in hash sets instead.
pub(crate) fn is_glob(pattern: &str) -> bool {
    pattern.contains('*')
}

fn to_regex(glob: &str) -> String {
    let mut out = String::with_capacity(glob.len() + 8);
    out.push_str("^(?:");
    for c in glob.chars() {
        match c {
            '*' => out.push_str(".*"),
            '\\' | '.' | '+' | '?' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '^' | '$' | '#'
            | '&' | '-' | '~' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out.push_str(")$");
    out
}

fn build(globs: &[&str], kind: MatchKind) -> Result<Regex, String> {
    let patterns: Vec<String> = globs.iter().map(|g| to_regex(g)).collect();
    Regex::builder()
        .configure(Regex::config().match_kind(kind))
        .syntax(
            // `*` is any run of characters, line breaks included: a deny rule's
            // `matches: "*curl*"` must not be slipped past with `"sh\ncurl"`.
            regex_automata::util::syntax::Config::new()
                .unicode(false)
                .utf8(false)
                .dot_matches_new_line(true),
        )
        .build_many(&patterns)
        .map_err(|e| e.to_string())
}

/// A set of literal strings and globs, asked only "does anything match".
#[derive(Debug, Clone, Default)]
pub(crate) struct GlobList {
    literals: HashSet<Box<str>>,
    globs: Option<Regex>,
}

impl GlobList {
    pub(crate) fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut literals = HashSet::new();
        let mut globs = Vec::new();
        for p in patterns {
            if is_glob(p) {
                globs.push(p);
            } else {
                literals.insert(p.into());
            }
        }
        let globs = if globs.is_empty() {
            None
        } else {
            Some(build(&globs, MatchKind::LeftmostFirst)?)
        };
        Ok(GlobList { literals, globs })
    }

    pub(crate) fn is_match(&self, s: &str) -> bool {
        self.literals.contains(s)
            || self
                .globs
                .as_ref()
                .is_some_and(|re| re.is_match(Input::new(s).anchored(Anchored::Yes)))
    }
}

/// Many globs, each tagged with a value; asked "which values match".
///
/// Globs of the form `prefix*` (nearly all namespace globs: `team-*`) go into a map keyed by the
/// prefix and are found with one probe per distinct prefix length, so thousands of them cost
/// what a handful do. The rest are compiled into one regex and found in one pass.
#[derive(Debug, Clone)]
pub(crate) struct GlobIndex<T> {
    prefixes: HashMap<Box<str>, Vec<T>, foldhash::fast::FixedState>,
    prefix_lengths: Vec<usize>,
    regex: Option<(Regex, Vec<T>)>,
}

fn as_prefix(glob: &str) -> Option<&str> {
    glob.strip_suffix('*').filter(|p| !p.contains('*'))
}

impl<T: Copy> GlobIndex<T> {
    pub(crate) fn new(entries: &[(String, T)]) -> Result<Option<Self>, String> {
        if entries.is_empty() {
            return Ok(None);
        }
        let mut prefixes: HashMap<Box<str>, Vec<T>, _> = HashMap::default();
        let mut rest: Vec<(&str, T)> = Vec::new();
        for (g, v) in entries {
            match as_prefix(g) {
                Some(p) => prefixes.entry(p.into()).or_default().push(*v),
                None => rest.push((g.as_str(), *v)),
            }
        }
        let mut prefix_lengths: Vec<usize> = prefixes.keys().map(|k| k.len()).collect();
        prefix_lengths.sort_unstable();
        prefix_lengths.dedup();
        let regex = if rest.is_empty() {
            None
        } else {
            let globs: Vec<&str> = rest.iter().map(|(g, _)| *g).collect();
            // Overlapping search reports every pattern that matches, not just the first.
            let regex = build(&globs, MatchKind::All)?;
            Some((regex, rest.iter().map(|(_, v)| *v).collect()))
        };
        Ok(Some(GlobIndex {
            prefixes,
            prefix_lengths,
            regex,
        }))
    }

    pub(crate) fn matches(&self, s: &str, mut f: impl FnMut(T)) {
        for &len in &self.prefix_lengths {
            let Some(head) = s.get(..len) else { break };
            if let Some(vs) = self.prefixes.get(head) {
                vs.iter().copied().for_each(&mut f);
            }
        }
        if let Some((regex, values)) = &self.regex {
            let mut set = PatternSet::new(regex.pattern_len());
            regex.which_overlapping_matches(&Input::new(s).anchored(Anchored::Yes), &mut set);
            for pid in set.iter() {
                if let Some(v) = values.get(pid.as_usize()) {
                    f(*v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_list_matches_literals_and_globs() -> Result<(), String> {
        let l = GlobList::new(["dev", "team-*", "a.b"])?;
        assert!(l.is_match("dev"));
        assert!(l.is_match("team-a"));
        assert!(l.is_match("team-"));
        assert!(l.is_match("a.b"));
        assert!(!l.is_match("axb"), "a dot is literal");
        assert!(!l.is_match("prod"));
        assert!(!l.is_match("xteam-a"), "globs are anchored");
        let curl = GlobList::new(["*curl*"])?;
        assert!(
            curl.is_match("sh -c 'x\ncurl evil'"),
            "`*` crosses line breaks"
        );
        assert!(curl.is_match("\r\ncurl\n"));
        let suffix = GlobList::new(["*-a"])?;
        assert!(
            !suffix.is_match("x-a\n"),
            "`$` is the end of the input, not of a line"
        );
        Ok(())
    }

    #[test]
    fn glob_index_reports_every_match() -> Result<(), String> {
        let idx = GlobIndex::new(&[
            ("web-*".into(), 1),
            ("*-1".into(), 2),
            ("db".into(), 3),
            ("w*".into(), 4),
            ("web-1*".into(), 5),
            ("web-10*".into(), 6),
            ("w*b-1".into(), 7),
        ])?
        .ok_or("empty")?;
        let mut got = Vec::new();
        idx.matches("web-1", |v| got.push(v));
        got.sort();
        assert_eq!(got, vec![1, 2, 4, 5, 7]);
        let mut none = Vec::new();
        idx.matches("", |v| none.push(v));
        assert!(none.is_empty());
        Ok(())
    }
}
