//! A tenant's one transaction, as the use cases decide it: its [`Write`]s,
//! each on its own condition, the `META` update, the audit records and
//! events ([`Change`]), committed by [`super::Tenants::commit`] (or
//! `commit_unchained`) all or nothing.

use crate::core::access::TenantRules;
use crate::core::access::{Member, MemberAccess};
use crate::core::audit::{AuditEvent, PendingRecord};
use crate::core::contract::{Amendment, ClauseChange};
use crate::core::ids::ModelVersion;
use crate::core::ids::{ContractId, EventId, TargetId, UserId};
use crate::core::license::{License, Source, TenantAccess};
use crate::core::provider::connection::Connection;
use crate::core::provider::{DirGroup, Edge};
use crate::core::scim::Target;
use crate::core::tenant::{MemberItem, ModelPin, WaitingMove};
use chrono::{DateTime, Utc};
use serde_json::Value;

/// One write of a [`Change`]. Each states its own condition; a refused one
/// means either that what the decision was made on moved (decide again), or
/// that a rule of the domain holds (report it): see [`Write::decide_again_when_refused`].
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// An accepted source event (idempotency), unless it was accepted before.
    EventRecord {
        source: Source,
        event_id: EventId,
        body_hash: String,
        outcome: &'static str,
        at: DateTime<Utc>,
    },
    /// An event that cannot be applied as it is, unless parked before.
    Parked {
        source: Source,
        event_id: EventId,
        reason: String,
        payload: Value,
        at: DateTime<Utc>,
    },
    /// A license, conditional on the version held when `if_version` is
    /// given, due for the sweep at `due` (what the tenant's model says of it).
    License {
        license: License,
        if_version: Option<i64>,
        due: Option<DateTime<Utc>>,
    },
    /// A member, on the condition `guard` states.
    Member {
        item: MemberItem,
        guard: MemberGuard,
    },
    /// The member's email, unless another member holds it.
    ClaimEmail(Member),
    /// A removed member's email, if it is its own.
    ReleaseEmail(Member),
    /// A delivery record for each target: the member's state as of this change.
    Delivery {
        target: TargetId,
        item: MemberItem,
    },
    /// A member's delivery held, with the reason: replacing the record of
    /// sequence `if_seq`, or (`None`) only where no record waits.
    ParkDelivery {
        target: TargetId,
        member: Member,
        access: MemberAccess,
        if_seq: Option<u64>,
        reason: String,
    },
    /// A target's configuration (its health kept as stored, if any).
    TargetConfig(Target),
    /// A target's health, if the target still exists.
    TargetHealth(Target),
    /// A target removed, if it exists.
    RemoveTarget(TargetId),
    /// A new contract: which tenant it belongs to, unless it exists.
    NewContract {
        contract: ContractId,
        body_hash: String,
    },
    /// A contract's current document: the first (`version` 1, unless one
    /// exists) or the next (if one exists).
    ContractDocument {
        contract: ContractId,
        version: u64,
        document: Value,
    },
    /// A version of a contract's history, unless it exists.
    ContractVersion {
        contract: ContractId,
        version: u64,
        document: Value,
        changes: Vec<ClauseChange>,
        cause: String,
        at: DateTime<Utc>,
    },
    Amendment {
        amendment: Amendment,
        body_hash: String,
    },
    /// A directory connection: a new one (`if_rev` `None`, unless it
    /// exists) or the next revision of one (if still at `if_rev`).
    Connection {
        connection: Connection,
        if_rev: Option<u64>,
    },
    /// A directory connection revoked, if still at revision `rev`.
    RemoveConnection {
        id: String,
        rev: u64,
    },
    /// A pushed User's userName (its lowercase key), unless another member holds it.
    ClaimUserName {
        user_name: String,
        user: UserId,
    },
    /// A userName given up, if it is the member's.
    ReleaseUserName {
        user_name: String,
        user: UserId,
    },
    /// A directory group: new (`if_rev` `None`, unless it exists) or the
    /// next revision of one (if still at `if_rev`).
    Group {
        group: DirGroup,
        if_rev: Option<u64>,
    },
    /// A directory group removed, if still at revision `rev`.
    RemoveGroup {
        id: String,
        rev: u64,
    },
    /// A group's name (its lowercase key), unless another group holds it.
    ClaimGroupName {
        name: String,
        group: String,
    },
    /// A group name given up, if it is the group's.
    ReleaseGroupName {
        name: String,
        group: String,
    },
    /// A member of a directory group (written as it is).
    Edge(Edge),
    /// A member out of a directory group.
    RemoveEdge {
        group: String,
        user: UserId,
    },
}

impl Write {
    /// A refused write whose condition guards what the decision was made
    /// on (a license version, a contract's current version, a target that
    /// may have gone): read again and decide again. The others state a rule
    /// (an event is accepted once, an email belongs to one member, ...):
    /// the refusal is the answer.
    pub fn decide_again_when_refused(&self) -> bool {
        matches!(
            self,
            Write::License { .. }
                | Write::Member { .. }
                | Write::TargetHealth(_)
                | Write::NewContract { .. }
                | Write::ContractDocument { .. }
                | Write::ContractVersion { .. }
                | Write::Connection { .. }
                | Write::RemoveConnection { .. }
                | Write::Group { .. }
                | Write::RemoveGroup { .. }
        )
    }
}

/// On what condition a member item is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberGuard {
    /// A new member (or one removed before, coming back): not if another
    /// request created it meanwhile.
    New,
    /// Only if the item is still at the revision the decision was made on
    /// (nothing wrote it since: an account removed meanwhile is not given
    /// a seat, a seat the tenant's admin gave meanwhile is not taken back).
    Rev(u64),
}

/// What a change sets on the tenant's `META`, besides its chain head.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetaUpdate {
    /// The tenant's effective access (its seat total and policy go beside
    /// it as plain attributes, for the counters' conditions).
    pub access: Option<TenantAccess>,
    pub rules: Option<TenantRules>,
    /// Added to the seat counters (never set: creations, removals and
    /// reconciles change them concurrently).
    pub used_delta: i64,
    pub pending_delta: i64,
    /// Commit only if at most this many seats were used before.
    pub used_at_most: Option<u32>,
    /// A seat claimed by a new account: commit only if the tenant is seated,
    /// a seat is free and nobody waits (so a seat never goes to a newcomer
    /// ahead of someone waiting).
    pub claim_seat: bool,
    /// Where the tenant's member walk stands now.
    pub walk: Option<crate::core::tenant::Walk>,
    /// Commit only if the walk's goal is still the one read
    /// ([`TenantMeta::walk_goal`](crate::core::tenant::TenantMeta::walk_goal)): a member decided on the tenant's access
    /// as read is not written after a walk to another access passed it.
    pub walk_goal_is: Option<Option<String>>,
    /// The tenant now has a license or contract: it is known.
    pub licensed: bool,
    /// The lifetime of the tenant's license files: set (`Some(Some(s))`)
    /// or back to the default (`Some(None)`).
    pub license_file_seconds: Option<Option<u64>>,
    /// The model version the tenant follows from now on (a move). A new
    /// tenant follows the latest registered version without being told.
    pub model_version: Option<ModelVersion>,
    /// Its pin set or released.
    pub model_pin: Option<Option<ModelPin>>,
    /// A waiting move set or dropped.
    pub model_waiting: Option<Option<WaitingMove>>,
    /// When the tenant's model item is next due for the sweep, after this
    /// change (a pin's end, a waiting move: [`TenantMeta::model_due`](crate::core::tenant::TenantMeta::model_due)); set
    /// with either of them.
    pub model_due: Option<Option<DateTime<Utc>>>,
}

/// One transaction of a tenant: writes, audit records (chained after the
/// head the change was decided on, dated `at`), the `META` update, the
/// events to announce (besides those the records announce), and pending
/// audit records to chain first (see [`PendingRecord`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub writes: Vec<Write>,
    pub audit: Vec<AuditEvent>,
    pub meta: MetaUpdate,
    pub events: Vec<Value>,
    /// Pending records this change chains (and removes), before its own.
    pub integrate: Vec<PendingRecord>,
    pub at: DateTime<Utc>,
}

impl Change {
    pub fn new(at: DateTime<Utc>) -> Self {
        Change { writes: Vec::new(), audit: Vec::new(), meta: MetaUpdate::default(), events: Vec::new(), integrate: Vec::new(), at }
    }
    pub fn write(mut self, w: Write) -> Self {
        self.writes.push(w);
        self
    }
    pub fn audit(mut self, e: AuditEvent) -> Self {
        self.audit.push(e);
        self
    }
}
