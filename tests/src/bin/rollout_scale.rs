//! `make bench-rollout [TENANTS=10000] [SIZE=100000]`: licensing model
//! rollouts at production size, end to end through the real (release)
//! binaries on a stack of their own, DynamoDB requests counted on the wire:
//!
//! 1. 10 small tenants (a team license, 3 members each) moved to a new
//!    version: DynamoDB requests per tenant moved;
//! 2. a preview, then a rollout, of TENANTS small tenants: tenants a
//!    second, requests per tenant moved (the same as at 10), provision's
//!    largest memory;
//! 3. one tenant of SIZE members: its preview, then its move (members a
//!    second, against today's tier change of about 250), provision's memory.
//!
//! The tenants are seeded through the use cases, straight to DynamoDB (16
//! at a time); the versions are deployed as the stack deploys them
//! (`dev/stack.sh redeploy`, `grandfather`), and moved by rollouts through
//! the admin function, as an operator would.
//!
//! usage: rollout-scale COUNTER_URL [TENANTS] [SIZE]   (ENTITLE_STACK_ENV points at the stack)

use chrono::Utc;
use entitle::app::{licenses, members, reconcile};
use entitle::core::audit::{Cause, CauseKind};
use entitle::core::ids::{EventId, LicenseId, TenantId, UserId};
use entitle::core::license::{LicenseChange, LicenseStatus, LicenseUpdate, Source};
use entitle::core::views::NewMember;
use entitle_tests::{stack_dir, unique, Stack};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn dynamodb_requests(counter: &str) -> u64 {
    let all: BTreeMap<String, u64> = reqwest::get(format!("{counter}/__counts")).await.unwrap().json().await.unwrap();
    all.into_iter().filter(|(k, _)| k.starts_with("DynamoDB_20120810.")).map(|(_, v)| v).sum()
}

/// The largest memory the provision process has reached (VmHWM), in KiB.
fn provision_memory() -> u64 {
    let mut most = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else { continue };
        if exe.file_name().is_some_and(|n| n == "provision") {
            let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
            let hwm: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0);
            most = most.max(hwm);
        }
    }
    most
}

fn admin(s: &Stack) -> String {
    s.settings["ENTITLE_ADMIN_URL"].clone()
}

async fn admin_get(s: &Stack, path: &str) -> Value {
    s.http.get(format!("{}{path}", admin(s))).send().await.unwrap().json().await.unwrap()
}

async fn admin_post(s: &Stack, path: &str, body: &Value) -> Value {
    let res = s.http.post(format!("{}{path}", admin(s))).json(body).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 202, "POST {path}");
    res.json().await.unwrap()
}

/// The shipped model under `version`, `team` changed (gains sso, loses
/// api_access, projects 50 -> `projects`), deployed with `grandfather`.
async fn deploy(version: &str, projects: u32) {
    let base = std::fs::read_to_string(format!("{}/../infra/licensing-model.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let text = base
        .replacen("version = \"2026-11-01\"", &format!("version = \"{version}\""), 1)
        .replacen("projects = 50\napi_access = true\nsso = false", &format!("projects = {projects}\napi_access = false\nsso = true"), 1)
        .replacen("existing = \"migrate\"", "existing = \"grandfather\"", 1);
    let dir = stack_dir();
    std::fs::write(dir.join("licensing-model.toml"), text).unwrap();
    let root = format!("{}/..", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::process::Command::new(format!("{root}/dev/stack.sh"))
        .arg("redeploy")
        .current_dir(&root)
        .env("STACK_DIR", std::fs::canonicalize(&dir).unwrap())
        .env("FN_RELEASE", "1")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "redeploy: {}", String::from_utf8_lossy(&out.stderr));
}

/// A team tenant with `members` members (u0 an admin), reconciled, through the use cases.
async fn small(store: &entitle::adapters::dynamodb::Dynamo, t: &TenantId, members_count: usize) {
    let change = LicenseChange {
        event_id: EventId::parse(format!("crm-{t}-1")).unwrap(),
        tenant_id: t.clone(),
        license_id: LicenseId::parse("main").unwrap(),
        source: Source::Crm,
        source_version: 1,
        update: LicenseUpdate { tier: "team".into(), seats: members_count as u32, addons: BTreeSet::new(), status: LicenseStatus::Active, starts_at: None, expires_at: None },
    };
    licenses::record_change(store, &change, "h", Utc::now()).await.unwrap();
    let cause = Cause::new(CauseKind::Reconcile, "seed");
    reconcile::reconcile(store, t, &cause, Utc::now()).await.unwrap();
    for i in 0..members_count {
        let groups: BTreeSet<String> = if i == 0 { ["admins".to_string()].into() } else { BTreeSet::new() };
        let new = NewMember { user_id: UserId::parse(format!("u{i:06}")).unwrap(), email: format!("u{i}@{t}.test"), groups, attributes: BTreeMap::new() };
        members::create(store, t, &new, &format!("seed-{i}"), Utc::now()).await.unwrap();
    }
    reconcile::reconcile(store, t, &cause, Utc::now()).await.unwrap();
}

/// `count` small tenants named `prefix-<n>`, 16 at a time.
async fn seed_small(s: &Stack, prefix: &str, count: u32) -> Vec<String> {
    let store = Arc::new(s.store());
    let next = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (store, next, prefix) = (store.clone(), next.clone(), prefix.to_string());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        return;
                    }
                    small(&store, &TenantId::parse(format!("{prefix}-{i:05}")).unwrap(), 3).await;
                    if (i + 1) % 1000 == 0 {
                        println!("  seeding: {} tenants after {:.0} s", i + 1, started.elapsed().as_secs_f64());
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    (0..count).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// One tenant of `size` members (16 creations at a time), reconciled.
async fn seed_large(s: &Stack, t: &TenantId, size: u32) {
    let store = Arc::new(s.store());
    let change = LicenseChange {
        event_id: EventId::parse(format!("crm-{t}-1")).unwrap(),
        tenant_id: t.clone(),
        license_id: LicenseId::parse("main").unwrap(),
        source: Source::Crm,
        source_version: 1,
        update: LicenseUpdate { tier: "team".into(), seats: size, addons: BTreeSet::new(), status: LicenseStatus::Active, starts_at: None, expires_at: None },
    };
    licenses::record_change(&*store, &change, "h", Utc::now()).await.unwrap();
    reconcile::reconcile(&*store, t, &Cause::new(CauseKind::Reconcile, "seed"), Utc::now()).await.unwrap();
    let next = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (store, next, t) = (store.clone(), next.clone(), t.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= size {
                        return;
                    }
                    let new = NewMember { user_id: UserId::parse(format!("m{i:06}")).unwrap(), email: format!("m{i:06}@scale.example"), groups: BTreeSet::new(), attributes: BTreeMap::new() };
                    members::create(&*store, &t, &new, &format!("seed-{i}"), Utc::now()).await.unwrap();
                    if (i + 1) % 10_000 == 0 {
                        println!("  seeding: {} members after {:.0} s", i + 1, started.elapsed().as_secs_f64());
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    // The seeding's audit records chained, through provision as on AWS.
    s.settle_within(t.as_str(), Duration::from_secs(7200)).await;
}

/// Waits (up to 2 h) until a rollout or preview is finished; its view and the time it took.
async fn finished(s: &Stack, path: &str, started: Instant) -> (Value, Duration) {
    let v = s
        .eventually_within(&format!("{path} to finish"), Duration::from_secs(7200), || async {
            let v = admin_get(s, path).await;
            (matches!(v["status"].as_str(), Some("done" | "failed" | "canceled")), v)
        })
        .await;
    (v, started.elapsed())
}

struct Moved {
    tenants: u64,
    members: u64,
    took: Duration,
    requests: u64,
    memory: u64,
}

/// A rollout of `to` to `tenants` ("all" or a list): what it moved, in what
/// time, with how many DynamoDB requests (everything on the wire while it ran).
async fn rollout(s: &Stack, counter: &str, to: &str, tenants: Value) -> Moved {
    let before = dynamodb_requests(counter).await;
    let started = Instant::now();
    let created = admin_post(s, "/model/rollouts", &json!({"to": to, "tenants": tenants})).await;
    let (v, took) = finished(s, &format!("/model/rollouts/{}", created["rollout_id"].as_str().unwrap()), started).await;
    assert_eq!(v["status"], "done", "{v}");
    Moved {
        tenants: v["counts"]["done"].as_u64().unwrap(),
        members: v["counts"]["members_changed"].as_u64().unwrap(),
        took,
        requests: dynamodb_requests(counter).await - before,
        memory: provision_memory(),
    }
}

async fn preview(s: &Stack, to: &str, tenants: Value) -> (Value, Duration) {
    let started = Instant::now();
    let created = admin_post(s, "/model/previews", &json!({"version": to, "tenants": tenants})).await;
    finished(s, &format!("/model/previews/{}", created["preview_id"].as_str().unwrap()), started).await
}

fn mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

#[tokio::main]
async fn main() {
    entitle::adapters::scim_client::install_tls_provider();
    let args: Vec<String> = std::env::args().collect();
    let counter = args.get(1).expect("usage: rollout-scale COUNTER_URL [TENANTS] [SIZE]").clone();
    let count: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let size: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let s = Arc::new(Stack::connect().await);
    println!("\nLicensing model rollouts at production size: {count} small tenants, one of {size} members, {}", Utc::now().format("%Y-%m-%d"));

    let ten = seed_small(&s, &unique("ten"), 10).await;
    let started = Instant::now();
    let many = seed_small(&s, &unique("fleet"), count).await;
    println!("seeded {count} tenants of 3 members through the use cases (16 at a time) in {:.0} s", started.elapsed().as_secs_f64());
    let v2 = unique("v2");
    deploy(&v2, 75).await;

    println!("\n| rollout | tenants | wall time | tenants a second | members changed | DynamoDB requests per tenant moved | provision's largest memory |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let m = rollout(&s, &counter, &v2, json!(ten)).await;
    println!(
        "| {v2}, 10 tenants named | {} | {:.1} s | {:.1} | {} | {:.1} | {} |",
        m.tenants,
        m.took.as_secs_f64(),
        m.tenants as f64 / m.took.as_secs_f64(),
        m.members,
        m.requests as f64 / m.tenants as f64,
        mib(m.memory)
    );
    let (p, took) = preview(&s, &v2, json!("all")).await;
    println!(
        "| preview of {v2}, every tenant | {} read | {:.0} s | {:.1} | {} would change | - | {} |",
        p["progress"]["read"],
        took.as_secs_f64(),
        p["progress"]["read"].as_f64().unwrap_or(0.0) / took.as_secs_f64(),
        p["totals"]["members_changed"],
        mib(provision_memory())
    );
    let m = rollout(&s, &counter, &v2, json!("all")).await;
    println!(
        "| {v2}, all ({count} tenants) | {} | {:.0} s | {:.1} | {} | {:.1} | {} |",
        m.tenants,
        m.took.as_secs_f64(),
        m.tenants as f64 / m.took.as_secs_f64(),
        m.members,
        m.requests as f64 / m.tenants as f64,
        mib(m.memory)
    );
    assert!(m.tenants >= u64::from(count), "every tenant moved");
    drop(many);

    let large = TenantId::parse(unique("large")).unwrap();
    let started = Instant::now();
    seed_large(&s, &large, size).await;
    println!("\nseeded one tenant of {size} members (16 at a time) in {:.0} s", started.elapsed().as_secs_f64());
    let v3 = unique("v3");
    deploy(&v3, 80).await;
    println!("\n| the tenant of {size} members | wall time | members a second | members changed | provision's largest memory |");
    println!("| --- | --- | --- | --- | --- |");
    let (p, took) = preview(&s, &v3, json!([large])).await;
    println!("| preview of {v3} | {:.0} s | {:.0} | {} would change | {} |", took.as_secs_f64(), f64::from(size) / took.as_secs_f64(), p["totals"]["members_changed"], mib(provision_memory()));
    let m = rollout(&s, &counter, &v3, json!([large])).await;
    println!("| rollout of {v3} (move and walk) | {:.0} s | {:.0} | {} | {} |", m.took.as_secs_f64(), f64::from(size) / m.took.as_secs_f64(), m.members, mib(m.memory));
    // Against today's tier change of the same tenant, in the same run.
    let started = Instant::now();
    let (code, answer) = s
        .crm(&json!({"event_id": format!("crm-{large}-2"), "tenant_id": large, "license_id": "main", "tier": "business", "seats": size, "add_ons": [], "status": "active", "source_version": 2}))
        .await;
    assert_eq!(code, 200, "{answer}");
    s.settle_within(large.as_str(), Duration::from_secs(7200)).await;
    let took = started.elapsed();
    println!(
        "| tier change team -> business (a walk of every member, for comparison) | {:.0} s | {:.0} | {} | {} |",
        took.as_secs_f64(),
        f64::from(size) / took.as_secs_f64(),
        size,
        mib(provision_memory())
    );
    let v = entitle::app::audit::verify(&s.store(), &large).await.unwrap().expect("the tenant exists");
    assert!(v.ok, "the audit chain of the large tenant: {:?}", v.problem);
    println!("\naudit chain of the large tenant verified: {} records", v.records);
}
