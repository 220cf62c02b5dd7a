//! The expiry sweep's store side: finds what is due through the sparse,
//! sharded due index, applies each transition once, and reports what it did.
//!
//! Every item with a pending time-based transition (a license, a scheduled
//! amendment) carries `due_at` (epoch seconds) and `due_shard`; the table's
//! `due` index is keyed by (`due_shard`, `due_at`). The shard is a hash of
//! the item's key, so a million licenses renewing on one date spread over all
//! shards instead of one hot partition; items with nothing due carry neither
//! attribute and are not in the index, so a sweep reads what is due and
//! nothing else.

use crate::audit::{AuditEvent, Cause, CauseKind};
use crate::expiry::{self, Transition};
use crate::ids::{ContractId, TenantId};
use crate::license::License;
use crate::store::{backoff, get_n, get_s, json_attr, n, s, Commit, Store, StoreError, MAX_ATTEMPTS};
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::Serialize;
use aws_sdk_dynamodb::operation::query::QueryOutput;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// Shards of the due index. More shards spread writes wider; a sweep reads
/// each shard once per page, so the fixed cost per run is this many queries.
pub const DUE_SHARDS: u32 = 16;
pub const DUE_INDEX: &str = "due";
const PAGE: i32 = 100;

/// The shard of an item: a stable hash (FNV-1a) of its key.
pub fn due_shard(pk: &str, sk: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in pk.bytes().chain([b'/']).chain(sk.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("DUE#{:02}", h % DUE_SHARDS)
}

/// The due attributes of an item, or none when nothing is pending.
pub fn due_attributes(pk: &str, sk: &str, due: Option<DateTime<Utc>>) -> Vec<(&'static str, AttributeValue)> {
    match due {
        Some(at) => vec![("due_at", n(at.timestamp())), ("due_shard", s(due_shard(pk, sk)))],
        None => vec![],
    }
}

/// What one sweep run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub run_id: String,
    pub as_of: String,
    /// Items read from the due index.
    pub index_reads: u64,
    /// Items read to decide and write (tenant head, current license).
    pub item_reads: u64,
    pub licenses: u64,
    pub amendments: u64,
    pub transitions: u64,
    /// False when the run stopped before its deadline; the next run goes on.
    pub complete: bool,
    /// Tenants whose access may change: each gets a reconcile.
    #[serde(skip)]
    pub tenants: BTreeSet<TenantId>,
    /// Contracts with due amendments (applied by `due::apply_due_amendments`).
    #[serde(skip)]
    pub contracts: BTreeSet<ContractId>,
    /// Due SCIM work (undelivered changes, a retry, a drift repair) found.
    pub deliveries: u64,
    /// Tenants with due SCIM work: each gets a message to provision, which delivers.
    #[serde(skip)]
    pub delivery_tenants: BTreeSet<TenantId>,
}

/// Limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct SweepLimits {
    /// Stop cleanly (leaving the rest due) once this instant is reached.
    pub stop_at: Instant,
    /// Stop after this many items (tests use it to stop a run mid-way).
    pub max_items: Option<u64>,
}

/// A due index entry (the index holds keys only).
struct DueItem {
    pk: String,
    sk: String,
    due_at: i64,
}

impl Store {
    /// One page of one shard of the due index, due at or before `as_of`.
    async fn due_query(&self, shard: u32, as_of: DateTime<Utc>, start: Option<HashMap<String, AttributeValue>>, limit: Option<i32>) -> Result<QueryOutput, StoreError> {
        Ok(self
            .client
            .query()
            .table_name(&self.state)
            .index_name(DUE_INDEX)
            .key_condition_expression("due_shard = :s AND due_at <= :t")
            .expression_attribute_values(":s", s(format!("DUE#{shard:02}")))
            .expression_attribute_values(":t", n(as_of.timestamp()))
            .set_exclusive_start_key(start)
            .set_limit(limit)
            .send()
            .await?)
    }

    /// One page of every shard, due at or before `as_of`, oldest first.
    async fn due_page(&self, as_of: DateTime<Utc>, report: &mut SweepReport) -> Result<Vec<DueItem>, StoreError> {
        let mut out = Vec::new();
        for shard in 0..DUE_SHARDS {
            let page = self.due_query(shard, as_of, None, Some(PAGE)).await?;
            report.index_reads += page.scanned_count.max(page.count).max(0) as u64;
            for item in page.items.unwrap_or_default() {
                out.push(DueItem {
                    pk: get_s(&item, "pk").unwrap_or_default().to_string(),
                    sk: get_s(&item, "sk").unwrap_or_default().to_string(),
                    due_at: get_n(&item, "due_at").map(|v| v as i64).unwrap_or(0),
                });
            }
        }
        out.sort_by(|a, b| (a.due_at, &a.pk, &a.sk).cmp(&(b.due_at, &b.pk, &b.sk)));
        Ok(out)
    }

    /// Counts what is due at `as_of` through the due index, all pages, without
    /// acting on it: (due items, index items read). For measuring.
    pub async fn count_due(&self, as_of: DateTime<Utc>) -> Result<(u64, u64), StoreError> {
        let (mut due, mut read) = (0u64, 0u64);
        for shard in 0..DUE_SHARDS {
            let mut start = None;
            loop {
                let page = self.due_query(shard, as_of, start, None).await?;
                due += page.count.max(0) as u64;
                read += page.scanned_count.max(page.count).max(0) as u64;
                match page.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => break,
                }
            }
        }
        Ok((due, read))
    }

    /// Runs every transition due at `as_of`. Safe to run twice at once: each
    /// transition is a conditional write on the license's version under the
    /// tenant's chain-head lock, so only one run applies it.
    pub async fn sweep(&self, as_of: DateTime<Utc>, run_id: &str, limits: SweepLimits) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport { run_id: run_id.to_string(), as_of: as_of.to_rfc3339(), ..Default::default() };
        let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
        loop {
            let page = self.due_page(as_of, &mut report).await?;
            // Items an earlier page of this run already handled may still be
            // listed (the index is eventually consistent): skip them.
            let fresh: Vec<DueItem> = page.into_iter().filter(|d| !seen.contains(&(d.pk.clone(), d.sk.clone()))).collect();
            if fresh.is_empty() {
                report.complete = true;
                return Ok(report);
            }
            for due in fresh {
                // Delivery items only name a tenant to queue: they do not count as work here.
                let processed = report.licenses + report.amendments;
                if Instant::now() >= limits.stop_at || limits.max_items.is_some_and(|m| processed >= m) {
                    return Ok(report);
                }
                seen.insert((due.pk.clone(), due.sk.clone()));
                if due.sk.starts_with("LIC#") {
                    self.sweep_license(&due, as_of, run_id, &mut report).await?;
                    report.licenses += 1;
                } else if due.sk.starts_with("A#") {
                    if let Some(cid) = due.pk.strip_prefix("C#").and_then(|c| ContractId::parse(c).ok()) {
                        report.contracts.insert(cid);
                    }
                    report.amendments += 1;
                } else if let Some(tenant) = delivery_tenant(&due.pk, &due.sk) {
                    report.delivery_tenants.insert(tenant);
                    report.deliveries += 1;
                }
            }
        }
    }

    async fn sweep_license(&self, due: &DueItem, as_of: DateTime<Utc>, run_id: &str, report: &mut SweepReport) -> Result<(), StoreError> {
        let Some(tenant) = due.pk.strip_prefix("T#").and_then(|t| TenantId::parse(t).ok()) else { return Ok(()) };
        let key = format!("{}/{}", due.pk, due.sk);
        // The index tells what was due; the decision is made on the item
        // itself, read consistently, and written only if it is still that version.
        for attempt in 0..MAX_ATTEMPTS {
            let meta = self.meta(&tenant).await?;
            let item = self.get(due.pk.clone(), due.sk.clone()).await?;
            report.item_reads += 2;
            let Some(item) = item else { return Ok(()) };
            let Some(license): Option<License> = json_attr(&item, "license", &key)? else { return Ok(()) };
            let (after, transitions) = expiry::advance(&self.model, &license, as_of);
            if transitions.is_empty() {
                return Ok(()); // another run got here first, or a renewal moved the date
            }
            let cause = Cause::new(CauseKind::Sweep, run_id);
            let events: Vec<AuditEvent> = transitions.iter().map(|t| audit_of(t, &cause)).collect();
            let outbox: Vec<serde_json::Value> = transitions.iter().map(|t| event_of(&tenant, t, run_id)).collect();
            // Conditional on the license's version: a renewal recorded meanwhile wins.
            let mut write = self.license_put(&tenant, &after, Some("source_version = :v"));
            if let Some(p) = write.put.as_mut() {
                p.expression_attribute_values = Some([(":v".to_string(), n(license.source_version))].into());
            }
            let first_seq = meta.as_ref().map_or(0, |m| m.head.seq) + 1;
            let items = vec![write, self.outbox_put(&tenant, first_seq, &outbox)];
            let mut items = items;
            let (audit_items, _) = self.audit_and_lock(&tenant, meta.as_ref(), as_of, events, vec![]);
            let chain_from = items.len();
            items.extend(audit_items);
            match self.commit(items, chain_from).await? {
                Commit::Done => {
                    report.transitions += transitions.len() as u64;
                    report.tenants.insert(tenant.clone());
                    return Ok(());
                }
                // The license changed (a renewal, another sweep) or the head moved: decide again.
                Commit::Retry | Commit::Failed(_) => backoff(attempt).await,
            }
        }
        Err(StoreError::Contention(format!("tenant {tenant}")))
    }

}

/// The tenant of a due delivery record (`S#<tenant>#<target>`) or target
/// (`T#<tenant>` / `TARGET#...`).
fn delivery_tenant(pk: &str, sk: &str) -> Option<TenantId> {
    let raw = match pk.strip_prefix("S#") {
        Some(rest) => rest.split('#').next()?,
        None if sk.starts_with("TARGET#") => pk.strip_prefix("T#")?,
        None => return None,
    };
    TenantId::parse(raw).ok()
}

fn audit_of(t: &Transition, cause: &Cause) -> AuditEvent {
    AuditEvent {
        action: match t.kind {
            expiry::DueKind::ExpiringSoon { .. } => "license_expiring_soon",
            expiry::DueKind::Expiry => "license_grace_started",
            expiry::DueKind::GraceEnd => "license_expired",
            expiry::DueKind::TrialEnd => "license_trial_ended",
            expiry::DueKind::PastDueGraceEnd => "license_suspended",
        }
        .into(),
        subject: format!("license:{}:{}", t.after.source.as_str(), t.after.license_id),
        cause: cause.clone(),
        rule: format!("{} (due {})", t.rule, t.due_at.to_rfc3339()),
        before: Some(serde_json::json!({"status": t.before.status, "timeline": t.before.timeline})),
        after: Some(serde_json::json!({"status": t.after.status, "timeline": t.after.timeline})),
    }
}

/// The access-changed event of a transition (see README for the schema).
fn event_of(tenant: &TenantId, t: &Transition, run_id: &str) -> serde_json::Value {
    let id = crate::audit::hash_of(&format!("{tenant}/{}/{}/{:?}", t.after.license_id, t.due_at.timestamp(), t.kind));
    serde_json::json!({
        "id": id,
        "type": t.event,
        "tenant_id": tenant,
        "license_id": t.after.license_id,
        "source": t.after.source,
        "due_at": t.due_at.to_rfc3339(),
        "expires_at": t.after.expires_at.map(|e| e.to_rfc3339()),
        "grace_until": t.after.timeline.grace_until.map(|e| e.to_rfc3339()),
        "status": t.after.status,
        "detail": t.kind,
        "cause": {"kind": "sweep", "id": run_id},
    })
}
