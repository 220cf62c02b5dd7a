//! `entitle-dev pipe`: the local stand-in for the template's EventBridge
//! Pipe (`EventsPipe`): reads DynamoDB Local's stream of the state table and
//! puts what the Pipe would put on the bus (moto's EventBridge).
//!
//! The Pipe's definition is read from `infra/template.yaml` itself (its
//! source table, filter pattern, input template, `Source` and `DetailType`),
//! so the local path follows the deployed one; a definition that uses more
//! than this stand-in understands (a filter operator other than exact values
//! and `prefix`, an input template other than one JSON path) is refused at
//! start. Like the Pipe: records in order per shard, at least once (a
//! record is passed on again until the bus took it), the position kept
//! after each batch the bus took (`<STACK_DIR>/pipe.checkpoint`, so a
//! restart goes on where it stopped; a crash between the put and the
//! checkpoint repeats that batch: consumers deduplicate on the event `id`).
//!
//! Settings (environment): STATE_TABLE, EVENT_BUS_NAME, STACK_DIR,
//! AWS_ENDPOINT_URL (moto), AWS_ENDPOINT_URL_DYNAMODB (DynamoDB Local).

use aws_sdk_dynamodbstreams::types::{AttributeValue, Record, ShardIteratorType};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("environment variable {name} is required"))
}

/// What the template's Pipe does, as far as this stand-in needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PipeSpec {
    /// Filter patterns (a record passes if any matches).
    pub filters: Vec<Value>,
    /// The JSON path (`$.a.b`) the input template takes the event from.
    pub input_path: String,
    pub source: String,
    /// The JSON path of the detail type.
    pub detail_type_path: String,
}

/// Reads `EventsPipe` from the template (CloudFormation's short tags are
/// read as plain values; the Pipe's fields are literals).
pub fn spec_from_template(text: &str) -> Result<PipeSpec, String> {
    let yaml: serde_norway::Value = serde_norway::from_str(text).map_err(|e| format!("template: {e}"))?;
    fn plain(v: serde_norway::Value) -> Value {
        match v {
            serde_norway::Value::Tagged(t) => plain(t.value),
            serde_norway::Value::Mapping(m) => Value::Object(m.into_iter().map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), plain(v))).collect()),
            serde_norway::Value::Sequence(s) => Value::Array(s.into_iter().map(plain).collect()),
            other => serde_json::to_value(other).unwrap_or(Value::Null),
        }
    }
    let pipe = plain(yaml)["Resources"]["EventsPipe"]["Properties"].clone();
    let filters: Vec<Value> = pipe["SourceParameters"]["FilterCriteria"]["Filters"]
        .as_array()
        .ok_or("EventsPipe has no FilterCriteria.Filters")?
        .iter()
        .map(|f| f["Pattern"].as_str().ok_or("a filter without a Pattern").and_then(|p| serde_json::from_str(p).map_err(|_| "a Pattern that is not JSON")))
        .collect::<Result<_, _>>()?;
    for f in &filters {
        check_pattern(f)?;
    }
    let target = &pipe["TargetParameters"];
    let template = target["InputTemplate"].as_str().ok_or("EventsPipe has no InputTemplate")?;
    let input_path =
        template.strip_prefix('<').and_then(|t| t.strip_suffix('>')).filter(|p| p.starts_with("$.")).ok_or_else(|| format!("InputTemplate {template:?}: only one `<$.path>` is supported here"))?;
    let bus = &target["EventBridgeEventBusParameters"];
    let detail_type_path = bus["DetailType"].as_str().filter(|p| p.starts_with("$.")).ok_or("DetailType: a `$.path` is expected")?;
    Ok(PipeSpec {
        filters,
        input_path: input_path.to_string(),
        source: bus["Source"].as_str().ok_or("EventBridgeEventBusParameters.Source is required")?.to_string(),
        detail_type_path: detail_type_path.to_string(),
    })
}

/// Only nested objects, arrays of exact values and `{"prefix": ...}`.
fn check_pattern(p: &Value) -> Result<(), String> {
    match p {
        Value::Object(o) => o.values().try_for_each(check_pattern),
        Value::Array(a) => a.iter().try_for_each(|v| match v {
            Value::Object(o) if o.len() == 1 && o.get("prefix").is_some_and(Value::is_string) => Ok(()),
            Value::Object(o) => Err(format!("filter operator {o:?} is not supported by the local pipe")),
            _ => Ok(()),
        }),
        other => Err(format!("filter value {other} must be an array")),
    }
}

/// EventBridge's matching for the supported subset: every key of the
/// pattern must match; an array matches a value equal to one of its
/// literals or starting with one of its prefixes.
pub fn matches(pattern: &Value, event: &Value) -> bool {
    match pattern {
        Value::Object(o) => o.iter().all(|(k, p)| matches(p, event.get(k).unwrap_or(&Value::Null))),
        Value::Array(options) => options.iter().any(|opt| match opt {
            Value::Object(o) => o.get("prefix").and_then(Value::as_str).is_some_and(|pre| event.as_str().is_some_and(|v| v.starts_with(pre))),
            literal => literal == event,
        }),
        _ => false,
    }
}

/// A value at `$.a.b.c`.
pub fn at_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.strip_prefix("$.")?.split('.').try_fold(v, |v, k| v.get(k))
}

/// An attribute value in DynamoDB's JSON (`{"S": "..."}`), as a stream
/// record carries it to a Pipe.
fn ddb_json(v: &AttributeValue) -> Value {
    match v {
        AttributeValue::S(s) => json!({"S": s}),
        AttributeValue::N(n) => json!({"N": n}),
        AttributeValue::Bool(b) => json!({"BOOL": b}),
        AttributeValue::Null(_) => json!({"NULL": true}),
        AttributeValue::M(m) => json!({"M": m.iter().map(|(k, v)| (k.clone(), ddb_json(v))).collect::<Map<_, _>>()}),
        AttributeValue::L(l) => json!({"L": l.iter().map(ddb_json).collect::<Vec<_>>()}),
        AttributeValue::Ss(s) => json!({"SS": s}),
        AttributeValue::Ns(n) => json!({"NS": n}),
        _ => Value::Null,
    }
}

/// The record as a Pipe's DynamoDB source hands it on.
fn record_json(r: &Record) -> Value {
    let image = |m: Option<&HashMap<String, AttributeValue>>| m.map(|m| Value::Object(m.iter().map(|(k, v)| (k.clone(), ddb_json(v))).collect()));
    let d = r.dynamodb();
    json!({
        "eventID": r.event_id(),
        "eventName": r.event_name().map(|n| n.as_str().to_string()),
        "eventSource": "aws:dynamodb",
        "dynamodb": {
            "Keys": image(d.and_then(|d| d.keys())),
            "NewImage": image(d.and_then(|d| d.new_image())),
            "SequenceNumber": d.and_then(|d| d.sequence_number()),
        }
    })
}

/// What the Pipe puts on the bus for a record that passed its filter:
/// (detail type, detail). The input template's value is inserted as it is
/// (a string holding a JSON object becomes that object).
pub fn transform(spec: &PipeSpec, record: &Value) -> Result<(String, Value), String> {
    let detail_type = at_path(record, &spec.detail_type_path).and_then(Value::as_str).ok_or_else(|| format!("no {} in the record", spec.detail_type_path))?;
    let detail = match at_path(record, &spec.input_path) {
        Some(Value::String(text)) => serde_json::from_str(text).map_err(|e| format!("{} is not JSON: {e}", spec.input_path))?,
        Some(other) => other.clone(),
        None => return Err(format!("no {} in the record", spec.input_path)),
    };
    Ok((detail_type.to_string(), detail))
}

pub async fn run() -> Result<(), String> {
    let template = std::fs::read_to_string("infra/template.yaml").map_err(|e| format!("infra/template.yaml: {e}"))?;
    let spec = spec_from_template(&template)?;
    let table = env("STATE_TABLE")?;
    let bus = env("EVENT_BUS_NAME")?;
    let checkpoint_path = std::path::Path::new(&env("STACK_DIR")?).join("pipe.checkpoint");
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let ddb_endpoint = env("AWS_ENDPOINT_URL_DYNAMODB")?;
    let ddb = aws_sdk_dynamodb::Client::from_conf(aws_sdk_dynamodb::config::Builder::from(&aws).endpoint_url(&ddb_endpoint).build());
    let streams = aws_sdk_dynamodbstreams::Client::from_conf(aws_sdk_dynamodbstreams::config::Builder::from(&aws).endpoint_url(&ddb_endpoint).build());
    let events = aws_sdk_eventbridge::Client::new(&aws);
    let stream_arn = ddb
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .map_err(|e| format!("DescribeTable {table}: {e:?}"))?
        .table
        .and_then(|t| t.latest_stream_arn)
        .ok_or_else(|| format!("table {table} has no stream (the template's StreamSpecification)"))?;
    // Shard -> last sequence number passed on.
    let mut checkpoint: BTreeMap<String, String> = std::fs::read_to_string(&checkpoint_path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    let mut iterators: HashMap<String, Option<String>> = HashMap::new();
    eprintln!("entitle-dev pipe: {stream_arn} -> bus {bus} (filter {}, detail <{}>)", serde_json::to_string(&spec.filters).unwrap_or_default(), spec.input_path);
    loop {
        let shards = match streams.describe_stream().stream_arn(&stream_arn).send().await {
            Ok(out) => out.stream_description.map(|d| d.shards.unwrap_or_default()).unwrap_or_default(),
            Err(e) => {
                eprintln!("entitle-dev pipe: DescribeStream failed: {e:?}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut idle = true;
        for shard in shards {
            let Some(shard_id) = shard.shard_id().map(str::to_string) else { continue };
            let entry = iterators.entry(shard_id.clone()).or_insert(None);
            if entry.is_none() {
                let mut req = streams.get_shard_iterator().stream_arn(&stream_arn).shard_id(&shard_id);
                req = match checkpoint.get(&shard_id) {
                    Some(seq) => req.shard_iterator_type(ShardIteratorType::AfterSequenceNumber).sequence_number(seq),
                    None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
                };
                match req.send().await {
                    Ok(out) => *entry = out.shard_iterator,
                    Err(e) => {
                        eprintln!("entitle-dev pipe: GetShardIterator failed: {e:?}");
                        continue;
                    }
                }
            }
            let Some(iterator) = entry.clone() else { continue };
            let page = match streams.get_records().shard_iterator(&iterator).limit(10).send().await {
                Ok(p) => p,
                Err(e) => {
                    // An expired or trimmed iterator: start again from the checkpoint.
                    eprintln!("entitle-dev pipe: GetRecords failed: {e:?}");
                    *entry = None;
                    continue;
                }
            };
            let records = page.records.unwrap_or_default();
            let mut batch = Vec::new();
            for r in &records {
                let record = record_json(r);
                if spec.filters.iter().any(|f| matches(f, &record)) {
                    match transform(&spec, &record) {
                        Ok((detail_type, detail)) => batch
                            .push(aws_sdk_eventbridge::types::PutEventsRequestEntry::builder().event_bus_name(&bus).source(&spec.source).detail_type(detail_type).detail(detail.to_string()).build()),
                        Err(e) => eprintln!("entitle-dev pipe: record {} not passed on: {e}", r.event_id().unwrap_or_default()),
                    }
                }
            }
            if !batch.is_empty() {
                idle = false;
                match events.put_events().set_entries(Some(batch)).send().await {
                    Ok(out) if out.failed_entry_count() == 0 => {}
                    Ok(out) => {
                        // Not taken: the same records again (from the checkpoint).
                        eprintln!("entitle-dev pipe: the bus refused {} event(s); trying again", out.failed_entry_count());
                        *entry = None;
                        continue;
                    }
                    Err(e) => {
                        eprintln!("entitle-dev pipe: PutEvents failed: {e:?}");
                        *entry = None;
                        continue;
                    }
                }
            }
            if let Some(last) = records.last().and_then(|r| r.dynamodb()).and_then(|d| d.sequence_number()) {
                checkpoint.insert(shard_id.clone(), last.to_string());
                let _ = std::fs::write(&checkpoint_path, serde_json::to_string(&checkpoint).unwrap_or_default());
                idle = false;
            }
            *entry = page.next_shard_iterator;
        }
        if idle {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_pipe_is_understood_and_applied_as_the_pipe_would() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml")).unwrap();
        let spec = spec_from_template(&text).unwrap();
        let detail = json!({"id": "e1", "type": "member.access_changed", "tenant_id": "acme"});
        let record = |event: &str, pk: &str| {
            json!({"eventName": event, "dynamodb": {"Keys": {"pk": {"S": pk}, "sk": {"S": "e1"}},
                "NewImage": {"pk": {"S": pk}, "sk": {"S": "e1"}, "detail_type": {"S": "member.access_changed"}, "detail": {"S": detail.to_string()}}}})
        };
        let passes = |r: &Value| spec.filters.iter().any(|f| matches(f, r));
        assert!(passes(&record("INSERT", "EV#acme")));
        assert!(!passes(&record("MODIFY", "EV#acme")), "an event item rewritten is not an event again");
        assert!(!passes(&record("REMOVE", "EV#acme")), "an expired event item is not an event");
        assert!(!passes(&record("INSERT", "T#acme")), "only event items");
        assert_eq!(transform(&spec, &record("INSERT", "EV#acme")).unwrap(), ("member.access_changed".to_string(), detail));
        assert_eq!(spec.source, "entitle");
    }

    #[test]
    fn unsupported_pipe_definitions_are_refused() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/template.yaml")).unwrap();
        let numeric = text.replace(r#"[{"prefix": "EV#"}]"#, r#"[{"numeric": [">", 0]}]"#);
        assert!(spec_from_template(&numeric).unwrap_err().contains("not supported"));
        let templated = text.replace(r#"InputTemplate: "<$.dynamodb.NewImage.detail.S>""#, r#"InputTemplate: '{"d": <$.dynamodb.NewImage.detail.S>}'"#);
        assert!(spec_from_template(&templated).unwrap_err().contains("InputTemplate"));
    }
}
