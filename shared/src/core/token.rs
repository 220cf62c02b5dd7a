//! Signed entitlements an app checks without calling Entitle: member
//! tokens and tenant license files, as JWS (RFC 7515) JSON Web Tokens
//! (RFC 7519) with `alg` ES256, and the JWK Set (RFC 7517) that publishes
//! the keys. The pure part: claims, the signing input, a KMS signature
//! (DER) made a JWS signature (R || S), a KMS public key made a JWK named
//! by its key's id (`kid`).

use crate::core::access::{MemberItem, MemberStatus};
use crate::core::ids::TenantId;
use crate::core::license::{License, TenantAccess};
use crate::core::model::Entitlements;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// A member token's lifetime when the licensing model names none: 15 minutes.
pub use crate::core::model::DEFAULT_MEMBER_TOKEN_SECONDS;
/// A cached token is signed again when it has less than this left.
pub const REFRESH_BEFORE_SECONDS: u64 = 60;
/// A license file's lifetime when its license never ends: a year.
pub const OPEN_LICENSE_FILE_SECONDS: u64 = 365 * 24 * 3600;

/// base64url without padding (RFC 7515 §2).
pub fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// What a member token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberClaims {
    /// The deployment that signed it.
    pub iss: String,
    /// The member's user id.
    pub sub: String,
    pub tenant: String,
    /// `active`, `pending_seat`, `suspended` or `deprovisioned`.
    pub status: String,
    /// `held`, `waiting` or `none`.
    pub seat: String,
    pub roles: BTreeSet<String>,
    pub entitlements: Entitlements,
    /// The tenant's tier, while the member holds a seat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The licensing model version the member's access was decided under
    /// (a token cut after a tenant moved says the new one).
    #[serde(default)]
    pub model: String,
    pub iat: i64,
    pub exp: i64,
    /// The tenant's audit position (chain head) the token was cut from:
    /// an app fetches a cached token again (once) when a
    /// `member.access_changed` event about its member has a greater `seq`.
    /// (A token fetched after the event reflects the change, even when its
    /// `audit_seq` is below the event's: the change may have been chained
    /// after the token was cut.)
    pub audit_seq: u64,
}

/// Where and when claims are cut: the deployment that signs them (`iss`),
/// the tenant, its audit position (chain head, `audit_seq`) and the time
/// (`iat`, in seconds).
#[derive(Debug, Clone, Copy)]
pub struct Cut<'a> {
    pub iss: &'a str,
    pub tenant: &'a TenantId,
    pub audit_seq: u64,
    pub iat: i64,
}

impl MemberClaims {
    /// A member's claims as its item says, at the tenant's `tier`, cut at
    /// `audit_seq`. A member without access gets claims that say so (no
    /// roles, no entitlements): never a stale grant.
    pub fn of(cut: Cut<'_>, item: &MemberItem, tier: Option<&str>, lifetime: u64) -> Self {
        let Cut { iss, tenant, audit_seq, iat } = cut;
        let a = &item.access;
        let seat = match a.status {
            MemberStatus::Active => "held",
            MemberStatus::PendingSeat => "waiting",
            _ => "none",
        };
        let active = a.status == MemberStatus::Active;
        MemberClaims {
            iss: iss.to_string(),
            sub: item.member.user_id.to_string(),
            tenant: tenant.to_string(),
            status: a.status.as_str().to_string(),
            seat: seat.to_string(),
            roles: if active { a.roles.clone() } else { BTreeSet::new() },
            entitlements: if active { a.entitlements.clone() } else { Entitlements::new() },
            tier: tier.filter(|_| active).map(str::to_string),
            model: item.model_version.to_string(),
            iat,
            exp: iat + i64::try_from(lifetime).unwrap_or(i64::MAX / 2),
            audit_seq,
        }
    }
}

/// What a tenant license file says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LicenseClaims {
    pub iss: String,
    /// The tenant.
    pub sub: String,
    pub tenant: String,
    pub tier: String,
    pub status: crate::core::license::TenantStatus,
    pub seats: u32,
    pub add_ons: BTreeSet<String>,
    pub entitlements: Entitlements,
    pub expires_at: Option<String>,
    pub grace_until: Option<String>,
    /// The licenses and contracts it was decided from.
    pub sources: Vec<Value>,
    /// The licensing model version the tenant follows.
    #[serde(default)]
    pub model: String,
    pub iat: i64,
    pub exp: i64,
    pub audit_seq: u64,
}

impl LicenseClaims {
    /// The tenant's effective license, its grace `grace_days` after its
    /// expiry (the licensing model's). Its lifetime: `lifetime` when the
    /// tenant set one, else until the end of its grace (a year when it
    /// never ends), at least a minute.
    pub fn of(cut: Cut<'_>, access: &TenantAccess, licenses: &[License], model: &crate::core::model::LicensingModel, lifetime: Option<u64>) -> Self {
        let Cut { iss, tenant, audit_seq, iat } = cut;
        let grace_days = model.expiry.grace_days;
        let text = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let grace_until = access.expires_at.map(|e| e + chrono::Duration::days(i64::from(grace_days)));
        let ends = grace_until.map(|t| t.timestamp());
        let exp = match (lifetime, ends) {
            (Some(l), _) => iat + i64::try_from(l).unwrap_or(i64::MAX / 2),
            (None, Some(end)) => end.max(iat + 60),
            (None, None) => iat + i64::try_from(OPEN_LICENSE_FILE_SECONDS).unwrap_or(0),
        };
        let sources = licenses
            .iter()
            .map(|l| json!({"source": l.source.as_str(), "license_id": l.license_id, "tier": l.tier, "seats": l.seats, "status": l.status, "expires_at": l.expires_at.map(text)}))
            .collect();
        LicenseClaims {
            iss: iss.to_string(),
            sub: tenant.to_string(),
            tenant: tenant.to_string(),
            tier: access.tier.clone(),
            status: access.status,
            seats: access.seats_total,
            add_ons: access.addons.clone(),
            entitlements: access.entitlements.clone(),
            expires_at: access.expires_at.map(text),
            grace_until: grace_until.map(text),
            sources,
            model: model.version.to_string(),
            iat,
            exp,
            audit_seq,
        }
    }
}

/// The JOSE header of a token signed by the key `kid`.
pub fn header(kid: &str) -> Value {
    json!({"alg": "ES256", "typ": "JWT", "kid": kid})
}

/// `base64url(header) . base64url(claims)`: what is signed.
pub fn signing_input<C: Serialize>(kid: &str, claims: &C) -> String {
    let h = serde_json::to_vec(&header(kid)).expect("a header serialises");
    let c = serde_json::to_vec(claims).expect("claims serialise");
    format!("{}.{}", b64url(&h), b64url(&c))
}

/// The compact JWS from its signing input and the signature KMS made.
pub fn compact(signing_input: &str, der_signature: &[u8]) -> Result<String, String> {
    Ok(format!("{signing_input}.{}", b64url(&der_to_raw(der_signature)?)))
}

/// An ECDSA P-256 signature as KMS gives it (DER: `SEQUENCE { INTEGER r,
/// INTEGER s }`) as JWS wants it: `r || s`, 32 bytes each (RFC 7518 §3.4).
pub fn der_to_raw(der: &[u8]) -> Result<[u8; 64], String> {
    fn integer(b: &[u8]) -> Result<(&[u8], &[u8]), String> {
        if b.len() < 2 || b[0] != 0x02 {
            return Err("not a DER INTEGER".into());
        }
        let len = usize::from(b[1]);
        if b.len() < 2 + len || len == 0 {
            return Err("a DER INTEGER runs short".into());
        }
        Ok((&b[2..2 + len], &b[2 + len..]))
    }
    if der.len() < 2 || der[0] != 0x30 || usize::from(der[1]) != der.len() - 2 {
        return Err("not a DER SEQUENCE of the right length".into());
    }
    let (r, rest) = integer(&der[2..])?;
    let (s, rest) = integer(rest)?;
    if !rest.is_empty() {
        return Err("bytes after the DER signature".into());
    }
    let mut out = [0u8; 64];
    for (value, at) in [(r, 0), (s, 32)] {
        let v = value.strip_prefix(&[0]).unwrap_or(value);
        if v.len() > 32 {
            return Err("an ECDSA P-256 value longer than 32 bytes".into());
        }
        out[at + 32 - v.len()..at + 32].copy_from_slice(v);
    }
    Ok(out)
}

/// A public key as JWK, from what KMS's `GetPublicKey` gives for an
/// `ECC_NIST_P256` key (SubjectPublicKeyInfo DER, ending in the
/// uncompressed point `04 || X || Y`), named `kid`.
pub fn jwk(spki_der: &[u8], kid: &str) -> Result<Value, String> {
    // id-ecPublicKey and prime256v1, as every P-256 SubjectPublicKeyInfo names them.
    const EC: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let has = |needle: &[u8]| spki_der.windows(needle.len()).any(|w| w == needle);
    if spki_der.len() < 65 || !has(EC) || !has(P256) {
        return Err("not an ECC_NIST_P256 public key".into());
    }
    let point = &spki_der[spki_der.len() - 65..];
    if point[0] != 0x04 {
        return Err("not an uncompressed P-256 point".into());
    }
    let (x, y) = (b64url(&point[1..33]), b64url(&point[33..]));
    Ok(json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "alg": "ES256", "use": "sig"}))
}

/// The `kid` of a KMS key: its key id (the last part of its ARN), which
/// names it without naming the account.
pub fn kid_of(key_arn: &str) -> String {
    key_arn.rsplit('/').next().unwrap_or(key_arn).to_string()
}

/// A member's cached token, kept on its item: valid while the member is at
/// the revision it was cut from, signed by the current key, and far from
/// its expiry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedToken {
    pub jws: String,
    pub rev: u64,
    pub kid: String,
    pub exp: i64,
    pub audit_seq: u64,
}

impl CachedToken {
    pub fn fresh(&self, rev: u64, kid: &str, now: i64) -> bool {
        self.rev == rev && self.kid == kid && self.exp - now > i64::try_from(REFRESH_BEFORE_SECONDS).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::access::{tests::member, MemberAccess};

    #[test]
    fn base64url_without_padding() {
        assert_eq!(b64url(b""), "");
        assert_eq!(b64url(b"f"), "Zg");
        assert_eq!(b64url(b"fo"), "Zm8");
        assert_eq!(b64url(b"foo"), "Zm9v");
        assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn a_der_signature_becomes_r_and_s() {
        // r with a leading zero (its high bit set), s short (leading zeros dropped).
        let mut der = vec![0x30, 0, 0x02, 33, 0];
        der.extend([0x80; 32]);
        der.extend([0x02, 31]);
        der.extend([0x01; 31]);
        der[1] = u8::try_from(der.len() - 2).unwrap();
        let raw = der_to_raw(&der).unwrap();
        assert_eq!(&raw[..32], &[0x80; 32]);
        assert_eq!(raw[32], 0);
        assert_eq!(&raw[33..], &[0x01; 31]);
        for bad in [vec![], vec![0x31, 0], der[..der.len() - 1].to_vec(), [der.clone(), vec![0]].concat()] {
            assert!(der_to_raw(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_p256_key_is_a_jwk_named_by_its_key_id() {
        // The SubjectPublicKeyInfo prefix of every uncompressed P-256 key.
        let mut spki = vec![0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04];
        spki.extend([1u8; 32]);
        spki.extend([2u8; 32]);
        let kid = kid_of("arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab");
        assert_eq!(kid, "1234abcd-12ab-34cd-56ef-1234567890ab");
        let j = jwk(&spki, &kid).unwrap();
        assert_eq!((j["kty"].as_str(), j["crv"].as_str(), j["alg"].as_str(), j["kid"].as_str()), (Some("EC"), Some("P-256"), Some("ES256"), Some(kid.as_str())));
        assert_eq!((j["x"].clone(), j["y"].clone()), (json!(b64url(&[1u8; 32])), json!(b64url(&[2u8; 32]))));
        assert!(jwk(&spki[..40], &kid).is_err());
    }

    #[test]
    fn a_member_without_access_gets_a_token_that_says_so() {
        let t = TenantId::parse("t1").unwrap();
        let mut item = MemberItem::new(member("u1", 1, &[]), MemberAccess::without_access(MemberStatus::Suspended), &crate::core::model::LicensingModel::default_model());
        item.access.roles.insert("admin".into());
        let cut = Cut { iss: "https://entitle", tenant: &t, audit_seq: 7, iat: 1_000 };
        let c = MemberClaims::of(cut, &item, Some("team"), 900);
        assert_eq!((c.status.as_str(), c.seat.as_str(), c.tier.as_deref()), ("suspended", "none", None));
        assert!(c.roles.is_empty() && c.entitlements.is_empty());
        assert_eq!((c.exp, c.audit_seq), (1_900, 7));
        item.access.status = MemberStatus::Active;
        let c = MemberClaims::of(cut, &item, Some("team"), 900);
        assert_eq!((c.seat.as_str(), c.tier.as_deref()), ("held", Some("team")));
        assert!(c.roles.contains("admin"));
    }

    #[test]
    fn a_cached_token_is_used_only_at_its_revision_and_key_and_before_its_end() {
        let t = CachedToken { jws: "x".into(), rev: 3, kid: "k1".into(), exp: 1_000, audit_seq: 1 };
        assert!(t.fresh(3, "k1", 900));
        assert!(!t.fresh(4, "k1", 900), "the member changed");
        assert!(!t.fresh(3, "k2", 900), "a new key");
        assert!(!t.fresh(3, "k1", 950), "about to expire");
    }
}
