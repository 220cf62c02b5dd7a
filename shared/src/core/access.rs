//! Desired access: a pure function of (licensing model, licenses, members).
//! Provisioning makes actual access equal to it; because it depends on state
//! and not on the events that led there, duplicates and reordering cannot
//! corrupt it.

use crate::core::ids::{TenantId, UserId};
use crate::core::license::{effective_license, License, MemberPolicy, TenantAccess};
use crate::core::model::{Entitlements, LicensingModel};
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

/// Where a member stands in the seat ranking (owner/admin first, then
/// creation order): its 1-based position among the members not removed,
/// and whether the ranking puts it first as privileged. `None` for a
/// removed member.
pub fn seat_rank(model: &LicensingModel, tenant: &TenantAccess, rules: &TenantRules, members: &[Member], user: &UserId) -> Option<(usize, bool)> {
    let ranked = seat_ranking(model, tenant, rules, members);
    ranked.iter().position(|(_, _, id)| *id == user).map(|i| (i + 1, !ranked[i].0))
}

/// The members not removed, in seat order: (not privileged, creation order, id).
fn seat_ranking<'a>(model: &LicensingModel, tenant: &TenantAccess, rules: &TenantRules, members: &'a [Member]) -> Vec<(bool, u64, &'a UserId)> {
    let mut ranked: Vec<(bool, u64, &UserId)> = members
        .iter()
        .filter(|m| !m.removed)
        .map(|m| (!is_privileged(model, &tenant.tier, m, rules), m.seq, &m.user_id))
        .collect();
    ranked.sort();
    ranked
}

fn is_privileged(model: &LicensingModel, tier: &str, member: &Member, rules: &TenantRules) -> bool {
    roles_for(model, tier, member, rules).0.iter().any(|r| model.is_privileged(r))
}

/// Who holds a seat: members ranked owner/admin first, then by creation order;
/// the first `seats` of them. Hence seat cuts take seats from the newest
/// members first and never from an owner or admin while others hold one, and
/// freed or added seats go to the oldest pending members first.
pub fn seat_holders<'a>(model: &LicensingModel, tenant: &TenantAccess, rules: &TenantRules, members: &'a [Member]) -> BTreeSet<&'a UserId> {
    seat_ranking(model, tenant, rules, members).into_iter().take(tenant.seats_total as usize).map(|(_, _, id)| id).collect()
}

/// One member's desired access, with the reason for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredMember {
    pub access: MemberAccess,
    pub rule: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredAccess {
    pub tenant: TenantAccess,
    pub members: BTreeMap<UserId, DesiredMember>,
}

pub fn desired_access(model: &LicensingModel, licenses: &[License], members: &[Member]) -> DesiredAccess {
    desired_access_with_rules(model, licenses, &TenantRules::default(), members)
}

pub fn desired_access_with_rules(model: &LicensingModel, licenses: &[License], rules: &TenantRules, members: &[Member]) -> DesiredAccess {
    let tenant = effective_license(model, licenses);
    let holders = seat_holders(model, &tenant, rules, members);
    let members = members
        .iter()
        .map(|m| {
            let desired = if m.removed {
                DesiredMember { access: MemberAccess::without_access(MemberStatus::Deprovisioned), rule: "member removed by the app".into() }
            } else {
                match tenant.policy {
                    MemberPolicy::Revoked => DesiredMember {
                        access: MemberAccess::without_access(MemberStatus::Deprovisioned),
                        rule: format!("tenant access revoked: {}", tenant.rule),
                    },
                    MemberPolicy::Suspended => DesiredMember {
                        access: MemberAccess::without_access(MemberStatus::Suspended),
                        rule: format!("tenant suspended: {}", tenant.rule),
                    },
                    MemberPolicy::Seated if holders.contains(&m.user_id) => {
                        let (roles, fired) = roles_for(model, &tenant.tier, m, rules);
                        let fired = if fired.is_empty() { "default_roles".to_string() } else { fired.join(", ") };
                        DesiredMember {
                            access: MemberAccess { status: MemberStatus::Active, roles, entitlements: tenant.entitlements.clone() },
                            rule: format!("seat held (within {} seats, owner/admin first, oldest first); roles from [{fired}]", tenant.seats_total),
                        }
                    }
                    MemberPolicy::Seated => DesiredMember {
                        access: MemberAccess::without_access(MemberStatus::PendingSeat),
                        rule: format!("no seat: all {} seats held by owner/admin or older members", tenant.seats_total),
                    },
                }
            };
            (m.user_id.clone(), desired)
        })
        .collect();
    DesiredAccess { tenant, members }
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
        let delta: i64 = self
            .member_changes
            .iter()
            .map(|c| i64::from(c.after.holds_seat()) - i64::from(c.before.holds_seat()))
            .sum();
        u32::try_from(i64::from(used_before) + delta).unwrap_or(0)
    }
}

pub fn plan(
    tenant_id: &TenantId,
    desired: DesiredAccess,
    actual_tenant: Option<&TenantAccess>,
    actual_members: &BTreeMap<UserId, MemberAccess>,
) -> Plan {
    let mut changes: Vec<MemberChange> = desired
        .members
        .into_iter()
        .filter_map(|(user_id, want)| {
            let before = actual_members
                .get(&user_id)
                .cloned()
                .unwrap_or_else(|| MemberAccess::without_access(MemberStatus::PendingSeat));
            (before != want.access).then_some(MemberChange { user_id, before, after: want.access, rule: want.rule })
        })
        .collect();
    let order = |c: &MemberChange| match (c.before.holds_seat(), c.after.holds_seat()) {
        (true, false) => 0,
        (false, true) => 2,
        _ => 1,
    };
    changes.sort_by(|a, b| order(a).cmp(&order(b)).then_with(|| a.user_id.cmp(&b.user_id)));
    Plan {
        tenant_id: tenant_id.clone(),
        tenant_before: actual_tenant.cloned(),
        tenant_after: desired.tenant,
        member_changes: changes,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::ids::LicenseId;
    use crate::core::license::{LicenseStatus, Source};
    use proptest::prelude::*;

    pub(crate) fn member(id: &str, seq: u64, groups: &[&str]) -> Member {
        Member {
            user_id: UserId::parse(id).unwrap(),
            email: format!("{id}@example.com"),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            attributes: BTreeMap::new(),
            seq,
            removed: false,
        }
    }

    fn license(tier: &str, seats: u32, status: LicenseStatus) -> License {
        crate::core::license::tests::lic("sub_1", Source::Stripe, tier, seats, status, 1)
    }

    fn statuses(d: &DesiredAccess) -> Vec<(String, MemberStatus)> {
        d.members.iter().map(|(k, v)| (k.to_string(), v.access.status)).collect()
    }

    #[test]
    fn seats_go_to_admins_then_oldest() {
        let m = LicensingModel::default_model();
        let members = vec![member("a", 1, &[]), member("b", 2, &[]), member("c", 3, &["admins"]), member("d", 4, &[])];
        let d = desired_access(&m, &[license("team", 2, LicenseStatus::Active)], &members);
        assert_eq!(
            statuses(&d),
            vec![
                ("a".into(), MemberStatus::Active),
                ("b".into(), MemberStatus::PendingSeat),
                ("c".into(), MemberStatus::Active),
                ("d".into(), MemberStatus::PendingSeat)
            ]
        );
        assert!(d.members[&UserId::parse("c").unwrap()].access.roles.contains("admin"));
        assert!(d.members[&UserId::parse("b").unwrap()].access.roles.is_empty());
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
    fn suspended_and_removed_members_lose_everything() {
        let m = LicensingModel::default_model();
        let mut members = vec![member("a", 1, &[]), member("b", 2, &[])];
        members[1].removed = true;
        let d = desired_access(&m, &[license("team", 5, LicenseStatus::Suspended)], &members);
        assert_eq!(statuses(&d), vec![("a".into(), MemberStatus::Suspended), ("b".into(), MemberStatus::Deprovisioned)]);
        assert!(d.members.values().all(|v| v.access.roles.is_empty() && v.access.entitlements.is_empty()));
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
        let members = vec![member("a", 1, &[]), member("b", 2, &[]), member("c", 3, &["admins"])];
        let d = desired_access(&m, &[license("team", 2, LicenseStatus::Active)], &members);
        // Actual: a and b hold seats, c (an admin) waits.
        let mut actual = BTreeMap::new();
        for id in ["a", "b"] {
            actual.insert(UserId::parse(id).unwrap(), d.members[&UserId::parse("a").unwrap()].access.clone());
        }
        actual.insert(UserId::parse("c").unwrap(), MemberAccess::without_access(MemberStatus::PendingSeat));
        let p = plan(&t, d.clone(), Some(&d.tenant), &actual);
        let order: Vec<_> = p.member_changes.iter().map(|c| (c.user_id.to_string(), c.after.status)).collect();
        assert_eq!(order, vec![("b".into(), MemberStatus::PendingSeat), ("c".into(), MemberStatus::Active)]);
        assert_eq!(p.seats_used_after(2), 2);
    }

    fn arb_members() -> impl Strategy<Value = Vec<Member>> {
        prop::collection::vec((0u8..6, any::<bool>(), any::<bool>()), 0..40).prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(i, (g, removed, contractor))| {
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
                    m
                })
                .collect()
        })
    }

    fn arb_licenses() -> impl Strategy<Value = Vec<License>> {
        let tiers = prop::sample::select(vec!["free", "team", "business", "enterprise"]);
        let statuses = prop::sample::select(vec![
            LicenseStatus::Trialing,
            LicenseStatus::Active,
            LicenseStatus::PastDue,
            LicenseStatus::Suspended,
            LicenseStatus::Expired,
            LicenseStatus::Canceled,
        ]);
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
            let d = desired_access(&m, &licenses, &members);
            let active = d.members.values().filter(|v| v.access.holds_seat()).count();
            prop_assert!(active <= d.tenant.seats_total as usize);
            // Every seat is used while someone waits for one.
            let waiting = d.members.values().filter(|v| v.access.status == MemberStatus::PendingSeat).count();
            prop_assert!(waiting == 0 || active == d.tenant.seats_total as usize);
        }

        #[test]
        fn desired_access_ignores_input_order(licenses in arb_licenses(), members in arb_members(), seed in any::<u64>()) {
            let m = LicensingModel::default_model();
            let d1 = desired_access(&m, &licenses, &members);
            let mut l2 = licenses.clone();
            let mut m2 = members.clone();
            // A deterministic shuffle from the seed.
            let n = l2.len().max(1);
            l2.rotate_left((seed as usize) % n);
            l2.reverse();
            let k = m2.len().max(1);
            m2.rotate_left((seed as usize / 7) % k);
            m2.reverse();
            prop_assert_eq!(d1, desired_access(&m, &l2, &m2));
        }

        #[test]
        fn privileged_members_keep_seats_while_others_hold_one(licenses in arb_licenses(), members in arb_members()) {
            let m = LicensingModel::default_model();
            let d = desired_access(&m, &licenses, &members);
            let privileged_waiting = members.iter().any(|mem| {
                d.members[&mem.user_id].access.status == MemberStatus::PendingSeat
                    && roles_for(&m, &d.tenant.tier, mem, &TenantRules::default()).0.iter().any(|r| m.is_privileged(r))
            });
            let unprivileged_seated = members.iter().any(|mem| {
                d.members[&mem.user_id].access.holds_seat()
                    && !roles_for(&m, &d.tenant.tier, mem, &TenantRules::default()).0.iter().any(|r| m.is_privileged(r))
            });
            prop_assert!(!(privileged_waiting && unprivileged_seated));
        }

        #[test]
        fn newer_members_never_hold_a_seat_an_older_peer_waits_for(licenses in arb_licenses(), members in arb_members()) {
            let m = LicensingModel::default_model();
            let d = desired_access(&m, &licenses, &members);
            let priv_of = |mem: &Member| roles_for(&m, &d.tenant.tier, mem, &TenantRules::default()).0.iter().any(|r| m.is_privileged(r));
            for a in &members {
                for b in &members {
                    if a.seq < b.seq && priv_of(a) == priv_of(b)
                        && d.members[&a.user_id].access.status == MemberStatus::PendingSeat {
                        prop_assert!(!d.members[&b.user_id].access.holds_seat());
                    }
                }
            }
        }

        #[test]
        fn applying_the_plan_reaches_a_fixpoint(licenses in arb_licenses(), members in arb_members()) {
            let m = LicensingModel::default_model();
            let t = TenantId::parse("t1").unwrap();
            let d = desired_access(&m, &licenses, &members);
            let p = plan(&t, d.clone(), None, &BTreeMap::new());
            let applied: BTreeMap<UserId, MemberAccess> = members.iter().map(|mem| {
                let after = p.member_changes.iter().find(|c| c.user_id == mem.user_id)
                    .map(|c| c.after.clone())
                    .unwrap_or_else(|| MemberAccess::without_access(MemberStatus::PendingSeat));
                (mem.user_id.clone(), after)
            }).collect();
            let again = plan(&t, desired_access(&m, &licenses, &members), Some(&p.tenant_after), &applied);
            prop_assert!(again.is_empty());
        }
    }
}
