//! Function URL glue shared by the HTTP functions: routing paths, JSON
//! answers, the caller's identity, and the one mapping from domain errors
//! to HTTP answers (`{"error": {"code", "message", ...}}`), which never
//! leaks internals: a failed port is a 500 whose details are in the log.

use crate::app::Error;
use crate::core::rejection::{Kind, Rejection};
use crate::edge::body::within_limit;
use lambda_http::{Body, Request, RequestExt, Response};

/// The request path without the `/lambda-url/<function>` prefix that local
/// function URLs (cargo lambda watch) put in front, percent-decoded (see
/// [`decode_path`]).
pub fn path(req: &Request) -> String {
    let raw = req.raw_http_path();
    let raw = if raw.is_empty() { req.uri().path().to_string() } else { raw.to_string() };
    decode_path(strip_local_prefix(&raw))
}

/// A path as sent, with its percent-escapes decoded: clients encode what
/// they put in a segment (`user%40example.com` is the member
/// `user@example.com`). An escaped `/` stays as sent, so that it never
/// splits a segment (and no id takes it); a path that does not decode to
/// UTF-8 stays as sent (no id takes a `%` either).
pub fn decode_path(p: &str) -> String {
    let bytes = p.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%').then(|| bytes.get(i + 1..i + 3)).flatten().and_then(|h| std::str::from_utf8(h).ok()).and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(b) if b != b'/' => {
                out.push(b);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| p.to_string())
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
pub fn body(req: &Request) -> Result<&[u8], Rejection> {
    within_limit(req.body().as_ref())
}

pub fn request_id(req: &Request) -> String {
    req.lambda_context_ref().map(|c| c.request_id.clone()).filter(|id| !id.is_empty()).unwrap_or_else(|| "local".to_string())
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

pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Response<Body> {
    Response::builder().status(status).header("content-type", "application/json").body(Body::Text(serde_json::to_string(value).expect("serialisable"))).expect("status and header are valid")
}

/// The HTTP status of each kind of refusal.
pub fn status_of(kind: Kind) -> u16 {
    match kind {
        Kind::Malformed => 400,
        Kind::Unauthenticated => 401,
        Kind::Forbidden => 403,
        Kind::NotFound => 404,
        Kind::MethodNotAllowed => 405,
        Kind::Conflict => 409,
        Kind::Precondition => 412,
        Kind::TooLarge => 413,
        Kind::Invalid => 422,
        Kind::RateLimited => 429,
        Kind::NotImplemented => 501,
    }
}

/// The error object of an answer.
pub fn error_body(code: &str, message: &str, details: &serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    let mut error = details.clone();
    error.insert("code".into(), code.into());
    error.insert("message".into(), message.into());
    serde_json::json!({ "error": error })
}

/// The answer to a refused request, logged (without the body) for operators.
pub fn rejected(r: &Rejection) -> Response<Body> {
    let status = status_of(r.kind);
    tracing::warn!(status, code = r.code, message = %r.message, "request refused");
    json(status, &error_body(r.code, &r.message, &r.details))
}

/// The one mapping from a use case's error to an answer: a rejection as
/// its status names it; anything else 500 `internal`, its source chain in
/// the log only.
pub fn answer_error(e: Error) -> Response<Body> {
    match e {
        Error::Rejected(r) => rejected(&r),
        // A service we depend on: 503, nothing changed, try again (Stripe
        // retries its webhooks on any 5xx).
        Error::Upstream(u) => {
            tracing::warn!(service = u.service, error = %u.detail, "upstream unavailable: nothing changed");
            let mut details = serde_json::Map::new();
            details.insert("service".into(), u.service.into());
            let retry = u.retry_after.map(|d| d.as_secs().max(1));
            if let Some(secs) = retry {
                details.insert("retry_after_secs".into(), secs.into());
            }
            let mut answer = json(503, &error_body(&format!("{}_unavailable", u.service), &format!("{}; nothing was changed, try again", u.detail), &details));
            if let Some(secs) = retry {
                answer.headers_mut().insert("retry-after", secs.into());
            }
            answer
        }
        other => {
            tracing::error!(error = %error_chain(&other), "request failed");
            json(500, &error_body("internal", "an internal error occurred; it has been logged", &Default::default()))
        }
    }
}

pub use crate::app::error_chain;

/// No such route: 404 `no_route`.
pub fn no_route(method: &str, path: &str) -> Error {
    Rejection::new(Kind::NotFound, "no_route", format!("no route for {method} {path}")).into()
}

/// A path segment that must be an id: 400 `invalid_path` naming it otherwise.
pub fn id<T>(raw: &str, parse: impl FnOnce(String) -> Result<T, crate::core::ids::InvalidId>) -> Result<T, Error> {
    parse(raw.to_string()).map_err(|e| Rejection::malformed("invalid_path", e.to_string()).into())
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

    #[test]
    fn segments_are_percent_decoded_but_an_escaped_slash_never_splits_one() {
        assert_eq!(decode_path("/tenants/acme/members/user%40example.com"), "/tenants/acme/members/user@example.com");
        assert_eq!(decode_path("/tenants/a%3Ab/members/%C3%A9"), "/tenants/a:b/members/é");
        assert_eq!(decode_path("/tenants/a%2Fmembers"), "/tenants/a%2Fmembers");
        assert_eq!(decode_path("/tenants/a%2fb%2E%2E"), "/tenants/a%2fb..");
        assert_eq!(decode_path("/tenants/100%/x%4"), "/tenants/100%/x%4", "a stray % stays");
        assert_eq!(decode_path("/tenants/%FF"), "/tenants/%FF", "not UTF-8: as sent");
        assert_eq!(decode_path("/tenants/%2525"), "/tenants/%25", "decoded once");
    }

    #[test]
    fn each_kind_of_refusal_has_its_status_and_the_error_shape() {
        assert_eq!(status_of(Kind::Invalid), 422);
        assert_eq!(status_of(Kind::Forbidden), 403);
        let r = Rejection::not_found("tenant t1");
        let b = error_body(r.code, &r.message, &r.details);
        assert_eq!(b["error"]["code"], "not_found");
        assert_eq!(b["error"]["message"], "tenant t1 not found");
    }
}
