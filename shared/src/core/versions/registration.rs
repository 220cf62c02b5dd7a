//! What is registered of a licensing model (its version, the fingerprint
//! of its rules, its text) and what the registry shows: the versions with
//! their tenants, and the model fields of a tenant's views.

use crate::core::ids::ModelVersion;
use crate::core::model::{LicensingModel, RolloutRule};
use crate::core::rejection::Rejection;
use crate::core::tenant::TenantMeta;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// A model as registered: the version, the fingerprint of its rules, the
/// text it was deployed as, when it was first seen, and its place in the
/// order of registration (the latest is the most recently registered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub version: ModelVersion,
    pub fingerprint: String,
    pub text: String,
    pub first_seen: DateTime<Utc>,
    pub seq: u64,
    pub rollout: RolloutRule,
}

impl Registered {
    pub fn of(model: &LicensingModel, text: &str, now: DateTime<Utc>) -> Self {
        Registered { version: model.version.clone(), fingerprint: model.fingerprint(), text: text.to_string(), first_seen: now, seq: 0, rollout: model.rollout }
    }
}

/// What registering a model found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// Registered now, as the latest version (its place in the order).
    New { seq: u64 },
    /// Registered before, with the same rules.
    Known,
    /// The version is registered with other rules: refused.
    Conflict { registered: String },
}

/// Why a model cannot be registered or previewed under its version.
pub fn conflict(version: &ModelVersion, registered: &str, offered: &str) -> Rejection {
    Rejection::conflict(
        "version_conflict",
        format!("licensing model version {version} is registered with fingerprint {registered}; this model's rules have fingerprint {offered}: give changed rules a new version"),
    )
    .with("version", version)
    .with("registered_fingerprint", registered)
    .with("fingerprint", offered)
}

/// The model fields every view of a tenant shows: the version it follows,
/// its pin and a waiting move.
pub fn tenant_model_view(meta: &TenantMeta) -> Value {
    let mut v = json!({ "version": meta.model_version });
    if let Some(p) = &meta.model_pin {
        v["pin"] = json!(p);
    }
    if let Some(w) = &meta.model_waiting {
        v["waiting"] = json!(w);
    }
    v
}

/// Tenants of each registered version (`GET /model`).
pub fn versions_view(registered: &[Registered], counts: &BTreeMap<ModelVersion, u64>, latest: Option<&ModelVersion>) -> Value {
    json!(registered
        .iter()
        .map(|r| json!({
            "version": r.version,
            "fingerprint": r.fingerprint,
            "first_seen": r.first_seen.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "rollout": r.rollout,
            "tenants": counts.get(&r.version).copied().unwrap_or(0),
            "latest": Some(&r.version) == latest,
        }))
        .collect::<Vec<_>>())
}
