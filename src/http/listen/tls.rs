//! TLS on TCP listeners: the server certificate, reloaded from its files
//! when they change, optional client certificates, and the CN of a
//! verified client certificate.
//!
//! The certificate and key are read again when the mtime or size of
//! either file changes (checked every [`RELOAD_CHECK`]); a pair that does
//! not load (a renewer that has written one file but not yet the other, a
//! key that does not match) keeps the old pair in use and is logged once
//! per change. The client CA file is read at start only.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// How often the certificate files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// The PEM files of the server's TLS configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CAs whose client certificates are accepted; without it clients
    /// are not asked for one. A client may still connect without one:
    /// authentication decides what such a request may do.
    pub client_ca: Option<PathBuf>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What identifies a version of a file: its mtime and size.
type Stamp = Option<(SystemTime, u64)>;

/// The stamps of the certificate and key files.
type Pair = (Stamp, Stamp);

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Reads a certificate chain and its key into a checked pair.
fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let signing = provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| format!("unusable private key {}: {e}", key.display()))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| {
        format!(
            "the key {} does not belong to the certificate {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(pair)
}

/// The server certificate in use, and what is known of its files.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Stamps of (cert, key) when they were loaded, and when a load last
    /// failed (to warn once per change).
    seen: Mutex<(Pair, Option<Pair>)>,
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

impl Reloading {
    /// Loads the pair again if a file changed; true if a new pair is in
    /// use.
    fn check(&self) -> bool {
        let now = (stamp(&self.cert), stamp(&self.key));
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if now == seen.0 {
            return false;
        }
        match load_pair(&self.cert, &self.key) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(pair);
                *seen = (now, None);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                if seen.1 != Some(now) {
                    seen.1 = Some(now);
                    tracing::warn!(error = %e, "TLS certificate not reloaded: keeping the one in use");
                }
                false
            }
        }
    }
}

/// A TLS acceptor for `files` (ALPN `h2` and `http/1.1`), and a task that
/// reloads its certificate when the files change (run it; it never ends).
pub fn acceptor(
    files: &TlsFiles,
) -> io::Result<(TlsAcceptor, impl Future<Output = ()> + Send + 'static)> {
    let invalid = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
    let pair = load_pair(&files.cert, &files.key).map_err(invalid)?;
    let resolver = Arc::new(Reloading {
        cert: files.cert.clone(),
        key: files.key.clone(),
        current: RwLock::new(Arc::new(pair)),
        seen: Mutex::new(((stamp(&files.cert), stamp(&files.key)), None)),
    });
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| invalid(format!("cannot read {}: {e}", ca.display())))?
            {
                let cert =
                    cert.map_err(|e| invalid(format!("cannot read {}: {e}", ca.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| invalid(format!("bad CA certificate in {}: {e}", ca.display())))?;
            }
            if roots.is_empty() {
                return Err(invalid(format!("no certificate in {}", ca.display())));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| invalid(format!("client CAs {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let reload = async move {
        let mut tick = tokio::time::interval(RELOAD_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let r = resolver.clone();
            let _ = tokio::task::spawn_blocking(move || r.check()).await;
        }
    };
    Ok((TlsAcceptor::from(Arc::new(config)), reload))
}

/// The subject CN of a verified client certificate (the leaf).
pub fn client_cn(conn: &rustls::ServerConnection) -> Option<String> {
    let leaf = conn.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}
