//! One CDP connection (chromiumoxide's `Connection` with raw JSON events),
//! multiplexed: calls with or without a session, and per-session event
//! subscribers.
//!
//! Every page target is auto-attached with `waitForDebuggerOnStart`, so a new
//! page stays paused until its watcher has subscribed and resumed it: no page
//! can navigate before we see its events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::target::SessionId;
use chromiumoxide::types::{CallId, EventMessage, Message, Method, MethodId};
use chromiumoxide::Connection;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, watch};

pub(super) type Event = (String, Value);

/// An event as JSON. (chromiumoxide's `CdpJsonEventMessage` does not read
/// the `sessionId` key, so every event would look browser-level.)
#[derive(serde::Deserialize, Debug, Clone)]
pub(super) struct RawEvent {
    method: MethodId,
    #[serde(rename = "sessionId", default)]
    session_id: Option<String>,
    #[serde(default)]
    params: Value,
}

impl Method for RawEvent {
    fn identifier(&self) -> MethodId {
        self.method.clone()
    }
}

impl EventMessage for RawEvent {
    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
}

/// A page target attached through our connection.
#[derive(Clone, Debug)]
pub(super) struct Attached {
    pub session_id: String,
    pub target_id: String,
    pub waiting: bool,
}

struct Call {
    method: String,
    session: Option<String>,
    params: Value,
    reply: oneshot::Sender<Result<Value, String>>,
}

#[derive(Default)]
struct Routes {
    /// Subscribers per session.
    sessions: HashMap<String, Vec<mpsc::UnboundedSender<Event>>>,
    /// Page sessions in attach order.
    order: Vec<String>,
}

#[derive(Clone)]
pub(super) struct Cdp {
    calls: mpsc::UnboundedSender<Call>,
    routes: Arc<Mutex<Routes>>,
    gone: watch::Receiver<bool>,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl Cdp {
    /// Connect and start the I/O task. `on_attach` is called, inside the I/O
    /// task and before any later message is read, for every page target
    /// attached; it returns that session's event receiver (so nothing is
    /// missed between attach and subscribe).
    pub(super) async fn connect(
        ws_url: &str,
        on_attach: impl Fn(Attached, mpsc::UnboundedReceiver<Event>) + Send + 'static,
    ) -> Result<Cdp, String> {
        let conn = Connection::<RawEvent>::connect(ws_url).await.map_err(|e| e.to_string())?;
        let (calls_tx, calls_rx) = mpsc::unbounded_channel();
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (gone_tx, gone_rx) = watch::channel(false);
        let cdp = Cdp { calls: calls_tx, routes: Arc::clone(&routes), gone: gone_rx };
        tokio::spawn(io_task(conn, calls_rx, routes, gone_tx, cdp.clone(), on_attach));
        Ok(cdp)
    }

    pub(super) async fn call(&self, method: &str, session: Option<&str>, params: Value) -> Result<Value, String> {
        let (reply, rx) = oneshot::channel();
        self.calls
            .send(Call { method: method.to_string(), session: session.map(str::to_string), params, reply })
            .map_err(|_| "the browser connection is closed".to_string())?;
        match tokio::time::timeout(CALL_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("the browser connection is closed".into()),
            Err(_) => Err(format!("{method} timed out")),
        }
    }

    /// Another subscriber for a session's events.
    pub(super) fn subscribe(&self, session: &str) -> Option<mpsc::UnboundedReceiver<Event>> {
        let mut routes = self.routes.lock().ok()?;
        let subs = routes.sessions.get_mut(session)?;
        let (tx, rx) = mpsc::unbounded_channel();
        subs.push(tx);
        Some(rx)
    }

    /// Page sessions currently attached, in attach order.
    pub(super) fn page_sessions(&self) -> Vec<String> {
        self.routes.lock().map(|r| r.order.clone()).unwrap_or_default()
    }

    pub(super) async fn wait_gone(&self) {
        let mut rx = self.gone.clone();
        let _ = rx.wait_for(|g| *g).await;
    }
}

async fn io_task(
    mut conn: Connection<RawEvent>,
    mut calls: mpsc::UnboundedReceiver<Call>,
    routes: Arc<Mutex<Routes>>,
    gone: watch::Sender<bool>,
    cdp: Cdp,
    on_attach: impl Fn(Attached, mpsc::UnboundedReceiver<Event>) + Send + 'static,
) {
    let mut pending: HashMap<CallId, oneshot::Sender<Result<Value, String>>> = HashMap::new();
    // Attach to every page, now and later, paused until its watcher resumes it.
    let setup = json!({ "autoAttach": true, "waitForDebuggerOnStart": true, "flatten": true });
    let _ = conn.submit_command("Target.setAutoAttach".into(), None, setup);
    loop {
        tokio::select! {
            call = calls.recv() => {
                let Some(call) = call else { break };
                // Callers that gave up (timed out) dropped their receiver:
                // forget them rather than wait for answers that may never come.
                pending.retain(|_, reply| !reply.is_closed());
                match conn.submit_command(call.method.into(), call.session.map(SessionId::new), call.params) {
                    Ok(id) => { pending.insert(id, call.reply); }
                    Err(e) => { let _ = call.reply.send(Err(e.to_string())); }
                }
            }
            msg = conn.next() => {
                match msg {
                    None => break,
                    Some(Ok(Message::Response(resp))) => {
                        if let Some(reply) = pending.remove(&resp.id) {
                            let out = match (resp.result, resp.error) {
                                (_, Some(err)) => Err(err.message),
                                (Some(v), None) => Ok(v),
                                (None, None) => Ok(Value::Null),
                            };
                            let _ = reply.send(out);
                        }
                    }
                    Some(Ok(Message::Event(ev))) => dispatch(ev, &routes, &cdp, &on_attach),
                    // A message we cannot read: skip it, the connection is fine.
                    Some(Err(chromiumoxide::error::CdpError::InvalidMessage(..))) => {}
                    Some(Err(_)) => break,
                }
            }
        }
    }
    for (_, reply) in pending.drain() {
        let _ = reply.send(Err("the browser connection is closed".into()));
    }
    if let Ok(mut r) = routes.lock() {
        r.sessions.clear();
        r.order.clear();
    }
    let _ = gone.send(true);
}

fn dispatch(
    ev: RawEvent,
    routes: &Arc<Mutex<Routes>>,
    cdp: &Cdp,
    on_attach: &impl Fn(Attached, mpsc::UnboundedReceiver<Event>),
) {
    let method = ev.method.to_string();
    match (method.as_str(), ev.session_id) {
        ("Target.attachedToTarget", None) => {
            let info = &ev.params["targetInfo"];
            let session_id = ev.params["sessionId"].as_str().unwrap_or_default().to_string();
            let waiting = ev.params["waitingForDebugger"].as_bool().unwrap_or(false);
            if info["type"].as_str() == Some("page") && !session_id.is_empty() {
                let (tx, rx) = mpsc::unbounded_channel();
                if let Ok(mut r) = routes.lock() {
                    r.sessions.insert(session_id.clone(), vec![tx]);
                    r.order.push(session_id.clone());
                }
                let target_id = info["targetId"].as_str().unwrap_or_default().to_string();
                on_attach(Attached { session_id, target_id, waiting }, rx);
            } else if !session_id.is_empty() {
                // Not ours to watch (workers and the like): let it run, let go.
                let cdp = cdp.clone();
                tokio::spawn(async move {
                    if waiting {
                        let _ = cdp.call("Runtime.runIfWaitingForDebugger", Some(&session_id), json!({})).await;
                    }
                    let _ = cdp.call("Target.detachFromTarget", None, json!({ "sessionId": session_id })).await;
                });
            }
        }
        ("Target.detachedFromTarget", None) => {
            if let Some(sid) = ev.params["sessionId"].as_str() {
                if let Ok(mut r) = routes.lock() {
                    r.sessions.remove(sid);
                    r.order.retain(|s| s != sid);
                }
            }
        }
        (_, Some(sid)) => {
            if let Ok(mut r) = routes.lock() {
                if let Some(subs) = r.sessions.get_mut(&sid) {
                    subs.retain(|s| s.send((method.clone(), ev.params.clone())).is_ok());
                }
            }
        }
        _ => {}
    }
}
