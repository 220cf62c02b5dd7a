//! How a change lands in memory: each write on its own condition, the
//! seat counters, and the audit chain (or, without the lock, its records
//! pending), as the DynamoDB adapter's one transaction does.

use super::{Db, Memory};
use crate::app::ports::*;
use crate::core::access::TenantRules;
use crate::core::audit::{self, ChainHead, PendingRecord, StoredRecord};
use crate::core::events::announced;
use crate::core::ids::{ModelVersion, TenantId};
use crate::core::scim::{Pending, Target, MAX_REFUSALS};
use crate::core::tenant::{email_key, TenantMeta};
use serde_json::json;

impl Memory {
    /// Applies a change; `head` is the chain's head for a chained change,
    /// `None` for one committed without the lock (its records go pending);
    /// `seq` numbers its delivery records. A contract's tenant is written
    /// with its first change.
    pub(super) fn apply(db: &mut Db, deployed: &ModelVersion, tenant: &TenantId, head: Option<&ChainHead>, seq: u64, change: &Change, salt: &str) {
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
    pub(super) fn seats_allow(db: &Db, tenant: &TenantId, m: &MetaUpdate) -> bool {
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
    pub(super) fn holds(db: &Db, tenant: &TenantId, w: &Write) -> bool {
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
