//! The streaming JSON masker: a byte-level state machine that copies every byte it does not
//! mask straight through, holds only what it must judge (a string, a key, an element a filter
//! tests), and stops at the last safe byte on anything it cannot parse.
//!
//! Masks apply relative to a Kubernetes object ("anchor"): the document itself, each `items[*]`
//! of a list, each `rows[*].object` of a Table, each watch event's `object`. An anchor's kind
//! comes from its own `kind` member, or from its list's kind (`SecretList` items are Secrets);
//! while it is unknown, every rule applies, so a late or missing `kind` can only mask more.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::MaskError;
use super::path::Step;
use super::rules::{Action, MARKER, MARKER_BASE64, MaskSet, Replace};
use super::strings::{escape_into, unescape};

/// A position in one rule's path: the next step to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    rule: u16,
    step: u16,
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
}

#[derive(Debug, Clone, Default)]
pub(crate) struct AnchorInfo {
    kind: Option<String>,
    group: Option<String>,
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
    Hmac { base64: bool },
    JsonString,
}

/// What the value about to start is to the masker.
struct Ctx {
    role: Role,
    masked: Option<Replace>,
    select: Option<Action>,
    filters: Vec<State>,
    /// Whether it is a string that names its anchor's kind or apiVersion.
    records: Option<Purpose>,
}

struct HoldState {
    depth: u32,
    in_str: bool,
    escape: bool,
    scalar: bool,
    ctx: Ctx,
}

/// How a nested masker's root value starts (a held element, the inside of an annotation).
pub(crate) struct Root {
    states: Vec<State>,
    role: Role,
    masked: Option<Replace>,
    select: Option<Action>,
    anchor: Option<AnchorInfo>,
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
    /// whole stream, so reading a key allocates nothing.
    key: String,
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
}

impl JsonMasker {
    pub(crate) fn new(set: Arc<MaskSet>, seq: bool) -> Self {
        JsonMasker {
            set,
            seq,
            lex: Lex::Value,
            frames: Vec::new(),
            states: Vec::new(),
            anchors: Vec::new(),
            key: String::new(),
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

    fn nested(set: Arc<MaskSet>, root: Root) -> Self {
        let mut m = JsonMasker::new(set, false);
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
            i = self.step(input, i, out)?;
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
                self.frames.push(Frame {
                    object: c == b'{',
                    role: ctx.role,
                    states: (start, end),
                    anchor,
                    masked: replace,
                    index: 0,
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
            has_key.then_some(key.as_str()),
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
        key: Option<&str>,
    ) -> Result<Ctx, MaskError> {
        let Some(parent) = self.frames.last() else {
            if let Some(root) = self.root.take() {
                if root.role == Role::Anchor && is_obj {
                    // A document whose kind was read ahead (the last-applied annotation).
                    let (kind, group) = root.anchor.map(|a| (a.kind, a.group)).unwrap_or_default();
                    self.start_anchor(kind);
                    if let Some(a) = self.anchors.last_mut() {
                        a.group = group;
                    }
                    return Ok(Ctx {
                        role: Role::Anchor,
                        masked: None,
                        select: None,
                        filters: Vec::new(),
                        records: None,
                    });
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
                });
            }
            let role = match (self.seq, is_obj) {
                (true, true) => Role::Event,
                (false, true) => Role::Anchor,
                _ => Role::Plain,
            };
            if role == Role::Anchor {
                self.start_anchor(None);
            }
            return Ok(Ctx {
                role,
                masked: None,
                select: None,
                filters: Vec::new(),
                records: None,
            });
        };
        if parent.role == Role::Plain && parent.states.0 == parent.states.1 {
            // Nothing can match below here and no object starts here: the common case deep in
            // metadata, specs and statuses.
            return Ok(Ctx {
                role: Role::Plain,
                masked: parent.masked,
                select: None,
                filters: Vec::new(),
                records: None,
            });
        }
        let key_ref = if parent.object { key } else { None };
        let (parent_role, parent_states, anchor, masked, index) = (
            parent.role,
            parent.states,
            parent.anchor,
            parent.masked,
            parent.index,
        );
        let role = match (parent_role, key_ref, is_obj, is_arr) {
            (Role::Event, Some("object"), true, _) => Role::Anchor,
            (Role::Anchor, Some("items"), _, true) => Role::Items,
            (Role::Anchor, Some("rows"), _, true) => Role::Rows,
            (Role::Items, None, true, _) => Role::Anchor,
            (Role::Rows, None, true, _) => Role::Row,
            (Role::Row, Some("object"), true, _) => Role::Anchor,
            _ => Role::Plain,
        };
        let records = match (parent_role, key_ref, c) {
            (Role::Anchor, Some("kind"), b'"') => Some(Purpose::Kind),
            (Role::Anchor, Some("apiVersion"), b'"') => Some(Purpose::ApiVersion),
            _ => None,
        };
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
            });
        }
        // Disjoint field borrows: no Arc clone (an atomic increment) per value.
        let (set, states) = (&*self.set, &mut self.states);
        let mut filters = Vec::new();
        for k in parent_states.0..parent_states.1 {
            let Some(&s) = states.get(k) else { continue };
            advance(set, states, s, key_ref, index, parent_end, &mut filters);
        }
        let select = selection(set, &self.states, &self.anchors, parent_end, anchor);
        Ok(Ctx {
            role,
            masked,
            select,
            filters,
            records,
        })
    }

    fn start_anchor(&mut self, kind: Option<String>) {
        for (i, r) in self.set.rules.iter().enumerate() {
            let fits = match (&r.kinds, &kind) {
                (Some(want), Some(k)) => want.contains(k),
                _ => true,
            };
            if let (true, Ok(rule)) = (fits, u16::try_from(i)) {
                self.states.push(State { rule, step: 0 });
            }
        }
        self.anchors.push(AnchorInfo { kind, group: None });
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
        let mut keep = start;
        for k in start..end.min(self.states.len()) {
            let s = self.states[k];
            let fits = rules
                .get(usize::from(s.rule))
                .is_some_and(|r| r.kinds.as_ref().is_none_or(|want| want.contains(&kind)));
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
            let Some(p) = input
                .get(j..)
                .and_then(|rest| memchr::memchr2(b'"', b'\\', rest))
            else {
                self.string_chunk(&input[i..], out)?;
                self.str_spilled = true;
                return Ok(input.len());
            };
            let at = j + p;
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
                    self.key.push_str(&String::from_utf8_lossy(&decoded));
                } else {
                    match std::str::from_utf8(raw) {
                        Ok(k) => self.key.push_str(k),
                        Err(_) => self.key.push_str(&String::from_utf8_lossy(raw)),
                    }
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
            StrMode::Keep(p @ (Purpose::Kind | Purpose::ApiVersion)) => {
                out.push(b'"');
                out.extend_from_slice(raw);
                out.push(b'"');
                let text = if self.str_has_escape {
                    String::from_utf8_lossy(&self.decoded(raw)?).into_owned()
                } else {
                    String::from_utf8_lossy(raw).into_owned()
                };
                if let Some(a) = self
                    .frames
                    .last()
                    .and_then(|f| f.anchor)
                    .and_then(|a| self.anchors.get_mut(a))
                {
                    if p == Purpose::Kind {
                        a.kind = Some(text);
                    } else {
                        a.group = Some(
                            text.rsplit_once('/')
                                .map_or(String::new(), |(g, _)| g.to_string()),
                        );
                    }
                }
                if p == Purpose::Kind {
                    self.states.truncate(self.parent_end());
                    self.prune_anchor_states();
                }
            }
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
        detectors.find(text, &mut spans);
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
        };
        let mut nested = JsonMasker::nested(
            Arc::clone(&self.set),
            Root {
                states: Vec::new(),
                role: Role::Anchor,
                masked: None,
                select: None,
                anchor: Some(anchor),
            },
        );
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
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| MaskError::Malformed {
                offset: self.consumed,
                what: format!("an element a mask filter tests is not JSON: {e}"),
            })?;
        let set = Arc::clone(&self.set);
        let child_start = self.parent_end();
        let anchor = self.frames.last().and_then(|f| f.anchor);
        for f in &h.ctx.filters {
            let step = set
                .rules
                .get(usize::from(f.rule))
                .and_then(|r| r.steps.get(usize::from(f.step)));
            if matches!(step, Some(Step::Filter(filter)) if filter.holds(&value)) {
                push_state(
                    &mut self.states,
                    State {
                        rule: f.rule,
                        step: f.step.saturating_add(1),
                    },
                    child_start,
                );
            }
        }
        let select = selection(&set, &self.states, &self.anchors, child_start, anchor);
        let root = Root {
            states: self.states.get(child_start..).unwrap_or_default().to_vec(),
            role: h.ctx.role,
            masked: h.ctx.masked,
            select,
            anchor: anchor.and_then(|a| self.anchors.get(a)).cloned(),
        };
        let mut nested = JsonMasker::nested(set, root);
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
    key: Option<&str>,
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
    };
    match step {
        Step::Descend => {
            push_state(states, s, child_start);
            advance(set, states, next, key, index, child_start, filters);
        }
        Step::Child(name) => {
            if key == Some(name.as_str()) {
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
            || !fits(&rule.kinds, info.and_then(|i| i.kind.as_ref()))
            || !fits(&rule.groups, info.and_then(|i| i.group.as_ref()))
        {
            continue;
        }
        // What reveals less wins: a fixed marker over an HMAC token (which shows equality),
        // and either over masking inside a document.
        let reveals = |a: Action| match a {
            Action::Mask(Replace::Marker | Replace::Base64) => 0,
            Action::Mask(Replace::Hmac { .. }) => 1,
            Action::JsonString => 2,
        };
        if action.is_none_or(|cur| reveals(rule.action) < reveals(cur)) {
            action = Some(rule.action);
        }
    }
    action
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
