//! The ports in memory (feature `memory`, and the crate's own tests): the
//! same meaning as the DynamoDB adapter (each write's condition, the chain
//! head as the lock, all or nothing per change), so that the use cases can
//! be tested in milliseconds: seat claims racing reconciles, review and
//! reversal, crashes between chunks ([`Crashing`] around any store: a port
//! that fails its Nth commit).

use super::ports::*;
use crate::core::access::TenantRules;
use crate::core::audit::{self, ChainHead, PendingRecord, StoredRecord};
use crate::core::contract::{Amendment, AmendmentStatus, ContractDocument, ContractState};
use crate::core::events::announced;
use crate::core::ids::{AmendmentId, ContractId, EventId, LicenseId, ModelVersion, RunId, TargetId, TenantId, UserId};
use crate::core::license::{License, LicenseChange, LicenseStatus, LicenseUpdate, Source};
use crate::core::model::LicensingModel;
use crate::core::provider::connection::Connection;
use crate::core::provider::{DirGroup, Edge};
use crate::core::reconcile::{ReconcileRequest, MAX_TRANSACTION_ITEMS};
use crate::core::scim::{Pending, Target, MAX_REFUSALS};
use crate::core::seats::{order_key_string, SeatList};
use crate::core::tenant::{email_key, MemberItem, TenantHead, TenantMeta, TenantState};
use crate::core::versions::{Outcome, OutcomeState, PreviewPage, Registered, Registration, RunState, Work};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// One outcome of [`ModelRegistry::settle`].
    fn settle_one(&self, run: &RunId, outcome: &Outcome) -> bool {
        let mut db = self.db.lock().unwrap();
        let key = (run.clone(), outcome.tenant_id.clone());
        let before = db.outcomes.get(&key).map(|o| o.state);
        if before.is_some_and(|s| s != OutcomeState::Waiting) {
            return false;
        }
        let Some(r) = db.runs.get_mut(run) else { return false };
        let c = &mut r.counts;
        if before == Some(OutcomeState::Waiting) {
            c.waiting -= 1;
        }
        match outcome.state {
            OutcomeState::Done => c.done += 1,
            OutcomeState::Waiting => c.waiting += 1,
            OutcomeState::Skipped => c.skipped += 1,
            OutcomeState::Failed => c.failed += 1,
        }
        c.members_changed += outcome.members_changed;
        if let Some(p) = &outcome.preview {
            c.preview.add(p);
        }
        db.outcomes.insert(key, outcome.clone());
        true
    }

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

    /// Applies a change; `head` is the chain's head for a chained change,
    /// `None` for one committed without the lock (its records go pending);
    /// `seq` numbers its delivery records. A contract's tenant is written
    /// with its first change.
    fn apply(db: &mut Db, deployed: &ModelVersion, tenant: &TenantId, head: Option<&ChainHead>, seq: u64, change: &Change, salt: &str) {
        let at = change.at;
        for w in &change.writes {
            match w {
                Write::EventRecord { source, event_id, body_hash, .. } => {
                    db.events.insert((tenant.clone(), *source, event_id.clone()), body_hash.clone());
                }
                Write::Parked { source, event_id, reason, .. } => {
                    db.parked.insert((*source, event_id.clone()), (Some(tenant.clone()), reason.clone()));
                }
                Write::License { license, due, .. } => {
                    let key = (tenant.clone(), license.source, license.license_id.to_string());
                    match due {
                        Some(at) => db.license_due.insert(key.clone(), *at),
                        None => db.license_due.remove(&key),
                    };
                    db.licenses.insert(key, license.clone());
                }
                Write::Member { item, .. } => {
                    // The item is written whole: its cached token goes.
                    db.tokens.remove(&(tenant.clone(), item.member.user_id.clone()));
                    db.members.insert((tenant.clone(), item.member.user_id.clone()), item.clone());
                }
                Write::ClaimEmail(m) => {
                    db.emails.insert((tenant.clone(), email_key(&m.email)), m.user_id.clone());
                }
                Write::ReleaseEmail(m) => {
                    db.emails.remove(&(tenant.clone(), email_key(&m.email)));
                }
                Write::Delivery { target, item } => {
                    let p = Pending { member: item.member.clone(), access: item.access.clone(), seq, refusals: 0, parked: None };
                    db.deliveries.insert((tenant.clone(), target.clone(), item.member.user_id.clone()), p);
                }
                Write::ParkDelivery { target, member, access, if_seq, reason } => {
                    let p = Pending { member: member.clone(), access: access.clone(), seq: if_seq.unwrap_or(seq), refusals: MAX_REFUSALS, parked: Some(reason.clone()) };
                    db.deliveries.insert((tenant.clone(), target.clone(), member.user_id.clone()), p);
                }
                Write::TargetConfig(t) => {
                    let health = db.targets.get(&(tenant.clone(), t.target_id.clone())).map(|x| x.health.clone()).unwrap_or_default();
                    db.targets.insert((tenant.clone(), t.target_id.clone()), Target { health, ..t.clone() });
                }
                Write::TargetHealth(t) => {
                    db.targets.insert((tenant.clone(), t.target_id.clone()), t.clone());
                }
                Write::RemoveTarget(id) => {
                    db.targets.remove(&(tenant.clone(), id.clone()));
                }
                Write::NewContract { contract, body_hash } => {
                    db.contracts.insert(contract.clone(), (tenant.clone(), body_hash.clone()));
                }
                Write::ContractDocument { contract, version, document } => {
                    db.documents.insert(contract.clone(), (*version, document.clone()));
                }
                Write::ContractVersion { contract, version, changes, cause, at, .. } => {
                    let summaries: Vec<String> = changes.iter().map(|c| c.summary.clone()).collect();
                    db.versions.insert((contract.clone(), *version), json!({"version": version, "cause": cause, "at": at.to_rfc3339(), "changes": summaries}));
                }
                Write::Amendment { amendment, body_hash } => {
                    db.amendments.insert((amendment.contract_id.clone(), amendment.amendment_id.clone()), (amendment.clone(), body_hash.clone()));
                }
                Write::Connection { connection, .. } => {
                    db.connections.insert((tenant.clone(), connection.id.clone()), connection.clone());
                }
                Write::RemoveConnection { id, .. } => {
                    db.connections.remove(&(tenant.clone(), id.clone()));
                }
                Write::ClaimUserName { user_name, user } => {
                    db.user_names.insert((tenant.clone(), user_name.to_lowercase()), user.clone());
                }
                Write::ReleaseUserName { user_name, .. } => {
                    db.user_names.remove(&(tenant.clone(), user_name.to_lowercase()));
                }
                Write::Group { group, .. } => {
                    db.groups.insert((tenant.clone(), group.id.clone()), group.clone());
                }
                Write::RemoveGroup { id, .. } => {
                    db.groups.remove(&(tenant.clone(), id.clone()));
                }
                Write::ClaimGroupName { name, group } => {
                    db.group_names.insert((tenant.clone(), name.to_lowercase()), group.clone());
                }
                Write::ReleaseGroupName { name, .. } => {
                    db.group_names.remove(&(tenant.clone(), name.to_lowercase()));
                }
                Write::Edge(e) => {
                    db.edges.insert((tenant.clone(), e.group.clone(), e.user.clone()), e.clone());
                }
                Write::RemoveEdge { group, user } => {
                    db.edges.remove(&(tenant.clone(), group.clone(), user.clone()));
                }
            }
        }
        // A new tenant follows the latest registered version.
        let latest = db.registry.last().map(|r| r.version.clone()).unwrap_or_else(|| deployed.clone());
        let meta = db.meta.entry(tenant.clone()).or_insert_with(|| TenantMeta {
            access: None,
            seats_used: 0,
            seats_pending: 0,
            head: ChainHead::genesis(),
            rules: TenantRules::default(),
            licensed: false,
            walk: None,
            walk_goal: None,
            license_file_seconds: None,
            continues: false,
            model_version: latest,
            model_pin: None,
            model_waiting: None,
        });
        let m = &change.meta;
        if let Some(v) = &m.model_version {
            meta.model_version = v.clone();
        }
        if let Some(p) = &m.model_pin {
            meta.model_pin = p.clone();
        }
        if let Some(w) = &m.model_waiting {
            meta.model_waiting = w.clone();
        }
        if let Some(due) = m.model_due {
            match due {
                Some(at) => db.model_due.insert(tenant.clone(), at),
                None => db.model_due.remove(tenant),
            };
        }
        let meta = db.meta.get_mut(tenant).expect("inserted above");
        if let Some(w) = &m.walk {
            meta.walk = Some(w.clone());
            meta.walk_goal = Some(w.goal.clone());
        }
        if let Some(l) = m.license_file_seconds {
            meta.license_file_seconds = l;
        }
        if let Some(a) = &m.access {
            meta.access = Some(a.clone());
        }
        if let Some(r) = &m.rules {
            meta.rules = r.clone();
        }
        let add = |v: u32, d: i64| u32::try_from((i64::from(v) + d).max(0)).unwrap_or(u32::MAX);
        meta.seats_used = add(meta.seats_used, m.used_delta);
        meta.seats_pending = add(meta.seats_pending, m.pending_delta);
        meta.licensed |= m.licensed;
        let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let Some(head) = head else {
            // Without the lock: the records wait, pending.
            let pending = db.pending.entry(tenant.clone()).or_default();
            for (i, e) in change.audit.iter().enumerate() {
                let p = PendingRecord::new(at, &format!("{salt}/{i}"), e.clone());
                pending.insert(p.key.clone(), p);
            }
            return;
        };
        // Pending records first, each dated as written; then the change's own.
        let (mut records, after_pending) = audit::integrate(tenant.as_str(), head, &change.integrate);
        if let Some(pending) = db.pending.get_mut(tenant) {
            for p in &change.integrate {
                pending.remove(&p.key);
            }
        }
        let first = after_pending.seq + 1;
        let mut events = crate::core::events::announced_pending(tenant, head, &change.integrate);
        events.extend(change.audit.iter().enumerate().filter_map(|(i, e)| announced(tenant, first + i as u64, &at_text, e)));
        events.extend(change.events.iter().cloned());
        let (own, new_head) = audit::chain(tenant.as_str(), &after_pending, &at_text, change.audit.clone());
        records.extend(own);
        db.audit.entry(tenant.clone()).or_default().extend(records.into_iter().map(|(r, json, hash)| StoredRecord { seq: r.seq, json, hash }));
        db.stream.extend(events);
        db.meta.get_mut(tenant).expect("inserted above").head = new_head;
    }

    /// Whether the change's counters allow it now.
    fn seats_allow(db: &Db, tenant: &TenantId, m: &MetaUpdate) -> bool {
        let meta = db.meta.get(tenant);
        if m.walk_goal_is.as_ref().is_some_and(|g| *g != meta.and_then(|m| m.walk_goal.clone())) {
            return false;
        }
        let used = meta.map_or(0, |m| m.seats_used);
        if m.used_at_most.is_some_and(|max| used > max) {
            return false;
        }
        if m.claim_seat {
            let Some(meta) = meta else { return false };
            let Some(access) = &meta.access else { return false };
            return access.policy == crate::core::license::MemberPolicy::Seated && meta.seats_used < access.seats_total && meta.seats_pending == 0;
        }
        true
    }

    /// Whether write `w` of a change for `tenant` meets its condition now.
    fn holds(db: &Db, tenant: &TenantId, w: &Write) -> bool {
        match w {
            Write::EventRecord { source, event_id, .. } => !db.events.contains_key(&(tenant.clone(), *source, event_id.clone())),
            Write::Parked { source, event_id, .. } => !db.parked.contains_key(&(*source, event_id.clone())),
            Write::License { license, if_version, .. } => match if_version {
                Some(v) => db.licenses.get(&(tenant.clone(), license.source, license.license_id.to_string())).is_some_and(|l| l.source_version == *v),
                None => true,
            },
            Write::ClaimEmail(m) => db.emails.get(&(tenant.clone(), email_key(&m.email))).is_none_or(|u| *u == m.user_id),
            Write::ReleaseEmail(m) => db.emails.get(&(tenant.clone(), email_key(&m.email))).is_none_or(|u| *u == m.user_id),
            Write::ParkDelivery { target, member, if_seq, .. } => {
                let held = db.deliveries.get(&(tenant.clone(), target.clone(), member.user_id.clone()));
                match if_seq {
                    Some(s) => held.is_some_and(|p| p.seq == *s),
                    None => held.is_none(),
                }
            }
            Write::TargetHealth(t) => db.targets.contains_key(&(tenant.clone(), t.target_id.clone())),
            Write::RemoveTarget(id) => db.targets.contains_key(&(tenant.clone(), id.clone())),
            Write::NewContract { contract, .. } => !db.contracts.contains_key(contract),
            Write::ContractDocument { contract, version, .. } => match db.documents.get(contract) {
                None => *version == 1,
                Some(_) => *version > 1,
            },
            Write::ContractVersion { contract, version, .. } => !db.versions.contains_key(&(contract.clone(), *version)),
            Write::Member { item, guard } => {
                let held = db.members.get(&(tenant.clone(), item.member.user_id.clone()));
                match guard {
                    MemberGuard::New => held.is_none_or(|h| h.member.removed),
                    MemberGuard::Rev(rev) => held.is_some_and(|h| h.rev == *rev),
                }
            }
            Write::Connection { connection, if_rev } => {
                let held = db.connections.get(&(tenant.clone(), connection.id.clone()));
                match if_rev {
                    None => held.is_none(),
                    Some(r) => held.is_some_and(|c| c.rev == *r),
                }
            }
            Write::RemoveConnection { id, rev } => db.connections.get(&(tenant.clone(), id.clone())).is_some_and(|c| c.rev == *rev),
            Write::ClaimUserName { user_name, user } | Write::ReleaseUserName { user_name, user } => db.user_names.get(&(tenant.clone(), user_name.to_lowercase())).is_none_or(|u| u == user),
            Write::Group { group, if_rev } => {
                let held = db.groups.get(&(tenant.clone(), group.id.clone()));
                match if_rev {
                    None => held.is_none(),
                    Some(r) => held.is_some_and(|g| g.rev == *r),
                }
            }
            Write::RemoveGroup { id, rev } => db.groups.get(&(tenant.clone(), id.clone())).is_some_and(|g| g.rev == *rev),
            Write::ClaimGroupName { name, group } | Write::ReleaseGroupName { name, group } => db.group_names.get(&(tenant.clone(), name.to_lowercase())).is_none_or(|g| g == group),
            Write::Delivery { .. } | Write::TargetConfig(_) | Write::Amendment { .. } | Write::Edge(_) | Write::RemoveEdge { .. } => true,
        }
    }
}

impl TokenCache for Memory {
    async fn member_and_token(&self, tenant: &TenantId, user: &UserId) -> Result<(Option<MemberItem>, Option<crate::core::token::CachedToken>), PortError> {
        let db = self.db.lock().unwrap();
        let key = (tenant.clone(), user.clone());
        Ok((db.members.get(&key).cloned(), db.tokens.get(&key).cloned()))
    }
    async fn cache_token(&self, tenant: &TenantId, user: &UserId, token: &crate::core::token::CachedToken) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        let key = (tenant.clone(), user.clone());
        if db.members.get(&key).is_none_or(|m| m.rev != token.rev) {
            return Ok(false);
        }
        db.tokens.insert(key, token.clone());
        Ok(true)
    }
}

impl Directories for Memory {
    async fn connection(&self, tenant: &TenantId, id: &str) -> Result<Option<Connection>, PortError> {
        Ok(self.db.lock().unwrap().connections.get(&(tenant.clone(), id.to_string())).cloned())
    }
    async fn connections(&self, tenant: &TenantId) -> Result<Vec<Connection>, PortError> {
        Ok(self.db.lock().unwrap().connections.iter().filter(|((t, _), _)| t == tenant).map(|(_, c)| c.clone()).collect())
    }
    async fn user_by_name(&self, tenant: &TenantId, user_name: &str) -> Result<Option<UserId>, PortError> {
        Ok(self.db.lock().unwrap().name_holder(tenant, user_name))
    }
    async fn push_view(&self, tenant: &TenantId, connection: &str, user: &UserId, user_name: &str) -> Result<PushView, PortError> {
        let db = self.db.lock().unwrap();
        Ok(PushView {
            connection: db.connections.get(&(tenant.clone(), connection.to_string())).cloned(),
            meta: db.meta.get(tenant).cloned(),
            member: db.members.get(&(tenant.clone(), user.clone())).cloned(),
            name_holder: db.name_holder(tenant, user_name),
        })
    }
    async fn group(&self, tenant: &TenantId, id: &str) -> Result<Option<DirGroup>, PortError> {
        Ok(self.db.lock().unwrap().groups.get(&(tenant.clone(), id.to_string())).cloned())
    }
    async fn group_by_name(&self, tenant: &TenantId, name: &str) -> Result<Option<DirGroup>, PortError> {
        let db = self.db.lock().unwrap();
        Ok(db.group_names.get(&(tenant.clone(), name.to_lowercase())).and_then(|id| db.groups.get(&(tenant.clone(), id.clone()))).cloned())
    }
    async fn groups_page(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> Result<(Vec<DirGroup>, Option<String>), PortError> {
        let db = self.db.lock().unwrap();
        let all: Vec<DirGroup> = db.groups.iter().filter(|((t, id), _)| t == tenant && after.is_none_or(|a| id.as_str() > a)).map(|(_, g)| g.clone()).collect();
        let more = all.len() > limit;
        let page: Vec<DirGroup> = all.into_iter().take(limit).collect();
        let next = if more { page.last().map(|g| g.id.clone()) } else { None };
        Ok((page, next))
    }
    async fn group_members(&self, tenant: &TenantId, group: &str) -> Result<Vec<Edge>, PortError> {
        Ok(self.db.lock().unwrap().edges.iter().filter(|((t, g, _), _)| t == tenant && g == group).map(|(_, e)| e.clone()).collect())
    }
}

impl Tenants for Memory {
    async fn meta(&self, tenant: &TenantId) -> Result<Option<TenantMeta>, PortError> {
        Ok(self.db.lock().unwrap().meta.get(tenant).cloned())
    }

    async fn tenant(&self, tenant: &TenantId) -> Result<Option<TenantState>, PortError> {
        let db = self.db.lock().unwrap();
        let Some(meta) = db.meta.get(tenant).cloned() else { return Ok(None) };
        let licenses = db.licenses.iter().filter(|((t, _, _), _)| t == tenant).map(|(_, l)| l.clone()).collect();
        let members = db.members.iter().filter(|((t, _), _)| t == tenant).map(|(_, m)| m.clone()).collect();
        let contracts = db
            .contracts
            .iter()
            .filter(|(_, (t, _))| t == tenant)
            .filter_map(|(cid, _)| db.documents.get(cid).map(|(v, d)| (serde_json::from_value::<ContractDocument>(d.clone()).expect("stored documents parse"), *v)))
            .collect();
        let targets = db.targets.iter().filter(|((t, _), _)| t == tenant).map(|(_, x)| x.clone()).collect();
        let pending_audit = db.pending.get(tenant).map(|p| p.values().cloned().collect()).unwrap_or_default();
        Ok(Some(TenantState { meta, licenses, members, contracts, targets, pending_audit }))
    }

    async fn member(&self, tenant: &TenantId, user: &UserId) -> Result<Option<MemberItem>, PortError> {
        Ok(self.db.lock().unwrap().members.get(&(tenant.clone(), user.clone())).cloned())
    }

    async fn tenant_head(&self, tenant: &TenantId) -> Result<Option<TenantHead>, PortError> {
        Ok(self.tenant(tenant).await?.map(|s| {
            let pending_audit: Vec<PendingRecord> = s.pending_audit.into_iter().take(crate::core::tenant::PENDING_PAGE).collect();
            self.largest_pending_read.fetch_max(pending_audit.len(), Ordering::SeqCst);
            TenantHead { meta: s.meta, licenses: s.licenses, contracts: s.contracts, targets: s.targets, pending_audit }
        }))
    }

    /// Members in user id order, the user id (as `MEM#<user>`) the cursor.
    async fn members_page(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> Result<(Vec<MemberItem>, Option<String>), PortError> {
        let db = self.db.lock().unwrap();
        let after = after.map(|a| a.trim_start_matches("MEM#").to_string());
        let page: Vec<MemberItem> = db.members.iter().filter(|((t, u), _)| t == tenant && after.as_deref().is_none_or(|a| u.as_str() > a)).take(limit.max(1)).map(|(_, m)| m.clone()).collect();
        let more = page.len() == limit.max(1) && db.members.keys().any(|(t, u)| t == tenant && u > &page.last().expect("a full page").member.user_id);
        let next = more.then(|| format!("MEM#{}", page.last().expect("a full page").member.user_id));
        Ok((page, next))
    }

    async fn seat_order(&self, tenant: &TenantId, list: SeatList, from_end: bool, limit: usize) -> Result<Vec<MemberItem>, PortError> {
        let db = self.db.lock().unwrap();
        let mut listed: Vec<(String, MemberItem)> = db
            .members
            .iter()
            .filter(|((t, _), m)| t == tenant && if list == SeatList::Holders { m.access.holds_seat() } else { m.in_line() })
            .map(|(_, m)| (order_key_string(&m.seat, &m.member.user_id), m.clone()))
            .collect();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        if from_end {
            listed.reverse();
        }
        Ok(listed.into_iter().take(limit).map(|(_, m)| m).collect())
    }

    async fn licenses(&self, tenant: &TenantId, source: Source) -> Result<Vec<License>, PortError> {
        let db = self.db.lock().unwrap();
        Ok(db.licenses.iter().filter(|((t, s, _), _)| t == tenant && *s == source).map(|(_, l)| l.clone()).collect())
    }

    async fn meta_and_license(&self, tenant: &TenantId, source: Source, license: &str) -> Result<(Option<TenantMeta>, Option<License>), PortError> {
        let db = self.db.lock().unwrap();
        Ok((db.meta.get(tenant).cloned(), db.licenses.get(&(tenant.clone(), source, license.to_string())).cloned()))
    }

    async fn meta_license_and_event(&self, tenant: &TenantId, source: Source, license: &str, event: &EventId) -> Result<LicenseRead, PortError> {
        let db = self.db.lock().unwrap();
        let l = db.licenses.get(&(tenant.clone(), source, license.to_string())).cloned();
        let e = db.events.get(&(tenant.clone(), source, event.clone())).cloned();
        Ok((db.meta.get(tenant).cloned(), (l, e)))
    }

    async fn meta_and_member(&self, tenant: &TenantId, user: &UserId) -> Result<(Option<TenantMeta>, Option<MemberItem>), PortError> {
        let db = self.db.lock().unwrap();
        Ok((db.meta.get(tenant).cloned(), db.members.get(&(tenant.clone(), user.clone())).cloned()))
    }

    async fn meta_and_members(&self, tenant: &TenantId, users: &[UserId]) -> Result<(Option<TenantMeta>, Vec<Option<MemberItem>>), PortError> {
        let db = self.db.lock().unwrap();
        Ok((db.meta.get(tenant).cloned(), users.iter().map(|u| db.members.get(&(tenant.clone(), u.clone())).cloned()).collect()))
    }

    async fn accepted_event(&self, tenant: &TenantId, source: Source, event: &EventId) -> Result<Option<String>, PortError> {
        Ok(self.db.lock().unwrap().events.get(&(tenant.clone(), source, event.clone())).cloned())
    }

    async fn commit(&self, tenant: &TenantId, head: Option<&ChainHead>, change: &Change) -> Result<ChainHead, CommitError> {
        // Let other tasks interleave, as network round trips would.
        tokio::task::yield_now().await;
        // Its writes, audit records, one item per event, and the head.
        let items = change.writes.len() + change.audit.len() + change.events.len() + change.audit.iter().filter(|a| a.announce.is_some()).count() + 1;
        assert!(items <= MAX_TRANSACTION_ITEMS, "a change of {items} items does not fit a transaction");
        let mut db = self.db.lock().unwrap();
        let current = db.meta.get(tenant).map(|m| m.head.clone());
        if current.as_ref() != head {
            return Err(CommitError::HeadMoved);
        }
        if let Some(i) = change.writes.iter().position(|w| !Self::holds(&db, tenant, w)) {
            return Err(CommitError::Refused(i));
        }
        if !Self::seats_allow(&db, tenant, &change.meta) {
            return Err(CommitError::Seats);
        }
        let head = head.cloned().unwrap_or_else(ChainHead::genesis);
        Self::apply(&mut db, &self.model.version, tenant, Some(&head), head.seq + 1, change, "");
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(db.meta[tenant].head.clone())
    }

    async fn commit_unchained(&self, tenant: &TenantId, change: &Change, salt: &str) -> Result<(), CommitError> {
        tokio::task::yield_now().await;
        assert!(change.events.is_empty() && change.integrate.is_empty(), "only a change without events of its own commits without the lock");
        // Its writes, its pending records, and META.
        assert!(change.writes.len() + change.audit.len() < MAX_TRANSACTION_ITEMS);
        let mut db = self.db.lock().unwrap();
        if let Some(i) = change.writes.iter().position(|w| !Self::holds(&db, tenant, w)) {
            return Err(CommitError::Refused(i));
        }
        if !Self::seats_allow(&db, tenant, &change.meta) {
            return Err(CommitError::Seats);
        }
        let seq = u64::try_from(change.at.timestamp_micros()).unwrap_or(0);
        Self::apply(&mut db, &self.model.version, tenant, None, seq, change, salt);
        self.commits.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn pending_audit(&self, tenant: &TenantId, limit: usize) -> Result<(Option<TenantMeta>, Vec<PendingRecord>), PortError> {
        let db = self.db.lock().unwrap();
        let pending: Vec<PendingRecord> = db.pending.get(tenant).map(|p| p.values().take(limit).cloned().collect()).unwrap_or_default();
        self.largest_pending_read.fetch_max(pending.len(), Ordering::SeqCst);
        Ok((db.meta.get(tenant).cloned(), pending))
    }

    async fn pending_count(&self, tenant: &TenantId) -> Result<u64, PortError> {
        Ok(self.db.lock().unwrap().pending.get(tenant).map_or(0, |p| p.len() as u64))
    }

    async fn park_unattributed(&self, source: Source, event: &EventId, reason: &str, _payload: &Value, _at: DateTime<Utc>) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        if db.parked.contains_key(&(source, event.clone())) {
            return Ok(false);
        }
        db.parked.insert((source, event.clone()), (None, reason.to_string()));
        Ok(true)
    }

    async fn wake_epoch(&self, tenant: &TenantId) -> Result<Option<u64>, PortError> {
        Ok(self.db.lock().unwrap().wakes.get(tenant).copied())
    }

    async fn advance_wake(&self, tenant: &TenantId) -> Result<(), PortError> {
        let mut db = self.db.lock().unwrap();
        if db.meta.contains_key(tenant) {
            *db.wakes.entry(tenant.clone()).or_default() += 1;
        }
        Ok(())
    }

    async fn set_continues(&self, tenant: &TenantId, continues: bool) -> Result<(), PortError> {
        if let Some(meta) = self.db.lock().unwrap().meta.get_mut(tenant) {
            meta.continues = continues;
        }
        Ok(())
    }

    async fn mark_barrier(&self, tenant: &TenantId, mark: &str) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        if !db.meta.contains_key(tenant) {
            return Ok(false);
        }
        db.barriers.insert(tenant.clone(), mark.to_string());
        Ok(true)
    }

    async fn audit_page(&self, tenant: &TenantId, after_seq: u64, limit: u32) -> Result<(Vec<StoredRecord>, bool), PortError> {
        let db = self.db.lock().unwrap();
        let all: Vec<StoredRecord> = db.audit.get(tenant).map(|r| r.iter().filter(|r| r.seq > after_seq).cloned().collect()).unwrap_or_default();
        let more = all.len() > limit as usize;
        Ok((all.into_iter().take(limit as usize).collect(), more))
    }
}

impl Contracts for Memory {
    async fn contract(&self, id: &ContractId) -> Result<Option<ContractState>, PortError> {
        let db = self.db.lock().unwrap();
        let (Some((tenant, _)), Some((version, document))) = (db.contracts.get(id), db.documents.get(id)) else { return Ok(None) };
        let doc = serde_json::from_value(document.clone()).map_err(|e| PortError::Corrupt { key: id.to_string(), why: e.to_string() })?;
        Ok(Some(ContractState { tenant_id: tenant.clone(), version: *version, document: document.clone(), doc }))
    }

    async fn contract_body_hash(&self, id: &ContractId) -> Result<Option<String>, PortError> {
        Ok(self.db.lock().unwrap().contracts.get(id).map(|(_, h)| h.clone()))
    }

    async fn contract_history(&self, id: &ContractId) -> Result<Vec<Value>, PortError> {
        Ok(self.db.lock().unwrap().versions.iter().filter(|((c, _), _)| c == id).map(|(_, v)| v.clone()).collect())
    }

    async fn amendment(&self, id: &ContractId, aid: &AmendmentId) -> Result<Option<(Amendment, String)>, PortError> {
        Ok(self.db.lock().unwrap().amendments.get(&(id.clone(), aid.clone())).cloned())
    }

    async fn scheduled_amendments(&self, id: &ContractId) -> Result<Vec<Amendment>, PortError> {
        let db = self.db.lock().unwrap();
        let mut out: Vec<Amendment> = db.amendments.iter().filter(|((c, _), (a, _))| c == id && a.status == AmendmentStatus::Scheduled).map(|(_, (a, _))| a.clone()).collect();
        out.sort_by(|a, b| a.effective_at.cmp(&b.effective_at).then_with(|| a.amendment_id.cmp(&b.amendment_id)));
        Ok(out)
    }
}

impl Targets for Memory {
    async fn targets(&self, tenant: &TenantId) -> Result<Vec<Target>, PortError> {
        Ok(self.db.lock().unwrap().targets.iter().filter(|((t, _), _)| t == tenant).map(|(_, x)| x.clone()).collect())
    }

    async fn pending(&self, tenant: &TenantId, target: &TargetId) -> Result<Vec<Pending>, PortError> {
        Ok(self.db.lock().unwrap().deliveries.iter().filter(|((t, x, _), _)| t == tenant && x == target).map(|(_, p)| p.clone()).collect())
    }

    async fn delivered(&self, tenant: &TenantId, target: &TargetId, user: &UserId, seq: u64) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        let key = (tenant.clone(), target.clone(), user.clone());
        if db.deliveries.get(&key).is_some_and(|p| p.seq == seq) {
            db.deliveries.remove(&key);
            return Ok(true);
        }
        Ok(false)
    }

    async fn refused(&self, tenant: &TenantId, target: &TargetId, pending: &Pending, reason: &str) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        match db.deliveries.get_mut(&(tenant.clone(), target.clone(), pending.member.user_id.clone())) {
            Some(p) if p.seq == pending.seq => {
                p.refusals += 1;
                if p.refusals >= MAX_REFUSALS {
                    p.parked = Some(reason.to_string());
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn save_health(&self, tenant: &TenantId, target: &Target) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        match db.targets.get_mut(&(tenant.clone(), target.target_id.clone())) {
            Some(t) => {
                t.health = target.health.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn drop_deliveries(&self, tenant: &TenantId, target: &TargetId) -> Result<usize, PortError> {
        let mut db = self.db.lock().unwrap();
        let before = db.deliveries.len();
        db.deliveries.retain(|(t, x, _), _| !(t == tenant && x == target));
        Ok(before - db.deliveries.len())
    }
}

impl DueIndex for Memory {
    /// Everything due in one page.
    async fn due(&self, as_of: DateTime<Utc>, cursor: Option<&str>) -> Result<DuePage, PortError> {
        if cursor.is_some() {
            return Ok(DuePage::default());
        }
        let db = self.db.lock().unwrap();
        let t = as_of.timestamp();
        let mut out = Vec::new();
        for ((tenant, source, id), at) in &db.license_due {
            if at.timestamp() <= t {
                out.push(DueItem::License { tenant: tenant.clone(), source: *source, license: id.clone(), due_at: at.timestamp() });
            }
        }
        for (tenant, at) in &db.model_due {
            if at.timestamp() <= t {
                out.push(DueItem::Model { tenant: tenant.clone(), due_at: at.timestamp() });
            }
        }
        for ((cid, _), (a, _)) in &db.amendments {
            if let Some(at) = a.effective_at.filter(|at| a.status == AmendmentStatus::Scheduled && at.timestamp() <= t) {
                out.push(DueItem::Amendment { contract: cid.clone(), due_at: at.timestamp() });
            }
        }
        for ((tenant, target, user), p) in &db.deliveries {
            if p.parked.is_none() {
                out.push(DueItem::Delivery { tenant: tenant.clone(), what: format!("{target}/{user}"), due_at: 0 });
            }
        }
        for ((tenant, id), x) in &db.targets {
            if x.wake_at().timestamp() <= t {
                out.push(DueItem::Delivery { tenant: tenant.clone(), what: format!("target/{id}"), due_at: x.wake_at().timestamp().max(0) });
            }
        }
        out.sort_by_key(|d| (d.due_at(), d.key()));
        let read = out.len() as u64;
        Ok(DuePage { items: out, read, next: None })
    }
}

impl Models for Memory {
    async fn rules(&self, version: &ModelVersion) -> Result<Option<Arc<LicensingModel>>, PortError> {
        if let Some(m) = self.parsed.lock().unwrap().get(version) {
            return Ok(Some(m.clone()));
        }
        let registered = self.db.lock().unwrap().registry.iter().find(|r| &r.version == version).cloned();
        let Some(r) = registered else { return Ok((version == &self.model.version).then(|| self.model.clone())) };
        let model = if r.fingerprint == self.model.fingerprint() && r.version == self.model.version {
            self.model.clone()
        } else {
            Arc::new(LicensingModel::from_toml(&r.text, &format!("registered {version}")).map_err(|e| PortError::Corrupt { key: format!("model {version}"), why: e.to_string() })?)
        };
        self.parsed.lock().unwrap().insert(version.clone(), model.clone());
        Ok(Some(model))
    }

    async fn latest(&self) -> Result<Arc<LicensingModel>, PortError> {
        let latest = self.db.lock().unwrap().registry.last().map(|r| r.version.clone());
        match latest {
            Some(v) => Ok(self.rules(&v).await?.expect("a registered version")),
            None => Ok(self.model.clone()),
        }
    }
}

impl ModelRegistry for Memory {
    async fn register(&self, model: &Registered) -> Result<Registration, PortError> {
        let mut db = self.db.lock().unwrap();
        if let Some(r) = db.registry.iter().find(|r| r.version == model.version) {
            return Ok(if r.fingerprint == model.fingerprint { Registration::Known } else { Registration::Conflict { registered: r.fingerprint.clone() } });
        }
        let seq = db.registry.len() as u64 + 1;
        db.registry.push(Registered { seq, ..model.clone() });
        Ok(Registration::New { seq })
    }

    async fn registered(&self) -> Result<Vec<Registered>, PortError> {
        Ok(self.db.lock().unwrap().registry.clone())
    }

    async fn tenants_following(&self, version: &ModelVersion, after: Option<&str>, limit: usize) -> Result<TenantPage, PortError> {
        let db = self.db.lock().unwrap();
        let all: Vec<(TenantId, Option<String>)> =
            db.meta.iter().filter(|(t, m)| &m.model_version == version && after.is_none_or(|a| t.as_str() > a)).map(|(t, m)| (t.clone(), m.access.as_ref().map(|a| a.tier.clone()))).collect();
        let more = all.len() > limit;
        let tenants: Vec<_> = all.into_iter().take(limit.max(1)).collect();
        let next = if more { tenants.last().map(|(t, _)| t.to_string()) } else { None };
        Ok(TenantPage { tenants, next })
    }

    async fn count_following(&self, version: &ModelVersion) -> Result<u64, PortError> {
        Ok(self.db.lock().unwrap().meta.values().filter(|m| &m.model_version == version).count() as u64)
    }

    /// Every tenant in memory has its version: nothing to give.
    async fn backfill(&self, _first: &ModelVersion, _after: Option<&str>, _limit: usize) -> Result<(usize, Option<String>), PortError> {
        Ok((0, None))
    }

    async fn backfill_cursor(&self) -> Result<Option<Option<String>>, PortError> {
        let db = self.db.lock().unwrap();
        Ok((!db.backfilled && !db.registry.is_empty()).then_some(None))
    }

    async fn set_backfill_cursor(&self, cursor: Option<Option<String>>) -> Result<(), PortError> {
        self.db.lock().unwrap().backfilled = cursor.is_none();
        Ok(())
    }

    async fn create_run(&self, run: &RunState) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        if db.runs.contains_key(&run.spec.id) {
            return Ok(false);
        }
        db.runs.insert(run.spec.id.clone(), run.clone());
        Ok(true)
    }

    async fn run(&self, id: &RunId) -> Result<Option<RunState>, PortError> {
        Ok(self.db.lock().unwrap().runs.get(id).cloned())
    }

    async fn runs(&self) -> Result<Vec<RunState>, PortError> {
        let mut runs: Vec<RunState> = self.db.lock().unwrap().runs.values().cloned().collect();
        runs.sort_by(|a, b| b.spec.created_at.cmp(&a.spec.created_at).then_with(|| b.spec.id.cmp(&a.spec.id)));
        Ok(runs)
    }

    async fn advance_run(&self, run: &RunState) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        let Some(held) = db.runs.get_mut(&run.spec.id) else { return Ok(false) };
        if held.rev != run.rev {
            return Ok(false);
        }
        held.status = run.status;
        held.cursor = run.cursor.clone();
        held.queued = run.queued;
        held.finished_at = run.finished_at;
        held.rev += 1;
        Ok(true)
    }

    async fn settle(&self, run: &RunId, outcomes: &[Outcome]) -> Result<usize, PortError> {
        let mut settled = 0;
        for outcome in outcomes {
            settled += usize::from(self.settle_one(run, outcome));
        }
        Ok(settled)
    }

    async fn outcomes_of(&self, run: &RunId, tenants: &[TenantId]) -> Result<Vec<Option<Outcome>>, PortError> {
        let db = self.db.lock().unwrap();
        Ok(tenants.iter().map(|t| db.outcomes.get(&(run.clone(), t.clone())).cloned()).collect())
    }

    async fn outcomes(&self, run: &RunId, after: Option<&TenantId>, limit: usize) -> Result<(Vec<Outcome>, bool), PortError> {
        let db = self.db.lock().unwrap();
        let all: Vec<Outcome> = db.outcomes.iter().filter(|((r, t), _)| r == run && after.is_none_or(|a| t > a)).map(|(_, o)| o.clone()).collect();
        let more = all.len() > limit;
        Ok((all.into_iter().take(limit).collect(), more))
    }

    async fn put_preview(&self, run: &RunId, pages: &[PreviewPage]) -> Result<(), PortError> {
        let mut db = self.db.lock().unwrap();
        for p in pages {
            db.preview_pages.insert((run.clone(), p.tenant_id.clone(), p.page), p.clone());
        }
        Ok(())
    }

    async fn preview_page(&self, run: &RunId, tenant: &TenantId, page: u32) -> Result<Option<PreviewPage>, PortError> {
        Ok(self.db.lock().unwrap().preview_pages.get(&(run.clone(), tenant.clone(), page)).cloned())
    }
}

impl WorkQueue for Memory {
    async fn send_work(&self, work: &Work) -> Result<(), PortError> {
        self.work_sent.lock().unwrap().push(work.clone());
        Ok(())
    }
}

impl Queue for Memory {
    async fn send(&self, request: &ReconcileRequest, dedup: &str) -> Result<(), PortError> {
        self.queued.lock().unwrap().push((request.clone(), dedup.to_string()));
        Ok(())
    }
}

impl Tokens for Memory {
    async fn get(&self, tenant: &TenantId, target: &TargetId) -> Result<String, PortError> {
        self.tokens.lock().unwrap().get(&(tenant.clone(), target.clone())).cloned().ok_or_else(|| PortError::Corrupt { key: format!("{tenant}/{target}"), why: "no token".into() })
    }

    async fn put(&self, tenant: &TenantId, target: &TargetId, token: &str) -> Result<(), PortError> {
        self.tokens.lock().unwrap().insert((tenant.clone(), target.clone()), token.to_string());
        Ok(())
    }

    async fn delete(&self, tenant: &TenantId, target: &TargetId) -> Result<(), PortError> {
        self.tokens.lock().unwrap().remove(&(tenant.clone(), target.clone()));
        Ok(())
    }
}

/// A read that stops after taking its answer: (it has read, it may go on).
type Pause = (Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>);

/// Stripe's subscriptions in memory, for the billing use cases' tests: what
/// Stripe holds now (listed in the order they were created), how many
/// reads it served, an error it answers with instead while set, and a
/// pause after a read (to change Stripe and race another writer meanwhile).
#[derive(Clone, Default)]
pub struct StripeAccount {
    subscriptions: Arc<Mutex<Vec<Value>>>,
    pub reads: Arc<AtomicUsize>,
    failing: Arc<Mutex<Option<String>>>,
    pause: Arc<Mutex<Option<Pause>>>,
}

impl StripeAccount {
    /// Creates or replaces a subscription (by its `id`).
    pub fn put(&self, subscription: Value) {
        let mut subs = self.subscriptions.lock().unwrap();
        match subs.iter_mut().find(|s| s["id"] == subscription["id"]) {
            Some(s) => *s = subscription,
            None => subs.push(subscription),
        }
    }

    pub fn remove(&self, id: &str) {
        self.subscriptions.lock().unwrap().retain(|s| s["id"] != id);
    }

    /// Answers every request with this error (`None`: answers again).
    pub fn fail(&self, detail: Option<&str>) {
        *self.failing.lock().unwrap() = detail.map(str::to_string);
    }

    /// The next subscription read takes its answer, then says so (`read`)
    /// and waits for `proceed` before returning it.
    pub fn pause_after_next_read(&self) -> (Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>) {
        let pair = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        *self.pause.lock().unwrap() = Some(pair.clone());
        pair
    }

    fn answer(&self) -> Result<(), Upstream> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        match self.failing.lock().unwrap().clone() {
            Some(detail) => Err(Upstream { service: "stripe", detail, retry_after: None }),
            None => Ok(()),
        }
    }
}

impl Billing for StripeAccount {
    async fn subscription(&self, id: &crate::core::ids::LicenseId) -> Result<Option<Value>, Upstream> {
        tokio::task::yield_now().await;
        self.answer()?;
        let answer = self.subscriptions.lock().unwrap().iter().find(|s| s["id"] == id.as_str()).cloned();
        let pause = self.pause.lock().unwrap().take();
        if let Some((read, proceed)) = pause {
            read.notify_one();
            proceed.notified().await;
        }
        Ok(answer)
    }

    async fn subscriptions(&self, starting_after: Option<&str>, limit: u32) -> Result<SubscriptionPage, Upstream> {
        self.answer()?;
        let subs = self.subscriptions.lock().unwrap();
        let start = starting_after.and_then(|a| subs.iter().position(|s| s["id"] == a)).map_or(0, |i| i + 1);
        let data: Vec<Value> = subs.iter().skip(start).take(limit as usize).cloned().collect();
        Ok(SubscriptionPage { has_more: start + data.len() < subs.len(), data })
    }
}

/// Any store, whose commits fail after `left` more have succeeded: a crash
/// between the transactions of a use case, for the emulator tests too.
pub struct Crashing<'a, S> {
    pub inner: &'a S,
    left: AtomicUsize,
}

impl<'a, S> Crashing<'a, S> {
    pub fn after(inner: &'a S, commits: usize) -> Self {
        Crashing { inner, left: AtomicUsize::new(commits) }
    }
}

/// The crash a [`Crashing`] store injects.
pub fn is_injected_crash(e: &super::Error) -> bool {
    matches!(e, super::Error::Port(PortError::Corrupt { why, .. }) if why == "injected crash")
}

impl<S: Tenants> Tenants for Crashing<'_, S> {
    async fn meta(&self, tenant: &TenantId) -> Result<Option<TenantMeta>, PortError> {
        self.inner.meta(tenant).await
    }
    async fn tenant(&self, tenant: &TenantId) -> Result<Option<TenantState>, PortError> {
        self.inner.tenant(tenant).await
    }
    async fn member(&self, tenant: &TenantId, user: &UserId) -> Result<Option<MemberItem>, PortError> {
        self.inner.member(tenant, user).await
    }
    async fn tenant_head(&self, tenant: &TenantId) -> Result<Option<TenantHead>, PortError> {
        self.inner.tenant_head(tenant).await
    }
    async fn members_page(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> Result<(Vec<MemberItem>, Option<String>), PortError> {
        self.inner.members_page(tenant, after, limit).await
    }
    async fn seat_order(&self, tenant: &TenantId, list: SeatList, from_end: bool, limit: usize) -> Result<Vec<MemberItem>, PortError> {
        self.inner.seat_order(tenant, list, from_end, limit).await
    }
    async fn licenses(&self, tenant: &TenantId, source: Source) -> Result<Vec<License>, PortError> {
        self.inner.licenses(tenant, source).await
    }
    async fn meta_and_license(&self, tenant: &TenantId, source: Source, license: &str) -> Result<(Option<TenantMeta>, Option<License>), PortError> {
        self.inner.meta_and_license(tenant, source, license).await
    }
    async fn meta_license_and_event(&self, tenant: &TenantId, source: Source, license: &str, event: &EventId) -> Result<LicenseRead, PortError> {
        self.inner.meta_license_and_event(tenant, source, license, event).await
    }
    async fn meta_and_member(&self, tenant: &TenantId, user: &UserId) -> Result<(Option<TenantMeta>, Option<MemberItem>), PortError> {
        self.inner.meta_and_member(tenant, user).await
    }
    async fn meta_and_members(&self, tenant: &TenantId, users: &[UserId]) -> Result<(Option<TenantMeta>, Vec<Option<MemberItem>>), PortError> {
        self.inner.meta_and_members(tenant, users).await
    }
    async fn accepted_event(&self, tenant: &TenantId, source: Source, event: &EventId) -> Result<Option<String>, PortError> {
        self.inner.accepted_event(tenant, source, event).await
    }
    async fn commit(&self, tenant: &TenantId, head: Option<&ChainHead>, change: &Change) -> Result<ChainHead, CommitError> {
        if self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() {
            return Err(CommitError::Port(PortError::Corrupt { key: tenant.to_string(), why: "injected crash".into() }));
        }
        self.inner.commit(tenant, head, change).await
    }
    async fn commit_unchained(&self, tenant: &TenantId, change: &Change, salt: &str) -> Result<(), CommitError> {
        if self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() {
            return Err(CommitError::Port(PortError::Corrupt { key: tenant.to_string(), why: "injected crash".into() }));
        }
        self.inner.commit_unchained(tenant, change, salt).await
    }
    async fn pending_audit(&self, tenant: &TenantId, limit: usize) -> Result<(Option<TenantMeta>, Vec<PendingRecord>), PortError> {
        self.inner.pending_audit(tenant, limit).await
    }
    async fn pending_count(&self, tenant: &TenantId) -> Result<u64, PortError> {
        self.inner.pending_count(tenant).await
    }
    async fn park_unattributed(&self, source: Source, event: &EventId, reason: &str, payload: &Value, at: DateTime<Utc>) -> Result<bool, PortError> {
        self.inner.park_unattributed(source, event, reason, payload, at).await
    }
    async fn wake_epoch(&self, tenant: &TenantId) -> Result<Option<u64>, PortError> {
        self.inner.wake_epoch(tenant).await
    }
    async fn advance_wake(&self, tenant: &TenantId) -> Result<(), PortError> {
        self.inner.advance_wake(tenant).await
    }
    async fn set_continues(&self, tenant: &TenantId, continues: bool) -> Result<(), PortError> {
        self.inner.set_continues(tenant, continues).await
    }
    async fn mark_barrier(&self, tenant: &TenantId, mark: &str) -> Result<bool, PortError> {
        self.inner.mark_barrier(tenant, mark).await
    }
    async fn audit_page(&self, tenant: &TenantId, after_seq: u64, limit: u32) -> Result<(Vec<StoredRecord>, bool), PortError> {
        self.inner.audit_page(tenant, after_seq, limit).await
    }
}

impl<S: Models> Models for Crashing<'_, S> {
    async fn rules(&self, version: &ModelVersion) -> Result<Option<Arc<LicensingModel>>, PortError> {
        self.inner.rules(version).await
    }
    async fn latest(&self) -> Result<Arc<LicensingModel>, PortError> {
        self.inner.latest().await
    }
}

/// The registry as it is (a crash is a commit of a tenant's that fails).
impl<S: ModelRegistry> ModelRegistry for Crashing<'_, S> {
    async fn register(&self, model: &Registered) -> Result<Registration, PortError> {
        self.inner.register(model).await
    }
    async fn registered(&self) -> Result<Vec<Registered>, PortError> {
        self.inner.registered().await
    }
    async fn tenants_following(&self, version: &ModelVersion, after: Option<&str>, limit: usize) -> Result<TenantPage, PortError> {
        self.inner.tenants_following(version, after, limit).await
    }
    async fn count_following(&self, version: &ModelVersion) -> Result<u64, PortError> {
        self.inner.count_following(version).await
    }
    async fn backfill(&self, first: &ModelVersion, after: Option<&str>, limit: usize) -> Result<(usize, Option<String>), PortError> {
        self.inner.backfill(first, after, limit).await
    }
    async fn backfill_cursor(&self) -> Result<Option<Option<String>>, PortError> {
        self.inner.backfill_cursor().await
    }
    async fn set_backfill_cursor(&self, cursor: Option<Option<String>>) -> Result<(), PortError> {
        self.inner.set_backfill_cursor(cursor).await
    }
    async fn create_run(&self, run: &RunState) -> Result<bool, PortError> {
        self.inner.create_run(run).await
    }
    async fn run(&self, id: &RunId) -> Result<Option<RunState>, PortError> {
        self.inner.run(id).await
    }
    async fn runs(&self) -> Result<Vec<RunState>, PortError> {
        self.inner.runs().await
    }
    async fn advance_run(&self, run: &RunState) -> Result<bool, PortError> {
        self.inner.advance_run(run).await
    }
    async fn settle(&self, run: &RunId, outcomes: &[Outcome]) -> Result<usize, PortError> {
        self.inner.settle(run, outcomes).await
    }
    async fn outcomes_of(&self, run: &RunId, tenants: &[TenantId]) -> Result<Vec<Option<Outcome>>, PortError> {
        self.inner.outcomes_of(run, tenants).await
    }
    async fn outcomes(&self, run: &RunId, after: Option<&TenantId>, limit: usize) -> Result<(Vec<Outcome>, bool), PortError> {
        self.inner.outcomes(run, after, limit).await
    }
    async fn put_preview(&self, run: &RunId, pages: &[PreviewPage]) -> Result<(), PortError> {
        self.inner.put_preview(run, pages).await
    }
    async fn preview_page(&self, run: &RunId, tenant: &TenantId, page: u32) -> Result<Option<PreviewPage>, PortError> {
        self.inner.preview_page(run, tenant, page).await
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

impl<S: Directories> Directories for Crashing<'_, S> {
    async fn connection(&self, tenant: &TenantId, id: &str) -> Result<Option<Connection>, PortError> {
        self.inner.connection(tenant, id).await
    }
    async fn connections(&self, tenant: &TenantId) -> Result<Vec<Connection>, PortError> {
        self.inner.connections(tenant).await
    }
    async fn user_by_name(&self, tenant: &TenantId, user_name: &str) -> Result<Option<UserId>, PortError> {
        self.inner.user_by_name(tenant, user_name).await
    }
    async fn push_view(&self, tenant: &TenantId, connection: &str, user: &UserId, user_name: &str) -> Result<PushView, PortError> {
        self.inner.push_view(tenant, connection, user, user_name).await
    }
    async fn group(&self, tenant: &TenantId, id: &str) -> Result<Option<DirGroup>, PortError> {
        self.inner.group(tenant, id).await
    }
    async fn group_by_name(&self, tenant: &TenantId, name: &str) -> Result<Option<DirGroup>, PortError> {
        self.inner.group_by_name(tenant, name).await
    }
    async fn groups_page(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> Result<(Vec<DirGroup>, Option<String>), PortError> {
        self.inner.groups_page(tenant, after, limit).await
    }
    async fn group_members(&self, tenant: &TenantId, group: &str) -> Result<Vec<Edge>, PortError> {
        self.inner.group_members(tenant, group).await
    }
}

impl<S: Targets> Targets for Crashing<'_, S> {
    async fn targets(&self, tenant: &TenantId) -> Result<Vec<Target>, PortError> {
        self.inner.targets(tenant).await
    }
    async fn pending(&self, tenant: &TenantId, target: &TargetId) -> Result<Vec<Pending>, PortError> {
        self.inner.pending(tenant, target).await
    }
    async fn delivered(&self, tenant: &TenantId, target: &TargetId, user: &UserId, seq: u64) -> Result<bool, PortError> {
        self.inner.delivered(tenant, target, user, seq).await
    }
    async fn refused(&self, tenant: &TenantId, target: &TargetId, pending: &Pending, reason: &str) -> Result<bool, PortError> {
        self.inner.refused(tenant, target, pending, reason).await
    }
    async fn save_health(&self, tenant: &TenantId, target: &Target) -> Result<bool, PortError> {
        self.inner.save_health(tenant, target).await
    }
    async fn drop_deliveries(&self, tenant: &TenantId, target: &TargetId) -> Result<usize, PortError> {
        self.inner.drop_deliveries(tenant, target).await
    }
}
