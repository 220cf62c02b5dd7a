//! Users pushed into the tenant's directory: created (a member under the
//! seat rules of the moment), read, replaced, patched, deleted and found.
//! Each write decides on one read and, when the member moved meanwhile,
//! reads and decides again ([`Retry`]).

use super::session::Session;
use super::{check_if_match, Answer, ATTEMPTS};
use crate::app::commit::Retry;
use crate::app::members::{deliveries, known};
use crate::app::ports::{Change, CommitError, Directories, MemberGuard, Models, PushView, Targets, Tenants, Write};
use crate::app::Error;
use crate::core::access::{in_line, MemberAccess, MemberItem, MemberStatus};
use crate::core::audit::{AuditAction, AuditEvent};
use crate::core::ids::UserId;
use crate::core::provider::connection::PushNote;
use crate::core::provider::filter::{get_ci, Filter};
use crate::core::provider::patch;
use crate::core::provider::resource::{self, read_user, render_user};
use crate::core::provider::schemas::{self, USER};
use crate::core::provider::{self as provider, uniqueness, Pushed};
use crate::core::rejection::Rejection;
use crate::core::tenant::TenantMeta;
use serde_json::{json, Value};

impl<S: Tenants + Targets + Directories + Models> Session<'_, S> {
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
    pub(super) async fn create_pushed(&self, pushed: &provider::PushedUser, mut first: Option<PushView>) -> Result<Answer, Error> {
        let user = resource::user_id_for(pushed);
        let mut retry = Retry::new(&self.tenant, ATTEMPTS);
        while retry.again().await {
            let view = match first.take() {
                Some(view) => view,
                None => self.store.push_view(&self.tenant, &self.connection.id, &user, &pushed.user_name).await?,
            };
            let (meta, existing) = (known(&self.tenant, view.meta)?, view.member);
            self.name_not_held(&pushed.user_name, &user, view.name_holder).await?;
            let model = self.rules(&meta).await?;
            let cause = self.cause();
            match provider::create(&self.push(&model, &meta, &cause), existing.as_ref(), pushed, &user)? {
                Pushed::Refused { total, used } => return Err(self.refuse(&pushed.user_name, total, used).await),
                Pushed::Unchanged => unreachable!("a creation writes"),
                Pushed::Write(w) => {
                    let claim = Write::ClaimUserName { user_name: pushed.user_name.clone(), user: user.clone() };
                    if self.write_member(&w, vec![claim], &meta).await? {
                        self.note(PushNote { users: 1, ..PushNote::default() }).await;
                        return Ok(Answer { resource: self.user(&w.item, &meta), changed: true });
                    }
                }
            }
        }
        Err(retry.contended())
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
        let mut retry = Retry::new(&self.tenant, ATTEMPTS);
        while retry.again().await {
            let (meta, existing) = self.existing(id).await?;
            check_if_match(if_match, existing.rev)?;
            let pushed = pushed_of(&existing)?;
            let old_name = Self::user_name_of(&existing);
            let renamed = !old_name.eq_ignore_ascii_case(&pushed.user_name);
            if renamed {
                self.user_name_free(&pushed.user_name, &existing.member.user_id).await?;
            }
            let model = self.rules(&meta).await?;
            let cause = self.cause();
            match provider::replace(&self.push(&model, &meta, &cause), &existing, &pushed)? {
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
                        self.note(PushNote::default()).await;
                        return Ok(Answer { resource: self.user(&w.item, &meta), changed: true });
                    }
                }
            }
        }
        Err(retry.contended())
    }

    /// `DELETE /Users/{id}`: the member is removed (deprovisioned, its seat
    /// and email freed, out of its groups).
    pub async fn delete_user(&self, id: &str, if_match: Option<&str>) -> Result<(), Error> {
        let mut retry = Retry::new(&self.tenant, ATTEMPTS);
        while retry.again().await {
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
                Ok(()) => {
                    self.note(PushNote { users: -1, ..PushNote::default() }).await;
                    return Ok(());
                }
                Err(CommitError::Refused(_) | CommitError::HeadMoved | CommitError::Seats) => continue,
                Err(CommitError::Port(e)) => return Err(e.into()),
            }
        }
        Err(retry.contended())
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
            let (page, next) = self.store.members_page(&self.tenant, after.as_deref(), crate::app::reconcile::WALK_PAGE).await?;
            out.extend(page.iter().filter_map(keep));
            match next {
                Some(n) => after = Some(n),
                None => return Ok(out),
            }
        }
    }
}
