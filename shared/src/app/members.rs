//! The app's account events: creating an account claims a seat at that
//! moment, atomically (under any concurrency a tenant never gets more
//! active members than seats); removing one deprovisions it and frees its
//! seat and its email. Each writes a delivery record per SCIM target in the
//! same transaction.

use super::commit::{audited_on, Decision};
use super::ports::{Change, Targets, Tenants, Write};
use super::Error;
use crate::core::access::{Member, MemberAccess, MemberStatus};
use crate::core::audit::{AuditAction, AuditEvent, Cause, CauseKind};
use crate::core::ids::{TenantId, UserId};
use crate::core::model::LicensingModel;
use crate::core::rejection::Rejection;
use crate::core::tenant::{on_create, MemberItem, TenantMeta};
use crate::core::views::{MemberView, NewMember};
use chrono::{DateTime, Utc};

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
pub async fn create<S: Tenants + Targets>(model: &LicensingModel, store: &S, tenant: &TenantId, new: &NewMember, request_id: &str, now: DateTime<Utc>) -> Result<(MemberView, bool), Error> {
    let cause = Cause::new(CauseKind::ApiCall, request_id);
    // The head and the member in one read.
    let read = || store.meta_and_member(tenant, &new.user_id);
    let committed = audited_on(store, tenant, read, |(meta, existing)| {
        let cause = &cause;
        async move {
            let meta = known(tenant, meta)?;
            if let Some(existing) = existing {
                if !existing.member.removed {
                    let same = existing.member.email == new.email && existing.member.groups == new.groups && existing.member.attributes == new.attributes;
                    if same {
                        return Ok(Decision::Done((MemberView::new(tenant.clone(), new.user_id.clone(), &existing.access), false)));
                    }
                    return Err(Rejection::conflict("member_exists", format!("member {} already exists with different details", new.user_id)).into());
                }
            }
            let member = Member {
                user_id: new.user_id.clone(),
                email: new.email.clone(),
                groups: new.groups.clone(),
                attributes: new.attributes.clone(),
                seq: meta.member_seq + 1,
                removed: false,
            };
            let (access, rule) = on_create(model, &meta, &member);
            let status = access.status;
            let item = MemberItem { member, access };
            // Read after the head: a target added since moves the head and retries us.
            let targets = store.targets(tenant).await?;
            // The email is claimed in the same transaction: unique per
            // tenant, case-insensitively (SCIM userNames are).
            let mut change = Change::new(now)
                .write(Write::ClaimEmail(item.member.clone()))
                .write(Write::Member(item.clone()))
                .audit(AuditEvent::new(AuditAction::MemberCreated, format!("member:{}", new.user_id), cause, rule).after(&item.access));
            change.writes.extend(deliveries(&targets, &item));
            change.meta.seats_used = Some(meta.seats_used + u32::from(status == MemberStatus::Active));
            change.meta.seats_pending = Some(meta.seats_pending + u32::from(status == MemberStatus::PendingSeat));
            change.meta.member_seq = Some(item.member.seq);
            Ok(Decision::one(change, (MemberView::new(tenant.clone(), new.user_id.clone(), &item.access), true)))
        }
    })
    .await?;
    match committed.refused {
        None => Ok(committed.value),
        Some(_) => Err(Rejection::conflict(
            "email_taken",
            format!("another member of tenant {tenant} already has the email {} (emails are unique per tenant, case-insensitively)", new.email),
        )
        .into()),
    }
}

/// Removes an account: deprovisioned at once, its seat and email freed.
pub async fn remove<S: Tenants + Targets>(store: &S, tenant: &TenantId, user: &UserId, request_id: &str, now: DateTime<Utc>) -> Result<MemberView, Error> {
    let cause = Cause::new(CauseKind::ApiCall, request_id);
    let read = || store.meta_and_member(tenant, user);
    let committed = audited_on(store, tenant, read, |(meta, existing)| {
        let cause = &cause;
        async move {
            let meta = meta.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?;
            let existing = existing.ok_or_else(|| Rejection::not_found(&format!("member {user} of tenant {tenant}")))?;
            if existing.member.removed {
                return Ok(Decision::Done(MemberView::new(tenant.clone(), user.clone(), &existing.access)));
            }
            let after = MemberAccess::without_access(MemberStatus::Deprovisioned);
            let audit = AuditEvent::new(AuditAction::MemberRemoved, format!("member:{user}"), cause, "account removed by the app: deprovisioned, seat released")
                .before(&existing.access)
                .after(&after);
            let was = existing.access.status;
            let item = MemberItem { member: Member { removed: true, ..existing.member }, access: after };
            let targets = store.targets(tenant).await?;
            let mut change = Change::new(now).write(Write::ReleaseEmail(item.member.clone())).write(Write::Member(item.clone())).audit(audit);
            change.writes.extend(deliveries(&targets, &item));
            change.meta.seats_used = Some(meta.seats_used.saturating_sub(u32::from(was == MemberStatus::Active)));
            change.meta.seats_pending = Some(meta.seats_pending.saturating_sub(u32::from(was == MemberStatus::PendingSeat)));
            Ok(Decision::one(change, MemberView::new(tenant.clone(), user.clone(), &item.access)))
        }
    })
    .await?;
    Ok(committed.value)
}
