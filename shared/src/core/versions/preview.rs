//! Previews: a request for one (a candidate model or a registered
//! version), one tenant's difference under the version previewed, its
//! totals, and the pages it is stored and answered in.

use super::selection::{tenants_and_exclude, Selection};
use crate::core::access::{access_on_create, in_line, MemberAccess, MemberItem, MemberStatus, TenantRules};
use crate::core::contract::{AccessImpact, MemberImpact};
use crate::core::ids::{ModelVersion, TenantId, UserId};
use crate::core::license::{effective_license, License, MemberPolicy, TenantAccess};
use crate::core::model::{Entitlement, Entitlements, LicensingModel};
use crate::core::reconcile::walked;
use crate::core::rejection::Rejection;
use crate::core::seats::order_key_string;
use crate::core::tenant::TenantMeta;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeSet, HashSet};

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
        let mut t = PreviewTotals { tenants_read: 1, tenants_affected: u64::from(tenant_changed || !impact.members.is_empty()), ..PreviewTotals::default() };
        impact.members.iter().for_each(|m| t.count(m));
        t
    }
    /// Counts one member's difference.
    pub fn count(&mut self, m: &MemberImpact) {
        self.members_changed += 1;
        self.seats_gained += u64::from(m.seat.as_deref() == Some("gained"));
        self.seats_lost += u64::from(m.seat.as_deref() == Some("lost"));
        self.roles_gained += u64::from(!m.roles_added.is_empty());
        self.roles_lost += u64::from(!m.roles_removed.is_empty());
        self.entitlements_gained += u64::from(!m.entitlements_added.is_empty());
        self.entitlements_lost += u64::from(!m.entitlements_removed.is_empty());
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

/// One tenant's preview, read a page of members at a time, twice. It
/// follows the steps a rollout's reconcile takes, in their order: the
/// holders past the tenant's seats under `to` lose theirs (the last in the
/// stored seat order), every member is walked to the tenant's access under
/// `to` (nothing moves a seat), then free seats go to the first in line.
/// The first pass ([`PreviewScan::read`]) keeps only each holder's and each
/// waiting member's place in the seat order, which decides those seats; the
/// second ([`PreviewSeats::impacts`]) compares each member of a page with
/// what the rollout would leave it. So a preview lists exactly the members
/// the rollout changes, in memory that grows with the seats that move, not
/// with the tenant.
pub struct PreviewScan<'a> {
    to: &'a LicensingModel,
    rules: &'a TenantRules,
    access: TenantAccess,
    /// Seated under `to`, and reconciled before (the seat passes run).
    seated: bool,
    /// The holders' places in the stored seat order (as the cut reads it).
    holders: Vec<(String, UserId)>,
    /// The places of those waiting in line once walked (as the grant reads it).
    line: Vec<(String, UserId)>,
    held_after_walk: u32,
    used_before: u32,
}

/// What the first pass decided: the seats that move, and the tenant's
/// before and after.
pub struct PreviewSeats<'a> {
    to: &'a LicensingModel,
    rules: &'a TenantRules,
    access: TenantAccess,
    cut: HashSet<UserId>,
    granted: HashSet<UserId>,
    pub tenant_before: Value,
    pub tenant_after: Value,
    pub seats_used_before: u32,
    pub seats_used_after: u32,
}

impl<'a> PreviewScan<'a> {
    pub fn new(to: &'a LicensingModel, meta: &TenantMeta, licenses: &[License], rules: &'a TenantRules) -> Self {
        let access = effective_license(to, licenses);
        let seated = access.policy == MemberPolicy::Seated && meta.access.is_some();
        PreviewScan { to, rules, access, seated, holders: Vec::new(), line: Vec::new(), held_after_walk: 0, used_before: 0 }
    }

    /// The first pass over one page of members.
    pub fn read(&mut self, page: &[MemberItem]) {
        for m in page {
            let user = &m.member.user_id;
            if m.access.status == MemberStatus::Active {
                self.used_before += 1;
            }
            if m.access.holds_seat() {
                self.holders.push((order_key_string(&m.seat, user), user.clone()));
            }
            let walked = walked(self.to, &self.access, self.rules, m);
            let (access, seat) = walked.as_ref().map_or((&m.access, &m.seat), |s| (&s.item.access, &s.item.seat));
            if access.holds_seat() {
                self.held_after_walk += 1;
            } else if in_line(access, seat) {
                self.line.push((order_key_string(seat, user), user.clone()));
            }
        }
    }

    /// The seats that move: a cut of the holders past the seats (from the
    /// end of their order), else free seats to the line (from its start).
    pub fn seats(mut self, meta: &TenantMeta) -> PreviewSeats<'a> {
        let total = self.access.seats_total as usize;
        let (mut cut, mut granted) = (HashSet::new(), HashSet::new());
        if self.seated && self.holders.len() > total {
            self.holders.sort_unstable();
            cut = self.holders.drain(total..).map(|(_, u)| u).collect();
        } else if self.seated {
            let free = total.saturating_sub(self.held_after_walk as usize);
            self.line.sort_unstable();
            granted = self.line.drain(..).take(free).map(|(_, u)| u).collect();
        }
        let summary = |t: &TenantAccess| json!({"tier": t.tier, "status": t.status, "seats_total": t.seats_total, "entitlements": t.entitlements});
        let seats_used_after = self.held_after_walk - cut.len() as u32 + granted.len() as u32;
        PreviewSeats {
            tenant_before: meta.access.as_ref().map(summary).unwrap_or(Value::Null),
            tenant_after: summary(&self.access),
            to: self.to,
            rules: self.rules,
            access: self.access,
            cut,
            granted,
            seats_used_before: self.used_before,
            seats_used_after,
        }
    }
}

impl PreviewSeats<'_> {
    /// Whether the tenant's own access would change.
    pub fn tenant_changed(&self) -> bool {
        self.tenant_before != self.tenant_after
    }

    /// The second pass over one page: each member whose status, roles or
    /// entitlements would change (not when only the version its access was
    /// decided under would), with the difference.
    pub fn impacts(&self, page: &[MemberItem]) -> Vec<MemberImpact> {
        page.iter().filter_map(|m| self.impact(m)).collect()
    }

    fn impact(&self, m: &MemberItem) -> Option<MemberImpact> {
        let user = &m.member.user_id;
        let after = if self.cut.contains(user) {
            MemberAccess::without_access(MemberStatus::PendingSeat)
        } else if self.granted.contains(user) {
            access_on_create(self.to, &self.access, self.rules, &m.member, MemberStatus::Active)
        } else {
            walked(self.to, &self.access, self.rules, m).map_or_else(|| m.access.clone(), |s| s.item.access)
        };
        let b = &m.access;
        if after == *b {
            return None;
        }
        let seat = match (b.holds_seat(), after.holds_seat()) {
            (false, true) => Some("gained".to_string()),
            (true, false) => Some("lost".to_string()),
            _ => None,
        };
        let (eb, ea) = (held(&b.entitlements), held(&after.entitlements));
        Some(MemberImpact {
            user_id: user.clone(),
            status_before: b.status,
            status_after: after.status,
            seat,
            roles_added: after.roles.difference(&b.roles).cloned().collect(),
            roles_removed: b.roles.difference(&after.roles).cloned().collect(),
            entitlements_added: ea.difference(&eb).cloned().collect(),
            entitlements_removed: eb.difference(&ea).cloned().collect(),
        })
    }
}

/// One tenant's preview of members all in hand: both passes over them.
pub fn preview_tenant(to: &LicensingModel, meta: &TenantMeta, licenses: &[License], rules: &TenantRules, members: &[MemberItem]) -> (AccessImpact, bool) {
    let mut scan = PreviewScan::new(to, meta, licenses, rules);
    scan.read(members);
    let seats = scan.seats(meta);
    let changed = seats.impacts(members);
    let impact = AccessImpact {
        tenant_before: seats.tenant_before.clone(),
        tenant_after: seats.tenant_after.clone(),
        members: changed,
        seats_used_before: seats.seats_used_before,
        seats_used_after: seats.seats_used_after,
    };
    (impact, seats.tenant_changed())
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

/// A tenant's preview cut into pages as its members' differences come:
/// each full page is handed out to be stored once the next member shows it
/// is not the last; the first page, which carries the tenant's totals, is
/// handed out at the end. At most three pages' members are held at once.
pub struct PreviewPager {
    tenant: TenantId,
    from: ModelVersion,
    to: ModelVersion,
    before_after: (Value, Value, u32, u32),
    first: Vec<MemberImpact>,
    current: Vec<MemberImpact>,
    /// The number of the page `current` fills (0 while it is the first).
    page: u32,
    totals: PreviewTotals,
}

impl PreviewPager {
    pub fn new(tenant: &TenantId, from: &ModelVersion, to: &ModelVersion, tenant_before: Value, tenant_after: Value, seats_used_before: u32, seats_used_after: u32) -> Self {
        PreviewPager {
            tenant: tenant.clone(),
            from: from.clone(),
            to: to.clone(),
            before_after: (tenant_before, tenant_after, seats_used_before, seats_used_after),
            first: Vec::new(),
            current: Vec::new(),
            page: 0,
            totals: PreviewTotals { tenants_read: 1, ..PreviewTotals::default() },
        }
    }

    fn page(&self, page: u32, more: bool, members: Vec<MemberImpact>, totals: PreviewTotals) -> PreviewPage {
        let (b, a, ub, ua) = &self.before_after;
        PreviewPage {
            tenant_id: self.tenant.clone(),
            from: self.from.clone(),
            to: self.to.clone(),
            page,
            more,
            impact: AccessImpact { tenant_before: b.clone(), tenant_after: a.clone(), members, seats_used_before: *ub, seats_used_after: *ua },
            totals,
        }
    }

    /// Adds members' differences; answers the pages now complete.
    pub fn push(&mut self, members: impl IntoIterator<Item = MemberImpact>) -> Vec<PreviewPage> {
        let mut done = Vec::new();
        for m in members {
            self.totals.count(&m);
            if self.page == 0 && self.first.len() < PREVIEW_MEMBERS_PER_PAGE {
                self.first.push(m);
                continue;
            }
            if self.page == 0 {
                self.page = 1;
            } else if self.current.len() == PREVIEW_MEMBERS_PER_PAGE {
                let full = std::mem::take(&mut self.current);
                done.push(self.page(self.page, true, full, PreviewTotals::default()));
                self.page += 1;
            }
            self.current.push(m);
        }
        done
    }

    /// The last pages: the one being filled (if any) and the first, with
    /// the tenant's totals.
    pub fn finish(mut self, tenant_changed: bool) -> Vec<PreviewPage> {
        self.totals.tenants_affected = u64::from(tenant_changed || self.totals.members_changed > 0);
        let mut out = Vec::new();
        if self.page > 0 {
            let last = std::mem::take(&mut self.current);
            out.push(self.page(self.page, false, last, PreviewTotals::default()));
        }
        let first = std::mem::take(&mut self.first);
        out.push(self.page(0, self.page > 0, first, self.totals.clone()));
        out
    }
}

/// One tenant's preview cut into pages (the first carries the tenant's
/// totals; each the tenant's before and after), in page order.
pub fn preview_pages(tenant: &TenantId, from: &ModelVersion, to: &ModelVersion, impact: AccessImpact, tenant_changed: bool) -> Vec<PreviewPage> {
    let AccessImpact { tenant_before, tenant_after, members, seats_used_before, seats_used_after } = impact;
    let mut pager = PreviewPager::new(tenant, from, to, tenant_before, tenant_after, seats_used_before, seats_used_after);
    let mut pages = pager.push(members);
    pages.extend(pager.finish(tenant_changed));
    pages.sort_by_key(|p| p.page);
    pages
}
