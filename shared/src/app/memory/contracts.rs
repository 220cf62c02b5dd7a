//! [`Contracts`] in memory: documents, their versions and amendments.

use super::Memory;
use crate::app::ports::*;
use crate::core::contract::{Amendment, AmendmentStatus, ContractState};
use crate::core::ids::{AmendmentId, ContractId};
use serde_json::Value;

impl Contracts for Memory {
    async fn contract(&self, id: &ContractId) -> Result<Option<ContractState>, PortError> {
        let db = self.db.lock().unwrap();
        let (Some((tenant, _)), Some((version, document))) = (db.contracts.get(id), db.documents.get(id)) else { return Ok(None) };
        let doc = serde_json::from_value(document.clone()).map_err(|e| PortError::Corrupt { key: id.to_string(), why: e.to_string() })?;
        Ok(Some(ContractState { tenant_id: tenant.clone(), version: *version, document: document.clone(), doc }))
    }

    async fn contract_body_hash(&self, id: &ContractId) -> Result<Option<String>, PortError> {
        Ok(self.db.lock().unwrap().contracts.get(id).map(|(_, h)| h.clone()))
    }

    async fn contract_history(&self, id: &ContractId) -> Result<Vec<Value>, PortError> {
        Ok(self.db.lock().unwrap().versions.iter().filter(|((c, _), _)| c == id).map(|(_, v)| v.clone()).collect())
    }

    async fn amendment(&self, id: &ContractId, aid: &AmendmentId) -> Result<Option<(Amendment, String)>, PortError> {
        Ok(self.db.lock().unwrap().amendments.get(&(id.clone(), aid.clone())).cloned())
    }

    async fn scheduled_amendments(&self, id: &ContractId) -> Result<Vec<Amendment>, PortError> {
        let db = self.db.lock().unwrap();
        let mut out: Vec<Amendment> = db.amendments.iter().filter(|((c, _), (a, _))| c == id && a.status == AmendmentStatus::Scheduled).map(|(_, (a, _))| a.clone()).collect();
        out.sort_by(|a, b| a.effective_at.cmp(&b.effective_at).then_with(|| a.amendment_id.cmp(&b.amendment_id)));
        Ok(out)
    }
}
