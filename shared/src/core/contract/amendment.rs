//! An amendment: its change set, its access impact, the review rules it
//! fires, and where it stands.

use super::clauses::*;
use super::document::*;
use super::forms::*;
use crate::core::access::{desired_access_with_rules, MemberItem, MemberStatus};
use crate::core::ids::{ContractId, TenantId, UserId};
use crate::core::license::License;
use crate::core::model::LicensingModel;
use crate::core::rejection::Rejection;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// One member's access change an amendment would cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberImpact {
    pub user_id: UserId,
    pub status_before: MemberStatus,
    pub status_after: MemberStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seat: Option<String>,
    pub roles_added: BTreeSet<String>,
    pub roles_removed: BTreeSet<String>,
    pub entitlements_added: BTreeSet<String>,
    pub entitlements_removed: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessImpact {
    pub tenant_before: Value,
    pub tenant_after: Value,
    pub members: Vec<MemberImpact>,
    pub seats_used_before: u32,
    pub seats_used_after: u32,
}

/// What an amendment's access impact is computed from: the tenant's state
/// besides the contract, and the contract before and after.
#[derive(Debug, Clone, Copy)]
pub struct ImpactInput<'a> {
    pub model: &'a LicensingModel,
    /// The tenant's other licenses (the contract's own left out).
    pub other_licenses: &'a [License],
    /// The tenant's other contracts, whose rules (named users) count too.
    pub other_rules: &'a [&'a ContractDocument],
    /// The contract as it is (none: not yet there).
    pub old: Option<&'a ContractDocument>,
    /// The contract as amended, at `version`.
    pub new: &'a ContractDocument,
    pub version: u64,
    pub as_of: DateTime<Utc>,
    pub members: &'a [MemberItem],
}

/// Desired access of the tenant's members as they stand (seats are
/// sticky), with the contract at `old` vs at `new`, as of `as_of`.
pub fn impact(input: ImpactInput<'_>) -> AccessImpact {
    let ImpactInput { model, other_licenses, other_rules, old, new, version, as_of, members } = input;
    let with = |doc: Option<&ContractDocument>, v: u64| {
        let mut licenses: Vec<License> = other_licenses.to_vec();
        let mut docs: Vec<&ContractDocument> = other_rules.to_vec();
        if let Some(d) = doc {
            licenses.push(d.license(v, as_of));
            docs.push(d);
        }
        desired_access_with_rules(model, &licenses, &merge_rules(docs), members, crate::core::seats::micros(as_of))
    };
    let before = with(old, version.saturating_sub(1));
    let after = with(Some(new), version);
    let summary = |t: &crate::core::license::TenantAccess| json!({"tier": t.tier, "status": t.status, "seats_total": t.seats_total, "entitlements": t.entitlements});
    let ent_keys = |e: &crate::core::model::Entitlements| -> BTreeSet<String> {
        e.iter()
            .filter(|(_, v)| !matches!(v, crate::core::model::Entitlement::Flag(false) | crate::core::model::Entitlement::Limit(0)))
            .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
            .collect()
    };
    let mut out = Vec::new();
    for (user, b) in &before.members {
        let a = &after.members[user];
        if a.access == b.access {
            continue;
        }
        let seat = match (b.access.holds_seat(), a.access.holds_seat()) {
            (false, true) => Some("gained".to_string()),
            (true, false) => Some("lost".to_string()),
            _ => None,
        };
        let (eb, ea) = (ent_keys(&b.access.entitlements), ent_keys(&a.access.entitlements));
        out.push(MemberImpact {
            user_id: user.clone(),
            status_before: b.access.status,
            status_after: a.access.status,
            seat,
            roles_added: a.access.roles.difference(&b.access.roles).cloned().collect(),
            roles_removed: b.access.roles.difference(&a.access.roles).cloned().collect(),
            entitlements_added: ea.difference(&eb).cloned().collect(),
            entitlements_removed: eb.difference(&ea).cloned().collect(),
        });
    }
    let used = |d: &crate::core::access::DesiredAccess| d.members.values().filter(|m| m.access.holds_seat()).count() as u32;
    AccessImpact { tenant_before: summary(&before.tenant), tenant_after: summary(&after.tenant), members: out, seats_used_before: used(&before), seats_used_after: used(&after) }
}

/// The licensing model's review rules that an amendment fires.
pub fn review(model: &LicensingModel, old: &ContractDocument, new: &ContractDocument, impact: &AccessImpact) -> Vec<String> {
    let r = &model.review;
    let mut fired = Vec::new();
    if new.seats < old.seats && old.seats > 0 {
        let cut = (old.seats - new.seats) * 100 / old.seats;
        if cut > i64::from(r.max_seat_reduction_percent) {
            fired.push(format!("review.max_seat_reduction_percent: seats {} -> {} is a {cut}% cut (more than {}%)", old.seats, new.seats, r.max_seat_reduction_percent));
        }
    }
    let total_after = impact.tenant_after["seats_total"].as_u64().unwrap_or(0) as u32;
    if r.seat_reduction_below_usage && new.seats < old.seats && total_after < impact.seats_used_before {
        fired.push(format!("review.seat_reduction_below_usage: {total_after} seats for {} members holding one", impact.seats_used_before));
    }
    if r.privileged_role_removal {
        let lost: Vec<String> = impact.members.iter().filter(|m| m.roles_removed.iter().any(|role| model.is_privileged(role))).map(|m| m.user_id.to_string()).collect();
        let named: Vec<String> = old
            .named_users
            .iter()
            .filter(|u| u.roles.iter().any(|role| model.is_privileged(role)))
            .filter(|u| !new.named_users.iter().any(|n| n.id == u.id && u.roles.iter().filter(|r| model.is_privileged(r)).all(|r| n.roles.contains(r))))
            .map(|u| u.id.to_string())
            .collect();
        let who: BTreeSet<String> = lost.into_iter().chain(named).collect();
        if !who.is_empty() {
            fired.push(format!("review.privileged_role_removal: owner/admin removed from {}", who.into_iter().collect::<Vec<_>>().join(", ")));
        }
    }
    if r.tier_downgrade && model.tier_rank(&new.tier) < model.tier_rank(&old.tier) {
        fired.push(format!("review.tier_downgrade: tier {} -> {}", old.tier, new.tier));
    }
    fired
}

/// Where an amendment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmendmentStatus {
    Applied,
    PendingReview,
    Scheduled,
    Rejected,
    Reversed,
}

impl AmendmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AmendmentStatus::Applied => "applied",
            AmendmentStatus::PendingReview => "pending_review",
            AmendmentStatus::Scheduled => "scheduled",
            AmendmentStatus::Rejected => "rejected",
            AmendmentStatus::Reversed => "reversed",
        }
    }
}

/// `POST /contracts/{id}/amendments`: exactly one of `patch`, `document`, `record`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmendmentRequest {
    pub amendment_id: crate::core::ids::AmendmentId,
    pub base_version: u64,
    #[serde(default)]
    pub effective_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub patch: Option<Value>,
    #[serde(default)]
    pub document: Option<Value>,
    #[serde(default)]
    pub record: Option<RecordAmendment>,
    /// Who submits it (a name or email, as `by` of a decision).
    #[serde(default)]
    pub submitted_by: Option<String>,
}

impl AmendmentRequest {
    pub fn form(&self) -> Result<AmendmentForm, Vec<String>> {
        if self.submitted_by.as_ref().is_some_and(|b| b.trim().is_empty() || b.chars().count() > 200) {
            return Err(vec!["submitted_by: a name of 1 to 200 characters".into()]);
        }
        match (&self.patch, &self.document, &self.record) {
            (Some(p), None, None) => Ok(AmendmentForm::Patch(p.clone())),
            (None, Some(d), None) => Ok(AmendmentForm::Document(d.clone())),
            (None, None, Some(r)) => Ok(AmendmentForm::Record(r.clone())),
            _ => Err(vec!["exactly one of `patch`, `document` or `record` is required".into()]),
        }
    }
}

/// Who acted: the name the request declares (`by`, `submitted_by`) and the
/// identity AWS authenticated (the IAM principal of the function URL
/// request; none where the URL is not IAM-authenticated, as locally).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

impl Actor {
    /// Who makes a decision: its `by`, and the caller's authenticated identity.
    pub fn deciding(decision: &DecisionRequest, principal: Option<&str>) -> Self {
        Actor { by: Some(decision.by.clone()), principal: principal.map(str::to_string) }
    }

    /// Whether two actors are the same person, as far as can be told: the
    /// same authenticated principal, or the same declared name.
    pub fn same_as(&self, other: &Actor) -> bool {
        let same_principal = matches!((&self.principal, &other.principal), (Some(a), Some(b)) if a == b);
        let same_name = matches!((&self.by, &other.by), (Some(a), Some(b)) if a.trim().eq_ignore_ascii_case(b.trim()));
        same_principal || same_name
    }

    /// `by`, and the principal when there is one: `cfo@x (arn:aws:iam::1:user/cfo)`.
    pub fn describe(&self) -> String {
        match (&self.by, &self.principal) {
            (Some(b), Some(p)) => format!("{b} ({p})"),
            (Some(b), None) => b.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => "an unnamed caller".into(),
        }
    }
}

/// Approve, reject and reverse take who and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub by: String,
    pub reason: String,
}

impl DecisionRequest {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.by.trim().is_empty() || self.by.chars().count() > 200 {
            p.push("by: who decides is required (at most 200 characters)".into());
        }
        if self.reason.trim().is_empty() || self.reason.chars().count() > 2000 {
            p.push("reason: why is required (at most 2000 characters)".into());
        }
        p
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub action: String,
    pub by: String,
    pub reason: String,
    pub at: String,
    /// The caller's authenticated identity (IAM principal), beside `by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// An amendment as stored and shown: its change set and access impact are
/// computed before anything is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Amendment {
    pub amendment_id: crate::core::ids::AmendmentId,
    pub contract_id: ContractId,
    pub tenant_id: TenantId,
    pub status: AmendmentStatus,
    pub base_version: u64,
    pub effective_at: Option<DateTime<Utc>>,
    pub form: String,
    pub changes: Vec<ClauseChange>,
    pub impact: AccessImpact,
    /// The review rules that fired; empty means it applies without review.
    pub review: Vec<String>,
    pub applied_version: Option<u64>,
    pub reversed_version: Option<u64>,
    pub decisions: Vec<Decision>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
    pub created_at: String,
    /// Who submitted it.
    #[serde(default)]
    pub submitted_by: Actor,
}

impl AmendmentForm {
    pub fn name(&self) -> &'static str {
        match self {
            AmendmentForm::Patch(_) => "patch",
            AmendmentForm::Document(_) => "document",
            AmendmentForm::Record(_) => "record",
        }
    }
}

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
}

impl Verdict {
    pub fn action(self) -> &'static str {
        match self {
            Verdict::Approve => "approved",
            Verdict::Reject => "rejected",
        }
    }
}

/// Where a new amendment starts: held when a review rule fired, scheduled
/// when it takes effect later, applied otherwise.
pub fn initial_status(review: &[String], effective_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> AmendmentStatus {
    if !review.is_empty() {
        AmendmentStatus::PendingReview
    } else if effective_at.is_some_and(|t| t > now) {
        AmendmentStatus::Scheduled
    } else {
        AmendmentStatus::Applied
    }
}

/// What a review decision does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewStep {
    /// The same decision was made before: nothing changes.
    Unchanged,
    Reject,
    /// Approved, taking effect later.
    Schedule,
    /// Approved, taking effect now.
    Apply,
}

/// The review state machine: what approving or rejecting `amendment` (by
/// `actor`, for `reason`) does when the contract is at `version`. A decision
/// already made is a no-op; only a pending amendment (or a scheduled one,
/// to reject) can be decided; with four eyes the submitter cannot approve;
/// an approval needs the contract still at the amendment's base version.
pub fn review_step(amendment: &Amendment, verdict: Verdict, actor: &Actor, reason: &str, version: u64, now: DateTime<Utc>, four_eyes: bool) -> Result<ReviewStep, Rejection> {
    let aid = &amendment.amendment_id;
    if amendment.decisions.iter().any(|d| d.action == verdict.action() && Some(&d.by) == actor.by.as_ref() && d.reason == reason) {
        return Ok(ReviewStep::Unchanged);
    }
    let decidable = amendment.status == AmendmentStatus::PendingReview || (verdict == Verdict::Reject && amendment.status == AmendmentStatus::Scheduled);
    if !decidable {
        return Err(Rejection::conflict("not_pending", format!("amendment {aid} is {}, not pending review", amendment.status.as_str())).with("status", amendment.status));
    }
    if verdict == Verdict::Reject {
        return Ok(ReviewStep::Reject);
    }
    if four_eyes && amendment.submitted_by.same_as(actor) {
        return Err(Rejection::forbidden(
            "same_submitter",
            format!("amendment {aid} was submitted by {}; the licensing model requires someone else to approve it (four eyes)", amendment.submitted_by.describe()),
        ));
    }
    if version != amendment.base_version {
        return Err(Rejection::conflict("contract_moved_on", format!("contract {} is at version {version}, the amendment was made against version {}", amendment.contract_id, amendment.base_version))
            .with("current_version", version));
    }
    Ok(if amendment.effective_at.is_some_and(|t| t > now) { ReviewStep::Schedule } else { ReviewStep::Apply })
}

/// Whether an amendment can be reversed now: `Ok(false)` when it already
/// was (nothing to do), an error unless it is applied.
pub fn reversible(amendment: &Amendment) -> Result<bool, Rejection> {
    match amendment.status {
        AmendmentStatus::Reversed => Ok(false),
        AmendmentStatus::Applied => Ok(true),
        other => Err(Rejection::conflict("not_applied", format!("amendment {} is {}; only an applied amendment can be reversed", amendment.amendment_id, other.as_str()))),
    }
}

/// The summaries of a change set, as audit records show them.
pub fn summaries(changes: &[ClauseChange]) -> Vec<String> {
    changes.iter().map(|c| c.summary.clone()).collect()
}
