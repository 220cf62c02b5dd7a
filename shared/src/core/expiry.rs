//! Time-based transitions of a license, as a pure function of the license,
//! the licensing model and an explicit instant ("as of"): expiring-soon
//! notices, expiry into grace, grace end, trial end, past-due grace end.
//! The expiry sweep runs these; it never reads the wall clock to decide.

use crate::core::audit::{AuditAction, AuditEvent, Cause};
use crate::core::ids::TenantId;
use crate::core::license::{License, LicenseStatus};
use crate::core::model::LicensingModel;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// What falls due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DueKind {
    /// The license expires in `days` (a threshold of the model).
    ExpiringSoon { days: u32 },
    /// The license reached its expiry: grace starts (access kept).
    Expiry,
    /// Grace ran out: the license ends and the model's end action applies.
    GraceEnd,
    /// A trial ended without becoming a paid subscription.
    TrialEnd,
    /// Past due for longer than the grace period: suspended.
    PastDueGraceEnd,
}

/// One transition the sweep applies, with the event it publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub kind: DueKind,
    pub due_at: DateTime<Utc>,
    pub before: License,
    pub after: License,
    /// The model rule that decided it.
    pub rule: String,
    /// The access-changed event to publish (`license.grace_started`, ...).
    pub event: &'static str,
}

fn grace(model: &LicensingModel) -> Duration {
    Duration::days(i64::from(model.expiry.grace_days))
}

/// The next moment something falls due for this license, if any.
pub fn next_due(model: &LicensingModel, l: &License) -> Option<(DateTime<Utc>, DueKind)> {
    let mut candidates: Vec<(DateTime<Utc>, u8, DueKind)> = Vec::new();
    match (l.status, l.expires_at) {
        (LicenseStatus::Trialing, Some(end)) => candidates.push((end, 1, DueKind::TrialEnd)),
        (LicenseStatus::Active | LicenseStatus::PastDue, Some(end)) => match l.timeline.grace_until {
            None => {
                for &days in &model.expiry.notice_days {
                    if !l.timeline.notices_sent.contains(&days) {
                        candidates.push((end - Duration::days(i64::from(days)), 0, DueKind::ExpiringSoon { days }));
                    }
                }
                candidates.push((end, 1, DueKind::Expiry));
            }
            Some(until) => candidates.push((until, 1, DueKind::GraceEnd)),
        },
        _ => {}
    }
    if let (LicenseStatus::PastDue, Some(since)) = (l.status, l.timeline.past_due_since) {
        candidates.push((since + grace(model), 2, DueKind::PastDueGraceEnd));
    }
    candidates.into_iter().min_by_key(|(at, order, _)| (*at, *order)).map(|(at, _, kind)| (at, kind))
}

/// Applies, in order, every transition due at or before `as_of` (a sweep that
/// missed runs catches up in the order things fell due).
pub fn advance(model: &LicensingModel, license: &License, as_of: DateTime<Utc>) -> (License, Vec<Transition>) {
    let mut l = license.clone();
    let mut out = Vec::new();
    // Each step moves the license on; a handful of steps at most.
    for _ in 0..16 {
        let Some((due_at, kind)) = next_due(model, &l) else { break };
        if due_at > as_of {
            break;
        }
        let before = l.clone();
        let (rule, event) = match kind {
            DueKind::ExpiringSoon { .. } => {
                // Thresholds already passed are handled together: one notice,
                // for the nearest, not a stale "30 days left" a week late.
                let end = l.expires_at.expect("notices need an expiry");
                let passed: Vec<u32> = model.expiry.notice_days.iter().copied().filter(|d| end - Duration::days(i64::from(*d)) <= as_of).collect();
                l.timeline.notices_sent.extend(passed.iter().copied());
                let nearest = passed.iter().copied().min().unwrap_or(0);
                (format!("expiry.notice_days: expires at {} (within {nearest} days)", end.to_rfc3339()), "license.expiring_soon")
            }
            DueKind::Expiry if model.expiry.grace_days > 0 => {
                l.timeline.grace_until = Some(due_at + grace(model));
                (format!("expiry.grace_days: {} days of grace, access kept", model.expiry.grace_days), "license.grace_started")
            }
            DueKind::Expiry | DueKind::GraceEnd => {
                l.status = LicenseStatus::Expired;
                (format!("expiry.on_end.{}: the license ended", l.source.as_str()), "license.expired")
            }
            DueKind::TrialEnd => {
                l.status = LicenseStatus::Expired;
                (format!("trial ended without payment; expiry.on_end.{} applies", l.source.as_str()), "license.trial_ended")
            }
            DueKind::PastDueGraceEnd => {
                l.status = LicenseStatus::Suspended;
                (format!("expiry.grace_days: past due for more than {} days", model.expiry.grace_days), "license.suspended")
            }
        };
        out.push(Transition { kind, due_at, before, after: l.clone(), rule, event });
    }
    (l, out)
}

/// The audit record of a transition.
pub fn audit_of(t: &Transition, cause: &Cause) -> AuditEvent {
    let action = match t.kind {
        DueKind::ExpiringSoon { .. } => AuditAction::LicenseExpiringSoon,
        DueKind::Expiry => AuditAction::LicenseGraceStarted,
        DueKind::GraceEnd => AuditAction::LicenseExpired,
        DueKind::TrialEnd => AuditAction::LicenseTrialEnded,
        DueKind::PastDueGraceEnd => AuditAction::LicenseSuspended,
    };
    AuditEvent::new(action, format!("license:{}:{}", t.after.source.as_str(), t.after.license_id), cause, format!("{} (due {})", t.rule, t.due_at.to_rfc3339()))
        .before(serde_json::json!({"status": t.before.status, "timeline": t.before.timeline}))
        .after(serde_json::json!({"status": t.after.status, "timeline": t.after.timeline}))
}

/// The license event of a transition (see docs/api.md for the schema); its
/// id is derived from what fell due, so a repeated run announces it once.
pub fn event_of(tenant: &TenantId, t: &Transition, run_id: &str) -> serde_json::Value {
    let id = crate::core::audit::hash_of(&format!("{tenant}/{}/{}/{:?}", t.after.license_id, t.due_at.timestamp(), t.kind));
    serde_json::json!({
        "id": id,
        "type": t.event,
        "tenant_id": tenant,
        "license_id": t.after.license_id,
        "source": t.after.source,
        "due_at": t.due_at.to_rfc3339(),
        "expires_at": t.after.expires_at.map(|e| e.to_rfc3339()),
        "grace_until": t.after.timeline.grace_until.map(|e| e.to_rfc3339()),
        "status": t.after.status,
        "detail": t.kind,
        "cause": {"kind": "sweep", "id": run_id},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids::{EventId, LicenseId};
    use crate::core::license::{effective_license, MemberPolicy, Source, Timeline};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn lic(source: Source, status: LicenseStatus, expires: &str) -> License {
        License {
            license_id: LicenseId::parse("l1").unwrap(),
            source,
            tier: "business".into(),
            seats: 10,
            addons: Default::default(),
            status,
            starts_at: None,
            expires_at: Some(at(expires)),
            source_version: 1,
            last_event_id: EventId::parse("e1").unwrap(),
            timeline: Timeline::default(),
        }
    }

    fn kinds(t: &[Transition]) -> Vec<DueKind> {
        t.iter().map(|t| t.kind).collect()
    }

    #[test]
    fn notices_then_grace_then_the_end_action() {
        let m = LicensingModel::default_model();
        let l = lic(Source::Stripe, LicenseStatus::Active, "2027-03-01T00:00:00Z");
        assert_eq!(next_due(&m, &l), Some((at("2027-01-30T00:00:00Z"), DueKind::ExpiringSoon { days: 30 })));
        let (l, t) = advance(&m, &l, at("2027-01-30T00:00:00Z"));
        assert_eq!(kinds(&t), vec![DueKind::ExpiringSoon { days: 30 }]);
        assert_eq!(t[0].event, "license.expiring_soon");
        let (l, t) = advance(&m, &l, at("2027-02-22T00:00:00Z"));
        assert_eq!(kinds(&t), vec![DueKind::ExpiringSoon { days: 7 }]);
        let (same, none) = advance(&m, &l, at("2027-02-22T00:00:00Z"));
        assert!(none.is_empty(), "once per threshold");
        assert_eq!(same, l);
        let (l, t) = advance(&m, &l, at("2027-03-01T00:00:00Z"));
        assert_eq!(kinds(&t), vec![DueKind::ExpiringSoon { days: 1 }, DueKind::Expiry]);
        assert_eq!(l.timeline.grace_until, Some(at("2027-03-08T00:00:00Z")));
        assert_eq!(l.status, LicenseStatus::Active, "access kept in grace");
        assert_eq!(effective_license(&m, std::slice::from_ref(&l)).status, crate::core::license::TenantStatus::Grace);
        let (l, t) = advance(&m, &l, at("2027-03-08T00:00:00Z"));
        assert_eq!((kinds(&t), t[0].event), (vec![DueKind::GraceEnd], "license.expired"));
        assert_eq!(l.status, LicenseStatus::Expired);
        let eff = effective_license(&m, std::slice::from_ref(&l));
        assert_eq!((eff.tier.as_str(), eff.policy), ("free", MemberPolicy::Seated), "Stripe licenses downgrade");
        assert_eq!(next_due(&m, &l), None);
    }

    #[test]
    fn contracts_suspend_at_grace_end() {
        let m = LicensingModel::default_model();
        let l = lic(Source::Contract, LicenseStatus::Active, "2027-03-01T00:00:00Z");
        let (l, _) = advance(&m, &l, at("2027-03-09T00:00:00Z"));
        assert_eq!(effective_license(&m, &[l]).policy, MemberPolicy::Suspended);
    }

    #[test]
    fn a_missed_week_catches_up_in_order_with_one_current_notice() {
        let m = LicensingModel::default_model();
        let l = lic(Source::Crm, LicenseStatus::Active, "2027-03-01T00:00:00Z");
        let (l, t) = advance(&m, &l, at("2027-02-25T00:00:00Z"));
        assert_eq!(kinds(&t), vec![DueKind::ExpiringSoon { days: 30 }]);
        assert!(t[0].rule.contains("within 7 days"), "{}", t[0].rule);
        assert_eq!(l.timeline.notices_sent, [7, 30].into());
        let (l, t) = advance(&m, &l, at("2027-03-10T00:00:00Z"));
        assert_eq!(kinds(&t), vec![DueKind::ExpiringSoon { days: 1 }, DueKind::Expiry, DueKind::GraceEnd]);
        assert!(t.windows(2).all(|w| w[0].due_at <= w[1].due_at), "in the order they fell due");
        assert_eq!(l.status, LicenseStatus::Expired);
    }

    #[test]
    fn trials_end_and_past_due_grace_suspends() {
        let m = LicensingModel::default_model();
        let trial = lic(Source::Stripe, LicenseStatus::Trialing, "2027-03-01T00:00:00Z");
        let (trial, t) = advance(&m, &trial, at("2027-03-01T00:00:00Z"));
        assert_eq!((kinds(&t), trial.status), (vec![DueKind::TrialEnd], LicenseStatus::Expired));
        let mut late = lic(Source::Stripe, LicenseStatus::PastDue, "2027-06-01T00:00:00Z");
        late.timeline.past_due_since = Some(at("2027-03-01T00:00:00Z"));
        late.timeline.notices_sent = [1, 7, 30].into();
        assert_eq!(next_due(&m, &late), Some((at("2027-03-08T00:00:00Z"), DueKind::PastDueGraceEnd)));
        let (late, t) = advance(&m, &late, at("2027-03-08T00:00:00Z"));
        assert_eq!((kinds(&t), late.status, t[0].event), (vec![DueKind::PastDueGraceEnd], LicenseStatus::Suspended, "license.suspended"));
    }

    #[test]
    fn a_renewal_in_grace_cancels_the_pending_end() {
        use crate::core::license::{decide_change, ChangeDecision, LicenseChange, LicenseUpdate};
        let m = LicensingModel::default_model();
        let l = lic(Source::Stripe, LicenseStatus::Active, "2027-03-01T00:00:00Z");
        let (in_grace, _) = advance(&m, &l, at("2027-03-02T00:00:00Z"));
        assert!(in_grace.timeline.grace_until.is_some());
        let renewal = LicenseChange {
            event_id: EventId::parse("e2").unwrap(),
            tenant_id: crate::core::ids::TenantId::parse("t").unwrap(),
            license_id: l.license_id.clone(),
            source: Source::Stripe,
            source_version: 2,
            update: LicenseUpdate { tier: "business".into(), seats: 10, addons: Default::default(), status: LicenseStatus::Active, starts_at: None, expires_at: Some(at("2027-04-01T00:00:00Z")) },
        };
        let ChangeDecision::Apply(renewed) = decide_change(Some(&in_grace), &renewal, at("2027-03-03T00:00:00Z")) else { panic!() };
        assert_eq!(renewed.timeline, Timeline::default());
        let (after, t) = advance(&m, &renewed, at("2027-03-09T00:00:00Z"));
        assert_eq!(kinds(&t), vec![DueKind::ExpiringSoon { days: 30 }], "no grace end: the renewal moved the expiry");
        assert_eq!(after.status, LicenseStatus::Active);
    }
}
