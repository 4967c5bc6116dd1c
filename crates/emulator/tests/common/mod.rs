//! Helpers shared by the integration tests: a loopback target server that
//! reports the peer address it saw, and a small proxy client built on hyper.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;

use aluvia_emulator::{Emulator, EmulatorOptions};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HOST, PROXY_AUTHORIZATION};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

pub(crate) async fn start() -> Emulator {
    Emulator::start(EmulatorOptions::default()).await.expect("emulator starts")
}

/// A reqwest client that never uses a proxy from the environment.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().expect("client builds")
}

pub(crate) fn url(emu: &Emulator, path: &str) -> String {
    format!("{}{}", emu.api_base_url(), path)
}

pub(crate) fn admin_url(emu: &Emulator, path: &str) -> String {
    let base = emu.api_base_url();
    format!("{}{}", base.trim_end_matches("/v1"), path)
}

/// Sends an authenticated API request and returns (status, headers, JSON body or Null).
pub(crate) async fn api(
    emu: &Emulator,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = http().request(method, url(emu, path)).bearer_auth(emu.api_key());
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("API answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).expect("JSON body") };
    (status, headers, value)
}

/// Creates a connection and returns its data object.
pub(crate) async fn create_connection(emu: &Emulator, body: Value) -> Value {
    let (status, _, value) = api(emu, reqwest::Method::POST, "/account/connections", Some(body)).await;
    assert_eq!(status, 201, "{value}");
    value["data"].clone()
}

pub(crate) async fn patch_connection(emu: &Emulator, id: u64, body: Value) -> Value {
    let (status, _, value) = api(emu, reqwest::Method::PATCH, &format!("/account/connections/{id}"), Some(body)).await;
    assert_eq!(status, 200, "{value}");
    value["data"].clone()
}

pub(crate) async fn admin(emu: &Emulator, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = http().request(method, admin_url(emu, path)).bearer_auth(emu.api_key());
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("admin answers");
    let status = resp.status().as_u16();
    let value = resp.json().await.unwrap_or(Value::Null);
    (status, value)
}

pub(crate) fn creds(conn: &Value) -> (String, String) {
    (
        conn["proxy_username"].as_str().expect("username").to_owned(),
        conn["proxy_password"].as_str().expect("password").to_owned(),
    )
}

/// A target server on 127.0.0.1 answering every request with JSON describing
/// what it saw: the peer IP, method, path, body length and whether a
/// Proxy-Authorization header reached it.
pub(crate) async fn spawn_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("target binds");
    let addr = listener.local_addr().expect("target addr");
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| async move {
                    let method = req.method().to_string();
                    let path = req.uri().to_string();
                    let saw_proxy_auth = req.headers().contains_key(PROXY_AUTHORIZATION);
                    let host = req.headers().get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
                    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let answer = json!({
                        "peer": peer.ip().to_string(),
                        "method": method,
                        "path": path,
                        "host": host,
                        "body_len": body.len(),
                        "saw_proxy_authorization": saw_proxy_auth,
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

pub(crate) fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")))
}

pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("JSON answer ({e}): {}", self.body))
    }
}

/// Sends one request over an HTTP/1.1 connection on `io`.
async fn send_on<T>(io: T, req: Request<Full<Bytes>>) -> Answer
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.expect("handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("response");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// `METHOD http://target/path` through the gateway (absolute form).
pub(crate) async fn proxy_request(
    gateway_port: u16,
    auth: Option<&str>,
    method: Method,
    url: &str,
    body: &str,
) -> Answer {
    let stream = TcpStream::connect(("127.0.0.1", gateway_port)).await.expect("gateway accepts");
    let uri: hyper::Uri = url.parse().expect("url");
    let mut req = Request::builder()
        .method(method)
        .uri(uri.clone())
        .header(HOST, uri.authority().map_or("localhost", |a| a.as_str()));
    if let Some(auth) = auth {
        req = req.header(PROXY_AUTHORIZATION, auth);
    }
    let req = req.body(Full::new(Bytes::from(body.to_owned()))).expect("request");
    send_on(stream, req).await
}

pub(crate) async fn proxy_get(gateway_port: u16, auth: Option<&str>, url: &str) -> Answer {
    proxy_request(gateway_port, auth, Method::GET, url, "").await
}

/// Opens a CONNECT tunnel through the gateway. Err carries the gateway's answer.
pub(crate) async fn open_tunnel(
    gateway_port: u16,
    auth: Option<&str>,
    target: &str,
) -> Result<hyper::upgrade::Upgraded, Answer> {
    let stream = TcpStream::connect(("127.0.0.1", gateway_port)).await.expect("gateway accepts");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(conn.with_upgrades());
    let mut req = Request::builder().method(Method::CONNECT).uri(target).header(HOST, target);
    if let Some(auth) = auth {
        req = req.header(PROXY_AUTHORIZATION, auth);
    }
    let req = req.body(Full::new(Bytes::new())).expect("request");
    let resp = sender.send_request(req).await.expect("CONNECT answer");
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(Answer { status, headers, body: String::from_utf8_lossy(&body).into_owned() });
    }
    Ok(hyper::upgrade::on(resp).await.expect("upgrade"))
}

/// CONNECT to `target`, then `GET path` inside the tunnel.
pub(crate) async fn tunnel_get(gateway_port: u16, auth: &str, target: SocketAddr, path: &str) -> Answer {
    let upgraded = match open_tunnel(gateway_port, Some(auth), &target.to_string()).await {
        Ok(upgraded) => upgraded,
        Err(answer) => panic!("CONNECT refused: {} {}", answer.status, answer.body),
    };
    let req =
        Request::builder().uri(path).header(HOST, target.to_string()).body(Full::new(Bytes::new())).expect("request");
    send_on(TokioIo::new(upgraded), req).await
}
