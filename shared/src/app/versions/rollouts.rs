//! One tenant of a rollout: skipped, its move scheduled for its billing
//! period's end, or moved under its chain's lock and its members walked.

use super::{outcome, rollout_cause, Step};
use crate::app::commit::{audited_on, Decision};
use crate::app::ports::{Change, ModelRegistry, Models, Tenants};
use crate::app::rules::{move_change, rules};
use crate::app::Error;
use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::ids::{ModelVersion, RunId, TenantId};
use crate::core::tenant::{TenantHead, WaitingMove};
use crate::core::versions::{rollout_step, Outcome, OutcomeState, RunKind, RunState, RunStatus, TenantStep};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::time::Instant;

/// One tenant of a rollout: skipped (excluded, pinned, gone, the rollout
/// canceled), its move scheduled for its period's end, or moved under its
/// chain's lock and its members walked (each change audited with the
/// rollout as its cause and a rule naming both versions).
pub(super) async fn rollout_tenant<S: Tenants + Models + ModelRegistry>(store: &S, run: &RunState, tenant: &TenantId, due: bool, now: DateTime<Utc>, stop_at: Instant) -> Result<Step, Error> {
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
            let done = crate::app::reconcile::reconcile_until(store, tenant, &cause, now, Some(stop_at)).await?;
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
