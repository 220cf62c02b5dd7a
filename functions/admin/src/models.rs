//! The operator's routes of licensing model versions: the registry and the
//! tenants of each version (`GET /model`, `GET /model/versions/{v}/tenants`),
//! previews, rollouts and pins. Previews and rollouts run asynchronously
//! (provision works their tenants a batch at a time, the model tick hands
//! them out); creating one hands out its first batches at once.

use super::handler::App;
use chrono::Utc;
use entitle::app::ports::{ModelRegistry, Models};
use entitle::app::versions::{self, PumpLimits};
use entitle::app::Error;
use entitle::core::audit::Cause;
use entitle::core::ids::{ModelVersion, RunId, TenantId};
use entitle::core::rejection::Rejection;
use entitle::core::versions::{parse_preview, PinRequest, PreviewOf, RolloutRequest, RunKind, Selection};
use entitle::edge::body::parse_json;
use entitle::edge::http;
use lambda_http::{Body, Request, Response};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Tenants one page of a run's outcomes or a version's tenants shows at most.
const MAX_PAGE: usize = 500;

fn limit(req: &Request, default: usize) -> Result<usize, Error> {
    match http::query(req, "limit") {
        None => Ok(default),
        Some(l) => l.parse::<usize>().ok().filter(|l| (1..=MAX_PAGE).contains(l)).ok_or_else(|| Rejection::malformed("invalid_query", format!("limit: 1 to {MAX_PAGE}")).into()),
    }
}

fn after(req: &Request) -> Result<Option<TenantId>, Error> {
    http::query(req, "after").map(|a| http::id(&a, TenantId::parse)).transpose()
}

/// A version a request names must be registered: 404 otherwise, as
/// `GET /model/versions/{version}/tenants` answers (the document says so).
async fn registered(app: &App, version: &ModelVersion) -> Result<(), Error> {
    match app.store.rules(version).await? {
        Some(_) => Ok(()),
        None => Err(Rejection::not_found(&format!("model version {version} (GET /model lists the registered ones)")).into()),
    }
}

/// A run's id: `r-` (rollout) or `p-` (preview), the time and randomness.
fn new_id(prefix: &str) -> RunId {
    let now = Utc::now();
    RunId::parse(format!("{prefix}-{}-{}", now.format("%Y%m%dT%H%M%S"), entitle::edge::config::random::<4>().iter().map(|b| format!("{b:02x}")).collect::<String>())).expect("a well-formed id")
}

/// Hands out a new run's first tenants now (the model tick does the rest).
async fn start(app: &App) {
    let limits = PumpLimits { batch: app.pump.0, in_flight: app.pump.1, stop_at: Instant::now() + Duration::from_secs(5) };
    if let Err(e) = versions::pump(&app.store, &app.work, Utc::now(), limits).await {
        tracing::warn!(error = %entitle::app::error_chain(&e), "the first batches were not handed out; the model tick will");
    }
}

/// `GET /model`.
pub async fn overview(app: &App) -> Result<Response<Body>, Error> {
    let (view, _) = versions::overview(&app.store).await?;
    Ok(http::json(200, &view))
}

/// `GET /model/versions/{version}/tenants?tier=&after=&limit=`: from the
/// index of tenants, never a scan.
pub async fn tenants_of(app: &App, req: &Request, version: &str) -> Result<Response<Body>, Error> {
    let version = http::id(version, ModelVersion::parse)?;
    if app.store.rules(&version).await?.is_none() {
        return Err(Rejection::not_found(&format!("model version {version}")).into());
    }
    let tier = http::query(req, "tier");
    let limit = limit(req, 100)?;
    let mut cursor = after(req)?.map(|t| format!("T#{t}"));
    let mut tenants = Vec::new();
    // A tier filters the page; read on until the page is full or the index ends.
    loop {
        let page = app.store.tenants_following(&version, cursor.as_deref(), limit - tenants.len()).await?;
        tenants.extend(page.tenants.into_iter().filter(|(_, t)| tier.is_none() || t.as_deref() == tier.as_deref()).map(|(t, tier)| json!({"tenant_id": t, "tier": tier})));
        cursor = page.next;
        if tenants.len() >= limit || cursor.is_none() {
            break;
        }
    }
    let next = cursor.and_then(|c| c.strip_prefix("T#").map(str::to_string));
    Ok(http::json(200, &json!({"version": version, "tenants": tenants, "next": next})))
}

/// `POST /model/previews`: a candidate model (TOML; which tenants in the
/// query: `?tenants=a,b` or `?tier=team`, and `&exclude=c`) or
/// `{"version", "tenants"?, "exclude"?}`.
pub async fn create_preview(app: &App, req: &Request) -> Result<Response<Body>, Error> {
    let body = std::str::from_utf8(http::body(req)?).map_err(|_| Rejection::malformed("invalid_body", "the body is not UTF-8"))?;
    let json_body = http::header(req, "content-type").is_some_and(|c| c.contains("json")) || body.trim_start().starts_with('{');
    let (of, mut tenants, mut exclude) = parse_preview(body, json_body)?;
    if let PreviewOf::Version(v) = &of {
        registered(app, v).await?;
    }
    if !json_body {
        let query = |k: &str| http::query(req, k).filter(|v| !v.is_empty());
        (tenants, exclude) = selection_of_query(query("tenants"), query("tier"), query("exclude"))?;
    }
    let by = http::principal(req).unwrap_or_else(|| "unknown".into());
    let run = versions::start_preview(&app.store, of, tenants, exclude, &by, new_id("p"), Utc::now()).await?;
    tracing::info!(cause = %Cause::api_call(&http::request_id(req)), preview = %run.spec.id, to = %run.spec.to(), total = run.total, "preview created");
    start(app).await;
    Ok(http::json(202, &json!({"preview_id": run.spec.id, "to": run.spec.to(), "total": run.total})))
}

/// The tenants of a TOML preview, from its query.
fn selection_of_query(tenants: Option<String>, tier: Option<String>, exclude: Option<String>) -> Result<(Selection, BTreeSet<TenantId>), Error> {
    let list = |csv: &str| csv.split(',').map(|t| TenantId::parse(t.trim())).collect::<Result<Vec<_>, _>>();
    let invalid = |what: &str, e: String| Error::from(Rejection::invalid("invalid_preview", vec![format!("{what}: {e}")]));
    let selection = match (tenants, tier) {
        (Some(_), Some(_)) => return Err(invalid("tenants", "name tenants or a tier, not both".into())),
        (Some(t), None) if t == "all" => Selection::All,
        (Some(t), None) => Selection::List(list(&t).map_err(|e| invalid("tenants", e.to_string()))?),
        (None, Some(tier)) => Selection::Tier(tier),
        (None, None) => Selection::All,
    };
    let exclude = exclude.map(|e| list(&e)).transpose().map_err(|e| invalid("exclude", e.to_string()))?.unwrap_or_default().into_iter().collect();
    Ok((selection, exclude))
}

/// `GET /model/previews/{id}?after=&limit=`: progress, totals, and per
/// tenant (paged) each member whose access would change, in the shape of
/// an amendment's impact (a tenant's first page of members; `pages` says
/// how many more `GET .../tenants/{tenant}?page=N` has).
pub async fn preview(app: &App, req: &Request, id: &str) -> Result<Response<Body>, Error> {
    let id = http::id(id, RunId::parse)?;
    let run = app.store.run(&id).await?.filter(|r| !r.spec.is_rollout()).ok_or_else(|| Rejection::not_found(&format!("preview {id}")))?;
    let (outcomes, more) = app.store.outcomes(&id, after(req)?.as_ref(), limit(req, 50)?).await?;
    let mut tenants = Vec::new();
    for o in &outcomes {
        let first = app.store.preview_page(&id, &o.tenant_id, 0).await?;
        tenants.push(json!({"tenant_id": o.tenant_id, "state": o.state, "reason": o.reason, "preview": first}));
    }
    let mut view = run.view();
    view["tenants_page"] = json!(tenants);
    view["next"] = json!(more.then(|| outcomes.last().map(|o| o.tenant_id.clone())).flatten());
    Ok(http::json(200, &view))
}

/// `GET /model/previews/{id}/tenants/{tenant}?page=N`.
pub async fn preview_page(app: &App, req: &Request, id: &str, tenant: &str) -> Result<Response<Body>, Error> {
    let id = http::id(id, RunId::parse)?;
    let tenant = http::id(tenant, TenantId::parse)?;
    let page = match http::query(req, "page") {
        None => 0,
        Some(p) => p.parse::<u32>().map_err(|_| Rejection::malformed("invalid_query", "page: a page number (0 first)"))?,
    };
    let found = app.store.preview_page(&id, &tenant, page).await?.ok_or_else(|| Rejection::not_found(&format!("page {page} of tenant {tenant} in preview {id}")))?;
    Ok(http::json(200, &found))
}

/// `POST /model/rollouts`.
pub async fn create_rollout(app: &App, req: &Request) -> Result<Response<Body>, Error> {
    let body: serde_json::Value = parse_json(http::body(req)?)?;
    let request = RolloutRequest::parse(&body)?;
    registered(app, &request.to).await?;
    let by = http::principal(req).unwrap_or_else(|| "unknown".into());
    let run = versions::start_rollout(&app.store, request, &by, new_id("r"), Utc::now()).await?;
    tracing::info!(cause = %Cause::api_call(&http::request_id(req)), rollout = %run.spec.id, to = %run.spec.to(), total = run.total, "rollout created");
    start(app).await;
    Ok(http::json(202, &json!({"rollout_id": run.spec.id, "to": run.spec.to(), "total": run.total})))
}

/// `GET /model/rollouts`: every rollout, newest first.
pub async fn rollouts(app: &App) -> Result<Response<Body>, Error> {
    let runs: Vec<_> = app.store.runs().await?.into_iter().filter(|r| r.spec.is_rollout()).map(|r| r.view()).collect();
    Ok(http::json(200, &json!({ "rollouts": runs })))
}

/// `GET /model/rollouts/{id}?after=&limit=`: its status and counts, and its
/// tenants' outcomes (done, waiting, skipped and failed, with reasons), paged.
pub async fn rollout(app: &App, req: &Request, id: &str) -> Result<Response<Body>, Error> {
    let id = http::id(id, RunId::parse)?;
    let run = app.store.run(&id).await?.filter(|r| r.spec.is_rollout()).ok_or_else(|| Rejection::not_found(&format!("rollout {id}")))?;
    let (outcomes, more) = app.store.outcomes(&id, after(req)?.as_ref(), limit(req, 100)?).await?;
    let mut view = run.view();
    view["next"] = json!(more.then(|| outcomes.last().map(|o| o.tenant_id.clone())).flatten());
    view["outcomes"] = json!(outcomes);
    Ok(http::json(200, &view))
}

/// `POST /model/rollouts/{id}/cancel`.
pub async fn cancel(app: &App, req: &Request, id: &str) -> Result<Response<Body>, Error> {
    let id = http::id(id, RunId::parse)?;
    match app.store.run(&id).await? {
        Some(r) if matches!(r.spec.kind, RunKind::Rollout { .. }) => {}
        _ => return Err(Rejection::not_found(&format!("rollout {id}")).into()),
    }
    let run = versions::cancel(&app.store, &id, Utc::now()).await?;
    tracing::info!(cause = %Cause::api_call(&http::request_id(req)), rollout = %id, status = ?run.status, "rollout canceled");
    Ok(http::json(200, &run.view()))
}

/// `PUT /tenants/{tenant}/model`: `{"version", "until"?, "by", "reason"}`.
pub async fn pin(app: &App, req: &Request, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let body: serde_json::Value = parse_json(http::body(req)?)?;
    let now = Utc::now();
    let request = PinRequest::parse(&body, now)?;
    registered(app, &request.version).await?;
    let cause = Cause::api_call(&http::request_id(req));
    let meta = versions::pin(&app.store, &app.queue, &tenant, &request, &cause, now).await?;
    tracing::info!(cause = %cause, tenant = %tenant, version = %request.version, "tenant pinned");
    Ok(http::json(200, &json!({"tenant_id": tenant, "model": entitle::core::versions::tenant_model_view(&meta)})))
}

/// `DELETE /tenants/{tenant}/model`: the pin released; the tenant follows
/// the latest version.
pub async fn unpin(app: &App, req: &Request, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let cause = Cause::api_call(&http::request_id(req));
    let to = versions::unpin(&app.store, &app.queue, &tenant, &cause, Utc::now()).await?;
    tracing::info!(cause = %cause, tenant = %tenant, "tenant unpinned");
    Ok(http::json(200, &json!({"tenant_id": tenant, "released": to.is_some(), "version": to})))
}
