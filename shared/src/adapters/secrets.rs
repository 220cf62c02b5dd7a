//! Secrets in AWS Secrets Manager: the bearer tokens of SCIM targets (one
//! secret per target, under a name derived from the tenant and the target,
//! encrypted with the stack's key), and the webhook signing secrets (read at
//! run time, cached, read again for rotation).

use crate::app::ports::{PortError, Tokens};
use crate::core::ids::{TargetId, TenantId};
use crate::core::signature::{secrets_from_list, Secret};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::app::error_chain as chain;

/// Bearer tokens of targets, in AWS Secrets Manager: one secret per target,
/// named `<prefix>/<tenant>/<target>`, encrypted with the stack's key.
#[derive(Clone)]
pub struct TokenStore {
    client: aws_sdk_secretsmanager::Client,
    prefix: String,
    kms_key: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("Secrets Manager: {0}")]
pub struct TokenError(String);

impl From<TokenError> for PortError {
    fn from(e: TokenError) -> Self {
        PortError::unavailable("Secrets Manager", e)
    }
}

impl TokenStore {
    pub fn new(client: aws_sdk_secretsmanager::Client, prefix: String, kms_key: Option<String>) -> Self {
        TokenStore { client, prefix: prefix.trim_end_matches('/').to_string(), kms_key }
    }

    pub fn secret_name(&self, tenant: &TenantId, target: &TargetId) -> String {
        format!("{}/{tenant}/{target}", self.prefix)
    }

    /// Stores (or rotates) a target's token.
    async fn store(&self, tenant: &TenantId, target: &TargetId, token: &str) -> Result<(), TokenError> {
        let name = self.secret_name(tenant, target);
        let exists = match self.described(&name).await? {
            Some(deleted) => {
                if deleted {
                    // The target was removed and is configured again: bring the secret back.
                    self.client.restore_secret().secret_id(&name).send().await.map_err(|e| TokenError(chain(&e)))?;
                }
                true
            }
            None => false,
        };
        if exists {
            self.client.put_secret_value().secret_id(&name).secret_string(token).send().await.map_err(|e| TokenError(chain(&e)))?;
        } else {
            let mut create = self.client.create_secret().name(&name).description(format!("Entitle: bearer token of SCIM target {target} of tenant {tenant}")).secret_string(token);
            if let Some(k) = &self.kms_key {
                create = create.kms_key_id(k);
            }
            create.send().await.map_err(|e| TokenError(chain(&e)))?;
        }
        Ok(())
    }

    /// Deletes a target's token (Secrets Manager keeps it recoverable for 7
    /// days); a token already gone is fine.
    async fn remove(&self, secret_id: &str) -> Result<(), TokenError> {
        if self.described(secret_id).await? != Some(false) {
            return Ok(()); // gone, or already scheduled for deletion
        }
        match self.client.delete_secret().secret_id(secret_id).recovery_window_in_days(7).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(()),
            Err(e) => Err(TokenError(chain(&e))),
        }
    }

    /// Whether a secret exists: `None` if not, `Some(true)` if it is
    /// scheduled for deletion.
    async fn described(&self, name: &str) -> Result<Option<bool>, TokenError> {
        match self.client.describe_secret().secret_id(name).send().await {
            Ok(d) => Ok(Some(d.deleted_date.is_some())),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(TokenError(chain(&e))),
        }
    }

    async fn read(&self, secret_id: &str) -> Result<String, TokenError> {
        let out = self.client.get_secret_value().secret_id(secret_id).send().await.map_err(|e| TokenError(chain(&e)))?;
        out.secret_string.ok_or_else(|| TokenError(format!("secret {secret_id} holds no string")))
    }
}

impl Tokens for TokenStore {
    async fn get(&self, tenant: &TenantId, target: &TargetId) -> Result<String, PortError> {
        Ok(self.read(&self.secret_name(tenant, target)).await?)
    }

    async fn put(&self, tenant: &TenantId, target: &TargetId, token: &str) -> Result<(), PortError> {
        Ok(self.store(tenant, target, token).await?)
    }

    async fn delete(&self, tenant: &TenantId, target: &TargetId) -> Result<(), PortError> {
        Ok(self.remove(&self.secret_name(tenant, target)).await?)
    }
}

/// Webhook signing secrets, read from Secrets Manager at run time (never
/// pasted into the function's environment at deploy): cached for a while,
/// and read again when a signature does not match, so that a secret rotated
/// in Secrets Manager (the new one added beside the old) is honoured within
/// seconds without a deploy. The read after a mismatch happens at most once
/// per [`MIN_REFRESH`], so forged requests cannot turn into a flood of
/// Secrets Manager calls. The secret's value is a comma-separated list
/// (several while rotating).
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
        let out = self.client.get_secret_value().secret_id(&self.secret_id).send().await.map_err(|e| fail(chain(&e)))?;
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
