//! A contract version's document: typed where rules map it, kept as it is
//! everywhere else.

use crate::core::access::TenantRules;
use crate::core::ids::{ContractId, TenantId, UserId};
use crate::core::license::{License, LicenseStatus, Source};
use crate::core::model::LicensingModel;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub const MAX_SEATS: i64 = crate::core::sources::crm::MAX_SEATS as i64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Term {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    #[serde(default)]
    pub auto_renew: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedUser {
    pub id: UserId,
    pub email: String,
    #[serde(default)]
    pub roles: BTreeSet<String>,
}

/// A contract version's document. Clauses no rule maps (`support`, `sla`,
/// ...) are kept in `clauses`, versioned and diffed like the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContractDocument {
    pub contract_id: ContractId,
    pub tenant_id: TenantId,
    pub term: Term,
    pub tier: String,
    /// Signed so that a negative count is a named validation problem, not a parse error.
    pub seats: i64,
    #[serde(default)]
    pub add_ons: BTreeSet<String>,
    #[serde(default)]
    pub named_users: Vec<NamedUser>,
    #[serde(default)]
    pub role_mappings: BTreeMap<String, BTreeSet<String>>,
    #[serde(flatten)]
    pub clauses: BTreeMap<String, Value>,
}

impl ContractDocument {
    /// Parses and validates a document against the model, naming every problem.
    pub fn parse(value: &Value, model: &LicensingModel) -> Result<(ContractDocument, Value), Vec<String>> {
        let mut doc: ContractDocument = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let path = e.path().to_string();
            vec![if path == "." { e.inner().to_string() } else { format!("{path}: {}", e.inner()) }]
        })?;
        doc.named_users.sort_by(|a, b| a.id.cmp(&b.id));
        let problems = doc.problems(model);
        if !problems.is_empty() {
            return Err(problems);
        }
        let normal = serde_json::to_value(&doc).expect("documents serialise");
        Ok((doc, normal))
    }

    fn problems(&self, model: &LicensingModel) -> Vec<String> {
        let mut p = Vec::new();
        if self.seats < 0 {
            p.push(format!("seats: must not be below 0 (got {})", self.seats));
        } else if self.seats > MAX_SEATS {
            p.push(format!("seats: at most {MAX_SEATS}"));
        }
        if self.term.end <= self.term.start {
            p.push(format!("term.end: {} must be after term.start {}", self.term.end.to_rfc3339(), self.term.start.to_rfc3339()));
        }
        if model.tier(&self.tier).is_none() {
            p.push(format!("tier: unknown tier {:?}", self.tier));
        }
        for a in &self.add_ons {
            if !model.addons.contains_key(a) {
                p.push(format!("add_ons: unknown add-on {a:?}"));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, u) in self.named_users.iter().enumerate() {
            if !seen.insert(&u.id) {
                p.push(format!("named_users[{i}].id: {} appears twice", u.id));
            }
            if !u.email.contains('@') {
                p.push(format!("named_users[{i}].email: not a valid address"));
            }
            for r in &u.roles {
                if !model.roles.contains(r) {
                    p.push(format!("named_users[{i}].roles: unknown role {r:?}"));
                }
            }
        }
        for (group, roles) in &self.role_mappings {
            for r in roles {
                if !model.roles.contains(r) {
                    p.push(format!("role_mappings.{group}: unknown role {r:?}"));
                }
            }
        }
        for name in self.clauses.keys() {
            if name.is_empty() || name.contains('.') {
                p.push(format!("{name:?}: clause names must be non-empty and contain no '.'"));
            }
        }
        p
    }

    /// The license this contract grants: its tier, seats and add-ons over its term.
    pub fn license(&self, version: u64, as_of: DateTime<Utc>) -> License {
        License {
            license_id: crate::core::ids::LicenseId::parse(self.contract_id.as_str()).expect("contract ids are license ids"),
            source: Source::Contract,
            tier: self.tier.clone(),
            seats: self.seats.clamp(0, MAX_SEATS) as u32,
            addons: self.add_ons.clone(),
            status: if as_of >= self.term.end { LicenseStatus::Expired } else { LicenseStatus::Active },
            starts_at: Some(self.term.start),
            expires_at: Some(self.term.end),
            source_version: version as i64,
            last_event_id: crate::core::ids::EventId::parse(format!("{}-v{version}", self.contract_id)).expect("valid id"),
            timeline: Default::default(),
        }
    }

    pub fn rules(&self) -> TenantRules {
        TenantRules { role_mappings: self.role_mappings.clone(), named_users: self.named_users.iter().map(|u| (u.id.clone(), u.roles.clone())).collect() }
    }
}

/// The union of several contracts' role grants.
pub fn merge_rules<'a>(docs: impl IntoIterator<Item = &'a ContractDocument>) -> TenantRules {
    let mut rules = TenantRules::default();
    for d in docs {
        let r = d.rules();
        for (g, roles) in r.role_mappings {
            rules.role_mappings.entry(g).or_default().extend(roles);
        }
        for (u, roles) in r.named_users {
            rules.named_users.entry(u).or_default().extend(roles);
        }
    }
    rules
}

/// A contract's current state: its tenant, its version, and its document
/// (normalised JSON, and typed).
#[derive(Debug, Clone)]
pub struct ContractState {
    pub tenant_id: TenantId,
    pub version: u64,
    pub document: Value,
    pub doc: ContractDocument,
}
