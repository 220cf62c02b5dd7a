//! The one write path of a tenant: read the head, decide, commit the
//! decision's changes under that head with their audit records, and decide
//! again from fresh reads when another writer moved the head first (or a
//! write's own guard failed). One retry policy for every use case: [`Retry`]
//! (a bounded number of tries with a jittered backoff between them), which
//! the writes without the chain's lock go through too.

use super::ports::{Change, CommitError, PortError, Tenants, Write};
use super::Error;
use crate::core::audit::ChainHead;
use crate::core::ids::TenantId;
use crate::core::tenant::{TenantMeta, TenantState};
use std::future::Future;
use std::time::Duration;

/// Attempts before a use case gives up on a busy tenant.
pub const MAX_ATTEMPTS: u32 = 60;

/// What a decision asks for.
pub enum Decision<T> {
    /// Nothing to write.
    Done(T),
    /// These changes, in order, each against the head the one before left.
    Commit(Vec<Change>, T),
}

impl<T> Decision<T> {
    pub fn one(change: Change, value: T) -> Self {
        Decision::Commit(vec![change], value)
    }
}

/// What was committed.
#[derive(Debug)]
pub struct Committed<T> {
    /// The value of the decision that was committed (or refused).
    pub value: T,
    /// The write that was refused by a rule, if one was: nothing of that
    /// change was written, and the refusal is the answer (see
    /// [`Write::decide_again_when_refused`]).
    pub refused: Option<Write>,
    /// Every change committed, over all attempts, in order.
    pub changes: Vec<Change>,
}

/// What a decision is made on: something read consistently that carries
/// the tenant's chain head.
pub trait Snapshot {
    fn head(&self) -> Option<&ChainHead>;
}

impl Snapshot for Option<TenantMeta> {
    fn head(&self) -> Option<&ChainHead> {
        self.as_ref().map(|m| &m.head)
    }
}

impl Snapshot for Option<TenantState> {
    fn head(&self) -> Option<&ChainHead> {
        self.as_ref().map(|s| &s.meta.head)
    }
}

impl Snapshot for Option<crate::core::tenant::TenantHead> {
    fn head(&self) -> Option<&ChainHead> {
        self.as_ref().map(|h| &h.meta.head)
    }
}

/// The head and one more item, read together (`Tenants::meta_and_license`, ...).
impl<X> Snapshot for (Option<TenantMeta>, X) {
    fn head(&self) -> Option<&ChainHead> {
        self.0.as_ref().map(|m| &m.head)
    }
}

/// Reads the tenant's head (its `META`), lets `decide` decide on it (and on
/// whatever it reads: every read after the head is covered by the head's
/// condition), and commits what it decided; see [`audited_on`].
pub async fn audited<S, T, F, Fut>(store: &S, tenant: &TenantId, decide: F) -> Result<Committed<T>, Error>
where
    S: Tenants,
    F: FnMut(Option<TenantMeta>) -> Fut,
    Fut: Future<Output = Result<Decision<T>, Error>>,
{
    audited_on(store, tenant, || store.meta(tenant), decide).await
}

/// The loop itself: `read` a snapshot that carries the head, `decide` on
/// it, commit the changes it asks for in order (each against the head the
/// one before left), and start over from a fresh read when the head moved
/// or a guard failed, as [`Retry`] tries again, at most [`MAX_ATTEMPTS`]
/// times.
pub async fn audited_on<S, R, T, Read, ReadFut, F, Fut>(store: &S, tenant: &TenantId, mut read: Read, mut decide: F) -> Result<Committed<T>, Error>
where
    S: Tenants,
    R: Snapshot,
    Read: FnMut() -> ReadFut,
    ReadFut: Future<Output = Result<R, PortError>>,
    F: FnMut(R) -> Fut,
    Fut: Future<Output = Result<Decision<T>, Error>>,
{
    let mut retry = Retry::new(tenant, MAX_ATTEMPTS);
    let mut done = Vec::new();
    while retry.again().await {
        let snapshot = read().await?;
        let mut head = snapshot.head().cloned();
        let (changes, value) = match decide(snapshot).await? {
            Decision::Done(value) => return Ok(Committed { value, refused: None, changes: done }),
            Decision::Commit(changes, value) => (changes, value),
        };
        let mut again = false;
        for change in changes {
            match store.commit(tenant, head.as_ref(), &change).await {
                Ok(next) => {
                    head = Some(next);
                    done.push(change);
                }
                // A moved head, or counters that moved under a bound: decide again.
                Err(CommitError::HeadMoved | CommitError::Seats) => {
                    again = true;
                    break;
                }
                Err(CommitError::Refused(i)) if change.writes[i].decide_again_when_refused() => {
                    again = true;
                    break;
                }
                Err(CommitError::Refused(i)) => return Ok(Committed { value, refused: Some(change.writes[i].clone()), changes: done }),
                Err(CommitError::Port(e)) => return Err(e.into()),
            }
        }
        if !again {
            return Ok(Committed { value, refused: None, changes: done });
        }
    }
    Err(retry.contended())
}

/// The one meaning of "try again" for a tenant's writes: at most
/// `attempts` tries, each after the first preceded by the jittered
/// [`backoff`], and then the tenant counts as contended
/// ([`Error::Contention`]). [`audited_on`] tries through it, and so do the
/// writes committed without the chain's lock (an account created or
/// removed, a directory's push), which read and decide again when their
/// member or the tenant's counters moved under them.
///
/// ```ignore
/// let mut retry = Retry::new(tenant, ATTEMPTS);
/// while retry.again().await {
///     // read, decide, commit: return when done, or go round again
/// }
/// Err(retry.contended())
/// ```
#[derive(Debug)]
pub struct Retry<'a> {
    tenant: &'a TenantId,
    attempts: u32,
    tried: u32,
}

impl<'a> Retry<'a> {
    pub fn new(tenant: &'a TenantId, attempts: u32) -> Self {
        Retry { tenant, attempts, tried: 0 }
    }

    /// Whether another try may start: after the backoff that follows each
    /// try that did not settle, false once `attempts` were made.
    pub async fn again(&mut self) -> bool {
        if self.tried > 0 {
            backoff(self.tried - 1).await;
        }
        if self.tried >= self.attempts {
            return false;
        }
        self.tried += 1;
        true
    }

    /// Why the tries ran out: the tenant kept changing underneath.
    pub fn contended(&self) -> Error {
        Error::Contention { tenant: self.tenant.clone(), attempts: self.attempts }
    }
}

/// Jittered exponential backoff, capped; no random number generator needed.
pub async fn backoff(attempt: u32) {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let base = 5u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_millis(base / 2 + u64::from(nanos) % base.max(1))).await;
}
