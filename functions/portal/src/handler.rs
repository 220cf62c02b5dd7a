//! portal's routes: the link, the session, each page and each form. A
//! page reads what it shows a page at a time; a form is checked for its
//! session's CSRF token before anything is read, calls the same use case
//! as the account API (audited with the cause `portal:<admin>`), and
//! answers with a redirect to the page that shows the outcome.

use crate::pages::{self, Notice, Shell};
use crate::web::{self, Brand, Form, Site};
use chrono::{DateTime, Utc};
use entitle::adapters::dynamodb::Dynamo;
use entitle::adapters::secrets::SigningSecrets;
use entitle::adapters::sqs::ReconcileQueue;
use entitle::app::portal::{self, Live, NoSession, Unopened};
use entitle::app::ports::{Directories, Portal, Tenants};
use entitle::app::{audit, directory, reconcile, rules, seats, targets, Error, PortError};
use entitle::core::audit::{AuditRecord, Cause};
use entitle::core::ids::{TargetId, TenantId, UserId};
use entitle::core::portal::{sign_cookie, verify_cookie, LinkState};
use entitle::core::provider::connection::{self, NewConnection, Rotation};
use entitle::core::reassign::SeatRequest;
use entitle::core::rejection::{Kind, Rejection};
use entitle::core::seats::SeatList;
use entitle::core::views::{MemberView, TenantView};
use entitle::edge::{config, http};
use lambda_http::{Body, Request, Response};

pub struct App {
    pub store: Dynamo,
    pub queue: ReconcileQueue,
    /// The keys that sign session cookies (Secrets Manager, a rotation set).
    pub keys: SigningSecrets,
    /// Signs the audit exports the audit page downloads (the audit key).
    pub signer: entitle::adapters::kms::AuditSigner,
    pub brand: Brand,
}

/// Members shown per list (holders, the line, a search).
pub const LIST_PAGE: usize = 100;
/// Amendments of the review queue the overview reads (every tenant's).
pub const REVIEWS_READ: usize = 1000;
/// Audit records shown per page.
pub const AUDIT_PAGE: u32 = 50;
/// The most audit records one filtered page reads before it answers with
/// what it found and where to go on.
pub const AUDIT_SCAN: u64 = 2_000;

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let path = http::path(&req);
    let site = Site::of(&req, &path);
    let method = req.method().as_str().to_string();
    let segs = http::segments(&path);
    let answer = match (method.as_str(), segs.as_slice()) {
        ("GET", ["assets", "portal.css"]) => Ok(web::asset("text/css; charset=utf-8", include_str!("assets/portal.css"))),
        ("GET", ["assets", "theme.css"]) => Ok(web::asset("text/css; charset=utf-8", pages::theme(&app.brand))),
        ("GET", ["assets", "portal.js"]) => Ok(web::asset("text/javascript; charset=utf-8", include_str!("assets/portal.js"))),
        ("GET", []) => Ok(web::html(200, pages::message(&shell(app, &site), "Open your link", "The portal opens from a link your application gives you. Ask it for a new one."))),
        ("GET", ["links", token]) => landing(app, &site, token).await,
        ("POST", ["links", token]) => open(app, &site, token).await,
        ("POST", ["signout"]) => sign_out(app, &req, &site).await,
        (_, ["tenants", tenant, rest @ ..]) => tenant_route(app, &req, &site, &method, tenant, rest).await,
        _ => Err(http::no_route(&method, &path)),
    };
    Ok(answer.unwrap_or_else(|e| error_page(app, &site, e)))
}

fn shell<'a>(app: &'a App, site: &'a Site) -> Shell<'a> {
    Shell { brand: &app.brand, site, live: None }
}

/// A refusal as a page with its status; anything else a 500 whose details
/// are in the log only.
fn error_page(app: &App, site: &Site, e: Error) -> Response<Body> {
    let shell = shell(app, site);
    match e {
        Error::Rejected(r) => {
            let status = http::status_of(r.kind);
            tracing::warn!(status, code = r.code, message = %r.message, "portal request refused");
            let title = match r.kind {
                Kind::NotFound => "Not found",
                Kind::Forbidden => "Not allowed",
                _ => "Not done",
            };
            web::html(status, pages::message(&shell, title, &r.message))
        }
        Error::Upstream(_) | Error::Contention { .. } | Error::Port(PortError::Unavailable { .. }) => {
            tracing::warn!(error = %http::error_chain(&e), "portal request failed: try again");
            web::html(503, pages::message(&shell, "Try again", "A service the portal depends on did not answer. Nothing was changed; try again in a moment."))
        }
        other => {
            tracing::error!(error = %http::error_chain(&other), "portal request failed");
            web::html(500, pages::message(&shell, "Something went wrong", "The portal could not answer. It has been logged."))
        }
    }
}

fn not_found() -> Error {
    Rejection::not_found("this page").into()
}

/// A link's GET: a page with a button, nothing changed (mail and chat link
/// scanners fetch links; only a person presses the button).
async fn landing(app: &App, site: &Site, token: &str) -> Result<Response<Body>, Error> {
    let shell = shell(app, site);
    Ok(match portal::peek(&app.store, token, Utc::now()).await? {
        LinkState::Open(link) => web::html(200, pages::landing(&shell, token, &link)),
        state => unopened_page(&shell, Unopened::of(state)),
    })
}

fn unopened_page(shell: &Shell, why: Unopened) -> Response<Body> {
    let (status, title, text) = match why {
        Unopened::Used => (410, "This link was used", "A portal link opens once. Ask your application for a new one."),
        Unopened::Expired => (410, "This link has expired", "A portal link is valid for a few minutes. Ask your application for a new one."),
        Unopened::Unknown => (404, "This link is not known", "Check that the whole link was copied, or ask your application for a new one."),
        Unopened::NotAdmin => (403, "This link no longer opens", "The account it was made for is no longer an admin of this tenant."),
    };
    web::html(status, pages::message(shell, title, text))
}

/// The button's POST: the link spent for a session, then the page it lands on.
async fn open(app: &App, site: &Site, token: &str) -> Result<Response<Body>, Error> {
    let opened = match portal::open(&app.store, token, (config::random(), config::random()), Utc::now()).await? {
        Ok(o) => o,
        Err(why) => return Ok(unopened_page(&shell(app, site), why)),
    };
    let keys = app.keys.current().await.map_err(keys_unreadable)?;
    let value = sign_cookie(&opened.session_id, &keys).ok_or_else(|| PortError::Corrupt { key: "portal session keys".into(), why: "none configured".into() })?;
    tracing::info!(tenant = %opened.session.tenant, cause = %Cause::portal(&opened.session.admin), "portal session opened");
    let location = site.url(&format!("/tenants/{}/{}", opened.session.tenant, opened.intent.page()));
    Ok(web::see_other(&location, Some(&site.cookie(&value))))
}

/// Whether a form carries its session's CSRF token.
fn from_session(form: &Form, session: &entitle::core::portal::Session) -> bool {
    form.get("csrf").is_some_and(|t| session.csrf_matches(t))
}

fn keys_unreadable(e: entitle::adapters::secrets::SigningSecretError) -> PortError {
    PortError::unavailable("reading the portal's session keys", e)
}

/// The session id of a request's cookie, if one of the keys signed it.
async fn session_id(app: &App, req: &Request) -> Result<Option<String>, Error> {
    let Some(value) = web::cookie(req) else { return Ok(None) };
    let keys = app.keys.current().await.map_err(keys_unreadable)?;
    match verify_cookie(&value, &keys) {
        Some(id) => Ok(Some(id)),
        // Signed by a key added since the last read?
        None => Ok(app.keys.refreshed().await.map_err(keys_unreadable)?.and_then(|fresh| verify_cookie(&value, &fresh))),
    }
}

async fn sign_out(app: &App, req: &Request, site: &Site) -> Result<Response<Body>, Error> {
    if let Some(id) = session_id(app, req).await? {
        // Its form carries the session's CSRF token, as every form does.
        let form = Form::of(req)?;
        if let Some(session) = app.store.session(&entitle::core::portal::key_of(&id)).await? {
            if !from_session(&form, &session) {
                return Ok(web::html(
                    403,
                    pages::message(&shell(app, site), "Not done", "This form did not come from your session of the portal (its CSRF token is missing or wrong). You are still signed in."),
                ));
            }
        }
        portal::close(&app.store, &id).await?;
    }
    let mut page = web::html(200, pages::message(&shell(app, site), "Signed out", "Your session has ended. Open a new link to come back."));
    page.headers_mut().append("set-cookie", site.clear_cookie().parse().expect("a valid cookie"));
    Ok(page)
}

/// What a page of one tenant is rendered with.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub site: &'a Site,
    pub live: Live,
    pub tenant: TenantId,
    pub now: DateTime<Utc>,
}

impl Ctx<'_> {
    pub fn shell(&self) -> Shell<'_> {
        Shell { brand: &self.app.brand, site: self.site, live: Some(&self.live) }
    }
    fn cause(&self) -> Cause {
        Cause::portal(&self.live.session.admin)
    }
    /// A page of this tenant, as this page must link to it.
    pub fn page_url(&self, page: &str) -> String {
        self.site.url(&format!("/tenants/{}/{page}", self.tenant))
    }
    fn done(&self, page: &str, notice: Notice) -> Response<Body> {
        web::see_other(&format!("{}?notice={}", self.page_url(page), notice.code()), None)
    }
}

async fn tenant_route(app: &App, req: &Request, site: &Site, method: &str, tenant: &str, rest: &[&str]) -> Result<Response<Body>, Error> {
    let now = Utc::now();
    let live = match session_id(app, req).await? {
        None => Err(NoSession::Absent),
        Some(id) => portal::session(&app.store, &id, now).await?,
    };
    let live = match live {
        Ok(l) => l,
        Err(why) => {
            let text = match why {
                NoSession::Absent => "You are not signed in to this portal. Open the link your application gives you.",
                NoSession::Idle => "Your session ended after 30 minutes without use. Open a new link to come back.",
                NoSession::RoleLost => "Your session ended: your account is no longer an admin of this tenant.",
            };
            let mut page = web::html(401, pages::message(&shell(app, site), "Signed out", text));
            page.headers_mut().append("set-cookie", site.clear_cookie().parse().expect("a valid cookie"));
            return Ok(page);
        }
    };
    // Another tenant's pages do not exist for this session.
    if live.session.tenant.as_str() != tenant {
        return Err(not_found());
    }
    let ctx = Ctx { app, site, tenant: live.session.tenant.clone(), live, now };
    if method == "POST" {
        let form = Form::of(req)?;
        if !from_session(&form, &ctx.live.session) {
            tracing::warn!(tenant = %ctx.tenant, cause = %ctx.cause(), "portal form without its CSRF token refused");
            return Ok(web::html(
                403,
                pages::message(
                    &ctx.shell(),
                    "Not done",
                    "This form did not come from your session of the portal (its CSRF token is missing or wrong). Nothing was changed; reload the page and try again.",
                ),
            ));
        }
        return match rest {
            ["seats"] => seat_action(&ctx, req, &form).await,
            ["directory"] => connect(&ctx, &form).await,
            ["directory", id, "rotate"] => rotate(&ctx, id, &form).await,
            ["directory", id, "revoke"] => revoke(&ctx, id).await,
            ["targets", id, "repair"] => repair(&ctx, id).await,
            ["audit", "verify"] => audit_page(&ctx, req, true).await,
            _ => Err(not_found()),
        };
    }
    if method != "GET" {
        return Err(not_found());
    }
    let notice = http::query(req, "notice").and_then(|n| Notice::from_code(&n));
    match rest {
        [] => Ok(web::see_other(&ctx.page_url("overview"), None)),
        ["overview"] => overview(&ctx).await,
        ["seats"] => seats_page(&ctx, req, notice.map(Ok), 200).await,
        ["members"] => members_page(&ctx, req).await,
        ["directory"] => directory_page(&ctx, notice, None, 200).await,
        ["targets"] => targets_page(&ctx, notice).await,
        ["audit"] => audit_page(&ctx, req, false).await,
        ["audit", "export"] => export(&ctx, req).await,
        _ => Err(not_found()),
    }
}

async fn overview(ctx: &Ctx<'_>) -> Result<Response<Body>, Error> {
    let view = TenantView::of(ctx.tenant.clone(), &ctx.live.meta);
    let targets = targets::views(&ctx.app.store, &ctx.tenant).await?;
    // The review queue is one for every tenant and short (amendments a
    // person has yet to approve): its first REVIEWS_READ, this tenant's.
    let reviews = ctx.app.store.pending_reviews(REVIEWS_READ).await?.into_iter().filter(|a| a.tenant_id == ctx.tenant).count();
    Ok(web::html(200, pages::overview(ctx, view.as_ref(), &targets, reviews)))
}

async fn seats_page(ctx: &Ctx<'_>, req: &Request, notice: Option<Result<Notice, Rejection>>, status: u16) -> Result<Response<Body>, Error> {
    let store = &ctx.app.store;
    let (holders_after, line_after) = (cursor(req, "holders_after")?, cursor(req, "line_after")?);
    let (holders, holders_next) = store.seat_order_page(&ctx.tenant, SeatList::Holders, holders_after.as_deref(), LIST_PAGE).await?;
    let (line, line_next) = store.seat_order_page(&ctx.tenant, SeatList::Line, line_after.as_deref(), LIST_PAGE).await?;
    let view = |items: Vec<_>| items.iter().map(|i| MemberView::of(ctx.tenant.clone(), i)).collect::<Vec<_>>();
    let pages = pages::SeatPages { holders_after, line_after, holders_next, line_next };
    Ok(web::html(status, pages::seats(ctx, &view(holders), &view(line), &pages, notice.as_ref())))
}

/// A place in the seat order to page on from (`order_key_string`: two
/// flags, twenty digits, `#`, the member's id), or 400.
fn cursor(req: &Request, name: &str) -> Result<Option<String>, Error> {
    let Some(raw) = http::query(req, name).filter(|c| !c.is_empty()) else { return Ok(None) };
    let ok = raw.split_once('#').is_some_and(|(order, user)| order.len() == 22 && order.bytes().all(|b| b.is_ascii_digit()) && UserId::parse(user).is_ok());
    if !ok {
        return Err(Rejection::malformed("invalid_query", format!("{name}: not a place in the seat order")).into());
    }
    Ok(Some(raw))
}

/// Give a waiting member a seat, release one, or hand one on: the use
/// case of `PUT /tenants/{tenant}/members/{user}/seat`, its refusals
/// shown on the page.
async fn seat_action(ctx: &Ctx<'_>, req: &Request, form: &Form) -> Result<Response<Body>, Error> {
    let parse = |name: &str| -> Result<UserId, Rejection> {
        let raw = form.get(name).ok_or_else(|| Rejection::malformed("missing_field", format!("{name}: choose a member")))?;
        UserId::parse(raw).map_err(|e| Rejection::malformed("invalid_field", format!("{name}: {e}")))
    };
    let admin = Some(ctx.live.session.admin.to_string());
    let decided = (|| -> Result<(UserId, SeatRequest, Notice), Rejection> {
        Ok(match form.get("action") {
            Some("give") => (parse("user")?, SeatRequest { hold: true, from: None, by: admin }, Notice::SeatGiven),
            Some("release") => (parse("user")?, SeatRequest { hold: false, from: None, by: admin }, Notice::SeatReleased),
            Some("hand") => (parse("user")?, SeatRequest { hold: true, from: Some(parse("from")?), by: admin }, Notice::SeatHanded),
            _ => return Err(Rejection::malformed("invalid_action", "action: expected give, release or hand")),
        })
    })();
    let (user, request, notice) = match decided {
        Ok(d) => d,
        Err(r) => return seats_page(ctx, req, Some(Err(r.clone())), http::status_of(r.kind)).await,
    };
    let cause = ctx.cause();
    match seats::set_seat(&ctx.app.store, &ctx.tenant, &user, &request, None, &cause, ctx.now).await {
        Ok(_) => {}
        Err(Error::Rejected(r)) => return seats_page(ctx, req, Some(Err(r.clone())), http::status_of(r.kind)).await,
        Err(e) => return Err(e),
    }
    tracing::info!(tenant = %ctx.tenant, user = %user, cause = %cause, hold = request.hold, from = request.from.as_ref().map(|f| f.to_string()), "seat set");
    let own = format!("portal-seat:{}:{user}:{}", ctx.tenant, ctx.now.timestamp_millis());
    reconcile::wake(&ctx.app.store, &ctx.app.queue, &ctx.tenant, cause, &own).await?;
    Ok(ctx.done("seats", notice))
}

/// Find a member by user id or email (or a pushed userName).
async fn members_page(ctx: &Ctx<'_>, req: &Request) -> Result<Response<Body>, Error> {
    let q = http::query(req, "q").map(|q| q.trim().to_string()).filter(|q| !q.is_empty());
    let Some(q) = q else { return Ok(web::html(200, pages::members(ctx, None, None))) };
    let store = &ctx.app.store;
    let by_name = if q.len() <= 256 { store.user_by_name(&ctx.tenant, &q).await? } else { None };
    let user = by_name.or_else(|| UserId::parse(q.as_str()).ok());
    let item = match &user {
        Some(u) => store.member(&ctx.tenant, u).await?,
        None => None,
    };
    let found = match item {
        None => None,
        Some(item) => {
            // Why it has its roles: the rules that fired for it, from its own
            // item and the tenant's rules (nothing else read).
            let model = rules::rules_of(store, Some(&ctx.live.meta)).await?;
            let tier = entitle::core::portal::tier_of(&model, &ctx.live.meta);
            let (_, fired) = entitle::core::access::roles_for(&model, tier, &item.member, &ctx.live.meta.rules);
            Some((MemberView::of(ctx.tenant.clone(), &item), item, fired))
        }
    };
    Ok(web::html(200, pages::members(ctx, Some(&q), found.as_ref())))
}

async fn connection_views(ctx: &Ctx<'_>) -> Result<Vec<serde_json::Value>, Error> {
    let store = &ctx.app.store;
    let when_full = rules::rules_of(store, Some(&ctx.live.meta)).await?.directory.when_full;
    let stats = store.push_stats(&ctx.tenant).await?;
    Ok(store
        .connections(&ctx.tenant)
        .await?
        .iter()
        .map(|c| {
            let mut v = connection::view(&ctx.tenant, c, when_full, &config::directory_base(&ctx.tenant));
            v["stats"] = serde_json::to_value(stats.get(&c.id).cloned().unwrap_or_default()).expect("serialises");
            v
        })
        .collect())
}

/// `shown`: a connection's token, shown this once (after a creation or a rotation).
async fn directory_page(ctx: &Ctx<'_>, notice: Option<Notice>, shown: Option<(&str, &str)>, status: u16) -> Result<Response<Body>, Error> {
    let list = connection_views(ctx).await?;
    Ok(web::html(status, pages::directory(ctx, &list, notice, shown, None)))
}

async fn refused_directory(ctx: &Ctx<'_>, r: Rejection) -> Result<Response<Body>, Error> {
    let list = connection_views(ctx).await?;
    Ok(web::html(http::status_of(r.kind), pages::directory(ctx, &list, None, None, Some(&r))))
}

async fn connect(ctx: &Ctx<'_>, form: &Form) -> Result<Response<Body>, Error> {
    let new = NewConnection { name: form.get("name").unwrap_or_default().trim().to_string(), when_full: None };
    let cause = ctx.cause();
    match directory::connections::issue(&ctx.app.store, &ctx.tenant, &new, (config::random(), config::random()), &cause, ctx.now).await {
        Ok((conn, token)) => {
            tracing::info!(tenant = %ctx.tenant, directory = %conn.id, cause = %cause, "directory connected");
            directory_page(ctx, Some(Notice::Connected), Some((&conn.id, &token)), 201).await
        }
        Err(Error::Rejected(r)) => refused_directory(ctx, r).await,
        Err(e) => Err(e),
    }
}

async fn rotate(ctx: &Ctx<'_>, id: &str, form: &Form) -> Result<Response<Body>, Error> {
    let hours = match form.get("grace_hours") {
        None => None,
        Some(h) => match h.parse::<u64>() {
            Ok(h) => Some(h * 3600),
            Err(_) => return refused_directory(ctx, Rejection::malformed("invalid_field", "grace_hours: expected a whole number of hours")).await,
        },
    };
    let grace = match (Rotation { grace_seconds: hours }).grace() {
        Ok(g) => g,
        Err(r) => return refused_directory(ctx, r).await,
    };
    let cause = ctx.cause();
    match directory::connections::rotate(&ctx.app.store, &ctx.tenant, id, grace, config::random(), &cause, ctx.now).await {
        Ok((conn, token)) => {
            tracing::info!(tenant = %ctx.tenant, directory = %conn.id, cause = %cause, grace, "directory token rotated");
            directory_page(ctx, Some(Notice::Rotated), Some((&conn.id, &token)), 200).await
        }
        Err(Error::Rejected(r)) => refused_directory(ctx, r).await,
        Err(e) => Err(e),
    }
}

async fn revoke(ctx: &Ctx<'_>, id: &str) -> Result<Response<Body>, Error> {
    let cause = ctx.cause();
    match directory::connections::revoke(&ctx.app.store, &ctx.tenant, id, &cause, ctx.now).await {
        Ok(conn) => {
            tracing::info!(tenant = %ctx.tenant, directory = %conn.id, cause = %cause, "directory revoked");
            Ok(ctx.done("directory", Notice::Revoked))
        }
        Err(Error::Rejected(r)) => refused_directory(ctx, r).await,
        Err(e) => Err(e),
    }
}

async fn targets_page(ctx: &Ctx<'_>, notice: Option<Notice>) -> Result<Response<Body>, Error> {
    let views = targets::views(&ctx.app.store, &ctx.tenant).await?;
    Ok(web::html(200, pages::targets(ctx, &views, notice)))
}

async fn repair(ctx: &Ctx<'_>, id: &str) -> Result<Response<Body>, Error> {
    let target = TargetId::parse(id.to_string()).map_err(|_| not_found())?;
    let cause = ctx.cause();
    targets::request_repair(&ctx.app.store, &ctx.app.queue, &ctx.tenant, &target, &cause, &ctx.now.timestamp_millis().to_string()).await?;
    tracing::info!(tenant = %ctx.tenant, target = %target, cause = %cause, "drift repair requested");
    Ok(ctx.done("targets", Notice::RepairQueued))
}

/// Newest first, `AUDIT_PAGE` records a page (`?before=<seq>`), filtered by
/// member and action: a filtered page reads back at most `AUDIT_SCAN`
/// records and says where to go on.
async fn audit_page(ctx: &Ctx<'_>, req: &Request, verify: bool) -> Result<Response<Body>, Error> {
    let store = &ctx.app.store;
    let head = ctx.live.meta.head.seq;
    let before = match http::query(req, "before") {
        None => head + 1,
        Some(b) => b.parse::<u64>().map_err(|_| Rejection::malformed("invalid_query", "before: expected a record number"))?.min(head + 1),
    };
    let member = http::query(req, "member").map(|m| m.trim().to_string()).filter(|m| !m.is_empty());
    let action = http::query(req, "action").map(|a| a.trim().to_string()).filter(|a| !a.is_empty());
    let subject = member.as_ref().map(|m| format!("member:{m}"));
    let mut shown: Vec<AuditRecord> = Vec::new();
    let mut upto = before; // records below this one are still to read
    while upto > 1 && shown.len() < AUDIT_PAGE as usize && before - upto < AUDIT_SCAN {
        let after = upto.saturating_sub(u64::from(AUDIT_PAGE) + 1);
        let (page, _) = store.audit_page(&ctx.tenant, after, AUDIT_PAGE).await?;
        let lowest = page.first().map(|r| r.seq).unwrap_or(upto);
        for r in page.iter().rev().filter(|r| r.seq < upto) {
            let Ok(rec) = serde_json::from_str::<AuditRecord>(&r.json) else { continue };
            let action_name = serde_json::to_value(rec.event.action).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
            if subject.as_ref().is_some_and(|s| &rec.event.subject != s) || action.as_ref().is_some_and(|a| &action_name != a) {
                continue;
            }
            if shown.len() < AUDIT_PAGE as usize {
                shown.push(rec);
            }
        }
        if page.is_empty() || lowest >= upto {
            break;
        }
        upto = if shown.len() >= AUDIT_PAGE as usize { shown.last().map(|r| r.seq).unwrap_or(lowest) } else { lowest };
    }
    let next = (upto > 1).then_some(upto);
    let verification = if verify { audit::verify(store, &ctx.tenant).await? } else { None };
    let pending = store.pending_count(&ctx.tenant).await?;
    let filters = pages::AuditFilters { member: member.as_deref(), action: action.as_deref() };
    Ok(web::html(200, pages::audit(ctx, &shown, next, pending, &filters, verification.as_ref())))
}

/// The signed export (JSON Lines, as admin's `GET .../audit/export`), from
/// `from_seq` (default 1), at most [`audit::EXPORT_BYTES`] of records: its file
/// name says where it ended.
async fn export(ctx: &Ctx<'_>, req: &Request) -> Result<Response<Body>, Error> {
    let from = match http::query(req, "from_seq").filter(|f| !f.is_empty()) {
        None => 1,
        Some(f) => f.parse::<u64>().ok().filter(|f| *f >= 1).ok_or_else(|| Rejection::malformed("invalid_query", "from_seq: expected a record number (1 or more)"))?,
    };
    let e = audit::export(&ctx.app.store, &ctx.app.signer, &ctx.tenant, from, None, audit::EXPORT_BYTES, ctx.now).await?;
    tracing::info!(tenant = %ctx.tenant, cause = %ctx.cause(), from = e.from, last = e.last, "audit exported");
    Ok(web::download("application/x-ndjson", &format!("audit-{}-{}-{}.jsonl", ctx.tenant, e.from, e.last), e.lines))
}
