//! CRM license records: a documented JSON shape, signed like Stripe webhooks
//! under `Entitle-Signature`.
//!
//! ```json
//! {"event_id": "crm-evt-1", "tenant_id": "acme", "license_id": "crm-lic-1",
//!  "tier": "business", "seats": 25, "add_ons": ["sso"],
//!  "starts_at": "2026-01-01T00:00:00Z", "expires_at": "2027-01-01T00:00:00Z",
//!  "status": "active", "source_version": 7}
//! ```
//! `source_version` is the CRM's own ordering of changes to the license
//! (a sequence or a modification timestamp): higher wins.

use crate::core::ids::{EventId, LicenseId, TenantId};
use crate::core::license::{LicenseChange, LicenseStatus, LicenseUpdate, Source};
use crate::core::model::LicensingModel;
use crate::core::rejection::Rejection;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use std::collections::BTreeSet;

pub const MAX_SEATS: u32 = 1_000_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmRecord {
    pub event_id: EventId,
    pub tenant_id: TenantId,
    pub license_id: LicenseId,
    pub tier: String,
    pub seats: u32,
    #[serde(default)]
    pub add_ons: BTreeSet<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub status: LicenseStatus,
    pub source_version: i64,
}

/// Validates a record against the model; every problem is named.
pub fn normalise(model: &LicensingModel, r: CrmRecord) -> Result<LicenseChange, Rejection> {
    let mut problems = Vec::new();
    if model.tier(&r.tier).is_none() {
        problems.push(format!("tier: unknown tier {:?}", r.tier));
    }
    for a in &r.add_ons {
        if !model.addons.contains_key(a) {
            problems.push(format!("add_ons: unknown add-on {a:?}"));
        }
    }
    if r.seats > MAX_SEATS {
        problems.push(format!("seats: at most {MAX_SEATS}"));
    }
    if let (Some(s), Some(e)) = (r.starts_at, r.expires_at) {
        if e <= s {
            problems.push("expires_at: must be after starts_at".into());
        }
    }
    if r.source_version < 0 {
        problems.push("source_version: must not be negative".into());
    }
    if !problems.is_empty() {
        return Err(Rejection::invalid("invalid_license_record", problems));
    }
    Ok(LicenseChange {
        event_id: r.event_id,
        tenant_id: r.tenant_id,
        license_id: r.license_id,
        source: Source::Crm,
        source_version: r.source_version,
        update: LicenseUpdate { tier: r.tier, seats: r.seats, addons: r.add_ons, status: r.status, starts_at: r.starts_at, expires_at: r.expires_at },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::body::parse_json;

    const GOOD: &str = r#"{"event_id":"crm-evt-1","tenant_id":"acme","license_id":"crm-lic-1","tier":"business","seats":25,"add_ons":["sso"],"starts_at":"2026-01-01T00:00:00Z","expires_at":"2027-01-01T00:00:00Z","status":"active","source_version":7}"#;

    #[test]
    fn a_good_record_normalises() {
        let m = LicensingModel::default_model();
        let c = normalise(&m, parse_json(GOOD.as_bytes()).unwrap()).unwrap();
        assert_eq!(c.source, Source::Crm);
        assert_eq!(c.source_version, 7);
        assert_eq!(c.update.seats, 25);
    }

    #[test]
    fn every_problem_is_named() {
        let m = LicensingModel::default_model();
        let bad = GOOD.replace("\"business\"", "\"gold\"").replace("[\"sso\"]", "[\"sso\",\"jetpack\"]").replace("2027-01-01", "2025-01-01");
        let e = normalise(&m, parse_json(bad.as_bytes()).unwrap()).unwrap_err();
        assert_eq!(e.kind, crate::core::rejection::Kind::Invalid);
        for needle in ["tier", "jetpack", "expires_at"] {
            assert!(e.message.contains(needle), "{}", e.message);
        }
        let e = parse_json::<CrmRecord>(GOOD.replace("\"active\"", "\"vip\"").as_bytes()).unwrap_err();
        assert!(e.message.contains("vip"), "{}", e.message);
        let e = parse_json::<CrmRecord>(GOOD.replace("\"seats\":25", "\"seats\":-1").as_bytes()).unwrap_err();
        assert!(e.message.contains("-1"), "{}", e.message);
    }
}
