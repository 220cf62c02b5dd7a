//! Signed checkpoints of the audit chains: `CP#<tenant>` / `<seq, 20
//! digits>`, a partition of their own (a tenant's partition is read whole
//! and would grow with them). A tenant's `META` is in the due index while
//! its head has moved since its last checkpoint ([`super::commit`] marks
//! it, [`Checkpoints::checkpointed`] clears it).

use super::*;
use crate::app::ports::Checkpoints;
use crate::core::audit::Checkpoint;

pub(crate) fn checkpoints_pk(tenant: &str) -> String {
    format!("CP#{tenant}")
}

fn checkpoint_sk(seq: u64) -> String {
    format!("{seq:020}")
}

impl Checkpoints for Dynamo {
    async fn put_checkpoint(&self, c: &Checkpoint) -> Result<(), PortError> {
        let put = self
            .client
            .put_item()
            .table_name(&self.state)
            .item("pk", s(checkpoints_pk(&c.tenant_id)))
            .item("sk", s(checkpoint_sk(c.seq)))
            .item("checkpoint", s(to_json(c)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        condition_held("PutItem", put).map(|_| ())
    }

    async fn checkpointed(&self, tenant: &TenantId, seq: u64, again_at: DateTime<Utc>) -> Result<bool, PortError> {
        let update = self
            .client
            .update_item()
            .table_name(&self.state)
            .key("pk", s(tenant_pk(tenant)))
            .key("sk", s("META"))
            .update_expression("REMOVE due_at, due_shard SET checkpoint_seq = :seq")
            .condition_expression("audit_seq = :seq")
            .expression_attribute_values(":seq", n(seq))
            .send()
            .await;
        if condition_held("UpdateItem", update)? {
            return Ok(true);
        }
        // The head moved on meanwhile: its next checkpoint is an interval
        // away (a busy tenant is signed once an interval, not every run).
        let later = self
            .client
            .update_item()
            .table_name(&self.state)
            .key("pk", s(tenant_pk(tenant)))
            .key("sk", s("META"))
            .update_expression("SET due_at = :later, checkpoint_seq = :seq")
            .condition_expression("attribute_exists(due_at) AND audit_seq <> :seq")
            .expression_attribute_values(":later", n(again_at.timestamp()))
            .expression_attribute_values(":seq", n(seq))
            .send()
            .await;
        condition_held("UpdateItem", later)?;
        Ok(false)
    }

    async fn checkpoints(&self, tenant: &TenantId, from: u64, to: u64) -> Result<Vec<Checkpoint>, PortError> {
        let pk = checkpoints_pk(tenant.as_str());
        let query = self
            .client
            .query()
            .table_name(&self.state)
            .key_condition_expression("pk = :pk AND sk BETWEEN :from AND :to")
            .expression_attribute_values(":pk", s(pk.clone()))
            .expression_attribute_values(":from", s(checkpoint_sk(from)))
            .expression_attribute_values(":to", s(checkpoint_sk(to)))
            .consistent_read(true);
        all_items(query).await?.iter().map(|item| required(item, "checkpoint", &format!("{pk}/{}", get_s(item, "sk").unwrap_or_default()))).collect()
    }
}
