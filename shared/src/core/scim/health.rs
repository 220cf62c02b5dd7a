//! How a target has been answering: failures, retries, quarantine, and the
//! run in progress; and the decisions a delivery run takes on it: whether
//! to go at all ([`Health::plan`]), what its end does to the target's
//! standing ([`Health::after_run`]: quarantined, resumed), and whether a
//! contradiction of its profile is new ([`Health::note_contradiction`]).
//! The delivery use case applies them.

use chrono::{DateTime, Duration as Span, Utc};
use serde::{Deserialize, Serialize};

/// How a target has been answering.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Consecutive failed delivery runs.
    pub failures: u32,
    pub first_failure_at: Option<DateTime<Utc>>,
    /// No delivery before this instant.
    pub retry_at: Option<DateTime<Utc>>,
    pub quarantined_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_repair_at: Option<DateTime<Utc>>,
    /// What asked for the last complete repair (`api_call:<request id>`,
    /// `sweep:<run>`, ...).
    #[serde(default)]
    pub last_repair_cause: Option<String>,
    /// When the delivery run in progress started. Recorded before a run
    /// talks to the target and cleared with its outcome: a run that never
    /// finished (the function crashed, ran out of memory or time) is found
    /// here by the next one and counted as a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_started_at: Option<DateTime<Utc>>,
    /// The target answered against its profile (a managed group listed
    /// empty that the target says has members, or cannot confirm is
    /// empty): its member lists are not trusted while this is set, and each
    /// member's groups are enforced instead. Cleared by a run whose lists agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contradiction: Option<String>,
}

/// When a failing target is retried and when it is quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failed runs before quarantine.
    pub quarantine_after: u32,
    /// First retry delay; doubles with each failure up to `retry_max_secs`.
    pub retry_base_secs: i64,
    pub retry_max_secs: i64,
    /// Retry interval while quarantined.
    pub quarantine_retry_secs: i64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy { quarantine_after: 5, retry_base_secs: 30, retry_max_secs: 900, quarantine_retry_secs: 3600 }
    }
}

/// A change of a target's standing worth an audit record and an event
/// (serialised, and displayed in logs, as `quarantined` or `resumed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    Quarantined,
    Resumed,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Quarantined => "quarantined",
            Standing::Resumed => "resumed",
        }
    }
}

impl std::fmt::Display for Standing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Health {
    pub fn quarantined(&self) -> bool {
        self.quarantined_since.is_some()
    }

    pub fn may_attempt(&self, now: DateTime<Utc>) -> bool {
        self.retry_at.is_none_or(|r| r <= now)
    }

    /// After a failed run: the next retry slows down, and past the policy's
    /// limit the target is quarantined.
    pub fn on_failure(&self, policy: &Policy, now: DateTime<Utc>, error: &str) -> (Health, Option<Standing>) {
        let failures = self.failures.saturating_add(1);
        let quarantine = failures >= policy.quarantine_after;
        let delay = if quarantine { policy.quarantine_retry_secs } else { policy.retry_base_secs.saturating_mul(1 << (failures - 1).min(20)).min(policy.retry_max_secs) };
        let entered = quarantine && !self.quarantined();
        let next = Health {
            failures,
            first_failure_at: self.first_failure_at.or(Some(now)),
            retry_at: Some(now + Span::seconds(delay)),
            quarantined_since: if quarantine { self.quarantined_since.or(Some(now)) } else { None },
            last_error: Some(error.chars().take(500).collect()),
            attempt_started_at: None,
            ..self.clone()
        };
        (next, entered.then_some(Standing::Quarantined))
    }

    /// The run recorded in [`Health::attempt_started_at`] never finished:
    /// it counts as a failed run of the target.
    pub fn unfinished_attempt(&self, policy: &Policy, now: DateTime<Utc>) -> Option<(Health, Option<Standing>)> {
        let started = self.attempt_started_at?;
        Some(self.on_failure(policy, now, &format!("the delivery run started at {} did not finish (the function crashed, ran out of memory or time)", started.to_rfc3339())))
    }

    /// After a run that reached the target: back to normal.
    pub fn on_success(&self, now: DateTime<Utc>) -> (Health, Option<Standing>) {
        let resumed = self.quarantined();
        let next = Health {
            failures: 0,
            first_failure_at: None,
            retry_at: None,
            quarantined_since: None,
            last_error: None,
            last_success_at: Some(now),
            last_repair_at: self.last_repair_at,
            last_repair_cause: self.last_repair_cause.clone(),
            attempt_started_at: None,
            contradiction: self.contradiction.clone(),
        };
        (next, resumed.then_some(Standing::Resumed))
    }
}

/// What a delivery run does with a target, decided on its health before
/// anything is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPlan {
    /// Backing off or quarantined: not attempted this time.
    Wait,
    /// Nothing waits for it and no repair is due: nothing to do.
    Idle,
    /// Deliver what waits, and repair when `repair` says so.
    Go { repair: bool },
}

/// How a delivery run that reached its end came out, as the target's
/// health counts it (a run stopped by Entitle's own ports is not counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd<'a> {
    /// The target answered (or its rate limit paced the run, which is not
    /// a failure). `repaired_by`: the cause of a repair that went through
    /// the whole target in this run.
    Answered { repaired_by: Option<String> },
    /// The target failed the run: why, and how long it asked to be left
    /// alone (its `Retry-After`), if it said.
    Failed { reason: &'a str, retry_after: Option<std::time::Duration> },
}

impl Health {
    /// Whether a run goes to the target now: not while it backs off or is
    /// quarantined (unless a repair was asked for: `forced`), and only when
    /// changes wait for it (`pending`) or a repair is due. A failing target
    /// is probed with a repair: it lists everything, so it proves the target
    /// is back and catches up on whatever was missed.
    pub fn plan(&self, forced: bool, pending: bool, repair_due_at: DateTime<Utc>, now: DateTime<Utc>) -> RunPlan {
        let repair = forced || repair_due_at <= now || self.failures > 0;
        if !forced && !self.may_attempt(now) {
            RunPlan::Wait
        } else if !pending && !repair {
            RunPlan::Idle
        } else {
            RunPlan::Go { repair }
        }
    }

    /// The health after a run, and the change of standing it brings
    /// (quarantined, or resumed): worth an audit record when there is one.
    /// A target that said when to come back is not retried before that.
    pub fn after_run(&self, policy: &Policy, end: RunEnd<'_>, now: DateTime<Utc>) -> (Health, Option<Standing>) {
        match end {
            RunEnd::Answered { repaired_by } => {
                let (mut next, standing) = self.on_success(now);
                if let Some(cause) = repaired_by {
                    next.last_repair_at = Some(now);
                    next.last_repair_cause = Some(cause);
                }
                (next, standing)
            }
            RunEnd::Failed { reason, retry_after } => {
                let (mut next, standing) = self.on_failure(policy, now, reason);
                if let (Some(r), Some(at)) = (retry_after, next.retry_at) {
                    next.retry_at = Some(at.max(now + Span::from_std(r).unwrap_or_default()));
                }
                (next, standing)
            }
        }
    }

    /// What a run saw of the target answering against its profile (`seen`),
    /// and whether its member lists agreed with it. A contradiction is
    /// reported once, when first seen (the answer: true, worth an audit
    /// record); while it stands, what the target says now is kept; a run
    /// whose lists agree clears it.
    pub fn note_contradiction(&mut self, seen: Option<&str>, lists_agreed: bool) -> bool {
        match (seen, &self.contradiction) {
            (Some(now_seen), reported) => {
                let new = reported.is_none();
                self.contradiction = Some(now_seen.to_string());
                new
            }
            (None, Some(_)) if lists_agreed => {
                self.contradiction = None;
                false
            }
            (None, _) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn a_run_waits_while_the_target_backs_off_unless_a_repair_is_asked_for() {
        let now = at("2026-12-02T10:00:00Z");
        let later = now + Span::hours(1);
        let backing_off = Health { failures: 1, retry_at: Some(now + Span::seconds(30)), ..Health::default() };
        assert_eq!(backing_off.plan(false, true, later, now), RunPlan::Wait);
        // Asked for: it goes, and a failing target is probed with a repair.
        assert_eq!(backing_off.plan(true, false, later, now), RunPlan::Go { repair: true });
        // A healthy target with nothing waiting and no repair due: idle.
        assert_eq!(Health::default().plan(false, false, later, now), RunPlan::Idle);
        assert_eq!(Health::default().plan(false, true, later, now), RunPlan::Go { repair: false });
        assert_eq!(Health::default().plan(false, false, now, now), RunPlan::Go { repair: true });
        // Once its retry time came, a failing target is probed with a repair.
        assert_eq!(backing_off.plan(false, false, later, now + Span::seconds(30)), RunPlan::Go { repair: true });
    }

    #[test]
    fn a_run_s_end_quarantines_or_resumes_and_honours_retry_after() {
        let policy = Policy { quarantine_after: 2, ..Policy::default() };
        let now = at("2026-12-02T10:00:00Z");
        let failed = |h: &Health, retry_after| h.after_run(&policy, RunEnd::Failed { reason: "503", retry_after }, now);
        let (once, s1) = failed(&Health::default(), Some(std::time::Duration::from_secs(120)));
        assert_eq!(s1, None);
        // Its retry time is the later of the backoff's and the target's own.
        assert_eq!(once.retry_at, Some(now + Span::seconds(120)));
        assert_eq!(failed(&Health::default(), None).0.retry_at, Some(now + Span::seconds(policy.retry_base_secs)));
        let (twice, s2) = failed(&once, None);
        assert_eq!(s2, Some(Standing::Quarantined));
        let (back, s3) = twice.after_run(&policy, RunEnd::Answered { repaired_by: Some("sweep:r1".into()) }, now);
        assert_eq!(s3, Some(Standing::Resumed));
        assert_eq!((back.failures, back.last_repair_at, back.last_repair_cause.as_deref()), (0, Some(now), Some("sweep:r1")));
        let (plain, s4) = back.after_run(&policy, RunEnd::Answered { repaired_by: None }, now + Span::seconds(5));
        assert_eq!((s4, plain.last_repair_at), (None, Some(now)));
    }

    #[test]
    fn a_contradiction_is_reported_once_and_cleared_when_the_lists_agree() {
        let mut h = Health::default();
        assert!(h.note_contradiction(Some("group a listed empty"), false));
        assert!(!h.note_contradiction(Some("group b listed empty"), false), "reported once");
        assert_eq!(h.contradiction.as_deref(), Some("group b listed empty"));
        assert!(!h.note_contradiction(None, false));
        assert!(h.contradiction.is_some(), "kept until a run's lists agree");
        assert!(!h.note_contradiction(None, true));
        assert_eq!(h.contradiction, None);
        assert!(h.note_contradiction(Some("again"), true), "a new one after it cleared");
    }
}
