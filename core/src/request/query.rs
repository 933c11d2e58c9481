//! The query part of a request target, parsed the way Go's `url.ParseQuery` parses it
//! (`docs/kubernetes-semantics.md`, "Query parameters"), minus everything Go would read
//! differently from a gateway: `;` (Go drops the pair), malformed escapes (Go drops the pair) and
//! repeated single-valued parameters (the API server reads only the first) are refused.

use std::borrow::Cow;

use super::NonCanonical;
use super::selector;

/// Most `&`-separated parameters accepted. Go's `url.ParseQuery` gives up on a query with more
/// than 10,000 and the API server then sees no parameters at all; kubectl sends a handful
/// (one per `command` argument for exec), so a far lower cap costs nothing.
const MAX_PARAMS: usize = 1000;

/// The query parameters that take a single value. Repeating one is refused: the API server
/// reads the first value, and a gateway or backend might read another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Param {
    Watch,
    FieldSelector,
    LabelSelector,
    ResourceVersion,
    ResourceVersionMatch,
    SendInitialEvents,
    DryRun,
    Limit,
    Continue,
    FieldManager,
    FieldValidation,
    Force,
    PropagationPolicy,
    GracePeriodSeconds,
    OrphanDependents,
    IncludeObject,
    Container,
    Follow,
    AllowWatchBookmarks,
    TimeoutSeconds,
    Pretty,
}

/// How many [`Param`] variants there are (`Pretty` must stay the last one).
const PARAM_COUNT: usize = Param::Pretty as usize + 1;

impl Param {
    /// The parameter for a decoded query key; keys are case-sensitive, as in Go.
    fn from_key(key: &[u8]) -> Option<Param> {
        Some(match key {
            b"watch" => Param::Watch,
            b"fieldSelector" => Param::FieldSelector,
            b"labelSelector" => Param::LabelSelector,
            b"resourceVersion" => Param::ResourceVersion,
            b"resourceVersionMatch" => Param::ResourceVersionMatch,
            b"sendInitialEvents" => Param::SendInitialEvents,
            b"dryRun" => Param::DryRun,
            b"limit" => Param::Limit,
            b"continue" => Param::Continue,
            b"fieldManager" => Param::FieldManager,
            b"fieldValidation" => Param::FieldValidation,
            b"force" => Param::Force,
            b"propagationPolicy" => Param::PropagationPolicy,
            b"gracePeriodSeconds" => Param::GracePeriodSeconds,
            b"orphanDependents" => Param::OrphanDependents,
            b"includeObject" => Param::IncludeObject,
            b"container" => Param::Container,
            b"follow" => Param::Follow,
            b"allowWatchBookmarks" => Param::AllowWatchBookmarks,
            b"timeoutSeconds" => Param::TimeoutSeconds,
            b"pretty" => Param::Pretty,
            _ => return None,
        })
    }

    /// The parameter's key.
    fn key(self) -> &'static str {
        match self {
            Param::Watch => "watch",
            Param::FieldSelector => "fieldSelector",
            Param::LabelSelector => "labelSelector",
            Param::ResourceVersion => "resourceVersion",
            Param::ResourceVersionMatch => "resourceVersionMatch",
            Param::SendInitialEvents => "sendInitialEvents",
            Param::DryRun => "dryRun",
            Param::Limit => "limit",
            Param::Continue => "continue",
            Param::FieldManager => "fieldManager",
            Param::FieldValidation => "fieldValidation",
            Param::Force => "force",
            Param::PropagationPolicy => "propagationPolicy",
            Param::GracePeriodSeconds => "gracePeriodSeconds",
            Param::OrphanDependents => "orphanDependents",
            Param::IncludeObject => "includeObject",
            Param::Container => "container",
            Param::Follow => "follow",
            Param::AllowWatchBookmarks => "allowWatchBookmarks",
            Param::TimeoutSeconds => "timeoutSeconds",
            Param::Pretty => "pretty",
        }
    }
}

/// The decoded values of the single-valued parameters of a query.
#[derive(Debug, Clone, Default)]
pub(super) struct Query<'a> {
    /// Indexed by `Param as usize`, which is always below `PARAM_COUNT`: indexing cannot panic.
    values: [Option<Cow<'a, str>>; PARAM_COUNT],
}

impl<'a> Query<'a> {
    /// Parse a raw query (the part after the first `?`, without it).
    ///
    /// The caller has checked that the target is visible ASCII without `#` or `\`.
    pub(super) fn parse(raw: &'a str) -> Result<Query<'a>, NonCanonical> {
        let mut query = Query::default();
        if raw.contains(';') {
            return Err(NonCanonical::SemicolonInQuery { query: raw.into() });
        }
        for (count, pair) in raw.split('&').enumerate() {
            if count == MAX_PARAMS {
                return Err(NonCanonical::TooManyQueryParameters {
                    count: raw.split('&').count(),
                    limit: MAX_PARAMS,
                });
            }
            query.add_pair(pair)?;
        }
        if let Some(dry_run) = query.get(Param::DryRun)
            && dry_run != "All"
        {
            return Err(NonCanonical::InvalidDryRun {
                value: dry_run.into(),
            });
        }
        Ok(query)
    }

    /// Add one `key=value` pair (Go splits at the first `=`; no `=` means an empty value).
    fn add_pair(&mut self, pair: &'a str) -> Result<(), NonCanonical> {
        if pair.is_empty() {
            // Go skips empty pairs (`a=1&&b=2`), and so do we.
            return Ok(());
        }
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let invalid = || NonCanonical::InvalidQueryEscape { pair: pair.into() };
        let key = percent_decode(raw_key).ok_or_else(invalid)?;
        let Some(param) = Param::from_key(&key) else {
            // A parameter nobody here reads: only its escapes matter (Go would drop the pair).
            return escapes_are_valid(raw_value)
                .then_some(())
                .ok_or_else(invalid);
        };
        let value = percent_decode(raw_value).ok_or_else(invalid)?;
        let value = into_utf8(value).ok_or_else(|| NonCanonical::NonUtf8Query {
            key: param.key().into(),
        })?;
        let slot = &mut self.values[param as usize];
        if slot.is_some() {
            return Err(NonCanonical::DuplicateQueryKey {
                key: param.key().into(),
            });
        }
        *slot = Some(value);
        Ok(())
    }

    /// The decoded value of `param`, if given.
    pub(super) fn get(&self, param: Param) -> Option<&str> {
        self.values[param as usize].as_deref()
    }

    /// The watch decision: Go's `Convert_Slice_string_To_bool` on the first value. Absent is
    /// false, `0` or case-insensitive `false` is false, anything else (even empty) is true.
    pub(super) fn watch(&self) -> bool {
        self.get(Param::Watch).is_some_and(flag_value)
    }

    /// `dryRun=All` was given (any other value was refused in [`Query::parse`]).
    pub(super) fn dry_run(&self) -> bool {
        self.get(Param::DryRun).is_some()
    }

    /// The object name a list or watch is restricted to by `fieldSelector=metadata.name=X`, as
    /// `RequestInfoFactory` derives it (semantics "Request classification"): only when every
    /// `ListOptions` parameter kubeleash recognises decodes, the selector requires an exact match
    /// on `metadata.name`, and the value is a valid path segment name.
    pub(super) fn field_selector_name(&self) -> Option<Cow<'_, str>> {
        let selector = self.get(Param::FieldSelector)?;
        if !self.list_options_decode() {
            return None;
        }
        let name = selector::exact_match(selector, "metadata.name").ok()??;
        is_valid_path_segment_name(&name).then_some(name)
    }

    /// Whether the scalar `ListOptions` parameters decode. The API server fails on a `limit` or
    /// `timeoutSeconds` that is not an int64. For `allowWatchBookmarks` and `sendInitialEvents`
    /// it is lenient (any value is a bool); we demand `strconv.ParseBool` syntax, which only
    /// ever leaves a name unset, the stricter reading.
    ///
    /// `labelSelector` is not parsed here. When it does not parse the API server sets no name,
    /// but its list handler then parses it again and answers 400, so a name kubeleash sets
    /// for such a request can never let more through.
    fn list_options_decode(&self) -> bool {
        let int = |p| self.get(p).is_none_or(|v| v.parse::<i64>().is_ok());
        let bool = |p| self.get(p).is_none_or(is_go_parse_bool);
        int(Param::Limit)
            && int(Param::TimeoutSeconds)
            && bool(Param::AllowWatchBookmarks)
            && bool(Param::SendInitialEvents)
    }
}

/// How the API server reads a boolean query parameter that is present: Go's
/// `runtime.Convert_Slice_string_To_bool` on the first value, which every query-decoded options
/// type uses (`watch`, `follow`, `previous`, `timestamps`, `stdin`, `tty`, `force`,
/// `orphanDependents`, ...). Only `0` and `false` in any letter case are false; anything else,
/// the empty value and `yes` included, is true. This is the one place that reading lives.
pub fn flag_value(value: &str) -> bool {
    value != "0" && !value.eq_ignore_ascii_case("false")
}

/// The syntax Go's `strconv.ParseBool` accepts.
fn is_go_parse_bool(value: &str) -> bool {
    matches!(
        value,
        "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False"
    )
}

/// Go's `IsValidPathSegmentName`: not `.` or `..`, and no `/` or `%`.
fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains(['/', '%'])
}

/// Go's `url.QueryUnescape`: `%XX` (either case) is a byte, `+` is a space. `None` for a `%`
/// not followed by two hex digits. Borrows when there is nothing to decode.
pub(super) fn percent_decode(raw: &str) -> Option<Cow<'_, [u8]>> {
    if !raw.contains(['%', '+']) {
        return Some(Cow::Borrowed(raw.as_bytes()));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'%' => {
                let hi = hex_value(bytes.next()?)?;
                let lo = hex_value(bytes.next()?)?;
                hi << 4 | lo
            }
            b'+' => b' ',
            other => other,
        });
    }
    Some(Cow::Owned(out))
}

/// Whether every `%` in `raw` starts a valid escape, without decoding it.
fn escapes_are_valid(raw: &str) -> bool {
    let mut bytes = raw.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let mut hex = || bytes.next().is_some_and(|h| h.is_ascii_hexdigit());
            if !(hex() && hex()) {
                return false;
            }
        }
    }
    true
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn into_utf8(bytes: Cow<'_, [u8]>) -> Option<Cow<'_, str>> {
    match bytes {
        Cow::Borrowed(b) => std::str::from_utf8(b).ok().map(Cow::Borrowed),
        Cow::Owned(v) => String::from_utf8(v).ok().map(Cow::Owned),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn parse(raw: &str) -> Result<Query<'_>, &'static str> {
        Query::parse(raw).map_err(|e| e.code())
    }

    #[test]
    fn decodes_keys_and_values_like_go() {
        let q = parse("w%61tch=1&labelSelector=app%3Dweb+x&fieldManager=kubectl-edit").unwrap();
        assert_eq!(q.get(Param::Watch), Some("1"));
        assert_eq!(q.get(Param::LabelSelector), Some("app=web x"));
        assert_eq!(q.get(Param::FieldManager), Some("kubectl-edit"));
        assert_eq!(q.get(Param::Limit), None);
    }

    #[test]
    fn watch_truthiness() {
        for (raw, want) in [
            ("", false),
            ("watch", true),
            ("watch=", true),
            ("watch=yes", true),
            ("watch=no", true),
            ("watch=1", true),
            ("watch=0", false),
            ("watch=false", false),
            ("watch=FaLsE", false),
            ("Watch=true", false),
        ] {
            assert_eq!(parse(raw).unwrap().watch(), want, "{raw}");
        }
    }

    #[test]
    fn skips_empty_pairs_and_splits_at_first_equals() {
        let q = parse("&&container=a=b&").unwrap();
        assert_eq!(q.get(Param::Container), Some("a=b"));
    }

    #[test]
    fn command_may_repeat() {
        assert!(parse("command=ls&command=-l&command=/").is_ok());
    }

    #[test]
    fn refusals() {
        assert_eq!(parse("watch=1;x=1").err(), Some("semicolon-in-query"));
        assert_eq!(parse("watch=1&watch=0").err(), Some("duplicate-query-key"));
        assert_eq!(
            parse("w%61tch=1&watch=0").err(),
            Some("duplicate-query-key")
        );
        assert_eq!(parse("pretty&pretty").err(), Some("duplicate-query-key"));
        assert_eq!(parse("watch=%zz").err(), Some("invalid-query-escape"));
        assert_eq!(parse("x=%4").err(), Some("invalid-query-escape"));
        assert_eq!(parse("%=1").err(), Some("invalid-query-escape"));
        assert_eq!(parse("container=%ff").err(), Some("non-utf8-query"));
        assert_eq!(parse("dryRun=all").err(), Some("invalid-dry-run"));
        assert_eq!(parse("dryRun=").err(), Some("invalid-dry-run"));
        assert_eq!(
            parse("dryRun=All&dryRun=All").err(),
            Some("duplicate-query-key")
        );
        let many = "command=x&".repeat(MAX_PARAMS);
        assert_eq!(parse(&many).err(), Some("too-many-query-parameters"));
    }

    #[test]
    fn unknown_parameters_may_hold_any_bytes() {
        assert!(parse("x=%ff&y=%00").is_ok());
    }

    #[test]
    fn dry_run_all() {
        assert!(parse("dryRun=All").unwrap().dry_run());
        assert!(!parse("").unwrap().dry_run());
    }

    #[test]
    fn field_selector_name_needs_every_list_option_to_decode() {
        let name = |raw| {
            parse(raw)
                .unwrap()
                .field_selector_name()
                .map(Cow::into_owned)
        };
        assert_eq!(
            name("fieldSelector=metadata.name%3Dweb"),
            Some("web".into())
        );
        assert_eq!(
            name("fieldSelector=metadata.name%3D%3Dweb&limit=500"),
            Some("web".into())
        );
        assert_eq!(name("fieldSelector=metadata.name%3Dweb&limit=abc"), None);
        assert_eq!(name("fieldSelector=metadata.name%3Dweb&limit="), None);
        assert_eq!(
            name("fieldSelector=metadata.name%3Dweb&timeoutSeconds=1.5"),
            None
        );
        assert_eq!(
            name("fieldSelector=metadata.name%3Dweb&allowWatchBookmarks=yes"),
            None
        );
        assert_eq!(
            name("fieldSelector=metadata.name%3Dweb&sendInitialEvents=True"),
            Some("web".into())
        );
        assert_eq!(name("fieldSelector=metadata.name%3D.."), None);
        assert_eq!(name("fieldSelector=metadata.name%3Da%25b"), None);
        assert_eq!(name("fieldSelector=metadata.name%3Da/b"), None);
        assert_eq!(name("fieldSelector=metadata.name!%3Dweb"), None);
        assert_eq!(name("labelSelector=metadata.name%3Dweb"), None);
    }

    #[test]
    fn escape_validation_agrees_with_decoding() {
        for raw in [
            "", "a", "%", "%4", "%41", "%4g", "a%41b%", "%%41", "+%2f", "%ZZ",
        ] {
            assert_eq!(
                escapes_are_valid(raw),
                percent_decode(raw).is_some(),
                "{raw}"
            );
        }
    }

    #[test]
    fn percent_decode_borrows_when_it_can() {
        assert!(matches!(percent_decode("abc"), Some(Cow::Borrowed(_))));
        assert_eq!(
            percent_decode("a%2Fb%2fc+d").as_deref(),
            Some(&b"a/b/c d"[..])
        );
        assert_eq!(percent_decode("%"), None);
        assert_eq!(percent_decode("%g0"), None);
    }
}
