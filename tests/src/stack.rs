//! The running local stack as the tests reach it: its settings, its
//! clients, invoking its functions, and waiting on observable marks.

use crate::{emulator_lost_response, function_url_event, stripe, unique};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::types::AttributeValue;
use entitle::adapters::dynamodb::Dynamo;
use entitle::core::signature::Secret;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

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

pub(crate) fn settings() -> HashMap<String, String> {
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

    /// The DynamoDB adapter the functions use, on the stack's tables.
    pub fn store(&self) -> Dynamo {
        Dynamo::new(self.ddb.clone(), self.tables.state.clone(), self.tables.audit.clone(), self.model())
    }

    /// The licensing model the stack runs with (the shipped one).
    pub fn model(&self) -> std::sync::Arc<entitle::core::model::LicensingModel> {
        std::sync::Arc::new(entitle::core::model::LicensingModel::default_model())
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
