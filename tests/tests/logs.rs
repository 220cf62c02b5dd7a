//! A log line and the audit record of the same change name the same cause:
//! the functions log the `Cause` the audit trail stores, displayed once
//! (`kind:id`), so an operator joins the two on it.

use entitle_tests::{crm_license, stack_dir, unique, Stack};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The causes the functions logged about `tenant` with `message`.
fn logged_causes(tenant: &str, message: &str) -> BTreeSet<String> {
    let log = std::fs::read_to_string(stack_dir().join("functions.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["tenant"] == tenant && v["fields"]["message"] == message)
        .filter_map(|v| v["fields"]["cause"].as_str().map(str::to_string))
        .collect()
}

/// An audit record's cause as it is displayed.
fn displayed(record: &Value) -> String {
    let cause = &record["cause"];
    match cause["connection"].as_str() {
        Some(c) => format!("{}:{c}/{}", cause["kind"].as_str().unwrap(), cause["id"].as_str().unwrap()),
        None => format!("{}:{}", cause["kind"].as_str().unwrap(), cause["id"].as_str().unwrap()),
    }
}

#[tokio::test]
async fn a_log_line_names_the_cause_its_audit_record_names() {
    let s = Stack::connect().await;
    let t = unique("causes");
    // A license event (a CRM record) and an account created by the app.
    let (code, answer) = s.crm(&crm_license(&t, 1, "team", 3)).await;
    assert_eq!(code, 200, "{answer}");
    let (code, created) = s.create_member(&t, &json!({"user_id": "ada", "email": "ada@causes.test"})).await;
    assert_eq!(code, 201, "{created}");
    let audit = s.audit(&t).await;
    let audited = |action: &str| -> BTreeSet<String> { audit.iter().filter(|r| r["action"] == action).map(displayed).collect() };
    let license = audited("license_recorded");
    let member = audited("member_created");
    assert_eq!(license.len(), 1, "{audit:?}");
    assert_eq!(member.len(), 1, "{audit:?}");
    assert!(license.iter().all(|c| c.starts_with("crm_event:")), "{license:?}");
    assert!(member.iter().all(|c| c.starts_with("api_call:")), "{member:?}");
    // The functions' log lines are flushed as they are written; wait for both.
    let (logged_license, logged_member) = s
        .eventually_within("the log lines of both changes", std::time::Duration::from_secs(60), || async {
            let pair = (logged_causes(&t, "license event recorded"), logged_causes(&t, "member created"));
            (!pair.0.is_empty() && !pair.1.is_empty(), json!([pair.0, pair.1]))
        })
        .await
        .as_array()
        .map(|a| (to_set(&a[0]), to_set(&a[1])))
        .unwrap();
    assert_eq!(logged_license, license, "the license event's log line and its audit record");
    assert_eq!(logged_member, member, "the account creation's log line and its audit record");
}

fn to_set(v: &Value) -> BTreeSet<String> {
    v.as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect()
}
