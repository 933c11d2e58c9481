//! The silent skip: a container in which nothing can be masked is read to its end by a lean
//! validating scan and copied in one piece.
//!
//! The quiet lane still takes one step per token, as the state machine would, because any
//! token may change what follows (a key a rule starts at, `metadata`, a string a detector
//! flags). Most containers of an object are silent all the way down: a Pod's `status`, an
//! object's `managedFields`, a container's `resources`, most of its `metadata`. When the lane
//! is at the first byte of such a container, [`scan`] reads to its closing bracket, checking
//! the grammar, the depth limit and every key, and collecting where its string values lie;
//! then the detectors' prefilter judges each of those values ([`Detectors::might_contain`]).
//! If nothing could apply, the container's bytes are exactly what the state machine would
//! write, and it ends in the state the state machine would end in (the container closed,
//! nothing tracked, nothing masked); so it is copied whole.
//!
//! Keys are judged as the state machine judges them. The scan gives up at a key a rule starts
//! at, and at a member of the container itself that one of its path states waits for (an
//! object's own `metadata` has the last-applied annotation's, waiting for `annotations`;
//! below a member no state waits for, nothing is tracked). With the `credential-keys` mask on
//! it follows the key scopes ObjectMeta gives (`metadata`, its fields, its labels and
//! annotations, as `meta_scope` does) and gives up at a label or annotation whose key names a
//! credential; a ConfigMap's data and objects of unknown kind, where every key judges its
//! value, are left to the state machine.
//!
//! It also gives up on an escape in a string value or any `%` or ESC byte when detectors run
//! (they decode those first), a malformed byte (the state machine reports it), the depth
//! limit, or the chunk ending first. The members of an object it read whole before the one it
//! gave up in are copied when nothing in them applies, and the state machine goes on from
//! the next key, as it would after their comma; otherwise nothing is consumed. A chunking that
//! cuts every container never takes this path and a whole document mostly does, so the
//! chunking properties (`core/tests/mask_props.rs`), the masker fuzz target and the tests below
//! compare the two.
//!
//! Giving up is remembered, so that no byte is scanned more than twice however deeply the
//! containers that stop the skip nest: when the structure stopped it (a key, the chunk's
//! end), the containers still open at that byte (`JsonMasker::skip_spine`) are not tried
//! again, since they would stop there too, while the others inside it are; when the
//! detectors stopped it, none of the containers inside it is (`JsonMasker::skip_from`).

use super::super::rules::MaskSet;
use super::super::scan::find2;
use super::super::strings::unescape;
use super::{JsonMasker, KeyScope, Lex, Role, meta_scope, valid_literal};
use crate::mask::MaskError;

/// What a scan needs to know about the container it reads.
pub(super) struct Scope<'a> {
    pub(super) set: &'a MaskSet,
    /// The container's own key scope.
    pub(super) scope: KeyScope,
    /// The `credential-keys` mask is on: key scopes are tracked, and a string value under a
    /// credential-named key in a label or annotation map makes the scan give up.
    pub(super) keys: bool,
    /// Whether a string under this key in a label or annotation map is masked for its key
    /// (the masker's `credential_key_mask`).
    pub(super) credential: &'a dyn Fn(&[u8]) -> bool,
    /// The container has path states (each waiting for a member by name).
    pub(super) awaits: bool,
    /// Whether a path state waits for this member of the container itself (not of the
    /// containers below, which have no states).
    pub(super) awaited: &'a dyn Fn(&[u8]) -> bool,
    /// How many containers may still open below this one.
    pub(super) depth_left: usize,
    /// Detectors judge string values: escapes, `%` and ESC make the scan give up.
    pub(super) detect: bool,
    /// The shortest string value the detectors read (`usize::MAX` without detectors): only
    /// those are recorded, so the list stays far smaller than the input.
    pub(super) judged_len: usize,
}

/// The container's own members (or elements) a scan read whole before it ended: up to and
/// including the comma after the last of them, at `input[..to]`, with the first `values` of the
/// string values it listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Whole {
    pub(super) to: usize,
    pub(super) values: usize,
}

/// What a scan writes besides its verdict, in lists the masker keeps from scan to scan.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    /// String values the detectors read, as ranges of the input.
    values: Vec<(usize, usize)>,
    /// On giving up: where the containers still open start (the first byte inside each,
    /// outermost first). A scan of any of them would give up at the same byte.
    spine: Vec<usize>,
    /// The key scopes of the containers open.
    scopes: Vec<KeyScope>,
    /// How far the container's own members were read whole.
    whole: Whole,
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scan {
    /// The container ends at `close` (its closing bracket).
    Closed { close: usize },
    /// Something at `at` is for the state machine (or the chunk ended there).
    GaveUp { at: usize },
}

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

/// A bit stack of open containers (set: object), at most 256 deep, with each one's key scope
/// when scopes are tracked (`KEYS`; otherwise every container has the scanned one's).
struct Nest<'s, const KEYS: bool> {
    bits: [u64; 4],
    depth: usize,
    scope: KeyScope,
    scopes: &'s mut Vec<KeyScope>,
}

impl<const KEYS: bool> Nest<'_, KEYS> {
    fn top_scope(&self) -> KeyScope {
        if KEYS {
            self.scopes.last().copied().unwrap_or(self.scope)
        } else {
            self.scope
        }
    }
    fn pop(&mut self) {
        self.depth -= 1;
        if KEYS {
            self.scopes.pop();
        }
    }
    fn top_is_object(&self) -> bool {
        let d = self.depth - 1;
        self.bits[d / 64] >> (d % 64) & 1 == 1
    }
    fn push(&mut self, object: bool, scope: KeyScope) -> bool {
        if self.depth >= 256 {
            return false;
        }
        if KEYS {
            self.scopes.push(scope);
        }
        let d = self.depth;
        let bit = 1u64 << (d % 64);
        if object {
            self.bits[d / 64] |= bit;
        } else {
            self.bits[d / 64] &= !bit;
        }
        self.depth += 1;
        true
    }
}

/// The key scope of a value under `key` (`None` in an array) in a container of scope
/// `parent`: the state machine's own rule for a plain container (`context_with`'s shortcut).
#[inline(always)]
fn child_scope(parent: KeyScope, key: Option<&[u8]>) -> KeyScope {
    meta_scope(Role::Plain, parent, key).unwrap_or(parent)
}

/// Whether a container of key scope `scope` can be read by the scan. With the
/// `credential-keys` mask on, the scan tracks the scopes ObjectMeta gives (its own fields,
/// labels and annotations, judged by key) and gives up where a key masks; the maps whose every
/// key judges its value (a ConfigMap's data, an object of unknown kind) are left to the state
/// machine. In `binaryData` values are decoded for the detectors.
fn scope_is_silent(set: &MaskSet, scope: KeyScope) -> bool {
    match scope {
        KeyScope::Plain | KeyScope::Meta | KeyScope::MetaRoot | KeyScope::MetaMap => true,
        KeyScope::Credentials => !set.credential_keys,
        KeyScope::Binary => false,
    }
}

/// Read the container whose first byte after the opening bracket is `input[from]` (an object
/// when `object`), to its closing bracket, leaving in `found` its string values, how far its own
/// members were read whole, and on giving up the containers still open.
pub(super) fn scan(
    input: &[u8],
    from: usize,
    object: bool,
    scope: &Scope<'_>,
    found: &mut Scratch,
) -> Scan {
    // Compiled twice: without the `credential-keys` mask no scope is tracked at all.
    let Scratch {
        values,
        spine,
        scopes,
        whole,
        ..
    } = found;
    if scope.keys {
        scan_with::<true>(input, from, object, scope, values, spine, scopes, whole)
    } else {
        scan_with::<false>(input, from, object, scope, values, spine, scopes, whole)
    }
}

#[allow(clippy::too_many_arguments, reason = "`scan`'s scratch lists, apart")]
fn scan_with<const KEYS: bool>(
    input: &[u8],
    from: usize,
    object: bool,
    scope: &Scope<'_>,
    values: &mut Vec<(usize, usize)>,
    spine: &mut Vec<usize>,
    scopes: &mut Vec<KeyScope>,
    whole: &mut Whole,
) -> Scan {
    scopes.clear();
    *whole = Whole {
        to: from,
        values: 0,
    };
    let mut nest = Nest::<KEYS> {
        bits: [0; 4],
        depth: 0,
        scope: scope.scope,
        scopes,
    };
    nest.push(object, scope.scope);
    spine.clear();
    spine.push(from);
    let mut i = from;
    // Just inside a container: it may close at once.
    let mut first = true;
    // One turn per member or element: its key (in an object), its value, and what follows a
    // scalar value (a comma, or closers) read in the same turn.
    loop {
        i = skip_ws(input, i);
        let Some(&c) = input.get(i) else {
            return Scan::GaveUp { at: i };
        };
        let in_object = nest.top_is_object();
        if first && c == if in_object { b'}' } else { b']' } {
            // An empty container: what follows it is read below.
        } else {
            let parent = nest.top_scope();
            let child = if in_object {
                match key::<KEYS>(input, i, scope, parent, nest.depth == 1) {
                    Some((value, scope)) => {
                        i = value;
                        scope
                    }
                    None => return Scan::GaveUp { at: i },
                }
            } else if KEYS {
                child_scope(parent, None)
            } else {
                parent
            };
            let Some(&c) = input.get(i) else {
                return Scan::GaveUp { at: i };
            };
            match c {
                b'"' => {
                    let Some(end) = find2(b'"', b'\\', input, i + 1) else {
                        return Scan::GaveUp { at: i };
                    };
                    let close = if input[end] == b'"' {
                        end
                    } else if scope.detect {
                        // Detectors judge an escaped string decoded: the state machine's.
                        return Scan::GaveUp { at: i };
                    } else {
                        match string_end(input, end) {
                            Some(close) => close,
                            None => return Scan::GaveUp { at: i },
                        }
                    };
                    if close - (i + 1) >= scope.judged_len {
                        values.push((i + 1, close));
                    }
                    i = close + 1;
                }
                b'{' | b'[' => {
                    if nest.depth >= scope.depth_left || !nest.push(c == b'{', child) {
                        return Scan::GaveUp { at: i };
                    }
                    i += 1;
                    spine.push(i);
                    first = true;
                    continue;
                }
                b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                    // The state machine holds at most 512 literal bytes.
                    let run = &input[i..input.len().min(i + 513)];
                    let Some(len) = run.iter().position(|&c| !is_literal_byte(c)) else {
                        return Scan::GaveUp { at: i };
                    };
                    if !valid_literal(&input[i..i + len]) {
                        return Scan::GaveUp { at: i };
                    }
                    i += len;
                }
                _ => return Scan::GaveUp { at: i },
            }
            i = skip_ws(input, i);
        }
        // After a value: a comma goes on to the next member or element; a closer ends the
        // container, after which the same holds in its parent.
        first = false;
        loop {
            let closer = if nest.top_is_object() { b'}' } else { b']' };
            match input.get(i) {
                Some(b',') => {
                    i += 1;
                    if nest.depth == 1 && object {
                        *whole = Whole {
                            to: i,
                            values: values.len(),
                        };
                    }
                    break;
                }
                Some(&c) if c == closer => {
                    nest.pop();
                    spine.pop();
                    if nest.depth == 0 {
                        return Scan::Closed { close: i };
                    }
                    i = skip_ws(input, i + 1);
                }
                _ => return Scan::GaveUp { at: i },
            }
        }
    }
}

fn skip_ws(input: &[u8], mut i: usize) -> usize {
    while input.get(i).copied().is_some_and(is_ws) {
        i += 1;
    }
    i
}

fn is_literal_byte(c: u8) -> bool {
    matches!(c, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.')
}

/// A member's key at `input[i]` (in a container of key scope `parent`; `own` when that is the
/// scanned container itself) and its colon: where its value starts (after whitespace) and the
/// value's key scope, or `None` when the scan gives up there: a rule starts at the key, a
/// path state waits for it, or (with the `credential-keys` mask on) its string value is judged
/// by a credential-named key.
#[inline(always)]
fn key<const KEYS: bool>(
    input: &[u8],
    i: usize,
    scope: &Scope<'_>,
    parent: KeyScope,
    own: bool,
) -> Option<(usize, KeyScope)> {
    if input.get(i) != Some(&b'"') {
        return None;
    }
    let end = find2(b'"', b'\\', input, i + 1)?;
    if input[end] == b'"' {
        let colon = skip_ws(input, end + 1);
        if input.get(colon) != Some(&b':') {
            return None;
        }
        let value = skip_ws(input, colon + 1);
        let child = judge::<KEYS>(scope, parent, own, &input[i + 1..end], input.get(value))?;
        return Some((value, child));
    }
    // An escaped key: judged as the state machine judges it, decoded (one that does not
    // decode is an error it reports).
    let close = string_end(input, end)?;
    let colon = skip_ws(input, close + 1);
    if input.get(colon) != Some(&b':') {
        return None;
    }
    let value = skip_ws(input, colon + 1);
    let key = unescape(&input[i + 1..close]).ok()?;
    let child = judge::<KEYS>(scope, parent, own, &key, input.get(value))?;
    Some((value, child))
}

/// A member's key (`value`: its value's first byte) in a container of scope `parent`: its
/// value's scope, or `None` when the scan gives up at it.
#[inline(always)]
fn judge<const KEYS: bool>(
    scope: &Scope<'_>,
    parent: KeyScope,
    own: bool,
    key: &[u8],
    value: Option<&u8>,
) -> Option<KeyScope> {
    if scope.set.starts_at(key) || own && scope.awaits && (scope.awaited)(key) {
        return None;
    }
    if !KEYS {
        return Some(parent);
    }
    let child = child_scope(parent, Some(key));
    // A string (or whatever else comes) under a credential-named key in a label or
    // annotation map is masked.
    if child == KeyScope::MetaMap
        && value != Some(&b'{')
        && value != Some(&b'[')
        && (scope.credential)(key)
    {
        return None;
    }
    Some(child)
}

/// The closing quote of a string with an escape at `at`, or `None` when the chunk ends first.
fn string_end(input: &[u8], mut at: usize) -> Option<usize> {
    loop {
        match input.get(at)? {
            b'"' => return Some(at),
            _ => {
                // A backslash: the byte after it is escaped.
                at = find2(b'"', b'\\', input, at + 2)?;
            }
        }
    }
}

impl JsonMasker {
    /// The shortest string value the detectors read.
    fn judged_len(&self) -> usize {
        self.set
            .detectors
            .as_ref()
            .map_or(usize::MAX, |d| d.min_len())
    }

    /// Whether the values the detectors judge, in `input` at `values`, are all left as they are.
    fn detectors_pass(&self, input: &[u8], values: &[(usize, usize)]) -> bool {
        let Some(d) = self.set.detectors.as_ref() else {
            return true;
        };
        // Each string judged as `detect_string` judges it, up to the point where it would run a
        // regex: no escape (the scan gave up on those), no `%` or ESC to decode.
        values.iter().all(|&(a, b)| {
            let text = &input[a..b];
            !super::super::scan::contains2(b'%', 0x1b, text) && !d.might_contain(text)
        })
    }

    /// Whether a whole held element (`bytes`, a container of key scope `scope`, which a
    /// nested masker would judge from its first byte with nothing tracked) is silent: what
    /// that masker would write is `bytes`.
    pub(super) fn silent_element(&mut self, bytes: &[u8], scope: KeyScope) -> bool {
        #[cfg(test)]
        if self.skip_off {
            return false;
        }
        let object = match bytes.first() {
            Some(b'{') => true,
            Some(b'[') => false,
            _ => return false,
        };
        if !scope_is_silent(&self.set, scope) {
            return false;
        }
        // The nested masker's depth starts again at the element.
        match self.scan_silent(bytes, 1, object, scope, 1, (0, 0)) {
            (Scan::Closed { close }, silent) => silent && close + 1 == bytes.len(),
            (Scan::GaveUp { .. }, _) => false,
        }
    }

    /// [`scan`] the container of key scope `scope` whose inside starts at `input[from]`, with
    /// `open` containers open around it and this one, and path states `states`: how it ended,
    /// and whether it is silent (closed, and the detectors pass every value). What the scan
    /// found is left in `skip_scan`.
    fn scan_silent(
        &mut self,
        input: &[u8],
        from: usize,
        object: bool,
        scope: KeyScope,
        open: usize,
        states: (usize, usize),
    ) -> (Scan, bool) {
        let mut found = std::mem::take(&mut self.skip_scan);
        found.values.clear();
        let credential = |k: &[u8]| {
            self.credential_key_mask(b'"', KeyScope::MetaMap, Some(k))
                .is_some()
        };
        let awaited = |k: &[u8]| self.by_name(states).any(|n| n == Some(k));
        let scope = Scope {
            set: &self.set,
            scope,
            keys: self.set.credential_keys,
            credential: &credential,
            awaits: states.0 != states.1,
            awaited: &awaited,
            // The state machine refuses to open a container when this many are open.
            depth_left: self.set.limits.max_depth.saturating_sub(open),
            detect: self.set.detectors.is_some(),
            judged_len: self.judged_len(),
        };
        let scanned = scan(input, from, object, &scope, &mut found);
        let silent = match scanned {
            Scan::Closed { .. } => self.detectors_pass(input, &found.values),
            Scan::GaveUp { .. } => false,
        };
        self.skip_scan = found;
        (scanned, silent)
    }

    /// At `input[i]`, the first byte inside the container just opened: copy it whole and close
    /// it when it is silent; `None` (nothing consumed) when it is not.
    pub(super) fn silent_skip(
        &mut self,
        input: &[u8],
        i: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, MaskError> {
        #[cfg(test)]
        if self.skip_off {
            return Ok(None);
        }
        // A container opened at the chunk's very end is tried in the next chunk.
        let at = self.consumed + i as u64;
        if i >= input.len()
            || self.hold.is_some()
            || at < self.skip_from
            || self.skip_spine.binary_search(&at).is_ok()
        {
            return Ok(None);
        }
        let Some(f) = self.frames.last() else {
            return Ok(None);
        };
        let first = if f.object {
            Lex::ObjFirst
        } else {
            Lex::ArrFirst
        };
        // A container with path states is read when each waits for a member by name (the
        // last-applied annotation's, in `metadata`): the scan gives up at those members, and
        // under any other nothing is tracked.
        if self.lex != first
            || f.role != Role::Plain
            || f.loose
            || f.masked.is_some()
            || !scope_is_silent(&self.set, f.scope)
            || !self.states_wait_by_name(f.states)
        {
            return Ok(None);
        }
        let (object, scope, states) = (f.object, f.scope, f.states);
        let (scanned, silent) =
            self.scan_silent(input, i, object, scope, self.frames.len(), states);
        #[cfg(test)]
        {
            let end = match scanned {
                Scan::Closed { close } => close,
                Scan::GaveUp { at } => at,
            };
            self.skip_stats.0 += usize::from(silent);
            self.skip_stats.1 += end - i;
        }
        let mut copied = None;
        match scanned {
            Scan::Closed { close } if silent => {
                out.extend_from_slice(&input[i..=close]);
                self.close_frame(out)?;
            }
            // Stopped by the detectors: none of the containers inside it is tried again (each
            // would scan again what this scan read, once per level of nesting).
            Scan::Closed { close } => self.skip_from = self.consumed + close as u64,
            // Stopped by the structure (a key, the chunk's end): the containers still open
            // there would stop at the same byte and are not tried again; the others inside it
            // are.
            Scan::GaveUp { .. } => {
                // The container's own members read whole before the one that stopped the
                // scan are copied (in an object: the state machine is then after a comma,
                // waiting for a key; an array's elements are counted, so they are not
                // copied), and the state machine reads on from there.
                let whole = self.skip_scan.whole;
                if object
                    && whole.to > i
                    && self.detectors_pass(
                        input,
                        self.skip_scan.values.get(..whole.values).unwrap_or(&[]),
                    )
                {
                    out.extend_from_slice(&input[i..whole.to]);
                    self.lex = Lex::ObjKey;
                    copied = Some(whole.to);
                }
                let base = self.consumed;
                self.skip_spine.clear();
                // One that starts at the chunk's very end is tried in the next chunk, where
                // it may end.
                self.skip_spine.extend(
                    self.skip_scan
                        .spine
                        .iter()
                        .filter(|&&p| p < input.len())
                        .map(|&p| base + p as u64),
                );
            }
        }
        Ok(match scanned {
            Scan::Closed { close } if silent => Some(close + 1),
            Scan::GaveUp { .. } => copied,
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::super::super::rules::MaskSet;
    use super::super::test_support::{assert_whole_is_bytewise, mask_chunks};
    use super::super::{JsonMasker, Origin};
    use super::{Scan, Scope, Scratch, scan};

    fn mask(set: &Arc<MaskSet>, input: &[u8], chunk: usize) -> (Vec<u8>, bool) {
        mask_chunks(set, input, chunk, false)
    }

    /// Masked whole: the output, and the silent skip's (containers copied, bytes scanned).
    fn skip_stats(set: &Arc<MaskSet>, input: &[u8]) -> Result<(Vec<u8>, (usize, usize)), String> {
        let mut m = JsonMasker::new(Arc::clone(set), false, Arc::new(Origin::default()));
        let mut out = Vec::new();
        m.feed(input, &mut out).map_err(|e| e.to_string())?;
        m.finish(&mut out).map_err(|e| e.to_string())?;
        Ok((out, m.skip_stats))
    }

    /// Silent containers are copied whole; and however deep the containers that stop the skip
    /// nest, each byte is scanned at most twice by it.
    #[test]
    fn the_skip_is_taken_and_scans_each_byte_at_most_twice() -> Result<(), String> {
        let set = Arc::new(MaskSet::builtin()?);
        let doc = br#"{"kind":"Pod","status":{"phase":"Running","conditions":[{"type":"Ready"}]},"spec":{"containers":[{"name":"c","env":[{"name":"TOKEN","value":"s3cr3tvalue1"}]}]}}"#;
        let (out, (copied, _)) = skip_stats(&set, doc)?;
        assert!(!String::from_utf8_lossy(&out).contains("s3cr3tvalue1"));
        assert_eq!(
            copied, 1,
            "`status` is copied whole (`spec` has rules in it)"
        );
        // Every level holds a string the detectors flag, and a key a rule starts at.
        // A container opened at a chunk's very end (by the state machine, or by the lane
        // inside a container whose scan the chunk's end stopped) is taken in the next chunk.
        for (doc, cut) in [
            (&br#"{"kind":"Pod","status":{"b":1}}"#[..], 24),
            (br#"{"kind":"Pod","status":{"a":{"b":1}}}"#, 29),
        ] {
            let mut m = JsonMasker::new(Arc::clone(&set), false, Arc::new(Origin::default()));
            let mut out = Vec::new();
            for part in [&doc[..cut], &doc[cut..]] {
                m.feed(part, &mut out).map_err(|e| e.to_string())?;
            }
            m.finish(&mut out).map_err(|e| e.to_string())?;
            assert_eq!(doc[cut - 1], b'{');
            assert_eq!(out, doc.to_vec());
            assert_eq!(m.skip_stats.0, 1, "{}", String::from_utf8_lossy(doc));
        }
        // What stops it sits at every level, or only at the deepest (so that every scan from
        // an outer level reads to it).
        for stop in [
            r#""m":"password=hunter22""#,
            r#""env":[]"#,
            r#""metadata":{}"#,
        ] {
            for every_level in [true, false] {
                let depth = 200;
                let mut doc = String::from(r#"{"kind":"Pod","status":"#);
                for level in 0..depth {
                    let here = if every_level || level == depth - 1 {
                        stop
                    } else {
                        r#""n":1"#
                    };
                    doc.push_str(&format!(r#"{{"pad":"{}",{here},"x":"#, "p".repeat(100)));
                }
                doc.push('1');
                doc.push_str(&"}".repeat(depth + 1));
                let (_, (_, scanned)) = skip_stats(&set, doc.as_bytes())?;
                assert!(
                    scanned <= 2 * doc.len(),
                    "{stop}, every level {every_level}: {scanned} bytes scanned for a {}-byte \
                     document",
                    doc.len()
                );
            }
        }
        Ok(())
    }

    fn credential(k: &[u8]) -> bool {
        let name = k.rsplit(|&b| b == b'/').next().unwrap_or(k);
        crate::mask::credname::is_credential_key(&String::from_utf8_lossy(name))
    }

    fn awaited(k: &[u8]) -> bool {
        k == b"awaited"
    }

    fn scope(set: &MaskSet, detect: bool) -> Scope<'_> {
        Scope {
            set,
            scope: super::KeyScope::Plain,
            keys: true,
            credential: &credential,
            awaits: true,
            awaited: &awaited,
            depth_left: 8,
            detect,
            judged_len: 0,
        }
    }

    /// The scan's verdicts on the shapes it must take and the ones it must leave.
    #[test]
    fn the_scan_takes_silent_containers_and_leaves_the_rest() -> Result<(), String> {
        let set = MaskSet::builtin()?;
        let closed = |doc: &[u8], detect: bool| {
            let mut found = Scratch::default();
            let object = doc.first() == Some(&b'{');
            match scan(doc, 1, object, &scope(&set, detect), &mut found) {
                Scan::Closed { close } => Some((close, found.values)),
                Scan::GaveUp { .. } => None,
            }
        };
        let taken: &[&[u8]] = &[
            br#"{}"#,
            br#"[]"#,
            br#"{"a":1,"b":[true,false,null,-1.5e3],"c":{"d":"e"}} "#,
            br#"[ {"k:{\"port\":80}":{}} , "x" ]"#,
            br#"{"f:password":{},"password":{}}"#,
            // ObjectMeta is read with its scopes: labels and annotations by key.
            br#"{"metadata":{"name":"a","labels":{"app":"x","tier":"y"},"annotations":{}},"b":1}"#,
            br#"{"metadata":{"labels":{"password":{}},"annotations":{"x/token":["v"]}}}"#,
            // Only the container's own members are awaited by its states.
            br#"{"a":{"awaited":1}}"#,
            // `password` names a credential only in a label or annotation map.
            br#"{"metadata":{"password":"v","name":{"password":"v"}},"password":"v"}"#,
            // A map's own key is no credential's name.
            br#"{"metadata":{"labels":"token"}}"#,
        ];
        for doc in taken {
            assert!(
                closed(doc, true).is_some(),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        let (close, values) = closed(br#"{"a":"xy","b":["z"]}"#, true).ok_or("not taken")?;
        assert_eq!(close, 19);
        assert_eq!(values, vec![(6, 8), (16, 17)]);
        let left: &[&[u8]] = &[
            br#"{"a":1"#,
            br#"{"a":1]"#,
            br#"[1}"#,
            br#"{"a" 1}"#,
            br#"{"a":01}"#,
            br#"{"a":1x}"#,
            br#"{"a":tru}"#,
            br#"{"a":1,}"#,
            br#"{"metadata":{"labels":{"db-password":"x"}}}"#,
            br#"{"metadata":{"annotations":{"example.com/api-token":1}}}"#,
            br#"{"a":{"metadata":{"labels":{"x":"1","token":"v"}}}}"#,
            br#"{"awaited":1}"#,
            br#"{"a":"esc\"aped"}"#,
            br#"{"a":"bad\"}"#,
            br#"[[[[[[[[[]]]]]]]]]"#,
        ];
        for doc in left {
            assert!(
                closed(doc, true).is_none(),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
        // Without detectors an escaped value is only copied.
        assert!(closed(br#"{"a":"esc\"aped"}"#, false).is_some());
        Ok(())
    }

    /// Whole documents (the skip takes most containers) and byte by byte (it takes none)
    /// agree, on silent containers and on everything that must stop it.
    #[test]
    fn skipping_writes_what_the_state_machine_writes() -> Result<(), String> {
        let set = Arc::new(MaskSet::builtin()?);
        let docs: &[&[u8]] = &[
            br#"{"kind":"Pod","status":{"phase":"Running","conditions":[{"type":"Ready"}],"n":[1,2.5,{"x":null}]}}"#,
            br#"{"kind":"Pod","status":{"message":"password=hunter22"},"spec":{"x":{"note":"ghp_0123456789abcdefghijklmnopqrstuvwxyz"}}}"#,
            br#"{"kind":"Pod","status":{"message":"pass\u0077ord=hunter22"}}"#,
            br#"{"kind":"Pod","status":{"message":"password%3Dhunter22"}}"#,
            br#"{"kind":"Pod","status":{"f:password":{},"k:{\"name\":\"db-password\"}":{".":{}}}}"#,
            br#"{"kind":"Deployment","spec":{"template":{"metadata":{"annotations":{"token":"t0ps3cret"},"labels":{"db-password":"hunter22"}}}}}"#,
            br#"{"kind":"Pod","spec":{"containers":[{"name":"c","resources":{"limits":{"cpu":"1"}},"env":[{"name":"API_TOKEN","value":"s3cr3tvalue"}]}]}}"#,
            br#"{"kind":"Pod","status":{"a":[1,2}}"#,
            br#"{"kind":"Pod","status":{"a":{"b":"\x"}}}"#,
            br#"{"kind":"List","items":[{"kind":"Secret","data":{"a":"aHVudGVy"}}],"x":{"y":"z"}}"#,
            br#"{"kind":"Event","source":{"component":"Bearer abcdefghijklmnopqrstuvwxyz0123"}}"#,
        ];
        assert_whole_is_bytewise(&set, docs);
        let (out, ok) = mask(&set, docs[1], docs[1].len());
        assert!(ok);
        let out = String::from_utf8_lossy(&out);
        assert!(
            !out.contains("hunter22") && !out.contains("ghp_0123"),
            "{out}"
        );
        Ok(())
    }

    /// Strings made of keyword pieces, secret shapes and JSON punctuation, in containers that
    /// are silent but for them: masked whole and byte by byte, the same.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("password".to_string()),
            Just("=".to_string()),
            Just(": ".to_string()),
            Just("Bearer ".to_string()),
            Just("ghp_".to_string()),
            Just("AKIA".to_string()),
            Just("://u:p@".to_string()),
            Just("12345678:AA".to_string()),
            Just("pwd".to_string()),
            Just("token".to_string()),
            Just("-----BEGIN PRIVATE KEY-----".to_string()),
            "[A-Za-z0-9+/_-]{1,40}",
            "[ a-z]{1,6}",
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..6).prop_map(|p| p.concat())
    }

    fn container(depth: u32) -> BoxedStrategy<String> {
        let leaf = prop_oneof![
            text().prop_map(|t| format!("{t:?}")),
            Just("12".to_string()),
            Just("null".to_string()),
        ];
        leaf.prop_recursive(depth, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((text(), inner), 0..4).prop_map(|m| {
                    let members: Vec<String> =
                        m.into_iter().map(|(k, v)| format!("{k:?}:{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
        .boxed()
    }

    /// The built-in masks; the built-in masks and detectors but `credential-keys`, where an
    /// ObjectMeta's maps say nothing and are read by the scan too; and every mask and detector
    /// off, where escaped values are copied unread.
    static SETS: std::sync::LazyLock<Result<[Arc<MaskSet>; 3], String>> = std::sync::LazyLock::new(
        || {
            let policy = |disable: &str| {
                crate::policy::Policy::from_yaml(&format!(
                    "apiVersion: kubeleash.dev/v1alpha1\nkind: Policy\nmetadata: {{name: p}}\nspec:\n  rules: []\n  masks:\n    disable: [{disable}]\n"
                ))
                .map(|p| Arc::clone(p.mask_set()))
                .map_err(|e| e.to_string())
            };
            let all = format!("{}, detectors", crate::mask::BUILTIN_MASKS.join(", "));
            Ok([
                Arc::new(MaskSet::builtin()?),
                policy("credential-keys")?,
                policy(&all)?,
            ])
        },
    );

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]
        #[test]
        fn a_skip_never_lets_a_detector_miss(
            inner in container(4),
            env in prop::collection::vec((text(), container(2)), 0..4),
            label in (text(), text()),
            extra in container(2),
            applied in any::<bool>(),
            cut in 1usize..64,
            which in 0usize..3,
        ) {
            let sets = SETS.as_ref().map_err(|e| TestCaseError::fail(e.clone()))?;
            let set = &sets[which];
            // In a pod's status (the skip), as env entries with any name and any value (a held
            // element judged whole), and as labels and annotations (judged by key).
            let env: Vec<String> = env
                .iter()
                .map(|(name, value)| format!(r#"{{"name":{name:?},"value":{value}}}"#))
                .collect();
            let (k, v) = label;
            // ObjectMeta, with keys that name credentials or not, with and without an owner's
            // domain, values of any shape, and sometimes the last-applied annotation (a path
            // state waits for `annotations` in an object's own metadata).
            let applied = if applied {
                r#","kubectl.kubernetes.io/last-applied-configuration":"{\"kind\":\"Secret\",\"data\":{\"a\":\"c2VjcmV0\"}}""#
            } else {
                ""
            };
            let dk = format!("example.com/{k}");
            let meta = format!(
                r#"{{"name":"p","labels":{{{k:?}:{v:?},{dk:?}:{v:?},"nest":{extra}}},"annotations":{{{k:?}:{v:?},"x":{v:?}{applied}}},"finalizers":[{v:?}],"x":{extra},{k:?}:{v:?}}}"#
            );
            let doc = format!(
                r#"{{"kind":"Pod","metadata":{meta},"status":{{"x":{inner},"metadata":{meta}}},"spec":{{"containers":[{{"name":"c","env":[{}]}}],"x":[{inner}]}}}}"#,
                env.join(",")
            );
            let whole = mask(set, doc.as_bytes(), doc.len());
            let cuts = mask(set, doc.as_bytes(), cut);
            let bytewise = mask(set, doc.as_bytes(), 1);
            let without = mask_chunks(set, doc.as_bytes(), doc.len(), true);
            prop_assert_eq!(&whole, &without, "{}", doc);
            prop_assert_eq!(&whole, &bytewise, "{}", doc);
            prop_assert_eq!(&cuts, &bytewise, "{}", doc);
        }
    }
}
