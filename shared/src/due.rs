//! Time-based work that runs "as of" an explicit instant, never the wall
//! clock: the code path the expiry sweep calls, and tests drive directly.

use crate::audit::{Cause, CauseKind};
use crate::contract::Amendment;
use crate::ids::ContractId;
use crate::queue::{QueueError, ReconcileQueue, ReconcileRequest};
use crate::store::{Store, StoreError};
use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum DueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Applies the contract's amendments that are due at `as_of` and queues a
/// reconcile of its tenant for each one applied, so that access follows.
pub async fn apply_due_amendments(store: &Store, queue: &ReconcileQueue, contract: &ContractId, as_of: DateTime<Utc>, run_id: &str) -> Result<Vec<Amendment>, DueError> {
    let done = store.apply_due_amendments(contract, as_of, run_id).await?;
    for a in &done {
        if let Some(version) = a.applied_version.filter(|_| a.status == crate::contract::AmendmentStatus::Applied) {
            let request = ReconcileRequest::new(a.tenant_id.clone(), Cause::new(CauseKind::Sweep, run_id));
            queue.send(&request, &format!("contract:{contract}:v{version}")).await?;
        }
    }
    Ok(done)
}
