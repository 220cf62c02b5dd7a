//! A SCIM 2.0 client (RFC 7644) as real providers meet it: filter lookups
//! before create, adoption on 409 `uniqueness`, `PatchOp` for every change,
//! `If-Match` when the target offers ETags (re-read and retry on 412),
//! paged lists, and backoff with jitter on 429 and 5xx that honours
//! `Retry-After`. Decisions come from [`crate::core::scim`]; this module talks.
//!
//! A target is untrusted: every answer is read up to [`MAX_ANSWER_BYTES`],
//! a client reads at most its byte budget in all and [`MAX_PAGES`] pages
//! per list, never more items than [`MAX_LIST_ITEMS`] whatever
//! `totalResults` claims, and no request runs past the client's deadline
//! (the target's time budget in this run). In production every address a
//! target's name resolves to must be public ([`PublicOnly`]); what a target
//! answers is shown back only as a short, sanitised SCIM error detail.
//!
//! [`transport`]: the HTTP client and what one request does (egress checks,
//! bounded answers, retries with backoff); [`pacing`]: the target's rate
//! limits, and lists read page by page; [`rosters`]: what the target lists
//! (users, groups, a user's groups) and what this client keeps of it (group
//! ids, managed groups' members); [`groups`]: membership changes;
//! [`sync`]: one member's user and groups made to stand as desired;
//! [`port`]: SCIM targets as the delivery use case's ports.

mod groups;
mod pacing;
mod port;
mod rosters;
mod sync;
mod transport;

pub use pacing::{Pace, RequestKind};
pub use port::Scim;
pub use transport::{http_client, install_tls_provider, Http, PublicOnly};

use crate::core::egress::EgressPolicy;
use crate::core::scim::{Membership, Profile, ProfileName};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tries per request before the target counts as unavailable.
const TRIES: u32 = 4;
/// A `Retry-After` longer than this is not waited for in the function:
/// the target is retried on a later run instead.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// Re-reads after a 412 or a vanished user before giving up on a member.
const CONFLICT_TRIES: u32 = 4;
const PAGE: usize = 100;
const CONTENT_TYPE: &str = "application/scim+json";
/// Every request names its sender (GitHub refuses requests without one).
const USER_AGENT: &str = concat!("Entitle/", env!("CARGO_PKG_VERSION"), " (SCIM client)");
/// A wait for a rate limit this short is waited for in the run; a longer
/// one ends the run (paced: later runs go on).
const MAX_PACE_WAIT: Duration = Duration::from_secs(2);
/// Membership changes of one group per request.
pub const GROUP_BATCH: usize = 100;
/// Members the first removal request to a target names, before its answers
/// tell more: small enough for a group of tens of thousands within the
/// request timeout; quick answers double it.
pub const FIRST_REMOVALS: usize = 25;
/// The largest answer read from a target (a page of 100 users is some
/// 50 KB; a group of 10,000 members with `members` about 1.5 MB).
pub const MAX_ANSWER_BYTES: usize = 8 << 20;
/// Pages per list: 500 pages of 100.
pub const MAX_PAGES: usize = 500;
/// Users or groups a list may hold (drift repair of a larger target is refused).
pub const MAX_LIST_ITEMS: usize = MAX_PAGES * PAGE;
/// Bytes a client reads in all (one target, one run) unless told otherwise.
pub const DEFAULT_READ_BUDGET: usize = 48 << 20;

pub struct ScimClient {
    http: Http,
    base: String,
    token: String,
    /// Group display name -> id, learnt during this client's life.
    groups: Mutex<BTreeMap<String, String>>,
    /// The members of managed groups (display name -> SCIM user ids), each
    /// read once in this client's life and kept up to date with its own
    /// changes; see [`ScimClient::managed_member_of`].
    rosters: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Set once a roster could not be read whole: searches instead.
    no_rosters: AtomicBool,
    /// Managed groups listed without members that the target did not
    /// confirm empty: whether a user is in one is unknown.
    unconfirmed: Mutex<BTreeSet<String>>,
    /// Members the next removal request of a group names
    /// ([`scim::next_removal_batch`]): learnt from the target's answers and
    /// shared by this process's clients of the same target, so that a run
    /// starts where the last one ended.
    removals_per_request: Arc<AtomicUsize>,
    /// The most it may grow to in this client's life: half of a size the
    /// target failed at.
    removals_ceiling: AtomicUsize,
    /// No request runs past this instant (the target's budget in this run).
    deadline: Option<Instant>,
    /// Bytes this client may still read from the target.
    read_budget: AtomicUsize,
    egress: EgressPolicy,
    /// What the target can do.
    profile: Profile,
    /// The target's rate limits as this process spends them (shared by the
    /// process's clients of the same target).
    pace: Arc<Mutex<Pace>>,
    /// Why the target's member lists are not trusted in this client's life,
    /// if they are not (see [`ScimClient::contradiction`]).
    contradiction: Mutex<Option<String>>,
    /// A roster was read and agreed with the target's other answers.
    rosters_checked: AtomicBool,
}

impl std::fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimClient").field("base", &self.base).field("token", &"<redacted>").finish()
    }
}

impl ScimClient {
    /// A client for one target. `egress` must be the policy `http` was built with.
    pub fn new(http: Http, base: &str, token: String, egress: EgressPolicy) -> Self {
        ScimClient {
            http,
            base: base.trim().trim_end_matches('/').to_string(),
            token,
            groups: Mutex::new(BTreeMap::new()),
            rosters: Mutex::new(BTreeMap::new()),
            no_rosters: AtomicBool::new(false),
            unconfirmed: Mutex::new(BTreeSet::new()),
            removals_per_request: Arc::new(AtomicUsize::new(FIRST_REMOVALS)),
            removals_ceiling: AtomicUsize::new(GROUP_BATCH),
            deadline: None,
            read_budget: AtomicUsize::new(DEFAULT_READ_BUDGET),
            egress,
            profile: ProfileName::Generic.profile(),
            pace: Arc::default(),
            contradiction: Mutex::new(None),
            rosters_checked: AtomicBool::new(false),
        }
    }

    /// Behaves as a target of this profile, its rate limits spent from
    /// `pace` (shared with the process's other clients of the target).
    pub fn with_profile(mut self, profile: Profile, pace: Arc<Mutex<Pace>>) -> Self {
        self.removals_ceiling = AtomicUsize::new(GROUP_BATCH.min(profile.changes_per_request));
        self.profile = profile;
        self.pace = pace;
        self
    }

    /// Why this client stopped trusting the target's member lists: a
    /// managed group listed empty that the target then says has members (or
    /// cannot say it has none). Each member's groups are enforced instead.
    pub fn contradiction(&self) -> Option<String> {
        self.contradiction.lock().expect("not poisoned").clone()
    }

    /// Whether this client read rosters that agreed with the target: read,
    /// not contradicted, and none left unconfirmed.
    pub fn rosters_agreed(&self) -> bool {
        self.rosters_checked.load(Ordering::SeqCst) && self.contradiction().is_none() && self.unconfirmed.lock().expect("not poisoned").is_empty()
    }

    /// How this client learns a user's groups: from its profile, unless the
    /// target contradicted it.
    fn membership(&self) -> Membership {
        match self.profile.membership {
            Membership::Listed if self.contradiction().is_some() => Membership::Unknown,
            m => m,
        }
    }

    /// Bounds what this client reads from the target in all.
    pub fn with_read_budget(self, bytes: usize) -> Self {
        self.read_budget.store(bytes, Ordering::SeqCst);
        self
    }

    /// Sizes removal requests as `learnt` says (and teaches it), shared
    /// with other clients of the same target.
    pub fn with_removal_sizing(mut self, learnt: Arc<AtomicUsize>) -> Self {
        self.removals_per_request = learnt;
        self
    }

    /// Bounds every request (and every wait between tries) by `deadline`.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }
}
