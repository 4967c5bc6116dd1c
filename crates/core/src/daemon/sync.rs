//! Keeps a running daemon's lock file current: `lastDetection` on every
//! detection result (with, ours, `unblockLog` when it changed), and (ours)
//! `traffic` at most once per interval when it changed. One task does every
//! write, in order, off the async threads.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::browser::{DetectionEvent, DetectionSink};
use crate::detection::last_detection_json;
use crate::log::RepeatedFailure;
use crate::store::LockDir;
use crate::task::off_thread;

/// How often `traffic` is refreshed in the lock file (at most).
pub const TRAFFIC_INTERVAL: Duration = Duration::from_secs(1);

enum Write {
    /// `lastDetection`, and (ours) `unblockLog` when it changed.
    Detection(Value, Option<Value>),
    Traffic(Status),
}

/// What the daemon's lock file shows of its running proxy, refreshed at most
/// once per interval when it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// The traffic counters (`traffic`).
    pub traffic: Value,
    /// The gateway's last failure (`lastProxyError`).
    pub last_proxy_error: Option<Value>,
    /// Since when no client has used the browser (`idleSince`, ISO time;
    /// `None` while one does).
    pub idle_since: Option<String>,
}

/// The writer task; dropping it (or calling [`LockSync::stop`]) ends it.
pub struct LockSync {
    stop: CancellationToken,
    task: TaskTracker,
}

impl LockSync {
    /// Stops the writer and returns once a write in progress has ended, so
    /// that nothing writes the lock file after this (its removal, say).
    pub async fn stop(&self) {
        self.stop.cancel();
        self.task.close();
        self.task.wait().await;
    }
}

impl Drop for LockSync {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Starts the writer for lock `name` owned by `pid` (a lock file that is
/// missing, corrupt or claimed by another pid is left alone). Returns the
/// detection sink to hand to the client and the task. `traffic` is polled
/// every `interval`. Must be called within a tokio runtime.
pub fn start_lock_sync(
    dir: LockDir,
    name: String,
    pid: u32,
    interval: Duration,
    traffic: impl Fn() -> Option<Status> + Send + 'static,
) -> (DetectionSink, LockSync) {
    let report = |line: String| crate::log::write_line(&format!("lock sync: {line}"));
    start_reporting(dir, name, pid, interval, traffic, report)
}

/// [`start_lock_sync`], with the lines about failed writes (the first of a
/// run, and the recovery) going to `report`.
fn start_reporting(
    dir: LockDir,
    name: String,
    pid: u32,
    interval: Duration,
    traffic: impl Fn() -> Option<Status> + Send + 'static,
    report: impl Fn(String) + Send + 'static,
) -> (DetectionSink, LockSync) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
    let sink_tx = tx.clone();
    let sink: DetectionSink = std::sync::Arc::new(move |event: DetectionEvent| {
        let log = event.unblock_log.as_ref().and_then(|log| serde_json::to_value(log).ok());
        let _ = sink_tx.send(Write::Detection(last_detection_json(&event.result, now_ms()), log));
    });
    let stop = CancellationToken::new();
    let stopped = stop.clone();
    let task = TaskTracker::new();
    task.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_traffic: Option<Status> = None;
        let mut failures = RepeatedFailure::once("lock file update");
        loop {
            let write = tokio::select! {
                _ = stopped.cancelled() => return,
                w = rx.recv() => match w { Some(w) => w, None => return },
                _ = tick.tick() => match traffic() {
                    Some(t) if last_traffic.as_ref() != Some(&t) => Write::Traffic(t),
                    _ => continue,
                },
            };
            if stopped.is_cancelled() {
                return;
            }
            if let Write::Traffic(t) = &write {
                last_traffic = Some(t.clone());
            }
            let dir = dir.clone();
            let name = name.clone();
            let written = off_thread(move || {
                dir.update_owned(&name, pid, |lock| match write {
                    Write::Detection(d, log) => {
                        lock.last_detection = Some(d);
                        if log.is_some() {
                            lock.unblock_log = log;
                        }
                    }
                    Write::Traffic(t) => {
                        lock.traffic = Some(t.traffic);
                        lock.last_proxy_error = t.last_proxy_error;
                        lock.extra.insert("idleSince".into(), t.idle_since.map_or(Value::Null, Value::from));
                    }
                })
            })
            .await;
            // A full disk: said once, not on every update, and again once it passes.
            let line = match written {
                Ok(_) => failures.succeeded(),
                Err(e) => failures.failed(&e),
            };
            if let Some(line) = line {
                report(line);
            }
        }
    });
    drop(tx);
    (sink, LockSync { stop, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(traffic: Value) -> Status {
        Status { traffic, last_proxy_error: None, idle_since: None }
    }
    use crate::store::testutil::TempDir;
    use crate::store::LockData;
    use crate::store::LockRead;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn session_lock_sync_writes_traffic_when_changed() {
        let tmp = TempDir::new("sync");
        let dir = tmp.lock_dir();
        let pid = std::process::id();
        dir.write("s", &LockData { pid, ready: Some(true), ..LockData::default() }).unwrap();
        let counter = Arc::new(AtomicU64::new(1));
        let c = Arc::clone(&counter);
        let (_sink, sync) = start_lock_sync(dir.clone(), "s".into(), pid, Duration::from_millis(20), move || {
            Some(status(serde_json::json!({ "bytes": c.load(Ordering::Relaxed) })))
        });
        let read = |dir: &LockDir| match dir.read("s").unwrap() {
            Some(LockRead::Valid(d)) => d,
            other => panic!("{other:?}"),
        };
        for _ in 0..100 {
            if read(&dir).traffic.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(read(&dir).traffic, Some(serde_json::json!({ "bytes": 1 })));
        counter.store(2, Ordering::Relaxed);
        for _ in 0..100 {
            if read(&dir).traffic == Some(serde_json::json!({ "bytes": 2 })) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(read(&dir).traffic, Some(serde_json::json!({ "bytes": 2 })));
        assert_eq!(read(&dir).ready, Some(true));
        sync.stop().await;
        // Another owner's lock is left alone: not even rewritten.
        dir.write("s", &LockData { pid: pid + 1, ..LockData::default() }).unwrap();
        let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(dir.lock_path("s")).unwrap());
        let before = inode();
        let (_sink, _sync) =
            start_lock_sync(dir.clone(), "s".into(), pid, Duration::from_millis(5), || Some(status(Value::from(1))));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(read(&dir).traffic, None);
        assert_eq!(inode(), before);
    }

    #[tokio::test]
    async fn session_lock_sync_reports_a_failing_write_once() {
        let tmp = TempDir::new("sync-fail");
        let dir = tmp.lock_dir();
        let pid = std::process::id();
        let lock = LockData { pid, ready: Some(true), ..LockData::default() };
        dir.write("s", &lock).unwrap();
        // The directory goes away under the daemon: every write fails.
        std::fs::remove_dir_all(dir.path()).unwrap();
        let ticks = Arc::new(AtomicU64::new(0));
        let lines = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let (t, l) = (Arc::clone(&ticks), Arc::clone(&lines));
        let (_sink, sync) = start_reporting(
            dir.clone(),
            "s".into(),
            pid,
            Duration::from_millis(5),
            // Always new traffic, so that every tick writes.
            move || Some(status(Value::from(t.fetch_add(1, Ordering::SeqCst)))),
            move |line| l.lock().unwrap().push(line),
        );
        while ticks.load(Ordering::SeqCst) < 20 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        {
            let lines = lines.lock().unwrap();
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(lines[0].starts_with("lock file update failed: "), "{lines:?}");
        }
        // The directory is back: one line says so, and writes go on.
        let again = LockDir::open_at(dir.path().to_path_buf()).unwrap();
        again.write("s", &lock).unwrap();
        while lines.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sync.stop().await;
        assert!(matches!(again.read("s").unwrap(), Some(LockRead::Valid(LockData { traffic: Some(_), .. }))));
        let lines = lines.lock().unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[1].starts_with("lock file update works again after "), "{lines:?}");
    }
}
