//! Licensing model versions against the ports in memory: registration, a
//! deploy's automatic rollout, grandfathering, explicit rollouts, pins,
//! period ends, previews against the rollouts that follow them, crashes,
//! rollbacks, and a tier a tenant's version lacks.

use super::memory::{is_injected_crash, Crashing, Memory};
use super::ports::{ModelRegistry, Models, Tenants, WorkQueue};
use super::versions::{self, PumpLimits};
use super::*;
use crate::core::access::{MemberAccess, MemberStatus};
use crate::core::audit::{AuditAction, AuditRecord, Cause, CauseKind};
use crate::core::ids::{EventId, LicenseId, ModelVersion, RunId, TenantId, UserId};
use crate::core::license::{LicenseChange, LicenseStatus, LicenseUpdate, Source};
use crate::core::model::{LicensingModel, DEFAULT_MODEL_TOML};
use crate::core::rejection::Kind;
use crate::core::versions::{OutcomeState, PinRequest, PreviewOf, Registration, RolloutRequest, RunStatus, Selection, When, Work};
use crate::core::views::NewMember;
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

const V1: &str = "2026-11-01";
const V2: &str = "2026-12-01";

/// The shipped model under another version, with `team` changed as the
/// issue's deploy changes it: gains `sso`, loses `api_access`, projects 50 -> 75.
fn v2_text(version: &str, existing: &str, at: &str) -> String {
    DEFAULT_MODEL_TOML
        .replacen(&format!("version = \"{V1}\""), &format!("version = \"{version}\""), 1)
        .replacen("projects = 50\napi_access = true\nsso = false", "projects = 75\napi_access = false\nsso = true", 1)
        .replacen("existing = \"migrate\"\nat = \"now\"", &format!("existing = \"{existing}\"\nat = \"{at}\""), 1)
}

fn parsed(text: &str) -> LicensingModel {
    LicensingModel::from_toml(text, "test").unwrap()
}

fn v(s: &str) -> ModelVersion {
    ModelVersion::parse(s).unwrap()
}

fn tid(s: &str) -> TenantId {
    TenantId::parse(s).unwrap()
}

/// A store whose deployed (and first registered) version is the shipped model.
async fn registry() -> Memory {
    let store = Memory::new(Arc::new(LicensingModel::default_model()));
    assert_eq!(versions::register(&store, &LicensingModel::default_model(), DEFAULT_MODEL_TOML, Utc::now()).await.unwrap(), Registration::New { seq: 1 });
    store
}

fn crm(t: &TenantId, version: i64, tier: &str, seats: u32, expires: Option<DateTime<Utc>>) -> LicenseChange {
    LicenseChange {
        event_id: EventId::parse(format!("crm-{t}-{version}")).unwrap(),
        tenant_id: t.clone(),
        license_id: LicenseId::parse("crm-main").unwrap(),
        source: Source::Crm,
        source_version: version,
        update: LicenseUpdate { tier: tier.into(), seats, addons: BTreeSet::new(), status: LicenseStatus::Active, starts_at: None, expires_at: expires },
    }
}

/// A tenant on `tier` with `seats` seats and `members` accounts (the first in
/// `admins`, every third in `finance`), reconciled.
async fn tenant(store: &Memory, t: &str, tier: &str, seats: u32, members: usize) -> TenantId {
    let t = tid(t);
    licenses::record_change(store, &crm(&t, 1, tier, seats, None), "h", Utc::now()).await.unwrap();
    settle(store, &t).await;
    for i in 0..members {
        let groups: BTreeSet<String> = match i % 3 {
            0 if i == 0 => ["admins".to_string()].into(),
            1 => ["finance".to_string()].into(),
            _ => BTreeSet::new(),
        };
        let new = NewMember { user_id: UserId::parse(format!("u{i}")).unwrap(), email: format!("u{i}@{t}.test"), groups, attributes: BTreeMap::new() };
        members::create(store, &t, &new, &format!("seed-{i}"), Utc::now()).await.unwrap();
    }
    settle(store, &t).await;
    t
}

async fn settle(store: &impl TenantsAndModels, t: &TenantId) {
    reconcile::reconcile(store, t, &Cause::new(CauseKind::Reconcile, "settle"), Utc::now()).await.unwrap();
}

trait TenantsAndModels: Tenants + super::ports::Models {}
impl<T: Tenants + super::ports::Models> TenantsAndModels for T {}

fn limits() -> PumpLimits {
    PumpLimits { batch: 2, in_flight: 4, stop_at: Instant::now() + std::time::Duration::from_secs(60) }
}

/// The model tick and provision, in memory, until no work is left: pumps,
/// then each work message sent is worked (what it leaves is sent again).
async fn drive(store: &Memory) {
    for _ in 0..200 {
        versions::pump(store, store, Utc::now(), limits()).await.unwrap();
        let sent: Vec<Work> = std::mem::take(&mut *store.work_sent.lock().unwrap());
        if sent.is_empty() {
            return;
        }
        for w in sent {
            let report = versions::work(store, &w, Utc::now(), Instant::now() + std::time::Duration::from_secs(60), 4).await.unwrap();
            if let Some(rest) = report.rest {
                store.send_work(&rest).await.unwrap();
            }
        }
    }
    panic!("the runs did not finish: {:?}", store.runs().await.unwrap());
}

/// Every member's access and version, by user.
async fn members_of(store: &Memory, t: &TenantId) -> BTreeMap<String, (MemberAccess, ModelVersion)> {
    let state = store.tenant(t).await.unwrap().unwrap();
    state.members.into_iter().map(|m| (m.member.user_id.to_string(), (m.access, m.model_version))).collect()
}

async fn records(store: &Memory, t: &TenantId) -> Vec<AuditRecord> {
    audit::integrate(store, t, Utc::now()).await.unwrap();
    let (records, _) = store.audit_page(t, 0, 100_000).await.unwrap();
    records.iter().map(|r| serde_json::from_str::<AuditRecord>(&r.json).unwrap()).collect()
}

fn entitlement(access: &MemberAccess, name: &str) -> Option<serde_json::Value> {
    access.entitlements.get(name).map(|e| serde_json::to_value(e).unwrap())
}

#[tokio::test]
async fn a_version_is_registered_once_and_another_model_under_it_is_refused_naming_both() {
    let store = registry().await;
    let shipped = LicensingModel::default_model();
    assert_eq!(versions::register(&store, &shipped, DEFAULT_MODEL_TOML, Utc::now()).await.unwrap(), Registration::Known);
    // The same rules written otherwise: the same version, known.
    let relaid = DEFAULT_MODEL_TOML.replace("# Roles known to the model; rules may only grant these.\n", "");
    assert_eq!(versions::register(&store, &parsed(&relaid), &relaid, Utc::now()).await.unwrap(), Registration::Known);
    // Other rules under the same version: refused, both fingerprints named.
    let changed = v2_text(V1, "migrate", "now");
    let other = parsed(&changed);
    let e = versions::register(&store, &other, &changed, Utc::now()).await.unwrap_err();
    let Error::Rejected(r) = e else { panic!("{e:?}") };
    assert_eq!((r.kind, r.code), (Kind::Conflict, "version_conflict"));
    assert!(r.message.contains(&shipped.fingerprint()) && r.message.contains(&other.fingerprint()), "{}", r.message);
    // Nothing registered under it: the first version's rules stand.
    assert_eq!(store.registered().await.unwrap().len(), 1);
    assert_eq!(store.rules(&v(V1)).await.unwrap().unwrap().fingerprint(), shipped.fingerprint());
    // The first version ever registered has nothing to move.
    assert!(store.runs().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_deploy_with_migrate_brings_every_tenant_to_the_new_rules_each_change_audited_with_its_rollout() {
    let store = registry().await;
    let a = tenant(&store, "team-a", "team", 5, 3).await;
    let b = tenant(&store, "team-b", "team", 5, 3).await;
    let c = tenant(&store, "biz-c", "business", 5, 2).await;
    let before_c = members_of(&store, &c).await;
    assert!(members_of(&store, &a).await.values().all(|(m, ver)| entitlement(m, "api_access") == Some(serde_json::json!(true)) && ver == &v(V1)));

    let text = v2_text(V2, "migrate", "now");
    assert!(matches!(versions::register(&store, &parsed(&text), &text, Utc::now()).await.unwrap(), Registration::New { seq: 2 }));
    let runs = store.runs().await.unwrap();
    assert_eq!(runs.len(), 1, "the deploy's own rollout");
    let run = &runs[0];
    assert_eq!((run.spec.id.as_str(), run.spec.by.as_str(), run.total), ("deploy-2026-12-01", "deploy", 3));
    drive(&store).await;

    let run = store.run(&run.spec.id).await.unwrap().unwrap();
    assert_eq!((run.status, run.counts.done, run.counts.members_changed), (RunStatus::Done, 3, 6), "{run:?}");
    let cause = versions::rollout_cause(&run.spec.id);
    for t in [&a, &b] {
        let meta = store.meta(t).await.unwrap().unwrap();
        assert_eq!((meta.model_version.as_str(), meta.access.as_ref().unwrap().entitlements.get("sso").map(|e| serde_json::to_value(e).unwrap())), (V2, Some(serde_json::json!(true))));
        for (user, (access, ver)) in members_of(&store, t).await {
            assert_eq!(ver, v(V2), "{user}");
            assert_eq!(
                (entitlement(&access, "api_access"), entitlement(&access, "sso"), entitlement(&access, "projects")),
                (Some(serde_json::json!(false)), Some(serde_json::json!(true)), Some(serde_json::json!(75))),
                "{user}"
            );
        }
        let moved: Vec<AuditRecord> = records(&store, t).await.into_iter().filter(|r| r.event.cause == cause).collect();
        assert!(moved.iter().any(|r| r.event.action == AuditAction::TenantModelChanged && r.event.rule.contains("2026-11-01 -> 2026-12-01")), "{moved:?}");
        let member_records: Vec<&AuditRecord> = moved.iter().filter(|r| r.event.action == AuditAction::MemberAccessChanged).collect();
        assert_eq!(member_records.len(), 3, "each member once");
        assert!(member_records.iter().all(|r| r.event.rule.starts_with("model 2026-11-01 -> 2026-12-01: ") && r.event.after.as_ref().unwrap()["model"] == V2), "{member_records:?}");
        assert!(audit::verify(&store, t).await.unwrap().unwrap().ok);
    }
    // The business tenant's access is the same; only the version it was decided under moved.
    let after_c = members_of(&store, &c).await;
    assert_eq!(after_c.values().map(|(a, _)| a.clone()).collect::<Vec<_>>(), before_c.values().map(|(a, _)| a.clone()).collect::<Vec<_>>());
    assert!(after_c.values().all(|(_, ver)| ver == &v(V2)));
    // Two tenants on the same version and licenses hold the same access.
    let (ma, mb) = (members_of(&store, &a).await, members_of(&store, &b).await);
    assert_eq!(ma.values().collect::<Vec<_>>(), mb.values().collect::<Vec<_>>());
    // Nothing behind the latest version.
    let (_, behind) = versions::overview(&store).await.unwrap();
    assert_eq!(behind, 0);
    // Moving nobody again: a second drive changes nothing.
    let n = records(&store, &a).await.len();
    versions::register(&store, &parsed(&text), &text, Utc::now()).await.unwrap();
    drive(&store).await;
    assert_eq!(records(&store, &a).await.len(), n);
}

#[tokio::test]
async fn grandfathered_tenants_keep_their_rules_until_a_rollout_moves_exactly_the_tenants_it_names() {
    let store = registry().await;
    let a = tenant(&store, "gf-a", "team", 5, 2).await;
    let b = tenant(&store, "gf-b", "team", 5, 2).await;
    let before_b = members_of(&store, &b).await;
    let text = v2_text(V2, "grandfather", "now");
    versions::register(&store, &parsed(&text), &text, Utc::now()).await.unwrap();
    assert!(store.runs().await.unwrap().is_empty(), "grandfather: no rollout");
    drive(&store).await;
    // Events keep an existing tenant on its version's rules.
    licenses::record_change(&store, &crm(&b, 2, "team", 6, None), "h2", Utc::now()).await.unwrap();
    settle(&store, &b).await;
    assert_eq!(store.meta(&b).await.unwrap().unwrap().model_version, v(V1));
    assert_eq!(members_of(&store, &b).await, before_b);
    // A new tenant follows the latest.
    let c = tenant(&store, "gf-new", "team", 5, 1).await;
    assert_eq!(store.meta(&c).await.unwrap().unwrap().model_version, v(V2));
    assert!(members_of(&store, &c).await.values().all(|(m, ver)| entitlement(m, "sso") == Some(serde_json::json!(true)) && ver == &v(V2)));

    // A rollout of a: a moves, b stays.
    let req = RolloutRequest { to: v(V2), tenants: Selection::List(vec![a.clone()]), exclude: BTreeSet::new(), at: When::Now };
    let run = versions::start_rollout(&store, req, "ops", RunId::parse("r-a").unwrap(), Utc::now()).await.unwrap();
    assert_eq!(run.total, 1);
    drive(&store).await;
    assert_eq!(store.meta(&a).await.unwrap().unwrap().model_version, v(V2));
    assert_eq!(store.meta(&b).await.unwrap().unwrap().model_version, v(V1));
    assert_eq!(members_of(&store, &b).await, before_b);
    assert_eq!(store.run(&run.spec.id).await.unwrap().unwrap().status, RunStatus::Done);
    // A version that is not registered cannot be rolled out.
    let req = RolloutRequest { to: v("nope"), tenants: Selection::All, exclude: BTreeSet::new(), at: When::Now };
    let e = versions::start_rollout(&store, req, "ops", RunId::parse("r-x").unwrap(), Utc::now()).await.unwrap_err();
    assert!(matches!(e, Error::Rejected(r) if r.code == "unknown_version"));
}

#[tokio::test]
async fn a_pinned_tenant_is_skipped_and_reported_and_released_when_its_pin_ends() {
    let store = registry().await;
    let a = tenant(&store, "pin-a", "team", 5, 2).await;
    let p = tenant(&store, "pin-p", "team", 5, 2).await;
    let x = tenant(&store, "pin-x", "team", 5, 1).await;
    let now = Utc::now();
    let req = PinRequest { version: v(V1), until: Some(now + Duration::days(30)), by: "ops".into(), reason: "negotiated contract".into() };
    versions::pin(&store, &store, &p, &req, &Cause::new(CauseKind::ApiCall, "pin-1"), now).await.unwrap();
    let text = v2_text(V2, "grandfather", "now");
    versions::register(&store, &parsed(&text), &text, Utc::now()).await.unwrap();
    let req = RolloutRequest { to: v(V2), tenants: Selection::All, exclude: [x.clone()].into(), at: When::Now };
    let run = versions::start_rollout(&store, req, "ops", RunId::parse("r-all").unwrap(), Utc::now()).await.unwrap();
    drive(&store).await;
    let run = store.run(&run.spec.id).await.unwrap().unwrap();
    assert_eq!((run.status, run.counts.done, run.counts.skipped), (RunStatus::Done, 1, 1), "{run:?}");
    let (outcomes, _) = store.outcomes(&run.spec.id, None, 10).await.unwrap();
    let pinned = outcomes.iter().find(|o| o.tenant_id == p).unwrap();
    assert_eq!(pinned.state, OutcomeState::Skipped);
    assert!(pinned.reason.as_deref().unwrap().contains("pinned to 2026-11-01") && pinned.reason.as_deref().unwrap().contains("negotiated contract"), "{pinned:?}");
    assert!(!outcomes.iter().any(|o| o.tenant_id == x), "an excluded tenant is not listed");
    assert_eq!(store.meta(&a).await.unwrap().unwrap().model_version, v(V2));
    assert_eq!(store.meta(&p).await.unwrap().unwrap().model_version, v(V1));
    assert_eq!(store.meta(&x).await.unwrap().unwrap().model_version, v(V1));
    assert!(records(&store, &p).await.iter().any(|r| r.event.action == AuditAction::TenantModelPinned));

    // The sweep, past the pin's end: released, and migrated to the latest.
    assert_eq!(sweep_models(&store, now + Duration::days(29), "sweep-0").await, (0, 0), "not yet");
    assert_eq!(sweep_models(&store, now + Duration::days(31), "sweep-1").await, (0, 1));
    settle(&store, &p).await;
    let meta = store.meta(&p).await.unwrap().unwrap();
    assert_eq!((meta.model_version, meta.model_pin), (v(V2), None));
    assert!(members_of(&store, &p).await.values().all(|(_, ver)| ver == &v(V2)));
    let rs = records(&store, &p).await;
    assert!(rs.iter().any(|r| r.event.action == AuditAction::TenantModelUnpinned && r.event.cause == Cause::new(CauseKind::Sweep, "sweep-1")), "{rs:?}");
}

/// The sweep's model part as of `as_of` (what `sweep::run` does with the
/// model items the due index lists): (moves handed back, pins released).
async fn sweep_models(store: &Memory, as_of: DateTime<Utc>, run: &str) -> (u64, u64) {
    let limits = sweep::SweepLimits { stop_at: Instant::now() + std::time::Duration::from_secs(60), max_items: None };
    let report = sweep::sweep(store, as_of, run, limits).await.unwrap();
    let (mut moved, mut released) = (0, 0);
    for t in &report.model_tenants {
        match versions::model_due(store, store, store, t, &Cause::new(CauseKind::Sweep, run), as_of).await.unwrap() {
            versions::ModelDue::Moved => moved += 1,
            versions::ModelDue::PinReleased { .. } => released += 1,
            versions::ModelDue::Nothing => {}
        }
    }
    (moved, released)
}

#[tokio::test]
async fn period_end_moves_a_tenant_when_its_billing_period_ends() {
    let store = registry().await;
    let now = Utc::now();
    let t = tid("pe-a");
    licenses::record_change(&store, &crm(&t, 1, "team", 5, Some(now + Duration::days(10))), "h", now).await.unwrap();
    settle(&store, &t).await;
    let none = tenant(&store, "pe-none", "team", 3, 1).await;
    let text = v2_text(V2, "migrate", "period_end");
    versions::register(&store, &parsed(&text), &text, now).await.unwrap();
    drive(&store).await;
    let run = store.runs().await.unwrap().remove(0);
    assert_eq!((run.status, run.counts.waiting, run.counts.done), (RunStatus::Running, 1, 1), "{run:?}");
    // A tenant with no period moved at once; the other waits.
    assert_eq!(store.meta(&none).await.unwrap().unwrap().model_version, v(V2));
    let meta = store.meta(&t).await.unwrap().unwrap();
    assert_eq!((meta.model_version.as_str(), meta.model_waiting.as_ref().map(|w| w.at)), (V1, Some(now + Duration::days(10))));
    // The sweep before the end moves nothing; after it, the move is handed back.
    assert_eq!(sweep_models(&store, now + Duration::days(9), "early").await, (0, 0));
    assert_eq!(sweep_models(&store, now + Duration::days(10) + Duration::minutes(1), "due").await, (1, 0));
    drive(&store).await;
    let meta = store.meta(&t).await.unwrap().unwrap();
    assert_eq!((meta.model_version.as_str(), meta.model_waiting), (V2, None));
    let run = store.run(&run.spec.id).await.unwrap().unwrap();
    assert_eq!((run.status, run.counts.waiting, run.counts.done), (RunStatus::Done, 0, 2), "{run:?}");
}

#[tokio::test]
async fn a_preview_lists_exactly_the_members_the_rollout_then_changes() {
    let store = registry().await;
    // Several tiers, a waiting line, a contract with role mappings, add-ons.
    let a = tenant(&store, "pv-team", "team", 3, 5).await;
    let b = tenant(&store, "pv-biz", "business", 4, 4).await;
    let c = tenant(&store, "pv-free", "free", 1, 2).await;
    let d = tid("pv-contract");
    let doc = serde_json::json!({"contract_id": "k-pv", "tenant_id": "pv-contract", "tier": "team", "seats": 3, "addons": ["sso"],
        "term": {"start": "2026-01-01T00:00:00Z", "end": "2088-01-01T00:00:00Z"}, "role_mappings": {"finance": ["billing-admin"]}});
    contracts::create(&store, &doc, "h0", "req", Utc::now()).await.unwrap();
    for i in 0..4 {
        let groups: BTreeSet<String> = if i % 2 == 0 { ["finance".to_string()].into() } else { BTreeSet::new() };
        let new = NewMember { user_id: UserId::parse(format!("c{i}")).unwrap(), email: format!("c{i}@x.test"), groups, attributes: BTreeMap::new() };
        members::create(&store, &d, &new, "seed", Utc::now()).await.unwrap();
    }
    settle(&store, &d).await;
    // The candidate: team as above, business loses audit_log_export, team
    // seats capped at 2, finance gets billing-admin from team up.
    let text = v2_text(V2, "grandfather", "now")
        .replacen("projects = 500\napi_access = true\nsso = false\naudit_log_export = true", "projects = 500\napi_access = true\nsso = false\naudit_log_export = false", 1)
        .replacen("name = \"team\"", "name = \"team\"\nmax_seats = 2", 1)
        .replacen("min_tier = \"business\"", "min_tier = \"team\"", 1);
    let candidate = parsed(&text);
    let preview = versions::start_preview(&store, PreviewOf::Candidate(Box::new(candidate.clone()), text.clone()), Selection::All, BTreeSet::new(), "ops", RunId::parse("p-1").unwrap(), Utc::now())
        .await
        .unwrap();
    assert_eq!(preview.total, 4);
    let before: BTreeMap<TenantId, BTreeMap<String, (MemberAccess, ModelVersion)>> = {
        let mut m = BTreeMap::new();
        for t in [&a, &b, &c, &d] {
            m.insert(t.clone(), members_of(&store, t).await);
        }
        m
    };
    let audit_len: BTreeMap<TenantId, usize> = {
        let mut m = BTreeMap::new();
        for t in [&a, &b, &c, &d] {
            m.insert(t.clone(), records(&store, t).await.len());
        }
        m
    };
    drive(&store).await;
    let preview = store.run(&preview.spec.id).await.unwrap().unwrap();
    assert_eq!((preview.status, preview.counts.done), (RunStatus::Done, 4));
    // Nothing of any tenant was written.
    for t in [&a, &b, &c, &d] {
        assert_eq!(members_of(&store, t).await, before[t], "{t}");
        assert_eq!(records(&store, t).await.len(), audit_len[t], "{t}");
    }
    let mut previewed: BTreeSet<(String, String)> = BTreeSet::new();
    for t in [&a, &b, &c, &d] {
        let mut page = 0;
        while let Some(p) = store.preview_page(&preview.spec.id, t, page).await.unwrap() {
            previewed.extend(p.impact.members.iter().map(|m| (t.to_string(), m.user_id.to_string())));
            page += 1;
            if !p.more {
                break;
            }
        }
    }
    assert!(previewed.len() >= 8, "the candidate changes many members: {previewed:?}");
    assert_eq!(preview.counts.preview.members_changed as usize, previewed.len());

    // The same model deployed, rolled out: exactly those members change.
    versions::register(&store, &candidate, &text, Utc::now()).await.unwrap();
    let req = RolloutRequest { to: v(V2), tenants: Selection::All, exclude: BTreeSet::new(), at: When::Now };
    let run = versions::start_rollout(&store, req, "ops", RunId::parse("r-pv").unwrap(), Utc::now()).await.unwrap();
    drive(&store).await;
    let cause = versions::rollout_cause(&run.spec.id);
    let mut changed: BTreeSet<(String, String)> = BTreeSet::new();
    for t in [&a, &b, &c, &d] {
        for r in records(&store, t).await.into_iter().filter(|r| r.event.cause == cause && r.event.action == AuditAction::MemberAccessChanged) {
            let (before, after) = (r.event.before.unwrap(), r.event.after.unwrap());
            let access = |x: &serde_json::Value| (x["status"].clone(), x["roles"].clone(), x["entitlements"].clone());
            if access(&before) != access(&after) {
                changed.insert((t.to_string(), r.event.subject.trim_start_matches("member:").to_string()));
            }
        }
    }
    assert_eq!(changed, previewed);
    let run = store.run(&run.spec.id).await.unwrap().unwrap();
    assert_eq!(run.counts.members_changed as usize, changed.len());
}

/// Each member a preview lists, with its status before and after, read a
/// page at a time.
async fn previewed_statuses(store: &Memory, run: &RunId, t: &TenantId) -> (BTreeMap<String, (MemberStatus, MemberStatus)>, u32) {
    let (mut out, mut page) = (BTreeMap::new(), 0);
    while let Some(p) = store.preview_page(run, t, page).await.unwrap() {
        assert_eq!(p.page, page);
        out.extend(p.impact.members.iter().map(|m| (m.user_id.to_string(), (m.status_before, m.status_after))));
        page += 1;
        if !p.more {
            break;
        }
    }
    (out, page)
}

/// Each member whose access a rollout changed, with its status before the
/// first of its records and after the last.
async fn rolled_statuses(store: &Memory, run: &RunId, t: &TenantId) -> BTreeMap<String, (MemberStatus, MemberStatus)> {
    let cause = versions::rollout_cause(run);
    let mut by: BTreeMap<String, (serde_json::Value, serde_json::Value)> = BTreeMap::new();
    for r in records(store, t).await.into_iter().filter(|r| r.event.cause == cause && r.event.action == AuditAction::MemberAccessChanged) {
        let (before, after) = (r.event.before.unwrap(), r.event.after.unwrap());
        by.entry(r.event.subject.trim_start_matches("member:").to_string()).and_modify(|e| e.1 = after.clone()).or_insert((before, after));
    }
    let access = |x: &serde_json::Value| (x["status"].clone(), x["roles"].clone(), x["entitlements"].clone());
    let status = |x: &serde_json::Value| serde_json::from_value::<MemberStatus>(x["status"].clone()).unwrap();
    by.into_iter().filter(|(_, (b, a))| access(b) != access(a)).map(|(u, (b, a))| (u, (status(&b), status(&a)))).collect()
}

/// A tenant larger than a read page and whose difference fills several
/// stored pages: the preview (read in two passes, a page at a time) names
/// the same members with the same status changes as the rollout, through a
/// seat cut of hundreds; and again for the rollback, whose free seats go to
/// the line in its order.
#[tokio::test]
async fn a_large_tenants_preview_pages_through_a_cut_and_a_grant_as_its_rollouts_do() {
    let store = registry().await;
    let t = tenant(&store, "pv-large", "team", 1_050, 1_100).await;
    let held = members_of(&store, &t).await.values().filter(|(a, _)| a.status == MemberStatus::Active).count();
    assert_eq!(held, 1_050);
    // V2 changes team's entitlements and caps its seats at 600: 450 cut.
    let text = v2_text(V2, "grandfather", "now").replacen("name = \"team\"", "name = \"team\"\nmax_seats = 600", 1);
    let candidate = parsed(&text);
    let preview =
        versions::start_preview(&store, PreviewOf::Candidate(Box::new(candidate.clone()), text.clone()), Selection::All, BTreeSet::new(), "ops", RunId::parse("p-large").unwrap(), Utc::now())
            .await
            .unwrap();
    drive(&store).await;
    let (previewed, pages) = previewed_statuses(&store, &preview.spec.id, &t).await;
    assert_eq!(pages, 3, "1,100 members changed, 500 a page");
    let cut = previewed.values().filter(|(b, a)| (*b, *a) == (MemberStatus::Active, MemberStatus::PendingSeat)).count();
    assert_eq!((previewed.len(), cut), (1_100 - 50, 450));
    let totals = store.run(&preview.spec.id).await.unwrap().unwrap().counts.preview;
    assert_eq!((totals.members_changed, totals.seats_lost, totals.seats_gained), (1_050, 450, 0));

    versions::register(&store, &candidate, &text, Utc::now()).await.unwrap();
    let req = RolloutRequest { to: v(V2), tenants: Selection::All, exclude: BTreeSet::new(), at: When::Now };
    let run = versions::start_rollout(&store, req, "ops", RunId::parse("r-large").unwrap(), Utc::now()).await.unwrap();
    drive(&store).await;
    assert_eq!(rolled_statuses(&store, &run.spec.id, &t).await, previewed);

    // The rollback: 1,050 seats again for 600 holders, 450 given from a line of 500.
    let back = versions::start_preview(&store, PreviewOf::Version(v(V1)), Selection::All, BTreeSet::new(), "ops", RunId::parse("p-back").unwrap(), Utc::now()).await.unwrap();
    drive(&store).await;
    let (previewed, _) = previewed_statuses(&store, &back.spec.id, &t).await;
    let granted = previewed.values().filter(|(b, a)| (*b, *a) == (MemberStatus::PendingSeat, MemberStatus::Active)).count();
    assert_eq!(granted, 450);
    let req = RolloutRequest { to: v(V1), tenants: Selection::All, exclude: BTreeSet::new(), at: When::Now };
    let run = versions::start_rollout(&store, req, "ops", RunId::parse("r-back").unwrap(), Utc::now()).await.unwrap();
    drive(&store).await;
    assert_eq!(rolled_statuses(&store, &run.spec.id, &t).await, previewed);
}

#[tokio::test]
async fn a_rollout_crashed_inside_a_walk_resumes_and_changes_each_member_once() {
    let store = registry().await;
    // Enough members for several transactions.
    let a = tenant(&store, "crash-a", "team", 80, 70).await;
    let b = tenant(&store, "crash-b", "team", 5, 3).await;
    let text = v2_text(V2, "migrate", "now");
    versions::register(&store, &parsed(&text), &text, Utc::now()).await.unwrap();
    versions::pump(&store, &store, Utc::now(), PumpLimits { batch: 10, ..limits() }).await.unwrap();
    let sent: Vec<Work> = std::mem::take(&mut *store.work_sent.lock().unwrap());
    assert_eq!(sent.len(), 1);
    // Provision dies at its third commit: the move, a chunk of the walk, then nothing.
    let dying = Crashing::after(&store, 2);
    let err = versions::work(&dying, &sent[0], Utc::now(), Instant::now() + std::time::Duration::from_secs(60), 1).await;
    // A tenant that fails is tried again by the next message; nothing is lost.
    let report = err.unwrap();
    let rest = report.rest.expect("the failed tenant comes back");
    assert!(rest.attempts.values().all(|n| *n == 1));
    let meta = store.meta(&a).await.unwrap().unwrap();
    assert_eq!(meta.model_version, v(V2), "moved before the crash");
    assert!(meta.walk.as_ref().is_some_and(|w| !w.done), "its walk half done: {:?}", meta.walk);
    // The message again (as SQS delivers it again): the walk goes on.
    versions::work(&store, &rest, Utc::now(), Instant::now() + std::time::Duration::from_secs(60), 4).await.unwrap();
    drive(&store).await;
    let run = store.runs().await.unwrap().remove(0);
    assert_eq!((run.status, run.counts.done), (RunStatus::Done, 2), "{run:?}");
    let cause = versions::rollout_cause(&run.spec.id);
    for t in [&a, &b] {
        let mut per_member: BTreeMap<String, usize> = BTreeMap::new();
        for r in records(&store, t).await.into_iter().filter(|r| r.event.cause == cause && r.event.action == AuditAction::MemberAccessChanged) {
            *per_member.entry(r.event.subject.clone()).or_default() += 1;
        }
        let n = members_of(&store, t).await.len();
        assert_eq!(per_member.len(), n, "{t}: every member changed");
        assert!(per_member.values().all(|c| *c == 1), "{t}: each once: {per_member:?}");
        assert!(members_of(&store, t).await.values().all(|(_, ver)| ver == &v(V2)));
    }
    assert_eq!(run.counts.members_changed, 73, "the walk's count survives the crash");
    assert!(audit::verify(&store, &a).await.unwrap().unwrap().ok);
    // An injected crash is what failed the first time.
    assert!(is_injected_crash(&Error::Port(PortError::Corrupt { key: "x".into(), why: "injected crash".into() })));
}

#[tokio::test]
async fn a_tenant_that_keeps_failing_is_recorded_with_its_cause_and_the_others_go_on() {
    let store = registry().await;
    let a = tenant(&store, "fail-a", "team", 5, 2).await;
    let b = tenant(&store, "fail-b", "team", 5, 2).await;
    let text = v2_text(V2, "grandfather", "now");
    versions::register(&store, &parsed(&text), &text, Utc::now()).await.unwrap();
    let run = versions::start_rollout(
        &store,
        RolloutRequest { to: v(V2), tenants: Selection::List(vec![a.clone(), b.clone()]), exclude: BTreeSet::new(), at: When::Now },
        "ops",
        RunId::parse("r-f").unwrap(),
        Utc::now(),
    )
    .await
    .unwrap();
    versions::pump(&store, &store, Utc::now(), limits()).await.unwrap();
    let mut work: Work = std::mem::take(&mut *store.work_sent.lock().unwrap()).remove(0);
    // a's commits always fail (every attempt crashes at once); b's do not.
    for _ in 0..3 {
        let only_a = Work { tenants: work.tenants.iter().filter(|t| **t == a).cloned().collect(), ..work.clone() };
        let report = versions::work(&Crashing::after(&store, 0), &only_a, Utc::now(), Instant::now() + std::time::Duration::from_secs(60), 1).await.unwrap();
        match report.rest {
            Some(rest) => work = Work { tenants: rest.tenants.into_iter().chain([b.clone()]).collect(), attempts: rest.attempts, ..work },
            None => break,
        }
    }
    let only_b = Work { tenants: vec![b.clone()], attempts: BTreeMap::new(), ..work };
    versions::work(&store, &only_b, Utc::now(), Instant::now() + std::time::Duration::from_secs(60), 4).await.unwrap();
    drive(&store).await;
    let run = store.run(&run.spec.id).await.unwrap().unwrap();
    assert_eq!((run.status, run.counts.failed, run.counts.done), (RunStatus::Failed, 1, 1), "{run:?}");
    let (outcomes, _) = store.outcomes(&run.spec.id, None, 10).await.unwrap();
    let failed = outcomes.iter().find(|o| o.tenant_id == a).unwrap();
    assert!(failed.reason.as_deref().unwrap().contains("injected crash"), "{failed:?}");
    assert_eq!(store.meta(&b).await.unwrap().unwrap().model_version, v(V2));
}

#[tokio::test]
async fn rolling_out_the_older_version_restores_each_members_access_exactly() {
    // (Seats a version's cap took go back to the line in its order, as any
    // freed seat does: with nobody else waiting, to the members that lost them.)
    let store = registry().await;
    let a = tenant(&store, "back-a", "team", 6, 6).await;
    let original = members_of(&store, &a).await;
    let text = v2_text(V2, "migrate", "now").replacen("name = \"team\"", "name = \"team\"\nmax_seats = 2", 1);
    versions::register(&store, &parsed(&text), &text, Utc::now()).await.unwrap();
    drive(&store).await;
    let moved = members_of(&store, &a).await;
    assert_ne!(moved.values().map(|(x, _)| x.clone()).collect::<Vec<_>>(), original.values().map(|(x, _)| x.clone()).collect::<Vec<_>>());
    assert_eq!(moved.values().filter(|(x, _)| x.status == MemberStatus::Active).count(), 2, "seats capped at 2");
    assert!(original.values().all(|(x, _)| x.status == MemberStatus::Active));
    let req = RolloutRequest { to: v(V1), tenants: Selection::List(vec![a.clone()]), exclude: BTreeSet::new(), at: When::Now };
    versions::start_rollout(&store, req, "ops", RunId::parse("r-back").unwrap(), Utc::now()).await.unwrap();
    drive(&store).await;
    let back = members_of(&store, &a).await;
    // The same access: the seats back to the same members (the line in its order).
    assert_eq!(back.iter().map(|(u, (x, _))| (u.clone(), x.clone())).collect::<BTreeMap<_, _>>(), original.iter().map(|(u, (x, _))| (u.clone(), x.clone())).collect::<BTreeMap<_, _>>());
    assert!(back.values().all(|(_, ver)| ver == &v(V1)));
}

#[tokio::test]
async fn events_during_a_move_end_in_the_same_access_as_if_they_came_after() {
    let store = registry().await;
    let during = tenant(&store, "ev-during", "team", 60, 50).await;
    let after = tenant(&store, "ev-after", "team", 60, 50).await;
    let text = v2_text(V2, "grandfather", "now");
    versions::register(&store, &parsed(&text), &text, Utc::now()).await.unwrap();
    // `during` is moved and half walked (its walk stops after a page); then
    // a license change and a new account arrive; then the walk goes on.
    let run = versions::start_rollout(
        &store,
        RolloutRequest { to: v(V2), tenants: Selection::List(vec![during.clone(), after.clone()]), exclude: BTreeSet::new(), at: When::Now },
        "ops",
        RunId::parse("r-ev").unwrap(),
        Utc::now(),
    )
    .await
    .unwrap();
    versions::pump(&store, &store, Utc::now(), limits()).await.unwrap();
    let work: Work = std::mem::take(&mut *store.work_sent.lock().unwrap()).remove(0);
    let only = Work { tenants: vec![during.clone()], ..work.clone() };
    let report = versions::work(&Crashing::after(&store, 2), &only, Utc::now(), Instant::now() + std::time::Duration::from_secs(60), 1).await.unwrap();
    assert!(report.rest.is_some());
    assert!(store.meta(&during).await.unwrap().unwrap().walk.is_some_and(|w| !w.done));
    let events = |t: &TenantId| crm(t, 2, "business", 60, None);
    licenses::record_change(&store, &events(&during), "h2", Utc::now()).await.unwrap();
    let new = NewMember { user_id: UserId::parse("late").unwrap(), email: "late@x.test".into(), groups: ["finance".to_string()].into(), attributes: BTreeMap::new() };
    members::create(&store, &during, &new, "late", Utc::now()).await.unwrap();
    settle(&store, &during).await;
    versions::work(&store, &report.rest.unwrap(), Utc::now(), Instant::now() + std::time::Duration::from_secs(60), 4).await.unwrap();
    // `after`: moved first, the same events after.
    versions::work(&store, &Work { tenants: vec![after.clone()], ..work }, Utc::now(), Instant::now() + std::time::Duration::from_secs(60), 4).await.unwrap();
    licenses::record_change(&store, &events(&after), "h2", Utc::now()).await.unwrap();
    members::create(&store, &after, &new, "late", Utc::now()).await.unwrap();
    settle(&store, &after).await;
    drive(&store).await;
    assert_eq!(store.run(&run.spec.id).await.unwrap().unwrap().status, RunStatus::Done);
    assert_eq!(members_of(&store, &during).await, members_of(&store, &after).await);
}

#[tokio::test]
async fn a_tier_the_tenants_version_lacks_moves_it_to_the_latest_audited() {
    let store = registry().await;
    let t = tenant(&store, "lack", "team", 5, 2).await;
    // v2 adds a tier `scale`, grandfathering everyone.
    let text = v2_text(V2, "grandfather", "now").replacen(
        "[[tiers]]\nname = \"enterprise\"",
        "[[tiers]]\nname = \"scale\"\n[tiers.entitlements]\nprojects = 2000\napi_access = true\nsso = true\naudit_log_export = true\n\n[[tiers]]\nname = \"enterprise\"",
        1,
    );
    versions::register(&store, &parsed(&text), &text, Utc::now()).await.unwrap();
    // The CRM record names it (what it means is the latest version's).
    licenses::record_change(&store, &crm(&t, 2, "scale", 5, None), "h2", Utc::now()).await.unwrap();
    settle(&store, &t).await;
    let meta = store.meta(&t).await.unwrap().unwrap();
    assert_eq!((meta.model_version.as_str(), meta.access.unwrap().tier.as_str()), (V2, "scale"));
    let rs = records(&store, &t).await;
    let moved = rs.iter().find(|r| r.event.action == AuditAction::TenantModelChanged).expect("the move is audited");
    assert!(moved.event.rule.contains("tier \"scale\"") && moved.event.rule.contains(V2), "{}", moved.event.rule);
    assert!(members_of(&store, &t).await.values().all(|(m, ver)| ver == &v(V2) && entitlement(m, "projects") == Some(serde_json::json!(2000))));
}

#[tokio::test]
async fn a_canceled_rollout_hands_out_no_more_tenants_and_drops_its_waiting_moves() {
    let store = registry().await;
    let now = Utc::now();
    let w = tid("cancel-w");
    licenses::record_change(&store, &crm(&w, 1, "team", 5, Some(now + Duration::days(5))), "h", now).await.unwrap();
    settle(&store, &w).await;
    let text = v2_text(V2, "grandfather", "now");
    versions::register(&store, &parsed(&text), &text, now).await.unwrap();
    let run = versions::start_rollout(
        &store,
        RolloutRequest { to: v(V2), tenants: Selection::List(vec![w.clone()]), exclude: BTreeSet::new(), at: When::PeriodEnd },
        "ops",
        RunId::parse("r-c").unwrap(),
        now,
    )
    .await
    .unwrap();
    drive(&store).await;
    assert!(store.meta(&w).await.unwrap().unwrap().model_waiting.is_some());
    let canceled = versions::cancel(&store, &run.spec.id, now).await.unwrap();
    assert_eq!(canceled.status, RunStatus::Canceled);
    assert_eq!(sweep_models(&store, now + Duration::days(6), "s").await, (1, 0));
    drive(&store).await;
    let meta = store.meta(&w).await.unwrap().unwrap();
    assert_eq!((meta.model_version.as_str(), meta.model_waiting), (V1, None), "tenants not moved stay");
    assert!(records(&store, &w).await.iter().any(|r| r.event.action == AuditAction::TenantModelMoveDropped));
}
