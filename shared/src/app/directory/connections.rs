//! Directory connections, the account API's side (ingest): issued,
//! changed, rotated and revoked under the tenant's chain, audited.

use crate::app::commit::{audited, Decision};
use crate::app::members::known;
use crate::app::ports::{Change, Directories, Tenants, Write};
use crate::app::Error;
use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::ids::TenantId;
use crate::core::provider::connection::{self, check_name, rotated, token, Connection, ConnectionUpdate, NewConnection};
use crate::core::rejection::Rejection;
use chrono::{DateTime, Utc};
use serde_json::json;

/// A new connection; returns it and its token (shown this once).
pub async fn issue<S: Tenants + Directories>(store: &S, tenant: &TenantId, new: &NewConnection, random: ([u8; 8], [u8; 32]), cause: &Cause, now: DateTime<Utc>) -> Result<(Connection, String), Error> {
    check_name(&new.name)?;
    let id = connection::new_id(&random.0);
    let (tok, hash) = token(tenant, &id, &random.1);
    let at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let conn = Connection { id: id.clone(), name: new.name.clone(), when_full: new.when_full, token_hash: hash, previous: None, created: at, rotated: None, rev: 1 };
    let committed = audited(store, tenant, |meta| {
        let conn = conn.clone();
        async move {
            known(tenant, meta)?;
            let audit = AuditEvent::new(AuditAction::DirectoryConnected, format!("directory:{}", conn.id), cause, "directory connection made: its token was issued (stored as a hash)")
                .after(json!({"name": conn.name, "when_full": conn.when_full}));
            Ok(Decision::one(Change::new(now).write(Write::Connection { connection: conn.clone(), if_rev: None }).audit(audit), ()))
        }
    })
    .await?;
    if committed.refused.is_some() {
        return Err(Rejection::conflict("directory_exists", format!("directory {id} exists; try again")).into());
    }
    Ok((conn, tok))
}

async fn change<S: Tenants + Directories>(
    store: &S,
    tenant: &TenantId,
    id: &str,
    now: DateTime<Utc>,
    f: impl Fn(&Connection) -> Option<(Write, AuditEvent, Connection)> + Sync,
) -> Result<Connection, Error> {
    let committed = audited(store, tenant, |meta| {
        let f = &f;
        async move {
            known(tenant, meta)?;
            let conn = store.connection(tenant, id).await?.ok_or_else(|| Rejection::not_found(&format!("directory {id} of tenant {tenant}")))?;
            Ok(match f(&conn) {
                None => Decision::Done(conn),
                Some((w, audit, after)) => Decision::one(Change::new(now).write(w).audit(audit), after),
            })
        }
    })
    .await?;
    Ok(committed.value)
}

/// Name or `when_full` changed.
pub async fn update<S: Tenants + Directories>(store: &S, tenant: &TenantId, id: &str, upd: &ConnectionUpdate, cause: &Cause, now: DateTime<Utc>) -> Result<Connection, Error> {
    if let Some(n) = &upd.name {
        check_name(n)?;
    }
    change(store, tenant, id, now, |c| {
        let next = Connection { name: upd.name.clone().unwrap_or_else(|| c.name.clone()), when_full: upd.when_full.or(c.when_full), rev: c.rev + 1, ..c.clone() };
        if next.name == c.name && next.when_full == c.when_full {
            return None;
        }
        let audit = AuditEvent::new(AuditAction::DirectoryReconfigured, format!("directory:{id}"), cause, "directory connection changed")
            .before(json!({"name": c.name, "when_full": c.when_full}))
            .after(json!({"name": next.name, "when_full": next.when_full}));
        Some((Write::Connection { connection: next.clone(), if_rev: Some(c.rev) }, audit, next))
    })
    .await
}

/// A new token; the old one stays valid `grace` seconds.
pub async fn rotate<S: Tenants + Directories>(store: &S, tenant: &TenantId, id: &str, grace: u64, random: [u8; 32], cause: &Cause, now: DateTime<Utc>) -> Result<(Connection, String), Error> {
    let (tok, hash) = token(tenant, id, &random);
    let conn = change(store, tenant, id, now, |c| {
        let next = rotated(c, hash.clone(), grace, now);
        let audit = AuditEvent::new(AuditAction::DirectoryTokenRotated, format!("directory:{id}"), cause, format!("token rotated: the previous one stays valid for {grace} s"))
            .after(json!({"previous_valid_until": next.previous.as_ref().map(|p| &p.1)}));
        Some((Write::Connection { connection: next.clone(), if_rev: Some(c.rev) }, audit, next))
    })
    .await?;
    Ok((conn, tok))
}

/// Revoked: its token (and any in grace) refused from now on. What it
/// pushed stays.
pub async fn revoke<S: Tenants + Directories>(store: &S, tenant: &TenantId, id: &str, cause: &Cause, now: DateTime<Utc>) -> Result<Connection, Error> {
    change(store, tenant, id, now, |c| {
        let audit = AuditEvent::new(AuditAction::DirectoryDisconnected, format!("directory:{id}"), cause, "directory connection revoked: its tokens are refused; the users and groups it pushed stay")
            .before(json!({"name": c.name}));
        Some((Write::RemoveConnection { id: c.id.clone(), rev: c.rev }, audit, c.clone()))
    })
    .await
}
