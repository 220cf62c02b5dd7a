//! Stripe: which subscription an event is about, and a subscription, as
//! Stripe's API returns it, as a license.
//!
//! An event is a signal, never state: its snapshot may be older than
//! another event's that arrives after it (two events can share a second),
//! so Entitle takes only the subscription's id from it (and the tenant the
//! snapshot names, as a hint of which tenant to lock) and reads the
//! subscription itself from Stripe (see `app::billing`).
//!
//! A subscription maps to a license: the tenant from its
//! `metadata.tenant_id`; the tier and add-ons from its items' prices
//! (each item's `price`, or the older `plan`), looked up in the licensing
//! model by lookup key, price id, then product id; seats from the tier
//! item's `quantity`; the expiry from the period end (item-level
//! `current_period_end`, or the older top-level one).

use crate::core::ids::{EventId, LicenseId, TenantId};
use crate::core::license::{LicenseStatus, LicenseUpdate};
use crate::core::model::{LicensingModel, PriceRef};
use crate::core::rejection::Rejection;
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeSet;

/// What an event asks of Entitle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// The event is about this subscription: read it from Stripe.
    Subscription {
        event_id: EventId,
        event_type: String,
        subscription: LicenseId,
        /// The tenant the event's snapshot names: which tenant to lock
        /// first. Only Stripe's answer decides.
        tenant_hint: Option<TenantId>,
    },
    /// An event type Entitle does not act on: acknowledged and ignored.
    Ignored { event_type: String },
    /// Verified and well formed, but about no subscription Entitle can
    /// read: kept with the reason (nothing lost) and acknowledged.
    Park { event_id: EventId, event_type: String, reason: String },
}

/// Invoice events that say a subscription's payment state moved.
const INVOICE_TYPES: [&str; 6] = ["invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed", "invoice.payment_action_required", "invoice.marked_uncollectible", "invoice.voided"];

fn malformed(field: &str, what: &str) -> Rejection {
    Rejection::malformed("malformed_event", format!("{field}: {what}"))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k)).and_then(Value::as_str)
}

fn ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
}

fn tenant_of(metadata: Option<&Value>) -> Result<TenantId, String> {
    let raw = metadata.and_then(|m| m.get("tenant_id")).and_then(Value::as_str).ok_or("no metadata.tenant_id maps this subscription to a tenant")?;
    TenantId::parse(raw).map_err(|e| format!("metadata.tenant_id: {e}"))
}

/// The event's id and type (what every event must have), and what it asks.
pub fn signal(event: &Value) -> Result<Signal, Rejection> {
    let event_id = str_at(event, &["id"]).ok_or_else(|| malformed("id", "missing"))?;
    let event_id = EventId::parse(event_id).map_err(|e| malformed("id", &e.to_string()))?;
    let event_type = str_at(event, &["type"]).ok_or_else(|| malformed("type", "missing"))?.to_string();
    event.get("created").and_then(Value::as_i64).ok_or_else(|| malformed("created", "missing or not a number"))?;
    let object = event.get("data").and_then(|d| d.get("object")).filter(|o| o.is_object()).ok_or_else(|| malformed("data.object", "missing"))?;

    let (subscription, metadata) = if event_type.starts_with("customer.subscription.") {
        let id = str_at(object, &["id"]).ok_or_else(|| malformed("data.object.id", "missing"))?;
        (Some(id), object.get("metadata"))
    } else if INVOICE_TYPES.contains(&event_type.as_str()) {
        // Older API versions put the subscription on the invoice; newer
        // ones under `parent.subscription_details`.
        let details = object.get("subscription_details").or_else(|| object.get("parent").and_then(|p| p.get("subscription_details")));
        let id = str_at(object, &["subscription"]).or_else(|| details.and_then(|d| str_at(d, &["subscription"])));
        (id, details.and_then(|d| d.get("metadata")))
    } else {
        return Ok(Signal::Ignored { event_type });
    };
    let Some(subscription) = subscription else {
        return Ok(Signal::Park { event_id, event_type, reason: "the invoice belongs to no subscription".into() });
    };
    let subscription = LicenseId::parse(subscription).map_err(|e| malformed("data.object.subscription", &e.to_string()))?;
    Ok(Signal::Subscription { event_id, event_type, subscription, tenant_hint: tenant_of(metadata).ok() })
}

/// A subscription as a license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    License {
        tenant: TenantId,
        update: LicenseUpdate,
    },
    /// Not applicable as it is: the reason, and its tenant where it names one.
    Unmapped {
        tenant: Option<TenantId>,
        reason: String,
    },
}

impl Mapped {
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Mapped::License { tenant, .. } => Some(tenant),
            Mapped::Unmapped { tenant, .. } => tenant.as_ref(),
        }
    }
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

/// What an item sells: its `price` (or, from older accounts and
/// localstripe, its `plan`), whose product may be expanded or an id.
fn price_of(item: &Value) -> PriceRef<'_> {
    let price = item.get("price").filter(|p| p.is_object()).or_else(|| item.get("plan").filter(|p| p.is_object()));
    let Some(price) = price else { return PriceRef::default() };
    let product = price.get("product");
    PriceRef { lookup_key: str_at(price, &["lookup_key"]), price_id: str_at(price, &["id"]), product_id: product.and_then(Value::as_str).or_else(|| product.and_then(|p| str_at(p, &["id"]))) }
}

fn describe(p: &PriceRef<'_>) -> String {
    let name = |v: Option<&str>| v.map_or("none".to_string(), |s| format!("{s:?}"));
    format!("price {} (lookup_key {}, product {})", name(p.price_id), name(p.lookup_key), name(p.product_id))
}

/// A subscription object (as `GET /v1/subscriptions/{id}` returns it) as
/// a license of its tenant.
pub fn map_subscription(model: &LicensingModel, sub: &Value) -> Mapped {
    let tenant = match tenant_of(sub.get("metadata")) {
        Ok(t) => t,
        Err(reason) => return Mapped::Unmapped { tenant: None, reason },
    };
    let unmapped = |reason: String| Mapped::Unmapped { tenant: Some(tenant.clone()), reason };
    let Some(raw_status) = str_at(sub, &["status"]) else { return unmapped("Stripe's subscription has no status".into()) };
    let Some(status) = subscription_status(raw_status) else { return unmapped(format!("unknown subscription status {raw_status:?}")) };
    let Some(items) = sub.get("items").and_then(|i| i.get("data")).and_then(Value::as_array) else {
        return unmapped("Stripe's subscription has no items.data".into());
    };
    if sub.get("items").and_then(|i| i.get("has_more")).and_then(Value::as_bool) == Some(true) {
        return unmapped(format!("the subscription has more items than the {} Stripe listed with it", items.len()));
    }
    let mut tier: Option<(usize, String, u32)> = None;
    let mut addons = BTreeSet::new();
    let mut period_end: Option<i64> = None;
    for (i, item) in items.iter().enumerate() {
        let price = price_of(item);
        if price == PriceRef::default() {
            return unmapped(format!("items.data[{i}] has neither a price nor a plan"));
        }
        let quantity = item.get("quantity").and_then(Value::as_u64).unwrap_or(1);
        let quantity = u32::try_from(quantity).unwrap_or(u32::MAX).min(crate::core::sources::crm::MAX_SEATS);
        if let Some(end) = item.get("current_period_end").and_then(Value::as_i64) {
            period_end = Some(period_end.map_or(end, |p| p.max(end)));
        }
        match model.stripe.find(&price) {
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
            None => return unmapped(format!("items.data[{i}]: {} is not in the licensing model", describe(&price))),
        }
    }
    let Some((_, tier, seats)) = tier else {
        return unmapped("no subscription item has a tier price".into());
    };
    let period_end = period_end.or_else(|| sub.get("current_period_end").and_then(Value::as_i64));
    let starts_at = ts(sub.get("start_date").and_then(Value::as_i64));
    Mapped::License { tenant, update: LicenseUpdate { tier, seats, addons, status, starts_at, expires_at: ts(period_end) } }
}

/// A billing reconciliation run, or the part of it one invocation does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SyncRequest {
    pub run_id: String,
    /// One tenant's subscriptions (on demand), or every tenant's (the schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    /// Where the run stopped before: it goes on after this subscription.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_after: Option<String>,
}

/// A subscription in the shape of Stripe's API (current API version:
/// `price` objects, item-level periods), for tests and the demo.
pub fn subscription(sub_id: &str, tenant: Option<&str>, status: &str, items: &[(&str, u64)], period_end: i64) -> Value {
    let items: Vec<Value> = items
        .iter()
        .enumerate()
        .map(|(i, (key, qty))| {
            serde_json::json!({"id": format!("si_{sub_id}_{i}"), "object": "subscription_item", "quantity": qty,
                "subscription": sub_id, "current_period_start": period_end - 30 * 86400, "current_period_end": period_end,
                "price": {"id": format!("price_{key}"), "object": "price", "lookup_key": key, "product": format!("prod_{key}"),
                    "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"}}})
        })
        .collect();
    let metadata = match tenant {
        Some(t) => serde_json::json!({"tenant_id": t}),
        None => serde_json::json!({}),
    };
    serde_json::json!({"id": sub_id, "object": "subscription", "customer": "cus_demo", "status": status,
        "metadata": metadata, "start_date": period_end - 30 * 86400,
        "items": {"object": "list", "data": items, "has_more": false, "url": format!("/v1/subscription_items?subscription={sub_id}")}})
}

/// An event about a subscription, carrying `snapshot` as its
/// `data.object`, as Stripe signs and sends it.
pub fn event(event_id: &str, event_type: &str, created: i64, snapshot: &Value) -> Value {
    serde_json::json!({"id": event_id, "object": "event", "api_version": "2025-03-31.basil", "created": created, "livemode": false,
        "type": event_type, "data": {"object": snapshot}, "pending_webhooks": 1, "request": {"id": null, "idempotency_key": null}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::LicensingModel;
    use serde_json::json;

    fn m() -> LicensingModel {
        LicensingModel::default_model()
    }

    fn license(m: &LicensingModel, sub: &Value) -> (TenantId, LicenseUpdate) {
        match map_subscription(m, sub) {
            Mapped::License { tenant, update } => (tenant, update),
            other => panic!("{other:?}"),
        }
    }

    fn full(u: &LicenseUpdate) -> (&str, u32, &BTreeSet<String>, LicenseStatus, Option<i64>) {
        let LicenseUpdate { tier, seats, addons, status, expires_at, .. } = u;
        (tier.as_str(), *seats, addons, *status, expires_at.map(|e| e.timestamp()))
    }

    #[test]
    fn a_subscription_becomes_its_tenants_license() {
        let s = subscription("sub_1", Some("acme"), "active", &[("team_monthly", 10), ("sso_addon", 1)], 5000);
        let (tenant, update) = license(&m(), &s);
        assert_eq!(tenant.as_str(), "acme");
        let (tier, seats, addons, status, end) = full(&update);
        assert_eq!((tier, seats, status, end), ("team", 10, LicenseStatus::Active, Some(5000)));
        assert_eq!(addons.iter().collect::<Vec<_>>(), ["sso"]);
    }

    #[test]
    fn the_older_top_level_period_end_is_read() {
        let mut s = subscription("sub_1", Some("acme"), "active", &[("business_monthly", 3)], 5000);
        s["items"]["data"][0].as_object_mut().unwrap().remove("current_period_end");
        s["current_period_end"] = 7777.into();
        assert_eq!(full(&license(&m(), &s).1).4, Some(7777));
    }

    #[test]
    fn statuses_map_and_unknown_ones_are_named() {
        for (raw, want) in [
            ("trialing", LicenseStatus::Trialing),
            ("past_due", LicenseStatus::PastDue),
            ("paused", LicenseStatus::Suspended),
            ("incomplete", LicenseStatus::Suspended),
            ("unpaid", LicenseStatus::Suspended),
            ("canceled", LicenseStatus::Canceled),
            ("incomplete_expired", LicenseStatus::Expired),
        ] {
            let s = subscription("sub_1", Some("acme"), raw, &[("team_monthly", 1)], 5000);
            assert_eq!(full(&license(&m(), &s).1).3, want, "{raw}");
        }
        let s = subscription("sub_1", Some("acme"), "dormant", &[("team_monthly", 1)], 5000);
        assert!(matches!(map_subscription(&m(), &s), Mapped::Unmapped { tenant: Some(_), reason } if reason.contains("dormant")));
    }

    /// The price mapping: by lookup key, then price id, then product id;
    /// from `price` or the older `plan`; the product an id or expanded.
    #[test]
    fn prices_map_by_lookup_key_price_id_or_product_id_from_price_or_plan() {
        let mut model = m();
        model.stripe.products.insert("prod_Ent".into(), crate::core::model::PriceMapping { tier: Some("enterprise".into()), addon: None });
        let with_item = |item: Value| {
            let mut s = subscription("sub_1", Some("acme"), "active", &[], 5000);
            s["items"]["data"] = json!([item]);
            s
        };
        let cases = [
            // Lookup key (today's mapping), whatever the price id.
            (json!({"quantity": 4, "price": {"id": "price_1MoS37", "lookup_key": "business_monthly", "product": "prod_X"}}), "business"),
            // Price id, no lookup key.
            (json!({"quantity": 4, "price": {"id": "team_monthly", "lookup_key": null, "product": "prod_X"}}), "team"),
            // Product id, as an id or an expanded product.
            (json!({"quantity": 4, "price": {"id": "price_2", "product": "prod_Ent"}}), "enterprise"),
            (json!({"quantity": 4, "price": {"id": "price_2", "product": {"id": "prod_Ent", "object": "product"}}}), "enterprise"),
            // A legacy plan (localstripe's only form): its id, then its product.
            (json!({"quantity": 4, "plan": {"id": "enterprise_annual", "object": "plan", "product": "prod_Y"}}), "enterprise"),
            (json!({"quantity": 4, "plan": {"id": "plan_9", "object": "plan", "product": "prod_Ent"}}), "enterprise"),
            // An item that carries both reads the price.
            (json!({"quantity": 4, "price": {"id": "team_monthly"}, "plan": {"id": "enterprise_annual"}}), "team"),
        ];
        for (item, want) in cases {
            let (_, update) = license(&model, &with_item(item.clone()));
            assert_eq!((full(&update).0, full(&update).1), (want, 4), "{item}");
        }
        // The lookup key wins over the price id, the price id over the product.
        let both = json!({"quantity": 1, "price": {"id": "enterprise_annual", "lookup_key": "team_monthly", "product": "prod_Ent"}});
        assert_eq!(full(&license(&model, &with_item(both)).1).0, "team");
        let id_over_product = json!({"quantity": 1, "price": {"id": "team_monthly", "product": "prod_Ent"}});
        assert_eq!(full(&license(&model, &with_item(id_over_product)).1).0, "team");
        // Unknown everywhere: named with all three names.
        let unknown = json!({"quantity": 1, "price": {"id": "price_gold", "lookup_key": "gold_monthly", "product": "prod_Gold"}});
        let Mapped::Unmapped { reason, .. } = map_subscription(&model, &with_item(unknown)) else { panic!() };
        assert!(reason.contains("price_gold") && reason.contains("gold_monthly") && reason.contains("prod_Gold"), "{reason}");
    }

    /// The shape Stripe's API fixtures show (older version: no item-level
    /// period, a price without a lookup key) maps through the price id.
    #[test]
    fn the_api_fixture_shape_maps() {
        let s = json!({"id": "sub_1MoqxH", "object": "subscription", "status": "active", "customer": "cus_NZbF",
            "current_period_end": 1_700_000_000, "start_date": 1_679_588_735, "metadata": {"tenant_id": "acme"},
            "items": {"object": "list", "has_more": false, "data": [{"id": "si_Na0z", "object": "subscription_item", "quantity": 7,
                "subscription": "sub_1MoqxH", "price": {"id": "business_monthly", "object": "price", "lookup_key": null,
                "product": "prod_NZbF", "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"}, "unit_amount": 2000}}]}});
        let (_, update) = license(&m(), &s);
        assert_eq!(full(&update), ("business", 7, &BTreeSet::new(), LicenseStatus::Active, Some(1_700_000_000)));
    }

    #[test]
    fn unmappable_subscriptions_say_why() {
        let s = subscription("sub_1", None, "active", &[("team_monthly", 1)], 5000);
        assert!(matches!(map_subscription(&m(), &s), Mapped::Unmapped { tenant: None, reason } if reason.contains("tenant_id")));
        let s = subscription("sub_1", Some("acme"), "active", &[("sso_addon", 1)], 5000);
        assert!(matches!(map_subscription(&m(), &s), Mapped::Unmapped { reason, .. } if reason.contains("tier price")));
        let mut s = subscription("sub_1", Some("acme"), "active", &[("team_monthly", 1)], 5000);
        s["items"]["has_more"] = true.into();
        assert!(matches!(map_subscription(&m(), &s), Mapped::Unmapped { reason, .. } if reason.contains("more items")));
    }

    #[test]
    fn events_name_their_subscription_and_only_hint_at_the_tenant() {
        let snapshot = subscription("sub_1", Some("acme"), "incomplete", &[("team_monthly", 1)], 5000);
        for t in ["customer.subscription.created", "customer.subscription.updated", "customer.subscription.deleted", "customer.subscription.paused"] {
            let Signal::Subscription { subscription, tenant_hint, event_type, .. } = signal(&event("evt_1", t, 1000, &snapshot)).unwrap() else { panic!() };
            assert_eq!((subscription.as_str(), tenant_hint.as_ref().map(|t| t.as_str()), event_type.as_str()), ("sub_1", Some("acme"), t));
        }
        let untenanted = subscription("sub_2", None, "active", &[("team_monthly", 1)], 5000);
        assert!(matches!(signal(&event("evt_2", "customer.subscription.updated", 1, &untenanted)).unwrap(), Signal::Subscription { tenant_hint: None, .. }));
    }

    #[test]
    fn invoice_events_name_their_subscription_in_both_api_shapes() {
        let old = json!({"id": "in_1", "object": "invoice", "subscription": "sub_1", "subscription_details": {"metadata": {"tenant_id": "acme"}}});
        let new = json!({"id": "in_1", "object": "invoice", "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_1", "metadata": {"tenant_id": "acme"}}}});
        for invoice in [old, new] {
            let s = signal(&event("evt_9", "invoice.payment_failed", 2000, &invoice)).unwrap();
            assert!(matches!(s, Signal::Subscription { ref subscription, ref tenant_hint, .. } if subscription.as_str() == "sub_1" && tenant_hint.as_ref().unwrap().as_str() == "acme"), "{s:?}");
        }
        let one_off = json!({"id": "in_2", "object": "invoice"});
        assert!(matches!(signal(&event("evt_3", "invoice.paid", 1, &one_off)).unwrap(), Signal::Park { reason, .. } if reason.contains("no subscription")));
    }

    #[test]
    fn other_types_are_ignored_and_malformed_ones_named() {
        let e = json!({"id": "evt_1", "type": "charge.succeeded", "created": 1, "data": {"object": {}}});
        assert!(matches!(signal(&e).unwrap(), Signal::Ignored { .. }));
        let e = json!({"id": "evt_1", "type": "customer.subscription.created", "data": {"object": {}}});
        assert!(signal(&e).unwrap_err().message.contains("created"));
        let e = json!({"id": "evt_1", "type": "customer.subscription.created", "created": 1, "data": {"object": {"object": "subscription"}}});
        assert!(signal(&e).unwrap_err().message.contains("data.object.id"));
    }
}
