//! Licensing model versions: registering the deployed model, rollouts and
//! previews over many tenants (a batch at a time, from the index of
//! tenants), the sweep's part (pins that end, moves that wait for a
//! billing period's end), and pins. A tenant moves under its chain's lock
//! ([`super::rules::move_change`]), its members walked by the reconcile.

use super::commit::{audited_on, Decision};
use super::ports::{Change, ModelRegistry, Models, PortError, Queue, Tenants, WorkQueue};
use super::rules::{move_change, rules};
use super::Error;
use crate::core::audit::{AuditAction, AuditEvent, Cause, CauseKind};
use crate::core::ids::{ModelVersion, RunId, TenantId};
use crate::core::model::{Existing, LicensingModel};
use crate::core::reconcile::ReconcileRequest;
use crate::core::rejection::Rejection;
use crate::core::tenant::{ModelPin, TenantHead, TenantMeta, WaitingMove};
use crate::core::versions::{
    preview_pages, preview_tenant, rollout_step, versions_view, Outcome, OutcomeState, PinRequest, PreviewOf, Registered, Registration, RolloutRequest, RunKind, RunSpec, RunState, RunStatus,
    Selection, TenantStep, Work, MAX_ATTEMPTS,
};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

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

/// `POST /model/previews`: what moving the selected tenants to a version
/// (or to a candidate model, not deployed) would change; nothing of any
/// tenant is written. A candidate whose version is registered with other
/// rules is refused, as its deploy would be.
pub async fn start_preview<S: ModelRegistry + Models>(store: &S, of: PreviewOf, tenants: Selection, exclude: BTreeSet<TenantId>, by: &str, id: RunId, now: DateTime<Utc>) -> Result<RunState, Error> {
    let (to, candidate) = match of {
        PreviewOf::Version(v) => {
            store.rules(&v).await?.ok_or_else(|| Rejection::invalid("unknown_version", vec![format!("version: {v} is not registered (GET /model lists them)")]))?;
            (v, None)
        }
        PreviewOf::Candidate(model, text) => {
            if let Some(r) = store.registered().await?.into_iter().find(|r| r.version == model.version) {
                if r.fingerprint != model.fingerprint() {
                    return Err(crate::core::versions::conflict(&model.version, &r.fingerprint, &model.fingerprint()).into());
                }
            }
            (model.version.clone(), Some(text))
        }
    };
    let spec = RunSpec { id, kind: RunKind::Preview { to, candidate }, tenants, exclude, created_at: now, by: by.to_string() };
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

/// What provision did with a work message.
#[derive(Debug, Default)]
pub struct WorkReport {
    /// Tenants whose members changed, for their SCIM targets.
    pub changed: Vec<TenantId>,
    pub settled: usize,
    /// What is left (out of time, or failed and tried again): the next message.
    pub rest: Option<Work>,
}

/// Provision's part of a rollout or preview: the tenants of the message,
/// `at_once` at a time, until `stop_at`; their outcomes settled together
/// at the end (one transaction per 99, not two requests per tenant). A
/// tenant that fails is tried again in the next message, and after
/// [`MAX_ATTEMPTS`] recorded as failed with its cause; the others go on. A
/// tenant whose walk runs out of time goes on in the next message from
/// where its walk stands. A crash before the settlement leaves the message
/// to be received again: its tenants are worked again, which moves none twice.
pub async fn work<S: Tenants + Models + ModelRegistry>(store: &S, work: &Work, now: DateTime<Utc>, stop_at: Instant, at_once: usize) -> Result<WorkReport, Error> {
    use futures_util::stream::{self, StreamExt};
    let mut report = WorkReport::default();
    let Some(run) = store.run(&work.run).await? else {
        tracing::warn!(run = %work.run, "work for a run that does not exist: dropped");
        return Ok(report);
    };
    let mut rest = Work { run: work.run.clone(), tenants: Vec::new(), due: work.due, attempts: BTreeMap::new() };
    let candidate = match &run.spec.kind {
        RunKind::Preview { candidate: Some(text), .. } => {
            Some(Arc::new(LicensingModel::from_toml(text, "candidate").map_err(|e| PortError::Corrupt { key: format!("preview {}", run.spec.id), why: e.to_string() })?))
        }
        _ => None,
    };
    let run = &run;
    let results: Vec<(TenantId, Option<Result<Step, Error>>)> = stream::iter(&work.tenants)
        .map(|tenant| {
            let candidate = candidate.clone();
            async move {
                if Instant::now() >= stop_at {
                    return (tenant.clone(), None);
                }
                let result = match &run.spec.kind {
                    RunKind::Rollout { .. } => rollout_tenant(store, run, tenant, work.due, now, stop_at).await,
                    RunKind::Preview { to, .. } => preview_one(store, run, to, candidate, tenant, now).await,
                };
                (tenant.clone(), Some(result))
            }
        })
        .buffer_unordered(at_once.max(1))
        .collect()
        .await;
    let mut settling = Vec::new();
    for (tenant, result) in results {
        match result {
            None => {
                if let Some(a) = work.attempts.get(&tenant) {
                    rest.attempts.insert(tenant.clone(), *a);
                }
                rest.tenants.push(tenant);
            }
            Some(Ok(Step::Settled(outcome, changed))) => {
                if changed {
                    report.changed.push(tenant);
                }
                settling.push(outcome);
            }
            Some(Ok(Step::More)) => {
                report.changed.push(tenant.clone());
                rest.tenants.push(tenant);
            }
            Some(Err(e)) => {
                let attempts = work.attempts.get(&tenant).copied().unwrap_or(0) + 1;
                tracing::warn!(run = %run.spec.id, tenant = %tenant, attempts, error = %super::error_chain(&e), "a tenant of a run failed");
                if attempts >= MAX_ATTEMPTS {
                    settling.push(Outcome {
                        tenant_id: tenant,
                        state: OutcomeState::Failed,
                        from: None,
                        reason: Some(super::error_chain(&e)),
                        waits_until: None,
                        members_changed: 0,
                        preview: None,
                        at: now,
                    });
                } else {
                    rest.attempts.insert(tenant.clone(), attempts);
                    rest.tenants.push(tenant);
                }
            }
        }
    }
    report.settled = store.settle(&run.spec.id, &settling).await?;
    if !rest.tenants.is_empty() {
        rest.tenants.sort();
        report.rest = Some(rest);
    }
    Ok(report)
}

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

/// One tenant of a rollout: skipped (excluded, pinned, gone, the rollout
/// canceled), its move scheduled for its period's end, or moved under its
/// chain's lock and its members walked (each change audited with the
/// rollout as its cause and a rule naming both versions).
async fn rollout_tenant<S: Tenants + Models + ModelRegistry>(store: &S, run: &RunState, tenant: &TenantId, due: bool, now: DateTime<Utc>, stop_at: Instant) -> Result<Step, Error> {
    let RunKind::Rollout { to, at } = &run.spec.kind else { unreachable!("a rollout") };
    let cause = rollout_cause(&run.spec.id);
    if run.status == RunStatus::Canceled {
        drop_waiting(store, tenant, &run.spec.id, &cause, "its rollout was canceled", now).await?;
        return Ok(Step::Settled(outcome(tenant, OutcomeState::Skipped, None, Some("the rollout was canceled".into()), now), false));
    }
    if run.spec.exclude.contains(tenant) {
        return Ok(Step::Settled(outcome(tenant, OutcomeState::Skipped, None, Some("excluded".into()), now), false));
    }
    let to_model = rules(store, to).await?;
    // Decided and committed under the tenant's chain head.
    let committed = audited_on(
        store,
        tenant,
        || store.tenant_head(tenant),
        |head| {
            let (cause, to_model) = (&cause, &to_model);
            async move {
                let Some(head) = head else { return Ok(Decision::Done(Decided::Gone)) };
                let from = head.meta.model_version.clone();
                match rollout_step(to, *at, &head.meta, &head.licenses, due, now) {
                    TenantStep::Skip(reason) => {
                        // A move that was waiting for this rollout is dropped, audited.
                        let change = waiting_dropped(&head, &run.spec.id, cause, &reason, now);
                        Ok(match change {
                            Some(c) => Decision::one(c, Decided::Skip(from, reason)),
                            None => Decision::Done(Decided::Skip(from, reason)),
                        })
                    }
                    TenantStep::Wait(until) => {
                        let waiting = WaitingMove { rollout: run.spec.id.clone(), to: to.clone(), at: until };
                        if head.meta.model_waiting.as_ref() == Some(&waiting) {
                            return Ok(Decision::Done(Decided::Wait(from, until)));
                        }
                        let mut change = Change::new(now).audit(
                            AuditEvent::new(
                                AuditAction::TenantModelMoveScheduled,
                                "tenant",
                                cause,
                                format!("model {from} -> {to} at the end of the tenant's billing period, {}", until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                            )
                            .before(json!({ "model": from, "waiting": head.meta.model_waiting }))
                            .after(json!({ "model": from, "waiting": waiting })),
                        );
                        let due = head.meta.model_pin.as_ref().and_then(|p| p.until).map_or(until, |p| p.min(until));
                        change.meta.model_waiting = Some(Some(waiting));
                        change.meta.model_due = Some(Some(due));
                        Ok(Decision::one(change, Decided::Wait(from, until)))
                    }
                    TenantStep::Move if from == *to => Ok(Decision::Done(Decided::Moved(from))),
                    TenantStep::Move => {
                        let from_model = rules(store, &from).await?;
                        let rule = format!("model rollout {}: {from} -> {to}", run.spec.id);
                        Ok(Decision::one(move_change(&head, &from_model, to_model, cause, rule, now), Decided::Moved(from)))
                    }
                }
            }
        },
    )
    .await?;
    match committed.value {
        Decided::Gone => Ok(Step::Settled(outcome(tenant, OutcomeState::Skipped, None, Some("no such tenant".into()), now), false)),
        Decided::Skip(from, reason) => Ok(Step::Settled(outcome(tenant, OutcomeState::Skipped, Some(&from), Some(reason), now), false)),
        Decided::Wait(from, until) => {
            Ok(Step::Settled(Outcome { waits_until: Some(until), ..outcome(tenant, OutcomeState::Waiting, Some(&from), Some("waits for the end of its billing period".into()), now) }, false))
        }
        Decided::Moved(from) => {
            // The walk: this message goes on with it until its time, the
            // next one from where it stands (`META.walk`).
            let done = super::reconcile::reconcile_until(store, tenant, &cause, now, Some(stop_at)).await?;
            if done.more {
                return Ok(Step::More);
            }
            let meta = store.meta(tenant).await?;
            let walked = meta.as_ref().and_then(|m| m.walk.as_ref()).filter(|w| w.cause.as_ref() == Some(&cause)).map_or(0, |w| w.changed);
            let changed = walked + done.seat_changes;
            Ok(Step::Settled(Outcome { members_changed: changed, ..outcome(tenant, OutcomeState::Done, Some(&from), None, now) }, done.member_changes > 0))
        }
    }
}

enum Decided {
    Gone,
    Skip(ModelVersion, String),
    Wait(ModelVersion, DateTime<Utc>),
    Moved(ModelVersion),
}

/// The change that drops a move of `rollout` waiting on the tenant, if one does.
fn waiting_dropped(head: &TenantHead, rollout: &RunId, cause: &Cause, why: &str, now: DateTime<Utc>) -> Option<Change> {
    let waiting = head.meta.model_waiting.as_ref().filter(|w| &w.rollout == rollout)?;
    let mut change = Change::new(now).audit(
        AuditEvent::new(AuditAction::TenantModelMoveDropped, "tenant", cause, format!("the move to {} is dropped: {why}", waiting.to))
            .before(json!({ "model": head.meta.model_version, "waiting": waiting }))
            .after(json!({ "model": head.meta.model_version })),
    );
    change.meta.model_waiting = Some(None);
    change.meta.model_due = Some(head.meta.model_pin.as_ref().and_then(|p| p.until));
    Some(change)
}

async fn drop_waiting<S: Tenants>(store: &S, tenant: &TenantId, rollout: &RunId, cause: &Cause, why: &str, now: DateTime<Utc>) -> Result<(), Error> {
    audited_on(
        store,
        tenant,
        || store.tenant_head(tenant),
        |head| async move {
            Ok(match head.as_ref().and_then(|h| waiting_dropped(h, rollout, cause, why, now)) {
                Some(change) => Decision::one(change, ()),
                None => Decision::Done(()),
            })
        },
    )
    .await?;
    Ok(())
}

/// One tenant of a preview: every member read (a page at a time) and
/// compared with what the tenant's licenses and contracts give it under
/// the version previewed; the difference stored, nothing of the tenant written.
async fn preview_one<S: Tenants + Models + ModelRegistry>(
    store: &S,
    run: &RunState,
    to: &ModelVersion,
    candidate: Option<Arc<LicensingModel>>,
    tenant: &TenantId,
    now: DateTime<Utc>,
) -> Result<Step, Error> {
    if run.status == RunStatus::Canceled || run.spec.exclude.contains(tenant) {
        return Ok(Step::Settled(outcome(tenant, OutcomeState::Skipped, None, Some("excluded".into()), now), false));
    }
    let model = match candidate {
        Some(m) => m,
        None => rules(store, to).await?,
    };
    let Some(head) = store.tenant_head(tenant).await? else {
        return Ok(Step::Settled(outcome(tenant, OutcomeState::Skipped, None, Some("no such tenant".into()), now), false));
    };
    let mut members = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, next) = store.members_page(tenant, after.as_deref(), PREVIEW_READ_PAGE).await?;
        members.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let (impact, tenant_changed) = preview_tenant(&model, &head.meta, &head.licenses, &head.rules(), &members, now);
    let pages = preview_pages(tenant, &head.meta.model_version, to, impact, tenant_changed);
    let totals = pages[0].totals.clone();
    store.put_preview(&run.spec.id, &pages).await?;
    let changed = totals.members_changed;
    Ok(Step::Settled(Outcome { members_changed: changed, preview: Some(totals), ..outcome(tenant, OutcomeState::Done, Some(&head.meta.model_version), None, now) }, false))
}

/// Members a preview reads at once.
const PREVIEW_READ_PAGE: usize = 1000;

/// What the sweep did with a tenant whose model item fell due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelDue {
    Nothing,
    /// A waiting move handed back to its rollout.
    Moved,
    /// A pin whose `until` passed released, and the tenant moved to the latest version.
    PinReleased {
        to: ModelVersion,
    },
}

/// The sweep's part: a pin whose `until` passed is released and the
/// tenant migrated to the latest version (one audited commit; its walk is
/// queued as a reconcile); a move waiting for the end of the billing
/// period is handed back to its rollout (a work message).
pub async fn model_due<S: Tenants + Models + ModelRegistry, Q: Queue, W: WorkQueue>(store: &S, queue: &Q, work: &W, tenant: &TenantId, cause: &Cause, as_of: DateTime<Utc>) -> Result<ModelDue, Error> {
    let Some(meta) = store.meta(tenant).await? else { return Ok(ModelDue::Nothing) };
    if meta.model_pin.as_ref().and_then(|p| p.until).is_some_and(|u| u <= as_of) {
        let to = release(store, queue, tenant, cause, "its `until` passed", as_of).await?;
        return Ok(to.map_or(ModelDue::Nothing, |to| ModelDue::PinReleased { to }));
    }
    if let Some(w) = meta.model_waiting.as_ref().filter(|w| w.at <= as_of) {
        work.send_work(&Work { run: w.rollout.clone(), tenants: vec![tenant.clone()], due: true, attempts: BTreeMap::new() }).await?;
        return Ok(ModelDue::Moved);
    }
    Ok(ModelDue::Nothing)
}

/// `PUT /tenants/{tenant}/model`: keeps the tenant on a registered version
/// (moving it there now, if it follows another), audited; rollouts skip
/// it until the pin is released or its `until` passes.
pub async fn pin<S: Tenants + Models, Q: Queue>(store: &S, queue: &Q, tenant: &TenantId, req: &PinRequest, cause: &Cause, now: DateTime<Utc>) -> Result<TenantMeta, Error> {
    let to = store.rules(&req.version).await?.ok_or_else(|| Rejection::invalid("unknown_version", vec![format!("version: {} is not registered (GET /model lists them)", req.version)]))?;
    let pin = ModelPin { version: req.version.clone(), until: req.until, by: req.by.clone(), reason: req.reason.clone(), at: now };
    let committed = audited_on(
        store,
        tenant,
        || store.tenant_head(tenant),
        |head| {
            let (pin, to) = (&pin, &to);
            async move {
                let head = head.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?;
                let from = rules(store, &head.meta.model_version).await?;
                let rule = format!("pinned to {} by {}: {}", pin.version, pin.by, pin.reason);
                let mut change = if head.meta.model_version != pin.version { move_change(&head, &from, to, cause, rule.clone(), now) } else { Change::new(now) };
                // A move of a rollout waiting to another version would undo the pin.
                if head.meta.model_waiting.as_ref().is_some_and(|w| w.to != pin.version) {
                    change.meta.model_waiting = Some(None);
                }
                change.meta.model_pin = Some(Some(pin.clone()));
                let waiting = if change.meta.model_waiting == Some(None) { None } else { head.meta.model_waiting.as_ref().map(|w| w.at) };
                change.meta.model_due = Some(match (pin.until, waiting) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                });
                let change = change.audit(
                    AuditEvent::new(AuditAction::TenantModelPinned, "tenant", cause, rule)
                        .before(json!({ "pin": head.meta.model_pin, "model": head.meta.model_version }))
                        .after(json!({ "pin": pin, "model": pin.version })),
                );
                Ok(Decision::one(change, head.meta.model_version != pin.version))
            }
        },
    )
    .await?;
    if committed.value {
        // Its walk: provision's, as any reconcile (a message the code
        // before versions reads too), audited with this cause.
        queue.send(&ReconcileRequest::new(tenant.clone(), cause.clone()), &format!("pin:{tenant}:{}", now.timestamp_micros())).await?;
    }
    Ok(store.meta(tenant).await?.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?)
}

/// `DELETE /tenants/{tenant}/model`: the pin released, and the tenant
/// migrated to the latest version; the version it follows after.
pub async fn unpin<S: Tenants + Models, Q: Queue>(store: &S, queue: &Q, tenant: &TenantId, cause: &Cause, now: DateTime<Utc>) -> Result<Option<ModelVersion>, Error> {
    if store.meta(tenant).await?.is_none() {
        return Err(Rejection::not_found(&format!("tenant {tenant}")).into());
    }
    release(store, queue, tenant, cause, "released", now).await
}

/// Releases a tenant's pin and moves it to the latest version, in one
/// audited commit; the version it follows after (`None`: it had no pin).
async fn release<S: Tenants + Models, Q: Queue>(store: &S, queue: &Q, tenant: &TenantId, cause: &Cause, why: &str, now: DateTime<Utc>) -> Result<Option<ModelVersion>, Error> {
    let latest = store.latest().await?;
    let committed = audited_on(
        store,
        tenant,
        || store.tenant_head(tenant),
        |head| {
            let latest = &latest;
            async move {
                let Some(head) = head else { return Ok(Decision::Done(None)) };
                let Some(pin) = head.meta.model_pin.clone() else { return Ok(Decision::Done(None)) };
                let from = rules(store, &head.meta.model_version).await?;
                let rule = format!("pin to {} {why}: the tenant follows the latest version, {}", pin.version, latest.version);
                let moves = head.meta.model_version != latest.version;
                let mut change = if moves { move_change(&head, &from, latest, cause, rule.clone(), now) } else { Change::new(now) };
                change.meta.model_pin = Some(None);
                change.meta.model_due = Some(if change.meta.model_waiting == Some(None) { None } else { head.meta.model_waiting.as_ref().map(|w| w.at) });
                let change = change.audit(
                    AuditEvent::new(AuditAction::TenantModelUnpinned, "tenant", cause, rule).before(json!({ "pin": pin, "model": head.meta.model_version })).after(json!({ "model": latest.version })),
                );
                Ok(Decision::one(change, Some((latest.version.clone(), moves))))
            }
        },
    )
    .await?;
    let Some((to, moves)) = committed.value else { return Ok(None) };
    if moves {
        queue.send(&ReconcileRequest::new(tenant.clone(), cause.clone()), &format!("unpin:{tenant}:{}", now.timestamp_micros())).await?;
    }
    Ok(Some(to))
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
