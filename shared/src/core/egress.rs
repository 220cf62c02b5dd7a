//! Where Entitle may connect on a tenant's behalf, the pure part.
//!
//! A SCIM target's `base_url` is chosen by the tenant's admin, so it is
//! untrusted: pointed at `127.0.0.1`, the instance metadata service
//! (`169.254.169.254`, `[fd00:ec2::254]`) or an internal name, it would make
//! Entitle a proxy into its own network (server-side request forgery). In
//! production ([`EgressPolicy::Public`]) a target must be `https://` on port
//! 443, its host a public DNS name or a public address; and every address a
//! name resolves to is checked again at connect time (so a name that
//! resolves to a private address later, DNS rebinding, is refused too: see
//! `scim_client::PublicOnly`). The local stack ([`EgressPolicy::Local`],
//! `SCIM_ALLOW_HTTP=1`) admits plain HTTP to scim2-server on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EgressPolicy {
    /// Production: https on port 443 to public addresses only.
    Public,
    /// The local stack: http or https, any port, any address.
    Local,
}

impl EgressPolicy {
    /// `SCIM_ALLOW_HTTP=1` means the local stack.
    pub fn from_allow_http(allow_http: bool) -> Self {
        if allow_http {
            EgressPolicy::Local
        } else {
            EgressPolicy::Public
        }
    }
}

/// A name that resolved to no public address, refused when the connection
/// was to be made (an error of its own, so that it is recognised by its
/// type wherever it surfaces, not by its text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{host} resolves to no public address (refused: {non_public} non-public)")]
pub struct NoPublicAddress {
    pub host: String,
    pub non_public: usize,
}

/// Name suffixes that only mean something inside a private network.
const INTERNAL_SUFFIXES: [&str; 8] = [".localhost", ".local", ".internal", ".localdomain", ".home.arpa", ".lan", ".intranet", ".corp"];

/// Whether an address is reachable on the public internet: not loopback,
/// private, link-local (which holds the metadata service), unique-local,
/// shared (CGNAT), multicast, reserved, documentation or unspecified; an
/// IPv4 address embedded in IPv6 (mapped, NAT64) is judged as IPv4.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments (192.0.0.192: Oracle's metadata)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) reaches the embedded IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (fd00:ec2::254 is AWS's metadata service)
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated) and the like
}

/// Every problem of a target's base URL under `policy`, or none.
pub fn base_url_problems(raw: &str, policy: EgressPolicy) -> Vec<String> {
    let raw = raw.trim();
    let mut out = Vec::new();
    if raw.len() > 512 || raw.contains(char::is_whitespace) {
        return vec!["base_url must be at most 512 characters without spaces".into()];
    }
    let url = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => return vec![format!("base_url is not a URL: {e}")],
    };
    match (url.scheme(), policy) {
        ("https", _) | ("http", EgressPolicy::Local) => {}
        (_, EgressPolicy::Local) => out.push("base_url must be an http:// or https:// URL".into()),
        (_, EgressPolicy::Public) => out.push("base_url must be an https:// URL".into()),
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        out.push("base_url must be a host and optional path, without credentials, query or fragment".into());
    }
    let Some(host) = url.host() else {
        out.push("base_url has no host".into());
        return out;
    };
    if policy == EgressPolicy::Public {
        if url.port().is_some_and(|p| p != 443) {
            out.push("base_url must use the HTTPS port 443 (no other port is reachable from Entitle)".into());
        }
        match host {
            url::Host::Ipv4(ip) if !is_public(IpAddr::V4(ip)) => out.push(format!("base_url host {ip} is not a public address")),
            url::Host::Ipv6(ip) if !is_public(IpAddr::V6(ip)) => out.push(format!("base_url host [{ip}] is not a public address")),
            url::Host::Domain(name) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if !name.contains('.') || name == "localhost" || INTERNAL_SUFFIXES.iter().any(|s| name.ends_with(s)) {
                    out.push(format!("base_url host {name} is an internal name, not a public DNS name"));
                }
            }
            _ => {}
        }
    }
    out
}

/// What of a target's answer may be shown back (in `GET .../targets`, in the
/// audit trail, in logs): the `detail` of a SCIM error (RFC 7644 §3.12),
/// printable ASCII only, at most [`EXCERPT_CHARS`] characters. Anything else
/// a target sends (an HTML page, what a metadata service answers) is never
/// reflected: only its size is named.
pub fn excerpt(body: &serde_json::Value, raw_len: usize) -> String {
    let scim_error = body["schemas"].as_array().is_some_and(|s| s.iter().any(|v| v == "urn:ietf:params:scim:api:messages:2.0:Error"));
    match body["detail"].as_str().filter(|_| scim_error) {
        Some(detail) => {
            let clean: String = detail.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).take(EXCERPT_CHARS).collect();
            let scim_type = body["scimType"].as_str().filter(|t| t.len() <= 32 && t.bytes().all(|b| b.is_ascii_alphanumeric()));
            match scim_type {
                Some(t) => format!("{t}: {clean}"),
                None => clean,
            }
        }
        None => format!("(no SCIM error detail; {raw_len} byte answer not shown)"),
    }
}

pub const EXCERPT_CHARS: usize = 120;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn private_loopback_link_local_and_metadata_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.170.2",
            "100.64.0.1",
            "0.0.0.0",
            "192.0.0.192",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2001:db8::1",
            "ff02::1",
            "::127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must not count as public");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::6810:85e5", "::ffff:93.184.216.34", "64:ff9b::808:808"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn production_urls_are_https_on_443_to_public_names() {
        let p = EgressPolicy::Public;
        assert!(base_url_problems("https://idp.example.com/scim/v2", p).is_empty());
        assert!(base_url_problems("https://idp.example.com:443/scim/v2", p).is_empty());
        assert!(base_url_problems("https://93.184.216.34/scim", p).is_empty());
        for (url, why) in [
            ("https://127.0.0.1:9001", "port 443"),
            ("https://127.0.0.1", "not a public address"),
            ("https://169.254.169.254/latest/meta-data", "not a public address"),
            ("https://[fd00:ec2::254]", "not a public address"),
            ("https://[::ffff:10.0.0.1]/x", "not a public address"),
            ("https://localhost/scim", "internal name"),
            ("https://metadata.google.internal/", "internal name"),
            ("https://scim-server/", "internal name"),
            ("https://idp.corp/", "internal name"),
            ("https://idp.example.com:8443/", "port 443"),
            ("http://idp.example.com/", "https://"),
            ("https://user:pw@idp.example.com/", "credentials"),
            ("https://idp.example.com/?q=1", "query"),
            ("ftp://x", "https://"),
            ("not-a-url", "not a URL"),
            ("https://idp example.com", "without spaces"),
        ] {
            let problems = base_url_problems(url, p).join("; ");
            assert!(problems.contains(why), "{url}: expected a problem about {why:?}, got {problems:?}");
        }
        // In decimal, octal or hex, an address is still parsed as one.
        assert!(!base_url_problems("https://2130706433/", p).is_empty());
        assert!(!base_url_problems("https://0x7f.1/", p).is_empty());
    }

    #[test]
    fn the_local_stack_admits_http_to_loopback() {
        assert!(base_url_problems("http://127.0.0.1:5056/acme", EgressPolicy::Local).is_empty());
        assert!(!base_url_problems("ftp://127.0.0.1", EgressPolicy::Local).is_empty());
    }

    #[test]
    fn only_short_printable_scim_error_details_are_shown() {
        let scim = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "scimType": "invalidValue", "detail": format!("bad \u{1b}[31m value {}", "x".repeat(500)), "status": "400"});
        let e = excerpt(&scim, 600);
        assert!(e.starts_with("invalidValue: bad ?[31m value"), "{e}");
        assert!(e.len() <= EXCERPT_CHARS + 20, "{e}");
        // What a metadata service (or any non-SCIM page) answers is never reflected.
        let leak = json!({"detail": "AccessKeyId AKIA... SecretAccessKey ..."});
        assert_eq!(excerpt(&leak, 90), "(no SCIM error detail; 90 byte answer not shown)");
        assert_eq!(excerpt(&serde_json::Value::String("<html>secret</html>".into()), 19), "(no SCIM error detail; 19 byte answer not shown)");
    }
}
