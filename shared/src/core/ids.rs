//! Identifiers, validated once at the edge. Inside the crate an id is always
//! well formed: non-empty, bounded, free of the `#` that separates key
//! parts in the store, and never `.` or `..` (which a URL path cannot carry
//! as a segment: clients and servers remove them).
//!
//! `infra/openapi.yaml` says the same of each id (`components/schemas`,
//! [`ID_PATTERN`] and the id's `MAX_LEN`); a test below fails when they
//! disagree.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every id as a pattern (ECMA 262, as OpenAPI's JSON Schema reads it):
/// what [`valid`] accepts, apart from the length.
pub const ID_PATTERN: &str = r"^(?!\.\.?$)[A-Za-z0-9._@:-]+$";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} must be 1 to {max} characters of letters, digits, '.', '_', '-', '@' or ':', and not '.' or '..' (got {got:?})")]
pub struct InvalidId {
    pub kind: &'static str,
    pub max: usize,
    pub got: String,
}

fn valid(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s != "." && s != ".." && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':'))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The most characters (bytes: ids are ASCII) it may have.
            pub const MAX_LEN: usize = $max;
            pub fn parse(s: impl Into<String>) -> Result<Self, InvalidId> {
                let s = s.into();
                if valid(&s, $max) {
                    Ok(Self(s))
                } else {
                    Err(InvalidId { kind: $kind, max: $max, got: s.chars().take(80).collect() })
                }
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                Self::parse(s)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// One customer organisation. Every record belongs to exactly one.
    TenantId, "tenant_id", 64);
id_type!(
    /// A member (user account) of a tenant, as the app names it.
    UserId, "user_id", 128);
id_type!(
    /// A license as its source names it (Stripe subscription id, CRM record id).
    LicenseId, "license_id", 128);
id_type!(
    /// A contract, as the CLM or the caller names it.
    ContractId, "contract_id", 128);
id_type!(
    /// An amendment of a contract, unique within the contract.
    AmendmentId, "amendment_id", 128);
id_type!(
    /// A SCIM target of a tenant, as the tenant's admin names it.
    TargetId, "target_id", 40);
id_type!(
    /// The source's own id of an event (Stripe `evt_...`, CRM event id).
    EventId, "event_id", 150);
id_type!(
    /// A licensing model's `version`: names one set of rules for ever.
    ModelVersion, "version", 64);
id_type!(
    /// A rollout of a model version or a preview of one.
    RunId, "rollout_id", 64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids_and_rejects_key_separators() {
        assert!(TenantId::parse("acme-corp_1").is_ok());
        assert!(UserId::parse("user@example.com").is_ok());
        assert!(TenantId::parse("").is_err());
        assert!(TenantId::parse("a#b").is_err());
        assert!(TenantId::parse("a/b").is_err());
        assert!(TenantId::parse("x".repeat(65)).is_err());
        let err = UserId::parse("bad id").unwrap_err();
        assert!(err.to_string().contains("user_id"));
    }

    #[test]
    fn dot_segments_are_no_ids() {
        assert!(TenantId::parse(".").is_err());
        assert!(UserId::parse("..").is_err());
        assert!(UserId::parse("...").is_ok());
        assert!(UserId::parse(".a").is_ok());
        assert!(UserId::parse("a..").is_ok());
    }

    /// infra/openapi.yaml declares each id as a schema of its own (every
    /// parameter and field that is an id refers to it): its pattern and
    /// length must be the rule above, or a client generated from the
    /// document (or a gateway validating by it) sends what the functions
    /// refuse. tests/src/openapi.rs checks the pattern's meaning.
    #[test]
    fn the_api_document_says_what_each_id_accepts() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/openapi.yaml");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let doc: serde_json::Value = serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let ids = [
            ("TenantId", TenantId::MAX_LEN),
            ("UserId", UserId::MAX_LEN),
            ("LicenseId", LicenseId::MAX_LEN),
            ("ContractId", ContractId::MAX_LEN),
            ("AmendmentId", AmendmentId::MAX_LEN),
            ("TargetId", TargetId::MAX_LEN),
            ("EventId", EventId::MAX_LEN),
            ("ModelVersion", ModelVersion::MAX_LEN),
            ("RunId", RunId::MAX_LEN),
        ];
        for (name, max) in ids {
            let s = &doc["components"]["schemas"][name];
            let said = (s["type"].as_str(), s["minLength"].as_u64(), s["maxLength"].as_u64(), s["pattern"].as_str());
            assert_eq!(
                said,
                (Some("string"), Some(1), Some(max as u64), Some(ID_PATTERN)),
                "infra/openapi.yaml: components/schemas/{name} (type, minLength, maxLength, pattern) disagrees with {name} in shared/src/core/ids.rs"
            );
        }
        // The path parameters that are ids refer to those schemas.
        for (param, name) in
            [("tenant", "TenantId"), ("user", "UserId"), ("target", "TargetId"), ("contract", "ContractId"), ("amendment", "AmendmentId"), ("version", "ModelVersion"), ("run", "RunId")]
        {
            let schema = &doc["components"]["parameters"][param]["schema"]["$ref"];
            assert_eq!(schema.as_str(), Some(format!("#/components/schemas/{name}").as_str()), "infra/openapi.yaml: the path parameter {param} is not a {name}");
        }
    }

    #[test]
    fn deserialising_validates() {
        let ok: Result<TenantId, _> = serde_json::from_str("\"t1\"");
        assert!(ok.is_ok());
        let bad: Result<TenantId, _> = serde_json::from_str("\"t#1\"");
        assert!(bad.is_err());
    }
}
