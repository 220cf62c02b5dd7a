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
    /// A push of the tenant's identity provider (its SCIM directory); the
    /// cause names the directory connection.
    Directory,
    /// A rollout of a licensing model version (`id`: the rollout's id).
    ModelRollout,
    /// The tenant's admin in the portal (`id`: the admin's user id).
    Portal,
}

/// What caused a change: the source event, API call or run that led to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cause {
    pub kind: CauseKind,
    pub id: String,
    /// The directory connection a `directory` cause came through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = serde_json::to_value(self.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        match &self.connection {
            Some(c) => write!(f, "{kind}:{c}/{}", self.id),
            None => write!(f, "{kind}:{}", self.id),
        }
    }
}

impl Cause {
    pub fn new(kind: CauseKind, id: impl Into<String>) -> Self {
        Cause { kind, id: id.into(), connection: None }
    }
    /// An API request (`id` is the request's id, as Lambda names it).
    pub fn api_call(request_id: &str) -> Self {
        Cause::new(CauseKind::ApiCall, request_id)
    }
    /// The tenant's admin acting in the portal (`id` is the admin's user id).
    pub fn portal(admin: &UserId) -> Self {
        Cause::new(CauseKind::Portal, admin.as_str())
    }
    /// A request of a directory connection (`id` is the request's id).
    pub fn directory(connection: &str, request_id: impl Into<String>) -> Self {
        Cause { kind: CauseKind::Directory, id: request_id.into(), connection: Some(connection.to_string()) }
    }
}

/// What an audit record announces on the bus (`core::events` builds the
/// event from it).
/// Kept beside a pending record (`announce`) until the record is chained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Announcement {
    MemberAccessChanged {
        user_id: UserId,
        before: MemberAccess,
        after: MemberAccess,
    },
    TenantAccessChanged {
        before: Option<TenantAccess>,
        after: TenantAccess,
    },
    TargetQuarantined {
        target_id: TargetId,
        health: Health,
    },
    TargetResumed {
        target_id: TargetId,
        health: Health,
    },
    /// A push of the tenant's identity provider was refused for want of a seat.
    SeatLimitReached {
        directory_id: String,
        user_name: String,
        seats_total: u32,
        seats_used: u32,
    },
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
    /// The app changed a member's groups or attributes (its roles follow).
    MemberUpdated,
    MemberAccessChanged,
    /// The tenant's admin gave, took or released a seat (`PUT .../seat`).
    MemberSeatReassigned,
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
    /// The target answered against its profile (see `Health::contradiction`).
    TargetContradictsProfile,
    DeliveryParked,
    // Operators (the admin function).
    DeadLetterRedriven,
    // The tenant's directory (its identity providers' pushes).
    /// A directory connection made (its token issued).
    DirectoryConnected,
    DirectoryReconfigured,
    DirectoryTokenRotated,
    /// A directory connection revoked (its token no longer valid).
    DirectoryDisconnected,
    /// The identity provider deactivated a member (`active: false`): no access, seat freed.
    MemberSuspended,
    /// The identity provider activated a suspended member again.
    MemberReactivated,
    DirectoryGroupCreated,
    DirectoryGroupUpdated,
    DirectoryGroupDeleted,
    /// A push refused for want of a seat (the tenant refuses pushes when full).
    DirectoryPushRefused,
    /// The tenant's admin set how long its license files are valid.
    LicenseFileLifetimeSet,
    // Licensing model versions.
    /// The tenant now follows another model version (a rollout, a pin, a
    /// tier its version lacked); its members are walked to it.
    TenantModelChanged,
    /// A rollout's move waits for the end of the tenant's billing period.
    TenantModelMoveScheduled,
    /// A waiting move dropped (its rollout canceled, or the tenant pinned).
    TenantModelMoveDropped,
    TenantModelPinned,
    TenantModelUnpinned,
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

/// How long after a tenant's chain head moves the sweep signs it into a
/// stored checkpoint (at most one a tenant per interval, so that a busy
/// tenant costs one KMS signature an hour, not one per change).
pub const CHECKPOINT_INTERVAL: chrono::Duration = chrono::Duration::hours(1);

/// The last line of an audit export: the position and hash of the last
/// record exported, signed (ECDSA P-256 over SHA-256, DER, base64) by the
/// stack's audit signing key. Anyone with the public key checks the
/// signature over [`Checkpoint::message`], and the records' hashes up to
/// `head_hash` ([`verify_export`]), without Entitle.
///
/// The sweep signs and stores one as well, periodically, for each tenant
/// whose head moved ([`CHECKPOINT_INTERVAL`]). An export carries the stored
/// ones of its range in `earlier`: each was signed when its records were
/// new, so a table rewritten later together with its hashes (which a fresh
/// signature over the rewritten head would not reveal) no longer matches
/// them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub tenant_id: String,
    pub seq: u64,
    pub head_hash: String,
    pub at: String,
    pub key_id: String,
    #[serde(default)]
    pub signature: String,
    /// Stored checkpoints within the export's range (not covered by this
    /// checkpoint's signature: each carries its own).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<Checkpoint>,
}

impl Checkpoint {
    /// A checkpoint of `head` at `at`, to be signed.
    pub fn unsigned(tenant_id: &str, head: &ChainHead, at: DateTime<Utc>) -> Checkpoint {
        Checkpoint {
            tenant_id: tenant_id.to_string(),
            seq: head.seq,
            head_hash: head.hash.clone(),
            at: at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            key_id: String::new(),
            signature: String::new(),
            earlier: Vec::new(),
        }
    }

    /// The bytes signed: one field per line, no trailing newline (docs/api.md
    /// rebuilds it with `jq` for `openssl`).
    pub fn message(&self) -> String {
        format!("entitle-audit-checkpoint/v1\n{}\n{}\n{}\n{}\n{}", self.tenant_id, self.seq, self.head_hash, self.at, self.key_id)
    }
}

/// Checks an export offline: JSON Lines of records (each exactly as hashed)
/// in sequence, each linking to the hash of the line before, the last one
/// hashing to the checkpoint's `head_hash`, the checkpoint last. The first
/// record's link is taken as given (an export from `from_seq`; a checkpoint
/// of an earlier export pins it). Each stored checkpoint in `earlier` must
/// name the tenant and, where its record is in the export, that record's
/// hash. The signatures are checked with the public key (`openssl`, see
/// docs/api.md). Returns the checkpoint.
pub fn verify_export(text: &str) -> Result<Checkpoint, String> {
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    let (last, records) = lines.split_last().ok_or("the export is empty")?;
    let checkpoint: Checkpoint = serde_json::from_str(last).map_err(|e| format!("the last line is not a checkpoint: {e}"))?;
    let mut previous: Option<(u64, String)> = None;
    let mut hashes = std::collections::BTreeMap::new();
    for line in records {
        let record: AuditRecord = serde_json::from_str(line).map_err(|e| format!("a line is not an audit record: {e}"))?;
        if record.tenant_id != checkpoint.tenant_id {
            return Err(format!("record {} names tenant {}, the checkpoint {}", record.seq, record.tenant_id, checkpoint.tenant_id));
        }
        if let Some((seq, hash)) = &previous {
            if record.seq != seq + 1 {
                return Err(format!("record {} follows record {seq}", record.seq));
            }
            if &record.prev_hash != hash {
                return Err(format!("record {} does not link to the hash of record {seq}", record.seq));
            }
        }
        previous = Some((record.seq, hash_of(line)));
        hashes.insert(record.seq, hash_of(line));
    }
    let (seq, hash) = previous.ok_or("the export has no record")?;
    if seq != checkpoint.seq || hash != checkpoint.head_hash {
        return Err(format!("the records end at {seq} with hash {hash}; the checkpoint says {} with {}", checkpoint.seq, checkpoint.head_hash));
    }
    for earlier in &checkpoint.earlier {
        if earlier.tenant_id != checkpoint.tenant_id {
            return Err(format!("the checkpoint signed at {} names tenant {}, the export {}", earlier.at, earlier.tenant_id, checkpoint.tenant_id));
        }
        match hashes.get(&earlier.seq) {
            Some(h) if *h != earlier.head_hash => {
                return Err(format!("record {} hashes to {h}; the checkpoint signed at {} says {}: the chain was rewritten after it was signed", earlier.seq, earlier.at, earlier.head_hash))
            }
            _ => {}
        }
    }
    Ok(checkpoint)
}

/// Checks the whole chain of one tenant, in sequence order, against its head.
pub fn verify(tenant_id: &str, records: &[StoredRecord], head: &ChainHead) -> Verification {
    let mut check = ChainCheck::new(tenant_id);
    check.feed(records);
    check.finish(head)
}

/// [`verify`] a page at a time: each page in sequence order is fed as it
/// is read, and only the last record's link is kept, so a chain of any
/// length is checked in the memory of one page.
#[derive(Debug)]
pub struct ChainCheck<'a> {
    tenant_id: &'a str,
    expected: ChainHead,
    records: u64,
    failed: Option<(u64, String)>,
}

impl<'a> ChainCheck<'a> {
    pub fn new(tenant_id: &'a str) -> Self {
        ChainCheck { tenant_id, expected: ChainHead::genesis(), records: 0, failed: None }
    }

    /// Checks the next records; false once a record has failed (nothing
    /// after it is looked at).
    pub fn feed(&mut self, records: &[StoredRecord]) -> bool {
        for stored in records {
            if self.failed.is_some() {
                return false;
            }
            self.failed = self.check(stored);
            if self.failed.is_none() {
                self.expected = ChainHead { seq: stored.seq, hash: stored.hash.clone() };
                self.records += 1;
            }
        }
        self.failed.is_none()
    }

    fn check(&self, stored: &StoredRecord) -> Option<(u64, String)> {
        let want_seq = self.expected.seq + 1;
        if stored.seq != want_seq {
            return Some((want_seq, format!("record {want_seq} is missing (found {} next)", stored.seq)));
        }
        if hash_of(&stored.json) != stored.hash {
            return Some((stored.seq, "record content does not match its hash".into()));
        }
        let record: AuditRecord = match serde_json::from_str(&stored.json) {
            Ok(r) => r,
            Err(e) => return Some((stored.seq, format!("record is not a valid audit record: {e}"))),
        };
        if record.seq != stored.seq || record.tenant_id != self.tenant_id {
            return Some((stored.seq, "record names another position or tenant".into()));
        }
        if record.prev_hash != self.expected.hash {
            return Some((stored.seq, "record does not link to the previous record's hash".into()));
        }
        None
    }

    /// The verdict: every record fed linked, and the last one is `head`.
    pub fn finish(self, head: &ChainHead) -> Verification {
        let failed =
            self.failed.or_else(|| (self.expected != *head).then(|| (self.expected.seq + 1, format!("chain ends at record {} but the tenant's head is record {}", self.expected.seq, head.seq))));
        match failed {
            Some((seq, problem)) => Verification { ok: false, records: self.records, first_bad_seq: Some(seq), problem: Some(problem), head_hash: head.hash.clone(), pending: 0 },
            None => Verification { ok: true, records: self.records, first_bad_seq: None, problem: None, head_hash: head.hash.clone(), pending: 0 },
        }
    }
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

    #[test]
    fn a_chain_checked_a_page_at_a_time_gives_the_verdict_of_the_whole() {
        let (recs, head) = chain("t1", &ChainHead::genesis(), "2026-01-01T00:00:00Z", (1..=10).map(ev).collect());
        let base = stored(&recs);
        let paged = |records: &[StoredRecord], size: usize| {
            let mut check = ChainCheck::new("t1");
            for page in records.chunks(size) {
                if !check.feed(page) {
                    break;
                }
            }
            check.finish(&head)
        };
        let mut edited = base.clone();
        edited[6].json = edited[6].json.replace("active", "suspended");
        let mut gap = base.clone();
        gap.remove(3);
        for records in [&base, &edited, &gap, &base[..9].to_vec()] {
            for size in [1, 3, 4, 10] {
                assert_eq!(paged(records, size), verify("t1", records, &head), "pages of {size}");
            }
        }
        assert_eq!(paged(&edited, 3).first_bad_seq, Some(7));
        assert_eq!(paged(&edited, 3).records, 6, "the records before the bad one");
    }

    fn export(records: &[(AuditRecord, String, String)], head: &ChainHead) -> String {
        let checkpoint = Checkpoint { key_id: "k".into(), signature: "sig".into(), ..Checkpoint::unsigned("t1", head, at0()) };
        let mut out: Vec<String> = records.iter().map(|(_, json, _)| json.clone()).collect();
        out.push(serde_json::to_string(&checkpoint).unwrap());
        out.join("\n") + "\n"
    }

    #[test]
    fn an_export_verifies_and_any_edit_of_a_record_or_a_rewritten_chain_does_not() {
        let cause = Cause::new(CauseKind::ApiCall, "r1");
        let events: Vec<AuditEvent> = (0..4).map(|i| AuditEvent::new(AuditAction::MemberCreated, format!("user:u{i}"), &cause, "seat")).collect();
        let (records, head) = chain("t1", &ChainHead::genesis(), "2026-11-24T00:00:00Z", events.clone());
        let good = export(&records, &head);
        assert_eq!(verify_export(&good).unwrap().seq, 4);
        // From the middle on: the first link is taken as given.
        assert!(verify_export(&export(&records[2..], &head)).is_ok());

        // A record edited, its hash left: the next record no longer links.
        let edited = good.replacen("user:u1", "user:u9", 1);
        assert!(verify_export(&edited).unwrap_err().contains("does not link"), "{edited}");
        // The chain and its hashes rewritten from the edit on: the end no
        // longer matches the checkpoint (whose signature pins it).
        let mut rewritten = events;
        rewritten[1].subject = "user:u9".into();
        let (forged, forged_head) = chain("t1", &ChainHead::genesis(), "2026-11-24T00:00:00Z", rewritten);
        let mut lines: Vec<String> = export(&forged, &forged_head).lines().map(str::to_string).collect();
        lines.pop();
        lines.push(good.lines().last().unwrap().to_string());
        assert!(verify_export(&lines.join("\n")).unwrap_err().contains("the checkpoint says"));
        // A record dropped.
        let dropped: Vec<&str> = good.lines().enumerate().filter(|(i, _)| *i != 1).map(|(_, l)| l).collect();
        assert!(verify_export(&dropped.join("\n")).unwrap_err().contains("follows"));
        assert!(verify_export("").is_err());
    }

    #[test]
    fn the_signed_message_names_every_field_of_the_checkpoint() {
        let head = ChainHead { seq: 7, hash: "ab".into() };
        let c = Checkpoint { key_id: "arn:k".into(), ..Checkpoint::unsigned("t1", &head, at0()) };
        assert_eq!(c.message(), "entitle-audit-checkpoint/v1\nt1\n7\nab\n2026-11-24T00:00:00.000Z\narn:k");
        let earlier = Checkpoint { earlier: vec![c.clone()], ..c.clone() };
        assert_eq!(earlier.message(), c.message(), "the stored checkpoints an export carries are not part of its signed message");
        assert!(!serde_json::to_string(&c).unwrap().contains("earlier"), "a checkpoint without earlier ones has the contract's six fields");
    }

    fn at0() -> DateTime<Utc> {
        "2026-11-24T00:00:00Z".parse().unwrap()
    }

    /// The table rewritten with its hashes after a checkpoint was stored:
    /// the export's own checkpoint (signed over the rewritten head) agrees
    /// with the records, the stored one does not.
    #[test]
    fn a_stored_checkpoint_catches_a_chain_rewritten_after_it_was_signed() {
        let cause = Cause::new(CauseKind::ApiCall, "r1");
        let events: Vec<AuditEvent> = (0..5).map(|i| AuditEvent::new(AuditAction::MemberCreated, format!("user:u{i}"), &cause, "seat")).collect();
        let (records, head) = chain("t1", &ChainHead::genesis(), "2026-11-24T00:00:00Z", events.clone());
        let stored_head = ChainHead { seq: 3, hash: records[2].2.clone() };
        let stored = Checkpoint { key_id: "k".into(), signature: "sig3".into(), ..Checkpoint::unsigned("t1", &stored_head, at0()) };
        let with = |records: &[(AuditRecord, String, String)], head: &ChainHead, earlier: Vec<Checkpoint>| {
            let mut text = export(records, head);
            let last: Checkpoint = serde_json::from_str(text.lines().last().unwrap()).unwrap();
            let cut = text.trim_end().rfind('\n').map_or(0, |i| i + 1);
            text.truncate(cut);
            text + &serde_json::to_string(&Checkpoint { earlier, ..last }).unwrap() + "\n"
        };
        assert!(verify_export(&with(&records, &head, vec![stored.clone()])).is_ok());
        // A stored checkpoint outside the range exported says nothing about it.
        assert!(verify_export(&with(&records[3..], &head, vec![stored.clone()])).is_ok());

        let mut rewritten = events;
        rewritten[1].subject = "user:u9".into();
        let (forged, forged_head) = chain("t1", &ChainHead::genesis(), "2026-11-24T00:00:00Z", rewritten);
        assert!(verify_export(&with(&forged, &forged_head, vec![])).is_ok(), "consistent in itself");
        let e = verify_export(&with(&forged, &forged_head, vec![stored.clone()])).unwrap_err();
        assert!(e.contains("record 3 hashes to") && e.contains("rewritten after it was signed"), "{e}");
        let other = Checkpoint { tenant_id: "t2".into(), ..stored };
        assert!(verify_export(&with(&records, &head, vec![other])).unwrap_err().contains("names tenant t2"));
    }

    #[test]
    fn pending_records_are_ordered_by_time_then_tie_and_chain_like_any_other() {
        use chrono::TimeZone;
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let later = t0 + chrono::Duration::microseconds(1);
        // Two changes in the same microsecond get distinct keys; a later
        // change sorts after both whatever its tie-breaker.
        let (a, b) = (PendingRecord::new(t0, "req-a", ev(1)), PendingRecord::new(t0, "req-b", ev(2)));
        let c = PendingRecord::new(later, "req-0", ev(3));
        assert_ne!(a.key, b.key);
        assert!(a.key < c.key && b.key < c.key, "{} {} {}", a.key, b.key, c.key);
        assert_eq!(PendingRecord::new(t0, "req-a", ev(1)), a, "the same change gives the same key: a retry overwrites, never doubles");

        let mut pending = vec![c.clone(), b.clone(), a.clone()];
        pending.sort_by(|x, y| x.key.cmp(&y.key));
        let (before, head) = chain("t1", &ChainHead::genesis(), "2025-12-31T23:59:59Z", vec![ev(0)]);
        let (integrated, head) = integrate("t1", &head, &pending);
        assert_eq!(integrated.iter().map(|(r, _, _)| r.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!(integrated[2].0.event.subject, "member:u3", "the latest change is chained last");
        assert_eq!(integrated[0].0.at, "2026-01-01T00:00:00.000Z", "a record keeps the time of its change");
        let all: Vec<_> = before.into_iter().chain(integrated).collect();
        assert!(verify("t1", &stored(&all), &head).ok);

        // Once chained, an integrated record is as tamper-evident as any.
        let mut edited = stored(&all);
        edited[2].json = edited[2].json.replace("member:u", "member:x");
        edited[2].hash = hash_of(&edited[2].json);
        assert_eq!(verify("t1", &edited, &head).first_bad_seq, Some(4));
    }
}
