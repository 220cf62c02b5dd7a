//! Billing truth: a Stripe subscription's state is read from Stripe's API,
//! never taken from an event, and recorded under the tenant's lock.
//!
//! Why this order is safe: the state is read *inside* the tenant's write
//! loop ([`audited_on`]), after the tenant's head and the license were read,
//! and the change commits only if the head is still the one read before.
//! So a recorded state was read after every earlier commit of that license:
//! whatever the arrival order of the events, and however many share a
//! second, the license last recorded is the latest state anyone read, and
//! every change made in Stripe after that read sends another event that
//! reads again. A retry caused by another write of the tenant (an account
//! created meanwhile) reuses the read when the license itself did not move:
//! no commit of that license can have come between. The recorded version is
//! the read time in milliseconds, kept increasing per license, for people
//! and the audit trail; the lock, not the clock, gives the order.

use super::commit::{audited_on, Decision};
use super::licenses::{cause_of, license_change, park, Recorded, Recording};
use super::ports::{Billing, Models, Tenants, Write};
use super::rules::rules_of;
use super::Error;
use crate::core::audit::{AuditAction, AuditEvent, Cause, CauseKind};
use crate::core::ids::{EventId, LicenseId, TenantId};
use crate::core::license::{License, LicenseChange, LicenseUpdate, Source};
use crate::core::model::LicensingModel;
use crate::core::rejection::Rejection;
pub use crate::core::sources::stripe::SyncRequest;
use crate::core::sources::stripe::{map_subscription, signal, Mapped, Signal};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// What asked for a subscription to be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A Stripe event (a webhook or an EventBridge delivery): recorded once
    /// per event id, whichever way it came.
    Event { event_id: EventId, body_hash: String },
    /// A billing reconciliation run.
    Sync { run_id: String },
}

impl Origin {
    pub fn cause(&self) -> Cause {
        match self {
            Origin::Event { event_id, .. } => cause_of(Source::Stripe, event_id),
            Origin::Sync { run_id } => Cause::new(CauseKind::BillingSync, run_id.as_str()),
        }
    }

    /// The id the read is recorded under: the event's, or the run's and
    /// the subscription's.
    fn event_id(&self, subscription: &LicenseId) -> EventId {
        match self {
            Origin::Event { event_id, .. } => event_id.clone(),
            Origin::Sync { run_id } => {
                EventId::parse(format!("billing_sync:{run_id}:{subscription}")).unwrap_or_else(|_| EventId::parse(format!("billing_sync:{subscription}")).expect("ids are valid"))
            }
        }
    }

    fn body_hash(&self) -> Option<&str> {
        match self {
            Origin::Event { body_hash, .. } => Some(body_hash),
            Origin::Sync { .. } => None,
        }
    }
}

/// What became of a Stripe event or a subscription read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub recorded: Recorded,
    /// The tenant the subscription belongs to, when it names one.
    pub tenant: Option<TenantId>,
    pub subscription: Option<LicenseId>,
    /// The event type, for an event that was acted on or ignored.
    pub event_type: Option<String>,
}

impl Outcome {
    /// Whether the tenant's access may have changed (a reconcile is due).
    /// A duplicate too: its first delivery may have stopped before queueing.
    pub fn reconcile(&self) -> Option<&TenantId> {
        match self.recorded {
            Recorded::Applied | Recorded::Duplicate => self.tenant.as_ref(),
            _ => None,
        }
    }

    pub fn answer(&self, event_id: Option<&EventId>) -> Value {
        let mut a = json!({"status": self.recorded.label()});
        if let Some(e) = event_id {
            a["event_id"] = json!(e);
        }
        if let Some(t) = &self.event_type {
            a["event_type"] = json!(t);
        }
        if let Some(t) = &self.tenant {
            a["tenant_id"] = json!(t);
        }
        if let Some(s) = &self.subscription {
            a["subscription"] = json!(s);
        }
        if let Recorded::Parked { reason } = &self.recorded {
            a["reason"] = json!(reason);
        }
        a
    }
}

/// What became of a verified Stripe event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// An event type Entitle does not act on: acknowledged.
    Ignored {
        event_type: String,
    },
    Acted {
        event_id: EventId,
        outcome: Outcome,
    },
}

/// A verified Stripe event (its signature checked, or delivered by AWS
/// through EventBridge): the subscription it names is read from Stripe and
/// recorded, once per event id. `body_hash` is kept with the event record
/// for the record's sake; a repeat of an id is a duplicate whatever its
/// body (the same event reaches us as a webhook and through EventBridge in
/// two serialisations, and its content is never used as state anyway).
pub async fn apply_event<S: Tenants + Models, B: Billing>(store: &S, stripe: &B, event: &Value, body_hash: &str, now: DateTime<Utc>) -> Result<EventOutcome, Error> {
    let (event_id, event_type, subscription, hint) = match signal(event)? {
        Signal::Ignored { event_type } => return Ok(EventOutcome::Ignored { event_type }),
        Signal::Park { event_id, event_type, reason } => {
            park(store, Source::Stripe, &event_id, None, &reason, event, now).await?;
            let outcome = Outcome { recorded: Recorded::Parked { reason }, tenant: None, subscription: None, event_type: Some(event_type) };
            return Ok(EventOutcome::Acted { event_id, outcome });
        }
        Signal::Subscription { event_id, event_type, subscription, tenant_hint } => (event_id, event_type, subscription, tenant_hint),
    };
    let origin = Origin::Event { event_id: event_id.clone(), body_hash: body_hash.to_string() };
    let read = SubscriptionRead { subscription: &subscription, origin: &origin, payload: event, now };
    let mut outcome = read_and_record(store, stripe, read, hint).await?;
    outcome.event_type = Some(event_type);
    Ok(EventOutcome::Acted { event_id, outcome })
}

/// What one attempt decided, before it is committed.
enum Step {
    Done(Outcome),
    /// The subscription belongs to another tenant than the one locked.
    Elsewhere(Option<TenantId>),
}

/// A subscription to read from Stripe and record: which one, what asked
/// for the read, what is parked with it when Stripe's state cannot be
/// applied (the event, or what the run listed), and when.
#[derive(Debug, Clone, Copy)]
pub struct SubscriptionRead<'a> {
    pub subscription: &'a LicenseId,
    pub origin: &'a Origin,
    pub payload: &'a Value,
    pub now: DateTime<Utc>,
}

/// Reads `subscription` from Stripe under the lock of its tenant and
/// records it (see the module's note on order). `hint` is the tenant to
/// lock first (an event's snapshot, a listing); when Stripe's answer names
/// another, the read is done again under that one's lock.
pub async fn read_and_record<S: Tenants + Models, B: Billing>(store: &S, stripe: &B, read: SubscriptionRead<'_>, hint: Option<TenantId>) -> Result<Outcome, Error> {
    let subscription = read.subscription;
    // What each price means: the latest version's (a fact of billing).
    let latest = store.latest().await?;
    let model = &*latest;
    let mut tenant = match hint {
        Some(t) => t,
        // Nothing says which tenant: one read outside any lock to learn it.
        None => match stripe.subscription(subscription).await? {
            None => return unknown(store, read, None).await,
            Some(object) => match map_subscription(model, &object) {
                Mapped::Unmapped { tenant: None, reason } => return parked(store, read, None, &reason).await,
                mapped => mapped.tenant().cloned().expect("mapped with a tenant"),
            },
        },
    };
    // A subscription moved between tenants in between (its metadata
    // edited) is followed a few times, then given up on.
    for _ in 0..3 {
        match locked(model, store, stripe, read, &tenant).await? {
            Step::Done(outcome) => return Ok(outcome),
            Step::Elsewhere(Some(other)) => tenant = other,
            Step::Elsewhere(None) => {
                let reason = "Stripe's subscription names no tenant (metadata.tenant_id) any more".to_string();
                return parked(store, read, Some(&tenant), &reason).await;
            }
        }
    }
    Err(Rejection::conflict("subscription_moving", format!("subscription {subscription} kept changing tenants while it was read")).into())
}

/// One tenant's lock: the head and the license, then Stripe's state, then
/// the commit (again from the top if the head moved).
async fn locked<S: Tenants + Models, B: Billing>(model: &LicensingModel, store: &S, stripe: &B, read: SubscriptionRead<'_>, tenant: &TenantId) -> Result<Step, Error> {
    let SubscriptionRead { subscription, origin, now, .. } = read;
    let cause = origin.cause();
    // The last read, and the license version it was read after.
    let last: std::sync::Mutex<Option<(Option<i64>, Option<Value>)>> = std::sync::Mutex::new(None);
    // The head, the license and (for an event) its record, in one request:
    // an event accepted before is answered without asking Stripe.
    let held = || async {
        match origin {
            Origin::Event { event_id, .. } => store.meta_license_and_event(tenant, Source::Stripe, subscription.as_str(), event_id).await,
            Origin::Sync { .. } => store.meta_and_license(tenant, Source::Stripe, subscription.as_str()).await.map(|(m, l)| (m, (l, None))),
        }
    };
    let committed = audited_on(store, tenant, held, |(meta, (current, accepted))| {
        let (cause, last) = (&cause, &last);
        async move {
            if accepted.is_some() {
                return Ok(Decision::Done(Step::Done(Outcome { recorded: Recorded::Duplicate, tenant: Some(tenant.clone()), subscription: Some(subscription.clone()), event_type: None })));
            }
            let held_version = current.as_ref().map(|l| l.source_version);
            let cached = last.lock().unwrap().clone().filter(|(v, _)| *v == held_version).map(|(_, o)| o);
            let object = match cached {
                Some(object) => object,
                None => {
                    let object = stripe.subscription(subscription).await?;
                    *last.lock().unwrap() = Some((held_version, object.clone()));
                    object
                }
            };
            let read_at = Utc::now();
            let Some(object) = object else {
                let reason = format!("Stripe does not know subscription {subscription}");
                return Ok(park_in(tenant, read, cause, &reason));
            };
            let update = match map_subscription(model, &object) {
                Mapped::License { tenant: t, update } if &t == tenant => update,
                Mapped::Unmapped { tenant: Some(t), reason } if &t == tenant => return Ok(park_in(tenant, read, cause, &reason)),
                other => return Ok(Decision::Done(Step::Elsewhere(other.tenant().cloned()))),
            };
            let change = LicenseChange {
                event_id: origin.event_id(subscription),
                tenant_id: tenant.clone(),
                license_id: subscription.clone(),
                source: Source::Stripe,
                // The read time, kept increasing: the lock orders, not the clock.
                source_version: read_at.timestamp_millis().max(held_version.map_or(0, |v| v + 1)),
                update,
            };
            let why = format!("state read from Stripe at {}", read_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            // What the price means is the latest version's; when the license falls due, the tenant's.
            let rules = rules_of(store, meta.as_ref()).await?;
            let (c, recorded) = license_change(&rules, current.as_ref(), &change, Recording { body_hash: origin.body_hash(), cause, why: &why, unchanged_if_same: true }, now);
            let outcome = Outcome { recorded, tenant: Some(tenant.clone()), subscription: Some(subscription.clone()), event_type: None };
            // A sync that finds the license as held writes nothing.
            if matches!(origin, Origin::Sync { .. }) && outcome.recorded == Recorded::Unchanged {
                return Ok(Decision::Done(Step::Done(outcome)));
            }
            Ok(Decision::one(c, Step::Done(outcome)))
        }
    })
    .await?;
    match committed.refused {
        None => Ok(committed.value),
        // Parked before (and audited then).
        Some(Write::Parked { reason, .. }) => {
            Ok(Step::Done(Outcome { recorded: Recorded::Parked { reason }, tenant: Some(tenant.clone()), subscription: Some(subscription.clone()), event_type: None }))
        }
        // The event was accepted before (a concurrent delivery won).
        Some(_) => Ok(Step::Done(Outcome { recorded: Recorded::Duplicate, tenant: Some(tenant.clone()), subscription: Some(subscription.clone()), event_type: None })),
    }
}

/// Parks the event (or the sync's finding) in the tenant's chain: what
/// Stripe says cannot be applied as it is. Parked once: a delivery again
/// finds it parked (no event record is kept, so that the event can be
/// replayed once what parked it is fixed).
fn park_in(tenant: &TenantId, read: SubscriptionRead<'_>, cause: &Cause, reason: &str) -> Decision<Step> {
    let SubscriptionRead { subscription, origin, payload, now } = read;
    let event_id = origin.event_id(subscription);
    let c = crate::app::ports::Change::new(now).write(Write::Parked { source: Source::Stripe, event_id, reason: reason.to_string(), payload: payload.clone(), at: now }).audit(AuditEvent::new(
        AuditAction::EventParked,
        format!("license:stripe:{subscription}"),
        cause,
        reason,
    ));
    let outcome = Outcome { recorded: Recorded::Parked { reason: reason.to_string() }, tenant: Some(tenant.clone()), subscription: Some(subscription.clone()), event_type: None };
    Decision::one(c, Step::Done(outcome))
}

async fn parked<S: Tenants>(store: &S, read: SubscriptionRead<'_>, tenant: Option<&TenantId>, reason: &str) -> Result<Outcome, Error> {
    let SubscriptionRead { subscription, origin, payload, now } = read;
    park(store, Source::Stripe, &origin.event_id(subscription), tenant, reason, payload, now).await?;
    Ok(Outcome { recorded: Recorded::Parked { reason: reason.to_string() }, tenant: tenant.cloned(), subscription: Some(subscription.clone()), event_type: None })
}

async fn unknown<S: Tenants>(store: &S, read: SubscriptionRead<'_>, tenant: Option<&TenantId>) -> Result<Outcome, Error> {
    parked(store, read, tenant, &format!("Stripe does not know subscription {}", read.subscription)).await
}

/// What a run (or its part) found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub run_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantId>,
    pub pages: u32,
    /// Subscriptions listed (every tenant's, on a one-tenant run too).
    pub listed: u32,
    /// Of the tenant (or of any tenant), compared with the license held.
    pub compared: u32,
    /// Held as Stripe has them.
    pub unchanged: u32,
    /// Differed, read again under the tenant's lock and recorded.
    pub repaired: u32,
    /// Listed without `metadata.tenant_id`: nobody's.
    pub untenanted: u32,
    /// Read again and found unmappable (parked with the reason).
    pub parked: u32,
    /// The tenant's licenses that Stripe no longer knows.
    pub unknown: Vec<String>,
    /// Whether the run got to the end of the listing.
    pub complete: bool,
    /// Where the next part goes on, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resume_after: Option<String>,
}

impl SyncReport {
    /// The request that goes on where this part stopped.
    pub fn continuation(&self) -> Option<SyncRequest> {
        (!self.complete).then(|| SyncRequest { run_id: self.run_id.clone(), tenant: self.tenant.clone(), starting_after: self.resume_after.clone() })
    }
}

/// Subscriptions per page of the listing.
pub const PAGE_SIZE: u32 = 100;

/// One invocation's share of a run: lists the account's subscriptions
/// (every status, paged), compares each one of a tenant (of `req.tenant`
/// only, on demand) with the license held, and repairs a difference as its
/// event would: read again under the tenant's lock and recorded, with cause
/// `billing_sync` and the run id. Before each page and each repair it asks
/// `time_left` whether to go on; it always makes some progress (one page),
/// and stops cleanly, saying where the next part resumes. A one-tenant run
/// that completes also reads the tenant's Stripe licenses the listing did
/// not show. Returns the tenants whose access may have changed, too.
pub async fn sync<S: Tenants + Models, B: Billing>(
    store: &S,
    stripe: &B,
    req: &SyncRequest,
    page_size: u32,
    mut time_left: impl FnMut() -> bool,
    now: DateTime<Utc>,
) -> Result<(SyncReport, BTreeSet<TenantId>), Error> {
    let mut report = SyncReport { run_id: req.run_id.clone(), tenant: req.tenant.clone(), ..Default::default() };
    let mut changed = BTreeSet::new();
    // What each price means: the latest version's (a fact of billing).
    let latest = store.latest().await?;
    let model = &*latest;
    let mut seen = BTreeSet::new();
    let mut cursor = req.starting_after.clone();
    let origin = Origin::Sync { run_id: req.run_id.clone() };
    loop {
        if report.pages > 0 && !time_left() {
            report.resume_after = cursor;
            return Ok((report, changed));
        }
        let page = stripe.subscriptions(cursor.as_deref(), page_size).await?;
        report.pages += 1;
        for object in &page.data {
            let Some(id) = object.get("id").and_then(Value::as_str) else { continue };
            report.listed += 1;
            let mapped = map_subscription(model, object);
            let Some(tenant) = mapped.tenant().cloned() else {
                report.untenanted += 1;
                cursor = Some(id.to_string());
                continue;
            };
            if req.tenant.as_ref().is_some_and(|t| t != &tenant) {
                cursor = Some(id.to_string());
                continue;
            }
            let sub = LicenseId::parse(id).map_err(|e| Rejection::malformed("malformed_listing", e.to_string()))?;
            seen.insert(sub.clone());
            report.compared += 1;
            let (_, held) = store.meta_and_license(&tenant, Source::Stripe, sub.as_str()).await?;
            if agrees(&mapped, held.as_ref()) {
                report.unchanged += 1;
            } else {
                if report.pages > 1 && !time_left() {
                    // Stop before this one: the next part starts with it.
                    report.resume_after = cursor;
                    return Ok((report, changed));
                }
                let read = SubscriptionRead { subscription: &sub, origin: &origin, payload: object, now };
                count(&mut report, &mut changed, read_and_record(store, stripe, read, Some(tenant)).await?);
            }
            cursor = Some(id.to_string());
        }
        if !page.has_more || page.data.is_empty() {
            break;
        }
    }
    // One tenant: what we hold that the listing did not show is read too.
    if let Some(t) = &req.tenant {
        for held in store.licenses(t, Source::Stripe).await? {
            if seen.contains(&held.license_id) {
                continue;
            }
            let payload = json!({"license": held.license_id});
            let read = SubscriptionRead { subscription: &held.license_id, origin: &origin, payload: &payload, now };
            let outcome = read_and_record(store, stripe, read, Some(t.clone())).await?;
            if matches!(&outcome.recorded, Recorded::Parked { reason } if reason.starts_with("Stripe does not know")) {
                report.unknown.push(held.license_id.to_string());
            } else {
                count(&mut report, &mut changed, outcome);
            }
        }
    }
    report.complete = true;
    Ok((report, changed))
}

fn count(report: &mut SyncReport, changed: &mut BTreeSet<TenantId>, outcome: Outcome) {
    match &outcome.recorded {
        Recorded::Applied => {
            report.repaired += 1;
            changed.extend(outcome.tenant);
        }
        Recorded::Parked { .. } => report.parked += 1,
        _ => report.unchanged += 1,
    }
}

/// Whether the license held says what the listed subscription says. A
/// subscription that grants nothing and that we never held needs nothing.
fn agrees(mapped: &Mapped, held: Option<&License>) -> bool {
    match (mapped, held) {
        (Mapped::License { update, .. }, Some(h)) => update.held_by(h),
        (Mapped::License { update: LicenseUpdate { status, .. }, .. }, None) => !status.grants_access(),
        // Unmappable as listed: read again only if we hold it (its event parked).
        (Mapped::Unmapped { .. }, held) => held.is_none(),
    }
}
