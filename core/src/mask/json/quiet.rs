//! The quiet lane: the members and elements of a container where no rule can apply (no path
//! state, no selection, not an object of unknown kind, not a ConfigMap's data) are read in one
//! tight loop instead of one state-machine step per token. In labels and annotations, whose
//! values are judged by their keys, a member whose key names a credential is left to the state
//! machine.
//!
//! It takes only what it can finish inside the chunk at hand: a key with a scalar value (a
//! string without escapes, a number or literal that ends before the chunk does), or a scalar
//! element, plus the whitespace and commas between them; the opening of a container the state
//! machine would open with nothing to track (no rule starts at its key, its parent has no path
//! state), and the end of the container it is in. A key whose value is any other container is
//! read and the state machine takes over at the container, as if it had read the key itself.
//! In a Kubernetes object of a known built-in kind, its scalar members are the lane's too,
//! but for `kind` and `apiVersion` and the members the state machine scopes by name.
//! Everything else (an escape, a chunk boundary, a key a rule starts at, a key that changes
//! the scope such as `annotations`, a malformed byte) is left to the state machine at the byte
//! where it starts, with nothing consumed. What it writes is what the state machine writes
//! for the same bytes: kept bytes copied, string values judged by the same detectors, the same
//! frames pushed and popped. The chunking properties (`core/tests/mask_props.rs`), the masker
//! fuzz target and the unit test below check that: a one-byte chunking never takes this lane,
//! a whole document mostly does, and their outputs must be equal.

use super::super::MaskError;
use super::super::path::Step;
use super::super::scan::find2;
use super::{Frame, JsonMasker, KeyScope, Lex, NextArg, Role, Tool, meta_scope, valid_literal};

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(input: &[u8], mut i: usize) -> usize {
    while input.get(i).is_some_and(|&c| is_ws(c)) {
        i += 1;
    }
    i
}

fn is_literal_byte(c: u8) -> bool {
    matches!(c, b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.')
}

/// A scalar that starts at `input[at]` and ends inside `input`.
enum Scalar {
    /// A string's contents are `input[at + 1..end]` (no escape); the value ends at `end + 1`.
    Str { end: usize },
    /// A number or literal `input[at..end]`, valid.
    Literal { end: usize },
}

fn scalar_at(input: &[u8], at: usize) -> Option<Scalar> {
    match *input.get(at)? {
        b'"' => {
            let end = find2(b'"', b'\\', input, at + 1)?;
            (input.get(end) == Some(&b'"')).then_some(Scalar::Str { end })
        }
        b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
            let len = input.get(at..)?.iter().position(|&c| !is_literal_byte(c))?;
            let end = at + len;
            // The state machine holds at most 512 literal bytes; past that it is an error
            // it reports.
            (len <= 512 && valid_literal(input.get(at..end)?)).then_some(Scalar::Literal { end })
        }
        _ => None,
    }
}

impl JsonMasker {
    /// The innermost container, when the lane can read in it: whether it is an object, its key
    /// scope, its path states, and whether it is a Kubernetes object. A plain container (not a
    /// list's items, not a command line or Table part) or a Kubernetes object whose kind is
    /// known and built in, not masked whole, not of unknown kind, whose states (if any) all
    /// wait for a member by name: a scalar under any other name has no state and no selection.
    fn quiet_frame(&self) -> Option<(bool, KeyScope, (usize, usize), bool)> {
        if self.hold.is_some() {
            return None;
        }
        let f = self.frames.last()?;
        // An object of a built-in kind judges its scalar members as a plain object does, but
        // for `kind` and `apiVersion` (which `quiet_member` hands back); one of unknown or
        // not yet known kind judges every member strictly.
        let anchor = f.role == Role::Anchor
            && f.object
            && f.anchor
                .and_then(|a| self.anchors.get(a))
                .is_some_and(|a| a.builtin && a.kind.is_some());
        let quiet = (f.role == Role::Plain || anchor)
            && !f.loose
            && f.masked.is_none()
            && matches!(
                f.scope,
                KeyScope::Plain | KeyScope::Meta | KeyScope::MetaRoot | KeyScope::MetaMap
            )
            && self.states_wait_by_name(f.states);
        quiet.then_some((f.object, f.scope, f.states, anchor))
    }

    /// The names the states in `range` wait for, `None` for a state that waits for anything
    /// else (an index, a filter, any member, a descent) or is complete.
    pub(super) fn by_name(
        &self,
        range: (usize, usize),
    ) -> impl Iterator<Item = Option<&[u8]>> + '_ {
        self.states
            .get(range.0..range.1)
            .unwrap_or_default()
            .iter()
            .map(|s| {
                match self
                    .set
                    .rules
                    .get(usize::from(s.rule))
                    .and_then(|r| r.steps.get(usize::from(s.step)))
                {
                    Some(Step::Child(name)) => Some(name.as_bytes()),
                    _ => None,
                }
            })
    }

    pub(super) fn states_wait_by_name(&self, range: (usize, usize)) -> bool {
        self.by_name(range).all(|n| n.is_some())
    }

    /// Read from `i` in the quiet lane; return where the state machine takes over.
    ///
    /// The lane also opens the containers the state machine would open with nothing to
    /// track (see [`JsonMasker::quiet_open`]) and closes the container it is in, so a run of
    /// quiet structure (ObjectMeta's `managedFields`, a Pod's `status`) is read here whole.
    pub(super) fn quiet_run(
        &mut self,
        input: &[u8],
        mut i: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, MaskError> {
        // Once per container the lane enters or leaves: the frame it reads in.
        loop {
            let Some((object, scope, states, anchor)) = self.quiet_frame() else {
                return Ok(i);
            };
            // A container just opened that nothing below can apply to is copied whole.
            if matches!(self.lex, Lex::ObjFirst | Lex::ArrFirst)
                && let Some(next) = self.silent_skip(input, i, out)?
            {
                i = next;
                continue;
            }
            let depth = self.frames.len();
            while self.frames.len() == depth {
                let Some(&c) = input.get(i) else {
                    return Ok(i);
                };
                if is_ws(c) {
                    let end = skip_ws(input, i);
                    out.extend_from_slice(&input[i..end]);
                    i = end;
                    continue;
                }
                let next = match (self.lex, c) {
                    (Lex::After, b',') => {
                        out.push(b',');
                        self.lex = if object { Lex::ObjKey } else { Lex::Value };
                        Some(i + 1)
                    }
                    // The end of the container, as the state machine ends it.
                    (Lex::After | Lex::ObjFirst, b'}') if object => {
                        out.push(b'}');
                        self.close_frame(out)?;
                        Some(i + 1)
                    }
                    (Lex::After | Lex::ArrFirst, b']') if !object => {
                        out.push(b']');
                        self.close_frame(out)?;
                        Some(i + 1)
                    }
                    (Lex::ObjFirst | Lex::ObjKey, b'"') => {
                        self.quiet_member(input, i, scope, states, anchor, out)?
                    }
                    (Lex::Value | Lex::ArrFirst, b'{' | b'[') if !object => {
                        self.quiet_open(c, None, out).then_some(i + 1)
                    }
                    (Lex::Value | Lex::ArrFirst, _) if !object => {
                        self.quiet_value(input, i, i, out)?
                    }
                    _ => None,
                };
                match next {
                    Some(n) => i = n,
                    None => return Ok(i),
                }
            }
        }
    }

    /// Open the container that starts with `c` (under `key` in an object, `None` in an
    /// array) when the state machine would open it with nothing to track: its parent is a
    /// plain container with no path state, not masked, not of unknown kind, and no rule starts
    /// at its key. That is the state machine's own shortcut for the common case (see
    /// `context_with`): the frame here is the one it would push. Anything else, or a container
    /// past the depth limit (an error the state machine reports), is left to it.
    fn quiet_open(&mut self, c: u8, key: Option<&[u8]>, out: &mut Vec<u8>) -> bool {
        let Some(f) = self.frames.last() else {
            return false;
        };
        if f.role != Role::Plain
            || f.states.0 != f.states.1
            || f.loose
            || f.masked.is_some()
            || key.is_some_and(|k| self.set.starts_at(k))
            || self.frames.len() >= self.set.limits.max_depth
        {
            return false;
        }
        let scope = meta_scope(Role::Plain, f.scope, key).unwrap_or(f.scope);
        let anchor = f.anchor.or(if self.anchors.is_empty() {
            None
        } else {
            Some(0)
        });
        let start = f.states.1;
        self.states.truncate(start);
        self.started = true;
        self.has_key = false;
        self.frames.push(Frame {
            object: c == b'{',
            role: Role::Plain,
            states: (start, start),
            anchor,
            masked: None,
            index: 0,
            loose: false,
            tool: Tool::Unknown,
            next_arg: NextArg::Plain,
            is_command: false,
            scope,
        });
        out.push(c);
        self.lex = if c == b'{' {
            Lex::ObjFirst
        } else {
            Lex::ArrFirst
        };
        true
    }

    /// A member whose key starts at `input[i]`, when its value is a scalar the lane can take,
    /// or a container (handed to the state machine with the key read).
    fn quiet_member(
        &mut self,
        input: &[u8],
        i: usize,
        scope: KeyScope,
        states: (usize, usize),
        anchor: bool,
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, MaskError> {
        let Some(key_end) = find2(b'"', b'\\', input, i + 1) else {
            return Ok(None);
        };
        if input[key_end] != b'"' {
            return Ok(None);
        }
        let colon = skip_ws(input, key_end + 1);
        if input.get(colon) != Some(&b':') {
            return Ok(None);
        }
        let value = skip_ws(input, colon + 1);
        let key = &input[i + 1..key_end];
        if let Some(&c @ (b'{' | b'[')) = input.get(value) {
            out.extend_from_slice(&input[i..value]);
            if self.quiet_open(c, Some(key), out) {
                return Ok(Some(value + 1));
            }
            // A container the state machine must place: the key is read, so hand it the member
            // at its value, as if it had read the key itself (it works out the container's
            // context).
            self.key.clear();
            self.key.extend_from_slice(key);
            self.has_key = true;
            self.lex = Lex::Value;
            return Ok(Some(value));
        }
        // A scalar: the lane's only if nothing applies to it. No rule starts at this key, no
        // state waits for it, and its scope judges no key (ObjectMeta's own fields; not a
        // ConfigMap's data or an object of unknown kind) or does not mask it for this one (a
        // label or an annotation whose key names no credential). In a
        // Kubernetes object, the members the state machine reads for the object itself
        // (`kind`, `apiVersion`, in any spelling) or scopes by name (`metadata`, `data`,
        // `binaryData`, `details`) are its own.
        if anchor
            && (key.eq_ignore_ascii_case(b"kind")
                || key.eq_ignore_ascii_case(b"apiVersion")
                || matches!(key, b"metadata" | b"data" | b"binaryData" | b"details"))
        {
            return Ok(None);
        }
        let child = meta_scope(Role::Plain, scope, Some(key)).unwrap_or(scope);
        // A label's or an annotation's value is the lane's unless its key names a credential.
        let judged_by_key = match child {
            KeyScope::Plain | KeyScope::Meta | KeyScope::MetaRoot => false,
            KeyScope::MetaMap => input
                .get(value)
                .is_none_or(|&c| self.credential_key_mask(c, child, Some(key)).is_some()),
            KeyScope::Credentials | KeyScope::Binary => true,
        };
        if self.set.starts_at(key) || judged_by_key || self.by_name(states).any(|n| n == Some(key))
        {
            return Ok(None);
        }
        self.quiet_value(input, i, value, out)
    }

    /// A scalar value at `input[at]`, with `input[from..at]` (a key, a colon, whitespace) kept
    /// before it.
    fn quiet_value(
        &mut self,
        input: &[u8],
        from: usize,
        at: usize,
        out: &mut Vec<u8>,
    ) -> Result<Option<usize>, MaskError> {
        let Some(scalar) = scalar_at(input, at) else {
            return Ok(None);
        };
        out.extend_from_slice(&input[from..at]);
        self.started = true;
        let next = match scalar {
            Scalar::Str { end } => {
                self.str_has_escape = false;
                self.detect_string(&input[at + 1..end], out)?;
                end + 1
            }
            Scalar::Literal { end } => {
                out.extend_from_slice(&input[at..end]);
                end
            }
        };
        self.value_done(out);
        Ok(Some(next))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::super::rules::MaskSet;
    use super::super::test_support::{assert_whole_is_bytewise, mask_chunks};

    fn mask(set: &Arc<MaskSet>, input: &[u8], chunk: usize) -> (Vec<u8>, bool) {
        mask_chunks(set, input, chunk, false)
    }

    /// Whole (the lane reads most of it) and byte by byte (the lane reads none of it) agree,
    /// on the shapes the lane takes and the ones it hands back: ObjectMeta's scalars, labels
    /// and annotations judged by key, env entries, escapes, literals, malformed values.
    #[test]
    fn the_lane_writes_what_the_state_machine_writes() -> Result<(), String> {
        let set = Arc::new(MaskSet::builtin()?);
        let docs: &[&[u8]] = &[
            br#"{"kind":"Secret","apiVersion":"v1","metadata":{"name":"db","uid":"1-2","generation":3,"deleted":null,"labels":{"app":"x","db-password":"hunter2"},"annotations":{"token":"t0ps3cret","note":"password=hunter22"}},"data":{"password":"aHVudGVy"},"type":"Opaque"}"#,
            br#"{"kind":"PodList","items":[{"metadata":{"name":"p","managedFields":[{"manager":"helm","fieldsV1":{"f:spec":{}}}]},"spec":{"containers":[{"name":"c","image":"i","env":[{"name":"API_TOKEN","value":"abc123456"},{"name":"MODE","value":"x"}],"args":["--password","p4ssw0rd1"],"ports":[{"containerPort":8080,"protocol":"TCP"}]}]}}]}"#,
            br#"{"kind":"ConfigMap","metadata":{"name":"c"},"data":{"password":"x1234567","plain":"ok","url":"https://u:p4ssw0rd@h/"}}"#,
            br#"{"kind":"Event","message":"escaped \"quote\" and \u0041 and ghp_0123456789abcdefghijklmnopqrstuvwxyz","count":12,"x":[1,2.5e3,-0,true,false,null,"s"]}"#,
            br#"{"kind":"Event","metadata":{"name":"e"},"count":01}"#,
            br#"{"kind":"Event","metadata":{"name":"e"},"count":1x}"#,
            br#"{"kind":"Widget","apiVersion":"x.io/v1","spec":{"password":"custom-res-secret","n":1}}"#,
            b"{ \"kind\" : \"Pod\" , \"metadata\" : { \"name\" : \"w\" , \"labels\" : { } } , \"spec\" : { } }",
            // Kubernetes objects' own scalars: of a known built-in kind (read, or inherited
            // from the list), of a kind not yet read, of unknown kind, spelled oddly.
            br#"{"kind":"EventList","items":[{"reason":"x","message":"token=abcdef123456","Kind":"Event","count":1},{"kind":"Secret","type":"Opaque","data":{"a":"b"}}]}"#,
            br#"{"apiVersion":"v1","kind":"Pod","status":"x","note":"password: hunter22","binaryData":"eA=="}"#,
            br#"{"note":"password: hunter22","kind":"Widget","apiVersion":"x.io/v1","password":"plain-before-kind","details":"s3cr3t-det"}"#,
            br#"{"kind":"ConfigMapList","items":[{"metadata":{"name":"c"},"immutable":true,"data":{"password":"x1234567"},"KIND":"ConfigMap"}]}"#,
            br#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","columnDefinitions":[{"name":"Name","format":"name"}],"rows":[{"cells":["a","password=hunter22"],"object":{"kind":"Secret","data":{"k":"djE="}}}]}"#,
            br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"password=hunter22","details":{"name":"x","password":"y1234567"},"code":403}"#,
            // Containers the lane opens and closes itself, nested, empty, in arrays, beside
            // ones it leaves to the state machine (env, args, annotations), and malformed ends.
            br#"{"kind":"Pod","status":{"conditions":[{"type":"Ready","status":"True"},[],{}],"x":[[1,[2,{}]],{"a":{"b":[]}}]},"spec":{"containers":[{"name":"c","env":[{"name":"TOKEN","value":"s3cr3tvalue"}],"args":["--password","hunter22x"]}],"metadata":{"annotations":{"token":"t0ps3cret"}}}}"#,
            br#"{"kind":"Pod","spec":{"a":[1,2}}"#,
            br#"{"kind":"Pod","spec":{"a":{"b":1]}}"#,
            br#"{"kind":"Pod","spec":{"a":[{"b":"password=hunter22"}]}} {"#,
        ];
        assert_whole_is_bytewise(&set, docs);
        // Past the depth limit, both refuse (the lane leaves that container to the state
        // machine, which reports it).
        let limit = set.limits().max_depth;
        let mut deep = br#"{"kind":"Pod","spec":"#.to_vec();
        deep.extend(std::iter::repeat_n(b'[', limit + 1));
        deep.extend(std::iter::repeat_n(b']', limit + 1));
        deep.push(b'}');
        let (whole, bytewise) = (mask(&set, &deep, deep.len()), mask(&set, &deep, 1));
        assert_eq!(whole, bytewise);
        assert!(!whole.1, "nesting past the limit is refused");
        // And the lane masks what it must.
        let (out, ok) = mask(&set, docs[0], docs[0].len());
        assert!(ok);
        let out = String::from_utf8_lossy(&out);
        assert!(
            !out.contains("hunter2") && !out.contains("t0ps3cret"),
            "{out}"
        );
        Ok(())
    }
}
