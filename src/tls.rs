//! HTTPS: `serve --tls-cert FILE --tls-key FILE`. rustls on the ring
//! provider, TLS 1.2 and 1.3; the certificate (a chain, leaf first) and key
//! (PKCS#8, PKCS#1 RSA or SEC1 EC) are PEM files, read again on SIGHUP and
//! whenever either file changes (certbot and cert-manager renew in place),
//! so a renewal needs no restart. A reload that fails keeps serving the pair
//! that works and logs why. Connections already open keep their session.
//!
//! [`TlsListener`] is what `axum::serve` accepts from: the TCP accept loop
//! runs apart from the handshakes, each in a task of its own with a
//! deadline, so a client that opens a connection and says nothing holds
//! up nobody else's.
//!
//! This module owns the TLS configuration, its reloading and the accept
//! loop; it must not know what is served over it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at most; beyond it, new connections wait in the
/// kernel's backlog.
const HANDSHAKES_MAX: usize = 256;
/// How often the files are looked at for a renewal.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// The certificate and key files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{path} holds no certificate (PEM \"BEGIN CERTIFICATE\")")]
    NoCertificate { path: String },
    #[error("the key in {path} cannot sign: {reason}")]
    Key { path: String, reason: String },
    #[error("the key in {key} is not the key of the certificate in {cert}")]
    Mismatch { cert: String, key: String },
    #[error("configuring TLS: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads and checks a certificate chain and its key.
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let shown = |path: &Path| path.display().to_string();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| TlsError::File { path: shown(&files.cert), reason: error.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: shown(&files.cert) });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|error| TlsError::File { path: shown(&files.key), reason: error.to_string() })?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|error| TlsError::Key { path: shown(&files.key), reason: error.to_string() })?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|_| TlsError::Mismatch { cert: shown(&files.cert), key: shown(&files.key) })?;
    Ok(Arc::new(certified))
}

/// The pair being served, replaced whole when a reload succeeds.
#[derive(Debug)]
pub struct Certificates {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when last read.
    stamps: std::sync::Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|metadata| metadata.modified()).ok()
}

impl Certificates {
    pub fn open(files: TlsFiles) -> Result<Arc<Certificates>, TlsError> {
        let stamps = (modified(&files.cert), modified(&files.key));
        let current = load(&files)?;
        Ok(Arc::new(Certificates {
            files,
            current: RwLock::new(current),
            stamps: std::sync::Mutex::new(stamps),
        }))
    }

    /// Reads the files again; on failure the pair served stays.
    pub fn reload(&self, why: &str) {
        let stamps = (modified(&self.files.cert), modified(&self.files.key));
        *self.stamps.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = stamps;
        match load(&self.files) {
            Ok(pair) => {
                *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = pair;
                tracing::info!(why, cert = %self.files.cert.display(), "TLS certificate reloaded");
            }
            Err(error) => {
                tracing::warn!(why, %error, "TLS certificate reload failed; still serving the previous one");
            }
        }
    }

    /// Whether either file changed since it was last read.
    fn changed(&self) -> bool {
        let now = (modified(&self.files.cert), modified(&self.files.key));
        *self.stamps.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) != now
    }

    /// The rustls configuration that serves whatever pair is current.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Reloads on SIGHUP and when a file changes, until `stopping`.
    pub async fn watch(self: Arc<Self>, mut stopping: tokio::sync::watch::Receiver<bool>) {
        #[cfg(unix)]
        let mut hangups =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut ticks = tokio::time::interval(WATCH_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hangups.as_mut() {
                    Some(signal) => signal.recv().await,
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<Option<()>>();
            tokio::select! {
                _ = hangup => self.reload("SIGHUP"),
                _ = ticks.tick() => {
                    if self.changed() {
                        self.reload("the files changed");
                    }
                }
                () = crate::stop::until_stopped(&mut stopping) => return,
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone())
    }
}

/// Connections whose handshake is done, for `axum::serve`.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Accepts on `listener`, handshaking each connection in a task of its
    /// own.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, ready) = tokio::sync::mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, as
                        // axum's own loop does, rather than spin.
                        tracing::warn!(%error, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if sender.is_closed() {
                    return;
                }
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept loop never ends while this listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
