//! `kubeleash demo`: the sandbox cluster and the proxy on free loopback ports, and an agent
//! session played through them, ending with the replay of what it did.

use kubeleash_core::record::RecordKind;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request};
use http_body_util::BodyExt;
use kubeleash_core::policy::Identity;
use kubeleash_core::record::verify_signed;
use kubeleash_sandbox::{Sandbox, Seed};
use kubeleash_tower::{Answer, ApprovalRequest, Approver, Mode};

use crate::paint::Paint;
use crate::proxy::{Approvals, IdentityConfig, ProxyConfig, start};

const POLICY: &str = include_str!("../../examples/agent-policy.yaml");

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Play the agent with the real kubectl (on PATH) instead of kubeleash's own HTTP client.
    #[arg(long)]
    kubectl: bool,
    /// No colours.
    #[arg(long)]
    no_color: bool,
}

/// The person on call: shows the prompt a held request raises, then approves it.
struct Human(Paint);

#[async_trait::async_trait]
impl Approver for Human {
    async fn approve(&self, r: ApprovalRequest) -> Answer {
        let p = self.0;
        println!("   {} {}", p.hold("held for a human:"), p.bold(&r.kubectl));
        println!(
            "   {}",
            p.dim(&format!(
                "approval {} · {} ({}) · rule {}",
                r.id,
                r.identity.user,
                r.identity.groups.join(", "),
                r.rule.as_deref().unwrap_or("-")
            ))
        );
        if let Some(b) = &r.body {
            let short: String = b.chars().take(160).collect();
            println!(
                "   {}",
                p.dim(&format!(
                    "body (masked): {short}{}",
                    if b.len() > 160 { "…" } else { "" }
                ))
            );
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        println!("   {} alice approves this one request", p.hold("→"));
        Answer::Approve {
            by: "alice".into(),
            window: None,
        }
    }
}

struct Agent {
    /// A Kubernetes client made from the agent's kubeconfig alone: the proxy's https URL, the CA
    /// the proxy made at start, and the proxy's token.
    client: kube::Client,
    kubectl: Option<std::path::PathBuf>,
    home: std::path::PathBuf,
}

struct Reply {
    status: u16,
    body: String,
}

impl Agent {
    async fn http(&self, method: Method, path: &str, body: Option<&str>) -> Result<Reply, String> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("accept", "application/json");
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let req = b
            .body(kube::client::Body::from(
                body.unwrap_or_default().as_bytes().to_vec(),
            ))
            .map_err(|e| e.to_string())?;
        let resp = self
            .client
            .send(req)
            .await
            .map_err(|e| format!("the proxy did not answer: {e}"))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<Reply, String> {
        let Some(kubectl) = self.kubectl.clone() else {
            return Err("no kubectl".into());
        };
        let (home, args, stdin) = (
            self.home.clone(),
            args.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            stdin.map(str::to_string),
        );
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = std::process::Command::new(kubectl)
                .args(&args)
                .env("KUBECONFIG", home.join("agent.kubeconfig"))
                .env("HOME", &home)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot run kubectl: {e}"))?;
            if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
                let _ = w.write_all(text.as_bytes());
            }
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(Reply {
                status: if out.status.success() { 200 } else { 403 },
                body: text,
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// kube-rs's client from the agent's kubeconfig text.
async fn agent_client(kubeconfig: &str) -> Result<kube::Client, String> {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig)
        .map_err(|e| format!("the agent's kubeconfig does not read back: {e}"))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| format!("the agent's kubeconfig does not load: {e}"))?;
    kube::Client::try_from(config).map_err(|e| format!("cannot make the agent's client: {e}"))
}

fn message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.trim().to_string())
}

pub fn run(a: Args) -> ExitCode {
    let rt = match crate::report::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(demo(a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: the demo stopped: {e}");
            ExitCode::from(1)
        }
    }
}

async fn demo(a: Args) -> Result<(), String> {
    let p = Paint::stdout(a.no_color);
    let dir = std::env::temp_dir().join(format!("kubeleash-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let policy = dir.join("agent-policy.yaml");
    std::fs::write(&policy, POLICY).map_err(|e| e.to_string())?;
    let record = dir.join("session.jsonl");
    // The record is signed; its public key goes beside it as session.pub.
    let signing_key = dir.join("session.key");
    let sandbox = Sandbox::start(
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        Seed::Default,
    )
    .await
    .map_err(|e| e.to_string())?;
    let proxy = start(ProxyConfig {
        policy,
        kubeconfig: None,
        context: None,
        listen: "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        record: Some(record.clone()),
        // The masked bodies too, so the session page shows what the agent read.
        record_bodies: Some(64 * 1024),
        signing_key: Some(signing_key.clone()),
        record_session: None,
        identity: IdentityConfig::Fixed(Identity::new("agent-1", ["ai-agents"])),
        approvals: Approvals::Custom(Arc::new(Human(p))),
        approval_timeout: Duration::from_secs(30),
        mode: Mode::Enforce,
        upstream: Some(sandbox.url()),
        agent_kubeconfig: None,
        agent_token_file: None,
        agent_namespace: "dev".into(),
        plain_http: false,
        agent_ca_file: None,
        tls_files: None,
        serve_names: Vec::new(),
    })
    .await?;
    let kubectl = if a.kubectl { which("kubectl") } else { None };
    if a.kubectl && kubectl.is_none() {
        return Err("--kubectl was given, but there is no kubectl on PATH".into());
    }
    // The agent's kubeconfig: the proxy's URL and CA and the token it requires, no cluster
    // credential. The agent's client is made from it alone, as kubectl's is.
    let agent_kubeconfig = proxy.agent_kubeconfig("dev");
    crate::proxy::write_private(&dir.join("agent.kubeconfig"), &agent_kubeconfig)?;
    let agent = Agent {
        client: agent_client(&agent_kubeconfig).await?,
        kubectl,
        home: dir.clone(),
    };

    println!("{}", p.bold("kubeleash demo"));
    println!("{}", p.dim(&format!(
        "a sandbox cluster at {}, the kubeleash proxy at {}, policy examples/agent-policy.yaml;\nthe agent (user agent-1, group ai-agents) holds no cluster credential, only the proxy's own token: the proxy holds the credential.\n",
        sandbox.url(),
        proxy.url()
    )));
    let result = session(&agent, p).await;
    proxy.shutdown(Duration::from_secs(5)).await;
    sandbox.shutdown().await;
    result?;

    println!(
        "\n{}",
        p.bold("6. the record, replayed as kubectl commands (kubeleash replay)")
    );
    let log = std::fs::read_to_string(&record).map_err(|e| e.to_string())?;
    let public = crate::signing_key::public_path(&signing_key);
    let keys = crate::signing_key::public_keys(std::slice::from_ref(&public))?;
    let v = verify_signed(&log, &keys);
    for r in v.records.iter().filter(|r| r.body.kind != RecordKind::End) {
        let d = crate::replay::decision_text(r);
        let d = if d.starts_with("DENIED") {
            p.no(&d)
        } else if d.starts_with("held") {
            p.hold(&d)
        } else {
            p.ok(&d)
        };
        println!(
            "   {}  {d}\n      {}",
            p.dim(&r.body.time),
            crate::replay::command(r)
        );
    }
    let chain = if v.problems.is_empty() && v.unsigned.is_none() {
        p.ok("intact, and every record signed")
    } else {
        p.no("BROKEN")
    };
    println!(
        "   {} records, hash chain {chain}; full log: {}\n   verify it yourself: kubeleash replay --verify --key {} {}",
        v.records.len(),
        record.display(),
        public.display(),
        record.display()
    );
    Ok(())
}

async fn session(agent: &Agent, p: Paint) -> Result<(), String> {
    let kubectl = agent.kubectl.is_some();
    let show = |label: &str| println!("{}", p.bold(label));

    show("1. the agent lists pods in dev");
    let r = if kubectl {
        agent.kubectl(&["get", "pods", "-n", "dev"], None).await?
    } else {
        agent
            .http(Method::GET, "/api/v1/namespaces/dev/pods", None)
            .await?
    };
    let pods: Vec<String> = serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| {
            v["items"].as_array().map(|i| {
                i.iter()
                    .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    let pods = if kubectl {
        print!("{}", indent(&r.body));
        let names = agent
            .kubectl(
                &[
                    "get",
                    "pods",
                    "-n",
                    "dev",
                    "-o",
                    "jsonpath={.items[*].metadata.name}",
                ],
                None,
            )
            .await?;
        names.body.split_whitespace().map(str::to_string).collect()
    } else {
        pods
    };
    if !kubectl {
        println!("   {} {}", p.ok("allowed:"), pods.join(", "));
    }

    show("2. it reads the Secret db-credentials");
    let r = if kubectl {
        agent
            .kubectl(
                &[
                    "get",
                    "secret",
                    "db-credentials",
                    "-n",
                    "dev",
                    "-o",
                    "jsonpath={.data}",
                ],
                None,
            )
            .await?
    } else {
        agent
            .http(
                Method::GET,
                "/api/v1/namespaces/dev/secrets/db-credentials",
                None,
            )
            .await?
    };
    let data = if kubectl {
        r.body.clone()
    } else {
        serde_json::from_str::<serde_json::Value>(&r.body)
            .map(|v| v["data"].to_string())
            .unwrap_or_default()
    };
    println!("   {} data = {data}", p.ok("allowed, masked:"));
    println!(
        "   {}",
        p.dim(
            "every value decodes to \"[masked]\"; the last-applied annotation is masked inside too"
        )
    );

    show("3. it reads the web pod's logs, which leak a token and a private key");
    let mut log = String::new();
    for web in pods.iter().filter(|n| n.starts_with("web")) {
        let r = if kubectl {
            agent.kubectl(&["logs", "-n", "dev", web], None).await?
        } else {
            agent
                .http(
                    Method::GET,
                    &format!("/api/v1/namespaces/dev/pods/{web}/log"),
                    None,
                )
                .await?
        };
        log = r.body;
        if log.contains("[masked") {
            break;
        }
    }
    let masked: Vec<&str> = log.lines().filter(|l| l.contains("[masked")).collect();
    for l in masked.iter().take(3) {
        let short: String = l.chars().take(140).collect();
        println!("   {} {short}", p.ok("masked:"));
    }
    if masked.is_empty() {
        println!("   {}", p.dim("(this pod's log had nothing to mask)"));
    }

    show("4. it tries to delete the prod namespace");
    let r = if kubectl {
        agent
            .kubectl(&["delete", "namespace", "prod", "--wait=false"], None)
            .await?
    } else {
        agent
            .http(Method::DELETE, "/api/v1/namespaces/prod", None)
            .await?
    };
    println!(
        "   {} {}",
        p.no(&format!(
            "denied ({}):",
            if kubectl {
                "kubectl".to_string()
            } else {
                r.status.to_string()
            }
        )),
        message(&r.body).trim()
    );

    show(
        "5. it asks whether it may bind roles, then binds itself the view role across the cluster",
    );
    // The agent asks first: kubeleash answers from the policy, not from its own credential.
    let asked = if kubectl {
        agent
            .kubectl(&["auth", "can-i", "create", "clusterrolebindings"], None)
            .await?
            .body
    } else {
        let r = agent
            .http(
                Method::POST,
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                Some(r#"{"kind":"SelfSubjectAccessReview","apiVersion":"authorization.k8s.io/v1","spec":{"resourceAttributes":{"verb":"create","group":"rbac.authorization.k8s.io","resource":"clusterrolebindings"}}}"#),
            )
            .await?;
        serde_json::from_str::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v["status"]["reason"].as_str().map(|s| format!("no - {s}")))
            .unwrap_or(r.body)
    };
    println!(
        "   {} {}",
        p.dim("kubectl auth can-i create clusterrolebindings:"),
        asked.trim()
    );
    let crb = r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"agent-1-view"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"view"},"subjects":[{"kind":"User","name":"agent-1","apiGroup":"rbac.authorization.k8s.io"}]}"#;
    let r = if kubectl {
        agent.kubectl(&["create", "-f", "-"], Some(crb)).await?
    } else {
        agent
            .http(
                Method::POST,
                "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                Some(crb),
            )
            .await?
    };
    if r.status < 300 {
        println!(
            "   {} the binding was created after approval",
            p.ok("allowed:")
        );
    } else {
        println!(
            "   {} {}",
            p.no(&format!("refused ({}):", r.status)),
            message(&r.body)
        );
    }
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("   {l}\n")).collect()
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
