//! SCIM PATCH (RFC 7644 §3.5.2) over a resource's JSON document: `add`,
//! `replace` and `remove`, with or without a path, value filters
//! (`emails[type eq "work"].value`), extension attributes by URN, and the
//! forms identity providers send beyond the RFC's letter:
//!
//! - `"op"` in any case (`"Replace"`, Microsoft Entra ID);
//! - `replace`/`add` without a path whose value keys are paths
//!   (`{"name.givenName": "Al"}`, Entra ID; `{"active": false}`, Okta);
//! - `add` (or `replace`) through a value filter that matches nothing
//!   creates the value the filter describes (`emails[type eq "work"].value`
//!   on a user without a work email, Entra ID);
//! - `remove` of a multi-valued attribute with a `value` list removes those
//!   values (`members` with `[{"value": "u1"}]`, Entra ID).
//!
//! Group membership is not patched here: [`member_ops`] takes the
//! `members` operations out first, since a group's members are not part of
//! its stored document.

use super::filter::{get_ci, invalid_path, AttrPath, CompareOp, Filter, PatchPath};
use crate::core::rejection::Rejection;
use serde_json::{Map, Value};

/// The PATCH request message's schema.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Operations one PATCH request may carry.
pub const MAX_OPERATIONS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Replace,
    Remove,
}

/// One operation, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub op: Op,
    pub path: Option<PatchPath>,
    pub raw_path: Option<String>,
    pub value: Option<Value>,
}

/// A bad PATCH value: SCIM's `invalidValue`.
pub fn invalid_value(why: impl Into<String>) -> Rejection {
    Rejection::malformed("invalid_value", why).with("scimType", "invalidValue")
}

/// A PATCH request that is not a PatchOp message: SCIM's `invalidSyntax`.
pub fn invalid_syntax(why: impl Into<String>) -> Rejection {
    Rejection::malformed("invalid_syntax", why).with("scimType", "invalidSyntax")
}

/// Reads a PatchOp message.
pub fn parse(body: &Value) -> Result<Vec<Operation>, Rejection> {
    let schemas = get_ci(body, "schemas").and_then(Value::as_array).ok_or_else(|| invalid_syntax(format!("a PATCH body is a PatchOp message: \"schemas\": [\"{PATCH_OP}\"]")))?;
    if !schemas.iter().any(|s| s.as_str().is_some_and(|s| s.eq_ignore_ascii_case(PATCH_OP))) {
        return Err(invalid_syntax(format!("a PATCH body is a PatchOp message: \"schemas\": [\"{PATCH_OP}\"]")));
    }
    let ops = get_ci(body, "Operations").and_then(Value::as_array).ok_or_else(|| invalid_syntax("a PatchOp message has \"Operations\": an array"))?;
    if ops.is_empty() || ops.len() > MAX_OPERATIONS {
        return Err(invalid_syntax(format!("\"Operations\" holds 1 to {MAX_OPERATIONS} operations")));
    }
    ops.iter()
        .enumerate()
        .map(|(i, o)| {
            let name = get_ci(o, "op").and_then(Value::as_str).ok_or_else(|| invalid_syntax(format!("operation {i}: \"op\" is add, replace or remove")))?;
            let op = match name.to_ascii_lowercase().as_str() {
                "add" => Op::Add,
                "replace" => Op::Replace,
                "remove" => Op::Remove,
                _ => return Err(invalid_syntax(format!("operation {i}: unknown op {name:?} (add, replace or remove)"))),
            };
            let raw_path = match get_ci(o, "path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if p.trim().is_empty() => None,
                Some(Value::String(p)) => Some(p.clone()),
                Some(_) => return Err(invalid_path(format!("operation {i}: \"path\" is a string"))),
            };
            let path = raw_path.as_deref().map(PatchPath::parse).transpose()?;
            let value = get_ci(o, "value").cloned();
            match (op, &path, &value) {
                (Op::Remove, None, _) => Err(Rejection::malformed("no_target", format!("operation {i}: remove needs a path")).with("scimType", "noTarget")),
                (Op::Add | Op::Replace, _, None) => Err(invalid_value(format!("operation {i}: {name} needs a value"))),
                (Op::Add | Op::Replace, None, Some(v)) if !v.is_object() => Err(invalid_value(format!("operation {i}: {name} without a path takes an object of attributes"))),
                _ => Ok(Operation { op, path, raw_path, value }),
            }
        })
        .collect()
}

/// Membership changes of a group, taken out of a PATCH.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberOps {
    /// Replace every member with these (`replace members`), first.
    pub set: Option<Vec<String>>,
    pub add: Vec<String>,
    pub remove: Vec<String>,
    /// `remove members` without a value or filter: every member goes.
    pub remove_all: bool,
}

impl MemberOps {
    pub fn is_empty(&self) -> bool {
        self.set.is_none() && self.add.is_empty() && self.remove.is_empty() && !self.remove_all
    }
}

/// The `value` ids of a members value (an object or a list of them).
fn member_ids(v: &Value, i: usize) -> Result<Vec<String>, Rejection> {
    let one = |m: &Value| -> Result<String, Rejection> {
        match m {
            Value::Object(_) => get_ci(m, "value").and_then(Value::as_str).map(str::to_string).ok_or_else(|| invalid_value(format!("operation {i}: a member is {{\"value\": \"<user id>\"}}"))),
            Value::String(s) => Ok(s.clone()),
            _ => Err(invalid_value(format!("operation {i}: a member is {{\"value\": \"<user id>\"}}"))),
        }
    };
    match v {
        Value::Array(a) => a.iter().map(one).collect(),
        Value::Null => Ok(Vec::new()),
        v => Ok(vec![one(v)?]),
    }
}

/// Splits a group's PATCH into its membership changes and the rest.
pub fn member_ops(ops: Vec<Operation>) -> Result<(MemberOps, Vec<Operation>), Rejection> {
    let mut m = MemberOps::default();
    let mut rest = Vec::new();
    for (i, o) in ops.into_iter().enumerate() {
        let on_members = o.path.as_ref().is_some_and(|p| p.attr.is("members") && p.attr.schema.as_deref().is_none_or(super::filter::is_core));
        if on_members {
            let p = o.path.as_ref().expect("checked");
            if p.attr.sub.is_some() || p.sub.is_some() {
                return Err(invalid_path(format!("operation {i}: a member's sub-attributes cannot be patched")));
            }
            match (o.op, &p.filter) {
                (Op::Add, None) => m.add.extend(member_ids(o.value.as_ref().unwrap_or(&Value::Null), i)?),
                (Op::Replace, None) => {
                    // Replacing the members replaces what was added before in the request too.
                    m.set = Some(member_ids(o.value.as_ref().unwrap_or(&Value::Null), i)?);
                    m.add.clear();
                    m.remove.clear();
                    m.remove_all = false;
                }
                (Op::Remove, None) => match &o.value {
                    Some(v) if !v.is_null() => m.remove.extend(member_ids(v, i)?),
                    _ => {
                        m.remove_all = true;
                        m.set = None;
                        m.add.clear();
                    }
                },
                (Op::Remove, Some(f)) => m.remove.extend(ids_of_filter(f).ok_or_else(|| invalid_path(format!("operation {i}: remove members by [value eq \"<id>\"] (or a list of them with or)")))?),
                (Op::Add | Op::Replace, Some(_)) => return Err(invalid_path(format!("operation {i}: members are added by value, not through a filter"))),
            }
            continue;
        }
        // Okta renames a group with a replace without path; it may name members too.
        if o.path.is_none() {
            if let Some(Value::Object(map)) = &o.value {
                if let Some((key, v)) = map.iter().find(|(k, _)| k.eq_ignore_ascii_case("members")) {
                    let ids = member_ids(v, i)?;
                    if o.op == Op::Replace {
                        m.set = Some(ids);
                        m.add.clear();
                        m.remove.clear();
                        m.remove_all = false;
                    } else {
                        m.add.extend(ids);
                    }
                    let mut others = map.clone();
                    others.remove(key);
                    if !others.is_empty() {
                        rest.push(Operation { value: Some(Value::Object(others)), ..o });
                    }
                    continue;
                }
            }
        }
        rest.push(o);
    }
    Ok((m, rest))
}

/// The ids a `value eq "x" [or value eq "y" ...]` filter names.
fn ids_of_filter(f: &Filter) -> Option<Vec<String>> {
    match f {
        Filter::Compare { path, op: CompareOp::Eq, value: Value::String(s) } if path.is("value") && path.sub.is_none() => Some(vec![s.clone()]),
        Filter::Or(a, b) => Some([ids_of_filter(a)?, ids_of_filter(b)?].concat()),
        _ => None,
    }
}

/// Applies the operations to a document, in order. Paths under the
/// attributes in `read_only` are left as they are (`id`, `meta`, a User's
/// `groups`): providers send them back with their changes.
pub fn apply(doc: &mut Value, ops: &[Operation], read_only: &[&str]) -> Result<(), Rejection> {
    for (i, o) in ops.iter().enumerate() {
        match &o.path {
            None => {
                let Some(Value::Object(map)) = &o.value else { unreachable!("parse checks it") };
                for (key, v) in map {
                    if key.eq_ignore_ascii_case("schemas") {
                        continue;
                    }
                    let path = PatchPath::parse(key).map_err(|e| invalid_path(format!("operation {i}: {}", e.message)))?;
                    if read_only.iter().any(|r| path.attr.is(r)) && path.attr.schema.is_none() {
                        continue;
                    }
                    // An extension's whole object: its attributes one by one.
                    if path.attr.schema.is_none() && super::filter::split_urn(key).0.is_none() && key.to_ascii_lowercase().starts_with("urn:") {
                        continue;
                    }
                    if let (true, Value::Object(ext)) = (key.to_ascii_lowercase().starts_with("urn:") && path.attr.sub.is_none() && looks_like_schema(key), v) {
                        for (attr, value) in ext {
                            let p = PatchPath::parse(&format!("{key}:{attr}")).map_err(|e| invalid_path(format!("operation {i}: {}", e.message)))?;
                            one(doc, o.op, &p, Some(value), i)?;
                        }
                        continue;
                    }
                    one(doc, o.op, &path, Some(v), i)?;
                }
            }
            Some(path) => {
                if read_only.iter().any(|r| path.attr.is(r)) && path.attr.schema.is_none() {
                    continue;
                }
                // A whole extension (`urn:...:enterprise:2.0:User`).
                if let Some(urn) = o.raw_path.as_deref().map(str::trim).filter(|p| p.to_ascii_lowercase().starts_with("urn:") && looks_like_schema(p) && !p.contains('[')) {
                    whole_extension(doc, o.op, urn, o.value.as_ref(), i)?;
                    continue;
                }
                one(doc, o.op, path, o.value.as_ref(), i)?;
            }
        }
    }
    Ok(())
}

/// An operation on an extension's whole object: `add` merges into it,
/// `replace` replaces it, `remove` removes it.
fn whole_extension(doc: &mut Value, op: Op, urn: &str, value: Option<&Value>, i: usize) -> Result<(), Rejection> {
    let Some(root) = doc.as_object_mut() else { return Ok(()) };
    let key = key_in(root, urn);
    match (op, value) {
        (Op::Remove, _) => {
            root.remove(&key);
        }
        (Op::Replace, Some(Value::Object(v))) => {
            root.insert(key, Value::Object(v.clone()));
        }
        (Op::Add, Some(Value::Object(v))) => {
            let ext = root.entry(key).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(have) = ext {
                for (k, x) in v {
                    let k = key_in(have, k);
                    have.insert(k, x.clone());
                }
            }
        }
        _ => return Err(invalid_value(format!("operation {i}: the value of {urn} is an object of its attributes"))),
    }
    Ok(())
}

/// Whether a key is a whole schema's URN (an extension object), not an
/// attribute path under one: `urn:...:2.0:User` ends with a resource name.
fn looks_like_schema(key: &str) -> bool {
    let last = key.rsplit(':').next().unwrap_or_default();
    last.chars().next().is_some_and(char::is_uppercase)
}

/// The object an attribute lives in, created when `create`.
fn container<'a>(doc: &'a mut Value, path: &AttrPath, create: bool) -> Option<&'a mut Map<String, Value>> {
    let root = doc.as_object_mut()?;
    match &path.schema {
        Some(urn) if !super::filter::is_core(urn) => {
            let key = root.keys().find(|k| k.eq_ignore_ascii_case(urn)).cloned();
            let key = match key {
                Some(k) => k,
                None if create => {
                    root.insert(urn.clone(), Value::Object(Map::new()));
                    urn.clone()
                }
                None => return None,
            };
            root.get_mut(&key)?.as_object_mut()
        }
        _ => Some(root),
    }
}

/// The key an attribute has in an object (as stored, any case), or its name.
fn key_in(map: &Map<String, Value>, name: &str) -> String {
    map.keys().find(|k| k.eq_ignore_ascii_case(name)).cloned().unwrap_or_else(|| name.to_string())
}

fn one(doc: &mut Value, op: Op, path: &PatchPath, value: Option<&Value>, i: usize) -> Result<(), Rejection> {
    let create = op != Op::Remove;
    let Some(obj) = container(doc, &path.attr, create) else { return Ok(()) };
    let key = key_in(obj, &path.attr.attr);
    match (&path.filter, &path.attr.sub) {
        // attr, or attr.sub
        (None, None) => match op {
            Op::Remove => match value {
                // A multi-valued attribute's listed values.
                Some(v @ (Value::Array(_) | Value::Object(_))) if obj.get(&key).is_some_and(Value::is_array) => {
                    let gone: Vec<Value> = match v {
                        Value::Array(a) => a.clone(),
                        v => vec![v.clone()],
                    };
                    if let Some(Value::Array(have)) = obj.get_mut(&key) {
                        have.retain(|h| !gone.iter().any(|g| same_value(h, g)));
                    }
                }
                _ => {
                    obj.remove(&key);
                }
            },
            Op::Replace => {
                obj.insert(key, value.cloned().unwrap_or(Value::Null));
            }
            Op::Add => {
                let v = value.cloned().unwrap_or(Value::Null);
                match (obj.get_mut(&key), v) {
                    (Some(Value::Array(have)), Value::Array(new)) => {
                        for n in new {
                            if !have.iter().any(|h| same_value(h, &n)) {
                                have.push(n);
                            }
                        }
                    }
                    (Some(Value::Array(have)), n) => {
                        if !have.iter().any(|h| same_value(h, &n)) {
                            have.push(n);
                        }
                    }
                    // Adding to a complex attribute merges its sub-attributes.
                    (Some(Value::Object(have)), Value::Object(new)) => {
                        for (k, v) in new {
                            let k = key_in(have, &k);
                            have.insert(k, v);
                        }
                    }
                    (_, n) => {
                        obj.insert(key, n);
                    }
                }
            }
        },
        (None, Some(sub)) => {
            match obj.get_mut(&key) {
                Some(Value::Object(inner)) => {
                    let sk = key_in(inner, sub);
                    if op == Op::Remove {
                        inner.remove(&sk);
                    } else {
                        inner.insert(sk, value.cloned().unwrap_or(Value::Null));
                    }
                }
                // A sub-attribute of every value of a multi-valued attribute.
                Some(Value::Array(values)) => {
                    for v in values.iter_mut().filter_map(Value::as_object_mut) {
                        let sk = key_in(v, sub);
                        if op == Op::Remove {
                            v.remove(&sk);
                        } else {
                            v.insert(sk, value.cloned().unwrap_or(Value::Null));
                        }
                    }
                }
                _ if op == Op::Remove => {}
                _ => {
                    let mut inner = Map::new();
                    inner.insert(sub.clone(), value.cloned().unwrap_or(Value::Null));
                    obj.insert(key, Value::Object(inner));
                }
            }
        }
        (Some(filter), _) => {
            let sub = path.sub.as_ref().or(path.attr.sub.as_ref());
            let values = obj.entry(key.clone()).or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(values) = values else {
                return Err(invalid_path(format!("operation {i}: {} is not multi-valued", path.attr.attr)));
            };
            let matching: Vec<usize> = values.iter().enumerate().filter(|(_, v)| filter.matches(v)).map(|(j, _)| j).collect();
            match op {
                Op::Remove => match sub {
                    None => {
                        let mut j = 0;
                        values.retain(|_| {
                            let keep = !matching.contains(&j);
                            j += 1;
                            keep
                        });
                    }
                    Some(sub) => {
                        for j in matching {
                            if let Some(o) = values[j].as_object_mut() {
                                let sk = key_in(o, sub);
                                o.remove(&sk);
                            }
                        }
                    }
                },
                Op::Add | Op::Replace => {
                    let v = value.cloned().unwrap_or(Value::Null);
                    if matching.is_empty() {
                        // What the filter describes, made (Entra ID adds a work email so).
                        let mut made =
                            equalities(filter).ok_or_else(|| Rejection::malformed("no_target", format!("operation {i}: no value matches {:?}", path.attr.attr)).with("scimType", "noTarget"))?;
                        match (sub, v) {
                            (Some(sub), v) => {
                                made.insert(sub.clone(), v);
                            }
                            (None, Value::Object(o)) => made.extend(o),
                            (None, _) => return Err(invalid_value(format!("operation {i}: a value of {} is an object", path.attr.attr))),
                        }
                        values.push(Value::Object(made));
                    } else {
                        for j in matching {
                            match (sub, &v, values[j].as_object_mut()) {
                                (Some(sub), v, Some(o)) => {
                                    let sk = key_in(o, sub);
                                    o.insert(sk, v.clone());
                                }
                                (None, Value::Object(new), Some(o)) => {
                                    if op == Op::Replace {
                                        o.clear();
                                    }
                                    o.extend(new.clone());
                                }
                                _ => values[j] = v.clone(),
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The attributes an `eq` filter (or an `and` of them) fixes, as an object.
fn equalities(f: &Filter) -> Option<Map<String, Value>> {
    match f {
        Filter::Compare { path, op: CompareOp::Eq, value } if path.sub.is_none() && path.schema.is_none() => {
            let mut m = Map::new();
            m.insert(path.attr.clone(), value.clone());
            Some(m)
        }
        Filter::And(a, b) => {
            let mut m = equalities(a)?;
            m.extend(equalities(b)?);
            Some(m)
        }
        _ => None,
    }
}

/// Two values of a multi-valued attribute are the same value: equal, or
/// complex with the same `value` (members, emails).
fn same_value(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    match (get_ci(a, "value"), get_ci(b, "value")) {
        (Some(x), Some(y)) => {
            let (ta, tb) = (get_ci(a, "type"), get_ci(b, "type"));
            x == y && (ta == tb || ta.is_none() || tb.is_none())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patch(doc: Value, body: Value) -> Result<Value, Rejection> {
        let mut doc = doc;
        let ops = parse(&body)?;
        apply(&mut doc, &ops, &["id", "meta", "groups"])?;
        Ok(doc)
    }

    fn ops(list: Value) -> Value {
        json!({"schemas": [PATCH_OP], "Operations": list})
    }

    fn alice() -> Value {
        json!({"userName": "alice@example.com", "active": true, "name": {"givenName": "Alice"}, "emails": [{"value": "alice@example.com", "type": "work", "primary": true}]})
    }

    #[test]
    fn okta_deactivates_with_a_replace_without_path() {
        let d = patch(alice(), ops(json!([{"op": "replace", "value": {"active": false}}]))).unwrap();
        assert_eq!(d["active"], false);
        assert_eq!(d["userName"], "alice@example.com");
    }

    #[test]
    fn entra_capitalises_ops_and_sends_dotted_keys_and_string_booleans() {
        let d = patch(
            alice(),
            ops(json!([
                {"op": "Replace", "path": "active", "value": "False"},
                {"op": "Replace", "value": {"name.givenName": "Al", "displayName": "Al L", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department": "Finance"}},
                {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "al@example.com"},
                {"op": "Add", "path": "phoneNumbers[type eq \"mobile\"].value", "value": "+1 555 0100"},
                {"op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager", "value": {"value": "u9"}},
            ])),
        )
        .unwrap();
        assert_eq!(d["active"], "False", "coercion is the mapping's, not the patch's");
        assert_eq!(d["name"]["givenName"], "Al");
        assert_eq!(d["displayName"], "Al L");
        assert_eq!(d["emails"], json!([{"value": "al@example.com", "type": "work", "primary": true}]));
        assert_eq!(d["phoneNumbers"], json!([{"type": "mobile", "value": "+1 555 0100"}]));
        let ext = &d["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"];
        assert_eq!(ext["department"], "Finance");
        assert_eq!(ext["manager"]["value"], "u9");
    }

    #[test]
    fn an_extension_object_in_a_replace_without_path_is_merged() {
        let d = patch(
            json!({"userName": "a", "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "A", "costCenter": "1"}}),
            ops(json!([{"op": "replace", "value": {"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "B"}}}])),
        )
        .unwrap();
        assert_eq!(d["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"], json!({"department": "B", "costCenter": "1"}));
    }

    #[test]
    fn a_whole_extension_by_its_urn() {
        let ext = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
        let d = patch(json!({"userName": "a", ext: {"department": "A"}}), ops(json!([{"op": "add", "path": ext, "value": {"costCenter": "1"}}]))).unwrap();
        assert_eq!(d[ext], json!({"department": "A", "costCenter": "1"}));
        let d = patch(d, ops(json!([{"op": "replace", "path": ext, "value": {"division": "D"}}]))).unwrap();
        assert_eq!(d[ext], json!({"division": "D"}));
        let d = patch(d, ops(json!([{"op": "remove", "path": ext}]))).unwrap();
        assert!(d.get(ext).is_none());
        assert!(patch(json!({"userName": "a"}), ops(json!([{"op": "add", "path": ext, "value": 3}]))).is_err());
    }

    #[test]
    fn remove_by_path_and_by_filter() {
        let mut doc = alice();
        doc["emails"].as_array_mut().unwrap().push(json!({"value": "a@home.test", "type": "home"}));
        let d = patch(doc.clone(), ops(json!([{"op": "remove", "path": "emails[type eq \"home\"]"}, {"op": "remove", "path": "name.givenName"}]))).unwrap();
        assert_eq!(d["emails"].as_array().unwrap().len(), 1);
        assert_eq!(d["name"], json!({}));
        let d = patch(doc, ops(json!([{"op": "remove", "path": "emails"}]))).unwrap();
        assert!(d.get("emails").is_none());
    }

    #[test]
    fn read_only_attributes_are_left_alone() {
        let d =
            patch(json!({"id": "u1", "userName": "a"}), ops(json!([{"op": "replace", "value": {"id": "other", "userName": "b"}}, {"op": "replace", "path": "meta.created", "value": "x"}]))).unwrap();
        assert_eq!(d, json!({"id": "u1", "userName": "b"}));
    }

    #[test]
    fn membership_is_taken_out() {
        let body = ops(json!([
            {"op": "Add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]},
            {"op": "Remove", "path": "members", "value": [{"value": "u3"}]},
            {"op": "remove", "path": "members[value eq \"u4\"]"},
            {"op": "replace", "value": {"id": "g1", "displayName": "Admins"}},
        ]));
        let (m, rest) = member_ops(parse(&body).unwrap()).unwrap();
        assert_eq!(m.add, vec!["u1", "u2"]);
        assert_eq!(m.remove, vec!["u3", "u4"]);
        assert_eq!(rest.len(), 1);
        let (m, _) = member_ops(parse(&ops(json!([{"op": "add", "path": "members", "value": [{"value": "u1"}]}, {"op": "replace", "path": "members", "value": [{"value": "u9"}]}]))).unwrap()).unwrap();
        assert_eq!((m.set, m.add), (Some(vec!["u9".to_string()]), vec![]));
        let (m, _) = member_ops(parse(&ops(json!([{"op": "remove", "path": "members"}]))).unwrap()).unwrap();
        assert!(m.remove_all);
        let (m, rest) = member_ops(parse(&ops(json!([{"op": "replace", "value": {"displayName": "X", "members": [{"value": "a"}]}}]))).unwrap()).unwrap();
        assert_eq!(m.set, Some(vec!["a".to_string()]));
        assert_eq!(rest[0].value, Some(json!({"displayName": "X"})));
    }

    #[test]
    fn bad_patches_are_named() {
        for (body, scim_type) in [
            (json!({"Operations": [{"op": "add", "path": "x", "value": 1}]}), "invalidSyntax"),
            (ops(json!([])), "invalidSyntax"),
            (ops(json!([{"op": "move", "path": "x", "value": 1}])), "invalidSyntax"),
            (ops(json!([{"op": "remove"}])), "noTarget"),
            (ops(json!([{"op": "add", "path": "x"}])), "invalidValue"),
            (ops(json!([{"op": "replace", "value": 3}])), "invalidValue"),
            (ops(json!([{"op": "add", "path": "emails[type eq", "value": 1}])), "invalidPath"),
        ] {
            assert_eq!(parse(&body).unwrap_err().details["scimType"], scim_type, "{body}");
        }
        let e = patch(alice(), ops(json!([{"op": "replace", "path": "emails[type co \"zz\"].value", "value": "x"}]))).unwrap_err();
        assert_eq!(e.details["scimType"], "noTarget", "{e:?}");
        let e = patch(alice(), ops(json!([{"op": "replace", "path": "userName[type eq \"x\"]", "value": "x"}]))).unwrap_err();
        assert_eq!(e.details["scimType"], "invalidPath");
    }
}
