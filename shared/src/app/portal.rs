//! The admin's portal: making a link (ingest), spending it for a session,
//! and checking a session on each request (the portal function). See
//! [`crate::core::portal`] for the rules.

use super::members::known;
use super::ports::{Models, Portal, Tenants};
use super::rules::rules_of;
use super::Error;
use crate::core::ids::{TenantId, UserId};
use crate::core::portal::{is_admin, key_of, token_text, Intent, Link, LinkRequest, LinkState, Session, LINKS_PER_MINUTE};
use crate::core::rejection::Rejection;
use crate::core::tenant::{MemberItem, TenantMeta};
use chrono::{DateTime, Utc};

/// Whether `user` is one of the tenant's admins now: the tenant's `META`
/// and the member, read together; `None` for an unknown tenant.
async fn admin_of<S: Tenants + Models>(store: &S, tenant: &TenantId, user: &UserId) -> Result<Option<(TenantMeta, Option<MemberItem>, bool)>, Error> {
    let (meta, member) = store.meta_and_member(tenant, user).await?;
    let Ok(meta) = known(tenant, meta) else { return Ok(None) };
    let model = rules_of(store, Some(&meta)).await?;
    let admin = member.as_ref().is_some_and(|m| is_admin(&model, &meta, m));
    Ok(Some((meta, member, admin)))
}

/// A new link for the tenant's admin: its token (in the URL only, never
/// stored) and the link as stored. 404 for an unknown tenant, 403 for a
/// user the tenant's role rules make no admin, 429 past the tenant's
/// links per minute.
pub async fn create_link<S: Tenants + Models + Portal>(store: &S, tenant: &TenantId, req: &LinkRequest, random: [u8; 32], now: DateTime<Utc>) -> Result<(String, Link), Error> {
    let ttl = req.ttl()?;
    let (_, member, admin) = admin_of(store, tenant, &req.admin).await?.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?;
    if !admin {
        let why = if member.is_none() { "is not a member of the tenant" } else { "holds none of the model's privileged roles" };
        return Err(Rejection::forbidden("not_an_admin", format!("{} {why}: only the tenant's admins get a portal link", req.admin)).into());
    }
    let token = token_text(&random);
    let link = Link { tenant: tenant.clone(), admin: req.admin.clone(), intent: req.intent.unwrap_or_default(), expires_at: now.timestamp() + ttl as i64, used_at: None };
    if !store.put_link(&key_of(&token), &link, now.timestamp(), LINKS_PER_MINUTE).await? {
        return Err(Rejection::rate_limited(format!("tenant {tenant} made {LINKS_PER_MINUTE} portal links this minute; try again in a minute")).into());
    }
    Ok((token, link))
}

/// What a link's GET shows: its state, nothing changed.
pub async fn peek<S: Portal>(store: &S, token: &str, now: DateTime<Utc>) -> Result<LinkState, Error> {
    Ok(LinkState::of(store.link(&key_of(token)).await?, now.timestamp()))
}

/// Why a link opened no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unopened {
    Used,
    Expired,
    Unknown,
    /// Its admin lost the role (or the tenant is gone) since it was made.
    NotAdmin,
}

impl Unopened {
    /// Why a link that was not spent opens nothing: read as open, it was
    /// spent by a request racing the one asking (spending fails only on an
    /// unknown, used or expired link).
    pub fn of(state: LinkState) -> Self {
        match state {
            LinkState::Expired => Unopened::Expired,
            LinkState::Unknown => Unopened::Unknown,
            LinkState::Used | LinkState::Open(_) => Unopened::Used,
        }
    }
}

/// A session just opened: its id (for the cookie, never stored) and where
/// the link lands.
#[derive(Debug)]
pub struct Opened {
    pub session_id: String,
    pub session: Session,
    pub intent: Intent,
}

/// Spends a link for a session, once: a second POST of the same link (or
/// two at once) finds it spent.
pub async fn open<S: Tenants + Models + Portal>(store: &S, token: &str, random: ([u8; 32], [u8; 32]), now: DateTime<Utc>) -> Result<Result<Opened, Unopened>, Error> {
    let key = key_of(token);
    let Some(link) = store.spend_link(&key, now.timestamp()).await? else {
        return Ok(Err(Unopened::of(LinkState::of(store.link(&key).await?, now.timestamp()))));
    };
    if !matches!(admin_of(store, &link.tenant, &link.admin).await?, Some((_, _, true))) {
        return Ok(Err(Unopened::NotAdmin));
    }
    let session_id = token_text(&random.0);
    let session = Session { tenant: link.tenant.clone(), admin: link.admin.clone(), csrf: token_text(&random.1), last_seen: now.timestamp() };
    store.put_session(&key_of(&session_id), &session).await?;
    Ok(Ok(Opened { session_id, session, intent: link.intent }))
}

/// Why a request found no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSession {
    /// No cookie, a cookie no key signed, or a session ended by its admin.
    Absent,
    /// Idle for longer than [`crate::core::portal::IDLE_SECS`]: ended now.
    Idle,
    /// Its admin no longer holds a privileged role: ended now.
    RoleLost,
}

/// A live session with the tenant as read for this request.
#[derive(Debug)]
pub struct Live {
    pub session: Session,
    pub meta: TenantMeta,
    pub admin: MemberItem,
}

/// The session a request's (verified) session id names, checked: alive,
/// its admin still an admin. Ends it otherwise. Touches it at most once a
/// minute.
pub async fn session<S: Tenants + Models + Portal>(store: &S, session_id: &str, now: DateTime<Utc>) -> Result<Result<Live, NoSession>, Error> {
    let key = key_of(session_id);
    let Some(session) = store.session(&key).await? else { return Ok(Err(NoSession::Absent)) };
    if session.idle_expired(now.timestamp()) {
        store.end_session(&key).await?;
        return Ok(Err(NoSession::Idle));
    }
    let Some((meta, Some(admin), true)) = admin_of(store, &session.tenant, &session.admin).await? else {
        store.end_session(&key).await?;
        return Ok(Err(NoSession::RoleLost));
    };
    if session.needs_touch(now.timestamp()) {
        store.touch_session(&key, now.timestamp()).await?;
    }
    Ok(Ok(Live { session, meta, admin }))
}

/// Signs out: the session is gone.
pub async fn close<S: Portal>(store: &S, session_id: &str) -> Result<(), Error> {
    Ok(store.end_session(&key_of(session_id)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::memory::{crm_change, Memory};
    use crate::app::{licenses, members, reconcile};
    use crate::core::audit::{Cause, CauseKind};
    use crate::core::model::LicensingModel;
    use crate::core::rejection::Kind;
    use crate::core::views::{MemberUpdate, NewMember};
    use chrono::Duration;
    use std::sync::Arc;

    fn user(u: &str) -> UserId {
        UserId::parse(u).unwrap()
    }

    /// A licensed tenant with an owner (`ann`, group `owners`) and a plain member (`bob`).
    async fn tenant(store: &Memory, t: &str) -> TenantId {
        let t = TenantId::parse(t).unwrap();
        licenses::record_change(store, &crm_change(&t, 1, 5), "h1", Utc::now()).await.unwrap();
        reconcile::reconcile(store, &t, &Cause::new(CauseKind::Reconcile, "seed"), Utc::now()).await.unwrap();
        for (u, groups) in [("ann", vec!["owners"]), ("bob", vec![])] {
            let new = NewMember { user_id: user(u), email: format!("{u}@example.test"), groups: groups.into_iter().map(str::to_string).collect(), attributes: Default::default() };
            members::create(store, &t, &new, "seed", Utc::now()).await.unwrap();
        }
        t
    }

    fn req(admin: &str) -> LinkRequest {
        LinkRequest { admin: user(admin), ttl_seconds: None, intent: Some(Intent::Seats) }
    }

    fn kind(e: Error) -> Kind {
        match e {
            Error::Rejected(r) => r.kind,
            other => panic!("not a rejection: {other}"),
        }
    }

    #[tokio::test]
    async fn only_an_admin_of_a_known_tenant_gets_a_link_and_the_token_is_not_stored() {
        let store = Memory::new(Arc::new(LicensingModel::default_model()));
        let t = tenant(&store, "acme").await;
        let now = Utc::now();
        let (token, link) = create_link(&store, &t, &req("ann"), [1; 32], now).await.unwrap();
        assert_eq!(link.expires_at, now.timestamp() + 300);
        assert_eq!(link.intent, Intent::Seats);
        assert!(store.link(&token).await.unwrap().is_none(), "stored under its hash only");
        assert_eq!(peek(&store, &token, now).await.unwrap(), LinkState::Open(link));
        assert_eq!(kind(create_link(&store, &t, &req("bob"), [2; 32], now).await.unwrap_err()), Kind::Forbidden);
        assert_eq!(kind(create_link(&store, &t, &req("nobody"), [2; 32], now).await.unwrap_err()), Kind::Forbidden);
        let other = TenantId::parse("unknown").unwrap();
        assert_eq!(kind(create_link(&store, &other, &req("ann"), [2; 32], now).await.unwrap_err()), Kind::NotFound);
        let long = LinkRequest { ttl_seconds: Some(901), ..req("ann") };
        assert_eq!(kind(create_link(&store, &t, &long, [2; 32], now).await.unwrap_err()), Kind::Invalid);
    }

    #[tokio::test]
    async fn a_tenant_makes_at_most_twenty_links_a_minute() {
        let store = Memory::new(Arc::new(LicensingModel::default_model()));
        let t = tenant(&store, "acme").await;
        let minute = chrono::DateTime::from_timestamp(1_800_000_000 / 60 * 60, 0).unwrap();
        for i in 0..LINKS_PER_MINUTE {
            create_link(&store, &t, &req("ann"), [i as u8; 32], minute + Duration::seconds(i as i64)).await.unwrap();
        }
        assert_eq!(kind(create_link(&store, &t, &req("ann"), [99; 32], minute + Duration::seconds(59)).await.unwrap_err()), Kind::RateLimited);
        create_link(&store, &t, &req("ann"), [100; 32], minute + Duration::seconds(60)).await.unwrap();
    }

    #[tokio::test]
    async fn a_link_opens_one_session_once_and_never_after_it_expires() {
        let store = Memory::new(Arc::new(LicensingModel::default_model()));
        let t = tenant(&store, "acme").await;
        let now = Utc::now();
        let (token, _) = create_link(&store, &t, &req("ann"), [1; 32], now).await.unwrap();
        let opened = open(&store, &token, ([2; 32], [3; 32]), now).await.unwrap().unwrap();
        assert_eq!((opened.session.tenant.as_str(), opened.session.admin.as_str(), opened.intent), ("acme", "ann", Intent::Seats));
        assert_eq!(open(&store, &token, ([4; 32], [5; 32]), now).await.unwrap().unwrap_err(), Unopened::Used);
        assert_eq!(peek(&store, &token, now).await.unwrap(), LinkState::Used);
        let (late, _) = create_link(&store, &t, &LinkRequest { ttl_seconds: Some(60), ..req("ann") }, [6; 32], now).await.unwrap();
        assert_eq!(open(&store, &late, ([7; 32], [8; 32]), now + Duration::seconds(60)).await.unwrap().unwrap_err(), Unopened::Expired);
        assert_eq!(open(&store, "0".repeat(64).as_str(), ([7; 32], [8; 32]), now).await.unwrap().unwrap_err(), Unopened::Unknown);
        let live = session(&store, &opened.session_id, now).await.unwrap().unwrap();
        assert_eq!(live.admin.member.user_id.as_str(), "ann");
        assert_eq!(session(&store, "f".repeat(64).as_str(), now).await.unwrap().unwrap_err(), NoSession::Absent);
    }

    #[tokio::test]
    async fn two_posts_of_one_link_at_once_open_one_session() {
        let store = Memory::new(Arc::new(LicensingModel::default_model()));
        let t = tenant(&store, "acme").await;
        let (token, _) = create_link(&store, &t, &req("ann"), [1; 32], Utc::now()).await.unwrap();
        let tries = (0..8u8).map(|i| {
            let (store, token) = (store.clone(), token.clone());
            tokio::spawn(async move { open(&store, &token, ([i; 32], [i; 32]), Utc::now()).await.unwrap() })
        });
        let outcomes = futures_util::future::join_all(tries).await;
        assert_eq!(outcomes.iter().filter(|o| o.as_ref().unwrap().is_ok()).count(), 1);
    }

    #[tokio::test]
    async fn a_session_ends_when_idle_for_thirty_minutes_or_when_its_admin_loses_the_role() {
        let store = Memory::new(Arc::new(LicensingModel::default_model()));
        let t = tenant(&store, "acme").await;
        let now = Utc::now();
        let (token, _) = create_link(&store, &t, &req("ann"), [1; 32], now).await.unwrap();
        let id = open(&store, &token, ([2; 32], [3; 32]), now).await.unwrap().unwrap().session_id;
        // Used 29 minutes later: alive, and its idle time starts again.
        session(&store, &id, now + Duration::minutes(29)).await.unwrap().unwrap();
        session(&store, &id, now + Duration::minutes(58)).await.unwrap().unwrap();
        assert_eq!(session(&store, &id, now + Duration::minutes(89)).await.unwrap().unwrap_err(), NoSession::Idle);
        assert_eq!(session(&store, &id, now + Duration::minutes(89)).await.unwrap().unwrap_err(), NoSession::Absent, "ended, not just refused");

        let (token, _) = create_link(&store, &t, &req("ann"), [4; 32], now).await.unwrap();
        let id = open(&store, &token, ([5; 32], [6; 32]), now).await.unwrap().unwrap().session_id;
        let demoted = MemberUpdate { groups: Some(Default::default()), attributes: None };
        members::update(&store, &t, &user("ann"), &demoted, "demote", now).await.unwrap();
        assert_eq!(session(&store, &id, now).await.unwrap().unwrap_err(), NoSession::RoleLost);
        // And a link made before the role was lost opens nothing.
        let owners = MemberUpdate { groups: Some(["owners".to_string()].into()), attributes: None };
        members::update(&store, &t, &user("ann"), &owners, "promote", now).await.unwrap();
        let (token, _) = create_link(&store, &t, &req("ann"), [7; 32], now).await.unwrap();
        members::update(&store, &t, &user("ann"), &demoted, "demote-2", now).await.unwrap();
        assert_eq!(open(&store, &token, ([8; 32], [9; 32]), now).await.unwrap().unwrap_err(), Unopened::NotAdmin);
    }

    #[tokio::test]
    async fn the_admin_of_a_lapsed_tenant_still_gets_in() {
        let store = Memory::new(Arc::new(LicensingModel::default_model()));
        let t = tenant(&store, "acme").await;
        let mut ended = crm_change(&t, 2, 5);
        ended.update.status = crate::core::license::LicenseStatus::Canceled;
        licenses::record_change(&store, &ended, "h2", Utc::now()).await.unwrap();
        reconcile::reconcile(&store, &t, &Cause::new(CauseKind::Reconcile, "lapse"), Utc::now() + Duration::days(60)).await.unwrap();
        assert!(store.member(&t, &user("ann")).await.unwrap().is_some());
        create_link(&store, &t, &req("ann"), [1; 32], Utc::now()).await.unwrap();
    }
}
