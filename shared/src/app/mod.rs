//! The use cases, written against the ports of [`ports`]: what Entitle does,
//! in terms of what it needs from the world. Their errors are domain errors
//! ([`Error`]): a [`Rejection`] for the caller, or a port that failed.
//!
//! [`commit::audited`] is the one write path of a tenant: read its head,
//! decide, commit the change with its audit records under the head, decide
//! again when the head moved.

pub mod audit;
pub mod billing;
pub mod commit;
pub mod contracts;
pub mod delivery;
pub mod directory;
pub mod licenses;
pub mod members;
pub mod portal;
pub mod ports;
pub mod reconcile;
pub mod rules;
pub mod seats;
pub mod sweep;
pub mod targets;
pub mod tokens;
pub mod versions;

#[cfg(any(test, feature = "memory"))]
pub mod memory;

#[cfg(test)]
mod directory_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod versions_tests;

use crate::core::ids::TenantId;
use crate::core::rejection::Rejection;
pub use ports::PortError;

/// Why a use case did not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's request cannot be done as it is (named, for the caller).
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// A port failed: the request may be retried.
    #[error(transparent)]
    Port(#[from] PortError),
    /// A service the use case depends on (Stripe's API) did not answer
    /// usefully: nothing was changed, and the request may be retried.
    #[error(transparent)]
    Upstream(#[from] ports::Upstream),
    /// Other writers kept moving the tenant's chain head.
    #[error("gave up after {attempts} attempts: tenant {tenant} kept changing underneath")]
    Contention { tenant: TenantId, attempts: u32 },
}

impl From<ports::CommitError> for Error {
    fn from(e: ports::CommitError) -> Self {
        match e {
            ports::CommitError::Port(p) => Error::Port(p),
            // Handled by `commit::audited`; reaching here is a bug of the caller.
            other => Error::Port(PortError::Corrupt { key: "commit".into(), why: other.to_string() }),
        }
    }
}

/// An error and its sources, for the log: `a: b: c`.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}
