//! Harness for the workspace-level tests: the running local stack (DynamoDB
//! Local, moto, the function binaries under `cargo lambda watch`, the event
//! source mapping stand-in, scim2-server, localstripe), reached exactly as a user reaches
//! it, plus the real SDK clients for looking at (and tampering with) what is
//! stored.
//!
//! `make test` starts a stack and points `ENTITLE_STACK_ENV` at its settings.
//! Without it these tests fail loudly: they never skip.

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::AttributeValue;
use entitle::adapters::dynamodb::Dynamo;
use entitle::core::signature::{sign, Secret};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

pub mod directory;
pub mod hostile;
pub mod openapi;
pub mod runtime;
pub mod stripe;
pub mod verify;

/// One HTTP/1.1 request as the small servers of the harness read it.
pub(crate) struct WireRequest {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// Reads one request (its head, and its body by `Content-Length`); None at EOF.
pub(crate) async fn read_request(stream: &mut tokio::net::TcpStream) -> std::io::Result<Option<WireRequest>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut first = head.lines().next().unwrap_or_default().split(' ');
    let (method, path) = (first.next().unwrap_or_default().to_string(), first.next().unwrap_or_default().to_string());
    let length = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))).unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(Some(WireRequest { method, path, body }))
}

/// A function URL request as the function receives it (payload format
/// 2.0), with the IAM identity AWS authenticated when `principal` is given
/// (what `AuthType: AWS_IAM` puts in the request context).
pub fn function_url_event(function: &str, method: &str, path: &str, body: Option<&Value>, principal: Option<&str>) -> Value {
    let mut context = serde_json::json!({
        "accountId": "123456789012", "apiId": function, "domainName": format!("{function}.lambda-url.us-east-1.on.aws"), "domainPrefix": function,
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "entitle-tests"},
        "requestId": unique("req"), "routeKey": "$default", "stage": "$default", "time": "24/Nov/2026:12:00:00 +0000", "timeEpoch": 1_795_000_000_000u64
    });
    if let Some(arn) = principal {
        context["authorizer"] = serde_json::json!({"iam": {"accessKey": "AKIAEXAMPLE", "accountId": "123456789012", "callerId": "AIDAEXAMPLE", "userArn": arn, "userId": "AIDAEXAMPLE"}});
    }
    serde_json::json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"content-type": "application/json"}, "requestContext": context,
        "body": body.map(|b| b.to_string()), "isBase64Encoded": false
    })
}

/// Where the stack's state is.
#[derive(Debug, Clone)]
pub struct Tables {
    pub state: String,
    pub audit: String,
}

pub struct Stack {
    pub ingest: String,
    pub access: String,
    pub amend: String,
    pub sweep_invoke: String,
    /// `.../2015-03-31/functions`: the Lambda Invoke API of `cargo lambda watch`.
    pub invoke_base: String,
    /// Every setting of the stack (`stack.env`).
    pub settings: HashMap<String, String>,
    pub event_bus: String,
    pub stripe_secret: Secret,
    pub crm_secret: Secret,
    pub ddb: aws_sdk_dynamodb::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub events: aws_sdk_eventbridge::Client,
    pub tables: Tables,
    pub queue_url: String,
    pub dead_letter_queue_url: String,
    pub http: reqwest::Client,
    /// scim2-server: every path prefix is its own SCIM service provider.
    pub scim_url: String,
    pub scim_token: String,
    pub scim_token_2: String,
    pub secrets: aws_sdk_secretsmanager::Client,
    /// moto's KMS (the keys that sign checkpoints and tokens).
    pub kms: aws_sdk_kms::Client,
    /// localstripe, the stack's Stripe.
    pub billing: stripe::LocalStripe,
    pub billing_queue_url: String,
}

/// The stack's directory (where `stack.env`, `functions.env` and the logs are).
pub fn stack_dir() -> std::path::PathBuf {
    let path = std::env::var("ENTITLE_STACK_ENV").expect("ENTITLE_STACK_ENV is set (see settings())");
    let path = if std::path::Path::new(&path).is_absolute() { path } else { format!("{}/../{path}", env!("CARGO_MANIFEST_DIR")) };
    std::path::Path::new(&path).parent().expect("stack.env is in the stack's directory").to_path_buf()
}

/// The functions' environment of the local stack (`functions.env`), to run
/// a function binary as the stack runs it (see [`runtime::invoke_once`]).
pub fn function_env() -> HashMap<String, String> {
    let text = std::fs::read_to_string(stack_dir().join("functions.env")).unwrap();
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn settings() -> HashMap<String, String> {
    let path = std::env::var("ENTITLE_STACK_ENV")
        .unwrap_or_else(|_| panic!("ENTITLE_STACK_ENV is not set: these tests need the local stack. Run them with `make test` (or start `make up` and set ENTITLE_STACK_ENV=.local/stack/stack.env)"));
    // Relative paths are taken from the workspace root, where `make` runs.
    let path = if std::path::Path::new(&path).is_absolute() { path } else { format!("{}/../{path}", env!("CARGO_MANIFEST_DIR")) };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read stack settings {path}: {e}"));
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect()
}

impl Stack {
    pub async fn connect() -> Stack {
        entitle::adapters::scim_client::install_tls_provider();
        let s = settings();
        let get = |k: &str| s.get(k).cloned().unwrap_or_else(|| panic!("stack settings lack {k}"));
        let aws = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(get("AWS_ENDPOINT_URL"))
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "entitle-tests"))
            .load()
            .await;
        let sweep_invoke = get("ENTITLE_SWEEP_INVOKE_URL");
        Stack {
            ingest: get("ENTITLE_INGEST_URL"),
            access: get("ENTITLE_ACCESS_URL"),
            amend: get("ENTITLE_AMEND_URL"),
            invoke_base: sweep_invoke.trim_end_matches("/expiry-sweep/invocations").to_string(),
            sweep_invoke,
            event_bus: get("EVENT_BUS_NAME"),
            stripe_secret: Secret::new(get("ENTITLE_STRIPE_SECRET")),
            crm_secret: Secret::new(get("ENTITLE_CRM_SECRET")),
            // DynamoDB is DynamoDB Local; the other services are moto's.
            // (Straight to DynamoDB Local, past any request counter the functions go through.)
            ddb: aws_sdk_dynamodb::Client::from_conf(
                aws_sdk_dynamodb::config::Builder::from(&aws).endpoint_url(s.get("ENTITLE_DDB_DIRECT").cloned().unwrap_or_else(|| get("AWS_ENDPOINT_URL_DYNAMODB"))).build(),
            ),
            sqs: aws_sdk_sqs::Client::new(&aws),
            events: aws_sdk_eventbridge::Client::new(&aws),
            tables: Tables { state: get("STATE_TABLE"), audit: get("AUDIT_TABLE") },
            queue_url: get("RECONCILE_QUEUE_URL"),
            dead_letter_queue_url: get("DEAD_LETTER_QUEUE_URL"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client"),
            scim_url: get("ENTITLE_SCIM_URL"),
            scim_token: get("ENTITLE_SCIM_TOKEN"),
            scim_token_2: get("ENTITLE_SCIM_TOKEN_2"),
            secrets: aws_sdk_secretsmanager::Client::new(&aws),
            kms: aws_sdk_kms::Client::new(&aws),
            billing: stripe::LocalStripe {
                base: get("ENTITLE_STRIPE_API_URL"),
                key: get("ENTITLE_STRIPE_API_KEY"),
                http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client"),
            },
            billing_queue_url: get("BILLING_QUEUE_URL"),
            settings: s,
        }
    }

    /// Invokes a function through the Lambda Invoke API, as AWS would (an
    /// event source, or a function URL after it authenticated the caller):
    /// (whether the function failed, its answer).
    pub async fn invoke(&self, function: &str, event: &Value) -> (bool, Value) {
        let resp = self.http.post(format!("{}/{function}/invocations", self.invoke_base)).json(event).send().await.expect("the function answers");
        let failed = resp.headers().get("x-amz-function-error").is_some() || !resp.status().is_success();
        let text = resp.text().await.expect("body");
        (failed, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A function URL request, through the Invoke API, as AWS hands it to
    /// the function (see [`function_url_event`]); answers (status, JSON body).
    pub async fn invoke_url(&self, function: &str, method: &str, path: &str, body: Option<&Value>, principal: Option<&str>) -> (u16, Value) {
        let event = function_url_event(function, method, path, body, principal);
        let (failed, answer) = self.invoke(function, &event).await;
        assert!(!failed, "{function} failed: {answer}");
        let status = answer["statusCode"].as_u64().expect("a function URL answer") as u16;
        let body = answer["body"].as_str().map(|b| serde_json::from_str(b).unwrap_or(Value::String(b.to_string()))).unwrap_or(Value::Null);
        (status, body)
    }

    /// Waits until provision has processed every message queued for the
    /// tenant before now: a barrier message goes to the tenant's FIFO group,
    /// and provision records its mark on the tenant once it reaches it.
    pub async fn settle(&self, tenant: &str) {
        self.settle_within(tenant, WAIT).await;
    }

    /// `settle`, waiting up to `deadline` (a production-size tenant's backlog).
    pub async fn settle_within(&self, tenant: &str, deadline: Duration) {
        let mark = self.send_barrier(tenant).await;
        self.eventually_within(&format!("provision to reach barrier {mark} of {tenant}"), deadline, || async {
            let seen = self.barrier_reached(tenant).await.unwrap_or_default();
            (seen == mark, Value::String(seen))
        })
        .await;
    }

    /// Queues a barrier for the tenant (behind everything queued for it so
    /// far): its mark.
    pub async fn send_barrier(&self, tenant: &str) -> String {
        let mark = unique("barrier");
        let id = entitle::core::ids::TenantId::parse(tenant).unwrap();
        let mut request = entitle::core::reconcile::ReconcileRequest::new(id, entitle::core::audit::Cause::new(entitle::core::audit::CauseKind::ApiCall, &mark));
        request.barrier = Some(mark.clone());
        entitle::app::ports::Queue::send(&self.queue(), &request, &mark).await.unwrap();
        mark
    }

    /// The mark of the last barrier provision reached for the tenant.
    pub async fn barrier_reached(&self, tenant: &str) -> Option<String> {
        let item = self
            .ddb
            .get_item()
            .table_name(&self.tables.state)
            .key("pk", AttributeValue::S(format!("T#{tenant}")))
            .key("sk", AttributeValue::S("META".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap()
            .item
            .unwrap_or_default();
        item.get("barrier").and_then(|v| v.as_s().ok()).cloned()
    }

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

    /// The DynamoDB adapter the functions use, on the stack's tables.
    pub fn store(&self) -> Dynamo {
        Dynamo::new(self.ddb.clone(), self.tables.state.clone(), self.tables.audit.clone(), self.model())
    }

    /// The licensing model the stack runs with (the shipped one).
    pub fn model(&self) -> std::sync::Arc<entitle::core::model::LicensingModel> {
        std::sync::Arc::new(entitle::core::model::LicensingModel::default_model())
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
        let path = settings().get("ENTITLE_FUNCTIONS_LOG").cloned().expect("stack settings lack ENTITLE_FUNCTIONS_LOG");
        self.eventually(&format!("{want} metric line(s) with {property} = {value}"), || async {
            let log = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<Value> = log
                .lines()
                .filter(|l| l.starts_with('{') && l.contains("\"_aws\""))
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|l| l.get("_aws").is_some() && l[property] == value)
                .collect();
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

    pub fn queue(&self) -> entitle::adapters::sqs::ReconcileQueue {
        entitle::adapters::sqs::ReconcileQueue::new(self.sqs.clone(), self.queue_url.clone())
    }

    /// A read through access. Reads are safe to repeat, so one that
    /// `cargo lambda watch` lost (see [`emulator_lost_response`]) is asked again.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let mut attempts = 0;
        loop {
            let (status, body) = self.send(self.http.get(format!("{}{path}", self.access))).await;
            attempts += 1;
            if attempts == 6 || !emulator_lost_response(status, &body) {
                return (status, body);
            }
            // Under load the emulator can lose several answers in a row: ask
            // again after a pause that grows (0.2, 0.4, ... 1.6 s).
            eprintln!("cargo lambda watch lost the answer to GET {path}; asking again");
            tokio::time::sleep(std::time::Duration::from_millis(200 << (attempts - 1))).await;
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

    /// Waits until `check` holds (provisioning is asynchronous), or fails
    /// with the last observation after [`WAIT`].
    pub async fn eventually<F, Fut>(&self, what: &str, check: F) -> Value
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = (bool, Value)>,
    {
        self.eventually_within(what, WAIT, check).await
    }

    /// `eventually`, waiting up to `deadline`.
    pub async fn eventually_within<F, Fut>(&self, what: &str, deadline: Duration, mut check: F) -> Value
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = (bool, Value)>,
    {
        let start = Instant::now();
        loop {
            let (ok, seen) = check().await;
            if ok {
                return seen;
            }
            if start.elapsed() > deadline {
                panic!("timed out waiting for {what}; last seen: {seen}");
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Waits until the tenant's view satisfies `pred`.
    pub async fn tenant_where(&self, tenant: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.eventually(what, || async {
            let (status, body) = self.tenant(tenant).await;
            (status == 200 && pred(&body), body)
        })
        .await
    }

    /// Waits until the members' statuses are as given.
    pub async fn statuses_are(&self, tenant: &str, want: &[(&str, &str)]) -> Vec<Value> {
        let mut out = Vec::new();
        for (user, status) in want {
            out.push(
                self.eventually(&format!("{user} to be {status}"), || async {
                    let (code, body) = self.member(tenant, user).await;
                    (code == 200 && body["status"] == *status, body)
                })
                .await,
            );
        }
        out
    }
}

/// The longest a test waits for an observable mark (a status, an audit
/// record, a barrier): what a mark reached in a few seconds on an idle
/// machine needs on a loaded 2-core one, with room to spare. A deadline only
/// bounds how long a failing test takes to say so.
pub const WAIT: Duration = Duration::from_secs(90);

/// An end date for licenses and contracts well past every sweep the tests
/// run (up to 400 days ahead) and every expiring-soon notice: relative to
/// today, so that no test starts failing on a calendar date.
pub fn far_future() -> String {
    (chrono::Utc::now() + chrono::Duration::days(3650)).format("%Y-%m-%dT00:00:00Z").to_string()
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A tenant id unique to this run, so tests share one stack without sharing data.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() % 1_000_000_000_000;
    format!("{prefix}-{nanos}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A CRM license record as the tests send it: `crm-lic-1` of `tier` with
/// `seats`, version `version`, running from 2026 to well past every sweep.
pub fn crm_license(tenant: &str, version: i64, tier: &str, seats: u64) -> Value {
    serde_json::json!({"event_id": format!("crm-{tenant}-{version}"), "tenant_id": tenant, "license_id": "crm-lic-1", "tier": tier,
        "seats": seats, "add_ons": [], "starts_at": "2026-01-01T00:00:00Z", "expires_at": far_future(),
        "status": "active", "source_version": version})
}

pub fn member_body(user: &str, groups: &[&str]) -> Value {
    serde_json::json!({"user_id": user, "email": format!("{user}@example.test"), "groups": groups, "attributes": {}})
}

pub use entitle::core::sources::stripe::{event as stripe_event, subscription as stripe_subscription};

/// Checks every event's `detail` against the documented schema
/// (`infra/events.schema.json`), naming each violation.
pub fn assert_valid_events(events: &[Value]) {
    let path = format!("{}/../infra/events.schema.json", env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the documented schema is a valid JSON Schema");
    for e in events {
        assert_eq!(e["source"], "entitle", "{e}");
        assert_eq!(e["detail-type"], e["detail"]["type"], "{e}");
        let problems: Vec<String> = validator.iter_errors(&e["detail"]).map(|err| format!("{} at {}", err, err.instance_path())).collect();
        assert!(problems.is_empty(), "event does not match infra/events.schema.json: {problems:?}\n{}", e["detail"]);
    }
}

/// One SCIM service provider on scim2-server, read and changed directly
/// (what an admin of the target would do behind Entitle's back).
pub struct Scim {
    pub base: String,
    pub token: String,
    http: reqwest::Client,
}

/// A user as the tests compare it: active, externalId, groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenUser {
    pub id: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub groups: std::collections::BTreeSet<String>,
    pub department: Option<String>,
}

impl Scim {
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let resp = req.send().await.expect("scim2-server answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    async fn all(&self, path: &str) -> Vec<Value> {
        let (code, body) = self.request(reqwest::Method::GET, &format!("{path}?count=1000"), None).await;
        assert_eq!(code, 200, "{body}");
        body["Resources"].as_array().cloned().unwrap_or_default()
    }

    pub async fn create_user(&self, user_name: &str, external_id: Option<&str>) -> String {
        let mut body = serde_json::json!({"schemas": [entitle::core::scim::USER_SCHEMA], "userName": user_name, "active": true});
        if let Some(e) = external_id {
            body["externalId"] = e.into();
        }
        let (code, created) = self.request(reqwest::Method::POST, "/Users", Some(body)).await;
        assert_eq!(code, 201, "{created}");
        created["id"].as_str().unwrap().to_string()
    }

    pub async fn patch(&self, path: &str, ops: Vec<entitle::core::scim::PatchOp>) {
        let (code, body) = self.request(reqwest::Method::PATCH, path, Some(entitle::core::scim::patch_body(&ops))).await;
        assert!(code == 200 || code == 204, "PATCH {path}: {code} {body}");
    }

    pub async fn group_id(&self, name: &str) -> Option<String> {
        self.all("/Groups").await.iter().find(|g| g["displayName"] == name).and_then(|g| g["id"].as_str().map(str::to_string))
    }

    /// Every user by userName, with the groups they are in.
    pub async fn view(&self) -> std::collections::BTreeMap<String, SeenUser> {
        let groups = self.all("/Groups").await;
        let mut out = std::collections::BTreeMap::new();
        for u in self.all("/Users").await {
            let id = u["id"].as_str().unwrap().to_string();
            let in_groups =
                groups.iter().filter(|g| g["members"].as_array().into_iter().flatten().any(|m| m["value"] == id.as_str())).map(|g| g["displayName"].as_str().unwrap().to_string()).collect();
            let seen = SeenUser {
                id,
                external_id: u["externalId"].as_str().map(str::to_string),
                active: u["active"].as_bool().unwrap_or(true),
                groups: in_groups,
                department: u[entitle::core::scim::ENTERPRISE_SCHEMA]["department"].as_str().map(str::to_string),
            };
            let name = u["userName"].as_str().unwrap().to_string();
            assert!(out.insert(name.clone(), seen).is_none(), "two users named {name}");
        }
        out
    }
}

/// A TCP proxy in front of a target that can be switched off (connections
/// are dropped, as by a target that is down), made to hang (connections are
/// accepted and never answered) or made to answer 429 with `Retry-After` a
/// number of times: real network faults for a real server.
pub struct FaultProxy {
    pub url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hang: std::sync::Arc<std::sync::atomic::AtomicBool>,
    throttle: std::sync::Arc<std::sync::atomic::AtomicU32>,
    pub throttled: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl FaultProxy {
    /// Proxies to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let (up, throttle, throttled) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let hang = Arc::new(AtomicBool::new(false));
        let (up2, throttle2, throttled2, hang2) = (up.clone(), throttle.clone(), throttled.clone(), hang.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                if hang2.load(Ordering::SeqCst) {
                    // Read what comes, answer nothing, hold the connection.
                    tokio::spawn(async move {
                        use tokio::io::AsyncReadExt;
                        let mut buf = [0u8; 4096];
                        while matches!(inbound.read(&mut buf).await, Ok(n) if n > 0) {}
                    });
                    continue;
                }
                let (throttle, throttled, upstream) = (throttle2.clone(), throttled2.clone(), upstream.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    if throttle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                        let mut buf = [0u8; 4096];
                        let _ = inbound.read(&mut buf).await;
                        throttled.fetch_add(1, Ordering::SeqCst);
                        let _ = inbound.write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                        return;
                    }
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        FaultProxy { url, up, hang, throttle, throttled }
    }

    /// Connections are accepted and never answered (a target that hangs).
    pub fn set_hanging(&self, hang: bool) {
        self.hang.store(hang, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
    }

    /// The next `n` requests get 429 with `Retry-After: 1`.
    pub fn throttle(&self, n: u32) {
        self.throttle.store(n, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `cargo lambda watch` (1.9.2) sometimes answers a function URL call with its
/// own bare problem document instead of the function's answer: under load, for
/// answers of tens of kilobytes (about 1 in 50 audit pages of 50 KB with three
/// callers at once on two cores; never seen for small answers or one caller).
/// The function's own errors always carry `error.code`, so this shape is
/// the emulator's and never ours.
pub fn emulator_lost_response(status: u16, body: &Value) -> bool {
    status == 500 && body.get("error").is_none() && body["type"] == "https://httpstatuses.com/500"
}
