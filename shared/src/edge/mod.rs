//! The edge the functions share: parsing what arrives, and (feature `aws`)
//! the HTTP glue, the one mapping from domain errors to HTTP answers, and
//! the settings that build the adapters from the environment; and the
//! metrics the functions write to their logs.

pub mod body;
pub mod metrics;

#[cfg(feature = "aws")]
pub mod config;
#[cfg(feature = "aws")]
pub mod http;
