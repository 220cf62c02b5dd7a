//! Reconciling a tenant: make actual access equal desired access, in
//! transactions of at most 100 items (`core::reconcile::chunks`), each
//! change with its audit record and a delivery record per SCIM target.
//! Level-triggered: after a crash between chunks, the next run reads what
//! was applied and finishes the rest. A reconcile first chains the
//! tenant's pending audit records (it holds the chain's lock anyway).

use super::commit::{audited_on, Decision};
use super::members::deliveries;
use super::audit::integration;
use super::ports::{Change, MemberGuard, Tenants, Write};
use super::Error;
use crate::core::audit::{AuditAction, Cause};
use crate::core::ids::TenantId;
use crate::core::model::LicensingModel;
use crate::core::reconcile::{chunks, Chunk};
use crate::core::scim::Target;
use crate::core::seats::micros;
use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReconcileOutcome {
    pub member_changes: usize,
    pub tenant_changed: bool,
    /// Transactions committed.
    pub chunks: usize,
    /// SCIM targets the tenant had when it was read (none: nothing to deliver).
    pub targets: usize,
}

pub(crate) fn change_of(chunk: Chunk, targets: &[Target], now: DateTime<Utc>) -> Change {
    let mut change = Change::new(now);
    for (item, rev) in &chunk.members {
        change.writes.push(Write::Member { item: item.clone(), guard: MemberGuard::Rev(*rev) });
        change.writes.extend(deliveries(targets, item));
    }
    change.audit = chunk.audit;
    change.meta.access = chunk.tenant;
    change.meta.rules = chunk.rules;
    change.meta.used_delta = chunk.used_delta;
    change.meta.pending_delta = chunk.pending_delta;
    change.meta.used_at_most = chunk.used_at_most;
    change
}

/// Reconciles one tenant; a tenant not seen yet has nothing to reconcile.
pub async fn reconcile<S: Tenants>(model: &LicensingModel, store: &S, tenant: &TenantId, cause: &Cause, now: DateTime<Utc>) -> Result<ReconcileOutcome, Error> {
    let committed = audited_on(
        store,
        tenant,
        || store.tenant(tenant),
        |state| async move {
            let Some(state) = state else { return Ok(Decision::Done(0)) };
            let targets = state.targets.len();
            let mut changes = integration(&state.pending_audit, now);
            changes.extend(chunks(model, tenant, &state, cause, micros(now)).into_iter().map(|c| change_of(c, &state.targets, now)));
            if changes.is_empty() {
                return Ok(Decision::Done(targets));
            }
            Ok(Decision::Commit(changes, targets))
        },
    )
    .await?;
    Ok(ReconcileOutcome {
        member_changes: committed.changes.iter().map(|c| c.writes.iter().filter(|w| matches!(w, Write::Member { .. })).count()).sum(),
        tenant_changed: committed.changes.iter().any(|c| c.audit.iter().any(|a| matches!(a.action, AuditAction::TenantAccessChanged | AuditAction::TenantRulesChanged))),
        chunks: committed.changes.len(),
        targets: committed.value,
    })
}
