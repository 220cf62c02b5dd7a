//! Why a member has the access it has: the licenses and contracts that make
//! the tenant's effective license, the seat ranking that gave or withheld
//! its seat, and each rule that granted a role. Computed from the same
//! state and the same functions as a reconcile, so the explanation is the
//! decision, not a description of it.

use crate::core::access::{desired_access_with_rules, role_grants, seat_rank, Member, MemberAccess};
use crate::core::ids::{TenantId, UserId};
use crate::core::license::{effective_license, Source};
use crate::core::model::LicensingModel;
use crate::core::tenant::TenantState;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    /// The access held now (what the app reads).
    pub access: MemberAccess,
    /// The access the rules give now: differs from `access` only until the
    /// next reconcile applies it.
    pub desired: MemberAccess,
    pub in_sync: bool,
    /// The decision, in words (as the audit records it).
    pub rule: String,
    pub license: LicenseExplanation,
    pub seat: SeatExplanation,
    pub roles: Vec<RoleGrant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LicenseExplanation {
    pub tier: String,
    pub status: String,
    pub seats_total: u32,
    pub expires_at: Option<DateTime<Utc>>,
    /// Which licenses and which model rule made it.
    pub rule: String,
    pub licenses: Vec<LicenseSource>,
    /// The tenant's contracts and their current versions (a contract's
    /// license is among `licenses`, source `contract`).
    pub contracts: Vec<ContractVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LicenseSource {
    pub source: Source,
    pub license_id: String,
    pub tier: String,
    pub seats: u32,
    pub addons: BTreeSet<String>,
    pub status: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it counts towards the effective license (its status grants
    /// access and the model knows its tier).
    pub grants_access: bool,
    pub last_event_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContractVersion {
    pub contract_id: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SeatExplanation {
    /// 1-based position in the ranking (owner/admin first, then creation
    /// order); `None` for a removed member.
    pub rank: Option<usize>,
    pub seats_total: u32,
    /// Ranked first as an owner or admin.
    pub privileged: bool,
    /// The member's place in the tenant's creation order.
    pub creation_order: u64,
    pub holds_seat: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleGrant {
    pub role: String,
    pub rule: String,
}

/// The explanation for `user` of the tenant, or `None` when it is not a member.
pub fn explain(model: &LicensingModel, tenant_id: &TenantId, state: &TenantState, user: &UserId) -> Option<Explanation> {
    let item = state.members.iter().find(|m| &m.member.user_id == user)?;
    let rules = state.rules();
    let members: Vec<Member> = state.members.iter().map(|m| m.member.clone()).collect();
    let tenant = effective_license(model, &state.licenses);
    let desired = desired_access_with_rules(model, &state.licenses, &rules, &members).members.remove(user)?;
    let rank = seat_rank(model, &tenant, &rules, &members, user);
    let roles = if desired.access.holds_seat() {
        role_grants(model, &tenant.tier, &item.member, &rules).into_iter().map(|(role, rule)| RoleGrant { role, rule }).collect()
    } else {
        Vec::new()
    };
    Some(Explanation {
        tenant_id: tenant_id.clone(),
        user_id: user.clone(),
        in_sync: item.access == desired.access,
        access: item.access.clone(),
        rule: desired.rule,
        license: LicenseExplanation {
            tier: tenant.tier.clone(),
            status: tenant.status.clone(),
            seats_total: tenant.seats_total,
            expires_at: tenant.expires_at,
            rule: tenant.rule.clone(),
            licenses: state
                .licenses
                .iter()
                .map(|l| LicenseSource {
                    source: l.source,
                    license_id: l.license_id.to_string(),
                    tier: l.tier.clone(),
                    seats: l.seats,
                    addons: l.addons.clone(),
                    status: l.status.as_str().into(),
                    expires_at: l.expires_at,
                    grants_access: l.status.grants_access() && model.tier_rank(&l.tier).is_some(),
                    last_event_id: l.last_event_id.to_string(),
                })
                .collect(),
            contracts: state.contracts.iter().map(|(d, v)| ContractVersion { contract_id: d.contract_id.to_string(), version: *v }).collect(),
        },
        seat: SeatExplanation {
            rank: rank.map(|(r, _)| r),
            seats_total: tenant.seats_total,
            privileged: rank.is_some_and(|(_, p)| p),
            creation_order: item.member.seq,
            holds_seat: desired.access.holds_seat(),
        },
        desired: desired.access,
        roles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::access::{MemberStatus, TenantRules};
    use crate::core::audit::ChainHead;
    use crate::core::license::LicenseStatus;
    use crate::core::tenant::{MemberItem, TenantMeta};

    fn item(id: &str, seq: u64, groups: &[&str], status: MemberStatus) -> MemberItem {
        MemberItem { member: crate::core::access::tests::member(id, seq, groups), access: MemberAccess::without_access(status) }
    }

    fn state(tier: &str, seats: u32, members: Vec<MemberItem>) -> TenantState {
        TenantState {
            meta: TenantMeta { access: None, seats_used: 0, seats_pending: 0, head: ChainHead::genesis(), rules: TenantRules::default(), licensed: true },
            licenses: vec![
                crate::core::license::tests::lic("sub_1", Source::Stripe, tier, seats, LicenseStatus::Active, 1),
                crate::core::license::tests::lic("old", Source::Crm, tier, 50, LicenseStatus::Expired, 1),
            ],
            members,
            contracts: vec![],
            targets: vec![],
            pending_audit: vec![],
        }
    }

    #[test]
    fn an_explanation_names_the_licenses_the_seat_ranking_and_each_rule_that_granted_a_role() {
        let m = LicensingModel::default_model();
        let t = TenantId::parse("t1").unwrap();
        // Two seats: the admin first, then the oldest; bob (finance) is third.
        let s = state("business", 2, vec![item("ann", 1, &[], MemberStatus::Active), item("bob", 2, &["finance"], MemberStatus::Active), item("cal", 3, &["admins"], MemberStatus::Active)]);
        let cal = explain(&m, &t, &s, &UserId::parse("cal").unwrap()).unwrap();
        assert_eq!((cal.seat.rank, cal.seat.privileged, cal.seat.holds_seat, cal.seat.seats_total), (Some(1), true, true, 2));
        let grants: Vec<(&str, &str)> = cal.roles.iter().map(|g| (g.role.as_str(), g.rule.as_str())).collect();
        assert_eq!(grants, [("admin", "admins"), ("member", "default_roles")]);
        assert_eq!(cal.license.licenses.iter().map(|l| (l.license_id.as_str(), l.grants_access)).collect::<Vec<_>>(), [("sub_1", true), ("old", false)]);
        assert_eq!((cal.license.tier.as_str(), cal.license.seats_total), ("business", 2));
        assert!(!cal.in_sync, "stored without roles, desired with: {cal:?}");

        // bob ranks third of two seats: no seat, no roles, and his stored
        // access (active) is not what the rules give (the next reconcile fixes it).
        let bob = explain(&m, &t, &s, &UserId::parse("bob").unwrap()).unwrap();
        assert_eq!((bob.seat.rank, bob.seat.privileged, bob.seat.holds_seat), (Some(3), false, false));
        assert_eq!(bob.desired.status, MemberStatus::PendingSeat);
        assert!(bob.roles.is_empty() && !bob.in_sync);
        assert!(bob.rule.contains("no seat"), "{}", bob.rule);

        // With three seats bob is seated, and billing-admin comes from the
        // finance rule (business tier and up).
        let s = state("business", 3, s.members);
        let bob = explain(&m, &t, &s, &UserId::parse("bob").unwrap()).unwrap();
        assert!(bob.roles.iter().any(|g| g.role == "billing-admin" && g.rule == "finance-billing-admin"), "{:?}", bob.roles);
        let s = state("team", 3, s.members);
        let bob = explain(&m, &t, &s, &UserId::parse("bob").unwrap()).unwrap();
        assert!(!bob.roles.iter().any(|g| g.role == "billing-admin"), "not below business: {:?}", bob.roles);
        assert!(explain(&m, &t, &s, &UserId::parse("nobody").unwrap()).is_none());
    }
}
