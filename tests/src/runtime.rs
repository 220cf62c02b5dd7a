//! A minimal stand-in for the Lambda Runtime API, to run one function binary
//! in a configuration of its own (the shared local stack runs every
//! function with one environment): it serves the binary exactly one
//! invocation (`GET .../invocation/next`), takes its answer (`POST
//! .../response` or `.../error`), and stops the process.
//!
//! Only the four calls a Rust runtime makes are served; that is all it is.

use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

const REQUEST_ID: &str = "runtime-stand-in-1";

/// What the function answered to its one invocation.
#[derive(Debug)]
pub struct Outcome {
    /// `true` when it reported an error (`.../error`).
    pub failed: bool,
    pub body: Value,
}

/// A workspace binary built by `make build` (beside this test's own).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>/deps");
    let path = dir.join(name);
    assert!(path.exists(), "{} is not built: run `make build` first", path.display());
    path
}

/// Runs `binary` with `env` (and the variables the Lambda runtime sets),
/// hands it `event`, and returns its answer; the process is stopped after.
pub async fn invoke_once(binary: PathBuf, env: &HashMap<String, String>, event: &Value, timeout: Duration) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = listener.local_addr().unwrap().to_string();
    let name = binary.file_name().unwrap().to_string_lossy().to_string();
    let mut child = tokio::process::Command::new(&binary)
        .env_clear()
        .envs(env)
        .env("AWS_LAMBDA_RUNTIME_API", &api)
        .env("AWS_LAMBDA_FUNCTION_NAME", &name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let deadline = Instant::now() + timeout;
    let deadline_ms = (chrono::Utc::now() + chrono::Duration::from_std(timeout).unwrap()).timestamp_millis();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Outcome>();
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let event = event.to_string();
    let server = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let (tx, delivered, event, name) = (tx.clone(), delivered.clone(), event.clone(), name.clone());
            // One task per connection: the runtime may use several.
            tokio::spawn(async move {
                while let Some(req) = crate::read_request(&mut stream).await.unwrap_or(None) {
                    if req.method == "GET" && req.path.ends_with("/runtime/invocation/next") {
                        if delivered.swap(true, std::sync::atomic::Ordering::SeqCst) {
                            // One invocation only: hold the next poll until the process is stopped.
                            std::future::pending::<()>().await;
                        }
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nLambda-Runtime-Aws-Request-Id: {REQUEST_ID}\r\nLambda-Runtime-Deadline-Ms: {deadline_ms}\r\nLambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:123456789012:function:{name}\r\nContent-Length: {}\r\n\r\n{event}",
                            event.len()
                        );
                        if stream.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let _ = stream.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}").await;
                    let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                    if req.path.ends_with(&format!("/invocation/{REQUEST_ID}/response")) {
                        let _ = tx.send(Outcome { failed: false, body });
                    } else if req.path.ends_with("/error") {
                        let _ = tx.send(Outcome { failed: true, body });
                    }
                }
            });
        }
    });
    let left = deadline.saturating_duration_since(Instant::now());
    let outcome = tokio::time::timeout(left, rx.recv()).await.ok().flatten();
    server.abort();
    let outcome = outcome.unwrap_or_else(|| panic!("{} gave no answer within {timeout:?}", binary.display()));
    let _ = child.kill().await;
    outcome
}
