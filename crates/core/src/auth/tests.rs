use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use aluvia_emulator::{Emulator, EmulatorOptions};
use serde_json::json;

use super::*;
use crate::api::interpret;

struct Home(PathBuf);

impl Home {
    fn new() -> Home {
        let dir = std::env::temp_dir().join(format!("aluvia-auth-test-{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir_all(&dir).unwrap();
        Home(dir)
    }
    fn config(&self) -> PathBuf {
        config_path(&self.0)
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn save_sets_private_modes_on_every_write_and_keeps_other_fields() {
    let home = Home::new();
    let path = home.config();
    save_key(&path, "k1").unwrap();
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&path), 0o600);
    fs::set_permissions(path.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut extra: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    extra["note"] = json!("kept");
    fs::write(&path, extra.to_string()).unwrap();
    save_key(&path, "k2").unwrap();
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(mode(&path), 0o600);
    let saved: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(saved, json!({ "apiKey": "k2", "note": "kept" }));
    // No temp file is left behind.
    assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
}

#[test]
fn files_that_are_not_ours_are_refused_and_left_alone() {
    let home = Home::new();
    let path = home.config();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    for (content, why) in [
        ("not json {", "is not valid JSON"),
        ("[1,2]", "not a JSON object"),
        (r#"{"token":"x"}"#, "no apiKey"),
        (r#"{"apiKey":7}"#, "no apiKey"),
    ] {
        fs::write(&path, content).unwrap();
        for err in [
            save_key(&path, "k").unwrap_err(),
            resolve_key(None, &path).unwrap_err(),
            status(None, &path).unwrap_err(),
            logout(&path).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(text.contains(why) && text.contains(&path.display().to_string()), "{text}");
            assert!(text.contains("left untouched"), "{text}");
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), content);
    }
    // The environment's key still wins over a file that is not ours.
    assert_eq!(resolve_key(Some("env"), &path).unwrap(), ("env".into(), KeySource::Env));
}

#[test]
fn key_source_env_then_file_then_none() {
    let home = Home::new();
    let path = home.config();
    assert_eq!(resolve_key(Some("  "), &path).unwrap_err().to_string(), NO_KEY_MESSAGE);
    assert_eq!(
        status(None, &path).unwrap(),
        Status { authenticated: false, source: None, config_file: path.display().to_string() }
    );
    assert!(!logout(&path).unwrap());
    save_key(&path, "from-file").unwrap();
    assert_eq!(resolve_key(None, &path).unwrap(), ("from-file".into(), KeySource::Config));
    assert_eq!(resolve_key(Some("from-env"), &path).unwrap(), ("from-env".into(), KeySource::Env));
    assert_eq!(status(None, &path).unwrap().source, Some(KeySource::Config));
    assert_eq!(status(Some("e"), &path).unwrap().source, Some(KeySource::Env));
    assert!(logout(&path).unwrap());
    assert!(!path.exists());
}

// ------------------------------------------------ folder and file safety

/// Every use of the config file, each on a thread of its own that must end
/// within 5 s (reading a FIFO would hang): the text of each error.
fn every_use_fails(path: &Path) -> Vec<String> {
    type Use = fn(&Path) -> Result<()>;
    let uses: [(&str, Use); 5] = [
        ("save", |p| save_key(p, "new-key")),
        ("read", |p| read_config(p).map(drop)),
        ("resolve", |p| resolve_key(None, p).map(drop)),
        ("status", |p| status(None, p).map(drop)),
        ("logout", |p| logout(p).map(drop)),
    ];
    uses.into_iter()
        .map(|(what, run)| {
            let (tx, rx) = std::sync::mpsc::channel();
            let owned = path.to_path_buf();
            std::thread::spawn(move || {
                let _ = tx.send(run(&owned));
            });
            let result = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_else(|_| panic!("{what} hung"));
            match result {
                Ok(()) => panic!("{what} used {}", path.display()),
                Err(e) => e.to_string(),
            }
        })
        .collect()
}

/// Asserts that every use fails with exactly `expected`.
fn refused_with(path: &Path, expected: &str) {
    for text in every_use_fails(path) {
        assert_eq!(text, expected);
    }
}

/// What is at `path` and, for a folder, in it: type, mode, owner, and the
/// content of each file or the target of each link.
fn snapshot(path: &Path) -> Vec<(String, u32, u32, String)> {
    let one = |p: &Path| {
        let meta = fs::symlink_metadata(p).unwrap();
        let what = if meta.file_type().is_symlink() {
            format!("-> {}", fs::read_link(p).unwrap().display())
        } else if meta.is_file() {
            fs::read_to_string(p).unwrap()
        } else {
            String::new()
        };
        (p.display().to_string(), meta.mode(), meta.uid(), what)
    };
    let mut all = vec![one(path)];
    if fs::symlink_metadata(path).unwrap().is_dir() {
        let mut names: Vec<_> = fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        names.sort();
        all.extend(names.iter().map(|p| one(p)));
    }
    all
}

/// `{home}/.aluvia` created 0700 (whatever the umask) with `config.json`
/// holding `{"apiKey": key}` at 0600.
fn saved(home: &Home, key: &str) -> PathBuf {
    let path = home.config();
    let dir = path.parent().unwrap();
    fs::create_dir_all(dir).unwrap();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(&path, json!({ "apiKey": key }).to_string()).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn skip_unless_root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return false;
    }
    eprintln!("skipped: {what}: it needs root");
    true
}

#[test]
fn a_symlinked_folder_is_refused_and_its_target_left_alone() {
    let home = Home::new();
    let elsewhere = Home::new();
    let target = saved(&elsewhere, "theirs").parent().unwrap().to_path_buf();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(target.join("config.json"), fs::Permissions::from_mode(0o644)).unwrap();
    let dir = home.0.join(".aluvia");
    std::os::unix::fs::symlink(&target, &dir).unwrap();
    let before = snapshot(&target);
    refused_with(&home.config(), &format!("Refusing to use {}: it is a symlink.", dir.display()));
    // No chmod through the link, no write, no temp file; the link is still there.
    assert_eq!(snapshot(&target), before);
    assert!(fs::symlink_metadata(&dir).unwrap().file_type().is_symlink());

    // A link to nowhere is refused too, and nothing is created at its target.
    let nowhere = elsewhere.0.join("not-yet");
    fs::remove_file(&dir).unwrap();
    std::os::unix::fs::symlink(&nowhere, &dir).unwrap();
    refused_with(&home.config(), &format!("Refusing to use {}: it is a symlink.", dir.display()));
    assert!(!nowhere.exists());
}

#[test]
fn a_symlinked_config_file_is_refused_and_its_target_left_alone() {
    let home = Home::new();
    let path = saved(&home, "ours");
    let elsewhere = Home::new();
    let target = elsewhere.0.join("real.json");
    fs::write(&target, json!({ "apiKey": "theirs" }).to_string()).unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let before = (snapshot(&elsewhere.0), snapshot(path.parent().unwrap()));
    refused_with(&path, &format!("Refusing to use {}: it is a symlink.", path.display()));
    assert_eq!((snapshot(&elsewhere.0), snapshot(path.parent().unwrap())), before);
    // The environment's key is used without looking at the file.
    assert_eq!(resolve_key(Some("env"), &path).unwrap(), ("env".into(), KeySource::Env));
}

#[test]
fn a_fifo_socket_folder_or_device_in_place_of_the_file_fails_at_once() {
    let home = Home::new();
    let path = saved(&home, "ours");
    let dir = path.parent().unwrap().to_path_buf();
    let not_regular = |kind: &str| format!("Refusing to use {}: it is not a regular file ({kind}).", path.display());

    fs::remove_file(&path).unwrap();
    let name = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `name` is a NUL-terminated path alive for the call.
    assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0, "mkfifo");
    let before = snapshot(&dir);
    refused_with(&path, &not_regular("a FIFO"));
    assert_eq!(snapshot(&dir), before);

    fs::remove_file(&path).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    refused_with(&path, &not_regular("a socket"));
    drop(listener);

    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    refused_with(&path, &not_regular("a directory"));
    fs::remove_dir(&path).unwrap();

    if !skip_unless_root("a device in place of config.json") {
        // SAFETY: `name` is a NUL-terminated path alive for the call; (1, 3) is /dev/null.
        let made = unsafe { libc::mknod(name.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
        assert_eq!(made, 0, "mknod");
        refused_with(&path, &not_regular("a character device"));
        fs::remove_file(&path).unwrap();
    }

    // A file in place of the folder.
    fs::remove_dir(&dir).unwrap();
    fs::write(&dir, "x").unwrap();
    refused_with(&path, &format!("Refusing to use {}: it is not a directory (a regular file).", dir.display()));
    assert_eq!(fs::read_to_string(&dir).unwrap(), "x");
}

#[test]
fn a_folder_or_file_writable_by_group_or_others_is_refused_and_left_alone() {
    let home = Home::new();
    let path = saved(&home, "ours");
    let dir = path.parent().unwrap().to_path_buf();
    for mode in [0o664, 0o602, 0o666] {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let before = snapshot(&dir);
        refused_with(
            &path,
            &format!(
                "Refusing to use {}: it is writable by group or others (mode {mode:04o}). Run chmod 600 {}.",
                path.display(),
                path.display()
            ),
        );
        assert_eq!(snapshot(&dir), before);
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    for mode in [0o770, 0o757, 0o1777] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
        let before = snapshot(&dir);
        refused_with(
            &path,
            &format!(
                "Refusing to use {}: it is writable by group or others (mode {mode:04o}). Run chmod 700 {}.",
                dir.display(),
                dir.display()
            ),
        );
        assert_eq!(snapshot(&dir), before);
    }
    // Readable by others is allowed (and tightened on the next write).
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(resolve_key(None, &path).unwrap(), ("ours".into(), KeySource::Config));
    save_key(&path, "again").unwrap();
    assert_eq!((mode(&dir), mode(&path)), (0o700, 0o600));
}

#[test]
fn a_folder_or_file_owned_by_another_user_is_refused_and_left_alone() {
    if skip_unless_root("chown to another uid") {
        return;
    }
    let home = Home::new();
    let path = saved(&home, "ours");
    let dir = path.parent().unwrap().to_path_buf();
    let other = 65534;
    let owned_by =
        |p: &Path| format!("Refusing to use {}: it is owned by uid {other}, not by you (uid 0).", p.display());

    std::os::unix::fs::chown(&path, Some(other), Some(other)).unwrap();
    let before = snapshot(&dir);
    refused_with(&path, &owned_by(&path));
    assert_eq!(snapshot(&dir), before);

    std::os::unix::fs::chown(&path, Some(0), Some(0)).unwrap();
    std::os::unix::fs::chown(&dir, Some(other), Some(other)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    let before = snapshot(&dir);
    refused_with(&path, &owned_by(&dir));
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn poll_answers() {
    let answer = |status: u16, body: Value| interpret(status, Some("application/json"), None, &body.to_string());
    let coded = |code: &str| answer(400, json!({ "success": false, "error": { "code": code, "message": "m" } }));
    assert_eq!(parse_poll(&coded("authorization_pending")).unwrap(), Poll::Pending);
    assert_eq!(parse_poll(&coded("slow_down")).unwrap(), Poll::SlowDown);
    assert_eq!(parse_poll(&coded("denied")).unwrap(), Poll::Denied);
    assert_eq!(parse_poll(&coded("expired")).unwrap(), Poll::Expired);
    assert_eq!(parse_poll(&coded("invalid")).unwrap(), Poll::Invalid);
    assert_eq!(parse_poll(&answer(400, json!({ "error": "expired_token" }))).unwrap(), Poll::Expired);
    assert_eq!(
        parse_poll(&answer(200, json!({ "success": true, "data": { "api_key": "k" } }))).unwrap(),
        Poll::Approved("k".into())
    );
    assert!(parse_poll(&answer(200, json!({ "success": true, "data": {} }))).is_err());
    assert!(parse_poll(&answer(500, json!({}))).unwrap_err().to_string().contains("HTTP 500"));
}

async fn emulator(interval: u64) -> Emulator {
    let opts = EmulatorOptions { site: false, auth_interval: Some(interval), ..EmulatorOptions::default() };
    Emulator::start(opts).await.unwrap()
}

async fn admin(emu: &Emulator, action: &str, body: Value) {
    let base = emu.api_base_url().replace("/v1", "");
    let path = if action.is_empty() { "/_emulator/auth".to_string() } else { format!("/_emulator/auth/{action}") };
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(emu.api_key())
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{action}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_waits_for_approval_then_saves_the_checked_key() {
    let emu = emulator(1).await;
    let home = Home::new();
    let base = emu.api_base_url();
    let login = start_login(Some(&base)).await.unwrap();
    assert_eq!(login.interval, 1);
    assert!(login.verification_uri_complete.ends_with(&login.user_code));
    let path = home.config();
    let task = {
        let (base, login, path) = (base.clone(), login.clone(), path.clone());
        tokio::spawn(async move { finish_login(Some(&base), &login, &path, LOGIN_CAP).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!task.is_finished() && !path.exists());
    admin(&emu, "approve", json!({ "userCode": login.user_code })).await;
    task.await.unwrap().unwrap();
    assert_eq!(resolve_key(None, &path).unwrap(), (emu.api_key(), KeySource::Config));
    // A code is good for one key: polled again, it is invalid.
    let again = finish_login(Some(&base), &login, &path, LOGIN_CAP).await.unwrap_err();
    assert_eq!(again.to_string(), INVALID);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_ends_at_the_cap_and_on_a_key_the_api_refuses() {
    let emu = emulator(1).await;
    let home = Home::new();
    let base = emu.api_base_url();
    let login = start_login(Some(&base)).await.unwrap();
    let started = std::time::Instant::now();
    let err = finish_login(Some(&base), &login, &home.config(), Duration::from_secs(3)).await.unwrap_err();
    assert_eq!(err.to_string(), "The login timed out after 3 s without approval. Run `aluvia auth` again.");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        timed_out(LOGIN_CAP).to_string(),
        "The login timed out after 10 minutes without approval. Run `aluvia auth` again."
    );

    // A code that expires before the cap: the login ends when it does.
    admin(&emu, "", json!({ "expiresIn": 2 })).await;
    let login = start_login(Some(&base)).await.unwrap();
    assert_eq!(login.expires_in, 2);
    let err = finish_login(Some(&base), &login, &home.config(), LOGIN_CAP).await.unwrap_err();
    assert_eq!(err.to_string(), EXPIRED);
    admin(&emu, "", json!({ "expiresIn": 600 })).await;

    let login = start_login(Some(&base)).await.unwrap();
    admin(&emu, "approve", json!({ "userCode": login.user_code, "apiKey": "not-a-key" })).await;
    let err = finish_login(Some(&base), &login, &home.config(), LOGIN_CAP).await.unwrap_err().to_string();
    assert!(err.starts_with("The API key from the login did not work (Authentication failed (HTTP 401)"), "{err}");
    assert!(!err.contains("not-a-key"), "{err}");
    assert!(!home.config().exists());
    emu.stop().await;
}
