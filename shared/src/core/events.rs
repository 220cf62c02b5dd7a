//! Access-changed events, the pure part: what an audit record announces on
//! the bus, built from the same typed values as the record (the shapes are
//! documented in docs/api.md and `infra/events.schema.json`).

use crate::core::access::{MemberAccess, MemberStatus};
pub use crate::core::audit::Announcement;
use crate::core::audit::AuditEvent;
use crate::core::ids::TenantId;
use crate::core::license::TenantAccess;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// `source` of every Entitle event on the bus.
pub const SOURCE: &str = "entitle";

/// The events pending records announce, chained after `head` in order
/// (each dated as it was written).
pub fn announced_pending(tenant: &TenantId, head: &crate::core::audit::ChainHead, pending: &[crate::core::audit::PendingRecord]) -> Vec<Value> {
    pending.iter().enumerate().filter_map(|(i, p)| announced(tenant, head.seq + 1 + i as u64, &p.at, &p.event)).collect()
}

/// The id of an event: the tenant and the audit record it reports, so that
/// a redelivered event carries the same id.
pub fn event_id(tenant: &TenantId, seq: u64) -> String {
    crate::core::audit::hash_of(&format!("{tenant}/{seq}"))
}

/// The event an audit record (at position `seq`, written `at`) announces,
/// if it announces one.
pub fn announced(tenant: &TenantId, seq: u64, at: &str, record: &AuditEvent) -> Option<Value> {
    let id = event_id(tenant, seq);
    let (rule, cause) = (&record.rule, &record.cause);
    Some(match record.announce.as_ref()? {
        Announcement::MemberAccessChanged { user_id, before, after } => {
            let active = |a: &MemberAccess| a.status == MemberStatus::Active;
            let seat = match (active(before), active(after)) {
                (false, true) => Value::from("gained"),
                (true, false) => Value::from("lost"),
                _ => Value::Null,
            };
            let (rb, ra): (&BTreeSet<String>, &BTreeSet<String>) = (&before.roles, &after.roles);
            json!({
                "id": id, "type": "member.access_changed", "at": at, "seq": seq,
                "tenant_id": tenant, "user_id": user_id,
                "seat": seat,
                "status": {"before": before.status.as_str(), "after": after.status.as_str()},
                "roles_added": ra.difference(rb).collect::<Vec<_>>(),
                "roles_removed": rb.difference(ra).collect::<Vec<_>>(),
                "entitlements": {"before": before.entitlements, "after": after.entitlements},
                "rule": rule, "cause": cause,
            })
        }
        Announcement::TenantAccessChanged { before, after } => {
            let summary = |t: &TenantAccess| json!({"tier": t.tier, "status": t.status, "seats_total": t.seats_total, "entitlements": t.entitlements});
            json!({
                "id": id, "type": "tenant.access_changed", "at": at,
                "tenant_id": tenant,
                "before": before.as_ref().map(summary),
                "after": summary(after),
                "rule": rule, "cause": cause,
            })
        }
        Announcement::SeatLimitReached { directory_id, user_name, seats_total, seats_used } => json!({
            "id": id, "type": "tenant.seat_limit_reached", "at": at,
            "tenant_id": tenant, "directory_id": directory_id, "user_name": user_name,
            "seats": {"total": seats_total, "used": seats_used},
            "rule": rule, "cause": cause,
        }),
        Announcement::TargetQuarantined { target_id, health } | Announcement::TargetResumed { target_id, health } => {
            let kind = if matches!(record.announce, Some(Announcement::TargetQuarantined { .. })) { "target.quarantined" } else { "target.resumed" };
            json!({
                "id": id, "type": kind, "at": at,
                "tenant_id": tenant, "target_id": target_id,
                "failures": health.failures, "first_failure_at": health.first_failure_at,
                "retry_at": health.retry_at, "last_error": health.last_error,
                "rule": rule, "cause": cause,
            })
        }
    })
}
