//! `make bench-tenant [SIZE=100000]`: one tenant at production size, end to
//! end through the real (release) binaries, DynamoDB requests counted on the
//! wire (as bench-e2e counts them):
//!
//! 1. one creation, one removal and one group change of a member (through
//!    the account API, reconciled by provision), in a tenant of 10 and in
//!    one of SIZE members: DynamoDB requests and wall time each;
//! 2. a tier change and a seat cut of SIZE/2 in the large tenant: members
//!    a second, and the largest memory of the provision process;
//! 3. a first directory sync of SYNC (20,000) Users into an empty tenant
//!    (`POST /scim/v2/Users` through its directory connection, 16
//!    connections, as an identity provider's): creations a second over the
//!    first and the last thousand, and when provision caught up.
//!
//! The large tenant is seeded through the use case (16 at a time). No SCIM
//! target: what is measured is Entitle's own work.
//!
//! usage: tenant-scale COUNTER_URL [SIZE] [SYNC]   (ENTITLE_STACK_ENV points at the stack)

use entitle::app::members;
use entitle::core::ids::TenantId;
use entitle::core::views::NewMember;
use entitle_tests::{far_future, member_body, unique, Stack};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn dynamodb_requests(counter: &str) -> u64 {
    let all: BTreeMap<String, u64> = reqwest::get(format!("{counter}/__counts")).await.unwrap().json().await.unwrap();
    all.into_iter().filter(|(k, _)| k.starts_with("DynamoDB_20120810.")).map(|(_, v)| v).sum()
}

/// Waits until no DynamoDB request has been made for 2 s (provision has
/// finished the work a step queued); the requests made since `before`.
async fn quiet_since(counter: &str, before: u64) -> u64 {
    let mut last = dynamodb_requests(counter).await;
    let mut still = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = dynamodb_requests(counter).await;
        if now != last {
            (last, still) = (now, Instant::now());
        } else if still.elapsed() >= Duration::from_secs(2) {
            return now - before;
        }
    }
}

async fn crm(s: &Stack, t: &str, tier: &str, seats: u32, version: i64) {
    let (code, answer) = s
        .crm(&json!({"event_id": format!("crm-{t}-{version}"), "tenant_id": t, "license_id": "main", "tier": tier, "seats": seats,
            "add_ons": [], "starts_at": "2026-01-01T00:00:00Z", "expires_at": far_future(), "status": "active", "source_version": version}))
        .await;
    assert_eq!(code, 200, "{answer}");
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

fn mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

/// A licensed tenant of `size` members, created through the use case by 16 workers.
async fn seeded(s: &Stack, t: &str, size: u32) -> Duration {
    crm(s, t, "team", size.max(1), 1).await;
    s.tenant_where(t, "provisioned", |v| v["seats"]["total"] == size.max(1)).await;
    let tenant = TenantId::parse(t).unwrap();
    let store = Arc::new(s.store());
    let next = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (store, tenant, next) = (store.clone(), tenant.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= size {
                        return;
                    }
                    let new = NewMember {
                        user_id: entitle::core::ids::UserId::parse(format!("m{i:06}")).unwrap(),
                        email: format!("m{i:06}@scale.example"),
                        groups: if i % 50 == 0 { ["finance".to_string()].into() } else { Default::default() },
                        attributes: Default::default(),
                    };
                    members::create(&*store, &tenant, &new, &format!("seed-{i}"), chrono::Utc::now()).await.unwrap();
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
    let took = started.elapsed();
    // Provision chains the seeding's audit records (the use case commits them unchained).
    s.settle_within(t, Duration::from_secs(7200)).await;
    took
}

/// One creation, one removal, one group change through the account API:
/// (what, requests, wall time until provision was done).
async fn single_changes(s: &Stack, counter: &str, t: &str) -> Vec<(&'static str, u64, Duration)> {
    let mut out = Vec::new();
    let user = unique("one");
    for what in ["creation", "group change", "removal"] {
        let before = quiet_since(counter, 0).await;
        let at = Instant::now();
        let code = match what {
            "creation" => s.create_member(t, &member_body(&user, &[])).await.0,
            "group change" => s.update_member(t, &user, &json!({"groups": ["finance"]})).await.0,
            _ => s.delete_member(t, &user).await.0,
        };
        assert!(code == 200 || code == 201, "{what}: {code}");
        let requests = quiet_since(counter, before).await;
        // The 2 s of quiet that ended the wait are not the change's.
        out.push((what, requests, at.elapsed().saturating_sub(Duration::from_secs(2))));
    }
    out
}

/// Waits (up to 2 h) until the tenant's view satisfies `pred` (the read
/// API answers from the licenses at once), then until provision has
/// brought the tenant to them: a barrier queued after the change, which
/// provision reaches only once the change's reconcile is done, with the
/// rest of its walk or seat pass however many invocations they take.
async fn until_done(s: &Stack, t: &str, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    s.eventually_within(&format!("{what} in the read API (2 h)"), Duration::from_secs(7200), || async {
        let (_, v) = s.tenant(t).await;
        (pred(&v), v)
    })
    .await;
    s.settle_within(t, Duration::from_secs(7200)).await;
}

/// An identity provider's first sync: `count` Users pushed through the
/// tenant's directory connection (`POST /scim/v2/Users`) by 16 connections:
/// the times at which each thousand was done.
async fn first_sync(d: &entitle_tests::directory::Directory, count: u32) -> Vec<Duration> {
    let next = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicU32::new(0));
    let marks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            let (d, next, done, marks) = (d.clone(), next.clone(), done.clone(), marks.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= count {
                        return;
                    }
                    let login = format!("d{i:06}@idp.test");
                    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": login, "externalId": format!("idp-{i:06}"),
                        "name": {"givenName": "Sync", "familyName": format!("User {i}")}, "emails": [{"primary": true, "value": login, "type": "work"}], "active": true});
                    let user = d.create_user(&body).await;
                    assert!(user["id"].is_string(), "{user}");
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if n % 1000 == 0 {
                        marks.lock().unwrap().push(started.elapsed());
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let mut marks = marks.lock().unwrap().clone();
    marks.sort();
    marks
}

#[tokio::main]
async fn main() {
    entitle::adapters::scim_client::install_tls_provider();
    let args: Vec<String> = std::env::args().collect();
    let counter = args.get(1).expect("usage: tenant-scale COUNTER_URL [SIZE] [SYNC]").clone();
    let size: u32 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let sync: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let s = Arc::new(Stack::connect().await);
    println!("\nOne tenant at production size: {size} members, {}", chrono::Utc::now().format("%Y-%m-%d"));

    // 1. Single member changes in a tenant of 10 and in one of `size`.
    let small = unique("scale-small");
    seeded(&s, &small, 10).await;
    let in_small = single_changes(&s, &counter, &small).await;
    let large = unique("scale-large");
    let seed_time = seeded(&s, &large, size).await;
    println!("\nseeded {size} members through the use case (16 at a time) in {:.0} s ({:.0} a second)", seed_time.as_secs_f64(), f64::from(size) / seed_time.as_secs_f64());
    let in_large = single_changes(&s, &counter, &large).await;
    println!("\n| one member's change (account API, then provision) | DynamoDB requests, tenant of 10 | of {size} | wall time, tenant of 10 | of {size} |");
    println!("| --- | --- | --- | --- | --- |");
    for ((what, r10, t10), (_, rl, tl)) in in_small.iter().zip(&in_large) {
        println!("| {what} | {r10} | {rl} | {} ms | {} ms |", t10.as_millis(), tl.as_millis());
    }

    // 2. Tenant-wide changes of the large tenant.
    println!("\n| tenant-wide change of {size} members | wall time | members a second | largest memory of provision |");
    println!("| --- | --- | --- | --- |");
    let at = Instant::now();
    crm(&s, &large, "business", size, 2).await;
    until_done(&s, &large, "tier change", |v| v["tier"] == "business").await;
    let took = at.elapsed().as_secs_f64();
    let mem = peak_memory().get("provision").copied().unwrap_or(0);
    println!("| tier change team -> business (every member's entitlements) | {took:.0} s | {:.0} | {} |", f64::from(size) / took, mib(mem));
    let cut = size / 2;
    let at = Instant::now();
    crm(&s, &large, "business", size - cut, 3).await;
    until_done(&s, &large, "seat cut", |v| v["seats"]["total"] == size - cut && v["seats"]["used"] == size - cut).await;
    let took = at.elapsed().as_secs_f64();
    let mem = peak_memory().get("provision").copied().unwrap_or(0);
    println!("| seat cut of {cut} (the last holders in the seat order) | {took:.0} s | {:.0} | {} |", f64::from(cut) / took, mib(mem));
    // The chain verified through the use case itself: the read API's
    // answer for some 250,000 records outlasts the harness's HTTP timeout.
    let v = entitle::app::audit::verify(&s.store(), &TenantId::parse(&large).unwrap()).await.unwrap().expect("the tenant exists");
    assert!(v.ok, "the audit chain of the large tenant: {:?}", v.problem);
    println!("\naudit chain of the large tenant verified: {} records", v.records);

    // 3. A first sync into an empty tenant.
    let fresh = unique("scale-sync");
    crm(&s, &fresh, "team", sync, 1).await;
    s.tenant_where(&fresh, "provisioned", |v| v["seats"]["total"] == sync).await;
    let directory = s.connect_directory(&fresh, "bench IdP", None).await;
    let marks = first_sync(&directory, sync).await;
    let pushed = Instant::now();
    s.settle_within(&fresh, Duration::from_secs(7200)).await;
    let caught_up = pushed.elapsed().as_secs_f64();
    let (_, view) = s.tenant(&fresh).await;
    assert_eq!(view["seats"]["used"], sync, "every pushed User holds a seat: {view}");
    if marks.len() >= 2 {
        let first = 1000.0 / marks[0].as_secs_f64();
        let last = 1000.0 / (marks[marks.len() - 1] - marks[marks.len() - 2]).as_secs_f64();
        let all = f64::from(sync) / marks[marks.len() - 1].as_secs_f64();
        println!("\nfirst directory sync of {sync} Users into an empty tenant (POST /scim/v2/Users, 16 connections): {first:.0} creations a second over the first thousand, {last:.0} over the last, {all:.0} over all; provision caught up (a barrier reached) {caught_up:.0} s after the last push");
    }
    let described: Vec<String> = peak_memory().iter().map(|(f, kb)| format!("{f} {}", mib(*kb))).collect();
    println!("\nlargest memory of a function process (VmHWM): {}", described.join(", "));
}
