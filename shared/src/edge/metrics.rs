//! Metrics in CloudWatch Embedded Metric Format: a function writes one JSON
//! line to its log for what it just did, and CloudWatch Logs turns the line
//! into metrics (namespace `$METRICS_NAMESPACE`, `Entitle/<stack>` in the
//! template, `Entitle` without it). No request to CloudWatch, nothing on the
//! hot path but a line of stdout. Names, units and dimensions are listed in
//! docs/operations.md ("Metrics and alarms"); the template's dashboard and alarms read them.
//! A value with dimensions is also published without them (the sum over
//! all), which is what the alarms watch.

use crate::app::licenses::Recorded;
use crate::core::license::Source;
use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "Entitle";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One measured moment: values that share dimensions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Emf {
    dimensions: Vec<(&'static str, String)>,
    values: Vec<(&'static str, Unit, f64)>,
    properties: Vec<(&'static str, String)>,
}

impl Emf {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn dimension(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.dimensions.push((name, value.into()));
        self
    }

    /// A field of the line that is not a metric (the cause, the tenant):
    /// searchable in Logs Insights, no cost in CloudWatch metrics.
    pub fn property(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.properties.push((name, value.into()));
        self
    }

    pub fn count(mut self, name: &'static str, n: impl Into<f64>) -> Self {
        self.values.push((name, Unit::Count, n.into()));
        self
    }

    pub fn millis(mut self, name: &'static str, ms: f64) -> Self {
        self.values.push((name, Unit::Milliseconds, ms));
        self
    }

    /// The EMF document in `namespace`, timestamped `at_ms` (milliseconds
    /// since the epoch).
    pub fn document(&self, namespace: &str, at_ms: i64) -> Value {
        let mut doc = Map::new();
        let names: Vec<&str> = self.dimensions.iter().map(|(n, _)| *n).collect();
        let sets = if names.is_empty() { json!([[]]) } else { json!([names, []]) };
        let metrics: Vec<Value> = self.values.iter().map(|(n, u, _)| json!({"Name": n, "Unit": u.as_str()})).collect();
        doc.insert("_aws".into(), json!({"Timestamp": at_ms, "CloudWatchMetrics": [{"Namespace": namespace, "Dimensions": sets, "Metrics": metrics}]}));
        for (n, v) in self.properties.iter().chain(&self.dimensions) {
            doc.insert((*n).into(), json!(v));
        }
        for (n, _, v) in &self.values {
            doc.insert((*n).into(), json!(v));
        }
        Value::Object(doc)
    }

    /// Writes the line (nothing when there is no value).
    pub fn emit(self) {
        static NS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let namespace = NS.get_or_init(|| std::env::var("METRICS_NAMESPACE").unwrap_or_else(|_| NAMESPACE.into()));
        if !self.values.is_empty() {
            println!("{}", self.document(namespace, chrono::Utc::now().timestamp_millis()));
        }
    }
}

/// What became of a license event, per source (`stripe`, `crm`).
pub fn license_event(source: Source, recorded: &Recorded) -> Emf {
    let name = match recorded {
        Recorded::Applied => "EventsApplied",
        Recorded::Unchanged => "EventsUnchanged",
        Recorded::Duplicate => "EventsDuplicate",
        Recorded::Stale { .. } => "EventsStale",
        Recorded::Parked { .. } => "EventsParked",
    };
    Emf::new().dimension("Source", source.as_str()).count(name, 1)
}

/// An account creation: whether it got a seat.
pub fn seat_claim(active: bool) -> Emf {
    Emf::new().count(if active { "SeatClaimsActive" } else { "SeatClaimsPending" }, 1)
}

/// One request of a tenant's identity provider to its directory, by its
/// answer: every request (`DirectoryRequests`), and the ones the alarms
/// watch: a token refused (`DirectoryAuthFailures`: an IdP with a revoked
/// or expired token keeps failing), a push refused for want of a seat
/// (`DirectoryPushesRefused`), our own failure (`DirectoryServerErrors`).
pub fn directory_request(status: u16, refused_for_seats: bool) -> Emf {
    Emf::new()
        .count("DirectoryRequests", 1)
        .count("DirectoryAuthFailures", u8::from(status == 401))
        .count("DirectoryPushesRefused", u8::from(refused_for_seats))
        .count("DirectoryServerErrors", u8::from(status >= 500))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_names_its_metrics_and_dimensions_and_carries_their_values() {
        let doc = license_event(Source::Crm, &Recorded::Applied).property("cause", "crm_event:e1").document("Entitle/prod", 1_764_000_000_000);
        assert_eq!(
            doc,
            json!({
                "_aws": {"Timestamp": 1_764_000_000_000_i64, "CloudWatchMetrics": [{
                    "Namespace": "Entitle/prod", "Dimensions": [["Source"], []],
                    "Metrics": [{"Name": "EventsApplied", "Unit": "Count"}]}]},
                "Source": "crm",
                "cause": "crm_event:e1",
                "EventsApplied": 1.0
            })
        );
        let doc = Emf::new().count("ReconcileChanges", 3).millis("ReconcileDuration", 12.5).document(NAMESPACE, 0);
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
        assert_eq!(doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][1], json!({"Name": "ReconcileDuration", "Unit": "Milliseconds"}));
        assert_eq!((doc["ReconcileChanges"].clone(), doc["ReconcileDuration"].clone()), (json!(3.0), json!(12.5)));
    }

    #[test]
    fn each_event_outcome_has_its_metric() {
        let name = |r: Recorded| license_event(Source::Stripe, &r).values[0].0;
        let parked = Recorded::Parked { reason: "unknown price".into() };
        assert_eq!(
            [Recorded::Applied, Recorded::Unchanged, Recorded::Duplicate, Recorded::Stale { held_version: 2 }, parked].map(name),
            ["EventsApplied", "EventsUnchanged", "EventsDuplicate", "EventsStale", "EventsParked"]
        );
        assert_eq!(seat_claim(false).values[0].0, "SeatClaimsPending");
        let d = directory_request(401, false).document(NAMESPACE, 0);
        assert_eq!((d["DirectoryRequests"].clone(), d["DirectoryAuthFailures"].clone(), d["DirectoryServerErrors"].clone()), (json!(1.0), json!(1.0), json!(0.0)));
    }
}
