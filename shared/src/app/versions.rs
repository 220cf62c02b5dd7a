//! Licensing model versions: registering the deployed model, rollouts and
//! previews over many tenants (a batch at a time, from the index of
//! tenants), the sweep's part (pins that end, moves that wait for a
//! billing period's end), and pins. A tenant moves under its chain's lock
//! ([`super::rules::move_change`]), its members walked by the reconcile.
//!
//! [`pump`]: the runs' tenants handed to provision; [`work`]: provision's
//! part, one tenant at a time through [`rollouts`] or [`previews`];
//! [`pins`]: pins and the sweep's part. Registering, starting, canceling
//! and the overview are here.

pub mod pins;
pub mod previews;
pub mod pump;
pub mod rollouts;
pub mod work;

pub use pins::{model_due, pin, unpin, ModelDue};
pub use previews::start_preview;
pub use pump::{pump, PumpLimits, PumpReport};
pub use work::{work, WorkReport};

use super::ports::{ModelRegistry, Models};
use super::Error;
use crate::core::audit::{Cause, CauseKind};
use crate::core::ids::{ModelVersion, RunId, TenantId};
use crate::core::model::{Existing, LicensingModel};
use crate::core::rejection::Rejection;
use crate::core::versions::{versions_view, Outcome, OutcomeState, Registered, Registration, RolloutRequest, RunKind, RunSpec, RunState, RunStatus, Selection};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The cause every change of a rollout is audited with.
pub fn rollout_cause(run: &RunId) -> Cause {
    Cause::new(CauseKind::ModelRollout, run.as_str())
}

/// Registers the deployed model: its version, the fingerprint of its rules
/// and its text. A version registered with other rules is refused, naming
/// both fingerprints (nothing of any tenant follows the refused text: every
/// function decides with the rules as registered). A version registered
/// now as the latest, whose rule is `[rollout] existing = "migrate"`, gets
/// its automatic rollout (`deploy-<version>`, listed with the others); so
/// does one registered before whose rollout a crash kept from being made.
pub async fn register<S: ModelRegistry>(store: &S, deployed: &LicensingModel, text: &str, now: DateTime<Utc>) -> Result<Registration, Error> {
    let offered = Registered::of(deployed, text, now);
    let registration = store.register(&offered).await?;
    match &registration {
        Registration::Conflict { registered } => return Err(crate::core::versions::conflict(&deployed.version, registered, &offered.fingerprint).into()),
        Registration::New { .. } | Registration::Known => {}
    }
    let all = store.registered().await?;
    let latest = all.last().is_some_and(|r| r.version == deployed.version);
    // The first version ever registered is what every tenant stored before
    // followed: there is nothing to move.
    if latest && all.len() > 1 && deployed.rollout.existing == Existing::Migrate {
        let spec = RunSpec::deploy(deployed, now);
        if store.run(&spec.id).await?.is_none() {
            let total = selected_total(store, &all, &spec).await?;
            store.create_run(&RunState::new(spec, total)).await?;
        }
    }
    Ok(registration)
}

/// How many tenants a run selects, counted on the index (a list: its length).
async fn selected_total<S: ModelRegistry>(store: &S, registered: &[Registered], spec: &RunSpec) -> Result<u64, Error> {
    Ok(match &spec.tenants {
        Selection::List(l) => l.iter().filter(|t| !spec.exclude.contains(*t)).count() as u64,
        Selection::All | Selection::Tier(_) => {
            let mut n = 0;
            for r in registered.iter().filter(|r| &r.version != spec.to()) {
                n += store.count_following(&r.version).await?;
            }
            n
        }
    })
}

/// `POST /model/rollouts`: a rollout of a registered version (older than
/// the tenants' is a rollback, done the same way). The tenants move
/// asynchronously; the answer names the rollout to follow.
pub async fn start_rollout<S: ModelRegistry + Models>(store: &S, req: RolloutRequest, by: &str, id: RunId, now: DateTime<Utc>) -> Result<RunState, Error> {
    let model = store.rules(&req.to).await?.ok_or_else(|| Rejection::invalid("unknown_version", vec![format!("to: version {} is not registered (GET /model lists them)", req.to)]))?;
    if let Selection::Tier(t) = &req.tenants {
        if model.tier(t).is_none() && store.latest().await?.tier(t).is_none() {
            return Err(Rejection::invalid("invalid_rollout", vec![format!("tenants.tier: unknown tier {t:?}")]).into());
        }
    }
    let spec = RunSpec { id, kind: RunKind::Rollout { to: req.to, at: req.at }, tenants: req.tenants, exclude: req.exclude, created_at: now, by: by.to_string() };
    create(store, spec).await
}

async fn create<S: ModelRegistry>(store: &S, spec: RunSpec) -> Result<RunState, Error> {
    let registered = store.registered().await?;
    let total = selected_total(store, &registered, &spec).await?;
    let run = RunState::new(spec, total);
    if !store.create_run(&run).await? {
        return Err(Rejection::conflict("run_exists", format!("{} exists", run.spec.id)).into());
    }
    Ok(run)
}

/// `POST /model/rollouts/{id}/cancel`: no more tenants are handed out, and
/// waiting moves are dropped when they fall due; tenants already moved
/// stay moved.
pub async fn cancel<S: ModelRegistry>(store: &S, id: &RunId, now: DateTime<Utc>) -> Result<RunState, Error> {
    for _ in 0..MAX_ATTEMPTS_ON_RUN {
        let mut run = store.run(id).await?.ok_or_else(|| Rejection::not_found(&format!("rollout {id}")))?;
        if run.status.finished() {
            return Ok(run);
        }
        run.status = RunStatus::Canceled;
        run.finished_at = Some(now);
        if store.advance_run(&run).await? {
            run.rev += 1;
            return Ok(run);
        }
    }
    Err(Rejection::conflict("run_busy", format!("{id} kept changing; try again")).into())
}

const MAX_ATTEMPTS_ON_RUN: u32 = 10;

/// Where one tenant of a run ended.
enum Step {
    /// Its outcome, and whether members changed.
    Settled(Outcome, bool),
    /// Its walk goes on in the next message.
    More,
}

fn outcome(tenant: &TenantId, state: OutcomeState, from: Option<&ModelVersion>, reason: Option<String>, now: DateTime<Utc>) -> Outcome {
    Outcome { tenant_id: tenant.clone(), state, from: from.cloned(), reason, waits_until: None, members_changed: 0, preview: None, at: now }
}

/// `GET /model`: the latest version, every registered version with how
/// many tenants follow it, and the rollouts not finished.
pub async fn overview<S: ModelRegistry + Models>(store: &S) -> Result<(Value, u64), Error> {
    let registered = store.registered().await?;
    let mut counts = BTreeMap::new();
    for r in &registered {
        counts.insert(r.version.clone(), store.count_following(&r.version).await?);
    }
    let latest = registered.last().map(|r| r.version.clone());
    let behind: u64 = counts.iter().filter(|(v, _)| Some(*v) != latest.as_ref()).map(|(_, n)| n).sum();
    let rollouts: Vec<Value> = store.runs().await?.into_iter().filter(|r| r.spec.is_rollout() && !r.status.finished()).map(|r| r.view()).collect();
    let latest_view = match &latest {
        Some(v) => json!(v),
        // Nothing registered yet: the deployed model is what new tenants get.
        None => json!(store.latest().await?.version),
    };
    Ok((json!({ "latest": latest_view, "versions": versions_view(&registered, &counts, latest.as_ref()), "tenants_behind_latest": behind, "rollouts": rollouts }), behind))
}

/// The first version ever registered: what tenants stored before versions
/// were kept follow. Gives them their place in the index (the backfill), a
/// page per call, until none is left.
pub async fn backfill<S: ModelRegistry>(store: &S, limit: usize) -> Result<usize, Error> {
    let Some(cursor) = store.backfill_cursor().await? else { return Ok(0) };
    let Some(first) = store.registered().await?.into_iter().next() else { return Ok(0) };
    let (n, next) = store.backfill(&first.version, cursor.as_deref(), limit).await?;
    store.set_backfill_cursor(next.map(Some)).await?;
    Ok(n)
}
