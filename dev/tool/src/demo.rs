//! `entitle-dev demo`: a real scenario through the running local stack.
//!
//! A Stripe subscription for a new tenant, made through Stripe's API
//! (localstripe), more accounts than seats, an upgrade made in Stripe that
//! no webhook announces (the billing reconciliation repairs it), a
//! cancellation; after each step, what it did to access, to the tenant's
//! SCIM target (scim2-server) and to the audit trail. Then contract
//! amendments, the expiry sweep, and the on-call engineer's admin calls.
//! Settings come from the stack's
//! `stack.env` (see dev/demo.sh).

use serde_json::{json, Value};
use std::time::{Duration, Instant};

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
    tenant: String,
    sub_id: String,
    audit_seen: u64,
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set: run the demo with `make demo`"))
}

const MEMBERS: [(&str, &[&str]); 5] = [("alice", &["owners"]), ("bob", &["finance"]), ("carol", &[]), ("dave", &[]), ("erin", &[])];

impl Demo {
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
        let body = resp.json::<Value>().await.map_err(|e| e.to_string())?;
        Ok((status, body))
    }

    /// A call to Stripe's API (localstripe), shown as it is made.
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
        println!("  POST /v1/customers -> {}", customer["id"]);
        let mut body = json!({"customer": customer["id"], "items": [{"plan": plan, "quantity": seats}], "metadata": {"tenant_id": self.tenant}});
        if let Some(start) = start {
            body["backdate_start_date"] = json!(start);
        }
        let sub = self.stripe(reqwest::Method::POST, "/v1/subscriptions", Some(body)).await?;
        println!("  POST /v1/subscriptions {plan} x {seats}, metadata.tenant_id {} -> {} {}", self.tenant, sub["id"], sub["status"]);
        println!("  Stripe (localstripe) posts the signed customer.subscription.created webhook to ingest; ingest reads the subscription back from Stripe's API");
        self.sub_id = sub["id"].as_str().unwrap_or_default().to_string();
        Ok(sub)
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        Ok(self.call(self.http.get(format!("{}{path}", self.access))).await?.1)
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

    async fn members(&self) -> Result<Value, String> {
        let mut out = Vec::new();
        for (user, _) in MEMBERS {
            out.push(self.get(&format!("/tenants/{}/members/{user}", self.tenant)).await?);
        }
        Ok(Value::Array(out))
    }

    async fn show(&mut self, tenant: &Value) -> Result<(), String> {
        println!(
            "  tenant {}: tier {}, status {}, seats {}/{} used, {} waiting, sso {}",
            self.tenant, tenant["tier"], tenant["status"], tenant["seats"]["used"], tenant["seats"]["total"], tenant["seats_pending"], tenant["entitlements"]["sso"]
        );
        for m in self.members().await?.as_array().unwrap() {
            if m.get("error").is_some() {
                continue;
            }
            let roles: Vec<&str> = m["roles"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
            println!("    {:<6} {:<13} roles [{}]", m["user_id"].as_str().unwrap_or_default(), m["status"].as_str().unwrap_or_default(), roles.join(", "));
        }
        let page = self.get(&format!("/tenants/{}/audit?after={}&limit=1000", self.tenant, self.audit_seen)).await?;
        let records = page["records"].as_array().cloned().unwrap_or_default();
        println!("  audit trail, {} new record(s):", records.len());
        for r in &records {
            println!(
                "    #{:<3} {:<22} {:<16} {:<44} cause {}:{}",
                r["seq"],
                r["action"].as_str().unwrap_or_default(),
                r["subject"].as_str().unwrap_or_default(),
                describe(&r["before"], &r["after"]),
                r["cause"]["kind"].as_str().unwrap_or_default(),
                r["cause"]["id"].as_str().unwrap_or_default()
            );
            self.audit_seen = r["seq"].as_u64().unwrap_or(self.audit_seen);
        }
        Ok(())
    }
}

pub async fn run() -> Result<(), String> {
    let stamp = chrono::Utc::now().format("%H%M%S");
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
        tenant: format!("acme-{stamp}"),
        sub_id: String::new(),
        audit_seen: 0,
    };

    println!("\n1. Stripe: a customer subscribes tenant {} to team_monthly x 3 seats (through Stripe's API)", d.tenant);
    let plan = d.stripe(reqwest::Method::GET, "/v1/plans/team_monthly", None).await?;
    println!("  GET /v1/plans/team_monthly -> {} {} per {} (the model maps this price id to the team tier)", plan["amount"], plan["currency"], plan["interval"]);
    d.subscribe("team_monthly", 3, None).await?;
    let t = d.settle(|t| t["tier"] == "team").await?;
    d.show(&t).await?;
    println!("  PUT /tenants/{}/targets/okta: the tenant's SCIM target, {}/{} (the token goes to Secrets Manager)", d.tenant, d.scim_url, d.tenant);
    let target = json!({"base_url": format!("{}/{}", d.scim_url, d.tenant), "token": d.scim_token, "mapping": {"group_prefix": "entitle-"}});
    let (status, answer) = d.call(d.http.put(format!("{}/tenants/{}/targets/okta", d.ingest, d.tenant)).json(&target)).await?;
    println!("  -> {status} status {} token {}", answer["status"], answer["token"]);

    println!("\n2. The app creates 5 accounts for 3 seats (alice in group owners, bob in finance)");
    for (user, groups) in MEMBERS {
        let body = json!({"user_id": user, "email": format!("{user}@acme.example"), "groups": groups, "attributes": {}});
        let (status, answer) = d.call(d.http.post(format!("{}/tenants/{}/members", d.ingest, d.tenant)).json(&body)).await?;
        println!("  POST /tenants/{}/members {user} -> {status} {}", d.tenant, answer["status"]);
    }
    let t = d.settle(|t| t["seats"]["used"] == 3).await?;
    d.show(&t).await?;
    d.show_scim().await?;

    println!("\n3. Stripe: the customer upgrades to business_monthly and 5 seats, and no webhook says so (localstripe sends no .updated; a real endpoint may have been down)");
    let item = d.stripe(reqwest::Method::GET, &format!("/v1/subscriptions/{}", d.sub_id), None).await?["items"]["data"][0]["id"].clone();
    let sub = d.stripe(reqwest::Method::POST, &format!("/v1/subscriptions/{}", d.sub_id), Some(json!({"items": [{"id": item, "plan": "business_monthly", "quantity": 5}]}))).await?;
    println!("  POST /v1/subscriptions/{} business_monthly x 5 -> {}", d.sub_id, sub["status"]);
    let (status, answer) = d.call(d.http.post(format!("{}/tenants/{}/billing/sync", d.ingest, d.tenant))).await?;
    println!("  POST /tenants/{}/billing/sync -> {status} {answer} (the billing reconciliation compares Stripe with what Entitle holds; it also runs hourly)", d.tenant);
    let t = d.settle(|t| t["tier"] == "business" && t["seats"]["used"] == 5).await?;
    d.show(&t).await?;
    d.show_scim().await?;

    println!("\n4. Stripe: the subscription is canceled (Stripe licenses downgrade to free: 1 seat)");
    let sub = d.stripe(reqwest::Method::DELETE, &format!("/v1/subscriptions/{}", d.sub_id), None).await?;
    println!("  DELETE /v1/subscriptions/{} -> {}; Stripe posts customer.subscription.deleted to ingest", d.sub_id, sub["status"]);
    let t = d.settle(|t| t["tier"] == "free").await?;
    d.show(&t).await?;
    d.show_scim().await?;

    println!("\n   Behind Entitle's back, an admin of the target puts dave (no seat, inactive) into entitle-admin; the app removes erin's account");
    d.scim_drift("dave@acme.example", "entitle-admin").await?;
    d.show_scim_now().await?;
    let (status, _) = d.call(d.http.delete(format!("{}/tenants/{}/members/erin", d.ingest, d.tenant))).await?;
    println!("  DELETE /tenants/{}/members/erin -> {status}", d.tenant);
    let last_repair = d.target().await?["health"]["last_repair_at"].clone();
    let (status, _) = d.call(d.http.post(format!("{}/tenants/{}/targets/okta/repair", d.ingest, d.tenant))).await?;
    println!("  POST /tenants/{}/targets/okta/repair -> {status} (drift repair on demand; it also runs on the sweep's schedule)", d.tenant);
    d.until_target(|t| t["health"]["last_repair_at"] != last_repair).await?;
    let t = d.settle(|_| true).await?;
    d.show(&t).await?;
    d.show_scim().await?;

    let v = d.get(&format!("/tenants/{}/audit/verify", d.tenant)).await?;
    println!("\n5. Audit chain verification: {v}");
    if v["ok"] != true {
        return Err("the audit chain did not verify".into());
    }
    let first = d.tenant.clone();
    contracts(&mut d, &stamp.to_string()).await?;
    let second = d.tenant.clone();
    expiry(&mut d, &stamp.to_string()).await?;
    let third = d.tenant.clone();
    operator(&mut d, &second, &stamp.to_string()).await?;
    let fourth = format!("hooli-{stamp}");
    model_change(&mut d, &[&second, &fourth], &stamp.to_string()).await?;
    println!(
        "\nDone. Explore further: GET {}/tenants/{first}, {}/tenants/{second}, {}/tenants/{third}, GET {}/contracts/k-{second}, GET {}/dead-letters",
        d.access, d.access, d.access, d.amend, d.admin
    );
    Ok(())
}

/// Act three: a license runs out; the expiry sweep, fired as of later
/// instants, gives notice, starts grace, then downgrades.
async fn expiry(d: &mut Demo, stamp: &str) -> Result<(), String> {
    d.tenant = format!("initech-{stamp}");
    d.audit_seen = 0;
    let now = chrono::Utc::now();
    let ends = now + chrono::Duration::days(10);
    println!("\n11. Stripe: tenant {} subscribes to team_monthly x 2 seats; the period ends {}", d.tenant, ends.format("%Y-%m-%d"));
    let start = ends.checked_sub_months(chrono::Months::new(1)).ok_or("a month before the period end")?;
    d.subscribe("team_monthly", 2, Some(start.timestamp())).await?;
    d.settle(|t| t["tier"] == "team").await?;
    for (user, groups) in MEMBERS.iter().take(3) {
        let body = json!({"user_id": user, "email": format!("{user}@initech.example"), "groups": groups, "attributes": {}});
        d.call(d.http.post(format!("{}/tenants/{}/members", d.ingest, d.tenant)).json(&body)).await?;
    }
    let t = d.settle(|t| t["seats"]["used"] == 2).await?;
    d.show(&t).await?;
    for (n, offset, what) in [
        (12, 5, "five days later: the 30- and 7-day notices fall due (one notice, the nearest)"),
        (13, 10, "the period ends: 7 days of grace, access kept"),
        (14, 17, "grace runs out: Stripe licenses downgrade to free"),
    ] {
        let at = now + chrono::Duration::days(offset);
        println!("\n{n}. make sweep TIME={} ({what})", at.format("%Y-%m-%dT%H:%M:%SZ"));
        let report = crate::sweep::fire(Some(&at.to_rfc3339())).await?;
        println!("  -> {} due license(s), {} transition(s), {} event(s) for the bus", report["licenses"], report["transitions"], report["events"]);
        let t = match n {
            13 => d.settle(|t| t["status"] == "grace").await?,
            14 => d.settle(|t| t["tier"] == "free").await?,
            _ => d.settle(|_| true).await?,
        };
        d.show(&t).await?;
    }
    let v = d.get(&format!("/tenants/{}/audit/verify", d.tenant)).await?;
    println!("\n15. Audit chain verification: {v}");
    if v["ok"] != true {
        return Err("the audit chain did not verify".into());
    }
    Ok(())
}

/// Act four: the on-call engineer, through the admin function. A Stripe
/// event parked for a price the model does not know, replayed once the
/// model learnt the price and was deployed; an amendment waiting for review, listed and approved;
/// why bob is a billing-admin; the audit trail exported and verified
/// offline with the public key.
async fn operator(d: &mut Demo, contracted: &str, stamp: &str) -> Result<(), String> {
    d.tenant = format!("hooli-{stamp}");
    d.audit_seen = 0;
    let gold = format!("gold_{stamp}");
    println!("\n16. On call. Stripe: tenant {} subscribes to {gold}, a price the licensing model does not map", d.tenant);
    d.stripe(reqwest::Method::POST, "/v1/plans", Some(json!({"id": gold, "amount": 9900, "currency": "usd", "interval": "month", "product": {"name": "Gold"}}))).await?;
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
    println!("  GET /parked?source=stripe -> {id}: {} ({} s ago)", parked["reason"].as_str().unwrap_or_default(), parked["age_secs"]);
    let (status, answer) = d.call(d.http.post(format!("{}/parked/{id}/replay", d.admin))).await?;
    println!("  POST /parked/{id}/replay -> {status} status {} parked {} (the reason still holds: nothing written)", answer["status"], answer["parked"]);
    // The fix: the licensing model learns the price, under a version of its
    // own (a version names one set of rules for ever), and is deployed (the
    // local stack's functions start afresh with the changed model file).
    let model = deployed_model()?;
    let taught = model.replacen("[stripe.price_ids]\n", &format!("[stripe.price_ids]\n{gold} = {{ tier = \"business\" }}\n"), 1);
    if taught == model {
        return Err(format!("the deployed model has no [stripe.price_ids] table to teach {gold} to"));
    }
    let version = format!("{}-gold-{stamp}", deployed_version(&model)?);
    println!("  The model learns the price: [stripe.price_ids] {gold} = {{ tier = \"business\" }}, version {version} (grandfather: nobody's rules move); deployed (dev/stack.sh redeploy)");
    deploy(&versioned(&taught, &version, "grandfather"))?;
    let (status, answer) = d.call(d.http.post(format!("{}/parked/{id}/replay", d.admin))).await?;
    println!("  POST /parked/{id}/replay -> {status} status {} parked {} (the subscription read from Stripe now, the price known)", answer["status"], answer["parked"]);
    let t = d.settle(|t| t["tier"] == "business").await?;
    d.show(&t).await?;

    println!("\n17. Support asks why bob of {contracted} is a billing-admin");
    let e = d.admin_get(&format!("/tenants/{contracted}/members/bob/explain")).await?;
    println!("  GET /tenants/{contracted}/members/bob/explain -> {} ({})", e["access"]["status"], e["rule"].as_str().unwrap_or_default());
    println!("    license: {} x {} seats from {}", e["license"]["tier"], e["license"]["seats_total"], e["license"]["rule"].as_str().unwrap_or_default());
    println!("    seat: rank {} of {} seats (privileged {})", e["seat"]["rank"], e["seat"]["seats_total"], e["seat"]["privileged"]);
    for g in e["roles"].as_array().into_iter().flatten() {
        println!("    role {} granted by {}", g["role"], g["rule"]);
    }
    for r in e["audit"].as_array().into_iter().flatten() {
        println!("    audit #{} {} ({})", r["seq"], r["action"].as_str().unwrap_or_default(), r["rule"].as_str().unwrap_or_default());
    }

    let k = format!("k-{contracted}");
    println!("\n18. Contract {k}: amendment a3 cuts 5 seats to 1; the CFO asks what waits for approval");
    let a3 = json!({"amendment_id": "a3", "base_version": 4, "patch": [{"op": "replace", "path": "/seats", "value": 1}]});
    let (status, a) = d.amend(&format!("/contracts/{k}/amendments"), &a3).await?;
    d.print_amendment(status, &a);
    let reviews = d.admin_get("/reviews").await?;
    for r in reviews["reviews"].as_array().into_iter().flatten() {
        println!(
            "  GET /reviews -> {} {} of {}: {} (waiting {} s; rules: {})",
            r["contract_id"].as_str().unwrap_or_default(),
            r["amendment_id"].as_str().unwrap_or_default(),
            r["tenant_id"].as_str().unwrap_or_default(),
            r["changes"].as_array().into_iter().flatten().filter_map(|c| c["summary"].as_str()).collect::<Vec<_>>().join("; "),
            r["waiting_secs"],
            r["review"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join("; ")
        );
    }
    let (status, a) = d.amend(&format!("/contracts/{k}/amendments/a3/approve"), &json!({"by": "cfo@globex.example", "reason": "one seat until renewal"})).await?;
    println!("  POST /contracts/{k}/amendments/a3/approve -> {status} status {}", a["status"]);
    d.tenant = contracted.to_string();
    d.settle(|t| t["seats"]["total"] == 1).await?;

    println!("\n19. An auditor wants the trail of {contracted}, provably untouched");
    let export = d.http.get(format!("{}/tenants/{contracted}/audit/export", d.admin)).send().await.map_err(|e| e.to_string())?.text().await.map_err(|e| e.to_string())?;
    let key = d.http.get(format!("{}/audit/public-key", d.admin)).send().await.map_err(|e| e.to_string())?.text().await.map_err(|e| e.to_string())?;
    let dir = std::path::Path::new(&env("STACK_DIR")?).join("export");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (file, pem) = (dir.join(format!("{contracted}.jsonl")), dir.join("public-key.pem"));
    std::fs::write(&file, &export).map_err(|e| e.to_string())?;
    std::fs::write(&pem, &key).map_err(|e| e.to_string())?;
    println!("  GET /tenants/{contracted}/audit/export -> {} ({} lines), GET /audit/public-key -> {}", file.display(), export.lines().count(), pem.display());
    let out = std::process::Command::new("dev/verify-export.sh").arg(&file).arg(&pem).output().map_err(|e| format!("dev/verify-export.sh: {e}"))?;
    println!("  dev/verify-export.sh (jq, openssl) -> {}", String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() {
        return Err(format!("the export did not verify: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let dead = d.admin_get("/dead-letters").await?;
    println!("  GET /dead-letters -> {} message(s) parked", dead["count"]);
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

/// Act five: the commercial rules change, and the tenants that exist follow
/// them. The change is previewed first (which members of which tenants gain
/// or lose what, nothing written), then deployed with `[rollout] existing =
/// "migrate"`: the model tick registers the version and rolls it out to
/// every tenant, each member change audited with the rollout.
async fn model_change(d: &mut Demo, tenants: &[&str], stamp: &str) -> Result<(), String> {
    let model = deployed_model()?;
    let version = format!("{}-sso-{stamp}", deployed_version(&model)?);
    let changed = model.replacen("projects = 500\napi_access = true\nsso = false", "projects = 750\napi_access = true\nsso = true", 1);
    if changed == model {
        return Err("the deployed model's business tier is not the shipped one".into());
    }
    let candidate = versioned(&changed, &version, "migrate");
    println!("\n20. The rules change: business gains sso and 750 projects (version {version}); first a preview of {}", tenants.join(", "));
    let url = format!("{}/model/previews?tenants={}", d.admin, tenants.join(","));
    let (status, created) = d.call(d.http.post(url).header("content-type", "application/toml").body(candidate.clone())).await?;
    if status != 202 {
        return Err(format!("POST /model/previews: {status} {created}"));
    }
    let id = created["preview_id"].as_str().unwrap_or_default().to_string();
    let path = format!("/model/previews/{id}");
    let preview = until(|| d.admin_get(&path), |p| p["status"] == "done").await?;
    println!(
        "  POST /model/previews (the candidate, TOML) -> 202 {id}; GET /model/previews/{id} -> {}, {} of {} tenants read",
        preview["status"], preview["progress"]["read"], preview["progress"]["total"]
    );
    println!(
        "    totals: {} tenant(s) affected, {} member(s) gain an entitlement, {} lose one, {} lose a seat",
        preview["totals"]["tenants_affected"], preview["totals"]["entitlements_gained"], preview["totals"]["entitlements_lost"], preview["totals"]["seats_lost"]
    );
    for t in preview["tenants_page"].as_array().into_iter().flatten() {
        for m in t["preview"]["members"].as_array().into_iter().flatten() {
            println!(
                "    {:<22} {:<6} entitlements +{} -{}",
                t["tenant_id"].as_str().unwrap_or_default(),
                m["user_id"].as_str().unwrap_or_default(),
                m["entitlements_added"],
                m["entitlements_removed"]
            );
        }
    }
    d.tenant = tenants[0].to_string();
    d.audit_seen = d.get(&format!("/tenants/{}/audit/verify", d.tenant)).await?["records"].as_u64().unwrap_or(0);
    println!("  Deployed with [rollout] existing = \"migrate\" (dev/stack.sh redeploy); the model tick registers {version} and rolls it out to every tenant");
    deploy(&candidate)?;
    let path = format!("/model/rollouts/deploy-{version}");
    let rollout = until(|| d.admin_get(&path), |r| r["status"] == "done" || r["status"] == "failed").await?;
    println!("  GET /model/rollouts/deploy-{version} -> {}: {} tenant(s) moved, {} member(s) changed", rollout["status"], rollout["counts"]["done"], rollout["counts"]["members_changed"]);
    let overview = d.admin_get("/model").await?;
    for v in overview["versions"].as_array().into_iter().flatten() {
        println!("    version {:<28} {} tenant(s){}", v["version"].as_str().unwrap_or_default(), v["tenants"], if v["latest"] == true { " (latest)" } else { "" });
    }
    let t = d.settle(|t| t["model"]["version"] == version.as_str()).await?;
    d.show(&t).await?;
    Ok(())
}

/// Polls `read` until `done` holds (a minute at most).
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
    async fn show_scim(&self) -> Result<(), String> {
        self.until_target(|t| t["pending"] == 0 && t["status"] == "healthy" && !t["health"]["last_success_at"].is_null()).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.show_scim_now().await
    }

    async fn show_scim_now(&self) -> Result<(), String> {
        let users = self.scim(reqwest::Method::GET, "/Users", None).await?;
        let groups = self.scim(reqwest::Method::GET, "/Groups", None).await?;
        println!("  on the SCIM target (scim2-server {}/{}):", self.scim_url, self.tenant);
        for u in users["Resources"].as_array().into_iter().flatten() {
            let id = u["id"].as_str().unwrap_or_default();
            let in_groups: Vec<&str> = groups["Resources"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|g| g["members"].as_array().into_iter().flatten().any(|m| m["value"] == id))
                .filter_map(|g| g["displayName"].as_str())
                .collect();
            println!(
                "    {:<20} externalId {:<6} active {:<5} groups [{}]",
                u["userName"].as_str().unwrap_or_default(),
                u["externalId"].as_str().unwrap_or("-"),
                u["active"].as_bool().unwrap_or(true),
                in_groups.join(", ")
            );
        }
        Ok(())
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
        println!("  -> {status} status {}", a["status"]);
        for c in a["changes"].as_array().into_iter().flatten() {
            println!("     change: {}", c["summary"].as_str().unwrap_or_default());
        }
        for m in a["impact"]["members"].as_array().into_iter().flatten() {
            let seat = m["seat"].as_str().map(|s| format!(" seat {s};")).unwrap_or_default();
            println!(
                "     impact: {}{seat} roles +{} -{}, entitlements +{} -{}",
                m["user_id"].as_str().unwrap_or_default(),
                m["roles_added"],
                m["roles_removed"],
                m["entitlements_added"],
                m["entitlements_removed"]
            );
        }
        for r in a["review"].as_array().into_iter().flatten() {
            println!("     review: {}", r.as_str().unwrap_or_default());
        }
    }
}

/// Act two: a contract, amended three ways.
async fn contracts(d: &mut Demo, stamp: &str) -> Result<(), String> {
    d.tenant = format!("globex-{stamp}");
    d.audit_seen = 0;
    let k = format!("k-{}", d.tenant);
    let doc = json!({
        "contract_id": k, "tenant_id": d.tenant,
        "term": {"start": "2026-01-01T00:00:00Z", "end": "2088-01-01T00:00:00Z", "auto_renew": true},
        "tier": "business", "seats": 4, "add_ons": [],
        "named_users": [{"id": "alice", "email": "alice@globex.example", "roles": ["admin"]}],
        "role_mappings": {"finance": ["billing-admin"]},
        "support": {"level": "standard", "response_hours": 24}
    });
    println!("\n6. Contract {k} for tenant {}: business, 4 seats, alice a named admin, an unmapped `support` clause", d.tenant);
    let (status, c) = d.amend("/contracts", &doc).await?;
    println!("  POST /contracts -> {status} version {}", c["version"]);
    d.settle(|t| t["tier"] == "business").await?;
    for (user, groups) in MEMBERS {
        let body = json!({"user_id": user, "email": format!("{user}@globex.example"), "groups": groups, "attributes": {}});
        d.call(d.http.post(format!("{}/tenants/{}/members", d.ingest, d.tenant)).json(&body)).await?;
    }
    let t = d.settle(|t| t["seats"]["used"] == 4).await?;
    d.show(&t).await?;

    println!("\n7. Amendment a1 (JSON Patch): add the sso add-on, 5 seats, premium support; applies at once");
    let a1 = json!({"amendment_id": "a1", "base_version": 1, "patch": [
        {"op": "add", "path": "/add_ons/-", "value": "sso"},
        {"op": "replace", "path": "/seats", "value": 5},
        {"op": "replace", "path": "/support/level", "value": "premium"}]});
    let (status, a) = d.amend(&format!("/contracts/{k}/amendments"), &a1).await?;
    d.print_amendment(status, &a);
    let t = d.settle(|t| t["seats"]["used"] == 5).await?;
    d.show(&t).await?;

    println!("\n8. Amendment a2 (CLM record form): seats 5 -> 2; the model holds it for review");
    let a2 = json!({"amendment_id": "a2", "base_version": 2, "record": {"parent_record_id": k, "properties": {"seats": {"type": "number", "value": 2}}}});
    let (status, a) = d.amend(&format!("/contracts/{k}/amendments"), &a2).await?;
    d.print_amendment(status, &a);
    println!("  POST /contracts/{k}/amendments/a2/approve by cfo@globex.example");
    let (status, a) = d.amend(&format!("/contracts/{k}/amendments/a2/approve"), &json!({"by": "cfo@globex.example", "reason": "downsizing agreed"})).await?;
    println!("  -> {status} status {} (version {})", a["status"], a["applied_version"]);
    let t = d.settle(|t| t["seats"]["total"] == 2).await?;
    d.show(&t).await?;

    println!("\n9. Amendment a2 reversed: the contract and every member's access return to what they were");
    let (status, a) = d.amend(&format!("/contracts/{k}/amendments/a2/reverse"), &json!({"by": "legal@globex.example", "reason": "signed in error"})).await?;
    println!("  -> {status} status {} (version {})", a["status"], a["reversed_version"]);
    let t = d.settle(|t| t["seats"]["used"] == 5).await?;
    d.show(&t).await?;
    let (_, c) = d.call(d.http.get(format!("{}/contracts/{k}", d.amend))).await?;
    println!("  contract history:");
    for h in c["history"].as_array().into_iter().flatten() {
        let changes = if h["cause"] == "created" {
            "the first version".to_string()
        } else {
            h["changes"].as_array().map(|c| c.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; ")).unwrap_or_default()
        };
        println!("    v{} {}: {changes}", h["version"], h["cause"].as_str().unwrap_or_default());
    }
    let v = d.get(&format!("/tenants/{}/audit/verify", d.tenant)).await?;
    println!("\n10. Audit chain verification: {v}");
    if v["ok"] != true {
        return Err("the audit chain did not verify".into());
    }
    Ok(())
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
