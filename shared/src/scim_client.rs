//! A SCIM 2.0 client (RFC 7644) as real providers meet it: filter lookups
//! before create, adoption on 409 `uniqueness`, `PatchOp` for every change,
//! `If-Match` when the target offers ETags (re-read and retry on 412),
//! paged lists, and backoff with jitter on 429 and 5xx that honours
//! `Retry-After`. Decisions come from [`crate::scim`]; this module talks.

use crate::scim::{self, DesiredUser, ScimGroup, ScimUser, UserStep};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tries per request before the target counts as unavailable.
const TRIES: u32 = 4;
/// A `Retry-After` longer than this is not waited for in the function:
/// the target is retried on a later run instead.
const MAX_WAIT: Duration = Duration::from_secs(10);
/// Re-reads after a 412 or a vanished user before giving up on a member.
const CONFLICT_TRIES: u32 = 4;
const PAGE: usize = 100;
const CONTENT_TYPE: &str = "application/scim+json";

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target as a whole is not serving (down, overloaded, refusing our
    /// token): counts towards quarantine.
    #[error("target unavailable: {reason}")]
    Unavailable { reason: String, retry_after: Option<Duration> },
    /// The target refused this request (a 4xx about the data): the member's
    /// delivery is held with the reason; the target is fine.
    #[error("target refused {what}: HTTP {status} {detail}")]
    Refused { what: String, status: u16, detail: String },
}

/// A response worth reading: status, ETag and JSON body.
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: Value,
}

/// What one member's sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncOutcome {
    pub created: bool,
    pub adopted: bool,
    pub patched: bool,
    pub deleted: bool,
    pub joined: Vec<String>,
    pub left: Vec<String>,
    /// 412 answers met (and resolved by re-reading).
    pub conflicts: u32,
}

impl SyncOutcome {
    pub fn changed(&self) -> bool {
        self.created || self.adopted || self.patched || self.deleted || !self.joined.is_empty() || !self.left.is_empty()
    }
}

/// What the target held for a member, when the caller already knows it
/// (drift repair lists everything first). It may be stale: a 412 re-reads.
#[derive(Debug, Clone)]
pub struct Known {
    pub user: Option<ScimUser>,
    pub member_of: BTreeSet<String>,
}

pub struct ScimClient {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Group display name -> id, learnt during this client's life.
    groups: Mutex<BTreeMap<String, String>>,
    /// No request runs past this instant (the function's own deadline).
    deadline: Option<Instant>,
}

impl std::fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScimClient").field("base", &self.base).field("token", &"<redacted>").finish()
    }
}

/// Makes rustls use the aws-lc-rs provider the AWS SDK already builds. Call
/// before building any `reqwest::Client` in a process (idempotent).
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// One HTTP client per process: TLS through rustls with the aws-lc-rs
/// provider, and the platform's roots.
pub fn http_client() -> reqwest::Client {
    install_tls_provider();
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client with a crypto provider builds")
}

fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

impl ScimClient {
    pub fn new(http: reqwest::Client, base: &str, token: String) -> Self {
        ScimClient { http, base: base.trim().trim_end_matches('/').to_string(), token, groups: Mutex::new(BTreeMap::new()), deadline: None }
    }

    /// Bounds every request (and every wait between tries) by `deadline`.
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Time left for one request: the per-request timeout, or less near the deadline.
    fn time_left(&self) -> Option<Duration> {
        let per_request = Duration::from_secs(10);
        match self.deadline {
            None => Some(per_request),
            Some(d) => Some(d.checked_duration_since(Instant::now())?.min(per_request)).filter(|t| *t >= Duration::from_millis(200)),
        }
    }

    /// Sends a request, retrying on connection failures, 429 and 5xx.
    /// Other answers (2xx, 4xx) go back to the caller.
    async fn send(&self, method: Method, path: &str, query: &[(&str, String)], body: Option<&Value>, if_match: Option<&str>) -> Result<Answer, TargetError> {
        let url = format!("{}{path}", self.base);
        let mut last = String::new();
        for attempt in 0..TRIES {
            let Some(timeout) = self.time_left() else {
                return Err(TargetError::Unavailable { reason: format!("{method} {path}: no time left in this run{}", if last.is_empty() { String::new() } else { format!(" (last: {last})") }), retry_after: None });
            };
            let mut req = self.http.request(method.clone(), &url).bearer_auth(&self.token).header("Accept", CONTENT_TYPE).query(query).timeout(timeout);
            if let Some(b) = body {
                req = req.header("Content-Type", CONTENT_TYPE).body(b.to_string());
            }
            if let Some(tag) = if_match {
                req = req.header("If-Match", tag);
            }
            let retry_after = match req.send().await {
                Ok(res) => {
                    let status = res.status();
                    let header = |h: &str| res.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
                    let retry_after = header("retry-after").and_then(|r| scim::parse_retry_after(&r, chrono::Utc::now()));
                    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                        return Err(TargetError::Unavailable { reason: format!("{method} {path}: HTTP {status}: the target refuses the token"), retry_after: None });
                    }
                    if status != StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
                        let etag = header("etag");
                        let text = res.text().await.unwrap_or_default();
                        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
                        return Ok(Answer { status, etag, body });
                    }
                    last = format!("{method} {path}: HTTP {status}");
                    if retry_after.is_some_and(|r| r > MAX_WAIT) {
                        return Err(TargetError::Unavailable { reason: last, retry_after });
                    }
                    retry_after
                }
                Err(e) => {
                    // Connection refused, timeouts: the target is not there.
                    last = format!("{method} {path}: {}", if e.is_timeout() { "timed out" } else if e.is_connect() { "cannot connect" } else { "request failed" });
                    None
                }
            };
            if attempt + 1 < TRIES {
                let wait = scim::retry_delay(attempt, retry_after, jitter());
                if self.deadline.is_some_and(|d| Instant::now() + wait > d) {
                    break; // no time to wait for the next try in this run
                }
                tokio::time::sleep(wait).await;
            }
        }
        Err(TargetError::Unavailable { reason: last, retry_after: None })
    }

    fn refused(what: impl Into<String>, a: &Answer) -> TargetError {
        let detail = a.body["detail"].as_str().map(str::to_string).unwrap_or_else(|| a.body.to_string().chars().take(200).collect());
        TargetError::Refused { what: what.into(), status: a.status.as_u16(), detail }
    }

    fn expect_ok(what: &str, a: Answer) -> Result<Answer, TargetError> {
        if a.status.is_success() {
            Ok(a)
        } else {
            Err(Self::refused(what, &a))
        }
    }

    /// Every resource of a list query, page by page (`startIndex`, `count`).
    async fn list(&self, path: &str, filter: Option<String>, attributes: Option<&str>) -> Result<Vec<Value>, TargetError> {
        let mut out = Vec::new();
        let mut start = 1usize;
        loop {
            let mut query = vec![("startIndex", start.to_string()), ("count", PAGE.to_string())];
            if let Some(f) = &filter {
                query.push(("filter", f.clone()));
            }
            if let Some(a) = attributes {
                query.push(("attributes", a.to_string()));
            }
            let a = self.send(Method::GET, path, &query, None, None).await?;
            if a.status == StatusCode::NOT_FOUND {
                // The collection itself is missing: the target is misplaced, not the member.
                return Err(TargetError::Unavailable { reason: format!("GET {path}: HTTP 404: no such endpoint (is base_url right?)"), retry_after: None });
            }
            let a = Self::expect_ok(&format!("listing {path}"), a)?;
            let page = a.body["Resources"].as_array().cloned().unwrap_or_default();
            let total = a.body["totalResults"].as_u64().unwrap_or(0) as usize;
            let got = page.len();
            out.extend(page);
            start += got;
            if got == 0 || start > total {
                return Ok(out);
            }
        }
    }

    pub async fn users(&self) -> Result<Vec<ScimUser>, TargetError> {
        Ok(self.list("/Users", None, None).await?.iter().filter_map(ScimUser::from_json).collect())
    }

    pub async fn groups(&self) -> Result<Vec<ScimGroup>, TargetError> {
        let groups: Vec<ScimGroup> = self.list("/Groups", None, Some("displayName,members")).await?.iter().filter_map(ScimGroup::from_json).collect();
        let mut known = self.groups.lock().expect("not poisoned");
        for g in &groups {
            known.insert(g.name.clone(), g.id.clone());
        }
        Ok(groups)
    }

    async fn find_by(&self, attr: &str, value: &str) -> Result<Option<ScimUser>, TargetError> {
        let found = self.list("/Users", Some(scim::filter_eq(attr, value)), None).await?;
        Ok(found.iter().find_map(ScimUser::from_json))
    }

    /// The member's user: by `externalId`, else by `userName`.
    pub async fn find_user(&self, desired: &DesiredUser) -> Result<Option<ScimUser>, TargetError> {
        match self.find_by("externalId", desired.user_id.as_str()).await? {
            Some(u) => Ok(Some(u)),
            None => self.find_by("userName", &desired.user_name).await,
        }
    }

    /// Names of the groups a user is in (among all groups).
    pub async fn member_of(&self, scim_id: &str) -> Result<BTreeSet<String>, TargetError> {
        let filter = format!("members[value eq {}]", scim::quoted(scim_id));
        let groups = self.list("/Groups", Some(filter), Some("displayName")).await?;
        Ok(groups.iter().filter_map(|g| g["displayName"].as_str().map(str::to_string)).collect())
    }

    /// The id of a group by name, created when missing and `create` is set.
    async fn group_id(&self, name: &str, create: bool) -> Result<Option<String>, TargetError> {
        if let Some(id) = self.groups.lock().expect("not poisoned").get(name) {
            return Ok(Some(id.clone()));
        }
        let found = self.list("/Groups", Some(scim::filter_eq("displayName", name)), Some("displayName")).await?;
        let id = match found.iter().find_map(|g| g["id"].as_str().map(str::to_string)) {
            Some(id) => Some(id),
            None if create => {
                let body = serde_json::json!({"schemas": [scim::GROUP_SCHEMA], "displayName": name});
                let a = self.send(Method::POST, "/Groups", &[], Some(&body), None).await?;
                if a.status == StatusCode::CONFLICT {
                    // Created meanwhile by someone else: use theirs.
                    let again = self.list("/Groups", Some(scim::filter_eq("displayName", name)), Some("displayName")).await?;
                    again.iter().find_map(|g| g["id"].as_str().map(str::to_string))
                } else {
                    Self::expect_ok(&format!("creating group {name}"), a)?.body["id"].as_str().map(str::to_string)
                }
            }
            None => None,
        };
        if let Some(id) = &id {
            self.groups.lock().expect("not poisoned").insert(name.to_string(), id.clone());
        }
        Ok(id)
    }

    /// Group membership changes are `PatchOp`s naming the one member, which
    /// commute with anyone else's; no `If-Match`, so that a busy group does
    /// not turn every change into a 412.
    async fn patch_group(&self, name: &str, op: Value) -> Result<bool, TargetError> {
        let add = op["op"] == "add";
        let Some(id) = self.group_id(name, add).await? else { return Ok(false) };
        if self.patch_group_id(&id, &op, name).await? {
            return Ok(true);
        }
        // Deleted behind our back: forget it, and recreate it to add.
        self.groups.lock().expect("not poisoned").remove(name);
        if !add {
            return Ok(false);
        }
        let Some(id) = self.group_id(name, true).await? else { return Ok(false) };
        if !self.patch_group_id(&id, &op, name).await? {
            return Err(TargetError::Refused { what: format!("changing members of group {name}"), status: 404, detail: "the group vanished again".into() });
        }
        Ok(true)
    }

    /// One membership `PatchOp` on a group by id; false when the group is gone.
    async fn patch_group_id(&self, id: &str, op: &Value, name: &str) -> Result<bool, TargetError> {
        let a = self.send(Method::PATCH, &format!("/Groups/{id}"), &[], Some(&scim::patch_body(vec![op.clone()])), None).await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        Self::expect_ok(&format!("changing members of group {name}"), a)?;
        Ok(true)
    }

    pub async fn remove_from_group(&self, group_id: &str, group: &str, scim_id: &str) -> Result<(), TargetError> {
        self.patch_group_id(group_id, &scim::remove_member_op(scim_id), group).await.map(|_| ())
    }

    /// Makes the target hold what `desired` says for one member: its user
    /// (found, created or adopted, patched, or deleted) and its membership
    /// of the managed groups. Safe to repeat: every step reads first.
    pub async fn sync_member(&self, desired: &DesiredUser, managed: &BTreeSet<String>, known: Option<Known>) -> Result<SyncOutcome, TargetError> {
        let mut out = SyncOutcome::default();
        let mut known = known;
        let what = |w: &str| format!("{w} user {}", desired.user_id);
        for _ in 0..CONFLICT_TRIES {
            let (user, member_of) = match known.take() {
                Some(k) => (k.user, Some(k.member_of)),
                None => (self.find_user(desired).await?, None),
            };
            let user = match scim::user_step(desired, user.as_ref()) {
                UserStep::Nothing => user,
                UserStep::Create(body) => {
                    let a = self.send(Method::POST, "/Users", &[], Some(&body), None).await?;
                    if a.status == StatusCode::CONFLICT {
                        // The userName is taken: a user made before Entitle
                        // managed this target. Adopt it (the next pass patches it).
                        match self.find_by("userName", &desired.user_name).await? {
                            Some(existing) => {
                                out.adopted = true;
                                let member_of = self.member_of(&existing.id).await?;
                                known = Some(Known { user: Some(existing), member_of });
                                continue;
                            }
                            None => return Err(Self::refused(what("creating"), &a)),
                        }
                    }
                    let a = Self::expect_ok(&what("creating"), a)?;
                    out.created = true;
                    let mut created = ScimUser::from_json(&a.body).ok_or_else(|| TargetError::Refused { what: what("creating"), status: a.status.as_u16(), detail: "no user in the answer".into() })?;
                    created.version = created.version.or(a.etag);
                    Some(created)
                }
                UserStep::Patch(ops) => {
                    let u = user.expect("a patch has a user");
                    let a = self.send(Method::PATCH, &format!("/Users/{}", u.id), &[], Some(&scim::patch_body(ops)), u.version.as_deref()).await?;
                    if a.status == StatusCode::PRECONDITION_FAILED || a.status == StatusCode::NOT_FOUND {
                        // Changed (or deleted) since we read it: read again, decide again.
                        out.conflicts += u32::from(a.status == StatusCode::PRECONDITION_FAILED);
                        continue;
                    }
                    Self::expect_ok(&what("updating"), a)?;
                    out.patched = true;
                    Some(u)
                }
                UserStep::Delete => {
                    let u = user.expect("a delete has a user");
                    // Leave the groups first: not every target cleans up
                    // the memberships of a deleted user.
                    let member_of = match member_of {
                        Some(m) => m,
                        None => self.member_of(&u.id).await?,
                    };
                    for g in member_of.iter().filter(|g| managed.contains(*g)) {
                        self.patch_group(g, scim::remove_member_op(&u.id)).await?;
                    }
                    let a = self.send(Method::DELETE, &format!("/Users/{}", u.id), &[], None, u.version.as_deref()).await?;
                    if a.status == StatusCode::PRECONDITION_FAILED {
                        out.conflicts += 1;
                        continue;
                    }
                    if a.status != StatusCode::NOT_FOUND {
                        Self::expect_ok(&what("deleting"), a)?;
                    }
                    out.deleted = true;
                    return Ok(out);
                }
            };
            let Some(user) = user else { return Ok(out) };
            let member_of = match member_of {
                _ if out.created => BTreeSet::new(),
                Some(m) => m,
                None => self.member_of(&user.id).await?,
            };
            let (join, leave) = scim::group_changes(desired, &member_of, managed);
            for g in join {
                self.patch_group(&g, scim::add_member_op(&user.id)).await?;
                out.joined.push(g);
            }
            for g in leave {
                if self.patch_group(&g, scim::remove_member_op(&user.id)).await? {
                    out.left.push(g);
                }
            }
            return Ok(out);
        }
        Err(TargetError::Refused { what: what("updating"), status: 412, detail: format!("still changing after {CONFLICT_TRIES} re-reads") })
    }
}
