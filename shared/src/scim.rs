//! SCIM 2.0 targets, the pure part: what a target should hold for a member,
//! the requests that get it there, drift repair plans, the retry and
//! quarantine policies. No I/O; `scim_client` and `delivery` do the talking.
//!
//! The mapping is fixed where RFC 7643 and the providers agree (userName =
//! email, externalId = the member's id, `active`) and configurable where
//! they do not (the group names, enterprise extension attributes).

use crate::access::{Member, MemberAccess, MemberStatus};
use crate::egress::EgressPolicy;
use crate::ids::{TargetId, TenantId, UserId};
use chrono::{DateTime, Duration as Span, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

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
}

impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetConfig").field("base_url", &self.base_url).field("token", &"<redacted>").field("mapping", &self.mapping).finish()
    }
}

pub const DEFAULT_REPAIR_MINUTES: u32 = 60;

impl TargetConfig {
    /// Every problem of the configuration, or none. `egress` says where a
    /// target may be (production: public HTTPS hosts on port 443 only).
    pub fn problems(&self, roles: &[String], egress: EgressPolicy) -> Vec<String> {
        let mut out = crate::egress::base_url_problems(&self.base_url, egress);
        if self.token.is_empty() || self.token.len() > 4096 || self.token.chars().any(|c| c.is_control() || c == ' ') {
            out.push("token must be 1 to 4096 printable characters without spaces".into());
        }
        let prefix = &self.mapping.group_prefix;
        if prefix.len() > 64 || prefix.chars().any(|c| c.is_control() || c == '"') {
            out.push("mapping.group_prefix must be at most 64 characters, without quotes".into());
        }
        for (scim, attr) in &self.mapping.enterprise {
            if !ENTERPRISE_ATTRIBUTES.contains(&scim.as_str()) {
                out.push(format!("mapping.enterprise.{scim}: not an enterprise extension attribute (one of {})", ENTERPRISE_ATTRIBUTES.join(", ")));
            }
            if attr.is_empty() || attr.len() > 64 {
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
    /// `healthy`, `backing_off` or `quarantined`.
    pub status: &'static str,
    pub health: Health,
    /// Member changes not yet delivered.
    pub pending: usize,
    /// Member changes the target refused repeatedly: (user id, reason).
    pub parked: Vec<ParkedDelivery>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParkedDelivery {
    pub user_id: UserId,
    pub reason: String,
}

impl TargetView {
    pub fn new(target: &Target, pending: usize, parked: Vec<ParkedDelivery>) -> Self {
        let status = if target.health.quarantined() {
            "quarantined"
        } else if target.health.failures > 0 {
            "backing_off"
        } else {
            "healthy"
        };
        TargetView {
            tenant_id: target.tenant_id.clone(),
            target_id: target.target_id.clone(),
            base_url: target.base_url.clone(),
            token: "stored in AWS Secrets Manager",
            mapping: target.mapping.clone(),
            repair_interval_minutes: target.repair_interval_minutes,
            status,
            health: target.health.clone(),
            pending,
            parked,
        }
    }
}

/// How a target has been answering.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Consecutive failed delivery runs.
    pub failures: u32,
    pub first_failure_at: Option<DateTime<Utc>>,
    /// No delivery before this instant.
    pub retry_at: Option<DateTime<Utc>>,
    pub quarantined_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_repair_at: Option<DateTime<Utc>>,
    /// What asked for the last complete repair (`api_call:<request id>`,
    /// `sweep:<run>`, ...).
    #[serde(default)]
    pub last_repair_cause: Option<String>,
    /// When the delivery run in progress started. Recorded before a run
    /// talks to the target and cleared with its outcome: a run that never
    /// finished (the function crashed, ran out of memory or time) is found
    /// here by the next one and counted as a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_started_at: Option<DateTime<Utc>>,
}

/// When a failing target is retried and when it is quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failed runs before quarantine.
    pub quarantine_after: u32,
    /// First retry delay; doubles with each failure up to `retry_max_secs`.
    pub retry_base_secs: i64,
    pub retry_max_secs: i64,
    /// Retry interval while quarantined.
    pub quarantine_retry_secs: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { quarantine_after: 5, retry_base_secs: 30, retry_max_secs: 900, quarantine_retry_secs: 3600 }
    }
}

/// A change of a target's standing worth an audit record and an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    Quarantined,
    Resumed,
}

impl Health {
    pub fn quarantined(&self) -> bool {
        self.quarantined_since.is_some()
    }

    pub fn may_attempt(&self, now: DateTime<Utc>) -> bool {
        self.retry_at.is_none_or(|r| r <= now)
    }

    /// After a failed run: the next retry slows down, and past the policy's
    /// limit the target is quarantined.
    pub fn on_failure(&self, policy: &Policy, now: DateTime<Utc>, error: &str) -> (Health, Option<Standing>) {
        let failures = self.failures.saturating_add(1);
        let quarantine = failures >= policy.quarantine_after;
        let delay = if quarantine {
            policy.quarantine_retry_secs
        } else {
            policy.retry_base_secs.saturating_mul(1 << (failures - 1).min(20)).min(policy.retry_max_secs)
        };
        let entered = quarantine && !self.quarantined();
        let next = Health {
            failures,
            first_failure_at: self.first_failure_at.or(Some(now)),
            retry_at: Some(now + Span::seconds(delay)),
            quarantined_since: if quarantine { self.quarantined_since.or(Some(now)) } else { None },
            last_error: Some(error.chars().take(500).collect()),
            attempt_started_at: None,
            ..self.clone()
        };
        (next, entered.then_some(Standing::Quarantined))
    }

    /// The run recorded in [`Health::attempt_started_at`] never finished:
    /// it counts as a failed run of the target.
    pub fn unfinished_attempt(&self, policy: &Policy, now: DateTime<Utc>) -> Option<(Health, Option<Standing>)> {
        let started = self.attempt_started_at?;
        Some(self.on_failure(policy, now, &format!("the delivery run started at {} did not finish (the function crashed, ran out of memory or time)", started.to_rfc3339())))
    }

    /// After a run that reached the target: back to normal.
    pub fn on_success(&self, now: DateTime<Utc>) -> (Health, Option<Standing>) {
        let resumed = self.quarantined();
        let next = Health {
            failures: 0,
            first_failure_at: None,
            retry_at: None,
            quarantined_since: None,
            last_error: None,
            last_success_at: Some(now),
            last_repair_at: self.last_repair_at,
            last_repair_cause: self.last_repair_cause.clone(),
            attempt_started_at: None,
        };
        (next, resumed.then_some(Standing::Resumed))
    }
}

/// What a target should hold for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredUser {
    pub user_id: UserId,
    pub user_name: String,
    /// False once the member is deprovisioned: the target's user is deleted.
    pub present: bool,
    pub active: bool,
    /// Names of the groups the user belongs in (one per role).
    pub groups: BTreeSet<String>,
    pub enterprise: BTreeMap<String, String>,
}

pub fn group_name(mapping: &Mapping, role: &str) -> String {
    format!("{}{role}", mapping.group_prefix)
}

/// The groups Entitle owns on a target: one per role of the model.
pub fn managed_groups(mapping: &Mapping, roles: &[String]) -> BTreeSet<String> {
    roles.iter().map(|r| group_name(mapping, r)).collect()
}

pub fn desired_user(mapping: &Mapping, member: &Member, access: &MemberAccess) -> DesiredUser {
    let present = !member.removed && access.status != MemberStatus::Deprovisioned;
    DesiredUser {
        user_id: member.user_id.clone(),
        user_name: member.email.clone(),
        present,
        active: present && access.status == MemberStatus::Active,
        groups: if present { access.roles.iter().map(|r| group_name(mapping, r)).collect() } else { BTreeSet::new() },
        enterprise: mapping.enterprise.iter().filter_map(|(scim, attr)| member.attributes.get(attr).map(|v| (scim.clone(), v.clone()))).collect(),
    }
}

/// A user as a target holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimUser {
    pub id: String,
    pub user_name: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub enterprise: BTreeMap<String, String>,
    /// The ETag (`meta.version`), when the target offers one.
    pub version: Option<String>,
}

impl ScimUser {
    pub fn from_json(v: &Value) -> Option<ScimUser> {
        let enterprise = v[ENTERPRISE_SCHEMA]
            .as_object()
            .map(|o| o.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect())
            .unwrap_or_default();
        Some(ScimUser {
            id: v["id"].as_str()?.to_string(),
            user_name: v["userName"].as_str()?.to_string(),
            external_id: v["externalId"].as_str().map(str::to_string),
            // RFC 7643: a user without `active` is treated as active.
            active: v["active"].as_bool().unwrap_or(true),
            enterprise,
            version: v["meta"]["version"].as_str().map(str::to_string),
        })
    }
}

/// The one request that brings a user's own attributes in line.
#[derive(Debug, Clone, PartialEq)]
pub enum UserStep {
    Nothing,
    Create(Value),
    /// `PatchOp` operations.
    Patch(Vec<Value>),
    Delete,
}

pub fn user_step(desired: &DesiredUser, actual: Option<&ScimUser>) -> UserStep {
    match (desired.present, actual) {
        (false, None) => UserStep::Nothing,
        (false, Some(_)) => UserStep::Delete,
        // Never create an account that has no access.
        (true, None) if !desired.active => UserStep::Nothing,
        (true, None) => UserStep::Create(create_body(desired)),
        (true, Some(u)) => {
            let ops = patch_ops(desired, u);
            if ops.is_empty() {
                UserStep::Nothing
            } else {
                UserStep::Patch(ops)
            }
        }
    }
}

pub fn create_body(desired: &DesiredUser) -> Value {
    let mut body = json!({
        "schemas": [USER_SCHEMA],
        "userName": desired.user_name,
        "externalId": desired.user_id,
        "active": desired.active,
        "emails": [{"value": desired.user_name, "type": "work", "primary": true}],
    });
    if !desired.enterprise.is_empty() {
        body["schemas"] = json!([USER_SCHEMA, ENTERPRISE_SCHEMA]);
        body[ENTERPRISE_SCHEMA] = json!(desired.enterprise);
    }
    body
}

/// `replace` operations for every attribute that differs (an adopted user
/// gets its `externalId` here).
pub fn patch_ops(desired: &DesiredUser, actual: &ScimUser) -> Vec<Value> {
    let mut ops = Vec::new();
    if actual.user_name != desired.user_name {
        ops.push(json!({"op": "replace", "path": "userName", "value": desired.user_name}));
    }
    if actual.external_id.as_deref() != Some(desired.user_id.as_str()) {
        ops.push(json!({"op": "replace", "path": "externalId", "value": desired.user_id}));
    }
    if actual.active != desired.active {
        ops.push(json!({"op": "replace", "path": "active", "value": desired.active}));
    }
    for (attr, value) in &desired.enterprise {
        if actual.enterprise.get(attr) != Some(value) {
            ops.push(json!({"op": "replace", "path": format!("{ENTERPRISE_SCHEMA}:{attr}"), "value": value}));
        }
    }
    ops
}

pub fn patch_body(ops: Vec<Value>) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
}

/// Group changes for one user: (groups to join, groups to leave), among the
/// groups Entitle manages only.
pub fn group_changes(desired: &DesiredUser, member_of: &BTreeSet<String>, managed: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let want: BTreeSet<&String> = desired.groups.iter().filter(|g| managed.contains(*g)).collect();
    let have: BTreeSet<&String> = member_of.iter().filter(|g| managed.contains(*g)).collect();
    (want.difference(&have).map(|g| (*g).clone()).collect(), have.difference(&want).map(|g| (*g).clone()).collect())
}

/// A quoted string of a SCIM filter (RFC 7644 §3.4.2.2: a JSON string).
pub fn quoted(value: &str) -> String {
    Value::from(value).to_string()
}

pub fn filter_eq(attr: &str, value: &str) -> String {
    format!("{attr} eq {}", quoted(value))
}

pub fn add_member_op(scim_user_id: &str) -> Value {
    json!({"op": "add", "path": "members", "value": [{"value": scim_user_id}]})
}

pub fn remove_member_op(scim_user_id: &str) -> Value {
    json!({"op": "remove", "path": format!("members[value eq {}]", quoted(scim_user_id))})
}

/// A group as listed for drift repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimGroup {
    pub id: String,
    pub name: String,
    pub members: BTreeSet<String>,
}

impl ScimGroup {
    pub fn from_json(v: &Value) -> Option<ScimGroup> {
        Some(ScimGroup {
            id: v["id"].as_str()?.to_string(),
            name: v["displayName"].as_str()?.to_string(),
            members: v["members"].as_array().into_iter().flatten().filter_map(|m| m["value"].as_str().map(str::to_string)).collect(),
        })
    }
}

/// Whether a user found by its `userName` belongs to someone else: its
/// `externalId` names another member (or another system's id). SCIM
/// `userName`s are case-insensitive, so `ADMIN@corp.example` finds the user
/// of `admin@corp.example`; adopting it would hand one member's account
/// (its groups, `active`, its deletion) to another. Only a user without an
/// `externalId`, or with ours, may be adopted.
pub fn owned_by_another(desired: &DesiredUser, user: &ScimUser) -> Option<String> {
    match user.external_id.as_deref().filter(|e| !e.is_empty()) {
        Some(e) if e != desired.user_id.as_str() => Some(format!(
            "the target's user {} holds userName {:?} (matched case-insensitively) for externalId {:?}, not for member {}: not adopted",
            user.id, user.user_name, e, desired.user_id
        )),
        _ => None,
    }
}

/// What drift repair found: each member with the user the target holds for
/// it (matched on externalId, then userName) and the managed groups that
/// user is in; members whose userName is held by someone else's user
/// (never adopted, see [`owned_by_another`]); and members of managed groups
/// that are no member's user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RepairPlan {
    pub members: Vec<(DesiredUser, Option<ScimUser>, BTreeSet<String>)>,
    /// (member, why its user cannot be managed).
    pub conflicts: Vec<(DesiredUser, String)>,
    /// (group id, group name, SCIM user id) to remove.
    pub strangers: Vec<(String, String, String)>,
}

pub fn repair_plan(desired: Vec<DesiredUser>, users: &[ScimUser], groups: &[ScimGroup], managed: &BTreeSet<String>) -> RepairPlan {
    let by_external: BTreeMap<&str, &ScimUser> = users.iter().filter_map(|u| u.external_id.as_deref().map(|e| (e, u))).collect();
    let by_name: BTreeMap<String, &ScimUser> = users.iter().map(|u| (u.user_name.to_lowercase(), u)).collect();
    let managed_groups: Vec<&ScimGroup> = groups.iter().filter(|g| managed.contains(&g.name)).collect();
    let mut ours: BTreeSet<String> = BTreeSet::new();
    let mut plan = RepairPlan::default();
    for d in desired {
        let user = match by_external.get(d.user_id.as_str()) {
            Some(u) => Some((*u).clone()),
            None => match by_name.get(&d.user_name.to_lowercase()) {
                Some(u) => match owned_by_another(&d, u) {
                    Some(why) => {
                        plan.conflicts.push((d, why));
                        continue;
                    }
                    None => Some((*u).clone()),
                },
                None => None,
            },
        };
        let member_of: BTreeSet<String> = match &user {
            Some(u) => {
                ours.insert(u.id.clone());
                managed_groups.iter().filter(|g| g.members.contains(&u.id)).map(|g| g.name.clone()).collect()
            }
            None => BTreeSet::new(),
        };
        plan.members.push((d, user, member_of));
    }
    for g in managed_groups {
        for m in &g.members {
            if !ours.contains(m) {
                plan.strangers.push((g.id.clone(), g.name.clone(), m.clone()));
            }
        }
    }
    plan
}

/// How long to wait before retry `attempt` (0-based) of a request the target
/// refused with 429 or 5xx: the target's `Retry-After` when it sent one,
/// else exponential backoff from 200 ms, capped at 5 s, with jitter
/// (`jitter` in 0..1 picks a point in the upper half).
pub fn retry_delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Duration {
    if let Some(r) = retry_after {
        return r;
    }
    let cap = Duration::from_millis(200u64.saturating_mul(1 << attempt.min(10))).min(Duration::from_secs(5));
    cap.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entitlements;

    fn member(id: &str, email: &str, attrs: &[(&str, &str)], removed: bool) -> Member {
        Member {
            user_id: UserId::parse(id).unwrap(),
            email: email.into(),
            groups: BTreeSet::new(),
            attributes: attrs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            seq: 1,
            removed,
        }
    }

    fn access(status: MemberStatus, roles: &[&str]) -> MemberAccess {
        MemberAccess { status, roles: roles.iter().map(|r| r.to_string()).collect(), entitlements: Entitlements::new() }
    }

    fn mapping() -> Mapping {
        Mapping { group_prefix: "entitle-".into(), enterprise: [("department".to_string(), "dept".to_string())].into() }
    }

    fn scim_user(id: &str, name: &str, ext: Option<&str>, active: bool) -> ScimUser {
        ScimUser { id: id.into(), user_name: name.into(), external_id: ext.map(str::to_string), active, enterprise: BTreeMap::new(), version: Some("W/\"1\"".into()) }
    }

    #[test]
    fn desired_users_follow_the_member_status() {
        let m = member("u1", "u1@x.com", &[("dept", "Sales")], false);
        let d = desired_user(&mapping(), &m, &access(MemberStatus::Active, &["admin", "member"]));
        assert!(d.present && d.active);
        assert_eq!(d.groups, ["entitle-admin".to_string(), "entitle-member".to_string()].into());
        assert_eq!(d.enterprise.get("department").map(String::as_str), Some("Sales"));
        let suspended = desired_user(&mapping(), &m, &access(MemberStatus::Suspended, &[]));
        assert!(suspended.present && !suspended.active && suspended.groups.is_empty());
        let gone = desired_user(&mapping(), &member("u1", "u1@x.com", &[], true), &access(MemberStatus::Deprovisioned, &[]));
        assert!(!gone.present && !gone.active);
    }

    #[test]
    fn the_user_step_creates_only_with_access_and_deletes_only_on_deprovision() {
        let m = member("u1", "u1@x.com", &[], false);
        let active = desired_user(&mapping(), &m, &access(MemberStatus::Active, &["member"]));
        let pending = desired_user(&mapping(), &m, &access(MemberStatus::PendingSeat, &[]));
        let gone = desired_user(&mapping(), &member("u1", "u1@x.com", &[], true), &access(MemberStatus::Deprovisioned, &[]));
        let UserStep::Create(body) = user_step(&active, None) else { panic!("create") };
        assert_eq!(body["externalId"], "u1");
        assert_eq!(body["userName"], "u1@x.com");
        assert_eq!(body["active"], true);
        assert_eq!(user_step(&pending, None), UserStep::Nothing);
        assert_eq!(user_step(&gone, None), UserStep::Nothing);
        let existing = scim_user("s1", "u1@x.com", Some("u1"), true);
        assert_eq!(user_step(&active, Some(&existing)), UserStep::Nothing);
        assert_eq!(user_step(&pending, Some(&existing)), UserStep::Patch(vec![json!({"op": "replace", "path": "active", "value": false})]));
        assert_eq!(user_step(&gone, Some(&existing)), UserStep::Delete);
    }

    #[test]
    fn an_adopted_user_gets_its_external_id_and_attributes() {
        let m = member("u1", "u1@x.com", &[("dept", "Ops")], false);
        let d = desired_user(&mapping(), &m, &access(MemberStatus::Active, &[]));
        let found = scim_user("s9", "u1@x.com", None, false);
        let ops = patch_ops(&d, &found);
        assert!(ops.contains(&json!({"op": "replace", "path": "externalId", "value": "u1"})));
        assert!(ops.contains(&json!({"op": "replace", "path": "active", "value": true})));
        assert!(ops.contains(&json!({"op": "replace", "path": format!("{ENTERPRISE_SCHEMA}:department"), "value": "Ops"})));
        assert_eq!(ops.len(), 3);
    }

    #[test]
    fn group_changes_touch_managed_groups_only() {
        let managed = managed_groups(&mapping(), &["admin".into(), "member".into(), "viewer".into()]);
        let m = member("u1", "u1@x.com", &[], false);
        let d = desired_user(&mapping(), &m, &access(MemberStatus::Active, &["member"]));
        let member_of: BTreeSet<String> = ["entitle-admin".to_string(), "hand-made".to_string()].into();
        let (add, remove) = group_changes(&d, &member_of, &managed);
        assert_eq!(add, vec!["entitle-member".to_string()]);
        assert_eq!(remove, vec!["entitle-admin".to_string()]);
    }

    #[test]
    fn filters_and_member_paths_quote_values() {
        assert_eq!(filter_eq("userName", "a\"b@x.com"), r#"userName eq "a\"b@x.com""#);
        assert_eq!(remove_member_op("id1")["path"], r#"members[value eq "id1"]"#);
    }

    #[test]
    fn repair_matches_users_and_finds_strangers_in_managed_groups() {
        let managed = managed_groups(&Mapping::default(), &["admin".into(), "member".into()]);
        let a = desired_user(&Mapping::default(), &member("a", "a@x.com", &[], false), &access(MemberStatus::Active, &["admin"]));
        let b = desired_user(&Mapping::default(), &member("b", "B@x.com", &[], false), &access(MemberStatus::Active, &["member"]));
        let c = desired_user(&Mapping::default(), &member("c", "c@x.com", &[], false), &access(MemberStatus::Active, &["member"]));
        let users = vec![scim_user("s-a", "a@x.com", Some("a"), true), scim_user("s-b", "b@x.com", None, true), scim_user("s-z", "z@x.com", None, true)];
        let groups = vec![
            ScimGroup { id: "g1".into(), name: "admin".into(), members: ["s-a".to_string(), "s-z".to_string()].into() },
            ScimGroup { id: "g2".into(), name: "theirs".into(), members: ["s-z".to_string()].into() },
        ];
        let plan = repair_plan(vec![a, b, c], &users, &groups, &managed);
        assert_eq!(plan.members[0].1.as_ref().map(|u| u.id.as_str()), Some("s-a"));
        assert_eq!(plan.members[0].2, ["admin".to_string()].into());
        assert_eq!(plan.members[1].1.as_ref().map(|u| u.id.as_str()), Some("s-b"), "matched on userName, case-insensitively");
        assert!(plan.members[2].1.is_none());
        assert_eq!(plan.strangers, vec![("g1".to_string(), "admin".to_string(), "s-z".to_string())], "only managed groups are cleaned");
    }

    #[test]
    fn a_case_variant_user_name_never_adopts_another_members_user() {
        let managed = managed_groups(&Mapping::default(), &["admin".into(), "member".into()]);
        let admin = desired_user(&Mapping::default(), &member("u1", "admin@corp.example", &[], false), &access(MemberStatus::Active, &["admin"]));
        let twin = desired_user(&Mapping::default(), &member("u2", "ADMIN@corp.example", &[], false), &access(MemberStatus::Active, &["member"]));
        let users = vec![scim_user("s-1", "admin@corp.example", Some("u1"), true)];
        let groups = vec![ScimGroup { id: "g1".into(), name: "admin".into(), members: ["s-1".to_string()].into() }];
        let plan = repair_plan(vec![admin.clone(), twin.clone()], &users, &groups, &managed);
        assert_eq!(plan.members.len(), 1, "only u1 is matched to s-1");
        assert_eq!(plan.members[0].0.user_id.as_str(), "u1");
        assert_eq!(plan.conflicts.len(), 1);
        assert_eq!(plan.conflicts[0].0.user_id.as_str(), "u2");
        assert!(plan.conflicts[0].1.contains("externalId \"u1\""), "{}", plan.conflicts[0].1);
        assert!(plan.strangers.is_empty(), "s-1 is u1's and stays in its group");
        // Alone (u1 not a member here), u2 still does not take s-1 over.
        let plan = repair_plan(vec![twin.clone()], &users, &groups, &managed);
        assert!(plan.members.is_empty() && plan.conflicts.len() == 1);
        // A user another system gave an externalId is not adopted either; one without is.
        assert!(owned_by_another(&twin, &scim_user("s-9", "admin@corp.example", Some("okta-77"), true)).is_some());
        assert!(owned_by_another(&twin, &scim_user("s-9", "admin@corp.example", None, true)).is_none());
        assert!(owned_by_another(&twin, &scim_user("s-9", "admin@corp.example", Some("u2"), true)).is_none());
    }

    #[test]
    fn retries_back_off_with_jitter_and_honour_retry_after() {
        assert_eq!(retry_delay(0, None, 0.0), Duration::from_millis(100));
        assert_eq!(retry_delay(0, None, 1.0), Duration::from_millis(200));
        assert_eq!(retry_delay(3, None, 1.0), Duration::from_millis(1600));
        assert_eq!(retry_delay(30, None, 1.0), Duration::from_secs(5));
        assert_eq!(retry_delay(1, Some(Duration::from_secs(7)), 0.3), Duration::from_secs(7));
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 31 Dec 2025 00:00:30 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn failures_slow_down_then_quarantine_and_success_resumes() {
        let policy = Policy { quarantine_after: 3, retry_base_secs: 10, retry_max_secs: 15, quarantine_retry_secs: 600 };
        let t0 = Utc::now();
        let (h1, s1) = Health::default().on_failure(&policy, t0, "connection refused");
        assert_eq!((h1.failures, s1), (1, None));
        assert_eq!(h1.retry_at, Some(t0 + Span::seconds(10)));
        assert!(!h1.may_attempt(t0) && h1.may_attempt(t0 + Span::seconds(10)));
        let (h2, _) = h1.on_failure(&policy, t0, "503");
        assert_eq!(h2.retry_at, Some(t0 + Span::seconds(15)), "capped");
        let (h3, s3) = h2.on_failure(&policy, t0, "503");
        assert_eq!(s3, Some(Standing::Quarantined));
        assert_eq!(h3.retry_at, Some(t0 + Span::seconds(600)));
        assert_eq!(h3.first_failure_at, Some(t0));
        let (h4, s4) = h3.on_failure(&policy, t0, "503");
        assert_eq!(s4, None, "announced once");
        assert!(h4.quarantined());
        let (h5, s5) = h4.on_success(t0);
        assert_eq!(s5, Some(Standing::Resumed));
        assert_eq!(h5.failures, 0);
        assert!(h5.may_attempt(t0) && !h5.quarantined());
        assert_eq!(Health::default().on_success(t0).1, None);
    }

    #[test]
    fn an_attempt_that_never_finished_counts_as_a_failure() {
        let policy = Policy { quarantine_after: 2, ..Policy::default() };
        let t0 = Utc::now();
        assert!(Health::default().unfinished_attempt(&policy, t0).is_none());
        let started = Health { attempt_started_at: Some(t0), ..Health::default() };
        let (h1, s1) = started.unfinished_attempt(&policy, t0 + Span::seconds(90)).unwrap();
        assert_eq!((h1.failures, s1, h1.attempt_started_at), (1, None, None));
        assert!(h1.last_error.as_deref().unwrap().contains("did not finish"));
        let (h2, s2) = Health { attempt_started_at: Some(t0), ..h1 }.unfinished_attempt(&policy, t0).unwrap();
        assert_eq!((h2.failures, s2), (2, Some(Standing::Quarantined)), "crashes count towards quarantine like any failure");
        assert_eq!(h2.on_success(t0).0.attempt_started_at, None);
    }

    /// Applies one round of the planner to a target modelled as data.
    fn apply(d: &DesiredUser, user: Option<ScimUser>, member_of: BTreeSet<String>, managed: &BTreeSet<String>) -> (Option<ScimUser>, BTreeSet<String>) {
        let user = match user_step(d, user.as_ref()) {
            UserStep::Nothing => user,
            UserStep::Delete => return (None, BTreeSet::new()),
            UserStep::Create(body) => Some(ScimUser { id: "new".into(), version: None, ..ScimUser::from_json(&{ let mut b = body; b["id"] = "new".into(); b }).unwrap() }),
            UserStep::Patch(ops) => {
                let mut u = user.unwrap();
                for op in ops {
                    match op["path"].as_str().unwrap() {
                        "userName" => u.user_name = op["value"].as_str().unwrap().into(),
                        "externalId" => u.external_id = op["value"].as_str().map(str::to_string),
                        "active" => u.active = op["value"].as_bool().unwrap(),
                        p => {
                            u.enterprise.insert(p.rsplit(':').next().unwrap().into(), op["value"].as_str().unwrap().into());
                        }
                    }
                }
                Some(u)
            }
        };
        let Some(user) = user else { return (None, member_of) };
        let (join, leave) = group_changes(d, &member_of, managed);
        let mut groups = member_of;
        groups.extend(join);
        for g in leave {
            groups.remove(&g);
        }
        (Some(user), groups)
    }

    proptest::proptest! {
        /// From any state of the target, one round reaches what desired
        /// access says, a second round changes nothing, and what Entitle
        /// does not manage stays as it was.
        #[test]
        fn one_round_converges_and_a_second_changes_nothing(
            present: bool, active: bool, want in proptest::collection::btree_set(0usize..3, 0..3),
            exists: bool, was_active: bool, ext in proptest::option::of(0usize..2), had in proptest::collection::btree_set(0usize..4, 0..4),
        ) {
            let names = ["entitle-admin", "entitle-member", "entitle-viewer", "hand-made"];
            let managed: BTreeSet<String> = names[..3].iter().map(|s| s.to_string()).collect();
            let d = DesiredUser {
                user_id: UserId::parse("u1").unwrap(),
                user_name: "u1@x.com".into(),
                present,
                active: present && active,
                groups: if present && active { want.iter().map(|i| names[*i].to_string()).collect() } else { BTreeSet::new() },
                enterprise: [("department".to_string(), "Ops".to_string())].into(),
            };
            let user = exists.then(|| ScimUser { id: "s1".into(), user_name: "u1@x.com".into(), external_id: ext.map(|e| ["u1", "other"][e].to_string()), active: was_active, enterprise: BTreeMap::new(), version: None });
            let member_of: BTreeSet<String> = if exists { had.iter().map(|i| names[*i].to_string()).collect() } else { BTreeSet::new() };
            let (after, groups) = apply(&d, user, member_of.clone(), &managed);
            match &after {
                None => proptest::prop_assert!(!d.present || (!d.active && !exists)),
                Some(u) => {
                    proptest::prop_assert!(d.present);
                    proptest::prop_assert_eq!((u.active, u.external_id.as_deref()), (d.active, Some("u1")));
                    proptest::prop_assert_eq!(u.enterprise.get("department").map(String::as_str), Some("Ops"));
                    let held: BTreeSet<String> = groups.intersection(&managed).cloned().collect();
                    proptest::prop_assert_eq!(&held, &d.groups);
                    proptest::prop_assert_eq!(groups.contains("hand-made"), member_of.contains("hand-made"));
                    proptest::prop_assert_eq!(user_step(&d, Some(u)), UserStep::Nothing);
                    let (join, leave) = group_changes(&d, &groups, &managed);
                    proptest::prop_assert!(join.is_empty() && leave.is_empty());
                }
            }
        }
    }

    #[test]
    fn configurations_name_every_problem_and_hide_the_token() {
        let roles = vec!["admin".to_string()];
        let good = TargetConfig { base_url: "https://idp.example.com/scim/v2".into(), token: "s3cret".into(), mapping: mapping(), repair_interval_minutes: None };
        assert!(good.problems(&roles, EgressPolicy::Public).is_empty());
        assert!(!format!("{good:?}").contains("s3cret"));
        let http = TargetConfig { base_url: "http://127.0.0.1:1/x".into(), ..good.clone() };
        assert_eq!(http.problems(&roles, EgressPolicy::Public).len(), 3, "scheme, port and a loopback host");
        assert!(http.problems(&roles, EgressPolicy::Local).is_empty());
        let bad = TargetConfig {
            base_url: "https://x/?q".into(),
            token: "".into(),
            mapping: Mapping { group_prefix: "a\"".into(), enterprise: [("manager".to_string(), "m".to_string())].into() },
            repair_interval_minutes: Some(1),
        };
        assert_eq!(bad.problems(&roles, EgressPolicy::Public).len(), 6, "{:?}", bad.problems(&roles, EgressPolicy::Public));
    }
}
