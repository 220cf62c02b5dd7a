//! entitle-dev: tooling for the local stack.
//!
//!   entitle-dev esm    feed a queue to its function (see esm.rs)
//!   entitle-dev pipe   carry the state table's stream to the bus, as the template's Pipe does (see pipe.rs)
//!   entitle-dev demo   run the demo scenario against the running stack
//!   entitle-dev sweep [TIME]   fire the expiry sweep's schedule (as of TIME, RFC 3339; default now)
//!   entitle-dev billing-sync   fire the billing reconciliation's schedule
//!   entitle-dev model-tick [SECS]   fire the model tick's schedule (once; every SECS seconds with SECS)

mod demo;
mod esm;
mod pipe;
mod sweep;

#[tokio::main]
async fn main() {
    entitle::adapters::scim_client::install_tls_provider();
    let result = match std::env::args().nth(1).as_deref() {
        Some("esm") => esm::run().await,
        Some("pipe") => pipe::run().await,
        Some("demo") => demo::run().await,
        Some("sweep") => sweep::fire(std::env::args().nth(2).as_deref()).await.map(|report| println!("{report}")),
        Some("billing-sync") => sweep::billing_sync().await.map(|report| println!("{report}")),
        Some("model-tick") => match std::env::args().nth(2) {
            None => sweep::model_tick().await.map(|report| println!("{report}")),
            Some(secs) => match secs.parse::<f64>() {
                Ok(s) if s > 0.0 => sweep::model_ticks(std::time::Duration::from_secs_f64(s)).await,
                _ => Err(format!("model-tick: SECS must be a positive number of seconds, not {secs:?}")),
            },
        },
        _ => Err("usage: entitle-dev esm|pipe|demo|sweep [TIME]|billing-sync|model-tick [SECS]".to_string()),
    };
    if let Err(e) = result {
        eprintln!("entitle-dev: {e}");
        std::process::exit(1);
    }
}
