//! Licensing model versions, the pure part: what is registered of a model,
//! rollouts and previews (which tenants, when, where they stand), what a
//! rollout does with one tenant, and a preview's difference for one tenant.
//!
//! A version names one set of rules for ever. Every tenant follows one
//! registered version ([`TenantMeta::model_version`]); a rollout moves
//! chosen tenants to another (now, at a time, or each at the end of its
//! billing period), a pin keeps one tenant on a version, and a preview shows
//! which members of which tenants would gain or lose what, before anything
//! changes.
//!
//! [`registration`]: what is registered of a model, and the registry's
//! views; [`selection`]: which tenants, and when; [`runs`]: rollouts and
//! previews as runs, their state and their tenants' outcomes; [`rollout`]:
//! what a rollout does with one tenant, and pins; [`preview`]: a preview's
//! difference for one tenant, and its pages.

pub mod preview;
pub mod registration;
pub mod rollout;
pub mod runs;
pub mod selection;

pub use preview::*;
pub use registration::*;
pub use rollout::*;
pub use runs::*;
pub use selection::*;

#[cfg(test)]
mod tests;
