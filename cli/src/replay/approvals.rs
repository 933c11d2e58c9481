//! `kubeleash replay --approvals`: approval-fatigue figures read from a record.
//!
//! Every held request carries an approval id from its `held` record to its answer. Per id the
//! record says whether a person answered (kind `approval`, or a refusal naming an approver),
//! whether nobody did (outcome `expired`), and which later requests it resolved without a new
//! prompt (`decision.coalesced`: retries, and requests a widened grant covered). These figures
//! are counted in total, per identity and per rule; each is counted for the identity and rule
//! of the approval it belongs to (its `held` record, or failing that the record itself).
//!
//! ```text
//! $ kubeleash replay --approvals session.jsonl
//! approvals: 4 asked, 3 answered by a person, 1 expired, 0 still open
//! ```

use kubeleash_core::record::{Outcome, RecordKind};
use std::collections::{BTreeMap, HashMap, HashSet};

use kubeleash_core::display::printable;
use kubeleash_core::record::Record;
use serde::Serialize;

/// Who answers when the proxy itself does (shutdown, an approvals channel that stopped): such
/// a refusal is not a person's answer.
const KUBELEASH: &str = "kubeleash";

/// The approver's reason on a self-approval the layer refused.
const SELF_APPROVAL: &str = "self-approval";

/// The approver's reason when a person approved but the policy reloaded meanwhile denies it:
/// still a person's approval.
const RELOADED: &str = "the reloaded policy denies it";

/// The figures for one slice of the record (all of it, one identity, one rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// Distinct approval ids with a `held` record: the prompts a person was shown.
    pub asked: u64,
    /// Answers a person gave.
    pub answered: Answered,
    /// Approvals that ended without a person's answer being used.
    pub expired: Expired,
    /// Refused by kubeleash itself before anyone answered: the proxy stopped, or the approvals
    /// channel failed.
    pub withdrawn: u64,
    /// Held, with no answer in the record (still waiting when it ends, or the proxy stopped).
    pub open: u64,
    /// Answers (or expiries) whose `held` record is not in the record read (it started later,
    /// or `--since` left it out): counted above, but not in `asked`.
    pub without_held: u64,
    /// How long requests waited for a person's answer (`waitedMs`).
    pub time_to_answer_ms: Waits,
    /// Requests resolved without a new prompt.
    pub coalesced: Coalesced,
    /// Approvals a person widened into a grant.
    pub grants_left: u64,
    #[serde(skip)]
    waits: Vec<u64>,
}

/// Answers by a person.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answered {
    pub total: u64,
    pub approved: u64,
    pub denied: u64,
    /// Approvals given in the requester's own name, which the layer refuses.
    pub self_approval_refused: u64,
}

/// Approvals nobody used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Expired {
    pub total: u64,
    /// Nobody answered in time.
    pub unanswered: u64,
    /// Approved (non-blocking mode), but the agent never sent the request again.
    pub unused: u64,
}

/// The spread of `waitedMs` over a person's answers (nearest-rank percentiles); `None` when
/// there was no answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Waits {
    pub answers: u64,
    pub median: Option<u64>,
    pub p90: Option<u64>,
    pub max: Option<u64>,
}

/// Requests resolved without asking anyone again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coalesced {
    pub total: u64,
    /// Requests answered from another's approval still pending, refused or expired: retries
    /// (non-blocking mode), and identical requests that waited for the first's answer.
    pub retries: u64,
    /// Requests a widened grant covered.
    pub grant_uses: u64,
}

/// One widened grant and how often it was used.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantUse {
    pub approval_id: String,
    /// The grant's rule name.
    pub name: String,
    /// Whose requests it covered.
    pub identity: String,
    pub approver: String,
    /// When it was given.
    pub time: String,
    /// How many more requests it allowed (`None`: as many as its time allowed).
    pub uses: Option<u64>,
    /// How long it lasted.
    pub seconds: Option<u64>,
    /// Requests it covered in the record.
    pub used: u64,
}

/// Everything `--approvals` reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub total: Figures,
    pub by_identity: BTreeMap<String, Figures>,
    pub by_rule: BTreeMap<String, Figures>,
    pub grants: Vec<GrantUse>,
}

/// What one record adds to the figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Asked,
    Approved(Option<u64>),
    Denied(Option<u64>),
    SelfRefused(Option<u64>),
    Unanswered,
    Unused,
    Withdrawn,
    Retry,
    GrantUse,
}

impl Event {
    /// Whether it settles its approval (at most one such event counts per id).
    fn settles(self) -> bool {
        !matches!(self, Event::Asked | Event::Retry | Event::GrantUse)
    }
}

impl Figures {
    fn add(&mut self, e: Event, held_seen: bool) {
        if e.settles() && !held_seen {
            self.without_held += 1;
        }
        fn answer(waited: Option<u64>, f: &mut Figures) {
            f.answered.total += 1;
            if let Some(w) = waited {
                f.waits.push(w);
            }
        }
        match e {
            Event::Asked => self.asked += 1,
            Event::Approved(w) => {
                self.answered.approved += 1;
                answer(w, self);
            }
            Event::Denied(w) => {
                self.answered.denied += 1;
                answer(w, self);
            }
            Event::SelfRefused(w) => {
                self.answered.self_approval_refused += 1;
                answer(w, self);
            }
            Event::Unanswered => {
                self.expired.total += 1;
                self.expired.unanswered += 1;
            }
            Event::Unused => {
                self.expired.total += 1;
                self.expired.unused += 1;
            }
            Event::Withdrawn => self.withdrawn += 1,
            Event::Retry => {
                self.coalesced.total += 1;
                self.coalesced.retries += 1;
            }
            Event::GrantUse => {
                self.coalesced.total += 1;
                self.coalesced.grant_uses += 1;
            }
        }
    }

    /// Settle the derived figures once every record is counted.
    fn finish(&mut self) {
        self.waits.sort_unstable();
        self.time_to_answer_ms = Waits {
            answers: self.waits.len() as u64,
            median: nearest_rank(&self.waits, 50),
            p90: nearest_rank(&self.waits, 90),
            max: self.waits.last().copied(),
        };
    }
}

/// The `pct`th percentile of sorted `v` by nearest rank: the smallest value with at least
/// `pct`% of the values at or below it.
fn nearest_rank(v: &[u64], pct: usize) -> Option<u64> {
    let rank = (v.len() * pct).div_ceil(100).max(1);
    v.get(rank - 1).copied()
}

/// What a record says about its approval, if anything.
fn event(r: &Record) -> Option<Event> {
    let d = &r.body.decision;
    if d.coalesced {
        // A request waiting for the answer to an identical one (blocking mode) is recorded
        // `held` without an id of its own; how it was resolved is recorded when it is, and
        // counted then (a nobody-answered wait names no approval).
        if r.body.kind == RecordKind::Held {
            return None;
        }
        return Some(if d.outcome == Outcome::Approved {
            Event::GrantUse
        } else {
            Event::Retry
        });
    }
    d.approval_id.as_ref()?;
    let waited = d.waited_ms;
    match (r.body.kind, d.outcome) {
        (RecordKind::Held, _) => Some(Event::Asked),
        (RecordKind::Approval, Outcome::Approved) => Some(Event::Approved(waited)),
        (RecordKind::Expired, _) => Some(Event::Unused),
        (_, Outcome::Expired) => Some(Event::Unanswered),
        (RecordKind::Request, Outcome::Refused) => {
            // A refusal naming no approver is the non-blocking "pending" answer, not an answer.
            let by = d.approver.as_deref()?;
            let why = d.approver_reason.as_deref().unwrap_or_default();
            Some(if why == SELF_APPROVAL {
                Event::SelfRefused(waited)
            } else if why == RELOADED {
                Event::Approved(waited)
            } else if by == KUBELEASH {
                Event::Withdrawn
            } else {
                Event::Denied(waited)
            })
        }
        _ => None,
    }
}

/// A grant as recorded on its approval.
fn grant_of(r: &Record) -> Option<GrantUse> {
    let g = r.body.decision.grant.as_ref()?;
    Some(GrantUse {
        approval_id: r.body.decision.approval_id.clone().unwrap_or_default(),
        name: g["rule"]["name"].as_str().unwrap_or_default().to_string(),
        identity: r.body.identity.user.clone(),
        approver: r.body.decision.approver.clone().unwrap_or_default(),
        time: r.body.time.clone(),
        uses: g["uses"].as_u64(),
        seconds: g["seconds"].as_u64(),
        used: 0,
    })
}

/// Which request a coalesced record is about: a write has a `forwarded` record before it goes
/// out and its completion after, and is one request, not two.
type RequestKey = (String, String, String, String);

fn request_key(r: &Record) -> RequestKey {
    (
        r.body.decision.approval_id.clone().unwrap_or_default(),
        r.body.identity.user.clone(),
        r.body.request.method.clone(),
        r.body.request.target.clone(),
    )
}

/// The figures for `records` (already filtered, in log order).
pub fn figures(records: &[&Record]) -> Report {
    // The identity and rule each approval is counted under: its held record's.
    let mut origin: HashMap<&str, (&str, &str)> = HashMap::new();
    for r in records.iter().filter(|r| r.body.kind == RecordKind::Held) {
        if let Some(id) = r.body.decision.approval_id.as_deref() {
            origin.entry(id).or_insert((
                r.body.identity.user.as_str(),
                r.body.decision.rule.as_deref().unwrap_or_default(),
            ));
        }
    }
    let mut report = Report::default();
    let mut settled: HashSet<&str> = HashSet::new();
    let mut asked: HashSet<&str> = HashSet::new();
    let mut sent: HashMap<RequestKey, u64> = HashMap::new();
    let mut grants: Vec<GrantUse> = Vec::new();
    for r in records {
        let Some(e) = event(r) else { continue };
        let id = r.body.decision.approval_id.as_deref().unwrap_or_default();
        if e == Event::Asked && !asked.insert(id) {
            continue;
        }
        if e.settles() && !settled.insert(id) {
            continue;
        }
        if matches!(e, Event::Retry | Event::GrantUse) && !first_of_request(r, &mut sent) {
            continue;
        }
        if e == Event::GrantUse
            && let Some(g) = grants.iter_mut().find(|g| g.approval_id == id)
        {
            g.used += 1;
        }
        let (user, rule) = origin.get(id).copied().unwrap_or((
            r.body.identity.user.as_str(),
            r.body.decision.rule.as_deref().unwrap_or_default(),
        ));
        let held_seen = origin.contains_key(id);
        let left_grant = r.body.kind == RecordKind::Approval && r.body.decision.grant.is_some();
        for f in [
            &mut report.total,
            report.by_identity.entry(user.to_string()).or_default(),
            report.by_rule.entry(rule.to_string()).or_default(),
        ] {
            f.add(e, held_seen);
            if left_grant {
                f.grants_left += 1;
            }
        }
        if left_grant && let Some(g) = grant_of(r) {
            grants.push(g);
        }
    }
    // Held and never settled: still open when the record ends.
    for id in asked.iter().filter(|id| !settled.contains(*id)) {
        let (user, rule) = origin.get(id).copied().unwrap_or_default();
        report.total.open += 1;
        report.by_identity.entry(user.to_string()).or_default().open += 1;
        report.by_rule.entry(rule.to_string()).or_default().open += 1;
    }
    for f in std::iter::once(&mut report.total)
        .chain(report.by_identity.values_mut())
        .chain(report.by_rule.values_mut())
    {
        f.finish();
    }
    report.grants = grants;
    report
}

/// Whether a coalesced record is the first of its request: a `forwarded` record is, and the
/// completion after it is not; a request without a `forwarded` record (a read, a refusal) is.
fn first_of_request(r: &Record, sent: &mut HashMap<RequestKey, u64>) -> bool {
    let key = request_key(r);
    if r.body.kind == RecordKind::Forwarded {
        *sent.entry(key).or_default() += 1;
        return true;
    }
    match sent.get_mut(&key) {
        Some(n) if *n > 0 => {
            *n -= 1;
            false
        }
        _ => true,
    }
}

/// A wait as a person reads it: `850ms`, `4.2s`, `3m07s`.
pub fn duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{}.{}s", ms / 1000, ms % 1000 / 100)
    } else {
        let s = ms / 1000;
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The figures as a person reads them at a glance: a summary of the total, then one table per
/// identity and per rule, then the grants.
pub fn text(report: &Report) -> String {
    let t = &report.total;
    let mut out = format!(
        "approvals: {} asked, {} answered by a person, {} expired, {} still open\n",
        t.asked, t.answered.total, t.expired.total, t.open
    );
    let mut line = |label: &str, value: String| {
        out.push_str(&format!("  {label:<15} {value}\n"));
    };
    line(
        "answered",
        format!(
            "{} approved, {} denied, {} self-approval{} refused",
            t.answered.approved,
            t.answered.denied,
            t.answered.self_approval_refused,
            if t.answered.self_approval_refused == 1 {
                ""
            } else {
                "s"
            }
        ),
    );
    line(
        "expired",
        format!(
            "{} nobody answered, {} approved but never used",
            t.expired.unanswered, t.expired.unused
        ),
    );
    line("time to answer", waits(&t.time_to_answer_ms));
    line(
        "coalesced",
        format!(
            "{} resolved without a new prompt: {}, {}",
            plural(t.coalesced.total, "request", "requests"),
            plural(t.coalesced.retries, "retry", "retries"),
            plural(t.coalesced.grant_uses, "grant use", "grant uses")
        ),
    );
    line(
        "grants left",
        format!(
            "{}, used {}",
            t.grants_left,
            plural(report.grants.iter().map(|g| g.used).sum(), "time", "times")
        ),
    );
    if t.withdrawn > 0 {
        line(
            "withdrawn",
            format!(
                "{} refused by kubeleash itself before anyone answered",
                t.withdrawn
            ),
        );
    }
    if t.without_held > 0 {
        line(
            "without held",
            format!(
                "{} answered or expired approvals whose held record is not in the range read (not counted as asked)",
                t.without_held
            ),
        );
    }
    out.push('\n');
    out.push_str(&table("IDENTITY", &report.by_identity, "anonymous"));
    out.push('\n');
    out.push_str(&table("RULE", &report.by_rule, "(no rule)"));
    if !report.grants.is_empty() {
        out.push('\n');
        out.push_str(&grants_table(&report.grants));
    }
    out
}

fn waits(w: &Waits) -> String {
    match (w.median, w.p90, w.max) {
        (Some(m), Some(p), Some(x)) => format!(
            "median {}, p90 {}, max {} (over {})",
            duration(m),
            duration(p),
            duration(x),
            plural(w.answers, "answer", "answers")
        ),
        _ => "no answers".to_string(),
    }
}

/// Rows of cells as aligned columns: the first `left` (text) left-aligned, the rest (numbers)
/// right-aligned.
fn columns(rows: &[Vec<String>], left: usize) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let width = |i: usize| {
        rows.iter()
            .filter_map(|r| r.get(i))
            .map(|c| c.chars().count())
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..n).map(width).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = widths[i].saturating_sub(c.chars().count());
                if i < left {
                    format!("{c}{}", " ".repeat(pad))
                } else {
                    format!("{}{c}", " ".repeat(pad))
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn table(title: &str, groups: &BTreeMap<String, Figures>, empty: &str) -> String {
    let mut rows = vec![
        [
            title,
            "ASKED",
            "APPROVED",
            "DENIED",
            "SELF",
            "EXPIRED",
            "OPEN",
            "MEDIAN",
            "P90",
            "MAX",
            "RETRIES",
            "GRANT USES",
            "GRANTS",
        ]
        .map(str::to_string)
        .to_vec(),
    ];
    let ms = |v: Option<u64>| v.map_or("-".to_string(), duration);
    for (name, f) in groups {
        let label = if name.is_empty() {
            empty.to_string()
        } else {
            printable(name).into_owned()
        };
        rows.push(vec![
            label,
            f.asked.to_string(),
            f.answered.approved.to_string(),
            f.answered.denied.to_string(),
            f.answered.self_approval_refused.to_string(),
            f.expired.total.to_string(),
            f.open.to_string(),
            ms(f.time_to_answer_ms.median),
            ms(f.time_to_answer_ms.p90),
            ms(f.time_to_answer_ms.max),
            f.coalesced.retries.to_string(),
            f.coalesced.grant_uses.to_string(),
            f.grants_left.to_string(),
        ]);
    }
    columns(&rows, 1)
}

fn grants_table(grants: &[GrantUse]) -> String {
    let mut rows = vec![
        [
            "GRANT",
            "APPROVAL",
            "APPROVED BY",
            "FOR",
            "USES",
            "SECONDS",
            "USED",
        ]
        .map(str::to_string)
        .to_vec(),
    ];
    for g in grants {
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |n| n.to_string());
        rows.push(vec![
            printable(&g.name).into_owned(),
            printable(&g.approval_id).into_owned(),
            printable(&g.approver).into_owned(),
            printable(&g.identity).into_owned(),
            opt(g.uses),
            opt(g.seconds),
            g.used.to_string(),
        ]);
    }
    columns(&rows, 4)
}

/// The figures as one line of JSON, for tools: `total`, `byIdentity` and `byRule` (maps of
/// [`Figures`] by name, sorted), `grants` (in record order); keys in the order of the structs.
pub fn json(report: &Report) -> String {
    serde_json::to_string(report).unwrap_or_else(|_| "null".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(nearest_rank(&[], 50), None);
        assert_eq!(nearest_rank(&[7], 50), Some(7));
        assert_eq!(nearest_rank(&[7], 90), Some(7));
        assert_eq!(nearest_rank(&[1, 2], 50), Some(1));
        assert_eq!(nearest_rank(&[1, 2, 3], 50), Some(2));
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(nearest_rank(&ten, 90), Some(9));
        let eleven: Vec<u64> = (1..=11).collect();
        assert_eq!(nearest_rank(&eleven, 90), Some(10));
        assert_eq!(nearest_rank(&eleven, 100), Some(11));
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(duration(0), "0ms");
        assert_eq!(duration(999), "999ms");
        assert_eq!(duration(4_250), "4.2s");
        assert_eq!(duration(187_000), "3m07s");
    }

    #[test]
    fn columns_align_and_escape() {
        let rows = vec![
            vec!["A".to_string(), "N".to_string()],
            vec!["long name".to_string(), "12".to_string()],
        ];
        assert_eq!(columns(&rows, 1), "A           N\nlong name  12\n");
        assert_eq!(columns(&rows, 2), "A          N\nlong name  12\n");
    }
}
