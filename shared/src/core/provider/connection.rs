//! Directory connections: how an identity provider authenticates to a
//! tenant's directory. A tenant may connect several (one per IdP); each has
//! a bearer token, shown once, stored only as its SHA-256. A token names
//! its tenant and connection, so that the one stored item it is checked
//! against is found by key, and a token of one tenant used on another
//! tenant's directory is answered 404 (it reads and writes nothing there).
//!
//! Rotation without downtime: the new token is valid at once, the one it
//! replaces stays valid for a grace period ([`DEFAULT_GRACE_SECONDS`],
//! or what the rotation asks, at most [`MAX_GRACE_SECONDS`]), then is
//! refused. A second rotation within the grace period ends the older
//! token's grace at once (two tokens at most are valid).

use crate::core::ids::TenantId;
use crate::core::model::WhenFull;
use crate::core::rejection::{Kind, Rejection};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How long a replaced token stays valid by default: a day, time for the
/// IdP's admin to paste the new one.
pub const DEFAULT_GRACE_SECONDS: u64 = 24 * 3600;
pub const MAX_GRACE_SECONDS: u64 = 7 * 24 * 3600;
/// Every token starts so (secret scanners can recognise it).
pub const TOKEN_PREFIX: &str = "entd_";

/// A connection as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub id: String,
    pub name: String,
    /// What a push does when no seat is free (`None`: the licensing model's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_full: Option<WhenFull>,
    /// SHA-256 (hex) of the current token's secret.
    pub token_hash: String,
    /// The replaced token's hash and until when (RFC 3339) it stays valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<(String, String)>,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotated: Option<String>,
    /// Its revision: each write moves it on (rotations are conditional on it).
    pub rev: u64,
}

/// The connection as the account API shows it (never a token or hash).
pub fn view(tenant: &TenantId, c: &Connection, model_default: WhenFull, scim_base_url: &str) -> serde_json::Value {
    serde_json::json!({
        "tenant_id": tenant, "directory_id": c.id, "name": c.name,
        "when_full": c.when_full.unwrap_or(model_default),
        "scim_base_url": scim_base_url,
        "created_at": c.created, "rotated_at": c.rotated,
        "previous_token_valid_until": c.previous.as_ref().map(|(_, until)| until),
    })
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A connection's id from random bytes.
pub fn new_id(random: &[u8; 8]) -> String {
    format!("d{}", hex::encode(random))
}

/// The token of a connection, from 32 random bytes: `entd_<tenant hex>_<connection>_<secret>`.
pub fn token(tenant: &TenantId, connection: &str, random: &[u8; 32]) -> (String, String) {
    let secret = hex::encode(random);
    (format!("{TOKEN_PREFIX}{}_{connection}_{secret}", hex::encode(tenant.as_str())), hash(&secret))
}

/// What a token names, read; `None` for anything that is not one.
pub fn parse_token(raw: &str) -> Option<(TenantId, String, String)> {
    let rest = raw.strip_prefix(TOKEN_PREFIX)?;
    let mut parts = rest.split('_');
    let (t, c, secret) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || secret.len() != 64 || !c.starts_with('d') || c.len() != 17 || !c[1..].bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tenant = TenantId::parse(String::from_utf8(hex::decode(t).ok()?).ok()?).ok()?;
    Some((tenant, c.to_string(), secret.to_string()))
}

/// The bearer token of an `Authorization` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim())
}

/// 401 with the challenge a SCIM client expects.
pub fn unauthenticated() -> Rejection {
    Rejection::new(Kind::Unauthenticated, "unauthenticated", "a directory connection's bearer token is required (Authorization: Bearer <token>); this one is unknown, revoked or past its grace period")
}

/// Whether `secret` is the connection's token at `now` (the current one,
/// or the replaced one within its grace period). Constant-time compare.
pub fn accepts(c: &Connection, secret: &str, now: DateTime<Utc>) -> bool {
    let h = hash(secret);
    let current = bool::from(h.as_bytes().ct_eq(c.token_hash.as_bytes()));
    let previous = c.previous.as_ref().is_some_and(|(p, until)| {
        let within = DateTime::parse_from_rfc3339(until).is_ok_and(|u| now < u.with_timezone(&Utc));
        within && bool::from(h.as_bytes().ct_eq(p.as_bytes()))
    });
    current || previous
}

/// The connection after a rotation to the token hashed `new_hash` at `now`.
pub fn rotated(c: &Connection, new_hash: String, grace_seconds: u64, now: DateTime<Utc>) -> Connection {
    let until = now + chrono::Duration::seconds(i64::try_from(grace_seconds.min(MAX_GRACE_SECONDS)).unwrap_or(0));
    Connection {
        previous: Some((c.token_hash.clone(), until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))),
        token_hash: new_hash,
        rotated: Some(now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        rev: c.rev + 1,
        ..c.clone()
    }
}

/// `POST /tenants/{tenant}/directories`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConnection {
    pub name: String,
    #[serde(default)]
    pub when_full: Option<WhenFull>,
}

/// `PATCH /tenants/{tenant}/directories/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionUpdate {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub when_full: Option<WhenFull>,
}

/// What a connection's pushes did, counted after each one lands (best
/// effort: a push whose count failed is not counted): when it last pushed
/// a change, how many Users and Groups its creations and deletions leave
/// it holding, and how many pushes were refused for the seat cap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushStats {
    pub last_push: Option<String>,
    pub users: i64,
    pub groups: i64,
    pub refused: u64,
    pub last_refused: Option<String>,
}

/// One push's part of its connection's [`PushStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushNote {
    /// +1 for a User created, -1 for one deleted.
    pub users: i64,
    /// +1 for a Group created, -1 for one deleted.
    pub groups: i64,
    /// Refused for the seat cap (nothing else changed).
    pub refused: bool,
}

/// `POST .../directories/{id}/rotate` (the body is optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    #[serde(default)]
    pub grace_seconds: Option<u64>,
}

pub fn check_name(name: &str) -> Result<(), Rejection> {
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(Rejection::invalid("invalid_directory", vec!["name: 1 to 100 characters".into()]));
    }
    Ok(())
}

impl Rotation {
    pub fn grace(&self) -> Result<u64, Rejection> {
        match self.grace_seconds {
            None => Ok(DEFAULT_GRACE_SECONDS),
            Some(g) if g <= MAX_GRACE_SECONDS => Ok(g),
            Some(_) => Err(Rejection::invalid("invalid_rotation", vec![format!("grace_seconds: 0 to {MAX_GRACE_SECONDS}")])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_token_names_its_tenant_and_connection() {
        let t = TenantId::parse("acme.eu-1").unwrap();
        let id = new_id(&[7; 8]);
        let (token, hashed) = token(&t, &id, &[9; 32]);
        assert!(token.starts_with("entd_"));
        let (tenant, conn, secret) = parse_token(&token).unwrap();
        assert_eq!((tenant, conn.as_str()), (t, id.as_str()));
        assert_eq!(hash(&secret), hashed);
        for bad in ["", "entd_", "Bearer x", &token[..token.len() - 1], &format!("{token}_x"), &token.replace("entd_", "ent_")] {
            assert!(parse_token(bad).is_none(), "{bad}");
        }
        assert_eq!(bearer(Some("bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
    }

    #[test]
    fn a_rotated_token_stays_valid_for_its_grace_period_only() {
        let t = TenantId::parse("t1").unwrap();
        let (old_token, old_hash) = token(&t, "d0000000000000001", &[1; 32]);
        let (new_token, new_hash) = token(&t, "d0000000000000001", &[2; 32]);
        let secret = |tok: &str| parse_token(tok).unwrap().2;
        let c =
            Connection { id: "d0000000000000001".into(), name: "okta".into(), when_full: None, token_hash: old_hash, previous: None, created: "2026-12-01T00:00:00Z".into(), rotated: None, rev: 1 };
        let now = at("2026-12-02T10:00:00Z");
        assert!(accepts(&c, &secret(&old_token), now));
        assert!(!accepts(&c, &secret(&new_token), now));
        let r = rotated(&c, new_hash, 3600, now);
        assert!(accepts(&r, &secret(&new_token), now));
        assert!(accepts(&r, &secret(&old_token), at("2026-12-02T10:59:59Z")));
        assert!(!accepts(&r, &secret(&old_token), at("2026-12-02T11:00:00Z")));
        // A second rotation: the first token is out at once.
        let (_, third_hash) = token(&t, "d0000000000000001", &[3; 32]);
        let r2 = rotated(&r, third_hash, 3600, now);
        assert!(!accepts(&r2, &secret(&old_token), now));
        assert!(accepts(&r2, &secret(&new_token), now));
        assert!(Rotation { grace_seconds: Some(MAX_GRACE_SECONDS + 1) }.grace().is_err());
        assert_eq!(Rotation::default().grace().unwrap(), DEFAULT_GRACE_SECONDS);
    }
}
