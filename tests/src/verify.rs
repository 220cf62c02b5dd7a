//! The three verifiers of docs/tokens.md ("Verifying"), each with
//! standard libraries only (none of Entitle's code): Rust `jsonwebtoken`
//! (here), Python `PyJWT` (`dev/verify/verify-token.py`) and Node `jose`
//! (`dev/verify/verify-token.mjs`). Each checks the signature against the
//! published keys by `kid`, `alg` ES256 only, `exp` (no leeway), `iss`, and
//! the `tenant` the app serves.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

/// Rust: the claims of a good token, or why it is refused.
pub fn rust(jwks: &Value, issuer: &str, tenant: &str, token: &str) -> Result<Value, String> {
    let set: JwkSet = serde_json::from_value(jwks.clone()).map_err(|e| format!("a bad JWK Set: {e}"))?;
    let kid = decode_header(token).map_err(|e| e.to_string())?.kid.ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or_else(|| format!("no published key {kid}"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
    validation.leeway = 0;
    let claims = decode::<Value>(token, &key, &validation).map_err(|e| e.to_string())?.claims;
    if claims["tenant"] != tenant {
        return Err(format!("a token for tenant {}, not {tenant}", claims["tenant"]));
    }
    Ok(claims)
}

/// A verifier run as a program (`jwks`: a URL or a file).
fn program(cmd: &mut std::process::Command, jwks: &str, issuer: &str, tenant: &str, token: &str) -> Result<Value, String> {
    let out = cmd.args([jwks, issuer, tenant, token]).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run `make test`, which installs it)"));
    match out.status.code() {
        Some(0) => Ok(serde_json::from_slice(&out.stdout).expect("the claims as JSON")),
        Some(1) => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        _ => panic!("{cmd:?} failed to run: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Python: PyJWT, in the project's virtual environment.
pub fn python(jwks: &str, issuer: &str, tenant: &str, token: &str) -> Result<Value, String> {
    let r = root();
    program(std::process::Command::new(r.join(".venv/bin/python")).arg(r.join("dev/verify/verify-token.py")), jwks, issuer, tenant, token)
}

/// Node: jose, from `dev/node_modules`.
pub fn node(jwks: &str, issuer: &str, tenant: &str, token: &str) -> Result<Value, String> {
    program(std::process::Command::new("node").arg(root().join("dev/verify/verify-token.mjs")), jwks, issuer, tenant, token)
}

/// The three verdicts on one token, verified against the JWK Set `jwks`
/// (published at `jwks_url`, or given as JSON when `jwks_url` is `None`).
pub fn all(jwks: &Value, jwks_url: Option<&str>, issuer: &str, tenant: &str, token: &str) -> [(&'static str, Result<Value, String>); 3] {
    let file = std::env::temp_dir().join(format!("jwks-{}.json", crate::unique("v")));
    std::fs::write(&file, jwks.to_string()).unwrap();
    let source = jwks_url.map(str::to_string).unwrap_or_else(|| file.display().to_string());
    let out = [("rust jsonwebtoken", rust(jwks, issuer, tenant, token)), ("python PyJWT", python(&source, issuer, tenant, token)), ("node jose", node(&source, issuer, tenant, token))];
    let _ = std::fs::remove_file(file);
    out
}
