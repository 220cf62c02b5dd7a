//! The app's account events, without the tenant's chain lock, so that
//! creations and removals in one tenant do not queue behind each other:
//! creating an account claims a seat with one conditional addition to the
//! tenant's counters (a seat is free and nobody waits; otherwise it waits),
//! so under any concurrency a tenant never gets more active members than
//! seats; removing one deprovisions it and gives back its seat and email.
//! Each is one transaction with a delivery record per SCIM target and its
//! audit record, which waits, pending, to be chained (see
//! [`crate::core::audit::PendingRecord`]).

use super::commit::{audited_on, Decision, Retry};
use super::ports::{Change, CommitError, MemberGuard, Models, Targets, Tenants, Write};
use super::rules::rules_of;
use super::Error;
use crate::core::access::{access_on_create, privileged};
use crate::core::access::{Member, MemberAccess, MemberStatus};
use crate::core::audit::Announcement;
use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::ids::{TenantId, UserId};
use crate::core::rejection::Rejection;
use crate::core::seats::micros;
use crate::core::seats::Seat;
use crate::core::tenant::{on_create, MemberItem, TenantMeta};
use crate::core::views::{MemberUpdate, MemberView, NewMember};
use chrono::{DateTime, Utc};
use serde_json::json;

/// How many times a creation or removal reads again after another request
/// changed the same member at the same moment.
const ATTEMPTS: u32 = 8;

/// The `META` of a tenant known to accounts and targets (one with a
/// license or contract), or 404.
pub fn known(tenant: &TenantId, meta: Option<TenantMeta>) -> Result<TenantMeta, Error> {
    match meta {
        Some(m) if m.licensed => Ok(m),
        _ => Err(Rejection::not_found(&format!("tenant {tenant}")).into()),
    }
}

/// The delivery records of a member change, one per target.
pub fn deliveries(targets: &[crate::core::scim::Target], item: &MemberItem) -> Vec<Write> {
    targets.iter().map(|t| Write::Delivery { target: t.target_id.clone(), item: item.clone() }).collect()
}

/// Creates an account and decides its seat now. Returns the member and
/// whether it was created now (false: an identical earlier request already
/// created it).
pub async fn create<S: Tenants + Targets + Models>(store: &S, tenant: &TenantId, new: &NewMember, request_id: &str, now: DateTime<Utc>) -> Result<(MemberView, bool), Error> {
    let cause = Cause::api_call(request_id);
    let mut retry = Retry::new(tenant, ATTEMPTS);
    while retry.again().await {
        // The counters, the access and the member (if any) in one read.
        let (meta, existing) = store.meta_and_member(tenant, &new.user_id).await?;
        let meta = known(tenant, meta)?;
        let model = &*rules_of(store, Some(&meta)).await?;
        // A removed member created again: its item moves on from the removal's revision.
        let rev = existing.as_ref().map_or(0, |e| e.rev) + 1;
        if let Some(existing) = existing.filter(|e| !e.member.removed) {
            let same = existing.member.email == new.email && existing.member.groups == new.groups && existing.member.attributes == new.attributes;
            if same {
                return Ok((MemberView::of(tenant.clone(), &existing), false));
            }
            return Err(Rejection::conflict("member_exists", format!("member {} already exists with different details", new.user_id)).into());
        }
        let member = Member {
            user_id: new.user_id.clone(),
            email: new.email.clone(),
            groups: new.groups.clone(),
            attributes: new.attributes.clone(),
            // The creation order: time-based, so that no counter serialises
            // creations; ties are broken by user id.
            seq: micros(now),
            removed: false,
            suspended: false,
        };
        let targets = store.targets(tenant).await?;
        // The seat the counters as read give; the commit checks them again.
        let (access, rule) = on_create(model, &meta, &member);
        // Its place in the stored seat order: an owner or admin at the tenant's tier goes first.
        let privileged = meta.access.as_ref().is_some_and(|a| crate::core::access::privileged(model, a, &meta.rules, &member));
        let seat = crate::core::seats::Seat { privileged, ..crate::core::seats::Seat::new(member.seq) };
        let claim = access.status == MemberStatus::Active;
        let mut change = creation(&targets, MemberItem { rev, seat: seat.clone(), ..MemberItem::new(member.clone(), access, model) }, &cause, rule, now);
        change.meta.claim_seat = claim;
        // Not after a walk to another access of the tenant that missed it.
        change.meta.walk_goal_is = Some(meta.walk_goal.clone());
        let mut result = store.commit_unchained(tenant, &change, request_id).await;
        if matches!(result, Err(CommitError::Seats)) {
            // Taken meanwhile (or someone now waits): the account waits.
            let waiting = MemberAccess::without_access(MemberStatus::PendingSeat);
            let rule = "no free seat at creation: taken by another account at the same moment".to_string();
            change = creation(&targets, MemberItem { rev, seat, ..MemberItem::new(member, waiting, model) }, &cause, rule, now);
            result = store.commit_unchained(tenant, &change, request_id).await;
        }
        let item = match &change.writes[1] {
            Write::Member { item, .. } => item.clone(),
            _ => unreachable!("the member is the second write"),
        };
        match result {
            Ok(()) => return Ok((MemberView::of(tenant.clone(), &item), true)),
            // The email is another member's: that is the answer.
            Err(CommitError::Refused(0)) => {
                return Err(
                    Rejection::conflict("email_taken", format!("another member of tenant {tenant} already has the email {} (emails are unique per tenant, case-insensitively)", new.email)).into()
                )
            }
            // Created by another request at the same moment: read it again.
            Err(CommitError::Refused(_) | CommitError::HeadMoved | CommitError::Seats) => continue,
            Err(CommitError::Port(e)) => return Err(e.into()),
        }
    }
    Err(retry.contended())
}

/// The creation's transaction: the email claim, the member, its delivery
/// records, its (pending) audit record and its place in the counters.
fn creation(targets: &[crate::core::scim::Target], item: MemberItem, cause: &Cause, rule: String, now: DateTime<Utc>) -> Change {
    let status = item.access.status;
    let audit = AuditEvent::new(AuditAction::MemberCreated, format!("member:{}", item.member.user_id), cause, rule).after(&item.access);
    let mut change = Change::new(now).write(Write::ClaimEmail(item.member.clone())).write(Write::Member { item: item.clone(), guard: MemberGuard::New }).audit(audit);
    change.writes.extend(deliveries(targets, &item));
    change.meta.used_delta = i64::from(status == MemberStatus::Active);
    change.meta.pending_delta = i64::from(item.in_line());
    change
}

/// Removes an account: deprovisioned at once, its seat and email freed (the
/// reconcile this queues gives the seat to whoever waits longest).
pub async fn remove<S: Tenants + Targets>(store: &S, tenant: &TenantId, user: &UserId, request_id: &str, now: DateTime<Utc>) -> Result<MemberView, Error> {
    let cause = Cause::api_call(request_id);
    let mut retry = Retry::new(tenant, ATTEMPTS);
    while retry.again().await {
        let (meta, existing) = store.meta_and_member(tenant, user).await?;
        let meta = meta.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?;
        let existing = existing.ok_or_else(|| Rejection::not_found(&format!("member {user} of tenant {tenant}")))?;
        if existing.member.removed {
            return Ok(MemberView::of(tenant.clone(), &existing));
        }
        let after = MemberAccess::without_access(MemberStatus::Deprovisioned);
        let mut audit =
            AuditEvent::new(AuditAction::MemberRemoved, format!("member:{user}"), &cause, "account removed by the app: deprovisioned, seat released").before(&existing.access).after(&after);
        // Announced once chained: an app drops the member's cached token.
        if existing.access != after {
            audit = audit.announcing(Announcement::MemberAccessChanged { user_id: user.clone(), before: existing.access.clone(), after: after.clone() });
        }
        let (was_holding, was_in_line, rev) = (existing.access.holds_seat(), existing.in_line(), existing.rev);
        // Decided under the version the tenant follows (the commit holds
        // only if no walk to another goal, a move among them, passed it).
        let item = MemberItem { member: Member { removed: true, ..existing.member }, access: after, rev: rev + 1, model_version: meta.model_version.clone(), ..existing };
        let targets = store.targets(tenant).await?;
        let mut change = Change::new(now).write(Write::ReleaseEmail(item.member.clone())).write(Write::Member { item: item.clone(), guard: MemberGuard::Rev(rev) }).audit(audit);
        change.writes.extend(deliveries(&targets, &item));
        change.meta.used_delta = -i64::from(was_holding);
        change.meta.pending_delta = -i64::from(was_in_line);
        change.meta.walk_goal_is = Some(meta.walk_goal.clone());
        match store.commit_unchained(tenant, &change, request_id).await {
            Ok(()) => return Ok(MemberView::of(tenant.clone(), &item)),
            // Its access changed at the same moment (a reconcile): read it again.
            Err(CommitError::Refused(_) | CommitError::HeadMoved | CommitError::Seats) => continue,
            Err(CommitError::Port(e)) => return Err(e.into()),
        }
    }
    Err(retry.contended())
}

/// Changes a member's groups or attributes (the app's account event): its
/// roles follow at once if it holds a seat (the tenant's access as last
/// provisioned), and so does its place in the seat order. One transaction
/// under the tenant's chain lock, conditional on the member's revision: it
/// reads the head and the member, whatever the tenant's size.
pub async fn update<S: Tenants + Targets + Models>(store: &S, tenant: &TenantId, user: &UserId, update: &MemberUpdate, request_id: &str, now: DateTime<Utc>) -> Result<MemberView, Error> {
    update.validate()?;
    let cause = Cause::api_call(request_id);
    let committed = audited_on(
        store,
        tenant,
        || store.meta_and_member(tenant, user),
        |(meta, existing)| {
            let cause = &cause;
            async move {
                let meta = known(tenant, meta)?;
                let model = &*rules_of(store, Some(&meta)).await?;
                let existing = existing.filter(|e| !e.member.removed).ok_or_else(|| Rejection::not_found(&format!("member {user} of tenant {tenant}")))?;
                let member = Member {
                    groups: update.groups.clone().unwrap_or_else(|| existing.member.groups.clone()),
                    attributes: update.attributes.clone().unwrap_or_else(|| existing.member.attributes.clone()),
                    ..existing.member.clone()
                };
                if member == existing.member {
                    return Ok(Decision::Done(MemberView::of(tenant.clone(), &existing)));
                }
                let (access, privileged) = match &meta.access {
                    Some(a) => {
                        let access = if existing.access.holds_seat() { access_on_create(model, a, &meta.rules, &member, MemberStatus::Active) } else { existing.access.clone() };
                        (access, privileged(model, a, &meta.rules, &member))
                    }
                    None => (existing.access.clone(), existing.seat.privileged),
                };
                let item = MemberItem { member, access, seat: Seat { privileged, ..existing.seat.clone() }, rev: existing.rev + 1, link: existing.link.clone(), model_version: model.version.clone() };
                let mut audit = AuditEvent::new(AuditAction::MemberUpdated, format!("member:{user}"), cause, "groups or attributes changed by the app; roles follow the licensing model's rules")
                    .before(json!({"groups": existing.member.groups, "attributes": existing.member.attributes, "access": existing.access}))
                    .after(json!({"groups": item.member.groups, "attributes": item.member.attributes, "access": item.access}));
                if item.access != existing.access {
                    audit = audit.announcing(Announcement::MemberAccessChanged { user_id: user.clone(), before: existing.access.clone(), after: item.access.clone() });
                }
                let targets = store.targets(tenant).await?;
                let mut change = Change::new(now).write(Write::Member { item: item.clone(), guard: MemberGuard::Rev(existing.rev) }).audit(audit);
                change.writes.extend(deliveries(&targets, &item));
                Ok(Decision::one(change, MemberView::of(tenant.clone(), &item)))
            }
        },
    )
    .await?;
    Ok(committed.value)
}
