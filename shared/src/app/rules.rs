//! The rules a tenant follows: the licensing model version its `META`
//! names (the latest for a tenant not stored yet), and the change that
//! moves a tenant from one version to another. Every use case decides a
//! tenant's access with these.

use super::ports::{Change, Models, PortError, Write};
use super::Error;
use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::expiry::next_due;
use crate::core::ids::ModelVersion;
use crate::core::license::effective_license;
use crate::core::model::LicensingModel;
use crate::core::tenant::{walk_goal, TenantHead, TenantMeta, Walk};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::sync::Arc;

/// The rules of `version`; a version no registry knows is a stored item
/// that cannot be read.
pub async fn rules<S: Models>(store: &S, version: &ModelVersion) -> Result<Arc<LicensingModel>, PortError> {
    store.rules(version).await?.ok_or_else(|| PortError::Corrupt { key: format!("model version {version}"), why: "a tenant follows a version that is not registered".into() })
}

/// The rules a tenant follows: its version's; for a tenant not stored yet,
/// the latest version's (which it will follow once created).
pub async fn rules_of<S: Models>(store: &S, meta: Option<&TenantMeta>) -> Result<Arc<LicensingModel>, Error> {
    Ok(match meta {
        Some(m) => rules(store, &m.model_version).await?,
        None => store.latest().await?,
    })
}

/// The change that moves a tenant (its head as read) from `from` to `to`:
/// the version it follows, its licenses due again as `to` says (grace and
/// notices are rules of the version), a waiting move dropped, and the walk
/// that brings its members over, carrying `cause` so that every member
/// change of the walk is audited with it, whoever goes on with the walk.
pub fn move_change(head: &TenantHead, from: &LicensingModel, to: &LicensingModel, cause: &Cause, rule: String, now: DateTime<Utc>) -> Change {
    let access = effective_license(to, &head.licenses);
    let goal = walk_goal(to, &access, &head.rules());
    let mut change = Change::new(now);
    for l in &head.licenses {
        change.writes.push(Write::License { license: l.clone(), if_version: Some(l.source_version), due: next_due(to, l).map(|(at, _)| at) });
    }
    change.meta.model_version = Some(to.version.clone());
    if head.meta.model_waiting.is_some() {
        change.meta.model_waiting = Some(None);
        change.meta.model_due = Some(head.meta.model_pin.as_ref().and_then(|p| p.until));
    }
    change.meta.walk = Some(Walk::new(goal, Some(cause.clone())));
    change.audit(
        AuditEvent::new(AuditAction::TenantModelChanged, "tenant", cause, rule)
            .before(json!({ "model": from.version, "fingerprint": from.fingerprint() }))
            .after(json!({ "model": to.version, "fingerprint": to.fingerprint() })),
    )
}
