//! A tenant's state and audit chain: the reads, the one commit, and the
//! few single-item writes that need no audit record.

use super::*;
use crate::app::ports::{Change, CommitError, LicenseRead, Tenants};
use crate::core::audit::{PendingRecord, StoredRecord};
use crate::core::contract::ContractDocument;
use crate::core::ids::EventId;
use crate::core::license::License;
use crate::core::seats::SeatList;
use crate::core::tenant::{MemberItem, TenantHead, TenantState};
use serde_json::Value;

impl Dynamo {
    /// The tenant's `META` and more items (their keys given), in one
    /// `TransactGetItems` (consistent, and all as of one instant).
    pub(crate) async fn get_with_meta(&self, tenant: &TenantId, keys: &[(String, String)]) -> Result<(Option<TenantMeta>, Vec<Option<Item>>), PortError> {
        use aws_sdk_dynamodb::types::{Get, TransactGetItem};
        let get = |pk: &str, sk: &str| TransactGetItem::builder().get(Get::builder().table_name(&self.state).key("pk", s(pk)).key("sk", s(sk)).build().expect("table, key set")).build();
        let mut req = self.client.transact_get_items().transact_items(get(&tenant_pk(tenant), "META"));
        for (pk, sk) in keys {
            req = req.transact_items(get(pk, sk));
        }
        let out = req.send().await.map_err(failed("TransactGetItems"))?;
        let legacy = self.legacy().await?;
        let mut items = out.responses.unwrap_or_default().into_iter().map(|r| r.item);
        let meta = items.next().flatten().map(|m| meta_from_item(&m, &format!("{}/META", tenant_pk(tenant)), &legacy)).transpose()?;
        Ok((meta, items.collect()))
    }

    async fn get_both(&self, tenant: &TenantId, sk: &str) -> Result<(Option<TenantMeta>, Option<Item>), PortError> {
        let (meta, mut items) = self.get_with_meta(tenant, &[(tenant_pk(tenant), sk.to_string())]).await?;
        Ok((meta, items.pop().flatten()))
    }
}

/// A member item as stored. One written before seats were sticky has its
/// place in the seat order from its creation, and revision 0; one written
/// before versions were kept had its access decided under `legacy` (the
/// first registered version).
pub(crate) fn member_from_item(item: &Item, key: &str, legacy: &ModelVersion) -> Result<MemberItem, PortError> {
    let member: crate::core::access::Member = required(item, "member", key)?;
    let seat = json_attr(item, "seat", key)?.unwrap_or_else(|| crate::core::seats::Seat::new(member.seq));
    Ok(MemberItem { access: required(item, "access", key)?, seat, rev: get_n(item, "rev").unwrap_or(0), link: json_attr(item, "link", key)?, member, model_version: version_of(item, key, legacy)? })
}

/// A tenant's items, sorted out: its head (if it has a `META`) and its members.
struct Parts {
    head: Option<TenantHead>,
    members: Vec<MemberItem>,
}

impl Dynamo {
    async fn parts(&self, tenant: &TenantId, items: Vec<Item>) -> Result<Parts, PortError> {
        let legacy = self.legacy().await?;
        let (mut meta, mut licenses, mut members, mut contracts, mut targets, mut pending_audit) = (None, Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for item in items {
            let sk = get_s(&item, "sk").unwrap_or_default();
            let key = format!("{}/{sk}", tenant_pk(tenant));
            if sk == "META" {
                meta = Some(meta_from_item(&item, &key, &legacy)?);
            } else if sk.starts_with("LIC#") {
                licenses.extend(json_attr::<License>(&item, "license", &key)?);
            } else if sk.starts_with("MEM#") {
                members.push(member_from_item(&item, &key, &legacy)?);
            } else if sk.starts_with("CONTRACT#") {
                let doc: ContractDocument = required(&item, "document", &key)?;
                contracts.push((doc, get_n(&item, "version").unwrap_or(0)));
            } else if sk.starts_with("TARGET#") {
                targets.extend(target_from_item(&item, &key)?);
            } else if sk.starts_with("AQ#") {
                pending_audit.push(pending_from(&item, &key)?);
            }
        }
        // The partition is read in key order: pending records are in theirs.
        Ok(Parts { head: meta.map(|meta| TenantHead { meta, licenses, contracts, targets, pending_audit }), members })
    }
}

/// A pending audit record as stored.
fn pending_from(item: &Item, key: &str) -> Result<PendingRecord, PortError> {
    let sk = get_s(item, "sk").unwrap_or_default();
    let mut event: crate::core::audit::AuditEvent = required(item, "event", key)?;
    event.announce = json_attr(item, "announce", key)?;
    Ok(PendingRecord { key: sk.trim_start_matches("AQ#").to_string(), at: get_s(item, "at").unwrap_or_default().to_string(), event })
}

impl Tenants for Dynamo {
    async fn meta(&self, tenant: &TenantId) -> Result<Option<TenantMeta>, PortError> {
        let key = format!("{}/META", tenant_pk(tenant));
        let item = self.get(tenant_pk(tenant), "META".into()).await?;
        let legacy = self.legacy().await?;
        item.map(|i| meta_from_item(&i, &key, &legacy)).transpose()
    }

    /// One query of the tenant's partition, read consistently.
    async fn tenant(&self, tenant: &TenantId) -> Result<Option<TenantState>, PortError> {
        let parts = self.parts(tenant, self.query_partition(tenant_pk(tenant), "").await?).await?;
        Ok(parts.head.map(|h| TenantState { meta: h.meta, licenses: h.licenses, members: parts.members, contracts: h.contracts, targets: h.targets, pending_audit: h.pending_audit }))
    }

    /// Two queries of the partition, around its members: the keys before
    /// `MEM#` (pending audit records, contracts, licenses) and from `META`
    /// on (`META`, targets). The pending records come first (`AQ#` sorts
    /// before `CONTRACT#` and `LIC#`): the first query reads at most a page
    /// of them; when its page ends among them, the rest wait for a later
    /// read and a third query reads the contracts and licenses after them.
    async fn tenant_head(&self, tenant: &TenantId) -> Result<Option<TenantHead>, PortError> {
        let query =
            |condition: &'static str| self.client.query().table_name(&self.state).key_condition_expression(condition).expression_attribute_values(":pk", s(tenant_pk(tenant))).consistent_read(true);
        let before_members = query("pk = :pk AND sk < :b").expression_attribute_values(":b", s("MEM#"));
        let first = before_members.clone().limit(i32::try_from(self.pending_page).unwrap_or(i32::MAX)).send().await.map_err(failed("Query"))?;
        let mut items = first.items.unwrap_or_default();
        match first.last_evaluated_key.filter(|k| !k.is_empty()) {
            None => {}
            // More pending records may follow: the keys after every one of them ("AQ$" > "AQ#…").
            Some(k) if get_s(&k, "sk").is_some_and(|sk| sk.starts_with("AQ#")) => {
                let after_pending = query("pk = :pk AND sk BETWEEN :a AND :b").expression_attribute_values(":a", s("AQ$")).expression_attribute_values(":b", s("MEM#"));
                items.extend(all_items(after_pending).await?);
            }
            Some(k) => items.extend(all_items(before_members.set_exclusive_start_key(Some(k))).await?),
        }
        items.extend(all_items(query("pk = :pk AND sk >= :b").expression_attribute_values(":b", s("META"))).await?);
        Ok(self.parts(tenant, items).await?.head)
    }

    async fn members_page(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> Result<(Vec<MemberItem>, Option<String>), PortError> {
        let pk = tenant_pk(tenant);
        let (items, next) = self.query_page(pk.clone(), "MEM#", after.map(str::to_string), limit).await?;
        let legacy = self.legacy().await?;
        let members = items.iter().map(|i| member_from_item(i, &format!("{pk}/{}", get_s(i, "sk").unwrap_or_default()), &legacy)).collect::<Result<Vec<_>, _>>()?;
        Ok((members, next))
    }

    async fn seat_order(&self, tenant: &TenantId, list: SeatList, from_end: bool, limit: usize) -> Result<Vec<MemberItem>, PortError> {
        let out = self
            .client
            .query()
            .table_name(&self.state)
            .index_name("seats")
            .key_condition_expression("seat_list = :l")
            .expression_attribute_values(":l", s(format!("{}{tenant}", list.prefix())))
            .scan_index_forward(!from_end)
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(failed("Query"))?;
        let legacy = self.legacy().await?;
        out.items.unwrap_or_default().iter().map(|i| member_from_item(i, &format!("{}/{}", tenant_pk(tenant), get_s(i, "sk").unwrap_or_default()), &legacy)).collect()
    }

    async fn seat_order_page(&self, tenant: &TenantId, list: SeatList, after: Option<&str>, limit: usize) -> Result<(Vec<MemberItem>, Option<String>), PortError> {
        let seat_list = format!("{}{tenant}", list.prefix());
        let mut query = self
            .client
            .query()
            .table_name(&self.state)
            .index_name("seats")
            .key_condition_expression("seat_list = :l")
            .expression_attribute_values(":l", s(&seat_list))
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX));
        if let Some(order) = after {
            // The order key ends with the member's id: the table's key too.
            let user = order.rsplit_once('#').map(|(_, u)| u).unwrap_or_default();
            let user = UserId::parse(user).map_err(|e| PortError::Corrupt { key: format!("seat order {order}"), why: e.to_string() })?;
            query = query
                .exclusive_start_key("seat_list", s(seat_list))
                .exclusive_start_key("seat_order", s(order))
                .exclusive_start_key("pk", s(tenant_pk(tenant)))
                .exclusive_start_key("sk", s(member_sk(&user)));
        }
        let out = query.send().await.map_err(failed("Query"))?;
        let next = out.last_evaluated_key.as_ref().and_then(|k| get_s(k, "seat_order")).map(str::to_string);
        let legacy = self.legacy().await?;
        let items =
            out.items.unwrap_or_default().iter().map(|i| member_from_item(i, &format!("{}/{}", tenant_pk(tenant), get_s(i, "sk").unwrap_or_default()), &legacy)).collect::<Result<Vec<_>, _>>()?;
        Ok((items, next))
    }

    async fn member(&self, tenant: &TenantId, user: &UserId) -> Result<Option<MemberItem>, PortError> {
        let key = format!("{}/{}", tenant_pk(tenant), member_sk(user));
        match self.get(tenant_pk(tenant), member_sk(user)).await? {
            None => Ok(None),
            Some(item) => Ok(Some(member_from_item(&item, &key, &self.legacy().await?)?)),
        }
    }

    async fn licenses(&self, tenant: &TenantId, source: Source) -> Result<Vec<License>, PortError> {
        let mut licenses = Vec::new();
        for item in self.query_partition(tenant_pk(tenant), &license_sk(source, "")).await? {
            let key = format!("{}/{}", tenant_pk(tenant), get_s(&item, "sk").unwrap_or_default());
            licenses.extend(json_attr::<License>(&item, "license", &key)?);
        }
        Ok(licenses)
    }

    async fn meta_and_license(&self, tenant: &TenantId, source: Source, license: &str) -> Result<(Option<TenantMeta>, Option<License>), PortError> {
        let sk = license_sk(source, license);
        let (meta, item) = self.get_both(tenant, &sk).await?;
        Ok((meta, item.map(|i| json_attr(&i, "license", &sk)).transpose()?.flatten()))
    }

    async fn meta_license_and_event(&self, tenant: &TenantId, source: Source, license: &str, event: &EventId) -> Result<LicenseRead, PortError> {
        let sk = license_sk(source, license);
        let keys = [(tenant_pk(tenant), sk.clone()), (format!("E#{tenant}"), format!("{}#{event}", source.as_str()))];
        let (meta, mut items) = self.get_with_meta(tenant, &keys).await?;
        let accepted = items.pop().flatten().as_ref().and_then(|i| get_s(i, "body_hash")).map(str::to_string);
        let license = items.pop().flatten().map(|i| json_attr(&i, "license", &sk)).transpose()?.flatten();
        Ok((meta, (license, accepted)))
    }

    async fn meta_and_member(&self, tenant: &TenantId, user: &UserId) -> Result<(Option<TenantMeta>, Option<MemberItem>), PortError> {
        let key = format!("{}/{}", tenant_pk(tenant), member_sk(user));
        let (meta, item) = self.get_both(tenant, &member_sk(user)).await?;
        let member = match item {
            None => None,
            Some(i) => Some(member_from_item(&i, &key, &self.legacy().await?)?),
        };
        Ok((meta, member))
    }

    async fn meta_and_members(&self, tenant: &TenantId, users: &[UserId]) -> Result<(Option<TenantMeta>, Vec<Option<MemberItem>>), PortError> {
        let keys: Vec<(String, String)> = users.iter().map(|u| (tenant_pk(tenant), member_sk(u))).collect();
        let (meta, items) = self.get_with_meta(tenant, &keys).await?;
        let legacy = self.legacy().await?;
        let members = items.iter().zip(&keys).map(|(item, (pk, sk))| item.as_ref().map(|i| member_from_item(i, &format!("{pk}/{sk}"), &legacy)).transpose()).collect::<Result<_, _>>()?;
        Ok((meta, members))
    }

    async fn accepted_event(&self, tenant: &TenantId, source: Source, event: &EventId) -> Result<Option<String>, PortError> {
        let item = self.get(format!("E#{tenant}"), format!("{}#{event}", source.as_str())).await?;
        Ok(item.as_ref().and_then(|i| get_s(i, "body_hash")).map(str::to_string))
    }

    async fn commit(&self, tenant: &TenantId, head: Option<&ChainHead>, change: &Change) -> Result<ChainHead, CommitError> {
        self.commit_change(tenant, head, change).await
    }

    async fn commit_unchained(&self, tenant: &TenantId, change: &Change, salt: &str) -> Result<(), CommitError> {
        self.commit_unchained_change(tenant, change, salt).await
    }

    /// The head, then the first `limit` pending records (the `AQ#` keys of
    /// the partition), a page at a time.
    async fn pending_audit(&self, tenant: &TenantId, limit: usize) -> Result<(Option<TenantMeta>, Vec<PendingRecord>), PortError> {
        let meta = self.meta(tenant).await?;
        let pk = tenant_pk(tenant);
        let mut out = Vec::new();
        let mut after = None;
        while out.len() < limit {
            let (items, next) = self.query_page(pk.clone(), "AQ#", after, (limit - out.len()).min(i32::MAX as usize)).await?;
            for item in items {
                let key = format!("{pk}/{}", get_s(&item, "sk").unwrap_or_default());
                out.push(pending_from(&item, &key)?);
            }
            match next {
                Some(sk) => after = Some(sk),
                None => break,
            }
        }
        Ok((meta, out))
    }

    async fn pending_count(&self, tenant: &TenantId) -> Result<u64, PortError> {
        let pk = tenant_pk(tenant);
        let mut count = 0u64;
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.state)
                .key_condition_expression("pk = :pk AND sk BETWEEN :p AND :last")
                .expression_attribute_values(":pk", s(&pk))
                .expression_attribute_values(":p", s("AQ#"))
                .expression_attribute_values(":last", s(last_key_with_prefix("AQ#")))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(failed("Query"))?;
            count += out.count.max(0) as u64;
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(count),
            }
        }
    }

    async fn park_unattributed(&self, source: Source, event: &EventId, reason: &str, payload: &Value, at: DateTime<Utc>) -> Result<bool, PortError> {
        let res = self
            .client
            .put_item()
            .table_name(&self.state)
            .item("pk", s(format!("PARKED#{}", source.as_str())))
            .item("sk", s(event.as_str()))
            .item("reason", s(reason))
            .item("payload", s(payload.to_string()))
            .item("parked_at", s(rfc3339(at)))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        condition_held("PutItem", res)
    }

    async fn wake_epoch(&self, tenant: &TenantId) -> Result<Option<u64>, PortError> {
        Ok(self.get(tenant_pk(tenant), "META".into()).await?.as_ref().and_then(|i| get_n(i, "wake")))
    }

    async fn advance_wake(&self, tenant: &TenantId) -> Result<(), PortError> {
        self.update_meta(tenant, "ADD wake :v", Some(AttributeValue::N("1".into()))).await.map(|_| ())
    }

    async fn set_continues(&self, tenant: &TenantId, continues: bool) -> Result<(), PortError> {
        let res = if continues { self.update_meta(tenant, "SET continues = :v", Some(AttributeValue::Bool(true))).await } else { self.update_meta(tenant, "REMOVE continues", None).await };
        res.map(|_| ())
    }

    async fn mark_barrier(&self, tenant: &TenantId, mark: &str) -> Result<bool, PortError> {
        self.update_meta(tenant, "SET barrier = :v", Some(s(mark))).await
    }

    async fn audit_page(&self, tenant: &TenantId, after_seq: u64, limit: u32) -> Result<(Vec<StoredRecord>, bool), PortError> {
        let out = self
            .client
            .query()
            .table_name(&self.audit)
            .key_condition_expression("tenant_id = :t AND seq > :after")
            .expression_attribute_values(":t", s(tenant.as_str()))
            .expression_attribute_values(":after", n(after_seq))
            .limit(limit.min(i32::MAX as u32) as i32)
            .consistent_read(true)
            .send()
            .await
            .map_err(failed("Query"))?;
        let records = out
            .items()
            .iter()
            .map(|i| StoredRecord { seq: get_n(i, "seq").unwrap_or(0), json: get_s(i, "record").unwrap_or_default().to_string(), hash: get_s(i, "hash").unwrap_or_default().to_string() })
            .collect();
        Ok((records, out.last_evaluated_key.is_some_and(|k| !k.is_empty())))
    }
}

impl Dynamo {
    /// The tenant's chained records newest first, before `before_seq` (all
    /// when `None`), at most `limit`.
    pub async fn audit_newest_first(&self, tenant: &TenantId, before_seq: Option<u64>, limit: u32) -> Result<Vec<StoredRecord>, PortError> {
        let mut q = self.client.query().table_name(&self.audit).expression_attribute_values(":t", s(tenant.as_str()));
        q = match before_seq {
            Some(b) => q.key_condition_expression("tenant_id = :t AND seq < :before").expression_attribute_values(":before", n(b)),
            None => q.key_condition_expression("tenant_id = :t"),
        };
        let out = q.scan_index_forward(false).limit(limit.min(i32::MAX as u32) as i32).consistent_read(true).send().await.map_err(failed("Query"))?;
        Ok(out
            .items()
            .iter()
            .map(|i| StoredRecord { seq: get_n(i, "seq").unwrap_or(0), json: get_s(i, "record").unwrap_or_default().to_string(), hash: get_s(i, "hash").unwrap_or_default().to_string() })
            .collect())
    }
}

impl Dynamo {
    /// One update of an existing tenant's `META` (`:v` the value, if the
    /// expression has one): false, writing nothing, for a tenant without one.
    async fn update_meta(&self, tenant: &TenantId, expression: &str, value: Option<AttributeValue>) -> Result<bool, PortError> {
        let update = self.client.update_item().table_name(&self.state).key("pk", s(tenant_pk(tenant))).key("sk", s("META")).update_expression(expression).condition_expression("attribute_exists(pk)");
        let update = match value {
            Some(v) => update.expression_attribute_values(":v", v),
            None => update,
        };
        condition_held("UpdateItem", update.send().await)
    }
}
