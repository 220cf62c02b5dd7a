//! Stripe's API, read with a restricted key: a subscription
//! (`GET /v1/subscriptions/{id}`) and the account's subscriptions
//! (`GET /v1/subscriptions?status=all`, paged). Reads only.
//!
//! The key is kept in Secrets Manager (never in the function's
//! environment), cached, and read again once when Stripe answers 401 (a
//! rotated key). Connection failures, timeouts, 429 and 5xx are tried again
//! within the call's time budget, honouring `Retry-After`; what is left is
//! an [`Upstream`] error that names it (and how long Stripe asked to wait),
//! so that the caller changes nothing and is retried. Answers are read up to
//! [`MAX_ANSWER_BYTES`].

use crate::app::error_chain as chain;
use crate::app::ports::{Billing, SubscriptionPage, Upstream};
use crate::core::ids::LicenseId;
use crate::core::scim::{parse_retry_after, retry_delay};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Stripe's production API.
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";
/// The API version every request asks for, so that answers have one shape
/// (item-level periods, `price` objects) whatever the account's default.
pub const API_VERSION: &str = "2025-03-31.basil";
/// The most of one answer that is read.
pub const MAX_ANSWER_BYTES: usize = 4 << 20;
/// Tries per call.
const TRIES: u32 = 3;
/// How long a key read from Secrets Manager is used before it is read again.
const KEY_TTL: Duration = Duration::from_secs(300);

fn upstream(detail: impl Into<String>, retry_after: Option<Duration>) -> Upstream {
    Upstream { service: "stripe", detail: detail.into(), retry_after }
}

/// Where the API key comes from.
pub enum ApiKey {
    /// A Secrets Manager secret holding the key (a restricted key in production).
    Secret { client: aws_sdk_secretsmanager::Client, secret_id: String, cached: Mutex<Option<(Instant, String)>> },
    /// A key given as is (tests).
    Fixed(String),
}

impl ApiKey {
    pub fn secret(client: aws_sdk_secretsmanager::Client, secret_id: String) -> Self {
        ApiKey::Secret { client, secret_id, cached: Mutex::new(None) }
    }

    async fn get(&self, fresh: bool) -> Result<String, Upstream> {
        match self {
            ApiKey::Fixed(k) => Ok(k.clone()),
            ApiKey::Secret { client, secret_id, cached } => {
                if !fresh {
                    if let Some((at, key)) = cached.lock().unwrap().clone() {
                        if at.elapsed() < KEY_TTL {
                            return Ok(key);
                        }
                    }
                }
                // The details go to the log, not to whoever called.
                let out = client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| {
                    tracing::error!(secret_id, error = %chain(&e), "the Stripe API key cannot be read");
                    upstream("the API key cannot be read (see the log)", None)
                })?;
                let key = out.secret_string().unwrap_or_default().trim().to_string();
                if key.is_empty() {
                    tracing::error!(secret_id, "the Stripe API key secret is empty");
                    return Err(upstream("the API key is not set (see the log)", None));
                }
                *cached.lock().unwrap() = Some((Instant::now(), key.clone()));
                Ok(key)
            }
        }
    }
}

/// Stripe's API for one account.
pub struct StripeApi {
    http: crate::adapters::scim_client::Http,
    base: String,
    key: ApiKey,
    /// The longest a call may take, tries and waits included.
    budget: Duration,
}

impl StripeApi {
    pub fn new(http: crate::adapters::scim_client::Http, base: &str, key: ApiKey, budget: Duration) -> Self {
        StripeApi { http, base: base.trim_end_matches('/').to_string(), key, budget }
    }

    /// A GET of `path` with `query`: `Ok(None)` on 404.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Option<Value>, Upstream> {
        let what = format!("GET {path}");
        let deadline = Instant::now() + self.budget;
        let mut fresh_key = false;
        let mut last = String::new();
        let mut attempt = 0;
        while attempt < TRIES {
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| *d >= Duration::from_millis(100)) else { break };
            let key = self.key.get(fresh_key).await?;
            let req = self.http.client().get(format!("{}{path}", self.base)).bearer_auth(&key).header("Stripe-Version", API_VERSION).query(query).timeout(left);
            let retry_after = match req.send().await {
                Ok(res) => {
                    let status = res.status();
                    let retry_after = res.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, chrono::Utc::now()));
                    if status == StatusCode::UNAUTHORIZED && !fresh_key {
                        // The key may have been rotated: read it again, once.
                        fresh_key = true;
                        continue;
                    }
                    let body = read_body(res, &what).await?;
                    if status.is_success() {
                        return serde_json::from_slice(&body).map(Some).map_err(|e| upstream(format!("{what}: the answer is not JSON: {e}"), None));
                    }
                    if status == StatusCode::NOT_FOUND {
                        return Ok(None);
                    }
                    let message =
                        serde_json::from_slice::<Value>(&body).ok().and_then(|v| v["error"]["message"].as_str().map(|m| crate::core::egress::excerpt(&Value::String(m.to_string()), m.len())));
                    last = format!("{what}: HTTP {status}{}", message.map(|m| format!(": {m}")).unwrap_or_default());
                    if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
                        // Refused (a key without the permission, a bad request): trying again changes nothing.
                        return Err(upstream(last, None));
                    }
                    retry_after
                }
                Err(e) => {
                    last = format!(
                        "{what}: {}",
                        if e.is_timeout() {
                            "timed out".to_string()
                        } else if e.is_connect() {
                            "cannot connect".to_string()
                        } else {
                            chain(&e)
                        }
                    );
                    None
                }
            };
            attempt += 1;
            if attempt < TRIES {
                let wait = retry_delay(attempt - 1, retry_after, 0.5);
                if Instant::now() + wait >= deadline {
                    return Err(upstream(last, retry_after));
                }
                tokio::time::sleep(wait).await;
            } else {
                return Err(upstream(last, retry_after));
            }
        }
        Err(upstream(if last.is_empty() { format!("{what}: no time left") } else { last }, None))
    }
}

/// An answer's body, at most [`MAX_ANSWER_BYTES`].
async fn read_body(mut res: reqwest::Response, what: &str) -> Result<Vec<u8>, Upstream> {
    let too_large = || upstream(format!("{what}: the answer is larger than {MAX_ANSWER_BYTES} bytes"), None);
    if res.content_length().is_some_and(|l| l > MAX_ANSWER_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| upstream(format!("{what}: {}", if e.is_timeout() { "timed out reading the answer" } else { "the answer broke off" }), None))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

impl Billing for StripeApi {
    async fn subscription(&self, id: &LicenseId) -> Result<Option<Value>, Upstream> {
        self.get(&format!("/v1/subscriptions/{id}"), &[]).await
    }

    async fn subscriptions(&self, starting_after: Option<&str>, limit: u32) -> Result<SubscriptionPage, Upstream> {
        let mut query = vec![("status", "all".to_string()), ("limit", limit.clamp(1, 100).to_string())];
        if let Some(after) = starting_after {
            query.push(("starting_after", after.to_string()));
        }
        let page = self.get("/v1/subscriptions", &query).await?.ok_or_else(|| upstream("GET /v1/subscriptions: HTTP 404", None))?;
        let data = page.get("data").and_then(Value::as_array).cloned().ok_or_else(|| upstream("GET /v1/subscriptions: the answer has no data list", None))?;
        Ok(SubscriptionPage { has_more: page.get("has_more").and_then(Value::as_bool).unwrap_or(false), data })
    }
}
