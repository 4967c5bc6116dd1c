//! The engine's side of a browser in its own network namespace: the one way
//! out (to the local proxy) and the one way in (the CDP endpoint, for the
//! owner's processes only).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::netns::Netns;
use crate::log::{Level, Logger};
use crate::proxy::same_user;

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Relays running for one browser; stopped (and awaited) by [`Isolation::stop`],
/// cancelled when dropped.
pub struct Isolation {
    netns: Arc<Netns>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    logger: Arc<Logger>,
}

/// Where an accepted connection is relayed to.
#[derive(Clone, Copy)]
enum Dial {
    /// An address on the host (the local proxy).
    Host(SocketAddr),
    /// An address inside the namespace (Chromium's DevTools port).
    Inside(SocketAddr),
}

impl Isolation {
    /// Listen on `127.0.0.1:proxy_port` inside the namespace and forward every
    /// connection to the local proxy at the same address on the host. Only
    /// Chromium (and the factory) live in the namespace, so nobody else can
    /// connect there.
    pub fn start(netns: Netns, proxy_port: u16, logger: Arc<Logger>) -> io::Result<Isolation> {
        let iso =
            Isolation { netns: Arc::new(netns), cancel: CancellationToken::new(), tracker: TaskTracker::new(), logger };
        let proxy = SocketAddr::V4(SocketAddrV4::new(LOOPBACK, proxy_port));
        let inside = socket_in(&iso.netns)?;
        inside.set_reuseaddr(true)?;
        inside.bind(proxy)?;
        iso.serve(inside.listen(1024)?, false, Dial::Host(proxy));
        Ok(iso)
    }

    /// Serve Chromium's DevTools port (inside) on a fresh port of the host's
    /// 127.0.0.1, to processes of this user only. Returns that port.
    pub async fn serve_cdp(&self, chromium_port: u16) -> io::Result<u16> {
        let listener = TcpListener::bind((LOOPBACK, 0)).await?;
        let port = listener.local_addr()?.port();
        self.serve(listener, true, Dial::Inside(SocketAddr::V4(SocketAddrV4::new(LOOPBACK, chromium_port))));
        Ok(port)
    }

    fn serve(&self, listener: TcpListener, owner_only: bool, dial: Dial) {
        let (cancel, tracker) = (self.cancel.clone(), self.tracker.clone());
        let netns = Arc::clone(&self.netns);
        let logger = Arc::clone(&self.logger);
        self.tracker.spawn(async move {
            let Ok(local) = listener.local_addr() else { return };
            loop {
                let (stream, peer) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        // EMFILE and the like: let the moment pass.
                        Err(_) => { tokio::time::sleep(std::time::Duration::from_millis(10)).await; continue }
                    },
                };
                // Another user's process is closed unanswered.
                if owner_only && same_user(peer, local) == Some(false) {
                    if logger.enabled(Level::Debug) {
                        logger.debug(format!("cdp: refused a connection from {peer}: another user's process"));
                    }
                    continue;
                }
                let (netns, cancel) = (Arc::clone(&netns), cancel.clone());
                tracker.spawn(async move {
                    let upstream = match dial {
                        Dial::Host(to) => TcpStream::connect(to).await,
                        Dial::Inside(to) => match socket_in(&netns) {
                            Ok(socket) => socket.connect(to).await,
                            Err(e) => Err(e),
                        },
                    };
                    if let Ok(upstream) = upstream {
                        relay(stream, upstream, cancel).await;
                    }
                });
            }
        });
    }

    /// Stop listening, close every relayed connection, and wait for them.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn socket_in(netns: &Netns) -> io::Result<TcpSocket> {
    let std = netns.socket()?;
    std.set_nonblocking(true)?;
    Ok(TcpSocket::from_std_stream(std))
}

async fn relay(mut a: TcpStream, mut b: TcpStream, cancel: CancellationToken) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
    }
}
