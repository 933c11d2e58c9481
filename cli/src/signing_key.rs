//! The recorder's signing key on disk (`--signing-key FILE`), kept like a credential: made on
//! first use with mode 0600, refused when others can read it, and never written anywhere else
//! (not in the record, not in an error, not to the agent). Its public half goes beside it as
//! `FILE` with the extension `.pub` (`session.key` → `session.pub`), which is what a person
//! hands to whoever verifies the record (`kubeleash replay --verify --key session.pub`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kubeleash_core::record::{PublicKey, Signer};

/// Where the public half of the key at `key` goes.
pub(crate) fn public_path(key: &Path) -> PathBuf {
    key.with_extension("pub")
}

/// The key at `path`, made there (with its `.pub` beside it) when there is no file yet, to
/// sign the record at `record`.
pub(crate) fn load_or_create(path: &Path, record: &Path) -> Result<Arc<Signer>, String> {
    let public = public_path(path);
    if same_file(&public, path) {
        return Err(format!(
            "the signing key `{}` would be overwritten by its own public key: name the key file with another extension (e.g. `session.key`)",
            path.display()
        ));
    }
    if same_file(record, path) || same_file(record, &public) {
        return Err(format!(
            "the record `{}` and the signing key `{}` (or its `.pub`) are the same file: the record would hold the key; name two files",
            record.display(),
            path.display()
        ));
    }
    let signer = match std::fs::symlink_metadata(path) {
        Ok(meta) => load(path, &meta)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
        Err(e) => {
            return Err(format!(
                "cannot read the signing key `{}`: {}",
                path.display(),
                e.to_string().to_lowercase()
            ));
        }
    };
    let pem = signer.public_pem();
    match std::fs::read_to_string(&public) {
        Ok(found)
            if PublicKey::from_pem(&found)
                .ok()
                .as_ref()
                .map(PublicKey::key_id)
                == Some(signer.key_id()) => {}
        Ok(_) => {
            return Err(format!(
                "`{}` holds another key than the signing key `{}`: move it away (keep it: it verifies the records that key signed) and start again",
                public.display(),
                path.display()
            ));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&public, &pem).map_err(|e| {
                format!(
                    "cannot write the public key `{}`: {}",
                    public.display(),
                    e.to_string().to_lowercase()
                )
            })?;
        }
        Err(e) => {
            return Err(format!(
                "cannot read the public key `{}`: {}",
                public.display(),
                e.to_string().to_lowercase()
            ));
        }
    }
    Ok(signer)
}

/// Whether `a` and `b` name the same file, existing or not (their folders resolved).
fn same_file(a: &Path, b: &Path) -> bool {
    let resolved = |p: &Path| {
        let name = p.file_name()?.to_owned();
        let dir = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.canonicalize().ok()?,
            _ => std::env::current_dir().ok()?,
        };
        // A link is followed to what it names.
        Some(std::fs::canonicalize(dir.join(&name)).unwrap_or_else(|_| dir.join(name)))
    };
    match (resolved(a), resolved(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn load(path: &Path, meta: &std::fs::Metadata) -> Result<Arc<Signer>, String> {
    use std::os::unix::fs::MetadataExt as _;
    // As ssh does: a private key others can read may already be theirs.
    if !meta.is_file() {
        return Err(format!(
            "the signing key `{}` is not a regular file: name the key file itself",
            path.display()
        ));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "the signing key `{}` can be read or written by others (mode {:o}): `chmod 600 {}`, or make a new key if others may have read it",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the signing key `{}`: {}",
            path.display(),
            e.to_string().to_lowercase()
        )
    })?;
    Signer::from_pem(&text)
        .map(Arc::new)
        .map_err(|e| format!("the signing key `{}` is {e}", path.display()))
}

fn create(path: &Path) -> Result<Arc<Signer>, String> {
    let signer = Signer::generate().map_err(|e| e.to_string())?;
    let pem = signer.private_pem().map_err(|e| e.to_string())?;
    crate::proxy::write_private(path, &pem)?;
    Ok(Arc::new(signer))
}

/// What a verifier needs, for the log of a proxy whose disk nobody reads (a pod's: `kubectl
/// logs` shows it): the public key of the key at `path`, once the recorder has it.
pub(crate) fn announce(path: &Path) {
    let public = public_path(path);
    if let Ok(pem) = std::fs::read_to_string(&public) {
        eprintln!(
            "kubeleash: the record is signed; verify it with `kubeleash replay --verify --key {}` (the key, also here):\n{}",
            public.display(),
            pem.trim_end()
        );
    }
}

/// The public keys a record is verified with (`replay --key FILE`, repeated).
pub(crate) fn public_keys(files: &[PathBuf]) -> Result<Vec<PublicKey>, String> {
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| {
                format!(
                    "cannot read the public key `{}`: {}",
                    f.display(),
                    e.to_string().to_lowercase()
                )
            })?;
            PublicKey::from_pem(&text).map_err(|e| format!("`{}` is {e}", f.display()))
        })
        .collect()
}
