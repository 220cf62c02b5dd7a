//! `infra/openapi.yaml` as a check: every JSON answer the end-to-end tests
//! receive from a function URL goes through [`check`], which finds the
//! documented operation (function, method, path template), requires the
//! status to be documented (or covered by `default`), and validates the
//! body against the documented schema. An answer to a route the document
//! does not have must be a documented error.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let path = format!("{}/../infra/openapi.yaml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
    })
}

/// The function (`ingest`, `access`, ...) and the path after its URL,
/// without the query.
fn split(url: &str) -> Option<(&str, &str)> {
    let rest = url.split_once("/lambda-url/")?.1;
    let rest = rest.split('?').next().unwrap_or(rest);
    let (function, path) = rest.split_once('/').map_or((rest, ""), |(f, p)| (f, p));
    Some((function, path))
}

fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.trim_matches('/').split('/').collect(), path.trim_matches('/').split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// The documented operation of `function` for `method` and `path`.
pub fn operation(function: &str, method: &str, path: &str) -> Option<(String, &'static Value)> {
    let paths = document()["paths"].as_object()?;
    paths.iter().find_map(|(template, item)| {
        let op = item.get(method.to_lowercase())?;
        let served = op["servers"].as_array().is_some_and(|s| s.iter().any(|s| s["url"].as_str().is_some_and(|u| u.ends_with(&format!("/lambda-url/{function}")))));
        (served && matches(template, path)).then(|| (template.clone(), op))
    })
}

fn resolve(node: &'static Value) -> &'static Value {
    match node.get("$ref").and_then(Value::as_str).and_then(|r| r.strip_prefix("#/")) {
        Some(pointer) => document().pointer(&format!("/{pointer}")).unwrap_or_else(|| panic!("infra/openapi.yaml: no {pointer}")),
        None => node,
    }
}

fn validator(key: &str, schema: &Value) -> Arc<jsonschema::Validator> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> = OnceLock::new();
    let mut cache = CACHE.get_or_init(Default::default).lock().unwrap();
    cache
        .entry(key.to_string())
        .or_insert_with(|| {
            // The schema with the document's components beside it, so that
            // its `#/components/...` references resolve.
            let mut root = schema.clone();
            root["components"] = document()["components"].clone();
            Arc::new(jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("infra/openapi.yaml: the schema of {key} is not valid: {e}")))
        })
        .clone()
}

/// Checks one answer: `url` as called, `status` and the JSON `body`.
pub fn check(method: &str, url: &str, status: u16, body: &Value) {
    let Some((function, path)) = split(url) else { return };
    let (key, schema) = match operation(function, method, path) {
        Some((template, op)) => {
            let responses = &op["responses"];
            let response = responses
                .get(status.to_string())
                .or_else(|| responses.get("default"))
                .unwrap_or_else(|| panic!("infra/openapi.yaml: {method} {template} ({function}) does not document the answer {status}: {body}"));
            let content = &resolve(response)["content"];
            // SCIM answers are `application/scim+json`.
            let content = content.get("application/json").unwrap_or(&content["application/scim+json"]);
            let schema = content.get("schema").unwrap_or_else(|| panic!("infra/openapi.yaml: {method} {template} ({function}) answers {status} with JSON, the document says otherwise: {body}"));
            (format!("{function} {method} {template} {status}"), schema)
        }
        None => {
            assert!(status >= 400, "{method} /{path} ({function}) answered {status} but infra/openapi.yaml has no such operation: {body}");
            if function == "directory" {
                ("scim error".to_string(), &document()["components"]["responses"]["ScimError"]["content"]["application/scim+json"]["schema"])
            } else {
                ("error".to_string(), &document()["components"]["responses"]["Error"]["content"]["application/json"]["schema"])
            }
        }
    };
    let problems: Vec<String> = validator(&key, schema).iter_errors(body).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(problems.is_empty(), "{key}: the answer does not match infra/openapi.yaml: {problems:?}\n{body}");
}

/// Checks a value against a schema of the document's components (what a
/// signed token's claims are documented as, for example).
pub fn check_schema(name: &str, value: &Value) {
    let schema = &document()["components"]["schemas"][name];
    assert!(schema.is_object(), "infra/openapi.yaml has no schema {name}");
    let problems: Vec<String> = validator(name, schema).iter_errors(value).map(|e| format!("{e} at {}", e.instance_path())).collect();
    assert!(problems.is_empty(), "{name}: does not match infra/openapi.yaml: {problems:?}\n{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_by_function_method_and_template() {
        assert_eq!(split("http://h/lambda-url/access/tenants/t1/audit?after=3"), Some(("access", "tenants/t1/audit")));
        assert_eq!(operation("access", "GET", "tenants/t1").unwrap().0, "/tenants/{tenant}");
        assert_eq!(operation("ingest", "DELETE", "tenants/t1/members/u1").unwrap().0, "/tenants/{tenant}/members/{user}");
        assert!(operation("access", "DELETE", "tenants/t1/members/u1").is_none(), "a route of another function");
        assert!(operation("admin", "GET", "tenants/t1/members/u1/explain").is_some());
        assert!(operation("access", "GET", "tenants//audit").is_none(), "an empty segment is no parameter");
    }

    #[test]
    fn an_answer_off_the_document_is_refused() {
        let tenant = serde_json::json!({"tenant_id": "t1", "tier": "team", "status": "active", "seats": {"total": 3, "used": 1},
            "entitlements": {"sso": false, "projects": 20}, "expires_at": null, "add_ons": [], "seats_pending": 0});
        check("GET", "http://h/lambda-url/access/tenants/t1", 200, &tenant);
        let mut wrong = tenant.clone();
        wrong["seats"]["used"] = serde_json::json!("one");
        assert!(std::panic::catch_unwind(|| check("GET", "http://h/lambda-url/access/tenants/t1", 200, &wrong)).is_err());
        assert!(std::panic::catch_unwind(|| check("GET", "http://h/lambda-url/access/tenants/t1", 200, &serde_json::json!({"tenant_id": "t1"}))).is_err());
        check("GET", "http://h/lambda-url/access/nowhere", 404, &serde_json::json!({"error": {"code": "no_route", "message": "no route for GET /nowhere"}}));
        assert!(std::panic::catch_unwind(|| check("GET", "http://h/lambda-url/access/nowhere", 200, &tenant)).is_err(), "a success off the document");
        assert!(std::panic::catch_unwind(|| check("GET", "http://h/lambda-url/access/tenants/t1", 404, &serde_json::json!({"oops": 1}))).is_err(), "an error without the error body");
    }
}
