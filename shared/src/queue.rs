//! The reconcile queue: an SQS FIFO queue, one message group per tenant.

use crate::audit::Cause;
use crate::ids::TenantId;
use aws_sdk_sqs::Client;
use serde::{Deserialize, Serialize};

/// "Make this tenant's access equal its desired access." Level-triggered:
/// one more or one fewer of these never changes the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    pub tenant_id: TenantId,
    pub cause: Cause,
    /// SCIM targets to run drift repair on now (on demand), besides the
    /// delivery every message triggers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repair: Vec<crate::ids::TargetId>,
    /// A barrier, not a reconcile: provision records this mark on the
    /// tenant (`META.barrier`) and does nothing else. Messages of a tenant
    /// are processed in order, so once the mark is there every message
    /// queued for the tenant before it has been processed: an observable
    /// point to wait for ("provisioning has caught up"), for operators and
    /// tests alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barrier: Option<String>,
}

impl ReconcileRequest {
    pub fn new(tenant_id: TenantId, cause: Cause) -> Self {
        ReconcileRequest { tenant_id, cause, repair: Vec::new(), barrier: None }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("could not queue the reconcile of tenant {tenant}")]
pub struct QueueError {
    pub tenant: TenantId,
    #[source]
    pub source: aws_sdk_sqs::Error,
}

/// SQS deduplication ids allow 128 characters of `[A-Za-z0-9!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~]`.
pub fn dedup_id(parts: &[&str]) -> String {
    let raw = parts.join(":");
    let clean: String = raw.chars().map(|c| if c.is_ascii_graphic() { c } else { '_' }).collect();
    if clean.len() <= 128 {
        clean
    } else {
        crate::audit::hash_of(&clean)
    }
}

#[derive(Clone)]
pub struct ReconcileQueue {
    client: Client,
    url: String,
}

impl ReconcileQueue {
    pub fn new(client: Client, url: String) -> Self {
        ReconcileQueue { client, url }
    }

    /// Queues a reconcile; `dedup` makes redelivery of the same cause within
    /// SQS's five-minute window a no-op (and a reconcile is idempotent anyway).
    pub async fn send(&self, request: &ReconcileRequest, dedup: &str) -> Result<(), QueueError> {
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(serde_json::to_string(request).expect("serialisable"))
            .message_group_id(request.tenant_id.as_str())
            .message_deduplication_id(dedup_id(&[dedup]))
            .send()
            .await
            .map_err(|e| QueueError { tenant: request.tenant_id.clone(), source: e.into() })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_ids_are_valid_and_bounded() {
        assert_eq!(dedup_id(&["stripe", "evt_1"]), "stripe:evt_1");
        assert_eq!(dedup_id(&["a b"]), "a_b");
        assert_eq!(dedup_id(&[&"x".repeat(300)]).len(), 64);
    }
}
