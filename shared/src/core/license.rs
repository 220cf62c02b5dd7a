//! Licenses: what one source grants a tenant, how a change from a source is
//! ordered against what we hold, and the tenant's effective license.

use crate::core::ids::{EventId, LicenseId, TenantId};
use crate::core::model::{EndAction, Entitlements, LicensingModel};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Stripe,
    Crm,
    Contract,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Stripe => "stripe",
            Source::Crm => "crm",
            Source::Contract => "contract",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LicenseStatus {
    Trialing,
    Active,
    PastDue,
    Suspended,
    Expired,
    Canceled,
}

impl LicenseStatus {
    /// Trialing, active and past-due licenses grant access (past-due grace is
    /// the expiry sweep's business).
    pub fn grants_access(self) -> bool {
        matches!(self, LicenseStatus::Trialing | LicenseStatus::Active | LicenseStatus::PastDue)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LicenseStatus::Trialing => "trialing",
            LicenseStatus::Active => "active",
            LicenseStatus::PastDue => "past_due",
            LicenseStatus::Suspended => "suspended",
            LicenseStatus::Expired => "expired",
            LicenseStatus::Canceled => "canceled",
        }
    }

    /// Among granting statuses, which one describes the tenant best.
    fn standing(self) -> u8 {
        match self {
            LicenseStatus::Active => 3,
            LicenseStatus::Trialing => 2,
            LicenseStatus::PastDue => 1,
            _ => 0,
        }
    }
}

/// How a tenant stands, as its view, its license file and its events say:
/// the best status of its granting licenses, `grace` while every one of
/// them is in its grace period, or `none` with no license recorded.
/// Serialised as the license statuses are (`active`, `past_due`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    None,
    Trialing,
    Active,
    PastDue,
    Grace,
    Suspended,
    Expired,
    Canceled,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::None => "none",
            TenantStatus::Grace => "grace",
            TenantStatus::Trialing => LicenseStatus::Trialing.as_str(),
            TenantStatus::Active => LicenseStatus::Active.as_str(),
            TenantStatus::PastDue => LicenseStatus::PastDue.as_str(),
            TenantStatus::Suspended => LicenseStatus::Suspended.as_str(),
            TenantStatus::Expired => LicenseStatus::Expired.as_str(),
            TenantStatus::Canceled => LicenseStatus::Canceled.as_str(),
        }
    }
}

impl From<LicenseStatus> for TenantStatus {
    fn from(s: LicenseStatus) -> Self {
        match s {
            LicenseStatus::Trialing => TenantStatus::Trialing,
            LicenseStatus::Active => TenantStatus::Active,
            LicenseStatus::PastDue => TenantStatus::PastDue,
            LicenseStatus::Suspended => TenantStatus::Suspended,
            LicenseStatus::Expired => TenantStatus::Expired,
            LicenseStatus::Canceled => TenantStatus::Canceled,
        }
    }
}

impl std::fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One right of a tenant, from one source, as last recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct License {
    pub license_id: LicenseId,
    pub source: Source,
    pub tier: String,
    pub seats: u32,
    pub addons: BTreeSet<String>,
    pub status: LicenseStatus,
    pub starts_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The order of changes from this license's source: a change with a
    /// version not above this one is stale. CRM: the record's sequence.
    /// Stripe: when the state was read from Stripe's API (milliseconds),
    /// under the tenant's lock (see `app::billing`).
    pub source_version: i64,
    pub last_event_id: EventId,
    /// Where the license stands in time (grace, past due, notices sent):
    /// kept by the expiry sweep, reset by a renewal.
    #[serde(default)]
    pub timeline: Timeline,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// Set when the license passed its expiry: access is kept until then.
    pub grace_until: Option<DateTime<Utc>>,
    /// When the license became past due (its past-due grace runs from here).
    pub past_due_since: Option<DateTime<Utc>>,
    /// Expiring-soon thresholds (days) already handled for the current expiry.
    pub notices_sent: BTreeSet<u32>,
}

/// What a change says about the license: the whole license as the source
/// now sees it (Stripe: as its API answered; CRM: the record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LicenseUpdate {
    pub tier: String,
    pub seats: u32,
    pub addons: BTreeSet<String>,
    pub status: LicenseStatus,
    pub starts_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl LicenseUpdate {
    /// Whether `license` already says exactly this.
    pub fn held_by(&self, license: &License) -> bool {
        let l = license;
        (&l.tier, l.seats, &l.addons, l.status, l.starts_at, l.expires_at) == (&self.tier, self.seats, &self.addons, self.status, self.starts_at, self.expires_at)
    }
}

/// A normalised license change from any source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LicenseChange {
    pub event_id: EventId,
    pub tenant_id: TenantId,
    pub license_id: LicenseId,
    pub source: Source,
    pub source_version: i64,
    pub update: LicenseUpdate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeDecision {
    /// Record this license.
    Apply(License),
    /// Older than (or as old as) what we hold: ignored, and audited as such.
    Stale { held_version: i64 },
}

/// The timeline a license keeps across a change: a new expiry (a renewal)
/// starts afresh; past-due time runs from the first past-due change.
fn timeline_after(current: Option<&License>, status: LicenseStatus, expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Timeline {
    let mut t = match current {
        Some(c) if c.expires_at == expires_at => c.timeline.clone(),
        _ => Timeline::default(),
    };
    t.past_due_since = match status {
        LicenseStatus::PastDue => current.and_then(|c| c.timeline.past_due_since).or(Some(now)),
        _ => None,
    };
    t
}

/// Source ordering: a change applies only if it is newer than what we hold,
/// so that older events never overwrite newer ones, whatever the delivery order.
pub fn decide_change(current: Option<&License>, change: &LicenseChange, now: DateTime<Utc>) -> ChangeDecision {
    if let Some(cur) = current {
        if change.source_version <= cur.source_version {
            return ChangeDecision::Stale { held_version: cur.source_version };
        }
    }
    let LicenseUpdate { tier, seats, addons, status, starts_at, expires_at } = &change.update;
    ChangeDecision::Apply(License {
        license_id: change.license_id.clone(),
        source: change.source,
        tier: tier.clone(),
        seats: *seats,
        addons: addons.clone(),
        status: *status,
        starts_at: *starts_at,
        expires_at: *expires_at,
        source_version: change.source_version,
        last_event_id: change.event_id.clone(),
        timeline: timeline_after(current, *status, *expires_at, now),
    })
}

/// How the tenant's members are treated under its effective license.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberPolicy {
    /// Seats are handed out; holders get the tier's access.
    Seated,
    /// Accounts kept, access removed.
    Suspended,
    /// Accounts deprovisioned.
    Revoked,
}

/// The tenant's effective license: highest granting tier, seats summed across
/// granting licenses, add-ons united. With nothing granting, the end action of
/// the licenses that ended decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantAccess {
    pub tier: String,
    pub status: TenantStatus,
    pub seats_total: u32,
    pub addons: BTreeSet<String>,
    pub entitlements: Entitlements,
    pub expires_at: Option<DateTime<Utc>>,
    pub policy: MemberPolicy,
    /// Why: which licenses and which model rule produced this.
    pub rule: String,
}

impl TenantAccess {
    /// Equal access, whatever the explanation: a new license version that
    /// grants the same is not an access change.
    pub fn same_access(&self, other: &TenantAccess) -> bool {
        TenantAccess { rule: String::new(), ..self.clone() } == TenantAccess { rule: String::new(), ..other.clone() }
    }
}

fn entitlements_for(model: &LicensingModel, tier: &str, addons: &BTreeSet<String>) -> Entitlements {
    let mut ents = model.tier(tier).map(|t| t.entitlements.clone()).unwrap_or_default();
    for addon in addons {
        if let Some(a) = model.addons.get(addon) {
            for (name, value) in &a.entitlements {
                ents.entry(name.clone()).and_modify(|e| *e = e.unite(*value)).or_insert(*value);
            }
        }
    }
    ents
}

pub fn effective_license(model: &LicensingModel, licenses: &[License]) -> TenantAccess {
    let granting: Vec<&License> = licenses.iter().filter(|l| l.status.grants_access() && model.tier_rank(&l.tier).is_some()).collect();
    if !granting.is_empty() {
        let top = granting.iter().max_by_key(|l| model.tier_rank(&l.tier)).expect("non-empty");
        let tier = model.tier(&top.tier).expect("filtered on known tiers");
        let summed: u64 = granting.iter().map(|l| u64::from(l.seats)).sum();
        let mut seats = u32::try_from(summed).unwrap_or(u32::MAX);
        if let Some(max) = tier.max_seats {
            seats = seats.min(max);
        }
        let addons: BTreeSet<String> = if tier.allows_addons { granting.iter().flat_map(|l| l.addons.iter().cloned()).filter(|a| model.addons.contains_key(a)).collect() } else { BTreeSet::new() };
        let status = granting.iter().map(|l| l.status).max_by_key(|s| s.standing()).expect("non-empty");
        // Access is kept in grace, but the tenant reads as being in it.
        let status = if granting.iter().all(|l| l.timeline.grace_until.is_some()) { TenantStatus::Grace } else { status.into() };
        let expires_at = if granting.iter().any(|l| l.expires_at.is_none()) { None } else { granting.iter().filter_map(|l| l.expires_at).max() };
        // Which license states (and the events that set them) this access is based on.
        let mut ids: Vec<String> = granting.iter().map(|l| format!("{}:{} as of {}", l.source.as_str(), l.license_id, l.last_event_id)).collect();
        ids.sort();
        return TenantAccess {
            entitlements: entitlements_for(model, &tier.name, &addons),
            tier: tier.name.clone(),
            status,
            seats_total: seats,
            addons,
            expires_at,
            policy: MemberPolicy::Seated,
            rule: format!("effective license: highest tier, summed seats, united add-ons of [{}]", ids.join(", ")),
        };
    }

    // Nothing grants: the most severe end action among ended licenses decides.
    let severity = |a: EndAction| match a {
        EndAction::Downgrade => 0,
        EndAction::Suspend => 1,
        EndAction::Revoke => 2,
    };
    let ended = licenses.iter().map(|l| {
        let on_end = model.on_end(l.source.as_str());
        let action = if l.status == LicenseStatus::Suspended { EndAction::Suspend } else { on_end.action };
        (l, action, on_end.tier.clone())
    });
    let decisive = ended.max_by(|(a, aa, at), (b, ba, bt)| {
        severity(*aa)
            .cmp(&severity(*ba))
            .then_with(|| at.as_deref().and_then(|t| model.tier_rank(t)).cmp(&bt.as_deref().and_then(|t| model.tier_rank(t))))
            .then_with(|| a.license_id.cmp(&b.license_id))
    });
    let lowest = &model.tiers[0];
    match decisive {
        None => TenantAccess {
            tier: lowest.name.clone(),
            status: TenantStatus::None,
            seats_total: 0,
            addons: BTreeSet::new(),
            entitlements: Entitlements::new(),
            expires_at: None,
            policy: MemberPolicy::Suspended,
            rule: "no license recorded".into(),
        },
        Some((l, EndAction::Downgrade, tier)) => {
            let tier = tier.as_deref().and_then(|t| model.tier(t)).unwrap_or(lowest);
            TenantAccess {
                tier: tier.name.clone(),
                status: l.status.into(),
                seats_total: tier.max_seats.unwrap_or(1),
                addons: BTreeSet::new(),
                entitlements: entitlements_for(model, &tier.name, &BTreeSet::new()),
                expires_at: None,
                policy: MemberPolicy::Seated,
                rule: format!("expiry.on_end.{}: downgrade to {} ({}:{} is {})", l.source.as_str(), tier.name, l.source.as_str(), l.license_id, l.status.as_str()),
            }
        }
        Some((l, action, _)) => TenantAccess {
            tier: l.tier.clone(),
            status: l.status.into(),
            seats_total: 0,
            addons: BTreeSet::new(),
            entitlements: Entitlements::new(),
            expires_at: l.expires_at,
            policy: if action == EndAction::Revoke { MemberPolicy::Revoked } else { MemberPolicy::Suspended },
            rule: format!(
                "{}: {} ({}:{} is {})",
                if l.status == LicenseStatus::Suspended { "license suspended".to_string() } else { format!("expiry.on_end.{}", l.source.as_str()) },
                if action == EndAction::Revoke { "revoke" } else { "suspend" },
                l.source.as_str(),
                l.license_id,
                l.status.as_str()
            ),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::core::model::Entitlement;

    const T0: DateTime<Utc> = DateTime::from_timestamp_nanos(1_800_000_000_000_000_000);

    pub(crate) fn lic(id: &str, source: Source, tier: &str, seats: u32, status: LicenseStatus, v: i64) -> License {
        License {
            license_id: LicenseId::parse(id).unwrap(),
            source,
            tier: tier.into(),
            seats,
            addons: BTreeSet::new(),
            status,
            starts_at: None,
            expires_at: None,
            source_version: v,
            last_event_id: EventId::parse(format!("evt_{id}_{v}")).unwrap(),
            timeline: Timeline::default(),
        }
    }

    fn change(l: &License) -> LicenseChange {
        LicenseChange {
            event_id: l.last_event_id.clone(),
            tenant_id: TenantId::parse("t1").unwrap(),
            license_id: l.license_id.clone(),
            source: l.source,
            source_version: l.source_version,
            update: LicenseUpdate { tier: l.tier.clone(), seats: l.seats, addons: l.addons.clone(), status: l.status, starts_at: l.starts_at, expires_at: l.expires_at },
        }
    }

    #[test]
    fn older_and_equal_versions_are_stale() {
        let held = lic("sub_1", Source::Stripe, "team", 5, LicenseStatus::Active, 100);
        let older = lic("sub_1", Source::Stripe, "business", 50, LicenseStatus::Active, 99);
        assert_eq!(decide_change(Some(&held), &change(&older), T0), ChangeDecision::Stale { held_version: 100 });
        assert_eq!(decide_change(Some(&held), &change(&held), T0), ChangeDecision::Stale { held_version: 100 });
        let newer = lic("sub_1", Source::Stripe, "business", 50, LicenseStatus::Active, 101);
        assert_eq!(decide_change(Some(&held), &change(&newer), T0), ChangeDecision::Apply(newer));
    }

    proptest::proptest! {
        /// Whatever order the changes of one license arrive in (with
        /// duplicates), the held license ends as the newest change says.
        #[test]
        fn any_delivery_order_ends_on_the_newest_version(
            versions in proptest::collection::btree_set(1i64..1000, 1..12),
            order in proptest::collection::vec(0usize..1000, 1..40),
        ) {
            let changes: Vec<License> = versions.iter().map(|&v| lic("sub_1", Source::Stripe, "team", v as u32, LicenseStatus::Active, v)).collect();
            // Every change delivered at least once, in an arbitrary order, some twice.
            let mut deliveries: Vec<&License> = order.iter().map(|i| &changes[i % changes.len()]).collect();
            deliveries.extend(changes.iter());
            let mut held: Option<License> = None;
            for c in deliveries {
                match decide_change(held.as_ref(), &change(c), T0) {
                    ChangeDecision::Apply(l) => {
                        proptest::prop_assert!(held.as_ref().is_none_or(|h| h.source_version < l.source_version));
                        held = Some(l);
                    }
                    ChangeDecision::Stale { held_version } => proptest::prop_assert!(held_version >= c.source_version),
                }
            }
            let newest = changes.last().unwrap();
            proptest::prop_assert_eq!(held.as_ref(), Some(newest));
        }
    }

    #[test]
    fn effective_license_takes_highest_tier_sums_seats_unites_addons() {
        let m = LicensingModel::default_model();
        let mut a = lic("sub_1", Source::Stripe, "team", 5, LicenseStatus::Active, 1);
        a.addons.insert("sso".into());
        let b = lic("crm_1", Source::Crm, "business", 10, LicenseStatus::Trialing, 1);
        let c = lic("crm_2", Source::Crm, "enterprise", 100, LicenseStatus::Canceled, 1);
        let t = effective_license(&m, &[a, b, c]);
        assert_eq!(t.tier, "business");
        assert_eq!(t.seats_total, 15);
        assert_eq!(t.status, TenantStatus::Active);
        assert_eq!(t.entitlements["sso"], Entitlement::Flag(true));
        assert_eq!(t.entitlements["projects"], Entitlement::Limit(500));
        assert_eq!(t.policy, MemberPolicy::Seated);
    }

    #[test]
    fn ended_stripe_license_downgrades_to_free_and_contract_suspends() {
        let m = LicensingModel::default_model();
        let s = lic("sub_1", Source::Stripe, "team", 5, LicenseStatus::Canceled, 1);
        let t = effective_license(&m, std::slice::from_ref(&s));
        assert_eq!((t.tier.as_str(), t.seats_total, t.status.as_str()), ("free", 1, "canceled"));
        assert_eq!(t.policy, MemberPolicy::Seated);
        let c = lic("k_1", Source::Contract, "enterprise", 50, LicenseStatus::Expired, 1);
        let t = effective_license(&m, &[s, c]);
        assert_eq!(t.policy, MemberPolicy::Suspended);
        assert!(t.entitlements.is_empty());
    }

    #[test]
    fn free_tier_caps_seats_and_drops_addons() {
        let m = LicensingModel::default_model();
        let mut a = lic("crm_1", Source::Crm, "free", 7, LicenseStatus::Active, 1);
        a.addons.insert("sso".into());
        let t = effective_license(&m, &[a]);
        assert_eq!(t.seats_total, 1);
        assert!(t.addons.is_empty());
        assert_eq!(t.entitlements["sso"], Entitlement::Flag(false));
    }
}
