//! The SCIM session: a request of one directory connection to its
//! tenant's directory, and what every User and Group operation shares (the
//! request's cause, the rules of the version the tenant follows, the
//! tenant's targets read once, a refused push audited, and the one member
//! write, committed without the chain's lock).

use crate::app::members::{deliveries, known};
use crate::app::ports::{Change, CommitError, Directories, MemberGuard, Models, Targets, Tenants, Write};
use crate::app::Error;
use crate::core::audit::{Announcement, AuditAction, AuditEvent, Cause};
use crate::core::ids::TenantId;
use crate::core::model::{LicensingModel, WhenFull};
use crate::core::provider::connection::{Connection, PushNote};
use crate::core::provider::{self as provider, uniqueness, Push};
use crate::core::rejection::Rejection;
use crate::core::scim::Target;
use crate::core::tenant::TenantMeta;
use chrono::{DateTime, Utc};
use serde_json::json;

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

impl<S: Tenants + Targets + Directories + Models> Session<'_, S> {
    pub(super) fn cause(&self) -> Cause {
        Cause::directory(&self.connection.id, &self.request_id)
    }

    /// The rules of the version the tenant follows (as its `META` says).
    pub(super) async fn rules(&self, meta: &TenantMeta) -> Result<std::sync::Arc<LicensingModel>, Error> {
        crate::app::rules::rules_of(self.store, Some(meta)).await
    }

    pub(super) fn when_full(&self, model: &LicensingModel) -> WhenFull {
        self.connection.when_full.unwrap_or(model.directory.when_full)
    }

    pub(super) async fn meta(&self) -> Result<TenantMeta, Error> {
        known(&self.tenant, self.store.meta(&self.tenant).await?)
    }

    /// What a push of this session is decided under, on the tenant as read.
    pub(super) fn push<'p>(&'p self, model: &'p LicensingModel, meta: &'p TenantMeta, cause: &'p Cause) -> Push<'p> {
        Push { model, meta, connection: &self.connection.id, when_full: self.when_full(model), cause, now: self.now }
    }

    /// Refuses a push for want of a seat: the refusal is audited and
    /// announced (`tenant.seat_limit_reached`), nothing else is stored.
    pub(super) async fn refuse(&self, user_name: &str, total: u32, used: u32) -> Error {
        let event = AuditEvent::new(
            AuditAction::DirectoryPushRefused,
            format!("directory:{}", self.connection.id),
            &self.cause(),
            format!("no free seat ({used} of {total} used) and the directory refuses pushes when full: nobody is evicted"),
        )
        .after(json!({"user_name": user_name, "seats": {"total": total, "used": used}}))
        .announcing(Announcement::SeatLimitReached { directory_id: self.connection.id.clone(), user_name: user_name.to_string(), seats_total: total, seats_used: used });
        match crate::app::audit::note(self.store, &self.tenant, event, self.now).await {
            Ok(_) => {
                self.note(PushNote { refused: true, ..PushNote::default() }).await;
                provider::no_seat(total, used).into()
            }
            Err(e) => e,
        }
    }

    /// Counts this push into its connection's stats (what the portal's
    /// directory page shows). Best effort: the push has landed; a failure
    /// to count it is logged, never answered.
    pub(super) async fn note(&self, note: PushNote) {
        if let Err(e) = self.store.note_push(&self.tenant, &self.connection.id, note, self.now).await {
            tracing::warn!(tenant = %self.tenant, directory = %self.connection.id, cause = %self.cause(), error = %crate::app::error_chain(&Error::from(e)), "a push was not counted in its connection's stats");
        }
    }

    pub(super) async fn targets(&self) -> Result<&[Target], Error> {
        if let Some(t) = self.targets.get() {
            return Ok(t);
        }
        let read = self.store.targets(&self.tenant).await?;
        Ok(self.targets.get_or_init(|| read))
    }

    /// Commits one member write; `Ok(false)`: read again and decide again.
    pub(super) async fn write_member(&self, w: &provider::MemberWrite, extra: Vec<Write>, meta: &TenantMeta) -> Result<bool, Error> {
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
}
