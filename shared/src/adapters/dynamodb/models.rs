//! Licensing model versions in the state table: the registry (`MODEL`:
//! `HEAD` names the latest and the first version and counts them; `VER#<v>`
//! holds a version's fingerprint, text, first sighting and place), the
//! sparse `models` index of tenants by version (`META`'s `model_list`,
//! `V#<version>`, with its `tier`), and the rollouts and previews (`RUNS`,
//! the unfinished ones marked in `RUNS#ACTIVE`, each tenant's outcome and
//! preview pages in `RUN#<id>`).
//!
//! A version's rules never change, so a process keeps what it read
//! ([`Kept`]): the rules of each version once, the first version (what
//! tenants stored before versions were kept follow) once, the latest for a
//! few seconds.

use super::*;
use crate::app::ports::{ModelRegistry, Models, TenantPage};
use crate::core::ids::RunId;
use crate::core::versions::{Outcome, OutcomeState, PreviewPage, Registered, Registration, RunState};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{Put, TransactWriteItem, Update};
use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The tenant index of versions.
pub const MODELS_INDEX: &str = "models";
/// How long a process keeps the latest version before asking again.
const LATEST_KEPT: Duration = Duration::from_secs(5);

/// What a process keeps of the registry.
#[derive(Default)]
pub struct Kept {
    rules: Mutex<HashMap<ModelVersion, Arc<LicensingModel>>>,
    legacy: OnceLock<ModelVersion>,
    latest: Mutex<Option<(Instant, Arc<LicensingModel>)>>,
}

/// The registry's `HEAD`.
#[derive(Debug, Clone, Default)]
struct Head {
    latest: Option<ModelVersion>,
    first: Option<ModelVersion>,
    count: u64,
    /// `None`: the backfill is done.
    backfill: Option<Option<String>>,
}

pub(crate) fn model_list(v: &ModelVersion) -> String {
    format!("V#{v}")
}

fn registered_of(item: &Item, key: &str) -> Result<Registered, PortError> {
    let corrupt = |why: String| PortError::Corrupt { key: key.to_string(), why };
    Ok(Registered {
        version: ModelVersion::parse(get_s(item, "version").unwrap_or_default()).map_err(|e| corrupt(e.to_string()))?,
        fingerprint: get_s(item, "fingerprint").unwrap_or_default().to_string(),
        text: get_s(item, "text").unwrap_or_default().to_string(),
        first_seen: get_s(item, "first_seen").and_then(|t| t.parse().ok()).ok_or_else(|| corrupt("no first_seen".into()))?,
        seq: get_n(item, "seq").unwrap_or(0),
        rollout: json_attr(item, "rollout", key)?.unwrap_or_default(),
    })
}

fn run_of(item: &Item, key: &str) -> Result<RunState, PortError> {
    let mut run: RunState = required(item, "run", key)?;
    run.status = json_attr(item, "status", key)?.unwrap_or(run.status);
    run.cursor = json_attr(item, "cursor", key)?.unwrap_or_default();
    run.queued = get_n(item, "queued").unwrap_or(0);
    run.rev = get_n(item, "rev").unwrap_or(0);
    run.finished_at = get_s(item, "finished_at").and_then(|t| t.parse().ok());
    let c = &mut run.counts;
    c.done = get_n(item, "n_done").unwrap_or(0);
    c.waiting = get_n(item, "n_waiting").unwrap_or(0);
    c.skipped = get_n(item, "n_skipped").unwrap_or(0);
    c.failed = get_n(item, "n_failed").unwrap_or(0);
    c.members_changed = get_n(item, "n_members_changed").unwrap_or(0);
    let p = &mut c.preview;
    for (name, field) in preview_counters(p) {
        *field = get_n(item, name).unwrap_or(0);
    }
    Ok(run)
}

/// The stored counters of a preview's totals.
fn preview_counters(p: &mut crate::core::versions::PreviewTotals) -> [(&'static str, &mut u64); 9] {
    [
        ("p_tenants_read", &mut p.tenants_read),
        ("p_tenants_affected", &mut p.tenants_affected),
        ("p_members_changed", &mut p.members_changed),
        ("p_seats_gained", &mut p.seats_gained),
        ("p_seats_lost", &mut p.seats_lost),
        ("p_roles_gained", &mut p.roles_gained),
        ("p_roles_lost", &mut p.roles_lost),
        ("p_entitlements_gained", &mut p.entitlements_gained),
        ("p_entitlements_lost", &mut p.entitlements_lost),
    ]
}

impl Dynamo {
    fn registry_pk(&self) -> String {
        format!("{}MODEL", self.registry)
    }
    fn runs_pk(&self) -> String {
        format!("{}RUNS", self.registry)
    }
    fn active_pk(&self) -> String {
        format!("{}RUNS#ACTIVE", self.registry)
    }
    fn run_pk(&self, id: &RunId) -> String {
        format!("{}RUN#{id}", self.registry)
    }

    /// One transaction: the outcomes (each once: a new one, or one
    /// replacing a waiting one) and their sum added to the run's counts.
    /// Written first as if no tenant had an outcome yet; the outcomes held
    /// are read only when that is refused.
    async fn settle_chunk(&self, run: &RunId, outcomes: &[&Outcome]) -> Result<usize, PortError> {
        let name = |state: OutcomeState| match state {
            OutcomeState::Done => "n_done",
            OutcomeState::Waiting => "n_waiting",
            OutcomeState::Skipped => "n_skipped",
            OutcomeState::Failed => "n_failed",
        };
        let word = |state: OutcomeState| name(state).trim_start_matches("n_");
        let mut held: Option<HashMap<TenantId, OutcomeState>> = None;
        for attempt in 0..10 {
            let mut items = Vec::new();
            let mut sums: BTreeMap<&'static str, i64> = BTreeMap::new();
            let mut preview = crate::core::versions::PreviewTotals::default();
            for outcome in outcomes {
                let was_waiting = match held.as_ref().and_then(|h| h.get(&outcome.tenant_id)) {
                    Some(OutcomeState::Waiting) => true,
                    Some(_) => continue,
                    None => false,
                };
                let put = Put::builder()
                    .table_name(&self.state)
                    .item("pk", s(self.run_pk(run)))
                    .item("sk", s(format!("T#{}", outcome.tenant_id)))
                    .item("outcome", s(to_json(*outcome)))
                    .item("state", s(word(outcome.state)));
                let put = if was_waiting {
                    put.condition_expression("#s = :waiting").expression_attribute_names("#s", "state").expression_attribute_values(":waiting", s(word(OutcomeState::Waiting)))
                } else {
                    put.condition_expression("attribute_not_exists(pk)")
                };
                items.push(TransactWriteItem::builder().put(put.build().expect("table, item set")).build());
                *sums.entry("n_members_changed").or_default() += outcome.members_changed as i64;
                // Waiting again (another date): the counts stay.
                if !(was_waiting && outcome.state == OutcomeState::Waiting) {
                    *sums.entry(name(outcome.state)).or_default() += 1;
                    if was_waiting {
                        *sums.entry("n_waiting").or_default() -= 1;
                    }
                }
                if let Some(p) = &outcome.preview {
                    preview.add(p);
                }
            }
            if items.is_empty() {
                return Ok(0);
            }
            let settling = items.len();
            let mut update = Update::builder().table_name(&self.state).key("pk", s(self.runs_pk())).key("sk", s(run.as_str())).condition_expression("attribute_exists(pk)");
            let mut adds = Vec::new();
            for (name, value) in sums.iter().map(|(k, v)| (*k, *v)).chain(preview_counters(&mut preview).into_iter().map(|(k, v)| (k, *v as i64))) {
                if value != 0 || name == "n_members_changed" {
                    adds.push(format!("{name} :{name}"));
                    update = update.expression_attribute_values(format!(":{name}"), AttributeValue::N(value.to_string()));
                }
            }
            let update = update.update_expression(format!("ADD {}", adds.join(", "))).build().expect("key, expression set");
            items.push(TransactWriteItem::builder().update(update).build());
            match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                Ok(_) => return Ok(settling),
                Err(SdkError::ServiceError(e)) => match e.err() {
                    TransactWriteItemsError::TransactionCanceledException(c) => {
                        let reasons = c.cancellation_reasons();
                        let refused = |i: usize| reasons.get(i).is_some_and(|r| r.code() == Some("ConditionalCheckFailed"));
                        if refused(settling) {
                            // The run is gone: nothing of it to settle.
                            return Ok(0);
                        }
                        if (0..settling).any(refused) {
                            // Some tenant settled meanwhile: read what is held, and write the rest.
                            let tenants: Vec<TenantId> = outcomes.iter().map(|o| o.tenant_id.clone()).collect();
                            let found = self.outcomes_of(run, &tenants).await?;
                            held = Some(tenants.into_iter().zip(found).filter_map(|(t, o)| o.map(|o| (t, o.state))).collect());
                        } else {
                            // Another settlement of the run at the same moment.
                            crate::app::commit::backoff(attempt).await;
                        }
                    }
                    _ => return Err(failed("TransactWriteItems")(SdkError::ServiceError(e))),
                },
                Err(e) => return Err(failed("TransactWriteItems")(e)),
            }
        }
        Err(PortError::Corrupt { key: self.run_pk(run), why: "the outcomes could not be settled: the run kept changing".into() })
    }

    async fn head(&self, consistent: bool) -> Result<Option<Head>, PortError> {
        let out = self.client.get_item().table_name(&self.state).key("pk", s(self.registry_pk())).key("sk", s("HEAD")).consistent_read(consistent).send().await.map_err(failed("GetItem"))?;
        let Some(item) = out.item else { return Ok(None) };
        let version = |k: &str| get_s(&item, k).and_then(|v| ModelVersion::parse(v).ok());
        let backfill = match get_s(&item, "backfill") {
            Some("done") => None,
            Some(c) if c.starts_with('>') => Some(Some(c[1..].to_string())),
            _ => Some(None),
        };
        Ok(Some(Head { latest: version("latest"), first: version("first"), count: get_n(&item, "count").unwrap_or(0), backfill }))
    }

    /// The version tenants stored before versions were kept follow: the
    /// first registered (kept once known), the deployed one before any is.
    pub(crate) async fn legacy(&self) -> Result<ModelVersion, PortError> {
        if let Some(v) = self.models.legacy.get() {
            return Ok(v.clone());
        }
        let first = self.head(false).await?.and_then(|h| h.first).unwrap_or_else(|| self.deployed.version.clone());
        Ok(self.models.legacy.get_or_init(|| first).clone())
    }

    /// The latest registered version, read now (consistently): what a new
    /// tenant follows. The deployed one while none is registered.
    pub(crate) async fn latest_version_now(&self) -> Result<ModelVersion, PortError> {
        Ok(self.head(true).await?.and_then(|h| h.latest).unwrap_or_else(|| self.deployed.version.clone()))
    }

    async fn registered_version(&self, version: &ModelVersion) -> Result<Option<Registered>, PortError> {
        let key = format!("{}/VER#{version}", self.registry_pk());
        self.get(self.registry_pk(), format!("VER#{version}")).await?.map(|i| registered_of(&i, &key)).transpose()
    }
}

impl Models for Dynamo {
    async fn rules(&self, version: &ModelVersion) -> Result<Option<Arc<LicensingModel>>, PortError> {
        if let Some(m) = self.models.rules.lock().unwrap().get(version) {
            return Ok(Some(m.clone()));
        }
        let Some(r) = self.registered_version(version).await? else {
            // Not registered yet: the deployed model's own version is served
            // as deployed (its registration follows), no other.
            return Ok((version == &self.deployed.version).then(|| self.deployed.clone()));
        };
        let model = if r.version == self.deployed.version && r.fingerprint == self.deployed.fingerprint() {
            self.deployed.clone()
        } else {
            Arc::new(LicensingModel::from_toml(&r.text, &format!("registered model {version}")).map_err(|e| PortError::Corrupt { key: format!("model {version}"), why: e.to_string() })?)
        };
        self.models.rules.lock().unwrap().insert(version.clone(), model.clone());
        Ok(Some(model))
    }

    async fn latest(&self) -> Result<Arc<LicensingModel>, PortError> {
        if let Some((at, m)) = self.models.latest.lock().unwrap().clone() {
            if at.elapsed() < LATEST_KEPT {
                return Ok(m);
            }
        }
        let version = self.head(false).await?.and_then(|h| h.latest).unwrap_or_else(|| self.deployed.version.clone());
        let model = self.rules(&version).await?.ok_or_else(|| PortError::Corrupt { key: format!("model {version}"), why: "the latest version is not registered".into() })?;
        *self.models.latest.lock().unwrap() = Some((Instant::now(), model.clone()));
        Ok(model)
    }
}

impl ModelRegistry for Dynamo {
    /// One transaction: the version's item (if none exists) and `HEAD` (its
    /// count, if still what was read: two registrations at once take turns).
    async fn register(&self, model: &Registered) -> Result<Registration, PortError> {
        for _ in 0..10 {
            if let Some(r) = self.registered_version(&model.version).await? {
                return Ok(if r.fingerprint == model.fingerprint { Registration::Known } else { Registration::Conflict { registered: r.fingerprint } });
            }
            let head = self.head(true).await?.unwrap_or_default();
            let seq = head.count + 1;
            let put = Put::builder()
                .table_name(&self.state)
                .item("pk", s(self.registry_pk()))
                .item("sk", s(format!("VER#{}", model.version)))
                .item("version", s(model.version.as_str()))
                .item("fingerprint", s(&model.fingerprint))
                .item("text", s(&model.text))
                .item("first_seen", s(rfc3339(model.first_seen)))
                .item("seq", n(seq))
                .item("rollout", s(to_json(&model.rollout)))
                .condition_expression("attribute_not_exists(pk)");
            let mut head_update = Update::builder()
                .table_name(&self.state)
                .key("pk", s(self.registry_pk()))
                .key("sk", s("HEAD"))
                .update_expression("SET latest = :v, #c = :seq, #f = if_not_exists(#f, :v)")
                .expression_attribute_names("#c", "count")
                .expression_attribute_names("#f", "first")
                .expression_attribute_values(":v", s(model.version.as_str()))
                .expression_attribute_values(":seq", n(seq));
            head_update = if head.count == 0 {
                head_update.condition_expression("attribute_not_exists(#c)")
            } else {
                head_update.condition_expression("#c = :prev").expression_attribute_values(":prev", n(head.count))
            };
            let items =
                vec![TransactWriteItem::builder().put(put.build().expect("table, item set")).build(), TransactWriteItem::builder().update(head_update.build().expect("key, expression set")).build()];
            match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
                Ok(_) => return Ok(Registration::New { seq }),
                Err(e) if e.as_service_error().is_some_and(|e| e.is_transaction_canceled_exception()) => crate::app::commit::backoff(0).await,
                Err(e) => return Err(failed("TransactWriteItems")(e)),
            }
        }
        Err(PortError::Corrupt { key: self.registry_pk(), why: "the registry kept changing while registering".into() })
    }

    async fn registered(&self) -> Result<Vec<Registered>, PortError> {
        let pk = self.registry_pk();
        let mut out = self.query_partition(pk.clone(), "VER#").await?.iter().map(|i| registered_of(i, &format!("{pk}/{}", get_s(i, "sk").unwrap_or_default()))).collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    async fn tenants_following(&self, version: &ModelVersion, after: Option<&str>, limit: usize) -> Result<TenantPage, PortError> {
        let mut query = self
            .client
            .query()
            .table_name(&self.state)
            .index_name(MODELS_INDEX)
            .key_condition_expression("model_list = :v")
            .expression_attribute_values(":v", s(model_list(version)))
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX));
        if let Some(a) = after {
            query = query.exclusive_start_key("model_list", s(model_list(version))).exclusive_start_key("pk", s(a)).exclusive_start_key("sk", s("META"));
        }
        let out = query.send().await.map_err(failed("Query"))?;
        let tenants = out
            .items
            .unwrap_or_default()
            .iter()
            .filter_map(|i| get_s(i, "pk").and_then(|pk| pk.strip_prefix("T#")).and_then(|t| TenantId::parse(t).ok()).map(|t| (t, get_s(i, "tier").map(str::to_string))))
            .collect();
        let next = out.last_evaluated_key.filter(|k| !k.is_empty()).and_then(|k| get_s(&k, "pk").map(str::to_string));
        Ok(TenantPage { tenants, next })
    }

    async fn count_following(&self, version: &ModelVersion) -> Result<u64, PortError> {
        let mut count = 0u64;
        let mut start = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.state)
                .index_name(MODELS_INDEX)
                .key_condition_expression("model_list = :v")
                .expression_attribute_values(":v", s(model_list(version)))
                .select(aws_sdk_dynamodb::types::Select::Count)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(failed("Query"))?;
            count += out.count.max(0) as u64;
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(count),
            }
        }
    }

    /// A scan of the table's `META` items without a place in the index
    /// (once, after the first registration): each gets the first version
    /// and its place, unless it got a version meanwhile.
    async fn backfill(&self, first: &ModelVersion, after: Option<&str>, limit: usize) -> Result<(usize, Option<String>), PortError> {
        let mut scan = self
            .client
            .scan()
            .table_name(&self.state)
            .filter_expression("sk = :meta AND attribute_not_exists(model_list)")
            .expression_attribute_values(":meta", s("META"))
            .projection_expression("pk, sk, access")
            .limit(i32::try_from(limit.max(1)).unwrap_or(i32::MAX));
        if let Some(a) = after {
            let (pk, sk) = a.split_once('\u{1}').unwrap_or((a, "META"));
            scan = scan.exclusive_start_key("pk", s(pk)).exclusive_start_key("sk", s(sk));
        }
        let out = scan.send().await.map_err(failed("Scan"))?;
        let mut given = 0;
        for item in out.items.unwrap_or_default() {
            let Some(pk) = get_s(&item, "pk").filter(|pk| pk.starts_with("T#")) else { continue };
            let access: Option<crate::core::license::TenantAccess> = json_attr(&item, "access", pk)?;
            let mut update = self
                .client
                .update_item()
                .table_name(&self.state)
                .key("pk", s(pk))
                .key("sk", s("META"))
                .update_expression(if access.is_some() { "SET model_version = :v, model_list = :l, tier = :t" } else { "SET model_version = :v, model_list = :l" })
                .condition_expression("attribute_exists(pk) AND attribute_not_exists(model_list)")
                .expression_attribute_values(":v", s(first.as_str()))
                .expression_attribute_values(":l", s(model_list(first)));
            if let Some(a) = &access {
                update = update.expression_attribute_values(":t", s(&a.tier));
            }
            if condition_held("UpdateItem", update.send().await)? {
                given += 1;
            }
        }
        let next = out.last_evaluated_key.filter(|k| !k.is_empty()).map(|k| format!("{}\u{1}{}", get_s(&k, "pk").unwrap_or_default(), get_s(&k, "sk").unwrap_or_default()));
        Ok((given, next))
    }

    async fn backfill_cursor(&self) -> Result<Option<Option<String>>, PortError> {
        Ok(self.head(true).await?.and_then(|h| h.backfill))
    }

    async fn set_backfill_cursor(&self, cursor: Option<Option<String>>) -> Result<(), PortError> {
        let value = match cursor {
            None => "done".to_string(),
            Some(None) => "start".to_string(),
            Some(Some(c)) => format!(">{c}"),
        };
        self.client
            .update_item()
            .table_name(&self.state)
            .key("pk", s(self.registry_pk()))
            .key("sk", s("HEAD"))
            .update_expression("SET backfill = :b")
            .expression_attribute_values(":b", s(value))
            .send()
            .await
            .map_err(failed("UpdateItem"))?;
        Ok(())
    }

    async fn create_run(&self, run: &RunState) -> Result<bool, PortError> {
        let id = run.spec.id.as_str();
        let put = Put::builder()
            .table_name(&self.state)
            .item("pk", s(self.runs_pk()))
            .item("sk", s(id))
            .item("run", s(to_json(run)))
            .item("status", s(to_json(&run.status)))
            .item("rev", n(0))
            .item("created_at", s(rfc3339(run.spec.created_at)))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .expect("table, item set");
        let marker = Put::builder().table_name(&self.state).item("pk", s(self.active_pk())).item("sk", s(id)).build().expect("table, item set");
        let items = vec![TransactWriteItem::builder().put(put).build(), TransactWriteItem::builder().put(marker).build()];
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_transaction_canceled_exception()) => Ok(false),
            Err(e) => Err(failed("TransactWriteItems")(e)),
        }
    }

    async fn run(&self, id: &RunId) -> Result<Option<RunState>, PortError> {
        let key = format!("{}/{id}", self.runs_pk());
        self.get(self.runs_pk(), id.to_string()).await?.map(|i| run_of(&i, &key)).transpose()
    }

    /// The runs not finished (their markers), newest first; then the rest.
    async fn runs(&self) -> Result<Vec<RunState>, PortError> {
        let pk = self.runs_pk();
        let mut runs = self.query_partition(pk.clone(), "").await?.iter().map(|i| run_of(i, &format!("{pk}/{}", get_s(i, "sk").unwrap_or_default()))).collect::<Result<Vec<_>, _>>()?;
        runs.sort_by(|a, b| b.spec.created_at.cmp(&a.spec.created_at).then_with(|| b.spec.id.cmp(&a.spec.id)));
        Ok(runs)
    }

    /// Its control attributes on the condition of its revision; a run that
    /// finishes loses its marker in the same transaction.
    async fn advance_run(&self, run: &RunState) -> Result<bool, PortError> {
        let id = run.spec.id.as_str();
        let mut update = Update::builder()
            .table_name(&self.state)
            .key("pk", s(self.runs_pk()))
            .key("sk", s(id))
            .update_expression("SET #st = :st, #cu = :cu, queued = :q, rev = :next")
            .condition_expression("rev = :rev")
            .expression_attribute_names("#st", "status")
            .expression_attribute_names("#cu", "cursor")
            .expression_attribute_values(":st", s(to_json(&run.status)))
            .expression_attribute_values(":cu", s(to_json(&run.cursor)))
            .expression_attribute_values(":q", n(run.queued))
            .expression_attribute_values(":rev", n(run.rev))
            .expression_attribute_values(":next", n(run.rev + 1));
        if let Some(t) = run.finished_at {
            update = update.update_expression("SET #st = :st, #cu = :cu, queued = :q, rev = :next, finished_at = :f").expression_attribute_values(":f", s(rfc3339(t)));
        }
        let mut items = vec![TransactWriteItem::builder().update(update.build().expect("key, expression set")).build()];
        if run.status.finished() {
            let delete = aws_sdk_dynamodb::types::Delete::builder().table_name(&self.state).key("pk", s(self.active_pk())).key("sk", s(id)).build().expect("table, key set");
            items.push(TransactWriteItem::builder().delete(delete).build());
        }
        match self.client.transact_write_items().set_transact_items(Some(items)).send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_transaction_canceled_exception()) => Ok(false),
            Err(e) => Err(failed("TransactWriteItems")(e)),
        }
    }

    /// The outcome (unless the tenant has a final one; a waiting one is
    /// replaced) and the additions to the run's counts, in one transaction
    /// conditional on the outcome read: two settlements of one tenant add once.
    async fn settle(&self, run: &RunId, outcomes: &[Outcome]) -> Result<usize, PortError> {
        let mut seen = HashSet::new();
        let outcomes: Vec<&Outcome> = outcomes.iter().filter(|o| seen.insert(o.tenant_id.clone())).collect();
        let mut settled = 0;
        // A transaction holds 100 items: the outcomes and the run's counts.
        for chunk in outcomes.chunks(99) {
            settled += self.settle_chunk(run, chunk).await?;
        }
        Ok(settled)
    }

    async fn outcomes_of(&self, run: &RunId, tenants: &[TenantId]) -> Result<Vec<Option<Outcome>>, PortError> {
        let pk = self.run_pk(run);
        let mut found: HashMap<String, Outcome> = HashMap::new();
        for chunk in tenants.chunks(100) {
            let mut keys = aws_sdk_dynamodb::types::KeysAndAttributes::builder().consistent_read(true);
            for t in chunk {
                keys = keys.keys(HashMap::from([("pk".to_string(), s(&pk)), ("sk".to_string(), s(format!("T#{t}")))]));
            }
            let mut request = HashMap::from([(self.state.clone(), keys.build().expect("keys set"))]);
            while !request.is_empty() {
                let out = self.client.batch_get_item().set_request_items(Some(request)).send().await.map_err(failed("BatchGetItem"))?;
                for item in out.responses.unwrap_or_default().into_values().flatten() {
                    let sk = get_s(&item, "sk").unwrap_or_default().to_string();
                    if let Some(o) = json_attr::<Outcome>(&item, "outcome", &sk)? {
                        found.insert(sk, o);
                    }
                }
                request = out.unprocessed_keys.unwrap_or_default();
            }
        }
        Ok(tenants.iter().map(|t| found.remove(&format!("T#{t}"))).collect())
    }

    async fn outcomes(&self, run: &RunId, after: Option<&TenantId>, limit: usize) -> Result<(Vec<Outcome>, bool), PortError> {
        let pk = self.run_pk(run);
        let (items, next) = self.query_page(pk.clone(), "T#", after.map(|t| format!("T#{t}")), limit).await?;
        let outcomes = items.iter().map(|i| required::<Outcome>(i, "outcome", &format!("{pk}/{}", get_s(i, "sk").unwrap_or_default()))).collect::<Result<Vec<_>, _>>()?;
        Ok((outcomes, next.is_some()))
    }

    async fn put_preview(&self, run: &RunId, pages: &[PreviewPage]) -> Result<(), PortError> {
        for p in pages {
            self.client
                .put_item()
                .table_name(&self.state)
                .item("pk", s(self.run_pk(run)))
                .item("sk", s(format!("P#{}#{:06}", p.tenant_id, p.page)))
                .item("page", s(to_json(p)))
                .send()
                .await
                .map_err(failed("PutItem"))?;
        }
        Ok(())
    }

    async fn preview_page(&self, run: &RunId, tenant: &TenantId, page: u32) -> Result<Option<PreviewPage>, PortError> {
        let key = format!("{}/P#{tenant}#{page:06}", self.run_pk(run));
        self.get(self.run_pk(run), format!("P#{tenant}#{page:06}")).await?.map(|i| required(&i, "page", &key)).transpose()
    }
}
