//! Which tenants a rollout or a preview is for ([`Selection`], with the
//! tenants it excludes) and when a rollout moves them ([`When`]), as an
//! operator's request names them.

use crate::core::ids::TenantId;
use crate::core::model::{LicensingModel, MoveAt};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Which tenants a rollout or a preview is for: `"all"`, `{"tier": "..."}`
/// (tenants whose effective tier it is) or a list of tenant ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Tier(String),
    List(Vec<TenantId>),
}

impl Serialize for Selection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Selection::All => s.serialize_str("all"),
            Selection::Tier(t) => json!({ "tier": t }).serialize(s),
            Selection::List(l) => l.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Selection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Selection::parse(&Value::deserialize(d)?, None).map_err(|p| serde::de::Error::custom(p.join("; ")))
    }
}

impl Selection {
    /// Parses `tenants`; with a model, a tier must be one of its tiers.
    pub(super) fn parse(v: &Value, model: Option<&LicensingModel>) -> Result<Selection, Vec<String>> {
        match v {
            Value::String(s) if s == "all" => Ok(Selection::All),
            Value::Object(o) if o.len() == 1 && o.get("tier").is_some_and(Value::is_string) => {
                let tier = o["tier"].as_str().unwrap_or_default().to_string();
                match model {
                    Some(m) if m.tier(&tier).is_none() => Err(vec![format!("tenants.tier: unknown tier {tier:?}")]),
                    _ => Ok(Selection::Tier(tier)),
                }
            }
            Value::Array(items) if !items.is_empty() && items.len() <= MAX_LISTED => {
                let (ok, bad): (Vec<_>, Vec<_>) =
                    items.iter().enumerate().map(|(i, t)| t.as_str().and_then(|s| TenantId::parse(s).ok()).ok_or(format!("tenants[{i}]: not a tenant id"))).partition(Result::is_ok);
                if bad.is_empty() {
                    let mut seen = BTreeSet::new();
                    Ok(Selection::List(ok.into_iter().map(Result::unwrap).filter(|t| seen.insert(t.clone())).collect()))
                } else {
                    Err(bad.into_iter().map(|e| e.unwrap_err()).collect())
                }
            }
            _ => Err(vec![format!("tenants: \"all\", {{\"tier\": \"<tier>\"}} or a list of 1 to {MAX_LISTED} tenant ids")]),
        }
    }

    /// Whether a tenant whose effective tier is `tier` is selected (a
    /// listed tenant is read by its id, not through the index).
    pub fn takes_tier(&self, tier: &str) -> bool {
        match self {
            Selection::Tier(t) => t == tier,
            _ => true,
        }
    }
}

/// Tenants a rollout or preview may list by id.
pub const MAX_LISTED: usize = 1000;

/// When a rollout moves its tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Now,
    /// Each tenant at the end of its current billing period.
    PeriodEnd,
    /// Every tenant from this time on.
    At(DateTime<Utc>),
}

impl Serialize for When {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            When::Now => s.serialize_str("now"),
            When::PeriodEnd => s.serialize_str("period_end"),
            When::At(t) => s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        }
    }
}

impl<'de> Deserialize<'de> for When {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        When::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("at: {s:?}")))
    }
}

impl When {
    pub(super) fn parse(s: &str) -> Option<When> {
        match s {
            "now" => Some(When::Now),
            "period_end" => Some(When::PeriodEnd),
            other => DateTime::parse_from_rfc3339(other).ok().map(|t| When::At(t.with_timezone(&Utc))),
        }
    }
    pub fn from_rule(at: MoveAt) -> When {
        match at {
            MoveAt::Now => When::Now,
            MoveAt::PeriodEnd => When::PeriodEnd,
        }
    }
}

/// The fields of a rollout or a preview's request besides what it is of,
/// every problem named.
pub(super) fn tenants_and_exclude(body: &serde_json::Map<String, Value>, model: Option<&LicensingModel>, problems: &mut Vec<String>) -> (Selection, BTreeSet<TenantId>) {
    let tenants = match body.get("tenants") {
        None => Selection::All,
        Some(v) => Selection::parse(v, model).unwrap_or_else(|p| {
            problems.extend(p);
            Selection::All
        }),
    };
    let mut exclude = BTreeSet::new();
    match body.get("exclude") {
        None => {}
        Some(Value::Array(items)) if items.len() <= MAX_LISTED => {
            for (i, t) in items.iter().enumerate() {
                match t.as_str().and_then(|s| TenantId::parse(s).ok()) {
                    Some(t) => {
                        exclude.insert(t);
                    }
                    None => problems.push(format!("exclude[{i}]: not a tenant id")),
                }
            }
        }
        Some(_) => problems.push(format!("exclude: a list of at most {MAX_LISTED} tenant ids")),
    }
    (tenants, exclude)
}
