//! The emulator and end-to-end tests: one test binary (the crate and its
//! five AWS SDKs linked once), a module per area. `dev/test.sh` runs it
//! phase by phase, each module by its filter (`admin::`), so that areas
//! that act on the whole stack keep apart as they need to.

mod admin;
mod amendments;
mod billing;
mod directory;
mod hardening;
mod input_safety;
mod licenses_to_access;
mod logs;
mod models;
mod portal;
mod profiles;
mod provision_emulator;
mod scim;
mod seats;
mod sweep;
mod tokens;
mod versions_emulator;
