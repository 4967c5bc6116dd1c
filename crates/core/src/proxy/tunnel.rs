//! Relaying an open `CONNECT` tunnel.
//!
//! When both ends are plain TCP sockets (the client's connection to us, and a
//! direct target or a plain-HTTP gateway), the bytes move socket → pipe →
//! socket with splice(2) and never enter user space. Anything else (a TLS
//! gateway, another platform, no pipe to be had) falls back to a buffered
//! copy. Either way the bytes are counted per direction.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::traffic::{Counters, CountingIo, Direction};
use super::upstream::MaybeTls;

/// Copy buffer per direction when splicing is not possible.
const COPY_BUFFER: usize = 64 * 1024;

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One end of a tunnel: its stream and the bytes already read from it that
/// belong to the other end (what hyper buffered past the HTTP head).
pub(crate) struct End {
    stream: Stream,
    pending: Bytes,
}

enum Stream {
    Tcp(TcpStream),
    Other(Box<dyn Io>),
}

impl End {
    pub(crate) fn tcp(stream: TcpStream) -> End {
        End { stream: Stream::Tcp(stream), pending: Bytes::new() }
    }

    /// A stream that is not a plain socket (a TLS connection).
    pub(crate) fn other(stream: impl Io + 'static) -> End {
        End { stream: Stream::Other(Box::new(stream)), pending: Bytes::new() }
    }

    /// The client's side, once hyper hands over its connection.
    pub(crate) fn client(upgraded: Upgraded) -> End {
        match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => End { stream: Stream::Tcp(parts.io.into_inner()), pending: parts.read_buf },
            Err(upgraded) => End { stream: Stream::Other(Box::new(TokioIo::new(upgraded))), pending: Bytes::new() },
        }
    }

    /// The gateway's side, once its `CONNECT` succeeded.
    pub(crate) fn gateway(upgraded: Upgraded) -> End {
        match upgraded.downcast::<TokioIo<MaybeTls>>() {
            Ok(parts) => {
                let stream = match parts.io.into_inner() {
                    MaybeTls::Plain(tcp) => Stream::Tcp(tcp),
                    tls => Stream::Other(Box::new(tls)),
                };
                End { stream, pending: parts.read_buf }
            }
            Err(upgraded) => End { stream: Stream::Other(Box::new(TokioIo::new(upgraded))), pending: Bytes::new() },
        }
    }
}

impl Stream {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(bytes).await,
            Stream::Other(s) => s.write_all(bytes).await,
        }
    }

    fn boxed(self) -> Box<dyn Io> {
        match self {
            Stream::Tcp(s) => Box::new(s),
            Stream::Other(s) => s,
        }
    }
}

/// Relay until both directions have ended (or one fails).
pub(crate) async fn relay(client: End, upstream: End, counters: Arc<Counters>) -> io::Result<()> {
    let (mut client, to_upstream) = (client.stream, client.pending);
    let (mut upstream, to_client) = (upstream.stream, upstream.pending);
    if !to_upstream.is_empty() {
        upstream.write_all(&to_upstream).await?;
        counters.add_bytes(Direction::Sent, to_upstream.len() as u64);
    }
    if !to_client.is_empty() {
        client.write_all(&to_client).await?;
        counters.add_bytes(Direction::Received, to_client.len() as u64);
    }

    #[cfg(target_os = "linux")]
    if let (Stream::Tcp(a), Stream::Tcp(b)) = (&client, &upstream) {
        return splice::relay(a, b, &counters).await;
    }

    let mut client = CountingIo::new(client.boxed(), counters.clone(), Direction::Sent);
    let mut upstream = CountingIo::new(upstream.boxed(), counters, Direction::Received);
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUFFER, COPY_BUFFER).await.map(|_| ())
}

/// Relay between the client and an upstream stream that counts its own
/// bytes (an upgraded connection over a counting stream); the client's end
/// of stream still marks `counters`.
pub(crate) async fn relay_uncounted(client: End, mut upstream: impl Io, counters: Arc<Counters>) -> io::Result<()> {
    let (client, to_upstream) = (client.stream, client.pending);
    if !to_upstream.is_empty() {
        upstream.write_all(&to_upstream).await?;
    }
    let mut client = CountingIo::end_only(client.boxed(), counters, Direction::Sent);
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, COPY_BUFFER, COPY_BUFFER).await.map(|_| ())
}

#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    use super::super::traffic::{Counters, Direction};

    /// The most one splice call asks for; the pipe's capacity (64 KiB by
    /// default) bounds what it moves.
    const CHUNK: usize = 1 << 20;

    /// The capacity a pipe grows to once it carries a bulk transfer: 1 MiB
    /// halves the proxy's CPU per byte against the default 64 KiB.
    const BULK_PIPE: usize = 1 << 20;

    /// How long a direction may be quiet before its pipe is given back.
    const PIPE_IDLE: std::time::Duration = std::time::Duration::from_millis(250);

    /// One pipe per direction, made when that direction first has bytes to
    /// move: an idle tunnel holds its two sockets and nothing else.
    struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        /// In bytes; at least `BULK_PIPE` once growing was tried.
        capacity: usize,
    }

    impl Pipe {
        fn new() -> io::Result<Pipe> {
            let mut fds = [0 as RawFd; 2];
            // SAFETY: `fds` has room for the two descriptors pipe2 writes.
            if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
            let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // SAFETY: F_GETPIPE_SZ only reads the open pipe's capacity.
            let capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
            Ok(Pipe { read, write, capacity: usize::try_from(capacity).unwrap_or(0) })
        }

        /// A pipe that filled up in one go carries a bulk transfer: give it
        /// room for fewer, larger moves. Only such pipes grow, since the
        /// kernel charges every pipe's capacity to the user's pipe quota.
        /// Refusal (quota reached) just keeps the current size.
        fn grow_if_full(&mut self, moved: usize) {
            if moved < self.capacity || self.capacity >= BULK_PIPE {
                return;
            }
            // SAFETY: F_SETPIPE_SZ on our own open pipe; the size is an int.
            let got = unsafe { libc::fcntl(self.write.as_raw_fd(), libc::F_SETPIPE_SZ, BULK_PIPE as libc::c_int) };
            self.capacity = if got > 0 { got as usize } else { BULK_PIPE };
        }
    }

    fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
        // SAFETY: plain descriptors and no offsets (both are streams).
        let n = unsafe { libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, flags) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    pub(super) async fn relay(client: &TcpStream, upstream: &TcpStream, counters: &Counters) -> io::Result<()> {
        tokio::try_join!(
            pump(client, upstream, counters, Direction::Sent),
            pump(upstream, client, counters, Direction::Received),
        )
        .map(|_| ())
    }

    /// Move everything `from` sends to `to`, then pass the end of stream on.
    /// The pipe is empty whenever `from` is read, so a would-block there means
    /// the socket has nothing; while draining, it means `to` is full.
    async fn pump(from: &TcpStream, to: &TcpStream, counters: &Counters, dir: Direction) -> io::Result<()> {
        let mut pipe_holder: Option<Pipe> = None;
        loop {
            let n = loop {
                if pipe_holder.is_some() {
                    // The pipe stays while bytes keep coming (a bulk transfer
                    // keeps its grown pipe); once this direction has been quiet
                    // for a while it goes back, so an idle tunnel holds its two
                    // sockets only.
                    match tokio::time::timeout(PIPE_IDLE, from.readable()).await {
                        Ok(ready) => ready?,
                        Err(_) => {
                            pipe_holder = None;
                            from.readable().await?;
                        }
                    }
                } else {
                    from.readable().await?;
                }
                let pipe = match &mut pipe_holder {
                    Some(pipe) => pipe,
                    None => pipe_holder.insert(Pipe::new()?),
                };
                let moved = from.try_io(Interest::READABLE, || splice(from.as_raw_fd(), pipe.write.as_raw_fd(), CHUNK));
                match moved {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                counters.mark_ended(dir);
                // SAFETY: `to` is an open socket for as long as it is borrowed.
                unsafe { libc::shutdown(to.as_raw_fd(), libc::SHUT_WR) };
                return Ok(());
            }
            counters.add_bytes(dir, n as u64);
            let Some(pipe) = pipe_holder.as_mut() else { return Ok(()) };
            let mut left = n;
            while left > 0 {
                to.writable().await?;
                match to.try_io(Interest::WRITABLE, || splice(pipe.read.as_raw_fd(), to.as_raw_fd(), left)) {
                    Ok(m) => left -= m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            pipe.grow_if_full(n);
        }
    }
}
