//! Recording what license sources send: a license change, idempotently (on
//! the source's event id) and in source order, with its audit record; or,
//! when it cannot be applied as it is, the event parked with its reason.

use super::commit::{audited, audited_on, Decision};
use super::ports::{Change, Models, Tenants, Write};
use super::rules::rules_of;
use super::Error;
use crate::core::audit::{AuditAction, AuditEvent, Cause, CauseKind};
use crate::core::expiry::next_due;
use crate::core::ids::{EventId, TenantId};
use crate::core::license::{decide_change, ChangeDecision, License, LicenseChange, Source};
use crate::core::model::LicensingModel;
use crate::core::rejection::Rejection;
use chrono::{DateTime, Utc};
use serde_json::Value;

/// What happened to an accepted license event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Applied,
    /// Read from the source, the license was as held (Stripe).
    Unchanged,
    Stale {
        held_version: i64,
    },
    /// The same event id was accepted before (with the same body).
    Duplicate,
    Parked {
        reason: String,
    },
}

impl Recorded {
    pub fn label(&self) -> &'static str {
        match self {
            Recorded::Applied => "applied",
            Recorded::Unchanged => "unchanged",
            Recorded::Stale { .. } => "ignored_stale",
            Recorded::Duplicate => "duplicate",
            Recorded::Parked { .. } => "parked",
        }
    }
}

pub fn cause_of(source: Source, event: &EventId) -> Cause {
    let kind = match source {
        Source::Stripe => CauseKind::StripeEvent,
        _ => CauseKind::CrmEvent,
    };
    Cause::new(kind, event.as_str())
}

/// How a license change is recorded: the source event's body hash (its
/// event record is written when it came as one), the cause its audit
/// record names, what orders the change (`why`, for the audit record),
/// and whether a change that is as held is recorded as unchanged.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Recording<'a> {
    pub body_hash: Option<&'a str>,
    pub cause: &'a Cause,
    pub why: &'a str,
    pub unchanged_if_same: bool,
}

/// The change that records `change` on the license held (`current`): the
/// license when it is newer (or, with `unchanged_if_same`, only when it
/// differs), the event record when it came as a source event (`body_hash`),
/// and the audit record of the decision, under `cause`; and what it
/// amounts to (see [`Recording`]).
/// The license falls due as the tenant's model version (`model`) says.
pub(crate) fn license_change(model: &LicensingModel, current: Option<&License>, change: &LicenseChange, how: Recording<'_>, now: DateTime<Utc>) -> (Change, Recorded) {
    let Recording { body_hash, cause, why, unchanged_if_same } = how;
    let subject = format!("license:{}:{}", change.source.as_str(), change.license_id);
    let held = current.map_or("none".to_string(), |c| c.source_version.to_string());
    let same = unchanged_if_same && current.is_some_and(|c| change.update.held_by(c));
    let (mut event, outcome, license) = match decide_change(current, change, now) {
        ChangeDecision::Apply(_) if same => (AuditEvent::new(AuditAction::LicenseUnchanged, &subject, cause, format!("{why}: the license is as held")), Recorded::Unchanged, None),
        ChangeDecision::Apply(new) => {
            let e = AuditEvent::new(AuditAction::LicenseRecorded, &subject, cause, format!("{why}: version {} is newer than {held}", change.source_version)).after(&new);
            (e, Recorded::Applied, Some(new))
        }
        ChangeDecision::Stale { held_version } => {
            let rule = format!("{why}: version {} is not newer than the held version {held_version}", change.source_version);
            (AuditEvent::new(AuditAction::LicenseIgnoredStale, &subject, cause, rule), Recorded::Stale { held_version }, None)
        }
    };
    if let Some(c) = current {
        event = event.before(c);
    }
    let mut c = Change::new(now);
    if let Some(body_hash) = body_hash {
        c = c.write(Write::EventRecord { source: change.source, event_id: change.event_id.clone(), body_hash: body_hash.to_string(), outcome: outcome.label(), at: now });
    }
    if let Some(license) = license {
        let due = next_due(model, &license).map(|(at, _)| at);
        c = c.write(Write::License { license, if_version: None, due });
        c.meta.licensed = true;
    }
    (c.audit(event), outcome)
}

/// Records a license change: idempotent on its event id (a repeat with the
/// same body is a duplicate, with another body 409 `event_id_reused`), in
/// source order (an older version is recorded as stale), audited either way.
pub async fn record_change<S: Tenants + Models>(store: &S, change: &LicenseChange, body_hash: &str, now: DateTime<Utc>) -> Result<Recorded, Error> {
    let tenant = &change.tenant_id;
    let cause = cause_of(change.source, &change.event_id);
    // The head and the license in one read.
    let read = || store.meta_and_license(tenant, change.source, change.license_id.as_str());
    let committed = audited_on(store, tenant, read, |(meta, current)| {
        let cause = &cause;
        async move {
            let model = rules_of(store, meta.as_ref()).await?;
            let (change, outcome) = license_change(&model, current.as_ref(), change, Recording { body_hash: Some(body_hash), cause, why: "source order", unchanged_if_same: false }, now);
            Ok(Decision::one(change, outcome))
        }
    })
    .await?;
    match committed.refused {
        None => Ok(committed.value),
        // Parked before (and so audited before).
        Some(Write::Parked { reason, .. }) => Ok(Recorded::Parked { reason }),
        // Accepted before: the same body is a duplicate delivery.
        Some(_) => match store.accepted_event(tenant, change.source, &change.event_id).await? {
            Some(h) if h == body_hash => Ok(Recorded::Duplicate),
            _ => Err(Rejection::conflict("event_id_reused", format!("event {} was already accepted with a different body", change.event_id)).into()),
        },
    }
}

/// Parks an event that cannot be applied as it is, with its reason (nothing
/// lost; idempotent on its id). When the event names its tenant, the
/// decision not to apply it is audited in that tenant's chain
/// (`event_parked`) in the same transaction. Returns whether it was parked
/// now (false: it was parked before).
pub async fn park<S: Tenants>(store: &S, source: Source, event: &EventId, tenant: Option<&TenantId>, reason: &str, payload: &Value, now: DateTime<Utc>) -> Result<bool, Error> {
    let Some(tenant) = tenant else {
        return Ok(store.park_unattributed(source, event, reason, payload, now).await?);
    };
    let cause = cause_of(source, event);
    let committed = audited(store, tenant, |_meta| {
        let change = Change::new(now).write(Write::Parked { source, event_id: event.clone(), reason: reason.to_string(), payload: payload.clone(), at: now }).audit(AuditEvent::new(
            AuditAction::EventParked,
            format!("event:{}:{event}", source.as_str()),
            &cause,
            reason,
        ));
        async move { Ok(Decision::one(change, ())) }
    })
    .await?;
    Ok(committed.refused.is_none())
}
