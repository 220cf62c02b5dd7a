//! The admin function through its real binary: dead letters listed without
//! being consumed and redriven (then applied), a parked Stripe event listed
//! and replayed (still parked, then applied), signed audit exports verified
//! offline with the public key (`dev/verify-export.sh`: jq, openssl) and
//! tampered ones refused, bad input answered 4xx with the JSON error body.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use entitle::app::ports::Checkpoints;
use entitle::core::audit::{chain, verify_export, AuditEvent, AuditRecord, ChainHead, Checkpoint, CHECKPOINT_INTERVAL};

use entitle_tests::{member_body, unique, Stack};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn admin(s: &Stack) -> String {
    s.settings.get("ENTITLE_ADMIN_URL").cloned().expect("stack settings lack ENTITLE_ADMIN_URL")
}

async fn get(s: &Stack, path: &str) -> (u16, String) {
    let res = s.http.get(format!("{}{path}", admin(s))).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// A JSON answer, checked against infra/openapi.yaml.
async fn get_json(s: &Stack, path: &str) -> (u16, Value) {
    let (code, text) = get(s, path).await;
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    entitle_tests::openapi::check("GET", &format!("{}{path}", admin(s)), code, &body);
    (code, body)
}

async fn post(s: &Stack, path: &str, body: &str) -> (u16, Value) {
    let res = s.http.post(format!("{}{path}", admin(s))).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
    let code = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    entitle_tests::openapi::check("POST", &format!("{}{path}", admin(s)), code, &body);
    (code, body)
}

fn crm_record(t: &str, version: i64, seats: u64) -> Value {
    json!({"event_id": format!("crm-{t}-{version}"), "tenant_id": t, "license_id": "crm-lic-1", "tier": "business",
        "seats": seats, "add_ons": [], "starts_at": "2026-01-01T00:00:00Z", "expires_at": entitle_tests::far_future(),
        "status": "active", "source_version": version})
}

/// A license item reconcile cannot read: every reconcile of the tenant fails.
async fn break_tenant(s: &Stack, t: &str, broken: bool) {
    let key = |r: aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder| {
        r.table_name(&s.tables.state).item("pk", AttributeValue::S(format!("T#{t}"))).item("sk", AttributeValue::S("LIC#crm#broken".into()))
    };
    if broken {
        key(s.ddb.put_item()).item("license", AttributeValue::S("{\"broken\": true}".into())).send().await.unwrap();
    } else {
        s.ddb.delete_item().table_name(&s.tables.state).key("pk", AttributeValue::S(format!("T#{t}"))).key("sk", AttributeValue::S("LIC#crm#broken".into())).send().await.unwrap();
    }
}

/// The tenant's parked Stripe event, once the webhook has been parked.
async fn parked_event(s: &Stack, t: &str) -> Value {
    s.eventually("the webhook parked", || async {
        let (code, body) = get_json(s, "/parked?source=stripe").await;
        assert_eq!(code, 200, "{body}");
        let mine = body["parked"].as_array().unwrap().iter().find(|p| p["tenant_id"] == t).cloned();
        (mine.is_some(), mine.unwrap_or(Value::Null))
    })
    .await
}

async fn dead_letter_of(s: &Stack, t: &str) -> Option<Value> {
    let (code, body) = get_json(s, "/dead-letters").await;
    assert_eq!(code, 200, "{body}");
    body["dead_letters"].as_array().unwrap().iter().find(|l| l["tenant_id"] == t).cloned()
}

#[tokio::test]
async fn a_dead_letter_is_listed_without_being_consumed_then_redriven_and_applied() {
    let s = Stack::connect().await;
    let t = unique("dlq");
    assert_eq!(s.crm(&crm_record(&t, 1, 5)).await.1["status"], "applied");
    s.tenant_where(&t, "five seats", |v| v["seats"]["total"] == 5).await;
    // The next change's reconcile fails on every receive and is parked.
    break_tenant(&s, &t, true).await;
    assert_eq!(s.crm(&crm_record(&t, 2, 9)).await.1["status"], "applied");
    let deadline = Instant::now() + Duration::from_secs(90);
    let letter = loop {
        if let Some(l) = dead_letter_of(&s, &t).await {
            break l;
        }
        assert!(Instant::now() < deadline, "the reconcile of {t} never reached the dead-letter queue");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(letter["error_code"], "reconcile_failed", "{letter}");
    assert!(letter["error_message"].as_str().unwrap().contains("LIC#crm#broken"), "{letter}");
    assert_eq!(letter["receive_count"], 5, "{letter}");
    assert_eq!(letter["body"]["tenant_id"], t.as_str(), "{letter}");
    assert!(letter["parked_at"].as_str().is_some_and(|a| a.starts_with("20")), "{letter}");
    // Listed again: still there (listing does not consume).
    let (_, listed) = get_json(&s, "/dead-letters").await;
    assert!(listed["dead_letters"].as_array().unwrap().iter().any(|l| l["message_id"] == letter["message_id"]), "still on the dead-letter queue after a listing: {listed}");

    // The cause fixed, the operator redrives that message: it is applied.
    break_tenant(&s, &t, false).await;
    assert_eq!(s.tenant_where(&t, "still five", |_| true).await["seats"]["total"], 5, "nothing applied before the redrive");
    let id = letter["message_id"].as_str().unwrap();
    let (code, moved) = post(&s, "/dead-letters/redrive", &json!({"message_ids": [id, "no-such-message"]}).to_string()).await;
    assert_eq!(code, 200, "{moved}");
    assert_eq!(moved["moved"].as_array().unwrap().iter().map(|m| m["message_id"].as_str().unwrap()).collect::<Vec<_>>(), [id], "{moved}");
    assert_eq!(moved["not_found"], json!(["no-such-message"]), "{moved}");
    s.tenant_where(&t, "the redriven reconcile applied", |v| v["seats"]["total"] == 9).await;
    // That message is off the dead-letter queue (another of the tenant's,
    // parked while it was broken, would be listed on its own).
    let (_, listed) = get_json(&s, "/dead-letters").await;
    assert!(!listed["dead_letters"].as_array().unwrap().iter().any(|l| l["message_id"] == id), "moved off the dead-letter queue: {listed}");
    // Audited in the tenant's chain, with the cause it was parked for.
    let audit = s.audit(&t).await;
    let redriven: Vec<&Value> = audit.iter().filter(|r| r["action"] == "dead_letter_redriven").collect();
    assert_eq!(redriven.len(), 1, "{audit:?}");
    assert_eq!(redriven[0]["subject"], format!("message:{id}"));
    assert_eq!(redriven[0]["before"]["error_code"], "reconcile_failed");
    assert_eq!(s.get(&format!("/tenants/{t}/audit/verify")).await.1["ok"], true);
}

#[tokio::test]
async fn a_parked_stripe_event_is_listed_then_replayed_once_its_reason_no_longer_holds() {
    let s = Stack::connect().await;
    let t = unique("replay");
    let gold = format!("gold_{}", unique("plan").replace('-', "_"));
    s.billing.post("/v1/plans", &json!({"id": gold, "amount": 9900, "currency": "usd", "interval": "month", "product": {"name": "Gold"}})).await;
    let sub = s.billing.subscribe(Some(&t), &gold, 3).await;
    let subscription = sub["id"].as_str().unwrap();
    // localstripe's webhook reaches ingest and is parked: the price is not in the model.
    let parked = parked_event(&s, &t).await;
    assert!(parked["reason"].as_str().unwrap().contains(&gold), "{parked}");
    assert_eq!(parked["source"], "stripe");
    assert!(parked["age_secs"].as_i64().unwrap() >= 0 && parked["parked_at"].as_str().unwrap().starts_with("20"), "{parked}");
    let event_id = parked["event_id"].as_str().unwrap().to_string();
    let (_, all) = get_json(&s, "/parked").await;
    assert!(all["parked"].as_array().unwrap().iter().any(|p| p["event_id"] == event_id.as_str()), "listed without a source filter too");

    // Replayed while the reason holds: still parked, nothing new recorded.
    let records = s.audit(&t).await.len();
    let (code, answer) = post(&s, &format!("/parked/{event_id}/replay"), "").await;
    assert_eq!((code, answer["status"].as_str(), answer["parked"].as_bool()), (200, Some("parked"), Some(true)), "{answer}");
    assert_eq!(s.audit(&t).await.len(), records, "a replay that parks again writes nothing");

    // The reason goes away (here: the customer moves to a price the model
    // knows; a model that learns the price is the same path): replayed, the
    // event's subscription, read from Stripe now, is recorded and applied.
    s.billing.set_plan(subscription, "team_monthly", 3).await;
    let (code, answer) = post(&s, &format!("/parked/{event_id}/replay"), "").await;
    assert_eq!((code, answer["parked"].as_bool()), (200, Some(false)), "{answer}");
    // (The plan change's own webhook may have recorded the license first.)
    assert!(["applied", "unchanged"].contains(&answer["status"].as_str().unwrap()), "{answer}");
    assert_eq!(answer["tenant_id"], t.as_str());
    s.tenant_where(&t, "the team plan applied", |v| v["seats"]["total"] == 3).await;
    let (_, after) = get_json(&s, "/parked?source=stripe").await;
    assert!(!after["parked"].as_array().unwrap().iter().any(|p| p["event_id"] == event_id.as_str()), "unparked: {after}");
    let audit = s.audit(&t).await;
    assert!(audit.iter().any(|r| r["cause"]["id"] == event_id.as_str() && ["license_recorded", "license_unchanged"].contains(&r["action"].as_str().unwrap())), "{audit:?}");
    let (code, body) = post(&s, &format!("/parked/{event_id}/replay"), "").await;
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
}

#[tokio::test]
async fn amendments_waiting_for_review_are_listed_oldest_first_until_decided() {
    let s = Stack::connect().await;
    let t = unique("review");
    let k = format!("k-{t}");
    let document = json!({"contract_id": k, "tenant_id": t,
        "term": {"start": "2026-01-01T00:00:00Z", "end": "2090-01-01T00:00:00Z", "auto_renew": true},
        "tier": "business", "seats": 10, "add_ons": [], "named_users": [], "role_mappings": {}, "support": {"level": "standard"}});
    assert_eq!(s.amend("/contracts", Some(&document)).await.0, 201);
    let path = format!("/contracts/{k}/amendments");
    for (id, seats) in [("cut-1", 2), ("cut-2", 1)] {
        let cut = json!({"amendment_id": id, "base_version": 1, "patch": [{"op": "replace", "path": "/seats", "value": seats}]});
        let (code, held) = s.amend(&path, Some(&cut)).await;
        assert_eq!((code, held["status"].as_str()), (201, Some("pending_review")), "{held}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mine = |body: &Value| -> Vec<Value> { body["reviews"].as_array().unwrap().iter().filter(|r| r["tenant_id"] == t.as_str()).cloned().collect() };
    let (code, body) = get_json(&s, "/reviews").await;
    assert_eq!(code, 200, "{body}");
    let waiting = mine(&body);
    assert_eq!(waiting.iter().map(|r| r["amendment_id"].as_str().unwrap()).collect::<Vec<_>>(), ["cut-1", "cut-2"], "oldest first: {body}");
    let first = &waiting[0];
    assert_eq!(first["contract_id"], k.as_str());
    assert!(first["review"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().contains("max_seat_reduction_percent")), "the rules that fired: {first}");
    assert!(!first["changes"].as_array().unwrap().is_empty() && first["impact"].is_object(), "{first}");
    assert!(first["waiting_secs"].as_i64().unwrap() >= 0);
    let all: Vec<&str> = body["reviews"].as_array().unwrap().iter().map(|r| r["created_at"].as_str().unwrap()).collect();
    assert!(all.windows(2).all(|w| w[0] <= w[1]), "oldest first across tenants: {all:?}");

    // Decided: off the list.
    let who = json!({"by": "cfo@example.test", "reason": "no"});
    assert_eq!(s.amend(&format!("{path}/cut-1/reject"), Some(&who)).await.0, 200);
    let (_, body) = get_json(&s, "/reviews").await;
    assert_eq!(mine(&body).iter().map(|r| r["amendment_id"].as_str().unwrap()).collect::<Vec<_>>(), ["cut-2"], "{body}");
    let (code, body) = get_json(&s, "/reviews?limit=0").await;
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("invalid_query")), "{body}");
}

#[tokio::test]
async fn explain_says_why_a_member_has_its_access() {
    let s = Stack::connect().await;
    let t = unique("explain");
    assert_eq!(s.crm(&crm_record(&t, 1, 2)).await.1["status"], "applied");
    s.tenant_where(&t, "provisioned", |v| v["seats"]["total"] == 2).await;
    for (u, groups) in [("ann", vec![]), ("bob", vec!["finance"]), ("cal", vec![])] {
        assert_eq!(s.create_member(&t, &member_body(u, &groups)).await.0, 201);
    }
    s.settle(&t).await;
    let (code, bob) = get_json(&s, &format!("/tenants/{t}/members/bob/explain")).await;
    assert_eq!(code, 200, "{bob}");
    // Why bob is a billing-admin: the finance rule of the model, at the
    // business tier of the CRM license, with the second of two seats.
    let grants: Vec<(&str, &str)> = bob["roles"].as_array().unwrap().iter().map(|g| (g["role"].as_str().unwrap(), g["rule"].as_str().unwrap())).collect();
    assert!(grants.contains(&("billing-admin", "finance-billing-admin")), "{bob}");
    assert_eq!(
        (bob["license"]["tier"].as_str(), bob["license"]["licenses"][0]["source"].as_str(), bob["license"]["licenses"][0]["license_id"].as_str()),
        (Some("business"), Some("crm"), Some("crm-lic-1")),
        "{bob}"
    );
    assert_eq!((bob["seat"]["rank"].as_u64(), bob["seat"]["seats_total"].as_u64(), bob["seat"]["holds_seat"].as_bool()), (Some(2), Some(2), Some(true)), "{bob}");
    assert_eq!((bob["access"]["status"].as_str(), bob["in_sync"].as_bool()), (Some("active"), Some(true)), "{bob}");
    let actions: Vec<&str> = bob["audit"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"member_created"), "the records that changed bob: {bob}");
    assert!(bob["audit"].as_array().unwrap().iter().all(|r| r["subject"] == "member:bob"), "{bob}");
    assert_eq!(bob["seat"]["standing"], "holds", "{bob}");
    // cal, created third for two seats, waits first in line: the seat order says why.
    let (_, cal) = get_json(&s, &format!("/tenants/{t}/members/cal/explain")).await;
    assert_eq!(
        (cal["seat"]["standing"].as_str(), cal["seat"]["rank"].as_u64(), cal["seat"]["holds_seat"].as_bool(), cal["access"]["status"].as_str()),
        (Some("waiting"), Some(1), Some(false), Some("pending_seat")),
        "{cal}"
    );
    assert!(cal["rule"].as_str().unwrap().contains("place 1 in line") && cal["roles"].as_array().unwrap().is_empty(), "{cal}");
    assert!(cal["seat"]["since"].as_str().is_some_and(|t| t.starts_with("20")), "{cal}");
    // Given ann's seat by the tenant's admin: pinned, and explain says so.
    let (code, given) = s.put_seat(&t, "cal", &json!({"hold": true, "from": "ann", "by": "owner@acme.test"})).await;
    assert_eq!((code, given["status"].as_str()), (200, Some("active")), "{given}");
    let (_, cal) = get_json(&s, &format!("/tenants/{t}/members/cal/explain")).await;
    assert_eq!((cal["seat"]["standing"].as_str(), cal["seat"]["pin"]["hold"].as_bool()), (Some("holds"), Some(true)), "{cal}");
    assert!(cal["seat"]["why"].as_str().unwrap().contains("pinned by owner@acme.test"), "{cal}");
    let (code, body) = get_json(&s, &format!("/tenants/{t}/members/nobody/explain")).await;
    assert_eq!((code, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
}

/// An export of a tenant with a few records.
async fn exported(s: &Stack) -> (String, String, String) {
    let t = unique("export");
    assert_eq!(s.crm(&crm_record(&t, 1, 5)).await.1["status"], "applied");
    s.tenant_where(&t, "provisioned", |v| v["seats"]["total"] == 5).await;
    for u in ["ann", "bob"] {
        assert_eq!(s.create_member(&t, &member_body(u, &[])).await.0, 201);
    }
    s.settle(&t).await;
    let (code, text) = get(s, &format!("/tenants/{t}/audit/export")).await;
    assert_eq!(code, 200, "{text}");
    let (code, pem) = get(s, "/audit/public-key").await;
    assert_eq!(code, 200, "{pem}");
    // The two answers that are not JSON are documented with their types.
    for (path, route, kind) in
        [(format!("tenants/{t}/audit/export"), "/tenants/{tenant}/audit/export", "application/x-ndjson"), ("audit/public-key".to_string(), "/audit/public-key", "application/x-pem-file")]
    {
        let (template, op) = entitle_tests::openapi::operation("admin", "GET", &path).expect("documented");
        assert_eq!(template, route);
        assert!(op["responses"]["200"]["content"].get(kind).is_some(), "{route} answers {kind}");
    }
    (t, text, pem)
}

/// `dev/verify-export.sh` (jq, openssl, sha256sum: what docs/api.md shows).
fn verify_offline(export: &str, pem: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(unique("verify"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("export.jsonl"), export).unwrap();
    std::fs::write(dir.join("public-key.pem"), pem).unwrap();
    let script = format!("{}/../dev/verify-export.sh", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(script).arg(dir.join("export.jsonl")).arg(dir.join("public-key.pem")).output().expect("dev/verify-export.sh runs");
    std::fs::remove_dir_all(&dir).ok();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn an_audit_export_verifies_offline_and_a_tampered_one_does_not() {
    let s = Stack::connect().await;
    let (t, text, pem) = exported(&s).await;
    let checkpoint = verify_export(&text).unwrap();
    let verified = s.get(&format!("/tenants/{t}/audit/verify")).await.1;
    assert_eq!((checkpoint.seq, &checkpoint.head_hash), (verified["records"].as_u64().unwrap(), &verified["head_hash"].as_str().unwrap().to_string()), "{verified}");
    assert!(checkpoint.seq >= 4, "license, tenant access, two creations: {text}");
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let (ok, said) = verify_offline(&text, &pem);
    assert!(ok, "{said}");
    assert!(said.contains(&format!("tenant {t}, records up to {}", checkpoint.seq)), "{said}");

    // A range: from the second record on, to the third.
    let (code, part) = get(&s, &format!("/tenants/{t}/audit/export?from_seq=2&to_seq=3")).await;
    assert_eq!(code, 200, "{part}");
    assert_eq!(part.lines().count(), 3, "two records and the checkpoint: {part}");
    assert_eq!(verify_export(&part).unwrap().seq, 3);
    assert!(verify_offline(&part, &pem).0);

    // A record edited (a member's subject), its hash left as it was.
    let lines: Vec<&str> = text.lines().collect();
    let edited = text.replacen("member:ann", "member:eve", 1);
    assert_ne!(edited, text);
    let (ok, said) = verify_offline(&edited, &pem);
    assert!(!ok && said.contains("does not link"), "{said}");

    // The chain and its hashes rewritten from the first record on, ending
    // in a new head: the signed checkpoint does not match it, and a
    // checkpoint claiming the new head is not signed by the key.
    let records: Vec<AuditRecord> = lines[..lines.len() - 1].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut events: Vec<AuditEvent> = records.iter().map(|r| r.event.clone()).collect();
    events[0].rule = "rewritten".into();
    let (forged, head): (Vec<_>, ChainHead) = chain(&t, &ChainHead::genesis(), &records[0].at, events);
    let forged_lines: Vec<String> = forged.iter().map(|(_, json, _)| json.clone()).collect();
    let with_old_checkpoint = format!("{}\n{}\n", forged_lines.join("\n"), lines[lines.len() - 1]);
    let (ok, said) = verify_offline(&with_old_checkpoint, &pem);
    assert!(!ok && said.contains("the signed checkpoint says"), "{said}");
    let mut claimed: Checkpoint = serde_json::from_str(lines[lines.len() - 1]).unwrap();
    (claimed.seq, claimed.head_hash) = (head.seq, head.hash);
    let with_new_checkpoint = format!("{}\n{}\n", forged_lines.join("\n"), serde_json::to_string(&claimed).unwrap());
    assert!(verify_export(&with_new_checkpoint).is_ok(), "internally consistent: only the signature tells");
    let (ok, said) = verify_offline(&with_new_checkpoint, &pem);
    assert!(!ok && said.contains("signature does not verify"), "{said}");
}

/// The sweep signs a checkpoint of each chain head that moved (an interval
/// after it moved) and stores it; an export carries the stored ones of its
/// range. Someone with write access to the tables then rewrites the chain,
/// its hashes and the head: `GET .../audit/verify` and a fresh export's own
/// signed checkpoint agree with the rewrite; the stored checkpoint, signed
/// before it, does not.
#[tokio::test]
async fn a_table_rewritten_with_its_hashes_fails_against_the_sweeps_signed_checkpoint() {
    let s = Stack::connect().await;
    let (t, text, pem) = exported(&s).await;
    let last = |text: &str| serde_json::from_str::<Checkpoint>(text.lines().last().unwrap()).unwrap();
    assert!(last(&text).earlier.is_empty(), "nothing stored before the sweep: {text}");
    let head = last(&text).seq;

    // Within the interval the head is not due; after it, the sweep signs it.
    s.sweep(Utc::now()).await;
    assert!(last(&get(&s, &format!("/tenants/{t}/audit/export")).await.1).earlier.is_empty(), "not due before {CHECKPOINT_INTERVAL}");
    let later = Utc::now() + CHECKPOINT_INTERVAL + chrono::Duration::minutes(1);
    let report = s.sweep(later).await;
    assert!(report["checkpoints"].as_u64().unwrap() >= 1, "{report}");
    s.sweep(later + chrono::Duration::minutes(5)).await;
    let (code, text) = get(&s, &format!("/tenants/{t}/audit/export")).await;
    assert_eq!(code, 200, "{text}");
    let stored = last(&text).earlier;
    assert_eq!(stored.len(), 1, "one checkpoint: a head signed is not due again within the interval: {text}");
    // The head the sweep signed is whatever it was when the sweep ran: no
    // earlier than the one exported before, no later than the one now
    // (and its hash is that of the record at its position: checked below).
    let signed = stored[0].seq;
    assert!(signed >= head && signed <= last(&text).seq && stored[0].tenant_id == t, "{text}");
    let (ok, said) = verify_offline(&text, &pem);
    assert!(ok && said.contains("1 stored checkpoint(s) agree"), "{said}");

    // The rewrite: record 1's rule changed, every record after it chained
    // again with new hashes, put over the originals, and META's head moved
    // to the new hash (DynamoDB Local has no resource policy to stop it).
    let lines: Vec<&str> = text.lines().collect();
    let records: Vec<AuditRecord> = lines[..lines.len() - 1].iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut events: Vec<AuditEvent> = records.iter().map(|r| r.event.clone()).collect();
    events[0].rule = "rewritten".into();
    let (forged, forged_head): (Vec<_>, ChainHead) = chain(&t, &ChainHead::genesis(), &records[0].at, events);
    for (record, json, hash) in &forged {
        s.ddb
            .put_item()
            .table_name(&s.tables.audit)
            .item("tenant_id", AttributeValue::S(t.clone()))
            .item("seq", AttributeValue::N(record.seq.to_string()))
            .item("record", AttributeValue::S(json.clone()))
            .item("hash", AttributeValue::S(hash.clone()))
            .send()
            .await
            .unwrap();
    }
    s.ddb
        .update_item()
        .table_name(&s.tables.state)
        .key("pk", AttributeValue::S(format!("T#{t}")))
        .key("sk", AttributeValue::S("META".into()))
        .update_expression("SET audit_hash = :h")
        .expression_attribute_values(":h", AttributeValue::S(forged_head.hash.clone()))
        .send()
        .await
        .unwrap();
    let verified = s.get(&format!("/tenants/{t}/audit/verify")).await.1;
    assert_eq!(verified["ok"], true, "the chain alone cannot tell: {verified}");

    let (code, rewritten) = get(&s, &format!("/tenants/{t}/audit/export")).await;
    assert_eq!(code, 200, "{rewritten}");
    assert!(rewritten.contains("rewritten"), "the export is of the rewritten table");
    let e = verify_export(&rewritten).unwrap_err();
    assert!(e.contains("rewritten after it was signed"), "{e}");
    let (ok, said) = verify_offline(&rewritten, &pem);
    assert!(!ok && said.contains("rewritten after it was signed"), "{said}");

    // A head that moved on while its checkpoint was being signed is due
    // again an interval later, not at the next run.
    assert_eq!(s.create_member(&t, &member_body("cat", &[])).await.0, 201);
    s.settle(&t).await;
    let again = Utc::now() + CHECKPOINT_INTERVAL;
    let tenant = entitle::core::ids::TenantId::parse(&t).unwrap();
    assert!(!s.store().checkpointed(&tenant, signed, again).await.unwrap(), "the head moved past the one signed");
    let meta = s.ddb.get_item().table_name(&s.tables.state).key("pk", AttributeValue::S(format!("T#{t}"))).key("sk", AttributeValue::S("META".into())).send().await.unwrap().item.unwrap();
    assert_eq!(meta["due_at"].as_n().unwrap(), &again.timestamp().to_string());
}

#[tokio::test]
async fn bad_input_to_every_admin_route_is_answered_4xx_with_the_error_body() {
    let s = Stack::connect().await;
    let t = unique("admin-bad");
    assert_eq!(s.crm(&crm_record(&t, 1, 5)).await.1["status"], "applied");
    s.tenant_where(&t, "provisioned", |_| true).await;
    let cases: Vec<(&str, String, Option<&str>, u16, &str)> = vec![
        ("POST", "/dead-letters/redrive".into(), Some("{\"message_ids\": \"one\"}"), 400, "malformed_body"),
        ("POST", "/dead-letters/redrive".into(), Some("{\"message_ids\": []}"), 400, "invalid_body"),
        ("POST", "/dead-letters/redrive".into(), Some("{\"all\": true}"), 400, "malformed_body"),
        ("POST", "/dead-letters/redrive".into(), Some("not json"), 400, "malformed_body"),
        ("GET", "/dead-letters/redrive".into(), None, 404, "no_route"),
        ("DELETE", "/dead-letters".into(), None, 404, "no_route"),
        ("GET", "/tenants/no-such-tenant-x/audit/export".into(), None, 404, "not_found"),
        ("GET", "/tenants/Bad%20Id!/audit/export".into(), None, 400, ""),
        ("GET", format!("/tenants/{t}/audit/export?from_seq=abc"), None, 400, "invalid_query"),
        ("GET", format!("/tenants/{t}/audit/export?from_seq=0"), None, 400, "invalid_query"),
        ("GET", format!("/tenants/{t}/audit/export?from_seq=3&to_seq=2"), None, 400, "invalid_query"),
        ("GET", format!("/tenants/{t}/audit/export?from_seq=999999"), None, 404, "not_found"),
        ("POST", "/audit/public-key".into(), Some("{}"), 404, "no_route"),
        ("GET", "/parked?source=paypal".into(), None, 400, "invalid_query"),
        ("GET", format!("/tenants/{t}/members/Bad%20Id!/explain"), None, 400, ""),
        ("GET", "/tenants/no-such-tenant-x/members/ann/explain".into(), None, 404, "not_found"),
        ("GET", "/reviews?limit=x".into(), None, 400, "invalid_query"),
        ("POST", "/parked/evt_no_such_event/replay".into(), None, 404, "not_found"),
        ("POST", "/parked/evt_x/replay?source=crm".into(), None, 400, "invalid_query"),
        ("DELETE", "/parked".into(), None, 404, "no_route"),
    ];
    for (method, path, body, status, code) in cases {
        let mut req = s.http.request(method.parse().unwrap(), format!("{}{path}", admin(&s)));
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let res = req.send().await.unwrap();
        let got = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        entitle_tests::openapi::check(method, &format!("{}{path}", admin(&s)), got, &body);
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(body["error"]["message"].is_string(), "{method} {path}: {body}");
        if !code.is_empty() {
            assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
        }
    }
}
