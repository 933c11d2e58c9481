//! The `kubectl` line printed for a request is safe to paste into a POSIX shell: split as a
//! shell splits it, it gives back exactly the intended words, and nothing in it is expanded
//! (no `$(`, backtick, `$VAR`, glob, redirection or second command), whatever bytes the agent put
//! in the namespace, name, query values or a non-resource path.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderMap, HeaderValue};
use kubeleash_core::display::printable;
use kubeleash_core::kubectl;
use kubeleash_core::request::classify;
use proptest::prelude::*;

/// Split `line` into words as a POSIX shell does, for the quoting forms a safe line may use
/// (bare words of ordinary characters, single quotes, backslash escapes outside quotes). Any
/// character the shell would treat specially outside quotes (expansions, globs, operators,
/// comments, double quotes) is an error: a safe line has none.
fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(format!("unterminated quote in {line:?}")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("trailing backslash in {line:?}")),
            },
            c if c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c) => {
                word.get_or_insert_with(String::new).push(c)
            }
            other => return Err(format!("unquoted {other:?} in {line:?}")),
        }
    }
    words.extend(word);
    Ok(words)
}

fn is_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Characters a path segment may carry through classification (visible ASCII other than the
/// ones refused there).
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[!$&'()*+,:=@a-zA-Z0-9._~`|<>{}\\[\\]^\"-]{1,16}",
        Just("x$(touch${IFS}PWNED)".to_string()),
        Just("`id`".to_string()),
        Just("a'b".to_string()),
        Just("*".to_string()),
        Just("~root".to_string()),
    ]
    .prop_filter("not a dot segment", |s| s != "." && s != "..")
}

/// Anything at all, for query values (they are percent-encoded in the target).
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,20}",
        Just("$(touch PWNED)".to_string()),
        Just("'; touch PWNED; '".to_string()),
        Just("\u{1b}]0;owned\u{7}".to_string()),
        Just("a\nb".to_string()),
    ]
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

/// Every request form `kubectl::command` knows, with `ns`, `name` and query value `v` in every
/// position they can take.
fn requests(ns: &str, name: &str, v: &str) -> Vec<(&'static str, String, HeaderMap)> {
    let q = percent_encode(v);
    let json = headers(&[("content-type", "application/json")]);
    let patch = |t: &str| headers(&[("content-type", t)]);
    vec![
        (
            "GET",
            format!("/api/v1/namespaces/{ns}/secrets/{name}"),
            HeaderMap::new(),
        ),
        (
            "GET",
            format!("/api/v1/namespaces/{ns}/pods?labelSelector={q}"),
            HeaderMap::new(),
        ),
        (
            "GET",
            format!("/apis/apps/v1/namespaces/{ns}/deployments?fieldSelector=metadata.name%3D{q}"),
            HeaderMap::new(),
        ),
        (
            "GET",
            format!("/api/v1/namespaces/{ns}/pods/{name}?watch=1"),
            HeaderMap::new(),
        ),
        (
            "GET",
            format!(
                "/api/v1/namespaces/{ns}/pods/{name}/log?container={q}&follow=true&tailLines={q}"
            ),
            HeaderMap::new(),
        ),
        (
            "POST",
            format!(
                "/api/v1/namespaces/{ns}/pods/{name}/exec?command={q}&command=-c&command={q}&container={q}&stdin=true"
            ),
            HeaderMap::new(),
        ),
        (
            "GET",
            format!("/api/v1/namespaces/{ns}/pods/{name}/attach?container={q}"),
            headers(&[("upgrade", "SPDY/3.1")]),
        ),
        (
            "POST",
            format!("/api/v1/namespaces/{ns}/pods/{name}/portforward"),
            HeaderMap::new(),
        ),
        (
            "POST",
            format!("/api/v1/namespaces/{ns}/serviceaccounts/{name}/token"),
            json.clone(),
        ),
        (
            "POST",
            format!("/api/v1/namespaces/{ns}/configmaps?dryRun=All"),
            json.clone(),
        ),
        (
            "PUT",
            format!("/api/v1/namespaces/{ns}/configmaps/{name}"),
            json.clone(),
        ),
        (
            "PUT",
            format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale"),
            json,
        ),
        (
            "PATCH",
            format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}?fieldManager={q}&force=true"),
            patch("application/apply-patch+yaml"),
        ),
        (
            "PATCH",
            format!("/api/v1/namespaces/{ns}/pods/{name}"),
            patch("application/json-patch+json"),
        ),
        (
            "PATCH",
            format!("/api/v1/namespaces/{ns}/pods/{name}"),
            patch("application/merge-patch+json"),
        ),
        (
            "PATCH",
            format!("/api/v1/namespaces/{ns}/pods/{name}"),
            patch("application/strategic-merge-patch+json"),
        ),
        (
            "DELETE",
            format!("/api/v1/namespaces/{ns}/pods/{name}"),
            HeaderMap::new(),
        ),
        (
            "DELETE",
            format!("/api/v1/namespaces/{ns}/pods?labelSelector={q}"),
            HeaderMap::new(),
        ),
        (
            "DELETE",
            format!("/api/v1/namespaces/{name}"),
            HeaderMap::new(),
        ),
        ("GET", format!("/{ns}/{name}"), HeaderMap::new()),
        ("POST", format!("/{ns}/{name}?x={q}"), HeaderMap::new()),
        (
            "POST",
            format!("/api/v1/namespaces/{ns}/pods/{name}/eviction"),
            HeaderMap::new(),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn kubectl_lines_split_back_into_the_intended_words(ns in segment(), name in segment(), v in value()) {
        for (method, target, h) in requests(&ns, &name, &v) {
            let Ok(req) = classify(method, &target, &h) else {
                continue;
            };
            let line = kubectl::command(&req);
            let words = kubectl::words(&req);
            prop_assert!(!line.chars().any(is_control), "control character in {line:?}");
            let split = split(&line);
            prop_assert!(split.is_ok(), "{method} {target}: {split:?}");
            let split = split.unwrap();
            // Exactly the intended words; control characters are shown escaped, not run.
            let shown: Vec<String> = words.iter().map(|w| printable(w).into_owned()).collect();
            prop_assert_eq!(&split, &shown, "{} {}", method, target);
            // What the agent chose appears whole, as one word, where it was put.
            if target.starts_with("/api/v1/namespaces/") && target.contains("/secrets/") && !name.chars().any(is_control) && !ns.chars().any(is_control) {
                prop_assert!(words.contains(&name) && words.contains(&ns), "{:?}", words);
            }
        }
    }
}

/// The splitter above agrees with a real POSIX shell on a sample of lines.
#[test]
fn a_real_shell_reads_the_same_words() {
    let Ok(sh) = std::process::Command::new("sh")
        .arg("-c")
        .arg("true")
        .status()
    else {
        return;
    };
    assert!(sh.success());
    let samples = [
        ("x$(touch${IFS}PWNED)", "`id`", "$(touch PWNED)"),
        ("a'b", "*", "'; touch PWNED; '"),
        ("~root", "a|b", "x y\tz"),
    ];
    let dir = std::env::temp_dir().join(format!("kubeleash-shell-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (ns, name, v) in samples {
        for (method, target, h) in requests(ns, name, v) {
            let Ok(req) = classify(method, &target, &h) else {
                continue;
            };
            let line = kubectl::command(&req);
            let words = kubectl::words(&req);
            // Replace the program with printf, so the shell prints the words it would pass.
            let script = format!(
                "printf '%s\\n' {}",
                line.split_once(' ').map_or("", |(_, rest)| rest)
            );
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(&script)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "{script}");
            let printed = String::from_utf8(out.stdout).unwrap();
            // Control characters are shown escaped, not run.
            let mut want: String = words
                .iter()
                .skip(1)
                .map(|w| format!("{}\n", printable(w)))
                .collect();
            if words.len() == 1 {
                want = "\n".into();
            }
            assert_eq!(printed, want, "{line}");
            let shown: Vec<String> = words.iter().map(|w| printable(w).into_owned()).collect();
            assert_eq!(split(&line).unwrap(), shown);
        }
    }
    assert!(
        std::fs::read_dir(&dir).unwrap().next().is_none(),
        "a command ran"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- every effectful query parameter is in the line --------------------------------------

/// How the API server reads a boolean query parameter (`Convert_Slice_string_To_bool`), written
/// here independently: only `0` and `false` in any case are false.
fn server_flag(v: &str) -> bool {
    !matches!(v.to_ascii_lowercase().as_str(), "0" | "false")
}

/// Spellings of booleans an agent may use: Go's `strconv.ParseBool` set and more.
fn bool_value() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False", "yes", "",
        "FaLsE",
    ])
    .prop_map(str::to_string)
}

/// A key as sent: plain, or with its first letter percent-encoded (`%66ollow`), which the
/// API server decodes the same.
fn sent_key(key: &str, encode: bool) -> String {
    if encode {
        format!("%{:02X}{}", key.as_bytes()[0], &key[1..])
    } else {
        key.to_string()
    }
}

/// One parameter: its key, its value, and the word the line must hold (`None`: none, since the
/// value changes nothing), or `Err(())` when no kubectl flag can send it.
type Param = (&'static str, String, Result<Option<String>, ()>);

fn log_param() -> impl Strategy<Value = Param> {
    let flag = |key: &'static str, word: &'static str| {
        bool_value().prop_map(move |v| {
            let want = server_flag(&v).then(|| word.to_string());
            (key, v, Ok(want))
        })
    };
    prop_oneof![
        "[a-z]{1,8}".prop_map(|c| ("container", c.clone(), Ok(Some(c)))),
        flag("follow", "-f"),
        flag("previous", "-p"),
        flag("timestamps", "--timestamps"),
        flag(
            "insecureSkipTLSVerifyBackend",
            "--insecure-skip-tls-verify-backend"
        ),
        (1i64..100000).prop_map(|n| (
            "sinceSeconds",
            n.to_string(),
            Ok(Some(format!("--since={n}s")))
        )),
        (0i64..100000).prop_map(|n| ("tailLines", n.to_string(), Ok(Some(format!("--tail={n}"))))),
        (1i64..100000).prop_map(|n| (
            "limitBytes",
            n.to_string(),
            Ok(Some(format!("--limit-bytes={n}")))
        )),
        Just((
            "sinceTime",
            "2026-01-01T00:00:00Z".to_string(),
            Ok(Some("--since-time=2026-01-01T00:00:00Z".to_string()))
        )),
        Just(("tailLines", "ten".to_string(), Err(()))),
        Just(("stream", "Stderr".to_string(), Err(()))),
        Just(("pretty", "true".to_string(), Ok(None))),
    ]
}

fn delete_param() -> impl Strategy<Value = Param> {
    prop_oneof![
        Just((
            "dryRun",
            "All".to_string(),
            Ok(Some("--dry-run=server".to_string()))
        )),
        prop::sample::select(vec!["Orphan", "Background", "Foreground"]).prop_map(|p| (
            "propagationPolicy",
            p.to_string(),
            Ok(Some(format!("--cascade={}", p.to_ascii_lowercase())))
        )),
        (1i64..1000).prop_map(|n| (
            "gracePeriodSeconds",
            n.to_string(),
            Ok(Some(format!("--grace-period={n}")))
        )),
        Just((
            "gracePeriodSeconds",
            "0".to_string(),
            Ok(Some("--force".to_string()))
        )),
        bool_value().prop_map(|v| {
            let cascade = if server_flag(&v) {
                "orphan"
            } else {
                "background"
            };
            (
                "orphanDependents",
                v,
                Ok(Some(format!("--cascade={cascade}"))),
            )
        }),
        Just(("x-unknown", "1".to_string(), Err(()))),
    ]
}

fn patch_param() -> impl Strategy<Value = Param> {
    prop_oneof![
        Just((
            "dryRun",
            "All".to_string(),
            Ok(Some("--dry-run=server".to_string()))
        )),
        "[a-z]{1,8}".prop_map(|m| (
            "fieldManager",
            m.clone(),
            Ok(Some(format!("--field-manager={m}")))
        )),
        Just(("fieldManager", "kubectl-patch".to_string(), Ok(None))),
        Just((
            "fieldValidation",
            "Ignore".to_string(),
            Ok(Some("--validate=ignore".to_string()))
        )),
        Just((
            "fieldValidation",
            "Warn".to_string(),
            Ok(Some("--validate=warn".to_string()))
        )),
        Just(("fieldValidation", "Strict".to_string(), Ok(None))),
        // `force` is for server-side apply only; no `kubectl patch` sends it.
        bool_value().prop_map(|v| ("force", v, Err(()))),
    ]
}

fn apply_param() -> impl Strategy<Value = Param> {
    prop_oneof![
        Just((
            "dryRun",
            "All".to_string(),
            Ok(Some("--dry-run=server".to_string()))
        )),
        "[a-z]{1,8}".prop_map(|m| (
            "fieldManager",
            m.clone(),
            Ok(Some(format!("--field-manager={m}")))
        )),
        Just((
            "fieldValidation",
            "Ignore".to_string(),
            Ok(Some("--validate=ignore".to_string()))
        )),
        bool_value().prop_map(|v| {
            let want = server_flag(&v).then(|| "--force-conflicts".to_string());
            ("force", v, Ok(want))
        }),
    ]
}

/// Check `params` on `method` `path`: the line is the raw request, or holds every word the
/// parameters need and no flag a false one would add. A line with only renderable parameters
/// must be a kubectl line.
fn check_params(
    method: &str,
    path: &str,
    params: &[Param],
    headers: &HeaderMap,
    keys: &[String],
) -> Result<(), TestCaseError> {
    let mut seen = std::collections::HashSet::new();
    let mut kept = Vec::new();
    let mut query = Vec::new();
    for (p, key) in params.iter().zip(keys) {
        // Single-valued parameters may not repeat (classification refuses it): keep the first.
        if seen.insert(p.0) {
            query.push(format!("{key}={}", percent_encode(&p.1)));
            kept.push(p.clone());
        }
    }
    let target = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", query.join("&"))
    };
    let req = match classify(method, &target, headers) {
        Ok(r) => r,
        Err(_) => return Ok(()),
    };
    let words = kubectl::words(&req);
    if words == [method.to_string(), target.clone()] {
        // Raw: allowed only when some parameter has no flag.
        prop_assert!(
            kept.iter().any(|p| p.2.is_err()),
            "raw line for renderable {target}"
        );
        return Ok(());
    }
    prop_assert!(
        kept.iter().all(|p| p.2.is_ok()),
        "{target} rendered as {words:?}"
    );
    for (key, value, want) in &kept {
        if let Ok(Some(word)) = want {
            prop_assert!(
                words.contains(word),
                "{key}={value:?} missing from {words:?} for {target}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Invariant: the kubectl line of a pod log request shows every parameter that changes
    /// what it returns, read as the API server reads it (any boolean spelling, encoded keys),
    /// or it is the raw method and target.
    #[test]
    fn log_parameters_are_in_the_line(params in prop::collection::vec(log_param(), 0..6), encode in prop::collection::vec(any::<bool>(), 6)) {
        let keys: Vec<String> = params.iter().zip(&encode).map(|(p, e)| sent_key(p.0, *e)).collect();
        check_params("GET", "/api/v1/namespaces/dev/pods/web-1/log", &params, &HeaderMap::new(), &keys)?;
    }

    /// The same for a delete's options.
    #[test]
    fn delete_parameters_are_in_the_line(params in prop::collection::vec(delete_param(), 0..4), collection in any::<bool>()) {
        let keys: Vec<String> = params.iter().map(|p| p.0.to_string()).collect();
        // Both `propagationPolicy` and `orphanDependents` is refused by the API server (422).
        let both = params.iter().any(|p| p.0 == "propagationPolicy") && params.iter().any(|p| p.0 == "orphanDependents");
        let params: Vec<Param> = params.into_iter().map(|mut p| { if both && (p.0 == "propagationPolicy" || p.0 == "orphanDependents") { p.2 = Err(()); } p }).collect();
        let path = if collection { "/api/v1/namespaces/dev/configmaps" } else { "/api/v1/namespaces/dev/configmaps/x" };
        check_params("DELETE", path, &params, &HeaderMap::new(), &keys)?;
    }

    /// The same for a patch's write options.
    #[test]
    fn patch_parameters_are_in_the_line(params in prop::collection::vec(patch_param(), 0..4)) {
        let keys: Vec<String> = params.iter().map(|p| p.0.to_string()).collect();
        let headers = headers(&[("Content-Type", "application/merge-patch+json")]);
        check_params("PATCH", "/apis/apps/v1/namespaces/dev/deployments/web", &params, &headers, &keys)?;
    }

    /// The same for a server-side apply, where `force` is `--force-conflicts`.
    #[test]
    fn apply_parameters_are_in_the_line(params in prop::collection::vec(apply_param(), 0..4), encode in prop::collection::vec(any::<bool>(), 4)) {
        let keys: Vec<String> = params.iter().zip(&encode).map(|(p, e)| sent_key(p.0, *e)).collect();
        let headers = headers(&[("Content-Type", "application/apply-patch+yaml")]);
        check_params("PATCH", "/apis/apps/v1/namespaces/dev/deployments/web", &params, &headers, &keys)?;
    }
}
