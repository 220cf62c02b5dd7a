//! A SCIM target as configured, stored and shown, and the delivery records
//! that carry member changes to it.

use super::health::*;
use super::profile::{Guarantees, ProfileName};
use crate::core::access::{Member, MemberAccess};
use crate::core::egress::EgressPolicy;
use crate::core::ids::{TargetId, TenantId, UserId};
use chrono::{DateTime, Duration as Span, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// At most this many targets per tenant: every member change writes one
/// delivery record per target in its transaction.
pub const MAX_TARGETS_PER_TENANT: usize = 4;
/// Enterprise extension attributes a mapping may set (RFC 7643 §4.3, the string ones).
pub const ENTERPRISE_ATTRIBUTES: [&str; 5] = ["employeeNumber", "costCenter", "organization", "division", "department"];

/// How members appear on a target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// A role's group is named `group_prefix + role` (for example `entitle-admin`).
    #[serde(default)]
    pub group_prefix: String,
    /// Enterprise extension attribute -> the member attribute that fills it.
    #[serde(default)]
    pub enterprise: BTreeMap<String, String>,
}

/// A target's configuration as the API takes it. The token leaves this
/// struct for the secret store and is never written to the table or a log.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub base_url: String,
    pub token: String,
    #[serde(default)]
    pub mapping: Mapping,
    /// Drift repair runs at most this often (minutes); default one hour.
    #[serde(default)]
    pub repair_interval_minutes: Option<u32>,
    /// What kind of target it is (what it can do; see [`super::profile`]).
    #[serde(default)]
    pub profile: ProfileName,
    /// A removed member's user is deleted even where the target cannot
    /// undo a delete (GitHub, Atlassian); otherwise it is deactivated there.
    #[serde(default)]
    pub delete_users: bool,
}

impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetConfig").field("base_url", &self.base_url).field("token", &"<redacted>").field("mapping", &self.mapping).field("profile", &self.profile).finish()
    }
}

pub const DEFAULT_REPAIR_MINUTES: u32 = 60;

impl TargetConfig {
    /// Every problem of the configuration, or none. `egress` says where a
    /// target may be (production: public HTTPS hosts on port 443 only).
    pub fn problems(&self, roles: &[String], egress: EgressPolicy) -> Vec<String> {
        let mut out = crate::core::egress::base_url_problems(&self.base_url, egress);
        if self.token.is_empty() || self.token.len() > 4096 || self.token.chars().any(|c| c.is_control() || c == ' ') {
            out.push("token must be 1 to 4096 printable characters without spaces".into());
        }
        let prefix = &self.mapping.group_prefix;
        if prefix.chars().count() > 64 || prefix.chars().any(|c| c.is_control() || c == '"') {
            out.push("mapping.group_prefix must be at most 64 characters, without quotes".into());
        }
        for (scim, attr) in &self.mapping.enterprise {
            if !ENTERPRISE_ATTRIBUTES.contains(&scim.as_str()) {
                out.push(format!("mapping.enterprise.{scim}: not an enterprise extension attribute (one of {})", ENTERPRISE_ATTRIBUTES.join(", ")));
            }
            if attr.is_empty() || attr.chars().count() > 64 {
                out.push(format!("mapping.enterprise.{scim}: the member attribute name must be 1 to 64 characters"));
            }
        }
        match self.repair_interval_minutes {
            Some(m) if !(5..=10_080).contains(&m) => out.push("repair_interval_minutes must be 5 to 10080 (one week)".into()),
            _ => {}
        }
        if roles.is_empty() {
            out.push("the licensing model has no roles to map to groups".into());
        }
        out
    }
}

/// A configured target, as stored. Its token is in Secrets Manager under a
/// name that follows from the tenant and the target
/// (`TokenStore::secret_name`); the table never says where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub tenant_id: TenantId,
    pub target_id: TargetId,
    pub base_url: String,
    pub mapping: Mapping,
    pub repair_interval_minutes: u32,
    #[serde(default)]
    pub profile: ProfileName,
    #[serde(default)]
    pub delete_users: bool,
    #[serde(default)]
    pub health: Health,
}

impl Target {
    pub fn base(&self) -> &str {
        self.base_url.trim().trim_end_matches('/')
    }
    /// When the next scheduled drift repair is due.
    pub fn repair_due_at(&self) -> DateTime<Utc> {
        match self.health.last_repair_at {
            Some(at) => at + Span::minutes(i64::from(self.repair_interval_minutes)),
            None => DateTime::<Utc>::MIN_UTC,
        }
    }
    /// When the sweep should next wake this target up: its retry time while
    /// failing, else its next repair.
    pub fn wake_at(&self) -> DateTime<Utc> {
        match self.health.retry_at {
            Some(r) if self.health.failures > 0 => r,
            _ => self.repair_due_at(),
        }
    }
}

/// A target as the API shows it: never the token, only where it is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetView {
    pub tenant_id: TenantId,
    pub target_id: TargetId,
    pub base_url: String,
    pub token: &'static str,
    pub mapping: Mapping,
    pub repair_interval_minutes: u32,
    pub profile: ProfileName,
    pub delete_users: bool,
    /// What Entitle verifies on this kind of target, and what it cannot.
    pub guarantees: Guarantees,
    pub status: TargetStatus,
    pub health: Health,
    /// Member changes not yet delivered.
    pub pending: usize,
    /// Member changes the target refused repeatedly: (user id, reason).
    pub parked: Vec<ParkedDelivery>,
}

/// How a target stands, as its view shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetStatus {
    Healthy,
    /// Failing, retried with backoff.
    BackingOff,
    /// Failing for longer than the policy allows: not attempted until it resumes.
    Quarantined,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedDelivery {
    pub user_id: UserId,
    pub reason: String,
}

impl TargetView {
    pub fn new(target: &Target, pending: usize, parked: Vec<ParkedDelivery>) -> Self {
        let status = if target.health.quarantined() {
            TargetStatus::Quarantined
        } else if target.health.failures > 0 {
            TargetStatus::BackingOff
        } else {
            TargetStatus::Healthy
        };
        TargetView {
            tenant_id: target.tenant_id.clone(),
            target_id: target.target_id.clone(),
            base_url: target.base_url.clone(),
            token: "stored in AWS Secrets Manager",
            mapping: target.mapping.clone(),
            repair_interval_minutes: target.repair_interval_minutes,
            profile: target.profile,
            delete_users: target.delete_users,
            guarantees: target.profile.profile().guarantees(target.delete_users),
            status,
            health: target.health.clone(),
            pending,
            parked,
        }
    }
}

/// A delivery record waiting for its target: the member's latest state (not
/// an operation), the sequence number of the change that wrote it, how often
/// the target refused it, and why it is parked, if it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub member: Member,
    pub access: MemberAccess,
    pub seq: u64,
    pub refusals: u32,
    pub parked: Option<String>,
}

/// A member's delivery to one target is parked after this many refusals.
pub const MAX_REFUSALS: u32 = 5;
