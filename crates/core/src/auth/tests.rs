use std::os::unix::fs::PermissionsExt;

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
