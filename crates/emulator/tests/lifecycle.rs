//! Starting with options, bind failures, and `stop()` closing everything.

mod common;

use std::error::Error;
use std::time::{Duration, Instant};

use aluvia_emulator::{Emulator, EmulatorError, EmulatorOptions};
use common::*;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn port_of(url: &str) -> u16 {
    let authority = url.trim_start_matches("http://").split('/').next().unwrap();
    authority.rsplit_once(':').unwrap().1.parse().unwrap()
}

async fn refuses(port: u16) -> bool {
    matches!(
        TcpStream::connect(("127.0.0.1", port)).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

async fn free_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_are_honoured() {
    let (api_port, gateway_port) = (free_port().await, free_port().await);
    let emu = Emulator::start(EmulatorOptions {
        api_port,
        gateway_port,
        site: false,
        site_port: 0,
        site_tls_port: 0,
        api_key: Some("my-key".into()),
        ..EmulatorOptions::default()
    })
    .await
    .unwrap();
    assert_eq!(emu.api_base_url(), format!("http://127.0.0.1:{api_port}/v1"));
    assert_eq!(emu.gateway_port(), gateway_port);
    assert_eq!(emu.gateway_host(), "127.0.0.1");
    assert_eq!(emu.api_key(), "my-key");
    assert_eq!(emu.site_url(), None);
    assert_eq!((emu.site_https_url(), emu.site_spki(), emu.site_certificate()), (None, None, None));
    let (status, _, _) = api(&emu, reqwest::Method::GET, "/account", None).await;
    assert_eq!(status, 200);

    let defaults = EmulatorOptions::default();
    assert_eq!((defaults.api_port, defaults.gateway_port, defaults.site_port), (0, 0, 0));
    assert!(defaults.site);
    assert!(defaults.api_key.is_none());
    let other = start().await;
    assert_ne!(other.api_key(), emu.api_key());
    assert!(other.site_url().unwrap().starts_with("http://127.0.0.1:"));
    assert!(other.site_url().unwrap().ends_with('/'));
    other.stop().await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_failure_names_the_address_and_the_reason() {
    let first = start().await;
    let taken = first.gateway_port();
    let result = Emulator::start(EmulatorOptions { gateway_port: taken, ..EmulatorOptions::default() }).await;
    let err = match result {
        Ok(_) => panic!("second emulator bound a taken port"),
        Err(err) => err,
    };
    assert!(matches!(err, EmulatorError::Bind { .. }));
    assert_eq!(err.code(), "bind_failed");
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{taken}")), "{message}");
    let reason = err.source().expect("OS error").to_string();
    assert!(message.contains(&reason), "{message}");
    assert!(reason.to_lowercase().contains("in use"), "{reason}");
    // The first one is unharmed.
    let (status, _, _) = api(&first, reqwest::Method::GET, "/account", None).await;
    assert_eq!(status, 200);
    first.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_listeners_connections_and_tunnels() {
    let emu = start().await;
    let target = spawn_target().await;
    let conn = create_connection(&emu, json!({})).await;
    let (user, pass) = creds(&conn);
    let auth = basic(&user, &pass);
    let api_port = port_of(&emu.api_base_url());
    let gateway_port = emu.gateway_port();
    let site_port = port_of(&emu.site_url().unwrap());

    // An open tunnel, an idle keep-alive API connection and a request in flight.
    let tunnel = match open_tunnel(gateway_port, Some(&auth), &target.to_string()).await {
        Ok(tunnel) => tunnel,
        Err(answer) => panic!("CONNECT failed: {}", answer.status),
    };
    let mut tunnel = TokioIo::new(tunnel);
    let mut idle = TcpStream::connect(("127.0.0.1", api_port)).await.unwrap();
    let head = format!("GET /_emulator/faults HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n", emu.api_key());
    idle.write_all(head.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    admin(&emu, reqwest::Method::POST, "/_emulator/faults", Some(json!({ "apiDelayMs": 10_000 }))).await;
    let in_flight = tokio::spawn({
        let url = url(&emu, "/account");
        let key = emu.api_key();
        async move { http().get(url).bearer_auth(key).send().await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    emu.stop().await;
    assert!(started.elapsed() < Duration::from_secs(2), "stop took {:?}", started.elapsed());
    for port in [api_port, gateway_port, site_port] {
        assert!(refuses(port).await, "port {port} still accepts");
    }
    let mut buf = [0u8; 4096];
    let tunnel_read = tokio::time::timeout(Duration::from_secs(2), tunnel.read(&mut buf)).await;
    assert!(matches!(tunnel_read, Ok(Ok(0)) | Ok(Err(_))), "{tunnel_read:?}");
    let idle_read = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match idle.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(idle_read.is_ok(), "keep-alive API connection left open");
    let answer = tokio::time::timeout(Duration::from_secs(2), in_flight).await;
    assert!(matches!(answer, Ok(Ok(Err(_)))), "delayed request was not dropped");

    // Idempotent.
    emu.stop().await;
    emu.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_emulator_shuts_it_down() {
    let emu = start().await;
    let api_port = port_of(&emu.api_base_url());
    drop(emu);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !refuses(api_port).await {
        assert!(Instant::now() < deadline, "API still listening after drop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
