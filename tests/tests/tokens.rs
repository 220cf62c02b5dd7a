//! Signed entitlements end to end (issue 22): member tokens and license
//! files from the access function, signed by moto's KMS (ECC_NIST_P256),
//! checked by three verifiers that use standard libraries only (Rust
//! `jsonwebtoken`, Python `PyJWT`, Node `jose`) against the published JWK
//! Set.

use entitle::core::token::{b64url, compact, kid_of};
use entitle_tests::runtime::{binary, invoke_once};
use entitle_tests::{far_future, function_env, function_url_event, member_body, openapi, unique, verify, Stack};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// A new tenant (`prefix`-...) licensed for three seats, with one member,
/// ann, seated and settled: its id.
async fn with_ann(s: &Stack, prefix: &str) -> String {
    let t = unique(prefix);
    s.crm_licensed(&t, "team", 3).await;
    assert_eq!(s.create_member(&t, &member_body("ann", &[])).await.0, 201);
    s.settle(&t).await;
    t
}

/// `GET .../members/{user}/token`: (the answer, its claims).
async fn token(s: &Stack, t: &str, u: &str) -> (Value, Value) {
    let (code, body) = s.get(&format!("/tenants/{t}/members/{u}/token")).await;
    assert_eq!(code, 200, "{body}");
    let claims = payload(body["token"].as_str().unwrap());
    (body, claims)
}

/// A JWS's claims, read without verifying (what the test compares).
fn payload(jws: &str) -> Value {
    use base64::Engine;
    let part = jws.split('.').nth(1).expect("a compact JWS");
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("claims are JSON")
}

fn jwks_url(s: &Stack) -> String {
    format!("{}/.well-known/jwks.json", s.access)
}

async fn jwks(s: &Stack) -> Value {
    let (code, body) = s.get("/.well-known/jwks.json").await;
    assert_eq!(code, 200, "{body}");
    body
}

fn issuer() -> String {
    function_env()["TOKEN_ISSUER"].clone()
}

/// Every verifier accepts `token` for `tenant`; the claims each read.
fn accepted(keys: &Value, url: Option<&str>, iss: &str, tenant: &str, token: &str) -> Value {
    let mut claims = Vec::new();
    for (name, verdict) in verify::all(keys, url, iss, tenant, token) {
        claims.push(verdict.unwrap_or_else(|why| panic!("{name} refused a good token: {why}")));
    }
    assert!(claims.windows(2).all(|w| w[0] == w[1]), "the verifiers read the same claims: {claims:?}");
    let schema = if claims[0].get("seat").is_some() { "MemberClaims" } else { "LicenseClaims" };
    openapi::check_schema(schema, &claims[0]);
    claims.remove(0)
}

/// Every verifier refuses `token` for `tenant`; why each did.
fn refused(keys: &Value, url: Option<&str>, iss: &str, tenant: &str, token: &str, what: &str) -> Vec<String> {
    verify::all(keys, url, iss, tenant, token)
        .into_iter()
        .map(|(name, verdict)| match verdict {
            Ok(claims) => panic!("{name} accepted {what}: {claims}"),
            Err(why) => format!("{name}: {why}"),
        })
        .collect()
}

/// The access function run once in a configuration of its own (another
/// signing key, a rotation, a shorter lifetime): (status, body).
async fn access_once(env: &HashMap<String, String>, path: &str) -> (u16, Value) {
    let out = invoke_once(binary("access"), env, &function_url_event("access", "GET", path, None, None), Duration::from_secs(60)).await;
    assert!(!out.failed, "access failed: {}", out.body);
    let body = serde_json::from_str(out.body["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
    (out.body["statusCode"].as_u64().unwrap_or(0) as u16, body)
}

/// A new signing key in moto's KMS, as a rotation creates one: its ARN.
async fn new_key(s: &Stack) -> String {
    let key = s
        .kms
        .create_key()
        .key_spec(aws_sdk_kms::types::KeySpec::EccNistP256)
        .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
        .description("entitle tests: another token signing key")
        .send()
        .await
        .unwrap();
    key.key_metadata.unwrap().arn.unwrap()
}

/// A member's claims are what the access API says of the member at the
/// same audit position; a read while nothing changed answers the same
/// token (not signed again); a change of access yields a new token that
/// says so, a `member.access_changed` event whose `seq` tells an app its
/// cached token is older, and never a stale grant.
#[tokio::test]
async fn a_member_token_says_what_the_access_api_says_and_changes_with_access() {
    let s = Stack::connect().await;
    let t = unique("tok");
    let tap = s.event_tap().await;
    s.crm_licensed(&t, "business", 2).await;
    for (u, g) in [("ann", vec!["admins"]), ("bob", vec![]), ("cal", vec![])] {
        assert_eq!(s.create_member(&t, &member_body(u, &g)).await.0, 201);
    }
    s.settle(&t).await;
    let keys = jwks(&s).await;
    let iss = issuer();
    let head = s.audit(&t).await.iter().filter_map(|r| r["seq"].as_u64()).max().unwrap();
    let mut first = HashMap::new();
    for u in ["ann", "bob", "cal"] {
        let (answer, claims) = token(&s, &t, u).await;
        let view = s.member(&t, u).await.1;
        // Nothing changed since the tenant settled: the token is cut at the head.
        assert_eq!(claims["audit_seq"].as_u64(), Some(head), "{u}: {claims}");
        assert_eq!(answer["audit_seq"], claims["audit_seq"]);
        assert_eq!((claims["sub"].as_str(), claims["tenant"].as_str(), &claims["status"]), (Some(u), Some(t.as_str()), &view["status"]), "{u}: {claims} vs {view}");
        let active = view["status"] == "active";
        let roles = if active { view["roles"].clone() } else { json!([]) };
        let entitlements = if active { view["entitlements"].clone() } else { json!({}) };
        assert_eq!((&claims["roles"], &claims["entitlements"]), (&roles, &entitlements), "{u}");
        assert_eq!(claims["seat"], if active { "held" } else { "waiting" }, "{u}");
        assert_eq!(claims["tier"], if active { json!("business") } else { Value::Null }, "{u}");
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 900, "the model's lifetime");
        assert_eq!(answer["expires_at"], json!(chrono::DateTime::from_timestamp(claims["exp"].as_i64().unwrap(), 0).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        assert_eq!(accepted(&keys, Some(&jwks_url(&s)), &iss, &t, answer["token"].as_str().unwrap()), claims);
        // Read again: the token cached on the member's item (ES256
        // signatures are randomised: a second signature would differ).
        assert_eq!(token(&s, &t, u).await.0["token"], answer["token"], "{u}: not signed again");
        first.insert(u, claims);
    }
    assert_eq!((first["ann"]["status"].as_str(), first["bob"]["status"].as_str(), first["cal"]["status"].as_str()), (Some("active"), Some("active"), Some("pending_seat")));
    assert!(first["ann"]["roles"].as_array().unwrap().contains(&json!("admin")));

    // bob leaves: his seat goes to cal.
    assert_eq!(s.delete_member(&t, "bob").await.0, 200);
    s.eventually("cal seated", || async {
        let m = s.member(&t, "cal").await.1;
        (m["status"] == "active", m)
    })
    .await;
    s.settle(&t).await;
    let (_, bob) = token(&s, &t, "bob").await;
    assert_eq!((bob["status"].as_str(), bob["seat"].as_str(), &bob["roles"], bob.get("tier")), (Some("deprovisioned"), Some("none"), &json!([]), None), "no stale grant: {bob}");
    let (cal_answer, cal) = token(&s, &t, "cal").await;
    assert_eq!((cal["status"].as_str(), cal["seat"].as_str(), cal["tier"].as_str()), (Some("active"), Some("held"), Some("business")));
    for (u, c) in [("bob", &bob), ("cal", &cal)] {
        assert!(c["audit_seq"].as_u64() > first[u]["audit_seq"].as_u64(), "{u}: a newer audit position");
    }
    accepted(&keys, None, &iss, &t, cal_answer["token"].as_str().unwrap());
    // ann's access did not change: her cached token stands.
    assert_eq!(token(&s, &t, "ann").await.1, first["ann"]);

    // The events: one per member whose access changed, each with the audit
    // position an app compares with its cached token's.
    let seen = std::sync::Mutex::new(Vec::<Value>::new());
    let events = s
        .eventually("bob's and cal's member.access_changed", || async {
            let drained = s.drain_events(&tap).await;
            let mut seen = seen.lock().unwrap();
            for e in drained {
                if e["detail-type"] == "member.access_changed" && e["detail"]["tenant_id"] == t.as_str() {
                    seen.push(e["detail"].clone());
                }
            }
            let users: std::collections::BTreeSet<String> = seen.iter().filter_map(|d| d["user_id"].as_str().map(str::to_string)).collect();
            (users.contains("bob") && users.contains("cal"), Value::Array(seen.clone()))
        })
        .await;
    for user in ["bob", "cal"] {
        let last = events.as_array().unwrap().iter().filter(|d| d["user_id"] == user).filter_map(|d| d["seq"].as_u64()).max().unwrap();
        let claims = if user == "bob" { &bob } else { &cal };
        assert!(last > first[user]["audit_seq"].as_u64().unwrap(), "{user}: the event says the first token is stale");
        assert!(claims["audit_seq"].as_u64().unwrap() >= last, "{user}: the new token is cut after the change");
    }
}

/// The three verifiers accept a good token and refuse a tampered one, an
/// expired one, one signed by another key (under its own `kid`, and under
/// ours) and one for another tenant.
#[tokio::test]
async fn the_verifiers_refuse_tampered_expired_foreign_and_other_tenant_tokens() {
    let s = Stack::connect().await;
    let (t, other) = (with_ann(&s, "tokv").await, with_ann(&s, "tokw").await);

    // First the one that is about to expire: ann's claims of a third
    // tenant, signed by the stack's own key (as the access function signs)
    // with a minute's lifetime of which 20 seconds are left. (That a
    // version's `tokens.member_seconds` sets the lifetime of the tokens
    // its tenants' members get is the models test's.)
    let third = with_ann(&s, "tokx").await;
    let (issued, mut expiring_claims) = token(&s, &third, "ann").await;
    let now = chrono::Utc::now().timestamp();
    expiring_claims["iat"] = json!(now - 40);
    expiring_claims["exp"] = json!(now + 20);
    let header = issued["token"].as_str().unwrap().split('.').next().unwrap().to_string();
    let expiring = signed(&s, &function_env()["TOKEN_SIGNING_KEY_ID"], &header, &expiring_claims).await;

    let keys = jwks(&s).await;
    let iss = issuer();
    let url = jwks_url(&s);
    let (good, claims) = token(&s, &t, "ann").await;
    let good = good["token"].as_str().unwrap().to_string();
    assert_eq!(accepted(&keys, Some(&url), &iss, &t, &good), claims);
    assert_eq!(accepted(&keys, Some(&url), &iss, &third, &expiring)["sub"], "ann", "good until its minute ends");

    // Tampered: the claims changed (a member made admin), the signature kept.
    let parts: Vec<&str> = good.split('.').collect();
    let mut forged = claims.clone();
    forged["roles"] = json!(["admin"]);
    let tampered = format!("{}.{}.{}", parts[0], b64url(forged.to_string().as_bytes()), parts[2]);
    refused(&keys, Some(&url), &iss, &t, &tampered, "a tampered token");

    // Another tenant's good token, presented to an app of this tenant.
    let (theirs, _) = token(&s, &other, "ann").await;
    let why = refused(&keys, Some(&url), &iss, &t, theirs["token"].as_str().unwrap(), "another tenant's token");
    assert!(why.iter().all(|w| w.contains("tenant")), "{why:?}");

    // Another key: a deployment signing with a key nobody published...
    let foreign_arn = new_key(&s).await;
    let mut foreign = function_env();
    foreign.insert("TOKEN_SIGNING_KEY_ID".into(), foreign_arn.clone());
    let fourth = with_ann(&s, "toky").await;
    let (code, answer) = access_once(&foreign, &format!("/tenants/{fourth}/members/ann/token")).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["kid"].as_str(), Some(kid_of(&foreign_arn).as_str()));
    refused(&keys, Some(&url), &iss, &fourth, answer["token"].as_str().unwrap(), "a token signed by an unpublished key");
    // ... and the same key signing our claims under our key's kid.
    let impostor = signed(&s, &foreign_arn, parts[0], &claims).await;
    assert_ne!(impostor, good);
    refused(&keys, Some(&url), &iss, &t, &impostor, "a token signed by another key under our kid");

    // Expired: wait out its minute (no leeway in any verifier).
    let wait = expiring_claims["exp"].as_i64().unwrap() + 1 - chrono::Utc::now().timestamp();
    if wait > 0 {
        tokio::time::sleep(Duration::from_secs(wait as u64)).await;
    }
    let why = refused(&keys, Some(&url), &iss, &third, &expiring, "an expired token");
    assert!(why.iter().all(|w| w.to_lowercase().contains("expired") || w.contains("exp")), "{why:?}");
}

/// `claims` under `header` (its base64url text), signed with the KMS key
/// `key` as the access function signs: a compact JWS.
async fn signed(s: &Stack, key: &str, header: &str, claims: &Value) -> String {
    let signing_input = format!("{header}.{}", b64url(claims.to_string().as_bytes()));
    let der = s
        .kms
        .sign()
        .key_id(key)
        .message(aws_sdk_kms::primitives::Blob::new(signing_input.as_bytes()))
        .message_type(aws_sdk_kms::types::MessageType::Raw)
        .signing_algorithm(aws_sdk_kms::types::SigningAlgorithmSpec::EcdsaSha256)
        .send()
        .await
        .unwrap()
        .signature
        .unwrap();
    compact(&signing_input, der.as_ref()).unwrap()
}

/// A rotation: the new key is published beside the old before it signs; a
/// token of the old key stays verifiable while the old key is listed (until
/// every token it signed has expired), and not after it is dropped.
#[tokio::test]
async fn a_key_rotation_keeps_old_tokens_verifiable_until_the_old_key_is_dropped() {
    let s = Stack::connect().await;
    let t = with_ann(&s, "rot").await;
    let iss = issuer();
    let before = jwks(&s).await;
    let (old, _) = token(&s, &t, "ann").await;
    let old = old["token"].as_str().unwrap().to_string();
    let current = function_env()["TOKEN_SIGNING_KEY_ID"].clone();

    // Step 1 and 2: a new key signs; the old one is still published.
    let next = new_key(&s).await;
    let mut rotated = function_env();
    rotated.insert("TOKEN_SIGNING_KEY_ID".into(), next.clone());
    rotated.insert("TOKEN_PREVIOUS_KEY_IDS".into(), current.clone());
    let (code, both) = access_once(&rotated, "/.well-known/jwks.json").await;
    assert_eq!(code, 200, "{both}");
    let kids: Vec<&str> = both["keys"].as_array().unwrap().iter().filter_map(|k| k["kid"].as_str()).collect();
    assert_eq!(kids, vec![kid_of(&next).as_str(), kid_of(&current).as_str()], "the new key first, the old one kept");
    let (code, answer) = access_once(&rotated, &format!("/tenants/{t}/members/ann/token")).await;
    assert_eq!(code, 200, "{answer}");
    let new = answer["token"].as_str().unwrap().to_string();
    assert_eq!(answer["kid"].as_str(), Some(kid_of(&next).as_str()), "the cached token of the old key is signed again with the new one");
    assert_eq!(accepted(&both, None, &iss, &t, &old)["sub"], "ann");
    assert_eq!(accepted(&both, None, &iss, &t, &new)["sub"], "ann");
    // Why the new key is published before it signs: a set without it refuses.
    refused(&before, None, &iss, &t, &new, "a token of a key not yet published");

    // Step 3, once the old key's tokens have all expired: it is dropped.
    rotated.remove("TOKEN_PREVIOUS_KEY_IDS");
    let (_, after) = access_once(&rotated, "/.well-known/jwks.json").await;
    assert_eq!(after["keys"].as_array().unwrap().len(), 1);
    accepted(&after, None, &iss, &t, &new);
    refused(&after, None, &iss, &t, &old, "a token of a dropped key");
}

/// License files, for a tenant licensed by a contract and one licensed by
/// a Stripe subscription: what the tenant view says, the sources, expiry
/// and grace, a lifetime the tenant sets, bad input refused.
#[tokio::test]
async fn license_files_for_a_contract_tenant_and_a_stripe_tenant() {
    let s = Stack::connect().await;
    let iss = issuer();
    let keys = jwks(&s).await;
    let grace = s.model().expiry.grace_days;

    // A contract.
    let t = unique("lfc");
    let end = far_future();
    let document = json!({
        "contract_id": format!("k-{t}"), "tenant_id": t,
        "term": {"start": "2026-01-01T00:00:00Z", "end": end, "auto_renew": false},
        "tier": "business", "seats": 7, "add_ons": [], "named_users": [], "role_mappings": {}, "support": {"level": "standard"}
    });
    let (code, body) = s.amend("/contracts", Some(&document)).await;
    assert_eq!(code, 201, "{body}");
    let view = s.tenant_where(&t, "the contract provisioned", |v| v["tier"] == "business").await;
    let (code, answer) = s.get(&format!("/tenants/{t}/license")).await;
    assert_eq!(code, 200, "{answer}");
    let claims = accepted(&keys, Some(&jwks_url(&s)), &iss, &t, answer["license"].as_str().unwrap());
    assert_eq!((claims["tier"].as_str(), claims["seats"].as_u64(), claims["status"].as_str()), (Some("business"), Some(7), view["status"].as_str()));
    assert_eq!((&claims["entitlements"], &claims["add_ons"]), (&view["entitlements"], &view["add_ons"]));
    assert_eq!(claims["expires_at"], view["expires_at"]);
    let ends = chrono::DateTime::parse_from_rfc3339(view["expires_at"].as_str().unwrap()).unwrap() + chrono::Duration::days(grace.into());
    assert_eq!(claims["grace_until"].as_str(), Some(ends.to_utc().to_rfc3339_opts(chrono::SecondsFormat::Secs, true).as_str()));
    assert_eq!(claims["exp"].as_i64(), Some(ends.timestamp()), "by default, valid until the end of its grace");
    let sources = claims["sources"].as_array().unwrap();
    assert_eq!((sources.len(), sources[0]["source"].as_str(), sources[0]["seats"].as_u64()), (1, Some("contract"), Some(7)), "{sources:?}");

    // The tenant sets a day; bad lifetimes are refused and change nothing.
    let put = |body: Value| {
        let (s, t) = (&s, &t);
        async move { s.put_license_file(t, &body).await }
    };
    for bad in [json!({"lifetime_seconds": 5}), json!({}), json!({"lifetime_seconds": "a day"}), json!({"lifetime_seconds": 3600, "extra": 1})] {
        let (code, body) = put(bad.clone()).await;
        assert!(code == 400 || code == 422, "{bad}: {code} {body}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    let (code, body) = put(json!({"lifetime_seconds": 86400})).await;
    assert_eq!((code, body["lifetime_seconds"].as_u64()), (200, Some(86400)), "{body}");
    let (_, answer) = s.get(&format!("/tenants/{t}/license")).await;
    let c = accepted(&keys, None, &iss, &t, answer["license"].as_str().unwrap());
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 86400);
    assert!(s.audit(&t).await.iter().any(|r| r["action"] == "license_file_lifetime_set" && r["after"]["lifetime_seconds"] == 86400));
    let (code, body) = put(json!({"lifetime_seconds": null})).await;
    assert_eq!((code, &body["lifetime_seconds"]), (200, &Value::Null), "{body}");

    // A Stripe subscription.
    let t = unique("lfs");
    let sub = s.billing.subscribe(Some(&t), "team_monthly", 4).await;
    s.webhook_taken(&t, sub["id"].as_str().unwrap(), "customer.subscription.created").await;
    let view = s.tenant_where(&t, "the subscription provisioned", |v| v["seats"]["total"] == 4).await;
    let (code, answer) = s.get(&format!("/tenants/{t}/license")).await;
    assert_eq!(code, 200, "{answer}");
    let claims = accepted(&keys, Some(&jwks_url(&s)), &iss, &t, answer["license"].as_str().unwrap());
    assert_eq!((claims["tier"].as_str(), claims["seats"].as_u64(), &claims["entitlements"]), (Some("team"), Some(4), &view["entitlements"]));
    let sources = claims["sources"].as_array().unwrap();
    assert_eq!((sources.len(), sources[0]["source"].as_str(), sources[0]["license_id"].as_str()), (1, Some("stripe"), sub["id"].as_str()), "{sources:?}");
    assert_eq!(claims["expires_at"], view["expires_at"]);

    // Nobody's license: 404, naming it.
    let (code, body) = s.get(&format!("/tenants/{}/license", unique("none"))).await;
    assert_eq!(code, 404, "{body}");
}

/// Production runs the access binary twice: the private reads and tokens
/// (`ACCESS_ROUTES=private`: never the public keys) and the public keys on
/// a URL without authentication (`ACCESS_ROUTES=jwks`: nothing else).
#[tokio::test]
async fn each_deployment_of_access_serves_its_own_routes() {
    let s = Stack::connect().await;
    let t = with_ann(&s, "routes").await;
    for (routes, path, want) in [
        ("jwks", "/.well-known/jwks.json".to_string(), 200),
        ("jwks", format!("/tenants/{t}/members/ann/token"), 404),
        ("jwks", format!("/tenants/{t}/members/ann"), 404),
        ("jwks", format!("/tenants/{t}/license"), 404),
        ("private", "/.well-known/jwks.json".to_string(), 404),
        ("private", format!("/tenants/{t}/members/ann/token"), 200),
        ("private", format!("/tenants/{t}/members/ann"), 200),
    ] {
        let mut env = function_env();
        env.insert("ACCESS_ROUTES".into(), routes.into());
        let (code, body) = access_once(&env, &path).await;
        assert_eq!(code, want, "{routes} {path}: {body}");
        if want == 404 {
            assert_eq!(body["error"]["code"], "no_route", "{body}");
        }
    }
}
