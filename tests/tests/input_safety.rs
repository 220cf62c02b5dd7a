//! Forged, stale, replayed, malformed, oversize and cross-tenant input gets
//! a clear 4xx JSON error and changes nothing; tampering with the audit trail
//! is detected.

use aws_sdk_dynamodb::types::AttributeValue;
use entitle::core::signature::{sign, Secret};
use entitle_tests::{member_body, now, stripe_event, unique, Stack};
use serde_json::{json, Value};

/// A subscription of the tenant in Stripe (three team seats), announced
/// by localstripe and taken; and another event about it (a new id), as
/// Stripe would send it.
async fn created(s: &Stack, t: &str) -> Value {
    let sub = s.billing.subscribe(Some(t), "team_monthly", 3).await;
    let id = sub["id"].as_str().unwrap();
    s.webhook_taken(t, id, "customer.subscription.created").await;
    s.tenant_where(t, "provisioned", |v| v["tier"] == "team").await;
    stripe_event(&format!("evt_{}", t.replace('-', "")), "customer.subscription.updated", now(), &sub)
}

fn assert_error(answer: &(u16, Value), status: u16, code: &str, mentions: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().expect("error message");
    assert!(message.contains(mentions), "message {message:?} should mention {mentions:?}");
}

#[tokio::test]
async fn forged_stale_and_replayed_signatures_are_refused_and_store_nothing() {
    let s = Stack::connect().await;
    let t = unique("sig");
    let event = created(&s, &t).await;
    let body_id = event["id"].as_str().unwrap().to_string();
    let body = serde_json::to_vec(&event).unwrap();
    let good = sign(&s.stripe_secret, now(), &body);
    let baseline = s.stored_items(&t).await;

    let forged = sign(&Secret::new("whsec_attacker"), now(), &body);
    assert_error(&s.post_signed("/stripe", "Stripe-Signature", &body, Some(forged)).await, 401, "invalid_signature", "no signature matches");

    let mut tampered = body.clone();
    let at = tampered.iter().position(|&b| b == b'3').unwrap();
    tampered[at] = b'9';
    assert_error(&s.post_signed("/stripe", "Stripe-Signature", &tampered, Some(good.clone())).await, 401, "invalid_signature", "no signature matches");

    // A signature captured earlier and replayed after the tolerance (300 s),
    // and one from the future. A minute beyond it either way: a request that
    // takes seconds to reach ingest on a loaded machine (a signature 301 s
    // ahead arrived 300 s ahead, and was rightly accepted) is still outside.
    let stale = sign(&s.stripe_secret, now() - 360, &body);
    assert_error(&s.post_signed("/stripe", "Stripe-Signature", &body, Some(stale)).await, 401, "invalid_signature", "tolerance");
    let future = sign(&s.stripe_secret, now() + 360, &body);
    assert_error(&s.post_signed("/stripe", "Stripe-Signature", &body, Some(future)).await, 401, "invalid_signature", "tolerance");
    assert_error(&s.post_signed("/stripe", "Stripe-Signature", &body, None).await, 401, "invalid_signature", "missing");
    assert_error(&s.post_signed("/stripe", "Stripe-Signature", &body, Some("t=abc,v1=00".into())).await, 401, "invalid_signature", "malformed");
    // The CRM secret does not sign Stripe webhooks, nor the other way round.
    let crm_signed = sign(&s.crm_secret, now(), &body);
    assert_error(&s.post_signed("/stripe", "Stripe-Signature", &body, Some(crm_signed)).await, 401, "invalid_signature", "no signature matches");
    let crm_body =
        serde_json::to_vec(&json!({"event_id": "x", "tenant_id": t, "license_id": "l", "tier": "team", "seats": 1, "status": "active", "source_version": 1, "starts_at": null, "expires_at": null}))
            .unwrap();
    let stripe_signed = sign(&s.stripe_secret, now(), &crm_body);
    assert_error(&s.post_signed("/crm", "Entitle-Signature", &crm_body, Some(stripe_signed)).await, 401, "invalid_signature", "Entitle-Signature");

    assert_eq!(s.stored_items(&t).await, baseline, "nothing stored for refused requests");
    assert!(!s.event_accepted(&t, body_id.as_str()).await);

    // A valid delivery, then the same signed request replayed within the
    // tolerance: idempotent on the event id, so it changes nothing.
    assert_eq!(s.post_signed("/stripe", "Stripe-Signature", &body, Some(good.clone())).await.1["status"], "unchanged");
    let before = s.stored_items(&t).await;
    let (code, replay) = s.post_signed("/stripe", "Stripe-Signature", &body, Some(good)).await;
    assert_eq!((code, replay["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(s.stored_items(&t).await, before, "a replay stores nothing");
}

#[tokio::test]
async fn malformed_and_oversize_bodies_get_named_errors_and_store_nothing() {
    let s = Stack::connect().await;
    let t = unique("bad");
    let signed = |body: &[u8]| sign(&s.stripe_secret, now(), body);

    let not_json = b"{not json".to_vec();
    assert_error(&s.post_signed("/stripe", "Stripe-Signature", &not_json, Some(signed(&not_json))).await, 400, "malformed_body", "invalid JSON");
    let event = created(&s, &t).await;
    let mut no_created = event.clone();
    no_created.as_object_mut().unwrap().remove("created");
    let b = serde_json::to_vec(&no_created).unwrap();
    assert_error(&s.post_signed("/stripe", "Stripe-Signature", &b, Some(signed(&b))).await, 400, "malformed_event", "created");
    let mut oversize = event.clone();
    oversize["data"]["object"]["metadata"]["padding"] = json!("x".repeat(70 * 1024));
    let b = serde_json::to_vec(&oversize).unwrap();
    assert_error(&s.post_signed("/stripe", "Stripe-Signature", &b, Some(signed(&b))).await, 413, "payload_too_large", "bytes");

    // CRM: well formed but invalid against the model: every problem named.
    let record = json!({"event_id": format!("crm-{t}"), "tenant_id": t, "license_id": "crm-1", "tier": "platinum", "seats": 5,
        "add_ons": ["jetpack"], "starts_at": "2026-06-01T00:00:00Z", "expires_at": "2026-01-01T00:00:00Z", "status": "active", "source_version": 1});
    let answer = s.crm(&record).await;
    assert_error(&answer, 422, "invalid_license_record", "platinum");
    let message = answer.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("jetpack") && message.contains("expires_at"), "{message}");
    let mut unknown_field = record.clone();
    unknown_field["tier"] = json!("team");
    unknown_field["colour"] = json!("blue");
    assert_error(&s.crm(&unknown_field).await, 400, "malformed_body", "colour");

    // Account events (the tenant is licensed by its subscription).
    let before = s.stored_items(&t).await;
    assert_error(&s.create_member_raw(&t, b"[1,2".to_vec()).await, 400, "malformed_body", "invalid JSON");
    assert_error(&s.create_member(&t, &json!({"user_id": "u1"})).await, 400, "malformed_body", "email");
    assert_error(&s.create_member(&t, &json!({"user_id": "u 1", "email": "a@b.test"})).await, 400, "malformed_body", "user_id");
    assert_error(&s.create_member(&t, &json!({"user_id": "u1", "email": "nope"})).await, 422, "invalid_member", "email");
    assert_error(&s.create_member_raw(&t, vec![b' '; 70 * 1024]).await, 413, "payload_too_large", "bytes");
    assert_error(&s.create_member(&unique("nobody"), &member_body("u1", &[])).await, 404, "not_found", "tenant");
    assert_eq!(s.stored_items(&t).await, before, "refused account events store nothing");
}

#[tokio::test]
async fn tenants_cannot_reach_each_others_members_or_audit() {
    let s = Stack::connect().await;
    let a = unique("ta");
    let b = unique("tb");
    for t in [&a, &b] {
        created(&s, t).await;
    }
    s.create_member(&a, &member_body("alice", &["admins"])).await;
    assert_eq!(s.member(&a, "alice").await.0, 200);
    assert_error(&s.member(&b, "alice").await, 404, "not_found", "alice");
    assert_error(&s.delete_member(&b, "alice").await, 404, "not_found", "alice");
    assert_eq!(s.member(&a, "alice").await.1["status"], "active", "untouched by the other tenant's call");
    assert_error(&s.tenant(&unique("ghost")).await, 404, "not_found", "tenant");
    assert_error(&s.get(&format!("/tenants/{}/audit", unique("ghost"))).await, 404, "not_found", "tenant");
    assert_error(&s.get("/tenants/a%23b").await, 400, "invalid_path", "tenant_id");
    assert_error(&s.get("/elsewhere").await, 404, "no_route", "/elsewhere");
    let audit_b = s.audit(&b).await;
    assert!(audit_b.iter().all(|r| r["tenant_id"] == b.as_str()));
    assert!(!audit_b.iter().any(|r| r["subject"] == "member:alice"));
}

#[tokio::test]
async fn tampering_with_the_audit_trail_is_detected() {
    let s = Stack::connect().await;
    let t = unique("tamper");
    created(&s, &t).await;
    for u in ["a", "b", "c", "d"] {
        s.create_member(&t, &member_body(u, &[])).await;
    }
    s.tenant_where(&t, "reconciled", |v| v["seats"]["used"] == 3).await;
    let v = s.verify(&t).await;
    assert_eq!(v["ok"], true, "{v}");

    // Someone with table access rewrites history: d "was" active.
    let key = |seq: u64| [("tenant_id".to_string(), AttributeValue::S(t.clone())), ("seq".to_string(), AttributeValue::N(seq.to_string()))].into_iter().collect::<std::collections::HashMap<_, _>>();
    let record = s.ddb.get_item().table_name(&s.tables.audit).set_key(Some(key(3))).send().await.unwrap().item.unwrap();
    let original = record["record"].as_s().unwrap().clone();
    let edited = original.replacen("seat", "SEAT", 1);
    assert_ne!(edited, original);
    s.ddb
        .update_item()
        .table_name(&s.tables.audit)
        .set_key(Some(key(3)))
        .update_expression("SET #r = :r")
        .expression_attribute_names("#r", "record")
        .expression_attribute_values(":r", AttributeValue::S(edited.clone()))
        .send()
        .await
        .unwrap();
    let v = s.verify(&t).await;
    assert_eq!((v["ok"].as_bool(), v["first_bad_seq"].as_u64()), (Some(false), Some(3)), "{v}");

    // Recomputing the edited record's hash only moves the break to the next link.
    let rehashed = entitle::core::audit::hash_of(&edited);
    s.ddb
        .update_item()
        .table_name(&s.tables.audit)
        .set_key(Some(key(3)))
        .update_expression("SET #h = :h")
        .expression_attribute_names("#h", "hash")
        .expression_attribute_values(":h", AttributeValue::S(rehashed))
        .send()
        .await
        .unwrap();
    let v = s.verify(&t).await;
    assert_eq!((v["ok"].as_bool(), v["first_bad_seq"].as_u64()), (Some(false), Some(4)), "{v}");

    // Deleting the last record is caught by the tenant's head.
    let last = v["head_hash"].as_str().unwrap().to_string();
    let head_seq = s.audit(&t).await.last().unwrap()["seq"].as_u64().unwrap();
    s.ddb.delete_item().table_name(&s.tables.audit).set_key(Some(key(head_seq))).send().await.unwrap();
    let v = s.verify(&t).await;
    assert_eq!(v["ok"], false);
    assert_eq!(v["head_hash"], last.as_str());
}

#[tokio::test]
async fn a_record_forged_beyond_the_head_is_detected() {
    let s = Stack::connect().await;
    let t = unique("orphan");
    created(&s, &t).await;
    let v = s.verify(&t).await;
    assert_eq!(v["ok"], true, "{v}");
    let head = v["records"].as_u64().unwrap();
    s.ddb
        .put_item()
        .table_name(&s.tables.audit)
        .item("tenant_id", AttributeValue::S(t.clone()))
        .item("seq", AttributeValue::N((head + 100).to_string()))
        .item("record", AttributeValue::S("{\"action\":\"member_created\"}".into()))
        .item("hash", AttributeValue::S(entitle::core::audit::hash_of("{\"action\":\"member_created\"}")))
        .send()
        .await
        .unwrap();
    let v = s.verify(&t).await;
    assert_eq!((v["ok"].as_bool(), v["first_bad_seq"].as_u64()), (Some(false), Some(head + 100)), "{v}");
    assert!(v["problem"].as_str().unwrap().contains("beyond"), "{v}");
}
