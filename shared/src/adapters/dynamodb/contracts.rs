//! Contracts' reads: current document, history, amendments.

use super::*;
use crate::app::ports::Contracts;
use crate::core::contract::{Amendment, ClauseChange, ContractDocument, ContractState};
use crate::core::ids::{AmendmentId, ContractId};
use serde_json::{json, Value};

impl Contracts for Dynamo {
    async fn contract(&self, id: &ContractId) -> Result<Option<ContractState>, PortError> {
        let Some(meta) = self.get(contract_pk(id), "META".into()).await? else { return Ok(None) };
        let tenant = TenantId::parse(get_s(&meta, "tenant_id").unwrap_or_default()).map_err(|e| PortError::Corrupt { key: contract_pk(id), why: e.to_string() })?;
        let key = format!("CONTRACT#{id}");
        let Some(item) = self.get(tenant_pk(&tenant), key.clone()).await? else { return Ok(None) };
        let document: Value = required(&item, "document", &key)?;
        let doc: ContractDocument = serde_json::from_value(document.clone()).map_err(|e| PortError::Corrupt { key: key.clone(), why: e.to_string() })?;
        Ok(Some(ContractState { tenant_id: tenant, version: get_n(&item, "version").unwrap_or(0), document, doc }))
    }

    async fn contract_body_hash(&self, id: &ContractId) -> Result<Option<String>, PortError> {
        Ok(self.get(contract_pk(id), "META".into()).await?.as_ref().and_then(|i| get_s(i, "body_hash")).map(str::to_string))
    }

    async fn contract_history(&self, id: &ContractId) -> Result<Vec<Value>, PortError> {
        let items = self.query_partition(contract_pk(id), "V#").await?;
        Ok(items
            .iter()
            .map(|i| {
                let changes: Vec<ClauseChange> = get_s(i, "changes").and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
                json!({
                    "version": get_n(i, "version"),
                    "cause": get_s(i, "cause"),
                    "at": get_s(i, "at"),
                    "changes": changes.iter().map(|c| c.summary.clone()).collect::<Vec<_>>(),
                })
            })
            .collect())
    }

    async fn amendment(&self, id: &ContractId, aid: &AmendmentId) -> Result<Option<(Amendment, String)>, PortError> {
        let key = format!("{}/A#{aid}", contract_pk(id));
        match self.get(contract_pk(id), format!("A#{aid}")).await? {
            None => Ok(None),
            Some(item) => Ok(Some((required(&item, "amendment", &key)?, get_s(&item, "body_hash").unwrap_or_default().to_string()))),
        }
    }

    async fn scheduled_amendments(&self, id: &ContractId) -> Result<Vec<Amendment>, PortError> {
        let items = self.query_partition(contract_pk(id), "A#").await?;
        let mut out: Vec<Amendment> = items.iter().filter(|i| get_s(i, "status") == Some("scheduled")).filter_map(|i| get_s(i, "amendment").and_then(|a| serde_json::from_str(a).ok())).collect();
        out.sort_by(|a: &Amendment, b: &Amendment| a.effective_at.cmp(&b.effective_at).then_with(|| a.amendment_id.cmp(&b.amendment_id)));
        Ok(out)
    }
}

/// The review index's one partition (`review_queue`).
pub(crate) const REVIEW_QUEUE: &str = "pending_review";

impl Dynamo {
    /// Amendments waiting for review, across tenants, oldest first (the
    /// sparse `review` index: no scan), at most `limit`.
    pub async fn pending_reviews(&self, limit: usize) -> Result<Vec<Amendment>, PortError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.state)
                .index_name("review")
                .key_condition_expression("review_queue = :q")
                .expression_attribute_values(":q", s(REVIEW_QUEUE))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(failed("Query"))?;
            for item in page.items() {
                let key = format!("{}/{}", get_s(item, "pk").unwrap_or_default(), get_s(item, "sk").unwrap_or_default());
                out.push(required::<Amendment>(item, "amendment", &key)?);
            }
            start = page.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() || out.len() >= limit {
                out.truncate(limit);
                return Ok(out);
            }
        }
    }
}
