use chrono::{DateTime, Utc};
use entitle::audit::{Cause, CauseKind};
use entitle::due::apply_due_amendments;
use entitle::events::EventBus;
use entitle::http::error_chain;
use entitle::queue::{ReconcileQueue, ReconcileRequest};
use entitle::store::Store;
use entitle::sweep::SweepLimits;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::{json, Value};
use std::time::Duration;

pub struct App {
    pub store: Store,
    pub queue: ReconcileQueue,
    pub bus: EventBus,
}

/// Left before the Lambda deadline when the sweep stops taking new items.
const SAFETY_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("the scheduled event has no valid `time` (RFC 3339): {0}")]
    BadEvent(String),
    #[error("the sweep failed: {0}")]
    Failed(String),
}

impl From<SweepError> for Diagnostic {
    fn from(e: SweepError) -> Diagnostic {
        let kind = match e {
            SweepError::BadEvent(_) => "BadEvent",
            SweepError::Failed(_) => "SweepFailed",
        };
        Diagnostic { error_type: kind.into(), error_message: e.to_string() }
    }
}

pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, SweepError> {
    let time = event.payload.get("time").and_then(Value::as_str).unwrap_or_default();
    let as_of: DateTime<Utc> = time.parse().map_err(|_| SweepError::BadEvent(format!("{time:?}")))?;
    let run_id = match event.payload.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => format!("sweep-{id}"),
        _ => format!("sweep-{}", as_of.timestamp()),
    };
    let stop_at = entitle::config::stop_at(event.context.deadline, SAFETY_MARGIN);
    let fail = |e: &dyn std::error::Error| SweepError::Failed(error_chain(e));

    // Events a crashed run committed but did not publish go first.
    app.bus.publish_outbox(&app.store).await.map_err(|e| fail(&e))?;
    let report = app.store.sweep(as_of, &run_id, SweepLimits { stop_at, max_items: None }).await.map_err(|e| fail(&e))?;
    let mut amendments = 0;
    for contract in &report.contracts {
        amendments += apply_due_amendments(&app.store, &app.queue, contract, as_of, &run_id).await.map_err(|e| fail(&e))?.len();
    }
    // Tenants whose access may change, and tenants with SCIM work due
    // (undelivered changes, a retry, a drift repair): provision does both.
    for tenant in report.tenants.union(&report.delivery_tenants) {
        let request = ReconcileRequest::new(tenant.clone(), Cause::new(CauseKind::Sweep, &run_id));
        app.queue.send(&request, &format!("{run_id}:{tenant}")).await.map_err(|e| fail(&e))?;
    }
    let published = app.bus.publish_outbox(&app.store).await.map_err(|e| fail(&e))?;
    tracing::info!(
        cause = %format!("sweep:{run_id}"),
        as_of = %as_of.to_rfc3339(),
        licenses = report.licenses,
        transitions = report.transitions,
        amendments,
        deliveries = report.deliveries,
        published,
        tenants = report.tenants.len(),
        complete = report.complete,
        index_reads = report.index_reads,
        "sweep run"
    );
    let mut out = serde_json::to_value(&report).expect("serialises");
    out["amendments_applied"] = json!(amendments);
    out["events_published"] = json!(published);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    #[test]
    fn the_deadline_leaves_a_margin() {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let stop_at = |d| entitle::config::stop_at(d, SAFETY_MARGIN);
        let at = stop_at(now_ms + 60_000);
        let left = at - Instant::now();
        assert!(left > Duration::from_secs(50) && left <= Duration::from_secs(55), "{left:?}");
        assert!(stop_at(now_ms + 1_000) <= Instant::now(), "inside the margin: stop at once");
        let relative = stop_at(600_000) - Instant::now();
        assert!(relative > Duration::from_secs(590), "{relative:?}");
    }
}
