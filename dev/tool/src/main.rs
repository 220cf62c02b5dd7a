//! entitle-dev: tooling for the local stack.
//!
//!   entitle-dev esm    feed the reconcile queue to provision (see esm.rs)
//!   entitle-dev demo   run the demo scenario against the running stack

mod demo;
mod esm;

#[tokio::main]
async fn main() {
    let result = match std::env::args().nth(1).as_deref() {
        Some("esm") => esm::run().await,
        Some("demo") => demo::run().await,
        _ => Err("usage: entitle-dev esm|demo".to_string()),
    };
    if let Err(e) = result {
        eprintln!("entitle-dev: {e}");
        std::process::exit(1);
    }
}
