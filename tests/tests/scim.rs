//! SCIM targets end to end: the target API in ingest, delivery records
//! written with each change, provision delivering them to scim2-server (the
//! real binary), quarantine of a target that is down, drift repair, and the
//! events on the bus, validated against their documented schema.

use entitle::adapters::scim_client::{http_client, ScimClient};
use entitle::core::egress::EgressPolicy;
use entitle::core::scim::Known;
use entitle::core::scim::{DesiredUser, Mapping, MemberOf, ScimUser};
use entitle_tests::{assert_valid_events, member_body, unique, FaultProxy, Scim, SeenUser, Stack};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A sweep acts on everything due in the shared stack: the tests here that
/// reason about what a sweep finds hold this while they do.
static SWEEPS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A subscription in Stripe (localstripe announces it to ingest); its id.
async fn licensed(s: &Stack, t: &str, plan: &str, seats: u64) -> String {
    let sub = s.billing.subscribe(Some(t), plan, seats).await;
    s.tenant_where(t, "the license", |v| v["seats"]["total"] == seats).await;
    sub["id"].as_str().unwrap().to_string()
}

fn target_body(base: &str, token: &str) -> Value {
    json!({"base_url": base, "token": token, "mapping": {"group_prefix": "entitle-", "enterprise": {"department": "dept"}}})
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Waits (up to `secs`) until the target's users satisfy `pred`.
async fn scim_until(scim: &Scim, what: &str, secs: u64, pred: impl Fn(&BTreeMap<String, SeenUser>) -> bool) -> BTreeMap<String, SeenUser> {
    let start = Instant::now();
    loop {
        let view = scim.view().await;
        if pred(&view) {
            return view;
        }
        assert!(start.elapsed() < Duration::from_secs(secs), "timed out waiting for {what}; the target holds {view:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the target has nothing pending for the tenant.
async fn delivered(s: &Stack, t: &str, target: &str) -> Value {
    s.eventually(&format!("{target} to have nothing pending"), || async {
        let v = s.target(t, target).await;
        (v["pending"] == 0 && v["status"] == "healthy" && !v["health"]["last_success_at"].is_null(), v)
    })
    .await
}

fn user(email: &str) -> String {
    format!("{email}@example.test")
}

#[tokio::test]
async fn users_and_groups_follow_access_create_adopt_change_suspend_deprovision() {
    let s = Stack::connect().await;
    let tap = s.event_tap().await;
    let t = unique("scim");
    let scim = s.scim(&t);
    let sub = licensed(&s, &t, "business_monthly", 3).await;
    let mut a = member_body("a", &["finance"]);
    a["attributes"] = json!({"dept": "Finance"});
    for body in [a, member_body("b", &[]), member_body("c", &[])] {
        assert_eq!(s.create_member(&t, &body).await.0, 201);
    }
    s.statuses_are(&t, &[("a", "active"), ("b", "active"), ("c", "active")]).await;
    // b's account existed on the target before Entitle managed it.
    let b_before = scim.create_user(&user("b"), None).await;

    let (code, view) = s.put_target(&t, "idp", &target_body(&scim.base, &s.scim_token)).await;
    assert_eq!(code, 201, "{view}");
    assert_eq!(view["token"], "stored in AWS Secrets Manager");
    assert!(!view.to_string().contains(&s.scim_token), "the token never comes back");

    // The first repair creates a and c, adopts b, and fills the role groups.
    // (A user is created, then joins its groups: wait for the whole state.)
    let seen = scim_until(&scim, "a, b and c provisioned", 30, |v| {
        v.len() == 3 && v.values().all(|u| u.external_id.is_some()) && v[&user("a")].groups.len() == 2 && v.values().all(|u| u.groups.contains("entitle-member"))
    })
    .await;
    assert_eq!(seen[&user("a")].groups, set(&["entitle-member", "entitle-billing-admin"]));
    assert_eq!(seen[&user("a")].department.as_deref(), Some("Finance"), "enterprise extension mapped");
    assert_eq!((seen[&user("b")].id.as_str(), seen[&user("b")].external_id.as_deref()), (b_before.as_str(), Some("b")), "adopted, not duplicated");
    assert_eq!(seen[&user("c")].groups, set(&["entitle-member"]));
    assert!(seen.values().all(|u| u.active));
    delivered(&s, &t, "idp").await;

    // No seat, no account on the target.
    assert_eq!(s.create_member(&t, &member_body("d", &[])).await.1["status"], "pending_seat");
    delivered(&s, &t, "idp").await;
    assert!(!scim.view().await.contains_key(&user("d")));

    // Group membership follows roles: billing-admin needs business or above.
    s.billing.set_plan(&sub, "team_monthly", 3).await;
    assert_eq!(s.announce_update(&sub).await.0, 200);
    scim_until(&scim, "a to leave billing-admin", 90, |v| v[&user("a")].groups == set(&["entitle-member"])).await;

    // Cancellation downgrades to free (one seat): b and c are suspended on the target.
    s.billing.cancel(&sub).await;
    let seen = scim_until(&scim, "b and c suspended", 90, |v| ["b", "c"].iter().all(|u| !v[&user(u)].active && v[&user(u)].groups.is_empty())).await;
    assert!(seen[&user("a")].active);
    assert!(seen[&user("b")].groups.is_empty() && seen[&user("c")].groups.is_empty(), "{seen:?}");

    // Deprovision: the user is deleted, and out of every group first.
    let c_id = seen[&user("c")].id.clone();
    // The customer subscribes again (a new subscription, three seats): the
    // two free seats go to the line in order: d (waiting since it was
    // created), then b (cut before c); c waits, suspended on the target.
    s.billing.subscribe(Some(&t), "team_monthly", 3).await;
    let in_member = |v: &BTreeMap<String, SeenUser>, u: &str| v.get(&user(u)).is_some_and(|x| x.active && x.groups == set(&["entitle-member"]));
    let seen = scim_until(&scim, "b active again, d created", 30, |v| in_member(v, "b") && in_member(v, "d")).await;
    assert!(!seen[&user("c")].active, "{seen:?}");
    s.statuses_are(&t, &[("c", "pending_seat")]).await;
    assert_eq!(s.delete_member(&t, "c").await.0, 200);
    let seen = scim_until(&scim, "c deleted", 90, |v| !v.contains_key(&user("c"))).await;
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), [user("a"), user("b"), user("d")]);
    assert!(seen[&user("d")].active && seen[&user("d")].groups == set(&["entitle-member"]));
    let groups = scim.request(Method::GET, "/Groups", None).await.1;
    assert!(!groups.to_string().contains(&c_id), "no group keeps the deleted user: {groups}");
    delivered(&s, &t, "idp").await;

    assert!(s.verify(&t).await["ok"].as_bool().unwrap());
    let events: Vec<Value> = s.drain_events(&tap).await.into_iter().filter(|e| e["detail"]["tenant_id"] == t.as_str()).collect();
    assert!(events.iter().any(|e| e["detail-type"] == "member.access_changed" && e["detail"]["seat"] == "lost"), "{events:?}");
    assert_valid_events(&events);
}

#[tokio::test]
async fn a_target_that_is_down_is_quarantined_and_catches_up_and_tenants_never_cross() {
    let s = Stack::connect().await;
    let tap = s.event_tap().await;
    let (ta, tb) = (unique("down"), unique("other"));
    let (scim_a, scim_b) = (s.scim(&ta), s.scim(&tb));
    let proxy = FaultProxy::start(&s.scim_url).await;
    for t in [&ta, &tb] {
        licensed(&s, t, "team_monthly", 5).await;
    }
    assert_eq!(s.put_target(&ta, "idp", &target_body(&format!("{}/{ta}", proxy.url), &s.scim_token)).await.0, 201);
    assert_eq!(s.put_target(&tb, "idp", &target_body(&scim_b.base, &s.scim_token_2)).await.0, 201);
    for (t, users) in [(&ta, ["a1", "a2"]), (&tb, ["b1", "b2"])] {
        for u in users {
            assert_eq!(s.create_member(t, &member_body(u, &[])).await.0, 201);
        }
    }
    scim_until(&scim_a, "a1, a2", 30, |v| v.len() == 2).await;
    scim_until(&scim_b, "b1, b2", 30, |v| v.len() == 2).await;
    // (The first sync may create a user before its own change is delivered:
    // wait until nothing is pending, so that what waits below is exactly what
    // happens while the target is down.)
    delivered(&s, &ta, "idp").await;
    delivered(&s, &tb, "idp").await;

    // The target goes down; changes keep coming.
    proxy.set_up(false);
    assert_eq!(s.create_member(&ta, &member_body("a3", &[])).await.0, 201);
    assert_eq!(s.delete_member(&ta, "a1").await.0, 200);
    assert_eq!(s.create_member(&tb, &member_body("b3", &[])).await.0, 201);
    // Runs keep failing until the target is quarantined.
    let start = Instant::now();
    let quarantined = loop {
        let v = s.target(&ta, "idp").await;
        if v["status"] == "quarantined" {
            break v;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "not quarantined: {v}");
        s.deliver(&ta).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    };
    assert!(quarantined["health"]["failures"].as_u64().unwrap() >= 3, "{quarantined}");
    assert_eq!(quarantined["pending"], 2, "a3 created and a1 removed wait: {quarantined}");
    assert!(quarantined["health"]["last_error"].as_str().unwrap().contains("GET"), "{quarantined}");
    // The other tenant's target is not affected.
    scim_until(&scim_b, "b3 delivered while the other target is down", 90, |v| v.contains_key(&user("b3"))).await;
    assert_eq!(scim_a.view().await.keys().cloned().collect::<Vec<_>>(), [user("a1"), user("a2")], "nothing reached the down target");

    // Back up: it resumes by itself (the retries the sweep or any message
    // trigger) and catches up.
    proxy.set_up(true);
    let start = Instant::now();
    loop {
        let v = s.target(&ta, "idp").await;
        if v["status"] == "healthy" && v["pending"] == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "did not resume: {v}");
        s.deliver(&ta).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let a = scim_a.view().await;
    assert_eq!(a.keys().cloned().collect::<Vec<_>>(), [user("a2"), user("a3")], "a1 deleted, a3 created, each once");
    assert!(a.values().all(|u| u.active && u.groups == set(&["entitle-member"])), "{a:?}");
    // Isolation: each target holds its own tenant's users and no one else's.
    let b = scim_b.view().await;
    assert_eq!(b.keys().cloned().collect::<Vec<_>>(), [user("b1"), user("b2"), user("b3")]);
    let ext = |v: &BTreeMap<String, SeenUser>| v.values().map(|u| u.external_id.clone().unwrap()).collect::<BTreeSet<_>>();
    assert_eq!(ext(&a), set(&["a2", "a3"]));
    assert_eq!(ext(&b), set(&["b1", "b2", "b3"]));

    // The quarantine and the recovery are audited and announced.
    let audit = s.audit(&ta).await;
    let acts: Vec<&str> = audit.iter().filter_map(|r| r["action"].as_str()).filter(|a| a.starts_with("target_")).collect();
    assert!(acts.contains(&"target_quarantined") && acts.contains(&"target_resumed"), "{acts:?}");
    assert!(!s.audit(&tb).await.iter().any(|r| r["action"] == "target_quarantined"));
    let events: Vec<Value> = s.drain_events(&tap).await.into_iter().filter(|e| e["detail"]["tenant_id"] == ta.as_str() || e["detail"]["tenant_id"] == tb.as_str()).collect();
    let kinds: Vec<(&str, &str)> =
        events.iter().filter(|e| e["detail"]["type"].as_str().unwrap().starts_with("target.")).map(|e| (e["detail"]["tenant_id"].as_str().unwrap(), e["detail"]["type"].as_str().unwrap())).collect();
    assert_eq!(kinds, [(ta.as_str(), "target.quarantined"), (ta.as_str(), "target.resumed")], "{events:?}");
    assert_valid_events(&events);
}

#[tokio::test]
async fn a_change_committed_before_a_crash_is_delivered_by_the_sweep() {
    let s = Stack::connect().await;
    let t = unique("crash");
    let scim = s.scim(&t);
    licensed(&s, &t, "team_monthly", 5).await;
    assert_eq!(s.create_member(&t, &member_body("a", &[])).await.0, 201);
    let (code, put) = s.put_target(&t, "idp", &target_body(&scim.base, &s.scim_token)).await;
    assert_eq!(code, 201, "{put}");
    scim_until(&scim, "a", 90, |v| v.contains_key(&user("a"))).await;
    delivered(&s, &t, "idp").await;
    // The target's first sync was asked for last: once it ran, no message
    // for the tenant is in flight.
    repaired_by(&s, &t, &format!("api_call:{}", put["request_id"].as_str().unwrap())).await;

    // The change commits with its delivery record; then the process dies
    // before anything is queued or delivered.
    let _sweeps = SWEEPS.lock().await;
    let new: entitle::core::views::NewMember = serde_json::from_value(member_body("b", &[])).unwrap();
    let tenant = entitle::core::ids::TenantId::parse(&t).unwrap();
    let (view, created) = entitle::app::members::create(&s.store(), &tenant, &new, "crashed-request", chrono::Utc::now()).await.unwrap();
    assert!(created && view.status.as_str() == "active");
    assert_eq!(s.target(&t, "idp").await["pending"], 1);
    // Every message queued for the tenant so far is processed (a barrier
    // delivers nothing itself): nothing delivers without a trigger.
    s.settle(&t).await;
    assert!(!scim.view().await.contains_key(&user("b")), "nothing delivers without a trigger");
    assert_eq!(s.target(&t, "idp").await["pending"], 1);

    // The sweep finds the due delivery record and has provision deliver it.
    let report = s.sweep(chrono::Utc::now()).await;
    assert!(report["deliveries"].as_u64().unwrap() >= 1, "{report}");
    let seen = scim_until(&scim, "b delivered after the crash", 90, |v| v.contains_key(&user("b"))).await;
    assert_eq!((seen.len(), seen[&user("b")].external_id.as_deref()), (2, Some("b")));
    delivered(&s, &t, "idp").await;
}

#[tokio::test]
async fn drift_made_on_the_target_is_repaired_on_demand_and_on_schedule() {
    let s = Stack::connect().await;
    let t = unique("drift");
    let scim = s.scim(&t);
    licensed(&s, &t, "business_monthly", 3).await;
    for body in [member_body("a", &["finance"]), member_body("b", &[]), member_body("c", &[])] {
        assert_eq!(s.create_member(&t, &body).await.0, 201);
    }
    let (code, put) = s.put_target(&t, "idp", &target_body(&scim.base, &s.scim_token)).await;
    assert_eq!(code, 201, "{put}");
    let seen = scim_until(&scim, "a, b, c", 30, |v| v.len() == 3 && v.values().all(|u| u.groups.contains("entitle-member"))).await;
    delivered(&s, &t, "idp").await;
    repaired_by(&s, &t, &format!("api_call:{}", put["request_id"].as_str().unwrap())).await;

    // Behind Entitle's back: a deactivated, b out of its group, c deleted,
    // and a stranger added to billing-admin.
    let member = scim.group_id("entitle-member").await.unwrap();
    let billing = scim.group_id("entitle-billing-admin").await.unwrap();
    scim.patch(&format!("/Users/{}", seen[&user("a")].id), vec![entitle::core::scim::PatchOp::replace("active", json!(false))]).await;
    scim.patch(&format!("/Groups/{member}"), vec![entitle::core::scim::remove_member_op(&seen[&user("b")].id)]).await;
    scim.patch(&format!("/Groups/{member}"), vec![entitle::core::scim::remove_member_op(&seen[&user("c")].id)]).await;
    assert_eq!(scim.request(Method::DELETE, &format!("/Users/{}", seen[&user("c")].id), None).await.0, 204);
    let mallory = scim.create_user("mallory@example.test", None).await;
    scim.patch(&format!("/Groups/{billing}"), vec![entitle::core::scim::add_member_op(&mallory)]).await;

    let repairs = |audit: Vec<Value>| -> Vec<Value> { audit.into_iter().filter(|r| r["action"] == "target_repaired").collect() };
    let before = repairs(s.audit(&t).await).len();
    assert_eq!(before, 1, "the first sync is audited as a repair");
    let (code, body) = s.repair(&t, "idp").await;
    assert_eq!(code, 202, "{body}");
    let asked = format!("api_call:{}", body["request_id"].as_str().unwrap());
    let repaired = scim_until(&scim, "drift repaired", 90, |v| {
        v.len() == 4
            && v[&user("a")].active
            && v[&user("b")].groups == set(&["entitle-member"])
            && v.get(&user("c")).is_some_and(|c| c.groups == set(&["entitle-member"]))
            && v["mallory@example.test"].groups.is_empty()
    })
    .await;
    assert_eq!(repaired[&user("a")].groups, set(&["entitle-member", "entitle-billing-admin"]));
    assert!(repaired["mallory@example.test"].external_id.is_none(), "a user Entitle does not manage is left alone");
    let audit = s
        .eventually("the repair audited", || async {
            let r = repairs(s.audit(&t).await);
            (r.len() == 2, Value::Array(r))
        })
        .await;
    let record = &audit[1];
    assert_eq!(record["cause"]["kind"], "api_call");
    let fixed: BTreeSet<String> = record["after"]["repaired"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert_eq!(fixed, set(&["a", "b", "c"]), "{record}");
    assert_eq!(record["after"]["strangers_removed"], 1);
    // The requested repair ran (an earlier message may have repaired first);
    // messages are in order per tenant, so none older is still in flight.
    repaired_by(&s, &t, &asked).await;

    // On schedule: once the target's repair interval has passed, the sweep
    // has it repaired. (The test moves the last repair two hours back.)
    let b = repaired[&user("b")].id.clone();
    scim.patch(&format!("/Groups/{member}"), vec![entitle::core::scim::remove_member_op(&b)]).await;
    let _sweeps = SWEEPS.lock().await;
    age_last_repair(&s, &t, "idp", chrono::Duration::hours(2)).await;
    let report = s.sweep(chrono::Utc::now()).await;
    assert!(report["deliveries"].as_u64().unwrap() >= 1, "{report}");
    scim_until(&scim, "b back in its group", 90, |v| v[&user("b")].groups == set(&["entitle-member"])).await;
    // (Any sweep run: another test's run may have queued this tenant first.)
    repaired_by(&s, &t, "sweep:").await;
    s.eventually("the scheduled repair audited", || async {
        let audit = s.audit(&t).await;
        let r: Vec<Value> = audit.into_iter().filter(|r| r["action"] == "target_repaired" && r["cause"]["kind"] == "sweep").collect();
        (r.len() == 1, Value::Array(r))
    })
    .await;
    assert!(s.verify(&t).await["ok"].as_bool().unwrap());
}

/// Waits until the target's last complete repair was one `cause` (or a
/// cause starting with it) asked for. Messages are in order per tenant, so
/// none older is still in flight then.
async fn repaired_by(s: &Stack, t: &str, cause: &str) {
    s.eventually(&format!("a repair by {cause}"), || async {
        let v = s.target(t, "idp").await;
        (v["health"]["last_repair_cause"].as_str().is_some_and(|c| c.starts_with(cause)), v)
    })
    .await;
}

/// Moves a target's last repair back in time, and its wake-up time with it
/// (what the passing of the repair interval would do).
async fn age_last_repair(s: &Stack, t: &str, target: &str, by: chrono::Duration) {
    use aws_sdk_dynamodb::types::AttributeValue;
    let key = |k: &str, v: String| (k.to_string(), AttributeValue::S(v));
    let item = s.ddb.get_item().table_name(&s.tables.state).key("pk", AttributeValue::S(format!("T#{t}"))).key("sk", AttributeValue::S(format!("TARGET#{target}"))).send().await.unwrap().item.unwrap();
    let mut health: Value = serde_json::from_str(item["health"].as_s().unwrap()).unwrap();
    let last: chrono::DateTime<chrono::Utc> = health["last_repair_at"].as_str().unwrap().parse().unwrap();
    health["last_repair_at"] = json!(last - by);
    s.ddb
        .update_item()
        .table_name(&s.tables.state)
        .set_key(Some([key("pk", format!("T#{t}")), key("sk", format!("TARGET#{target}"))].into()))
        .update_expression("SET health = :h, due_at = :d")
        .expression_attribute_values(":h", AttributeValue::S(health.to_string()))
        .expression_attribute_values(":d", AttributeValue::N((chrono::Utc::now() - chrono::Duration::minutes(1)).timestamp().to_string()))
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn the_client_adopts_on_409_rereads_on_412_pages_and_honours_retry_after() {
    let s = Stack::connect().await;
    let scim = s.scim(&unique("client"));
    let client = ScimClient::new(http_client(EgressPolicy::Local), &scim.base, s.scim_token.clone(), EgressPolicy::Local);
    let managed = entitle::core::scim::managed_groups(&Mapping::default(), &["member".to_string(), "admin".to_string()]);
    let mut desired = DesiredUser {
        user_id: entitle::core::ids::UserId::parse("u1").unwrap(),
        user_name: user("u1"),
        email: user("u1"),
        keep_user_name: false,
        present: true,
        active: true,
        groups: set(&["member"]),
        enterprise: BTreeMap::new(),
    };

    // Our knowledge says there is no such user, but there is: POST meets
    // 409 uniqueness, and the user is adopted.
    let existing = scim.create_user(&user("u1"), None).await;
    let out = client.sync_member(&desired, &managed, Some(Known { user: None, member_of: Some(MemberOf::default()) })).await.unwrap();
    assert!(out.adopted && !out.created && out.patched, "{out:?}");
    let seen = scim.view().await;
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[&user("u1")].id.as_str(), seen[&user("u1")].external_id.as_deref()), (existing.as_str(), Some("u1")));
    assert_eq!(seen[&user("u1")].groups, set(&["member"]));

    // A stale ETag: the user changed on the target after we read it. The
    // PATCH carries If-Match, meets 412, re-reads and applies to the new version.
    let (_, fresh) = scim.request(Method::GET, &format!("/Users/{existing}"), None).await;
    let stale = ScimUser::from_json(&fresh).unwrap();
    assert!(stale.version.is_some(), "scim2-server offers ETags");
    scim.patch(&format!("/Users/{existing}"), vec![entitle::core::scim::PatchOp::replace("displayName", json!("Changed Elsewhere"))]).await;
    desired.enterprise.insert("department".into(), "Ops".into());
    let out = client.sync_member(&desired, &managed, Some(Known { user: Some(stale), member_of: Some(MemberOf::known(set(&["member"]))) })).await.unwrap();
    assert_eq!((out.conflicts, out.patched), (1, true), "{out:?}");
    let (_, after) = scim.request(Method::GET, &format!("/Users/{existing}"), None).await;
    assert_eq!((after["displayName"].as_str(), after[entitle::core::scim::ENTERPRISE_SCHEMA]["department"].as_str()), (Some("Changed Elsewhere"), Some("Ops")));

    // Paging: 230 users come back over three pages of 100.
    for i in 0..229 {
        scim.create_user(&format!("bulk{i}@example.test"), None).await;
    }
    assert_eq!(client.users().await.unwrap().len(), 230);

    // 429 with Retry-After: 1, twice: the client waits as told and succeeds.
    let proxy = FaultProxy::start(&s.scim_url).await;
    let base = format!("{}/{}", proxy.url, scim.base.rsplit('/').next().unwrap());
    let throttled = ScimClient::new(http_client(EgressPolicy::Local), &base, s.scim_token.clone(), EgressPolicy::Local);
    proxy.throttle(2);
    let start = Instant::now();
    let found = throttled.find_user(&desired).await.unwrap();
    assert_eq!(found.map(|u| u.id), Some(existing));
    assert_eq!(proxy.throttled.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert!(start.elapsed() >= Duration::from_secs(2), "waited {:?}", start.elapsed());

    // Down for good: the client gives up with `Unavailable` (the deliverer
    // then backs the target off) instead of hanging.
    proxy.set_up(false);
    let err = throttled.find_user(&desired).await.unwrap_err();
    assert!(matches!(err, entitle::core::scim::TargetError::Unavailable { .. }), "{err}");
}

#[tokio::test]
async fn target_configuration_is_validated_and_the_token_stays_secret() {
    let s = Stack::connect().await;
    let t = unique("cfg");
    let body = target_body(&s.scim(&t).base, &s.scim_token);
    let (code, err) = s.put_target(&t, "idp", &body).await;
    assert_eq!((code, err["error"]["code"].as_str()), (404, Some("not_found")), "{err}");
    licensed(&s, &t, "team_monthly", 2).await;

    let bad = json!({"base_url": "ftp://x", "token": "", "mapping": {"enterprise": {"manager": "m"}}, "repair_interval_minutes": 1});
    let (code, err) = s.put_target(&t, "idp", &bad).await;
    assert_eq!((code, err["error"]["code"].as_str()), (422, Some("invalid_target")), "{err}");
    assert_eq!(err["error"]["problems"].as_array().unwrap().len(), 4, "{err}");
    let (code, err) = s.put_target_raw(&t, "idp", "{\"base_url\": ").await;
    assert_eq!((code, err["error"]["code"].as_str()), (400, Some("malformed_body")), "{err}");
    let (code, err) = s.put_target(&t, "idp", &json!({"base_url": "http://x", "token": "t", "secret": 1})).await;
    assert_eq!(code, 400, "unknown fields are refused: {err}");
    assert_eq!(s.put_target(&t, "bad!id", &body).await.0, 400);
    assert_eq!(s.targets(&t).await.1["targets"], json!([]), "nothing stored by refused requests");

    let (code, view) = s.put_target(&t, "idp", &body).await;
    assert_eq!(code, 201, "{view}");
    let (code, again) = s.put_target(&t, "idp", &body).await;
    assert_eq!((code, again["target_id"].as_str()), (200, Some("idp")), "reconfiguring is idempotent");
    // The token is in Secrets Manager, and nowhere in the table.
    let secret = s.secrets.get_secret_value().secret_id(format!("entitle-local/targets/{t}/idp")).send().await.unwrap();
    assert_eq!(secret.secret_string(), Some(s.scim_token.as_str()));
    let items = s
        .ddb
        .query()
        .table_name(&s.tables.state)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("T#{t}")))
        .send()
        .await
        .unwrap();
    assert!(!format!("{:?}", items.items()).contains(&s.scim_token));
    assert!(!s.targets(&t).await.1.to_string().contains(&s.scim_token));

    for i in 2..=4 {
        assert_eq!(s.put_target(&t, &format!("idp{i}"), &body).await.0, 201);
    }
    let (code, err) = s.put_target(&t, "idp5", &body).await;
    assert_eq!((code, err["error"]["code"].as_str()), (409, Some("too_many_targets")), "{err}");
    assert_eq!(s.repair(&t, "nope").await.0, 404);
    assert_eq!(s.repair(&t, "idp").await.0, 202);

    // Removal: audited, the token deleted (recoverably), the slot free again.
    let (code, gone) = s.delete_target(&t, "idp4").await;
    assert_eq!((code, gone["status"].as_str()), (200, Some("removed")), "{gone}");
    assert_eq!(s.delete_target(&t, "idp4").await.0, 404);
    let ids: Vec<Value> = s.targets(&t).await.1["targets"].as_array().unwrap().iter().map(|v| v["target_id"].clone()).collect();
    assert_eq!(ids, [json!("idp"), json!("idp2"), json!("idp3")]);
    let described = s.secrets.describe_secret().secret_id(format!("entitle-local/targets/{t}/idp4")).send().await.unwrap();
    assert!(described.deleted_date().is_some(), "the token is scheduled for deletion");
    assert!(s.audit(&t).await.iter().any(|r| r["action"] == "target_removed" && r["subject"] == "target:idp4"));
    // Configured again: the secret comes back with the new token.
    assert_eq!(s.put_target(&t, "idp4", &target_body(&s.scim(&t).base, &s.scim_token_2)).await.0, 201);
    let secret = s.secrets.get_secret_value().secret_id(format!("entitle-local/targets/{t}/idp4")).send().await.unwrap();
    assert_eq!(secret.secret_string(), Some(s.scim_token_2.as_str()));
    assert!(s.verify(&t).await["ok"].as_bool().unwrap());
}

/// Group membership goes in batches: 150 new members join `entitle-member`
/// in a few group requests, not 150 (scim2-server rewrites the whole group
/// on each request, as many targets do), and a seat cut takes them out the
/// same way. Counted in scim2-server's own request log.
#[tokio::test]
async fn group_membership_is_changed_in_batches_per_group() {
    let s = Stack::connect().await;
    let t = unique("batch");
    let crm = |version: i64, seats: u64| {
        json!({"event_id": format!("crm-{t}-{version}"), "tenant_id": t, "license_id": "crm-lic-1", "tier": "team",
        "seats": seats, "add_ons": [], "starts_at": "2026-01-01T00:00:00Z", "expires_at": "2090-01-01T00:00:00Z", "status": "active", "source_version": version})
    };
    assert_eq!(s.crm(&crm(1, 150)).await.1["status"], "applied");
    s.tenant_where(&t, "150 seats", |v| v["seats"]["total"] == 150).await;
    let scim = s.scim(&t);
    let log = entitle_tests::stack_dir().join("scim.log");
    let group_patches = || std::fs::read_to_string(&log).unwrap_or_default().lines().filter(|l| l.contains(&format!("\"PATCH /{t}/Groups/"))).count();
    let store = s.store();
    let tenant = entitle::core::ids::TenantId::parse(t.as_str()).unwrap();
    for i in 0..150 {
        let new: entitle::core::views::NewMember = serde_json::from_value(member_body(&format!("m{i:03}"), &[])).unwrap();
        entitle::app::members::create(&store, &tenant, &new, &format!("seed-{i}"), chrono::Utc::now()).await.unwrap();
    }
    assert_eq!(s.put_target(&t, "idp", &target_body(&scim.base, &scim.token)).await.0, 201);
    let view = scim_until(&scim, "150 members in entitle-member", 120, |v| v.values().filter(|u| u.groups.contains("entitle-member")).count() == 150).await;
    assert!(view.values().all(|u| u.active));
    delivered(&s, &t, "idp").await;
    let joins = group_patches();
    assert!((2..=10).contains(&joins), "{joins} group requests for 150 joins");

    // A seat cut to 20: 130 leave the group (deactivated), again in batches.
    assert_eq!(s.crm(&crm(2, 20)).await.1["status"], "applied");
    scim_until(&scim, "130 members out of entitle-member", 120, |v| v.values().filter(|u| u.groups.contains("entitle-member")).count() == 20).await;
    delivered(&s, &t, "idp").await;
    let leaves = group_patches() - joins;
    assert!((1..=10).contains(&leaves), "{leaves} group requests for 130 leaves");
    assert_eq!(s.verify(&t).await["ok"], true);
}
