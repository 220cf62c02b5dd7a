//! Why a member has the access it has: the licenses and contracts that make
//! the tenant's effective license, the seat ranking that gave or withheld
//! its seat, and each rule that granted a role. Computed from the same
//! state and the same functions as a reconcile, so the explanation is the
//! decision, not a description of it.

use crate::core::access::{desired_access_with_rules, privileged, role_grants, seat_decisions, seat_rule, MemberAccess};
use crate::core::ids::{TenantId, UserId};
use crate::core::license::{effective_license, Source};
use crate::core::model::LicensingModel;
use crate::core::seats::{micros, Pin, Verdict};
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
    /// The licensing model: the version the tenant follows (whose rules
    /// `desired` is decided by) and the one the member's access was decided under.
    pub model: ModelExplanation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelExplanation {
    pub tenant_follows: crate::core::ids::ModelVersion,
    pub member_decided_under: crate::core::ids::ModelVersion,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pin: Option<crate::core::tenant::ModelPin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LicenseExplanation {
    pub tier: String,
    pub status: crate::core::license::TenantStatus,
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
    pub status: crate::core::license::LicenseStatus,
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
    /// Where the member stands: `holds` a seat, `cut` (holds one the
    /// seats no longer cover: the next reconcile takes it), `granted`
    /// (first in line for a free seat: the next reconcile gives it),
    /// `waiting` in line, `released` by the tenant's admin (out of the
    /// line), or `none` (removed, or the tenant is not seated).
    pub standing: &'static str,
    /// 1-based place: among the holders in the seat order (the last lose
    /// their seats first on a cut) for `holds` and `cut`; in the line (1 is
    /// next) for `granted` and `waiting`.
    pub rank: Option<usize>,
    pub seats_total: u32,
    /// Ordered first as an owner or admin.
    pub privileged: bool,
    /// Given (`hold: true`) or released (`hold: false`) by the tenant's admin.
    pub pin: Option<Pin>,
    /// When the member got its seat (holding) or joined the line (waiting).
    pub since: Option<DateTime<Utc>>,
    /// The member's place in the tenant's creation order.
    pub creation_order: u64,
    pub holds_seat: bool,
    /// Why, in words.
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleGrant {
    pub role: String,
    pub rule: String,
}

/// The explanation for `user` of the tenant as of `now`, or `None` when it is not a member.
pub fn explain(model: &LicensingModel, tenant_id: &TenantId, state: &TenantState, user: &UserId, now: DateTime<Utc>) -> Option<Explanation> {
    let item = state.members.iter().find(|m| &m.member.user_id == user)?;
    let rules = state.rules();
    let tenant = effective_license(model, &state.licenses);
    let desired = desired_access_with_rules(model, &state.licenses, &rules, &state.members, micros(now)).members.remove(user)?;
    let verdict = seat_decisions(model, &tenant, &rules, &state.members, micros(now)).remove(user).map(|(v, _)| v);
    let (standing, rank) = match verdict {
        Some(Verdict::Keeps { place }) => ("holds", Some(place)),
        Some(Verdict::Cut { place, .. }) => ("cut", Some(place)),
        Some(Verdict::Granted { place }) => ("granted", Some(place)),
        Some(Verdict::Waits { place }) => ("waiting", Some(place)),
        Some(Verdict::Released) => ("released", None),
        None => ("none", None),
    };
    let why = match &verdict {
        Some(v) => seat_rule(v, &item.seat, tenant.seats_total),
        None => desired.rule.clone(),
    };
    let roles = if desired.access.holds_seat() { role_grants(model, &tenant.tier, &item.member, &rules).into_iter().map(|(role, rule)| RoleGrant { role, rule }).collect() } else { Vec::new() };
    Some(Explanation {
        tenant_id: tenant_id.clone(),
        user_id: user.clone(),
        // (A removed member keeps the version its removal was decided under.)
        in_sync: item.access == desired.access && (item.model_version == model.version || item.member.removed),
        access: item.access.clone(),
        rule: desired.rule,
        license: LicenseExplanation {
            tier: tenant.tier.clone(),
            status: tenant.status,
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
                    status: l.status,
                    expires_at: l.expires_at,
                    grants_access: l.status.grants_access() && model.tier_rank(&l.tier).is_some(),
                    last_event_id: l.last_event_id.to_string(),
                })
                .collect(),
            contracts: state.contracts.iter().map(|(d, v)| ContractVersion { contract_id: d.contract_id.to_string(), version: *v }).collect(),
        },
        seat: SeatExplanation {
            standing,
            rank,
            seats_total: tenant.seats_total,
            privileged: privileged(model, &tenant, &rules, &item.member),
            pin: item.seat.pin.clone(),
            since: DateTime::from_timestamp_micros(i64::try_from(item.seat.since).unwrap_or(0)),
            creation_order: item.member.seq,
            holds_seat: desired.access.holds_seat(),
            why,
        },
        desired: desired.access,
        roles,
        model: ModelExplanation { tenant_follows: state.meta.model_version.clone(), member_decided_under: item.model_version.clone(), pin: state.meta.model_pin.clone() },
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
        MemberItem::new(crate::core::access::tests::member(id, seq, groups), MemberAccess::without_access(status), &LicensingModel::default_model())
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn state(tier: &str, seats: u32, members: Vec<MemberItem>) -> TenantState {
        TenantState {
            meta: TenantMeta {
                access: None,
                seats_used: 0,
                seats_pending: 0,
                head: ChainHead::genesis(),
                rules: TenantRules::default(),
                licensed: true,
                walk: None,
                walk_goal: None,
                license_file_seconds: None,
                continues: false,
                model_version: LicensingModel::default_model().version,
                model_pin: None,
                model_waiting: None,
            },
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
        let cal = explain(&m, &t, &s, &UserId::parse("cal").unwrap(), now()).unwrap();
        assert_eq!((cal.seat.standing, cal.seat.rank, cal.seat.privileged, cal.seat.holds_seat, cal.seat.seats_total), ("holds", Some(1), true, true, 2));
        let grants: Vec<(&str, &str)> = cal.roles.iter().map(|g| (g.role.as_str(), g.rule.as_str())).collect();
        assert_eq!(grants, [("admin", "admins"), ("member", "default_roles")]);
        assert_eq!(cal.license.licenses.iter().map(|l| (l.license_id.as_str(), l.grants_access)).collect::<Vec<_>>(), [("sub_1", true), ("old", false)]);
        assert_eq!((cal.license.tier.as_str(), cal.license.seats_total), ("business", 2));
        assert!(!cal.in_sync, "stored without roles, desired with: {cal:?}");

        // Three hold two seats: bob, the most recently seated who is not an
        // admin, is third in the holders' order: the next reconcile takes
        // his seat, and his stored access (active) is not what the rules give.
        let bob = explain(&m, &t, &s, &UserId::parse("bob").unwrap(), now()).unwrap();
        assert_eq!((bob.seat.standing, bob.seat.rank, bob.seat.privileged, bob.seat.holds_seat), ("cut", Some(3), false, false));
        assert_eq!(bob.desired.status, MemberStatus::PendingSeat);
        assert!(bob.roles.is_empty() && !bob.in_sync);
        assert!(bob.rule.contains("seat cut"), "{}", bob.rule);

        // A member who waits, and one the tenant's admin released.
        let mut members = s.members.clone();
        members.push(item("dan", 4, &[], MemberStatus::PendingSeat));
        let mut eve = item("eve", 5, &[], MemberStatus::PendingSeat);
        eve.seat.pin = Some(Pin { hold: false, by: "ann".into(), at: "2026-12-01T00:00:00Z".into() });
        members.push(eve);
        let s2 = state("business", 3, members);
        let dan = explain(&m, &t, &s2, &UserId::parse("dan").unwrap(), now()).unwrap();
        assert_eq!((dan.seat.standing, dan.seat.rank, dan.seat.holds_seat), ("waiting", Some(1), false));
        assert_eq!(dan.seat.since, DateTime::from_timestamp_micros(4));
        let eve = explain(&m, &t, &s2, &UserId::parse("eve").unwrap(), now()).unwrap();
        assert_eq!((eve.seat.standing, eve.seat.rank), ("released", None));
        assert_eq!(eve.seat.why, "seat released by ann: waits until given one");

        // With three seats bob is seated, and billing-admin comes from the
        // finance rule (business tier and up).
        let s = state("business", 3, s.members);
        let bob = explain(&m, &t, &s, &UserId::parse("bob").unwrap(), now()).unwrap();
        assert!(bob.roles.iter().any(|g| g.role == "billing-admin" && g.rule == "finance-billing-admin"), "{:?}", bob.roles);
        let s = state("team", 3, s.members);
        let bob = explain(&m, &t, &s, &UserId::parse("bob").unwrap(), now()).unwrap();
        assert!(!bob.roles.iter().any(|g| g.role == "billing-admin"), "not below business: {:?}", bob.roles);
        assert!(explain(&m, &t, &s, &UserId::parse("nobody").unwrap(), now()).is_none());
    }
}
