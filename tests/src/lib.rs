//! Harness for the workspace-level tests: the running local stack (DynamoDB
//! Local, moto, the function binaries under `cargo lambda watch`, the event
//! source mapping stand-in, scim2-server, localstripe), reached exactly as a user reaches
//! it, plus the real SDK clients for looking at (and tampering with) what is
//! stored.
//!
//! `make test` starts a stack and points `ENTITLE_STACK_ENV` at its settings.
//! Without it these tests fail loudly: they never skip.

pub mod browser;
mod calls;
pub mod directory;
mod events;
pub mod hostile;
pub mod openapi;
mod proxy;
pub mod runtime;
mod scim;
mod stack;
pub mod stripe;
pub mod verify;
mod wire;

pub use events::*;
pub use proxy::{emulator_lost_response, FaultProxy};
pub use scim::{Scim, SeenUser};
pub use stack::{function_env, stack_dir, Stack, Tables, WAIT};
pub use wire::{read_request, WireRequest};
