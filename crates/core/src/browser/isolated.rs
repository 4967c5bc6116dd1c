//! The engine's side of a browser in its own network namespace: the one way
//! out (to the local proxy) and the one way in (the CDP endpoint, for the
//! owner's processes only).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use tokio::net::{TcpSocket, TcpStream};

use super::gate::{loopback_listener, Activity, Dial, Relays};
use super::netns::Netns;
use crate::log::Logger;

const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// Relays running for one browser; stopped (and awaited) by [`Isolation::stop`],
/// cancelled when dropped.
pub struct Isolation {
    netns: Arc<Netns>,
    relays: Relays,
}

impl Isolation {
    /// Listen on `127.0.0.1:proxy_port` inside the namespace and forward every
    /// connection to the local proxy at the same address on the host. Only
    /// Chromium (and the factory) live in the namespace, so nobody else can
    /// connect there.
    pub fn start(netns: Netns, proxy_port: u16, logger: Arc<Logger>) -> io::Result<Isolation> {
        let iso = Isolation { netns: Arc::new(netns), relays: Relays::new(logger) };
        let proxy = SocketAddr::V4(SocketAddrV4::new(LOOPBACK, proxy_port));
        let inside = socket_in(&iso.netns)?;
        inside.set_reuseaddr(true)?;
        inside.bind(proxy)?;
        let listener = inside.listen(1024)?;
        iso.relays.serve(listener, false, Arc::new(move || Box::pin(TcpStream::connect(proxy))), None);
        Ok(iso)
    }

    /// Serve Chromium's DevTools port (inside) on a fresh port of the host's
    /// 127.0.0.1, to processes of this user only; its connections count as
    /// clients' with `activity`. Returns that port.
    pub async fn serve_cdp(&self, chromium_port: u16, activity: Option<Arc<Activity>>) -> io::Result<u16> {
        let (listener, port) = loopback_listener().await?;
        let to = SocketAddr::V4(SocketAddrV4::new(LOOPBACK, chromium_port));
        let netns = Arc::clone(&self.netns);
        let dial: Dial = Arc::new(move || {
            let socket = socket_in(&netns);
            Box::pin(async move { socket?.connect(to).await })
        });
        self.relays.serve(listener, true, dial, activity);
        Ok(port)
    }

    /// Stop listening, close every relayed connection, and wait for them.
    pub async fn stop(&self) {
        self.relays.stop().await;
    }
}

fn socket_in(netns: &Netns) -> io::Result<TcpSocket> {
    let std = netns.socket()?;
    std.set_nonblocking(true)?;
    Ok(TcpSocket::from_std_stream(std))
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::browser::netns::Prepared;

    /// A process (`sleep`) in a namespace of its own, and the engine's handle.
    fn namespaced_sleep() -> Option<(std::process::Child, Netns)> {
        use std::os::unix::process::CommandExt;
        let prepared = Prepared::new().ok()?;
        let mut cmd = Command::new("sleep");
        cmd.arg("30").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: `entry` makes async-signal-safe calls only.
        unsafe {
            cmd.pre_exec(prepared.entry());
        }
        match cmd.spawn() {
            Ok(child) => Some((child, prepared.into_netns())),
            Err(e) => {
                eprintln!("skipped: namespaces are not available here ({e})");
                None
            }
        }
    }

    /// An echo server on the host's 127.0.0.1, standing in for the proxy.
    async fn echo_server() -> u16 {
        let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        port
    }

    async fn round_trip(mut s: TcpStream) -> Vec<u8> {
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        buf.to_vec()
    }

    #[tokio::test]
    async fn the_namespace_reaches_the_host_only_through_the_relay_and_is_reached_only_through_the_gate() {
        let Some((mut child, netns)) = namespaced_sleep() else { return };
        let proxy_port = echo_server().await;
        let iso = Isolation::start(netns, proxy_port, Arc::new(Logger::default())).unwrap();

        // Inside, the proxy's address is the relay: it reaches the host's server.
        let inside = socket_in(&iso.netns).unwrap();
        let to_proxy = inside.connect(SocketAddr::V4(SocketAddrV4::new(LOOPBACK, proxy_port))).await.unwrap();
        assert_eq!(round_trip(to_proxy).await, b"ping");

        // Any other host port is out of reach from inside.
        let host_only = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
        let other = socket_in(&iso.netns).unwrap();
        assert!(other.connect(host_only.local_addr().unwrap()).await.is_err());

        // A server inside, on the very port number of a host listener: the
        // host's connections to that number land on the host's listener,
        // the gate's on the server inside.
        let shared_port = host_only.local_addr().unwrap().port();
        let server = socket_in(&iso.netns).unwrap();
        server.bind(SocketAddr::V4(SocketAddrV4::new(LOOPBACK, shared_port))).unwrap();
        let listener = server.listen(8).unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let gate = iso.serve_cdp(shared_port, None).await.unwrap();
        let via_gate = TcpStream::connect((LOOPBACK, gate)).await.unwrap();
        assert_eq!(round_trip(via_gate).await, b"ping");
        let _direct = TcpStream::connect((LOOPBACK, shared_port)).await.unwrap();
        let landed = tokio::time::timeout(std::time::Duration::from_secs(5), host_only.accept()).await;
        assert!(matches!(landed, Ok(Ok(_))), "a host connection to the number reaches the host's listener");

        iso.stop().await;
        assert!(TcpStream::connect((LOOPBACK, gate)).await.is_err(), "the gate is closed after stop");
        let _ = child.kill();
        let _ = child.wait();
    }

    #[tokio::test]
    async fn the_factory_ends_with_the_handle() {
        let Some((mut child, netns)) = namespaced_sleep() else { return };
        assert!(netns.socket().is_ok());
        // The factory is the namespaced process's only child.
        let pid = child.id();
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        let factory: u32 = children.split_whitespace().next().unwrap().parse().unwrap();
        let cmdline = std::fs::read(format!("/proc/{factory}/cmdline")).unwrap();
        assert!(cmdline.starts_with(b"aluvia-netns"), "{}", String::from_utf8_lossy(&cmdline));
        let environ = std::fs::read(format!("/proc/{factory}/environ")).unwrap();
        assert!(environ.iter().all(|&b| b == 0), "the factory keeps no environment");
        drop(netns);
        // It sees EOF and exits (a zombie of `sleep`, which never reaps it).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{factory}/stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("gone");
            if state == "Z" || state == "gone" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the factory is still {state}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(child.try_wait().unwrap().is_none(), "the namespaced process is unharmed");
        let _ = child.kill();
        let _ = child.wait();
    }
}
