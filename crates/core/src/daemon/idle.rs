//! The idle timeout of a CLI session (ours): a session whose CDP endpoint
//! has had no client for that long closes itself, as `session close` would.

use std::sync::Arc;
use std::time::Duration;

use super::run::DaemonExit;
use crate::browser::Activity;
use crate::error::{AluviaError, Result};

/// A headless session's timeout when none is given (`--headful` and `--run`
/// sessions have none unless given).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The longest timeout taken (a year); longer is refused as a mistake.
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

fn invalid(text: &str) -> AluviaError {
    AluviaError::Invalid(format!(
        "Invalid --idle-timeout: '{}'. Use a duration such as 30m, 2h or 0.",
        crate::text::sanitize_to(text, 40)
    ))
}

/// `90s`, `30m`, `2h`, `500ms` or a number of milliseconds; `None` for `0`
/// (never).
pub fn parse_idle_timeout(text: &str) -> Result<Option<Duration>> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let unit_ms: u64 = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid(text)),
    };
    let n: u64 = digits.parse().map_err(|_| invalid(text))?;
    let ms = n.checked_mul(unit_ms).ok_or_else(|| invalid(text))?;
    let d = Duration::from_millis(ms);
    if d > MAX_IDLE_TIMEOUT {
        return Err(invalid(text));
    }
    Ok((ms > 0).then_some(d))
}

/// The session's timeout: the given one, else [`DEFAULT_IDLE_TIMEOUT`] for a
/// headless session without a script, else none.
pub fn idle_timeout(given: Option<&str>, headful: bool, script: bool) -> Result<Option<Duration>> {
    match given {
        Some(text) => parse_idle_timeout(text),
        None if headful || script => Ok(None),
        None => Ok(Some(DEFAULT_IDLE_TIMEOUT)),
    }
}

/// `d` as it is written: `1h`, `30m`, `90s`, `1500ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0".into(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1000) => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

/// Resolves once the browser's endpoint has had no client for `timeout`:
/// the daemon's exit, whose reason the log shows (`closed after 1h idle`).
pub(super) async fn expired(activity: Arc<Activity>, timeout: Duration) -> DaemonExit {
    loop {
        // Listening before looking, so that no change in between is missed.
        let changed = activity.changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        match activity.idle_since() {
            None => changed.await,
            Some(since) => {
                let idle = since.elapsed().unwrap_or_default();
                if idle >= timeout {
                    return DaemonExit::new(0, format!("closed after {} idle", format_duration(timeout)));
                }
                tokio::select! {
                    () = changed => {}
                    () = tokio::time::sleep(timeout - idle) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_the_cli_takes_them() {
        let ok = |t: &str| parse_idle_timeout(t).unwrap().map(|d| d.as_millis());
        assert_eq!(ok("90s"), Some(90_000));
        assert_eq!(ok("30m"), Some(1_800_000));
        assert_eq!(ok("2h"), Some(7_200_000));
        assert_eq!(ok("1500"), Some(1500));
        assert_eq!(ok("250ms"), Some(250));
        assert_eq!(ok(" 3s "), Some(3000));
        assert_eq!(ok("0"), None);
        assert_eq!(ok("0s"), None);
        for bad in ["", "s", "-1", "1.5h", "10x", "1 h", "99999999999999999999", "400d", "3s; rm"] {
            assert_eq!(
                parse_idle_timeout(bad).unwrap_err().to_string(),
                format!("Invalid --idle-timeout: '{}'. Use a duration such as 30m, 2h or 0.", bad),
                "{bad}"
            );
        }
        assert_eq!(idle_timeout(None, false, false).unwrap(), Some(DEFAULT_IDLE_TIMEOUT));
        assert_eq!(idle_timeout(None, true, false).unwrap(), None);
        assert_eq!(idle_timeout(None, false, true).unwrap(), None);
        assert_eq!(idle_timeout(Some("5s"), true, true).unwrap(), Some(Duration::from_secs(5)));
        for (ms, text) in [(3_600_000, "1h"), (1_800_000, "30m"), (90_000, "90s"), (1500, "1500ms")] {
            assert_eq!(format_duration(Duration::from_millis(ms)), text);
        }
    }

    #[tokio::test]
    async fn an_endpoint_without_clients_expires_after_the_timeout() {
        let activity = Activity::new();
        let began = std::time::Instant::now();
        let exit = expired(Arc::clone(&activity), Duration::from_millis(200)).await;
        assert!(began.elapsed() >= Duration::from_millis(200));
        assert_eq!(exit, DaemonExit::new(0, "closed after 200ms idle"));
        // A touch restarts the clock.
        activity.touch();
        let waiter = tokio::spawn(expired(Arc::clone(&activity), Duration::from_millis(300)));
        tokio::time::sleep(Duration::from_millis(200)).await;
        activity.touch();
        let touched = std::time::Instant::now();
        waiter.await.unwrap();
        assert!(touched.elapsed() >= Duration::from_millis(290), "{:?}", touched.elapsed());
    }
}
