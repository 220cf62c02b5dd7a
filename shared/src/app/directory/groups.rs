//! Groups pushed into the tenant's directory: their names, claimed per
//! tenant, and their members, each written in its own transaction (its
//! groups and its roles with them); a rename reaches every member, and a
//! delete takes each member out before the group goes.

use super::session::Session;
use super::{check_if_match, Answer, ATTEMPTS};
use crate::app::commit::Retry;
use crate::app::members::known;
use crate::app::ports::{Change, CommitError, Directories, Models, Targets, Tenants, Write};
use crate::app::Error;
use crate::core::audit::{AuditAction, AuditEvent};
use crate::core::ids::UserId;
use crate::core::provider::connection::PushNote;
use crate::core::provider::filter::Filter;
use crate::core::provider::patch::{self, invalid_value, MemberOps};
use crate::core::provider::resource::{self, read_group, render_group, PushedGroup};
use crate::core::provider::schemas::GROUP;
use crate::core::provider::{self as provider, uniqueness, DirGroup, Edge};
use crate::core::rejection::{Kind, Rejection};
use serde_json::{json, Value};

/// Members of one group written at once.
const CONCURRENCY: usize = 8;

impl<S: Tenants + Targets + Directories + Models> Session<'_, S> {
    /// A group that exists (not being deleted), or 404.
    async fn live_group(&self, id: &str) -> Result<DirGroup, Error> {
        self.store.group(&self.tenant, id).await?.filter(|g| !g.deleting).ok_or_else(|| Rejection::not_found(&format!("Group {id}")).into())
    }

    pub async fn group_resource(&self, g: &DirGroup, with_members: bool) -> Result<Value, Error> {
        let members = if with_members { Some(self.store.group_members(&self.tenant, &g.id).await?) } else { None };
        Ok(render_group(&self.base, g, members.as_deref()))
    }

    /// `POST /Groups`; `id` is the new group's (random, from the edge).
    pub async fn create_group(&self, body: &Value, id: &str) -> Result<Answer, Error> {
        let pushed = read_group(body)?;
        self.meta().await?;
        if self.store.group_by_name(&self.tenant, &pushed.name).await?.is_some() {
            return Err(uniqueness(format!("a Group named {:?} already exists (group names are unique per tenant, whatever their case)", pushed.name)).into());
        }
        // Its members must exist before anything is written.
        let entries = pushed.members.clone().unwrap_or_default();
        self.check_members(&entries.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>()).await?;
        let at = self.now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let g = DirGroup { id: id.to_string(), name: pushed.name.clone(), external_id: pushed.external_id.clone(), created: at.clone(), modified: at, rev: 1, deleting: false };
        let audit = AuditEvent::new(AuditAction::DirectoryGroupCreated, format!("group:{id}"), &self.cause(), "group pushed by the tenant's identity provider")
            .after(json!({"display_name": g.name, "external_id": g.external_id}));
        let change = Change::new(self.now).write(Write::ClaimGroupName { name: g.name.clone(), group: g.id.clone() }).write(Write::Group { group: g.clone(), if_rev: None }).audit(audit);
        match self.store.commit_unchained(&self.tenant, &change, &self.request_id).await {
            Ok(()) => {}
            Err(CommitError::Refused(0)) => return Err(uniqueness(format!("a Group named {:?} already exists", g.name)).into()),
            Err(CommitError::Port(e)) => return Err(e.into()),
            Err(e) => return Err(Rejection::conflict("conflict", format!("group {id}: {e}")).into()),
        }
        self.note(PushNote { groups: 1, ..PushNote::default() }).await;
        let ops = MemberOps { add: entries.iter().map(|(u, _)| u.clone()).collect(), ..Default::default() };
        self.change_members(&g, &ops, &entries).await?;
        Ok(Answer { resource: self.group_resource(&g, true).await?, changed: true })
    }

    /// `GET /Groups/{id}`.
    pub async fn get_group(&self, id: &str, with_members: bool) -> Result<Value, Error> {
        let g = self.live_group(id).await?;
        self.group_resource(&g, with_members).await
    }

    /// The ids that name no member of the tenant: 400, nothing written.
    async fn check_members(&self, ids: &[String]) -> Result<(), Error> {
        let mut unknown = Vec::new();
        let mut valid = Vec::new();
        for id in ids {
            match UserId::parse(id.clone()) {
                Ok(u) => valid.push(u),
                Err(_) => unknown.push(id.clone()),
            }
        }
        valid.sort();
        valid.dedup();
        for chunk in valid.chunks(99) {
            let (_, items) = self.store.meta_and_members(&self.tenant, chunk).await?;
            unknown.extend(chunk.iter().zip(items).filter(|(_, i)| i.as_ref().is_none_or(|i| i.member.removed)).map(|(u, _)| u.to_string()));
        }
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.truncate(20);
        Err(invalid_value(format!("members: no User with id {} in this tenant; nothing was changed", unknown.join(", "))).with("unknown_members", unknown).into())
    }

    /// Membership changes of a group: each member written in its own
    /// transaction (its groups, its roles, the group's member item), up to
    /// [`CONCURRENCY`] at once. Adding a member twice or removing one that
    /// is not in it changes nothing.
    async fn change_members(&self, g: &DirGroup, ops: &MemberOps, entries: &[(String, Value)]) -> Result<usize, Error> {
        if ops.is_empty() {
            return Ok(0);
        }
        let current: Vec<Edge> = self.store.group_members(&self.tenant, &g.id).await?;
        let has = |u: &str| current.iter().any(|e| e.user.as_str() == u);
        let mut join: Vec<String> = Vec::new();
        let mut leave: Vec<String> = Vec::new();
        if let Some(set) = &ops.set {
            join.extend(set.iter().filter(|u| !has(u)).cloned());
            leave.extend(current.iter().map(|e| e.user.to_string()).filter(|u| !set.contains(u)));
        }
        if ops.remove_all {
            leave.extend(current.iter().map(|e| e.user.to_string()));
        }
        join.extend(ops.add.iter().filter(|u| !has(u)).cloned());
        leave.extend(ops.remove.iter().filter(|u| has(u)).cloned());
        join.sort();
        join.dedup();
        leave.sort();
        leave.dedup();
        self.check_members(&join).await?;
        let entry_of = |u: &str| entries.iter().rev().find(|(id, _)| id == u).map(|(_, e)| e.clone()).unwrap_or(Value::Null);
        let mut work: Vec<(UserId, bool, Value)> = join
            .iter()
            .filter_map(|u| UserId::parse(u.clone()).ok())
            .map(|u| {
                let e = entry_of(u.as_str());
                (u, true, e)
            })
            .collect();
        work.extend(leave.iter().filter(|u| !join.contains(u)).filter_map(|u| UserId::parse(u.clone()).ok()).map(|u| (u, false, Value::Null)));
        let n = work.len();
        for batch in work.chunks(CONCURRENCY) {
            let results = futures_util::future::join_all(batch.iter().map(|(u, joins, entry)| self.regroup_one(g, u, *joins, entry.clone()))).await;
            for r in results {
                r?;
            }
        }
        Ok(n)
    }

    /// One member in (or out of) a group: its groups and roles, and the
    /// group's member item, in one transaction.
    async fn regroup_one(&self, g: &DirGroup, user: &UserId, joins: bool, entry: Value) -> Result<(), Error> {
        let mut retry = Retry::new(&self.tenant, ATTEMPTS);
        while retry.again().await {
            let (meta, item) = self.store.meta_and_member(&self.tenant, user).await?;
            let meta = known(&self.tenant, meta)?;
            let Some(item) = item.filter(|i| !i.member.removed) else {
                // Gone meanwhile: only its group item may be left.
                let change = Change::new(self.now).write(Write::RemoveEdge { group: g.id.clone(), user: user.clone() });
                self.store.commit_unchained(&self.tenant, &change, &self.request_id).await.map_err(Error::from)?;
                return Ok(());
            };
            let (join, leave) = if joins { (vec![(g.id.clone(), g.name.clone())], vec![]) } else { (vec![], vec![g.id.clone()]) };
            let edge = if joins {
                Write::Edge(Edge { group: g.id.clone(), user: user.clone(), name: g.name.clone(), entry: entry.clone() })
            } else {
                Write::RemoveEdge { group: g.id.clone(), user: user.clone() }
            };
            match provider::regroup(&*self.rules(&meta).await?, &meta, &item, &join, &leave, &self.cause(), self.now)? {
                None => {
                    // The member already says so: the group's item follows.
                    let change = Change::new(self.now).write(edge);
                    self.store.commit_unchained(&self.tenant, &change, &self.request_id).await.map_err(Error::from)?;
                    return Ok(());
                }
                Some(w) => {
                    if self.write_member(&w, vec![edge], &meta).await? {
                        return Ok(());
                    }
                }
            }
        }
        Err(retry.contended())
    }

    /// A group's name or externalId changed (PUT, PATCH): the group item,
    /// its name claim, then each member's group name (a rename reaches
    /// every member; one cut off by a crash is finished by the next write
    /// of the group).
    async fn update_group(&self, g: &DirGroup, pushed: &PushedGroup) -> Result<(DirGroup, bool), Error> {
        let renamed = pushed.name != g.name;
        let changed = renamed || pushed.external_id != g.external_id;
        let mut g = g.clone();
        if changed {
            if renamed && !pushed.name.eq_ignore_ascii_case(&g.name) && self.store.group_by_name(&self.tenant, &pushed.name).await?.is_some_and(|o| o.id != g.id) {
                return Err(uniqueness(format!("a Group named {:?} already exists", pushed.name)).into());
            }
            let next =
                DirGroup { name: pushed.name.clone(), external_id: pushed.external_id.clone(), modified: self.now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), rev: g.rev + 1, ..g.clone() };
            let audit = AuditEvent::new(AuditAction::DirectoryGroupUpdated, format!("group:{}", g.id), &self.cause(), "group renamed by the tenant's identity provider; its members' roles follow")
                .before(json!({"display_name": g.name, "external_id": g.external_id}))
                .after(json!({"display_name": next.name, "external_id": next.external_id}));
            let mut change = Change::new(self.now).write(Write::Group { group: next.clone(), if_rev: Some(g.rev) }).audit(audit);
            if !pushed.name.eq_ignore_ascii_case(&g.name) {
                change = change.write(Write::ClaimGroupName { name: next.name.clone(), group: g.id.clone() }).write(Write::ReleaseGroupName { name: g.name.clone(), group: g.id.clone() });
            }
            match self.store.commit_unchained(&self.tenant, &change, &self.request_id).await {
                Ok(()) => g = next,
                Err(CommitError::Refused(0)) => return Err(Rejection::new(Kind::Precondition, "precondition_failed", format!("Group {} changed meanwhile; read it again", g.id)).into()),
                Err(CommitError::Refused(_)) => return Err(uniqueness(format!("a Group named {:?} already exists", pushed.name)).into()),
                Err(CommitError::Port(e)) => return Err(e.into()),
                Err(e) => return Err(Rejection::conflict("conflict", e.to_string()).into()),
            }
        }
        self.settle(&g).await?;
        Ok((g, changed))
    }

    /// Brings every member of a group to the group's name.
    async fn settle(&self, g: &DirGroup) -> Result<(), Error> {
        let stale: Vec<Edge> = self.store.group_members(&self.tenant, &g.id).await?.into_iter().filter(|e| e.name != g.name).collect();
        for batch in stale.chunks(CONCURRENCY) {
            for r in futures_util::future::join_all(batch.iter().map(|e| self.regroup_one(g, &e.user, true, e.entry.clone()))).await {
                r?;
            }
        }
        Ok(())
    }

    /// `PUT /Groups/{id}`: name, externalId and members as sent (members
    /// absent: none).
    pub async fn replace_group(&self, id: &str, body: &Value, if_match: Option<&str>, with_members: bool) -> Result<Answer, Error> {
        let pushed = read_group(body)?;
        let g = self.live_group(id).await?;
        check_if_match(if_match, g.rev)?;
        let entries = pushed.members.clone().unwrap_or_default();
        let ops = MemberOps { set: Some(entries.iter().map(|(u, _)| u.clone()).collect()), ..MemberOps::default() };
        self.check_members(&entries.iter().map(|(u, _)| u.clone()).collect::<Vec<_>>()).await?;
        let (g, _) = self.update_group(&g, &pushed).await?;
        self.change_members(&g, &ops, &entries).await?;
        self.note(PushNote::default()).await;
        Ok(Answer { resource: self.group_resource(&g, with_members).await?, changed: true })
    }

    /// `PATCH /Groups/{id}`: membership operations and the rest (name, externalId).
    /// The Group answered with its members unless `with_members` is false
    /// (`excludedAttributes=members`: a large group's PATCH reads none).
    pub async fn patch_group(&self, id: &str, body: &Value, if_match: Option<&str>, with_members: bool) -> Result<Answer, Error> {
        let ops = patch::parse(body)?;
        let g = self.live_group(id).await?;
        check_if_match(if_match, g.rev)?;
        let (member_ops, rest) = patch::member_ops(ops.clone())?;
        let entries = patch_entries(&ops);
        let mut doc = json!({"schemas": [GROUP], "displayName": g.name});
        if let Some(x) = &g.external_id {
            doc["externalId"] = json!(x);
        }
        patch::apply(&mut doc, &rest, &["id", "meta", "schemas", "members"])?;
        doc["schemas"] = json!([GROUP]);
        let pushed = read_group(&doc)?;
        // Members to add must exist before anything is written.
        self.check_members(&member_ops.add.iter().chain(member_ops.set.iter().flatten()).cloned().collect::<Vec<_>>()).await?;
        let (g, renamed) = self.update_group(&g, &pushed).await?;
        let n = self.change_members(&g, &member_ops, &entries).await?;
        let changed = n > 0 || renamed;
        if changed {
            self.note(PushNote::default()).await;
        }
        Ok(Answer { resource: self.group_resource(&g, with_members).await?, changed })
    }

    /// `DELETE /Groups/{id}`: marked deleted (gone for SCIM at once), each
    /// member taken out, then the group removed. A delete cut off is
    /// finished by the next delete.
    pub async fn delete_group(&self, id: &str, if_match: Option<&str>) -> Result<(), Error> {
        let g = self.store.group(&self.tenant, id).await?.ok_or_else(|| Rejection::not_found(&format!("Group {id}")))?;
        check_if_match(if_match, g.rev).or_else(|e| if g.deleting { Ok(()) } else { Err(e) })?;
        let g = if g.deleting {
            g
        } else {
            let marked = DirGroup { deleting: true, rev: g.rev + 1, ..g.clone() };
            let change = Change::new(self.now).write(Write::Group { group: marked.clone(), if_rev: Some(g.rev) });
            self.store.commit_unchained(&self.tenant, &change, &self.request_id).await.map_err(|e| match e {
                CommitError::Port(p) => Error::from(p),
                _ => Rejection::new(Kind::Precondition, "precondition_failed", format!("Group {id} changed meanwhile; read it again")).into(),
            })?;
            marked
        };
        self.change_members(&g, &MemberOps { remove_all: true, ..MemberOps::default() }, &[]).await?;
        let audit = AuditEvent::new(AuditAction::DirectoryGroupDeleted, format!("group:{id}"), &self.cause(), "group deleted by the tenant's identity provider; its members left it")
            .before(json!({"display_name": g.name, "external_id": g.external_id}));
        let change = Change::new(self.now).write(Write::RemoveGroup { id: g.id.clone(), rev: g.rev }).write(Write::ReleaseGroupName { name: g.name.clone(), group: g.id.clone() }).audit(audit);
        match self.store.commit_unchained(&self.tenant, &change, &self.request_id).await {
            Ok(()) => {
                self.note(PushNote { groups: -1, ..PushNote::default() }).await;
                Ok(())
            }
            // Removed by a delete racing this one (which counted it).
            Err(CommitError::Refused(0)) => Ok(()),
            Err(CommitError::Port(e)) => Err(e.into()),
            Err(e) => Err(Rejection::conflict("conflict", e.to_string()).into()),
        }
    }

    /// `GET /Groups` with a filter: by `id` or `displayName`, one read;
    /// otherwise every group. `members` are read unless excluded.
    pub async fn find_groups(&self, filter: Option<&Filter>, with_members: bool) -> Result<Vec<Value>, Error> {
        self.meta().await?;
        let with_members = with_members || filter.is_some_and(|f| f.mentions("members"));
        let candidates: Vec<DirGroup> = match filter {
            Some(f) if f.required_eq("id").is_some() => self.store.group(&self.tenant, f.required_eq("id").expect("checked")).await?.into_iter().collect(),
            Some(f) if f.required_eq("displayName").is_some() => self.store.group_by_name(&self.tenant, f.required_eq("displayName").expect("checked")).await?.into_iter().collect(),
            _ => {
                let mut all = Vec::new();
                let mut after: Option<String> = None;
                loop {
                    let (page, next) = self.store.groups_page(&self.tenant, after.as_deref(), 200).await?;
                    all.extend(page);
                    match next {
                        Some(n) => after = Some(n),
                        None => break all,
                    }
                }
            }
        };
        let mut out = Vec::new();
        for g in candidates.iter().filter(|g| !g.deleting) {
            let r = self.group_resource(g, with_members).await?;
            if filter.is_none_or(|f| f.matches(&r)) {
                out.push(r);
            }
        }
        Ok(out)
    }
}

/// The member entries a PATCH sends (their `display`, `$ref`, `type`), by id.
fn patch_entries(ops: &[patch::Operation]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for o in ops {
        let value = match (&o.path, &o.value) {
            (Some(p), Some(v)) if p.attr.is("members") => Some(v.clone()),
            (None, Some(Value::Object(m))) => m.iter().find(|(k, _)| k.eq_ignore_ascii_case("members")).map(|(_, v)| v.clone()),
            _ => None,
        };
        if let Some(v) = value {
            let list = if v.is_array() { v } else { Value::Array(vec![v]) };
            out.extend(resource::member_entries(&list).unwrap_or_default());
        }
    }
    out
}
