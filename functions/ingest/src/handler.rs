use chrono::Utc;
use entitle::api::{parse_json, ApiError, NewMember};
use entitle::audit::{hash_of, Cause, CauseKind};
use entitle::config::ConfigError;
use entitle::http;
use entitle::ids::{TargetId, TenantId, UserId};
use entitle::egress::EgressPolicy;
use entitle::scim::{Target, TargetConfig, DEFAULT_REPAIR_MINUTES};
use entitle::targets::TokenStore;
use entitle::license::{LicenseChange, Source};
use entitle::queue::{ReconcileQueue, ReconcileRequest};
use entitle::signature::{self, SignatureError, DEFAULT_TOLERANCE_SECS};
use entitle::signing_secrets::SigningSecrets;
use entitle::store::{Recorded, Store};
use entitle::stripe::{self, StripeOutcome};
use lambda_http::{Body, Error, Request, Response};
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
    pub store: Store,
    pub queue: ReconcileQueue,
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

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
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
        ("PUT", ["tenants", tenant, "targets", target]) if accounts => put_target(app, &req, tenant, target).await,
        ("GET", ["tenants", tenant, "targets"]) if accounts => list_targets(app, tenant).await,
        ("DELETE", ["tenants", tenant, "targets", target]) if accounts => remove_target(app, &req, tenant, target).await,
        ("POST", ["tenants", tenant, "targets", target, "repair"]) if accounts => repair_target(app, &req, tenant, target).await,
        _ => Ok(http::not_found_route(&method, &path)),
    };
    Ok(answer.unwrap_or_else(|e| http::refused(&e)))
}

/// The body of a request whose signature one of the current secrets
/// makes; on a mismatch the secrets are read again once (a rotation may
/// have added one) before the request is refused.
async fn verified<'a>(req: &'a Request, header: &str, secrets: Option<&SigningSecrets>) -> Result<&'a [u8], ApiError> {
    let body = http::body(req)?;
    let secrets = secrets.ok_or_else(|| ApiError::not_found("webhook route"))?;
    let signed = http::header(req, &header.to_ascii_lowercase());
    let check = |list: &[signature::Secret]| signature::verify(signed, body, list, Utc::now().timestamp(), DEFAULT_TOLERANCE_SECS);
    let mut result = check(&secrets.current().await.map_err(|e| http::internal(&e))?);
    if result == Err(SignatureError::Mismatch) {
        if let Some(fresh) = secrets.refreshed().await.map_err(|e| http::internal(&e))? {
            result = check(&fresh);
        }
    }
    result.map_err(|e| ApiError::unauthorized(format!("{header}: {e}")))?;
    Ok(body)
}

async fn stripe_webhook(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let body = verified(req, "Stripe-Signature", app.webhook_secrets.as_ref().map(|w| &w.stripe)).await?;
    let event: serde_json::Value = parse_json(body)?;
    match stripe::normalise(app.store.model(), &event)? {
        StripeOutcome::Ignored { event_type } => {
            tracing::info!(event_type, "stripe event type ignored");
            Ok(http::json(200, &json!({"status": "ignored", "event_type": event_type})))
        }
        StripeOutcome::Park { event_id, event_type, tenant_id, reason } => {
            tracing::warn!(cause = %format!("stripe:{event_id}"), event_type, tenant = tenant_id.as_ref().map(|t| t.to_string()), reason, "stripe event parked");
            // Audited in the tenant's chain when the event names its tenant.
            app.store
                .park(Source::Stripe, &event_id, tenant_id.as_ref(), &reason, &event, Utc::now())
                .await
                .map_err(|e| http::internal(&e))?;
            Ok(http::json(202, &json!({"status": "parked", "event_id": event_id, "reason": reason})))
        }
        StripeOutcome::Change(change) => record(app, &change, body).await,
    }
}

async fn crm_record(app: &App, req: &Request) -> Result<Response<Body>, ApiError> {
    let body = verified(req, "Entitle-Signature", app.webhook_secrets.as_ref().map(|w| &w.crm)).await?;
    let change = entitle::crm::normalise(app.store.model(), parse_json(body)?)?;
    record(app, &change, body).await
}

async fn record(app: &App, change: &LicenseChange, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let outcome = app.store.record_license_change(change, &hash_of(&String::from_utf8_lossy(body)), Utc::now()).await.map_err(http::api_error)?;
    tracing::info!(
        tenant = %change.tenant_id,
        cause = %format!("{}:{}", change.source.as_str(), change.event_id),
        outcome = outcome.label(),
        "license event recorded"
    );
    if !matches!(outcome, Recorded::Parked { .. }) {
        // Also on a duplicate: the first delivery may have crashed before
        // queueing. A reconcile is level-triggered, so an extra one is harmless.
        let kind = if change.source == Source::Stripe { CauseKind::StripeEvent } else { CauseKind::CrmEvent };
        enqueue(app, &change.tenant_id, Cause::new(kind, change.event_id.as_str()), &format!("{}:{}", change.source.as_str(), change.event_id)).await?;
    }
    let mut answer = json!({"status": outcome.label(), "event_id": change.event_id, "tenant_id": change.tenant_id});
    match &outcome {
        Recorded::Stale { held_version } => answer["held_version"] = json!(held_version),
        Recorded::Parked { reason } => answer["reason"] = json!(reason),
        _ => {}
    }
    Ok(http::json(if matches!(outcome, Recorded::Parked { .. }) { 202 } else { 200 }, &answer))
}

async fn enqueue(app: &App, tenant: &TenantId, cause: Cause, dedup: &str) -> Result<(), ApiError> {
    app.queue.send(&ReconcileRequest::new(tenant.clone(), cause), dedup).await.map_err(|e| http::internal(&e))
}

fn parse_tenant(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))
}

async fn create_member(app: &App, req: &Request, tenant: &str) -> Result<Response<Body>, ApiError> {
    let tenant = parse_tenant(tenant)?;
    let new: NewMember = parse_json(http::body(req)?)?;
    new.validate()?;
    let request_id = http::request_id(req);
    let (view, created) = app.store.create_member(&tenant, &new, &request_id, Utc::now()).await.map_err(http::api_error)?;
    tracing::info!(tenant = %tenant, user = %new.user_id, cause = %format!("api:{request_id}"), status = view.status.as_str(), created, "member created");
    enqueue(app, &tenant, Cause::new(CauseKind::ApiCall, &request_id), &format!("member-created:{tenant}:{}:{request_id}", new.user_id)).await?;
    Ok(http::json(201, &view))
}

async fn remove_member(app: &App, req: &Request, tenant: &str, user: &str) -> Result<Response<Body>, ApiError> {
    let tenant = parse_tenant(tenant)?;
    let user = UserId::parse(user).map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))?;
    let request_id = http::request_id(req);
    let view = app.store.remove_member(&tenant, &user, &request_id, Utc::now()).await.map_err(http::api_error)?;
    tracing::info!(tenant = %tenant, user = %user, cause = %format!("api:{request_id}"), "member removed");
    enqueue(app, &tenant, Cause::new(CauseKind::ApiCall, &request_id), &format!("member-removed:{tenant}:{user}:{request_id}")).await?;
    Ok(http::json(200, &view))
}

/// 404 unless the tenant is known (from its first license or contract).
async fn require_tenant(app: &App, tenant: &TenantId) -> Result<(), ApiError> {
    app.store.known_tenant(tenant).await.map(|_| ()).map_err(http::api_error)
}

fn parse_target(raw: &str) -> Result<TargetId, ApiError> {
    TargetId::parse(raw).map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))
}

/// Creates or reconfigures a SCIM target. The token goes to Secrets
/// Manager; the table keeps only where it is. A first drift repair (the
/// initial sync) is queued at once.
async fn put_target(app: &App, req: &Request, tenant: &str, target: &str) -> Result<Response<Body>, ApiError> {
    let tenant = parse_tenant(tenant)?;
    let target_id = parse_target(target)?;
    let config: TargetConfig = parse_json(http::body(req)?)?;
    let problems = config.problems(&app.store.model().roles, app.egress);
    if !problems.is_empty() {
        return Err(ApiError::unprocessable("invalid_target", problems));
    }
    require_tenant(app, &tenant).await?;
    let request_id = http::request_id(req);
    app.tokens.put(&tenant, &target_id, &config.token).await.map_err(|e| http::internal(&e))?;
    let target = Target {
        tenant_id: tenant.clone(),
        target_id: target_id.clone(),
        base_url: config.base_url.trim().to_string(),
        mapping: config.mapping,
        repair_interval_minutes: config.repair_interval_minutes.unwrap_or(DEFAULT_REPAIR_MINUTES),
        health: Default::default(),
    };
    let (stored, created) = app.store.put_target(&tenant, target, &request_id, Utc::now()).await.map_err(http::api_error)?;
    tracing::info!(tenant = %tenant, target = %target_id, cause = %format!("api:{request_id}"), created, "SCIM target configured");
    queue_repair(app, &tenant, &target_id, &request_id).await?;
    let mut view = serde_json::to_value(entitle::scim::TargetView::new(&stored, 0, vec![])).expect("serialises");
    view["request_id"] = json!(request_id);
    Ok(http::json(if created { 201 } else { 200 }, &view))
}

async fn list_targets(app: &App, tenant: &str) -> Result<Response<Body>, ApiError> {
    let tenant = parse_tenant(tenant)?;
    require_tenant(app, &tenant).await?;
    let views = app.store.target_views(&tenant).await.map_err(http::api_error)?;
    Ok(http::json(200, &json!({"tenant_id": tenant, "targets": views})))
}

/// Removes a target: nothing more is delivered to it, its undelivered
/// records are dropped, its token is deleted. Users already on the target
/// stay there (Entitle stops managing them; it does not wipe the target).
async fn remove_target(app: &App, req: &Request, tenant: &str, target: &str) -> Result<Response<Body>, ApiError> {
    let tenant = parse_tenant(tenant)?;
    let target_id = parse_target(target)?;
    let request_id = http::request_id(req);
    let (removed, dropped) = app.store.remove_target(&tenant, &target_id, &request_id, Utc::now()).await.map_err(http::api_error)?;
    // The secret's name is fixed by tenant and target: delete it even when a
    // crashed earlier call already removed the target.
    app.tokens.delete(&app.tokens.secret_name(&tenant, &target_id)).await.map_err(|e| http::internal(&e))?;
    tracing::info!(tenant = %tenant, target = %target_id, cause = %format!("api:{request_id}"), removed = removed.is_some(), dropped, "SCIM target removed");
    if removed.is_none() {
        return Err(ApiError::not_found(&format!("target {target_id} of tenant {tenant}")));
    }
    Ok(http::json(200, &json!({"status": "removed", "tenant_id": tenant, "target_id": target_id, "undelivered_dropped": dropped, "request_id": request_id})))
}

/// Drift repair on demand: queued to provision, which owns the targets.
async fn repair_target(app: &App, req: &Request, tenant: &str, target: &str) -> Result<Response<Body>, ApiError> {
    let tenant = parse_tenant(tenant)?;
    let target_id = parse_target(target)?;
    let targets = app.store.targets(&tenant).await.map_err(http::api_error)?;
    if !targets.iter().any(|t| t.target_id == target_id) {
        return Err(ApiError::not_found(&format!("target {target_id} of tenant {tenant}")));
    }
    let request_id = http::request_id(req);
    queue_repair(app, &tenant, &target_id, &request_id).await?;
    tracing::info!(tenant = %tenant, target = %target_id, cause = %format!("api:{request_id}"), "drift repair requested");
    // The repair's audit record and the target's `last_repair_cause` name this request.
    Ok(http::json(202, &json!({"status": "queued", "tenant_id": tenant, "target_id": target_id, "request_id": request_id})))
}

async fn queue_repair(app: &App, tenant: &TenantId, target: &TargetId, request_id: &str) -> Result<(), ApiError> {
    let mut request = ReconcileRequest::new(tenant.clone(), Cause::new(CauseKind::ApiCall, request_id));
    request.repair.push(target.clone());
    app.queue.send(&request, &format!("repair:{tenant}:{target}:{request_id}")).await.map_err(|e| http::internal(&e))
}
