//! The credential the layer sets on every request it forwards. It never appears in a `Debug`
//! string, a log line, a record or an error.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;

/// Where the upstream credential comes from.
#[derive(Clone, Default)]
pub struct Credential {
    source: Source,
}

#[derive(Clone, Default)]
enum Source {
    /// The inner service authenticates (kube-rs's own stack built from a kubeconfig).
    #[default]
    Inner,
    Token(HeaderValue),
    File(Arc<TokenFile>),
}

struct TokenFile {
    path: PathBuf,
    cached: Mutex<Cached>,
}

struct Cached {
    value: Option<HeaderValue>,
    modified: Option<SystemTime>,
    checked: Option<Instant>,
}

/// How often a token file is checked for rotation.
const RECHECK: Duration = Duration::from_secs(1);

/// Why a credential could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The token holds characters an HTTP header cannot carry.
    #[error(
        "the token is not valid in an HTTP header (it has control characters or non-ASCII bytes)"
    )]
    InvalidToken,
    /// The token file cannot be read.
    #[error("cannot read token file `{path}`: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

fn bearer(token: &str) -> Result<HeaderValue, CredentialError> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| CredentialError::InvalidToken)?;
    v.set_sensitive(true);
    Ok(v)
}

impl Credential {
    /// Leave authentication to the inner service: kube-rs's client stack, built from the
    /// operator's kubeconfig (client certificates, tokens, exec plugins, refresh).
    pub fn inner() -> Self {
        Credential {
            source: Source::Inner,
        }
    }

    /// A bearer token.
    ///
    /// ```
    /// let c = kubeleash_tower::Credential::token("s3cr3t")?;
    /// assert!(!format!("{c:?}").contains("s3cr3t"));
    /// # Ok::<(), kubeleash_tower::CredentialError>(())
    /// ```
    pub fn token(token: &str) -> Result<Self, CredentialError> {
        Ok(Credential {
            source: Source::Token(bearer(token)?),
        })
    }

    /// A bearer token read from a file, and read again when the file changes (projected
    /// service account tokens rotate).
    pub fn token_file(path: impl AsRef<Path>) -> Result<Self, CredentialError> {
        let file = TokenFile {
            path: path.as_ref().to_path_buf(),
            cached: Mutex::new(Cached {
                value: None,
                modified: None,
                checked: None,
            }),
        };
        file.current()?;
        Ok(Credential {
            source: Source::File(Arc::new(file)),
        })
    }

    /// The `Authorization` value to set, or `None` when the inner service sets it.
    pub(crate) fn header(&self) -> Result<Option<HeaderValue>, CredentialError> {
        match &self.source {
            Source::Inner => Ok(None),
            Source::Token(v) => Ok(Some(v.clone())),
            Source::File(f) => f.current().map(Some),
        }
    }
}

impl TokenFile {
    fn current(&self) -> Result<HeaderValue, CredentialError> {
        let err = |e: std::io::Error| CredentialError::File {
            path: self.path.display().to_string(),
            reason: e.to_string().to_lowercase(),
        };
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = c.checked.is_some_and(|t| t.elapsed() < RECHECK);
        if let (true, Some(v)) = (fresh, &c.value) {
            return Ok(v.clone());
        }
        let modified = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(err)?;
        c.checked = Some(Instant::now());
        if let (Some(v), Some(m)) = (&c.value, c.modified)
            && m == modified
        {
            return Ok(v.clone());
        }
        let token = std::fs::read_to_string(&self.path).map_err(err)?;
        let v = bearer(&token)?;
        c.value = Some(v.clone());
        c.modified = Some(modified);
        Ok(v)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Source::Inner => f.write_str("Credential(from the inner service)"),
            Source::Token(_) => f.write_str("Credential(bearer token, redacted)"),
            Source::File(t) => write!(f, "Credential(token file {}, redacted)", t.path.display()),
        }
    }
}
