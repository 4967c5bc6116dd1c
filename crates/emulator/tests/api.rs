//! The REST API and its admin fault endpoints, against a real emulator on loopback.

mod common;

use std::time::{Duration, Instant};

use common::{admin, admin_url, api, create_connection, http, start, url};
use reqwest::Method;
use serde_json::{json, Value};

fn assert_error(body: &Value, code: &str, message: &str) {
    assert_eq!(body["success"], json!(false), "{body}");
    assert_eq!(body["error"]["code"], json!(code), "{body}");
    assert_eq!(body["error"]["message"], json!(message), "{body}");
}

fn assert_validation(status: u16, body: &Value, field: &str, message: &str) {
    assert_eq!(status, 422, "{body}");
    assert_error(body, "validation_error", "Validation failed.");
    assert_eq!(body["error"]["details"], json!({ field: [message] }), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required() {
    let emu = start().await;
    let key = emu.api_key();
    assert!(key.starts_with("emu_") && key.len() == 36, "{key}");
    assert!(key[4..].chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));

    for auth in [None, Some("Bearer wrong"), Some(key.as_str()), Some("bearer ")] {
        let mut req = http().get(url(&emu, "/account"));
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        let body: Value = resp.json().await.unwrap();
        assert_error(&body, "unauthorized", "Invalid or missing API token");
        assert_eq!(body["error"]["details"], Value::Null);
    }
    let (status, headers, body) = api(&emu, Method::GET, "/account", None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["success"], json!(true));
    let account = &body["data"];
    assert_eq!(account["account_id"], json!(1));
    assert_eq!(account["email"], json!("developer@emulator.local"));
    assert_eq!(account["balance_gb"], json!(10.0));
    assert_eq!(account["data_used_gb"], json!(0.0));
    assert_eq!(account["connection_count"], json!(0));
    assert!(account["created_at"].as_str().unwrap().starts_with("20"));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_lifecycle_with_etags() {
    let emu = start().await;

    // Empty body is allowed.
    let resp = http().post(url(&emu, "/account/connections")).bearer_auth(emu.api_key()).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    let first: Value = resp.json().await.unwrap();
    let first = &first["data"];
    assert_eq!(first["connection_id"], json!(3449));
    assert_eq!(first["rules"], json!([]));
    assert_eq!(first["session_id"], Value::Null);
    assert_eq!(first["target_geo"], Value::Null);
    assert_eq!(first["description"], Value::Null);
    let user = first["proxy_username"].as_str().unwrap();
    assert!(user.starts_with("emu_user_") && user.len() == 17, "{user}");
    assert!(user[9..].chars().all(|c| c.is_ascii_hexdigit()));
    let pass = first["proxy_password"].as_str().unwrap();
    assert_eq!(pass.len(), 24);
    assert!(pass.chars().all(|c| c.is_ascii_alphanumeric()));

    let second = create_connection(
        &emu,
        json!({ "rules": ["example.com"], "session_id": "s1", "target_geo": "us_ca", "description": "demo" }),
    )
    .await;
    assert_eq!(second["connection_id"], json!(3450));
    assert_eq!(second["rules"], json!(["example.com"]));
    assert_eq!(second["session_id"], json!("s1"));
    assert_eq!(second["target_geo"], json!("us_ca"));
    assert_eq!(second["description"], json!("demo"));
    assert_ne!(second["proxy_password"], first["proxy_password"]);

    let (status, _, list) = api(&emu, Method::GET, "/account/connections", None).await;
    assert_eq!(status, 200);
    let ids: Vec<&Value> = list["data"].as_array().unwrap().iter().map(|c| &c["connection_id"]).collect();
    assert_eq!(ids, vec![&json!(3449), &json!(3450)]);

    // GET with ETag, then 304 on a matching If-None-Match.
    let (status, headers, got) = api(&emu, Method::GET, "/account/connections/3450", None).await;
    assert_eq!(status, 200);
    assert_eq!(got["data"], second);
    let etag = headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, "\"c3450-v1\"");
    let resp = http()
        .get(url(&emu, "/account/connections/3450"))
        .bearer_auth(emu.api_key())
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    assert!(resp.bytes().await.unwrap().is_empty());
    let resp = http()
        .get(url(&emu, "/account/connections/3450"))
        .bearer_auth(emu.api_key())
        .header("if-none-match", "\"c3450-v0\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // PATCH changes the ETag; the old one no longer gives 304.
    let resp = http()
        .patch(url(&emu, "/account/connections/3450"))
        .bearer_auth(emu.api_key())
        .json(&json!({ "rules": ["*", "-bank.com"], "session_id": null, "target_geo": "de" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let new_etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let patched: Value = resp.json().await.unwrap();
    assert_eq!(patched["success"], json!(true));
    assert_eq!(patched["data"]["rules"], json!(["*", "-bank.com"]));
    assert_eq!(patched["data"]["session_id"], Value::Null);
    assert_eq!(patched["data"]["target_geo"], json!("de"));
    assert_eq!(patched["data"]["description"], json!("demo"), "absent fields are kept");
    assert_eq!(patched["data"]["proxy_password"], second["proxy_password"]);
    let resp = http()
        .get(url(&emu, "/account/connections/3450"))
        .bearer_auth(emu.api_key())
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), new_etag);
    let resp = http()
        .get(url(&emu, "/account/connections/3450"))
        .bearer_auth(emu.api_key())
        .header("if-none-match", &new_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);

    let (_, _, account) = api(&emu, Method::GET, "/account", None).await;
    assert_eq!(account["data"]["connection_count"], json!(2));

    // DELETE, then 404.
    let (status, _, deleted) = api(&emu, Method::DELETE, "/account/connections/3450", None).await;
    assert_eq!(status, 200);
    assert_eq!(deleted, json!({ "success": true, "data": { "connection_id": "3450", "deleted": true } }));
    for method in [Method::GET, Method::DELETE] {
        let (status, _, body) = api(&emu, method, "/account/connections/3450", None).await;
        assert_eq!(status, 404);
        assert_error(&body, "not_found", "Connection not found.");
    }
    let (status, _, body) = api(&emu, Method::PATCH, "/account/connections/3450", Some(json!({}))).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found", "Connection not found.");
    let (status, _, body) = api(&emu, Method::GET, "/account/connections/abc", None).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found", "Connection not found.");

    // Ids keep incrementing after a delete.
    let third = create_connection(&emu, json!({})).await;
    assert_eq!(third["connection_id"], json!(3451));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_and_malformed_requests() {
    let emu = start().await;
    let conn = create_connection(&emu, json!({})).await;
    let id = conn["connection_id"].as_u64().unwrap();
    let conn_path = format!("/account/connections/{id}");

    for (method, path) in [(Method::POST, "/account/connections"), (Method::PATCH, conn_path.as_str())] {
        let cases = [
            (json!({ "rules": "example.com" }), "rules", "must be an array of strings"),
            (json!({ "rules": ["ok", 3] }), "rules", "must be an array of strings"),
            (json!({ "rules": null }), "rules", "must be an array of strings"),
            (json!({ "session_id": 42 }), "session_id", "must be a string or null"),
            (json!({ "target_geo": "atlantis" }), "target_geo", "is not a supported geo code"),
            (json!({ "target_geo": 7 }), "target_geo", "is not a supported geo code"),
            (json!(["rules"]), "body", "must be a JSON object"),
            (json!("text"), "body", "must be a JSON object"),
        ];
        for (body, field, message) in cases {
            let (status, _, answer) = api(&emu, method.clone(), path, Some(body)).await;
            assert_validation(status, &answer, field, message);
        }
        // Two bad fields are both reported.
        let (status, _, answer) = api(&emu, method.clone(), path, Some(json!({ "rules": {}, "session_id": [] }))).await;
        assert_eq!(status, 422);
        assert_eq!(
            answer["error"]["details"],
            json!({ "rules": ["must be an array of strings"], "session_id": ["must be a string or null"] })
        );

        let resp = http()
            .request(method.clone(), url(&emu, path))
            .bearer_auth(emu.api_key())
            .header("content-type", "application/json")
            .body("{\"rules\": [")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
        let answer: Value = resp.json().await.unwrap();
        assert_error(&answer, "invalid_json", "Request body is not valid JSON.");
        assert_eq!(answer["error"]["details"], Value::Null);
    }
    // Nothing was changed or created by the failed calls.
    let (_, headers, got) = api(&emu, Method::GET, &conn_path, None).await;
    assert_eq!(got["data"], conn);
    assert_eq!(headers["etag"], format!("\"c{id}-v1\"").as_str());
    let (_, _, list) = api(&emu, Method::GET, "/account/connections", None).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // Unknown paths and wrong methods.
    let (status, _, body) = api(&emu, Method::GET, "/nope", None).await;
    assert_eq!(status, 404);
    assert_error(&body, "not_found", "Not found.");
    let resp = http().get(format!("{}/elsewhere", emu.api_base_url().trim_end_matches("/v1"))).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    let (status, headers, body) = api(&emu, Method::DELETE, "/geos", None).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "GET");
    assert_eq!(body["error"]["code"], json!("method_not_allowed"));
    let (status, _, _) = api(&emu, Method::PUT, &conn_path, Some(json!({}))).await;
    assert_eq!(status, 405);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geos_payments_and_usage() {
    let emu = start().await;
    let (status, _, geos) = api(&emu, Method::GET, "/geos", None).await;
    assert_eq!(status, 200);
    let codes: Vec<&str> = geos["data"].as_array().unwrap().iter().map(|g| g["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["us", "us_ca", "us_ny", "us_tx", "us_fl", "gb", "de", "fr", "ca", "au", "jp", "br", "in"]);
    assert_eq!(geos["data"][0], json!({ "code": "us", "label": "United States" }));
    assert_eq!(geos["data"][1]["label"], json!("United States - California"));

    let (status, _, payments) = api(&emu, Method::GET, "/account/payments", None).await;
    assert_eq!(status, 200);
    let all = payments["data"].as_array().unwrap();
    assert_eq!(all.len(), 3);
    for p in all {
        assert_eq!(p["status"], json!("succeeded"));
        assert!(p["created_at"].as_str().unwrap().starts_with("2026-"));
        assert!(p["amount_usd"].as_f64().unwrap() > 0.0);
        assert!(p["gb_purchased"].as_f64().unwrap() > 0.0);
        assert!(!p["payment_id"].is_null());
    }
    let (_, _, filtered) =
        api(&emu, Method::GET, "/account/payments?start=2026-02-01&end=2026-02-28T23:59:59Z", None).await;
    let filtered = filtered["data"].as_array().unwrap();
    assert_eq!(filtered.len(), 1);
    assert!(filtered[0]["created_at"].as_str().unwrap().starts_with("2026-02-"));
    let (_, _, later) = api(&emu, Method::GET, "/account/payments?start=2026-02-01", None).await;
    assert_eq!(later["data"].as_array().unwrap().len(), 2);

    for path in ["/account/payments", "/account/usage"] {
        let (status, _, body) = api(&emu, Method::GET, &format!("{path}?start=last-week"), None).await;
        assert_validation(status, &body, "start", "must be an ISO 8601 date");
        let (status, _, body) = api(&emu, Method::GET, &format!("{path}?start=2026-01-01&end=2026-02-30"), None).await;
        assert_validation(status, &body, "end", "must be an ISO 8601 date");
    }

    let conn = create_connection(&emu, json!({})).await;
    let (status, _, usage) =
        api(&emu, Method::GET, "/account/usage?start=2026-01-01T00:00:00%2B02:00&end=2026-12-31", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        usage["data"],
        json!({
            "start": "2026-01-01T00:00:00+02:00",
            "end": "2026-12-31",
            "data_used_bytes": 0,
            "data_used_gb": 0.0,
            "requests": 0,
            "tunnels": 0,
            "connections": [{ "connection_id": conn["connection_id"], "data_used_bytes": 0, "requests": 0, "tunnels": 0 }],
        })
    );
    let (_, _, usage) = api(&emu, Method::GET, "/account/usage", None).await;
    assert_eq!(usage["data"]["start"], Value::Null);
    assert_eq!(usage["data"]["end"], Value::Null);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_faults_status_count_and_delay() {
    let emu = start().await;
    let (status, state) = admin(&emu, Method::GET, "/_emulator/faults", None).await;
    assert_eq!(status, 200);
    assert_eq!(state, json!({ "apiStatus": null, "apiFaultCount": null, "apiDelayMs": null, "gatewayDown": false }));

    let (status, state) =
        admin(&emu, Method::POST, "/_emulator/faults", Some(json!({ "apiStatus": 503, "apiFaultCount": 2 }))).await;
    assert_eq!(status, 200);
    assert_eq!(state["apiStatus"], json!(503));
    assert_eq!(state["apiFaultCount"], json!(2));
    for _ in 0..2 {
        let (status, _, body) = api(&emu, Method::GET, "/geos", None).await;
        assert_eq!(status, 503);
        assert_error(&body, "emulated_failure", "Emulated failure.");
    }
    let (status, _, _) = api(&emu, Method::GET, "/geos", None).await;
    assert_eq!(status, 200);
    let (_, state) = admin(&emu, Method::GET, "/_emulator/faults", None).await;
    assert_eq!(state["apiStatus"], Value::Null);

    // Without a count: until cleared. Admin endpoints are not affected.
    admin(&emu, Method::POST, "/_emulator/faults", Some(json!({ "apiStatus": 500 }))).await;
    for _ in 0..3 {
        let (status, _, _) = api(&emu, Method::GET, "/account", None).await;
        assert_eq!(status, 500);
    }
    let (status, state) = admin(&emu, Method::DELETE, "/_emulator/faults", None).await;
    assert_eq!(status, 200);
    assert_eq!(state["apiStatus"], Value::Null);
    let (status, _, _) = api(&emu, Method::GET, "/account", None).await;
    assert_eq!(status, 200);

    // Delay.
    admin(&emu, Method::POST, "/_emulator/faults", Some(json!({ "apiDelayMs": 700 }))).await;
    let started = Instant::now();
    let (status, _, _) = api(&emu, Method::GET, "/account", None).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(650), "{:?}", started.elapsed());
    // A client with a shorter timeout gives up.
    let timed_out =
        http().get(url(&emu, "/account")).bearer_auth(emu.api_key()).timeout(Duration::from_millis(200)).send().await;
    assert!(timed_out.is_err_and(|e| e.is_timeout()));
    admin(&emu, Method::POST, "/_emulator/faults", Some(json!({ "apiDelayMs": null }))).await;
    let started = Instant::now();
    api(&emu, Method::GET, "/account", None).await;
    assert!(started.elapsed() < Duration::from_millis(500));

    // Bad fault bodies.
    let (status, body) = admin(&emu, Method::POST, "/_emulator/faults", Some(json!({ "apiStatus": "boom" }))).await;
    assert_eq!(status, 422);
    assert!(body["error"]["details"]["apiStatus"].is_array());
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_take_the_api_key() {
    let emu = start().await;
    for (method, path) in [
        (Method::GET, "/_emulator/faults"),
        (Method::POST, "/_emulator/faults"),
        (Method::DELETE, "/_emulator/faults"),
        (Method::GET, "/_emulator/traffic"),
        (Method::GET, "/_emulator/auth"),
        (Method::POST, "/_emulator/auth/approve"),
        (Method::GET, "/_emulator/connections/1"),
    ] {
        let none = http().request(method.clone(), admin_url(&emu, path)).send().await.expect("answers");
        assert_eq!(none.status(), 401, "{method} {path}");
        let wrong =
            http().request(method.clone(), admin_url(&emu, path)).bearer_auth("wrong").send().await.expect("answers");
        assert_eq!(wrong.status(), 401, "{method} {path}");
    }
    let (status, _) = admin(&emu, Method::GET, "/_emulator/faults", None).await;
    assert_eq!(status, 200);
    // The approve link a person opens in a browser needs no key.
    let link = http().get(admin_url(&emu, "/_emulator/auth/approve?user_code=NOPE")).send().await.expect("answers");
    assert_ne!(link.status(), 401);
    emu.stop().await;
}
