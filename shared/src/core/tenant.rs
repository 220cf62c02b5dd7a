//! What is stored of a tenant, as the core sees it: its head (`META`), its
//! members with their access, everything desired access depends on.

pub use crate::core::access::MemberItem;
use crate::core::access::{MemberAccess, TenantRules};
use crate::core::audit::{Cause, ChainHead, PendingRecord};
use crate::core::contract::ContractDocument;
use crate::core::ids::{ModelVersion, RunId};
use crate::core::license::{License, TenantAccess};
use crate::core::scim::Target;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The tenant's `META` item: its effective access as last provisioned, the
/// seat counters (kept by account creations and removals with conditional
/// additions, and by reconciles), and the head of its audit chain (the
/// optimistic lock every chained write of the tenant commits against).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantMeta {
    /// Set by the first reconcile; `None` until then.
    pub access: Option<TenantAccess>,
    pub seats_used: u32,
    pub seats_pending: u32,
    pub head: ChainHead,
    /// The contract role grants the last reconcile applied (used at creation).
    pub rules: TenantRules,
    /// A license or contract was recorded for the tenant: it is known to
    /// accounts and targets. (A tenant whose only events were parked has an
    /// audit chain, and so a `META`, but is not known.)
    pub licensed: bool,
    /// The walk over the tenant's members that brings them to its access:
    /// in progress (with where it stands) or done.
    pub walk: Option<Walk>,
    /// The goal of the walk as stored beside it (`walk_goal`): a write
    /// decided on the tenant's access without the chain's lock is
    /// conditional on it, so that it never lands after a walk it missed.
    pub walk_goal: Option<String>,
    /// How long the tenant's license files are valid, when it set it
    /// (default: until its license's end and grace).
    pub license_file_seconds: Option<u64>,
    /// A reconcile stopped for time and queued the rest of its work (a seat
    /// pass or a walk goes on in the next message); cleared by the
    /// reconcile that finishes. A barrier waits behind it.
    pub continues: bool,
    /// The licensing model version whose rules the tenant follows (a
    /// tenant stored before versions were kept follows the first
    /// registered version).
    pub model_version: ModelVersion,
    /// Kept on a version by the vendor's operator (a negotiated contract):
    /// rollouts skip the tenant until the pin is released or its `until` passes.
    pub model_pin: Option<ModelPin>,
    /// A rollout's move waiting for the end of the tenant's billing period.
    pub model_waiting: Option<WaitingMove>,
}

/// A tenant kept on a version (`PUT /tenants/{tenant}/model`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPin {
    pub version: ModelVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    pub by: String,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// A move to `to` that a rollout scheduled for the end of the tenant's
/// billing period (`at`); the sweep hands it to the rollout when due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingMove {
    pub rollout: RunId,
    pub to: ModelVersion,
    pub at: DateTime<Utc>,
}

impl TenantMeta {
    /// When the tenant's model item is next due for the sweep: a waiting
    /// move or a pin's end, whichever comes first.
    pub fn model_due(&self) -> Option<DateTime<Utc>> {
        let pin_ends = self.model_pin.as_ref().and_then(|p| p.until);
        let moves = self.model_waiting.as_ref().map(|w| w.at);
        match (pin_ends, moves) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A walk over every member of a tenant, page by page, bringing each to the
/// tenant's access (a tier change, a suspension, a new model): what it is
/// for, and where it stands. Kept on `META`, so that an invocation that ran
/// out of time is resumed from there by the next.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Walk {
    /// What the walk brings members to ([`walk_goal`]): a walk for an older
    /// goal is started over.
    pub goal: String,
    /// The last member walked (its sort key); `None` before the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    pub done: bool,
    /// What started the walk, when it says (a model's rollout): every
    /// member change of the walk is audited with it, whichever message
    /// goes on with the walk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Members whose access (status, roles, entitlements) this walk changed so far.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub changed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Walk {
    /// A walk toward `goal`, from its start.
    pub fn new(goal: String, cause: Option<Cause>) -> Self {
        Walk { goal, after: None, done: false, cause, changed: 0 }
    }
}

/// What a member walk brings members to: the licensing model, what of the
/// tenant's access a member's own access follows (its tier, entitlements and
/// policy: not its seats, which the seat pass keeps, nor its dates or
/// wording) and its contract rules, as one fingerprint. A change of seats
/// alone walks no member.
pub fn walk_goal(model: &crate::core::model::LicensingModel, access: &TenantAccess, rules: &TenantRules) -> String {
    // The version is in it besides the rules' fingerprint: a move between
    // two versions of the same rules still stamps every member with its version.
    let follows = serde_json::json!({"tier": access.tier, "entitlements": access.entitlements, "policy": access.policy});
    crate::core::audit::hash_of(&format!("{}|{}|{follows}|{}", model.version, model.fingerprint(), serde_json::to_string(rules).expect("serialises")))
}

/// Whether the work queued for the tenant is done: no member walk half
/// done, no reconcile's rest still queued.
pub fn settled(meta: &TenantMeta) -> bool {
    meta.walk.as_ref().is_none_or(|w| w.done) && !meta.continues
}

impl TenantMeta {
    /// The head of a tenant's chain, genesis for a tenant not seen yet.
    pub fn head_of(meta: Option<&TenantMeta>) -> ChainHead {
        meta.map(|m| m.head.clone()).unwrap_or_else(ChainHead::genesis)
    }
}

/// A tenant without its members: what a reconcile reads whatever the
/// tenant's size (its `META`, licenses, contracts, targets and pending
/// audit records). Members are read by the page, or one by one.
#[derive(Debug, Clone)]
pub struct TenantHead {
    pub meta: TenantMeta,
    pub licenses: Vec<License>,
    pub contracts: Vec<(ContractDocument, u64)>,
    pub targets: Vec<Target>,
    /// The first pending audit records, in order: at most [`PENDING_PAGE`].
    pub pending_audit: Vec<PendingRecord>,
}

/// At most this many pending audit records come with a tenant's head: a
/// backlog (a burst of account creations, a provision outage) is chained a
/// page at a time, each page read after the one before is chained, so a
/// reconcile's memory does not grow with the backlog.
pub const PENDING_PAGE: usize = 1000;

impl TenantHead {
    pub fn rules(&self) -> TenantRules {
        crate::core::contract::merge_rules(self.contracts.iter().map(|(d, _)| d))
    }
}

/// Everything of one tenant that desired access depends on.
#[derive(Debug, Clone)]
pub struct TenantState {
    pub meta: TenantMeta,
    pub licenses: Vec<License>,
    pub members: Vec<MemberItem>,
    /// Current documents of the tenant's contracts, with their versions.
    pub contracts: Vec<(ContractDocument, u64)>,
    /// SCIM targets: every member change gets a delivery record for each.
    pub targets: Vec<Target>,
    /// Audit records written without the chain's lock (account creations
    /// and removals), waiting to be chained, in order.
    pub pending_audit: Vec<PendingRecord>,
}

impl TenantState {
    pub fn rules(&self) -> TenantRules {
        crate::core::contract::merge_rules(self.contracts.iter().map(|(d, _)| d))
    }
}

/// An email as it is unique per tenant: SCIM compares `userName`s without
/// regard to case, so `ADMIN@corp.example` and `admin@corp.example` are one.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The seat decision for an account created now: a seat when one is free
/// and nobody waits, otherwise it waits (see `access::status_on_create`);
/// with the access that gives and the rule that decided it. A tenant whose
/// access was never provisioned has nothing to give yet.
pub fn on_create(model: &crate::core::model::LicensingModel, meta: &TenantMeta, member: &crate::core::access::Member) -> (MemberAccess, String) {
    use crate::core::access::{access_on_create, status_on_create, MemberStatus};
    match &meta.access {
        Some(t) => {
            let status = status_on_create(t, meta.seats_used, meta.seats_pending);
            let rule = match status {
                MemberStatus::Active => format!("seat claimed at creation: {} of {} seats were in use", meta.seats_used, t.seats_total),
                MemberStatus::PendingSeat => format!("no free seat at creation: {} of {} in use, {} waiting", meta.seats_used, t.seats_total, meta.seats_pending),
                _ => format!("tenant is {}: {}", t.status, t.rule),
            };
            (access_on_create(model, t, &meta.rules, member, status), rule)
        }
        None => (MemberAccess::without_access(MemberStatus::PendingSeat), "tenant access not yet provisioned".to_string()),
    }
}
