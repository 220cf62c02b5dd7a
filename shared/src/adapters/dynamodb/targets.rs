//! SCIM targets and their delivery records (`S#<tenant>#<target>`): the
//! reads, and the single-item writes that need no audit record. A delivery
//! record holds the member's latest state and the sequence number of the
//! change that wrote it; delivery removes it only if no newer change
//! replaced it meanwhile.

use super::*;
use crate::app::ports::Targets;
use crate::core::scim::MAX_REFUSALS;

impl Targets for Dynamo {
    async fn targets(&self, tenant: &TenantId) -> Result<Vec<Target>, PortError> {
        let mut out = Vec::new();
        for item in self.query_partition(tenant_pk(tenant), "TARGET#").await? {
            let key = format!("{}/{}", tenant_pk(tenant), get_s(&item, "sk").unwrap_or_default());
            out.extend(target_from_item(&item, &key)?);
        }
        Ok(out)
    }

    async fn pending(&self, tenant: &TenantId, target: &TargetId) -> Result<Vec<Pending>, PortError> {
        let pk = sync_pk(tenant, target);
        let mut out = Vec::new();
        for item in self.query_partition(pk.clone(), "").await? {
            out.push(pending_from_item(&item, &format!("{pk}/{}", get_s(&item, "sk").unwrap_or_default()))?);
        }
        Ok(out)
    }

    async fn delivered(&self, tenant: &TenantId, target: &TargetId, user: &UserId, seq: u64) -> Result<bool, PortError> {
        let res = self
            .client
            .delete_item()
            .table_name(&self.state)
            .key("pk", s(sync_pk(tenant, target)))
            .key("sk", s(user.as_str()))
            .condition_expression("seq = :seq")
            .expression_attribute_values(":seq", n(seq))
            .send()
            .await;
        condition_held("DeleteItem", res)
    }

    /// Counted, and after [`MAX_REFUSALS`] parked with its reason (out of
    /// the due index) until the member changes again.
    async fn refused(&self, tenant: &TenantId, target: &TargetId, pending: &Pending, reason: &str) -> Result<bool, PortError> {
        let refusals = pending.refusals + 1;
        let update = self
            .client
            .update_item()
            .table_name(&self.state)
            .key("pk", s(sync_pk(tenant, target)))
            .key("sk", s(pending.member.user_id.as_str()))
            .condition_expression("seq = :seq")
            .expression_attribute_values(":seq", n(pending.seq))
            .expression_attribute_values(":r", n(refusals))
            .expression_attribute_values(":e", s(reason.chars().take(500).collect::<String>()));
        let update = if refusals >= MAX_REFUSALS {
            update.update_expression("SET refusals = :r, last_error = :e, parked = :e REMOVE due_at, due_shard")
        } else {
            update.update_expression("SET refusals = :r, last_error = :e")
        };
        condition_held("UpdateItem", update.send().await)
    }

    async fn save_health(&self, tenant: &TenantId, target: &Target) -> Result<bool, PortError> {
        let u = self.target_update(tenant, target, false).update.expect("an update");
        let res = self
            .client
            .update_item()
            .table_name(u.table_name)
            .set_key(Some(u.key))
            .update_expression(u.update_expression)
            .set_condition_expression(u.condition_expression)
            .set_expression_attribute_values(u.expression_attribute_values)
            .send()
            .await;
        condition_held("UpdateItem", res)
    }

    async fn drop_deliveries(&self, tenant: &TenantId, target: &TargetId) -> Result<usize, PortError> {
        let pk = sync_pk(tenant, target);
        let mut dropped = 0;
        for item in self.query_partition(pk.clone(), "").await? {
            let Some(sk) = get_s(&item, "sk") else { continue };
            self.client.delete_item().table_name(&self.state).key("pk", s(pk.clone())).key("sk", s(sk)).send().await.map_err(failed("DeleteItem"))?;
            dropped += 1;
        }
        Ok(dropped)
    }
}
