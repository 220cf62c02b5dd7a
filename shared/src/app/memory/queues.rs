//! What falls due and what is queued, in memory: the due index, the
//! reconcile queue and the rollouts' work queue.

use super::Memory;
use crate::app::ports::*;
use crate::core::contract::AmendmentStatus;
use crate::core::reconcile::ReconcileRequest;
use crate::core::versions::Work;
use chrono::{DateTime, Utc};

impl DueIndex for Memory {
    /// Everything due in one page.
    async fn due(&self, as_of: DateTime<Utc>, cursor: Option<&str>) -> Result<DuePage, PortError> {
        if cursor.is_some() {
            return Ok(DuePage::default());
        }
        let db = self.db.lock().unwrap();
        let t = as_of.timestamp();
        let mut out = Vec::new();
        for ((tenant, source, id), at) in &db.license_due {
            if at.timestamp() <= t {
                out.push(DueItem::License { tenant: tenant.clone(), source: *source, license: id.clone(), due_at: at.timestamp() });
            }
        }
        for (tenant, at) in &db.model_due {
            if at.timestamp() <= t {
                out.push(DueItem::Model { tenant: tenant.clone(), due_at: at.timestamp() });
            }
        }
        for ((cid, _), (a, _)) in &db.amendments {
            if let Some(at) = a.effective_at.filter(|at| a.status == AmendmentStatus::Scheduled && at.timestamp() <= t) {
                out.push(DueItem::Amendment { contract: cid.clone(), due_at: at.timestamp() });
            }
        }
        for ((tenant, target, user), p) in &db.deliveries {
            if p.parked.is_none() {
                out.push(DueItem::Delivery { tenant: tenant.clone(), what: format!("{target}/{user}"), due_at: 0 });
            }
        }
        for ((tenant, id), x) in &db.targets {
            if x.wake_at().timestamp() <= t {
                out.push(DueItem::Delivery { tenant: tenant.clone(), what: format!("target/{id}"), due_at: x.wake_at().timestamp().max(0) });
            }
        }
        out.sort_by_key(|d| (d.due_at(), d.key()));
        let read = out.len() as u64;
        Ok(DuePage { items: out, read, next: None })
    }
}

impl Queue for Memory {
    async fn send(&self, request: &ReconcileRequest, dedup: &str) -> Result<(), PortError> {
        self.queued.lock().unwrap().push((request.clone(), dedup.to_string()));
        Ok(())
    }
}

impl WorkQueue for Memory {
    async fn send_work(&self, work: &Work) -> Result<(), PortError> {
        self.work_sent.lock().unwrap().push(work.clone());
        Ok(())
    }
}
