//! Act four: an app checks a member's token offline. It fetches the
//! member's token from access and the published key set (JWKS), keeps the
//! set, and verifies the ES256 signature with nothing of Entitle's:
//! `dev/verify/verify-token.py` (PyJWT) plays the app. A token whose claims
//! were edited is refused.

use super::Demo;
use serde_json::{json, Value};

/// The member whose token the app checks.
const USER: &str = "dan";
/// The project's Python, with PyJWT (dev/bootstrap.sh installs it).
const PYTHON: &str = ".venv/bin/python";
const VERIFIER: &str = "dev/verify/verify-token.py";

/// base64url without padding (RFC 7515 §2).
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn b64url_decode(text: &str) -> Result<Vec<u8>, String> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Ok(c - b'A'),
        b'a'..=b'z' => Ok(c - b'a' + 26),
        b'0'..=b'9' => Ok(c - b'0' + 52),
        b'-' => Ok(62),
        b'_' => Ok(63),
        _ => Err(format!("not base64url: {text}")),
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let n = chunk.iter().enumerate().try_fold(0u32, |n, (i, c)| value(*c).map(|v| n | u32::from(v) << (18 - 6 * i)))?;
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Ok(out)
}

/// A JWS part's JSON.
fn part(token: &str, i: usize) -> Result<Value, String> {
    let raw = token.split('.').nth(i).ok_or("not a compact JWS")?;
    serde_json::from_slice(&b64url_decode(raw)?).map_err(|e| format!("a JWS part that is not JSON: {e}"))
}

/// The app's check: `verify-token.py JWKS-FILE ISSUER TENANT TOKEN`. The
/// claims when it accepts; why, when it refuses.
fn verify(jwks: &std::path::Path, issuer: &str, tenant: &str, token: &str) -> Result<Result<Value, String>, String> {
    if !std::path::Path::new(PYTHON).exists() {
        return Err(format!("{PYTHON} is missing: run `make bootstrap` (it installs PyJWT, the app's verifier)"));
    }
    let out = std::process::Command::new(PYTHON).arg(VERIFIER).arg(jwks).arg(issuer).arg(tenant).arg(token).output().map_err(|e| format!("{PYTHON} {VERIFIER}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    match out.status.code() {
        Some(0) => serde_json::from_str(&stdout).map(Ok).map_err(|e| format!("{VERIFIER} printed no claims ({e}): {stdout}")),
        Some(1) => Ok(Err(stderr.strip_prefix("refused: ").unwrap_or(&stderr).to_string())),
        _ => Err(format!("{VERIFIER} failed: {stderr}")),
    }
}

pub async fn offline_check(d: &mut Demo) -> Result<(), String> {
    d.out.act("An app checks a member's token offline, against the published keys (JWKS)");
    let (status, answer) = d.call(d.http.get(format!("{}/tenants/{}/members/{USER}/token", d.access, d.tenant))).await?;
    if status != 200 {
        return Err(format!("GET .../members/{USER}/token: {status} {answer}"));
    }
    let token = answer["token"].as_str().ok_or_else(|| format!("no token in {answer}"))?.to_string();
    detail!(d, "GET /tenants/{}/members/{USER}/token (access) -> {status} kid {} expires_at {} audit_seq {}", d.tenant, answer["kid"], answer["expires_at"], answer["audit_seq"]);
    detail!(d, "  token {}...{} ({} characters)", &token[..24.min(token.len())], &token[token.len().saturating_sub(12)..], token.len());
    detail!(d, "  header {}", part(&token, 0)?);
    detail!(d, "  claims {}", part(&token, 1)?);
    let (status, jwks) = d.call(d.http.get(format!("{}/.well-known/jwks.json", d.access))).await?;
    detail!(d, "GET /.well-known/jwks.json (access; its own public function in production) -> {status} {jwks}");
    let keys = jwks["keys"].as_array().map_or(0, Vec::len);
    if status != 200 || keys == 0 {
        return Err(format!("GET /.well-known/jwks.json: {status} {jwks}"));
    }
    let file = std::path::Path::new(&super::env("STACK_DIR")?).join("app").join("jwks.json");
    std::fs::create_dir_all(file.parent().unwrap_or(std::path::Path::new("."))).map_err(|e| e.to_string())?;
    std::fs::write(&file, jwks.to_string()).map_err(|e| format!("writing {}: {e}", file.display()))?;
    detail!(d, "the app keeps the key set in {}", file.display());
    d.out.step(&format!(
        "The app fetches {USER}'s member token from access (GET .../members/{USER}/token: a JWS signed {}) and the published key set (GET /.well-known/jwks.json: {keys} key), kept in a file.",
        part(&token, 0)?["alg"].as_str().unwrap_or_default()
    ));

    detail!(d, "{PYTHON} {VERIFIER} {} {} {} <token>", file.display(), d.issuer, d.tenant);
    let claims = verify(&file, &d.issuer, &d.tenant, &token)?.map_err(|why| format!("the app refused a good token: {why}"))?;
    detail!(d, "-> accepted: {claims}");
    let roles: Vec<&str> = claims["roles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    d.out.step(&format!(
        "The app verifies it offline with PyJWT ({VERIFIER}: ES256 only, by kid, exp, iss, tenant): valid: {} of {} is {}, seat {}, roles [{}], for {} s.",
        claims["sub"].as_str().unwrap_or_default(),
        claims["tenant"].as_str().unwrap_or_default(),
        claims["status"].as_str().unwrap_or_default(),
        claims["seat"].as_str().unwrap_or_default(),
        roles.join(", "),
        claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0)
    ));

    // The claims edited (more roles), the signature kept.
    let mut forged = part(&token, 1)?;
    forged["roles"] = json!(["admin", "member", "owner"]);
    let pieces: Vec<&str> = token.split('.').collect();
    let tampered = format!("{}.{}.{}", pieces[0], b64url(forged.to_string().as_bytes()), pieces.get(2).copied().unwrap_or_default());
    detail!(d, "the tampered token's claims: {forged}");
    let why = match verify(&file, &d.issuer, &d.tenant, &tampered)? {
        Ok(claims) => return Err(format!("the app accepted a tampered token: {claims}")),
        Err(why) => why,
    };
    detail!(d, "-> refused: {why}");
    d.out.step(&format!("The same token with its roles edited to admin, member and owner, the signature kept: the app refuses it ({why})."));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_round_trips() {
        for text in ["", "f", "fo", "foo", "foob", "fooba", "foobar", "{\"roles\":[\"owner\"]}"] {
            let encoded = b64url(text.as_bytes());
            assert!(!encoded.contains('='));
            assert_eq!(b64url_decode(&encoded).unwrap(), text.as_bytes(), "{encoded}");
        }
        assert_eq!(b64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64url(b"\xfb\xff"), "-_8");
    }
}
