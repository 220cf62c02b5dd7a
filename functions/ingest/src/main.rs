//! ingest: Stripe webhooks, signed CRM license records and the app's account
//! events, behind one function URL. Verifies, normalises, records the change
//! idempotently and in source order, and queues a reconcile of the tenant.

mod handler;

use entitle::config;
use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    config::init_logging();
    let aws = config::aws().await;
    let app = handler::App {
        store: config::store(&aws)?,
        queue: config::reconcile_queue(&aws)?,
        stripe_secrets: config::secrets("STRIPE_WEBHOOK_SECRETS")?,
        crm_secrets: config::secrets("CRM_SIGNING_SECRETS")?,
        routes: handler::Routes::from_env()?,
        tokens: config::token_store(&aws)?,
        allow_http_targets: config::allow_http_targets(),
    };
    lambda_http::run(service_fn(|req| handler::handle(&app, req))).await
}
