//! Held requests prompted on the proxy's controlling terminal, one at a time.

use std::fs::OpenOptions;
use std::io::{self, BufRead as _, BufReader, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use kubeleash_tower::{Answer, ApprovalRequest, Approver};
use tokio::sync::oneshot;

use super::{
    Fit, Shown, Widening, clean_reason, describe_widening, fit, format_duration, one_line,
    operator_name, parse_field, parse_window,
};

const PROMPT: &str = "approve? [y/N/for 15m] ";

/// How to widen an approval at the prompt, shown when the request offers any axis.
const WIDEN_HINT: &str = "widen with: y [names=GLOB] [PATH=MIN..MAX|PATH=GLOB]... [uses=N] [for=15m] \
                          (only along what `widen` offers)";

/// An answer typed sooner than this after a prompt appeared was typed before it: ignored.
const READ_GUARD: Duration = Duration::from_millis(500);

/// How often a waiting prompt checks whether its request is still held.
const POLL: Duration = Duration::from_millis(200);

/// Prompts on `/dev/tty` for each held request: the kubectl command, identity, rule, reason,
/// the axes its approval may be widened along, and the masked body, then
/// `approve? [y/N/for 15m]`. An answer may widen the approval along the offered axes:
/// `y names=web-* spec.replicas=1..5 uses=3 for=30m` (see [`parse_answer`]). One prompt at a
/// time; the others queue. A request that times out while prompted is dropped from the prompt.
/// Answers are given in `$USER`'s name.
#[derive(Clone)]
pub struct TerminalApprover {
    jobs: Sender<Job>,
    queued: Arc<AtomicUsize>,
}

impl std::fmt::Debug for TerminalApprover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalApprover")
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish()
    }
}

struct Job {
    request: ApprovalRequest,
    reply: oneshot::Sender<Answer>,
}

impl TerminalApprover {
    /// Prompt on the controlling terminal; an error when the process has none (a service, a
    /// container without a TTY, a detached session).
    pub fn new() -> io::Result<TerminalApprover> {
        let tty = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "terminal approvals need the proxy's controlling terminal, and /dev/tty cannot be opened ({e}); \
                         run the proxy in a terminal, or use `--approvals socket` (answer with `kubeleash approvals`) \
                         or `--approvals webhook=URL`"
                    ),
                )
            })?;
        let input = tty.try_clone()?;
        let by = operator_name().unwrap_or_else(|| "the proxy's operator".into());
        TerminalApprover::with_io(input, tty, by, READ_GUARD)
    }

    /// Prompt on `output`, read answers from `input`.
    pub(crate) fn with_io(
        input: impl Read + Send + 'static,
        output: impl Write + Send + 'static,
        by: String,
        guard: Duration,
    ) -> io::Result<TerminalApprover> {
        let (line_tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("kubeleash-tty-read".into())
            .spawn(move || read_lines(input, line_tx))?;
        let (jobs, job_rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let prompter = Prompter {
            out: output,
            lines,
            by,
            guard,
            queued: Arc::clone(&queued),
            closed: false,
        };
        std::thread::Builder::new()
            .name("kubeleash-tty-prompt".into())
            .spawn(move || prompter.run(job_rx))?;
        Ok(TerminalApprover { jobs, queued })
    }
}

#[async_trait::async_trait]
impl Approver for TerminalApprover {
    async fn approve(&self, request: ApprovalRequest) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.jobs.send(Job { request, reply }).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return closed();
        }
        answer.await.unwrap_or_else(|_| closed())
    }
}

fn closed() -> Answer {
    Answer::Deny {
        by: "kubeleash".into(),
        reason: "the approval terminal is closed".into(),
    }
}

fn read_lines(input: impl Read, lines: Sender<String>) {
    let mut input = BufReader::new(input);
    loop {
        let mut line = Vec::new();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {
                if lines
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
                {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

struct Prompter<W> {
    out: W,
    lines: Receiver<String>,
    by: String,
    guard: Duration,
    queued: Arc<AtomicUsize>,
    /// The terminal's input ended: every request is denied.
    closed: bool,
}

impl<W: Write> Prompter<W> {
    fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            if job.reply.is_closed() {
                continue;
            }
            let answer = if self.closed {
                Some((closed(), None))
            } else {
                self.ask(&job)
            };
            let Some((answer, fitted)) = answer else {
                continue;
            };
            let id = one_line(&job.request.id);
            let said = match (&answer, fitted) {
                (
                    Answer::Approve {
                        window: Some(w), ..
                    },
                    _,
                ) => format!(
                    "approved {id} (and identical requests for {})",
                    format_duration(*w)
                ),
                (Answer::Widen { .. }, Some(Fit::Exactly(why))) => format!(
                    "approved {id} exactly, once; not widened: {}",
                    one_line(&why)
                ),
                (Answer::Widen { widening, .. }, _) => {
                    format!("approved {id}, widened: {}", describe_widening(widening))
                }
                (Answer::Approve { .. }, _) => format!("approved {id}"),
                (Answer::Deny { .. }, _) => format!("denied {id}"),
            };
            if job.reply.send(answer).is_err() {
                self.say(&format!(
                    "too late: approval {id} timed out before the answer and was denied\n"
                ));
            } else if !self.closed {
                self.say(&format!("{said}\n"));
            }
        }
    }

    fn say(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// Prompt for one request; `None` when it stopped waiting before an answer.
    fn ask(&mut self, job: &Job) -> Option<(Answer, Option<Fit>)> {
        // Whatever was typed before this prompt was not an answer to it.
        while self.lines.try_recv().is_ok() {}
        let waiting = self.queued.load(Ordering::Relaxed);
        let more = if waiting > 0 {
            format!("({waiting} more waiting)\n")
        } else {
            String::new()
        };
        let shown = Shown::from(&job.request);
        let hint = if shown.widen.exact_only() {
            String::new()
        } else {
            format!("{WIDEN_HINT}\n")
        };
        self.say(&format!(
            "\nkubeleash: a request is held for approval\n{}{more}{hint}{PROMPT}",
            shown.render()
        ));
        let mut shown_at = Instant::now();
        loop {
            match self.lines.recv_timeout(POLL) {
                Ok(line) => {
                    if shown_at.elapsed() < self.guard {
                        self.say(&format!(
                            "(ignored: typed before this prompt appeared; answer again)\n{PROMPT}"
                        ));
                        shown_at = Instant::now();
                        continue;
                    }
                    match parse_answer(&line, &self.by, &job.request) {
                        Ok(answer) => return Some(answer),
                        Err(why) => self.say(&format!(
                            "{why}\nanswer y (approve), n (deny; `n REASON` to say why) or `for 15m` (approve for a while, at most 24h){}\n{PROMPT}",
                            if hint.is_empty() { "" } else { "; or widen: y names=GLOB PATH=MIN..MAX uses=N for=15m" }
                        )),
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if job.reply.is_closed() {
                        self.say(&format!(
                            "\napproval {} is no longer waiting (it timed out and was denied)\n",
                            one_line(&job.request.id)
                        ));
                        return None;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.closed = true;
                    return Some((closed(), None));
                }
            }
        }
    }
}

/// An answer typed at the prompt, for the held request `request`:
///
/// - `n`, `no`, `deny` or nothing (the default), optionally followed by a reason: deny;
/// - `y`, `yes` or `approve`: approve this one request;
/// - `for 15m`, or `y for 15m`: approve, and identical requests for a while (at most 24h);
/// - `y` (or `approve`) followed by widening words, in any order: `names=GLOB`,
///   `PATH=MIN..MAX` or `PATH=GLOB` (a body field; `$.names=...` for a top-level field named
///   `names`, `uses` or `for`), `uses=N`, and `for 15m` or `for=15m`; checked against the axes
///   the request offers ([`fit`]).
///
/// `Err` says what was not understood or not offered; the prompt asks again.
fn parse_answer(
    line: &str,
    by: &str,
    request: &ApprovalRequest,
) -> Result<(Answer, Option<Fit>), String> {
    let line = line.trim();
    let (word, rest) = match line.split_once(char::is_whitespace) {
        Some((w, r)) => (w, r.trim()),
        None => (line, ""),
    };
    match word.to_ascii_lowercase().as_str() {
        "" | "n" | "no" | "deny" => {
            let reason = clean_reason(rest);
            Ok((
                Answer::Deny {
                    by: by.to_string(),
                    reason: if reason.is_empty() {
                        "denied at the proxy's terminal".into()
                    } else {
                        reason
                    },
                },
                None,
            ))
        }
        "y" | "yes" | "approve" => approval(rest, by, request),
        "for" => approval(line, by, request),
        _ => Err(format!("`{}` is not an answer", one_line(word))),
    }
}

/// The approval the words after `y` give: a window, a widening, or neither.
fn approval(
    words: &str,
    by: &str,
    request: &ApprovalRequest,
) -> Result<(Answer, Option<Fit>), String> {
    let mut w = Widening::default();
    let mut window = None;
    let mut words = words.split_whitespace();
    while let Some(word) = words.next() {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        match (key, value) {
            ("for", v) => {
                let d = v.or_else(|| words.next()).unwrap_or_default();
                if window.replace(parse_window(d)?).is_some() {
                    return Err("the time is given twice; give `for` once".into());
                }
            }
            ("names", Some(glob)) => {
                if w.names.replace(glob.to_string()).is_some() {
                    return Err("`names=` is given twice; give one glob".into());
                }
            }
            ("uses", Some(n)) => {
                let n = n.parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    format!(
                        "`uses={}` is not a number of uses; write uses=3",
                        one_line(n)
                    )
                })?;
                if w.uses.replace(n).is_some() {
                    return Err("`uses=` is given twice; give it once".into());
                }
            }
            (_, Some(_)) => w.fields.push(parse_field(word)?),
            (_, None) => return Err(format!("`{}` is not understood", one_line(word))),
        }
    }
    let by = by.to_string();
    if w.is_exact() {
        return Ok((Answer::Approve { by, window }, None));
    }
    w.seconds = window.map(|d| d.as_secs());
    let fitted = fit(request, &w)?;
    Ok((Answer::Widen { by, widening: w }, Some(fitted)))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        reason = "tests"
    )]

    use super::*;
    use kubeleash_core::policy::Identity;
    use kubeleash_core::request::Attributes;

    fn request(id: &str) -> ApprovalRequest {
        ApprovalRequest {
            id: id.into(),
            identity: Identity::new("agent-1", ["ai-agents"]),
            method: "POST".into(),
            target: "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings".into(),
            attributes: Attributes::default(),
            kubectl: "kubectl create clusterrolebinding x --clusterrole=cluster-admin".into(),
            body: Some(r#"{"kind":"ClusterRoleBinding"}"#.into()),
            content_type: Some("application/json".into()),
            impersonation: None,
            rule: Some("hold-rbac".into()),
            reason: "RBAC writes need a person".into(),
            agent_reason: None,
            dry_run: None,
            widen: Default::default(),
        }
    }

    #[test]
    fn answers() {
        let by = "alice";
        let r = request("x");
        let answer = |line: &str| parse_answer(line, by, &r).map(|(a, _)| a);
        assert_eq!(
            answer("y\n"),
            Ok(Answer::Approve {
                by: by.into(),
                window: None
            })
        );
        assert_eq!(answer("approve"), answer("y"));
        assert_eq!(
            answer("for 15m"),
            Ok(Answer::Approve {
                by: by.into(),
                window: Some(Duration::from_secs(900))
            })
        );
        assert_eq!(
            answer("Yes for 2h"),
            Ok(Answer::Approve {
                by: by.into(),
                window: Some(Duration::from_secs(7200))
            })
        );
        assert_eq!(answer("y for=2h"), answer("Yes for 2h"));
        assert!(matches!(answer(""), Ok(Answer::Deny { .. })));
        assert_eq!(
            answer("n too broad"),
            Ok(Answer::Deny {
                by: by.into(),
                reason: "too broad".into()
            })
        );
        assert_eq!(
            answer("deny"),
            Ok(Answer::Deny {
                by: by.into(),
                reason: "denied at the proxy's terminal".into()
            })
        );
        for other in ["maybe", "for", "for ever", "y please", "yy", "for 25h"] {
            assert!(answer(other).is_err(), "{other}");
        }
        // This request offers no axis (its `widen` is empty): it takes no widening.
        let e = answer("y names=x-*").unwrap_err();
        assert!(e.contains("cannot be widened by name"), "{e}");
    }

    #[test]
    fn widened_answers() {
        let by = "alice";
        let r = crate::approvals::tests::held_scale(None);
        let answer = |line: &str| parse_answer(line, by, &r);
        let want = Widening {
            names: Some("web-*".into()),
            fields: vec!["spec.replicas=1..5".parse().unwrap()],
            uses: Some(3),
            seconds: Some(1800),
        };
        assert_eq!(
            answer("approve names=web-* spec.replicas=1..5 uses=3 for=30m"),
            Ok((
                Answer::Widen {
                    by: by.into(),
                    widening: want.clone()
                },
                Some(Fit::Widened)
            ))
        );
        // In any order, the time written either way.
        assert_eq!(
            answer("y for 30m uses=3 spec.replicas=1..5 names=web-*"),
            answer("approve names=web-* spec.replicas=1..5 uses=3 for=30m")
        );
        // Uses alone: a widening (15 minutes by default), not a window.
        assert_eq!(
            answer("y uses=2"),
            Ok((
                Answer::Widen {
                    by: by.into(),
                    widening: Widening {
                        uses: Some(2),
                        ..Widening::default()
                    }
                },
                Some(Fit::Widened)
            ))
        );
        let refused = |line: &str, says: &str| {
            let e = answer(line).unwrap_err();
            assert!(e.contains(says), "{line}: {e}");
        };
        refused(
            "y spec.paused=1..2",
            "does not offer the field `spec.paused`",
        );
        refused(
            "y spec.replicas=5..1",
            "`spec.replicas=5..1`: field `spec.replicas` needs either `min` and `max`",
        );
        refused("y names=db-*", "does not match the held request's own name");
        refused("y uses=0", "`uses=0` is not a number of uses");
        refused("y uses=many", "`uses=many`");
        refused("y uses", "`uses` is not understood");
        refused("y for 1m for 2m", "the time is given twice");
        refused("y names=a* names=b*", "given twice");
        refused("y for=25h", "at most 24h");
        // Under the floor: approved exactly, and said so.
        let floored = crate::approvals::tests::held_scale(Some("the policy never widens deletes"));
        let (a, fitted) = parse_answer("y names=web-* uses=3", by, &floored).unwrap();
        assert!(matches!(a, Answer::Widen { .. }), "{a:?}");
        assert_eq!(
            fitted,
            Some(Fit::Exactly("the policy never widens deletes".into()))
        );
    }

    /// Output that a test can read while the prompter writes it.
    #[derive(Clone, Default)]
    struct Screen(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Screen {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Screen {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
        async fn wait_for(&self, what: &str) {
            for _ in 0..200 {
                if self.text().contains(what) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!("never shown: {what}\n{}", self.text());
        }
    }

    /// Long enough that a loaded machine still types the "immediate" answer within it.
    const GUARD: Duration = Duration::from_millis(1000);

    #[tokio::test]
    async fn prompts_one_at_a_time_and_ignores_typeahead() {
        let (reader, mut keys) = io::pipe().unwrap();
        let screen = Screen::default();
        let t = TerminalApprover::with_io(reader, screen.clone(), "alice".into(), GUARD).unwrap();
        let first = tokio::spawn({
            let t = t.clone();
            async move { t.approve(request("first")).await }
        });
        screen.wait_for(PROMPT).await;
        let second = tokio::spawn({
            let t = t.clone();
            async move { t.approve(request("second")).await }
        });
        tokio::time::sleep(GUARD + Duration::from_millis(100)).await;
        keys.write_all(b"for 15m\n").unwrap();
        assert_eq!(
            first.await.unwrap(),
            Answer::Approve {
                by: "alice".into(),
                window: Some(Duration::from_secs(900))
            }
        );
        let text = screen.text();
        assert!(
            text.contains("kubectl create clusterrolebinding x"),
            "{text}"
        );
        assert!(text.contains("agent-1 (groups: ai-agents)"), "{text}");
        assert!(text.contains("hold-rbac"), "{text}");
        assert!(text.contains("\"kind\": \"ClusterRoleBinding\""), "{text}");
        // The second prompt: an answer typed at once is ignored, a later one counts.
        screen.wait_for("second").await;
        keys.write_all(b"y\n").unwrap();
        screen.wait_for("(ignored").await;
        tokio::time::sleep(GUARD + Duration::from_millis(100)).await;
        keys.write_all(b"n not today\n").unwrap();
        assert_eq!(
            second.await.unwrap(),
            Answer::Deny {
                by: "alice".into(),
                reason: "not today".into()
            }
        );
        // A request that stops waiting leaves the prompt.
        let gone = tokio::time::timeout(Duration::from_millis(300), t.approve(request("third")));
        assert!(gone.await.is_err());
        screen.wait_for("no longer waiting").await;
        // The terminal's input ends: everything is denied.
        drop(keys);
        assert_eq!(t.approve(request("fourth")).await, closed());
        assert!(
            !screen.text().contains(WIDEN_HINT),
            "nothing to widen, no hint"
        );
    }

    #[tokio::test]
    async fn a_prompt_offers_the_axes_and_takes_a_widening() {
        let (reader, mut keys) = io::pipe().unwrap();
        let screen = Screen::default();
        let t = TerminalApprover::with_io(reader, screen.clone(), "alice".into(), GUARD).unwrap();
        let held = crate::approvals::tests::held_scale(None);
        let waiting = tokio::spawn({
            let t = t.clone();
            async move { t.approve(held).await }
        });
        screen.wait_for(PROMPT).await;
        let text = screen.text();
        assert!(
            text.contains("widen     names (a glob); fields spec.replicas; uses, time"),
            "{text}"
        );
        assert!(text.contains(WIDEN_HINT), "{text}");
        tokio::time::sleep(GUARD + Duration::from_millis(100)).await;
        // Not offered: said why, and asked again.
        keys.write_all(b"y spec.paused=1..2\n").unwrap();
        screen
            .wait_for("does not offer the field `spec.paused`")
            .await;
        keys.write_all(b"y names=web-* uses=2\n").unwrap();
        assert_eq!(
            waiting.await.unwrap(),
            Answer::Widen {
                by: "alice".into(),
                widening: Widening {
                    names: Some("web-*".into()),
                    uses: Some(2),
                    ..Widening::default()
                }
            }
        );
        screen
            .wait_for("widened: names matching `web-*`, 2 more uses, for 15m (the default)")
            .await;
    }
}
