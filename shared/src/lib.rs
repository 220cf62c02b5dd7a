//! Entitle's common crate.
//!
//! The pure core (no I/O): [`model`] (the licensing model), [`license`]
//! (source ordering, effective license), [`access`] (desired access, seats,
//! the provisioning plan), [`audit`] (the hash chain), [`signature`] (webhook
//! signatures), [`stripe`] and [`crm`] (normalising sources), [`api`] (the
//! JSON shapes and errors of the HTTP API).
//!
//! With the `aws` feature: [`store`] (DynamoDB), [`queue`] (SQS), [`http`]
//! (function URL glue) and [`config`] (clients and settings built once per
//! process).

pub mod access;
pub mod api;
pub mod audit;
pub mod contract;
pub mod crm;
pub mod egress;
pub mod expiry;
pub mod ids;
pub mod license;
pub mod model;
pub mod scim;
pub mod signature;
pub mod stripe;

#[cfg(feature = "aws")]
pub mod config;
#[cfg(feature = "aws")]
pub mod contract_store;
#[cfg(feature = "aws")]
pub mod due;
#[cfg(feature = "aws")]
pub mod events;
#[cfg(feature = "aws")]
pub mod http;
#[cfg(feature = "aws")]
pub mod queue;
#[cfg(feature = "aws")]
pub mod scim_client;
#[cfg(feature = "aws")]
pub mod store;
#[cfg(feature = "aws")]
pub mod signing_secrets;
#[cfg(feature = "aws")]
pub mod sweep;
#[cfg(feature = "aws")]
pub mod targets;
#[cfg(feature = "aws")]
pub mod delivery;
