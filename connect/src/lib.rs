//! One way to connect: the operator's kubeconfig turned into kubeleash's upstream client, and
//! the facts every front door (the proxy, the Node and Python bindings) shares.
//!
//! [`Upstream::from_kubeconfig`] reads a kubeconfig with kube-rs and keeps everything kube-rs
//! supports: HTTPS with the kubeconfig's certificate authority, client certificates, bearer
//! tokens and token files (re-read as they rotate), exec credential plugins (run again before
//! their credential expires), `proxy-url` (http and https proxies), `tls-server-name`, and
//! `insecure-skip-tls-verify` only when the kubeconfig says so (with a warning on stderr naming
//! the cluster). [`Upstream::service`] builds kube-rs's client stack, which a `KubeleashLayer`
//! wraps; [`Upstream::client_builder`] gives the same stack as a `kube::client::ClientBuilder`.
//!
//! Errors never carry a credential, nor an exec plugin's command line, environment or output:
//! a failure the operator must look into has a correlation id in its message and the details in
//! [`ConnectError::operator_detail`] (for the operator's log). Errors of the running stack reach
//! the layer as an [`UpstreamError`], whose text names the cluster and has the kubeconfig's
//! secrets removed; [`sanitize`] tells any error twice, to the agent (fixed) and the operator.
//! What the API server answers has the credential's own values (the kubeconfig's token, a token
//! file's current token, a password, a client key, an auth provider's tokens) overwritten with
//! `*`, byte for byte, wherever they appear: an upstream that repeats them gives the agent
//! stars. An exec plugin's credential is kube-rs's alone and not known here; the masker's
//! detectors recognise token shapes.
//!
//! ```no_run
//! use kubeleash_connect::Upstream;
//! use tower::Layer;
//!
//! # async fn run(policy: kubeleash_core::policy::Policy) -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = Upstream::from_kubeconfig(Some("operator.kubeconfig".as_ref()), None).await?;
//! println!("guarding cluster {} at {}", upstream.cluster(), upstream.server());
//! let guarded = kubeleash_tower::KubeleashLayer::new(policy).layer(upstream.service()?);
//! // ... send `http::Request<kube::client::Body>` with path-only targets through `guarded`.
//! # drop(guarded);
//! # Ok(())
//! # }
//! ```
//!
//! # Untrusted input and limits
//!
//! The kubeconfig is the operator's and trusted; what comes back is not. An exec plugin's
//! output, a token file, a server's TLS handshake and its errors can carry credentials or be
//! written by an attacker who controls the upstream: none of it is quoted to the agent (errors
//! are [`sanitize`]d, plugin output never leaves [`ConnectError::operator_detail`]), and a
//! kubeconfig kube-rs cannot use safely (basic authentication, user info in the server URL) is
//! refused. Request bodies the front doors read are capped at the API server's 3 MiB
//! ([`kubeleash_core::body::MAX_BODY_BYTES`], fixed); the other bounds are the tower layer's
//! and the core's (see their "Untrusted input and limits").

use std::error::Error;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use kube::client::ClientBuilder;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use secrecy::ExposeSecret;

mod overwrite;
mod sanitize;

use overwrite::{Overwritten, Secrets};
use sanitize::Scrub;
pub use sanitize::{
    Note, Sanitized, agent_message, chain, correlation_id, escape, id_in, mask, sanitize,
};

/// The request and response body types of [`UpstreamService`] (kube-rs's).
pub use kube::client::{Body, DynBody};

/// A Kubernetes `Status` failure as JSON, the way the API server phrases errors.
///
/// ```
/// let b = kubeleash_connect::status_body(403, "Forbidden", "denied by policy");
/// let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
/// assert_eq!((v["kind"].as_str(), v["code"].as_u64()), (Some("Status"), Some(403)));
/// ```
pub fn status_body(code: u16, reason: &str, message: &str) -> Bytes {
    Bytes::from(kubeleash_core::status::Status::failure(code, reason, message).to_json())
}

/// Why the kubeconfig could not be turned into a client. The message says what was wrong and
/// what to do; it never quotes a credential, the kubeconfig's text, or what an exec plugin was
/// run with or printed. Those are in [`ConnectError::operator_detail`], for the operator's log.
#[derive(thiserror::Error)]
#[error("{message}")]
pub struct ConnectError {
    message: String,
    operator: Option<String>,
}

impl std::fmt::Debug for ConnectError {
    /// The message only: the operator's detail stays out of `Debug` strings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ConnectError").field(&self.message).finish()
    }
}

impl ConnectError {
    fn plain(message: String) -> Self {
        ConnectError {
            message,
            operator: None,
        }
    }

    /// A failure whose details only the operator may see: the message names a correlation id,
    /// the detail (already scrubbed) goes to the operator's log under it.
    fn hidden(message: &str, detail: String) -> Self {
        let id = correlation_id();
        ConnectError {
            message: format!(
                "{message} (correlation id {id}; kubeleash's log has the details for the operator)"
            ),
            operator: Some(format!(
                "kubeleash: [correlation id {id}] {message}: {detail}"
            )),
        }
    }

    /// The details for the operator's log (scrubbed of the kubeconfig's secrets, masked, on one
    /// line), when the message names a correlation id.
    pub fn operator_detail(&self) -> Option<&str> {
        self.operator.as_deref()
    }
}

/// The operator's cluster, as the kubeconfig describes it: ready to build the upstream stack.
#[derive(Clone)]
pub struct Upstream {
    config: kube::Config,
    cluster: Arc<str>,
    server: Arc<str>,
    scrub: Arc<Scrub>,
    /// The credential's own values, overwritten wherever a response carries them.
    secrets: Arc<Secrets>,
    /// Where the user's credential comes from, in the kubeconfig's words (for messages).
    auth: &'static str,
    token_file: Option<Arc<TokenFile>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("cluster", &self.cluster)
            .field("server", &self.server)
            .field("namespace", &self.config.default_namespace)
            .finish_non_exhaustive()
    }
}

impl Upstream {
    /// Read the kubeconfig at `path` (none: `$KUBECONFIG`, a path list merged as kubectl does,
    /// else `~/.kube/config`) and resolve `context` (none: its current context).
    ///
    /// Nothing is sent and no plugin is run yet: [`Upstream::service`] does that.
    pub async fn from_kubeconfig(
        path: Option<&Path>,
        context: Option<&str>,
    ) -> Result<Upstream, ConnectError> {
        let shown = match path {
            Some(p) => format!("kubeconfig `{}`", p.display()),
            None => "the kubeconfig ($KUBECONFIG or ~/.kube/config)".to_string(),
        };
        let kc = match path {
            Some(p) => Kubeconfig::read_from(p),
            None => Kubeconfig::read(),
        }
        .map_err(|e| kubeconfig_error(&shown, e))?;
        Self::from_parsed(kc, &shown, context).await
    }

    /// [`Upstream::from_kubeconfig`] for a kubeconfig given as YAML (or JSON) text. Relative
    /// paths in it (certificate files, token files, plugin commands) are relative to the
    /// working directory.
    pub async fn from_kubeconfig_yaml(
        text: &str,
        context: Option<&str>,
    ) -> Result<Upstream, ConnectError> {
        let shown = "the kubeconfig text";
        let kc = Kubeconfig::from_yaml(text).map_err(|e| kubeconfig_error(shown, e))?;
        Self::from_parsed(kc, shown, context).await
    }

    /// A plain upstream at `url` with no credential and no kubeconfig: the sandbox
    /// (`kubeleash sandbox`), or a test server. The cluster is named `upstream`.
    pub fn from_url(url: &str) -> Result<Upstream, ConnectError> {
        let cluster = "upstream";
        let uri: http::Uri = url.parse().map_err(|_| {
            ConnectError::plain(format!(
                "the upstream `{}` is not a URL; write it as http://host:port",
                escape(url)
            ))
        })?;
        let server = check_server(&uri, cluster)?;
        let mut config = kube::Config::new(uri);
        config.default_retry = false;
        Ok(Upstream {
            config,
            cluster: cluster.into(),
            server: server.into(),
            scrub: Arc::new(Scrub::default()),
            secrets: Arc::default(),
            auth: "none",
            token_file: None,
        })
    }

    /// The pod's own service account, for a front door running in the cluster: the API server
    /// from `KUBERNETES_SERVICE_HOST`/`_PORT`, its CA and the projected token mounted under
    /// `/var/run/secrets/kubernetes.io/serviceaccount` (kube-rs reads the token again as the
    /// kubelet rotates it). The cluster is named `in-cluster`.
    pub fn in_cluster() -> Result<Upstream, ConnectError> {
        let cluster = "in-cluster";
        let mut config = kube::Config::incluster().map_err(|e| {
            ConnectError::plain(format!(
                "not in a cluster with a service account to use ({}); give a kubeconfig",
                escape(&e.to_string())
            ))
        })?;
        config.read_timeout = None;
        config.default_retry = false;
        let server = check_server(&config.cluster_url, cluster)?;
        Ok(Upstream {
            config,
            cluster: cluster.into(),
            server: server.into(),
            scrub: Arc::new(Scrub::default()),
            // The pod's token rotates and kube-rs reads it; the masker's detectors recognise
            // service-account tokens by shape.
            secrets: Arc::default(),
            auth: "service account token",
            token_file: None,
        })
    }

    async fn from_parsed(
        mut kc: Kubeconfig,
        shown: &str,
        context: Option<&str>,
    ) -> Result<Upstream, ConnectError> {
        let context_name = context
            .map(str::to_string)
            .or_else(|| kc.current_context.clone())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                ConnectError::plain(format!(
                    "{shown} has no current-context; name the context to use"
                ))
            })?;
        let ctx = kc
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.as_ref())
            .ok_or_else(|| {
                ConnectError::plain(format!(
                    "{shown} has no context `{context_name}`; name one of its contexts (`kubectl config get-contexts`)"
                ))
            })?;
        let cluster = ctx.cluster.clone();
        let user = ctx.user.clone();
        let info = kc
            .auth_infos
            .iter()
            .find(|a| Some(a.name.as_str()) == user.as_deref())
            .and_then(|a| a.auth_info.as_ref());
        let secrets = info.map(secrets_of).unwrap_or_default();
        let credential = Secrets::new(info.map(credential_of).unwrap_or_default());
        let auth = match info {
            Some(i) if i.username.is_some() || i.password.is_some() => {
                return Err(ConnectError::plain(format!(
                    "the user of context `{context_name}` in {shown} authenticates with a username and password \
                     (basic authentication), which Kubernetes removed in 1.19 and kubeleash does not send; \
                     give it a token, a client certificate or an exec plugin"
                )));
            }
            Some(i) if i.exec.is_some() => "exec plugin",
            Some(i) if i.auth_provider.is_some() => "auth-provider",
            Some(i) if i.token.is_some() || i.token_file.is_some() => "token",
            Some(i) if i.client_certificate.is_some() || i.client_certificate_data.is_some() => {
                "client certificate"
            }
            _ => "none",
        };
        // A token file is read here, not by kube-rs: kube-rs sends its text untrimmed (a
        // trailing newline makes an invalid header), where kubectl trims it.
        let token_file = match info {
            Some(i) if i.token.is_none() => i.token_file.clone(),
            _ => None,
        };
        let token_file = match token_file {
            Some(path) => {
                for a in kc
                    .auth_infos
                    .iter_mut()
                    .filter(|a| Some(a.name.as_str()) == user.as_deref())
                {
                    if let Some(i) = a.auth_info.as_mut() {
                        i.token_file = None;
                    }
                }
                let f = TokenFile::new(path.into());
                f.header().map_err(|m| {
                    ConnectError::plain(format!("{m} (the token file of cluster `{cluster}`)"))
                })?;
                Some(Arc::new(f))
            }
            None => None,
        };
        let options = KubeConfigOptions {
            context: Some(context_name.clone()),
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kc, &options)
            .await
            .map_err(|e| kubeconfig_error(shown, e))?;
        // Watches and followed logs stay open as long as they have something to say; each
        // front door applies its own deadlines.
        config.read_timeout = None;
        // No retries below the layer: the agent's client decides whether to send again, and
        // the record shows each request once, as it was sent.
        config.default_retry = false;
        let server = check_server(&config.cluster_url, &cluster)?;
        if config.accept_invalid_certs {
            eprintln!(
                "kubeleash: warning: the kubeconfig sets insecure-skip-tls-verify for cluster `{cluster}`: \
                 the certificate of {server} is not verified, so anyone on the way can read and change \
                 the traffic and take the credential; set certificate-authority-data instead"
            );
        }
        Ok(Upstream {
            config,
            cluster: cluster.into(),
            server: server.into(),
            scrub: Arc::new(Scrub::new(secrets)),
            secrets: Arc::new(credential),
            auth,
            token_file,
        })
    }

    /// The kubeconfig's name of the cluster (for messages; it is never a credential).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The API server's URL, without any user info or query.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The namespace of the kubeconfig context (`default` if it names none).
    pub fn default_namespace(&self) -> &str {
        &self.config.default_namespace
    }

    /// kube-rs's client stack for this cluster (TLS, the credential and its refresh, the
    /// server's URL put in front of path-only targets), its errors made [`UpstreamError`]s. An
    /// exec plugin runs now, for the first credential.
    pub fn service(&self) -> Result<UpstreamService, ConnectError> {
        let builder =
            ClientBuilder::try_from(self.config.clone()).map_err(|e| self.build_error(&e))?;
        // ClientBuilder keeps its stack to itself: a layer that takes it out.
        let take = Take(Mutex::new(None));
        drop(builder.with_layer(&take));
        let inner = take
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or_else(|| {
                ConnectError::plain(
                    "kube-rs did not hand over its client stack; this is a bug in kubeleash, please report it"
                        .into(),
                )
            })?;
        Ok(UpstreamService {
            inner,
            cluster: Arc::clone(&self.cluster),
            server: Arc::clone(&self.server),
            scrub: Arc::clone(&self.scrub),
            secrets: Arc::clone(&self.secrets),
            token_file: self.token_file.clone(),
        })
    }

    /// [`Upstream::service`] as a `kube::client::ClientBuilder` (default namespace set), for a
    /// front door that sends through a `kube::Client`: `.with_layer(&kubeleash_layer).build()`.
    pub fn client_builder(&self) -> Result<ClientBuilder<UpstreamService>, ConnectError> {
        Ok(ClientBuilder::new(
            self.service()?,
            self.config.default_namespace.clone(),
        ))
    }

    fn build_error(&self, e: &kube::Error) -> ConnectError {
        let detail = self.scrub.clean(&chain(e));
        let cluster = &self.cluster;
        match e {
            kube::Error::Auth(kube::client::AuthError::ReadTokenFile(io, path)) => {
                ConnectError::plain(format!(
                    "cannot read the token file `{}` the kubeconfig names for cluster `{cluster}`: {}; fix the path or the file's permissions",
                    path.display(),
                    io.to_string().to_lowercase()
                ))
            }
            kube::Error::Auth(_) => {
                let what = match self.auth {
                    "exec plugin" => {
                        "from the kubeconfig's exec plugin; the operator should fix the plugin or the user's `exec` entry"
                    }
                    "auth-provider" => {
                        "from the kubeconfig's auth-provider; the operator should log in again or give the user a token or an exec plugin"
                    }
                    _ => "from the kubeconfig's user; the operator should fix the context's user",
                };
                ConnectError::hidden(
                    &format!(
                        "cannot get a credential for cluster `{cluster}` {what}, then connect again"
                    ),
                    detail,
                )
            }
            kube::Error::ProxyProtocolDisabled { .. }
            | kube::Error::ProxyProtocolUnsupported { .. } => ConnectError::plain(format!(
                "the proxy-url of cluster `{cluster}` is not an http:// or https:// proxy, the only kinds kubeleash supports; change or remove it"
            )),
            _ => ConnectError::hidden(
                &format!(
                    "cannot set up TLS for cluster `{cluster}` from the kubeconfig (certificate-authority, client certificate or key); \
                     the operator should check them with `kubectl config view --raw`"
                ),
                detail,
            ),
        }
    }
}

/// Every secret the kubeconfig holds for the user, to remove from error text.
/// The values that are the credential itself (a token, a password, a client key, an auth
/// provider's tokens and secret), to overwrite in responses: not an exec plugin's arguments or
/// environment, which are mostly ordinary words (a region, a cluster name) that responses
/// carry too.
fn credential_of(info: &kube::config::AuthInfo) -> Vec<String> {
    let mut out: Vec<String> = [&info.token, &info.password, &info.client_key_data]
        .into_iter()
        .flatten()
        .map(|s| s.expose_secret().to_string())
        .collect();
    if let Some(p) = &info.auth_provider {
        out.extend(
            p.config
                .iter()
                .filter(|(k, _)| k.contains("token") || k.contains("secret"))
                .map(|(_, v)| v.clone()),
        );
    }
    out
}

fn secrets_of(info: &kube::config::AuthInfo) -> Vec<String> {
    let mut out = Vec::new();
    for s in [&info.token, &info.password, &info.client_key_data]
        .into_iter()
        .flatten()
    {
        out.push(s.expose_secret().to_string());
    }
    if let Some(exec) = &info.exec {
        out.extend(exec.args.iter().flatten().cloned());
        for e in exec.env.iter().flatten() {
            out.extend(e.get("value").cloned());
        }
    }
    if let Some(p) = &info.auth_provider {
        out.extend(p.config.values().cloned());
    }
    out
}

fn kubeconfig_error(shown: &str, e: KubeconfigError) -> ConnectError {
    let m = match e {
        KubeconfigError::FindPath => {
            "no kubeconfig found: pass its path, set KUBECONFIG, or create ~/.kube/config".into()
        }
        KubeconfigError::ReadConfig(io, p) => format!(
            "cannot read kubeconfig `{}`: {}; pass the path of a readable kubeconfig",
            p.display(),
            io.to_string().to_lowercase()
        ),
        KubeconfigError::Parse(_) => format!(
            "{shown} is not valid YAML for a kubeconfig (the parser's message is not shown: it can quote credentials); check it with `kubectl config view`"
        ),
        KubeconfigError::CurrentContextNotSet => {
            format!("{shown} has no current-context; name the context to use")
        }
        KubeconfigError::LoadContext(c) => {
            format!("{shown} has no context `{c}`; name one of its contexts")
        }
        KubeconfigError::LoadClusterOfContext(c) => {
            format!(
                "{shown} has no cluster `{c}`, which its context names; add it or pick another context"
            )
        }
        KubeconfigError::MissingClusterUrl => {
            format!("the cluster in {shown} has no server URL; add `server: https://...`")
        }
        KubeconfigError::ParseClusterUrl(_) => {
            format!("the cluster's server in {shown} is not a URL; write it as `https://host:port`")
        }
        KubeconfigError::ParseProxyUrl(_) => {
            format!("the cluster's proxy-url in {shown} is not a URL; fix or remove it")
        }
        KubeconfigError::LoadCertificateAuthority(d) => {
            format!(
                "the cluster's certificate-authority in {shown} {}",
                load_data(&d)
            )
        }
        KubeconfigError::LoadClientCertificate(d) => {
            format!("the user's client-certificate in {shown} {}", load_data(&d))
        }
        // Nothing of the key's data is quoted (a decoding error names a byte of it).
        KubeconfigError::LoadClientKey(d) => {
            format!("the user's client-key in {shown} {}", load_data(&d))
        }
        KubeconfigError::ParseCertificates(_) => format!(
            "a certificate in {shown} is not PEM; give certificate-authority-data and client-certificate-data as base64 of PEM"
        ),
        other => format!(
            "{shown} cannot be used: {}; fix it and connect again",
            escape(&other.to_string())
        ),
    };
    ConnectError::plain(m)
}

fn load_data(e: &kube::config::LoadDataError) -> String {
    use kube::config::LoadDataError as L;
    match e {
        L::DecodeBase64(_) => "is not valid base64; fix its `-data` field".into(),
        L::ReadFile(io, p) => format!(
            "cannot be read from `{}`: {}; fix the path or the file's permissions",
            p.display(),
            io.to_string().to_lowercase()
        ),
        L::NoBase64DataOrFile => "has neither data nor a file; give one".into(),
    }
}

/// The server URL as messages show it, once it is known to carry no user info or query (they
/// can carry credentials, and are refused without being quoted) and to be http or https.
fn check_server(url: &http::Uri, cluster: &str) -> Result<String, ConnectError> {
    let authority = url.authority().map(|a| a.as_str()).unwrap_or_default();
    if authority.contains('@') {
        return Err(ConnectError::plain(format!(
            "the server URL of cluster `{cluster}` carries user info, which kubeleash does not send (it is not shown here); \
             put the credential in the context's user"
        )));
    }
    if url.query().is_some() {
        return Err(ConnectError::plain(format!(
            "the server URL of cluster `{cluster}` has a query, which kubeleash cannot put in front of requests (it is not shown here); remove it"
        )));
    }
    let scheme = url.scheme_str().unwrap_or_default();
    if !matches!(scheme, "https" | "http") || authority.is_empty() {
        return Err(ConnectError::plain(format!(
            "the server URL of cluster `{cluster}` is not an https:// (or http://) URL with a host; fix its `server`"
        )));
    }
    let path = url.path().trim_end_matches('/');
    Ok(format!("{scheme}://{authority}{path}"))
}

/// kube-rs's stack as `ClientBuilder::try_from` builds it (kube-rs names this type but does not
/// export it).
type GenericService = tower::util::BoxService<
    http::Request<kube::client::Body>,
    http::Response<Box<DynBody>>,
    BoxError,
>;

struct Take(Mutex<Option<GenericService>>);

impl tower::Layer<GenericService> for Take {
    type Service = ();
    fn layer(&self, inner: GenericService) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(inner);
    }
}

/// kube-rs's client stack for the operator's cluster. It takes `http::Request<kube::client::Body>`
/// with path-only targets; its errors are [`UpstreamError`]s, also left in the request's
/// [`Note`] if it carries one.
pub struct UpstreamService {
    inner: GenericService,
    cluster: Arc<str>,
    server: Arc<str>,
    scrub: Arc<Scrub>,
    secrets: Arc<Secrets>,
    token_file: Option<Arc<TokenFile>>,
}

impl std::fmt::Debug for UpstreamService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamService")
            .field("cluster", &self.cluster)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// A bearer token read from a file, read again when the file changes (rotated tokens), trimmed
/// as kubectl trims it.
struct TokenFile {
    path: std::path::PathBuf,
    cached: Mutex<(Option<std::time::SystemTime>, Option<http::HeaderValue>)>,
}

impl TokenFile {
    fn new(path: std::path::PathBuf) -> Self {
        TokenFile {
            path,
            cached: Mutex::new((None, None)),
        }
    }

    fn header(&self) -> Result<http::HeaderValue, String> {
        let unreadable = |e: std::io::Error| {
            format!(
                "cannot read the token file `{}`: {}; fix the path or the file's permissions",
                self.path.display(),
                e.to_string().to_lowercase()
            )
        };
        let modified = std::fs::metadata(&self.path)
            .map_err(unreadable)?
            .modified()
            .ok();
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(m), Some(v)) = (modified, &cached.1)
            && cached.0 == Some(m)
        {
            return Ok(v.clone());
        }
        let text = std::fs::read_to_string(&self.path).map_err(unreadable)?;
        let token = text.trim();
        let mut v = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .ok()
            .filter(|_| !token.is_empty())
            .ok_or_else(|| {
                format!(
                    "the token file `{}` is empty or holds characters an HTTP header cannot carry; write the token alone in it",
                    self.path.display()
                )
            })?;
        v.set_sensitive(true);
        *cached = (modified, Some(v.clone()));
        Ok(v)
    }
}

type BoxError = Box<dyn Error + Send + Sync>;

impl tower::Service<http::Request<kube::client::Body>> for UpstreamService {
    type Response = http::Response<Box<DynBody>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner
            .poll_ready(cx)
            .map_err(|e| Box::new(self.describe(&*e)) as BoxError)
    }

    fn call(&mut self, mut req: http::Request<kube::client::Body>) -> Self::Future {
        let note = req.extensions().get::<Note>().cloned();
        let mut secrets = Arc::clone(&self.secrets);
        if let Some(f) = &self.token_file {
            match f.header() {
                Ok(v) => {
                    // The file's token as it is now (it rotates), overwritten like the rest.
                    if let Some(token) = v.to_str().ok().and_then(|h| h.strip_prefix("Bearer ")) {
                        secrets = Arc::new(self.secrets.with(token));
                    }
                    req.headers_mut().insert(http::header::AUTHORIZATION, v);
                }
                Err(m) => {
                    let u = UpstreamError {
                        text: format!(
                            "the credential for cluster `{}` cannot be read: {}",
                            self.cluster,
                            escape(&m)
                        ),
                    };
                    if let Some(n) = note {
                        n.set(u.to_string());
                    }
                    return Box::pin(std::future::ready(Err(Box::new(u) as BoxError)));
                }
            }
        }
        let call = self.inner.call(req);
        let (cluster, server, scrub) = (
            Arc::clone(&self.cluster),
            Arc::clone(&self.server),
            Arc::clone(&self.scrub),
        );
        Box::pin(async move {
            let resp = call.await.map_err(|e| {
                let u = UpstreamError::new(&cluster, &server, &scrub, &*e);
                if let Some(n) = note {
                    n.set(u.to_string());
                }
                Box::new(u) as BoxError
            })?;
            if secrets.is_empty() {
                return Ok(resp);
            }
            let (parts, body) = resp.into_parts();
            let body: Box<DynBody> = Box::new(Overwritten::new(body, secrets));
            Ok(http::Response::from_parts(parts, body))
        })
    }
}

impl UpstreamService {
    fn describe(&self, e: &(dyn Error + 'static)) -> UpstreamError {
        UpstreamError::new(&self.cluster, &self.server, &self.scrub, e)
    }
}

/// A failure of the upstream stack, in the operator's words: it names the cluster and says what
/// to check; the kubeconfig's secrets are removed and detected secrets masked. It is still the
/// operator's to read (it names the server): give the agent [`agent_message`].
pub struct UpstreamError {
    text: String,
}

impl UpstreamError {
    fn new(cluster: &str, server: &str, scrub: &Scrub, e: &(dyn Error + 'static)) -> Self {
        let detail = scrub.clean(&chain(e));
        let lower = detail.to_lowercase();
        let what = if lower.contains("invalid peer certificate")
            || lower.contains("unknownissuer")
            || lower.contains("notvalidforname")
            || lower.contains("certificate verify failed")
        {
            format!(
                "the API server of cluster `{cluster}` ({server}) presented a certificate the kubeconfig does not trust, \
                 so nothing was sent; check the cluster's certificate-authority(-data) and tls-server-name"
            )
        } else if lower.contains("exec") && lower.contains("auth") {
            format!(
                "the exec credential plugin for cluster `{cluster}` failed; fix the plugin or the user's `exec` entry"
            )
        } else if lower.contains("connection refused") {
            format!(
                "cannot connect to the API server of cluster `{cluster}` at {server} (connection refused); check that it runs and the server URL"
            )
        } else {
            format!("the request to the API server of cluster `{cluster}` ({server}) failed")
        };
        UpstreamError {
            text: format!("{what}: {detail}"),
        }
    }
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::fmt::Debug for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Error for UpstreamError {}
