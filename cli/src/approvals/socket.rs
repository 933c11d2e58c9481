//! Held requests wait on a Unix socket only the operator's user can open.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kubeleash_tower::{Answer, ApprovalRequest, Approver, MAX_SHOWN_BODY};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{
    Fit, MAX_WINDOW, Widening, clean_name, clean_reason, fit, format_duration, one_line, same_user,
};

/// The longest request line the socket reads.
const MAX_LINE: usize = 64 * 1024;

/// The most held requests one `list` answer carries; `offset` pages through the rest.
pub(crate) const PAGE: usize = 32;

/// Who answers when the proxy itself does (shutdown, a closed socket).
const KUBELEASH: &str = "kubeleash";

/// Held requests wait here until an operator answers them over a Unix socket (mode 0600, in a
/// directory only the operator can write) with `kubeleash approvals`. Never served on TCP.
///
/// Cheap to clone; the socket is served until the last clone is dropped or [`close`] is called,
/// and the socket file is removed then.
///
/// [`close`]: SocketApprover::close
#[derive(Clone)]
pub struct SocketApprover {
    inner: Arc<Inner>,
    serving: Arc<Serving>,
}

impl std::fmt::Debug for SocketApprover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketApprover")
            .field("path", &self.serving.path)
            .field("pending", &self.pending_count())
            .finish()
    }
}

struct Inner {
    state: Mutex<State>,
    next: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Held requests in arrival order.
    pending: BTreeMap<u64, Held>,
    /// Set by `close`: later requests are denied with this reason at once.
    closed: Option<String>,
}

struct Held {
    request: ApprovalRequest,
    since: Instant,
    reply: oneshot::Sender<Answer>,
}

/// The serving task and the socket file, both gone with the last clone.
struct Serving {
    path: PathBuf,
    task: JoinHandle<()>,
    dev: u64,
    ino: u64,
}

impl Serving {
    fn stop(&self) {
        self.task.abort();
        // Only the socket this approver bound: another proxy may have replaced it since.
        if let Ok(m) = fs::symlink_metadata(&self.path)
            && m.dev() == self.dev
            && m.ino() == self.ino
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Answer the one held request with this id with what `answer` makes of it: `None` when
    /// none is held under it, `Some(Err)` when `answer` refuses (the request stays held), else
    /// whether it was still waiting for the answer (a caller may have timed out an instant
    /// before) and what `answer` said besides.
    fn resolve<T>(
        &self,
        id: &str,
        answer: impl FnOnce(&ApprovalRequest) -> Result<(Answer, T), String>,
    ) -> Option<Result<(bool, T), String>> {
        let (held, answer, said) = {
            let mut s = self.lock();
            let key = s
                .pending
                .iter()
                .find(|(_, h)| h.request.id == id)
                .map(|(k, _)| *k)?;
            let made = s.pending.get(&key).map(|h| answer(&h.request))?;
            let (answer, said) = match made {
                Ok(a) => a,
                Err(e) => return Some(Err(e)),
            };
            (s.pending.remove(&key)?, answer, said)
        };
        Some(Ok((held.reply.send(answer).is_ok(), said)))
    }

    fn deny_all(&self, reason: &str, close: bool) -> usize {
        let held: Vec<Held> = {
            let mut s = self.lock();
            if close {
                s.closed = Some(reason.to_string());
            }
            std::mem::take(&mut s.pending).into_values().collect()
        };
        let n = held.len();
        for h in held {
            let _ = h.reply.send(Answer::Deny {
                by: KUBELEASH.into(),
                reason: reason.to_string(),
            });
        }
        n
    }

    /// One page of the held requests, in arrival order, each body cut to what an approver is
    /// shown: however many and however large the holds, the answer stays small enough to read.
    fn list(&self, offset: usize) -> Value {
        let s = self.lock();
        let pending: Vec<Value> = s
            .pending
            .values()
            .skip(offset)
            .take(PAGE)
            .map(|h| {
                let mut v = serde_json::to_value(&h.request).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("waiting_seconds".into(), json!(h.since.elapsed().as_secs()));
                    if let Some(Value::String(body)) = m.get_mut("body") {
                        cut_body(body);
                    }
                }
                v
            })
            .collect();
        json!({ "pending": pending, "total": s.pending.len(), "offset": offset })
    }
}

/// A body longer than the layer shows an approver (a layer of another version, an embedder's
/// own caller) is cut here too.
fn cut_body(body: &mut String) {
    // Room for the layer's own note after its cut.
    let max = MAX_SHOWN_BODY + 512;
    if body.len() <= max {
        return;
    }
    let total = body.len();
    let mut cut = MAX_SHOWN_BODY;
    while !body.is_char_boundary(cut) {
        cut -= 1;
    }
    body.truncate(cut);
    body.push_str(&format!(
        "\n[kubeleash: {} more bytes of the (masked) body are not shown]",
        total - cut
    ));
}

/// Removes a held request whose caller stopped waiting (the layer's timeout, a dropped
/// connection), so it is not listed any more.
struct Unregister<'a> {
    inner: &'a Inner,
    key: u64,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.inner.lock().pending.remove(&self.key);
    }
}

impl SocketApprover {
    /// Serve approvals on a Unix socket at `path`. Call inside a tokio runtime.
    ///
    /// The parent directory is created (mode 0700) when missing, and must not be writable by
    /// other users (unless sticky, like /tmp) nor owned by another user: they could replace
    /// the socket. The socket gets mode 0600 before anyone can reach it. A stale socket at
    /// `path` is removed; a live one (another proxy) or anything that is not a socket is an
    /// error.
    pub fn bind(path: &Path) -> io::Result<SocketApprover> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "the approvals socket must be bound inside a tokio runtime",
            ));
        }
        let ctx = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        check_length(path)?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&parent)
                .map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot create {}: {e}", parent.display()))
                })?;
        }
        // Bind inside a fresh private directory, make the socket 0600, then link it into
        // place: there is no moment at which another user could connect, and an existing file
        // is never replaced (link fails instead).
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let staging = parent.join(format!(
            ".kubeleash-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot create a directory in {}: {e}", parent.display()),
                )
            })?;
        let staged = staging.join("s");
        let bound = (|| {
            let me = fs::metadata(&staging)?.uid();
            check_parent(&parent, me)?;
            clear_stale(path)?;
            let listener = UnixListener::bind(&staged).map_err(ctx)?;
            fs::set_permissions(&staged, fs::Permissions::from_mode(0o600)).map_err(ctx)?;
            fs::hard_link(&staged, path).map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{} appeared while the socket was being set up; is another kubeleash proxy starting?",
                            path.display()
                        ),
                    )
                } else {
                    ctx(e)
                }
            })?;
            Ok::<_, io::Error>(listener)
        })();
        let _ = fs::remove_file(&staged);
        let _ = fs::remove_dir(&staging);
        let listener = bound?;
        let meta = fs::symlink_metadata(path).map_err(ctx)?;

        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            next: AtomicU64::new(0),
        });
        let task = tokio::spawn(serve(listener, Arc::clone(&inner), meta.uid()));
        Ok(SocketApprover {
            inner,
            serving: Arc::new(Serving {
                path: path.to_path_buf(),
                task,
                dev: meta.dev(),
                ino: meta.ino(),
            }),
        })
    }

    /// The socket's path, to tell the operator (`kubeleash approvals list --socket PATH`).
    pub fn path(&self) -> &Path {
        &self.serving.path
    }

    /// How many requests are held.
    pub fn pending_count(&self) -> usize {
        self.inner.lock().pending.len()
    }

    /// Deny every held request with `reason` (answered by `kubeleash`); how many there were.
    /// Requests held afterwards wait as usual: see [`close`](SocketApprover::close).
    #[allow(
        dead_code,
        reason = "the binary denies with `close`; tests and embedders use this"
    )]
    pub fn deny_all(&self, reason: &str) -> usize {
        self.inner.deny_all(reason, false)
    }

    /// For shutdown: deny every held request and every later one with `reason`, stop serving
    /// and remove the socket file. Returns how many were held.
    pub fn close(&self, reason: &str) -> usize {
        let n = self.inner.deny_all(reason, true);
        self.serving.stop();
        n
    }
}

#[async_trait::async_trait]
impl Approver for SocketApprover {
    async fn approve(&self, request: ApprovalRequest) -> Answer {
        let (tx, rx) = oneshot::channel();
        let key = self.inner.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut s = self.inner.lock();
            if let Some(reason) = &s.closed {
                return Answer::Deny {
                    by: KUBELEASH.into(),
                    reason: reason.clone(),
                };
            }
            // An id names one request: a second hold under a held id (not from the layer,
            // whose ids are random) is refused rather than answered with the first.
            if s.pending.values().any(|h| h.request.id == request.id) {
                return Answer::Deny {
                    by: KUBELEASH.into(),
                    reason: "another request is already held under this approval id".into(),
                };
            }
            s.pending.insert(
                key,
                Held {
                    request,
                    since: Instant::now(),
                    reply: tx,
                },
            );
        }
        let _unregister = Unregister {
            inner: &self.inner,
            key,
        };
        rx.await.unwrap_or_else(|_| Answer::Deny {
            by: KUBELEASH.into(),
            reason: "the approvals socket stopped".into(),
        })
    }
}

/// `sun_path` holds 108 bytes on Linux, 104 elsewhere, the terminating NUL included.
fn check_length(path: &Path) -> io::Result<()> {
    let max = if cfg!(target_os = "linux") { 107 } else { 103 };
    let len = path.as_os_str().len();
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{}: a Unix socket path can be at most {max} bytes, this one is {len}; choose a shorter one",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Another user who can write the directory could replace the socket with their own.
fn check_parent(parent: &Path, me: u32) -> io::Result<()> {
    let m = fs::metadata(parent)?;
    if !m.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory", parent.display()),
        ));
    }
    let mode = m.permissions().mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is writable by other users (mode {:o}), who could replace the approvals socket; use a private directory (mode 0700)",
                parent.display(),
                mode & 0o7777
            ),
        ));
    }
    if m.uid() != me && m.uid() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to another user (uid {}), who could replace the approvals socket; use a directory of your own",
                parent.display(),
                m.uid()
            ),
        ));
    }
    Ok(())
}

/// Remove a socket nobody serves; refuse a live one and anything that is not a socket.
fn clear_stale(path: &Path) -> io::Result<()> {
    let m = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
        }
    };
    if !m.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is being served by another process (another kubeleash proxy?); stop it or choose another socket path",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot remove the stale socket {}: {e}", path.display()),
                )
            })
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "{} exists and cannot be checked for staleness: {e}",
                path.display()
            ),
        )),
    }
}

async fn serve(listener: UnixListener, inner: Arc<Inner>, owner: u32) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, Arc::clone(&inner), owner));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                eprintln!("kubeleash: approvals socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn connection(stream: UnixStream, inner: Arc<Inner>, owner: u32) {
    // The file mode already keeps others out; this holds even if someone loosens it.
    let peer = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(_) => return,
    };
    let (r, mut w) = stream.into_split();
    if peer != owner && peer != 0 {
        let _ = w
            .write_all(b"{\"ok\":false,\"error\":\"this socket answers only its owner\"}\n")
            .await;
        return;
    }
    let mut r = BufReader::new(r);
    loop {
        let mut line = Vec::new();
        match (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.len() > MAX_LINE {
            let _ = w
                .write_all(b"{\"ok\":false,\"error\":\"request line too long\"}\n")
                .await;
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut answer = handle(&inner, &line, peer).to_string();
        answer.push('\n');
        if w.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Op {
    List {
        #[serde(default)]
        offset: usize,
    },
    Approve {
        id: String,
        by: Option<String>,
        for_seconds: Option<u64>,
        reason: Option<String>,
        /// How far the approval reaches besides the one request.
        #[serde(default)]
        widen: Option<Widening>,
    },
    Deny {
        id: String,
        by: Option<String>,
        reason: Option<String>,
    },
}

fn handle(inner: &Inner, line: &[u8], peer: u32) -> Value {
    let op: Op = match serde_json::from_slice(line) {
        Ok(op) => op,
        Err(e) => return json!({"ok": false, "error": format!("bad request: {e}")}),
    };
    let by = |by: Option<String>| {
        by.map(|b| clean_name(&b))
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| format!("uid {peer}"))
    };
    let (id, resolved) = match op {
        Op::List { offset } => return inner.list(offset),
        Op::Approve {
            id,
            by: who,
            for_seconds,
            reason,
            widen,
        } => {
            let name = by(who);
            let reason = reason.map(|r| clean_reason(&r)).filter(|r| !r.is_empty());
            let window = for_seconds.filter(|s| *s > 0).map(Duration::from_secs);
            if window.is_some_and(|w| w > MAX_WINDOW) {
                return json!({"ok": false, "error": format!(
                    "a window can be at most {}; for longer, allow the requests in the policy",
                    format_duration(MAX_WINDOW)
                )});
            }
            let widen = match widening(widen, window) {
                Ok(w) => w,
                Err(e) => return json!({"ok": false, "error": e}),
            };
            let resolved = inner.resolve(&id, |request| {
                approve(request, name, reason.as_deref(), window, widen)
            });
            (id, resolved)
        }
        Op::Deny {
            id,
            by: who,
            reason,
        } => {
            let by = by(who);
            let reason = reason
                .map(|r| clean_reason(&r))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "no reason given".into());
            let resolved = inner.resolve(&id, |_| Ok((Answer::Deny { by, reason }, Said::Done)));
            (id, resolved)
        }
    };
    match resolved {
        None => json!({"ok": false, "error": format!("no pending approval `{}`", one_line(&id))}),
        Some(Err(e)) => json!({"ok": false, "error": e, "still_held": true}),
        Some(Ok((false, _))) => json!({"ok": false, "error": format!(
            "approval `{}` stopped waiting (it timed out and was denied) before the answer",
            one_line(&id)
        )}),
        Some(Ok((true, Said::Done))) => json!({"ok": true}),
        Some(Ok((true, Said::Fitted(Fit::Widened)))) => json!({"ok": true, "widened": true}),
        Some(Ok((true, Said::Fitted(Fit::Exactly(why))))) => {
            json!({"ok": true, "exactly": why})
        }
        Some(Ok((true, Said::Own(user)))) => {
            json!({"ok": false, "answered": true, "error": format!(
                "approval `{}` was answered in the name of `{}`, the user whose request it is: a \
                 request cannot approve itself, so it was refused; another person must approve such \
                 requests",
                one_line(&id),
                one_line(&user)
            )})
        }
    }
}

/// What an answer said besides being given, for the approver.
enum Said {
    Done,
    /// What became of the widening asked for.
    Fitted(Fit),
    /// It approved the request in the name of the user who made it (this user): the layer
    /// refuses the request.
    Own(String),
}

/// The widening an approve line asks for, if any, with `for_seconds` as its time when it gives
/// none of its own; giving the time twice is refused.
fn widening(widen: Option<Widening>, window: Option<Duration>) -> Result<Option<Widening>, String> {
    let Some(mut w) = widen.filter(|w| !w.is_exact()) else {
        return Ok(None);
    };
    if let Some(window) = window {
        if w.seconds.is_some() {
            return Err(
                "the time is given twice (`for_seconds` and `widen.seconds`); give it once".into(),
            );
        }
        w.seconds = Some(window.as_secs());
    }
    Ok(Some(w))
}

/// The answer an approval of `request` by `name` gives: a window, or a widening once [`fit`]
/// accepts it (and what it said, for the approver).
fn approve(
    request: &ApprovalRequest,
    name: String,
    reason: Option<&str>,
    window: Option<Duration>,
    widen: Option<Widening>,
) -> Result<(Answer, Said), String> {
    let user = &request.identity.user;
    let own = same_user(&name, user);
    // `Answer::Approve` has no reason; keep the operator's in the approver's name so it reaches
    // the record. Not in the requester's own name, which the layer must recognize to refuse it.
    let by = match reason {
        Some(r) if !own => format!("{name} (reason: {r})"),
        _ => name,
    };
    let (answer, said) = match widen {
        None => (Answer::Approve { by, window }, Said::Done),
        Some(widening) => {
            let fitted = fit(request, &widening)?;
            (Answer::Widen { by, widening }, Said::Fitted(fitted))
        }
    };
    Ok((answer, if own { Said::Own(user.clone()) } else { said }))
}
