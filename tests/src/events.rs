//! What the tests send: function URL events, CRM records, members, Stripe
//! objects; unique ids and dates; and the check of the events the bus carries.

use serde_json::Value;

/// A function URL request as the function receives it (payload format
/// 2.0), with the IAM identity AWS authenticated when `principal` is given
/// (what `AuthType: AWS_IAM` puts in the request context).
pub fn function_url_event(function: &str, method: &str, path: &str, body: Option<&Value>, principal: Option<&str>) -> Value {
    let mut context = serde_json::json!({
        "accountId": "123456789012", "apiId": function, "domainName": format!("{function}.lambda-url.us-east-1.on.aws"), "domainPrefix": function,
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "entitle-tests"},
        "requestId": unique("req"), "routeKey": "$default", "stage": "$default", "time": "24/Nov/2026:12:00:00 +0000", "timeEpoch": 1_795_000_000_000u64
    });
    if let Some(arn) = principal {
        context["authorizer"] = serde_json::json!({"iam": {"accessKey": "AKIAEXAMPLE", "accountId": "123456789012", "callerId": "AIDAEXAMPLE", "userArn": arn, "userId": "AIDAEXAMPLE"}});
    }
    serde_json::json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"content-type": "application/json"}, "requestContext": context,
        "body": body.map(|b| b.to_string()), "isBase64Encoded": false
    })
}

/// An end date for licenses and contracts well past every sweep the tests
/// run (up to 400 days ahead) and every expiring-soon notice: relative to
/// today, so that no test starts failing on a calendar date.
pub fn far_future() -> String {
    (chrono::Utc::now() + chrono::Duration::days(3650)).format("%Y-%m-%dT00:00:00Z").to_string()
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A tenant id unique to this run, so tests share one stack without sharing data.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000_000;
    format!("{prefix}-{nanos}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A CRM license record as the tests send it: `crm-lic-1` of `tier` with
/// `seats`, version `version`, running from 2026 to well past every sweep.
pub fn crm_license(tenant: &str, version: i64, tier: &str, seats: u64) -> Value {
    serde_json::json!({"event_id": format!("crm-{tenant}-{version}"), "tenant_id": tenant, "license_id": "crm-lic-1", "tier": tier,
        "seats": seats, "add_ons": [], "starts_at": "2026-01-01T00:00:00Z", "expires_at": far_future(),
        "status": "active", "source_version": version})
}

pub fn member_body(user: &str, groups: &[&str]) -> Value {
    serde_json::json!({"user_id": user, "email": format!("{user}@example.test"), "groups": groups, "attributes": {}})
}

pub use entitle::core::sources::stripe::{event as stripe_event, subscription as stripe_subscription};

/// Checks every event's `detail` against the documented schema
/// (`infra/events.schema.json`), naming each violation.
pub fn assert_valid_events(events: &[Value]) {
    let path = format!("{}/../infra/events.schema.json", env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the documented schema is a valid JSON Schema");
    for e in events {
        assert_eq!(e["source"], "entitle", "{e}");
        assert_eq!(e["detail-type"], e["detail"]["type"], "{e}");
        let problems: Vec<String> = validator.iter_errors(&e["detail"]).map(|err| format!("{} at {}", err, err.instance_path())).collect();
        assert!(problems.is_empty(), "event does not match infra/events.schema.json: {problems:?}\n{}", e["detail"]);
    }
}
