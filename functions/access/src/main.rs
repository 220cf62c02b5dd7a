//! access: the read side. A tenant's effective license and seat usage, one
//! member's effective access (one key lookup), the audit trail and its
//! verification; signed member tokens and license files, and the public
//! keys that verify them (`/.well-known/jwks.json`). Two deployments in
//! production: the IAM-authenticated reads (`ACCESS_ROUTES=private`, which
//! may sign and not publish) and the public keys alone (`ACCESS_ROUTES=jwks`,
//! which may publish and not sign); locally one serves all.

mod handler;

use entitle::edge::config;
use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config::Base { aws, store } = config::start().await?;
    let app = handler::App { store, keys: config::token_keys(&aws)?, issuer: std::env::var("TOKEN_ISSUER").unwrap_or_else(|_| "entitle".into()), routes: handler::Routes::from_env()? };
    lambda_http::run(service_fn(|req| handler::handle(&app, req))).await
}
