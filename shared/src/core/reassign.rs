//! The tenant's admin decides who holds seats (`PUT
//! /tenants/{tenant}/members/{user}/seat`): gives a seat to a member (a
//! free one, or one taken from a named holder) and pins it, or releases a
//! member's seat and keeps it out of the line. The pure decision: what
//! each member becomes, what the seat counters do, and why a seat cannot
//! be given.

use crate::core::access::{access_on_create, privileged, MemberAccess, MemberItem, MemberStatus, TenantRules};
use crate::core::ids::UserId;
use crate::core::license::{MemberPolicy, TenantAccess};
use crate::core::model::LicensingModel;
use crate::core::reconcile::MemberStep;
use crate::core::rejection::{Kind, Rejection};
use crate::core::seats::{micros, Pin, Seat};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

/// The body of `PUT .../members/{user}/seat`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeatRequest {
    /// `true`: give the member a seat and pin it; `false`: release its seat
    /// (it waits out of the line until given one again).
    pub hold: bool,
    /// With `hold: true`: the holder whose seat is given (it joins the line).
    #[serde(default)]
    pub from: Option<UserId>,
    /// Who decides (the tenant's admin the app acts for), as the audit names them.
    #[serde(default)]
    pub by: Option<String>,
}

impl SeatRequest {
    pub fn validate(&self, user: &UserId) -> Result<(), Rejection> {
        let invalid = |why: &str| Err(Rejection::new(Kind::Invalid, "invalid_seat_request", why));
        match (&self.from, self.hold) {
            (Some(_), false) => return invalid("from: only with hold: true (a seat is given from a holder)"),
            (Some(from), true) if from == user => return invalid("from: names the member itself"),
            _ => {}
        }
        if self.by.as_ref().is_some_and(|b| b.trim().is_empty() || b.chars().count() > 256 || b.chars().any(char::is_control)) {
            return invalid("by: 1 to 256 printable characters");
        }
        Ok(())
    }
}

/// What a seat request does: the members it changes (none: it is already
/// so) and the counters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Reassignment {
    pub changes: Vec<MemberStep>,
    pub used_delta: i64,
    pub pending_delta: i64,
    /// Commit only if at most this many seats were used before (a free seat given).
    pub used_at_most: Option<u32>,
}

fn conflict(code: &'static str, message: String) -> Rejection {
    Rejection::conflict(code, message)
}

/// What a seat request is decided on: the tenant as last provisioned, the
/// members it names, and who asks when.
#[derive(Debug, Clone, Copy)]
pub struct ReassignInput<'a> {
    pub model: &'a LicensingModel,
    /// The tenant's last provisioned access.
    pub tenant: &'a TenantAccess,
    pub rules: &'a TenantRules,
    /// Seats in use.
    pub seats_used: u32,
    /// The member the request is about.
    pub user: &'a MemberItem,
    /// The holder `req.from` names, if it is a member.
    pub from: Option<&'a MemberItem>,
    pub req: &'a SeatRequest,
    /// Who decides, as the audit names them.
    pub actor: &'a str,
    pub now: DateTime<Utc>,
}

/// Decides a seat request on `user` (and `from`, if named) of a tenant
/// whose last provisioned access is `tenant`, with `seats_used` seats in
/// use, by `actor` (as the audit names them) at `now`.
pub fn reassign(input: ReassignInput<'_>) -> Result<Reassignment, Rejection> {
    let ReassignInput { model, tenant, rules, seats_used, user, from, req, actor, now } = input;
    let id = &user.member.user_id;
    if user.member.removed {
        return Err(conflict("member_removed", format!("member {id} was removed: it holds no seat and cannot be given one")));
    }
    let pin = |hold: bool| Some(Pin { hold, by: actor.to_string(), at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true) });
    let mut out = Reassignment::default();
    let change = |item: &MemberItem, access: MemberAccess, seat: Seat, rule: String, out: &mut Reassignment| {
        let step = MemberStep::new(item, access, seat, rule, model);
        out.used_delta += step.used_delta();
        out.pending_delta += step.pending_delta();
        out.changes.push(step);
    };
    if !req.hold {
        if user.seat.released() && !user.access.holds_seat() {
            return Ok(out);
        }
        let (access, since) = if user.access.holds_seat() { (MemberAccess::without_access(MemberStatus::PendingSeat), micros(now)) } else { (user.access.clone(), user.seat.since) };
        let rule = format!("seat released by {actor}: waits out of the line until given a seat");
        change(user, access, Seat { since, pin: pin(false), privileged: user.seat.privileged }, rule, &mut out);
        return Ok(out);
    }
    if tenant.policy != MemberPolicy::Seated {
        return Err(conflict("tenant_not_seated", format!("tenant is {} ({}): no seat can be given", tenant.status, tenant.rule)));
    }
    let seated = access_on_create(model, tenant, rules, &user.member, MemberStatus::Active);
    let is_privileged = privileged(model, tenant, rules, &user.member);
    if user.access.holds_seat() {
        // Pinned already: what this request asks (a retry of it, a lost answer).
        if user.seat.pinned() {
            return Ok(out);
        }
        if let Some(from) = &req.from {
            return Err(conflict("already_holds_seat", format!("member {id} already holds a seat: nothing to take from {from}")));
        }
        let rule = format!("seat pinned by {actor}: kept through cuts while an unpinned holder remains");
        change(user, user.access.clone(), Seat { since: user.seat.since, pin: pin(true), privileged: is_privileged }, rule, &mut out);
        return Ok(out);
    }
    match (&req.from, from) {
        (Some(name), holder) => {
            let holder =
                holder.filter(|h| !h.member.removed && h.access.holds_seat()).ok_or_else(|| conflict("from_holds_no_seat", format!("member {name} holds no seat to give")).with("from", name))?;
            let rule = format!("seat given by {actor} to {id}: joins the line");
            change(holder, MemberAccess::without_access(MemberStatus::PendingSeat), Seat { privileged: holder.seat.privileged, ..Seat::new(micros(now)) }, rule, &mut out);
            let rule = format!("seat given by {actor}, taken from {name}; pinned");
            change(user, seated, Seat { since: micros(now), pin: pin(true), privileged: is_privileged }, rule, &mut out);
        }
        (None, _) => {
            if seats_used >= tenant.seats_total {
                let seats = json!({"total": tenant.seats_total, "used": seats_used});
                return Err(conflict("no_free_seat", format!("all {} seats are held: name a holder in `from` to give its seat", tenant.seats_total)).with("seats", seats));
            }
            let rule = format!("free seat given by {actor}; pinned");
            change(user, seated, Seat { since: micros(now), pin: pin(true), privileged: is_privileged }, rule, &mut out);
            out.used_at_most = Some(tenant.seats_total - 1);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::access::tests::member;
    use crate::core::license::effective_license;
    use crate::core::license::{LicenseStatus, Source};

    fn tenant(seats: u32) -> TenantAccess {
        let m = LicensingModel::default_model();
        effective_license(&m, &[crate::core::license::tests::lic("sub_1", Source::Stripe, "team", seats, LicenseStatus::Active, 1)])
    }

    fn item(id: &str, status: MemberStatus) -> MemberItem {
        let m = LicensingModel::default_model();
        let member = member(id, 1, &[]);
        let access = access_on_create(&m, &tenant(5), &TenantRules::default(), &member, status);
        MemberItem { rev: 3, ..MemberItem::new(member, access, &LicensingModel::default_model()) }
    }

    fn req(hold: bool, from: Option<&str>) -> SeatRequest {
        SeatRequest { hold, from: from.map(|f| UserId::parse(f).unwrap()), by: None }
    }

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    fn run(seats: u32, used: u32, user: &MemberItem, from: Option<&MemberItem>, r: &SeatRequest) -> Result<Reassignment, Rejection> {
        let (model, access, rules) = (LicensingModel::default_model(), tenant(seats), TenantRules::default());
        reassign(ReassignInput { model: &model, tenant: &access, rules: &rules, seats_used: used, user, from, req: r, actor: "ann", now: at() })
    }

    #[test]
    fn a_free_seat_is_given_and_pinned_if_one_is_free() {
        let w = item("w", MemberStatus::PendingSeat);
        let r = run(3, 2, &w, None, &req(true, None)).unwrap();
        assert_eq!((r.used_delta, r.pending_delta, r.used_at_most), (1, -1, Some(2)));
        let c = &r.changes[0];
        assert_eq!((c.item.access.status, c.item.rev, c.read_at_rev), (MemberStatus::Active, 4, 3));
        assert!(c.item.seat.pinned() && c.item.access.roles.contains("member"));
        let e = run(3, 3, &w, None, &req(true, None)).unwrap_err();
        assert_eq!((e.kind, e.code), (Kind::Conflict, "no_free_seat"));
        assert_eq!(e.details["seats"], json!({"total": 3, "used": 3}));
    }

    #[test]
    fn a_seat_is_taken_from_a_named_holder_who_joins_the_line() {
        let (w, h) = (item("w", MemberStatus::PendingSeat), item("h", MemberStatus::Active));
        let r = run(3, 3, &w, Some(&h), &req(true, Some("h"))).unwrap();
        assert_eq!((r.used_delta, r.pending_delta, r.used_at_most), (0, 0, None));
        let statuses: Vec<_> = r.changes.iter().map(|c| (c.item.member.user_id.to_string(), c.item.access.status, c.item.seat.pinned())).collect();
        assert_eq!(statuses, [("h".into(), MemberStatus::PendingSeat, false), ("w".into(), MemberStatus::Active, true)]);
        assert_eq!(r.changes[0].item.seat.since, micros(at()));
        let waiting = item("x", MemberStatus::PendingSeat);
        assert_eq!(run(3, 3, &w, Some(&waiting), &req(true, Some("x"))).unwrap_err().code, "from_holds_no_seat");
        assert_eq!(run(3, 3, &w, None, &req(true, Some("nobody"))).unwrap_err().code, "from_holds_no_seat");
        assert_eq!(run(3, 3, &h, Some(&w), &req(true, Some("w"))).unwrap_err().code, "already_holds_seat");
        // The same request again (its answer lost): nothing changes.
        let given = r.changes[1].item.clone();
        assert!(run(3, 3, &given, Some(&r.changes[0].item), &req(true, Some("h"))).unwrap().changes.is_empty());
    }

    #[test]
    fn a_release_takes_the_member_out_of_the_line_and_twice_changes_nothing() {
        let h = item("h", MemberStatus::Active);
        let r = run(3, 3, &h, None, &req(false, None)).unwrap();
        assert_eq!((r.used_delta, r.pending_delta), (-1, 0));
        let released = &r.changes[0].item;
        assert!(released.seat.released() && released.access.status == MemberStatus::PendingSeat);
        assert!(run(3, 2, released, None, &req(false, None)).unwrap().changes.is_empty());
        // A waiting member released leaves the line.
        let r = run(3, 3, &item("w", MemberStatus::PendingSeat), None, &req(false, None)).unwrap();
        assert_eq!((r.used_delta, r.pending_delta), (0, -1));
        // Pinning a holder changes no counter; pinning it again, nothing.
        let r = run(3, 3, &h, None, &req(true, None)).unwrap();
        assert_eq!((r.used_delta, r.pending_delta, r.changes[0].item.access.status), (0, 0, MemberStatus::Active));
        assert!(run(3, 3, &r.changes[0].item, None, &req(true, None)).unwrap().changes.is_empty());
    }

    #[test]
    fn requests_that_make_no_sense_are_refused() {
        let u = UserId::parse("u").unwrap();
        assert_eq!(req(false, Some("x")).validate(&u).unwrap_err().code, "invalid_seat_request");
        assert_eq!(req(true, Some("u")).validate(&u).unwrap_err().code, "invalid_seat_request");
        let mut removed = item("r", MemberStatus::Deprovisioned);
        removed.member.removed = true;
        assert_eq!(run(3, 0, &removed, None, &req(true, None)).unwrap_err().code, "member_removed");
        let suspended = reassign(ReassignInput {
            model: &LicensingModel::default_model(),
            tenant: &TenantAccess { policy: MemberPolicy::Suspended, ..tenant(3) },
            rules: &TenantRules::default(),
            seats_used: 0,
            user: &item("w", MemberStatus::Suspended),
            from: None,
            req: &req(true, None),
            actor: "ann",
            now: at(),
        });
        assert_eq!(suspended.unwrap_err().code, "tenant_not_seated");
    }
}
