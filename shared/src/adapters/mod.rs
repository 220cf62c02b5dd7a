//! The adapters: the ports of [`crate::app::ports`] over AWS (DynamoDB,
//! SQS, EventBridge, Secrets Manager) and HTTP (SCIM targets, Stripe's API). They touch
//! the world; what to do is decided in the core and the use cases.

pub mod dynamodb;
pub mod eventbridge;
pub mod scim_client;
pub mod secrets;
pub mod sqs;
pub mod stripe;
