//! A tiny "protected site" that challenges datacenter (direct) visitors the way
//! Cloudflare does, and serves a normal page to visitors from a gateway exit
//! address. Its `/login?user=<name>` page signs the visitor in (a `login`
//! cookie and a `login` item of local storage), and every visit records the
//! `login` cookie it came with: what a profile kept is what the site sees.
//! Ours: told to be stricter (`SitePolicy`), it also refuses the first exit a
//! connection arrives from (a flagged IP) and the geos it does not serve.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, SERVER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::state::Refusal;
use crate::util::{empty, json_response, now_ms, respond, Body};
use crate::Inner;

pub(crate) struct Site {
    visits: Mutex<Vec<Value>>,
    /// The gateway's exits and the site's policy live in the shared state.
    inner: Arc<Inner>,
}

impl Site {
    pub(crate) fn new(inner: Arc<Inner>) -> Site {
        Site { visits: Mutex::new(Vec::new()), inner }
    }

    fn visits(&self) -> MutexGuard<'_, Vec<Value>> {
        self.visits.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

const CHALLENGE_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en-US">
<head>
<meta charset="UTF-8">
<meta name="robots" content="noindex,nofollow">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>Just a moment...</title>
</head>
<body>
<div class="main-wrapper" role="main">
<h1>Checking your browser</h1>
<p>Verify you are human.</p>
<form id="challenge-form" action="/?__cf_chl_f_tk=emulated" method="POST" enctype="application/x-www-form-urlencoded">
<input type="hidden" name="md" value="emulated-challenge">
</form>
</div>
</body>
</html>
"#;

fn challenge() -> Response<Body> {
    let mut resp = respond(StatusCode::FORBIDDEN, "text/html", CHALLENGE_PAGE);
    let headers = resp.headers_mut();
    headers.insert("cf-mitigated", HeaderValue::from_static("challenge"));
    headers.insert(SERVER, HeaderValue::from_static("cloudflare"));
    headers.insert("cache-control", HeaderValue::from_static("private, no-store"));
    resp
}

const GEO_BLOCK_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>Access denied</title>
</head>
<body>
<h1>Access denied</h1>
<p>This shop is not available in your region.</p>
</body>
</html>
"#;

fn geo_block() -> Response<Body> {
    let mut resp = respond(StatusCode::FORBIDDEN, "text/html", GEO_BLOCK_PAGE);
    resp.headers_mut().insert("cache-control", HeaderValue::from_static("private, no-store"));
    resp
}

/// Who `/login?user=<name>` signs in (letters, digits and `-` only; else
/// `emulated-user`).
fn login_user(req: &Request<Incoming>) -> String {
    let given = req.uri().query().unwrap_or_default().split('&').find_map(|p| p.strip_prefix("user="));
    given
        .filter(|u| !u.is_empty() && u.len() <= 40 && u.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .unwrap_or("emulated-user")
        .to_string()
}

fn shop_page(peer: IpAddr, login: Option<&str>) -> Response<Body> {
    let script = match login {
        Some(user) => format!("<script>localStorage.setItem('login', '{user}')</script>"),
        None => String::new(),
    };
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<title>Aluvia Emulator Shop</title>
</head>
<body>
<header><h1>Aluvia Emulator Shop</h1><p id="visitor">You are visiting from {peer}.</p></header>
<main>
<article>
<h2>Field notes: choosing a travel kettle</h2>
<p>A good travel kettle boils half a litre of water in under four minutes, folds
flat enough to fit beside a laptop, and switches between voltages without an
adapter. We tested eleven models over a month of train journeys and hotel stays,
measuring boil time, noise and how warm the handle became.</p>
<p>The silicone models were the lightest, but their seams collected limescale
after a few weeks of hard water. The steel models were heavier and louder, yet
they kept their shape and were easier to clean with a little vinegar and a soft
brush. Our favourite balanced both: a steel base with a collapsible wall.</p>
<p>Whatever you choose, descale it every two weeks, never run it empty, and keep
the cord loosely coiled so the insulation lasts. Orders placed before noon ship
the same day, and every kettle comes with a two-year warranty.</p>
</article>
</main>
<footer><p>Served by the Aluvia local emulator to {peer}.</p></footer>
{script}
</body>
</html>
"#
    );
    let mut resp = respond(StatusCode::OK, "text/html", html);
    if let Some(user) = login {
        let cookie = format!("login={user}; Path=/; Max-Age=86400; Secure; HttpOnly; SameSite=Lax");
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            resp.headers_mut().insert(hyper::header::SET_COOKIE, value);
        }
    }
    resp
}

/// The `login` cookie a request came with.
fn login_cookie(req: &Request<Incoming>) -> Option<String> {
    req.headers()
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| pair.trim().strip_prefix("login=").map(str::to_string))
}

/// Why the site's policy refuses the gateway visitor at `peer`, if it does.
pub(crate) fn refusal(inner: &Inner, peer: SocketAddr) -> Option<Refusal> {
    let mut st = inner.state();
    let exit = st.exits.get(&peer).cloned();
    st.site_policy.refuses(exit.as_ref())
}

pub(crate) async fn handle(site: Arc<Site>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path();
    if path == "/_site/visits" {
        return match *req.method() {
            Method::GET => {
                let visits = Value::Array(site.visits().clone());
                json_response(StatusCode::OK, &visits)
            }
            Method::DELETE => {
                site.visits().clear();
                let mut resp = Response::new(empty());
                *resp.status_mut() = StatusCode::NO_CONTENT;
                resp
            }
            _ => {
                let mut resp = Response::new(empty());
                *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, DELETE"));
                resp
            }
        };
    }
    if path.starts_with("/_site/") {
        let mut resp = Response::new(empty());
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    }

    let (resp, refused) = if path == "/favicon.ico" {
        let mut resp = Response::new(empty());
        *resp.status_mut() = StatusCode::NOT_FOUND;
        (resp, None)
    } else if path == "/strict" || path.starts_with("/strict/") || peer.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST) {
        // /strict challenges everyone; other pages challenge direct visitors.
        (challenge(), Some("direct"))
    } else {
        match refusal(&site.inner, peer) {
            Some(Refusal::Flagged) => (challenge(), Some("flagged")),
            Some(Refusal::Geo) => (geo_block(), Some("geo")),
            None => {
                let user = (path == "/login").then(|| login_user(&req));
                (shop_page(peer.ip(), user.as_deref()), None)
            }
        }
    };
    let shown_path = req.uri().path_and_query().map_or_else(|| path.to_owned(), |pq| pq.as_str().to_owned());
    site.visits().push(json!({
        "path": shown_path,
        "peer": peer.ip().to_string(),
        "protocol": format!("{:?}", req.version()),
        "status": resp.status().as_u16(),
        "login": login_cookie(&req),
        "refused": refused,
        "time_ms": now_ms(),
    }));
    resp
}
