//! Licensing model versions, the pure part: requests, selections, what a
//! rollout does with one tenant, a tenant's period end, and a preview's
//! difference.

use super::*;
use crate::core::access::{desired_access_with_rules, MemberItem, MemberStatus, TenantRules};
use crate::core::access::{Member, MemberAccess};
use crate::core::audit::ChainHead;
use crate::core::contract::{AccessImpact, MemberImpact};
use crate::core::ids::{LicenseId, UserId};
use crate::core::ids::{ModelVersion, RunId, TenantId};
use crate::core::license::{effective_license, License};
use crate::core::license::{LicenseStatus, Source};
use crate::core::model::LicensingModel;
use crate::core::model::DEFAULT_MODEL_TOML;
use crate::core::tenant::ModelPin;
use crate::core::tenant::TenantMeta;
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn v(s: &str) -> ModelVersion {
    ModelVersion::parse(s).unwrap()
}

fn meta(version: &str) -> TenantMeta {
    TenantMeta {
        access: None,
        seats_used: 0,
        seats_pending: 0,
        head: ChainHead::genesis(),
        rules: TenantRules::default(),
        licensed: true,
        walk: None,
        walk_goal: None,
        license_file_seconds: None,
        continues: false,
        model_version: v(version),
        model_pin: None,
        model_waiting: None,
    }
}

fn license(tier: &str, seats: u32, status: LicenseStatus, expires: Option<&str>) -> License {
    License {
        license_id: LicenseId::parse(format!("l-{tier}")).unwrap(),
        source: Source::Crm,
        tier: tier.into(),
        seats,
        addons: BTreeSet::new(),
        status,
        starts_at: None,
        expires_at: expires.map(at),
        source_version: 1,
        last_event_id: crate::core::ids::EventId::parse("e1").unwrap(),
        timeline: Default::default(),
    }
}

#[test]
fn a_selection_is_all_a_tier_or_a_list_and_every_problem_is_named() {
    assert_eq!(Selection::parse(&json!("all"), None), Ok(Selection::All));
    assert_eq!(Selection::parse(&json!({"tier": "team"}), None), Ok(Selection::Tier("team".into())));
    let m = LicensingModel::default_model();
    assert!(Selection::parse(&json!({"tier": "gold"}), Some(&m)).unwrap_err()[0].contains("unknown tier \"gold\""));
    assert_eq!(Selection::parse(&json!(["a", "b", "a"]), None), Ok(Selection::List(vec![TenantId::parse("a").unwrap(), TenantId::parse("b").unwrap()])));
    let bad = Selection::parse(&json!(["ok", "not ok", 3]), None).unwrap_err();
    assert_eq!(bad, vec!["tenants[1]: not a tenant id".to_string(), "tenants[2]: not a tenant id".to_string()]);
    for wrong in [json!("some"), json!([]), json!({"tier": 1}), json!({"tier": "team", "x": 1}), json!(7)] {
        assert!(Selection::parse(&wrong, None).is_err(), "{wrong}");
    }
    // Serialised as asked.
    assert_eq!(serde_json::to_value(Selection::Tier("team".into())).unwrap(), json!({"tier": "team"}));
    assert_eq!(serde_json::from_value::<Selection>(json!("all")).unwrap(), Selection::All);
}

#[test]
fn a_rollout_request_names_every_problem() {
    let ok = RolloutRequest::parse(&json!({"to": "v2", "tenants": {"tier": "team"}, "exclude": ["x"], "at": "period_end"})).unwrap();
    assert_eq!((ok.to, ok.tenants, ok.at), (v("v2"), Selection::Tier("team".into()), When::PeriodEnd));
    assert!(ok.exclude.contains(&TenantId::parse("x").unwrap()));
    assert_eq!(RolloutRequest::parse(&json!({"to": "v2"})).unwrap().tenants, Selection::All);
    assert_eq!(RolloutRequest::parse(&json!({"to": "v2", "at": "2030-01-01T00:00:00Z"})).unwrap().at, When::At(at("2030-01-01T00:00:00Z")));
    let e = RolloutRequest::parse(&json!({"to": "a b", "tenants": "some", "exclude": [1], "at": "soon", "extra": true})).unwrap_err();
    let problems: Vec<String> = serde_json::from_value(e.details["problems"].clone()).unwrap();
    for field in ["extra", "to", "tenants", "exclude[0]", "at"] {
        assert!(problems.iter().any(|p| p.starts_with(field)), "{field} not named in {problems:?}");
    }
    assert_eq!(e.code, "invalid_rollout");
    assert!(RolloutRequest::parse(&json!({})).unwrap_err().message.contains("to:"));
    assert!(RolloutRequest::parse(&json!([1])).is_err());
}

#[test]
fn a_preview_is_of_a_candidate_model_or_a_registered_version() {
    let (of, tenants, _) = parse_preview(DEFAULT_MODEL_TOML, false).unwrap();
    assert!(matches!(of, PreviewOf::Candidate(m, text) if m.version == v("2026-11-01") && text == DEFAULT_MODEL_TOML));
    assert_eq!(tenants, Selection::All);
    // A candidate that does not validate: every problem named.
    let bad = DEFAULT_MODEL_TOML.replacen("roles = [\"billing-admin\"]", "roles = [\"superuser\"]", 1).replacen("team_monthly = { tier = \"team\" }", "team_monthly = { tier = \"gold\" }", 1);
    let e = parse_preview(&bad, false).unwrap_err();
    assert_eq!(e.kind, crate::core::rejection::Kind::Invalid);
    let problems: Vec<String> = serde_json::from_value(e.details["problems"].clone()).unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(parse_preview("version = ", false).unwrap_err().message.contains("candidate"));
    let (of, tenants, exclude) = parse_preview(r#"{"version": "v1", "tenants": ["t1"], "exclude": ["t2"]}"#, true).unwrap();
    assert!(matches!(of, PreviewOf::Version(x) if x == v("v1")));
    assert_eq!((tenants, exclude.len()), (Selection::List(vec![TenantId::parse("t1").unwrap()]), 1));
    assert!(parse_preview(r#"{"tenants": "all"}"#, true).unwrap_err().message.contains("version"));
    assert_eq!(parse_preview("{", true).unwrap_err().kind, crate::core::rejection::Kind::Malformed);
}

#[test]
fn a_pin_needs_a_version_who_and_why_and_ends_in_the_future() {
    let now = at("2026-12-01T00:00:00Z");
    let p = PinRequest::parse(&json!({"version": "v1", "by": "ops", "reason": "contract", "until": "2027-01-01T00:00:00Z"}), now).unwrap();
    assert_eq!((p.version, p.until), (v("v1"), Some(at("2027-01-01T00:00:00Z"))));
    let e = PinRequest::parse(&json!({"version": "v1", "until": "2020-01-01T00:00:00Z", "by": ""}), now).unwrap_err();
    let problems: Vec<String> = serde_json::from_value(e.details["problems"].clone()).unwrap();
    assert!(problems.iter().any(|p| p.starts_with("until")) && problems.iter().any(|p| p.starts_with("by")) && problems.iter().any(|p| p.starts_with("reason")), "{problems:?}");
    assert!(PinRequest::parse(&json!({"by": "a", "reason": "b"}), now).unwrap_err().message.contains("version"));
}

#[test]
fn a_rollout_skips_a_tenant_pinned_elsewhere_waits_for_its_period_end_and_moves_the_rest() {
    let now = at("2026-12-01T00:00:00Z");
    let to = v("v2");
    let licenses = [license("team", 3, LicenseStatus::Active, Some("2026-12-20T00:00:00Z"))];
    assert_eq!(rollout_step(&to, When::Now, &meta("v1"), &licenses, false, now), TenantStep::Move);
    assert_eq!(rollout_step(&to, When::PeriodEnd, &meta("v1"), &licenses, false, now), TenantStep::Wait(at("2026-12-20T00:00:00Z")));
    // The wait is over, or there is no period: at once.
    assert_eq!(rollout_step(&to, When::PeriodEnd, &meta("v1"), &licenses, true, now), TenantStep::Move);
    assert_eq!(rollout_step(&to, When::PeriodEnd, &meta("v1"), &[], false, now), TenantStep::Move);
    // A tenant on `to` already has nothing to wait for.
    assert_eq!(rollout_step(&to, When::PeriodEnd, &meta("v2"), &licenses, false, now), TenantStep::Move);
    let pinned = |version: &str, until: Option<&str>| TenantMeta {
        model_pin: Some(ModelPin { version: v(version), until: until.map(at), by: "ops".into(), reason: "negotiated".into(), at: now }),
        ..meta("v1")
    };
    match rollout_step(&to, When::Now, &pinned("v1", Some("2027-01-01T00:00:00Z")), &licenses, false, now) {
        TenantStep::Skip(reason) => assert!(reason.contains("pinned to v1 until 2027-01-01T00:00:00Z by ops: negotiated"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(rollout_step(&to, When::Now, &pinned("v1", None), &licenses, false, now), TenantStep::Skip(r) if r.contains("until released")));
    // A pin to the rollout's own version, or one that ended, is no obstacle.
    assert_eq!(rollout_step(&to, When::Now, &pinned("v2", None), &licenses, false, now), TenantStep::Move);
    assert_eq!(rollout_step(&to, When::Now, &pinned("v1", Some("2026-11-01T00:00:00Z")), &licenses, false, now), TenantStep::Move);
}

#[test]
fn a_period_ends_at_the_earliest_future_end_of_the_licenses_that_grant_access() {
    let now = at("2026-12-01T00:00:00Z");
    let licenses = [
        license("team", 1, LicenseStatus::Active, Some("2027-03-01T00:00:00Z")),
        license("business", 1, LicenseStatus::PastDue, Some("2027-01-15T00:00:00Z")),
        license("free", 1, LicenseStatus::Canceled, Some("2026-12-05T00:00:00Z")),
        license("enterprise", 1, LicenseStatus::Active, Some("2026-11-01T00:00:00Z")),
        license("x", 1, LicenseStatus::Active, None),
    ];
    assert_eq!(period_end(&licenses, now), Some(at("2027-01-15T00:00:00Z")));
    assert_eq!(period_end(&licenses[2..], now), None);
}

#[test]
fn the_tiers_and_add_ons_a_version_lacks_are_named() {
    let m = LicensingModel::default_model();
    let mut l = license("scale", 1, LicenseStatus::Active, None);
    l.addons.insert("sso".into());
    l.addons.insert("audit_vault".into());
    assert_eq!(lacks(&m, &[l, license("team", 1, LicenseStatus::Active, None)]), vec!["add-on \"audit_vault\"".to_string(), "tier \"scale\"".to_string()]);
    assert!(lacks(&m, &[license("team", 1, LicenseStatus::Active, None)]).is_empty());
}

fn seated(id: &str, seq: u64, groups: &[&str], model: &LicensingModel, tier: &str) -> MemberItem {
    let member = Member {
        user_id: UserId::parse(id).unwrap(),
        email: format!("{id}@x.test"),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        attributes: Default::default(),
        seq,
        removed: false,
        suspended: false,
    };
    let licenses = [license(tier, 10, LicenseStatus::Active, None)];
    let d = desired_access_with_rules(model, &licenses, &TenantRules::default(), &[MemberItem::new(member.clone(), MemberAccess::without_access(MemberStatus::PendingSeat), model)], 0);
    let got = &d.members[&member.user_id];
    MemberItem { access: got.access.clone(), seat: got.seat.clone(), ..MemberItem::new(member, got.access.clone(), model) }
}

#[test]
fn a_preview_lists_exactly_the_members_whose_access_would_change() {
    let v1 = LicensingModel::default_model();
    let text = DEFAULT_MODEL_TOML.replacen("version = \"2026-11-01\"", "version = \"2026-12-01\"", 1).replacen(
        "projects = 50\napi_access = true\nsso = false",
        "projects = 75\napi_access = false\nsso = true",
        1,
    );
    let v2 = LicensingModel::from_toml(&text, "v2").unwrap();
    let licenses = [license("team", 10, LicenseStatus::Active, None)];
    let members = vec![seated("a", 1, &[], &v1, "team"), seated("b", 2, &["admins"], &v1, "team")];
    let m = TenantMeta { access: Some(effective_license(&v1, &licenses)), seats_used: 2, ..meta("2026-11-01") };
    let (impact, tenant_changed) = preview_tenant(&v2, &m, &licenses, &TenantRules::default(), &members);
    assert!(tenant_changed);
    assert_eq!(impact.members.len(), 2);
    for mi in &impact.members {
        assert_eq!(mi.entitlements_added, BTreeSet::from(["projects=75".to_string(), "sso=true".to_string()]));
        assert_eq!(mi.entitlements_removed, BTreeSet::from(["api_access=true".to_string(), "projects=50".to_string()]));
        assert_eq!((mi.seat.as_deref(), mi.roles_added.is_empty(), mi.roles_removed.is_empty()), (None, true, true));
    }
    let totals = PreviewTotals::of(&impact, tenant_changed);
    assert_eq!((totals.tenants_affected, totals.members_changed, totals.entitlements_gained, totals.entitlements_lost, totals.seats_lost), (1, 2, 2, 2, 0));
    // The same rules under another name: nobody's access changes.
    let renamed = LicensingModel::from_toml(&DEFAULT_MODEL_TOML.replacen("version = \"2026-11-01\"", "version = \"renamed\"", 1), "r").unwrap();
    let (none, changed) = preview_tenant(&renamed, &m, &licenses, &TenantRules::default(), &members);
    assert!(none.members.is_empty() && !changed, "{none:?}");
    // A tier's seat limit cut below the holders: the last seated loses its seat.
    let capped = LicensingModel::from_toml(&text.replacen("name = \"team\"", "name = \"team\"\nmax_seats = 1", 1), "capped").unwrap();
    let (cut, _) = preview_tenant(&capped, &m, &licenses, &TenantRules::default(), &members);
    let lost: Vec<&str> = cut.members.iter().filter(|x| x.seat.as_deref() == Some("lost")).map(|x| x.user_id.as_str()).collect();
    assert_eq!(lost, ["a"], "the admin keeps its seat: {cut:?}");
}

#[test]
fn a_long_preview_is_cut_into_pages_the_first_carrying_the_totals() {
    let members: Vec<MemberImpact> = (0..(PREVIEW_MEMBERS_PER_PAGE * 2 + 1))
        .map(|i| MemberImpact {
            user_id: UserId::parse(format!("u{i}")).unwrap(),
            status_before: MemberStatus::Active,
            status_after: MemberStatus::PendingSeat,
            seat: Some("lost".into()),
            roles_added: BTreeSet::new(),
            roles_removed: BTreeSet::new(),
            entitlements_added: BTreeSet::new(),
            entitlements_removed: BTreeSet::new(),
        })
        .collect();
    let impact = AccessImpact { tenant_before: json!({}), tenant_after: json!({}), members, seats_used_before: 9, seats_used_after: 0 };
    let pages = preview_pages(&TenantId::parse("t").unwrap(), &v("a"), &v("b"), impact, true);
    assert_eq!(pages.iter().map(|p| (p.page, p.more, p.impact.members.len())).collect::<Vec<_>>(), [(0, true, PREVIEW_MEMBERS_PER_PAGE), (1, true, PREVIEW_MEMBERS_PER_PAGE), (2, false, 1)]);
    assert_eq!((pages[0].totals.seats_lost, pages[1].totals.seats_lost), ((PREVIEW_MEMBERS_PER_PAGE * 2 + 1) as u64, 0));
    let empty = preview_pages(
        &TenantId::parse("t").unwrap(),
        &v("a"),
        &v("b"),
        AccessImpact { tenant_before: json!({}), tenant_after: json!({}), members: vec![], seats_used_before: 0, seats_used_after: 0 },
        false,
    );
    assert_eq!((empty.len(), empty[0].more, empty[0].totals.tenants_affected), (1, false, 0));
}

#[test]
fn a_run_is_running_until_every_tenant_listed_is_settled_and_none_waits() {
    let spec = RunSpec {
        id: RunId::parse("r1").unwrap(),
        kind: RunKind::Rollout { to: v("v2"), at: When::Now },
        tenants: Selection::All,
        exclude: BTreeSet::new(),
        created_at: at("2026-12-01T00:00:00Z"),
        by: "ops".into(),
    };
    let mut run = RunState::new(spec, 3);
    run.queued = 3;
    assert_eq!(run.status_when_listed(), RunStatus::Running, "not listed yet");
    run.cursor.pass = 2;
    run.counts.done = 2;
    assert_eq!((run.in_flight(), run.status_when_listed()), (1, RunStatus::Running));
    run.counts.waiting = 1;
    assert_eq!(run.status_when_listed(), RunStatus::Running, "a tenant waits for its period's end");
    run.counts.waiting = 0;
    run.counts.skipped = 1;
    assert_eq!(run.status_when_listed(), RunStatus::Done);
    run.counts.skipped = 0;
    run.counts.failed = 1;
    assert_eq!(run.status_when_listed(), RunStatus::Failed);
    let view = run.view();
    assert_eq!((view["status"].as_str(), view["counts"]["failed"].as_u64(), view["at"].as_str()), (Some("pending"), Some(1), Some("now")));
    // A deploy's rollout is named after its version, and waits for no time.
    let d = RunSpec::deploy(&LicensingModel::default_model(), at("2026-12-01T00:00:00Z"));
    assert_eq!((d.id.as_str(), d.by.as_str(), d.starts_at()), ("deploy-2026-11-01", "deploy", None));
}

#[test]
fn a_work_message_and_a_reconcile_request_are_never_taken_for_each_other() {
    // The reconcile queue carries only what the code before versions reads;
    // the work queue's messages are their own shape, which a reconcile
    // request is not and which no reconcile request is.
    use crate::core::audit::{Cause, CauseKind};
    use crate::core::reconcile::ReconcileRequest;
    let work = Work { run: RunId::parse("r1").unwrap(), tenants: vec![TenantId::parse("t").unwrap()], due: true, attempts: BTreeMap::new() };
    let text = serde_json::to_string(&work).unwrap();
    assert!(serde_json::from_str::<ReconcileRequest>(&text).is_err());
    let request = ReconcileRequest::new(TenantId::parse("t").unwrap(), Cause::new(CauseKind::Reconcile, "x"));
    assert!(serde_json::from_str::<Work>(&serde_json::to_string(&request).unwrap()).is_err());
    assert_eq!(serde_json::from_str::<Work>(&text).unwrap(), work);
}
