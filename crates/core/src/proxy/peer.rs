//! Who is on the other end of a client connection (Linux).
//!
//! The proxy listens on 127.0.0.1, which every local user can reach, and it
//! spends its owner's paid gateway bandwidth. So it serves only processes of
//! the user that started it: the peer socket's owner is looked up by its
//! address with one `sock_diag` netlink request (the kernel answers for that
//! exact socket, no table scan), with `/proc/net/tcp` as the fallback where
//! `sock_diag` is not available. Where neither can tell, the check is off and
//! says so once in the log.

use std::net::SocketAddr;

/// Whether the process behind `peer` (a connection to `local`) runs as this
/// process's effective user; `None` when that cannot be told.
pub(crate) fn same_user(peer: SocketAddr, local: SocketAddr) -> Option<bool> {
    imp::same_user(peer, local)
}

/// For the benchmarks: the mean time of one same-user check, over
/// `iterations` checks of a live loopback connection.
pub fn measure_same_user_check(iterations: u32) -> std::io::Result<std::time::Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let local = listener.local_addr()?;
    let _client = std::net::TcpStream::connect(local)?;
    let (_server, peer) = listener.accept()?;
    let start = std::time::Instant::now();
    for _ in 0..iterations.max(1) {
        std::hint::black_box(same_user(peer, local));
    }
    Ok(start.elapsed() / iterations.max(1))
}

/// The uid owning the socket at `peer` connected to `local`, if it can be told.
#[cfg(target_os = "linux")]
pub(crate) fn peer_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    imp::sock_diag_uid(peer, local).or_else(|| imp::proc_net_uid(peer, local))
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::net::SocketAddr;

    pub(super) fn same_user(_peer: SocketAddr, _local: SocketAddr) -> Option<bool> {
        None
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::mem::size_of;
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    pub(super) fn same_user(peer: SocketAddr, local: SocketAddr) -> Option<bool> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        super::peer_uid(peer, local).map(|uid| uid == unsafe { libc::geteuid() })
    }

    const NETLINK_SOCK_DIAG: libc::c_int = 4;
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLMSG_ERROR: u16 = 2;
    const INET_DIAG_NOCOOKIE: u32 = !0;

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct NlMsgHdr {
        len: u32,
        kind: u16,
        flags: u16,
        seq: u32,
        pid: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct SockId {
        sport: u16,
        dport: u16,
        src: [u32; 4],
        dst: [u32; 4],
        interface: u32,
        cookie: [u32; 2],
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct ReqV2 {
        family: u8,
        protocol: u8,
        ext: u8,
        pad: u8,
        states: u32,
        id: SockId,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Request {
        header: NlMsgHdr,
        body: ReqV2,
    }

    /// The start of `inet_diag_msg` up to the uid.
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct DiagMsg {
        family: u8,
        state: u8,
        timer: u8,
        retrans: u8,
        id: SockId,
        expires: u32,
        rqueue: u32,
        wqueue: u32,
        uid: u32,
        inode: u32,
    }

    /// An address in the kernel's `__be32[4]` layout.
    fn words(ip: IpAddr) -> [u32; 4] {
        match ip {
            IpAddr::V4(v4) => [u32::from_ne_bytes(v4.octets()), 0, 0, 0],
            IpAddr::V6(v6) => {
                let o = v6.octets();
                let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                [w(0), w(4), w(8), w(12)]
            }
        }
    }

    /// Ask the kernel for the one socket whose local end is `peer` and
    /// remote end is `local`: the client's socket, and so the client's uid.
    pub(super) fn sock_diag_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
        // SAFETY: plain socket(2) call; the result is checked.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
        if fd < 0 {
            return None;
        }
        // SAFETY: socket(2) succeeded, so `fd` is open and ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let family = if peer.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 } as u8;
        let req = Request {
            header: NlMsgHdr {
                len: size_of::<Request>() as u32,
                kind: SOCK_DIAG_BY_FAMILY,
                flags: libc::NLM_F_REQUEST as u16,
                seq: 1,
                pid: 0,
            },
            body: ReqV2 {
                family,
                protocol: libc::IPPROTO_TCP as u8,
                states: !0,
                id: SockId {
                    sport: peer.port().to_be(),
                    dport: local.port().to_be(),
                    src: words(peer.ip()),
                    dst: words(local.ip()),
                    interface: 0,
                    cookie: [INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE],
                },
                ..ReqV2::default()
            },
        };
        // SAFETY: an all-zero sockaddr_nl is valid; the family is set below.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `req` is a plain repr(C) value of the given size, and
        // `kernel` a sockaddr_nl of the given size; both outlive the call.
        let sent = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                (&req as *const Request).cast(),
                size_of::<Request>(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return None;
        }
        let mut buf = [0u8; 1024];
        loop {
            // SAFETY: `buf` is writable for its whole length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return None;
            }
            let n = n as usize;
            if n < size_of::<NlMsgHdr>() {
                return None;
            }
            // SAFETY: at least a header's worth of bytes was received;
            // read_unaligned copes with the byte buffer's alignment.
            let header: NlMsgHdr = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast()) };
            if header.kind == NLMSG_ERROR || n < size_of::<NlMsgHdr>() + size_of::<DiagMsg>() {
                return None;
            }
            // SAFETY: the buffer holds a header and a whole DiagMsg after it.
            let msg: DiagMsg = unsafe { std::ptr::read_unaligned(buf[size_of::<NlMsgHdr>()..].as_ptr().cast()) };
            return Some(msg.uid);
        }
    }

    /// The same answer from `/proc/net/tcp` (or `tcp6`): the line whose
    /// local address is `peer` and remote address `local`.
    pub(super) fn proc_net_uid(peer: SocketAddr, local: SocketAddr) -> Option<u32> {
        let (file, want_local, want_remote) = match (peer, local) {
            (SocketAddr::V4(p), SocketAddr::V4(l)) => (
                "/proc/net/tcp",
                format!("{:08X}:{:04X}", u32::from_ne_bytes(p.ip().octets()), p.port()),
                format!("{:08X}:{:04X}", u32::from_ne_bytes(l.ip().octets()), l.port()),
            ),
            _ => return None,
        };
        let table = std::fs::read_to_string(file).ok()?;
        table.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.len() > 7 && cols[1] == want_local && cols[2] == want_remote).then(|| cols[7].parse().ok())?
        })
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn finds_the_owner_of_a_loopback_connection() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        let local = listener.local_addr().unwrap();
        assert_eq!(imp::sock_diag_uid(peer, local), Some(me));
        assert_eq!(imp::proc_net_uid(peer, local), Some(me));
        assert_eq!(same_user(peer, local), Some(true));
        // No such connection: nothing to tell.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(imp::sock_diag_uid(nobody, local), None);
    }
}
