//! Entitle as a SCIM 2.0 service provider (RFC 7643/7644): a directory per
//! tenant that the tenant's identity provider pushes users and groups into,
//! the pure part. The seat rules apply at the moment of the push: a pushed
//! user gets a seat if one is free and nobody waits, otherwise it waits
//! (or, when the tenant chose so, the push is refused); nobody is evicted.
//!
//! [`filter`]: filters and attribute paths; [`patch`]: PATCH operations;
//! [`resource`]: Users and Groups as kept and shown, the mapping to
//! members; [`schemas`]: what the directory says about itself;
//! [`connection`]: the IdPs' bearer tokens. The decisions here say what a
//! push does to a member; `app::directory` reads and commits.

pub mod connection;
pub mod filter;
pub mod patch;
pub mod resource;
pub mod schemas;

pub use resource::{DirGroup, Edge, Link, PushedUser};

use crate::core::access::{access_on_create, in_line, privileged, Member, MemberAccess, MemberItem, MemberStatus, SUSPENDED_BY_DIRECTORY};
use crate::core::audit::{Announcement, AuditAction, AuditEvent, Cause};
use crate::core::ids::UserId;
use crate::core::license::MemberPolicy;
use crate::core::model::{LicensingModel, WhenFull};
use crate::core::rejection::{Kind, Rejection};
use crate::core::seats::{micros, Seat};
use crate::core::tenant::{on_create, TenantMeta};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::BTreeSet;

/// A SCIM `uniqueness` conflict (409).
pub fn uniqueness(why: impl Into<String>) -> Rejection {
    Rejection::new(Kind::Conflict, "uniqueness", why).with("scimType", "uniqueness")
}

/// What a push does to a member.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    /// The member after the push, and how to write it.
    Write(Box<MemberWrite>),
    /// Nothing changes: the member is as pushed.
    Unchanged,
    /// Refused for want of a seat (the tenant chose `refuse`): nothing is stored.
    Refused { total: u32, used: u32 },
}

/// One member write of a push: the item after, the revision it was read
/// at (`None`: a new member), its seat claim and counters, the email it
/// gives up (when it changed), and the audit record.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberWrite {
    pub item: MemberItem,
    pub read_at_rev: Option<u64>,
    pub claim_seat: bool,
    pub used_delta: i64,
    pub pending_delta: i64,
    /// The member as it was, when its email changed (its claim is released).
    pub old_email: Option<Member>,
    pub audit: AuditEvent,
}

fn stamp(now: DateTime<Utc>) -> String {
    now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The seats refusal of a push (the SCIM error names the cap).
pub fn no_seat(total: u32, used: u32) -> Rejection {
    Rejection::new(Kind::Forbidden, "seat_limit_reached", format!("no free seat: {used} of {total} seats are used and the tenant refuses pushes when full; nothing was stored"))
        .with("scimType", "seatLimitReached")
        .with("seats", json!({"total": total, "used": used}))
}

/// Whether a push that needs a seat now finds one: seated, a seat free,
/// nobody waiting (`None` when the tenant is not seated: no seat is at stake).
fn seat_free(meta: &TenantMeta) -> Option<bool> {
    let a = meta.access.as_ref()?;
    (a.policy == MemberPolicy::Seated).then_some(meta.seats_used < a.seats_total && meta.seats_pending == 0)
}

/// What a push is decided under: the tenant it lands in (its licensing
/// model, and its `META` as read: access, counters, rules), the directory
/// connection that pushed it (its id, and what it does when no seat is
/// free), why (the audit record's cause), and when.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    pub model: &'a LicensingModel,
    pub meta: &'a TenantMeta,
    pub connection: &'a str,
    pub when_full: WhenFull,
    pub cause: &'a Cause,
    pub now: DateTime<Utc>,
}

/// A new member pushed by a directory (POST), decided on the tenant's
/// counters as read (the commit checks the seat claim again). `existing`
/// is the member the user id names, if any: one not removed is a conflict.
pub fn create(push: &Push, existing: Option<&MemberItem>, pushed: &PushedUser, user_id: &UserId) -> Result<Pushed, Rejection> {
    let Push { model, meta, connection, when_full, cause, now } = *push;
    if let Some(e) = existing.filter(|e| !e.member.removed) {
        return Err(uniqueness(format!(
            "a User with id {} already exists (userName {:?})",
            e.member.user_id,
            e.link.as_ref().and_then(|l| l.doc.get("userName")).and_then(|v| v.as_str()).unwrap_or(&e.member.email)
        )));
    }
    let member = Member {
        user_id: user_id.clone(),
        email: pushed.email.clone(),
        groups: BTreeSet::new(),
        attributes: resource::attributes_of(model, &pushed.doc),
        seq: micros(now),
        removed: false,
        suspended: !pushed.active,
    };
    let (access, rule) = if member.suspended {
        (MemberAccess::without_access(MemberStatus::Suspended), SUSPENDED_BY_DIRECTORY.to_string())
    } else {
        if when_full == WhenFull::Refuse && seat_free(meta) == Some(false) {
            let total = meta.access.as_ref().map_or(0, |a| a.seats_total);
            return Ok(Pushed::Refused { total, used: meta.seats_used });
        }
        on_create(model, meta, &member)
    };
    let privileged = meta.access.as_ref().is_some_and(|a| privileged(model, a, &meta.rules, &member));
    let link = Link { connection: Some(connection.to_string()), doc: pushed.doc.clone(), groups: Default::default(), created: stamp(now), modified: stamp(now) };
    let rev = existing.map_or(0, |e| e.rev) + 1;
    let item = MemberItem { seat: Seat { privileged, ..Seat::new(member.seq) }, rev, link: Some(link), ..MemberItem::new(member, access, model) };
    let audit = AuditEvent::new(AuditAction::MemberCreated, format!("member:{user_id}"), cause, format!("pushed by the tenant's identity provider; {rule}")).after(&item.access);
    Ok(Pushed::Write(Box::new(MemberWrite {
        claim_seat: item.access.status == MemberStatus::Active,
        used_delta: i64::from(item.access.status == MemberStatus::Active),
        pending_delta: i64::from(item.in_line()),
        read_at_rev: existing.map(|e| e.rev),
        old_email: None,
        item,
        audit,
    })))
}

/// A User replaced (PUT, or a PATCH's result): its profile, email and
/// attributes as pushed; `active` suspends or reactivates it. A
/// reactivated member claims a seat as a new one does (free, nobody
/// waiting), else waits in line from now (or the push is refused, when
/// the tenant chose so).
pub fn replace(push: &Push, existing: &MemberItem, pushed: &PushedUser) -> Result<Pushed, Rejection> {
    let Push { model, meta, connection, when_full, cause, now } = *push;
    let old = &existing.member;
    let member = Member { email: pushed.email.clone(), attributes: resource::attributes_of(model, &pushed.doc), suspended: !pushed.active, ..old.clone() };
    let old_link = existing.link.clone().unwrap_or_default();
    if member == *old && old_link.doc == pushed.doc {
        return Ok(Pushed::Unchanged);
    }
    let tenant = meta.access.as_ref();
    let held = existing.access.holds_seat();
    let mut seat = existing.seat.clone();
    let mut claim_seat = false;
    let (access, rule, action) = if member.suspended && !old.suspended {
        (MemberAccess::without_access(MemberStatus::Suspended), SUSPENDED_BY_DIRECTORY.to_string(), AuditAction::MemberSuspended)
    } else if !member.suspended && old.suspended {
        match (tenant, seat_free(meta)) {
            (Some(t), Some(true)) => {
                claim_seat = true;
                seat.since = micros(now);
                let rule = format!("reactivated by the tenant's identity provider: seat claimed, {} of {} seats were in use", meta.seats_used, t.seats_total);
                (access_on_create(model, t, &meta.rules, &member, MemberStatus::Active), rule, AuditAction::MemberReactivated)
            }
            (Some(t), Some(false)) => {
                if when_full == WhenFull::Refuse {
                    return Ok(Pushed::Refused { total: t.seats_total, used: meta.seats_used });
                }
                seat.since = micros(now);
                let rule = format!("reactivated by the tenant's identity provider: no free seat ({} of {} in use, {} waiting), waits in line", meta.seats_used, t.seats_total, meta.seats_pending);
                (MemberAccess::without_access(MemberStatus::PendingSeat), rule, AuditAction::MemberReactivated)
            }
            // The tenant itself has no seats to give (suspended, revoked, not yet provisioned).
            (t, _) => {
                let status = match t.map(|t| t.policy) {
                    Some(MemberPolicy::Revoked) => MemberStatus::Deprovisioned,
                    Some(MemberPolicy::Suspended) => MemberStatus::Suspended,
                    _ => MemberStatus::PendingSeat,
                };
                (MemberAccess::without_access(status), "reactivated by the tenant's identity provider; the tenant has no seat to give now".to_string(), AuditAction::MemberReactivated)
            }
        }
    } else {
        // The profile, email or attributes: a holder's roles follow its attributes.
        let access = match tenant {
            Some(t) if held => access_on_create(model, t, &meta.rules, &member, MemberStatus::Active),
            _ => existing.access.clone(),
        };
        (access, "profile updated by the tenant's identity provider; roles follow the licensing model's rules".to_string(), AuditAction::MemberUpdated)
    };
    seat.privileged = tenant.map_or(seat.privileged, |t| privileged(model, t, &meta.rules, &member));
    let link = Link {
        connection: Some(connection.to_string()),
        doc: pushed.doc.clone(),
        modified: stamp(now),
        created: if old_link.created.is_empty() { stamp(now) } else { old_link.created.clone() },
        ..old_link
    };
    let item = MemberItem { member, access, seat, rev: existing.rev + 1, link: Some(link), model_version: model.version.clone() };
    let mut audit = AuditEvent::new(action, format!("member:{}", old.user_id), cause, rule)
        .before(json!({"email": old.email, "attributes": old.attributes, "active": !old.suspended, "access": existing.access}))
        .after(json!({"email": item.member.email, "attributes": item.member.attributes, "active": !item.member.suspended, "access": item.access}));
    if item.access != existing.access {
        audit = audit.announcing(Announcement::MemberAccessChanged { user_id: old.user_id.clone(), before: existing.access.clone(), after: item.access.clone() });
    }
    let email_changed = !item.member.email.eq_ignore_ascii_case(&old.email);
    Ok(Pushed::Write(Box::new(MemberWrite {
        used_delta: i64::from(item.access.holds_seat()) - i64::from(held),
        pending_delta: i64::from(item.in_line()) - i64::from(in_line(&existing.access, &existing.seat)),
        claim_seat,
        read_at_rev: Some(existing.rev),
        old_email: email_changed.then(|| old.clone()),
        item,
        audit,
    })))
}

/// A member's directory groups changed: `join` (group id, name) and
/// `leave` (group ids). Its group names follow, and its roles with them if
/// it holds a seat. `None` when nothing changes.
pub fn regroup(
    model: &LicensingModel,
    meta: &TenantMeta,
    existing: &MemberItem,
    join: &[(String, String)],
    leave: &[String],
    cause: &Cause,
    now: DateTime<Utc>,
) -> Result<Option<MemberWrite>, Rejection> {
    let mut link = existing.link.clone().unwrap_or_default();
    let mut member = existing.member.clone();
    for gid in leave {
        if let Some(name) = link.groups.remove(gid) {
            // Another directory group of the member may give the same name.
            if !link.groups.values().any(|n| *n == name) {
                member.groups.remove(&name);
            }
        }
    }
    for (gid, name) in join {
        if let Some(old) = link.groups.insert(gid.clone(), name.clone()) {
            if old != *name && !link.groups.values().any(|n| *n == old) {
                member.groups.remove(&old);
            }
        }
        member.groups.insert(name.clone());
    }
    if member == existing.member && existing.link.as_ref().is_some_and(|l| l.groups == link.groups) {
        return Ok(None);
    }
    if member.groups.len() > resource::MAX_GROUPS {
        return Err(patch::invalid_value(format!("member {} would be in more than {} groups", member.user_id, resource::MAX_GROUPS)));
    }
    if link.created.is_empty() {
        link.created = stamp(now);
    }
    link.modified = stamp(now);
    let (access, privileged) = match &meta.access {
        Some(t) => {
            (if existing.access.holds_seat() { access_on_create(model, t, &meta.rules, &member, MemberStatus::Active) } else { existing.access.clone() }, privileged(model, t, &meta.rules, &member))
        }
        None => (existing.access.clone(), existing.seat.privileged),
    };
    let item = MemberItem { member, access, seat: Seat { privileged, ..existing.seat.clone() }, rev: existing.rev + 1, link: Some(link), model_version: model.version.clone() };
    let mut audit =
        AuditEvent::new(AuditAction::MemberUpdated, format!("member:{}", existing.member.user_id), cause, "groups changed by the tenant's identity provider; roles follow the licensing model's rules")
            .before(json!({"groups": existing.member.groups, "access": existing.access}))
            .after(json!({"groups": item.member.groups, "access": item.access}));
    if item.access != existing.access {
        audit = audit.announcing(Announcement::MemberAccessChanged { user_id: existing.member.user_id.clone(), before: existing.access.clone(), after: item.access.clone() });
    }
    Ok(Some(MemberWrite { item, read_at_rev: Some(existing.rev), claim_seat: false, used_delta: 0, pending_delta: 0, old_email: None, audit }))
}

#[cfg(test)]
mod tests;
