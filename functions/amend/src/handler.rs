//! amend's routes: contracts and amendments.

use chrono::Utc;
use entitle::adapters::dynamodb::Dynamo;
use entitle::adapters::sqs::ReconcileQueue;
use entitle::app::contracts::{OnAmendment, Submission};
use entitle::app::ports::{Contracts, Queue};
use entitle::app::{contracts, Error};
use entitle::core::audit::{hash_of, Cause, CauseKind};
use entitle::core::contract::{Amendment, AmendmentRequest, AmendmentStatus, ContractState, DecisionRequest, Verdict};
use entitle::core::ids::{AmendmentId, ContractId, TenantId};
use entitle::core::reconcile::ReconcileRequest;
use entitle::core::rejection::Rejection;
use entitle::edge::body::{parse_json, parse_value, parse_yaml_bounded, too_large, MAX_BODY_BYTES};
use entitle::edge::http;
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};

pub struct App {
    pub store: Dynamo,
    pub queue: ReconcileQueue,
}

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, lambda_http::Error> {
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
        _ => Err(http::no_route(&method, &path)),
    };
    Ok(answer.unwrap_or_else(http::answer_error))
}

/// A JSON body, or YAML for people who write contracts by hand
/// (`Content-Type: application/yaml`), expanded within the body limit.
fn body_value(req: &Request) -> Result<Value, Rejection> {
    let body = http::body(req)?;
    if http::header(req, "content-type").is_some_and(|c| c.contains("yaml")) {
        parse_yaml_bounded(body, MAX_BODY_BYTES)
    } else {
        parse_json(body)
    }
}

/// Contract changes reach access through the same license and reconcile flow
/// as any license change.
async fn reconcile(app: &App, tenant: &TenantId, cause: Cause, dedup: &str) -> Result<(), Error> {
    Ok(app.queue.send(&ReconcileRequest::new(tenant.clone(), cause), dedup).await?)
}

async fn contract_view(app: &App, state: &ContractState) -> Result<Value, Error> {
    let history = app.store.contract_history(&state.doc.contract_id).await?;
    Ok(json!({
        "contract_id": state.doc.contract_id,
        "tenant_id": state.tenant_id,
        "version": state.version,
        "document": state.document,
        "history": history,
    }))
}

async fn create(app: &App, req: &Request) -> Result<Response<Body>, Error> {
    let body = body_value(req)?;
    let request_id = http::request_id(req);
    let (state, created) = contracts::create(&app.store, &body, &hash_of(&body.to_string()), &request_id, Utc::now()).await?;
    let cid = &state.doc.contract_id;
    tracing::info!(tenant = %state.tenant_id, contract = %cid, cause = %Cause::api_call(&request_id), created, "contract created");
    reconcile(app, &state.tenant_id, Cause::api_call(&request_id), &format!("contract:{cid}:v{}", state.version)).await?;
    Ok(http::json(if created { 201 } else { 200 }, &contract_view(app, &state).await?))
}

async fn show(app: &App, cid: &str) -> Result<Response<Body>, Error> {
    let cid = http::id(cid, ContractId::parse)?;
    let state = app.store.contract(&cid).await?.ok_or_else(|| Rejection::not_found(&format!("contract {cid}")))?;
    Ok(http::json(200, &contract_view(app, &state).await?))
}

fn amendment_view(a: &Amendment, dry_run: bool) -> Value {
    let mut v = serde_json::to_value(a).expect("serialises");
    if dry_run {
        v["dry_run"] = json!(true);
    }
    v
}

async fn amend(app: &App, req: &Request, cid: &str) -> Result<Response<Body>, Error> {
    let cid = http::id(cid, ContractId::parse)?;
    let body = body_value(req)?;
    if body.to_string().len() > MAX_BODY_BYTES {
        return Err(too_large().into());
    }
    let request: AmendmentRequest = parse_value(&body)?;
    let dry_run = http::query(req, "dry_run").is_some_and(|v| v == "true" || v == "1");
    let principal = http::principal(req);
    let body_hash = hash_of(&body.to_string());
    let submission = Submission { contract: &cid, request: &request, principal: principal.as_deref(), body_hash: &body_hash, dry_run };
    let (amendment, stored) = contracts::submit(&app.store, submission, Utc::now()).await?;
    tracing::info!(
        tenant = %amendment.tenant_id,
        contract = %cid,
        cause = %Cause::new(CauseKind::Amendment, amendment.amendment_id.as_str()),
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

async fn show_amendment(app: &App, cid: &str, aid: &str) -> Result<Response<Body>, Error> {
    let (cid, aid) = (http::id(cid, ContractId::parse)?, http::id(aid, AmendmentId::parse)?);
    let (amendment, _) = app.store.amendment(&cid, &aid).await?.ok_or_else(|| Rejection::not_found(&format!("amendment {aid} of contract {cid}")))?;
    Ok(http::json(200, &amendment_view(&amendment, false)))
}

async fn decide(app: &App, req: &Request, cid: &str, aid: &str, verdict: Option<Verdict>) -> Result<Response<Body>, Error> {
    let (cid, aid) = (http::id(cid, ContractId::parse)?, http::id(aid, AmendmentId::parse)?);
    let decision: DecisionRequest = parse_json(http::body(req)?)?;
    let problems = decision.problems();
    if !problems.is_empty() {
        return Err(Rejection::invalid("invalid_decision", problems).into());
    }
    let now = Utc::now();
    let principal = http::principal(req);
    let on = OnAmendment { contract: &cid, amendment: &aid, decision: &decision, principal: principal.as_deref() };
    let amendment = match verdict {
        Some(v) => contracts::decide(&app.store, on, v, now).await?,
        None => contracts::reverse(&app.store, on, now).await?,
    };
    tracing::info!(
        tenant = %amendment.tenant_id,
        contract = %cid,
        cause = %Cause::new(CauseKind::Amendment, aid.as_str()),
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
