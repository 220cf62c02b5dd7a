//! How a target has been answering: failures, retries, quarantine, and the
//! run in progress.

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
