//! provision's edge: the SQS batch of a FIFO queue (one message group per
//! tenant), the partial batch response, parking on the dead-letter queue
//! with the cause; then the tenants' SCIM deliveries. (The access-changed
//! events are written with the changes; the table's stream carries them.)

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageAttributeValue;
use chrono::Utc;
use entitle::adapters::dynamodb::Dynamo;
use entitle::adapters::scim_client::Scim;
use entitle::adapters::secrets::TokenStore;
use entitle::adapters::sqs::{dedup_id, ReconcileQueue, WorkQueueSqs};
use entitle::app::delivery::{Deliverer, TargetBudget};
use entitle::app::ports::WorkQueue;
use entitle::app::ports::{Queue, Tenants};
use entitle::app::reconcile::reconcile_until;
use entitle::app::versions;
use entitle::core::audit::{Cause, CauseKind};
use entitle::core::ids::{TargetId, TenantId};
use entitle::core::reconcile::ReconcileRequest;
use entitle::core::scim::{Policy, Standing};
use entitle::core::versions::Work;
use entitle::edge::http::error_chain;
use entitle::edge::metrics::Emf;
use lambda_runtime::{Error, LambdaEvent};
use std::collections::HashSet;
use std::time::Duration;
use tracing::Instrument;

pub struct App {
    pub store: Dynamo,
    pub tokens: TokenStore,
    pub scim: Scim,
    pub policy: Policy,
    pub budget: TargetBudget,
    pub sqs: aws_sdk_sqs::Client,
    /// The reconcile queue itself: a delivery run cut off by its time
    /// after progress queues the tenant's next one.
    pub queue: ReconcileQueue,
    /// The rollouts' and previews' work queue: what a work message leaves
    /// (out of time, or a tenant to try again) goes back on it.
    pub work: WorkQueueSqs,
    /// Tenants of a work message worked at once.
    pub work_concurrency: usize,
    pub dead_letter_queue_url: String,
    /// The queue's `maxReceiveCount`: the last attempt parks the message on
    /// the dead-letter queue itself, so that the cause travels with it.
    pub max_receives: u32,
}

impl App {
    fn deliverer(&self) -> Deliverer<'_, Dynamo, TokenStore, Scim> {
        Deliverer { store: &self.store, tokens: &self.tokens, directory: &self.scim, policy: self.policy, budget: self.budget }
    }
}

/// Left before the Lambda deadline when delivery stops starting new work.
const DELIVERY_MARGIN: Duration = Duration::from_secs(12);
/// Left before the Lambda deadline when a reconcile stops taking new pages
/// (a walk of a large tenant goes on in the next message): room for the
/// batch's deliveries.
const RECONCILE_MARGIN: Duration = Duration::from_secs(25);

/// Why a message could not be processed.
struct Failure {
    code: &'static str,
    message: String,
    /// A message that can never succeed is parked at once, not retried.
    permanent: bool,
}

impl Failure {
    /// A failure worth retrying, named `code`, from the error that caused it.
    fn retry<E: std::error::Error>(code: &'static str) -> impl Fn(E) -> Failure {
        move |e| Failure { code, message: error_chain(&e), permanent: false }
    }
}

pub async fn handle(app: &App, event: LambdaEvent<SqsEvent>) -> Result<SqsBatchResponse, Error> {
    // The work queue's messages (rollouts and previews: batches of
    // tenants) are a shape of their own; a batch comes from one queue.
    if event.payload.records.first().is_some_and(|m| serde_json::from_str::<Work>(m.body.as_deref().unwrap_or_default()).is_ok()) {
        return Ok(handle_work(app, event).await);
    }
    let mut response = SqsBatchResponse::default();
    // FIFO: once a message of a group fails, the later ones of that group in
    // this batch are not processed (they would overtake it) but returned too.
    let mut failed_groups: HashSet<String> = HashSet::new();
    // Tenants to deliver to after the batch, in order, with the targets to repair now.
    let mut deliveries: Vec<(TenantId, Cause, Vec<TargetId>)> = Vec::new();
    let covered = coalesced(&event.payload.records);
    // Messages left to a later one of their group, which must come back if it fails.
    let mut covered_ids: Vec<(String, String)> = Vec::new();
    for (index, message) in event.payload.records.iter().enumerate() {
        let id = message.message_id.clone().unwrap_or_default();
        let group = message.attributes.get("MessageGroupId").cloned().unwrap_or_default();
        if failed_groups.contains(&group) {
            response.batch_item_failures.push(failure_of(id));
            continue;
        }
        if covered[index] {
            // The tenant's next message in this batch reconciles too, after
            // this one's change: reconciles are level-triggered, one does.
            // (Should that one fail, this one comes back with it.)
            tracing::debug!(message_id = %id, tenant = %group, "reconcile covered by the tenant's next message");
            covered_ids.push((group, id));
            continue;
        }
        let span = tracing::info_span!("message", message_id = %id, tenant = %group);
        let reconcile_until = entitle::edge::config::stop_at(event.context.deadline, RECONCILE_MARGIN);
        let result = process(app, message, reconcile_until).instrument(span.clone()).await;
        // Tenants without SCIM targets (as the reconcile just read) have nothing to deliver.
        if let Some((_, request, _)) = result.as_ref().ok().filter(|(_, r, targets)| *targets > 0 || !r.repair.is_empty()) {
            match deliveries.iter_mut().find(|(t, _, _)| *t == request.tenant_id) {
                Some((_, cause, repair)) => {
                    // The delivery's cause: the latest message that asked for a repair.
                    if !request.repair.is_empty() {
                        *cause = request.cause.clone();
                    }
                    repair.extend(request.repair.iter().cloned());
                }
                None => deliveries.push((request.tenant_id.clone(), request.cause.clone(), request.repair.clone())),
            }
        }
        if let Err(failure) = result {
            let receives: u32 = message.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1);
            let _enter = span.enter();
            // The messages this one covered were not done either: they come
            // back first, in order, and hold back the rest of their group.
            let held: Vec<String> = covered_ids.iter().filter(|(g, _)| *g == group).map(|(_, i)| i.clone()).collect();
            covered_ids.retain(|(g, _)| *g != group);
            if !held.is_empty() {
                response.batch_item_failures.extend(held.into_iter().map(failure_of));
                failed_groups.insert(group.clone());
            }
            if failure.permanent || receives >= app.max_receives {
                tracing::error!(code = failure.code, error = %failure.message, receives, "parking message on the dead-letter queue");
                Emf::new().count("ReconcileErrors", 1).count("MessagesDeadLettered", 1).emit();
                if let Err(e) = park(app, message, &failure, receives).await {
                    tracing::error!(error = %error_chain(&e), "could not park the message; leaving it to the queue's redrive policy");
                    failed_groups.insert(group);
                    response.batch_item_failures.push(failure_of(id));
                }
            } else {
                tracing::warn!(code = failure.code, error = %failure.message, receives, "reconcile failed; will be retried");
                Emf::new().count("ReconcileErrors", 1).emit();
                failed_groups.insert(group);
                response.batch_item_failures.push(failure_of(id));
            }
        }
    }
    // Then the tenants' SCIM targets: after commit, once per tenant per
    // batch. What is not delivered stays due for the next message or sweep.
    let stop_at = entitle::edge::config::stop_at(event.context.deadline, DELIVERY_MARGIN);
    for (tenant, cause, repair) in deliveries {
        if failed_groups.contains(tenant.as_str()) {
            continue;
        }
        let span = tracing::info_span!("delivery", tenant = %tenant, cause = %cause);
        match app.deliverer().deliver_tenant(&tenant, &repair, &cause, stop_at).instrument(span.clone()).await {
            Ok(reports) => {
                if reports.iter().any(|r| r.more) {
                    // Out of time with changes still waiting: the tenant's
                    // next run follows at once (its own message, after
                    // whatever the tenant has queued), not at the next sweep.
                    let id = format!("continue-{}", Utc::now().timestamp_micros());
                    let next = ReconcileRequest::new(tenant.clone(), Cause::new(CauseKind::Delivery, &id));
                    if let Err(e) = app.queue.send(&next, &dedup_id(&["delivery", tenant.as_str(), &id])).await {
                        tracing::warn!(parent: &span, error = %error_chain(&e), "could not queue the next delivery run; the sweep finds what waits");
                    }
                }
                let _enter = span.enter();
                for r in &reports {
                    if r.delivered + r.refused > 0 || r.repair.is_some() || r.error.is_some() || r.paced.is_some() || r.contradiction.is_some() {
                        tracing::info!(
                            target_id = %r.target_id,
                            delivered = r.delivered,
                            refused = r.refused,
                            more = r.more,
                            paced = r.paced.as_deref(),
                            contradiction = r.contradiction.as_deref(),
                            repaired = r.repair.as_ref().map_or(0, |x| x.repaired.len()),
                            standing = r.standing.map_or("unchanged", Standing::as_str),
                            "target delivery"
                        );
                        Emf::new()
                            .count("ScimDeliveries", r.delivered as f64)
                            .count("ScimFailures", (r.refused + usize::from(r.error.is_some())) as f64)
                            .count("TargetsQuarantined", u8::from(r.standing == Some(Standing::Quarantined)))
                            .count("TargetContradictions", u8::from(r.contradiction.is_some()))
                            .count("DeliveriesPaced", u8::from(r.paced.is_some()))
                            .property("tenant", tenant.as_str())
                            .property("target", &r.target_id)
                            .emit();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %error_chain(&e), "delivery stopped; changes stay due"),
        }
    }
    Ok(response)
}

/// The work queue's batch: each message's tenants moved (or previewed), a
/// few at once; what a message leaves goes back on the queue as a
/// message of its own, and the tenants whose members changed get their
/// SCIM deliveries after the batch. A message that cannot be read or
/// whose work fails before any tenant is reported as a batch item failure
/// (the queue's redrive policy parks it after its receives).
async fn handle_work(app: &App, event: LambdaEvent<SqsEvent>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    let stop_at = entitle::edge::config::stop_at(event.context.deadline, RECONCILE_MARGIN);
    let mut deliveries: Vec<(TenantId, Cause)> = Vec::new();
    for message in &event.payload.records {
        let id = message.message_id.clone().unwrap_or_default();
        let work: Work = match serde_json::from_str(message.body.as_deref().unwrap_or_default()) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(message_id = %id, error = %e, "not a work message");
                response.batch_item_failures.push(failure_of(id));
                continue;
            }
        };
        let span = tracing::info_span!("work", message_id = %id, run = %work.run, tenants = work.tenants.len());
        let cause = versions::rollout_cause(&work.run);
        match versions::work(&app.store, &work, Utc::now(), stop_at, app.work_concurrency).instrument(span.clone()).await {
            Ok(report) => {
                let _enter = span.enter();
                tracing::info!(cause = %cause, settled = report.settled, changed = report.changed.len(), left = report.rest.as_ref().map_or(0, |r| r.tenants.len()), "work done");
                Emf::new().property("run", work.run.as_str()).count("RolloutTenantsSettled", report.settled as f64).emit();
                if let Some(rest) = &report.rest {
                    if let Err(e) = app.work.send_work(rest).await {
                        // The message comes back whole: its settled tenants are not counted twice.
                        tracing::warn!(error = %error_chain(&e), "could not queue the rest of the work; the message is tried again");
                        response.batch_item_failures.push(failure_of(id));
                    }
                }
                deliveries.extend(report.changed.into_iter().map(|t| (t, cause.clone())));
            }
            Err(e) => {
                tracing::warn!(parent: &span, error = %error_chain(&e), "work failed; will be retried");
                response.batch_item_failures.push(failure_of(id));
            }
        }
    }
    let stop_at = entitle::edge::config::stop_at(event.context.deadline, DELIVERY_MARGIN);
    for (tenant, cause) in deliveries {
        if let Err(e) = app.deliverer().deliver_tenant(&tenant, &[], &cause, stop_at).await {
            tracing::warn!(tenant = %tenant, cause = %cause, error = %error_chain(&e), "delivery stopped; changes stay due");
        }
    }
    response
}

/// The messages of a batch whose reconcile the next message of the same
/// tenant (message group) does anyway: a plain reconcile (no barrier, no
/// repair) followed, in its group, by another plain reconcile. A busy
/// tenant (an identity provider creating thousands of accounts, each
/// queueing a reconcile) is reconciled once per batch, not once per message;
/// a barrier or a repair is never skipped or overtaken.
fn coalesced(records: &[SqsMessage]) -> Vec<bool> {
    let plain: Vec<Option<bool>> =
        records.iter().map(|m| serde_json::from_str::<ReconcileRequest>(m.body.as_deref().unwrap_or_default()).ok().map(|r| r.barrier.is_none() && r.repair.is_empty())).collect();
    let group = |m: &SqsMessage| m.attributes.get("MessageGroupId").cloned().unwrap_or_default();
    (0..records.len())
        .map(|i| {
            plain[i] == Some(true) && {
                let next = (i + 1..records.len()).find(|&j| group(&records[j]) == group(&records[i]));
                next.is_some_and(|j| plain[j] == Some(true))
            }
        })
        .collect()
}

/// Reconciles the message's tenant: whether it changed access, the
/// request, and how many SCIM targets the tenant has.
async fn process(app: &App, message: &SqsMessage, stop_at: std::time::Instant) -> Result<(bool, ReconcileRequest, usize), Failure> {
    let body = message.body.as_deref().unwrap_or_default();
    let request: ReconcileRequest = serde_json::from_str(body).map_err(|e| Failure { code: "malformed_message", message: format!("not a reconcile request: {e}"), permanent: true })?;
    let cause = request.cause.to_string();
    if let Some(mark) = &request.barrier {
        // Everything queued for the tenant before this message is done,
        // its pending audit records chained too. A reconcile that goes on
        // in a later message (a walk, a seat pass) puts the barrier behind it.
        let meta = app.store.meta(&request.tenant_id).await.map_err(Failure::retry("barrier_failed"))?;
        if meta.as_ref().is_some_and(|m| !entitle::core::tenant::settled(m)) {
            continue_later(app, &request, "barrier").await;
            return Ok((false, request, 0));
        }
        entitle::app::audit::integrate(&app.store, &request.tenant_id, Utc::now()).await.map_err(Failure::retry("integration_failed"))?;
        app.store.mark_barrier(&request.tenant_id, mark).await.map_err(Failure::retry("barrier_failed"))?;
        tracing::info!(tenant = %request.tenant_id, cause, barrier = %mark, "barrier reached");
        return Ok((false, request, 0));
    }
    let started = std::time::Instant::now();
    // Before the tenant is read: every coalesced request that read the
    // epoch before this committed its change first (`reconcile::wake`).
    app.store.advance_wake(&request.tenant_id).await.map_err(Failure::retry("reconcile_failed"))?;
    match reconcile_until(&app.store, &request.tenant_id, &request.cause, Utc::now(), Some(stop_at)).await {
        Ok(outcome) => {
            if outcome.more {
                // A large tenant's walk or seat pass: the next message goes
                // on from where this one stopped. Marked first, so that a
                // barrier that comes before that message waits behind it (a
                // seat pass, unlike a walk, leaves no cursor on META).
                app.store.set_continues(&request.tenant_id, true).await.map_err(Failure::retry("reconcile_failed"))?;
                continue_later(app, &request, "reconcile").await;
            } else if outcome.continues {
                app.store.set_continues(&request.tenant_id, false).await.map_err(Failure::retry("reconcile_failed"))?;
            }
            Emf::new()
                .property("tenant", request.tenant_id.as_str())
                .property("cause", &cause)
                .count("ReconcileChanges", outcome.member_changes as f64)
                .millis("ReconcileDuration", started.elapsed().as_secs_f64() * 1000.0)
                .emit();
            tracing::info!(
                tenant = %request.tenant_id,
                cause,
                member_changes = outcome.member_changes,
                tenant_changed = outcome.tenant_changed,
                chunks = outcome.chunks,
                "tenant reconciled"
            );
            Ok((outcome.chunks > 0, request, outcome.targets))
        }
        Err(e) => Err(Failure::retry("reconcile_failed")(e)),
    }
}

/// Queues the rest of this message's work for the tenant (its own message,
/// behind whatever the tenant has queued): a reconcile that ran out of time,
/// or a barrier behind it. A failure to queue leaves it to the next message
/// or the sweep (a walk stands in `META`).
async fn continue_later(app: &App, request: &ReconcileRequest, what: &str) {
    let id = format!("continue-{}", Utc::now().timestamp_micros());
    let next = ReconcileRequest { repair: Vec::new(), ..request.clone() };
    if let Err(e) = app.queue.send(&next, &dedup_id(&[what, request.tenant_id.as_str(), &id])).await {
        tracing::warn!(error = %error_chain(&e), tenant = %request.tenant_id, "could not queue the rest of the reconcile; the next message or the sweep goes on");
    } else {
        tracing::info!(tenant = %request.tenant_id, what, "the rest of the work queued");
    }
}

async fn park(app: &App, message: &SqsMessage, failure: &Failure, receives: u32) -> Result<(), aws_sdk_sqs::Error> {
    let attr = |v: String| MessageAttributeValue::builder().data_type("String").string_value(v).build().expect("data type set");
    let id = message.message_id.clone().unwrap_or_default();
    let group = message.attributes.get("MessageGroupId").cloned().filter(|g| !g.is_empty()).unwrap_or_else(|| "poison".into());
    app.sqs
        .send_message()
        .queue_url(&app.dead_letter_queue_url)
        .message_body(message.body.clone().unwrap_or_default())
        .message_group_id(group)
        .message_deduplication_id(dedup_id(&["dlq", &id]))
        .message_attributes("error_code", attr(failure.code.to_string()))
        .message_attributes("error_message", attr(failure.message.chars().take(1000).collect()))
        .message_attributes("receive_count", attr(receives.to_string()))
        .message_attributes("source_message_id", attr(id))
        .send()
        .await?;
    Ok(())
}

fn failure_of(item_identifier: String) -> BatchItemFailure {
    // The type is non-exhaustive: build it from its default.
    let mut f = BatchItemFailure::default();
    f.item_identifier = item_identifier;
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use entitle::core::audit::CauseKind;
    use std::collections::HashMap;

    fn message(group: &str, request: &ReconcileRequest) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.body = Some(serde_json::to_string(request).unwrap());
        m.attributes = HashMap::from([("MessageGroupId".to_string(), group.to_string())]);
        m
    }

    #[test]
    fn consecutive_plain_reconciles_of_a_tenant_are_done_once_and_nothing_else_is_skipped() {
        let plain = |t: &str| ReconcileRequest::new(TenantId::parse(t).unwrap(), Cause::new(CauseKind::ApiCall, "x"));
        let barrier = |t: &str| ReconcileRequest { barrier: Some("mark".into()), ..plain(t) };
        let repair = |t: &str| ReconcileRequest { repair: vec![TargetId::parse("idp").unwrap()], ..plain(t) };
        let batch = [
            message("a", &plain("a")),
            message("b", &plain("b")),
            message("a", &plain("a")),
            message("a", &barrier("a")),
            message("a", &plain("a")),
            message("b", &repair("b")),
            message("a", &plain("a")),
            message("c", &plain("c")),
        ];
        let mut garbled = message("a", &plain("a"));
        garbled.body = Some("{".into());
        let covered = coalesced(&batch);
        // a: plain, plain (covers the first), barrier (never skipped, and
        // the reconcile before it runs), plain (covered by the last), plain.
        assert_eq!(covered, [true, false, false, false, true, false, false, false]);
        // A message that cannot be read covers nothing and is never covered.
        assert_eq!(coalesced(&[message("a", &plain("a")), garbled.clone(), message("a", &plain("a"))]), [false, false, false]);
    }
}
