//! Reading the audit trail, and verifying it.

use super::ports::Tenants;
use super::Error;
use crate::core::audit::{self, Verification};
use crate::core::ids::TenantId;

/// Verifies the tenant's whole chain against its head. Writers keep
/// appending while this reads: the chain is checked as of the head read
/// first (every record up to it was committed with it); records beyond a
/// second read of the head belong to no chain and are reported.
pub async fn verify<S: Tenants>(store: &S, tenant: &TenantId) -> Result<Option<Verification>, Error> {
    let Some(meta) = store.meta(tenant).await? else { return Ok(None) };
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let (page, more) = store.audit_page(tenant, after, 1000).await?;
        if let Some(last) = page.last() {
            after = last.seq;
        }
        all.extend(page);
        if !more {
            break;
        }
    }
    let beyond: Vec<u64> = all.iter().map(|r| r.seq).filter(|&seq| seq > meta.head.seq).collect();
    all.retain(|r| r.seq <= meta.head.seq);
    let mut verification = audit::verify(tenant.as_str(), &all, &meta.head);
    if verification.ok && !beyond.is_empty() {
        let latest = store.meta(tenant).await?.map(|m| m.head.seq).unwrap_or(0);
        if let Some(&orphan) = beyond.iter().find(|&&seq| seq > latest) {
            verification = Verification {
                ok: false,
                records: verification.records,
                first_bad_seq: Some(orphan),
                problem: Some(format!("record {orphan} lies beyond the tenant's head (record {latest})")),
                head_hash: meta.head.hash.clone(),
            };
        }
    }
    Ok(Some(verification))
}
