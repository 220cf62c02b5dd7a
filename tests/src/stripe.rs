//! The stack's Stripe: localstripe, driven through its API as a merchant's
//! app (or Stripe's dashboard) would, and the webhooks Stripe would send
//! where localstripe sends none.
//!
//! localstripe sends signed `customer.subscription.created` and `.deleted`
//! webhooks to ingest by itself (about a second after the call); it sends
//! no `.updated`, so [`Stack::announce_update`] posts the one Stripe would
//! have sent: the subscription as it is now, signed with the local secret.

use crate::{unique, Stack};
use serde_json::{json, Value};

/// localstripe's API with the local key.
#[derive(Clone)]
pub struct LocalStripe {
    pub base: String,
    pub key: String,
    pub(crate) http: reqwest::Client,
}

impl LocalStripe {
    async fn call(&self, req: reqwest::RequestBuilder) -> Value {
        let resp = req.basic_auth(&self.key, Some("")).send().await.expect("localstripe answers");
        let status = resp.status();
        let body: Value = resp.json().await.expect("localstripe answers JSON");
        assert!(status.is_success(), "localstripe refused: HTTP {status}: {body}");
        body
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(self.http.get(format!("{}{path}", self.base))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Value {
        self.call(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }

    pub async fn delete(&self, path: &str) -> Value {
        self.call(self.http.delete(format!("{}{path}", self.base))).await
    }

    /// A customer who pays by card.
    pub async fn customer(&self) -> String {
        let token = self.post("/v1/tokens", &json!({"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}})).await;
        let customer = self.post("/v1/customers", &json!({"email": format!("{}@example.test", unique("billing")), "source": token["id"]})).await;
        customer["id"].as_str().unwrap().to_string()
    }

    /// A paid subscription to `plan` (a price id the model maps) for
    /// `quantity` seats, naming its tenant in `metadata.tenant_id` (or no
    /// tenant). Stripe (localstripe) announces it with a signed
    /// `customer.subscription.created` to ingest.
    pub async fn subscribe(&self, tenant: Option<&str>, plan: &str, quantity: u64) -> Value {
        self.subscribe_from(tenant, plan, quantity, None).await
    }

    /// As [`Self::subscribe`], its period starting at `start` (epoch
    /// seconds; localstripe takes any instant, so a period can end at a
    /// chosen time: start + the plan's interval).
    pub async fn subscribe_from(&self, tenant: Option<&str>, plan: &str, quantity: u64, start: Option<i64>) -> Value {
        let customer = self.customer().await;
        let metadata = tenant.map_or(json!({}), |t| json!({"tenant_id": t}));
        let mut body = json!({"customer": customer, "items": [{"plan": plan, "quantity": quantity}], "metadata": metadata});
        if let Some(start) = start {
            body["backdate_start_date"] = json!(start);
        }
        self.post("/v1/subscriptions", &body).await
    }

    /// Moves the subscription to another plan (price), keeping or changing
    /// its seats. Another interval starts a new period (and an invoice).
    pub async fn set_plan(&self, id: &str, plan: &str, quantity: u64) -> Value {
        let sub = self.subscription(id).await;
        let item = sub["items"]["data"][0]["id"].clone();
        self.post(&format!("/v1/subscriptions/{id}"), &json!({"items": [{"id": item, "plan": plan, "quantity": quantity}]})).await
    }

    /// The customer's card starts failing, and the next payment (a new
    /// yearly period on `enterprise_annual`) fails: localstripe marks the
    /// subscription `past_due`, as Stripe does when a renewal is not paid.
    pub async fn fail_next_payment(&self, id: &str) -> Value {
        let sub = self.subscription(id).await;
        let customer = sub["customer"].as_str().unwrap().to_string();
        let token = self.post("/v1/tokens", &json!({"card": {"number": "4000000000000341", "exp_month": 12, "exp_year": 2034, "cvc": "123"}})).await;
        let card = self.post(&format!("/v1/customers/{customer}/sources"), &json!({"source": token["id"]})).await;
        self.post(&format!("/v1/customers/{customer}"), &json!({"default_source": card["id"]})).await;
        let quantity = sub["quantity"].as_u64().unwrap_or(1);
        let after = self.set_plan(id, "enterprise_annual", quantity).await;
        assert_eq!(after["status"], "past_due", "{after}");
        after
    }

    pub async fn subscription(&self, id: &str) -> Value {
        self.get(&format!("/v1/subscriptions/{id}")).await
    }

    /// Changes the seats (the quantity of the subscription's one item), as
    /// a customer's upgrade in the billing portal would. No webhook.
    pub async fn set_seats(&self, id: &str, quantity: u64) -> Value {
        let sub = self.subscription(id).await;
        let item = sub["items"]["data"][0]["id"].clone();
        self.post(&format!("/v1/subscriptions/{id}"), &json!({"items": [{"id": item, "quantity": quantity}]})).await
    }

    /// Cancels at once; Stripe announces `customer.subscription.deleted`.
    pub async fn cancel(&self, id: &str) -> Value {
        self.delete(&format!("/v1/subscriptions/{id}")).await
    }

    /// The events Stripe recorded about a subscription, of one type.
    pub async fn events(&self, id: &str, event_type: &str) -> Vec<Value> {
        let all = self.get(&format!("/v1/events?type={event_type}&limit=100")).await;
        all["data"].as_array().unwrap().iter().filter(|e| e["data"]["object"]["id"] == id).cloned().collect()
    }
}

impl Stack {
    /// `customer.subscription.updated` as Stripe sends it after a change:
    /// its own event id, the subscription as it is now, signed now.
    pub async fn announce_update(&self, id: &str) -> (u16, Value) {
        let snapshot = self.billing.subscription(id).await;
        let event = entitle::core::sources::stripe::event(&format!("evt_{}", unique("upd").replace('-', "")), "customer.subscription.updated", crate::now(), &snapshot);
        self.stripe(&event).await
    }

    /// Waits until localstripe's own webhook about the subscription was
    /// taken by ingest: the event's id is accepted in the tenant's records.
    pub async fn webhook_taken(&self, tenant: &str, id: &str, event_type: &str) -> String {
        let found = self
            .eventually(&format!("localstripe's {event_type} for {id}"), || async {
                let events = self.billing.events(id, event_type).await;
                match events.first().and_then(|e| e["id"].as_str()) {
                    Some(evt) => (self.event_accepted(tenant, evt).await, json!(evt)),
                    None => (false, Value::Null),
                }
            })
            .await;
        found.as_str().unwrap().to_string()
    }

    /// Whether ingest accepted a Stripe event for the tenant (its record exists).
    pub async fn event_accepted(&self, tenant: &str, event_id: &str) -> bool {
        let store = self.store();
        let t = entitle::core::ids::TenantId::parse(tenant).unwrap();
        let e = entitle::core::ids::EventId::parse(event_id).unwrap();
        entitle::app::ports::Tenants::accepted_event(&store, &t, entitle::core::license::Source::Stripe, &e).await.unwrap().is_some()
    }
}

impl Stack {
    /// `POST /tenants/{tenant}/billing/sync`: a billing reconciliation of one tenant, queued.
    pub async fn billing_sync(&self, tenant: &str) -> (u16, Value) {
        self.send(self.http.post(format!("{}/tenants/{tenant}/billing/sync", self.ingest))).await
    }

    /// Fires billing's schedule (every tenant), as EventBridge Scheduler
    /// would; returns the run's report.
    pub async fn billing_schedule(&self) -> Value {
        let event = json!({"version": "0", "id": unique("sched"), "detail-type": "Scheduled Event", "source": "aws.scheduler",
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "detail": {}});
        let (failed, report) = self.invoke("billing", &event).await;
        assert!(!failed, "billing failed: {report}");
        report
    }

    /// A Stripe event as EventBridge delivers it from Stripe's partner
    /// event source: the event in `detail`, no signature.
    pub async fn stripe_via_eventbridge(&self, event: &Value) -> (bool, Value) {
        let envelope = json!({"version": "0", "id": unique("eb"), "detail-type": event["type"],
            "source": "aws.partner/stripe.com/ed_test_61Entitle", "account": "123456789012",
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "region": "us-east-1", "resources": [], "detail": event});
        self.invoke("billing", &envelope).await
    }
}
