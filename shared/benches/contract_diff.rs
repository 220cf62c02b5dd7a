//! Parse and diff a 1,000-clause contract: what amend does for every
//! amendment (validate the new document, compute the clause-level change set,
//! and check it applies). Run with `make bench`; docs/benchmarks.md has the figures.

use criterion::{criterion_group, criterion_main, Criterion};
use entitle::core::contract::{apply, diff, evaluate, AmendmentForm, ContractDocument};
use entitle::core::ids::ContractId;
use entitle::core::model::LicensingModel;
use serde_json::{json, Map, Value};
use std::hint::black_box;

/// 600 unmapped clauses, 300 named users, 100 role mappings, plus the term,
/// tier, seats and add-ons: a little over 1,000 clauses.
fn contract() -> Value {
    let mut doc = Map::new();
    doc.insert("contract_id".into(), json!("k-big"));
    doc.insert("tenant_id".into(), json!("big"));
    doc.insert("term".into(), json!({"start": "2026-01-01T00:00:00Z", "end": "2029-01-01T00:00:00Z", "auto_renew": true}));
    doc.insert("tier".into(), json!("enterprise"));
    doc.insert("seats".into(), json!(5000));
    doc.insert("add_ons".into(), json!(["sso", "extra_projects"]));
    let users: Vec<Value> =
        (0..300).map(|i| json!({"id": format!("user{i:04}"), "email": format!("user{i}@big.example"), "roles": if i % 10 == 0 { json!(["admin"]) } else { json!(["member"]) }})).collect();
    doc.insert("named_users".into(), Value::Array(users));
    let mappings: Map<String, Value> = (0..100).map(|i| (format!("group{i:03}"), json!(["viewer"]))).collect();
    doc.insert("role_mappings".into(), Value::Object(mappings));
    for i in 0..600 {
        doc.insert(format!("clause{i:04}"), json!({"text": format!("Clause {i} of the master agreement, as negotiated."), "version": 1, "owner": "legal"}));
    }
    Value::Object(doc)
}

fn amended(doc: &Value) -> Value {
    let mut d = doc.clone();
    d["seats"] = json!(5500);
    d["add_ons"] = json!(["sso"]);
    for i in (0..600).step_by(20) {
        d[format!("clause{i:04}")]["version"] = json!(2);
    }
    let users = d["named_users"].as_array_mut().unwrap();
    users.retain(|u| u["id"] != "user0007");
    d["role_mappings"]["group005"] = json!(["viewer", "billing-admin"]);
    d
}

fn bench(c: &mut Criterion) {
    let model = LicensingModel::default_model();
    let raw = contract();
    let (_, current) = ContractDocument::parse(&raw, &model).unwrap();
    let new = amended(&current);
    let id = ContractId::parse("k-big").unwrap();
    assert_eq!(evaluate(&model, &current, &id, &AmendmentForm::Document(new.clone())).unwrap().1.len(), 34, "30 clauses, seats, an add-on, a named user, a role mapping");

    c.bench_function("contract/parse_1000_clauses", |b| b.iter(|| ContractDocument::parse(black_box(&raw), &model).unwrap()));
    c.bench_function("contract/diff_1000_clauses", |b| b.iter(|| diff(black_box(&current), black_box(&new))));
    c.bench_function("contract/amend_1000_clauses (parse + validate + diff + apply check)", |b| {
        b.iter(|| {
            let (normal, changes) = evaluate(&model, black_box(&current), &id, &AmendmentForm::Document(new.clone())).unwrap();
            assert_eq!(apply(&current, &changes).unwrap(), normal);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
