//! The gateway's failures, made visible: the last one (for `session get`'s
//! `lastProxyError`) and a log line per host and cause, at most one a
//! minute for each, so that an outage does not fill the log.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::traffic::Route;
use crate::log::Logger;

/// How often the same host and cause is logged again while it goes on.
const RELOG_AFTER: Duration = Duration::from_secs(60);

/// Hosts whose last line is remembered; past it the memory starts afresh.
const REMEMBERED: usize = 1024;

/// One failure of a request or tunnel on the gateway route.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProxyFailure {
    /// When it happened (ISO 8601, UTC).
    pub at: String,
    pub hostname: String,
    pub route: Route,
    /// What went wrong, as the client was told (one line, no credentials).
    pub reason: String,
}

#[derive(Debug, Default)]
pub(crate) struct Failures {
    last: Mutex<Option<ProxyFailure>>,
    logged: Mutex<HashMap<(String, &'static str), Instant>>,
}

/// The kind of failure, for rate-limiting its log lines.
fn cause(reason: &str) -> &'static str {
    let r = reason.to_ascii_lowercase();
    if r.contains("407") || r.contains("credentials") {
        "credentials refused"
    } else if r.contains("refused") {
        "connection refused"
    } else if r.contains("timed out") || r.contains("within") || r.contains("timeout") {
        "timeout"
    } else {
        "failed"
    }
}

impl Failures {
    /// Records a failure on `route` to `hostname`; only the gateway's count.
    pub(crate) fn record(&self, logger: &Logger, hostname: &str, route: Route, reason: &str) {
        if route != Route::Gateway {
            return;
        }
        let reason = crate::text::sanitize(reason);
        let kind = cause(&reason);
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(ProxyFailure {
            at: crate::log::iso_now(),
            hostname: hostname.to_string(),
            route,
            reason: reason.clone(),
        });
        let now = Instant::now();
        let mut logged = self.logged.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (hostname.to_string(), kind);
        if logged.get(&key).is_some_and(|at| now.duration_since(*at) < RELOG_AFTER) {
            return;
        }
        if logged.len() >= REMEMBERED {
            logged.clear();
        }
        logged.insert(key, now);
        drop(logged);
        logger.warn(format!("proxy: the gateway failed for {hostname} ({kind}): {reason}"));
    }

    pub(crate) fn last(&self) -> Option<ProxyFailure> {
        self.last.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}
