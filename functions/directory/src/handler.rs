//! directory's routes, under `/scim/v2/tenants/{tenant}`: authenticate the
//! connection, call the use case, answer in SCIM's shapes
//! (`application/scim+json`, `ETag`, `Location`, SCIM errors).

use chrono::Utc;
use entitle::adapters::dynamodb::Dynamo;
use entitle::adapters::sqs::ReconcileQueue;
use entitle::app::directory::{self, list_response, Answer, Session};
use entitle::app::ports::Tenants;
use entitle::app::Error;
use entitle::core::audit::Cause;
use entitle::core::provider::filter::{get_ci, Filter};
use entitle::core::provider::resource::{attribute_list, project};
use entitle::core::provider::schemas::{self, ERROR, SEARCH};
use entitle::core::rejection::Rejection;
use entitle::edge::body::parse_json;
use entitle::edge::{config, http, metrics};
use lambda_http::{Body, Request, Response};
use serde_json::{json, Value};

pub struct App {
    pub store: Dynamo,
    pub queue: ReconcileQueue,
}

const SCIM_JSON: &str = "application/scim+json";
const DOCS: &str = "https://github.com/entitle/entitle/blob/main/docs/directory.md";

pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let path = http::path(&req);
    let method = req.method().as_str().to_string();
    let segs = http::segments(&path);
    let (tenant, answer) = match segs.as_slice() {
        ["scim", "v2", "tenants", tenant, rest @ ..] => (Some(tenant.to_string()), route(app, &req, &method, tenant, rest).await),
        _ => (None, Err(Rejection::not_found(&format!("{method} {path}: the directory is at /scim/v2/tenants/{{tenant}}/")).into())),
    };
    let refused = matches!(&answer, Err(Error::Rejected(r)) if r.code == "seat_limit_reached");
    let response = answer.unwrap_or_else(scim_error);
    metrics::directory_request(response.status().as_u16(), refused).property("tenant", tenant.unwrap_or_default()).property("request_id", http::request_id(&req)).emit();
    Ok(response)
}

/// The directory's base URL for a tenant, as the caller reached it.
fn base_url(req: &Request, tenant: &str) -> String {
    let host = http::header(req, "host").unwrap_or("localhost");
    let proto = http::header(req, "x-forwarded-proto").unwrap_or(if host.starts_with("127.0.0.1") || host.starts_with("localhost") { "http" } else { "https" });
    let raw = req.uri().path();
    // Locally (cargo lambda watch) the function's URL has a prefix.
    let prefix = raw.find("/scim/v2/").map_or("", |i| &raw[..i]);
    format!("{proto}://{host}{prefix}/scim/v2/tenants/{tenant}")
}

async fn route(app: &App, req: &Request, method: &str, tenant: &str, rest: &[&str]) -> Result<Response<Body>, Error> {
    let now = Utc::now();
    // A sync's pushes: authenticated on the read the push needs anyway.
    if let (("POST", ["Users"]), Ok(b)) = ((method, rest), body(req)) {
        let incoming = directory::Incoming { tenant, authorization: http::header(req, "authorization"), request_id: http::request_id(req), base: base_url(req, tenant), now };
        if let Some((s, a)) = directory::push_user(&app.store, incoming, &b).await? {
            return created(app, &s, a, req).await;
        }
    }
    let (tenant, connection) = directory::authenticate(&app.store, tenant, http::header(req, "authorization"), now).await?;
    // The tenant is known to accounts (a license or contract), or 404.
    entitle::app::members::known(&tenant, app.store.meta(&tenant).await?)?;
    let base = base_url(req, tenant.as_str());
    let s = Session { store: &app.store, tenant, connection, request_id: http::request_id(req), base, now, targets: Default::default() };
    let if_match = http::header(req, "if-match");
    let q = |name: &str| http::query(req, name);
    let answer = match (method, rest) {
        ("GET", ["ServiceProviderConfig"]) => Ok(scim(200, &schemas::service_provider_config(&s.base, DOCS))),
        ("GET", ["ResourceTypes"]) => Ok(scim(200, &list_response(schemas::resource_types(&s.base), 1, schemas::MAX_RESULTS))),
        ("GET", ["ResourceTypes", id]) => one_of(schemas::resource_types(&s.base), id, "ResourceType"),
        ("GET", ["Schemas"]) => Ok(scim(200, &list_response(schemas::all(&s.base), 1, schemas::MAX_RESULTS))),
        ("GET", ["Schemas", id]) => one_of(schemas::all(&s.base), id, "Schema"),
        (_, ["ServiceProviderConfig" | "ResourceTypes" | "Schemas", ..]) => Err(not_allowed(method, "the directory's description is read-only")),
        ("POST", ["Bulk"]) | (_, ["Me", ..]) => Err(Rejection::not_implemented(format!("{} is not supported (see /ServiceProviderConfig)", rest.join("/"))).into()),
        ("GET", ["Users"]) => {
            let f = filter(q("filter").as_deref())?;
            let all = s.find_users(f.as_ref()).await?;
            Ok(scim(200, &listed(all, &Listing::of_query(req)?)))
        }
        ("POST", ["Users", ".search"]) => search(&s, req, true, false).await,
        ("POST", ["Groups", ".search"]) => search(&s, req, false, true).await,
        ("POST", [".search"]) => search(&s, req, true, true).await,
        ("POST", ["Users"]) => created(app, &s, s.create_user(&body(req)?).await?, req).await,
        ("GET", ["Users", id]) => Ok(resource(200, s.get_user(id).await?, req)),
        ("PUT", ["Users", id]) => changed(app, &s, s.replace_user(id, &body(req)?, if_match).await?, req).await,
        ("PATCH", ["Users", id]) => changed(app, &s, s.patch_user(id, &body(req)?, if_match).await?, req).await,
        ("DELETE", ["Users", id]) => {
            s.delete_user(id, if_match).await?;
            enqueue(app, &s, "user-deleted").await?;
            Ok(no_content())
        }
        ("GET", ["Groups"]) => {
            let f = filter(q("filter").as_deref())?;
            let listing = Listing::of_query(req)?;
            let all = s.find_groups(f.as_ref(), listing.wants_members()).await?;
            Ok(scim(200, &listed(all, &listing)))
        }
        ("POST", ["Groups"]) => {
            let id = entitle::core::provider::resource::new_group_id(&config::random());
            created(app, &s, s.create_group(&body(req)?, &id).await?, req).await
        }
        ("GET", ["Groups", id]) => {
            let listing = Listing::of_query(req)?;
            Ok(resource(200, s.get_group(id, listing.wants_members()).await?, req))
        }
        ("PUT", ["Groups", id]) => changed(app, &s, s.replace_group(id, &body(req)?, if_match, Listing::of_query(req)?.wants_members()).await?, req).await,
        ("PATCH", ["Groups", id]) => changed(app, &s, s.patch_group(id, &body(req)?, if_match, Listing::of_query(req)?.wants_members()).await?, req).await,
        ("DELETE", ["Groups", id]) => {
            s.delete_group(id, if_match).await?;
            enqueue(app, &s, "group-deleted").await?;
            Ok(no_content())
        }
        ("GET" | "POST" | "PUT" | "PATCH" | "DELETE", ["Users" | "Groups", ..]) => Err(not_allowed(method, "not a method of this endpoint")),
        _ => Err(Rejection::not_found(&format!("{method} /{}", rest.join("/"))).into()),
    };
    answer
}

fn not_allowed(method: &str, why: &str) -> Error {
    Rejection::method_not_allowed(format!("{method}: {why}")).into()
}

fn one_of(list: Vec<Value>, id: &str, what: &str) -> Result<Response<Body>, Error> {
    list.into_iter().find(|v| v["id"].as_str() == Some(id)).map(|v| scim(200, &v)).ok_or_else(|| Rejection::not_found(&format!("{what} {id}")).into())
}

fn filter(raw: Option<&str>) -> Result<Option<Filter>, Error> {
    Ok(raw.filter(|f| !f.trim().is_empty()).map(Filter::parse).transpose()?)
}

fn body(req: &Request) -> Result<Value, Error> {
    let v: Value = parse_json(http::body(req)?).map_err(|r| r.with("scimType", "invalidSyntax"))?;
    Ok(v)
}

/// `startIndex`, `count`, `attributes`, `excludedAttributes`, from the
/// query or a SearchRequest.
struct Listing {
    start: usize,
    count: usize,
    attributes: Vec<String>,
    excluded: Vec<String>,
}

impl Listing {
    fn of(start: Option<String>, count: Option<String>, attributes: Option<String>, excluded: Option<String>) -> Result<Self, Error> {
        let number = |v: Option<String>, name: &str, default: usize| -> Result<usize, Error> {
            match v {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse::<i64>()
                    .map(|n| usize::try_from(n.max(0)).unwrap_or(0))
                    .map_err(|_| Rejection::malformed("invalid_value", format!("{name}: an integer")).with("scimType", "invalidValue").into()),
            }
        };
        Ok(Listing {
            start: number(start, "startIndex", 1)?.max(1),
            count: number(count, "count", schemas::MAX_RESULTS)?,
            attributes: attribute_list(attributes.as_deref()),
            excluded: attribute_list(excluded.as_deref()),
        })
    }

    fn of_query(req: &Request) -> Result<Self, Error> {
        Self::of(http::query(req, "startIndex"), http::query(req, "count"), http::query(req, "attributes"), http::query(req, "excludedAttributes"))
    }

    /// Whether a Group's members are shown (and so read).
    fn wants_members(&self) -> bool {
        let named = |l: &[String]| l.iter().any(|a| a.eq_ignore_ascii_case("members") || a.to_ascii_lowercase().starts_with("members."));
        !named(&self.excluded) && (self.attributes.is_empty() || named(&self.attributes))
    }
}

fn listed(all: Vec<Value>, l: &Listing) -> Value {
    let projected: Vec<Value> = all.into_iter().map(|r| project(r, &l.attributes, &l.excluded)).collect();
    list_response(projected, l.start, l.count)
}

/// `POST .search` (RFC 7644 §3.4.3): Users, Groups, or both (the root).
async fn search(s: &Session<'_, Dynamo>, req: &Request, users: bool, groups: bool) -> Result<Response<Body>, Error> {
    let b = body(req)?;
    if !get_ci(&b, "schemas").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(|x| x.eq_ignore_ascii_case(SEARCH)))) {
        return Err(Rejection::malformed("invalid_syntax", format!("a search is a SearchRequest: \"schemas\": [\"{SEARCH}\"]")).with("scimType", "invalidSyntax").into());
    }
    let text = |k: &str| {
        get_ci(&b, k).map(|v| match v {
            Value::String(s) => s.clone(),
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(","),
            v => v.to_string(),
        })
    };
    let listing = Listing::of(text("startIndex"), text("count"), text("attributes"), text("excludedAttributes"))?;
    let f = filter(text("filter").as_deref())?;
    let mut all = Vec::new();
    if users {
        all.extend(s.find_users(f.as_ref()).await?);
    }
    if groups {
        all.extend(s.find_groups(f.as_ref(), listing.wants_members()).await?);
    }
    Ok(scim(200, &listed(all, &listing)))
}

fn scim(status: u16, v: &Value) -> Response<Body> {
    Response::builder().status(status).header("content-type", SCIM_JSON).body(Body::Text(v.to_string())).expect("status and header are valid")
}

fn no_content() -> Response<Body> {
    Response::builder().status(204).body(Body::Empty).expect("status is valid")
}

/// A resource, with its ETag, projected as the query asks.
fn resource(status: u16, r: Value, req: &Request) -> Response<Body> {
    let version = r["meta"]["version"].as_str().map(str::to_string);
    let location = r["meta"]["location"].as_str().map(str::to_string);
    let r = project(r, &attribute_list(http::query(req, "attributes").as_deref()), &attribute_list(http::query(req, "excludedAttributes").as_deref()));
    let mut answer = scim(status, &r);
    if let Some(v) = version.and_then(|v| v.parse().ok()) {
        answer.headers_mut().insert("etag", v);
    }
    if status == 201 {
        if let Some(l) = location.and_then(|l| l.parse().ok()) {
            answer.headers_mut().insert("location", l);
        }
    }
    answer
}

async fn created(app: &App, s: &Session<'_, Dynamo>, a: Answer, req: &Request) -> Result<Response<Body>, Error> {
    tracing::info!(tenant = %s.tenant, directory = %s.connection.id, cause = %Cause::directory(&s.connection.id, &s.request_id), id = a.resource["id"].as_str(), "directory resource created");
    enqueue(app, s, "created").await?;
    Ok(resource(201, a.resource, req))
}

async fn changed(app: &App, s: &Session<'_, Dynamo>, a: Answer, req: &Request) -> Result<Response<Body>, Error> {
    if a.changed {
        tracing::info!(tenant = %s.tenant, directory = %s.connection.id, cause = %Cause::directory(&s.connection.id, &s.request_id), id = a.resource["id"].as_str(), "directory resource changed");
        enqueue(app, s, "changed").await?;
    }
    Ok(resource(200, a.resource, req))
}

/// A reconcile of the tenant: its pending audit records chained, the
/// change delivered to its SCIM targets, a freed seat given to the line;
/// coalesced with the other requests made since provision last started on
/// the tenant (`reconcile::wake`), so that a first sync queues one message
/// per reconcile, not one per User.
async fn enqueue(app: &App, s: &Session<'_, Dynamo>, what: &str) -> Result<(), Error> {
    let cause = Cause::directory(&s.connection.id, &s.request_id);
    Ok(entitle::app::reconcile::wake(&app.store, &app.queue, &s.tenant, cause, &format!("directory-{what}:{}:{}", s.tenant, s.request_id)).await?)
}

/// The SCIM error of a refusal (RFC 7644 §3.12): `status` as a string,
/// `scimType` where SCIM names one, `detail`, and Entitle's fields
/// (`seats`, ...). A failure of ours is a 500/503 in the same shape, its
/// details in the log only.
fn scim_error(e: Error) -> Response<Body> {
    let plain = http::answer_error(match e {
        Error::Rejected(r) => {
            let status = http::status_of(r.kind);
            tracing::warn!(status, code = r.code, message = %r.message, "directory request refused");
            let mut body = json!({"schemas": [ERROR], "status": status.to_string(), "detail": r.message});
            // SCIM's `status` is the HTTP status; no detail replaces it.
            for (k, v) in r.details.iter().filter(|(k, _)| k.as_str() != "status") {
                body[k] = v.clone();
            }
            let mut answer = scim(status, &body);
            if status == 401 {
                answer.headers_mut().insert("www-authenticate", "Bearer realm=\"entitle-directory\"".parse().expect("a valid header"));
            }
            return answer;
        }
        other => other,
    });
    let status = plain.status().as_u16();
    let detail = match plain.body() {
        Body::Text(t) => serde_json::from_str::<Value>(t).ok().and_then(|v| v["error"]["message"].as_str().map(str::to_string)).unwrap_or_default(),
        _ => String::new(),
    };
    let mut answer = scim(status, &json!({"schemas": [ERROR], "status": status.to_string(), "detail": detail}));
    if let Some(r) = plain.headers().get("retry-after") {
        answer.headers_mut().insert("retry-after", r.clone());
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_reads_its_parameters_and_members_follow_them() {
        let l = Listing::of(Some("0".into()), Some("500".into()), None, Some("members".into())).unwrap();
        assert_eq!((l.start, l.count), (1, 500));
        assert!(!l.wants_members());
        assert!(Listing::of(None, None, Some("displayName,members".into()), None).unwrap().wants_members());
        assert!(!Listing::of(None, None, Some("displayName".into()), None).unwrap().wants_members());
        assert!(Listing::of(Some("x".into()), None, None, None).is_err());
    }
}
