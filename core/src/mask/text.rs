//! Log text: detectors only, judged a whole line at a time so that a secret split across
//! chunks is still seen whole; a private key block is masked from BEGIN to END across lines.

use std::sync::Arc;

use super::detect::{MASK_ALL, Span};
use super::rules::MaskSet;
use super::{MaskError, replace_spans};

pub(crate) struct TextMasker {
    set: Arc<MaskSet>,
    line: Vec<u8>,
    in_key_block: bool,
    pub(crate) masked_any: bool,
}

const BEGIN: &[u8] = b"-----BEGIN";
const END: &[u8] = b"-----END";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

impl TextMasker {
    pub(crate) fn new(set: Arc<MaskSet>) -> Self {
        TextMasker {
            set,
            line: Vec::new(),
            in_key_block: false,
            masked_any: false,
        }
    }

    pub(crate) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), MaskError> {
        while let Some(nl) = memchr::memchr(b'\n', input) {
            let (head, rest) = input.split_at(nl + 1);
            if self.line.is_empty() {
                self.judge(head, out);
            } else {
                self.hold(head)?;
                let line = std::mem::take(&mut self.line);
                self.judge(&line, out);
                self.line = line;
                self.line.clear();
            }
            input = rest;
        }
        self.hold(input)
    }

    fn hold(&mut self, bytes: &[u8]) -> Result<(), MaskError> {
        if self.line.len() + bytes.len() > self.set.limits.max_held {
            return Err(MaskError::TooLarge {
                limit: self.set.limits.max_held,
                what: "a log line",
            });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), MaskError> {
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            // The stream ends inside this line: a credential may have been cut short (a
            // `limitBytes` the agent chose), which the detectors would not recognise.
            let cut = if self.in_key_block {
                None
            } else {
                super::truncated::partial_tail(&line)
            };
            self.judge_with(&line, cut, out);
        }
        Ok(())
    }

    /// One complete line (with its newline, unless it is the last).
    fn judge(&mut self, line: &[u8], out: &mut Vec<u8>) {
        self.judge_with(line, None, out);
    }

    /// One line; with `cut`, everything from there to its end is masked too.
    fn judge_with(&mut self, line: &[u8], cut: Option<usize>, out: &mut Vec<u8>) {
        if self.in_key_block {
            // Inside a private key block: nothing of it is shown, down to and including END.
            if let Some(end) = find(line, END) {
                self.in_key_block = false;
                let after = line[end..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(line.len(), |p| end + p);
                let rest_start = line[end + END.len()..]
                    .windows(5)
                    .position(|w| w == b"-----")
                    .map_or(after, |p| end + END.len() + p + 5);
                self.judge(&line[rest_start.min(line.len())..], out);
            }
            return;
        }
        let Some(detectors) = self.set.detectors.as_ref() else {
            out.extend_from_slice(line);
            return;
        };
        let mut spans = Vec::new();
        super::normalize::find(detectors, line, true, &mut spans);
        if let Some(start) = cut.filter(|&c| c < line.len()) {
            // Everything from the cut on is one span: drop what it covers, trim what overlaps.
            spans.retain(|s| s.start < start);
            let start = match spans.last_mut() {
                Some(last) if last.end >= start => {
                    last.end = line.len();
                    None
                }
                _ => Some(start),
            };
            if let Some(start) = start {
                spans.push(Span {
                    start,
                    end: line.len(),
                    detector: MASK_ALL,
                });
            }
        }
        if spans.is_empty() {
            out.extend_from_slice(line);
            return;
        }
        self.masked_any = true;
        // A key block whose END is on a later line: mask to the end of this line, keep the
        // newline, and hide the following lines until END.
        if let Some(last) = spans.last() {
            let tail = &line[last.start.min(line.len())..];
            if find(tail, BEGIN).is_some() && find(tail, END).is_none() {
                self.in_key_block = true;
            }
        }
        let (body, nl) = match line.strip_suffix(b"\n") {
            Some(b) => (b, true),
            None => (line, false),
        };
        let spans: Vec<_> = spans
            .into_iter()
            .map(|mut s| {
                s.end = s.end.min(body.len());
                s
            })
            .collect();
        out.extend_from_slice(&replace_spans(body, &spans));
        if nl {
            out.push(b'\n');
        }
    }
}
