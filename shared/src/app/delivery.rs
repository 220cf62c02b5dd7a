//! Delivery to SCIM targets: after a tenant's changes are committed, make
//! each of its targets hold what the delivery records say; repair drift on
//! schedule or on demand; keep each target's health, quarantining one that
//! keeps failing (crashes included) and resuming it when it answers again.
//!
//! Runs in `provision`, inside the tenant's FIFO message group, so one
//! deliverer works on a tenant at a time.

use super::commit::{audited, Decision};
use super::ports::{Change, Directory, DirectorySession, Models, Targets, Tenants, Tokens, Write};
use super::Error;
use crate::core::access::{Member, MemberAccess};
use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::events::Announcement;
use crate::core::ids::{TargetId, TenantId, UserId};
use crate::core::model::LicensingModel;
use crate::core::scim::{self, GroupChange, Health, Known, Pending, Policy, Standing, SyncOutcome, Target, TargetError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tracing::Instrument;

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

/// Sends the group changes of a batch of members (one request per group);
/// a batch the target refuses (a 4xx about the data) is sent member by
/// member. Returns, per member, the reason the target refused its changes.
async fn apply_batch<S: crate::app::ports::DirectorySession>(session: &S, members: Vec<&[GroupChange]>) -> Result<Vec<Option<String>>, Stop> {
    let all: Vec<GroupChange> = members.iter().flat_map(|c| c.iter().cloned()).collect();
    match session.apply_group_changes(&all).await {
        Ok(()) => return Ok(vec![None; members.len()]),
        Err(TargetError::Refused { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let mut refusals = Vec::with_capacity(members.len());
    for changes in members {
        refusals.push(match session.apply_group_changes(changes).await {
            Ok(()) => None,
            Err(TargetError::Refused { what, status, detail }) => Some(format!("{what}: HTTP {status} {detail}")),
            Err(e) => return Err(e.into()),
        });
    }
    Ok(refusals)
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

/// What drift repair found and did on one target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    pub members_checked: usize,
    /// Members whose user on the target was brought back in line.
    pub repaired: Vec<String>,
    /// Users removed from managed groups they had no role for.
    pub strangers_removed: usize,
    pub refused: usize,
    /// Members parked because their userName belongs to someone else's user.
    pub conflicts: usize,
    pub complete: bool,
    /// The target listed a managed group empty although members Entitle
    /// delivered belong in it (it does not list members as its profile says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contradiction: Option<String>,
}

impl RepairReport {
    /// True when the target differed and was changed (the repair is audited).
    pub fn changed(&self) -> bool {
        !self.repaired.is_empty() || self.strangers_removed > 0
    }
}

/// What one run did for one target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetReport {
    pub target_id: String,
    /// Backing off or quarantined: not attempted this time.
    pub waiting: bool,
    pub delivered: usize,
    pub refused: usize,
    /// Members whose userName is held by someone else's user on the target:
    /// their delivery is parked (never adopted).
    pub conflicts: usize,
    pub repair: Option<RepairReport>,
    pub error: Option<String>,
    /// Quarantined or resumed by this run.
    pub standing: Option<Standing>,
    /// The run ran out of time after progress with changes still waiting:
    /// the next run should follow at once, not at the next sweep.
    pub more: bool,
    /// The run stopped at the target's documented rate limit (not a
    /// failure): what waits goes in a later run.
    pub paced: Option<String>,
    /// The target answered against its profile in this run (reported,
    /// audited once, and its member lists not trusted).
    pub contradiction: Option<String>,
}

impl TargetReport {
    /// True when the run wrote audit records (and events) for this target.
    pub fn audited(&self) -> bool {
        self.standing.is_some() || self.conflicts > 0 || self.repair.as_ref().is_some_and(|r| r.changed() || r.conflicts > 0)
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

    async fn deliver_target(&self, model: &LicensingModel, tenant: &TenantId, target: &Target, forced: bool, cause: &Cause, stop_at: Instant) -> Result<TargetReport, Error> {
        let now = Utc::now();
        let mut report = TargetReport { target_id: target.target_id.to_string(), ..Default::default() };
        let span = tracing::info_span!("target", tenant = %tenant, target = %target.target_id);
        // A run that started and never finished (a crash, out of memory or
        // time) counts as a failure before anything else is decided.
        let mut health = target.health.clone();
        let mut audit = Vec::new();
        if let Some((next, standing)) = health.unfinished_attempt(&self.policy, now) {
            span.in_scope(|| tracing::warn!(cause = %cause, failures = next.failures, "the last delivery run did not finish: counted as a failure"));
            if let Some(Standing::Quarantined) = standing {
                report.standing = Some(Standing::Quarantined);
                audit.push(self.standing_record(Standing::Quarantined, target, &health, &next, cause));
            }
            health = next;
        }
        let pending: Vec<Pending> = self.store.pending(tenant, &target.target_id).await?.into_iter().filter(|p| p.parked.is_none()).collect();
        // A failing target is probed with a repair: it lists everything, so
        // it proves the target is back and catches up on whatever was missed.
        let repair_due = forced || target.repair_due_at() <= now || health.failures > 0;
        if (!forced && !health.may_attempt(now)) || (pending.is_empty() && !repair_due) {
            report.waiting = !forced && !health.may_attempt(now);
            if health != target.health {
                self.save_health(tenant, &Target { health, ..target.clone() }, audit, now).await?;
            }
            return Ok(report);
        }
        // Recorded before the target is reached, so that a run that dies on
        // the way is counted by the next one.
        let started = Health { attempt_started_at: Some(now), ..health.clone() };
        self.save_health(tenant, &Target { health: started, ..target.clone() }, std::mem::take(&mut audit), now).await?;
        let budget_until = stop_at.min(Instant::now() + self.budget.time);
        let result = async {
            // The token's name follows from the tenant and the target; a
            // name stored in the table is never followed.
            match self.tokens.get(tenant, &target.target_id).await {
                Ok(token) => {
                    // Requests may run into the stop margin, not past the target's budget.
                    // No member starts after the budget; the last batch's
                    // group changes may take FLUSH_GRACE more.
                    let session = self.directory.open(target, token, (budget_until + FLUSH_GRACE).min(stop_at + HARD_STOP_AFTER), self.budget.read_bytes);
                    let managed = scim::managed_groups(&target.mapping, &model.roles);
                    let ran = self.run(tenant, target, &session, &managed, pending, repair_due, budget_until, cause, &mut report).await;
                    (ran, session.contradiction(), session.rosters_agreed())
                }
                Err(e) => (Err(Stop::Target(TargetError::Unavailable { reason: format!("the target's token cannot be read: {e}"), retry_after: None })), None, false),
            }
        }
        .instrument(span.clone())
        .await;
        let (result, contradiction, agreed) = result;
        let contradiction = contradiction.or_else(|| report.repair.as_ref().and_then(|r| r.contradiction.clone()));
        let _entered = span.enter();
        // A target that answers against its profile is reported, once, and
        // not trusted until a run's lists agree with it again.
        match (&contradiction, &health.contradiction) {
            // Already reported: what it says now is kept, not reported again.
            (Some(now_seen), Some(_)) => health.contradiction = Some(now_seen.clone()),
            (Some(now_seen), None) => {
                tracing::warn!(cause = %cause, reason = %now_seen, "target contradicts its profile");
                audit.push(
                    AuditEvent::new(
                        AuditAction::TargetContradictsProfile,
                        format!("target:{}", target.target_id),
                        cause,
                        format!("the {} target answered against its profile: {now_seen}; its member lists are not trusted, each member's groups are enforced", target.profile.as_str()),
                    )
                    .after(serde_json::json!({"contradiction": now_seen})),
                );
                health.contradiction = Some(now_seen.clone());
            }
            (None, Some(_)) if agreed => health.contradiction = None,
            _ => {}
        }
        report.contradiction = contradiction;
        let outcome = match result {
            Ok(()) => Ok(()),
            // At the target's rate limit: not a failure; later runs go on.
            Err(Stop::Target(TargetError::Paced { reason })) => {
                tracing::info!(cause = %cause, reason = %reason, "delivery paced by the target's rate limit");
                report.paced = Some(reason);
                Ok(())
            }
            Err(Stop::Target(e)) => Err(e),
            Err(Stop::Port(e)) => {
                // Not the target's fault: leave its health as it was (the
                // run not counted); everything undelivered stays due.
                let _ = self.store.save_health(tenant, &Target { health, ..target.clone() }).await;
                return Err(e);
            }
        };
        let finished = Utc::now();
        match outcome {
            Ok(()) => {
                let (mut next, standing) = health.on_success(finished);
                if report.repair.as_ref().is_some_and(|r| r.complete) {
                    next.last_repair_at = Some(finished);
                    next.last_repair_cause = Some(cause.to_string());
                }
                if let Some(Standing::Resumed) = standing {
                    tracing::info!(cause = %cause, "target answers again: quarantine lifted");
                    report.standing = Some(Standing::Resumed);
                    audit.push(self.standing_record(Standing::Resumed, target, &health, &next, cause));
                }
                if let Some(r) = report.repair.as_ref().filter(|r| r.changed()) {
                    audit.push(
                        AuditEvent::new(
                            AuditAction::TargetRepaired,
                            format!("target:{}", target.target_id),
                            cause,
                            "drift repair: the target differed from desired access (its first sync, or changes made behind Entitle's back) and was brought in line",
                        )
                        .after(r),
                    );
                }
                health = next;
            }
            Err(e) => {
                let (reason, retry_after) = match &e {
                    TargetError::Unavailable { reason, retry_after } => (reason.clone(), *retry_after),
                    TargetError::Refused { .. } | TargetError::Conflict { .. } | TargetError::Paced { .. } => (e.to_string(), None),
                };
                tracing::warn!(cause = %cause, error = %reason, failures = health.failures + 1, "target unavailable; its changes wait");
                let (mut next, standing) = health.on_failure(&self.policy, finished, &reason);
                if let (Some(r), Some(at)) = (retry_after, next.retry_at) {
                    // The target said when to come back: not before that.
                    next.retry_at = Some(at.max(finished + chrono::Duration::from_std(r).unwrap_or_default()));
                }
                if let Some(Standing::Quarantined) = standing {
                    tracing::warn!(cause = %cause, failures = next.failures, "target quarantined");
                    report.standing = Some(Standing::Quarantined);
                    audit.push(self.standing_record(Standing::Quarantined, target, &health, &next, cause));
                }
                report.error = Some(reason);
                health = next;
            }
        }
        self.save_health(tenant, &Target { health, ..target.clone() }, audit, finished).await?;
        Ok(report)
    }

    /// Records a target's health. A change of standing or a repair that
    /// changed something is audited (and announced) in the same transaction;
    /// plain health needs no audit record and is one conditional update.
    async fn save_health(&self, tenant: &TenantId, target: &Target, audit: Vec<AuditEvent>, now: DateTime<Utc>) -> Result<(), Error> {
        if audit.is_empty() {
            self.store.save_health(tenant, target).await?; // a target removed meanwhile has no health to keep
            return Ok(());
        }
        audited(self.store, tenant, |meta| {
            let audit = audit.clone();
            async move {
                if meta.is_none() || !self.store.targets(tenant).await?.iter().any(|t| t.target_id == target.target_id) {
                    return Ok(Decision::Done(())); // removed meanwhile
                }
                Ok(Decision::one(Change { writes: vec![Write::TargetHealth(target.clone())], audit, ..Change::new(now) }, ()))
            }
        })
        .await?;
        Ok(())
    }

    fn standing_record(&self, standing: Standing, target: &Target, before: &Health, after: &Health, cause: &Cause) -> AuditEvent {
        let target_id = target.target_id.clone();
        let (action, rule, announce) = match standing {
            Standing::Quarantined => (
                AuditAction::TargetQuarantined,
                format!("{} consecutive failed deliveries: quarantined; retried every {} s until it answers (other targets are not affected)", after.failures, self.policy.quarantine_retry_secs),
                Announcement::TargetQuarantined { target_id, health: after.clone() },
            ),
            Standing::Resumed => (
                AuditAction::TargetResumed,
                "the target answered again: quarantine lifted; changes held meanwhile delivered and drift repaired".to_string(),
                Announcement::TargetResumed { target_id, health: after.clone() },
            ),
        };
        AuditEvent::new(action, format!("target:{}", target.target_id), cause, rule).before(before).after(after).announcing(announce)
    }

    /// Parks a member's delivery to a target at once, with the reason and an
    /// audit record (`delivery_parked`): the target holds the member's
    /// userName for someone else's user, which is never adopted. `if_seq`:
    /// the delivery record being parked (a newer change replaces it and is
    /// tried afresh); `None` (drift repair): only where no record waits.
    /// Returns whether it parked.
    #[allow(clippy::too_many_arguments)]
    async fn park(&self, tenant: &TenantId, target: &TargetId, member: &Member, access: &MemberAccess, if_seq: Option<u64>, reason: &str, cause: &Cause) -> Result<bool, Error> {
        let reason: String = reason.chars().take(500).collect();
        let now = Utc::now();
        let committed = audited(self.store, tenant, |meta| {
            let reason = reason.clone();
            async move {
                if meta.is_none() {
                    return Ok(Decision::Done(()));
                }
                let audit = AuditEvent::new(AuditAction::DeliveryParked, format!("member:{}", member.user_id), cause, reason.clone()).after(serde_json::json!({"target_id": target, "parked": reason}));
                let write = Write::ParkDelivery { target: target.clone(), member: member.clone(), access: access.clone(), if_seq, reason };
                Ok(Decision::one(Change::new(now).write(write).audit(audit), ()))
            }
        })
        .await?;
        Ok(committed.refused.is_none() && !committed.changes.is_empty())
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        tenant: &TenantId,
        target: &Target,
        session: &D::Session,
        managed: &BTreeSet<String>,
        pending: Vec<Pending>,
        repair: bool,
        stop_at: Instant,
        cause: &Cause,
        report: &mut TargetReport,
    ) -> Result<(), Stop> {
        let mut batch: Vec<(Pending, SyncOutcome, Vec<GroupChange>)> = Vec::new();
        // Counted from this target's start: a target begun late in a run
        // still gets the run's remaining time for members.
        let members_until = stop_at.min(Instant::now() + (self.budget.time - self.budget.time / FLUSH_RESERVE_DIVISOR));
        for p in pending {
            if Instant::now() >= members_until {
                // Out of time for members (the run's, or this target's
                // budget, less the share kept for the batch's group
                // changes): the rest stays due. A target that took its
                // whole budget without delivering anything has failed this run.
                if !self.flush_within(tenant, target, session, &mut batch, stop_at, report).await? {
                    return Ok(());
                }
                if report.delivered == 0 {
                    return Err(Stop::Target(TargetError::Unavailable { reason: format!("delivered no change within its {} s budget", self.budget.time.as_secs()), retry_after: None }));
                }
                report.more = true;
                return Ok(());
            }
            let desired = scim::desired_on(target, &p.member, &p.access);
            match session.sync_user_deferred(&desired, managed, None).await {
                Ok((outcome, changes)) => {
                    batch.push((p, outcome, changes));
                    if batch.len() >= MEMBERS_PER_BATCH && !self.flush_within(tenant, target, session, &mut batch, stop_at, report).await? {
                        return Ok(());
                    }
                }
                Err(TargetError::Refused { what, status, detail }) => {
                    let reason = format!("{what}: HTTP {status} {detail}");
                    tracing::warn!(user = %p.member.user_id, seq = p.seq, error = %reason, "target refused the member's state");
                    port(self.store.refused(tenant, &target.target_id, &p, &reason).await)?;
                    report.refused += 1;
                }
                Err(TargetError::Conflict { reason }) => {
                    tracing::warn!(user = %p.member.user_id, seq = p.seq, error = %reason, "userName held by someone else's user: delivery parked");
                    port(self.park(tenant, &target.target_id, &p.member, &p.access, Some(p.seq), &reason, cause).await)?;
                    report.conflicts += 1;
                }
                // Cut off at the budget in the middle of a member after
                // delivering others: progress, not a failure of the target
                // (the member stays due).
                Err(_) if out_of_time(stop_at) && (report.delivered > 0 || !batch.is_empty()) => {
                    report.more = true;
                    return self.flush_within(tenant, target, session, &mut batch, stop_at, report).await.map(|_| ());
                }
                // The batch's users were changed, their groups not: they stay
                // due, and the next run finds where they stand.
                Err(e) => return Err(e.into()),
            }
        }
        if !self.flush_within(tenant, target, session, &mut batch, stop_at, report).await? {
            return Ok(());
        }
        if repair {
            match self.repair(tenant, target, session, managed, stop_at, cause).await {
                Ok(r) => report.repair = Some(r),
                Err(stop) if cut_off_after_progress(&stop, stop_at, report) => {
                    report.more = true;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// [`Deliverer::flush`]; false when it was cut off by the run's time
    /// after progress (the run ends there, not failed; the rest stays due).
    async fn flush_within(
        &self,
        tenant: &TenantId,
        target: &Target,
        session: &D::Session,
        batch: &mut Vec<(Pending, SyncOutcome, Vec<GroupChange>)>,
        stop_at: Instant,
        report: &mut TargetReport,
    ) -> Result<bool, Stop> {
        match self.flush(tenant, target, session, batch, report).await {
            Ok(()) => Ok(true),
            Err(stop) if cut_off_after_progress(&stop, stop_at, report) => {
                report.more = true;
                Ok(false)
            }
            Err(stop) => Err(stop),
        }
    }

    /// The batch's group changes, one request per group; then its members
    /// are delivered. A target that refuses a group's batch (a 4xx about
    /// the data) gets each member's changes on their own, and a member it
    /// refuses is held with the reason, as a refused user is.
    async fn flush(&self, tenant: &TenantId, target: &Target, session: &D::Session, batch: &mut Vec<(Pending, SyncOutcome, Vec<GroupChange>)>, report: &mut TargetReport) -> Result<(), Stop> {
        if batch.is_empty() {
            return Ok(());
        }
        let refusals = apply_batch(session, batch.iter().map(|(_, _, c)| c.as_slice()).collect()).await?;
        for ((p, outcome, _), refusal) in batch.drain(..).zip(refusals) {
            if let Some(reason) = refusal {
                tracing::warn!(user = %p.member.user_id, seq = p.seq, error = %reason, "target refused the member's groups");
                port(self.store.refused(tenant, &target.target_id, &p, &reason).await)?;
                report.refused += 1;
                continue;
            }
            tracing::info!(user = %p.member.user_id, seq = p.seq, done = %outcome.summary(), conflicts = outcome.conflicts, "member delivered");
            port(self.store.delivered(tenant, &target.target_id, &p.member.user_id, p.seq).await)?;
            report.delivered += 1;
        }
        Ok(())
    }

    /// A repair's batch of group changes; then its members count as repaired.
    async fn flush_repairs(session: &D::Session, batch: &mut Vec<(String, SyncOutcome, Vec<GroupChange>)>, out: &mut RepairReport) -> Result<(), Stop> {
        if batch.is_empty() {
            return Ok(());
        }
        let refusals = apply_batch(session, batch.iter().map(|(_, _, c)| c.as_slice()).collect()).await?;
        for ((user, o, _), refusal) in batch.drain(..).zip(refusals) {
            if let Some(reason) = refusal {
                tracing::warn!(user = %user, error = %reason, "target refused a repair");
                out.refused += 1;
                continue;
            }
            tracing::info!(user = %user, done = %o.summary(), "drift repaired");
            out.repaired.push(user);
        }
        Ok(())
    }

    /// Compares everything the target holds with desired access and repairs
    /// the differences: users changed, added to or removed from managed
    /// groups, deleted or re-activated behind Entitle's back.
    async fn repair(&self, tenant: &TenantId, target: &Target, session: &D::Session, managed: &BTreeSet<String>, stop_at: Instant, cause: &Cause) -> Result<RepairReport, Stop> {
        let state = port(self.store.tenant(tenant).await)?;
        let members = state.map(|s| s.members).unwrap_or_default();
        let profile = target.profile.profile();
        let desired: Vec<scim::DesiredUser> = members.iter().map(|m| scim::desired_on(target, &m.member, &m.access)).collect();
        let mut contradiction = None;
        let plan = if profile.lists_users {
            let users = session.users().await?;
            // Members' groups and strangers only where the target lists members.
            let mut groups = if profile.membership == scim::Membership::Listed && session.contradiction().is_none() { Some(session.groups().await?) } else { None };
            if let Some(listed) = &groups {
                let waiting: BTreeSet<UserId> = port(self.store.pending(tenant, &target.target_id).await)?.into_iter().map(|p| p.member.user_id).collect();
                contradiction = scim::listed_empty_but_filled(&desired, &users, listed, managed, &waiting);
                if contradiction.is_some() {
                    // Its lists are not trusted: each member's groups are enforced.
                    groups = None;
                }
            }
            scim::repair_plan(desired, &users, groups.as_deref(), managed)
        } else {
            // Nothing can be listed: each member is looked up (and its groups
            // found as the target allows) when it is synced.
            scim::RepairPlan { members: desired.into_iter().map(|d| (d, None, None)).collect(), ..Default::default() }
        };
        let mut out = RepairReport { members_checked: plan.members.len() + plan.conflicts.len(), contradiction, ..Default::default() };
        for (desired, reason) in &plan.conflicts {
            let Some(m) = members.iter().find(|m| m.member.user_id == desired.user_id) else { continue };
            if port(self.park(tenant, &target.target_id, &m.member, &m.access, None, reason, cause).await)? {
                tracing::warn!(user = %desired.user_id, error = %reason, "userName held by someone else's user: delivery parked");
            }
            out.conflicts += 1;
        }
        // Group changes go in batches, as deliveries do (see `flush`).
        let mut changes: Vec<(String, SyncOutcome, Vec<GroupChange>)> = Vec::new();
        for (desired, user, member_of) in plan.members {
            if changes.len() >= MEMBERS_PER_BATCH || Instant::now() >= stop_at {
                Self::flush_repairs(session, &mut changes, &mut out).await?;
            }
            if Instant::now() >= stop_at {
                return Ok(out);
            }
            // A member whose user the plan did not find where nothing is
            // listed is looked up by the sync itself.
            let known = if profile.lists_users { Some(Known { user, member_of }) } else { None };
            match session.sync_user_deferred(&desired, managed, known).await {
                Ok((o, group_changes)) if o.changed() => changes.push((desired.user_id.to_string(), o, group_changes)),
                Ok(_) => {}
                Err(TargetError::Refused { what, status, detail }) => {
                    tracing::warn!(user = %desired.user_id, error = %format!("{what}: HTTP {status} {detail}"), "target refused a repair");
                    out.refused += 1;
                }
                Err(TargetError::Conflict { reason }) => {
                    tracing::warn!(user = %desired.user_id, error = %reason, "userName held by someone else's user: not repaired");
                    out.conflicts += 1;
                }
                Err(_) if out_of_time(stop_at) && (!out.repaired.is_empty() || !changes.is_empty()) => {
                    Self::flush_repairs(session, &mut changes, &mut out).await?;
                    return Ok(out);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Self::flush_repairs(session, &mut changes, &mut out).await?;
        for (group_id, group, user) in plan.strangers {
            if Instant::now() >= stop_at {
                return Ok(out);
            }
            session.remove_from_group(&group_id, &group, &user).await?;
            tracing::info!(group, scim_user = %user, "removed from a managed group: no member holds that role");
            out.strangers_removed += 1;
        }
        out.complete = true;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::scim::{DesiredUser, Known, ScimGroup, ScimUser};
    use std::sync::Mutex;

    /// A SCIM session that refuses any group request naming `refused`
    /// (as a target refuses a batch with one member it will not take), and
    /// records each request's members.
    struct Refusing {
        refused: &'static str,
        requests: Mutex<Vec<Vec<String>>>,
    }

    impl crate::app::ports::DirectorySession for Refusing {
        async fn sync_member(&self, _: &DesiredUser, _: &BTreeSet<String>, _: Option<Known>) -> Result<SyncOutcome, TargetError> {
            unreachable!("not used by apply_batch")
        }
        async fn sync_user_deferred(&self, _: &DesiredUser, _: &BTreeSet<String>, _: Option<Known>) -> Result<(SyncOutcome, Vec<GroupChange>), TargetError> {
            unreachable!("not used by apply_batch")
        }
        async fn apply_group_changes(&self, changes: &[GroupChange]) -> Result<(), TargetError> {
            self.requests.lock().unwrap().push(changes.iter().map(|c| c.scim_user.clone()).collect());
            if changes.iter().any(|c| c.scim_user == self.refused) {
                return Err(TargetError::Refused { what: "changing members of group g".into(), status: 400, detail: "invalidValue".into() });
            }
            Ok(())
        }
        async fn users(&self) -> Result<Vec<ScimUser>, TargetError> {
            unreachable!()
        }
        async fn groups(&self) -> Result<Vec<ScimGroup>, TargetError> {
            unreachable!()
        }
        async fn remove_from_group(&self, _: &str, _: &str, _: &str) -> Result<(), TargetError> {
            unreachable!()
        }
        fn contradiction(&self) -> Option<String> {
            None
        }
        fn rosters_agreed(&self) -> bool {
            false
        }
    }

    fn join(user: &str) -> Vec<GroupChange> {
        vec![GroupChange { group: "g".into(), add: true, scim_user: user.into() }]
    }

    /// A batch the target refuses goes again member by member: the others
    /// are delivered, the one refused is named with the target's reason.
    #[tokio::test]
    async fn a_refused_batch_is_sent_member_by_member_and_only_the_refused_member_is_held() {
        let session = Refusing { refused: "u2", requests: Mutex::new(Vec::new()) };
        let (a, b, c) = (join("u1"), join("u2"), join("u3"));
        let refusals = apply_batch(&session, vec![&a, &b, &c]).await.ok().expect("refusals, not a stop");
        assert_eq!(refusals[0], None);
        assert!(refusals[1].as_deref().is_some_and(|r| r.contains("HTTP 400 invalidValue")), "{refusals:?}");
        assert_eq!(refusals[2], None);
        let requests = session.requests.lock().unwrap().clone();
        assert_eq!(requests, vec![vec!["u1", "u2", "u3"], vec!["u1"], vec!["u2"], vec!["u3"]], "one batch, then one request a member");

        // A batch the target takes is one request.
        let session = Refusing { refused: "nobody", requests: Mutex::new(Vec::new()) };
        assert_eq!(apply_batch(&session, vec![&a, &c]).await.ok(), Some(vec![None, None]));
        assert_eq!(session.requests.lock().unwrap().len(), 1);
    }
}
