//! [`Tenants`] in memory (the tenant's state, its members, its audit
//! chain and the one write path), and members' cached tokens.

use super::Memory;
use crate::app::ports::*;
use crate::core::audit::{ChainHead, PendingRecord, StoredRecord};
use crate::core::contract::ContractDocument;
use crate::core::ids::{EventId, TenantId, UserId};
use crate::core::license::{License, Source};
use crate::core::reconcile::MAX_TRANSACTION_ITEMS;
use crate::core::seats::{order_key_string, SeatList};
use crate::core::tenant::{MemberItem, TenantHead, TenantMeta, TenantState};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::atomic::Ordering;

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

    async fn seat_order_page(&self, tenant: &TenantId, list: SeatList, after: Option<&str>, limit: usize) -> Result<(Vec<MemberItem>, Option<String>), PortError> {
        let all = self.seat_order(tenant, list, false, usize::MAX).await?;
        let rest: Vec<(String, MemberItem)> = all.into_iter().map(|m| (order_key_string(&m.seat, &m.member.user_id), m)).filter(|(k, _)| after.is_none_or(|a| k.as_str() > a)).collect();
        let more = rest.len() > limit;
        let page: Vec<(String, MemberItem)> = rest.into_iter().take(limit).collect();
        let next = if more { page.last().map(|(k, _)| k.clone()) } else { None };
        Ok((page.into_iter().map(|(_, m)| m).collect(), next))
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
