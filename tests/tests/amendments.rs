//! Contract amendments end to end through the real binaries: creation,
//! the three amendment forms, validation, optimistic concurrency, review,
//! future dating, reversal, and the crash between a new version and its
//! reconcile.

use chrono::{Duration, Utc};
use entitle::core::contract::AmendmentRequest;
use entitle::core::ids::ContractId;
use entitle_tests::{member_body, unique, Stack};
use serde_json::{json, Value};

fn document(tenant: &str, contract: &str, seats: u32) -> Value {
    json!({
        "contract_id": contract, "tenant_id": tenant,
        "term": {"start": "2026-01-01T00:00:00Z", "end": "2090-01-01T00:00:00Z", "auto_renew": true},
        "tier": "business", "seats": seats, "add_ons": [],
        "named_users": [{"id": "ann", "email": "ann@example.test", "roles": ["admin"]}],
        "role_mappings": {"finance": ["billing-admin"]},
        "support": {"level": "standard"}
    })
}

/// A tenant whose only license is a contract, with members ann (named admin),
/// bob (finance), cal, dee.
async fn contracted(s: &Stack, seats: u32) -> (String, String) {
    let t = unique("ctr");
    let k = format!("k-{t}");
    let (code, body) = s.amend("/contracts", Some(&document(&t, &k, seats))).await;
    assert_eq!(code, 201, "{body}");
    s.tenant_where(&t, "contract provisioned", |v| v["tier"] == "business").await;
    for (u, g) in [("ann", vec![]), ("bob", vec!["finance"]), ("cal", vec![]), ("dee", vec![])] {
        s.create_member(&t, &member_body(u, &g)).await;
    }
    s.tenant_where(&t, "members seated", |v| v["seats"]["used"] == seats.min(4)).await;
    (t, k)
}

fn amendment(id: &str, base: u64, form: (&str, Value)) -> Value {
    let mut a = json!({"amendment_id": id, "base_version": base});
    a[form.0] = form.1;
    a
}

/// The tenant's access and each member's, as the app reads them (a
/// member's place in the seat order aside: a member whose seat the
/// amendment gave and its reversal took back waits again from then).
async fn snapshot(s: &Stack, t: &str) -> Vec<String> {
    let mut out = vec![s.tenant(t).await.1.to_string()];
    for u in ["ann", "bob", "cal", "dee"] {
        let mut member = s.member(t, u).await.1;
        member.as_object_mut().unwrap().remove("seat");
        out.push(member.to_string());
    }
    out
}

/// The tenant's access once provision has processed every message queued
/// for it so far (a barrier: an observable mark, not a guess of time).
async fn settled(s: &Stack, t: &str) -> Vec<String> {
    s.settle(t).await;
    snapshot(s, t).await
}

#[tokio::test]
async fn contracts_are_created_versioned_and_grant_their_license() {
    let s = Stack::connect().await;
    let (t, k) = contracted(&s, 3).await;
    let (code, c) = s.amend(&format!("/contracts/{k}"), None).await;
    assert_eq!(code, 200, "{c}");
    assert_eq!((c["version"].as_u64(), c["tenant_id"].as_str()), (Some(1), Some(t.as_str())));
    assert_eq!(c["document"]["support"], json!({"level": "standard"}), "unmapped clauses are kept");
    assert_eq!(c["history"][0]["version"], 1);
    let tenant = s.tenant(&t).await.1;
    assert_eq!((tenant["seats"]["total"].as_u64(), tenant["expires_at"].as_str()), (Some(3), Some("2090-01-01T00:00:00Z")));
    // Named user roles and role mappings reach members.
    assert_eq!(s.member(&t, "ann").await.1["roles"], json!(["admin", "member"]));
    assert_eq!(s.member(&t, "bob").await.1["roles"], json!(["billing-admin", "member"]));
    assert_eq!(s.member(&t, "dee").await.1["status"], "pending_seat");

    // The same request again changes nothing; another body under the id is refused.
    let (code, again) = s.amend("/contracts", Some(&document(&t, &k, 3))).await;
    assert_eq!((code, again["version"].as_u64()), (200, Some(1)));
    let (code, clash) = s.amend("/contracts", Some(&document(&t, &k, 9))).await;
    assert_eq!((code, clash["error"]["code"].as_str()), (409, Some("contract_exists")));

    // YAML, for people who write contracts by hand.
    let t2 = unique("yaml");
    let yaml = format!("contract_id: k-{t2}\ntenant_id: {t2}\nterm:\n  start: 2026-01-01T00:00:00Z\n  end: 2088-01-01T00:00:00Z\ntier: team\nseats: 2\nadd_ons: [sso]\nsla:\n  uptime: 99.9\n");
    let (code, c) = s.amend_yaml("/contracts", &yaml).await;
    assert_eq!(code, 201, "{c}");
    assert_eq!(c["document"]["sla"]["uptime"], 99.9);
    s.tenant_where(&t2, "yaml contract provisioned", |v| v["tier"] == "team" && v["entitlements"]["sso"] == true).await;

    let mut bad = document(&unique("bad"), "k-bad", 3);
    bad["seats"] = json!(-2);
    bad["term"]["end"] = json!("2020-01-01T00:00:00Z");
    let (code, err) = s.amend("/contracts", Some(&bad)).await;
    assert_eq!((code, err["error"]["code"].as_str()), (422, Some("invalid_contract")), "{err}");
    assert_eq!(err["error"]["problems"].as_array().unwrap().len(), 2, "{err}");
    assert_eq!(s.amend("/contracts/k-bad", None).await.0, 404);
}

/// Builds one form of an amendment from the current document.
type Form = Box<dyn Fn(&Value) -> (&'static str, Value)>;

#[tokio::test]
async fn the_three_forms_of_one_change_give_one_change_set() {
    let s = Stack::connect().await;
    let mut change_sets = Vec::new();
    let forms: Vec<Form> = vec![
        Box::new(|_| {
            (
                "patch",
                json!([
            {"op": "replace", "path": "/seats", "value": 6},
            {"op": "add", "path": "/add_ons/-", "value": "sso"},
            {"op": "replace", "path": "/term/end", "value": "2091-06-30T00:00:00Z"},
            {"op": "replace", "path": "/support/level", "value": "premium"}]),
            )
        }),
        Box::new(|doc| {
            let mut d = doc.clone();
            d["seats"] = json!(6);
            d["add_ons"] = json!(["sso"]);
            d["term"]["end"] = json!("2091-06-30T00:00:00Z");
            d["support"]["level"] = json!("premium");
            ("document", d)
        }),
        Box::new(|doc| {
            (
                "record",
                json!({"parent_record_id": doc["contract_id"], "properties": {
            "seats": {"type": "number", "value": 6},
            "addOns": {"type": "array", "value": ["sso"]},
            "termEndDate": {"type": "date", "value": "2091-06-30"},
            "support": {"type": "object", "value": {"level": "premium"}}}}),
            )
        }),
    ];
    for form in forms {
        let (t, k) = contracted(&s, 4).await;
        let doc = s.amend(&format!("/contracts/{k}"), None).await.1["document"].clone();
        let (code, a) = s.amend(&format!("/contracts/{k}/amendments"), Some(&amendment("a1", 1, form(&doc)))).await;
        assert_eq!((code, a["status"].as_str()), (201, Some("applied")), "{a}");
        change_sets.push(a["changes"].clone());
        s.tenant_where(&t, "sso from the amendment", |v| v["entitlements"]["sso"] == true && v["seats"]["total"] == 6).await;
    }
    assert_eq!(change_sets[0], change_sets[1]);
    assert_eq!(change_sets[0], change_sets[2]);
    let summaries: Vec<&str> = change_sets[0].as_array().unwrap().iter().map(|c| c["summary"].as_str().unwrap()).collect();
    assert_eq!(summaries, ["add-on sso added", "seats 4 -> 6", "clause support {\"level\":\"standard\"} -> {\"level\":\"premium\"}", "term.end 2090-01-01T00:00:00Z -> 2091-06-30T00:00:00Z"]);
}

#[tokio::test]
async fn stale_and_invalid_amendments_are_refused_and_change_nothing() {
    let s = Stack::connect().await;
    let (t, k) = contracted(&s, 4).await;
    let path = format!("/contracts/{k}/amendments");
    let before = settled(&s, &t).await;
    let audit_before = s.audit(&t).await.len();

    let (code, e) = s.amend(&path, Some(&amendment("a1", 7, ("patch", json!([{"op": "replace", "path": "/seats", "value": 5}]))))).await;
    assert_eq!((code, e["error"]["code"].as_str(), e["error"]["current_version"].as_u64()), (409, Some("stale_base_version"), Some(1)), "{e}");

    let invalid = json!([
        {"op": "teleport", "path": "/seats", "value": 5},
        {"op": "remove", "path": "/no_such_clause"},
        {"op": "replace", "path": "/seats", "value": -3},
        {"op": "replace", "path": "/term/end", "value": "2019-01-01T00:00:00Z"}
    ]);
    let (code, e) = s.amend(&path, Some(&amendment("a2", 1, ("patch", invalid)))).await;
    assert_eq!((code, e["error"]["code"].as_str()), (422, Some("invalid_amendment")), "{e}");
    let problems = e["error"]["problems"].as_array().unwrap();
    let text = e["error"]["message"].as_str().unwrap();
    assert!(problems.len() >= 2, "{e}");
    assert!(text.contains("patch[0]") && text.contains("teleport"), "{text}");
    assert!(text.contains("patch[1]") && text.contains("/no_such_clause"), "{text}");
    // Once the operations apply, the document they make is checked: both problems named.
    let (code, e) =
        s.amend(&path, Some(&amendment("a3", 1, ("patch", json!([{"op": "replace", "path": "/seats", "value": -3}, {"op": "replace", "path": "/term/end", "value": "2019-01-01T00:00:00Z"}]))))).await;
    assert_eq!(code, 422);
    let text = e["error"]["message"].as_str().unwrap();
    assert!(text.contains("seats: must not be below 0") && text.contains("term.end"), "{text}");
    let (code, e) = s.amend(&path, Some(&json!({"amendment_id": "a4", "base_version": 1, "patch": [], "document": {}}))).await;
    assert_eq!((code, e["error"]["code"].as_str()), (422, Some("invalid_amendment")), "{e}");
    let (code, e) = s.amend(&path, Some(&json!({"amendment_id": "a5", "base_version": 1, "patch": [], "colour": "red"}))).await;
    assert_eq!((code, e["error"]["code"].as_str()), (400, Some("malformed_body")), "{e}");

    // A duplicate amendment id with a different body.
    let ok = amendment("a6", 1, ("patch", json!([{"op": "replace", "path": "/support/level", "value": "gold"}])));
    assert_eq!(s.amend(&path, Some(&ok)).await.0, 201);
    let (code, again) = s.amend(&path, Some(&ok)).await;
    assert_eq!((code, again["status"].as_str()), (200, Some("applied")), "a retry answers the same");
    let other = amendment("a6", 2, ("patch", json!([{"op": "replace", "path": "/support/level", "value": "silver"}])));
    let (code, e) = s.amend(&path, Some(&other)).await;
    assert_eq!((code, e["error"]["code"].as_str()), (422, Some("duplicate_amendment_id")), "{e}");

    let c = s.amend(&format!("/contracts/{k}"), None).await.1;
    assert_eq!((c["version"].as_u64(), c["document"]["seats"].as_u64(), c["document"]["support"]["level"].as_str()), (Some(2), Some(4), Some("gold")));
    assert_eq!(settled(&s, &t).await, before, "access unchanged by refused amendments and an unmapped clause");
    let audit = s.audit(&t).await;
    assert_eq!(audit.len(), audit_before + 1, "only the one applied amendment is audited: {:?}", &audit[audit_before..]);
}

#[tokio::test]
async fn risky_amendments_wait_for_review_and_dry_runs_store_nothing() {
    let s = Stack::connect().await;
    let (t, k) = contracted(&s, 4).await;
    let path = format!("/contracts/{k}/amendments");
    let before = settled(&s, &t).await;
    let cut = amendment("cut", 1, ("patch", json!([{"op": "replace", "path": "/seats", "value": 2}, {"op": "remove", "path": "/named_users/0"}])));

    let (code, dry) = s.amend(&format!("{path}?dry_run=true"), Some(&cut)).await;
    assert_eq!((code, dry["dry_run"].as_bool(), dry["status"].as_str()), (200, Some(true), Some("pending_review")), "{dry}");
    let review = dry["review"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect::<Vec<_>>().join("; ");
    for rule in ["max_seat_reduction_percent", "seat_reduction_below_usage", "privileged_role_removal"] {
        assert!(review.contains(rule), "{rule} in {review}");
    }
    let lose: Vec<&str> = dry["impact"]["members"].as_array().unwrap().iter().filter(|m| m["seat"] == "lost").map(|m| m["user_id"].as_str().unwrap()).collect();
    assert_eq!(lose, ["cal", "dee"], "the newest members lose their seats");
    let ann = dry["impact"]["members"].as_array().unwrap().iter().find(|m| m["user_id"] == "ann").expect("ann's impact");
    assert_eq!(ann["roles_removed"], json!(["admin"]));
    assert_eq!(s.amend(&format!("{path}/cut"), None).await.0, 404, "a dry run stores nothing");

    let (code, held) = s.amend(&path, Some(&cut)).await;
    assert_eq!((code, held["status"].as_str()), (201, Some("pending_review")));
    assert_eq!(settled(&s, &t).await, before, "nothing applied while pending");

    let who = json!({"by": "cfo@example.test", "reason": "renewal negotiated down"});
    let (code, approved) = s.amend(&format!("{path}/cut/approve"), Some(&who)).await;
    assert_eq!((code, approved["status"].as_str(), approved["applied_version"].as_u64()), (200, Some("applied"), Some(2)), "{approved}");
    s.statuses_are(&t, &[("cal", "pending_seat"), ("dee", "pending_seat")]).await;
    let (code, twice) = s.amend(&format!("{path}/cut/approve"), Some(&who)).await;
    assert_eq!((code, twice["status"].as_str()), (200, Some("applied")), "the same approval again changes nothing");
    let audit = s.audit(&t).await;
    let applied = audit.iter().find(|r| r["action"] == "amendment_applied").unwrap();
    assert_eq!(applied["cause"], json!({"kind": "amendment", "id": "cut"}));
    assert!(applied["rule"].as_str().unwrap().contains("approved by cfo@example.test"));
    assert!(audit.iter().any(|r| r["action"] == "amendment_held_for_review"));

    // Rejected: nothing changes. Approving against a contract that moved on: 409.
    let down = amendment("down", 2, ("patch", json!([{"op": "replace", "path": "/tier", "value": "team"}])));
    assert_eq!(s.amend(&path, Some(&down)).await.1["status"], "pending_review");
    let (code, rejected) = s.amend(&format!("{path}/down/reject"), Some(&json!({"by": "ops", "reason": "no"}))).await;
    assert_eq!((code, rejected["status"].as_str()), (200, Some("rejected")));
    let (code, e) = s.amend(&format!("{path}/down/approve"), Some(&who)).await;
    assert_eq!((code, e["error"]["code"].as_str()), (409, Some("not_pending")));
    let down2 = amendment("down2", 2, ("patch", json!([{"op": "replace", "path": "/tier", "value": "team"}])));
    assert_eq!(s.amend(&path, Some(&down2)).await.1["status"], "pending_review");
    let moved = amendment("moved", 2, ("patch", json!([{"op": "replace", "path": "/support/level", "value": "gold"}])));
    assert_eq!(s.amend(&path, Some(&moved)).await.1["status"], "applied");
    let (code, e) = s.amend(&format!("{path}/down2/approve"), Some(&who)).await;
    assert_eq!((code, e["error"]["code"].as_str(), e["error"]["current_version"].as_u64()), (409, Some("contract_moved_on"), Some(3)), "{e}");
    let (code, e) = s.amend(&format!("{path}/down2/approve"), Some(&json!({"by": "", "reason": ""}))).await;
    assert_eq!((code, e["error"]["code"].as_str()), (422, Some("invalid_decision")));
    assert_eq!(s.tenant(&t).await.1["tier"], "business");
}

#[tokio::test]
async fn future_dated_amendments_are_scheduled_then_applied_when_due() {
    let s = Stack::connect().await;
    let (t, k) = contracted(&s, 4).await;
    let path = format!("/contracts/{k}/amendments");
    let effective = Utc::now() + Duration::days(30);
    let mut a = amendment("later", 1, ("patch", json!([{"op": "add", "path": "/add_ons/-", "value": "sso"}, {"op": "replace", "path": "/seats", "value": 5}])));
    a["effective_at"] = json!(effective);
    let (code, scheduled) = s.amend(&path, Some(&a)).await;
    assert_eq!((code, scheduled["status"].as_str()), (201, Some("scheduled")), "{scheduled}");
    assert_eq!(s.amend(&format!("/contracts/{k}"), None).await.1["version"], 1);

    let (store, queue) = (s.store(), s.queue());
    let cid = ContractId::parse(&k).unwrap();
    let early = entitle::app::contracts::apply_due(&store, &queue, &cid, effective - Duration::seconds(1), "run-early").await.unwrap();
    assert!(early.is_empty(), "not due yet");
    let due = entitle::app::contracts::apply_due(&store, &queue, &cid, effective, "run-due").await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].status, entitle::core::contract::AmendmentStatus::Applied);
    s.tenant_where(&t, "sso once due", |v| v["entitlements"]["sso"] == true && v["seats"]["total"] == 5).await;
    let again = entitle::app::contracts::apply_due(&store, &queue, &cid, effective + Duration::days(1), "run-again").await.unwrap();
    assert!(again.is_empty(), "applied once");
    let shown = s.amend(&format!("{path}/later"), None).await.1;
    assert_eq!((shown["status"].as_str(), shown["applied_version"].as_u64()), (Some("applied"), Some(2)));
    let audit = s.audit(&t).await;
    let applied = audit.iter().find(|r| r["action"] == "amendment_applied").unwrap();
    assert_eq!(applied["cause"], json!({"kind": "sweep", "id": "run-due"}));
}

#[tokio::test]
async fn reversing_an_amendment_restores_access_exactly() {
    let s = Stack::connect().await;
    let (t, k) = contracted(&s, 3).await;
    let path = format!("/contracts/{k}/amendments");
    let before = settled(&s, &t).await;
    let up = amendment(
        "up",
        1,
        (
            "patch",
            json!([
                {"op": "replace", "path": "/tier", "value": "enterprise"},
                {"op": "replace", "path": "/seats", "value": 4},
                {"op": "add", "path": "/add_ons/-", "value": "extra_projects"},
                {"op": "add", "path": "/role_mappings/engineering", "value": ["viewer"]},
                {"op": "add", "path": "/named_users/-", "value": {"id": "cal", "email": "cal@example.test", "roles": ["admin"]}}
            ]),
        ),
    );
    let (code, a) = s.amend(&path, Some(&up)).await;
    assert_eq!((code, a["status"].as_str()), (201, Some("applied")), "{a}");
    s.statuses_are(&t, &[("dee", "active")]).await;
    assert_eq!(s.member(&t, "cal").await.1["roles"], json!(["admin", "member"]));
    // A later amendment of another clause is kept by the reversal.
    let later = amendment("later", 2, ("patch", json!([{"op": "replace", "path": "/support/level", "value": "premium"}])));
    assert_eq!(s.amend(&path, Some(&later)).await.1["status"], "applied");

    let who = json!({"by": "legal@example.test", "reason": "signed in error"});
    let (code, r) = s.amend(&format!("{path}/up/reverse"), Some(&who)).await;
    assert_eq!((code, r["status"].as_str(), r["reversed_version"].as_u64()), (200, Some("reversed"), Some(4)), "{r}");
    let c = s.amend(&format!("/contracts/{k}"), None).await.1;
    assert_eq!(c["document"]["support"]["level"], "premium");
    assert_eq!((c["document"]["tier"].as_str(), c["document"]["seats"].as_u64()), (Some("business"), Some(3)));
    s.statuses_are(&t, &[("dee", "pending_seat")]).await;
    let after = settled(&s, &t).await;
    assert_eq!(after, before, "tenant and every member byte for byte");
    let (code, again) = s.amend(&format!("{path}/up/reverse"), Some(&who)).await;
    assert_eq!((code, again["status"].as_str()), (200, Some("reversed")), "reversing twice changes nothing");
    assert_eq!(s.amend(&format!("/contracts/{k}"), None).await.1["version"], 4);

    // A reversal that meets a later change of the same clause is refused, naming it.
    let seats = amendment("seats", 4, ("patch", json!([{"op": "replace", "path": "/seats", "value": 4}])));
    assert_eq!(s.amend(&path, Some(&seats)).await.1["status"], "applied");
    let more = amendment("more", 5, ("patch", json!([{"op": "replace", "path": "/seats", "value": 5}])));
    assert_eq!(s.amend(&path, Some(&more)).await.1["status"], "applied");
    let (code, e) = s.amend(&format!("{path}/seats/reverse"), Some(&who)).await;
    assert_eq!((code, e["error"]["code"].as_str(), e["error"]["clauses"].clone()), (409, Some("reversal_conflict"), json!(["seats"])), "{e}");
    assert!(s.verify(&t).await["ok"].as_bool().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_amendments_on_one_base_version_exactly_one_wins() {
    let s = std::sync::Arc::new(Stack::connect().await);
    let (_, k) = contracted(&s, 4).await;
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (s, k) = (s.clone(), k.clone());
            tokio::spawn(async move {
                let a = amendment(&format!("race-{i}"), 1, ("patch", json!([{"op": "replace", "path": "/support/level", "value": format!("level-{i}")}])));
                s.amend(&format!("/contracts/{k}/amendments"), Some(&a)).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let won = answers.iter().filter(|(code, _)| *code == 201).count();
    let stale = answers.iter().filter(|(code, b)| *code == 409 && b["error"]["code"] == "stale_base_version").count();
    assert_eq!((won, stale), (1, 5), "{answers:?}");
    let c = s.amend(&format!("/contracts/{k}"), None).await.1;
    assert_eq!(c["version"], 2);
}

#[tokio::test]
async fn a_crash_between_the_new_version_and_its_reconcile_still_converges() {
    let s = Stack::connect().await;
    let (t, k) = contracted(&s, 3).await;
    // Let the reconciles of the account creations finish first.
    s.settle(&t).await;
    let body = amendment("grow", 1, ("patch", json!([{"op": "replace", "path": "/seats", "value": 4}])));
    // The function stored the new version, then died before queueing the reconcile.
    let request: AmendmentRequest = serde_json::from_value(body.clone()).unwrap();
    let cid = ContractId::parse(&k).unwrap();
    let hash = entitle::core::audit::hash_of(&body.to_string());
    let submission = entitle::app::contracts::Submission { contract: &cid, request: &request, principal: None, body_hash: &hash, dry_run: false };
    let (stored, fresh) = entitle::app::contracts::submit(&s.store(), submission, Utc::now()).await.unwrap();
    assert!(fresh && stored.status == entitle::core::contract::AmendmentStatus::Applied);
    // Every message queued for the tenant so far is processed, and none
    // applied the new version.
    s.settle(&t).await;
    assert_eq!(s.member(&t, "dee").await.1["status"], "pending_seat", "no reconcile was queued");
    // The caller retries, as it must when it got no answer: same body, same effect, reconcile queued.
    let (code, retry) = s.amend(&format!("/contracts/{k}/amendments"), Some(&body)).await;
    assert_eq!((code, retry["status"].as_str()), (200, Some("applied")));
    s.statuses_are(&t, &[("dee", "active")]).await;
    assert_eq!(s.amend(&format!("/contracts/{k}"), None).await.1["version"], 2, "applied once");
}
