//! access: the read side. A tenant's effective license and seat usage, one
//! member's effective access (one key lookup), the audit trail and its
//! verification.

mod handler;

use entitle::edge::config;
use lambda_http::{service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let store = config::start().await?.store;
    lambda_http::run(service_fn(|req| handler::handle(&store, req))).await
}
