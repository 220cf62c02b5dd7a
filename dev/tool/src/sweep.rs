//! `entitle-dev sweep [TIME]`: fires the expiry sweep's schedule locally, as
//! EventBridge Scheduler would, with the scheduled time in the event.

use serde_json::{json, Value};

/// Invokes expiry-sweep as of `time` (RFC 3339; now when absent) and returns its report.
pub async fn fire(time: Option<&str>) -> Result<Value, String> {
    let url = std::env::var("ENTITLE_SWEEP_INVOKE_URL").map_err(|_| "ENTITLE_SWEEP_INVOKE_URL is not set (see .local/stack/stack.env)".to_string())?;
    let time = match time {
        Some(t) => t.parse::<chrono::DateTime<chrono::Utc>>().map_err(|e| format!("TIME {t:?}: {e}"))?,
        None => chrono::Utc::now(),
    };
    let event = json!({
        "version": "0",
        "id": format!("local-{}", time.timestamp()),
        "detail-type": "Scheduled Event",
        "source": "aws.scheduler",
        "account": "123456789012",
        "time": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "region": "us-east-1",
        "resources": ["arn:aws:scheduler:us-east-1:123456789012:schedule/default/entitle-expiry-sweep"],
        "detail": {}
    });
    let resp = reqwest::Client::new().post(&url).json(&event).send().await.map_err(|e| format!("expiry-sweep did not answer: {e}"))?;
    let failed = resp.headers().get("x-amz-function-error").is_some() || !resp.status().is_success();
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    if failed {
        return Err(format!("expiry-sweep failed: {body}"));
    }
    Ok(body)
}
