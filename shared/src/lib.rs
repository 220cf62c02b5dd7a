//! Entitle's common crate, in layers a reader can tell from the folder:
//!
//! - [`core`]: pure types and decisions. Touches nothing: no I/O, no
//!   async, no clock. Most tests live here.
//! - [`app`]: the use cases (record a license change, create or remove a
//!   member, reconcile a tenant, apply or review or reverse an amendment,
//!   run a sweep, deliver to SCIM targets), written against narrow ports
//!   (traits) for what they need from the world. Their errors are domain
//!   errors. In-memory ports (feature `memory`) make them testable in
//!   milliseconds.
//! - [`adapters`] (feature `aws`): DynamoDB, SQS, EventBridge, Secrets
//!   Manager and the SCIM HTTP client, implementing the ports. Every write
//!   of a tenant goes through one audited, optimistic commit.
//! - [`edge`]: what the functions share at their edge: request bodies,
//!   and (feature `aws`) HTTP glue with the one mapping from domain errors
//!   to answers, and the settings that build the adapters.

pub mod app;
pub mod core;
pub mod edge;

#[cfg(feature = "aws")]
pub mod adapters;
