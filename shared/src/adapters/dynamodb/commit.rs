//! The one audited commit: a [`Change`] becomes one `TransactWriteItems`:
//! one item per write (in order, so a failed condition names its write),
//! one item per event to announce (`EV#<tenant>`, read by the table's
//! stream: the EventBridge Pipe puts it on the bus), the audit records
//! (each conditional on its sequence number being new), and the tenant's
//! `META` last, conditional on the chain head the change was decided on.
//! One meaning of a moved head: any failed condition after the change's own
//! writes, or a conflicting transaction, is [`CommitError::HeadMoved`].

use super::contracts::REVIEW_QUEUE;
use super::directory::{connection_sk, directory_pk, edge_sk, group_name_sk, group_sk, user_name_sk};
use super::due::due_attributes;
use super::*;
use crate::app::ports::{Change, CommitError, MemberGuard, MetaUpdate, Write};
use crate::core::access::MemberStatus;
use crate::core::audit::{self, ChainHead, PendingRecord};
use crate::core::contract::AmendmentStatus;
use crate::core::events::announced;
use crate::core::license::MemberPolicy;
use crate::core::seats::{order_key_string, SeatList};
use crate::core::tenant::email_key;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Delete, Put, TransactWriteItem, Update};

/// A conditional delete.
fn delete(table: &str, pk: String, sk: String, condition: &str, values: Vec<(&str, AttributeValue)>) -> TransactWriteItem {
    let mut d = Delete::builder().table_name(table).key("pk", s(pk)).key("sk", s(sk)).condition_expression(condition);
    for (k, v) in values {
        d = d.expression_attribute_values(k, v);
    }
    TransactWriteItem::builder().delete(d.build().expect("table, key set")).build()
}

/// A put of a versioned item: a new one (`if_rev` None: none there yet) or
/// the next version of the one at revision `if_rev`.
fn put_at_rev(table: &str, item: Vec<(&str, AttributeValue)>, if_rev: Option<u64>) -> TransactWriteItem {
    match if_rev {
        None => put(table, item, Some("attribute_not_exists(pk)"), vec![]),
        Some(r) => put(table, item, Some("rev = :rev"), vec![(":rev", n(r))]),
    }
}

fn put(table: &str, item: Vec<(&str, AttributeValue)>, condition: Option<&str>, values: Vec<(&str, AttributeValue)>) -> TransactWriteItem {
    put_named(table, item, condition, values, &[])
}

fn put_named(table: &str, item: Vec<(&str, AttributeValue)>, condition: Option<&str>, values: Vec<(&str, AttributeValue)>, names: &[(&str, &str)]) -> TransactWriteItem {
    let mut p = Put::builder().table_name(table);
    for (k, v) in item {
        p = p.item(k, v);
    }
    if let Some(c) = condition {
        p = p.condition_expression(c);
    }
    for (k, v) in values {
        p = p.expression_attribute_values(k, v);
    }
    for (k, v) in names {
        p = p.expression_attribute_names(*k, *v);
    }
    TransactWriteItem::builder().put(p.build().expect("table, item set")).build()
}

/// The key of a pending audit record in its tenant's partition.
fn pending_sk(p: &PendingRecord) -> String {
    format!("AQ#{}", p.key)
}

/// The counters' part of a `META` update: the additions, and the
/// conditions they carry (added to `conditions`).
fn counters(m: &MetaUpdate, adds: &mut Vec<String>, conditions: &mut Vec<String>, values: &mut HashMap<String, AttributeValue>) {
    if m.used_delta != 0 {
        adds.push("seats_used :du".into());
        values.insert(":du".into(), n(m.used_delta));
    }
    if m.pending_delta != 0 {
        adds.push("seats_pending :dp".into());
        values.insert(":dp".into(), n(m.pending_delta));
    }
    if let Some(max) = m.used_at_most {
        conditions.push("(attribute_not_exists(seats_used) OR seats_used <= :max)".into());
        values.insert(":max".into(), n(max));
    }
    match &m.walk_goal_is {
        Some(Some(goal)) => {
            conditions.push("walk_goal = :goal".into());
            values.insert(":goal".into(), s(goal));
        }
        Some(None) => conditions.push("attribute_not_exists(walk_goal)".into()),
        None => {}
    }
    if m.claim_seat {
        // Seated, a seat free, nobody waiting.
        // (A counter never added to yet does not exist: it counts as zero.)
        conditions.push("seated = :true AND (attribute_not_exists(seats_used) OR seats_used < seats_total) AND (attribute_not_exists(seats_pending) OR seats_pending = :zero)".into());
        values.insert(":true".into(), AttributeValue::Bool(true));
        values.insert(":zero".into(), n(0));
    }
}

fn with_due(mut item: Vec<(&'static str, AttributeValue)>, pk: &str, sk: &str, due: Option<DateTime<Utc>>) -> Vec<(&'static str, AttributeValue)> {
    item.extend(due_attributes(pk, sk, due));
    item
}

impl Dynamo {
    /// The item of one write. `seq` numbers the change's delivery records
    /// (the position of its first audit record, or, for a change committed
    /// without the chain's lock, the time in microseconds).
    fn item(&self, tenant: &TenantId, seq: u64, w: &Write) -> TransactWriteItem {
        let t = &self.state;
        let tpk = tenant_pk(tenant);
        match w {
            Write::EventRecord { source, event_id, body_hash, outcome, at } => put(
                t,
                vec![
                    ("pk", s(format!("E#{tenant}"))),
                    ("sk", s(format!("{}#{event_id}", source.as_str()))),
                    ("body_hash", s(body_hash)),
                    ("outcome", s(*outcome)),
                    ("accepted_at", s(rfc3339(*at))),
                    ("ttl", n((*at + chrono::Duration::days(IDEMPOTENCY_DAYS)).timestamp())),
                ],
                Some("attribute_not_exists(pk)"),
                vec![],
            ),
            Write::Parked { source, event_id, reason, payload, at } => put(
                t,
                vec![
                    ("pk", s(format!("PARKED#{}", source.as_str()))),
                    ("sk", s(event_id.as_str())),
                    ("reason", s(reason)),
                    ("payload", s(payload.to_string())),
                    ("parked_at", s(rfc3339(*at))),
                    ("tenant_id", s(tenant.as_str())),
                ],
                Some("attribute_not_exists(pk)"),
                vec![],
            ),
            Write::License { license, if_version, due } => {
                let sk = license_sk(license.source, license.license_id.as_str());
                let due = *due;
                let item = with_due(vec![("pk", s(&tpk)), ("sk", s(&sk)), ("license", s(to_json(license))), ("source_version", n(license.source_version))], &tpk, &sk, due);
                match if_version {
                    Some(v) => put(t, item, Some("source_version = :v"), vec![(":v", n(v))]),
                    None => put(t, item, None, vec![]),
                }
            }
            Write::Member { item: m, guard } => {
                let mut attrs = vec![
                    ("pk", s(&tpk)),
                    ("sk", s(member_sk(&m.member.user_id))),
                    ("member", s(to_json(&m.member))),
                    ("access", s(to_json(&m.access))),
                    ("status", s(m.access.status.as_str())),
                    ("seat", s(to_json(&m.seat))),
                    ("rev", n(m.rev)),
                    ("model_version", s(m.model_version.as_str())),
                ];
                if let Some(link) = &m.link {
                    attrs.push(("link", s(to_json(link))));
                }
                // Its place in the seat order, for the sparse `seats` index.
                let list = if m.access.holds_seat() {
                    Some(SeatList::Holders)
                } else if m.in_line() {
                    Some(SeatList::Line)
                } else {
                    None
                };
                if let Some(list) = list {
                    attrs.push(("seat_list", s(format!("{}{tenant}", list.prefix()))));
                    attrs.push(("seat_order", s(order_key_string(&m.seat, &m.member.user_id))));
                }
                match guard {
                    // `status` is a reserved word.
                    MemberGuard::New => put_named(t, attrs, Some("attribute_not_exists(pk) OR #st = :gone"), vec![(":gone", s(MemberStatus::Deprovisioned.as_str()))], &[("#st", "status")]),
                    // An item written before revisions were kept is at revision 0.
                    MemberGuard::Rev(0) => put(t, attrs, Some("attribute_exists(pk) AND attribute_not_exists(rev)"), vec![]),
                    MemberGuard::Rev(rev) => put(t, attrs, Some("rev = :rev"), vec![(":rev", n(rev))]),
                }
            }
            Write::ClaimEmail(m) => put(
                t,
                vec![("pk", s(email_pk(tenant))), ("sk", s(email_key(&m.email))), ("user_id", s(m.user_id.as_str()))],
                Some("attribute_not_exists(pk) OR user_id = :u"),
                vec![(":u", s(m.user_id.as_str()))],
            ),
            Write::ReleaseEmail(m) => {
                let delete = Delete::builder()
                    .table_name(t)
                    .key("pk", s(email_pk(tenant)))
                    .key("sk", s(email_key(&m.email)))
                    .condition_expression("attribute_not_exists(pk) OR user_id = :u")
                    .expression_attribute_values(":u", s(m.user_id.as_str()))
                    .build()
                    .expect("table, key set");
                TransactWriteItem::builder().delete(delete).build()
            }
            Write::Delivery { target, item } => {
                let (pk, sk) = (sync_pk(tenant, target), item.member.user_id.to_string());
                let attrs = vec![("pk", s(&pk)), ("sk", s(&sk)), ("member", s(to_json(&item.member))), ("access", s(to_json(&item.access))), ("seq", n(seq)), ("written_at", s(rfc3339(Utc::now())))];
                // Due from now: the sweep finds it if no deliverer does.
                put(t, with_due(attrs, &pk, &sk, Some(Utc::now())), None, vec![])
            }
            Write::ParkDelivery { target, member, access, if_seq, reason } => {
                let attrs = vec![
                    ("pk", s(sync_pk(tenant, target))),
                    ("sk", s(member.user_id.as_str())),
                    ("member", s(to_json(member))),
                    ("access", s(to_json(access))),
                    ("seq", n(if_seq.unwrap_or(seq))),
                    ("refusals", n(crate::core::scim::MAX_REFUSALS)),
                    ("last_error", s(reason)),
                    ("parked", s(reason)),
                    ("written_at", s(rfc3339(Utc::now()))),
                ];
                match if_seq {
                    Some(q) => put(t, attrs, Some("seq = :seq"), vec![(":seq", n(q))]),
                    None => put(t, attrs, Some("attribute_not_exists(pk)"), vec![]),
                }
            }
            Write::TargetConfig(target) => self.target_update(tenant, target, true),
            Write::TargetHealth(target) => self.target_update(tenant, target, false),
            Write::RemoveTarget(id) => {
                let delete = Delete::builder().table_name(t).key("pk", s(&tpk)).key("sk", s(target_sk(id))).condition_expression("attribute_exists(pk)").build().expect("table, key set");
                TransactWriteItem::builder().delete(delete).build()
            }
            Write::NewContract { contract, body_hash } => {
                put(t, vec![("pk", s(contract_pk(contract))), ("sk", s("META")), ("tenant_id", s(tenant.as_str())), ("body_hash", s(body_hash))], Some("attribute_not_exists(pk)"), vec![])
            }
            Write::ContractDocument { contract, version, document } => put(
                t,
                vec![("pk", s(&tpk)), ("sk", s(format!("CONTRACT#{contract}"))), ("document", s(document.to_string())), ("version", n(version))],
                // The first version creates it; the next ones replace it.
                Some(if *version == 1 { "attribute_not_exists(pk)" } else { "attribute_exists(pk)" }),
                vec![],
            ),
            Write::ContractVersion { contract, version, document, changes, cause, at } => put(
                t,
                vec![
                    ("pk", s(contract_pk(contract))),
                    ("sk", s(format!("V#{version:010}"))),
                    ("version", n(version)),
                    ("document", s(document.to_string())),
                    ("changes", s(to_json(changes))),
                    ("cause", s(cause)),
                    ("at", s(rfc3339(*at))),
                ],
                Some("attribute_not_exists(pk)"),
                vec![],
            ),
            Write::Amendment { amendment: a, body_hash } => {
                let (pk, sk) = (contract_pk(&a.contract_id), format!("A#{}", a.amendment_id));
                // A scheduled amendment is in the due index until it is applied or rejected.
                let due = a.effective_at.filter(|_| a.status == AmendmentStatus::Scheduled);
                let mut attrs = vec![("pk", s(&pk)), ("sk", s(&sk)), ("amendment", s(to_json(a))), ("status", s(a.status.as_str())), ("body_hash", s(body_hash))];
                // Waiting for review: in the sparse review index, oldest first,
                // until a decision writes the item again without it.
                if a.status == AmendmentStatus::PendingReview {
                    attrs.push(("review_queue", s(REVIEW_QUEUE)));
                    attrs.push(("review_at", s(format!("{}#{}#{}", a.created_at, a.contract_id, a.amendment_id))));
                }
                put(t, with_due(attrs, &pk, &sk, due), None, vec![])
            }
            Write::Connection { connection: c, if_rev } => {
                put_at_rev(t, vec![("pk", s(directory_pk(tenant))), ("sk", s(connection_sk(&c.id))), ("connection", s(to_json(c))), ("rev", n(c.rev))], *if_rev)
            }
            Write::RemoveConnection { id, rev } => delete(t, directory_pk(tenant), connection_sk(id), "rev = :rev", vec![(":rev", n(rev))]),
            Write::ClaimUserName { user_name, user } => put(
                t,
                vec![("pk", s(directory_pk(tenant))), ("sk", s(user_name_sk(user_name))), ("user_id", s(user.as_str()))],
                Some("attribute_not_exists(pk) OR user_id = :u"),
                vec![(":u", s(user.as_str()))],
            ),
            Write::ReleaseUserName { user_name, user } => delete(t, directory_pk(tenant), user_name_sk(user_name), "attribute_not_exists(pk) OR user_id = :u", vec![(":u", s(user.as_str()))]),
            Write::Group { group: g, if_rev } => put_at_rev(t, vec![("pk", s(directory_pk(tenant))), ("sk", s(group_sk(&g.id))), ("group", s(to_json(g))), ("rev", n(g.rev))], *if_rev),
            Write::RemoveGroup { id, rev } => delete(t, directory_pk(tenant), group_sk(id), "rev = :rev", vec![(":rev", n(rev))]),
            Write::ClaimGroupName { name, group } => {
                put(t, vec![("pk", s(directory_pk(tenant))), ("sk", s(group_name_sk(name))), ("group_id", s(group))], Some("attribute_not_exists(pk) OR group_id = :g"), vec![(":g", s(group))])
            }
            Write::ReleaseGroupName { name, group } => delete(t, directory_pk(tenant), group_name_sk(name), "attribute_not_exists(pk) OR group_id = :g", vec![(":g", s(group))]),
            Write::Edge(e) => put(t, vec![("pk", s(directory_pk(tenant))), ("sk", s(edge_sk(&e.group, &e.user))), ("edge", s(to_json(e)))], None, vec![]),
            Write::RemoveEdge { group, user } => {
                let delete = Delete::builder().table_name(t).key("pk", s(directory_pk(tenant))).key("sk", s(edge_sk(group, user))).build().expect("table, key set");
                TransactWriteItem::builder().delete(delete).build()
            }
        }
    }

    /// A target's configuration (`config`: its health is only set when it
    /// has none yet) or its health, and when it should next wake up.
    pub(crate) fn target_update(&self, tenant: &TenantId, target: &Target, config: bool) -> TransactWriteItem {
        let (pk, sk) = (tenant_pk(tenant), target_sk(&target.target_id));
        let due = due_attributes(&pk, &sk, Some(target.wake_at().max(DateTime::<Utc>::UNIX_EPOCH)));
        let mut update = Update::builder().table_name(&self.state).key("pk", s(pk)).key("sk", s(sk));
        let mut sets = vec![if config { "health = if_not_exists(health, :h)" } else { "health = :h" }.to_string()];
        update = update.expression_attribute_values(":h", s(to_json(&target.health)));
        if config {
            let stored = Target { health: Default::default(), ..target.clone() };
            sets.push("target = :t".into());
            update = update.expression_attribute_values(":t", s(to_json(&stored)));
        } else {
            update = update.condition_expression("attribute_exists(pk)");
        }
        for (k, v) in due {
            sets.push(format!("{k} = :{k}"));
            update = update.expression_attribute_values(format!(":{k}"), v);
        }
        TransactWriteItem::builder().update(update.update_expression(format!("SET {}", sets.join(", "))).build().expect("key, expression set")).build()
    }

    /// The pending records it chains (each chained, and removed), the audit
    /// records, the event items, and the lock on the head (last).
    /// `new_version`: the version a tenant created by this change follows
    /// (the latest registered, read as it commits).
    fn chain_items(&self, tenant: &TenantId, expected: Option<&ChainHead>, change: &Change, new_version: Option<&ModelVersion>) -> (Vec<TransactWriteItem>, ChainHead) {
        let head = expected.cloned().unwrap_or_else(ChainHead::genesis);
        let at = rfc3339(change.at);
        let mut items = Vec::new();
        // Pending records first, each dated as it was written.
        let (mut records, after_pending) = audit::integrate(tenant.as_str(), &head, &change.integrate);
        for p in &change.integrate {
            let delete =
                Delete::builder().table_name(&self.state).key("pk", s(tenant_pk(tenant))).key("sk", s(pending_sk(p))).condition_expression("attribute_exists(pk)").build().expect("table, key set");
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        let first = after_pending.seq + 1;
        let mut events = crate::core::events::announced_pending(tenant, &head, &change.integrate);
        events.extend(change.audit.iter().enumerate().filter_map(|(i, e)| announced(tenant, first + i as u64, &at, e)));
        events.extend(change.events.iter().cloned());
        let (own, new_head) = audit::chain(tenant.as_str(), &after_pending, &at, change.audit.clone());
        records.extend(own);
        // One item per event, in the tenant's partition of events: the
        // stream gives them to the Pipe in the order written, and they expire.
        let expires = (change.at + chrono::Duration::hours(EVENT_TTL_HOURS)).timestamp();
        for e in &events {
            let id = e.get("id").and_then(serde_json::Value::as_str).unwrap_or_default();
            let detail_type = e.get("type").and_then(serde_json::Value::as_str).unwrap_or_default();
            items.push(put(&self.state, vec![("pk", s(events_pk(tenant))), ("sk", s(id)), ("detail_type", s(detail_type)), ("detail", s(e.to_string())), ("ttl", n(expires))], None, vec![]));
        }
        for (r, json, hash) in records {
            items.push(put(&self.audit, vec![("tenant_id", s(tenant.as_str())), ("seq", n(r.seq)), ("record", s(json)), ("hash", s(hash))], Some("attribute_not_exists(seq)"), vec![]));
        }
        let m = &change.meta;
        let mut names = HashMap::new();
        let mut values = HashMap::new();
        let mut sets = vec!["audit_seq = :new_seq".to_string(), "audit_hash = :new_hash".to_string(), "updated_at = :now".to_string()];
        // The moved head is due for a signed checkpoint (the sweep's), one
        // interval after the first change since the last one.
        if new_head.seq > head.seq {
            sets.push("due_at = if_not_exists(due_at, :cp_due)".to_string());
            sets.push("due_shard = if_not_exists(due_shard, :cp_shard)".to_string());
            let due = due_attributes(&tenant_pk(tenant), "META", Some(change.at + audit::CHECKPOINT_INTERVAL));
            for (k, v) in due {
                values.insert(if k == "due_at" { ":cp_due" } else { ":cp_shard" }.to_string(), v);
            }
        }
        values.insert(":new_seq".to_string(), n(new_head.seq));
        values.insert(":new_hash".to_string(), s(new_head.hash.clone()));
        values.insert(":now".to_string(), s(at));
        let mut set = |attr: &str, value: AttributeValue| {
            let i = names.len();
            names.insert(format!("#a{i}"), attr.to_string());
            values.insert(format!(":v{i}"), value);
            sets.push(format!("#a{i} = :v{i}"));
        };
        if let Some(a) = &m.access {
            set("access", s(to_json(a)));
            // Plain copies for the conditions of seat claims at creation.
            set("seats_total", n(a.seats_total));
            set("seated", AttributeValue::Bool(a.policy == MemberPolicy::Seated));
            // And for the index of tenants (listing by tier).
            set("tier", s(&a.tier));
        }
        // The version it follows, and its place in the index of tenants.
        if let Some(v) = m.model_version.as_ref().or(new_version) {
            set("model_version", s(v.as_str()));
            set("model_list", s(super::models::model_list(v)));
        }
        if let Some(r) = &m.rules {
            set("rules", s(to_json(r)));
        }
        if m.licensed {
            set("licensed", AttributeValue::Bool(true));
        }
        if let Some(w) = &m.walk {
            set("walk", s(to_json(w)));
            set("walk_goal", s(&w.goal));
        }
        let mut removes = Vec::new();
        match m.license_file_seconds {
            Some(Some(secs)) => set("license_file_seconds", n(secs)),
            Some(None) => removes.push("license_file_seconds"),
            None => {}
        }
        match &m.model_pin {
            Some(Some(p)) => set("model_pin", s(to_json(p))),
            Some(None) => removes.push("model_pin"),
            None => {}
        }
        match &m.model_waiting {
            Some(Some(w)) => set("model_waiting", s(to_json(w))),
            Some(None) => removes.push("model_waiting"),
            None => {}
        }
        // The sweep's item for a pin's end or a waiting move (in the due index).
        match m.model_due {
            Some(Some(at)) => items.push(put(&self.state, with_due(vec![("pk", s(tenant_pk(tenant))), ("sk", s(MODEL_DUE))], &tenant_pk(tenant), MODEL_DUE, Some(at)), None, vec![])),
            Some(None) => {
                let delete = Delete::builder().table_name(&self.state).key("pk", s(tenant_pk(tenant))).key("sk", s(MODEL_DUE)).build().expect("table, key set");
                items.push(TransactWriteItem::builder().delete(delete).build());
            }
            None => {}
        }
        let mut conditions = vec![match expected {
            Some(h) => {
                values.insert(":expected".to_string(), n(h.seq));
                "audit_seq = :expected".to_string()
            }
            None => "attribute_not_exists(pk)".to_string(),
        }];
        let mut adds = Vec::new();
        counters(m, &mut adds, &mut conditions, &mut values);
        let mut expression = format!("SET {}", sets.join(", "));
        if !adds.is_empty() {
            expression.push_str(&format!(" ADD {}", adds.join(", ")));
        }
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let mut update = Update::builder()
            .table_name(&self.state)
            .key("pk", s(tenant_pk(tenant)))
            .key("sk", s("META"))
            .update_expression(expression)
            .condition_expression(conditions.join(" AND "))
            .set_expression_attribute_values(Some(values));
        if !names.is_empty() {
            update = update.set_expression_attribute_names(Some(names));
        }
        items.push(TransactWriteItem::builder().update(update.build().expect("key, expression set")).build());
        (items, new_head)
    }

    /// A change without the chain's lock: its writes, its audit records as
    /// pending records, and its counters (with their conditions) on `META`.
    fn unchained_items(&self, tenant: &TenantId, change: &Change, salt: &str) -> Vec<TransactWriteItem> {
        let seq = u64::try_from(change.at.timestamp_micros()).unwrap_or(0);
        let mut items: Vec<TransactWriteItem> = change.writes.iter().map(|w| self.item(tenant, seq, w)).collect();
        for (i, e) in change.audit.iter().enumerate() {
            let p = PendingRecord::new(change.at, &format!("{salt}/{i}"), e.clone());
            let mut attrs = vec![("pk", s(tenant_pk(tenant))), ("sk", s(pending_sk(&p))), ("at", s(&p.at)), ("event", s(to_json(&p.event)))];
            // What it announces once chained (not part of the record).
            if let Some(a) = &p.event.announce {
                attrs.push(("announce", s(to_json(a))));
            }
            items.push(put(&self.state, attrs, Some("attribute_not_exists(pk)"), vec![]));
        }
        let mut values = HashMap::new();
        values.insert(":now".to_string(), s(rfc3339(change.at)));
        let mut conditions = vec!["attribute_exists(pk)".to_string()];
        let mut adds = Vec::new();
        counters(&change.meta, &mut adds, &mut conditions, &mut values);
        let mut expression = "SET updated_at = :now".to_string();
        if !adds.is_empty() {
            expression.push_str(&format!(" ADD {}", adds.join(", ")));
        }
        let update = Update::builder()
            .table_name(&self.state)
            .key("pk", s(tenant_pk(tenant)))
            .key("sk", s("META"))
            .update_expression(expression)
            .condition_expression(conditions.join(" AND "))
            .set_expression_attribute_values(Some(values))
            .build()
            .expect("key, expression set");
        items.push(TransactWriteItem::builder().update(update).build());
        items
    }

    /// Commits a change without the chain's lock (see `Tenants::commit_unchained`).
    pub(crate) async fn commit_unchained_change(&self, tenant: &TenantId, change: &Change, salt: &str) -> Result<(), CommitError> {
        assert!(change.events.is_empty() && change.integrate.is_empty(), "only a change without events of its own commits without the lock");
        let items = self.unchained_items(tenant, change, salt);
        let own = change.writes.len();
        let meta_at = items.len() - 1;
        // A conflicting transaction on META (another writer of the tenant at
        // the same instant) is sent again as it is: no decision depends on it.
        for attempt in 0..10u32 {
            match self.client.transact_write_items().set_transact_items(Some(items.clone())).send().await {
                Ok(_) => return Ok(()),
                Err(SdkError::ServiceError(e)) => match e.err() {
                    TransactWriteItemsError::TransactionCanceledException(c) => {
                        let reasons = c.cancellation_reasons();
                        let failed_at: Vec<usize> = reasons.iter().enumerate().filter(|(_, r)| r.code() == Some("ConditionalCheckFailed")).map(|(i, _)| i).collect();
                        if let Some(&first) = failed_at.iter().find(|&&i| i < own) {
                            return Err(CommitError::Refused(first));
                        }
                        if failed_at.contains(&meta_at) {
                            return Err(CommitError::Seats);
                        }
                        if !failed_at.is_empty() || !reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                            return Err(CommitError::Port(PortError::unavailable(
                                "TransactWriteItems",
                                aws_sdk_dynamodb::Error::from(TransactWriteItemsError::TransactionCanceledException(c.clone())),
                            )));
                        }
                        crate::app::commit::backoff(attempt).await;
                    }
                    _ => return Err(CommitError::Port(failed("TransactWriteItems")(SdkError::ServiceError(e)))),
                },
                Err(e) => return Err(CommitError::Port(failed("TransactWriteItems")(e))),
            }
        }
        Err(CommitError::HeadMoved)
    }

    pub(crate) async fn commit_change(&self, tenant: &TenantId, expected: Option<&ChainHead>, change: &Change) -> Result<ChainHead, CommitError> {
        let head = expected.cloned().unwrap_or_else(ChainHead::genesis);
        let mut items: Vec<TransactWriteItem> = change.writes.iter().map(|w| self.item(tenant, head.seq + 1 + change.integrate.len() as u64, w)).collect();
        let own = items.len();
        // A tenant this change creates follows the latest version, read now.
        let new_version = match expected {
            None if change.meta.model_version.is_none() => Some(self.latest_version_now().await.map_err(CommitError::Port)?),
            _ => None,
        };
        let (chain, new_head) = self.chain_items(tenant, expected, change, new_version.as_ref());
        items.extend(chain);
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(new_head),
            Err(SdkError::ServiceError(e)) => match e.err() {
                TransactWriteItemsError::TransactionCanceledException(c) => {
                    let reasons = c.cancellation_reasons();
                    let failed_at: Vec<usize> = reasons.iter().enumerate().filter(|(_, r)| r.code() == Some("ConditionalCheckFailed")).map(|(i, _)| i).collect();
                    if let Some(&first) = failed_at.iter().find(|&&i| i < own) {
                        Err(CommitError::Refused(first))
                    } else if !failed_at.is_empty() || reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                        Err(CommitError::HeadMoved)
                    } else {
                        Err(CommitError::Port(PortError::unavailable("TransactWriteItems", aws_sdk_dynamodb::Error::from(TransactWriteItemsError::TransactionCanceledException(c.clone())))))
                    }
                }
                _ => Err(CommitError::Port(failed("TransactWriteItems")(SdkError::ServiceError(e)))),
            },
            Err(e) => Err(CommitError::Port(failed("TransactWriteItems")(e))),
        }
    }
}
