//! SCIM Users and Groups as Entitle keeps them, and the mapping to members.
//!
//! A User is a member: its `id` is the member's user id (the `externalId`
//! when it is a valid id, otherwise one Entitle derives from the userName);
//! its email is the `userName` when that is an address, otherwise the
//! primary email; `active: false` suspends it. The attributes the User
//! schema lists are kept as sent ([`Link::doc`]), the others dropped. A
//! Group is a group of the tenant's members: its `displayName` is the
//! group name the licensing model's role rules match.

use super::filter::{get_ci, AttrPath};
use super::patch::invalid_value;
use super::schemas::{self, ENTERPRISE, ENTITLE, GROUP, USER};
use crate::core::access::{MemberItem, MemberStatus};
use crate::core::ids::UserId;
use crate::core::model::LicensingModel;
use crate::core::rejection::{Kind, Rejection};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The largest User document kept (its attributes as JSON).
pub const MAX_DOCUMENT: usize = 16 * 1024;
/// The longest group name.
pub const MAX_GROUP_NAME: usize = 128;
/// Directory groups one member may be in (the member's group limit).
pub const MAX_GROUPS: usize = 100;

pub use crate::core::access::Link;

/// A new directory group's id from random bytes: `g` and 24 hex digits.
pub fn new_group_id(random: &[u8; 12]) -> String {
    format!("g{}", hex::encode(random))
}

/// A directory group, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirGroup {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub created: String,
    pub modified: String,
    pub rev: u64,
    /// Being deleted: gone for SCIM, its members being taken out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
}

/// One member of a directory group, as stored beside the group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub group: String,
    pub user: UserId,
    /// The group's name as the member holds it (differs from the group's
    /// while a rename reaches its members).
    pub name: String,
    /// The member's entry as the provider sent it, besides `value`
    /// (`$ref`, `type`, `display`).
    #[serde(default)]
    pub entry: Value,
}

/// A User as a provider pushed it (POST, PUT), read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct PushedUser {
    /// The attributes kept.
    pub doc: Value,
    pub user_name: String,
    pub email: String,
    pub active: bool,
    pub external_id: Option<String>,
}

/// A request body that is not a SCIM resource: SCIM's `invalidSyntax`.
fn syntax(why: impl Into<String>) -> Rejection {
    Rejection::malformed("invalid_syntax", why).with("scimType", "invalidSyntax")
}

/// Whether a string is an email address as members' emails are checked.
pub fn is_email(s: &str) -> bool {
    s.len() <= 254 && s.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@')) && !s.chars().any(char::is_whitespace)
}

/// A boolean as providers send it: `true`, or `"True"` (Microsoft Entra ID).
pub fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// Whether a body names a schema among its `schemas`.
fn names_schema(body: &Value, urn: &str) -> bool {
    get_ci(body, "schemas").and_then(Value::as_array).is_some_and(|s| s.iter().any(|x| x.as_str().is_some_and(|x| x.eq_ignore_ascii_case(urn))))
}

/// The attributes of an object that a schema keeps, nulls and empty
/// strings dropped, names as the schema spells them where they match.
fn kept(object: &Map<String, Value>, keep: &[String]) -> Map<String, Value> {
    object.iter().filter(|(k, v)| keep.contains(&k.to_ascii_lowercase()) && !v.is_null() && v.as_str() != Some("")).map(|(k, v)| (k.clone(), clean(v))).collect()
}

/// A value without nulls inside, booleans sent as strings read as
/// booleans where the schema says boolean (`primary`).
fn clean(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| if k.eq_ignore_ascii_case("primary") { (k.clone(), boolean(v).map_or_else(|| clean(v), Value::Bool)) } else { (k.clone(), clean(v)) })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().filter(|v| !v.is_null()).map(clean).collect()),
        v => v.clone(),
    }
}

/// Reads a pushed User (POST, PUT, or the result of a PATCH).
pub fn read_user(body: &Value) -> Result<PushedUser, Rejection> {
    let Some(object) = body.as_object() else { return Err(syntax("a User is a JSON object")) };
    if !names_schema(body, USER) {
        return Err(syntax(format!("a User names its schema: \"schemas\": [\"{USER}\"]")));
    }
    let user_name = match get_ci(body, "userName") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 256 => s.clone(),
        Some(Value::String(_)) => return Err(invalid_value("userName: 1 to 256 characters")),
        None | Some(Value::Null) => return Err(invalid_value("userName is required")),
        Some(_) => return Err(invalid_value("userName: a string")),
    };
    let external_id = match get_ci(body, "externalId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if s.len() <= 256 => Some(s.clone()),
        Some(_) => return Err(invalid_value("externalId: a string of at most 256 characters")),
    };
    let assigned = match get_ci(body, "active") {
        None | Some(Value::Null) => None,
        Some(v) => Some(boolean(v).ok_or_else(|| invalid_value("active: true or false"))?),
    };
    // Unassigned: active.
    let active = assigned.unwrap_or(true);
    let mut doc = kept(object, &schemas::user_kept());
    if let Some(ext) = object.iter().find(|(k, _)| k.eq_ignore_ascii_case(ENTERPRISE)).and_then(|(_, v)| v.as_object()) {
        let ext = kept(ext, &schemas::enterprise_kept());
        if !ext.is_empty() {
            doc.insert(ENTERPRISE.to_string(), Value::Object(ext));
        }
    }
    for (key, list) in [("emails", true), ("phoneNumbers", true), ("addresses", true), ("roles", true)] {
        if let Some((k, v)) = doc.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)) {
            if list && !(v.is_array() && v.as_array().is_some_and(|a| a.iter().all(Value::is_object))) {
                return Err(invalid_value(format!("{k}: a list of objects")));
            }
        }
    }
    doc.retain(|k, _| !k.eq_ignore_ascii_case("active"));
    if let Some(a) = assigned {
        doc.insert("active".into(), Value::Bool(a));
    }
    let email = email_of(&user_name, &Value::Object(doc.clone()))?;
    if let Some(x) = &external_id {
        doc.insert("externalId".into(), Value::String(x.clone()));
    }
    let doc = Value::Object(doc);
    if doc.to_string().len() > MAX_DOCUMENT {
        return Err(Rejection::new(Kind::TooLarge, "too_large", format!("a User's attributes are at most {MAX_DOCUMENT} bytes of JSON")).with("scimType", "invalidValue"));
    }
    Ok(PushedUser { doc, user_name, email, active, external_id })
}

/// The member's email: the userName when it is an address, otherwise the
/// primary email (or the only one).
fn email_of(user_name: &str, doc: &Value) -> Result<String, Rejection> {
    if is_email(user_name) {
        return Ok(user_name.to_string());
    }
    let emails: Vec<&Value> = get_ci(doc, "emails").and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default();
    let primary = emails.iter().find(|e| get_ci(e, "primary").and_then(boolean) == Some(true)).or(emails.first());
    match primary.and_then(|e| get_ci(e, "value")).and_then(Value::as_str) {
        Some(e) if is_email(e) => Ok(e.to_string()),
        Some(e) => Err(invalid_value(format!("emails: {e:?} is not an email address"))),
        None => Err(invalid_value("a User needs an email: a userName that is an address, or a primary email")),
    }
}

/// The user id of a new member pushed by a directory: its `externalId`
/// when that is a valid id, otherwise derived from its userName (so that
/// the same user pushed twice, even at once, is one member).
pub fn user_id_for(pushed: &PushedUser) -> UserId {
    pushed
        .external_id
        .as_deref()
        .and_then(|x| UserId::parse(x).ok())
        .unwrap_or_else(|| UserId::parse(format!("scim-{}", &crate::core::audit::hash_of(&pushed.user_name.to_lowercase())[..24])).expect("a valid id"))
}

/// The member attributes the licensing model takes from a User.
pub fn attributes_of(model: &LicensingModel, doc: &Value) -> BTreeMap<String, String> {
    model
        .directory
        .attributes
        .iter()
        .filter_map(|(name, path)| {
            let path = AttrPath::parse(path).ok()?;
            let v = path.values(doc).into_iter().find_map(|v| match v {
                Value::String(s) if !s.is_empty() => Some(s.to_lowercase()),
                Value::Bool(b) => Some(b.to_string()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })?;
            Some((name.clone(), v.chars().take(1024).collect()))
        })
        .collect()
}

/// An RFC 3339 instant of a member's creation (its seat order's origin).
fn micros_text(micros: u64) -> String {
    chrono::DateTime::from_timestamp_micros(i64::try_from(micros).unwrap_or(0)).unwrap_or_default().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The ETag of a resource at a revision.
pub fn etag(rev: u64) -> String {
    format!("W/\"{rev}\"")
}

/// A member as a SCIM User, with Entitle's view in its extension.
pub fn render_user(base: &str, item: &MemberItem, tier: Option<&str>) -> Value {
    let m = &item.member;
    let link = item.link.clone().unwrap_or_default();
    let mut doc = match link.doc {
        Value::Object(o) => o,
        _ => {
            // A member the app created: its email is its userName.
            let mut o = Map::new();
            o.insert("userName".into(), json!(m.email));
            o.insert("emails".into(), json!([{"value": m.email, "type": "work", "primary": true}]));
            o
        }
    };
    let created = if link.created.is_empty() { micros_text(m.seq) } else { link.created.clone() };
    let modified = if link.modified.is_empty() { created.clone() } else { link.modified.clone() };
    let mut schemas = vec![json!(USER)];
    if doc.contains_key(ENTERPRISE) {
        schemas.push(json!(ENTERPRISE));
    }
    schemas.push(json!(ENTITLE));
    doc.insert("schemas".into(), Value::Array(schemas));
    doc.insert("id".into(), json!(m.user_id));
    // `active` as the provider assigned it; a suspended member always says so.
    if m.suspended || doc.contains_key("active") {
        doc.insert("active".into(), json!(!m.suspended));
    }
    if !link.groups.is_empty() {
        let groups: Vec<Value> = link.groups.iter().map(|(id, name)| json!({"value": id, "display": name, "$ref": format!("{base}/Groups/{id}"), "type": "direct"})).collect();
        doc.insert("groups".into(), Value::Array(groups));
    }
    let seat = match item.access.status {
        MemberStatus::Active => "held",
        MemberStatus::PendingSeat => "waiting",
        _ => "none",
    };
    let mut view = json!({
        "status": item.access.status.as_str(),
        "seat": seat,
        "roles": item.access.roles,
        "entitlements": item.access.entitlements.iter().map(|(k, v)| json!({"name": k, "value": serde_json::to_value(v).expect("serialises").to_string()})).collect::<Vec<_>>(),
    });
    if let Some(t) = tier.filter(|_| item.access.status == MemberStatus::Active) {
        view["tier"] = json!(t);
    }
    doc.insert(ENTITLE.into(), view);
    doc.insert("meta".into(), json!({"resourceType": "User", "created": created, "lastModified": modified, "version": etag(item.rev), "location": format!("{base}/Users/{}", m.user_id)}));
    Value::Object(doc)
}

/// A Group as SCIM shows it; `members` when they were read.
pub fn render_group(base: &str, g: &DirGroup, members: Option<&[Edge]>) -> Value {
    let mut v = json!({
        "schemas": [GROUP],
        "id": g.id,
        "displayName": g.name,
        "meta": {"resourceType": "Group", "created": g.created, "lastModified": g.modified, "version": etag(g.rev), "location": format!("{base}/Groups/{}", g.id)},
    });
    if let Some(x) = &g.external_id {
        v["externalId"] = json!(x);
    }
    if let Some(members) = members {
        v["members"] = Value::Array(
            members
                .iter()
                .map(|e| {
                    let mut entry = match &e.entry {
                        Value::Object(o) => o.clone(),
                        _ => Map::new(),
                    };
                    entry.insert("value".into(), json!(e.user));
                    Value::Object(entry)
                })
                .collect(),
        );
    }
    v
}

/// A Group as a provider pushed it (POST, PUT).
#[derive(Debug, Clone, PartialEq)]
pub struct PushedGroup {
    pub name: String,
    pub external_id: Option<String>,
    /// Its members when the body lists them (`None`: not named).
    pub members: Option<Vec<(String, Value)>>,
}

/// A group name: 1 to 128 characters, not blank.
pub fn group_name(v: Option<&Value>) -> Result<String, Rejection> {
    match v {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= MAX_GROUP_NAME => Ok(s.clone()),
        None | Some(Value::Null) => Err(invalid_value("displayName is required")),
        _ => Err(invalid_value(format!("displayName: 1 to {MAX_GROUP_NAME} characters"))),
    }
}

/// A group's member entries: each `value` with the rest of the entry.
pub fn member_entries(v: &Value) -> Result<Vec<(String, Value)>, Rejection> {
    let Value::Array(list) = v else { return Err(invalid_value("members: a list of {\"value\": \"<user id>\"}")) };
    list.iter()
        .map(|m| {
            let id = get_ci(m, "value").and_then(Value::as_str).ok_or_else(|| invalid_value("members: each is {\"value\": \"<user id>\"}"))?;
            let mut rest = m.as_object().cloned().unwrap_or_default();
            rest.retain(|k, v| !k.eq_ignore_ascii_case("value") && !v.is_null());
            Ok((id.to_string(), Value::Object(rest)))
        })
        .collect()
}

pub fn read_group(body: &Value) -> Result<PushedGroup, Rejection> {
    if !body.is_object() {
        return Err(syntax("a Group is a JSON object"));
    }
    if !names_schema(body, GROUP) {
        return Err(syntax(format!("a Group names its schema: \"schemas\": [\"{GROUP}\"]")));
    }
    let name = group_name(get_ci(body, "displayName"))?;
    let external_id = match get_ci(body, "externalId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 256 => Some(s.clone()).filter(|s| !s.is_empty()),
        Some(_) => return Err(invalid_value("externalId: a string of at most 256 characters")),
    };
    let members = match get_ci(body, "members") {
        None | Some(Value::Null) => None,
        Some(v) => Some(member_entries(v)?),
    };
    Ok(PushedGroup { name, external_id, members })
}

/// `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5) applied to a
/// rendered resource: `id`, `schemas` and `meta` always stay.
pub fn project(resource: Value, attributes: &[String], excluded: &[String]) -> Value {
    let Value::Object(mut o) = resource else { return resource };
    let always = |k: &str| ["id", "schemas", "meta"].iter().any(|a| k.eq_ignore_ascii_case(a));
    let names = |list: &[String]| -> Vec<(Option<String>, String, Option<String>)> {
        list.iter().filter_map(|a| AttrPath::parse(a).ok()).map(|p| (p.schema.filter(|s| !super::filter::is_core(s)), p.attr.to_ascii_lowercase(), p.sub.map(|s| s.to_ascii_lowercase()))).collect()
    };
    if !attributes.is_empty() {
        let wanted = names(attributes);
        let mut out = Map::new();
        for (k, v) in o {
            if always(&k) {
                out.insert(k, v);
                continue;
            }
            if k.to_ascii_lowercase().starts_with("urn:") {
                // An extension: the attributes of it that are asked for.
                let picked: Map<String, Value> = v
                    .as_object()
                    .map(|ext| {
                        ext.iter()
                            .filter(|(a, _)| wanted.iter().any(|(s, n, _)| s.as_deref().is_some_and(|s| s.eq_ignore_ascii_case(&k)) && *n == a.to_ascii_lowercase()))
                            .map(|(a, v)| (a.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let whole =
                    wanted.iter().any(|(s, n, _)| s.is_none() && k.to_ascii_lowercase().ends_with(&format!(":{n}")) || (s.as_deref().is_some_and(|s| format!("{s}:{n}").eq_ignore_ascii_case(&k))));
                if whole {
                    out.insert(k, v);
                } else if !picked.is_empty() {
                    out.insert(k, Value::Object(picked));
                }
                continue;
            }
            let lk = k.to_ascii_lowercase();
            let subs: Vec<&String> = wanted.iter().filter(|(s, n, _)| s.is_none() && *n == lk).filter_map(|(_, _, sub)| sub.as_ref()).collect();
            let whole = wanted.iter().any(|(s, n, sub)| s.is_none() && *n == lk && sub.is_none());
            if whole {
                out.insert(k, v);
            } else if !subs.is_empty() {
                let narrow = |x: &Value| match x {
                    Value::Object(inner) => Value::Object(inner.iter().filter(|(a, _)| subs.contains(&&a.to_ascii_lowercase())).map(|(a, v)| (a.clone(), v.clone())).collect()),
                    x => x.clone(),
                };
                out.insert(
                    k,
                    match &v {
                        Value::Array(a) => Value::Array(a.iter().map(narrow).collect()),
                        v => narrow(v),
                    },
                );
            }
        }
        return Value::Object(out);
    }
    if !excluded.is_empty() {
        for (s, n, sub) in names(excluded) {
            let key = match &s {
                Some(urn) => o.keys().find(|k| k.eq_ignore_ascii_case(urn)).cloned(),
                None => o.keys().find(|k| k.eq_ignore_ascii_case(&n)).cloned(),
            };
            let Some(key) = key else { continue };
            if always(&key) {
                continue;
            }
            match (&s, &sub) {
                (None, None) => {
                    o.remove(&key);
                }
                (None, Some(sub)) => {
                    if let Some(v) = o.get_mut(&key) {
                        strip(v, sub);
                    }
                }
                (Some(_), _) => {
                    if let Some(Value::Object(ext)) = o.get_mut(&key) {
                        let a = ext.keys().find(|a| a.eq_ignore_ascii_case(&n)).cloned();
                        if let Some(a) = a {
                            ext.remove(&a);
                        }
                    }
                }
            }
        }
    }
    Value::Object(o)
}

fn strip(v: &mut Value, sub: &str) {
    match v {
        Value::Object(o) => {
            let k = o.keys().find(|k| k.eq_ignore_ascii_case(sub)).cloned();
            if let Some(k) = k {
                o.remove(&k);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| strip(x, sub)),
        _ => {}
    }
}

/// The names of a comma-separated `attributes`/`excludedAttributes` value.
pub fn attribute_list(raw: Option<&str>) -> Vec<String> {
    raw.map(|r| r.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::access::{Member, MemberAccess};

    fn okta_create() -> Value {
        // Okta's create request, verbatim from its SCIM 2.0 guide
        // (https://developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20).
        json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "test.user@okta.local",
            "name": {"givenName": "Test", "familyName": "User"},
            "emails": [{"primary": true, "value": "test.user@okta.local", "type": "work"}],
            "displayName": "Test User",
            "locale": "en-US",
            "externalId": "00ujl29u0le5T6Aj10h7",
            "groups": [],
            "password": "1mz050nq",
            "active": true
        })
    }

    #[test]
    fn an_okta_user_is_kept_without_its_password_and_groups() {
        let u = read_user(&okta_create()).unwrap();
        assert_eq!(u.email, "test.user@okta.local");
        assert_eq!(u.external_id.as_deref(), Some("00ujl29u0le5T6Aj10h7"));
        assert!(u.active);
        assert!(u.doc.get("password").is_none() && u.doc.get("groups").is_none());
        assert_eq!(u.doc["name"]["givenName"], "Test");
        assert_eq!(user_id_for(&u).as_str(), "00ujl29u0le5T6Aj10h7");
    }

    #[test]
    fn an_entra_user_with_nulls_string_booleans_and_the_enterprise_extension() {
        // Microsoft Entra ID's older sample (learn.microsoft.com, "Develop and
        // plan provisioning for a SCIM endpoint"): explicit nulls, a mistyped URN.
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User", "urn:ietf:params:scim:schemas:extension:enterprise:2.0User"],
            "externalId": "jyoung", "userName": "jyoung@testuser.com", "active": "True",
            "addresses": null, "displayName": "Joy Young",
            "emails": [{"type": "work", "value": "jyoung@Contoso.com", "primary": "true"}],
            "meta": {"resourceType": "User"}, "name": {"familyName": "Young", "givenName": "Joy"},
            "phoneNumbers": null, "preferredLanguage": null, "title": null, "department": null, "manager": null,
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Finance", "manager": {"value": "u9"}}
        });
        let u = read_user(&body).unwrap();
        assert!(u.active);
        assert_eq!(u.doc["emails"][0]["primary"], true);
        assert!(u.doc.get("addresses").is_none() && u.doc.get("meta").is_none() && u.doc.get("department").is_none());
        let m = LicensingModel::default_model();
        assert_eq!(attributes_of(&m, &u.doc).get("department").map(String::as_str), Some("finance"));
    }

    #[test]
    fn the_email_is_the_user_name_or_the_primary_email() {
        let mut b = okta_create();
        b["userName"] = json!("tuser");
        b["emails"] = json!([{"value": "other@x.test"}, {"value": "main@x.test", "primary": true}]);
        assert_eq!(read_user(&b).unwrap().email, "main@x.test");
        b["emails"] = json!([]);
        assert_eq!(read_user(&b).unwrap_err().details["scimType"], "invalidValue");
        b["emails"] = json!("x@y.z");
        assert!(read_user(&b).is_err());
    }

    #[test]
    fn bad_users_are_named() {
        for (body, scim_type) in [
            (json!({"not": "a scim resource"}), "invalidSyntax"),
            (json!({"schemas": [USER]}), "invalidValue"),
            (json!({"schemas": [USER], "userName": 3}), "invalidValue"),
            (json!({"schemas": [USER], "userName": "a@b.c", "active": "maybe"}), "invalidValue"),
            (json!([1]), "invalidSyntax"),
        ] {
            assert_eq!(read_user(&body).unwrap_err().details["scimType"], scim_type, "{body}");
        }
        let big = json!({"schemas": [USER], "userName": "a@b.c", "displayName": "x".repeat(MAX_DOCUMENT)});
        assert_eq!(read_user(&big).unwrap_err().kind, Kind::TooLarge);
    }

    #[test]
    fn ids_are_stable_per_user_name_whatever_its_case() {
        let mut b = okta_create();
        b.as_object_mut().unwrap().remove("externalId");
        let a = user_id_for(&read_user(&b).unwrap());
        b["userName"] = json!("TEST.user@okta.local");
        assert_eq!(a, user_id_for(&read_user(&b).unwrap()));
        b["externalId"] = json!("has a space");
        assert_eq!(a, user_id_for(&read_user(&b).unwrap()), "an externalId that is not an id is not used");
    }

    #[test]
    fn a_rendered_user_carries_entitles_view_and_projects() {
        let member = Member {
            user_id: UserId::parse("u1").unwrap(),
            email: "a@b.c".into(),
            groups: Default::default(),
            attributes: Default::default(),
            seq: 1_700_000_000_000_000,
            removed: false,
            suspended: false,
        };
        let mut item = MemberItem::new(member, MemberAccess::without_access(MemberStatus::PendingSeat), &crate::core::model::LicensingModel::default_model());
        item.link = Some(Link { doc: json!({"userName": "a@b.c", "name": {"givenName": "A", "familyName": "B"}}), groups: [("g1".to_string(), "admins".to_string())].into(), ..Link::default() });
        let r = render_user("https://h/scim/v2/tenants/t1", &item, Some("team"));
        assert_eq!(r[ENTITLE]["seat"], "waiting");
        assert!(r[ENTITLE].get("tier").is_none());
        assert_eq!(r["groups"][0]["value"], "g1");
        assert_eq!(r["meta"]["version"], "W/\"1\"");
        assert_eq!(r["meta"]["location"], "https://h/scim/v2/tenants/t1/Users/u1");
        let p = project(r.clone(), &["userName".into(), "name.givenName".into()], &[]);
        assert_eq!(p["name"], json!({"givenName": "A"}));
        assert!(p.get("groups").is_none() && p.get("id").is_some() && p.get(ENTITLE).is_none());
        let p = project(r.clone(), &[format!("{ENTITLE}:seat")], &[]);
        assert_eq!(p[ENTITLE], json!({"seat": "waiting"}));
        let p = project(r, &[], &["name".into(), "groups".into(), "id".into()]);
        assert!(p.get("name").is_none() && p.get("groups").is_none() && p.get("id").is_some());
    }

    #[test]
    fn groups_are_read_with_their_members() {
        // Microsoft Entra ID's create, with its extra schema.
        let g = read_group(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group", "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"], "externalId": "8aa1", "displayName": "displayName", "meta": {"resourceType": "Group"}})).unwrap();
        assert_eq!((g.name.as_str(), g.external_id.as_deref(), g.members), ("displayName", Some("8aa1"), None));
        let g = read_group(&json!({"schemas": [GROUP], "displayName": "Admins", "members": [{"value": "u1", "display": "a@b.c"}]})).unwrap();
        assert_eq!(g.members.unwrap(), vec![("u1".to_string(), json!({"display": "a@b.c"}))]);
        assert!(read_group(&json!({"schemas": [GROUP], "displayName": ""})).is_err());
        assert!(read_group(&json!({"schemas": [GROUP], "displayName": "x".repeat(129)})).is_err());
        assert!(read_group(&json!({"schemas": [GROUP], "displayName": "a", "members": [{"display": "no value"}]})).is_err());
    }
}
