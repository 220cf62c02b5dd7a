//! Contracts and amendments: the pure core.
//!
//! A contract document is typed (term, tier, seats, add-ons, named users,
//! role mappings) and keeps every other clause as it is. For diffing and
//! reversing, a document is seen as a flat map of clauses: `seats`, `tier`,
//! `term.end`, one entry per add-on, per named user, per role mapping, per
//! other clause. An amendment, in any of its three forms (RFC 6902 JSON
//! Patch, a complete new document, a CLM record amendment), becomes a new
//! document; its change set is the difference of the two flat maps. Applying
//! a change set checks that each clause still has the value the change
//! started from, so reversing is applying the inverted change set, and a
//! reversal that meets a clause a later amendment changed is a conflict.

use crate::access::{desired_access_with_rules, Member, MemberStatus, TenantRules};
use crate::ids::{ContractId, TenantId, UserId};
use crate::license::{License, LicenseStatus, Source};
use crate::model::LicensingModel;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

pub const MAX_SEATS: i64 = crate::crm::MAX_SEATS as i64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Term {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(default)]
    pub auto_renew: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedUser {
    pub id: UserId,
    pub email: String,
    #[serde(default)]
    pub roles: BTreeSet<String>,
}

/// A contract version's document. Clauses no rule maps (`support`, `sla`,
/// ...) are kept in `clauses`, versioned and diffed like the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractDocument {
    pub contract_id: ContractId,
    pub tenant_id: TenantId,
    pub term: Term,
    pub tier: String,
    /// Signed so that a negative count is a named validation problem, not a parse error.
    pub seats: i64,
    #[serde(default)]
    pub add_ons: BTreeSet<String>,
    #[serde(default)]
    pub named_users: Vec<NamedUser>,
    #[serde(default)]
    pub role_mappings: BTreeMap<String, BTreeSet<String>>,
    #[serde(flatten)]
    pub clauses: BTreeMap<String, Value>,
}

impl ContractDocument {
    /// Parses and validates a document against the model, naming every problem.
    pub fn parse(value: &Value, model: &LicensingModel) -> Result<(ContractDocument, Value), Vec<String>> {
        let mut doc: ContractDocument = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let path = e.path().to_string();
            vec![if path == "." { e.inner().to_string() } else { format!("{path}: {}", e.inner()) }]
        })?;
        doc.named_users.sort_by(|a, b| a.id.cmp(&b.id));
        let problems = doc.problems(model);
        if !problems.is_empty() {
            return Err(problems);
        }
        let normal = serde_json::to_value(&doc).expect("documents serialise");
        Ok((doc, normal))
    }

    fn problems(&self, model: &LicensingModel) -> Vec<String> {
        let mut p = Vec::new();
        if self.seats < 0 {
            p.push(format!("seats: must not be below 0 (got {})", self.seats));
        } else if self.seats > MAX_SEATS {
            p.push(format!("seats: at most {MAX_SEATS}"));
        }
        if self.term.end <= self.term.start {
            p.push(format!("term.end: {} must be after term.start {}", self.term.end.to_rfc3339(), self.term.start.to_rfc3339()));
        }
        if model.tier(&self.tier).is_none() {
            p.push(format!("tier: unknown tier {:?}", self.tier));
        }
        for a in &self.add_ons {
            if !model.addons.contains_key(a) {
                p.push(format!("add_ons: unknown add-on {a:?}"));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, u) in self.named_users.iter().enumerate() {
            if !seen.insert(&u.id) {
                p.push(format!("named_users[{i}].id: {} appears twice", u.id));
            }
            if !u.email.contains('@') {
                p.push(format!("named_users[{i}].email: not a valid address"));
            }
            for r in &u.roles {
                if !model.roles.contains(r) {
                    p.push(format!("named_users[{i}].roles: unknown role {r:?}"));
                }
            }
        }
        for (group, roles) in &self.role_mappings {
            for r in roles {
                if !model.roles.contains(r) {
                    p.push(format!("role_mappings.{group}: unknown role {r:?}"));
                }
            }
        }
        for name in self.clauses.keys() {
            if name.is_empty() || name.contains('.') {
                p.push(format!("{name:?}: clause names must be non-empty and contain no '.'"));
            }
        }
        p
    }

    /// The license this contract grants: its tier, seats and add-ons over its term.
    pub fn license(&self, version: u64, as_of: DateTime<Utc>) -> License {
        License {
            license_id: crate::ids::LicenseId::parse(self.contract_id.as_str()).expect("contract ids are license ids"),
            source: Source::Contract,
            tier: self.tier.clone(),
            seats: self.seats.clamp(0, MAX_SEATS) as u32,
            addons: self.add_ons.clone(),
            status: if as_of >= self.term.end { LicenseStatus::Expired } else { LicenseStatus::Active },
            starts_at: Some(self.term.start),
            expires_at: Some(self.term.end),
            source_version: version as i64,
            last_event_id: crate::ids::EventId::parse(format!("{}-v{version}", self.contract_id)).expect("valid id"),
            timeline: Default::default(),
        }
    }

    pub fn rules(&self) -> TenantRules {
        TenantRules {
            role_mappings: self.role_mappings.clone(),
            named_users: self.named_users.iter().map(|u| (u.id.clone(), u.roles.clone())).collect(),
        }
    }
}

/// The union of several contracts' role grants.
pub fn merge_rules<'a>(docs: impl IntoIterator<Item = &'a ContractDocument>) -> TenantRules {
    let mut rules = TenantRules::default();
    for d in docs {
        let r = d.rules();
        for (g, roles) in r.role_mappings {
            rules.role_mappings.entry(g).or_default().extend(roles);
        }
        for (u, roles) in r.named_users {
            rules.named_users.entry(u).or_default().extend(roles);
        }
    }
    rules
}

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

const IDENTITY: [&str; 2] = ["contract_id", "tenant_id"];

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
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| change((*k).clone(), a.get(k).cloned(), b.get(k).cloned()))
        .collect()
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

/// The CLM record-amendment form (as Ironclad's record amendments): the
/// parent contract and the properties to amend with their new values.
///
/// ```json
/// {"parent_record_id": "k-1",
///  "properties": {"seats": {"type": "number", "value": 75},
///                 "termEndDate": {"type": "date", "value": "2027-06-30"},
///                 "support": {"type": "string", "value": "premium"}}}
/// ```
/// Property names: `tier`, `seats`, `addOns`, `termStartDate`, `termEndDate`,
/// `autoRenew`, `namedUsers`, `roleMappings`; any other name amends (or adds)
/// the clause of that name. A property whose value is `null` removes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordAmendment {
    pub parent_record_id: ContractId,
    pub properties: BTreeMap<String, RecordProperty>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordProperty {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: Value,
}

fn clm_date(v: &Value, name: &str) -> Result<Value, String> {
    let s = v.as_str().ok_or_else(|| format!("properties.{name}: expected a date string"))?;
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(json!(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()));
    }
    DateTime::parse_from_rfc3339(s).map(|d| json!(d.with_timezone(&Utc))).map_err(|_| format!("properties.{name}: {s:?} is not a date"))
}

impl RecordAmendment {
    /// The document after setting the record's properties on `doc`.
    pub fn apply_to(&self, doc: &Value, contract: &ContractId) -> Result<Value, Vec<String>> {
        let mut problems = Vec::new();
        if &self.parent_record_id != contract {
            problems.push(format!("record.parent_record_id: {} is not contract {contract}", self.parent_record_id));
        }
        let mut out = doc.clone();
        let obj = out.as_object_mut().expect("documents are objects");
        for (name, prop) in &self.properties {
            let v = &prop.value;
            let set = |obj: &mut Map<String, Value>, path: &[&str], value: Value| {
                let target = match path {
                    [_] => obj,
                    [first, _] => obj.entry(first.to_string()).or_insert_with(|| json!({})).as_object_mut().expect("term is an object"),
                    _ => unreachable!(),
                };
                let last = path[path.len() - 1].to_string();
                if value.is_null() {
                    target.remove(&last);
                } else {
                    target.insert(last, value);
                }
            };
            // Where the property goes in the document, and its value there.
            let target: Result<(Vec<&str>, Value), String> = match name.as_str() {
                "tier" => Ok((vec!["tier"], v.clone())),
                "seats" => Ok((vec!["seats"], v.clone())),
                "addOns" => Ok((vec!["add_ons"], v.clone())),
                "namedUsers" => Ok((vec!["named_users"], v.clone())),
                "roleMappings" => Ok((vec!["role_mappings"], v.clone())),
                "autoRenew" => Ok((vec!["term", "auto_renew"], v.clone())),
                "termStartDate" => clm_date(v, name).map(|d| (vec!["term", "start"], d)),
                "termEndDate" => clm_date(v, name).map(|d| (vec!["term", "end"], d)),
                n if IDENTITY.contains(&n) => Err(format!("properties.{n}: cannot be amended")),
                other => Ok((vec![other], v.clone())),
            };
            match target {
                Ok((path, value)) => set(obj, &path, value),
                Err(e) => problems.push(e),
            }
        }
        if problems.is_empty() {
            Ok(out)
        } else {
            Err(problems)
        }
    }
}

/// Most operations one JSON Patch may carry.
pub const MAX_PATCH_OPERATIONS: usize = 500;
/// Largest document (serialised JSON) an amendment may produce: a
/// 1,000-clause contract is about 90 KB; a DynamoDB item holds 400 KB.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

fn json_len(v: &Value) -> usize {
    serde_json::to_string(v).map(|s| s.len()).unwrap_or(usize::MAX)
}

/// Applies RFC 6902 operations one by one, so that every failing operation
/// is named (an operation that fails is skipped, the others still apply).
/// Budgets are checked before the work: at most [`MAX_PATCH_OPERATIONS`]
/// operations, and no operation may take the document past
/// [`MAX_DOCUMENT_BYTES`] (a `copy` can double it, so each one is weighed
/// before it is applied).
pub fn apply_patch(doc: &Value, patch: &Value) -> Result<Value, Vec<String>> {
    let ops = patch.as_array().ok_or_else(|| vec!["patch: expected an array of RFC 6902 operations".to_string()])?;
    if ops.len() > MAX_PATCH_OPERATIONS {
        return Err(vec![format!("patch: {} operations, more than the {MAX_PATCH_OPERATIONS} allowed", ops.len())]);
    }
    let mut out = doc.clone();
    // An upper bound of the document's size: what an operation may add is
    // counted before it is applied, what it removes is not subtracted.
    let mut size = json_len(&out);
    let mut problems = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let parsed: Result<json_patch::PatchOperation, _> = serde_json::from_value(op.clone());
        match parsed {
            Err(e) => problems.push(format!("patch[{i}]: {e}")),
            Ok(op) => {
                let grows = match &op {
                    json_patch::PatchOperation::Add(a) => json_len(&a.value),
                    json_patch::PatchOperation::Replace(r) => json_len(&r.value),
                    json_patch::PatchOperation::Copy(c) => out.pointer(c.from.as_str()).map(json_len).unwrap_or(0),
                    _ => 0,
                };
                if size.saturating_add(grows) > MAX_DOCUMENT_BYTES {
                    problems.push(format!("patch[{i}]: the document would grow beyond the {MAX_DOCUMENT_BYTES} bytes a contract may have; not applied"));
                    return Err(problems);
                }
                size += grows;
                if let Err(e) = json_patch::patch(&mut out, &[op]) {
                    problems.push(format!("patch[{i}]: {}", e.kind));
                    if let Some(p) = problems.last_mut() {
                        p.push_str(&format!(" (path {})", e.path));
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// The new document an amendment asks for, in any of its three forms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmendmentForm {
    Patch(Value),
    Document(Value),
    Record(RecordAmendment),
}

/// What an amendment does, before anything is stored: the new normalised
/// document and the clause-level change set. Problems name every issue.
pub fn evaluate(model: &LicensingModel, current: &Value, contract: &ContractId, form: &AmendmentForm) -> Result<(Value, Vec<ClauseChange>), Vec<String>> {
    let proposed = match form {
        AmendmentForm::Patch(p) => apply_patch(current, p)?,
        AmendmentForm::Document(d) => d.clone(),
        AmendmentForm::Record(r) => r.apply_to(current, contract)?,
    };
    let (_, normal) = ContractDocument::parse(&proposed, model)?;
    let mut problems = Vec::new();
    for f in IDENTITY {
        if normal.get(f) != current.get(f) {
            problems.push(format!("{f}: cannot be changed by an amendment"));
        }
    }
    let changes = diff(current, &normal);
    if changes.is_empty() && problems.is_empty() {
        problems.push("the amendment changes no clause".into());
    }
    if problems.is_empty() {
        Ok((normal, changes))
    } else {
        Err(problems)
    }
}

/// One member's access change an amendment would cause.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberImpact {
    pub user_id: UserId,
    pub status_before: MemberStatus,
    pub status_after: MemberStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seat: Option<String>,
    pub roles_added: BTreeSet<String>,
    pub roles_removed: BTreeSet<String>,
    pub entitlements_added: BTreeSet<String>,
    pub entitlements_removed: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessImpact {
    pub tenant_before: Value,
    pub tenant_after: Value,
    pub members: Vec<MemberImpact>,
    pub seats_used_before: u32,
    pub seats_used_after: u32,
}

/// Desired access of the tenant with the contract at `old` vs at `new`.
#[allow(clippy::too_many_arguments)] // each input is a distinct part of the tenant's state
pub fn impact(model: &LicensingModel, other_licenses: &[License], other_rules: &[&ContractDocument], old: Option<&ContractDocument>, new: &ContractDocument, version: u64, as_of: DateTime<Utc>, members: &[Member]) -> AccessImpact {
    let with = |doc: Option<&ContractDocument>, v: u64| {
        let mut licenses: Vec<License> = other_licenses.to_vec();
        let mut docs: Vec<&ContractDocument> = other_rules.to_vec();
        if let Some(d) = doc {
            licenses.push(d.license(v, as_of));
            docs.push(d);
        }
        desired_access_with_rules(model, &licenses, &merge_rules(docs), members)
    };
    let before = with(old, version.saturating_sub(1));
    let after = with(Some(new), version);
    let summary = |t: &crate::license::TenantAccess| json!({"tier": t.tier, "status": t.status, "seats_total": t.seats_total, "entitlements": t.entitlements});
    let ent_keys = |e: &crate::model::Entitlements| -> BTreeSet<String> {
        e.iter().filter(|(_, v)| !matches!(v, crate::model::Entitlement::Flag(false) | crate::model::Entitlement::Limit(0))).map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default())).collect()
    };
    let mut out = Vec::new();
    for (user, b) in &before.members {
        let a = &after.members[user];
        if a.access == b.access {
            continue;
        }
        let seat = match (b.access.holds_seat(), a.access.holds_seat()) {
            (false, true) => Some("gained".to_string()),
            (true, false) => Some("lost".to_string()),
            _ => None,
        };
        let (eb, ea) = (ent_keys(&b.access.entitlements), ent_keys(&a.access.entitlements));
        out.push(MemberImpact {
            user_id: user.clone(),
            status_before: b.access.status,
            status_after: a.access.status,
            seat,
            roles_added: a.access.roles.difference(&b.access.roles).cloned().collect(),
            roles_removed: b.access.roles.difference(&a.access.roles).cloned().collect(),
            entitlements_added: ea.difference(&eb).cloned().collect(),
            entitlements_removed: eb.difference(&ea).cloned().collect(),
        });
    }
    let used = |d: &crate::access::DesiredAccess| d.members.values().filter(|m| m.access.holds_seat()).count() as u32;
    AccessImpact {
        tenant_before: summary(&before.tenant),
        tenant_after: summary(&after.tenant),
        members: out,
        seats_used_before: used(&before),
        seats_used_after: used(&after),
    }
}

/// The licensing model's review rules that an amendment fires.
pub fn review(model: &LicensingModel, old: &ContractDocument, new: &ContractDocument, impact: &AccessImpact) -> Vec<String> {
    let r = &model.review;
    let mut fired = Vec::new();
    if new.seats < old.seats && old.seats > 0 {
        let cut = (old.seats - new.seats) * 100 / old.seats;
        if cut > i64::from(r.max_seat_reduction_percent) {
            fired.push(format!("review.max_seat_reduction_percent: seats {} -> {} is a {cut}% cut (more than {}%)", old.seats, new.seats, r.max_seat_reduction_percent));
        }
    }
    let total_after = impact.tenant_after["seats_total"].as_u64().unwrap_or(0) as u32;
    if r.seat_reduction_below_usage && new.seats < old.seats && total_after < impact.seats_used_before {
        fired.push(format!("review.seat_reduction_below_usage: {total_after} seats for {} members holding one", impact.seats_used_before));
    }
    if r.privileged_role_removal {
        let lost: Vec<String> = impact
            .members
            .iter()
            .filter(|m| m.roles_removed.iter().any(|role| model.is_privileged(role)))
            .map(|m| m.user_id.to_string())
            .collect();
        let named: Vec<String> = old
            .named_users
            .iter()
            .filter(|u| u.roles.iter().any(|role| model.is_privileged(role)))
            .filter(|u| !new.named_users.iter().any(|n| n.id == u.id && u.roles.iter().filter(|r| model.is_privileged(r)).all(|r| n.roles.contains(r))))
            .map(|u| u.id.to_string())
            .collect();
        let who: BTreeSet<String> = lost.into_iter().chain(named).collect();
        if !who.is_empty() {
            fired.push(format!("review.privileged_role_removal: owner/admin removed from {}", who.into_iter().collect::<Vec<_>>().join(", ")));
        }
    }
    if r.tier_downgrade && model.tier_rank(&new.tier) < model.tier_rank(&old.tier) {
        fired.push(format!("review.tier_downgrade: tier {} -> {}", old.tier, new.tier));
    }
    fired
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        let record = AmendmentForm::Record(serde_json::from_value(json!({"parent_record_id": "k-1", "properties": {
            "seats": {"type": "number", "value": 75},
            "tier": {"type": "string", "value": "business"},
            "addOns": {"type": "array", "value": ["extra_projects", "sso"]},
            "termEndDate": {"type": "date", "value": "2027-06-30"},
            "support": {"type": "object", "value": {"level": "premium", "hours": "9-5"}}
        }})).unwrap());
        let a = evaluate(&m, &cur, &id, &patch).unwrap().1;
        let b = evaluate(&m, &cur, &id, &AmendmentForm::Document(full)).unwrap().1;
        let c = evaluate(&m, &cur, &id, &record).unwrap().1;
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(
            summaries(&a),
            vec!["add-on sso added", "seats 50 -> 75", "clause support {\"hours\":\"9-5\",\"level\":\"standard\"} -> {\"hours\":\"9-5\",\"level\":\"premium\"}", "term.end 2027-01-01T00:00:00Z -> 2027-06-30T00:00:00Z", "tier team -> business"]
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
        let members: Vec<Member> = (0..45)
            .map(|i| Member { user_id: UserId::parse(format!("u{i}")).unwrap(), email: format!("u{i}@acme.test"), groups: BTreeSet::new(), attributes: BTreeMap::new(), seq: i + 1, removed: false })
            .collect();
        let mut new = old.clone();
        new.seats = 30;
        new.tier = "free".into();
        new.named_users.retain(|u| u.id.as_str() != "u1");
        let at = "2026-06-01T00:00:00Z".parse().unwrap();
        let imp = impact(&m, &[], &[], Some(&old), &new, 2, at, &members);
        let fired = review(&m, &old, &new, &imp).join("; ");
        for rule in ["max_seat_reduction_percent", "seat_reduction_below_usage", "privileged_role_removal", "tier_downgrade"] {
            assert!(fired.contains(rule), "{rule} in {fired}");
        }
        let mut mild = old.clone();
        mild.seats = 45;
        let imp = impact(&m, &[], &[], Some(&old), &mild, 2, at, &members);
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
}

/// Where an amendment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmendmentStatus {
    Applied,
    PendingReview,
    Scheduled,
    Rejected,
    Reversed,
}

impl AmendmentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AmendmentStatus::Applied => "applied",
            AmendmentStatus::PendingReview => "pending_review",
            AmendmentStatus::Scheduled => "scheduled",
            AmendmentStatus::Rejected => "rejected",
            AmendmentStatus::Reversed => "reversed",
        }
    }
}

/// `POST /contracts/{id}/amendments`: exactly one of `patch`, `document`, `record`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmendmentRequest {
    pub amendment_id: crate::ids::AmendmentId,
    pub base_version: u64,
    #[serde(default)]
    pub effective_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub patch: Option<Value>,
    #[serde(default)]
    pub document: Option<Value>,
    #[serde(default)]
    pub record: Option<RecordAmendment>,
    /// Who submits it (a name or email, as `by` of a decision).
    #[serde(default)]
    pub submitted_by: Option<String>,
}

impl AmendmentRequest {
    pub fn form(&self) -> Result<AmendmentForm, Vec<String>> {
        if self.submitted_by.as_ref().is_some_and(|b| b.trim().is_empty() || b.len() > 200) {
            return Err(vec!["submitted_by: a name of 1 to 200 characters".into()]);
        }
        match (&self.patch, &self.document, &self.record) {
            (Some(p), None, None) => Ok(AmendmentForm::Patch(p.clone())),
            (None, Some(d), None) => Ok(AmendmentForm::Document(d.clone())),
            (None, None, Some(r)) => Ok(AmendmentForm::Record(r.clone())),
            _ => Err(vec!["exactly one of `patch`, `document` or `record` is required".into()]),
        }
    }
}

/// Who acted: the name the request declares (`by`, `submitted_by`) and the
/// identity AWS authenticated (the IAM principal of the function URL
/// request; none where the URL is not IAM-authenticated, as locally).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

impl Actor {
    /// Whether two actors are the same person, as far as can be told: the
    /// same authenticated principal, or the same declared name.
    pub fn same_as(&self, other: &Actor) -> bool {
        let same_principal = matches!((&self.principal, &other.principal), (Some(a), Some(b)) if a == b);
        let same_name = matches!((&self.by, &other.by), (Some(a), Some(b)) if a.trim().eq_ignore_ascii_case(b.trim()));
        same_principal || same_name
    }

    /// `by`, and the principal when there is one: `cfo@x (arn:aws:iam::1:user/cfo)`.
    pub fn describe(&self) -> String {
        match (&self.by, &self.principal) {
            (Some(b), Some(p)) => format!("{b} ({p})"),
            (Some(b), None) => b.clone(),
            (None, Some(p)) => p.clone(),
            (None, None) => "an unnamed caller".into(),
        }
    }
}

/// Approve, reject and reverse take who and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionRequest {
    pub by: String,
    pub reason: String,
}

impl DecisionRequest {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.by.trim().is_empty() || self.by.len() > 200 {
            p.push("by: who decides is required (at most 200 characters)".into());
        }
        if self.reason.trim().is_empty() || self.reason.len() > 2000 {
            p.push("reason: why is required (at most 2000 characters)".into());
        }
        p
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub action: String,
    pub by: String,
    pub reason: String,
    pub at: String,
    /// The caller's authenticated identity (IAM principal), beside `by`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// An amendment as stored and shown: its change set and access impact are
/// computed before anything is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Amendment {
    pub amendment_id: crate::ids::AmendmentId,
    pub contract_id: ContractId,
    pub tenant_id: TenantId,
    pub status: AmendmentStatus,
    pub base_version: u64,
    pub effective_at: Option<DateTime<Utc>>,
    pub form: String,
    pub changes: Vec<ClauseChange>,
    pub impact: AccessImpact,
    /// The review rules that fired; empty means it applies without review.
    pub review: Vec<String>,
    pub applied_version: Option<u64>,
    pub reversed_version: Option<u64>,
    pub decisions: Vec<Decision>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
    pub created_at: String,
    /// Who submitted it.
    #[serde(default)]
    pub submitted_by: Actor,
}

impl AmendmentForm {
    pub fn name(&self) -> &'static str {
        match self {
            AmendmentForm::Patch(_) => "patch",
            AmendmentForm::Document(_) => "document",
            AmendmentForm::Record(_) => "record",
        }
    }
}
