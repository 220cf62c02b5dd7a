//! What a delivery run reports of each target: what it delivered,
//! refused, parked, repaired, and how the target's standing changed.

use crate::core::scim::Standing;
use serde::Serialize;

/// What drift repair found and did on one target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    pub members_checked: usize,
    /// Members whose user on the target was brought back in line.
    pub repaired: Vec<String>,
    /// Users removed from managed groups they had no role for.
    pub strangers_removed: usize,
    pub refused: usize,
    /// Members parked because their userName belongs to someone else's user.
    pub conflicts: usize,
    pub complete: bool,
    /// The target listed a managed group empty although members Entitle
    /// delivered belong in it (it does not list members as its profile says).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contradiction: Option<String>,
}

impl RepairReport {
    /// True when the target differed and was changed (the repair is audited).
    pub fn changed(&self) -> bool {
        !self.repaired.is_empty() || self.strangers_removed > 0
    }
}

/// What one run did for one target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetReport {
    pub target_id: String,
    /// Backing off or quarantined: not attempted this time.
    pub waiting: bool,
    pub delivered: usize,
    pub refused: usize,
    /// Members whose userName is held by someone else's user on the target:
    /// their delivery is parked (never adopted).
    pub conflicts: usize,
    pub repair: Option<RepairReport>,
    pub error: Option<String>,
    /// Quarantined or resumed by this run.
    pub standing: Option<Standing>,
    /// The run ran out of time after progress with changes still waiting:
    /// the next run should follow at once, not at the next sweep.
    pub more: bool,
    /// The run stopped at the target's documented rate limit (not a
    /// failure): what waits goes in a later run.
    pub paced: Option<String>,
    /// The target answered against its profile in this run (reported,
    /// audited once, and its member lists not trusted).
    pub contradiction: Option<String>,
}

impl TargetReport {
    /// True when the run wrote audit records (and events) for this target.
    pub fn audited(&self) -> bool {
        self.standing.is_some() || self.conflicts > 0 || self.repair.as_ref().is_some_and(|r| r.changed() || r.conflicts > 0)
    }
}
