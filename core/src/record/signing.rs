//! Signed checkpoints: what makes a record log verifiable by someone who does not trust the
//! machine it was written on.
//!
//! The chain of hashes alone finds an edit only when the editor does not recompute the hashes
//! after it; whoever can write the file can. So the recorder holds an Ed25519 key and, every
//! [`CHECKPOINT_EVERY`] records, at most [`CHECKPOINT_AFTER`] after a record was written, at
//! close and when it resumes a log, appends a `checkpoint` record that signs the hash of the
//! line before it. That hash covers every earlier line, so a rewrite, an insertion, a deletion
//! or a splice before a checkpoint changes what it would have to sign, and cannot be made to
//! verify without the private key.
//!
//! What one checkpoint signs is [`statement`]: a fixed label (so the signature cannot be taken
//! for one over anything else), the log's session, the checkpoint's own position, the hash it
//! follows and its time, and the two facts it records: the key it replaces (a rotation) and the first
//! record it signed only on resuming a log that ended without a signature.
//!
//! What the file alone cannot show: records written after the last checkpoint (a recorder still
//! running, or one that stopped uncleanly, leaves such a tail: [`super::Verification::unsigned`]),
//! a log cut back to an earlier clean close, or the whole file swapped for another log the same
//! key signed. Those are found against checkpoints shipped elsewhere as they were made.
//!
//! ```
//! use kubeleash_core::record::{Chain, RecordBody, Signer, PublicKey, verify_signed};
//!
//! let signer = Signer::generate().unwrap();
//! let public = PublicKey::from_pem(&signer.public_pem()).unwrap();
//! let mut chain = Chain::new("s1");
//! let mut log = Vec::new();
//! chain.seal_into(&RecordBody::default(), &mut log);
//! log.push(b'\n');
//! log.extend(chain.end("2026-12-06T00:00:00Z").bytes());
//! log.push(b'\n');
//! chain.checkpoint(&signer, "2026-12-06T00:00:00Z", &Default::default(), &mut log);
//! log.push(b'\n');
//! let log = String::from_utf8(log).unwrap();
//! let v = verify_signed(&log, &[public.clone()]);
//! assert!(v.problems.is_empty() && v.unsigned.is_none());
//! // The first record rewritten, every hash after it recomputed: the signature no longer fits.
//! let forged = kubeleash_core::record::rehash(&log.replacen("\"time\":\"\"", "\"time\":\"x\"", 1));
//! assert!(kubeleash_core::record::verify(&forged).problems.is_empty());
//! assert!(!verify_signed(&forged, &[public]).problems.is_empty());
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer as _};
use serde::{Deserialize, Serialize};

use super::{Record, RecordKind, Verification};

/// A checkpoint is written once this many records follow the last one.
pub const CHECKPOINT_EVERY: u64 = 256;

/// A record waits at most this long for a checkpoint to sign it.
pub const CHECKPOINT_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// What was wrong with a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The system's random source failed.
    #[error("cannot make a signing key: the system's random source failed ({0})")]
    Random(String),
    /// Not a PKCS#8 PEM Ed25519 private key.
    #[error(
        "not an Ed25519 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`): {0}; make one with `openssl genpkey -algorithm ed25519`, or name a file that does not exist and kubeleash makes it"
    )]
    Private(String),
    /// Not a PEM Ed25519 public key.
    #[error(
        "not an Ed25519 public key in PEM (`-----BEGIN PUBLIC KEY-----`): {0}; use the `.pub` file kubeleash wrote beside the signing key"
    )]
    Public(String),
}

/// The recorder's signing key (the private half never leaves this value but through
/// [`Signer::private_pem`], which the key's owner writes to a file only it can read).
pub struct Signer {
    key: ed25519_dalek::SigningKey,
    id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private half, whatever is printed.
        f.debug_struct("Signer").field("key", &self.id).finish()
    }
}

impl Signer {
    /// A new key from the system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_key(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// A key from its PKCS#8 PEM text (what [`Signer::private_pem`] and `openssl genpkey
    /// -algorithm ed25519` write).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        ed25519_dalek::SigningKey::from_pkcs8_pem(pem)
            .map(Self::from_key)
            .map_err(|e| KeyError::Private(e.to_string().to_lowercase()))
    }

    fn from_key(key: ed25519_dalek::SigningKey) -> Self {
        let id = key_id(&key.verifying_key());
        Signer { key, id }
    }

    /// The private key as PKCS#8 PEM, for the key's file (mode 0600): version 1, the private
    /// key alone, which is what OpenSSL 3.0 reads (it refuses version 2, which adds the public
    /// key).
    pub fn private_pem(&self) -> Result<zeroize::Zeroizing<String>, KeyError> {
        let bytes = ed25519_dalek::pkcs8::KeypairBytes {
            secret_key: self.key.to_bytes(),
            public_key: None,
        };
        bytes
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| KeyError::Private(e.to_string().to_lowercase()))
    }

    /// The public key as PEM (`-----BEGIN PUBLIC KEY-----`), for whoever verifies the log.
    pub fn public_pem(&self) -> String {
        let mut pem = self
            .key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default();
        if !pem.ends_with('\n') {
            pem.push('\n');
        }
        pem
    }

    /// The public key as a checkpoint names it: its 32 bytes in base64.
    pub fn key_id(&self) -> &str {
        &self.id
    }

    pub(super) fn sign(&self, statement: &[u8]) -> String {
        B64.encode(self.key.sign(statement).to_bytes())
    }
}

/// A public key a log is verified with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: ed25519_dalek::VerifyingKey,
    id: String,
}

impl PublicKey {
    /// A key from its PEM text (`-----BEGIN PUBLIC KEY-----`, as [`Signer::public_pem`] and
    /// `openssl pkey -pubout` write).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        ed25519_dalek::VerifyingKey::from_public_key_pem(pem.trim())
            .map(|key| PublicKey {
                id: key_id(&key),
                key,
            })
            .map_err(|e| KeyError::Public(e.to_string().to_lowercase()))
    }

    /// The key as a checkpoint names it.
    pub fn key_id(&self) -> &str {
        &self.id
    }
}

fn key_id(key: &ed25519_dalek::VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

/// A checkpoint record's signature and what it records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Checkpoint {
    /// The signing key's public half, base64 (32 bytes).
    pub key: String,
    /// The Ed25519 signature of [`statement`], base64 (64 bytes).
    pub signature: String,
    /// The key the previous checkpoint was made with, when this one's differs: a rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_key: Option<String>,
    /// On the checkpoint a recorder writes first when it resumes a log: the first of the
    /// records it found unsigned (the recorder before it stopped without a checkpoint after
    /// them) and signed only then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsigned_from: Option<u64>,
    /// On that same checkpoint: the session before it did not end with a signed close (a
    /// closing record and a checkpoint after it), so records may be missing before this one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub after_unclean_stop: bool,
}

/// What the first checkpoint of a resumed log states (see [`Checkpoint`]); the default for
/// every other checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opening {
    /// The key the log was last signed with, when it is another.
    pub previous_key: Option<String>,
    /// The first record the log left unsigned.
    pub unsigned_from: Option<u64>,
    /// The log did not end with a signed close.
    pub after_unclean_stop: bool,
}

/// The bytes a checkpoint at `seq` of `session`, following the line whose hash is `prev`,
/// written at `time`, signs: every field of the checkpoint record but the signature and the
/// key, which is the one it verifies with.
pub fn statement(session: &str, seq: u64, prev: &str, time: &str, opening: &Opening) -> Vec<u8> {
    // One field per line, none of which can hold a newline (the strings are escaped; `prev`
    // is hex, a key base64, checked before it is believed), so no two statements read alike.
    format!(
        "kubeleash-checkpoint-v2\nsession {}\nseq {seq}\nprev {prev}\ntime {}\npreviousKey {}\nunsignedFrom {}\nafterUncleanStop {}\n",
        session.escape_default(),
        time.escape_default(),
        opening.previous_key.as_deref().unwrap_or("-"),
        opening
            .unsigned_from
            .map_or_else(|| "-".to_string(), |s| s.to_string()),
        opening.after_unclean_stop,
    )
    .into_bytes()
}

impl Checkpoint {
    fn opening(&self) -> Opening {
        Opening {
            previous_key: self.previous_key.clone(),
            unsigned_from: self.unsigned_from,
            after_unclean_stop: self.after_unclean_stop,
        }
    }
}

/// Whether `id` names an Ed25519 public key as checkpoints do (its 32 bytes in base64).
fn is_key_id(id: &str) -> bool {
    B64.decode(id).is_ok_and(|b| b.len() == 32) && id.len() == 44
}

/// Whether `r`'s signature is `key`'s over its statement.
fn signed_by(r: &Record, c: &Checkpoint, key: &PublicKey) -> bool {
    let Ok(bytes) = B64.decode(&c.signature) else {
        return false;
    };
    let Ok(sig) = Signature::from_slice(&bytes) else {
        return false;
    };
    let msg = statement(&r.session, r.seq, &r.prev, &r.body.time, &c.opening());
    key.key.verify_strict(&msg, &sig).is_ok()
}

/// Check every checkpoint of a chain already verified (`v`) against the keys trusted, and
/// which records no valid checkpoint covers.
pub(super) fn check(v: &mut Verification, keys: &[PublicKey]) {
    let mut covered = 0usize;
    let mut last_key: Option<&str> = None;
    // Keys rotated away from: none of them may sign again (a key is rotated away from because
    // it may be lost; what it signs afterwards is not the recorder's).
    let mut retired: Vec<&str> = Vec::new();
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut resumed = Vec::new();
    for cp in &v.checkpoints {
        let (line, r) = (&cp.line, &cp.record);
        let Some(c) = r.body.checkpoint.as_ref() else {
            problems.push((
                *line,
                format!("record {} is a checkpoint without a signature", r.seq),
            ));
            continue;
        };
        if !is_key_id(&c.key) || c.previous_key.as_deref().is_some_and(|k| !is_key_id(k)) {
            problems.push((
                *line,
                format!(
                    "record {} names a key that is not an Ed25519 public key",
                    r.seq
                ),
            ));
            continue;
        }
        let Some(key) = keys.iter().find(|k| k.id == c.key) else {
            problems.push((
                *line,
                format!(
                    "record {} is signed by key {}, which is not one of the keys given: the log was signed by someone else, or pass that key too if it is yours",
                    r.seq, c.key
                ),
            ));
            continue;
        };
        if !signed_by(r, c, key) {
            problems.push((
                *line,
                format!(
                    "record {}'s signature does not verify: the records before it were changed after they were signed",
                    r.seq
                ),
            ));
            continue;
        }
        if retired.contains(&c.key.as_str()) {
            problems.push((
                *line,
                format!(
                    "record {} is signed by key {}, which an earlier checkpoint rotated away from: a retired key signs nothing",
                    r.seq, c.key
                ),
            ));
            continue;
        }
        match (last_key, c.previous_key.as_deref()) {
            (Some(last), _) if last == c.key => {}
            (Some(last), Some(prev)) if prev == last => {
                warnings.push(format!(
                    "the signing key was rotated at record {}: from {last} to {}",
                    r.seq, c.key
                ));
                retired.push(last);
            }
            (Some(last), _) => problems.push((
                *line,
                format!(
                    "record {} is signed by key {} where the checkpoint before it used {last}, and it does not record that rotation",
                    r.seq, c.key
                ),
            )),
            (None, _) => {}
        }
        if let Some(from) = c.unsigned_from {
            resumed.push(format!(
                "records {from} to {} were signed only when a recorder resumed the log at record {} (the one before had stopped without signing them): whoever could write the file in between could have changed them",
                r.seq.saturating_sub(1),
                r.seq
            ));
        }
        if c.after_unclean_stop {
            resumed.push(format!(
                "the recorder before record {} stopped without a signed close: records it wrote after its last checkpoint may be missing",
                r.seq
            ));
        }
        last_key = Some(&c.key);
        covered = cp.after;
    }
    if v.checkpoints.is_empty() {
        problems.push((
            1,
            "the log has no signature: it was written without a signing key".into(),
        ));
    }
    let tail = v.records.get(covered..).unwrap_or_default();
    if let (Some(first), Some(last)) = (tail.first(), tail.last()) {
        v.unsigned = Some(first.seq..last.seq.saturating_add(1));
        // A running recorder's tail: its own session's records, none of them a close, in a
        // session that had not closed before.
        let session = &last.session;
        v.unsigned_live = tail
            .iter()
            .all(|r| &r.session == session && r.body.kind != RecordKind::End)
            && !v.records[..covered]
                .iter()
                .any(|r| &r.session == session && r.body.kind == RecordKind::End);
    }
    v.problems.extend(problems);
    v.problems.sort_by_key(|p| p.0);
    v.warnings.extend(warnings);
    v.resumed = resumed;
}

/// What a recorder resuming `log` with `own` key must state first (`None`: nothing, the log
/// ended with a signed close by that key, or is empty), or why it must not sign on top of it:
/// its chain is broken, or a checkpoint in it does not verify with the key it names. Signing
/// a log vouches for it, so a log the recorder cannot vouch for is left alone.
pub fn resume_state(log: &str, own: &str) -> Result<Option<Opening>, String> {
    let mut v = super::verify(log);
    if let Some((line, why)) = v.problems.first() {
        return Err(format!("line {line}: {why}"));
    }
    if v.records.is_empty() && v.checkpoints.is_empty() {
        return Ok(None);
    }
    let named: Vec<PublicKey> = v
        .checkpoints
        .iter()
        .filter_map(|c| c.record.body.checkpoint.as_ref())
        .filter(|c| is_key_id(&c.key))
        .filter_map(|c| {
            let bytes: [u8; 32] = B64.decode(&c.key).ok()?.try_into().ok()?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()?;
            Some(PublicKey {
                id: c.key.clone(),
                key,
            })
        })
        .collect();
    let last_key = v
        .checkpoints
        .last()
        .and_then(|c| c.record.body.checkpoint.as_ref())
        .map(|c| c.key.clone());
    if last_key.is_some() {
        check(&mut v, &named);
        if let Some((line, why)) = v.problems.first() {
            return Err(format!("line {line}: {why}"));
        }
    }
    // A signed close: the closing record, then a checkpoint, and nothing after.
    let closed_signed = v
        .records
        .last()
        .is_some_and(|r| r.body.kind == RecordKind::End)
        && v.checkpoints
            .last()
            .is_some_and(|c| c.after == v.records.len());
    let opening = Opening {
        previous_key: last_key.filter(|k| k != own),
        unsigned_from: v
            .records
            .get(v.checkpoints.last().map_or(0, |c| c.after)..)
            .and_then(|tail| tail.first())
            .map(|r| r.seq),
        after_unclean_stop: !closed_signed,
    };
    Ok((opening != Opening::default()).then_some(opening))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::super::{Chain, RecordBody, rehash, verify, verify_signed};
    use super::*;
    use proptest::prelude::*;

    fn body(i: usize) -> RecordBody {
        RecordBody {
            time: format!("2026-12-06T00:00:{:02}Z", i % 60),
            request: super::super::RecordedRequest {
                method: "DELETE".into(),
                target: format!("/api/v1/namespaces/prod-{i}"),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A closed log of `n` records with a checkpoint after every `every`, its end and a last
    /// checkpoint.
    fn log(signer: &Signer, n: usize, every: usize) -> String {
        let mut chain = Chain::new("s1");
        let mut out = Vec::new();
        for i in 0..n {
            chain.seal_into(&body(i), &mut out);
            out.push(b'\n');
            if (i + 1) % every == 0 {
                chain.checkpoint(signer, "t", &Opening::default(), &mut out);
                out.push(b'\n');
            }
        }
        out.extend(chain.end("t").bytes());
        out.push(b'\n');
        chain.checkpoint(signer, "t", &Opening::default(), &mut out);
        out.push(b'\n');
        String::from_utf8(out).unwrap_or_default()
    }

    /// `log` as a recorder with `signer` leaves it after resuming it with `opening`: its
    /// opening checkpoint, a record, a clean close.
    fn resume_and_close(log: &str, signer: &Signer, opening: Option<&Opening>) -> String {
        let last = log
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<Record>(l).ok());
        let mut chain = match last {
            Some(r) => Chain::resume("s2", r.seq + 1, r.hash),
            None => Chain::new("s2"),
        };
        let mut out = log.as_bytes().to_vec();
        if let Some(o) = opening {
            chain.checkpoint(signer, "t", o, &mut out);
            out.push(b'\n');
        }
        chain.seal_into(&body(99), &mut out);
        out.push(b'\n');
        out.extend(chain.end("t").bytes());
        out.push(b'\n');
        chain.checkpoint(signer, "t", &Opening::default(), &mut out);
        out.push(b'\n');
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_recorder_resumes_only_what_it_can_vouch_for_and_says_what_it_cannot() {
        let (s, p) = keys();
        let l = log(&s, 5, 2);
        // A clean close by the same key: nothing to state, and the continuation verifies.
        assert_eq!(super::resume_state(&l, s.key_id()), Ok(None));
        let v = verify_signed(&resume_and_close(&l, &s, None), std::slice::from_ref(&p));
        assert!(
            v.problems.is_empty() && v.resumed.is_empty() && v.unsigned.is_none(),
            "{:?}",
            v.problems
        );
        // Another key: the rotation.
        let (b, pb) = keys();
        let o = super::resume_state(&l, b.key_id()).unwrap().unwrap();
        assert_eq!(o.previous_key.as_deref(), Some(s.key_id()));
        assert!(!o.after_unclean_stop && o.unsigned_from.is_none());
        let v = verify_signed(
            &resume_and_close(&l, &b, Some(&o)),
            &[p.clone(), pb.clone()],
        );
        assert!(
            v.problems.is_empty() && v.resumed.is_empty(),
            "{:?}",
            v.problems
        );
        // Cut at the second checkpoint (line 6): the session did not close.
        let cut: String = l.lines().take(6).map(|x| format!("{x}\n")).collect();
        let o = super::resume_state(&cut, s.key_id()).unwrap().unwrap();
        assert!(o.after_unclean_stop && o.unsigned_from.is_none() && o.previous_key.is_none());
        // A record after it: signed late.
        let cut: String = l.lines().take(7).map(|x| format!("{x}\n")).collect();
        let o = super::resume_state(&cut, s.key_id()).unwrap().unwrap();
        assert_eq!(o.unsigned_from, Some(6));
        // A log never signed: all of it late.
        let mut chain = Chain::new("old");
        let unsigned = format!("{}\n", chain.seal(body(0)));
        let o = super::resume_state(&unsigned, s.key_id()).unwrap().unwrap();
        assert_eq!(o.unsigned_from, Some(0));
        // ... but not one whose chain is broken: signing it would vouch for the break.
        let broken = unsigned.replacen("prod-0", "prod-9", 1);
        assert!(super::resume_state(&broken, s.key_id()).is_err());
        // A broken chain, or a checkpoint that does not verify with the key it names: refused.
        assert!(super::resume_state(&l.replacen("prod-0", "prod-9", 1), s.key_id()).is_err());
        let sig = l
            .lines()
            .nth(2)
            .and_then(|c| c.split("\"signature\":\"").nth(1))
            .and_then(|r| r.get(..10))
            .unwrap();
        let bad = rehash(&l.replacen(sig, "AAAAAAAAAA", 1));
        let e = super::resume_state(&bad, s.key_id()).unwrap_err();
        assert!(e.contains("signature does not verify"), "{e}");
        // Empty: nothing to state.
        assert_eq!(super::resume_state("", s.key_id()), Ok(None));
    }

    #[test]
    fn a_retired_key_signs_nothing_and_a_key_must_be_a_key() {
        let (a, pa) = keys();
        let (b, pb) = keys();
        let l = log(&a, 2, 5);
        let o = super::resume_state(&l, b.key_id()).unwrap().unwrap();
        let ab = resume_and_close(&l, &b, Some(&o));
        assert!(
            verify_signed(&ab, &[pa.clone(), pb.clone()])
                .problems
                .is_empty()
        );
        // Back to `a`, rotation recorded: still refused.
        let o = super::resume_state(&ab, a.key_id()).unwrap().unwrap();
        let aba = resume_and_close(&ab, &a, Some(&o));
        let v = verify_signed(&aba, &[pa.clone(), pb.clone()]);
        assert!(
            v.problems
                .iter()
                .any(|p| p.1.contains("a retired key signs nothing")),
            "{:?}",
            v.problems
        );
        // A previousKey that is not a key ("-" reads as none in the statement).
        let mut chain = Chain::new("s");
        let mut out = Vec::new();
        chain.seal_into(&body(0), &mut out);
        out.push(b'\n');
        chain.checkpoint(
            &a,
            "t",
            &Opening {
                previous_key: Some("-".into()),
                ..Default::default()
            },
            &mut out,
        );
        out.push(b'\n');
        let v = verify_signed(&String::from_utf8(out).unwrap(), std::slice::from_ref(&pa));
        assert!(
            v.problems
                .iter()
                .any(|p| p.1.contains("not an Ed25519 public key")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn only_a_running_recorders_tail_is_live() {
        let (s, p) = keys();
        let l = log(&s, 4, 2);
        let lines: Vec<&str> = l.lines().collect();
        let joined = |v: &[&str]| v.iter().map(|x| format!("{x}\n")).collect::<String>();
        // Records after a checkpoint, no close among them: a running recorder's.
        let v = verify_signed(&joined(&lines[..lines.len() - 3]), std::slice::from_ref(&p));
        assert!(v.unsigned.is_some() && v.unsigned_live);
        // The close without its checkpoint: not a running recorder's.
        let v = verify_signed(&joined(&lines[..lines.len() - 1]), std::slice::from_ref(&p));
        assert!(v.unsigned.is_some() && !v.unsigned_live);
        // A record of a session that closed, after its signed close.
        let mut chain = Chain::resume(
            "s1",
            lines.len() as u64,
            serde_json::from_str::<Record>(lines[lines.len() - 1])
                .unwrap()
                .hash,
        );
        let after = format!("{l}{}\n", chain.seal(body(7)));
        let v = verify_signed(&after, std::slice::from_ref(&p));
        assert!(v.unsigned.is_some() && !v.unsigned_live);
    }

    #[test]
    fn blank_lines_and_an_endless_seq_are_problems_not_panics() {
        let (s, p) = keys();
        let l = log(&s, 2, 5);
        let blank = l.replacen('\n', "\n\u{3000}\n", 1);
        assert!(
            verify(&blank)
                .problems
                .iter()
                .any(|p| p.1.contains("blank"))
        );
        let empty = l.replacen('\n', "\n\n", 1);
        assert!(
            !verify_signed(&empty, std::slice::from_ref(&p))
                .problems
                .is_empty()
        );
        let mut chain = Chain::resume("s", u64::MAX, super::super::GENESIS);
        let huge = format!("{}\n", chain.seal(body(0)));
        assert!(!verify(&huge).problems.is_empty());
    }

    fn keys() -> (Signer, PublicKey) {
        let s = Signer::generate().unwrap();
        let p = PublicKey::from_pem(&s.public_pem()).unwrap();
        (s, p)
    }

    /// Whether verifying with the key finds something: a problem, or records nothing signs.
    fn caught(log: &str, key: &PublicKey) -> bool {
        let v = verify_signed(log, std::slice::from_ref(key));
        !v.problems.is_empty() || v.unsigned.is_some()
    }

    #[test]
    fn a_signed_log_verifies_and_names_nothing_unsigned() {
        let (s, p) = keys();
        let l = log(&s, 10, 3);
        let v = verify_signed(&l, std::slice::from_ref(&p));
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.unsigned, None);
        assert_eq!(v.records.len(), 11, "the checkpoints are read apart");
        assert_eq!(v.checkpoints.len(), 4);
        assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    }

    #[test]
    fn records_after_the_last_checkpoint_are_named_unsigned() {
        let (s, p) = keys();
        let l = log(&s, 5, 2);
        // The closing checkpoint taken away: the last request (seq 6) and the end record (seq
        // 7) are signed by nothing.
        let cut: String = l
            .lines()
            .take(l.lines().count() - 1)
            .map(|x| format!("{x}\n"))
            .collect();
        let v = verify_signed(&cut, std::slice::from_ref(&p));
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert_eq!(v.unsigned, Some(6..8));
        // Cut after the second checkpoint: records 6 and on are gone, and no end record says so.
        let cut: String = l.lines().take(6).map(|x| format!("{x}\n")).collect();
        let v = verify_signed(&cut, std::slice::from_ref(&p));
        assert!(
            v.problems.is_empty() && v.unsigned.is_none(),
            "{:?}",
            v.problems
        );
        assert!(
            v.warnings.iter().any(|w| w.contains("no closing record")),
            "{:?}",
            v.warnings
        );
    }

    #[test]
    fn another_key_no_signature_and_a_garbled_signature_are_problems() {
        let (s, _) = keys();
        let (_, other) = keys();
        let l = log(&s, 4, 2);
        let v = verify_signed(&l, std::slice::from_ref(&other));
        assert!(
            v.problems
                .iter()
                .any(|p| p.1.contains("not one of the keys given")),
            "{:?}",
            v.problems
        );

        let mut chain = Chain::new("s1");
        let mut unsigned = chain.seal(body(0));
        unsigned.push('\n');
        let v = verify_signed(&unsigned, std::slice::from_ref(&other));
        assert!(
            v.problems.iter().any(|p| p.1.contains("no signature")),
            "{:?}",
            v.problems
        );
        assert_eq!(v.unsigned, Some(0..1));

        // A signature of the right length, but not over this statement.
        let (s2, p2) = keys();
        let l = log(&s2, 2, 5);
        let sig = l
            .lines()
            .last()
            .and_then(|c| c.split("\"signature\":\"").nth(1))
            .and_then(|r| r.get(..88))
            .unwrap_or_default()
            .to_string();
        let garbled = rehash(&l.replace(&sig, &format!("A{}", &sig[1..])));
        assert!(caught(&garbled, &p2));
    }

    #[test]
    fn a_rotation_is_accepted_only_as_recorded() {
        let (a, pa) = keys();
        let (b, pb) = keys();
        let mut chain = Chain::new("s1");
        let mut out = Vec::new();
        chain.seal_into(&body(0), &mut out);
        out.push(b'\n');
        chain.checkpoint(&a, "t", &Opening::default(), &mut out);
        out.push(b'\n');
        let at_rotation = out.len();
        let mut recorded = out.clone();
        let mut c2 = chain.clone();
        c2.seal_into(&body(1), &mut recorded);
        recorded.push(b'\n');
        c2.checkpoint(
            &b,
            "t",
            &Opening {
                previous_key: Some(a.key_id().into()),
                ..Default::default()
            },
            &mut recorded,
        );
        recorded.push(b'\n');
        let recorded = String::from_utf8(recorded).unwrap_or_default();
        let v = verify_signed(&recorded, &[pa.clone(), pb.clone()]);
        assert!(v.problems.is_empty(), "{:?}", v.problems);
        assert!(
            v.warnings.iter().any(|w| w.contains("rotated at record 3")),
            "{:?}",
            v.warnings
        );
        // Trusting only the new key: what the old one signed is not accepted.
        assert!(
            !verify_signed(&recorded, std::slice::from_ref(&pb))
                .problems
                .is_empty()
        );

        out.truncate(at_rotation);
        chain.seal_into(&body(1), &mut out);
        out.push(b'\n');
        chain.checkpoint(&b, "t", &Opening::default(), &mut out);
        out.push(b'\n');
        let silent = String::from_utf8(out).unwrap_or_default();
        let v = verify_signed(&silent, &[pa, pb]);
        assert!(
            v.problems
                .iter()
                .any(|p| p.1.contains("does not record that rotation")),
            "{:?}",
            v.problems
        );
    }

    #[test]
    fn the_private_half_is_never_printed_and_round_trips_through_pem() {
        let (s, p) = keys();
        let pem = s.private_pem().unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let again = Signer::from_pem(&pem).unwrap();
        assert_eq!(again.key_id(), p.key_id());
        let shown = format!("{s:?}");
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(
            !shown.contains(&body) && !shown.contains(&body[..20]),
            "{shown}"
        );
        let e = Signer::from_pem(&s.public_pem())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("not an ed25519 private key")
                || e.starts_with("not an Ed25519 private key"),
            "{e}"
        );
        let e = PublicKey::from_pem("not a key")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("public key"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whoever can write the file but holds no key: any edit of any line, any line taken
        /// out, two lines swapped, or the log cut anywhere, with every hash recomputed after,
        /// is caught once the keys are checked (or leaves records nothing signs, which a
        /// closed log must not have), though the unkeyed chain is intact.
        #[test]
        fn no_rewrite_without_the_key_verifies(
            n in 1usize..12,
            every in 1usize..6,
            at in any::<prop::sample::Index>(),
            other in any::<prop::sample::Index>(),
            how in 0u8..4,
        ) {
            let (s, p) = keys();
            let l = log(&s, n, every);
            let lines: Vec<&str> = l.lines().collect();
            let i = at.index(lines.len());
            let j = other.index(lines.len());
            let mut edited: Vec<String> = lines.iter().map(|x| x.to_string()).collect();
            match how {
                0 => edited[i] = edited[i].replacen("prod-", "dev-", 1).replacen("\"time\":\"", "\"time\":\"1", 1),
                1 => { edited.remove(i); }
                2 => { prop_assume!(i != j); edited.swap(i, j); }
                _ => edited.truncate(i),
            }
            // Rewriting is faithful: an untouched log comes out as it was.
            prop_assert_eq!(&rehash(&l), &l);
            let text = if edited.is_empty() { String::new() } else { edited.join("\n") + "\n" };
            let forged = rehash(&text);
            prop_assume!(forged != l);
            // The unkeyed chain cannot tell.
            prop_assert!(verify(&forged).problems.is_empty(), "{:?}", verify(&forged).problems);
            let v = verify_signed(&forged, std::slice::from_ref(&p));
            prop_assert!(
                !v.problems.is_empty() || v.unsigned.is_some() || v.cut_short,
                "a forged log verifies: {how} at {i}\n{forged}"
            );
            // The recorder restarts on the forged file and signs on from it, as the proxy
            // would: it refuses, or what it signs says it could not vouch for what came before.
            // (An emptied file is a new log: the documented limit of a whole-file replacement.)
            if let (false, Ok(opening)) = (forged.is_empty(), super::resume_state(&forged, s.key_id())) {
                let resumed = resume_and_close(&forged, &s, opening.as_ref());
                let v = verify_signed(&resumed, std::slice::from_ref(&p));
                prop_assert!(
                    !v.problems.is_empty() || !v.resumed.is_empty() || v.unsigned.is_some() || v.cut_short,
                    "a forged log verifies once a recorder resumed it: {how} at {i}\n{resumed}"
                );
            }
        }
    }
}
