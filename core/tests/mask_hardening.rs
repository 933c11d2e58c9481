//! Issue 12 items 7, 8 and 20: where credentials live that the masker used to miss, and the
//! invariants that close each class.
//!
//! - Container shapes (env, `args`/`command`, probe `httpHeaders`) are masked wherever a pod
//!   template appears, in any kind (ControllerRevision `data`, CronJob `jobTemplate`, a custom
//!   resource's `spec.template`, a root array, a Status's `details`).
//! - Env, header and flag names are judged by the token rule of `mask::credname`.
//! - Anything the masker cannot place with certainty gets the strictest treatment: a root array
//!   or a Status's details make every object in them one of unknown kind (every mask applies);
//!   a second, different `kind` (or apiVersion group) for one object ends the response.
//! - Table cells of a kind a policy rule may mask are masked, all but the name column, in
//!   Tables, lists and watches of Tables.
//! - Log text and strings are normalized before the detectors (terminal escapes, JSON escapes,
//!   percent-encoding); output bytes outside masked spans are the input's.
//! - Every list item is judged by the strictest of its own kind, its list's item kind and the
//!   request's kind, in custom and aggregated lists too; one that contradicts its list ends the
//!   response.
//! - `credential-keys`: string values under credential-named keys in a ConfigMap's data and
//!   binaryData (decoded for the detectors) and anywhere in an object of unknown kind.
//! - An element judged by a sibling key that has a key twice gets the strictest reading.
//! - A credential cut short at the end of a log stream shows nothing beyond its prefix.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, LazyLock};

use kubeleash_core::mask::{Framing, MARKER, MaskError, MaskSet, Masker};
use kubeleash_core::policy::Policy;
use kubeleash_core::request::classify;
use proptest::prelude::*;
use proptest::sample::Index;

static BUILTIN: LazyLock<Arc<MaskSet>> =
    LazyLock::new(|| Arc::new(MaskSet::builtin().expect("built-in masks compile")));

static CUSTOM: LazyLock<Policy> = LazyLock::new(|| {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/testdata/mask/policies/custom-rules.yaml"
    );
    Policy::from_yaml(&std::fs::read_to_string(path).expect("custom-rules.yaml"))
        .expect("custom-rules.yaml compiles")
});

fn run(set: &Arc<MaskSet>, framing: Framing, pieces: &[&[u8]]) -> (Vec<u8>, Option<MaskError>) {
    let mut m = Masker::with(Arc::clone(set), framing);
    let mut out = Vec::new();
    for p in pieces {
        if let Err(e) = m.feed_into(p, &mut out) {
            return (out, Some(e));
        }
    }
    let e = m.finish_into(&mut out).err();
    (out, e)
}

fn mask_json(input: &str) -> String {
    let (out, err) = run(&BUILTIN, Framing::Json, &[input.as_bytes()]);
    assert_eq!(err, None, "{input}");
    String::from_utf8(out).unwrap()
}

fn mask_log(input: &str) -> String {
    let (out, err) = run(&BUILTIN, Framing::Text, &[input.as_bytes()]);
    assert_eq!(err, None);
    String::from_utf8(out).unwrap()
}

/// Mask `body` as the response to `GET target` with the custom-rules policy.
fn mask_custom(target: &str, body: &str) -> Result<String, MaskError> {
    let req = classify("GET", target, &http::HeaderMap::new()).unwrap();
    let out = CUSTOM.mask(&req, Some("application/json"), None, body.as_bytes())?;
    Ok(String::from_utf8(out).unwrap())
}

/// Every form a secret can be read back in: plain, base64, JSON-escaped, percent-encoded.
fn forms(secret: &str) -> Vec<String> {
    let b64 = |b: &[u8]| {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for k in 0..=c.len() {
                s.push(char::from(T[((n >> (18 - 6 * k)) & 63) as usize]));
            }
        }
        s
    };
    let json = serde_json::to_string(secret).unwrap();
    let mut out = vec![
        secret.to_string(),
        json[1..json.len() - 1].to_string(),
        json[1..json.len() - 1].replace('/', "\\/"),
    ];
    // base64 at each of the three alignments (the secret embedded in a longer value).
    for pad in ["", "x", "xy"] {
        let enc = b64(format!("{pad}{secret}").as_bytes());
        let skip = match pad.len() {
            0 => 0,
            1 => 4,
            _ => 4,
        };
        let core: String = enc
            .chars()
            .skip(skip)
            .take(secret.len() * 4 / 3 - 2)
            .collect();
        if core.len() >= 8 {
            out.push(core);
        }
    }
    out
}

fn assert_hidden(out: &str, secret: &str) {
    for f in forms(secret) {
        assert!(!out.contains(&f), "`{f}` (a form of `{secret}`) in {out}");
    }
}

// ---------------------------------------------------------------------------------------------
// Item 7: built-in masks reach where credentials live

#[test]
fn pod_templates_are_masked_in_every_kind_that_embeds_one() {
    let env = r#"{"containers":[{"name":"c","env":[{"name":"DB_PASS","value":"Tpl-s3cret-1"}]}]}"#;
    for doc in [
        // A ControllerRevision keeps a StatefulSet's or DaemonSet's template in `data`.
        format!(
            r#"{{"kind":"ControllerRevision","apiVersion":"apps/v1","metadata":{{"name":"r"}},"data":{{"spec":{{"template":{{"spec":{env}}}}}}},"revision":3}}"#
        ),
        format!(
            r#"{{"kind":"CronJob","apiVersion":"batch/v1","spec":{{"jobTemplate":{{"spec":{{"template":{{"spec":{env}}}}}}}}}}}"#
        ),
        format!(
            r#"{{"kind":"Rollout","apiVersion":"argoproj.io/v1alpha1","spec":{{"template":{{"spec":{env}}}}}}}"#
        ),
        format!(
            r#"{{"kind":"Workflow","apiVersion":"x.io/v1","spec":{{"steps":[[{{"podSpec":{env}}}]]}}}}"#
        ),
        format!(r#"{{"kind":"ConfigMap","apiVersion":"v1","data":{{"x":"y"}},"spec":{env}}}"#),
    ] {
        let out = mask_json(&doc);
        assert_hidden(&out, "Tpl-s3cret-1");
        assert!(
            out.contains(r#""name":"DB_PASS","value":"[masked]""#),
            "{out}"
        );
    }
}

#[test]
fn env_names_are_judged_by_tokens() {
    for (name, masked) in [
        ("DB_PASS", true),
        ("PGPASS", true),
        ("PGPASSWORD", true),
        ("MYSQL_PWD", true),
        ("REDIS_PW", true),
        ("dbPassword", true),
        ("SESSION_COOKIE", true),
        ("DATABASE_DSN", true),
        ("DB_CONNECTION_STRING", true),
        ("TLS_PRIVATE_KEY", true),
        ("HOSTNAME", false),
        ("LOG_LEVEL", false),
        ("Author", false),
    ] {
        let doc = format!(
            r#"{{"kind":"Pod","apiVersion":"v1","spec":{{"containers":[{{"name":"c","env":[{{"value":"Env-v4lue-{name}","name":"{name}"}}]}}]}}}}"#
        );
        let out = mask_json(&doc);
        assert_eq!(
            !out.contains(&format!("Env-v4lue-{name}")),
            masked,
            "{name}: {out}"
        );
    }
}

#[test]
fn container_args_mask_credential_flag_values() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            r#"["/bin/app"]"#,
            r#"["--db-pass","Arg-s3cret-1","--port","5432"]"#,
            &[r#""--db-pass","[masked]","--port","5432""#],
        ),
        (
            r#"["/bin/app"]"#,
            r#"["--password=Arg-s3cret-2","-v"]"#,
            &[r#""--password=[masked]","-v""#],
        ),
        (
            r#"["mysql"]"#,
            r#"["-h","db","-u","root","-pArg-s3cret-3","orders"]"#,
            &[r#""-u","root","-p[masked]","orders""#],
        ),
        (
            r#"["redis-cli"]"#,
            r#"["-a","Arg-s3cret-4","ping"]"#,
            &[r#""-a","[masked]","ping""#],
        ),
        (
            r#"["curl"]"#,
            r#"["-u","admin:Arg-s3cret-5","https://x"]"#,
            &[r#""-u","admin:[masked]""#],
        ),
        // A Kubernetes `$(VAR)` reference is not a value: the env it names is masked instead.
        (
            r#"["/bin/app"]"#,
            r#"["--requirepass","$(REDIS_PASSWORD)"]"#,
            &[r#""--requirepass","$(REDIS_PASSWORD)""#],
        ),
        // A shell script: the detectors read it.
        (
            r#"["sh","-c"]"#,
            r#"["mysql -u root -pArg-s3cret-6 orders"]"#,
            &[r#""mysql -u root -p[masked:cli-short-credential-flag] orders""#],
        ),
        // Another program's short flags are its own.
        (
            r#"["/bin/server"]"#,
            r#"["-p","8080"]"#,
            &[r#""-p","8080""#],
        ),
    ];
    for (command, args, want) in cases {
        let doc = format!(
            r#"{{"kind":"Deployment","apiVersion":"apps/v1","spec":{{"template":{{"spec":{{"containers":[{{"name":"c","command":{command},"args":{args}}}]}}}}}}}}"#
        );
        let out = mask_json(&doc);
        for w in *want {
            assert!(out.contains(w), "want {w} in {out}");
        }
        assert!(!out.contains("Arg-s3cret"), "{out}");
    }
    // `args` with no `command`: the image's entrypoint is unknown, so short flags count.
    let out = mask_json(
        r#"{"kind":"Pod","spec":{"containers":[{"name":"c","args":["-p","Arg-s3cret-7"]}]}}"#,
    );
    assert!(out.contains(r#""-p","[masked]""#), "{out}");
}

#[test]
fn probe_headers_and_termination_messages() {
    let doc = r#"{"kind":"Pod","apiVersion":"v1","spec":{"containers":[{"name":"c","livenessProbe":{"httpGet":{"path":"/h","port":8080,"httpHeaders":[{"name":"Authorization","value":"Hdr-s3cret-1"},{"name":"X-Api-Key","value":"Hdr-s3cret-2"},{"name":"Accept","value":"text/plain"}]}}}]},"status":{"containerStatuses":[{"name":"c","lastState":{"terminated":{"message":"boom: \u001b[31mpassword\u001b[0m=Term-s3cret-3\n"}}}]}}"#;
    let out = mask_json(doc);
    assert_hidden(&out, "Hdr-s3cret-1");
    assert_hidden(&out, "Hdr-s3cret-2");
    assert_hidden(&out, "Term-s3cret-3");
    assert!(
        out.contains(r#"{"name":"Accept","value":"text/plain"}"#),
        "{out}"
    );
}

#[test]
fn status_details_and_root_arrays_are_objects_of_unknown_kind() {
    let secret = r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s"},"data":{"password":"U3RhdHVzLXMzY3JldA=="}}"#;
    for doc in [
        format!(
            r#"{{"kind":"Status","apiVersion":"v1","status":"Failure","message":"conflict","details":{{"name":"s","kind":"secrets","object":{secret}}}}}"#
        ),
        r#"{"kind":"Status","apiVersion":"v1","details":{"kind":"secrets","data":{"password":"U3RhdHVzLXMzY3JldA=="}}}"#
            .to_string(),
        format!("[{secret}]"),
        format!("[[{{\"x\":{secret}}}]]"),
        // The kind comes after the data: unknown while the data streams, so every mask applies.
        r#"{"data":{"password":"U3RhdHVzLXMzY3JldA=="},"kind":"Secret"}"#.to_string(),
    ] {
        let out = mask_json(&doc);
        assert!(!out.contains("U3RhdHVzLXMzY3JldA=="), "{out}");
    }
}

#[test]
fn a_second_kind_ends_the_response() {
    for doc in [
        r#"{"kind":"ConfigMap","data":{"a":"b"},"kind":"Secret","data":{"password":"RHVwLXMzY3JldA=="}}"#,
        r#"{"kind":"ConfigMap","Kind":"Secret","data":{"password":"RHVwLXMzY3JldA=="}}"#,
        r#"{"Kind":"Secret","kind":"ConfigMap","data":{"password":"RHVwLXMzY3JldA=="}}"#,
        r#"{"kind":"SecretList","items":[{"kind":"ConfigMap","data":{"password":"RHVwLXMzY3JldA=="}}]}"#,
        r#"{"apiVersion":"db.example.com/v1","apiVersion":"other.io/v1","spec":{"password":"x"}}"#,
    ] {
        let (out, err) = run(&BUILTIN, Framing::Json, &[doc.as_bytes()]);
        assert!(
            matches!(err, Some(MaskError::Malformed { .. })),
            "{doc}: {err:?}"
        );
        assert!(!String::from_utf8_lossy(&out).contains("RHVwLXMzY3JldA=="));
    }
    // A case variant narrows nothing: a decoder matching keys exactly ignores it, one matching
    // them case-insensitively reads it; until `kind` comes, every mask applies.
    let out = mask_json(r#"{"Kind":"ConfigMap","data":{"a":"eA=="},"kind":"ConfigMap"}"#);
    assert!(out.contains("W21hc2tlZF0="), "{out}");
    // The same kind twice says nothing new.
    let out = mask_json(r#"{"kind":"Secret","kind":"Secret","data":{"a":"eA=="}}"#);
    assert!(out.contains("W21hc2tlZF0="), "{out}");
}

#[test]
fn last_applied_that_is_an_array_or_names_two_kinds() {
    let applied = |inner: &str| {
        format!(
            r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"x","annotations":{{"kubectl.kubernetes.io/last-applied-configuration":{}}}}}}}"#,
            serde_json::to_string(inner).unwrap()
        )
    };
    for inner in [
        r#"[{"kind":"Secret","apiVersion":"v1","data":{"password":"TGEtczNjcmV0"}}]"#,
        r#"{"apiVersion":"v1","data":{"password":"TGEtczNjcmV0"},"kind":"ConfigMap","kind":"Secret"}"#,
        r#"{"kind":"Secret","data":{"password":"TGEtczNjcmV0"},"kind":"ConfigMap"}"#,
    ] {
        let out = mask_json(&applied(inner));
        assert!(!out.contains("TGEtczNjcmV0"), "{out}");
    }
}

#[test]
fn a_request_for_secrets_is_judged_as_secrets() {
    // A response that calls itself something else is masked as what was asked for as well.
    let req = classify(
        "GET",
        "/api/v1/namespaces/d/secrets/s",
        &http::HeaderMap::new(),
    )
    .unwrap();
    let mut m = Masker::new(Arc::clone(&BUILTIN), &req, Some("application/json"), None).unwrap();
    let mut out = m
        .feed(br#"{"kind":"ConfigMap","data":{"password":"T3JpZ2luLXMzY3JldA=="}}"#)
        .unwrap();
    out.extend(m.finish().unwrap());
    assert!(!String::from_utf8_lossy(&out).contains("T3JpZ2luLXMzY3JldA=="));
}

// ---------------------------------------------------------------------------------------------
// Item 8: Table cells

const DB_COLUMNS: &str = r#"[{"name":"Name","type":"string","format":"name","description":"","priority":0},{"name":"Host","type":"string","format":"","description":"","priority":0},{"name":"Password","type":"string","format":"","description":"","priority":0},{"name":"Replicas","type":"integer","format":"","description":"","priority":0},{"name":"Age","type":"date","format":"","description":"","priority":0}]"#;

fn db_row(name: &str, pw: &str) -> String {
    format!(
        r#"{{"cells":["{name}","{name}.db","{pw}",3,"5m"],"object":{{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{{"name":"{name}"}}}}}}"#
    )
}

#[test]
fn custom_rules_reach_table_cells() {
    let table = format!(
        r#"{{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{{}},"columnDefinitions":{DB_COLUMNS},"rows":[{},{}]}}"#,
        db_row("orders", "Tbl-s3cret-1"),
        db_row("users", "Tbl-s3cret-2")
    );
    let out = mask_custom("/apis/db.example.com/v1/namespaces/dev/databases", &table).unwrap();
    assert_hidden(&out, "Tbl-s3cret-1");
    assert_hidden(&out, "Tbl-s3cret-2");
    assert!(
        out.contains(r#""cells":["orders","[masked]","[masked]",0,"[masked]"]"#),
        "{out}"
    );
    // A list of all databases (no namespace), and a Table with the object included.
    let out = mask_custom(
        "/apis/db.example.com/v1/databases?includeObject=Object",
        &table,
    )
    .unwrap();
    assert_hidden(&out, "Tbl-s3cret-1");
    // A watch of Tables: the column definitions come with the first event only.
    let first = format!(
        r#"{{"type":"ADDED","object":{{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{{}},"columnDefinitions":{DB_COLUMNS},"rows":[{}]}}}}"#,
        db_row("orders", "Tbl-s3cret-3")
    );
    let later = format!(
        r#"{{"type":"MODIFIED","object":{{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{{}},"columnDefinitions":null,"rows":[{}]}}}}"#,
        db_row("users", "Tbl-s3cret-4")
    );
    let req = classify(
        "GET",
        "/apis/db.example.com/v1/namespaces/dev/databases?watch=1",
        &http::HeaderMap::new(),
    )
    .unwrap();
    let body = format!("{first}\n{later}\n");
    let out = CUSTOM
        .mask(&req, Some("application/json"), None, body.as_bytes())
        .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_hidden(&out, "Tbl-s3cret-3");
    assert_hidden(&out, "Tbl-s3cret-4");
    assert!(out.contains(r#""cells":["users","[masked]""#), "{out}");
}

#[test]
fn tables_no_rule_can_reach_are_left_alone() {
    // The README's rule alone.
    let policy = Policy::from_yaml(
        r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
metadata: {name: readme-database}
spec:
  rules: []
  masks:
    rules:
      - name: database-passwords
        kinds: [Database]
        apiGroups: [db.example.com]
        paths: ["$.spec.password"]
"#,
    )
    .unwrap();
    let table = format!(
        r#"{{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{{}},"columnDefinitions":{DB_COLUMNS},"rows":[{}]}}"#,
        db_row("orders", "plain-host-value")
    );
    let mask = |target: &str| {
        let req = classify("GET", target, &http::HeaderMap::new()).unwrap();
        let out = policy.mask(&req, Some("application/json"), None, table.as_bytes());
        String::from_utf8(out.unwrap()).unwrap()
    };
    // Another group (the rule names db.example.com only), and built-in kinds: untouched.
    assert_eq!(mask("/apis/other.example.org/v1/databases"), table);
    assert_eq!(mask("/api/v1/namespaces/dev/services"), table);
    assert_eq!(mask("/apis/apps/v1/deployments"), table);
    // Its own group, whatever the plural (a CRD chooses it): masked.
    for target in [
        "/apis/db.example.com/v1/databases",
        "/apis/db.example.com/v1/dbs",
    ] {
        assert!(
            mask(target).contains(r#""cells":["orders","[masked]""#),
            "{target}"
        );
    }
    // A rule with no group, for a built-in kind: that kind's Tables only.
    let out = mask_custom("/api/v1/namespaces/dev/pods", &table).unwrap();
    assert!(out.contains(r#""cells":["orders","[masked]""#), "{out}");
    let out = mask_custom("/api/v1/namespaces/dev/services", &table).unwrap();
    assert_eq!(out, table);
}

#[test]
fn cells_that_are_not_an_array_are_masked_whole() {
    let table = format!(
        r#"{{"kind":"Table","columnDefinitions":{DB_COLUMNS},"rows":[{{"cells":{{"0":"Tbl-s3cret-6","1":"x"}}}}]}}"#
    );
    let out = mask_custom("/apis/db.example.com/v1/databases", &table).unwrap();
    assert!(!out.contains("Tbl-s3cret-6"), "{out}");
}

#[test]
fn rows_before_column_definitions_mask_every_cell() {
    let table = format!(
        r#"{{"kind":"Table","rows":[{}],"columnDefinitions":{DB_COLUMNS}}}"#,
        db_row("orders", "Tbl-s3cret-5")
    );
    let out = mask_custom("/apis/db.example.com/v1/databases", &table).unwrap();
    assert!(out.contains(r#""cells":["[masked]","[masked]""#), "{out}");
}

// ---------------------------------------------------------------------------------------------
// Item 20: log text as honest programs write it

#[test]
fn log_formats_are_normalized_before_the_detectors() {
    let cases: &[(&str, &str)] = &[
        (
            "time=1 \x1b[36mpassword\x1b[0m=Log-s3cret-1 user=bob\n",
            "time=1 \x1b[36mpassword\x1b[0m=[masked:generic-password] user=bob\n",
        ),
        (
            "q=user%3Dbob%26password%3DLog-s3cret-2%26x%3D1\n",
            "q=user%3Dbob%26password%3D[masked:generic-password]%26x%3D1\n",
        ),
        (
            "+ curl -u admin:Log-s3cret-3 https://x\n",
            "+ curl -u admin:[masked:cli-short-credential-flag] https://x\n",
        ),
        (
            "redis-cli -a Log-s3cret-4 ping\n",
            "redis-cli -a [masked:cli-short-credential-flag] ping\n",
        ),
        (
            "docker login -u bot -p Log-s3cret-5 r.io\n",
            "docker login -u bot -p [masked:cli-short-credential-flag] r.io\n",
        ),
        (
            "mysql -pLog-s3cret-6 db\n",
            "mysql -p[masked:cli-short-credential-flag] db\n",
        ),
        (
            "user\tbob\tpassword\tLog-s3cret-7\n",
            "user\tbob\tpassword\t[masked:prose-credential]\n",
        ),
        (
            "the password is Log-s3cret-8 today\n",
            "the password is [masked:prose-credential] today\n",
        ),
        ("the password is required\n", "the password is required\n"),
    ];
    for (input, want) in cases {
        assert_eq!(mask_log(input), *want, "{input:?}");
    }
}

#[test]
fn json_escaped_tokens_are_found_whole() {
    // A JWT with its dots escaped, and base64 with `\/` and `\u002B`, as PHP and .NET write.
    let jwt = r"eyJhbGciOiJIUzI1NiJ9\u002eeyJzdWIiOiIxMjM0NTY3ODkwIn0\u002eSflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV";
    let line = format!("{{\"level\":\"info\",\"auth\":\"{jwt}\"}}\n");
    let out = mask_log(&line);
    assert_eq!(out, "{\"level\":\"info\",\"auth\":\"[masked:jwt]\"}\n");
    let key = "-----BEGIN RSA PRIVATE KEY-----";
    let b64 = "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFb3dJQkFBS0NBUUVB";
    let escaped = b64.replacen('B', "\\u0042", 1).replacen('/', "\\/", 1);
    let out = mask_log(&format!("{{\"key\":\"{escaped}\"}}\n"));
    assert!(!out.contains("UFJJVkFURSBLRV"), "{out} ({key})");
}

// ---------------------------------------------------------------------------------------------
// Properties

/// Where a planted secret sits: each a credential position the masker must hide.
fn planted(secret: String) -> impl Strategy<Value = String> {
    let s = secret;
    let env_name = prop::sample::select(vec![
        "DB_PASS",
        "PGPASS",
        "MYSQL_PWD",
        "apiKey",
        "X_TOKEN",
        "SECRET",
        "dbPassword",
    ]);
    let header = prop::sample::select(vec!["Authorization", "Cookie", "X-Auth-Token", "X-Api-Key"]);
    let flag = prop::sample::select(vec![
        "--db-pass",
        "--password",
        "--api-key",
        "-token",
        "--client-secret",
    ]);
    let (s1, s2, s3, s4, s5) = (s.clone(), s.clone(), s.clone(), s.clone(), s);
    prop_oneof![
        (env_name, any::<bool>()).prop_map(move |(n, value_first)| {
            let e = if value_first {
                format!(r#"{{"value":"{s1}","name":"{n}"}}"#)
            } else {
                format!(r#"{{"name":"{n}","value":"{s1}"}}"#)
            };
            format!(r#"{{"containers":[{{"name":"c","env":[{e}]}}]}}"#)
        }),
        header.prop_map(move |h| format!(
            r#"{{"containers":[{{"name":"c","readinessProbe":{{"httpGet":{{"httpHeaders":[{{"name":"{h}","value":"{s2}"}}]}}}}}}]}}"#
        )),
        (flag, any::<bool>()).prop_map(move |(f, joined)| {
            let args = if joined {
                format!(r#"["{f}={s3}"]"#)
            } else {
                format!(r#"["{f}","{s3}"]"#)
            };
            format!(r#"{{"containers":[{{"name":"c","command":["/app"],"args":{args}}}]}}"#)
        }),
        Just(format!(r#"{{"kind":"Secret","data":{{"k":"{s4}"}}}}"#)),
        Just(format!(r#"{{"data":{{"k":"{s5}"}},"kind":"Secret"}}"#)),
    ]
}

/// Built-in kinds have schemas the API server enforces: no object of another kind is embedded
/// in them at a path the masker does not watch, so the property does not ask for it there.
fn embeds_unreachably(doc: &str) -> bool {
    doc.contains(r#""kind":"Secret""#)
        && [
            "Pod",
            "Deployment",
            "ControllerRevision",
            "Status",
            "ConfigMap",
            "List",
        ]
        .iter()
        .any(|k| doc.starts_with(&format!(r#"{{"kind":"{k}","apiVersion":"v1","spec""#)))
}

/// A random JSON shape around `inner`: nesting under random keys, arrays, root arrays, lists,
/// Status details, watch-less documents with random kinds.
fn around(inner: String) -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "spec",
        "template",
        "data",
        "x",
        "items",
        "details",
        "object",
        "jobTemplate",
        "steps",
    ]);
    let kind = prop::sample::select(vec![
        "Pod",
        "Deployment",
        "ControllerRevision",
        "Status",
        "List",
        "Widget",
        "ConfigMap",
        "",
    ]);
    (prop::collection::vec((key, 0u8..3), 0..5), kind, 0u8..3).prop_map(
        move |(path, kind, root)| {
            let mut v = inner.clone();
            for (k, how) in path.into_iter().rev() {
                v = match how {
                    0 => format!(r#"{{"{k}":{v}}}"#),
                    1 => format!(r#"{{"{k}":[{v}]}}"#),
                    _ => format!(r#"{{"a":1,"{k}":{v},"z":"q"}}"#),
                };
            }
            let kind_member = if kind.is_empty() {
                String::new()
            } else {
                format!(r#""kind":"{kind}","#)
            };
            match root {
                0 => format!(r#"{{{kind_member}"apiVersion":"v1","spec":{v}}}"#),
                1 => format!("[{v}]"),
                _ => format!(r#"{{{kind_member}"items":[{{"spec":{v}}}]}}"#),
            }
        },
    )
}

fn split<'a>(input: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
    at.push(0);
    at.push(input.len());
    at.sort_unstable();
    at.windows(2).map(|w| &input[w[0]..w[1]]).collect()
}

/// Whether `out` is `input` with some disjoint spans replaced by detector markers.
fn only_spans_replaced(input: &str, out: &str) -> bool {
    let mut pieces: Vec<&str> = Vec::new();
    let mut rest = out;
    while let Some(p) = rest.find("[masked:") {
        let Some(q) = rest[p..].find(']') else { break };
        pieces.push(&rest[..p]);
        rest = &rest[p + q + 1..];
    }
    pieces.push(rest);
    let mut at = 0;
    for (i, p) in pieces.iter().enumerate() {
        if i == 0 {
            if !input.starts_with(p) {
                return false;
            }
            at = p.len();
            continue;
        }
        if i == pieces.len() - 1 {
            return input.len() >= at + p.len() && input.ends_with(p);
        }
        match input[at..].find(p) {
            Some(q) => at += q + p.len(),
            None => return false,
        }
    }
    true
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// A secret planted in a credential position, in any JSON shape around it, never comes out
    /// in plain, base64 or JSON-escaped form, whatever the chunking; the output does not depend
    /// on the chunks; nothing panics.
    #[test]
    fn planted_secrets_never_come_out(
        doc in "[A-Za-z0-9]{12,24}".prop_flat_map(|s| planted(s.clone()).prop_flat_map(around).prop_map(move |d| (s.clone(), d))),
        cuts in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let (secret, doc) = doc;
        prop_assume!(!embeds_unreachably(&doc));
        let whole = run(&BUILTIN, Framing::Json, &[doc.as_bytes()]);
        let chunked = run(&BUILTIN, Framing::Json, &split(doc.as_bytes(), &cuts));
        prop_assert_eq!(&whole, &chunked);
        let out = String::from_utf8_lossy(&whole.0);
        for f in forms(&secret) {
            prop_assert!(!out.contains(&f), "{} in {}", f, out);
        }
    }

    /// Tables with random column definitions (the name column anywhere, or none) and rows: with
    /// a policy rule that may apply, no cell but the name column's comes out, in any chunking.
    #[test]
    fn table_cells_never_show_a_masked_kind_s_values(
        ncols in 1usize..6,
        name_at in prop::option::of(0usize..6),
        rows in prop::collection::vec(prop::collection::vec("[A-Za-z0-9]{10,16}", 6), 0..4),
        defs_first in any::<bool>(),
        cuts in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let defs: Vec<String> = (0..ncols)
            .map(|i| {
                let format = if Some(i) == name_at { "name" } else { "" };
                format!(r#"{{"name":"c{i}","type":"string","format":"{format}"}}"#)
            })
            .collect();
        let rows_json: Vec<String> = rows
            .iter()
            .map(|r| format!(r#"{{"cells":[{}]}}"#, r[..ncols].iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(",")))
            .collect();
        let (d, r) = (format!("[{}]", defs.join(",")), format!("[{}]", rows_json.join(",")));
        let table = if defs_first {
            format!(r#"{{"kind":"Table","columnDefinitions":{d},"rows":{r}}}"#)
        } else {
            format!(r#"{{"kind":"Table","rows":{r},"columnDefinitions":{d}}}"#)
        };
        let set = Arc::clone(CUSTOM.mask_set());
        let whole = run(&set, Framing::Json, &[table.as_bytes()]);
        let chunked = run(&set, Framing::Json, &split(table.as_bytes(), &cuts));
        prop_assert_eq!(&whole, &chunked);
        prop_assert_eq!(&whole.1, &None);
        let out = String::from_utf8_lossy(&whole.0);
        for row in &rows {
            for (i, cell) in row[..ncols].iter().enumerate() {
                let shown = out.contains(cell.as_str());
                let may_show = defs_first && Some(i) == name_at;
                prop_assert!(!shown || may_show, "cell {} `{}` in {}", i, cell, out);
            }
        }
    }

    /// A credential in a log line, written with terminal colours, percent-encoding or JSON
    /// escapes around its key: never in the output; the output is the input with spans
    /// replaced; chunking changes nothing.
    #[test]
    fn encoded_log_credentials_never_come_out(
        secret in "[A-Za-z0-9]{10,20}",
        key in prop::sample::select(vec!["password", "passwd", "api_key", "secret", "token"]),
        colour in any::<bool>(),
        encoding in 0u8..4,
        before in "[a-z =]{0,12}",
        after in "[a-z =]{0,12}",
        cuts in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let k = if colour { format!("\x1b[36m{key}\x1b[0m") } else { key.to_string() };
        let pair = match encoding {
            0 => format!("{k}={secret}"),
            1 => format!("{k}%3D{secret}"),
            2 => format!("\\\"{k}\\\":\\\"{secret}\\\""),
            _ => format!("{k}\t{secret}"),
        };
        let line = format!("{before} {pair} {after}\n");
        let whole = run(&BUILTIN, Framing::Text, &[line.as_bytes()]);
        let chunked = run(&BUILTIN, Framing::Text, &split(line.as_bytes(), &cuts));
        prop_assert_eq!(&whole, &chunked);
        let out = String::from_utf8_lossy(&whole.0).into_owned();
        prop_assert!(!out.contains(&secret), "{:?} -> {:?}", line, out);
        prop_assert!(only_spans_replaced(&line, &out), "{:?} -> {:?}", line, out);
    }

    /// Any bytes, any framing, any policy: never a panic, and the outcome does not depend on
    /// the chunks.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in prop::collection::vec(prop::sample::select(b"{}[]\",:0123 \\u001bkindKindrowscellsargscommandenvnamevalue-p=%3D\x1b".to_vec()), 0..200),
        framing in prop::sample::select(vec![Framing::Json, Framing::WatchEvents, Framing::Text]),
        cuts in prop::collection::vec(any::<Index>(), 0..6),
    ) {
        let set = Arc::clone(CUSTOM.mask_set());
        let whole = run(&set, framing, &[&bytes]);
        let chunked = run(&set, framing, &split(&bytes, &cuts));
        prop_assert_eq!(&whole.0, &chunked.0);
        prop_assert_eq!(whole.1.map(|e| e.code()), chunked.1.map(|e| e.code()));
    }
}

#[test]
fn markers_are_the_documented_strings() {
    assert_eq!(MARKER, "[masked]");
    assert_eq!(kubeleash_core::mask::MARKER_BASE64, "W21hc2tlZF0=");
}

// ---------------------------------------------------------------------------------------------
// Classes found after the hardening: list items of a stated kind, credential-named keys outside
// env, duplicated keys, credentials cut short at the end of a log.

static DEFAULT: LazyLock<Policy> = LazyLock::new(|| {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/testdata/mask/policies/default.yaml"
    );
    Policy::from_yaml(&std::fs::read_to_string(path).expect("default.yaml"))
        .expect("default.yaml compiles")
});

/// `kubeleash mask` semantics: the policy's masker for `GET target`, fed in `cuts` chunks.
fn mask_for(
    policy: &Policy,
    target: &str,
    body: &str,
    cuts: &[Index],
) -> (String, Option<MaskError>) {
    let req = classify("GET", target, &http::HeaderMap::new()).unwrap();
    let mut m = policy.masker(&req, Some("application/json"), None).unwrap();
    let mut out = Vec::new();
    let mut err = None;
    for p in split(body.as_bytes(), cuts) {
        if let Err(e) = m.feed_into(p, &mut out) {
            err = Some(e);
            break;
        }
    }
    if err.is_none() {
        err = m.finish_into(&mut out).err();
    }
    (String::from_utf8_lossy(&out).into_owned(), err)
}

#[test]
fn items_of_a_stated_kind_are_judged_as_that_kind_in_any_list() {
    let item = r#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"s"},"data":{"p":"aHVudGVyMg=="}}"#;
    for (target, list) in [
        ("/apis/example.com/v1/namespaces/dev/things", "ThingList"),
        (
            "/apis/metrics.k8s.io/v1beta1/namespaces/dev/pods",
            "PodMetricsList",
        ),
        ("/api/v1/namespaces/dev/secrets", "SecretList"),
        ("/apis/example.com/v1/namespaces/dev/things", "List"),
    ] {
        let body = format!(r#"{{"kind":"{list}","apiVersion":"example.com/v1","items":[{item}]}}"#);
        let (out, err) = mask_for(&DEFAULT, target, &body, &[]);
        assert!(!out.contains("aHVudGVyMg=="), "{list}: {out}");
        // A `ThingList` says its items are Things: a Secret in it contradicts its list and
        // ends the response (as a second kind does); elsewhere it is masked as a Secret.
        match err {
            None => assert!(out.contains("W21hc2tlZF0="), "{list}: {out}"),
            Some(e) => {
                assert!(matches!(e, MaskError::Malformed { .. }), "{list}: {e:?}");
                assert!(
                    list == "ThingList" || list == "PodMetricsList",
                    "{list}: {e:?}"
                );
            }
        }
    }
}

/// What a list item is in the generated documents below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Secret,
    ConfigMap,
    Thing,
    Unstated,
}

proptest! {
    #![proptest_config(config(384))]

    /// Every list item is judged by the strictest of its own kind, its list's item kind and the
    /// request's kind: for any list kind, item kind, request and key order (kind before or
    /// after the data, the list's kind before or after its items), an item that is a Secret by
    /// any of the three never shows its data; an item whose kind contradicts its list ends the
    /// response, with nothing of it shown.
    #[test]
    fn list_items_are_judged_by_the_strictest_kind(
        list in prop::sample::select(vec![
            Some("SecretList"), Some("ConfigMapList"), Some("ThingList"), Some("PodMetricsList"),
            Some("List"), Some("Table"), None,
        ]),
        item in prop::sample::select(vec![
            ItemKind::Secret, ItemKind::ConfigMap, ItemKind::Thing, ItemKind::Unstated,
        ]),
        target in prop::sample::select(vec![
            "/api/v1/namespaces/dev/secrets",
            "/api/v1/namespaces/dev/configmaps",
            "/apis/example.com/v1/namespaces/dev/things",
            "/apis/metrics.k8s.io/v1beta1/namespaces/dev/pods",
        ]),
        kind_first in any::<bool>(),
        list_kind_first in any::<bool>(),
        secret in "[A-Za-z0-9]{12,20}",
        cuts in prop::collection::vec(any::<Index>(), 0..5),
    ) {
        let data = format!(r#""data":{{"p":"{secret}"}}"#);
        let own = match item {
            ItemKind::Secret => Some("Secret"),
            ItemKind::ConfigMap => Some("ConfigMap"),
            ItemKind::Thing => Some("Thing"),
            ItemKind::Unstated => None,
        };
        let item_doc = match (own, kind_first) {
            (Some(k), true) => format!(r#"{{"kind":"{k}","apiVersion":"v1",{data}}}"#),
            (Some(k), false) => format!(r#"{{"apiVersion":"v1",{data},"kind":"{k}"}}"#),
            (None, _) => format!("{{{data}}}"),
        };
        let items = format!(r#""items":[{item_doc},{item_doc}]"#);
        let body = match (list, list_kind_first) {
            (Some(l), true) => format!(r#"{{"kind":"{l}","apiVersion":"example.com/v1",{items}}}"#),
            (Some(l), false) => format!(r#"{{"apiVersion":"example.com/v1",{items},"kind":"{l}"}}"#),
            (None, _) => format!("{{{items}}}"),
        };
        let (out, err) = mask_for(&DEFAULT, target, &body, &cuts);
        let (whole, whole_err) = mask_for(&DEFAULT, target, &body, &[]);
        prop_assert_eq!(&out, &whole);
        prop_assert_eq!(err.as_ref().map(MaskError::code), whole_err.as_ref().map(MaskError::code));
        let list_item = list.filter(|_| list_kind_first).and_then(|l| l.strip_suffix("List")).filter(|k| !k.is_empty());
        // Hidden: a Secret by the request, by its list, or by its own kind once stated; and
        // anything whose kind is not yet known when its data streams (every mask applies). An
        // item whose own late kind contradicts its list was judged by its list's until then:
        // the response ends there, as for a second kind.
        let hidden = target.ends_with("/secrets")
            || list_item == Some("Secret")
            || own == Some("Secret") && (kind_first || list_item.is_none())
            || list_item.is_none() && (own.is_none() || !kind_first);
        let contradicts = matches!((own, list_item), (Some(o), Some(l)) if o != l);
        if contradicts {
            prop_assert!(matches!(err, Some(MaskError::Malformed { .. })), "{} -> {:?} {}", body, err, out);
        }
        if hidden {
            prop_assert!(!out.contains(&secret), "{} -> {}", body, out);
        }
        if err.is_none() && !hidden && own != Some("Secret") {
            // Not over-masked: a ConfigMap or a Thing keeps its data.
            prop_assert!(out.contains(&secret), "{} -> {}", body, out);
        }
    }
}

#[test]
fn an_element_with_a_key_twice_gets_the_strictest_reading() {
    let secret = "s3cr3t-Dup-Key-1";
    for entry in [
        format!(r#"{{"name":"API_KEY","value":"{secret}","name":"HARMLESS"}}"#),
        format!(r#"{{"name":"HARMLESS","value":"{secret}","name":"API_KEY"}}"#),
        format!(r#"{{"name":"API_KEY","name":"HARMLESS","value":"{secret}"}}"#),
        format!(r#"{{"name":"HARMLESS","Name":"API_KEY","value":"{secret}"}}"#),
        format!(r#"{{"n\u0061me":"API_KEY","name":"HARMLESS","value":"{secret}"}}"#),
        format!(r#"{{"name":"HARMLESS","value":"{secret}","valueFrom":{{"a":1,"a":2}}}}"#),
    ] {
        for key in ["env", "httpHeaders"] {
            let doc = format!(
                r#"{{"kind":"Pod","apiVersion":"v1","spec":{{"containers":[{{"name":"c","{key}":[{entry}]}}]}}}}"#
            );
            let out = mask_json(&doc);
            assert!(!out.contains(secret), "{out}");
        }
    }
    // Without a duplicate, a harmless name keeps its value.
    let out = mask_json(
        r#"{"kind":"Pod","spec":{"containers":[{"env":[{"name":"HARMLESS","value":"keep-me-1"}]}]}}"#,
    );
    assert!(out.contains("keep-me-1"), "{out}");
}

#[test]
fn credential_named_keys_outside_env_are_masked() {
    // A ConfigMap's data: the same key that becomes a masked env var through `envFrom`.
    let cm = r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","labels":{"password":"Lbl-s3cret-1","app":"keep-label-1"}},"data":{"password":"hunter2hunter2","DB_PASSWORD":"Cm-s3cret-22","LOG_LEVEL":"debug","secretName":"keep-ref-1"}}"#;
    for (target, body) in [
        ("/api/v1/namespaces/dev/configmaps/c", cm.to_string()),
        (
            "/api/v1/namespaces/dev/configmaps",
            format!(
                r#"{{"kind":"ConfigMapList","apiVersion":"v1","items":[{}]}}"#,
                cm.replacen(r#""kind":"ConfigMap","apiVersion":"v1","#, "", 1)
            ),
        ),
    ] {
        let (out, err) = mask_for(&DEFAULT, target, &body, &[]);
        assert_eq!(err, None);
        for secret in ["hunter2hunter2", "Cm-s3cret-22", "Lbl-s3cret-1"] {
            assert!(!out.contains(secret), "{out}");
        }
        for kept in ["debug", "keep-label-1", "keep-ref-1"] {
            assert!(out.contains(kept), "{kept}: {out}");
        }
    }
    // A custom resource with no mask rule: string values under credential-named keys, at any
    // depth; structure and other values stay.
    let cr = r#"{"apiVersion":"example.com/v1","kind":"Thing","metadata":{"name":"t","annotations":{"token":"Ann-s3cret-1","note":"keep-annotation","vault.example.com/db-password":"Ann-s3cret-2","cert-manager.io/issuer":"keep-issuer"}},"spec":{"password":"Cr-s3cret-1","connection":{"pass":"Cr-s3cret-2","host":"db"},"users":[{"name":"u","apiKey":"Cr-s3cret-3"}],"secretRef":{"name":"keep-name"},"tokenTTL":3600}}"#;
    let (out, err) = mask_for(
        &DEFAULT,
        "/apis/example.com/v1/namespaces/dev/things/t",
        cr,
        &[],
    );
    assert_eq!(err, None);
    for secret in [
        "Cr-s3cret-1",
        "Cr-s3cret-2",
        "Cr-s3cret-3",
        "Ann-s3cret-1",
        "Ann-s3cret-2",
    ] {
        assert!(!out.contains(secret), "{out}");
    }
    // An annotation key's domain prefix says nothing: `cert-manager.io/issuer` stays.
    for kept in [
        r#""host":"db""#,
        "keep-name",
        "keep-annotation",
        "keep-issuer",
        "3600",
    ] {
        assert!(out.contains(kept), "{kept}: {out}");
    }
    // A policy can turn it off.
    let off = Policy::from_yaml(
        "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nmetadata: {name: p}\nspec:\n  rules: []\n  masks:\n    disable: [credential-keys]\n",
    )
    .unwrap();
    let (out, _) = mask_for(
        &off,
        "/apis/example.com/v1/namespaces/dev/things/t",
        cr,
        &[],
    );
    assert!(out.contains("Cr-s3cret-1"), "{out}");
}

#[test]
fn binary_data_is_decoded_for_the_detectors() {
    let token = "ghp_BMUAPTT0aZN0dnruqXa71P2tD8vkQXRYO1Ni";
    let b64 = |s: &str| kubeleash_core_b64(s.as_bytes());
    let body = format!(
        r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"c"}},"binaryData":{{"gh.txt":"{}","font.ttf":"AAECAwQF","api.key":"{}"}}}}"#,
        b64(&format!("token: {token}\n")),
        b64("not-a-known-format"),
    );
    let (out, err) = mask_for(&DEFAULT, "/api/v1/namespaces/dev/configmaps/c", &body, &[]);
    assert_eq!(err, None);
    assert_hidden(&out, token);
    assert!(!out.contains(&b64("not-a-known-format")), "{out}");
    assert!(out.contains(r#""font.ttf":"AAECAwQF""#), "{out}");
    assert_eq!(out.matches("W21hc2tlZF0=").count(), 2, "{out}");
}

fn kubeleash_core_b64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= c.len() {
                s.push(char::from(T[((n >> (18 - 6 * k)) & 63) as usize]));
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// The known-format prefix a sample secret starts with (shown in the output is no leak), or
/// nothing.
fn format_prefix(secret: &str) -> usize {
    [
        "-----BEGIN RSA PRIVATE KEY-----\n",
        "-----BEGIN EC PRIVATE KEY-----\n",
        "-----BEGIN OPENSSH PRIVATE KEY-----\n",
        "-----BEGIN PRIVATE KEY-----\n",
        "sk_live_",
        "ghp_",
        "glpat-",
        "AKIA",
        "eyJ",
    ]
    .iter()
    .find(|p| secret.starts_with(*p))
    .map_or(0, |p| p.len())
}

/// Every detector sample of `tests/testdata/detectors`, with the log stream cut at every byte
/// inside the secret (a `limitBytes` the agent picked): no cut shows any of the secret beyond
/// its format's prefix, right where it was (the bytes before it, then the part of it that
/// arrived).
#[test]
fn a_credential_cut_short_at_the_end_of_a_log_shows_nothing() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/testdata/detectors");
    let log = std::fs::read_to_string(format!("{dir}/log.txt")).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/log.json")).unwrap()).unwrap();
    let secrets = manifest["secrets"].as_array().unwrap();
    assert!(secrets.len() >= 10);
    let mut tried = 0;
    for s in secrets {
        let secret = s["secret"].as_str().unwrap();
        let line = usize::try_from(s["line"].as_u64().unwrap()).unwrap();
        let line_start: usize = log.split_inclusive('\n').take(line - 1).map(str::len).sum();
        let at = line_start + log[line_start..].find(secret).unwrap();
        let before_start = log[..at].char_indices().rev().nth(9).map_or(0, |(i, _)| i);
        let before = &log[before_start..at];
        for k in (format_prefix(secret) + 1)..=secret.len() {
            if !secret.is_char_boundary(k) {
                continue;
            }
            let stream = &log[..at + k];
            let out = mask_log(stream);
            let shown = format!("{before}{}", &secret[..k]);
            assert!(
                !out.contains(&shown),
                "{} cut after {k} bytes shows `{shown}`: …{}",
                s["detector"],
                &out[out.len().saturating_sub(120)..]
            );
            tried += 1;
        }
    }
    assert!(tried > 300, "{tried}");
}

proptest! {
    #![proptest_config(config(256))]

    /// A credential of a known format or in an assignment, cut anywhere after its prefix or key
    /// at the end of a log stream, in any chunking: nothing of it beyond the prefix comes out.
    #[test]
    fn truncated_credentials_at_the_end_never_come_out(
        form in 0usize..8,
        secret in "[A-Za-z0-9]{40}",
        keep in 1usize..40,
        lead in "[a-z =]{0,16}",
        cuts in prop::collection::vec(any::<Index>(), 0..5),
    ) {
        let (head, secret) = match form {
            0 => ("export AWS_SECRET_ACCESS_KEY=".to_string(), secret),
            1 => ("token ".to_string(), format!("ghp_{}", &secret[..36])),
            2 => ("using ".to_string(), format!("github_pat_{secret}")),
            3 => ("key=".to_string(), format!("AKIA{}", secret[..16].to_ascii_uppercase())),
            4 => ("slack ".to_string(), format!("xoxb-1234-{secret}")),
            5 => (r#"{"password":""#.to_string(), secret),
            6 => ("Authorization: Bearer ".to_string(), secret),
            _ => ("push to https://bot:".to_string(), secret),
        };
        let prefix = ["ghp_", "github_pat_", "AKIA", "xoxb-"]
            .iter()
            .find(|p| secret.starts_with(*p))
            .map_or(0, |p| p.len());
        let k = (prefix + keep).min(secret.len());
        let stream = format!("{lead}\n{head}{}", &secret[..k]);
        let whole = run(&BUILTIN, Framing::Text, &[stream.as_bytes()]);
        let chunked = run(&BUILTIN, Framing::Text, &split(stream.as_bytes(), &cuts));
        prop_assert_eq!(&whole, &chunked);
        let out = String::from_utf8_lossy(&whole.0).into_owned();
        let shown = format!("{head}{}", &secret[..k]);
        prop_assert!(k <= prefix || !out.contains(&shown), "{:?} -> {:?}", stream, out);
    }
}

proptest! {
    #![proptest_config(config(384))]

    /// A string under a credential-named key (any spelling the token rule names, JSON-escaped
    /// or not) in a ConfigMap's data or anywhere in an object of unknown kind (a custom
    /// resource at the root, in a list, in a watch event, a Status's details; kind before or
    /// after) never comes out, in any chunking; a `binaryData` value holding a token neither.
    #[test]
    fn credential_keyed_strings_never_come_out(
        key in prop::sample::select(vec![
            "password", "DB_PASSWORD", "pass", "apiKey", "client_secret", "token", "PGPASS",
            "MYSQL_PWD", "x-api-key", r"pass\u0077ord", "dbPassword", "TLS_PRIVATE_KEY",
        ]),
        context in 0usize..12,
        secret in "[A-Za-z0-9]{12,24}",
        cuts in prop::collection::vec(any::<Index>(), 0..5),
    ) {
        let pair = format!(r#""{key}":"{secret}""#);
        let (framing, doc) = match context {
            0 => (Framing::Json, format!(r#"{{"kind":"ConfigMap","apiVersion":"v1","data":{{{pair}}}}}"#)),
            1 => (Framing::Json, format!(r#"{{"kind":"ConfigMapList","apiVersion":"v1","items":[{{"metadata":{{"name":"c"}},"data":{{{pair}}}}}]}}"#)),
            2 => (Framing::Json, format!(r#"{{"apiVersion":"x.io/v1","kind":"Thing","spec":{{"a":{{"b":{{{pair}}}}}}}}}"#)),
            3 => (Framing::Json, format!(r#"{{"kind":"ThingList","apiVersion":"x.io/v1","items":[{{"spec":{{{pair}}}}}]}}"#)),
            4 => (Framing::WatchEvents, format!(r#"{{"type":"ADDED","object":{{"apiVersion":"x.io/v1","kind":"Thing","spec":{{{pair}}}}}}}"#)),
            5 => (Framing::Json, format!(r#"{{"kind":"Thing","spec":{{"list":[{{{pair}}},{{"x":[{{{pair}}}]}}]}}}}"#)),
            6 => (Framing::Json, format!(r#"{{"kind":"Status","apiVersion":"v1","details":{{"causes":[{{{pair}}}]}}}}"#)),
            7 => (Framing::Json, format!(r#"{{"data":{{{pair}}},"kind":"ConfigMap"}}"#)),
            // Annotations and labels of any kind, built-in ones included.
            9 => (Framing::Json, format!(r#"{{"kind":"Deployment","apiVersion":"apps/v1","metadata":{{"name":"d","annotations":{{{pair}}}}}}}"#)),
            10 => (Framing::Json, format!(r#"{{"kind":"PodList","apiVersion":"v1","items":[{{"metadata":{{"labels":{{{pair}}}}},"spec":{{"template":{{"metadata":{{"annotations":{{{pair}}}}}}}}}}}]}}"#)),
            11 => (Framing::WatchEvents, format!(r#"{{"type":"MODIFIED","object":{{"kind":"Service","apiVersion":"v1","metadata":{{"annotations":{{{pair}}}}}}}}}"#)),
            _ => (Framing::Json, format!(r#"{{"apiVersion":"x.io/v1","status":{{{pair}}},"kind":"Thing"}}"#)),
        };
        let whole = run(&BUILTIN, framing, &[doc.as_bytes()]);
        let chunked = run(&BUILTIN, framing, &split(doc.as_bytes(), &cuts));
        prop_assert_eq!(&whole, &chunked);
        prop_assert_eq!(&whole.1, &None);
        let out = String::from_utf8_lossy(&whole.0);
        prop_assert!(!out.contains(&secret), "{} -> {}", doc, out);
        // Structure stays valid JSON.
        if framing == Framing::Json {
            prop_assert!(serde_json::from_slice::<serde_json::Value>(&whole.0).is_ok(), "{}", out);
        }
    }

    /// A ConfigMap `binaryData` value that is base64 of text holding a known token: replaced
    /// whole, in any chunking, with padding or not, JSON-escaped slashes or not.
    #[test]
    fn binary_data_tokens_never_come_out(
        token in "[A-Za-z0-9]{36}",
        lead in "[a-z :=\n]{0,12}",
        pad in any::<bool>(),
        escape_slash in any::<bool>(),
        cuts in prop::collection::vec(any::<Index>(), 0..5),
    ) {
        let token = format!("ghp_{token}");
        let mut enc = kubeleash_core_b64(format!("{lead}{token}").as_bytes());
        if !pad {
            enc = enc.trim_end_matches('=').to_string();
        }
        let value = if escape_slash { enc.replace('/', "\\/") } else { enc.clone() };
        let doc = format!(r#"{{"kind":"ConfigMap","apiVersion":"v1","binaryData":{{"blob":"{value}"}}}}"#);
        let whole = run(&BUILTIN, Framing::Json, &[doc.as_bytes()]);
        let chunked = run(&BUILTIN, Framing::Json, &split(doc.as_bytes(), &cuts));
        prop_assert_eq!(&whole, &chunked);
        let out = String::from_utf8_lossy(&whole.0);
        prop_assert!(out.contains(r#""blob":"W21hc2tlZF0=""#), "{} -> {}", doc, out);
    }
}

/// `text/plain` that is not a log (the API server's OpenAPI v3 discovery, its `404 page not
/// found`) is masked, never refused: as JSON when its first non-blank byte opens an object or
/// an array, so a JSON document labelled as text gets every structural mask; as text (the
/// detectors) otherwise. Chunk boundaries, the blank lead among them, change nothing.
#[test]
fn plain_text_is_masked_as_what_it_holds() {
    let masked = |target: &str, body: &str, cut: usize| {
        let req = classify("GET", target, &http::HeaderMap::new()).unwrap();
        let mut m = DEFAULT
            .masker(&req, Some("text/plain; charset=utf-8"), None)
            .unwrap();
        assert_eq!(m.framing(), kubeleash_core::mask::Framing::PlainText);
        let mut out = Vec::new();
        let (a, b) = body.as_bytes().split_at(cut.min(body.len()));
        m.feed_into(a, &mut out).unwrap();
        m.feed_into(b, &mut out).unwrap();
        m.finish_into(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let secret = "  \n{\"kind\":\"Secret\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"s\"},\"data\":{\"k\":\"c2VjcmV0LXZhbHVlLTE=\"}}";
    let discovery = r#"{"paths":{"api/v1":{"serverRelativeURL":"/openapi/v3/api/v1?hash=AB12"}}}"#;
    let text = "404 page not found\npassword=Pl41n-s3cret\n";
    for cut in 0..secret.len() {
        let out = masked("/api/v1/namespaces/dev/secrets/s", secret, cut);
        assert!(!out.contains("c2VjcmV0LXZhbHVlLTE="), "{cut}: {out}");
        assert!(out.starts_with("  \n{\"kind\":\"Secret\""), "{out}");
    }
    for cut in [0, 1, 7, discovery.len()] {
        assert_eq!(masked("/openapi/v3", discovery, cut), discovery);
    }
    for cut in [0, 3, 20, text.len()] {
        let out = masked("/does/not/exist", text, cut);
        assert!(out.starts_with("404 page not found\npassword="), "{out}");
        assert!(!out.contains("Pl41n-s3cret"), "{out}");
    }
    // Blanks alone stay what they are; an endless run of them is text past a bound.
    assert_eq!(masked("/x", " \n\n ", 2), " \n\n ");
    let long = " ".repeat(200 * 1024);
    assert_eq!(masked("/x", &long, 100 * 1024).len(), long.len());
}

/// A list, a Table and a watch event each have one place for an object. An object anywhere else
/// in them (an item that is an array, a row that is an array, an event's `object` that is an
/// array, a member beside `object`) is no shape the API server sends; a hostile upstream could
/// use it to carry a Secret past the masks that follow the expected shape. Every object there is
/// judged as one of unknown kind: every mask applies.
#[test]
fn objects_out_of_place_in_lists_tables_and_events_get_every_mask() {
    let secret =
        r#"{"kind":"Secret","apiVersion":"v1","data":{"password":"c2VjcmV0LXZhbHVlLTEyMw=="}}"#;
    let json_cases = [
        format!(r#"{{"kind":"SecretList","apiVersion":"v1","items":[[{secret}]]}}"#),
        format!(r#"{{"kind":"PodList","apiVersion":"v1","items":[[[{secret}]]]}}"#),
        format!(r#"{{"kind":"Table","apiVersion":"meta.k8s.io/v1","rows":[[{secret}]]}}"#),
        // A row's `object` in another shape or beside it, and column definitions holding one.
        format!(
            r#"{{"kind":"Table","apiVersion":"meta.k8s.io/v1","rows":[{{"cells":["a"],"object":[{secret}]}}]}}"#
        ),
        format!(
            r#"{{"kind":"Table","apiVersion":"meta.k8s.io/v1","rows":[{{"cells":["a"],"extra":{secret}}}]}}"#
        ),
        format!(
            r#"{{"kind":"Table","apiVersion":"meta.k8s.io/v1","columnDefinitions":[{{"name":"Name","format":"name","x":{secret}}},[{secret}]],"rows":[]}}"#
        ),
    ];
    for case in &json_cases {
        let out = mask_json(case);
        assert!(!out.contains("c2VjcmV0LXZhbHVlLTEyMw=="), "{case}\n{out}");
    }
    let watch_cases = [
        format!(r#"{{"type":"ADDED","object":[{secret}]}}"#),
        format!(
            r#"{{"type":"ADDED","object":{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"p"}}}},"extra":{secret}}}"#
        ),
        format!(
            r#"{{"type":"ADDED","extra":[[{secret}]],"object":{{"kind":"Pod","apiVersion":"v1"}}}}"#
        ),
    ];
    for case in &watch_cases {
        let line = format!("{case}\n");
        let (out, err) = run(&BUILTIN, Framing::WatchEvents, &[line.as_bytes()]);
        assert_eq!(err, None, "{case}");
        let out = String::from_utf8(out).unwrap();
        assert!(!out.contains("c2VjcmV0LXZhbHVlLTEyMw=="), "{case}\n{out}");
    }
    // The shapes the API server sends are unchanged: a list's items and an event's object are
    // judged as their kinds, nothing more is masked.
    let pod = r#"{"kind":"PodList","apiVersion":"v1","items":[{"metadata":{"name":"p","labels":{"type":"web"}}}]}"#;
    assert_eq!(mask_json(pod), pod);
}
