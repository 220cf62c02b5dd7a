//! The use cases on the DynamoDB adapter and the provision consumer against
//! DynamoDB Local and moto with the real SDK clients: crashes between
//! chunks (a store that fails its Nth commit), concurrent seat claims racing
//! a reconcile, poison and failing messages on the dead-letter queue.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use entitle::adapters::dynamodb::Dynamo;
use entitle::app::memory::{crm_change, is_injected_crash, Crashing};
use entitle::app::ports::{Targets, Tenants};
use entitle::app::{audit, licenses, members, reconcile::reconcile, targets};
use entitle::core::access::{desired_access, MemberStatus};
use entitle::core::audit::{Cause, CauseKind};
use entitle::core::ids::{TenantId, UserId};
use entitle::core::reconcile::{members_per_chunk, MAX_TRANSACTION_ITEMS};
use entitle::core::views::NewMember;
use entitle_tests::{unique, Stack};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn new_member(i: usize) -> NewMember {
    NewMember {
        user_id: UserId::parse(format!("m{i:04}")).unwrap(),
        email: format!("m{i}@example.test"),
        groups: if i % 10 == 0 { ["finance".to_string()].into() } else { BTreeSet::new() },
        attributes: BTreeMap::new(),
    }
}

const MEMBERS_PER_CHUNK: usize = members_per_chunk(0);
// A chunk (three items per member change: member, audit record, event; the
// chain head; the tenant's record, its audit record and event) fits a transaction.
const _: () = assert!(3 * MEMBERS_PER_CHUNK + 4 <= MAX_TRANSACTION_ITEMS);

fn cause(id: &str) -> Cause {
    Cause::new(CauseKind::Reconcile, id)
}

/// A tenant with `members` accounts, all seated, reconciled.
async fn seeded(store: &Dynamo, prefix: &str, count: usize) -> TenantId {
    let t = TenantId::parse(unique(prefix)).unwrap();
    licenses::record_change(store, &crm_change(&t, 1, count as u32), "h1", Utc::now()).await.unwrap();
    reconcile(store, &t, &cause("seed"), Utc::now()).await.unwrap();
    for i in 0..count {
        members::create(store, &t, &new_member(i), "seed", Utc::now()).await.unwrap();
    }
    reconcile(store, &t, &cause("seed"), Utc::now()).await.unwrap();
    t
}

async fn verified(store: &Dynamo, t: &TenantId) -> bool {
    audit::verify(store, t).await.unwrap().unwrap().ok
}

async fn member_states(store: &Dynamo, t: &TenantId) -> BTreeMap<UserId, String> {
    let state = store.tenant(t).await.unwrap().unwrap();
    state.members.iter().map(|m| (m.member.user_id.clone(), serde_json::to_string(&m.access).unwrap())).collect()
}

#[tokio::test]
async fn a_crash_between_chunks_is_finished_by_the_next_attempt() {
    let s = Stack::connect().await;
    let store = s.store();
    const MEMBERS: usize = 130;
    let crashed = seeded(&store, "crash", MEMBERS).await;
    let control = seeded(&store, "control", MEMBERS).await;

    // Seats cut from 130 to 10: 120 members lose their seat, more than two chunks.
    for t in [&crashed, &control] {
        licenses::record_change(&store, &crm_change(t, 2, 10), "h2", Utc::now()).await.unwrap();
    }
    // The cut goes first (the last holders in the seat order, from the
    // `seats` index, a page at a time): its first transaction commits, then
    // the process dies.
    let err = reconcile(&Crashing::after(&store, 1), &crashed, &cause("cut"), Utc::now()).await.unwrap_err();
    assert!(is_injected_crash(&err), "{err}");

    // Half-applied, but consistent: counters match the members, the chain verifies.
    let state = store.tenant(&crashed).await.unwrap().unwrap();
    let active = state.members.iter().filter(|m| m.access.status == MemberStatus::Active).count();
    assert_eq!(active, MEMBERS - MEMBERS_PER_CHUNK, "the first transaction of the cut: {MEMBERS_PER_CHUNK} seats");
    assert_eq!(state.meta.seats_used as usize, active);
    assert!(verified(&store, &crashed).await);

    // The retry reads what was applied and finishes the rest.
    let outcome = reconcile(&store, &crashed, &cause("cut"), Utc::now()).await.unwrap();
    assert_eq!(outcome.member_changes, 120 - MEMBERS_PER_CHUNK);
    assert!(outcome.tenant_changed, "the tenant's new access goes after the cut");
    let full = reconcile(&store, &control, &cause("cut"), Utc::now()).await.unwrap();
    assert_eq!(full.member_changes, 120);
    // The cut a page of the seat order at a time, then the walk's
    // transaction; none exceeds DynamoDB's limit.
    let page = entitle::app::reconcile::SEAT_PAGE;
    assert_eq!(full.chunks, 1 + page.div_ceil(MEMBERS_PER_CHUNK) + (120 - page).div_ceil(MEMBERS_PER_CHUNK));

    // Same end state as the uninterrupted run, equal to desired access.
    let (a, b) = (member_states(&store, &crashed).await, member_states(&store, &control).await);
    assert_eq!(a.values().collect::<Vec<_>>(), b.values().collect::<Vec<_>>());
    let state = store.tenant(&crashed).await.unwrap().unwrap();
    let desired = desired_access(&s.model(), &state.licenses, &state.members, entitle::core::seats::micros(Utc::now()));
    for m in &state.members {
        assert_eq!(desired.members[&m.member.user_id].access, m.access);
    }
    assert_eq!(state.meta.seats_used, 10);
    assert_eq!(state.meta.seats_pending, 120);

    // Each member's change is audited exactly once, the chain verifies.
    let audit = s.audit(crashed.as_str()).await;
    let cut: Vec<_> = audit.iter().filter(|r| r["action"] == "member_access_changed" && r["cause"]["id"] == "cut").collect();
    assert_eq!(cut.len(), 120);
    let subjects: BTreeSet<_> = cut.iter().map(|r| r["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects.len(), 120);
    assert!(verified(&store, &crashed).await);
    // Each change's event item was written with it, once: as many as the
    // uninterrupted run wrote, and none twice.
    let (a, b) = (event_items(&s, &crashed).await, event_items(&s, &control).await);
    assert_eq!(a.len(), b.len());
    assert_eq!(a.iter().collect::<BTreeSet<_>>().len(), a.len(), "no event item twice");
}

/// The ids of the event items of a tenant (what the stream carries to the bus).
async fn event_items(s: &Stack, t: &TenantId) -> Vec<String> {
    let mut ids = Vec::new();
    let mut start = None;
    loop {
        let page = s
            .ddb
            .query()
            .table_name(&s.tables.state)
            .key_condition_expression("pk = :pk")
            .expression_attribute_values(":pk", AttributeValue::S(format!("EV#{t}")))
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        ids.extend(page.items.unwrap_or_default().iter().filter_map(|i| i.get("sk").and_then(|v| v.as_s().ok()).cloned()));
        match page.last_evaluated_key {
            Some(k) if !k.is_empty() => start = Some(k),
            _ => return ids,
        }
    }
}

/// Account creations write their audit records pending; the integrator
/// chains them. Stopped after any of its transactions, on DynamoDB Local,
/// it loses and doubles nothing: what it chained stays chained once, the
/// rest waits for the next run.
#[tokio::test]
async fn a_crash_of_the_integrator_loses_and_doubles_nothing() {
    let s = Stack::connect().await;
    let store = s.store();
    let t = seeded(&store, "integrator", 30).await;
    for i in 30..130 {
        members::create(&store, &t, &new_member(i), &format!("req-{i}"), Utc::now()).await.unwrap();
    }
    let pending = audit::verify(&store, &t).await.unwrap().unwrap().pending;
    assert_eq!(pending, 100);
    for crash_after in [0, 1] {
        let err = audit::integrate(&Crashing::after(&store, crash_after), &t, Utc::now()).await.unwrap_err();
        assert!(is_injected_crash(&err), "{err}");
        let v = audit::verify(&store, &t).await.unwrap().unwrap();
        assert!(v.ok, "{v:?}");
        // (Read from the table: the API's reader would have provision chain the rest.)
        let created = chained_creations(&store, &t).await.len();
        assert_eq!(created as u64 + v.pending, 130, "after a crash after {crash_after} transaction(s)");
    }
    audit::integrate(&store, &t, Utc::now()).await.unwrap();
    assert_eq!(chained_once(&store, &t).await, 130, "every account's record");
}

/// A backlog of pending records larger than a page, on DynamoDB Local (a
/// page of 5 here, of `PENDING_PAGE` in production): the tenant's head
/// holds the first page, in key order, and still every license (read after
/// the backlog, by a third query); the integrator and a reconcile chain the
/// whole backlog a page at a time, each record once.
#[tokio::test]
async fn a_backlog_of_pending_records_is_read_and_chained_a_page_at_a_time() {
    let s = Stack::connect().await;
    let store = s.store().with_pending_page(5);
    let t = seeded(&store, "backlog", 20).await;
    for i in 20..32 {
        members::create(&store, &t, &new_member(i), &format!("req-{i}"), Utc::now()).await.unwrap();
    }
    let (_, all) = store.pending_audit(&t, usize::MAX).await.unwrap();
    assert_eq!(all.len(), 12);
    let head = store.tenant_head(&t).await.unwrap().unwrap();
    let keys = |records: &[entitle::core::audit::PendingRecord]| records.iter().map(|p| p.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&head.pending_audit), keys(&all[..5]), "the first page, in key order");
    assert_eq!(head.licenses.len(), 1, "the license after the backlog is read too: {:?}", head.licenses);
    assert_eq!(head.meta.seats_used, 20);
    let (_, page) = store.pending_audit(&t, 5).await.unwrap();
    assert_eq!(keys(&page), keys(&all[..5]));

    assert_eq!(audit::integrate(&store, &t, Utc::now()).await.unwrap(), 12);
    let v = audit::verify(&store, &t).await.unwrap().unwrap();
    assert!(v.ok && v.pending == 0, "{v:?}");
    for i in 32..43 {
        members::create(&store, &t, &new_member(i), &format!("req-{i}"), Utc::now()).await.unwrap();
    }
    reconcile(&store, &t, &cause("backlog"), Utc::now()).await.unwrap();
    assert_eq!(chained_once(&store, &t).await, 43, "every account's record");
}

/// A barrier waits behind the rest of a reconcile that stopped for time: a
/// seat cut spanning invocations marks `META.continues` and queues its rest
/// behind whatever the tenant had queued (a barrier among it). The barrier
/// is not reached while the mark stands; the rest runs, finishes the cut in
/// the seat order and clears the mark; then the barrier is reached.
#[tokio::test]
async fn a_barrier_waits_behind_the_rest_of_a_cut_that_spans_invocations() {
    let s = Stack::connect().await;
    let store = s.store();
    let t = seeded(&store, "barrier-cut", 6).await;
    // A reconcile of the cut to two seats stopped for time, as provision
    // leaves it: the mark set, the rest queued (below, behind the barrier).
    licenses::record_change(&store, &crm_change(&t, 2, 2), "h2", Utc::now()).await.unwrap();
    store.set_continues(&t, true).await.unwrap();
    let mark = s.send_barrier(t.as_str()).await;
    // Time for provision to take the barrier (well under a second when
    // idle) and put it back behind itself. On a loaded machine it may not
    // have yet: the check then proves less, and never fails wrongly.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(s.barrier_reached(t.as_str()).await.as_deref(), Some(mark.as_str()), "not reached while a reconcile's rest is queued");
    assert_eq!(store.meta(&t).await.unwrap().unwrap().seats_used, 6, "nothing cut yet");
    // The rest of the reconcile.
    entitle::app::ports::Queue::send(&s.queue(), &entitle::core::reconcile::ReconcileRequest::new(t.clone(), cause("rest")), &unique("rest")).await.unwrap();
    s.eventually(&format!("barrier {mark}"), || async {
        let seen = s.barrier_reached(t.as_str()).await;
        (seen.as_deref() == Some(mark.as_str()), serde_json::json!(seen))
    })
    .await;
    let state = store.tenant(&t).await.unwrap().unwrap();
    assert!(!state.meta.continues, "the reconcile that finished cleared the mark");
    assert_eq!(state.meta.seats_used, 2, "the cut was done before the barrier was reached");
    let active: BTreeSet<&str> = state.members.iter().filter(|m| m.access.status == MemberStatus::Active).map(|m| m.member.user_id.as_str()).collect();
    assert_eq!(active, ["m0000", "m0001"].into(), "the first two in the seat order keep their seats");
    assert!(state.members.iter().filter(|m| m.access.status != MemberStatus::Active).all(|m| m.access.status == MemberStatus::PendingSeat));
    assert!(verified(&store, &t).await);
}

/// Coalesced reconcile requests on the real peers: the wake epoch in
/// DynamoDB Local, SQS FIFO's deduplication in moto. A burst of creations
/// within one epoch is one message; after provision advanced the epoch, a
/// creation is a new one; the reconcile after the advance chains them all.
#[tokio::test]
async fn a_burst_of_creations_is_one_reconcile_message_per_epoch() {
    let s = Stack::connect().await;
    let store = s.store();
    let name = format!("{}.fifo", unique("wake"));
    let url = s.sqs.create_queue().queue_name(&name).attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true").send().await.unwrap().queue_url.unwrap();
    let queue = entitle::adapters::sqs::ReconcileQueue::new(s.sqs.clone(), url.clone());
    // What provision would be handed, taken off the queue as provision does
    // (a FIFO group hands out nothing more while a message of it is in flight).
    let received = || async {
        let out = s.sqs.receive_message().queue_url(&url).max_number_of_messages(10).visibility_timeout(300).wait_time_seconds(1).send().await.unwrap();
        let messages = out.messages.unwrap_or_default();
        for m in &messages {
            s.sqs.delete_message().queue_url(&url).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
        }
        messages.len()
    };
    let t = seeded(&store, "wake", 0).await;
    let wake = |i: usize| {
        let (store, queue, t) = (&store, &queue, &t);
        async move { entitle::app::reconcile::wake(store, queue, t, cause(&format!("r{i}")), &format!("own-{t}-{i}")).await }
    };
    assert_eq!(store.wake_epoch(&t).await.unwrap(), None);
    wake(0).await.unwrap();
    // Provision starts on the tenant: the epoch advances before its read.
    store.advance_wake(&t).await.unwrap();
    for i in 1..=5 {
        members::create(&store, &t, &new_member(i), &format!("req-{i}"), Utc::now()).await.unwrap();
        wake(i).await.unwrap();
    }
    assert_eq!(received().await, 2, "the first request, then the five creations as one message");
    store.advance_wake(&t).await.unwrap();
    assert_eq!(store.wake_epoch(&t).await.unwrap(), Some(2));
    reconcile(&store, &t, &cause("wake"), Utc::now()).await.unwrap();
    assert_eq!(chained_creations(&store, &t).await.len(), 5, "the reconcile after the advance chained every creation of the burst");
    members::create(&store, &t, &new_member(6), "req-6", Utc::now()).await.unwrap();
    wake(6).await.unwrap();
    assert_eq!(received().await, 1, "a creation after the advance is a new message");
}

/// How many accounts' `member_created` records are chained, once the chain
/// is checked: it verifies, nothing is pending, no account's record is
/// there twice.
async fn chained_once(store: &Dynamo, t: &TenantId) -> usize {
    let v = audit::verify(store, t).await.unwrap().unwrap();
    assert!(v.ok && v.pending == 0, "{v:?}");
    let subjects = chained_creations(store, t).await;
    let distinct = subjects.iter().collect::<BTreeSet<_>>().len();
    assert_eq!(subjects.len(), distinct, "no account's record chained twice");
    distinct
}

/// The subjects of the chained `member_created` records.
async fn chained_creations(store: &Dynamo, t: &TenantId) -> Vec<String> {
    let (records, _) = store.audit_page(t, 0, 10_000).await.unwrap();
    records
        .iter()
        .map(|r| serde_json::from_str::<entitle::core::audit::AuditRecord>(&r.json).unwrap())
        .filter(|r| r.event.action == entitle::core::audit::AuditAction::MemberCreated)
        .map(|r| r.event.subject)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_seat_claims_never_overbook_even_while_reconciling() {
    let s = Stack::connect().await;
    let store = Arc::new(s.store());
    let t = TenantId::parse(unique("race")).unwrap();
    licenses::record_change(&*store, &crm_change(&t, 1, 10), "h", Utc::now()).await.unwrap();
    reconcile(&*store, &t, &cause("init"), Utc::now()).await.unwrap();

    let mut tasks = Vec::new();
    for i in 0..30 {
        let (store, t) = (store.clone(), t.clone());
        tasks.push(tokio::spawn(async move { members::create(&*store, &t, &new_member(i), &format!("req-{i}"), Utc::now()).await.unwrap().0 }));
    }
    // Reconciles race the creations.
    for i in 0..5 {
        let (store, t) = (store.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            reconcile(&*store, &t, &cause(&format!("race-{i}")), Utc::now()).await.unwrap();
            entitle::core::views::MemberView::new(t.clone(), UserId::parse("none").unwrap(), &entitle::core::access::MemberAccess::without_access(MemberStatus::Suspended))
        }));
    }
    let mut active_at_creation = 0;
    for task in tasks {
        let view = task.await.unwrap();
        active_at_creation += usize::from(view.status == MemberStatus::Active);
    }
    assert_eq!(active_at_creation, 10);
    reconcile(&*store, &t, &cause("final"), Utc::now()).await.unwrap();
    let state = store.tenant(&t).await.unwrap().unwrap();
    let active = state.members.iter().filter(|m| m.access.status == MemberStatus::Active).count();
    assert_eq!((active, state.meta.seats_used, state.meta.seats_pending), (10, 10, 20));
    assert!(verified(&store, &t).await);
}

#[tokio::test]
async fn stale_changes_lose_whatever_the_interleaving() {
    let s = Stack::connect().await;
    let store = s.store();
    let t = TenantId::parse(unique("order")).unwrap();
    for (v, seats) in [(5, 50), (3, 30), (9, 90), (1, 10), (7, 70)] {
        licenses::record_change(&store, &crm_change(&t, v, seats), &format!("h{v}"), Utc::now()).await.unwrap();
    }
    let state = store.tenant(&t).await.unwrap().unwrap();
    assert_eq!((state.licenses[0].source_version, state.licenses[0].seats), (9, 90));
}

/// A license item nobody can read: every reconcile of this tenant fails.
async fn break_tenant(s: &Stack, t: &TenantId) {
    s.ddb
        .put_item()
        .table_name(&s.tables.state)
        .item("pk", AttributeValue::S(format!("T#{t}")))
        .item("sk", AttributeValue::S("LIC#crm#broken".into()))
        .item("license", AttributeValue::S("{\"broken\": true}".into()))
        .send()
        .await
        .unwrap();
}

async fn dead_letters(s: &Stack, wait_for: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let out =
            s.sqs.receive_message().queue_url(&s.dead_letter_queue_url).max_number_of_messages(10).message_attribute_names("All").visibility_timeout(0).wait_time_seconds(1).send().await.unwrap();
        for m in out.messages.unwrap_or_default() {
            if m.body().unwrap_or_default().contains(wait_for) {
                return vec![m];
            }
            seen.push(m);
        }
    }
    panic!("no dead letter containing {wait_for:?} (saw {})", seen.len());
}

fn attr(m: &aws_sdk_sqs::types::Message, name: &str) -> String {
    m.message_attributes().and_then(|a| a.get(name)).and_then(|v| v.string_value()).unwrap_or_default().to_string()
}

#[tokio::test]
async fn poison_messages_are_parked_with_their_cause_at_once() {
    let s = Stack::connect().await;
    let marker = unique("poison");
    s.sqs
        .send_message()
        .queue_url(&s.queue_url)
        .message_body(format!("{{\"not\": \"a reconcile\", \"marker\": \"{marker}\"}}"))
        .message_group_id(&marker)
        .message_deduplication_id(&marker)
        .send()
        .await
        .unwrap();
    let parked = dead_letters(&s, &marker).await;
    assert_eq!(attr(&parked[0], "error_code"), "malformed_message");
    assert!(attr(&parked[0], "error_message").contains("unknown field"), "{}", attr(&parked[0], "error_message"));
    assert_eq!(attr(&parked[0], "receive_count"), "1", "never retried");
}

#[tokio::test]
async fn a_message_that_keeps_failing_reaches_the_dead_letter_queue_after_bounded_receives() {
    let s = Stack::connect().await;
    let store = s.store();
    let t = TenantId::parse(unique("failing")).unwrap();
    licenses::record_change(&store, &crm_change(&t, 1, 5), "h", Utc::now()).await.unwrap();
    break_tenant(&s, &t).await;
    let body = serde_json::to_string(&entitle::core::reconcile::ReconcileRequest::new(t.clone(), cause("doomed"))).unwrap();
    s.sqs.send_message().queue_url(&s.queue_url).message_body(&body).message_group_id(t.as_str()).message_deduplication_id(t.as_str()).send().await.unwrap();
    let parked = dead_letters(&s, t.as_str()).await;
    assert_eq!(attr(&parked[0], "error_code"), "reconcile_failed");
    assert!(attr(&parked[0], "error_message").contains("LIC#crm#broken"), "{}", attr(&parked[0], "error_message"));
    assert_eq!(attr(&parked[0], "receive_count"), "5", "MAX_RECEIVES deliveries, then parked");
}

#[tokio::test]
async fn delivery_records_commit_with_their_changes_chunk_by_chunk() {
    let s = Stack::connect().await;
    let store = s.store();
    let tokens = entitle::adapters::secrets::TokenStore::new(s.secrets.clone(), "entitle-local/targets".into(), None);
    const MEMBERS: usize = 60;
    let t = seeded(&store, "records", MEMBERS).await;
    let config = |_id: &str| serde_json::from_value::<entitle::core::scim::TargetConfig>(serde_json::json!({"base_url": "http://127.0.0.1:9/never-called", "token": "t"})).unwrap();
    for id in ["idp-1", "idp-2"] {
        let tid = entitle::core::ids::TargetId::parse(id).unwrap();
        let setup = targets::TargetSetup { tenant: &t, target_id: &tid, config: config(id), egress: entitle::core::egress::EgressPolicy::Local, request_id: "test" };
        targets::configure(&store, &tokens, setup, Utc::now()).await.unwrap();
    }
    let per_chunk = members_per_chunk(2);
    assert!((2 + 2) * per_chunk + 2 <= MAX_TRANSACTION_ITEMS, "member, audit record and two delivery records per change");

    // 50 members lose their seat; the run dies after its first chunk.
    licenses::record_change(&store, &crm_change(&t, 2, 10), "h2", Utc::now()).await.unwrap();
    let err = reconcile(&Crashing::after(&store, 1), &t, &cause("cut"), Utc::now()).await.unwrap_err();
    assert!(is_injected_crash(&err), "{err}");
    let state = store.tenant(&t).await.unwrap().unwrap();
    let changed: BTreeMap<UserId, _> = state.members.iter().filter(|m| m.access.status != MemberStatus::Active).map(|m| (m.member.user_id.clone(), m.access.clone())).collect();
    assert_eq!(changed.len(), per_chunk, "the cut's first transaction: {per_chunk} members");
    for id in ["idp-1", "idp-2"] {
        // Exactly the committed changes have a delivery record, with the state they committed.
        let pending = store.pending(&t, &entitle::core::ids::TargetId::parse(id).unwrap()).await.unwrap();
        let recorded: BTreeMap<UserId, _> = pending.iter().map(|p| (p.member.user_id.clone(), p.access.clone())).collect();
        assert_eq!(recorded, changed, "{id}");
    }

    let outcome = reconcile(&store, &t, &cause("cut"), Utc::now()).await.unwrap();
    assert_eq!((outcome.member_changes, outcome.chunks), (50 - per_chunk, (50 - per_chunk).div_ceil(per_chunk) + 1), "the rest of the cut, then the tenant's new access");
    for id in ["idp-1", "idp-2"] {
        let pending = store.pending(&t, &entitle::core::ids::TargetId::parse(id).unwrap()).await.unwrap();
        assert_eq!(pending.len(), 50, "{id}: one record per changed member, however many chunks");
        assert!(pending.iter().all(|p| p.access.status == MemberStatus::PendingSeat));
    }
    // A newer change replaces a member's record (it holds the latest state, with a later seq).
    let before = store.pending(&t, &entitle::core::ids::TargetId::parse("idp-1").unwrap()).await.unwrap();
    let m0 = before.iter().find(|p| p.member.user_id.as_str() == "m0059").unwrap().seq;
    members::remove(&store, &t, &UserId::parse("m0059").unwrap(), "test", Utc::now()).await.unwrap();
    let after = store.pending(&t, &entitle::core::ids::TargetId::parse("idp-1").unwrap()).await.unwrap();
    let latest = after.iter().find(|p| p.member.user_id.as_str() == "m0059").unwrap();
    assert!(latest.seq > m0 && latest.member.removed && after.len() == 50);
    // Delivered with the old seq: not marked done (the newer state must still go out).
    assert!(!store.delivered(&t, &entitle::core::ids::TargetId::parse("idp-1").unwrap(), &UserId::parse("m0059").unwrap(), m0).await.unwrap());
    assert!(store.delivered(&t, &entitle::core::ids::TargetId::parse("idp-1").unwrap(), &UserId::parse("m0059").unwrap(), latest.seq).await.unwrap());

    // A removed target loses its records, and later changes write none for it.
    let idp2 = entitle::core::ids::TargetId::parse("idp-2").unwrap();
    let dropped = targets::remove(&store, &tokens, &t, &idp2, "test", Utc::now()).await.unwrap();
    assert_eq!(dropped, 50);
    members::remove(&store, &t, &UserId::parse("m0058").unwrap(), "test", Utc::now()).await.unwrap();
    assert!(store.pending(&t, &idp2).await.unwrap().is_empty());
    assert_eq!(store.pending(&t, &entitle::core::ids::TargetId::parse("idp-1").unwrap()).await.unwrap().len(), 49);
    let again = targets::remove(&store, &tokens, &t, &idp2, "test", Utc::now()).await.unwrap_err();
    assert!(matches!(&again, entitle::app::Error::Rejected(r) if r.kind == entitle::core::rejection::Kind::NotFound), "{again}");
    assert!(verified(&store, &t).await);
}

/// The batch handling of a FIFO queue: once a message of a group fails, the
/// later messages of that group in the batch are returned unprocessed (they
/// would overtake it), while other groups go on.
#[tokio::test]
async fn a_failed_message_holds_back_the_rest_of_its_group_and_no_other() {
    let s = Stack::connect().await;
    let store = s.store();
    let (broken, healthy) = (TenantId::parse(unique("fifo-broken")).unwrap(), TenantId::parse(unique("fifo-ok")).unwrap());
    for t in [&broken, &healthy] {
        licenses::record_change(&store, &crm_change(t, 1, 5), "h", Utc::now()).await.unwrap();
    }
    break_tenant(&s, &broken).await;
    let record = |id: &str, t: &TenantId| {
        let body = serde_json::to_string(&entitle::core::reconcile::ReconcileRequest::new(t.clone(), cause(id))).unwrap();
        serde_json::json!({"messageId": id, "receiptHandle": id, "body": body, "attributes": {"MessageGroupId": t.as_str(), "ApproximateReceiveCount": "1"},
            "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ReconcileQueue.fifo", "awsRegion": "us-east-1"})
    };
    let (a1, b1, a2) = (unique("a1"), unique("b1"), unique("a2"));
    let batch = serde_json::json!({"Records": [record(&a1, &broken), record(&b1, &healthy), record(&a2, &broken)]});
    let (failed, answer) = s.invoke("provision", &batch).await;
    assert!(!failed, "{answer}");
    let returned: Vec<&str> = answer["batchItemFailures"].as_array().unwrap().iter().map(|f| f["itemIdentifier"].as_str().unwrap()).collect();
    assert_eq!(returned, [a1.as_str(), a2.as_str()], "the failed message and the later one of its group come back, in order");
    // The other group was processed in the same batch.
    let (code, tenant) = s.tenant(healthy.as_str()).await;
    assert_eq!((code, tenant["seats"]["total"].as_u64()), (200, Some(5)), "{tenant}");
    assert!(store.meta(&broken).await.unwrap().unwrap().access.is_none(), "nothing of the failed group was applied");
}
