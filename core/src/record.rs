//! The record format: one JSON line per request, each carrying the hash of the line before, so
//! any edit, deletion or reordering is found; and its translation to Kubernetes audit events.
//!
//! A line is `{"hash":"<sha256>",` followed by the rest of the record, and the hash is the
//! SHA-256 of exactly those remaining bytes (with `{` in front). The record carries `prev`, the
//! previous line's hash, and `seq`. A log that ends cleanly ends with a record of kind `end`.
//!
//! ```
//! use kubeleash_core::record::{Chain, RecordBody, verify};
//!
//! let mut chain = Chain::new("session-1");
//! let mut log = String::new();
//! for _ in 0..3 {
//!     log.push_str(&chain.seal(RecordBody::default()));
//!     log.push('\n');
//! }
//! log.push_str(&chain.end("2026-11-27T00:00:00Z"));
//! log.push('\n');
//! assert!(verify(&log).problems.is_empty());
//! let tampered = log.replacen("\"seq\":1", "\"seq\":7", 1);
//! assert!(!verify(&tampered).problems.is_empty());
//! ```

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod signing;
pub use signing::{
    CHECKPOINT_AFTER, CHECKPOINT_EVERY, Checkpoint, KeyError, Opening, PublicKey, Signer,
    resume_state, statement,
};

use crate::policy::Identity;
use crate::request::Attributes;

/// The hash before the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The request as recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Request target as sent.
    pub target: String,
    /// Attributes, when the target was canonical.
    #[serde(default)]
    pub attributes: Option<Attributes>,
    /// Request content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// `dryRun=All`.
    #[serde(default)]
    pub dry_run: bool,
    /// `fieldManager`.
    #[serde(default)]
    pub field_manager: Option<String>,
    /// The upgrade asked for (`websocket`, `spdy`), if any.
    #[serde(default)]
    pub upgrade: Option<String>,
    /// The request body, masked with the same rules as responses.
    #[serde(default)]
    pub body: Option<String>,
    /// The agent's own reason for the request (its `X-Kubeleash-Reason` header), masked by
    /// the detectors. Written only when there is one, so records without it hash as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_reason: Option<String>,
}

/// A closed set of words a record uses, as an enum that serializes to the word (so the log's
/// text, and its hashes, are what they were when these were strings). A word this version does
/// not know (a newer kubeleash wrote it) reads as `Unknown` instead of failing the whole log.
macro_rules! record_words {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $word:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $word)] $variant,)+
            /// Not stated, or a word this version does not know.
            #[default]
            #[serde(other, rename = "unknown")]
            Unknown,
        }

        impl $name {
            /// The word, as the log spells it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                    $name::Unknown => "unknown",
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

record_words! {
    /// What a record is.
    RecordKind {
        /// A request and its decision (and its response, once there is one).
        Request => "request",
        /// A request starts waiting for a person's approval.
        Held => "held",
        /// The answer to a held request.
        Approval => "approval",
        /// A write or protocol switch, recorded durably before it is sent; its completion
        /// follows as a `request` record.
        Forwarded => "forwarded",
        /// A held request nobody answered in time, or an approval nobody came back for.
        Expired => "expired",
        /// The recorder shut down cleanly.
        End => "end",
        /// A signature over every line before it ([`Checkpoint`]); read apart from the others
        /// ([`Verification::checkpoints`]).
        Checkpoint => "checkpoint",
    }
}

record_words! {
    /// What kubeleash did with a request.
    Outcome {
        /// Sent to the API server.
        Forwarded => "forwarded",
        /// Refused: by the policy, a person, a limit or the masker.
        Refused => "refused",
        /// Let through in audit mode, whatever the decision.
        Audited => "audited",
        /// Waiting for a person.
        Held => "held",
        /// Approved by a person (or a grant one left) and sent.
        Approved => "approved",
        /// A held request nobody answered in time, or an approval nobody came back for.
        Expired => "expired",
        /// Answered by kubeleash itself and not sent: the agent's own access reviews, which
        /// the policy answers.
        Answered => "answered",
    }
}

record_words! {
    /// How a response reached the caller.
    Stream {
        /// Through the masker.
        Masked => "masked",
        /// Through the masker, with a pod log's `limitBytes` applied to the masked output (the
        /// record keeps the target the agent sent, with its limit).
        MaskedLimited => "masked, limitBytes applied after masking",
        /// An upgraded connection (exec, attach, port-forward), passed through after the 101.
        Passthrough => "passthrough",
        /// The masker stopped it.
        Refused => "refused",
        /// Written by kubeleash, not the API server (an access review's answer).
        Answered => "answered",
    }
}

/// The decision as recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedDecision {
    /// `allow`, `deny` or `approve`.
    pub effect: String,
    /// The deciding rule.
    #[serde(default)]
    pub rule: Option<String>,
    /// Why.
    pub reason: String,
    /// What kubeleash did.
    pub outcome: Outcome,
    /// The approval id, for held requests.
    #[serde(default)]
    pub approval_id: Option<String>,
    /// Who answered the approval.
    #[serde(default)]
    pub approver: Option<String>,
    /// The approver's reason.
    #[serde(default)]
    pub approver_reason: Option<String>,
    /// On the answer to a held request (approved, denied by a person, or `expired`): how long
    /// the request waited for it, in milliseconds, from its `held` record. The figure approval
    /// fatigue is read from (`kubeleash replay --approvals`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
    /// The request was resolved without asking anyone again: by the answer to an identical
    /// request already held (a retry in non-blocking mode, or an identical request while the
    /// first waited) or by a grant an earlier approval left.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub coalesced: bool,
    /// On an approval that the approver widened: the grant it left, as a policy fragment
    /// (`rule`, a policy rule that would allow the same requests) with its limits (`uses`,
    /// `expires`) and what the rule cannot say (`pinned`). Recorded in the chain before any
    /// request it covers goes out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<serde_json::Value>,
}

/// The response as recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedResponse {
    /// HTTP status.
    pub status: u16,
    /// Bytes delivered to the client.
    pub bytes: u64,
    /// From request to the end of the response, in milliseconds.
    pub duration_ms: u64,
    /// How it reached the caller.
    pub stream: Stream,
    /// The delivered (masked) body, when recording bodies is on; capped.
    #[serde(default)]
    pub body: Option<String>,
    /// Why the stream ended early, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// Everything a record says but its place in the chain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordBody {
    /// RFC 3339 time.
    pub time: String,
    /// What the record is.
    pub kind: RecordKind,
    /// Who sent the request.
    #[serde(default)]
    pub identity: Identity,
    /// The request.
    #[serde(default)]
    pub request: RecordedRequest,
    /// The decision.
    #[serde(default)]
    pub decision: RecordedDecision,
    /// The response, once there is one.
    #[serde(default)]
    pub response: Option<RecordedResponse>,
    /// On a `checkpoint` record: its signature. Written only there, so other records hash as
    /// before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

/// A record as read back: its chain fields and its body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    /// SHA-256 of the rest of the line.
    pub hash: String,
    /// Position in the log, from 0.
    pub seq: u64,
    /// The previous record's hash.
    pub prev: String,
    /// The recorder's session.
    pub session: String,
    /// The record itself.
    #[serde(flatten)]
    pub body: RecordBody,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Unsealed<'a> {
    seq: u64,
    prev: &'a str,
    session: &'a str,
    #[serde(flatten)]
    body: &'a RecordBody,
}

fn hex(d: &[u8]) -> String {
    // Two table look-ups per byte: the writer hexes every record's hash, and a `format!` per
    // byte cost more than the rest of sealing a record but the hash itself.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(d.len() * 2);
    for b in d {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The writer's side of the chain: numbers and links records.
#[derive(Debug, Clone)]
pub struct Chain {
    session: String,
    seq: u64,
    prev: String,
}

impl Chain {
    /// A new log.
    pub fn new(session: impl Into<String>) -> Self {
        Chain {
            session: session.into(),
            seq: 0,
            prev: GENESIS.to_string(),
        }
    }

    /// Continue an existing log after its last record.
    pub fn resume(session: impl Into<String>, next_seq: u64, prev: impl Into<String>) -> Self {
        Chain {
            session: session.into(),
            seq: next_seq,
            prev: prev.into(),
        }
    }

    /// The line (without newline) for this record, linked to the one before.
    pub fn seal(&mut self, body: RecordBody) -> String {
        let mut line = Vec::new();
        self.seal_into(&body, &mut line);
        // Only JSON text was written, and JSON text is UTF-8.
        String::from_utf8(line).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into())
    }

    /// Append this record's line (without newline) to `out`, linked to the one before: the
    /// writer's form of [`seal`](Chain::seal), which reuses one buffer for every record instead
    /// of building the line three times (the hashed text, the line, the write buffer).
    ///
    /// ```
    /// use kubeleash_core::record::{Chain, RecordBody, verify};
    ///
    /// let mut chain = Chain::new("s1");
    /// let mut log = Vec::new();
    /// chain.seal_into(&RecordBody::default(), &mut log);
    /// log.push(b'\n');
    /// let log = String::from_utf8(log).unwrap();
    /// assert!(verify(&log).problems.is_empty());
    /// ```
    pub fn seal_into(&mut self, body: &RecordBody, out: &mut Vec<u8>) {
        // `{"hash":"` + 64 hex digits + `",` and then the rest of the record, whose hash is
        // that of the record without its hash: `{` and the same rest. The record is written
        // with its `{` where the line's `,` goes, hashed from there, and the `,` put back.
        const HEAD: &[u8] = b"{\"hash\":\"";
        let start = out.len();
        out.extend_from_slice(HEAD);
        out.resize(start + HEAD.len() + 64 + 1, b'"');
        let rest = out.len();
        let unsealed = Unsealed {
            seq: self.seq,
            prev: &self.prev,
            session: &self.session,
            body,
        };
        if serde_json::to_writer(&mut *out, &unsealed).is_err() {
            // Serializing a record cannot fail (its maps have string keys); were it to, the
            // line stays a record that verification reports, never a torn one.
            out.truncate(rest);
            out.extend_from_slice(b"{}");
        }
        let hash = hex(&Sha256::digest(out.get(rest..).unwrap_or_default()));
        if let Some(slot) = out.get_mut(start + HEAD.len()..rest - 1) {
            slot.copy_from_slice(hash.as_bytes());
        }
        if let Some(brace) = out.get_mut(rest) {
            *brace = b',';
        }
        // A log never gets near the end of the numbers; were one to, it stops counting rather
        // than stopping the writer.
        self.seq = self.seq.saturating_add(1);
        self.prev = hash;
    }

    /// Append a checkpoint record (without newline) to `out`: `signer`'s signature over the
    /// hash of the line before it, so over every line before it ([`Signer`]). A resumed log's
    /// first checkpoint states what the recorder found ([`Opening`]; the default elsewhere).
    pub fn checkpoint(
        &mut self,
        signer: &Signer,
        time: &str,
        opening: &Opening,
        out: &mut Vec<u8>,
    ) {
        let signature = signer.sign(&statement(
            &self.session,
            self.seq,
            &self.prev,
            time,
            opening,
        ));
        let body = RecordBody {
            time: time.to_string(),
            kind: RecordKind::Checkpoint,
            checkpoint: Some(Checkpoint {
                key: signer.key_id().to_string(),
                signature,
                previous_key: opening.previous_key.clone(),
                unsigned_from: opening.unsigned_from,
                after_unclean_stop: opening.after_unclean_stop,
            }),
            ..Default::default()
        };
        self.seal_into(&body, out);
    }

    /// The closing record.
    pub fn end(&mut self, time: &str) -> String {
        self.seal(RecordBody {
            time: time.to_string(),
            kind: RecordKind::End,
            ..Default::default()
        })
    }
}

/// The result of checking a log.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    /// Records read, but the checkpoints.
    pub records: Vec<Record>,
    /// The checkpoint records, each with where it stands.
    pub checkpoints: Vec<Checkpointed>,
    /// With keys ([`verify_signed`]): the records (by `seq`) after the last checkpoint that
    /// verifies, which nothing signs yet. A recorder that is still running or stopped
    /// uncleanly leaves such a tail.
    pub unsigned: Option<std::ops::Range<u64>>,
    /// Chain breaks, in order: line number (1-based) and what is wrong. Empty when intact.
    pub problems: Vec<(usize, String)>,
    /// Notes that are not breaks: a torn last line, no closing record.
    pub warnings: Vec<String>,
    /// The log ends in a torn line or without a closing record: the recorder is still running,
    /// stopped uncleanly, or the log was cut.
    pub cut_short: bool,
    /// With keys: where a recorder resumed the log and vouched for less than a running one
    /// does: records it signed only then, or a session before it that stopped without a signed
    /// close (so records may be missing there). Anyone who could write the file in between
    /// could have changed them; `kubeleash replay --verify` fails on these unless told to
    /// accept them.
    pub resumed: Vec<String>,
    /// With keys: whether the records after the last signature ([`Verification::unsigned`])
    /// could be a running recorder's: no closing record among them, all of the last session,
    /// which had not closed before.
    pub unsigned_live: bool,
}

/// A checkpoint record as read back.
#[derive(Debug, Clone)]
pub struct Checkpointed {
    /// Its line (1-based).
    pub line: usize,
    /// How many of [`Verification::records`] come before it: those it signs.
    pub after: usize,
    /// The record.
    pub record: Record,
}

/// Check every link of a log, as [`verify`] does, and every checkpoint's signature against
/// `keys`: a checkpoint made by a key not among them, or whose signature does not fit what
/// came before it, is a problem, and so is a log without one. The records after the last
/// good checkpoint are left in [`Verification::unsigned`].
pub fn verify_signed(log: &str, keys: &[PublicKey]) -> Verification {
    let mut v = verify(log);
    signing::check(&mut v, keys);
    v
}

/// What anyone who can write a log can do after editing it: renumber the records and recompute
/// every line's hash and link, so that [`verify`] finds the chain intact again. Only a signature ([`verify_signed`])
/// tells such a log from the one written; the tests show that with this.
pub fn rehash(log: &str) -> String {
    let mut prev = GENESIS.to_string();
    let mut out = String::with_capacity(log.len());
    for (seq, line) in log.lines().enumerate() {
        let Ok(r) = serde_json::from_str::<Record>(line) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        // Written as the recorder writes it, so an untouched line comes out as it was.
        let mut chain = Chain::resume(r.session, seq as u64, prev);
        let mut sealed = Vec::new();
        chain.seal_into(&r.body, &mut sealed);
        out.push_str(&String::from_utf8_lossy(&sealed));
        out.push('\n');
        prev = chain.prev;
    }
    out
}

/// Check every link of a log and read its records. The first problem names the first record
/// that does not fit; reading goes on so every record can still be shown.
pub fn verify(log: &str) -> Verification {
    let mut v = Verification::default();
    let mut prev = GENESIS.to_string();
    let mut expect_seq = 0u64;
    let lines: Vec<&str> = log.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let last = i + 1 == lines.len();
        if line.is_empty() && last {
            // What follows the last newline.
            continue;
        }
        if line.trim().is_empty() {
            // The recorder writes no blank line: one is an edit (and would hide a cut).
            v.problems
                .push((n, "the line is blank: a record log has none".into()));
            continue;
        }
        let torn_tail = last;
        let Some(rest) = line
            .strip_prefix("{\"hash\":\"")
            .and_then(|r| r.get(64..))
            .and_then(|r| r.strip_prefix("\","))
        else {
            if torn_tail {
                v.cut_short = true;
                v.warnings.push(format!("line {n} is torn (the recorder stopped while writing it); it is not part of the log"));
            } else {
                v.problems
                    .push((n, "the line does not start with its hash".into()));
            }
            continue;
        };
        let claimed = &line[9..73];
        let body = format!("{{{rest}");
        let actual = hex(&Sha256::digest(body.as_bytes()));
        let record: Result<Record, _> = serde_json::from_str(line);
        let Ok(record) = record else {
            if torn_tail {
                v.cut_short = true;
                v.warnings.push(format!("line {n} is torn (the recorder stopped while writing it); it is not part of the log"));
            } else {
                v.problems.push((n, "the line is not a record".into()));
            }
            continue;
        };
        if actual != claimed {
            v.problems.push((
                n,
                format!(
                    "record {} was edited: its content does not match its hash",
                    record.seq
                ),
            ));
        } else if record.prev != prev {
            v.problems.push((
                n,
                format!("record {} does not follow the record before it: a record was deleted, inserted or moved", record.seq),
            ));
        } else if record.seq != expect_seq {
            v.problems.push((
                n,
                format!("record {} should be record {expect_seq}", record.seq),
            ));
        }
        prev = claimed.to_string();
        let Some(next) = record.seq.checked_add(1) else {
            v.problems.push((
                n,
                "the record's seq is past the largest a log can hold".into(),
            ));
            continue;
        };
        expect_seq = next;
        if record.body.kind == RecordKind::Checkpoint {
            v.checkpoints.push(Checkpointed {
                line: n,
                after: v.records.len(),
                record,
            });
        } else {
            v.records.push(record);
        }
    }
    if v.records
        .last()
        .is_none_or(|r| r.body.kind != RecordKind::End)
    {
        v.cut_short = true;
        v.warnings.push("the log has no closing record: the recorder is still running, crashed, or the log was cut short".into());
    }
    v
}

/// A record as a Kubernetes audit event (`audit.k8s.io/v1` `Event`), for existing audit tooling.
pub fn audit_event(r: &Record) -> serde_json::Value {
    use serde_json::json;
    let a = r.body.request.attributes.clone().unwrap_or_default();
    let object_ref = a.resource_request.then(|| {
        json!({
            "resource": a.resource,
            "namespace": a.namespace,
            "name": a.name,
            "apiGroup": a.api_group,
            "apiVersion": a.api_version,
            "subresource": a.subresource,
        })
    });
    let d = &r.body.decision;
    let allowed = matches!(
        d.outcome,
        Outcome::Forwarded | Outcome::Approved | Outcome::Audited
    );
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "authorization.k8s.io/decision".into(),
        json!(if allowed { "allow" } else { "forbid" }),
    );
    annotations.insert("authorization.k8s.io/reason".into(), json!(d.reason));
    annotations.insert("kubeleash.dev/effect".into(), json!(d.effect));
    annotations.insert("kubeleash.dev/outcome".into(), json!(d.outcome));
    annotations.insert("kubeleash.dev/hash".into(), json!(r.hash));
    if let Some(rule) = &d.rule {
        annotations.insert("kubeleash.dev/rule".into(), json!(rule));
    }
    if let Some(id) = &d.approval_id {
        annotations.insert("kubeleash.dev/approval-id".into(), json!(id));
    }
    if let Some(by) = &d.approver {
        annotations.insert("kubeleash.dev/approver".into(), json!(by));
    }
    let body = r
        .body
        .request
        .body
        .as_deref()
        .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok());
    let mut e = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": if body.is_some() { "Request" } else { "Metadata" },
        "auditID": format!("{}-{}", r.session, r.seq),
        // A `forwarded` record is written before the request is sent (writes are recorded
        // before they reach the server); its completion follows as a record of its own.
        "stage": if r.body.response.is_some() {
            "ResponseComplete"
        } else if r.body.kind == RecordKind::Forwarded {
            "RequestReceived"
        } else {
            "ResponseStarted"
        },
        "requestURI": r.body.request.target,
        "verb": a.verb,
        "user": {"username": r.body.identity.user, "groups": r.body.identity.groups},
        "requestReceivedTimestamp": r.body.time,
        "stageTimestamp": r.body.time,
        "annotations": annotations,
    });
    if let Some(o) = object_ref {
        e["objectRef"] = o;
    }
    if let Some(resp) = &r.body.response {
        e["responseStatus"] = json!({"metadata": {}, "code": resp.status});
    }
    if let Some(b) = body {
        e["requestObject"] = b;
    }
    e
}

/// RFC 3339 UTC time with milliseconds, from a time since the Unix epoch.
pub fn rfc3339(since_epoch: std::time::Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::civil_date::from_days(days as i64);
    let (h, min, s, ms) = (
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_millis(),
    );
    let Ok(year @ 0..=9999) = u16::try_from(y) else {
        return format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z");
    };
    // Every record is stamped on the request path, and `format!` cost 3,400 instructions
    // there, a third of building the record: the digits go into a fixed template instead.
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            if let Some(b) = out.get_mut(i) {
                *b = b'0' + (v % 10) as u8;
            }
            v /= 10;
        }
    };
    put(0, 4, u64::from(year));
    put(5, 2, m.unsigned_abs());
    put(8, 2, d.unsigned_abs());
    put(11, 2, h);
    put(14, 2, min);
    put(17, 2, s);
    put(20, 3, u64::from(ms));
    out.iter().map(|&b| char::from(b)).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn log(n: usize) -> String {
        let mut c = Chain::new("s");
        let mut out = String::new();
        for i in 0..n {
            let body = RecordBody {
                time: format!("t{i}"),
                kind: RecordKind::Request,
                ..Default::default()
            };
            out.push_str(&c.seal(body));
            out.push('\n');
        }
        out.push_str(&c.end("t-end"));
        out.push('\n');
        out
    }

    #[test]
    fn record_words_read_and_write_as_the_log_spells_them() {
        for k in [
            RecordKind::Request,
            RecordKind::Held,
            RecordKind::Approval,
            RecordKind::Forwarded,
            RecordKind::Expired,
            RecordKind::End,
        ] {
            let text = serde_json::to_string(&k).unwrap();
            assert_eq!(text, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<RecordKind>(&text).unwrap(), k);
        }
        assert_eq!(
            serde_json::to_string(&Stream::MaskedLimited).unwrap(),
            "\"masked, limitBytes applied after masking\""
        );
        assert_eq!(Outcome::Approved, "approved");
        // A word a newer kubeleash may write does not make the log unreadable.
        let r: RecordedResponse = serde_json::from_str(
            r#"{"status":200,"bytes":1,"durationMs":1,"stream":"<script>","body":null,"error":null}"#,
        )
        .unwrap();
        assert_eq!(r.stream, Stream::Unknown);
        assert!(serde_json::from_str::<Outcome>("\"teleported\"").unwrap() == Outcome::Unknown);
        // A record sealed with the enums hashes as the strings did: the log is unchanged.
        let mut c = Chain::new("s");
        let line = c.seal(RecordBody {
            time: "t".into(),
            kind: RecordKind::End,
            ..Default::default()
        });
        assert!(line.contains(r#""kind":"end""#), "{line}");
        assert!(verify(&format!("{line}\n")).problems.is_empty());
    }

    #[test]
    fn intact_logs_verify() {
        let v = verify(&log(5));
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
        assert_eq!(v.records.len(), 6);
    }

    /// Lines as the recorder wrote them before `seal_into` (by serializing to a string, hashing
    /// it and building the line around it), taken from that code: the one-buffer form must
    /// write the same bytes, appended after whatever the buffer holds.
    #[test]
    fn sealed_lines_are_byte_for_byte_those_of_the_earlier_writer() {
        const FIRST: &str = r#"{"hash":"599946713efad8a1301287a5d9ae017e3df19df57c179bc6accd4a8f7c2f2c37","seq":0,"prev":"0000000000000000000000000000000000000000000000000000000000000000","session":"s1","time":"2026-12-05T00:00:00.000Z","kind":"unknown","identity":{"user":"","groups":[]},"request":{"method":"","target":"","attributes":null,"contentType":null,"dryRun":false,"fieldManager":null,"upgrade":null,"body":null},"decision":{"effect":"deny","rule":null,"reason":"rule \"r\" says \u001b[31m\tno\n","outcome":"unknown","approvalId":null,"approver":null,"approverReason":null},"response":null}"#;
        const SECOND: &str = r#"{"hash":"189c390ab56a174e8492c8668945855748d799ab5953df89f35bb5753528b89b","seq":1,"prev":"599946713efad8a1301287a5d9ae017e3df19df57c179bc6accd4a8f7c2f2c37","session":"s1","time":"2026-12-05T00:00:00.000Z","kind":"unknown","identity":{"user":"","groups":[]},"request":{"method":"","target":"","attributes":null,"contentType":null,"dryRun":false,"fieldManager":null,"upgrade":null,"body":null},"decision":{"effect":"deny","rule":null,"reason":"rule \"r\" says \u001b[31m\tno\n","outcome":"unknown","approvalId":null,"approver":null,"approverReason":null},"response":null}"#;
        let body = RecordBody {
            time: "2026-12-05T00:00:00.000Z".into(),
            decision: RecordedDecision {
                effect: "deny".into(),
                reason: "rule \"r\" says \u{1b}[31m\tno\n".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut chain = Chain::new("s1");
        let mut buf = b"earlier bytes stay\n".to_vec();
        chain.seal_into(&body, &mut buf);
        buf.push(b'\n');
        chain.seal_into(&body, &mut buf);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            format!("earlier bytes stay\n{FIRST}\n{SECOND}")
        );
        let mut chain = Chain::new("s1");
        assert_eq!(chain.seal(body.clone()), FIRST);
        assert_eq!(chain.seal(body), SECOND);
        let v = verify(&format!("{FIRST}\n{SECOND}\n"));
        assert!(v.problems.is_empty(), "{:?}", v.problems);
    }

    #[test]
    fn edits_deletions_reorders_and_tears_are_found() {
        let l = log(5);
        let lines: Vec<&str> = l.lines().collect();
        let edited = l.replacen("\"time\":\"t2\"", "\"time\":\"t9\"", 1);
        assert_eq!(verify(&edited).problems.first().map(|p| p.0), Some(3));
        let deleted: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 2)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        assert_eq!(verify(&deleted).problems.first().map(|p| p.0), Some(3));
        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        let swapped: String = swapped.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(verify(&swapped).problems.first().map(|p| p.0), Some(2));
        let torn = &l[..l.len() - 20];
        let v = verify(torn);
        assert!(
            v.problems.is_empty(),
            "a torn last line is not a break: {:?}",
            v.problems
        );
        assert!(v.warnings.iter().any(|w| w.contains("torn")));
        let cut: String = lines[..3].iter().map(|l| format!("{l}\n")).collect();
        let v = verify(&cut);
        assert!(v.problems.is_empty());
        assert!(v.warnings.iter().any(|w| w.contains("no closing record")));
        let rehashed_tail = l.replacen("\"seq\":0", "\"seq\":0 ", 1);
        assert!(
            !verify(&rehashed_tail).problems.is_empty(),
            "even whitespace is covered by the hash"
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(
            rfc3339(std::time::Duration::from_secs(0)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(std::time::Duration::from_millis(1_795_737_600_123)),
            "2026-11-27T00:00:00.123Z"
        );
        assert_eq!(
            rfc3339(std::time::Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339(std::time::Duration::from_millis(1_796_513_599_009)),
            "2026-12-05T23:33:19.009Z"
        );
        // Past the four-digit years the template holds: still a date, never a panic.
        assert_eq!(
            rfc3339(std::time::Duration::from_secs(253_402_300_800)),
            "10000-01-01T00:00:00.000Z"
        );
        // The template against `format!`, across the four-digit years.
        for i in 0..20_000u64 {
            let at = std::time::Duration::from_millis(i * 12_670_006_277 % 253_402_300_800_000);
            let secs = at.as_secs();
            let (y, m, d) = crate::civil_date::from_days((secs / 86_400) as i64);
            let rem = secs % 86_400;
            let want = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                at.subsec_millis()
            );
            assert_eq!(rfc3339(at), want);
        }
    }
}
