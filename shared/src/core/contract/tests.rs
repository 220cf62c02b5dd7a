//! Unit and property tests of the contract core.

use super::*;
use crate::core::access::*;
use crate::core::ids::*;

use crate::core::model::LicensingModel;

use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

fn base() -> Value {
    json!({
        "contract_id": "k-1", "tenant_id": "acme",
        "term": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z", "auto_renew": true},
        "tier": "team", "seats": 50, "add_ons": ["extra_projects"],
        "named_users": [{"id": "u2", "email": "u2@acme.test", "roles": ["member"]}, {"id": "u1", "email": "u1@acme.test", "roles": ["admin"]}],
        "role_mappings": {"finance": ["billing-admin"]},
        "support": {"level": "standard", "hours": "9-5"}
    })
}

fn model() -> LicensingModel {
    LicensingModel::default_model()
}

fn normal() -> Value {
    ContractDocument::parse(&base(), &model()).unwrap().1
}

fn summaries(c: &[ClauseChange]) -> Vec<String> {
    c.iter().map(|c| c.summary.clone()).collect()
}

/// A contract's license names the event it came from `<contract_id>-v<version>`:
/// an event id holds the longest contract id and the largest version.
#[test]
fn the_longest_contract_id_at_the_largest_version_names_its_event() {
    let mut doc = base();
    doc["contract_id"] = json!("k".repeat(ContractId::MAX_LEN));
    let (doc, _) = ContractDocument::parse(&doc, &model()).unwrap();
    let at = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z").unwrap().with_timezone(&chrono::Utc);
    let license = doc.license(u64::MAX, at);
    assert_eq!(license.last_event_id.as_str().len(), ContractId::MAX_LEN + "-v".len() + u64::MAX.to_string().len());
    assert!(EventId::MAX_LEN >= license.last_event_id.as_str().len());
}

#[test]
fn documents_keep_unmapped_clauses_and_normalise() {
    let (doc, v) = ContractDocument::parse(&base(), &model()).unwrap();
    assert_eq!(doc.clauses["support"]["level"], "standard");
    assert_eq!(v["named_users"][0]["id"], "u1", "named users sorted by id");
    assert_eq!(unflatten(&v, &flatten(&v)), v, "flatten/unflatten round trip");
}

#[test]
fn every_document_problem_is_named() {
    let mut bad = base();
    bad["seats"] = json!(-5);
    bad["term"]["end"] = json!("2025-01-01T00:00:00Z");
    bad["tier"] = json!("gold");
    bad["named_users"][0]["roles"] = json!(["superuser"]);
    let problems = ContractDocument::parse(&bad, &model()).unwrap_err();
    let text = problems.join("; ");
    for needle in ["seats: must not be below 0", "term.end", "tier: unknown tier", "superuser"] {
        assert!(text.contains(needle), "{text}");
    }
    let mut wrong_type = base();
    wrong_type["seats"] = json!("many");
    let problems = ContractDocument::parse(&wrong_type, &model()).unwrap_err();
    assert!(problems[0].starts_with("seats:"), "{problems:?}");
}

#[test]
fn patches_cannot_blow_up_the_document() {
    let (m, id) = (model(), ContractId::parse("k-1").unwrap());
    // Each copy doubles the document: 40 of them would make 2^40 copies.
    let mut ops = vec![json!({"op": "add", "path": "/blob", "value": ["x"]})];
    for _ in 0..40 {
        ops.push(json!({"op": "copy", "from": "/blob", "path": "/blob/-"}));
    }
    let started = std::time::Instant::now();
    let problems = evaluate(&m, &normal(), &id, &AmendmentForm::Patch(Value::Array(ops))).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    let text = problems.join("; ");
    assert!(text.contains("262144 bytes") && text.contains("not applied"), "{text}");
    let too_many: Vec<Value> = (0..=MAX_PATCH_OPERATIONS).map(|_| json!({"op": "test", "path": "/tier", "value": "business"})).collect();
    let problems = evaluate(&m, &normal(), &id, &AmendmentForm::Patch(Value::Array(too_many))).unwrap_err();
    assert_eq!(problems, vec![format!("patch: 501 operations, more than the 500 allowed")]);
    // A few copies within the budget are fine.
    let ok = json!([{"op": "copy", "from": "/support", "path": "/support_copy"}]);
    assert!(evaluate(&m, &normal(), &id, &AmendmentForm::Patch(ok)).is_ok());
}

#[test]
fn the_three_forms_give_one_change_set() {
    let m = model();
    let cur = normal();
    let id = ContractId::parse("k-1").unwrap();
    let patch = AmendmentForm::Patch(json!([
        {"op": "replace", "path": "/seats", "value": 75},
        {"op": "replace", "path": "/tier", "value": "business"},
        {"op": "add", "path": "/add_ons/-", "value": "sso"},
        {"op": "replace", "path": "/term/end", "value": "2027-06-30T00:00:00Z"},
        {"op": "replace", "path": "/support/level", "value": "premium"}
    ]));
    let mut full = cur.clone();
    full["seats"] = json!(75);
    full["tier"] = json!("business");
    full["add_ons"] = json!(["sso", "extra_projects"]);
    full["term"]["end"] = json!("2027-06-30T00:00:00+00:00");
    full["support"]["level"] = json!("premium");
    let record = AmendmentForm::Record(
        serde_json::from_value(json!({"parent_record_id": "k-1", "properties": {
            "seats": {"type": "number", "value": 75},
            "tier": {"type": "string", "value": "business"},
            "addOns": {"type": "array", "value": ["extra_projects", "sso"]},
            "termEndDate": {"type": "date", "value": "2027-06-30"},
            "support": {"type": "object", "value": {"level": "premium", "hours": "9-5"}}
        }}))
        .unwrap(),
    );
    let a = evaluate(&m, &cur, &id, &patch).unwrap().1;
    let b = evaluate(&m, &cur, &id, &AmendmentForm::Document(full)).unwrap().1;
    let c = evaluate(&m, &cur, &id, &record).unwrap().1;
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(
        summaries(&a),
        vec![
            "add-on sso added",
            "seats 50 -> 75",
            "clause support {\"hours\":\"9-5\",\"level\":\"standard\"} -> {\"hours\":\"9-5\",\"level\":\"premium\"}",
            "term.end 2027-01-01T00:00:00Z -> 2027-06-30T00:00:00Z",
            "tier team -> business"
        ]
    );
}

#[test]
fn invalid_amendments_name_every_problem() {
    let m = model();
    let id = ContractId::parse("k-1").unwrap();
    let patch = AmendmentForm::Patch(json!([
        {"op": "frobnicate", "path": "/seats", "value": 1},
        {"op": "remove", "path": "/no/such/clause"},
        {"op": "replace", "path": "/seats", "value": -1}
    ]));
    let problems = evaluate(&m, &normal(), &id, &patch).unwrap_err();
    assert!(problems[0].starts_with("patch[0]") && problems[0].contains("frobnicate"), "{problems:?}");
    assert!(problems[1].starts_with("patch[1]") && problems[1].contains("/no/such/clause"), "{problems:?}");
    // The patch itself applied; the document it produced is invalid.
    let patch = AmendmentForm::Patch(json!([{"op": "replace", "path": "/seats", "value": -1}, {"op": "replace", "path": "/term/end", "value": "2025-01-01T00:00:00Z"}]));
    let problems = evaluate(&m, &normal(), &id, &patch).unwrap_err().join("; ");
    assert!(problems.contains("seats: must not be below 0") && problems.contains("term.end"), "{problems}");
    let moved = AmendmentForm::Patch(json!([{"op": "replace", "path": "/tenant_id", "value": "other"}]));
    assert!(evaluate(&m, &normal(), &id, &moved).unwrap_err()[0].contains("tenant_id"));
    let nothing = AmendmentForm::Patch(json!([]));
    assert!(evaluate(&m, &normal(), &id, &nothing).unwrap_err()[0].contains("no clause"));
    let other_parent = AmendmentForm::Record(RecordAmendment { parent_record_id: ContractId::parse("k-2").unwrap(), properties: BTreeMap::new() });
    assert!(evaluate(&m, &normal(), &id, &other_parent).unwrap_err()[0].contains("parent_record_id"));
}

#[test]
fn reversal_conflicts_name_the_clauses() {
    let m = model();
    let id = ContractId::parse("k-1").unwrap();
    let v1 = normal();
    let (v2, first) = evaluate(&m, &v1, &id, &AmendmentForm::Patch(json!([{"op": "replace", "path": "/seats", "value": 60}, {"op": "add", "path": "/add_ons/-", "value": "sso"}]))).unwrap();
    let (v3, _) = evaluate(&m, &v2, &id, &AmendmentForm::Patch(json!([{"op": "replace", "path": "/tier", "value": "business"}]))).unwrap();
    // Reversing the first keeps the later, unrelated change.
    let reversed = apply(&v3, &invert(&first)).unwrap();
    assert_eq!(reversed["seats"], 50);
    assert_eq!(reversed["tier"], "business");
    assert_eq!(reversed["add_ons"], json!(["extra_projects"]));
    // A later change to the same clause makes the reversal a conflict.
    let (v3b, _) = evaluate(&m, &v2, &id, &AmendmentForm::Patch(json!([{"op": "replace", "path": "/seats", "value": 70}]))).unwrap();
    assert_eq!(apply(&v3b, &invert(&first)).unwrap_err(), vec![ClauseKey { clause: "seats".into(), key: None }]);
}

#[test]
fn review_rules_fire_on_risky_changes() {
    let m = model();
    let (old, _) = ContractDocument::parse(&base(), &m).unwrap();
    let members: Vec<MemberItem> = (0..45)
        .map(|i| Member {
            user_id: UserId::parse(format!("u{i}")).unwrap(),
            email: format!("u{i}@acme.test"),
            groups: BTreeSet::new(),
            attributes: BTreeMap::new(),
            seq: i + 1,
            removed: false,
            suspended: false,
        })
        .map(|m| MemberItem::new(m, MemberAccess::without_access(MemberStatus::PendingSeat), &crate::core::model::LicensingModel::default_model()))
        .collect();
    let mut new = old.clone();
    new.seats = 30;
    new.tier = "free".into();
    new.named_users.retain(|u| u.id.as_str() != "u1");
    let at = "2026-06-01T00:00:00Z".parse().unwrap();
    let input = ImpactInput { model: &m, other_licenses: &[], other_rules: &[], old: Some(&old), new: &new, version: 2, as_of: at, members: &members };
    let imp = impact(input);
    let fired = review(&m, &old, &new, &imp).join("; ");
    for rule in ["max_seat_reduction_percent", "seat_reduction_below_usage", "privileged_role_removal", "tier_downgrade"] {
        assert!(fired.contains(rule), "{rule} in {fired}");
    }
    let mut mild = old.clone();
    mild.seats = 45;
    let imp = impact(ImpactInput { new: &mild, ..input });
    assert!(review(&m, &old, &mild, &imp).is_empty());
    assert_eq!(imp.members.len(), 0, "45 seats still seat all 45 members");
}

fn arb_amendment() -> impl Strategy<Value = Vec<Value>> {
    let op = prop_oneof![
        (0i64..500).prop_map(|s| json!({"op": "replace", "path": "/seats", "value": s})),
        prop::sample::select(vec!["free", "team", "business", "enterprise"]).prop_map(|t| json!({"op": "replace", "path": "/tier", "value": t})),
        Just(json!({"op": "add", "path": "/add_ons/-", "value": "sso"})),
        Just(json!({"op": "remove", "path": "/add_ons/0"})),
        (0u32..28).prop_map(|d| json!({"op": "replace", "path": "/term/end", "value": format!("2027-02-{:02}T00:00:00Z", d + 1)})),
        any::<bool>().prop_map(|b| json!({"op": "replace", "path": "/term/auto_renew", "value": b})),
        "[a-z]{1,8}".prop_map(|s| json!({"op": "add", "path": "/support/level", "value": s})),
        "[a-z]{1,8}".prop_map(|s| json!({"op": "add", "path": format!("/{s}x"), "value": {"text": s}})),
        Just(json!({"op": "remove", "path": "/support"})),
        Just(json!({"op": "remove", "path": "/named_users/0"})),
        "[a-z]{1,6}".prop_map(|g| json!({"op": "add", "path": format!("/role_mappings/{g}"), "value": ["viewer"]})),
        (1u32..9).prop_map(|i| json!({"op": "add", "path": "/named_users/-", "value": {"id": format!("n{i}"), "email": format!("n{i}@acme.test"), "roles": ["admin"]}})),
    ];
    prop::collection::vec(op, 1..6)
}

/// Random valid contracts: any tier, seats, add-ons, named users, role
/// mappings and unmapped clauses.
fn arb_contract() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["free", "team", "business", "enterprise"]),
        0i64..1000,
        prop::sample::subsequence(vec!["sso", "extra_projects"], 0..=2),
        prop::collection::btree_map("[a-z]{1,5}", prop::sample::subsequence(vec!["admin", "viewer", "member", "owner"], 0..=2), 0..4),
        prop::collection::btree_map("[a-z]{1,8}", prop_oneof!["[a-z ]{0,12}".prop_map(Value::from), any::<i32>().prop_map(Value::from), any::<bool>().prop_map(Value::from)], 0..5),
        any::<bool>(),
    )
        .prop_map(|(tier, seats, add_ons, users, clauses, auto_renew)| {
            let mut doc = json!({
                "contract_id": "k-1", "tenant_id": "acme",
                "term": {"start": "2026-01-01T00:00:00Z", "end": "2027-01-01T00:00:00Z", "auto_renew": auto_renew},
                "tier": tier, "seats": seats, "add_ons": add_ons,
                "named_users": users.iter().map(|(id, roles)| json!({"id": id, "email": format!("{id}@acme.test"), "roles": roles})).collect::<Vec<_>>(),
                "role_mappings": {"finance": ["billing-admin"]},
                "support": {"level": "standard"}
            });
            for (name, value) in clauses {
                if doc.get(&name).is_none() {
                    doc[format!("x{name}")] = value;
                }
            }
            ContractDocument::parse(&doc, &LicensingModel::default_model()).expect("generated contracts are valid").1
        })
}

proptest! {
    #[test]
    fn applying_then_reversing_gives_back_the_original(original in arb_contract(), ops in arb_amendment()) {
        let m = model();
        let id = ContractId::parse("k-1").unwrap();
        // Only valid amendments are of interest; proptest fails the test if
        // too many generated ones are not (so it cannot pass vacuously).
        let evaluated = evaluate(&m, &original, &id, &AmendmentForm::Patch(Value::Array(ops)));
        prop_assume!(evaluated.is_ok());
        let (amended, changes) = evaluated.unwrap();
        prop_assert_eq!(&apply(&original, &changes).unwrap(), &amended);
        prop_assert_eq!(apply(&amended, &invert(&changes)).unwrap(), original);
    }

    #[test]
    fn the_full_document_form_agrees_with_the_patch_form(original in arb_contract(), ops in arb_amendment()) {
        let m = model();
        let id = ContractId::parse("k-1").unwrap();
        let evaluated = evaluate(&m, &original, &id, &AmendmentForm::Patch(Value::Array(ops)));
        prop_assume!(evaluated.is_ok());
        let (amended, changes) = evaluated.unwrap();
        {
            let (_, again) = evaluate(&m, &original, &id, &AmendmentForm::Document(amended.clone())).unwrap();
            prop_assert_eq!(&again, &changes);
            // And the CLM form, property by property.
            let mut properties = BTreeMap::new();
            let names = [("seats", "seats"), ("tier", "tier"), ("add_ons", "addOns"), ("named_users", "namedUsers"), ("role_mappings", "roleMappings")];
            for (field, prop) in names {
                if amended[field] != original[field] {
                    properties.insert(prop.to_string(), RecordProperty { kind: "value".into(), value: amended[field].clone() });
                }
            }
            for (field, prop) in [("start", "termStartDate"), ("end", "termEndDate"), ("auto_renew", "autoRenew")] {
                if amended["term"][field] != original["term"][field] {
                    properties.insert(prop.to_string(), RecordProperty { kind: "value".into(), value: amended["term"][field].clone() });
                }
            }
            let known = ["contract_id", "tenant_id", "term", "seats", "tier", "add_ons", "named_users", "role_mappings"];
            let keys: BTreeSet<&String> = amended.as_object().unwrap().keys().chain(original.as_object().unwrap().keys()).collect();
            for k in keys {
                if !known.contains(&k.as_str()) && amended.get(k) != original.get(k) {
                    properties.insert(k.clone(), RecordProperty { kind: "value".into(), value: amended.get(k).cloned().unwrap_or(Value::Null) });
                }
            }
            let record = AmendmentForm::Record(RecordAmendment { parent_record_id: id.clone(), properties });
            let (_, from_record) = evaluate(&m, &original, &id, &record).unwrap();
            prop_assert_eq!(from_record, changes);
        }
    }
}
