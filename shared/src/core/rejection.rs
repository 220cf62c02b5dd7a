//! Why a request is refused: the caller's problem, named, never an internal
//! failure. Decisions anywhere (parsing a source event, validating an
//! amendment, a seat or email rule) refuse with a [`Rejection`]; the edge
//! alone turns its [`Kind`] into an HTTP status (`edge::http`).

use serde::Serialize;
use serde_json::{Map, Value};

/// What kind of refusal it is (the edge maps each to one HTTP status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The input cannot be read (400).
    Malformed,
    /// The caller could not be authenticated (401).
    Unauthenticated,
    /// Authenticated, but not allowed to do this (403).
    Forbidden,
    /// What it names does not exist (404).
    NotFound,
    /// The resource exists, but not this method on it (405).
    MethodNotAllowed,
    /// It contradicts the current state (409).
    Conflict,
    /// A precondition of the request (`If-Match`) does not hold (412).
    Precondition,
    /// It is larger than allowed (413).
    TooLarge,
    /// Well formed, but not acceptable (422).
    Invalid,
    /// Too many such requests in a while: try later (429).
    RateLimited,
    /// A part of a protocol Entitle does not serve (501; SCIM's `/Bulk`).
    NotImplemented,
}

/// A refusal: its kind, a stable code, a message that names the problem,
/// and more fields for the caller (`problems`, `current_version`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    pub kind: Kind,
    pub code: &'static str,
    pub message: String,
    pub details: Map<String, Value>,
}

impl Rejection {
    pub fn new(kind: Kind, code: &'static str, message: impl Into<String>) -> Self {
        Rejection { kind, code, message: message.into(), details: Map::new() }
    }
    /// One more field of the error object.
    pub fn with(mut self, key: &str, value: impl Serialize) -> Self {
        self.details.insert(key.to_string(), serde_json::to_value(value).expect("plain data serialises"));
        self
    }
    /// Every problem, in the message and as a list.
    pub fn invalid(code: &'static str, problems: Vec<String>) -> Self {
        Self::new(Kind::Invalid, code, problems.join("; ")).with("problems", problems)
    }
    pub fn malformed(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Malformed, code, message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(Kind::NotFound, "not_found", format!("{what} not found"))
    }
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, code, message)
    }
    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, code, message)
    }
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Kind::Unauthenticated, "invalid_signature", message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(Kind::TooLarge, "payload_too_large", message)
    }
    pub fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(Kind::MethodNotAllowed, "method_not_allowed", message)
    }
    pub fn rate_limited(message: impl Into<String>) -> Self {
        Self::new(Kind::RateLimited, "rate_limited", message)
    }
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(Kind::NotImplemented, "not_implemented", message)
    }
}
