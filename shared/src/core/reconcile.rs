//! Reconciling a tenant, the pure part: the message that asks for it, and
//! how the difference between desired and actual access is cut into
//! transactions, each change with its audit record.

use crate::core::access::{self, MemberChange, MemberItem, SeatedAccess, TenantRules};
use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::events::Announcement;
use crate::core::ids::{TargetId, TenantId, UserId};
use crate::core::license::TenantAccess;
use crate::core::model::LicensingModel;
use crate::core::tenant::TenantState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// "Make this tenant's access equal its desired access." Level-triggered:
/// one more or one fewer of these never changes the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    pub tenant_id: TenantId,
    pub cause: Cause,
    /// SCIM targets to run drift repair on now (on demand), besides the
    /// delivery every message triggers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repair: Vec<TargetId>,
    /// A barrier, not a reconcile: provision records this mark on the
    /// tenant (`META.barrier`) and does nothing else. Messages of a tenant
    /// are processed in order, so once the mark is there every message
    /// queued for the tenant before it has been processed: an observable
    /// point to wait for ("provisioning has caught up"), for operators and
    /// tests alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barrier: Option<String>,
}

impl ReconcileRequest {
    pub fn new(tenant_id: TenantId, cause: Cause) -> Self {
        ReconcileRequest { tenant_id, cause, repair: Vec::new(), barrier: None }
    }
}

/// DynamoDB's limit on actions per transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// Member changes per reconcile transaction when the tenant has `targets`
/// SCIM targets: each change is its member item, its audit record, the
/// event it announces and one delivery record per target; the chain head,
/// and the tenant's record with its audit record and event, are shared.
pub const fn members_per_chunk(targets: usize) -> usize {
    (MAX_TRANSACTION_ITEMS - 3) / (3 + targets)
}

/// One transaction of a reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Members with their new access and seat (at their next revision),
    /// and the revision each was read at (the write is conditional on it:
    /// a decision made on a snapshot never overrides a newer write).
    pub members: Vec<(MemberItem, u64)>,
    /// The tenant's new effective access (first chunk only).
    pub tenant: Option<TenantAccess>,
    /// The tenant's new contract role grants (first chunk only).
    pub rules: Option<TenantRules>,
    /// What the chunk does to the seat counters (added to them: account
    /// creations and removals change them too, without the chain's lock).
    pub used_delta: i64,
    pub pending_delta: i64,
    /// A chunk that hands out seats commits only if, before it, at most
    /// this many were used: never more holders than seats, whatever was
    /// claimed since the plan was made.
    pub used_at_most: Option<u32>,
    /// One record per change, tenant records first.
    pub audit: Vec<AuditEvent>,
}

/// The transactions that make the tenant's access equal desired access,
/// in order; none when it already is. A chunk holds at most
/// [`members_per_chunk`] member changes (one fewer in the first, which also
/// carries the tenant's change). Seat-losing changes come first, so that no
/// committed prefix ever holds more seats than the tenant has.
pub fn chunks(model: &LicensingModel, tenant: &TenantId, state: &TenantState, cause: &Cause, now: u64) -> Vec<Chunk> {
    let by_id: BTreeMap<&UserId, &MemberItem> = state.members.iter().map(|m| (&m.member.user_id, m)).collect();
    let rules = state.rules();
    let desired = access::desired_access_with_rules(model, &state.licenses, &rules, &state.members, now);
    let plan = access::plan(tenant, desired, state.meta.access.as_ref(), &state.members);
    let rules_change = state.meta.rules != rules;
    let access_change = !state.meta.access.as_ref().is_some_and(|a| a.same_access(&plan.tenant_after));
    if plan.is_empty() && !rules_change {
        return Vec::new();
    }
    let per_chunk = members_per_chunk(state.targets.len());
    let mut out = Vec::new();
    let mut remaining: &[MemberChange] = &plan.member_changes;
    let mut first = true;
    while first || !remaining.is_empty() {
        let room = if first && (access_change || rules_change) { per_chunk - 1 } else { per_chunk };
        let (part, rest) = remaining.split_at(room.min(remaining.len()));
        let mut audit = Vec::new();
        let mut chunk = Chunk { members: Vec::new(), tenant: None, rules: None, used_delta: 0, pending_delta: 0, used_at_most: None, audit: Vec::new() };
        if first && access_change {
            audit.push(
                AuditEvent::new(AuditAction::TenantAccessChanged, "tenant", cause, plan.tenant_after.rule.clone())
                    .after(&plan.tenant_after)
                    .announcing(Announcement::TenantAccessChanged { before: state.meta.access.clone(), after: plan.tenant_after.clone() }),
            );
            if let Some(before) = &state.meta.access {
                audit.last_mut().expect("just pushed").before = Some(serde_json::to_value(before).expect("serialises"));
            }
            chunk.tenant = Some(plan.tenant_after.clone());
        }
        if first && rules_change {
            audit.push(AuditEvent::new(AuditAction::TenantRulesChanged, "tenant", cause, "contract role mappings and named users").before(&state.meta.rules).after(&rules));
            chunk.rules = Some(rules.clone());
        }
        for change in part {
            let held = by_id[&change.user_id];
            chunk.members.push((MemberItem { access: change.after.clone(), seat: change.seat.clone(), rev: held.rev + 1, ..held.clone() }, held.rev));
            audit.push(
                AuditEvent::new(AuditAction::MemberAccessChanged, format!("member:{}", change.user_id), cause, change.rule.clone())
                    .before(SeatedAccess { access: &change.before, seat: &change.seat_before })
                    .after(SeatedAccess { access: &change.after, seat: &change.seat })
                    .announcing(Announcement::MemberAccessChanged { user_id: change.user_id.clone(), before: change.before.clone(), after: change.after.clone() }),
            );
        }
        for change in part {
            chunk.used_delta += i64::from(change.after.holds_seat()) - i64::from(change.before.holds_seat());
            chunk.pending_delta += i64::from(access::in_line(&change.after, &change.seat)) - i64::from(access::in_line(&change.before, &change.seat_before));
        }
        if chunk.used_delta > 0 {
            chunk.used_at_most = Some(u32::try_from((i64::from(plan.tenant_after.seats_total) - chunk.used_delta).max(0)).unwrap_or(0));
        }
        chunk.audit = audit;
        out.push(chunk);
        remaining = rest;
        first = false;
    }
    out
}
