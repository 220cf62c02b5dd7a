//! Pins that keep a tenant on a version (set, released, or ended by their
//! `until`), and the sweep's part: a waiting move handed back to its rollout.

use crate::app::commit::{audited_on, Decision};
use crate::app::ports::{Change, ModelRegistry, Models, Queue, Tenants, WorkQueue};
use crate::app::rules::{move_change, rules};
use crate::app::Error;
use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::ids::{ModelVersion, TenantId};
use crate::core::reconcile::ReconcileRequest;
use crate::core::rejection::Rejection;
use crate::core::tenant::{ModelPin, TenantMeta};
use crate::core::versions::{PinRequest, Work};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::BTreeMap;

/// What the sweep did with a tenant whose model item fell due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelDue {
    Nothing,
    /// A waiting move handed back to its rollout.
    Moved,
    /// A pin whose `until` passed released, and the tenant moved to the latest version.
    PinReleased {
        to: ModelVersion,
    },
}

/// The sweep's part: a pin whose `until` passed is released and the
/// tenant migrated to the latest version (one audited commit; its walk is
/// queued as a reconcile); a move waiting for the end of the billing
/// period is handed back to its rollout (a work message).
pub async fn model_due<S: Tenants + Models + ModelRegistry, Q: Queue, W: WorkQueue>(store: &S, queue: &Q, work: &W, tenant: &TenantId, cause: &Cause, as_of: DateTime<Utc>) -> Result<ModelDue, Error> {
    let Some(meta) = store.meta(tenant).await? else { return Ok(ModelDue::Nothing) };
    if meta.model_pin.as_ref().and_then(|p| p.until).is_some_and(|u| u <= as_of) {
        let to = release(store, queue, tenant, cause, "its `until` passed", as_of).await?;
        return Ok(to.map_or(ModelDue::Nothing, |to| ModelDue::PinReleased { to }));
    }
    if let Some(w) = meta.model_waiting.as_ref().filter(|w| w.at <= as_of) {
        work.send_work(&Work { run: w.rollout.clone(), tenants: vec![tenant.clone()], due: true, attempts: BTreeMap::new() }).await?;
        return Ok(ModelDue::Moved);
    }
    Ok(ModelDue::Nothing)
}

/// `PUT /tenants/{tenant}/model`: keeps the tenant on a registered version
/// (moving it there now, if it follows another), audited; rollouts skip
/// it until the pin is released or its `until` passes.
pub async fn pin<S: Tenants + Models, Q: Queue>(store: &S, queue: &Q, tenant: &TenantId, req: &PinRequest, cause: &Cause, now: DateTime<Utc>) -> Result<TenantMeta, Error> {
    let to = store.rules(&req.version).await?.ok_or_else(|| Rejection::invalid("unknown_version", vec![format!("version: {} is not registered (GET /model lists them)", req.version)]))?;
    let pin = ModelPin { version: req.version.clone(), until: req.until, by: req.by.clone(), reason: req.reason.clone(), at: now };
    let committed = audited_on(
        store,
        tenant,
        || store.tenant_head(tenant),
        |head| {
            let (pin, to) = (&pin, &to);
            async move {
                let head = head.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?;
                let from = rules(store, &head.meta.model_version).await?;
                let rule = format!("pinned to {} by {}: {}", pin.version, pin.by, pin.reason);
                let mut change = if head.meta.model_version != pin.version { move_change(&head, &from, to, cause, rule.clone(), now) } else { Change::new(now) };
                // A move of a rollout waiting to another version would undo the pin.
                if head.meta.model_waiting.as_ref().is_some_and(|w| w.to != pin.version) {
                    change.meta.model_waiting = Some(None);
                }
                change.meta.model_pin = Some(Some(pin.clone()));
                let waiting = if change.meta.model_waiting == Some(None) { None } else { head.meta.model_waiting.as_ref().map(|w| w.at) };
                change.meta.model_due = Some(match (pin.until, waiting) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                });
                let change = change.audit(
                    AuditEvent::new(AuditAction::TenantModelPinned, "tenant", cause, rule)
                        .before(json!({ "pin": head.meta.model_pin, "model": head.meta.model_version }))
                        .after(json!({ "pin": pin, "model": pin.version })),
                );
                Ok(Decision::one(change, head.meta.model_version != pin.version))
            }
        },
    )
    .await?;
    if committed.value {
        // Its walk: provision's, as any reconcile (a message the code
        // before versions reads too), audited with this cause.
        queue.send(&ReconcileRequest::new(tenant.clone(), cause.clone()), &format!("pin:{tenant}:{}", now.timestamp_micros())).await?;
    }
    Ok(store.meta(tenant).await?.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?)
}

/// `DELETE /tenants/{tenant}/model`: the pin released, and the tenant
/// migrated to the latest version; the version it follows after.
pub async fn unpin<S: Tenants + Models, Q: Queue>(store: &S, queue: &Q, tenant: &TenantId, cause: &Cause, now: DateTime<Utc>) -> Result<Option<ModelVersion>, Error> {
    if store.meta(tenant).await?.is_none() {
        return Err(Rejection::not_found(&format!("tenant {tenant}")).into());
    }
    release(store, queue, tenant, cause, "released", now).await
}

/// Releases a tenant's pin and moves it to the latest version, in one
/// audited commit; the version it follows after (`None`: it had no pin).
async fn release<S: Tenants + Models, Q: Queue>(store: &S, queue: &Q, tenant: &TenantId, cause: &Cause, why: &str, now: DateTime<Utc>) -> Result<Option<ModelVersion>, Error> {
    let latest = store.latest().await?;
    let committed = audited_on(
        store,
        tenant,
        || store.tenant_head(tenant),
        |head| {
            let latest = &latest;
            async move {
                let Some(head) = head else { return Ok(Decision::Done(None)) };
                let Some(pin) = head.meta.model_pin.clone() else { return Ok(Decision::Done(None)) };
                let from = rules(store, &head.meta.model_version).await?;
                let rule = format!("pin to {} {why}: the tenant follows the latest version, {}", pin.version, latest.version);
                let moves = head.meta.model_version != latest.version;
                let mut change = if moves { move_change(&head, &from, latest, cause, rule.clone(), now) } else { Change::new(now) };
                change.meta.model_pin = Some(None);
                change.meta.model_due = Some(if change.meta.model_waiting == Some(None) { None } else { head.meta.model_waiting.as_ref().map(|w| w.at) });
                let change = change.audit(
                    AuditEvent::new(AuditAction::TenantModelUnpinned, "tenant", cause, rule).before(json!({ "pin": pin, "model": head.meta.model_version })).after(json!({ "model": latest.version })),
                );
                Ok(Decision::one(change, Some((latest.version.clone(), moves))))
            }
        },
    )
    .await?;
    let Some((to, moves)) = committed.value else { return Ok(None) };
    if moves {
        queue.send(&ReconcileRequest::new(tenant.clone(), cause.clone()), &format!("unpin:{tenant}:{}", now.timestamp_micros())).await?;
    }
    Ok(Some(to))
}
