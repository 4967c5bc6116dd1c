//! Chromium in a network namespace of its own (Linux).
//!
//! Inside the namespace there is only a loopback interface: no route to the
//! network, no DNS, and nothing another local user can connect to. The engine
//! reaches into it through a *socket factory*: a small process forked into the
//! namespace before Chromium is executed, which answers each request on a
//! socket pair with a fresh, unconnected TCP socket of the namespace (passed
//! back with `SCM_RIGHTS`). With such sockets the engine
//! - listens on the namespace's `127.0.0.1:<proxy port>`, so Chromium's
//!   `--proxy-server` is the same address as outside, and forwards each
//!   connection to the local proxy on the host (see [`super::isolated`]);
//! - connects to Chromium's DevTools port inside, for the CDP endpoint it
//!   serves on the host's 127.0.0.1 to the owner's processes only.
//!
//! As root the namespace is a plain network namespace; as any other user it
//! is a user namespace (mapping the user to itself) holding a network
//! namespace, which unprivileged users may create where the kernel allows it.
//! The factory exits when the engine's end of the socket pair closes, and is
//! killed with Chromium (its parent).

use std::io::{self, Write};
use std::mem::size_of;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Duration;

/// What the child needs, made before `fork` (nothing may allocate after it).
pub(super) struct Prepared {
    /// The factory's end of the socket pair (close-on-exec, so Chromium never
    /// holds it; the factory does not exec).
    child_end: OwnedFd,
    parent_end: UnixStream,
    /// `None` as root (a network namespace is enough); else the contents of
    /// `uid_map` and `gid_map`.
    maps: Option<(Vec<u8>, Vec<u8>)>,
    /// Where this process's command line and environment strings live
    /// (`arg_start..arg_end`, `env_start..env_end`), so that the factory can
    /// name itself there and drop the environment: a forked copy would
    /// otherwise show the engine's own command line in `ps` and its
    /// environment (the API key among it) in `/proc/<pid>/environ`.
    areas: [Option<(usize, usize)>; 2],
}

/// How the factory shows in `ps` (`/proc/<pid>/cmdline` and `comm`).
const FACTORY_TITLE: &[u8] = b"aluvia-netns (socket factory of a browser's network namespace)";

/// Two consecutive fields of `/proc/self/stat` as an address range: 48 for
/// the command line, 50 for the environment (counted after the
/// parenthesized name, which may hold spaces).
fn stat_area(field: usize) -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let start = fields.get(field - 3)?.parse().ok()?;
    let end = fields.get(field + 1 - 3)?.parse().ok()?;
    (start != 0 && end > start).then_some((start, end))
}

/// The engine's handle on a namespace: asks its factory for sockets.
pub struct Netns {
    factory: Mutex<UnixStream>,
}

impl Prepared {
    pub(super) fn new() -> io::Result<Prepared> {
        let (parent_end, child) = UnixStream::pair()?;
        // A stuck factory must not hang a caller: answers are immediate.
        parent_end.set_read_timeout(Some(Duration::from_secs(5)))?;
        // SAFETY: geteuid/getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let maps =
            (uid != 0).then(|| (format!("{uid} {uid} 1\n").into_bytes(), format!("{gid} {gid} 1\n").into_bytes()));
        Ok(Prepared { child_end: OwnedFd::from(child), parent_end, maps, areas: [stat_area(48), stat_area(50)] })
    }

    /// What runs in the forked child before `exec`: enter the namespace,
    /// bring its loopback up, fork the socket factory. Only async-signal-safe
    /// calls (everything it needs was made here, before the fork).
    pub(super) fn entry(&self) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
        let ctrl = self.child_end.as_raw_fd();
        let maps = self.maps.clone();
        let areas = self.areas;
        move || {
            // SAFETY: plain syscalls on memory the closure owns; this runs in
            // the single-threaded child between fork and exec, while
            // `Prepared` (holding `ctrl`) lives in the parent until spawn returns.
            unsafe {
                match &maps {
                    None => check(libc::unshare(libc::CLONE_NEWNET))?,
                    Some((uid_map, gid_map)) => {
                        // A non-dumpable parent (a session daemon) leaves this
                        // child's /proc files to root, so it could not write its
                        // own maps; the exec that follows makes it dumpable anyway.
                        // It is undumpable again as soon as they are written,
                        // so the factory forked below is born undumpable.
                        check(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0))?;
                        let mapped = check(libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET))
                            .and_then(|()| write_file(c"/proc/self/setgroups", b"deny"))
                            .and_then(|()| write_file(c"/proc/self/uid_map", uid_map))
                            .and_then(|()| write_file(c"/proc/self/gid_map", gid_map));
                        check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0))?;
                        mapped?;
                    }
                }
                loopback_up()?;
                match libc::fork() {
                    -1 => Err(io::Error::last_os_error()),
                    0 => factory(ctrl, areas),
                    _ => Ok(()),
                }
            }
        }
    }

    /// After a successful spawn: the engine's handle (the factory's end is
    /// closed here, so the factory sees EOF once the handle is dropped).
    pub(super) fn into_netns(self) -> Netns {
        Netns { factory: Mutex::new(self.parent_end) }
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// # Safety
/// Async-signal-safe: may run between fork and exec.
unsafe fn write_file(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = libc::write(fd, data.as_ptr().cast(), data.len());
    let err = io::Error::last_os_error();
    libc::close(fd);
    if n == data.len() as isize {
        Ok(())
    } else {
        Err(err)
    }
}

/// # Safety
/// Async-signal-safe: may run between fork and exec.
unsafe fn loopback_up() -> io::Result<()> {
    let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ifr: libc::ifreq = std::mem::zeroed();
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let mut rc = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr);
    if rc == 0 {
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        rc = libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
    }
    let err = io::Error::last_os_error();
    libc::close(s);
    if rc == 0 {
        Ok(())
    } else {
        Err(err)
    }
}

/// The factory: one fresh TCP socket per byte read, until EOF. Never returns.
///
/// # Safety
/// Runs in a forked child of a multi-threaded process: async-signal-safe
/// calls only, no allocation.
unsafe fn factory(ctrl: RawFd, [cmdline, environ]: [Option<(usize, usize)>; 2]) -> ! {
    // As undumpable as the daemon (its memory is no other process's to
    // read), and holding none of the engine's memory: the copy of the
    // engine's heap that came with the fork (API key, gateway password) is
    // dropped before anything else.
    libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    if !scrub_memory() {
        libc::_exit(1);
    }
    // Dies with Chromium (its parent), whatever happens to the engine's end.
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    // Named for what it is, with no environment: the areas are this
    // process's own (copied) argv and environment strings, mapped and
    // writable for as long as it lives, and nothing else reads them here.
    for (area, title) in [(cmdline, FACTORY_TITLE), (environ, &b""[..])] {
        if let Some((start, end)) = area {
            let area = std::slice::from_raw_parts_mut(start as *mut u8, end - start);
            area.fill(0);
            let n = title.len().min(area.len().saturating_sub(1));
            area[..n].copy_from_slice(&title[..n]);
        }
    }
    libc::prctl(libc::PR_SET_NAME, c"aluvia-netns".as_ptr());
    // Keep only the control socket: no copy of the engine's listeners, pipes
    // or Chromium's stderr stays open in here.
    if libc::dup2(ctrl, 3) != 3 {
        libc::_exit(1);
    }
    for fd in 0..3 {
        libc::close(fd);
    }
    if libc::syscall(libc::SYS_close_range, 4u32, u32::MAX, 0u32) != 0 {
        let mut lim: libc::rlimit = std::mem::zeroed();
        let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 { lim.rlim_cur.min(1 << 20) } else { 4096 };
        for fd in 4..max as RawFd {
            libc::close(fd);
        }
    }
    loop {
        let mut byte = 0u8;
        let n = libc::read(3, (&mut byte as *mut u8).cast(), 1);
        if n == 0 {
            libc::_exit(0);
        }
        if n < 0 {
            if *libc::__errno_location() == libc::EINTR {
                continue;
            }
            libc::_exit(1);
        }
        let sock = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if send_fd(3, sock) < 0 {
            libc::_exit(1);
        }
        if sock >= 0 {
            libc::close(sock);
        }
    }
}

/// Drops every private writable page of this (forked) process that no file
/// backs: the heaps, every thread stack but this one's, and this one's below
/// the frames in use (this thread's TLS is kept). They read as zeros from then on. False when
/// `/proc/self/maps` cannot be read.
///
/// # Safety
/// Async-signal-safe, no allocation; only for a forked child that from now
/// on touches nothing but its own stack frame, its descriptors and
/// syscalls.
unsafe fn scrub_memory() -> bool {
    /// What the frames of this function and the syscalls it makes may use
    /// below its own locals: kept.
    const IN_USE: usize = 64 * 1024;
    let fd = libc::open(c"/proc/self/maps".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 4096];
    let mut line = [0u8; 512];
    let sp = std::ptr::addr_of!(buf) as usize;
    // This thread's TLS and control block (errno, the stack-protector
    // canary, the thread pointer): inside its stack mapping on a thread
    // libc started, in a mapping of its own on the main thread. Kept.
    let tls = libc::__errno_location() as usize;
    let mut len = 0;
    let mut ok = true;
    'read: loop {
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        if n < 0 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        if n < 0 {
            ok = false;
            break;
        }
        if n == 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b != b'\n' {
                if len < line.len() {
                    line[len] = b;
                    len += 1;
                }
                continue;
            }
            if let Some((start, end)) = anonymous_writable(&line[..len]).filter(|(a, b)| !(*a..*b).contains(&tls)) {
                let (start, end) =
                    if (start..end).contains(&sp) { (start, sp.saturating_sub(IN_USE) & !4095) } else { (start, end) };
                if end > start && libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) != 0 {
                    ok = false;
                    break 'read;
                }
            }
            len = 0;
        }
    }
    libc::close(fd);
    ok
}

/// The address range of a `/proc/self/maps` line that is private, writable
/// and backed by no file (inode 0; unnamed, `[heap]`, `[stack]` or a named
/// anonymous region); `None` for any other line.
fn anonymous_writable(line: &[u8]) -> Option<(usize, usize)> {
    let mut fields = line.split(|b| *b == b' ').filter(|f| !f.is_empty());
    let range = fields.next()?;
    let perms = fields.next()?;
    let _offset = fields.next()?;
    let _device = fields.next()?;
    let inode = fields.next()?;
    let name = fields.next().unwrap_or(b"");
    let anonymous =
        inode == b"0" && (name.is_empty() || name == b"[heap]" || name == b"[stack]" || name.starts_with(b"[anon:"));
    if perms.len() < 4 || perms[1] != b'w' || perms[3] != b'p' || !anonymous {
        return None;
    }
    let dash = range.iter().position(|b| *b == b'-')?;
    Some((hex(&range[..dash])?, hex(&range[dash + 1..])?))
}

fn hex(digits: &[u8]) -> Option<usize> {
    let mut v: usize = 0;
    for &d in digits {
        let x = (d as char).to_digit(16)? as usize;
        v = v.checked_mul(16)?.checked_add(x)?;
    }
    Some(v)
}

/// Sends one byte, with `fd` attached when it is valid (a byte alone says the
/// socket could not be made).
///
/// # Safety
/// Async-signal-safe; `fd` is ours or negative.
unsafe fn send_fd(on: RawFd, fd: RawFd) -> isize {
    let mut byte = 1u8;
    let mut iov = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
    // Room for one fd, aligned for cmsghdr.
    let mut space = [0u64; 4];
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if fd >= 0 {
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    libc::sendmsg(on, &msg, libc::MSG_NOSIGNAL)
}

impl Netns {
    /// A fresh, unconnected TCP socket inside the namespace (blocking mode).
    pub fn socket(&self) -> io::Result<TcpStream> {
        let factory = self.factory.lock().map_err(|_| io::Error::other("the namespace's factory lock is poisoned"))?;
        (&*factory).write_all(&[1])?;
        let mut byte = 0u8;
        let mut iov = libc::iovec { iov_base: (&mut byte as *mut u8).cast(), iov_len: 1 };
        let mut space = [0u64; 4];
        // SAFETY: msghdr is plain data; every pointer in it points at locals
        // that outlive the call, with the lengths given.
        let (n, fd) = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = space.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&space) as _;
            let n = libc::recvmsg(factory.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            let fd = if n == 1
                && !cmsg.is_null()
                && (*cmsg).cmsg_level == libc::SOL_SOCKET
                && (*cmsg).cmsg_type == libc::SCM_RIGHTS
            {
                Some(std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>()))
            } else {
                None
            };
            (n, fd)
        };
        match (n, fd) {
            // SAFETY: the kernel just installed this descriptor for us.
            (1, Some(fd)) => Ok(unsafe { TcpStream::from_raw_fd(fd) }),
            (1, None) => Err(io::Error::other("the browser's network namespace could not make a socket")),
            (0, _) => Err(io::Error::other("the browser's network namespace is gone")),
            _ => Err(io::Error::last_os_error()),
        }
    }
}
