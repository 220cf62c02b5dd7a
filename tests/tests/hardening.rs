//! What a security review found, one test each (each failed before its fix):
//! a case-variant email taking over another member's SCIM user, a hostile
//! or broken SCIM target, server-side request forgery through a target's
//! URL, a forged sweep time, alias and copy bombs in amendments, privileges
//! the code does not use, approvals without an identity, and parked events
//! without an audit record. (The tests that wait on observable marks instead
//! of sleeping are in the files of their features.)

use chrono::Utc;
use entitle::adapters::scim_client::{http_client, Scim, ScimClient};
use entitle::adapters::secrets::TokenStore;
use entitle::app::delivery::{Deliverer, TargetBudget};
use entitle::core::audit::{Cause, CauseKind};
use entitle::core::egress::EgressPolicy;
use entitle::core::ids::TenantId;
use entitle::core::scim::{DesiredUser, Mapping, Policy};
use entitle::core::scim::{Known, MemberOf, TargetError};
use entitle_tests::hostile::{Behaviour, HostileTarget};
use entitle_tests::runtime::{binary, invoke_once};
use entitle_tests::{member_body, stripe_event, unique, FaultProxy, Stack};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A subscription in Stripe (localstripe announces it to ingest).
async fn licensed(s: &Stack, t: &str, plan: &str, seats: u64) {
    s.billing.subscribe(Some(t), plan, seats).await;
    s.tenant_where(t, "the license", |v| v["seats"]["total"] == seats).await;
}

fn member(user: &str, email: &str) -> Value {
    json!({"user_id": user, "email": email, "groups": [], "attributes": {}})
}

fn target_body(base: &str, token: &str) -> Value {
    json!({"base_url": base, "token": token, "mapping": {"group_prefix": "entitle-"}})
}

/// Waits until the target's view satisfies `pred`.
async fn target_where(s: &Stack, t: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    s.eventually(what, || async {
        let v = s.target(t, "idp").await;
        (pred(&v), v)
    })
    .await
}

// 1. Account takeover through a case-variant email.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn member_emails_are_unique_per_tenant_whatever_their_case() {
    let s = Stack::connect().await;
    let t = unique("email");
    licensed(&s, &t, "team_monthly", 10).await;
    assert_eq!(s.create_member(&t, &member("admin", "admin@corp.example")).await.0, 201);
    let (code, err) = s.create_member(&t, &member("mallory", "ADMIN@corp.example")).await;
    assert_eq!((code, err["error"]["code"].as_str()), (409, Some("email_taken")), "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("ADMIN@corp.example"), "{err}");
    assert_eq!(s.member(&t, "mallory").await.0, 404, "nothing stored for the refused account");
    assert_eq!(s.audit(&t).await.iter().filter(|r| r["action"] == "member_created").count(), 1);
    // The same address in another tenant is another tenant's business.
    let other = unique("email-other");
    licensed(&s, &other, "team_monthly", 2).await;
    assert_eq!(s.create_member(&other, &member("admin", "Admin@Corp.Example")).await.0, 201);

    // Racing case variants of one address: exactly one account gets it.
    let shared = std::sync::Arc::new(Stack::connect().await);
    let racers: Vec<_> = ["race@corp.example", "RACE@corp.example", "Race@Corp.Example", "race@CORP.EXAMPLE", "rAcE@corp.example", "RACE@CORP.EXAMPLE"]
        .iter()
        .enumerate()
        .map(|(i, email)| {
            let (s, t, email) = (shared.clone(), t.clone(), email.to_string());
            tokio::spawn(async move { s.create_member(&t, &member(&format!("racer{i}"), &email)).await })
        })
        .collect();
    let mut codes = Vec::new();
    for r in racers {
        let (code, body) = r.await.unwrap();
        assert!(code == 201 || (code == 409 && body["error"]["code"] == "email_taken"), "{code} {body}");
        codes.push(code);
    }
    assert_eq!(codes.iter().filter(|c| **c == 201).count(), 1, "{codes:?}");

    // Removing an account frees its address.
    assert_eq!(s.delete_member(&t, "admin").await.0, 200);
    assert_eq!(s.create_member(&t, &member("admin2", "Admin@corp.example")).await.0, 201);
    assert!(s.verify(&t).await["ok"].as_bool().unwrap());
}

#[tokio::test]
async fn a_target_user_that_belongs_to_someone_else_is_never_adopted() {
    let s = Stack::connect().await;
    let t = unique("adopt");
    let scim = s.scim(&t);
    licensed(&s, &t, "team_monthly", 5).await;
    // On the target before Entitle: carol's address, held by another
    // system's user (its externalId is not ours), and dave's, unclaimed.
    let carol_foreign = scim.create_user("carol@example.test", Some("okta-00ucarol")).await;
    let dave_before = scim.create_user("dave@example.test", None).await;
    for u in ["carol", "dave"] {
        assert_eq!(s.create_member(&t, &member_body(u, &[])).await.0, 201);
    }
    let (code, put) = s.put_target(&t, "idp", &target_body(&scim.base, &s.scim_token)).await;
    assert_eq!(code, 201, "{put}");
    // The first sync (a drift repair) adopts dave and parks carol.
    let v = target_where(&s, &t, "carol parked by the first sync", |v| v["parked"].as_array().is_some_and(|p| p.iter().any(|x| x["user_id"] == "carol"))).await;
    let reason = v["parked"].as_array().unwrap().iter().find(|p| p["user_id"] == "carol").unwrap()["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("okta-00ucarol") && reason.contains("not adopted"), "{reason}");
    s.eventually("dave adopted", || async {
        let v = scim.view().await;
        (v.get("dave@example.test").is_some_and(|d| d.external_id.as_deref() == Some("dave") && !d.groups.is_empty()), json!(format!("{v:?}")))
    })
    .await;
    let view = scim.view().await;
    assert_eq!(view["dave@example.test"].id, dave_before, "dave's own user was adopted, not duplicated");
    let carol = &view["carol@example.test"];
    assert_eq!((carol.id.as_str(), carol.external_id.as_deref()), (carol_foreign.as_str(), Some("okta-00ucarol")), "the foreign user is untouched");
    assert!(carol.groups.is_empty(), "{carol:?}");

    // A change delivered later meets the same refusal: erin's address is
    // held on the target for someone else too.
    scim.create_user("erin@example.test", Some("someone-else")).await;
    assert_eq!(s.create_member(&t, &member_body("erin", &[])).await.0, 201);
    target_where(&s, &t, "erin parked on delivery", |v| v["parked"].as_array().is_some_and(|p| p.iter().any(|x| x["user_id"] == "erin"))).await;
    assert_eq!(scim.view().await["erin@example.test"].external_id.as_deref(), Some("someone-else"));

    // Each decision not to adopt is audited with its reason.
    let audit = s.audit(&t).await;
    let parked: Vec<&Value> = audit.iter().filter(|r| r["action"] == "delivery_parked").collect();
    let subjects: BTreeSet<&str> = parked.iter().map(|r| r["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["member:carol", "member:erin"].into_iter().collect(), "{parked:?}");
    assert!(parked.iter().all(|r| r["rule"].as_str().unwrap().contains("not adopted")));
    assert!(s.verify(&t).await["ok"].as_bool().unwrap());
}

#[tokio::test]
async fn the_client_refuses_a_user_found_under_another_members_external_id() {
    let s = Stack::connect().await;
    let scim = s.scim(&unique("case"));
    let client = ScimClient::new(http_client(EgressPolicy::Local), &scim.base, s.scim_token.clone(), EgressPolicy::Local);
    let managed = entitle::core::scim::managed_groups(&Mapping::default(), &["member".to_string()]);
    let admin = scim.create_user("admin@corp.example", Some("u1")).await;
    let twin = DesiredUser {
        user_id: entitle::core::ids::UserId::parse("u2").unwrap(),
        user_name: "ADMIN@corp.example".into(),
        email: "ADMIN@corp.example".into(),
        keep_user_name: false,
        present: true,
        active: true,
        groups: ["member".to_string()].into(),
        enterprise: BTreeMap::new(),
    };
    // Looked up (externalId u2: none; userName, case-insensitively: u1's user).
    let err = client.sync_member(&twin, &managed, None).await.unwrap_err();
    assert!(matches!(&err, TargetError::Conflict { reason } if reason.contains("\"u1\"")), "{err}");
    // Told there is no such user: the POST meets 409, and the user it finds is not adopted.
    let err = client.sync_member(&twin, &managed, Some(Known { user: None, member_of: Some(MemberOf::default()) })).await.unwrap_err();
    assert!(matches!(err, TargetError::Conflict { .. }), "{err}");
    let (_, after) = scim.request(reqwest::Method::GET, &format!("/Users/{admin}"), None).await;
    assert_eq!((after["externalId"].as_str(), after["active"].as_bool().unwrap_or(true)), (Some("u1"), true), "u1's user is untouched: {after}");
    assert_eq!(scim.view().await.len(), 1, "and no second user was made");
    assert!(scim.group_id("member").await.is_none(), "nor any group joined");
}

// 2. A hostile or broken SCIM target.

#[tokio::test]
async fn what_a_target_sends_is_capped_in_size_pages_and_bytes() {
    let endless = HostileTarget::start(Behaviour::Endless).await;
    let client = ScimClient::new(http_client(EgressPolicy::Local), &endless.url, "t".into(), EgressPolicy::Local);
    let started = Instant::now();
    let err = client.users().await.unwrap_err();
    assert!(err.to_string().contains("larger than 8388608 bytes"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10), "cut off, not read to the end: {:?}", started.elapsed());

    let liar = HostileTarget::start(Behaviour::Claims { total: 1_000_000_000 }).await;
    let client = ScimClient::new(http_client(EgressPolicy::Local), &liar.url, "t".into(), EgressPolicy::Local);
    let err = client.users().await.unwrap_err();
    assert!(err.to_string().contains("totalResults 1000000000"), "{err}");
    assert_eq!(liar.requests.load(std::sync::atomic::Ordering::SeqCst), 1, "not one page more");

    // A plausible total, but more than the run may read.
    liar.set(Behaviour::Claims { total: 40_000 });
    let client = ScimClient::new(http_client(EgressPolicy::Local), &liar.url, "t".into(), EgressPolicy::Local).with_read_budget(256 * 1024);
    let err = client.users().await.unwrap_err();
    assert!(matches!(&err, TargetError::Unavailable { reason, .. } if reason.contains("read budget")), "{err}");
    assert!(liar.requests.load(std::sync::atomic::Ordering::SeqCst) < 30, "stopped at the budget");
}

/// A target that cannot remove many members from a group at once within the
/// request timeout (scim2-server searches a group of 10,000 once per removed
/// member): the removals go again in requests half the size, the client's
/// later requests stay at most the size that worked, and the next run's
/// client of the same target starts at what was learnt. Every member is
/// removed; none is dropped on the way.
#[tokio::test]
async fn removals_a_target_cannot_take_at_once_go_in_smaller_requests() {
    use entitle::core::scim::GroupChange;
    let slow = HostileTarget::start(Behaviour::SlowRemovals { members: 10 }).await;
    let learnt = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(entitle::adapters::scim_client::GROUP_BATCH));
    let client =
        |learnt| ScimClient::new(http_client(EgressPolicy::Local), &slow.url, "t".into(), EgressPolicy::Local).with_deadline(Instant::now() + Duration::from_secs(60)).with_removal_sizing(learnt);
    let first = client(learnt.clone());
    let leave = |n: std::ops::Range<usize>| n.map(|i| GroupChange { group: "entitle-member".into(), add: false, scim_user: format!("u{i}") }).collect::<Vec<_>>();
    first.apply_group_changes(&leave(0..40)).await.unwrap();
    let sizes = slow.removals.lock().unwrap().clone();
    assert_eq!(sizes, vec![(40, false), (20, false), (10, true), (10, true), (10, true), (10, true)], "halved until the target answers, then held");
    first.apply_group_changes(&leave(40..65)).await.unwrap();
    let sizes = slow.removals.lock().unwrap().clone();
    assert_eq!(sizes[6..], [(10, true), (10, true), (5, true)], "no larger than what worked");
    // The next run's client: no timeout to learn it again.
    client(learnt.clone()).apply_group_changes(&leave(65..77)).await.unwrap();
    let sizes = slow.removals.lock().unwrap().clone();
    assert_eq!(sizes[9..], [(10, true), (2, true)], "started at the size learnt");
    assert_eq!(learnt.load(std::sync::atomic::Ordering::SeqCst), 20, "a short last request answered in time does not lower what was learnt");
    let answered: usize = sizes.iter().filter(|(_, ok)| *ok).map(|(n, _)| n).sum();
    assert_eq!(answered, 77, "every member removed in an answered request");
}

/// A target that answers groups without `members` (as some do): the client
/// asks whether the group has members it does not list (`members pr`), and
/// when it has, the target has contradicted its (generic) profile: its
/// lists are not trusted, and a user's groups are unknown (Entitle then
/// enforces them) instead of taken for empty (which would never remove
/// anyone). An empty group is taken as empty.
#[tokio::test]
async fn a_group_answered_without_its_members_is_not_taken_for_empty() {
    let managed: BTreeSet<String> = ["entitle-member".to_string()].into();
    let hidden = HostileTarget::start(Behaviour::Unlisted { hidden: true }).await;
    let client = ScimClient::new(http_client(EgressPolicy::Local), &hidden.url, "t".into(), EgressPolicy::Local);
    assert_eq!(client.managed_member_of("u1", &managed).await.unwrap(), MemberOf::unknown(&managed), "not known: never taken for none");
    assert!(client.contradiction().is_some_and(|c| c.contains("entitle-member")), "{:?}", client.contradiction());

    let empty = HostileTarget::start(Behaviour::Unlisted { hidden: false }).await;
    let client = ScimClient::new(http_client(EgressPolicy::Local), &empty.url, "t".into(), EgressPolicy::Local);
    assert_eq!(client.managed_member_of("u1", &managed).await.unwrap(), MemberOf::default(), "confirmed empty");
    assert_eq!(client.managed_member_of("u2", &managed).await.unwrap(), MemberOf::default());
    assert!(client.contradiction().is_none());
    let paths = empty.paths.lock().unwrap().clone();
    assert_eq!(paths.len(), 2, "the group and the `members pr` question, once for the run: {paths:?}");
}

/// Two tenants' reconcile messages in one batch, the first tenant's target
/// hanging: the second tenant's change is delivered once the first target's
/// time budget is spent, and the hang is recorded as the first target's failure.
#[tokio::test]
async fn a_hanging_target_holds_up_other_tenants_no_longer_than_its_budget() {
    let s = Stack::connect().await;
    let (ta, tb) = (unique("hang"), unique("bystander"));
    let proxy = FaultProxy::start(&s.scim_url).await;
    let scim_b = s.scim(&tb);
    for t in [&ta, &tb] {
        licensed(&s, t, "team_monthly", 5).await;
    }
    assert_eq!(s.put_target(&ta, "idp", &target_body(&format!("{}/{ta}", proxy.url), &s.scim_token)).await.0, 201);
    assert_eq!(s.put_target(&tb, "idp", &target_body(&scim_b.base, &s.scim_token)).await.0, 201);
    for t in [&ta, &tb] {
        target_where(&s, t, "the first sync", |v| !v["health"]["last_repair_at"].is_null()).await;
        s.settle(t).await;
    }
    // Changes committed (with their delivery records), then both messages in one batch.
    proxy.set_hanging(true);
    let store = s.store();
    for (t, u) in [(&ta, "a1"), (&tb, "b1")] {
        let new: entitle::core::views::NewMember = serde_json::from_value(member_body(u, &[])).unwrap();
        entitle::app::members::create(&store, &TenantId::parse(t.as_str()).unwrap(), &new, "direct", Utc::now()).await.unwrap();
    }
    let record = |t: &str, n: u32| {
        let body = serde_json::to_string(&entitle::core::reconcile::ReconcileRequest::new(TenantId::parse(t).unwrap(), Cause::new(CauseKind::ApiCall, "batch"))).unwrap();
        json!({"messageId": format!("m{n}-{t}"), "receiptHandle": "r", "body": body, "attributes": {"MessageGroupId": t, "ApproximateReceiveCount": "1"},
            "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:ReconcileQueue.fifo", "awsRegion": "us-east-1"})
    };
    let started = Instant::now();
    let (failed, answer) = s.invoke("provision", &json!({"Records": [record(&ta, 1), record(&tb, 2)]})).await;
    let took = started.elapsed();
    assert!(!failed, "{answer}");
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    // The local budget is 5 s (SCIM_TARGET_BUDGET_SECS); without it, the
    // hanging target took four 10 s tries.
    assert!(took < Duration::from_secs(15), "the batch took {took:?}");
    assert!(scim_b.view().await.contains_key("b1@example.test"), "the other tenant's change was delivered in the same batch");
    let a = s.target(&ta, "idp").await;
    assert_eq!(a["health"]["failures"], 1, "{a}");
    assert!(a["health"]["attempt_started_at"].is_null(), "the outcome replaced the attempt mark: {a}");
    assert_eq!(a["pending"], 1, "a1 waits for its target: {a}");
    proxy.set_hanging(false);
}

/// A run that dies while it talks to the target (killed, out of memory,
/// out of time) has recorded its attempt first: the next run counts it, and
/// a target that crashes every run is quarantined like any failing one.
#[tokio::test]
async fn a_run_that_dies_mid_delivery_still_counts_against_the_target() {
    let s = Stack::connect().await;
    let t = unique("died");
    let proxy = FaultProxy::start(&s.scim_url).await;
    licensed(&s, &t, "team_monthly", 5).await;
    assert_eq!(s.put_target(&t, "idp", &target_body(&format!("{}/{t}", proxy.url), &s.scim_token)).await.0, 201);
    target_where(&s, &t, "the first sync", |v| !v["health"]["last_repair_at"].is_null()).await;
    s.settle(&t).await;
    let tenant = TenantId::parse(t.as_str()).unwrap();
    let new: entitle::core::views::NewMember = serde_json::from_value(member_body("x", &[])).unwrap();
    entitle::app::members::create(&s.store(), &tenant, &new, "direct", Utc::now()).await.unwrap();
    let store = s.store();
    let tokens = TokenStore::new(s.secrets.clone(), "entitle-local/targets".into(), None);
    let directory = Scim::new(EgressPolicy::Local);
    let deliverer = Deliverer {
        store: &store,
        tokens: &tokens,
        directory: &directory,
        policy: Policy { quarantine_after: 2, retry_base_secs: 1, retry_max_secs: 1, quarantine_retry_secs: 3600 },
        budget: TargetBudget { time: Duration::from_secs(60), read_bytes: 1 << 20 },
    };
    proxy.set_hanging(true);
    for run in 1..=2u64 {
        tokio::time::sleep(Duration::from_millis(1100)).await; // past the policy's 1 s retry
                                                               // The run starts, reaches the hanging target, and dies there (its
                                                               // future dropped mid-request, as a killed process stops).
        let cause = Cause::new(CauseKind::Sweep, "crashing-run");
        let attempt_recorded = async {
            target_where(&s, &t, "the attempt recorded", |v| !v["health"]["attempt_started_at"].is_null()).await;
            tokio::time::sleep(Duration::from_millis(300)).await; // inside the request now
        };
        tokio::select! {
            finished = deliverer.deliver_tenant(&tenant, &[], &cause, Instant::now() + Duration::from_secs(120)) => panic!("the run against a hanging target finished: {finished:?}"),
            _ = attempt_recorded => {}
        }
        let v = s.target(&t, "idp").await;
        assert_eq!(v["health"]["failures"], run - 1, "not counted until the next run: {v}");
        // The next run finds the attempt that never finished, and counts it.
        let cause = Cause::new(CauseKind::Sweep, "next-run");
        let reports = deliverer.deliver_tenant(&tenant, &[], &cause, Instant::now() + Duration::from_secs(30)).await.unwrap();
        let v = s.target(&t, "idp").await;
        assert_eq!(v["health"]["failures"], run, "the crashed run was counted: {v} {reports:?}");
        assert!(v["health"]["last_error"].as_str().unwrap().contains("did not finish"), "{v}");
    }
    let v = s.target(&t, "idp").await;
    assert_eq!(v["status"], "quarantined", "{v}");
    let audit = s.audit(&t).await;
    let q: Vec<&Value> = audit.iter().filter(|r| r["action"] == "target_quarantined").collect();
    assert_eq!(q.len(), 1, "{q:?}");
    proxy.set_hanging(false);
}

/// A run cut off by its time budget in the middle of a member, after it
/// delivered others, made progress: the target is not counted as failing
/// (a large first sync is never quarantined for being large), it says more
/// follows, and the next runs deliver the rest.
#[tokio::test]
async fn a_run_cut_off_by_its_budget_after_progress_is_not_a_target_failure() {
    let s = Stack::connect().await;
    let t = unique("budget");
    licensed(&s, &t, "team_monthly", 400).await;
    s.settle(&t).await;
    let tenant = TenantId::parse(t.as_str()).unwrap();
    let store = s.store();
    let tokens = TokenStore::new(s.secrets.clone(), "entitle-local/targets".into(), None);
    let scim = s.scim(&t);
    // Configured and filled through the use cases: no reconcile is queued,
    // so only the runs below deliver.
    let config = serde_json::from_value::<entitle::core::scim::TargetConfig>(json!({"base_url": scim.base, "token": scim.token})).unwrap();
    let idp = entitle::core::ids::TargetId::parse("idp").unwrap();
    let setup = entitle::app::targets::TargetSetup { tenant: &tenant, target_id: &idp, config, egress: EgressPolicy::Local, request_id: "test" };
    entitle::app::targets::configure(&store, &tokens, setup, Utc::now()).await.unwrap();
    const MEMBERS: usize = 300;
    for i in 0..MEMBERS {
        let new: entitle::core::views::NewMember = serde_json::from_value(member_body(&format!("u{i:03}"), &[])).unwrap();
        entitle::app::members::create(&store, &tenant, &new, &format!("seed-{i}"), Utc::now()).await.unwrap();
    }
    let directory = Scim::new(EgressPolicy::Local);
    let deliverer = Deliverer {
        store: &store,
        tokens: &tokens,
        directory: &directory,
        policy: Policy { quarantine_after: 2, retry_base_secs: 1, retry_max_secs: 1, quarantine_retry_secs: 3600 },
        // A second: enough for one request of a loaded scim2-server (300 ms was
        // not, with other lanes of make test beside it), far from the 300 users.
        budget: TargetBudget { time: Duration::from_secs(1), read_bytes: 8 << 20 },
    };
    let mut runs = 0;
    loop {
        runs += 1;
        let cause = Cause::new(CauseKind::Sweep, format!("run-{runs}"));
        let reports = deliverer.deliver_tenant(&tenant, &[], &cause, Instant::now() + Duration::from_secs(60)).await.unwrap();
        let v = s.target(&t, "idp").await;
        assert!(reports.iter().all(|r| r.error.is_none() && r.standing.is_none()), "run {runs}: {reports:?}");
        assert_eq!((v["health"]["failures"].as_u64(), v["status"].as_str()), (Some(0), Some("healthy")), "run {runs}: {v}");
        if v["pending"] == 0 {
            break;
        }
        // What waits is not left to the next sweep: the run says more
        // follows (provision queues the tenant's next run at once).
        assert!(reports.iter().any(|r| r.more), "run {runs} left {} waiting without saying so: {reports:?}", v["pending"]);
        assert!(runs < 600, "no progress: {v}");
    }
    assert!(runs > 2, "the budget cut the first sync into runs ({runs})");
    let view = scim.view().await;
    assert_eq!(view.len(), MEMBERS, "every member on the target");
}

// 3. Server-side request forgery through a target's URL.

#[tokio::test]
async fn in_production_a_target_cannot_reach_loopback_private_or_metadata_addresses() {
    let s = Stack::connect().await;
    let client = |base: &str| ScimClient::new(http_client(EgressPolicy::Public), base, "t".into(), EgressPolicy::Public);
    // Addresses in the URL are refused before any connection.
    for base in ["https://169.254.169.254/latest", "https://[fd00:ec2::254]/", "http://127.0.0.1:1/x", "https://10.0.0.8/scim"] {
        let err = client(base).users().await.unwrap_err();
        assert!(err.to_string().contains("not a public address"), "{base}: {err}");
    }
    // A name is checked where it resolves, when the connection is made: a
    // name that resolves to loopback (as a rebinding name would) is refused,
    // though a server is listening there.
    let port = s.scim_url.rsplit(':').next().unwrap().to_string();
    let err = client(&format!("http://localhost:{port}/x")).users().await.unwrap_err();
    assert!(err.to_string().contains("no public address"), "{err}");

    // The real ingest binary, configured as production is (no
    // SCIM_ALLOW_HTTP), refuses such targets at configuration.
    let t = unique("ssrf");
    licensed(&s, &t, "team_monthly", 1).await;
    let mut env = function_env(&s);
    env.remove("SCIM_ALLOW_HTTP");
    for (base, why) in [
        ("https://127.0.0.1:9001/scim", "port 443"),
        ("https://169.254.169.254/latest/meta-data", "not a public address"),
        ("https://[fd00:ec2::254]/scim", "not a public address"),
        ("https://scim.internal/v2", "internal name"),
        ("http://idp.example.com/scim", "https://"),
    ] {
        let event = url_event("PUT", &format!("/tenants/{t}/targets/idp"), Some(&target_body(base, "tok")));
        let out = invoke_once(binary("ingest"), &env, &event, Duration::from_secs(60)).await;
        let body: Value = serde_json::from_str(out.body["body"].as_str().unwrap()).unwrap();
        assert_eq!((out.body["statusCode"].as_u64(), body["error"]["code"].as_str()), (Some(422), Some("invalid_target")), "{base}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().contains(why), "{base}: {body}");
    }
    assert_eq!(s.targets(&t).await.1["targets"], json!([]), "nothing configured");
}

#[tokio::test]
async fn what_a_target_answers_is_never_shown_back_beyond_a_short_sanitised_detail() {
    let s = Stack::connect().await;
    let secret_page = "<html>AccessKeyId AKIAIOSFODNN7EXAMPLE SecretAccessKey wJalrXUtnFEMI/K7MDENG</html>";
    let hostile = HostileTarget::start(Behaviour::Answer { status: 400, body: secret_page.into() }).await;
    let client = ScimClient::new(http_client(EgressPolicy::Local), &hostile.url, "t".into(), EgressPolicy::Local);
    let err = client.users().await.unwrap_err();
    assert!(!err.to_string().contains("AKIA") && err.to_string().contains("answer not shown"), "{err}");

    // Through the stack: the target's health as GET .../targets shows it.
    let t = unique("echo");
    licensed(&s, &t, "team_monthly", 2).await;
    assert_eq!(s.put_target(&t, "idp", &target_body(&hostile.url, &s.scim_token)).await.0, 201);
    let v = target_where(&s, &t, "the failure recorded", |v| v["health"]["failures"].as_u64().unwrap_or(0) >= 1).await;
    let shown = v.to_string();
    assert!(!shown.contains("AKIA") && !shown.contains("SecretAccessKey"), "{shown}");
    assert!(v["health"]["last_error"].as_str().unwrap().contains("400"), "{v}");
    // A SCIM error's detail is shown, short and printable.
    hostile.set(Behaviour::Answer {
        status: 400,
        body: json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "400", "detail": format!("bad filter \u{7}{}", "z".repeat(400))}).to_string(),
    });
    let err = client.users().await.unwrap_err().to_string();
    assert!(err.contains("bad filter ?zzz") && err.len() < 260, "{err}");
}

// 4. A forged sweep time.

#[tokio::test]
async fn a_sweep_time_ahead_of_the_clock_is_refused_and_changes_nothing() {
    let s = Stack::connect().await;
    let t = unique("forge");
    // A monthly subscription whose period runs to 2099-06-01.
    let start: chrono::DateTime<Utc> = "2099-05-01T00:00:00Z".parse().unwrap();
    s.billing.subscribe_from(Some(&t), "team_monthly", 2, Some(start.timestamp())).await;
    s.tenant_where(&t, "the license", |v| v["status"] == "active" && v["expires_at"] == "2099-06-01T00:00:00Z").await;
    let before = s.audit(&t).await.len();

    // The real expiry-sweep binary, configured as production is.
    let mut env = function_env(&s);
    env.remove("SWEEP_ALLOW_FUTURE");
    let forged = json!({"version": "0", "id": unique("forged"), "detail-type": "Scheduled Event", "source": "aws.scheduler", "time": "2099-12-31T00:00:00Z", "detail": {}});
    let out = invoke_once(binary("expiry-sweep"), &env, &forged, Duration::from_secs(60)).await;
    assert!(out.failed, "{:?}", out.body);
    assert_eq!(out.body["errorType"], "FutureTime", "{:?}", out.body);
    assert!(out.body["errorMessage"].as_str().unwrap().contains("nothing applied"), "{:?}", out.body);
    assert_eq!(s.tenant(&t).await.1["status"], "active", "no license expired");
    assert_eq!(s.audit(&t).await.len(), before, "nothing audited, nothing dated in the future");

    // A catch-up run (a past instant) is fine. (Before the epoch: nothing
    // is due then, not even a target never repaired, which is due at the
    // epoch; a run that woke the other tests' targets would deliver to them
    // beside their own runs.)
    let past = json!({"version": "0", "id": unique("past"), "detail-type": "Scheduled Event", "source": "aws.scheduler", "time": "1969-01-01T00:00:00Z", "detail": {}});
    let out = invoke_once(binary("expiry-sweep"), &env, &past, Duration::from_secs(60)).await;
    assert!(!out.failed && out.body["complete"] == true, "{:?}", out.body);
}

// 5. Input budgets in amend.

#[tokio::test]
async fn alias_and_copy_bombs_are_refused_before_the_work_naming_the_limit() {
    let s = Stack::connect().await;
    let t = unique("bomb");
    let k = format!("k-{t}");
    let mut yaml = format!("contract_id: {k}\ntenant_id: {t}\nterm: {{start: 2026-01-01T00:00:00Z, end: 2090-01-01T00:00:00Z}}\ntier: team\nseats: 2\n");
    yaml.push_str("a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for i in 1..9 {
        let p = i - 1;
        yaml.push_str(&format!("a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"));
    }
    let started = Instant::now();
    let (code, e) = s.amend_yaml("/contracts", &yaml).await;
    assert_eq!((code, e["error"]["code"].as_str()), (413, Some("payload_too_large")), "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("65536"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(s.amend(&format!("/contracts/{k}"), None).await.0, 404, "nothing stored");

    let doc = json!({"contract_id": k, "tenant_id": t, "term": {"start": "2026-01-01T00:00:00Z", "end": "2090-01-01T00:00:00Z"}, "tier": "team", "seats": 2, "notes": ["x"]});
    assert_eq!(s.amend("/contracts", Some(&doc)).await.0, 201);
    let mut ops = vec![];
    for _ in 0..40 {
        ops.push(json!({"op": "copy", "from": "/notes", "path": "/notes/-"}));
    }
    let path = format!("/contracts/{k}/amendments");
    for dry in ["?dry_run=true", ""] {
        let started = Instant::now();
        let (code, e) = s.amend(&format!("{path}{dry}"), Some(&json!({"amendment_id": "bomb", "base_version": 1, "patch": ops}))).await;
        assert_eq!((code, e["error"]["code"].as_str()), (422, Some("invalid_amendment")), "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("262144 bytes"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let many: Vec<Value> = (0..501).map(|_| json!({"op": "test", "path": "/tier", "value": "team"})).collect();
    let (code, e) = s.amend(&path, Some(&json!({"amendment_id": "many", "base_version": 1, "patch": many}))).await;
    assert_eq!(code, 422, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("more than the 500 allowed"), "{e}");
    assert_eq!(s.amend(&format!("/contracts/{k}"), None).await.1["version"], 1, "nothing applied");
}

// 6. Least privilege, and secrets read at run time.

#[tokio::test]
async fn a_secret_name_planted_in_the_table_is_not_followed() {
    let s = Stack::connect().await;
    let (victim, attacker) = (unique("victim"), unique("planter"));
    let scim = s.scim(&attacker);
    for t in [&victim, &attacker] {
        licensed(&s, t, "team_monthly", 2).await;
    }
    // The victim's target holds a working token; the attacker's a wrong one.
    assert_eq!(s.put_target(&victim, "idp", &target_body(&s.scim(&victim).base, &s.scim_token)).await.0, 201);
    assert_eq!(s.put_target(&attacker, "idp", &target_body(&scim.base, "not-a-valid-token")).await.0, 201);
    target_where(&s, &attacker, "the wrong token refused", |v| v["health"]["failures"].as_u64().unwrap_or(0) >= 1).await;
    s.settle(&attacker).await;
    // Someone with write access to the table points the attacker's target
    // at the victim's secret.
    use aws_sdk_dynamodb::types::AttributeValue;
    let key = |k: &str, v: String| (k.to_string(), AttributeValue::S(v));
    let item = s.ddb.get_item().table_name(&s.tables.state).set_key(Some([key("pk", format!("T#{attacker}")), key("sk", "TARGET#idp".into())].into())).send().await.unwrap().item.unwrap();
    let mut stored: Value = serde_json::from_str(item["target"].as_s().unwrap()).unwrap();
    stored["secret_id"] = json!(format!("entitle-local/targets/{victim}/idp"));
    s.ddb
        .update_item()
        .table_name(&s.tables.state)
        .set_key(Some([key("pk", format!("T#{attacker}")), key("sk", "TARGET#idp".into())].into()))
        .update_expression("SET target = :t")
        .expression_attribute_values(":t", AttributeValue::S(stored.to_string()))
        .send()
        .await
        .unwrap();
    let (code, _) = s.repair(&attacker, "idp").await;
    assert_eq!(code, 202);
    let v = target_where(&s, &attacker, "another refused run", |v| v["health"]["failures"].as_u64().unwrap_or(0) >= 2).await;
    assert!(v["health"]["last_error"].as_str().unwrap().contains("refuses the token"), "its own (wrong) token was used: {v}");
    assert!(scim.view().await.is_empty(), "nothing reached the target with the victim's token");
}

#[tokio::test]
async fn webhook_secrets_are_read_at_run_time_and_rotate_without_a_deploy() {
    let s = Stack::connect().await;
    let id = s.settings["STRIPE_WEBHOOK_SECRET_ID"].clone();
    let t = unique("rotate");
    let rotated = entitle::core::signature::Secret::new(format!("whsec_rotated_{t}"));
    let sub = s.billing.subscribe(Some(&t), "team_monthly", 1).await;
    let event = stripe_event(&format!("evt_{}", t.replace('-', "")), "customer.subscription.updated", entitle_tests::now(), &sub);
    let body = serde_json::to_vec(&event).unwrap();
    let signed = || entitle::core::signature::sign(&rotated, entitle_tests::now(), &body);
    assert_eq!(s.post_signed("/stripe", "Stripe-Signature", &body, Some(signed())).await.0, 401, "not a secret yet");
    // Rotation: the new secret is added beside the current one.
    let current = s.secrets.get_secret_value().secret_id(&id).send().await.unwrap().secret_string.unwrap();
    s.secrets.put_secret_value().secret_id(&id).secret_string(format!("{current},whsec_rotated_{t}")).send().await.unwrap();
    let accepted = s
        .eventually("the rotated secret accepted", || async {
            let (code, answer) = s.post_signed("/stripe", "Stripe-Signature", &body, Some(signed())).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            (code == 200, answer)
        })
        .await;
    assert!(["applied", "unchanged"].contains(&accepted["status"].as_str().unwrap()), "{accepted}");
    s.secrets.put_secret_value().secret_id(&id).secret_string(current).send().await.unwrap();
}

#[tokio::test]
async fn the_accounts_deployment_of_ingest_runs_without_any_signing_secret() {
    let s = Stack::connect().await;
    let mut env = function_env(&s);
    env.retain(|k, _| !k.contains("SECRET_ID"));
    env.insert("INGEST_ROUTES".into(), "accounts".into());
    let t = unique("accounts");
    licensed(&s, &t, "team_monthly", 2).await;
    let event = url_event("POST", &format!("/tenants/{t}/members"), Some(&member_body("a", &[])));
    let out = invoke_once(binary("ingest"), &env, &event, Duration::from_secs(60)).await;
    assert_eq!(out.body["statusCode"], 201, "{:?}", out.body);
    let event = url_event("POST", "/stripe", Some(&json!({})));
    let out = invoke_once(binary("ingest"), &env, &event, Duration::from_secs(60)).await;
    assert_eq!(out.body["statusCode"], 404, "no webhook route here: {:?}", out.body);
}

/// Every action each function may take, by resource, exactly: what the
/// code calls and nothing else (the emulators enforce no IAM, so the
/// template is checked against this list; a change of the code's calls
/// changes both).
#[test]
fn the_template_grants_each_function_exactly_what_its_code_uses() {
    let template = template();
    let expected: BTreeMap<&str, BTreeMap<&str, Vec<&str>>> = [
        (
            "IngestWebhooksFunction",
            vec![("StateTable", vec!["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]), ("AuditTable", vec!["dynamodb:PutItem"]), ("ReconcileQueue", vec!["sqs:SendMessage"])],
        ),
        (
            "IngestAccountsFunction",
            vec![
                ("StateTable", vec!["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]),
                ("AuditTable", vec!["dynamodb:PutItem"]),
                ("ReconcileQueue", vec!["sqs:SendMessage"]),
                ("BillingQueue", vec!["sqs:SendMessage"]),
            ],
        ),
        (
            "BillingFunction",
            vec![
                ("StateTable", vec!["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]),
                ("AuditTable", vec!["dynamodb:PutItem"]),
                ("ReconcileQueue", vec!["sqs:SendMessage"]),
                ("BillingQueue", vec!["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:SendMessage"]),
            ],
        ),
        (
            "ProvisionFunction",
            vec![
                ("StateTable", vec!["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]),
                ("AuditTable", vec!["dynamodb:PutItem"]),
                ("ReconcileQueue", vec!["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:SendMessage"]),
                ("ReconcileDeadLetterQueue", vec!["sqs:SendMessage"]),
                ("ModelWorkQueue", vec!["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:SendMessage"]),
            ],
        ),
        // UpdateItem: a member token cached on the member's item (its token attributes only).
        ("AccessFunction", vec![("StateTable", vec!["dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem"]), ("AuditTable", vec!["dynamodb:Query"])]),
        // The public keys alone: no table, no queue.
        ("AccessPublicFunction", vec![]),
        (
            "DirectoryFunction",
            vec![
                ("StateTable", vec!["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]),
                ("AuditTable", vec!["dynamodb:PutItem"]),
                ("ReconcileQueue", vec!["sqs:SendMessage"]),
            ],
        ),
        // The admin's portal: links and sessions, and the account routes its pages stand for.
        (
            "PortalFunction",
            vec![
                ("StateTable", vec!["dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]),
                ("AuditTable", vec!["dynamodb:PutItem", "dynamodb:Query"]),
                ("ReconcileQueue", vec!["sqs:SendMessage"]),
            ],
        ),
        (
            "AdminFunction",
            vec![
                ("StateTable", vec!["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]),
                ("AuditTable", vec!["dynamodb:PutItem", "dynamodb:Query"]),
                ("ReconcileQueue", vec!["sqs:SendMessage"]),
                ("ReconcileDeadLetterQueue", vec!["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:ReceiveMessage"]),
                ("ModelWorkQueue", vec!["sqs:SendMessage"]),
            ],
        ),
        (
            "AmendFunction",
            vec![
                ("StateTable", vec!["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:UpdateItem"]),
                ("AuditTable", vec!["dynamodb:PutItem"]),
                ("ReconcileQueue", vec!["sqs:SendMessage"]),
            ],
        ),
        (
            "ExpirySweepFunction",
            vec![
                // Scan: once, the backfill of tenants stored before model versions were kept.
                ("StateTable", vec!["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query", "dynamodb:Scan", "dynamodb:UpdateItem"]),
                ("AuditTable", vec!["dynamodb:PutItem"]),
                ("ReconcileQueue", vec!["sqs:SendMessage"]),
                ("ModelWorkQueue", vec!["sqs:SendMessage"]),
            ],
        ),
    ]
    .into_iter()
    .map(|(f, grants)| (f, grants.into_iter().collect()))
    .collect();
    for (function, want) in &expected {
        let granted = grants(&template, function);
        for (resource, actions) in want {
            let got: Vec<&str> = granted.get(*resource).map(|a| a.iter().map(String::as_str).collect()).unwrap_or_default();
            assert_eq!(&got, actions, "{function} on {resource}");
        }
        let tables: Vec<&String> = granted.keys().filter(|r| r.ends_with("Table") || r.contains("Queue")).collect();
        for r in tables {
            assert!(want.contains_key(r.as_str()), "{function} holds grants on {r} its code never uses: {:?}", granted[r]);
        }
    }
    // The registry of licensing model versions (partition MODEL) is written
    // by the model tick (the sweep) alone: every other function that may
    // write the state table is denied it, and the sweep is not.
    for function in expected.keys() {
        let writes = grants(&template, function).get("StateTable").is_some_and(|a| a.iter().any(|x| x.ends_with("PutItem") || x.ends_with("UpdateItem")));
        let denied = denials(&template, function);
        let want = writes && *function != "ExpirySweepFunction";
        assert_eq!(denied.contains("MODEL"), want, "{function}: the registry's writes denied: {denied:?}");
    }
    // The tenants of each model version are listed from their index by the
    // sweep (rollouts, previews, counts) and admin; nobody scans for them.
    for function in ["ExpirySweepFunction", "AdminFunction"] {
        let on_index = grants(&template, function).get("StateTable/sub").cloned().unwrap_or_default();
        assert!(on_index.contains("dynamodb:Query"), "{function} queries its indexes: {on_index:?}");
        let text = template["Resources"][function]["Properties"]["Policies"].to_string();
        assert!(text.contains("/index/models"), "{function} may query the models index: {text}");
    }
    // IAM authorises a query of an index on the index's ARN, not the
    // table's: each index a function's code queries is granted to it (the
    // seat order: provision's reconciles and the portal's seats page; the
    // review queue: admin and the portal's overview; the due index: the sweep).
    for (function, index) in [("ProvisionFunction", "seats"), ("PortalFunction", "seats"), ("PortalFunction", "review"), ("AdminFunction", "review"), ("ExpirySweepFunction", "due")] {
        let on_index = grants(&template, function).get("StateTable/sub").cloned().unwrap_or_default();
        let text = template["Resources"][function]["Properties"]["Policies"].to_string();
        assert!(on_index.contains("dynamodb:Query") && text.contains(&format!("/index/{index}")), "{function} may query the {index} index: {text}");
    }
    // The audit signing key signs for the sweep (stored checkpoints), admin
    // and the portal (exports), and for nobody else.
    for function in expected.keys() {
        let on_key: Vec<String> = grants(&template, function).get("AuditSigningKey").map(|a| a.iter().cloned().collect()).unwrap_or_default();
        let want: &[&str] = match *function {
            "ExpirySweepFunction" => &["kms:Sign"],
            "AdminFunction" => &["kms:GetPublicKey", "kms:Sign"],
            "PortalFunction" => &["kms:Sign"],
            _ => &[],
        };
        assert_eq!(on_key, want, "{function} on the audit signing key");
    }
    // The token signing key signs for the access function's private
    // deployment only; the public one may read its public keys, never sign.
    for function in expected.keys() {
        let on_key: Vec<String> = grants(&template, function).get("TokenSigningKey").map(|a| a.iter().cloned().collect()).unwrap_or_default();
        let want: &[&str] = if *function == "AccessFunction" { &["kms:Sign"] } else { &[] };
        assert_eq!(on_key, want, "{function} on the token signing key");
    }
    let public = &template["Resources"]["AccessPublicFunction"]["Properties"]["Policies"];
    let statements: Vec<&Value> = public.as_array().unwrap().iter().flat_map(|p| p["Statement"].as_array().unwrap()).collect();
    assert_eq!(statements.len(), 1, "{public}");
    assert_eq!((statements[0]["Effect"].as_str(), statements[0]["Action"].as_str()), (Some("Allow"), Some("kms:GetPublicKey")));
    let on = statements[0]["Resource"].to_string();
    assert!(on.contains("TokenSigningKey") && on.contains("PreviousTokenSigningKeyArns") && !on.contains("AuditSigningKey"), "{on}");
    let env = &template["Resources"]["AccessPublicFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!((env["ACCESS_ROUTES"].as_str(), template["Resources"]["AccessPublicFunction"]["Properties"]["FunctionUrlConfig"]["AuthType"].as_str()), (Some("jwks"), Some("NONE")));
    assert_eq!(template["Resources"]["AccessFunction"]["Properties"]["Environment"]["Variables"]["ACCESS_ROUTES"].as_str(), Some("private"));
    // Nobody writes the audit table but with PutItem, and its own policy
    // denies changing or deleting a record to everyone.
    let audit = &template["Resources"]["AuditTable"]["Properties"]["ResourcePolicy"]["PolicyDocument"]["Statement"][0];
    assert_eq!((audit["Effect"].as_str(), audit["Principal"].as_str()), (Some("Deny"), Some("*")));
    let denied: Vec<&str> = audit["Action"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for action in ["dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:PartiQLUpdate", "dynamodb:PartiQLDelete"] {
        assert!(denied.contains(&action), "{action} is not denied on the audit table");
    }
    // Secrets are read at run time: no value is resolved into an environment,
    // and the accounts deployment gets none.
    let text = std::fs::read_to_string(format!("{}/../infra/template.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    assert!(!text.contains("{{resolve:"), "a secret value is pasted into the template");
    let accounts = &template["Resources"]["IngestAccountsFunction"]["Properties"]["Environment"]["Variables"];
    assert!(accounts.as_object().unwrap().keys().all(|k| !k.contains("SECRET_ID")), "{accounts}");
    // No SQS event of SAM's (it attaches AWSLambdaSQSQueueExecutionRole, on every queue).
    assert!(template["Resources"]["ProvisionFunction"]["Properties"].get("Events").is_none());
    assert!(!text.contains("SWEEP_ALLOW_FUTURE:"), "the template never lets the sweep travel in time");
}

// 7. Who approved.

#[tokio::test]
async fn approvals_record_the_authenticated_caller_and_four_eyes_hold() {
    let s = Stack::connect().await;
    let t = unique("eyes");
    let k = format!("k-{t}");
    let doc = json!({"contract_id": k, "tenant_id": t, "term": {"start": "2026-01-01T00:00:00Z", "end": "2090-01-01T00:00:00Z"}, "tier": "business", "seats": 10});
    assert_eq!(s.amend("/contracts", Some(&doc)).await.0, 201);
    let (alice, bob) = ("arn:aws:iam::123456789012:user/alice", "arn:aws:sts::123456789012:assumed-role/Approvers/bob");
    let cut = json!({"amendment_id": "cut", "base_version": 1, "submitted_by": "alice@example.test", "patch": [{"op": "replace", "path": "/seats", "value": 2}]});
    let (code, held) = s.invoke_url("amend", "POST", &format!("/contracts/{k}/amendments"), Some(&cut), Some(alice)).await;
    assert_eq!((code, held["status"].as_str()), (201, Some("pending_review")), "{held}");
    assert_eq!(held["submitted_by"], json!({"by": "alice@example.test", "principal": alice}));

    let approve = format!("/contracts/{k}/amendments/cut/approve");
    // The submitter's own identity, whatever name it gives.
    let (code, e) = s.invoke_url("amend", "POST", &approve, Some(&json!({"by": "someone.else@example.test", "reason": "ok"})), Some(alice)).await;
    assert_eq!((code, e["error"]["code"].as_str()), (403, Some("same_submitter")), "{e}");
    // Another identity giving the submitter's name.
    let (code, e) = s.invoke_url("amend", "POST", &approve, Some(&json!({"by": "Alice@example.test", "reason": "ok"})), Some(bob)).await;
    assert_eq!((code, e["error"]["code"].as_str()), (403, Some("same_submitter")), "{e}");
    assert_eq!(s.amend(&format!("/contracts/{k}"), None).await.1["version"], 1, "nothing applied");

    let (code, done) = s.invoke_url("amend", "POST", &approve, Some(&json!({"by": "bob@example.test", "reason": "renewal"})), Some(bob)).await;
    assert_eq!((code, done["status"].as_str()), (200, Some("applied")), "{done}");
    let decision = &done["decisions"][0];
    assert_eq!((decision["by"].as_str(), decision["principal"].as_str()), (Some("bob@example.test"), Some(bob)));
    let audit = s.audit(&t).await;
    let applied = audit.iter().find(|r| r["action"] == "amendment_applied").unwrap();
    assert!(applied["rule"].as_str().unwrap().contains(&format!("approved by bob@example.test ({bob})")), "{applied}");
}

// 8. Every decision not to change is audited.

#[tokio::test]
async fn a_parked_event_is_audited_in_its_tenants_chain() {
    let s = Stack::connect().await;
    let t = unique("parked");
    // A price the model does not map, on a subscription Stripe holds.
    let plan = format!("gold_{}", t.replace('-', "_"));
    s.billing.post("/v1/plans", &json!({"id": plan, "amount": 9900, "currency": "usd", "interval": "month", "product": {"name": "Gold"}})).await;
    let sub = s.billing.subscribe(Some(&t), &plan, 1).await;
    let event_id = format!("evt_{}", t.replace('-', ""));
    let gold = stripe_event(&event_id, "customer.subscription.created", entitle_tests::now(), &sub);
    let (code, body) = s.stripe(&gold).await;
    assert_eq!((code, body["status"].as_str()), (202, Some("parked")), "{body}");
    // localstripe's own webhook about it is parked too (its own event id).
    let audit = s
        .eventually("both deliveries parked", || async {
            let audit = s.audit(&t).await;
            (audit.len() == 2, json!(audit))
        })
        .await;
    let audit = audit.as_array().unwrap();
    let ours = audit.iter().find(|r| r["cause"]["id"] == event_id.as_str()).expect("our event's record");
    assert_eq!(ours["action"], "event_parked");
    assert!(ours["rule"].as_str().unwrap().contains(&plan), "{ours}");
    assert!(audit.iter().all(|r| r["action"] == "event_parked"), "{audit:?}");
    // Delivered again: parked once, audited once.
    assert_eq!(s.stripe(&gold).await.0, 202);
    assert_eq!(s.audit(&t).await.len(), 2);
    assert!(s.verify(&t).await["ok"].as_bool().unwrap());
    // The tenant is still unknown to accounts and reads.
    assert_eq!(s.create_member(&t, &member_body("a", &[])).await.0, 404);
    assert_eq!(s.tenant(&t).await.0, 404);
}

// Helpers for running a binary as production would have it.

/// The functions' environment of the local stack.
fn function_env(s: &Stack) -> HashMap<String, String> {
    let _ = s;
    entitle_tests::function_env()
}

/// A function URL event (payload format 2.0) without an IAM identity.
fn url_event(method: &str, path: &str, body: Option<&Value>) -> Value {
    entitle_tests::function_url_event("ingest", method, path, body, None)
}

/// The template as data (CloudFormation's short tags read as `{tag: value}`).
fn template() -> Value {
    let text = std::fs::read_to_string(format!("{}/../infra/template.yaml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    fn plain(v: serde_norway::Value) -> Value {
        match v {
            serde_norway::Value::Tagged(t) => json!({ t.tag.to_string().trim_start_matches('!'): plain(t.value) }),
            serde_norway::Value::Mapping(m) => Value::Object(m.into_iter().map(|(k, v)| (k.as_str().map(str::to_string).unwrap_or_else(|| format!("{k:?}")), plain(v))).collect()),
            serde_norway::Value::Sequence(s) => Value::Array(s.into_iter().map(plain).collect()),
            other => serde_json::to_value(other).unwrap(),
        }
    }
    plain(yaml)
}

/// The partition keys a function is denied writing on the state table
/// (its `Deny` statements' `dynamodb:LeadingKeys`).
fn denials(template: &Value, function: &str) -> BTreeSet<String> {
    let policies = template["Resources"][function]["Properties"]["Policies"].as_array().cloned().unwrap_or_default();
    let mut out = BTreeSet::new();
    for st in policies.iter().flat_map(|p| p["Statement"].as_array().cloned().unwrap_or_default()) {
        if st["Effect"] != "Deny" {
            continue;
        }
        let actions = st["Action"].to_string();
        assert!(["PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem"].iter().all(|a| actions.contains(a)), "{function}: every write denied: {actions}");
        let keys = &st["Condition"]["ForAnyValue:StringEquals"]["dynamodb:LeadingKeys"];
        out.extend(keys.as_array().cloned().unwrap_or_default().iter().filter_map(|k| k.as_str().map(str::to_string)));
    }
    out
}

/// A function's granted (allowed) actions by the logical id of the resource they are on.
fn grants(template: &Value, function: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let policies = template["Resources"][function]["Properties"]["Policies"].as_array().cloned().unwrap_or_default();
    for policy in policies {
        for st in policy["Statement"].as_array().cloned().unwrap_or_default().into_iter().filter(|st| st["Effect"] == "Allow") {
            let actions: Vec<String> = match &st["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a.iter().map(|x| x.as_str().unwrap().to_string()).collect(),
                _ => vec![],
            };
            let resources = match &st["Resource"] {
                Value::Array(r) => r.clone(),
                r => vec![r.clone()],
            };
            for r in resources {
                fn logical(r: &Value) -> Option<String> {
                    match r {
                        Value::Object(o) if o.contains_key("GetAtt") => o["GetAtt"].as_str().map(|s| s.split('.').next().unwrap().to_string()),
                        Value::Object(o) if o.contains_key("Ref") => o["Ref"].as_str().map(str::to_string),
                        Value::Object(o) if o.contains_key("Sub") => o["Sub"].as_str().and_then(|s| s.strip_prefix("${")).map(|s| s.split(['.', '}']).next().unwrap().to_string() + "/sub"),
                        // `!If [UsesTemplateTokenKey, !GetAtt Key.Arn, !Ref KeyArnParameter]`: the template's resource.
                        Value::Object(o) if o.contains_key("If") => logical(&o["If"][1]),
                        Value::String(s) => Some(s.clone()),
                        _ => None,
                    }
                }
                let logical = logical(&r);
                if let Some(l) = logical {
                    out.entry(l).or_default().extend(actions.iter().cloned());
                }
            }
        }
    }
    out
}
