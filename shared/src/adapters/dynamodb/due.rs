//! The sparse, sharded due index.
//!
//! Every item with a pending time-based transition (a license, a scheduled
//! amendment, a delivery record, a target to wake, a tenant's chain head
//! awaiting a signed checkpoint) carries `due_at` (epoch
//! seconds) and `due_shard`; the table's `due` index is keyed by
//! (`due_shard`, `due_at`). The shard is a hash of the item's key, so a
//! million licenses renewing on one date spread over all shards instead of
//! one hot partition; items with nothing due carry neither attribute and
//! are not in the index, so a sweep reads what is due and nothing else.

use super::*;
use crate::app::ports::{DueIndex, DueItem, DuePage};
use crate::core::ids::ContractId;
use aws_sdk_dynamodb::operation::query::QueryOutput;

/// Shards of the due index. More shards spread writes wider; a sweep reads
/// each shard once per page, so the fixed cost per run is this many queries.
pub const DUE_SHARDS: u32 = 16;
pub const DUE_INDEX: &str = "due";
const PAGE: i32 = 100;

/// The shard of an item: a stable hash (FNV-1a) of its key.
pub fn due_shard(pk: &str, sk: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in pk.bytes().chain([b'/']).chain(sk.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("DUE#{:02}", h % DUE_SHARDS)
}

/// The due attributes of an item, or none when nothing is pending.
pub fn due_attributes(pk: &str, sk: &str, due: Option<DateTime<Utc>>) -> Vec<(&'static str, AttributeValue)> {
    match due {
        Some(at) => vec![("due_at", n(at.timestamp())), ("due_shard", s(due_shard(pk, sk)))],
        None => vec![],
    }
}

/// What an index entry (keys only) is due for.
fn due_item(pk: &str, sk: &str, due_at: i64) -> Option<DueItem> {
    if let Some(t) = pk.strip_prefix("T#") {
        let tenant = TenantId::parse(t).ok()?;
        if let Some(rest) = sk.strip_prefix("LIC#") {
            let (source, license) = rest.split_once('#')?;
            let source = serde_json::from_value(serde_json::Value::String(source.to_string())).ok()?;
            return Some(DueItem::License { tenant, source, license: license.to_string(), due_at });
        }
        if sk.starts_with("TARGET#") {
            return Some(DueItem::Delivery { tenant, what: sk.to_string(), due_at });
        }
        if sk == "META" {
            return Some(DueItem::Checkpoint { tenant, due_at });
        }
        if sk == MODEL_DUE {
            return Some(DueItem::Model { tenant, due_at });
        }
        return None;
    }
    if let Some(rest) = pk.strip_prefix("S#") {
        let tenant = TenantId::parse(rest.split('#').next()?).ok()?;
        return Some(DueItem::Delivery { tenant, what: format!("{rest}/{sk}"), due_at });
    }
    if let Some(c) = pk.strip_prefix("C#") {
        return sk.starts_with("A#").then(|| ContractId::parse(c).ok()).flatten().map(|contract| DueItem::Amendment { contract, due_at });
    }
    None
}

impl Dynamo {
    /// One page of one shard of the due index, due at or before `as_of`.
    async fn due_query(&self, shard: u32, as_of: DateTime<Utc>, start: Option<Item>, limit: Option<i32>) -> Result<QueryOutput, PortError> {
        self.client
            .query()
            .table_name(&self.state)
            .index_name(DUE_INDEX)
            .key_condition_expression("due_shard = :s AND due_at <= :t")
            .expression_attribute_values(":s", s(format!("DUE#{shard:02}")))
            .expression_attribute_values(":t", n(as_of.timestamp()))
            .set_exclusive_start_key(start)
            .set_limit(limit)
            .send()
            .await
            .map_err(failed("Query"))
    }

    /// Counts what is due at `as_of` through the due index, all pages,
    /// without acting on it: (due items, index items read). For measuring.
    pub async fn count_due(&self, as_of: DateTime<Utc>) -> Result<(u64, u64), PortError> {
        let (mut due, mut read) = (0u64, 0u64);
        for shard in 0..DUE_SHARDS {
            let mut start = None;
            loop {
                let page = self.due_query(shard, as_of, start, None).await?;
                due += page.count.max(0) as u64;
                read += page.scanned_count.max(page.count).max(0) as u64;
                match page.last_evaluated_key {
                    Some(k) if !k.is_empty() => start = Some(k),
                    _ => break,
                }
            }
        }
        Ok((due, read))
    }
}

impl DueIndex for Dynamo {
    /// One page of every shard not walked to its end, due at or before
    /// `as_of`, oldest first.
    async fn due(&self, as_of: DateTime<Utc>, cursor: Option<&str>) -> Result<DuePage, PortError> {
        let mut shards = match cursor {
            None => vec![Walk::Start; DUE_SHARDS as usize],
            Some(c) => decode_cursor(c)?,
        };
        let mut out = Vec::new();
        let mut read = 0;
        for (shard, walk) in shards.iter_mut().enumerate() {
            let start = match walk {
                Walk::Done => continue,
                Walk::Start => None,
                Walk::After(key) => Some(key.clone()),
            };
            let page = self.due_query(shard as u32, as_of, start, Some(PAGE)).await?;
            read += page.scanned_count.max(page.count).max(0) as u64;
            for item in page.items.unwrap_or_default() {
                let due_at = get_n(&item, "due_at").map(|v| v as i64).unwrap_or(0);
                out.extend(due_item(get_s(&item, "pk").unwrap_or_default(), get_s(&item, "sk").unwrap_or_default(), due_at));
            }
            *walk = match page.last_evaluated_key {
                Some(k) if !k.is_empty() => Walk::After(k),
                _ => Walk::Done,
            };
        }
        out.sort_by_key(|d| (d.due_at(), d.key()));
        let next = shards.iter().any(|w| !matches!(w, Walk::Done)).then(|| encode_cursor(&shards));
        Ok(DuePage { items: out, read, next })
    }
}

/// Where the walk of one shard stands.
#[derive(Debug, Clone, PartialEq)]
enum Walk {
    Start,
    After(Item),
    Done,
}

/// A cursor: per shard, `null` (walked to its end), `{}` (not begun) or
/// the key to go on after (string and number attributes, as the index's
/// keys are).
fn encode_cursor(shards: &[Walk]) -> String {
    let each: Vec<serde_json::Value> = shards
        .iter()
        .map(|w| match w {
            Walk::Done => serde_json::Value::Null,
            Walk::Start => serde_json::json!({}),
            Walk::After(key) => key
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        AttributeValue::N(n) => serde_json::json!({"N": n}),
                        other => serde_json::json!({"S": other.as_s().cloned().unwrap_or_default()}),
                    };
                    (k.clone(), v)
                })
                .collect::<serde_json::Map<_, _>>()
                .into(),
        })
        .collect();
    serde_json::Value::Array(each).to_string()
}

fn decode_cursor(text: &str) -> Result<Vec<Walk>, PortError> {
    let corrupt = |why: &str| PortError::Corrupt { key: "due index cursor".into(), why: why.to_string() };
    let each: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| corrupt(&e.to_string()))?;
    if each.len() != DUE_SHARDS as usize {
        return Err(corrupt("not one entry per shard"));
    }
    each.into_iter()
        .map(|v| match v {
            serde_json::Value::Null => Ok(Walk::Done),
            serde_json::Value::Object(m) if m.is_empty() => Ok(Walk::Start),
            serde_json::Value::Object(m) => m
                .into_iter()
                .map(|(k, v)| match (v.get("N").and_then(|n| n.as_str()), v.get("S").and_then(|s| s.as_str())) {
                    (Some(n), _) => Ok((k, AttributeValue::N(n.to_string()))),
                    (None, Some(s)) => Ok((k, AttributeValue::S(s.to_string()))),
                    _ => Err(corrupt("a key attribute that is neither S nor N")),
                })
                .collect::<Result<Item, _>>()
                .map(Walk::After),
            _ => Err(corrupt("a shard entry that is neither null nor a key")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_names_where_each_shard_goes_on() {
        let key: Item = [("pk".to_string(), s("T#t1")), ("sk".to_string(), s("META")), ("due_shard".to_string(), s("DUE#03")), ("due_at".to_string(), n(1_795_000_000))].into_iter().collect();
        let mut shards = vec![Walk::Done; DUE_SHARDS as usize];
        shards[3] = Walk::After(key);
        shards[5] = Walk::Start;
        assert_eq!(decode_cursor(&encode_cursor(&shards)).unwrap(), shards);
        assert!(decode_cursor("[]").is_err(), "one entry per shard");
        assert!(decode_cursor("nonsense").is_err());
    }
}
