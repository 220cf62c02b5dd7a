//! Unit and property tests of the SCIM core.

use super::*;
use crate::core::access::{Member, MemberAccess, MemberStatus};
use crate::core::egress::EgressPolicy;
use crate::core::ids::UserId;
use crate::core::model::Entitlements;
use chrono::{DateTime, Duration as Span, Utc};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

fn member(id: &str, email: &str, attrs: &[(&str, &str)], removed: bool) -> Member {
    Member {
        user_id: UserId::parse(id).unwrap(),
        email: email.into(),
        groups: BTreeSet::new(),
        attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        seq: 1,
        removed,
        suspended: false,
    }
}

fn access(status: MemberStatus, roles: &[&str]) -> MemberAccess {
    MemberAccess { status, roles: roles.iter().map(|r| r.to_string()).collect(), entitlements: Entitlements::new() }
}

fn mapping() -> Mapping {
    Mapping { group_prefix: "entitle-".into(), enterprise: [("department".to_string(), "dept".to_string())].into() }
}

fn scim_user(id: &str, name: &str, ext: Option<&str>, active: bool) -> ScimUser {
    ScimUser { id: id.into(), user_name: name.into(), external_id: ext.map(str::to_string), active, enterprise: BTreeMap::new(), version: Some("W/\"1\"".into()) }
}

#[test]
fn desired_users_follow_the_member_status() {
    let m = member("u1", "u1@x.com", &[("dept", "Sales")], false);
    let d = desired_user(&mapping(), &m, &access(MemberStatus::Active, &["admin", "member"]));
    assert!(d.present && d.active);
    assert_eq!(d.groups, ["entitle-admin".to_string(), "entitle-member".to_string()].into());
    assert_eq!(d.enterprise.get("department").map(String::as_str), Some("Sales"));
    let suspended = desired_user(&mapping(), &m, &access(MemberStatus::Suspended, &[]));
    assert!(suspended.present && !suspended.active && suspended.groups.is_empty());
    let gone = desired_user(&mapping(), &member("u1", "u1@x.com", &[], true), &access(MemberStatus::Deprovisioned, &[]));
    assert!(!gone.present && !gone.active);
}

#[test]
fn the_user_step_creates_only_with_access_and_deletes_only_on_deprovision() {
    let m = member("u1", "u1@x.com", &[], false);
    let active = desired_user(&mapping(), &m, &access(MemberStatus::Active, &["member"]));
    let pending = desired_user(&mapping(), &m, &access(MemberStatus::PendingSeat, &[]));
    let gone = desired_user(&mapping(), &member("u1", "u1@x.com", &[], true), &access(MemberStatus::Deprovisioned, &[]));
    let UserStep::Create(body) = user_step(&active, None) else { panic!("create") };
    assert_eq!(body["externalId"], "u1");
    assert_eq!(body["userName"], "u1@x.com");
    assert_eq!(body["active"], true);
    assert_eq!(user_step(&pending, None), UserStep::Nothing);
    assert_eq!(user_step(&gone, None), UserStep::Nothing);
    let existing = scim_user("s1", "u1@x.com", Some("u1"), true);
    assert_eq!(user_step(&active, Some(&existing)), UserStep::Nothing);
    assert_eq!(user_step(&pending, Some(&existing)), UserStep::Patch(vec![PatchOp::replace("active", json!(false))]));
    assert_eq!(user_step(&gone, Some(&existing)), UserStep::Delete);
}

#[test]
fn an_adopted_user_gets_its_external_id_and_attributes() {
    let m = member("u1", "u1@x.com", &[("dept", "Ops")], false);
    let d = desired_user(&mapping(), &m, &access(MemberStatus::Active, &[]));
    let found = scim_user("s9", "u1@x.com", None, false);
    let ops: Vec<serde_json::Value> = patch_ops(&d, &found).iter().map(|o| serde_json::to_value(o).unwrap()).collect();
    assert!(ops.contains(&json!({"op": "replace", "path": "externalId", "value": "u1"})));
    assert!(ops.contains(&json!({"op": "replace", "path": "active", "value": true})));
    assert!(ops.contains(&json!({"op": "replace", "path": format!("{ENTERPRISE_SCHEMA}:department"), "value": "Ops"})));
    assert_eq!(ops.len(), 3);
}

#[test]
fn group_changes_touch_managed_groups_only() {
    let managed = managed_groups(&mapping(), &["admin".into(), "member".into(), "viewer".into()]);
    let m = member("u1", "u1@x.com", &[], false);
    let d = desired_user(&mapping(), &m, &access(MemberStatus::Active, &["member"]));
    let member_of: BTreeSet<String> = ["entitle-admin".to_string(), "hand-made".to_string()].into();
    let (add, remove) = group_changes(&d, &MemberOf::known(member_of), &managed);
    assert_eq!(add, vec!["entitle-member".to_string()]);
    assert_eq!(remove, vec!["entitle-admin".to_string()]);
    // A target that cannot say: never taken for "in none".
    let (add, remove) = group_changes(&d, &MemberOf::unknown(&managed), &managed);
    assert_eq!(add, vec!["entitle-member".to_string()]);
    assert_eq!(remove, vec!["entitle-admin".to_string(), "entitle-viewer".to_string()]);
}

#[test]
fn membership_changes_take_the_form_the_target_takes() {
    let change = |add: bool, u: &str| GroupChange { group: "g".into(), add, scim_user: u.into() };
    let (a, b, c) = (change(true, "u1"), change(false, "u2"), change(false, "u3"));
    let as_json = |ops: Vec<PatchOp>| -> Vec<serde_json::Value> { ops.iter().map(|o| serde_json::to_value(o).unwrap()).collect() };
    let one_each = as_json(membership_ops_for(&[&a, &b, &c], RemoveForm::OnePerOperation));
    assert_eq!(one_each[1..], [json!({"op": "remove", "path": "members[value eq \"u2\"]"}), json!({"op": "remove", "path": "members[value eq \"u3\"]"})]);
    let sf = as_json(membership_ops_for(&[&a, &b, &c], RemoveForm::MembersObject));
    assert_eq!(
        sf,
        [json!({"op": "add", "path": "members", "value": {"members": [{"value": "u1"}]}}), json!({"op": "remove", "path": "members", "value": {"members": [{"value": "u2"}, {"value": "u3"}]}})]
    );
}

#[test]
fn a_target_that_deactivates_keeps_a_removed_members_user_inactive() {
    let target = |profile: ProfileName, delete_users: bool| Target {
        tenant_id: crate::core::ids::TenantId::parse("t").unwrap(),
        target_id: crate::core::ids::TargetId::parse("x").unwrap(),
        base_url: "https://x.example".into(),
        mapping: Mapping::default(),
        repair_interval_minutes: 60,
        profile,
        delete_users,
        health: Default::default(),
    };
    let gone = member("u1", "Ann.Lee@x.com", &[], true);
    let d = desired_on(&target(ProfileName::Slack, true), &gone, &access(MemberStatus::Deprovisioned, &[]));
    assert!(d.present && !d.active && d.groups.is_empty());
    assert_eq!((d.user_name.as_str(), d.email.as_str()), ("ann.lee", "Ann.Lee@x.com"));
    assert!(!desired_on(&target(ProfileName::Generic, false), &gone, &access(MemberStatus::Deprovisioned, &[])).present);
    assert!(desired_on(&target(ProfileName::GithubEmu, false), &gone, &access(MemberStatus::Deprovisioned, &[])).present);
    assert!(!desired_on(&target(ProfileName::GithubEmu, true), &gone, &access(MemberStatus::Deprovisioned, &[])).present, "configured to delete");
    // A target that rewrites userNames is never sent one again.
    let gh = desired_on(&target(ProfileName::GithubEmu, false), &member("u1", "a@x.com", &[], false), &access(MemberStatus::Active, &[]));
    assert!(patch_ops(&gh, &scim_user("s1", "a-x-com_acme", Some("u1"), true)).is_empty());
}

#[test]
fn filters_and_member_paths_quote_values() {
    assert_eq!(filter_eq("userName", "a\"b@x.com"), r#"userName eq "a\"b@x.com""#);
    assert_eq!(remove_member_op("id1").path, r#"members[value eq "id1"]"#);
}

#[test]
fn repair_matches_users_and_finds_strangers_in_managed_groups() {
    let managed = managed_groups(&Mapping::default(), &["admin".into(), "member".into()]);
    let a = desired_user(&Mapping::default(), &member("a", "a@x.com", &[], false), &access(MemberStatus::Active, &["admin"]));
    let b = desired_user(&Mapping::default(), &member("b", "B@x.com", &[], false), &access(MemberStatus::Active, &["member"]));
    let c = desired_user(&Mapping::default(), &member("c", "c@x.com", &[], false), &access(MemberStatus::Active, &["member"]));
    let users = vec![scim_user("s-a", "a@x.com", Some("a"), true), scim_user("s-b", "b@x.com", None, true), scim_user("s-z", "z@x.com", None, true)];
    let groups = vec![
        ScimGroup { id: "g1".into(), name: "admin".into(), members: ["s-a".to_string(), "s-z".to_string()].into() },
        ScimGroup { id: "g2".into(), name: "theirs".into(), members: ["s-z".to_string()].into() },
    ];
    let plan = repair_plan(vec![a.clone(), b, c], &users, Some(&groups), &managed);
    assert_eq!(plan.members[0].1.as_ref().map(|u| u.id.as_str()), Some("s-a"));
    assert_eq!(plan.members[0].2, Some(MemberOf::known(["admin".to_string()].into())));
    assert_eq!(plan.members[1].1.as_ref().map(|u| u.id.as_str()), Some("s-b"), "matched on userName, case-insensitively");
    assert!(plan.members[2].1.is_none());
    assert_eq!(plan.strangers, vec![("g1".to_string(), "admin".to_string(), "s-z".to_string())], "only managed groups are cleaned");
    // Without the groups' members, groups are unknown and strangers unseen.
    let blind = repair_plan(vec![a], &users, None, &managed);
    assert_eq!((blind.members[0].2.clone(), blind.strangers.len()), (None, 0));
}

#[test]
fn a_case_variant_user_name_never_adopts_another_members_user() {
    let managed = managed_groups(&Mapping::default(), &["admin".into(), "member".into()]);
    let admin = desired_user(&Mapping::default(), &member("u1", "admin@corp.example", &[], false), &access(MemberStatus::Active, &["admin"]));
    let twin = desired_user(&Mapping::default(), &member("u2", "ADMIN@corp.example", &[], false), &access(MemberStatus::Active, &["member"]));
    let users = vec![scim_user("s-1", "admin@corp.example", Some("u1"), true)];
    let groups = vec![ScimGroup { id: "g1".into(), name: "admin".into(), members: ["s-1".to_string()].into() }];
    let plan = repair_plan(vec![admin.clone(), twin.clone()], &users, Some(&groups), &managed);
    assert_eq!(plan.members.len(), 1, "only u1 is matched to s-1");
    assert_eq!(plan.members[0].0.user_id.as_str(), "u1");
    assert_eq!(plan.conflicts.len(), 1);
    assert_eq!(plan.conflicts[0].0.user_id.as_str(), "u2");
    assert!(plan.conflicts[0].1.contains("externalId \"u1\""), "{}", plan.conflicts[0].1);
    assert!(plan.strangers.is_empty(), "s-1 is u1's and stays in its group");
    // Alone (u1 not a member here), u2 still does not take s-1 over.
    let plan = repair_plan(vec![twin.clone()], &users, Some(&groups), &managed);
    assert!(plan.members.is_empty() && plan.conflicts.len() == 1);
    // A user another system gave an externalId is not adopted either; one without is.
    assert!(owned_by_another(&twin, &scim_user("s-9", "admin@corp.example", Some("okta-77"), true)).is_some());
    assert!(owned_by_another(&twin, &scim_user("s-9", "admin@corp.example", None, true)).is_none());
    assert!(owned_by_another(&twin, &scim_user("s-9", "admin@corp.example", Some("u2"), true)).is_none());
}

#[test]
fn retries_back_off_with_jitter_and_honour_retry_after() {
    assert_eq!(retry_delay(0, None, 0.0), Duration::from_millis(100));
    assert_eq!(retry_delay(0, None, 1.0), Duration::from_millis(200));
    assert_eq!(retry_delay(3, None, 1.0), Duration::from_millis(1600));
    assert_eq!(retry_delay(30, None, 1.0), Duration::from_secs(5));
    assert_eq!(retry_delay(1, Some(Duration::from_secs(7)), 0.3), Duration::from_secs(7));
    let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
    assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
    assert_eq!(parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now), Some(Duration::from_secs(30)));
    assert_eq!(parse_retry_after("Wed, 31 Dec 2025 00:00:30 GMT", now), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("soon", now), None);
}

#[test]
fn failures_slow_down_then_quarantine_and_success_resumes() {
    let policy = Policy { quarantine_after: 3, retry_base_secs: 10, retry_max_secs: 15, quarantine_retry_secs: 600 };
    let t0 = Utc::now();
    let (h1, s1) = Health::default().on_failure(&policy, t0, "connection refused");
    assert_eq!((h1.failures, s1), (1, None));
    assert_eq!(h1.retry_at, Some(t0 + Span::seconds(10)));
    assert!(!h1.may_attempt(t0) && h1.may_attempt(t0 + Span::seconds(10)));
    let (h2, _) = h1.on_failure(&policy, t0, "503");
    assert_eq!(h2.retry_at, Some(t0 + Span::seconds(15)), "capped");
    let (h3, s3) = h2.on_failure(&policy, t0, "503");
    assert_eq!(s3, Some(Standing::Quarantined));
    assert_eq!(h3.retry_at, Some(t0 + Span::seconds(600)));
    assert_eq!(h3.first_failure_at, Some(t0));
    let (h4, s4) = h3.on_failure(&policy, t0, "503");
    assert_eq!(s4, None, "announced once");
    assert!(h4.quarantined());
    let (h5, s5) = h4.on_success(t0);
    assert_eq!(s5, Some(Standing::Resumed));
    assert_eq!(h5.failures, 0);
    assert!(h5.may_attempt(t0) && !h5.quarantined());
    assert_eq!(Health::default().on_success(t0).1, None);
}

#[test]
fn an_attempt_that_never_finished_counts_as_a_failure() {
    let policy = Policy { quarantine_after: 2, ..Policy::default() };
    let t0 = Utc::now();
    assert!(Health::default().unfinished_attempt(&policy, t0).is_none());
    let started = Health { attempt_started_at: Some(t0), ..Health::default() };
    let (h1, s1) = started.unfinished_attempt(&policy, t0 + Span::seconds(90)).unwrap();
    assert_eq!((h1.failures, s1, h1.attempt_started_at), (1, None, None));
    assert!(h1.last_error.as_deref().unwrap().contains("did not finish"));
    let (h2, s2) = Health { attempt_started_at: Some(t0), ..h1 }.unfinished_attempt(&policy, t0).unwrap();
    assert_eq!((h2.failures, s2), (2, Some(Standing::Quarantined)), "crashes count towards quarantine like any failure");
    assert_eq!(h2.on_success(t0).0.attempt_started_at, None);
}

/// Applies one round of the planner to a target modelled as data.
fn apply(d: &DesiredUser, user: Option<ScimUser>, member_of: BTreeSet<String>, managed: &BTreeSet<String>) -> (Option<ScimUser>, BTreeSet<String>) {
    let user = match user_step(d, user.as_ref()) {
        UserStep::Nothing => user,
        UserStep::Delete => return (None, BTreeSet::new()),
        UserStep::Create(body) => Some(ScimUser {
            id: "new".into(),
            version: None,
            ..ScimUser::from_json(&{
                let mut b = body;
                b["id"] = "new".into();
                b
            })
            .unwrap()
        }),
        UserStep::Patch(ops) => {
            let mut u = user.unwrap();
            for op in ops {
                match op.path.as_str() {
                    "userName" => u.user_name = op.value.as_ref().unwrap().as_str().unwrap().into(),
                    "externalId" => u.external_id = op.value.as_ref().unwrap().as_str().map(str::to_string),
                    "active" => u.active = op.value.as_ref().unwrap().as_bool().unwrap(),
                    p => {
                        u.enterprise.insert(p.rsplit(':').next().unwrap().into(), op.value.as_ref().unwrap().as_str().unwrap().into());
                    }
                }
            }
            Some(u)
        }
    };
    let Some(user) = user else { return (None, member_of) };
    let (join, leave) = group_changes(d, &MemberOf::known(member_of.clone()), managed);
    let mut groups = member_of;
    groups.extend(join);
    for g in leave {
        groups.remove(&g);
    }
    (Some(user), groups)
}

proptest::proptest! {
    /// From any state of the target, one round reaches what desired
    /// access says, a second round changes nothing, and what Entitle
    /// does not manage stays as it was.
    #[test]
    fn one_round_converges_and_a_second_changes_nothing(
        present: bool, active: bool, want in proptest::collection::btree_set(0usize..3, 0..3),
        exists: bool, was_active: bool, ext in proptest::option::of(0usize..2), had in proptest::collection::btree_set(0usize..4, 0..4),
    ) {
        let names = ["entitle-admin", "entitle-member", "entitle-viewer", "hand-made"];
        let managed: BTreeSet<String> = names[..3].iter().map(|s| s.to_string()).collect();
        let d = DesiredUser {
            user_id: UserId::parse("u1").unwrap(),
            user_name: "u1@x.com".into(),
            email: "u1@x.com".into(),
            keep_user_name: false,
            present,
            active: present && active,
            groups: if present && active { want.iter().map(|i| names[*i].to_string()).collect() } else { BTreeSet::new() },
            enterprise: [("department".to_string(), "Ops".to_string())].into(),
        };
        let user = exists.then(|| ScimUser { id: "s1".into(), user_name: "u1@x.com".into(), external_id: ext.map(|e| ["u1", "other"][e].to_string()), active: was_active, enterprise: BTreeMap::new(), version: None });
        let member_of: BTreeSet<String> = if exists { had.iter().map(|i| names[*i].to_string()).collect() } else { BTreeSet::new() };
        let (after, groups) = apply(&d, user, member_of.clone(), &managed);
        match &after {
            None => proptest::prop_assert!(!d.present || (!d.active && !exists)),
            Some(u) => {
                proptest::prop_assert!(d.present);
                proptest::prop_assert_eq!((u.active, u.external_id.as_deref()), (d.active, Some("u1")));
                proptest::prop_assert_eq!(u.enterprise.get("department").map(String::as_str), Some("Ops"));
                let held: BTreeSet<String> = groups.intersection(&managed).cloned().collect();
                proptest::prop_assert_eq!(&held, &d.groups);
                proptest::prop_assert_eq!(groups.contains("hand-made"), member_of.contains("hand-made"));
                proptest::prop_assert_eq!(user_step(&d, Some(u)), UserStep::Nothing);
                let (join, leave) = group_changes(&d, &MemberOf::known(groups.clone()), &managed);
                proptest::prop_assert!(join.is_empty() && leave.is_empty());
            }
        }
    }
}

#[test]
fn configurations_name_every_problem_and_hide_the_token() {
    let roles = vec!["admin".to_string()];
    let good = TargetConfig {
        base_url: "https://idp.example.com/scim/v2".into(),
        token: "s3cret".into(),
        mapping: mapping(),
        repair_interval_minutes: None,
        profile: ProfileName::Generic,
        delete_users: false,
    };
    assert!(good.problems(&roles, EgressPolicy::Public).is_empty());
    assert!(!format!("{good:?}").contains("s3cret"));
    let http = TargetConfig { base_url: "http://127.0.0.1:1/x".into(), ..good.clone() };
    assert_eq!(http.problems(&roles, EgressPolicy::Public).len(), 3, "scheme, port and a loopback host");
    assert!(http.problems(&roles, EgressPolicy::Local).is_empty());
    let bad = TargetConfig {
        base_url: "https://x/?q".into(),
        token: "".into(),
        mapping: Mapping { group_prefix: "a\"".into(), enterprise: [("manager".to_string(), "m".to_string())].into() },
        repair_interval_minutes: Some(1),
        profile: ProfileName::Slack,
        delete_users: false,
    };
    assert_eq!(bad.problems(&roles, EgressPolicy::Public).len(), 6, "{:?}", bad.problems(&roles, EgressPolicy::Public));
}

#[test]
fn a_groups_batch_adds_in_one_operation_and_removes_in_one_filter() {
    let change = |add: bool, u: &str| GroupChange { group: "entitle-member".into(), add, scim_user: u.into() };
    let (a, b, c, d) = (change(true, "u1"), change(false, "u2"), change(true, "u3"), change(false, "u\"4"));
    let ops = membership_ops(&[&a, &b, &c, &d]);
    assert_eq!(ops.len(), 2);
    // Serialised exactly as the targets have read them.
    assert_eq!(serde_json::to_value(&ops[0]).unwrap(), serde_json::json!({"op": "add", "path": "members", "value": [{"value": "u1"}, {"value": "u3"}]}));
    assert_eq!(serde_json::to_value(&ops[1]).unwrap(), serde_json::json!({"op": "remove", "path": "members[value eq \"u2\" or value eq \"u\\\"4\"]"}));
    assert_eq!(membership_ops(&[&b])[0], remove_member_op("u2"), "one removal is the single-member form");
    assert!(membership_ops(&[]).is_empty());
}

#[test]
fn removal_requests_are_sized_by_how_long_the_last_one_took() {
    // 100 removals took 7.3 s (a group of 10,000 on scim2-server): about half.
    assert_eq!(next_removal_batch(100, Duration::from_millis(7300), 100), 54);
    // Quick answers grow the size twofold a step, up to the maximum.
    assert_eq!(next_removal_batch(10, Duration::from_millis(100), 100), 20);
    assert_eq!(next_removal_batch(80, Duration::from_millis(100), 100), 100);
    // Never below one, however slow; an instant answer does not divide by zero.
    assert_eq!(next_removal_batch(1, Duration::from_secs(30), 100), 1);
    assert_eq!(next_removal_batch(1, Duration::ZERO, 100), 2);
    // At the aim, the size holds.
    assert_eq!(next_removal_batch(40, REMOVALS_AIM, 100), 40);
}
