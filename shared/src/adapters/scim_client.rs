//! A SCIM 2.0 client (RFC 7644) as real providers meet it: filter lookups
//! before create, adoption on 409 `uniqueness`, `PatchOp` for every change,
//! `If-Match` when the target offers ETags (re-read and retry on 412),
//! paged lists, and backoff with jitter on 429 and 5xx that honours
//! `Retry-After`. Decisions come from [`crate::core::scim`]; this module talks.
//!
//! A target is untrusted: every answer is read up to [`MAX_ANSWER_BYTES`],
//! a client reads at most its byte budget in all and [`MAX_PAGES`] pages
//! per list, never more items than [`MAX_LIST_ITEMS`] whatever
//! `totalResults` claims, and no request runs past the client's deadline
//! (the target's time budget in this run). In production every address a
//! target's name resolves to must be public ([`PublicOnly`]); what a target
//! answers is shown back only as a short, sanitised SCIM error detail.

use crate::app::ports::{Directory, DirectorySession};
use crate::core::egress::{EgressPolicy, NoPublicAddress};
use crate::core::scim::{
    self, DesiredUser, GroupChange, Known, MemberOf, Membership, Paging, PatchKind, PatchOp, Profile, ProfileName, ScimGroup, ScimUser, SyncOutcome, Target, TargetError, UserStep, Window,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
/// Every request names its sender (GitHub refuses requests without one).
const USER_AGENT: &str = concat!("Entitle/", env!("CARGO_PKG_VERSION"), " (SCIM client)");
/// A wait for a rate limit this short is waited for in the run; a longer
/// one ends the run (paced: later runs go on).
const MAX_PACE_WAIT: Duration = Duration::from_secs(2);
/// Membership changes of one group per request.
pub const GROUP_BATCH: usize = 100;
/// Members the first removal request to a target names, before its answers
/// tell more: small enough for a group of tens of thousands within the
/// request timeout; quick answers double it.
pub const FIRST_REMOVALS: usize = 25;
/// The largest answer read from a target (a page of 100 users is some
/// 50 KB; a group of 10,000 members with `members` about 1.5 MB).
pub const MAX_ANSWER_BYTES: usize = 8 << 20;
/// Pages per list: 500 pages of 100.
pub const MAX_PAGES: usize = 500;
/// Users or groups a list may hold (drift repair of a larger target is refused).
pub const MAX_LIST_ITEMS: usize = MAX_PAGES * PAGE;
/// Bytes a client reads in all (one target, one run) unless told otherwise.
pub const DEFAULT_READ_BUDGET: usize = 48 << 20;

/// A response worth reading: status, ETag and JSON body (`Null` when the
/// body is empty or not JSON), and how long the body was.
struct Answer {
    status: StatusCode,
    etag: Option<String>,
    body: Value,
    len: usize,
}

pub struct ScimClient {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Group display name -> id, learnt during this client's life.
    groups: Mutex<BTreeMap<String, String>>,
    /// The members of managed groups (display name -> SCIM user ids), each
    /// read once in this client's life and kept up to date with its own
    /// changes; see [`ScimClient::managed_member_of`].
    rosters: Mutex<BTreeMap<String, BTreeSet<String>>>,
    /// Set once a roster could not be read whole: searches instead.
    no_rosters: AtomicBool,
    /// Managed groups listed without members that the target did not
    /// confirm empty: whether a user is in one is unknown.
    unconfirmed: Mutex<BTreeSet<String>>,
    /// Members the next removal request of a group names
    /// ([`scim::next_removal_batch`]): learnt from the target's answers and
    /// shared by this process's clients of the same target, so that a run
    /// starts where the last one ended.
    removals_per_request: Arc<AtomicUsize>,
    /// The most it may grow to in this client's life: half of a size the
    /// target failed at.
    removals_ceiling: AtomicUsize,
    /// No request runs past this instant (the target's budget in this run).
    deadline: Option<Instant>,
    /// Bytes this client may still read from the target.
    read_budget: AtomicUsize,
    egress: EgressPolicy,
    /// What the target can do.
    profile: Profile,
    /// The target's rate limits as this process spends them (shared by the
    /// process's clients of the same target).
    pace: Arc<Mutex<Pace>>,
    /// Why the target's member lists are not trusted in this client's life,
    /// if they are not (see [`ScimClient::contradiction`]).
    contradiction: Mutex<Option<String>>,
    /// A roster was read and agreed with the target's other answers.
    rosters_checked: AtomicBool,
}

/// A target's documented rate limits: writes a minute, user creations an hour.
/// A request as a target's documented rate limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Read,
    Write,
    /// A write that creates a user (some targets limit these per hour).
    UserCreation,
}

impl RequestKind {
    /// A read or a write, by its method (a user creation is named by its caller).
    fn of(method: &Method) -> Self {
        if method == Method::GET {
            RequestKind::Read
        } else {
            RequestKind::Write
        }
    }
}

/// One request to a target, as [`ScimClient::exchange`] sends it.
struct Call<'a> {
    kind: RequestKind,
    method: Method,
    path: &'a str,
    query: &'a [(&'a str, String)],
    body: Option<&'a Value>,
    if_match: Option<&'a str>,
    tries: u32,
}

#[derive(Debug, Default)]
pub struct Pace {
    writes: Option<Window>,
    creations: Option<Window>,
}

impl Pace {
    pub fn of(profile: &Profile) -> Self {
        Pace { writes: profile.writes_per_minute.map(|n| Window::new(n, Duration::from_secs(60))), creations: profile.creations_per_hour.map(|n| Window::new(n, Duration::from_secs(3600))) }
    }
    /// Takes a write (a user creation) now, or says how long until one may go;
    /// a read is not counted. (A write refused for the creations' limit
    /// still counts as a write: the error is on the side of sending less.)
    fn admit(&mut self, kind: RequestKind, now: Instant) -> Result<(), Duration> {
        if kind == RequestKind::Read {
            return Ok(());
        }
        if let Some(w) = self.writes.as_mut() {
            w.admit(now)?;
        }
        match self.creations.as_mut() {
            Some(w) if kind == RequestKind::UserCreation => w.admit(now),
            _ => Ok(()),
        }
    }
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
/// provider, and the platform's roots; no redirects and no proxy (either
/// would take a request somewhere the checks did not look). Under
/// [`EgressPolicy::Public`] names resolve through [`PublicOnly`].
pub fn http_client(egress: EgressPolicy) -> reqwest::Client {
    install_tls_provider();
    let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(3)).timeout(Duration::from_secs(10)).redirect(reqwest::redirect::Policy::none()).no_proxy();
    let builder = match egress {
        EgressPolicy::Public => builder.dns_resolver(Arc::new(PublicOnly)),
        EgressPolicy::Local => builder,
    };
    builder.build().expect("a client with a crypto provider builds")
}

/// Resolves names as the system does, then keeps only public addresses
/// ([`crate::core::egress::is_public`]): checked when the connection is made, so
/// a name that passed validation and resolves to `127.0.0.1` or the
/// metadata service later (DNS rebinding) still cannot be reached.
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.iter().copied().filter(|a| crate::core::egress::is_public(a.ip())).collect();
            if public.is_empty() {
                let err: Box<dyn std::error::Error + Send + Sync> = Box::new(NoPublicAddress { host, non_public: all.len() });
                return Err(err);
            }
            let addrs: reqwest::dns::Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The reason [`PublicOnly`] gave, when it is what failed a request.
fn refused_by_egress(e: &reqwest::Error) -> Option<&NoPublicAddress> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(refused) = err.downcast_ref::<NoPublicAddress>() {
            return Some(refused);
        }
        cur = err.source();
    }
    None
}

fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

impl ScimClient {
    /// A client for one target. `egress` must be the policy `http` was built with.
    pub fn new(http: reqwest::Client, base: &str, token: String, egress: EgressPolicy) -> Self {
        ScimClient {
            http,
            base: base.trim().trim_end_matches('/').to_string(),
            token,
            groups: Mutex::new(BTreeMap::new()),
            rosters: Mutex::new(BTreeMap::new()),
            no_rosters: AtomicBool::new(false),
            unconfirmed: Mutex::new(BTreeSet::new()),
            removals_per_request: Arc::new(AtomicUsize::new(FIRST_REMOVALS)),
            removals_ceiling: AtomicUsize::new(GROUP_BATCH),
            deadline: None,
            read_budget: AtomicUsize::new(DEFAULT_READ_BUDGET),
            egress,
            profile: ProfileName::Generic.profile(),
            pace: Arc::default(),
            contradiction: Mutex::new(None),
            rosters_checked: AtomicBool::new(false),
        }
    }

    /// Behaves as a target of this profile, its rate limits spent from
    /// `pace` (shared with the process's other clients of the target).
    pub fn with_profile(mut self, profile: Profile, pace: Arc<Mutex<Pace>>) -> Self {
        self.removals_ceiling = AtomicUsize::new(GROUP_BATCH.min(profile.changes_per_request));
        self.profile = profile;
        self.pace = pace;
        self
    }

    /// Why this client stopped trusting the target's member lists: a
    /// managed group listed empty that the target then says has members (or
    /// cannot say it has none). Each member's groups are enforced instead.
    pub fn contradiction(&self) -> Option<String> {
        self.contradiction.lock().expect("not poisoned").clone()
    }

    /// Whether this client read rosters that agreed with the target: read,
    /// not contradicted, and none left unconfirmed.
    pub fn rosters_agreed(&self) -> bool {
        self.rosters_checked.load(Ordering::SeqCst) && self.contradiction().is_none() && self.unconfirmed.lock().expect("not poisoned").is_empty()
    }

    /// How this client learns a user's groups: from its profile, unless the
    /// target contradicted it.
    fn membership(&self) -> Membership {
        match self.profile.membership {
            Membership::Listed if self.contradiction().is_some() => Membership::Unknown,
            m => m,
        }
    }

    /// Bounds what this client reads from the target in all.
    pub fn with_read_budget(self, bytes: usize) -> Self {
        self.read_budget.store(bytes, Ordering::SeqCst);
        self
    }

    /// Takes `n` bytes from the read budget, or fails when it is spent.
    fn spend(&self, n: usize, what: &str) -> Result<(), TargetError> {
        match self.read_budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(n)) {
            Ok(_) => Ok(()),
            Err(_) => Err(TargetError::Unavailable { reason: format!("{what}: the target's answers exceed its read budget for this run"), retry_after: None }),
        }
    }

    /// Reads an answer's body, at most [`MAX_ANSWER_BYTES`] and within the
    /// read budget, chunk by chunk (a target that sends forever is cut off).
    async fn read_body(&self, mut res: reqwest::Response, what: &str) -> Result<Vec<u8>, TargetError> {
        if res.content_length().is_some_and(|l| l > MAX_ANSWER_BYTES as u64) {
            return Err(TargetError::Unavailable { reason: format!("{what}: the answer is larger than {MAX_ANSWER_BYTES} bytes"), retry_after: None });
        }
        let mut body = Vec::new();
        loop {
            let chunk = match res.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return Ok(body),
                Err(e) => {
                    let why = if e.is_timeout() { "timed out reading the answer" } else { "the answer broke off" };
                    return Err(TargetError::Unavailable { reason: format!("{what}: {why}"), retry_after: None });
                }
            };
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(TargetError::Unavailable { reason: format!("{what}: the answer is larger than {MAX_ANSWER_BYTES} bytes"), retry_after: None });
            }
            self.spend(chunk.len(), what)?;
            body.extend_from_slice(&chunk);
        }
    }

    /// Under [`EgressPolicy::Public`], an address in the URL itself is
    /// checked here (the resolver only sees names).
    fn check_literal_address(&self, url: &str, what: &str) -> Result<(), TargetError> {
        if self.egress == EgressPolicy::Local {
            return Ok(());
        }
        let host = reqwest::Url::parse(url).ok().and_then(|u| u.host().map(|h| h.to_owned()));
        let ip = match host {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        match ip {
            Some(ip) if !crate::core::egress::is_public(ip) => Err(TargetError::Unavailable { reason: format!("{what}: {ip} is not a public address (refused)"), retry_after: None }),
            _ => Ok(()),
        }
    }

    /// Bounds every request (and every wait between tries) by `deadline`.
    /// Sizes removal requests as `learnt` says (and teaches it), shared
    /// with other clients of the same target.
    pub fn with_removal_sizing(mut self, learnt: Arc<AtomicUsize>) -> Self {
        self.removals_per_request = learnt;
        self
    }

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
        self.send_tries(method, path, query, body, if_match, TRIES).await
    }

    /// [`ScimClient::send`], tried at most `tries` times.
    async fn send_tries(&self, method: Method, path: &str, query: &[(&str, String)], body: Option<&Value>, if_match: Option<&str>, tries: u32) -> Result<Answer, TargetError> {
        self.exchange(Call { kind: RequestKind::of(&method), method, path, query, body, if_match, tries }).await
    }

    /// One request, paced as its kind is by the target's profile.
    async fn exchange(&self, call: Call<'_>) -> Result<Answer, TargetError> {
        let Call { kind, method, path, query, body, if_match, tries } = call;
        let url = format!("{}{path}", self.base);
        self.check_literal_address(&url, &format!("{method} {path}"))?;
        self.paced(kind, &format!("{method} {path}")).await?;
        let mut last = String::new();
        for attempt in 0..tries {
            let Some(timeout) = self.time_left() else {
                return Err(TargetError::Unavailable {
                    reason: format!("{method} {path}: no time left in this run{}", if last.is_empty() { String::new() } else { format!(" (last: {last})") }),
                    retry_after: None,
                });
            };
            let mut req = self.http.request(method.clone(), &url).bearer_auth(&self.token).header("Accept", CONTENT_TYPE).header("User-Agent", USER_AGENT).query(query).timeout(timeout);
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
                        let raw = self.read_body(res, &format!("{method} {path}")).await?;
                        let body = if raw.is_empty() { Value::Null } else { serde_json::from_slice(&raw).unwrap_or(Value::Null) };
                        return Ok(Answer { status, etag, body, len: raw.len() });
                    }
                    last = format!("{method} {path}: HTTP {status}");
                    if retry_after.is_some_and(|r| r > MAX_WAIT) {
                        return Err(TargetError::Unavailable { reason: last, retry_after });
                    }
                    retry_after
                }
                Err(e) => {
                    // Connection refused, timeouts, a name with no public
                    // address: the target is not there for us.
                    last = match refused_by_egress(&e) {
                        Some(why) => return Err(TargetError::Unavailable { reason: format!("{method} {path}: {why}"), retry_after: None }),
                        None => format!(
                            "{method} {path}: {}",
                            if e.is_timeout() {
                                "timed out"
                            } else if e.is_connect() {
                                "cannot connect"
                            } else {
                                "request failed"
                            }
                        ),
                    };
                    None
                }
            };
            if attempt + 1 < tries {
                let wait = scim::retry_delay(attempt, retry_after, jitter());
                if self.deadline.is_some_and(|d| Instant::now() + wait > d) {
                    break; // no time to wait for the next try in this run
                }
                tokio::time::sleep(wait).await;
            }
        }
        Err(TargetError::Unavailable { reason: last, retry_after: None })
    }

    /// Waits for the target's rate limit to admit a write, if it does soon;
    /// otherwise the run is paced (it ends here; a later run goes on).
    async fn paced(&self, kind: RequestKind, what: &str) -> Result<(), TargetError> {
        loop {
            let admitted = self.pace.lock().expect("not poisoned").admit(kind, Instant::now());
            match admitted {
                Ok(()) => return Ok(()),
                Err(wait) if wait <= MAX_PACE_WAIT && self.deadline.is_none_or(|d| Instant::now() + wait < d) => tokio::time::sleep(wait).await,
                Err(wait) => {
                    return Err(TargetError::Paced { reason: format!("{what}: the {} profile's rate limit admits the next write in {} s", self.profile.name.as_str(), wait.as_secs().max(1)) });
                }
            }
        }
    }

    /// What the target refused, with a sanitised excerpt of its answer
    /// ([`crate::core::egress::excerpt`]): nothing else it sent is reflected.
    fn refused(what: impl Into<String>, a: &Answer) -> TargetError {
        TargetError::Refused { what: what.into(), status: a.status.as_u16(), detail: crate::core::egress::excerpt(&a.body, a.len) }
    }

    fn expect_ok(what: &str, a: Answer) -> Result<Answer, TargetError> {
        if a.status.is_success() {
            Ok(a)
        } else {
            Err(Self::refused(what, &a))
        }
    }

    /// Every resource of a list query, page by page (`startIndex`, `count`),
    /// each parsed by `parse` as its page arrives (resources it cannot read
    /// are skipped). At most [`MAX_PAGES`] pages and [`MAX_LIST_ITEMS`]
    /// items, whatever `totalResults` claims.
    async fn list<T>(&self, path: &str, filter: Option<String>, attributes: Option<&str>, parse: impl Fn(&Value) -> Option<T>) -> Result<Vec<T>, TargetError> {
        let mut out = Vec::new();
        let mut start = 1usize;
        let mut cursor = String::new();
        let page_size = PAGE.min(self.profile.page_size);
        for _ in 0..MAX_PAGES {
            let mut query = match self.profile.paging {
                Paging::Index => vec![("startIndex", start.to_string()), ("count", page_size.to_string())],
                // The first page asks with an empty cursor, the next with the answer's `nextCursor`.
                Paging::Cursor => vec![("cursor", cursor.clone()), ("count", page_size.to_string())],
                Paging::None => vec![],
            };
            if let Some(f) = &filter {
                query.push(("filter", f.clone()));
            }
            if let Some(a) = attributes.filter(|_| self.profile.attributes_param) {
                query.push(("attributes", a.to_string()));
            }
            let a = self.send(Method::GET, path, &query, None, None).await?;
            if a.status == StatusCode::NOT_FOUND {
                // The collection itself is missing: the target is misplaced, not the member.
                return Err(TargetError::Unavailable { reason: format!("GET {path}: HTTP 404: no such endpoint (is base_url right?)"), retry_after: None });
            }
            let a = Self::expect_ok(&format!("listing {path}"), a)?;
            if self.profile.paging != Paging::Index {
                let page = a.body["Resources"].as_array().map(Vec::as_slice).unwrap_or_default();
                out.extend(page.iter().filter_map(&parse));
                if out.len() > MAX_LIST_ITEMS {
                    return Err(TargetError::Unavailable { reason: format!("GET {path}: more than the {MAX_LIST_ITEMS} items Entitle reads"), retry_after: None });
                }
                match a.body["nextCursor"].as_str().filter(|c| !c.is_empty() && self.profile.paging == Paging::Cursor && !page.is_empty()) {
                    Some(next) => cursor = next.to_string(),
                    None => return Ok(out),
                }
                continue;
            }
            let total = a.body["totalResults"].as_u64().unwrap_or(0);
            if total > MAX_LIST_ITEMS as u64 {
                return Err(TargetError::Unavailable { reason: format!("GET {path}: totalResults {total} is more than the {MAX_LIST_ITEMS} Entitle reads"), retry_after: None });
            }
            let page = a.body["Resources"].as_array().map(Vec::as_slice).unwrap_or_default();
            let got = page.len();
            out.extend(page.iter().filter_map(&parse));
            start += got;
            if out.len() > MAX_LIST_ITEMS {
                return Err(TargetError::Unavailable { reason: format!("GET {path}: more than the {MAX_LIST_ITEMS} items Entitle reads"), retry_after: None });
            }
            if got == 0 || start as u64 > total {
                return Ok(out);
            }
        }
        Err(TargetError::Unavailable { reason: format!("GET {path}: more than {MAX_PAGES} pages"), retry_after: None })
    }

    pub async fn users(&self) -> Result<Vec<ScimUser>, TargetError> {
        if !self.profile.lists_users {
            return Err(TargetError::Unavailable { reason: format!("a {} target lists no users without a filter", self.profile.name.as_str()), retry_after: None });
        }
        self.list("/Users", None, None, ScimUser::from_json).await
    }

    pub async fn groups(&self) -> Result<Vec<ScimGroup>, TargetError> {
        let groups: Vec<ScimGroup> = self.list("/Groups", None, Some("displayName,members"), ScimGroup::from_json).await?;
        let mut known = self.groups.lock().expect("not poisoned");
        for g in &groups {
            known.insert(g.name.clone(), g.id.clone());
        }
        Ok(groups)
    }

    async fn find_by(&self, attr: &str, value: &str) -> Result<Option<ScimUser>, TargetError> {
        let found = self.list("/Users", Some(scim::filter_eq(attr, value)), None, ScimUser::from_json).await?;
        Ok(found.into_iter().next())
    }

    /// The member's user: by `externalId`, else by `userName` (which SCIM
    /// compares case-insensitively) if that user is not someone else's.
    pub async fn find_user(&self, desired: &DesiredUser) -> Result<Option<ScimUser>, TargetError> {
        if self.profile.find_by_external_id {
            if let Some(u) = self.find_by("externalId", desired.user_id.as_str()).await? {
                return Ok(Some(u));
            }
        }
        match self.find_by("userName", &desired.user_name).await? {
            Some(u) => match scim::owned_by_another(desired, &u) {
                Some(reason) => Err(TargetError::Conflict { reason }),
                None => Ok(Some(u)),
            },
            None => Ok(None),
        }
    }

    /// Names of the groups a user is in (among all groups).
    pub async fn member_of(&self, scim_id: &str) -> Result<BTreeSet<String>, TargetError> {
        let filter = format!("members[value eq {}]", scim::quoted(scim_id));
        let groups = self.list("/Groups", Some(filter), Some("displayName"), |g| g["displayName"].as_str().map(str::to_string)).await?;
        Ok(groups.into_iter().collect())
    }

    /// Names of the managed groups a user is in. Each managed group's
    /// members are read once in this client's life (one request per group)
    /// and kept up to date with its own changes: a target answers a
    /// `members[value eq ...]` search by looking through every group's
    /// members, which for groups of thousands costs more per member than
    /// reading the group once per run. A group that cannot be read whole in
    /// one try (too large, too slow) turns this client to the search.
    pub async fn managed_member_of(&self, scim_id: &str, managed: &BTreeSet<String>) -> Result<MemberOf, TargetError> {
        match self.membership() {
            Membership::Listed => {
                let groups = self.listed_member_of(scim_id, managed).await?;
                // What the lists said is not used once the target contradicted them.
                if self.contradiction().is_some() {
                    return Ok(MemberOf::unknown(managed));
                }
                let unknown = self.unconfirmed.lock().expect("not poisoned").intersection(managed).cloned().collect();
                Ok(MemberOf { groups, unknown })
            }
            Membership::Asked => self.asked_member_of(scim_id, managed).await.map(MemberOf::known),
            Membership::Unknown => Ok(MemberOf::unknown(managed)),
        }
    }

    /// Asks the target, group by group, whether the user is a member
    /// (`filter=id eq "<group>" and members eq "<user>"`, as AWS IAM
    /// Identity Center answers it): a target that never lists members.
    async fn asked_member_of(&self, scim_id: &str, managed: &BTreeSet<String>) -> Result<BTreeSet<String>, TargetError> {
        let mut out = BTreeSet::new();
        for name in managed {
            let Some(gid) = self.group_id(name, false).await? else { continue };
            let filter = format!("{} and {}", scim::filter_eq("id", &gid), scim::filter_eq("members", scim_id));
            let found = self.list("/Groups", Some(filter), None, |g| g["id"].as_str().map(str::to_string)).await?;
            if found.contains(&gid) {
                out.insert(name.clone());
            }
        }
        Ok(out)
    }

    /// [`ScimClient::managed_member_of`] on a target that lists members.
    async fn listed_member_of(&self, scim_id: &str, managed: &BTreeSet<String>) -> Result<BTreeSet<String>, TargetError> {
        if !self.no_rosters.load(Ordering::SeqCst) {
            match self.load_rosters(managed).await {
                Ok(()) => {
                    let rosters = self.rosters.lock().expect("not poisoned");
                    return Ok(managed.iter().filter(|g| rosters.get(*g).is_some_and(|m| m.contains(scim_id))).cloned().collect());
                }
                Err(TargetError::Unavailable { reason, .. }) if self.time_left().is_some() => {
                    tracing::info!(reason = %reason, "a managed group could not be read whole: members are searched for instead");
                    self.no_rosters.store(true, Ordering::SeqCst);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(self.member_of(scim_id).await?.into_iter().filter(|g| managed.contains(g)).collect())
    }

    /// Reads the members of each managed group not read yet (a missing
    /// group has none), in one try each. A group answered without members
    /// (no `members`, or an empty list) is empty only if the target says so
    /// when asked (`members pr`): a target that leaves members out of group
    /// answers (AWS does, by design) would otherwise never see anyone
    /// removed. One that cannot answer stays unknown (members not desired
    /// there are removed from it anyway); one that says it has members has
    /// contradicted its profile: its lists are not trusted from then on
    /// ([`ScimClient::contradiction`]).
    async fn load_rosters(&self, managed: &BTreeSet<String>) -> Result<(), TargetError> {
        for name in managed {
            if self.rosters.lock().expect("not poisoned").contains_key(name) {
                continue;
            }
            let what = format!("reading group {name}");
            let query = [("filter", scim::filter_eq("displayName", name)), ("attributes", "displayName,members".to_string())];
            let a = Self::expect_ok(&what, self.send_tries(Method::GET, "/Groups", &query, None, None, 1).await?)?;
            let raw = a.body["Resources"].as_array().into_iter().flatten().find(|g| g["displayName"].as_str() == Some(name.as_str()));
            let found = raw.and_then(ScimGroup::from_json);
            if found.is_none() && a.body["totalResults"].as_u64().unwrap_or(0) > 0 {
                return Err(TargetError::Unavailable { reason: format!("{what}: listed without its id or members"), retry_after: None });
            }
            let unlisted = raw.is_some_and(|g| g["members"].as_array().is_none_or(Vec::is_empty));
            if unlisted {
                // Confirmed empty, contradicted, or unknown.
                let confirmed = if self.profile.rich_filters {
                    let mut query = vec![("filter", format!("{} and members pr", scim::filter_eq("displayName", name)))];
                    if self.profile.attributes_param {
                        query.push(("attributes", "id".to_string()));
                    }
                    match self.send_tries(Method::GET, "/Groups", &query, None, None, 1).await? {
                        a if a.status.is_success() && a.body["totalResults"].as_u64() == Some(0) => true,
                        a if a.status.is_success() => {
                            let reason = format!("group {name} is listed without members, but the target says it has members");
                            tracing::warn!(profile = self.profile.name.as_str(), reason = %reason, "the target contradicts its profile: its member lists are not trusted");
                            *self.contradiction.lock().expect("not poisoned") = Some(reason);
                            return Ok(());
                        }
                        _ => false,
                    }
                } else {
                    false
                };
                if !confirmed {
                    self.unconfirmed.lock().expect("not poisoned").insert(name.clone());
                }
            }
            let members = match found {
                Some(g) => {
                    self.groups.lock().expect("not poisoned").insert(name.clone(), g.id);
                    g.members
                }
                None => BTreeSet::new(),
            };
            self.rosters.lock().expect("not poisoned").insert(name.clone(), members);
        }
        self.rosters_checked.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Records a membership change this client made (in a roster it holds).
    fn noted(&self, group: &str, scim_user: &str, add: bool) {
        if let Some(members) = self.rosters.lock().expect("not poisoned").get_mut(group) {
            if add {
                members.insert(scim_user.to_string());
            } else {
                members.remove(scim_user);
            }
        }
    }

    /// The id of a group by name, created when missing and `create` is set.
    async fn group_id(&self, name: &str, create: bool) -> Result<Option<String>, TargetError> {
        if let Some(id) = self.groups.lock().expect("not poisoned").get(name) {
            return Ok(Some(id.clone()));
        }
        let group_id = |g: &Value| g["id"].as_str().map(str::to_string);
        let found = self.list("/Groups", Some(scim::filter_eq("displayName", name)), Some("displayName"), group_id).await?;
        let id = match found.into_iter().next() {
            Some(id) => Some(id),
            None if create => {
                let body = serde_json::json!({"schemas": [scim::GROUP_SCHEMA], "displayName": name});
                let a = self.send(Method::POST, "/Groups", &[], Some(&body), None).await?;
                if a.status == StatusCode::CONFLICT {
                    // Created meanwhile by someone else: use theirs.
                    let again = self.list("/Groups", Some(scim::filter_eq("displayName", name)), Some("displayName"), group_id).await?;
                    again.into_iter().next()
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
    async fn patch_group(&self, name: &str, change: &GroupChange) -> Result<bool, TargetError> {
        let changed = self.patch_group_ops(name, scim::membership_ops_for(&[change], self.profile.remove), TRIES).await?;
        self.noted(name, &change.scim_user, change.add);
        Ok(changed)
    }

    /// Membership operations on one group by name (created to add to it),
    /// each request tried up to `tries` times; false when there was
    /// nothing to remove from.
    async fn patch_group_ops(&self, name: &str, ops: Vec<PatchOp>, tries: u32) -> Result<bool, TargetError> {
        let add = ops.iter().any(|op| op.op == PatchKind::Add);
        let Some(id) = self.group_id(name, add).await? else { return Ok(false) };
        if self.patch_group_id(&id, &ops, name, tries).await? {
            return Ok(true);
        }
        // Deleted behind our back: forget it (and what it held), and recreate it to add.
        self.groups.lock().expect("not poisoned").remove(name);
        self.rosters.lock().expect("not poisoned").remove(name);
        if !add {
            return Ok(false);
        }
        let Some(id) = self.group_id(name, true).await? else { return Ok(false) };
        // A recreated group has no members to remove.
        let adds: Vec<PatchOp> = ops.into_iter().filter(|op| op.op == PatchKind::Add).collect();
        if !self.patch_group_id(&id, &adds, name, tries).await? {
            return Err(TargetError::Refused { what: format!("changing members of group {name}"), status: 404, detail: "the group vanished again".into() });
        }
        Ok(true)
    }

    /// Membership changes deferred by [`ScimClient::sync_user`], applied
    /// per group: additions [`GROUP_BATCH`] a request; removals as many a
    /// request as the target removes within [`scim::REMOVALS_AIM`]. A
    /// request removing several members is tried once: when it fails (a
    /// timeout, say), the same members go again in requests half the size,
    /// and this client's requests stay at most that size.
    pub async fn apply_group_changes(&self, changes: &[GroupChange]) -> Result<(), TargetError> {
        let mut by_group: BTreeMap<&str, Vec<&GroupChange>> = BTreeMap::new();
        for c in changes {
            by_group.entry(c.group.as_str()).or_default().push(c);
        }
        for (group, changes) in by_group {
            let (adds, removes): (Vec<&GroupChange>, Vec<&GroupChange>) = changes.into_iter().partition(|c| c.add);
            for chunk in adds.chunks(GROUP_BATCH.min(self.profile.changes_per_request).max(1)) {
                self.patch_group_ops(group, scim::membership_ops_for(chunk, self.profile.remove), TRIES).await?;
                chunk.iter().for_each(|c| self.noted(group, &c.scim_user, true));
            }
            let mut rest = removes.as_slice();
            while !rest.is_empty() {
                let requested = self.removals_per_request.load(Ordering::SeqCst).clamp(1, self.profile.changes_per_request.max(1));
                let n = requested.min(rest.len());
                let (chunk, tail) = rest.split_at(n);
                let started = Instant::now();
                match self.patch_group_ops(group, scim::membership_ops_for(chunk, self.profile.remove), if n > 1 { 1 } else { TRIES }).await {
                    Ok(_) => {
                        chunk.iter().for_each(|c| self.noted(group, &c.scim_user, false));
                        let (ceiling, took) = (self.removals_ceiling.load(Ordering::SeqCst), started.elapsed());
                        let mut next = scim::next_removal_batch(n, took, ceiling);
                        if n < requested && took <= scim::REMOVALS_AIM {
                            // The last few of a group, answered in time: they say
                            // nothing against the size asked for.
                            next = next.max(requested.min(ceiling));
                        }
                        self.removals_per_request.store(next, Ordering::SeqCst);
                        rest = tail;
                    }
                    Err(TargetError::Unavailable { reason, .. }) if n > 1 && self.time_left().is_some() => {
                        tracing::info!(group, members = n, reason = %reason, "removing members from a group failed: trying fewer a request");
                        self.removals_per_request.store(n / 2, Ordering::SeqCst);
                        self.removals_ceiling.fetch_min(n / 2, Ordering::SeqCst);
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Membership `PatchOp`s on a group by id; false when the group is gone.
    async fn patch_group_id(&self, id: &str, ops: &[PatchOp], name: &str, tries: u32) -> Result<bool, TargetError> {
        let a = self.send_tries(Method::PATCH, &format!("/Groups/{id}"), &[], Some(&scim::patch_body(&ops)), None, tries).await?;
        if a.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        // Removals only, of users the target says are not members (RFC 7644
        // §3.12 `noTarget`): where members cannot be read, Entitle removes a
        // member from every group it should not be in, so this is expected.
        let removals_only = ops.iter().all(|op| op.op == PatchKind::Remove);
        if removals_only && a.status == StatusCode::BAD_REQUEST && a.body["scimType"] == "noTarget" {
            return Ok(true);
        }
        Self::expect_ok(&format!("changing members of group {name}"), a)?;
        Ok(true)
    }

    pub async fn remove_from_group(&self, group_id: &str, group: &str, scim_id: &str) -> Result<(), TargetError> {
        let change = GroupChange { group: group.to_string(), add: false, scim_user: scim_id.to_string() };
        self.patch_group_id(group_id, &scim::membership_ops_for(&[&change], self.profile.remove), group, TRIES).await?;
        self.noted(group, scim_id, false);
        Ok(())
    }

    /// Makes the target hold what `desired` says for one member: its user
    /// (found, created or adopted, patched, or deleted) and its membership
    /// of the managed groups. Safe to repeat: every step reads first.
    pub async fn sync_member(&self, desired: &DesiredUser, managed: &BTreeSet<String>, known: Option<Known>) -> Result<SyncOutcome, TargetError> {
        self.sync_user(desired, managed, known, None).await
    }

    /// [`ScimClient::sync_member`]; with `deferred`, the user's membership
    /// changes of managed groups are not made but added to it, for
    /// [`ScimClient::apply_group_changes`] (a removed member still leaves
    /// its groups before its user is deleted).
    pub async fn sync_user(&self, desired: &DesiredUser, managed: &BTreeSet<String>, known: Option<Known>, mut deferred: Option<&mut Vec<GroupChange>>) -> Result<SyncOutcome, TargetError> {
        let mut out = SyncOutcome::default();
        let mut known = known;
        let what = |w: &str| format!("{w} user {}", desired.user_id);
        for _ in 0..CONFLICT_TRIES {
            let (user, member_of) = match known.take() {
                // Groups not read: asked for below, as the target allows.
                Some(k) => (k.user, k.member_of),
                None => (self.find_user(desired).await?, None),
            };
            let user = match scim::user_step(desired, user.as_ref()) {
                UserStep::Nothing => user,
                UserStep::Create(body) => {
                    let a = self.exchange(Call { kind: RequestKind::UserCreation, method: Method::POST, path: "/Users", query: &[], body: Some(&body), if_match: None, tries: TRIES }).await?;
                    if a.status == StatusCode::CONFLICT {
                        // The userName is taken: a user made before Entitle
                        // managed this target. Adopt it (the next pass patches
                        // it), unless it is someone else's.
                        match self.find_by("userName", &desired.user_name).await? {
                            Some(existing) => {
                                if let Some(reason) = scim::owned_by_another(desired, &existing) {
                                    return Err(TargetError::Conflict { reason });
                                }
                                out.adopted = true;
                                let member_of = self.managed_member_of(&existing.id, managed).await?;
                                known = Some(Known { user: Some(existing), member_of: Some(member_of) });
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
                    let a = self.send(Method::PATCH, &format!("/Users/{}", u.id), &[], Some(&scim::patch_body(&ops)), u.version.as_deref()).await?;
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
                        None => self.managed_member_of(&u.id, managed).await?,
                    };
                    // (Where the target cannot say, from each group it may be in.)
                    for g in member_of.maybe().iter().filter(|g| managed.contains(*g)) {
                        self.patch_group(g, &GroupChange { group: g.clone(), add: false, scim_user: u.id.clone() }).await?;
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
                _ if out.created => MemberOf::default(),
                Some(m) => m,
                None => self.managed_member_of(&user.id, managed).await?,
            };
            let (join, leave) = scim::group_changes(desired, &member_of, managed);
            if let Some(deferred) = deferred.as_deref_mut() {
                deferred.extend(join.iter().map(|g| GroupChange { group: g.clone(), add: true, scim_user: user.id.clone() }));
                deferred.extend(leave.iter().map(|g| GroupChange { group: g.clone(), add: false, scim_user: user.id.clone() }));
                (out.joined, out.left) = (join, leave);
                return Ok(out);
            }
            for g in join {
                self.patch_group(&g, &GroupChange { group: g.clone(), add: true, scim_user: user.id.clone() }).await?;
                out.joined.push(g);
            }
            for g in leave {
                if self.patch_group(&g, &GroupChange { group: g.clone(), add: false, scim_user: user.id.clone() }).await? {
                    out.left.push(g);
                }
            }
            return Ok(out);
        }
        Err(TargetError::Refused { what: what("updating"), status: 412, detail: format!("still changing after {CONFLICT_TRIES} re-reads") })
    }
}

/// SCIM targets over HTTP: one client per process, a [`ScimClient`] per
/// target and run; what the process learnt of each target's removal
/// requests (by URL and token) outlives the runs.
#[derive(Clone)]
pub struct Scim {
    pub http: reqwest::Client,
    pub egress: EgressPolicy,
    removal_sizes: Arc<Mutex<BTreeMap<String, Arc<AtomicUsize>>>>,
    /// Each target account's rate limits, as this process spends them.
    paces: Arc<Mutex<BTreeMap<String, Arc<Mutex<Pace>>>>>,
}

impl Scim {
    pub fn new(egress: EgressPolicy) -> Self {
        Scim { http: http_client(egress), egress, removal_sizes: Arc::default(), paces: Arc::default() }
    }
}

impl Directory for Scim {
    type Session = ScimClient;

    fn open(&self, target: &Target, token: String, deadline: Instant, read_budget: usize) -> ScimClient {
        // One account at the target: its URL and its token (hosted SCIM
        // endpoints serve every customer at one URL), the token hashed.
        let account = crate::core::audit::hash_of(&format!("{}\n{token}", target.base()));
        let learnt = self.removal_sizes.lock().expect("not poisoned").entry(account.clone()).or_insert_with(|| Arc::new(AtomicUsize::new(FIRST_REMOVALS))).clone();
        let profile = target.profile.profile();
        let pace = self.paces.lock().expect("not poisoned").entry(account).or_insert_with(|| Arc::new(Mutex::new(Pace::of(&profile)))).clone();
        ScimClient::new(self.http.clone(), target.base(), token, self.egress).with_deadline(deadline).with_read_budget(read_budget).with_removal_sizing(learnt).with_profile(profile, pace)
    }
}

impl DirectorySession for ScimClient {
    async fn sync_member(&self, desired: &DesiredUser, managed: &BTreeSet<String>, known: Option<Known>) -> Result<SyncOutcome, TargetError> {
        ScimClient::sync_member(self, desired, managed, known).await
    }
    async fn sync_user_deferred(&self, desired: &DesiredUser, managed: &BTreeSet<String>, known: Option<Known>) -> Result<(SyncOutcome, Vec<GroupChange>), TargetError> {
        let mut changes = Vec::new();
        let out = ScimClient::sync_user(self, desired, managed, known, Some(&mut changes)).await?;
        Ok((out, changes))
    }
    async fn apply_group_changes(&self, changes: &[GroupChange]) -> Result<(), TargetError> {
        ScimClient::apply_group_changes(self, changes).await
    }
    async fn users(&self) -> Result<Vec<ScimUser>, TargetError> {
        ScimClient::users(self).await
    }
    async fn groups(&self) -> Result<Vec<ScimGroup>, TargetError> {
        ScimClient::groups(self).await
    }
    async fn remove_from_group(&self, group_id: &str, group: &str, scim_user: &str) -> Result<(), TargetError> {
        ScimClient::remove_from_group(self, group_id, group, scim_user).await
    }
    fn contradiction(&self) -> Option<String> {
        ScimClient::contradiction(self)
    }
    fn rosters_agreed(&self) -> bool {
        ScimClient::rosters_agreed(self)
    }
}
