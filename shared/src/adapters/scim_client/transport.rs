//! Transport and egress: the one HTTP client of a process (TLS through
//! rustls with the aws-lc-rs provider and the platform's roots; no
//! redirects, no proxy), the resolver that keeps only public addresses,
//! and what one request to a target does: the egress refusal, an answer
//! read within its bounds and the read budget, retries with backoff on
//! connection failures, 429 and 5xx (honouring `Retry-After`), and the
//! run's deadline.

use super::pacing::RequestKind;
use super::{ScimClient, CONTENT_TYPE, MAX_ANSWER_BYTES, MAX_WAIT, TRIES, USER_AGENT};
use crate::core::egress::{EgressPolicy, NoPublicAddress};
use crate::core::scim::{self, TargetError};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Makes rustls use the aws-lc-rs provider the AWS SDK already builds. Call
/// before building any `reqwest::Client` in a process (idempotent).
pub fn install_tls_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// One HTTP client per process: TLS through rustls with the aws-lc-rs
/// provider and the process's one trust store ([`crate::adapters::tls`]); no
/// redirects and no proxy (either would take a request somewhere the checks
/// did not look). Under [`EgressPolicy::Public`] names resolve through
/// [`PublicOnly`]. Built when its first request goes out, not at a
/// function's start: a start reads no certificate it may not need.
#[derive(Clone)]
pub struct Http(Arc<(EgressPolicy, OnceLock<reqwest::Client>)>);

impl Http {
    /// The client, built on first use.
    pub fn client(&self) -> &reqwest::Client {
        self.0 .1.get_or_init(|| build(self.0 .0))
    }
}

/// A process's HTTP client for `egress` (built on its first request).
pub fn http_client(egress: EgressPolicy) -> Http {
    Http(Arc::new((egress, OnceLock::new())))
}

fn build(egress: EgressPolicy) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .use_preconfigured_tls(crate::adapters::tls::client_config())
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    let builder = match egress {
        EgressPolicy::Public => builder.dns_resolver(Arc::new(PublicOnly)),
        EgressPolicy::Local => builder,
    };
    builder.build().expect("a client over a rustls configuration builds")
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

/// A response worth reading: status, ETag and JSON body (`Null` when the
/// body is empty or not JSON), and how long the body was.
pub(super) struct Answer {
    pub(super) status: StatusCode,
    pub(super) etag: Option<String>,
    pub(super) body: Value,
    pub(super) len: usize,
}

/// One request to a target, as [`ScimClient::exchange`] sends it.
pub(super) struct Call<'a> {
    pub(super) kind: RequestKind,
    pub(super) method: Method,
    pub(super) path: &'a str,
    pub(super) query: &'a [(&'a str, String)],
    pub(super) body: Option<&'a Value>,
    pub(super) if_match: Option<&'a str>,
    pub(super) tries: u32,
}

impl ScimClient {
    /// Takes `n` bytes from the read budget, or fails when it is spent.
    pub(super) fn spend(&self, n: usize, what: &str) -> Result<(), TargetError> {
        match self.read_budget.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| left.checked_sub(n)) {
            Ok(_) => Ok(()),
            Err(_) => Err(TargetError::Unavailable { reason: format!("{what}: the target's answers exceed its read budget for this run"), retry_after: None }),
        }
    }

    /// Reads an answer's body, at most [`MAX_ANSWER_BYTES`] and within the
    /// read budget, chunk by chunk (a target that sends forever is cut off).
    pub(super) async fn read_body(&self, mut res: reqwest::Response, what: &str) -> Result<Vec<u8>, TargetError> {
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
    pub(super) fn check_literal_address(&self, url: &str, what: &str) -> Result<(), TargetError> {
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

    /// Time left for one request: the per-request timeout, or less near the deadline.
    pub(super) fn time_left(&self) -> Option<Duration> {
        let per_request = Duration::from_secs(10);
        match self.deadline {
            None => Some(per_request),
            Some(d) => Some(d.checked_duration_since(Instant::now())?.min(per_request)).filter(|t| *t >= Duration::from_millis(200)),
        }
    }

    /// Sends a request, retrying on connection failures, 429 and 5xx.
    /// Other answers (2xx, 4xx) go back to the caller.
    pub(super) async fn send(&self, method: Method, path: &str, query: &[(&str, String)], body: Option<&Value>, if_match: Option<&str>) -> Result<Answer, TargetError> {
        self.send_tries(method, path, query, body, if_match, TRIES).await
    }

    /// [`ScimClient::send`], tried at most `tries` times.
    pub(super) async fn send_tries(&self, method: Method, path: &str, query: &[(&str, String)], body: Option<&Value>, if_match: Option<&str>, tries: u32) -> Result<Answer, TargetError> {
        self.exchange(Call { kind: RequestKind::of(&method), method, path, query, body, if_match, tries }).await
    }

    /// One request, paced as its kind is by the target's profile.
    pub(super) async fn exchange(&self, call: Call<'_>) -> Result<Answer, TargetError> {
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
            let mut req = self.http.client().request(method.clone(), &url).bearer_auth(&self.token).header("Accept", CONTENT_TYPE).header("User-Agent", USER_AGENT).query(query).timeout(timeout);
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

    /// What the target refused, with a sanitised excerpt of its answer
    /// ([`crate::core::egress::excerpt`]): nothing else it sent is reflected.
    pub(super) fn refused(what: impl Into<String>, a: &Answer) -> TargetError {
        TargetError::Refused { what: what.into(), status: a.status.as_u16(), detail: crate::core::egress::excerpt(&a.body, a.len) }
    }

    pub(super) fn expect_ok(what: &str, a: Answer) -> Result<Answer, TargetError> {
        if a.status.is_success() {
            Ok(a)
        } else {
            Err(Self::refused(what, &a))
        }
    }
}
