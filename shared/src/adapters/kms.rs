//! The audit signing key: an asymmetric KMS key (`ECC_NIST_P256`,
//! `SIGN_VERIFY`) that signs export checkpoints. The private key never
//! leaves KMS; the public key is given to anyone who asks, to verify
//! exports offline.

use crate::app::ports::PortError;
use crate::core::audit::Checkpoint;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::{MessageType, SigningAlgorithmSpec};
use aws_sdk_kms::Client;
use base64::Engine;

#[derive(Clone)]
pub struct AuditSigner {
    client: Client,
    key_id: String,
}

impl AuditSigner {
    /// `key_id`: the key's ARN (it is named in every checkpoint).
    pub fn new(client: Client, key_id: String) -> Self {
        AuditSigner { client, key_id }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs the checkpoint's message (ECDSA over SHA-256, KMS hashing the
    /// message) as this key: sets `key_id` and `signature` (DER, base64).
    pub async fn sign(&self, mut checkpoint: Checkpoint) -> Result<Checkpoint, PortError> {
        checkpoint.key_id = self.key_id.clone();
        let out = self
            .client
            .sign()
            .key_id(&self.key_id)
            .message(Blob::new(checkpoint.message().into_bytes()))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| PortError::unavailable("Sign", aws_sdk_kms::Error::from(e)))?;
        let der = out.signature.ok_or_else(|| PortError::Corrupt { key: self.key_id.clone(), why: "KMS answered without a signature".into() })?;
        checkpoint.signature = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        Ok(checkpoint)
    }

    /// The public key as PEM (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo).
    pub async fn public_key_pem(&self) -> Result<String, PortError> {
        let out = self.client.get_public_key().key_id(&self.key_id).send().await.map_err(|e| PortError::unavailable("GetPublicKey", aws_sdk_kms::Error::from(e)))?;
        let der = out.public_key.ok_or_else(|| PortError::Corrupt { key: self.key_id.clone(), why: "KMS answered without a public key".into() })?;
        Ok(pem("PUBLIC KEY", der.as_ref()))
    }
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let body: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).expect("base64 is ASCII")).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", body.join("\n"))
}

/// The token signing keys (`ECC_NIST_P256`, `SIGN_VERIFY`): the current one
/// signs member tokens and license files; it and the previous ones (kept
/// while tokens they signed may be unexpired) are published as a JWK Set.
#[derive(Clone)]
pub struct TokenKeys {
    client: Client,
    current: String,
    kid: String,
    published: Vec<String>,
    jwks: std::sync::Arc<std::sync::Mutex<Option<Vec<serde_json::Value>>>>,
}

impl TokenKeys {
    /// `current`, `previous`: the keys' ARNs.
    pub fn new(client: Client, current: String, previous: Vec<String>) -> Self {
        let kid = crate::core::token::kid_of(&current);
        let mut published = vec![current.clone()];
        published.extend(previous.into_iter().filter(|p| !p.is_empty() && *p != current));
        TokenKeys { client, current, kid, published, jwks: Default::default() }
    }

    /// The published keys as JWKs (read from KMS once per process: a key's
    /// public half never changes).
    pub async fn jwks(&self) -> Result<Vec<serde_json::Value>, PortError> {
        if let Some(keys) = self.jwks.lock().expect("not poisoned").clone() {
            return Ok(keys);
        }
        let mut keys = Vec::new();
        for arn in &self.published {
            let out = self.client.get_public_key().key_id(arn).send().await.map_err(|e| PortError::unavailable("GetPublicKey", aws_sdk_kms::Error::from(e)))?;
            let der = out.public_key.ok_or_else(|| PortError::Corrupt { key: arn.clone(), why: "KMS answered without a public key".into() })?;
            keys.push(crate::core::token::jwk(der.as_ref(), &crate::core::token::kid_of(arn)).map_err(|why| PortError::Corrupt { key: arn.clone(), why })?);
        }
        *self.jwks.lock().expect("not poisoned") = Some(keys.clone());
        Ok(keys)
    }
}

impl crate::app::ports::TokenSigner for TokenKeys {
    fn kid(&self) -> &str {
        &self.kid
    }

    async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, PortError> {
        let out = self
            .client
            .sign()
            .key_id(&self.current)
            .message(Blob::new(message.to_vec()))
            .message_type(MessageType::Raw)
            .signing_algorithm(SigningAlgorithmSpec::EcdsaSha256)
            .send()
            .await
            .map_err(|e| PortError::unavailable("Sign", aws_sdk_kms::Error::from(e)))?;
        Ok(out.signature.ok_or_else(|| PortError::Corrupt { key: self.current.clone(), why: "KMS answered without a signature".into() })?.into_inner())
    }
}

impl crate::app::ports::Signer for AuditSigner {
    async fn sign(&self, checkpoint: Checkpoint) -> Result<Checkpoint, PortError> {
        AuditSigner::sign(self, checkpoint).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pem_wraps_base64_at_64_columns() {
        let p = super::pem("PUBLIC KEY", &[0u8; 91]);
        let lines: Vec<&str> = p.lines().collect();
        assert_eq!(lines.first(), Some(&"-----BEGIN PUBLIC KEY-----"));
        assert_eq!(lines.last(), Some(&"-----END PUBLIC KEY-----"));
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.len(), 2 + 2);
    }
}
