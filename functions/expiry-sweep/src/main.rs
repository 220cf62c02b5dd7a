//! expiry-sweep: every time-based transition, run by an EventBridge schedule.
//! It evaluates "as of" the event's `time` (never the wall clock), reads only
//! what is due, is safe to run twice at once, and stops cleanly before its
//! deadline so that the next run continues where it stopped. It also signs
//! a checkpoint of each tenant's audit chain head that moved.

mod handler;

use entitle::adapters::kms::AuditSigner;
use entitle::edge::config;
use lambda_runtime::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config::Base { aws, store } = config::start().await?;
    let app = handler::App {
        store,
        model_text: config::model_text()?,
        queue: config::reconcile_queue(&aws)?,
        work: config::work_queue(&aws)?,
        pump: config::pump_limits()?,
        signer: AuditSigner::new(config::kms(&aws), config::required("AUDIT_SIGNING_KEY_ID")?),
        allow_future: config::flag("SWEEP_ALLOW_FUTURE"),
    };
    lambda_runtime::run(service_fn(|event| handler::handle(&app, event))).await
}
