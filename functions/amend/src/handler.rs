use chrono::Utc;
use entitle::api::{parse_json, parse_yaml_bounded, ApiError, MAX_BODY_BYTES};
use entitle::audit::{hash_of, Cause, CauseKind};
use entitle::contract::{Amendment, AmendmentRequest, AmendmentStatus, DecisionRequest};
use entitle::contract_store::{ContractState, Verdict};
use entitle::http;
use entitle::ids::{AmendmentId, ContractId, TenantId};
use entitle::queue::{ReconcileQueue, ReconcileRequest};
use entitle::store::{Store, StoreError};
use lambda_http::{Body, Error, Request, Response};
use serde_json::{json, Value};

pub struct App {
    pub store: Store,
    pub queue: ReconcileQueue,
}

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Error> {
    let path = http::path(&req);
    let method = req.method().as_str().to_string();
    let segs = http::segments(&path);
    let answer = match (method.as_str(), segs.as_slice()) {
        ("POST", ["contracts"]) => create(app, &req).await,
        ("GET", ["contracts", cid]) => show(app, cid).await,
        ("POST", ["contracts", cid, "amendments"]) => amend(app, &req, cid).await,
        ("GET", ["contracts", cid, "amendments", aid]) => show_amendment(app, cid, aid).await,
        ("POST", ["contracts", cid, "amendments", aid, "approve"]) => decide(app, &req, cid, aid, Some(Verdict::Approve)).await,
        ("POST", ["contracts", cid, "amendments", aid, "reject"]) => decide(app, &req, cid, aid, Some(Verdict::Reject)).await,
        ("POST", ["contracts", cid, "amendments", aid, "reverse"]) => decide(app, &req, cid, aid, None).await,
        _ => Ok(http::not_found_route(&method, &path)),
    };
    Ok(answer.unwrap_or_else(|e| http::refused(&http::api_error(e))))
}

/// A JSON body, or YAML for people who write contracts by hand
/// (`Content-Type: application/yaml`), expanded within the body limit.
fn body_value(req: &Request) -> Result<Value, ApiError> {
    let body = http::body(req)?;
    let yaml = http::header(req, "content-type").is_some_and(|c| c.contains("yaml"));
    if yaml {
        parse_yaml_bounded(body, MAX_BODY_BYTES)
    } else {
        parse_json(body)
    }
}

fn contract_id(raw: &str) -> Result<ContractId, ApiError> {
    ContractId::parse(raw).map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))
}

fn amendment_id(raw: &str) -> Result<AmendmentId, ApiError> {
    AmendmentId::parse(raw).map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))
}

/// Contract changes reach access through the same license and reconcile flow
/// as any license change.
async fn reconcile(app: &App, tenant: &TenantId, cause: Cause, dedup: &str) -> Result<(), StoreError> {
    app.queue.send(&ReconcileRequest::new(tenant.clone(), cause), dedup).await.map_err(|e| StoreError::Api(http::internal(&e)))
}

async fn contract_view(app: &App, state: &ContractState) -> Result<Value, StoreError> {
    let history = app.store.contract_history(&state.doc.contract_id).await?;
    Ok(json!({
        "contract_id": state.doc.contract_id,
        "tenant_id": state.tenant_id,
        "version": state.version,
        "document": state.document,
        "history": history,
    }))
}

async fn create(app: &App, req: &Request) -> Result<Response<Body>, StoreError> {
    let body = body_value(req)?;
    let request_id = http::request_id(req);
    let (state, created) = app.store.create_contract(&body, &hash_of(&body.to_string()), &request_id, Utc::now()).await?;
    let cid = &state.doc.contract_id;
    tracing::info!(tenant = %state.tenant_id, contract = %cid, cause = %format!("api_call:{request_id}"), created, "contract created");
    reconcile(app, &state.tenant_id, Cause::new(CauseKind::ApiCall, &request_id), &format!("contract:{cid}:v{}", state.version)).await?;
    Ok(http::json(if created { 201 } else { 200 }, &contract_view(app, &state).await?))
}

async fn show(app: &App, cid: &str) -> Result<Response<Body>, StoreError> {
    let cid = contract_id(cid)?;
    let state = app.store.contract(&cid).await?.ok_or_else(|| ApiError::not_found(&format!("contract {cid}")))?;
    Ok(http::json(200, &contract_view(app, &state).await?))
}

fn amendment_view(a: &Amendment, dry_run: bool) -> Value {
    let mut v = serde_json::to_value(a).expect("serialises");
    if dry_run {
        v["dry_run"] = json!(true);
    }
    v
}

async fn amend(app: &App, req: &Request, cid: &str) -> Result<Response<Body>, StoreError> {
    let cid = contract_id(cid)?;
    let body = body_value(req)?;
    if body.to_string().len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large(MAX_BODY_BYTES).into());
    }
    let request: AmendmentRequest = parse_request(&body)?;
    let dry_run = http::query(req, "dry_run").is_some_and(|v| v == "true" || v == "1");
    let principal = http::principal(req);
    let (amendment, stored) = app.store.submit_amendment(&cid, &request, principal.as_deref(), &hash_of(&body.to_string()), dry_run, Utc::now()).await?;
    tracing::info!(
        tenant = %amendment.tenant_id,
        contract = %cid,
        cause = %format!("amendment:{}", amendment.amendment_id),
        status = amendment.status.as_str(),
        stored,
        dry_run,
        "amendment submitted"
    );
    if !dry_run && amendment.status == AmendmentStatus::Applied {
        // Also for a duplicate: the first request may have stopped before queueing.
        let version = amendment.applied_version.unwrap_or_default();
        reconcile(app, &amendment.tenant_id, Cause::new(CauseKind::Amendment, amendment.amendment_id.as_str()), &format!("contract:{cid}:v{version}")).await?;
    }
    Ok(http::json(if stored { 201 } else { 200 }, &amendment_view(&amendment, dry_run)))
}

/// Parses a request, naming the field of a problem.
fn parse_request<T: serde::de::DeserializeOwned>(v: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v.clone()).map_err(|e| {
        let path = e.path().to_string();
        let at = if path == "." { String::new() } else { format!("{path}: ") };
        ApiError::bad_request("malformed_body", format!("invalid request: {at}{}", e.inner()))
    })
}

async fn show_amendment(app: &App, cid: &str, aid: &str) -> Result<Response<Body>, StoreError> {
    let (cid, aid) = (contract_id(cid)?, amendment_id(aid)?);
    let (amendment, _) = app.store.amendment(&cid, &aid).await?.ok_or_else(|| ApiError::not_found(&format!("amendment {aid} of contract {cid}")))?;
    Ok(http::json(200, &amendment_view(&amendment, false)))
}

async fn decide(app: &App, req: &Request, cid: &str, aid: &str, verdict: Option<Verdict>) -> Result<Response<Body>, StoreError> {
    let (cid, aid) = (contract_id(cid)?, amendment_id(aid)?);
    let decision: DecisionRequest = parse_json(http::body(req)?)?;
    let problems = decision.problems();
    if !problems.is_empty() {
        return Err(ApiError::unprocessable("invalid_decision", problems).into());
    }
    let now = Utc::now();
    let principal = http::principal(req);
    let amendment = match verdict {
        Some(v) => app.store.decide_amendment(&cid, &aid, v, &decision, principal.as_deref(), now).await?,
        None => app.store.reverse_amendment(&cid, &aid, &decision, principal.as_deref(), now).await?,
    };
    tracing::info!(
        tenant = %amendment.tenant_id,
        contract = %cid,
        cause = %format!("amendment:{aid}"),
        by = %decision.by,
        principal = principal.as_deref().unwrap_or("none"),
        status = amendment.status.as_str(),
        "amendment decided"
    );
    let version = match amendment.status {
        AmendmentStatus::Applied => amendment.applied_version,
        AmendmentStatus::Reversed => amendment.reversed_version,
        _ => None,
    };
    if let Some(v) = version {
        reconcile(app, &amendment.tenant_id, Cause::new(CauseKind::Amendment, aid.as_str()), &format!("contract:{cid}:v{v}")).await?;
    }
    Ok(http::json(200, &amendment_view(&amendment, false)))
}
