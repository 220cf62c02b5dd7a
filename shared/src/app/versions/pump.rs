//! The pump: hands the next tenants of every unfinished rollout and
//! preview to provision, a batch per work message, and marks runs done
//! once every tenant was listed and handled.

use crate::app::ports::{ModelRegistry, WorkQueue};
use crate::app::Error;
use crate::core::ids::{ModelVersion, TenantId};
use crate::core::versions::{Registered, RunState, RunStatus, Selection, Work};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::time::Instant;

/// How much one pump hands out.
#[derive(Debug, Clone, Copy)]
pub struct PumpLimits {
    /// Tenants per work message.
    pub batch: usize,
    /// Tenants of one run handed out and not settled, at most: the bound
    /// on the rate at which a run works the table.
    pub in_flight: u64,
    pub stop_at: Instant,
}

/// What a pump did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PumpReport {
    pub runs: usize,
    pub queued: u64,
    pub messages: u64,
    /// Runs that finished now, with their status.
    pub finished: Vec<(String, RunStatus)>,
    /// Runs with failed tenants (for the alarm).
    pub with_failures: u64,
}

/// Hands the next tenants of every run that is not finished to provision,
/// a batch per work message, while fewer than `in_flight` of a run are
/// out; marks runs done once every tenant was listed and handled. Safe to
/// run twice at once: a run's progress is saved conditionally on its
/// revision (a pump that loses stops on that run; a batch it sent twice
/// changes nothing twice).
pub async fn pump<S: ModelRegistry, W: WorkQueue>(store: &S, work: &W, now: DateTime<Utc>, limits: PumpLimits) -> Result<PumpReport, Error> {
    let mut report = PumpReport::default();
    let registered = store.registered().await?;
    for mut run in store.runs().await? {
        if run.status.finished() {
            continue;
        }
        report.runs += 1;
        if run.spec.starts_at().is_some_and(|t| t > now) {
            continue;
        }
        if run.counts.failed > 0 {
            report.with_failures += 1;
        }
        let mut saved = true;
        if run.status == RunStatus::Pending {
            run.status = RunStatus::Running;
            saved = advance(store, &mut run).await?;
        }
        while saved && !run.cursor.listed() && run.in_flight() < limits.in_flight && Instant::now() < limits.stop_at {
            let room = (limits.in_flight - run.in_flight()).min(limits.batch as u64) as usize;
            let cursor = run.cursor.clone();
            let tenants = next_tenants(store, &registered, &mut run, room).await?;
            if tenants.is_empty() && run.cursor == cursor {
                // Nothing to hand out until what is out settles.
                break;
            }
            if !tenants.is_empty() {
                work.send_work(&Work { run: run.spec.id.clone(), tenants: tenants.clone(), due: false, attempts: BTreeMap::new() }).await?;
                report.messages += 1;
                report.queued += tenants.len() as u64;
                run.queued += tenants.len() as u64;
            }
            saved = advance(store, &mut run).await?;
        }
        if saved && run.cursor.listed() {
            let status = run.status_when_listed();
            if status != run.status {
                run.status = status;
                if status.finished() {
                    run.finished_at = Some(now);
                    report.finished.push((run.spec.id.to_string(), status));
                }
                advance(store, &mut run).await?;
            }
        }
    }
    Ok(report)
}

/// Saves a run's progress; false when another pump moved it first.
async fn advance<S: ModelRegistry>(store: &S, run: &mut RunState) -> Result<bool, Error> {
    let ok = store.advance_run(run).await?;
    if ok {
        run.rev += 1;
    }
    Ok(ok)
}

/// Tenants of the index a page holds at most.
const INDEX_PAGE: usize = 500;

/// The run's next tenants, at most `room`, moving its cursor: the listed
/// ones, or the index's, version after version (not the run's own: its
/// tenants are there), by tier when the run is for one; excluded tenants
/// are left out. The second pass takes only tenants that have no outcome
/// (created on an older version while the first pass went by).
async fn next_tenants<S: ModelRegistry>(store: &S, registered: &[Registered], run: &mut RunState, room: usize) -> Result<Vec<TenantId>, Error> {
    let spec = &run.spec;
    let cursor = &mut run.cursor;
    let mut out = Vec::new();
    if let Selection::List(list) = &spec.tenants {
        while out.len() < room && cursor.at < list.len() {
            let t = &list[cursor.at];
            cursor.at += 1;
            if !spec.exclude.contains(t) {
                out.push(t.clone());
            }
        }
        if cursor.at >= list.len() {
            cursor.pass = 2;
        }
        return Ok(out);
    }
    let versions: Vec<&ModelVersion> = registered.iter().map(|r| &r.version).filter(|v| *v != spec.to()).collect();
    let in_flight = run.queued.saturating_sub(run.counts.done + run.counts.waiting + run.counts.skipped + run.counts.failed);
    while out.len() < room && !cursor.listed() {
        let Some(version) = versions.get(cursor.at) else {
            // A pass is over once everything it handed out is settled: the
            // second lists again, for tenants the first did not meet.
            if !out.is_empty() || in_flight > 0 {
                break;
            }
            cursor.pass += 1;
            cursor.at = 0;
            cursor.after = None;
            continue;
        };
        let page = store.tenants_following(version, cursor.after.as_deref(), (room - out.len()).min(INDEX_PAGE)).await?;
        let mut found: Vec<TenantId> = page
            .tenants
            .into_iter()
            .filter(|(t, tier)| !spec.exclude.contains(t) && tier.as_deref().is_none_or(|tier| spec.tenants.takes_tier(tier)) && (tier.is_some() || !matches!(spec.tenants, Selection::Tier(_))))
            .map(|(t, _)| t)
            .collect();
        if cursor.pass == 1 && !found.is_empty() {
            let outcomes = store.outcomes_of(&spec.id, &found).await?;
            found = found.into_iter().zip(outcomes).filter(|(_, o)| o.is_none()).map(|(t, _)| t).collect();
        }
        out.extend(found);
        match page.next {
            Some(next) => cursor.after = Some(next),
            None => {
                cursor.at += 1;
                cursor.after = None;
            }
        }
    }
    Ok(out)
}
