//! Desired access: a pure function of (licensing model, licenses, members).
//! Provisioning makes actual access equal to it; because it depends on state
//! and not on the events that led there, duplicates and reordering cannot
//! corrupt it.

use crate::core::ids::{ModelVersion, TenantId, UserId};
use crate::core::license::{effective_license, License, MemberPolicy, TenantAccess};
use crate::core::model::{Entitlements, LicensingModel};
use crate::core::seats::{self, Candidate, Seat, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Active,
    PendingSeat,
    Suspended,
    Deprovisioned,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Active => "active",
            MemberStatus::PendingSeat => "pending_seat",
            MemberStatus::Suspended => "suspended",
            MemberStatus::Deprovisioned => "deprovisioned",
        }
    }
}

/// A member as the app described it. `seq` is the tenant-wide creation order
/// (assigned atomically when the account is created): it decides who gets a
/// seat first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub user_id: UserId,
    pub email: String,
    pub groups: BTreeSet<String>,
    pub attributes: BTreeMap<String, String>,
    pub seq: u64,
    /// Removed by the app: deprovisioned for good.
    pub removed: bool,
    /// Suspended by the tenant's identity provider (a SCIM `active: false`):
    /// no access, no seat, out of the line, until it is active again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspended: bool,
}

/// What a member may do: the part of a member that provisioning manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAccess {
    pub status: MemberStatus,
    pub roles: BTreeSet<String>,
    pub entitlements: Entitlements,
}

impl MemberAccess {
    pub fn without_access(status: MemberStatus) -> Self {
        MemberAccess { status, roles: BTreeSet::new(), entitlements: Entitlements::new() }
    }
    pub fn holds_seat(&self) -> bool {
        self.status == MemberStatus::Active
    }
}

/// Role grants of one tenant from its contracts: group mappings and named users.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRules {
    pub role_mappings: BTreeMap<String, BTreeSet<String>>,
    pub named_users: BTreeMap<UserId, BTreeSet<String>>,
}

impl TenantRules {
    pub fn is_empty(&self) -> bool {
        self.role_mappings.is_empty() && self.named_users.is_empty()
    }
}

/// Roles a member gets from the model's rules at a tier and from the tenant's
/// contract rules, and the rules that fired.
pub fn roles_for(model: &LicensingModel, tier: &str, member: &Member, rules: &TenantRules) -> (BTreeSet<String>, Vec<String>) {
    let (grants, fired) = grants_and_fired(model, tier, member, rules);
    (grants.into_iter().map(|(role, _)| role).collect(), fired)
}

/// Each role a member gets with the rule that granted it (`default_roles`
/// for the model's defaults), in rule order; a role two rules grant is
/// listed for each.
pub fn role_grants(model: &LicensingModel, tier: &str, member: &Member, rules: &TenantRules) -> Vec<(String, String)> {
    grants_and_fired(model, tier, member, rules).0
}

fn grants_and_fired(model: &LicensingModel, tier: &str, member: &Member, rules: &TenantRules) -> (Vec<(String, String)>, Vec<String>) {
    let rank = model.tier_rank(tier);
    let mut grants = Vec::new();
    let mut fired = Vec::new();
    let mut replace_defaults = false;
    for rule in &model.role_rules {
        let matches = match (&rule.group, &rule.attribute) {
            (Some(g), _) => member.groups.contains(g),
            (None, Some(a)) => member.attributes.get(&a.key) == Some(&a.value),
            (None, None) => false,
        };
        let tier_ok = match &rule.min_tier {
            Some(min) => rank >= model.tier_rank(min),
            None => true,
        };
        if matches && tier_ok {
            grants.extend(rule.roles.iter().map(|r| (r.clone(), rule.name.clone())));
            replace_defaults |= rule.replace_defaults;
            fired.push(rule.name.clone());
        }
    }
    for (group, granted) in &rules.role_mappings {
        if member.groups.contains(group) {
            let name = format!("contract role_mappings.{group}");
            grants.extend(granted.iter().map(|r| (r.clone(), name.clone())));
            fired.push(name);
        }
    }
    if let Some(granted) = rules.named_users.get(&member.user_id) {
        let name = format!("contract named_users.{}", member.user_id);
        grants.extend(granted.iter().map(|r| (r.clone(), name.clone())));
        fired.push(name);
    }
    if !replace_defaults {
        grants.extend(model.default_roles.iter().map(|r| (r.clone(), "default_roles".to_string())));
    }
    (grants, fired)
}

/// Whether the member's roles under `tier` include one of the model's privileged roles.
pub fn is_privileged(model: &LicensingModel, tier: &str, member: &Member, rules: &TenantRules) -> bool {
    roles_for(model, tier, member, rules).0.iter().any(|r| model.is_privileged(r))
}

/// A member item: who the app says they are, what access they have, their
/// place in the seat order, and the item's revision (every write of the
/// item moves it on; a write conditional on it never overrides a newer one).
#[derive(Debug, Clone, PartialEq)]
pub struct MemberItem {
    pub member: Member,
    pub access: MemberAccess,
    pub seat: Seat,
    pub rev: u64,
    /// What the tenant's directory (SCIM) keeps of it, if a directory pushed it.
    pub link: Option<Link>,
    /// The licensing model version its access was decided with (so that a
    /// member read in the middle of a tenant's move is never ambiguous).
    pub model_version: ModelVersion,
}

impl MemberItem {
    /// A member's item as first written: its seat order from its creation,
    /// its access decided under `model`.
    pub fn new(member: Member, access: MemberAccess, model: &LicensingModel) -> Self {
        let seat = Seat::new(member.seq);
        MemberItem { member, access, seat, rev: 1, link: None, model_version: model.version.clone() }
    }
    /// Waiting in line for a seat (counted in the tenant's `seats_pending`).
    pub fn in_line(&self) -> bool {
        in_line(&self.access, &self.seat)
    }
}

/// Waiting in line for a seat: pending, and not released by the tenant's admin.
pub fn in_line(access: &MemberAccess, seat: &Seat) -> bool {
    access.status == MemberStatus::PendingSeat && !seat.released()
}

/// The seat decision for the tenant's members not removed (see
/// [`crate::core::seats`]): empty unless the tenant is seated.
pub fn seat_decisions(model: &LicensingModel, tenant: &TenantAccess, rules: &TenantRules, members: &[MemberItem], now: u64) -> BTreeMap<UserId, (Verdict, Seat)> {
    if tenant.policy != MemberPolicy::Seated {
        return BTreeMap::new();
    }
    let candidates: Vec<Candidate> = members
        .iter()
        .filter(|m| !m.member.removed && !m.member.suspended)
        .map(|m| Candidate { user_id: &m.member.user_id, holds: m.access.holds_seat(), privileged: is_privileged(model, &tenant.tier, &m.member, rules), seat: &m.seat })
        .collect();
    seats::decide(tenant.seats_total, &candidates, now)
}

/// Whether the model counts the member as an owner or admin at the tenant's tier.
pub fn privileged(model: &LicensingModel, tenant: &TenantAccess, rules: &TenantRules, member: &Member) -> bool {
    is_privileged(model, &tenant.tier, member, rules)
}

/// One member's desired access and seat, with the reason for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredMember {
    pub access: MemberAccess,
    pub seat: Seat,
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredAccess {
    pub tenant: TenantAccess,
    pub members: BTreeMap<UserId, DesiredMember>,
}

/// Desired access without contract rules.
pub fn desired_access(model: &LicensingModel, licenses: &[License], members: &[MemberItem], now: u64) -> DesiredAccess {
    desired_access_with_rules(model, licenses, &TenantRules::default(), members, now)
}

/// Desired access of a tenant's members as they stand now (who holds a
/// seat is part of the state: seats are sticky), decided at `now`
/// (microseconds: the seat order of a seat that changes hands).
pub fn desired_access_with_rules(model: &LicensingModel, licenses: &[License], rules: &TenantRules, members: &[MemberItem], now: u64) -> DesiredAccess {
    let tenant = effective_license(model, licenses);
    let decisions = seat_decisions(model, &tenant, rules, members, now);
    let members = members
        .iter()
        .map(|item| {
            let m = &item.member;
            let kept = |access: MemberAccess, rule: String| DesiredMember { access, seat: item.seat.clone(), rule };
            let desired = if m.removed {
                kept(MemberAccess::without_access(MemberStatus::Deprovisioned), "member removed by the app".into())
            } else if m.suspended && tenant.policy != MemberPolicy::Revoked {
                kept(MemberAccess::without_access(MemberStatus::Suspended), SUSPENDED_BY_DIRECTORY.into())
            } else {
                match tenant.policy {
                    MemberPolicy::Revoked => kept(MemberAccess::without_access(MemberStatus::Deprovisioned), format!("tenant access revoked: {}", tenant.rule)),
                    MemberPolicy::Suspended => kept(MemberAccess::without_access(MemberStatus::Suspended), format!("tenant suspended: {}", tenant.rule)),
                    MemberPolicy::Seated => {
                        let (verdict, seat) = decisions[&m.user_id].clone();
                        let why = seat_rule(&verdict, &seat, tenant.seats_total);
                        if verdict.holds() {
                            let (roles, fired) = roles_for(model, &tenant.tier, m, rules);
                            let fired = if fired.is_empty() { "default_roles".to_string() } else { fired.join(", ") };
                            DesiredMember {
                                access: MemberAccess { status: MemberStatus::Active, roles, entitlements: tenant.entitlements.clone() },
                                seat,
                                rule: format!("{why}; roles from [{fired}]"),
                            }
                        } else {
                            DesiredMember { access: MemberAccess::without_access(MemberStatus::PendingSeat), seat, rule: why }
                        }
                    }
                }
            };
            (m.user_id.clone(), desired)
        })
        .collect();
    DesiredAccess { tenant, members }
}

/// Why a member the tenant's identity provider deactivated has no access.
pub const SUSPENDED_BY_DIRECTORY: &str = "suspended by the tenant's identity provider (SCIM active: false): no access, no seat";

/// A seat verdict in words, as the audit records it.
pub fn seat_rule(verdict: &Verdict, seat: &Seat, total: u32) -> String {
    let pinned = match &seat.pin {
        Some(p) if p.hold => format!(", pinned by {}", p.by),
        _ => String::new(),
    };
    match verdict {
        Verdict::Keeps { place } => format!("seat held (seats are sticky: {place} of at most {total} holders in the seat order{pinned})"),
        Verdict::Granted { place } => format!("free seat given to place {place} of the line (pinned, then owner/admin, then longest waiting){pinned}"),
        Verdict::Cut { place, holders, total } => {
            format!("seat cut: {holders} holders for {total} seats, place {place} in the holders' order (unpinned, not owner/admin, most recently seated lose first)")
        }
        Verdict::Waits { place } => format!("waiting for a seat: place {place} in line, all {total} seats held"),
        Verdict::Released => match &seat.pin {
            Some(p) => format!("seat released by {}: waits until given one", p.by),
            None => "seat released: waits until given one".to_string(),
        },
    }
}

/// The status a new account gets at the moment of creation. `seats_used` and
/// `seats_pending` are read under the same optimistic lock as the write, so
/// two creations can never both take the last seat. A pending queue means
/// seats go to those already waiting.
pub fn status_on_create(tenant: &TenantAccess, seats_used: u32, seats_pending: u32) -> MemberStatus {
    match tenant.policy {
        MemberPolicy::Revoked => MemberStatus::Deprovisioned,
        MemberPolicy::Suspended => MemberStatus::Suspended,
        MemberPolicy::Seated if seats_used < tenant.seats_total && seats_pending == 0 => MemberStatus::Active,
        MemberPolicy::Seated => MemberStatus::PendingSeat,
    }
}

/// The access a new member gets at creation, before any reconcile.
pub fn access_on_create(model: &LicensingModel, tenant: &TenantAccess, rules: &TenantRules, member: &Member, status: MemberStatus) -> MemberAccess {
    if status == MemberStatus::Active {
        let (roles, _) = roles_for(model, &tenant.tier, member, rules);
        MemberAccess { status, roles, entitlements: tenant.entitlements.clone() }
    } else {
        MemberAccess::without_access(status)
    }
}

/// One member's change from actual to desired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberChange {
    pub user_id: UserId,
    pub before: MemberAccess,
    pub after: MemberAccess,
    pub seat_before: Seat,
    pub seat: Seat,
    pub rule: String,
}

/// What provisioning must do to make actual access equal desired access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub tenant_id: TenantId,
    pub tenant_before: Option<TenantAccess>,
    pub tenant_after: TenantAccess,
    /// Seat releases first, then changes that keep the seat count, then seat
    /// grants: applied in this order, seats in use never exceed seats granted
    /// by more than the license change itself implies.
    pub member_changes: Vec<MemberChange>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.tenant_before.as_ref().is_some_and(|b| b.same_access(&self.tenant_after)) && self.member_changes.is_empty()
    }
    pub fn seats_used_after(&self, used_before: u32) -> u32 {
        let delta: i64 = self.member_changes.iter().map(|c| i64::from(c.after.holds_seat()) - i64::from(c.before.holds_seat())).sum();
        u32::try_from(i64::from(used_before) + delta).unwrap_or(0)
    }
}

/// The changes that make the members (as they stand: `actual`) equal
/// desired access.
pub fn plan(tenant_id: &TenantId, desired: DesiredAccess, actual_tenant: Option<&TenantAccess>, actual: &[MemberItem]) -> Plan {
    let actual: BTreeMap<&UserId, &MemberItem> = actual.iter().map(|m| (&m.member.user_id, m)).collect();
    let mut changes: Vec<MemberChange> = desired
        .members
        .into_iter()
        .filter_map(|(user_id, want)| {
            let (before, seat_before) = match actual.get(&user_id) {
                Some(m) => (m.access.clone(), m.seat.clone()),
                None => (MemberAccess::without_access(MemberStatus::PendingSeat), want.seat.clone()),
            };
            (before != want.access || seat_before != want.seat).then_some(MemberChange { user_id, before, after: want.access, seat_before, seat: want.seat, rule: want.rule })
        })
        .collect();
    let order = |c: &MemberChange| match (c.before.holds_seat(), c.after.holds_seat()) {
        (true, false) => 0,
        (false, true) => 2,
        _ => 1,
    };
    changes.sort_by(|a, b| order(a).cmp(&order(b)).then_with(|| a.user_id.cmp(&b.user_id)));
    Plan { tenant_id: tenant_id.clone(), tenant_before: actual_tenant.cloned(), tenant_after: desired.tenant, member_changes: changes }
}

/// A member's access with its seat: what the audit records of a member
/// change show before and after.
#[derive(Debug, Clone, Serialize)]
pub struct SeatedAccess<'a> {
    #[serde(flatten)]
    pub access: &'a MemberAccess,
    pub seat: &'a Seat,
    /// The model version the access was decided with.
    pub model: &'a ModelVersion,
}

impl<'a> SeatedAccess<'a> {
    pub fn of(item: &'a MemberItem) -> Self {
        SeatedAccess { access: &item.access, seat: &item.seat, model: &item.model_version }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::ids::LicenseId;
    use crate::core::license::{LicenseStatus, Source};
    use crate::core::seats::Pin;
    use proptest::prelude::*;

    pub(crate) fn member(id: &str, seq: u64, groups: &[&str]) -> Member {
        Member {
            user_id: UserId::parse(id).unwrap(),
            email: format!("{id}@example.com"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            attributes: BTreeMap::new(),
            seq,
            removed: false,
            suspended: false,
        }
    }

    /// Members as created, none holding a seat yet.
    pub(crate) fn waiting(members: Vec<Member>) -> Vec<MemberItem> {
        members.into_iter().map(|m| MemberItem::new(m, MemberAccess::without_access(MemberStatus::PendingSeat), &LicensingModel::default_model())).collect()
    }

    fn license(tier: &str, seats: u32, status: LicenseStatus) -> License {
        crate::core::license::tests::lic("sub_1", Source::Stripe, tier, seats, status, 1)
    }

    fn statuses(d: &DesiredAccess) -> Vec<(String, MemberStatus)> {
        d.members.iter().map(|(k, v)| (k.to_string(), v.access.status)).collect()
    }

    /// The members after applying desired access.
    fn applied(items: &[MemberItem], d: &DesiredAccess) -> Vec<MemberItem> {
        items.iter().map(|m| MemberItem { access: d.members[&m.member.user_id].access.clone(), seat: d.members[&m.member.user_id].seat.clone(), ..m.clone() }).collect()
    }

    #[test]
    fn first_seats_go_to_admins_then_oldest() {
        let m = LicensingModel::default_model();
        let members = waiting(vec![member("a", 1, &[]), member("b", 2, &[]), member("c", 3, &["admins"]), member("d", 4, &[])]);
        let d = desired_access(&m, &[license("team", 2, LicenseStatus::Active)], &members, 100);
        assert_eq!(statuses(&d), vec![("a".into(), MemberStatus::Active), ("b".into(), MemberStatus::PendingSeat), ("c".into(), MemberStatus::Active), ("d".into(), MemberStatus::PendingSeat)]);
        assert!(d.members[&UserId::parse("c").unwrap()].access.roles.contains("admin"));
        assert!(d.members[&UserId::parse("b").unwrap()].access.roles.is_empty());
        // Given at 100, in line order: c (admin) first.
        assert_eq!(d.members[&UserId::parse("c").unwrap()].seat.since, 100);
        assert_eq!(d.members[&UserId::parse("a").unwrap()].seat.since, 101);
    }

    #[test]
    fn a_holder_keeps_its_seat_when_an_older_member_waits() {
        // Creations claim seats in the order their transactions commit: the
        // newer b got the last seat, the older a waits. The reconcile keeps that.
        let m = LicensingModel::default_model();
        let mut items = waiting(vec![member("a", 1, &[]), member("b", 2, &[])]);
        items[1].access = access_on_create(&m, &effective_license(&m, &[license("team", 1, LicenseStatus::Active)]), &TenantRules::default(), &items[1].member, MemberStatus::Active);
        let d = desired_access(&m, &[license("team", 1, LicenseStatus::Active)], &items, 100);
        assert_eq!(statuses(&d), vec![("a".into(), MemberStatus::PendingSeat), ("b".into(), MemberStatus::Active)]);
        let p = plan(&TenantId::parse("t").unwrap(), d.clone(), Some(&d.tenant), &items);
        assert!(p.member_changes.is_empty(), "{:?}", p.member_changes);
    }

    #[test]
    fn role_rules_follow_the_tier() {
        let m = LicensingModel::default_model();
        let fin = member("f", 1, &["finance"]);
        let (team_roles, _) = roles_for(&m, "team", &fin, &TenantRules::default());
        let (biz_roles, fired) = roles_for(&m, "business", &fin, &TenantRules::default());
        assert!(!team_roles.contains("billing-admin"));
        assert!(biz_roles.contains("billing-admin") && biz_roles.contains("member"));
        assert_eq!(fired, vec!["finance-billing-admin".to_string()]);
        let mut contractor = member("c", 2, &[]);
        contractor.attributes.insert("employment".into(), "contractor".into());
        let (roles, _) = roles_for(&m, "team", &contractor, &TenantRules::default());
        assert_eq!(roles.into_iter().collect::<Vec<_>>(), vec!["viewer".to_string()]);
    }

    #[test]
    fn suspended_and_removed_members_lose_everything_but_their_place() {
        let m = LicensingModel::default_model();
        let mut members = vec![member("a", 1, &[]), member("b", 2, &[])];
        members[1].removed = true;
        let items = waiting(members);
        let d = desired_access(&m, &[license("team", 5, LicenseStatus::Suspended)], &items, 100);
        assert_eq!(statuses(&d), vec![("a".into(), MemberStatus::Suspended), ("b".into(), MemberStatus::Deprovisioned)]);
        assert!(d.members.values().all(|v| v.access.roles.is_empty() && v.access.entitlements.is_empty()));
        assert_eq!(d.members[&UserId::parse("a").unwrap()].seat, items[0].seat);
    }

    #[test]
    fn a_released_member_waits_outside_the_line() {
        let m = LicensingModel::default_model();
        let mut items = waiting(vec![member("a", 1, &[]), member("b", 2, &[])]);
        items[0].seat.pin = Some(Pin { hold: false, by: "admin x".into(), at: "2026-12-01T00:00:00Z".into() });
        let d = desired_access(&m, &[license("team", 5, LicenseStatus::Active)], &items, 100);
        assert_eq!(statuses(&d), vec![("a".into(), MemberStatus::PendingSeat), ("b".into(), MemberStatus::Active)]);
        assert_eq!(d.members[&UserId::parse("a").unwrap()].rule, "seat released by admin x: waits until given one");
        assert!(!in_line(&d.members[&UserId::parse("a").unwrap()].access, &d.members[&UserId::parse("a").unwrap()].seat));
    }

    #[test]
    fn creation_claims_only_free_seats_with_nobody_waiting() {
        let m = LicensingModel::default_model();
        let t = effective_license(&m, &[license("team", 2, LicenseStatus::Active)]);
        assert_eq!(status_on_create(&t, 1, 0), MemberStatus::Active);
        assert_eq!(status_on_create(&t, 2, 0), MemberStatus::PendingSeat);
        assert_eq!(status_on_create(&t, 1, 1), MemberStatus::PendingSeat);
    }

    #[test]
    fn plan_orders_releases_before_grants() {
        let m = LicensingModel::default_model();
        let t = TenantId::parse("t1").unwrap();
        // a and b hold seats, c (an admin, created later) waits.
        let mut items = waiting(vec![member("a", 1, &[]), member("b", 2, &[]), member("c", 3, &["admins"])]);
        let seated = desired_access(&m, &[license("team", 2, LicenseStatus::Active)], &items[..2], 10);
        items = [applied(&items[..2], &seated), items[2..].to_vec()].concat();
        let d = desired_access(&m, &[license("team", 1, LicenseStatus::Active)], &items, 100);
        let p = plan(&t, d.clone(), Some(&d.tenant), &items);
        let order: Vec<_> = p.member_changes.iter().map(|c| (c.user_id.to_string(), c.after.status)).collect();
        // One seat: b, the most recently seated, loses it; c stays in line
        // (its place in the stored order now says it is an admin).
        assert_eq!(order, vec![("b".into(), MemberStatus::PendingSeat), ("c".into(), MemberStatus::PendingSeat)]);
        assert!(p.member_changes[1].seat.privileged && p.member_changes[1].before == p.member_changes[1].after);
        assert_eq!(p.seats_used_after(2), 1);
        // Three seats: the line gets the two free ones, the admin first.
        let after_cut = applied(&items, &d);
        let d = desired_access(&m, &[license("team", 3, LicenseStatus::Active)], &after_cut, 200);
        let p = plan(&t, d.clone(), Some(&d.tenant), &after_cut);
        let order: Vec<_> = p.member_changes.iter().map(|c| (c.user_id.to_string(), c.after.status)).collect();
        assert_eq!(order, vec![("b".into(), MemberStatus::Active), ("c".into(), MemberStatus::Active)]);
        assert!(p.member_changes[1].seat.since < p.member_changes[0].seat.since);
    }

    fn arb_members() -> impl Strategy<Value = Vec<MemberItem>> {
        prop::collection::vec((0u8..6, any::<bool>(), any::<bool>(), any::<bool>()), 0..40).prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (g, removed, contractor, holds))| {
                    let groups: &[&str] = match g {
                        0 => &["admins"],
                        1 => &["owners"],
                        2 => &["finance"],
                        _ => &[],
                    };
                    let mut m = member(&format!("u{i}"), i as u64 * 3 + 1, groups);
                    m.removed = removed && i % 3 == 0;
                    if contractor {
                        m.attributes.insert("employment".into(), "contractor".into());
                    }
                    let mut item = MemberItem::new(m, MemberAccess::without_access(MemberStatus::PendingSeat), &LicensingModel::default_model());
                    if holds && !item.member.removed {
                        item.access.status = MemberStatus::Active;
                    }
                    item
                })
                .collect()
        })
    }

    fn arb_licenses() -> impl Strategy<Value = Vec<License>> {
        let tiers = prop::sample::select(vec!["free", "team", "business", "enterprise"]);
        let statuses = prop::sample::select(vec![LicenseStatus::Trialing, LicenseStatus::Active, LicenseStatus::PastDue, LicenseStatus::Suspended, LicenseStatus::Expired, LicenseStatus::Canceled]);
        let sources = prop::sample::select(vec![Source::Stripe, Source::Crm, Source::Contract]);
        prop::collection::vec((tiers, 0u32..30, statuses, sources, any::<bool>()), 0..4).prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (tier, seats, status, source, sso))| {
                    let mut l = license(tier, seats, status);
                    l.license_id = LicenseId::parse(format!("lic_{i}")).unwrap();
                    l.source = source;
                    if sso {
                        l.addons.insert("sso".into());
                    }
                    l
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn never_more_seat_holders_than_seats(licenses in arb_licenses(), members in arb_members()) {
            let m = LicensingModel::default_model();
            let d = desired_access(&m, &licenses, &members, 1_000);
            let active = d.members.values().filter(|v| v.access.holds_seat()).count();
            prop_assert!(active <= d.tenant.seats_total as usize);
            // Every seat is used while someone waits for one.
            let waiting = d.members.values().filter(|v| v.access.status == MemberStatus::PendingSeat).count();
            prop_assert!(waiting == 0 || active == d.tenant.seats_total as usize);
        }

        #[test]
        fn a_holder_keeps_its_seat_unless_the_seats_fall_below_the_holders(licenses in arb_licenses(), members in arb_members()) {
            let m = LicensingModel::default_model();
            let d = desired_access(&m, &licenses, &members, 1_000);
            let holders = members.iter().filter(|i| i.access.holds_seat()).count();
            if d.tenant.policy == MemberPolicy::Seated && holders <= d.tenant.seats_total as usize {
                for i in members.iter().filter(|i| i.access.holds_seat()) {
                    prop_assert!(d.members[&i.member.user_id].access.holds_seat());
                }
            }
            // Never a seat taken from one and given to another.
            let lost = members.iter().any(|i| i.access.holds_seat() && !d.members[&i.member.user_id].access.holds_seat());
            let gained = members.iter().any(|i| !i.access.holds_seat() && d.members[&i.member.user_id].access.holds_seat());
            prop_assert!(!(lost && gained));
        }

        #[test]
        fn desired_access_ignores_input_order(licenses in arb_licenses(), members in arb_members(), seed in any::<u64>()) {
            let m = LicensingModel::default_model();
            let d1 = desired_access(&m, &licenses, &members, 1_000);
            let mut l2 = licenses.clone();
            let mut m2 = members.clone();
            // A deterministic shuffle from the seed.
            let n = l2.len().max(1);
            l2.rotate_left((seed as usize) % n);
            l2.reverse();
            let k = m2.len().max(1);
            m2.rotate_left((seed as usize / 7) % k);
            m2.reverse();
            prop_assert_eq!(d1, desired_access(&m, &l2, &m2, 1_000));
        }

        #[test]
        fn from_nobody_seated_privileged_members_and_older_peers_go_first(licenses in arb_licenses(), members in arb_members()) {
            let m = LicensingModel::default_model();
            let members: Vec<MemberItem> = members.into_iter().map(|i| MemberItem { access: MemberAccess::without_access(MemberStatus::PendingSeat), ..i }).collect();
            let d = desired_access(&m, &licenses, &members, 1_000);
            let priv_of = |mem: &Member| roles_for(&m, &d.tenant.tier, mem, &TenantRules::default()).0.iter().any(|r| m.is_privileged(r));
            for a in &members {
                for b in &members {
                    let (da, db) = (&d.members[&a.member.user_id], &d.members[&b.member.user_id]);
                    if da.access.status == MemberStatus::PendingSeat && db.access.holds_seat() {
                        // b got a seat a waits for: b is privileged and a is not, or b is older.
                        prop_assert!((priv_of(&b.member) && !priv_of(&a.member)) || (priv_of(&b.member) == priv_of(&a.member) && b.member.seq < a.member.seq));
                    }
                }
            }
        }

        #[test]
        fn applying_the_plan_reaches_a_fixpoint(licenses in arb_licenses(), members in arb_members()) {
            let m = LicensingModel::default_model();
            let t = TenantId::parse("t1").unwrap();
            let d = desired_access(&m, &licenses, &members, 1_000);
            let p = plan(&t, d.clone(), None, &members);
            let after: Vec<MemberItem> = members.iter().map(|mem| {
                match p.member_changes.iter().find(|c| c.user_id == mem.member.user_id) {
                    Some(c) => MemberItem { access: c.after.clone(), seat: c.seat.clone(), ..mem.clone() },
                    None => mem.clone(),
                }
            }).collect();
            let again = plan(&t, desired_access(&m, &licenses, &after, 2_000), Some(&p.tenant_after), &after);
            prop_assert!(again.is_empty());
        }
    }
}

/// What a directory keeps of a member, on its item.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Link {
    /// The connection that last wrote the User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The User's attributes as sent (those its schema lists), without
    /// `id`, `meta` and `groups`. Null for a member the app created that a
    /// directory only put in a group.
    #[serde(default)]
    pub doc: serde_json::Value,
    /// The directory groups it is in: group id -> the name the member got from it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub groups: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub modified: String,
}
