//! billing: Stripe's side of licenses, off the webhook route.
//!
//! - Stripe events from an Amazon EventBridge partner event source (a rule
//!   on that source invokes this function with the event in `detail`): the
//!   same path as a webhook, without a signature (AWS delivered it), and the
//!   same idempotency (an event applies once, whichever way it came).
//! - Billing reconciliation: on a schedule (every tenant's subscriptions)
//!   and on demand (one tenant's, from the billing queue). A run compares
//!   what Stripe holds with the licenses held, repairs differences, stops
//!   cleanly before its deadline and queues the rest of itself.

mod handler;

use entitle::edge::config;
use lambda_runtime::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config::Base { aws, store } = config::start().await?;
    let app = handler::App {
        store,
        stripe: config::stripe_api(&aws)?,
        queue: config::reconcile_queue(&aws)?,
        billing_queue: config::billing_queue(&aws)?,
        page_size: config::optional("BILLING_SYNC_PAGE_SIZE", entitle::app::billing::PAGE_SIZE)?.clamp(1, 100),
        margin: std::time::Duration::from_secs(config::optional("BILLING_DEADLINE_MARGIN_SECS", 10u64)?),
    };
    lambda_runtime::run(service_fn(|event| handler::handle(&app, event))).await
}
