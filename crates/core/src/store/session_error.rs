//! [`SessionError`]: every way a session command, `connect()` or the daemon
//! launcher fails, with its message and the context fields the CLI prints
//! after it (`{ error, ...context }`).

use serde::Serialize;
use serde_json::{Map, Value};

use super::naming::INVALID_NAME_MESSAGE;
use super::record::LockData;
use crate::error::AluviaError;

/// A session failure. Its `Display` is the message; its serialization (see
/// [`SessionError::context`]) is the context, field by field in output order.
#[derive(Debug, thiserror::Error, Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
pub enum SessionError {
    #[error("{}", INVALID_NAME_MESSAGE)]
    InvalidName {},
    /// A live process holds the name.
    #[error("A browser session named '{}' is already running.", .0.browser_session)]
    NameInUse(Box<Holder>),
    #[error("No running browser sessions found.")]
    NoneRunning {},
    /// More than one session runs and none was named; `close` also offers `--all`.
    #[error("Multiple sessions running. Specify --browser-session <name>{}.", if *or_all { " or --all" } else { "" })]
    Multiple {
        browser_sessions: Vec<String>,
        #[serde(skip)]
        or_all: bool,
    },
    /// `session close` of a name without a lock file.
    #[error("No running browser session found.")]
    CloseNotFound { browser_session: String },
    #[error("No session found with name '{name}'.")]
    NotFound {
        #[serde(skip)]
        name: String,
    },
    #[error("Session '{name}' is no longer running (stale lock cleaned up).")]
    Stale {
        #[serde(skip)]
        name: String,
    },
    #[error("Session '{name}' has no connection ID. It may have been started without API access.")]
    NoConnectionId {
        #[serde(skip)]
        name: String,
    },
    /// `session close` met a daemon that has not taken its lock over yet.
    #[error("Browser session '{name}' is still starting.")]
    StillStarting {
        #[serde(skip)]
        name: String,
    },
    /// The daemon exited before it was ready; `reason` is the cause it reported.
    #[error("Browser process exited unexpectedly.")]
    DaemonDied {
        browser_session: String,
        log_file: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Not ready in time; the daemon is left running under its lock.
    #[error("Browser is still initializing (timeout).")]
    DaemonTimeout { browser_session: String, log_file: String },
    /// Something other than a regular file is where the session's log goes.
    #[error("The session's log file is not a regular file. Remove it and try again.")]
    LogNotRegular { browser_session: String, log_file: String },
    /// `connect()` without a name, and no session runs.
    #[error("No running Aluvia sessions found. Start one with: npx aluvia-sdk session start <url>")]
    ConnectNoneRunning {},
    #[error("Multiple Aluvia sessions running ({}). Specify which one: connect('{}')", names.join(", "), names.first().map_or("", String::as_str))]
    ConnectMultiple {
        #[serde(skip)]
        names: Vec<String>,
    },
    #[error("No Aluvia session found named '{name}'. Run 'npx aluvia-sdk session list' to list sessions.")]
    ConnectNotFound {
        #[serde(skip)]
        name: String,
    },
    #[error("Session '{name}' is no longer running. Stale lock file removed.")]
    ConnectStale {
        #[serde(skip)]
        name: String,
    },
    #[error("Session '{name}' is still starting up. Try again shortly.")]
    ConnectStarting {
        #[serde(skip)]
        name: String,
    },
    #[error("Session '{name}' has no CDP URL.")]
    ConnectNoCdpUrl {
        #[serde(skip)]
        name: String,
    },
    #[error("Invalid profile name. Use only letters, numbers, hyphens, and underscores.")]
    ProfileInvalidName {},
    /// A session runs with the profile (ours).
    #[error("Profile '{profile}' is in use by session '{browser_session}'.")]
    ProfileInUse {
        browser_session: String,
        #[serde(skip)]
        profile: String,
    },
    /// A program's own client (no session) runs with the profile (ours).
    #[error("Profile '{profile}' is in use by another program (pid {pid}).")]
    ProfileHeld {
        #[serde(skip)]
        profile: String,
        #[serde(skip)]
        pid: u32,
    },
    #[error("No profile named '{profile}'.")]
    ProfileNotFound {
        #[serde(skip)]
        profile: String,
    },
    /// The lock directory or a process could not be used: not a session error
    /// of its own, it crosses as the error it is.
    #[error(transparent)]
    #[serde(skip_serializing)]
    Other(#[from] AluviaError),
}

/// A session error where only its message matters (an in-process client's).
impl From<SessionError> for AluviaError {
    fn from(e: SessionError) -> AluviaError {
        match e {
            SessionError::Other(e) => e,
            e => AluviaError::Invalid(e.to_string()),
        }
    }
}

/// The session that holds a name, as the name-in-use error shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub browser_session: String,
    pub pid: u32,
    pub start_url: Option<String>,
    pub cdp_url: Option<String>,
    pub connection_id: Value,
}

impl SessionError {
    /// The name-in-use error for session `name`, held by `lock`.
    pub fn name_in_use(name: &str, lock: &LockData) -> Self {
        SessionError::NameInUse(Box::new(Holder {
            browser_session: name.to_string(),
            pid: lock.pid,
            start_url: lock.url.clone(),
            cdp_url: lock.cdp_url.clone(),
            connection_id: lock.connection_id.clone().unwrap_or(Value::Null),
        }))
    }

    /// The stable code that crosses into JavaScript (`Other` has its own).
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::InvalidName {} => "SessionInvalidName",
            SessionError::NameInUse(_) => "SessionNameInUse",
            SessionError::NoneRunning {} => "SessionNoneRunning",
            SessionError::Multiple { .. } => "SessionMultiple",
            SessionError::CloseNotFound { .. } | SessionError::NotFound { .. } => "SessionNotFound",
            SessionError::Stale { .. } => "SessionStale",
            SessionError::NoConnectionId { .. } => "SessionNoConnectionId",
            SessionError::StillStarting { .. } => "SessionStillStarting",
            SessionError::DaemonDied { .. } => "SessionDaemonDied",
            SessionError::DaemonTimeout { .. } => "SessionDaemonTimeout",
            SessionError::LogNotRegular { .. } => "SessionLogNotRegular",
            SessionError::ConnectNoneRunning {}
            | SessionError::ConnectMultiple { .. }
            | SessionError::ConnectNotFound { .. }
            | SessionError::ConnectStale { .. }
            | SessionError::ConnectStarting { .. }
            | SessionError::ConnectNoCdpUrl { .. } => "ConnectError",
            SessionError::ProfileInvalidName {} => "ProfileInvalidName",
            SessionError::ProfileInUse { .. } | SessionError::ProfileHeld { .. } => "ProfileInUse",
            SessionError::ProfileNotFound { .. } => "ProfileNotFound",
            SessionError::Other(e) => e.code(),
        }
    }

    /// The fields the CLI prints after `error`, in order (empty for most).
    pub fn context(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(fields)) => fields,
            _ => Map::new(),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The error as the CLI prints it.
    pub(crate) fn printed(e: &SessionError) -> String {
        let mut out = Map::new();
        out.insert("error".into(), Value::from(e.to_string()));
        out.extend(e.context());
        Value::Object(out).to_string()
    }

    #[test]
    fn context_fields_follow_the_message_in_output_order() {
        let lock = LockData { pid: 7, url: Some("https://a".into()), ..LockData::default() };
        assert_eq!(
            printed(&SessionError::name_in_use("x", &lock)),
            r#"{"error":"A browser session named 'x' is already running.","browserSession":"x","pid":7,"startUrl":"https://a","cdpUrl":null,"connectionId":null}"#
        );
        let died = SessionError::DaemonDied { browser_session: "x".into(), log_file: "/l".into(), reason: None };
        assert_eq!(
            printed(&died),
            r#"{"error":"Browser process exited unexpectedly.","browserSession":"x","logFile":"/l"}"#
        );
        assert_eq!(
            printed(&SessionError::Stale { name: "x".into() }),
            r#"{"error":"Session 'x' is no longer running (stale lock cleaned up)."}"#
        );
        assert!(SessionError::Other(AluviaError::Internal("no".into())).context().is_empty());
        assert_eq!(SessionError::ConnectNoneRunning {}.code(), "ConnectError");
    }
}
