//! `limitBytes` on pod logs, applied after masking: the API server cuts a log at a byte count
//! the agent chooses, so the agent could cut right inside a credential (a 39-character AWS key,
//! a token whose checksum it recomputes) and the detectors would not know it for one. The layer
//! asks for the whole log and cuts the masked output instead.

/// The query parameter, as the API server names it.
const NAME: &str = "limitBytes";

/// For a pods/log target with `limitBytes`: the target without it, and the limit. `Ok(None)`
/// when the target carries none. A value the API server would read differently from this
/// (not a positive decimal integer) is refused with the reason.
pub(crate) fn take(target: &str) -> Result<Option<(String, u64)>, String> {
    let Some((path, query)) = target.split_once('?') else {
        return Ok(None);
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut limit = None;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        // The API server decodes keys before matching them: `limit%42ytes` is `limitBytes`.
        if decode(k).as_deref() != Some(NAME) {
            kept.push(pair);
            continue;
        }
        let v = decode(v).unwrap_or_default();
        let n = v
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0 && !v.starts_with('+'))
            .ok_or_else(|| {
                format!(
                    "limitBytes must be a positive whole number of bytes, not `{}`",
                    v.chars().take(40).collect::<String>().escape_default()
                )
            })?;
        // The API server reads the first value; the smallest is never more than it.
        limit = Some(limit.map_or(n, |l: u64| l.min(n)));
    }
    Ok(limit.map(|l| {
        let mut t = path.to_string();
        if !kept.is_empty() {
            t.push('?');
            t.push_str(&kept.join("&"));
        }
        (t, l)
    }))
}

/// Percent-decoding of a query component (`+` is a space), or `None` if it is not UTF-8.
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    #[test]
    fn the_limit_is_taken_out_of_the_query() {
        let t = "/api/v1/namespaces/dev/pods/p/log?container=c&limitBytes=40&follow=true";
        assert_eq!(
            take(t).unwrap(),
            Some((
                "/api/v1/namespaces/dev/pods/p/log?container=c&follow=true".into(),
                40
            ))
        );
        assert_eq!(
            take("/api/v1/namespaces/dev/pods/p/log?limit%42ytes=7").unwrap(),
            Some(("/api/v1/namespaces/dev/pods/p/log".into(), 7))
        );
        assert_eq!(
            take("/x/log?limitBytes=9&limitBytes=3").unwrap(),
            Some(("/x/log".into(), 3))
        );
        assert_eq!(take("/x/log?follow=1").unwrap(), None);
        assert_eq!(take("/x/log").unwrap(), None);
        for bad in ["0", "-1", "x", "", "+4", "1e3", "99999999999999999999999"] {
            assert!(take(&format!("/x/log?limitBytes={bad}")).is_err(), "{bad}");
        }
    }
}
