//! ingest's routes: parse, call the use case, answer.

use chrono::Utc;
use entitle::adapters::dynamodb::Dynamo;
use entitle::adapters::secrets::{SigningSecrets, TokenStore};
use entitle::adapters::sqs::BillingQueue;
use entitle::adapters::sqs::ReconcileQueue;
use entitle::adapters::stripe::StripeApi;
use entitle::app::billing::{self, EventOutcome, SyncRequest};
use entitle::app::ports::{Directories, Tenants};
use entitle::app::ports::{Models, Queue, SyncRuns};
use entitle::app::targets::TargetSetup;
use entitle::app::{directory, licenses, members, seats, targets, Error, PortError};
use entitle::core::audit::{hash_of, Cause, CauseKind};
use entitle::core::egress::EgressPolicy;
use entitle::core::ids::{TargetId, TenantId, UserId};
use entitle::core::license::{LicenseChange, Source};
use entitle::core::model::WhenFull;
use entitle::core::portal::LinkRequest;
use entitle::core::provider::connection::{self, ConnectionUpdate, NewConnection, Rotation};
use entitle::core::reassign::SeatRequest;
use entitle::core::reconcile::ReconcileRequest;
use entitle::core::rejection::Rejection;
use entitle::core::scim::{TargetConfig, TargetView};
use entitle::core::signature::{self, SignatureError, DEFAULT_TOLERANCE_SECS};
use entitle::core::views::{MemberUpdate, NewMember};
use entitle::edge::body::parse_json;
use entitle::edge::config::{self, ConfigError};
use entitle::edge::{http, metrics};
use lambda_http::{Body, Request, Response};
use serde_json::json;

/// Which routes this deployment serves: the public webhook URL and the
/// IAM-authenticated account URL are two deployments of this one binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    All,
    Webhooks,
    Accounts,
}

impl Routes {
    pub fn from_env() -> Result<Self, ConfigError> {
        match std::env::var("INGEST_ROUTES").unwrap_or_default().as_str() {
            "" | "all" => Ok(Routes::All),
            "webhooks" => Ok(Routes::Webhooks),
            "accounts" => Ok(Routes::Accounts),
            other => Err(ConfigError::Invalid { name: "INGEST_ROUTES", why: format!("{other:?}: expected all, webhooks or accounts") }),
        }
    }
}

pub struct App {
    pub store: Dynamo,
    pub queue: ReconcileQueue,
    /// Stripe's API (the webhook routes read subscriptions from it).
    pub stripe: Option<StripeApi>,
    /// Billing reconciliation runs asked for on the account routes.
    pub billing_queue: Option<BillingQueue>,
    /// The webhook signing secrets (none in the accounts deployment, which
    /// serves no webhook).
    pub webhook_secrets: Option<WebhookSecrets>,
    pub routes: Routes,
    pub tokens: TokenStore,
    pub egress: EgressPolicy,
}

pub struct WebhookSecrets {
    pub stripe: SigningSecrets,
    pub crm: SigningSecrets,
}

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let path = http::path(&req);
    let method = req.method().as_str().to_string();
    let segs = http::segments(&path);
    let webhooks = app.routes != Routes::Accounts;
    let accounts = app.routes != Routes::Webhooks;
    let answer = match (method.as_str(), segs.as_slice()) {
        ("POST", ["stripe"]) if webhooks => stripe_webhook(app, &req).await,
        ("POST", ["crm"]) if webhooks => crm_record(app, &req).await,
        ("POST", ["tenants", tenant, "members"]) if accounts => create_member(app, &req, tenant).await,
        ("DELETE", ["tenants", tenant, "members", user]) if accounts => remove_member(app, &req, tenant, user).await,
        ("PUT", ["tenants", tenant, "members", user, "seat"]) if accounts => put_seat(app, &req, tenant, user).await,
        ("PATCH", ["tenants", tenant, "members", user]) if accounts => update_member(app, &req, tenant, user).await,
        ("PUT", ["tenants", tenant, "targets", target]) if accounts => put_target(app, &req, tenant, target).await,
        ("GET", ["tenants", tenant, "targets"]) if accounts => list_targets(app, tenant).await,
        ("DELETE", ["tenants", tenant, "targets", target]) if accounts => remove_target(app, &req, tenant, target).await,
        ("POST", ["tenants", tenant, "targets", target, "repair"]) if accounts => repair_target(app, &req, tenant, target).await,
        ("POST", ["tenants", tenant, "billing", "sync"]) if accounts => billing_sync(app, &req, tenant).await,
        ("PUT", ["tenants", tenant, "license-file"]) if accounts => set_license_file(app, &req, tenant).await,
        ("POST", ["tenants", tenant, "directories"]) if accounts => connect_directory(app, &req, tenant).await,
        ("GET", ["tenants", tenant, "directories"]) if accounts => list_directories(app, tenant).await,
        ("PATCH", ["tenants", tenant, "directories", id]) if accounts => update_directory(app, &req, tenant, id).await,
        ("DELETE", ["tenants", tenant, "directories", id]) if accounts => revoke_directory(app, &req, tenant, id).await,
        ("POST", ["tenants", tenant, "directories", id, "rotate"]) if accounts => rotate_directory(app, &req, tenant, id).await,
        ("POST", ["tenants", tenant, "portal-links"]) if accounts => portal_link(app, &req, tenant).await,
        _ => Err(http::no_route(&method, &path)),
    };
    Ok(answer.unwrap_or_else(http::answer_error))
}

/// The body of a request whose signature one of the current secrets
/// makes; on a mismatch the secrets are read again once (a rotation may
/// have added one) before the request is refused.
async fn verified<'a>(req: &'a Request, header: &str, secrets: Option<&SigningSecrets>) -> Result<&'a [u8], Error> {
    let body = http::body(req)?;
    let secrets = secrets.ok_or_else(|| Rejection::not_found("webhook route"))?;
    let unreadable = |e| Error::Port(PortError::unavailable("reading the signing secrets", e));
    let signed = http::header(req, &header.to_ascii_lowercase());
    let check = |list: &[signature::Secret]| signature::verify(signed, body, list, Utc::now().timestamp(), DEFAULT_TOLERANCE_SECS);
    let mut result = check(&secrets.current().await.map_err(unreadable)?);
    if result == Err(SignatureError::Mismatch) {
        if let Some(fresh) = secrets.refreshed().await.map_err(unreadable)? {
            result = check(&fresh);
        }
    }
    result.map_err(|e| Rejection::unauthenticated(format!("{header}: {e}")))?;
    Ok(body)
}

/// A Stripe webhook: verified, then the subscription it names is read from
/// Stripe's API and recorded (see `app::billing`); Stripe down or
/// rate-limiting answers 503, and Stripe retries.
async fn stripe_webhook(app: &App, req: &Request) -> Result<Response<Body>, Error> {
    let body = verified(req, "Stripe-Signature", app.webhook_secrets.as_ref().map(|w| &w.stripe)).await?;
    let event: serde_json::Value = parse_json(body)?;
    let stripe = app.stripe.as_ref().ok_or_else(|| Rejection::not_found("webhook route"))?;
    let outcome = billing::apply_event(&app.store, stripe, &event, &hash_of(&String::from_utf8_lossy(body)), Utc::now()).await?;
    stripe_answer(app, outcome).await
}

/// Queues the reconcile an applied event calls for, logs, and answers
/// (202 for a parked event, 200 otherwise).
pub async fn stripe_answer(app: &App, outcome: EventOutcome) -> Result<Response<Body>, Error> {
    let (event_id, outcome) = match outcome {
        EventOutcome::Ignored { event_type } => {
            tracing::info!(event_type, "stripe event type ignored");
            return Ok(http::json(200, &json!({"status": "ignored", "event_type": event_type})));
        }
        EventOutcome::Acted { event_id, outcome } => (event_id, outcome),
    };
    let cause = licenses::cause_of(Source::Stripe, &event_id);
    match &outcome.recorded {
        licenses::Recorded::Parked { reason } => tracing::warn!(cause = %cause, tenant = outcome.tenant.as_ref().map(|t| t.to_string()), reason, "stripe event parked"),
        r => {
            tracing::info!(cause = %cause, tenant = outcome.tenant.as_ref().map(|t| t.to_string()), subscription = outcome.subscription.as_ref().map(|s| s.to_string()), outcome = r.label(), "stripe event recorded")
        }
    }
    metrics::license_event(Source::Stripe, &outcome.recorded).property("cause", cause.to_string()).emit();
    if let Some(tenant) = outcome.reconcile() {
        // Also on a duplicate: the first delivery may have crashed before
        // queueing. A reconcile is level-triggered, so an extra one is harmless.
        enqueue(app, tenant, cause, &format!("stripe:{event_id}")).await?;
    }
    let status = if matches!(outcome.recorded, licenses::Recorded::Parked { .. }) { 202 } else { 200 };
    Ok(http::json(status, &outcome.answer(Some(&event_id))))
}

async fn crm_record(app: &App, req: &Request) -> Result<Response<Body>, Error> {
    let body = verified(req, "Entitle-Signature", app.webhook_secrets.as_ref().map(|w| &w.crm)).await?;
    let change = entitle::core::sources::crm::normalise(&*app.store.latest().await?, parse_json(body)?)?;
    record(app, &change, body).await
}

async fn record(app: &App, change: &LicenseChange, body: &[u8]) -> Result<Response<Body>, Error> {
    let outcome = licenses::record_change(&app.store, change, &hash_of(&String::from_utf8_lossy(body)), Utc::now()).await?;
    let cause = licenses::cause_of(change.source, &change.event_id);
    tracing::info!(tenant = %change.tenant_id, cause = %cause, outcome = outcome.label(), "license event recorded");
    metrics::license_event(change.source, &outcome).property("cause", cause.to_string()).property("tenant", change.tenant_id.as_str()).emit();
    if !matches!(outcome, licenses::Recorded::Parked { .. }) {
        // Also on a duplicate: the first delivery may have crashed before
        // queueing. A reconcile is level-triggered, so an extra one is harmless.
        enqueue(app, &change.tenant_id, cause, &format!("{}:{}", change.source.as_str(), change.event_id)).await?;
    }
    let mut answer = json!({"status": outcome.label(), "event_id": change.event_id, "tenant_id": change.tenant_id});
    match &outcome {
        licenses::Recorded::Stale { held_version } => answer["held_version"] = json!(held_version),
        licenses::Recorded::Parked { reason } => answer["reason"] = json!(reason),
        _ => {}
    }
    Ok(http::json(if matches!(outcome, licenses::Recorded::Parked { .. }) { 202 } else { 200 }, &answer))
}

async fn enqueue(app: &App, tenant: &TenantId, cause: Cause, dedup: &str) -> Result<(), Error> {
    Ok(app.queue.send(&ReconcileRequest::new(tenant.clone(), cause), dedup).await?)
}

/// A reconcile after one member's change, coalesced with the others made
/// since provision last started on the tenant (`reconcile::wake`).
async fn wake(app: &App, tenant: &TenantId, cause: Cause, own: &str) -> Result<(), Error> {
    Ok(entitle::app::reconcile::wake(&app.store, &app.queue, tenant, cause, own).await?)
}

async fn create_member(app: &App, req: &Request, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let new: NewMember = parse_json(http::body(req)?)?;
    new.validate()?;
    let request_id = http::request_id(req);
    let (view, created) = members::create(&app.store, &tenant, &new, &request_id, Utc::now()).await?;
    tracing::info!(tenant = %tenant, user = %new.user_id, cause = %Cause::api_call(&request_id), status = view.status.as_str(), created, "member created");
    if created {
        metrics::seat_claim(view.status.as_str() == "active").property("tenant", tenant.as_str()).emit();
    }
    wake(app, &tenant, Cause::api_call(&request_id), &format!("member-created:{tenant}:{}:{request_id}", new.user_id)).await?;
    Ok(http::json(201, &view))
}

async fn remove_member(app: &App, req: &Request, tenant: &str, user: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let user = http::id(user, UserId::parse)?;
    let request_id = http::request_id(req);
    let view = members::remove(&app.store, &tenant, &user, &request_id, Utc::now()).await?;
    tracing::info!(tenant = %tenant, user = %user, cause = %Cause::api_call(&request_id), "member removed");
    wake(app, &tenant, Cause::api_call(&request_id), &format!("member-removed:{tenant}:{user}:{request_id}")).await?;
    Ok(http::json(200, &view))
}

/// The app changes a member's groups or attributes: answered with the
/// member as committed (its roles follow at once).
async fn update_member(app: &App, req: &Request, tenant: &str, user: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let user = http::id(user, UserId::parse)?;
    let body: MemberUpdate = parse_json(http::body(req)?)?;
    let request_id = http::request_id(req);
    let view = members::update(&app.store, &tenant, &user, &body, &request_id, Utc::now()).await?;
    tracing::info!(tenant = %tenant, user = %user, cause = %Cause::api_call(&request_id), status = view.status.as_str(), "member updated");
    Ok(http::json(200, &view))
}

/// The tenant's admin gives a member a seat (a free one, or a named
/// holder's) and pins it, or releases its seat: answered with the member as
/// committed. A released seat goes to the line: a reconcile is queued.
async fn put_seat(app: &App, req: &Request, tenant: &str, user: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let user = http::id(user, UserId::parse)?;
    let body: SeatRequest = parse_json(http::body(req)?)?;
    let request_id = http::request_id(req);
    let principal = http::principal(req);
    let view = seats::set_seat(&app.store, &tenant, &user, &body, principal.as_deref(), &Cause::api_call(&request_id), Utc::now()).await?;
    tracing::info!(tenant = %tenant, user = %user, cause = %Cause::api_call(&request_id), hold = body.hold, from = body.from.as_ref().map(|f| f.to_string()), status = view.status.as_str(), "seat set");
    wake(app, &tenant, Cause::api_call(&request_id), &format!("seat:{tenant}:{user}:{request_id}")).await?;
    Ok(http::json(200, &view))
}

/// Creates or reconfigures a SCIM target; its first drift repair (the
/// initial sync) is queued at once.
async fn put_target(app: &App, req: &Request, tenant: &str, target: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let target_id = http::id(target, TargetId::parse)?;
    let config: TargetConfig = parse_json(http::body(req)?)?;
    let request_id = http::request_id(req);
    let setup = TargetSetup { tenant: &tenant, target_id: &target_id, config, egress: app.egress, request_id: &request_id };
    let (stored, created) = targets::configure(&app.store, &app.tokens, setup, Utc::now()).await?;
    tracing::info!(tenant = %tenant, target = %target_id, cause = %Cause::api_call(&request_id), created, "SCIM target configured");
    targets::queue_repair(&app.queue, &tenant, &target_id, &Cause::api_call(&request_id), &request_id).await?;
    let mut view = serde_json::to_value(TargetView::new(&stored, 0, vec![])).expect("serialises");
    view["request_id"] = json!(request_id);
    Ok(http::json(if created { 201 } else { 200 }, &view))
}

async fn list_targets(app: &App, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let views = targets::views(&app.store, &tenant).await?;
    Ok(http::json(200, &json!({"tenant_id": tenant, "targets": views})))
}

/// Removes a target: nothing more is delivered to it, its undelivered
/// records are dropped, its token is deleted. Users already on the target
/// stay there (Entitle stops managing them; it does not wipe the target).
async fn remove_target(app: &App, req: &Request, tenant: &str, target: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let target_id = http::id(target, TargetId::parse)?;
    let request_id = http::request_id(req);
    let dropped = targets::remove(&app.store, &app.tokens, &tenant, &target_id, &request_id, Utc::now()).await?;
    tracing::info!(tenant = %tenant, target = %target_id, cause = %Cause::api_call(&request_id), dropped, "SCIM target removed");
    Ok(http::json(200, &json!({"status": "removed", "tenant_id": tenant, "target_id": target_id, "undelivered_dropped": dropped, "request_id": request_id})))
}

/// Drift repair on demand: queued to provision, which owns the targets.
async fn repair_target(app: &App, req: &Request, tenant: &str, target: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let target_id = http::id(target, TargetId::parse)?;
    let request_id = http::request_id(req);
    targets::request_repair(&app.store, &app.queue, &tenant, &target_id, &Cause::api_call(&request_id), &request_id).await?;
    tracing::info!(tenant = %tenant, target = %target_id, cause = %Cause::api_call(&request_id), "drift repair requested");
    // The repair's audit record and the target's `last_repair_cause` name this request.
    Ok(http::json(202, &json!({"status": "queued", "tenant_id": tenant, "target_id": target_id, "request_id": request_id})))
}

/// A billing reconciliation of one tenant, on demand: queued to the billing
/// function, which compares the tenant's Stripe subscriptions with the
/// licenses held and repairs differences (audited with cause
/// `billing_sync` and the run id answered here).
async fn billing_sync(app: &App, req: &Request, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let queue = app.billing_queue.as_ref().ok_or_else(|| Rejection::not_found("billing route"))?;
    let run_id = format!("sync-{}", http::request_id(req));
    queue.start(&SyncRequest { run_id: run_id.clone(), tenant: Some(tenant.clone()), starting_after: None }).await?;
    tracing::info!(tenant = %tenant, cause = %Cause::new(CauseKind::BillingSync, &run_id), "billing sync requested");
    Ok(http::json(202, &json!({"status": "queued", "tenant_id": tenant, "run_id": run_id})))
}

/// A directory connection for one of the tenant's identity providers: its
/// bearer token is answered this once (only its hash is stored).
async fn connect_directory(app: &App, req: &Request, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let new: NewConnection = parse_json(http::body(req)?)?;
    let request_id = http::request_id(req);
    let (conn, token) = directory::connections::issue(&app.store, &tenant, &new, (config::random(), config::random()), &Cause::api_call(&request_id), Utc::now()).await?;
    tracing::info!(tenant = %tenant, directory = %conn.id, cause = %Cause::api_call(&request_id), "directory connected");
    let mut view = directory_view(&tenant, &conn, when_full(app, &tenant).await?);
    view["token"] = json!(token);
    view["request_id"] = json!(request_id);
    Ok(http::json(201, &view))
}

/// A connection as the accounts routes show it, with its SCIM base URL.
fn directory_view(tenant: &TenantId, conn: &connection::Connection, when_full: WhenFull) -> serde_json::Value {
    connection::view(tenant, conn, when_full, &config::directory_base(tenant))
}

/// What a full tenant does with a push when its connection does not say:
/// the rule of the model version the tenant follows.
async fn when_full(app: &App, tenant: &TenantId) -> Result<WhenFull, Error> {
    Ok(entitle::app::rules::rules_of(&app.store, app.store.meta(tenant).await?.as_ref()).await?.directory.when_full)
}

async fn list_directories(app: &App, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    members::known(&tenant, app.store.meta(&tenant).await?)?;
    let when_full = when_full(app, &tenant).await?;
    let list: Vec<_> = app.store.connections(&tenant).await?.iter().map(|c| directory_view(&tenant, c, when_full)).collect();
    Ok(http::json(200, &json!({"tenant_id": tenant, "directories": list})))
}

async fn update_directory(app: &App, req: &Request, tenant: &str, id: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let upd: ConnectionUpdate = parse_json(http::body(req)?)?;
    let request_id = http::request_id(req);
    let conn = directory::connections::update(&app.store, &tenant, id, &upd, &Cause::api_call(&request_id), Utc::now()).await?;
    tracing::info!(tenant = %tenant, directory = %conn.id, cause = %Cause::api_call(&request_id), "directory reconfigured");
    Ok(http::json(200, &directory_view(&tenant, &conn, when_full(app, &tenant).await?)))
}

/// Revoked: its tokens are refused from now on (what it pushed stays).
async fn revoke_directory(app: &App, req: &Request, tenant: &str, id: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let request_id = http::request_id(req);
    let conn = directory::connections::revoke(&app.store, &tenant, id, &Cause::api_call(&request_id), Utc::now()).await?;
    tracing::info!(tenant = %tenant, directory = %conn.id, cause = %Cause::api_call(&request_id), "directory revoked");
    Ok(http::json(200, &json!({"status": "revoked", "tenant_id": tenant, "directory_id": conn.id, "request_id": request_id})))
}

/// A new token; the one it replaces stays valid for the grace period
/// (`grace_seconds`, default a day), so the IdP's admin can switch without downtime.
async fn rotate_directory(app: &App, req: &Request, tenant: &str, id: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let raw = http::body(req)?;
    let rotation: Rotation = if raw.iter().all(u8::is_ascii_whitespace) { Rotation::default() } else { parse_json(raw)? };
    let grace = rotation.grace()?;
    let request_id = http::request_id(req);
    let (conn, token) = directory::connections::rotate(&app.store, &tenant, id, grace, config::random(), &Cause::api_call(&request_id), Utc::now()).await?;
    tracing::info!(tenant = %tenant, directory = %conn.id, cause = %Cause::api_call(&request_id), grace, "directory token rotated");
    let mut view = directory_view(&tenant, &conn, when_full(app, &tenant).await?);
    view["token"] = json!(token);
    view["request_id"] = json!(request_id);
    Ok(http::json(200, &view))
}

/// A link to the admin portal for one of the tenant's admins: it opens
/// once, by a person, within `ttl_seconds` (see docs/portal.md).
async fn portal_link(app: &App, req: &Request, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let body: LinkRequest = parse_json(http::body(req)?)?;
    let request_id = http::request_id(req);
    let (token, link) = entitle::app::portal::create_link(&app.store, &tenant, &body, config::random(), Utc::now()).await?;
    tracing::info!(tenant = %tenant, admin = %link.admin, cause = %Cause::api_call(&request_id), intent = link.intent.page(), "portal link made");
    let expires = chrono::DateTime::from_timestamp(link.expires_at, 0).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    Ok(http::json(201, &json!({"url": config::portal_link(&token), "expires_at": expires, "tenant_id": tenant, "admin": link.admin, "intent": link.intent})))
}

/// `PUT /tenants/{tenant}/license-file`: how long the tenant's license
/// files are valid (`{"lifetime_seconds": 86400}`; `null`: until the
/// license's end and grace).
async fn set_license_file(app: &App, req: &Request, tenant: &str) -> Result<Response<Body>, Error> {
    /// `lifetime_seconds` is required: `null` resets it, a missing field is an error.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Lifetime {
        #[serde(deserialize_with = "present")]
        lifetime_seconds: Option<u64>,
    }
    fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    let tenant = http::id(tenant, TenantId::parse)?;
    let body: Lifetime = parse_json(http::body(req)?)?;
    let request_id = http::request_id(req);
    let set = entitle::app::tokens::set_license_file_lifetime(&app.store, &tenant, body.lifetime_seconds, &request_id, Utc::now()).await?;
    tracing::info!(tenant = %tenant, cause = %Cause::api_call(&request_id), lifetime_seconds = set, "license file lifetime set");
    Ok(http::json(200, &json!({"tenant_id": tenant, "lifetime_seconds": set, "request_id": request_id})))
}
