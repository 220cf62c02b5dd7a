//! Normalising what license sources send into license changes.

pub mod crm;
pub mod stripe;
