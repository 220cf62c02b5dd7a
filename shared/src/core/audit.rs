//! The audit trail: append-only, hash-chained per tenant. Each record carries
//! the hash of the one before it; the record's own hash covers its canonical
//! JSON (which includes that link). Changing, removing or reordering any
//! record breaks the chain, and the tenant's head hash pins the last one.

use crate::core::access::MemberAccess;
use crate::core::ids::{TargetId, UserId};
use crate::core::license::TenantAccess;
use crate::core::scim::Health;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The hash before the first record of every tenant.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CauseKind {
    StripeEvent,
    CrmEvent,
    ApiCall,
    Reconcile,
    Sweep,
    Amendment,
    /// A delivery run to SCIM targets (quarantine, resume, drift repair).
    Delivery,
    /// A billing reconciliation run against Stripe's API.
    BillingSync,
}

/// What caused a change: the source event, API call or run that led to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    pub kind: CauseKind,
    pub id: String,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = serde_json::to_value(self.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        write!(f, "{kind}:{}", self.id)
    }
}

impl Cause {
    pub fn new(kind: CauseKind, id: impl Into<String>) -> Self {
        Cause { kind, id: id.into() }
    }
}

/// What an audit record announces on the bus (`core::events` builds the
/// event from it).
#[derive(Debug, Clone, PartialEq)]
pub enum Announcement {
    MemberAccessChanged { user_id: UserId, before: MemberAccess, after: MemberAccess },
    TenantAccessChanged { before: Option<TenantAccess>, after: TenantAccess },
    TargetQuarantined { target_id: TargetId, health: Health },
    TargetResumed { target_id: TargetId, health: Health },
}

/// What an audit record says happened. Stored as its snake_case name
/// (`member_access_changed`, ...): the one list of actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    // Licenses and source events.
    LicenseRecorded,
    /// A source event (or a billing sync) found the license as held.
    LicenseUnchanged,
    LicenseIgnoredStale,
    EventParked,
    // Members and the tenant's access.
    MemberCreated,
    MemberRemoved,
    MemberAccessChanged,
    TenantAccessChanged,
    TenantRulesChanged,
    // Contracts.
    ContractCreated,
    AmendmentApplied,
    AmendmentHeldForReview,
    AmendmentScheduled,
    AmendmentApproved,
    AmendmentRejected,
    AmendmentReversed,
    // Time-based transitions (the sweep).
    LicenseExpiringSoon,
    LicenseGraceStarted,
    LicenseExpired,
    LicenseTrialEnded,
    LicenseSuspended,
    // SCIM targets.
    TargetConfigured,
    TargetReconfigured,
    TargetRemoved,
    TargetQuarantined,
    TargetResumed,
    TargetRepaired,
    DeliveryParked,
}

impl AuditAction {
    /// The stored name.
    pub fn as_str(self) -> String {
        serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
    }
}

/// One audit record before it is chained. Field order is the canonical order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub action: AuditAction,
    /// What it happened to: `tenant`, `license:<source>:<id>`, `member:<id>`,
    /// `contract:<id>`, `target:<id>`, `event:<source>:<id>`.
    pub subject: String,
    pub cause: Cause,
    /// The rule that decided it (model rule, ordering rule, ...).
    pub rule: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    /// The event this record announces on the bus, if any, built from the
    /// same typed values as the record (never read back out of its JSON).
    /// Not part of the record.
    #[serde(skip)]
    pub announce: Option<Announcement>,
}

impl AuditEvent {
    pub fn new(action: AuditAction, subject: impl Into<String>, cause: &Cause, rule: impl Into<String>) -> Self {
        AuditEvent { action, subject: subject.into(), cause: cause.clone(), rule: rule.into(), before: None, after: None, announce: None }
    }
    pub fn before(mut self, v: impl Serialize) -> Self {
        self.before = Some(serde_json::to_value(v).expect("plain data serialises"));
        self
    }
    pub fn after(mut self, v: impl Serialize) -> Self {
        self.after = Some(serde_json::to_value(v).expect("plain data serialises"));
        self
    }
    pub fn announcing(mut self, a: Announcement) -> Self {
        self.announce = Some(a);
        self
    }
}

/// A chained record as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub tenant_id: String,
    pub seq: u64,
    pub at: String,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
}

impl AuditRecord {
    /// The canonical JSON the hash covers (keys of nested objects are sorted
    /// because serde_json's map is ordered).
    pub fn canonical_json(&self) -> String {
        serde_json::to_string(self).expect("audit records serialise")
    }
}

pub fn hash_of(canonical_json: &str) -> String {
    hex::encode(Sha256::digest(canonical_json.as_bytes()))
}

/// The chain's head: the last record's sequence number and hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHead {
    pub seq: u64,
    pub hash: String,
}

impl ChainHead {
    pub fn genesis() -> Self {
        ChainHead { seq: 0, hash: GENESIS.to_string() }
    }
}

/// Chains `events` after `head`: returns the records (with their canonical
/// JSON and hash) and the new head.
pub fn chain(tenant_id: &str, head: &ChainHead, at: &str, events: Vec<AuditEvent>) -> (Vec<(AuditRecord, String, String)>, ChainHead) {
    let mut head = head.clone();
    let mut out = Vec::with_capacity(events.len());
    for event in events {
        let record = AuditRecord { tenant_id: tenant_id.to_string(), seq: head.seq + 1, at: at.to_string(), event, prev_hash: head.hash.clone() };
        let json = record.canonical_json();
        let hash = hash_of(&json);
        head = ChainHead { seq: record.seq, hash: hash.clone() };
        out.push((record, json, hash));
    }
    (out, head)
}

/// An audit record written with its change but not yet in the chain (the
/// sequencer half of the log: account creations and removals do not wait
/// for the tenant's chain head). `key` orders the tenant's pending records:
/// when the change happened, then a tie-breaker. The integrator (provision,
/// one at a time per tenant) appends them to the chain in that order,
/// hashing each as it goes; the record keeps its own `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRecord {
    pub key: String,
    pub at: String,
    pub event: AuditEvent,
}

impl PendingRecord {
    /// A pending record of a change made `at`; `salt` tells apart records
    /// of the same microsecond (the change's own id, and the record's place).
    pub fn new(at: DateTime<Utc>, salt: &str, event: AuditEvent) -> Self {
        let micros = at.timestamp_micros().max(0);
        let tie = &hash_of(&format!("{salt}/{micros}/{}", event.subject))[..16];
        PendingRecord { key: format!("{micros:017}#{tie}"), at: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), event }
    }
}

/// Chains pending records after `head`, each dated as it was written:
/// returns the records (with their canonical JSON and hash) and the new head.
pub fn integrate(tenant_id: &str, head: &ChainHead, pending: &[PendingRecord]) -> (Vec<(AuditRecord, String, String)>, ChainHead) {
    let mut head = head.clone();
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        let (mut records, next) = chain(tenant_id, &head, &p.at, vec![p.event.clone()]);
        out.append(&mut records);
        head = next;
    }
    (out, head)
}

/// A stored record as read back: its JSON and the hash stored beside it.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    pub seq: u64,
    pub json: String,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub records: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_bad_seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub head_hash: String,
    /// Records written with their changes and not yet chained (account
    /// creations and removals of the last moments): not covered by this
    /// verification; chained, in order, within seconds.
    pub pending: u64,
}

/// Checks the whole chain of one tenant, in sequence order, against its head.
pub fn verify(tenant_id: &str, records: &[StoredRecord], head: &ChainHead) -> Verification {
    let fail = |seq: u64, problem: String, n: u64| Verification {
        ok: false,
        records: n,
        first_bad_seq: Some(seq),
        problem: Some(problem),
        head_hash: head.hash.clone(),
        pending: 0,
    };
    let mut expected = ChainHead::genesis();
    for (i, stored) in records.iter().enumerate() {
        let n = i as u64;
        let want_seq = expected.seq + 1;
        if stored.seq != want_seq {
            return fail(want_seq, format!("record {want_seq} is missing (found {} next)", stored.seq), n);
        }
        if hash_of(&stored.json) != stored.hash {
            return fail(stored.seq, "record content does not match its hash".into(), n);
        }
        let record: AuditRecord = match serde_json::from_str(&stored.json) {
            Ok(r) => r,
            Err(e) => return fail(stored.seq, format!("record is not a valid audit record: {e}"), n),
        };
        if record.seq != stored.seq || record.tenant_id != tenant_id {
            return fail(stored.seq, "record names another position or tenant".into(), n);
        }
        if record.prev_hash != expected.hash {
            return fail(stored.seq, "record does not link to the previous record's hash".into(), n);
        }
        expected = ChainHead { seq: stored.seq, hash: stored.hash.clone() };
    }
    if expected != *head {
        return fail(
            expected.seq + 1,
            format!("chain ends at record {} but the tenant's head is record {}", expected.seq, head.seq),
            records.len() as u64,
        );
    }
    Verification { ok: true, records: records.len() as u64, first_bad_seq: None, problem: None, head_hash: head.hash.clone(), pending: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: u32) -> AuditEvent {
        AuditEvent::new(AuditAction::MemberAccessChanged, format!("member:u{i}"), &Cause::new(CauseKind::Reconcile, "evt_1"), "test")
            .after(serde_json::json!({"status": "active", "roles": ["member"]}))
    }

    #[test]
    fn actions_are_stored_by_their_names() {
        assert_eq!(AuditAction::MemberAccessChanged.as_str(), "member_access_changed");
        assert_eq!(AuditAction::AmendmentHeldForReview.as_str(), "amendment_held_for_review");
        let record = chain("t1", &ChainHead::genesis(), "2026-01-01T00:00:00Z", vec![ev(1)]).0.remove(0).1;
        assert!(record.contains(r#""action":"member_access_changed""#), "{record}");
        assert!(!record.contains("announce"), "the announcement is not part of the record");
    }

    fn stored(records: &[(AuditRecord, String, String)]) -> Vec<StoredRecord> {
        records.iter().map(|(r, j, h)| StoredRecord { seq: r.seq, json: j.clone(), hash: h.clone() }).collect()
    }

    #[test]
    fn an_intact_chain_verifies_across_appends() {
        let (first, head) = chain("t1", &ChainHead::genesis(), "2026-01-01T00:00:00Z", vec![ev(1), ev(2)]);
        let (second, head) = chain("t1", &head, "2026-01-01T00:00:01Z", vec![ev(3)]);
        let all: Vec<_> = first.into_iter().chain(second).collect();
        let v = verify("t1", &stored(&all), &head);
        assert!(v.ok, "{v:?}");
        assert_eq!(v.records, 3);
    }

    #[test]
    fn tampering_is_detected_wherever_it_is() {
        let (recs, head) = chain("t1", &ChainHead::genesis(), "2026-01-01T00:00:00Z", (1..=4).map(ev).collect());
        let base = stored(&recs);

        let mut edited = base.clone();
        edited[1].json = edited[1].json.replace("active", "suspended");
        assert_eq!(verify("t1", &edited, &head).first_bad_seq, Some(2));

        // Rehashing the edit does not help: the next record's link breaks.
        edited[1].hash = hash_of(&edited[1].json);
        assert_eq!(verify("t1", &edited, &head).first_bad_seq, Some(3));

        let mut removed = base.clone();
        removed.remove(2);
        assert_eq!(verify("t1", &removed, &head).first_bad_seq, Some(3));

        let mut truncated = base.clone();
        truncated.pop();
        assert!(!verify("t1", &truncated, &head).ok);

        assert!(!verify("t2", &base, &head).ok, "records of another tenant");
    }
}
