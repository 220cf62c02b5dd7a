use entitle::api::{ApiError, MemberView};
use entitle::audit::AuditRecord;
use entitle::http;
use entitle::ids::{TenantId, UserId};
use entitle::store::{Store, StoreError};
use lambda_http::{Body, Error, Request, Response};
use serde_json::json;

const DEFAULT_PAGE: i32 = 100;
const MAX_PAGE: i32 = 1000;

pub async fn handle(store: &Store, req: Request) -> Result<Response<Body>, Error> {
    let path = http::path(&req);
    let method = req.method().as_str().to_string();
    let segs = http::segments(&path);
    let answer = match (method.as_str(), segs.as_slice()) {
        ("GET", ["tenants", tenant]) => tenant_view(store, tenant).await,
        ("GET", ["tenants", tenant, "members", user]) => member_view(store, tenant, user).await,
        ("GET", ["tenants", tenant, "audit"]) => audit_page(store, &req, tenant).await,
        ("GET", ["tenants", tenant, "audit", "verify"]) => verify(store, tenant).await,
        _ => Ok(http::not_found_route(&method, &path)),
    };
    Ok(answer.unwrap_or_else(http::store_error))
}

fn tenant_id(raw: &str) -> Result<TenantId, StoreError> {
    TenantId::parse(raw).map_err(|e| ApiError::bad_request("invalid_path", e.to_string()).into())
}

async fn tenant_view(store: &Store, tenant: &str) -> Result<Response<Body>, StoreError> {
    let tenant = tenant_id(tenant)?;
    let view = store.tenant_view(&tenant).await?.ok_or_else(|| ApiError::not_found(&format!("tenant {tenant}")))?;
    Ok(http::json(200, &view))
}

async fn member_view(store: &Store, tenant: &str, user: &str) -> Result<Response<Body>, StoreError> {
    let tenant = tenant_id(tenant)?;
    let user = UserId::parse(user).map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))?;
    // The key includes the tenant: a member of another tenant is simply not found.
    let item = store.member(&tenant, &user).await?.ok_or_else(|| ApiError::not_found(&format!("member {user} of tenant {tenant}")))?;
    Ok(http::json(200, &MemberView::new(tenant, user, &item.access)))
}

async fn audit_page(store: &Store, req: &Request, tenant: &str) -> Result<Response<Body>, StoreError> {
    let tenant = tenant_id(tenant)?;
    let after: u64 = match http::query(req, "after") {
        None => 0,
        Some(v) => v.parse().map_err(|_| ApiError::bad_request("invalid_query", "after: expected a record sequence number"))?,
    };
    let limit: i32 = match http::query(req, "limit") {
        None => DEFAULT_PAGE,
        Some(v) => v.parse().ok().filter(|l| (1..=MAX_PAGE).contains(l)).ok_or_else(|| ApiError::bad_request("invalid_query", format!("limit: expected 1 to {MAX_PAGE}")))?,
    };
    if store.meta(&tenant).await?.is_none() {
        return Err(ApiError::not_found(&format!("tenant {tenant}")).into());
    }
    let (records, more) = store.audit_page(&tenant, after, limit).await?;
    let next = if more { records.last().map(|r| r.seq) } else { None };
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            let mut v = serde_json::from_str::<AuditRecord>(&r.json)
                .map(|rec| serde_json::to_value(rec).expect("serialises"))
                .unwrap_or_else(|_| json!({"seq": r.seq, "unreadable": true}));
            v["hash"] = json!(r.hash);
            v
        })
        .collect();
    Ok(http::json(200, &json!({"tenant_id": tenant, "records": records, "next_after": next})))
}

async fn verify(store: &Store, tenant: &str) -> Result<Response<Body>, StoreError> {
    let tenant = tenant_id(tenant)?;
    let v = store.verify_audit(&tenant).await?.ok_or_else(|| ApiError::not_found(&format!("tenant {tenant}")))?;
    let mut body = serde_json::to_value(&v).expect("serialises");
    body["tenant_id"] = json!(tenant);
    Ok(http::json(200, &body))
}
