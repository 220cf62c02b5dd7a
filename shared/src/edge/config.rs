//! Settings and clients, built once per process in `main` from the
//! environment the template sets, and lent to the handlers.

use crate::adapters::dynamodb::Dynamo;
use crate::adapters::scim_client::Scim;
use crate::adapters::secrets::{SigningSecrets, TokenStore};
use crate::adapters::sqs::{BillingQueue, ReconcileQueue};
use crate::adapters::stripe::{self, ApiKey, StripeApi};
use crate::app::delivery::TargetBudget;
use crate::core::egress::EgressPolicy;
use crate::core::model::{LicensingModel, ModelError};
use crate::core::scim::Policy;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("environment variable {0} is required")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {why}")]
    Invalid { name: &'static str, why: String },
    #[error(transparent)]
    Model(#[from] ModelError),
}

pub fn required(name: &'static str) -> Result<String, ConfigError> {
    std::env::var(name).ok().filter(|v| !v.is_empty()).ok_or(ConfigError::Missing(name))
}

/// An optional numeric setting: its default when unset or empty.
pub fn optional<T: std::str::FromStr>(name: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().map_err(|e: T::Err| ConfigError::Invalid { name, why: e.to_string() }),
        _ => Ok(default),
    }
}

/// `N` bytes from the operating system's random source (tokens, ids).
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source is available");
    b
}

/// A portal link's URL: the portal function's URL (`PORTAL_URL`) and the
/// link's token.
pub fn portal_link(token: &str) -> String {
    let url = std::env::var("PORTAL_URL").unwrap_or_default();
    let url = if url.is_empty() || url.ends_with('/') { url } else { format!("{url}/") };
    format!("{url}links/{token}")
}

/// The directory function's URL (`DIRECTORY_URL`, ending in `/`): where a
/// tenant's identity providers push (`<url>scim/v2/tenants/<tenant>`).
pub fn directory_base(tenant: &crate::core::ids::TenantId) -> String {
    let url = std::env::var("DIRECTORY_URL").unwrap_or_default();
    let url = if url.is_empty() || url.ends_with('/') { url } else { format!("{url}/") };
    format!("{url}scim/v2/tenants/{tenant}")
}

/// A flag: `1` is on.
pub fn flag(name: &'static str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// What every function starts with: logging, the SDK's configuration, and
/// the tables (with the deployed licensing model: the registry gives the
/// rules of every version a tenant follows, read when first needed).
pub struct Base {
    pub aws: aws_config::SdkConfig,
    pub store: Dynamo,
}

/// Starts a function: logging first, then [`Base`] from the environment.
pub async fn start() -> Result<Base, ConfigError> {
    init_logging();
    let aws = aws().await;
    let store = store(&aws, model()?)?;
    Ok(Base { aws, store })
}

/// The SDK's shared configuration: region, credentials and (locally)
/// `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_DYNAMODB`, all from the standard
/// environment; its HTTPS client trusts the process's one trust store
/// ([`crate::adapters::tls`]).
pub async fn aws() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(crate::adapters::tls::sdk_http_client()).load().await
}

/// One SDK client per service and process, shared by every adapter that
/// calls it (a client is a handle: clones share its connections). Each
/// built is memory and time at a function's start. (A process has one
/// `SdkConfig`: the first given is the one kept.)
macro_rules! shared_client {
    ($name:ident, $client:ty) => {
        pub fn $name(aws: &aws_config::SdkConfig) -> $client {
            static CLIENT: std::sync::OnceLock<$client> = std::sync::OnceLock::new();
            CLIENT.get_or_init(|| <$client>::new(aws)).clone()
        }
    };
}
shared_client!(sqs, aws_sdk_sqs::Client);
shared_client!(secrets_manager, aws_sdk_secretsmanager::Client);
shared_client!(kms, aws_sdk_kms::Client);

/// The deployed licensing model (`ENTITLE_MODEL_PATH`, else the one built in).
pub fn model() -> Result<Arc<LicensingModel>, ConfigError> {
    Ok(Arc::new(LicensingModel::load_from_env()?))
}

/// The deployed licensing model's text, as it is registered.
pub fn model_text() -> Result<String, ConfigError> {
    Ok(crate::core::model::text_from_env()?)
}

/// The tables (`STATE_TABLE`, `AUDIT_TABLE`) and the licensing model.
pub fn store(aws: &aws_config::SdkConfig, model: Arc<LicensingModel>) -> Result<Dynamo, ConfigError> {
    Ok(Dynamo::new(aws_sdk_dynamodb::Client::new(aws), required("STATE_TABLE")?, required("AUDIT_TABLE")?, model))
}

/// The reconcile queue (`RECONCILE_QUEUE_URL`).
pub fn reconcile_queue(aws: &aws_config::SdkConfig) -> Result<ReconcileQueue, ConfigError> {
    Ok(ReconcileQueue::new(sqs(aws), required("RECONCILE_QUEUE_URL")?))
}

/// The rollouts' and previews' work queue (`MODEL_WORK_QUEUE_URL`).
pub fn work_queue(aws: &aws_config::SdkConfig) -> Result<crate::adapters::sqs::WorkQueueSqs, ConfigError> {
    Ok(crate::adapters::sqs::WorkQueueSqs::new(sqs(aws), required("MODEL_WORK_QUEUE_URL")?))
}

/// How much one hand-out of rollouts' and previews' tenants takes: tenants
/// per work message (`MODEL_WORK_BATCH`, 100) and, per run, tenants handed
/// out and not settled at once (`MODEL_WORK_IN_FLIGHT`, 1000): the bound
/// on the rate at which a run works the table.
pub fn pump_limits() -> Result<(usize, u64), ConfigError> {
    Ok((optional("MODEL_WORK_BATCH", 100usize)?.clamp(1, 500), optional("MODEL_WORK_IN_FLIGHT", 1000u64)?.max(1)))
}

/// Tenants of one work message provision works at once
/// (`MODEL_WORK_CONCURRENCY`, 4): each is mostly waiting on DynamoDB.
pub fn work_concurrency() -> Result<usize, ConfigError> {
    Ok(optional("MODEL_WORK_CONCURRENCY", 4usize)?.clamp(1, 16))
}

/// The billing queue (`BILLING_QUEUE_URL`).
pub fn billing_queue(aws: &aws_config::SdkConfig) -> Result<BillingQueue, ConfigError> {
    Ok(BillingQueue::new(sqs(aws), required("BILLING_QUEUE_URL")?))
}

/// Webhook signing secrets, read from the Secrets Manager secret the
/// variable `name` names (see [`SigningSecrets`]).
pub fn signing_secrets(aws: &aws_config::SdkConfig, name: &'static str) -> Result<SigningSecrets, ConfigError> {
    Ok(SigningSecrets::new(secrets_manager(aws), required(name)?))
}

/// Stripe's API: `STRIPE_API_URL` (default `https://api.stripe.com`; plain
/// HTTP only to a loopback address, for the local stack), the restricted
/// key in the Secrets Manager secret `STRIPE_API_KEY_SECRET_ID`, and
/// `STRIPE_API_BUDGET_SECS` (default 8) for one call, tries included.
pub fn stripe_api(aws: &aws_config::SdkConfig) -> Result<StripeApi, ConfigError> {
    let base = std::env::var("STRIPE_API_URL").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| stripe::DEFAULT_BASE_URL.to_string());
    let url = url::Url::parse(&base).map_err(|e| ConfigError::Invalid { name: "STRIPE_API_URL", why: e.to_string() })?;
    let loopback = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback()) || url.host_str() == Some("localhost");
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(ConfigError::Invalid { name: "STRIPE_API_URL", why: format!("{base}: https, or http to a loopback address only") });
    }
    let key = ApiKey::secret(secrets_manager(aws), required("STRIPE_API_KEY_SECRET_ID")?);
    let budget = std::time::Duration::from_secs(optional("STRIPE_API_BUDGET_SECS", 8u64)?.max(1));
    Ok(StripeApi::new(crate::adapters::scim_client::http_client(EgressPolicy::Local), &base, key, budget))
}

/// Where SCIM targets may be: `SCIM_ALLOW_HTTP=1` (the local stack only)
/// admits plain HTTP to any address; otherwise public HTTPS hosts on port
/// 443 only (see [`crate::core::egress`]).
pub fn egress() -> EgressPolicy {
    EgressPolicy::from_allow_http(flag("SCIM_ALLOW_HTTP"))
}

/// Where target tokens are kept (`TARGET_SECRET_PREFIX`, optional
/// `TARGET_SECRET_KMS_KEY`).
pub fn token_store(aws: &aws_config::SdkConfig) -> Result<TokenStore, ConfigError> {
    let kms = std::env::var("TARGET_SECRET_KMS_KEY").ok().filter(|k| !k.is_empty());
    Ok(TokenStore::new(secrets_manager(aws), required("TARGET_SECRET_PREFIX")?, kms))
}

/// The token signing keys: `TOKEN_SIGNING_KEY_ID` (the key that signs)
/// and `TOKEN_PREVIOUS_KEY_IDS` (comma-separated, still published while
/// tokens they signed may be unexpired).
pub fn token_keys(aws: &aws_config::SdkConfig) -> Result<crate::adapters::kms::TokenKeys, ConfigError> {
    let previous = std::env::var("TOKEN_PREVIOUS_KEY_IDS").unwrap_or_default().split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_string).collect();
    Ok(crate::adapters::kms::TokenKeys::new(kms(aws), required("TOKEN_SIGNING_KEY_ID")?, previous))
}

/// SCIM targets over HTTP, as `egress` allows.
pub fn scim() -> Scim {
    Scim::new(egress())
}

/// The retry and quarantine policy of SCIM targets (`SCIM_QUARANTINE_AFTER`
/// failed runs, `SCIM_RETRY_BASE_SECS` doubling up to `SCIM_RETRY_MAX_SECS`,
/// then `SCIM_QUARANTINE_RETRY_SECS` while quarantined), and what one
/// target may take of a run (`SCIM_TARGET_BUDGET_SECS`,
/// `SCIM_TARGET_READ_BUDGET_MB`).
pub fn delivery_settings() -> Result<(Policy, TargetBudget), ConfigError> {
    let d = Policy::default();
    let policy = Policy {
        quarantine_after: optional("SCIM_QUARANTINE_AFTER", d.quarantine_after)?.max(1),
        retry_base_secs: optional("SCIM_RETRY_BASE_SECS", d.retry_base_secs)?.max(1),
        retry_max_secs: optional("SCIM_RETRY_MAX_SECS", d.retry_max_secs)?.max(1),
        quarantine_retry_secs: optional("SCIM_QUARANTINE_RETRY_SECS", d.quarantine_retry_secs)?.max(1),
    };
    let b = TargetBudget::default();
    let budget = TargetBudget {
        time: std::time::Duration::from_secs(optional("SCIM_TARGET_BUDGET_SECS", b.time.as_secs())?.max(1)),
        read_bytes: optional("SCIM_TARGET_READ_BUDGET_MB", b.read_bytes >> 20)?.max(1) << 20,
    };
    Ok((policy, budget))
}

/// The instant to stop taking new work: the invocation's deadline (epoch
/// ms) less a safety margin.
pub fn stop_at(deadline_ms: u64, margin: std::time::Duration) -> std::time::Instant {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    // Lambda sends an epoch timestamp; cargo lambda watch sends the timeout
    // itself (600000): a value before 2001 cannot be an epoch deadline.
    let left = if deadline_ms < 1_000_000_000_000 { deadline_ms } else { deadline_ms.saturating_sub(now_ms) };
    Instant::now() + Duration::from_millis(left).saturating_sub(margin)
}

/// Logs: JSON when `AWS_LAMBDA_LOG_FORMAT=JSON` (set by the template and the
/// local stack), one span per invocation carrying the Lambda request id.
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}
