//! `make bench-tenant`: one tenant at production size, end to end: 10,000
//! members (seeded through the use case, the initial sync delivered to a
//! SCIM target on scim2-server), then a seat cut of 5,000 and a seat
//! restore, each a CRM record through ingest, reconciled by provision,
//! delivered to the target and verified there, on the access API and in
//! the audit chain. Prints wall times, DynamoDB requests per member change
//! (counted on the wire, as in bench-e2e) and the largest memory each
//! function process reached.
//!
//! usage: tenant-scale COUNTER_URL [MEMBERS]   (ENTITLE_STACK_ENV points at the stack)

use entitle::app::members;
use entitle::core::ids::TenantId;
use entitle::core::views::NewMember;
use entitle_tests::{unique, Stack};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn dynamodb_requests(counter: &str) -> u64 {
    let all: BTreeMap<String, u64> = reqwest::get(format!("{counter}/__counts")).await.unwrap().json().await.unwrap();
    all.into_iter().filter(|(k, _)| k.starts_with("DynamoDB_20120810.")).map(|(_, v)| v).sum()
}

async fn crm(s: &Stack, t: &str, seats: u32, version: i64) {
    let (code, answer) = s
        .crm(&json!({"event_id": format!("crm-{t}-{version}"), "tenant_id": t, "license_id": "main", "tier": "team", "seats": seats,
            "add_ons": [], "starts_at": null, "expires_at": null, "status": "active", "source_version": version}))
        .await;
    assert_eq!(code, 200, "{answer}");
}

/// Active users on the target, counted page by page.
async fn active_on_target(scim: &entitle_tests::Scim) -> usize {
    let mut active = 0;
    let mut start = 1;
    loop {
        let (code, page) = scim.request(reqwest::Method::GET, &format!("/Users?startIndex={start}&count=1000"), None).await;
        assert_eq!(code, 200, "{page}");
        let users = page["Resources"].as_array().cloned().unwrap_or_default();
        active += users.iter().filter(|u| u["active"] == true).count();
        if users.is_empty() || start + users.len() as u64 > page["totalResults"].as_u64().unwrap_or(0) {
            return active;
        }
        start += users.len() as u64;
    }
}

/// The largest memory each function process has reached (VmHWM), by function.
fn peak_memory() -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else { continue };
        let name = exe.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        if !["ingest", "access", "amend", "provision", "expiry-sweep", "billing"].contains(&name.as_str()) {
            continue;
        }
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let hwm: u64 = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0);
        let e = out.entry(name).or_default();
        *e = (*e).max(hwm);
    }
    out
}

/// Waits until the access API shows `used` seats used, the target holds
/// `active` active users with nothing left to deliver, and the chain
/// verifies; keeps asking provision to deliver meanwhile (each run
/// delivers what its time budget allows; the sweep does this in production).
async fn delivered(s: &Stack, t: &str, scim: &entitle_tests::Scim, used: u64, active: usize) {
    let start = Instant::now();
    loop {
        let (_, tenant) = s.tenant(t).await;
        let target = s.target(t, "idp").await;
        let pending = target["pending"].as_u64().unwrap_or(u64::MAX);
        if tenant["seats"]["used"].as_u64() == Some(used) && pending == 0 && active_on_target(scim).await == active {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3600), "not delivered after 60 min: {tenant} {target}");
        s.deliver(t).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let v = s.verify(t).await;
    assert_eq!((v["ok"].as_bool(), v["pending"].as_u64()), (Some(true), Some(0)), "{v}");
}

#[tokio::main]
async fn main() {
    entitle::adapters::scim_client::install_tls_provider();
    let args: Vec<String> = std::env::args().collect();
    let counter = args.get(1).expect("usage: tenant-scale COUNTER_URL [MEMBERS]").clone();
    let total: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let cut = total / 2;
    let s = Arc::new(Stack::connect().await);
    let t = unique("scale-tenant");
    let tenant = TenantId::parse(&t).unwrap();
    let scim = s.scim(&t);
    println!("\nOne tenant at production size: {total} members, a seat cut of {cut} and a restore, {}", chrono::Utc::now().format("%Y-%m-%d"));

    // The tenant, its target, and its members (seeded through the use case).
    crm(&s, &t, total, 1).await;
    s.tenant_where(&t, "provisioned", |v| v["seats"]["total"] == total).await;
    let (code, body) = s.put_target(&t, "idp", &json!({"base_url": scim.base, "token": scim.token, "mapping": {"group_prefix": "entitle-"}})).await;
    assert_eq!(code, 201, "{body}");
    let seeded = Instant::now();
    let (store, model) = (Arc::new(s.store()), s.model());
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (store, model, tenant, next) = (store.clone(), model.clone(), tenant.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= total {
                        return;
                    }
                    let new = NewMember {
                        user_id: entitle::core::ids::UserId::parse(format!("m{i:05}")).unwrap(),
                        email: format!("m{i:05}@scale.example"),
                        groups: Default::default(),
                        attributes: Default::default(),
                    };
                    members::create(&model, &*store, &tenant, &new, &format!("seed-{i}"), chrono::Utc::now()).await.unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let seed_time = seeded.elapsed();
    let initial = Instant::now();
    delivered(&s, &t, &scim, u64::from(total), total as usize).await;
    println!("\n| step | wall time | DynamoDB requests per member change |");
    println!("| --- | --- | --- |");
    println!("| seed {total} members (the use case, 16 at a time) | {:.1} s | |", seed_time.as_secs_f64());
    println!("| initial sync: {total} users created on the target, audit chained | {:.1} s | |", initial.elapsed().as_secs_f64());

    for (step, seats, version) in [(format!("seat cut {total} -> {cut}"), cut, 2), (format!("seat restore {cut} -> {total}"), total, 3)] {
        let before = dynamodb_requests(&counter).await;
        let at = Instant::now();
        crm(&s, &t, seats, version).await;
        s.tenant_where(&t, "the new seats", |v| v["seats"]["total"] == seats).await;
        delivered(&s, &t, &scim, u64::from(seats), seats as usize).await;
        let requests = dynamodb_requests(&counter).await - before;
        println!(
            "| {step}: reconciled, {cut} users changed on the target, verified | {:.1} s | {:.2} ({requests} requests, reads of the checks included) |",
            at.elapsed().as_secs_f64(),
            requests as f64 / f64::from(cut)
        );
    }
    let peaks = peak_memory();
    let described: Vec<String> = peaks.iter().map(|(f, kb)| format!("{f} {:.0} MiB", *kb as f64 / 1024.0)).collect();
    println!("\nlargest memory of a function process (VmHWM): {}", described.join(", "));
}
