//! The DynamoDB adapter: the ports of tenant state, contracts, targets and
//! the due index over two tables; and the events of each change, which the
//! state table's stream carries to the bus (an EventBridge Pipe).
//!
//! State table, keys `pk`/`sk`:
//!
//! | pk | sk | what |
//! | --- | --- | --- |
//! | `T#<tenant>` | `META` | effective access (and its `seats_total`, `seated` as plain attributes), seat counters, audit chain head, `licensed` |
//! | `T#<tenant>` | `AQ#<time>#<tie>` | an audit record written without the chain's lock (account creation or removal), until chained |
//! | `T#<tenant>` | `LIC#<source>#<license>` | a license as last recorded |
//! | `T#<tenant>` | `MEM#<user>` | a member and its access (the one-key lookup the app reads); holders and members in line carry `seat_list`/`seat_order` (the sparse `seats` index) |
//! | `T#<tenant>` | `TARGET#<target>` | a SCIM target: configuration, health, when to wake |
//! | `T#<tenant>` | `CONTRACT#<contract>` | a contract's current document and version |
//! | `E#<tenant>` | `<source>#<event>` | idempotency record of an accepted event (TTL) |
//! | `EM#<tenant>` | `<email, lowercase>` | the member holding that email (unique per tenant, case-insensitively) |
//! | `S#<tenant>#<target>` | `<user>` | a member change not yet delivered to that target |
//! | `C#<contract>` | `META` / `V#<version>` / `A#<amendment>` | a contract's tenant, history, amendments |
//! | `PARKED#<source>` | `<event>` | an event that could not be applied, with its reason |
//! | `CP#<tenant>` | `<seq, 20 digits>` | a signed checkpoint of the tenant's audit chain (the sweep's, periodically) |
//! | `EV#<tenant>` | `<event id>` | an access-changed event, written with its change; the stream's Pipe puts it on the bus (TTL: a day) |
//! | `D#<tenant>` | `CONN#…`, `UN#…`, `G#…`, `GN#…`, `GM#…` | the tenant's directory: connections, userName and group name claims, groups and their members (see [`directory`]) |
//! | `T#<tenant>` | `MODEL_DUE` | when the tenant's model pin ends or its waiting move falls due (in the `due` index) |
//! | `MODEL` | `HEAD` / `VER#<version>` | the registry of licensing model versions: the latest and first, each version's fingerprint and text (see [`models`]) |
//! | `RUNS` / `RUNS#ACTIVE` / `RUN#<id>` | `<id>` / `<id>` / `T#<tenant>`, `P#<tenant>#<page>` | rollouts and previews, the ones not finished, each tenant's outcome and preview pages |
//!
//! A tenant's `META` carries `model_version` (absent: stored before versions
//! were kept, it follows the first registered version) and `model_list`
//! (`V#<version>`) with `tier`: the sparse `models` index of tenants by
//! the version they follow.
//! The audit table holds the chain: `tenant_id` (hash key), `seq` (range key).
//! Items with a pending time-based transition carry `due_at`/`due_shard`
//! and are in the sparse `due` index (see [`due`]); so does a tenant's
//! `META` while its chain head awaits a signed checkpoint. Amendments waiting for
//! review carry `review_queue`/`review_at` and are in the sparse `review`
//! index (one partition, oldest first). Members holding a seat or waiting in
//! line carry `seat_list` (`H#<tenant>` or `W#<tenant>`) and `seat_order`
//! (their place in the seat order) and are in the sparse `seats` index.
//!
//! Every write of a tenant is one transaction ([`commit`]): its items,
//! its audit records (each conditional on a new sequence number) and the
//! tenant's `META`, conditional on the chain head the change was decided on
//! (`audit_seq = :expected`). So all writes of a tenant serialise through
//! one optimistic lock, each change is in one transaction with its audit
//! record, and a decision taken on a snapshot can never act on stale data.

mod checkpoints;
mod commit;
mod contracts;
mod directory;
pub mod due;
pub mod models;
pub mod parked;
mod portal;
mod targets;
mod tenants;
mod tokens;

use crate::app::ports::PortError;
use crate::core::audit::{ChainHead, GENESIS};
use crate::core::ids::{ModelVersion, TargetId, TenantId, UserId};
use crate::core::license::Source;
use crate::core::model::LicensingModel;
use crate::core::scim::{Pending, Target};
use crate::core::tenant::TenantMeta;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;

/// How long an accepted event id is remembered for idempotency.
pub const IDEMPOTENCY_DAYS: i64 = 35;
/// How long an event item stays (the stream has long passed it on).
pub const EVENT_TTL_HOURS: i64 = 24;
/// The sort key of a tenant's model item in the due index (a pin's end, a
/// waiting move).
pub(crate) const MODEL_DUE: &str = "MODEL_DUE";
/// The partition key prefix of event items; the Pipe's filter names it.
pub const EVENTS_PK_PREFIX: &str = "EV#";

/// The two tables, and the deployed licensing model (the rules of its
/// version until the registry has it; the registry's versions are read
/// and kept once needed).
#[derive(Clone)]
pub struct Dynamo {
    pub(crate) client: Client,
    pub(crate) state: String,
    pub(crate) audit: String,
    pub(crate) deployed: Arc<LicensingModel>,
    pub(crate) models: Arc<models::Kept>,
    /// The pending audit records a tenant's head holds at most.
    pub(crate) pending_page: usize,
    /// Where the registry and the runs live: the partition names' prefix
    /// (empty; the emulator tests keep registries of their own).
    pub(crate) registry: String,
}

impl Dynamo {
    pub fn new(client: Client, state: String, audit: String, deployed: Arc<LicensingModel>) -> Self {
        Dynamo { client, state, audit, deployed, models: Arc::default(), pending_page: crate::core::tenant::PENDING_PAGE, registry: String::new() }
    }

    /// The same tables with a registry of its own (partitions named after
    /// `prefix`): a test registers versions without touching the stack's.
    pub fn with_registry(self, prefix: &str) -> Self {
        Dynamo { registry: prefix.to_string(), models: Arc::default(), ..self }
    }

    /// The registry's prefix (see [`Self::with_registry`]).
    pub fn registry_prefix(&self) -> &str {
        &self.registry
    }

    /// The same tables with a smaller page of pending audit records (tests
    /// reach the paging with a few records).
    pub fn with_pending_page(self, pending_page: usize) -> Self {
        Dynamo { pending_page: pending_page.max(1), ..self }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The deployed model.
    pub fn model(&self) -> &LicensingModel {
        &self.deployed
    }

    pub(crate) async fn get(&self, pk: String, sk: String) -> Result<Option<Item>, PortError> {
        let out = self.client.get_item().table_name(&self.state).key("pk", s(pk)).key("sk", s(sk)).consistent_read(true).send().await.map_err(failed("GetItem"))?;
        Ok(out.item)
    }

    /// Every item of a partition whose sort key starts with `prefix`, read
    /// consistently, all pages.
    pub(crate) async fn query_partition(&self, pk: String, prefix: &str) -> Result<Vec<Item>, PortError> {
        let query = self.client.query().table_name(&self.state).expression_attribute_values(":pk", s(pk));
        // No prefix, no condition on sk (DynamoDB refuses an empty operand).
        let query = if prefix.is_empty() {
            query.key_condition_expression("pk = :pk")
        } else {
            query.key_condition_expression("pk = :pk AND sk BETWEEN :p AND :last").expression_attribute_values(":p", s(prefix)).expression_attribute_values(":last", s(last_key_with_prefix(prefix)))
        };
        all_items(query.consistent_read(true)).await
    }

    /// One page (at most `limit` items) of a partition's items whose sort
    /// key starts with `prefix`, after the sort key `after`, read
    /// consistently: (items, the last sort key read when there may be more).
    pub(crate) async fn query_page(&self, pk: String, prefix: &str, after: Option<String>, limit: usize) -> Result<(Vec<Item>, Option<String>), PortError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.state)
            .key_condition_expression("pk = :pk AND sk BETWEEN :p AND :last")
            .expression_attribute_values(":pk", s(&pk))
            .expression_attribute_values(":p", s(prefix))
            .expression_attribute_values(":last", s(last_key_with_prefix(prefix)))
            .consistent_read(true)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX));
        if let Some(sk) = after {
            query = query.exclusive_start_key("pk", s(pk)).exclusive_start_key("sk", s(sk));
        }
        let out = query.send().await.map_err(failed("Query"))?;
        let next = out.last_evaluated_key.as_ref().and_then(|k| get_s(k, "sk")).map(str::to_string);
        Ok((out.items.unwrap_or_default(), next))
    }
}

/// The greatest sort key that starts with `prefix`: the prefix, then the
/// greatest UTF-8 characters up to DynamoDB's 1,024-byte sort key. Every key
/// with the prefix sorts between the two (DynamoDB orders strings by their
/// UTF-8 bytes), so `sk BETWEEN prefix AND this` is `begins_with(sk, prefix)`.
/// It is written as a range because DynamoDB Local answers `begins_with` on
/// the sort key by reading the whole partition (52 ms against 5 ms at 55,000
/// members), and real DynamoDB serves both the same way.
pub(crate) fn last_key_with_prefix(prefix: &str) -> String {
    const SORT_KEY_BYTES: usize = 1024;
    let mut last = String::with_capacity(SORT_KEY_BYTES.max(prefix.len()));
    last.push_str(prefix);
    // The greatest character of each UTF-8 length, longest first.
    for greatest in ['\u{10FFFF}', '\u{FFFF}', '\u{7FF}', '\u{7F}'] {
        while last.len() + greatest.len_utf8() <= SORT_KEY_BYTES {
            last.push(greatest);
        }
    }
    last
}

/// Every item a query finds, all pages (from its exclusive start key, if it has one).
pub(crate) async fn all_items(query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder) -> Result<Vec<Item>, PortError> {
    let mut out = Vec::new();
    let mut start = query.get_exclusive_start_key().clone();
    loop {
        let page = query.clone().set_exclusive_start_key(start).send().await.map_err(failed("Query"))?;
        out.extend(page.items.unwrap_or_default());
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return Ok(out),
        }
    }
}

pub(crate) type Item = HashMap<String, AttributeValue>;

/// A failed request of DynamoDB, named.
pub(crate) fn failed<E, R>(what: &'static str) -> impl Fn(SdkError<E, R>) -> PortError
where
    aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
{
    move |e| PortError::unavailable(what, aws_sdk_dynamodb::Error::from(e))
}

/// The outcome of a single conditional write: `true` if it was made,
/// `false` if its condition did not hold; any other failure is an error.
pub(crate) fn condition_held<T, E, R>(what: &'static str, res: Result<T, SdkError<E, R>>) -> Result<bool, PortError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata,
    aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
{
    match res {
        Ok(_) => Ok(true),
        Err(e) if condition_failed(&e) => Ok(false),
        Err(e) => Err(failed(what)(e)),
    }
}

/// Whether a request was refused for its condition expression.
pub(crate) fn condition_failed<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error().and_then(|e| e.code()) == Some("ConditionalCheckFailedException")
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
pub(crate) fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
pub(crate) fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}
pub(crate) fn get_n(item: &Item, k: &str) -> Option<u64> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}
pub(crate) fn json_attr<T: serde::de::DeserializeOwned>(item: &Item, k: &str, key: &str) -> Result<Option<T>, PortError> {
    match get_s(item, k) {
        None => Ok(None),
        Some(raw) => serde_json::from_str(raw).map(Some).map_err(|e| PortError::Corrupt { key: key.to_string(), why: e.to_string() }),
    }
}
pub(crate) fn required<T: serde::de::DeserializeOwned>(item: &Item, k: &str, key: &str) -> Result<T, PortError> {
    json_attr(item, k, key)?.ok_or_else(|| PortError::Corrupt { key: key.to_string(), why: format!("no {k}") })
}
pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serialises")
}
pub(crate) fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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
pub(crate) fn target_sk(t: &TargetId) -> String {
    format!("TARGET#{t}")
}
pub(crate) fn sync_pk(tenant: &TenantId, target: &TargetId) -> String {
    format!("S#{tenant}#{target}")
}
pub(crate) fn events_pk(tenant: &TenantId) -> String {
    format!("{EVENTS_PK_PREFIX}{tenant}")
}
pub(crate) fn email_pk(tenant: &TenantId) -> String {
    format!("EM#{tenant}")
}
pub(crate) fn contract_pk(c: &crate::core::ids::ContractId) -> String {
    format!("C#{c}")
}

/// A tenant's `META` as stored; one stored before versions were kept
/// follows `legacy` (the first registered version).
pub(crate) fn meta_from_item(item: &Item, key: &str, legacy: &ModelVersion) -> Result<TenantMeta, PortError> {
    Ok(TenantMeta {
        model_version: version_of(item, key, legacy)?,
        model_pin: json_attr(item, "model_pin", key)?,
        model_waiting: json_attr(item, "model_waiting", key)?,
        access: json_attr(item, "access", key)?,
        seats_used: get_n(item, "seats_used").unwrap_or(0) as u32,
        seats_pending: get_n(item, "seats_pending").unwrap_or(0) as u32,
        rules: json_attr(item, "rules", key)?.unwrap_or_default(),
        head: ChainHead { seq: get_n(item, "audit_seq").unwrap_or(0), hash: get_s(item, "audit_hash").unwrap_or(GENESIS).to_string() },
        licensed: item.get("licensed").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false) || item.contains_key("access"),
        walk: json_attr(item, "walk", key)?,
        walk_goal: get_s(item, "walk_goal").map(str::to_string),
        license_file_seconds: get_n(item, "license_file_seconds"),
        continues: item.get("continues").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
    })
}

/// An item's `model_version`, or `legacy` when it has none.
pub(crate) fn version_of(item: &Item, key: &str, legacy: &ModelVersion) -> Result<ModelVersion, PortError> {
    match get_s(item, "model_version") {
        None => Ok(legacy.clone()),
        Some(v) => ModelVersion::parse(v).map_err(|e| PortError::Corrupt { key: key.to_string(), why: e.to_string() }),
    }
}

pub(crate) fn target_from_item(item: &Item, key: &str) -> Result<Option<Target>, PortError> {
    let Some(mut target): Option<Target> = json_attr(item, "target", key)? else { return Ok(None) };
    target.health = json_attr(item, "health", key)?.unwrap_or_default();
    Ok(Some(target))
}

pub(crate) fn pending_from_item(item: &Item, key: &str) -> Result<Pending, PortError> {
    Ok(Pending {
        member: required(item, "member", key)?,
        access: required(item, "access", key)?,
        seq: get_n(item, "seq").unwrap_or(0),
        refusals: get_n(item, "refusals").unwrap_or(0) as u32,
        parked: get_s(item, "parked").map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::last_key_with_prefix;

    #[test]
    fn the_last_key_with_a_prefix_bounds_every_key_that_has_it_and_no_other() {
        for prefix in ["MEM#", "GRP#", "AQ#", "SEAT#0000000001#"] {
            let last = last_key_with_prefix(prefix);
            assert_eq!(last.len(), 1024, "{prefix}: the bound fills a sort key");
            assert!(last.starts_with(prefix));
            // Keys that start with the prefix, the awkward ones included: the
            // greatest characters, a key as long as DynamoDB allows.
            let long = format!("{prefix}{}", "\u{FFFF}".repeat((1024 - prefix.len()) / 3));
            for key in [prefix.to_string(), format!("{prefix}zzz"), format!("{prefix}\u{10FFFF}"), format!("{prefix}\u{10FFFF}\u{10FFFF}x"), format!("{prefix}é\u{10FFFF}"), long] {
                assert!(key.len() <= 1024);
                assert!(prefix <= key.as_str() && key <= last, "{key:?} is within the range of {prefix}");
            }
            // Keys that don't are outside it (the prefix's successor and past).
            let mut next = prefix.to_string();
            let end = next.pop().unwrap();
            next.push(char::from_u32(end as u32 + 1).unwrap());
            for key in [next.clone(), format!("{next}a"), "MEN".to_string(), "~".to_string()] {
                if !key.starts_with(prefix) && key.as_str() > prefix {
                    assert!(key > last, "{key:?} is past the range of {prefix}");
                }
            }
        }
    }

    #[test]
    fn the_bound_ends_with_the_greatest_character_that_fits_each_remaining_length() {
        for len in 1..=8 {
            let prefix = "P".repeat(len);
            let last = last_key_with_prefix(&prefix);
            assert_eq!(last.len(), 1024, "prefix of {len} bytes");
            assert!(last.chars().skip(len).all(|c| c >= '\u{7F}'));
        }
    }
}
