//! The expiry sweep: every time-based transition due as of an explicit
//! instant (never the wall clock), found through the due index (reading
//! only what is due), each applied once (a conditional write on the
//! license's version under the tenant's chain head), then the tenants
//! touched reconciled, due amendments applied, due SCIM work handed to
//! provision, and the audit chain heads that moved signed into stored
//! checkpoints. Safe to run twice at once; a run stopped before its deadline
//! leaves the rest due for the next.

use super::commit::{audited_on, Decision};
use super::contracts::apply_due;
use super::ports::{Change, Checkpoints, Contracts, DueIndex, DueItem, ModelRegistry, Models, Queue, Signer, Tenants, WorkQueue, Write};
use super::rules::rules_of;
use super::Error;
use crate::core::audit::{Cause, CauseKind};
use crate::core::expiry::{self, audit_of, event_of};
use crate::core::ids::{ContractId, TenantId};
use crate::core::license::Source;
use crate::core::reconcile::ReconcileRequest;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::cell::Cell;
use std::collections::BTreeSet;
use std::time::Instant;

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
    /// Events the transitions announce (written with them; the stream
    /// carries them to the bus).
    pub events: u64,
    /// False when the run stopped before its deadline; the next run goes on.
    pub complete: bool,
    /// Tenants whose access may change: each gets a reconcile.
    #[serde(skip)]
    pub tenants: BTreeSet<TenantId>,
    /// Contracts with due amendments.
    #[serde(skip)]
    pub contracts: BTreeSet<ContractId>,
    /// Due SCIM work (undelivered changes, a retry, a drift repair) found.
    pub deliveries: u64,
    /// Tenants with due SCIM work: each gets a message to provision, which delivers.
    #[serde(skip)]
    pub delivery_tenants: BTreeSet<TenantId>,
    /// Tenants whose chain head is due for a signed checkpoint.
    #[serde(skip)]
    pub checkpoint_tenants: BTreeSet<TenantId>,
    /// Tenants whose model pin ends, or whose rollout's move waits for a
    /// billing period that ended.
    #[serde(skip)]
    pub model_tenants: BTreeSet<TenantId>,
    /// Of those: moves handed to their rollout, pins released.
    pub model_moves: u64,
    pub pins_released: u64,
    /// Checkpoints signed and stored by the run.
    pub checkpoints: u64,
    /// Checkpoints that could not be signed or stored (logged; they stay due).
    pub checkpoint_failures: u64,
}

/// Limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct SweepLimits {
    /// Stop cleanly (leaving the rest due) once this instant is reached.
    pub stop_at: Instant,
    /// Stop after this many items (tests use it to stop a run mid-way).
    pub max_items: Option<u64>,
}

/// Finds and applies every license transition due at `as_of`; collects the
/// contracts with due amendments and the tenants with due SCIM work.
pub async fn sweep<S: Tenants + DueIndex + Models>(store: &S, as_of: DateTime<Utc>, run_id: &str, limits: SweepLimits) -> Result<SweepReport, Error> {
    let mut report = SweepReport { run_id: run_id.to_string(), as_of: as_of.to_rfc3339(), ..Default::default() };
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = store.due(as_of, cursor.as_deref()).await?;
        report.index_reads += page.read;
        // Items an earlier page of this run already handled may still be
        // listed (the index is eventually consistent): skip them.
        let fresh: Vec<DueItem> = page.items.into_iter().filter(|d| !seen.contains(&d.key())).collect();
        for due in fresh {
            // Delivery items only name a tenant to queue: they do not count as work here.
            if Instant::now() >= limits.stop_at || limits.max_items.is_some_and(|m| report.licenses + report.amendments >= m) {
                return Ok(report);
            }
            seen.insert(due.key());
            match due {
                DueItem::License { tenant, source, license, .. } => {
                    let (reads, transitions) = transition(store, &tenant, source, &license, as_of, run_id).await?;
                    report.item_reads += reads;
                    report.licenses += 1;
                    if transitions > 0 {
                        report.transitions += transitions;
                        report.events += transitions;
                        report.tenants.insert(tenant);
                    }
                }
                DueItem::Amendment { contract, .. } => {
                    report.contracts.insert(contract);
                    report.amendments += 1;
                }
                DueItem::Delivery { tenant, .. } => {
                    report.delivery_tenants.insert(tenant);
                    report.deliveries += 1;
                }
                DueItem::Checkpoint { tenant, .. } => {
                    report.checkpoint_tenants.insert(tenant);
                }
                DueItem::Model { tenant, .. } => {
                    report.model_tenants.insert(tenant);
                }
            }
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => {
                report.complete = true;
                return Ok(report);
            }
        }
    }
}

/// Applies what is due on one license, once: decided on the license read
/// consistently, written only if it is still that version (a renewal
/// recorded meanwhile wins). Returns (items read, transitions applied).
async fn transition<S: Tenants + Models>(store: &S, tenant: &TenantId, source: Source, license: &str, as_of: DateTime<Utc>, run_id: &str) -> Result<(u64, u64), Error> {
    let reads = Cell::new(0u64);
    let cause = Cause::new(CauseKind::Sweep, run_id);
    // The index tells what was due; the decision is made on the license
    // read consistently with the head, in one request.
    let read = || {
        reads.set(reads.get() + 2); // the tenant's head and the license
        store.meta_and_license(tenant, source, license)
    };
    let committed = audited_on(store, tenant, read, |(meta, current)| {
        let cause = &cause;
        async move {
            let Some(current) = current else { return Ok(Decision::Done(0)) };
            // Grace, notices and what happens at the end: the tenant's version's rules.
            let model = &*rules_of(store, meta.as_ref()).await?;
            let (after, transitions) = expiry::advance(model, &current, as_of);
            if transitions.is_empty() {
                return Ok(Decision::Done(0)); // another run got here first, or a renewal moved the date
            }
            let due = expiry::next_due(model, &after).map(|(at, _)| at);
            let mut change = Change::new(as_of).write(Write::License { license: after, if_version: Some(current.source_version), due });
            change.audit = transitions.iter().map(|t| audit_of(t, cause)).collect();
            change.events = transitions.iter().map(|t| event_of(tenant, t, run_id)).collect();
            Ok(Decision::one(change, transitions.len() as u64))
        }
    })
    .await?;
    Ok((reads.get(), committed.value))
}

/// One scheduled run, as the function runs it: every transition due; the
/// due amendments; a reconcile for each tenant touched and each tenant with
/// due SCIM work; a signed checkpoint of each chain head due for one (while
/// time is left: the rest stay due). Returns the report and the amendments
/// applied.
pub async fn run<S, Q, W, K>(store: &S, queue: &Q, work: &W, signer: &K, as_of: DateTime<Utc>, run_id: &str, limits: SweepLimits) -> Result<(SweepReport, usize), Error>
where
    S: Tenants + Contracts + DueIndex + Checkpoints + Models + ModelRegistry,
    Q: Queue,
    W: WorkQueue,
    K: Signer,
{
    let mut report = sweep(store, as_of, run_id, limits).await?;
    let mut amendments = 0;
    for contract in &report.contracts {
        amendments += apply_due(store, queue, contract, as_of, run_id).await?.len();
    }
    let cause = Cause::new(CauseKind::Sweep, run_id);
    for tenant in report.model_tenants.clone() {
        match super::versions::model_due(store, queue, work, &tenant, &cause, as_of).await? {
            super::versions::ModelDue::Moved => report.model_moves += 1,
            super::versions::ModelDue::PinReleased { .. } => report.pins_released += 1,
            super::versions::ModelDue::Nothing => {}
        }
    }
    for tenant in report.tenants.union(&report.delivery_tenants) {
        let request = ReconcileRequest::new(tenant.clone(), Cause::new(CauseKind::Sweep, run_id));
        queue.send(&request, &format!("{run_id}:{tenant}")).await?;
    }
    for tenant in &report.checkpoint_tenants {
        if Instant::now() >= limits.stop_at {
            report.complete = false;
            break;
        }
        // A checkpoint that fails (KMS throttling, say) stays due for the
        // next run; it does not undo or fail the run's transitions.
        match super::audit::checkpoint(store, signer, tenant, Utc::now()).await {
            Ok(Some(_)) => report.checkpoints += 1,
            Ok(None) => {}
            Err(e) => {
                tracing::error!(tenant = %tenant, error = %e, "audit checkpoint not signed; it stays due");
                report.checkpoint_failures += 1;
            }
        }
    }
    Ok((report, amendments))
}
