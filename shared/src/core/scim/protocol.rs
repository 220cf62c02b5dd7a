//! The wire protocol as Entitle uses it: what a target should hold for a
//! member, the one request that gets a user there, group changes, filters,
//! drift repair plans, retries, and what a target's failures mean.

use super::profile::RemoveForm;
use super::target::*;
use crate::core::access::{Member, MemberAccess, MemberStatus};
use crate::core::ids::UserId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// What a target should hold for one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredUser {
    pub user_id: UserId,
    pub user_name: String,
    pub email: String,
    /// The target rewrites the userName it is given (its profile says so):
    /// never compared, never sent again.
    pub keep_user_name: bool,
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
        email: member.email.clone(),
        keep_user_name: false,
        present,
        active: present && access.status == MemberStatus::Active,
        groups: if present { access.roles.iter().map(|r| group_name(mapping, r)).collect() } else { BTreeSet::new() },
        enterprise: mapping.enterprise.iter().filter_map(|(scim, attr)| member.attributes.get(attr).map(|v| (scim.clone(), v.clone()))).collect(),
    }
}

/// What a target of `target`'s profile should hold for one member: its
/// `userName` as the target takes it, and a removed member's user kept and
/// deactivated where the target does not delete (or cannot undo a delete
/// and the configuration does not ask for one).
pub fn desired_on(target: &Target, member: &Member, access: &MemberAccess) -> DesiredUser {
    let profile = target.profile.profile();
    let mut d = desired_user(&target.mapping, member, access);
    d.user_name = profile.user_name(&member.email);
    d.keep_user_name = profile.rewrites_user_name;
    if !d.present && !profile.deletes_on_removal(target.delete_users) {
        d.present = true;
        d.active = false;
    }
    d
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
        let enterprise = v[ENTERPRISE_SCHEMA].as_object().map(|o| o.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect()).unwrap_or_default();
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
    Patch(Vec<PatchOp>),
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
        "emails": [{"value": desired.email, "type": "work", "primary": true}],
    });
    if !desired.enterprise.is_empty() {
        body["schemas"] = json!([USER_SCHEMA, ENTERPRISE_SCHEMA]);
        body[ENTERPRISE_SCHEMA] = json!(desired.enterprise);
    }
    body
}

/// What a PATCH operation does (RFC 7644 §3.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PatchKind {
    Add,
    Remove,
    Replace,
}

/// One operation of a SCIM PATCH request, serialised as a target reads it
/// (`{"op": "add", "path": "members", "value": [...]}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOp {
    pub op: PatchKind,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl PatchOp {
    pub fn add(path: impl Into<String>, value: Value) -> Self {
        PatchOp { op: PatchKind::Add, path: path.into(), value: Some(value) }
    }
    pub fn remove(path: impl Into<String>) -> Self {
        PatchOp { op: PatchKind::Remove, path: path.into(), value: None }
    }
    pub fn replace(path: impl Into<String>, value: Value) -> Self {
        PatchOp { op: PatchKind::Replace, path: path.into(), value: Some(value) }
    }
}

/// `replace` operations for every attribute that differs (an adopted user
/// gets its `externalId` here).
pub fn patch_ops(desired: &DesiredUser, actual: &ScimUser) -> Vec<PatchOp> {
    let mut ops = Vec::new();
    if !desired.keep_user_name && actual.user_name != desired.user_name {
        ops.push(PatchOp::replace("userName", json!(desired.user_name)));
    }
    if actual.external_id.as_deref() != Some(desired.user_id.as_str()) {
        ops.push(PatchOp::replace("externalId", json!(desired.user_id)));
    }
    if actual.active != desired.active {
        ops.push(PatchOp::replace("active", json!(desired.active)));
    }
    for (attr, value) in &desired.enterprise {
        if actual.enterprise.get(attr) != Some(value) {
            ops.push(PatchOp::replace(format!("{ENTERPRISE_SCHEMA}:{attr}"), json!(value)));
        }
    }
    ops
}

pub fn patch_body(ops: &[PatchOp]) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
}

/// The managed groups a user is in, as far as the target can say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberOf {
    /// Groups the user is in.
    pub groups: BTreeSet<String>,
    /// Groups the target cannot say about (it does not list their members,
    /// or listed one empty without confirming it): never taken for "not in".
    pub unknown: BTreeSet<String>,
}

impl MemberOf {
    pub fn known(groups: BTreeSet<String>) -> Self {
        MemberOf { groups, unknown: BTreeSet::new() }
    }
    /// A target that cannot say about any group.
    pub fn unknown(managed: &BTreeSet<String>) -> Self {
        MemberOf { groups: BTreeSet::new(), unknown: managed.clone() }
    }
    /// Every group the user may be in.
    pub fn maybe(&self) -> BTreeSet<String> {
        self.groups.union(&self.unknown).cloned().collect()
    }
}

/// Group changes for one user: (groups to join, groups to leave), among the
/// groups Entitle manages only. A group the target cannot say about is
/// never taken for "not in": the user joins it if it belongs there and
/// leaves it otherwise (a join of a member or a removal of a non-member
/// changes nothing).
pub fn group_changes(desired: &DesiredUser, member_of: &MemberOf, managed: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
    let want: BTreeSet<&String> = desired.groups.iter().filter(|g| managed.contains(*g)).collect();
    let have: BTreeSet<&String> = member_of.groups.iter().filter(|g| managed.contains(*g)).collect();
    let maybe: BTreeSet<&String> = have.iter().copied().chain(member_of.unknown.iter().filter(|g| managed.contains(*g))).collect();
    (want.difference(&have).map(|g| (*g).clone()).collect(), maybe.difference(&want).map(|g| (*g).clone()).collect())
}

/// A quoted string of a SCIM filter (RFC 7644 §3.4.2.2: a JSON string).
pub fn quoted(value: &str) -> String {
    Value::from(value).to_string()
}

pub fn filter_eq(attr: &str, value: &str) -> String {
    format!("{attr} eq {}", quoted(value))
}

pub fn add_member_op(scim_user_id: &str) -> PatchOp {
    PatchOp::add("members", json!([{"value": scim_user_id}]))
}

pub fn remove_member_op(scim_user_id: &str) -> PatchOp {
    PatchOp::remove(format!("members[value eq {}]", quoted(scim_user_id)))
}

/// The `PatchOp` operations that make these changes of one group, in the
/// form the target takes ([`RemoveForm`]).
pub fn membership_ops_for(changes: &[&GroupChange], form: RemoveForm) -> Vec<PatchOp> {
    let members = |add: bool| -> Vec<Value> { changes.iter().filter(|c| c.add == add).map(|c| json!({"value": c.scim_user})).collect() };
    match form {
        RemoveForm::FilterOr => membership_ops(changes),
        RemoveForm::OnePerOperation => {
            let mut ops = Vec::new();
            let adds = members(true);
            if !adds.is_empty() {
                ops.push(PatchOp::add("members", Value::Array(adds)));
            }
            ops.extend(changes.iter().filter(|c| !c.add).map(|c| remove_member_op(&c.scim_user)));
            ops
        }
        RemoveForm::MembersObject => {
            let mut ops = Vec::new();
            for (add, op) in [(true, PatchKind::Add), (false, PatchKind::Remove)] {
                let m = members(add);
                if !m.is_empty() {
                    ops.push(PatchOp { op, path: "members".into(), value: Some(json!({"members": m})) });
                }
            }
            ops
        }
    }
}

/// A membership change of one user in one managed group, applied after the
/// users of a batch (see [`membership_ops`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupChange {
    pub group: String,
    pub add: bool,
    pub scim_user: String,
}

/// The `PatchOp` operations of one group's changes: the additions in one
/// operation (a multi-valued `add`), the removals in one operation whose
/// value filter names them all (`members[value eq "a" or value eq "b"]`,
/// RFC 7644 §3.5.2.2). A target applies the request at once, so a group of
/// thousands of members is rewritten (and searched) once per batch, not
/// once per member.
pub fn membership_ops(changes: &[&GroupChange]) -> Vec<PatchOp> {
    let adds: Vec<Value> = changes.iter().filter(|c| c.add).map(|c| json!({"value": c.scim_user})).collect();
    let removes: Vec<String> = changes.iter().filter(|c| !c.add).map(|c| format!("value eq {}", quoted(&c.scim_user))).collect();
    let mut ops = Vec::new();
    if !adds.is_empty() {
        ops.push(PatchOp::add("members", Value::Array(adds)));
    }
    if !removes.is_empty() {
        ops.push(PatchOp::remove(format!("members[{}]", removes.join(" or "))));
    }
    ops
}

/// What one request removing members from a group should take: a target
/// may search the whole group once per removed member (scim2-server does,
/// some 60 ms per member in a group of 10,000), so a request naming 100
/// members can outrun the request timeout where 40 take a few seconds.
pub const REMOVALS_AIM: std::time::Duration = std::time::Duration::from_secs(4);

/// How many members the next removal request of a session names, from how
/// long the last one, naming `n`, took: scaled towards [`REMOVALS_AIM`],
/// growing at most twofold a step, between 1 and `max`.
pub fn next_removal_batch(n: usize, took: std::time::Duration, max: usize) -> usize {
    let scaled = n as f64 * REMOVALS_AIM.as_secs_f64() / took.as_secs_f64().max(0.001);
    (scaled.floor() as usize).clamp(1, n.saturating_mul(2).clamp(1, max.max(1)))
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
        Some(e) if e != desired.user_id.as_str() => {
            Some(format!("the target's user {} holds userName {:?} (matched case-insensitively) for externalId {:?}, not for member {}: not adopted", user.id, user.user_name, e, desired.user_id))
        }
        _ => None,
    }
}

/// What drift repair found: each member with the user the target holds for
/// it (matched on externalId, then userName) and the managed groups that
/// user is in; members whose userName is held by someone else's user
/// (never adopted, see [`owned_by_another`]); and members of managed groups
/// that are no member's user. Without the groups' members (a target that
/// does not list them), each member's groups are unknown and no stranger
/// can be seen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RepairPlan {
    pub members: Vec<(DesiredUser, Option<ScimUser>, Option<MemberOf>)>,
    /// (member, why its user cannot be managed).
    pub conflicts: Vec<(DesiredUser, String)>,
    /// (group id, group name, SCIM user id) to remove.
    pub strangers: Vec<(String, String, String)>,
}

/// `groups` without members (listed empty, not confirmed) are unknown for
/// every user: never taken for "not in".
pub fn repair_plan(desired: Vec<DesiredUser>, users: &[ScimUser], groups: Option<&[ScimGroup]>, managed: &BTreeSet<String>) -> RepairPlan {
    let by_external: BTreeMap<&str, &ScimUser> = users.iter().filter_map(|u| u.external_id.as_deref().map(|e| (e, u))).collect();
    let by_name: BTreeMap<String, &ScimUser> = users.iter().map(|u| (u.user_name.to_lowercase(), u)).collect();
    let managed_groups: Vec<&ScimGroup> = groups.unwrap_or_default().iter().filter(|g| managed.contains(&g.name)).collect();
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
        let member_of: Option<MemberOf> = match &user {
            Some(_) if groups.is_none() => None,
            Some(u) => {
                ours.insert(u.id.clone());
                Some(MemberOf {
                    groups: managed_groups.iter().filter(|g| g.members.contains(&u.id)).map(|g| g.name.clone()).collect(),
                    unknown: managed_groups.iter().filter(|g| g.members.is_empty()).map(|g| g.name.clone()).collect(),
                })
            }
            // No user: in no group.
            None => Some(MemberOf::default()),
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

/// A managed group the target lists without members although members
/// Entitle delivered belong in it (their users are listed, nothing of
/// theirs waits to be delivered): the target does not list members, whatever
/// its profile says. Why, or `None`.
pub fn listed_empty_but_filled(desired: &[DesiredUser], users: &[ScimUser], groups: &[ScimGroup], managed: &BTreeSet<String>, waiting: &BTreeSet<UserId>) -> Option<String> {
    let on_target: BTreeSet<&str> = users.iter().filter_map(|u| u.external_id.as_deref()).collect();
    for g in groups.iter().filter(|g| managed.contains(&g.name) && g.members.is_empty()) {
        let filled = desired.iter().filter(|d| d.active && d.groups.contains(&g.name) && on_target.contains(d.user_id.as_str()) && !waiting.contains(&d.user_id)).count();
        if filled > 0 {
            return Some(format!("group {} is listed without members, although {filled} member(s) Entitle delivered belong in it", g.name));
        }
    }
    None
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

/// Why talking to a target failed.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target as a whole is not serving (down, overloaded, refusing our
    /// token): counts towards quarantine.
    #[error("target unavailable: {reason}")]
    Unavailable { reason: String, retry_after: Option<Duration> },
    /// The target refused this request (a 4xx about the data): the member's
    /// delivery is held with the reason; the target is fine.
    #[error("target refused {what}: HTTP {status} {detail}")]
    Refused { what: String, status: u16, detail: String },
    /// The member's userName is held on the target by someone else's user:
    /// its delivery is parked at once (never adopted, see
    /// [`owned_by_another`]); the target is fine.
    #[error("{reason}")]
    Conflict { reason: String },
    /// The target's documented rate limit is reached for now: the run stops
    /// there, not failed; what waits is delivered by a later run.
    #[error("paced: {reason}")]
    Paced { reason: String },
}

/// What one member's sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    pub created: bool,
    pub adopted: bool,
    pub patched: bool,
    pub deleted: bool,
    pub joined: Vec<String>,
    pub left: Vec<String>,
    /// 412 answers met (and resolved by re-reading).
    pub conflicts: u32,
}

impl SyncOutcome {
    pub fn changed(&self) -> bool {
        self.created || self.adopted || self.patched || self.deleted || !self.joined.is_empty() || !self.left.is_empty()
    }

    /// What was done, for the log: `created; joined entitle-member`, `unchanged`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (done, what) in [(self.created, "created"), (self.adopted, "adopted"), (self.patched, "updated"), (self.deleted, "deleted")] {
            if done {
                parts.push(what.to_string());
            }
        }
        if !self.joined.is_empty() {
            parts.push(format!("joined {}", self.joined.join(",")));
        }
        if !self.left.is_empty() {
            parts.push(format!("left {}", self.left.join(",")));
        }
        if parts.is_empty() {
            "unchanged".into()
        } else {
            parts.join("; ")
        }
    }
}

/// What the target held for a member, when the caller already knows it
/// (drift repair lists everything first). It may be stale: a 412 re-reads.
#[derive(Debug, Clone)]
pub struct Known {
    pub user: Option<ScimUser>,
    /// The managed groups the user is in; `None`: not read (the session
    /// finds out as the target allows).
    pub member_of: Option<MemberOf>,
}
