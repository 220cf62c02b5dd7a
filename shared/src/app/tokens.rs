//! Signed entitlements: a member's token and a tenant's license file.
//!
//! A member token is signed once per member per change: cached on the
//! member's item, cut at the member's revision, so that a read is one
//! `GetItem` while nothing changed (and the token has more than a minute
//! left); the first read after a change (or near expiry, or after a key
//! rotation) reads the tenant's head with the member, signs, and caches it
//! conditionally on the member's revision (a token is never cached over a
//! newer change). A license file is signed on each request.

use super::commit::{audited, Decision};
use super::members::known;
use super::ports::{Change, Models, Tenants, TokenCache, TokenSigner};
use super::rules::rules_of;
use super::Error;
use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::ids::{TenantId, UserId};
use crate::core::rejection::Rejection;
use crate::core::token::{compact, signing_input, CachedToken, Cut, LicenseClaims, MemberClaims};
use chrono::{DateTime, Utc};
use serde_json::json;

/// A signed token, as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    pub expires_at: i64,
    pub kid: String,
    pub audit_seq: u64,
    /// Signed for this request (false: the cached one).
    pub signed: bool,
}

/// Signs claims with the current key: the compact JWS.
async fn sign<K: TokenSigner, C: serde::Serialize>(signer: &K, claims: &C) -> Result<String, Error> {
    let input = signing_input(signer.kid(), claims);
    let der = signer.sign(input.as_bytes()).await?;
    Ok(compact(&input, &der).map_err(|why| super::PortError::Corrupt { key: signer.kid().to_string(), why })?)
}

/// A member's token: the cached one while fresh, else signed now.
pub async fn member_token<S: Tenants + TokenCache + Models, K: TokenSigner>(store: &S, signer: &K, issuer: &str, tenant: &TenantId, user: &UserId, now: DateTime<Utc>) -> Result<Issued, Error> {
    let at = now.timestamp();
    let (item, cached) = store.member_and_token(tenant, user).await?;
    let item = item.ok_or_else(|| Rejection::not_found(&format!("member {user} of tenant {tenant}")))?;
    if let Some(c) = cached.filter(|c| c.fresh(item.rev, signer.kid(), at)) {
        return Ok(Issued { token: c.jws, expires_at: c.exp, kid: c.kid, audit_seq: c.audit_seq, signed: false });
    }
    // The tenant's tier and audit position, with the member as of the same read.
    let (meta, item) = store.meta_and_member(tenant, user).await?;
    let meta = meta.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?;
    let item = item.ok_or_else(|| Rejection::not_found(&format!("member {user} of tenant {tenant}")))?;
    // Its lifetime is a rule of the version the tenant follows.
    let model = rules_of(store, Some(&meta)).await?;
    let cut = Cut { iss: issuer, tenant, audit_seq: meta.head.seq, iat: at };
    let claims = MemberClaims::of(cut, &item, meta.access.as_ref().map(|a| a.tier.as_str()), model.tokens.member_seconds);
    let jws = sign(signer, &claims).await?;
    let cached = CachedToken { jws: jws.clone(), rev: item.rev, kid: signer.kid().to_string(), exp: claims.exp, audit_seq: claims.audit_seq };
    // A change of the member meanwhile: this token is answered, not cached.
    store.cache_token(tenant, user, &cached).await?;
    Ok(Issued { token: jws, expires_at: claims.exp, kid: cached.kid, audit_seq: claims.audit_seq, signed: true })
}

/// The tenant's license file: its effective license as provisioned, and
/// the licenses and contracts it came from.
pub async fn license_file<S: Tenants + Models, K: TokenSigner>(store: &S, signer: &K, issuer: &str, tenant: &TenantId, now: DateTime<Utc>) -> Result<Issued, Error> {
    let head = store.tenant_head(tenant).await?.ok_or_else(|| Rejection::not_found(&format!("tenant {tenant}")))?;
    let meta = known(tenant, Some(head.meta.clone()))?;
    let access = meta.access.as_ref().ok_or_else(|| Rejection::not_found(&format!("the license of tenant {tenant} (not yet provisioned)")))?;
    let model = rules_of(store, Some(&meta)).await?;
    let cut = Cut { iss: issuer, tenant, audit_seq: meta.head.seq, iat: now.timestamp() };
    let claims = LicenseClaims::of(cut, access, &head.licenses, &model, meta.license_file_seconds);
    let jws = sign(signer, &claims).await?;
    Ok(Issued { token: jws, expires_at: claims.exp, kid: signer.kid().to_string(), audit_seq: claims.audit_seq, signed: true })
}

/// The longest lifetime a tenant may set for its license files: ten years.
pub const MAX_LICENSE_FILE_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// Sets (or, `None`, resets to the default) how long the tenant's license
/// files are valid; audited.
pub async fn set_license_file_lifetime<S: Tenants>(store: &S, tenant: &TenantId, seconds: Option<u64>, request_id: &str, now: DateTime<Utc>) -> Result<Option<u64>, Error> {
    if seconds.is_some_and(|s| !(60..=MAX_LICENSE_FILE_SECONDS).contains(&s)) {
        return Err(Rejection::invalid("invalid_lifetime", vec![format!("lifetime_seconds: 60 to {MAX_LICENSE_FILE_SECONDS}, or null for the default")]).into());
    }
    let cause = Cause::api_call(request_id);
    audited(store, tenant, |meta| {
        let cause = &cause;
        async move {
            let meta = known(tenant, meta)?;
            if meta.license_file_seconds == seconds {
                return Ok(Decision::Done(seconds));
            }
            let audit =
                AuditEvent::new(AuditAction::LicenseFileLifetimeSet, "tenant", cause, "the lifetime of the tenant's license files, set by its admin (default: until the license's end and grace)")
                    .before(json!({"lifetime_seconds": meta.license_file_seconds}))
                    .after(json!({"lifetime_seconds": seconds}));
            let mut change = Change::new(now).audit(audit);
            change.meta.license_file_seconds = Some(seconds);
            Ok(Decision::one(change, seconds))
        }
    })
    .await
    .map(|c| c.value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::memory::{crm_change, Memory};
    use crate::app::{licenses, members, reconcile};
    use crate::core::audit::CauseKind;
    use crate::core::views::NewMember;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A signer that counts its signatures (the signature is the SHA-256 of
    /// the message in a DER envelope: the shape KMS answers, checked by
    /// `compact`).
    struct Counting(AtomicUsize);

    impl TokenSigner for Counting {
        fn kid(&self) -> &str {
            "k1"
        }
        async fn sign(&self, message: &[u8]) -> Result<Vec<u8>, crate::app::PortError> {
            use sha2::Digest;
            self.0.fetch_add(1, Ordering::SeqCst);
            let d = sha2::Sha256::digest(message);
            let mut der = vec![0x30, 68, 0x02, 32];
            der.extend(&d);
            der.extend([0x02, 32]);
            der.extend(&d);
            Ok(der)
        }
    }

    fn payload(jws: &str) -> serde_json::Value {
        use base64::Engine;
        let part = jws.split('.').nth(1).unwrap();
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_token_is_signed_once_per_change_and_says_what_the_member_has() {
        let m = Arc::new(crate::core::model::LicensingModel::default_model());
        let store = Memory::new(m.clone());
        let t = TenantId::parse("tok").unwrap();
        licenses::record_change(&store, &crm_change(&t, 1, 2), "h", Utc::now()).await.unwrap();
        reconcile::reconcile(&store, &t, &Cause::new(CauseKind::Reconcile, "r"), Utc::now()).await.unwrap();
        let u = UserId::parse("u1").unwrap();
        members::create(&store, &t, &NewMember { user_id: u.clone(), email: "u1@x.test".into(), groups: ["admins".to_string()].into(), attributes: Default::default() }, "r", Utc::now())
            .await
            .unwrap();
        let signer = Counting(AtomicUsize::new(0));
        let now = Utc::now();
        let first = member_token(&store, &signer, "https://entitle.test", &t, &u, now).await.unwrap();
        assert!(first.signed);
        let c = payload(&first.token);
        assert_eq!((c["sub"].as_str(), c["tenant"].as_str(), c["status"].as_str(), c["seat"].as_str(), c["tier"].as_str()), (Some("u1"), Some("tok"), Some("active"), Some("held"), Some("business")));
        assert!(c["roles"].as_array().unwrap().contains(&json!("admin")));
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
        // Read again: the cached token, no signature.
        for _ in 0..5 {
            let again = member_token(&store, &signer, "https://entitle.test", &t, &u, now).await.unwrap();
            assert_eq!((again.token.as_str(), again.signed), (first.token.as_str(), false));
        }
        assert_eq!(signer.0.load(Ordering::SeqCst), 1);
        // A change of access: a new token, saying so, signed once.
        members::remove(&store, &t, &u, "r2", Utc::now()).await.unwrap();
        let after = member_token(&store, &signer, "https://entitle.test", &t, &u, now).await.unwrap();
        let c = payload(&after.token);
        assert_eq!((c["status"].as_str(), c["seat"].as_str()), (Some("deprovisioned"), Some("none")));
        assert!(c["roles"].as_array().unwrap().is_empty() && c.get("tier").is_none());
        member_token(&store, &signer, "https://entitle.test", &t, &u, now).await.unwrap();
        assert_eq!(signer.0.load(Ordering::SeqCst), 2);
        // Near its end: signed again.
        let late = now + chrono::Duration::seconds(900 - 30);
        assert!(member_token(&store, &signer, "https://entitle.test", &t, &u, late).await.unwrap().signed);
        // A license file; its lifetime as the tenant sets it.
        let lf = license_file(&store, &signer, "https://entitle.test", &t, now).await.unwrap();
        let c = payload(&lf.token);
        assert_eq!((c["tier"].as_str(), c["seats"].as_u64()), (Some("business"), Some(2)));
        assert_eq!(c["sources"][0]["source"], "crm");
        set_license_file_lifetime(&store, &t, Some(3600), "r3", now).await.unwrap();
        let lf = license_file(&store, &signer, "https://entitle.test", &t, now).await.unwrap();
        assert_eq!(lf.expires_at, now.timestamp() + 3600);
        assert!(set_license_file_lifetime(&store, &t, Some(1), "r4", now).await.is_err());
    }
}
