//! The operator's kubeconfig, read on the Rust side: the server to send to and the credential to
//! send with, which never reach Python.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct File {
    #[serde(default)]
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
    #[serde(default)]
    users: Vec<Named<User>>,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "context", alias = "user")]
    value: Option<T>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Context {
    cluster: Option<String>,
    user: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    token: Option<String>,
    #[serde(rename = "tokenFile")]
    token_file: Option<String>,
    client_certificate: Option<String>,
    client_certificate_data: Option<String>,
    username: Option<String>,
    exec: Option<serde_json::Value>,
    auth_provider: Option<serde_json::Value>,
    #[serde(rename = "as")]
    impersonate: Option<String>,
    as_groups: Option<Vec<String>>,
}

/// Where the operator's credential comes from.
pub(crate) enum Auth {
    /// Nothing: the server takes anonymous requests (the sandbox).
    None,
    /// A bearer token.
    Token(String),
    /// A bearer token read from this file, and read again when it changes.
    TokenFile(PathBuf),
}

/// What the guarded client needs from a kubeconfig.
pub(crate) struct Target {
    /// The server URL as written (scheme, host, port, and a path prefix if any).
    pub server: http::Uri,
    pub auth: Auth,
    pub namespace: Option<String>,
}

/// The kubeconfig files to read: the one given, else `$KUBECONFIG` (a path list), else
/// `~/.kube/config`.
fn paths(given: Option<&Path>) -> Vec<PathBuf> {
    if let Some(p) = given {
        return vec![p.to_path_buf()];
    }
    if let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        return std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    vec![home.join(".kube").join("config")]
}

/// Read the kubeconfig and resolve `context` (default: its current context). Several files merge
/// as kubectl merges them: the first to name a context, cluster or user wins.
pub(crate) fn load(given: Option<&Path>, context: Option<&str>) -> Result<Target, String> {
    let mut merged = File::default();
    let mut read_any = false;
    for path in paths(given) {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if given.is_none() && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(format!(
                    "cannot read kubeconfig `{}`: {}",
                    path.display(),
                    e.to_string().to_lowercase()
                ));
            }
        };
        read_any = true;
        let mut file: File = serde_saphyr::from_str(&text).map_err(|e| not_valid(&path, &e))?;
        // As kubectl does, a relative token file is relative to the kubeconfig that names it.
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        for u in file.users.iter_mut().filter_map(|n| n.value.as_mut()) {
            if let Some(f) = u
                .token_file
                .as_mut()
                .filter(|f| Path::new(f.as_str()).is_relative())
            {
                *f = dir.join(&*f).to_string_lossy().into_owned();
            }
        }
        merged.current_context = merged.current_context.or(file.current_context);
        merged.clusters.extend(file.clusters);
        merged.contexts.extend(file.contexts);
        merged.users.extend(file.users);
    }
    if !read_any {
        return Err(
            "no kubeconfig found: pass kubeconfig=, set KUBECONFIG, or create ~/.kube/config"
                .into(),
        );
    }
    resolve(merged, context)
}

/// `server` as it may be quoted in an error: user info and the query replaced.
fn redacted(server: &str) -> String {
    let (head, query) = match server.split_once('?') {
        Some((h, _)) => (h, "?[hidden]"),
        None => (server, ""),
    };
    let (scheme, rest) = head.split_once("://").unwrap_or(("", head));
    let sep = if scheme.is_empty() { "" } else { "://" };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("[hidden]@{host}"),
        None => authority.to_string(),
    };
    format!("{scheme}{sep}{authority}{path}{query}")
}

/// Why a kubeconfig does not parse, by position only: the parser's own message quotes the
/// file's text (a token next to the error) and the values it could not read.
fn not_valid(path: &Path, e: &serde_saphyr::Error) -> String {
    match e.location() {
        Some(l) => format!(
            "kubeconfig `{}` is not valid YAML for a kubeconfig at line {}, column {} (the parser's message is not shown: it can quote credentials)",
            path.display(),
            l.line(),
            l.column()
        ),
        None => format!(
            "kubeconfig `{}` is not valid YAML for a kubeconfig (the parser's message is not shown: it can quote credentials)",
            path.display()
        ),
    }
}

fn find<'a, T>(list: &'a [Named<T>], name: &str) -> Option<&'a T> {
    list.iter()
        .find(|n| n.name == name)
        .and_then(|n| n.value.as_ref())
}

fn resolve(file: File, context: Option<&str>) -> Result<Target, String> {
    let name = context
        .map(str::to_string)
        .or(file.current_context.clone())
        .filter(|c| !c.is_empty())
        .ok_or("the kubeconfig has no current-context; pass context=")?;
    let ctx = find(&file.contexts, &name)
        .ok_or_else(|| format!("the kubeconfig has no context `{name}`"))?;
    let cluster_name = ctx
        .cluster
        .as_deref()
        .ok_or_else(|| format!("context `{name}` names no cluster"))?;
    let cluster = find(&file.clusters, cluster_name).ok_or_else(|| {
        format!(
            "context `{name}` names cluster `{cluster_name}`, which the kubeconfig does not have"
        )
    })?;
    let raw = cluster
        .server
        .as_deref()
        .ok_or_else(|| format!("cluster `{cluster_name}` has no server"))?;
    // A server URL can carry credentials (`http://user:token@host`, a token in the query): it
    // is quoted only with those parts hidden, and user info is refused.
    let shown = redacted(raw);
    let server = shown.as_str();
    let uri: http::Uri = raw.trim_end_matches('/').parse().map_err(|_| {
        format!("cluster `{cluster_name}` has server `{server}`, which is not a URL")
    })?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "cluster `{cluster_name}` has server `{server}` with user info, which kubeleash does not send; put the credential in the context's user"
        ));
    }
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "cluster `{cluster_name}` is served over https (`{server}`), and the in-process binding speaks plain HTTP only for now; run `kubeleash proxy` and point the agent at it"
            ));
        }
        _ => {
            return Err(format!(
                "cluster `{cluster_name}` has server `{server}`, which is not an http URL"
            ));
        }
    }
    if uri.query().is_some() {
        return Err(format!(
            "cluster `{cluster_name}` has server `{server}` with a query, which kubeleash cannot prefix to requests"
        ));
    }
    let user = match ctx.user.as_deref().filter(|u| !u.is_empty()) {
        None => None,
        Some(u) => Some(find(&file.users, u).ok_or_else(|| {
            format!("context `{name}` names user `{u}`, which the kubeconfig does not have")
        })?),
    };
    let auth = match user {
        None => Auth::None,
        Some(u) => {
            let unsupported = [
                (
                    u.client_certificate.is_some() || u.client_certificate_data.is_some(),
                    "client certificates",
                ),
                (u.exec.is_some(), "exec credential plugins"),
                (u.auth_provider.is_some(), "auth providers"),
                (u.username.is_some(), "basic authentication"),
                (
                    u.impersonate.is_some() || u.as_groups.is_some(),
                    "impersonation (`as`)",
                ),
            ];
            if let Some((_, what)) = unsupported.iter().find(|(present, _)| *present) {
                return Err(format!(
                    "the user of context `{name}` authenticates with {what}, which the in-process binding does not support yet (tokens and token files only); run `kubeleash proxy` for this cluster"
                ));
            }
            match (&u.token, &u.token_file) {
                (Some(t), _) if !t.is_empty() => Auth::Token(t.clone()),
                (_, Some(f)) if !f.is_empty() => Auth::TokenFile(PathBuf::from(f)),
                _ => Auth::None,
            }
        }
    };
    Ok(Target {
        server: uri,
        auth,
        namespace: ctx.namespace.clone(),
    })
}
