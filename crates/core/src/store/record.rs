//! The record of one session: a lock file's JSON schema (`cli-{name}.lock`)
//! and how it is parsed. Reading never fails on bad content.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::process::{is_recorded_process, is_session_daemon, process_start};

/// How the name of every Chromium profile directory the engine creates starts
/// (stale-session cleanup removes only directories named like this).
pub const PROFILE_DIR_PREFIX: &str = "aluvia-chromium-";

/// A lock file's JSON. Optional fields are left out when `None`; fields this
/// version does not know are kept in `extra` and written back.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LockData {
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdp_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_detection: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_unblock: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_detection: Option<Value>,
    /// Ours: what identifies the process `pid` names beyond its pid
    /// ([`process_start`]), so that a reused pid does not pass for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start: Option<String>,
    /// Ours: the session's traffic counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Value>,
    /// Ours: the gateway's last failure since the session started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_proxy_error: Option<Value>,
    /// Ours: the daemon's Chromium profile, which stale cleanup removes when
    /// the daemon was killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_dir: Option<String>,
    /// Ours: the last auto-unblock actions, oldest first (`unblockLog`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unblock_log: Option<Value>,
    /// Unknown fields, preserved.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl LockData {
    /// Whether the process this lock names is running: its pid is alive and
    /// still that process (`processStart`); a lock without `processStart` (an
    /// older version's) only while the pid's command line is a session daemon's.
    pub fn is_live(&self) -> bool {
        is_recorded_process(self.pid, self.process_start.as_deref())
            && (self.process_start.is_some() || is_session_daemon(self.pid))
    }

    /// Names this process, with its `processStart`.
    pub fn own(&mut self) {
        self.pid = std::process::id();
        self.process_start = process_start(self.pid);
    }
}

/// A lock file as read: reading never fails on bad content.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // `Valid` is the common case; boxing it buys nothing.
pub enum LockRead {
    Valid(LockData),
    /// Not a valid lock file (bad JSON, no pid, unreadable): reported and skipped.
    Corrupt {
        name: String,
        reason: String,
    },
}

/// Parses lock file content.
pub fn parse_lock(name: &str, bytes: &[u8]) -> LockRead {
    match serde_json::from_slice::<LockData>(bytes) {
        Ok(data) => LockRead::Valid(data),
        Err(e) => LockRead::Corrupt { name: name.to_string(), reason: format!("invalid lock file: {e}") },
    }
}
