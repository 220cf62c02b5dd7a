use chrono::{DateTime, Utc};
use entitle::adapters::dynamodb::Dynamo;
use entitle::adapters::kms::AuditSigner;
use entitle::adapters::sqs::{ReconcileQueue, WorkQueueSqs};
use entitle::app::sweep::{self, SweepLimits};
use entitle::app::versions;
use entitle::core::audit::{Cause, CauseKind};
use entitle::edge::http::error_chain;
use entitle::edge::metrics::Emf;
use lambda_runtime::{Diagnostic, LambdaEvent};
use serde_json::{json, Value};
use std::time::Duration;

pub struct App {
    pub store: Dynamo,
    /// The deployed licensing model's text (registered by the model tick).
    pub model_text: String,
    pub queue: ReconcileQueue,
    /// The rollouts' and previews' work queue (to provision).
    pub work: WorkQueueSqs,
    pub pump: (usize, u64),
    /// Signs the checkpoints of chain heads that moved (the stack's audit signing key).
    pub signer: AuditSigner,
    /// `SWEEP_ALLOW_FUTURE=1`: sweeps as of a future instant are run (the
    /// local stack's demo and tests travel in time). Never set in production.
    pub allow_future: bool,
}

/// How far ahead of the clock a scheduled time may be (clock skew).
pub const MAX_SKEW: chrono::Duration = chrono::Duration::minutes(2);

/// Left before the Lambda deadline when the sweep stops taking new items.
const SAFETY_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("the scheduled event has no valid `time` (RFC 3339): {0}")]
    BadEvent(String),
    #[error("the scheduled event's time {time} is {ahead_secs} s ahead of the clock (at most 120 s are accepted); refused, nothing applied. A sweep runs as of now or a past instant (catch-up); SWEEP_ALLOW_FUTURE=1 admits future instants outside production")]
    FutureTime { time: String, ahead_secs: i64 },
    #[error("the sweep failed: {0}")]
    Failed(String),
}

impl From<SweepError> for Diagnostic {
    fn from(e: SweepError) -> Diagnostic {
        let kind = match e {
            SweepError::BadEvent(_) => "BadEvent",
            SweepError::FutureTime { .. } => "FutureTime",
            SweepError::Failed(_) => "SweepFailed",
        };
        Diagnostic { error_type: kind.into(), error_message: e.to_string() }
    }
}

/// The instant a scheduled event asks the sweep to run as of: its `time`,
/// unless that is further ahead of `now` than the clock's skew. Anyone
/// allowed to invoke the function could otherwise expire every license,
/// apply future amendments early and date audit records in the future.
pub fn as_of(event: &Value, now: DateTime<Utc>, allow_future: bool) -> Result<DateTime<Utc>, SweepError> {
    let time = event.get("time").and_then(Value::as_str).unwrap_or_default();
    let as_of: DateTime<Utc> = time.parse().map_err(|_| SweepError::BadEvent(format!("{time:?}")))?;
    if as_of > now + MAX_SKEW && !allow_future {
        return Err(SweepError::FutureTime { time: time.to_string(), ahead_secs: (as_of - now).num_seconds() });
    }
    Ok(as_of)
}

pub async fn handle(app: &App, event: LambdaEvent<Value>) -> Result<Value, SweepError> {
    if event.payload.get("job").and_then(Value::as_str) == Some("models") {
        return models_tick(app, event.context.deadline).await;
    }
    let as_of = as_of(&event.payload, Utc::now(), app.allow_future).inspect_err(|e| tracing::error!(error = %e, "sweep refused"))?;
    let run_id = match event.payload.get("id").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => format!("sweep-{id}"),
        _ => format!("sweep-{}", as_of.timestamp()),
    };
    let stop_at = entitle::edge::config::stop_at(event.context.deadline, SAFETY_MARGIN);
    let limits = SweepLimits { stop_at, max_items: None };
    let (report, amendments) = sweep::run(&app.store, &app.queue, &app.work, &app.signer, as_of, &run_id, limits).await.map_err(|e| SweepError::Failed(error_chain(&e)))?;
    tracing::info!(
        cause = %Cause::new(CauseKind::Sweep, &run_id),
        as_of = %as_of.to_rfc3339(),
        licenses = report.licenses,
        transitions = report.transitions,
        amendments,
        deliveries = report.deliveries,
        events = report.events,
        tenants = report.tenants.len(),
        complete = report.complete,
        checkpoints = report.checkpoints,
        checkpoint_failures = report.checkpoint_failures,
        index_reads = report.index_reads,
        model_moves = report.model_moves,
        pins_released = report.pins_released,
        "sweep run"
    );
    // SweepCompleted is 0 for a run that stopped at its time budget (the
    // next run goes on): the alarm fires when two runs in a row did.
    Emf::new().count("SweepTransitions", report.transitions as f64).count("SweepCompleted", u8::from(report.complete)).emit();
    let mut out = serde_json::to_value(&report).expect("serialises");
    out["amendments_applied"] = json!(amendments);
    Ok(out)
}

/// The model tick (its own schedule, every minute; locally every few
/// seconds): registers the deployed model (a version registered with other
/// rules is refused, named in the log and the `ModelVersionRefused`
/// metric; no tenant follows the refused rules), gives tenants stored
/// before versions their place in the index, hands the next tenants of
/// every rollout and preview to provision, and counts the tenants behind
/// the latest version.
async fn models_tick(app: &App, deadline: u64) -> Result<Value, SweepError> {
    let now = Utc::now();
    let stop_at = entitle::edge::config::stop_at(deadline, SAFETY_MARGIN);
    let failed = |e: entitle::app::Error| SweepError::Failed(error_chain(&e));
    let deployed = app.store.model();
    let registration = match versions::register(&app.store, deployed, &app.model_text, now).await {
        Ok(r) => json!(format!("{r:?}")),
        Err(entitle::app::Error::Rejected(r)) => {
            tracing::error!(code = r.code, error = %r.message, version = %deployed.version, "the deployed licensing model is refused");
            Emf::new().count("ModelVersionRefused", 1).emit();
            json!({"refused": r.message})
        }
        Err(e) => return Err(failed(e)),
    };
    let backfilled = versions::backfill(&app.store, 1000).await.map_err(failed)?;
    let limits = versions::PumpLimits { batch: app.pump.0, in_flight: app.pump.1, stop_at };
    let pumped = versions::pump(&app.store, &app.work, now, limits).await.map_err(failed)?;
    let (_, behind) = versions::overview(&app.store).await.map_err(failed)?;
    for (run, status) in &pumped.finished {
        tracing::info!(rollout = %run, status = ?status, "run finished");
    }
    tracing::info!(version = %deployed.version, registration = %registration, backfilled, runs = pumped.runs, queued = pumped.queued, behind, "model tick");
    Emf::new().count("TenantsBehindLatest", behind as f64).count("RolloutsWithFailedTenants", pumped.with_failures as f64).count("ModelVersionRefused", 0).emit();
    Ok(json!({"registration": registration, "backfilled": backfilled, "pump": pumped, "tenants_behind_latest": behind}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    #[test]
    fn a_sweep_time_ahead_of_the_clock_is_refused() {
        let now: DateTime<Utc> = "2026-11-24T12:00:00Z".parse().unwrap();
        let at = |t: &str| json!({"id": "e1", "time": t});
        assert_eq!(as_of(&at("2026-11-24T12:00:00Z"), now, false).unwrap(), now);
        assert!(as_of(&at("2026-11-24T12:01:59Z"), now, false).is_ok(), "within the skew");
        assert!(as_of(&at("2020-01-01T00:00:00Z"), now, false).is_ok(), "catch-up of the past is allowed");
        let e = as_of(&at("2099-01-01T00:00:00Z"), now, false).unwrap_err();
        assert!(matches!(e, SweepError::FutureTime { .. }), "{e}");
        assert!(e.to_string().contains("2099-01-01T00:00:00Z") && e.to_string().contains("nothing applied"), "{e}");
        assert_eq!(Diagnostic::from(e).error_type, "FutureTime");
        assert!(as_of(&at("2099-01-01T00:00:00Z"), now, true).is_ok(), "SWEEP_ALLOW_FUTURE=1");
        assert!(matches!(as_of(&json!({"time": "soon"}), now, false), Err(SweepError::BadEvent(_))));
    }

    #[test]
    fn the_deadline_leaves_a_margin() {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let stop_at = |d| entitle::edge::config::stop_at(d, SAFETY_MARGIN);
        let at = stop_at(now_ms + 60_000);
        let left = at - Instant::now();
        assert!(left > Duration::from_secs(50) && left <= Duration::from_secs(55), "{left:?}");
        assert!(stop_at(now_ms + 1_000) <= Instant::now(), "inside the margin: stop at once");
        let relative = stop_at(600_000) - Instant::now();
        assert!(relative > Duration::from_secs(590), "{relative:?}");
    }
}
