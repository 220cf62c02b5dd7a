//! Licensing model versions on DynamoDB Local with the real SDK client: the
//! registry's conditions (one winner, one order, a version's rules for
//! ever), tenants stored before versions were kept (the first registered
//! version, and their place in the index once backfilled), a tenant's
//! outcome settled once under racing settlements, and a rollout crashed
//! inside a walk that resumes and changes each member once.
//!
//! Each test keeps a registry of its own (`Dynamo::with_registry`): the
//! stack's registry, and the tenants of other tests, are not touched.

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use entitle::adapters::dynamodb::Dynamo;
use entitle::app::memory::Crashing;
use entitle::app::ports::{ModelRegistry, Models, Tenants, WorkQueue};
use entitle::app::versions::{self, PumpLimits};
use entitle::app::{licenses, members, reconcile};
use entitle::core::audit::{AuditAction, AuditRecord, Cause, CauseKind};
use entitle::core::ids::{EventId, LicenseId, ModelVersion, RunId, TenantId, UserId};
use entitle::core::license::{LicenseChange, LicenseStatus, LicenseUpdate, Source};
use entitle::core::model::{LicensingModel, DEFAULT_MODEL_TOML};
use entitle::core::versions::{Outcome, OutcomeState, Registered, Registration, RolloutRequest, RunState, Selection, When, Work};
use entitle::core::views::NewMember;
use entitle_tests::{unique, Stack};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn named(version: &str, existing: &str) -> (LicensingModel, String) {
    let text = DEFAULT_MODEL_TOML.replacen("version = \"2026-11-01\"", &format!("version = \"{version}\""), 1).replacen("existing = \"migrate\"", &format!("existing = \"{existing}\""), 1);
    (LicensingModel::from_toml(&text, version).unwrap(), text)
}

fn changed(version: &str, existing: &str) -> (LicensingModel, String) {
    let (_, text) = named(version, existing);
    let text = text.replacen("projects = 50\napi_access = true\nsso = false", "projects = 75\napi_access = false\nsso = true", 1);
    (LicensingModel::from_toml(&text, version).unwrap(), text)
}

/// The stack's tables with a registry of this test's own, its first
/// version the shipped rules under a unique name.
async fn store(s: &Stack) -> (Dynamo, ModelVersion) {
    let store = s.store().with_registry(&format!("{}:", unique("reg")));
    let first = unique("v1");
    let (m, text) = named(&first, "migrate");
    assert!(matches!(versions::register(&store, &m, &text, Utc::now()).await.unwrap(), Registration::New { seq: 1 }));
    (store, ModelVersion::parse(first).unwrap())
}

/// The work queue, kept in the test (provision's part is called directly).
#[derive(Default, Clone)]
struct Sent(Arc<Mutex<Vec<Work>>>);
impl WorkQueue for Sent {
    async fn send_work(&self, work: &Work) -> Result<(), entitle::app::PortError> {
        self.0.lock().unwrap().push(work.clone());
        Ok(())
    }
}

async fn team(store: &Dynamo, prefix: &str, members_count: usize) -> TenantId {
    let t = TenantId::parse(unique(prefix)).unwrap();
    let change = LicenseChange {
        event_id: EventId::parse(format!("crm-{t}-1")).unwrap(),
        tenant_id: t.clone(),
        license_id: LicenseId::parse("crm-main").unwrap(),
        source: Source::Crm,
        source_version: 1,
        update: LicenseUpdate { tier: "team".into(), seats: members_count as u32 + 1, addons: BTreeSet::new(), status: LicenseStatus::Active, starts_at: None, expires_at: None },
    };
    licenses::record_change(store, &change, "h", Utc::now()).await.unwrap();
    reconcile::reconcile(store, &t, &Cause::new(CauseKind::Reconcile, "seed"), Utc::now()).await.unwrap();
    for i in 0..members_count {
        let new = NewMember { user_id: UserId::parse(format!("m{i:03}")).unwrap(), email: format!("m{i}@{t}.test"), groups: BTreeSet::new(), attributes: BTreeMap::new() };
        members::create(store, &t, &new, "seed", Utc::now()).await.unwrap();
    }
    reconcile::reconcile(store, &t, &Cause::new(CauseKind::Reconcile, "seed"), Utc::now()).await.unwrap();
    t
}

#[tokio::test]
async fn the_registry_gives_one_winner_one_order_and_refuses_other_rules_under_a_version() {
    let s = Stack::connect().await;
    let (store, first) = store(&s).await;
    let (m, text) = named(first.as_str(), "migrate");
    assert_eq!(store.register(&Registered::of(&m, &text, Utc::now())).await.unwrap(), Registration::Known);
    let (other, other_text) = changed(first.as_str(), "migrate");
    assert_eq!(store.register(&Registered::of(&other, &other_text, Utc::now())).await.unwrap(), Registration::Conflict { registered: m.fingerprint() });
    // Eight deploys of four versions at once: each version once, in one order, no gap.
    let names: Vec<String> = (0..4).map(|i| unique(&format!("v{i}"))).collect();
    let mut tasks = Vec::new();
    for round in 0..2 {
        for n in &names {
            let (store, n) = (store.clone(), n.clone());
            tasks.push(tokio::spawn(async move {
                let (m, text) = changed(&n, "grandfather");
                let _ = round;
                store.register(&Registered::of(&m, &text, Utc::now())).await.unwrap()
            }));
        }
    }
    let mut new = 0;
    for t in tasks {
        match t.await.unwrap() {
            Registration::New { .. } => new += 1,
            Registration::Known => {}
            Registration::Conflict { registered } => panic!("the same rules conflict: {registered}"),
        }
    }
    assert_eq!(new, 4);
    let registered = store.registered().await.unwrap();
    assert_eq!(registered.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(registered[0].version, first);
    // The latest is the most recently registered; its rules are read from the registry.
    let latest = store.latest().await.unwrap();
    assert_eq!(latest.version, registered[4].version);
    assert_eq!(latest.tier("team").unwrap().entitlements["projects"], entitle::core::model::Entitlement::Limit(75));
    // A version's rules are the registered ones, even when the deployed model says otherwise.
    assert_eq!(store.rules(&first).await.unwrap().unwrap().fingerprint(), m.fingerprint());
    assert!(store.rules(&ModelVersion::parse(unique("nope")).unwrap()).await.unwrap().is_none());
}

#[tokio::test]
async fn tenants_stored_before_versions_follow_the_first_and_get_their_place_in_the_index() {
    let s = Stack::connect().await;
    let (store, first) = store(&s).await;
    let t = team(&store, "legacy", 2).await;
    // As stored before this change: no version on META or the members, no place in the index.
    for sk in ["META", "MEM#m000", "MEM#m001"] {
        s.ddb
            .update_item()
            .table_name(&s.tables.state)
            .key("pk", AttributeValue::S(format!("T#{t}")))
            .key("sk", AttributeValue::S(sk.into()))
            .update_expression("REMOVE model_version, model_list")
            .send()
            .await
            .unwrap();
    }
    // A process that starts now reads them as the first version's.
    let fresh = s.store().with_registry(store_prefix(&store));
    let meta = fresh.meta(&t).await.unwrap().unwrap();
    assert_eq!(meta.model_version, first);
    assert!(fresh.tenant(&t).await.unwrap().unwrap().members.iter().all(|m| m.model_version == first));
    assert!(!listed(&fresh, &first, &t).await, "not yet in the index");
    // The backfill (the model tick's, a page per tick) gives them their place, once.
    fresh.set_backfill_cursor(Some(None)).await.unwrap();
    for _ in 0..200 {
        versions::backfill(&fresh, 5000).await.unwrap();
        if fresh.backfill_cursor().await.unwrap().is_none() {
            break;
        }
    }
    assert!(fresh.backfill_cursor().await.unwrap().is_none(), "the backfill finishes");
    assert!(listed(&fresh, &first, &t).await);
    let item = s.ddb.get_item().table_name(&s.tables.state).key("pk", AttributeValue::S(format!("T#{t}"))).key("sk", AttributeValue::S("META".into())).send().await.unwrap().item.unwrap();
    assert_eq!((item["model_version"].as_s().unwrap(), item["tier"].as_s().unwrap().as_str()), (&first.to_string(), "team"));
    assert!(fresh.count_following(&first).await.unwrap() >= 1);
}

fn store_prefix(store: &Dynamo) -> &str {
    store.registry_prefix()
}

async fn listed(store: &Dynamo, version: &ModelVersion, t: &TenantId) -> bool {
    let mut after = None;
    loop {
        let page = store.tenants_following(version, after.as_deref(), 500).await.unwrap();
        if page.tenants.iter().any(|(x, tier)| x == t && tier.as_deref() == Some("team")) {
            return true;
        }
        match page.next {
            Some(n) => after = Some(n),
            None => return false,
        }
    }
}

#[tokio::test]
async fn a_tenants_outcome_is_settled_once_under_racing_settlements() {
    let s = Stack::connect().await;
    let (store, first) = store(&s).await;
    let spec = entitle::core::versions::RunSpec {
        id: RunId::parse(unique("r")).unwrap(),
        kind: entitle::core::versions::RunKind::Rollout { to: first.clone(), at: When::Now },
        tenants: Selection::All,
        exclude: BTreeSet::new(),
        created_at: Utc::now(),
        by: "test".into(),
    };
    assert!(store.create_run(&RunState::new(spec.clone(), 1)).await.unwrap());
    assert!(!store.create_run(&RunState::new(spec.clone(), 1)).await.unwrap(), "one run per id");
    let t = TenantId::parse("racing").unwrap();
    let outcome = |state, n| Outcome { tenant_id: t.clone(), state, from: None, reason: None, waits_until: None, members_changed: n, preview: None, at: Utc::now() };
    // Waiting, then settled by four at once: one wins.
    assert_eq!(store.settle(&spec.id, &[outcome(OutcomeState::Waiting, 0)]).await.unwrap(), 1);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (store, id, o) = (store.clone(), spec.id.clone(), outcome(OutcomeState::Done, 7));
        tasks.push(tokio::spawn(async move { store.settle(&id, &[o]).await.unwrap() }));
    }
    let mut won = 0;
    for task in tasks {
        won += task.await.unwrap();
    }
    assert_eq!(won, 1);
    let run = store.run(&spec.id).await.unwrap().unwrap();
    assert_eq!((run.counts.done, run.counts.waiting, run.counts.members_changed), (1, 0, 7), "{run:?}");
    // A stale revision does not overwrite the run's progress.
    let mut stale = run.clone();
    stale.rev += 5;
    assert!(!store.advance_run(&stale).await.unwrap());
    assert!(store.advance_run(&run).await.unwrap());
    // Many at once (two transactions), some settled before, one twice in
    // the batch, one waiting replaced: each counted once.
    let many: Vec<Outcome> =
        (0..150).map(|i| Outcome { tenant_id: TenantId::parse(format!("many-{i:03}")).unwrap(), ..outcome(if i % 2 == 0 { OutcomeState::Done } else { OutcomeState::Skipped }, 1) }).collect();
    assert_eq!(store.settle(&spec.id, &many[100..103]).await.unwrap(), 3);
    assert_eq!(store.settle(&spec.id, &[Outcome { tenant_id: many[120].tenant_id.clone(), ..outcome(OutcomeState::Waiting, 0) }]).await.unwrap(), 1);
    let mut batch = many.clone();
    batch.push(many[5].clone());
    assert_eq!(store.settle(&spec.id, &batch).await.unwrap(), 147, "the three settled before are not settled again");
    let run = store.run(&spec.id).await.unwrap().unwrap();
    assert_eq!((run.counts.done, run.counts.skipped, run.counts.waiting, run.counts.members_changed), (1 + 75, 75, 0, 7 + 150), "{run:?}");
    let held = store.outcomes_of(&spec.id, &[many[120].tenant_id.clone(), many[149].tenant_id.clone()]).await.unwrap();
    assert!(held.iter().all(|o| o.as_ref().is_some_and(|o| o.members_changed == 1)), "{held:?}");
}

#[tokio::test]
async fn a_rollout_crashed_inside_a_walk_resumes_on_dynamodb_and_changes_each_member_once() {
    let s = Stack::connect().await;
    let (store, _) = store(&s).await;
    let t = team(&store, "crash", 70).await;
    let v2 = unique("v2");
    let (m, text) = changed(&v2, "grandfather");
    versions::register(&store, &m, &text, Utc::now()).await.unwrap();
    let id = RunId::parse(unique("r")).unwrap();
    versions::start_rollout(&store, RolloutRequest { to: m.version.clone(), tenants: Selection::List(vec![t.clone()]), exclude: BTreeSet::new(), at: When::Now }, "test", id.clone(), Utc::now())
        .await
        .unwrap();
    let sent = Sent::default();
    let limits = PumpLimits { batch: 10, in_flight: 10, stop_at: Instant::now() + std::time::Duration::from_secs(30) };
    versions::pump(&store, &sent, Utc::now(), limits).await.unwrap();
    let work = sent.0.lock().unwrap().remove(0);
    // Provision dies at its third commit: the move and one chunk of the walk are in.
    let report = versions::work(&Crashing::after(&store, 2), &work, Utc::now(), Instant::now() + std::time::Duration::from_secs(60), 1).await.unwrap();
    let rest = report.rest.expect("the tenant comes back");
    let meta = store.meta(&t).await.unwrap().unwrap();
    assert_eq!(meta.model_version, m.version);
    assert!(meta.walk.as_ref().is_some_and(|w| !w.done && w.changed > 0), "{:?}", meta.walk);
    let half = store.tenant(&t).await.unwrap().unwrap().members.iter().filter(|x| x.model_version == m.version).count();
    assert!(half > 0 && half < 70, "some members walked, not all: {half}");
    // SQS delivers the message again.
    versions::work(&store, &rest, Utc::now(), Instant::now() + std::time::Duration::from_secs(60), 4).await.unwrap();
    versions::pump(&store, &sent, Utc::now(), limits).await.unwrap();
    let run = store.run(&id).await.unwrap().unwrap();
    assert_eq!((run.status, run.counts.done, run.counts.members_changed), (entitle::core::versions::RunStatus::Done, 1, 70), "{run:?}");
    let mut per_member: BTreeMap<String, usize> = BTreeMap::new();
    let (records, _) = store.audit_page(&t, 0, 10_000).await.unwrap();
    for r in records.iter().map(|r| serde_json::from_str::<AuditRecord>(&r.json).unwrap()) {
        if r.event.cause == versions::rollout_cause(&id) && r.event.action == AuditAction::MemberAccessChanged {
            *per_member.entry(r.event.subject).or_default() += 1;
        }
    }
    assert_eq!(per_member.len(), 70);
    assert!(per_member.values().all(|n| *n == 1), "{per_member:?}");
    assert!(store.tenant(&t).await.unwrap().unwrap().members.iter().all(|x| x.model_version == m.version && x.access.entitlements.get("sso") == Some(&entitle::core::model::Entitlement::Flag(true))));
    assert!(entitle::app::audit::verify(&store, &t).await.unwrap().unwrap().ok);
}
