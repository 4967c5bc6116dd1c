//! Black-box tests of the proxy against real servers on loopback: a target
//! that echoes what it saw, a TCP echo server for tunnels, and a small
//! forward-proxy gateway that checks Basic credentials and connects upstream
//! from 127.0.0.2 — so a target can tell gateway traffic (peer 127.0.0.2)
//! from direct traffic (peer 127.0.0.1).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::*;
use crate::config::{new_handle, ConnectionConfig, GatewayProtocol};
use crate::rules::RuleSet;

const USER: &str = "gw-user-7f3a";
const PASS: &str = "gw-pass-s3cr3t-91b";
const DIRECT_PEER: &str = "127.0.0.1";
const GATEWAY_PEER: &str = "127.0.0.2";
/// Every test step gets this long before it counts as hung.
const STEP: Duration = Duration::from_secs(5);

fn token(user: &str, pass: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
}

fn conn_config(rules: &[&str], password: &str) -> Arc<ConnectionConfig> {
    Arc::new(ConnectionConfig {
        connection_id: Some("conn-1".into()),
        proxy_username: USER.into(),
        proxy_password: password.into(),
        raw_rules: rules.iter().map(|r| r.to_string()).collect(),
        rules: RuleSet::new(rules),
        session_id: None,
        target_geo: None,
        etag: None,
    })
}

// ---------------------------------------------------------------- servers --

/// A target answering with JSON: the peer it saw, method, path, headers, body.
async fn start_target(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let headers: serde_json::Map<String, Value> = parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_string(), json!(v.to_str().unwrap_or(""))))
                        .collect();
                    let answer = json!({
                        "peer": peer.ip().to_string(),
                        "method": parts.method.as_str(),
                        "uri": parts.uri.to_string(),
                        "headers": headers,
                        "body": String::from_utf8_lossy(&body),
                    });
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer.to_string()))))
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    addr
}

/// A TCP server that greets with `peer=<ip>\n`, then echoes.
async fn start_echo(ip: &str) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = stream.write_all(format!("peer={}\n", peer.ip()).as_bytes()).await;
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// A server that accepts and then says nothing.
async fn start_silent() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

#[derive(Debug, Clone)]
struct GatewaySeen {
    method: String,
    uri: String,
    proxy_authorization: Option<String>,
}

/// A forward proxy that checks `Proxy-Authorization`, records what it got and
/// connects upstream from 127.0.0.2.
struct Gateway {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<GatewaySeen>>>,
}

impl Gateway {
    async fn start() -> Gateway {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| gateway_handle(req, log.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Gateway { addr, seen }
    }

    fn seen(&self) -> Vec<GatewaySeen> {
        self.seen.lock().unwrap().clone()
    }

    fn config(&self) -> GatewayConfig {
        GatewayConfig { protocol: GatewayProtocol::Http, host: "127.0.0.1".into(), port: self.addr.port() }
    }
}

async fn connect_from_gateway_ip(dst: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 2], 0)))?;
    socket.connect(dst).await
}

async fn gateway_handle(
    mut req: Request<Incoming>,
    log: Arc<Mutex<Vec<GatewaySeen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let auth = req.headers().get("proxy-authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
    log.lock().unwrap().push(GatewaySeen {
        method: req.method().to_string(),
        uri: req.uri().to_string(),
        proxy_authorization: auth.clone(),
    });
    let reply = |status: StatusCode, text: &str| {
        let mut res = Response::new(Full::new(Bytes::from(text.to_string())));
        *res.status_mut() = status;
        res
    };
    if auth.as_deref() != Some(token(USER, PASS).as_str()) {
        let mut res = reply(StatusCode::PROXY_AUTHENTICATION_REQUIRED, "auth required");
        res.headers_mut().insert("proxy-authenticate", "Basic realm=\"gw\"".parse().unwrap());
        return Ok(res);
    }
    let Some(dst) = req.uri().authority().and_then(|a| a.as_str().parse::<SocketAddr>().ok()) else {
        return Ok(reply(StatusCode::BAD_REQUEST, "gateway: bad target"));
    };
    let Ok(upstream) = connect_from_gateway_ip(dst).await else {
        return Ok(reply(StatusCode::BAD_GATEWAY, "gateway: upstream down"));
    };
    if req.method() == Method::CONNECT {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(client) = on_upgrade.await {
                let mut client = TokioIo::new(client);
                let mut upstream = upstream;
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
        return Ok(Response::new(Full::new(Bytes::new())));
    }
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await.unwrap();
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    parts.headers.remove("proxy-authorization");
    parts.uri = parts.uri.path_and_query().map_or("/", |p| p.as_str()).parse().unwrap();
    let res = sender.send_request(Request::from_parts(parts, Full::new(body))).await.unwrap();
    let (parts, body) = res.into_parts();
    Ok(Response::from_parts(parts, Full::new(body.collect().await.unwrap().to_bytes())))
}

// ----------------------------------------------------------------- client --

struct Harness {
    proxy: ProxyServer,
    config: ConfigHandle,
}

async fn start_proxy(gateway: GatewayConfig) -> Harness {
    start_proxy_with(gateway, Limits::default()).await
}

async fn start_proxy_with(gateway: GatewayConfig, limits: Limits) -> Harness {
    let config = new_handle();
    let opts =
        ProxyOptions { port: None, gateway, config: config.clone(), logger: Arc::new(Logger::new(Level::Silent)) };
    let proxy = ProxyServer::start_with(opts, limits).await.unwrap();
    assert!(proxy.local_addr().ip().is_loopback());
    Harness { proxy, config }
}

/// One keep-alive client connection to the proxy.
async fn client(proxy: SocketAddr) -> SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(sender: &mut SendRequest<Full<Bytes>>, req: Request<Full<Bytes>>) -> (StatusCode, String) {
    let fut = async {
        sender.ready().await.unwrap();
        let res = sender.send_request(req).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(STEP, fut).await.expect("request hung")
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

/// GET through a fresh connection; the target's JSON answer.
async fn get_json(proxy: SocketAddr, url: &str) -> Value {
    let (status, body) = send(&mut client(proxy).await, get(url)).await;
    assert_eq!(status, StatusCode::OK, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Write raw bytes (ending with `Connection: close`) and read the answer.
async fn raw(proxy: SocketAddr, request: &str) -> String {
    let fut = async {
        let mut tcp = TcpStream::connect(proxy).await.unwrap();
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tcp.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(STEP, fut).await.expect("raw request hung")
}

/// Read an HTTP head byte by byte (nothing past it), up to and including the
/// blank line; `None` if the stream ends first.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Open a CONNECT tunnel; returns the stream (past the proxy's answer) or
/// the proxy's whole answer when it refused.
async fn open_tunnel(proxy: SocketAddr, target: SocketAddr) -> Result<TcpStream, String> {
    let fut = async {
        let mut tcp = TcpStream::connect(proxy).await.unwrap();
        let head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.unwrap();
        let text = read_head(&mut tcp).await.unwrap_or_default();
        if text.starts_with("HTTP/1.1 200") {
            return Ok(tcp);
        }
        // A refusal: read its body too.
        let mut rest = vec![0u8; 4096];
        let n =
            tokio::time::timeout(Duration::from_millis(500), tcp.read(&mut rest)).await.unwrap_or(Ok(0)).unwrap_or(0);
        Err(text + &String::from_utf8_lossy(&rest[..n]))
    };
    tokio::time::timeout(STEP, fut).await.expect("CONNECT hung")
}

/// Through an open tunnel to an echo server: the greeting's peer, and that
/// `payload` comes back.
async fn tunnel_roundtrip(tunnel: &mut TcpStream, payload: &[u8]) -> String {
    let fut = async {
        let mut greeting = Vec::new();
        let mut byte = [0u8; 1];
        while !greeting.ends_with(b"\n") {
            assert_eq!(tunnel.read(&mut byte).await.unwrap(), 1, "tunnel closed early");
            greeting.push(byte[0]);
        }
        tunnel.write_all(payload).await.unwrap();
        let mut back = vec![0u8; payload.len()];
        tunnel.read_exact(&mut back).await.unwrap();
        assert_eq!(back, payload);
        String::from_utf8_lossy(&greeting).trim().trim_start_matches("peer=").to_string()
    };
    tokio::time::timeout(STEP, fut).await.expect("tunnel hung")
}

// ------------------------------------------------------------------ tests --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_absolute_form_get_and_post() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    let target = start_target("127.0.0.1").await;
    let mut c = client(h.proxy.local_addr()).await;

    let mut req = get(&format!("http://{target}/hello?x=1"));
    let headers = req.headers_mut();
    headers.insert("proxy-authorization", token("client", "client-secret").parse().unwrap());
    headers.insert("proxy-connection", "keep-alive".parse().unwrap());
    headers.insert("connection", "keep-alive, x-hop".parse().unwrap());
    headers.insert("x-hop", "1".parse().unwrap());
    headers.insert("x-end-to-end", "kept".parse().unwrap());
    let (status, body) = send(&mut c, req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["peer"], DIRECT_PEER);
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["uri"], "/hello?x=1", "direct requests go out in origin form");
    assert_eq!(seen["headers"]["host"], target.to_string());
    assert_eq!(seen["headers"]["x-end-to-end"], "kept");
    for hop in ["proxy-authorization", "proxy-connection", "x-hop", "connection"] {
        assert!(seen["headers"].get(hop).is_none(), "{hop} was forwarded: {seen}");
    }

    let post = Request::post(format!("http://{target}/submit")).body(Full::new(Bytes::from("payload=42"))).unwrap();
    let (status, body) = send(&mut c, post).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["uri"], "/submit");
    assert_eq!(seen["body"], "payload=42");
    assert!(gateway.seen().is_empty(), "no config must not touch the gateway");
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_form_takes_the_host_header() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    let target = start_target("127.0.0.3").await;
    let answer =
        raw(h.proxy.local_addr(), &format!("GET /origin?y=2 HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"))
            .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let seen: Value = serde_json::from_str(body).unwrap();
    assert_eq!(seen["uri"], "/origin?y=2");
    assert_eq!(seen["headers"]["host"], target.to_string());
    assert_eq!(seen["peer"], DIRECT_PEER);
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_direct_tunnels_raw_bytes() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    let echo = start_echo("127.0.0.1").await;
    let mut tunnel = open_tunnel(h.proxy.local_addr(), echo).await.unwrap();
    assert_eq!(tunnel_roundtrip(&mut tunnel, b"\x16\x03\x01 not really TLS \x00\xff").await, DIRECT_PEER);
    tunnel_roundtrip_again(&mut tunnel, b"second write").await;
    assert!(gateway.seen().is_empty());
    h.proxy.stop().await;
}

/// Echo only (the greeting was read already).
async fn tunnel_roundtrip_again(tunnel: &mut TcpStream, payload: &[u8]) {
    tunnel.write_all(payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(STEP, tunnel.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, payload);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_route_http_and_connect_through_the_gateway() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    // Two hostnames: 127.0.0.1 ("a") and 127.0.0.3 ("b").
    let (target_a, target_b) = (start_target("127.0.0.1").await, start_target("127.0.0.3").await);
    let (echo_a, echo_b) = (start_echo("127.0.0.1").await, start_echo("127.0.0.3").await);
    let proxy = h.proxy.local_addr();

    let cases: [(Option<&[&str]>, bool, bool); 4] = [
        (None, false, false),
        (Some(&["127.0.0.3"]), false, true),
        (Some(&["*"]), true, true),
        (Some(&["*", "-127.0.0.3"]), true, false),
    ];
    for (rules, a_via_gateway, b_via_gateway) in cases {
        h.config.store(rules.map(|r| conn_config(r, PASS)));
        for (target, echo, via_gateway) in [(target_a, echo_a, a_via_gateway), (target_b, echo_b, b_via_gateway)] {
            let expected_peer = if via_gateway { GATEWAY_PEER } else { DIRECT_PEER };
            let before = gateway.seen().len();

            let url = format!("http://{target}/routed");
            let seen = get_json(proxy, &url).await;
            assert_eq!(seen["peer"], expected_peer, "rules {rules:?}, GET {target}");
            assert!(seen["headers"].get("proxy-authorization").is_none(), "{seen}");
            assert!(seen["headers"].get("proxy-connection").is_none(), "{seen}");

            let mut tunnel = open_tunnel(proxy, echo).await.unwrap();
            assert_eq!(tunnel_roundtrip(&mut tunnel, b"ping").await, expected_peer, "rules {rules:?}, CONNECT {echo}");

            let new: Vec<_> = gateway.seen()[before..].to_vec();
            if via_gateway {
                assert_eq!(new.len(), 2, "{new:?}");
                assert_eq!((new[0].method.as_str(), new[0].uri.as_str()), ("GET", url.as_str()), "absolute form");
                assert_eq!((new[1].method.as_str(), new[1].uri.as_str()), ("CONNECT", echo.to_string().as_str()));
                for s in &new {
                    assert_eq!(s.proxy_authorization.as_deref(), Some(token(USER, PASS).as_str()));
                }
            } else {
                assert!(new.is_empty(), "rules {rules:?}: direct traffic reached the gateway: {new:?}");
            }
        }
    }

    let traffic = h.proxy.traffic();
    let routes: Vec<(&str, Route, u64, u64)> =
        traffic.iter().map(|e| (e.hostname.as_str(), e.route, e.requests, e.tunnels)).collect();
    assert_eq!(
        routes,
        vec![
            ("127.0.0.1", Route::Direct, 2, 2),
            ("127.0.0.1", Route::Gateway, 2, 2),
            ("127.0.0.3", Route::Direct, 2, 2),
            ("127.0.0.3", Route::Gateway, 2, 2),
        ]
    );
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_swap_applies_to_the_next_request_on_the_same_connection() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    let target = start_target("127.0.0.1").await;
    let mut c = client(h.proxy.local_addr()).await;
    let url = format!("http://{target}/swap");
    let peer = |body: &str| serde_json::from_str::<Value>(body).unwrap()["peer"].as_str().unwrap().to_string();

    let (_, body) = send(&mut c, get(&url)).await;
    assert_eq!(peer(&body), DIRECT_PEER);
    h.config.store(Some(conn_config(&["*"], PASS)));
    let (_, body) = send(&mut c, get(&url)).await;
    assert_eq!(peer(&body), GATEWAY_PEER, "the swap must apply on the same keep-alive connection");
    h.config.store(Some(conn_config(&["*", "-127.0.0.1"], PASS)));
    let (_, body) = send(&mut c, get(&url)).await;
    assert_eq!(peer(&body), DIRECT_PEER);
    h.config.store(None);
    let (_, body) = send(&mut c, get(&url)).await;
    assert_eq!(peer(&body), DIRECT_PEER);
    assert_eq!(gateway.seen().len(), 1);
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_down_is_a_502_without_secrets_and_direct_still_works() {
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let h = start_proxy(GatewayConfig { protocol: GatewayProtocol::Http, host: "127.0.0.1".into(), port: dead.port() })
        .await;
    h.config.store(Some(conn_config(&["127.0.0.3"], PASS)));
    let proxied = start_target("127.0.0.3").await;
    let direct = start_target("127.0.0.1").await;
    let echo = start_echo("127.0.0.3").await;
    let secrets = [USER, PASS, &token(USER, PASS)[6..]];

    let (status, body) = send(&mut client(h.proxy.local_addr()).await, get(&format!("http://{proxied}/"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(body.trim_end(), format!("Bad Gateway: cannot reach gateway {dead} (Connection refused)"));
    let refused = open_tunnel(h.proxy.local_addr(), echo).await.unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 502"), "{refused}");
    assert!(refused.contains(&format!("cannot reach gateway {dead}")), "{refused}");
    for secret in secrets {
        assert!(!body.contains(secret) && !refused.contains(secret), "a credential leaked");
    }

    assert_eq!(get_json(h.proxy.local_addr(), &format!("http://{direct}/")).await["peer"], DIRECT_PEER);
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_gateway_is_spoken_to_in_tls() {
    // The test gateway speaks plain HTTP, so the TLS handshake must fail —
    // which proves the https protocol puts TLS on the wire.
    let gateway = Gateway::start().await;
    let h = start_proxy(GatewayConfig { protocol: GatewayProtocol::Https, ..gateway.config() }).await;
    h.config.store(Some(conn_config(&["*"], PASS)));
    let target = start_target("127.0.0.1").await;
    let (status, body) = send(&mut client(h.proxy.local_addr()).await, get(&format!("http://{target}/"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains(&format!("cannot reach gateway {} (TLS handshake failed", gateway.addr)), "{body}");
    assert!(gateway.seen().is_empty(), "no plain-text request may reach an https gateway");
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_refusals_become_502s() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    h.config.store(Some(conn_config(&["*"], "wrong-password")));
    let target = start_target("127.0.0.1").await;
    let echo = start_echo("127.0.0.1").await;

    let refused = open_tunnel(h.proxy.local_addr(), echo).await.unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 502"), "{refused}");
    assert!(refused.contains("gateway refused tunnel (HTTP 407)"), "{refused}");
    let (status, body) = send(&mut client(h.proxy.local_addr()).await, get(&format!("http://{target}/"))).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("HTTP 407"), "{body}");
    assert!(!body.contains("wrong-password") && !refused.contains("wrong-password"));
    assert_eq!(gateway.seen().len(), 2);
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_the_proxy_keeps_serving() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    let proxy = h.proxy.local_addr();
    let target = start_target("127.0.0.1").await;

    let garbage = raw(proxy, "THIS IS NOT HTTP\r\n\r\n").await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage:?}");
    for (bad, why) in [
        ("CONNECT nohostport HTTP/1.1\r\nHost: nohostport\r\nConnection: close\r\n\r\n", "host:port"),
        ("CONNECT 127.0.0.1:0 HTTP/1.1\r\nHost: 127.0.0.1:0\r\nConnection: close\r\n\r\n", "port 0"),
        ("GET /no-host HTTP/1.1\r\nConnection: close\r\n\r\n", "missing host"),
        ("GET https://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: close\r\n\r\n", "http://"),
    ] {
        let answer = raw(proxy, bad).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad:?} → {answer:?}");
        assert!(answer.contains("text/plain") && answer.contains(why), "{bad:?} → {answer:?}");
    }
    // A request to the proxy itself would loop forever.
    let looped = raw(proxy, &format!("GET / HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n")).await;
    assert!(looped.starts_with("HTTP/1.1 400"), "{looped}");

    // A 400 on a keep-alive connection leaves it usable.
    let mut c = client(proxy).await;
    let (status, _) = send(&mut c, Request::get("/no-host").body(Full::new(Bytes::new())).unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(&mut c, get(&format!("http://{target}/after"))).await;
    assert_eq!(status, StatusCode::OK);
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_a_port_in_use_is_a_proxy_start_error() {
    let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = taken.local_addr().unwrap().port();
    let opts = ProxyOptions {
        port: Some(port),
        gateway: GatewayConfig::default(),
        config: new_handle(),
        logger: Arc::new(Logger::new(Level::Silent)),
    };
    let err = ProxyServer::start(opts).await.unwrap_err();
    let AluviaError::ProxyStart(reason) = &err else { panic!("expected ProxyStart, got {err:?}") };
    assert!(reason.contains("in use") && reason.contains(&format!("127.0.0.1:{port}")), "{reason}");
    assert!(err.to_string().starts_with("Failed to start proxy server: "), "{err}");
    assert_eq!(err.code(), "ProxyStartError");
}

/// A target that counts the bytes it reads and writes on the wire: it reads
/// one request (head and a `Content-Length` body) per connection, answers
/// with a fixed response and closes.
async fn start_byte_counting_target() -> (SocketAddr, Arc<Mutex<(u64, u64)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new((0u64, 0u64)));
    let counts = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counts = counts.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = stream.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
                stream.write_all(answer).await.unwrap();
                let mut c = counts.lock().unwrap();
                c.0 += buf.len() as u64;
                c.1 += answer.len() as u64;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_counts_wire_bytes_requests_and_tunnels() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    h.config.store(Some(conn_config(&["127.0.0.3"], PASS)));
    let (target, origin) = start_byte_counting_target().await;
    let echo = start_echo("127.0.0.3").await;

    let post = Request::post(format!("http://{target}/count")).body(Full::new(Bytes::from("0123456789"))).unwrap();
    let (status, body) = send(&mut client(h.proxy.local_addr()).await, post).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
    let mut tunnel = open_tunnel(h.proxy.local_addr(), echo).await.unwrap();
    tunnel_roundtrip(&mut tunnel, b"12345").await;

    // What crossed the wire at the origin: request line, headers, body; and
    // the whole chunked answer.
    let (origin_read, origin_wrote) = *origin.lock().unwrap();
    assert!(origin_read > 10 + 20, "{origin_read}");
    let traffic = h.proxy.traffic();
    assert_eq!(
        traffic,
        vec![
            TrafficEntry {
                hostname: "127.0.0.1".into(),
                route: Route::Direct,
                requests: 1,
                tunnels: 0,
                bytes_sent: origin_read,
                bytes_received: origin_wrote,
            },
            TrafficEntry {
                hostname: "127.0.0.3".into(),
                route: Route::Gateway,
                requests: 0,
                tunnels: 1,
                bytes_sent: 5,
                bytes_received: ("peer=127.0.0.2\n".len() + 5) as u64,
            },
        ]
    );
    let json = serde_json::to_value(&traffic[1]).unwrap();
    assert_eq!(
        json,
        json!({"hostname": "127.0.0.3", "route": "gateway", "requests": 0, "tunnels": 1, "bytesSent": 5, "bytesReceived": 20})
    );
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_a_504() {
    let gateway = Gateway::start().await;
    let limits = Limits { response: Duration::from_millis(300), ..Limits::default() };
    let h = start_proxy_with(gateway.config(), limits).await;
    let silent = start_silent().await;
    let (status, body) = send(&mut client(h.proxy.local_addr()).await, get(&format!("http://{silent}/"))).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.starts_with("Gateway Timeout: no response from"), "{body}");
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_ends_open_tunnels_and_closes_the_port() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    let addr = h.proxy.local_addr();
    let echo = start_echo("127.0.0.1").await;
    let target = start_target("127.0.0.1").await;
    let mut tunnel = open_tunnel(addr, echo).await.unwrap();
    tunnel_roundtrip(&mut tunnel, b"alive").await;
    // An idle keep-alive client connection too.
    let mut idle = client(addr).await;
    send(&mut idle, get(&format!("http://{target}/"))).await;

    tokio::time::timeout(STEP, h.proxy.stop()).await.expect("stop() hung");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(STEP, tunnel.read(&mut buf)).await.expect("tunnel still open after stop()");
    assert!(matches!(read, Ok(0) | Err(_)), "tunnel still carries data: {read:?}");
    assert!(TcpStream::connect(addr).await.is_err(), "the port still accepts after stop()");
    // Idempotent.
    tokio::time::timeout(STEP, h.proxy.stop()).await.expect("second stop() hung");
}

/// A gateway that answers `CONNECT` with its 200 and the first bytes of the
/// tunnel in one write, then echoes: what follows the head must not be lost.
async fn start_eager_gateway() -> GatewayConfig {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                let _ = stream.write_all(b"HTTP/1.1 200 Connection established\r\n\r\npeer=eager-gateway\n").await;
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    GatewayConfig { protocol: GatewayProtocol::Http, host: "127.0.0.1".into(), port }
}

/// Send `size` bytes through `tunnel` to an echo server while reading them
/// back (after the echo server's `greeting`), then half-close and expect the
/// end of stream after the last byte.
async fn bulk_echo(tunnel: TcpStream, greeting: &str, size: usize) {
    let (mut r, mut w) = tunnel.into_split();
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    let sent = data.clone();
    let writer = tokio::spawn(async move {
        for chunk in sent.chunks(100_000) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
        w
    });
    let mut back = Vec::with_capacity(size);
    tokio::time::timeout(STEP * 4, r.read_to_end(&mut back)).await.expect("bulk echo hung").unwrap();
    let _w = writer.await.unwrap();
    assert!(back.starts_with(greeting.as_bytes()), "{:?}", String::from_utf8_lossy(&back[..greeting.len()]));
    let back = &back[greeting.len()..];
    assert_eq!(back.len(), size, "bytes lost or added");
    assert!(back == data, "bytes changed in transit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_carry_pipelined_bytes_bulk_data_and_half_closes() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    let proxy = h.proxy.local_addr();
    let echo = start_echo("127.0.0.3").await;
    const BULK: usize = 24 * 1024 * 1024;

    for rules in [None, Some(&["127.0.0.3"][..])] {
        h.config.store(rules.map(|r| conn_config(r, PASS)));
        let expected_peer = if rules.is_some() { GATEWAY_PEER } else { DIRECT_PEER };

        // The client sends data right behind its CONNECT, in the same write.
        let mut tcp = TcpStream::connect(proxy).await.unwrap();
        let head = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\nearly bytes");
        tcp.write_all(head.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(STEP, read_head(&mut tcp)).await.unwrap().expect("an answer");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let expected = format!("peer={expected_peer}\nearly bytes");
        let mut got = vec![0u8; expected.len()];
        tokio::time::timeout(STEP, tcp.read_exact(&mut got)).await.expect("pipelined tunnel hung").unwrap();
        assert_eq!(String::from_utf8_lossy(&got), expected, "rules {rules:?}");

        bulk_echo(open_tunnel(proxy, echo).await.unwrap(), &format!("peer={expected_peer}\n"), BULK).await;
    }
    let tunnels: Vec<(Route, u64, u64, u64)> =
        h.proxy.traffic().iter().map(|e| (e.route, e.tunnels, e.bytes_sent, e.bytes_received)).collect();
    let greeting = |peer: &str| format!("peer={peer}\n").len() as u64;
    let early = "early bytes".len() as u64;
    assert_eq!(
        tunnels,
        vec![
            (Route::Direct, 2, early + BULK as u64, greeting(DIRECT_PEER) * 2 + early + BULK as u64),
            (Route::Gateway, 2, early + BULK as u64, greeting(GATEWAY_PEER) * 2 + early + BULK as u64),
        ]
    );
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_a_gateway_sends_with_its_connect_answer_reach_the_client() {
    let h = start_proxy(start_eager_gateway().await).await;
    h.config.store(Some(conn_config(&["*"], PASS)));
    let echo = start_echo("127.0.0.1").await;
    let mut tunnel = open_tunnel(h.proxy.local_addr(), echo).await.unwrap();
    assert_eq!(tunnel_roundtrip(&mut tunnel, b"after the head").await, "eager-gateway");
    bulk_echo(tunnel, "", 4 * 1024 * 1024).await;
    h.proxy.stop().await;
}

// ------------------------------------------------- route changes, limits --

/// Store `cfg` and run the proxy's reroute, as the control plane does.
async fn change_config(h: &Harness, cfg: Arc<ConnectionConfig>) {
    h.config.store(Some(cfg));
    tokio::time::timeout(STEP, (h.proxy.route_listener())()).await.expect("reroute hung");
}

/// True once the peer has closed `stream` (EOF or reset), within a step.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(STEP, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_change_closes_exactly_the_tunnels_it_reroutes() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    h.config.store(Some(conn_config(&["127.0.0.4"], PASS)));
    let a = start_echo("127.0.0.3").await;
    let b = start_echo("127.0.0.4").await;

    let mut to_a = open_tunnel(h.proxy.local_addr(), a).await.unwrap();
    assert_eq!(tunnel_roundtrip(&mut to_a, b"a").await, DIRECT_PEER);
    let mut to_b = open_tunnel(h.proxy.local_addr(), b).await.unwrap();
    assert_eq!(tunnel_roundtrip(&mut to_b, b"b").await, GATEWAY_PEER);

    // a moves to the gateway: its direct tunnel is gone once the change is
    // done; b's tunnel (same gateway route) keeps carrying bytes.
    change_config(&h, conn_config(&["127.0.0.3", "127.0.0.4"], PASS)).await;
    assert!(closed(&mut to_a).await, "the direct tunnel to a survived the route change");
    tunnel_roundtrip_again(&mut to_b, b"still here").await;
    let mut again = open_tunnel(h.proxy.local_addr(), a).await.unwrap();
    assert_eq!(tunnel_roundtrip(&mut again, b"a").await, GATEWAY_PEER);

    // A new session id is a new gateway route: every gateway tunnel closes.
    let mut rotated = (*conn_config(&["127.0.0.3", "127.0.0.4"], PASS)).clone();
    rotated.session_id = Some("rotated".into());
    change_config(&h, Arc::new(rotated.clone())).await;
    assert!(closed(&mut to_b).await, "a gateway tunnel survived a session change");
    assert!(closed(&mut again).await, "a gateway tunnel survived a session change");

    // The same config again closes nothing.
    let mut fresh = open_tunnel(h.proxy.local_addr(), b).await.unwrap();
    tunnel_roundtrip(&mut fresh, b"x").await;
    change_config(&h, Arc::new(rotated)).await;
    tunnel_roundtrip_again(&mut fresh, b"unchanged").await;
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rules_edit_never_cuts_a_transfer_to_another_host() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    h.config.store(Some(conn_config(&[], PASS)));
    let busy = start_echo("127.0.0.3").await;
    let mut download = open_tunnel(h.proxy.local_addr(), busy).await.unwrap();
    tunnel_roundtrip(&mut download, b"start").await;
    let (mut r, mut w) = download.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![7u8; 64 * 1024];
        for _ in 0..64 {
            w.write_all(&chunk).await.unwrap();
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        w
    });
    for rules in [&["127.0.0.9"][..], &["127.0.0.9", "-127.0.0.3"], &["*.example.com"]] {
        change_config(&h, conn_config(rules, PASS)).await;
    }
    let mut got = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    while got < 64 * 64 * 1024 {
        let n = tokio::time::timeout(STEP, r.read(&mut buf)).await.expect("transfer stalled").unwrap();
        assert!(n > 0, "the transfer was cut after {got} bytes");
        got += n;
    }
    writer.await.unwrap();
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_the_proxy_itself_is_a_400() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    let port = h.proxy.local_addr().port();
    for host in [
        "127.0.0.1",
        "localhost",
        "0.0.0.0",
        "127.1",
        "2130706433",
        "0x7f.1",
        "127.0.0.7",
        "[::1]",
        "[::ffff:127.0.0.1]",
    ] {
        let answer = raw(
            h.proxy.local_addr(),
            &format!("GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{host}: {answer}");
        assert!(answer.contains("targets the proxy itself"), "{host}: {answer}");
        let refused = open_tunnel_to(h.proxy.local_addr(), &format!("{host}:{port}")).await.unwrap_err();
        assert!(refused.starts_with("HTTP/1.1 400"), "CONNECT {host}: {refused}");
    }
    // With the gateway route too: the gateway here is local and would loop.
    h.config.store(Some(conn_config(&["*"], PASS)));
    let answer = raw(
        h.proxy.local_addr(),
        &format!("GET http://127.1:{port}/ HTTP/1.1\r\nHost: 127.1:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(gateway.seen().is_empty(), "a self-loop reached the gateway: {:?}", gateway.seen());
    // A loop would hold thousands of connections into the proxy; every
    // refused one is closed (the process's descriptor count is shared with
    // the other tests, so the proxy's own count is what is checked).
    for _ in 0..50 {
        if h.proxy.open_connections() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.proxy.open_connections(), 0, "connections left open");
    h.proxy.stop().await;
}

/// `CONNECT authority` as given; the stream, or the proxy's refusal.
async fn open_tunnel_to(proxy: SocketAddr, authority: &str) -> Result<TcpStream, String> {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let Ok(read) = tokio::time::timeout(STEP, tcp.read(&mut answer)).await else {
        let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0);
        panic!("CONNECT {authority} hung ({fds} descriptors open)");
    };
    let n = read.unwrap_or(0);
    let text = String::from_utf8_lossy(&answer[..n]).into_owned();
    if text.starts_with("HTTP/1.1 200") {
        Ok(tcp)
    } else {
        Err(text)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_targets_and_malformed_chunked_bodies_are_400s() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    let target = start_target("127.0.0.1").await;
    let answer = raw(
        h.proxy.local_addr(),
        &format!("GET http://user:pw@{target}/ HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("userinfo"), "{answer}");
    assert!(!answer.contains("pw@"), "{answer}");
    let refused = open_tunnel_to(h.proxy.local_addr(), &format!("user:pw@{target}")).await.unwrap_err();
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");

    let answer = raw(
        h.proxy.local_addr(),
        &format!(
            "POST http://{target}/ HTTP/1.1\r\nHost: {target}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\nnot a chunk\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_closes_and_a_busy_one_stays() {
    let gateway = Gateway::start().await;
    let limits = Limits { tunnel_idle: Duration::from_millis(400), ..Limits::default() };
    let h = start_proxy_with(gateway.config(), limits).await;
    let echo = start_echo("127.0.0.1").await;
    let mut idle = open_tunnel(h.proxy.local_addr(), echo).await.unwrap();
    tunnel_roundtrip(&mut idle, b"x").await;
    let mut busy = open_tunnel(h.proxy.local_addr(), echo).await.unwrap();
    tunnel_roundtrip(&mut busy, b"x").await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        tunnel_roundtrip_again(&mut busy, b"ping").await;
    }
    assert!(closed(&mut idle).await, "an idle tunnel stayed open");
    tunnel_roundtrip_again(&mut busy, b"still busy").await;
    h.proxy.stop().await;
}

/// Raise the soft descriptor limit to the hard one.
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_tunnels_do_not_starve_a_plain_get() {
    const ATTEMPTS: usize = 5000;
    if raise_fd_limit() < 18_000 {
        eprintln!("skipped: needs 18,000 descriptors");
        return;
    }
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    let target = start_target("127.0.0.1").await;
    // Idle once it has greeted; closes when the client does.
    let silent = start_echo("127.0.0.1").await;
    let mut early = client(h.proxy.local_addr()).await;
    send(&mut early, get(&format!("http://{target}/"))).await;

    let mut tunnels = Vec::new();
    let mut refused = 0;
    for _ in 0..ATTEMPTS {
        match open_tunnel_to(h.proxy.local_addr(), &silent.to_string()).await {
            Ok(t) => tunnels.push(t),
            Err(answer) => {
                assert_eq!(answer, "", "a refusal past the bound is a close, not an answer");
                refused += 1;
            }
        }
    }
    assert_eq!(tunnels.len(), MAX_CLIENT_CONNECTIONS - 1, "open tunnels besides the early connection");
    assert_eq!(refused, ATTEMPTS - tunnels.len());
    // The connection opened before the flood is still served, at once.
    let (status, _) = send(&mut early, get(&format!("http://{target}/"))).await;
    assert_eq!(status, StatusCode::OK);
    drop(tunnels);
    // Once they close, new connections are served again.
    let mut served = false;
    for _ in 0..50 {
        if let Ok(tcp) = TcpStream::connect(h.proxy.local_addr()).await {
            if let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
                tokio::spawn(conn);
                if let Ok(Ok(res)) =
                    tokio::time::timeout(STEP, sender.send_request(get(&format!("http://{target}/")))).await
                {
                    served = res.status() == StatusCode::OK;
                    if served {
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served, "new connections still refused after the tunnels closed");
    h.proxy.stop().await;
}

/// A WebSocket-style server: answers an `Upgrade` request with 101 and then
/// echoes raw bytes, prefixed with the peer it saw.
async fn start_upgrade_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_head(&mut stream).await else { return };
                let text = head.to_ascii_lowercase();
                if !text.contains("upgrade: websocket") || !text.contains("connection: upgrade") {
                    let _ = stream.write_all(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n").await;
                    return;
                }
                let _ = stream
                    .write_all(format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\npeer={}\n", peer.ip()).as_bytes())
                    .await;
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_in_absolute_form_is_relayed_and_counted_as_a_tunnel() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    let ws = start_upgrade_echo().await;
    let mut tcp = TcpStream::connect(h.proxy.local_addr()).await.unwrap();
    let head = format!(
        "GET http://{ws}/chat HTTP/1.1\r\nHost: {ws}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let answer =
        tokio::time::timeout(STEP, read_head(&mut tcp)).await.unwrap().expect("an answer").to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 101"), "{answer}");
    assert!(answer.contains("upgrade: websocket"), "{answer}");
    assert_eq!(tunnel_roundtrip(&mut tcp, b"frame bytes").await, DIRECT_PEER);
    let traffic = h.proxy.traffic();
    assert_eq!(traffic.len(), 1);
    assert_eq!((traffic[0].requests, traffic[0].tunnels), (1, 1));
    assert!(traffic[0].bytes_sent > head.len() as u64 / 2 + 11, "{traffic:?}");

    // A route change reaches it like any tunnel.
    change_config(&h, conn_config(&["127.0.0.1"], PASS)).await;
    assert!(closed(&mut tcp).await, "the upgraded connection survived its route change");
    h.proxy.stop().await;
}

/// A server that ends its sending side at once and then holds the socket
/// open, reading nothing.
async fn start_half_closing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream.shutdown().await;
            held.push(stream);
        }
    });
    addr
}

/// A server that, once its client has ended its side, sends a byte every
/// 100 ms for `ticks` ticks, then holds the socket open.
async fn start_late_talker(ticks: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                for _ in 0..ticks {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if stream.write_all(b".").await.is_err() {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_secs(60)).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_tunnel_ends_once_the_other_side_is_quiet() {
    let gateway = Gateway::start().await;
    // The idle limit is the default 5 minutes: only the half-close limit can
    // end these tunnels within the test.
    let limits = Limits { half_close: Duration::from_millis(400), ..Limits::default() };
    let h = start_proxy_with(gateway.config(), limits).await;

    // The client ends its side; the target keeps its own open and says nothing.
    let mut client_closed = open_tunnel(h.proxy.local_addr(), start_silent().await).await.unwrap();
    client_closed.shutdown().await.unwrap();
    // The target ends its side; the client keeps its own open and says nothing.
    let mut target_closed = open_tunnel(h.proxy.local_addr(), start_half_closing().await).await.unwrap();
    // The client ends its side, and the target goes on talking for a while
    // (1.2 s, three times the limit): the tunnel carries all of it.
    let mut talking = open_tunnel(h.proxy.local_addr(), start_late_talker(12).await).await.unwrap();
    talking.shutdown().await.unwrap();

    let started = std::time::Instant::now();
    assert!(closed(&mut client_closed).await, "a tunnel whose client closed stayed open");
    assert!(closed(&mut target_closed).await, "a tunnel whose target closed stayed open");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());

    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(STEP, talking.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the talking tunnel did not end once its target went quiet"),
        }
    }
    assert_eq!(got, b"............", "every byte the target sent after the client's end arrived");
    h.proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_proxy_answers_nothing_until_released_then_everything() {
    let gateway = Gateway::start().await;
    let h = start_proxy(gateway.config()).await;
    let target = start_target("127.0.0.1").await;
    h.proxy.hold();
    let proxy = h.proxy.local_addr();
    let waiting = tokio::spawn(async move {
        let mut sender = client(proxy).await;
        send(&mut sender, get(&format!("http://{target}/held"))).await
    });
    let tunnel = tokio::spawn(async move { open_tunnel(proxy, target).await.is_ok() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "a request was answered while the proxy was held");
    assert!(!tunnel.is_finished(), "a tunnel was opened while the proxy was held");
    h.proxy.release();
    let (status, _) = tokio::time::timeout(STEP, waiting).await.expect("answered once released").unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(tokio::time::timeout(STEP, tunnel).await.expect("tunnel once released").unwrap());
    // And requests after the release are not held at all.
    let mut sender = client(proxy).await;
    assert_eq!(send(&mut sender, get(&format!("http://{target}/after"))).await.0, StatusCode::OK);
    h.proxy.stop().await;
}
