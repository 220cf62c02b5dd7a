//! The tenant's directory: what its identity providers push, as members.
//!
//! A User pushed is a member created under the seat rules of the moment
//! (a seat if one is free and nobody waits, otherwise in line, or refused
//! when the tenant chose so); `active: false` suspends it (its seat is
//! freed); `DELETE` removes it. A Group's members get its name as one of
//! their groups, so that the licensing model's role rules apply. Member
//! writes are committed without the chain's lock, like the app's own
//! account events (each is one transaction with its audit record, pending,
//! and its delivery records), conditional on the member's revision and on
//! the walk's goal as read: so pushes in one tenant do not queue behind
//! each other, and none lands on a member with the tenant's access it
//! missed.
//!
//! Every change is audited with cause `directory`, the connection and the
//! request id.

use super::commit::{audited, Decision};
use super::members::{deliveries, known};
use super::ports::{Change, CommitError, Directories, MemberGuard, Models, PushView, Targets, Tenants, Write};
use super::Error;
use crate::core::access::{in_line, MemberAccess, MemberItem, MemberStatus};
use crate::core::audit::{Announcement, AuditAction, AuditEvent, Cause};
use crate::core::ids::{TenantId, UserId};
use crate::core::model::{LicensingModel, WhenFull};
use crate::core::provider::connection::{self, Connection};
use crate::core::provider::filter::{get_ci, Filter};
use crate::core::provider::patch::{self, invalid_value, MemberOps};
use crate::core::provider::resource::{self, read_group, read_user, render_group, render_user, PushedGroup};
use crate::core::provider::schemas::{self, GROUP, LIST, USER};
use crate::core::provider::{self as provider, uniqueness, DirGroup, Edge, Pushed};
use crate::core::rejection::{Kind, Rejection};
use crate::core::scim::Target;
use crate::core::tenant::TenantMeta;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Reads again after a concurrent change of the same member or group.
const ATTEMPTS: u32 = 8;
/// Members of one group written at once.
const CONCURRENCY: usize = 8;

/// Who is asking, and about which tenant: a request of a directory connection.
pub struct Session<'a, S> {
    pub store: &'a S,
    pub tenant: TenantId,
    pub connection: Connection,
    pub request_id: String,
    /// The directory's base URL for this tenant (`.../scim/v2/tenants/<tenant>`).
    pub base: String,
    pub now: DateTime<Utc>,
    /// The tenant's SCIM targets, read once per request (a group's batch
    /// writes each of its members with their delivery records).
    pub targets: std::sync::OnceLock<Vec<Target>>,
}

/// A request as the directory received it, before it is authenticated.
pub struct Incoming<'r> {
    /// The tenant its path names.
    pub tenant: &'r str,
    pub authorization: Option<&'r str>,
    pub request_id: String,
    /// The directory's base URL for this tenant.
    pub base: String,
    pub now: DateTime<Utc>,
}

/// A resource as answered, and whether the request changed anything (a
/// reconcile is then queued: deliveries, seats freed).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub resource: Value,
    pub changed: bool,
}

/// The connection a request's bearer token names, checked; and the
/// tenant's `META`. A token of another tenant: 404 (it reads nothing here).
pub async fn authenticate<S: Directories + Tenants>(store: &S, tenant: &str, authorization: Option<&str>, now: DateTime<Utc>) -> Result<(TenantId, Connection), Error> {
    let (token_tenant, id, secret) = connection::bearer(authorization).and_then(connection::parse_token).ok_or_else(connection::unauthenticated)?;
    let conn = store.connection(&token_tenant, &id).await?.filter(|c| connection::accepts(c, &secret, now)).ok_or_else(connection::unauthenticated)?;
    if token_tenant.as_str() != tenant {
        return Err(Rejection::not_found(&format!("tenant {tenant}")).into());
    }
    Ok((token_tenant, conn))
}

/// `POST /Users` of a sync, on one read before its commit (as the app's
/// `POST .../members`): the connection is checked on the read that also
/// brings the tenant's `META`, the member and who holds the userName.
/// `None` when the request is not a plain push of this tenant's token (a
/// token of another tenant, a body that is no User): `authenticate` and
/// `create_user` answer it, with the same answers in the same order.
pub async fn push_user<'a, S: Directories + Tenants + Targets + Models>(store: &'a S, incoming: Incoming<'_>, body: &Value) -> Result<Option<(Session<'a, S>, Answer)>, Error> {
    let Incoming { tenant, authorization, request_id, base, now } = incoming;
    let (token_tenant, id, secret) = connection::bearer(authorization).and_then(connection::parse_token).ok_or_else(connection::unauthenticated)?;
    let Ok(pushed) = read_user(body) else { return Ok(None) };
    if token_tenant.as_str() != tenant {
        return Ok(None);
    }
    let mut view = store.push_view(&token_tenant, &id, &resource::user_id_for(&pushed), &pushed.user_name).await?;
    let conn = view.connection.take().filter(|c| connection::accepts(c, &secret, now)).ok_or_else(connection::unauthenticated)?;
    let s = Session { store, tenant: token_tenant, connection: conn, request_id, base, now, targets: Default::default() };
    let answer = s.create_pushed(&pushed, Some(view)).await?;
    Ok(Some((s, answer)))
}

/// What an `If-Match` header allows: `*`, or the version (weak or not).
pub fn check_if_match(if_match: Option<&str>, rev: u64) -> Result<(), Rejection> {
    let Some(h) = if_match.map(str::trim).filter(|h| !h.is_empty()) else { return Ok(()) };
    let norm = |v: &str| v.trim().trim_start_matches("W/").trim_matches('"').to_string();
    if h == "*" || h.split(',').any(|v| norm(v) == rev.to_string()) {
        return Ok(());
    }
    Err(Rejection::new(Kind::Precondition, "precondition_failed", format!("If-Match {h} is not the resource's version {}", resource::etag(rev))))
}

impl<S: Tenants + Targets + Directories + Models> Session<'_, S> {
    fn cause(&self) -> Cause {
        Cause::directory(&self.connection.id, &self.request_id)
    }

    /// The rules of the version the tenant follows (as its `META` says).
    async fn rules(&self, meta: &TenantMeta) -> Result<std::sync::Arc<LicensingModel>, Error> {
        super::rules::rules_of(self.store, Some(meta)).await
    }

    fn when_full(&self, model: &LicensingModel) -> WhenFull {
        self.connection.when_full.unwrap_or(model.directory.when_full)
    }

    async fn meta(&self) -> Result<TenantMeta, Error> {
        known(&self.tenant, self.store.meta(&self.tenant).await?)
    }

    fn user(&self, item: &MemberItem, meta: &TenantMeta) -> Value {
        render_user(&self.base, item, meta.access.as_ref().map(|a| a.tier.as_str()))
    }

    /// A member that exists (not removed), or 404.
    async fn existing(&self, id: &str) -> Result<(TenantMeta, MemberItem), Error> {
        let user = UserId::parse(id).map_err(|_| Rejection::not_found(&format!("User {id}")))?;
        let (meta, item) = self.store.meta_and_member(&self.tenant, &user).await?;
        let meta = known(&self.tenant, meta)?;
        let item = item.filter(|i| !i.member.removed).ok_or_else(|| Rejection::not_found(&format!("User {id}")))?;
        Ok((meta, item))
    }

    /// Refuses a push for want of a seat: the refusal is audited and
    /// announced (`tenant.seat_limit_reached`), nothing else is stored.
    async fn refuse(&self, user_name: &str, total: u32, used: u32) -> Error {
        let event = AuditEvent::new(
            AuditAction::DirectoryPushRefused,
            format!("directory:{}", self.connection.id),
            &self.cause(),
            format!("no free seat ({used} of {total} used) and the directory refuses pushes when full: nobody is evicted"),
        )
        .after(json!({"user_name": user_name, "seats": {"total": total, "used": used}}))
        .announcing(Announcement::SeatLimitReached { directory_id: self.connection.id.clone(), user_name: user_name.to_string(), seats_total: total, seats_used: used });
        match super::audit::note(self.store, &self.tenant, event, self.now).await {
            Ok(_) => provider::no_seat(total, used).into(),
            Err(e) => e,
        }
    }

    async fn targets(&self) -> Result<&[Target], Error> {
        if let Some(t) = self.targets.get() {
            return Ok(t);
        }
        let read = self.store.targets(&self.tenant).await?;
        Ok(self.targets.get_or_init(|| read))
    }

    /// Commits one member write; `Ok(false)`: read again and decide again.
    async fn write_member(&self, w: &provider::MemberWrite, extra: Vec<Write>, meta: &TenantMeta) -> Result<bool, Error> {
        let item = &w.item;
        let creating = w.audit.action == AuditAction::MemberCreated;
        let mut change = Change::new(self.now);
        if creating || w.old_email.is_some() {
            change.writes.push(Write::ClaimEmail(item.member.clone()));
        }
        if let Some(old) = &w.old_email {
            change.writes.push(Write::ReleaseEmail(old.clone()));
        }
        // A new member, or one removed before created again (from the
        // removal's revision): unless another request created it meanwhile.
        let guard = match w.read_at_rev {
            _ if creating => MemberGuard::New,
            Some(rev) => MemberGuard::Rev(rev),
            None => MemberGuard::New,
        };
        let member_at = change.writes.len();
        change.writes.push(Write::Member { item: item.clone(), guard });
        change.writes.extend(extra);
        change.writes.extend(deliveries(self.targets().await?, item));
        change.audit.push(w.audit.clone());
        change.meta.claim_seat = w.claim_seat;
        change.meta.used_delta = w.used_delta;
        change.meta.pending_delta = w.pending_delta;
        change.meta.walk_goal_is = Some(meta.walk_goal.clone());
        match self.store.commit_unchained(&self.tenant, &change, &self.request_id).await {
            Ok(()) => Ok(true),
            Err(CommitError::Refused(i)) if i == member_at => Ok(false),
            Err(CommitError::Refused(i)) => Err(match &change.writes[i] {
                Write::ClaimEmail(m) => uniqueness(format!("another member of tenant {} already has the email {} (emails are unique per tenant, whatever their case)", self.tenant, m.email)),
                Write::ClaimUserName { user_name, .. } => uniqueness(format!("another User already has the userName {user_name:?}")),
                w => Rejection::conflict("conflict", format!("the member changed meanwhile ({w:?})")),
            }
            .into()),
            Err(CommitError::Seats | CommitError::HeadMoved) => Ok(false),
            Err(CommitError::Port(e)) => Err(e.into()),
        }
    }

    /// The userName of a member as its directory shows it.
    fn user_name_of(item: &MemberItem) -> String {
        item.link.as_ref().and_then(|l| get_ci(&l.doc, "userName")).and_then(Value::as_str).map_or_else(|| item.member.email.clone(), str::to_string)
    }

    /// Another member holds this userName: 409.
    async fn user_name_free(&self, user_name: &str, user: &UserId) -> Result<(), Error> {
        self.name_not_held(user_name, user, self.store.user_by_name(&self.tenant, user_name).await?).await
    }

    /// `user_name_free`, the holder already read.
    async fn name_not_held(&self, user_name: &str, user: &UserId, holder: Option<UserId>) -> Result<(), Error> {
        if let Some(other) = holder.filter(|o| o != user) {
            if self.store.member(&self.tenant, &other).await?.is_some_and(|m| !m.member.removed) {
                return Err(uniqueness(format!("another User ({other}) already has the userName {user_name:?}")).into());
            }
        }
        Ok(())
    }

    /// `POST /Users`.
    pub async fn create_user(&self, body: &Value) -> Result<Answer, Error> {
        self.create_pushed(&read_user(body)?, None).await
    }

    /// A User pushed, created: each attempt decides on one read (the
    /// first may be the one that authenticated the request).
    async fn create_pushed(&self, pushed: &provider::PushedUser, mut first: Option<PushView>) -> Result<Answer, Error> {
        let user = resource::user_id_for(pushed);
        for _ in 0..ATTEMPTS {
            let view = match first.take() {
                Some(view) => view,
                None => self.store.push_view(&self.tenant, &self.connection.id, &user, &pushed.user_name).await?,
            };
            let (meta, existing) = (known(&self.tenant, view.meta)?, view.member);
            self.name_not_held(&pushed.user_name, &user, view.name_holder).await?;
            let model = self.rules(&meta).await?;
            match provider::create(&model, &meta, existing.as_ref(), pushed, &user, self.when_full(&model), &self.cause(), &self.connection.id, self.now)? {
                Pushed::Refused { total, used } => return Err(self.refuse(&pushed.user_name, total, used).await),
                Pushed::Unchanged => unreachable!("a creation writes"),
                Pushed::Write(w) => {
                    let claim = Write::ClaimUserName { user_name: pushed.user_name.clone(), user: user.clone() };
                    if self.write_member(&w, vec![claim], &meta).await? {
                        return Ok(Answer { resource: self.user(&w.item, &meta), changed: true });
                    }
                }
            }
        }
        Err(Error::Contention { tenant: self.tenant.clone(), attempts: ATTEMPTS })
    }

    /// `GET /Users/{id}`.
    pub async fn get_user(&self, id: &str) -> Result<Value, Error> {
        let (meta, item) = self.existing(id).await?;
        Ok(self.user(&item, &meta))
    }

    /// `PUT /Users/{id}`: the User as sent replaces it.
    pub async fn replace_user(&self, id: &str, body: &Value, if_match: Option<&str>) -> Result<Answer, Error> {
        let pushed = read_user(body)?;
        self.update_user(id, if_match, |_| Ok(pushed.clone())).await
    }

    /// `PATCH /Users/{id}`: the operations applied to the User as it stands.
    pub async fn patch_user(&self, id: &str, body: &Value, if_match: Option<&str>) -> Result<Answer, Error> {
        let ops = patch::parse(body)?;
        self.update_user(id, if_match, |item| {
            let mut doc = match item.link.as_ref().map(|l| &l.doc) {
                Some(Value::Object(o)) => Value::Object(o.clone()),
                _ => json!({"userName": item.member.email, "emails": [{"value": item.member.email, "type": "work", "primary": true}]}),
            };
            doc["schemas"] = json!([USER]);
            if item.member.suspended {
                doc["active"] = json!(false);
            }
            patch::apply(&mut doc, &ops, &["id", "meta", "groups", "schemas"])?;
            // Entitle's own view is read-only.
            if let Some(o) = doc.as_object_mut() {
                o.retain(|k, _| !k.eq_ignore_ascii_case(schemas::ENTITLE));
            }
            doc["schemas"] = json!([USER]);
            read_user(&doc)
        })
        .await
    }

    async fn update_user(&self, id: &str, if_match: Option<&str>, pushed_of: impl Fn(&MemberItem) -> Result<provider::PushedUser, Rejection>) -> Result<Answer, Error> {
        for _ in 0..ATTEMPTS {
            let (meta, existing) = self.existing(id).await?;
            check_if_match(if_match, existing.rev)?;
            let pushed = pushed_of(&existing)?;
            let old_name = Self::user_name_of(&existing);
            let renamed = !old_name.eq_ignore_ascii_case(&pushed.user_name);
            if renamed {
                self.user_name_free(&pushed.user_name, &existing.member.user_id).await?;
            }
            let model = self.rules(&meta).await?;
            match provider::replace(&model, &meta, &existing, &pushed, self.when_full(&model), &self.cause(), &self.connection.id, self.now)? {
                Pushed::Refused { total, used } => return Err(self.refuse(&pushed.user_name, total, used).await),
                Pushed::Unchanged => return Ok(Answer { resource: self.user(&existing, &meta), changed: false }),
                Pushed::Write(w) => {
                    let user = existing.member.user_id.clone();
                    let mut extra = Vec::new();
                    if renamed || existing.link.is_none() {
                        extra.push(Write::ClaimUserName { user_name: pushed.user_name.clone(), user: user.clone() });
                    }
                    if renamed {
                        extra.push(Write::ReleaseUserName { user_name: old_name, user });
                    }
                    if self.write_member(&w, extra, &meta).await? {
                        return Ok(Answer { resource: self.user(&w.item, &meta), changed: true });
                    }
                }
            }
        }
        Err(Error::Contention { tenant: self.tenant.clone(), attempts: ATTEMPTS })
    }

    /// `DELETE /Users/{id}`: the member is removed (deprovisioned, its seat
    /// and email freed, out of its groups).
    pub async fn delete_user(&self, id: &str, if_match: Option<&str>) -> Result<(), Error> {
        for _ in 0..ATTEMPTS {
            let (_, existing) = self.existing(id).await?;
            check_if_match(if_match, existing.rev)?;
            let user = existing.member.user_id.clone();
            let after = MemberAccess::without_access(MemberStatus::Deprovisioned);
            let audit = AuditEvent::new(AuditAction::MemberRemoved, format!("member:{user}"), &self.cause(), "deleted by the tenant's identity provider: deprovisioned, seat released")
                .before(&existing.access)
                .after(&after);
            let mut link = existing.link.clone();
            let groups: Vec<String> = link.as_ref().map(|l| l.groups.keys().cloned().collect()).unwrap_or_default();
            if let Some(l) = link.as_mut() {
                l.groups.clear();
            }
            let item = MemberItem { member: crate::core::access::Member { removed: true, ..existing.member.clone() }, access: after, rev: existing.rev + 1, link, ..existing.clone() };
            let targets = self.targets().await?;
            let mut change = Change::new(self.now)
                .write(Write::ReleaseEmail(item.member.clone()))
                .write(Write::Member { item: item.clone(), guard: MemberGuard::Rev(existing.rev) })
                .write(Write::ReleaseUserName { user_name: Self::user_name_of(&existing), user: user.clone() })
                .audit(audit);
            change.writes.extend(groups.into_iter().map(|g| Write::RemoveEdge { group: g, user: user.clone() }));
            change.writes.extend(deliveries(targets, &item));
            change.meta.used_delta = -i64::from(existing.access.holds_seat());
            change.meta.pending_delta = -i64::from(in_line(&existing.access, &existing.seat));
            match self.store.commit_unchained(&self.tenant, &change, &self.request_id).await {
                Ok(()) => return Ok(()),
                Err(CommitError::Refused(_) | CommitError::HeadMoved | CommitError::Seats) => continue,
                Err(CommitError::Port(e)) => return Err(e.into()),
            }
        }
        Err(Error::Contention { tenant: self.tenant.clone(), attempts: ATTEMPTS })
    }

    /// `GET /Users` with a filter: lookups by `id`, `userName` and
    /// `externalId` read one member; anything else reads the tenant's
    /// members a page at a time. Every match, in user id order.
    pub async fn find_users(&self, filter: Option<&Filter>) -> Result<Vec<Value>, Error> {
        let meta = self.meta().await?;
        let keep = |item: &MemberItem| -> Option<Value> {
            let r = self.user(item, &meta);
            (!item.member.removed && filter.is_none_or(|f| f.matches(&r))).then_some(r)
        };
        if let Some(f) = filter {
            let by_key = if let Some(id) = f.required_eq("id") {
                Some(UserId::parse(id).ok())
            } else if let Some(name) = f.required_eq("userName") {
                Some(self.store.user_by_name(&self.tenant, name).await?)
            } else {
                None
            };
            if let Some(user) = by_key {
                let Some(user) = user else { return Ok(Vec::new()) };
                return Ok(self.store.member(&self.tenant, &user).await?.as_ref().and_then(keep).into_iter().collect());
            }
            if let Some(x) = f.required_eq("externalId").and_then(|x| UserId::parse(x).ok()) {
                // A User's id is its externalId when that is an id: found at once.
                if let Some(found) = self.store.member(&self.tenant, &x).await?.as_ref().and_then(keep) {
                    return Ok(vec![found]);
                }
            }
        }
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let (page, next) = self.store.members_page(&self.tenant, after.as_deref(), super::reconcile::WALK_PAGE).await?;
            out.extend(page.iter().filter_map(keep));
            match next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }

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
        for _ in 0..ATTEMPTS {
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
        Err(Error::Contention { tenant: self.tenant.clone(), attempts: ATTEMPTS })
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
            Ok(()) | Err(CommitError::Refused(0)) => Ok(()),
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

/// A list answer (RFC 7644 §3.4.2): `startIndex` is 1-based, `count` at
/// most [`schemas::MAX_RESULTS`] (0: only the total).
pub fn list_response(all: Vec<Value>, start: usize, count: usize) -> Value {
    let start = start.max(1);
    let count = count.min(schemas::MAX_RESULTS);
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(start - 1).take(count).collect();
    json!({"schemas": [LIST], "totalResults": total, "startIndex": start, "itemsPerPage": page.len(), "Resources": page})
}

/// Directory connections, the account API's side (ingest): issued,
/// changed, rotated and revoked under the tenant's chain, audited.
pub mod connections {
    use super::*;
    use crate::core::provider::connection::{check_name, rotated, token, ConnectionUpdate, NewConnection};

    fn cause(request_id: &str) -> Cause {
        Cause::api_call(request_id)
    }

    /// A new connection; returns it and its token (shown this once).
    pub async fn issue<S: Tenants + Directories>(
        store: &S,
        tenant: &TenantId,
        new: &NewConnection,
        random: ([u8; 8], [u8; 32]),
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(Connection, String), Error> {
        check_name(&new.name)?;
        let id = connection::new_id(&random.0);
        let (tok, hash) = token(tenant, &id, &random.1);
        let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let conn = Connection { id: id.clone(), name: new.name.clone(), when_full: new.when_full, token_hash: hash, previous: None, created: at, rotated: None, rev: 1 };
        let committed = audited(store, tenant, |meta| {
            let conn = conn.clone();
            async move {
                known(tenant, meta)?;
                let audit =
                    AuditEvent::new(AuditAction::DirectoryConnected, format!("directory:{}", conn.id), &cause(request_id), "directory connection made: its token was issued (stored as a hash)")
                        .after(json!({"name": conn.name, "when_full": conn.when_full}));
                Ok(Decision::one(Change::new(now).write(Write::Connection { connection: conn.clone(), if_rev: None }).audit(audit), ()))
            }
        })
        .await?;
        if committed.refused.is_some() {
            return Err(Rejection::conflict("directory_exists", format!("directory {id} exists; try again")).into());
        }
        Ok((conn, tok))
    }

    async fn change<S: Tenants + Directories>(
        store: &S,
        tenant: &TenantId,
        id: &str,
        request_id: &str,
        now: DateTime<Utc>,
        f: impl Fn(&Connection) -> Option<(Write, AuditEvent, Connection)> + Sync,
    ) -> Result<Connection, Error> {
        let committed = audited(store, tenant, |meta| {
            let f = &f;
            async move {
                known(tenant, meta)?;
                let conn = store.connection(tenant, id).await?.ok_or_else(|| Rejection::not_found(&format!("directory {id} of tenant {tenant}")))?;
                Ok(match f(&conn) {
                    None => Decision::Done(conn),
                    Some((w, audit, after)) => Decision::one(Change::new(now).write(w).audit(audit), after),
                })
            }
        })
        .await?;
        let _ = request_id;
        Ok(committed.value)
    }

    /// Name or `when_full` changed.
    pub async fn update<S: Tenants + Directories>(store: &S, tenant: &TenantId, id: &str, upd: &ConnectionUpdate, request_id: &str, now: DateTime<Utc>) -> Result<Connection, Error> {
        if let Some(n) = &upd.name {
            check_name(n)?;
        }
        change(store, tenant, id, request_id, now, |c| {
            let next = Connection { name: upd.name.clone().unwrap_or_else(|| c.name.clone()), when_full: upd.when_full.or(c.when_full), rev: c.rev + 1, ..c.clone() };
            if next.name == c.name && next.when_full == c.when_full {
                return None;
            }
            let audit = AuditEvent::new(AuditAction::DirectoryReconfigured, format!("directory:{id}"), &cause(request_id), "directory connection changed")
                .before(json!({"name": c.name, "when_full": c.when_full}))
                .after(json!({"name": next.name, "when_full": next.when_full}));
            Some((Write::Connection { connection: next.clone(), if_rev: Some(c.rev) }, audit, next))
        })
        .await
    }

    /// A new token; the old one stays valid `grace` seconds.
    pub async fn rotate<S: Tenants + Directories>(store: &S, tenant: &TenantId, id: &str, grace: u64, random: [u8; 32], request_id: &str, now: DateTime<Utc>) -> Result<(Connection, String), Error> {
        let (tok, hash) = token(tenant, id, &random);
        let conn = change(store, tenant, id, request_id, now, |c| {
            let next = rotated(c, hash.clone(), grace, now);
            let audit = AuditEvent::new(AuditAction::DirectoryTokenRotated, format!("directory:{id}"), &cause(request_id), format!("token rotated: the previous one stays valid for {grace} s"))
                .after(json!({"previous_valid_until": next.previous.as_ref().map(|p| &p.1)}));
            Some((Write::Connection { connection: next.clone(), if_rev: Some(c.rev) }, audit, next))
        })
        .await?;
        Ok((conn, tok))
    }

    /// Revoked: its token (and any in grace) refused from now on. What it
    /// pushed stays.
    pub async fn revoke<S: Tenants + Directories>(store: &S, tenant: &TenantId, id: &str, request_id: &str, now: DateTime<Utc>) -> Result<Connection, Error> {
        change(store, tenant, id, request_id, now, |c| {
            let audit = AuditEvent::new(
                AuditAction::DirectoryDisconnected,
                format!("directory:{id}"),
                &cause(request_id),
                "directory connection revoked: its tokens are refused; the users and groups it pushed stay",
            )
            .before(json!({"name": c.name}));
            Some((Write::RemoveConnection { id: c.id.clone(), rev: c.rev }, audit, c.clone()))
        })
        .await
    }
}
