//! SCIM targets as a tenant's admin configures them: create or reconfigure
//! (the token to the secret store, the configuration with its audit record),
//! list with their backlog, remove, and ask for a drift repair now.

use super::commit::{audited, Decision};
use super::members::known;
use super::ports::{Change, Models, Queue, Targets, Tenants, Tokens, Write};
use super::Error;
use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::egress::EgressPolicy;
use crate::core::ids::{TargetId, TenantId};
use crate::core::reconcile::ReconcileRequest;
use crate::core::rejection::Rejection;
use crate::core::scim::{ParkedDelivery, Target, TargetConfig, TargetView, DEFAULT_REPAIR_MINUTES, MAX_TARGETS_PER_TENANT};
use chrono::{DateTime, Utc};
use serde_json::json;

fn shown(t: &Target) -> serde_json::Value {
    json!({"base_url": t.base_url, "mapping": t.mapping, "repair_interval_minutes": t.repair_interval_minutes})
}

/// A target as the tenant's admin configures it: which one, its
/// configuration, where the deployment lets targets be (`egress`), and the
/// request it came with. (No `Debug`: the configuration holds the token.)
pub struct TargetSetup<'a> {
    pub tenant: &'a TenantId,
    pub target_id: &'a TargetId,
    pub config: TargetConfig,
    pub egress: EgressPolicy,
    pub request_id: &'a str,
}

/// Creates or reconfigures a target (keeping its health), with its audit
/// record; its token goes to the secret store. Returns the target and
/// whether it is new. The caller queues its first sync.
pub async fn configure<S: Tenants + Targets + Models, K: Tokens>(store: &S, tokens: &K, setup: TargetSetup<'_>, now: DateTime<Utc>) -> Result<(Target, bool), Error> {
    let TargetSetup { tenant, target_id, config, egress, request_id } = setup;
    let meta = store.meta(tenant).await?;
    // Its roles are those of the version the tenant follows.
    let model = super::rules::rules_of(store, meta.as_ref()).await?;
    let problems = config.problems(&model.roles, egress);
    if !problems.is_empty() {
        return Err(Rejection::invalid("invalid_target", problems).into());
    }
    known(tenant, meta)?;
    tokens.put(tenant, target_id, &config.token).await?;
    let target = Target {
        tenant_id: tenant.clone(),
        target_id: target_id.clone(),
        base_url: config.base_url.trim().to_string(),
        mapping: config.mapping,
        repair_interval_minutes: config.repair_interval_minutes.unwrap_or(DEFAULT_REPAIR_MINUTES),
        profile: config.profile,
        delete_users: config.delete_users,
        health: Default::default(),
    };
    let cause = Cause::api_call(request_id);
    let committed = audited(store, tenant, |meta| {
        let (target, cause) = (&target, &cause);
        async move {
            known(tenant, meta)?;
            let existing = store.targets(tenant).await?;
            let before = existing.iter().find(|t| t.target_id == target.target_id).cloned();
            if before.is_none() && existing.len() >= MAX_TARGETS_PER_TENANT {
                return Err(Rejection::conflict("too_many_targets", format!("tenant {tenant} already has {MAX_TARGETS_PER_TENANT} targets, the most a tenant may have")).into());
            }
            // The health stays what provision last recorded (the caller
            // queues a repair, which also covers a new place or shape).
            let mut after = target.clone();
            after.health = before.as_ref().map(|b| b.health.clone()).unwrap_or_default();
            let action = if before.is_some() { AuditAction::TargetReconfigured } else { AuditAction::TargetConfigured };
            let mut audit = AuditEvent::new(action, format!("target:{}", target.target_id), cause, "SCIM target configured by the tenant's admin (token kept in Secrets Manager)").after(shown(&after));
            if let Some(b) = &before {
                audit = audit.before(shown(b));
            }
            let change = Change::new(now).write(Write::TargetConfig(after.clone())).audit(audit);
            Ok(Decision::one(change, (after, before.is_none())))
        }
    })
    .await?;
    Ok(committed.value)
}

/// The tenant's targets as the API shows them, with their backlog.
pub async fn views<S: Tenants + Targets>(store: &S, tenant: &TenantId) -> Result<Vec<TargetView>, Error> {
    known(tenant, store.meta(tenant).await?)?;
    let mut out = Vec::new();
    for t in store.targets(tenant).await? {
        let pending = store.pending(tenant, &t.target_id).await?;
        let parked: Vec<ParkedDelivery> = pending.iter().filter_map(|p| p.parked.as_ref().map(|r| ParkedDelivery { user_id: p.member.user_id.clone(), reason: r.clone() })).collect();
        out.push(TargetView::new(&t, pending.len() - parked.len(), parked));
    }
    Ok(out)
}

/// Removes a target, with its audit record; then drops the delivery records
/// left for it and deletes its token (both found from the tenant and the
/// target, so repeating the call after a crash finishes the work). Users
/// already on the target stay there. Returns how many undelivered records
/// were dropped; 404 (after the clean-up) when there was no such target.
pub async fn remove<S: Tenants + Targets, K: Tokens>(store: &S, tokens: &K, tenant: &TenantId, target_id: &TargetId, request_id: &str, now: DateTime<Utc>) -> Result<usize, Error> {
    let cause = Cause::api_call(request_id);
    let committed = audited(store, tenant, |meta| {
        let cause = &cause;
        async move {
            meta.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?;
            let Some(before) = store.targets(tenant).await?.into_iter().find(|t| &t.target_id == target_id) else { return Ok(Decision::Done(false)) };
            let audit =
                AuditEvent::new(AuditAction::TargetRemoved, format!("target:{target_id}"), cause, "SCIM target removed by the tenant's admin: nothing more is delivered to it; its token is deleted")
                    .before(shown(&before));
            Ok(Decision::one(Change::new(now).write(Write::RemoveTarget(target_id.clone())).audit(audit), true))
        }
    })
    .await?;
    // Member changes committed before the removal wrote records for it;
    // later ones see no target (they read targets under the same head).
    let dropped = store.drop_deliveries(tenant, target_id).await?;
    tokens.delete(tenant, target_id).await?;
    if !committed.value || committed.refused.is_some() {
        return Err(Rejection::not_found(&format!("target {target_id} of tenant {tenant}")).into());
    }
    Ok(dropped)
}

/// Asks provision for a drift repair of the target now (it owns the
/// targets); `own` tells this request from others of the same cause.
pub async fn request_repair<S: Targets, Q: Queue>(store: &S, queue: &Q, tenant: &TenantId, target_id: &TargetId, cause: &Cause, own: &str) -> Result<(), Error> {
    if !store.targets(tenant).await?.iter().any(|t| &t.target_id == target_id) {
        return Err(Rejection::not_found(&format!("target {target_id} of tenant {tenant}")).into());
    }
    queue_repair(queue, tenant, target_id, cause, own).await
}

/// Queues a repair of the target (its first sync, or one asked for).
pub async fn queue_repair<Q: Queue>(queue: &Q, tenant: &TenantId, target_id: &TargetId, cause: &Cause, own: &str) -> Result<(), Error> {
    let mut request = ReconcileRequest::new(tenant.clone(), cause.clone());
    request.repair.push(target_id.clone());
    Ok(queue.send(&request, &format!("repair:{tenant}:{target_id}:{own}")).await?)
}
