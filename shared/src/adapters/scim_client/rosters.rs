//! What the target lists, and what this client keeps of it: users and
//! groups (for drift repair), a member's user found by `externalId` or
//! `userName`, the managed groups a user is in (from each managed group's
//! roster read once per client and kept up to date, by a search, or by
//! asking group by group, as the target's profile allows), and group ids
//! by name.

use super::ScimClient;
use crate::core::scim::{self, DesiredUser, MemberOf, Membership, ScimGroup, ScimUser, TargetError};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

impl ScimClient {
    pub async fn users(&self) -> Result<Vec<ScimUser>, TargetError> {
        if !self.profile.lists_users {
            return Err(TargetError::Unavailable { reason: format!("a {} target lists no users without a filter", self.profile.name.as_str()), retry_after: None });
        }
        self.list("/Users", None, None, ScimUser::from_json).await
    }

    pub async fn groups(&self) -> Result<Vec<ScimGroup>, TargetError> {
        let groups: Vec<ScimGroup> = self.list("/Groups", None, Some("displayName,members"), ScimGroup::from_json).await?;
        let mut known = self.groups.lock().expect("not poisoned");
        for g in &groups {
            known.insert(g.name.clone(), g.id.clone());
        }
        Ok(groups)
    }

    pub(super) async fn find_by(&self, attr: &str, value: &str) -> Result<Option<ScimUser>, TargetError> {
        let found = self.list("/Users", Some(scim::filter_eq(attr, value)), None, ScimUser::from_json).await?;
        Ok(found.into_iter().next())
    }

    /// The member's user: by `externalId`, else by `userName` (which SCIM
    /// compares case-insensitively) if that user is not someone else's.
    pub async fn find_user(&self, desired: &DesiredUser) -> Result<Option<ScimUser>, TargetError> {
        if self.profile.find_by_external_id {
            if let Some(u) = self.find_by("externalId", desired.user_id.as_str()).await? {
                return Ok(Some(u));
            }
        }
        match self.find_by("userName", &desired.user_name).await? {
            Some(u) => match scim::owned_by_another(desired, &u) {
                Some(reason) => Err(TargetError::Conflict { reason }),
                None => Ok(Some(u)),
            },
            None => Ok(None),
        }
    }

    /// Names of the groups a user is in (among all groups).
    pub async fn member_of(&self, scim_id: &str) -> Result<BTreeSet<String>, TargetError> {
        let filter = format!("members[value eq {}]", scim::quoted(scim_id));
        let groups = self.list("/Groups", Some(filter), Some("displayName"), |g| g["displayName"].as_str().map(str::to_string)).await?;
        Ok(groups.into_iter().collect())
    }

    /// Names of the managed groups a user is in. Each managed group's
    /// members are read once in this client's life (one request per group)
    /// and kept up to date with its own changes: a target answers a
    /// `members[value eq ...]` search by looking through every group's
    /// members, which for groups of thousands costs more per member than
    /// reading the group once per run. A group that cannot be read whole in
    /// one try (too large, too slow) turns this client to the search.
    pub async fn managed_member_of(&self, scim_id: &str, managed: &BTreeSet<String>) -> Result<MemberOf, TargetError> {
        match self.membership() {
            Membership::Listed => {
                let groups = self.listed_member_of(scim_id, managed).await?;
                // What the lists said is not used once the target contradicted them.
                if self.contradiction().is_some() {
                    return Ok(MemberOf::unknown(managed));
                }
                let unknown = self.unconfirmed.lock().expect("not poisoned").intersection(managed).cloned().collect();
                Ok(MemberOf { groups, unknown })
            }
            Membership::Asked => self.asked_member_of(scim_id, managed).await.map(MemberOf::known),
            Membership::Unknown => Ok(MemberOf::unknown(managed)),
        }
    }

    /// Asks the target, group by group, whether the user is a member
    /// (`filter=id eq "<group>" and members eq "<user>"`, as AWS IAM
    /// Identity Center answers it): a target that never lists members.
    async fn asked_member_of(&self, scim_id: &str, managed: &BTreeSet<String>) -> Result<BTreeSet<String>, TargetError> {
        let mut out = BTreeSet::new();
        for name in managed {
            let Some(gid) = self.group_id(name, false).await? else { continue };
            let filter = format!("{} and {}", scim::filter_eq("id", &gid), scim::filter_eq("members", scim_id));
            let found = self.list("/Groups", Some(filter), None, |g| g["id"].as_str().map(str::to_string)).await?;
            if found.contains(&gid) {
                out.insert(name.clone());
            }
        }
        Ok(out)
    }

    /// [`ScimClient::managed_member_of`] on a target that lists members.
    async fn listed_member_of(&self, scim_id: &str, managed: &BTreeSet<String>) -> Result<BTreeSet<String>, TargetError> {
        if !self.no_rosters.load(Ordering::SeqCst) {
            match self.load_rosters(managed).await {
                Ok(()) => {
                    let rosters = self.rosters.lock().expect("not poisoned");
                    return Ok(managed.iter().filter(|g| rosters.get(*g).is_some_and(|m| m.contains(scim_id))).cloned().collect());
                }
                Err(TargetError::Unavailable { reason, .. }) if self.time_left().is_some() => {
                    tracing::info!(reason = %reason, "a managed group could not be read whole: members are searched for instead");
                    self.no_rosters.store(true, Ordering::SeqCst);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(self.member_of(scim_id).await?.into_iter().filter(|g| managed.contains(g)).collect())
    }

    /// Reads the members of each managed group not read yet (a missing
    /// group has none), in one try each. A group answered without members
    /// (no `members`, or an empty list) is empty only if the target says so
    /// when asked (`members pr`): a target that leaves members out of group
    /// answers (AWS does, by design) would otherwise never see anyone
    /// removed. One that cannot answer stays unknown (members not desired
    /// there are removed from it anyway); one that says it has members has
    /// contradicted its profile: its lists are not trusted from then on
    /// ([`ScimClient::contradiction`]).
    async fn load_rosters(&self, managed: &BTreeSet<String>) -> Result<(), TargetError> {
        for name in managed {
            if self.rosters.lock().expect("not poisoned").contains_key(name) {
                continue;
            }
            let what = format!("reading group {name}");
            let query = [("filter", scim::filter_eq("displayName", name)), ("attributes", "displayName,members".to_string())];
            let a = Self::expect_ok(&what, self.send_tries(Method::GET, "/Groups", &query, None, None, 1).await?)?;
            let raw = a.body["Resources"].as_array().into_iter().flatten().find(|g| g["displayName"].as_str() == Some(name.as_str()));
            let found = raw.and_then(ScimGroup::from_json);
            if found.is_none() && a.body["totalResults"].as_u64().unwrap_or(0) > 0 {
                return Err(TargetError::Unavailable { reason: format!("{what}: listed without its id or members"), retry_after: None });
            }
            let unlisted = raw.is_some_and(|g| g["members"].as_array().is_none_or(Vec::is_empty));
            if unlisted {
                // Confirmed empty, contradicted, or unknown.
                let confirmed = if self.profile.rich_filters {
                    let mut query = vec![("filter", format!("{} and members pr", scim::filter_eq("displayName", name)))];
                    if self.profile.attributes_param {
                        query.push(("attributes", "id".to_string()));
                    }
                    match self.send_tries(Method::GET, "/Groups", &query, None, None, 1).await? {
                        a if a.status.is_success() && a.body["totalResults"].as_u64() == Some(0) => true,
                        a if a.status.is_success() => {
                            let reason = format!("group {name} is listed without members, but the target says it has members");
                            tracing::warn!(profile = self.profile.name.as_str(), reason = %reason, "the target contradicts its profile: its member lists are not trusted");
                            *self.contradiction.lock().expect("not poisoned") = Some(reason);
                            return Ok(());
                        }
                        _ => false,
                    }
                } else {
                    false
                };
                if !confirmed {
                    self.unconfirmed.lock().expect("not poisoned").insert(name.clone());
                }
            }
            let members = match found {
                Some(g) => {
                    self.groups.lock().expect("not poisoned").insert(name.clone(), g.id);
                    g.members
                }
                None => BTreeSet::new(),
            };
            self.rosters.lock().expect("not poisoned").insert(name.clone(), members);
        }
        self.rosters_checked.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Records a membership change this client made (in a roster it holds).
    pub(super) fn noted(&self, group: &str, scim_user: &str, add: bool) {
        if let Some(members) = self.rosters.lock().expect("not poisoned").get_mut(group) {
            if add {
                members.insert(scim_user.to_string());
            } else {
                members.remove(scim_user);
            }
        }
    }

    /// The id of a group by name, created when missing and `create` is set.
    pub(super) async fn group_id(&self, name: &str, create: bool) -> Result<Option<String>, TargetError> {
        if let Some(id) = self.groups.lock().expect("not poisoned").get(name) {
            return Ok(Some(id.clone()));
        }
        let group_id = |g: &Value| g["id"].as_str().map(str::to_string);
        let found = self.list("/Groups", Some(scim::filter_eq("displayName", name)), Some("displayName"), group_id).await?;
        let id = match found.into_iter().next() {
            Some(id) => Some(id),
            None if create => {
                let body = serde_json::json!({"schemas": [scim::GROUP_SCHEMA], "displayName": name});
                let a = self.send(Method::POST, "/Groups", &[], Some(&body), None).await?;
                if a.status == StatusCode::CONFLICT {
                    // Created meanwhile by someone else: use theirs.
                    let again = self.list("/Groups", Some(scim::filter_eq("displayName", name)), Some("displayName"), group_id).await?;
                    again.into_iter().next()
                } else {
                    Self::expect_ok(&format!("creating group {name}"), a)?.body["id"].as_str().map(str::to_string)
                }
            }
            None => None,
        };
        if let Some(id) = &id {
            self.groups.lock().expect("not poisoned").insert(name.to_string(), id.clone());
        }
        Ok(id)
    }
}
