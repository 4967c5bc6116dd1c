//! Lock files: their records, atomic I/O, sweeping and name claims.

use std::fs;
use std::path::Path;

use serde_json::Value;

use super::*;
use crate::error::AluviaError;
use crate::store::testutil::{dead_pid, TempDir};
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Barrier};

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// An early lock of this version (with `processStart` when `pid` runs).
fn early(pid: u32) -> LockData {
    LockData {
        pid,
        process_start: crate::store::process_start(pid),
        proxy_url: Some("http://127.0.0.1:54321".into()),
        block_detection: Some(true),
        auto_unblock: Some(false),
        ..LockData::default()
    }
}

#[test]
fn session_profile_dir_keeps_its_key_and_place() {
    let text = r#"{"pid":1,"traffic":{"sent":1},"profileDir":"/tmp/aluvia-chromium-0123","browserIsolation":"none"}"#;
    let LockRead::Valid(data) = parse_lock("x", text.as_bytes()) else { panic!("not valid") };
    assert_eq!(data.profile_dir.as_deref(), Some("/tmp/aluvia-chromium-0123"));
    assert!(data.extra.get("profileDir").is_none());
    assert_eq!(serde_json::to_string(&data).unwrap(), text, "written back byte for byte");
}

#[test]
fn session_lock_json_shape() {
    let data = LockData { pid: 7, session: Some("a".into()), ready: Some(true), ..LockData::default() };
    assert_eq!(serde_json::to_string(&data).unwrap(), r#"{"pid":7,"session":"a","ready":true}"#);
    let full = r#"{"pid":12345,"session":"swift-falcon","connectionId":3449,"cdpUrl":"http://127.0.0.1:38209","proxyUrl":"http://127.0.0.1:54321","url":"https://example.com","ready":true,"blockDetection":true,"autoUnblock":false,"lastDetection":{"score":0.85},"traffic":{"bytes":1},"future":[1,2]}"#;
    let LockRead::Valid(data) = parse_lock("swift-falcon", full.as_bytes()) else { panic!() };
    assert_eq!(data.connection_id, Some(Value::from(3449)));
    assert_eq!(data.cdp_url.as_deref(), Some("http://127.0.0.1:38209"));
    assert_eq!(data.extra.get("future"), Some(&serde_json::json!([1, 2])));
    // Written back byte for byte, unknown field included.
    assert_eq!(serde_json::to_string(&data).unwrap(), full);
}

#[test]
fn session_lock_corrupt_content() {
    for bad in [&b""[..], b"{", b"null", b"{\"session\":\"x\"}", b"{\"pid\":-1}", b"{\"pid\":\"1\"}", b"\xff"] {
        match parse_lock("x", bad) {
            LockRead::Corrupt { name, reason } => {
                assert_eq!(name, "x");
                assert!(reason.starts_with("invalid lock file: "), "{reason}");
            }
            LockRead::Valid(d) => panic!("{bad:?} parsed as {d:?}"),
        }
    }
}

#[test]
fn session_lock_write_read_update_remove() {
    let tmp = TempDir::new("lock-rw");
    let dir = tmp.lock_dir();
    assert_eq!(mode_of(dir.path()), 0o700);
    assert_eq!(dir.read("alpha").unwrap(), None);

    let data = LockData { session: Some("alpha".into()), ..early(4242) };
    dir.write("alpha", &data).unwrap();
    assert_eq!(mode_of(&dir.lock_path("alpha")), 0o600);
    assert_eq!(dir.read("alpha").unwrap(), Some(LockRead::Valid(data.clone())));

    // The final write keeps lastDetection set meanwhile.
    let written = dir
        .update("alpha", |d| {
            d.last_detection = Some(serde_json::json!({"score": 0.9}));
            true
        })
        .unwrap();
    assert_eq!(written.and_then(|d| d.last_detection), Some(serde_json::json!({"score": 0.9})));
    assert!(dir
        .update_owned("alpha", 4242, |d| {
            d.ready = Some(true);
            d.cdp_url = Some("http://127.0.0.1:9222".into());
        })
        .unwrap()
        .is_some());
    let Some(LockRead::Valid(now)) = dir.read("alpha").unwrap() else { panic!() };
    assert_eq!(now.ready, Some(true));
    assert_eq!(now.pid, 4242);
    assert_eq!(now.last_detection, Some(serde_json::json!({"score": 0.9})));
    assert_eq!(mode_of(&dir.lock_path("alpha")), 0o600);

    // No temp files left behind.
    let names: Vec<String> =
        fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");

    assert_eq!(dir.update("missing", |_| panic!("not called")).unwrap(), None);
    fs::write(dir.log_path("alpha"), b"log").unwrap();
    dir.remove("alpha").unwrap();
    dir.remove("alpha").unwrap();
    assert_eq!(dir.read("alpha").unwrap(), None);
    assert!(dir.log_path("alpha").exists(), "the log stays");
    assert_eq!(dir.update("alpha", |_| panic!("not called")).unwrap(), None);
}

#[test]
fn session_lock_update_declined_writes_nothing() {
    use std::os::unix::fs::MetadataExt;
    let tmp = TempDir::new("lock-decline");
    let dir = tmp.lock_dir();
    dir.write("theirs", &early(4242)).unwrap();
    let path = dir.lock_path("theirs");
    let (bytes, inode) = (fs::read(&path).unwrap(), fs::metadata(&path).unwrap().ino());
    let declined = dir
        .update("theirs", |d| {
            d.ready = Some(true);
            false
        })
        .unwrap();
    assert_eq!(declined, None);
    assert_eq!(dir.update_owned("theirs", 4243, |_| panic!("not called")).unwrap(), None);
    // Not even rewritten as it was: a write renames a new file into place.
    assert_eq!(fs::read(&path).unwrap(), bytes);
    assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
    let owned = dir.update_owned("theirs", 4242, |d| d.ready = Some(true)).unwrap();
    assert_eq!(owned.and_then(|d| d.ready), Some(true));
    assert_ne!(fs::metadata(&path).unwrap().ino(), inode);
}

#[test]
fn session_stale_profiles_are_removed_outside_the_dir_lock() {
    let tmp = TempDir::new("lock-profile");
    let dir = tmp.lock_dir();
    let profile = tmp.path().join(format!("{PROFILE_DIR_PREFIX}0123"));
    let foreign = tmp.path().join("not-a-profile");
    for d in [&profile, &foreign] {
        fs::create_dir(d).unwrap();
        fs::write(d.join("Cookies"), b"x").unwrap();
    }
    let with_profile = |p: &Path| {
        let mut data = early(dead_pid());
        data.profile_dir = Some(p.to_str().unwrap().to_string());
        data
    };
    dir.write("stale", &with_profile(&profile)).unwrap();
    dir.write("stale-foreign", &with_profile(&foreign)).unwrap();

    // Under the directory lock: the locks go, the profiles are only collected.
    let (found, profiles) = dir.sweep().unwrap();
    assert_eq!(found, LiveSessions::default());
    assert_eq!(profiles, vec![profile.clone()]);
    assert!(profile.exists(), "not removed while the directory lock is held");
    assert!(!dir.lock_path("stale").exists());

    dir.write("stale", &with_profile(&profile)).unwrap();
    assert_eq!(dir.live_sessions().unwrap(), LiveSessions::default());
    assert!(!profile.exists(), "removed after the directory lock");
    assert!(foreign.exists(), "only what the engine creates is removed");
}

#[test]
fn session_remove_if_owned_takes_a_dead_owners_profile_along() {
    let tmp = TempDir::new("lock-remove-profile");
    let dir = tmp.lock_dir();
    let profile = |n: &str| {
        let p = tmp.path().join(format!("{PROFILE_DIR_PREFIX}{n}"));
        fs::create_dir(&p).unwrap();
        p
    };
    let lock = |pid: u32, p: &Path| {
        let mut data = early(pid);
        data.profile_dir = Some(p.to_str().unwrap().to_string());
        data
    };
    let (dead, live) = (profile("dead"), profile("live"));
    let gone = dead_pid();
    dir.write("killed", &lock(gone, &dead)).unwrap();
    dir.write("running", &lock(std::process::id(), &live)).unwrap();

    assert!(!dir.remove_if_owned("killed", gone + 1).unwrap(), "not its owner");
    assert!(dead.exists());
    assert!(dir.remove_if_owned("killed", gone).unwrap());
    assert!(!dead.exists(), "a dead owner's profile is removed with its lock");
    assert!(dir.remove_if_owned("running", std::process::id()).unwrap());
    assert!(live.exists(), "a live owner's profile is its own to remove");
}

#[test]
fn session_lock_rejects_bad_names() {
    let tmp = TempDir::new("lock-names");
    let dir = tmp.lock_dir();
    assert!(matches!(dir.write("../x", &early(1)), Err(AluviaError::Invalid(_))));
    assert!(matches!(dir.read("a/b"), Err(AluviaError::Invalid(_))));
    assert!(matches!(dir.remove(""), Err(AluviaError::Invalid(_))));
    assert!(matches!(dir.claim(Some("bad name"), early(0)), Err(SessionError::InvalidName {})));
    assert!(matches!(dir.claim(Some(""), early(0)), Err(SessionError::InvalidName {})));
    let err = dir.claim(Some("x/y"), early(0)).unwrap_err();
    assert_eq!(err.to_string(), INVALID_NAME_MESSAGE);
    assert!(dir.list().unwrap().is_empty());
}

#[test]
fn session_list_and_live_sessions() {
    let tmp = TempDir::new("lock-live");
    let dir = tmp.lock_dir();
    let me = std::process::id();
    let dead = dead_pid();
    dir.write("live-b", &early(me)).unwrap();
    dir.write("live-a", &LockData { session: Some("live-a".into()), ..early(me) }).unwrap();
    dir.write("stale", &early(dead)).unwrap();
    fs::write(dir.lock_path("broken"), b"{not json").unwrap();
    // Not lock files: ignored.
    fs::write(dir.path().join("cli-bad name.lock"), b"{}").unwrap();
    fs::write(dir.path().join("other.lock"), b"{}").unwrap();
    fs::write(dir.log_path("live-a"), b"log").unwrap();
    // A temp file orphaned by a dead writer, and one of a live writer.
    let orphan = dir.path().join(format!(".cli-x.lock.{dead}.0123456789abcdef.tmp"));
    let in_flight = dir.path().join(format!(".cli-y.lock.{me}.0123456789abcdef.tmp"));
    fs::write(&orphan, b"{").unwrap();
    fs::write(&in_flight, b"{").unwrap();

    let listed = dir.list().unwrap();
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["broken", "live-a", "live-b", "stale"]);
    assert!(matches!(&listed[0].1, LockRead::Corrupt { name, .. } if name == "broken"));

    let LiveSessions { live, corrupt } = dir.live_sessions().unwrap();
    let live_names: Vec<_> = live.iter().map(|d| d.session.as_deref().unwrap()).collect();
    assert_eq!(live_names, ["live-a", "live-b"]);
    assert!(live.iter().all(|d| d.pid == me));
    assert_eq!(corrupt.len(), 1);
    assert_eq!(corrupt[0].0, "broken");
    assert!(corrupt[0].1.contains("invalid lock file"), "{}", corrupt[0].1);

    assert!(!dir.lock_path("stale").exists(), "stale lock removed");
    assert!(dir.lock_path("broken").exists(), "corrupt lock kept");
    assert!(dir.path().join("cli-bad name.lock").exists());
    assert!(!orphan.exists());
    assert!(in_flight.exists());
    assert!(dir.log_path("live-a").exists());
}

#[test]
fn session_claim_custom_name() {
    let tmp = TempDir::new("claim");
    let dir = tmp.lock_dir();
    let me = std::process::id();

    let name = dir.claim(Some("my-scraper"), early(0)).unwrap();
    assert_eq!(name, "my-scraper");
    let Some(LockRead::Valid(lock)) = dir.read("my-scraper").unwrap() else { panic!() };
    assert_eq!(lock.pid, me, "pid 0 means this process");
    assert_eq!(lock.session.as_deref(), Some("my-scraper"));
    assert_eq!(lock.proxy_url.as_deref(), Some("http://127.0.0.1:54321"));
    assert_eq!(lock.ready, None);
    assert_eq!(mode_of(&dir.lock_path("my-scraper")), 0o600);

    // Held by a live pid (ours).
    match dir.claim(Some("my-scraper"), early(0)) {
        Err(SessionError::NameInUse(holder)) => {
            assert_eq!(holder.browser_session, "my-scraper");
            assert_eq!((holder.pid, holder.start_url), (lock.pid, lock.url.clone()));
        }
        other => panic!("{other:?}"),
    }
    let err = dir.claim(Some("my-scraper"), early(0)).unwrap_err();
    assert_eq!(err.to_string(), "A browser session named 'my-scraper' is already running.");

    // Stale: reclaimed.
    let dead = dead_pid();
    dir.write("old", &LockData { url: Some("https://old".into()), ..early(dead) }).unwrap();
    assert_eq!(dir.claim(Some("old"), early(me)).unwrap(), "old");
    let Some(LockRead::Valid(lock)) = dir.read("old").unwrap() else { panic!() };
    assert_eq!(lock.pid, me);
    assert_eq!(lock.url, None, "the stale content is gone");

    // Corrupt: replaced.
    fs::write(dir.lock_path("junk"), b"garbage").unwrap();
    assert_eq!(dir.claim(Some("junk"), early(me)).unwrap(), "junk");
    assert!(matches!(dir.read("junk").unwrap(), Some(LockRead::Valid(_))));
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
#[test]
fn session_a_lock_whose_pid_is_another_process_is_stale() {
    let tmp = TempDir::new("lock-reused");
    let dir = tmp.lock_dir();
    let me = std::process::id();
    // A claim records who this process is.
    dir.claim(Some("mine"), early(0)).unwrap();
    let Some(LockRead::Valid(mine)) = dir.read("mine").unwrap() else { panic!() };
    assert_eq!(mine.process_start, process_start(me));
    assert!(mine.process_start.is_some());
    // Our pid, recorded with another process's start: the pid was reused.
    // (Altered rather than borrowed from another process: two processes can
    // start in one clock tick.)
    let reused = LockData { process_start: process_start(me).map(|s| format!("{s}0")), ..early(me) };
    assert!(!reused.is_live());
    dir.write("reused", &reused).unwrap();
    // An older lock without the record: the pid alone decides.
    dir.write("older", &early(me)).unwrap();
    let live: Vec<_> = dir.live_sessions().unwrap().live.into_iter().filter_map(|l| l.session).collect();
    assert_eq!(live, ["mine", "older"]);
    assert!(!dir.lock_path("reused").exists(), "removed as stale");
    dir.write("reused", &reused).unwrap();
    assert_eq!(dir.claim(Some("reused"), early(0)).unwrap(), "reused", "a stale name is free");
}

#[test]
fn session_claim_generated_name() {
    let tmp = TempDir::new("claim-gen");
    let dir = tmp.lock_dir();
    let me = std::process::id();
    let first = dir.claim(None, early(me)).unwrap();
    let (adjective, noun) = first.split_once('-').unwrap();
    assert!(crate::store::ADJECTIVES.contains(&adjective) && crate::store::NOUNS.contains(&noun), "{first}");

    // Occupy every base name with a live pid: the next claim gets `-1`.
    let adjectives = crate::store::ADJECTIVES;
    for a in adjectives {
        for n in crate::store::NOUNS {
            let name = format!("{a}-{n}");
            if name != first {
                // Plain writes: 400 fsyncs would make this test slow.
                fs::write(dir.lock_path(&name), serde_json::to_vec(&early(me)).unwrap()).unwrap();
            }
        }
    }
    let next = dir.claim(None, early(me)).unwrap();
    assert!(next.ends_with("-1"), "{next}");

    // All base names stale: reused without a suffix.
    let dead = dead_pid();
    for (name, _) in dir.list().unwrap() {
        fs::write(dir.lock_path(&name), serde_json::to_vec(&early(dead)).unwrap()).unwrap();
    }
    let reused = dir.claim(None, early(me)).unwrap();
    assert!(!reused.ends_with("-1"), "{reused}");
    let Some(LockRead::Valid(lock)) = dir.read(&reused).unwrap() else { panic!() };
    assert_eq!(lock.pid, me);
}

#[test]
fn session_claim_race_threads_one_winner() {
    let tmp = TempDir::new("claim-race");
    let dir = tmp.lock_dir();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let dir = dir.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let initial = LockData { url: Some(format!("https://t{i}")), ..early(0) };
                dir.claim(Some("same"), initial).map(|_| i)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let winners: Vec<usize> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results.iter().all(|r| matches!(r, Ok(_) | Err(SessionError::NameInUse(_)))), "{results:?}");
    let Some(LockRead::Valid(lock)) = dir.read("same").unwrap() else { panic!() };
    assert_eq!(lock.url, Some(format!("https://t{}", winners[0])));
}

#[test]
fn session_claim_race_threads_generated_names_distinct() {
    let tmp = TempDir::new("claim-race-gen");
    let dir = tmp.lock_dir();
    let barrier = Arc::new(Barrier::new(8));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let dir = dir.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                dir.claim(None, early(0))
            })
        })
        .collect();
    let mut names: Vec<String> = handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8);
    assert_eq!(dir.live_sessions().unwrap().live.len(), 8);
}

const CHILD_ENV: &str = "ALUVIA_TEST_CLAIM_CHILD";

/// The child processes of `session_claim_race_processes_one_winner`.
fn claim_in_child(spec: &str) -> ! {
    let (path, holder) = spec.rsplit_once(':').unwrap();
    let dir = LockDir::open_at(path.into()).unwrap();
    // The lock names the (live) test parent so that a finished child does
    // not leave a stale lock behind for the slower ones.
    let code = match dir.claim(Some("same"), early(holder.parse().unwrap())) {
        Ok(_) => 0,
        Err(SessionError::NameInUse(_)) => 3,
        Err(_) => 4,
    };
    std::process::exit(code);
}

#[test]
fn session_claim_race_processes_one_winner() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        claim_in_child(&spec);
    }
    let tmp = TempDir::new("claim-procs");
    let dir = tmp.lock_dir();
    let exe = std::env::current_exe().unwrap();
    let spec = format!("{}:{}", dir.path().display(), std::process::id());
    let children: Vec<_> = (0..4)
        .map(|_| {
            std::process::Command::new(&exe)
                .args(["--exact", "store::tests::session_claim_race_processes_one_winner", "--test-threads=1", "-q"])
                .env(CHILD_ENV, &spec)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = children.into_iter().map(|mut c| c.wait().unwrap().code().unwrap()).collect();
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 3).count(), 3, "{codes:?}");
}

#[test]
fn session_a_browser_that_outlived_its_killed_daemon_is_ended_by_the_sweep() {
    let tmp = TempDir::new("lock-browser");
    let dir = tmp.lock_dir();
    let mut browser = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let pid = browser.id();
    let mut data = early(dead_pid());
    data.extra.insert("browserPid".into(), pid.into());
    data.extra.insert("browserStart".into(), super::process_start(pid).unwrap().into());
    dir.write("killed", &data).unwrap();
    // A recorded pid that is another process now (another start) is left alone.
    let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let mut reused = early(dead_pid());
    reused.extra.insert("browserPid".into(), other.id().into());
    reused.extra.insert("browserStart".into(), "0:0".into());
    dir.write("reused", &reused).unwrap();

    assert_eq!(dir.live_sessions().unwrap(), LiveSessions::default());
    let status = browser.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
    assert!(other.try_wait().unwrap().is_none(), "not the recorded process: left alone");
    let _ = other.kill();
    let _ = other.wait();
}
