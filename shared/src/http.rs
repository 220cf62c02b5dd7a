//! Function URL glue shared by the HTTP functions: routing paths, JSON
//! answers, errors that name the problem without leaking internals.

use crate::api::{ApiError, MAX_BODY_BYTES};
use crate::store::StoreError;
use lambda_http::{Body, Request, RequestExt, Response};

/// The request path without the `/lambda-url/<function>` prefix that local
/// function URLs (cargo lambda watch) put in front.
pub fn path(req: &Request) -> String {
    let raw = req.raw_http_path();
    let raw = if raw.is_empty() { req.uri().path().to_string() } else { raw.to_string() };
    strip_local_prefix(&raw).to_string()
}

pub fn strip_local_prefix(p: &str) -> &str {
    match p.strip_prefix("/lambda-url/") {
        Some(rest) => match rest.find('/') {
            Some(i) => &rest[i..],
            None => "/",
        },
        None => p,
    }
}

/// Path segments, without empty ones.
pub fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

pub fn header<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

pub fn query(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref().and_then(|q| q.first(name).map(str::to_string))
}

/// The raw body, refusing oversize ones before anything reads them.
pub fn body(req: &Request) -> Result<&[u8], ApiError> {
    let b: &[u8] = req.body().as_ref();
    if b.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    Ok(b)
}

/// The caller's identity as AWS authenticated it: the IAM principal (user
/// or assumed-role ARN) of a function URL request with `AuthType: AWS_IAM`.
/// None where the URL does not authenticate (the local stack).
pub fn principal(req: &Request) -> Option<String> {
    match req.request_context_ref()? {
        lambda_http::request::RequestContext::ApiGatewayV2(ctx) => ctx.authorizer.as_ref()?.iam.as_ref()?.user_arn.clone().filter(|a| !a.is_empty()),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}

pub fn request_id(req: &Request) -> String {
    req.lambda_context_ref().map(|c| c.request_id.clone()).filter(|id| !id.is_empty()).unwrap_or_else(|| "local".to_string())
}

pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Body::Text(serde_json::to_string(value).expect("serialisable")))
        .expect("status and header are valid")
}

pub fn error(e: &ApiError) -> Response<Body> {
    json(e.status, &e.body())
}

/// An internal failure: logged with its source chain, answered 500 without details.
pub fn internal(e: &dyn std::error::Error) -> ApiError {
    tracing::error!(error = %error_chain(e), "request failed");
    ApiError::internal()
}

/// A store error for the caller: caller errors as they are, anything else internal.
pub fn api_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Api(api) => api,
        other => internal(&other),
    }
}

/// Maps a store error to an answer.
pub fn store_error(e: StoreError) -> Response<Body> {
    error(&api_error(e))
}

/// The answer to a refused request, logged (without the body) for operators.
pub fn refused(e: &ApiError) -> Response<Body> {
    if e.status < 500 {
        tracing::warn!(status = e.status, code = e.code, message = %e.message, "request refused");
    }
    error(e)
}

pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}

pub fn not_found_route(method: &str, path: &str) -> Response<Body> {
    error(&ApiError::new(404, "no_route", format!("no route for {method} {path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_local_function_url_prefix() {
        assert_eq!(strip_local_prefix("/lambda-url/ingest/stripe"), "/stripe");
        assert_eq!(strip_local_prefix("/lambda-url/access"), "/");
        assert_eq!(strip_local_prefix("/tenants/t1"), "/tenants/t1");
        assert_eq!(segments("/tenants//t1/"), vec!["tenants", "t1"]);
    }
}
