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

use super::audit::integrate;
use super::commit::{audited_on, Decision, Snapshot};
use super::members::deliveries;
use super::ports::{Change, MemberGuard, Tenants, Write};
use super::Error;
use crate::core::audit::{AuditAction, Cause, ChainHead};
use crate::core::ids::TenantId;
use crate::core::license::{effective_license, MemberPolicy, TenantAccess};
use crate::core::model::LicensingModel;
use crate::core::reconcile::{chunks, cut, grant, walked, Chunk, TenantChange};
use crate::core::scim::Target;
use crate::core::seats::{micros, SeatList};
use crate::core::tenant::{walk_goal, MemberItem, TenantHead, Walk};
use crate::core::access::TenantRules;
use chrono::{DateTime, Utc};
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
}

pub(crate) fn change_of(chunk: Chunk, targets: &[Target], now: DateTime<Utc>) -> Change {
    let mut change = Change::new(now);
    for (item, rev) in &chunk.members {
        change.writes.push(Write::Member { item: item.clone(), guard: MemberGuard::Rev(*rev) });
        change.writes.extend(deliveries(targets, item));
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

/// What a step decides on: the tenant's head and what its sources give.
struct Read<T> {
    head: TenantHead,
    access: TenantAccess,
    rules: TenantRules,
    more: T,
}

impl<T> Snapshot for Option<Read<T>> {
    fn head(&self) -> Option<&ChainHead> {
        self.as_ref().map(|r| &r.head.meta.head)
    }
}

async fn read_head<S: Tenants>(model: &LicensingModel, store: &S, tenant: &TenantId) -> Result<Option<(TenantHead, TenantAccess, TenantRules)>, super::PortError> {
    Ok(store.tenant_head(tenant).await?.map(|head| {
        let access = effective_license(model, &head.licenses);
        let rules = head.rules();
        (head, access, rules)
    }))
}

/// What one step committed.
#[derive(Default)]
struct Stepped {
    member_changes: usize,
    tenant_changed: bool,
    chunks: usize,
    targets: usize,
    /// Nothing more of this kind to do.
    finished: bool,
}

fn stepped(committed: &[Change], targets: usize, finished: bool) -> Stepped {
    Stepped {
        member_changes: committed.iter().map(|c| c.writes.iter().filter(|w| matches!(w, Write::Member { .. })).count()).sum(),
        tenant_changed: committed.iter().any(|c| c.audit.iter().any(|a| matches!(a.action, AuditAction::TenantAccessChanged | AuditAction::TenantRulesChanged))),
        chunks: committed.len(),
        targets,
        finished,
    }
}

/// Reconciles one tenant to the end; a tenant not seen yet has nothing to reconcile.
pub async fn reconcile<S: Tenants>(model: &LicensingModel, store: &S, tenant: &TenantId, cause: &Cause, now: DateTime<Utc>) -> Result<ReconcileOutcome, Error> {
    reconcile_until(model, store, tenant, cause, now, None).await
}

/// Reconciles one tenant until done or `stop_at` (then `more` is set: a
/// later run goes on where this one stopped).
pub async fn reconcile_until<S: Tenants>(model: &LicensingModel, store: &S, tenant: &TenantId, cause: &Cause, now: DateTime<Utc>, stop_at: Option<Instant>) -> Result<ReconcileOutcome, Error> {
    integrate(store, tenant, now).await?;
    let mut out = ReconcileOutcome::default();
    let out_of_time = || stop_at.is_some_and(|s| Instant::now() >= s);
    let add = |out: &mut ReconcileOutcome, s: &Stepped| {
        out.member_changes += s.member_changes;
        out.tenant_changed |= s.tenant_changed;
        out.chunks += s.chunks;
        out.targets = s.targets;
    };
    // Seats the tenant no longer has go first: a member a change of tier
    // and seats cuts is changed once (cut), not brought to the new tier and
    // then cut.
    loop {
        let s = seat_step(model, store, tenant, cause, now, true).await?;
        add(&mut out, &s);
        if s.finished {
            break;
        }
        if out_of_time() {
            out.more = true;
            return Ok(out);
        }
    }
    // The walk, a page a step.
    loop {
        let s = walk_step(model, store, tenant, cause, now).await?;
        add(&mut out, &s);
        if s.finished {
            break;
        }
        if out_of_time() {
            out.more = true;
            return Ok(out);
        }
    }
    // The seat pass, a page of cuts or grants a step.
    loop {
        let s = seat_step(model, store, tenant, cause, now, false).await?;
        add(&mut out, &s);
        if s.finished {
            return Ok(out);
        }
        if out_of_time() {
            out.more = true;
            return Ok(out);
        }
    }
}

/// One page of the tenant's member walk, if one is due: decided on the
/// tenant's head and the page, committed with where the walk stands.
async fn walk_step<S: Tenants>(model: &LicensingModel, store: &S, tenant: &TenantId, cause: &Cause, now: DateTime<Utc>) -> Result<Stepped, Error> {
    let read = || async {
        let Some((head, access, rules)) = read_head(model, store, tenant).await? else { return Ok(None) };
        let goal = walk_goal(model, &access, &rules);
        let walk = match &head.meta.walk {
            Some(w) if w.goal == goal => w.clone(),
            _ => Walk { goal, after: None, done: false },
        };
        let unchanged = head.meta.access.as_ref().is_some_and(|a| a.same_access(&access)) && head.meta.rules == rules;
        let page = if walk.done && unchanged { None } else { Some(store.members_page(tenant, walk.after.as_deref(), WALK_PAGE).await?) };
        Ok(Some(Read { head, access, rules, more: (walk, page) }))
    };
    let committed = audited_on(store, tenant, read, |read| async move {
        let Some(Read { head, access, rules, more: (walk, page) }) = read else { return Ok(Decision::Done((0, true))) };
        let targets = head.targets.len();
        let Some((members, next)) = page else { return Ok(Decision::Done((targets, true))) };
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
        let steps = members.iter().filter_map(|m| walked(model, &access, &rules, m)).collect();
        let finished = next.is_none();
        let walk = Walk { goal: walk.goal, after: next, done: finished };
        let changes: Vec<Change> = chunks(steps, tenant_change, Some(walk), access.seats_total, targets, cause).into_iter().map(|c| change_of(c, &head.targets, now)).collect();
        Ok(Decision::Commit(changes, (targets, finished)))
    })
    .await?;
    let (targets, finished) = committed.value;
    Ok(stepped(&committed.changes, targets, finished))
}

/// One page of the seat pass, on the seats the tenant's sources give: the
/// last holders when there are more than seats, else (unless `cuts_only`)
/// the first in line when seats are free.
async fn seat_step<S: Tenants>(model: &LicensingModel, store: &S, tenant: &TenantId, cause: &Cause, now: DateTime<Utc>, cuts_only: bool) -> Result<Stepped, Error> {
    let read = || async {
        let Some((head, access, rules)) = read_head(model, store, tenant).await? else { return Ok(None) };
        let meta = &head.meta;
        let seated = Some(&access).filter(|a| a.policy == MemberPolicy::Seated && meta.access.is_some());
        let page: Option<(bool, Vec<MemberItem>)> = match seated {
            Some(a) if meta.seats_used > a.seats_total => {
                let excess = (meta.seats_used - a.seats_total) as usize;
                Some((true, store.seat_order(tenant, SeatList::Holders, true, excess.min(SEAT_PAGE)).await?))
            }
            Some(a) if !cuts_only && meta.seats_used < a.seats_total && meta.seats_pending > 0 => {
                let free = (a.seats_total - meta.seats_used) as usize;
                Some((false, store.seat_order(tenant, SeatList::Line, false, free.min(SEAT_PAGE)).await?))
            }
            _ => None,
        };
        Ok(Some(Read { head, access, rules, more: page }))
    };
    let committed = audited_on(store, tenant, read, |read| async move {
        let Some(Read { head, access, rules, more: page }) = read else { return Ok(Decision::Done((0, true))) };
        let targets = head.targets.len();
        let Some((cutting, members)) = page else { return Ok(Decision::Done((targets, true))) };
        if members.is_empty() {
            return Ok(Decision::Done((targets, true)));
        }
        let steps = if cutting { cut(&members, head.meta.seats_used as usize, access.seats_total, micros(now)) } else { grant(model, &access, &rules, &members, micros(now)) };
        let changes: Vec<Change> = chunks(steps, TenantChange::default(), None, access.seats_total, targets, cause).into_iter().map(|c| change_of(c, &head.targets, now)).collect();
        Ok(Decision::Commit(changes, (targets, false)))
    })
    .await?;
    let (targets, finished) = committed.value;
    Ok(stepped(&committed.changes, targets, finished))
}
