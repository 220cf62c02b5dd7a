//! Contracts in the store: versions, amendments, review, future dating and
//! reversal. Like every tenant write, each step is one transaction with its
//! audit record under the tenant's chain-head lock, so that a decision made
//! on what was read (a base version, a clause's current value) cannot commit
//! against newer state.
//!
//! Items (state table): `C#<contract>/META` (its tenant), `C#<contract>/V#<version>`
//! (history), `C#<contract>/A#<amendment>` (amendments), `T#<tenant>/CONTRACT#<contract>`
//! (current document, read with the tenant), `T#<tenant>/LIC#contract#<contract>`
//! (the license it grants).

use crate::api::ApiError;
use crate::audit::{AuditEvent, Cause, CauseKind};
use crate::contract::{self, Actor, Amendment, AmendmentRequest, AmendmentStatus, ClauseChange, ContractDocument, Decision, DecisionRequest};
use crate::ids::{AmendmentId, ContractId, TenantId};
use crate::license::Source;
use crate::store::{backoff, get_n, get_s, json_attr, n, now_rfc3339, s, tenant_pk, to_json, Commit, Store, StoreError, TenantMeta, MAX_ATTEMPTS};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// A contract's current state.
#[derive(Debug, Clone)]
pub struct ContractState {
    pub tenant_id: TenantId,
    pub version: u64,
    pub document: Value,
    pub doc: ContractDocument,
}

fn contract_pk(c: &ContractId) -> String {
    format!("C#{c}")
}
fn version_sk(v: u64) -> String {
    format!("V#{v:010}")
}
fn amendment_sk(a: &AmendmentId) -> String {
    format!("A#{a}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
}

fn put(table: &str, item: Vec<(&str, AttributeValue)>, condition: Option<&str>) -> TransactWriteItem {
    let mut p = Put::builder().table_name(table);
    for (k, v) in item {
        p = p.item(k, v);
    }
    if let Some(c) = condition {
        p = p.condition_expression(c);
    }
    TransactWriteItem::builder().put(p.build().expect("table, item set")).build()
}

impl Store {
    /// Commits `items` with the audit `events` under the tenant's chain-head
    /// lock. `false`: another writer moved first; re-read and decide again.
    /// Every contract write concerns a tenant with a contract: it is known
    /// (`licensed`) from the contract's creation on.
    async fn commit_audited(&self, tenant: &TenantId, meta: Option<&TenantMeta>, mut items: Vec<TransactWriteItem>, events: Vec<AuditEvent>, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let (audit_items, _) = self.audit_and_lock(tenant, meta, now, events, vec![("licensed", AttributeValue::Bool(true))]);
        let chain_from = items.len();
        items.extend(audit_items);
        match self.commit(items, chain_from).await? {
            Commit::Done => Ok(true),
            // A conditional item of ours failed: the state it was decided on moved.
            Commit::Retry | Commit::Failed(_) => Ok(false),
        }
    }

    pub async fn contract(&self, id: &ContractId) -> Result<Option<ContractState>, StoreError> {
        let Some(meta) = self.get(contract_pk(id), "META".into()).await? else { return Ok(None) };
        let tenant = TenantId::parse(get_s(&meta, "tenant_id").unwrap_or_default()).map_err(|e| StoreError::Corrupt { key: contract_pk(id), why: e.to_string() })?;
        let key = format!("CONTRACT#{id}");
        let Some(item) = self.get(tenant_pk(&tenant), key.clone()).await? else { return Ok(None) };
        let document: Value = json_attr(&item, "document", &key)?.ok_or_else(|| StoreError::Corrupt { key: key.clone(), why: "no document".into() })?;
        let doc: ContractDocument = serde_json::from_value(document.clone()).map_err(|e| StoreError::Corrupt { key: key.clone(), why: e.to_string() })?;
        Ok(Some(ContractState { tenant_id: tenant, version: get_n(&item, "version").unwrap_or(0), document, doc }))
    }

    /// The version history, oldest first.
    pub async fn contract_history(&self, id: &ContractId) -> Result<Vec<Value>, StoreError> {
        let items = self.query_partition(contract_pk(id), "V#").await?;
        Ok(items
            .iter()
            .map(|i| {
                let changes: Vec<ClauseChange> = get_s(i, "changes").and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
                json!({
                    "version": get_n(i, "version"),
                    "cause": get_s(i, "cause"),
                    "at": get_s(i, "at"),
                    "changes": changes.iter().map(|c| c.summary.clone()).collect::<Vec<_>>(),
                })
            })
            .collect())
    }

    pub async fn amendment(&self, id: &ContractId, aid: &AmendmentId) -> Result<Option<(Amendment, String)>, StoreError> {
        let key = format!("{}/{}", contract_pk(id), amendment_sk(aid));
        match self.get(contract_pk(id), amendment_sk(aid)).await? {
            None => Ok(None),
            Some(item) => {
                let a: Amendment = json_attr(&item, "amendment", &key)?.ok_or_else(|| StoreError::Corrupt { key: key.clone(), why: "no amendment".into() })?;
                Ok(Some((a, get_s(&item, "body_hash").unwrap_or_default().to_string())))
            }
        }
    }

    pub async fn scheduled_amendments(&self, id: &ContractId) -> Result<Vec<Amendment>, StoreError> {
        let items = self.query_partition(contract_pk(id), "A#").await?;
        let mut out: Vec<Amendment> = items
            .iter()
            .filter(|i| get_s(i, "status") == Some("scheduled"))
            .filter_map(|i| get_s(i, "amendment").and_then(|a| serde_json::from_str(a).ok()))
            .collect();
        out.sort_by(|a: &Amendment, b: &Amendment| a.effective_at.cmp(&b.effective_at).then_with(|| a.amendment_id.cmp(&b.amendment_id)));
        Ok(out)
    }

    fn amendment_put(&self, a: &Amendment, body_hash: &str) -> TransactWriteItem {
        let (pk, sk) = (contract_pk(&a.contract_id), amendment_sk(&a.amendment_id));
        // A scheduled amendment is in the due index until it is applied or rejected.
        let due = a.effective_at.filter(|_| a.status == AmendmentStatus::Scheduled);
        let mut item = vec![
            ("pk", s(pk.clone())),
            ("sk", s(sk.clone())),
            ("amendment", s(to_json(a))),
            ("status", s(a.status.as_str())),
            ("body_hash", s(body_hash)),
        ];
        item.extend(crate::sweep::due_attributes(&pk, &sk, due));
        put(&self.state, item, None)
    }

    /// The items that move a contract to a new version.
    fn version_items(&self, state: &ContractState, document: &Value, doc: &ContractDocument, changes: &[ClauseChange], cause: &str, now: DateTime<Utc>) -> Vec<TransactWriteItem> {
        let new_version = state.version + 1;
        let cid = &doc.contract_id;
        vec![
            put(
                &self.state,
                vec![
                    ("pk", s(tenant_pk(&state.tenant_id))),
                    ("sk", s(format!("CONTRACT#{cid}"))),
                    ("document", s(document.to_string())),
                    ("version", n(new_version)),
                ],
                Some("attribute_exists(pk)"),
            ),
            put(
                &self.state,
                vec![
                    ("pk", s(contract_pk(cid))),
                    ("sk", s(version_sk(new_version))),
                    ("version", n(new_version)),
                    ("document", s(document.to_string())),
                    ("changes", s(to_json(&changes))),
                    ("cause", s(cause)),
                    ("at", s(now_rfc3339(now))),
                ],
                Some("attribute_not_exists(pk)"),
            ),
            self.license_put(&state.tenant_id, &doc.license(new_version, now), None),
        ]
    }

    /// `POST /contracts`: version 1. Returns the state and whether it was created now.
    pub async fn create_contract(&self, body: &Value, body_hash: &str, request_id: &str, now: DateTime<Utc>) -> Result<(ContractState, bool), StoreError> {
        let (doc, document) = ContractDocument::parse(body, &self.model).map_err(|p| ApiError::unprocessable("invalid_contract", p))?;
        let cid = doc.contract_id.clone();
        for attempt in 0..MAX_ATTEMPTS {
            if let Some(existing) = self.get(contract_pk(&cid), "META".into()).await? {
                if get_s(&existing, "body_hash") == Some(body_hash) {
                    let state = self.contract(&cid).await?.ok_or_else(|| StoreError::Corrupt { key: contract_pk(&cid), why: "no current version".into() })?;
                    return Ok((state, false));
                }
                return Err(ApiError::new(409, "contract_exists", format!("contract {cid} already exists")).into());
            }
            let tenant = doc.tenant_id.clone();
            let meta = self.meta(&tenant).await?;
            let state = ContractState { tenant_id: tenant.clone(), version: 0, document: document.clone(), doc: doc.clone() };
            let changes = contract::diff(&contract::unflatten(&document, &Default::default()), &document);
            let mut items = vec![put(
                &self.state,
                vec![("pk", s(contract_pk(&cid))), ("sk", s("META")), ("tenant_id", s(tenant.as_str())), ("body_hash", s(body_hash))],
                Some("attribute_not_exists(pk)"),
            )];
            let mut version_items = self.version_items(&state, &document, &doc, &changes, "created", now);
            // Version 1 has no previous current document to condition on.
            version_items[0] = put(
                &self.state,
                vec![("pk", s(tenant_pk(&tenant))), ("sk", s(format!("CONTRACT#{cid}"))), ("document", s(document.to_string())), ("version", n(1))],
                Some("attribute_not_exists(pk)"),
            );
            items.extend(version_items);
            let event = AuditEvent {
                action: "contract_created".into(),
                subject: format!("contract:{cid}"),
                cause: Cause::new(CauseKind::ApiCall, request_id),
                rule: "a contract is a license source: its tier, seats and add-ons over its term".into(),
                before: None,
                after: Some(json!({"version": 1, "document": document})),
            };
            if self.commit_audited(&tenant, meta.as_ref(), items, vec![event], now).await? {
                return Ok((ContractState { version: 1, ..state }, true));
            }
            backoff(attempt).await;
        }
        Err(StoreError::Contention(format!("contract {cid}")))
    }

    /// What an amendment would do to this contract now (nothing is stored).
    async fn assess(&self, state: &ContractState, req: &AmendmentRequest, principal: Option<&str>, now: DateTime<Utc>) -> Result<(Amendment, Value, ContractDocument), StoreError> {
        let form = req.form().map_err(|p| ApiError::unprocessable("invalid_amendment", p))?;
        let (new_document, changes) =
            contract::evaluate(&self.model, &state.document, &state.doc.contract_id, &form).map_err(|p| ApiError::unprocessable("invalid_amendment", p))?;
        let new_doc: ContractDocument = serde_json::from_value(new_document.clone()).map_err(|e| StoreError::Corrupt { key: "amendment".into(), why: e.to_string() })?;
        let tenant = self.load_tenant(&state.tenant_id).await?.ok_or_else(|| StoreError::Corrupt { key: tenant_pk(&state.tenant_id), why: "contract without tenant".into() })?;
        let cid = &state.doc.contract_id;
        let other_licenses: Vec<_> = tenant.licenses.iter().filter(|l| !(l.source == Source::Contract && l.license_id.as_str() == cid.as_str())).cloned().collect();
        let other_docs: Vec<&ContractDocument> = tenant.contracts.iter().map(|(d, _)| d).filter(|d| &d.contract_id != cid).collect();
        let members: Vec<_> = tenant.members.iter().map(|m| m.member.clone()).collect();
        let as_of = req.effective_at.unwrap_or(now).max(now);
        let impact = contract::impact(&self.model, &other_licenses, &other_docs, Some(&state.doc), &new_doc, state.version + 1, as_of, &members);
        let review = contract::review(&self.model, &state.doc, &new_doc, &impact);
        let status = if !review.is_empty() {
            AmendmentStatus::PendingReview
        } else if req.effective_at.is_some_and(|t| t > now) {
            AmendmentStatus::Scheduled
        } else {
            AmendmentStatus::Applied
        };
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
            created_at: now_rfc3339(now),
            submitted_by: Actor { by: req.submitted_by.clone(), principal: principal.map(str::to_string) },
        };
        Ok((amendment, new_document, new_doc))
    }

    /// `POST /contracts/{id}/amendments`. Returns the amendment and whether
    /// it was stored now (false: a dry run, or a duplicate of a stored one).
    /// `principal`: the caller's authenticated identity, recorded as the submitter's.
    pub async fn submit_amendment(&self, cid: &ContractId, req: &AmendmentRequest, principal: Option<&str>, body_hash: &str, dry_run: bool, now: DateTime<Utc>) -> Result<(Amendment, bool), StoreError> {
        for attempt in 0..MAX_ATTEMPTS {
            let state = self.contract(cid).await?.ok_or_else(|| ApiError::not_found(&format!("contract {cid}")))?;
            if let Some((existing, hash)) = self.amendment(cid, &req.amendment_id).await? {
                if hash == body_hash {
                    return Ok((existing, false));
                }
                return Err(ApiError::unprocessable(
                    "duplicate_amendment_id",
                    vec![format!("amendment_id: {} was already submitted with a different body", req.amendment_id)],
                )
                .into());
            }
            if req.base_version != state.version {
                return Err(ApiError::new(409, "stale_base_version", format!("base_version {} is not the current version {} of contract {cid}", req.base_version, state.version))
                    .with("current_version", state.version)
                    .into());
            }
            let (amendment, new_document, new_doc) = self.assess(&state, req, principal, now).await?;
            if dry_run {
                return Ok((amendment, false));
            }
            let meta = self.meta(&state.tenant_id).await?;
            let cause = Cause::new(CauseKind::Amendment, req.amendment_id.as_str());
            let summaries: Vec<String> = amendment.changes.iter().map(|c| c.summary.clone()).collect();
            let (mut items, event) = match amendment.status {
                AmendmentStatus::Applied => (
                    self.version_items(&state, &new_document, &new_doc, &amendment.changes, &format!("amendment {}", req.amendment_id), now),
                    AuditEvent {
                        action: "amendment_applied".into(),
                        subject: format!("contract:{cid}"),
                        cause,
                        rule: "no review rule fired".into(),
                        before: Some(json!({"version": state.version})),
                        after: Some(json!({"version": state.version + 1, "changes": summaries})),
                    },
                ),
                AmendmentStatus::PendingReview => (
                    vec![],
                    AuditEvent {
                        action: "amendment_held_for_review".into(),
                        subject: format!("contract:{cid}"),
                        cause,
                        rule: amendment.review.join("; "),
                        before: Some(json!({"version": state.version})),
                        after: Some(json!({"status": "pending_review", "changes": summaries})),
                    },
                ),
                _ => (
                    vec![],
                    AuditEvent {
                        action: "amendment_scheduled".into(),
                        subject: format!("contract:{cid}"),
                        cause,
                        rule: format!("effective_at {} is in the future", amendment.effective_at.map(|t| t.to_rfc3339()).unwrap_or_default()),
                        before: Some(json!({"version": state.version})),
                        after: Some(json!({"status": "scheduled", "changes": summaries})),
                    },
                ),
            };
            items.push(self.amendment_put(&amendment, body_hash));
            if self.commit_audited(&state.tenant_id, meta.as_ref(), items, vec![event], now).await? {
                return Ok((amendment, true));
            }
            backoff(attempt).await;
        }
        Err(StoreError::Contention(format!("contract {cid}")))
    }

    /// Applies a stored amendment's change set to the current version. The
    /// clause-level check refuses it if a clause it changes has moved.
    async fn apply_stored(&self, state: &ContractState, amendment: &mut Amendment, body_hash: &str, event: AuditEvent, now: DateTime<Utc>) -> Result<Result<bool, Vec<String>>, StoreError> {
        let new_document = match contract::apply(&state.document, &amendment.changes) {
            Ok(d) => d,
            Err(conflicts) => return Ok(Err(conflicts.iter().map(ToString::to_string).collect())),
        };
        let new_doc: ContractDocument = serde_json::from_value(new_document.clone()).map_err(|e| StoreError::Corrupt { key: "amendment".into(), why: e.to_string() })?;
        amendment.status = AmendmentStatus::Applied;
        amendment.applied_version = Some(state.version + 1);
        let mut items = self.version_items(state, &new_document, &new_doc, &amendment.changes, &format!("amendment {}", amendment.amendment_id), now);
        items.push(self.amendment_put(amendment, body_hash));
        let meta = self.meta(&state.tenant_id).await?;
        Ok(Ok(self.commit_audited(&state.tenant_id, meta.as_ref(), items, vec![event], now).await?))
    }

    /// `POST .../approve` and `POST .../reject`, by `decision.by` whose
    /// authenticated identity is `principal`. Where the model asks for four
    /// eyes, the submitter cannot approve (403 `same_submitter`).
    pub async fn decide_amendment(&self, cid: &ContractId, aid: &AmendmentId, verdict: Verdict, decision: &DecisionRequest, principal: Option<&str>, now: DateTime<Utc>) -> Result<Amendment, StoreError> {
        let actor = Actor { by: Some(decision.by.clone()), principal: principal.map(str::to_string) };
        let action = if verdict == Verdict::Approve { "approved" } else { "rejected" };
        for attempt in 0..MAX_ATTEMPTS {
            let state = self.contract(cid).await?.ok_or_else(|| ApiError::not_found(&format!("contract {cid}")))?;
            let (mut amendment, hash) = self.amendment(cid, aid).await?.ok_or_else(|| ApiError::not_found(&format!("amendment {aid} of contract {cid}")))?;
            if amendment.decisions.iter().any(|d| d.action == action && d.by == decision.by && d.reason == decision.reason) {
                return Ok(amendment); // the same decision again: nothing changes
            }
            let decidable = amendment.status == AmendmentStatus::PendingReview || (verdict == Verdict::Reject && amendment.status == AmendmentStatus::Scheduled);
            if !decidable {
                return Err(ApiError::new(409, "not_pending", format!("amendment {aid} is {}, not pending review", amendment.status.as_str())).with("status", amendment.status).into());
            }
            if verdict == Verdict::Approve && self.model.review.four_eyes && amendment.submitted_by.same_as(&actor) {
                return Err(ApiError::new(
                    403,
                    "same_submitter",
                    format!("amendment {aid} was submitted by {}; the licensing model requires someone else to approve it (four eyes)", amendment.submitted_by.describe()),
                )
                .into());
            }
            amendment.decisions.push(Decision { action: action.into(), by: decision.by.clone(), reason: decision.reason.clone(), at: now_rfc3339(now), principal: actor.principal.clone() });
            let cause = Cause::new(CauseKind::Amendment, aid.as_str());
            let rule = format!("{action} by {}: {}", actor.describe(), decision.reason);
            if verdict == Verdict::Reject {
                amendment.status = AmendmentStatus::Rejected;
                let event = AuditEvent { action: "amendment_rejected".into(), subject: format!("contract:{cid}"), cause, rule, before: Some(json!({"status": "pending_review"})), after: Some(json!({"status": "rejected"})) };
                let meta = self.meta(&state.tenant_id).await?;
                if self.commit_audited(&state.tenant_id, meta.as_ref(), vec![self.amendment_put(&amendment, &hash)], vec![event], now).await? {
                    return Ok(amendment);
                }
            } else {
                if state.version != amendment.base_version {
                    return Err(ApiError::new(409, "contract_moved_on", format!("contract {cid} is at version {}, the amendment was made against version {}", state.version, amendment.base_version))
                        .with("current_version", state.version)
                        .into());
                }
                if amendment.effective_at.is_some_and(|t| t > now) {
                    amendment.status = AmendmentStatus::Scheduled;
                    let event = AuditEvent { action: "amendment_approved".into(), subject: format!("contract:{cid}"), cause, rule, before: Some(json!({"status": "pending_review"})), after: Some(json!({"status": "scheduled"})) };
                    let meta = self.meta(&state.tenant_id).await?;
                    if self.commit_audited(&state.tenant_id, meta.as_ref(), vec![self.amendment_put(&amendment, &hash)], vec![event], now).await? {
                        return Ok(amendment);
                    }
                } else {
                    let event = AuditEvent {
                        action: "amendment_applied".into(),
                        subject: format!("contract:{cid}"),
                        cause,
                        rule,
                        before: Some(json!({"version": state.version})),
                        after: Some(json!({"version": state.version + 1, "changes": amendment.changes.iter().map(|c| c.summary.clone()).collect::<Vec<_>>()})),
                    };
                    match self.apply_stored(&state, &mut amendment, &hash, event, now).await? {
                        Ok(true) => return Ok(amendment),
                        Ok(false) => {}
                        Err(conflicts) => return Err(ApiError::new(409, "contract_moved_on", format!("clauses changed since the amendment was made: {}", conflicts.join(", "))).with("clauses", conflicts).into()),
                    }
                }
            }
            backoff(attempt).await;
        }
        Err(StoreError::Contention(format!("contract {cid}")))
    }

    /// `POST .../reverse`: the contract returns to what it would be without
    /// the amendment; later amendments to other clauses are kept.
    pub async fn reverse_amendment(&self, cid: &ContractId, aid: &AmendmentId, decision: &DecisionRequest, principal: Option<&str>, now: DateTime<Utc>) -> Result<Amendment, StoreError> {
        let actor = Actor { by: Some(decision.by.clone()), principal: principal.map(str::to_string) };
        for attempt in 0..MAX_ATTEMPTS {
            let state = self.contract(cid).await?.ok_or_else(|| ApiError::not_found(&format!("contract {cid}")))?;
            let (mut amendment, hash) = self.amendment(cid, aid).await?.ok_or_else(|| ApiError::not_found(&format!("amendment {aid} of contract {cid}")))?;
            match amendment.status {
                AmendmentStatus::Reversed => return Ok(amendment),
                AmendmentStatus::Applied => {}
                other => return Err(ApiError::new(409, "not_applied", format!("amendment {aid} is {}; only an applied amendment can be reversed", other.as_str())).into()),
            }
            let inverse = contract::invert(&amendment.changes);
            let new_document = match contract::apply(&state.document, &inverse) {
                Ok(d) => d,
                Err(conflicts) => {
                    let names: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
                    return Err(ApiError::new(409, "reversal_conflict", format!("later amendments changed the same clauses: {}", names.join(", "))).with("clauses", names).into());
                }
            };
            let new_doc: ContractDocument = serde_json::from_value(new_document.clone()).map_err(|e| StoreError::Corrupt { key: "reversal".into(), why: e.to_string() })?;
            amendment.status = AmendmentStatus::Reversed;
            amendment.reversed_version = Some(state.version + 1);
            amendment.decisions.push(Decision { action: "reversed".into(), by: decision.by.clone(), reason: decision.reason.clone(), at: now_rfc3339(now), principal: actor.principal.clone() });
            let mut items = self.version_items(&state, &new_document, &new_doc, &inverse, &format!("reversal of {aid}"), now);
            items.push(self.amendment_put(&amendment, &hash));
            let event = AuditEvent {
                action: "amendment_reversed".into(),
                subject: format!("contract:{cid}"),
                cause: Cause::new(CauseKind::Amendment, aid.as_str()),
                rule: format!("reversed by {}: {}", actor.describe(), decision.reason),
                before: Some(json!({"version": state.version})),
                after: Some(json!({"version": state.version + 1, "changes": inverse.iter().map(|c| c.summary.clone()).collect::<Vec<_>>()})),
            };
            let meta = self.meta(&state.tenant_id).await?;
            if self.commit_audited(&state.tenant_id, meta.as_ref(), items, vec![event], now).await? {
                return Ok(amendment);
            }
            backoff(attempt).await;
        }
        Err(StoreError::Contention(format!("contract {cid}")))
    }

    /// Applies the contract's scheduled amendments that are due at `as_of`,
    /// oldest first: the code path the expiry sweep runs. An amendment whose
    /// clauses moved since it was made is rejected with the reason.
    pub async fn apply_due_amendments(&self, cid: &ContractId, as_of: DateTime<Utc>, run_id: &str) -> Result<Vec<Amendment>, StoreError> {
        let mut done = Vec::new();
        for due in self.scheduled_amendments(cid).await?.into_iter().filter(|a| a.effective_at.is_some_and(|t| t <= as_of)) {
            for attempt in 0..MAX_ATTEMPTS {
                let state = self.contract(cid).await?.ok_or_else(|| ApiError::not_found(&format!("contract {cid}")))?;
                let Some((mut amendment, hash)) = self.amendment(cid, &due.amendment_id).await? else { break };
                if amendment.status != AmendmentStatus::Scheduled {
                    break; // another run applied it
                }
                let cause = Cause::new(CauseKind::Sweep, run_id);
                let event = AuditEvent {
                    action: "amendment_applied".into(),
                    subject: format!("contract:{cid}"),
                    cause: cause.clone(),
                    rule: format!("amendment {} became effective at {}", amendment.amendment_id, amendment.effective_at.map(|t| t.to_rfc3339()).unwrap_or_default()),
                    before: Some(json!({"version": state.version})),
                    after: Some(json!({"version": state.version + 1, "changes": amendment.changes.iter().map(|c| c.summary.clone()).collect::<Vec<_>>()})),
                };
                match self.apply_stored(&state, &mut amendment, &hash, event, as_of).await? {
                    Ok(true) => {
                        done.push(amendment);
                        break;
                    }
                    Ok(false) => backoff(attempt).await,
                    Err(conflicts) => {
                        amendment.status = AmendmentStatus::Rejected;
                        amendment.note = Some(format!("not applied when due: clauses changed since it was made: {}", conflicts.join(", ")));
                        let event = AuditEvent {
                            action: "amendment_rejected".into(),
                            subject: format!("contract:{cid}"),
                            cause,
                            rule: amendment.note.clone().unwrap_or_default(),
                            before: Some(json!({"status": "scheduled"})),
                            after: Some(json!({"status": "rejected"})),
                        };
                        let meta = self.meta(&state.tenant_id).await?;
                        if self.commit_audited(&state.tenant_id, meta.as_ref(), vec![self.amendment_put(&amendment, &hash)], vec![event], as_of).await? {
                            done.push(amendment);
                            break;
                        }
                        backoff(attempt).await;
                    }
                }
            }
        }
        Ok(done)
    }
}
