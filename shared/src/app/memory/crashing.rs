//! A store whose commits fail after a number of them: a crash between the
//! transactions of a use case, around the in-memory ports or DynamoDB.

use crate::app::ports::*;
use crate::core::audit::{ChainHead, PendingRecord, StoredRecord};
use crate::core::ids::{EventId, ModelVersion, RunId, TargetId, TenantId, UserId};
use crate::core::license::{License, Source};
use crate::core::model::LicensingModel;
use crate::core::provider::connection::Connection;
use crate::core::provider::{DirGroup, Edge};
use crate::core::scim::{Pending, Target};
use crate::core::seats::SeatList;
use crate::core::tenant::{MemberItem, TenantHead, TenantMeta, TenantState};
use crate::core::versions::{Outcome, PreviewPage, Registered, Registration, RunState};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
pub fn is_injected_crash(e: &crate::app::Error) -> bool {
    matches!(e, crate::app::Error::Port(PortError::Corrupt { why, .. }) if why == "injected crash")
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
    async fn seat_order_page(&self, tenant: &TenantId, list: SeatList, after: Option<&str>, limit: usize) -> Result<(Vec<MemberItem>, Option<String>), PortError> {
        self.inner.seat_order_page(tenant, list, after, limit).await
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
    async fn note_push(&self, tenant: &TenantId, connection: &str, note: crate::core::provider::connection::PushNote, at: chrono::DateTime<chrono::Utc>) -> Result<(), PortError> {
        self.inner.note_push(tenant, connection, note, at).await
    }
    async fn push_stats(&self, tenant: &TenantId) -> Result<std::collections::BTreeMap<String, crate::core::provider::connection::PushStats>, PortError> {
        self.inner.push_stats(tenant).await
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
