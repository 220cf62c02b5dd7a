//! SCIM 2.0 targets, the pure part. No I/O: the client (an adapter) and
//! the delivery use case do the talking.
//!
//! [`target`]: a target's configuration, as stored and as shown, and its
//! delivery records; [`health`]: how a target has been answering, retries
//! and quarantine; [`profile`]: what each kind of target can do, as its
//! vendor documents it; [`protocol`]: what a target should hold for a member,
//! the requests that get it there, drift repair plans, what a target's
//! answers mean.
//!
//! The mapping is fixed where RFC 7643 and the providers agree (userName =
//! email, externalId = the member's id, `active`) and configurable where
//! they do not (the group names, enterprise extension attributes).

pub mod health;
pub mod profile;
pub mod protocol;
pub mod target;

pub use health::*;
pub use profile::*;
pub use protocol::*;
pub use target::*;

#[cfg(test)]
mod tests;
