//! Reconciling a tenant, the pure part: the message that asks for it, what
//! each member becomes, and how the changes are cut into transactions, each
//! with its audit record.
//!
//! A reconcile never reads every member at once. A change of the tenant's
//! access (a tier, a suspension, contract rules, a new model) walks the
//! members page by page ([`walked`]): each is brought to the tenant's access
//! without moving seats between members. Then the seat pass works on the
//! stored seat order: a cut takes the last holders ([`cut`]), free seats go
//! to the first in line ([`grant`]), a page at a time. Both read and write a
//! number of items that grows with what changes, not with the tenant.

use crate::core::access::{self, in_line, MemberAccess, MemberItem, MemberStatus, SeatedAccess, TenantRules};
use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::events::Announcement;
use crate::core::ids::{ModelVersion, TargetId, TenantId};
use crate::core::license::{MemberPolicy, TenantAccess};
use crate::core::model::LicensingModel;
use crate::core::seats::{Seat, Verdict};
use crate::core::tenant::Walk;
use serde::{Deserialize, Serialize};

/// "Make this tenant's access equal its desired access." Level-triggered:
/// one more or one fewer of these never changes the outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileRequest {
    pub tenant_id: TenantId,
    pub cause: Cause,
    /// SCIM targets to run drift repair on now (on demand), besides the
    /// delivery every message triggers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repair: Vec<TargetId>,
    /// A barrier, not a reconcile: provision chains the tenant's pending
    /// audit records, records this mark on the tenant (`META.barrier`) and
    /// does nothing else. Messages of a tenant are processed in order, and
    /// a barrier that finds a reconcile's rest still queued (a walk half
    /// done, `META.continues`) goes behind it, so once the mark is there
    /// every message queued for the tenant before it has been processed,
    /// with the work it left to later messages: an observable point to wait
    /// for ("provisioning has caught up"), for operators and tests alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barrier: Option<String>,
}

impl ReconcileRequest {
    pub fn new(tenant_id: TenantId, cause: Cause) -> Self {
        ReconcileRequest { tenant_id, cause, repair: Vec::new(), barrier: None }
    }
}

/// DynamoDB's limit on actions per transaction.
pub const MAX_TRANSACTION_ITEMS: usize = 100;

/// Member changes per reconcile transaction when the tenant has `targets`
/// SCIM targets: each change is its member item, its audit record, the
/// event it announces and one delivery record per target; the chain head,
/// and the tenant's record with its audit record and event, are shared.
pub const fn members_per_chunk(targets: usize) -> usize {
    (MAX_TRANSACTION_ITEMS - 3) / (3 + targets)
}

/// One member's change as a reconcile writes it: the item after (at its
/// next revision, its access decided under the tenant's model version), the
/// revision it was read at (the write is conditional on it), its access,
/// seat and version before, and the rule that decided it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberStep {
    pub item: MemberItem,
    pub read_at_rev: u64,
    pub before: MemberAccess,
    pub seat_before: Seat,
    pub version_before: ModelVersion,
    pub rule: String,
}

impl MemberStep {
    pub fn new(held: &MemberItem, access: MemberAccess, seat: Seat, rule: String, model: &LicensingModel) -> Self {
        // A member decided under another version than the one it was: the
        // rule says so (a model's rollout, a pin, a tier the old version lacks).
        let rule = if held.model_version == model.version { rule } else { format!("model {} -> {}: {rule}", held.model_version, model.version) };
        MemberStep {
            item: MemberItem { access, seat, rev: held.rev + 1, model_version: model.version.clone(), ..held.clone() },
            read_at_rev: held.rev,
            before: held.access.clone(),
            seat_before: held.seat.clone(),
            version_before: held.model_version.clone(),
            rule,
        }
    }
    /// Whether what the member may do changed (not only the version it was decided under).
    pub fn access_changed(&self) -> bool {
        self.before != self.item.access
    }
    pub fn used_delta(&self) -> i64 {
        i64::from(self.item.access.holds_seat()) - i64::from(self.before.holds_seat())
    }
    pub fn pending_delta(&self) -> i64 {
        i64::from(self.item.in_line()) - i64::from(in_line(&self.before, &self.seat_before))
    }
}

/// A member as a walk leaves it under the tenant's access and rules: a
/// holder keeps its seat with the roles of the tier, a member in line stays
/// there, a member the tenant's suspension took out joins the line again;
/// nothing moves a seat between members (the seat pass does). Its place in
/// the stored seat order follows its privilege at this tier, and its item
/// the tenant's model version. `None` when it is as it should be (a removed
/// member keeps the version its removal was decided under: it has no
/// access to decide).
pub fn walked(model: &LicensingModel, tenant: &TenantAccess, rules: &TenantRules, held: &MemberItem) -> Option<MemberStep> {
    let m = &held.member;
    let privileged = access::privileged(model, tenant, rules, m);
    let (want, rule) = if m.removed {
        (MemberAccess::without_access(MemberStatus::Deprovisioned), "member removed by the app".to_string())
    } else if m.suspended && tenant.policy != MemberPolicy::Revoked {
        (MemberAccess::without_access(MemberStatus::Suspended), access::SUSPENDED_BY_DIRECTORY.to_string())
    } else {
        match tenant.policy {
            MemberPolicy::Revoked => (MemberAccess::without_access(MemberStatus::Deprovisioned), format!("tenant access revoked: {}", tenant.rule)),
            MemberPolicy::Suspended => (MemberAccess::without_access(MemberStatus::Suspended), format!("tenant suspended: {}", tenant.rule)),
            MemberPolicy::Seated if held.access.holds_seat() => {
                let (roles, fired) = access::roles_for(model, &tenant.tier, m, rules);
                let fired = if fired.is_empty() { "default_roles".to_string() } else { fired.join(", ") };
                let access = MemberAccess { status: MemberStatus::Active, roles, entitlements: tenant.entitlements.clone() };
                (access, format!("seat held (seats are sticky); roles from [{fired}] at the {} tier", tenant.tier))
            }
            MemberPolicy::Seated => (MemberAccess::without_access(MemberStatus::PendingSeat), format!("waiting for a seat: {} seats", tenant.seats_total)),
        }
    };
    let seat = Seat { privileged, ..held.seat.clone() };
    let restamp = held.model_version != model.version && !(m.removed && want == held.access);
    (want != held.access || seat != held.seat || restamp).then(|| MemberStep::new(held, want, seat, rule, model))
}

/// The seats a cut takes: `last` are the last holders in the seat order
/// (the stored order, read from its end), as many as there are holders past
/// the tenant's `total` seats. Each joins the line now, the longest-seated
/// of them first, and loses its pin with its seat.
pub fn cut(model: &LicensingModel, last: &[MemberItem], holders: usize, total: u32, now: u64) -> Vec<MemberStep> {
    let n = last.len();
    last.iter()
        .rev()
        .enumerate()
        .map(|(j, held)| {
            let seat = Seat { since: now + j as u64, pin: None, privileged: held.seat.privileged };
            let verdict = Verdict::Cut { place: holders - (n - 1 - j), holders, total };
            let rule = access::seat_rule(&verdict, &seat, total);
            MemberStep::new(held, MemberAccess::without_access(MemberStatus::PendingSeat), seat, rule, model)
        })
        .collect()
}

/// Free seats to the first in line: `first` are the first members of the
/// line in the seat order, as many as there are free seats. Each gets a
/// seat now (in that order) with the roles of the tenant's tier.
pub fn grant(model: &LicensingModel, tenant: &TenantAccess, rules: &TenantRules, first: &[MemberItem], now: u64) -> Vec<MemberStep> {
    first
        .iter()
        .enumerate()
        .map(|(i, held)| {
            let access = access::access_on_create(model, tenant, rules, &held.member, MemberStatus::Active);
            let seat = Seat { since: now + i as u64, ..held.seat.clone() };
            let (_, fired) = access::roles_for(model, &tenant.tier, &held.member, rules);
            let fired = if fired.is_empty() { "default_roles".to_string() } else { fired.join(", ") };
            let rule = format!("{}; roles from [{fired}]", access::seat_rule(&Verdict::Granted { place: i + 1 }, &seat, tenant.seats_total));
            MemberStep::new(held, access, seat, rule, model)
        })
        .collect()
}

/// The tenant's own change, carried by the first transaction of a walk.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TenantChange {
    /// Its new effective access, and the one it had.
    pub access: Option<(Option<TenantAccess>, TenantAccess)>,
    /// Its new contract role grants, and the ones it had.
    pub rules: Option<(TenantRules, TenantRules)>,
}

/// One transaction of a reconcile.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Members with their new access and seat (at their next revision),
    /// the revision each was read at (the write is conditional on it: a
    /// decision made on a snapshot never overrides a newer write), and
    /// whether its targets are told (not for an item only stamped with a
    /// new model version: nothing a target holds changed).
    pub members: Vec<(MemberItem, u64, bool)>,
    /// The tenant's new effective access.
    pub tenant: Option<TenantAccess>,
    /// The tenant's new contract role grants.
    pub rules: Option<TenantRules>,
    /// What the chunk does to the seat counters (added to them: account
    /// creations and removals change them too, without the chain's lock).
    pub used_delta: i64,
    pub pending_delta: i64,
    /// A chunk that hands out seats commits only if, before it, at most
    /// this many were used: never more holders than seats, whatever was
    /// claimed since the plan was made.
    pub used_at_most: Option<u32>,
    /// Where a member walk stands after this chunk (the last chunk of a page).
    pub walk: Option<Walk>,
    /// One record per change, tenant records first.
    pub audit: Vec<AuditEvent>,
}

/// The transactions that make these changes, in order: at most
/// [`members_per_chunk`] member changes each (one fewer in the first when
/// it also carries the tenant's change), the tenant's change in the first,
/// the walk's position in the last. Seat-losing changes come first, so that
/// no committed prefix ever holds more seats than the tenant has.
pub fn chunks(mut steps: Vec<MemberStep>, tenant: TenantChange, walk: Option<Walk>, seats_total: u32, targets: usize, cause: &Cause) -> Vec<Chunk> {
    let order = |s: &MemberStep| match (s.before.holds_seat(), s.item.access.holds_seat()) {
        (true, false) => 0,
        (false, true) => 2,
        _ => 1,
    };
    steps.sort_by(|a, b| order(a).cmp(&order(b)).then_with(|| a.item.member.user_id.cmp(&b.item.member.user_id)));
    let per_chunk = members_per_chunk(targets);
    let tenant_records = usize::from(tenant.access.is_some()) + usize::from(tenant.rules.is_some());
    if steps.is_empty() && tenant_records == 0 && walk.is_none() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut remaining: &[MemberStep] = &steps;
    let mut first = true;
    while first || !remaining.is_empty() {
        let room = if first && tenant_records > 0 { per_chunk - 1 } else { per_chunk };
        let (part, rest) = remaining.split_at(room.min(remaining.len()));
        let mut chunk = Chunk { members: Vec::new(), tenant: None, rules: None, used_delta: 0, pending_delta: 0, used_at_most: None, walk: None, audit: Vec::new() };
        if first {
            if let Some((before, after)) = &tenant.access {
                let mut record = AuditEvent::new(AuditAction::TenantAccessChanged, "tenant", cause, after.rule.clone())
                    .after(after)
                    .announcing(Announcement::TenantAccessChanged { before: before.clone(), after: after.clone() });
                if let Some(b) = before {
                    record = record.before(b);
                }
                chunk.audit.push(record);
                chunk.tenant = Some(after.clone());
            }
            if let Some((before, after)) = &tenant.rules {
                chunk.audit.push(AuditEvent::new(AuditAction::TenantRulesChanged, "tenant", cause, "contract role mappings and named users").before(before).after(after));
                chunk.rules = Some(after.clone());
            }
        }
        for step in part {
            let id = &step.item.member.user_id;
            let deliver = step.access_changed() || step.seat_before != step.item.seat;
            chunk.members.push((step.item.clone(), step.read_at_rev, deliver));
            let mut record = AuditEvent::new(AuditAction::MemberAccessChanged, format!("member:{id}"), cause, step.rule.clone())
                .before(SeatedAccess { access: &step.before, seat: &step.seat_before, model: &step.version_before })
                .after(SeatedAccess::of(&step.item));
            if step.access_changed() {
                record = record.announcing(Announcement::MemberAccessChanged { user_id: id.clone(), before: step.before.clone(), after: step.item.access.clone() });
            }
            chunk.audit.push(record);
            chunk.used_delta += step.used_delta();
            chunk.pending_delta += step.pending_delta();
        }
        if chunk.used_delta > 0 {
            chunk.used_at_most = Some(u32::try_from((i64::from(seats_total) - chunk.used_delta).max(0)).unwrap_or(0));
        }
        remaining = rest;
        first = false;
        out.push(chunk);
    }
    if let Some(last) = out.last_mut() {
        last.walk = walk;
    }
    out
}
