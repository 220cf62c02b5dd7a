//! Licensing model versions, the pure part: what is registered of a model,
//! rollouts and previews (which tenants, when, where they stand), what a
//! rollout does with one tenant, and a preview's difference for one tenant.
//!
//! A version names one set of rules for ever. Every tenant follows one
//! registered version ([`TenantMeta::model_version`]); a rollout moves
//! chosen tenants to another (now, at a time, or each at the end of its
//! billing period), a pin keeps one tenant on a version, and a preview shows
//! which members of which tenants would gain or lose what, before anything
//! changes.

use crate::core::access::{desired_access_with_rules, MemberItem, MemberStatus, TenantRules};
use crate::core::contract::{AccessImpact, MemberImpact};
use crate::core::ids::{ModelVersion, RunId, TenantId};
use crate::core::license::{effective_license, License, TenantAccess};
use crate::core::model::{Entitlement, Entitlements, LicensingModel, MoveAt, RolloutRule};
use crate::core::rejection::Rejection;
use crate::core::tenant::TenantMeta;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// A model as registered: the version, the fingerprint of its rules, the
/// text it was deployed as, when it was first seen, and its place in the
/// order of registration (the latest is the most recently registered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub version: ModelVersion,
    pub fingerprint: String,
    pub text: String,
    pub first_seen: DateTime<Utc>,
    pub seq: u64,
    pub rollout: RolloutRule,
}

impl Registered {
    pub fn of(model: &LicensingModel, text: &str, now: DateTime<Utc>) -> Self {
        Registered { version: model.version.clone(), fingerprint: model.fingerprint(), text: text.to_string(), first_seen: now, seq: 0, rollout: model.rollout }
    }
}

/// What registering a model found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Registered now, as the latest version (its place in the order).
    New { seq: u64 },
    /// Registered before, with the same rules.
    Known,
    /// The version is registered with other rules: refused.
    Conflict { registered: String },
}

/// Why a model cannot be registered or previewed under its version.
pub fn conflict(version: &ModelVersion, registered: &str, offered: &str) -> Rejection {
    Rejection::conflict(
        "version_conflict",
        format!("licensing model version {version} is registered with fingerprint {registered}; this model's rules have fingerprint {offered}: give changed rules a new version"),
    )
    .with("version", version)
    .with("registered_fingerprint", registered)
    .with("fingerprint", offered)
}

/// Which tenants a rollout or a preview is for: `"all"`, `{"tier": "..."}`
/// (tenants whose effective tier it is) or a list of tenant ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Tier(String),
    List(Vec<TenantId>),
}

impl Serialize for Selection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Selection::All => s.serialize_str("all"),
            Selection::Tier(t) => json!({ "tier": t }).serialize(s),
            Selection::List(l) => l.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Selection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Selection::parse(&Value::deserialize(d)?, None).map_err(|p| serde::de::Error::custom(p.join("; ")))
    }
}

impl Selection {
    /// Parses `tenants`; with a model, a tier must be one of its tiers.
    fn parse(v: &Value, model: Option<&LicensingModel>) -> Result<Selection, Vec<String>> {
        match v {
            Value::String(s) if s == "all" => Ok(Selection::All),
            Value::Object(o) if o.len() == 1 && o.get("tier").is_some_and(Value::is_string) => {
                let tier = o["tier"].as_str().unwrap_or_default().to_string();
                match model {
                    Some(m) if m.tier(&tier).is_none() => Err(vec![format!("tenants.tier: unknown tier {tier:?}")]),
                    _ => Ok(Selection::Tier(tier)),
                }
            }
            Value::Array(items) if !items.is_empty() && items.len() <= MAX_LISTED => {
                let (ok, bad): (Vec<_>, Vec<_>) =
                    items.iter().enumerate().map(|(i, t)| t.as_str().and_then(|s| TenantId::parse(s).ok()).ok_or(format!("tenants[{i}]: not a tenant id"))).partition(Result::is_ok);
                if bad.is_empty() {
                    let mut seen = BTreeSet::new();
                    Ok(Selection::List(ok.into_iter().map(Result::unwrap).filter(|t| seen.insert(t.clone())).collect()))
                } else {
                    Err(bad.into_iter().map(|e| e.unwrap_err()).collect())
                }
            }
            _ => Err(vec![format!("tenants: \"all\", {{\"tier\": \"<tier>\"}} or a list of 1 to {MAX_LISTED} tenant ids")]),
        }
    }

    /// Whether a tenant whose effective tier is `tier` is selected (a
    /// listed tenant is read by its id, not through the index).
    pub fn takes_tier(&self, tier: &str) -> bool {
        match self {
            Selection::Tier(t) => t == tier,
            _ => true,
        }
    }
}

/// Tenants a rollout or preview may list by id.
pub const MAX_LISTED: usize = 1000;

/// When a rollout moves its tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Now,
    /// Each tenant at the end of its current billing period.
    PeriodEnd,
    /// Every tenant from this time on.
    At(DateTime<Utc>),
}

impl Serialize for When {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            When::Now => s.serialize_str("now"),
            When::PeriodEnd => s.serialize_str("period_end"),
            When::At(t) => s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }
    }
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        When::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("at: {s:?}")))
    }
}

impl When {
    fn parse(s: &str) -> Option<When> {
        match s {
            "now" => Some(When::Now),
            "period_end" => Some(When::PeriodEnd),
            other => DateTime::parse_from_rfc3339(other).ok().map(|t| When::At(t.with_timezone(&Utc))),
        }
    }
    pub fn from_rule(at: MoveAt) -> When {
        match at {
            MoveAt::Now => When::Now,
            MoveAt::PeriodEnd => When::PeriodEnd,
        }
    }
}

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

/// The fields of a rollout or a preview's request besides what it is of,
/// every problem named.
fn tenants_and_exclude(body: &serde_json::Map<String, Value>, model: Option<&LicensingModel>, problems: &mut Vec<String>) -> (Selection, BTreeSet<TenantId>) {
    let tenants = match body.get("tenants") {
        None => Selection::All,
        Some(v) => Selection::parse(v, model).unwrap_or_else(|p| {
            problems.extend(p);
            Selection::All
        }),
    };
    let mut exclude = BTreeSet::new();
    match body.get("exclude") {
        None => {}
        Some(Value::Array(items)) if items.len() <= MAX_LISTED => {
            for (i, t) in items.iter().enumerate() {
                match t.as_str().and_then(|s| TenantId::parse(s).ok()) {
                    Some(t) => {
                        exclude.insert(t);
                    }
                    None => problems.push(format!("exclude[{i}]: not a tenant id")),
                }
            }
        }
        Some(_) => problems.push(format!("exclude: a list of at most {MAX_LISTED} tenant ids")),
    }
    (tenants, exclude)
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

/// `POST /model/previews`: a candidate model (TOML) or `{"version", "tenants"?, "exclude"?}`.
#[derive(Debug, Clone)]
pub enum PreviewOf {
    Version(ModelVersion),
    Candidate(Box<LicensingModel>, String),
}

/// Parses a preview's request: TOML (a candidate model, validated, every
/// problem named) or JSON naming a registered version.
pub fn parse_preview(body: &str, json_body: bool) -> Result<(PreviewOf, Selection, BTreeSet<TenantId>), Rejection> {
    if !json_body {
        let model = LicensingModel::from_toml(body, "candidate").map_err(|e| match e {
            crate::core::model::ModelError::Invalid { problems, .. } => Rejection::invalid("invalid_model", problems),
            other => Rejection::invalid("invalid_model", vec![other.to_string()]),
        })?;
        return Ok((PreviewOf::Candidate(Box::new(model), body.to_string()), Selection::All, BTreeSet::new()));
    }
    let v: Value = serde_json::from_str(body).map_err(|e| Rejection::malformed("malformed_json", format!("the body is not JSON: {e}")))?;
    let Some(obj) = v.as_object() else { return Err(Rejection::invalid("invalid_preview", vec!["the body must be a JSON object or a TOML model".into()])) };
    let mut problems = Vec::new();
    for key in obj.keys() {
        if !["version", "tenants", "exclude"].contains(&key.as_str()) {
            problems.push(format!("{key}: unknown field (known: version, tenants, exclude)"));
        }
    }
    let version = match obj.get("version").and_then(Value::as_str).map(ModelVersion::parse) {
        Some(Ok(v)) => Some(v),
        Some(Err(e)) => {
            problems.push(format!("version: {e}"));
            None
        }
        None => {
            problems.push("version: a registered version (a string), or send a candidate model as TOML".into());
            None
        }
    };
    let (tenants, exclude) = tenants_and_exclude(obj, None, &mut problems);
    match (version, problems.is_empty()) {
        (Some(v), true) => Ok((PreviewOf::Version(v), tenants, exclude)),
        _ => Err(Rejection::invalid("invalid_preview", problems)),
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

/// What a rollout does with one tenant, decided on its `META` and licenses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantStep {
    Skip(String),
    /// Its move waits for its period's end.
    Wait(DateTime<Utc>),
    /// Move it (or, already there, make sure its walk is done).
    Move,
}

/// Whether a pin holds at `now` (its `until` not passed).
pub fn pinned_to(meta: &TenantMeta, now: DateTime<Utc>) -> Option<&crate::core::tenant::ModelPin> {
    meta.model_pin.as_ref().filter(|p| p.until.is_none_or(|u| u > now))
}

/// A rollout to `to`, moving tenants `at`, with `meta`'s tenant: a tenant
/// pinned to another version is skipped (a pin to `to` itself is no
/// obstacle); `period_end` waits for the end of the tenant's current
/// billing period, unless it has none, or the wait is over (`due`).
pub fn rollout_step(to: &ModelVersion, at: When, meta: &TenantMeta, licenses: &[License], due: bool, now: DateTime<Utc>) -> TenantStep {
    if let Some(pin) = pinned_to(meta, now).filter(|p| &p.version != to) {
        let until = pin.until.map_or("until released".to_string(), |u| format!("until {}", u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        return TenantStep::Skip(format!("pinned to {} {until} by {}: {}", pin.version, pin.by, pin.reason));
    }
    if at == When::PeriodEnd && !due && meta.model_version != *to {
        if let Some(end) = period_end(licenses, now) {
            return TenantStep::Wait(end);
        }
    }
    TenantStep::Move
}

/// The end of the tenant's current billing period: the earliest end, after
/// `now`, of its licenses that grant access (Stripe's current period, a CRM
/// record's or a contract's term). `None`: it has none, and moves at once.
pub fn period_end(licenses: &[License], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    licenses.iter().filter(|l| l.status.grants_access()).filter_map(|l| l.expires_at).filter(|e| *e > now).min()
}

/// The tiers and add-ons of a tenant's licenses that `model` lacks: a
/// tenant whose version lacks them moves to the latest version.
pub fn lacks(model: &LicensingModel, licenses: &[License]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for l in licenses {
        if model.tier(&l.tier).is_none() {
            out.insert(format!("tier {:?}", l.tier));
        }
        for a in &l.addons {
            if !model.addons.contains_key(a) {
                out.insert(format!("add-on {a:?}"));
            }
        }
    }
    out.into_iter().collect()
}

/// Totals of a preview: tenants affected, and members gaining and losing a
/// seat, a role, an entitlement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviewTotals {
    pub tenants_read: u64,
    pub tenants_affected: u64,
    pub members_changed: u64,
    pub seats_gained: u64,
    pub seats_lost: u64,
    pub roles_gained: u64,
    pub roles_lost: u64,
    pub entitlements_gained: u64,
    pub entitlements_lost: u64,
}

impl PreviewTotals {
    pub fn of(impact: &AccessImpact, tenant_changed: bool) -> Self {
        let count = |f: &dyn Fn(&MemberImpact) -> bool| impact.members.iter().filter(|m| f(m)).count() as u64;
        PreviewTotals {
            tenants_read: 1,
            tenants_affected: u64::from(tenant_changed || !impact.members.is_empty()),
            members_changed: impact.members.len() as u64,
            seats_gained: count(&|m| m.seat.as_deref() == Some("gained")),
            seats_lost: count(&|m| m.seat.as_deref() == Some("lost")),
            roles_gained: count(&|m| !m.roles_added.is_empty()),
            roles_lost: count(&|m| !m.roles_removed.is_empty()),
            entitlements_gained: count(&|m| !m.entitlements_added.is_empty()),
            entitlements_lost: count(&|m| !m.entitlements_removed.is_empty()),
        }
    }
    pub fn add(&mut self, o: &PreviewTotals) {
        self.tenants_read += o.tenants_read;
        self.tenants_affected += o.tenants_affected;
        self.members_changed += o.members_changed;
        self.seats_gained += o.seats_gained;
        self.seats_lost += o.seats_lost;
        self.roles_gained += o.roles_gained;
        self.roles_lost += o.roles_lost;
        self.entitlements_gained += o.entitlements_gained;
        self.entitlements_lost += o.entitlements_lost;
    }
}

/// The entitlements a member holds, as `name=value` (a flag off or a zero
/// limit is none).
fn held(e: &Entitlements) -> BTreeSet<String> {
    e.iter().filter(|(_, v)| !matches!(v, Entitlement::Flag(false) | Entitlement::Limit(0))).map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default())).collect()
}

/// One tenant's preview: its members as they stand against what the
/// tenant's licenses and contracts give them under `to`, in the shape of an
/// amendment's impact. A member is listed when its status, roles or
/// entitlements would change (not when only the version its access was
/// decided under would).
pub fn preview_tenant(to: &LicensingModel, meta: &TenantMeta, licenses: &[License], rules: &TenantRules, members: &[MemberItem], now: DateTime<Utc>) -> (AccessImpact, bool) {
    let after = desired_access_with_rules(to, licenses, rules, members, crate::core::seats::micros(now));
    let summary = |t: &TenantAccess| json!({"tier": t.tier, "status": t.status, "seats_total": t.seats_total, "entitlements": t.entitlements});
    let before_tenant = meta.access.as_ref().map(summary).unwrap_or(Value::Null);
    let after_tenant = summary(&after.tenant);
    let mut changed = Vec::new();
    for m in members {
        let Some(a) = after.members.get(&m.member.user_id) else { continue };
        let b = &m.access;
        if a.access == *b {
            continue;
        }
        let seat = match (b.holds_seat(), a.access.holds_seat()) {
            (false, true) => Some("gained".to_string()),
            (true, false) => Some("lost".to_string()),
            _ => None,
        };
        let (eb, ea) = (held(&b.entitlements), held(&a.access.entitlements));
        changed.push(MemberImpact {
            user_id: m.member.user_id.clone(),
            status_before: b.status,
            status_after: a.access.status,
            seat,
            roles_added: a.access.roles.difference(&b.roles).cloned().collect(),
            roles_removed: b.roles.difference(&a.access.roles).cloned().collect(),
            entitlements_added: ea.difference(&eb).cloned().collect(),
            entitlements_removed: eb.difference(&ea).cloned().collect(),
        });
    }
    let used_before = members.iter().filter(|m| m.access.status == MemberStatus::Active).count() as u32;
    let used_after = after.members.values().filter(|m| m.access.holds_seat()).count() as u32;
    let tenant_changed = before_tenant != after_tenant;
    (AccessImpact { tenant_before: before_tenant, tenant_after: after_tenant, members: changed, seats_used_before: used_before, seats_used_after: used_after }, tenant_changed)
}

/// The effective license a tenant would have under `to`.
pub fn access_under(to: &LicensingModel, licenses: &[License]) -> TenantAccess {
    effective_license(to, licenses)
}

/// A preview's page of one tenant as stored and answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewPage {
    pub tenant_id: TenantId,
    pub from: ModelVersion,
    pub to: ModelVersion,
    /// The page of members (0 first), and whether more follow.
    pub page: u32,
    pub more: bool,
    #[serde(flatten)]
    pub impact: AccessImpact,
    pub totals: PreviewTotals,
}

/// Members of a tenant's preview stored (and answered) per page.
pub const PREVIEW_MEMBERS_PER_PAGE: usize = 500;

/// One tenant's preview cut into pages (the first carries the tenant's
/// totals; each the tenant's before and after).
pub fn preview_pages(tenant: &TenantId, from: &ModelVersion, to: &ModelVersion, impact: AccessImpact, tenant_changed: bool) -> Vec<PreviewPage> {
    let totals = PreviewTotals::of(&impact, tenant_changed);
    let AccessImpact { tenant_before, tenant_after, members, seats_used_before, seats_used_after } = impact;
    let chunks: Vec<Vec<MemberImpact>> = if members.is_empty() { vec![Vec::new()] } else { members.chunks(PREVIEW_MEMBERS_PER_PAGE).map(<[MemberImpact]>::to_vec).collect() };
    let n = chunks.len();
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, members)| PreviewPage {
            tenant_id: tenant.clone(),
            from: from.clone(),
            to: to.clone(),
            page: i as u32,
            more: i + 1 < n,
            impact: AccessImpact { tenant_before: tenant_before.clone(), tenant_after: tenant_after.clone(), members, seats_used_before, seats_used_after },
            totals: if i == 0 { totals.clone() } else { PreviewTotals::default() },
        })
        .collect()
}

/// A pin's request: `{"version", "until"?, "by", "reason"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRequest {
    pub version: ModelVersion,
    pub until: Option<DateTime<Utc>>,
    pub by: String,
    pub reason: String,
}

impl PinRequest {
    pub fn parse(body: &Value, now: DateTime<Utc>) -> Result<PinRequest, Rejection> {
        let Some(obj) = body.as_object() else { return Err(Rejection::invalid("invalid_pin", vec!["the body must be a JSON object".into()])) };
        let mut problems = Vec::new();
        for key in obj.keys() {
            if !["version", "until", "by", "reason"].contains(&key.as_str()) {
                problems.push(format!("{key}: unknown field (known: version, until, by, reason)"));
            }
        }
        let version = obj.get("version").and_then(Value::as_str).map(ModelVersion::parse);
        if !matches!(version, Some(Ok(_))) {
            problems.push("version: a registered version (a string) is required".into());
        }
        let until = match obj.get("until") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()) {
                Some(t) if t.with_timezone(&Utc) > now => Some(t.with_timezone(&Utc)),
                Some(_) => {
                    problems.push("until: must be in the future".into());
                    None
                }
                None => {
                    problems.push("until: an RFC 3339 time".into());
                    None
                }
            },
        };
        let text = |k: &str, problems: &mut Vec<String>| match obj.get(k).and_then(Value::as_str).map(str::trim) {
            Some(s) if !s.is_empty() && s.len() <= 256 => s.to_string(),
            _ => {
                problems.push(format!("{k}: 1 to 256 characters (required)"));
                String::new()
            }
        };
        let by = text("by", &mut problems);
        let reason = text("reason", &mut problems);
        match version {
            Some(Ok(version)) if problems.is_empty() => Ok(PinRequest { version, until, by, reason }),
            _ => Err(Rejection::invalid("invalid_pin", problems)),
        }
    }
}

/// The model fields every view of a tenant shows: the version it follows,
/// its pin and a waiting move.
pub fn tenant_model_view(meta: &TenantMeta) -> Value {
    let mut v = json!({ "version": meta.model_version });
    if let Some(p) = &meta.model_pin {
        v["pin"] = json!(p);
    }
    if let Some(w) = &meta.model_waiting {
        v["waiting"] = json!(w);
    }
    v
}

/// Tenants of each registered version (`GET /model`).
pub fn versions_view(registered: &[Registered], counts: &BTreeMap<ModelVersion, u64>, latest: Option<&ModelVersion>) -> Value {
    json!(registered
        .iter()
        .map(|r| json!({
            "version": r.version,
            "fingerprint": r.fingerprint,
            "first_seen": r.first_seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "rollout": r.rollout,
            "tenants": counts.get(&r.version).copied().unwrap_or(0),
            "latest": Some(&r.version) == latest,
        }))
        .collect::<Vec<_>>())
}

#[cfg(test)]
mod tests;
