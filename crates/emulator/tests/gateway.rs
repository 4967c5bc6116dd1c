//! The gateway (absolute-form and CONNECT), its exit addresses, traffic
//! accounting, the gatewayDown fault and the protected site.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use aluvia_emulator::exit_address;
use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::header::{HOST, PROXY_AUTHORIZATION};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn assert_407(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::PROXY_AUTHENTICATION_REQUIRED, "{}", answer.body);
    assert_eq!(answer.headers["proxy-authenticate"], "Basic realm=\"aluvia\"");
    assert!(!answer.body.is_empty());
}

async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_demands_connection_credentials() {
    let emu = start().await;
    let target = spawn_target().await;
    let conn = create_connection(&emu, json!({})).await;
    let (user, pass) = creds(&conn);
    let gw = emu.gateway_port();
    assert_eq!(emu.gateway_host(), "127.0.0.1");
    let target_url = format!("http://{target}/x");

    let wrong = [
        None,
        Some(basic(&user, "not-the-password")),
        Some(basic("emu_user_00000000", &pass)),
        Some("Basic !!!not-base64".to_owned()),
        Some(format!("Bearer {pass}")),
        Some(basic(&user, "")),
    ];
    for auth in &wrong {
        assert_407(&proxy_get(gw, auth.as_deref(), &target_url).await);
        match open_tunnel(gw, auth.as_deref(), &target.to_string()).await {
            Ok(_) => panic!("tunnel opened with {auth:?}"),
            Err(answer) => assert_407(&answer),
        }
    }
    let good = basic(&user, &pass);
    assert_eq!(proxy_get(gw, Some(&good), &target_url).await.status, StatusCode::OK);

    // Credentials die with their connection.
    let id = conn["connection_id"].as_u64().unwrap();
    api(&emu, reqwest::Method::DELETE, &format!("/account/connections/{id}"), None).await;
    assert_407(&proxy_get(gw, Some(&good), &target_url).await);

    // Garbage on the socket does not take the gateway down.
    let mut raw = TcpStream::connect(("127.0.0.1", gw)).await.unwrap();
    raw.write_all(b"\x00\x01 NOT HTTP\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), raw.read_to_end(&mut sink)).await;
    let conn = create_connection(&emu, json!({})).await;
    let (user, pass) = creds(&conn);
    assert_eq!(proxy_get(gw, Some(&basic(&user, &pass)), &target_url).await.status, StatusCode::OK);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_leaves_from_the_exit_address_and_follows_patches() {
    let emu = start().await;
    let target = spawn_target().await;
    let conn = create_connection(&emu, json!({ "session_id": "s1" })).await;
    let id = conn["connection_id"].as_u64().unwrap();
    let (user, pass) = creds(&conn);
    let auth = basic(&user, &pass);
    let gw = emu.gateway_port();

    let a1 = exit_address(Some("s1"), None);
    let a2 = exit_address(Some("s2"), None);
    let a3 = exit_address(Some("s2"), Some("gb"));
    assert!(a1 != a2 && a2 != a3, "test needs distinct addresses");

    let answer = proxy_request(gw, Some(&auth), Method::POST, &format!("http://{target}/hello?x=1"), "payload!").await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = answer.json();
    assert_eq!(seen["peer"], json!(a1.to_string()));
    assert_eq!(seen["method"], json!("POST"));
    assert_eq!(seen["path"], json!("/hello?x=1"), "origin form upstream");
    assert_eq!(seen["host"], json!(target.to_string()));
    assert_eq!(seen["body_len"], json!(8));
    assert_eq!(seen["saw_proxy_authorization"], json!(false));

    let (_, admin_view) = admin(&emu, reqwest::Method::GET, &format!("/_emulator/connections/{id}"), None).await;
    assert_eq!(admin_view["data"]["exit_address"], json!(a1.to_string()));
    assert_eq!(admin_view["data"]["proxy_username"], json!(user));

    // One keep-alive client connection: each request reads the config anew.
    let stream = TcpStream::connect(("127.0.0.1", gw)).await.unwrap();
    let (mut sender, driver) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(driver);
    let mut peer_on_same_connection = async || {
        // The connection is ready again only once the previous response is done.
        sender.ready().await.unwrap();
        let req = Request::builder()
            .uri(format!("http://{target}/same"))
            .header(HOST, target.to_string())
            .header(PROXY_AUTHORIZATION, auth.as_str())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<Value>(&body).unwrap()["peer"].as_str().unwrap().to_owned()
    };
    assert_eq!(peer_on_same_connection().await, a1.to_string());
    patch_connection(&emu, id, json!({ "session_id": "s2" })).await;
    assert_eq!(peer_on_same_connection().await, a2.to_string());
    patch_connection(&emu, id, json!({ "target_geo": "gb" })).await;
    assert_eq!(peer_on_same_connection().await, a3.to_string());

    let answer = proxy_get(gw, Some(&auth), &format!("http://{target}/")).await;
    assert_eq!(answer.json()["peer"], json!(a3.to_string()));
    let (_, admin_view) = admin(&emu, reqwest::Method::GET, &format!("/_emulator/connections/{id}"), None).await;
    assert_eq!(admin_view["data"]["exit_address"], json!(a3.to_string()));

    // `localhost` targets also leave from the exit address.
    let answer = proxy_get(gw, Some(&auth), &format!("http://localhost:{}/", target.port())).await;
    assert_eq!(answer.json()["peer"], json!(a3.to_string()));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_leave_from_the_exit_address() {
    let emu = start().await;
    let target = spawn_target().await;
    let conn = create_connection(&emu, json!({})).await;
    let id = conn["connection_id"].as_u64().unwrap();
    let (user, pass) = creds(&conn);
    let auth = basic(&user, &pass);
    let gw = emu.gateway_port();

    let a0 = exit_address(None, None);
    let a1 = exit_address(None, Some("jp"));
    let a2 = exit_address(Some("fresh-session"), Some("jp"));
    assert!(a0 != a1 && a1 != a2);

    let answer = tunnel_get(gw, &auth, target, "/inside").await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = answer.json();
    assert_eq!(seen["peer"], json!(a0.to_string()));
    assert_eq!(seen["path"], json!("/inside"));

    patch_connection(&emu, id, json!({ "target_geo": "jp" })).await;
    assert_eq!(tunnel_get(gw, &auth, target, "/").await.json()["peer"], json!(a1.to_string()));
    patch_connection(&emu, id, json!({ "session_id": "fresh-session" })).await;
    assert_eq!(tunnel_get(gw, &auth, target, "/").await.json()["peer"], json!(a2.to_string()));
    patch_connection(&emu, id, json!({ "session_id": null, "target_geo": null })).await;
    assert_eq!(tunnel_get(gw, &auth, target, "/").await.json()["peer"], json!(a0.to_string()));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_counters_and_usage_follow_carried_bytes() {
    let emu = start().await;
    let target = spawn_target().await;
    let conn = create_connection(&emu, json!({})).await;
    let id = conn["connection_id"].as_u64().unwrap();
    let (user, pass) = creds(&conn);
    let auth = basic(&user, &pass);
    let gw = emu.gateway_port();

    let (_, traffic) = admin(&emu, reqwest::Method::GET, "/_emulator/traffic", None).await;
    assert_eq!(traffic, json!({ "connections": [] }));

    let upload = "u".repeat(5000);
    let mut down_bodies = 0;
    for _ in 0..2 {
        let answer = proxy_request(gw, Some(&auth), Method::POST, &format!("http://{target}/up"), &upload).await;
        assert_eq!(answer.status, StatusCode::OK);
        down_bodies += answer.body.len();
    }
    let answer = tunnel_get(gw, &auth, target, "/t").await;
    down_bodies += answer.body.len();

    let (_, traffic) = admin(&emu, reqwest::Method::GET, "/_emulator/traffic", None).await;
    let connections = traffic["connections"].as_array().unwrap();
    assert_eq!(connections.len(), 1, "{traffic}");
    assert_eq!(connections[0]["connection_id"], json!(id));
    let hosts = connections[0]["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{traffic}");
    let host = &hosts[0];
    assert_eq!(host["host"], json!("127.0.0.1"));
    assert_eq!(host["requests"], json!(2));
    assert_eq!(host["tunnels"], json!(1));
    let up = host["bytes_up"].as_u64().unwrap();
    let down = host["bytes_down"].as_u64().unwrap();
    assert!((10_000..12_000).contains(&up), "bytes_up {up}");
    assert!(down as usize >= down_bodies && down < 3_000, "bytes_down {down} for bodies {down_bodies}");

    let (_, _, usage) = api(&emu, reqwest::Method::GET, "/account/usage", None).await;
    let usage = &usage["data"];
    assert_eq!(usage["data_used_bytes"], json!(up + down));
    assert_eq!(usage["requests"], json!(2));
    assert_eq!(usage["tunnels"], json!(1));
    assert_eq!(
        usage["connections"],
        json!([{ "connection_id": id, "data_used_bytes": up + down, "requests": 2, "tunnels": 1 }])
    );
    let (_, _, account) = api(&emu, reqwest::Method::GET, "/account", None).await;
    let gb = (up + down) as f64 / 1e9;
    assert!((account["data"]["data_used_gb"].as_f64().unwrap() - gb).abs() < 1e-9);
    assert!((account["data"]["balance_gb"].as_f64().unwrap() - (10.0 - gb)).abs() < 1e-9);
    assert!(account["data"]["balance_gb"].as_f64().unwrap() < 10.0);

    // Counters survive the deletion of the connection.
    api(&emu, reqwest::Method::DELETE, &format!("/account/connections/{id}"), None).await;
    let (_, _, usage) = api(&emu, reqwest::Method::GET, "/account/usage", None).await;
    assert_eq!(usage["data"]["data_used_bytes"], json!(up + down));
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_answer_502() {
    let emu = start().await;
    let target = spawn_target().await;
    let conn = create_connection(&emu, json!({})).await;
    let (user, pass) = creds(&conn);
    let auth = basic(&user, &pass);
    let gw = emu.gateway_port();
    let dead = closed_port().await;

    let answer = proxy_get(gw, Some(&auth), &format!("http://127.0.0.1:{dead}/")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.body.trim_end().lines().count(), 1, "{}", answer.body);
    match open_tunnel(gw, Some(&auth), &format!("127.0.0.1:{dead}")).await {
        Ok(_) => panic!("tunnel to a closed port"),
        Err(answer) => assert_eq!(answer.status, StatusCode::BAD_GATEWAY),
    }
    let answer = proxy_get(gw, Some(&auth), "http://no-such-host.invalid/").await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    // An origin-form request is not a proxy request.
    let answer = proxy_get(gw, Some(&auth), "/relative").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);

    assert_eq!(proxy_get(gw, Some(&auth), &format!("http://{target}/")).await.status, StatusCode::OK);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_down_fault_refuses_and_drops_then_comes_back() {
    let emu = start().await;
    let target = spawn_target().await;
    let conn = create_connection(&emu, json!({})).await;
    let (user, pass) = creds(&conn);
    let auth = basic(&user, &pass);
    let gw = emu.gateway_port();

    let tunnel = match open_tunnel(gw, Some(&auth), &target.to_string()).await {
        Ok(tunnel) => tunnel,
        Err(answer) => panic!("CONNECT failed: {}", answer.status),
    };
    let mut tunnel = TokioIo::new(tunnel);

    let (status, state) =
        admin(&emu, reqwest::Method::POST, "/_emulator/faults", Some(json!({ "gatewayDown": true }))).await;
    assert_eq!(status, 200);
    assert_eq!(state["gatewayDown"], json!(true));
    let refused = TcpStream::connect(("127.0.0.1", gw)).await;
    assert_eq!(refused.err().map(|e| e.kind()), Some(std::io::ErrorKind::ConnectionRefused));
    // The open tunnel was dropped.
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(3), tunnel.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "tunnel still open: {read:?}");
    // The API keeps working.
    let (status, _, _) = api(&emu, reqwest::Method::GET, "/account", None).await;
    assert_eq!(status, 200);

    let (_, state) =
        admin(&emu, reqwest::Method::POST, "/_emulator/faults", Some(json!({ "gatewayDown": false }))).await;
    assert_eq!(state["gatewayDown"], json!(false));
    assert_eq!(proxy_get(gw, Some(&auth), &format!("http://{target}/")).await.status, StatusCode::OK);

    // DELETE /_emulator/faults also brings it back.
    admin(&emu, reqwest::Method::POST, "/_emulator/faults", Some(json!({ "gatewayDown": true }))).await;
    assert!(TcpStream::connect(("127.0.0.1", gw)).await.is_err());
    let (_, state) = admin(&emu, reqwest::Method::DELETE, "/_emulator/faults", None).await;
    assert_eq!(state["gatewayDown"], json!(false));
    assert_eq!(tunnel_get(gw, &auth, target, "/").await.status, StatusCode::OK);
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_site_challenges_direct_visitors_only() {
    let emu = start().await;
    let site = emu.site_url().expect("site is on by default");
    let site_addr: SocketAddr = site.trim_start_matches("http://").trim_end_matches('/').parse().unwrap();
    let conn = create_connection(&emu, json!({ "session_id": "shopper" })).await;
    let (user, pass) = creds(&conn);
    let auth = basic(&user, &pass);
    let gw = emu.gateway_port();
    let exit = exit_address(Some("shopper"), None).to_string();

    // Direct: a datacenter visitor gets the challenge.
    let resp = http().get(&site).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["cf-mitigated"], "challenge");
    assert_eq!(resp.headers()["server"], "cloudflare");
    assert_eq!(resp.headers()["content-type"], "text/html");
    let html = resp.text().await.unwrap();
    assert!(html.contains("<title>Just a moment...</title>"));
    assert!(html.contains("<form id=\"challenge-form\""));
    let resp = http().get(format!("{site}some/page")).send().await.unwrap();
    assert_eq!(resp.status(), 403);

    // Through the gateway: the normal page, naming the exit address.
    let answer = proxy_get(gw, Some(&auth), &site).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers.get("cf-mitigated").is_none());
    assert!(answer.body.contains("<title>Aluvia Emulator Shop</title>"));
    assert!(answer.body.contains(&format!("You are visiting from {exit}")));
    let text_len: usize =
        answer.body.split('<').map(|chunk| chunk.split_once('>').map_or(chunk, |(_, text)| text).trim().len()).sum();
    assert!(text_len > 500, "{text_len}");
    let answer = tunnel_get(gw, &auth, site_addr, "/").await;
    assert_eq!(answer.status, StatusCode::OK);

    // /strict blocks everyone.
    let answer = proxy_get(gw, Some(&auth), &format!("{site}strict")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert_eq!(answer.headers["cf-mitigated"], "challenge");
    let answer = proxy_get(gw, Some(&auth), &format!("{site}strict/deeper")).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN);

    let resp = http().get(format!("{site}favicon.ico")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert!(resp.bytes().await.unwrap().is_empty());

    let visits: Value = http().get(format!("{site}_site/visits")).send().await.unwrap().json().await.unwrap();
    let visits = visits.as_array().unwrap();
    let summary: Vec<(String, String, u64)> = visits
        .iter()
        .map(|v| {
            assert!(v["time_ms"].as_u64().unwrap() > 0);
            (
                v["path"].as_str().unwrap().to_owned(),
                v["peer"].as_str().unwrap().to_owned(),
                v["status"].as_u64().unwrap(),
            )
        })
        .collect();
    let local = "127.0.0.1".to_owned();
    assert_eq!(
        summary,
        vec![
            ("/".to_owned(), local.clone(), 403),
            ("/some/page".to_owned(), local.clone(), 403),
            ("/".to_owned(), exit.clone(), 200),
            ("/".to_owned(), exit.clone(), 200),
            ("/strict".to_owned(), exit.clone(), 403),
            ("/strict/deeper".to_owned(), exit.clone(), 403),
            ("/favicon.ico".to_owned(), local, 404),
        ]
    );
    let resp = http().delete(format!("{site}_site/visits")).send().await.unwrap();
    assert!(resp.status().is_success());
    let visits: Value = http().get(format!("{site}_site/visits")).send().await.unwrap().json().await.unwrap();
    assert_eq!(visits, json!([]));
    emu.stop().await;
}
