//! Rollouts and previews as runs: what one is ([`RunSpec`], asked for by
//! a [`RolloutRequest`] or a deploy), where it stands ([`RunState`]: its
//! cursor over the tenants and its counts), the work it hands provision,
//! and what became of each tenant ([`Outcome`]).

use super::preview::PreviewTotals;
use super::selection::{tenants_and_exclude, Selection, When};
use crate::core::ids::{ModelVersion, RunId, TenantId};
use crate::core::model::LicensingModel;
use crate::core::rejection::Rejection;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// What a run does: move tenants to a registered version, or show what
/// moving them to a version (or to a candidate model not deployed yet)
/// would change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunKind {
    Rollout {
        to: ModelVersion,
        at: When,
    },
    Preview {
        to: ModelVersion,
        /// The candidate's text (TOML), when it is not a registered version.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        candidate: Option<String>,
    },
}

/// A rollout or preview as asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    pub id: RunId,
    #[serde(flatten)]
    pub kind: RunKind,
    pub tenants: Selection,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub exclude: BTreeSet<TenantId>,
    pub created_at: DateTime<Utc>,
    /// Who asked: the operator's principal, or `deploy` for the automatic
    /// rollout of a deploy with `[rollout] existing = "migrate"`.
    pub by: String,
}

impl RunSpec {
    pub fn to(&self) -> &ModelVersion {
        match &self.kind {
            RunKind::Rollout { to, .. } | RunKind::Preview { to, .. } => to,
        }
    }
    pub fn is_rollout(&self) -> bool {
        matches!(self.kind, RunKind::Rollout { .. })
    }
    /// The automatic rollout of a deploy: one per version, named after it.
    pub fn deploy(to: &LicensingModel, now: DateTime<Utc>) -> RunSpec {
        RunSpec {
            id: deploy_run_id(&to.version),
            kind: RunKind::Rollout { to: to.version.clone(), at: When::from_rule(to.rollout.at) },
            tenants: Selection::All,
            exclude: BTreeSet::new(),
            created_at: now,
            by: "deploy".into(),
        }
    }
    /// When the run may start (a rollout at a time waits for it).
    pub fn starts_at(&self) -> Option<DateTime<Utc>> {
        match self.kind {
            RunKind::Rollout { at: When::At(t), .. } => Some(t),
            _ => None,
        }
    }
}

pub fn deploy_run_id(version: &ModelVersion) -> RunId {
    let id = format!("deploy-{version}");
    RunId::parse(&id).unwrap_or_else(|_| RunId::parse(crate::core::audit::hash_of(&id)[..32].to_string()).expect("hex is an id"))
}

/// `POST /model/rollouts`: `{"to", "tenants", "exclude"?, "at"?}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolloutRequest {
    pub to: ModelVersion,
    pub tenants: Selection,
    pub exclude: BTreeSet<TenantId>,
    pub at: When,
}

impl RolloutRequest {
    /// Parses a request body, naming every problem (the version is checked
    /// against the registry by the caller).
    pub fn parse(body: &Value) -> Result<RolloutRequest, Rejection> {
        let Some(obj) = body.as_object() else { return Err(Rejection::invalid("invalid_rollout", vec!["the body must be a JSON object".into()])) };
        let mut problems = Vec::new();
        for key in obj.keys() {
            if !["to", "tenants", "exclude", "at"].contains(&key.as_str()) {
                problems.push(format!("{key}: unknown field (known: to, tenants, exclude, at)"));
            }
        }
        let to = match obj.get("to").and_then(Value::as_str).map(ModelVersion::parse) {
            Some(Ok(v)) => Some(v),
            Some(Err(e)) => {
                problems.push(format!("to: {e}"));
                None
            }
            None => {
                problems.push("to: the version to roll out (a string) is required".into());
                None
            }
        };
        let (tenants, exclude) = tenants_and_exclude(obj, None, &mut problems);
        let at = match obj.get("at") {
            None => When::Now,
            Some(v) => v.as_str().and_then(When::parse).unwrap_or_else(|| {
                problems.push("at: \"now\", \"period_end\" or an RFC 3339 time".into());
                When::Now
            }),
        };
        match (to, problems.is_empty()) {
            (Some(to), true) => Ok(RolloutRequest { to, tenants, exclude, at }),
            _ => Err(Rejection::invalid("invalid_rollout", problems)),
        }
    }
}

/// Where a rollout or preview stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Created; a rollout at a later time waits for it.
    Pending,
    Running,
    Done,
    Canceled,
    /// Every tenant was handled, and some failed (see their causes).
    Failed,
}

impl RunStatus {
    pub fn finished(self) -> bool {
        matches!(self, RunStatus::Done | RunStatus::Canceled | RunStatus::Failed)
    }
}

/// How far the tenants of a run have been listed (by the index of tenants:
/// the registered versions one after the other, each from the key after
/// `after`; or the list, from position `at`). A second pass lists again
/// and takes only the tenants without an outcome (one created on an older
/// version while the first pass went by).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Which pass (0: first, 1: second, 2: listing finished).
    pub pass: u8,
    /// The position in the registered versions (all, tier), or in the list.
    pub at: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

impl Cursor {
    pub fn listed(&self) -> bool {
        self.pass >= 2
    }
}

/// How many tenants came to each end (and, of a preview, its totals).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub done: u64,
    pub waiting: u64,
    pub skipped: u64,
    pub failed: u64,
    pub members_changed: u64,
    #[serde(default)]
    pub preview: PreviewTotals,
}

/// Tenants of a rollout or a preview handed to provision (a message of
/// the work queue, which only provision reads): a batch carries many.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Work {
    pub run: RunId,
    pub tenants: Vec<TenantId>,
    /// The wait of these tenants for their period's end is over (the
    /// sweep hands them back to their rollout).
    #[serde(default, skip_serializing_if = "is_false")]
    pub due: bool,
    /// Tenants that failed before, with their attempts so far.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attempts: BTreeMap<TenantId, u32>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Attempts at one tenant before it is recorded as failed (the others of
/// its run go on).
pub const MAX_ATTEMPTS: u32 = 3;

/// A run as stored: what it is, where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub spec: RunSpec,
    pub status: RunStatus,
    pub cursor: Cursor,
    /// Tenants handed to provision (each once).
    pub queued: u64,
    /// Tenants selected when the run was created (a count of the index).
    pub total: u64,
    pub counts: Counts,
    pub rev: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
}

impl RunState {
    pub fn new(spec: RunSpec, total: u64) -> Self {
        RunState { spec, status: RunStatus::Pending, cursor: Cursor::default(), queued: 0, total, counts: Counts::default(), rev: 0, finished_at: None }
    }
    /// Tenants with a final outcome, or waiting for their period's end.
    pub fn settled(&self) -> u64 {
        let c = &self.counts;
        c.done + c.waiting + c.skipped + c.failed
    }
    /// Tenants handed to provision and not yet settled.
    pub fn in_flight(&self) -> u64 {
        self.queued.saturating_sub(self.settled())
    }
    /// The status once every tenant was listed and handled: waiting
    /// tenants keep a rollout running.
    pub fn status_when_listed(&self) -> RunStatus {
        if !self.cursor.listed() || self.in_flight() > 0 || self.counts.waiting > 0 {
            RunStatus::Running
        } else if self.counts.failed > 0 {
            RunStatus::Failed
        } else {
            RunStatus::Done
        }
    }
    /// The answer of `GET /model/rollouts/{id}` and `GET /model/previews/{id}` (without their pages).
    pub fn view(&self) -> Value {
        let mut v = json!({
            "id": self.spec.id,
            "status": self.status,
            "to": self.spec.to(),
            "tenants": self.spec.tenants,
            "created_at": self.spec.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "by": self.spec.by,
            "progress": {"total": self.total, "queued": self.queued, "read": self.settled()},
        });
        if !self.spec.exclude.is_empty() {
            v["exclude"] = json!(self.spec.exclude);
        }
        if let Some(t) = self.finished_at {
            v["finished_at"] = json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        match &self.spec.kind {
            RunKind::Rollout { at, .. } => {
                v["at"] = json!(at);
                v["counts"] = json!({
                    "done": self.counts.done, "waiting": self.counts.waiting, "skipped": self.counts.skipped,
                    "failed": self.counts.failed, "members_changed": self.counts.members_changed,
                });
            }
            RunKind::Preview { candidate, .. } => {
                v["candidate"] = json!(candidate.is_some());
                v["totals"] = json!(self.counts.preview);
                v["skipped"] = json!(self.counts.skipped);
            }
        }
        v
    }
}

/// What became of one tenant in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeState {
    /// Moved (or already there); a preview's tenant read.
    Done,
    /// Waiting for the end of its billing period.
    Waiting,
    /// Not moved: pinned to another version, excluded, or gone.
    Skipped,
    /// Kept failing; the cause says why.
    Failed,
}

/// One tenant's outcome in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub tenant_id: TenantId,
    pub state: OutcomeState,
    /// The version the tenant followed before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<ModelVersion>,
    /// Why it was skipped, why it failed, or when it moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waits_until: Option<DateTime<Utc>>,
    pub members_changed: u64,
    /// A preview's totals for the tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewTotals>,
    pub at: DateTime<Utc>,
}
