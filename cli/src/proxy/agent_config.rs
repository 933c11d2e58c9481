//! The agent's kubeconfig: the proxy's URL, the CA that vouches for it (HTTPS), and the agent's
//! own bearer (the proxy's token, or a file holding its OIDC token), never a credential of the
//! operator's.

use std::io::Write;
use std::path::Path;

use base64::Engine;

/// How the agent proves itself to the proxy.
pub enum AgentAuth<'a> {
    /// Nothing (the caller adds a credential of its own).
    None,
    /// The proxy's token. For an `https` server it is the user's `token`, which client-go sends
    /// as `Authorization: Bearer` on every request. For a plain `http` one (`--plain-http`) it
    /// is the last segment of the server URL: client-go reads a kubeconfig's user only for an
    /// `https` server, but puts the server URL's path in front of each request's path (all but
    /// `kubectl get --raw`, which replaces the path whole).
    ProxyToken(&'a str),
    /// A file kubectl reads a bearer token from (`tokenFile`): an OIDC token.
    TokenFile(&'a Path),
}

/// Whether `server` is an `https` URL, where client-go sends the user's credential.
pub fn is_https(server: &str) -> bool {
    server
        .get(..8)
        .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
}

/// The kubeconfig text; `ca_pem`, when given, is the CA (PEM) the server's certificate must
/// chain to. Every value is written as a JSON string, which YAML reads back verbatim, so no
/// value can add keys.
pub fn render(server: &str, namespace: &str, ca_pem: Option<&str>, auth: AgentAuth<'_>) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut server = server.trim_end_matches('/').to_string();
    let user = match auth {
        AgentAuth::None => "  user: {}\n".to_string(),
        AgentAuth::ProxyToken(t) if is_https(&server) => {
            format!("  user:\n    token: {}\n", q(t))
        }
        AgentAuth::ProxyToken(t) => {
            server = format!("{server}/{t}");
            "  user: {}\n".to_string()
        }
        AgentAuth::TokenFile(f) => {
            format!("  user:\n    tokenFile: {}\n", q(&f.display().to_string()))
        }
    };
    let ca = ca_pem
        .map(|pem| {
            format!(
                "    certificate-authority-data: {}\n",
                q(&base64::engine::general_purpose::STANDARD.encode(pem))
            )
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubeleash\n  cluster:\n    server: {}\n{ca}contexts:\n- name: kubeleash\n  context:\n    cluster: kubeleash\n    user: agent\n    namespace: {}\ncurrent-context: kubeleash\nusers:\n- name: agent\n{user}",
        q(&server),
        q(namespace)
    )
}

/// Write `text` to `path` readable by its owner only (0600), replacing the file whole: it is
/// written to a new file beside it, then renamed over it, so no reader ever sees a file with
/// wider permissions or half the text.
pub fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |what: &str, e: std::io::Error| {
        format!(
            "cannot {what} `{}`: {}",
            path.display(),
            e.to_string().to_lowercase()
        )
    };
    let name = path
        .file_name()
        .ok_or_else(|| format!("`{}` is not a file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fail("write", e))?;
    let written = f
        .write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| fail("write", e));
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path).map_err(|e| fail("write", e)))
    {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn values_cannot_add_keys_and_the_file_is_private() {
        let text = render(
            "http://127.0.0.1:1\n    token: x/",
            "dev\"\nx: y",
            None,
            AgentAuth::ProxyToken("kubeleash-ab"),
        );
        let v: serde_json::Value = parse(&text);
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "http://127.0.0.1:1\n    token: x/kubeleash-ab"
        );
        assert_eq!(v["contexts"][0]["context"]["namespace"], "dev\"\nx: y");
        assert!(
            v["users"][0]["user"]
                .get("token")
                .is_none_or(|t| t.is_null())
        );
        let dir =
            std::env::temp_dir().join(format!("kubeleash-agent-config-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("agent.kubeconfig");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, &text).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            1,
            "no temp file left"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn over_https_the_token_is_the_users_and_the_ca_is_in_the_cluster() {
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let text = render(
            "https://127.0.0.1:1/",
            "dev",
            Some(pem),
            AgentAuth::ProxyToken("kubeleash-ab\"\n  x: y"),
        );
        let v = parse(&text);
        assert_eq!(v["clusters"][0]["cluster"]["server"], "https://127.0.0.1:1");
        let ca = v["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap();
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .unwrap();
        assert_eq!(ca, pem.as_bytes());
        assert_eq!(v["users"][0]["user"]["token"], "kubeleash-ab\"\n  x: y");
        assert!(v["users"][0]["user"].get("x").is_none_or(|x| x.is_null()));
        // HTTPS is recognised whatever its case; plain HTTP keeps the token in the path.
        assert!(is_https("HTTPS://127.0.0.1:1") && !is_https("http://127.0.0.1:1"));
        let v = parse(&render(
            "http://127.0.0.1:1",
            "dev",
            None,
            AgentAuth::ProxyToken("kubeleash-ab"),
        ));
        assert_eq!(
            v["clusters"][0]["cluster"]["server"],
            "http://127.0.0.1:1/kubeleash-ab"
        );
        assert!(
            v["users"][0]["user"]
                .get("token")
                .is_none_or(|t| t.is_null())
        );
    }

    /// The kubeconfig is YAML of JSON scalars: read it back with kube's own parser.
    fn parse(text: &str) -> serde_json::Value {
        let kc: kube::config::Kubeconfig = kube::config::Kubeconfig::from_yaml(text).unwrap();
        serde_json::to_value(kc).unwrap()
    }
}
