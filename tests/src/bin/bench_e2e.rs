//! `make bench-e2e`: Entitle end to end on its own local stack (release
//! builds), measured from outside as a user and an operator see it:
//!
//! - license event -> access visible: a CRM record's seat change posted to
//!   ingest until the access API shows it (p50/p99 over 40 changes);
//! - account creations (`POST /tenants/{t}/members`) from 16 callers, 300
//!   into one tenant and 300 spread over ten: creations/s, p50, p99, and the
//!   one-tenant figures as ratios of the ten-tenant ones;
//! - DynamoDB requests per change (a license change, an account creation, a
//!   reconcile of 100 member changes), counted on the wire by a counter in
//!   front of DynamoDB Local that every function's requests go through;
//! - (each function's Init, with its memory, is `make bench-init`:
//!   tests/src/bin/init_bench.rs.)
//!
//! - an identity provider's first sync: 2,000 SCIM Users pushed by 8
//!   connections at the same time as 2,000 account creations by 8 callers
//!   (their rates as a ratio), then 20 Groups filled in PATCH batches;
//! - signed member tokens: DynamoDB requests per token read while nothing
//!   changed, KMS signatures per member whose access changed (counted by a
//!   second counter, in front of moto's KMS), read latency cached and signed.
//!
//! usage: bench-e2e proxy PORT UPSTREAM                  a request counter (started before the stack)
//!        bench-e2e run COUNTER_URL [KMS_COUNTER_URL]    the measurements (ENTITLE_STACK_ENV points at the stack;
//!                                                       BENCH_ONLY=tokens,directory,...: those sections alone)

use entitle_tests::{member_body, unique, Stack};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

#[tokio::main]
async fn main() {
    entitle::adapters::scim_client::install_tls_provider();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("proxy") => proxy(args[2].parse().expect("PORT"), args[3].clone()).await,
        Some("run") => run(&args[2], args.get(3).map(String::as_str)).await,
        _ => {
            eprintln!("usage: bench-e2e proxy PORT UPSTREAM | bench-e2e run COUNTER_URL");
            std::process::exit(2);
        }
    }
}

// The request counter.

type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

/// Forwards every request to `upstream` and counts it by its operation
/// (`X-Amz-Target`); `GET /__counts` answers the counts so far.
async fn proxy(port: u16, upstream: String) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("the counter's port is free");
    let counts: Counts = Arc::default();
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { continue };
        // One write per answer, sent at once: an answer written in two parts
        // waits for the client's delayed ACK (40 ms a request).
        stream.set_nodelay(true).ok();
        let (counts, http, upstream) = (counts.clone(), http.clone(), upstream.clone());
        tokio::spawn(async move {
            while let Ok(Some(entitle_tests::WireRequest { method, path, headers, body })) = entitle_tests::read_request(&mut stream).await {
                let (status, out_headers, out_body) = if path == "/__counts" {
                    let body = serde_json::to_vec(&*counts.lock().unwrap()).unwrap();
                    (200, vec![("content-type".to_string(), "application/json".to_string())], body)
                } else {
                    if let Some((_, target)) = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target")) {
                        *counts.lock().unwrap().entry(target.clone()).or_default() += 1;
                    }
                    let mut req = http.request(method.parse().unwrap_or(reqwest::Method::POST), format!("{upstream}{path}")).body(body);
                    for (k, v) in &headers {
                        if !["host", "content-length", "connection"].iter().any(|h| k.eq_ignore_ascii_case(h)) {
                            req = req.header(k, v);
                        }
                    }
                    match req.send().await {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let headers: Vec<(String, String)> = resp
                                .headers()
                                .iter()
                                .filter(|(k, _)| !["content-length", "transfer-encoding", "connection"].contains(&k.as_str()))
                                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
                                .collect();
                            (status, headers, resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default())
                        }
                        Err(_) => (502, vec![], Vec::new()),
                    }
                };
                let mut answer = format!("HTTP/1.1 {status} X\r\n");
                for (k, v) in out_headers {
                    answer.push_str(&format!("{k}: {v}\r\n"));
                }
                answer.push_str(&format!("content-length: {}\r\n\r\n", out_body.len()));
                let mut whole = answer.into_bytes();
                whole.extend_from_slice(&out_body);
                if stream.write_all(&whole).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// DynamoDB requests so far (stream reads, the Pipe's, left out).
async fn dynamodb_requests(counter: &str) -> BTreeMap<String, u64> {
    let all: BTreeMap<String, u64> = reqwest::get(format!("{counter}/__counts")).await.unwrap().json().await.unwrap();
    all.into_iter().filter(|(k, _)| k.starts_with("DynamoDB_")).map(|(k, v)| (k.trim_start_matches("DynamoDB_20120810.").to_string(), v)).collect()
}

/// The requests counted between two readings of the counter, by operation.
fn since(before: &BTreeMap<String, u64>, now: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    now.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect()
}

/// Waits until no function has made a request for three seconds (the
/// queue drained: what was measured before is done).
async fn idle(counter: &str) {
    let mut last = dynamodb_requests(counter).await;
    let mut since = Instant::now();
    while since.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = dynamodb_requests(counter).await;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
}

/// The requests `act` causes, once the functions have gone quiet (at
/// least `writes` transactions, then no request for a second and a half).
async fn requests_of<F: std::future::Future<Output = ()>>(counter: &str, writes: u64, act: F) -> BTreeMap<String, u64> {
    idle(counter).await;
    let before = dynamodb_requests(counter).await;
    act.await;
    let delta = |now: &BTreeMap<String, u64>| since(&before, now);
    let start = Instant::now();
    let mut last = delta(&dynamodb_requests(counter).await);
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = delta(&dynamodb_requests(counter).await);
        if now != last {
            last = now;
            quiet_since = Instant::now();
        } else if last.get("TransactWriteItems").copied().unwrap_or(0) >= writes && quiet_since.elapsed() > Duration::from_millis(1500) {
            return last;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the change did not settle: {last:?}");
    }
}

/// KMS signatures so far (every function's, through the KMS counter).
async fn kms_signs(counter: &str) -> u64 {
    let all: BTreeMap<String, u64> = reqwest::get(format!("{counter}/__counts")).await.unwrap().json().await.unwrap();
    all.get("TrentService.Sign").copied().unwrap_or(0)
}

/// Reads every member's token `rounds` times: (DynamoDB requests by
/// operation, KMS signatures, read latencies).
async fn token_reads(s: &Stack, counter: &str, kms: &str, t: &str, users: &[String], rounds: usize) -> (BTreeMap<String, u64>, u64, Vec<Duration>) {
    idle(counter).await;
    let (before, signs) = (dynamodb_requests(counter).await, kms_signs(kms).await);
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        for u in users {
            let at = Instant::now();
            let (code, body) = s.get(&format!("/tenants/{t}/members/{u}/token")).await;
            latencies.push(at.elapsed());
            assert_eq!(code, 200, "{body}");
        }
    }
    let after = dynamodb_requests(counter).await;
    let delta = since(&before, &after);
    latencies.sort();
    (delta, kms_signs(kms).await - signs, latencies)
}

/// Signed member tokens: requests per read while nothing changed, KMS
/// signatures per member whose access changed, latencies.
async fn tokens(s: &Stack, counter: &str, kms: &str) {
    let t = licensed(s, "bench-tokens", 1, 100).await.remove(0);
    let users: Vec<String> = (0..100).map(|i| format!("u{i:03}")).collect();
    for u in &users {
        assert_eq!(s.create_member(&t, &member_body(u, &[])).await.0, 201);
    }
    s.settle(&t).await;
    let (first, first_signs, first_lat) = token_reads(s, counter, kms, &t, &users, 1).await;
    row(&[
        "member tokens, first read of each of 100 members (signed, cached on the member)".into(),
        format!(
            "{first_signs} KMS signatures; {:.2} DynamoDB requests a read ({first:?}); p50 {}, p99 {}",
            first.values().sum::<u64>() as f64 / 100.0,
            ms(percentile(&first_lat, 0.5)),
            ms(percentile(&first_lat, 0.99))
        ),
    ]);
    let (again, again_signs, again_lat) = token_reads(s, counter, kms, &t, &users, 5).await;
    row(&[
        "member tokens, 500 reads while nothing changed".into(),
        format!(
            "{again_signs} KMS signatures; {:.2} DynamoDB requests a read ({again:?}); p50 {}, p99 {}",
            again.values().sum::<u64>() as f64 / 500.0,
            ms(percentile(&again_lat, 0.5)),
            ms(percentile(&again_lat, 0.99))
        ),
    ]);
    // A seat cut from 100 to 60: 40 members lose access. Every member's
    // token read three times after.
    crm(s, &t, 60, 2).await;
    s.tenant_where(&t, "the cut", |v| v["seats"]["used"] == 60).await;
    s.settle(&t).await;
    let (_, cut_signs, _) = token_reads(s, counter, kms, &t, &users, 3).await;
    let mut lost = 0;
    for u in &users {
        let (_, m) = s.member(&t, u).await;
        lost += usize::from(m["status"] != "active");
    }
    row(&[
        format!("member tokens after a seat cut of 100 to 60 ({lost} members lost access), 300 reads"),
        format!("{cut_signs} KMS signatures: {:.2} per member whose access changed", cut_signs as f64 / lost.max(1) as f64),
    ]);
}

// The measurements.

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

async fn crm(s: &Stack, t: &str, seats: u32, version: i64) {
    let (code, answer) = s
        .crm(&json!({"event_id": format!("crm-{t}-{version}"), "tenant_id": t, "license_id": "main", "tier": "team", "seats": seats,
            "add_ons": [], "starts_at": null, "expires_at": null, "status": "active", "source_version": version}))
        .await;
    assert_eq!(code, 200, "{answer}");
}

/// Creations from `callers` callers, round robin over `tenants`: (per second, p50, p99).
async fn creations(s: &Arc<Stack>, tenants: &[String], total: usize, callers: usize) -> (f64, Duration, Duration) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..callers)
        .map(|_| {
            let (s, next, latencies, tenants) = (s.clone(), next.clone(), latencies.clone(), tenants.to_vec());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= total {
                        return;
                    }
                    let t = &tenants[i % tenants.len()];
                    let at = Instant::now();
                    let (code, body) = s.create_member(t, &member_body(&format!("u{i:05}"), &[])).await;
                    assert_eq!(code, 201, "{body}");
                    latencies.lock().unwrap().push(at.elapsed());
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    (total as f64 / elapsed.as_secs_f64(), percentile(&l, 0.5), percentile(&l, 0.99))
}

/// An identity provider's first sync, its Users: `users` Users pushed
/// through the connection `d` from `connections` concurrent connections:
/// (the Users' ids, Users/s, p50, p99).
async fn push_users(d: &entitle_tests::directory::Directory, users: usize, connections: usize) -> (Vec<String>, f64, Duration, Duration) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ids = Arc::new(Mutex::new(vec![String::new(); users]));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (d, next, ids, latencies) = (d.clone(), next.clone(), ids.clone(), latencies.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= users {
                        return;
                    }
                    let login = format!("user{i:05}@idp.test");
                    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": login, "externalId": format!("idp-{i:05}"),
                        "name": {"givenName": "Bench", "familyName": format!("User {i}")}, "emails": [{"primary": true, "value": login, "type": "work"}], "active": true});
                    let at = Instant::now();
                    let u = d.create_user(&body).await;
                    latencies.lock().unwrap().push(at.elapsed());
                    ids.lock().unwrap()[i] = u["id"].as_str().unwrap().to_string();
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let rate = users as f64 / started.elapsed().as_secs_f64();
    let ids = ids.lock().unwrap().clone();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    (ids, rate, percentile(&l, 0.5), percentile(&l, 0.99))
}

/// The rest of the first sync: `groups` Groups, each user in one, their
/// members added in batches of 50 by `connections` connections. Checks
/// that the seat counters are exact and every member was audited once.
/// (seconds, seconds until provision had chained every audit record after
/// the last change.)
async fn sync_groups(s: &Arc<Stack>, t: &str, d: &entitle_tests::directory::Directory, ids: &[String], groups: usize, connections: usize) -> (f64, f64) {
    let users = ids.len();
    let started = Instant::now();
    let mut gids = Vec::new();
    for g in 0..groups {
        let a = d.request(reqwest::Method::POST, "/Groups", Some(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": format!("team-{g:02}")}))).await;
        assert_eq!(a.status, 201, "{}", a.body);
        gids.push(a.body["id"].as_str().unwrap().to_string());
    }
    let batches: Vec<(String, Vec<String>)> = ids.chunks(50).enumerate().map(|(i, chunk)| (gids[i % groups].clone(), chunk.to_vec())).collect();
    let batches = Arc::new(Mutex::new(batches));
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (d, batches) = (d.clone(), batches.clone());
            tokio::spawn(async move {
                loop {
                    let Some((gid, members)) = batches.lock().unwrap().pop() else { return };
                    let value: Vec<serde_json::Value> = members.iter().map(|m| json!({"value": m})).collect();
                    let a = d
                        .request(
                            reqwest::Method::PATCH,
                            &format!("/Groups/{gid}?excludedAttributes=members"),
                            Some(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Add", "path": "members", "value": value}]})),
                        )
                        .await;
                    assert_eq!(a.status, 200, "{}", a.body);
                }
            })
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    let took = started.elapsed().as_secs_f64();
    // Exact counters (committed with each push).
    let tenant = s.tenant(t).await.1;
    assert_eq!(tenant["seats"]["used"].as_u64(), Some(users as u64), "{tenant}");
    // Provision chains the pushes' audit records behind them (one queued
    // reconcile a push, ten coalesced a batch): wait for it, however long
    // moto's FIFO queue takes to hand over a backlog of thousands.
    let caught_up = Instant::now();
    loop {
        let (_, page) = s.get(&format!("/tenants/{t}/audit?after=0&limit=1")).await;
        if page["pending"].as_u64() == Some(0) {
            break;
        }
        assert!(caught_up.elapsed() < Duration::from_secs(1800), "provision did not chain the sync's records in 30 minutes: {page}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let lag = caught_up.elapsed().as_secs_f64();
    let created = s.audit(t).await.iter().filter(|r| r["action"] == "member_created").count();
    assert_eq!(created, users, "each member audited once");
    (took, lag)
}

/// Licensed tenants, provisioned.
async fn licensed(s: &Stack, prefix: &str, n: usize, seats: u32) -> Vec<String> {
    let tenants: Vec<String> = (0..n).map(|_| unique(prefix)).collect();
    for t in &tenants {
        crm(s, t, seats, 1).await;
    }
    for t in &tenants {
        s.tenant_where(t, "provisioned", |v| v["seats"]["total"] == seats).await;
    }
    tenants
}

fn row(cells: &[String]) {
    println!("| {} |", cells.join(" | "));
}

async fn run(counter: &str, kms: Option<&str>) {
    let s = Arc::new(Stack::connect().await);
    println!("\nEntitle end to end, release builds on the local stack (DynamoDB Local, moto, cargo lambda watch), {}", chrono::Utc::now().format("%Y-%m-%d"));
    println!("machine: {} cores\n", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    // BENCH_ONLY=a,b: those sections alone (latency, creations, directory, requests, tokens).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let want = |section: &str| only.is_empty() || only.split(',').any(|o| o.trim() == section);
    println!("| measure | figure |");
    println!("| --- | --- |");

    // License event -> access visible.
    if want("latency") {
        let t = licensed(&s, "bench-latency", 1, 1).await.remove(0);
        idle(counter).await;
        let mut latencies = Vec::new();
        for i in 0..40u32 {
            let seats = 2 + i;
            let at = Instant::now();
            crm(&s, &t, seats, i64::from(i) + 2).await;
            s.tenant_where(&t, "the new seats", |v| v["seats"]["total"] == seats).await;
            latencies.push(at.elapsed());
        }
        latencies.sort();
        row(&["license event -> access visible (CRM record to the access API), 40 changes".into(), format!("p50 {}, p99 {}", ms(percentile(&latencies, 0.5)), ms(percentile(&latencies, 0.99)))]);
    }

    // Account creations: ten tenants, then one, each from a quiet stack.
    if want("creations") {
        let one = licensed(&s, "bench-one", 1, 10_000).await;
        let ten = licensed(&s, "bench-ten", 10, 10_000).await;
        idle(counter).await;
        let (ten_rate, ten_p50, ten_p99) = creations(&s, &ten, 300, 16).await;
        idle(counter).await;
        let (one_rate, one_p50, one_p99) = creations(&s, &one, 300, 16).await;
        row(&["account creations, 16 callers, 300 spread over ten tenants".into(), format!("{ten_rate:.1}/s, p50 {}, p99 {}", ms(ten_p50), ms(ten_p99))]);
        row(&["account creations, 16 callers, 300 into one tenant".into(), format!("{one_rate:.1}/s, p50 {}, p99 {}", ms(one_p50), ms(one_p99))]);
        row(&["one tenant / ten tenants".into(), format!("{:.2}x the creations/s, {:.2}x the p99", one_rate / ten_rate, one_p99.as_secs_f64() / ten_p99.as_secs_f64())]);
    }

    // An identity provider's first sync into one tenant, its Users pushed
    // at the same time as as many accounts created through `POST
    // .../members` by as many callers into another: the two share the
    // moment, the machine and the reconcile queue (whose local stand-in,
    // moto, slows as it fills), so their ratio does not depend on what
    // else the machine was doing before or after. Then the Groups.
    if want("directory") {
        let (users, connections) = (2000, 8);
        let peer = licensed(&s, "bench-members", 1, u32::try_from(users + 100).unwrap()).await;
        let t = licensed(&s, "bench-directory", 1, u32::try_from(users + 100).unwrap()).await.remove(0);
        let d = s.connect_directory(&t, "bench IdP", None).await;
        idle(counter).await;
        let ((members_rate, p50, p99), (ids, users_rate, push_p50, push_p99)) = tokio::join!(creations(&s, &peer, users, connections), push_users(&d, users, connections));
        let (groups_took, lag) = sync_groups(&s, &t, &d, &ids, 20, connections).await;
        row(&[format!("account creations (`POST .../members`), {connections} callers, {users} into one tenant, beside the pushes"), format!("{members_rate:.1}/s, p50 {}, p99 {}", ms(p50), ms(p99))]);
        row(&[
            format!("an IdP's first sync into one tenant: {users} Users (POST /Users) by {connections} connections, beside the creations"),
            format!("{users_rate:.1}/s, p50 {}, p99 {}", ms(push_p50), ms(push_p99)),
        ]);
        row(&[
            "then 20 Groups, their members in PATCH batches of 50".into(),
            format!("{groups_took:.0} s; seat counters exact, each member audited once (all chained {lag:.0} s after the last change)"),
        ]);
        row(&["directory Users/s / POST .../members creations/s (same count and callers, at the same time)".into(), format!("{:.2}x", users_rate / members_rate)]);
    }

    // DynamoDB requests per change, counted on the wire.
    if want("requests") {
        let fresh = unique("bench-req");
        let license = requests_of(counter, 2, crm(&s, &fresh, 100, 1)).await;
        row(&["DynamoDB requests: a license change (ingest, then its reconcile)".into(), format!("{} ({license:?})", license.values().sum::<u64>())]);
        s.tenant_where(&fresh, "provisioned", |v| v["seats"]["total"] == 100).await;
        let creation = requests_of(counter, 2, async {
            s.create_member(&fresh, &member_body("first", &[])).await;
        })
        .await;
        row(&["DynamoDB requests: an account creation (ingest, then chaining its audit record)".into(), format!("{} ({creation:?})", creation.values().sum::<u64>())]);
        let d = s.connect_directory(&fresh, "bench IdP", None).await;
        let push = requests_of(counter, 2, async {
            d.create_user(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "pushed@idp.test", "externalId": "idp-pushed", "active": true})).await;
        })
        .await;
        row(&["DynamoDB requests: a User pushed (directory POST /Users, then chaining its audit record)".into(), format!("{} ({push:?})", push.values().sum::<u64>())]);
        for i in 0..98 {
            s.create_member(&fresh, &member_body(&format!("m{i:03}"), &[])).await;
        }
        s.tenant_where(&fresh, "100 seated", |v| v["seats"]["used"] == 100).await;
        s.settle(&fresh).await;
        let cut = requests_of(counter, 5, crm(&s, &fresh, 0, 2)).await;
        let total: u64 = cut.values().sum();
        row(&["DynamoDB requests: a seat cut of 100 (the license change and a reconcile of 100 member changes)".into(), format!("{total} ({cut:?}), {:.2} per member change", total as f64 / 100.0)]);
    }

    if want("tokens") {
        tokens(&s, counter, kms.expect("the KMS counter's URL (dev/bench-e2e.sh starts it)")).await;
    }

    let _ = Value::Null;
}
