//! Editing a connection's rules without losing an edit made a moment earlier.
//!
//! The API has no conditional PATCH, so two read-modify-writes of one
//! connection's rules can interleave and the second undo the first. Every
//! writer on this machine — the CLI's `session set-rules` and the auto-unblock
//! of every session daemon and client — goes through
//! [`edit_connection_rules`]: it holds `rules-{connectionId}.lock` in the lock
//! directory around a fresh GET (never a cached config), the new list and the
//! PATCH. Writers on other machines cannot be serialized this way.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::{finish, id_value, rules_of, ApiClient, Call};
use crate::error::Result;
use crate::rules::{normalize_host, validate_rules, RuleSet};
use crate::store::LockDir;

/// What to do to a connection's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesEdit {
    add: Vec<String>,
    remove: Vec<String>,
    /// Leave out an added hostname that the rules already send through the gateway.
    skip_covered: bool,
}

impl RulesEdit {
    /// The current rules minus `remove`, then `add` appended; when anything is
    /// added the whole list is deduplicated, first occurrence kept. Rules are
    /// compared as given (exact strings), as `session set-rules` does.
    pub fn new(add: Vec<String>, remove: Vec<String>) -> RulesEdit {
        RulesEdit { add, remove, skip_covered: false }
    }

    /// Auto-unblock: add `hostname` (lower-cased, without IPv6 brackets, port
    /// or trailing dot) unless the rules already proxy it — `*`,
    /// `*.example.com` or the host in another case all cover it.
    pub fn cover(hostname: &str) -> RulesEdit {
        let host = normalize_host(hostname);
        let add = if host.is_empty() { Vec::new() } else { vec![host] };
        RulesEdit { add, remove: Vec::new(), skip_covered: true }
    }

    /// Refuses an edit whose added or removed rules hold a control
    /// character (see [`validate_rules`]).
    pub fn validate(&self) -> Result<()> {
        validate_rules(&self.add)?;
        validate_rules(&self.remove)
    }

    /// The rules after this edit of `current`.
    pub fn apply(&self, current: &[String]) -> Vec<String> {
        let mut rules: Vec<String> = current.iter().filter(|r| !self.remove.contains(r)).cloned().collect();
        // Auto-unblock adds nothing the rules already proxy, and then leaves
        // the user's list exactly as it is.
        let covers = RuleSet::new(&rules);
        let add: Vec<&String> = self.add.iter().filter(|r| !(self.skip_covered && covers.should_proxy(r))).collect();
        if add.is_empty() {
            return rules;
        }
        let mut seen = HashSet::new();
        rules.retain(|r| seen.insert(r.clone()));
        rules.extend(add.into_iter().filter(|r| seen.insert((*r).clone())).cloned());
        rules
    }
}

/// The outcome of [`edit_connection_rules`].
#[derive(Clone, PartialEq)]
pub struct EditedRules {
    /// The rules now on the connection.
    pub rules: Vec<String>,
    /// False when the rules already were as asked and nothing was PATCHed.
    pub changed: bool,
    /// The connection as the API last returned it (the PATCH answer, else the
    /// fresh GET), and that answer's ETag.
    pub connection: Value,
    pub etag: Option<String>,
}

// The connection holds the proxy password: it stays out of debug prints.
debug_without_secrets!(EditedRules { rules, changed, etag });

/// How long to wait for another writer of the same connection: its GET and
/// PATCH can each take up to the API timeout.
fn lock_wait(api: &ApiClient) -> Duration {
    Duration::from_millis(api.timeout_ms()).saturating_mul(2) + Duration::from_secs(10)
}

/// Applies `edit` to the rules of connection `connection_id` under the
/// connection's lock in `locks` (without it, when the lock directory cannot
/// be used, the edit still reads fresh but is not serialized with other
/// processes): GET the connection from the API, compute the
/// new list, PATCH it only if it differs. An edit that
/// [`RulesEdit::validate`] refuses fails before the lock is taken or the API
/// is asked.
pub async fn edit_connection_rules(
    api: &ApiClient,
    locks: Option<&LockDir>,
    connection_id: &str,
    edit: &RulesEdit,
) -> Result<EditedRules> {
    edit.validate()?;
    let _lock = match locks {
        Some(locks) => Some(locks.lock_rules(connection_id, lock_wait(api)).await?),
        None => None,
    };
    let id = id_value(connection_id.trim());
    let get = Call::ConnectionsGet { id: id.clone(), etag: None };
    let response = api.send(&get.try_request()?).await?;
    let connection = finish(&get, &response)?.unwrap_or(Value::Null);
    let current = rules_of(&connection);
    let rules = edit.apply(&current);
    if rules == current {
        return Ok(EditedRules { rules, changed: false, connection, etag: response.etag });
    }
    let patch = Call::ConnectionsPatch { id, body: Some(json!({ "rules": rules })) };
    let response = api.send(&patch.try_request()?).await?;
    let connection = finish(&patch, &response)?.unwrap_or(Value::Null);
    let rules = if connection.get("rules").is_some_and(Value::is_array) { rules_of(&connection) } else { rules };
    Ok(EditedRules { rules, changed: true, connection, etag: response.etag })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aluvia_emulator::{Emulator, EmulatorOptions};

    use super::*;
    use crate::config::new_handle;
    use crate::control::ControlPlane;
    use crate::log::{Level, Logger};
    use crate::store::testutil::TempDir;

    fn strings(rules: &[&str]) -> Vec<String> {
        rules.iter().map(|r| r.to_string()).collect()
    }

    fn applied(edit: RulesEdit, current: &[&str]) -> Vec<String> {
        edit.apply(&strings(current))
    }

    #[test]
    fn rules_edit_append_and_remove() {
        let append = |add: &[&str], current: &[&str]| applied(RulesEdit::new(strings(add), vec![]), current);
        let remove = |rm: &[&str], current: &[&str]| applied(RulesEdit::new(vec![], strings(rm)), current);
        assert_eq!(append(&["a.com", "b.com", "keep.com"], &["keep.com"]), ["keep.com", "a.com", "b.com"]);
        assert_eq!(append(&["b.com", "b.com"], &["x", "a", "x"]), ["x", "a", "b.com"]);
        // Exact strings, as set-rules compares them.
        assert_eq!(append(&["A.com"], &["a.com"]), ["a.com", "A.com"]);
        assert_eq!(remove(&["a.com", "keep.com"], &["keep.com", "a.com", "b.com"]), ["b.com"]);
        assert_eq!(remove(&["missing"], &["x", "x"]), ["x", "x"]);
        assert_eq!(applied(RulesEdit::new(strings(&["c"]), strings(&["a"])), &["a", "b"]), ["b", "c"]);
    }

    #[test]
    fn rules_edit_cover_skips_what_is_already_proxied() {
        let cover = |host: &str, current: &[&str]| applied(RulesEdit::cover(host), current);
        assert_eq!(cover("www.example.com", &["*"]), ["*"]);
        assert_eq!(cover("www.example.com", &["*.example.com"]), ["*.example.com"]);
        assert_eq!(cover("www.example.com", &[" WWW.Example.COM "]), [" WWW.Example.COM "]);
        assert_eq!(cover("google.co.uk", &["google.*"]), ["google.*"]);
        assert_eq!(cover("[::1]", &["::1"]), ["::1"]);
        // Added normalized: no brackets, port, trailing dot or upper case.
        assert_eq!(cover("[::1]", &["a.com"]), ["a.com", "::1"]);
        assert_eq!(cover("Shop.Example.COM.", &[]), ["shop.example.com"]);
        assert_eq!(cover("example.com", &["*.example.com"]), ["*.example.com", "example.com"]);
        assert_eq!(cover("example.com", &["AUTO"]), ["AUTO", "example.com"]);
        // An exclusion is the user's word: the host is added, and stays excluded.
        assert_eq!(cover("example.com", &["*", "-example.com"]), ["*", "-example.com", "example.com"]);
        assert_eq!(cover("", &["a"]), ["a"]);
        // Covered already: the user's list stays exactly as it is.
        assert_eq!(cover("a.com", &["*", "*"]), ["*", "*"]);
    }

    struct Fixture {
        emu: Emulator,
        _tmp: TempDir,
        locks: LockDir,
        id: String,
    }

    impl Fixture {
        async fn new(tag: &str) -> Fixture {
            let emu = Emulator::start(EmulatorOptions { site: false, ..EmulatorOptions::default() }).await.unwrap();
            let tmp = TempDir::new(tag);
            let locks = tmp.lock_dir();
            let created = Fixture::client_of(&emu).call(&Call::ConnectionsCreate { body: None }).await.unwrap();
            let id = created.and_then(|c| c.get("connection_id").cloned()).unwrap().to_string();
            Fixture { emu, _tmp: tmp, locks, id }
        }

        fn client_of(emu: &Emulator) -> ApiClient {
            ApiClient::new(&emu.api_key(), Some(&emu.api_base_url()), None).unwrap()
        }

        /// A client of its own, as another process would have.
        fn client(&self) -> ApiClient {
            Fixture::client_of(&self.emu)
        }

        async fn get(&self) -> (Vec<String>, Option<String>) {
            let call = Call::ConnectionsGet { id: id_value(&self.id), etag: None };
            let response = self.client().send(&call.request()).await.unwrap();
            (rules_of(&finish(&call, &response).unwrap().unwrap()), response.etag)
        }

        async fn set(&self, rules: &[&str]) {
            let body = Some(json!({ "rules": rules }));
            self.client().call(&Call::ConnectionsPatch { id: id_value(&self.id), body }).await.unwrap();
        }

        /// Every API call waits `ms` before it is served, so that unserialized
        /// read-modify-writes would certainly overlap.
        async fn api_delay(&self, ms: u64) {
            let url = self.emu.api_base_url().replace("/v1", "/_emulator/faults");
            let status = reqwest::Client::new()
                .post(url)
                .bearer_auth(self.emu.api_key())
                .header("content-type", "application/json")
                .body(json!({ "apiDelayMs": ms }).to_string())
                .send()
                .await
                .unwrap()
                .status();
            assert!(status.is_success(), "{status}");
        }

        fn control_of(&self, id: Option<String>) -> ControlPlane {
            ControlPlane::new(self.client(), new_handle(), Arc::new(Logger::new(Level::Silent)), id)
        }

        /// A started client's control plane on the connection, config loaded.
        async fn control(&self) -> ControlPlane {
            let control = self.control_of(Some(self.id.clone()));
            control.init(true).await.unwrap();
            control
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rules_edit_concurrent_adds_from_two_clients_all_survive() {
        let fx = Arc::new(Fixture::new("rules-concurrent").await);
        fx.set(&["keep.com"]).await;
        fx.api_delay(20).await;
        let clients = [fx.client(), fx.client()];
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let (fx, api) = (Arc::clone(&fx), clients[i % 2].clone());
                tokio::spawn(async move {
                    let edit = RulesEdit::new(vec![format!("host{i}.example.com")], vec![]);
                    edit_connection_rules(&api, Some(&fx.locks), &fx.id, &edit).await
                })
            })
            .collect();
        for task in tasks {
            let edited = task.await.unwrap().unwrap();
            assert!(edited.changed);
        }
        let (mut rules, _) = fx.get().await;
        assert_eq!(rules.remove(0), "keep.com");
        rules.sort();
        let mut expected: Vec<String> = (0..20).map(|i| format!("host{i}.example.com")).collect();
        expected.sort();
        assert_eq!(rules, expected, "every concurrent add survived");
        let left: Vec<_> = std::fs::read_dir(fx.locks.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "no lock file left: {left:?}");
        fx.emu.stop().await;
    }

    #[tokio::test]
    async fn rules_edit_remove_and_no_patch_without_change() {
        let fx = Fixture::new("rules-remove").await;
        fx.set(&["a.com", "b.com", "c.com"]).await;
        let api = fx.client();
        let edited =
            edit_connection_rules(&api, Some(&fx.locks), &fx.id, &RulesEdit::new(vec![], strings(&["a.com", "c.com"])))
                .await
                .unwrap();
        assert!(edited.changed);
        assert_eq!(edited.rules, ["b.com"]);
        let (rules, etag) = fx.get().await;
        assert_eq!(rules, ["b.com"]);

        // Removing what is not there, adding what is there: no PATCH (same version).
        for edit in [RulesEdit::new(vec![], strings(&["zzz"])), RulesEdit::new(strings(&["b.com"]), vec![])] {
            let edited = edit_connection_rules(&api, Some(&fx.locks), &fx.id, &edit).await.unwrap();
            assert!(!edited.changed);
            assert_eq!(edited.rules, ["b.com"]);
            assert_eq!(edited.etag, etag);
        }
        assert_eq!(fx.get().await, (strings(&["b.com"]), etag));

        // An API failure comes back as the API's error, and the lock is let go.
        let missing = edit_connection_rules(&api, Some(&fx.locks), "999999", &RulesEdit::new(strings(&["x"]), vec![]))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), "ApiError");
        assert!(!fx.locks.rules_lock_path("999999").exists());
        fx.emu.stop().await;
    }

    #[tokio::test]
    async fn rules_edit_cover_on_the_clients_connection() {
        let fx = Fixture::new("rules-cover").await;
        let control = fx.control().await;
        for (rules, host) in [
            (&["*"][..], "www.example.com"),
            (&["*.example.com"][..], "www.example.com"),
            (&["Shop.Example.com"][..], "shop.example.com"),
            (&["::1"][..], "[::1]"),
        ] {
            fx.set(rules).await;
            let edited = control.edit_rules(Some(&fx.locks), &RulesEdit::cover(host)).await.unwrap();
            assert!(!edited.changed, "{rules:?} covers {host}");
            assert_eq!(fx.get().await.0, strings(rules));
            // The fresh answer is in use locally, stale as the local copy was.
            assert_eq!(control.config().load().as_ref().unwrap().raw_rules, strings(rules));
        }

        fx.set(&["a.com"]).await;
        let edited = control.edit_rules(Some(&fx.locks), &RulesEdit::cover("[::1]")).await.unwrap();
        assert!(edited.changed);
        assert_eq!(edited.rules, ["a.com", "::1"]);
        assert_eq!(fx.get().await.0, ["a.com", "::1"]);
        let again = control.edit_rules(Some(&fx.locks), &RulesEdit::cover("[::1]")).await.unwrap();
        assert!(!again.changed, "added once only");
        fx.emu.stop().await;
    }

    #[tokio::test]
    async fn rules_edit_stale_local_config_loses_nothing() {
        let fx = Fixture::new("rules-stale").await;
        let control = fx.control().await;
        assert!(control.config().load().as_ref().unwrap().raw_rules.is_empty());
        // Another process (the CLI) changes the rules; no poll has run here.
        fx.set(&["other.com", "*.cdn.net"]).await;
        let edited = control.edit_rules(Some(&fx.locks), &RulesEdit::cover("blocked.com")).await.unwrap();
        assert_eq!(edited.rules, ["other.com", "*.cdn.net", "blocked.com"]);
        assert_eq!(fx.get().await.0, ["other.com", "*.cdn.net", "blocked.com"]);
        // And the proxy routes by the answer from the next request on.
        let local = control.config().load_full().unwrap();
        assert_eq!(local.raw_rules, ["other.com", "*.cdn.net", "blocked.com"]);
        assert!(local.rules.should_proxy("blocked.com") && local.rules.should_proxy("img.cdn.net"));
        // A poll answered now finds nothing newer than what is in use.
        assert!(!control.poll_once().await.unwrap());
        fx.emu.stop().await;
    }

    #[tokio::test]
    async fn rules_with_control_characters_change_nothing() {
        let fx = Fixture::new("rules-control").await;
        fx.set(&["keep.com", "b.com"]).await;
        let before = fx.get().await;
        let api = fx.client();
        let control = fx.control().await;
        for edit in [
            RulesEdit::new(strings(&["a.com", "bad\u{7}.com"]), vec![]),
            RulesEdit::new(vec![], strings(&["b.com", "\u{1b}[31m"])),
            RulesEdit::new(strings(&["nel\u{85}.com"]), vec![]),
        ] {
            let err = edit_connection_rules(&api, Some(&fx.locks), &fx.id, &edit).await.unwrap_err();
            assert_eq!(err.code(), "InvalidArgument", "{err}");
            assert!(err.to_string().ends_with("': rules cannot contain control characters."), "{err}");
            assert_eq!(control.edit_rules(Some(&fx.locks), &edit).await.unwrap_err(), err);
        }
        let err = control.update_rules(strings(&["g\u{2}.com"])).await.unwrap_err();
        assert_eq!(err.to_string(), r"Invalid rule 'g\u{2}.com': rules cannot contain control characters.");
        // Nothing was PATCHed (same version), nothing changed locally, no lock left.
        assert_eq!(fx.get().await, before);
        assert_eq!(control.config().load().as_ref().unwrap().raw_rules, ["keep.com", "b.com"]);
        assert_eq!(std::fs::read_dir(fx.locks.path()).unwrap().count(), 0);
        fx.emu.stop().await;
    }

    #[tokio::test]
    async fn rules_edit_without_a_connection_is_an_error() {
        let fx = Fixture::new("rules-noconn").await;
        let err = fx.control_of(None).edit_rules(Some(&fx.locks), &RulesEdit::cover("a.com")).await.unwrap_err();
        assert_eq!(err.to_string(), "No account connection ID available");
        fx.emu.stop().await;
    }

    #[tokio::test]
    async fn rules_edit_without_the_lock_directory_still_edits() {
        let fx = Fixture::new("rules-nolock").await;
        let control = fx.control().await;
        fx.set(&["other.com"]).await;
        let edited = control.edit_rules(None, &RulesEdit::cover("blocked.com")).await.unwrap();
        assert!(edited.changed);
        assert_eq!(fx.get().await.0, ["other.com", "blocked.com"]);
        assert_eq!(control.config().load().as_ref().unwrap().raw_rules, ["other.com", "blocked.com"]);
        assert_eq!(std::fs::read_dir(fx.locks.path()).unwrap().count(), 0, "no lock file was made");
        fx.emu.stop().await;
    }
}
