//! What is stored of a tenant, as the core sees it: its head (`META`), its
//! members with their access, everything desired access depends on.

pub use crate::core::access::MemberItem;
use crate::core::access::{MemberAccess, TenantRules};
use crate::core::audit::{ChainHead, PendingRecord};
use crate::core::contract::ContractDocument;
use crate::core::license::{License, TenantAccess};
use crate::core::scim::Target;

/// The tenant's `META` item: its effective access as last provisioned, the
/// seat counters (kept by account creations and removals with conditional
/// additions, and by reconciles), and the head of its audit chain (the
/// optimistic lock every chained write of the tenant commits against).
#[derive(Debug, Clone, PartialEq)]
pub struct TenantMeta {
    /// Set by the first reconcile; `None` until then.
    pub access: Option<TenantAccess>,
    pub seats_used: u32,
    pub seats_pending: u32,
    pub head: ChainHead,
    /// The contract role grants the last reconcile applied (used at creation).
    pub rules: TenantRules,
    /// A license or contract was recorded for the tenant: it is known to
    /// accounts and targets. (A tenant whose only events were parked has an
    /// audit chain, and so a `META`, but is not known.)
    pub licensed: bool,
}

impl TenantMeta {
    /// The head of a tenant's chain, genesis for a tenant not seen yet.
    pub fn head_of(meta: Option<&TenantMeta>) -> ChainHead {
        meta.map(|m| m.head.clone()).unwrap_or_else(ChainHead::genesis)
    }
}

/// Everything of one tenant that desired access depends on.
#[derive(Debug, Clone)]
pub struct TenantState {
    pub meta: TenantMeta,
    pub licenses: Vec<License>,
    pub members: Vec<MemberItem>,
    /// Current documents of the tenant's contracts, with their versions.
    pub contracts: Vec<(ContractDocument, u64)>,
    /// SCIM targets: every member change gets a delivery record for each.
    pub targets: Vec<Target>,
    /// Audit records written without the chain's lock (account creations
    /// and removals), waiting to be chained, in order.
    pub pending_audit: Vec<PendingRecord>,
}

impl TenantState {
    pub fn rules(&self) -> TenantRules {
        crate::core::contract::merge_rules(self.contracts.iter().map(|(d, _)| d))
    }
}

/// An email as it is unique per tenant: SCIM compares `userName`s without
/// regard to case, so `ADMIN@corp.example` and `admin@corp.example` are one.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

/// The seat decision for an account created now: a seat when one is free
/// and nobody waits, otherwise it waits (see `access::status_on_create`);
/// with the access that gives and the rule that decided it. A tenant whose
/// access was never provisioned has nothing to give yet.
pub fn on_create(model: &crate::core::model::LicensingModel, meta: &TenantMeta, member: &crate::core::access::Member) -> (MemberAccess, String) {
    use crate::core::access::{access_on_create, status_on_create, MemberStatus};
    match &meta.access {
        Some(t) => {
            let status = status_on_create(t, meta.seats_used, meta.seats_pending);
            let rule = match status {
                MemberStatus::Active => format!("seat claimed at creation: {} of {} seats were in use", meta.seats_used, t.seats_total),
                MemberStatus::PendingSeat => format!("no free seat at creation: {} of {} in use, {} waiting", meta.seats_used, t.seats_total, meta.seats_pending),
                _ => format!("tenant is {}: {}", t.status, t.rule),
            };
            (access_on_create(model, t, &meta.rules, member, status), rule)
        }
        None => (MemberAccess::without_access(MemberStatus::PendingSeat), "tenant access not yet provisioned".to_string()),
    }
}
