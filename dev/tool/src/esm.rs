//! `entitle-dev esm`: the local stand-in for Lambda's SQS event source mapping.
//!
//! Polls one queue (the reconcile FIFO queue for `provision`, the billing
//! queue for `billing`) and invokes its function through the Lambda Invoke
//! API that `cargo lambda watch` serves, as the managed mapping would:
//! batches of up to `ESM_BATCH_SIZE` messages, the SQS event shape, partial
//! batch responses (only the reported failures stay on the queue), a whole
//! batch left on the queue when the invocation itself fails, the queue's
//! visibility timeout (or `ESM_VISIBILITY_TIMEOUT` to shorten it locally),
//! and the queue's redrive policy (max receives, then the dead-letter queue).
//!
//! Settings (environment): ESM_QUEUE_URL, ESM_INVOKE_URL, ESM_BATCH_SIZE
//! (10), ESM_VISIBILITY_TIMEOUT (queue default), AWS_* as usual.

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName};
use serde_json::{json, Value};
use std::time::Duration;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is required"))
}

pub async fn run() -> Result<(), String> {
    let queue_url = env("ESM_QUEUE_URL")?;
    let invoke_url = env("ESM_INVOKE_URL")?;
    let batch_size: i32 = std::env::var("ESM_BATCH_SIZE").ok().and_then(|v| v.parse().ok()).unwrap_or(10).clamp(1, 10);
    let visibility: Option<i32> = std::env::var("ESM_VISIBILITY_TIMEOUT").ok().and_then(|v| v.parse().ok());
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().map_err(|e| e.to_string())?;
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| format!("cannot reach the queue: {e:?}"))?
        .attributes
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    eprintln!("entitle-dev esm: polling {queue_url} -> {invoke_url} (batch {batch_size})");
    loop {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(batch_size)
            .wait_time_seconds(1)
            .set_visibility_timeout(visibility)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await;
        let messages = match received {
            Ok(out) => out.messages.unwrap_or_default(),
            Err(e) => {
                eprintln!("entitle-dev esm: receive failed: {e:?}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let records: Vec<Value> = messages
            .iter()
            .map(|m| {
                let attributes: serde_json::Map<String, Value> = m.attributes().map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), json!(v))).collect()).unwrap_or_default();
                json!({
                    "messageId": m.message_id(),
                    "receiptHandle": m.receipt_handle(),
                    "body": m.body(),
                    "attributes": attributes,
                    "messageAttributes": {},
                    "md5OfBody": m.md5_of_body(),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                    "awsRegion": aws.region().map(|r| r.to_string()).unwrap_or_default(),
                })
            })
            .collect();
        let event = json!({ "Records": records });
        let failed: Option<Vec<String>> = match http.post(&invoke_url).json(&event).send().await {
            Ok(resp) if resp.status().is_success() && resp.headers().get("x-amz-function-error").is_none() => match resp.json::<Value>().await {
                Ok(body) => Some(
                    body.get("batchItemFailures")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(|f| f.get("itemIdentifier").and_then(Value::as_str).map(str::to_string)).collect())
                        .unwrap_or_default(),
                ),
                Err(e) => {
                    eprintln!("entitle-dev esm: unreadable response: {e}");
                    None
                }
            },
            Ok(resp) => {
                eprintln!("entitle-dev esm: invocation failed: HTTP {}: {}", resp.status(), resp.text().await.unwrap_or_default());
                None
            }
            Err(e) => {
                eprintln!("entitle-dev esm: invocation failed: {e}");
                None
            }
        };
        // A failed invocation leaves the whole batch to the visibility timeout.
        let Some(failed) = failed else { continue };
        // The rest is deleted in one request, as Lambda's event source
        // mapping does (one request a message made moto's queue, which
        // scans its messages on every request, fall behind a sync).
        let done: Vec<DeleteMessageBatchRequestEntry> = messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !failed.iter().any(|f| Some(f.as_str()) == m.message_id()))
            .filter_map(|(i, m)| DeleteMessageBatchRequestEntry::builder().id(i.to_string()).set_receipt_handle(m.receipt_handle().map(str::to_string)).build().ok())
            .collect();
        if !done.is_empty() {
            match sqs.delete_message_batch().queue_url(&queue_url).set_entries(Some(done)).send().await {
                Ok(out) if !out.failed().is_empty() => eprintln!("entitle-dev esm: delete failed for {:?}", out.failed()),
                Ok(_) => {}
                Err(e) => eprintln!("entitle-dev esm: delete failed: {e:?}"),
            }
        }
        if !failed.is_empty() {
            eprintln!("entitle-dev esm: {} of {} message(s) reported failed; left for retry", failed.len(), messages.len());
        }
    }
}
