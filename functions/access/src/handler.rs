//! access's routes: what the app reads.

use entitle::adapters::dynamodb::Dynamo;
use entitle::adapters::kms::TokenKeys;
use entitle::app::ports::Tenants;
use entitle::app::tokens;
use entitle::app::{audit, Error};
use entitle::core::audit::AuditRecord;
use entitle::core::audit::Cause;
use entitle::core::ids::{TenantId, UserId};
use entitle::core::rejection::Rejection;
use entitle::core::views::{MemberView, TenantView};
use entitle::edge::http;
use lambda_http::{Body, Request, Response};
use serde_json::json;

const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// Which routes this deployment serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    All,
    /// The reads and the signed tokens, not the keys.
    Private,
    /// The public keys only.
    Jwks,
}

impl Routes {
    pub fn from_env() -> Result<Self, entitle::edge::config::ConfigError> {
        match std::env::var("ACCESS_ROUTES").unwrap_or_default().as_str() {
            "" | "all" => Ok(Routes::All),
            "private" => Ok(Routes::Private),
            "jwks" => Ok(Routes::Jwks),
            other => Err(entitle::edge::config::ConfigError::Invalid { name: "ACCESS_ROUTES", why: format!("{other:?}: expected all, private or jwks") }),
        }
    }
}

pub struct App {
    pub store: Dynamo,
    pub keys: TokenKeys,
    /// `iss` of every token: the deployment.
    pub issuer: String,
    pub routes: Routes,
}

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let store = &app.store;
    let path = http::path(&req);
    let method = req.method().as_str().to_string();
    let segs = http::segments(&path);
    let answer = match (method.as_str(), segs.as_slice()) {
        ("GET", [".well-known", "jwks.json"]) if app.routes != Routes::Private => jwks(app).await,
        _ if app.routes == Routes::Jwks => Err(http::no_route(&method, &path)),
        ("GET", ["tenants", tenant, "members", user, "token"]) => member_token(app, &req, tenant, user).await,
        ("GET", ["tenants", tenant, "license"]) => license_file(app, &req, tenant).await,
        ("GET", ["tenants", tenant]) => tenant_view(store, tenant).await,
        ("GET", ["tenants", tenant, "members", user]) => member_view(store, tenant, user).await,
        ("GET", ["tenants", tenant, "audit"]) => audit_page(store, &req, tenant).await,
        ("GET", ["tenants", tenant, "audit", "verify"]) => verify(store, tenant).await,
        _ => Err(http::no_route(&method, &path)),
    };
    Ok(answer.unwrap_or_else(http::answer_error))
}

async fn tenant_view(store: &Dynamo, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let meta = store.meta(&tenant).await?;
    let view = meta.and_then(|m| TenantView::of(tenant.clone(), &m));
    Ok(http::json(200, &view.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?))
}

async fn member_view(store: &Dynamo, tenant: &str, user: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let user = http::id(user, UserId::parse)?;
    // The key includes the tenant: a member of another tenant is simply not found.
    let item = store.member(&tenant, &user).await?.ok_or_else(|| Rejection::not_found(&format!("member {user} of tenant {tenant}")))?;
    Ok(http::json(200, &MemberView::of(tenant, &item)))
}

async fn audit_page(store: &Dynamo, req: &Request, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let after: u64 = match http::query(req, "after") {
        None => 0,
        Some(v) => v.parse().map_err(|_| Rejection::malformed("invalid_query", "after: expected a record sequence number"))?,
    };
    let limit: u32 = match http::query(req, "limit") {
        None => DEFAULT_PAGE,
        Some(v) => v.parse().ok().filter(|l| (1..=MAX_PAGE).contains(l)).ok_or_else(|| Rejection::malformed("invalid_query", format!("limit: expected 1 to {MAX_PAGE}")))?,
    };
    // Records of the last moments may still be pending (not yet chained): say how many.
    if store.meta(&tenant).await?.is_none() {
        return Err(Rejection::not_found(&format!("tenant {tenant}")).into());
    }
    let pending = store.pending_count(&tenant).await?;
    let (records, more) = store.audit_page(&tenant, after, limit).await?;
    let next = if more { records.last().map(|r| r.seq) } else { None };
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let mut v = serde_json::from_str::<AuditRecord>(&r.json).map(|rec| serde_json::to_value(rec).expect("serialises")).unwrap_or_else(|_| json!({"seq": r.seq, "unreadable": true}));
            v["hash"] = json!(r.hash);
            v
        })
        .collect();
    Ok(http::json(200, &json!({"tenant_id": tenant, "records": records, "next_after": next, "pending": pending})))
}

async fn verify(store: &Dynamo, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let v = audit::verify(store, &tenant).await?.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?;
    let mut body = serde_json::to_value(&v).expect("serialises");
    body["tenant_id"] = json!(tenant);
    Ok(http::json(200, &body))
}

/// The public keys that verify member tokens and license files (RFC 7517):
/// cacheable for five minutes; a rotation publishes the new key before it
/// signs and keeps the old one until what it signed has expired.
async fn jwks(app: &App) -> Result<Response<Body>, Error> {
    let keys = app.keys.jwks().await?;
    let mut answer = http::json(200, &json!({"keys": keys}));
    answer.headers_mut().insert("cache-control", "public, max-age=300".parse().expect("a valid header"));
    Ok(answer)
}

fn issued(i: &tokens::Issued, field: &str) -> serde_json::Value {
    let expires = chrono::DateTime::from_timestamp(i.expires_at, 0).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    json!({field: i.token, "expires_at": expires, "kid": i.kid, "audit_seq": i.audit_seq})
}

/// A member's signed token (the cached one while nothing changed).
async fn member_token(app: &App, req: &Request, tenant: &str, user: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let user = http::id(user, UserId::parse)?;
    let i = tokens::member_token(&app.store, &app.keys, &app.issuer, &tenant, &user, chrono::Utc::now()).await?;
    if i.signed {
        tracing::info!(tenant = %tenant, user = %user, cause = %Cause::api_call(&http::request_id(req)), kid = %i.kid, audit_seq = i.audit_seq, "member token signed");
    }
    Ok(http::json(200, &issued(&i, "token")))
}

/// The tenant's signed license file.
async fn license_file(app: &App, req: &Request, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let i = tokens::license_file(&app.store, &app.keys, &app.issuer, &tenant, chrono::Utc::now()).await?;
    tracing::info!(tenant = %tenant, cause = %Cause::api_call(&http::request_id(req)), kid = %i.kid, audit_seq = i.audit_seq, "license file signed");
    Ok(http::json(200, &issued(&i, "license")))
}
