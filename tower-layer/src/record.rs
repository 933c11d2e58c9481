//! Recording every request: the [`Recorder`] trait and the built-in JSON Lines recorder, which
//! writes the hash-chained format of [`kubeleash_core::record`] (or Kubernetes audit events).
//!
//! Writing happens on a background thread fed by a queue, so the request path never blocks on
//! the disk; the thread writes what has queued up in one batch (one `write` per 256 KiB, and one
//! sync when a record in it must be durable). The queue is bounded where requests are admitted:
//! when it is full, a new request either waits (asynchronously) for room or is refused
//! ([`WhenFull`]); a record of an admitted request is never dropped nor waited for. Records of
//! refused, written and approved requests are waited for (written and synced) before the answer
//! goes out or the write is sent.
//!
//! Recording fails closed: once a write fails (a full disk, say), the recorder admits no new
//! request ([`Recorder::admits`] is false and [`Recorder::admit`] errs) and the layer refuses
//! every request with 503 until a record is written again. A [`JsonlRecorder`] that failed
//! stays failed (its file may end in a torn line): open a new one.

use kubeleash_core::record::RecordKind;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use kubeleash_core::record::{
    CHECKPOINT_AFTER, CHECKPOINT_EVERY, Chain, Opening, Record, RecordBody, Signer, audit_event,
    resume_state, rfc3339,
};
use tokio::sync::oneshot;

mod inbox;
use inbox::Inbox;

/// Why a record could not be written.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The queue is full and the recorder refuses new requests until it drains.
    #[error("the recording queue is full; kubeleash refuses new requests until it drains")]
    Full,
    /// The writer stopped (disk full, file removed, shut down).
    #[error("the recorder cannot write: {0}")]
    Write(String),
}

/// The current time as records carry it.
pub fn now() -> String {
    rfc3339_at(SystemTime::now())
}

/// `at` as an RFC 3339 UTC timestamp with milliseconds.
pub fn rfc3339_at(at: SystemTime) -> String {
    rfc3339(
        at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    )
}

/// A boxed future, for the one async method of [`Recorder`].
pub type Durable<'a> = Pin<Box<dyn Future<Output = Result<(), RecordError>> + Send + 'a>>;

/// Receives one record per request (and one when a held request starts waiting).
///
/// No method may block the calling thread for long: the layer calls them on the async runtime.
/// An error from [`record`](Recorder::record) or [`record_durable`](Recorder::record_durable)
/// makes the layer refuse every request (503) until a later record is written.
pub trait Recorder: Send + Sync {
    /// Queue a record; returns at once. An error when it cannot be recorded.
    fn record(&self, record: RecordBody) -> Result<(), RecordError>;

    /// Write a record and resolve once it is on disk (written and synced).
    fn record_durable(&self, record: RecordBody) -> Durable<'_>;

    /// Whether a new request may start now without waiting (false when the queue is full, or
    /// the recorder cannot write). When false, the layer awaits [`admit`](Recorder::admit).
    fn admits(&self) -> bool {
        true
    }

    /// Resolve when a new request may start: at once, after waiting for room in the queue, or
    /// with the error that refuses it (a queue full and set to refuse, a failed writer).
    fn admit(&self) -> Durable<'_> {
        let ok = self.admits();
        Box::pin(async move { if ok { Ok(()) } else { Err(RecordError::Full) } })
    }

    /// Whether this recorder records anything; when not, no record is built.
    fn enabled(&self) -> bool {
        true
    }

    /// Record response bodies too, capped at this many bytes each.
    fn body_cap(&self) -> Option<usize> {
        None
    }
}

/// Records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRecorder;

impl Recorder for NoRecorder {
    fn record(&self, _record: RecordBody) -> Result<(), RecordError> {
        Ok(())
    }

    fn record_durable(&self, _record: RecordBody) -> Durable<'_> {
        Box::pin(async { Ok(()) })
    }

    fn enabled(&self) -> bool {
        false
    }
}

/// What the JSON Lines recorder does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenFull {
    /// Make the request wait for room (the default: nothing is lost, requests slow down).
    #[default]
    Block,
    /// Refuse new requests (503) until the queue drains.
    Refuse,
}

/// The file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// kubeleash's hash-chained records.
    #[default]
    Chained,
    /// Kubernetes audit events (`audit.k8s.io/v1` `Event`), one per line.
    Audit,
}

/// Options of the JSON Lines recorder.
#[derive(Debug, Clone)]
pub struct RecorderOptions {
    /// Queue length. Default 1024.
    pub queue: usize,
    /// What a full queue does.
    pub when_full: WhenFull,
    /// The file format.
    pub format: Format,
    /// Also record delivered (masked) response bodies, capped at this many bytes each.
    pub body_cap: Option<usize>,
    /// The session id; default: derived from the time the recorder opened.
    pub session: Option<String>,
    /// Sign the chain with this key: a checkpoint every [`CHECKPOINT_EVERY`] records, at most
    /// [`CHECKPOINT_AFTER`] after any record, at close, and first on resuming a log that did
    /// not end with this key's signed close (see [`kubeleash_core::record::Signer`] and
    /// [`resume_state`]). Chained format only.
    pub signer: Option<Arc<Signer>>,
}

impl Default for RecorderOptions {
    fn default() -> Self {
        RecorderOptions {
            queue: 1024,
            when_full: WhenFull::Block,
            format: Format::Chained,
            body_cap: None,
            session: None,
            signer: None,
        }
    }
}

enum Msg {
    Record(
        Box<RecordBody>,
        Option<oneshot::Sender<Result<(), RecordError>>>,
    ),
    Close(std::sync::mpsc::Sender<()>),
}

impl Msg {
    /// Somebody waits for this one to be written: the writer must not dwell over it.
    fn urgent(&self) -> bool {
        matches!(self, Msg::Record(_, Some(_)) | Msg::Close(_))
    }
}

/// Appends records to a file as JSON Lines.
pub struct JsonlRecorder {
    inbox: Arc<Inbox<Msg>>,
    /// Records queued and not yet written, and the writer's signal that it took one.
    state: Arc<WriterState>,
    options: RecorderOptions,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// What the request path and the writer thread share.
struct WriterState {
    pending: AtomicUsize,
    drained: tokio::sync::Notify,
    failed: AtomicBool,
    why: Mutex<Option<String>>,
}

impl WriterState {
    fn fail(&self, why: String) {
        *self.why.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        self.failed.store(true, Ordering::Release);
        self.drained.notify_waiters();
    }
}

impl std::fmt::Debug for JsonlRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlRecorder")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Where an existing chained log leaves off; a torn last line is cut away first. With a
/// signer, also what its first checkpoint must state ([`resume_state`]), or an error when the
/// log is one the recorder cannot vouch for (a broken chain, a checkpoint that does not verify):
/// signing on top of it would make whatever was written there look like the recorder's.
fn resume(
    file: &mut File,
    session: &str,
    signer: Option<&Signer>,
) -> std::io::Result<(Chain, Option<Opening>)> {
    let mut text = String::new();
    BufReader::new(&*file).read_to_string(&mut text)?;
    // The recorder stopped in the middle of a line: that record was never complete.
    let good_len = text.rfind('\n').map_or(0, |i| i + 1);
    if good_len < text.len() {
        file.set_len(good_len as u64)?;
        text.truncate(good_len);
    }
    file.seek(SeekFrom::End(0))?;
    let opening = match signer {
        Some(s) => resume_state(&text, s.key_id()).map_err(|why| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "the record does not verify ({why}), so kubeleash will not sign on top of it: move it away (keep it as evidence) and start again"
                ),
            )
        })?,
        None => None,
    };
    let last = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<Record>(l.trim_end()).ok());
    let chain = match last {
        Some(r) => Chain::resume(session, r.seq.saturating_add(1), r.hash),
        None => Chain::new(session),
    };
    Ok((chain, opening))
}

impl JsonlRecorder {
    /// Open (or continue) a log at `path`.
    pub fn open(path: impl AsRef<Path>, options: RecorderOptions) -> std::io::Result<Self> {
        let path: PathBuf = path.as_ref().to_path_buf();
        // Records name who did what to which object: readable by the operator alone.
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt as _;
            OpenOptions::new()
                .read(true)
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)?
        };
        let session = options.session.clone().unwrap_or_else(|| {
            format!(
                "s{}",
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis()
            )
        });
        let (chain, opening) = match (options.format, &options.signer) {
            (Format::Chained, signer) => resume(&mut file, &session, signer.as_deref())?,
            (Format::Audit, None) => (Chain::new(session), None),
            (Format::Audit, Some(_)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "audit events are not chained, so they cannot be signed: sign the chained format, and ship audit events from it",
                ));
            }
        };
        let signing = options
            .signer
            .clone()
            .map(|signer| Signing::new(signer, opening));
        // A dwelling writer is woken early once a quarter of the admission bound waits, so
        // the dwell never makes admission wait for room.
        let inbox = Arc::new(Inbox::new((options.queue / 4).clamp(1, MAX_BATCH)));
        let inbox_w = Arc::clone(&inbox);
        let format = options.format;
        let state = Arc::new(WriterState {
            pending: AtomicUsize::new(0),
            drained: tokio::sync::Notify::new(),
            failed: AtomicBool::new(false),
            why: Mutex::new(None),
        });
        let state_w = Arc::clone(&state);
        let writer = std::thread::Builder::new()
            .name("kubeleash-recorder".into())
            .spawn(move || {
                // Closed however the writer ends (a panic too), so nobody waits on it: a
                // panic also fails the recorder, so admission refuses instead of waiting for
                // room that records nobody will take would never free.
                let _failed = FailOnPanic(&state_w);
                let _closed = inbox::CloseOnDrop(&inbox_w);
                write_loop(&inbox_w, file, chain, format, signing, &state_w);
            })?;
        Ok(JsonlRecorder {
            inbox,
            state,
            options,
            writer: Mutex::new(Some(writer)),
        })
    }

    fn failure(&self) -> Option<RecordError> {
        if !self.state.failed.load(Ordering::Acquire) {
            return None;
        }
        let why = self.state.why.lock().unwrap_or_else(|p| p.into_inner());
        Some(RecordError::Write(
            why.clone()
                .unwrap_or_else(|| "the writer has stopped".into()),
        ))
    }

    /// Queue a message; never blocks (the bound is kept where requests are admitted).
    fn send(&self, msg: Msg) -> Result<(), RecordError> {
        if let Some(e) = self.failure() {
            return Err(e);
        }
        self.state.pending.fetch_add(1, Ordering::AcqRel);
        let urgent = msg.urgent();
        self.inbox.send(msg, urgent).map_err(|_| {
            self.state.pending.fetch_sub(1, Ordering::AcqRel);
            RecordError::Write("the writer has stopped".into())
        })
    }

    fn has_room(&self) -> bool {
        self.state.pending.load(Ordering::Acquire) < self.options.queue.max(1)
    }

    /// Write the closing record, sync, and stop the writer. Later records fail. This waits
    /// for the writer thread: call it off the async runtime's threads, or at shutdown.
    pub fn close(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        self.state.pending.fetch_add(1, Ordering::AcqRel);
        if self.inbox.send(Msg::Close(tx), true).is_ok() {
            let _ = rx.recv();
        }
        if let Some(h) = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = h.join();
        }
    }
}

impl Drop for JsonlRecorder {
    fn drop(&mut self) {
        self.close();
    }
}

/// The batch size that wakes a dwelling writer at the latest (one write, at most
/// one sync for all of them).
const MAX_BATCH: usize = 512;

/// The writer's line buffer: written out when it holds this much, and kept at this capacity
/// between batches.
const LINES_KEPT: usize = 256 * 1024;

/// The writer's signing state: when the next checkpoint is due, and what the first one states.
struct Signing {
    signer: Arc<Signer>,
    /// Records written since the last checkpoint.
    unsigned: u64,
    /// When the oldest of them was written.
    since: Option<std::time::Instant>,
    /// What the first checkpoint states about the log resumed, written before anything else.
    opening: Option<Opening>,
}

impl Signing {
    fn new(signer: Arc<Signer>, opening: Option<Opening>) -> Self {
        Signing {
            signer,
            unsigned: 0,
            since: None,
            opening,
        }
    }

    fn wrote(&mut self) {
        self.unsigned += 1;
        self.since.get_or_insert_with(std::time::Instant::now);
    }

    /// When the writer must wake to sign what it wrote, if nothing else wakes it first.
    fn deadline(&self) -> Option<std::time::Instant> {
        self.since.map(|t| t + CHECKPOINT_AFTER)
    }

    fn due(&self) -> bool {
        self.unsigned >= CHECKPOINT_EVERY
            || self
                .deadline()
                .is_some_and(|d| d <= std::time::Instant::now())
    }

    /// Append a checkpoint (and its newline) to `lines`.
    fn checkpoint(&mut self, chain: &mut Chain, lines: &mut Vec<u8>) {
        let opening = self.opening.take().unwrap_or_default();
        chain.checkpoint(&self.signer, &now(), &opening, lines);
        lines.push(b'\n');
        self.unsigned = 0;
        self.since = None;
    }
}

/// Fails the recorder if the writer thread panics.
struct FailOnPanic<'a>(&'a WriterState);

impl Drop for FailOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0
                .fail("the recorder's writer stopped unexpectedly".into());
        }
    }
}

/// The writer: group commit. It takes every record queued (dwelling until [`inbox::DWELL`] after
/// it took the last batch, while nobody waits for one: see [`inbox`]), writes them in order
/// with one `write` per 256 KiB, syncs once if any of them (or the close) must be durable, and
/// only then acknowledges the durable ones: a record acknowledged is on disk, and many records
/// share one write and one sync instead of paying for their own. It returns after the close (which `Drop` sends).
fn write_loop(
    inbox: &Inbox<Msg>,
    file: File,
    mut chain: Chain,
    format: Format,
    mut signing: Option<Signing>,
    state: &WriterState,
) {
    let mut out = file;
    // A batch's lines, written every `LINES_KEPT` bytes; kept between batches.
    let mut lines: Vec<u8> = Vec::with_capacity(LINES_KEPT);
    let mut batch: Vec<Msg> = Vec::with_capacity(MAX_BATCH);
    let mut dwell = None;
    // A resumed log's rotation, or what was left unsigned, is on record before anything else.
    if let Some(s) = signing.as_mut().filter(|s| s.opening.is_some()) {
        s.checkpoint(&mut chain, &mut lines);
        if let Err(e) = out.write_all(&lines).and_then(|()| out.sync_data()) {
            state.fail(e.to_string().to_lowercase());
        }
        lines.clear();
    }
    loop {
        inbox.take(
            &mut batch,
            dwell,
            signing.as_ref().and_then(Signing::deadline),
        );
        dwell = Some(std::time::Instant::now() + inbox::DWELL);
        state.pending.fetch_sub(batch.len(), Ordering::AcqRel);
        state.drained.notify_waiters();
        if state.failed.load(Ordering::Acquire) {
            // Nothing more is written after a failure: the file may end in a torn line.
            let why = state.why.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let e = RecordError::Write(why.unwrap_or_else(|| "the writer has stopped".into()));
            for msg in batch.drain(..) {
                match msg {
                    Msg::Record(_, Some(ack)) => {
                        let _ = ack.send(Err(e.clone()));
                    }
                    Msg::Record(_, None) => {}
                    Msg::Close(done) => {
                        let _ = done.send(());
                        return;
                    }
                }
            }
            continue;
        }
        let mut acks = Vec::new();
        let mut close = None;
        let mut durable = false;
        let mut r = Ok(());
        for msg in batch.drain(..) {
            let (body, ack) = match msg {
                Msg::Record(body, ack) => (*body, ack),
                Msg::Close(done) => {
                    close = Some(done);
                    (
                        RecordBody {
                            time: now(),
                            kind: RecordKind::End,
                            ..Default::default()
                        },
                        None,
                    )
                }
            };
            durable |= ack.is_some() || close.is_some();
            match format {
                Format::Chained => {
                    chain.seal_into(&body, &mut lines);
                    lines.push(b'\n');
                    if let Some(s) = signing.as_mut() {
                        s.wrote();
                        // The closing record is signed with everything before it.
                        if s.unsigned >= CHECKPOINT_EVERY || close.is_some() {
                            s.checkpoint(&mut chain, &mut lines);
                        }
                    }
                }
                Format::Audit => {
                    let sealed = chain.seal(body);
                    if let Ok(r) = serde_json::from_str::<Record>(&sealed)
                        && r.body.kind != RecordKind::End
                    {
                        lines.extend_from_slice(audit_event(&r).to_string().as_bytes());
                        lines.push(b'\n');
                    }
                }
            }
            acks.extend(ack);
            if lines.len() >= LINES_KEPT {
                // A batch of recorded bodies is written as it grows, not held whole: hostile
                // bodies escape to six times their size.
                r = r.and_then(|()| out.write_all(&lines));
                lines.clear();
            }
            if close.is_some() {
                // Records after the close are not written; their acknowledgements are
                // dropped, which their senders read as "the writer has stopped".
                break;
            }
        }
        // Records that waited long enough for a signature (or a wake-up for nothing but that,
        // with `batch` empty) get one now.
        if let Some(s) = signing.as_mut().filter(|s| s.due()) {
            s.checkpoint(&mut chain, &mut lines);
        }
        r = r.and_then(|()| out.write_all(&lines));
        if lines.capacity() > LINES_KEPT * 4 {
            // A batch of recorded bodies: give the memory back.
            lines = Vec::with_capacity(LINES_KEPT);
        }
        lines.clear();
        if durable {
            r = r.and_then(|()| out.sync_data());
        }
        let r = r.map_err(|e| RecordError::Write(e.to_string().to_lowercase()));
        if let Err(RecordError::Write(e)) = &r {
            state.fail(e.clone());
        }
        for ack in acks {
            let _ = ack.send(r.clone());
        }
        if let Some(done) = close {
            let _ = done.send(());
            return;
        }
    }
}

impl Recorder for JsonlRecorder {
    fn record(&self, record: RecordBody) -> Result<(), RecordError> {
        self.send(Msg::Record(Box::new(record), None))
    }

    fn record_durable(&self, record: RecordBody) -> Durable<'_> {
        let (tx, rx) = oneshot::channel();
        let sent = self.send(Msg::Record(Box::new(record), Some(tx)));
        Box::pin(async move {
            sent?;
            rx.await
                .unwrap_or_else(|_| Err(RecordError::Write("the writer has stopped".into())))
        })
    }

    fn admits(&self) -> bool {
        !self.state.failed.load(Ordering::Acquire) && self.has_room()
    }

    fn admit(&self) -> Durable<'_> {
        Box::pin(async move {
            loop {
                let drained = self.state.drained.notified();
                let mut drained = std::pin::pin!(drained);
                // Registered before the checks, so a drain between them still wakes this.
                drained.as_mut().enable();
                if let Some(e) = self.failure() {
                    return Err(e);
                }
                if self.has_room() {
                    return Ok(());
                }
                if self.options.when_full == WhenFull::Refuse {
                    return Err(RecordError::Full);
                }
                drained.await;
            }
        })
    }

    fn body_cap(&self) -> Option<usize> {
        self.options.body_cap
    }
}

/// A shared recorder records: the layer and its owner (which closes it) can hold one together.
impl<T: Recorder + ?Sized> Recorder for Arc<T> {
    fn record(&self, record: RecordBody) -> Result<(), RecordError> {
        (**self).record(record)
    }

    fn record_durable(&self, record: RecordBody) -> Durable<'_> {
        (**self).record_durable(record)
    }

    fn admits(&self) -> bool {
        (**self).admits()
    }

    fn admit(&self) -> Durable<'_> {
        (**self).admit()
    }

    fn enabled(&self) -> bool {
        (**self).enabled()
    }

    fn body_cap(&self) -> Option<usize> {
        (**self).body_cap()
    }
}
