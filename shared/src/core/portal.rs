//! The admin's portal: short-lived links, the sessions they open, and who
//! may hold one. Pure: the secrets are given, the clock is given.
//!
//! A link (`POST /tenants/{tenant}/portal-links`) is a random token whose
//! SHA-256 alone is stored, with its tenant, admin, landing page and
//! expiry. Opening it is two steps: its GET shows a button and changes
//! nothing (link scanners fetch links), the button's POST spends it, once,
//! for a session. A session is a random id, also stored as its hash, sent
//! back in a cookie signed with the portal's key (HMAC-SHA256; any key of
//! the rotation set verifies, the first signs); it lives while used (30
//! minutes idle) and while its admin holds a privileged role.

use crate::core::access::is_privileged;
use crate::core::ids::{TenantId, UserId};
use crate::core::model::LicensingModel;
use crate::core::rejection::Rejection;
use crate::core::signature::Secret;
use crate::core::tenant::{MemberItem, TenantMeta};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A link's lifetime when the request does not say, and the most it may ask.
pub const DEFAULT_TTL_SECS: u64 = 300;
pub const MAX_TTL_SECS: u64 = 900;
/// A session ends after this long without a request.
pub const IDLE_SECS: i64 = 30 * 60;
/// A session's last use is written at most this often (a page view within
/// it costs no write).
pub const TOUCH_EVERY_SECS: i64 = 60;
/// Links one tenant may create per minute.
pub const LINKS_PER_MINUTE: u32 = 20;

/// The page a link lands on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    #[default]
    Overview,
    Seats,
    Directory,
    Audit,
}

impl Intent {
    /// The page's path segment.
    pub fn page(self) -> &'static str {
        match self {
            Intent::Overview => "overview",
            Intent::Seats => "seats",
            Intent::Directory => "directory",
            Intent::Audit => "audit",
        }
    }
}

/// The body of `POST /tenants/{tenant}/portal-links`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    pub admin: UserId,
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    #[serde(default)]
    pub intent: Option<Intent>,
}

impl LinkRequest {
    /// The link's lifetime: 1 to [`MAX_TTL_SECS`], default [`DEFAULT_TTL_SECS`].
    pub fn ttl(&self) -> Result<u64, Rejection> {
        match self.ttl_seconds {
            None => Ok(DEFAULT_TTL_SECS),
            Some(t) if (1..=MAX_TTL_SECS).contains(&t) => Ok(t),
            Some(t) => Err(Rejection::invalid("invalid_ttl", vec![format!("ttl_seconds: {t} is not between 1 and {MAX_TTL_SECS}")])),
        }
    }
}

/// A stored link (its key is the SHA-256 of its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    pub tenant: TenantId,
    pub admin: UserId,
    pub intent: Intent,
    /// Unix seconds.
    pub expires_at: i64,
    /// When it was spent for a session (Unix seconds).
    #[serde(default)]
    pub used_at: Option<i64>,
}

/// What a link's token finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    Open(Link),
    Used,
    Expired,
    Unknown,
}

impl LinkState {
    pub fn of(link: Option<Link>, now: i64) -> Self {
        match link {
            None => LinkState::Unknown,
            Some(l) if l.used_at.is_some() => LinkState::Used,
            Some(l) if now >= l.expires_at => LinkState::Expired,
            Some(l) => LinkState::Open(l),
        }
    }
}

/// A stored session (its key is the SHA-256 of its id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub tenant: TenantId,
    pub admin: UserId,
    /// The token every form of this session carries.
    pub csrf: String,
    /// Unix seconds of its last request (written at most every
    /// [`TOUCH_EVERY_SECS`]).
    pub last_seen: i64,
}

impl Session {
    pub fn idle_expired(&self, now: i64) -> bool {
        now - self.last_seen > IDLE_SECS
    }
    pub fn needs_touch(&self, now: i64) -> bool {
        now - self.last_seen >= TOUCH_EVERY_SECS
    }
    /// Constant-time: the form's token is this session's.
    pub fn csrf_matches(&self, given: &str) -> bool {
        !given.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(given.as_bytes()))
    }
}

/// A random secret as text (links, session ids, CSRF tokens): 64 hex digits.
pub fn token_text(random: &[u8; 32]) -> String {
    hex::encode(random)
}

/// The key a token is stored under: its SHA-256, never the token itself.
pub fn key_of(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn mac(key: &Secret, session_id: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key.bytes()).expect("HMAC takes keys of any length");
    m.update(b"entitle-portal-session.");
    m.update(session_id.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// The cookie's value: the session id and its signature by the first key.
pub fn sign_cookie(session_id: &str, keys: &[Secret]) -> Option<String> {
    keys.first().map(|k| format!("{session_id}.{}", hex::encode(mac(k, session_id))))
}

/// The session id a cookie carries, if one of the keys signed it.
pub fn verify_cookie(value: &str, keys: &[Secret]) -> Option<String> {
    let (id, sig) = value.split_once('.')?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let sig = hex::decode(sig).ok()?;
    keys.iter().any(|k| bool::from(mac(k, id).ct_eq(&sig))).then(|| id.to_string())
}

/// Whether the tenant's role rules make this member one of the model's
/// privileged roles (owner, admin), whether or not it holds a seat now:
/// the roles are those of the tenant's tier (the lowest tier before its
/// first license).
pub fn is_admin(model: &LicensingModel, meta: &TenantMeta, member: &MemberItem) -> bool {
    is_privileged(model, tier_of(model, meta), &member.member, &meta.rules)
}

/// The tier whose role rules give the tenant's members their roles as the
/// portal shows them: its access's, the lowest tier before its first license.
pub fn tier_of<'a>(model: &'a LicensingModel, meta: &'a TenantMeta) -> &'a str {
    meta.access.as_ref().map(|a| a.tier.as_str()).or_else(|| model.tiers.first().map(|t| t.name.as_str())).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> Vec<Secret> {
        list.iter().map(|k| Secret::new(*k)).collect()
    }

    #[test]
    fn a_link_asks_for_a_lifetime_of_at_most_fifteen_minutes() {
        let req = |ttl: Option<u64>| LinkRequest { admin: UserId::parse("a").unwrap(), ttl_seconds: ttl, intent: None };
        assert_eq!(req(None).ttl().unwrap(), 300);
        assert_eq!(req(Some(900)).ttl().unwrap(), 900);
        assert_eq!(req(Some(1)).ttl().unwrap(), 1);
        assert_eq!(req(Some(901)).ttl().unwrap_err().code, "invalid_ttl");
        assert_eq!(req(Some(0)).ttl().unwrap_err().code, "invalid_ttl");
        let parsed: LinkRequest = serde_json::from_str(r#"{"admin": "ann", "intent": "directory"}"#).unwrap();
        assert_eq!(parsed.intent.unwrap().page(), "directory");
        assert!(serde_json::from_str::<LinkRequest>(r#"{"admin": "ann", "intent": "billing"}"#).is_err());
        assert!(serde_json::from_str::<LinkRequest>(r#"{"admin": "ann", "extra": 1}"#).is_err());
    }

    #[test]
    fn a_link_is_open_until_it_is_used_or_expires() {
        let link = Link { tenant: TenantId::parse("t").unwrap(), admin: UserId::parse("a").unwrap(), intent: Intent::Seats, expires_at: 1000, used_at: None };
        assert_eq!(LinkState::of(Some(link.clone()), 999), LinkState::Open(link.clone()));
        assert_eq!(LinkState::of(Some(link.clone()), 1000), LinkState::Expired);
        assert_eq!(LinkState::of(Some(Link { used_at: Some(10), ..link.clone() }), 500), LinkState::Used);
        assert_eq!(LinkState::of(Some(Link { used_at: Some(10), ..link }), 5000), LinkState::Used, "used is said before expired");
        assert_eq!(LinkState::of(None, 0), LinkState::Unknown);
    }

    #[test]
    fn only_the_portals_keys_make_a_cookie_and_a_rotation_keeps_the_old_one() {
        let id = token_text(&[7; 32]);
        let cookie = sign_cookie(&id, &keys(&["k1"])).unwrap();
        assert_eq!(verify_cookie(&cookie, &keys(&["k1"])), Some(id.clone()));
        assert_eq!(verify_cookie(&cookie, &keys(&["k2", "k1"])), Some(id.clone()), "an older key still verifies");
        assert_eq!(verify_cookie(&cookie, &keys(&["k2"])), None);
        let other = token_text(&[8; 32]);
        let forged = format!("{other}.{}", cookie.split_once('.').unwrap().1);
        assert_eq!(verify_cookie(&forged, &keys(&["k1"])), None, "a signature is for its id only");
        assert_eq!(verify_cookie(&id, &keys(&["k1"])), None);
        assert_eq!(verify_cookie("", &keys(&["k1"])), None);
        assert_eq!(verify_cookie(&format!("{id}.zz"), &keys(&["k1"])), None);
        assert_eq!(sign_cookie(&id, &[]), None);
    }

    #[test]
    fn a_session_idles_out_after_thirty_minutes_and_checks_its_form_token() {
        let s = Session { tenant: TenantId::parse("t").unwrap(), admin: UserId::parse("a").unwrap(), csrf: "abc".into(), last_seen: 0 };
        assert!(!s.idle_expired(1800));
        assert!(s.idle_expired(1801));
        assert!(!s.needs_touch(59));
        assert!(s.needs_touch(60));
        assert!(s.csrf_matches("abc"));
        assert!(!s.csrf_matches("abd"));
        assert!(!s.csrf_matches(""));
        assert_ne!(key_of("x"), "x");
        assert_eq!(key_of("x").len(), 64);
    }
}
