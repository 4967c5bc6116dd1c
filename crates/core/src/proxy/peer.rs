//! Who is on the other end of a client connection (Linux).
//!
//! The proxy listens on 127.0.0.1, which every local user can reach, and it
//! spends its owner's paid gateway bandwidth. So it serves only processes of
//! the user that started it: the peer socket's owner is looked up by its
//! address with one `sock_diag` netlink request (the kernel answers for that
//! exact socket, no table scan), with `/proc/net/tcp` as the fallback where
//! `sock_diag` is not available.
//!
//! The check fails closed. It runs for each connection before a byte of it
//! is read, and a connection whose owner cannot be established is refused
//! like another user's: the peer socket is already gone (its process sent a
//! request and reset), the kernel answers with a TIME_WAIT or orphaned socket
//! (inode 0, reported as uid 0), or the lookup errs. Which lookup the system
//! offers is decided once, by looking up a connection of this process's own;
//! only where neither works is the check off (and said so once in the log).

use std::net::SocketAddr;
use std::sync::OnceLock;

/// What the owner check says of one accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A process of this user.
    Owner,
    /// Another user's process (its uid).
    OtherUser(u32),
    /// No owner could be established: refused all the same.
    Unknown,
    /// This system has no way to look owners up: the check is off.
    Unchecked,
}

impl Verdict {
    /// Whether the connection may be served.
    pub(crate) fn admits(self) -> bool {
        matches!(self, Verdict::Owner | Verdict::Unchecked)
    }

    /// Why a refused connection was refused, for the log.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Verdict::OtherUser(_) => "another user's process",
            Verdict::Unknown => "its owner could not be established",
            Verdict::Owner | Verdict::Unchecked => "",
        }
    }
}

/// How owners are looked up here, decided once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    SockDiag,
    ProcNet,
    /// Neither works: the check is off.
    Off,
}

static LOOKUP: OnceLock<Lookup> = OnceLock::new();

/// The system's lookup, found by looking up a loopback connection of this
/// process's own. `None` while that probe could not even be made (no
/// descriptor to spare, say): undecided, and connections are refused until
/// a later probe decides.
pub(crate) fn lookup() -> Option<Lookup> {
    if let Some(l) = LOOKUP.get() {
        return Some(*l);
    }
    let decided = probe()?;
    Some(*LOOKUP.get_or_init(|| decided))
}

fn probe() -> Option<Lookup> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").ok()?;
    let local = listener.local_addr().ok()?;
    let _client = std::net::TcpStream::connect(local).ok()?;
    let (_server, peer) = listener.accept().ok()?;
    let me = imp::euid();
    Some(if imp::sock_diag_uid(peer, local) == Some(me) {
        Lookup::SockDiag
    } else if imp::proc_net_uid(peer, local) == Some(me) {
        Lookup::ProcNet
    } else {
        Lookup::Off
    })
}

/// The owner check of the connection from `peer` to our `local` address.
pub(crate) fn check(peer: SocketAddr, local: SocketAddr) -> Verdict {
    let uid = match lookup() {
        None => return Verdict::Unknown,
        Some(Lookup::Off) => return Verdict::Unchecked,
        Some(Lookup::SockDiag) => imp::sock_diag_uid(peer, local),
        Some(Lookup::ProcNet) => imp::proc_net_uid(peer, local),
    };
    match uid {
        Some(uid) if uid == imp::euid() => Verdict::Owner,
        Some(uid) => Verdict::OtherUser(uid),
        None => Verdict::Unknown,
    }
}

/// For the benchmarks: the mean time of one owner check of a live loopback
/// connection (what each accepted connection pays before its first read),
/// over `iterations` checks.
pub fn measure_same_user_check(iterations: u32) -> std::io::Result<std::time::Duration> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let local = listener.local_addr()?;
    let _client = std::net::TcpStream::connect(local)?;
    let (_server, peer) = listener.accept()?;
    let start = std::time::Instant::now();
    for _ in 0..iterations.max(1) {
        std::hint::black_box(check(peer, local));
    }
    Ok(start.elapsed() / iterations.max(1))
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::net::SocketAddr;

    pub(super) fn euid() -> u32 {
        0
    }

    pub(super) fn sock_diag_uid(_peer: SocketAddr, _local: SocketAddr) -> Option<u32> {
        None
    }

    pub(super) fn proc_net_uid(_peer: SocketAddr, _local: SocketAddr) -> Option<u32> {
        None
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::io;
    use std::mem::size_of;
    use std::net::{IpAddr, SocketAddr};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    pub(super) fn euid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    /// `TCP_TIME_WAIT` in the kernel's socket states.
    const TIME_WAIT: u8 = 6;

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
    /// `None` when there is no such socket, or only a TIME_WAIT or orphaned
    /// one (inode 0: no process holds it, and the kernel reports uid 0).
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
            return (msg.inode != 0 && msg.state != TIME_WAIT).then_some(msg.uid);
        }
    }

    /// The same answer from `/proc/net/tcp`: the line whose local address is
    /// `peer` and remote address `local`, held by a process (inode not 0, not
    /// in TIME_WAIT).
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
            let held = cols.len() > 9 && cols[9] != "0" && cols[3] != "06";
            (held && cols[1] == want_local && cols[2] == want_remote).then(|| cols[7].parse().ok())?
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
        assert_eq!(lookup(), Some(Lookup::SockDiag));
        assert_eq!(check(peer, local), Verdict::Owner);
        // No such connection: nothing to tell, and refused.
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert_eq!(imp::sock_diag_uid(nobody, local), None);
        assert_eq!(check(nobody, local), Verdict::Unknown);
        assert!(!check(nobody, local).admits());
    }

    /// Close `stream` with a reset (SO_LINGER 0).
    fn abort(stream: std::net::TcpStream) {
        use std::os::fd::AsRawFd;
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt on an open socket with a linger struct of its size.
        let rc = unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        drop(stream);
    }

    /// A client that reset its connection leaves no socket to look up; one
    /// that closed it first leaves a socket no process holds (FIN_WAIT2 or
    /// TIME_WAIT, inode 0, which the kernel reports as uid 0). Neither is
    /// taken for the owner, whoever the owner is.
    #[test]
    fn a_peer_that_is_gone_is_refused() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let local = listener.local_addr().unwrap();

        let mut reset = std::net::TcpStream::connect(local).unwrap();
        let (_server, peer) = listener.accept().unwrap();
        reset.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        abort(reset);
        assert_eq!(imp::sock_diag_uid(peer, local), None);
        assert_eq!(imp::proc_net_uid(peer, local), None);
        assert_eq!(check(peer, local), Verdict::Unknown);

        let closed = std::net::TcpStream::connect(local).unwrap();
        let (server, peer) = listener.accept().unwrap();
        drop(closed);
        // Our end still open: the client's socket waits in FIN_WAIT2,
        // orphaned; once ours closes too it moves to TIME_WAIT.
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(imp::sock_diag_uid(peer, local), None, "an orphaned FIN_WAIT2 socket");
        assert_eq!(imp::proc_net_uid(peer, local), None, "an orphaned FIN_WAIT2 socket");
        drop(server);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(imp::sock_diag_uid(peer, local), None, "a TIME_WAIT socket");
        assert_eq!(imp::proc_net_uid(peer, local), None, "a TIME_WAIT socket");
        assert_eq!(check(peer, local), Verdict::Unknown);
    }
}
