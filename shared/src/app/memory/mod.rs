//! The ports in memory (feature `memory`, and the crate's own tests): the
//! same meaning as the DynamoDB adapter (each write's condition, the chain
//! head as the lock, all or nothing per change), so that the use cases can
//! be tested in milliseconds: seat claims racing reconciles, review and
//! reversal, crashes between chunks ([`Crashing`] around any store: a port
//! that fails its Nth commit).
//!
//! [`Memory`] holds every port's state in one database ([`changes`]: how a
//! change lands, each write on its condition); the ports are implemented
//! one group a file: [`tenants`] (and members' cached tokens), [`directory`],
//! [`contracts`], [`targets`] (and their tokens), [`queues`] (the due index
//! and the queues), [`models`] (the rules and the registry), [`portal`] (links and sessions). [`billing`]:
//! Stripe's subscriptions; [`crashing`]: a store that fails its Nth commit.

mod billing;
mod changes;
mod contracts;
mod crashing;
mod directory;
mod models;
mod portal;
mod queues;
mod targets;
mod tenants;

pub use billing::StripeAccount;
pub use crashing::{is_injected_crash, Crashing};

use crate::core::audit::{PendingRecord, StoredRecord};
use crate::core::contract::Amendment;
use crate::core::ids::{AmendmentId, ContractId, EventId, LicenseId, ModelVersion, RunId, TargetId, TenantId, UserId};
use crate::core::license::{License, LicenseChange, LicenseStatus, LicenseUpdate, Source};
use crate::core::model::LicensingModel;
use crate::core::provider::connection::Connection;
use crate::core::provider::{DirGroup, Edge};
use crate::core::reconcile::ReconcileRequest;
use crate::core::scim::{Pending, Target};
use crate::core::tenant::{email_key, MemberItem, TenantMeta};
use crate::core::versions::{Outcome, PreviewPage, Registered, RunState, Work};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Db {
    meta: BTreeMap<TenantId, TenantMeta>,
    licenses: BTreeMap<(TenantId, Source, String), License>,
    members: BTreeMap<(TenantId, UserId), MemberItem>,
    events: BTreeMap<(TenantId, Source, EventId), String>,
    parked: BTreeMap<(Source, EventId), (Option<TenantId>, String)>,
    emails: BTreeMap<(TenantId, String), UserId>,
    deliveries: BTreeMap<(TenantId, TargetId, UserId), Pending>,
    targets: BTreeMap<(TenantId, TargetId), Target>,
    contracts: BTreeMap<ContractId, (TenantId, String)>,
    documents: BTreeMap<ContractId, (u64, Value)>,
    versions: BTreeMap<(ContractId, u64), Value>,
    amendments: BTreeMap<(ContractId, AmendmentId), (Amendment, String)>,
    audit: BTreeMap<TenantId, Vec<StoredRecord>>,
    /// Audit records not yet chained, by tenant, in key order.
    pending: BTreeMap<TenantId, BTreeMap<String, PendingRecord>>,
    /// Event items, in the order written (what the table's stream carries).
    stream: Vec<Value>,
    barriers: BTreeMap<TenantId, String>,
    wakes: BTreeMap<TenantId, u64>,
    connections: BTreeMap<(TenantId, String), Connection>,
    user_names: BTreeMap<(TenantId, String), UserId>,
    groups: BTreeMap<(TenantId, String), DirGroup>,
    group_names: BTreeMap<(TenantId, String), String>,
    edges: BTreeMap<(TenantId, String, UserId), Edge>,
    tokens: BTreeMap<(TenantId, UserId), crate::core::token::CachedToken>,
    /// When each license falls due (as its tenant's model said when it was written).
    license_due: BTreeMap<(TenantId, Source, String), DateTime<Utc>>,
    /// When each tenant's model item falls due (a pin's end, a waiting move).
    model_due: BTreeMap<TenantId, DateTime<Utc>>,
    /// The registered model versions, in the order of registration.
    registry: Vec<Registered>,
    backfilled: bool,
    runs: BTreeMap<RunId, RunState>,
    outcomes: BTreeMap<(RunId, TenantId), Outcome>,
    preview_pages: BTreeMap<(RunId, TenantId, u32), PreviewPage>,
    push_stats: BTreeMap<(TenantId, String), crate::core::provider::connection::PushStats>,
    portal_links: BTreeMap<String, crate::core::portal::Link>,
    /// Links made per tenant and minute (the rate limit's counters).
    portal_minutes: BTreeMap<(TenantId, i64), u32>,
    portal_sessions: BTreeMap<String, crate::core::portal::Session>,
}

impl Db {
    /// The member a userName names: a pushed User's claim, else a member's email.
    fn name_holder(&self, tenant: &TenantId, user_name: &str) -> Option<UserId> {
        self.user_names.get(&(tenant.clone(), user_name.to_lowercase())).or_else(|| self.emails.get(&(tenant.clone(), email_key(user_name)))).cloned()
    }
}

/// Every port of the app in memory, sharing one database.
#[derive(Clone)]
pub struct Memory {
    db: Arc<Mutex<Db>>,
    /// The deployed model: its version's rules before it is registered.
    model: Arc<LicensingModel>,
    /// Registered versions' rules, parsed once.
    parsed: Arc<Mutex<BTreeMap<ModelVersion, Arc<LicensingModel>>>>,
    /// The work messages sent (the rollouts' and previews' queue).
    pub work_sent: Arc<Mutex<Vec<Work>>>,
    pub commits: Arc<AtomicUsize>,
    /// The most pending audit records one read has returned (a head's or
    /// the integrator's): what a backlog costs a reader's memory.
    pub largest_pending_read: Arc<AtomicUsize>,
    /// What was queued.
    pub queued: Arc<Mutex<Vec<(ReconcileRequest, String)>>>,
    tokens: Arc<Mutex<BTreeMap<(TenantId, TargetId), String>>>,
}

impl Memory {
    /// The events written with their changes, in order (the stream).
    pub fn stream(&self) -> Vec<Value> {
        self.db.lock().unwrap().stream.clone()
    }

    /// `model` is the deployed one: what every tenant follows until
    /// another version is registered.
    pub fn new(model: Arc<LicensingModel>) -> Self {
        Memory {
            db: Arc::default(),
            model,
            parsed: Arc::default(),
            work_sent: Arc::default(),
            commits: Arc::default(),
            largest_pending_read: Arc::default(),
            queued: Arc::default(),
            tokens: Arc::default(),
        }
    }
}

/// Test data: the CRM record `crm-main` of a tenant, on the default model's
/// `business` tier with `seats` seats, as its `version`th change.
pub fn crm_change(tenant: &TenantId, version: i64, seats: u32) -> LicenseChange {
    LicenseChange {
        event_id: EventId::parse(format!("crm-{tenant}-{version}")).unwrap(),
        tenant_id: tenant.clone(),
        license_id: LicenseId::parse("crm-main").unwrap(),
        source: Source::Crm,
        source_version: version,
        update: LicenseUpdate { tier: "business".into(), seats, addons: BTreeSet::new(), status: LicenseStatus::Active, starts_at: None, expires_at: None },
    }
}
