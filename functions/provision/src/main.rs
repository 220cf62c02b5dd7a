//! provision: the SQS FIFO consumer (one message group per tenant). Computes
//! each tenant's desired access and applies the difference, reporting partial
//! batch failures and parking poison messages on the dead-letter queue with
//! their cause.

mod handler;

use entitle::edge::config;
use lambda_runtime::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config::Base { aws, store } = config::start().await?;
    let (policy, budget) = config::delivery_settings()?;
    let app = handler::App {
        store,
        tokens: config::token_store(&aws)?,
        scim: config::scim(),
        policy,
        budget,
        sqs: config::sqs(&aws),
        queue: config::reconcile_queue(&aws)?,
        work: config::work_queue(&aws)?,
        work_concurrency: config::work_concurrency()?,
        dead_letter_queue_url: config::required("DEAD_LETTER_QUEUE_URL")?,
        max_receives: config::optional::<u32>("MAX_RECEIVES", 5)?,
    };
    lambda_runtime::run(service_fn(|event| handler::handle(&app, event))).await
}
