//! The HTTP API's JSON shapes and errors: the stable contract with the app.

use crate::access::{MemberAccess, MemberStatus};
use crate::ids::{TenantId, UserId};
use crate::license::TenantAccess;
use crate::model::Entitlements;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Largest request body any function accepts (Stripe events are far smaller).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// An error for the caller: HTTP status, a stable code and a message that
/// names the problem. Never carries internals or secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// More fields of the error object (`problems`, `current_version`, ...).
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: serde_json::Map::new() }
    }
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.details.insert(key.to_string(), serde_json::to_value(value).expect("serialisable"));
        self
    }
    /// 422 naming every problem, in the message and as a list.
    pub fn unprocessable(code: &'static str, problems: Vec<String>) -> Self {
        Self::new(422, code, problems.join("; ")).with("problems", problems)
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(404, "not_found", format!("{what} not found"))
    }
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(401, "invalid_signature", message)
    }
    pub fn too_large(limit: usize) -> Self {
        Self::new(413, "payload_too_large", format!("the request body exceeds {limit} bytes"))
    }
    pub fn internal() -> Self {
        Self::new(500, "internal", "an internal error occurred; it has been logged")
    }
    pub fn body(&self) -> serde_json::Value {
        let mut error = self.details.clone();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.clone().into());
        serde_json::json!({ "error": error })
    }
}

/// Parses a JSON body into `T`, naming the field and position of a problem.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    if body.is_empty() {
        return Err(ApiError::bad_request("malformed_body", "the request body is empty; a JSON object is required"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("malformed_body", format!("invalid JSON body: {e}")))
}

/// Parses a YAML body (for people who write contracts by hand) into JSON,
/// within `limit` bytes of JSON once anchors and aliases are expanded: a
/// 50 KB document of nested aliases can otherwise expand to gigabytes.
/// Values are counted as they are built, so the work stops at the limit
/// (413 naming it) instead of after the expansion.
pub fn parse_yaml_bounded(body: &[u8], limit: usize) -> Result<serde_json::Value, ApiError> {
    use serde::de::DeserializeSeed;
    if body.is_empty() {
        return Err(ApiError::bad_request("malformed_body", "the request body is empty"));
    }
    let budget = yaml_budget::Budget::new(limit);
    let result = yaml_budget::Bounded(&budget).deserialize(serde_norway::Deserializer::from_slice(body));
    match result {
        Ok(v) => Ok(v),
        // (serde_norway also stops a document that repeats aliases too often.)
        Err(e) if budget.exceeded() || e.to_string().contains("repetition limit exceeded") => Err(ApiError::new(
            413,
            "payload_too_large",
            format!("the YAML document expands to more than {limit} bytes of JSON (anchors and aliases count at their expanded size)"),
        )
        .with("limit_bytes", limit)),
        Err(e) => Err(ApiError::bad_request("malformed_body", format!("invalid YAML body: {e}"))),
    }
}

mod yaml_budget {
    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};
    use std::cell::Cell;
    use std::fmt;

    pub struct Budget {
        left: Cell<usize>,
        exceeded: Cell<bool>,
    }

    impl Budget {
        pub fn new(limit: usize) -> Self {
            Budget { left: Cell::new(limit), exceeded: Cell::new(false) }
        }
        pub fn exceeded(&self) -> bool {
            self.exceeded.get()
        }
        /// Takes `n` bytes (about what the value adds to the JSON text).
        fn spend<E: de::Error>(&self, n: usize) -> Result<(), E> {
            match self.left.get().checked_sub(n) {
                Some(left) => {
                    self.left.set(left);
                    Ok(())
                }
                None => {
                    self.exceeded.set(true);
                    Err(E::custom("the document expands beyond its size limit"))
                }
            }
        }
    }

    /// Builds a JSON value, spending from the budget for every part.
    pub struct Bounded<'a>(pub &'a Budget);

    impl<'de> DeserializeSeed<'de> for Bounded<'_> {
        type Value = Value;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Bounded<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a YAML value")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
            self.0.spend(5)?;
            Ok(Value::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
            self.0.spend(20)?;
            Ok(v.into())
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
            self.0.spend(20)?;
            Ok(v.into())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
            self.0.spend(24)?;
            Ok(serde_json::Number::from_f64(v).map(Value::Number).unwrap_or(Value::Null))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
            self.0.spend(v.len() + 2)?;
            Ok(Value::String(v.to_string()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
            self.0.spend(v.len() + 2)?;
            Ok(Value::String(v))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
            self.0.spend(4)?;
            Ok(Value::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<Value, E> {
            self.visit_unit()
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            Bounded(self.0).deserialize(d)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            self.0.spend(2)?;
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(Bounded(self.0))? {
                self.0.spend(1)?;
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            self.0.spend(2)?;
            let mut out = Map::new();
            while let Some(key) = map.next_key_seed(Key(self.0))? {
                let value = map.next_value_seed(Bounded(self.0))?;
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
    }

    /// A mapping key, as a string (JSON objects have string keys).
    struct Key<'a>(&'a Budget);

    impl<'de> DeserializeSeed<'de> for Key<'_> {
        type Value = String;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
            d.deserialize_string(self)
        }
    }

    impl<'de> Visitor<'de> for Key<'_> {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a mapping key")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            self.0.spend(v.len() + 4)?;
            Ok(v.to_string())
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
            self.0.spend(v.len() + 4)?;
            Ok(v)
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Seats {
    pub total: u32,
    pub used: u32,
}

/// `GET /tenants/{tenant}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantView {
    pub tenant_id: TenantId,
    pub tier: String,
    pub status: String,
    pub seats: Seats,
    pub entitlements: Entitlements,
    pub expires_at: Option<String>,
    pub add_ons: BTreeSet<String>,
    pub seats_pending: u32,
}

impl TenantView {
    pub fn new(tenant_id: TenantId, access: &TenantAccess, used: u32, pending: u32) -> Self {
        TenantView {
            tenant_id,
            tier: access.tier.clone(),
            status: access.status.clone(),
            seats: Seats { total: access.seats_total, used },
            entitlements: access.entitlements.clone(),
            expires_at: access.expires_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            add_ons: access.addons.clone(),
            seats_pending: pending,
        }
    }
}

/// `GET /tenants/{tenant}/members/{user}` and the answer to member creation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberView {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub status: MemberStatus,
    pub roles: BTreeSet<String>,
    pub entitlements: Entitlements,
}

impl MemberView {
    pub fn new(tenant_id: TenantId, user_id: UserId, access: &MemberAccess) -> Self {
        MemberView { tenant_id, user_id, status: access.status, roles: access.roles.clone(), entitlements: access.entitlements.clone() }
    }
}

/// `POST /tenants/{tenant}/members`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub user_id: UserId,
    pub email: String,
    #[serde(default)]
    pub groups: BTreeSet<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl NewMember {
    pub fn validate(&self) -> Result<(), ApiError> {
        let email_ok = self.email.len() <= 254
            && self.email.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@'))
            && !self.email.chars().any(char::is_whitespace);
        if !email_ok {
            return Err(ApiError::new(422, "invalid_member", "email: not a valid address"));
        }
        if self.groups.len() > 100 || self.groups.iter().any(|g| g.is_empty() || g.len() > 128) {
            return Err(ApiError::new(422, "invalid_member", "groups: at most 100 names of 1 to 128 characters"));
        }
        if self.attributes.len() > 50 || self.attributes.iter().any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 1024) {
            return Err(ApiError::new(422, "invalid_member", "attributes: at most 50, keys of 1 to 128 and values of up to 1024 characters"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_problem() {
        let e = parse_json::<NewMember>(br#"{"user_id":"u1"}"#).unwrap_err();
        assert_eq!((e.status, e.code), (400, "malformed_body"));
        assert!(e.message.contains("email"), "{}", e.message);
        let e = parse_json::<NewMember>(br#"{"user_id":"u 1","email":"a@b"}"#).unwrap_err();
        assert!(e.message.contains("user_id"), "{}", e.message);
        let e = parse_json::<NewMember>(&vec![b' '; MAX_BODY_BYTES + 1]).unwrap_err();
        assert_eq!(e.status, 413);
        let e = parse_json::<NewMember>(b"").unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn member_validation() {
        let mut m: NewMember = parse_json(br#"{"user_id":"u1","email":"a@example.com","groups":["admins"]}"#).unwrap();
        assert!(m.validate().is_ok());
        m.email = "not-an-email".into();
        assert_eq!(m.validate().unwrap_err().status, 422);
    }

    #[test]
    fn yaml_aliases_cannot_expand_past_the_limit() {
        let v = parse_yaml_bounded(b"a: 1\nb: [x, y]\nc: {d: true}\n", MAX_BODY_BYTES).unwrap();
        assert_eq!(v, serde_json::json!({"a": 1, "b": ["x", "y"], "c": {"d": true}}));
        // Ordinary anchors within the limit are fine.
        let v = parse_yaml_bounded(b"base: &b {tier: team}\nother: *b\n", MAX_BODY_BYTES).unwrap();
        assert_eq!(v["other"]["tier"], "team");
        // A billion laughs: nine levels of ten aliases, 10^9 strings from a few hundred bytes.
        let mut bomb = String::from("a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
        for i in 1..10 {
            let p = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p},*a{p}]\n"));
        }
        assert!(bomb.len() < 1000);
        let started = std::time::Instant::now();
        let e = parse_yaml_bounded(bomb.as_bytes(), MAX_BODY_BYTES).unwrap_err();
        assert_eq!((e.status, e.code), (413, "payload_too_large"), "{e}");
        assert!(e.message.contains("65536"), "the limit is named: {}", e.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(1), "stopped at the limit, not after the expansion");
        let e = parse_yaml_bounded(b"a: [unclosed", MAX_BODY_BYTES).unwrap_err();
        assert_eq!((e.status, e.code), (400, "malformed_body"));
    }

    #[test]
    fn error_body_shape() {
        let b = ApiError::not_found("tenant t1").body();
        assert_eq!(b["error"]["code"], "not_found");
        assert_eq!(b["error"]["message"], "tenant t1 not found");
    }
}
