//! Normalising Stripe webhook events into license changes.
//!
//! Handled: `customer.subscription.created|updated|deleted|paused|resumed`
//! and `invoice.payment_failed`. The tenant comes from the subscription's
//! `metadata.tenant_id`; the tier and add-ons from the items' price
//! `lookup_key`s (through the licensing model); seats from the tier item's
//! `quantity`; the expiry from the period end (item-level
//! `current_period_end`, or the older top-level one). The event's `created`
//! orders changes to one subscription.

use crate::core::rejection::Rejection;
use crate::core::ids::{EventId, LicenseId, TenantId};
use crate::core::license::{LicenseChange, LicenseStatus, LicenseUpdate, Source};
use crate::core::model::LicensingModel;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StripeOutcome {
    Change(LicenseChange),
    /// An event type Entitle does not act on: acknowledged and ignored.
    Ignored { event_type: String },
    /// Verified and well formed, but not applicable as is: kept with the
    /// reason (nothing lost) and acknowledged so that Stripe stops retrying.
    Park { event_id: EventId, event_type: String, tenant_id: Option<TenantId>, reason: String },
}

fn malformed(field: &str, what: &str) -> Rejection {
    Rejection::malformed("malformed_event", format!("{field}: {what}"))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

fn ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
}

fn subscription_status(s: &str) -> Option<LicenseStatus> {
    Some(match s {
        "trialing" => LicenseStatus::Trialing,
        "active" => LicenseStatus::Active,
        "past_due" => LicenseStatus::PastDue,
        // Unpaid after retries, paused, or never paid: kept, but no access.
        "unpaid" | "paused" | "incomplete" => LicenseStatus::Suspended,
        "canceled" => LicenseStatus::Canceled,
        "incomplete_expired" => LicenseStatus::Expired,
        _ => return None,
    })
}

pub fn normalise(model: &LicensingModel, event: &Value) -> Result<StripeOutcome, Rejection> {
    let event_id = str_at(event, &["id"]).ok_or_else(|| malformed("id", "missing"))?;
    let event_id = EventId::parse(event_id).map_err(|e| malformed("id", &e.to_string()))?;
    let event_type = str_at(event, &["type"]).ok_or_else(|| malformed("type", "missing"))?.to_string();
    let created = event.get("created").and_then(Value::as_i64).ok_or_else(|| malformed("created", "missing or not a number"))?;
    let object = event.get("data").and_then(|d| d.get("object")).filter(|o| o.is_object()).ok_or_else(|| malformed("data.object", "missing"))?;

    let park = |tenant_id: Option<TenantId>, reason: String| StripeOutcome::Park { event_id: event_id.clone(), event_type: event_type.clone(), tenant_id, reason };
    let tenant_of = |metadata: Option<&Value>| -> Result<TenantId, String> {
        let raw = metadata.and_then(|m| m.get("tenant_id")).and_then(Value::as_str).ok_or("no metadata.tenant_id maps this subscription to a tenant")?;
        TenantId::parse(raw).map_err(|e| format!("metadata.tenant_id: {e}"))
    };

    match event_type.as_str() {
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted"
        | "customer.subscription.paused"
        | "customer.subscription.resumed" => {
            let sub_id = str_at(object, &["id"]).ok_or_else(|| malformed("data.object.id", "missing"))?;
            let license_id = LicenseId::parse(sub_id).map_err(|e| malformed("data.object.id", &e.to_string()))?;
            let tenant_id = match tenant_of(object.get("metadata")) {
                Ok(t) => t,
                Err(reason) => return Ok(park(None, reason)),
            };
            let raw_status = str_at(object, &["status"]).ok_or_else(|| malformed("data.object.status", "missing"))?;
            let status = match event_type.as_str() {
                "customer.subscription.deleted" => LicenseStatus::Canceled,
                "customer.subscription.paused" => LicenseStatus::Suspended,
                _ => match subscription_status(raw_status) {
                    Some(s) => s,
                    None => return Ok(park(Some(tenant_id), format!("unknown subscription status {raw_status:?}"))),
                },
            };
            let items = object
                .get("items")
                .and_then(|i| i.get("data"))
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("data.object.items.data", "missing"))?;
            let mut tier: Option<(usize, String, u32)> = None;
            let mut addons = BTreeSet::new();
            let mut period_end: Option<i64> = None;
            for (i, item) in items.iter().enumerate() {
                let key = match str_at(item, &["price", "lookup_key"]) {
                    Some(k) => k,
                    None => return Ok(park(Some(tenant_id), format!("items.data[{i}].price has no lookup_key"))),
                };
                let quantity = item.get("quantity").and_then(Value::as_u64).unwrap_or(1);
                let quantity = u32::try_from(quantity).unwrap_or(u32::MAX).min(crate::core::sources::crm::MAX_SEATS);
                if let Some(end) = item.get("current_period_end").and_then(Value::as_i64) {
                    period_end = Some(period_end.map_or(end, |p| p.max(end)));
                }
                match model.stripe.prices.get(key) {
                    Some(m) if m.tier.is_some() => {
                        let t = m.tier.clone().expect("checked");
                        let rank = model.tier_rank(&t).expect("validated model");
                        if tier.as_ref().is_none_or(|(r, _, _)| rank > *r) {
                            tier = Some((rank, t, quantity));
                        }
                    }
                    Some(m) => {
                        addons.insert(m.addon.clone().expect("validated model: tier or addon"));
                    }
                    None => return Ok(park(Some(tenant_id), format!("price lookup_key {key:?} is not in the licensing model"))),
                }
            }
            let Some((_, tier, seats)) = tier else {
                return Ok(park(Some(tenant_id), "no subscription item has a tier price".into()));
            };
            let period_end = period_end.or_else(|| object.get("current_period_end").and_then(Value::as_i64));
            let starts_at = ts(object.get("start_date").and_then(Value::as_i64));
            Ok(StripeOutcome::Change(LicenseChange {
                event_id,
                tenant_id,
                license_id,
                source: Source::Stripe,
                source_version: created,
                update: LicenseUpdate::Full { tier, seats, addons, status, starts_at, expires_at: ts(period_end) },
            }))
        }
        "invoice.payment_failed" => {
            // Older API versions put the subscription on the invoice; newer
            // ones under `parent.subscription_details`.
            let sub = str_at(object, &["subscription"]).or_else(|| str_at(object, &["parent", "subscription_details", "subscription"]));
            let Some(sub) = sub else {
                return Ok(park(None, "the invoice belongs to no subscription".into()));
            };
            let license_id = LicenseId::parse(sub).map_err(|e| malformed("data.object.subscription", &e.to_string()))?;
            let metadata = object
                .get("subscription_details")
                .and_then(|d| d.get("metadata"))
                .or_else(|| object.get("parent").and_then(|p| p.get("subscription_details")).and_then(|d| d.get("metadata")));
            let tenant_id = match tenant_of(metadata) {
                Ok(t) => t,
                Err(reason) => return Ok(park(None, reason)),
            };
            Ok(StripeOutcome::Change(LicenseChange {
                event_id,
                tenant_id,
                license_id,
                source: Source::Stripe,
                source_version: created,
                update: LicenseUpdate::Status(LicenseStatus::PastDue),
            }))
        }
        _ => Ok(StripeOutcome::Ignored { event_type }),
    }
}

/// A subscription event in Stripe's shape, for tests and the demo.
#[allow(clippy::too_many_arguments)] // mirrors the event's own fields
pub fn subscription_event(event_id: &str, event_type: &str, created: i64, sub_id: &str, tenant: Option<&str>, status: &str, items: &[(&str, u64)], period_end: i64) -> Value {
    let items: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, (key, qty))| {
            serde_json::json!({"id": format!("si_{sub_id}_{i}"), "object": "subscription_item", "quantity": qty,
                "current_period_start": period_end - 30 * 86400, "current_period_end": period_end,
                "price": {"id": format!("price_{key}"), "object": "price", "lookup_key": key}})
        })
        .collect();
    let metadata = match tenant {
        Some(t) => serde_json::json!({"tenant_id": t}),
        None => serde_json::json!({}),
    };
    serde_json::json!({
        "id": event_id, "object": "event", "api_version": "2025-03-31.basil", "created": created, "livemode": false,
        "type": event_type,
        "data": {"object": {"id": sub_id, "object": "subscription", "customer": "cus_demo", "status": status,
            "metadata": metadata, "start_date": period_end - 30 * 86400,
            "items": {"object": "list", "data": items}}}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m() -> LicensingModel {
        LicensingModel::default_model()
    }

    #[test]
    fn subscription_events_become_license_changes() {
        let e = subscription_event("evt_1", "customer.subscription.created", 1000, "sub_1", Some("acme"), "active", &[("team_monthly", 10), ("sso_addon", 1)], 5000);
        let StripeOutcome::Change(c) = normalise(&m(), &e).unwrap() else { panic!() };
        assert_eq!(c.tenant_id.as_str(), "acme");
        assert_eq!(c.source_version, 1000);
        match c.update {
            LicenseUpdate::Full { tier, seats, addons, status, expires_at, .. } => {
                assert_eq!((tier.as_str(), seats, status), ("team", 10, LicenseStatus::Active));
                assert!(addons.contains("sso"));
                assert_eq!(expires_at.unwrap().timestamp(), 5000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn older_top_level_period_end_is_read() {
        let mut e = subscription_event("evt_1", "customer.subscription.updated", 1000, "sub_1", Some("acme"), "active", &[("business_monthly", 3)], 5000);
        let item = &mut e["data"]["object"]["items"]["data"][0];
        item.as_object_mut().unwrap().remove("current_period_end");
        e["data"]["object"]["current_period_end"] = 7777.into();
        let StripeOutcome::Change(c) = normalise(&m(), &e).unwrap() else { panic!() };
        let LicenseUpdate::Full { expires_at, .. } = c.update else { panic!() };
        assert_eq!(expires_at.unwrap().timestamp(), 7777);
    }

    #[test]
    fn deleted_and_paused_map_to_status() {
        for (t, want) in [("customer.subscription.deleted", LicenseStatus::Canceled), ("customer.subscription.paused", LicenseStatus::Suspended)] {
            let e = subscription_event("evt_1", t, 1000, "sub_1", Some("acme"), "active", &[("team_monthly", 1)], 5000);
            let StripeOutcome::Change(c) = normalise(&m(), &e).unwrap() else { panic!() };
            assert!(matches!(c.update, LicenseUpdate::Full { status, .. } if status == want));
        }
    }

    #[test]
    fn payment_failed_marks_past_due_in_both_api_shapes() {
        let old = serde_json::json!({"id":"evt_9","type":"invoice.payment_failed","created":2000,
            "data":{"object":{"id":"in_1","object":"invoice","subscription":"sub_1","subscription_details":{"metadata":{"tenant_id":"acme"}}}}});
        let new = serde_json::json!({"id":"evt_9","type":"invoice.payment_failed","created":2000,
            "data":{"object":{"id":"in_1","object":"invoice","parent":{"type":"subscription_details","subscription_details":{"subscription":"sub_1","metadata":{"tenant_id":"acme"}}}}}});
        for e in [old, new] {
            let StripeOutcome::Change(c) = normalise(&m(), &e).unwrap() else { panic!() };
            assert_eq!(c.update, LicenseUpdate::Status(LicenseStatus::PastDue));
            assert_eq!(c.license_id.as_str(), "sub_1");
        }
    }

    #[test]
    fn unmapped_events_are_parked_with_a_reason() {
        let e = subscription_event("evt_1", "customer.subscription.created", 1000, "sub_1", None, "active", &[("team_monthly", 1)], 5000);
        assert!(matches!(normalise(&m(), &e).unwrap(), StripeOutcome::Park { reason, .. } if reason.contains("tenant_id")));
        let e = subscription_event("evt_1", "customer.subscription.created", 1000, "sub_1", Some("acme"), "active", &[("gold_monthly", 1)], 5000);
        assert!(matches!(normalise(&m(), &e).unwrap(), StripeOutcome::Park { reason, .. } if reason.contains("gold_monthly")));
    }

    #[test]
    fn other_types_are_ignored_and_malformed_ones_named() {
        let e = serde_json::json!({"id":"evt_1","type":"charge.succeeded","created":1,"data":{"object":{}}});
        assert!(matches!(normalise(&m(), &e).unwrap(), StripeOutcome::Ignored { .. }));
        let e = serde_json::json!({"id":"evt_1","type":"customer.subscription.created","data":{"object":{}}});
        assert!(normalise(&m(), &e).unwrap_err().message.contains("created"));
    }
}
