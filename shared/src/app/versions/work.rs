//! Provision's part of a run: the tenants of a work message, several at
//! once, each rolled out or previewed, their outcomes settled together.

use super::previews::preview_one;
use super::rollouts::rollout_tenant;
use super::Step;
use crate::app::ports::{ModelRegistry, Models, PortError, Tenants};
use crate::app::Error;
use crate::core::ids::TenantId;
use crate::core::model::LicensingModel;
use crate::core::versions::{Outcome, OutcomeState, RunKind, Work, MAX_ATTEMPTS};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

/// What provision did with a work message.
#[derive(Debug, Default)]
pub struct WorkReport {
    /// Tenants whose members changed, for their SCIM targets.
    pub changed: Vec<TenantId>,
    pub settled: usize,
    /// What is left (out of time, or failed and tried again): the next message.
    pub rest: Option<Work>,
}

/// Provision's part of a rollout or preview: the tenants of the message,
/// `at_once` at a time, until `stop_at`; their outcomes settled together
/// at the end (one transaction per 99, not two requests per tenant). A
/// tenant that fails is tried again in the next message, and after
/// [`MAX_ATTEMPTS`] recorded as failed with its cause; the others go on. A
/// tenant whose walk runs out of time goes on in the next message from
/// where its walk stands. A crash before the settlement leaves the message
/// to be received again: its tenants are worked again, which moves none twice.
pub async fn work<S: Tenants + Models + ModelRegistry>(store: &S, work: &Work, now: DateTime<Utc>, stop_at: Instant, at_once: usize) -> Result<WorkReport, Error> {
    use futures_util::stream::{self, StreamExt};
    let mut report = WorkReport::default();
    let Some(run) = store.run(&work.run).await? else {
        tracing::warn!(run = %work.run, "work for a run that does not exist: dropped");
        return Ok(report);
    };
    let mut rest = Work { run: work.run.clone(), tenants: Vec::new(), due: work.due, attempts: BTreeMap::new() };
    let candidate = match &run.spec.kind {
        RunKind::Preview { candidate: Some(text), .. } => {
            Some(Arc::new(LicensingModel::from_toml(text, "candidate").map_err(|e| PortError::Corrupt { key: format!("preview {}", run.spec.id), why: e.to_string() })?))
        }
        _ => None,
    };
    let run = &run;
    let results: Vec<(TenantId, Option<Result<Step, Error>>)> = stream::iter(&work.tenants)
        .map(|tenant| {
            let candidate = candidate.clone();
            async move {
                if Instant::now() >= stop_at {
                    return (tenant.clone(), None);
                }
                let result = match &run.spec.kind {
                    RunKind::Rollout { .. } => rollout_tenant(store, run, tenant, work.due, now, stop_at).await,
                    RunKind::Preview { to, .. } => preview_one(store, run, to, candidate, tenant, now).await,
                };
                (tenant.clone(), Some(result))
            }
        })
        .buffer_unordered(at_once.max(1))
        .collect()
        .await;
    let mut settling = Vec::new();
    for (tenant, result) in results {
        match result {
            None => {
                if let Some(a) = work.attempts.get(&tenant) {
                    rest.attempts.insert(tenant.clone(), *a);
                }
                rest.tenants.push(tenant);
            }
            Some(Ok(Step::Settled(outcome, changed))) => {
                if changed {
                    report.changed.push(tenant);
                }
                settling.push(outcome);
            }
            Some(Ok(Step::More)) => {
                report.changed.push(tenant.clone());
                rest.tenants.push(tenant);
            }
            Some(Err(e)) => {
                let attempts = work.attempts.get(&tenant).copied().unwrap_or(0) + 1;
                tracing::warn!(run = %run.spec.id, tenant = %tenant, attempts, error = %crate::app::error_chain(&e), "a tenant of a run failed");
                if attempts >= MAX_ATTEMPTS {
                    settling.push(Outcome {
                        tenant_id: tenant,
                        state: OutcomeState::Failed,
                        from: None,
                        reason: Some(crate::app::error_chain(&e)),
                        waits_until: None,
                        members_changed: 0,
                        preview: None,
                        at: now,
                    });
                } else {
                    rest.attempts.insert(tenant.clone(), attempts);
                    rest.tenants.push(tenant);
                }
            }
        }
    }
    report.settled = store.settle(&run.spec.id, &settling).await?;
    if !rest.tenants.is_empty() {
        rest.tenants.sort();
        report.rest = Some(rest);
    }
    Ok(report)
}
