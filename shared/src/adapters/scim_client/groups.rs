//! Membership changes: `PatchOp`s naming the members (which commute with
//! anyone else's, so no `If-Match`), a group created to add to it, a
//! deferred batch applied per group with removal requests sized by what
//! the target answers in time, and the rosters kept in step.

use super::{ScimClient, GROUP_BATCH, TRIES};
use crate::core::scim::{self, GroupChange, PatchKind, PatchOp, TargetError};
use reqwest::{Method, StatusCode};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

impl ScimClient {
    /// Group membership changes are `PatchOp`s naming the one member, which
    /// commute with anyone else's; no `If-Match`, so that a busy group does
    /// not turn every change into a 412.
    pub(super) async fn patch_group(&self, name: &str, change: &GroupChange) -> Result<bool, TargetError> {
        let changed = self.patch_group_ops(name, scim::membership_ops_for(&[change], self.profile.remove), TRIES).await?;
        self.noted(name, &change.scim_user, change.add);
        Ok(changed)
    }

    /// Membership operations on one group by name (created to add to it),
    /// each request tried up to `tries` times; false when there was
    /// nothing to remove from.
    async fn patch_group_ops(&self, name: &str, ops: Vec<PatchOp>, tries: u32) -> Result<bool, TargetError> {
        let add = ops.iter().any(|op| op.op == PatchKind::Add);
        let Some(id) = self.group_id(name, add).await? else { return Ok(false) };
        if self.patch_group_id(&id, &ops, name, tries).await? {
            return Ok(true);
        }
        // Deleted behind our back: forget it (and what it held), and recreate it to add.
        self.groups.lock().expect("not poisoned").remove(name);
        self.rosters.lock().expect("not poisoned").remove(name);
        if !add {
            return Ok(false);
        }
        let Some(id) = self.group_id(name, true).await? else { return Ok(false) };
        // A recreated group has no members to remove.
        let adds: Vec<PatchOp> = ops.into_iter().filter(|op| op.op == PatchKind::Add).collect();
        if !self.patch_group_id(&id, &adds, name, tries).await? {
            return Err(TargetError::Refused { what: format!("changing members of group {name}"), status: 404, detail: "the group vanished again".into() });
        }
        Ok(true)
    }

    /// Membership changes deferred by [`ScimClient::sync_user`], applied
    /// per group: additions [`GROUP_BATCH`] a request; removals as many a
    /// request as the target removes within [`scim::REMOVALS_AIM`]. A
    /// request removing several members is tried once: when it fails (a
    /// timeout, say), the same members go again in requests half the size,
    /// and this client's requests stay at most that size.
    pub async fn apply_group_changes(&self, changes: &[GroupChange]) -> Result<(), TargetError> {
        let mut by_group: BTreeMap<&str, Vec<&GroupChange>> = BTreeMap::new();
        for c in changes {
            by_group.entry(c.group.as_str()).or_default().push(c);
        }
        for (group, changes) in by_group {
            let (adds, removes): (Vec<&GroupChange>, Vec<&GroupChange>) = changes.into_iter().partition(|c| c.add);
            for chunk in adds.chunks(GROUP_BATCH.min(self.profile.changes_per_request).max(1)) {
                self.patch_group_ops(group, scim::membership_ops_for(chunk, self.profile.remove), TRIES).await?;
                chunk.iter().for_each(|c| self.noted(group, &c.scim_user, true));
            }
            let mut rest = removes.as_slice();
            while !rest.is_empty() {
                let requested = self.removals_per_request.load(Ordering::SeqCst).clamp(1, self.profile.changes_per_request.max(1));
                let n = requested.min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                let started = Instant::now();
                match self.patch_group_ops(group, scim::membership_ops_for(chunk, self.profile.remove), if n > 1 { 1 } else { TRIES }).await {
                    Ok(_) => {
                        chunk.iter().for_each(|c| self.noted(group, &c.scim_user, false));
                        let (ceiling, took) = (self.removals_ceiling.load(Ordering::SeqCst), started.elapsed());
                        let mut next = scim::next_removal_batch(n, took, ceiling);
                        if n < requested && took <= scim::REMOVALS_AIM {
                            // The last few of a group, answered in time: they say
                            // nothing against the size asked for.
                            next = next.max(requested.min(ceiling));
                        }
                        self.removals_per_request.store(next, Ordering::SeqCst);
                        rest = tail;
                    }
                    Err(TargetError::Unavailable { reason, .. }) if n > 1 && self.time_left().is_some() => {
                        tracing::info!(group, members = n, reason = %reason, "removing members from a group failed: trying fewer a request");
                        self.removals_per_request.store(n / 2, Ordering::SeqCst);
                        self.removals_ceiling.fetch_min(n / 2, Ordering::SeqCst);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Membership `PatchOp`s on a group by id; false when the group is gone.
    async fn patch_group_id(&self, id: &str, ops: &[PatchOp], name: &str, tries: u32) -> Result<bool, TargetError> {
        let a = self.send_tries(Method::PATCH, &format!("/Groups/{id}"), &[], Some(&scim::patch_body(ops)), None, tries).await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        // Removals only, of users the target says are not members (RFC 7644
        // §3.12 `noTarget`): where members cannot be read, Entitle removes a
        // member from every group it should not be in, so this is expected.
        let removals_only = ops.iter().all(|op| op.op == PatchKind::Remove);
        if removals_only && a.status == StatusCode::BAD_REQUEST && a.body["scimType"] == "noTarget" {
            return Ok(true);
        }
        Self::expect_ok(&format!("changing members of group {name}"), a)?;
        Ok(true)
    }

    pub async fn remove_from_group(&self, group_id: &str, group: &str, scim_id: &str) -> Result<(), TargetError> {
        let change = GroupChange { group: group.to_string(), add: false, scim_user: scim_id.to_string() };
        self.patch_group_id(group_id, &scim::membership_ops_for(&[&change], self.profile.remove), group, TRIES).await?;
        self.noted(group, scim_id, false);
        Ok(())
    }
}
