//! `replay --verify --shipped COPY`: the record on disk checked against what was already shipped
//! from it. Whoever can replace the whole file on the proxy's disk may also hold its signing
//! key (it lives beside the record), and then a forged log verifies; but every record the
//! shipper sent, with its hash, is already elsewhere. A record shipped with another hash than
//! the file's, or shipped and no longer in the file, shows the file was rewritten, cut or
//! replaced after it was shipped.
//!
//! A receiver takes every replica's records, and a replaced file may name any session: the
//! verifier names the sessions the file must be (`--session`, the replica's `--record-session`;
//! the chart's pod name), and every record the copy holds of them must be in the file, unchanged.
//!
//! The copy is what a receiver kept, in any of the forms `kubeleash ship` sends, as JSON values
//! one after another (one per line or not): audit `EventList`s or `Event`s (`auditID`
//! `SESSION-SEQ`, annotation `kubeleash.dev/record-hash`), OTLP/HTTP export requests or log
//! records (the body is the record's line), or the record lines themselves.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kubeleash_core::display::printable;
use kubeleash_core::record::Record;
use serde_json::Value;

/// Shipped hashes by `(session, seq)`.
pub(super) type Shipped = BTreeMap<(String, u64), String>;

/// What the copies at `paths` say was shipped.
pub(super) fn load(paths: &[PathBuf]) -> Result<Shipped, String> {
    let mut shipped = Shipped::new();
    for path in paths {
        let text = std::fs::read(path).map_err(|e| {
            format!(
                "cannot read the shipped copy `{}`: {}",
                path.display(),
                crate::report::lower(&e.to_string())
            )
        })?;
        let mut found = 0usize;
        for (i, v) in serde_json::Deserializer::from_slice(&text)
            .into_iter::<Value>()
            .enumerate()
        {
            let v = v.map_err(|e| {
                format!(
                    "the shipped copy `{}` is not JSON values one after another (value {}): {e}",
                    path.display(),
                    i + 1
                )
            })?;
            collect(&v, &mut shipped, &mut found)
                .map_err(|e| format!("the shipped copy `{}`: {e}", path.display()))?;
        }
        if found == 0 {
            return Err(format!(
                "the shipped copy `{}` holds no kubeleash record (audit events with auditID and kubeleash.dev/record-hash, OTLP log records, or record lines)",
                path.display()
            ));
        }
    }
    Ok(shipped)
}

/// Add what one shipped value holds.
fn collect(v: &Value, out: &mut Shipped, found: &mut usize) -> Result<(), String> {
    let mut put = |session: String, seq: u64, hash: String| -> Result<(), String> {
        *found += 1;
        match out.get(&(session.clone(), seq)) {
            Some(h) if *h != hash => Err(format!(
                "record {}-{seq} was shipped twice with different hashes",
                printable(&session)
            )),
            _ => {
                out.insert((session, seq), hash);
                Ok(())
            }
        }
    };
    if let Some(items) = v.get("items").and_then(Value::as_array) {
        for e in items {
            collect(e, out, found)?;
        }
    } else if let Some(logs) = v.get("resourceLogs").and_then(Value::as_array) {
        for l in logs
            .iter()
            .flat_map(|r| r["scopeLogs"].as_array().into_iter().flatten())
            .flat_map(|s| s["logRecords"].as_array().into_iter().flatten())
        {
            collect(l, out, found)?;
        }
    } else if let Some(line) = v.pointer("/body/stringValue").and_then(Value::as_str) {
        if let Ok(r) = serde_json::from_str::<Record>(line) {
            put(r.session, r.seq, r.hash)?;
        } else if let Some((session, seq, hash)) = otlp_attributes(v) {
            // A collector that shortened a long body still kept the record's attributes.
            put(session, seq, hash)?;
        }
    } else if let (Some(id), Some(hash)) = (
        v.get("auditID").and_then(Value::as_str),
        v.pointer("/annotations/kubeleash.dev~1record-hash")
            .and_then(Value::as_str),
    ) {
        let (session, seq) = id
            .rsplit_once('-')
            .and_then(|(s, n)| Some((s.to_string(), n.parse::<u64>().ok()?)))
            .ok_or_else(|| format!("auditID `{}` is not SESSION-SEQ", printable(id)))?;
        put(session, seq, hash.to_string())?;
    } else if let Ok(r) = serde_json::from_value::<Record>(v.clone()) {
        put(r.session, r.seq, r.hash)?;
    }
    Ok(())
}

/// An OTLP log record's session, seq and hash, from its attributes.
fn otlp_attributes(v: &Value) -> Option<(String, u64, String)> {
    let attrs = v.get("attributes")?.as_array()?;
    let get = |k: &str| attrs.iter().find(|a| a["key"] == k).map(|a| &a["value"]);
    let session = get("kubeleash.record.session")?["stringValue"].as_str()?;
    let seq = get("kubeleash.record.seq")?["intValue"]
        .as_str()?
        .parse()
        .ok()?;
    let hash = get("kubeleash.record.hash")?["stringValue"].as_str()?;
    Some((session.to_string(), seq, hash.to_string()))
}

/// Each way the log differs from what was shipped from the sessions it must be: `(line,
/// problem)`, the line of the record that differs (or the line after the last, for records no
/// longer there, and for a session the copy or the file holds nothing of).
pub(super) fn compare(log: &str, shipped: &Shipped, sessions: &[String]) -> Vec<(usize, String)> {
    let mut on_disk: BTreeMap<(String, u64), (usize, String)> = BTreeMap::new();
    let mut lines = 0;
    for (i, line) in log.lines().enumerate() {
        lines = i + 1;
        if let Ok(r) = serde_json::from_str::<Record>(line) {
            on_disk.insert((r.session, r.seq), (i + 1, r.hash));
        }
    }
    let mut problems = Vec::new();
    for named in sessions {
        let n = printable(named);
        if !shipped.keys().any(|(s, _)| s == named) {
            problems.push((
                lines + 1,
                format!("the copy holds no record of session {n}: name the session this file was recorded as (its replica's --record-session)"),
            ));
        }
        if !on_disk.keys().any(|(s, _)| s == named) {
            problems.push((
                lines + 1,
                format!(
                    "the file holds no record of session {n}: it is another log, or it was replaced"
                ),
            ));
        }
    }
    for ((session, seq), hash) in shipped {
        if !sessions.contains(session) {
            continue;
        }
        let id = format!("{}-{seq}", printable(session));
        match on_disk.get(&(session.clone(), *seq)) {
            Some((line, h)) if h != hash => problems.push((
                *line,
                format!(
                    "record {id} was shipped with hash {hash}, but the file's has {h}: the file was rewritten after it was shipped"
                ),
            )),
            Some(_) => {}
            None => problems.push((
                lines + 1,
                format!(
                    "record {id} was shipped, but the file does not hold it: the file was cut or replaced after it was shipped"
                ),
            )),
        }
    }
    // One line per kind of break is enough to act on; the first few name where.
    if problems.len() > 5 {
        let more = problems.len() - 5;
        problems.truncate(5);
        problems.push((
            lines + 1,
            format!("and {more} more records differ from what was shipped"),
        ));
    }
    problems
}

/// How many of the shipped records are of `sessions`.
pub(super) fn of_sessions(shipped: &Shipped, sessions: &[String]) -> usize {
    shipped.keys().filter(|(s, _)| sessions.contains(s)).count()
}
