//! The outbox: the events of each commit (`OUTBOX` / `<tenant>#<seq>`),
//! until a publisher has put them on the bus.

use super::*;
use crate::app::ports::Outbox;
use serde_json::Value;

/// How long a publisher holds an outbox entry it is sending.
pub const CLAIM_SECS: i64 = 30;

impl Outbox for Dynamo {
    async fn entries(&self) -> Result<Vec<(String, Vec<Value>)>, PortError> {
        let items = self.query_partition("OUTBOX".into(), "").await?;
        Ok(items
            .iter()
            .filter_map(|i| {
                let events: Vec<Value> = get_s(i, "events").and_then(|e| serde_json::from_str(e).ok())?;
                Some((get_s(i, "sk")?.to_string(), events))
            })
            .collect())
    }

    async fn claim(&self, key: &str, now: DateTime<Utc>) -> Result<bool, PortError> {
        let res = self
            .client
            .update_item()
            .table_name(&self.state)
            .key("pk", s("OUTBOX"))
            .key("sk", s(key))
            .update_expression("SET claimed_until = :until")
            .condition_expression("attribute_exists(pk) AND (attribute_not_exists(claimed_until) OR claimed_until < :now)")
            .expression_attribute_values(":until", n(now.timestamp() + CLAIM_SECS))
            .expression_attribute_values(":now", n(now.timestamp()))
            .send()
            .await;
        condition_held("UpdateItem", res)
    }

    async fn published(&self, key: &str) -> Result<(), PortError> {
        self.client.delete_item().table_name(&self.state).key("pk", s("OUTBOX")).key("sk", s(key)).send().await.map_err(failed("DeleteItem"))?;
        Ok(())
    }
}
