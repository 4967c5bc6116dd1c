//! Traffic counters per (hostname, route), and the stream wrappers that feed
//! them on the hot path (one relaxed atomic add per read or write).
//!
//! Bytes are counted on the wire of the upstream hop: for a forwarded request
//! everything written to and read from the target or the gateway (request
//! line, headers, chunk framing, bodies); for a tunnel the tunnelled bytes.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which way a request or tunnel went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    Direct,
    Gateway,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Gateway => "gateway",
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of the counters of one (hostname, route).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TrafficEntry {
    pub hostname: String,
    pub route: Route,
    /// HTTP requests (not CONNECT) routed this way, counted when attempted.
    pub requests: u64,
    /// CONNECT tunnels routed this way, counted when attempted.
    pub tunnels: u64,
    /// Bytes written upstream: forwarded requests as they go on the wire
    /// (request line, headers, framing, body), tunnel bytes towards the target.
    pub bytes_sent: u64,
    /// Bytes read from upstream: forwarded responses as they come off the
    /// wire, tunnel bytes from the target.
    pub bytes_received: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) tunnels: AtomicU64,
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    /// The hostname's counters, when these are one tunnel's own (which its
    /// idle timer reads): bytes count in both.
    parent: Option<Arc<Counters>>,
    /// One tunnel's ends that have closed (a bit per [`Direction`]); not
    /// passed on to the parent.
    ended: AtomicU8,
}

/// Which byte counter a wrapper feeds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Direction {
    /// Client → target.
    Sent,
    /// Target → client.
    Received,
}

impl Counters {
    /// One connection's counters that also feed `parent` (its hostname's).
    pub(crate) fn child(parent: &Arc<Counters>) -> Arc<Counters> {
        Arc::new(Counters { parent: Some(parent.clone()), ..Counters::default() })
    }

    #[inline]
    pub(crate) fn add_bytes(&self, dir: Direction, n: u64) {
        if n == 0 {
            return;
        }
        match dir {
            Direction::Sent => self.bytes_sent.fetch_add(n, Ordering::Relaxed),
            Direction::Received => self.bytes_received.fetch_add(n, Ordering::Relaxed),
        };
        if let Some(parent) = &self.parent {
            parent.add_bytes(dir, n);
        }
    }

    /// The side that sends `dir`'s bytes has closed (end of stream).
    pub(crate) fn mark_ended(&self, dir: Direction) {
        let bit = match dir {
            Direction::Sent => 1,
            Direction::Received => 2,
        };
        self.ended.fetch_or(bit, Ordering::Relaxed);
    }

    /// Whether one side of this tunnel has closed.
    pub(crate) fn half_closed(&self) -> bool {
        self.ended.load(Ordering::Relaxed) != 0
    }

    /// Bytes moved either way so far.
    pub(crate) fn bytes_moved(&self) -> u64 {
        self.bytes_sent.load(Ordering::Relaxed).wrapping_add(self.bytes_received.load(Ordering::Relaxed))
    }
}

/// All counters, one map per route so lookups borrow the hostname.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    direct: RwLock<HashMap<String, Arc<Counters>>>,
    gateway: RwLock<HashMap<String, Arc<Counters>>>,
}

impl Traffic {
    fn map(&self, route: Route) -> &RwLock<HashMap<String, Arc<Counters>>> {
        match route {
            Route::Direct => &self.direct,
            Route::Gateway => &self.gateway,
        }
    }

    /// The counters of `hostname` (already normalized) on `route`.
    pub(crate) fn counters(&self, hostname: &str, route: Route) -> Arc<Counters> {
        let map = self.map(route);
        if let Some(c) = map.read().unwrap_or_else(|e| e.into_inner()).get(hostname) {
            return c.clone();
        }
        map.write().unwrap_or_else(|e| e.into_inner()).entry(hostname.to_string()).or_default().clone()
    }

    /// A snapshot, sorted by hostname then route.
    pub(crate) fn snapshot(&self) -> Vec<TrafficEntry> {
        let mut out = Vec::new();
        for route in [Route::Direct, Route::Gateway] {
            let map = self.map(route).read().unwrap_or_else(|e| e.into_inner());
            out.extend(map.iter().map(|(host, c)| TrafficEntry {
                hostname: host.clone(),
                route,
                requests: c.requests.load(Ordering::Relaxed),
                tunnels: c.tunnels.load(Ordering::Relaxed),
                bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
                bytes_received: c.bytes_received.load(Ordering::Relaxed),
            }));
        }
        out.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.route.cmp(&b.route)));
        out
    }
}

/// A stream that counts the bytes read from it as `dir` (a tunnel's two
/// ends), or, made with [`CountingIo::upstream`], also the bytes written to it
/// (an upstream connection: writes are sent, reads received).
///
/// Either way, reaching the end of what it reads marks `dir` as ended on the
/// counters (the half-close timer reads that).
pub(crate) struct CountingIo<S> {
    inner: S,
    counters: Arc<Counters>,
    dir: Direction,
    count_reads: bool,
    count_writes: bool,
}

impl<S> CountingIo<S> {
    pub(crate) fn new(inner: S, counters: Arc<Counters>, dir: Direction) -> Self {
        CountingIo { inner, counters, dir, count_reads: true, count_writes: false }
    }

    /// Both ways, as the upstream hop's wire bytes.
    pub(crate) fn upstream(inner: S, counters: Arc<Counters>) -> Self {
        CountingIo { inner, counters, dir: Direction::Received, count_reads: true, count_writes: true }
    }

    /// Counts nothing (the other end counts these bytes), only marks the
    /// end of what is read from it.
    pub(crate) fn end_only(inner: S, counters: Arc<Counters>, dir: Direction) -> Self {
        CountingIo { inner, counters, dir, count_reads: false, count_writes: false }
    }

    pub(crate) fn get_ref(&self) -> &S {
        &self.inner
    }

    fn wrote(&self, n: usize) {
        if self.count_writes {
            self.counters.add_bytes(Direction::Sent, n as u64);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountingIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let room = buf.remaining() > 0;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let n = buf.filled().len() - before;
            if n == 0 && room {
                this.counters.mark_ended(this.dir);
            } else if this.count_reads {
                this.counters.add_bytes(this.dir, n as u64);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            self.wrote(*n);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &polled {
            self.wrote(*n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
