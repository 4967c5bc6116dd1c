//! Relays to and from Chromium, and the one its clients use: the CDP
//! endpoint a session publishes (`cdpUrl`), which serves the owner's
//! processes only and keeps the session's idle clock.
//!
//! The engine's own CDP connection does not pass the published gate (it
//! has a relay of its own, or Chromium's port), so every connection the gate
//! counts is a client's: Playwright, Puppeteer, a `--run` script, or a CLI
//! command that touched the session ([`touch`]).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::log::{Level, Logger};
use crate::proxy::owner_check;

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Dials where an accepted connection is relayed to.
pub(super) type Dial = Arc<dyn Fn() -> BoxFuture<'static, io::Result<TcpStream>> + Send + Sync>;

/// Whether the browser's clients are there: how many connections are open
/// through the gate, and since when none has been.
#[derive(Debug)]
pub struct Activity {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

#[derive(Debug)]
struct State {
    clients: usize,
    since: SystemTime,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(State { clients: 0, since: SystemTime::now() }),
            changed: tokio::sync::Notify::new(),
        })
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_waiters();
    }

    /// A client was here just now: the idle clock starts again.
    pub fn touch(&self) {
        self.update(|s| s.since = SystemTime::now());
    }

    /// Since when no client has been connected; `None` while one is.
    pub fn idle_since(&self) -> Option<SystemTime> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.clients == 0).then_some(state.since)
    }

    /// Resolves at the next change (a client came or went, a touch); it
    /// counts from its `enable()` or first poll.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    fn enter(self: &Arc<Self>) -> Visit {
        self.update(|s| s.clients += 1);
        Visit(Arc::clone(self))
    }
}

/// One open client connection; its end restarts the idle clock.
struct Visit(Arc<Activity>);

impl Drop for Visit {
    fn drop(&mut self) {
        self.0.update(|s| {
            s.clients = s.clients.saturating_sub(1);
            s.since = SystemTime::now();
        });
    }
}

/// The relay tasks of one browser: stopped (and awaited) by [`Relays::stop`],
/// cancelled when dropped.
pub(super) struct Relays {
    cancel: CancellationToken,
    tracker: TaskTracker,
    logger: Arc<Logger>,
}

impl Relays {
    pub(super) fn new(logger: Arc<Logger>) -> Relays {
        Relays { cancel: CancellationToken::new(), tracker: TaskTracker::new(), logger }
    }

    /// Accepts on `listener` and relays each connection to what `dial`
    /// reaches. `owner_only`: another user's process, or one whose owner
    /// cannot be established, is closed unanswered, before a byte is read.
    /// With `activity`, each relayed connection counts as a client's.
    pub(super) fn serve(&self, listener: TcpListener, owner_only: bool, dial: Dial, activity: Option<Arc<Activity>>) {
        let (cancel, tracker) = (self.cancel.clone(), self.tracker.clone());
        let logger = Arc::clone(&self.logger);
        if owner_only {
            crate::proxy::log_owner_check_off(&logger, "cdp");
        }
        self.tracker.spawn(async move {
            let Ok(local) = listener.local_addr() else { return };
            loop {
                let (stream, peer) = tokio::select! {
                    _ = cancel.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        // EMFILE and the like: let the moment pass.
                        Err(_) => { tokio::time::sleep(Duration::from_millis(10)).await; continue }
                    },
                };
                if owner_only {
                    let verdict = owner_check(peer, local);
                    if !verdict.admits() {
                        if logger.enabled(Level::Debug) {
                            logger.debug(format!("cdp: refused a connection from {peer}: {}", verdict.reason()));
                        }
                        continue;
                    }
                }
                let visit = activity.as_ref().map(Activity::enter);
                let (dial, cancel) = (Arc::clone(&dial), cancel.clone());
                tracker.spawn(async move {
                    if let Ok(upstream) = dial().await {
                        relay(stream, upstream, cancel).await;
                    }
                    drop(visit);
                });
            }
        });
    }

    /// Stop listening, close every relayed connection, and wait for them.
    pub(super) async fn stop(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl Drop for Relays {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn relay(mut a: TcpStream, mut b: TcpStream, cancel: CancellationToken) {
    let _ = a.set_nodelay(true);
    let _ = b.set_nodelay(true);
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
    }
}

/// A listener on a fresh port of the host's 127.0.0.1.
pub(super) async fn loopback_listener() -> io::Result<(TcpListener, u16)> {
    let listener = TcpListener::bind((LOOPBACK, 0)).await?;
    let port = listener.local_addr()?.port();
    Ok((listener, port))
}

/// The published gate of a browser on the host's network: Chromium's
/// DevTools port relayed, to the owner's processes, with `activity` kept.
pub(super) async fn serve_host_cdp(relays: &Relays, chromium_port: u16, activity: Arc<Activity>) -> io::Result<u16> {
    let (listener, port) = loopback_listener().await?;
    let to = SocketAddr::from((LOOPBACK, chromium_port));
    let dial: Dial = Arc::new(move || Box::pin(TcpStream::connect(to)));
    relays.serve(listener, true, dial, Some(activity));
    Ok(port)
}

/// What a CLI command on a session does to tell its daemon a client was
/// here: a request to the session's `cdpUrl` (`/json/version`), read to its
/// end, so that the gate has seen (and checked) the connection before it
/// closes. Best effort: a session that is gone is not an error here.
pub fn touch(cdp_url: &str) {
    use std::io::{Read, Write};
    let port = url::Url::parse(cdp_url).ok().and_then(|u| u.port());
    let Some(port) = port else { return };
    let to = SocketAddr::from((LOOPBACK, port));
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(1)) else { return };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = b"GET /json/version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).is_ok() {
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn clients_of_the_gate_stop_the_clock_and_their_end_restarts_it() {
        let (chromium, chromium_port) = loopback_listener().await.unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = chromium.accept().await {
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    if let Ok(n) = s.read(&mut buf).await {
                        let _ = s.write_all(&buf[..n]).await;
                    }
                });
            }
        });
        let relays = Relays::new(Arc::new(Logger::default()));
        let activity = Activity::new();
        let before = activity.idle_since().unwrap();
        let gate = serve_host_cdp(&relays, chromium_port, Arc::clone(&activity)).await.unwrap();
        let mut client = TcpStream::connect((LOOPBACK, gate)).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while activity.idle_since().is_some() {
            assert!(tokio::time::Instant::now() < deadline, "the client was not counted");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            client.write_all(b"ping").await.unwrap();
            let mut echo = [0u8; 4];
            client.read_exact(&mut echo).await.unwrap();
            assert_eq!(&echo, b"ping");
        }
        drop(client);
        while activity.idle_since().is_none() {
            assert!(tokio::time::Instant::now() < deadline, "the client's end was not seen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let after = activity.idle_since().unwrap();
        assert!(after > before);
        // A CLI command's touch.
        let url = format!("http://127.0.0.1:{gate}");
        tokio::task::spawn_blocking(move || touch(&url)).await.unwrap();
        while activity.idle_since() == Some(after) {
            assert!(tokio::time::Instant::now() < deadline, "the touch was not seen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        relays.stop().await;
    }
}
