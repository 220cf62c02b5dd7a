//! A document as a flat map of clauses; change sets between two of them,
//! applied only where each clause still holds what its change started from.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// A clause's address: the clause, and the item within it for keyed clauses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClauseKey {
    pub clause: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub key: Option<String>,
}

impl std::fmt::Display for ClauseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.key {
            Some(k) => write!(f, "{}[{k}]", self.clause),
            None => f.write_str(&self.clause),
        }
    }
}

fn ck(clause: &str, key: Option<&str>) -> ClauseKey {
    ClauseKey { clause: clause.to_string(), key: key.map(str::to_string) }
}

pub(super) const IDENTITY: [&str; 2] = ["contract_id", "tenant_id"];

/// A normalised document as a flat map of clauses.
pub fn flatten(doc: &Value) -> BTreeMap<ClauseKey, Value> {
    let mut out = BTreeMap::new();
    let Some(obj) = doc.as_object() else { return out };
    for (name, value) in obj {
        match name.as_str() {
            n if IDENTITY.contains(&n) => {}
            "term" => {
                for (field, v) in value.as_object().into_iter().flatten() {
                    out.insert(ck(&format!("term.{field}"), None), v.clone());
                }
            }
            "add_ons" => {
                for a in value.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    out.insert(ck("add_ons", Some(a)), Value::Bool(true));
                }
            }
            "named_users" => {
                for u in value.as_array().into_iter().flatten() {
                    let id = u.get("id").and_then(Value::as_str).unwrap_or_default();
                    out.insert(ck("named_users", Some(id)), u.clone());
                }
            }
            "role_mappings" => {
                for (group, roles) in value.as_object().into_iter().flatten() {
                    out.insert(ck("role_mappings", Some(group)), roles.clone());
                }
            }
            _ => {
                out.insert(ck(name, None), value.clone());
            }
        }
    }
    out
}

/// The document a flat map stands for (identity fields from `identity`).
pub fn unflatten(identity: &Value, clauses: &BTreeMap<ClauseKey, Value>) -> Value {
    let mut doc = Map::new();
    for f in IDENTITY {
        doc.insert(f.to_string(), identity.get(f).cloned().unwrap_or(Value::Null));
    }
    let mut term = Map::new();
    let mut add_ons = Vec::new();
    let mut named_users = Vec::new();
    let mut role_mappings = Map::new();
    for (k, v) in clauses {
        match (k.clause.as_str(), &k.key) {
            (c, None) if c.starts_with("term.") => {
                term.insert(c["term.".len()..].to_string(), v.clone());
            }
            ("add_ons", Some(a)) => add_ons.push(Value::String(a.clone())),
            ("named_users", Some(_)) => named_users.push(v.clone()),
            ("role_mappings", Some(g)) => {
                role_mappings.insert(g.clone(), v.clone());
            }
            (c, _) => {
                doc.insert(c.to_string(), v.clone());
            }
        }
    }
    doc.insert("term".into(), Value::Object(term));
    doc.insert("add_ons".into(), Value::Array(add_ons));
    doc.insert("named_users".into(), Value::Array(named_users));
    doc.insert("role_mappings".into(), Value::Object(role_mappings));
    Value::Object(doc)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOp {
    Added,
    Removed,
    Changed,
}

/// One clause-level change: `seats` 50 -> 75, add-on `sso` added, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClauseChange {
    #[serde(flatten)]
    pub at: ClauseKey,
    pub op: ChangeOp,
    pub from: Option<Value>,
    pub to: Option<Value>,
    /// For people: "seats 50 -> 75", "add-on sso added".
    pub summary: String,
}

fn short(v: &Option<Value>) -> String {
    match v {
        None => "none".into(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn change(at: ClauseKey, from: Option<Value>, to: Option<Value>) -> ClauseChange {
    let op = match (&from, &to) {
        (None, _) => ChangeOp::Added,
        (_, None) => ChangeOp::Removed,
        _ => ChangeOp::Changed,
    };
    let what = match (at.clause.as_str(), &at.key) {
        ("add_ons", Some(a)) => format!("add-on {a}"),
        ("named_users", Some(u)) => format!("named user {u}"),
        ("role_mappings", Some(g)) => format!("role mapping {g}"),
        (c, None) if ["tier", "seats"].contains(&c) || c.starts_with("term.") => c.to_string(),
        (c, _) => format!("clause {c}"),
    };
    let summary = match op {
        ChangeOp::Added if at.key.is_some() => format!("{what} added"),
        ChangeOp::Removed if at.key.is_some() => format!("{what} removed"),
        ChangeOp::Added => format!("{what} added: {}", short(&to)),
        ChangeOp::Removed => format!("{what} removed (was {})", short(&from)),
        ChangeOp::Changed => format!("{what} {} -> {}", short(&from), short(&to)),
    };
    ClauseChange { at, op, from, to, summary }
}

/// The clause-level changes from one normalised document to another.
pub fn diff(old: &Value, new: &Value) -> Vec<ClauseChange> {
    let (a, b) = (flatten(old), flatten(new));
    let keys: BTreeSet<&ClauseKey> = a.keys().chain(b.keys()).collect();
    keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).map(|k| change((*k).clone(), a.get(k).cloned(), b.get(k).cloned())).collect()
}

pub fn invert(changes: &[ClauseChange]) -> Vec<ClauseChange> {
    changes.iter().map(|c| change(c.at.clone(), c.to.clone(), c.from.clone())).collect()
}

/// Applies a change set to a normalised document. Every clause must still
/// hold the value its change starts from; otherwise the clauses that moved
/// are returned.
pub fn apply(doc: &Value, changes: &[ClauseChange]) -> Result<Value, Vec<ClauseKey>> {
    let mut clauses = flatten(doc);
    let conflicts: Vec<ClauseKey> = changes.iter().filter(|c| clauses.get(&c.at) != c.from.as_ref()).map(|c| c.at.clone()).collect();
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    for c in changes {
        match &c.to {
            Some(v) => clauses.insert(c.at.clone(), v.clone()),
            None => clauses.remove(&c.at),
        };
    }
    Ok(unflatten(doc, &clauses))
}
