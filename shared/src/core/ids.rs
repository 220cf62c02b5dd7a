//! Identifiers, validated once at the edge. Inside the crate an id is always
//! well formed: non-empty, bounded, and free of the `#` that separates key
//! parts in the store.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} must be 1 to {max} characters of letters, digits, '.', '_', '-', '@' or ':' (got {got:?})")]
pub struct InvalidId {
    pub kind: &'static str,
    pub max: usize,
    pub got: String,
}

fn valid(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b':'))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
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
    EventId, "event_id", 128);
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
    fn deserialising_validates() {
        let ok: Result<TenantId, _> = serde_json::from_str("\"t1\"");
        assert!(ok.is_ok());
        let bad: Result<TenantId, _> = serde_json::from_str("\"t#1\"");
        assert!(bad.is_err());
    }
}
