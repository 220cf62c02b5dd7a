//! Pacing and paging: a target's documented rate limits as this process
//! spends them ([`Pace`], a [`Window`] per limit; a short wait is waited
//! for, a longer one ends the run, paced), and lists read page by page
//! (`startIndex`, a cursor, or one page) within [`MAX_PAGES`] and
//! [`MAX_LIST_ITEMS`], whatever the target claims.

use super::{ScimClient, MAX_LIST_ITEMS, MAX_PACE_WAIT, MAX_PAGES, PAGE};
use crate::core::scim::{Paging, Profile, TargetError, Window};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

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
    pub(super) fn of(method: &Method) -> Self {
        if method == Method::GET {
            RequestKind::Read
        } else {
            RequestKind::Write
        }
    }
}

/// A target's documented rate limits: writes a minute, user creations an
/// hour, as this process spends them.
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

impl ScimClient {
    /// Waits for the target's rate limit to admit a write, if it does soon;
    /// otherwise the run is paced (it ends here; a later run goes on).
    pub(super) async fn paced(&self, kind: RequestKind, what: &str) -> Result<(), TargetError> {
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

    /// Every resource of a list query, page by page (`startIndex`, `count`),
    /// each parsed by `parse` as its page arrives (resources it cannot read
    /// are skipped). At most [`MAX_PAGES`] pages and [`MAX_LIST_ITEMS`]
    /// items, whatever `totalResults` claims.
    pub(super) async fn list<T>(&self, path: &str, filter: Option<String>, attributes: Option<&str>, parse: impl Fn(&Value) -> Option<T>) -> Result<Vec<T>, TargetError> {
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
}
