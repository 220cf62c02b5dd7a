//! SCIM targets in the store: their configuration, their health, their
//! tokens (in Secrets Manager, never in the table), and the delivery
//! records that carry member changes to them.
//!
//! | pk | sk | what |
//! | --- | --- | --- |
//! | `T#<tenant>` | `TARGET#<target>` | configuration (`target`), health (`health`), when to wake (`due_at`) |
//! | `S#<tenant>#<target>` | `<user>` | a delivery record: the member's latest state (`member`, `access`) and its `seq` |
//!
//! A delivery record is written in the same transaction as the member
//! change it reports (one per target), so that no change is committed
//! without it. It holds the member's latest state, not an operation: a
//! newer change replaces it, delivery makes the target match that state, and
//! removes the record only if no newer change replaced it meanwhile. One
//! deliverer per tenant at a time (the tenant's FIFO message group) keeps a
//! member's changes in order.

use crate::access::{Member, MemberAccess};
use crate::audit::{AuditEvent, Cause};
use crate::ids::{TargetId, TenantId, UserId};
use crate::scim::{Health, Target, MAX_TARGETS_PER_TENANT};
use crate::store::{backoff, condition_held, get_n, get_s, json_attr, n, now_rfc3339, s, tenant_pk, to_json, Commit, MemberItem, Store, StoreError, MAX_ATTEMPTS};
use crate::api::ApiError;
use crate::sweep::due_attributes;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use chrono::{DateTime, Utc};
use std::collections::HashMap;

/// A member's delivery to one target is parked after this many refusals.
pub const MAX_REFUSALS: u32 = 5;

pub(crate) fn target_sk(t: &TargetId) -> String {
    format!("TARGET#{t}")
}

pub(crate) fn sync_pk(tenant: &TenantId, target: &TargetId) -> String {
    format!("S#{tenant}#{target}")
}

/// A delivery record waiting for its target.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub member: Member,
    pub access: MemberAccess,
    pub seq: u64,
    pub refusals: u32,
    pub parked: Option<String>,
}

pub(crate) fn target_from_item(item: &HashMap<String, AttributeValue>, key: &str) -> Result<Option<Target>, StoreError> {
    let Some(mut target): Option<Target> = json_attr(item, "target", key)? else { return Ok(None) };
    target.health = json_attr(item, "health", key)?.unwrap_or_default();
    Ok(Some(target))
}

impl Store {
    /// The tenant's targets, read consistently.
    pub async fn targets(&self, tenant: &TenantId) -> Result<Vec<Target>, StoreError> {
        let mut out = Vec::new();
        for item in self.query_partition(tenant_pk(tenant), "TARGET#").await? {
            let key = format!("{}/{}", tenant_pk(tenant), get_s(&item, "sk").unwrap_or_default());
            out.extend(target_from_item(&item, &key)?);
        }
        Ok(out)
    }

    /// Delivery records for a member change, one per target, for the
    /// change's transaction.
    pub(crate) fn sync_puts(&self, tenant: &TenantId, targets: &[Target], item: &MemberItem, seq: u64, now: DateTime<Utc>) -> Vec<TransactWriteItem> {
        targets
            .iter()
            .map(|t| {
                let (pk, sk) = (sync_pk(tenant, &t.target_id), item.member.user_id.to_string());
                let mut put = Put::builder()
                    .table_name(&self.state)
                    .item("member", s(to_json(&item.member)))
                    .item("access", s(to_json(&item.access)))
                    .item("seq", n(seq))
                    .item("written_at", s(now_rfc3339(now)));
                for (k, v) in due_attributes(&pk, &sk, Some(now)) {
                    put = put.item(k, v);
                }
                TransactWriteItem::builder().put(put.item("pk", s(pk)).item("sk", s(sk)).build().expect("table, item set")).build()
            })
            .collect()
    }

    /// Delivery records waiting for a target, in member order.
    pub async fn pending(&self, tenant: &TenantId, target: &TargetId) -> Result<Vec<Pending>, StoreError> {
        let pk = sync_pk(tenant, target);
        let mut out = Vec::new();
        for item in self.query_partition(pk.clone(), "").await? {
            let key = format!("{pk}/{}", get_s(&item, "sk").unwrap_or_default());
            let member = json_attr(&item, "member", &key)?.ok_or_else(|| StoreError::Corrupt { key: key.clone(), why: "no member".into() })?;
            let access = json_attr(&item, "access", &key)?.ok_or_else(|| StoreError::Corrupt { key: key.clone(), why: "no access".into() })?;
            out.push(Pending {
                member,
                access,
                seq: get_n(&item, "seq").unwrap_or(0),
                refusals: get_n(&item, "refusals").unwrap_or(0) as u32,
                parked: get_s(&item, "parked").map(str::to_string),
            });
        }
        Ok(out)
    }

    /// The target took the member's state: the record goes, unless a newer
    /// change replaced it meanwhile (then that one is delivered next).
    pub async fn sync_done(&self, tenant: &TenantId, target: &TargetId, user: &UserId, seq: u64) -> Result<bool, StoreError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.state)
            .key("pk", s(sync_pk(tenant, target)))
            .key("sk", s(user.as_str()))
            .condition_expression("seq = :seq")
            .expression_attribute_values(":seq", n(seq))
            .send()
            .await;
        condition_held(res)
    }

    /// The target refused the member's state: counted, and after
    /// [`MAX_REFUSALS`] parked with its reason (out of the due index) until
    /// the member changes again.
    pub async fn sync_refused(&self, tenant: &TenantId, target: &TargetId, pending: &Pending, reason: &str) -> Result<bool, StoreError> {
        let refusals = pending.refusals + 1;
        let mut update = self
            .client
            .update_item()
            .table_name(&self.state)
            .key("pk", s(sync_pk(tenant, target)))
            .key("sk", s(pending.member.user_id.as_str()))
            .condition_expression("seq = :seq")
            .expression_attribute_values(":seq", n(pending.seq))
            .expression_attribute_values(":r", n(refusals))
            .expression_attribute_values(":e", s(reason.chars().take(500).collect::<String>()));
        update = if refusals >= MAX_REFUSALS {
            update.update_expression("SET refusals = :r, last_error = :e, parked = :e REMOVE due_at, due_shard")
        } else {
            update.update_expression("SET refusals = :r, last_error = :e")
        };
        condition_held(update.send().await)
    }

    /// Parks a member's delivery to a target at once, with the reason and an
    /// audit record (`delivery_parked`), under the tenant's lock: the
    /// target holds the member's userName for someone else's user, which is
    /// never adopted. `seq`: the delivery record being parked (a newer
    /// change replaces it and is tried afresh); `None` (drift repair): a
    /// parked record is written only where none is waiting. Returns whether
    /// it parked.
    #[allow(clippy::too_many_arguments)]
    pub async fn park_delivery(&self, tenant: &TenantId, target: &TargetId, member: &Member, access: &MemberAccess, seq: Option<u64>, reason: &str, cause: &Cause, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let reason: String = reason.chars().take(500).collect();
        for attempt in 0..MAX_ATTEMPTS {
            let Some(meta) = self.meta(tenant).await? else { return Ok(false) };
            let mut put = Put::builder()
                .table_name(&self.state)
                .item("pk", s(sync_pk(tenant, target)))
                .item("sk", s(member.user_id.as_str()))
                .item("member", s(to_json(member)))
                .item("access", s(to_json(access)))
                .item("seq", n(seq.unwrap_or(meta.head.seq)))
                .item("refusals", n(MAX_REFUSALS))
                .item("last_error", s(reason.clone()))
                .item("parked", s(reason.clone()))
                .item("written_at", s(now_rfc3339(now)));
            put = match seq {
                Some(q) => put.condition_expression("seq = :seq").expression_attribute_values(":seq", n(q)),
                None => put.condition_expression("attribute_not_exists(pk)"),
            };
            let event = AuditEvent {
                action: "delivery_parked".into(),
                subject: format!("member:{}", member.user_id),
                cause: cause.clone(),
                rule: reason.clone(),
                before: None,
                after: Some(serde_json::json!({"target_id": target, "parked": reason})),
            };
            let mut items = vec![TransactWriteItem::builder().put(put.build().expect("table, item set")).build()];
            let (audit_items, _) = self.audit_and_lock(tenant, Some(&meta), now, vec![event], vec![]);
            let chain_from = items.len();
            items.extend(audit_items);
            match self.commit(items, chain_from).await? {
                Commit::Done => return Ok(true),
                // A newer change replaced the record (or one is already parked): nothing to park.
                Commit::Failed(_) => return Ok(false),
                Commit::Retry => backoff(attempt).await,
            }
        }
        Err(StoreError::Contention(format!("tenant {tenant}")))
    }

    /// Creates or reconfigures a target (keeping its health), with its audit
    /// record, under the tenant's lock. Returns the target and whether it is new.
    pub async fn put_target(&self, tenant: &TenantId, target: Target, request_id: &str, now: DateTime<Utc>) -> Result<(Target, bool), StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            let meta = self.known_tenant(tenant).await?;
            let existing = self.targets(tenant).await?;
            let before = existing.iter().find(|t| t.target_id == target.target_id).cloned();
            if before.is_none() && existing.len() >= MAX_TARGETS_PER_TENANT {
                return Err(ApiError::new(409, "too_many_targets", format!("tenant {tenant} already has {MAX_TARGETS_PER_TENANT} targets, the most a tenant may have")).into());
            }
            // The health stays what provision last recorded (the caller
            // queues a repair, which also covers a new place or shape).
            let mut after = target.clone();
            after.health = before.as_ref().map(|b| b.health.clone()).unwrap_or_default();
            let view = |t: &Target| serde_json::json!({"base_url": t.base_url, "mapping": t.mapping, "repair_interval_minutes": t.repair_interval_minutes});
            let event = AuditEvent {
                action: if before.is_some() { "target_reconfigured" } else { "target_configured" }.into(),
                subject: format!("target:{}", target.target_id),
                cause: Cause::new(crate::audit::CauseKind::ApiCall, request_id),
                rule: "SCIM target configured by the tenant's admin (token kept in Secrets Manager)".into(),
                before: before.as_ref().map(view),
                after: Some(view(&after)),
            };
            let mut items = vec![self.target_update(tenant, &after, true)];
            let (audit_items, _) = self.audit_and_lock(tenant, Some(&meta), now, vec![event], vec![]);
            let chain_from = items.len();
            items.extend(audit_items);
            match self.commit(items, chain_from).await? {
                Commit::Done => return Ok((after, before.is_none())),
                Commit::Retry => backoff(attempt).await,
                Commit::Failed(i) => return Err(StoreError::Corrupt { key: target_sk(&target.target_id), why: format!("unexpected condition failure on item {i}") }),
            }
        }
        Err(StoreError::Contention(format!("tenant {tenant}")))
    }

    /// Writes a target's configuration (`config`: the health is only set
    /// when there is none yet) or its health, and when it should next wake
    /// up. A configuration write never overwrites the health provision keeps.
    fn target_update(&self, tenant: &TenantId, target: &Target, config: bool) -> TransactWriteItem {
        let (pk, sk) = (tenant_pk(tenant), target_sk(&target.target_id));
        let due = due_attributes(&pk, &sk, Some(target.wake_at().max(DateTime::<Utc>::UNIX_EPOCH)));
        let mut update = Update::builder().table_name(&self.state).key("pk", s(pk)).key("sk", s(sk));
        let mut sets = vec![if config { "health = if_not_exists(health, :h)" } else { "health = :h" }.to_string()];
        update = update.expression_attribute_values(":h", s(to_json(&target.health)));
        if config {
            let mut stored = target.clone();
            stored.health = Health::default();
            sets.push("target = :t".into());
            update = update.expression_attribute_values(":t", s(to_json(&stored)));
        } else {
            update = update.condition_expression("attribute_exists(pk)");
        }
        for (k, v) in due {
            sets.push(format!("{k} = :{k}"));
            update = update.expression_attribute_values(format!(":{k}"), v);
        }
        TransactWriteItem::builder().update(update.update_expression(format!("SET {}", sets.join(", "))).build().expect("key, expression set")).build()
    }

    /// Records a target's health after a delivery run. A change of standing
    /// (quarantined, resumed) or a repair that changed something is audited,
    /// and announced on the bus, in the same transaction.
    pub async fn set_target_health(&self, tenant: &TenantId, target: &Target, audit: Vec<AuditEvent>, now: DateTime<Utc>) -> Result<(), StoreError> {
        if audit.is_empty() {
            let item = self.target_update(tenant, target, false);
            let u = item.update.expect("an update");
            let res = self
                .client
                .update_item()
                .table_name(u.table_name)
                .set_key(Some(u.key))
                .update_expression(u.update_expression)
                .set_condition_expression(u.condition_expression)
                .set_expression_attribute_values(u.expression_attribute_values)
                .send()
                .await;
            condition_held(res)?; // a target removed meanwhile has no health to keep
            return Ok(());
        }
        for attempt in 0..MAX_ATTEMPTS {
            let Some(meta) = self.meta(tenant).await? else { return Ok(()) };
            let first_seq = meta.head.seq + 1;
            let at = now_rfc3339(now);
            let announced: Vec<serde_json::Value> =
                audit.iter().enumerate().filter_map(|(i, e)| crate::events::access_event(tenant, first_seq + i as u64, &at, e)).collect();
            let mut items = vec![self.target_update(tenant, target, false)];
            if !announced.is_empty() {
                items.push(self.outbox_put(tenant, first_seq, &announced));
            }
            let (audit_items, _) = self.audit_and_lock(tenant, Some(&meta), now, audit.clone(), vec![]);
            let chain_from = items.len();
            items.extend(audit_items);
            match self.commit(items, chain_from).await? {
                Commit::Done => return Ok(()),
                Commit::Retry => backoff(attempt).await,
                Commit::Failed(_) => return Ok(()), // the target was removed meanwhile
            }
        }
        Err(StoreError::Contention(format!("tenant {tenant}")))
    }
}

/// Bearer tokens of targets, in AWS Secrets Manager: one secret per target,
/// named `<prefix>/<tenant>/<target>`, encrypted with the stack's key.
#[derive(Clone)]
pub struct TokenStore {
    client: aws_sdk_secretsmanager::Client,
    prefix: String,
    kms_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("Secrets Manager: {0}")]
pub struct TokenError(String);

impl TokenStore {
    pub fn new(client: aws_sdk_secretsmanager::Client, prefix: String, kms_key: Option<String>) -> Self {
        TokenStore { client, prefix: prefix.trim_end_matches('/').to_string(), kms_key }
    }

    pub fn secret_name(&self, tenant: &TenantId, target: &TargetId) -> String {
        format!("{}/{tenant}/{target}", self.prefix)
    }

    /// Stores (or rotates) a target's token.
    pub async fn put(&self, tenant: &TenantId, target: &TargetId, token: &str) -> Result<(), TokenError> {
        let name = self.secret_name(tenant, target);
        let exists = match self.described(&name).await? {
            Some(deleted) => {
                if deleted {
                    // The target was removed and is configured again: bring the secret back.
                    self.client.restore_secret().secret_id(&name).send().await.map_err(|e| TokenError(crate::http::error_chain(&e)))?;
                }
                true
            }
            None => false,
        };
        if exists {
            self.client.put_secret_value().secret_id(&name).secret_string(token).send().await.map_err(|e| TokenError(crate::http::error_chain(&e)))?;
        } else {
            let mut create = self
                .client
                .create_secret()
                .name(&name)
                .description(format!("Entitle: bearer token of SCIM target {target} of tenant {tenant}"))
                .secret_string(token);
            if let Some(k) = &self.kms_key {
                create = create.kms_key_id(k);
            }
            create.send().await.map_err(|e| TokenError(crate::http::error_chain(&e)))?;
        }
        Ok(())
    }

    /// Deletes a target's token (Secrets Manager keeps it recoverable for 7
    /// days); a token already gone is fine.
    pub async fn delete(&self, secret_id: &str) -> Result<(), TokenError> {
        if self.described(secret_id).await? != Some(false) {
            return Ok(()); // gone, or already scheduled for deletion
        }
        match self.client.delete_secret().secret_id(secret_id).recovery_window_in_days(7).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(()),
            Err(e) => Err(TokenError(crate::http::error_chain(&e))),
        }
    }

    /// Whether a secret exists: `None` if not, `Some(true)` if it is
    /// scheduled for deletion.
    async fn described(&self, name: &str) -> Result<Option<bool>, TokenError> {
        match self.client.describe_secret().secret_id(name).send().await {
            Ok(d) => Ok(Some(d.deleted_date.is_some())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(TokenError(crate::http::error_chain(&e))),
        }
    }

    pub async fn get(&self, secret_id: &str) -> Result<String, TokenError> {
        let out = self.client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| TokenError(crate::http::error_chain(&e)))?;
        out.secret_string.ok_or_else(|| TokenError(format!("secret {secret_id} holds no string")))
    }
}

impl Store {
    /// The tenant's targets as the API shows them, with their backlog.
    pub async fn target_views(&self, tenant: &TenantId) -> Result<Vec<crate::scim::TargetView>, StoreError> {
        let mut out = Vec::new();
        for t in self.targets(tenant).await? {
            let pending = self.pending(tenant, &t.target_id).await?;
            let parked: Vec<crate::scim::ParkedDelivery> = pending
                .iter()
                .filter_map(|p| p.parked.as_ref().map(|r| crate::scim::ParkedDelivery { user_id: p.member.user_id.clone(), reason: r.clone() }))
                .collect();
            out.push(crate::scim::TargetView::new(&t, pending.len() - parked.len(), parked));
        }
        Ok(out)
    }
}

impl Store {
    /// Removes a target, with its audit record, under the tenant's lock, then
    /// the delivery records left for it. Returns the removed target (none
    /// if there was none) and how many undelivered records were dropped.
    /// After a crash between the two steps, repeating the call drops the
    /// leftovers.
    pub async fn remove_target(&self, tenant: &TenantId, target_id: &TargetId, request_id: &str, now: DateTime<Utc>) -> Result<(Option<Target>, usize), StoreError> {
        let mut removed = None;
        for attempt in 0..MAX_ATTEMPTS {
            let meta = self.meta(tenant).await?.ok_or_else(|| ApiError::not_found(&format!("tenant {tenant}")))?;
            let Some(before) = self.targets(tenant).await?.into_iter().find(|t| &t.target_id == target_id) else { break };
            let event = AuditEvent {
                action: "target_removed".into(),
                subject: format!("target:{target_id}"),
                cause: Cause::new(crate::audit::CauseKind::ApiCall, request_id),
                rule: "SCIM target removed by the tenant's admin: nothing more is delivered to it; its token is deleted".into(),
                before: Some(serde_json::json!({"base_url": before.base_url, "mapping": before.mapping, "repair_interval_minutes": before.repair_interval_minutes})),
                after: None,
            };
            let delete = aws_sdk_dynamodb::types::Delete::builder()
                .table_name(&self.state)
                .key("pk", s(tenant_pk(tenant)))
                .key("sk", s(target_sk(target_id)))
                .condition_expression("attribute_exists(pk)")
                .build()
                .expect("table, key set");
            let mut items = vec![TransactWriteItem::builder().delete(delete).build()];
            let (audit_items, _) = self.audit_and_lock(tenant, Some(&meta), now, vec![event], vec![]);
            let chain_from = items.len();
            items.extend(audit_items);
            match self.commit(items, chain_from).await? {
                Commit::Done => {
                    removed = Some(before);
                    break;
                }
                Commit::Retry | Commit::Failed(_) => backoff(attempt).await,
            }
        }
        // Member changes committed before the removal wrote records for it;
        // later ones see no target (they read targets under the same lock).
        let mut dropped = 0;
        let pk = sync_pk(tenant, target_id);
        for item in self.query_partition(pk.clone(), "").await? {
            let Some(sk) = get_s(&item, "sk") else { continue };
            self.client.delete_item().table_name(&self.state).key("pk", s(pk.clone())).key("sk", s(sk)).send().await?;
            dropped += 1;
        }
        Ok((removed, dropped))
    }
}
