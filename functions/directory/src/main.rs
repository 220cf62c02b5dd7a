//! directory: the tenant's SCIM 2.0 service provider (RFC 7643/7644), what
//! its identity providers (Okta, Microsoft Entra ID, ...) push users and
//! groups into, under the license's seat rules at the moment of the push.
//! One function URL; each request authenticated by a directory
//! connection's bearer token.

mod handler;

use entitle::edge::config;
use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config::Base { aws, store } = config::start().await?;
    let app = handler::App { store, queue: config::reconcile_queue(&aws)? };
    lambda_http::run(service_fn(|req| handler::handle(&app, req))).await
}
