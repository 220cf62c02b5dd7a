//! The adapters: the ports of [`crate::app::ports`] over AWS (DynamoDB,
//! SQS, Secrets Manager, KMS) and HTTP (SCIM targets, Stripe's API). Events
//! reach EventBridge from DynamoDB's stream, not from here. They touch
//! the world; what to do is decided in the core and the use cases.

pub mod dynamodb;
pub mod kms;
pub mod scim_client;
pub mod secrets;
pub mod sqs;
pub mod stripe;
pub mod tls;
