//! Reconciling a tenant: make actual access equal desired access, reading
//! and writing what changes, not the whole tenant.
//!
//! 1. The tenant's pending audit records are chained (it holds the chain's
//!    lock anyway).
//! 2. When the tenant's access (its licenses and contracts under the
//!    licensing model) differs from what its members were last brought to,
//!    its members are walked, a page at a time ([`WALK_PAGE`]): each page is
//!    decided on and committed in transactions of at most 100 items
//!    (`core::reconcile::chunks`), the last carrying where the walk stands
//!    (`META.walk`), so that a walk cut off by a crash or the function's
//!    time goes on from there. The first page's first transaction carries
//!    the tenant's new access.
//! 3. The seat pass: while there are more holders than seats, the last
//!    holders in the stored seat order lose theirs; while seats are free and
//!    members wait, the first in line get them, a page at a time.
//!
//! Every step is level-triggered: after a crash anywhere, the next run reads
//! what was applied and finishes the rest; every member write is
//! conditional on the member's revision as read, every transaction on the
//! chain's head (a decision made on a snapshot never commits over a newer
//! change).

use super::audit::integration;
use super::commit::{audited_on, Decision, Snapshot};
use super::members::deliveries;
use super::ports::{Change, MemberGuard, Models, Queue, Tenants, Write};
use super::rules::{move_change, rules};
use super::Error;
use crate::core::access::TenantRules;
use crate::core::audit::{AuditAction, Cause, ChainHead};
use crate::core::ids::TenantId;
use crate::core::license::{effective_license, MemberPolicy, TenantAccess};
use crate::core::model::LicensingModel;
use crate::core::reconcile::{chunks, cut, grant, walked, Chunk, ReconcileRequest, TenantChange};
use crate::core::scim::Target;
use crate::core::seats::{micros, SeatList};
use crate::core::tenant::{walk_goal, MemberItem, TenantHead, Walk};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::time::Instant;

/// Members a walk reads and decides on at once.
pub const WALK_PAGE: usize = 200;
/// Seats a seat pass cuts or gives at once.
pub const SEAT_PAGE: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReconcileOutcome {
    pub member_changes: usize,
    pub tenant_changed: bool,
    /// Transactions committed.
    pub chunks: usize,
    /// SCIM targets the tenant had when it was read (none: nothing to deliver).
    pub targets: usize,
    /// Stopped for time with more to do (a walk or a seat pass goes on in
    /// the next run).
    pub more: bool,
    /// The tenant was marked as continuing (`TenantMeta::continues`) when
    /// this reconcile last read it.
    pub continues: bool,
    /// Members whose access a seat pass (a cut, a grant) changed.
    pub seat_changes: u64,
}

pub(crate) fn change_of(chunk: Chunk, targets: &[Target], now: DateTime<Utc>) -> Change {
    let mut change = Change::new(now);
    for (item, rev, deliver) in &chunk.members {
        change.writes.push(Write::Member { item: item.clone(), guard: MemberGuard::Rev(*rev) });
        if *deliver {
            change.writes.extend(deliveries(targets, item));
        }
    }
    change.audit = chunk.audit;
    change.meta.access = chunk.tenant;
    change.meta.rules = chunk.rules;
    change.meta.used_delta = chunk.used_delta;
    change.meta.pending_delta = chunk.pending_delta;
    change.meta.used_at_most = chunk.used_at_most;
    change.meta.walk = chunk.walk;
    change
}

/// A walk's count of members whose access changed, kept by every chunk of
/// a page (each at the walk's place before the page, the last at its place
/// after): a crash inside a page keeps what the committed chunks counted,
/// and the page walked again counts only the rest.
fn count_walked(parts: &mut [Chunk], before: Option<&Walk>, counted_from: u64) {
    let Some(last) = parts.last().and_then(|c| c.walk.clone()) else { return };
    let mut counted = counted_from;
    let n = parts.len();
    for (i, c) in parts.iter_mut().enumerate() {
        counted += c.audit.iter().filter(|a| matches!(a.announce, Some(crate::core::events::Announcement::MemberAccessChanged { .. }))).count() as u64;
        c.walk = Some(if i + 1 == n {
            Walk { changed: counted, ..last.clone() }
        } else {
            Walk { after: before.filter(|w| w.goal == last.goal).and_then(|w| w.after.clone()), done: false, changed: counted, ..last.clone() }
        });
    }
}

/// What a reconcile does next, decided on the tenant's head.
enum Next {
    /// Chain the pending audit records.
    Integrate,
    /// Cut the last holders (the page read from the end of the holders' list).
    Cut(Vec<MemberItem>),
    /// The tenant's new access (and the walk's first page, when members
    /// follow it), or the walk's next page.
    Walk {
        walk: Walk,
        page: Option<(Vec<MemberItem>, Option<String>)>,
    },
    /// Free seats to the first in line (the page read from its start).
    Grant(Vec<MemberItem>),
    /// The tenant's licenses name a tier or add-on its version lacks: it
    /// moves to the latest version (which has them), then goes on.
    Move {
        to: Arc<LicensingModel>,
        lacks: Vec<String>,
    },
    Done,
}

/// What a step decides on: the tenant's head, the rules it follows, what
/// its sources give under them, and what to do with it (with the page of
/// members it needs).
struct Read {
    head: TenantHead,
    model: Arc<LicensingModel>,
    /// The cause of a walk toward the current goal still going on (a
    /// rollout's): what its steps, and the cuts before them, are audited with.
    walk_cause: Option<Cause>,
    access: TenantAccess,
    rules: TenantRules,
    next: Next,
}

impl Snapshot for Option<Read> {
    fn head(&self) -> Option<&ChainHead> {
        self.as_ref().map(|r| &r.head.meta.head)
    }
}

/// Reads the tenant's head and decides what comes next, in this order:
/// pending audit records are chained; seats the tenant's sources no longer
/// give are cut (before the walk, so that a member a change of tier and
/// seats cuts is changed once); the tenant's new access is recorded and its
/// members walked when what they follow changed; free seats go to the line.
async fn read_next<S: Tenants + Models>(store: &S, tenant: &TenantId) -> Result<Option<Read>, super::PortError> {
    let Some(head) = store.tenant_head(tenant).await? else { return Ok(None) };
    let model = rules(store, &head.meta.model_version).await?;
    let access = effective_license(&model, &head.licenses);
    let rules = head.rules();
    let meta = &head.meta;
    let seated = access.policy == MemberPolicy::Seated && meta.access.is_some();
    let goal = walk_goal(&model, &access, &rules);
    let walk = match &meta.walk {
        Some(w) if w.goal == goal => w.clone(),
        _ => Walk::new(goal, None),
    };
    let walk_cause = if walk.done { None } else { walk.cause.clone() };
    let tenant_changed = !meta.access.as_ref().is_some_and(|a| a.same_access(&access)) || meta.rules != rules;
    let lacks = crate::core::versions::lacks(&model, &head.licenses);
    let next = if !head.pending_audit.is_empty() {
        Next::Integrate
    } else if !lacks.is_empty() && {
        let latest = store.latest().await?;
        latest.version != model.version && crate::core::versions::lacks(&latest, &head.licenses).is_empty()
    } {
        Next::Move { to: store.latest().await?, lacks }
    } else if seated && meta.seats_used > access.seats_total {
        let excess = (meta.seats_used - access.seats_total) as usize;
        Next::Cut(store.seat_order(tenant, SeatList::Holders, true, excess.min(SEAT_PAGE)).await?)
    } else if !walk.done {
        let page = store.members_page(tenant, walk.after.as_deref(), WALK_PAGE).await?;
        Next::Walk { walk, page: Some(page) }
    } else if tenant_changed {
        Next::Walk { walk, page: None }
    } else if seated && meta.seats_used < access.seats_total && meta.seats_pending > 0 {
        let free = (access.seats_total - meta.seats_used) as usize;
        Next::Grant(store.seat_order(tenant, SeatList::Line, false, free.min(SEAT_PAGE)).await?)
    } else {
        Next::Done
    };
    Ok(Some(Read { head, model, walk_cause, access, rules, next }))
}

/// Asks provision to reconcile the tenant after a change of one member (an
/// account created or removed, a seat set, a directory push), coalesced
/// with the other requests made since provision last started on the tenant.
///
/// Provision advances the tenant's wake epoch before it reads the tenant
/// (`advance_wake`); a request reads the epoch after its change committed
/// and is queued with the deduplication id `wake:<tenant>:<epoch>`. Every
/// request that read epoch E committed before provision advanced past E,
/// so the reconcile after that advance sees its change: the requests SQS
/// drops as duplicates of the first of E lose nothing. A request that reads
/// E+1 is a new message. So a burst of creations (an identity provider's
/// first sync) queues one message per reconcile instead of one per member,
/// and the tenant's message group stays short. Before provision first
/// advanced the epoch (`None`), the request is its own message (`own`).
/// The message carries the first request's cause; each member change has
/// its own audit record with its own cause.
pub async fn wake<S: Tenants, Q: Queue>(store: &S, queue: &Q, tenant: &TenantId, cause: Cause, own: &str) -> Result<(), super::PortError> {
    let dedup = match store.wake_epoch(tenant).await? {
        Some(epoch) => format!("wake:{tenant}:{epoch}"),
        None => own.to_string(),
    };
    queue.send(&ReconcileRequest::new(tenant.clone(), cause), &dedup).await
}

/// Reconciles one tenant to the end; a tenant not seen yet has nothing to reconcile.
pub async fn reconcile<S: Tenants + Models>(store: &S, tenant: &TenantId, cause: &Cause, now: DateTime<Utc>) -> Result<ReconcileOutcome, Error> {
    reconcile_until(store, tenant, cause, now, None).await
}

/// Reconciles one tenant until done or `stop_at` (then `more` is set: a
/// later run goes on where this one stopped). Each step reads the tenant's
/// head (two requests) and the page it works on, and commits its
/// transactions under the head it read.
pub async fn reconcile_until<S: Tenants + Models>(store: &S, tenant: &TenantId, cause: &Cause, now: DateTime<Utc>, stop_at: Option<Instant>) -> Result<ReconcileOutcome, Error> {
    let mut out = ReconcileOutcome::default();
    loop {
        let committed = audited_on(
            store,
            tenant,
            || read_next(store, tenant),
            |read| async move {
                let Some(Read { head, model, walk_cause, access, rules, next }) = read else { return Ok(Decision::Done((0, true, false, 0))) };
                let model = &*model;
                let targets = head.targets.len();
                let continues = head.meta.continues;
                let at = micros(now);
                // A walk a rollout started is audited with the rollout as its
                // cause, whichever message goes on with it.
                let cause = match &next {
                    Next::Walk { .. } | Next::Cut(_) => walk_cause.as_ref().unwrap_or(cause),
                    _ => cause,
                };
                let (steps, tenant_change, walk) = match next {
                    Next::Done => return Ok(Decision::Done((targets, true, continues, 0))),
                    Next::Integrate => return Ok(Decision::Commit(integration(&head.pending_audit, now), (targets, false, continues, 0))),
                    Next::Move { to, lacks } => {
                        let rule = format!("the tenant's licenses name {} that model {} lacks: moved to the latest version, {}", lacks.join(", "), model.version, to.version);
                        return Ok(Decision::one(move_change(&head, model, &to, cause, rule, now), (targets, false, continues, 0)));
                    }
                    // An index behind its table (it catches up): nothing to do now.
                    Next::Cut(last) | Next::Grant(last) if last.is_empty() => return Ok(Decision::Done((targets, true, continues, 0))),
                    Next::Cut(last) => (cut(model, &last, head.meta.seats_used as usize, access.seats_total, at), TenantChange::default(), None),
                    Next::Grant(first) => (grant(model, &access, &rules, &first, at), TenantChange::default(), None),
                    Next::Walk { walk, page } => {
                        // The tenant's own change goes with the walk's first page.
                        let mut tenant_change = TenantChange::default();
                        if walk.after.is_none() {
                            if !head.meta.access.as_ref().is_some_and(|a| a.same_access(&access)) {
                                tenant_change.access = Some((head.meta.access.clone(), access.clone()));
                            }
                            if head.meta.rules != rules {
                                tenant_change.rules = Some((head.meta.rules.clone(), rules.clone()));
                            }
                        }
                        match page {
                            Some((members, next)) => {
                                let steps: Vec<_> = members.iter().filter_map(|m| walked(model, &access, &rules, m)).collect();
                                let done = next.is_none();
                                (steps, tenant_change, Some(Walk { after: next, done, ..walk }))
                            }
                            None => (Vec::new(), tenant_change, None),
                        }
                    }
                };
                let seat_changes = if walk.is_none() { steps.iter().filter(|s| s.access_changed()).count() as u64 } else { 0 };
                let counted_from = head.meta.walk.as_ref().filter(|w| walk.as_ref().is_some_and(|n| n.goal == w.goal)).map_or(0, |w| w.changed);
                let mut parts = chunks(steps, tenant_change, walk, access.seats_total, targets, cause);
                count_walked(&mut parts, head.meta.walk.as_ref(), counted_from);
                let changes: Vec<Change> = parts.into_iter().map(|c| change_of(c, &head.targets, now)).collect();
                Ok(Decision::Commit(changes, (targets, false, continues, seat_changes)))
            },
        )
        .await?;
        let (targets, finished, continues, seat_changes) = committed.value;
        out.continues = continues;
        out.seat_changes += seat_changes;
        out.member_changes += committed.changes.iter().map(|c| c.writes.iter().filter(|w| matches!(w, Write::Member { .. })).count()).sum::<usize>();
        out.tenant_changed |= committed.changes.iter().any(|c| c.audit.iter().any(|a| matches!(a.action, AuditAction::TenantAccessChanged | AuditAction::TenantRulesChanged)));
        out.chunks += committed.changes.iter().filter(|c| c.integrate.is_empty()).count();
        out.targets = targets;
        if finished {
            return Ok(out);
        }
        if stop_at.is_some_and(|s| Instant::now() >= s) {
            out.more = true;
            return Ok(out);
        }
    }
}
