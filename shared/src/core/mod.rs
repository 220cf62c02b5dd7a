//! The pure core: types and decisions. No I/O, no async, no clock: every
//! function is given the instant it decides for. Most tests live here.
//!
//! [`model`] (the licensing model), [`license`] (source ordering, the
//! effective license), [`access`] (desired access, seats, the provisioning
//! plan), [`seats`] (who holds a seat, who waits, in which order), [`reassign`]
//! (the tenant's admin giving and releasing seats), [`reconcile`] (its transactions), [`expiry`] (time-based
//! transitions), [`audit`] (the hash chain and its typed actions),
//! [`events`] (what the bus is told), [`contract`] (documents, amendments,
//! review), [`scim`] (targets, their health, the protocol), [`sources`]
//! (normalising Stripe and CRM events), [`signature`] (webhook signatures),
//! [`egress`] (where Entitle may connect), [`views`] (what the API shows),
//! [`rejection`] (why a request is refused), [`ids`], [`tenant`] (what is
//! stored of a tenant), [`provider`] (the tenant's directory: Entitle as a
//! SCIM service provider its identity providers push users into), [`versions`]
//! (licensing model versions: registration, rollouts, previews, pins).

pub mod access;
pub mod audit;
pub mod contract;
pub mod egress;
pub mod events;
pub mod expiry;
pub mod explain;
pub mod ids;
pub mod license;
pub mod model;
pub mod portal;
pub mod provider;
pub mod reassign;
pub mod reconcile;
pub mod rejection;
pub mod scim;
pub mod seats;
pub mod signature;
pub mod sources;
pub mod tenant;
pub mod token;
pub mod versions;
pub mod views;
