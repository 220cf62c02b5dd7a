//! The tenant's admin decides who holds seats (`PUT
//! /tenants/{tenant}/members/{user}/seat`, see [`crate::core::reassign`]).
//! Under the tenant's chain lock, like a reconcile: a reconcile decided on a
//! snapshot from before this change commits against an older head and
//! decides again, and each member write is conditional on the member's
//! revision as read. Reads the head and the (one or two) members in one
//! request, whatever the tenant's size.

use super::commit::{audited_on, Decision};
use super::members::{deliveries, known};
use super::ports::{Change, MemberGuard, Models, Targets, Tenants, Write};
use super::rules::rules_of;
use super::Error;
use crate::core::access::SeatedAccess;
use crate::core::audit::{Announcement, AuditAction, AuditEvent, Cause};
use crate::core::ids::{TenantId, UserId};
use crate::core::reassign::{reassign, ReassignInput, SeatRequest};
use crate::core::rejection::Rejection;
use crate::core::views::MemberView;
use chrono::{DateTime, Utc};

/// Who decides, as the audit records and the pin name them: the admin the
/// app acts for (`by`) and the IAM principal that called (the audit
/// record's cause names the request).
pub fn actor(by: Option<&str>, principal: Option<&str>) -> String {
    let who = by.unwrap_or("the account API caller");
    match principal {
        Some(p) => format!("{who} (via {p})"),
        None => who.to_string(),
    }
}

/// Applies a seat request; answers the member as committed (or as it
/// already was, when the request changes nothing).
pub async fn set_seat<S: Tenants + Targets + Models>(
    store: &S,
    tenant: &TenantId,
    user: &UserId,
    req: &SeatRequest,
    principal: Option<&str>,
    cause: &Cause,
    now: DateTime<Utc>,
) -> Result<MemberView, Error> {
    req.validate(user)?;
    let actor = actor(req.by.as_deref(), principal);
    let users: Vec<UserId> = std::iter::once(user.clone()).chain(req.from.clone()).collect();
    let (actor, users) = (&actor, &users);
    let committed = audited_on(
        store,
        tenant,
        || store.meta_and_members(tenant, users),
        |(meta, items)| async move {
            let meta = known(tenant, meta)?;
            let model = &*rules_of(store, Some(&meta)).await?;
            let mut items = items.into_iter();
            let item = items.next().flatten().ok_or_else(|| Rejection::not_found(&format!("member {user} of tenant {tenant}")))?;
            let from = items.next().flatten();
            let access = meta.access.as_ref().ok_or_else(|| Rejection::conflict("tenant_not_seated", format!("tenant {tenant} has no access provisioned yet: no seat can be given")))?;
            let decided = reassign(ReassignInput { model, tenant: access, rules: &meta.rules, seats_used: meta.seats_used, user: &item, from: from.as_ref(), req, actor, now })?;
            let Some(mine) = decided.changes.iter().find(|c| &c.item.member.user_id == user) else {
                return Ok(Decision::Done(MemberView::of(tenant.clone(), &item)));
            };
            let view = MemberView::of(tenant.clone(), &mine.item);
            let targets = store.targets(tenant).await?;
            let mut change = Change::new(now);
            for c in &decided.changes {
                change.writes.push(Write::Member { item: c.item.clone(), guard: MemberGuard::Rev(c.read_at_rev) });
                change.writes.extend(deliveries(&targets, &c.item));
                let id = &c.item.member.user_id;
                let mut audit = AuditEvent::new(AuditAction::MemberSeatReassigned, format!("member:{id}"), cause, c.rule.clone())
                    .before(SeatedAccess { access: &c.before, seat: &c.seat_before, model: &c.version_before })
                    .after(SeatedAccess::of(&c.item));
                if c.access_changed() {
                    audit = audit.announcing(Announcement::MemberAccessChanged { user_id: id.clone(), before: c.before.clone(), after: c.item.access.clone() });
                }
                change.audit.push(audit);
            }
            change.meta.used_delta = decided.used_delta;
            change.meta.pending_delta = decided.pending_delta;
            change.meta.used_at_most = decided.used_at_most;
            Ok(Decision::one(change, view))
        },
    )
    .await?;
    if let Some(refused) = committed.refused {
        // Only the writes of members are conditional here, and a refused one is read again.
        return Err(super::PortError::Corrupt { key: format!("T#{tenant}"), why: format!("a seat change's write was refused: {refused:?}") }.into());
    }
    Ok(committed.value)
}
