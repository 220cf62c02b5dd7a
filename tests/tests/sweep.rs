//! The expiry sweep through the real binary, driven by explicit times in the
//! scheduled event: every transition, a renewal in grace, a catch-up after
//! missed runs, overlapping runs, a run stopped mid-way and resumed, due
//! amendments, and the events it publishes.
//!
//! One test, in sequence: a sweep acts on everything due in the stack, so
//! scenarios run one after another on instants later than anything the other
//! test files create (the year 2101 and on). `make test` runs this file
//! first, on its fresh stack: after the others, every sweep would also
//! expire (and reconcile, and deliver) everything they left behind.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Duration, Utc};
use entitle::adapters::dynamodb::due::due_attributes;
use entitle::app::sweep::{sweep, SweepLimits};
use entitle::core::ids::TenantId;
use entitle_tests::{assert_valid_events, member_body, unique, Stack};
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn base() -> DateTime<Utc> {
    "2101-01-01T00:00:00Z".parse().unwrap()
}

fn days(n: i64) -> DateTime<Utc> {
    base() + Duration::days(n)
}

/// Three business seats in Stripe, monthly, the period ending at `ends`
/// (localstripe starts it a month before); localstripe announces it.
async fn subscribe(s: &Stack, t: &str, ends: DateTime<Utc>) -> String {
    let start = ends.checked_sub_months(chrono::Months::new(1)).unwrap();
    let sub = s.billing.subscribe_from(Some(t), "business_monthly", 3, Some(start.timestamp())).await;
    assert_eq!(sub["current_period_end"].as_i64(), Some(ends.timestamp()), "the period Stripe holds: {sub}");
    sub["id"].as_str().unwrap().to_string()
}

async fn crm(s: &Stack, t: &str, ends: DateTime<Utc>) {
    crm_with(s, t, ends, "active").await;
}

async fn crm_with(s: &Stack, t: &str, ends: DateTime<Utc>, status: &str) {
    let record = json!({"event_id": format!("crm-{t}"), "tenant_id": t, "license_id": format!("lic-{t}"), "tier": "team", "seats": 2,
        "add_ons": [], "starts_at": "2026-01-01T00:00:00Z", "expires_at": ends, "status": status, "source_version": 1});
    assert_eq!(s.crm(&record).await.0, 200);
}

/// The audit actions of one tenant from the sweep, in order.
async fn sweep_actions(s: &Stack, t: &str) -> Vec<String> {
    s.audit(t).await.iter().filter(|r| r["cause"]["kind"] == "sweep" && r["subject"].as_str().unwrap().starts_with("license:")).map(|r| r["action"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expiry_sweep_scenarios() {
    let s = Stack::connect().await;
    let tap = s.event_tap().await;
    let (stripe, renewal, trial, late, contract, catch_up) = (unique("sw-stripe"), unique("sw-renew"), unique("sw-trial"), unique("sw-late"), unique("sw-ctr"), unique("sw-catch"));
    subscribe(&s, &stripe, days(40)).await;
    let renewal_sub = subscribe(&s, &renewal, days(40)).await;
    // A trial (localstripe has no trialing subscriptions: a CRM trial, the
    // same transition).
    crm_with(&s, &trial, days(20), "trialing").await;
    let late_sub = subscribe(&s, &late, days(200)).await;
    // A payment fails in Stripe; its `invoice.payment_failed` names the subscription.
    s.billing.fail_next_payment(&late_sub).await;
    let failed = json!({"id": format!("evt_{}", unique("pf").replace('-', "")), "object": "event", "type": "invoice.payment_failed", "created": entitle_tests::now(),
        "data": {"object": {"id": "in_1", "object": "invoice", "subscription": late_sub, "subscription_details": {"metadata": {"tenant_id": late}}}}});
    assert_eq!(s.stripe(&failed).await.0, 200);
    s.tenant_where(&late, "past due", |v| v["status"] == "past_due").await;
    let k = format!("k-{contract}");
    let doc = json!({"contract_id": k, "tenant_id": contract, "term": {"start": "2026-01-01T00:00:00Z", "end": days(30)}, "tier": "business", "seats": 3});
    assert_eq!(s.amend("/contracts", Some(&doc)).await.0, 201);
    crm(&s, &catch_up, days(100)).await;
    for t in [&stripe, &renewal, &trial, &late, &contract, &catch_up] {
        s.tenant_where(t, "provisioned", |v| v["seats"]["total"].as_u64().unwrap_or(0) > 0).await;
        for u in ["a", "b"] {
            s.create_member(t, &member_body(u, &[])).await;
        }
    }
    s.tenant_where(&stripe, "members seated", |v| v["seats"]["used"] == 2).await;

    // 30 days before expiry: one notice, once.
    s.sweep(days(10)).await;
    s.sweep(days(10)).await;
    assert_eq!(sweep_actions(&s, &stripe).await, ["license_expiring_soon"]);

    // Expiry: grace starts, access is kept. A renewal arrives during grace.
    s.sweep(days(40)).await;
    let t = s.tenant_where(&stripe, "in grace", |v| v["status"] == "grace").await;
    assert_eq!((t["tier"].as_str(), t["seats"]["used"].as_u64()), (Some("business"), Some(2)), "access kept in grace");
    assert_eq!(s.member(&stripe, "a").await.1["status"], "active");
    assert_eq!(sweep_actions(&s, &stripe).await, ["license_expiring_soon", "license_expiring_soon", "license_grace_started"]);
    s.tenant_where(&renewal, "in grace", |v| v["status"] == "grace").await;
    // Renewed in Stripe (onto the yearly enterprise plan: a new period);
    // Stripe's `updated` webhook announces it.
    s.billing.set_plan(&renewal_sub, "enterprise_annual", 3).await;
    assert_eq!(s.announce_update(&renewal_sub).await.0, 200);
    s.tenant_where(&renewal, "renewed", |v| v["status"] == "active").await;

    // Grace ends: Stripe downgrades to free, contracts suspend; the renewal holds.
    let report = s.sweep(days(48)).await;
    assert!(report["complete"].as_bool().unwrap(), "{report}");
    let t = s.tenant_where(&stripe, "downgraded", |v| v["tier"] == "free").await;
    assert_eq!((t["status"].as_str(), t["seats"]["total"].as_u64()), (Some("expired"), Some(1)));
    s.statuses_are(&stripe, &[("a", "active"), ("b", "pending_seat")]).await;
    s.tenant_where(&contract, "suspended", |v| v["status"] == "expired" && v["seats"]["total"] == 0).await;
    s.statuses_are(&contract, &[("a", "suspended"), ("b", "suspended")]).await;
    s.tenant_where(&trial, "trial ended", |v| v["tier"] == "free" && v["status"] == "expired").await;
    s.tenant_where(&late, "past-due grace lapsed", |v| v["status"] == "suspended").await;
    s.statuses_are(&late, &[("a", "suspended")]).await;
    let r = s.tenant(&renewal).await.1;
    assert_eq!((r["tier"].as_str(), r["status"].as_str()), (Some("enterprise"), Some("active")), "a renewal in grace cancels the pending end");
    assert!(!sweep_actions(&s, &renewal).await.contains(&"license_expired".to_string()));
    let stripe_audit = s.audit(&stripe).await;
    let expired = stripe_audit.iter().find(|r| r["action"] == "license_expired").unwrap();
    assert!(expired["cause"]["id"].as_str().unwrap().starts_with("sweep-run-"), "{expired}");

    // A sweep that missed runs catches up in order (everything until day 110 at once).
    assert!(sweep_actions(&s, &catch_up).await.is_empty());
    s.sweep(days(110)).await;
    assert_eq!(sweep_actions(&s, &catch_up).await, ["license_expiring_soon", "license_grace_started", "license_expired"]);
    s.tenant_where(&catch_up, "downgraded", |v| v["tier"] == "free").await;

    // Overlapping runs: each transition once.
    let overlap: Vec<String> = (0..5).map(|_| unique("sw-overlap")).collect();
    for t in &overlap {
        crm(&s, t, days(200)).await;
    }
    let s = std::sync::Arc::new(s);
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.sweep(days(210)).await })
        })
        .collect();
    for r in runs {
        r.await.unwrap();
    }
    for t in &overlap {
        let acts = sweep_actions(&s, t).await;
        assert_eq!(acts, ["license_expiring_soon", "license_grace_started", "license_expired"], "{t}");
    }

    // A run stopped mid-way (here after 2 items) leaves the rest due; the next goes on.
    let stopped: Vec<String> = (0..6).map(|_| unique("sw-stop")).collect();
    for t in &stopped {
        crm(&s, t, days(300)).await;
    }
    let store = s.store();
    let far = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let partial = sweep(&store, days(301), "partial-run", SweepLimits { stop_at: far, max_items: Some(2) }).await.unwrap();
    assert_eq!((partial.complete, partial.licenses), (false, 2));
    let nothing = sweep(&store, days(301), "late-run", SweepLimits { stop_at: std::time::Instant::now(), max_items: None }).await.unwrap();
    assert_eq!((nothing.complete, nothing.licenses), (false, 0), "past its deadline a run takes nothing new");
    let rest = s.sweep(days(301)).await;
    assert!(rest["complete"].as_bool().unwrap() && rest["licenses"].as_u64().unwrap() >= 4, "{rest}");
    let mut per_run: BTreeMap<String, usize> = BTreeMap::new();
    for t in &stopped {
        let audit = s.audit(t).await;
        let grace: Vec<&Value> = audit.iter().filter(|r| r["action"] == "license_grace_started").collect();
        assert_eq!(grace.len(), 1, "{t}: once");
        *per_run.entry(grace[0]["cause"]["id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_run["partial-run"], 2);
    assert_eq!(per_run.values().sum::<usize>(), 6);

    // A scheduled amendment becomes effective when the sweep reaches its time.
    let amended = unique("sw-amend");
    let k = format!("k-{amended}");
    let doc = json!({"contract_id": k, "tenant_id": amended, "term": {"start": "2026-01-01T00:00:00Z", "end": days(900)}, "tier": "team", "seats": 2});
    assert_eq!(s.amend("/contracts", Some(&doc)).await.0, 201);
    let a = json!({"amendment_id": "later", "base_version": 1, "effective_at": days(400), "patch": [{"op": "add", "path": "/add_ons/-", "value": "sso"}]});
    assert_eq!(s.amend(&format!("/contracts/{k}/amendments"), Some(&a)).await.1["status"], "scheduled");
    s.sweep(days(399)).await;
    assert_eq!(s.amend(&format!("/contracts/{k}/amendments/later"), None).await.1["status"], "scheduled");
    let report = s.sweep(days(400)).await;
    assert!(report["amendments_applied"].as_u64().unwrap() >= 1, "{report}");
    s.tenant_where(&amended, "sso from the due amendment", |v| v["entitlements"]["sso"] == true).await;

    // Events: one per transition, in the documented shape, with the cause.
    let events = s.drain_events(&tap).await;
    // Every event on the bus in this run, whatever its kind, matches the documented schema.
    assert_valid_events(&events);
    let ours: Vec<&Value> = events.iter().filter(|e| e["detail"]["tenant_id"] == stripe.as_str() && e["detail-type"].as_str().unwrap().starts_with("license.")).collect();
    let types: Vec<&str> = ours.iter().map(|e| e["detail-type"].as_str().unwrap()).collect();
    assert_eq!(types, ["license.expiring_soon", "license.expiring_soon", "license.grace_started", "license.expired"], "{ours:?}");
    for e in &ours {
        assert_eq!(e["source"], "entitle");
        let d = &e["detail"];
        for field in ["id", "type", "tenant_id", "license_id", "source", "due_at", "status", "detail", "cause"] {
            assert!(d.get(field).is_some(), "event lacks {field}: {d}");
        }
        assert_eq!(d["cause"]["kind"], "sweep");
    }
    assert!(s.verify(&stripe).await["ok"].as_bool().unwrap());
    let _ = TenantId::parse(&stripe).unwrap();

    // Items that stay due until something else happens (changes waiting
    // for a target that is down) do not hide what falls due behind them:
    // 2,400 of them, due since 1970, are more than a page (100) in every
    // shard of the index; the run walks past them to the license.
    let behind = unique("sw-behind");
    crm(&s, &behind, days(500)).await;
    let waiting: Vec<aws_sdk_dynamodb::types::WriteRequest> = (0..2400)
        .map(|i| {
            let (pk, sk) = (format!("S#{behind}#down"), format!("u{i}"));
            let mut item = std::collections::HashMap::from([("pk".to_string(), AttributeValue::S(pk.clone())), ("sk".to_string(), AttributeValue::S(sk.clone()))]);
            item.extend(due_attributes(&pk, &sk, Some(DateTime::UNIX_EPOCH)).into_iter().map(|(k, v)| (k.to_string(), v)));
            aws_sdk_dynamodb::types::WriteRequest::builder().put_request(aws_sdk_dynamodb::types::PutRequest::builder().set_item(Some(item)).build().unwrap()).build()
        })
        .collect();
    write_all(&s, waiting.clone()).await;
    let report = sweep(&store, days(501), "walk-run", SweepLimits { stop_at: far, max_items: None }).await.unwrap();
    assert!(report.complete && report.deliveries >= 2400, "{report:?}");
    assert_eq!(sweep_actions(&s, &behind).await.first().map(String::as_str), Some("license_expiring_soon"), "the license behind them was reached");
    let removals = waiting
        .iter()
        .map(|w| {
            let key = w.put_request().unwrap().item().iter().filter(|(k, _)| *k == "pk" || *k == "sk").map(|(k, v)| (k.clone(), v.clone())).collect();
            aws_sdk_dynamodb::types::WriteRequest::builder().delete_request(aws_sdk_dynamodb::types::DeleteRequest::builder().set_key(Some(key)).build().unwrap()).build()
        })
        .collect();
    write_all(&s, removals).await;
}

/// Writes every request, 25 a batch, unprocessed ones again.
async fn write_all(s: &Stack, requests: Vec<aws_sdk_dynamodb::types::WriteRequest>) {
    for batch in requests.chunks(25) {
        let mut left = batch.to_vec();
        while !left.is_empty() {
            let out = s.ddb.batch_write_item().request_items(&s.tables.state, left).send().await.unwrap();
            left = out.unprocessed_items.and_then(|mut u| u.remove(&s.tables.state)).unwrap_or_default();
        }
    }
}
