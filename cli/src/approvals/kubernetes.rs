//! Approvals kept in the cluster: held requests, their answers and the grants they leave are
//! Kubernetes objects (`approvals.kubeleash.dev` and `grants.kubeleash.dev`, the chart's CRDs),
//! so any replica can hold a request and any replica, `kubeleash approvals --kubernetes` or
//! plain `kubectl` can answer it. Who may answer is RBAC on `approvals/status`.
//!
//! - **Held**: the replica holding a request creates an `Approval` named by its id, with the
//!   request as the approver sees it (masked) in `spec`, and waits for `status.answer`.
//! - **Answered once**: an answer is written to `status.answer` (`decision: approve|deny`,
//!   `by`, `reason`, `seconds`, `widen`). The chart's ValidatingAdmissionPolicy makes `by` the
//!   answering user's own name and an answer final once written; `kubeleash approvals` writes it
//!   with the object's `resourceVersion`, so of two answerers one wins and the other is told.
//! - **Closed**: an approval nobody answered in time, whose request went away, or whose replica
//!   stopped gets `status.closed` (by the holding replica, or by any other replica once the
//!   holder's heartbeat [`Lease`](HEARTBEAT) is stale): it can no longer be answered, and the
//!   agent has had its error (a stopped replica's connections end with it).
//! - **Grants** an approval leaves are `Grant` objects only the proxy's service account writes;
//!   every replica reads them when a request would be held, and draws a counted grant's uses
//!   down with the object's `resourceVersion`, so a use is taken once across replicas.
//!   Deleting a `Grant` revokes it; a replica running another policy deletes it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
    WatchEvent, WatchParams,
};
use kubeleash_tower::{Answer, ApprovalRequest, Approver, GrantStore, KeptGrant, Widening};
use serde_json::{Value, json};

use super::{Fit, fit};

/// The API group and version of kubeleash's objects.
pub(crate) const GROUP: &str = "kubeleash.dev";
/// See [`GROUP`].
pub(crate) const VERSION: &str = "v1alpha1";
/// The label naming the replica that holds an approval (or kept a grant).
pub(crate) const REPLICA_LABEL: &str = "kubeleash.dev/replica";
/// The label a grant is looked up by: its identity digest, cut to a label's 63 characters.
const IDENTITY_LABEL: &str = "kubeleash.dev/identity";
/// How often a replica renews its heartbeat Lease (`kubeleash-replica-NAME`)...
const HEARTBEAT: Duration = Duration::from_secs(2);
/// ...and how stale it may be before other replicas close what that replica held.
const HEARTBEAT_STALE: Duration = Duration::from_secs(10);
/// How often a replica looks for approvals and grants to close or remove.
const SWEEP: Duration = Duration::from_secs(4);
/// How long an answered approval stays for people to read (the record keeps it).
const KEEP_ANSWERED: Duration = Duration::from_secs(3600);
/// How long one closed unanswered stays: an agent can make those without a person, so they go
/// soon (the record keeps them).
const KEEP_CLOSED: Duration = Duration::from_secs(60);
/// Approvals read per page when sweeping.
const SWEEP_PAGE: u32 = 250;
/// New held requests one identity may put in the cluster: this many at once...
const HOLD_BURST: f64 = 8.0;
/// ...and this many a second after that (each is an object in etcd, kept a while).
const HOLD_RATE: f64 = 1.0;
/// Requests one identity may have held at once across all replicas.
const OPEN_PER_IDENTITY: usize = 16;
/// The most a held request may take in its Approval object (its body, dry run and diff, as
/// JSON). An approver approves what the object shows, so nothing is cut to fit: a larger request
/// is refused, not held (each object is in etcd; this bounds what one can take).
const SHOWN_IN_CLUSTER: usize = 64 * 1024;
/// How many times a conflicting write is tried again with the object read afresh.
const CONFLICT_RETRIES: usize = 8;

/// The `Approval` resource.
pub(crate) fn approvals_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, VERSION, "Approval"),
        "approvals",
    )
}

/// The `Grant` resource.
pub(crate) fn grants_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, "Grant"), "grants")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A label value from any text: at most 63 characters of `[A-Za-z0-9._-]`, starting and ending
/// alphanumeric.
pub(crate) fn label_value(s: &str) -> String {
    let kept: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    kept.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// When an object was created, in seconds since the Unix epoch.
fn created(o: &DynamicObject) -> Option<u64> {
    let t = serde_json::to_value(o.metadata.creation_timestamp.as_ref()?).ok()?;
    let t =
        time::OffsetDateTime::parse(t.as_str()?, &time::format_description::well_known::Rfc3339)
            .ok()?;
    u64::try_from(t.unix_timestamp()).ok()
}

/// A kube error as the operator reads it: the API server's message, or the client's error.
fn said(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("the API server said {} ({})", s.message, s.code),
        e => e.to_string(),
    }
}

/// Whether a kube error is the API server's 409 Conflict (another writer was first).
fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Whether a kube error is the API server's 404.
fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Held requests, answers and grants in one namespace of the cluster, for one replica.
#[derive(Clone)]
pub struct KubernetesApprovals {
    inner: Arc<Inner>,
}

struct Inner {
    approvals: Api<DynamicObject>,
    grants: Api<DynamicObject>,
    leases: Api<DynamicObject>,
    namespace: String,
    replica: String,
    /// The policy this replica enforces: a grant given under another is removed.
    policy: kubeleash_tower::PolicyHandle,
    /// New holds each identity may still make ([`HOLD_BURST`], [`HOLD_RATE`]): tokens and when
    /// they were counted.
    buckets: std::sync::Mutex<std::collections::HashMap<String, (f64, std::time::Instant)>>,
    /// When a replica closes an unanswered approval itself: a little before the layer's
    /// approval timeout, so that an answer racing the close is either taken in time or refused
    /// by the close (never given to a request that is no longer held).
    deadline: Duration,
}

impl KubernetesApprovals {
    /// Keep approvals in `namespace` with `client` (the proxy's own credential, outside the
    /// layer), as replica `replica`, for a layer whose approval timeout is `timeout` and whose
    /// policy is `policy`. Starts the replica's heartbeat and sweeper on the current runtime.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        replica: &str,
        timeout: Duration,
        policy: kubeleash_tower::PolicyHandle,
    ) -> KubernetesApprovals {
        let leases = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"),
            "leases",
        );
        let margin = (timeout / 10).clamp(Duration::from_millis(200), Duration::from_secs(2));
        let inner = Arc::new(Inner {
            approvals: Api::namespaced_with(client.clone(), namespace, &approvals_resource()),
            grants: Api::namespaced_with(client.clone(), namespace, &grants_resource()),
            leases: Api::namespaced_with(client, namespace, &leases),
            namespace: namespace.to_string(),
            replica: replica.to_string(),
            policy,
            buckets: std::sync::Mutex::default(),
            deadline: timeout.saturating_sub(margin),
        });
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            let mut last_sweep = std::time::Instant::now() - SWEEP;
            loop {
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = inner.beat().await {
                    eprintln!(
                        "kubeleash: cannot renew this replica's heartbeat lease in namespace {}: {}",
                        inner.namespace,
                        said(&e)
                    );
                }
                if last_sweep.elapsed() >= SWEEP {
                    last_sweep = std::time::Instant::now();
                    if let Err(e) = inner.sweep().await {
                        eprintln!(
                            "kubeleash: cannot look for approvals and grants to close in namespace {}: {}",
                            inner.namespace,
                            said(&e)
                        );
                    }
                }
                drop(inner);
                tokio::time::sleep(HEARTBEAT).await;
            }
        });
        KubernetesApprovals { inner }
    }
}

/// A replica's heartbeat Lease: a DNS-1123 name from the replica's name, with a digest of the
/// whole name, so that names a Lease cannot spell (`replica_x`), and names that differ only in
/// what it cannot spell (`A` and `a`), are each a valid name of their own.
fn lease_name(replica: &str) -> String {
    use sha2::Digest as _;
    let spelled: String = replica
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .take(32)
        .collect();
    let digest = sha2::Sha256::digest(replica.as_bytes());
    let short: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("kubeleash-replica-{}-{short}", spelled.trim_matches('-'))
}

impl Inner {
    /// Take one new hold for `user`, if the rate allows.
    fn may_hold(&self, user: &str) -> bool {
        let now = std::time::Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() > 10_000 {
            // Identities back to a full bucket are as good as new.
            b.retain(|_, (t, at)| *t + at.elapsed().as_secs_f64() * HOLD_RATE < HOLD_BURST);
        }
        let (tokens, at) = b.entry(user.to_string()).or_insert((HOLD_BURST, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * HOLD_RATE).min(HOLD_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Create or renew this replica's heartbeat lease.
    async fn beat(&self) -> Result<(), kube::Error> {
        let name = lease_name(&self.replica);
        let now = kubeleash_core::record::rfc3339(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        );
        // A MicroTime: six fractional digits.
        let now = now.replace('Z', "000Z");
        let spec = json!({"holderIdentity": self.replica, "renewTime": now,
                          "leaseDurationSeconds": HEARTBEAT_STALE.as_secs()});
        match self.leases.get_opt(&name).await? {
            Some(mut lease) => {
                lease.data["spec"] = spec;
                self.leases
                    .replace(&name, &PostParams::default(), &lease)
                    .await?;
            }
            None => {
                let lease: DynamicObject = serde_json::from_value(json!({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": name, "labels": {REPLICA_LABEL: label_value(&self.replica)}},
                    "spec": spec,
                }))
                .map_err(kube::Error::SerdeError)?;
                match self.leases.create(&PostParams::default(), &lease).await {
                    Err(e) if conflict(&e) => {}
                    other => {
                        other?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether `replica`'s heartbeat is fresh (a replica with no lease is not).
    async fn alive(&self, replica: &str) -> Result<bool, kube::Error> {
        if replica == self.replica {
            return Ok(true);
        }
        let Some(lease) = self.leases.get_opt(&lease_name(replica)).await? else {
            return Ok(false);
        };
        let renewed = lease.data["spec"]["renewTime"]
            .as_str()
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map(|t| t.unix_timestamp());
        Ok(renewed.is_some_and(|r| {
            (unix_now() as i64).saturating_sub(r) < HEARTBEAT_STALE.as_secs() as i64
        }))
    }

    /// Close what nobody can answer any more: approvals past their expiry, and those held by a
    /// replica whose heartbeat is stale; remove finished approvals after [`KEEP_ANSWERED`] or
    /// [`KEEP_CLOSED`], and grants that ended, are used up, or were given under another policy.
    async fn sweep(&self) -> Result<(), kube::Error> {
        let now = unix_now();
        let mut alive = std::collections::HashMap::new();
        let mut approvals = Vec::new();
        let mut page = ListParams::default().limit(SWEEP_PAGE);
        loop {
            let list = self.approvals.list(&page).await?;
            approvals.extend(list.items);
            match list.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => page = page.continue_token(&c),
                None => break,
            }
        }
        for a in approvals {
            let Some(name) = a.metadata.name.clone() else {
                continue;
            };
            let status = &a.data["status"];
            // An answered one is kept by the object's own age; a closed one from its close,
            // which only a replica writes (the chart's admission policy), never later than its
            // age allows.
            let age = now.saturating_sub(created(&a).unwrap_or(now));
            let gone = if status.get("answer").is_some() {
                Some(age > KEEP_ANSWERED.as_secs() + self.deadline.as_secs())
            } else if status.get("closed").is_some() {
                let since = status["closed"]["at"]
                    .as_u64()
                    .map_or(age, |at| now.saturating_sub(at).min(age));
                Some(since > KEEP_CLOSED.as_secs())
            } else {
                None
            };
            if let Some(gone) = gone {
                if gone {
                    let _ = self.approvals.delete(&name, &DeleteParams::default()).await;
                }
                continue;
            }
            let holder = a.data["spec"]["replica"].as_str().unwrap_or_default();
            let expires = a.data["spec"]["expires"].as_u64().unwrap_or(0);
            let live = match alive.get(holder) {
                Some(l) => *l,
                None => {
                    let l = self.alive(holder).await?;
                    alive.insert(holder.to_string(), l);
                    l
                }
            };
            let why = if expires <= now {
                Some(format!(
                    "nobody answered before it expired (held by {holder})"
                ))
            } else if !live {
                Some(format!(
                    "the replica holding it ({holder}) stopped; the agent's request ended with it"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                let _ = self.close(&name, &why).await;
            }
        }
        let policy = self.policy.get().digest();
        for g in self.grants.list(&ListParams::default()).await?.items {
            let Some(name) = g.metadata.name.clone() else {
                continue;
            };
            // One given under another policy covers nothing here, and must not come back if
            // the policy is changed back to the one it was given under: a changed policy ends
            // grants. (A replica that has not loaded a change yet removes grants given under the
            // new one meanwhile: those requests are held again, never let through.)
            let ended = g.data["spec"]["expires"].as_u64().unwrap_or(0) <= now
                || g.data["spec"]["usesLeft"].as_u64() == Some(0)
                || g.data["spec"]["policy"].as_str() != Some(policy.as_str());
            if ended {
                let _ = self.grants.delete(&name, &DeleteParams::default()).await;
            }
        }
        Ok(())
    }

    /// Close approval `name` unless it is answered or closed already: `Ok(Some(answer))` when
    /// an answer was there first (it is final), `Ok(None)` once closed.
    async fn close(&self, name: &str, why: &str) -> Result<Option<Value>, kube::Error> {
        for _ in 0..CONFLICT_RETRIES {
            let mut a = self.approvals.get(name).await?;
            if let Some(answer) = a.data["status"].get("answer") {
                return Ok(Some(answer.clone()));
            }
            if a.data["status"].get("closed").is_some() {
                return Ok(None);
            }
            a.data["status"] =
                json!({"closed": {"reason": why, "by": self.replica, "at": unix_now()}});
            match self
                .approvals
                .replace_status(name, &PostParams::default(), &a)
                .await
            {
                Ok(_) => return Ok(None),
                Err(e) if conflict(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(kube::Error::Api(Box::new(
            kube::core::Status::failure(
                "the approval kept changing while it was being closed",
                "Conflict",
            )
            .with_code(409),
        )))
    }

    /// Wait for approval `name`'s answer until `until`: `Ok(Waited::Answered)`, `Closed` with
    /// why when another closed it, or `TimeUp`.
    async fn wait(&self, name: &str, until: tokio::time::Instant) -> Result<Waited, kube::Error> {
        loop {
            let a = self.approvals.get(name).await?;
            if let Some(answer) = a.data["status"].get("answer") {
                return Ok(Waited::Answered(answer.clone()));
            }
            if let Some(closed) = a.data["status"].get("closed") {
                return Ok(Waited::Closed(
                    closed["reason"].as_str().unwrap_or("closed").to_string(),
                ));
            }
            let rv = a.metadata.resource_version.unwrap_or_default();
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Waited::TimeUp);
            }
            let wp = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(left.as_secs().clamp(1, 290) as u32);
            let watch = async {
                let mut events = Box::pin(self.approvals.watch(&wp, &rv).await?);
                while let Some(e) = events.next().await {
                    // Any change is read again below (bookmarks and errors are not changes).
                    if let WatchEvent::Modified(_) | WatchEvent::Added(_) | WatchEvent::Deleted(_) =
                        e?
                    {
                        break;
                    }
                }
                Ok::<(), kube::Error>(())
            };
            // Whatever ends the watch (an event, its timeout, an error), the object is read
            // again at the top: it alone says what the answer is.
            match tokio::time::timeout_at(until, watch).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
                Err(_) => {}
            }
        }
    }
}

/// What came of waiting for an answer.
enum Waited {
    Answered(Value),
    /// Closed by another (a replica that took this one for stopped): why.
    Closed(String),
    TimeUp,
}

/// Closes an approval whose request stopped waiting before it was answered or closed (the
/// agent went away, the proxy is stopping).
struct CloseOnDrop {
    inner: Arc<Inner>,
    name: String,
    armed: bool,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let name = std::mem::take(&mut self.name);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = inner
                    .close(
                        &name,
                        "the request stopped waiting (the agent went away or the proxy stopped)",
                    )
                    .await;
            });
        }
    }
}

/// The held request as its Approval shows it, whole, or why it cannot be: larger than
/// [`SHOWN_IN_CLUSTER`]. (An approval of a view cut to fit would cover bytes nobody saw: an agent
/// could pad a harmless annotation ahead of a privileged pod spec.)
fn shown(request: &ApprovalRequest) -> Result<Value, String> {
    let v = serde_json::to_value(request).map_err(|e| format!("cannot show the request: {e}"))?;
    let size = v.to_string().len();
    if size > SHOWN_IN_CLUSTER {
        return Err(format!(
            "this request needs a person's approval, but with its dry run it is {size} bytes, \
             more than an approval kept in the cluster shows whole ({SHOWN_IN_CLUSTER}); it was \
             not sent: send a smaller change (one object, or a patch of only what changes), or \
             ask for a rule that decides it without a person"
        ));
    }
    Ok(v)
}

/// The answer an approver wrote in `status.answer`, checked against the held request.
fn answer_from(request: &ApprovalRequest, answer: &Value) -> Answer {
    let raw = answer["by"].as_str().unwrap_or_default();
    // The requester is recognised by the name as written, however long (a ServiceAccount's
    // name can be far longer than a cleaned name keeps): the layer refuses the approval.
    if kubeleash_tower::same_user(raw, &request.identity.user) {
        return Answer::Approve {
            by: request.identity.user.clone(),
            window: None,
        };
    }
    let by = super::clean_name(raw);
    let reason = answer["reason"].as_str().map(super::clean_reason);
    let for_by = format!("kubeleash (for {by})");
    let refuse = |why: String| Answer::Deny {
        by: for_by.clone(),
        reason: why,
    };
    if by.is_empty() {
        return refuse("the answer names nobody (status.answer.by is empty)".into());
    }
    match answer["decision"].as_str() {
        Some("deny") => Answer::Deny {
            by,
            reason: reason.unwrap_or_else(|| "denied".into()),
        },
        Some("approve") => {
            // The reason reaches the record in the approver's name, as on the socket.
            let by = match &reason {
                Some(r) if !kubeleash_tower::same_user(&by, &request.identity.user) => {
                    format!("{by} (reason: {r})")
                }
                _ => by,
            };
            let window = answer["seconds"].as_u64().map(Duration::from_secs);
            let widening = match answer.get("widen").filter(|w| !w.is_null()) {
                None => None,
                Some(w) => match serde_json::from_value::<Widening>(w.clone()) {
                    Ok(w) if w.is_exact() => None,
                    Ok(w) => Some(w),
                    Err(e) => return refuse(format!("the answer's widening is malformed: {e}")),
                },
            };
            match widening {
                None => Answer::Approve { by, window },
                Some(mut widening) => {
                    if widening.seconds.is_none() {
                        widening.seconds = window.map(|w| w.as_secs());
                    }
                    match fit(request, &widening) {
                        Ok(Fit::Widened | Fit::Exactly(_)) => Answer::Widen { by, widening },
                        Err(e) => refuse(format!(
                            "the answer widened the approval along what the request does not offer, so nothing was approved: {e}"
                        )),
                    }
                }
            }
        }
        other => refuse(format!(
            "the answer's decision `{}` is neither approve nor deny",
            super::one_line(other.unwrap_or_default())
        )),
    }
}

#[async_trait::async_trait]
impl Approver for KubernetesApprovals {
    async fn approve(&self, request: ApprovalRequest) -> Answer {
        let inner = &self.inner;
        let name = request.id.clone();
        let shown = match shown(&request) {
            Ok(v) => v,
            Err(reason) => {
                return Answer::Deny {
                    by: "kubeleash".into(),
                    reason,
                };
            }
        };
        // Each held request is an object in etcd, kept a while: an agent that holds and hangs
        // up over and over would fill it.
        if !inner.may_hold(&request.identity.user) {
            return Answer::Deny {
                by: "kubeleash".into(),
                reason: format!(
                    "too many requests from this identity were held for approval in a short time \
                     (at most {HOLD_BURST} at once, then {HOLD_RATE} a second); send it again in a few seconds"
                ),
            };
        }
        let expires = unix_now().saturating_add(inner.deadline.as_secs().max(1));
        // Held at once by this identity on every replica: no more than one replica may hold.
        let identity = kubeleash_tower::identity_digest(&request.identity);
        let label = &identity[..identity.len().min(63)];
        let held_now = inner
            .approvals
            .list(&ListParams::default().labels(&format!("{IDENTITY_LABEL}={label}")))
            .await
            .map(|l| l.items.iter().filter(|a| open(a)).count());
        if held_now.is_ok_and(|n| n >= OPEN_PER_IDENTITY) {
            return Answer::Deny {
                by: "kubeleash".into(),
                reason: format!(
                    "this identity already has {OPEN_PER_IDENTITY} requests held for approval across the replicas; answer or drop those first"
                ),
            };
        }
        let made: Result<DynamicObject, _> = serde_json::from_value(json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "Approval",
            "metadata": {"name": name, "labels": {
                REPLICA_LABEL: label_value(&inner.replica),
                IDENTITY_LABEL: label,
            }},
            "spec": {"replica": inner.replica, "expires": expires, "request": shown},
        }));
        let created = match made {
            Ok(o) => inner.approvals.create(&PostParams::default(), &o).await,
            Err(e) => Err(kube::Error::SerdeError(e)),
        };
        if let Err(e) = created {
            eprintln!(
                "kubeleash: cannot keep approval {name} in namespace {}: {}",
                inner.namespace,
                said(&e)
            );
            return Answer::Deny {
                by: "kubeleash".into(),
                reason: "the held request could not be kept in the cluster for an approver, so it was not sent (the proxy's log says why)".into(),
            };
        }
        let mut guard = CloseOnDrop {
            inner: Arc::clone(inner),
            name: name.clone(),
            armed: true,
        };
        let until = tokio::time::Instant::now() + inner.deadline;
        let mut answer = None;
        while answer.is_none() && tokio::time::Instant::now() < until {
            match inner.wait(&name, until).await {
                Ok(Waited::Answered(a)) => answer = Some(a),
                Ok(Waited::Closed(why)) => {
                    guard.armed = false;
                    return Answer::Deny {
                        by: "kubeleash".into(),
                        reason: format!(
                            "approval {name} was closed before anyone answered it: {}",
                            kubeleash_core::display::printable(&why)
                        ),
                    };
                }
                Ok(Waited::TimeUp) => break,
                Err(e) if not_found(&e) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        if answer.is_none() {
            // Closed here, unless an answer was written first: that one is final and is taken.
            loop {
                match inner.close(&name, "nobody answered in time").await {
                    Ok(a) => {
                        answer = a;
                        break;
                    }
                    Err(e) if not_found(&e) => break,
                    Err(_) if tokio::time::Instant::now() < until + inner.deadline / 4 => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Err(_) => break,
                }
            }
        }
        guard.armed = false;
        match answer {
            Some(a) => answer_from(&request, &a),
            // Nobody answered: the layer's own timeout says so, in a moment.
            None => std::future::pending().await,
        }
    }
}

#[async_trait::async_trait]
impl GrantStore for KubernetesApprovals {
    async fn keep(&self, grant: KeptGrant) -> Result<(), String> {
        let name = label_value(&grant.approval).to_lowercase();
        let made: DynamicObject = serde_json::from_value(json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "Grant",
            "metadata": {"name": name, "labels": {
                REPLICA_LABEL: label_value(&self.inner.replica),
                IDENTITY_LABEL: &grant.identity[..grant.identity.len().min(63)],
            }},
            "spec": grant,
        }))
        .map_err(|e| e.to_string())?;
        self.inner
            .grants
            .create(&PostParams::default(), &made)
            .await
            .map(|_| ())
            .map_err(|e| {
                let e = said(&e);
                eprintln!("kubeleash: cannot keep the grant of approval {name}: {e}");
                e
            })
    }

    async fn kept_for(&self, identity: &str) -> Result<Vec<KeptGrant>, String> {
        let lp = ListParams::default().labels(&format!(
            "{IDENTITY_LABEL}={}",
            &identity[..identity.len().min(63)]
        ));
        let list = self
            .inner
            .grants
            .list(&lp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|g| serde_json::from_value(g.data["spec"].clone()).ok())
            .collect())
    }

    async fn take_use(&self, approval: &str) -> Result<bool, String> {
        let name = label_value(approval).to_lowercase();
        for _ in 0..CONFLICT_RETRIES {
            let mut g = match self.inner.grants.get_opt(&name).await {
                Ok(Some(g)) => g,
                Ok(None) => return Ok(false),
                Err(e) => return Err(e.to_string()),
            };
            let Some(left) = g.data["spec"]["usesLeft"].as_u64() else {
                return Ok(true);
            };
            if left == 0 {
                return Ok(false);
            }
            g.data["spec"]["usesLeft"] = json!(left - 1);
            // The object's resourceVersion goes with it: a use another replica took meanwhile
            // makes this a conflict, and the count is read again.
            match self
                .inner
                .grants
                .replace(&name, &PostParams::default(), &g)
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if conflict(&e) => continue,
                Err(e) if not_found(&e) => return Ok(false),
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("the grant kept changing while a use was taken".into())
    }
}

/// Where `kubeleash approvals --kubernetes` finds the approvals: a kubeconfig (the approver's
/// own credential), its context, and the namespace.
pub(crate) struct Target {
    pub kubeconfig: Option<std::path::PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

/// The approver's client and namespace (the one named, else the context's, else `default`).
async fn connect(target: &Target) -> Result<(kube::Client, String), String> {
    let options = kube::config::KubeConfigOptions {
        context: target.context.clone(),
        ..Default::default()
    };
    let config = match &target.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("cannot read kubeconfig `{}`: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &options).await
        }
        None => kube::Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| format!("cannot use the kubeconfig: {e}"))?;
    let namespace = target
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let client =
        kube::Client::try_from(config).map_err(|e| format!("cannot make a client: {e}"))?;
    Ok((client, namespace))
}

/// Who the API server says the approver is (a SelfSubjectReview): the name an answer is given
/// in, which the chart's admission policy checks.
async fn whoami(client: &kube::Client) -> Result<String, String> {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    let request = http::Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap_or_default())
        .map_err(|e| e.to_string())?;
    let answer: Value = client
        .request(request)
        .await
        .map_err(|e| format!("cannot ask the API server who you are: {e}"))?;
    answer["status"]["userInfo"]["username"]
        .as_str()
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "the API server did not say who you are".into())
}

/// Whether an approval is still open: neither answered nor closed.
fn open(a: &DynamicObject) -> bool {
    a.data["status"].get("answer").is_none() && a.data["status"].get("closed").is_none()
}

/// Answer one line of the socket protocol (see the `approvals` module) against the approvals
/// in the cluster, as the approver's own user: what `kubeleash approvals --kubernetes` prints is
/// what it prints for the socket.
pub(crate) async fn call(target: &Target, request: &Value) -> Result<Value, String> {
    let (client, namespace) = connect(target).await?;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &approvals_resource());
    let failed = |e: kube::Error| {
        match e {
        kube::Error::Api(s)
            if s.code == 404
                && s.reason == "NotFound"
                && s.message
                    .contains("the server could not find the requested resource") =>
        {
            "the cluster has no approvals.kubeleash.dev resource: install the chart's CRDs (deploy/helm/kubeleash/crds)".to_string()
        }
        kube::Error::Api(s) => format!("the API server refused: {}", s.message),
        e => format!("cannot reach the API server: {e}"),
    }
    };
    let id = request["id"].as_str().unwrap_or_default();
    match request["op"].as_str() {
        Some("list") => {
            let offset = request["offset"].as_u64().unwrap_or(0) as usize;
            let now = unix_now();
            let mut held: Vec<(String, Value)> = Vec::new();
            for a in api
                .list(&ListParams::default())
                .await
                .map_err(failed)?
                .items
            {
                if !open(&a) || a.data["spec"]["expires"].as_u64().unwrap_or(0) <= now {
                    continue;
                }
                // An approval is answered by its object's name: one whose shown id differs
                // is not one a replica made, and is not offered.
                if a.metadata.name.as_deref() != a.data["spec"]["request"]["id"].as_str() {
                    continue;
                }
                let mut shown = a.data["spec"]["request"].clone();
                let waited = created(&a).map_or(0, |c| now.saturating_sub(c));
                shown["waiting_seconds"] = json!(waited);
                shown["held_by"] = a.data["spec"]["replica"].clone();
                held.push((
                    a.metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| format!("{t:?}"))
                        .unwrap_or_default(),
                    shown,
                ));
            }
            held.sort_by(|a, b| a.0.cmp(&b.0));
            let total = held.len();
            let pending: Vec<Value> = held
                .into_iter()
                .skip(offset)
                .take(32)
                .map(|(_, v)| v)
                .collect();
            Ok(json!({"pending": pending, "total": total, "offset": offset}))
        }
        Some(op @ ("approve" | "deny")) => {
            let by = whoami(&client).await?;
            let name = label_value(id).to_lowercase();
            for _ in 0..CONFLICT_RETRIES {
                let Some(mut a) = api.get_opt(&name).await.map_err(failed)? else {
                    return Ok(
                        json!({"ok": false, "error": format!("no pending approval `{}`", super::one_line(id))}),
                    );
                };
                if let Some(answer) = a.data["status"].get("answer") {
                    return Ok(json!({"ok": false, "answered": true, "error": format!(
                        "approval {} was already answered ({} by {}); an answer is given once",
                        super::one_line(id),
                        answer["decision"].as_str().unwrap_or("?"),
                        super::one_line(answer["by"].as_str().unwrap_or("?")),
                    )}));
                }
                if let Some(closed) = a.data["status"].get("closed") {
                    return Ok(json!({"ok": false, "answered": true, "error": format!(
                        "approval {} is closed and can no longer be answered: {}",
                        super::one_line(id),
                        super::one_line(closed["reason"].as_str().unwrap_or("?")),
                    )}));
                }
                let mut answer = json!({"decision": op, "by": by});
                if let Some(r) = request["reason"].as_str() {
                    answer["reason"] = json!(r);
                }
                if let Some(s) = request["for_seconds"].as_u64() {
                    answer["seconds"] = json!(s);
                }
                let mut exactly = None;
                if let Some(w) = request.get("widen") {
                    let offered = &a.data["spec"]["request"]["widen"];
                    if let Some(never) = offered["never"].as_str() {
                        exactly = Some(never.to_string());
                    } else if let Err(e) = offers(offered, w, id) {
                        return Ok(json!({"ok": false, "still_held": true, "error": e}));
                    }
                    answer["widen"] = w.clone();
                }
                a.data["status"] = json!({"answer": answer});
                // With the resourceVersion read above: if anyone answered or closed it since,
                // this is a conflict and the approval is read again.
                match api.replace_status(&name, &PostParams::default(), &a).await {
                    Ok(_) => {
                        let mut said = json!({"ok": true});
                        match exactly {
                            Some(why) => said["exactly"] = json!(why),
                            None if request.get("widen").is_some() => said["widened"] = json!(true),
                            None => {}
                        }
                        return Ok(said);
                    }
                    Err(e) if conflict(&e) => continue,
                    Err(kube::Error::Api(s)) if matches!(s.code, 403 | 422) => {
                        return Ok(
                            json!({"ok": false, "answered": true, "error": format!("the API server refused the answer: {}", s.message)}),
                        );
                    }
                    Err(e) => return Err(failed(e)),
                }
            }
            Err(format!(
                "approval {} kept changing while it was answered; try again",
                super::one_line(id)
            ))
        }
        _ => Err("unknown approvals operation".into()),
    }
}

/// Whether the held request offers what the widening `w` widens (its prompt's `widen`), as far
/// as a client can tell; the replica holding it checks again against the request itself.
fn offers(offered: &Value, w: &Value, id: &str) -> Result<(), String> {
    let id = super::one_line(id);
    if w.get("names").is_some_and(|n| !n.is_null()) && offered["names"].as_bool() != Some(true) {
        return Err(format!(
            "approval {id} cannot be widened by name: the request names no single object; approve it exactly"
        ));
    }
    let fields: Vec<&str> = offered["fields"]
        .as_array()
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for f in w["fields"].as_array().into_iter().flatten() {
        let path = f["path"].as_str().unwrap_or_default();
        if !fields
            .iter()
            .any(|o| super::bare_path(o) == super::bare_path(path))
        {
            return Err(format!(
                "approval {id} does not offer the field `{}` to widen (it offers {})",
                super::one_line(path),
                if fields.is_empty() {
                    "no fields".to_string()
                } else {
                    super::one_line(&fields.join(", "))
                }
            ));
        }
    }
    let counted = |k: &str| w.get(k).is_some_and(|v| !v.is_null());
    if (counted("uses") || counted("seconds")) && offered["usesAndTime"].as_bool() != Some(true) {
        return Err(format!(
            "approval {id} does not offer uses or time to widen; approve it exactly"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn held(user: &str) -> ApprovalRequest {
        ApprovalRequest {
            id: "0123456789abcdef0123456789abcdef".into(),
            identity: kubeleash_core::policy::Identity::new(user, ["agents"]),
            method: "POST".into(),
            target: "/api/v1/namespaces/dev/configmaps".into(),
            attributes: kubeleash_core::request::classify(
                "POST",
                "/api/v1/namespaces/dev/configmaps",
                &http::HeaderMap::new(),
            )
            .unwrap()
            .attributes,
            kubectl: String::new(),
            body: None,
            content_type: None,
            impersonation: None,
            rule: None,
            reason: String::new(),
            agent_reason: None,
            dry_run: None,
            widen: kubeleash_tower::Axes::default(),
        }
    }

    /// However long the requester's name, an answer in it is recognised as the requester's (the
    /// layer then refuses it), not cut to a name that is someone else's.
    #[test]
    fn an_answer_in_the_requesters_long_name_is_the_requesters() {
        let long = format!("system:serviceaccount:work:agent-{}", "x".repeat(200));
        let a = answer_from(&held(&long), &json!({"decision": "approve", "by": long}));
        assert!(matches!(a, Answer::Approve { by, .. } if kubeleash_tower::same_user(&by, &long)));
        let b = answer_from(
            &held(&long),
            &json!({"decision": "approve", "by": "alice", "reason": "ok"}),
        );
        assert!(matches!(b, Answer::Approve { by, .. } if by == "alice (reason: ok)"));
        let c = answer_from(&held("agent"), &json!({"decision": "maybe", "by": "alice"}));
        assert!(matches!(c, Answer::Deny { .. }));
    }

    /// An Approval shows the held request whole: one too large to show whole is refused, never
    /// cut (an approver would approve bytes nobody saw).
    #[test]
    fn a_held_request_too_large_to_show_whole_is_refused() {
        let mut r = held("agent");
        r.body = Some("é".repeat(SHOWN_IN_CLUSTER / 2));
        let e = shown(&r).unwrap_err();
        assert!(e.contains("it was not sent"), "{e}");
        r.body = Some("x".repeat(SHOWN_IN_CLUSTER / 2));
        assert_eq!(shown(&r).unwrap()["body"], r.body.clone().unwrap());
        r.dry_run = Some(kubeleash_tower::DryRun {
            status: 200,
            rejected: None,
            changes: Vec::new(),
            diff: "y".repeat(SHOWN_IN_CLUSTER / 2),
        });
        assert!(shown(&r).is_err(), "the body and the diff together");
    }

    /// Lease names are valid DNS-1123 names, distinct for names a Lease cannot spell apart.
    #[test]
    fn lease_names_are_valid_and_distinct() {
        let names = [
            "replica_x",
            "Replica-X",
            "replica-x",
            "a b",
            "a-b",
            &"p".repeat(300),
        ];
        let leases: std::collections::BTreeSet<String> =
            names.iter().map(|n| lease_name(n)).collect();
        assert_eq!(leases.len(), names.len(), "{leases:?}");
        for l in &leases {
            assert!(l.len() <= 63, "{l}");
            assert!(
                l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'),
                "{l}"
            );
            assert!(l.ends_with(|c: char| c.is_ascii_alphanumeric()), "{l}");
        }
    }
}
