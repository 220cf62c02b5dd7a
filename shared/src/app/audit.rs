//! The audit trail: chaining pending records (the integrator), reading it,
//! and verifying it.
//!
//! Most changes are chained as they commit (under the tenant's chain head).
//! Account creations and removals are not, so that they do not queue behind
//! each other: their records are written, pending, in the change's own
//! transaction, and chained afterwards, in order, by whoever next holds the
//! lock (provision, once per message of the tenant: [`integrate`], or a
//! reconcile's first transactions). A pending record is as durable as its
//! change; it is not yet covered by a hash, and `verify` says how many
//! there are.

use super::commit::{audited, audited_on, Decision};
use super::ports::{Change, Checkpoints, Signer, Tenants};
use super::Error;
use crate::core::audit::{self, AuditEvent, Checkpoint, PendingRecord, Verification};
use crate::core::ids::TenantId;
use crate::core::rejection::Rejection;
use crate::core::tenant::PENDING_PAGE;
use chrono::{DateTime, Utc};

/// Items of a transaction that chains pending records: each is its
/// chained record and the removal of the pending one, and the event it
/// announces, if any (the head's update is one more).
pub const INTEGRATED_ITEMS: usize = 90;

/// The changes that chain `pending`, in order.
pub fn integration(pending: &[PendingRecord], now: DateTime<Utc>) -> Vec<Change> {
    let mut changes = Vec::new();
    let (mut part, mut items) = (Vec::new(), 0);
    for p in pending {
        let cost = 2 + usize::from(p.event.announce.is_some());
        if items + cost > INTEGRATED_ITEMS {
            changes.push(Change { integrate: std::mem::take(&mut part), ..Change::new(now) });
            items = 0;
        }
        part.push(p.clone());
        items += cost;
    }
    if !part.is_empty() {
        changes.push(Change { integrate: part, ..Change::new(now) });
    }
    changes
}

/// Chains the tenant's pending records: the integrator. Any number may run
/// at once; the chain's lock lets one chain each record. A backlog is read
/// and chained a page ([`PENDING_PAGE`]) at a time, until a page is not
/// full. Returns how many it chained.
pub async fn integrate<S: Tenants>(store: &S, tenant: &TenantId, now: DateTime<Utc>) -> Result<usize, Error> {
    let mut chained = 0;
    loop {
        let committed = audited_on(
            store,
            tenant,
            || store.pending_audit(tenant, PENDING_PAGE),
            |(_meta, pending)| async move {
                if pending.is_empty() {
                    return Ok(Decision::Done(false));
                }
                Ok(Decision::Commit(integration(&pending, now), pending.len() == PENDING_PAGE))
            },
        )
        .await?;
        chained += committed.changes.iter().map(|c| c.integrate.len()).sum::<usize>();
        if !committed.value || committed.refused.is_some() {
            return Ok(chained);
        }
    }
}

/// Records an operator's act on a tenant (a dead letter redriven) in its
/// chain, alone. Returns false, writing nothing, for a tenant that does not exist.
pub async fn note<S: Tenants>(store: &S, tenant: &TenantId, event: AuditEvent, now: DateTime<Utc>) -> Result<bool, Error> {
    let committed = audited(store, tenant, |meta| {
        let event = event.clone();
        async move {
            Ok(match meta {
                None => Decision::Done(false),
                Some(_) => Decision::one(Change::new(now).audit(event), true),
            })
        }
    })
    .await?;
    Ok(committed.value)
}

/// Signs the tenant's chain head into a stored checkpoint (the sweep does,
/// for each tenant whose head moved since its last one). The head stays due
/// if it moved again meanwhile. Returns the checkpoint stored, if the
/// tenant has a chained record. The checkpoint is logged too: a copy
/// outside the table.
pub async fn checkpoint<S: Tenants + Checkpoints, K: Signer>(store: &S, signer: &K, tenant: &TenantId, now: DateTime<Utc>) -> Result<Option<Checkpoint>, Error> {
    // A head is due only once it has moved: a tenant without a chained
    // record has nothing to sign.
    let Some(meta) = store.meta(tenant).await?.filter(|m| m.head.seq > 0) else { return Ok(None) };
    let signed = signer.sign(Checkpoint::unsigned(tenant.as_str(), &meta.head, now)).await?;
    store.put_checkpoint(&signed).await?;
    let cleared = store.checkpointed(tenant, signed.seq, now + audit::CHECKPOINT_INTERVAL).await?;
    tracing::info!(checkpoint = %serde_json::to_string(&signed).expect("serialises"), head_moved_since = !cleared, "audit checkpoint signed");
    Ok(Some(signed))
}

/// A signed export: the records from `from` to `to` (at most the head read
/// first), each exactly as hashed, one per line, then the checkpoint signed
/// over the last of them with the stored checkpoints of the range in
/// `earlier`. It stops after the record that takes it past `max_bytes` (a
/// function URL answers at most 6 MB): `last` says where it ended, and the
/// next export starts after it. Read a page at a time.
/// The most bytes of records one export holds (a function URL answers at
/// most 6 MB): the next starts after its last record.
pub const EXPORT_BYTES: usize = 5 * 1024 * 1024;

pub struct Export {
    pub lines: String,
    pub from: u64,
    pub last: u64,
    /// The head's sequence number when the export began.
    pub head: u64,
}

pub async fn export<S: Tenants + Checkpoints, K: Signer>(store: &S, signer: &K, tenant: &TenantId, from: u64, to: Option<u64>, max_bytes: usize, now: DateTime<Utc>) -> Result<Export, Error> {
    let meta = store.meta(tenant).await?.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?;
    // As of the head read first: later records are for a later export.
    let to = to.unwrap_or(meta.head.seq).min(meta.head.seq);
    if from > to {
        return Err(Rejection::not_found(&format!("audit records {from} to {to} of tenant {tenant} (its chain ends at {})", meta.head.seq)).into());
    }
    let mut lines = String::new();
    let (mut after, mut last) = (from - 1, None);
    'pages: loop {
        let (page, more) = store.audit_page(tenant, after, 1000).await?;
        for r in page {
            if r.seq > to || lines.len() >= max_bytes {
                break 'pages;
            }
            after = r.seq;
            lines.push_str(&r.json);
            lines.push('\n');
            last = Some((r.seq, audit::hash_of(&r.json)));
        }
        if !more {
            break;
        }
    }
    let (seq, head_hash) = last.ok_or_else(|| Rejection::not_found(&format!("audit records {from} to {to} of tenant {tenant}")))?;
    let mut checkpoint = signer.sign(Checkpoint::unsigned(tenant.as_str(), &audit::ChainHead { seq, hash: head_hash }, now)).await?;
    // The sweep's stored checkpoints of the range, each signed when its
    // records were new: a table rewritten since, hashes and all, fails them.
    checkpoint.earlier = store.checkpoints(tenant, from, seq).await?;
    lines.push_str(&serde_json::to_string(&checkpoint).expect("serialises"));
    lines.push('\n');
    Ok(Export { lines, from, last: seq, head: meta.head.seq })
}

/// Verifies the tenant's whole chain against its head. Writers keep
/// appending while this reads: the chain is checked as of the head read
/// first (every record up to it was committed with it); records beyond a
/// second read of the head belong to no chain and are reported.
pub async fn verify<S: Tenants>(store: &S, tenant: &TenantId) -> Result<Option<Verification>, Error> {
    let Some(meta) = store.meta(tenant).await? else { return Ok(None) };
    let pending = store.pending_count(tenant).await?;
    // A page at a time: the chain is never held whole (of the records
    // beyond the head, only their positions are kept).
    let mut check = audit::ChainCheck::new(tenant.as_str());
    let mut beyond: Vec<u64> = Vec::new();
    let mut after = 0;
    loop {
        let (page, more) = store.audit_page(tenant, after, VERIFY_PAGE).await?;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        let (within, past): (Vec<_>, Vec<_>) = page.into_iter().partition(|r| r.seq <= meta.head.seq);
        beyond.extend(past.iter().map(|r| r.seq));
        if !check.feed(&within) || !more {
            break;
        }
    }
    let mut verification = check.finish(&meta.head);
    if verification.ok && !beyond.is_empty() {
        let latest = store.meta(tenant).await?.map(|m| m.head.seq).unwrap_or(0);
        if let Some(&orphan) = beyond.iter().find(|&&seq| seq > latest) {
            verification = Verification {
                ok: false,
                records: verification.records,
                first_bad_seq: Some(orphan),
                problem: Some(format!("record {orphan} lies beyond the tenant's head (record {latest})")),
                head_hash: meta.head.hash.clone(),
                pending: 0,
            };
        }
    }
    verification.pending = pending;
    Ok(Some(verification))
}

/// Records a verification reads at once.
const VERIFY_PAGE: u32 = 1000;
