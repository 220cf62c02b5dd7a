//! `entitle-dev sweep [TIME]` and `entitle-dev billing-sync`: fire the
//! expiry sweep's and the billing reconciliation's schedules locally, as
//! EventBridge Scheduler would (a scheduled event, its time in it).

use serde_json::{json, Value};

/// Invokes expiry-sweep as of `time` (RFC 3339; now when absent) and returns its report.
pub async fn fire(time: Option<&str>) -> Result<Value, String> {
    let time = match time {
        Some(t) => t.parse::<chrono::DateTime<chrono::Utc>>().map_err(|e| format!("TIME {t:?}: {e}"))?,
        None => chrono::Utc::now(),
    };
    scheduled("expiry-sweep", "ENTITLE_SWEEP_INVOKE_URL", time).await
}

/// Invokes billing's schedule (every tenant's subscriptions against the
/// licenses held) and returns the run's report.
pub async fn billing_sync() -> Result<Value, String> {
    scheduled("billing", "ENTITLE_BILLING_INVOKE_URL", chrono::Utc::now()).await
}

/// Fires the model tick's schedule once (its event is the schedule's
/// input, `{"job": "models"}`) and returns its report.
pub async fn model_tick() -> Result<Value, String> {
    let url = std::env::var("ENTITLE_SWEEP_INVOKE_URL").map_err(|_| "ENTITLE_SWEEP_INVOKE_URL is not set (see .local/stack/stack.env)".to_string())?;
    let resp = reqwest::Client::new().post(&url).json(&json!({"job": "models"})).send().await.map_err(|e| format!("expiry-sweep did not answer: {e}"))?;
    let failed = resp.headers().get("x-amz-function-error").is_some() || !resp.status().is_success();
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    if failed {
        return Err(format!("the model tick failed: {body}"));
    }
    Ok(body)
}

/// The model tick's schedule, locally: every `every` (the template's is a
/// minute), for the stack's life. A failed tick is reported and the next
/// one follows, as the scheduler's would.
pub async fn model_ticks(every: std::time::Duration) -> Result<(), String> {
    eprintln!("entitle-dev model-tick: every {every:?}");
    loop {
        if let Err(e) = model_tick().await {
            eprintln!("entitle-dev model-tick: {e}");
        }
        tokio::time::sleep(every).await;
    }
}

async fn scheduled(function: &str, url_var: &str, time: chrono::DateTime<chrono::Utc>) -> Result<Value, String> {
    let url = std::env::var(url_var).map_err(|_| format!("{url_var} is not set (see .local/stack/stack.env)"))?;
    let event = json!({
        "version": "0",
        "id": format!("local-{}", time.timestamp_millis()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": "123456789012",
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "us-east-1",
        "resources": [format!("arn:aws:scheduler:us-east-1:123456789012:schedule/default/entitle-{function}")],
        "detail": {}
    });
    let resp = reqwest::Client::new().post(&url).json(&event).send().await.map_err(|e| format!("{function} did not answer: {e}"))?;
    let failed = resp.headers().get("x-amz-function-error").is_some() || !resp.status().is_success();
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    if failed {
        return Err(format!("{function} failed: {body}"));
    }
    Ok(body)
}
