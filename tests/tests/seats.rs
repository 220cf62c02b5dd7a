//! Seats end to end: a seat promised at creation is kept, a cut takes the
//! seats the documented order says, and the tenant's admin decides who
//! holds seats (`PUT /tenants/{tenant}/members/{user}/seat`).

use entitle_tests::{crm_license, member_body, unique, Stack};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The members' statuses as the app reads them, once provision has caught up.
async fn statuses(s: &Stack, t: &str, users: &[String]) -> BTreeMap<String, String> {
    s.settle(t).await;
    let mut out = BTreeMap::new();
    for u in users {
        let (code, m) = s.member(t, u).await;
        assert_eq!(code, 200, "{m}");
        out.insert(u.clone(), m["status"].as_str().unwrap().to_string());
    }
    out
}

fn records<'a>(audit: &'a [Value], action: &str) -> Vec<&'a Value> {
    audit.iter().filter(|r| r["action"] == action).collect()
}

/// 50 concurrent creations into 20 seats, five times over: every member
/// answered `active` is still active once everything settles, no reconcile
/// takes a seat from anyone, the counters equal the members, and the chain
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_seat_promised_at_creation_is_kept_five_times_over() {
    let s = Arc::new(Stack::connect().await);
    for round in 0..5 {
        let t = unique(&format!("promise{round}"));
        s.crm_licensed(&t, "team", 20).await;
        let creations: Vec<_> = (0..50)
            .map(|i| {
                let (s, t) = (s.clone(), t.clone());
                tokio::spawn(async move { s.create_member(&t, &member_body(&format!("u{i:02}"), &[])).await })
            })
            .collect();
        let mut answered = BTreeMap::new();
        for (i, c) in creations.into_iter().enumerate() {
            let (code, body) = c.await.unwrap();
            assert_eq!(code, 201, "{body}");
            answered.insert(format!("u{i:02}"), body["status"].as_str().unwrap().to_string());
        }
        assert_eq!(answered.values().filter(|v| *v == "active").count(), 20, "round {round}: seats claimed at creation");
        let users: Vec<String> = answered.keys().cloned().collect();
        assert_eq!(statuses(&s, &t, &users).await, answered, "round {round}: each member as its creation was answered");
        let tenant = s.tenant(&t).await.1;
        assert_eq!((tenant["seats"]["used"].as_u64(), tenant["seats_pending"].as_u64()), (Some(20), Some(30)), "round {round}: {tenant}");
        let audit = s.audit(&t).await;
        let taken: Vec<&Value> = records(&audit, "member_access_changed").into_iter().filter(|r| r["before"]["status"] == "active").collect();
        assert!(taken.is_empty(), "round {round}: no reconcile takes a seat: {taken:?}");
        assert_eq!(records(&audit, "member_created").len(), 50);
        let v = s.verify(&t).await;
        assert_eq!((v["ok"].as_bool(), v["pending"].as_u64()), (Some(true), Some(0)), "{v}");
    }
}

/// Four members created one after another; a cut from four seats to three
/// takes the newest member's seat in the reconcile of that change, and a
/// cut to one keeps the owner's.
#[tokio::test]
async fn a_cut_takes_the_most_recently_seated_and_keeps_owners() {
    let s = Stack::connect().await;
    let t = unique("cut4");
    s.crm_licensed(&t, "team", 4).await;
    for (u, groups) in [("a", vec![]), ("b", vec![]), ("o", vec!["owners"]), ("d", vec![])] {
        assert_eq!(s.create_member(&t, &member_body(u, &groups)).await.1["status"], "active");
    }
    assert_eq!(s.crm(&crm_license(&t, 2, "team", 3)).await.1["status"], "applied");
    let users: Vec<String> = ["a", "b", "o", "d"].map(String::from).to_vec();
    let want = |pairs: &[(&str, &str)]| pairs.iter().map(|(u, st)| (u.to_string(), st.to_string())).collect::<BTreeMap<_, _>>();
    assert_eq!(statuses(&s, &t, &users).await, want(&[("a", "active"), ("b", "active"), ("o", "active"), ("d", "pending_seat")]));
    assert_eq!(s.crm(&crm_license(&t, 3, "team", 1)).await.1["status"], "applied");
    assert_eq!(statuses(&s, &t, &users).await, want(&[("a", "pending_seat"), ("b", "pending_seat"), ("o", "active"), ("d", "pending_seat")]));
    // Two seats again: the line in order (d cut first, then a before b).
    assert_eq!(s.crm(&crm_license(&t, 4, "team", 2)).await.1["status"], "applied");
    assert_eq!(statuses(&s, &t, &users).await, want(&[("a", "pending_seat"), ("b", "pending_seat"), ("o", "active"), ("d", "active")]));
    let audit = s.audit(&t).await;
    let cut: Vec<&str> = records(&audit, "member_access_changed").iter().filter(|r| r["rule"].as_str().unwrap().starts_with("seat cut")).map(|r| r["subject"].as_str().unwrap()).collect();
    assert_eq!(cut, ["member:d", "member:a", "member:b"], "each cut audited once, with its rule");
}

/// The tenant's admin gives a seat from a named holder, pins it, releases
/// another; reconciles and a cut keep those decisions; refusals name why.
#[tokio::test]
async fn the_tenants_admin_gives_pins_and_releases_seats() {
    let s = Stack::connect().await;
    let t = unique("pin");
    s.crm_licensed(&t, "team", 3).await;
    for u in ["a", "b", "c", "d", "e"] {
        s.create_member(&t, &member_body(u, &[])).await;
    }
    // a, b and c hold the three seats; d then e wait.
    let (code, e) = s.put_seat(&t, "d", &json!({"hold": true})).await;
    assert_eq!((code, e["error"]["code"].as_str(), e["error"]["seats"].clone()), (409, Some("no_free_seat"), json!({"total": 3, "used": 3})), "{e}");

    let (code, d) = s.put_seat(&t, "d", &json!({"hold": true, "from": "a", "by": "owner@acme.test"})).await;
    assert_eq!((code, d["status"].as_str(), d["seat"]["pin"]["hold"].as_bool(), d["seat"]["pin"]["by"].as_str()), (200, Some("active"), Some(true), Some("owner@acme.test")), "{d}");
    assert_eq!(d["roles"], json!(["member"]));
    assert_eq!(s.member(&t, "a").await.1["status"], "pending_seat");
    let (code, e) = s.put_seat(&t, "e", &json!({"hold": true, "from": "a"})).await;
    assert_eq!((code, e["error"]["code"].as_str()), (409, Some("from_holds_no_seat")), "{e}");
    let (code, e) = s.put_seat(&t, "c", &json!({"hold": true, "from": "b"})).await;
    assert_eq!((code, e["error"]["code"].as_str()), (409, Some("already_holds_seat")), "{e}");
    // The same request again (as after a lost answer): nothing changes.
    let (code, again) = s.put_seat(&t, "d", &json!({"hold": true, "from": "a", "by": "owner@acme.test"})).await;
    assert_eq!((code, again["seat"].clone()), (200, d["seat"].clone()), "{again}");

    // A cut to two: d (pinned) keeps its seat, b (seated before c) keeps its; c's goes.
    assert_eq!(s.crm(&crm_license(&t, 2, "team", 2)).await.1["status"], "applied");
    let users: Vec<String> = ["a", "b", "c", "d", "e"].map(String::from).to_vec();
    let seen = statuses(&s, &t, &users).await;
    assert_eq!(seen.values().map(String::as_str).collect::<Vec<_>>(), ["pending_seat", "active", "pending_seat", "active", "pending_seat"], "{seen:?}");

    // b released: out of the line; its seat goes to the first in line (e,
    // waiting since its creation), not back to b.
    let (code, b) = s.put_seat(&t, "b", &json!({"hold": false, "by": "owner@acme.test"})).await;
    assert_eq!((code, b["status"].as_str(), b["seat"]["pin"]["hold"].as_bool()), (200, Some("pending_seat"), Some(false)), "{b}");
    let seen = statuses(&s, &t, &users).await;
    assert_eq!(seen.values().map(String::as_str).collect::<Vec<_>>(), ["pending_seat", "pending_seat", "pending_seat", "active", "active"], "{seen:?}");
    let tenant = s.tenant(&t).await.1;
    assert_eq!((tenant["seats"]["used"].as_u64(), tenant["seats_pending"].as_u64()), (Some(2), Some(2)), "a and c in line, b out of it: {tenant}");
    // Released twice: nothing changes, 200.
    assert_eq!(s.put_seat(&t, "b", &json!({"hold": false})).await.0, 200);

    // Bad requests change nothing.
    for (user, body, status, code) in [
        ("b", json!({"hold": false, "from": "a"}), 422, "invalid_seat_request"),
        ("b", json!({"hold": true, "from": "b"}), 422, "invalid_seat_request"),
        ("b", json!({"hold": "yes"}), 400, "malformed_body"),
        ("b", json!({"hold": true, "extra": 1}), 400, "malformed_body"),
        ("nobody", json!({"hold": true}), 404, "not_found"),
    ] {
        let (got, e) = s.put_seat(&t, user, &body).await;
        assert_eq!((got, e["error"]["code"].as_str()), (status, Some(code)), "{body}: {e}");
    }
    assert_eq!(s.put_seat("no-such-tenant-x", "b", &json!({"hold": true})).await.0, 404);

    // Each decision audited with who made it and the request.
    let audit = s.audit(&t).await;
    let decided = records(&audit, "member_seat_reassigned");
    let subjects: Vec<&str> = decided.iter().map(|r| r["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects, ["member:a", "member:d", "member:b"], "{decided:?}");
    assert!(decided.iter().all(|r| r["rule"].as_str().unwrap().contains("owner@acme.test") && r["cause"]["kind"] == "api_call"), "{decided:?}");
    assert_eq!(decided[1]["after"]["seat"]["pin"]["hold"], true);
    assert_eq!(s.verify(&t).await["ok"], true);
}

/// The app changes a member's groups: its roles follow at once (finance on
/// business: billing-admin), its seat does not move; bad input changes nothing.
#[tokio::test]
async fn a_group_change_gives_the_new_roles_and_keeps_the_seat() {
    let s = Stack::connect().await;
    let t = unique("groups");
    s.crm_licensed(&t, "business", 1).await;
    for u in ["a", "b"] {
        s.create_member(&t, &member_body(u, &[])).await;
    }
    let patch = |user: &'static str, body: Value| {
        let (s, t) = (&s, t.clone());
        async move { s.update_member(&t, user, &body).await }
    };
    let (code, a) = patch("a", json!({"groups": ["finance"]})).await;
    assert_eq!((code, a["status"].as_str(), a["roles"].clone()), (200, Some("active"), json!(["billing-admin", "member"])), "{a}");
    assert_eq!(s.member(&t, "a").await.1["roles"], json!(["billing-admin", "member"]));
    let (code, b) = patch("b", json!({"groups": ["admins"], "attributes": {"dept": "ops"}})).await;
    assert_eq!((code, b["status"].as_str()), (200, Some("pending_seat")), "a group change moves no seat: {b}");
    for (user, body, status) in [("a", json!({"groups": "finance"}), 400), ("a", json!({"email": "x@y.z"}), 400), ("nobody", json!({"groups": []}), 404)] {
        let (code, e) = patch(user, body.clone()).await;
        assert_eq!(code, status, "{body}: {e}");
    }
    let audit = s.audit(&t).await;
    assert_eq!(records(&audit, "member_updated").len(), 2);
    assert_eq!(s.verify(&t).await["ok"], true);
}
