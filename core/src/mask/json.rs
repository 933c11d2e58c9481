//! The streaming JSON masker: a byte-level state machine that copies every byte it does not
//! mask straight through, holds only what it must judge (a string, a key, an element a filter
//! tests), and stops at the last safe byte on anything it cannot parse.
//!
//! Masks apply relative to a Kubernetes object ("anchor"): the document itself, each `items[*]`
//! of a list, each `rows[*].object` of a Table, each watch event's `object`. An anchor's kind
//! comes from its own `kind` member, or from its list's kind (`SecretList` items are Secrets),
//! and a response to a request for a built-in resource is judged as that kind as well; while it
//! is unknown, every rule applies, so a late or missing `kind` can only mask more. An item's own
//! kind that contradicts its list's ends the response, in any list.

mod quiet;
mod skip;
#[cfg(test)]
mod test_support;

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::MaskError;
use super::path::Step;
use super::rules::{Action, MARKER, MARKER_BASE64, MaskSet, Replace};
use super::strings::{escape_into, unescape};

/// How many credential-key answers a masker remembers, and the longest key it remembers one
/// for: enough for the distinct label, annotation and ConfigMap keys of a list, bounded.
const CRED_KEY_CACHE: usize = 32;
const CRED_KEY_CACHE_KEY_LEN: usize = 96;

/// A position in one rule's path: the next step to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    rule: u16,
    step: u16,
    /// Started at an object of unknown kind (see `Role::Loose`): the rule's kinds and groups
    /// cannot be checked, so it applies.
    free: bool,
}

/// What a container is, as far as finding Kubernetes objects in it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Plain,
    /// A Kubernetes object: rules start here.
    Anchor,
    /// `items` of an anchor: its elements are anchors.
    Items,
    /// `rows` of an anchor (a Table): its elements are rows.
    Rows,
    /// A Table row: its `object` is an anchor.
    Row,
    /// A watch event: its `object` is an anchor.
    Event,
    /// A Table's `columnDefinitions`: its elements are column definitions.
    ColumnDefs,
    /// One column definition: its `format` says whether it is the name column.
    ColumnDef,
    /// A Table row's `cells`.
    Cells,
    /// A command line (container `args` or `command`): one argument per element.
    Argv,
    /// An object the masker cannot place (in a root array, a Status's details, a custom
    /// resource): every rule starts here too, whatever its kinds and groups.
    Loose,
}

/// What is known of the program a container runs, for its short flags (`-p X`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tool {
    /// No `command` seen (the image's entrypoint, or `args` before `command`): strict.
    Unknown,
    /// A program whose short flags carry credentials (`mysql -pX`, `redis-cli -a X`).
    Known,
    /// Any other program: only long credential flags count.
    Other,
}

/// What the next element of a command line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NextArg {
    Plain,
    /// The value of a credential flag: masked whole.
    Secret,
    /// The value of `-u`/`--user`: `user:password`, masked after the first `:`.
    UserPass,
}

/// What the keys of an object say about its string values (the `credential-keys` mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyScope {
    /// Nothing: a built-in kind's schema says what each field is.
    Plain,
    /// An object's `metadata` (ObjectMeta, one schema for every kind) and all below it, except
    /// its string maps.
    Meta,
    /// The `metadata` object itself: its `annotations` and `labels` are [`KeyScope::MetaMap`].
    MetaRoot,
    /// `metadata.annotations` and `metadata.labels`: free-form maps any kind carries, where a
    /// value under a credential-named key (`db-password`) is masked like a ConfigMap's.
    MetaMap,
    /// A ConfigMap's `data`, or anything in an object of unknown kind (a custom resource):
    /// a string under a credential-named key is masked.
    Credentials,
    /// A ConfigMap's `binaryData`: base64 values; one under a credential-named key is masked,
    /// the others are decoded for the detectors.
    Binary,
}

/// What the masker knows of the request a response answers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Origin {
    /// The request's API group, when it is a resource request.
    pub(crate) group: Option<String>,
    /// The kind the request's resource holds, when it is certain (a built-in resource).
    pub(crate) kind: Option<String>,
    /// The response is the API server's OpenAPI document (`/openapi/v2`, `/openapi/v3/...`):
    /// schemas, not objects. Its keys are schema words (`x-kubernetes-patch-merge-key`,
    /// `properties.data`), which the object rules would take for a ConfigMap's or a Secret's
    /// and mask, breaking the strategic merge patches kubectl computes from it; its strings
    /// are still judged by the detectors.
    pub(crate) schema: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct AnchorInfo {
    kind: Option<String>,
    group: Option<String>,
    /// The first `kind` member read, any spelling (`kind`, `Kind`): one that differs from it
    /// or from `kind` is refused.
    kind_seen: Option<String>,
    /// The same for `apiVersion`'s group.
    group_seen: Option<String>,
    /// `kind` is a built-in kind (computed once: it is asked for every member).
    builtin: bool,
    /// A Table: whether `columnDefinitions` was seen, and which column is the name.
    columns_seen: bool,
    name_col: Option<usize>,
}

#[derive(Debug)]
struct Frame {
    object: bool,
    role: Role,
    /// This node's states, a range of `JsonMasker::states`.
    states: (usize, usize),
    anchor: Option<usize>,
    /// The whole container is selected: every scalar in it is replaced.
    masked: Option<Replace>,
    /// The next element's index (arrays).
    index: usize,
    /// Every object below is a Kubernetes object of unknown kind: a root array, a Status's
    /// `details`, an array last-applied document.
    loose: bool,
    /// An object holding `command`: what program it runs. An `Argv` array: the same.
    tool: Tool,
    /// An `Argv` array: what its next element is.
    next_arg: NextArg,
    /// An `Argv` array that is a `command` (its first element names the program).
    is_command: bool,
    /// What its keys say about its string values.
    scope: KeyScope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    /// Expecting a value.
    Value,
    /// After `{`: a key or `}`.
    ObjFirst,
    /// After `,` in an object: a key.
    ObjKey,
    /// After a key: `:`.
    Colon,
    /// After `[`: a value or `]`.
    ArrFirst,
    /// After a value: `,` or the closer (or, at the top, the end).
    After,
    /// Inside a string.
    Str,
    /// Inside a number or `true`/`false`/`null`.
    Literal,
    /// Capturing a whole value for a filter.
    Hold,
    /// A single document is complete: only whitespace may follow.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrMode {
    Key,
    /// Replaced whatever it holds: the content is skipped, not kept.
    Skip(Replace),
    /// Copied straight through (no detectors configured).
    Pass,
    Keep(Purpose),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Detect,
    Kind,
    ApiVersion,
    Hmac {
        base64: bool,
    },
    JsonString,
    /// `Kind`, `KIND`, ...: a decoder that matches keys case-insensitively (Go's
    /// encoding/json) reads it as the kind; exact-key decoders ignore it. It narrows nothing
    /// and must agree with every other claim.
    KindVariant,
    ApiVersionVariant,
    /// An element of a command line.
    Arg,
    /// A Table column definition's `format`.
    ColumnFormat,
    /// A ConfigMap `binaryData` value: base64, decoded for the detectors.
    DetectBase64,
}

/// What the value about to start is to the masker.
struct Ctx {
    role: Role,
    masked: Option<Replace>,
    select: Option<Action>,
    filters: Vec<State>,
    /// Whether it is a string that names its anchor's kind or apiVersion.
    records: Option<Purpose>,
    loose: bool,
    /// A `command` array (not `args`).
    command: bool,
    scope: KeyScope,
}

/// An element held for a filter, as read to judge it.
enum Reading {
    /// Parsed whole (a policy filter may test anything in it).
    Tree(serde_json::Value),
    /// Only the member every filter tests (see [`super::dupkeys::read_member`]).
    Member(super::dupkeys::Member),
}

struct HoldState {
    depth: u32,
    in_str: bool,
    escape: bool,
    scalar: bool,
    ctx: Ctx,
}

/// The scope of a value under `key` where ObjectMeta decides it: everything in an object's
/// `metadata` (or an embedded ObjectMeta of a built-in kind, a pod template's), its
/// `annotations` and `labels` judged by key; `None` elsewhere. The fast path and
/// [`JsonMasker::child_scope`] both go through here.
fn meta_scope(parent_role: Role, parent_scope: KeyScope, key: Option<&[u8]>) -> Option<KeyScope> {
    match parent_scope {
        // A value in `annotations` or `labels` keeps the map's scope: it is judged by its key
        // (the API server allows only strings there).
        KeyScope::Meta | KeyScope::MetaMap => Some(parent_scope),
        KeyScope::MetaRoot if matches!(key, Some(b"annotations" | b"labels")) => {
            Some(KeyScope::MetaMap)
        }
        KeyScope::MetaRoot => Some(KeyScope::Meta),
        _ if key == Some(b"metadata".as_slice())
            && (matches!(parent_role, Role::Anchor | Role::Loose)
                || parent_scope == KeyScope::Plain) =>
        {
            Some(KeyScope::MetaRoot)
        }
        _ => None,
    }
}

/// How a nested masker's root value starts (a held element, the inside of an annotation).
pub(crate) struct Root {
    states: Vec<State>,
    role: Role,
    masked: Option<Replace>,
    select: Option<Action>,
    anchor: Option<AnchorInfo>,
    loose: bool,
    scope: KeyScope,
}

/// The streaming JSON masker.
pub(crate) struct JsonMasker {
    set: Arc<MaskSet>,
    /// A watch stream: a sequence of documents (events) instead of one.
    seq: bool,
    lex: Lex,
    frames: Vec<Frame>,
    states: Vec<State>,
    anchors: Vec<AnchorInfo>,
    /// The key of the member whose value comes next (valid while `has_key`); one buffer for the
    /// whole stream, so reading a key allocates nothing. Bytes, compared as bytes: a key is
    /// never validated as UTF-8 (only a credential-name judgement reads it as text).
    key: Vec<u8>,
    has_key: bool,
    held: Vec<u8>,
    str_mode: StrMode,
    str_escape: bool,
    /// Whether the string being read has an escape (so it must be decoded to be judged).
    str_has_escape: bool,
    /// Whether part of the current string was held from an earlier chunk.
    str_spilled: bool,
    literal: Vec<u8>,
    literal_masked: bool,
    hold: Option<HoldState>,
    root: Option<Root>,
    consumed: u64,
    started: bool,
    pub(crate) masked_any: bool,
    origin: Arc<Origin>,
    /// Whether Table cells are masked (all but the name column): a policy rule could apply to
    /// the rows' kind.
    table_strict: bool,
    /// Keys judged by [`JsonMasker::credential_key`], with the answer (at most
    /// [`CRED_KEY_CACHE`], each at most [`CRED_KEY_CACHE_KEY_LEN`] bytes).
    cred_keys: Remembered,
    /// The same for [`super::credname::is_credential_name`] (env entry names: every pod of a
    /// list repeats them).
    cred_names: Remembered,
    /// The name column of the last Table in this stream (a watch of Tables sends the column
    /// definitions with the first event only).
    stream_name_col: Option<usize>,
    /// The end of the last container the detectors kept the silent skip from (an offset in
    /// the stream): the containers that start before it are not tried again (see `skip`).
    skip_from: u64,
    /// Where the containers start (offsets in the stream) that were open where the silent
    /// skip last stopped: they are not tried again.
    skip_spine: Vec<u64>,
    /// What the silent skip's last scan found, in lists reused from scan to scan.
    skip_scan: skip::Scratch,
    /// Containers the silent skip copied whole, and the bytes its scans read (tests only).
    #[cfg(test)]
    skip_stats: (usize, usize),
    /// The silent skip turned off, to compare against (tests only).
    #[cfg(test)]
    skip_off: bool,
}

impl JsonMasker {
    pub(crate) fn new(set: Arc<MaskSet>, seq: bool, origin: Arc<Origin>) -> Self {
        let table_strict = set.rules.iter().any(|r| {
            r.cells
                && match (&r.kinds, &origin.kind) {
                    (Some(want), Some(k)) => want.contains(k),
                    _ => true,
                }
                && match (&r.groups, &origin.group) {
                    (Some(want), Some(g)) => want.contains(g),
                    _ => true,
                }
        });
        JsonMasker {
            origin,
            table_strict,
            stream_name_col: None,
            skip_from: 0,
            skip_scan: skip::Scratch::default(),
            skip_spine: Vec::new(),
            #[cfg(test)]
            skip_stats: (0, 0),
            #[cfg(test)]
            skip_off: false,
            cred_keys: std::cell::RefCell::new(Vec::new()),
            cred_names: std::cell::RefCell::new(Vec::new()),
            set,
            seq,
            lex: Lex::Value,
            frames: Vec::new(),
            states: Vec::new(),
            anchors: Vec::new(),
            key: Vec::new(),
            has_key: false,
            held: Vec::new(),
            str_mode: StrMode::Pass,
            str_escape: false,
            str_has_escape: false,
            str_spilled: false,
            literal: Vec::new(),
            literal_masked: false,
            hold: None,
            root: None,
            consumed: 0,
            started: false,
            masked_any: false,
        }
    }

    fn nested(set: Arc<MaskSet>, origin: Arc<Origin>, root: Root) -> Self {
        let mut m = JsonMasker::new(set, false, origin);
        m.root = Some(root);
        m
    }

    fn malformed(&self, at: usize, what: &str) -> MaskError {
        MaskError::Malformed {
            offset: self.consumed + at as u64,
            what: what.to_string(),
        }
    }

    /// Mask a chunk, appending what is safe to emit to `out`.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        let mut i = 0;
        while i < input.len() {
            if matches!(
                self.lex,
                Lex::After | Lex::ObjFirst | Lex::ObjKey | Lex::ArrFirst
            ) {
                i = self.quiet_run(input, i, out)?;
            }
            if i < input.len() {
                i = self.step(input, i, out)?;
            }
        }
        self.consumed += input.len() as u64;
        Ok(())
    }

    /// The input is complete.
    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), MaskError> {
        if self.lex == Lex::Literal {
            self.end_literal(out)?;
        }
        let done = match self.lex {
            Lex::End => true,
            Lex::Value => self.frames.is_empty() && (self.seq || !self.started),
            Lex::After => self.frames.is_empty(),
            _ => false,
        };
        if done {
            Ok(())
        } else {
            Err(MaskError::Incomplete)
        }
    }

    /// Consume input from `i`; return where to continue.
    fn step(&mut self, input: &[u8], i: usize, out: &mut Vec<u8>) -> Result<usize, MaskError> {
        match self.lex {
            Lex::Str => return self.string_bytes(input, i, out),
            Lex::Hold => return self.hold_bytes(input, i, out),
            Lex::Literal => {
                let c = input[i];
                if matches!(c, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.') {
                    if self.literal.len() >= 512 {
                        return Err(self.malformed(i, "a number or literal is too long"));
                    }
                    self.literal.push(c);
                    return Ok(i + 1);
                }
                self.end_literal(out)?;
                return Ok(i);
            }
            _ => {}
        }
        let c = input[i];
        if matches!(c, b' ' | b'\t' | b'\n' | b'\r') {
            // Whitespace runs pass through whole.
            let end = input[i..]
                .iter()
                .position(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
                .map_or(input.len(), |p| i + p);
            out.extend_from_slice(&input[i..end]);
            return Ok(end);
        }
        match (self.lex, c) {
            (Lex::Value | Lex::ArrFirst, _) if !(self.lex == Lex::ArrFirst && c == b']') => {
                self.start_value(input, i, out)
            }
            (Lex::ArrFirst, b']') | (Lex::After, b']') => {
                if self.frames.last().is_some_and(|f| f.object) || self.frames.is_empty() {
                    return Err(self.malformed(i, "`]` does not close an array"));
                }
                out.push(b']');
                self.close_frame(out)?;
                Ok(i + 1)
            }
            (Lex::ObjFirst, b'}') | (Lex::After, b'}') => {
                if !self.frames.last().is_some_and(|f| f.object) {
                    return Err(self.malformed(i, "`}` does not close an object"));
                }
                out.push(b'}');
                self.close_frame(out)?;
                Ok(i + 1)
            }
            (Lex::ObjFirst | Lex::ObjKey, b'"') => {
                out.push(b'"');
                self.held.clear();
                self.str_mode = StrMode::Key;
                self.str_escape = false;
                self.str_has_escape = false;
                self.lex = Lex::Str;
                Ok(i + 1)
            }
            (Lex::Colon, b':') => {
                out.push(b':');
                self.lex = Lex::Value;
                Ok(i + 1)
            }
            (Lex::After, b',') => match self.frames.last() {
                Some(f) => {
                    self.lex = if f.object { Lex::ObjKey } else { Lex::Value };
                    out.push(b',');
                    Ok(i + 1)
                }
                None => Err(self.malformed(i, "a `,` follows the top-level value")),
            },
            (Lex::After, b'{') if self.frames.is_empty() && self.seq => {
                self.lex = Lex::Value;
                Ok(i)
            }
            (Lex::End, _) => Err(self.malformed(i, "data follows the end of the JSON document")),
            _ => Err(self.malformed(i, &format!("unexpected `{}`", printable(c)))),
        }
    }

    /// The first byte of a value: work out what it is to the masker, then start it.
    fn start_value(
        &mut self,
        input: &[u8],
        i: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, MaskError> {
        let c = input[i];
        self.started = true;
        let ctx = self.context(c)?;
        if !ctx.filters.is_empty() {
            self.held.clear();
            self.hold = Some(HoldState {
                depth: 0,
                in_str: false,
                escape: false,
                scalar: false,
                ctx,
            });
            self.lex = Lex::Hold;
            return Ok(i);
        }
        self.begin(c, ctx, i, out)
    }

    fn begin(&mut self, c: u8, ctx: Ctx, i: usize, out: &mut Vec<u8>) -> Result<usize, MaskError> {
        let replace = match ctx.select {
            Some(Action::Mask(r)) => Some(r),
            _ => ctx.masked,
        };
        match c {
            b'{' | b'[' => {
                if self.frames.len() >= self.set.limits.max_depth {
                    return Err(MaskError::TooDeep {
                        limit: self.set.limits.max_depth,
                    });
                }
                out.push(c);
                let anchor = if ctx.role == Role::Anchor {
                    Some(self.anchors.len().saturating_sub(1))
                } else {
                    self.frames
                        .last()
                        .and_then(|f| f.anchor)
                        .or(if self.anchors.is_empty() {
                            None
                        } else {
                            Some(0)
                        })
                };
                let start = self.parent_end();
                let end = self.states.len();
                // `args` follow `command` in a container: they run the program it named.
                let tool = match (ctx.role, ctx.command) {
                    (Role::Argv, false) => self.frames.last().map_or(Tool::Unknown, |f| f.tool),
                    _ => Tool::Unknown,
                };
                self.frames.push(Frame {
                    object: c == b'{',
                    role: ctx.role,
                    states: (start, end),
                    anchor,
                    masked: replace,
                    index: 0,
                    loose: ctx.loose,
                    tool,
                    next_arg: NextArg::Plain,
                    is_command: ctx.command,
                    scope: ctx.scope,
                });
                if replace.is_some() {
                    self.masked_any = true;
                }
                self.lex = if c == b'{' {
                    Lex::ObjFirst
                } else {
                    Lex::ArrFirst
                };
                Ok(i + 1)
            }
            b'"' => {
                self.held.clear();
                self.str_escape = false;
                self.str_has_escape = false;
                self.str_mode = match (ctx.select, replace, ctx.records) {
                    (_, Some(Replace::Hmac { base64 }), _) => {
                        StrMode::Keep(Purpose::Hmac { base64 })
                    }
                    (_, Some(r), _) => StrMode::Skip(r),
                    (Some(Action::JsonString), None, _) => StrMode::Keep(Purpose::JsonString),
                    (_, None, Some(p)) => StrMode::Keep(p),
                    _ if self.set.detectors.is_some() && ctx.scope == KeyScope::Binary => {
                        StrMode::Keep(Purpose::DetectBase64)
                    }
                    _ if self.set.detectors.is_some() => StrMode::Keep(Purpose::Detect),
                    _ => StrMode::Pass,
                };
                if self.str_mode == StrMode::Pass {
                    out.push(b'"');
                }
                self.lex = Lex::Str;
                Ok(i + 1)
            }
            b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                self.literal.clear();
                self.literal.push(c);
                // A masked number becomes 0; booleans and null say nothing and stay.
                self.literal_masked = replace.is_some() && (c == b'-' || c.is_ascii_digit());
                self.lex = Lex::Literal;
                Ok(i + 1)
            }
            _ => Err(self.malformed(
                i,
                &format!("unexpected `{}` where a value should start", printable(c)),
            )),
        }
    }

    fn parent_end(&self) -> usize {
        self.frames.last().map_or(0, |f| f.states.1)
    }

    /// Work out the role, the path states, the selection and pending filters of the value that
    /// starts with `c`, pushing its states onto the state stack.
    fn context(&mut self, c: u8) -> Result<Ctx, MaskError> {
        let (is_obj, is_arr) = (c == b'{', c == b'[');
        let parent_end = self.parent_end();
        self.states.truncate(parent_end);
        // Taken out (not cloned) so `advance` can borrow self mutably; put back at the end.
        let key = std::mem::take(&mut self.key);
        let has_key = std::mem::replace(&mut self.has_key, false);
        let ctx = self.context_with(
            c,
            is_obj,
            is_arr,
            parent_end,
            has_key.then_some(key.as_slice()),
        );
        self.key = key;
        ctx
    }

    fn context_with(
        &mut self,
        c: u8,
        is_obj: bool,
        is_arr: bool,
        parent_end: usize,
        key: Option<&[u8]>,
    ) -> Result<Ctx, MaskError> {
        let plain = |role, masked, loose, scope| Ctx {
            role,
            masked,
            select: None,
            filters: Vec::new(),
            records: None,
            loose,
            command: false,
            scope,
        };
        let Some(parent) = self.frames.last() else {
            if let Some(root) = self.root.take() {
                if root.role == Role::Anchor && is_obj {
                    // A document whose kind was read ahead (the last-applied annotation).
                    let info = root.anchor.unwrap_or_default();
                    self.start_anchor(info.kind.clone());
                    if let Some(a) = self.anchors.last_mut() {
                        a.group = info.group;
                    }
                    return Ok(plain(Role::Anchor, None, root.loose, root.scope));
                }
                if let Some(a) = root.anchor {
                    self.anchors.push(a);
                }
                self.states.extend(root.states);
                return Ok(Ctx {
                    role: root.role,
                    masked: root.masked,
                    select: root.select,
                    filters: Vec::new(),
                    records: None,
                    loose: root.loose,
                    command: false,
                    scope: root.scope,
                });
            }
            let role = match (self.seq, is_obj) {
                _ if self.origin.schema => Role::Plain,
                (true, true) => Role::Event,
                (false, true) => Role::Anchor,
                _ => Role::Plain,
            };
            if role == Role::Anchor {
                self.start_anchor(None);
            }
            // A root array is no Kubernetes shape: every object in it is an object of unknown
            // kind.
            return Ok(plain(
                role,
                None,
                is_arr && !self.origin.schema,
                KeyScope::Plain,
            ));
        };
        let key_ref = if parent.object { key } else { None };
        let keyed = key_ref.is_some_and(|k| self.set.starts_at(k));
        if parent.role == Role::Plain
            && parent.states.0 == parent.states.1
            && !parent.loose
            && !keyed
        {
            // Nothing can match below here and no object starts here: the common case deep in
            // metadata, specs and statuses.
            let scope = meta_scope(Role::Plain, parent.scope, key_ref).unwrap_or(parent.scope);
            let masked = parent
                .masked
                .or_else(|| self.credential_key_mask(c, parent.scope, key_ref));
            return Ok(plain(Role::Plain, masked, false, scope));
        }
        let (parent_role, parent_states, anchor, masked, index, parent_loose, parent_scope) = (
            parent.role,
            parent.states,
            parent.anchor,
            parent.masked,
            parent.index,
            parent.loose,
            parent.scope,
        );
        let argv = is_arr
            && key_ref.is_some_and(|k| {
                self.set.keyed(k).any(|r| {
                    self.set
                        .rules
                        .get(usize::from(r))
                        .is_some_and(|r| r.action == Action::Argv)
                })
            });
        let mut role = match (parent_role, key_ref, is_obj, is_arr) {
            _ if argv => Role::Argv,
            (Role::Event, Some(b"object"), true, _) => Role::Anchor,
            (Role::Anchor, Some(b"items"), _, true) => Role::Items,
            (Role::Anchor, Some(b"rows"), _, true) => Role::Rows,
            (Role::Anchor, Some(b"columnDefinitions"), _, true) => Role::ColumnDefs,
            (Role::ColumnDefs, None, true, _) => Role::ColumnDef,
            (Role::Items, None, true, _) => Role::Anchor,
            (Role::Rows, None, true, _) => Role::Row,
            (Role::Row, Some(b"object"), true, _) => Role::Anchor,
            // Cells of any shape (an object is no Table a server sends: nothing is the name).
            (Role::Row, Some(b"cells"), _, _) if is_obj || is_arr => Role::Cells,
            _ => Role::Plain,
        };
        // Objects the masker cannot place: every object in them is one of unknown kind (every
        // mask applies from it, as well as the paths that reach it). A Status's `details` can
        // carry anything; so can a custom resource, or an object whose kind is not yet known
        // (a Kyverno or Crossplane resource embeds whole Secrets, keys sorted, `data` before
        // `kind`). Built-in kinds have schemas the API server enforces: placed exactly.
        // A container where a list, a Table or a watch event has one place for an object (an
        // item, a row, a row's `object`, the event's `object`) but in another shape or at
        // another key: no shape the API server sends, and nothing to judge its objects by, so
        // every object in it is of unknown kind, as in a root array (a hostile upstream could
        // put a Secret in `items[0][0]`, in an event's or a row's `object` array, beside them,
        // or in a column definition). A row's `conditions` are judged so too: their members
        // name no credential.
        let misplaced = (is_obj || is_arr)
            && role == Role::Plain
            && matches!(
                parent_role,
                Role::Items
                    | Role::Rows
                    | Role::Row
                    | Role::Event
                    | Role::ColumnDefs
                    | Role::ColumnDef
            );
        let loose = parent_loose
            || misplaced
            || (parent_role == Role::Anchor
                && (key_ref == Some(b"details".as_slice())
                    || !anchor
                        .and_then(|a| self.anchors.get(a))
                        .is_some_and(|a| a.builtin)));
        let made_anchor = loose && is_obj && role == Role::Plain;
        if made_anchor {
            role = Role::Loose;
        }
        let scope = self.child_scope(parent_role, parent_scope, anchor, key_ref, loose);
        let value_scope = if parent_scope == KeyScope::Binary {
            KeyScope::Binary
        } else {
            scope
        };
        // Every object the masker treats as a Kubernetes object states its own kind, in a
        // loose list (a custom or aggregated one) too: an item is judged by the strictest of
        // its own kind, its list's item kind and the request's kind, and one that contradicts
        // its list ends the response (as a second kind does).
        let claims = parent_role == Role::Anchor;
        let records = match (parent_role, key_ref, c) {
            (Role::Anchor, Some(k), _) if claims && k.eq_ignore_ascii_case(b"kind") => {
                if c != b'"' {
                    return Err(self.malformed(0, "an object's `kind` is not a string"));
                }
                Some(if k == b"kind" {
                    Purpose::Kind
                } else {
                    Purpose::KindVariant
                })
            }
            (Role::Anchor, Some(k), _) if claims && k.eq_ignore_ascii_case(b"apiVersion") => {
                if c != b'"' {
                    return Err(self.malformed(0, "an object's `apiVersion` is not a string"));
                }
                Some(if k == b"apiVersion" {
                    Purpose::ApiVersion
                } else {
                    Purpose::ApiVersionVariant
                })
            }
            (Role::ColumnDef, Some(b"format"), b'"') => Some(Purpose::ColumnFormat),
            (Role::Argv, None, b'"') => Some(Purpose::Arg),
            _ => None,
        };
        // The value after a credential flag, and the cells of a Table whose rows may be of a
        // kind a policy rule masks (all but the name column).
        let mut masked = masked.or_else(|| self.credential_key_mask(c, value_scope, key_ref));
        if parent_role == Role::Argv
            && let Some(f) = self.frames.last_mut()
            && f.next_arg == NextArg::Secret
            && c != b'"'
        {
            f.next_arg = NextArg::Plain;
            masked = masked.or(Some(Replace::Marker));
        }
        if parent_role == Role::Cells && self.table_strict {
            let info = anchor.and_then(|a| self.anchors.get(a));
            let name_col = match info {
                Some(i) if i.columns_seen => i.name_col,
                _ => self.stream_name_col,
            };
            if name_col != Some(index) || key_ref.is_some() {
                masked = masked.or(Some(Replace::Marker));
            }
        }
        if role == Role::ColumnDefs
            && let Some(a) = anchor.and_then(|a| self.anchors.get_mut(a))
        {
            a.columns_seen = true;
            a.name_col = None;
        }
        if role == Role::Anchor {
            let inherited = if parent_role == Role::Items {
                anchor
                    .and_then(|a| self.anchors.get(a))
                    .and_then(|a| a.kind.as_deref())
                    .and_then(|k| k.strip_suffix("List"))
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
            } else {
                None
            };
            self.start_anchor(inherited);
            return Ok(Ctx {
                role,
                masked,
                select: None,
                filters: Vec::new(),
                records,
                loose,
                command: false,
                scope: value_scope,
            });
        }
        // Disjoint field borrows: no Arc clone (an atomic increment) per value.
        let (set, states) = (&*self.set, &mut self.states);
        let mut filters = Vec::new();
        for k in parent_states.0..parent_states.1 {
            let Some(&s) = states.get(k) else { continue };
            advance(set, states, s, key_ref, index, parent_end, &mut filters);
        }
        if keyed && let Some(k) = key_ref {
            for rule in set.keyed(k) {
                if set
                    .rules
                    .get(usize::from(rule))
                    .is_some_and(|r| r.action != Action::Argv)
                {
                    let free = true;
                    push_state(
                        states,
                        State {
                            rule,
                            step: 0,
                            free,
                        },
                        parent_end,
                    );
                }
            }
        }
        let select = selection(
            set,
            &self.states,
            &self.anchors,
            parent_end,
            anchor,
            self.origin.kind.as_ref(),
        );
        if made_anchor {
            for (i, r) in set.rules.iter().enumerate() {
                if let (None, Ok(rule)) = (r.start, u16::try_from(i)) {
                    let s = State {
                        rule,
                        step: 0,
                        free: true,
                    };
                    push_state(&mut self.states, s, parent_end);
                }
            }
        }
        Ok(Ctx {
            role,
            masked,
            select,
            filters,
            records,
            loose,
            command: role == Role::Argv && key_ref == Some(b"command".as_slice()),
            scope: value_scope,
        })
    }

    /// The key scope of a value under a parent with `parent_role` and `parent_scope`, at `key`
    /// (see [`KeyScope`]).
    fn child_scope(
        &self,
        parent_role: Role,
        parent_scope: KeyScope,
        anchor: Option<usize>,
        key: Option<&[u8]>,
        loose: bool,
    ) -> KeyScope {
        if let Some(scope) = meta_scope(parent_role, parent_scope, key) {
            return scope;
        }
        if parent_role == Role::Anchor {
            let info = anchor.and_then(|a| self.anchors.get(a));
            let kind = info.and_then(|i| i.kind.as_deref());
            let maybe_config_map = kind.is_none_or(|k| k == "ConfigMap")
                || self.origin.kind.as_deref() == Some("ConfigMap");
            match key {
                Some(b"binaryData") if maybe_config_map => return KeyScope::Binary,
                Some(b"data") if maybe_config_map => return KeyScope::Credentials,
                _ => {}
            }
            if loose || !info.is_some_and(|i| i.builtin) {
                return KeyScope::Credentials;
            }
            return KeyScope::Plain;
        }
        if parent_scope != KeyScope::Plain || loose {
            KeyScope::Credentials
        } else {
            KeyScope::Plain
        }
    }

    /// How a string value (`c` is its first byte) under `key` in an object of `scope` is
    /// masked for its key (the `credential-keys` mask): only strings, so that structure stays.
    fn credential_key_mask(&self, c: u8, scope: KeyScope, key: Option<&[u8]>) -> Option<Replace> {
        if c != b'"' || !self.set.credential_keys {
            return None;
        }
        let replace = match scope {
            KeyScope::Credentials | KeyScope::MetaMap => Replace::Marker,
            KeyScope::Binary => Replace::Base64,
            KeyScope::Plain | KeyScope::Meta | KeyScope::MetaRoot => return None,
        };
        // An annotation or label key's prefix is its owner's DNS domain (`cert-manager.io/`):
        // only the name after it says what the value is.
        let key = match scope {
            KeyScope::MetaMap => key.map(|k| k.rsplit(|&b| b == b'/').next().unwrap_or(k)),
            _ => key,
        };
        key.filter(|k| self.credential_key(k)).map(|_| replace)
    }

    /// [`super::credname::is_credential_key`], remembered for the last few keys: a list
    /// repeats the same label, annotation and data keys in every item.
    fn credential_key(&self, key: &[u8]) -> bool {
        remembered(&self.cred_keys, key, || {
            super::credname::is_credential_key(&String::from_utf8_lossy(key))
        })
    }

    /// [`super::credname::is_credential_name`], remembered the same way.
    fn credential_name(&self, name: &str) -> bool {
        remembered(&self.cred_names, name.as_bytes(), || {
            super::credname::is_credential_name(name)
        })
    }

    fn start_anchor(&mut self, kind: Option<String>) {
        let origin = self.origin.kind.as_ref();
        for (i, r) in self.set.rules.iter().enumerate() {
            if r.start.is_some() {
                continue;
            }
            if let (true, Ok(rule)) = (
                fits_anchor(&r.kinds, kind.as_ref(), origin),
                u16::try_from(i),
            ) {
                self.states.push(State {
                    rule,
                    step: 0,
                    free: false,
                });
            }
        }
        self.anchors.push(AnchorInfo {
            builtin: kind.as_deref().is_some_and(is_builtin_kind),
            kind,
            ..AnchorInfo::default()
        });
    }

    /// The anchor's kind just became known: drop the states of rules for other kinds, so their
    /// `..` steps stop following every node below.
    fn prune_anchor_states(&mut self) {
        let Some(frame) = self.frames.last() else {
            return;
        };
        let (start, end) = frame.states;
        let Some(kind) = frame
            .anchor
            .and_then(|a| self.anchors.get(a))
            .and_then(|a| a.kind.clone())
        else {
            return;
        };
        let rules = &self.set.rules;
        let origin = self.origin.kind.as_ref();
        let mut keep = start;
        for k in start..end.min(self.states.len()) {
            let s = self.states[k];
            let fits = s.free
                || rules
                    .get(usize::from(s.rule))
                    .is_some_and(|r| fits_anchor(&r.kinds, Some(&kind), origin));
            if fits {
                self.states[keep] = s;
                keep += 1;
            }
        }
        self.states.truncate(keep);
        if let Some(f) = self.frames.last_mut() {
            f.states.1 = keep;
        }
    }

    /// String bytes from `i`: find the closing quote (skipping escapes) with memchr.
    fn string_bytes(
        &mut self,
        input: &[u8],
        i: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, MaskError> {
        let mut j = i;
        if self.str_escape {
            self.str_escape = false;
            j = i + 1;
        }
        loop {
            let Some(at) = super::scan::find2(b'"', b'\\', input, j) else {
                self.string_chunk(&input[i..], out)?;
                self.str_spilled = true;
                return Ok(input.len());
            };
            if input[at] == b'\\' {
                self.str_has_escape = true;
                if at + 1 >= input.len() {
                    self.str_escape = true;
                    self.string_chunk(&input[i..], out)?;
                    self.str_spilled = true;
                    return Ok(input.len());
                }
                j = at + 2;
                continue;
            }
            if self.str_spilled {
                self.string_chunk(&input[i..at], out)?;
                let held = std::mem::take(&mut self.held);
                let r = self.end_string(&held, out);
                self.held = held;
                self.held.clear();
                r?;
            } else {
                // The whole string is in this chunk: judge it where it lies.
                if self.str_mode == StrMode::Pass {
                    out.extend_from_slice(&input[i..at]);
                }
                self.end_string(&input[i..at], out)?;
            }
            self.str_spilled = false;
            return Ok(at + 1);
        }
    }

    fn string_chunk(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        match self.str_mode {
            StrMode::Skip(_) => {}
            StrMode::Pass => out.extend_from_slice(bytes),
            StrMode::Key | StrMode::Keep(_) => {
                if self.held.len() + bytes.len() > self.set.limits.max_held {
                    return Err(MaskError::TooLarge {
                        limit: self.set.limits.max_held,
                        what: "a string value",
                    });
                }
                self.held.extend_from_slice(bytes);
            }
        }
        Ok(())
    }

    fn decoded(&self, raw: &[u8]) -> Result<Vec<u8>, MaskError> {
        unescape(raw).map_err(|e| MaskError::Malformed {
            offset: self.consumed,
            what: e.to_string(),
        })
    }

    fn end_string(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        match self.str_mode {
            StrMode::Key => {
                out.extend_from_slice(raw);
                out.push(b'"');
                self.key.clear();
                if self.str_has_escape {
                    let decoded = self.decoded(raw)?;
                    self.key.extend_from_slice(&decoded);
                } else {
                    self.key.extend_from_slice(raw);
                }
                self.has_key = true;
                self.lex = Lex::Colon;
                return Ok(());
            }
            StrMode::Pass => out.push(b'"'),
            StrMode::Skip(r) => {
                self.masked_any = true;
                out.push(b'"');
                out.extend_from_slice(
                    if r == Replace::Base64 {
                        MARKER_BASE64
                    } else {
                        MARKER
                    }
                    .as_bytes(),
                );
                out.push(b'"');
            }
            StrMode::Keep(Purpose::Detect) => self.detect_string(raw, out)?,
            StrMode::Keep(
                p @ (Purpose::Kind
                | Purpose::ApiVersion
                | Purpose::KindVariant
                | Purpose::ApiVersionVariant),
            ) => {
                let text = if self.str_has_escape {
                    String::from_utf8_lossy(&self.decoded(raw)?).into_owned()
                } else {
                    String::from_utf8_lossy(raw).into_owned()
                };
                let is_kind = matches!(p, Purpose::Kind | Purpose::KindVariant);
                let exact = matches!(p, Purpose::Kind | Purpose::ApiVersion);
                let at = self.frames.last().and_then(|f| f.anchor);
                if let Some(a) = at.and_then(|a| self.anchors.get_mut(a)) {
                    let value = if is_kind {
                        text
                    } else {
                        text.rsplit_once('/')
                            .map_or(String::new(), |(g, _)| g.to_string())
                    };
                    let (known, seen) = if is_kind {
                        (&mut a.kind, &mut a.kind_seen)
                    } else {
                        (&mut a.group, &mut a.group_seen)
                    };
                    // Two kinds (or groups) for one object, or one that contradicts its list:
                    // what came before was judged by the first; nothing can be judged by both,
                    // so the response ends here (the strict answer; a real API server never
                    // sends it).
                    let earlier = known
                        .as_deref()
                        .filter(|k| *k != value)
                        .or(seen.as_deref().filter(|k| *k != value))
                        .map(str::to_string);
                    if let Some(earlier) = earlier {
                        let what = if is_kind { "kind" } else { "apiVersion group" };
                        return Err(MaskError::Malformed {
                            offset: self.consumed,
                            what: format!(
                                "an object names its {what} twice or contradicts its list (`{earlier}` then `{value}`); kubeleash cannot tell which masks apply"
                            ),
                        });
                    }
                    if seen.is_none() {
                        *seen = Some(value.clone());
                    }
                    if exact {
                        if is_kind {
                            a.builtin = is_builtin_kind(&value);
                            a.kind = Some(value);
                        } else {
                            a.group = Some(value);
                        }
                    }
                }
                out.push(b'"');
                out.extend_from_slice(raw);
                out.push(b'"');
                if p == Purpose::Kind {
                    self.states.truncate(self.parent_end());
                    self.prune_anchor_states();
                }
            }
            StrMode::Keep(Purpose::ColumnFormat) => {
                out.push(b'"');
                out.extend_from_slice(raw);
                out.push(b'"');
                let n = self.frames.len();
                let column = n
                    .checked_sub(2)
                    .and_then(|i| self.frames.get(i))
                    .map(|f| f.index);
                let table = self.frames.last().and_then(|f| f.anchor);
                if raw == b"name"
                    && let (Some(col), Some(a)) =
                        (column, table.and_then(|a| self.anchors.get_mut(a)))
                {
                    a.name_col = Some(col);
                    self.stream_name_col = Some(col);
                }
            }
            StrMode::Keep(Purpose::Arg) => self.mask_arg(raw, out)?,
            StrMode::Keep(Purpose::DetectBase64) => self.detect_base64(raw, out)?,
            StrMode::Keep(Purpose::Hmac { base64 }) => {
                self.masked_any = true;
                let value = self.decoded(raw)?;
                let token = self.hmac_token(&value);
                let token = if base64 {
                    super::base64(token.as_bytes())
                } else {
                    token
                };
                escape_into(token.as_bytes(), out);
            }
            StrMode::Keep(Purpose::JsonString) => self.mask_json_string(raw, out)?,
        }
        self.value_done(out);
        Ok(())
    }

    /// One element of a command line (container `args` or `command`).
    fn mask_arg(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        let text = if self.str_has_escape {
            String::from_utf8_lossy(&self.decoded(raw)?).into_owned()
        } else {
            String::from_utf8_lossy(raw).into_owned()
        };
        let n = self.frames.len();
        let Some(f) = self.frames.last_mut() else {
            return self.detect_string(raw, out);
        };
        let first_of_command = f.is_command && f.index == 0;
        if first_of_command {
            f.tool = tool_of(&text);
        }
        let next = std::mem::replace(&mut f.next_arg, NextArg::Plain);
        let rewritten = match next {
            NextArg::Secret if is_reference(&text) => None,
            NextArg::Secret => Some(MARKER.to_string()),
            NextArg::UserPass => text.find(':').map(|p| format!("{}{MARKER}", &text[..=p])),
            NextArg::Plain if first_of_command => None,
            NextArg::Plain => {
                let (rewritten, next) = judge_arg(&text, f.tool != Tool::Other);
                f.next_arg = next;
                rewritten
            }
        };
        let tool = f.tool;
        if first_of_command
            && let Some(owner) = n.checked_sub(2).and_then(|i| self.frames.get_mut(i))
        {
            owner.tool = tool;
        }
        match rewritten {
            Some(r) => {
                self.masked_any = true;
                escape_into(r.as_bytes(), out);
                Ok(())
            }
            None => self.detect_string(raw, out),
        }
    }

    /// Run the detectors over a string's decoded text; rewrite it only if they find something.
    fn detect_string(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        let Some(detectors) = self.set.detectors.as_ref() else {
            out.push(b'"');
            out.extend_from_slice(raw);
            out.push(b'"');
            return Ok(());
        };
        let decoded_storage;
        let text: &[u8] = if self.str_has_escape {
            decoded_storage = self.decoded(raw)?;
            &decoded_storage
        } else {
            raw
        };
        let mut spans = Vec::new();
        // Without escapes, only `%` (or a raw ESC, which JSON forbids but a server may send)
        // can need decoding.
        // Decoding only shortens a text: one shorter than any match stays so.
        let maybe_encoded = text.len() >= detectors.min_len()
            && (self.str_has_escape || super::scan::contains2(b'%', 0x1b, raw));
        super::normalize::find(detectors, text, maybe_encoded, &mut spans);
        if spans.is_empty() {
            out.push(b'"');
            out.extend_from_slice(raw);
            out.push(b'"');
        } else {
            self.masked_any = true;
            escape_into(&super::replace_spans(text, &spans), out);
        }
        Ok(())
    }

    /// A ConfigMap `binaryData` value: base64 of bytes the detectors must read. When they find
    /// anything in the decoded bytes, the whole value is replaced (a span of base64 does not
    /// map to whole bytes); text that is not base64 is judged as it is.
    fn detect_base64(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        let decoded_storage;
        let text: &[u8] = if self.str_has_escape {
            decoded_storage = self.decoded(raw)?;
            &decoded_storage
        } else {
            raw
        };
        let (Some(detectors), Some(bytes)) =
            (self.set.detectors.as_ref(), super::b64::decode(text))
        else {
            return self.detect_string(raw, out);
        };
        let mut spans = Vec::new();
        super::normalize::find(detectors, &bytes, true, &mut spans);
        if spans.is_empty() {
            return self.detect_string(raw, out);
        }
        self.masked_any = true;
        out.push(b'"');
        out.extend_from_slice(MARKER_BASE64.as_bytes());
        out.push(b'"');
        Ok(())
    }

    /// The last-applied annotation: a JSON document in a string. Mask inside it with the rules
    /// for its own kind; if it is not JSON, replace it whole.
    fn mask_json_string(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        let inner = self.decoded(raw)?;
        // The whole document is here: read its kind first, since kubectl sorts keys and `data`
        // would otherwise come before `kind`.
        let head: Option<serde_json::Value> = serde_json::from_slice(&inner).ok();
        let field = |k: &str| {
            head.as_ref()
                .and_then(|v| v.get(k))
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        let anchor = AnchorInfo {
            kind: field("kind"),
            group: field("apiVersion").map(|v| {
                v.rsplit_once('/')
                    .map_or(String::new(), |(g, _)| g.to_string())
            }),
            ..AnchorInfo::default()
        };
        // An object is judged as its kind; anything else (an array, a string) is no shape
        // kubectl writes, and every object in it is one of unknown kind.
        let is_object = head.as_ref().is_some_and(serde_json::Value::is_object);
        let mut nested = JsonMasker::nested(
            Arc::clone(&self.set),
            Arc::clone(&self.origin),
            Root {
                states: Vec::new(),
                role: if is_object { Role::Anchor } else { Role::Plain },
                masked: None,
                select: None,
                anchor: is_object.then_some(anchor),
                loose: !is_object,
                scope: KeyScope::Plain,
            },
        );
        #[cfg(test)]
        {
            nested.skip_off = self.skip_off;
        }
        let mut masked = Vec::with_capacity(inner.len());
        let ok = nested
            .feed(&inner, &mut masked)
            .and_then(|()| nested.finish(&mut masked));
        match ok {
            Ok(()) if !nested.masked_any => {
                out.push(b'"');
                out.extend_from_slice(raw);
                out.push(b'"');
            }
            Ok(()) => {
                self.masked_any = true;
                escape_into(&masked, out);
            }
            Err(_) => {
                self.masked_any = true;
                escape_into(MARKER.as_bytes(), out);
            }
        }
        Ok(())
    }

    fn hmac_token(&self, value: &[u8]) -> String {
        match Hmac::<Sha256>::new_from_slice(&self.set.hmac_key) {
            Ok(mut mac) => {
                mac.update(value);
                let tag = mac.finalize().into_bytes();
                let hex: String = tag.iter().take(12).map(|b| format!("{b:02x}")).collect();
                format!("[hmac:{hex}]")
            }
            Err(_) => MARKER.to_string(),
        }
    }

    fn end_literal(&mut self, out: &mut Vec<u8>) -> Result<(), MaskError> {
        if !valid_literal(&self.literal) {
            let lit = String::from_utf8_lossy(&self.literal).into_owned();
            return Err(self.malformed(0, &format!("`{lit}` is not a JSON number or literal")));
        }
        if self.literal_masked {
            self.masked_any = true;
            out.push(b'0');
        } else {
            out.extend_from_slice(&self.literal);
        }
        self.value_done(out);
        Ok(())
    }

    /// Capture a value whole for a filter, then judge it and mask it with a nested masker.
    fn hold_bytes(
        &mut self,
        input: &[u8],
        i: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, MaskError> {
        let max = self.set.limits.max_held;
        let Some(h) = self.hold.as_mut() else {
            return Err(self.malformed(i, "internal: hold without state"));
        };
        let mut j = i;
        while j < input.len() {
            let c = input[j];
            if self.held.is_empty() && !h.in_str && h.depth == 0 && !h.scalar {
                match c {
                    b'"' => h.in_str = true,
                    b'{' | b'[' => h.depth = 1,
                    _ => h.scalar = true,
                }
                self.held.push(c);
                j += 1;
                continue;
            }
            if h.scalar {
                if matches!(c, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.') {
                    self.held.push(c);
                    j += 1;
                    continue;
                }
                self.finish_hold(out)?;
                return Ok(j);
            }
            if h.in_str && !h.escape {
                // A string's bytes up to its next quote or escape are copied in one go.
                let stop = super::scan::find2(b'"', b'\\', input, j).unwrap_or(input.len());
                if stop > j {
                    if self.held.len() + (stop - j) > max {
                        return Err(MaskError::TooLarge {
                            limit: max,
                            what: "an element a mask filter tests",
                        });
                    }
                    self.held.extend_from_slice(&input[j..stop]);
                    j = stop;
                    continue;
                }
            }
            self.held.push(c);
            j += 1;
            if self.held.len() > max {
                return Err(MaskError::TooLarge {
                    limit: max,
                    what: "an element a mask filter tests",
                });
            }
            if h.in_str {
                if h.escape {
                    h.escape = false;
                } else if c == b'\\' {
                    h.escape = true;
                } else if c == b'"' {
                    h.in_str = false;
                    if h.depth == 0 {
                        self.finish_hold(out)?;
                        return Ok(j);
                    }
                }
                continue;
            }
            match c {
                b'"' => h.in_str = true,
                b'{' | b'[' => h.depth += 1,
                b'}' | b']' => {
                    h.depth = h.depth.saturating_sub(1);
                    if h.depth == 0 {
                        self.finish_hold(out)?;
                        return Ok(j);
                    }
                }
                _ => {}
            }
        }
        Ok(j)
    }

    fn finish_hold(&mut self, out: &mut Vec<u8>) -> Result<(), MaskError> {
        let Some(h) = self.hold.take() else {
            return Ok(());
        };
        let bytes = std::mem::take(&mut self.held);
        let consumed = self.consumed;
        let malformed = |e: serde_json::Error| MaskError::Malformed {
            offset: consumed,
            what: format!("an element a mask filter tests is not JSON: {e}"),
        };
        let set = Arc::clone(&self.set);
        // One reading of the element serves every filter. When each tests the same top-level
        // member for a credential name (the built-in `env` and `httpHeaders` rules, every
        // container's env entry), one pass finds it and does the duplicate-key check without
        // building the value; anything else is judged on the parsed value.
        let step_of = |f: &State| {
            set.rules
                .get(usize::from(f.rule))
                .and_then(|r| r.steps.get(usize::from(f.step)))
        };
        let mut member_key: Option<&str> = None;
        let one_member = h.ctx.filters.iter().all(|f| match step_of(f) {
            Some(Step::Filter(filter)) => match (filter.credential_member(), member_key) {
                (Some(k), None) => {
                    member_key = Some(k);
                    true
                }
                (Some(k), Some(m)) => k == m,
                (None, _) => false,
            },
            _ => true,
        });
        let reading = match member_key {
            Some(k) if one_member => {
                Reading::Member(super::dupkeys::read_member(&bytes, k).map_err(malformed)?)
            }
            _ => Reading::Tree(serde_json::from_slice(&bytes).map_err(malformed)?),
        };
        let child_start = self.parent_end();
        let anchor = self.frames.last().and_then(|f| f.anchor);
        // An element with a key twice (`{"name":"API_KEY","value":"x","name":"HARMLESS"}`) is
        // read one way here and maybe the other by its user: every filter holds for it.
        let mut dup: Option<bool> = None;
        for f in &h.ctx.filters {
            let holds = match (step_of(f), &reading) {
                (Some(Step::Filter(filter)), Reading::Member(m)) => {
                    m.dup || filter.holds_for_member(&m.found, |n| self.credential_name(n))
                }
                (Some(Step::Filter(filter)), Reading::Tree(value)) => {
                    filter.holds(value)
                        || *dup.get_or_insert_with(|| super::dupkeys::has_duplicate_key(&bytes))
                }
                _ => false,
            };
            if holds {
                push_state(
                    &mut self.states,
                    State {
                        rule: f.rule,
                        step: f.step.saturating_add(1),
                        free: f.free,
                    },
                    child_start,
                );
            }
        }
        let select = selection(
            &set,
            &self.states,
            &self.anchors,
            child_start,
            anchor,
            self.origin.kind.as_ref(),
        );
        // Nothing held and nothing tracked in it (an env entry with an ordinary name): when it
        // is silent too, it is what the nested masker would write, without building one.
        if select.is_none()
            && h.ctx.masked.is_none()
            && h.ctx.role == Role::Plain
            && !h.ctx.loose
            && self.states.len() <= child_start
            && self.silent_element(&bytes, h.ctx.scope)
        {
            out.extend_from_slice(&bytes);
            self.held = bytes;
            self.held.clear();
            self.value_done(out);
            return Ok(());
        }
        let root = Root {
            states: self.states.get(child_start..).unwrap_or_default().to_vec(),
            role: h.ctx.role,
            masked: h.ctx.masked,
            select,
            anchor: anchor.and_then(|a| self.anchors.get(a)).cloned(),
            loose: h.ctx.loose,
            scope: h.ctx.scope,
        };
        let mut nested = JsonMasker::nested(set, Arc::clone(&self.origin), root);
        #[cfg(test)]
        {
            nested.skip_off = self.skip_off;
        }
        nested.feed(&bytes, out)?;
        nested.finish(out)?;
        self.masked_any |= nested.masked_any;
        self.held = bytes;
        self.held.clear();
        self.value_done(out);
        Ok(())
    }

    fn close_frame(&mut self, out: &mut Vec<u8>) -> Result<(), MaskError> {
        if let Some(f) = self.frames.pop() {
            self.states.truncate(f.states.0);
            if f.role == Role::Anchor {
                self.anchors.pop();
            }
        }
        self.value_done(out);
        Ok(())
    }

    /// A value is complete: drop its states and expect what follows it.
    fn value_done(&mut self, _out: &mut Vec<u8>) {
        self.has_key = false;
        let end = self.parent_end();
        self.states.truncate(end);
        match self.frames.last_mut() {
            None => {
                if self.seq {
                    self.anchors.clear();
                    self.lex = Lex::After;
                } else {
                    self.lex = Lex::End;
                }
            }
            Some(f) => {
                if !f.object {
                    f.index += 1;
                }
                self.lex = Lex::After;
            }
        }
    }
}

/// Answers about keys, remembered (see [`remembered`]).
type Remembered = std::cell::RefCell<Vec<(Box<[u8]>, bool)>>;

/// The answer `cache` holds for `key`, or `judge`'s, remembered (at most [`CRED_KEY_CACHE`]
/// answers, for keys of at most [`CRED_KEY_CACHE_KEY_LEN`] bytes).
fn remembered(cache: &Remembered, key: &[u8], judge: impl FnOnce() -> bool) -> bool {
    let mut cache = cache.borrow_mut();
    if let Some(&(_, is)) = cache.iter().find(|(k, _)| **k == *key) {
        return is;
    }
    let is = judge();
    if key.len() <= CRED_KEY_CACHE_KEY_LEN {
        if cache.len() >= CRED_KEY_CACHE {
            cache.clear();
        }
        cache.push((key.into(), is));
    }
    is
}

fn push_state(states: &mut Vec<State>, s: State, child_start: usize) {
    let exists = states.get(child_start..).is_some_and(|c| c.contains(&s));
    if !exists {
        states.push(s);
    }
}

/// Follow one state along the edge to a child (`key` for a member, `index` for an element).
fn advance(
    set: &MaskSet,
    states: &mut Vec<State>,
    s: State,
    key: Option<&[u8]>,
    index: usize,
    child_start: usize,
    filters: &mut Vec<State>,
) {
    let Some(step) = set
        .rules
        .get(usize::from(s.rule))
        .and_then(|r| r.steps.get(usize::from(s.step)))
    else {
        return;
    };
    let next = State {
        rule: s.rule,
        step: s.step.saturating_add(1),
        free: s.free,
    };
    match step {
        Step::Descend => {
            push_state(states, s, child_start);
            advance(set, states, next, key, index, child_start, filters);
        }
        Step::Child(name) => {
            if key == Some(name.as_bytes()) {
                push_state(states, next, child_start);
            }
        }
        Step::Any => push_state(states, next, child_start),
        Step::Index(n) => {
            if key.is_none() && index == *n {
                push_state(states, next, child_start);
            }
        }
        Step::Filter(_) => filters.push(s),
    }
}

/// The action for a value whose states start at `child_start`: a rule whose path is complete
/// selects it, if its kinds and groups fit the anchor (or the anchor's are unknown).
fn selection(
    set: &MaskSet,
    states: &[State],
    anchors: &[AnchorInfo],
    child_start: usize,
    anchor: Option<usize>,
    origin: Option<&String>,
) -> Option<Action> {
    let info = anchor.and_then(|a| anchors.get(a));
    let fits = |want: &Option<Vec<String>>, have: Option<&String>| match (want, have) {
        (Some(w), Some(h)) => w.contains(h),
        _ => true,
    };
    let mut action = None;
    for s in states.get(child_start..).unwrap_or_default() {
        let Some(rule) = set.rules.get(usize::from(s.rule)) else {
            continue;
        };
        if usize::from(s.step) != rule.steps.len()
            || !s.free
                && (!fits_anchor(&rule.kinds, info.and_then(|i| i.kind.as_ref()), origin)
                    || !fits(&rule.groups, info.and_then(|i| i.group.as_ref())))
        {
            continue;
        }
        // What reveals less wins: a fixed marker over an HMAC token (which shows equality),
        // and either over masking inside a document.
        let reveals = |a: Action| match a {
            Action::Mask(Replace::Marker | Replace::Base64) => 0,
            Action::Mask(Replace::Hmac { .. }) => 1,
            Action::JsonString | Action::Argv => 2,
        };
        if action.is_none_or(|cur| reveals(rule.action) < reveals(cur)) {
            action = Some(rule.action);
        }
    }
    action
}

/// Kinds the API server serves with a schema it enforces (and their lists): nothing in them is
/// an embedded object of another kind, except where the masker looks already (list items,
/// Table rows, watch events, a Status's details, the last-applied annotation).
const BUILTIN_KINDS: &[&str] = &[
    "Pod",
    "Secret",
    "ConfigMap",
    "Service",
    "ServiceAccount",
    "Namespace",
    "Node",
    "Event",
    "Endpoints",
    "EndpointSlice",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "ReplicationController",
    "PodTemplate",
    "LimitRange",
    "ResourceQuota",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ControllerRevision",
    "Job",
    "CronJob",
    "TokenReview",
    "TokenRequest",
    "SubjectAccessReview",
    "SelfSubjectAccessReview",
    "SelfSubjectRulesReview",
    "Role",
    "RoleBinding",
    "ClusterRole",
    "ClusterRoleBinding",
    "Ingress",
    "IngressClass",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "StorageClass",
    "Lease",
    "CustomResourceDefinition",
    "Status",
    "Table",
    "PartialObjectMetadata",
    "List",
    "APIResourceList",
    "APIGroupList",
    "APIGroup",
    "APIVersions",
    "Scale",
    "Eviction",
    "Binding",
    "ComponentStatus",
    "PriorityClass",
    "RuntimeClass",
    "CSIDriver",
    "CSINode",
    "VolumeAttachment",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "APIService",
    "CertificateSigningRequest",
    "FlowSchema",
    "PriorityLevelConfiguration",
];

fn is_builtin_kind(kind: &str) -> bool {
    BUILTIN_KINDS.contains(&kind)
        || kind
            .strip_suffix("List")
            .is_some_and(|k| BUILTIN_KINDS.contains(&k))
}

/// Whether a rule for kinds `want` applies to an object of kind `have` (unknown: it may), in a
/// response to a request for kind `origin`: a response to `GET .../secrets/x` is judged as a
/// Secret whatever it says it is, as well as what it says.
fn fits_anchor(want: &Option<Vec<String>>, have: Option<&String>, origin: Option<&String>) -> bool {
    match (want, have) {
        (Some(w), Some(h)) => w.contains(h) || origin.is_some_and(|o| w.contains(o)),
        _ => true,
    }
}

/// Programs whose short flags carry credentials: `-p` (mysql and MariaDB clients, docker and
/// podman `login`, sshpass, mongo), `-a` (redis-cli and its forks), `-u user:password` (curl).
const CREDENTIAL_SHORT_FLAG_TOOLS: &[&str] = &[
    "mysql",
    "mysqldump",
    "mysqladmin",
    "mysqlimport",
    "mysqlcheck",
    "mysqlshow",
    "mysqlsh",
    "mariadb",
    "mariadb-dump",
    "mariadb-admin",
    "redis-cli",
    "valkey-cli",
    "keydb-cli",
    "docker",
    "podman",
    "nerdctl",
    "buildah",
    "skopeo",
    "helm",
    "sshpass",
    "mongo",
    "mongosh",
    "mongodump",
    "mongorestore",
    "mongoexport",
    "mongoimport",
    "curl",
    "rabbitmqadmin",
    "influx",
];

/// What one element of a command line is: `Some(text)` when it must be rewritten (a flag with
/// its value joined), and what the next element is.
fn judge_arg(arg: &str, short_flags: bool) -> (Option<String>, NextArg) {
    let Some(body) = arg.strip_prefix('-') else {
        return (None, NextArg::Plain);
    };
    let double = body.starts_with('-');
    let body = body.trim_start_matches('-');
    if body.is_empty() {
        return (None, NextArg::Plain);
    }
    let (name, value) = match body.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (body, None),
    };
    let prefix_len = arg.len() - body.len() + name.len();
    let masked_after = |at: usize| Some(format!("{}{}", &arg[..at], MARKER));
    // `--user user:password` (curl): the part after the colon.
    if name == "user" || (!double && name == "u") {
        return match value {
            Some(v) => match v.find(':') {
                Some(p) => (masked_after(prefix_len + 1 + p + 1), NextArg::Plain),
                None => (None, NextArg::Plain),
            },
            None => (None, NextArg::UserPass),
        };
    }
    // A credential-looking name (`--db-pass`, Go-style `-password`): its value.
    let cred = (double || name.len() > 1) && super::credname::is_credential_name(name);
    if cred && let Some(v) = value {
        return if v.is_empty() || is_reference(v) {
            (None, NextArg::Plain)
        } else {
            (masked_after(prefix_len + 1), NextArg::Plain)
        };
    }
    let next = if cred {
        NextArg::Secret
    } else {
        NextArg::Plain
    };
    if double || !short_flags {
        return (None, next);
    }
    match body.as_bytes()[0] {
        b'p' | b'a' if body.len() == 1 => (None, NextArg::Secret),
        b'p' | b'a' => {
            // `-pSECRET`, `-p=SECRET` (and, when the name reads as a credential too, the next
            // element: `-password X` in Go's flag style).
            let at = arg.len() - body.len() + 1;
            let at = if body.as_bytes().get(1) == Some(&b'=') {
                at + 1
            } else {
                at
            };
            (masked_after(at), next)
        }
        b'u' => match body.find(':') {
            Some(p) => (masked_after(arg.len() - body.len() + p + 1), next),
            None => (None, next),
        },
        _ => (None, next),
    }
}

/// `$(NAME)` (expanded by the kubelet from the container's env, which is masked on its own) or
/// `${NAME}`: a reference, not a value.
fn is_reference(v: &str) -> bool {
    let inner = v
        .strip_prefix("$(")
        .and_then(|r| r.strip_suffix(')'))
        .or_else(|| v.strip_prefix("${").and_then(|r| r.strip_suffix('}')));
    inner.is_some_and(|n| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// The program a `command`'s first element runs, by its file name.
fn tool_of(program: &str) -> Tool {
    let base = program.rsplit('/').next().unwrap_or(program);
    if CREDENTIAL_SHORT_FLAG_TOOLS.contains(&base) {
        Tool::Known
    } else {
        Tool::Other
    }
}

/// A JSON number, `true`, `false` or `null`.
fn valid_literal(b: &[u8]) -> bool {
    if matches!(b, b"true" | b"false" | b"null") {
        return true;
    }
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i = 1;
    }
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

fn printable(c: u8) -> String {
    if c.is_ascii_graphic() {
        (c as char).to_string()
    } else {
        format!("\\x{c:02x}")
    }
}
