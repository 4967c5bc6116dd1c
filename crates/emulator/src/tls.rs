//! The protected site over HTTPS, like the real web: a certificate made at
//! start (for `localhost` and `127.0.0.1`), HTTP/1.1 and h2 chosen by ALPN.
//! Browsers keep such connections alive across reloads, which is what the
//! SDK's route changes must cope with.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PublicKeyData};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::util::Body;

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The site's certificate and what a client needs to trust it.
pub(crate) struct SiteTls {
    acceptor: TlsAcceptor,
    /// The certificate, PEM.
    pub(crate) certificate_pem: String,
    /// base64(SHA-256(SubjectPublicKeyInfo)): what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub(crate) spki_sha256: String,
}

impl SiteTls {
    pub(crate) fn generate() -> Result<SiteTls, String> {
        let err = |e: rcgen::Error| format!("cannot make the site's certificate: {e}");
        let key = KeyPair::generate().map_err(err)?;
        let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).map_err(err)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Aluvia emulator site");
        params.distinguished_name = name;
        let cert = params.self_signed(&key).map_err(err)?;
        let spki = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .map_err(|e| format!("TLS setup failed: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(SiteTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certificate_pem: cert.pem(),
            spki_sha256: STANDARD.encode(spki.as_ref()),
        })
    }
}

/// Serves `handler` over TLS on `listener` until `token` is cancelled, in
/// h2 when the client offers it, else HTTP/1.1.
pub(crate) fn serve<F, Fut>(
    listener: TcpListener,
    tls: Arc<SiteTls>,
    token: CancellationToken,
    tracker: TaskTracker,
    handler: F,
) where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    crate::server::accept_loop(listener, token, tracker, move |stream, peer| {
        let handler = handler.clone();
        let acceptor = tls.acceptor.clone();
        async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else {
                return;
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req, peer).await) }
            });
            let io = TokioIo::new(tls);
            if h2 {
                let _ =
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(io, service).await;
            } else {
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            }
        }
    });
}
