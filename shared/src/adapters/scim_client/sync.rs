//! The user sync: one member made to stand on the target as desired, its
//! user found, created (or adopted on a 409), patched or deleted, then its
//! managed groups joined and left. Safe to repeat: every step reads first,
//! and a user that changed under a step is read again and decided again.

use super::pacing::RequestKind;
use super::transport::Call;
use super::{ScimClient, CONFLICT_TRIES, TRIES};
use crate::core::scim::{self, DesiredUser, GroupChange, Known, MemberOf, PatchOp, ScimUser, SyncOutcome, TargetError, UserStep};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;

/// Where one pass at a member's user left it.
enum Pass {
    /// The user as it stands now (`None`: the member has none and needs
    /// none), with its managed groups when they are known.
    Holds(Option<ScimUser>, Option<MemberOf>),
    /// Read again and decide again: the user changed or vanished under the
    /// step (or was just adopted, and is known as it was found).
    Again(Option<Known>),
    /// The user was deleted: nothing more to do.
    Deleted,
}

/// What a step does to the member's user, for the errors it reports.
fn what(step: &str, desired: &DesiredUser) -> String {
    format!("{step} user {}", desired.user_id)
}

impl ScimClient {
    /// Makes the target hold what `desired` says for one member: its user
    /// (found, created or adopted, patched, or deleted) and its membership
    /// of the managed groups. Safe to repeat: every step reads first.
    pub async fn sync_member(&self, desired: &DesiredUser, managed: &BTreeSet<String>, known: Option<Known>) -> Result<SyncOutcome, TargetError> {
        self.sync_user(desired, managed, known, None).await
    }

    /// [`ScimClient::sync_member`]; with `deferred`, the user's membership
    /// changes of managed groups are not made but added to it, for
    /// [`ScimClient::apply_group_changes`] (a removed member still leaves
    /// its groups before its user is deleted).
    pub async fn sync_user(&self, desired: &DesiredUser, managed: &BTreeSet<String>, known: Option<Known>, mut deferred: Option<&mut Vec<GroupChange>>) -> Result<SyncOutcome, TargetError> {
        let mut out = SyncOutcome::default();
        let mut known = known;
        for _ in 0..CONFLICT_TRIES {
            let (user, member_of) = match known.take() {
                // Groups not read: asked for below, as the target allows.
                Some(k) => (k.user, k.member_of),
                None => (self.find_user(desired).await?, None),
            };
            match self.user_pass(desired, managed, user, member_of, &mut out).await? {
                Pass::Again(next) => known = next,
                Pass::Deleted | Pass::Holds(None, _) => return Ok(out),
                Pass::Holds(Some(user), member_of) => {
                    self.sync_groups(desired, managed, &user, member_of, deferred.as_deref_mut(), &mut out).await?;
                    return Ok(out);
                }
            }
        }
        Err(TargetError::Refused { what: what("updating", desired), status: 412, detail: format!("still changing after {CONFLICT_TRIES} re-reads") })
    }

    /// One pass at the member's user, as read: what [`scim::user_step`]
    /// decides for it, done.
    async fn user_pass(&self, desired: &DesiredUser, managed: &BTreeSet<String>, user: Option<ScimUser>, member_of: Option<MemberOf>, out: &mut SyncOutcome) -> Result<Pass, TargetError> {
        match scim::user_step(desired, user.as_ref()) {
            UserStep::Nothing => Ok(Pass::Holds(user, member_of)),
            UserStep::Create(body) => self.create_user(desired, managed, &body, out).await,
            UserStep::Patch(ops) => self.patch_user(desired, user.expect("a patch has a user"), member_of, &ops, out).await,
            UserStep::Delete => self.delete_user(desired, managed, user.expect("a delete has a user"), member_of, out).await,
        }
    }

    /// Creates the member's user (a user creation, as the target's rate
    /// limits count it). A taken userName (409) is a user made before
    /// Entitle managed this target: adopted (the next pass patches it),
    /// unless it is someone else's.
    async fn create_user(&self, desired: &DesiredUser, managed: &BTreeSet<String>, body: &Value, out: &mut SyncOutcome) -> Result<Pass, TargetError> {
        let a = self.exchange(Call { kind: RequestKind::UserCreation, method: Method::POST, path: "/Users", query: &[], body: Some(body), if_match: None, tries: TRIES }).await?;
        if a.status == StatusCode::CONFLICT {
            let Some(existing) = self.find_by("userName", &desired.user_name).await? else { return Err(Self::refused(what("creating", desired), &a)) };
            if let Some(reason) = scim::owned_by_another(desired, &existing) {
                return Err(TargetError::Conflict { reason });
            }
            out.adopted = true;
            let member_of = self.managed_member_of(&existing.id, managed).await?;
            return Ok(Pass::Again(Some(Known { user: Some(existing), member_of: Some(member_of) })));
        }
        let a = Self::expect_ok(&what("creating", desired), a)?;
        out.created = true;
        let mut created = ScimUser::from_json(&a.body).ok_or_else(|| TargetError::Refused { what: what("creating", desired), status: a.status.as_u16(), detail: "no user in the answer".into() })?;
        created.version = created.version.or(a.etag);
        // A user just created is in no group.
        Ok(Pass::Holds(Some(created), Some(MemberOf::default())))
    }

    /// Patches the member's user (under its version, when the target
    /// offers ETags). Changed or deleted since it was read: read again.
    async fn patch_user(&self, desired: &DesiredUser, user: ScimUser, member_of: Option<MemberOf>, ops: &[PatchOp], out: &mut SyncOutcome) -> Result<Pass, TargetError> {
        let a = self.send(Method::PATCH, &format!("/Users/{}", user.id), &[], Some(&scim::patch_body(ops)), user.version.as_deref()).await?;
        if a.status == StatusCode::PRECONDITION_FAILED || a.status == StatusCode::NOT_FOUND {
            out.conflicts += u32::from(a.status == StatusCode::PRECONDITION_FAILED);
            return Ok(Pass::Again(None));
        }
        Self::expect_ok(&what("updating", desired), a)?;
        out.patched = true;
        Ok(Pass::Holds(Some(user), member_of))
    }

    /// Deletes the member's user, after it left its managed groups: not
    /// every target cleans up the memberships of a deleted user (where the
    /// target cannot say, it leaves each group it may be in).
    async fn delete_user(&self, desired: &DesiredUser, managed: &BTreeSet<String>, user: ScimUser, member_of: Option<MemberOf>, out: &mut SyncOutcome) -> Result<Pass, TargetError> {
        let member_of = match member_of {
            Some(m) => m,
            None => self.managed_member_of(&user.id, managed).await?,
        };
        for g in member_of.maybe().iter().filter(|g| managed.contains(*g)) {
            self.patch_group(g, &GroupChange { group: g.clone(), add: false, scim_user: user.id.clone() }).await?;
        }
        let a = self.send(Method::DELETE, &format!("/Users/{}", user.id), &[], None, user.version.as_deref()).await?;
        if a.status == StatusCode::PRECONDITION_FAILED {
            out.conflicts += 1;
            return Ok(Pass::Again(None));
        }
        if a.status != StatusCode::NOT_FOUND {
            Self::expect_ok(&what("deleting", desired), a)?;
        }
        out.deleted = true;
        Ok(Pass::Deleted)
    }

    /// The managed groups the member's user joins and leaves, as desired;
    /// with `deferred`, added to it instead of made.
    async fn sync_groups(
        &self,
        desired: &DesiredUser,
        managed: &BTreeSet<String>,
        user: &ScimUser,
        member_of: Option<MemberOf>,
        deferred: Option<&mut Vec<GroupChange>>,
        out: &mut SyncOutcome,
    ) -> Result<(), TargetError> {
        let member_of = match member_of {
            Some(m) => m,
            None => self.managed_member_of(&user.id, managed).await?,
        };
        let (join, leave) = scim::group_changes(desired, &member_of, managed);
        let change = |group: &String, add: bool| GroupChange { group: group.clone(), add, scim_user: user.id.clone() };
        if let Some(deferred) = deferred {
            deferred.extend(join.iter().map(|g| change(g, true)));
            deferred.extend(leave.iter().map(|g| change(g, false)));
            (out.joined, out.left) = (join, leave);
            return Ok(());
        }
        for g in join {
            self.patch_group(&g, &change(&g, true)).await?;
            out.joined.push(g);
        }
        for g in leave {
            if self.patch_group(&g, &change(&g, false)).await? {
                out.left.push(g);
            }
        }
        Ok(())
    }
}
