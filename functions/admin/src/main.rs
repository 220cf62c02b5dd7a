//! admin: the operator's surface, behind a function URL with IAM auth.
//! The reconcile dead-letter queue (list, redrive), parked events (list,
//! replay), and signed audit exports with the public key that verifies
//! them offline.

mod handler;
mod models;

use entitle::adapters::kms::AuditSigner;
use entitle::adapters::sqs::DeadLetterQueue;
use entitle::edge::config;
use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config::Base { aws, store } = config::start().await?;
    let app = handler::App {
        store,
        stripe: config::stripe_api(&aws)?,
        queue: config::reconcile_queue(&aws)?,
        dead_letters: DeadLetterQueue::new(config::sqs(&aws), config::required("DEAD_LETTER_QUEUE_URL")?, config::required("RECONCILE_QUEUE_URL")?),
        signer: AuditSigner::new(config::kms(&aws), config::required("AUDIT_SIGNING_KEY_ID")?),
        work: config::work_queue(&aws)?,
        pump: config::pump_limits()?,
    };
    lambda_http::run(service_fn(|req| handler::handle(&app, req))).await
}
