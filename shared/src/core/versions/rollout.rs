//! What a rollout does with one tenant (skip it, wait for its billing
//! period's end, or move it), what its licenses need of a version, and
//! pins that keep a tenant on one.

use super::selection::When;
use crate::core::ids::ModelVersion;
use crate::core::license::License;
use crate::core::model::LicensingModel;
use crate::core::rejection::Rejection;
use crate::core::tenant::TenantMeta;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeSet;

/// What a rollout does with one tenant, decided on its `META` and licenses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantStep {
    Skip(String),
    /// Its move waits for its period's end.
    Wait(DateTime<Utc>),
    /// Move it (or, already there, make sure its walk is done).
    Move,
}

/// Whether a pin holds at `now` (its `until` not passed).
pub fn pinned_to(meta: &TenantMeta, now: DateTime<Utc>) -> Option<&crate::core::tenant::ModelPin> {
    meta.model_pin.as_ref().filter(|p| p.until.is_none_or(|u| u > now))
}

/// A rollout to `to`, moving tenants `at`, with `meta`'s tenant: a tenant
/// pinned to another version is skipped (a pin to `to` itself is no
/// obstacle); `period_end` waits for the end of the tenant's current
/// billing period, unless it has none, or the wait is over (`due`).
pub fn rollout_step(to: &ModelVersion, at: When, meta: &TenantMeta, licenses: &[License], due: bool, now: DateTime<Utc>) -> TenantStep {
    if let Some(pin) = pinned_to(meta, now).filter(|p| &p.version != to) {
        let until = pin.until.map_or("until released".to_string(), |u| format!("until {}", u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        return TenantStep::Skip(format!("pinned to {} {until} by {}: {}", pin.version, pin.by, pin.reason));
    }
    if at == When::PeriodEnd && !due && meta.model_version != *to {
        if let Some(end) = period_end(licenses, now) {
            return TenantStep::Wait(end);
        }
    }
    TenantStep::Move
}

/// The end of the tenant's current billing period: the earliest end, after
/// `now`, of its licenses that grant access (Stripe's current period, a CRM
/// record's or a contract's term). `None`: it has none, and moves at once.
pub fn period_end(licenses: &[License], now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    licenses.iter().filter(|l| l.status.grants_access()).filter_map(|l| l.expires_at).filter(|e| *e > now).min()
}

/// The tiers and add-ons of a tenant's licenses that `model` lacks: a
/// tenant whose version lacks them moves to the latest version.
pub fn lacks(model: &LicensingModel, licenses: &[License]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for l in licenses {
        if model.tier(&l.tier).is_none() {
            out.insert(format!("tier {:?}", l.tier));
        }
        for a in &l.addons {
            if !model.addons.contains_key(a) {
                out.insert(format!("add-on {a:?}"));
            }
        }
    }
    out.into_iter().collect()
}

/// A pin's request: `{"version", "until"?, "by", "reason"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinRequest {
    pub version: ModelVersion,
    pub until: Option<DateTime<Utc>>,
    pub by: String,
    pub reason: String,
}

impl PinRequest {
    pub fn parse(body: &Value, now: DateTime<Utc>) -> Result<PinRequest, Rejection> {
        let Some(obj) = body.as_object() else { return Err(Rejection::invalid("invalid_pin", vec!["the body must be a JSON object".into()])) };
        let mut problems = Vec::new();
        for key in obj.keys() {
            if !["version", "until", "by", "reason"].contains(&key.as_str()) {
                problems.push(format!("{key}: unknown field (known: version, until, by, reason)"));
            }
        }
        let version = obj.get("version").and_then(Value::as_str).map(ModelVersion::parse);
        if !matches!(version, Some(Ok(_))) {
            problems.push("version: a registered version (a string) is required".into());
        }
        let until = match obj.get("until") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()) {
                Some(t) if t.with_timezone(&Utc) > now => Some(t.with_timezone(&Utc)),
                Some(_) => {
                    problems.push("until: must be in the future".into());
                    None
                }
                None => {
                    problems.push("until: an RFC 3339 time".into());
                    None
                }
            },
        };
        let text = |k: &str, problems: &mut Vec<String>| match obj.get(k).and_then(Value::as_str).map(str::trim) {
            Some(s) if !s.is_empty() && s.len() <= 256 => s.to_string(),
            _ => {
                problems.push(format!("{k}: 1 to 256 characters (required)"));
                String::new()
            }
        };
        let by = text("by", &mut problems);
        let reason = text("reason", &mut problems);
        match version {
            Some(Ok(version)) if problems.is_empty() => Ok(PinRequest { version, until, by, reason }),
            _ => Err(Rejection::invalid("invalid_pin", problems)),
        }
    }
}
