//! The JSON forms of `metav1.Time` (RFC 3339, seconds, UTC) and `metav1.MicroTime` (RFC 3339
//! with six fraction digits), as Go writes them.

/// `seconds` and `nanos` since the Unix epoch as Go's `MarshalJSON` writes them (`null` for
/// Go's zero time, 0001-01-01T00:00:00Z), or `None` where Go refuses (a year outside 0 to 9999).
/// Nanoseconds outside a second carry into the seconds, as Go's `time.Unix` does.
pub(super) fn rfc3339(seconds: i64, nanos: i64, micros: bool) -> Option<serde_json::Value> {
    let seconds = seconds.checked_add(nanos.div_euclid(1_000_000_000))?;
    let nanos = nanos.rem_euclid(1_000_000_000);
    if seconds == GO_ZERO_TIME && (nanos == 0 || !micros) {
        return Some(serde_json::Value::Null);
    }
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let (y, m, d) = crate::civil_date::from_days(days);
    if !(0..=9999).contains(&y) {
        return None;
    }
    let (hh, mm, ss) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let fraction = if micros {
        format!(".{:06}", nanos / 1000)
    } else {
        String::new()
    };
    Some(format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{fraction}Z").into())
}

/// Go's zero `time.Time`, in Unix seconds: its JSON is `null`.
const GO_ZERO_TIME: i64 = -62_135_596_800;

#[cfg(test)]
mod tests {
    use serde_json::Value;

    fn rfc3339(s: i64, n: i64, micros: bool) -> Option<String> {
        super::rfc3339(s, n, micros).map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }

    #[test]
    fn go_formats() {
        assert_eq!(
            rfc3339(0, 0, false).as_deref(),
            Some("1970-01-01T00:00:00Z")
        );
        // 2024-02-29T12:34:56Z, a leap day.
        assert_eq!(
            rfc3339(1_709_210_096, 0, false).as_deref(),
            Some("2024-02-29T12:34:56Z")
        );
        assert_eq!(
            rfc3339(1_709_210_096, 123_456_789, true).as_deref(),
            Some("2024-02-29T12:34:56.123456Z")
        );
        // Before the epoch, and Go's year bounds.
        assert_eq!(
            rfc3339(-1, 0, false).as_deref(),
            Some("1969-12-31T23:59:59Z")
        );
        assert_eq!(
            rfc3339(-62_167_219_200, 0, false).as_deref(),
            Some("0000-01-01T00:00:00Z")
        );
        assert_eq!(rfc3339(-62_167_219_201, 0, false), None);
        assert_eq!(rfc3339(253_402_300_800, 0, false), None);
        // Nanoseconds carry, as in Go's `time.Unix`; Go's zero time is `null`.
        assert_eq!(
            rfc3339(0, -1, true).as_deref(),
            Some("1969-12-31T23:59:59.999999Z")
        );
        assert_eq!(rfc3339(-62_135_596_800, 0, false).as_deref(), Some("null"));
        assert_eq!(rfc3339(-62_135_596_800, 5, false).as_deref(), Some("null"));
        assert_eq!(
            rfc3339(-62_135_596_800, 5_000, true).as_deref(),
            Some("0001-01-01T00:00:00.000005Z")
        );
        assert_eq!(rfc3339(i64::MAX, 1_000_000_000, false), None);
    }
}
