//! Parked events as an operator sees them: the `PARKED#<source>`
//! partitions (one item per event that could not be applied, with its
//! reason and the event as it arrived).

use super::*;
use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParkedEvent {
    pub source: &'static str,
    pub event_id: String,
    /// The tenant the event names, if it names one.
    pub tenant_id: Option<String>,
    pub reason: String,
    pub parked_at: String,
    /// Seconds since it was parked.
    pub age_secs: i64,
    #[serde(skip)]
    pub payload: Value,
}

fn parked_from(source: Source, item: &Item, now: DateTime<Utc>) -> Result<ParkedEvent, PortError> {
    let event_id = get_s(item, "sk").unwrap_or_default().to_string();
    let key = format!("PARKED#{}/{event_id}", source.as_str());
    let payload = serde_json::from_str(get_s(item, "payload").unwrap_or_default()).map_err(|e| PortError::Corrupt { key: key.clone(), why: e.to_string() })?;
    let parked_at = get_s(item, "parked_at").unwrap_or_default().to_string();
    let age_secs = parked_at.parse::<DateTime<Utc>>().map(|at| (now - at).num_seconds()).unwrap_or(0);
    Ok(ParkedEvent {
        source: source.as_str(),
        event_id,
        tenant_id: get_s(item, "tenant_id").map(str::to_string),
        reason: get_s(item, "reason").unwrap_or_default().to_string(),
        parked_at,
        age_secs,
        payload,
    })
}

impl Dynamo {
    /// The events parked from `source`, oldest first.
    pub async fn parked_events(&self, source: Source, now: DateTime<Utc>) -> Result<Vec<ParkedEvent>, PortError> {
        let mut out: Vec<ParkedEvent> = self.query_partition(format!("PARKED#{}", source.as_str()), "").await?.iter().map(|i| parked_from(source, i, now)).collect::<Result<_, _>>()?;
        out.sort_by(|a, b| a.parked_at.cmp(&b.parked_at).then_with(|| a.event_id.cmp(&b.event_id)));
        Ok(out)
    }

    pub async fn parked_event(&self, source: Source, event_id: &str, now: DateTime<Utc>) -> Result<Option<ParkedEvent>, PortError> {
        self.get(format!("PARKED#{}", source.as_str()), event_id.to_string()).await?.map(|i| parked_from(source, &i, now)).transpose()
    }

    /// Removes a parked event once it has been applied.
    pub async fn unpark(&self, source: Source, event_id: &str) -> Result<(), PortError> {
        self.client.delete_item().table_name(&self.state).key("pk", s(format!("PARKED#{}", source.as_str()))).key("sk", s(event_id)).send().await.map_err(failed("DeleteItem"))?;
        Ok(())
    }
}
