//! The small servers' side of HTTP/1.1: one request read off a socket.

/// One HTTP/1.1 request as the small servers of the harness (and the
/// benchmarks' counting proxy) read it.
pub struct WireRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Reads one request (its head, and its body by `Content-Length`); None at EOF.
pub async fn read_request(stream: &mut tokio::net::TcpStream) -> std::io::Result<Option<WireRequest>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.lines();
    let mut first = lines.next().unwrap_or_default().split(' ');
    let (method, path) = (first.next().unwrap_or_default().to_string(), first.next().unwrap_or_default().to_string());
    let headers: Vec<(String, String)> = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let length = headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(Some(WireRequest { method, path, headers, body }))
}
