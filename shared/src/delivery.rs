//! Delivery to SCIM targets: after a tenant's changes are committed, make
//! each of its targets hold what the delivery records say; repair drift on
//! schedule or on demand; keep each target's health, quarantining one that
//! keeps failing and resuming it when it answers again.
//!
//! Runs in `provision`, inside the tenant's FIFO message group, so one
//! deliverer works on a tenant at a time.

use crate::audit::{AuditEvent, Cause};
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
    pub http: reqwest::Client,
    pub policy: Policy,
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
    pub repair: Option<RepairReport>,
    pub error: Option<String>,
    /// Quarantined or resumed by this run.
    pub standing: Option<String>,
}

impl TargetReport {
    /// True when the run wrote audit records (and events) for this target.
    pub fn audited(&self) -> bool {
        self.standing.is_some() || self.repair.as_ref().is_some_and(RepairReport::changed)
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
        if !forced && !target.health.may_attempt(now) {
            report.waiting = true;
            return Ok(report);
        }
        let pending: Vec<_> = self.store.pending(tenant, &target.target_id).await?.into_iter().filter(|p| p.parked.is_none()).collect();
        // A failing target is probed with a repair: it lists everything, so
        // it proves the target is back and catches up on whatever was missed.
        let repair_due = forced || target.repair_due_at() <= now || target.health.failures > 0;
        if pending.is_empty() && !repair_due {
            return Ok(report);
        }
        let span = tracing::info_span!("target", tenant = %tenant, target = %target.target_id);
        let result = async {
            match self.tokens.get(&target.secret_id).await {
                Ok(token) => {
                    // Requests may run into the stop margin, not past the function's deadline.
                    let client = ScimClient::new(self.http.clone(), target.base(), token).with_deadline(stop_at + HARD_STOP_AFTER);
                    let managed = scim::managed_groups(&target.mapping, &self.store.model().roles);
                    self.run(tenant, target, &client, &managed, pending, repair_due, stop_at, &mut report).await
                }
                Err(e) => Err(Stop::Target(TargetError::Unavailable { reason: format!("the target's token cannot be read: {e}"), retry_after: None })),
            }
        }
        .instrument(span.clone())
        .await;
        // (Entered only for this synchronous part: a guard held across an
        // await would tag other tasks' lines.)
        let entered = span.enter();
        let mut health = target.health.clone();
        let mut audit = Vec::new();
        match result {
            Ok(()) => {
                let (mut next, standing) = health.on_success(now);
                if report.repair.as_ref().is_some_and(|r| r.complete) {
                    next.last_repair_at = Some(now);
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
            Err(Stop::Store(e)) => return Err(e),
            Err(Stop::Target(e)) => {
                let (reason, retry_after) = match &e {
                    TargetError::Unavailable { reason, retry_after } => (reason.clone(), *retry_after),
                    TargetError::Refused { .. } => (e.to_string(), None),
                };
                tracing::warn!(cause = %cause, error = %reason, failures = health.failures + 1, "target unavailable; its changes wait");
                let (mut next, standing) = health.on_failure(&self.policy, now, &reason);
                if let (Some(r), Some(at)) = (retry_after, next.retry_at) {
                    // The target said when to come back: not before that.
                    next.retry_at = Some(at.max(now + chrono::Duration::from_std(r).unwrap_or_default()));
                }
                if let Some(Standing::Quarantined) = standing {
                    tracing::warn!(cause = %cause, failures = next.failures, "target quarantined");
                    report.standing = Some("quarantined".into());
                    let rule = format!(
                        "{} consecutive failed deliveries: quarantined; retried every {} s until it answers (other targets are not affected)",
                        next.failures, self.policy.quarantine_retry_secs
                    );
                    audit.push(self.standing_record("target_quarantined", target, &health, &next, cause, rule));
                }
                report.error = Some(reason);
                health = next;
            }
        }
        drop(entered);
        let updated = Target { health, ..target.clone() };
        self.store.set_target_health(tenant, &updated, audit, now).await?;
        Ok(report)
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
        report: &mut TargetReport,
    ) -> Result<(), Stop> {
        for p in pending {
            if Instant::now() >= stop_at {
                return Ok(()); // the rest stays due
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
                Err(e) => return Err(e.into()),
            }
        }
        if repair {
            report.repair = Some(self.repair(tenant, target, client, managed, stop_at).await?);
        }
        Ok(())
    }

    /// Compares everything the target holds with desired access and repairs
    /// the differences: users changed, added to or removed from managed
    /// groups, deleted or re-activated behind Entitle's back.
    async fn repair(&self, tenant: &TenantId, target: &Target, client: &ScimClient, managed: &BTreeSet<String>, stop_at: Instant) -> Result<RepairReport, Stop> {
        let state = self.store.load_tenant(tenant).await?;
        let members = state.map(|s| s.members).unwrap_or_default();
        let users = client.users().await?;
        let groups = client.groups().await?;
        let desired = members.iter().map(|m| scim::desired_user(&target.mapping, &m.member, &m.access)).collect();
        let plan = scim::repair_plan(desired, &users, &groups, managed);
        let mut out = RepairReport { members_checked: plan.members.len(), ..Default::default() };
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
                Err(e) => return Err(e.into()),
            }
        }
        for (group_id, group, user) in plan.strangers {
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
