//! The small servers' side of HTTP/1.1: one request read off a socket.

/// One HTTP/1.1 request as the small servers of the harness read it.
pub(crate) struct WireRequest {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// Reads one request (its head, and its body by `Content-Length`); None at EOF.
pub(crate) async fn read_request(stream: &mut tokio::net::TcpStream) -> std::io::Result<Option<WireRequest>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let mut first = head.lines().next().unwrap_or_default().split(' ');
    let (method, path) = (first.next().unwrap_or_default().to_string(), first.next().unwrap_or_default().to_string());
    let length = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))).unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(Some(WireRequest { method, path, body }))
}
