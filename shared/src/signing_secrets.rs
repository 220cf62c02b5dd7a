//! Webhook signing secrets, read from AWS Secrets Manager at run time
//! (never pasted into the function's environment at deploy): cached for a
//! while, and re-read when a signature does not match, so that a secret
//! rotated in Secrets Manager (the new one added beside the old) is
//! honoured within seconds without a deploy. The re-read after a mismatch
//! happens at most once per [`MIN_REFRESH`], so forged requests cannot turn
//! into a flood of Secrets Manager calls.
//!
//! The secret's value is a comma-separated list (several while rotating).

use crate::signature::{secrets_from_list, Secret};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a read is used before it is read again anyway.
pub const TTL: Duration = Duration::from_secs(300);
/// The least time between two reads forced by a mismatch.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("signing secret {secret_id} cannot be read: {why}")]
pub struct SigningSecretError {
    pub secret_id: String,
    pub why: String,
}

pub struct SigningSecrets {
    client: aws_sdk_secretsmanager::Client,
    secret_id: String,
    cached: Mutex<Option<(Instant, Vec<Secret>)>>,
}

impl SigningSecrets {
    pub fn new(client: aws_sdk_secretsmanager::Client, secret_id: String) -> Self {
        SigningSecrets { client, secret_id, cached: Mutex::new(None) }
    }

    async fn read(&self) -> Result<Vec<Secret>, SigningSecretError> {
        let fail = |why: String| SigningSecretError { secret_id: self.secret_id.clone(), why };
        let out = self.client.get_secret_value().secret_id(&self.secret_id).send().await.map_err(|e| fail(crate::http::error_chain(&e)))?;
        let list = secrets_from_list(out.secret_string().unwrap_or_default());
        if list.is_empty() {
            return Err(fail("it holds no secret".into()));
        }
        *self.cached.lock().expect("not poisoned") = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// The secrets as last read, read again once older than [`TTL`].
    pub async fn current(&self) -> Result<Vec<Secret>, SigningSecretError> {
        let cached = self.cached.lock().expect("not poisoned").clone();
        match cached {
            Some((at, list)) if at.elapsed() < TTL => Ok(list),
            _ => self.read().await,
        }
    }

    /// After a mismatch: the secrets read again, if the last read is older
    /// than [`MIN_REFRESH`] (a rotation may have added one); `None` if it is
    /// fresher (nothing new to try).
    pub async fn refreshed(&self) -> Result<Option<Vec<Secret>>, SigningSecretError> {
        let fresh = self.cached.lock().expect("not poisoned").as_ref().is_some_and(|(at, _)| at.elapsed() < MIN_REFRESH);
        if fresh {
            return Ok(None);
        }
        self.read().await.map(Some)
    }
}
