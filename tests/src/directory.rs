//! A SCIM client of a tenant's directory, as an identity provider is one:
//! bearer token, `application/scim+json`, and what it does when an answer
//! is lost on the way (it asks again, as Okta and Microsoft Entra ID do).

use crate::{emulator_lost_response, openapi, Stack};
use reqwest::Method;
use serde_json::{json, Value};

/// One directory connection of one tenant.
#[derive(Clone)]
pub struct Directory {
    /// `.../scim/v2/tenants/<tenant>`.
    pub base: String,
    pub token: String,
    pub id: String,
    pub http: reqwest::Client,
}

/// An answer: status, body (JSON, or Null when empty), and headers.
#[derive(Debug, Clone)]
pub struct Scim {
    pub status: u16,
    pub body: Value,
    pub etag: Option<String>,
    pub location: Option<String>,
    pub content_type: Option<String>,
}

impl Directory {
    /// The same connection with another token.
    pub fn with_token(&self, token: &str) -> Directory {
        Directory { token: token.to_string(), ..self.clone() }
    }

    /// The same token on another tenant's directory.
    pub fn on_tenant(&self, tenant: &str) -> Directory {
        let base = format!("{}/{tenant}", self.base.rsplit_once('/').expect("a tenant's base").0);
        Directory { base, ..self.clone() }
    }

    /// One request, once; `path` is relative to the tenant's base (with its query).
    pub async fn once(&self, method: Method, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Scim {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url).bearer_auth(&self.token);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let resp = req.send().await.expect("the directory answers");
        let status = resp.status().as_u16();
        let header = |n: &str| resp.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        let (etag, location, content_type) = (header("etag"), header("location"), header("content-type"));
        let text = resp.text().await.expect("a body");
        let body: Value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {url}: answer {status} is not JSON: {text:?}")) };
        if !emulator_lost_response(status, &body) && !body.is_null() {
            openapi::check(method.as_str(), &url, status, &body);
        }
        Scim { status, body, etag, location, content_type }
    }

    /// A request whose answer `cargo lambda watch` may lose: asked again,
    /// as the IdPs retry. A creation asked again may find what the first
    /// created (409): the caller sees that.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> Scim {
        self.request_with(method, path, body, &[]).await
    }

    pub async fn request_with(&self, method: Method, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Scim {
        let mut attempt = 0;
        loop {
            let a = self.once(method.clone(), path, body, headers).await;
            attempt += 1;
            if attempt == 6 || !emulator_lost_response(a.status, &a.body) {
                return a;
            }
            eprintln!("cargo lambda watch lost the answer to {method} {path}; asking again");
            tokio::time::sleep(std::time::Duration::from_millis(200 << (attempt - 1))).await;
        }
    }

    pub async fn get(&self, path: &str) -> Scim {
        self.request(Method::GET, path, None).await
    }

    /// The Users a filter finds (URL-encoded as Okta sends it).
    pub async fn users_where(&self, filter: &str) -> Vec<Value> {
        let a = self.get(&format!("/Users?filter={}&startIndex=1&count=100", encode(filter))).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["Resources"].as_array().cloned().unwrap_or_default()
    }

    /// Creates a User (as an IdP: a lost answer is asked again, and a 409
    /// for the first attempt's creation is followed by a lookup).
    pub async fn create_user(&self, body: &Value) -> Value {
        let a = self.request(Method::POST, "/Users", Some(body)).await;
        match a.status {
            201 => a.body,
            409 => {
                let name = body["userName"].as_str().unwrap();
                self.users_where(&format!("userName eq \"{name}\"")).await.pop().unwrap_or_else(|| panic!("409 for {name} but no such User: {}", a.body))
            }
            _ => panic!("creating {body}: {} {}", a.status, a.body),
        }
    }

    pub async fn patch(&self, path: &str, ops: Value) -> Scim {
        self.request(Method::PATCH, path, Some(&json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops}))).await
    }
}

/// Percent-encodes a query value.
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Stack {
    /// `POST /tenants/{tenant}/directories`: (status, answer).
    pub async fn post_directory(&self, tenant: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}/tenants/{tenant}/directories", self.ingest)).json(body)).await
    }

    /// A directory connection of the tenant (`when_full`: its own choice, if any).
    pub async fn connect_directory(&self, tenant: &str, name: &str, when_full: Option<&str>) -> Directory {
        let mut body = json!({"name": name});
        if let Some(w) = when_full {
            body["when_full"] = json!(w);
        }
        let (status, answer) = self.post_directory(tenant, &body).await;
        assert_eq!(status, 201, "{answer}");
        Directory {
            base: answer["scim_base_url"].as_str().expect("scim_base_url").to_string(),
            token: answer["token"].as_str().expect("a token").to_string(),
            id: answer["directory_id"].as_str().expect("directory_id").to_string(),
            http: self.http.clone(),
        }
    }

    /// `POST .../directories/{id}/rotate`.
    pub async fn rotate_directory(&self, tenant: &str, id: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}/tenants/{tenant}/directories/{id}/rotate", self.ingest));
        if let Some(b) = body {
            req = req.json(b);
        }
        self.send(req).await
    }

    /// `DELETE .../directories/{id}`.
    pub async fn revoke_directory(&self, tenant: &str, id: &str) -> (u16, Value) {
        self.send(self.http.delete(format!("{}/tenants/{tenant}/directories/{id}", self.ingest))).await
    }

    /// `GET .../directories`, `PATCH .../directories/{id}`.
    pub async fn directories(&self, tenant: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}/tenants/{tenant}/directories", self.ingest))).await
    }

    pub async fn update_directory(&self, tenant: &str, id: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.patch(format!("{}/tenants/{tenant}/directories/{id}", self.ingest)).json(body)).await
    }
}
