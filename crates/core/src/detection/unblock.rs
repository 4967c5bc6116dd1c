//! Auto-unblock bookkeeping: which URLs were already retried through the
//! gateway, and which hostnames stay blocked even so.

use std::collections::HashSet;

use super::{BlockStatus, DetectionConfig, DetectionResult};

/// The retried-URL set is cleared when it reaches this size.
pub const RETRIED_URLS_LIMIT: usize = 10_000;

/// What the caller does with one result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnblockDecision {
    /// Not a result to act on (auto-unblock off, status too low, no hostname).
    Nothing,
    /// The hostname is persistently blocked: set `persistentBlock`, no reload.
    PersistentBlock,
    /// Add `hostname` to the rules unless they already cover it
    /// (`RulesEdit::cover`, under the connection's lock), then reload the
    /// page. A failed PATCH or reload is logged and does not stop detection.
    AddRuleAndReload { hostname: String },
}

impl UnblockDecision {
    /// Marks `result` as a persistent block when that is the decision.
    pub fn apply(&self, result: &mut DetectionResult) {
        if *self == UnblockDecision::PersistentBlock {
            result.persistent_block = true;
        }
    }
}

/// Persistently blocked hostnames and retried URLs. One per session; the
/// caller serializes calls (one `Mutex` across all pages).
#[derive(Debug, Default)]
pub struct Unblocker {
    persistent: HashSet<String>,
    retried: HashSet<String>,
}

impl Unblocker {
    pub fn new() -> Unblocker {
        Unblocker::default()
    }

    /// The spec's three steps, for a `blocked` result (or a `suspected` one
    /// with `autoUnblockOnSuspected`) when `autoUnblock` is on:
    /// 1. hostname already persistently blocked → [`UnblockDecision::PersistentBlock`];
    /// 2. URL already retried once → the hostname becomes persistently
    ///    blocked, [`UnblockDecision::PersistentBlock`];
    /// 3. otherwise remember the URL → [`UnblockDecision::AddRuleAndReload`].
    pub fn decide(&mut self, result: &DetectionResult, cfg: &DetectionConfig) -> UnblockDecision {
        let acts = match result.block_status {
            BlockStatus::Blocked => true,
            BlockStatus::Suspected => cfg.auto_unblock_on_suspected,
            BlockStatus::Clear => false,
        };
        if !cfg.enabled || !cfg.auto_unblock || !acts || result.hostname.is_empty() {
            return UnblockDecision::Nothing;
        }
        if self.persistent.contains(&result.hostname) {
            return UnblockDecision::PersistentBlock;
        }
        if self.retried.contains(&result.url) {
            self.persistent.insert(result.hostname.clone());
            return UnblockDecision::PersistentBlock;
        }
        if self.retried.len() >= RETRIED_URLS_LIMIT {
            self.retried.clear();
        }
        self.retried.insert(result.url.clone());
        UnblockDecision::AddRuleAndReload { hostname: result.hostname.clone() }
    }

    /// [`decide`](Self::decide), then [`UnblockDecision::apply`] to `result`.
    pub fn decide_and_mark(&mut self, result: &mut DetectionResult, cfg: &DetectionConfig) -> UnblockDecision {
        let decision = self.decide(result, cfg);
        decision.apply(result);
        decision
    }

    pub fn is_persistently_blocked(&self, hostname: &str) -> bool {
        self.persistent.contains(hostname)
    }

    /// Persistently blocked hostnames, sorted.
    pub fn blocked_hostnames(&self) -> Vec<String> {
        let mut out: Vec<String> = self.persistent.iter().cloned().collect();
        out.sort();
        out
    }

    /// Forgets the persistently blocked hostnames and the retried URLs.
    pub fn clear(&mut self) {
        self.persistent.clear();
        self.retried.clear();
    }

    /// How many URLs are remembered as retried.
    pub fn retried_len(&self) -> usize {
        self.retried.len()
    }
}
