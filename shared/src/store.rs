//! The DynamoDB adapter: the one place that reads and writes tenant state.
//!
//! Layout (state table, keys `pk`/`sk`):
//!
//! | pk | sk | what |
//! | --- | --- | --- |
//! | `T#<tenant>` | `META` | effective access, seat counters, member sequence, audit chain head |
//! | `T#<tenant>` | `LIC#<source>#<license>` | a license as last recorded |
//! | `T#<tenant>` | `MEM#<user>` | a member and its access (the one-key lookup the app reads) |
//! | `E#<tenant>` | `<source>#<event>` | idempotency record of an accepted event (TTL) |
//! | `PARKED#<source>` | `<event>` | an event that could not be applied, with its reason |
//! | `T#<tenant>` | `TARGET#<target>` | a SCIM target (see [`crate::targets`]) |
//! | `S#<tenant>#<target>` | `<user>` | a member change not yet delivered to that target |
//! | `EM#<tenant>` | `<email, lowercase>` | the member holding that email (emails are unique per tenant, case-insensitively) |
//!
//! The audit table holds the chain: `tenant_id` (hash key), `seq` (range key).
//!
//! Every write to a tenant appends to its audit chain, and every append is
//! conditional on the chain head in `META` (`audit_seq = :expected`). So all
//! writes to one tenant are serialised through one optimistic lock, each
//! change is in one transaction with its audit record, and a decision taken
//! on a snapshot (a seat claim, source ordering) can never act on stale data.

use crate::access::{self, Member, MemberAccess, MemberStatus, Plan, TenantRules};
use crate::contract::ContractDocument;
use crate::api::{ApiError, MemberView, NewMember, TenantView};
use crate::audit::{self, AuditEvent, Cause, ChainHead, StoredRecord, Verification};
use crate::ids::{EventId, TenantId, UserId};
use crate::license::{decide_change, ChangeDecision, License, LicenseChange, Source, TenantAccess};
use crate::model::LicensingModel;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// DynamoDB's limit on actions per transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 100;
/// Member changes per reconcile chunk: each takes two items (member, audit
/// record); every chunk also moves the tenant's chain head and writes its
/// events to the outbox (two items).
pub const MEMBERS_PER_CHUNK: usize = members_per_chunk(0);

/// Member changes per reconcile transaction when the tenant has `targets`
/// SCIM targets: each change is its member item, its audit record and one
/// delivery record per target; the chain head and the outbox entry are shared.
pub const fn members_per_chunk(targets: usize) -> usize {
    (MAX_TRANSACTION_ITEMS - 2) / (2 + targets)
}
/// How long an accepted event id is remembered for idempotency.
pub const IDEMPOTENCY_DAYS: i64 = 35;
pub(crate) const MAX_ATTEMPTS: u32 = 60;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB request failed")]
    Dynamo(#[source] Box<aws_sdk_dynamodb::Error>),
    #[error("stored item {key} is unreadable: {why}")]
    Corrupt { key: String, why: String },
    #[error("gave up after {MAX_ATTEMPTS} attempts: {0} kept changing underneath")]
    Contention(String),
    #[error("injected crash after {0} committed chunk(s)")]
    InjectedCrash(usize),
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl<E, R> From<SdkError<E, R>> for StoreError
where
    aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
{
    fn from(e: SdkError<E, R>) -> Self {
        StoreError::Dynamo(Box::new(e.into()))
    }
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
pub(crate) fn tenant_pk(t: &TenantId) -> String {
    format!("T#{t}")
}
pub(crate) fn license_sk(source: Source, id: &str) -> String {
    format!("LIC#{}#{id}", source.as_str())
}
pub(crate) fn member_sk(u: &UserId) -> String {
    format!("MEM#{u}")
}

pub(crate) fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}
pub(crate) fn get_n(item: &HashMap<String, AttributeValue>, k: &str) -> Option<u64> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}
pub(crate) fn json_attr<T: serde::de::DeserializeOwned>(item: &HashMap<String, AttributeValue>, k: &str, key: &str) -> Result<Option<T>, StoreError> {
    match get_s(item, k) {
        None => Ok(None),
        Some(raw) => serde_json::from_str(raw).map(Some).map_err(|e| StoreError::Corrupt { key: key.to_string(), why: e.to_string() }),
    }
}
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}

/// The outcome of a single conditional write: `true` if it was made,
/// `false` if its condition did not hold; any other failure is an error.
pub(crate) fn condition_held<T, E, R>(res: Result<T, SdkError<E, R>>) -> Result<bool, StoreError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
    aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
{
    match res {
        Ok(_) => Ok(true),
        Err(e) if e.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// An email as it is unique per tenant: SCIM compares `userName`s without
/// regard to case, so `ADMIN@corp.example` and `admin@corp.example` are one.
pub fn email_key(email: &str) -> String {
    email.trim().to_lowercase()
}

pub fn now_rfc3339(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The tenant's `META` item.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantMeta {
    /// Set by the first reconcile; `None` until then.
    pub access: Option<TenantAccess>,
    pub seats_used: u32,
    pub seats_pending: u32,
    pub member_seq: u64,
    pub head: ChainHead,
    /// The contract role grants the last reconcile applied (used at creation).
    pub rules: TenantRules,
    /// A license or contract was recorded for the tenant: it is known to
    /// accounts and targets. (A tenant whose only events were parked has an
    /// audit chain, and so a `META`, but is not known.)
    pub licensed: bool,
}

impl TenantMeta {
    fn from_item(item: &HashMap<String, AttributeValue>, key: &str) -> Result<Self, StoreError> {
        Ok(TenantMeta {
            access: json_attr(item, "access", key)?,
            seats_used: get_n(item, "seats_used").unwrap_or(0) as u32,
            seats_pending: get_n(item, "seats_pending").unwrap_or(0) as u32,
            member_seq: get_n(item, "member_seq").unwrap_or(0),
            rules: json_attr(item, "rules", key)?.unwrap_or_default(),
            licensed: item.get("licensed").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false) || item.contains_key("access"),
            head: ChainHead {
                seq: get_n(item, "audit_seq").unwrap_or(0),
                hash: get_s(item, "audit_hash").unwrap_or(audit::GENESIS).to_string(),
            },
        })
    }
}

/// A member item: who the app says they are, and what access they have.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberItem {
    pub member: Member,
    pub access: MemberAccess,
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
    pub targets: Vec<crate::scim::Target>,
}

impl TenantState {
    pub fn rules(&self) -> TenantRules {
        crate::contract::merge_rules(self.contracts.iter().map(|(d, _)| d))
    }
}

/// What happened to an accepted license event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Applied,
    Stale { held_version: i64 },
    /// The same event id was accepted before (with the same body).
    Duplicate,
    Parked { reason: String },
}

impl Recorded {
    pub fn label(&self) -> &'static str {
        match self {
            Recorded::Applied => "applied",
            Recorded::Stale { .. } => "ignored_stale",
            Recorded::Duplicate => "duplicate",
            Recorded::Parked { .. } => "parked",
        }
    }
}

/// Knobs for tests: stop after a number of committed chunks, as a crash would.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReconcileOptions {
    pub crash_after_chunks: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReconcileOutcome {
    pub member_changes: usize,
    pub tenant_changed: bool,
    pub chunks: usize,
    /// SCIM targets the tenant had when it was read (none: nothing to deliver).
    pub targets: usize,
}

#[derive(Clone)]
pub struct Store {
    pub(crate) client: Client,
    pub(crate) state: String,
    pub(crate) audit: String,
    /// The rules every write consults (for example, when a license falls due).
    pub(crate) model: std::sync::Arc<LicensingModel>,
}

pub(crate) enum Commit {
    Done,
    /// The chain head moved (another writer): re-read and decide again.
    Retry,
    /// Item `index` of the transaction failed its own condition.
    Failed(usize),
}

pub(crate) async fn backoff(attempt: u32) {
    // Jittered exponential backoff, capped; no RNG dependency needed.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let base = 5u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_millis(base / 2 + u64::from(nanos) % base.max(1))).await;
}

impl Store {
    pub fn new(client: Client, tables: &crate::config::Tables, model: std::sync::Arc<LicensingModel>) -> Self {
        Store { client, state: tables.state.clone(), audit: tables.audit.clone(), model }
    }

    pub fn model(&self) -> &LicensingModel {
        &self.model
    }

    /// A license item, with its due attributes and a fresh revision.
    pub(crate) fn license_put(&self, tenant: &TenantId, license: &License, condition: Option<&str>) -> TransactWriteItem {
        let (pk, sk) = (tenant_pk(tenant), license_sk(license.source, license.license_id.as_str()));
        let due = crate::expiry::next_due(&self.model, license).map(|(at, _)| at);
        let mut put = Put::builder()
            .table_name(&self.state)
            .item("pk", s(pk.clone()))
            .item("sk", s(sk.clone()))
            .item("license", s(to_json(license)))
            .item("source_version", n(license.source_version));
        for (k, v) in crate::sweep::due_attributes(&pk, &sk, due) {
            put = put.item(k, v);
        }
        if let Some(c) = condition {
            put = put.condition_expression(c);
        }
        TransactWriteItem::builder().put(put.build().expect("table, item set")).build()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Commits one transaction. Items from `chain_from` on are the audit
    /// records and the chain-head lock: a failed condition there means another
    /// writer moved the chain first (retry); before it, the item's own
    /// condition failed.
    pub(crate) async fn commit(&self, items: Vec<TransactWriteItem>, chain_from: usize) -> Result<Commit, StoreError> {
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(Commit::Done),
            Err(SdkError::ServiceError(e)) => match e.err() {
                TransactWriteItemsError::TransactionCanceledException(c) => {
                    let reasons = c.cancellation_reasons();
                    let failed: Vec<usize> = reasons
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                        .map(|(i, _)| i)
                        .collect();
                    if let Some(&first) = failed.iter().find(|&&i| i < chain_from) {
                        Ok(Commit::Failed(first))
                    } else if !failed.is_empty() || reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                        Ok(Commit::Retry)
                    } else {
                        Err(StoreError::Dynamo(Box::new(TransactWriteItemsError::TransactionCanceledException(c.clone()).into())))
                    }
                }
                _ => Err(SdkError::ServiceError(e).into()),
            },
            Err(e) => Err(e.into()),
        }
    }

    pub async fn meta(&self, tenant: &TenantId) -> Result<Option<TenantMeta>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.state)
            .key("pk", s(tenant_pk(tenant)))
            .key("sk", s("META"))
            .consistent_read(true)
            .send()
            .await?;
        out.item.map(|i| TenantMeta::from_item(&i, &format!("{}/META", tenant_pk(tenant)))).transpose()
    }

    /// The `META` of a tenant known to accounts and targets (one with a
    /// license or contract), or 404.
    pub async fn known_tenant(&self, tenant: &TenantId) -> Result<TenantMeta, StoreError> {
        match self.meta(tenant).await? {
            Some(m) if m.licensed => Ok(m),
            _ => Err(ApiError::not_found(&format!("tenant {tenant}")).into()),
        }
    }

    pub(crate) async fn get(&self, pk: String, sk: String) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        Ok(self.client.get_item().table_name(&self.state).key("pk", s(pk)).key("sk", s(sk)).consistent_read(true).send().await?.item)
    }

    /// The chain's next records and the lock on the head, as transaction items.
    /// The lock item is always last.
    pub(crate) fn audit_and_lock(
        &self,
        tenant: &TenantId,
        meta: Option<&TenantMeta>,
        now: DateTime<Utc>,
        events: Vec<AuditEvent>,
        set_meta: Vec<(&str, AttributeValue)>,
    ) -> (Vec<TransactWriteItem>, ChainHead) {
        let head = meta.map(|m| m.head.clone()).unwrap_or_else(ChainHead::genesis);
        let (records, new_head) = audit::chain(tenant.as_str(), &head, &now_rfc3339(now), events);
        let mut items: Vec<TransactWriteItem> = records
            .into_iter()
            .map(|(r, json, hash)| {
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.audit)
                            .item("tenant_id", s(tenant.as_str()))
                            .item("seq", n(r.seq))
                            .item("record", s(json))
                            .item("hash", s(hash))
                            .condition_expression("attribute_not_exists(seq)")
                            .build()
                            .expect("table, item set"),
                    )
                    .build()
            })
            .collect();
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut sets = vec!["audit_seq = :new_seq".to_string(), "audit_hash = :new_hash".to_string(), "updated_at = :now".to_string()];
        values.insert(":new_seq".to_string(), n(new_head.seq));
        values.insert(":new_hash".to_string(), s(new_head.hash.clone()));
        values.insert(":now".to_string(), s(now_rfc3339(now)));
        for (i, (attr, value)) in set_meta.into_iter().enumerate() {
            names.insert(format!("#a{i}"), attr.to_string());
            values.insert(format!(":v{i}"), value);
            sets.push(format!("#a{i} = :v{i}"));
        }
        let condition = match meta {
            Some(m) => {
                values.insert(":expected".to_string(), n(m.head.seq));
                "audit_seq = :expected"
            }
            None => "attribute_not_exists(pk)",
        };
        let mut update = Update::builder()
            .table_name(&self.state)
            .key("pk", s(tenant_pk(tenant)))
            .key("sk", s("META"))
            .update_expression(format!("SET {}", sets.join(", ")))
            .condition_expression(condition)
            .set_expression_attribute_values(Some(values));
        if !names.is_empty() {
            update = update.set_expression_attribute_names(Some(names));
        }
        items.push(TransactWriteItem::builder().update(update.build().expect("key, expression set")).build());
        (items, new_head)
    }

    /// Records a license change idempotently (on the source's event id) and in
    /// source order, with its audit record, in one transaction.
    pub async fn record_license_change(&self, change: &LicenseChange, body_hash: &str, now: DateTime<Utc>) -> Result<Recorded, StoreError> {
        let tenant = &change.tenant_id;
        let lic_sk = license_sk(change.source, change.license_id.as_str());
        let cause = Cause::new(
            match change.source {
                Source::Stripe => audit::CauseKind::StripeEvent,
                _ => audit::CauseKind::CrmEvent,
            },
            change.event_id.as_str(),
        );
        for attempt in 0..MAX_ATTEMPTS {
            let meta = self.meta(tenant).await?;
            let current: Option<License> = match self.get(tenant_pk(tenant), lic_sk.clone()).await? {
                Some(item) => json_attr(&item, "license", &lic_sk)?,
                None => None,
            };
            let decision = decide_change(current.as_ref(), change, now);
            let (event, outcome, license_put) = match &decision {
                ChangeDecision::Apply(new) => (
                    AuditEvent {
                        action: "license_recorded".into(),
                        subject: format!("license:{}:{}", change.source.as_str(), change.license_id),
                        cause: cause.clone(),
                        rule: format!("source order: version {} is newer than {}", change.source_version, current.as_ref().map_or("none".to_string(), |c| c.source_version.to_string())),
                        before: current.as_ref().map(|c| serde_json::to_value(c).expect("serialises")),
                        after: Some(serde_json::to_value(new).expect("serialises")),
                    },
                    Recorded::Applied,
                    Some(new),
                ),
                ChangeDecision::Stale { held_version } => (
                    AuditEvent {
                        action: "license_ignored_stale".into(),
                        subject: format!("license:{}:{}", change.source.as_str(), change.license_id),
                        cause: cause.clone(),
                        rule: format!("source order: version {} is not newer than the held version {held_version}", change.source_version),
                        before: current.as_ref().map(|c| serde_json::to_value(c).expect("serialises")),
                        after: None,
                    },
                    Recorded::Stale { held_version: *held_version },
                    None,
                ),
                ChangeDecision::NoBase => {
                    let reason = format!("a status-only change for license {} that was never recorded", change.license_id);
                    (
                        AuditEvent {
                            action: "event_parked".into(),
                            subject: format!("license:{}:{}", change.source.as_str(), change.license_id),
                            cause: cause.clone(),
                            rule: reason.clone(),
                            before: None,
                            after: None,
                        },
                        Recorded::Parked { reason },
                        None,
                    )
                }
            };
            let mut items = vec![self.event_put(tenant, change.source, &change.event_id, body_hash, outcome.label(), now)];
            if let Some(new) = license_put {
                items.push(self.license_put(tenant, new, None));
            }
            if let Recorded::Parked { reason } = &outcome {
                items.push(self.parked_put(change.source, &change.event_id, Some(tenant), reason, &serde_json::to_value(change).expect("serialises"), now));
            }
            let licensed = if license_put.is_some() { vec![("licensed", AttributeValue::Bool(true))] } else { vec![] };
            let (audit_items, _) = self.audit_and_lock(tenant, meta.as_ref(), now, vec![event], licensed);
            let chain_from = items.len();
            items.extend(audit_items);
            match self.commit(items, chain_from).await? {
                Commit::Done => return Ok(outcome),
                Commit::Failed(0) => return self.duplicate_or_conflict(tenant, change.source, &change.event_id, body_hash).await,
                Commit::Failed(i) => {
                    return Err(StoreError::Corrupt { key: lic_sk, why: format!("unexpected condition failure on transaction item {i}") })
                }
                Commit::Retry => backoff(attempt).await,
            }
        }
        Err(StoreError::Contention(format!("tenant {tenant}")))
    }

    fn event_put(&self, tenant: &TenantId, source: Source, event: &EventId, body_hash: &str, outcome: &str, now: DateTime<Utc>) -> TransactWriteItem {
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.state)
                    .item("pk", s(format!("E#{tenant}")))
                    .item("sk", s(format!("{}#{event}", source.as_str())))
                    .item("body_hash", s(body_hash))
                    .item("outcome", s(outcome))
                    .item("accepted_at", s(now_rfc3339(now)))
                    .item("ttl", n((now + chrono::Duration::days(IDEMPOTENCY_DAYS)).timestamp()))
                    .condition_expression("attribute_not_exists(pk)")
                    .build()
                    .expect("table, item set"),
            )
            .build()
    }

    fn parked_put(&self, source: Source, event: &EventId, tenant: Option<&TenantId>, reason: &str, payload: &serde_json::Value, now: DateTime<Utc>) -> TransactWriteItem {
        let mut put = Put::builder()
            .table_name(&self.state)
            .item("pk", s(format!("PARKED#{}", source.as_str())))
            .item("sk", s(event.as_str()))
            .item("reason", s(reason))
            .item("payload", s(payload.to_string()))
            .item("parked_at", s(now_rfc3339(now)));
        if let Some(t) = tenant {
            put = put.item("tenant_id", s(t.as_str()));
        }
        TransactWriteItem::builder().put(put.build().expect("table, item set")).build()
    }

    async fn duplicate_or_conflict(&self, tenant: &TenantId, source: Source, event: &EventId, body_hash: &str) -> Result<Recorded, StoreError> {
        let item = self.get(format!("E#{tenant}"), format!("{}#{event}", source.as_str())).await?;
        match item.as_ref().and_then(|i| get_s(i, "body_hash")) {
            Some(h) if h == body_hash => Ok(Recorded::Duplicate),
            _ => Err(ApiError::new(409, "event_id_reused", format!("event {event} was already accepted with a different body")).into()),
        }
    }

    /// Parks an event that cannot be applied as it is, with its reason
    /// (nothing lost; idempotent on its id). When the event names its
    /// tenant, the decision not to apply it is audited in that tenant's
    /// chain (`event_parked`), in the same transaction. Returns whether it
    /// was parked now (false: it was parked before).
    pub async fn park(&self, source: Source, event: &EventId, tenant: Option<&TenantId>, reason: &str, payload: &serde_json::Value, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let Some(tenant) = tenant else {
            let TransactWriteItem { put, .. } = self.parked_put(source, event, None, reason, payload, now);
            let put = put.expect("built as a put");
            let res = self
                .client
                .put_item()
                .table_name(put.table_name)
                .set_item(Some(put.item))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            return condition_held(res);
        };
        let kind = match source {
            Source::Stripe => audit::CauseKind::StripeEvent,
            _ => audit::CauseKind::CrmEvent,
        };
        for attempt in 0..MAX_ATTEMPTS {
            let meta = self.meta(tenant).await?;
            let mut parked = self.parked_put(source, event, Some(tenant), reason, payload, now);
            if let Some(p) = parked.put.as_mut() {
                p.condition_expression = Some("attribute_not_exists(pk)".into());
            }
            let audit_event = AuditEvent {
                action: "event_parked".into(),
                subject: format!("event:{}:{event}", source.as_str()),
                cause: Cause::new(kind, event.as_str()),
                rule: reason.to_string(),
                before: None,
                after: None,
            };
            let mut items = vec![parked];
            let (audit_items, _) = self.audit_and_lock(tenant, meta.as_ref(), now, vec![audit_event], vec![]);
            items.extend(audit_items);
            match self.commit(items, 1).await? {
                Commit::Done => return Ok(true),
                Commit::Failed(_) => return Ok(false), // parked (and audited) before
                Commit::Retry => backoff(attempt).await,
            }
        }
        Err(StoreError::Contention(format!("tenant {tenant}")))
    }

    /// Every item of a partition whose sort key starts with `prefix`, read
    /// consistently, all pages.
    pub(crate) async fn query_partition(&self, pk: String, prefix: &str) -> Result<Vec<HashMap<String, AttributeValue>>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let mut query = self.client.query().table_name(&self.state).expression_attribute_values(":pk", s(pk.clone()));
            // DynamoDB refuses an empty begins_with operand: no prefix, no condition on sk.
            query = if prefix.is_empty() {
                query.key_condition_expression("pk = :pk")
            } else {
                query.key_condition_expression("pk = :pk AND begins_with(sk, :p)").expression_attribute_values(":p", s(prefix))
            };
            let page = query.consistent_read(true).set_exclusive_start_key(start).send().await?;
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(out),
            }
        }
    }

    /// Reads everything desired access depends on, consistently.
    pub async fn load_tenant(&self, tenant: &TenantId) -> Result<Option<TenantState>, StoreError> {
        let mut meta = None;
        let mut licenses = Vec::new();
        let mut members = Vec::new();
        let mut contracts = Vec::new();
        let mut targets = Vec::new();
        {
            let items = self.query_partition(tenant_pk(tenant), "").await?;
            for item in &items {
                let sk = get_s(item, "sk").unwrap_or_default();
                let key = format!("{}/{sk}", tenant_pk(tenant));
                if sk == "META" {
                    meta = Some(TenantMeta::from_item(item, &key)?);
                } else if sk.starts_with("LIC#") {
                    licenses.extend(json_attr::<License>(item, "license", &key)?);
                } else if sk.starts_with("MEM#") {
                    let member: Member = json_attr(item, "member", &key)?.ok_or_else(|| StoreError::Corrupt { key: key.clone(), why: "no member".into() })?;
                    let access: MemberAccess = json_attr(item, "access", &key)?.ok_or_else(|| StoreError::Corrupt { key: key.clone(), why: "no access".into() })?;
                    members.push(MemberItem { member, access });
                } else if sk.starts_with("CONTRACT#") {
                    let doc: ContractDocument = json_attr(item, "document", &key)?.ok_or_else(|| StoreError::Corrupt { key: key.clone(), why: "no document".into() })?;
                    contracts.push((doc, get_n(item, "version").unwrap_or(0)));
                } else if sk.starts_with("TARGET#") {
                    targets.extend(crate::targets::target_from_item(item, &key)?);
                }
            }
        }
        Ok(meta.map(|meta| TenantState { meta, licenses, members, contracts, targets }))
    }

    pub async fn member(&self, tenant: &TenantId, user: &UserId) -> Result<Option<MemberItem>, StoreError> {
        let key = format!("{}/{}", tenant_pk(tenant), member_sk(user));
        match self.get(tenant_pk(tenant), member_sk(user)).await? {
            None => Ok(None),
            Some(item) => Ok(Some(MemberItem {
                member: json_attr(&item, "member", &key)?.ok_or_else(|| StoreError::Corrupt { key: key.clone(), why: "no member".into() })?,
                access: json_attr(&item, "access", &key)?.ok_or_else(|| StoreError::Corrupt { key: key.clone(), why: "no access".into() })?,
            })),
        }
    }

    /// Claims a member's email for it (conditional: nobody else holds it).
    fn email_claim(&self, tenant: &TenantId, member: &Member) -> TransactWriteItem {
        let put = Put::builder()
            .table_name(&self.state)
            .item("pk", s(format!("EM#{tenant}")))
            .item("sk", s(email_key(&member.email)))
            .item("user_id", s(member.user_id.as_str()))
            .condition_expression("attribute_not_exists(pk) OR user_id = :u")
            .expression_attribute_values(":u", s(member.user_id.as_str()))
            .build()
            .expect("table, item set");
        TransactWriteItem::builder().put(put).build()
    }

    /// Frees a removed member's email (conditional: only its own claim).
    fn email_release(&self, tenant: &TenantId, member: &Member) -> TransactWriteItem {
        let delete = aws_sdk_dynamodb::types::Delete::builder()
            .table_name(&self.state)
            .key("pk", s(format!("EM#{tenant}")))
            .key("sk", s(email_key(&member.email)))
            .condition_expression("attribute_not_exists(pk) OR user_id = :u")
            .expression_attribute_values(":u", s(member.user_id.as_str()))
            .build()
            .expect("table, key set");
        TransactWriteItem::builder().delete(delete).build()
    }

    pub(crate) fn member_put(&self, tenant: &TenantId, item: &MemberItem) -> TransactWriteItem {
        TransactWriteItem::builder()
            .put(
                Put::builder()
                    .table_name(&self.state)
                    .item("pk", s(tenant_pk(tenant)))
                    .item("sk", s(member_sk(&item.member.user_id)))
                    .item("member", s(to_json(&item.member)))
                    .item("access", s(to_json(&item.access)))
                    .item("status", s(item.access.status.as_str()))
                    .build()
                    .expect("table, item set"),
            )
            .build()
    }

    /// Account creation: claims a seat at this moment, atomically. Returns the
    /// member and whether it was created now (false: an identical earlier
    /// request already created it).
    pub async fn create_member(&self, tenant: &TenantId, new: &NewMember, request_id: &str, now: DateTime<Utc>) -> Result<(MemberView, bool), StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            let meta = self.known_tenant(tenant).await?;
            if let Some(existing) = self.member(tenant, &new.user_id).await? {
                if !existing.member.removed {
                    let same = existing.member.email == new.email && existing.member.groups == new.groups && existing.member.attributes == new.attributes;
                    if same {
                        return Ok((MemberView::new(tenant.clone(), new.user_id.clone(), &existing.access), false));
                    }
                    return Err(ApiError::new(409, "member_exists", format!("member {} already exists with different details", new.user_id)).into());
                }
            }
            let member = Member {
                user_id: new.user_id.clone(),
                email: new.email.clone(),
                groups: new.groups.clone(),
                attributes: new.attributes.clone(),
                seq: meta.member_seq + 1,
                removed: false,
            };
            let (status, access, rule) = match &meta.access {
                Some(t) => {
                    let status = access::status_on_create(t, meta.seats_used, meta.seats_pending);
                    let rule = match status {
                        MemberStatus::Active => format!("seat claimed at creation: {} of {} seats were in use", meta.seats_used, t.seats_total),
                        MemberStatus::PendingSeat => format!("no free seat at creation: {} of {} in use, {} waiting", meta.seats_used, t.seats_total, meta.seats_pending),
                        _ => format!("tenant is {}: {}", t.status, t.rule),
                    };
                    (status, access::access_on_create(&self.model, t, &meta.rules, &member, status), rule)
                }
                None => (MemberStatus::PendingSeat, MemberAccess::without_access(MemberStatus::PendingSeat), "tenant access not yet provisioned".to_string()),
            };
            let item = MemberItem { member, access };
            let event = AuditEvent {
                action: "member_created".into(),
                subject: format!("member:{}", new.user_id),
                cause: Cause::new(audit::CauseKind::ApiCall, request_id),
                rule,
                before: None,
                after: Some(serde_json::to_value(&item.access).expect("serialises")),
            };
            let used = meta.seats_used + u32::from(status == MemberStatus::Active);
            let pending = meta.seats_pending + u32::from(status == MemberStatus::PendingSeat);
            // Read after the head: a target added since moves the head and retries us.
            let targets = self.targets(tenant).await?;
            // The email is claimed in the same transaction: unique per
            // tenant, case-insensitively (SCIM userNames are).
            let mut items = vec![self.email_claim(tenant, &item.member), self.member_put(tenant, &item)];
            items.extend(self.sync_puts(tenant, &targets, &item, meta.head.seq + 1, now));
            let (audit_items, _) = self.audit_and_lock(
                tenant,
                Some(&meta),
                now,
                vec![event],
                vec![("seats_used", n(used)), ("seats_pending", n(pending)), ("member_seq", n(item.member.seq))],
            );
            let chain_from = items.len();
            items.extend(audit_items);
            match self.commit(items, chain_from).await? {
                Commit::Done => return Ok((MemberView::new(tenant.clone(), new.user_id.clone(), &item.access), true)),
                Commit::Retry => backoff(attempt).await,
                Commit::Failed(0) => {
                    return Err(ApiError::new(409, "email_taken", format!("another member of tenant {tenant} already has the email {} (emails are unique per tenant, case-insensitively)", new.email)).into())
                }
                Commit::Failed(i) => return Err(StoreError::Corrupt { key: member_sk(&new.user_id), why: format!("unexpected condition failure on item {i}") }),
            }
        }
        Err(StoreError::Contention(format!("tenant {tenant}")))
    }

    /// Account removal: deprovisions at once and frees the seat.
    pub async fn remove_member(&self, tenant: &TenantId, user: &UserId, request_id: &str, now: DateTime<Utc>) -> Result<MemberView, StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            let meta = self.meta(tenant).await?.ok_or_else(|| ApiError::not_found(&format!("tenant {tenant}")))?;
            let existing = self.member(tenant, user).await?.ok_or_else(|| ApiError::not_found(&format!("member {user} of tenant {tenant}")))?;
            if existing.member.removed {
                return Ok(MemberView::new(tenant.clone(), user.clone(), &existing.access));
            }
            let after = MemberAccess::without_access(MemberStatus::Deprovisioned);
            let event = AuditEvent {
                action: "member_removed".into(),
                subject: format!("member:{user}"),
                cause: Cause::new(audit::CauseKind::ApiCall, request_id),
                rule: "account removed by the app: deprovisioned, seat released".into(),
                before: Some(serde_json::to_value(&existing.access).expect("serialises")),
                after: Some(serde_json::to_value(&after).expect("serialises")),
            };
            let used = meta.seats_used - u32::from(existing.access.status == MemberStatus::Active).min(meta.seats_used);
            let pending = meta.seats_pending - u32::from(existing.access.status == MemberStatus::PendingSeat).min(meta.seats_pending);
            let item = MemberItem { member: Member { removed: true, ..existing.member }, access: after };
            let targets = self.targets(tenant).await?;
            let mut items = vec![self.email_release(tenant, &item.member), self.member_put(tenant, &item)];
            items.extend(self.sync_puts(tenant, &targets, &item, meta.head.seq + 1, now));
            let (audit_items, _) = self.audit_and_lock(tenant, Some(&meta), now, vec![event], vec![("seats_used", n(used)), ("seats_pending", n(pending))]);
            let chain_from = items.len();
            items.extend(audit_items);
            match self.commit(items, chain_from).await? {
                Commit::Done => return Ok(MemberView::new(tenant.clone(), user.clone(), &item.access)),
                Commit::Retry => backoff(attempt).await,
                Commit::Failed(i) => return Err(StoreError::Corrupt { key: member_sk(user), why: format!("unexpected condition failure on item {i}") }),
            }
        }
        Err(StoreError::Contention(format!("tenant {tenant}")))
    }

    /// Makes actual access equal desired access for one tenant, in chunks of
    /// at most [`MAX_TRANSACTION_ITEMS`] items, each change with its audit
    /// record. Level-triggered: after a crash between chunks the next run
    /// reads what was applied and finishes the rest.
    pub async fn reconcile(&self, tenant: &TenantId, cause: &Cause, opts: ReconcileOptions, now: DateTime<Utc>) -> Result<ReconcileOutcome, StoreError> {
        let mut outcome = ReconcileOutcome::default();
        'attempt: for attempt in 0..MAX_ATTEMPTS {
            let Some(state) = self.load_tenant(tenant).await? else {
                return Ok(outcome);
            };
            outcome.targets = state.targets.len();
            let members: Vec<Member> = state.members.iter().map(|m| m.member.clone()).collect();
            let mut actual: BTreeMap<UserId, MemberAccess> = state.members.iter().map(|m| (m.member.user_id.clone(), m.access.clone())).collect();
            let by_id: BTreeMap<UserId, &Member> = state.members.iter().map(|m| (m.member.user_id.clone(), &m.member)).collect();
            let rules = state.rules();
            let desired = access::desired_access_with_rules(&self.model, &state.licenses, &rules, &members);
            let plan: Plan = access::plan(tenant, desired, state.meta.access.as_ref(), &actual);
            let rules_change = state.meta.rules != rules;
            if plan.is_empty() && !rules_change {
                return Ok(outcome);
            }
            let mut meta = state.meta.clone();
            let access_change = !meta.access.as_ref().is_some_and(|a| a.same_access(&plan.tenant_after));
            let tenant_changes = access_change || rules_change;
            let mut remaining = plan.member_changes.as_slice();
            let mut first = true;
            while first || !remaining.is_empty() {
                let per_chunk = members_per_chunk(state.targets.len());
                let room = if first && tenant_changes { per_chunk - 1 } else { per_chunk };
                let (chunk, rest) = remaining.split_at(room.min(remaining.len()));
                let mut events = Vec::new();
                let mut set_meta = Vec::new();
                if first && access_change {
                    events.push(AuditEvent {
                        action: "tenant_access_changed".into(),
                        subject: "tenant".into(),
                        cause: cause.clone(),
                        rule: plan.tenant_after.rule.clone(),
                        before: meta.access.as_ref().map(|a| serde_json::to_value(a).expect("serialises")),
                        after: Some(serde_json::to_value(&plan.tenant_after).expect("serialises")),
                    });
                    set_meta.push(("access", s(to_json(&plan.tenant_after))));
                }
                if first && rules_change {
                    events.push(AuditEvent {
                        action: "tenant_rules_changed".into(),
                        subject: "tenant".into(),
                        cause: cause.clone(),
                        rule: "contract role mappings and named users".into(),
                        before: Some(serde_json::to_value(&meta.rules).expect("serialises")),
                        after: Some(serde_json::to_value(&rules).expect("serialises")),
                    });
                    set_meta.push(("rules", s(to_json(&rules))));
                }
                let mut items = Vec::new();
                for change in chunk {
                    let member = by_id[&change.user_id];
                    let changed = MemberItem { member: member.clone(), access: change.after.clone() };
                    items.push(self.member_put(tenant, &changed));
                    items.extend(self.sync_puts(tenant, &state.targets, &changed, meta.head.seq + 1, now));
                    events.push(AuditEvent {
                        action: "member_access_changed".into(),
                        subject: format!("member:{}", change.user_id),
                        cause: cause.clone(),
                        rule: change.rule.clone(),
                        before: Some(serde_json::to_value(&change.before).expect("serialises")),
                        after: Some(serde_json::to_value(&change.after).expect("serialises")),
                    });
                    actual.insert(change.user_id.clone(), change.after.clone());
                }
                // The access-changed events of this chunk go to the outbox in
                // the same transaction (published after commit).
                let first_seq = meta.head.seq + 1;
                let at = now_rfc3339(now);
                let announced: Vec<serde_json::Value> =
                    events.iter().enumerate().filter_map(|(i, e)| crate::events::access_event(tenant, first_seq + i as u64, &at, e)).collect();
                if !announced.is_empty() {
                    items.push(self.outbox_put(tenant, first_seq, &announced));
                }
                let used = actual.values().filter(|a| a.status == MemberStatus::Active).count() as u32;
                let pending = actual.values().filter(|a| a.status == MemberStatus::PendingSeat).count() as u32;
                set_meta.push(("seats_used", n(used)));
                set_meta.push(("seats_pending", n(pending)));
                let (audit_items, new_head) = self.audit_and_lock(tenant, Some(&meta), now, events, set_meta);
                let chain_from = items.len();
                items.extend(audit_items);
                debug_assert!(items.len() <= MAX_TRANSACTION_ITEMS);
                match self.commit(items, chain_from).await? {
                    Commit::Done => {
                        outcome.chunks += 1;
                        outcome.member_changes += chunk.len();
                        outcome.tenant_changed |= first && tenant_changes;
                        meta.head = new_head;
                        if first && access_change {
                            meta.access = Some(plan.tenant_after.clone());
                        }
                        if first && rules_change {
                            meta.rules = rules.clone();
                        }
                    }
                    Commit::Retry => {
                        backoff(attempt).await;
                        continue 'attempt;
                    }
                    Commit::Failed(i) => return Err(StoreError::Corrupt { key: tenant_pk(tenant), why: format!("unexpected condition failure on item {i}") }),
                }
                if opts.crash_after_chunks == Some(outcome.chunks) && !rest.is_empty() {
                    return Err(StoreError::InjectedCrash(outcome.chunks));
                }
                remaining = rest;
                first = false;
            }
            return Ok(outcome);
        }
        Err(StoreError::Contention(format!("tenant {tenant}")))
    }

    /// Records a barrier mark on the tenant (see `ReconcileRequest::barrier`).
    pub async fn mark_barrier(&self, tenant: &TenantId, mark: &str) -> Result<bool, StoreError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.state)
            .key("pk", s(tenant_pk(tenant)))
            .key("sk", s("META"))
            .update_expression("SET barrier = :b")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":b", s(mark))
            .send()
            .await;
        condition_held(res)
    }

    pub async fn tenant_view(&self, tenant: &TenantId) -> Result<Option<TenantView>, StoreError> {
        Ok(self.meta(tenant).await?.and_then(|m| m.access.map(|a| TenantView::new(tenant.clone(), &a, m.seats_used, m.seats_pending))))
    }

    /// One page of the audit trail, oldest first, after `after_seq`.
    pub async fn audit_page(&self, tenant: &TenantId, after_seq: u64, limit: i32) -> Result<(Vec<StoredRecord>, bool), StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.audit)
            .key_condition_expression("tenant_id = :t AND seq > :after")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":after", n(after_seq))
            .limit(limit)
            .consistent_read(true)
            .send()
            .await?;
        let records = out
            .items()
            .iter()
            .map(|i| StoredRecord {
                seq: get_n(i, "seq").unwrap_or(0),
                json: get_s(i, "record").unwrap_or_default().to_string(),
                hash: get_s(i, "hash").unwrap_or_default().to_string(),
            })
            .collect();
        Ok((records, out.last_evaluated_key.is_some_and(|k| !k.is_empty())))
    }

    /// Verifies the tenant's whole chain against its head. Writers keep
    /// appending while this reads: the chain is checked as of the head read
    /// first (every record up to it was committed with it); records beyond a
    /// second read of the head belong to no chain and are reported.
    pub async fn verify_audit(&self, tenant: &TenantId) -> Result<Option<Verification>, StoreError> {
        let Some(meta) = self.meta(tenant).await? else { return Ok(None) };
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let (page, more) = self.audit_page(tenant, after, 1000).await?;
            if let Some(last) = page.last() {
                after = last.seq;
            }
            all.extend(page);
            if !more {
                break;
            }
        }
        let beyond: Vec<u64> = all.iter().map(|r| r.seq).filter(|&seq| seq > meta.head.seq).collect();
        all.retain(|r| r.seq <= meta.head.seq);
        let mut verification = audit::verify(tenant.as_str(), &all, &meta.head);
        if verification.ok && !beyond.is_empty() {
            let latest = self.meta(tenant).await?.map(|m| m.head.seq).unwrap_or(0);
            if let Some(&orphan) = beyond.iter().find(|&&seq| seq > latest) {
                verification = audit::Verification {
                    ok: false,
                    records: verification.records,
                    first_bad_seq: Some(orphan),
                    problem: Some(format!("record {orphan} lies beyond the tenant's head (record {latest})")),
                    head_hash: meta.head.hash.clone(),
                };
            }
        }
        Ok(Some(verification))
    }
}
