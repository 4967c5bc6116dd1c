//! The browser sessions' control endpoints, which no proxied request may
//! reach.
//!
//! A page loaded through a session's proxy must not reach any session's
//! DevTools endpoint (`cdpUrl`): only Chromium's Origin checks would stand in
//! the way. So a target on a loopback address whose port is a control
//! endpoint is refused before it is dialled. The ports are those of this
//! process's own browsers (registered while they run), and those of every
//! browser of this user that is running: each registration also leaves a
//! `cdp-{port}.endpoint` file (its owner's pid and start) in the lock
//! directory, and the sessions' lock files name their `cdpUrl`; both are read
//! again whenever the lock directory changes.

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::store::{is_recorded_process, process_start, LockDir};

/// Ports of this process's own browsers' control endpoints, one entry per
/// registration.
static OWN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// The ports the lock files named when the lock directory last changed.
struct Recorded {
    path: Option<std::path::PathBuf>,
    modified: Option<SystemTime>,
    ports: Vec<u16>,
}

static RECORDED: Mutex<Recorded> = Mutex::new(Recorded { path: None, modified: None, ports: Vec::new() });

/// One registered control port; unregistered when dropped.
#[derive(Debug)]
pub struct ControlPort {
    port: u16,
    /// The `cdp-{port}.endpoint` file that tells this user's other processes.
    marker: Option<std::path::PathBuf>,
}

const MARKER_PREFIX: &str = "cdp-";
const MARKER_SUFFIX: &str = ".endpoint";

impl ControlPort {
    /// Refuse proxied requests to `port` on loopback while this lives, here
    /// and in this user's other processes.
    pub fn register(port: u16) -> ControlPort {
        OWN.lock().unwrap_or_else(PoisonError::into_inner).push(port);
        ControlPort { port, marker: write_marker(port) }
    }
}

impl Drop for ControlPort {
    fn drop(&mut self) {
        let mut own = OWN.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = own.iter().position(|p| *p == self.port) {
            own.swap_remove(i);
        }
        drop(own);
        if let Some(marker) = &self.marker {
            // Only if it is still ours (a later browser may have the port now).
            if read_marker(marker).is_some_and(|(pid, _)| pid == std::process::id()) {
                let _ = std::fs::remove_file(marker);
            }
        }
    }
}

/// Best effort: `cdp-{port}.endpoint` holding `{pid} {start}`, 0600,
/// written whole (a temp file renamed into place).
fn write_marker(port: u16) -> Option<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = LockDir::open_default().ok()?;
    let pid = std::process::id();
    let path = dir.path().join(format!("{MARKER_PREFIX}{port}{MARKER_SUFFIX}"));
    let tmp = dir.path().join(format!(".{MARKER_PREFIX}{port}.{pid}.tmp"));
    let body = format!("{pid} {}\n", process_start(pid).unwrap_or_default());
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .and_then(|mut f| f.write_all(body.as_bytes()))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return None;
    }
    Some(path)
}

/// The pid and recorded start in a marker file.
fn read_marker(path: &std::path::Path) -> Option<(u32, Option<String>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace();
    let pid = parts.next()?.parse().ok()?;
    Some((pid, parts.next().map(str::to_string)))
}

/// Whether `port` is a control endpoint's port (on 127.0.0.1) of this
/// process or of a live session of this user.
pub(crate) fn is_control_port(port: u16) -> bool {
    if OWN.lock().unwrap_or_else(PoisonError::into_inner).contains(&port) {
        return true;
    }
    let Some(dir) = LockDir::existing_default() else { return false };
    let modified = std::fs::metadata(dir.path()).and_then(|m| m.modified()).ok();
    let mut recorded = RECORDED.lock().unwrap_or_else(PoisonError::into_inner);
    if recorded.modified.is_none() || recorded.modified != modified || recorded.path.as_deref() != Some(dir.path()) {
        recorded.ports = recorded_ports(&dir);
        recorded.modified = modified;
        recorded.path = Some(dir.path().to_path_buf());
    }
    recorded.ports.contains(&port)
}

fn recorded_ports(dir: &LockDir) -> Vec<u16> {
    let mut ports: Vec<u16> = dir
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(_, read)| match read {
            crate::store::LockRead::Valid(data) if data.is_live() => data.cdp_url,
            _ => None,
        })
        .filter_map(|cdp| url::Url::parse(&cdp).ok().and_then(|u| u.port()))
        .collect();
    let Ok(entries) = std::fs::read_dir(dir.path()) else { return ports };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(port) = name
            .to_str()
            .and_then(|n| n.strip_prefix(MARKER_PREFIX))
            .and_then(|n| n.strip_suffix(MARKER_SUFFIX))
            .and_then(|p| p.parse::<u16>().ok())
        else {
            continue;
        };
        match read_marker(&entry.path()) {
            Some((pid, start)) if is_recorded_process(pid, start.as_deref()) => ports.push(port),
            // Its browser's process is gone: so is the endpoint.
            _ => {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_port_is_a_control_port_while_it_lives() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!is_control_port(port));
        let registered = ControlPort::register(port);
        assert!(is_control_port(port));
        drop(registered);
        assert!(!is_control_port(port));
    }
}
