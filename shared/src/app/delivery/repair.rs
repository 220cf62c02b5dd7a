//! Drift repair: everything the target holds compared with desired access
//! and brought in line (users changed, added to or removed from managed
//! groups, deleted or re-activated behind Entitle's back), the group
//! changes sent in batches as deliveries are.

use super::reports::RepairReport;
use super::run::{apply_batch, TargetRun};
use super::{out_of_time, port, Deliverer, Stop, MEMBERS_PER_BATCH};
use crate::app::ports::{Directory, DirectorySession, Models, Targets, Tenants, Tokens};
use crate::core::ids::UserId;
use crate::core::scim::{self, GroupChange, Known, SyncOutcome, TargetError};
use std::collections::BTreeSet;
use std::time::Instant;

impl<S: Tenants + Targets + Models, K: Tokens, D: Directory> Deliverer<'_, S, K, D> {
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
    pub(super) async fn repair(&self, on: &TargetRun<'_, D::Session>) -> Result<RepairReport, Stop> {
        let &TargetRun { tenant, target, session, managed, stop_at, .. } = on;
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
            if port(self.park(on, &m.member, &m.access, None, reason).await)? {
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
