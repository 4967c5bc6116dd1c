//! Which session a command (or `connect()`) means: by name or auto-selected
//! when exactly one runs, with the exact messages of the CLI and of
//! `connect()`. Stale lock files met on the way are removed.

use serde_json::{json, Map, Value};

use super::dir::LockDir;
use super::naming::{validate_session_name, INVALID_NAME_MESSAGE};
use super::record::{LockData, LockRead};
use crate::error::AluviaError;

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

#[derive(Debug)]
pub enum ResolveError {
    /// A CLI error: the whole JSON output, `error` and context fields.
    Cli(Value),
    /// A `connect()` error (`ConnectError`).
    Connect(String),
    /// The lock directory could not be used.
    Io(AluviaError),
}

impl From<AluviaError> for ResolveError {
    fn from(e: AluviaError) -> Self {
        ResolveError::Io(e)
    }
}

fn cli(error: String, context: Map<String, Value>) -> ResolveError {
    let mut out = Map::new();
    out.insert("error".into(), Value::String(error));
    out.extend(context);
    ResolveError::Cli(Value::Object(out))
}

fn cli_plain(error: String) -> ResolveError {
    cli(error, Map::new())
}

/// Resolves `name` (or the one live session) for `purpose`.
pub fn resolve_session(dir: &LockDir, name: Option<&str>, purpose: Purpose) -> Result<LockData, ResolveError> {
    let connect = purpose == Purpose::Connect;
    let lock = match name {
        None => {
            let live = dir.live_sessions()?.live;
            match live.len() {
                0 if connect => {
                    return Err(ResolveError::Connect(
                        "No running Aluvia sessions found. Start one with: npx aluvia-sdk session start <url>".into(),
                    ))
                }
                0 => return Err(cli_plain("No running browser sessions found.".into())),
                1 => live.into_iter().next().unwrap_or_default(),
                _ => {
                    let names: Vec<String> = live.iter().filter_map(|l| l.session.clone()).collect();
                    if connect {
                        return Err(ResolveError::Connect(format!(
                            "Multiple Aluvia sessions running ({}). Specify which one: connect('{}')",
                            names.join(", "),
                            names.first().cloned().unwrap_or_default()
                        )));
                    }
                    let error = if purpose == Purpose::Close {
                        "Multiple sessions running. Specify --browser-session <name> or --all."
                    } else {
                        "Multiple sessions running. Specify --browser-session <name>."
                    };
                    let mut ctx = Map::new();
                    ctx.insert("browserSessions".into(), json!(names));
                    return Err(cli(error.into(), ctx));
                }
            }
        }
        Some(name) => {
            let missing = || match purpose {
                Purpose::Connect => ResolveError::Connect(format!(
                    "No Aluvia session found named '{name}'. Run 'npx aluvia-sdk session list' to list sessions."
                )),
                Purpose::Close => {
                    let mut ctx = Map::new();
                    ctx.insert("browserSession".into(), json!(name));
                    cli("No running browser session found.".into(), ctx)
                }
                _ => cli_plain(format!("No session found with name '{name}'.")),
            };
            if !validate_session_name(name) {
                return Err(if connect { missing() } else { cli_plain(INVALID_NAME_MESSAGE.into()) });
            }
            let mut lock = match dir.read(name)? {
                Some(LockRead::Valid(lock)) => lock,
                _ => return Err(missing()),
            };
            lock.session.get_or_insert_with(|| name.to_string());
            if purpose != Purpose::Close && !lock.is_live() {
                dir.remove_if_owned(name, lock.pid)?;
                return Err(if connect {
                    ResolveError::Connect(format!("Session '{name}' is no longer running. Stale lock file removed."))
                } else {
                    cli_plain(format!("Session '{name}' is no longer running (stale lock cleaned up)."))
                });
            }
            lock
        }
    };
    let name = lock.session.clone().unwrap_or_default();
    match purpose {
        Purpose::Connect if lock.ready != Some(true) => {
            Err(ResolveError::Connect(format!("Session '{name}' is still starting up. Try again shortly.")))
        }
        Purpose::Connect if lock.cdp_url.as_deref().is_none_or(str::is_empty) => {
            Err(ResolveError::Connect(format!("Session '{name}' has no CDP URL.")))
        }
        Purpose::Update if lock.connection_id.as_ref().is_none_or(Value::is_null) => Err(cli_plain(format!(
            "Session '{name}' has no connection ID. It may have been started without API access."
        ))),
        _ => Ok(lock),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::{dead_pid, TempDir};

    fn message(e: ResolveError) -> String {
        match e {
            ResolveError::Cli(v) => v.to_string(),
            ResolveError::Connect(m) => m,
            ResolveError::Io(e) => e.to_string(),
        }
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

        dir.write("a", &LockData { pid: me, session: Some("a".into()), ..LockData::default() }).unwrap();
        assert_eq!(r(None, Purpose::Get).unwrap().pid, me);
        assert_eq!(r(None, Purpose::Connect).unwrap_err(), "Session 'a' is still starting up. Try again shortly.");
        assert!(r(Some("a"), Purpose::Update).unwrap_err().contains("has no connection ID"));
        dir.update_owned("a", me, |l| l.ready = Some(true)).unwrap();
        assert_eq!(r(Some("a"), Purpose::Connect).unwrap_err(), "Session 'a' has no CDP URL.");

        dir.write("b", &LockData { pid: me, ..LockData::default() }).unwrap();
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
