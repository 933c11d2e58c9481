//! Talking to `kubeleash proxy` by hand, over HTTPS (its default) or plain HTTP (`--plain-http`,
//! and the sandbox): a blocking connection that reads and writes bytes as they are, so a test can
//! send malformed, slow or partial requests.
//!
//! The proxy makes a new CA at every start and writes it into the agent's kubeconfig; a test
//! registers it ([`trust`]) under the proxy's address, and [`connect`] trusts exactly that CA for
//! that address (no system roots, no other proxy's CA).

#![allow(dead_code, reason = "each test binary uses a part")]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// The CA (PEM) of each proxy the test started, by `HOST:PORT`.
fn cas() -> &'static Mutex<HashMap<String, String>> {
    static CAS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    CAS.get_or_init(Mutex::default)
}

/// `HOST:PORT` of a URL (`https://127.0.0.1:1234/x` -> `127.0.0.1:1234`).
pub fn addr_of(url: &str) -> &str {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    rest.split('/').next().unwrap()
}

/// Trust `ca_pem` for the server at `url`'s address.
pub fn trust(url: &str, ca_pem: &str) {
    cas()
        .lock()
        .unwrap()
        .insert(addr_of(url).to_string(), ca_pem.to_string());
}

/// The CA (PEM) in a kubeconfig's `certificate-authority-data`, if it has one.
pub fn ca_of_kubeconfig(text: &str) -> Option<String> {
    let data = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data: "))?;
    let data = serde_json::from_str::<String>(data).unwrap_or_else(|_| data.to_string());
    let pem = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    Some(String::from_utf8(pem).unwrap())
}

/// The `server:` of a kubeconfig.
pub fn server_of_kubeconfig(text: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .map(|s| serde_json::from_str::<String>(s).unwrap_or_else(|_| s.to_string()))
        .expect("the kubeconfig names a server")
}

/// The proxy's token in a kubeconfig it wrote: the user's `token` (HTTPS), or the last
/// segment of the server URL (`--plain-http`).
pub fn token_of_kubeconfig(text: &str) -> Option<String> {
    let by_user = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .map(|t| serde_json::from_str::<String>(t).unwrap());
    by_user.or_else(|| {
        server_of_kubeconfig(text)
            .rsplit('/')
            .next()
            .filter(|t| t.starts_with("kubeleash-"))
            .map(str::to_string)
    })
}

/// A rustls client that trusts `ca_pem` alone.
pub fn client_config(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// One connection, plain or TLS.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Conn {
    /// The TCP socket under it.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref(),
        }
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        self.tcp().set_read_timeout(d)
    }

    /// Read exactly `buf.len()` bytes of what the server already sent, after a write failed
    /// (the server answered early and closed): over TLS, the records still to be sent are left
    /// unsent, where a plain read would try to send them first and fail again.
    pub fn read_exact_received(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let s = match self {
            Conn::Plain(s) => return s.read_exact(buf),
            Conn::Tls(s) => s,
        };
        let mut filled = 0;
        while filled < buf.len() {
            match s.conn.reader().read(&mut buf[filled..]) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => {
                    filled += n;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if s.conn.read_tls(&mut s.sock)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            s.conn
                .process_new_packets()
                .map_err(std::io::Error::other)?;
        }
        Ok(())
    }

    /// Finish the TLS handshake now (it otherwise happens at the first read or write).
    pub fn handshake(&mut self) -> std::io::Result<()> {
        if let Conn::Tls(s) = self {
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock)?;
            }
        }
        Ok(())
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// A TLS connection to `addr` that trusts `ca_pem` for the name `name`.
pub fn connect_tls(addr: &str, name: &str, ca_pem: &str) -> Conn {
    let tcp = TcpStream::connect(addr).unwrap();
    let name = ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(client_config(ca_pem), name).unwrap();
    Conn::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)))
}

/// A connection to the server of `url`: TLS for `https://` (trusting the CA [`trust`] has for
/// its address), plain for `http://`.
pub fn connect(url: &str) -> Conn {
    let addr = addr_of(url);
    if url.starts_with("https://") {
        let ca = cas()
            .lock()
            .unwrap()
            .get(addr)
            .cloned()
            .unwrap_or_else(|| panic!("no CA registered for {addr}"));
        let host = addr.rsplit_once(':').unwrap().0;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        connect_tls(addr, host, &ca)
    } else {
        Conn::Plain(TcpStream::connect(addr).unwrap())
    }
}
