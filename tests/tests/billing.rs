//! Billing truth through the real binaries and localstripe: a change made
//! in Stripe that no webhook announces is repaired by the reconciliation
//! (on demand and on schedule), a webhook about a subscription Stripe does
//! not know is parked, Stripe down or rate-limiting changes nothing and the
//! webhook is answered 5xx, a Stripe event delivered by EventBridge and as a
//! webhook applies once, and a run stopped by its deadline resumes.

use entitle::core::signature::sign;
use entitle_tests::hostile::{Behaviour, HostileTarget};
use entitle_tests::runtime::{binary, invoke_once, Outcome};
use entitle_tests::{function_env, function_url_event, now, stripe_event, unique, Stack};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The scheduled run compares every tenant's subscriptions: it would repair
/// what the other tests here change in Stripe and then look at. It holds
/// this for writing; the others hold it for reading.
static SCHEDULE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A subscription in Stripe for the tenant; localstripe's `created`
/// webhook taken.
async fn subscribed(s: &Stack, t: &str, plan: &str, seats: u64) -> String {
    let sub = s.billing.subscribe(Some(t), plan, seats).await;
    let id = sub["id"].as_str().unwrap().to_string();
    s.webhook_taken(t, &id, "customer.subscription.created").await;
    s.tenant_where(t, "the license", |v| v["seats"]["total"].as_u64().unwrap_or(0) >= seats).await;
    id
}

fn event_id(prefix: &str) -> String {
    format!("evt_{}", unique(prefix).replace('-', ""))
}

#[tokio::test]
async fn a_change_no_webhook_announced_is_repaired_on_demand() {
    let _shared = SCHEDULE.read().await;
    let s = Stack::connect().await;
    let t = unique("sync-demand");
    let id = subscribed(&s, &t, "team_monthly", 2).await;
    // Changed in Stripe: localstripe sends no `updated` (as an endpoint
    // that was down would never hear of it).
    s.billing.set_seats(&id, 6).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(s.tenant(&t).await.1["seats"]["total"], 2, "no webhook, no change yet");

    let (code, answer) = s.billing_sync(&t).await;
    assert_eq!((code, answer["status"].as_str(), answer["tenant_id"].as_str()), (202, Some("queued"), Some(t.as_str())), "{answer}");
    let run = answer["run_id"].as_str().unwrap().to_string();
    s.tenant_where(&t, "six seats from the sync", |v| v["seats"]["total"] == 6).await;
    let audit = s.audit(&t).await;
    let repaired: Vec<&Value> = audit.iter().filter(|r| r["action"] == "license_recorded" && r["cause"]["kind"] == "billing_sync").collect();
    assert_eq!(repaired.len(), 1, "{audit:?}");
    assert_eq!(repaired[0]["cause"]["id"], run.as_str());
    assert_eq!((repaired[0]["before"]["seats"].as_u64(), repaired[0]["after"]["seats"].as_u64()), (Some(2), Some(6)));
    assert!(repaired[0]["rule"].as_str().unwrap().contains("state read from Stripe"), "{}", repaired[0]);
    // Provision reconciled with the sync's cause.
    assert!(audit.iter().any(|r| r["action"] == "tenant_access_changed" && r["cause"]["kind"] == "billing_sync"), "{audit:?}");

    // A second run finds nothing to repair.
    let (_, again) = s.billing_sync(&t).await;
    let second = again["run_id"].as_str().unwrap().to_string();
    s.settle(&t).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!s.audit(&t).await.iter().any(|r| r["cause"]["id"] == second.as_str()), "nothing written by a run that found nothing");
    assert_eq!(s.verify(&t).await["ok"], true);
}

#[tokio::test]
async fn a_change_no_webhook_announced_is_repaired_by_the_schedule() {
    let _only = SCHEDULE.write().await;
    let s = Stack::connect().await;
    let t = unique("sync-sched");
    let id = subscribed(&s, &t, "business_monthly", 4).await;
    s.billing.set_plan(&id, "enterprise_annual", 9).await;
    let report = s.billing_schedule().await;
    assert_eq!(report["complete"], true, "{report}");
    assert!(report["repaired"].as_u64().unwrap() >= 1, "{report}");
    assert!(report["untenanted"].as_u64().is_some(), "{report}");
    let run = report["run_id"].as_str().unwrap().to_string();
    assert!(run.starts_with("sched-"), "{report}");
    let tenant = s.tenant_where(&t, "enterprise, nine seats", |v| v["tier"] == "enterprise" && v["seats"]["total"] == 9).await;
    assert_eq!(tenant["entitlements"]["sso"], true);
    let audit = s.audit(&t).await;
    assert!(audit.iter().any(|r| r["action"] == "license_recorded" && r["cause"] == json!({"kind": "billing_sync", "id": run})), "{audit:?}");
}

#[tokio::test]
async fn a_webhook_about_a_subscription_stripe_does_not_know_is_parked() {
    let _shared = SCHEDULE.read().await;
    let s = Stack::connect().await;
    let t = unique("ghost");
    let snapshot = entitle_tests::stripe_subscription(&format!("sub_{}", t.replace('-', "")), Some(&t), "active", &[("team_monthly", 5)], now() + 86400);
    let event = stripe_event(&event_id("ghost"), "customer.subscription.created", now(), &snapshot);
    let (code, body) = s.stripe(&event).await;
    assert_eq!((code, body["status"].as_str()), (202, Some("parked")), "{body}");
    assert!(body["reason"].as_str().unwrap().contains("Stripe does not know"), "{body}");
    // The snapshot's five seats are never trusted: the tenant stays unknown.
    assert_eq!(s.tenant(&t).await.0, 404);
    let audit = s.audit(&t).await;
    assert_eq!(audit.iter().map(|r| r["action"].as_str().unwrap()).collect::<Vec<_>>(), ["event_parked"]);
}

/// The same event as EventBridge delivers it (from Stripe's partner event
/// source, in `detail`, no signature) and as a webhook: applied once.
#[tokio::test]
async fn an_event_through_eventbridge_and_as_a_webhook_applies_once() {
    let _shared = SCHEDULE.read().await;
    let s = Stack::connect().await;
    let t = unique("eb");
    let id = subscribed(&s, &t, "team_monthly", 2).await;
    // Changed in Stripe; the event about it comes by both routes.
    let sub = s.billing.set_seats(&id, 4).await;
    let eid = event_id("eb");
    let event = stripe_event(&eid, "customer.subscription.updated", now(), &sub);
    let (failed, answer) = s.stripe_via_eventbridge(&event).await;
    assert!(!failed, "{answer}");
    assert_eq!((answer["status"].as_str(), answer["tenant_id"].as_str()), (Some("applied"), Some(t.as_str())), "{answer}");
    let (code, body) = s.stripe(&event).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("duplicate")), "{body}");
    let (failed, again) = s.stripe_via_eventbridge(&event).await;
    assert!(!failed && again["status"] == "duplicate", "{again}");
    s.tenant_where(&t, "four seats", |v| v["seats"]["total"] == 4).await;
    let audit = s.audit(&t).await;
    assert_eq!(audit.iter().filter(|r| r["action"] == "license_recorded" && r["cause"]["id"] == eid.as_str()).count(), 1, "one event, one license record: {audit:?}");

    // And the other way round: a webhook first, then EventBridge.
    let t2 = unique("eb2");
    let id = subscribed(&s, &t2, "team_monthly", 1).await;
    let sub = s.billing.set_seats(&id, 2).await;
    let event = stripe_event(&event_id("eb2"), "customer.subscription.updated", now(), &sub);
    assert_eq!(s.stripe(&event).await.1["status"], "applied");
    assert_eq!(s.stripe_via_eventbridge(&event).await.1["status"], "duplicate");

    // Not Stripe's, or not an event: refused by name.
    let (failed, refused) = s.invoke("billing", &json!({"source": "aws.partner/stripe.com/ed_x", "detail-type": "x", "detail": "nope"})).await;
    assert!(failed && refused["errorType"] == "BadEvent", "{refused}");
    let (failed, refused) = s.invoke("billing", &json!({"source": "my.app", "detail": {}})).await;
    assert!(failed && refused["errorType"] == "Unrecognised", "{refused}");
}

/// A signed webhook, to the real ingest binary with Stripe's API at `api`.
async fn webhook_with_stripe_at(api: &str, s: &Stack, event: &Value) -> (Outcome, Duration) {
    let mut env = function_env();
    env.insert("STRIPE_API_URL".into(), api.into());
    env.insert("STRIPE_API_BUDGET_SECS".into(), "3".into());
    let body = event.to_string();
    let mut url_event = function_url_event("ingest", "POST", "/stripe", None, None);
    url_event["headers"]["stripe-signature"] = json!(sign(&s.stripe_secret, now(), body.as_bytes()));
    url_event["body"] = json!(body);
    let start = Instant::now();
    let out = invoke_once(binary("ingest"), &env, &url_event, Duration::from_secs(60)).await;
    (out, start.elapsed())
}

fn answered(out: &Outcome) -> (u64, Value, Option<String>) {
    let body = serde_json::from_str(out.body["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    let retry_after = out.body["headers"]["retry-after"].as_str().map(str::to_string);
    (out.body["statusCode"].as_u64().unwrap_or(0), body, retry_after)
}

/// Stripe's API unreachable, silent, erring or rate-limiting: the webhook
/// is answered 503 `stripe_unavailable` (Stripe retries it), naming why,
/// and nothing is recorded; `Retry-After` is honoured within the call's
/// budget and passed on beyond it.
#[tokio::test]
async fn stripe_down_or_rate_limiting_answers_5xx_and_changes_nothing() {
    let _shared = SCHEDULE.read().await;
    let s = Stack::connect().await;
    let t = unique("down");
    let id = subscribed(&s, &t, "team_monthly", 3).await;
    // Changed in Stripe; its webhook reaches an ingest that cannot read Stripe.
    let sub = s.billing.set_seats(&id, 5).await;
    let eid = event_id("down");
    let event = stripe_event(&eid, "customer.subscription.updated", now(), &sub);
    let before = s.stored_items(&t).await;

    // Nobody listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (out, _) = webhook_with_stripe_at(&url, &s, &event).await;
    let (status, body, _) = answered(&out);
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("stripe_unavailable")), "{:?}", out.body);
    assert!(body["error"]["message"].as_str().unwrap().contains("cannot connect"), "{body}");

    // Accepts the connection and never answers: bounded by the budget.
    let silent = HostileTarget::start(Behaviour::Silent).await;
    let (out, took) = webhook_with_stripe_at(&silent.url, &s, &event).await;
    let (status, body, _) = answered(&out);
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("timed out"), "{body}");
    assert!(took < Duration::from_secs(15), "the budget bounds the wait: {took:?}");

    // 5xx: tried again, then given up.
    let erring = HostileTarget::start(Behaviour::Answer { status: 500, body: r#"{"error":{"message":"An unknown error occurred","type":"api_error"}}"#.into() }).await;
    let (out, _) = webhook_with_stripe_at(&erring.url, &s, &event).await;
    let (status, body, _) = answered(&out);
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("HTTP 500"), "{body}");
    assert!(erring.requests.load(std::sync::atomic::Ordering::SeqCst) >= 2, "a 5xx is tried again");

    // 429 with a short Retry-After: waited for, tried again, still 429:
    // the answer passes Stripe's wait on.
    let throttled = HostileTarget::start(Behaviour::Throttle { retry_after: 1 }).await;
    let (out, took) = webhook_with_stripe_at(&throttled.url, &s, &event).await;
    let (status, body, retry_after) = answered(&out);
    assert_eq!((status, body["error"]["retry_after_secs"].as_u64(), retry_after.as_deref()), (503, Some(1), Some("1")), "{:?}", out.body);
    assert!(throttled.requests.load(std::sync::atomic::Ordering::SeqCst) >= 2 && took >= Duration::from_secs(1), "Retry-After honoured: {took:?}");
    // A Retry-After beyond the budget is not waited for in the function.
    let long = HostileTarget::start(Behaviour::Throttle { retry_after: 120 }).await;
    let (out, took) = webhook_with_stripe_at(&long.url, &s, &event).await;
    let (status, _, retry_after) = answered(&out);
    assert_eq!((status, retry_after.as_deref()), (503, Some("120")));
    assert_eq!(long.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(took < Duration::from_secs(15), "{took:?}");

    // Nothing of any of it was recorded; Stripe's retry, with Stripe back, applies.
    assert_eq!(s.stored_items(&t).await, before);
    assert!(!s.event_accepted(&t, &eid).await);
    assert_eq!(s.tenant(&t).await.1["seats"]["total"], 3);
    let (code, body) = s.stripe(&event).await;
    assert_eq!((code, body["status"].as_str()), (200, Some("applied")), "{body}");
    s.tenant_where(&t, "five seats", |v| v["seats"]["total"] == 5).await;
}

/// A run whose deadline comes after its first page stops there, cleanly,
/// and queues the rest of itself; the next part (the stack's billing,
/// from the billing queue) goes on and repairs what the first did not reach.
#[tokio::test]
async fn a_run_stopped_by_its_deadline_resumes_where_it_stopped() {
    let _shared = SCHEDULE.read().await;
    let s = Stack::connect().await;
    let t = unique("resume");
    let mut subs = Vec::new();
    for seats in [1, 2, 3] {
        subs.push(subscribed(&s, &t, "team_monthly", seats).await);
    }
    s.tenant_where(&t, "the three licenses", |v| v["seats"]["total"] == 6).await;
    for id in &subs {
        s.billing.set_seats(id, 10).await;
    }
    // The real billing binary, one subscription per page, with a margin
    // that leaves no time after the first page.
    let mut env = function_env();
    env.insert("BILLING_SYNC_PAGE_SIZE".into(), "1".into());
    env.insert("BILLING_DEADLINE_MARGIN_SECS".into(), "3600".into());
    let run = unique("run");
    let request = json!({"run_id": run, "tenant": t});
    let sqs = json!({"Records": [{"messageId": "m1", "receiptHandle": "r1", "body": request.to_string(), "attributes": {}, "messageAttributes": {},
        "eventSource": "aws:sqs", "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:BillingQueue", "awsRegion": "us-east-1"}]});
    let out = invoke_once(binary("billing"), &env, &sqs, Duration::from_secs(60)).await;
    assert!(!out.failed, "{:?}", out.body);
    assert_eq!(out.body["batchItemFailures"], json!([]), "{:?}", out.body);
    // The rest of the run went on from the billing queue: every one of the
    // tenant's subscriptions repaired, under this run's id, once each.
    s.tenant_where(&t, "30 seats", |v| v["seats"]["total"] == 30).await;
    let audit = s.audit(&t).await;
    let repaired: Vec<&Value> = audit.iter().filter(|r| r["action"] == "license_recorded" && r["cause"]["id"] == run.as_str()).collect();
    assert_eq!(repaired.len(), 3, "{audit:?}");
    let subjects: std::collections::BTreeSet<&str> = repaired.iter().map(|r| r["subject"].as_str().unwrap()).collect();
    assert_eq!(subjects.len(), 3);
}
