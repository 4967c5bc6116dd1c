//! The protected site over HTTPS: HTTP/1.1 and h2 by ALPN, with the
//! certificate and the public-key pin the emulator reports.

use std::sync::Arc;

use aluvia_emulator::{Emulator, EmulatorOptions};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn der_of(pem: &str) -> CertificateDer<'static> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    CertificateDer::from(STANDARD.decode(body).unwrap())
}

/// GET `path` over TLS trusting only `pem`, offering `alpn`; the negotiated
/// protocol, the status and the body.
async fn get(port: u16, pem: &str, alpn: &[&[u8]], path: &str) -> (Option<Vec<u8>>, u16, String) {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der_of(pem)).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("the site's certificate is valid for 127.0.0.1");
    let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    let uri = format!("https://127.0.0.1:{port}{path}");
    let res = if negotiated.as_deref() == Some(b"h2") {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(Request::get(uri).body(Empty::<Bytes>::new()).unwrap()).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(conn);
        let req = Request::get(path).header("host", format!("127.0.0.1:{port}")).body(Empty::<Bytes>::new()).unwrap();
        sender.send_request(req).await.unwrap()
    };
    let status = res.status().as_u16();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (negotiated, status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_site_speaks_https_in_http1_and_h2() {
    let emu = Emulator::start(EmulatorOptions::default()).await.unwrap();
    let url = emu.site_https_url().expect("an HTTPS site");
    let port: u16 = url.trim_start_matches("https://127.0.0.1:").trim_end_matches('/').parse().unwrap();
    let pem = emu.site_certificate().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    let spki = STANDARD.decode(emu.site_spki().unwrap()).unwrap();
    assert_eq!(spki.len(), 32, "a SHA-256 pin");

    let (alpn, status, body) = get(port, &pem, &[b"h2", b"http/1.1"], "/").await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    // A direct visitor (127.0.0.1) gets the challenge, as over plain HTTP.
    assert_eq!(status, 403);
    assert!(body.contains("challenge-form"), "{body}");
    let (alpn, status, _) = get(port, &pem, &[b"http/1.1"], "/").await;
    assert_eq!((alpn.as_deref(), status), (Some(&b"http/1.1"[..]), 403));

    // Both visits are on record, with their protocol.
    let site = emu.site_url().unwrap();
    let visits: serde_json::Value = reqwest::get(format!("{site}_site/visits")).await.unwrap().json().await.unwrap();
    let protocols: Vec<&str> = visits.as_array().unwrap().iter().map(|v| v["protocol"].as_str().unwrap()).collect();
    assert_eq!(protocols, ["HTTP/2.0", "HTTP/1.1"]);

    // Another emulator makes another key.
    let other = Emulator::start(EmulatorOptions::default()).await.unwrap();
    assert_ne!(other.site_spki(), emu.site_spki());
    other.stop().await;
    emu.stop().await;
}
