//! Licensing model versions through the real binaries on the local stack:
//! deploys (`dev/stack.sh redeploy`: the functions start afresh with a
//! changed model, and the model tick registers it), `migrate` and
//! `grandfather`, a preview against the rollout that follows it, explicit
//! rollouts, a pin, a move at a tenant's period end, a rollback, a
//! version's token lifetime, and the deploy that teaches the model a price
//! a parked Stripe event named.
//!
//! It deploys models, and a `migrate` deploy moves every tenant of the
//! stack: `dev/test.sh` runs it in the last phase, alone. Every model it
//! deploys has a version of its own (unique to the run).

use base64::Engine;
use entitle_tests::{crm_license, member_body, stack_dir, unique, Stack};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn admin(s: &Stack) -> String {
    s.settings.get("ENTITLE_ADMIN_URL").cloned().expect("stack settings lack ENTITLE_ADMIN_URL")
}

/// A JSON request to admin (an operator's), checked against infra/openapi.yaml.
async fn call(s: &Stack, method: reqwest::Method, path: &str, body: Option<(&str, String)>) -> (u16, Value) {
    let url = format!("{}{path}", admin(s));
    let mut req = s.http.request(method.clone(), &url);
    if let Some((content_type, text)) = body {
        req = req.header("content-type", content_type).body(text);
    }
    let res = req.send().await.unwrap();
    let code = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    entitle_tests::openapi::check(method.as_str(), &url, code, &body);
    (code, body)
}

async fn get(s: &Stack, path: &str) -> Value {
    let (code, body) = call(s, reqwest::Method::GET, path, None).await;
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

async fn post(s: &Stack, path: &str, body: &Value) -> (u16, Value) {
    call(s, reqwest::Method::POST, path, Some(("application/json", body.to_string()))).await
}

/// The model as the stack deployed it last (`$STACK_DIR/licensing-model.toml`).
fn deployed_text() -> String {
    std::fs::read_to_string(stack_dir().join("licensing-model.toml")).unwrap()
}

/// `text` under `version`, with `[rollout]` as given.
fn versioned(text: &str, version: &str, existing: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("version = ") {
                format!("version = \"{version}\"")
            } else if l.starts_with("existing = ") {
                format!("existing = \"{existing}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    lines.join("\n") + "\n"
}

/// A deploy, locally: the model written where the stack's functions read
/// it, the functions started afresh (`dev/stack.sh redeploy`, which fires
/// the model tick as a deploy does). Returns what the tick said.
async fn deploy(text: &str) -> String {
    let dir = stack_dir();
    std::fs::write(dir.join("licensing-model.toml"), text).unwrap();
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(format!("{root}/dev/stack.sh")).arg("redeploy").current_dir(&root).env("STACK_DIR", std::fs::canonicalize(&dir).unwrap()).output().await.unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "dev/stack.sh redeploy failed: {said}");
    said
}

fn version_of(v: &Value) -> String {
    v["model"]["version"].as_str().unwrap_or_default().to_string()
}

/// A team tenant with members `u0` (an admin), `u1` (finance) and `u2`.
async fn team(s: &Stack, prefix: &str, tier: &str) -> String {
    let t = unique(prefix);
    s.crm_licensed(&t, tier, 5).await;
    for (u, groups) in [("u0", vec!["admins"]), ("u1", vec!["finance"]), ("u2", vec![])] {
        let (code, body) = s.create_member(&t, &member_body(u, &groups)).await;
        assert_eq!(code, 201, "{body}");
    }
    s.settle(&t).await;
    t
}

async fn members(s: &Stack, t: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for u in ["u0", "u1", "u2"] {
        let (code, m) = s.member(t, u).await;
        assert_eq!(code, 200, "{m}");
        out.insert(u.to_string(), m);
    }
    out
}

/// What a member may do (status, roles, entitlements), without its seat's time and version.
fn access_of(m: &Value) -> Value {
    json!({"status": m["status"], "roles": m["roles"], "entitlements": m["entitlements"]})
}

async fn claims(s: &Stack, t: &str, u: &str) -> Value {
    let (code, answer) = s.get(&format!("/tenants/{t}/members/{u}/token")).await;
    assert_eq!(code, 200, "{answer}");
    let part = answer["token"].as_str().unwrap().split('.').nth(1).unwrap().to_string();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Waits for a rollout or preview to reach `status`.
async fn run_reaches(s: &Stack, path: &str, status: &str) -> Value {
    s.eventually_within(&format!("{path} to be {status}"), Duration::from_secs(240), || async {
        let v = get(s, path).await;
        (v["status"] == status, v)
    })
    .await
}

/// Members of `tenants` whose access the audit records of `cause` changed.
async fn changed_by(s: &Stack, tenants: &[&String], cause: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for t in tenants {
        for r in s.audit(t).await {
            if r["cause"]["id"] == cause && r["cause"]["kind"] == "model_rollout" && r["action"] == "member_access_changed" {
                let pick = |x: &Value| (x["status"].clone(), x["roles"].clone(), x["entitlements"].clone());
                if pick(&r["before"]) != pick(&r["after"]) {
                    out.insert((t.to_string(), r["subject"].as_str().unwrap().trim_start_matches("member:").to_string()));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn the_rules_change_and_every_tenant_follows() {
    let s = Stack::connect().await;
    // The shipped rules are the latest (a stack this test ran on before
    // gets them back, under a version of their own).
    let base = std::fs::read_to_string(format!("{}/../infra/licensing-model.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let shipped = entitle::core::model::LicensingModel::from_toml(&base, "shipped").unwrap().fingerprint();
    let overview = get(&s, "/model").await;
    let latest = overview["versions"].as_array().unwrap().iter().find(|v| v["latest"] == true).cloned().unwrap_or_default();
    if latest["fingerprint"] != shipped.as_str() {
        let again = unique("v1");
        deploy(&versioned(&base, &again, "grandfather")).await;
        s.eventually("the shipped rules registered again", || async {
            let o = get(&s, "/model").await;
            (o["latest"] == again.as_str(), o)
        })
        .await;
    }
    let v1 = get(&s, "/model").await["latest"].as_str().unwrap().to_string();
    let (a, b, c) = (team(&s, "mv-a", "team").await, team(&s, "mv-b", "team").await, team(&s, "mv-c", "business").await);
    let original_a = members(&s, &a).await;
    assert!(original_a.values().all(|m| m["model"] == v1.as_str() && m["entitlements"]["api_access"] == true));
    assert_eq!(claims(&s, &a, "u1").await["model"], v1.as_str());

    // -- A preview of the candidate, then its deploy with `migrate`. --
    let v2 = unique("v2");
    let changed = base.replacen("projects = 50\napi_access = true\nsso = false", "projects = 75\napi_access = false\nsso = true", 1);
    assert_ne!(changed, base, "the shipped model's team tier");
    let candidate = versioned(&changed, &v2, "migrate");
    let path = format!("/model/previews?tenants={a},{b},{c}");
    let (code, created) = call(&s, reqwest::Method::POST, &path, Some(("application/toml", candidate.clone()))).await;
    assert_eq!(code, 202, "{created}");
    let preview_path = format!("/model/previews/{}", created["preview_id"].as_str().unwrap());
    let preview = run_reaches(&s, &preview_path, "done").await;
    assert_eq!((preview["progress"]["read"].as_u64(), preview["totals"]["tenants_affected"].as_u64()), (Some(3), Some(2)), "{preview}");
    let mut previewed = BTreeSet::new();
    for t in preview["tenants_page"].as_array().unwrap() {
        for m in t["preview"]["members"].as_array().unwrap() {
            previewed.insert((t["tenant_id"].as_str().unwrap().to_string(), m["user_id"].as_str().unwrap().to_string()));
            assert_eq!(m["entitlements_added"], json!(["projects=75", "sso=true"]), "{m}");
        }
    }
    assert_eq!(previewed.len(), 6, "the six members of the team tenants: {preview}");
    // Nothing of any tenant was written.
    assert_eq!(members(&s, &a).await, original_a);
    // A candidate that does not validate: every problem named.
    let bad = candidate.replacen("roles = [\"billing-admin\"]", "roles = [\"superuser\"]", 1).replacen("contract = { action = \"suspend\" }", "contract = { action = \"downgrade\" }", 1);
    let (code, refused) = call(&s, reqwest::Method::POST, "/model/previews", Some(("application/toml", bad))).await;
    assert_eq!((code, refused["error"]["problems"].as_array().map(Vec::len)), (422, Some(2)), "{refused}");

    // (The deploy's tick, or the stack's schedule just before it, registers it.)
    let tick = deploy(&candidate).await;
    assert!(tick.contains("\"registration\":\"New") || tick.contains("\"registration\":\"Known"), "{tick}");
    assert_eq!(get(&s, "/model").await["latest"], v2.as_str(), "the deploy registered {v2}");
    // Every tenant of the stack moves (those earlier tests left broken on
    // purpose fail, each with its cause, and only they stay behind).
    let deploy_run = format!("deploy-{v2}");
    let rollout = s
        .eventually_within("the deploy's rollout to finish", Duration::from_secs(300), || async {
            let (code, r) = call(&s, reqwest::Method::GET, &format!("/model/rollouts/{deploy_run}"), None).await;
            (code == 200 && (r["status"] == "done" || r["status"] == "failed"), r)
        })
        .await;
    assert_eq!(rollout["by"], "deploy");
    let overview = get(&s, "/model").await;
    assert_eq!((overview["latest"].as_str(), overview["tenants_behind_latest"].as_u64()), (Some(v2.as_str()), rollout["counts"]["failed"].as_u64()), "{overview} {rollout}");
    let mut after: Option<String> = None;
    loop {
        let page = get(&s, &format!("/model/rollouts/{deploy_run}?limit=500{}", after.as_ref().map(|a| format!("&after={a}")).unwrap_or_default())).await;
        for o in page["outcomes"].as_array().unwrap() {
            assert!(o["state"] == "done" || (o["state"] == "failed" && o["reason"].as_str().is_some_and(|r| !r.is_empty())), "{o}");
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    for t in [&a, &b] {
        let view = s.tenant_where(t, "the tenant on the new rules", |v| version_of(v) == v2 && v["entitlements"]["sso"] == true).await;
        assert_eq!(view["entitlements"]["api_access"], false);
        for (u, m) in members(&s, t).await {
            assert_eq!((m["model"].as_str(), &m["entitlements"]["sso"], &m["entitlements"]["projects"]), (Some(v2.as_str()), &json!(true), &json!(75)), "{u}: {m}");
        }
        let token = claims(&s, t, "u2").await;
        assert_eq!((token["model"].as_str(), &token["entitlements"]["api_access"]), (Some(v2.as_str()), &json!(false)), "a token cut now says the new rules: {token}");
    }
    let c_members = members(&s, &c).await;
    assert!(c_members.values().all(|m| m["model"] == v2.as_str() && m["entitlements"]["audit_log_export"] == true), "{c_members:?}");
    // Each change audited with the deploy's rollout; exactly what the preview listed.
    assert!(get(&s, "/model/rollouts").await["rollouts"].as_array().unwrap().iter().any(|r| r["id"] == deploy_run.as_str()), "listed with the others");
    assert_eq!(changed_by(&s, &[&a, &b, &c], &deploy_run).await, previewed);
    let rules: Vec<String> = s.audit(&a).await.iter().filter(|r| r["cause"]["id"] == deploy_run.as_str()).map(|r| r["rule"].as_str().unwrap().to_string()).collect();
    assert!(rules.iter().any(|r| r.contains(&format!("{v1} -> {v2}"))), "{rules:?}");
    assert!(s.verify(&a).await["ok"] == true);

    // A model reusing a registered version with other rules is refused, naming both.
    let reuse = versioned(&changed.replacen("projects = 75", "projects = 76", 1), &v2, "migrate");
    let said = deploy(&reuse).await;
    assert!(said.contains("refused") && said.contains("fingerprint"), "{said}");
    let still = s.tenant_where(&a, "the registered rules", |v| v["entitlements"]["projects"] == 75).await;
    assert_eq!(version_of(&still), v2);

    // -- `grandfather`: nobody moves; new tenants follow the latest. --
    let v3 = unique("v3");
    let third = versioned(&changed.replacen("projects = 75", "projects = 80", 1).replacen("member_seconds = 900", "member_seconds = 60", 1), &v3, "grandfather");
    deploy(&third).await;
    s.eventually("the grandfathering version registered", || async {
        let o = get(&s, "/model").await;
        (o["latest"] == v3.as_str(), o)
    })
    .await;
    let newcomer = team(&s, "mv-new", "team").await;
    let n = members(&s, &newcomer).await;
    assert!(n.values().all(|m| m["model"] == v3.as_str() && m["entitlements"]["projects"] == 80), "{n:?}");
    // The token lifetime is the version's rule.
    let token = claims(&s, &newcomer, "u0").await;
    assert_eq!((token["exp"].as_i64().unwrap() - token["iat"].as_i64().unwrap(), token["model"].as_str()), (60, Some(v3.as_str())), "{token}");
    // A pin keeps b on v2.
    let pin = json!({"version": v2, "by": "account manager", "reason": "negotiated contract"});
    let (code, pinned) = call(&s, reqwest::Method::PUT, &format!("/tenants/{b}/model"), Some(("application/json", pin.to_string()))).await;
    assert_eq!(code, 200, "{pinned}");
    assert_eq!(pinned["model"]["pin"]["version"], v2.as_str());
    for t in [&a, &b, &c] {
        let view = s.tenant(t).await.1;
        assert_eq!(version_of(&view), v2, "grandfathered: {view}");
    }

    // -- A rollout of a and b: a moves, b (pinned) is skipped and reported, c stays. --
    let (code, started) = post(&s, "/model/rollouts", &json!({"to": v3, "tenants": [a, b]})).await;
    assert_eq!(code, 202, "{started}");
    let id = started["rollout_id"].as_str().unwrap().to_string();
    let done = run_reaches(&s, &format!("/model/rollouts/{id}"), "done").await;
    assert_eq!((done["counts"]["done"].as_u64(), done["counts"]["skipped"].as_u64()), (Some(1), Some(1)), "{done}");
    let skipped = done["outcomes"].as_array().unwrap().iter().find(|o| o["tenant_id"] == b.as_str()).unwrap().clone();
    assert!(skipped["reason"].as_str().unwrap().contains("pinned to") && skipped["reason"].as_str().unwrap().contains("negotiated contract"), "{skipped}");
    s.tenant_where(&a, "a on v3", |v| version_of(v) == v3 && v["entitlements"]["projects"] == 80).await;
    assert_eq!(version_of(&s.tenant(&b).await.1), v2);
    assert_eq!(version_of(&s.tenant(&c).await.1), v2);
    assert!(members(&s, &c).await.values().all(|m| m["entitlements"]["projects"] == 500 && m["model"] == v2.as_str()));
    assert!(!changed_by(&s, &[&a], &id).await.is_empty());
    assert!(changed_by(&s, &[&b, &c], &id).await.is_empty(), "the rollout named a and b; b is pinned");

    // -- period_end: w moves when its license period ends (the sweep). --
    let w = unique("mv-w");
    let mut record = crm_license(&w, 1, "team", 5);
    let end = chrono::Utc::now() + chrono::Duration::days(20);
    record["expires_at"] = json!(end.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    assert_eq!(s.crm(&record).await.0, 200);
    s.tenant_where(&w, "w provisioned", |v| v["seats"]["total"] == 5).await;
    let (code, started) = post(&s, "/model/rollouts", &json!({"to": v2, "tenants": [w], "at": "period_end"})).await;
    assert_eq!(code, 202, "{started}");
    let id = started["rollout_id"].as_str().unwrap().to_string();
    let waiting = s
        .eventually("w waits for its period's end", || async {
            let r = get(&s, &format!("/model/rollouts/{id}")).await;
            (r["counts"]["waiting"] == 1 && r["status"] == "running", r)
        })
        .await;
    assert!(waiting["outcomes"][0]["waits_until"].as_str().is_some(), "{waiting}");
    assert_eq!(s.tenant(&w).await.1["model"]["waiting"]["to"], v2.as_str());
    assert_eq!(version_of(&s.tenant(&w).await.1), v3, "w was created on the latest");
    s.sweep(end - chrono::Duration::days(1)).await;
    assert_eq!(version_of(&s.tenant(&w).await.1), v3, "not before its period ends");
    s.sweep(end + chrono::Duration::hours(1)).await;
    run_reaches(&s, &format!("/model/rollouts/{id}"), "done").await;
    s.tenant_where(&w, "w moved at its period's end", |v| version_of(v) == v2 && v["model"].get("waiting").is_none()).await;

    // -- A rollback: a back on v1 holds exactly its first access. --
    let (code, started) = post(&s, "/model/rollouts", &json!({"to": v1, "tenants": [a]})).await;
    assert_eq!(code, 202, "{started}");
    run_reaches(&s, &format!("/model/rollouts/{}", started["rollout_id"].as_str().unwrap()), "done").await;
    s.tenant_where(&a, "a back on v1", |v| version_of(v) == v1).await;
    let back = members(&s, &a).await;
    for (u, m) in &back {
        assert_eq!((access_of(m), m["model"].as_str()), (access_of(&original_a[u]), Some(v1.as_str())), "{u}");
    }
    // The pin released: b follows the latest.
    let (code, released) = call(&s, reqwest::Method::DELETE, &format!("/tenants/{b}/model"), None).await;
    assert_eq!((code, released["version"].as_str()), (200, Some(v3.as_str())), "{released}");
    s.tenant_where(&b, "b on the latest", |v| version_of(v) == v3 && v["model"].get("pin").is_none()).await;
    assert!(s.verify(&b).await["ok"] == true);

    a_parked_event_is_applied_by_a_replay_once_a_deployed_version_knows_its_price(&s).await;
}

/// The on-call case as it happens: a new price parks a Stripe event; the
/// model is taught the price, under a new version, and deployed; the replay
/// applies the event (what a price means is the latest version's). (One
/// test with the one above: each deploys, one after the other.)
async fn a_parked_event_is_applied_by_a_replay_once_a_deployed_version_knows_its_price(s: &Stack) {
    let t = unique("learn");
    let silver = format!("silver_{}", unique("plan").replace('-', "_"));
    s.billing.post("/v1/plans", &json!({"id": silver, "amount": 4900, "currency": "usd", "interval": "month", "product": {"name": "Silver"}})).await;
    s.billing.subscribe(Some(&t), &silver, 4).await;
    let parked = s
        .eventually("the event parked", || async {
            let list = get(s, "/parked?source=stripe").await;
            let found = list["parked"].as_array().unwrap().iter().find(|p| p["tenant_id"] == t.as_str()).cloned();
            (found.is_some(), found.unwrap_or(Value::Null))
        })
        .await;
    let path = format!("/parked/{}/replay", parked["event_id"].as_str().unwrap());
    let (_, answer) = post(s, &path, &json!({})).await;
    assert_eq!(answer["parked"], true, "the running model does not know {silver}: {answer}");
    // The model learns the price under a version of its own, and is deployed.
    let base = deployed_text();
    let taught = versioned(&base.replacen("[stripe.price_ids]\n", &format!("[stripe.price_ids]\n{silver} = {{ tier = \"business\" }}\n"), 1), &unique("v-silver"), "grandfather");
    deploy(&taught).await;
    let answer = s
        .eventually("the replay applies it", || async {
            let (code, a) = post(s, &path, &json!({})).await;
            (code == 200 && a["parked"] == false, a)
        })
        .await;
    assert_eq!(answer["status"], "applied", "{answer}");
    s.tenant_where(&t, "the business tier, 4 seats", |v| v["tier"] == "business" && v["seats"]["total"] == 4).await;
}
