//! admin's routes. What changes something is audited in the tenant's
//! chain: a redrive with the request as its cause, a replayed event as any
//! event is (its own id as the cause).

use super::models;
use chrono::Utc;
use entitle::adapters::dynamodb::Dynamo;
use entitle::adapters::kms::AuditSigner;
use entitle::adapters::sqs::{DeadLetter, DeadLetterQueue, ReconcileQueue, WorkQueueSqs};
use entitle::adapters::stripe::StripeApi;
use entitle::app::billing::{self, EventOutcome};
use entitle::app::ports::{Queue, Tenants};
use entitle::app::{audit, licenses, Error};
use entitle::core::audit::{hash_of, AuditAction, AuditEvent, Cause};
use entitle::core::ids::{TenantId, UserId};
use entitle::core::license::Source;
use entitle::core::reconcile::ReconcileRequest;
use entitle::core::rejection::Rejection;
use entitle::edge::body::parse_json;
use entitle::edge::http;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::json;

pub struct App {
    pub store: Dynamo,
    pub stripe: StripeApi,
    pub queue: ReconcileQueue,
    pub dead_letters: DeadLetterQueue,
    pub signer: AuditSigner,
    /// The rollouts' and previews' work queue, and how much one hand-out takes.
    pub work: WorkQueueSqs,
    pub pump: (usize, u64),
}

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let path = http::path(&req);
    let method = req.method().as_str().to_string();
    let segs = http::segments(&path);
    let answer = match (method.as_str(), segs.as_slice()) {
        ("GET", ["dead-letters"]) => list_dead_letters(app).await,
        ("POST", ["dead-letters", "redrive"]) => redrive(app, &req).await,
        ("GET", ["parked"]) => list_parked(app, &req).await,
        ("GET", ["reviews"]) => reviews(app, &req).await,
        ("GET", ["tenants", tenant, "members", user, "explain"]) => explain(app, tenant, user).await,
        ("POST", ["parked", event_id, "replay"]) => replay(app, &req, event_id).await,
        ("GET", ["tenants", tenant, "audit", "export"]) => export(app, &req, tenant).await,
        ("GET", ["audit", "public-key"]) => public_key(app).await,
        ("GET", ["model"]) => models::overview(app).await,
        ("GET", ["model", "versions", version, "tenants"]) => models::tenants_of(app, &req, version).await,
        ("POST", ["model", "previews"]) => models::create_preview(app, &req).await,
        ("GET", ["model", "previews", id]) => models::preview(app, &req, id).await,
        ("GET", ["model", "previews", id, "tenants", tenant]) => models::preview_page(app, &req, id, tenant).await,
        ("POST", ["model", "rollouts"]) => models::create_rollout(app, &req).await,
        ("GET", ["model", "rollouts"]) => models::rollouts(app).await,
        ("GET", ["model", "rollouts", id]) => models::rollout(app, &req, id).await,
        ("POST", ["model", "rollouts", id, "cancel"]) => models::cancel(app, &req, id).await,
        ("PUT", ["tenants", tenant, "model"]) => models::pin(app, &req, tenant).await,
        ("DELETE", ["tenants", tenant, "model"]) => models::unpin(app, &req, tenant).await,
        _ => Err(http::no_route(&method, &path)),
    };
    Ok(answer.unwrap_or_else(http::answer_error))
}

async fn list_dead_letters(app: &App) -> Result<Response<Body>, Error> {
    let letters = app.dead_letters.list().await?;
    Ok(http::json(200, &json!({"count": letters.len(), "dead_letters": letters})))
}

/// `{}` (or no body) moves every message; `{"message_ids": [...]}` those.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedriveRequest {
    message_ids: Option<Vec<String>>,
}

async fn redrive(app: &App, req: &Request) -> Result<Response<Body>, Error> {
    let body = http::body(req)?;
    let ask: RedriveRequest = if body.iter().all(u8::is_ascii_whitespace) { RedriveRequest::default() } else { parse_json(body)? };
    if let Some(ids) = &ask.message_ids {
        if ids.is_empty() || ids.iter().any(|i| i.is_empty() || i.chars().count() > 128) {
            return Err(Rejection::malformed("invalid_body", "message_ids: one or more message ids, as listed by GET /dead-letters").into());
        }
    }
    let request_id = http::request_id(req);
    let cause = Cause::api_call(&request_id);
    let by = http::principal(req).unwrap_or_else(|| "unknown".into());
    let (moved, not_found) = app
        .dead_letters
        .redrive(ask.message_ids.as_deref(), |letter: DeadLetter| {
            let (cause, by) = (cause.clone(), by.clone());
            let store = &app.store;
            async move {
                // Audited in the tenant's chain (a message that names no
                // tenant has no chain: its move is in the log line below).
                if let Some(tenant) = letter.tenant_id.as_deref().and_then(|t| TenantId::parse(t).ok()) {
                    let event = AuditEvent::new(AuditAction::DeadLetterRedriven, format!("message:{}", letter.message_id), &cause, "an operator moved a parked reconcile back to the reconcile queue")
                        .before(json!({"error_code": letter.error_code, "error_message": letter.error_message, "receive_count": letter.receive_count}))
                        .after(json!({"queue": "reconcile", "by": by}));
                    audit::note(store, &tenant, event, Utc::now()).await.map_err(|e| entitle::app::ports::PortError::unavailable("audit", e))?;
                }
                Ok(())
            }
        })
        .await?;
    for l in &moved {
        tracing::info!(cause = %Cause::api_call(&request_id), tenant = l.tenant_id.as_deref(), message_id = %l.message_id, by, "dead letter redriven");
    }
    Ok(http::json(200, &json!({"moved": moved, "not_found": not_found})))
}

fn source_query(req: &Request) -> Result<Option<Source>, Error> {
    match http::query(req, "source").as_deref() {
        None => Ok(None),
        Some("stripe") => Ok(Some(Source::Stripe)),
        Some("crm") => Ok(Some(Source::Crm)),
        Some(other) => Err(Rejection::malformed("invalid_query", format!("source: expected stripe or crm, not {other:?}")).into()),
    }
}

/// Parked events, oldest first, with their reason and age.
async fn list_parked(app: &App, req: &Request) -> Result<Response<Body>, Error> {
    let sources = source_query(req)?.map_or(vec![Source::Stripe, Source::Crm], |s| vec![s]);
    let now = Utc::now();
    let mut parked = Vec::new();
    for source in sources {
        parked.extend(app.store.parked_events(source, now).await?);
    }
    parked.sort_by(|a, b| a.parked_at.cmp(&b.parked_at));
    Ok(http::json(200, &json!({"count": parked.len(), "parked": parked})))
}

/// Runs a parked Stripe event through ingest's path again: the subscription
/// it names read from Stripe now, with the licensing model as deployed now.
/// Still parked (nothing new written) if the reason still holds; otherwise
/// applied like any event (audited, its reconcile queued) and unparked.
async fn replay(app: &App, req: &Request, event_id: &str) -> Result<Response<Body>, Error> {
    let source = source_query(req)?.unwrap_or(Source::Stripe);
    if source != Source::Stripe {
        // CRM records are refused at the door (4xx), never parked.
        return Err(Rejection::malformed("invalid_query", "source: only Stripe events are parked and replayed").into());
    }
    let now = Utc::now();
    let parked = app.store.parked_event(source, event_id, now).await?.ok_or_else(|| Rejection::not_found(&format!("parked event {event_id}")))?;
    let outcome = billing::apply_event(&app.store, &app.stripe, &parked.payload, &hash_of(&parked.payload.to_string()), now).await?;
    let request_id = http::request_id(req);
    let (event_id, outcome) = match outcome {
        EventOutcome::Ignored { event_type } => {
            app.store.unpark(source, &parked.event_id).await?;
            return Ok(http::json(200, &json!({"status": "ignored", "event_type": event_type, "parked": false})));
        }
        EventOutcome::Acted { event_id, outcome } => (event_id, outcome),
    };
    let mut answer = outcome.answer(Some(&event_id));
    let still = matches!(outcome.recorded, licenses::Recorded::Parked { .. });
    answer["parked"] = json!(still);
    if !still {
        if let Some(tenant) = outcome.reconcile() {
            let request = ReconcileRequest::new(tenant.clone(), licenses::cause_of(Source::Stripe, &event_id));
            app.queue.send(&request, &format!("replay:stripe:{event_id}")).await?;
        }
        app.store.unpark(source, &parked.event_id).await?;
    }
    tracing::info!(cause = %licenses::cause_of(Source::Stripe, &event_id), tenant = outcome.tenant.as_ref().map(|t| t.to_string()), replayed_by = %Cause::api_call(&request_id), outcome = outcome.recorded.label(), still_parked = still, "parked event replayed");
    Ok(http::json(200, &answer))
}

/// Amendments waiting for review across tenants, oldest first: the
/// amendment as the amend API shows it (tenant, contract, change set,
/// impact, the review rules that fired in `review`) and how long it waits.
async fn reviews(app: &App, req: &Request) -> Result<Response<Body>, Error> {
    let limit = match http::query(req, "limit") {
        None => 100,
        Some(v) => v.parse::<usize>().ok().filter(|l| (1..=1000).contains(l)).ok_or_else(|| Rejection::malformed("invalid_query", "limit: expected 1 to 1000"))?,
    };
    let now = Utc::now();
    let reviews: Vec<serde_json::Value> = app
        .store
        .pending_reviews(limit)
        .await?
        .into_iter()
        .map(|a| {
            let waiting = a.created_at.parse::<chrono::DateTime<Utc>>().map(|at| (now - at).num_seconds()).unwrap_or(0);
            let mut v = serde_json::to_value(&a).expect("serialises");
            v["waiting_secs"] = json!(waiting);
            v
        })
        .collect();
    Ok(http::json(200, &json!({"count": reviews.len(), "reviews": reviews})))
}

/// The audit records an explanation shows, and how far back it looks.
const EXPLAIN_RECORDS: usize = 5;
const EXPLAIN_SEARCH: usize = 5000;

/// Why a member has its access (see `core::explain`), with the audit
/// records that last changed it: newest first, up to five, found among the
/// tenant's last 5,000 records (and those not yet chained).
async fn explain(app: &App, tenant: &str, user: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let user = http::id(user, UserId::parse)?;
    let state = app.store.tenant(&tenant).await?.filter(|s| s.meta.licensed).ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?;
    let model = entitle::app::rules::rules_of(&app.store, Some(&state.meta)).await?;
    let explanation = entitle::core::explain::explain(&model, &tenant, &state, &user, chrono::Utc::now()).ok_or_else(|| Rejection::not_found(&format!("member {user} of tenant {tenant}")))?;
    let subject = format!("member:{user}");
    let mut records: Vec<serde_json::Value> = state
        .pending_audit
        .iter()
        .rev()
        .filter(|p| p.event.subject == subject)
        .map(|p| {
            let mut v = serde_json::to_value(&p.event).expect("serialises");
            v["at"] = json!(p.at);
            v["pending"] = json!(true);
            v
        })
        .collect();
    let (mut before, mut searched) = (None, 0);
    while records.len() < EXPLAIN_RECORDS && searched < EXPLAIN_SEARCH {
        let page = app.store.audit_newest_first(&tenant, before, 500).await?;
        let Some(last) = page.last() else { break };
        before = Some(last.seq);
        searched += page.len();
        for r in &page {
            if let Ok(record) = serde_json::from_str::<entitle::core::audit::AuditRecord>(&r.json) {
                if record.event.subject == subject && records.len() < EXPLAIN_RECORDS {
                    let mut v = serde_json::to_value(&record).expect("serialises");
                    v["hash"] = json!(r.hash);
                    records.push(v);
                }
            }
        }
    }
    records.truncate(EXPLAIN_RECORDS);
    let mut body = serde_json::to_value(&explanation).expect("serialises");
    body["audit"] = json!(records);
    body["audit_searched"] = json!(searched);
    Ok(http::json(200, &body))
}

fn seq_query(req: &Request, name: &'static str) -> Result<Option<u64>, Error> {
    match http::query(req, name) {
        None => Ok(None),
        Some(v) => v.parse::<u64>().ok().filter(|n| *n >= 1).map(Some).ok_or_else(|| Rejection::malformed("invalid_query", format!("{name}: expected a record sequence number (1 or more)")).into()),
    }
}

/// JSON Lines: the records from `from_seq` to `to_seq` (default: all the
/// chained ones), each exactly as hashed, then the signed checkpoint with
/// the stored checkpoints of the range in `earlier`.
async fn export(app: &App, req: &Request, tenant: &str) -> Result<Response<Body>, Error> {
    let tenant = http::id(tenant, TenantId::parse)?;
    let from = seq_query(req, "from_seq")?.unwrap_or(1);
    let to = seq_query(req, "to_seq")?;
    if to.is_some_and(|t| t < from) {
        return Err(Rejection::malformed("invalid_query", "to_seq: must not be below from_seq").into());
    }
    let e = audit::export(&app.store, &app.signer, &tenant, from, to, audit::EXPORT_BYTES, Utc::now()).await?;
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/x-ndjson")
        .header("content-disposition", format!("attachment; filename=\"audit-{tenant}-{}-{}.jsonl\"", e.from, e.last))
        .body(Body::Text(e.lines))
        .expect("status and headers are valid"))
}

async fn public_key(app: &App) -> Result<Response<Body>, Error> {
    let pem = app.signer.public_key_pem().await?;
    Ok(Response::builder().status(200).header("content-type", "application/x-pem-file").header("x-key-id", app.signer.key_id()).body(Body::Text(pem)).expect("status and headers are valid"))
}
