//! Auto-unblock bookkeeping: which URLs were already retried through the
//! gateway, which hostnames stay blocked even so, the unblock ladder of each
//! hostname (ours) and the log of the actions taken.
//!
//! With `unblockSteps` at its default `['rule']`, auto-unblock is the
//! documented one: add the hostname to the rules and reload, once per URL.
//! Any other list is a ladder per hostname: each block takes the next rung
//! that is not already in effect (`rule`, `rotate`, then one rung per geo of
//! `unblockGeos`), a `clear` result ends it as a success, and when the rungs
//! run out the hostname is persistently blocked.

use std::collections::{HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use super::{BlockStatus, DetectionConfig, DetectionResult};
use crate::config::ConnectionConfig;

/// The retried-URL set is cleared when it reaches this size.
pub const RETRIED_URLS_LIMIT: usize = 10_000;
/// The unblock log keeps this many actions, the oldest dropped first.
pub const UNBLOCK_LOG_LIMIT: usize = 20;
/// The steps of `unblockSteps`, as written.
pub const UNBLOCK_STEPS: [&str; 3] = ["rule", "rotate", "geo"];

/// One step of `unblockSteps`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnblockStep {
    /// Add the hostname to the rules (it goes through the gateway).
    Rule,
    /// A new `session_id`: a new exit IP for the whole connection.
    Rotate,
    /// The next geo of `unblockGeos` as `target_geo`.
    Geo,
}

impl UnblockStep {
    pub fn name(self) -> &'static str {
        match self {
            UnblockStep::Rule => "rule",
            UnblockStep::Rotate => "rotate",
            UnblockStep::Geo => "geo",
        }
    }

    fn parse(text: &str) -> Option<UnblockStep> {
        match text {
            "rule" => Some(UnblockStep::Rule),
            "rotate" => Some(UnblockStep::Rotate),
            "geo" => Some(UnblockStep::Geo),
            _ => None,
        }
    }
}

/// One rung of a ladder: a step, and for `geo` the geo it sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rung {
    pub step: UnblockStep,
    pub geo: Option<String>,
}

impl Rung {
    /// `rule`, `rotate`, `geo us_ca`: for log lines.
    pub fn describe(&self) -> String {
        match &self.geo {
            Some(geo) => format!("{} {geo}", self.step.name()),
            None => self.step.name().to_string(),
        }
    }
}

/// A result's `unblock`: the action taken on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnblockNote {
    pub step: UnblockStep,
    /// 1 for the first rung taken on this hostname since its ladder started,
    /// 2 for the next, …
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo: Option<String>,
}

/// How an action turned out: `pending` until the reloaded page's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UnblockOutcome {
    Pending,
    Cleared,
    Blocked,
}

/// One entry of `unblockLog`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnblockLogEntry {
    /// ISO 8601, UTC.
    pub at: String,
    pub hostname: String,
    pub step: UnblockStep,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo: Option<String>,
    pub outcome: UnblockOutcome,
}

impl UnblockLogEntry {
    fn rung(&self) -> Rung {
        Rung { step: self.step, geo: self.geo.clone() }
    }
}

/// The option names a ladder's errors use (`unblockSteps`, or the CLI's
/// `--unblock-steps`).
#[derive(Debug, Clone, Copy)]
pub struct LadderNames {
    pub steps: &'static str,
    pub geos: &'static str,
}

/// The names of `blockDetection` (and MCP's `session_start`).
pub const OPTION_NAMES: LadderNames = LadderNames { steps: "unblockSteps", geos: "unblockGeos" };
/// The names of `session start`'s flags.
pub const FLAG_NAMES: LadderNames = LadderNames { steps: "--unblock-steps", geos: "--unblock-geos" };

fn shown(text: &str) -> String {
    crate::text::sanitize_to(text, 40)
}

/// The rungs of `steps` and `geos`, in order (`geo` is one rung per geo), or
/// why they are not a ladder: an empty or unknown step, a step listed twice,
/// `geo` without geos, geos without `geo`, an empty or repeated geo. Steps
/// are trimmed and lower-cased, geos trimmed. Whether each geo exists is the
/// API's to say (`GET /geos`).
pub fn ladder(steps: &[String], geos: &[String], names: LadderNames) -> Result<Vec<Rung>, String> {
    let LadderNames { steps: steps_name, geos: geos_name } = names;
    if steps.is_empty() {
        return Err(format!("Invalid {steps_name}: it is empty. Use rule, rotate or geo."));
    }
    let mut geo_list: Vec<String> = Vec::new();
    for geo in geos {
        let geo = geo.trim();
        if geo.is_empty() {
            return Err(format!("Invalid {geos_name}: a geo code is empty."));
        }
        if geo_list.iter().any(|g| g == geo) {
            return Err(format!("Invalid {geos_name}: '{}' is listed twice.", shown(geo)));
        }
        geo_list.push(geo.to_string());
    }
    let mut seen = HashSet::new();
    let mut rungs = Vec::new();
    for raw in steps {
        let text = raw.trim().to_ascii_lowercase();
        let Some(step) = UnblockStep::parse(&text) else {
            return Err(format!("Invalid {steps_name}: unknown step '{}'. Use rule, rotate or geo.", shown(raw)));
        };
        if !seen.insert(step) {
            return Err(format!("Invalid {steps_name}: '{text}' is listed twice."));
        }
        match step {
            UnblockStep::Geo if geo_list.is_empty() => {
                return Err(format!("Invalid {steps_name}: the 'geo' step needs {geos_name}, the geo codes to try."));
            }
            UnblockStep::Geo => rungs.extend(geo_list.iter().map(|g| Rung { step, geo: Some(g.clone()) })),
            _ => rungs.push(Rung { step, geo: None }),
        }
    }
    if !geo_list.is_empty() && !seen.contains(&UnblockStep::Geo) {
        return Err(format!("Invalid {geos_name}: {steps_name} has no 'geo' step to use them."));
    }
    Ok(rungs)
}

/// The first geo of `geos` that `available` (the codes of `GET /geos`) does
/// not have, as the error that rejects it.
pub fn unknown_geo(geos: &[String], available: &[String], names: LadderNames) -> Option<String> {
    let geo = geos.iter().map(|g| g.trim()).find(|g| !available.iter().any(|a| a == g))?;
    Some(format!("Invalid {}: '{}' is not one of the API's geos (GET /geos).", names.geos, shown(geo)))
}

/// Whether `rung` is already in effect for `hostname` under `config`: `rule`
/// when the rules send the host through the gateway, a `geo` rung when that
/// geo is the connection's. `rotate` never is (each one is a new IP).
pub fn rung_in_effect(rung: &Rung, hostname: &str, config: Option<&ConnectionConfig>) -> bool {
    let Some(config) = config else { return false };
    match rung.step {
        UnblockStep::Rule => {
            let host = hostname.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(hostname);
            config.rules.should_proxy(host)
        }
        UnblockStep::Rotate => false,
        UnblockStep::Geo => rung.geo.is_some() && config.target_geo == rung.geo,
    }
}

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
    /// Ours, the ladder: apply `rung` (and wait until the change has reached
    /// open connections), then reload the page.
    TakeRung { hostname: String, rung: Rung, attempt: u32 },
}

impl UnblockDecision {
    /// Marks `result` as a persistent block when that is the decision.
    pub fn apply(&self, result: &mut DetectionResult) {
        if *self == UnblockDecision::PersistentBlock {
            result.persistent_block = true;
        }
    }

    /// The result's `unblock` for this decision.
    pub fn note(&self) -> Option<UnblockNote> {
        match self {
            UnblockDecision::AddRuleAndReload { .. } => {
                Some(UnblockNote { step: UnblockStep::Rule, attempt: 1, geo: None })
            }
            UnblockDecision::TakeRung { rung, attempt, .. } => {
                Some(UnblockNote { step: rung.step, attempt: *attempt, geo: rung.geo.clone() })
            }
            _ => None,
        }
    }
}

/// What [`Unblocker::handle`] made of one result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handled {
    pub decision: UnblockDecision,
    /// The action this `clear` result proved right, if any.
    pub cleared: Option<UnblockLogEntry>,
    /// Whether the log changed (an action taken, an outcome known).
    pub log_changed: bool,
}

/// The ladder of one hostname while it runs.
#[derive(Debug, Default)]
struct Ladder {
    /// The index of the next rung to consider.
    next: usize,
    /// Rungs taken so far.
    taken: u32,
}

/// A rung taken on a page whose reloaded verdict has not come yet.
#[derive(Debug)]
struct Awaited {
    page: String,
}

/// Persistently blocked hostnames, retried URLs, ladders and the log. One per
/// session; the caller serializes calls (one `Mutex` across all pages).
#[derive(Debug, Default)]
pub struct Unblocker {
    persistent: HashSet<String>,
    retried: HashSet<String>,
    ladders: HashMap<String, Ladder>,
    /// Index into `log` of each hostname's pending action (by sequence).
    pending: HashMap<String, u64>,
    log: VecDeque<(u64, UnblockLogEntry)>,
    seq: u64,
    awaited: Option<Awaited>,
}

/// Whether auto-unblock acts on `result` under `cfg`.
fn acts_on(result: &DetectionResult, cfg: &DetectionConfig) -> bool {
    let acts = match result.block_status {
        BlockStatus::Blocked => true,
        BlockStatus::Suspected => cfg.auto_unblock_on_suspected,
        BlockStatus::Clear => false,
    };
    cfg.enabled && cfg.auto_unblock && acts && !result.hostname.is_empty()
}

/// Whether `cfg` runs a ladder rather than the documented one-rung auto-unblock.
pub fn runs_ladder(cfg: &DetectionConfig) -> bool {
    !(cfg.unblock_steps.len() == 1 && cfg.unblock_steps[0].trim().eq_ignore_ascii_case("rule"))
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
    ///
    /// With a ladder, nothing counts as in effect; see [`handle`](Self::handle).
    pub fn decide(&mut self, result: &DetectionResult, cfg: &DetectionConfig) -> UnblockDecision {
        let mut result = result.clone();
        self.handle("", &mut result, cfg, |_| false).decision
    }

    /// [`decide`](Self::decide), then [`UnblockDecision::apply`] to `result`.
    pub fn decide_and_mark(&mut self, result: &mut DetectionResult, cfg: &DetectionConfig) -> UnblockDecision {
        self.handle("", result, cfg, |_| false).decision
    }

    /// Whether a result from `page` that would act must wait: a ladder's rung
    /// taken on another page has not had its reloaded verdict yet, and rungs
    /// of two hostnames never interleave.
    pub fn must_wait(&self, page: &str, result: &DetectionResult, cfg: &DetectionConfig) -> bool {
        runs_ladder(cfg) && acts_on(result, cfg) && self.awaited.as_ref().is_some_and(|a| a.page != page)
    }

    /// Stops waiting for a verdict that is taking too long (the page closed,
    /// or went elsewhere).
    pub fn stop_waiting(&mut self) {
        self.awaited = None;
    }

    /// One result from `page` (a CDP target id): settles the outcome of the
    /// action it answers, decides what to do, and marks `result` (its
    /// `persistentBlock` and `unblock`). `in_effect` says whether a rung is
    /// already in effect for the result's hostname ([`rung_in_effect`]).
    pub fn handle(
        &mut self,
        page: &str,
        result: &mut DetectionResult,
        cfg: &DetectionConfig,
        in_effect: impl Fn(&Rung) -> bool,
    ) -> Handled {
        let host = result.hostname.clone();
        let mut handled = Handled { decision: UnblockDecision::Nothing, cleared: None, log_changed: false };
        if self.awaited.as_ref().is_some_and(|a| a.page == page) {
            self.awaited = None;
        }
        if result.block_status == BlockStatus::Clear && !host.is_empty() {
            self.ladders.remove(&host);
            if let Some(entry) = self.settle(&host, UnblockOutcome::Cleared) {
                handled.cleared = Some(entry);
                handled.log_changed = true;
            }
        }
        if !acts_on(result, cfg) {
            return handled;
        }
        handled.log_changed |= self.settle(&host, UnblockOutcome::Blocked).is_some();
        let decision = if self.persistent.contains(&host) {
            UnblockDecision::PersistentBlock
        } else if runs_ladder(cfg) {
            self.climb(page, result, cfg, in_effect)
        } else if self.retried.contains(&result.url) {
            self.persistent.insert(host.clone());
            UnblockDecision::PersistentBlock
        } else {
            if self.retried.len() >= RETRIED_URLS_LIMIT {
                self.retried.clear();
            }
            self.retried.insert(result.url.clone());
            UnblockDecision::AddRuleAndReload { hostname: host.clone() }
        };
        decision.apply(result);
        result.unblock = decision.note();
        if let Some(note) = &result.unblock {
            self.record(&host, note);
            handled.log_changed = true;
        }
        handled.decision = decision;
        handled
    }

    /// The next rung of `result`'s hostname that is not in effect, or the
    /// end of its ladder (a persistent block).
    fn climb(
        &mut self,
        page: &str,
        result: &DetectionResult,
        cfg: &DetectionConfig,
        in_effect: impl Fn(&Rung) -> bool,
    ) -> UnblockDecision {
        let host = &result.hostname;
        let rungs = ladder(&cfg.unblock_steps, &cfg.unblock_geos, OPTION_NAMES).unwrap_or_default();
        let ladder = self.ladders.entry(host.clone()).or_default();
        let next = rungs.iter().enumerate().skip(ladder.next).find(|(_, rung)| !in_effect(rung));
        let Some((index, rung)) = next else {
            self.ladders.remove(host);
            self.persistent.insert(host.clone());
            return UnblockDecision::PersistentBlock;
        };
        ladder.next = index + 1;
        ladder.taken += 1;
        self.awaited = Some(Awaited { page: page.to_string() });
        UnblockDecision::TakeRung { hostname: host.clone(), rung: rung.clone(), attempt: ladder.taken }
    }

    fn record(&mut self, host: &str, note: &UnblockNote) {
        self.seq += 1;
        let entry = UnblockLogEntry {
            at: crate::log::iso_now(),
            hostname: host.to_string(),
            step: note.step,
            geo: note.geo.clone(),
            outcome: UnblockOutcome::Pending,
        };
        self.log.push_back((self.seq, entry));
        while self.log.len() > UNBLOCK_LOG_LIMIT {
            self.log.pop_front();
        }
        self.pending.insert(host.to_string(), self.seq);
    }

    /// Gives `host`'s pending action its outcome; returns that entry.
    fn settle(&mut self, host: &str, outcome: UnblockOutcome) -> Option<UnblockLogEntry> {
        let seq = self.pending.remove(host)?;
        let (_, entry) = self.log.iter_mut().find(|(s, _)| *s == seq)?;
        entry.outcome = outcome;
        Some(entry.clone())
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

    /// Forgets the persistently blocked hostnames and the retried URLs, and
    /// resets every ladder. The log is kept.
    pub fn clear(&mut self) {
        self.persistent.clear();
        self.retried.clear();
        self.ladders.clear();
        self.awaited = None;
    }

    /// How many URLs are remembered as retried.
    pub fn retried_len(&self) -> usize {
        self.retried.len()
    }

    /// The last [`UNBLOCK_LOG_LIMIT`] actions, oldest first.
    pub fn log(&self) -> Vec<UnblockLogEntry> {
        self.log.iter().map(|(_, e)| e.clone()).collect()
    }
}

/// The success line of a cleared action.
pub fn cleared_line(entry: &UnblockLogEntry) -> String {
    format!("auto-unblock: {} is clear after the {} rung", entry.hostname, entry.rung().describe())
}
