//! `kubeleash approvals list|approve|deny`: answer held requests over the proxy's socket, or,
//! with `--kubernetes`, those kept in the cluster (see the `kubernetes` module).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use kubeleash_tower::{FieldRange, Widening};
use serde_json::{Value, json};

use super::{
    Shown, check_widening, default_socket_path, describe_widening, format_duration, one_line,
    operator_name,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The proxy's approvals socket [default: $XDG_RUNTIME_DIR/kubeleash/approvals.sock, or
    /// $HOME/.kubeleash/approvals.sock].
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        conflicts_with = "kubernetes"
    )]
    socket: Option<PathBuf>,
    /// Answer the approvals kept in the cluster (a proxy started with `--approvals
    /// kubernetes`), as your own user: who may answer is RBAC on `approvals/status`, and an
    /// answer is given in your name.
    #[arg(long, global = true)]
    kubernetes: bool,
    /// With --kubernetes: the kubeconfig [default: $KUBECONFIG, or ~/.kube/config].
    #[arg(long, global = true, value_name = "FILE", requires = "kubernetes")]
    kubeconfig: Option<PathBuf>,
    /// With --kubernetes: the kubeconfig context [default: the current one].
    #[arg(long, global = true, value_name = "NAME", requires = "kubernetes")]
    context: Option<String>,
    /// With --kubernetes: the namespace the proxy keeps approvals in [default: the context's].
    #[arg(
        long,
        short = 'n',
        global = true,
        value_name = "NAMESPACE",
        requires = "kubernetes"
    )]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Show each held request: id, kubectl command, identity, rule, reason and masked body.
    List {
        /// Print the proxy's answer as JSON.
        #[arg(long)]
        json: bool,
        /// Skip this many held requests (a list shows at most 32 at a time).
        #[arg(long, default_value_t = 0, value_name = "N")]
        offset: usize,
    },
    /// Let one held request through, and, on purpose, more like it: only along the axes
    /// `kubeleash approvals list` shows under `widen`.
    ///
    /// With --names, --field or --uses, the approval is widened: later requests from the same
    /// identity that differ from this one only along those axes go through without a prompt,
    /// for --for (15m when not given) and at most --uses more times. A request the policy never
    /// widens (`approvals.neverWiden`) is approved exactly, once, and you are told so.
    Approve {
        /// The approval's id, from `kubeleash approvals list`.
        id: String,
        /// Also let through, for this long, requests from the same identity identical to this
        /// one (same method, target and query, content type, impersonation and body), or, with
        /// the widening flags, the widened ones: 30s, 15m, 2h (at most 24h).
        #[arg(long = "for", value_name = "DURATION", value_parser = super::parse_window)]
        window: Option<Duration>,
        /// Widen to any object name matching this glob (`*` is any run of characters), e.g.
        /// 'web-*'.
        #[arg(long, value_name = "GLOB")]
        names: Option<String>,
        /// Widen one body field: a number within a range (`spec.replicas=1..5`) or a string
        /// matching a glob (`spec.template.spec.containers[0].image=registry.example/*`).
        /// Repeat for more fields.
        #[arg(long = "field", value_name = "PATH=MIN..MAX|PATH=GLOB", value_parser = super::parse_field)]
        fields: Vec<FieldRange>,
        /// Widen to at most this many more requests (the approved one not counted).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        uses: Option<u32>,
        /// Why (kept in the record with the approval).
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Refuse a held request; the agent gets a 403 with the reason.
    Deny {
        /// The approval's id, from `kubeleash approvals list`.
        id: String,
        /// Why; shown to the agent.
        #[arg(long, value_name = "TEXT")]
        reason: String,
    },
}

/// Exit 0 when done, 1 when the proxy says no (an unknown id), 2 for usage and connection
/// problems.
pub fn run(args: Args) -> ExitCode {
    let socket = args.socket.unwrap_or_else(default_socket_path);
    let request = match &args.command {
        Command::List { offset, .. } => json!({"op": "list", "offset": offset}),
        Command::Approve {
            id,
            window,
            names,
            fields,
            uses,
            reason,
        } => {
            // Without a name, the proxy answers in the name of the connecting uid.
            let mut r = json!({"op": "approve", "id": id, "by": operator_name()});
            match widening(names, fields, *uses, *window) {
                Err(e) => {
                    eprintln!("kubeleash approvals: {e}; nothing was approved");
                    return ExitCode::from(2);
                }
                Ok(Some(w)) => r["widen"] = json!(w),
                Ok(None) => {
                    if let Some(w) = window {
                        r["for_seconds"] = json!(w.as_secs());
                    }
                }
            }
            if let Some(reason) = reason {
                r["reason"] = json!(reason);
            }
            r
        }
        Command::Deny { id, reason } => {
            if reason.trim().is_empty() {
                eprintln!("kubeleash approvals: --reason must say why; the agent is shown it");
                return ExitCode::from(2);
            }
            json!({"op": "deny", "id": id, "by": operator_name(), "reason": reason})
        }
    };
    let replied = if args.kubernetes {
        let target = super::kubernetes::Target {
            kubeconfig: args.kubeconfig.clone(),
            context: args.context.clone(),
            namespace: args.namespace.clone(),
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start: {e}"))
            .and_then(|rt| rt.block_on(super::kubernetes::call(&target, &request)))
    } else {
        call(&socket, &request)
    };
    let answer = match replied {
        Ok(a) => a,
        Err(message) => {
            eprintln!("kubeleash approvals: {message}");
            return ExitCode::from(2);
        }
    };
    match args.command {
        Command::List { json, offset } => {
            // The hints name the same place the list came from.
            let mut cmd = "kubeleash approvals".to_string();
            if args.kubernetes {
                cmd.push_str(" --kubernetes");
                if let Some(ns) = &args.namespace {
                    cmd.push_str(&format!(" -n {}", one_line(ns)));
                }
            }
            list(&answer, json, offset, &cmd)
        }
        Command::Approve {
            id,
            window,
            names,
            fields,
            uses,
            ..
        } => {
            let id = one_line(&id);
            let done = match (
                widening(&names, &fields, uses, window),
                answer.get("exactly"),
            ) {
                (_, Some(why)) => format!(
                    "approved {id} exactly, once; not widened: {}",
                    one_line(why.as_str().unwrap_or("the policy never widens it"))
                ),
                (Ok(Some(w)), None) => format!(
                    "approved {id}, widened to requests from the same identity that differ only \
                     in: {}",
                    describe_widening(&w)
                ),
                _ => match window {
                    Some(w) => format!(
                        "approved {id} (and identical requests from the same identity for {})",
                        format_duration(w)
                    ),
                    None => format!("approved {id}"),
                },
            };
            answered(&answer, &done)
        }
        Command::Deny { id, .. } => answered(&answer, &format!("denied {}", one_line(&id))),
    }
}

/// The widening the approve flags ask for (`--for` its time), `None` when none of --names,
/// --field or --uses is given; checked as far as it can be without the request.
fn widening(
    names: &Option<String>,
    fields: &[FieldRange],
    uses: Option<u32>,
    window: Option<Duration>,
) -> Result<Option<Widening>, String> {
    if names.is_none() && fields.is_empty() && uses.is_none() {
        return Ok(None);
    }
    let w = Widening {
        names: names.clone(),
        fields: fields.to_vec(),
        uses,
        seconds: window.map(|w| w.as_secs()),
    };
    check_widening(&w)?;
    Ok(Some(w))
}

fn list(answer: &Value, as_json: bool, offset: usize, cmd: &str) -> ExitCode {
    let Some(pending) = answer.get("pending").and_then(Value::as_array) else {
        return unexpected(answer);
    };
    if as_json {
        println!("{answer}");
        return ExitCode::SUCCESS;
    }
    let total = answer
        .get("total")
        .and_then(Value::as_u64)
        .map_or(pending.len(), |t| usize::try_from(t).unwrap_or(usize::MAX));
    if pending.is_empty() {
        if total > 0 {
            println!("no held requests past --offset {offset} ({total} held)");
        } else {
            println!("no requests are held for approval");
        }
        return ExitCode::SUCCESS;
    }
    let mut out = String::new();
    let mut widenable = false;
    for p in pending {
        let shown: Shown = match serde_json::from_value(p.clone()) {
            Ok(s) => s,
            Err(_) => return unexpected(answer),
        };
        widenable |= !shown.widen.exact_only();
        out.push_str(&shown.render());
        out.push('\n');
    }
    let shown_to = offset + pending.len();
    if shown_to < total || offset > 0 {
        out.push_str(&format!(
            "held requests {}-{shown_to} of {total}",
            offset + 1
        ));
        if shown_to < total {
            out.push_str(&format!("; the next ones: {cmd} list --offset {shown_to}"));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "answer with: {cmd} approve ID [--for 15m] [--reason TEXT]\n         \
         or: {cmd} deny ID --reason TEXT\n",
    ));
    if widenable {
        out.push_str(&format!(
            "      widen: {cmd} approve ID [--names GLOB] \
             [--field PATH=MIN..MAX|PATH=GLOB]... [--uses N] [--for 15m]\n             \
             (only along what a request's `widen` line offers)\n",
        ));
    }
    print!("{out}");
    ExitCode::SUCCESS
}

fn answered(answer: &Value, done: &str) -> ExitCode {
    match answer.get("ok").and_then(Value::as_bool) {
        Some(true) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Some(false) => {
            let error = answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("the proxy refused");
            eprintln!("kubeleash approvals: {}", one_line(error));
            let flag = |k: &str| answer.get(k).and_then(Value::as_bool) == Some(true);
            if flag("still_held") {
                eprintln!(
                    "  nothing was answered: the request is still held (`kubeleash approvals list` shows what it offers)"
                );
            } else if !flag("answered") {
                eprintln!(
                    "  (`kubeleash approvals list` shows what is held; a request that waited too long was denied)"
                );
            }
            ExitCode::from(1)
        }
        None => unexpected(answer),
    }
}

fn unexpected(answer: &Value) -> ExitCode {
    let text = answer.to_string();
    let text: String = text.chars().take(300).collect();
    eprintln!(
        "kubeleash approvals: unexpected answer from the socket: {}",
        one_line(&text)
    );
    ExitCode::from(2)
}

/// One request, one answer line.
fn call(socket: &Path, request: &Value) -> Result<Value, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot connect to the approvals socket {}: {e}\n  \
             the proxy serves it when started with `kubeleash proxy ... --approvals socket`; \
             start it, or pass --socket PATH if it uses another path",
            socket.display()
        )
    })?;
    let io = |e: std::io::Error| format!("approvals socket {}: {e}", socket.display());
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    stream
        .set_write_timeout(Some(Duration::from_secs(30)))
        .map_err(io)?;
    let mut line = request.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut reply = Vec::new();
    BufReader::new(&stream)
        .take(64 * 1024 * 1024)
        .read_until(b'\n', &mut reply)
        .map_err(io)?;
    if reply.is_empty() {
        return Err(format!(
            "the approvals socket {} closed without answering",
            socket.display()
        ));
    }
    serde_json::from_slice(&reply).map_err(|e| {
        format!(
            "the approvals socket {} answered something that is not JSON: {e}",
            socket.display()
        )
    })
}
