//! A delivery run on one target under the target's health: whether it
//! goes at all, its start recorded before the target is reached (so that a
//! run that dies on the way is counted), its end counted, and a change of
//! standing (quarantined, resumed) or a repair that changed something
//! audited with the health. The decisions are the core's
//! ([`Health::plan`], [`Health::after_run`], [`Health::note_contradiction`]);
//! this applies them.

use super::reports::TargetReport;
use super::run::TargetRun;
use super::{Deliverer, Stop, FLUSH_GRACE, HARD_STOP_AFTER};
use crate::app::commit::{audited, Decision};
use crate::app::ports::{Change, Directory, DirectorySession, Models, Targets, Tenants, Tokens, Write};
use crate::app::Error;
use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::events::Announcement;
use crate::core::ids::TenantId;
use crate::core::model::LicensingModel;
use crate::core::scim::{self, Health, Pending, RunEnd, RunPlan, Standing, Target, TargetError};
use chrono::{DateTime, Utc};
use std::time::Instant;
use tracing::Instrument;

impl<S: Tenants + Targets + Models, K: Tokens, D: Directory> Deliverer<'_, S, K, D> {
    pub(super) async fn deliver_target(&self, model: &LicensingModel, tenant: &TenantId, target: &Target, forced: bool, cause: &Cause, stop_at: Instant) -> Result<TargetReport, Error> {
        let now = Utc::now();
        let mut report = TargetReport { target_id: target.target_id.to_string(), ..Default::default() };
        let span = tracing::info_span!("target", tenant = %tenant, target = %target.target_id);
        // A run that started and never finished (a crash, out of memory or
        // time) counts as a failure before anything else is decided.
        let mut health = target.health.clone();
        let mut audit = Vec::new();
        if let Some((next, standing)) = health.unfinished_attempt(&self.policy, now) {
            span.in_scope(|| tracing::warn!(cause = %cause, failures = next.failures, "the last delivery run did not finish: counted as a failure"));
            if let Some(standing) = standing {
                report.standing = Some(standing);
                audit.push(self.standing_record(standing, target, &health, &next, cause));
            }
            health = next;
        }
        let pending: Vec<Pending> = self.store.pending(tenant, &target.target_id).await?.into_iter().filter(|p| p.parked.is_none()).collect();
        let repair = match health.plan(forced, !pending.is_empty(), target.repair_due_at(), now) {
            RunPlan::Go { repair } => repair,
            plan => {
                report.waiting = plan == RunPlan::Wait;
                if health != target.health {
                    self.save_health(tenant, &Target { health, ..target.clone() }, audit, now).await?;
                }
                return Ok(report);
            }
        };
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
                    let on = TargetRun { tenant, target, session: &session, managed: &managed, cause, stop_at: budget_until };
                    let ran = self.run(&on, pending, repair, &mut report).await;
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
        let newly_seen = health.note_contradiction(contradiction.as_deref(), agreed);
        if let Some(now_seen) = contradiction.as_deref().filter(|_| newly_seen) {
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
        }
        report.contradiction = contradiction;
        let failure = match result {
            Ok(()) => None,
            // At the target's rate limit: not a failure; later runs go on.
            Err(Stop::Target(TargetError::Paced { reason })) => {
                tracing::info!(cause = %cause, reason = %reason, "delivery paced by the target's rate limit");
                report.paced = Some(reason);
                None
            }
            Err(Stop::Target(e)) => Some(match e {
                TargetError::Unavailable { reason, retry_after } => (reason, retry_after),
                e @ (TargetError::Refused { .. } | TargetError::Conflict { .. } | TargetError::Paced { .. }) => (e.to_string(), None),
            }),
            Err(Stop::Port(e)) => {
                // Not the target's fault: leave its health as it was (the
                // run not counted); everything undelivered stays due.
                let _ = self.store.save_health(tenant, &Target { health, ..target.clone() }).await;
                return Err(e);
            }
        };
        let finished = Utc::now();
        let end = match &failure {
            None => RunEnd::Answered { repaired_by: report.repair.as_ref().is_some_and(|r| r.complete).then(|| cause.to_string()) },
            Some((reason, retry_after)) => {
                tracing::warn!(cause = %cause, error = %reason, failures = health.failures + 1, "target unavailable; its changes wait");
                RunEnd::Failed { reason, retry_after: *retry_after }
            }
        };
        let (next, standing) = health.after_run(&self.policy, end, finished);
        match standing {
            Some(Standing::Resumed) => tracing::info!(cause = %cause, "target answers again: quarantine lifted"),
            Some(Standing::Quarantined) => tracing::warn!(cause = %cause, failures = next.failures, "target quarantined"),
            None => {}
        }
        if let Some(standing) = standing {
            report.standing = Some(standing);
            audit.push(self.standing_record(standing, target, &health, &next, cause));
        }
        if let Some(r) = report.repair.as_ref().filter(|r| failure.is_none() && r.changed()) {
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
        report.error = failure.map(|(reason, _)| reason);
        self.save_health(tenant, &Target { health: next, ..target.clone() }, audit, finished).await?;
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
}
