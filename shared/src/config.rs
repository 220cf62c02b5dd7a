//! Settings and AWS clients, built once per process in `main` and lent to
//! handlers. Every setting comes from the environment the template sets.

use crate::model::{LicensingModel, ModelError};
use crate::signature::{secrets_from_list, Secret};

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

pub fn optional_u32(name: &'static str, default: u32) -> Result<u32, ConfigError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v.parse().map_err(|e: std::num::ParseIntError| ConfigError::Invalid { name, why: e.to_string() }),
        _ => Ok(default),
    }
}

/// Signing secrets from a comma-separated variable (several while rotating).
pub fn secrets(name: &'static str) -> Result<Vec<Secret>, ConfigError> {
    let list = secrets_from_list(&required(name)?);
    if list.is_empty() {
        return Err(ConfigError::Invalid { name, why: "no secret in the list".into() });
    }
    Ok(list)
}

/// Where the shared state lives.
#[derive(Debug, Clone)]
pub struct Tables {
    pub state: String,
    pub audit: String,
}

impl Tables {
    pub fn from_env() -> Result<Self, ConfigError> {
        Ok(Tables { state: required("STATE_TABLE")?, audit: required("AUDIT_TABLE")? })
    }
}

/// The SDK's shared configuration: region, credentials and (locally)
/// `AWS_ENDPOINT_URL`, all from the standard environment.
pub async fn aws() -> aws_config::SdkConfig {
    aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await
}

pub fn model() -> Result<LicensingModel, ConfigError> {
    Ok(LicensingModel::load_from_env()?)
}

/// The reconcile queue (`RECONCILE_QUEUE_URL`).
pub fn reconcile_queue(aws: &aws_config::SdkConfig) -> Result<crate::queue::ReconcileQueue, ConfigError> {
    Ok(crate::queue::ReconcileQueue::new(aws_sdk_sqs::Client::new(aws), required("RECONCILE_QUEUE_URL")?))
}

/// The bus for access-changed events (`EVENT_BUS_NAME`).
pub fn event_bus(aws: &aws_config::SdkConfig) -> Result<crate::events::EventBus, ConfigError> {
    Ok(crate::events::EventBus::new(aws_sdk_eventbridge::Client::new(aws), required("EVENT_BUS_NAME")?))
}

/// The store every function uses: its tables and the licensing model.
pub fn store(aws: &aws_config::SdkConfig) -> Result<crate::store::Store, ConfigError> {
    Ok(crate::store::Store::new(aws_sdk_dynamodb::Client::new(aws), &Tables::from_env()?, std::sync::Arc::new(model()?)))
}

/// Logs: JSON when `AWS_LAMBDA_LOG_FORMAT=JSON` (set by the template and the
/// local stack), one span per invocation carrying the Lambda request id.
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}
