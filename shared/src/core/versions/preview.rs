//! Previews: a request for one (a candidate model or a registered
//! version), one tenant's difference under the version previewed, its
//! totals, and the pages it is stored and answered in.

use super::selection::{tenants_and_exclude, Selection};
use crate::core::access::{desired_access_with_rules, MemberItem, MemberStatus, TenantRules};
use crate::core::contract::{AccessImpact, MemberImpact};
use crate::core::ids::{ModelVersion, TenantId};
use crate::core::license::{effective_license, License, TenantAccess};
use crate::core::model::{Entitlement, Entitlements, LicensingModel};
use crate::core::rejection::Rejection;
use crate::core::tenant::TenantMeta;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;

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
