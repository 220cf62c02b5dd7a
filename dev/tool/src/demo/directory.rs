//! Acts two and three: the tenant's identity provider pushes its users
//! through the tenant's SCIM directory (the `directory` function), under
//! the seat cap; then the tenant's admin decides who holds the seats
//! (`PUT /tenants/{tenant}/members/{user}/seat` on ingest).

use super::{names, Demo};
use reqwest::Method;
use serde_json::{json, Value};

const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Entitle's read-only view of the member on a pushed User.
const ACCESS: &str = "urn:entitle:params:scim:schemas:extension:access:2.0:User";
/// Who decides for the tenant, as the seat route's `by` names them.
const ADMIN: &str = "it-admin@umbrella.example";

/// The people the identity provider pushes (their `externalId` is the member's id).
const PEOPLE: [&str; 5] = ["ann", "ben", "cat", "dan", "eve"];

/// A directory connection as the identity provider holds it.
pub struct Idp {
    base: String,
    token: String,
    id: String,
}

/// A User as Okta creates it (its SCIM 2.0 guide's shape, without the password).
fn okta_user(login: &str) -> Value {
    let email = format!("{login}@umbrella.example");
    json!({
        "schemas": [USER],
        "userName": email,
        "externalId": login,
        "name": {"givenName": login, "familyName": "Umbrella"},
        "emails": [{"primary": true, "value": email, "type": "work"}],
        "active": true
    })
}

/// A token cut short for showing: it is a secret, shown once.
fn masked(token: &str) -> String {
    format!("{}...", token.chars().take(12).collect::<String>())
}

impl Demo {
    /// A request of the identity provider to the tenant's SCIM directory.
    async fn push(&self, idp: &Idp, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        let mut req = self.http.request(method.clone(), format!("{}{path}", idp.base)).bearer_auth(&idp.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let (status, answer) = self.call(req).await?;
        let seat = if answer[ACCESS].is_object() { format!(": status {}, seat {}", answer[ACCESS]["status"], answer[ACCESS]["seat"]) } else { format!(" {answer}") };
        detail!(self, "directory: {method} {path} (Bearer {}) -> {status}{seat}", masked(&idp.token));
        Ok((status, answer))
    }

    /// `PUT /tenants/{tenant}/members/{user}/seat`.
    async fn seat(&self, user: &str, body: Value) -> Result<(u16, Value), String> {
        let (status, answer) = self.call(self.http.put(format!("{}/tenants/{}/members/{user}/seat", self.ingest, self.tenant)).json(&body)).await?;
        detail!(self, "PUT /tenants/{}/members/{user}/seat {body} -> {status} {answer}", self.tenant);
        Ok((status, answer))
    }

    /// The followed members' statuses, as "ann active, ben active, ...".
    async fn statuses(&self) -> Result<Vec<(String, String)>, String> {
        let m = self.members().await?;
        Ok(m.as_array().into_iter().flatten().map(|m| (m["user_id"].as_str().unwrap_or_default().to_string(), m["status"].as_str().unwrap_or_default().to_string())).collect())
    }

    /// Fails unless each of `want` has its status.
    async fn expect_statuses(&self, want: &[(&str, &str)]) -> Result<(), String> {
        let now = self.statuses().await?;
        for (user, status) in want {
            if !now.iter().any(|(u, s)| u == user && s == status) {
                return Err(format!("{user} was expected {status}; the members read {now:?}"));
            }
        }
        Ok(())
    }
}

/// Act two: the tenant connects its identity provider; it pushes users
/// until the seats are full, then one that waits, then (the connection set
/// to refuse) one that is refused. Nobody is evicted.
pub async fn pushes(d: &mut Demo, stamp: &str) -> Result<(), String> {
    d.begin(format!("umbrella-{stamp}"), PEOPLE.to_vec());
    d.out.act(&format!("The tenant's identity provider pushes its users through the SCIM directory (tenant {})", d.tenant));
    d.subscribe("team_monthly", 3, None).await?;
    let t = d.settle(|t| t["tier"] == "team").await?;
    d.show(&t).await?;
    let (status, conn) = d.call(d.http.post(format!("{}/tenants/{}/directories", d.ingest, d.tenant)).json(&json!({"name": "Okta"}))).await?;
    let token = conn["token"].as_str().unwrap_or_default().to_string();
    let mut shown = conn.clone();
    shown["token"] = json!(masked(&token));
    detail!(d, "POST /tenants/{}/directories {{\"name\": \"Okta\"}} -> {status} {shown}", d.tenant);
    if status != 201 || token.is_empty() {
        return Err(format!("POST /tenants/{}/directories: {status} {conn}", d.tenant));
    }
    let t = d.settle(|_| true).await?;
    d.show(&t).await?;
    let idp = Idp { base: conn["scim_base_url"].as_str().unwrap_or_default().trim_end_matches('/').to_string(), token, id: conn["directory_id"].as_str().unwrap_or_default().to_string() };
    d.out.step(&format!(
        "{} subscribes to team_monthly x 3; the app connects its Okta (POST .../directories): a SCIM base URL and a bearer token, shown this once; when full: {}.",
        d.tenant,
        conn["when_full"].as_str().unwrap_or_default()
    ));

    let mut seated = Vec::new();
    for user in &PEOPLE[..3] {
        let (status, u) = d.push(&idp, Method::POST, "/Users", Some(&okta_user(user))).await?;
        if status != 201 {
            return Err(format!("pushing {user}: {status} {u}"));
        }
        if u[ACCESS]["seat"] == "held" {
            seated.push(*user);
        }
    }
    let t = d.settle(|t| t["seats"]["used"] == 3).await?;
    d.show(&t).await?;
    let seats = if seated.len() == 3 { "each becomes a member holding a seat".to_string() } else { format!("they become members, {} holding a seat", names(&seated)) };
    d.out.step(&format!("Okta pushes ann, ben and cat (POST /Users): {seats}; {} of {} seats used.", t["seats"]["used"], t["seats"]["total"]));

    let (status, u) = d.push(&idp, Method::POST, "/Users", Some(&okta_user("dan"))).await?;
    if status != 201 {
        return Err(format!("pushing dan: {status} {u}"));
    }
    let t = d.settle(|t| t["seats_pending"] == 1).await?;
    d.show(&t).await?;
    d.expect_statuses(&[("ann", "active"), ("ben", "active"), ("cat", "active"), ("dan", "pending_seat")]).await?;
    d.out.step(&format!(
        "Okta pushes dan: no seat is free and the connection waits when full, so dan becomes a member waiting for one ({}, seat {}); ann, ben and cat keep theirs.",
        u[ACCESS]["status"].as_str().unwrap_or_default(),
        u[ACCESS]["seat"].as_str().unwrap_or_default()
    ));

    let (status, changed) = d.call(d.http.patch(format!("{}/tenants/{}/directories/{}", d.ingest, d.tenant, idp.id)).json(&json!({"when_full": "refuse"}))).await?;
    detail!(d, "PATCH /tenants/{}/directories/{} {{\"when_full\": \"refuse\"}} -> {status} {changed}", d.tenant, idp.id);
    if status != 200 {
        return Err(format!("PATCH .../directories/{}: {status} {changed}", idp.id));
    }
    let (status, refused) = d.push(&idp, Method::POST, "/Users", Some(&okta_user("eve"))).await?;
    if status != 403 {
        return Err(format!("pushing eve into a full tenant that refuses: {status} {refused}"));
    }
    let eve = d.member("eve").await?;
    detail!(d, "GET /tenants/{}/members/eve (access) -> {}", d.tenant, eve["error"]["code"]);
    if eve.get("error").is_none() {
        return Err(format!("eve was refused and yet stored: {eve}"));
    }
    let t = d.settle(|_| true).await?;
    let records = d.show(&t).await?;
    d.expect_statuses(&[("ann", "active"), ("ben", "active"), ("cat", "active"), ("dan", "pending_seat")]).await?;
    let audited = records.iter().any(|r| r["action"] == "directory_push_refused");
    d.out.step(&format!(
        "The app sets the connection to refuse when full (PATCH .../directories/{{id}}); Okta pushes eve: {status} {}, \"{}\"{}; nobody evicted.",
        refused["scimType"].as_str().unwrap_or_default(),
        refused["detail"].as_str().unwrap_or_default(),
        if audited { " (audited)" } else { "" }
    ));
    d.idp = Some(idp);
    Ok(())
}

/// Act three: the tenant's admin gives a waiting member a seat (refused:
/// none is free), then another member's seat; the identity provider then
/// deactivates a user, whose seat goes to the line.
pub async fn seat_decisions(d: &mut Demo) -> Result<(), String> {
    d.out.act(&format!("The tenant's admin decides who holds the seats (PUT /tenants/{}/members/{{user}}/seat)", d.tenant));
    let (status, e) = d.seat("dan", json!({"hold": true, "by": ADMIN})).await?;
    if status != 409 {
        return Err(format!("giving dan a seat in a full tenant: {status} {e}"));
    }
    d.out.step(&format!(
        "The admin gives waiting dan a seat ({{\"hold\": true}}): refused, {status} {}: \"{}\".",
        e["error"]["code"].as_str().unwrap_or_default(),
        e["error"]["message"].as_str().unwrap_or_default()
    ));

    let (status, dan) = d.seat("dan", json!({"hold": true, "from": "cat", "by": ADMIN})).await?;
    if status != 200 {
        return Err(format!("giving dan cat's seat: {status} {dan}"));
    }
    let t = d.settle(|t| t["seats"]["used"] == 3).await?;
    d.show(&t).await?;
    let cat = d.member("cat").await?;
    d.out.step(&format!(
        "The admin gives dan cat's seat ({{\"hold\": true, \"from\": \"cat\"}}): dan is {}, the seat pinned by {}; cat waits ({}), first in line.",
        dan["status"].as_str().unwrap_or_default(),
        dan["seat"]["pin"]["by"].as_str().unwrap_or("nobody"),
        cat["status"].as_str().unwrap_or_default()
    ));

    let idp = d.idp.take().ok_or("no directory connection")?;
    let off = json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "value": {"active": false}}]});
    let (status, ann) = d.push(&idp, Method::PATCH, "/Users/ann", Some(&off)).await?;
    if status != 200 {
        return Err(format!("deactivating ann: {status} {ann}"));
    }
    super::until(|| d.member("cat"), |m| m["status"] == "active").await?;
    let t = d.settle(|t| t["seats"]["used"] == 3).await?;
    d.show(&t).await?;
    d.expect_statuses(&[("ann", "suspended"), ("ben", "active"), ("cat", "active"), ("dan", "active")]).await?;
    d.out.step(&format!(
        "Okta deactivates ann (she left; PATCH /Users/ann active: false): she is suspended, her seat goes to cat, who waited; {} of {} seats used, nobody evicted.",
        t["seats"]["used"], t["seats"]["total"]
    ));
    Ok(())
}
