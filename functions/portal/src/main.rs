//! portal: the tenant's admin in a browser. Server-rendered pages on their
//! own function URL, reached by a short-lived link (`POST
//! /tenants/{tenant}/portal-links` on ingest) that a person spends, once,
//! for a session: the seats, the members, the directory connections, the
//! SCIM targets and the audit trail of one tenant.

mod handler;
mod pages;
mod web;

use entitle::edge::config;
use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config::Base { aws, store } = config::start().await?;
    let app = handler::App {
        store,
        queue: config::reconcile_queue(&aws)?,
        keys: config::signing_secrets(&aws, "PORTAL_SESSION_SECRET_ID")?,
        signer: entitle::adapters::kms::AuditSigner::new(config::kms(&aws), config::required("AUDIT_SIGNING_KEY_ID")?),
        brand: web::Brand::from_env()?,
    };
    lambda_http::run(service_fn(|req| handler::handle(&app, req))).await
}
