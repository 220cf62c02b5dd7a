//! A hostile HTTP peer on 127.0.0.1: a SCIM target that answers the way a
//! broken or malicious target would, which no well-behaved SCIM server
//! (scim2-server included) can be made to do: a body that never ends, a
//! `totalResults` of a billion, pages that go on forever, an error page that
//! echoes what it should not. And Stripe's API as it fails, which
//! localstripe cannot be made to: rate-limited (429 with `Retry-After`),
//! erring (5xx), or not answering at all. Everything else about SCIM is
//! tested against scim2-server, and about Stripe against localstripe.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 with a chunked body that never ends.
    Endless,
    /// Every list page is full (100 users) and claims `total` results.
    Claims { total: u64 },
    /// Always this status and body.
    Answer { status: u16, body: String },
    /// 429 with `Retry-After: secs`, as Stripe rate-limits.
    Throttle { retry_after: u64 },
    /// Reads the request and never answers.
    Silent,
    /// One group (`g1`, named by the filter it is looked up by, no
    /// members); a PATCH removing more than `members` members at once is
    /// never answered (a target that searches a large group per removed
    /// member, past the client's timeout), smaller ones answer 204.
    SlowRemovals { members: usize },
    /// One group (`g1`, `entitle-member`) answered without `members`, as
    /// some targets answer groups; `hidden`: it has members all the same
    /// (`members pr` finds it, and so does a `members[value eq ...]`
    /// search), else it is empty.
    Unlisted { hidden: bool },
}

pub struct HostileTarget {
    pub url: String,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Requests received.
    pub requests: Arc<AtomicU64>,
    /// Under [`Behaviour::SlowRemovals`]: how many members each PATCH named, and whether it was answered.
    pub removals: Arc<Mutex<Vec<(usize, bool)>>>,
    /// The request lines' paths, in order.
    pub paths: Arc<Mutex<Vec<String>>>,
}

impl HostileTarget {
    pub async fn start(behaviour: Behaviour) -> HostileTarget {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let behaviour = Arc::new(Mutex::new(behaviour));
        let requests = Arc::new(AtomicU64::new(0));
        let removals = Arc::new(Mutex::new(Vec::new()));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (b, r, m, p) = (behaviour.clone(), requests.clone(), removals.clone(), paths.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (b, r, m, p) = (b.clone(), r.clone(), m.clone(), p.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, b, r, m, p).await;
                });
            }
        });
        HostileTarget { url, behaviour, requests, removals, paths }
    }

    pub fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }
}

fn page(total: u64, start: u64) -> String {
    let users: Vec<serde_json::Value> = (0..100)
        .map(|i| serde_json::json!({"schemas": [entitle::core::scim::USER_SCHEMA], "id": format!("u{}", start + i), "userName": format!("flood{}@example.test", start + i), "active": true}))
        .collect();
    serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": total, "startIndex": start, "itemsPerPage": 100, "Resources": users}).to_string()
}

async fn serve(mut stream: TcpStream, behaviour: Arc<Mutex<Behaviour>>, requests: Arc<AtomicU64>, removals: Arc<Mutex<Vec<(usize, bool)>>>, paths: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    while let Some(req) = crate::read_request(&mut stream).await? {
        requests.fetch_add(1, Ordering::SeqCst);
        paths.lock().unwrap().push(req.path.clone());
        let behaviour = behaviour.lock().unwrap().clone();
        match behaviour {
            Behaviour::Endless => {
                stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nTransfer-Encoding: chunked\r\n\r\n").await?;
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
                loop {
                    // Until the client hangs up.
                    stream.write_all(chunk.as_bytes()).await?;
                }
            }
            Behaviour::Claims { total } => {
                let start = req.path.split("startIndex=").nth(1).and_then(|v| v.split(['&', ' ']).next()).and_then(|v| v.parse().ok()).unwrap_or(1);
                let body = page(total, start);
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                stream.write_all(answer.as_bytes()).await?;
            }
            Behaviour::Answer { status, body } => {
                let answer = format!("HTTP/1.1 {status} Whatever\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                stream.write_all(answer.as_bytes()).await?;
            }
            Behaviour::Throttle { retry_after } => {
                let body = r#"{"error":{"message":"Too many requests hit the API too quickly.","type":"invalid_request_error","code":"rate_limit"}}"#;
                let answer = format!("HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nRetry-After: {retry_after}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                stream.write_all(answer.as_bytes()).await?;
            }
            Behaviour::Silent => std::future::pending::<()>().await,
            Behaviour::SlowRemovals { members } => {
                if req.method == "PATCH" {
                    let named = String::from_utf8_lossy(&req.body).matches("value eq").count();
                    removals.lock().unwrap().push((named, named <= members));
                    if named > members {
                        std::future::pending::<()>().await;
                    }
                    stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").await?;
                } else {
                    let group = serde_json::json!({"id": "g1", "displayName": "entitle-member", "members": []});
                    let body =
                        serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": 1, "startIndex": 1, "itemsPerPage": 1, "Resources": [group]}).to_string();
                    let answer = format!("HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    stream.write_all(answer.as_bytes()).await?;
                }
            }
            Behaviour::Unlisted { hidden } => {
                // The filter as the server reads it (decoded).
                let url = reqwest::Url::parse(&format!("http://target{}", req.path)).expect("a request path");
                let filter: String = url.query_pairs().filter(|(k, _)| k == "filter").map(|(_, v)| v.into_owned()).collect();
                let searched = filter.contains("members pr") || filter.contains("members[value eq");
                let found = !searched || hidden;
                let groups: Vec<serde_json::Value> = if found { vec![serde_json::json!({"id": "g1", "displayName": "entitle-member"})] } else { vec![] };
                let body = serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": groups.len(), "startIndex": 1, "itemsPerPage": groups.len(), "Resources": groups}).to_string();
                let answer = format!("HTTP/1.1 200 OK\r\nContent-Type: application/scim+json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                stream.write_all(answer.as_bytes()).await?;
            }
        }
    }
    Ok(())
}
