//! The run on one target: each waiting member's user synced (created,
//! changed, deleted), the group changes of a batch of members sent
//! together, the members then marked delivered; a member the target
//! refuses is held with the reason, one whose userName is someone else's
//! is parked.

use super::reports::TargetReport;
use super::{cut_off_after_progress, out_of_time, port, Deliverer, Stop, FLUSH_RESERVE_DIVISOR, MEMBERS_PER_BATCH};
use crate::app::commit::{audited, Decision};
use crate::app::ports::{Change, Directory, DirectorySession, Models, Targets, Tenants, Tokens, Write};
use crate::app::Error;
use crate::core::access::{Member, MemberAccess};
use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::ids::TenantId;
use crate::core::scim::{self, GroupChange, Pending, SyncOutcome, Target, TargetError};
use chrono::Utc;
use std::collections::BTreeSet;
use std::time::Instant;

/// One delivery run on one target: the tenant and the target, the session
/// open to it, the groups Entitle manages there, the cause the run is
/// audited with, and when it stops (the run's time, or the target's budget).
pub(super) struct TargetRun<'r, Session> {
    pub tenant: &'r TenantId,
    pub target: &'r Target,
    pub session: &'r Session,
    pub managed: &'r BTreeSet<String>,
    pub cause: &'r Cause,
    pub stop_at: Instant,
}

/// Sends the group changes of a batch of members (one request per group);
/// a batch the target refuses (a 4xx about the data) is sent member by
/// member. Returns, per member, the reason the target refused its changes.
pub(super) async fn apply_batch<S: DirectorySession>(session: &S, members: Vec<&[GroupChange]>) -> Result<Vec<Option<String>>, Stop> {
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

impl<S: Tenants + Targets + Models, K: Tokens, D: Directory> Deliverer<'_, S, K, D> {
    /// Delivers what waits for the target (`pending`), each member's user
    /// synced and the group changes of a batch sent together, then repairs
    /// drift when `repair` says so.
    pub(super) async fn run(&self, on: &TargetRun<'_, D::Session>, pending: Vec<Pending>, repair: bool, report: &mut TargetReport) -> Result<(), Stop> {
        let &TargetRun { tenant, target, session, managed, stop_at, .. } = on;
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
                if !self.flush_within(on, &mut batch, report).await? {
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
                    if batch.len() >= MEMBERS_PER_BATCH && !self.flush_within(on, &mut batch, report).await? {
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
                    port(self.park(on, &p.member, &p.access, Some(p.seq), &reason).await)?;
                    report.conflicts += 1;
                }
                // Cut off at the budget in the middle of a member after
                // delivering others: progress, not a failure of the target
                // (the member stays due).
                Err(_) if out_of_time(stop_at) && (report.delivered > 0 || !batch.is_empty()) => {
                    report.more = true;
                    return self.flush_within(on, &mut batch, report).await.map(|_| ());
                }
                // The batch's users were changed, their groups not: they stay
                // due, and the next run finds where they stand.
                Err(e) => return Err(e.into()),
            }
        }
        if !self.flush_within(on, &mut batch, report).await? {
            return Ok(());
        }
        if repair {
            match self.repair(on).await {
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
    async fn flush_within(&self, on: &TargetRun<'_, D::Session>, batch: &mut Vec<(Pending, SyncOutcome, Vec<GroupChange>)>, report: &mut TargetReport) -> Result<bool, Stop> {
        match self.flush(on, batch, report).await {
            Ok(()) => Ok(true),
            Err(stop) if cut_off_after_progress(&stop, on.stop_at, report) => {
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
    async fn flush(&self, on: &TargetRun<'_, D::Session>, batch: &mut Vec<(Pending, SyncOutcome, Vec<GroupChange>)>, report: &mut TargetReport) -> Result<(), Stop> {
        let &TargetRun { tenant, target, session, .. } = on;
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

    /// Parks a member's delivery to a target at once, with the reason and an
    /// audit record (`delivery_parked`): the target holds the member's
    /// userName for someone else's user, which is never adopted. `if_seq`:
    /// the delivery record being parked (a newer change replaces it and is
    /// tried afresh); `None` (drift repair): only where no record waits.
    /// Returns whether it parked.
    pub(super) async fn park(&self, on: &TargetRun<'_, D::Session>, member: &Member, access: &MemberAccess, if_seq: Option<u64>, reason: &str) -> Result<bool, Error> {
        let (tenant, target, cause) = (on.tenant, &on.target.target_id, on.cause);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::scim::{DesiredUser, Known, ScimGroup, ScimUser};
    use std::collections::BTreeSet;
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
