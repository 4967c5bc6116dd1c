//! Listening sockets and the accept loop shared by the three servers.

use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::util::Body;
use crate::EmulatorError;

/// Binds a listener on 127.0.0.1:`port` (0 = OS-assigned). `SO_REUSEADDR` lets
/// the gateway listen again on its port right after a `gatewayDown` fault.
pub(crate) fn bind_loopback(port: u16, server: &'static str) -> Result<TcpListener, EmulatorError> {
    let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
    let err = |source| EmulatorError::Bind { server, addr, source };
    let socket = TcpSocket::new_v4().map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

/// Accepts on `listener` until `token` is cancelled and runs `on_conn` for
/// every connection as a task on `tracker`, cancelled with `token`. The
/// listener is dropped (the port closes) when the loop ends.
pub(crate) fn accept_loop<F, Fut>(listener: TcpListener, token: CancellationToken, tracker: TaskTracker, on_conn: F)
where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let conn_tracker = tracker.clone();
    tracker.spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = token.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(_) => {
                    // Out of descriptors or a connection reset before accept:
                    // back off a little, keep serving.
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(20)) => continue,
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            let token = token.clone();
            let conn = on_conn(stream, peer);
            conn_tracker.spawn(async move {
                tokio::select! {
                    _ = conn => {}
                    _ = token.cancelled() => {}
                }
            });
        }
        drop(listener);
    });
}

/// Serves HTTP/1.1 on `listener` until `token` is cancelled. The accept loop and
/// every connection run on `tracker`; cancelling `token` drops the listener and
/// closes every open connection.
pub(crate) fn serve<F, Fut>(listener: TcpListener, token: CancellationToken, tracker: TaskTracker, handler: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    accept_loop(listener, token, tracker, move |stream, peer| {
        let handler = handler.clone();
        async move {
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req, peer).await) }
            });
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await;
        }
    });
}
