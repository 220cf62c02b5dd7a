//! The stack's functions called as their users call them: licenses, members,
//! seats, targets, contracts, the sweep, the events on the bus, reads.

use crate::stack::settings;
use crate::{crm_license, emulator_lost_response, now, openapi, unique, Scim, Stack};
use aws_sdk_dynamodb::types::AttributeValue;
use entitle::core::signature::sign;
use serde_json::Value;

impl Stack {
    /// A fresh SCIM service provider on the stack's scim2-server.
    pub fn scim(&self, name: &str) -> Scim {
        Scim { base: format!("{}/{name}", self.scim_url), token: self.scim_token.clone(), http: self.http.clone() }
    }

    pub async fn put_target(&self, tenant: &str, target: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.put(format!("{}/tenants/{tenant}/targets/{target}", self.ingest)).json(body)).await
    }

    pub async fn put_target_raw(&self, tenant: &str, target: &str, body: &str) -> (u16, Value) {
        self.send(self.http.put(format!("{}/tenants/{tenant}/targets/{target}", self.ingest)).header("content-type", "application/json").body(body.to_string())).await
    }

    pub async fn delete_target(&self, tenant: &str, target: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}/tenants/{tenant}/targets/{target}", self.ingest))).await
    }

    pub async fn targets(&self, tenant: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}/tenants/{tenant}/targets", self.ingest))).await
    }

    /// One target's view (status, health, pending).
    pub async fn target(&self, tenant: &str, target: &str) -> Value {
        let (code, body) = self.targets(tenant).await;
        assert_eq!(code, 200, "{body}");
        body["targets"].as_array().unwrap().iter().find(|t| t["target_id"] == target).cloned().unwrap_or(Value::Null)
    }

    pub async fn repair(&self, tenant: &str, target: &str) -> (u16, Value) {
        self.send(self.http.post(format!("{}/tenants/{tenant}/targets/{target}/repair", self.ingest))).await
    }

    /// Asks provision to deliver the tenant's pending changes now (a
    /// reconcile message, as ingest or the sweep would send).
    pub async fn deliver(&self, tenant: &str) {
        let id = entitle::core::ids::TenantId::parse(tenant).unwrap();
        let request = entitle::core::reconcile::ReconcileRequest::new(id, entitle::core::audit::Cause::new(entitle::core::audit::CauseKind::ApiCall, unique("deliver")));
        entitle::app::ports::Queue::send(&self.queue(), &request, &unique("deliver")).await.unwrap();
    }

    /// Sends a request to a function URL; the JSON answer is checked
    /// against `infra/openapi.yaml` ([`openapi::check`]).
    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let (client, req) = req.build_split();
        let req = req.expect("a valid request");
        let (method, url) = (req.method().to_string(), req.url().to_string());
        let resp = client.execute(req).await.expect("the stack answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("answer {status} is not JSON: {text:?}"));
        if !emulator_lost_response(status, &body) {
            openapi::check(&method, &url, status, &body);
        }
        (status, body)
    }

    pub async fn post_signed(&self, path: &str, header: &str, body: &[u8], signature: Option<String>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.ingest)).header("content-type", "application/json").body(body.to_vec());
        if let Some(sig) = signature {
            req = req.header(header, sig);
        }
        self.send(req).await
    }

    /// A Stripe webhook signed now with the local secret.
    pub async fn stripe(&self, event: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(event).unwrap();
        let sig = sign(&self.stripe_secret, now(), &body);
        self.post_signed("/stripe", "Stripe-Signature", &body, Some(sig)).await
    }

    /// The metric lines (CloudWatch Embedded Metric Format) the functions
    /// wrote to their log with `property` = `value`, once `want` of them are there.
    pub async fn metric_lines(&self, property: &str, value: &str, want: usize) -> Vec<Value> {
        self.metric_lines_where(&format!("{property} = {value}"), want, |l| l[property] == value).await
    }

    /// Waits for at least `want` metric lines (EMF) in the functions' log
    /// that `keep` keeps (`what` names them), and answers all of them.
    pub async fn metric_lines_where(&self, what: &str, want: usize, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
        let path = settings().get("ENTITLE_FUNCTIONS_LOG").cloned().expect("stack settings lack ENTITLE_FUNCTIONS_LOG");
        let keep = &keep;
        self.eventually(&format!("{want} metric line(s) with {what}"), || async {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<Value> =
                log.lines().filter(|l| l.starts_with('{') && l.contains("\"_aws\"")).filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|l| l.get("_aws").is_some() && keep(l)).collect();
            (lines.len() >= want, Value::Array(lines))
        })
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    /// Licenses `tenant` by a CRM record (version 1, see [`crm_license`])
    /// and waits until its seats are provisioned.
    pub async fn crm_licensed(&self, tenant: &str, tier: &str, seats: u64) {
        let (code, answer) = self.crm(&crm_license(tenant, 1, tier, seats)).await;
        assert_eq!((code, answer["status"].as_str()), (200, Some("applied")), "{answer}");
        self.tenant_where(tenant, "the license provisioned", |v| v["seats"]["total"] == seats).await;
    }

    pub async fn crm(&self, record: &Value) -> (u16, Value) {
        let body = serde_json::to_vec(record).unwrap();
        let sig = sign(&self.crm_secret, now(), &body);
        self.post_signed("/crm", "Entitle-Signature", &body, Some(sig)).await
    }

    pub async fn create_member(&self, tenant: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}/tenants/{tenant}/members", self.ingest)).json(body)).await
    }

    pub async fn create_member_raw(&self, tenant: &str, body: Vec<u8>) -> (u16, Value) {
        self.send(self.http.post(format!("{}/tenants/{tenant}/members", self.ingest)).header("content-type", "application/json").body(body)).await
    }

    pub async fn delete_member(&self, tenant: &str, user: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}/tenants/{tenant}/members/{user}", self.ingest))).await
    }

    /// `PATCH /tenants/{tenant}/members/{user}` (the app changes a member's groups or attributes).
    pub async fn update_member(&self, tenant: &str, user: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.patch(format!("{}/tenants/{tenant}/members/{user}", self.ingest)).json(body)).await
    }

    /// `PUT /tenants/{tenant}/members/{user}/seat` (the tenant's admin gives or releases a seat).
    pub async fn put_seat(&self, tenant: &str, user: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.put(format!("{}/tenants/{tenant}/members/{user}/seat", self.ingest)).json(body)).await
    }

    /// `POST /tenants/{tenant}/portal-links` (a link to the admin portal).
    pub async fn portal_link(&self, tenant: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}/tenants/{tenant}/portal-links", self.ingest)).json(body)).await
    }

    /// `PUT /tenants/{tenant}/license-file` (how long the tenant's license files are valid).
    pub async fn put_license_file(&self, tenant: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.put(format!("{}/tenants/{tenant}/license-file", self.ingest)).json(body)).await
    }

    /// A request to the amend function: `POST` with a JSON body, or `GET`.
    pub async fn amend(&self, path: &str, body: Option<&Value>) -> (u16, Value) {
        let url = format!("{}{path}", self.amend);
        match body {
            Some(b) => self.send(self.http.post(url).json(b)).await,
            None => self.send(self.http.get(url)).await,
        }
    }

    pub async fn amend_yaml(&self, path: &str, yaml: &str) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.amend)).header("content-type", "application/yaml").body(yaml.to_string())).await
    }

    /// Fires the expiry sweep (the real binary) as EventBridge would, as of `time`.
    pub async fn sweep(&self, time: chrono::DateTime<chrono::Utc>) -> Value {
        let event = serde_json::json!({"version": "0", "id": unique("run"), "detail-type": "Scheduled Event", "source": "aws.scheduler",
            "time": time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), "detail": {}});
        let resp = self.http.post(&self.sweep_invoke).json(&event).send().await.expect("expiry-sweep answers");
        let failed = resp.headers().get("x-amz-function-error").is_some();
        let body: Value = resp.json().await.expect("JSON report");
        assert!(!failed, "expiry-sweep failed: {body}");
        body
    }

    /// An SQS queue receiving every Entitle event on the bus from now on.
    pub async fn event_tap(&self) -> String {
        let name = unique("events");
        let url = self.sqs.create_queue().queue_name(&name).send().await.unwrap().queue_url.unwrap();
        let arn_attr = aws_sdk_sqs::types::QueueAttributeName::QueueArn;
        let attrs = self.sqs.get_queue_attributes().queue_url(&url).attribute_names(arn_attr.clone()).send().await.unwrap().attributes.unwrap();
        self.events.put_rule().name(&name).event_bus_name(&self.event_bus).event_pattern(r#"{"source":["entitle"]}"#).send().await.unwrap();
        let target = aws_sdk_eventbridge::types::Target::builder().id("tap").arn(attrs[&arn_attr].clone()).build().unwrap();
        self.events.put_targets().rule(&name).event_bus_name(&self.event_bus).targets(target).send().await.unwrap();
        url
    }

    /// Every event the tap holds now (EventBridge envelopes).
    pub async fn drain_events(&self, tap: &str) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let got = self.sqs.receive_message().queue_url(tap).max_number_of_messages(10).wait_time_seconds(1).send().await.unwrap();
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                out.push(serde_json::from_str(m.body().unwrap()).unwrap());
                self.sqs.delete_message().queue_url(tap).receipt_handle(m.receipt_handle().unwrap()).send().await.unwrap();
            }
        }
    }

    pub async fn tenant(&self, tenant: &str) -> (u16, Value) {
        self.get(&format!("/tenants/{tenant}")).await
    }

    pub async fn member(&self, tenant: &str, user: &str) -> (u16, Value) {
        self.get(&format!("/tenants/{tenant}/members/{user}")).await
    }

    pub async fn verify(&self, tenant: &str) -> Value {
        let (status, body) = self.get(&format!("/tenants/{tenant}/audit/verify")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The whole audit trail, through the paged API. Records written
    /// without the chain's lock a moment ago (account creations and
    /// removals) may still be pending: provision chains them when it next
    /// handles the tenant, so the trail is read once it has.
    pub async fn audit(&self, tenant: &str) -> Vec<Value> {
        let (status, first) = self.get(&format!("/tenants/{tenant}/audit?after=0&limit=1")).await;
        assert_eq!(status, 200, "{first}");
        if first["pending"].as_u64().unwrap_or(0) > 0 {
            self.settle(tenant).await;
        }
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let (status, body) = self.get(&format!("/tenants/{tenant}/audit?after={after}&limit=50")).await;
            assert_eq!(status, 200, "{body}");
            all.extend(body["records"].as_array().unwrap().iter().cloned());
            match body["next_after"].as_u64() {
                Some(n) => after = n,
                None => return all,
            }
        }
    }

    /// Every stored item of a tenant (state and idempotency partitions, audit).
    pub async fn stored_items(&self, tenant: &str) -> usize {
        let mut count = 0;
        for pk in [format!("T#{tenant}"), format!("E#{tenant}")] {
            let out = self.ddb.query().table_name(&self.tables.state).key_condition_expression("pk = :pk").expression_attribute_values(":pk", AttributeValue::S(pk)).send().await.unwrap();
            count += out.count as usize;
        }
        let out = self.ddb.query().table_name(&self.tables.audit).key_condition_expression("tenant_id = :t").expression_attribute_values(":t", AttributeValue::S(tenant.into())).send().await.unwrap();
        count + out.count as usize
    }
}
