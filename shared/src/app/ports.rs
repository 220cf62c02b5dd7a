//! The ports: what the use cases need from the world, as narrow traits.
//! The adapters implement them over DynamoDB, SQS, EventBridge, Secrets
//! Manager and HTTP; [`super::memory`] implements them in memory.
//!
//! Every write of a tenant is one [`Change`] committed with
//! [`Tenants::commit`]: the change's own writes, its audit records and the
//! tenant's chain head, in one transaction, conditional on the head the
//! change was decided on. [`super::commit::audited`] is the one loop that
//! reads, decides and commits, and decides again when the head moved.
//! The change and its writes are in [`change`]; the traits and their
//! errors here.

mod change;

pub use change::{Change, MemberGuard, MetaUpdate, Write};

use crate::core::audit::{ChainHead, PendingRecord, StoredRecord};
use crate::core::contract::{Amendment, ContractState};
use crate::core::ids::{AmendmentId, ContractId, EventId, TargetId, TenantId, UserId};
use crate::core::ids::{ModelVersion, RunId};
use crate::core::license::{License, Source};
use crate::core::model::LicensingModel;
use crate::core::portal::{Link as PortalLink, Session as PortalSession};
use crate::core::provider::connection::{Connection, PushNote, PushStats};
use crate::core::provider::{DirGroup, Edge};
use crate::core::reconcile::ReconcileRequest;
use crate::core::scim::{DesiredUser, GroupChange, Known, Pending, ScimGroup, ScimUser, SyncOutcome, Target, TargetError};
use crate::core::seats::SeatList;
use crate::core::tenant::{MemberItem, TenantHead, TenantMeta, TenantState};
use crate::core::versions::{Outcome, PreviewPage, Registered, Registration, RunState};
use chrono::{DateTime, Utc};
use serde_json::Value;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

/// A port could not do what it was asked (the service failed, or what it
/// holds cannot be read). Never the caller's fault: answered 500, logged
/// with its source chain.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("{what} failed")]
    Unavailable {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("stored item {key} is unreadable: {why}")]
    Corrupt { key: String, why: String },
}

impl PortError {
    pub fn unavailable(what: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        PortError::Unavailable { what, source: Box::new(source) }
    }
}

/// A service Entitle reads (Stripe's API) that did not answer usefully:
/// unreachable, timed out, rate-limited (with how long it asked us to
/// wait), a 5xx, or an answer that is not what its API promises.
#[derive(Debug, thiserror::Error)]
#[error("{service}: {detail}")]
pub struct Upstream {
    pub service: &'static str,
    pub detail: String,
    pub retry_after: Option<std::time::Duration>,
}

/// How a commit failed.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another writer moved the tenant's chain head first: nothing was written.
    #[error("the tenant's chain head moved")]
    HeadMoved,
    /// Write `0` of the change did not meet its own condition: nothing was written.
    #[error("write {0} of the change did not meet its condition")]
    Refused(usize),
    /// The tenant's seat counters did not allow the change (a seat claimed
    /// at creation that is no longer free): nothing was written.
    #[error("the tenant's seat counters did not allow the change")]
    Seats,
    #[error(transparent)]
    Port(#[from] PortError),
}

/// The tenant's `META`, one license, and the body hash an event was
/// accepted with (if it was), read together.
pub type LicenseRead = (Option<TenantMeta>, (Option<License>, Option<String>));

/// A tenant's state, its audit chain, and the one write path.
pub trait Tenants: Send + Sync {
    /// The tenant's `META`, read consistently.
    fn meta(&self, tenant: &TenantId) -> impl Future<Output = Result<Option<TenantMeta>, PortError>> + Send;
    /// Everything desired access depends on, read consistently: every
    /// member too (drift repair, explain, an amendment's impact).
    fn tenant(&self, tenant: &TenantId) -> impl Future<Output = Result<Option<TenantState>, PortError>> + Send;
    /// The tenant without its members, and only its first
    /// [`PENDING_PAGE`](crate::core::tenant::PENDING_PAGE) pending audit
    /// records: what a reconcile reads whatever the tenant's size (two
    /// requests; a third when more records are pending than that).
    fn tenant_head(&self, tenant: &TenantId) -> impl Future<Output = Result<Option<TenantHead>, PortError>> + Send;
    /// One page of the tenant's members in user id order, after the member
    /// whose sort key is `after`; and the sort key to go on from, if more follow.
    fn members_page(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> impl Future<Output = Result<(Vec<MemberItem>, Option<String>), PortError>> + Send;
    /// The first (or, `from_end`, the last) `limit` members of a list of the
    /// stored seat order (holders, or the line).
    fn seat_order(&self, tenant: &TenantId, list: SeatList, from_end: bool, limit: usize) -> impl Future<Output = Result<Vec<MemberItem>, PortError>> + Send;
    /// One page of a list of the stored seat order, in order, after the
    /// member whose order key (`core::seats::order_key_string`) is `after`;
    /// and the key to go on from, if more may follow (what a person pages through).
    fn seat_order_page(&self, tenant: &TenantId, list: SeatList, after: Option<&str>, limit: usize) -> impl Future<Output = Result<(Vec<MemberItem>, Option<String>), PortError>> + Send;
    fn member(&self, tenant: &TenantId, user: &UserId) -> impl Future<Output = Result<Option<MemberItem>, PortError>> + Send;
    /// The tenant's licenses from one source (a query of their prefix only).
    fn licenses(&self, tenant: &TenantId, source: Source) -> impl Future<Output = Result<Vec<License>, PortError>> + Send;
    /// The tenant's `META` and one license, read together, consistently, in one request.
    fn meta_and_license(&self, tenant: &TenantId, source: Source, license: &str) -> impl Future<Output = Result<(Option<TenantMeta>, Option<License>), PortError>> + Send;
    /// The tenant's `META`, one license, and whether an event was accepted
    /// (its body hash), read together, consistently, in one request.
    fn meta_license_and_event(&self, tenant: &TenantId, source: Source, license: &str, event: &EventId) -> impl Future<Output = Result<LicenseRead, PortError>> + Send;
    /// The tenant's `META` and one member, read together, consistently, in one request.
    fn meta_and_member(&self, tenant: &TenantId, user: &UserId) -> impl Future<Output = Result<(Option<TenantMeta>, Option<MemberItem>), PortError>> + Send;
    /// The tenant's `META` and some of its members (each `None` when it does
    /// not exist), read together, consistently, in one request.
    fn meta_and_members(&self, tenant: &TenantId, users: &[UserId]) -> impl Future<Output = Result<(Option<TenantMeta>, Vec<Option<MemberItem>>), PortError>> + Send;
    /// The body hash an event was accepted with, if it was.
    fn accepted_event(&self, tenant: &TenantId, source: Source, event: &EventId) -> impl Future<Output = Result<Option<String>, PortError>> + Send;
    /// Commits a change against `head` (`None`: the tenant has no chain
    /// yet); returns the new head.
    fn commit(&self, tenant: &TenantId, head: Option<&ChainHead>, change: &Change) -> impl Future<Output = Result<ChainHead, CommitError>> + Send;
    /// Commits a change without the chain's lock: its writes on their own
    /// conditions, its counters and their conditions on `META`, and its
    /// audit records as pending records (chained later, by whoever holds the
    /// lock: [`crate::app::audit::integrate`]), each with what it announces
    /// (announced when it is chained). A change with events of its own or
    /// that chains pending records cannot be committed so.
    fn commit_unchained(&self, tenant: &TenantId, change: &Change, salt: &str) -> impl Future<Output = Result<(), CommitError>> + Send;
    /// The tenant's head and its first `limit` pending audit records, in
    /// order, read together (fewer only when no more are pending).
    fn pending_audit(&self, tenant: &TenantId, limit: usize) -> impl Future<Output = Result<(Option<TenantMeta>, Vec<PendingRecord>), PortError>> + Send;
    /// How many audit records of the tenant are pending, counted where
    /// they are stored (none of them read).
    fn pending_count(&self, tenant: &TenantId) -> impl Future<Output = Result<u64, PortError>> + Send;
    /// Parks an event that names no tenant (there is no chain to audit it
    /// in); false if it was parked before.
    fn park_unattributed(&self, source: Source, event: &EventId, reason: &str, payload: &Value, at: DateTime<Utc>) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// The tenant's wake epoch (see [`crate::app::reconcile::wake`]):
    /// `None` before provision first advanced it.
    fn wake_epoch(&self, tenant: &TenantId) -> impl Future<Output = Result<Option<u64>, PortError>> + Send;
    /// Advances the tenant's wake epoch by one (provision does, before it
    /// reads the tenant); nothing for a tenant without a `META`.
    fn advance_wake(&self, tenant: &TenantId) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Marks that a reconcile of the tenant stopped for time and queued the
    /// rest of its work (`true`), or that a reconcile finished (`false`):
    /// [`TenantMeta::continues`]. Nothing for a tenant without a `META`.
    fn set_continues(&self, tenant: &TenantId, continues: bool) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Records a barrier mark on the tenant (see [`ReconcileRequest::barrier`]).
    fn mark_barrier(&self, tenant: &TenantId, mark: &str) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// One page of the audit trail after `after_seq`, oldest first, and
    /// whether there is more.
    fn audit_page(&self, tenant: &TenantId, after_seq: u64, limit: u32) -> impl Future<Output = Result<(Vec<StoredRecord>, bool), PortError>> + Send;
}

/// A contract's history and amendments (the writes are [`Write`]s).
pub trait Contracts: Send + Sync {
    fn contract(&self, id: &ContractId) -> impl Future<Output = Result<Option<ContractState>, PortError>> + Send;
    /// The body hash the contract was created with.
    fn contract_body_hash(&self, id: &ContractId) -> impl Future<Output = Result<Option<String>, PortError>> + Send;
    /// The version history, oldest first: (version, cause, at, change summaries).
    fn contract_history(&self, id: &ContractId) -> impl Future<Output = Result<Vec<Value>, PortError>> + Send;
    /// An amendment and the body hash it was submitted with.
    fn amendment(&self, id: &ContractId, aid: &AmendmentId) -> impl Future<Output = Result<Option<(Amendment, String)>, PortError>> + Send;
    /// The contract's scheduled amendments, earliest first.
    fn scheduled_amendments(&self, id: &ContractId) -> impl Future<Output = Result<Vec<Amendment>, PortError>> + Send;
}

/// SCIM targets and their delivery records. The writes that need no audit
/// record are here; the others are [`Write`]s.
pub trait Targets: Send + Sync {
    fn targets(&self, tenant: &TenantId) -> impl Future<Output = Result<Vec<Target>, PortError>> + Send;
    /// Delivery records waiting for a target, in member order.
    fn pending(&self, tenant: &TenantId, target: &TargetId) -> impl Future<Output = Result<Vec<Pending>, PortError>> + Send;
    /// The target took the member's state: the record goes, unless a newer
    /// change replaced it meanwhile.
    fn delivered(&self, tenant: &TenantId, target: &TargetId, user: &UserId, seq: u64) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// The target refused the member's state: counted, and parked after
    /// `core::scim::MAX_REFUSALS`.
    fn refused(&self, tenant: &TenantId, target: &TargetId, pending: &Pending, reason: &str) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// A target's health (no audit record), if the target still exists.
    fn save_health(&self, tenant: &TenantId, target: &Target) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Drops the delivery records left for a removed target; how many.
    fn drop_deliveries(&self, tenant: &TenantId, target: &TargetId) -> impl Future<Output = Result<usize, PortError>> + Send;
}

/// An item of the due index: what falls due, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DueItem {
    License {
        tenant: TenantId,
        source: Source,
        license: String,
        due_at: i64,
    },
    Amendment {
        contract: ContractId,
        due_at: i64,
    },
    /// A delivery record or a target to wake (a retry, a drift repair);
    /// `what` names which.
    Delivery {
        tenant: TenantId,
        what: String,
        due_at: i64,
    },
    /// A tenant whose chain head moved since its last stored checkpoint.
    Checkpoint {
        tenant: TenantId,
        due_at: i64,
    },
    /// A tenant whose model pin ends, or whose rollout's move was waiting
    /// for the end of its billing period.
    Model {
        tenant: TenantId,
        due_at: i64,
    },
}

impl DueItem {
    /// What the item is about (an item is listed again until it is handled).
    pub fn key(&self) -> String {
        match self {
            DueItem::License { tenant, source, license, .. } => format!("license/{tenant}/{}/{license}", source.as_str()),
            DueItem::Amendment { contract, .. } => format!("contract/{contract}"),
            DueItem::Delivery { tenant, what, .. } => format!("delivery/{tenant}/{what}"),
            DueItem::Checkpoint { tenant, .. } => format!("checkpoint/{tenant}"),
            DueItem::Model { tenant, .. } => format!("model/{tenant}"),
        }
    }

    pub fn due_at(&self) -> i64 {
        match self {
            DueItem::License { due_at, .. } | DueItem::Amendment { due_at, .. } | DueItem::Delivery { due_at, .. } | DueItem::Checkpoint { due_at, .. } | DueItem::Model { due_at, .. } => *due_at,
        }
    }
}

/// Signed checkpoints of tenants' audit chains, stored beside the chain.
pub trait Checkpoints: Send + Sync {
    /// Stores a signed checkpoint; one of the same position already stored is kept.
    fn put_checkpoint(&self, checkpoint: &crate::core::audit::Checkpoint) -> impl Future<Output = Result<(), PortError>> + Send;
    /// The tenant's head is checkpointed at `seq`: it is no longer due,
    /// unless it moved past `seq` meanwhile (false: it is due again at
    /// `again_at`).
    fn checkpointed(&self, tenant: &TenantId, seq: u64, again_at: DateTime<Utc>) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// The stored checkpoints at positions `from..=to`, in order.
    fn checkpoints(&self, tenant: &TenantId, from: u64, to: u64) -> impl Future<Output = Result<Vec<crate::core::audit::Checkpoint>, PortError>> + Send;
}

/// Signs checkpoints with the stack's audit signing key (KMS).
pub trait Signer: Send + Sync {
    /// Sets `key_id` and `signature` (ECDSA P-256 over SHA-256 of [`crate::core::audit::Checkpoint::message`]).
    fn sign(&self, checkpoint: crate::core::audit::Checkpoint) -> impl Future<Output = Result<crate::core::audit::Checkpoint, PortError>> + Send;
}

/// One page of the due index: what is due, oldest first; how many index
/// items were read for it; where the next page starts (`None`: nothing
/// more is due). The cursor is the store's own, opaque here.
#[derive(Debug, Clone, Default)]
pub struct DuePage {
    pub items: Vec<DueItem>,
    pub read: u64,
    pub next: Option<String>,
}

/// The sparse index of what falls due.
pub trait DueIndex: Send + Sync {
    /// One page of what is due at `as_of`, from `cursor` (the first page
    /// without). Items stay listed until handled, so a walk goes on past
    /// those that wait on something else (a delivery to a target that is
    /// down) instead of reading them again.
    fn due(&self, as_of: DateTime<Utc>, cursor: Option<&str>) -> impl Future<Output = Result<DuePage, PortError>> + Send;
}

/// The reconcile queue (FIFO, one message group per tenant).
pub trait Queue: Send + Sync {
    /// Queues a request; `dedup` makes a repeat within the queue's window a no-op.
    fn send(&self, request: &ReconcileRequest, dedup: &str) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// SCIM targets' bearer tokens, kept under a name derived from (tenant,
/// target): never a name read from the table.
pub trait Tokens: Send + Sync {
    fn get(&self, tenant: &TenantId, target: &TargetId) -> impl Future<Output = Result<String, PortError>> + Send;
    fn put(&self, tenant: &TenantId, target: &TargetId, token: &str) -> impl Future<Output = Result<(), PortError>> + Send;
    fn delete(&self, tenant: &TenantId, target: &TargetId) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// SCIM targets over the network.
pub trait Directory: Send + Sync {
    type Session: DirectorySession;
    /// A session with one target, bounded by `deadline` and `read_budget` bytes.
    fn open(&self, target: &Target, token: String, deadline: Instant, read_budget: usize) -> Self::Session;
}

/// One target, for one delivery run.
pub trait DirectorySession: Send + Sync {
    /// Makes the target hold what `desired` says for one member.
    fn sync_member(&self, desired: &DesiredUser, managed: &BTreeSet<String>, known: Option<Known>) -> impl Future<Output = Result<SyncOutcome, TargetError>> + Send;
    /// The same, its managed-group membership changes returned, not made.
    fn sync_user_deferred(&self, desired: &DesiredUser, managed: &BTreeSet<String>, known: Option<Known>) -> impl Future<Output = Result<(SyncOutcome, Vec<GroupChange>), TargetError>> + Send;
    /// Membership changes, batched per group.
    fn apply_group_changes(&self, changes: &[GroupChange]) -> impl Future<Output = Result<(), TargetError>> + Send;
    fn users(&self) -> impl Future<Output = Result<Vec<ScimUser>, TargetError>> + Send;
    fn groups(&self) -> impl Future<Output = Result<Vec<ScimGroup>, TargetError>> + Send;
    fn remove_from_group(&self, group_id: &str, group: &str, scim_user: &str) -> impl Future<Output = Result<(), TargetError>> + Send;
    /// Why the target's member lists stopped being trusted in this session
    /// (it answered against its profile), if they did.
    fn contradiction(&self) -> Option<String>;
    /// Whether this session read member lists that agreed with the target.
    fn rosters_agreed(&self) -> bool;
}

/// One page of subscriptions, oldest id order as Stripe lists them.
#[derive(Debug, Clone, Default)]
pub struct SubscriptionPage {
    pub data: Vec<Value>,
    pub has_more: bool,
}

/// Stripe's API: the state of subscriptions, never an event's snapshot.
pub trait Billing: Send + Sync {
    /// A subscription as Stripe holds it now; `None` when Stripe does not know it (404).
    fn subscription(&self, id: &crate::core::ids::LicenseId) -> impl Future<Output = Result<Option<Value>, Upstream>> + Send;
    /// One page of the account's subscriptions, every status, after the
    /// subscription `starting_after`.
    fn subscriptions(&self, starting_after: Option<&str>, limit: u32) -> impl Future<Output = Result<SubscriptionPage, Upstream>> + Send;
}

/// See [`Directories::push_view`].
#[derive(Debug, Clone, Default)]
pub struct PushView {
    pub connection: Option<Connection>,
    pub meta: Option<TenantMeta>,
    pub member: Option<MemberItem>,
    /// The member the userName names (`user_by_name`).
    pub name_holder: Option<UserId>,
}

/// A tenant's directory, what its identity providers push besides
/// members: connections, groups and their members, and the lookups by
/// name. The writes are [`Write`]s.
pub trait Directories: Send + Sync {
    fn connection(&self, tenant: &TenantId, id: &str) -> impl Future<Output = Result<Option<Connection>, PortError>> + Send;
    fn connections(&self, tenant: &TenantId) -> impl Future<Output = Result<Vec<Connection>, PortError>> + Send;
    /// The member a userName names: a pushed User's claim, else a member's email.
    fn user_by_name(&self, tenant: &TenantId, user_name: &str) -> impl Future<Output = Result<Option<UserId>, PortError>> + Send;
    /// What a push of one User decides on, in one consistent read (as the
    /// app's `POST .../members` reads its tenant and member): the connection
    /// asking, the tenant's `META`, the member, and who holds the userName.
    fn push_view(&self, tenant: &TenantId, connection: &str, user: &UserId, user_name: &str) -> impl Future<Output = Result<PushView, PortError>> + Send;
    fn group(&self, tenant: &TenantId, id: &str) -> impl Future<Output = Result<Option<DirGroup>, PortError>> + Send;
    fn group_by_name(&self, tenant: &TenantId, name: &str) -> impl Future<Output = Result<Option<DirGroup>, PortError>> + Send;
    /// The tenant's groups in id order, after `after`; and the id to go on from.
    fn groups_page(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> impl Future<Output = Result<(Vec<DirGroup>, Option<String>), PortError>> + Send;
    /// Every member of a group, in user id order.
    fn group_members(&self, tenant: &TenantId, group: &str) -> impl Future<Output = Result<Vec<Edge>, PortError>> + Send;
    /// Counts one push into its connection's stats (an atomic add).
    fn note_push(&self, tenant: &TenantId, connection: &str, note: PushNote, at: DateTime<Utc>) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Each connection's stats, by connection id (one query of the tenant's directory).
    fn push_stats(&self, tenant: &TenantId) -> impl Future<Output = Result<std::collections::BTreeMap<String, PushStats>, PortError>> + Send;
}

/// The admin portal's links and sessions, each stored under the SHA-256
/// of its secret (see [`crate::core::portal`]); they expire by themselves.
pub trait Portal: Send + Sync {
    /// Stores a new link, unless the tenant has made `per_minute` links in
    /// the current minute (then false, nothing stored).
    fn put_link(&self, key: &str, link: &PortalLink, now: i64, per_minute: u32) -> impl Future<Output = Result<bool, PortError>> + Send;
    fn link(&self, key: &str) -> impl Future<Output = Result<Option<PortalLink>, PortError>> + Send;
    /// Spends an open link (not used, not expired at `now`) in one
    /// conditional write: the link if this call spent it, `None` if it was
    /// not open (unknown, used or expired).
    fn spend_link(&self, key: &str, now: i64) -> impl Future<Output = Result<Option<PortalLink>, PortError>> + Send;
    fn put_session(&self, key: &str, session: &PortalSession) -> impl Future<Output = Result<(), PortError>> + Send;
    fn session(&self, key: &str) -> impl Future<Output = Result<Option<PortalSession>, PortError>> + Send;
    /// Records the session's last use.
    fn touch_session(&self, key: &str, now: i64) -> impl Future<Output = Result<(), PortError>> + Send;
    fn end_session(&self, key: &str) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Signs member tokens and license files: the token signing key (KMS,
/// `ECC_NIST_P256`; the private key never leaves it).
pub trait TokenSigner: Send + Sync {
    /// The `kid` of the key that signs now.
    fn kid(&self) -> &str;
    /// ECDSA over SHA-256 of `message`, DER-encoded, as KMS signs.
    fn sign(&self, message: &[u8]) -> impl Future<Output = Result<Vec<u8>, PortError>> + Send;
}

/// Members' signed tokens, cached on their items.
pub trait TokenCache: Send + Sync {
    /// A member and its cached token, in one read.
    fn member_and_token(&self, tenant: &TenantId, user: &UserId) -> impl Future<Output = Result<(Option<MemberItem>, Option<crate::core::token::CachedToken>), PortError>> + Send;
    /// Caches a member's token, if the member is still at the token's
    /// revision (any write of the member drops it); false otherwise.
    fn cache_token(&self, tenant: &TenantId, user: &UserId, token: &crate::core::token::CachedToken) -> impl Future<Output = Result<bool, PortError>> + Send;
}

/// The rules of licensing model versions, as registered: what every use
/// case decides a tenant's access with (the version the tenant follows).
/// Implementations keep what they read: a version's rules never change.
pub trait Models: Send + Sync {
    /// The rules of a version: as registered, or the deployed model's when
    /// its version is not registered yet. `None`: no such version.
    fn rules(&self, version: &ModelVersion) -> impl Future<Output = Result<Option<Arc<LicensingModel>>, PortError>> + Send;
    /// The latest registered version's rules (the deployed model's while
    /// none is registered): what new tenants follow, and what a Stripe
    /// price or a CRM record's tier means.
    fn latest(&self) -> impl Future<Output = Result<Arc<LicensingModel>, PortError>> + Send;
}

/// One page of the tenants that follow a version (the index of tenants):
/// each with its effective tier, and the key to go on from.
#[derive(Debug, Clone, Default)]
pub struct TenantPage {
    pub tenants: Vec<(TenantId, Option<String>)>,
    pub next: Option<String>,
}

/// The registry of licensing model versions, the index of tenants by
/// version, and the rollouts and previews with their tenants' outcomes.
pub trait ModelRegistry: Send + Sync {
    /// Registers a model, unless its version is registered (with the same
    /// fingerprint: `Known`; with another: `Conflict`).
    fn register(&self, model: &Registered) -> impl Future<Output = Result<Registration, PortError>> + Send;
    /// Every registered version, in the order of registration.
    fn registered(&self) -> impl Future<Output = Result<Vec<Registered>, PortError>> + Send;
    /// One page of the tenants that follow `version`, after `after`.
    fn tenants_following(&self, version: &ModelVersion, after: Option<&str>, limit: usize) -> impl Future<Output = Result<TenantPage, PortError>> + Send;
    /// How many tenants follow `version` (counted on the index).
    fn count_following(&self, version: &ModelVersion) -> impl Future<Output = Result<u64, PortError>> + Send;
    /// Gives tenants stored before versions were kept the first registered
    /// version and a place in the index, a page at a time; the key to go on
    /// from (`None`: none are left).
    fn backfill(&self, first: &ModelVersion, after: Option<&str>, limit: usize) -> impl Future<Output = Result<(usize, Option<String>), PortError>> + Send;
    /// Where the backfill stands: `None` when it is done.
    fn backfill_cursor(&self) -> impl Future<Output = Result<Option<Option<String>>, PortError>> + Send;
    fn set_backfill_cursor(&self, cursor: Option<Option<String>>) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Creates a run, unless one of its id exists (false).
    fn create_run(&self, run: &RunState) -> impl Future<Output = Result<bool, PortError>> + Send;
    fn run(&self, id: &RunId) -> impl Future<Output = Result<Option<RunState>, PortError>> + Send;
    /// Every run, newest first.
    fn runs(&self) -> impl Future<Output = Result<Vec<RunState>, PortError>> + Send;
    /// Saves a run's status, cursor and queued count, if it is still at
    /// revision `run.rev` (its counts are only ever added to, by `settle`).
    fn advance_run(&self, run: &RunState) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Records tenants' outcomes in a run, and adds them to the run's
    /// counts, each once: not a tenant's that has a final outcome already
    /// (a waiting tenant's outcome is replaced). How many were recorded.
    fn settle(&self, run: &RunId, outcomes: &[Outcome]) -> impl Future<Output = Result<usize, PortError>> + Send;
    /// The outcomes of these tenants in a run (`None`: none yet).
    fn outcomes_of(&self, run: &RunId, tenants: &[TenantId]) -> impl Future<Output = Result<Vec<Option<Outcome>>, PortError>> + Send;
    /// One page of a run's outcomes in tenant order, after `after`; and whether more follow.
    fn outcomes(&self, run: &RunId, after: Option<&TenantId>, limit: usize) -> impl Future<Output = Result<(Vec<Outcome>, bool), PortError>> + Send;
    /// Stores a tenant's preview pages (kept as long as the preview).
    fn put_preview(&self, run: &RunId, pages: &[PreviewPage]) -> impl Future<Output = Result<(), PortError>> + Send;
    /// One page of a tenant's preview.
    fn preview_page(&self, run: &RunId, tenant: &TenantId, page: u32) -> impl Future<Output = Result<Option<PreviewPage>, PortError>> + Send;
}

/// The rollouts' and previews' work queue: tenants handed to provision in batches.
pub trait WorkQueue: Send + Sync {
    fn send_work(&self, work: &crate::core::versions::Work) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Billing reconciliation runs waiting to be run (a queue).
pub trait SyncRuns: Send + Sync {
    fn start(&self, request: &crate::core::sources::stripe::SyncRequest) -> impl Future<Output = Result<(), PortError>> + Send;
}
