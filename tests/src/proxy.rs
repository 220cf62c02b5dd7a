//! Real network faults for a real server: a proxy that drops, hangs or throttles.

use serde_json::Value;

/// A TCP proxy in front of a target that can be switched off (connections
/// are dropped, as by a target that is down), made to hang (connections are
/// accepted and never answered) or made to answer 429 with `Retry-After` a
/// number of times: real network faults for a real server.
pub struct FaultProxy {
    pub url: String,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    hang: std::sync::Arc<std::sync::atomic::AtomicBool>,
    throttle: std::sync::Arc<std::sync::atomic::AtomicU32>,
    pub throttled: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl FaultProxy {
    /// Proxies to `upstream` (`http://host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
        use std::sync::Arc;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
        let (up, throttle, throttled) = (Arc::new(AtomicBool::new(true)), Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
        let hang = Arc::new(AtomicBool::new(false));
        let (up2, throttle2, throttled2, hang2) = (up.clone(), throttle.clone(), throttled.clone(), hang.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                if hang2.load(Ordering::SeqCst) {
                    // Read what comes, answer nothing, hold the connection.
                    tokio::spawn(async move {
                        use tokio::io::AsyncReadExt;
                        let mut buf = [0u8; 4096];
                        while matches!(inbound.read(&mut buf).await, Ok(n) if n > 0) {}
                    });
                    continue;
                }
                let (throttle, throttled, upstream) = (throttle2.clone(), throttled2.clone(), upstream.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    if throttle.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                        let mut buf = [0u8; 4096];
                        let _ = inbound.read(&mut buf).await;
                        throttled.fetch_add(1, Ordering::SeqCst);
                        let _ = inbound.write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
                        return;
                    }
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        FaultProxy { url, up, hang, throttle, throttled }
    }

    /// Connections are accepted and never answered (a target that hangs).
    pub fn set_hanging(&self, hang: bool) {
        self.hang.store(hang, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::SeqCst);
    }

    /// The next `n` requests get 429 with `Retry-After: 1`.
    pub fn throttle(&self, n: u32) {
        self.throttle.store(n, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `cargo lambda watch` (1.9.2) sometimes answers a function URL call with its
/// own bare problem document instead of the function's answer: under load, for
/// answers of tens of kilobytes (about 1 in 50 audit pages of 50 KB with three
/// callers at once on two cores; never seen for small answers or one caller).
/// The function's own errors always carry `error.code`, so this shape is
/// the emulator's and never ours.
pub fn emulator_lost_response(status: u16, body: &Value) -> bool {
    status == 500 && body.get("error").is_none() && body["type"] == "https://httpstatuses.com/500"
}
