//! ingest: Stripe webhooks, signed CRM license records and the app's account
//! events, behind one function URL. Verifies; for Stripe, reads the
//! subscription's state from Stripe's API; records the change idempotently
//! and in order, and queues a reconcile of the tenant.

mod handler;

use entitle::edge::config;
use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config::Base { aws, store } = config::start().await?;
    let routes = handler::Routes::from_env()?;
    // The accounts deployment serves no webhook and gets no signing secret.
    let webhook_secrets = match routes {
        handler::Routes::Accounts => None,
        _ => Some(handler::WebhookSecrets { stripe: config::signing_secrets(&aws, "STRIPE_WEBHOOK_SECRET_ID")?, crm: config::signing_secrets(&aws, "CRM_SIGNING_SECRET_ID")? }),
    };
    let webhooks = routes != handler::Routes::Accounts;
    let accounts = routes != handler::Routes::Webhooks;
    let app = handler::App {
        store,
        queue: config::reconcile_queue(&aws)?,
        stripe: webhooks.then(|| config::stripe_api(&aws)).transpose()?,
        billing_queue: accounts.then(|| config::billing_queue(&aws)).transpose()?,
        webhook_secrets,
        routes,
        tokens: config::token_store(&aws)?,
        egress: config::egress(),
    };
    lambda_http::run(service_fn(|req| handler::handle(&app, req))).await
}
