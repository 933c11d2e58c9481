//! The proxy's own TLS. At start it makes a fresh CA and, signed by it, a serving certificate
//! for the listen address, in memory: the CA's certificate goes into the agent's kubeconfig
//! (`certificate-authority-data`), its private key is dropped as soon as the serving
//! certificate is signed and never written anywhere, so no one can mint another certificate
//! this proxy's agents trust. The serving key lives in memory while the proxy runs.
//!
//! Why TLS on loopback: client-go (so kubectl) sends a kubeconfig's user credential only to an
//! `https` server. Over plain HTTP the agent kubeconfig has to carry the proxy's token as the
//! server URL's path, which `kubectl get --raw PATH` drops; over HTTPS it is `user.token`, sent
//! as `Authorization: Bearer` on every request, and the token never crosses loopback in clear.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::TlsAcceptor;

/// What a proxy serving HTTPS holds: the acceptor (serving certificate and key) and the CA's
/// certificate for its agents.
#[derive(Clone)]
pub struct ServingTls {
    pub acceptor: TlsAcceptor,
    /// The CA's certificate, PEM: public, for the agent's kubeconfig.
    pub ca_pem: String,
    /// With an operator's certificate files: what reads them again when they change.
    pub files: Option<Arc<CertFiles>>,
}

/// An operator's certificate and key files, served by every new connection as they are now:
/// [`CertFiles::reload`] reads them again (cert-manager renews a Secret the kubelet then
/// updates in the pod), and a pair that does not load leaves the one in service.
pub struct CertFiles {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    serving: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl std::fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        write!(f, "CertFiles({})", self.cert.display())
    }
}

impl CertFiles {
    /// The files this serves.
    pub fn paths(&self) -> [&std::path::Path; 2] {
        [&self.cert, &self.key]
    }

    /// Read the files again; on success new connections get the new certificate. The error
    /// says what is wrong with the files (never the key's bytes).
    pub fn reload(&self) -> Result<(), String> {
        let (certified, _) = load(&self.cert, &self.key)?;
        *self.serving.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(certified);
        Ok(())
    }
}

impl rustls::server::ResolvesServerCert for CertFiles {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(Arc::clone(
            &self.serving.read().unwrap_or_else(|p| p.into_inner()),
        ))
    }
}

/// The certificate chain in `cert` with the key in `key`, checked to belong together, and the
/// chain's last certificate (what agents trust) as PEM.
fn load(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(rustls::sign::CertifiedKey, String), String> {
    use rustls::pki_types::pem::PemObject;
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p).map_err(|e| {
            format!(
                "cannot read the {what} `{}`: {}",
                p.display(),
                e.to_string().to_lowercase()
            )
        })
    };
    let pem = read("certificate file", cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| format!("`{}` is not a PEM certificate chain", cert.display()))?;
    let Some(last) = chain.last() else {
        return Err(format!("`{}` holds no certificate", cert.display()));
    };
    let ca_pem = pem_of(last);
    let key_pem = read("key file", key)?;
    // Never the key's bytes in an error.
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| format!("`{}` is not a PEM private key", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified =
        rustls::sign::CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
            format!(
                "cannot serve `{}` with the key in `{}`: {}",
                cert.display(),
                key.display(),
                e.to_string().to_lowercase()
            )
        })?;
    Ok((certified, ca_pem))
}

/// How long the certificates are valid. The CA's key exists only until the serving certificate
/// is signed, so nothing can be signed by it later; the bound is for clients that check it.
const VALID_FOR: time::Duration = time::Duration::days(3650);

/// The CA, and the serving certificate for `addr`: an IP SAN for its address, and for
/// 127.0.0.1, ::1 and the DNS name `localhost` (the names a client may use for loopback).
pub fn generate(addr: SocketAddr) -> Result<ServingTls, String> {
    let fail = |what: &str, e: rcgen::Error| format!("cannot make the proxy's {what}: {e}");
    let now = time::OffsetDateTime::now_utc();
    // A little in the past, for clients whose clock is a bit behind.
    let not_before = now - time::Duration::hours(1);
    let not_after = now + VALID_FOR;

    // A name of its own for every CA: a client holding an older proxy's CA (a stale kubeconfig)
    // then finds no issuer by that name, and says the authority is unknown.
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce)
        .map_err(|e| format!("cannot make the proxy's CA: no randomness ({e})"))?;
    let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(
        DnType::CommonName,
        format!("kubeleash proxy CA {nonce} ({addr})"),
    );
    ca.distinguished_name
        .push(DnType::OrganizationName, "kubeleash");
    // It signs the one serving certificate and nothing below that.
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = not_before;
    ca.not_after = not_after;
    let ca_key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
    let ca_cert = ca
        .self_signed(&ca_key)
        .map_err(|e| fail("CA certificate", e))?;

    let mut leaf = CertificateParams::default();
    leaf.distinguished_name = rcgen::DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, format!("kubeleash proxy {addr}"));
    leaf.subject_alt_names = san(addr.ip());
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = not_before;
    leaf.not_after = not_after;
    let leaf_key = KeyPair::generate().map_err(|e| fail("serving key", e))?;
    let leaf_cert = {
        // The CA's key goes with the issuer at the end of this block.
        let issuer = Issuer::new(ca, ca_key);
        leaf.signed_by(&leaf_key, &issuer)
            .map_err(|e| fail("serving certificate", e))?
    };

    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone()];
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("cannot set up TLS with the serving certificate: {e}"))?;
    // HTTP/1.1 only: the proxy speaks nothing else (exec, attach and port-forward upgrade it).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServingTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        ca_pem: ca_cert.pem(),
        files: None,
    })
}

/// Serve the certificate chain in `cert` (PEM, the serving certificate first) with the key in
/// `key` (PEM), as an operator's own CA or cert-manager issued them: what a proxy that agents
/// reach over the network serves, so every replica and restart presents a certificate the
/// agents already trust. The chain's last certificate is the one agents are told to trust.
pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> Result<ServingTls, String> {
    let (certified, ca_pem) = load(cert, key)?;
    let files = Arc::new(CertFiles {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        serving: std::sync::RwLock::new(Arc::new(certified)),
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&files) as Arc<dyn rustls::server::ResolvesServerCert>);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(ServingTls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        ca_pem,
        files: Some(files),
    })
}

fn pem_of(der: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The names the serving certificate is good for.
fn san(ip: IpAddr) -> Vec<SanType> {
    let mut ips = vec![
        ip,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];
    ips.dedup();
    let mut out: Vec<SanType> = ips.into_iter().map(SanType::IpAddress).collect();
    if let Ok(name) = "localhost".to_string().try_into() {
        out.push(SanType::DnsName(name));
    }
    out
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
    use rustls::pki_types::ServerName;
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A client that trusts `ca_pem` (and nothing else) for `name`: whether the handshake with
    /// `tls` succeeds.
    async fn handshake(tls: &ServingTls, ca_pem: &str, name: &str) -> Result<(), String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tls.acceptor.clone();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            if let Ok(mut s) = acceptor.accept(s).await {
                let mut b = [0u8; 4];
                let _ = s.read_exact(&mut b).await;
                let _ = s.write_all(&b).await;
                let _ = s.shutdown().await;
            }
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(name.to_string()).unwrap();
        let result = async {
            let mut s = connector
                .connect(name, tcp)
                .await
                .map_err(|e| e.to_string())?;
            s.write_all(b"ping").await.map_err(|e| e.to_string())?;
            let mut b = [0u8; 4];
            s.read_exact(&mut b).await.map_err(|e| e.to_string())?;
            assert_eq!(&b, b"ping");
            Ok(())
        }
        .await;
        let _ = server.await;
        result
    }

    #[tokio::test]
    async fn the_serving_certificate_is_good_for_loopback_names_under_its_ca_only() {
        let tls = generate("127.0.0.1:8001".parse().unwrap()).unwrap();
        assert!(tls.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!tls.ca_pem.contains("PRIVATE KEY"), "{}", tls.ca_pem);
        for name in ["127.0.0.1", "localhost", "::1"] {
            handshake(&tls, &tls.ca_pem, name)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // Not for another name.
        let err = handshake(&tls, &tls.ca_pem, "evil.example")
            .await
            .unwrap_err();
        assert!(err.contains("certificate"), "{err}");
        // Another proxy's CA (every start makes a new one) is not trusted.
        let other = generate("127.0.0.1:8001".parse().unwrap()).unwrap();
        assert_ne!(other.ca_pem, tls.ca_pem);
        let err = handshake(&tls, &other.ca_pem, "127.0.0.1")
            .await
            .unwrap_err();
        assert!(err.contains("UnknownIssuer"), "{err}");
    }
}
