//! The use cases against the ports in memory: in milliseconds, without the
//! emulator. (The emulator and end-to-end suites test the same paths
//! through DynamoDB Local and the real binaries.)

use super::memory::{crm_change, is_injected_crash, Crashing, Memory};
use super::ports::{Contracts, Tenants};
use super::*;
use crate::core::access::MemberStatus;
use crate::core::audit::{AuditAction, AuditRecord, Cause, CauseKind};
use crate::core::contract::{AmendmentRequest, AmendmentStatus, DecisionRequest, Verdict};
use crate::core::ids::{AmendmentId, ContractId, EventId, TenantId, UserId};
use crate::core::license::Source;
use crate::core::model::LicensingModel;
use crate::core::reassign::SeatRequest;
use crate::core::reconcile::members_per_chunk;
use crate::core::rejection::Kind;
use crate::core::views::NewMember;
use chrono::{Duration, Utc};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn model() -> Arc<LicensingModel> {
    Arc::new(LicensingModel::default_model())
}

fn tenant(t: &str) -> TenantId {
    TenantId::parse(t).unwrap()
}

fn new_member(i: usize, email: &str) -> NewMember {
    NewMember { user_id: UserId::parse(format!("m{i:04}")).unwrap(), email: email.into(), groups: BTreeSet::new(), attributes: BTreeMap::new() }
}

fn cause(id: &str) -> Cause {
    Cause::new(CauseKind::Reconcile, id)
}

async fn actions(store: &Memory, t: &TenantId) -> Vec<AuditAction> {
    let (records, _) = store.audit_page(t, 0, 100_000).await.unwrap();
    records.iter().map(|r| serde_json::from_str::<AuditRecord>(&r.json).unwrap().event.action).collect()
}

async fn verified(store: &Memory, t: &TenantId) -> bool {
    audit::verify(store, t).await.unwrap().unwrap().ok
}

/// A licensed, reconciled tenant with `members` seated accounts.
async fn seeded(store: &Memory, t: &TenantId, seats: u32, members: usize) {
    licenses::record_change(store, &crm_change(t, 1, seats), "h1", Utc::now()).await.unwrap();
    reconcile::reconcile(store, t, &cause("seed"), Utc::now()).await.unwrap();
    for i in 0..members {
        members::create(store, t, &new_member(i, &format!("m{i}@example.test")), "seed", Utc::now()).await.unwrap();
    }
    reconcile::reconcile(store, t, &cause("seed"), Utc::now()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn seat_claims_racing_reconciles_never_overbook() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("race");
    licenses::record_change(&store, &crm_change(&t, 1, 10), "h", Utc::now()).await.unwrap();
    reconcile::reconcile(&store, &t, &cause("first"), Utc::now()).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (store2, t2) = (store.clone(), t.clone());
        tasks.push(tokio::spawn(async move { members::create(&store2, &t2, &new_member(i, &format!("u{i}@example.test")), &format!("req-{i}"), Utc::now()).await }));
        if i % 5 == 0 {
            let (store2, t2) = (store.clone(), t.clone());
            tasks.push(tokio::spawn(async move { reconcile::reconcile(&store2, &t2, &cause("racing"), Utc::now()).await.map(|_| (views_stub(), false)) }));
        }
    }
    let mut active_at_creation = 0;
    for task in tasks {
        let (view, created) = task.await.unwrap().unwrap();
        if created && view.status == MemberStatus::Active {
            active_at_creation += 1;
        }
    }
    assert_eq!(active_at_creation, 10, "exactly the seats were claimed at creation");
    reconcile::reconcile(&store, &t, &cause("after"), Utc::now()).await.unwrap();
    let state = store.tenant(&t).await.unwrap().unwrap();
    assert_eq!(state.members.iter().filter(|x| x.access.status == MemberStatus::Active).count(), 10);
    assert_eq!((state.meta.seats_used, state.meta.seats_pending), (10, 20));
    assert_eq!(actions(&store, &t).await.iter().filter(|a| **a == AuditAction::MemberCreated).count(), 30, "one record per account");
    assert!(verified(&store, &t).await);
}

/// Fifty callers into one tenant of twenty seats, no reconcile meanwhile:
/// exactly twenty seats claimed at creation, each account audited once
/// (pending until chained), and the chain verifies once they are chained.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_callers_for_twenty_seats_get_exactly_twenty_each_audited_once() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("fifty");
    seeded(&store, &t, 20, 0).await;
    let commits_before = store.commits.load(std::sync::atomic::Ordering::SeqCst);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let (store, t) = (store.clone(), t.clone());
            tokio::spawn(async move { members::create(&store, &t, &new_member(i, &format!("c{i}@example.test")), &format!("req-{i}"), Utc::now()).await.unwrap() })
        })
        .collect();
    let mut active = 0;
    for task in tasks {
        let (view, created) = task.await.unwrap();
        assert!(created);
        active += usize::from(view.status == MemberStatus::Active);
    }
    assert_eq!(active, 20, "exactly the seats");
    // One transaction each, at most two for those whose seat went at the same moment.
    let commits = store.commits.load(std::sync::atomic::Ordering::SeqCst) - commits_before;
    assert_eq!(commits, 50, "one commit per creation: no read-decide-retry on the tenant's lock");
    let meta = store.meta(&t).await.unwrap().unwrap();
    assert_eq!((meta.seats_used, meta.seats_pending), (20, 30));
    let before = audit::verify(&store, &t).await.unwrap().unwrap();
    assert!(before.ok && before.pending == 50, "{before:?}");
    assert_eq!(audit::integrate(&store, &t, Utc::now()).await.unwrap(), 50);
    let after = audit::verify(&store, &t).await.unwrap().unwrap();
    assert!(after.ok && after.pending == 0, "{after:?}");
    let created: Vec<AuditAction> = actions(&store, &t).await.into_iter().filter(|a| *a == AuditAction::MemberCreated).collect();
    assert_eq!(created.len(), 50, "one record per account");
    // Chained in the order they were made (their keys), each with its own time.
    let (records, _) = store.audit_page(&t, 0, 1000).await.unwrap();
    let times: Vec<String> = records.iter().map(|r| serde_json::from_str::<AuditRecord>(&r.json).unwrap()).filter(|r| r.event.action == AuditAction::MemberCreated).map(|r| r.at).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
}

/// The integrator stopped after any of its transactions: what it chained
/// stays chained (once), the rest stays pending until the next run; no
/// record is lost or chained twice.
#[tokio::test]
async fn a_crash_of_the_integrator_loses_and_doubles_nothing() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("integrator");
    seeded(&store, &t, 200, 0).await;
    for i in 0..120 {
        members::create(&store, &t, &new_member(i, &format!("i{i}@example.test")), &format!("req-{i}"), Utc::now()).await.unwrap();
    }
    for crash_after in [0, 1, 1] {
        let err = audit::integrate(&Crashing::after(&store, crash_after), &t, Utc::now()).await.unwrap_err();
        assert!(is_injected_crash(&err), "{err}");
        let v = audit::verify(&store, &t).await.unwrap().unwrap();
        assert!(v.ok, "{v:?}");
        let chained = actions(&store, &t).await.iter().filter(|a| **a == AuditAction::MemberCreated).count();
        assert_eq!(chained as u64 + v.pending, 120, "after a crash after {crash_after}: {chained} chained, {} pending", v.pending);
    }
    audit::integrate(&store, &t, Utc::now()).await.unwrap();
    let v = audit::verify(&store, &t).await.unwrap().unwrap();
    assert!(v.ok && v.pending == 0, "{v:?}");
    let subjects: BTreeSet<String> = created_subjects(&store, &t).await.into_iter().collect();
    assert_eq!(subjects.len(), 120, "every account's record, once");
}

/// The subjects of the chained `member_created` records, sorted (a subject
/// chained twice is there twice).
async fn created_subjects(store: &Memory, t: &TenantId) -> Vec<String> {
    let (records, _) = store.audit_page(t, 0, 100_000).await.unwrap();
    let mut subjects: Vec<String> =
        records.iter().map(|r| serde_json::from_str::<AuditRecord>(&r.json).unwrap()).filter(|r| r.event.action == AuditAction::MemberCreated).map(|r| r.event.subject).collect();
    subjects.sort();
    subjects
}

/// A backlog of pending records larger than a page (a burst of account
/// creations, provision stopped for a while) is chained a page at a time,
/// by the integrator (a barrier) and by a reconcile alike: every record
/// once, and no read holds more than a page of them (a reader's memory does not grow with the backlog).
#[tokio::test]
async fn a_backlog_of_pending_records_is_chained_a_page_at_a_time() {
    use crate::core::tenant::PENDING_PAGE;
    use std::sync::atomic::Ordering;
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("backlog");
    seeded(&store, &t, 10, 0).await;
    let create = |from: usize, to: usize| {
        let (store, t) = (store.clone(), t.clone());
        async move {
            for i in from..to {
                members::create(&store, &t, &new_member(i, &format!("b{i}@example.test")), &format!("req-{i}"), Utc::now()).await.unwrap();
            }
        }
    };
    let backlog = 2 * PENDING_PAGE + 7;
    create(0, backlog).await;
    assert_eq!(audit::verify(&store, &t).await.unwrap().unwrap().pending, backlog as u64);
    store.largest_pending_read.store(0, Ordering::SeqCst);
    assert_eq!(audit::integrate(&store, &t, Utc::now()).await.unwrap(), backlog);
    assert_eq!(store.largest_pending_read.load(Ordering::SeqCst), PENDING_PAGE, "the integrator read a page at a time");
    let v = audit::verify(&store, &t).await.unwrap().unwrap();
    assert!(v.ok && v.pending == 0, "{v:?}");
    let expected: Vec<String> = (0..backlog).map(|i| format!("member:m{i:04}")).collect();
    assert_eq!(created_subjects(&store, &t).await, expected, "each account's record, once");

    let more = PENDING_PAGE + 1;
    create(backlog, backlog + more).await;
    store.largest_pending_read.store(0, Ordering::SeqCst);
    reconcile::reconcile(&store, &t, &cause("backlog"), Utc::now()).await.unwrap();
    assert_eq!(store.largest_pending_read.load(Ordering::SeqCst), PENDING_PAGE, "the reconcile's head held a page at a time");
    let v = audit::verify(&store, &t).await.unwrap().unwrap();
    assert!(v.ok && v.pending == 0, "{v:?}");
    let expected: Vec<String> = (0..backlog + more).map(|i| format!("member:m{i:04}")).collect();
    assert_eq!(created_subjects(&store, &t).await, expected);
}

/// A removal and a reconcile that would seat the removed account, at once:
/// the reconcile's write is conditional on the status it planned on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removals_racing_reconciles_never_leave_a_removed_account_seated() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("removal");
    seeded(&store, &t, 5, 10).await;
    // Five seated, five waiting; seats freed one by one while reconciles hand them out.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let (store2, t2) = (store.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let user = UserId::parse(format!("m{i:04}")).unwrap();
            members::remove(&store2, &t2, &user, &format!("rm-{i}"), Utc::now()).await.map(|_| ())?;
            reconcile::reconcile(&store2, &t2, &cause("after-removal"), Utc::now()).await.map(|_| ())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    reconcile::reconcile(&store, &t, &cause("final"), Utc::now()).await.unwrap();
    let state = store.tenant(&t).await.unwrap().unwrap();
    assert!(state.members.iter().all(|x| x.access.status == MemberStatus::Deprovisioned), "{:?}", state.members.iter().map(|x| x.access.status).collect::<Vec<_>>());
    assert_eq!((state.meta.seats_used, state.meta.seats_pending), (0, 0));
    assert!(verified(&store, &t).await);
}

/// (The reconciles in the race above answer in the creations' shape.)
fn views_stub() -> crate::core::views::MemberView {
    crate::core::views::MemberView {
        tenant_id: tenant("race"),
        user_id: UserId::parse("reconcile").unwrap(),
        status: MemberStatus::Deprovisioned,
        roles: BTreeSet::new(),
        entitlements: Default::default(),
        seat: None,
        model: None,
    }
}

#[tokio::test]
async fn a_crash_between_chunks_is_finished_by_the_next_attempt() {
    let m = model();
    let store = Memory::new(m.clone());
    let (crashed, control) = (tenant("crash"), tenant("control"));
    for t in [&crashed, &control] {
        seeded(&store, t, 130, 130).await;
        licenses::record_change(&store, &crm_change(t, 2, 10), "h2", Utc::now()).await.unwrap();
    }
    // The cut goes first (the last holders in the seat order, a page at a
    // time): its first transaction commits, then the process dies.
    let per = members_per_chunk(0);
    let dying = Crashing::after(&store, 1);
    let err = reconcile::reconcile(&dying, &crashed, &cause("cut"), Utc::now()).await.unwrap_err();
    assert!(is_injected_crash(&err), "{err}");
    let half = store.tenant(&crashed).await.unwrap().unwrap();
    let active = half.members.iter().filter(|x| x.access.status == MemberStatus::Active).count();
    assert_eq!(active, 130 - per, "the first transaction of the cut: {per} seats");
    assert_eq!(half.meta.seats_used as usize, active, "counters match what was applied");
    assert!(verified(&store, &crashed).await);

    let rest = reconcile::reconcile(&store, &crashed, &cause("cut"), Utc::now()).await.unwrap();
    assert_eq!((rest.member_changes, rest.tenant_changed), (120 - per, true), "the rest of the cut, then the tenant's new access");
    let full = reconcile::reconcile(&store, &control, &cause("cut"), Utc::now()).await.unwrap();
    let seat_page = reconcile::SEAT_PAGE;
    assert_eq!((full.member_changes, full.chunks), (120, 1 + seat_page.div_ceil(per) + (120 - seat_page).div_ceil(per)));
    let statuses = |s: crate::core::tenant::TenantState| s.members.iter().map(|x| (x.member.user_id.clone(), x.access.clone())).collect::<BTreeMap<_, _>>();
    assert_eq!(statuses(store.tenant(&crashed).await.unwrap().unwrap()), statuses(store.tenant(&control).await.unwrap().unwrap()), "the same end state as without the crash");
    let changed = actions(&store, &crashed).await.iter().filter(|a| **a == AuditAction::MemberAccessChanged).count();
    assert_eq!(changed, 120, "seated at creation, cut once: each change audited once");
    assert!(verified(&store, &crashed).await);
}

#[tokio::test]
async fn license_events_apply_once_in_source_order_and_park_with_an_audit_record() {
    let store = Memory::new(model());
    let t = tenant("order");
    for (v, seats) in [(5, 50), (3, 30), (9, 90), (1, 10)] {
        licenses::record_change(&store, &crm_change(&t, v, seats), &format!("h{v}"), Utc::now()).await.unwrap();
    }
    let held = store.meta_and_license(&t, Source::Crm, "crm-main").await.unwrap().1.unwrap();
    assert_eq!((held.source_version, held.seats), (9, 90));
    assert_eq!(licenses::record_change(&store, &crm_change(&t, 9, 90), "h9", Utc::now()).await.unwrap(), licenses::Recorded::Duplicate);
    let e = licenses::record_change(&store, &crm_change(&t, 9, 90), "other", Utc::now()).await.unwrap_err();
    assert!(matches!(&e, Error::Rejected(r) if r.code == "event_id_reused"), "{e}");
    let (event, payload) = (EventId::parse("evt_x").unwrap(), json!({}));
    assert!(licenses::park(&store, Source::Stripe, &event, Some(&t), "price lookup_key \"gold\" is not in the licensing model", &payload, Utc::now()).await.unwrap());
    assert!(!licenses::park(&store, Source::Stripe, &event, Some(&t), "again", &payload, Utc::now()).await.unwrap(), "parked once");
    let acts = actions(&store, &t).await;
    assert_eq!(acts.iter().filter(|a| **a == AuditAction::LicenseIgnoredStale).count(), 2);
    assert_eq!(acts.iter().filter(|a| **a == AuditAction::EventParked).count(), 1);
    assert!(verified(&store, &t).await);
}

#[tokio::test]
async fn emails_are_claimed_case_insensitively_and_freed_on_removal() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("emails");
    seeded(&store, &t, 5, 0).await;
    members::create(&store, &t, &new_member(1, "admin@corp.example"), "r1", Utc::now()).await.unwrap();
    let e = members::create(&store, &t, &new_member(2, "ADMIN@Corp.Example"), "r2", Utc::now()).await.unwrap_err();
    assert!(matches!(&e, Error::Rejected(r) if r.code == "email_taken" && r.kind == Kind::Conflict), "{e}");
    assert!(store.member(&t, &UserId::parse("m0002").unwrap()).await.unwrap().is_none(), "nothing written");
    members::remove(&store, &t, &UserId::parse("m0001").unwrap(), "r3", Utc::now()).await.unwrap();
    members::create(&store, &t, &new_member(2, "ADMIN@Corp.Example"), "r4", Utc::now()).await.unwrap();
    let unknown = members::create(&store, &tenant("nobody"), &new_member(3, "x@y.z"), "r5", Utc::now()).await.unwrap_err();
    assert!(matches!(&unknown, Error::Rejected(r) if r.kind == Kind::NotFound), "{unknown}");
}

fn amendment(id: &str, base: u64, patch: serde_json::Value, by: Option<&str>) -> AmendmentRequest {
    let mut v = json!({"amendment_id": id, "base_version": base, "patch": patch});
    if let Some(b) = by {
        v["submitted_by"] = json!(b);
    }
    serde_json::from_value(v).unwrap()
}

fn who(by: &str) -> DecisionRequest {
    DecisionRequest { by: by.into(), reason: "because".into() }
}

fn submission<'a>(contract: &'a ContractId, request: &'a AmendmentRequest, principal: Option<&'a str>, body_hash: &'a str) -> contracts::Submission<'a> {
    contracts::Submission { contract, request, principal, body_hash, dry_run: false }
}

fn on<'a>(contract: &'a ContractId, amendment: &'a AmendmentId, decision: &'a DecisionRequest, principal: Option<&'a str>) -> contracts::OnAmendment<'a> {
    contracts::OnAmendment { contract, amendment, decision, principal }
}

#[tokio::test]
async fn amendments_are_reviewed_by_someone_else_and_reversed_exactly() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("acme");
    let cid = ContractId::parse("k-1").unwrap();
    let doc =
        json!({"contract_id": "k-1", "tenant_id": "acme", "term": {"start": "2026-01-01T00:00:00Z", "end": "2090-01-01T00:00:00Z"}, "tier": "business", "seats": 4, "support": {"level": "standard"}});
    let (_, created) = contracts::create(&store, &doc, "h0", "req", Utc::now()).await.unwrap();
    assert!(created);
    for i in 0..4 {
        members::create(&store, &t, &new_member(i, &format!("m{i}@acme.test")), "req", Utc::now()).await.unwrap();
    }
    reconcile::reconcile(&store, &t, &cause("seed"), Utc::now()).await.unwrap();
    let before = store.tenant(&t).await.unwrap().unwrap();

    // A seat cut of half is held for review; its submitter cannot approve it.
    let cut = amendment("cut", 1, json!([{"op": "replace", "path": "/seats", "value": 2}]), Some("ann@acme.test"));
    let (held, stored) = contracts::submit(&store, submission(&cid, &cut, Some("arn:ann"), "hc"), Utc::now()).await.unwrap();
    assert_eq!((held.status, stored), (AmendmentStatus::PendingReview, true));
    let same = contracts::decide(&store, on(&cid, &held.amendment_id, &who("someone"), Some("arn:ann")), Verdict::Approve, Utc::now()).await.unwrap_err();
    assert!(matches!(&same, Error::Rejected(r) if r.code == "same_submitter" && r.kind == Kind::Forbidden), "{same}");
    let approved = contracts::decide(&store, on(&cid, &held.amendment_id, &who("cfo"), Some("arn:cfo")), Verdict::Approve, Utc::now()).await.unwrap();
    assert_eq!((approved.status, approved.applied_version), (AmendmentStatus::Applied, Some(2)));
    assert_eq!(approved.decisions[0].principal.as_deref(), Some("arn:cfo"));
    reconcile::reconcile(&store, &t, &cause("cut"), Utc::now()).await.unwrap();
    let cut_state = store.tenant(&t).await.unwrap().unwrap();
    assert_eq!(cut_state.meta.seats_used, 2);
    // Approving again changes nothing; a stale base version is refused.
    let twice = contracts::decide(&store, on(&cid, &held.amendment_id, &who("cfo"), Some("arn:cfo")), Verdict::Approve, Utc::now()).await.unwrap();
    assert_eq!(twice.decisions.len(), 1);
    let late = amendment("late", 1, json!([{"op": "replace", "path": "/support/level", "value": "gold"}]), None);
    let stale = contracts::submit(&store, submission(&cid, &late, None, "hl"), Utc::now()).await.unwrap_err();
    assert!(matches!(stale, Error::Rejected(r) if r.code == "stale_base_version"));

    // A later change of another clause is kept by the reversal; access comes back exactly.
    let gold = amendment("gold", 2, json!([{"op": "replace", "path": "/support/level", "value": "gold"}]), None);
    assert_eq!(contracts::submit(&store, submission(&cid, &gold, None, "hg"), Utc::now()).await.unwrap().0.status, AmendmentStatus::Applied);
    let reversed = contracts::reverse(&store, on(&cid, &held.amendment_id, &who("legal"), None), Utc::now()).await.unwrap();
    assert_eq!((reversed.status, reversed.reversed_version), (AmendmentStatus::Reversed, Some(4)));
    reconcile::reconcile(&store, &t, &cause("reverse"), Utc::now()).await.unwrap();
    let after = store.tenant(&t).await.unwrap().unwrap();
    let access = |s: &crate::core::tenant::TenantState| s.members.iter().map(|x| (x.member.user_id.clone(), x.access.clone())).collect::<BTreeMap<_, _>>();
    assert_eq!(access(&after), access(&before), "every member's access as before the cut");
    let current = store.contract(&cid).await.unwrap().unwrap();
    assert_eq!((current.doc.seats, current.document["support"]["level"].as_str()), (4, Some("gold")));
    assert!(verified(&store, &t).await);
}

#[tokio::test]
async fn a_due_transition_is_applied_once_however_many_runs_see_it() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("due");
    let ends = Utc::now() + Duration::days(3);
    let mut change = crm_change(&t, 1, 3);
    change.update.expires_at = Some(ends);
    licenses::record_change(&store, &change, "h", Utc::now()).await.unwrap();
    let limits = sweep::SweepLimits { stop_at: std::time::Instant::now() + std::time::Duration::from_secs(60), max_items: None };
    let at = ends + Duration::days(1);
    let (a, b) = tokio::join!(sweep::sweep(&store, at, "run-a", limits), sweep::sweep(&store, at, "run-b", limits));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.complete && b.complete);
    let acts = actions(&store, &t).await;
    assert_eq!(acts.iter().filter(|x| **x == AuditAction::LicenseGraceStarted).count(), 1, "{acts:?}");
    assert_eq!(a.transitions + b.transitions, acts.iter().filter(|x| x.as_str().starts_with("license_") && **x != AuditAction::LicenseRecorded).count() as u64);
}

mod billing_truth {
    //! Stripe's state, not the events' order: read under the tenant's lock.

    use super::*;
    use crate::app::billing::{apply_event, sync, EventOutcome, Outcome, SyncRequest};
    use crate::app::licenses::Recorded;
    use crate::app::memory::StripeAccount;
    use crate::core::license::{License, LicenseStatus};
    use crate::core::sources::stripe::{event, subscription};
    use std::sync::atomic::Ordering;

    const END: i64 = 1_900_000_000;

    fn sub(id: &str, t: &str, status: &str, seats: u64) -> serde_json::Value {
        subscription(id, Some(t), status, &[("team_monthly", seats)], END)
    }

    async fn apply(store: &Memory, stripe: &StripeAccount, e: &serde_json::Value) -> Outcome {
        match apply_event(store, stripe, e, &crate::core::audit::hash_of(&e.to_string()), Utc::now()).await.unwrap() {
            EventOutcome::Acted { outcome, .. } => outcome,
            other => panic!("{other:?}"),
        }
    }

    async fn held(store: &Memory, t: &TenantId, id: &str) -> License {
        store.meta_and_license(t, Source::Stripe, id).await.unwrap().1.expect("a license")
    }

    /// Checkout: `created` (incomplete) and `updated` (active) in the same
    /// second; whichever arrives last, Stripe says active, and so do we.
    #[tokio::test]
    async fn the_same_second_checkout_sequence_ends_active_in_both_orders() {
        let m = model();
        for order in [[0, 1], [1, 0]] {
            let (store, stripe) = (Memory::new(m.clone()), StripeAccount::default());
            let t = tenant(&format!("checkout{}", order[0]));
            stripe.put(sub("sub_1", t.as_str(), "active", 3));
            let events = [
                event("evt_created", "customer.subscription.created", 1000, &sub("sub_1", t.as_str(), "incomplete", 3)),
                event("evt_updated", "customer.subscription.updated", 1000, &sub("sub_1", t.as_str(), "active", 3)),
            ];
            let outcomes: Vec<_> = futures_in_order(&store, &stripe, order.iter().map(|i| events[*i].clone()).collect()).await;
            assert_eq!(outcomes.iter().map(|o| o.recorded.clone()).collect::<Vec<_>>(), [Recorded::Applied, Recorded::Unchanged]);
            let l = held(&store, &t, "sub_1").await;
            assert_eq!((l.status, l.seats), (LicenseStatus::Active, 3));
            assert_eq!(actions(&store, &t).await, [AuditAction::LicenseRecorded, AuditAction::LicenseUnchanged]);
            assert!(verified(&store, &t).await);
        }
    }

    async fn futures_in_order(store: &Memory, stripe: &StripeAccount, events: Vec<serde_json::Value>) -> Vec<Outcome> {
        let mut out = Vec::new();
        for e in &events {
            out.push(apply(store, stripe, e).await);
        }
        out
    }

    /// 3 -> 5 -> 7 seats in one second: the events' snapshots say 5 and 7
    /// and arrive in either order; the license ends with Stripe's 7.
    #[tokio::test]
    async fn two_quantity_changes_in_one_second_end_on_the_later() {
        let m = model();
        for order in [[0, 1], [1, 0]] {
            let (store, stripe) = (Memory::new(m.clone()), StripeAccount::default());
            let t = tenant(&format!("qty{}", order[0]));
            stripe.put(sub("sub_1", t.as_str(), "active", 3));
            apply(&store, &stripe, &event("evt_0", "customer.subscription.created", 999, &sub("sub_1", t.as_str(), "active", 3))).await;
            stripe.put(sub("sub_1", t.as_str(), "active", 7));
            let events = [
                event("evt_5", "customer.subscription.updated", 1000, &sub("sub_1", t.as_str(), "active", 5)),
                event("evt_7", "customer.subscription.updated", 1000, &sub("sub_1", t.as_str(), "active", 7)),
            ];
            futures_in_order(&store, &stripe, order.iter().map(|i| events[*i].clone()).collect()).await;
            assert_eq!(held(&store, &t, "sub_1").await.seats, 7);
        }
    }

    /// The lock, not the clock: an event reads 5, and before it commits
    /// Stripe moves to 7 and another event records 7. The first one's
    /// commit finds the head moved, reads again, and 7 stays.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_state_read_before_another_commit_never_overwrites_it() {
        let m = model();
        let (store, stripe) = (Memory::new(m.clone()), StripeAccount::default());
        let t = tenant("lock");
        stripe.put(sub("sub_1", t.as_str(), "active", 3));
        apply(&store, &stripe, &event("evt_0", "customer.subscription.created", 999, &sub("sub_1", t.as_str(), "active", 3))).await;
        stripe.put(sub("sub_1", t.as_str(), "active", 5));
        let (read, proceed) = stripe.pause_after_next_read();
        let slow = {
            let (store, stripe) = (store.clone(), stripe.clone());
            let e = event("evt_5", "customer.subscription.updated", 1000, &sub("sub_1", "lock", "active", 5));
            tokio::spawn(async move { apply(&store, &stripe, &e).await })
        };
        read.notified().await; // the slow one holds 5, not yet committed
        stripe.put(sub("sub_1", t.as_str(), "active", 7));
        let fast = apply(&store, &stripe, &event("evt_7", "customer.subscription.updated", 1000, &sub("sub_1", t.as_str(), "active", 7))).await;
        assert_eq!((fast.recorded, held(&store, &t, "sub_1").await.seats), (Recorded::Applied, 7));
        proceed.notify_one();
        let slow = slow.await.unwrap();
        assert_eq!(slow.recorded, Recorded::Unchanged, "read again after the head moved: 7, as held");
        let l = held(&store, &t, "sub_1").await;
        assert_eq!(l.seats, 7);
        assert!(l.source_version > 0);
        assert!(verified(&store, &t).await);
    }

    /// Another write of the tenant (an account) moves the head between the
    /// read and the commit: the read is reused, Stripe is asked once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn other_writes_of_the_tenant_do_not_cost_another_read() {
        let m = model();
        let (store, stripe) = (Memory::new(m.clone()), StripeAccount::default());
        let t = tenant("reuse");
        seeded(&store, &t, 5, 1).await;
        stripe.put(sub("sub_1", t.as_str(), "active", 4));
        let (read, proceed) = stripe.pause_after_next_read();
        let pending = {
            let (store, stripe) = (store.clone(), stripe.clone());
            let e = event("evt_1", "customer.subscription.created", 1000, &sub("sub_1", "reuse", "active", 4));
            tokio::spawn(async move { apply(&store, &stripe, &e).await })
        };
        read.notified().await;
        members::create(&store, &t, &new_member(9, "late@example.test"), "late", Utc::now()).await.unwrap();
        proceed.notify_one();
        assert_eq!(pending.await.unwrap().recorded, Recorded::Applied);
        assert_eq!(stripe.reads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn stripe_down_changes_nothing_and_a_retry_applies() {
        let m = model();
        let (store, stripe) = (Memory::new(m.clone()), StripeAccount::default());
        let t = tenant("down");
        stripe.put(sub("sub_1", t.as_str(), "active", 2));
        stripe.fail(Some("HTTP 429 Too Many Requests"));
        let e = event("evt_1", "customer.subscription.created", 1000, &sub("sub_1", t.as_str(), "active", 2));
        let err = apply_event(&store, &stripe, &e, "h", Utc::now()).await.unwrap_err();
        assert!(matches!(err, Error::Upstream(ref u) if u.detail.contains("429")), "{err}");
        assert_eq!(store.commits.load(Ordering::SeqCst), 0, "nothing written");
        assert!(store.accepted_event(&t, Source::Stripe, &EventId::parse("evt_1").unwrap()).await.unwrap().is_none());
        stripe.fail(None);
        assert_eq!(apply(&store, &stripe, &e).await.recorded, Recorded::Applied);
        assert_eq!(apply(&store, &stripe, &e).await.recorded, Recorded::Duplicate);
    }

    #[tokio::test]
    async fn unknown_and_unmappable_subscriptions_are_parked_with_the_reason() {
        let m = model();
        let (store, stripe) = (Memory::new(m.clone()), StripeAccount::default());
        let t = tenant("parks");
        // Stripe does not know it (the snapshot names the tenant: audited there).
        let ghost = apply(&store, &stripe, &event("evt_1", "customer.subscription.updated", 1, &sub("sub_ghost", t.as_str(), "active", 1))).await;
        assert!(matches!(&ghost.recorded, Recorded::Parked { reason } if reason.contains("does not know")), "{ghost:?}");
        // A price the model does not map.
        stripe.put(subscription("sub_gold", Some(t.as_str()), "active", &[("gold_monthly", 1)], END));
        let gold = apply(&store, &stripe, &event("evt_2", "customer.subscription.created", 1, &sub("sub_gold", t.as_str(), "active", 1))).await;
        assert!(matches!(&gold.recorded, Recorded::Parked { reason } if reason.contains("gold_monthly")), "{gold:?}");
        // Nobody's: no tenant in Stripe's metadata, none in the snapshot.
        stripe.put(subscription("sub_orphan", None, "active", &[("team_monthly", 1)], END));
        let orphan = apply(&store, &stripe, &event("evt_3", "customer.subscription.created", 1, &subscription("sub_orphan", None, "active", &[], END))).await;
        assert!(matches!(&orphan.recorded, Recorded::Parked { reason } if reason.contains("tenant_id")), "{orphan:?}");
        assert_eq!(actions(&store, &t).await, [AuditAction::EventParked, AuditAction::EventParked]);
        // Parked once: the same event again changes nothing.
        let again = apply(&store, &stripe, &event("evt_2", "customer.subscription.created", 1, &sub("sub_gold", t.as_str(), "active", 1))).await;
        assert!(matches!(again.recorded, Recorded::Parked { .. } | Recorded::Duplicate), "{again:?}");
        assert_eq!(actions(&store, &t).await.len(), 2);
    }

    /// The same event through EventBridge and as a webhook (two
    /// serialisations): applied once.
    #[tokio::test]
    async fn one_event_by_two_routes_applies_once() {
        let m = model();
        let (store, stripe) = (Memory::new(m.clone()), StripeAccount::default());
        let t = tenant("routes");
        stripe.put(sub("sub_1", t.as_str(), "active", 2));
        let e = event("evt_1", "customer.subscription.created", 1000, &sub("sub_1", t.as_str(), "active", 2));
        let first = apply_event(&store, &stripe, &e, "webhook-body-hash", Utc::now()).await.unwrap();
        let second = apply_event(&store, &stripe, &e, "eventbridge-detail-hash", Utc::now()).await.unwrap();
        let recorded = |o: EventOutcome| match o {
            EventOutcome::Acted { outcome, .. } => outcome.recorded,
            other => panic!("{other:?}"),
        };
        assert_eq!((recorded(first), recorded(second)), (Recorded::Applied, Recorded::Duplicate));
        assert_eq!(stripe.reads.load(Ordering::SeqCst), 1);
    }

    fn run(id: &str, tenant: Option<&TenantId>) -> SyncRequest {
        SyncRequest { run_id: id.into(), tenant: tenant.cloned(), starting_after: None }
    }

    /// A change made in Stripe whose event never came: the run repairs it
    /// (cause billing_sync, the run id), leaves the rest unwritten, and a
    /// run stopped by its deadline goes on where it stopped.
    #[tokio::test]
    async fn a_sync_repairs_what_no_event_said_and_resumes_after_its_deadline() {
        let m = model();
        let (store, stripe) = (Memory::new(m.clone()), StripeAccount::default());
        let tenants: Vec<TenantId> = (0..5).map(|i| tenant(&format!("sync{i}"))).collect();
        for (i, t) in tenants.iter().enumerate() {
            let id = format!("sub_{i}");
            stripe.put(sub(&id, t.as_str(), "active", 2));
            apply(&store, &stripe, &event(&format!("evt_{i}"), "customer.subscription.created", 1, &sub(&id, t.as_str(), "active", 2))).await;
        }
        stripe.put(subscription("sub_nobody", None, "active", &[("team_monthly", 1)], END));
        // Changed in Stripe, no event: sub_1 to 6 seats, sub_3 canceled.
        stripe.put(sub("sub_1", tenants[1].as_str(), "active", 6));
        stripe.put(sub("sub_3", tenants[3].as_str(), "canceled", 2));
        let before = store.commits.load(Ordering::SeqCst);

        // Pages of 2, and a deadline that allows one page per part.
        let mut req = run("run-1", None);
        let mut parts = Vec::new();
        loop {
            let (report, _) = sync(&store, &stripe, &req, 2, || false, Utc::now()).await.unwrap();
            assert_eq!(report.pages, 1, "one page, then a clean stop");
            parts.push(report.clone());
            match report.continuation() {
                Some(next) => req = next,
                None => break,
            }
        }
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(|p| p.repaired).sum::<u32>(), 2);
        assert_eq!(parts.iter().map(|p| p.untenanted).sum::<u32>(), 1);
        assert_eq!(parts.iter().map(|p| p.listed).sum::<u32>(), 6, "each subscription listed once over the parts");
        assert_eq!(store.commits.load(Ordering::SeqCst) - before, 2, "only the differences are written");
        assert_eq!(held(&store, &tenants[1], "sub_1").await.seats, 6);
        assert_eq!(held(&store, &tenants[3], "sub_3").await.status, LicenseStatus::Canceled);
        let (records, _) = store.audit_page(&tenants[1], 0, 100).await.unwrap();
        let last: AuditRecord = serde_json::from_str(&records.last().unwrap().json).unwrap();
        assert_eq!((last.event.action, last.event.cause.kind, last.event.cause.id.as_str()), (AuditAction::LicenseRecorded, CauseKind::BillingSync, "run-1"));
        // A second run finds nothing to do.
        let (again, changed) = sync(&store, &stripe, &run("run-2", None), 100, || true, Utc::now()).await.unwrap();
        assert!(again.complete && again.repaired == 0 && changed.is_empty(), "{again:?}");
    }

    /// On demand for one tenant: only its subscriptions, and what we hold
    /// that Stripe no longer knows is reported.
    #[tokio::test]
    async fn a_one_tenant_sync_touches_only_that_tenant() {
        let m = model();
        let (store, stripe) = (Memory::new(m.clone()), StripeAccount::default());
        let (a, b) = (tenant("sync-a"), tenant("sync-b"));
        for (t, id) in [(&a, "sub_a"), (&a, "sub_a2"), (&b, "sub_b")] {
            stripe.put(sub(id, t.as_str(), "active", 1));
            apply(&store, &stripe, &event(&format!("evt_{id}"), "customer.subscription.created", 1, &sub(id, t.as_str(), "active", 1))).await;
        }
        stripe.put(sub("sub_a", a.as_str(), "active", 9));
        stripe.put(sub("sub_b", b.as_str(), "active", 9));
        stripe.remove("sub_a2");
        let (report, changed) = sync(&store, &stripe, &run("run-a", Some(&a)), 100, || true, Utc::now()).await.unwrap();
        assert_eq!((report.repaired, report.compared, report.unknown.clone()), (1, 1, vec!["sub_a2".to_string()]), "{report:?}");
        assert_eq!(changed.into_iter().collect::<Vec<_>>(), std::slice::from_ref(&a));
        assert_eq!(held(&store, &a, "sub_a").await.seats, 9);
        assert_eq!(held(&store, &b, "sub_b").await.seats, 1, "another tenant's difference waits for its own run");
    }
}

/// Fifty creations into twenty seats with reconciles racing them, five
/// times over: every account answered `active` is still active once
/// everything settles, no reconcile takes a seat from anyone, the counters
/// equal the members, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_seat_promised_at_creation_is_kept_through_racing_reconciles() {
    let m = model();
    for round in 0..5 {
        let store = Memory::new(m.clone());
        let t = tenant(&format!("promise-{round}"));
        seeded(&store, &t, 20, 0).await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let (store2, t2) = (store.clone(), t.clone());
            tasks.push(tokio::spawn(async move { members::create(&store2, &t2, &new_member(i, &format!("p{i}@example.test")), &format!("req-{i}"), Utc::now()).await.map(Some) }));
            if i % 4 == 0 {
                let (store2, t2) = (store.clone(), t.clone());
                tasks.push(tokio::spawn(async move { reconcile::reconcile(&store2, &t2, &cause("racing"), Utc::now()).await.map(|_| None) }));
            }
        }
        let mut promised = BTreeSet::new();
        for task in tasks {
            if let Some((view, _)) = task.await.unwrap().unwrap() {
                if view.status == MemberStatus::Active {
                    promised.insert(view.user_id);
                }
            }
        }
        assert_eq!(promised.len(), 20, "round {round}: exactly the seats claimed at creation");
        reconcile::reconcile(&store, &t, &cause("after"), Utc::now()).await.unwrap();
        let state = store.tenant(&t).await.unwrap().unwrap();
        let active: BTreeSet<UserId> = state.members.iter().filter(|x| x.access.status == MemberStatus::Active).map(|x| x.member.user_id.clone()).collect();
        assert_eq!(active, promised, "round {round}: the holders are the members told active");
        assert_eq!((state.meta.seats_used, state.meta.seats_pending), (20, 30));
        let (records, _) = store.audit_page(&t, 0, 100_000).await.unwrap();
        let taken = records
            .iter()
            .map(|r| serde_json::from_str::<AuditRecord>(&r.json).unwrap())
            .filter(|r| r.event.action == AuditAction::MemberAccessChanged && r.event.before.as_ref().is_some_and(|b| b["status"] == "active"))
            .count();
        assert_eq!(taken, 0, "round {round}: no reconcile took a seat");
        assert!(verified(&store, &t).await);
    }
}

/// The tenant's admin pins a seat, gives one from a named holder and
/// releases one; the reconciles after keep each decision, and a cut takes
/// the unpinned, most recently seated member's seat.
#[tokio::test]
async fn seats_given_by_the_tenants_admin_are_kept_through_reconciles_and_cuts() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("seats");
    seeded(&store, &t, 4, 5).await;
    let id = |i: usize| UserId::parse(format!("m{i:04}")).unwrap();
    let status = |i: usize| {
        let (store, t) = (store.clone(), t.clone());
        async move { store.member(&t, &id(i)).await.unwrap().unwrap().access.status }
    };
    // m0..m3 hold the four seats (created one after another), m4 waits.
    let req = |hold: bool, from: Option<usize>| SeatRequest { hold, from: from.map(id), by: Some("ann@acme.test".into()) };
    // The newest holder is pinned; the cut to three takes m2 instead.
    let pinned = seats::set_seat(&store, &t, &id(3), &req(true, None), Some("arn:aws:iam::1:role/app"), &Cause::api_call("pin-1"), Utc::now()).await.unwrap();
    assert_eq!(pinned.status, MemberStatus::Active);
    assert!(pinned.seat.as_ref().unwrap().pin.as_ref().unwrap().hold);
    licenses::record_change(&store, &crm_change(&t, 2, 3), "h2", Utc::now()).await.unwrap();
    reconcile::reconcile(&store, &t, &cause("cut"), Utc::now()).await.unwrap();
    assert_eq!((status(0).await, status(1).await, status(2).await, status(3).await), (MemberStatus::Active, MemberStatus::Active, MemberStatus::PendingSeat, MemberStatus::Active));
    // m4 gets m0's seat: m0 joins the line, behind m2 (cut earlier).
    let given = seats::set_seat(&store, &t, &id(4), &req(true, Some(0)), None, &Cause::api_call("give-1"), Utc::now()).await.unwrap();
    assert_eq!(given.status, MemberStatus::Active);
    assert_eq!(status(0).await, MemberStatus::PendingSeat);
    reconcile::reconcile(&store, &t, &cause("after-give"), Utc::now()).await.unwrap();
    assert_eq!((status(0).await, status(4).await), (MemberStatus::PendingSeat, MemberStatus::Active));
    // m1 released: its seat goes to the line (m2 first), not back to m1.
    let released = seats::set_seat(&store, &t, &id(1), &req(false, None), None, &Cause::api_call("release-1"), Utc::now()).await.unwrap();
    assert_eq!(released.status, MemberStatus::PendingSeat);
    reconcile::reconcile(&store, &t, &cause("after-release"), Utc::now()).await.unwrap();
    assert_eq!((status(1).await, status(2).await, status(0).await), (MemberStatus::PendingSeat, MemberStatus::Active, MemberStatus::PendingSeat));
    // Refusals: no free seat, and a `from` that holds none.
    let e = seats::set_seat(&store, &t, &id(0), &req(true, None), None, &Cause::api_call("no-seat"), Utc::now()).await.unwrap_err();
    assert!(matches!(&e, Error::Rejected(r) if r.kind == Kind::Conflict && r.code == "no_free_seat" && r.details["seats"] == json!({"total": 3, "used": 3})), "{e:?}");
    let e = seats::set_seat(&store, &t, &id(0), &req(true, Some(1)), None, &Cause::api_call("from-none"), Utc::now()).await.unwrap_err();
    assert!(matches!(&e, Error::Rejected(r) if r.code == "from_holds_no_seat"), "{e:?}");
    let meta = store.meta(&t).await.unwrap().unwrap();
    // Held: m2, m3, m4; in line: m0; released (out of the line): m1.
    assert_eq!((meta.seats_used, meta.seats_pending), (3, 1));
    // Each decision audited with who made it.
    let (records, _) = store.audit_page(&t, 0, 100_000).await.unwrap();
    let by_admin: Vec<AuditRecord> = records.iter().map(|r| serde_json::from_str::<AuditRecord>(&r.json).unwrap()).filter(|r| r.event.action == AuditAction::MemberSeatReassigned).collect();
    assert_eq!(by_admin.len(), 4, "pin, give (two members), release");
    assert!(by_admin.iter().all(|r| r.event.rule.contains("ann@acme.test")), "{by_admin:?}");
    assert!(by_admin[0].event.rule.contains("arn:aws:iam::1:role/app") && by_admin[0].event.cause.id == "pin-1");
    assert!(verified(&store, &t).await);
}

/// A reconcile decided on a snapshot taken before the tenant's admin gave a
/// seat cannot commit it: the member's revision moved.
#[tokio::test]
async fn a_reconcile_decided_before_a_seat_was_given_never_overrides_it() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("stale");
    seeded(&store, &t, 2, 3).await;
    // m0 and m1 hold the two seats, m2 waits; a seat pass reads the line.
    let stale_line = store.seat_order(&t, crate::core::seats::SeatList::Line, false, 1).await.unwrap();
    let req = SeatRequest { hold: true, from: Some(UserId::parse("m0000").unwrap()), by: None };
    seats::set_seat(&store, &t, &UserId::parse("m0002").unwrap(), &req, None, &Cause::api_call("give"), Utc::now()).await.unwrap();
    // A third seat: on its snapshot the seat pass gives it to m2, which would drop the pin.
    licenses::record_change(&store, &crm_change(&t, 2, 3), "h2", Utc::now()).await.unwrap();
    let access = crate::core::license::effective_license(&m, &store.tenant_head(&t).await.unwrap().unwrap().licenses);
    let steps = crate::core::reconcile::grant(&m, &access, &Default::default(), &stale_line, crate::core::seats::micros(Utc::now()));
    let chunks = crate::core::reconcile::chunks(steps, Default::default(), None, 3, 0, &cause("stale"));
    let writes: Vec<String> = chunks[0].members.iter().map(|(i, _, _)| i.member.user_id.to_string()).collect();
    assert_eq!(writes, ["m0002"]);
    let head = store.meta(&t).await.unwrap().unwrap().head;
    let change = reconcile::change_of(chunks[0].clone(), &[], Utc::now());
    assert!(matches!(store.commit(&t, Some(&head), &change).await, Err(ports::CommitError::Refused(_))));
    // Decided again on what is there now, the pin is kept and m0 gets the new seat.
    reconcile::reconcile(&store, &t, &cause("fresh"), Utc::now()).await.unwrap();
    let m2 = store.member(&t, &UserId::parse("m0002").unwrap()).await.unwrap().unwrap();
    assert!(m2.seat.pinned() && m2.access.status == MemberStatus::Active);
    assert_eq!(store.member(&t, &UserId::parse("m0000").unwrap()).await.unwrap().unwrap().access.status, MemberStatus::Active);
}

/// A tenant whose members are all active and recorded in order: `n`
/// members on the CRM license (business tier), every tenth an admin.
async fn large(store: &Memory, t: &TenantId, seats: u32, n: usize) {
    licenses::record_change(store, &crm_change(t, 1, seats), "h1", Utc::now()).await.unwrap();
    reconcile::reconcile(store, t, &cause("seed"), Utc::now()).await.unwrap();
    for i in 0..n {
        let mut new = new_member(i, &format!("l{i}@example.test"));
        if i % 10 == 3 {
            new.groups.insert("admins".into());
        }
        members::create(store, t, &new, &format!("seed-{i}"), Utc::now()).await.unwrap();
    }
    reconcile::reconcile(store, t, &cause("seed"), Utc::now()).await.unwrap();
}

/// The members' access, by user.
async fn accesses(store: &Memory, t: &TenantId) -> BTreeMap<UserId, crate::core::access::MemberAccess> {
    store.tenant(t).await.unwrap().unwrap().members.into_iter().map(|x| (x.member.user_id, x.access)).collect()
}

/// A tenant-wide change (a tier change, then a seat cut) walked page by
/// page, the process dying after every transaction: each retry goes on from
/// where the last stopped (the walk's place in `META`), and the end state is
/// the uninterrupted run's, each member's change audited once.
#[tokio::test]
async fn a_tenant_wide_change_interrupted_after_every_transaction_converges_with_nothing_doubled() {
    let m = model();
    let store = Memory::new(m.clone());
    let (crashed, control) = (tenant("walk-crash"), tenant("walk-control"));
    let n = 2 * reconcile::WALK_PAGE + 37;
    for t in [&crashed, &control] {
        large(&store, t, n as u32, n).await;
        // Enterprise: every holder's entitlements change; then 150 fewer seats.
        let mut up = crm_change(t, 2, n as u32);
        up.update.tier = "enterprise".into();
        licenses::record_change(&store, &up, "h2", Utc::now()).await.unwrap();
    }
    reconcile::reconcile(&store, &control, &cause("tier"), Utc::now()).await.unwrap();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match reconcile::reconcile(&Crashing::after(&store, 1), &crashed, &cause("tier"), Utc::now()).await {
            Ok(_) => break,
            Err(e) => assert!(is_injected_crash(&e), "{e}"),
        }
        assert!(attempts < 1000, "no progress");
    }
    assert!(attempts > 3, "the walk took several transactions: {attempts}");
    assert_eq!(accesses(&store, &crashed).await, accesses(&store, &control).await, "the uninterrupted run's end state");
    let tier_changes = actions(&store, &crashed).await.iter().filter(|a| **a == AuditAction::MemberAccessChanged).count();
    assert_eq!(tier_changes, n, "each member's change audited once");
    // Now a cut, interrupted the same way.
    for t in [&crashed, &control] {
        let mut cut = crm_change(t, 3, (n - 150) as u32);
        cut.update.tier = "enterprise".into();
        licenses::record_change(&store, &cut, "h3", Utc::now()).await.unwrap();
    }
    reconcile::reconcile(&store, &control, &cause("cut"), Utc::now()).await.unwrap();
    while let Err(e) = reconcile::reconcile(&Crashing::after(&store, 1), &crashed, &cause("cut"), Utc::now()).await {
        assert!(is_injected_crash(&e), "{e}");
    }
    assert_eq!(accesses(&store, &crashed).await, accesses(&store, &control).await);
    let changes = actions(&store, &crashed).await.iter().filter(|a| **a == AuditAction::MemberAccessChanged).count();
    assert_eq!(changes, n + 150, "each cut audited once");
    let meta = store.meta(&crashed).await.unwrap().unwrap();
    assert_eq!((meta.seats_used as usize, meta.seats_pending), (n - 150, 150));
    assert!(verified(&store, &crashed).await);
}

/// Changes of single members while a walk is half done: a removal, a
/// creation and a seat pinned by the tenant's admin, on members the walk
/// has and has not reached yet. None is lost or overwritten by the walk.
#[tokio::test]
async fn a_member_change_during_a_tenant_wide_walk_is_neither_lost_nor_overwritten() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("walk-during");
    let n = 3 * reconcile::WALK_PAGE;
    large(&store, &t, n as u32 + 10, n).await;
    let mut up = crm_change(&t, 2, n as u32 + 10);
    up.update.tier = "enterprise".into();
    licenses::record_change(&store, &up, "h2", Utc::now()).await.unwrap();
    // The walk's first page (its transactions: the first carries the
    // tenant's new access), then the process dies.
    let per = crate::core::reconcile::members_per_chunk(0);
    let first_page = 1 + (reconcile::WALK_PAGE - (per - 1)).div_ceil(per);
    let err = reconcile::reconcile(&Crashing::after(&store, first_page), &t, &cause("tier"), Utc::now()).await.unwrap_err();
    assert!(is_injected_crash(&err), "{err}");
    let walked_to = store.meta(&t).await.unwrap().unwrap().walk.and_then(|w| w.after).expect("a walk half done");
    let (early, late) = (UserId::parse("m0001").unwrap(), UserId::parse(format!("m{:04}", n - 2)).unwrap());
    assert!(format!("MEM#{early}") <= walked_to && walked_to < format!("MEM#{late}"), "{walked_to}");
    members::remove(&store, &t, &late, "rm-late", Utc::now()).await.unwrap();
    members::remove(&store, &t, &early, "rm-early", Utc::now()).await.unwrap();
    let pinned = UserId::parse(format!("m{:04}", n - 1)).unwrap();
    seats::set_seat(&store, &t, &pinned, &SeatRequest { hold: true, from: None, by: Some("owner".into()) }, None, &Cause::api_call("pin"), Utc::now()).await.unwrap();
    members::create(&store, &t, &new_member(n + 1, "new@example.test"), "new", Utc::now()).await.unwrap();
    reconcile::reconcile(&store, &t, &cause("tier"), Utc::now()).await.unwrap();
    let after = accesses(&store, &t).await;
    assert_eq!((after[&early].status, after[&late].status), (MemberStatus::Deprovisioned, MemberStatus::Deprovisioned), "removals kept");
    let p = store.member(&t, &pinned).await.unwrap().unwrap();
    assert!(p.seat.pinned() && p.access.status == MemberStatus::Active && p.access.entitlements.contains_key("sso"), "{p:?}");
    let new = &after[&UserId::parse(format!("m{:04}", n + 1)).unwrap()];
    assert_eq!(new.status, MemberStatus::Active);
    // Everyone holding is on the new tier's entitlements.
    let tier = crate::core::license::effective_license(&m, &store.tenant_head(&t).await.unwrap().unwrap().licenses);
    assert!(after.values().filter(|a| a.holds_seat()).all(|a| a.entitlements == tier.entitlements));
    assert!(verified(&store, &t).await);
}

/// The seats a paged reconcile (the walk, then cuts and grants on the
/// stored seat order) leaves are those the whole-tenant decision gives, for
/// cuts and for seats added back, with pins and admins among the members.
#[tokio::test]
async fn the_stored_seat_order_decides_as_the_whole_tenant_decision_does() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("order");
    let n = 260;
    large(&store, &t, n as u32, n).await;
    for i in [7usize, 100, 250] {
        let user = UserId::parse(format!("m{i:04}")).unwrap();
        seats::set_seat(&store, &t, &user, &SeatRequest { hold: true, from: None, by: None }, None, &Cause::api_call("pin"), Utc::now()).await.unwrap();
    }
    for (version, seats) in [(2, 120u32), (3, 40), (4, 200), (5, 260)] {
        // What the whole-tenant decision says, on the state before this change.
        let before = store.tenant(&t).await.unwrap().unwrap();
        licenses::record_change(&store, &crm_change(&t, version, seats), &format!("h{version}"), Utc::now()).await.unwrap();
        let licenses = store.tenant_head(&t).await.unwrap().unwrap().licenses;
        let whole = crate::core::access::desired_access_with_rules(&m, &licenses, &before.rules(), &before.members, crate::core::seats::micros(Utc::now()));
        reconcile::reconcile(&store, &t, &cause("seats"), Utc::now()).await.unwrap();
        let paged = accesses(&store, &t).await;
        let held = |f: &dyn Fn(&UserId) -> bool| paged.keys().filter(|u| f(u)).cloned().collect::<BTreeSet<UserId>>();
        let want: BTreeSet<UserId> = whole.members.iter().filter(|(_, d)| d.access.holds_seat()).map(|(u, _)| u.clone()).collect();
        assert_eq!(held(&|u| paged[u].holds_seat()), want, "{seats} seats");
    }
}

/// A member's groups changed by the app: its roles follow at once (a
/// finance member on business becomes a billing admin), in one transaction
/// that reads the head and the member; a waiting member's place follows its
/// privilege; an unknown member is 404.
#[tokio::test]
async fn a_group_change_gives_the_roles_of_the_new_groups_at_once() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("update");
    seeded(&store, &t, 1, 2).await;
    let (seated, waiting) = (UserId::parse("m0000").unwrap(), UserId::parse("m0001").unwrap());
    let finance = crate::core::views::MemberUpdate { groups: Some(["finance".to_string()].into()), attributes: None };
    let commits = store.commits.load(std::sync::atomic::Ordering::SeqCst);
    let view = members::update(&store, &t, &seated, &finance, "upd-1", Utc::now()).await.unwrap();
    assert_eq!(store.commits.load(std::sync::atomic::Ordering::SeqCst) - commits, 1, "one transaction");
    assert!(view.roles.contains("billing-admin"), "{view:?}");
    let admins = crate::core::views::MemberUpdate { groups: Some(["admins".to_string()].into()), attributes: None };
    let w = members::update(&store, &t, &waiting, &admins, "upd-2", Utc::now()).await.unwrap();
    assert_eq!(w.status, MemberStatus::PendingSeat, "a group change moves no seat");
    assert!(store.member(&t, &waiting).await.unwrap().unwrap().seat.privileged, "its place in the line follows");
    // The same change again: nothing written.
    let commits = store.commits.load(std::sync::atomic::Ordering::SeqCst);
    members::update(&store, &t, &seated, &finance, "upd-3", Utc::now()).await.unwrap();
    assert_eq!(store.commits.load(std::sync::atomic::Ordering::SeqCst), commits);
    let e = members::update(&store, &t, &UserId::parse("nobody").unwrap(), &finance, "upd-4", Utc::now()).await.unwrap_err();
    assert!(matches!(e, Error::Rejected(r) if r.kind == Kind::NotFound));
    assert!(actions(&store, &t).await.contains(&AuditAction::MemberUpdated));
    assert!(verified(&store, &t).await);
}

/// Coalesced reconcile requests (`reconcile::wake`), whatever the
/// interleaving of the requests' steps (commit, then read the epoch and
/// send) with provision's (advance the epoch, then reconcile): a message
/// whose deduplication id was sent before is dropped, as SQS FIFO does
/// within its window (here: forever, the harshest case), and still every
/// account's record is chained by the reconciles of the messages delivered,
/// and fewer messages are delivered than accounts created.
#[tokio::test]
async fn coalesced_reconcile_requests_leave_no_change_behind_whatever_the_interleaving() {
    let m = model();
    for seed in 0..200u64 {
        let store = Memory::new(m.clone());
        let t = tenant(&format!("wake-{seed}"));
        seeded(&store, &t, 100, 0).await;
        let accounts = 12;
        // Each account: 0 = to commit, 1 = to request, 2 = done.
        let mut steps = vec![0u8; accounts];
        let (mut sent, mut delivered) = (BTreeSet::new(), std::collections::VecDeque::new());
        let mut provision_started = false;
        let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut next = |n: usize| {
            rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (rng >> 33) as usize % n
        };
        let mut reconciles = 0;
        loop {
            let open: Vec<usize> = (0..accounts).filter(|&i| steps[i] < 2).collect();
            if open.is_empty() && delivered.is_empty() && !provision_started {
                break;
            }
            // Provision's next step, or an account's.
            let provision_can = provision_started || !delivered.is_empty();
            if provision_can && (open.is_empty() || next(3) == 0) {
                if provision_started {
                    reconcile::reconcile(&store, &t, &cause("wake"), Utc::now()).await.unwrap();
                    reconciles += 1;
                    provision_started = false;
                } else {
                    delivered.pop_front();
                    store.advance_wake(&t).await.unwrap();
                    provision_started = true;
                }
                continue;
            }
            let i = open[next(open.len())];
            if steps[i] == 0 {
                members::create(&store, &t, &new_member(i, &format!("w{i}@example.test")), &format!("req-{i}"), Utc::now()).await.unwrap();
            } else {
                reconcile::wake(&store, &store, &t, Cause::new(CauseKind::ApiCall, format!("req-{i}")), &format!("own-{i}")).await.unwrap();
                let (_, dedup) = store.queued.lock().unwrap().last().cloned().unwrap();
                if sent.insert(dedup.clone()) {
                    delivered.push_back(dedup);
                }
            }
            steps[i] += 1;
        }
        let (_, pending) = store.pending_audit(&t, usize::MAX).await.unwrap();
        assert!(pending.is_empty(), "seed {seed}: {} records left unchained", pending.len());
        assert_eq!(created_subjects(&store, &t).await.len(), accounts, "seed {seed}");
        assert!(verified(&store, &t).await);
        assert!(reconciles <= accounts, "seed {seed}: {reconciles} reconciles");
    }
}

/// The wake epoch: none before provision first advanced it (the request is
/// its own message), then one id per epoch, a new one after each advance;
/// a tenant without `META` has none to advance.
#[tokio::test]
async fn a_wake_is_coalesced_within_an_epoch_and_new_after_provision_started() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = tenant("wake-ids");
    seeded(&store, &t, 10, 0).await;
    let dedups = |store: &Memory| store.queued.lock().unwrap().iter().map(|(_, d)| d.clone()).collect::<Vec<_>>();
    for i in 0..4 {
        if i == 1 || i == 3 {
            store.advance_wake(&t).await.unwrap();
        }
        reconcile::wake(&store, &store, &t, Cause::new(CauseKind::ApiCall, format!("r{i}")), &format!("own-{i}")).await.unwrap();
    }
    assert_eq!(dedups(&store), ["own-0", "wake:wake-ids:1", "wake:wake-ids:1", "wake:wake-ids:2"]);
    let unknown = tenant("wake-unknown");
    store.advance_wake(&unknown).await.unwrap();
    assert_eq!(store.wake_epoch(&unknown).await.unwrap(), None);
}
