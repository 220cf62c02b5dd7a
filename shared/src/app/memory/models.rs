//! Licensing model versions in memory: their rules ([`Models`]), the
//! registry, and rollouts and previews with their outcomes.

use super::Memory;
use crate::app::ports::*;
use crate::core::ids::{ModelVersion, RunId, TenantId};
use crate::core::model::LicensingModel;
use crate::core::versions::{Outcome, OutcomeState, PreviewPage, Registered, Registration, RunState};
use std::sync::Arc;

impl Memory {
    /// One outcome of [`ModelRegistry::settle`].
    fn settle_one(&self, run: &RunId, outcome: &Outcome) -> bool {
        let mut db = self.db.lock().unwrap();
        let key = (run.clone(), outcome.tenant_id.clone());
        let before = db.outcomes.get(&key).map(|o| o.state);
        if before.is_some_and(|s| s != OutcomeState::Waiting) {
            return false;
        }
        let Some(r) = db.runs.get_mut(run) else { return false };
        let c = &mut r.counts;
        if before == Some(OutcomeState::Waiting) {
            c.waiting -= 1;
        }
        match outcome.state {
            OutcomeState::Done => c.done += 1,
            OutcomeState::Waiting => c.waiting += 1,
            OutcomeState::Skipped => c.skipped += 1,
            OutcomeState::Failed => c.failed += 1,
        }
        c.members_changed += outcome.members_changed;
        if let Some(p) = &outcome.preview {
            c.preview.add(p);
        }
        db.outcomes.insert(key, outcome.clone());
        true
    }
}

impl Models for Memory {
    async fn rules(&self, version: &ModelVersion) -> Result<Option<Arc<LicensingModel>>, PortError> {
        if let Some(m) = self.parsed.lock().unwrap().get(version) {
            return Ok(Some(m.clone()));
        }
        let registered = self.db.lock().unwrap().registry.iter().find(|r| &r.version == version).cloned();
        let Some(r) = registered else { return Ok((version == &self.model.version).then(|| self.model.clone())) };
        let model = if r.fingerprint == self.model.fingerprint() && r.version == self.model.version {
            self.model.clone()
        } else {
            Arc::new(LicensingModel::from_toml(&r.text, &format!("registered {version}")).map_err(|e| PortError::Corrupt { key: format!("model {version}"), why: e.to_string() })?)
        };
        self.parsed.lock().unwrap().insert(version.clone(), model.clone());
        Ok(Some(model))
    }

    async fn latest(&self) -> Result<Arc<LicensingModel>, PortError> {
        let latest = self.db.lock().unwrap().registry.last().map(|r| r.version.clone());
        match latest {
            Some(v) => Ok(self.rules(&v).await?.expect("a registered version")),
            None => Ok(self.model.clone()),
        }
    }
}

impl ModelRegistry for Memory {
    async fn register(&self, model: &Registered) -> Result<Registration, PortError> {
        let mut db = self.db.lock().unwrap();
        if let Some(r) = db.registry.iter().find(|r| r.version == model.version) {
            return Ok(if r.fingerprint == model.fingerprint { Registration::Known } else { Registration::Conflict { registered: r.fingerprint.clone() } });
        }
        let seq = db.registry.len() as u64 + 1;
        db.registry.push(Registered { seq, ..model.clone() });
        Ok(Registration::New { seq })
    }

    async fn registered(&self) -> Result<Vec<Registered>, PortError> {
        Ok(self.db.lock().unwrap().registry.clone())
    }

    async fn tenants_following(&self, version: &ModelVersion, after: Option<&str>, limit: usize) -> Result<TenantPage, PortError> {
        let db = self.db.lock().unwrap();
        let all: Vec<(TenantId, Option<String>)> =
            db.meta.iter().filter(|(t, m)| &m.model_version == version && after.is_none_or(|a| t.as_str() > a)).map(|(t, m)| (t.clone(), m.access.as_ref().map(|a| a.tier.clone()))).collect();
        let more = all.len() > limit;
        let tenants: Vec<_> = all.into_iter().take(limit.max(1)).collect();
        let next = if more { tenants.last().map(|(t, _)| t.to_string()) } else { None };
        Ok(TenantPage { tenants, next })
    }

    async fn count_following(&self, version: &ModelVersion) -> Result<u64, PortError> {
        Ok(self.db.lock().unwrap().meta.values().filter(|m| &m.model_version == version).count() as u64)
    }

    /// Every tenant in memory has its version: nothing to give.
    async fn backfill(&self, _first: &ModelVersion, _after: Option<&str>, _limit: usize) -> Result<(usize, Option<String>), PortError> {
        Ok((0, None))
    }

    async fn backfill_cursor(&self) -> Result<Option<Option<String>>, PortError> {
        let db = self.db.lock().unwrap();
        Ok((!db.backfilled && !db.registry.is_empty()).then_some(None))
    }

    async fn set_backfill_cursor(&self, cursor: Option<Option<String>>) -> Result<(), PortError> {
        self.db.lock().unwrap().backfilled = cursor.is_none();
        Ok(())
    }

    async fn create_run(&self, run: &RunState) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        if db.runs.contains_key(&run.spec.id) {
            return Ok(false);
        }
        db.runs.insert(run.spec.id.clone(), run.clone());
        Ok(true)
    }

    async fn run(&self, id: &RunId) -> Result<Option<RunState>, PortError> {
        Ok(self.db.lock().unwrap().runs.get(id).cloned())
    }

    async fn runs(&self) -> Result<Vec<RunState>, PortError> {
        let mut runs: Vec<RunState> = self.db.lock().unwrap().runs.values().cloned().collect();
        runs.sort_by(|a, b| b.spec.created_at.cmp(&a.spec.created_at).then_with(|| b.spec.id.cmp(&a.spec.id)));
        Ok(runs)
    }

    async fn advance_run(&self, run: &RunState) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        let Some(held) = db.runs.get_mut(&run.spec.id) else { return Ok(false) };
        if held.rev != run.rev {
            return Ok(false);
        }
        held.status = run.status;
        held.cursor = run.cursor.clone();
        held.queued = run.queued;
        held.finished_at = run.finished_at;
        held.rev += 1;
        Ok(true)
    }

    async fn settle(&self, run: &RunId, outcomes: &[Outcome]) -> Result<usize, PortError> {
        let mut settled = 0;
        for outcome in outcomes {
            settled += usize::from(self.settle_one(run, outcome));
        }
        Ok(settled)
    }

    async fn outcomes_of(&self, run: &RunId, tenants: &[TenantId]) -> Result<Vec<Option<Outcome>>, PortError> {
        let db = self.db.lock().unwrap();
        Ok(tenants.iter().map(|t| db.outcomes.get(&(run.clone(), t.clone())).cloned()).collect())
    }

    async fn outcomes(&self, run: &RunId, after: Option<&TenantId>, limit: usize) -> Result<(Vec<Outcome>, bool), PortError> {
        let db = self.db.lock().unwrap();
        let all: Vec<Outcome> = db.outcomes.iter().filter(|((r, t), _)| r == run && after.is_none_or(|a| t > a)).map(|(_, o)| o.clone()).collect();
        let more = all.len() > limit;
        Ok((all.into_iter().take(limit).collect(), more))
    }

    async fn put_preview(&self, run: &RunId, pages: &[PreviewPage]) -> Result<(), PortError> {
        let mut db = self.db.lock().unwrap();
        for p in pages {
            db.preview_pages.insert((run.clone(), p.tenant_id.clone(), p.page), p.clone());
        }
        Ok(())
    }

    async fn preview_page(&self, run: &RunId, tenant: &TenantId, page: u32) -> Result<Option<PreviewPage>, PortError> {
        Ok(self.db.lock().unwrap().preview_pages.get(&(run.clone(), tenant.clone(), page)).cloned())
    }
}
