//! Dialing upstream: the target directly, or the gateway (plain TCP or TLS),
//! and the connector that lets hyper-util's pooled client use both.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::routes::{Kind, Registration, RouteKey, Routes};
use super::traffic::{CountingIo, Route, Traffic};
use crate::config::{ConfigHandle, GatewayConfig, GatewayProtocol};
use crate::rules::normalize_host;

/// Why an upstream connection could not be made. The message names the
/// address and the OS reason only — never a credential.
#[derive(Debug, Clone)]
pub(crate) struct DialError {
    /// `"gateway 127.0.0.1:9"` or `"example.com:80"`.
    pub(crate) what: String,
    pub(crate) timed_out: bool,
    pub(crate) reason: String,
}

impl std::fmt::Display for DialError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot reach {} ({})", self.what, self.reason)
    }
}

impl std::error::Error for DialError {}

/// `io::Error`'s text without the ` (os error N)` suffix.
pub(crate) fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Host as `TcpStream::connect` wants it: IPv6 without brackets.
pub(crate) fn bare_host(host: &str) -> &str {
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// A host ready to go into an authority: IPv6 in brackets.
pub(crate) fn authority_host(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

pub(crate) struct Dialer {
    pub(crate) gateway: GatewayConfig,
    connect_timeout: Duration,
    tls: Option<TlsConnector>,
}

impl Dialer {
    pub(crate) fn new(gateway: GatewayConfig, connect_timeout: Duration) -> Result<Dialer, String> {
        let tls = match gateway.protocol {
            GatewayProtocol::Http => None,
            GatewayProtocol::Https => Some(tls_connector()?),
        };
        Ok(Dialer { gateway, connect_timeout, tls })
    }

    /// `gateway host:port` for messages and 502 bodies; should the host
    /// carry userinfo, it shows as `[redacted]@host`.
    pub(crate) fn gateway_label(&self) -> String {
        let host = match self.gateway.host.rsplit_once('@') {
            Some((_, host)) => format!("[redacted]@{}", authority_host(host)),
            None => authority_host(&self.gateway.host),
        };
        format!("gateway {host}:{}", self.gateway.port)
    }

    async fn tcp(&self, host: &str, port: u16, what: impl Fn() -> String) -> Result<TcpStream, DialError> {
        match tokio::time::timeout(self.connect_timeout, TcpStream::connect((bare_host(host), port))).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => Err(DialError { what: what(), timed_out: false, reason: io_reason(&e) }),
            Err(_) => Err(DialError {
                what: what(),
                timed_out: true,
                reason: format!("timed out after {} s", self.connect_timeout.as_secs_f32()),
            }),
        }
    }

    /// A TCP connection to the target itself.
    pub(crate) async fn target(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        self.tcp(host, port, || format!("{}:{}", authority_host(bare_host(host)), port)).await
    }

    /// A connection to the gateway, TLS when its protocol is https.
    pub(crate) async fn gateway(&self) -> Result<MaybeTls, DialError> {
        let gw = &self.gateway;
        let tcp = self.tcp(&gw.host, gw.port, || self.gateway_label()).await?;
        let Some(tls) = &self.tls else {
            return Ok(MaybeTls::Plain(tcp));
        };
        let name = ServerName::try_from(bare_host(&gw.host).to_string()).map_err(|_| DialError {
            what: self.gateway_label(),
            timed_out: false,
            reason: "invalid TLS server name".into(),
        })?;
        match tokio::time::timeout(self.connect_timeout, tls.connect(name, tcp)).await {
            Ok(Ok(stream)) => Ok(MaybeTls::Tls(Box::new(stream))),
            Ok(Err(e)) => Err(DialError {
                what: self.gateway_label(),
                timed_out: false,
                reason: format!("TLS handshake failed: {}", io_reason(&e)),
            }),
            Err(_) => Err(DialError {
                what: self.gateway_label(),
                timed_out: true,
                reason: format!("TLS handshake timed out after {} s", self.connect_timeout.as_secs_f32()),
            }),
        }
    }
}

fn tls_connector() -> Result<TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A plain or TLS-wrapped TCP stream.
pub(crate) enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTls::Plain(s) => s.is_write_vectored(),
            MaybeTls::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// An upstream connection for a pooled client, counting its wire bytes for
/// the hostname it serves. `proxied` makes hyper-util send absolute-form
/// requests (the gateway) instead of origin-form (direct).
pub(crate) struct Upstream {
    io: CountingIo<MaybeTls>,
    proxied: bool,
    /// A direct connection's place in the route registry (a route change
    /// that sends its host to the gateway replaces the direct pool).
    _registration: Option<Registration>,
}

impl Connection for Upstream {
    fn connected(&self) -> Connected {
        Connected::new().proxy(self.proxied)
    }
}

impl AsyncRead for Upstream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Upstream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.get_ref().is_write_vectored()
    }
}

/// The connector of one pooled client: every connection goes either to the
/// request's own host (direct) or to the gateway. hyper-util pools by the
/// request's scheme and authority, so each connection serves one hostname.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) dialer: Arc<Dialer>,
    pub(crate) via_gateway: bool,
    pub(crate) traffic: Arc<Traffic>,
    pub(crate) routes: Arc<Routes>,
    pub(crate) config: ConfigHandle,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Upstream>;
    type Error = DialError;
    type Future = BoxFuture<Result<TokioIo<Upstream>, DialError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let me = self.clone();
        Box::pin(async move {
            let host = uri.host().unwrap_or_default();
            let hostname = normalize_host(bare_host(host));
            if me.via_gateway {
                let io = me.dialer.gateway().await?;
                let io = CountingIo::upstream(io, me.traffic.counters(&hostname, Route::Gateway));
                return Ok(TokioIo::new(Upstream { io, proxied: true, _registration: None }));
            }
            let port = uri.port_u16().unwrap_or(80);
            let tcp = me.dialer.target(host, port).await?;
            let io = CountingIo::upstream(MaybeTls::Plain(tcp), me.traffic.counters(&hostname, Route::Direct));
            let registration = me.routes.register(&me.config, &hostname, RouteKey::Direct, Kind::Pooled);
            Ok(TokioIo::new(Upstream { io, proxied: false, _registration: registration }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_label_never_shows_userinfo() {
        let label = |host: &str| {
            let gateway = GatewayConfig { protocol: GatewayProtocol::Http, host: host.into(), port: 9 };
            Dialer::new(gateway, Duration::from_secs(1)).map(|d| d.gateway_label()).unwrap_or_default()
        };
        assert_eq!(label("admin:S3CRET@127.0.0.1"), "gateway [redacted]@127.0.0.1:9");
        assert_eq!(label("::1"), "gateway [::1]:9");
        assert_eq!(label("gw.example"), "gateway gw.example:9");
    }
}
