//! amend: contract creation and amendments behind a function URL. Parses
//! changes at clause level, validates them, shows their access impact before
//! anything is applied, holds risky ones for review, schedules future-dated
//! ones, and reverses an amendment on request.

mod handler;

use entitle::edge::config;
use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config::Base { aws, store } = config::start().await?;
    let app = handler::App { store, queue: config::reconcile_queue(&aws)? };
    lambda_http::run(service_fn(|req| handler::handle(&app, req))).await
}
