//! Delivery to SCIM targets: after a tenant's changes are committed, make
//! each of its targets hold what the delivery records say; repair drift on
//! schedule or on demand; keep each target's health, quarantining one that
//! keeps failing (crashes included) and resuming it when it answers again.
//!
//! Runs in `provision`, inside the tenant's FIFO message group, so one
//! deliverer works on a tenant at a time.
//!
//! [`health`]: a run on one target under its health (whether it goes, its
//! start recorded, its end counted, a change of standing audited); [`run`]:
//! the run itself, members synced and their group changes sent in batches;
//! [`repair`]: drift repair; [`reports`]: what a run reports.

mod health;
mod repair;
pub mod reports;
mod run;

pub use reports::{RepairReport, TargetReport};

use super::ports::{Directory, Models, Targets, Tenants, Tokens};
use super::Error;
use crate::core::audit::Cause;
use crate::core::ids::{TargetId, TenantId};
use crate::core::scim::{Policy, TargetError};
use std::time::{Duration, Instant};

/// How far past `stop_at` (no new member started) a started request may run.
pub const HARD_STOP_AFTER: Duration = Duration::from_secs(8);

/// Members whose managed-group changes are sent together: their users are
/// created or changed one by one, then each group gets one request for the
/// batch, then the members are marked delivered. A group of thousands of
/// members is rewritten once per batch, not once per member.
pub const MEMBERS_PER_BATCH: usize = 100;

/// How long past a target's budget the last batch's group changes may take.
pub const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// The share of a target's budget no member starts in, kept for the last
/// batch's group changes (a third): in a group of thousands a removal costs
/// a target more than the member's user did.
pub const FLUSH_RESERVE_DIVISOR: u32 = 3;

/// Whether a run stopped by a failure keeps what it did: cut off by its
/// time (see [`out_of_time`]) after delivering something, it made progress
/// and the target did not fail (the undelivered stay due).
fn cut_off_after_progress(stop: &Stop, stop_at: Instant, report: &TargetReport) -> bool {
    matches!(stop, Stop::Target(_)) && out_of_time(stop_at) && report.delivered > 0
}

/// True when a request failed because the run's (or the target's) time
/// was up: the SCIM session refuses to start a request with less than a
/// fraction of a second left.
fn out_of_time(stop_at: Instant) -> bool {
    stop_at.saturating_duration_since(Instant::now()) < Duration::from_secs(1)
}

/// What one target may take of a delivery run: wall time and bytes read.
/// A target that is slow, hangs or floods Entitle with data is cut off at
/// its budget (and the run counts as failed unless it delivered
/// something), so that it cannot hold up the other tenants of the batch
/// for longer than that, nor run the function out of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetBudget {
    pub time: Duration,
    pub read_bytes: usize,
}

impl Default for TargetBudget {
    fn default() -> Self {
        TargetBudget { time: Duration::from_secs(15), read_bytes: 48 << 20 }
    }
}

/// Why a run stopped early: the target (counts towards its quarantine) or
/// Entitle's own ports (do not; everything not marked done stays due).
enum Stop {
    Target(TargetError),
    Port(Error),
}

impl From<TargetError> for Stop {
    fn from(e: TargetError) -> Self {
        Stop::Target(e)
    }
}

/// A port's result inside a run: its failure stops the run as
/// [`Stop::Port`] (not the target's fault).
fn port<T, E: Into<Error>>(r: Result<T, E>) -> Result<T, Stop> {
    r.map_err(|e| Stop::Port(e.into()))
}

/// The deliverer: its ports, the retry and quarantine policy, and what one
/// target may take of a run.
pub struct Deliverer<'a, S, K, D> {
    pub store: &'a S,
    pub tokens: &'a K,
    pub directory: &'a D,
    pub policy: Policy,
    pub budget: TargetBudget,
}

impl<S: Tenants + Targets + Models, K: Tokens, D: Directory> Deliverer<'_, S, K, D> {
    /// Delivers the tenant's pending changes to each of its targets, and
    /// runs drift repair where it is due or asked for (`repair_now`).
    pub async fn deliver_tenant(&self, tenant: &TenantId, repair_now: &[TargetId], cause: &Cause, stop_at: Instant) -> Result<Vec<TargetReport>, Error> {
        let mut reports = Vec::new();
        let targets = self.store.targets(tenant).await?;
        if targets.is_empty() {
            return Ok(reports);
        }
        // The roles Entitle manages on a target: the tenant's version's.
        let model = super::rules::rules_of(self.store, self.store.meta(tenant).await?.as_ref()).await?;
        for target in targets {
            if Instant::now() >= stop_at {
                // Not reached in this run: the next one follows.
                reports.push(TargetReport { target_id: target.target_id.to_string(), more: true, ..Default::default() });
                continue;
            }
            reports.push(self.deliver_target(&model, tenant, &target, repair_now.contains(&target.target_id), cause, stop_at).await?);
        }
        Ok(reports)
    }
}
