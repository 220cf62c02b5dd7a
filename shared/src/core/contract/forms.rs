//! The three forms of an amendment (JSON Patch, a whole document, a CLM
//! record), each turned into a new document within its budgets.

use super::clauses::*;
use super::document::*;
use crate::core::ids::ContractId;
use crate::core::model::LicensingModel;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

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
