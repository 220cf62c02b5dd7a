//! End to end through the real binaries: signed webhooks and account events
//! into ingest, the FIFO queue and the event source mapping into provision,
//! the read API out of access.

use entitle_tests::{assert_valid_events, member_body, stripe_event, unique, Stack};
use serde_json::{json, Value};

/// A subscription in localstripe for the tenant, and its `created`
/// webhook (sent by localstripe) taken: the tenant has its license.
async fn subscribed(s: &Stack, t: &str, plan: &str, seats: u64) -> String {
    let sub = s.billing.subscribe(Some(t), plan, seats).await;
    let id = sub["id"].as_str().unwrap().to_string();
    s.webhook_taken(t, &id, "customer.subscription.created").await;
    id
}

fn actions(audit: &[Value], action: &str) -> Vec<Value> {
    audit.iter().filter(|r| r["action"] == action).cloned().collect()
}

#[tokio::test]
async fn subscription_seats_upgrade_and_cancellation_drive_access() {
    let s = Stack::connect().await;
    let t = unique("life");
    // Checkout in Stripe: localstripe announces it to ingest by itself.
    let sub = s.billing.subscribe(Some(&t), "team_monthly", 3).await;
    let id = sub["id"].as_str().unwrap().to_string();
    let tenant = s.tenant_where(&t, "team tier", |v| v["tier"] == "team").await;
    assert_eq!(tenant["seats"], json!({"total": 3, "used": 0}));
    assert_eq!(tenant["entitlements"]["projects"], 50);
    let period_end = chrono::DateTime::from_timestamp(sub["current_period_end"].as_i64().unwrap(), 0).unwrap();
    assert_eq!(tenant["expires_at"], json!(period_end), "the period end Stripe holds");

    // Five accounts for three seats: the first three get seats at creation.
    let mut answers = Vec::new();
    for u in ["a", "b", "c", "d", "e"] {
        let (code, body) = s.create_member(&t, &member_body(u, &[])).await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["tenant_id"], t.as_str());
        answers.push(body["status"].as_str().unwrap().to_string());
    }
    assert_eq!(answers, ["active", "active", "active", "pending_seat", "pending_seat"]);
    let (_, a) = s.member(&t, "a").await;
    assert_eq!(a["roles"], json!(["member"]));
    assert_eq!(a["entitlements"]["api_access"], true);
    let (_, d) = s.member(&t, "d").await;
    assert_eq!((d["roles"].clone(), d["entitlements"].clone()), (json!([]), json!({})));

    // Upgrade in Stripe (five seats on enterprise: SSO), announced by the
    // `updated` webhook Stripe sends (localstripe sends none: the test does).
    s.billing.set_plan(&id, "enterprise_annual", 5).await;
    let (code, upgraded) = s.announce_update(&id).await;
    assert_eq!((code, upgraded["status"].as_str()), (200, Some("applied")), "{upgraded}");
    let upgrade_event = upgraded["event_id"].as_str().unwrap().to_string();
    s.statuses_are(&t, &[("d", "active"), ("e", "active")]).await;
    let tenant = s.tenant_where(&t, "five seats used", |v| v["seats"]["used"] == 5).await;
    assert_eq!((tenant["tier"].as_str(), tenant["entitlements"]["sso"].as_bool()), (Some("enterprise"), Some(true)));

    // Cancellation in Stripe (localstripe announces it): Stripe licenses
    // downgrade to free (one seat): the oldest keeps it.
    s.billing.cancel(&id).await;
    s.statuses_are(&t, &[("a", "active"), ("b", "pending_seat"), ("c", "pending_seat"), ("d", "pending_seat"), ("e", "pending_seat")]).await;
    let tenant = s.tenant_where(&t, "free tier", |v| v["tier"] == "free").await;
    assert_eq!((tenant["status"].as_str(), tenant["seats"].clone()), (Some("canceled"), json!({"total": 1, "used": 1})));
    assert_eq!(tenant["entitlements"]["sso"], false);

    // Every change is audited with its cause, and the chain verifies.
    let audit = s.audit(&t).await;
    assert_eq!(actions(&audit, "license_recorded").len(), 3);
    assert_eq!(actions(&audit, "member_created").len(), 5);
    let d_changes: Vec<Value> = audit.iter().filter(|r| r["subject"] == "member:d" && r["action"] == "member_access_changed").cloned().collect();
    assert_eq!(d_changes.len(), 2, "d gained then lost a seat: {d_changes:?}");
    // Provisioning is level-triggered: whichever queued reconcile runs first
    // applies the new license state; the tenant record names the event it came from.
    assert!(["stripe_event", "api_call"].contains(&d_changes[0]["cause"]["kind"].as_str().unwrap()), "{}", d_changes[0]);
    let upgrade = actions(&audit, "tenant_access_changed").into_iter().find(|r| r["after"]["seats_total"] == 5).expect("upgrade audited");
    assert!(upgrade["rule"].as_str().unwrap().contains(&format!("as of {upgrade_event}")), "{upgrade}");
    assert_eq!(upgrade["before"]["seats_total"], 3);
    assert_eq!(d_changes[0]["before"]["status"], "pending_seat");
    assert_eq!(d_changes[0]["after"]["status"], "active");
    assert!(d_changes[1]["rule"].as_str().unwrap().contains("seats"));
    let v = s.verify(&t).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["records"].as_u64().unwrap() as usize, audit.len());
}

#[tokio::test]
async fn duplicate_deliveries_change_access_once() {
    let s = Stack::connect().await;
    let t = unique("dup");
    // localstripe delivers its `created` webhook once; Stripe may deliver
    // any webhook again (it retries until it sees a 2xx).
    let id = subscribed(&s, &t, "business_monthly", 4).await;
    let event = s.billing.events(&id, "customer.subscription.created").await.remove(0);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (code, body) = s.stripe(&event).await;
        assert_eq!(code, 200, "{body}");
        statuses.push(body["status"].as_str().unwrap().to_string());
    }
    assert_eq!(statuses, ["duplicate", "duplicate", "duplicate"]);
    s.tenant_where(&t, "business tier", |v| v["tier"] == "business").await;
    for u in ["a", "b"] {
        s.create_member(&t, &member_body(u, &["finance"])).await;
    }
    // The app retries a creation: same answer, no second account or seat.
    let (code, again) = s.create_member(&t, &member_body("a", &["finance"])).await;
    assert_eq!((code, again["status"].as_str()), (201, Some("active")));
    let (code, conflict) = s.create_member(&t, &member_body("a", &["admins"])).await;
    assert_eq!((code, conflict["error"]["code"].as_str()), (409, Some("member_exists")), "{conflict}");
    s.stripe(&event).await;
    let tenant = s.tenant_where(&t, "two seats used", |v| v["seats"]["used"] == 2).await;
    assert_eq!(tenant["seats"]["total"], 4);
    let (_, a) = s.member(&t, "a").await;
    assert_eq!(a["roles"], json!(["billing-admin", "member"]));

    let audit = s.audit(&t).await;
    assert_eq!(actions(&audit, "license_recorded").len(), 1, "one event, one effect");
    assert_eq!(actions(&audit, "tenant_access_changed").len(), 1);
    assert_eq!(actions(&audit, "member_created").len(), 2);
    assert_eq!(s.verify(&t).await["ok"], true);
}

/// Stripe Checkout with payment confirmation: `created` (incomplete) and
/// `updated` (active) in the same second. Whichever arrives last, the
/// customer who paid gets the seats (Stripe's state, read, is active).
#[tokio::test]
async fn the_same_second_checkout_sequence_ends_active_in_both_arrival_orders() {
    let s = Stack::connect().await;
    for order in [["created", "updated"], ["updated", "created"]] {
        let t = unique(&format!("checkout-{}", order[0]));
        let sub = s.billing.subscribe(Some(&t), "team_monthly", 3).await;
        let id = sub["id"].as_str().unwrap();
        let second = entitle_tests::now();
        let mut incomplete = sub.clone();
        incomplete["status"] = json!("incomplete");
        let snapshot = |kind: &str| if kind == "created" { incomplete.clone() } else { sub.clone() };
        for kind in order {
            let event = stripe_event(&format!("evt_{}", unique(kind).replace('-', "")), &format!("customer.subscription.{kind}"), second, &snapshot(kind));
            let (code, body) = s.stripe(&event).await;
            assert_eq!(code, 200, "{body}");
            assert!(["applied", "unchanged"].contains(&body["status"].as_str().unwrap()), "{body}");
        }
        let tenant = s.tenant_where(&t, "three seats, active", |v| v["seats"]["total"] == 3).await;
        assert_eq!((tenant["status"].as_str(), tenant["tier"].as_str()), (Some("active"), Some("team")), "{order:?}: {tenant}");
        assert_eq!(s.create_member(&t, &member_body("a", &[])).await.1["status"], "active");
        // localstripe's own `created` webhook reads the same state.
        s.webhook_taken(&t, id, "customer.subscription.created").await;
        assert_eq!(s.tenant(&t).await.1["status"], "active");
    }
}

/// Two quantity changes in one second (3 -> 5 -> 7): the two `updated`
/// events share their `created` and arrive in either order; the license
/// ends with 7, what Stripe holds.
#[tokio::test]
async fn two_quantity_changes_in_one_second_end_on_the_later() {
    let s = Stack::connect().await;
    for later_first in [false, true] {
        let t = unique(if later_first { "qty-7first" } else { "qty-5first" });
        let id = subscribed(&s, &t, "team_monthly", 3).await;
        let five = s.billing.set_seats(&id, 5).await;
        let seven = s.billing.set_seats(&id, 7).await;
        let second = entitle_tests::now();
        let mut events = vec![
            stripe_event(&format!("evt_{}", unique("five").replace('-', "")), "customer.subscription.updated", second, &five),
            stripe_event(&format!("evt_{}", unique("seven").replace('-', "")), "customer.subscription.updated", second, &seven),
        ];
        if later_first {
            events.reverse();
        }
        for e in &events {
            let (code, body) = s.stripe(e).await;
            assert_eq!(code, 200, "{body}");
        }
        let tenant = s.tenant_where(&t, "seven seats", |v| v["seats"]["total"] == 7).await;
        assert_eq!(tenant["status"], "active");
        let audit = s.audit(&t).await;
        let seats: Vec<u64> = actions(&audit, "license_recorded").iter().filter_map(|r| r["after"]["seats"].as_u64()).collect();
        assert_eq!(seats, [3, 7], "never 5, whichever came last: {seats:?}");
        assert_eq!(actions(&audit, "license_unchanged").len(), 1, "the other event read 7 too");
    }
}

#[tokio::test]
async fn removing_an_account_frees_its_seat_for_the_oldest_pending_one() {
    let s = Stack::connect().await;
    let t = unique("rm");
    subscribed(&s, &t, "team_monthly", 2).await;
    s.tenant_where(&t, "two seats", |v| v["seats"]["total"] == 2).await;
    for u in ["a", "b", "c", "d"] {
        s.create_member(&t, &member_body(u, &[])).await;
    }
    let (code, gone) = s.delete_member(&t, "a").await;
    assert_eq!((code, gone["status"].as_str(), gone["roles"].clone()), (200, Some("deprovisioned"), json!([])));
    s.statuses_are(&t, &[("a", "deprovisioned"), ("b", "active"), ("c", "active"), ("d", "pending_seat")]).await;
    let (code, again) = s.delete_member(&t, "a").await;
    assert_eq!((code, again["status"].as_str()), (200, Some("deprovisioned")));
    let (code, missing) = s.delete_member(&t, "nobody").await;
    assert_eq!((code, missing["error"]["code"].as_str()), (404, Some("not_found")));
    s.tenant_where(&t, "seats after removal", |v| v["seats"]["used"] == 2 && v["seats_pending"] == 1).await;
}

#[tokio::test]
async fn owners_and_admins_keep_their_seats_in_a_seat_cut() {
    let s = Stack::connect().await;
    let t = unique("cut");
    let id = subscribed(&s, &t, "team_monthly", 4).await;
    s.tenant_where(&t, "four seats", |v| v["seats"]["total"] == 4).await;
    for (u, g) in [("a", vec![]), ("b", vec!["owners"]), ("c", vec![]), ("d", vec!["admins"])] {
        s.create_member(&t, &member_body(u, &g)).await;
    }
    s.billing.set_seats(&id, 2).await;
    s.announce_update(&id).await;
    let members = s.statuses_are(&t, &[("a", "pending_seat"), ("b", "active"), ("c", "pending_seat"), ("d", "active")]).await;
    assert_eq!(members[1]["roles"], json!(["admin", "member", "owner"]));
    s.billing.set_seats(&id, 3).await;
    s.announce_update(&id).await;
    s.statuses_are(&t, &[("a", "active"), ("c", "pending_seat")]).await;
}

#[tokio::test]
async fn payment_failure_marks_past_due_and_crm_licenses_add_up() {
    let s = Stack::connect().await;
    let t = unique("mix");
    let id = subscribed(&s, &t, "team_monthly", 2).await;
    // A renewal payment fails in Stripe; Stripe announces
    // `invoice.payment_failed` (the invoice names the subscription), and
    // the subscription, read, is past due.
    s.billing.fail_next_payment(&id).await;
    let invoice = json!({"id": format!("evt_{}", unique("pf").replace('-', "")), "object": "event", "type": "invoice.payment_failed", "created": entitle_tests::now(),
        "data": {"object": {"id": "in_1", "object": "invoice", "parent": {"type": "subscription_details",
            "subscription_details": {"subscription": id, "metadata": {"tenant_id": t}}}}}});
    let (code, body) = s.stripe(&invoice).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("applied")), "{body}");
    s.tenant_where(&t, "past due", |v| v["status"] == "past_due" && v["tier"] == "enterprise").await;

    let record = json!({"event_id": format!("crm-{t}-1"), "tenant_id": t, "license_id": "crm-lic-1", "tier": "business",
        "seats": 5, "add_ons": ["sso"], "starts_at": "2026-01-01T00:00:00Z", "expires_at": entitle_tests::far_future(),
        "status": "active", "source_version": 7});
    let (code, body) = s.crm(&record).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("applied")), "{body}");
    let tenant = s.tenant_where(&t, "summed seats", |v| v["seats"]["total"] == 7).await;
    assert_eq!(tenant["tier"], "enterprise", "the highest tier that grants access (past due still does)");
    assert_eq!(tenant["status"], "active", "the CRM license is active");
    assert_eq!(tenant["entitlements"]["sso"], true);
    assert_eq!(tenant["add_ons"], json!(["sso"]));

    let mut older = record.clone();
    older["source_version"] = json!(6);
    older["event_id"] = json!(format!("crm-{t}-0"));
    older["seats"] = json!(500);
    let (code, body) = s.crm(&older).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ignored_stale")), "{body}");
}

#[tokio::test]
async fn a_license_change_writes_its_metric_lines() {
    let s = Stack::connect().await;
    let t = unique("metrics");
    let record = json!({"event_id": format!("crm-{t}-2"), "tenant_id": t, "license_id": "crm-lic-1", "tier": "business",
        "seats": 5, "add_ons": [], "starts_at": "2026-01-01T00:00:00Z", "expires_at": entitle_tests::far_future(),
        "status": "active", "source_version": 2});
    assert_eq!(s.crm(&record).await.1["status"], "applied");
    assert_eq!(s.crm(&record).await.1["status"], "duplicate");
    let mut older = record.clone();
    older["event_id"] = json!(format!("crm-{t}-1"));
    older["source_version"] = json!(1);
    assert_eq!(s.crm(&older).await.1["status"], "ignored_stale");

    // One line per outcome, by source, in the functions' log: the metric
    // named in the line's declaration, with its value.
    // The lines of a source's events (the reconcile the change queued
    // carries the same cause, the audit record's: its line is checked below).
    let events_of = |cause: String| move |l: &Value| l["cause"] == cause.as_str() && l.get("Source").is_some();
    let lines = s.metric_lines_where(&format!("the events of crm-{t}-2"), 2, events_of(format!("crm_event:crm-{t}-2"))).await;
    let metric = |l: &Value| l["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"].as_str().unwrap().to_string();
    assert_eq!(lines.iter().map(metric).collect::<Vec<_>>(), ["EventsApplied", "EventsDuplicate"], "{lines:?}");
    for l in &lines {
        let declared = &l["_aws"]["CloudWatchMetrics"][0];
        assert_eq!((declared["Namespace"].as_str(), &declared["Dimensions"]), (Some("Entitle"), &json!([["Source"], []])), "{l}");
        assert_eq!((l["Source"].as_str(), l[metric(l)].as_f64(), l["tenant"].as_str()), (Some("crm"), Some(1.0), Some(t.as_str())), "{l}");
        assert!(l["_aws"]["Timestamp"].as_i64().unwrap() > 1_700_000_000_000, "{l}");
    }
    let stale = s.metric_lines_where(&format!("the events of crm-{t}-1"), 1, events_of(format!("crm_event:crm-{t}-1"))).await;
    assert_eq!(stale.iter().map(metric).collect::<Vec<_>>(), ["EventsStale"], "{stale:?}");
    // The reconcile the change queued: its member changes and duration.
    let reconciles = s.metric_lines("tenant", &t, 4).await;
    let reconcile = reconciles.iter().find(|l| l.get("ReconcileChanges").is_some()).expect("a reconcile line");
    assert!(reconcile["ReconcileDuration"].as_f64().unwrap() > 0.0, "{reconcile}");
}

#[tokio::test]
async fn untenanted_and_unknown_events_are_parked_or_ignored_never_dropped() {
    let s = Stack::connect().await;
    let t = unique("park");
    // A subscription that names no tenant: localstripe's `created` webhook is parked.
    let orphan = s.billing.subscribe(None, "team_monthly", 1).await;
    let orphan_id = orphan["id"].as_str().unwrap().to_string();
    let parked = s
        .eventually("the orphan's webhook parked", || async {
            let event = s.billing.events(&orphan_id, "customer.subscription.created").await.first().and_then(|e| e["id"].as_str().map(str::to_string));
            let Some(event) = event else { return (false, Value::Null) };
            let item = s
                .ddb
                .get_item()
                .table_name(&s.tables.state)
                .key("pk", aws_sdk_dynamodb::types::AttributeValue::S("PARKED#stripe".into()))
                .key("sk", aws_sdk_dynamodb::types::AttributeValue::S(event.clone()))
                .send()
                .await
                .unwrap()
                .item;
            let reason = item.and_then(|i| i.get("reason").and_then(|r| r.as_s().ok()).cloned());
            (reason.is_some(), json!({"event": event, "reason": reason}))
        })
        .await;
    assert!(parked["reason"].as_str().unwrap().contains("tenant_id"), "{parked}");
    // Delivered again (Stripe retries): parked, still, and said so.
    let again = s.billing.events(&orphan_id, "customer.subscription.created").await.remove(0);
    let (code, body) = s.stripe(&again).await;
    assert_eq!((code, body["status"].as_str()), (202, Some("parked")), "{body}");
    assert!(body["reason"].as_str().unwrap().contains("tenant_id"));

    // A price the licensing model does not map: parked in the tenant's chain.
    let gold = format!("gold_{}", unique("plan").replace('-', "_"));
    s.billing.post("/v1/plans", &json!({"id": gold, "amount": 9900, "currency": "usd", "interval": "month", "product": {"name": "Gold"}})).await;
    let unknown_price = s.billing.subscribe(Some(&t), &gold, 1).await;
    let gold_event = s
        .eventually("the gold webhook", || async {
            let e = s.billing.events(unknown_price["id"].as_str().unwrap(), "customer.subscription.created").await;
            (!e.is_empty(), e.first().cloned().unwrap_or(Value::Null))
        })
        .await;
    let (code, body) = s.stripe(&gold_event).await;
    assert_eq!((code, body["status"].as_str()), (202, Some("parked")), "{body}");
    assert!(body["reason"].as_str().unwrap().contains(&gold), "{body}");

    let other = json!({"id": format!("evt_{t}_charge"), "type": "charge.succeeded", "created": 1, "data": {"object": {"id": "ch_1"}}});
    let (code, body) = s.stripe(&other).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("ignored")));
    // The decision not to apply the event the tenant is named in is
    // audited in that tenant's chain (and nothing else is recorded for it);
    // the tenant stays unknown to accounts.
    let audit = s.audit(&t).await;
    assert_eq!(audit.iter().map(|r| r["action"].as_str().unwrap()).collect::<Vec<_>>(), ["event_parked"], "{audit:?}");
    assert!(audit[0]["rule"].as_str().unwrap().contains(&gold));
    assert_eq!(s.stored_items(&t).await, 2, "the chain head and its one record");
    assert_eq!(s.create_member(&t, &member_body("a", &[])).await.0, 404);
}

#[tokio::test]
async fn access_changes_are_announced_as_events_with_their_cause() {
    let s = Stack::connect().await;
    let tap = s.event_tap().await;
    let t = unique("events");
    let id = subscribed(&s, &t, "team_monthly", 1).await;
    s.tenant_where(&t, "one seat", |v| v["seats"]["total"] == 1).await;
    for u in ["a", "b"] {
        s.create_member(&t, &member_body(u, &[])).await;
    }
    s.billing.set_seats(&id, 2).await;
    s.announce_update(&id).await;
    s.statuses_are(&t, &[("b", "active")]).await;
    let mut ours: Vec<Value> = Vec::new();
    let start = std::time::Instant::now();
    while ours.len() < 3 && start.elapsed() < std::time::Duration::from_secs(20) {
        ours.extend(s.drain_events(&tap).await.into_iter().filter(|e| e["detail"]["tenant_id"] == t.as_str()));
    }
    let summary: Vec<(String, Value)> = ours.iter().map(|e| (e["detail-type"].as_str().unwrap().to_string(), e["detail"]["after"]["seats_total"].clone())).collect();
    assert_eq!(ours.len(), 3, "{summary:?}");
    assert_valid_events(&ours);
    let tenant_events: Vec<&Value> = ours.iter().filter(|e| e["detail-type"] == "tenant.access_changed").collect();
    assert_eq!(tenant_events.len(), 2);
    assert_eq!((tenant_events[1]["detail"]["before"]["seats_total"].as_u64(), tenant_events[1]["detail"]["after"]["seats_total"].as_u64()), (Some(1), Some(2)));
    let b = ours.iter().find(|e| e["detail-type"] == "member.access_changed").expect("b's change announced");
    let d = &b["detail"];
    assert_eq!((d["user_id"].as_str(), d["seat"].as_str(), d["roles_added"].clone()), (Some("b"), Some("gained"), json!(["member"])));
    assert_eq!((d["status"]["before"].as_str(), d["status"]["after"].as_str()), (Some("pending_seat"), Some("active")));
    for e in &ours {
        assert_eq!(e["source"], "entitle");
        for field in ["id", "type", "at", "tenant_id", "rule", "cause"] {
            assert!(e["detail"].get(field).is_some(), "event lacks {field}: {e}");
        }
        assert!(["stripe_event", "api_call"].contains(&e["detail"]["cause"]["kind"].as_str().unwrap()), "{e}");
    }
    let ids: std::collections::BTreeSet<&str> = ours.iter().map(|e| e["detail"]["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "one id per change");
}
