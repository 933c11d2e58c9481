//! Calendar dates from day counts, for the RFC 3339 times kubeleash writes (records, audit
//! events) and reads back as Go would write them (protobuf `metav1.Time`).

/// The proleptic Gregorian `(year, month, day)` of a day count from 1970-01-01 (Howard
/// Hinnant's `civil_from_days`), for any `i64` day count a time can have.
pub(crate) fn from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
