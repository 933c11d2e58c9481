//! A pass over the wire bytes before anything is decoded, against the message's descriptor:
//! it bounds how much the decode can build, and refuses what Go's reading could differ on.
//!
//! Refused: a field the descriptor does not know (a newer API server would act on it, and a
//! condition could not see it); a singular field written twice in one message (gogo merges or
//! keeps the last, but `metav1.Time`'s hand-written `Unmarshal` replaces, and kubectl and
//! client-go never write a field twice); a message field in a wire type other than
//! length-delimited; groups (no Kubernetes message has one); more than [`MAX_FIELDS`] fields in
//! all, or nesting deeper than the JSON limit.

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};

/// The most wire fields one body may hold, at every depth. kubectl's bodies hold about one
/// field per 10 bytes (a 100 KiB Deployment, some 10,000); a 3 MiB body of empty fields would
/// hold 1.5 million, and decoding them all takes some 100 bytes each.
pub(super) const MAX_FIELDS: usize = 100_000;

/// Check `buf` as a `desc` message; `count` adds up fields over the whole body.
pub(super) fn scan(
    desc: &MessageDescriptor,
    buf: &[u8],
    depth: usize,
    max_depth: usize,
    count: &mut usize,
) -> Result<(), String> {
    if depth >= max_depth {
        return Err(format!(
            "it nests deeper than {} levels",
            max_depth.saturating_sub(1)
        ));
    }
    let mut r = Reader { buf };
    let mut seen: Vec<u32> = Vec::new();
    while !r.buf.is_empty() {
        let key = r.varint().ok_or("its protobuf is truncated")?;
        let number = u32::try_from(key >> 3).map_err(|_| "a field number is out of range")?;
        let wire = key & 7;
        *count += 1;
        if *count > MAX_FIELDS {
            return Err(format!(
                "it holds more than {MAX_FIELDS} protobuf fields (kubectl's bodies hold a few hundred)"
            ));
        }
        let Some(field) = desc.get_field(number) else {
            return Err(format!(
                "`{}` has no field {number} in Kubernetes 1.34 (a newer client's field, which \
                 kubeleash cannot judge)",
                desc.name()
            ));
        };
        if !field.is_list() && !field.is_map() {
            if seen.contains(&number) {
                return Err(format!(
                    "`{}.{}` is written twice",
                    desc.name(),
                    field.name()
                ));
            }
            seen.push(number);
        }
        match wire {
            0 => {
                r.varint().ok_or("its protobuf is truncated")?;
            }
            1 => r.skip(8)?,
            5 => r.skip(4)?,
            2 => {
                let len = r.varint().ok_or("its protobuf is truncated")?;
                let len = usize::try_from(len).map_err(|_| "a length is out of range")?;
                let bytes = r.take(len)?;
                if let Some(inner) = message_of(&field) {
                    scan(&inner, bytes, depth + 1, max_depth, count)?;
                }
            }
            _ => {
                return Err(format!(
                    "`{}.{}` has wire type {wire}, which no Kubernetes message uses",
                    desc.name(),
                    field.name()
                ));
            }
        }
        if wire != 2 && message_of(&field).is_some() {
            return Err(format!(
                "`{}.{}` is a message written as wire type {wire}",
                desc.name(),
                field.name()
            ));
        }
    }
    Ok(())
}

/// The message a length-delimited field holds (a map's entry message for a map), if any.
fn message_of(field: &FieldDescriptor) -> Option<MessageDescriptor> {
    match field.kind() {
        Kind::Message(m) => Some(m),
        _ => None,
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut out = 0u64;
        for (i, shift) in (0..64).step_by(7).enumerate() {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            // The tenth byte holds one bit; more would overflow (Go ignores the rest, prost
            // refuses: refused here so both agree).
            if i == 9 && b > 1 {
                return None;
            }
            out |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(out);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err("its protobuf is truncated".into());
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }
}
