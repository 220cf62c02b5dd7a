//! The expiry sweep at scale: 100,000 licenses of which 1 % are due. Seeds
//! DynamoDB Local's state table directly (through the real SDK), runs the
//! sweep, and prints the items it read per due item. `make bench-sweep`
//! starts a stack for it; docs/benchmarks.md has the figures.
//!
//! usage: sweep-scale [LICENSES] [DUE_PERCENT]   (ENTITLE_STACK_ENV points at the stack)

use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use chrono::{DateTime, Duration, Utc};
use entitle::adapters::dynamodb::due::due_attributes;
use entitle::app::sweep::{sweep, SweepLimits};
use entitle::core::expiry::next_due;
use entitle::core::ids::{EventId, LicenseId};
use entitle::core::license::{License, LicenseStatus, Source};
use entitle_tests::Stack;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

const TENANTS: usize = 10_000;

fn license(i: usize, expires: DateTime<Utc>) -> License {
    License {
        license_id: LicenseId::parse(format!("lic-{i}")).unwrap(),
        source: Source::Crm,
        tier: "team".into(),
        seats: 5,
        addons: Default::default(),
        status: LicenseStatus::Active,
        starts_at: None,
        expires_at: Some(expires),
        source_version: 1,
        last_event_id: EventId::parse(format!("seed-{i}")).unwrap(),
        timeline: Default::default(),
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let due_percent: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let stack = Arc::new(Stack::connect().await);
    let store = stack.store();
    let model = stack.model();
    let as_of: DateTime<Utc> = "2200-01-01T00:00:00Z".parse().unwrap();
    let run = entitle_tests::unique("scale");
    let due_every = 100 / due_percent.max(1);

    // Due licenses expire within 30 days of `as_of` (their first notice is
    // due); the rest expire years later (nothing due). Every license is in
    // the due index, as in production.
    let started = Instant::now();
    let items: Vec<HashMap<String, AttributeValue>> = (0..total)
        .map(|i| {
            let expires = if i % due_every == 0 { as_of + Duration::days(20) } else { as_of + Duration::days(3650) };
            let l = license(i, expires);
            let pk = format!("T#{run}-{}", i % TENANTS);
            let sk = format!("LIC#crm#lic-{i}");
            let mut item: HashMap<String, AttributeValue> = HashMap::new();
            item.insert("pk".into(), AttributeValue::S(pk.clone()));
            item.insert("sk".into(), AttributeValue::S(sk.clone()));
            item.insert("license".into(), AttributeValue::S(serde_json::to_string(&l).unwrap()));
            item.insert("source_version".into(), AttributeValue::N("1".into()));
            for (k, v) in due_attributes(&pk, &sk, next_due(&model, &l).map(|(at, _)| at)) {
                item.insert(k.into(), v);
            }
            item
        })
        .collect();
    let mut tasks = Vec::new();
    for chunk in items.chunks(items.len().div_ceil(4)) {
        let (stack, chunk) = (stack.clone(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            for batch in chunk.chunks(25) {
                let mut requests: Vec<WriteRequest> = batch.iter().map(|i| WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(i.clone())).build().unwrap()).build()).collect();
                while !requests.is_empty() {
                    let out = stack.ddb.batch_write_item().request_items(&stack.tables.state, requests).send().await.expect("seeding");
                    requests = out.unprocessed_items.and_then(|mut u| u.remove(&stack.tables.state)).unwrap_or_default();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!("seeded {total} licenses ({} due) in {:.1} s", total.div_ceil(due_every), started.elapsed().as_secs_f64());

    // Finding the work: what a sweep reads to know what is due.
    let started = Instant::now();
    let (due_items, index_reads) = store.count_due(as_of).await.expect("count");
    println!(
        "finding what is due: {due_items} due items, {index_reads} index items read ({:.2} per due item) in {:.1} s; a table scan would read {total} ({:.0} per due item)",
        index_reads as f64 / due_items.max(1) as f64,
        started.elapsed().as_secs_f64(),
        total as f64 / due_items.max(1) as f64
    );
    let started = Instant::now();
    let limits = SweepLimits { stop_at: Instant::now() + std::time::Duration::from_secs(3600), max_items: None };
    let report = sweep(&store, as_of, &run, limits).await.expect("sweep");
    let secs = started.elapsed().as_secs_f64();
    let due = report.licenses.max(1) as f64;
    println!("sweep: {} due licenses, {} transitions, complete {}, {:.1} s", report.licenses, report.transitions, report.complete, secs);
    println!("  due-index items read: {} ({:.2} per due item)", report.index_reads, report.index_reads as f64 / due);
    println!("  items read to decide and write (tenant head, license): {} ({:.2} per due item)", report.item_reads, report.item_reads as f64 / due);
    println!("  all item reads: {:.2} per due item; a table scan would read {:.0} per due item", (report.index_reads + report.item_reads) as f64 / due, total as f64 / due);
    let again = sweep(&store, as_of, &format!("{run}-again"), SweepLimits { stop_at: Instant::now() + std::time::Duration::from_secs(600), max_items: None }).await.expect("sweep");
    println!("second sweep at the same instant: {} due, {} index items read", again.licenses, again.index_reads);
}
