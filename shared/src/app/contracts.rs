//! Contracts and amendments: creating a contract, submitting an amendment
//! (applied, held for review, or scheduled), approving or rejecting it,
//! reversing it, and applying scheduled ones when they fall due. Each step
//! is one transaction with its audit record under the tenant's chain head,
//! so a decision made on what was read (a base version, a clause's value)
//! cannot commit against newer state. The decisions are the core's
//! (`core::contract`); this module reads, writes and queues.

use super::commit::{audited, Decision};
use super::ports::{Change, Contracts, Models, Queue, Tenants, Write};
use super::rules::rules_of;
use super::Error;
use crate::core::audit::{AuditAction, AuditEvent, Cause, CauseKind};
use crate::core::contract::{
    self, initial_status, reversible, review_step, summaries, Actor, Amendment, AmendmentRequest, AmendmentStatus, ClauseChange, ContractDocument, ContractState, Decision as Made, DecisionRequest,
    ImpactInput, ReviewStep, Verdict,
};
use crate::core::expiry::next_due;
use crate::core::ids::{AmendmentId, ContractId, TenantId};
use crate::core::license::Source;
use crate::core::model::LicensingModel;
use crate::core::reconcile::ReconcileRequest;
use crate::core::rejection::Rejection;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The writes that move a contract to its next version: its current
/// document, the version's history entry, and the license it grants.
/// The license falls due as the tenant's model version (`model`) says.
fn next_version(model: &LicensingModel, state: &ContractState, document: &Value, doc: &ContractDocument, changes: &[ClauseChange], cause: &str, now: DateTime<Utc>) -> Vec<Write> {
    let version = state.version + 1;
    let cid = doc.contract_id.clone();
    let license = doc.license(version, now);
    let due = next_due(model, &license).map(|(at, _)| at);
    vec![
        Write::ContractDocument { contract: cid.clone(), version, document: document.clone() },
        Write::ContractVersion { contract: cid, version, document: document.clone(), changes: changes.to_vec(), cause: cause.to_string(), at: now },
        Write::License { license, if_version: None, due },
    ]
}

/// The rules a contract's tenant is decided under: its version's, or the
/// latest's when the contract names a tier or add-on its version lacks
/// (the reconcile that follows moves it there).
async fn contract_rules<S: Models>(store: &S, meta: Option<&crate::core::tenant::TenantMeta>, licenses: &[crate::core::license::License]) -> Result<std::sync::Arc<LicensingModel>, Error> {
    let model = rules_of(store, meta).await?;
    if crate::core::versions::lacks(&model, licenses).is_empty() {
        Ok(model)
    } else {
        Ok(store.latest().await?)
    }
}

async fn current<S: Contracts>(store: &S, cid: &ContractId) -> Result<ContractState, Error> {
    Ok(store.contract(cid).await?.ok_or_else(|| Rejection::not_found(&format!("contract {cid}")))?)
}

/// A decision asked on a stored amendment (approve, reject, reverse): the
/// contract, the amendment, the request (who decides, and why), and the
/// decider's authenticated identity.
#[derive(Debug, Clone, Copy)]
pub struct OnAmendment<'a> {
    pub contract: &'a ContractId,
    pub amendment: &'a AmendmentId,
    pub decision: &'a DecisionRequest,
    pub principal: Option<&'a str>,
}

/// Who decides on an amendment, of which tenant, and the cause the decision is audited under.
async fn deciding<S: Contracts>(store: &S, on: OnAmendment<'_>) -> Result<(TenantId, Actor, Cause), Error> {
    let tenant = current(store, on.contract).await?.tenant_id;
    Ok((tenant, Actor::deciding(on.decision, on.principal), Cause::new(CauseKind::Amendment, on.amendment.as_str())))
}

/// The contract as it is now, and one of its amendments with its body hash.
async fn with_amendment<S: Contracts>(store: &S, cid: &ContractId, aid: &AmendmentId) -> Result<(ContractState, Amendment, String), Error> {
    let state = current(store, cid).await?;
    let (amendment, hash) = store.amendment(cid, aid).await?.ok_or_else(|| Rejection::not_found(&format!("amendment {aid} of contract {cid}")))?;
    Ok((state, amendment, hash))
}

/// `POST /contracts`: version 1. Returns the state and whether it was created now.
pub async fn create<S: Tenants + Contracts + Models>(store: &S, body: &Value, body_hash: &str, request_id: &str, now: DateTime<Utc>) -> Result<(ContractState, bool), Error> {
    // Which tiers and add-ons exist is the latest version's to say.
    let (doc, document) = ContractDocument::parse(body, &*store.latest().await?).map_err(|p| Rejection::invalid("invalid_contract", p))?;
    let cid = doc.contract_id.clone();
    let tenant = doc.tenant_id.clone();
    let cause = Cause::api_call(request_id);
    let committed = audited(store, &tenant, |meta| {
        let (doc, document, cid, tenant, cause) = (&doc, &document, &cid, &tenant, &cause);
        async move {
            let model = contract_rules(store, meta.as_ref(), &[doc.license(1, now)]).await?;
            if let Some(hash) = store.contract_body_hash(cid).await? {
                if hash == body_hash {
                    return Ok(Decision::Done((current(store, cid).await?, false)));
                }
                return Err(Rejection::conflict("contract_exists", format!("contract {cid} already exists")).into());
            }
            let empty = ContractState { tenant_id: tenant.clone(), version: 0, document: document.clone(), doc: doc.clone() };
            let changes = contract::diff(&contract::unflatten(document, &Default::default()), document);
            let mut change = Change::new(now).write(Write::NewContract { contract: cid.clone(), body_hash: body_hash.to_string() });
            change.writes.extend(next_version(&model, &empty, document, doc, &changes, "created", now));
            change.meta.licensed = true;
            let change = change.audit(
                AuditEvent::new(AuditAction::ContractCreated, format!("contract:{cid}"), cause, "a contract is a license source: its tier, seats and add-ons over its term")
                    .after(json!({"version": 1, "document": document})),
            );
            Ok(Decision::one(change, (ContractState { version: 1, ..empty }, true)))
        }
    })
    .await?;
    Ok(committed.value)
}

/// What an amendment would do to this contract now (nothing is stored).
/// Its impact and review rules are the tenant's version's (see [`contract_rules`]).
async fn assess<S: Tenants + Models>(
    store: &S,
    state: &ContractState,
    req: &AmendmentRequest,
    submitter: &Actor,
    now: DateTime<Utc>,
) -> Result<(Amendment, Value, ContractDocument, std::sync::Arc<LicensingModel>), Error> {
    let form = req.form().map_err(|p| Rejection::invalid("invalid_amendment", p))?;
    let (new_document, changes) = contract::evaluate(&*store.latest().await?, &state.document, &state.doc.contract_id, &form).map_err(|p| Rejection::invalid("invalid_amendment", p))?;
    let new_doc: ContractDocument = serde_json::from_value(new_document.clone()).map_err(|e| super::PortError::Corrupt { key: "amendment".into(), why: e.to_string() })?;
    let tenant = store.tenant(&state.tenant_id).await?.ok_or_else(|| super::PortError::Corrupt { key: format!("T#{}", state.tenant_id), why: "contract without tenant".into() })?;
    let rules = contract_rules(store, Some(&tenant.meta), &[new_doc.license(state.version + 1, now)]).await?;
    let model = &*rules;
    let cid = &state.doc.contract_id;
    let other_licenses: Vec<_> = tenant.licenses.iter().filter(|l| !(l.source == Source::Contract && l.license_id.as_str() == cid.as_str())).cloned().collect();
    let other_docs: Vec<&ContractDocument> = tenant.contracts.iter().map(|(d, _)| d).filter(|d| &d.contract_id != cid).collect();
    let as_of = req.effective_at.unwrap_or(now).max(now);
    let impact = contract::impact(ImpactInput {
        model,
        other_licenses: &other_licenses,
        other_rules: &other_docs,
        old: Some(&state.doc),
        new: &new_doc,
        version: state.version + 1,
        as_of,
        members: &tenant.members,
    });
    let review = contract::review(model, &state.doc, &new_doc, &impact);
    let status = initial_status(&review, req.effective_at, now);
    let amendment = Amendment {
        amendment_id: req.amendment_id.clone(),
        contract_id: cid.clone(),
        tenant_id: state.tenant_id.clone(),
        status,
        base_version: req.base_version,
        effective_at: req.effective_at,
        form: form.name().into(),
        changes,
        impact,
        review,
        applied_version: (status == AmendmentStatus::Applied).then_some(state.version + 1),
        reversed_version: None,
        decisions: Vec::new(),
        note: None,
        created_at: rfc3339(now),
        submitted_by: submitter.clone(),
    };
    Ok((amendment, new_document, new_doc, rules))
}

/// An amendment as submitted: to which contract, its request and the
/// hash of its body, the submitter's authenticated identity, and whether
/// it is only assessed (a dry run).
#[derive(Debug, Clone, Copy)]
pub struct Submission<'a> {
    pub contract: &'a ContractId,
    pub request: &'a AmendmentRequest,
    pub principal: Option<&'a str>,
    pub body_hash: &'a str,
    pub dry_run: bool,
}

/// `POST /contracts/{id}/amendments` by `principal` (its authenticated
/// identity, recorded as the submitter's). Returns the amendment and
/// whether it was stored now (false: a dry run, or a repeat of a stored one).
pub async fn submit<S: Tenants + Contracts + Models>(store: &S, submission: Submission<'_>, now: DateTime<Utc>) -> Result<(Amendment, bool), Error> {
    let Submission { contract: cid, request: req, principal, body_hash, dry_run } = submission;
    let tenant = current(store, cid).await?.tenant_id;
    let submitter = Actor { by: req.submitted_by.clone(), principal: principal.map(str::to_string) };
    let cause = Cause::new(CauseKind::Amendment, req.amendment_id.as_str());
    let committed = audited(store, &tenant, |_meta| {
        let (submitter, cause) = (&submitter, &cause);
        async move {
            let state = current(store, cid).await?;
            if let Some((existing, hash)) = store.amendment(cid, &req.amendment_id).await? {
                if hash == body_hash {
                    return Ok(Decision::Done((existing, false)));
                }
                return Err(Rejection::invalid("duplicate_amendment_id", vec![format!("amendment_id: {} was already submitted with a different body", req.amendment_id)]).into());
            }
            if req.base_version != state.version {
                return Err(Rejection::conflict("stale_base_version", format!("base_version {} is not the current version {} of contract {cid}", req.base_version, state.version))
                    .with("current_version", state.version)
                    .into());
            }
            let (amendment, new_document, new_doc, model) = assess(store, &state, req, submitter, now).await?;
            if dry_run {
                return Ok(Decision::Done((amendment, false)));
            }
            let subject = format!("contract:{cid}");
            let before = json!({"version": state.version});
            let mut change = Change::new(now);
            let audit = match amendment.status {
                AmendmentStatus::Applied => {
                    change.writes.extend(next_version(&model, &state, &new_document, &new_doc, &amendment.changes, &format!("amendment {}", req.amendment_id), now));
                    AuditEvent::new(AuditAction::AmendmentApplied, subject, cause, "no review rule fired")
                        .before(before)
                        .after(json!({"version": state.version + 1, "changes": summaries(&amendment.changes)}))
                }
                AmendmentStatus::PendingReview => AuditEvent::new(AuditAction::AmendmentHeldForReview, subject, cause, amendment.review.join("; "))
                    .before(before)
                    .after(json!({"status": "pending_review", "changes": summaries(&amendment.changes)})),
                _ => AuditEvent::new(AuditAction::AmendmentScheduled, subject, cause, format!("effective_at {} is in the future", amendment.effective_at.map(|t| t.to_rfc3339()).unwrap_or_default()))
                    .before(before)
                    .after(json!({"status": "scheduled", "changes": summaries(&amendment.changes)})),
            };
            let change = change.write(Write::Amendment { amendment: amendment.clone(), body_hash: body_hash.to_string() }).audit(audit);
            Ok(Decision::one(change, (amendment, true)))
        }
    })
    .await?;
    Ok(committed.value)
}

/// The writes that apply a stored amendment's change set to the contract's
/// current version, or the clauses that moved since it was made.
fn applied(model: &LicensingModel, state: &ContractState, amendment: &mut Amendment, body_hash: &str, now: DateTime<Utc>) -> Result<Vec<Write>, Vec<String>> {
    let document = contract::apply(&state.document, &amendment.changes).map_err(|c| c.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let doc: ContractDocument = serde_json::from_value(document.clone()).map_err(|e| vec![e.to_string()])?;
    amendment.status = AmendmentStatus::Applied;
    amendment.applied_version = Some(state.version + 1);
    let mut writes = next_version(model, state, &document, &doc, &amendment.changes, &format!("amendment {}", amendment.amendment_id), now);
    writes.push(Write::Amendment { amendment: amendment.clone(), body_hash: body_hash.to_string() });
    Ok(writes)
}

/// `POST .../approve` and `POST .../reject`, by `decision.by` whose
/// authenticated identity is `principal`.
pub async fn decide<S: Tenants + Contracts + Models>(store: &S, on: OnAmendment<'_>, verdict: Verdict, now: DateTime<Utc>) -> Result<Amendment, Error> {
    let OnAmendment { contract: cid, amendment: aid, decision, .. } = on;
    let (tenant, actor, cause) = deciding(store, on).await?;
    let committed = audited(store, &tenant, |meta| {
        let (actor, cause) = (&actor, &cause);
        async move {
            let model = &*rules_of(store, meta.as_ref()).await?;
            let (state, mut amendment, hash) = with_amendment(store, cid, aid).await?;
            let step = review_step(&amendment, verdict, actor, &decision.reason, state.version, now, model.review.four_eyes)?;
            if step == ReviewStep::Unchanged {
                return Ok(Decision::Done(amendment));
            }
            amendment.decisions.push(Made { action: verdict.action().into(), by: decision.by.clone(), reason: decision.reason.clone(), at: rfc3339(now), principal: actor.principal.clone() });
            let rule = format!("{} by {}: {}", verdict.action(), actor.describe(), decision.reason);
            let subject = format!("contract:{cid}");
            let (writes, audit) = match step {
                ReviewStep::Reject => {
                    amendment.status = AmendmentStatus::Rejected;
                    let a = AuditEvent::new(AuditAction::AmendmentRejected, subject, cause, rule).before(json!({"status": "pending_review"})).after(json!({"status": "rejected"}));
                    (vec![Write::Amendment { amendment: amendment.clone(), body_hash: hash }], a)
                }
                ReviewStep::Schedule => {
                    amendment.status = AmendmentStatus::Scheduled;
                    let a = AuditEvent::new(AuditAction::AmendmentApproved, subject, cause, rule).before(json!({"status": "pending_review"})).after(json!({"status": "scheduled"}));
                    (vec![Write::Amendment { amendment: amendment.clone(), body_hash: hash }], a)
                }
                _ => {
                    let writes = applied(model, &state, &mut amendment, &hash, now)
                        .map_err(|conflicts| Rejection::conflict("contract_moved_on", format!("clauses changed since the amendment was made: {}", conflicts.join(", "))).with("clauses", conflicts))?;
                    let a = AuditEvent::new(AuditAction::AmendmentApplied, subject, cause, rule)
                        .before(json!({"version": state.version}))
                        .after(json!({"version": state.version + 1, "changes": summaries(&amendment.changes)}));
                    (writes, a)
                }
            };
            let change = Change { writes, ..Change::new(now) }.audit(audit);
            Ok(Decision::one(change, amendment))
        }
    })
    .await?;
    Ok(committed.value)
}

/// `POST .../reverse`: the contract returns to what it would be without the
/// amendment; later amendments of other clauses are kept.
pub async fn reverse<S: Tenants + Contracts + Models>(store: &S, on: OnAmendment<'_>, now: DateTime<Utc>) -> Result<Amendment, Error> {
    let OnAmendment { contract: cid, amendment: aid, decision, .. } = on;
    let (tenant, actor, cause) = deciding(store, on).await?;
    let committed = audited(store, &tenant, |meta| {
        let (actor, cause) = (&actor, &cause);
        async move {
            let model = &*rules_of(store, meta.as_ref()).await?;
            let (state, mut amendment, hash) = with_amendment(store, cid, aid).await?;
            if !reversible(&amendment)? {
                return Ok(Decision::Done(amendment));
            }
            let inverse = contract::invert(&amendment.changes);
            let document = contract::apply(&state.document, &inverse).map_err(|conflicts| {
                let names: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
                Rejection::conflict("reversal_conflict", format!("later amendments changed the same clauses: {}", names.join(", "))).with("clauses", names)
            })?;
            let doc: ContractDocument = serde_json::from_value(document.clone()).map_err(|e| super::PortError::Corrupt { key: "reversal".into(), why: e.to_string() })?;
            amendment.status = AmendmentStatus::Reversed;
            amendment.reversed_version = Some(state.version + 1);
            amendment.decisions.push(Made { action: "reversed".into(), by: decision.by.clone(), reason: decision.reason.clone(), at: rfc3339(now), principal: actor.principal.clone() });
            let mut change = Change::new(now);
            change.writes = next_version(model, &state, &document, &doc, &inverse, &format!("reversal of {aid}"), now);
            change.writes.push(Write::Amendment { amendment: amendment.clone(), body_hash: hash });
            let change = change.audit(
                AuditEvent::new(AuditAction::AmendmentReversed, format!("contract:{cid}"), cause, format!("reversed by {}: {}", actor.describe(), decision.reason))
                    .before(json!({"version": state.version}))
                    .after(json!({"version": state.version + 1, "changes": summaries(&inverse)})),
            );
            Ok(Decision::one(change, amendment))
        }
    })
    .await?;
    Ok(committed.value)
}

/// Applies the contract's scheduled amendments that are due at `as_of`,
/// oldest first, and queues a reconcile of its tenant for each one applied,
/// so that access follows: the code path the expiry sweep runs, driven by
/// an explicit time. An amendment whose clauses moved since it was made is
/// rejected with the reason.
pub async fn apply_due<S: Tenants + Contracts + Models, Q: Queue>(store: &S, queue: &Q, cid: &ContractId, as_of: DateTime<Utc>, run_id: &str) -> Result<Vec<Amendment>, Error> {
    let Some(state) = store.contract(cid).await? else { return Ok(Vec::new()) };
    let tenant: TenantId = state.tenant_id;
    let cause = Cause::new(CauseKind::Sweep, run_id);
    let mut done = Vec::new();
    for due in store.scheduled_amendments(cid).await?.into_iter().filter(|a| a.effective_at.is_some_and(|t| t <= as_of)) {
        let committed = audited(store, &tenant, |meta| {
            let (cause, aid) = (&cause, &due.amendment_id);
            async move {
                let model = &*rules_of(store, meta.as_ref()).await?;
                let state = current(store, cid).await?;
                let Some((mut amendment, hash)) = store.amendment(cid, aid).await? else { return Ok(Decision::Done(None)) };
                if amendment.status != AmendmentStatus::Scheduled {
                    return Ok(Decision::Done(None)); // another run applied it
                }
                let subject = format!("contract:{cid}");
                let (writes, audit) = match applied(model, &state, &mut amendment, &hash, as_of) {
                    Ok(writes) => {
                        let rule = format!("amendment {aid} became effective at {}", amendment.effective_at.map(|t| t.to_rfc3339()).unwrap_or_default());
                        let a = AuditEvent::new(AuditAction::AmendmentApplied, subject, cause, rule)
                            .before(json!({"version": state.version}))
                            .after(json!({"version": state.version + 1, "changes": summaries(&amendment.changes)}));
                        (writes, a)
                    }
                    Err(conflicts) => {
                        amendment.status = AmendmentStatus::Rejected;
                        amendment.note = Some(format!("not applied when due: clauses changed since it was made: {}", conflicts.join(", ")));
                        let a = AuditEvent::new(AuditAction::AmendmentRejected, subject, cause, amendment.note.clone().unwrap_or_default())
                            .before(json!({"status": "scheduled"}))
                            .after(json!({"status": "rejected"}));
                        (vec![Write::Amendment { amendment: amendment.clone(), body_hash: hash }], a)
                    }
                };
                let change = Change { writes, ..Change::new(as_of) }.audit(audit);
                Ok(Decision::one(change, Some(amendment)))
            }
        })
        .await?;
        if let Some(a) = committed.value {
            if let Some(version) = a.applied_version.filter(|_| a.status == AmendmentStatus::Applied) {
                queue.send(&ReconcileRequest::new(a.tenant_id.clone(), cause.clone()), &format!("contract:{cid}:v{version}")).await?;
            }
            done.push(a);
        }
    }
    Ok(done)
}
