//! `entitle-dev demo`: a real scenario through the running local stack.
//!
//! A Stripe subscription for a new tenant, made through Stripe's API
//! (localstripe), more accounts than seats, an upgrade made in Stripe that
//! no webhook announces (the billing reconciliation repairs it), a
//! cancellation, the tenant's SCIM target and its drift. Then a tenant's
//! identity provider pushing users through the SCIM directory under the
//! seat cap, the tenant's admin deciding who holds the seats, and an app
//! checking a member token offline against the published keys. Then
//! contract amendments, the expiry sweep, the on-call engineer's admin
//! calls and a change of the licensing model (preview, then rollout).
//!
//! One short line per step on the terminal; the details (answers, members,
//! audit records, the SCIM target's users) in `.local/demo-details.log`, or
//! on the terminal too with `DEMO_DETAILS=1` (see out.rs). Settings come
//! from the stack's `stack.env` (see dev/demo.sh).

use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A detail of the step under way (see out.rs).
macro_rules! detail {
    ($d:expr, $($arg:tt)*) => { $d.out.detail(format!($($arg)*)) };
}

mod directory;
mod out;
mod tokens;

use out::Out;

struct Demo {
    http: reqwest::Client,
    ingest: String,
    access: String,
    amend: String,
    admin: String,
    /// localstripe: Stripe's API, and the key the stack gives it.
    stripe_api: String,
    stripe_key: String,
    scim_url: String,
    scim_token: String,
    /// The issuer of member tokens (the local access URL).
    issuer: String,
    tenant: String,
    /// The tenant's users the demo follows.
    users: Vec<&'static str>,
    sub_id: String,
    audit_seen: u64,
    /// The tenant's identity provider's connection to its directory (act two, used in act three).
    idp: Option<directory::Idp>,
    out: Out,
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set: run the demo with `make demo`"))
}

const MEMBERS: [(&str, &[&str]); 5] = [("alice", &["owners"]), ("bob", &["finance"]), ("carol", &[]), ("dave", &[]), ("erin", &[])];

fn member_names() -> Vec<&'static str> {
    MEMBERS.iter().map(|(u, _)| *u).collect()
}

impl Demo {
    /// The next act's tenant and the users it follows.
    fn begin(&mut self, tenant: String, users: Vec<&'static str>) {
        self.tenant = tenant;
        self.users = users;
        self.audit_seen = 0;
    }

    async fn admin_get(&self, path: &str) -> Result<Value, String> {
        let (status, body) = self.call(self.http.get(format!("{}{path}", self.admin))).await?;
        if status != 200 {
            return Err(format!("GET {path} on admin: {status} {body}"));
        }
        Ok(body)
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
        let resp = req.send().await.map_err(|e| format!("the stack did not answer: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A call to Stripe's API (localstripe).
    async fn stripe(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.stripe_api)).basic_auth(&self.stripe_key, Some(""));
        if let Some(b) = &body {
            req = req.json(b);
        }
        let (status, answer) = self.call(req).await?;
        if !(200..300).contains(&status) {
            return Err(format!("Stripe refused {method} {path}: {status} {answer}"));
        }
        Ok(answer)
    }

    /// A customer with a card on file, subscribed to `plan` x `seats` for
    /// the tenant (`metadata.tenant_id`), the period starting at `start`.
    async fn subscribe(&mut self, plan: &str, seats: u64, start: Option<i64>) -> Result<Value, String> {
        let card = json!({"card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "123"}});
        let token = self.stripe(reqwest::Method::POST, "/v1/tokens", Some(card)).await?;
        let customer = self.stripe(reqwest::Method::POST, "/v1/customers", Some(json!({"email": format!("billing@{}.example", self.tenant), "source": token["id"]}))).await?;
        detail!(self, "Stripe: POST /v1/customers -> {}", customer["id"]);
        let mut body = json!({"customer": customer["id"], "items": [{"plan": plan, "quantity": seats}], "metadata": {"tenant_id": self.tenant}});
        if let Some(start) = start {
            body["backdate_start_date"] = json!(start);
        }
        let sub = self.stripe(reqwest::Method::POST, "/v1/subscriptions", Some(body)).await?;
        detail!(self, "Stripe: POST /v1/subscriptions {plan} x {seats}, metadata.tenant_id {} -> {} {}", self.tenant, sub["id"], sub["status"]);
        detail!(self, "Stripe (localstripe) posts the signed customer.subscription.created webhook to ingest; ingest reads the subscription back from Stripe's API");
        self.sub_id = sub["id"].as_str().unwrap_or_default().to_string();
        Ok(sub)
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        Ok(self.call(self.http.get(format!("{}{path}", self.access))).await?.1)
    }

    /// A member as the access API shows it.
    async fn member(&self, user: &str) -> Result<Value, String> {
        self.get(&format!("/tenants/{}/members/{user}", self.tenant)).await
    }

    /// Provisioning is asynchronous: wait until the tenant reads as expected
    /// and every member's access has settled.
    async fn settle(&self, want: impl Fn(&Value) -> bool) -> Result<Value, String> {
        let start = Instant::now();
        let mut last = Value::Null;
        loop {
            let tenant = self.get(&format!("/tenants/{}", self.tenant)).await?;
            let members = self.members().await?;
            if want(&tenant) && members == last {
                return Ok(tenant);
            }
            last = members;
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("access did not settle; tenant reads {tenant}"));
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }

    /// The followed users that are members (those never created are left out).
    async fn members(&self) -> Result<Value, String> {
        let mut out = Vec::new();
        for user in &self.users {
            let m = self.member(user).await?;
            if m.get("error").is_none() {
                out.push(m);
            }
        }
        Ok(Value::Array(out))
    }

    /// The tenant, its members and the audit records since the last look,
    /// as details; the new records are returned.
    async fn show(&mut self, tenant: &Value) -> Result<Vec<Value>, String> {
        detail!(
            self,
            "tenant {}: tier {}, status {}, seats {}/{} used, {} waiting, sso {}",
            self.tenant,
            tenant["tier"],
            tenant["status"],
            tenant["seats"]["used"],
            tenant["seats"]["total"],
            tenant["seats_pending"],
            tenant["entitlements"]["sso"]
        );
        for m in self.members().await?.as_array().into_iter().flatten() {
            let pin = if m["seat"]["pin"].is_object() { format!(" seat pinned by {}", m["seat"]["pin"]["by"]) } else { String::new() };
            detail!(self, "  {:<6} {:<13} roles [{}]{pin}", m["user_id"].as_str().unwrap_or_default(), m["status"].as_str().unwrap_or_default(), roles(m).join(", "));
        }
        let page = self.get(&format!("/tenants/{}/audit?after={}&limit=1000", self.tenant, self.audit_seen)).await?;
        let records = page["records"].as_array().cloned().unwrap_or_default();
        detail!(self, "audit trail, {} new record(s):", records.len());
        for r in &records {
            detail!(
                self,
                "  #{:<3} {:<26} {:<16} {:<44} cause {}:{}",
                r["seq"],
                r["action"].as_str().unwrap_or_default(),
                r["subject"].as_str().unwrap_or_default(),
                describe(&r["before"], &r["after"]),
                r["cause"]["kind"].as_str().unwrap_or_default(),
                r["cause"]["id"].as_str().unwrap_or_default()
            );
            self.audit_seen = r["seq"].as_u64().unwrap_or(self.audit_seen);
        }
        Ok(records)
    }

    /// The tenant's audit chain verified, as a step.
    async fn verify_chain(&self) -> Result<(), String> {
        let v = self.get(&format!("/tenants/{}/audit/verify", self.tenant)).await?;
        detail!(self, "GET /tenants/{}/audit/verify -> {v}", self.tenant);
        if v["ok"] != true {
            return Err(format!("the audit chain of {} did not verify: {v}", self.tenant));
        }
        self.out.step(&format!("The audit chain of {} verifies (GET .../audit/verify): {} records, each hashed into the next.", self.tenant, v["records"]));
        Ok(())
    }

    /// An account the app creates.
    async fn create(&self, user: &str, groups: &[&str], domain: &str) -> Result<Value, String> {
        let body = json!({"user_id": user, "email": format!("{user}@{domain}"), "groups": groups, "attributes": {}});
        let (status, answer) = self.call(self.http.post(format!("{}/tenants/{}/members", self.ingest, self.tenant)).json(&body)).await?;
        detail!(self, "POST /tenants/{}/members {user} -> {status} {}", self.tenant, answer["status"]);
        if status != 201 {
            return Err(format!("creating {user}: {status} {answer}"));
        }
        Ok(answer)
    }
}

/// A member's roles.
fn roles(m: &Value) -> Vec<&str> {
    m["roles"].as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

/// The users of `members` whose status is `status`.
fn with_status<'a>(members: &'a Value, status: &str) -> Vec<&'a str> {
    members.as_array().into_iter().flatten().filter(|m| m["status"] == status).filter_map(|m| m["user_id"].as_str()).collect()
}

/// "a", "a and b", "a, b and c"; "nobody".
fn names<S: AsRef<str>>(list: &[S]) -> String {
    match list {
        [] => "nobody".into(),
        [one] => one.as_ref().to_string(),
        [init @ .., last] => format!("{} and {}", init.iter().map(AsRef::as_ref).collect::<Vec<_>>().join(", "), last.as_ref()),
    }
}

/// "1 waits", "2 wait": a verb after a list of names.
fn verb(list: &[&str], one: &str, more: &str) -> String {
    format!("{} {}", names(list), if list.len() == 1 { one } else { more })
}

pub async fn run() -> Result<(), String> {
    let stamp = chrono::Utc::now().format("%H%M%S").to_string();
    let mut d = Demo {
        http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().map_err(|e| e.to_string())?,
        ingest: env("ENTITLE_INGEST_URL")?,
        access: env("ENTITLE_ACCESS_URL")?,
        amend: env("ENTITLE_AMEND_URL")?,
        admin: env("ENTITLE_ADMIN_URL")?,
        stripe_api: env("ENTITLE_STRIPE_API_URL")?,
        stripe_key: env("ENTITLE_STRIPE_API_KEY")?,
        scim_url: env("ENTITLE_SCIM_URL")?,
        scim_token: env("ENTITLE_SCIM_TOKEN")?,
        issuer: env("TOKEN_ISSUER")?,
        tenant: String::new(),
        users: Vec::new(),
        sub_id: String::new(),
        audit_seen: 0,
        idp: None,
        out: Out::open()?,
    };
    let base = d.access.rsplit_once("/lambda-url/").map_or(d.access.as_str(), |(b, _)| b).to_string();
    d.out.say(&format!("The demo, through the real functions on the local stack ({base}): one line per step."));
    if d.out.inline {
        d.out.say(&format!("Each step's details are printed under it, and kept in {}.", d.out.path.display()));
    } else {
        d.out.say(&format!("Each step's details (answers, members, audit records): {} (DEMO_DETAILS=1 prints them here).", d.out.path.display()));
    }
    let result = scenario(&mut d, &stamp).await;
    d.out.flush();
    match result {
        Ok(first) => {
            let portal = portal_link(&d, &first).await?;
            d.out.say(&format!("\nDone. The details of every step: {}.", d.out.path.display()));
            d.out.say(&format!("To look around, keep the stack up (KEEP_STACK=1 make demo, or make up first) and e.g. curl {}/tenants/{first}; dev/stack.sh down stops it.", d.access));
            d.out.say(&format!(
                "The admin portal of {first}, as its owner alice sees it (the link opens once, in a browser, within 15 minutes, while the stack is up: run KEEP_STACK=1 make demo, or make up before make demo, to open it):\n  {portal}"
            ));
            Ok(())
        }
        Err(e) => Err(format!("{e}\n(what the demo did until then: {})", d.out.path.display())),
    }
}

/// A link to the admin portal for the first tenant's owner (alice), as the
/// vendor's backend asks for one: `POST /tenants/{tenant}/portal-links`.
async fn portal_link(d: &Demo, tenant: &str) -> Result<String, String> {
    let body = json!({"admin": "alice", "ttl_seconds": 900, "intent": "seats"});
    let (status, answer) = d.call(d.http.post(format!("{}/tenants/{tenant}/portal-links", d.ingest)).json(&body)).await?;
    detail!(d, "POST /tenants/{tenant}/portal-links {body} -> {status} expires_at {}", answer["expires_at"]);
    match (status, answer["url"].as_str()) {
        (201, Some(url)) => Ok(url.to_string()),
        _ => Err(format!("POST /tenants/{tenant}/portal-links: {status} {answer}")),
    }
}

/// The acts, in order; answers the first tenant's id.
async fn scenario(d: &mut Demo, stamp: &str) -> Result<String, String> {
    stripe_and_the_app(d, stamp).await?;
    let first = d.tenant.clone();
    directory::pushes(d, stamp).await?;
    directory::seat_decisions(d).await?;
    tokens::offline_check(d).await?;
    contracts(d, stamp).await?;
    let second = d.tenant.clone();
    expiry(d, stamp).await?;
    operator(d, &second, stamp).await?;
    let fourth = format!("hooli-{stamp}");
    model_change(d, &[&second, &fourth], stamp).await?;
    Ok(first)
}

/// Act one: Stripe, the app's accounts and the tenant's SCIM target.
async fn stripe_and_the_app(d: &mut Demo, stamp: &str) -> Result<(), String> {
    d.begin(format!("acme-{stamp}"), member_names());
    d.out.act(&format!("Stripe, the app and a SCIM target (tenant {})", d.tenant));
    let plan = d.stripe(reqwest::Method::GET, "/v1/plans/team_monthly", None).await?;
    detail!(d, "Stripe: GET /v1/plans/team_monthly -> {} {} per {} (the model maps this price id to the team tier)", plan["amount"], plan["currency"], plan["interval"]);
    d.subscribe("team_monthly", 3, None).await?;
    let t = d.settle(|t| t["tier"] == "team").await?;
    d.show(&t).await?;
    d.out.step(&format!(
        "A customer subscribes {} to team_monthly x 3 through Stripe's API; Stripe's signed webhook reaches ingest, which reads the subscription back: tier {}, {} seats.",
        d.tenant,
        t["tier"].as_str().unwrap_or_default(),
        t["seats"]["total"]
    ));

    let target = json!({"base_url": format!("{}/{}", d.scim_url, d.tenant), "token": d.scim_token, "mapping": {"group_prefix": "entitle-"}});
    let (status, answer) = d.call(d.http.put(format!("{}/tenants/{}/targets/okta", d.ingest, d.tenant)).json(&target)).await?;
    detail!(d, "PUT /tenants/{}/targets/okta ({}/{}) -> {status} status {} token {}", d.tenant, d.scim_url, d.tenant, answer["status"], answer["token"]);
    if !(200..300).contains(&status) {
        return Err(format!("PUT .../targets/okta: {status} {answer}"));
    }
    d.out.step(&format!("The app gives the tenant a SCIM target to provision (scim2-server; its token goes to Secrets Manager): {}.", answer["status"].as_str().unwrap_or_default()));

    for (user, groups) in MEMBERS {
        d.create(user, groups, "acme.example").await?;
    }
    let t = d.settle(|t| t["seats"]["used"] == 3).await?;
    d.show(&t).await?;
    let on_target = d.show_scim().await?;
    let m = d.members().await?;
    d.out.step(&format!(
        "The app creates 5 accounts for 3 seats: {} get one at once, {}; the SCIM target gets the {} seated users.",
        names(&with_status(&m, "active")),
        verb(&with_status(&m, "pending_seat"), "waits", "wait"),
        on_target.iter().filter(|u| u.active).count()
    ));

    let item = d.stripe(reqwest::Method::GET, &format!("/v1/subscriptions/{}", d.sub_id), None).await?["items"]["data"][0]["id"].clone();
    let sub = d.stripe(reqwest::Method::POST, &format!("/v1/subscriptions/{}", d.sub_id), Some(json!({"items": [{"id": item, "plan": "business_monthly", "quantity": 5}]}))).await?;
    detail!(d, "Stripe: POST /v1/subscriptions/{} business_monthly x 5 -> {} (localstripe sends no .updated webhook; a real endpoint may have been down)", d.sub_id, sub["status"]);
    let (status, answer) = d.call(d.http.post(format!("{}/tenants/{}/billing/sync", d.ingest, d.tenant))).await?;
    detail!(d, "POST /tenants/{}/billing/sync -> {status} {answer} (it also runs hourly)", d.tenant);
    let t = d.settle(|t| t["tier"] == "business" && t["seats"]["used"] == 5).await?;
    d.show(&t).await?;
    d.show_scim().await?;
    let m = d.members().await?;
    let billing: Vec<&str> = m.as_array().into_iter().flatten().filter(|m| roles(m).contains(&"billing-admin")).filter_map(|m| m["user_id"].as_str()).collect();
    d.out.step(&format!(
        "The customer moves to business_monthly x 5 in Stripe and no webhook says so; the billing sync finds it: {}, {} of {} seats used, billing-admin: {}.",
        t["tier"].as_str().unwrap_or_default(),
        t["seats"]["used"],
        t["seats"]["total"],
        names(&billing)
    ));

    let sub = d.stripe(reqwest::Method::DELETE, &format!("/v1/subscriptions/{}", d.sub_id), None).await?;
    detail!(d, "Stripe: DELETE /v1/subscriptions/{} -> {}; Stripe posts customer.subscription.deleted to ingest", d.sub_id, sub["status"]);
    let t = d.settle(|t| t["tier"] == "free").await?;
    d.show(&t).await?;
    let on_target = d.show_scim().await?;
    let m = d.members().await?;
    d.out.step(&format!(
        "The subscription is canceled in Stripe: {}, {} seat; {} keeps it (the owner), {}; the SCIM target deactivates {} user(s).",
        t["tier"].as_str().unwrap_or_default(),
        t["seats"]["total"],
        names(&with_status(&m, "active")),
        verb(&with_status(&m, "pending_seat"), "waits", "wait"),
        on_target.iter().filter(|u| !u.active).count()
    ));

    d.scim_drift("dave@acme.example", "entitle-admin").await?;
    detail!(d, "an admin of the target puts dave (no seat, inactive) into entitle-admin, behind Entitle's back:");
    d.show_scim_now().await?;
    let (status, _) = d.call(d.http.delete(format!("{}/tenants/{}/members/erin", d.ingest, d.tenant))).await?;
    detail!(d, "DELETE /tenants/{}/members/erin -> {status}", d.tenant);
    let last_repair = d.target().await?["health"]["last_repair_at"].clone();
    let (status, _) = d.call(d.http.post(format!("{}/tenants/{}/targets/okta/repair", d.ingest, d.tenant))).await?;
    detail!(d, "POST /tenants/{}/targets/okta/repair -> {status} (drift repair on demand; it also runs on the sweep's schedule)", d.tenant);
    d.until_target(|t| t["health"]["last_repair_at"] != last_repair).await?;
    let t = d.settle(|_| true).await?;
    d.show(&t).await?;
    let on_target = d.show_scim().await?;
    let dave = on_target.iter().find(|u| u.name == "dave@acme.example").map(|u| u.groups.clone()).unwrap_or_default();
    let dave = if dave.is_empty() { "takes dave out of it".to_string() } else { format!("leaves dave in [{}]", dave.join(", ")) };
    let erin = if on_target.iter().any(|u| u.name == "erin@acme.example") { "still there" } else { "deleted there" };
    d.out.step(&format!("Behind Entitle's back, an admin of the target puts dave (no seat) into entitle-admin; the app removes erin; the drift repair {dave}, erin is {erin}."));
    d.verify_chain().await
}

/// Act six: a license runs out; the expiry sweep, fired as of later
/// instants, gives notice, starts grace, then downgrades.
async fn expiry(d: &mut Demo, stamp: &str) -> Result<(), String> {
    d.begin(format!("initech-{stamp}"), member_names().into_iter().take(3).collect());
    d.out.act(&format!("A license runs out: the expiry sweep (tenant {})", d.tenant));
    let now = chrono::Utc::now();
    let ends = now + chrono::Duration::days(10);
    let start = ends.checked_sub_months(chrono::Months::new(1)).ok_or("a month before the period end")?;
    d.subscribe("team_monthly", 2, Some(start.timestamp())).await?;
    d.settle(|t| t["tier"] == "team").await?;
    for (user, groups) in MEMBERS.iter().take(3) {
        d.create(user, groups, "initech.example").await?;
    }
    let t = d.settle(|t| t["seats"]["used"] == 2).await?;
    d.show(&t).await?;
    let m = d.members().await?;
    d.out.step(&format!(
        "{} subscribes to team_monthly x 2 in Stripe, the period ending {}; the app creates 3 accounts: {} hold seats, {}.",
        d.tenant,
        ends.format("%Y-%m-%d"),
        names(&with_status(&m, "active")),
        verb(&with_status(&m, "pending_seat"), "waits", "wait")
    ));
    for (offset, what) in [(5, "five days later"), (10, "the period's end"), (17, "a week after it")] {
        let at = now + chrono::Duration::days(offset);
        let report = crate::sweep::fire(Some(&at.to_rfc3339())).await?;
        detail!(d, "make sweep TIME={} -> {} due license(s), {} transition(s), {} event(s) for the bus", at.format("%Y-%m-%dT%H:%M:%SZ"), report["licenses"], report["transitions"], report["events"]);
        let t = match offset {
            10 => d.settle(|t| t["status"] == "grace").await?,
            17 => d.settle(|t| t["tier"] == "free").await?,
            _ => d.settle(|_| true).await?,
        };
        let records = d.show(&t).await?;
        let m = d.members().await?;
        let happened = match offset {
            5 => format!("{} expiring-soon notice (for the nearest threshold, 7 days), access unchanged", records.iter().filter(|r| r["action"] == "license_expiring_soon").count()),
            10 => format!("the tenant is in {} (7 days), access kept: {} hold seats", t["status"].as_str().unwrap_or_default(), names(&with_status(&m, "active"))),
            _ => format!(
                "grace is over: {} ({}), {} seat: {} keeps it, {}",
                t["tier"].as_str().unwrap_or_default(),
                t["status"].as_str().unwrap_or_default(),
                t["seats"]["total"],
                names(&with_status(&m, "active")),
                verb(&with_status(&m, "pending_seat"), "waits", "wait")
            ),
        };
        d.out.step(&format!("The sweep as of {} ({what}): {happened}.", at.format("%Y-%m-%d")));
    }
    d.verify_chain().await
}

/// Act seven: the on-call engineer, through the admin function. A Stripe
/// event parked for a price the model does not know, replayed once the
/// model learnt the price and was deployed; why bob is a billing-admin; an
/// amendment waiting for review, listed and approved; the audit trail
/// exported and verified offline with the public key.
async fn operator(d: &mut Demo, contracted: &str, stamp: &str) -> Result<(), String> {
    d.begin(format!("hooli-{stamp}"), Vec::new());
    d.out.act(&format!("On call: the admin function (tenants {} and {contracted})", d.tenant));
    let gold = format!("gold_{stamp}");
    d.stripe(reqwest::Method::POST, "/v1/plans", Some(json!({"id": gold, "amount": 9900, "currency": "usd", "interval": "month", "product": {"name": "Gold"}}))).await?;
    detail!(d, "Stripe: POST /v1/plans {gold}");
    d.subscribe(&gold, 3, None).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let parked = loop {
        let list = d.admin_get("/parked?source=stripe").await?;
        if let Some(p) = list["parked"].as_array().into_iter().flatten().find(|p| p["tenant_id"] == d.tenant.as_str()) {
            break p.clone();
        }
        if Instant::now() > deadline {
            return Err(format!("the {gold} webhook was never parked"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let id = parked["event_id"].as_str().unwrap_or_default().to_string();
    detail!(d, "GET /parked?source=stripe -> {id}: {} ({} s ago)", parked["reason"].as_str().unwrap_or_default(), parked["age_secs"]);
    let (status, answer) = d.call(d.http.post(format!("{}/parked/{id}/replay", d.admin))).await?;
    detail!(d, "POST /parked/{id}/replay -> {status} status {} parked {} (the reason still holds: nothing written)", answer["status"], answer["parked"]);
    d.out.step(&format!("{} subscribes to {gold}, a price the licensing model does not map: the webhook is parked (GET /parked lists it); a replay leaves it parked.", d.tenant));
    // The fix: the licensing model learns the price, under a version of its
    // own (a version names one set of rules for ever), and is deployed (the
    // local stack's functions start afresh with the changed model file).
    let model = deployed_model()?;
    let taught = model.replacen("[stripe.price_ids]\n", &format!("[stripe.price_ids]\n{gold} = {{ tier = \"business\" }}\n"), 1);
    if taught == model {
        return Err(format!("the deployed model has no [stripe.price_ids] table to teach {gold} to"));
    }
    let version = format!("{}-gold-{stamp}", deployed_version(&model)?);
    detail!(d, "the model learns the price: [stripe.price_ids] {gold} = {{ tier = \"business\" }}, version {version} (grandfather: nobody's rules move); dev/stack.sh redeploy");
    deploy(&versioned(&taught, &version, "grandfather"))?;
    let (status, answer) = d.call(d.http.post(format!("{}/parked/{id}/replay", d.admin))).await?;
    detail!(d, "POST /parked/{id}/replay -> {status} status {} parked {} (the subscription read from Stripe now, the price known)", answer["status"], answer["parked"]);
    let t = d.settle(|t| t["tier"] == "business").await?;
    d.show(&t).await?;
    d.out.step(&format!(
        "The model learns the price (version {version}) and is deployed (dev/stack.sh redeploy); the replay applies it: {} is {}, {} seats.",
        d.tenant,
        t["tier"].as_str().unwrap_or_default(),
        t["seats"]["total"]
    ));

    let e = d.admin_get(&format!("/tenants/{contracted}/members/bob/explain")).await?;
    detail!(d, "GET /tenants/{contracted}/members/bob/explain -> {} ({})", e["access"]["status"], e["rule"].as_str().unwrap_or_default());
    detail!(d, "  license: {} x {} seats from {}", e["license"]["tier"], e["license"]["seats_total"], e["license"]["rule"].as_str().unwrap_or_default());
    detail!(d, "  seat: rank {} of {} seats (privileged {})", e["seat"]["rank"], e["seat"]["seats_total"], e["seat"]["privileged"]);
    let mut granted = Vec::new();
    for g in e["roles"].as_array().into_iter().flatten() {
        detail!(d, "  role {} granted by {}", g["role"], g["rule"]);
        if g["role"] == "billing-admin" {
            granted.push(g["rule"].as_str().unwrap_or_default().to_string());
        }
    }
    for r in e["audit"].as_array().into_iter().flatten() {
        detail!(d, "  audit #{} {} ({})", r["seq"], r["action"].as_str().unwrap_or_default(), r["rule"].as_str().unwrap_or_default());
    }
    d.out.step(&format!(
        "Support asks why bob of {contracted} is a billing-admin (GET .../explain): granted by {}; his seat ranks {} of {}.",
        names(&granted),
        e["seat"]["rank"],
        e["seat"]["seats_total"]
    ));

    let k = format!("k-{contracted}");
    let a3 = json!({"amendment_id": "a3", "base_version": 4, "patch": [{"op": "replace", "path": "/seats", "value": 1}]});
    let (status, a) = d.amend(&format!("/contracts/{k}/amendments"), &a3).await?;
    d.print_amendment(status, &a);
    let reviews = d.admin_get("/reviews").await?;
    let mut listed = false;
    for r in reviews["reviews"].as_array().into_iter().flatten() {
        listed |= r["contract_id"] == k.as_str() && r["amendment_id"] == "a3";
        detail!(
            d,
            "GET /reviews -> {} {} of {}: {} (waiting {} s; rules: {})",
            r["contract_id"].as_str().unwrap_or_default(),
            r["amendment_id"].as_str().unwrap_or_default(),
            r["tenant_id"].as_str().unwrap_or_default(),
            r["changes"].as_array().into_iter().flatten().filter_map(|c| c["summary"].as_str()).collect::<Vec<_>>().join("; "),
            r["waiting_secs"],
            r["review"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join("; ")
        );
    }
    let (status, approved) = d.amend(&format!("/contracts/{k}/amendments/a3/approve"), &json!({"by": "cfo@globex.example", "reason": "one seat until renewal"})).await?;
    detail!(d, "POST /contracts/{k}/amendments/a3/approve -> {status} status {}", approved["status"]);
    d.tenant = contracted.to_string();
    let t = d.settle(|t| t["seats"]["total"] == 1).await?;
    d.out.step(&format!(
        "Amendment a3 of {k} (seats 5 -> 1) waits for review ({}); GET /reviews {} it; the CFO approves: {} seat.",
        a["status"].as_str().unwrap_or_default(),
        if listed { "lists" } else { "does not list" },
        t["seats"]["total"]
    ));

    let export = d.http.get(format!("{}/tenants/{contracted}/audit/export", d.admin)).send().await.map_err(|e| e.to_string())?.text().await.map_err(|e| e.to_string())?;
    let key = d.http.get(format!("{}/audit/public-key", d.admin)).send().await.map_err(|e| e.to_string())?.text().await.map_err(|e| e.to_string())?;
    let dir = std::path::Path::new(&env("STACK_DIR")?).join("export");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (file, pem) = (dir.join(format!("{contracted}.jsonl")), dir.join("public-key.pem"));
    std::fs::write(&file, &export).map_err(|e| e.to_string())?;
    std::fs::write(&pem, &key).map_err(|e| e.to_string())?;
    detail!(d, "GET /tenants/{contracted}/audit/export -> {} ({} lines), GET /audit/public-key -> {}", file.display(), export.lines().count(), pem.display());
    let out = std::process::Command::new("dev/verify-export.sh").arg(&file).arg(&pem).output().map_err(|e| format!("dev/verify-export.sh: {e}"))?;
    detail!(d, "dev/verify-export.sh (jq, openssl) -> {}", String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() {
        return Err(format!("the export did not verify: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let dead = d.admin_get("/dead-letters").await?;
    detail!(d, "GET /dead-letters -> {} message(s) parked", dead["count"]);
    d.out.step(&format!(
        "An auditor gets {contracted}'s trail (GET .../audit/export, {} records and a signed checkpoint) and verifies it offline with the public key (dev/verify-export.sh: jq, openssl): ok.",
        export.lines().count().saturating_sub(1)
    ));
    Ok(())
}

/// The deployed model's text (`ENTITLE_MODEL_PATH` of the stack).
fn deployed_model() -> Result<String, String> {
    let path = std::env::var("ENTITLE_MODEL_PATH").map_err(|_| "ENTITLE_MODEL_PATH is not set: start the stack with dev/stack.sh up".to_string())?;
    std::fs::read_to_string(&path).map_err(|e| format!("reading {path}: {e}"))
}

fn deployed_version(text: &str) -> Result<String, String> {
    text.lines().find_map(|l| l.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"'))).map(str::to_string).ok_or_else(|| "the deployed model names no version".to_string())
}

/// `text` under `version`, its `[rollout] existing` as given.
fn versioned(text: &str, version: &str, existing: &str) -> String {
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("version = ") {
                format!("version = \"{version}\"")
            } else if l.starts_with("existing = ") {
                format!("existing = \"{existing}\"")
            } else {
                l.to_string()
            }
        })
        .collect();
    lines.join("\n") + "\n"
}

/// A deploy, locally: the model written where the functions read it, and
/// `dev/stack.sh redeploy` (the functions start afresh; the model tick
/// registers the model).
fn deploy(text: &str) -> Result<(), String> {
    let path = std::env::var("ENTITLE_MODEL_PATH").map_err(|_| "ENTITLE_MODEL_PATH is not set".to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("writing {path}: {e}"))?;
    let deployed = std::process::Command::new("dev/stack.sh").arg("redeploy").output().map_err(|e| format!("dev/stack.sh redeploy: {e}"))?;
    if !deployed.status.success() {
        return Err(format!("dev/stack.sh redeploy failed: {}", String::from_utf8_lossy(&deployed.stderr)));
    }
    Ok(())
}

/// Act eight: the commercial rules change, and the tenants that exist follow
/// them. The change is previewed first (which members of which tenants gain
/// or lose what, nothing written), then deployed with `[rollout] existing =
/// "migrate"`: the model tick registers the version and rolls it out to
/// every tenant, each member change audited with the rollout.
async fn model_change(d: &mut Demo, tenants: &[&str], stamp: &str) -> Result<(), String> {
    d.begin(tenants[0].to_string(), member_names());
    d.out.act("The licensing model changes: a preview, then a rollout");
    let model = deployed_model()?;
    let version = format!("{}-sso-{stamp}", deployed_version(&model)?);
    let changed = model.replacen("projects = 500\napi_access = true\nsso = false", "projects = 750\napi_access = true\nsso = true", 1);
    if changed == model {
        return Err("the deployed model's business tier is not the shipped one".into());
    }
    let candidate = versioned(&changed, &version, "migrate");
    let url = format!("{}/model/previews?tenants={}", d.admin, tenants.join(","));
    let (status, created) = d.call(d.http.post(url).header("content-type", "application/toml").body(candidate.clone())).await?;
    if status != 202 {
        return Err(format!("POST /model/previews: {status} {created}"));
    }
    let id = created["preview_id"].as_str().unwrap_or_default().to_string();
    let path = format!("/model/previews/{id}");
    let preview = until(|| d.admin_get(&path), |p| p["status"] == "done").await?;
    detail!(
        d,
        "POST /model/previews?tenants={} (the candidate, TOML) -> 202 {id}; GET /model/previews/{id} -> {}, {} of {} tenants read",
        tenants.join(","),
        preview["status"],
        preview["progress"]["read"],
        preview["progress"]["total"]
    );
    let totals = &preview["totals"];
    detail!(
        d,
        "totals: {} tenant(s) affected, {} member(s) gain an entitlement, {} lose one, {} lose a seat",
        totals["tenants_affected"],
        totals["entitlements_gained"],
        totals["entitlements_lost"],
        totals["seats_lost"]
    );
    for t in preview["tenants_page"].as_array().into_iter().flatten() {
        for m in t["preview"]["members"].as_array().into_iter().flatten() {
            detail!(
                d,
                "  {:<22} {:<6} entitlements +{} -{}",
                t["tenant_id"].as_str().unwrap_or_default(),
                m["user_id"].as_str().unwrap_or_default(),
                m["entitlements_added"],
                m["entitlements_removed"]
            );
        }
    }
    d.out.step(&format!(
        "The rules change (business gains sso and 750 projects, version {version}); a preview of {} (nothing written): {} tenant(s) affected, {} member(s) gain an entitlement, {} lose a seat.",
        names(tenants),
        totals["tenants_affected"],
        totals["entitlements_gained"],
        totals["seats_lost"]
    ));

    d.audit_seen = d.get(&format!("/tenants/{}/audit/verify", d.tenant)).await?["records"].as_u64().unwrap_or(0);
    detail!(d, "deployed with [rollout] existing = \"migrate\" (dev/stack.sh redeploy); the model tick registers {version} and rolls it out to every tenant");
    deploy(&candidate)?;
    let path = format!("/model/rollouts/deploy-{version}");
    let rollout = until(|| d.admin_get(&path), |r| r["status"] == "done" || r["status"] == "failed").await?;
    detail!(d, "GET /model/rollouts/deploy-{version} -> {}: {} tenant(s) moved, {} member(s) changed", rollout["status"], rollout["counts"]["done"], rollout["counts"]["members_changed"]);
    let overview = d.admin_get("/model").await?;
    for v in overview["versions"].as_array().into_iter().flatten() {
        detail!(d, "  version {:<28} {} tenant(s){}", v["version"].as_str().unwrap_or_default(), v["tenants"], if v["latest"] == true { " (latest)" } else { "" });
    }
    if rollout["status"] != "done" {
        return Err(format!("the rollout of {version} ended {}: {rollout}", rollout["status"]));
    }
    let t = d.settle(|t| t["model"]["version"] == version.as_str()).await?;
    d.show(&t).await?;
    d.out.step(&format!(
        "It is deployed with existing = \"migrate\": the rollout moves {} tenant(s), {} member(s) changed; {} now reads sso {}, projects {}.",
        rollout["counts"]["done"], rollout["counts"]["members_changed"], d.tenant, t["entitlements"]["sso"], t["entitlements"]["projects"]
    ));
    Ok(())
}

/// Polls `read` until `done` holds (two minutes at most).
async fn until<F, Fut>(mut read: F, done: impl Fn(&Value) -> bool) -> Result<Value, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Value, String>>,
{
    let start = Instant::now();
    loop {
        let v = read().await?;
        if done(&v) {
            return Ok(v);
        }
        if start.elapsed() > Duration::from_secs(120) {
            return Err(format!("gave up waiting: {v}"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A user on the SCIM target, as the demo reports it.
struct TargetUser {
    name: String,
    active: bool,
    groups: Vec<String>,
}

impl Demo {
    async fn scim(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut req = self.http.request(method, format!("{}/{}{path}", self.scim_url, self.tenant)).bearer_auth(&self.scim_token);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let resp = req.send().await.map_err(|e| format!("scim2-server did not answer: {e}"))?;
        let text = resp.text().await.map_err(|e| e.to_string())?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// The tenant's target as `GET /tenants/{tenant}/targets` shows it.
    async fn target(&self) -> Result<Value, String> {
        let (_, targets) = self.call(self.http.get(format!("{}/tenants/{}/targets", self.ingest, self.tenant))).await?;
        Ok(targets["targets"][0].clone())
    }

    async fn until_target(&self, want: impl Fn(&Value) -> bool) -> Result<Value, String> {
        let start = Instant::now();
        loop {
            let t = self.target().await?;
            if want(&t) {
                return Ok(t);
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("the SCIM target did not catch up: {t}"));
            }
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
    }

    /// Waits until the tenant's target has taken every change, then shows it.
    async fn show_scim(&self) -> Result<Vec<TargetUser>, String> {
        self.until_target(|t| t["pending"] == 0 && t["status"] == "healthy" && !t["health"]["last_success_at"].is_null()).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.show_scim_now().await
    }

    async fn show_scim_now(&self) -> Result<Vec<TargetUser>, String> {
        let users = self.scim(reqwest::Method::GET, "/Users", None).await?;
        let groups = self.scim(reqwest::Method::GET, "/Groups", None).await?;
        detail!(self, "on the SCIM target (scim2-server {}/{}):", self.scim_url, self.tenant);
        let mut seen = Vec::new();
        for u in users["Resources"].as_array().into_iter().flatten() {
            let id = u["id"].as_str().unwrap_or_default();
            let in_groups: Vec<String> = groups["Resources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|g| g["members"].as_array().into_iter().flatten().any(|m| m["value"] == id))
                .filter_map(|g| g["displayName"].as_str().map(str::to_string))
                .collect();
            let user = TargetUser { name: u["userName"].as_str().unwrap_or_default().to_string(), active: u["active"].as_bool().unwrap_or(true), groups: in_groups };
            detail!(self, "  {:<20} externalId {:<6} active {:<5} groups [{}]", user.name, u["externalId"].as_str().unwrap_or("-"), user.active, user.groups.join(", "));
            seen.push(user);
        }
        Ok(seen)
    }

    /// An admin of the target adds a user to a group directly.
    async fn scim_drift(&self, user_name: &str, group: &str) -> Result<(), String> {
        let users = self.scim(reqwest::Method::GET, "/Users", None).await?;
        let groups = self.scim(reqwest::Method::GET, "/Groups", None).await?;
        let find = |list: &Value, attr: &str, value: &str| list["Resources"].as_array().into_iter().flatten().find(|r| r[attr] == value).and_then(|r| r["id"].as_str().map(str::to_string));
        let (Some(uid), Some(gid)) = (find(&users, "userName", user_name), find(&groups, "displayName", group)) else {
            return Err(format!("{user_name} or {group} is not on the target"));
        };
        self.scim(reqwest::Method::PATCH, &format!("/Groups/{gid}"), Some(entitle::core::scim::patch_body(&[entitle::core::scim::add_member_op(&uid)]))).await?;
        Ok(())
    }

    async fn amend(&self, path: &str, body: &Value) -> Result<(u16, Value), String> {
        self.call(self.http.post(format!("{}{path}", self.amend)).json(body)).await
    }

    fn print_amendment(&self, status: u16, a: &Value) {
        detail!(self, "-> {status} status {}", a["status"]);
        for c in a["changes"].as_array().into_iter().flatten() {
            detail!(self, "  change: {}", c["summary"].as_str().unwrap_or_default());
        }
        for m in a["impact"]["members"].as_array().into_iter().flatten() {
            let seat = m["seat"].as_str().map(|s| format!(" seat {s};")).unwrap_or_default();
            detail!(
                self,
                "  impact: {}{seat} roles +{} -{}, entitlements +{} -{}",
                m["user_id"].as_str().unwrap_or_default(),
                m["roles_added"],
                m["roles_removed"],
                m["entitlements_added"],
                m["entitlements_removed"]
            );
        }
        for r in a["review"].as_array().into_iter().flatten() {
            detail!(self, "  review: {}", r.as_str().unwrap_or_default());
        }
    }
}

/// The members of an amendment's impact whose seat is `seat` (`gained`, `lost`).
fn seat_impact<'a>(a: &'a Value, seat: &str) -> Vec<&'a str> {
    a["impact"]["members"].as_array().into_iter().flatten().filter(|m| m["seat"] == seat).filter_map(|m| m["user_id"].as_str()).collect()
}

/// Act five: a contract, amended three ways.
async fn contracts(d: &mut Demo, stamp: &str) -> Result<(), String> {
    d.begin(format!("globex-{stamp}"), member_names());
    let k = format!("k-{}", d.tenant);
    d.out.act(&format!("A contract, amended three ways (tenant {}, contract {k})", d.tenant));
    let doc = json!({
        "contract_id": k, "tenant_id": d.tenant,
        "term": {"start": "2026-01-01T00:00:00Z", "end": "2088-01-01T00:00:00Z", "auto_renew": true},
        "tier": "business", "seats": 4, "add_ons": [],
        "named_users": [{"id": "alice", "email": "alice@globex.example", "roles": ["admin"]}],
        "role_mappings": {"finance": ["billing-admin"]},
        "support": {"level": "standard", "response_hours": 24}
    });
    let (status, c) = d.amend("/contracts", &doc).await?;
    detail!(d, "POST /contracts -> {status} version {}", c["version"]);
    if status != 201 {
        return Err(format!("POST /contracts: {status} {c}"));
    }
    d.settle(|t| t["tier"] == "business").await?;
    for (user, groups) in MEMBERS {
        d.create(user, groups, "globex.example").await?;
    }
    let t = d.settle(|t| t["seats"]["used"] == 4).await?;
    d.show(&t).await?;
    let m = d.members().await?;
    d.out.step(&format!(
        "Contract {k}: business, 4 seats, alice a named admin, an unmapped `support` clause; of 5 accounts, {} hold seats, {}.",
        names(&with_status(&m, "active")),
        verb(&with_status(&m, "pending_seat"), "waits", "wait")
    ));

    let a1 = json!({"amendment_id": "a1", "base_version": 1, "patch": [
        {"op": "add", "path": "/add_ons/-", "value": "sso"},
        {"op": "replace", "path": "/seats", "value": 5},
        {"op": "replace", "path": "/support/level", "value": "premium"}]});
    let (status, a) = d.amend(&format!("/contracts/{k}/amendments"), &a1).await?;
    d.print_amendment(status, &a);
    let t = d.settle(|t| t["seats"]["used"] == 5).await?;
    d.show(&t).await?;
    let after_a1 = d.members().await?;
    d.out.step(&format!(
        "Amendment a1, a JSON Patch (add-on sso, 5 seats, premium support), is {} at once: {} gets a seat, sso {}.",
        a["status"].as_str().unwrap_or_default(),
        names(&seat_impact(&a, "gained")),
        t["entitlements"]["sso"]
    ));

    let a2 = json!({"amendment_id": "a2", "base_version": 2, "record": {"parent_record_id": k, "properties": {"seats": {"type": "number", "value": 2}}}});
    let (status, a) = d.amend(&format!("/contracts/{k}/amendments"), &a2).await?;
    d.print_amendment(status, &a);
    let held = a["status"].as_str().unwrap_or_default().to_string();
    let rules = a["review"].as_array().map_or(0, Vec::len);
    let (status, a) = d.amend(&format!("/contracts/{k}/amendments/a2/approve"), &json!({"by": "cfo@globex.example", "reason": "downsizing agreed"})).await?;
    detail!(d, "POST /contracts/{k}/amendments/a2/approve by cfo@globex.example -> {status} status {} (version {})", a["status"], a["applied_version"]);
    let t = d.settle(|t| t["seats"]["total"] == 2).await?;
    d.show(&t).await?;
    let m = d.members().await?;
    d.out.step(&format!(
        "Amendment a2, a CLM record (seats 5 -> 2), is held for review ({held}: {rules} review rules fired); the CFO approves it: {} lose their seats, {} keep theirs.",
        names(&with_status(&m, "pending_seat")),
        names(&with_status(&m, "active"))
    ));

    let (status, a) = d.amend(&format!("/contracts/{k}/amendments/a2/reverse"), &json!({"by": "legal@globex.example", "reason": "signed in error"})).await?;
    detail!(d, "POST /contracts/{k}/amendments/a2/reverse -> {status} status {} (version {})", a["status"], a["reversed_version"]);
    let t = d.settle(|t| t["seats"]["used"] == 5).await?;
    d.show(&t).await?;
    let after = d.members().await?;
    let access = |m: &Value| m.as_array().into_iter().flatten().map(|m| (m["user_id"].clone(), m["status"].clone(), m["roles"].clone(), m["entitlements"].clone())).collect::<Vec<_>>();
    let (_, c) = d.call(d.http.get(format!("{}/contracts/{k}", d.amend))).await?;
    detail!(d, "contract history:");
    let mut history = Vec::new();
    for h in c["history"].as_array().into_iter().flatten() {
        let changes = if h["cause"] == "created" {
            "the first version".to_string()
        } else {
            h["changes"].as_array().map(|c| c.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; ")).unwrap_or_default()
        };
        detail!(d, "  v{} {}: {changes}", h["version"], h["cause"].as_str().unwrap_or_default());
        history.push(format!("v{} {}", h["version"], h["cause"].as_str().unwrap_or_default()));
    }
    d.out.step(&format!(
        "Amendment a2 is {}: 5 seats again, and every member's access {} what it was before a2. History: {}.",
        a["status"].as_str().unwrap_or_default(),
        if access(&after) == access(&after_a1) { "is exactly" } else { "differs from" },
        history.join(", ")
    ));
    d.verify_chain().await
}

/// "before -> after" of an audit record, in a few words.
fn describe(before: &Value, after: &Value) -> String {
    let summary = |v: &Value| -> String {
        if v.is_null() {
            return "-".into();
        }
        if let Some(tier) = v.get("tier").and_then(Value::as_str) {
            let seats = v.get("seats_total").or_else(|| v.get("seats")).cloned().unwrap_or_default();
            return format!("{tier}/{seats} seats/{}", v["status"].as_str().unwrap_or_default());
        }
        if let Some(status) = v.get("status").and_then(Value::as_str) {
            return status.to_string();
        }
        if let Some(version) = v.get("version") {
            return format!("v{version}");
        }
        if let Some(model) = v.get("model").and_then(Value::as_str) {
            return format!("model {model}");
        }
        if let Some(repaired) = v.get("repaired").and_then(Value::as_array) {
            let who: Vec<&str> = repaired.iter().filter_map(Value::as_str).collect();
            return format!("repaired [{}], {} stranger(s) out of groups", who.join(","), v["strangers_removed"]);
        }
        if let Some(url) = v.get("base_url").and_then(Value::as_str) {
            return url.to_string();
        }
        if v.get("role_mappings").is_some() {
            return format!("{} mappings, {} named", v["role_mappings"].as_object().map_or(0, |m| m.len()), v["named_users"].as_object().map_or(0, |m| m.len()));
        }
        if let Some(name) = v.get("name").and_then(Value::as_str) {
            return format!("{name} (when full: {})", v["when_full"].as_str().unwrap_or("the model's default"));
        }
        "-".into()
    };
    let mut text = format!("{} -> {}", summary(before), summary(after));
    // A member decided under another version of the rules.
    if let (Some(b), Some(a)) = (before.get("model").and_then(Value::as_str), after.get("model").and_then(Value::as_str)) {
        if b != a && before.get("status").is_some() {
            text += " (model)";
        }
    }
    let roles = |v: &Value| -> Vec<String> { v.get("roles").and_then(Value::as_array).map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_string)).collect()).unwrap_or_default() };
    let (b, a) = (roles(before), roles(after));
    let added: Vec<_> = a.iter().filter(|r| !b.contains(r)).cloned().collect();
    let removed: Vec<_> = b.iter().filter(|r| !a.contains(r)).cloned().collect();
    if !added.is_empty() {
        text += &format!(" +[{}]", added.join(","));
    }
    if !removed.is_empty() {
        text += &format!(" -[{}]", removed.join(","));
    }
    if added.is_empty() && removed.is_empty() && before.get("entitlements") != after.get("entitlements") && !before.is_null() {
        text += " (entitlements)";
    }
    text
}
