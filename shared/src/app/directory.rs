//! The tenant's directory: what its identity providers push, as members.
//!
//! A User pushed is a member created under the seat rules of the moment
//! (a seat if one is free and nobody waits, otherwise in line, or refused
//! when the tenant chose so); `active: false` suspends it (its seat is
//! freed); `DELETE` removes it. A Group's members get its name as one of
//! their groups, so that the licensing model's role rules apply. Member
//! writes are committed without the chain's lock, like the app's own
//! account events (each is one transaction with its audit record, pending,
//! and its delivery records), conditional on the member's revision and on
//! the walk's goal as read: so pushes in one tenant do not queue behind
//! each other, and none lands on a member with the tenant's access it
//! missed.
//!
//! Every change is audited with cause `directory`, the connection and the
//! request id.
//!
//! [`session`]: a request of one connection, and the member write every
//! operation shares; [`users`] and [`groups`]: the SCIM resources;
//! [`connections`]: the connections themselves, as the account API issues
//! them.

pub mod connections;
mod groups;
mod session;
mod users;

pub use session::Session;

use super::ports::{Directories, Models, Targets, Tenants};
use super::Error;
use crate::core::ids::TenantId;
use crate::core::provider::connection::{self, Connection};
use crate::core::provider::resource::{self, read_user};
use crate::core::provider::schemas::{self, LIST};
use crate::core::rejection::{Kind, Rejection};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Reads again after a concurrent change of the same member or group.
const ATTEMPTS: u32 = 8;

/// A request as the directory received it, before it is authenticated.
pub struct Incoming<'r> {
    /// The tenant its path names.
    pub tenant: &'r str,
    pub authorization: Option<&'r str>,
    pub request_id: String,
    /// The directory's base URL for this tenant.
    pub base: String,
    pub now: DateTime<Utc>,
}

/// A resource as answered, and whether the request changed anything (a
/// reconcile is then queued: deliveries, seats freed).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub resource: Value,
    pub changed: bool,
}

/// The connection a request's bearer token names, checked; and the
/// tenant's `META`. A token of another tenant: 404 (it reads nothing here).
pub async fn authenticate<S: Directories + Tenants>(store: &S, tenant: &str, authorization: Option<&str>, now: DateTime<Utc>) -> Result<(TenantId, Connection), Error> {
    let (token_tenant, id, secret) = connection::bearer(authorization).and_then(connection::parse_token).ok_or_else(connection::unauthenticated)?;
    let conn = store.connection(&token_tenant, &id).await?.filter(|c| connection::accepts(c, &secret, now)).ok_or_else(connection::unauthenticated)?;
    if token_tenant.as_str() != tenant {
        return Err(Rejection::not_found(&format!("tenant {tenant}")).into());
    }
    Ok((token_tenant, conn))
}

/// `POST /Users` of a sync, on one read before its commit (as the app's
/// `POST .../members`): the connection is checked on the read that also
/// brings the tenant's `META`, the member and who holds the userName.
/// `None` when the request is not a plain push of this tenant's token (a
/// token of another tenant, a body that is no User): `authenticate` and
/// `create_user` answer it, with the same answers in the same order.
pub async fn push_user<'a, S: Directories + Tenants + Targets + Models>(store: &'a S, incoming: Incoming<'_>, body: &Value) -> Result<Option<(Session<'a, S>, Answer)>, Error> {
    let Incoming { tenant, authorization, request_id, base, now } = incoming;
    let (token_tenant, id, secret) = connection::bearer(authorization).and_then(connection::parse_token).ok_or_else(connection::unauthenticated)?;
    let Ok(pushed) = read_user(body) else { return Ok(None) };
    if token_tenant.as_str() != tenant {
        return Ok(None);
    }
    let mut view = store.push_view(&token_tenant, &id, &resource::user_id_for(&pushed), &pushed.user_name).await?;
    let conn = view.connection.take().filter(|c| connection::accepts(c, &secret, now)).ok_or_else(connection::unauthenticated)?;
    let s = Session { store, tenant: token_tenant, connection: conn, request_id, base, now, targets: Default::default() };
    let answer = s.create_pushed(&pushed, Some(view)).await?;
    Ok(Some((s, answer)))
}

/// What an `If-Match` header allows: `*`, or the version (weak or not).
pub fn check_if_match(if_match: Option<&str>, rev: u64) -> Result<(), Rejection> {
    let Some(h) = if_match.map(str::trim).filter(|h| !h.is_empty()) else { return Ok(()) };
    let norm = |v: &str| v.trim().trim_start_matches("W/").trim_matches('"').to_string();
    if h == "*" || h.split(',').any(|v| norm(v) == rev.to_string()) {
        return Ok(());
    }
    Err(Rejection::new(Kind::Precondition, "precondition_failed", format!("If-Match {h} is not the resource's version {}", resource::etag(rev))))
}

/// A list answer (RFC 7644 §3.4.2): `startIndex` is 1-based, `count` at
/// most [`schemas::MAX_RESULTS`] (0: only the total).
pub fn list_response(all: Vec<Value>, start: usize, count: usize) -> Value {
    let start = start.max(1);
    let count = count.min(schemas::MAX_RESULTS);
    let total = all.len();
    let page: Vec<Value> = all.into_iter().skip(start - 1).take(count).collect();
    json!({"schemas": [LIST], "totalResults": total, "startIndex": start, "itemsPerPage": page.len(), "Resources": page})
}
