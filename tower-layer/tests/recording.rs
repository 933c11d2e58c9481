//! Recording through the layer: every request leaves a record, the chain verifies, no secret
//! value is written, and tampering is found.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::client::ClientBuilder;
use kube::{Api, Client};
use kubeleash_core::policy::{Identity, Policy};
use kubeleash_core::record::verify;
use kubeleash_sandbox::{Sandbox, Seed};
use kubeleash_tower::{
    Answer, ApprovalRequest, Approver, JsonlRecorder, KubeleashLayer, Recorder, RecorderOptions,
};

const POLICY: &str = r#"
apiVersion: kubeleash.dev/v1alpha1
kind: Policy
spec:
  rules:
    - {name: read-dev, effect: allow, verbs: [get, list, watch], apiGroups: [""], resources: [secrets], namespaces: [dev]}
    - {name: create-secrets, effect: approve, verbs: [create], apiGroups: [""], resources: [secrets], namespaces: [dev]}
    - {name: protect-prod, effect: deny, verbs: [delete], apiGroups: [""], resources: [namespaces], names: [prod]}
"#;

struct Yes;

#[async_trait::async_trait]
impl Approver for Yes {
    async fn approve(&self, _r: ApprovalRequest) -> Answer {
        Answer::Approve {
            by: "alice".into(),
            window: None,
        }
    }
}

/// A fresh directory for one test (named `test`, with this process's id) and the path of a log
/// file `file` in it, not yet there.
fn fresh_log(test: &str, file: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(file);
    let _ = std::fs::remove_file(&path);
    (dir, path)
}

/// A recorder shared between the layer and the test, so the test can close it.
#[derive(Clone)]
struct Shared(Arc<JsonlRecorder>);

impl Recorder for Shared {
    fn record(&self, r: kubeleash_tower::RecordBody) -> Result<(), kubeleash_tower::RecordError> {
        self.0.record(r)
    }
    fn record_durable(&self, r: kubeleash_tower::RecordBody) -> kubeleash_tower::Durable<'_> {
        self.0.record_durable(r)
    }
    fn body_cap(&self) -> Option<usize> {
        self.0.body_cap()
    }
}

#[tokio::test]
async fn a_session_is_recorded_verifiably_with_no_secret_in_it() {
    let (dir, path) = fresh_log("kubeleash-rec", "session.jsonl");
    let recorder = Shared(Arc::new(
        JsonlRecorder::open(
            &path,
            RecorderOptions {
                body_cap: Some(64 * 1024),
                ..Default::default()
            },
        )
        .unwrap(),
    ));
    let sandbox = Sandbox::start("127.0.0.1:0".parse().unwrap(), Seed::Default)
        .await
        .unwrap();
    let layer = KubeleashLayer::new(Policy::from_yaml(POLICY).unwrap())
        .identity(Identity::new("agent-1", ["ai-agents"]))
        .approver(Yes)
        .recorder(recorder.clone());
    let client: Client = ClientBuilder::try_from(kube::Config::new(sandbox.url().parse().unwrap()))
        .unwrap()
        .with_layer(&layer)
        .build();

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "dev");
    let listed = secrets.list(&ListParams::default()).await.unwrap();
    let s: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "made-by-agent"}, "stringData": {"password": "correct-horse-battery-staple"}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let ns: Api<Namespace> = Api::all(client);
    assert!(ns.delete("prod", &DeleteParams::default()).await.is_err());
    drop(layer);
    tokio::time::sleep(Duration::from_millis(50)).await;
    recorder.0.close();
    sandbox.shutdown().await;

    let log = std::fs::read_to_string(&path).unwrap();
    let v = verify(&log);
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    let kinds: Vec<&str> = v.records.iter().map(|r| r.body.kind.as_str()).collect();
    assert_eq!(
        kinds,
        // A write's `forwarded` record is on disk before it is sent.
        [
            "request",
            "held",
            "approval",
            "forwarded",
            "request",
            "request",
            "end"
        ],
        "{log}"
    );
    assert_eq!(v.records[3].body.request, v.records[4].body.request);
    assert!(v.records[3].body.response.is_none());
    let create = &v.records[4];
    assert_eq!(create.body.decision.outcome, "approved");
    assert_eq!(create.body.decision.approver.as_deref(), Some("alice"));
    assert!(
        create
            .body
            .request
            .body
            .as_deref()
            .unwrap_or_default()
            .contains("made-by-agent")
    );
    let refused = &v.records[5];
    assert_eq!(refused.body.decision.outcome, "refused");
    assert_eq!(refused.body.response.as_ref().map(|r| r.status), Some(403));
    let list = &v.records[0];
    assert!(list.body.response.as_ref().unwrap().bytes > 0);

    // No secret value, in any encoding: not what the agent sent, not what the server holds.
    let mut secrets_seen: Vec<String> = vec!["correct-horse-battery-staple".into()];
    for s in &listed.items {
        for v in s.data.clone().unwrap_or_default().values() {
            assert_eq!(v.0, b"[masked]");
        }
    }
    secrets_seen.push("Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5LXN0YXBsZQ==".into());
    for secret in &secrets_seen {
        assert!(
            !log.contains(secret.as_str()),
            "the record holds a secret: {secret}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_reopened_log_continues_the_chain_and_a_torn_line_is_cut() {
    let (dir, path) = fresh_log("kubeleash-rec2", "log.jsonl");
    let one = |kind: kubeleash_core::record::RecordKind| kubeleash_tower::RecordBody {
        time: kubeleash_tower::now(),
        kind,
        ..Default::default()
    };
    {
        let r = JsonlRecorder::open(&path, RecorderOptions::default()).unwrap();
        r.record(one(kubeleash_core::record::RecordKind::Request))
            .unwrap();
        r.record_durable(one(kubeleash_core::record::RecordKind::Request))
            .await
            .unwrap();
    }
    // A crash in the middle of a write.
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"hash\":\"abc");
    std::fs::write(&path, &text).unwrap();
    assert!(verify(&text).warnings.iter().any(|w| w.contains("torn")));
    {
        let r = JsonlRecorder::open(&path, RecorderOptions::default()).unwrap();
        r.record(one(kubeleash_core::record::RecordKind::Request))
            .unwrap();
    }
    let log = std::fs::read_to_string(&path).unwrap();
    let v = verify(&log);
    assert!(v.problems.is_empty(), "{:?}\n{log}", v.problems);
    assert_eq!(
        v.records.len(),
        5,
        "two records, an end, one more, another end"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_record_file_is_the_operators_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("kubeleash-rec-mode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for format in [
        kubeleash_tower::Format::Chained,
        kubeleash_tower::Format::Audit,
    ] {
        let path = dir.join(format!("{format:?}.jsonl"));
        let _ = std::fs::remove_file(&path);
        let r = JsonlRecorder::open(
            &path,
            RecorderOptions {
                format,
                ..Default::default()
            },
        )
        .unwrap();
        r.close();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{format:?}: {mode:o}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The recorder's invariants under contention, with a queue small enough that admission waits
/// and batches fill while the writer dwells: every record is written exactly once; each
/// sender's records in the order it sent them; a durable record is in the file before its
/// acknowledgement; and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_senders_at_once_lose_nothing_reorder_nothing_and_durable_means_written() {
    const SENDERS: usize = 64;
    const EACH: usize = 150;
    let (dir, path) = fresh_log("kubeleash-rec-many", "session.jsonl");
    let recorder = Arc::new(
        JsonlRecorder::open(
            &path,
            RecorderOptions {
                queue: 16,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let mut tasks = Vec::new();
    for s in 0..SENDERS {
        let recorder = Arc::clone(&recorder);
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            // (target, the file's length when its acknowledgement came) for durable ones.
            let mut acked = Vec::new();
            for i in 0..EACH {
                recorder.admit().await.unwrap();
                let body = kubeleash_tower::RecordBody {
                    time: kubeleash_tower::now(),
                    request: kubeleash_core::record::RecordedRequest {
                        method: "GET".into(),
                        target: format!("/t/{s}/{i}"),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                // Every seventh waits for its record, as a refusal or a write does.
                if (s + i) % 7 == 0 {
                    recorder.record_durable(body).await.unwrap();
                    let len = std::fs::metadata(&path).unwrap().len();
                    acked.push((format!("/t/{s}/{i}"), len));
                } else {
                    recorder.record(body).unwrap();
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let closing = Arc::clone(&recorder);
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .unwrap();
    let log = std::fs::read_to_string(&path).unwrap();
    let v = verify(&log);
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    assert_eq!(
        v.records.len(),
        SENDERS * EACH + 1,
        "every record and the end, once"
    );
    // Where each record's line ends in the file.
    let mut end_of = std::collections::HashMap::new();
    let mut offset = 0u64;
    for (line, r) in log.lines().zip(&v.records) {
        offset += line.len() as u64 + 1;
        assert!(
            end_of
                .insert(r.body.request.target.clone(), offset)
                .is_none()
                || r.body.request.target.is_empty(),
            "written twice: {}",
            r.body.request.target
        );
    }
    let mut next = vec![0usize; SENDERS];
    for r in &v.records {
        let Some((s, i)) = r
            .body
            .request
            .target
            .strip_prefix("/t/")
            .and_then(|t| t.split_once('/'))
        else {
            continue;
        };
        let (s, i): (usize, usize) = (s.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[s], "sender {s}'s records out of order");
        next[s] += 1;
    }
    for (target, len) in acked {
        assert!(
            end_of[&target] <= len,
            "{target} was acknowledged before it was in the file ({} > {len})",
            end_of[&target]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Recorded bodies of hostile bytes (control characters escape to six times their size) are
/// written as a batch grows, and every record still lands whole and chained.
#[tokio::test]
async fn a_batch_of_large_escaped_bodies_is_written_whole() {
    let (dir, path) = fresh_log("kubeleash-rec-large", "session.jsonl");
    let recorder = JsonlRecorder::open(&path, RecorderOptions::default()).unwrap();
    let hostile: String = (0..100_000u32)
        .map(|i| char::from(u8::try_from(i % 32).unwrap()))
        .collect();
    for i in 0..12 {
        recorder
            .record(kubeleash_tower::RecordBody {
                request: kubeleash_core::record::RecordedRequest {
                    target: format!("/big/{i}"),
                    ..Default::default()
                },
                response: Some(kubeleash_core::record::RecordedResponse {
                    body: Some(hostile.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .unwrap();
    }
    recorder.close();
    let log = std::fs::read_to_string(&path).unwrap();
    let v = verify(&log);
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.records.len(), 13);
    for (i, r) in v.records.iter().take(12).enumerate() {
        assert_eq!(r.body.request.target, format!("/big/{i}"));
        assert_eq!(
            r.body.response.as_ref().unwrap().body.as_deref(),
            Some(&*hostile)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A signed recorder: a checkpoint every `CHECKPOINT_EVERY` records and at close; resumed
/// with another key, the rotation is the first thing written; resumed over records a crash left
/// unsigned, the first checkpoint says which; and every state verifies with the right keys
/// only.
#[tokio::test]
async fn a_signed_log_is_checkpointed_rotated_and_resumed_on_record() {
    use kubeleash_core::record::{CHECKPOINT_EVERY, PublicKey, RecordKind, Signer, verify_signed};
    let (dir, path) = fresh_log("kubeleash-rec-signed", "session.jsonl");
    let one = || kubeleash_tower::RecordBody {
        time: kubeleash_tower::now(),
        kind: RecordKind::Request,
        ..Default::default()
    };
    let key = |s: &Signer| PublicKey::from_pem(&s.public_pem()).unwrap();
    let open = |signer: &Arc<Signer>| {
        JsonlRecorder::open(
            &path,
            RecorderOptions {
                signer: Some(Arc::clone(signer)),
                ..Default::default()
            },
        )
        .unwrap()
    };
    let a = Arc::new(Signer::generate().unwrap());
    let n = usize::try_from(CHECKPOINT_EVERY).unwrap() * 2 + 10;
    let r = open(&a);
    for _ in 0..n {
        r.record(one()).unwrap();
    }
    r.close();
    let log = std::fs::read_to_string(&path).unwrap();
    let v = verify_signed(&log, &[key(&a)]);
    assert!(
        v.problems.is_empty() && v.unsigned.is_none() && v.warnings.is_empty(),
        "{:?} {:?}",
        v.problems,
        v.warnings
    );
    assert_eq!(v.records.len(), n + 1, "the records and the end");
    assert_eq!(v.checkpoints.len(), 3, "two for the count, one at close");
    assert_eq!(v.checkpoints[0].after, 256);

    // Another key takes over the same log: the rotation is recorded before anything else.
    let b = Arc::new(Signer::generate().unwrap());
    let r = open(&b);
    r.record(one()).unwrap();
    r.close();
    let log = std::fs::read_to_string(&path).unwrap();
    let v = verify_signed(&log, &[key(&a), key(&b)]);
    assert!(
        v.problems.is_empty() && v.unsigned.is_none(),
        "{:?}",
        v.problems
    );
    let rotation = &v.checkpoints[3];
    assert_eq!(rotation.after, n + 1, "right after what `a` signed");
    let c = rotation.record.body.checkpoint.as_ref().unwrap();
    assert_eq!(
        (c.key.as_str(), c.previous_key.as_deref()),
        (b.key_id(), Some(a.key_id()))
    );
    assert!(
        v.warnings.iter().any(|w| w.contains("rotated")),
        "{:?}",
        v.warnings
    );
    assert!(
        !verify_signed(&log, &[key(&b)]).problems.is_empty(),
        "`b` does not vouch for `a`"
    );

    // A crash: records appended that no checkpoint follows. The next recorder signs them at
    // once, and says they were signed late.
    let mut text = log.clone();
    let last: kubeleash_core::record::Record =
        serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let mut chain = kubeleash_core::record::Chain::resume("crashed", last.seq + 1, last.hash);
    for _ in 0..3 {
        text.push_str(&chain.seal(one()));
        text.push('\n');
    }
    std::fs::write(&path, &text).unwrap();
    let first_unsigned = last.seq + 1;
    let r = open(&b);
    r.close();
    let log = std::fs::read_to_string(&path).unwrap();
    let v = verify_signed(&log, &[key(&a), key(&b)]);
    assert!(
        v.problems.is_empty() && v.unsigned.is_none(),
        "{:?}",
        v.problems
    );
    let late = v
        .checkpoints
        .iter()
        .find_map(|c| {
            c.record
                .body
                .checkpoint
                .as_ref()
                .and_then(|c| c.unsigned_from)
        })
        .unwrap();
    assert_eq!(late, first_unsigned);
    assert!(
        v.resumed
            .iter()
            .any(|w| w.contains(&format!("records {first_unsigned} to"))
                && w.contains("signed only when a recorder resumed")),
        "{:?}",
        v.resumed
    );
    assert!(
        v.resumed
            .iter()
            .any(|w| w.contains("stopped without a signed close")),
        "{:?}",
        v.resumed
    );

    // Cut back to a checkpoint in the middle of a session (what a crash right after one also
    // leaves): the next recorder says the session before it did not close.
    let lines: Vec<&str> = log.lines().collect();
    let mid = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"checkpoint\""))
        .unwrap();
    std::fs::write(
        &path,
        lines[..=mid]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    open(&a).close();
    let v = verify_signed(&std::fs::read_to_string(&path).unwrap(), &[key(&a)]);
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    assert_eq!(v.resumed.len(), 1, "{:?}", v.resumed);
    assert!(
        v.resumed[0].contains("stopped without a signed close"),
        "{:?}",
        v.resumed
    );

    // A log the recorder cannot vouch for is left alone: an edit after the last checkpoint
    // with the hashes recomputed is signed over by nothing, but an edit before it, or a
    // checkpoint that does not verify with the key it names, makes the recorder refuse.
    let text = std::fs::read_to_string(&path).unwrap();
    let forged = kubeleash_core::record::rehash(&text.replacen(
        "\"kind\":\"request\"",
        "\"kind\":\"held\"",
        1,
    ));
    std::fs::write(&path, &forged).unwrap();
    let e = JsonlRecorder::open(
        &path,
        RecorderOptions {
            signer: Some(Arc::clone(&a)),
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(
        e.to_string().contains("the record does not verify")
            && e.to_string().contains("will not sign on top of it"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        forged,
        "left as it was"
    );

    // Audit events are not chained: a signer for them is refused, not ignored.
    let e = JsonlRecorder::open(
        dir.join("audit.jsonl"),
        RecorderOptions {
            format: kubeleash_tower::Format::Audit,
            signer: Some(a),
            ..Default::default()
        },
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("cannot be signed"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A record waits at most `CHECKPOINT_AFTER` for a signature, though nothing else is written.
#[test]
fn an_idle_signed_log_is_signed_within_a_second() {
    use kubeleash_core::record::{CHECKPOINT_AFTER, PublicKey, RecordKind, Signer, verify_signed};
    let (dir, path) = fresh_log("kubeleash-rec-idle", "session.jsonl");
    let signer = Arc::new(Signer::generate().unwrap());
    let r = JsonlRecorder::open(
        &path,
        RecorderOptions {
            signer: Some(Arc::clone(&signer)),
            ..Default::default()
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    r.record(kubeleash_tower::RecordBody {
        time: kubeleash_tower::now(),
        kind: RecordKind::Request,
        ..Default::default()
    })
    .unwrap();
    let key = PublicKey::from_pem(&signer.public_pem()).unwrap();
    loop {
        let v = verify_signed(
            &std::fs::read_to_string(&path).unwrap(),
            std::slice::from_ref(&key),
        );
        if v.unsigned.is_none() && !v.checkpoints.is_empty() {
            assert!(v.problems.is_empty(), "{:?}", v.problems);
            break;
        }
        // Generous for a loaded machine; the writer aims at one second.
        assert!(started.elapsed() < Duration::from_secs(20), "never signed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        started.elapsed() >= CHECKPOINT_AFTER,
        "not before it is due: {:?}",
        started.elapsed()
    );
    r.close();
    let _ = std::fs::remove_dir_all(&dir);
}
