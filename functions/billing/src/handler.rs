//! What invoked the function, and what it does about it.

use chrono::Utc;
use entitle::adapters::dynamodb::Dynamo;
use entitle::adapters::sqs::{BillingQueue, ReconcileQueue};
use entitle::adapters::stripe::StripeApi;
use entitle::app::billing::{self, EventOutcome, SyncReport, SyncRequest};
use entitle::app::ports::{Queue, SyncRuns};
use entitle::app::{error_chain, licenses, Error};
use entitle::core::audit::{hash_of, Cause, CauseKind};
use entitle::core::license::Source;
use entitle::core::reconcile::ReconcileRequest;
use entitle::edge::metrics;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

pub struct App {
    pub store: Dynamo,
    pub stripe: StripeApi,
    pub queue: ReconcileQueue,
    pub billing_queue: BillingQueue,
    /// Subscriptions per page of Stripe's listing (`BILLING_SYNC_PAGE_SIZE`).
    pub page_size: u32,
    /// Left before the deadline when a run stops taking new work
    /// (`BILLING_DEADLINE_MARGIN_SECS`).
    pub margin: Duration,
}

/// The partner event sources of Stripe are named `aws.partner/stripe.com/...`.
pub const STRIPE_SOURCE_PREFIX: &str = "aws.partner/stripe.com";

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("unrecognised event: expected SQS records of the billing queue, a Stripe event from EventBridge (source {STRIPE_SOURCE_PREFIX}/...), or a scheduled event")]
    Unrecognised,
    #[error("the Stripe event from EventBridge is refused: {0}")]
    BadEvent(String),
    /// Nothing was changed; EventBridge (or the schedule) tries again.
    #[error("{0}")]
    Failed(String),
}

impl From<BillingError> for Diagnostic {
    fn from(e: BillingError) -> Diagnostic {
        let kind = match e {
            BillingError::Unrecognised => "Unrecognised",
            BillingError::BadEvent(_) => "BadEvent",
            BillingError::Failed(_) => "Failed",
        };
        Diagnostic { error_type: kind.into(), error_message: e.to_string() }
    }
}

pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, BillingError> {
    let stop_at = entitle::edge::config::stop_at(event.context.deadline, app.margin);
    let payload = event.payload;
    if let Some(records) = payload.get("Records").and_then(Value::as_array) {
        return Ok(queue_batch(app, records, stop_at).await);
    }
    let source = payload.get("source").and_then(Value::as_str).unwrap_or_default();
    if source.starts_with(STRIPE_SOURCE_PREFIX) {
        return stripe_event(app, &payload).await;
    }
    if payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event") {
        let id = payload.get("id").and_then(Value::as_str).filter(|i| !i.is_empty()).map_or_else(|| Utc::now().timestamp().to_string(), str::to_string);
        let req = SyncRequest { run_id: format!("sched-{id}"), tenant: None, starting_after: None };
        let report = run(app, &req, stop_at).await.map_err(|e| BillingError::Failed(error_chain(&e)))?;
        return Ok(serde_json::to_value(report).expect("serialises"));
    }
    Err(BillingError::Unrecognised)
}

/// A Stripe event delivered by EventBridge: `detail` is the event as Stripe
/// would have posted it to a webhook.
async fn stripe_event(app: &App, envelope: &Value) -> Result<Value, BillingError> {
    let event = envelope.get("detail").filter(|d| d.is_object()).ok_or_else(|| BillingError::BadEvent("no `detail` object".into()))?;
    let outcome = billing::apply_event(&app.store, &app.stripe, event, &hash_of(&event.to_string()), Utc::now()).await;
    let outcome = match outcome {
        Ok(o) => o,
        // Malformed: retrying cannot help; say so, and let the rule's
        // dead-letter queue keep it.
        Err(Error::Rejected(r)) => return Err(BillingError::BadEvent(r.message)),
        Err(e) => {
            tracing::warn!(error = %error_chain(&e), "stripe event from EventBridge not applied; EventBridge retries");
            return Err(BillingError::Failed(error_chain(&e)));
        }
    };
    let (event_id, outcome) = match outcome {
        EventOutcome::Ignored { event_type } => {
            tracing::info!(event_type, "stripe event type ignored");
            return Ok(json!({"status": "ignored", "event_type": event_type}));
        }
        EventOutcome::Acted { event_id, outcome } => (event_id, outcome),
    };
    let cause = licenses::cause_of(Source::Stripe, &event_id);
    tracing::info!(cause = %cause, route = "eventbridge", tenant = outcome.tenant.as_ref().map(|t| t.to_string()), outcome = outcome.recorded.label(), "stripe event recorded");
    metrics::license_event(Source::Stripe, &outcome.recorded).property("cause", cause.to_string()).emit();
    if let Some(tenant) = outcome.reconcile() {
        // The webhook's deduplication id: the same event by either route is queued once.
        let dedup = format!("stripe:{event_id}");
        let request = ReconcileRequest::new(tenant.clone(), cause);
        app.queue.send(&request, &dedup).await.map_err(|e| BillingError::Failed(error_chain(&e)))?;
    }
    Ok(outcome.answer(Some(&event_id)))
}

/// The billing queue's messages, one run part each: a failed part stays
/// on the queue (partial batch response) and is tried again.
async fn queue_batch(app: &App, records: &[Value], stop_at: Instant) -> Value {
    let mut failures = Vec::new();
    for record in records {
        let id = record.get("messageId").and_then(Value::as_str).unwrap_or_default().to_string();
        let body = record.get("body").and_then(Value::as_str).unwrap_or_default();
        let result = match serde_json::from_str::<SyncRequest>(body) {
            Ok(req) => run(app, &req, stop_at).await.map(|_| ()).map_err(|e| error_chain(&e)),
            Err(e) => Err(format!("the message is not a sync request: {e}")),
        };
        if let Err(error) = result {
            tracing::warn!(message_id = id, error, "billing sync failed; the message is tried again");
            failures.push(json!({"itemIdentifier": id}));
        }
    }
    json!({"batchItemFailures": failures})
}

/// One part of a run, until `stop_at`: the rest is queued, the tenants
/// whose licenses were repaired get a reconcile.
async fn run(app: &App, req: &SyncRequest, stop_at: Instant) -> Result<SyncReport, Error> {
    let (report, changed) = billing::sync(&app.store, &app.stripe, req, app.page_size, || Instant::now() < stop_at, Utc::now()).await?;
    if let Some(next) = report.continuation() {
        app.billing_queue.start(&next).await?;
    }
    let cause = Cause::new(CauseKind::BillingSync, req.run_id.as_str());
    for tenant in &changed {
        app.queue.send(&ReconcileRequest::new(tenant.clone(), cause.clone()), &format!("billing_sync:{}:{tenant}", req.run_id)).await?;
    }
    tracing::info!(
        cause = %cause,
        tenant = req.tenant.as_ref().map(|t| t.to_string()),
        listed = report.listed,
        compared = report.compared,
        repaired = report.repaired,
        untenanted = report.untenanted,
        parked = report.parked,
        unknown = report.unknown.len(),
        complete = report.complete,
        "billing sync"
    );
    metrics::Emf::new().dimension("Source", "stripe").count("EventsParked", report.parked as f64).emit();
    Ok(report)
}
