//! Which session a command (or `connect()`) means: by name or auto-selected
//! when exactly one runs, with the exact messages of the CLI and of
//! `connect()`. Stale lock files met on the way are removed.

use serde_json::Value;

use super::dir::LockDir;
use super::naming::validate_session_name;
use super::record::{LockData, LockRead};
use super::session_error::SessionError;

/// What the session is wanted for; it decides the checks and the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `session close`: a named lock is returned even when its process is
    /// dead (close reports that and cleans up).
    Close,
    /// `session get` and other read-only CLI commands.
    Get,
    /// `rotate-ip`, `set-geo`, `set-rules`: the lock must carry a connection id.
    Update,
    /// `connect()`: ready, with a CDP URL.
    Connect,
}

impl Purpose {
    pub fn parse(s: &str) -> Option<Purpose> {
        match s {
            "close" => Some(Purpose::Close),
            "get" => Some(Purpose::Get),
            "update" => Some(Purpose::Update),
            "connect" => Some(Purpose::Connect),
            _ => None,
        }
    }
}

/// Resolves `name` (or the one live session) for `purpose`; the `Connect*`
/// errors are `connect()`'s, the others the CLI's.
pub fn resolve_session(dir: &LockDir, name: Option<&str>, purpose: Purpose) -> Result<LockData, SessionError> {
    let connect = purpose == Purpose::Connect;
    let lock = match name {
        None => {
            let live = dir.live_sessions()?.live;
            match live.len() {
                0 if connect => return Err(SessionError::ConnectNoneRunning {}),
                0 => return Err(SessionError::NoneRunning {}),
                1 => live.into_iter().next().unwrap_or_default(),
                _ => {
                    let names: Vec<String> = live.iter().filter_map(|l| l.session.clone()).collect();
                    return Err(if connect {
                        SessionError::ConnectMultiple { names }
                    } else {
                        SessionError::Multiple { browser_sessions: names, or_all: purpose == Purpose::Close }
                    });
                }
            }
        }
        Some(name) => {
            let missing = || match purpose {
                Purpose::Connect => SessionError::ConnectNotFound { name: name.to_string() },
                Purpose::Close => SessionError::CloseNotFound { browser_session: name.to_string() },
                _ => SessionError::NotFound { name: name.to_string() },
            };
            if !validate_session_name(name) {
                return Err(if connect { missing() } else { SessionError::InvalidName {} });
            }
            let mut lock = match dir.read(name)? {
                Some(LockRead::Valid(lock)) => lock,
                _ => return Err(missing()),
            };
            lock.session.get_or_insert_with(|| name.to_string());
            if purpose != Purpose::Close && !lock.is_live() {
                dir.remove_if_owned(name, lock.pid)?;
                let name = name.to_string();
                return Err(if connect { SessionError::ConnectStale { name } } else { SessionError::Stale { name } });
            }
            lock
        }
    };
    let name = lock.session.clone().unwrap_or_default();
    match purpose {
        Purpose::Connect if lock.ready != Some(true) => Err(SessionError::ConnectStarting { name }),
        Purpose::Connect if lock.cdp_url.as_deref().is_none_or(str::is_empty) => {
            Err(SessionError::ConnectNoCdpUrl { name })
        }
        Purpose::Update if lock.connection_id.as_ref().is_none_or(Value::is_null) => {
            Err(SessionError::NoConnectionId { name })
        }
        _ => Ok(lock),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::session_error::tests::printed;
    use crate::store::testutil::{dead_pid, TempDir};

    /// The error as the CLI prints it; `connect()`'s message alone.
    fn message(e: SessionError) -> String {
        if e.code() == "ConnectError" {
            return e.to_string();
        }
        printed(&e)
    }

    #[test]
    fn session_resolve_messages() {
        let tmp = TempDir::new("resolve");
        let dir = tmp.lock_dir();
        let me = std::process::id();
        let r = |name: Option<&str>, p| resolve_session(&dir, name, p).map_err(message);
        assert_eq!(r(None, Purpose::Get).unwrap_err(), r#"{"error":"No running browser sessions found."}"#);
        assert!(r(None, Purpose::Connect).unwrap_err().starts_with("No running Aluvia sessions found."));
        assert_eq!(
            r(Some("x"), Purpose::Close).unwrap_err(),
            r#"{"error":"No running browser session found.","browserSession":"x"}"#
        );
        assert_eq!(r(Some("x"), Purpose::Get).unwrap_err(), r#"{"error":"No session found with name 'x'."}"#);

        dir.write(
            "a",
            &LockData {
                pid: me,
                process_start: crate::store::process_start(me),
                session: Some("a".into()),
                ..LockData::default()
            },
        )
        .unwrap();
        assert_eq!(r(None, Purpose::Get).unwrap().pid, me);
        assert_eq!(r(None, Purpose::Connect).unwrap_err(), "Session 'a' is still starting up. Try again shortly.");
        assert!(r(Some("a"), Purpose::Update).unwrap_err().contains("has no connection ID"));
        dir.update_owned("a", me, |l| l.ready = Some(true)).unwrap();
        assert_eq!(r(Some("a"), Purpose::Connect).unwrap_err(), "Session 'a' has no CDP URL.");

        dir.write("b", &LockData { pid: me, process_start: crate::store::process_start(me), ..LockData::default() })
            .unwrap();
        assert_eq!(
            r(None, Purpose::Close).unwrap_err(),
            r#"{"error":"Multiple sessions running. Specify --browser-session <name> or --all.","browserSessions":["a","b"]}"#
        );
        assert_eq!(
            r(None, Purpose::Connect).unwrap_err(),
            "Multiple Aluvia sessions running (a, b). Specify which one: connect('a')"
        );

        let dead = dead_pid();
        dir.write("d", &LockData { pid: dead, ..LockData::default() }).unwrap();
        assert_eq!(r(Some("d"), Purpose::Close).unwrap().pid, dead);
        assert_eq!(
            r(Some("d"), Purpose::Get).unwrap_err(),
            r#"{"error":"Session 'd' is no longer running (stale lock cleaned up)."}"#
        );
        assert!(dir.read("d").unwrap().is_none());
        dir.write("d", &LockData { pid: dead, ..LockData::default() }).unwrap();
        assert_eq!(
            r(Some("d"), Purpose::Connect).unwrap_err(),
            "Session 'd' is no longer running. Stale lock file removed."
        );
    }
}
