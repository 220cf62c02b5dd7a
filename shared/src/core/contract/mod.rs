//! Contracts and amendments: the pure core.
//!
//! [`document`]: the typed document; [`clauses`]: the flat clause map, diff,
//! apply and invert; [`forms`]: the three amendment forms and their
//! budgets; [`amendment`]: what an amendment is, its access impact, the
//! review rules, and the state machine of review, approval and reversal.
//!
//! A contract document is typed (term, tier, seats, add-ons, named users,
//! role mappings) and keeps every other clause as it is. For diffing and
//! reversing, a document is seen as a flat map of clauses: `seats`, `tier`,
//! `term.end`, one entry per add-on, per named user, per role mapping, per
//! other clause. An amendment, in any of its three forms (RFC 6902 JSON
//! Patch, a complete new document, a CLM record amendment), becomes a new
//! document; its change set is the difference of the two flat maps. Applying
//! a change set checks that each clause still has the value the change
//! started from, so reversing is applying the inverted change set, and a
//! reversal that meets a clause a later amendment changed is a conflict.

pub mod amendment;
pub mod clauses;
pub mod document;
pub mod forms;

pub use amendment::*;
pub use clauses::*;
pub use document::*;
pub use forms::*;

#[cfg(test)]
mod tests;
