//! `kubeleash replay --grants`: every widened grant in a record as a policy fragment a person
//! reviews, and with `--policy P` as a unified diff that appends those rules to P.
//!
//! Each rule is the one the layer recorded with the grant (`decision.grant.rule`), preceded by
//! comments: who approved it, when, the approval id, the uses and seconds the grant had, how
//! often it was used, and what the grant pinned that the rule cannot say (the rule is wider
//! than the grant was). The result is compiled with the policy compiler before it is printed;
//! a rule whose name P already uses is renamed with a suffix (`grant-1a2b3c4d-2`).
//!
//! ```text
//! $ kubeleash replay --grants session.jsonl --policy policy.yaml
//! --- policy.yaml
//! +++ policy.yaml (with grants)
//! @@ -12,3 +12,20 @@
//! ```

use kubeleash_core::record::RecordKind;
use std::path::Path;
use std::process::ExitCode;

use kubeleash_core::display::printable;
use kubeleash_core::policy::{Effect, Identity, Policy, PolicyErrors};
use kubeleash_core::record::Record;
use serde_json::Value;

use super::{approvals, diff, yaml};
use crate::report::{USAGE, lower, print_errors};

/// A grant as the record holds it, with how often it was used.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub approval_id: String,
    pub approver: String,
    pub identity: String,
    pub time: String,
    /// The policy rule that would allow what the grant allowed (and more: see `pinned`).
    pub rule: serde_json::Map<String, Value>,
    pub uses: Option<u64>,
    pub seconds: Option<u64>,
    /// What the grant pinned that the rule cannot say.
    pub pinned: Vec<String>,
    /// Requests the grant covered in the record.
    pub used: u64,
    /// The approved request, as recorded (its body masked): what the rule is checked against.
    pub request: Approved,
}

/// The request an approval let through, as its record has it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Approved {
    pub groups: Vec<String>,
    pub method: String,
    pub target: String,
    pub content_type: Option<String>,
    pub body: Option<String>,
}

impl Found {
    fn name(&self) -> &str {
        self.rule
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }
}

/// The grants in `records`, in record order. A grant without a rule object naming itself
/// cannot be written as policy: it is left out with a warning.
pub fn found(records: &[&Record]) -> (Vec<Found>, Vec<String>) {
    let used = approvals::figures(records).grants;
    let mut out = Vec::new();
    let mut warnings = Vec::new();
    for r in records
        .iter()
        .filter(|r| r.body.kind == RecordKind::Approval)
    {
        let d = &r.body.decision;
        let Some(g) = &d.grant else { continue };
        let id = d.approval_id.clone().unwrap_or_default();
        let rule = match g.get("rule") {
            Some(Value::Object(m)) if m.get("name").is_some_and(Value::is_string) => m.clone(),
            _ => {
                warnings.push(format!(
                    "approval {}: its grant carries no named rule, so it cannot be written as policy; left out",
                    printable(&id)
                ));
                continue;
            }
        };
        out.push(Found {
            used: used
                .iter()
                .find(|u| u.approval_id == id)
                .map_or(0, |u| u.used),
            approval_id: id,
            approver: d.approver.clone().unwrap_or_default(),
            identity: r.body.identity.user.clone(),
            time: r.body.time.clone(),
            rule,
            uses: g.get("uses").and_then(Value::as_u64),
            seconds: g.get("seconds").and_then(Value::as_u64),
            pinned: g
                .get("pinned")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            request: Approved {
                groups: r.body.identity.groups.clone(),
                method: r.body.request.method.clone(),
                target: r.body.request.target.clone(),
                content_type: r.body.request.content_type.clone(),
                body: r.body.request.body.clone(),
            },
        });
    }
    (out, warnings)
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Why the rule, appended to `policy` as `name`, would not let the approved request through:
/// a stricter rule of the policy matches it too (deny beats approve beats allow). The rule that
/// held the request for approval usually does, so the review says which rule to narrow.
fn shadowed(policy: &Policy, g: &Found, name: &str) -> Option<String> {
    let mut headers = http::HeaderMap::new();
    // A protobuf body is recorded as the JSON it decodes to.
    let content_type = g.request.content_type.as_deref().map(|c| {
        if c.contains("protobuf") {
            "application/json"
        } else {
            c
        }
    });
    if let Some(ct) = content_type.and_then(|c| http::HeaderValue::from_str(c).ok()) {
        headers.insert(http::header::CONTENT_TYPE, ct);
    }
    let who = Identity::new(
        g.identity.as_str(),
        g.request.groups.iter().map(String::as_str),
    );
    let d = policy
        .evaluate(
            &who,
            &g.request.method,
            &g.request.target,
            &headers,
            g.request.body.as_deref().map(str::as_bytes),
        )
        .decision;
    let rule = d.rule.as_deref().filter(|r| *r != name)?;
    (d.effect != Effect::Allow).then(|| {
        format!(
            "note: rule `{rule}` ({effect}) matches the approved request too, and {effect} beats allow: as appended, this rule lets nothing through until `{rule}` is narrowed",
            effect = d.effect.as_str()
        )
    })
}

/// One grant as a list item at column `indent`, its comments first (and `note`, when there is
/// one); and the offset of the item's first line (`- name: ...`) within the lines.
fn rule_lines(g: &Found, name: &str, note: Option<&str>, indent: usize) -> (Vec<String>, usize) {
    let who = if g.identity.is_empty() {
        "anonymous"
    } else {
        &g.identity
    };
    let mut lines = vec![
        yaml::comment(
            &format!(
                "approved by {} at {}, approval {}, for {who}",
                g.approver, g.time, g.approval_id
            ),
            indent,
        ),
        yaml::comment(
            &format!(
                "the grant had {} within {}; used {} in this record",
                g.uses.map_or("any number of uses".to_string(), |u| plural(
                    u,
                    "more use",
                    "more uses"
                )),
                g.seconds
                    .map_or("its window".to_string(), |s| format!("{s}s")),
                plural(g.used, "time", "times")
            ),
            indent,
        ),
    ];
    if !g.pinned.is_empty() {
        lines.push(yaml::comment(
            "this rule is wider than the grant was: the grant also pinned",
            indent,
        ));
        for p in &g.pinned {
            lines.push(yaml::comment(&format!("  - {p}"), indent));
        }
    }
    if name != g.name() {
        lines.push(yaml::comment(
            &format!("renamed from `{}`: another rule has that name", g.name()),
            indent,
        ));
    }
    if let Some(n) = note {
        lines.push(yaml::comment(n, indent));
    }
    let offset = lines.len();
    let mut rule = g.rule.clone();
    rule.insert("name".into(), Value::String(name.to_string()));
    lines.extend(yaml::item(&Value::Object(rule), indent));
    (lines, offset)
}

/// Where in a policy's text the grants go: after its last rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spot {
    /// Byte offset of the insertion.
    at: usize,
    /// The column of the rules' dashes.
    indent: usize,
    /// The text before `at` does not end with a line break (the last rule ends the file).
    needs_break: bool,
    /// The policy's line ending.
    eol: &'static str,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// Whether `line` at column `indent` holds `key:` with nothing but a comment after it; `Err`
/// with what follows when it holds the key with a value on the same line.
fn block_key(line: &str, indent: usize, key: &str) -> Option<Result<(), String>> {
    let rest = line.get(indent..)?.strip_prefix(key)?.strip_prefix(':')?;
    let rest = rest.trim();
    if rest.is_empty() || rest.starts_with('#') {
        Some(Ok(()))
    } else {
        Some(Err(rest.to_string()))
    }
}

fn is_item(line: &str, indent: usize) -> bool {
    line.get(indent..)
        .is_some_and(|r| r.trim_end() == "-" || r.starts_with("- "))
}

/// Find the end of `spec.rules` in a policy written in block style. Errors say what could not
/// be found and how to write it.
pub fn locate(text: &str) -> Result<Spot, String> {
    let lines: Vec<(usize, &str)> = text
        .split_inclusive('\n')
        .scan(0, |offset, l| {
            let start = *offset;
            *offset += l.len();
            Some((start, l))
        })
        .collect();
    let content = |i: usize| lines[i].1.trim_end_matches(['\n', '\r']);
    let significant = |i: usize| !is_blank(content(i)) && !is_comment(content(i));
    let spec = (0..lines.len())
        .find(|&i| block_key(content(i), 0, "spec").is_some())
        .ok_or(
            "it has no top-level `spec:` key written in block style (`spec:` on a line of its own)",
        )?;
    if let Some(Err(rest)) = block_key(content(spec), 0, "spec") {
        return Err(format!(
            "its `spec` is written in flow style (`spec: {}`); write it as a block mapping",
            printable(&rest)
        ));
    }
    let first_child = (spec + 1..lines.len())
        .find(|&i| significant(i))
        .filter(|&i| indent_of(content(i)) > 0)
        .ok_or("its `spec` is empty")?;
    let child = indent_of(content(first_child));
    let mut rules = None;
    for i in first_child..lines.len() {
        if !significant(i) {
            continue;
        }
        let ind = indent_of(content(i));
        if ind < child {
            break;
        }
        if ind == child
            && let Some(found) = block_key(content(i), child, "rules")
        {
            if let Err(rest) = found {
                return Err(format!(
                    "its `spec.rules` is written in flow style (`rules: {}`); write it as a block list, one `- name: ...` item a line, to append to it",
                    printable(&rest)
                ));
            }
            rules = Some(i);
            break;
        }
    }
    let rules = rules.ok_or("it has no `spec.rules:` key written in block style")?;
    let first_item = (rules + 1..lines.len())
        .find(|&i| significant(i))
        .filter(|&i| indent_of(content(i)) >= child && is_item(content(i), indent_of(content(i))));
    let (dash, mut last) = match first_item {
        Some(i) => (indent_of(content(i)), i),
        None => (child + 2, rules),
    };
    for i in last + 1..lines.len() {
        let l = content(i);
        if is_blank(l) {
            continue;
        }
        let ind = indent_of(l);
        // Deeper lines belong to the last rule, comments or not (a `#` may start a line of
        // a block scalar); a comment at the dashes' column or left of it may be about what
        // follows, and stays after the grants.
        if ind > dash || (ind == dash && is_item(l, dash)) {
            last = i;
        } else if !is_comment(l) {
            break;
        }
    }
    let (start, line) = lines[last];
    Ok(Spot {
        at: start + line.len(),
        indent: dash,
        needs_break: !line.ends_with('\n'),
        // The policy's own line ending, from its first line.
        eol: if text
            .split_inclusive('\n')
            .next()
            .is_some_and(|l| l.ends_with("\r\n"))
        {
            "\r\n"
        } else {
            "\n"
        },
    })
}

/// `text` with the grants (named `names`) inserted at `spot`; and the 1-based line of each
/// grant's `- name:` line in the result.
fn compose(
    text: &str,
    spot: &Spot,
    grants: &[Found],
    names: &[String],
    notes: &[Option<String>],
) -> (String, Vec<usize>) {
    let before = &text[..spot.at];
    let mut out = String::with_capacity(text.len() + grants.len() * 512);
    out.push_str(before);
    let mut line = before.matches('\n').count() + 1;
    if spot.needs_break {
        out.push_str(spot.eol);
        line += 1;
    }
    let mut name_lines = Vec::with_capacity(grants.len());
    for (i, (g, name)) in grants.iter().zip(names).enumerate() {
        let note = notes.get(i).and_then(Option::as_deref);
        let (lines, offset) = rule_lines(g, name, note, spot.indent);
        name_lines.push(line + offset);
        line += lines.len();
        for l in lines {
            out.push_str(&l);
            out.push_str(spot.eol);
        }
    }
    out.push_str(&text[spot.at..]);
    (out, name_lines)
}

/// Insert the grants, renaming each whose name is already taken (the compiler says which: a
/// duplicate is reported at its second use, and the grants come last), until the result
/// compiles or fails for another reason. The text, the names used, and their lines.
fn settle(
    text: &str,
    spot: &Spot,
    grants: &[Found],
) -> (
    String,
    Vec<String>,
    Vec<usize>,
    Result<Policy, PolicyErrors>,
) {
    let mut names: Vec<String> = grants.iter().map(|g| g.name().to_string()).collect();
    let mut suffix = vec![1u32; grants.len()];
    loop {
        let (out, lines) = compose(text, spot, grants, &names, &[]);
        let compiled = Policy::from_yaml(&out);
        let taken: Vec<usize> = match &compiled {
            Ok(_) => Vec::new(),
            Err(errs) => errs
                .errors()
                .iter()
                .filter(|e| e.code() == "duplicate-rule")
                .filter_map(|e| e.location())
                .filter_map(|l| lines.iter().position(|&n| n as u64 == l.line))
                .collect(),
        };
        // Each round renames at least one grant; a policy has finitely many names.
        if taken.is_empty() || suffix.iter().any(|&s| s > 10_000) {
            return (out, names, lines, compiled);
        }
        for i in taken {
            suffix[i] += 1;
            names[i] = format!("{}-{}", grants[i].name(), suffix[i]);
        }
    }
}

/// The approval whose rule holds 1-based `line` of a composed text, if any.
fn owner<'a>(grants: &'a [Found], lines: &[usize], line: u64) -> Option<&'a Found> {
    let i = lines.iter().rposition(|&n| n as u64 <= line)?;
    grants.get(i)
}

/// Print compile errors of a composed text, each naming the approval its rule came from.
fn report_errors(label: &str, errs: &PolicyErrors, grants: &[Found], lines: &[usize]) {
    for e in errs.errors() {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line, l.column))
            .unwrap_or_default();
        let from = e
            .location()
            .and_then(|l| owner(grants, lines, l.line))
            .map(|g| format!(" (the grant of approval {})", printable(&g.approval_id)))
            .unwrap_or_default();
        eprintln!(
            "{label}{at}: error[{}]: {}{from}",
            e.code(),
            printable(e.message())
        );
        if let Some(help) = e.help_text() {
            eprintln!("  help: {}", printable(help));
        }
    }
}

/// A policy that holds nothing but the grants, to compile them on their own.
const SKELETON: &str =
    "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nmetadata: {name: grants}\nspec:\n  rules:\n";

/// `kubeleash replay --grants FILE`: the fragment, compiled before it is printed.
pub fn fragment(file: &Path, grants: &[Found]) -> ExitCode {
    let spot = Spot {
        at: SKELETON.len(),
        indent: 2,
        needs_break: false,
        eol: "\n",
    };
    let (_, names, lines, compiled) = settle(SKELETON, &spot, grants);
    // With no grants the skeleton's `rules:` is empty, which is no policy: nothing to check.
    if let (Err(errs), false) = (compiled, grants.is_empty()) {
        report_errors("the grants as policy", &errs, grants, &lines);
        eprintln!("error: the recorded grants do not compile as policy rules (see above)");
        return ExitCode::from(1);
    }
    let mut out = format!(
        "{}\n{}\n",
        yaml::comment(
            &format!(
                "{} recorded in {}",
                plural(grants.len() as u64, "widened grant", "widened grants"),
                file.display()
            ),
            0
        ),
        yaml::comment(
            "review each rule before adding it to a policy's spec.rules: a grant was temporary, a rule is not",
            0
        )
    );
    if grants.is_empty() {
        out.push_str("rules: []\n");
    } else {
        out.push_str("rules:\n");
        for (g, name) in grants.iter().zip(&names) {
            for l in rule_lines(g, name, None, 2).0 {
                out.push_str(&l);
                out.push('\n');
            }
        }
    }
    print!("{out}");
    ExitCode::SUCCESS
}

/// `kubeleash replay --grants FILE --policy P`: the diff that appends the grants to P, once
/// the result compiles.
pub fn onto_policy(path: &Path, grants: &[Found]) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "error: cannot read policy `{}`: {}",
                path.display(),
                lower(&e.to_string())
            );
            return ExitCode::from(USAGE);
        }
    };
    if let Err(errs) = Policy::from_yaml(&text) {
        print_errors(path, &errs);
        return ExitCode::from(USAGE);
    }
    if grants.is_empty() {
        eprintln!(
            "no widened grants in the record: `{}` stays as it is",
            path.display()
        );
        return ExitCode::SUCCESS;
    }
    let spot = match locate(&text) {
        Ok(s) => s,
        Err(why) => {
            eprintln!(
                "error: cannot append the grants to `{}`: {why}",
                path.display()
            );
            return ExitCode::from(USAGE);
        }
    };
    let (out, names, lines, compiled) = settle(&text, &spot, grants);
    let label = format!("{} (with grants)", path.display());
    let policy = match compiled {
        Ok(p) => p,
        Err(errs) => {
            report_errors(&label, &errs, grants, &lines);
            eprintln!(
                "error: `{}` with the recorded grants appended does not compile (see above)",
                path.display()
            );
            return ExitCode::from(1);
        }
    };
    let notes: Vec<Option<String>> = grants
        .iter()
        .zip(&names)
        .map(|(g, n)| shadowed(&policy, g, n))
        .collect();
    let shadowed_count = notes.iter().flatten().count();
    // Comments change no rule: the text with the notes compiles as the one without did.
    let (out, _) = if shadowed_count == 0 {
        (out, lines)
    } else {
        compose(&text, &spot, grants, &names, &notes)
    };
    if shadowed_count > 0 {
        eprintln!(
            "warning: {} as appended: a stricter rule of the policy matches the approved request too (see the `# note:` comments)",
            plural(
                shadowed_count as u64,
                "grant rule lets nothing through",
                "grant rules let nothing through"
            )
        );
    }
    print!(
        "{}",
        diff::unified(&text, &out, &path.display().to_string(), &label)
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;
    use serde_json::json;

    fn grant(id: &str, name: &str) -> Found {
        let Value::Object(rule) = json!({
            "name": name,
            "effect": "allow",
            "reason": format!("approved by alice (approval {id}), widened: names matching `web-*`, for 900s"),
            "subjects": {"users": ["agent-1"]},
            "verbs": ["update"],
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "namespaces": ["dev"],
            "names": ["web-*"],
            "when": [{"path": "$.spec.replicas", "between": [1.0, 5.0]}],
        }) else {
            unreachable!("an object literal")
        };
        Found {
            approval_id: id.into(),
            approver: "alice".into(),
            identity: "agent-1".into(),
            time: "2026-11-27T10:00:05.000Z".into(),
            rule,
            uses: Some(3),
            seconds: Some(900),
            pinned: vec!["every other field of the body, as approved".into()],
            used: 2,
            request: Approved {
                groups: vec!["ai-agents".into()],
                method: "PUT".into(),
                target: "/apis/apps/v1/namespaces/dev/deployments/web-1".into(),
                content_type: Some("application/json".into()),
                body: Some(r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web-1","namespace":"dev"},"spec":{"replicas":2}}"#.into()),
            },
        }
    }

    const POLICY: &str = "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  rules:\n    - name: read\n      effect: allow\n      verbs: [get]\n      resources: [pods]\n    # about the tests\n  tests: []\n";

    #[test]
    fn the_spot_is_after_the_last_rule() {
        let spot = locate(POLICY).unwrap();
        assert_eq!(
            &POLICY[..spot.at],
            &POLICY[..POLICY.find("    # about").unwrap()]
        );
        assert_eq!(spot.indent, 4);
        // Compact lists, a last rule ending the file without a line break, CRLF.
        let compact = "spec:\n  rules:\n  - name: a\n    effect: allow\n  approvals: {}";
        let spot = locate(compact).unwrap();
        assert_eq!(spot.indent, 2);
        assert_eq!(&compact[spot.at..], "  approvals: {}");
        let open = "spec:\r\n  rules:\r\n    - name: a\r\n      effect: allow";
        let spot = locate(open).unwrap();
        assert!(spot.needs_break);
        assert_eq!((spot.at, spot.eol), (open.len(), "\r\n"));
        // A block scalar whose lines start with `#` belongs to its rule.
        let scalar = "spec:\n  rules:\n    - name: a\n      reason: |\n        # not a comment\n";
        assert_eq!(locate(scalar).unwrap().at, scalar.len());
    }

    #[test]
    fn policies_the_grants_cannot_be_appended_to_say_why() {
        for (text, why) in [
            ("kind: Policy\n", "no top-level `spec:`"),
            ("spec: {rules: []}\n", "flow style (`spec: {rules: []}`)"),
            ("spec:\n  rules: []\n", "flow style (`rules: []`)"),
            ("spec:\n  masks: {}\n", "no `spec.rules:`"),
        ] {
            let err = locate(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn colliding_names_get_a_suffix_and_the_rest_stays_byte_identical() {
        let text = POLICY.replace("name: read", "name: grant-1a2b3c4d");
        let grants = [
            grant("1a2b3c4d00", "grant-1a2b3c4d"),
            grant("1a2b3c4d11", "grant-1a2b3c4d"),
        ];
        let spot = locate(&text).unwrap();
        let (out, names, lines, compiled) = settle(&text, &spot, &grants);
        assert!(compiled.is_ok(), "{compiled:?}\n{out}");
        assert_eq!(names, ["grant-1a2b3c4d-2", "grant-1a2b3c4d-3"]);
        let out_lines: Vec<&str> = out.lines().collect();
        for (n, name) in lines.iter().zip(&names) {
            assert_eq!(out_lines[n - 1], format!("    - name: {name}"));
        }
        assert!(out.contains("    # renamed from `grant-1a2b3c4d`"), "{out}");
        let inserted = &out[spot.at..out.len() - (text.len() - spot.at)];
        assert_eq!(
            format!("{}{inserted}{}", &text[..spot.at], &text[spot.at..]),
            out
        );
    }

    #[test]
    fn a_grant_the_compiler_refuses_is_reported_not_printed() {
        let mut g = grant("ffff", "grant-ffff");
        g.rule.insert("verbs".into(), json!(["frobnicate"]));
        let spot = locate(POLICY).unwrap();
        let (_, _, lines, compiled) = settle(POLICY, &spot, &[g.clone()]);
        let errs = compiled.unwrap_err();
        let e = &errs.errors()[0];
        assert_eq!(
            owner(&[g], &lines, e.location().unwrap().line)
                .unwrap()
                .approval_id,
            "ffff"
        );
    }

    #[test]
    fn recorded_strings_round_trip_through_the_compiler() {
        // The reason a rule was written with comes back from the compiled policy as it was.
        let hostile = "approved by \"eve\"\n- name: injected\u{1b}[2J: {x} #y \\z";
        let mut g = grant("abcd", "grant-abcd");
        g.rule.insert("reason".into(), json!(hostile));
        g.approver = "eve\nrules: []".into();
        g.rule.insert("names".into(), json!(["web-1"]));
        g.rule.remove("when");
        let spot = locate(POLICY).unwrap();
        let (out, _, _, compiled) = settle(POLICY, &spot, &[g]);
        let policy = compiled.unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(policy.rule_count(), 2);
        assert!(!out.contains('\u{1b}'), "{out}");
        let agent = kubeleash_core::policy::Identity::new("agent-1", ["g"]);
        let d = policy
            .evaluate(
                &agent,
                "PUT",
                "/apis/apps/v1/namespaces/dev/deployments/web-1",
                &http::HeaderMap::new(),
                Some(br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web-1","namespace":"dev"},"spec":{"replicas":2}}"#),
            )
            .decision;
        assert_eq!(d.rule.as_deref(), Some("grant-abcd"), "{}", d.reason);
        assert!(d.reason.contains(hostile), "{}", d.reason);
    }
}
