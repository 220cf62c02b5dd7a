//! Access-changed events on an EventBridge bus. Events are written to the
//! outbox in the same transaction as the change they describe, published
//! after commit, and removed from the outbox only once the bus accepted them:
//! a crash in between publishes them again on the next run (consumers
//! deduplicate on the event's `id`).

use crate::ids::TenantId;
use crate::store::{get_s, s, Store, StoreError};
use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::Value;

/// `source` of every Entitle event on the bus.
pub const SOURCE: &str = "entitle";
/// How long a publisher holds an outbox entry it is sending.
pub const CLAIM_SECS: i64 = 30;

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("EventBridge refused the events")]
    Bus(#[source] Box<aws_sdk_eventbridge::Error>),
}

#[derive(Clone)]
pub struct EventBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: String) -> Self {
        EventBus { client, bus }
    }

    /// Publishes everything in the outbox; returns how many events were published.
    /// Each entry is first claimed for a while, so that two publishers
    /// running at once do not both send it; a claim left by a publisher that
    /// died expires and the entry goes out with the next one.
    pub async fn publish_outbox(&self, store: &Store) -> Result<usize, PublishError> {
        let mut published = 0;
        for (key, events) in store.outbox().await? {
            if !store.claim_outbox(&key, chrono::Utc::now()).await? {
                continue;
            }
            if self.publish(&events).await? {
                store.outbox_done(&key).await?;
                published += events.len();
            }
        }
        Ok(published)
    }

    /// Puts events on the bus; true when the bus accepted every one.
    async fn publish(&self, events: &[Value]) -> Result<bool, PublishError> {
        let mut all = true;
        for chunk in events.chunks(10) {
            let entries: Vec<PutEventsRequestEntry> = chunk
                .iter()
                .map(|e| {
                    let mut entry = PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(SOURCE)
                        .detail_type(e["type"].as_str().unwrap_or("entitle.event"))
                        .detail(e.to_string());
                    // The event's time is when it happened (for the sweep, its "as of").
                    if let Some(at) = e["due_at"].as_str().or(e["at"].as_str()).and_then(|d| d.parse::<chrono::DateTime<chrono::Utc>>().ok()) {
                        entry = entry.time(aws_sdk_eventbridge::primitives::DateTime::from_secs(at.timestamp()));
                    }
                    entry.build()
                })
                .collect();
            let out = self.client.put_events().set_entries(Some(entries)).send().await.map_err(|e| PublishError::Bus(Box::new(e.into())))?;
            all &= out.failed_entry_count() == 0;
        }
        Ok(all)
    }
}

impl Store {
    /// An outbox entry for the events of one transaction, keyed by the
    /// tenant and the position of its first audit record: unique, and in the
    /// tenant's order.
    pub(crate) fn outbox_put(&self, tenant: &TenantId, first_seq: u64, events: &[Value]) -> TransactWriteItem {
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.state)
                    .item("pk", s("OUTBOX"))
                    .item("sk", s(format!("{tenant}#{first_seq:012}")))
                    .item("events", s(Value::Array(events.to_vec()).to_string()))
                    .build()
                    .expect("table, item set"),
            )
            .build()
    }

    /// Outbox entries not yet published: key and events.
    pub async fn outbox(&self) -> Result<Vec<(String, Vec<Value>)>, StoreError> {
        let items = self.query_partition("OUTBOX".into(), "").await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let events: Vec<Value> = get_s(i, "events").and_then(|e| serde_json::from_str(e).ok())?;
                Some((get_s(i, "sk")?.to_string(), events))
            })
            .collect())
    }

    /// Claims an outbox entry for [`CLAIM_SECS`]; false if another publisher holds it.
    pub async fn claim_outbox(&self, key: &str, now: chrono::DateTime<chrono::Utc>) -> Result<bool, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.state)
            .key("pk", s("OUTBOX"))
            .key("sk", s(key))
            .update_expression("SET claimed_until = :until")
            .condition_expression("attribute_exists(pk) AND (attribute_not_exists(claimed_until) OR claimed_until < :now)")
            .expression_attribute_values(":until", crate::store::n(now.timestamp() + CLAIM_SECS))
            .expression_attribute_values(":now", crate::store::n(now.timestamp()))
            .send()
            .await;
        crate::store::condition_held(res)
    }

    pub async fn outbox_done(&self, key: &str) -> Result<(), StoreError> {
        self.client.delete_item().table_name(&self.state).key("pk", s("OUTBOX")).key("sk", s(key)).send().await?;
        Ok(())
    }
}

/// The id of an event: the tenant and the audit record it reports, so that
/// a redelivered event carries the same id.
pub fn event_id(tenant: &TenantId, seq: u64) -> String {
    crate::audit::hash_of(&format!("{tenant}/{seq}"))
}

/// The access-changed event an audit record announces, if any:
/// `member.access_changed` or `tenant.access_changed` (see the README for
/// the schema). Built from the record itself, so the two never disagree.
pub fn access_event(tenant: &TenantId, seq: u64, at: &str, record: &crate::audit::AuditEvent) -> Option<Value> {
    let (before, after) = (record.before.clone().unwrap_or(Value::Null), record.after.clone().unwrap_or(Value::Null));
    let id = event_id(tenant, seq);
    match record.action.as_str() {
        "member_access_changed" => {
            let status = |v: &Value| v["status"].as_str().unwrap_or_default().to_string();
            let roles = |v: &Value| -> std::collections::BTreeSet<String> {
                v["roles"].as_array().into_iter().flatten().filter_map(|r| r.as_str().map(str::to_string)).collect()
            };
            let seat = match (status(&before) == "active", status(&after) == "active") {
                (false, true) => Value::from("gained"),
                (true, false) => Value::from("lost"),
                _ => Value::Null,
            };
            let (rb, ra) = (roles(&before), roles(&after));
            Some(serde_json::json!({
                "id": id, "type": "member.access_changed", "at": at,
                "tenant_id": tenant, "user_id": record.subject.trim_start_matches("member:"),
                "seat": seat,
                "status": {"before": status(&before), "after": status(&after)},
                "roles_added": ra.difference(&rb).collect::<Vec<_>>(),
                "roles_removed": rb.difference(&ra).collect::<Vec<_>>(),
                "entitlements": {"before": before["entitlements"], "after": after["entitlements"]},
                "rule": record.rule, "cause": record.cause,
            }))
        }
        "tenant_access_changed" => {
            let summary = |v: &Value| serde_json::json!({"tier": v["tier"], "status": v["status"], "seats_total": v["seats_total"], "entitlements": v["entitlements"]});
            Some(serde_json::json!({
                "id": id, "type": "tenant.access_changed", "at": at,
                "tenant_id": tenant,
                "before": if before.is_null() { Value::Null } else { summary(&before) },
                "after": summary(&after),
                "rule": record.rule, "cause": record.cause,
            }))
        }
        "target_quarantined" | "target_resumed" => Some(serde_json::json!({
            "id": id,
            "type": if record.action == "target_quarantined" { "target.quarantined" } else { "target.resumed" },
            "at": at,
            "tenant_id": tenant, "target_id": record.subject.trim_start_matches("target:"),
            "failures": after["failures"], "first_failure_at": after["first_failure_at"],
            "retry_at": after["retry_at"], "last_error": after["last_error"],
            "rule": record.rule, "cause": record.cause,
        })),
        _ => None,
    }
}
