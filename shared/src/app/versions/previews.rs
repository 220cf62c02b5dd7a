//! Previews: what moving tenants to a version (or to a candidate model)
//! would change, one tenant's members compared at a time; nothing of any
//! tenant is written.

use super::{create, outcome, Step};
use crate::app::ports::{ModelRegistry, Models, Tenants};
use crate::app::rules::rules;
use crate::app::Error;
use crate::core::ids::{ModelVersion, RunId, TenantId};
use crate::core::model::LicensingModel;
use crate::core::rejection::Rejection;
use crate::core::versions::{Outcome, OutcomeState, PreviewOf, PreviewPager, PreviewScan, RunKind, RunSpec, RunState, RunStatus, Selection};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::sync::Arc;

/// `POST /model/previews`: what moving the selected tenants to a version
/// (or to a candidate model, not deployed) would change; nothing of any
/// tenant is written. A candidate whose version is registered with other
/// rules is refused, as its deploy would be.
pub async fn start_preview<S: ModelRegistry + Models>(store: &S, of: PreviewOf, tenants: Selection, exclude: BTreeSet<TenantId>, by: &str, id: RunId, now: DateTime<Utc>) -> Result<RunState, Error> {
    let (to, candidate) = match of {
        PreviewOf::Version(v) => {
            store.rules(&v).await?.ok_or_else(|| Rejection::invalid("unknown_version", vec![format!("version: {v} is not registered (GET /model lists them)")]))?;
            (v, None)
        }
        PreviewOf::Candidate(model, text) => {
            if let Some(r) = store.registered().await?.into_iter().find(|r| r.version == model.version) {
                if r.fingerprint != model.fingerprint() {
                    return Err(crate::core::versions::conflict(&model.version, &r.fingerprint, &model.fingerprint()).into());
                }
            }
            (model.version.clone(), Some(text))
        }
    };
    let spec = RunSpec { id, kind: RunKind::Preview { to, candidate }, tenants, exclude, created_at: now, by: by.to_string() };
    create(store, spec).await
}

/// One tenant of a preview: every member read (a page at a time) and
/// compared with what the tenant's licenses and contracts give it under
/// the version previewed; the difference stored, nothing of the tenant written.
pub(super) async fn preview_one<S: Tenants + Models + ModelRegistry>(
    store: &S,
    run: &RunState,
    to: &ModelVersion,
    candidate: Option<Arc<LicensingModel>>,
    tenant: &TenantId,
    now: DateTime<Utc>,
) -> Result<Step, Error> {
    if run.status == RunStatus::Canceled || run.spec.exclude.contains(tenant) {
        return Ok(Step::Settled(outcome(tenant, OutcomeState::Skipped, None, Some("excluded".into()), now), false));
    }
    let model = match candidate {
        Some(m) => m,
        None => rules(store, to).await?,
    };
    let Some(head) = store.tenant_head(tenant).await? else {
        return Ok(Step::Settled(outcome(tenant, OutcomeState::Skipped, None, Some("no such tenant".into()), now), false));
    };
    // Two passes, a page at a time: the seats that move, then each
    // member's difference, stored a page at a time as they come.
    let rules = head.rules();
    let mut scan = PreviewScan::new(&model, &head.meta, &head.licenses, &rules);
    let mut after: Option<String> = None;
    loop {
        let (page, next) = store.members_page(tenant, after.as_deref(), PREVIEW_READ_PAGE).await?;
        scan.read(&page);
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let seats = scan.seats(&head.meta);
    let mut pager = PreviewPager::new(tenant, &head.meta.model_version, to, seats.tenant_before.clone(), seats.tenant_after.clone(), seats.seats_used_before, seats.seats_used_after);
    let mut after: Option<String> = None;
    loop {
        let (page, next) = store.members_page(tenant, after.as_deref(), PREVIEW_READ_PAGE).await?;
        let full = pager.push(seats.impacts(&page));
        if !full.is_empty() {
            store.put_preview(&run.spec.id, &full).await?;
        }
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let last = pager.finish(seats.tenant_changed());
    let totals = last.last().map(|p| p.totals.clone()).unwrap_or_default();
    store.put_preview(&run.spec.id, &last).await?;
    let changed = totals.members_changed;
    Ok(Step::Settled(Outcome { members_changed: changed, preview: Some(totals), ..outcome(tenant, OutcomeState::Done, Some(&head.meta.model_version), None, now) }, false))
}

/// Members a preview reads at once.
const PREVIEW_READ_PAGE: usize = 1000;
