//! Delivery to SCIM targets: after a tenant's changes are committed, make
//! each of its targets hold what the delivery records say; repair drift on
//! schedule or on demand; keep each target's health, quarantining one that
//! keeps failing and resuming it when it answers again.
//!
//! Runs in `provision`, inside the tenant's FIFO message group, so one
//! deliverer works on a tenant at a time.

use crate::audit::{AuditEvent, Cause};
use crate::egress::EgressPolicy;
use crate::ids::{TargetId, TenantId};
use crate::scim::{self, Health, Policy, Standing, Target};
use crate::scim_client::{Known, ScimClient, SyncOutcome, TargetError};
use crate::store::{Store, StoreError};
use crate::targets::TokenStore;
use chrono::Utc;
use serde::Serialize;
use std::collections::BTreeSet;
use std::time::Instant;
use tracing::Instrument;

/// How far past `stop_at` (no new member started) a started request may run.
pub const HARD_STOP_AFTER: std::time::Duration = std::time::Duration::from_secs(8);

pub struct Deliverer {
    pub store: Store,
    pub tokens: TokenStore,
    /// Built for `egress` ([`crate::scim_client::http_client`]).
    pub http: reqwest::Client,
    pub egress: EgressPolicy,
    pub policy: Policy,
    pub budget: TargetBudget,
}

/// What one target may take of a delivery run: wall time and bytes read.
/// A target that is slow, hangs or floods Entitle with data is cut off at
/// its budget (and the run counts as failed unless it delivered
/// something), so that it cannot hold up the other tenants of the batch
/// for longer than that, nor run the function out of memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetBudget {
    pub time: std::time::Duration,
    pub read_bytes: usize,
}

impl Default for TargetBudget {
    fn default() -> Self {
        TargetBudget { time: std::time::Duration::from_secs(15), read_bytes: crate::scim_client::DEFAULT_READ_BUDGET }
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
    pub standing: Option<String>,
}

impl TargetReport {
    /// True when the run wrote audit records (and events) for this target.
    pub fn audited(&self) -> bool {
        self.standing.is_some() || self.conflicts > 0 || self.repair.as_ref().is_some_and(|r| r.changed() || r.conflicts > 0)
    }
}

fn summary(o: &SyncOutcome) -> String {
    let mut parts = Vec::new();
    for (done, what) in [(o.created, "created"), (o.adopted, "adopted"), (o.patched, "updated"), (o.deleted, "deleted")] {
        if done {
            parts.push(what.to_string());
        }
    }
    if !o.joined.is_empty() {
        parts.push(format!("joined {}", o.joined.join(",")));
    }
    if !o.left.is_empty() {
        parts.push(format!("left {}", o.left.join(",")));
    }
    if parts.is_empty() {
        "unchanged".into()
    } else {
        parts.join("; ")
    }
}

impl Deliverer {
    /// Delivers the tenant's pending changes to each of its targets, and
    /// runs drift repair where it is due or asked for (`repair_now`).
    pub async fn deliver_tenant(&self, tenant: &TenantId, repair_now: &[TargetId], cause: &Cause, stop_at: Instant) -> Result<Vec<TargetReport>, StoreError> {
        let mut reports = Vec::new();
        for target in self.store.targets(tenant).await? {
            if Instant::now() >= stop_at {
                break;
            }
            let report = self.deliver_target(tenant, &target, repair_now.contains(&target.target_id), cause, stop_at).await?;
            reports.push(report);
        }
        Ok(reports)
    }

    async fn deliver_target(&self, tenant: &TenantId, target: &Target, forced: bool, cause: &Cause, stop_at: Instant) -> Result<TargetReport, StoreError> {
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
                report.standing = Some("quarantined".into());
                audit.push(self.standing_record("target_quarantined", target, &health, &next, cause, self.quarantine_rule(next.failures)));
            }
            health = next;
        }
        let pending: Vec<_> = self.store.pending(tenant, &target.target_id).await?.into_iter().filter(|p| p.parked.is_none()).collect();
        // A failing target is probed with a repair: it lists everything, so
        // it proves the target is back and catches up on whatever was missed.
        let repair_due = forced || target.repair_due_at() <= now || health.failures > 0;
        if (!forced && !health.may_attempt(now)) || (pending.is_empty() && !repair_due) {
            report.waiting = !forced && !health.may_attempt(now);
            if health != target.health {
                self.store.set_target_health(tenant, &Target { health, ..target.clone() }, audit, now).await?;
            }
            return Ok(report);
        }
        // Recorded before the target is reached, so that a run that dies on
        // the way is counted by the next one.
        let started = Health { attempt_started_at: Some(now), ..health.clone() };
        self.store.set_target_health(tenant, &Target { health: started, ..target.clone() }, std::mem::take(&mut audit), now).await?;
        let budget_until = stop_at.min(Instant::now() + self.budget.time);
        let result = async {
            // The secret's name follows from the tenant and the target; a
            // name stored in the table is never trusted to point elsewhere.
            match self.tokens.get(&self.tokens.secret_name(tenant, &target.target_id)).await {
                Ok(token) => {
                    // Requests may run into the stop margin, not past the target's budget.
                    let client = ScimClient::new(self.http.clone(), target.base(), token, self.egress)
                        .with_deadline(budget_until.min(stop_at + HARD_STOP_AFTER))
                        .with_read_budget(self.budget.read_bytes);
                    let managed = scim::managed_groups(&target.mapping, &self.store.model().roles);
                    self.run(tenant, target, &client, &managed, pending, repair_due, budget_until, cause, &mut report).await
                }
                Err(e) => Err(Stop::Target(TargetError::Unavailable { reason: format!("the target's token cannot be read: {e}"), retry_after: None })),
            }
        }
        .instrument(span.clone())
        .await;
        let _entered = span.enter();
        let outcome = match result {
            Ok(()) => Ok(()),
            Err(Stop::Target(e)) => Err(e),
            Err(Stop::Store(e)) => {
                // Not the target's fault: leave its health as it was (and the
                // run not counted); everything undelivered stays due.
                let _ = self.store.set_target_health(tenant, &Target { health, ..target.clone() }, vec![], now).await;
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
                    report.standing = Some("resumed".into());
                    audit.push(self.standing_record("target_resumed", target, &health, &next, cause, "the target answered again: quarantine lifted; changes held meanwhile delivered and drift repaired".into()));
                }
                if let Some(r) = report.repair.as_ref().filter(|r| r.changed()) {
                    audit.push(AuditEvent {
                        action: "target_repaired".into(),
                        subject: format!("target:{}", target.target_id),
                        cause: cause.clone(),
                        rule: "drift repair: the target differed from desired access (its first sync, or changes made behind Entitle's back) and was brought in line".into(),
                        before: None,
                        after: Some(serde_json::to_value(r).expect("serialises")),
                    });
                }
                health = next;
            }
            Err(e) => {
                let (reason, retry_after) = match &e {
                    TargetError::Unavailable { reason, retry_after } => (reason.clone(), *retry_after),
                    TargetError::Refused { .. } | TargetError::Conflict { .. } => (e.to_string(), None),
                };
                tracing::warn!(cause = %cause, error = %reason, failures = health.failures + 1, "target unavailable; its changes wait");
                let (mut next, standing) = health.on_failure(&self.policy, finished, &reason);
                if let (Some(r), Some(at)) = (retry_after, next.retry_at) {
                    // The target said when to come back: not before that.
                    next.retry_at = Some(at.max(finished + chrono::Duration::from_std(r).unwrap_or_default()));
                }
                if let Some(Standing::Quarantined) = standing {
                    tracing::warn!(cause = %cause, failures = next.failures, "target quarantined");
                    report.standing = Some("quarantined".into());
                    audit.push(self.standing_record("target_quarantined", target, &health, &next, cause, self.quarantine_rule(next.failures)));
                }
                report.error = Some(reason);
                health = next;
            }
        }
        let updated = Target { health, ..target.clone() };
        self.store.set_target_health(tenant, &updated, audit, finished).await?;
        Ok(report)
    }

    fn quarantine_rule(&self, failures: u32) -> String {
        format!("{failures} consecutive failed deliveries: quarantined; retried every {} s until it answers (other targets are not affected)", self.policy.quarantine_retry_secs)
    }

    fn standing_record(&self, action: &str, target: &Target, before: &Health, after: &Health, cause: &Cause, rule: String) -> AuditEvent {
        AuditEvent {
            action: action.into(),
            subject: format!("target:{}", target.target_id),
            cause: cause.clone(),
            rule,
            before: Some(serde_json::to_value(before).expect("serialises")),
            after: Some(serde_json::to_value(after).expect("serialises")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        tenant: &TenantId,
        target: &Target,
        client: &ScimClient,
        managed: &BTreeSet<String>,
        pending: Vec<crate::targets::Pending>,
        repair: bool,
        stop_at: Instant,
        cause: &Cause,
        report: &mut TargetReport,
    ) -> Result<(), Stop> {
        for p in pending {
            if Instant::now() >= stop_at {
                // Out of time (the run's, or this target's budget): the rest
                // stays due. A target that took its whole budget without
                // delivering anything has failed this run.
                if report.delivered == 0 {
                    return Err(Stop::Target(TargetError::Unavailable { reason: format!("used its {} s budget without delivering a change", self.budget.time.as_secs()), retry_after: None }));
                }
                return Ok(());
            }
            let desired = scim::desired_user(&target.mapping, &p.member, &p.access);
            match client.sync_member(&desired, managed, None).await {
                Ok(outcome) => {
                    tracing::info!(user = %p.member.user_id, seq = p.seq, done = %summary(&outcome), conflicts = outcome.conflicts, "member delivered");
                    self.store.sync_done(tenant, &target.target_id, &p.member.user_id, p.seq).await?;
                    report.delivered += 1;
                }
                Err(TargetError::Refused { what, status, detail }) => {
                    let reason = format!("{what}: HTTP {status} {detail}");
                    tracing::warn!(user = %p.member.user_id, seq = p.seq, error = %reason, "target refused the member's state");
                    self.store.sync_refused(tenant, &target.target_id, &p, &reason).await?;
                    report.refused += 1;
                }
                Err(TargetError::Conflict { reason }) => {
                    tracing::warn!(user = %p.member.user_id, seq = p.seq, error = %reason, "userName held by someone else's user: delivery parked");
                    self.store.park_delivery(tenant, &target.target_id, &p.member, &p.access, Some(p.seq), &reason, cause, Utc::now()).await?;
                    report.conflicts += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if repair {
            report.repair = Some(self.repair(tenant, target, client, managed, stop_at, cause).await?);
        }
        Ok(())
    }

    /// Compares everything the target holds with desired access and repairs
    /// the differences: users changed, added to or removed from managed
    /// groups, deleted or re-activated behind Entitle's back.
    async fn repair(&self, tenant: &TenantId, target: &Target, client: &ScimClient, managed: &BTreeSet<String>, stop_at: Instant, cause: &Cause) -> Result<RepairReport, Stop> {
        let state = self.store.load_tenant(tenant).await?;
        let members = state.map(|s| s.members).unwrap_or_default();
        let users = client.users().await?;
        let groups = client.groups().await?;
        let desired = members.iter().map(|m| scim::desired_user(&target.mapping, &m.member, &m.access)).collect();
        let plan = scim::repair_plan(desired, &users, &groups, managed);
        drop((users, groups));
        let mut out = RepairReport { members_checked: plan.members.len() + plan.conflicts.len(), ..Default::default() };
        for (desired, reason) in &plan.conflicts {
            let Some(m) = members.iter().find(|m| m.member.user_id == desired.user_id) else { continue };
            if self.store.park_delivery(tenant, &target.target_id, &m.member, &m.access, None, reason, cause, Utc::now()).await? {
                tracing::warn!(user = %desired.user_id, error = %reason, "userName held by someone else's user: delivery parked");
            }
            out.conflicts += 1;
        }
        for (desired, user, member_of) in plan.members {
            if Instant::now() >= stop_at {
                return Ok(out);
            }
            match client.sync_member(&desired, managed, Some(Known { user, member_of })).await {
                Ok(o) if o.changed() => {
                    tracing::info!(user = %desired.user_id, done = %summary(&o), "drift repaired");
                    out.repaired.push(desired.user_id.to_string());
                }
                Ok(_) => {}
                Err(TargetError::Refused { what, status, detail }) => {
                    tracing::warn!(user = %desired.user_id, error = %format!("{what}: HTTP {status} {detail}"), "target refused a repair");
                    out.refused += 1;
                }
                Err(TargetError::Conflict { reason }) => {
                    tracing::warn!(user = %desired.user_id, error = %reason, "userName held by someone else's user: not repaired");
                    out.conflicts += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
        for (group_id, group, user) in plan.strangers {
            if Instant::now() >= stop_at {
                return Ok(out);
            }
            client.remove_from_group(&group_id, &group, &user).await?;
            tracing::info!(group, scim_user = %user, "removed from a managed group: no member holds that role");
            out.strangers_removed += 1;
        }
        out.complete = true;
        Ok(out)
    }
}

/// Why a run stopped early: the target (counts towards its quarantine) or
/// the store (does not; everything not marked done stays due).
enum Stop {
    Target(TargetError),
    Store(StoreError),
}

impl From<TargetError> for Stop {
    fn from(e: TargetError) -> Self {
        Stop::Target(e)
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        Stop::Store(e)
    }
}
