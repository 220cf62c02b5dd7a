//! The seat rules at the moment of a push, without I/O.

use super::*;
use crate::core::access::TenantRules;
use crate::core::audit::{CauseKind, ChainHead};
use crate::core::license::{effective_license, LicenseStatus, Source};
use proptest::prelude::*;
use serde_json::json;

fn model() -> LicensingModel {
    LicensingModel::default_model()
}

fn meta(seats: u32, used: u32, pending: u32) -> TenantMeta {
    let m = model();
    let access = effective_license(&m, &[crate::core::license::tests::lic("sub_1", Source::Stripe, "team", seats, LicenseStatus::Active, 1)]);
    TenantMeta {
        access: Some(access),
        seats_used: used,
        seats_pending: pending,
        head: ChainHead::genesis(),
        rules: TenantRules::default(),
        licensed: true,
        walk: None,
        walk_goal: None,
        license_file_seconds: None,
        continues: false,
        model_version: crate::core::model::LicensingModel::default_model().version,
        model_pin: None,
        model_waiting: None,
    }
}

fn cause() -> Cause {
    Cause::directory("d0000000000000001", "req-1")
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-12-02T10:00:00Z").unwrap().with_timezone(&Utc)
}

fn pushed(user_name: &str, active: bool) -> PushedUser {
    resource::read_user(&json!({"schemas": [schemas::USER], "userName": user_name, "active": active, "userType": "Contractor"})).unwrap()
}

fn written(p: Pushed) -> MemberWrite {
    match p {
        Pushed::Write(w) => *w,
        other => panic!("expected a write, got {other:?}"),
    }
}

fn created(meta: &TenantMeta, user: &str, active: bool, when_full: WhenFull) -> Pushed {
    let p = pushed(&format!("{user}@example.com"), active);
    create(&Push { model: &model(), meta, connection: "d0000000000000001", when_full, cause: &cause(), now: now() }, None, &p, &UserId::parse(user).unwrap()).unwrap()
}

#[test]
fn a_pushed_user_takes_a_free_seat_with_the_model_s_roles() {
    let w = written(created(&meta(5, 2, 0), "u1", true, WhenFull::Wait));
    assert_eq!(w.item.access.status, MemberStatus::Active);
    assert!(w.claim_seat && w.used_delta == 1 && w.pending_delta == 0);
    // userType Contractor -> employment = contractor -> view only.
    assert_eq!(w.item.member.attributes.get("employment").map(String::as_str), Some("contractor"));
    assert_eq!(w.item.access.roles.iter().collect::<Vec<_>>(), vec!["viewer"]);
    assert_eq!(w.audit.cause.kind, CauseKind::Directory);
    assert_eq!(w.audit.cause.connection.as_deref(), Some("d0000000000000001"));
}

#[test]
fn without_a_free_seat_it_waits_or_is_refused_as_the_tenant_chose() {
    let w = written(created(&meta(2, 2, 0), "u1", true, WhenFull::Wait));
    assert_eq!(w.item.access.status, MemberStatus::PendingSeat);
    assert!(!w.claim_seat && w.used_delta == 0 && w.pending_delta == 1);
    // Someone waits: a free seat goes to them, not to the newcomer.
    assert_eq!(written(created(&meta(3, 2, 1), "u1", true, WhenFull::Wait)).item.access.status, MemberStatus::PendingSeat);
    assert_eq!(created(&meta(2, 2, 0), "u1", true, WhenFull::Refuse), Pushed::Refused { total: 2, used: 2 });
    assert_eq!(created(&meta(3, 2, 1), "u1", true, WhenFull::Refuse), Pushed::Refused { total: 3, used: 2 });
    // An inactive user takes no seat, so it is never refused for one.
    let w = written(created(&meta(2, 2, 0), "u1", false, WhenFull::Refuse));
    assert_eq!(w.item.access.status, MemberStatus::Suspended);
    assert!(w.used_delta == 0 && w.pending_delta == 0 && !w.claim_seat);
    let e = no_seat(2, 2);
    assert_eq!(e.details["seats"], json!({"total": 2, "used": 2}));
}

#[test]
fn a_user_that_exists_is_a_conflict() {
    let m = meta(5, 0, 0);
    let w = written(created(&m, "u1", true, WhenFull::Wait));
    let e = create(
        &Push { model: &model(), meta: &m, connection: "d", when_full: WhenFull::Wait, cause: &cause(), now: now() },
        Some(&w.item),
        &pushed("u1@example.com", true),
        &UserId::parse("u1").unwrap(),
    )
    .unwrap_err();
    assert_eq!(e.details["scimType"], "uniqueness");
    // One removed before is created again, from its revision.
    let mut gone = w.item.clone();
    gone.member.removed = true;
    gone.rev = 4;
    let again = written(
        create(
            &Push { model: &model(), meta: &m, connection: "d", when_full: WhenFull::Wait, cause: &cause(), now: now() },
            Some(&gone),
            &pushed("u1@example.com", true),
            &UserId::parse("u1").unwrap(),
        )
        .unwrap(),
    );
    assert_eq!((again.item.rev, again.read_at_rev), (5, Some(4)));
}

fn holder(seats: u32) -> (TenantMeta, MemberItem) {
    let m = meta(seats, 0, 0);
    let w = written(created(&m, "u1", true, WhenFull::Wait));
    (meta(seats, 1, 0), w.item)
}

#[test]
fn deactivating_frees_the_seat_and_reactivating_claims_one_again() {
    let (m, item) = holder(1);
    let w = written(replace(&Push { model: &model(), meta: &m, connection: "d", when_full: WhenFull::Wait, cause: &cause(), now: now() }, &item, &pushed("u1@example.com", false)).unwrap());
    assert_eq!(w.item.access.status, MemberStatus::Suspended);
    assert_eq!((w.used_delta, w.pending_delta), (-1, 0));
    assert_eq!(w.audit.action, AuditAction::MemberSuspended);
    assert!(w.audit.announce.is_some(), "a suspension is announced");
    let suspended = w.item;
    // The seat is free again: reactivation claims it.
    let w = written(
        replace(&Push { model: &model(), meta: &meta(1, 0, 0), connection: "d", when_full: WhenFull::Wait, cause: &cause(), now: now() }, &suspended, &pushed("u1@example.com", true)).unwrap(),
    );
    assert_eq!(w.item.access.status, MemberStatus::Active);
    assert!(w.claim_seat && w.used_delta == 1);
    // Taken meanwhile: it waits, in line from now; or the push is refused.
    let w = written(
        replace(&Push { model: &model(), meta: &meta(1, 1, 0), connection: "d", when_full: WhenFull::Wait, cause: &cause(), now: now() }, &suspended, &pushed("u1@example.com", true)).unwrap(),
    );
    assert_eq!((w.item.access.status, w.pending_delta), (MemberStatus::PendingSeat, 1));
    assert_eq!(w.item.seat.since, crate::core::seats::micros(now()));
    assert_eq!(
        replace(&Push { model: &model(), meta: &meta(1, 1, 0), connection: "d", when_full: WhenFull::Refuse, cause: &cause(), now: now() }, &suspended, &pushed("u1@example.com", true)).unwrap(),
        Pushed::Refused { total: 1, used: 1 }
    );
}

#[test]
fn a_profile_push_keeps_the_seat_and_follows_attributes() {
    let (m, item) = holder(3);
    let same = pushed("u1@example.com", true);
    assert_eq!(replace(&Push { model: &model(), meta: &m, connection: "d", when_full: WhenFull::Wait, cause: &cause(), now: now() }, &item, &same).unwrap(), Pushed::Unchanged);
    let mut employee = resource::read_user(&json!({"schemas": [schemas::USER], "userName": "u1@example.com", "userType": "Employee"})).unwrap();
    let w = written(replace(&Push { model: &model(), meta: &m, connection: "d", when_full: WhenFull::Refuse, cause: &cause(), now: now() }, &item, &employee).unwrap());
    assert_eq!(w.item.access.status, MemberStatus::Active);
    assert!(w.item.access.roles.contains("member") && !w.item.access.roles.contains("viewer"));
    assert_eq!((w.used_delta, w.claim_seat), (0, false));
    // A new email: the old one is given up.
    employee.email = "new@example.com".into();
    let w = written(replace(&Push { model: &model(), meta: &m, connection: "d", when_full: WhenFull::Wait, cause: &cause(), now: now() }, &item, &employee).unwrap());
    assert_eq!(w.old_email.map(|o| o.email).as_deref(), Some("u1@example.com"));
}

#[test]
fn groups_give_their_names_and_roles() {
    let (m, item) = holder(3);
    let w = regroup(&model(), &m, &item, &[("g1".into(), "admins".into())], &[], &cause(), now()).unwrap().unwrap();
    assert!(w.item.member.groups.contains("admins"));
    assert!(w.item.access.roles.contains("admin"));
    assert!(w.item.seat.privileged);
    assert_eq!(w.item.link.as_ref().unwrap().groups.get("g1").map(String::as_str), Some("admins"));
    // Again: nothing changes.
    assert!(regroup(&model(), &m, &w.item, &[("g1".into(), "admins".into())], &[], &cause(), now()).unwrap().is_none());
    // Renamed: the old name goes.
    let r = regroup(&model(), &m, &w.item, &[("g1".into(), "owners".into())], &[], &cause(), now()).unwrap().unwrap();
    assert!(r.item.member.groups.contains("owners") && !r.item.member.groups.contains("admins"));
    let out = regroup(&model(), &m, &r.item, &[], &["g1".into()], &cause(), now()).unwrap().unwrap();
    assert!(out.item.member.groups.is_empty() && !out.item.access.roles.contains("admin"));
    assert!(out.audit.announce.is_some());
}

proptest! {
    /// Whatever the counters, a push never takes more than a free seat,
    /// never goes ahead of someone waiting, and never evicts a holder.
    #[test]
    fn a_push_never_exceeds_the_seats_nor_jumps_the_line(seats in 0u32..5, used in 0u32..6, pending in 0u32..3, active in any::<bool>(), refuse in any::<bool>()) {
        let used = used.min(seats.max(used));
        let when = if refuse { WhenFull::Refuse } else { WhenFull::Wait };
        let m = meta(seats, used, pending);
        match created(&m, "u1", active, when) {
            Pushed::Write(w) => {
                if w.item.access.status == MemberStatus::Active {
                    prop_assert!(used < seats && pending == 0 && w.claim_seat && w.used_delta == 1);
                } else {
                    prop_assert_eq!(w.used_delta, 0);
                }
                prop_assert!(!(refuse && active && (used >= seats || pending > 0)), "refused when full");
            }
            Pushed::Refused { total, used: u } => prop_assert!(refuse && active && (u >= total || pending > 0)),
            Pushed::Unchanged => prop_assert!(false),
        }
    }
}
