//! Webhook signatures, exactly as Stripe specifies them, used for Stripe
//! (`Stripe-Signature`) and for CRM records (`Entitle-Signature`):
//! `t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.raw_body">[,v1=...]`, checked
//! against every active secret (rotation), any `v1` may match, constant-time
//! comparison, and a tolerance on `t` against replays.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use subtle::ConstantTimeEq;

pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// A signing secret. Its `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Parses a comma-separated list of secrets (the rotation set).
pub fn secrets_from_list(list: &str) -> Vec<Secret> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).map(Secret::new).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature header is malformed: {0}")]
    Malformed(&'static str),
    #[error("the signature timestamp is outside the tolerance of {tolerance} seconds")]
    Stale { tolerance: i64 },
    #[error("no signature matches the payload")]
    Mismatch,
    #[error("no signing secret is configured")]
    NoSecret,
}

fn mac(secret: &Secret, timestamp: &str, body: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("HMAC takes keys of any length");
    m.update(timestamp.as_bytes());
    m.update(b".");
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

/// Builds a header value (for tests, the demo and the CRM side).
pub fn sign(secret: &Secret, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hex::encode(mac(secret, &timestamp.to_string(), body)))
}

/// Verifies `header` over the raw `body` at time `now` (unix seconds).
pub fn verify(header: Option<&str>, body: &[u8], secrets: &[Secret], now: i64, tolerance: i64) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(SignatureError::Malformed("expected key=value pairs"))?;
        match k {
            "t" => timestamp = Some(v),
            "v1" => candidates.push(hex::decode(v).map_err(|_| SignatureError::Malformed("v1 is not hex"))?),
            _ => {} // other schemes (v0) are ignored, as Stripe does
        }
    }
    let t_str = timestamp.ok_or(SignatureError::Malformed("no t= timestamp"))?;
    let t: i64 = t_str.parse().map_err(|_| SignatureError::Malformed("t= is not a number"))?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("no v1= signature"));
    }
    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        let expected = mac(secret, t_str, body);
        for c in &candidates {
            matched |= expected.as_slice().ct_eq(c.as_slice());
        }
    }
    if !bool::from(matched) {
        return Err(SignatureError::Mismatch);
    }
    // Checked after the MAC so that a forged header learns nothing about time.
    if (now - t).abs() > tolerance {
        return Err(SignatureError::Stale { tolerance });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    #[test]
    fn accepts_a_valid_signature_from_any_active_secret() {
        let old = Secret::new("whsec_old");
        let new = Secret::new("whsec_new");
        let body = br#"{"id":"evt_1"}"#;
        let h = sign(&old, NOW, body);
        assert_eq!(verify(Some(&h), body, &[new.clone(), old.clone()], NOW, 300), Ok(()));
        // Several v1 values: one good one is enough.
        let multi = format!("t={NOW},v1={},v1={}", "00".repeat(32), &sign(&new, NOW, body)[format!("t={NOW},v1=").len()..]);
        assert_eq!(verify(Some(&multi), body, &[new], NOW, 300), Ok(()));
    }

    #[test]
    fn rejects_forged_tampered_stale_and_malformed() {
        let s = Secret::new("whsec_entitle_local");
        let body = br#"{"id":"evt_1"}"#;
        let h = sign(&s, NOW, body);
        assert_eq!(verify(Some(&h), br#"{"id":"evt_2"}"#, std::slice::from_ref(&s), NOW, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(Some(&sign(&Secret::new("other"), NOW, body)), body, std::slice::from_ref(&s), NOW, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(Some(&h), body, std::slice::from_ref(&s), NOW + 301, 300), Err(SignatureError::Stale { tolerance: 300 }));
        assert_eq!(verify(Some(&h), body, std::slice::from_ref(&s), NOW - 301, 300), Err(SignatureError::Stale { tolerance: 300 }));
        assert_eq!(verify(None, body, std::slice::from_ref(&s), NOW, 300), Err(SignatureError::Missing));
        assert!(matches!(verify(Some("garbage"), body, std::slice::from_ref(&s), NOW, 300), Err(SignatureError::Malformed(_))));
        assert!(matches!(verify(Some("t=1,v1=zz"), body, std::slice::from_ref(&s), NOW, 300), Err(SignatureError::Malformed(_))));
        assert_eq!(verify(Some(&h), body, &[], NOW, 300), Err(SignatureError::NoSecret));
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("whsec_entitle_local");
        assert!(!format!("{s:?}").contains("whsec"));
        assert_eq!(secrets_from_list(" a, ,b ").len(), 2);
    }
}
