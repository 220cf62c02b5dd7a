//! The admin's portal in a real browser (Debian's headless Chromium through
//! chromedriver) against the local stack: a link opened by a person, the
//! seats, the directory, the audit trail; what a used or expired link,
//! another tenant's URL, a form without its CSRF token and a script-named
//! group do; axe-core over every page; screenshots at 1280 and 390 pixels
//! into `target/portal-screenshots/`.

use entitle_tests::browser::Browser;
use entitle_tests::directory::Directory;
use entitle_tests::{member_body, unique, Stack};
use serde_json::{json, Value};
use std::time::Duration;

/// Each page as the screenshots show it (the members page with a search).
const PAGES: [(&str, &str); 6] = [("overview", "overview"), ("seats", "seats"), ("members", "members?q=dan%40example.test"), ("directory", "directory"), ("targets", "targets"), ("audit", "audit")];

/// A tenant on `team` with two seats: ann (an owner) and bob hold them,
/// cid waits.
async fn tenant(s: &Stack) -> String {
    let t = unique("portal");
    s.crm_licensed(&t, "team", 2).await;
    for (u, groups) in [("ann", vec!["owners"]), ("bob", vec![]), ("cid", vec![])] {
        let (code, m) = s.create_member(&t, &member_body(u, &groups)).await;
        assert_eq!(code, 201, "{m}");
    }
    s.statuses_are(&t, &[("ann", "active"), ("bob", "active"), ("cid", "pending_seat")]).await;
    t
}

async fn link(s: &Stack, t: &str, body: Value) -> String {
    let (code, answer) = s.portal_link(t, &body).await;
    assert_eq!(code, 201, "{answer}");
    answer["url"].as_str().expect("a url").to_string()
}

fn portal(s: &Stack) -> String {
    s.settings.get("ENTITLE_PORTAL_URL").expect("the stack's portal URL").clone()
}

/// A plain HTTP client (a link scanner, or a forger with the admin's cookie).
fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(60)).build().unwrap()
}

fn records_by_portal<'a>(audit: &'a [Value], admin: &str) -> Vec<&'a Value> {
    audit.iter().filter(|r| r["cause"]["kind"] == "portal" && r["cause"]["id"] == admin).collect()
}

#[tokio::test]
async fn links_are_refused_to_non_admins_and_unknown_tenants_and_say_why() {
    let s = Stack::connect().await;
    let t = tenant(&s).await;
    let (code, answer) = s.portal_link(&t, &json!({"admin": "bob"})).await;
    assert_eq!((code, answer["error"]["code"].as_str()), (403, Some("not_an_admin")), "{answer}");
    let (code, answer) = s.portal_link(&t, &json!({"admin": "nobody"})).await;
    assert_eq!(code, 403, "{answer}");
    let (code, answer) = s.portal_link(&unique("nosuch"), &json!({"admin": "ann"})).await;
    assert_eq!(code, 404, "{answer}");
    let (code, answer) = s.portal_link(&t, &json!({"admin": "ann", "ttl_seconds": 901})).await;
    assert_eq!(code, 422, "{answer}");
    let (code, answer) = s.portal_link(&t, &json!({"admin": "ann", "intent": "billing"})).await;
    assert!(code == 400 || code == 422, "{code} {answer}");
    let (code, answer) = s.portal_link(&t, &json!({"admin": "ann", "ttl_seconds": 60, "intent": "audit"})).await;
    assert_eq!(code, 201, "{answer}");
    let expires = chrono::DateTime::parse_from_rfc3339(answer["expires_at"].as_str().unwrap()).unwrap();
    let left = expires.timestamp() - chrono::Utc::now().timestamp();
    assert!((0..=61).contains(&left), "expires in {left} s");
    // The tenant's links per minute: 20 (one made above). 45 tries: even
    // across a minute's turn, one minute sees more than 20.
    let mut refused = None;
    for _ in 0..45 {
        let (code, answer) = s.portal_link(&t, &json!({"admin": "ann"})).await;
        if code != 201 {
            refused = Some((code, answer));
            break;
        }
    }
    let (code, answer) = refused.expect("a tenant's links are rate-limited");
    assert_eq!((code, answer["error"]["code"].as_str()), (429, Some("rate_limited")), "{answer}");
}

/// A link's GET changes nothing, however often it is fetched; a used link
/// and an expired one show pages that say so and open nothing.
#[tokio::test]
async fn a_link_opens_once_by_its_button_and_never_when_used_or_expired() {
    let s = Stack::connect().await;
    let t = tenant(&s).await;
    let url = link(&s, &t, json!({"admin": "ann", "intent": "seats"})).await;
    let http = client();
    for _ in 0..3 {
        let r = http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("set-cookie").is_none(), "a GET opens no session");
        let csp = r.headers().get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
        assert!(r.text().await.unwrap().contains("Open the portal"));
    }
    let opened = http.post(&url).send().await.unwrap();
    assert_eq!(opened.status(), 303, "the button's POST opens a session");
    let cookie = opened.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(opened.headers()["location"].to_str().unwrap().ends_with(&format!("/tenants/{t}/seats")));
    let again = http.post(&url).send().await.unwrap();
    assert_eq!(again.status(), 410);
    assert!(again.headers().get("set-cookie").is_none());
    assert!(again.text().await.unwrap().contains("This link was used"));
    let used = http.get(&url).send().await.unwrap();
    assert_eq!(used.status(), 410);

    let short = link(&s, &t, json!({"admin": "ann", "ttl_seconds": 1})).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = http.post(&short).send().await.unwrap();
    assert_eq!(r.status(), 410);
    assert!(r.headers().get("set-cookie").is_none());
    assert!(r.text().await.unwrap().contains("This link has expired"));
    let r = http.get(format!("{}/links/{}", portal(&s), "0".repeat(64))).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// The whole walk in Chromium: open a link; the seats page lists holders and
/// the line; a refused give shows its reason, a hand-on is seen in the page
/// and in the access API; a directory connection made, a user pushed with
/// its token and seen on the page, rotated and revoked; every action's
/// audit record on the audit page, the chain verified; another tenant's
/// URL, a form without its CSRF token and a script-named group; axe-core
/// over every page at both widths, with screenshots; the session ends when
/// the admin loses the role.
#[tokio::test]
async fn an_admin_manages_seats_and_the_directory_in_a_browser() {
    let s = Stack::connect().await;
    let t = tenant(&s).await;
    let other = tenant(&s).await;
    let url = link(&s, &t, json!({"admin": "ann", "intent": "seats"})).await;
    let b = Browser::start(1280).await;
    let base = portal(&s);

    b.goto(&url).await;
    b.wait_for_text("Open the admin portal").await;
    b.click("form button[type=submit]").await;
    let text = b.wait_for_text("Holders").await;
    assert!(b.url().await.ends_with(&format!("/tenants/{t}/seats")), "{}", b.url().await);
    let (holders, line) = text.split_once("The line").expect("both lists");
    assert!(holders.contains("ann") && holders.contains("bob") && !holders.contains("cid"), "{text}");
    assert!(line.contains("cid"), "{text}");

    // Give cid a seat: none is free, the refusal is shown, nothing changes.
    b.click("button[aria-label='Give a seat to cid']").await;
    let text = b.wait_for_text("Not done").await;
    assert!(text.to_lowercase().contains("seat"), "{text}");
    assert_eq!(s.member(&t, "cid").await.1["status"], "pending_seat");
    // Hand bob's seat to cid.
    b.fill("#hand-from", "bob").await;
    b.fill("#hand-to", "cid").await;
    b.click("form.stack button.primary").await;
    b.wait_for_text("The seat was handed on").await;
    s.statuses_are(&t, &[("ann", "active"), ("bob", "pending_seat"), ("cid", "active")]).await;
    let (_, cid) = s.member(&t, "cid").await;
    assert_eq!(cid["seat"]["pin"]["hold"], true, "{cid}");
    b.goto(&format!("{base}/tenants/{t}/seats")).await;
    let text = b.wait_for_text("Holders").await;
    let (holders, line) = text.split_once("The line").expect("both lists");
    assert!(holders.contains("cid") && line.contains("bob"), "{text}");
    assert!(holders.contains("Given by ann"), "the pin is marked: {text}");

    // A directory connection: its token shown once, a push with it seen on the page.
    b.goto(&format!("{base}/tenants/{t}/directory")).await;
    b.fill("#name", "Okta").await;
    b.click("form.stack button.primary").await;
    b.wait_for_text("Copy it now").await;
    let token = b.value("#token").await;
    assert!(token.starts_with("entd_"), "{token}");
    let (_, dirs) = s.directories(&t).await;
    let list = dirs["directories"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{dirs}");
    let id = list[0]["directory_id"].as_str().unwrap().to_string();
    let dir = Directory { base: list[0]["scim_base_url"].as_str().unwrap().to_string(), token: token.clone(), id: id.clone(), http: reqwest::Client::new() };
    let hostile = "<script>alert(1)</script>";
    let dan = dir.create_user(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "dan@example.test", "externalId": "dan", "active": true, "emails": [{"value": "dan@example.test", "primary": true}]})).await;
    let dan_id = dan["id"].as_str().expect("the pushed user's id").to_string();
    let group = dir.request(reqwest::Method::POST, "/Groups", Some(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": hostile, "members": [{"value": dan_id}]}))).await;
    assert_eq!(group.status, 201, "{:?}", group.body);
    // The connection's stats: what its pushes left it holding.
    b.goto(&format!("{base}/tenants/{t}/directory")).await;
    b.wait_for_text("1 users, 1 groups").await;
    b.goto(&format!("{base}/tenants/{t}/members?q=dan%40example.test")).await;
    let text = b.wait_for_text("Groups").await;
    assert!(text.contains(hostile), "the group's name is shown as text: {text}");
    assert!(!b.alert_open().await, "no script of the group ran");
    let source = b.source().await;
    assert!(source.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "escaped in the HTML");
    assert!(!source.contains(hostile), "never raw in the HTML");

    // Rotate: a new token shown, the old one valid for its grace; then revoke.
    b.goto(&format!("{base}/tenants/{t}/directory")).await;
    b.fill(&format!("#grace-{id}"), "1").await;
    b.click("button[aria-label='Rotate the token of Okta']").await;
    b.wait_for_text("The token was rotated").await;
    let rotated = b.value("#token").await;
    assert_ne!(rotated, token);
    assert_eq!(dir.get("/Users?count=1").await.status, 200, "the old token in its grace");
    assert_eq!(dir.with_token(&rotated).get("/Users?count=1").await.status, 200);
    b.goto(&format!("{base}/tenants/{t}/directory")).await;
    assert!(!b.source().await.contains(&rotated), "a token is shown once");
    b.click("button[aria-label='Revoke Okta']").await;
    b.wait_for_text("The connection was revoked").await;
    assert_eq!(dir.with_token(&rotated).get("/Users?count=1").await.status, 401, "a revoked connection's token is refused");

    // Every action's audit record, with the portal's cause, on the audit page; the chain verifies.
    let audit = s.audit(&t).await;
    let actions: Vec<&str> = records_by_portal(&audit, "ann").iter().map(|r| r["action"].as_str().unwrap()).collect();
    for want in ["member_seat_reassigned", "directory_connected", "directory_token_rotated", "directory_disconnected"] {
        assert!(actions.contains(&want), "{want} audited with cause portal:ann: {actions:?}");
    }
    b.goto(&format!("{base}/tenants/{t}/audit")).await;
    let text = b.wait_for_text("newest first").await;
    for want in ["member_seat_reassigned", "directory_connected", "directory_token_rotated", "directory_disconnected", "portal:ann"] {
        assert!(text.contains(want), "{want} on the audit page: {text}");
    }
    b.fill("#action", "directory_connected").await;
    b.click("form[role=search] button").await;
    b.wait_for_url("action=directory_connected").await;
    let text = b.wait_for_text("newest first").await;
    assert!(text.contains("directory_connected") && !text.contains("directory_token_rotated"), "filtered: {text}");
    b.click("#main form.inline button").await;
    let text = b.wait_for_text("The chain verifies").await;
    assert!(!text.contains("does not verify"), "{text}");

    // Another tenant's pages: 404, its data never shown.
    b.goto(&format!("{base}/tenants/{other}/seats")).await;
    let text = b.wait_for_text("Not found").await;
    assert!(!text.contains("cid") && !text.contains("Holders"), "{text}");
    // A form without its CSRF token (or with another): 403, nothing changed.
    let cookie = b.cookies().await.into_iter().find(|c| c["name"] == "entitle_portal").expect("the session cookie");
    assert_eq!(cookie["httpOnly"], true);
    assert_eq!(cookie["sameSite"], "Strict");
    let header = format!("entitle_portal={}", cookie["value"].as_str().unwrap());
    for form in ["action=release&user=ann", "action=release&user=ann&csrf=0000"] {
        let r = client().post(format!("{base}/tenants/{t}/seats")).header("cookie", &header).header("content-type", "application/x-www-form-urlencoded").body(form).send().await.unwrap();
        assert_eq!(r.status(), 403, "{form}");
    }
    let r = client()
        .post(format!("{base}/tenants/{other}/seats"))
        .header("cookie", &header)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("action=release&user=ann")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "another tenant's form");
    assert_eq!(s.member(&t, "ann").await.1["status"], "active");
    assert_eq!(s.member(&other, "ann").await.1["status"], "active");
    // The audit page's signed export: the chain's records, a checkpoint signed over the last.
    b.goto(&format!("{base}/tenants/{t}/audit")).await;
    b.wait_for_text("Download the signed export").await;
    let r = client().get(format!("{base}/tenants/{t}/audit/export?from_seq=1")).header("cookie", &header).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let disposition = r.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(disposition.starts_with(&format!("attachment; filename=\"audit-{t}-1-")), "{disposition}");
    let export = r.text().await.unwrap();
    let checkpoint = entitle::core::audit::verify_export(&export).expect("the export verifies");
    assert!(checkpoint.seq >= 8 && checkpoint.tenant_id == t, "{checkpoint:?}");
    let r = client().get(format!("{base}/tenants/{other}/audit/export")).header("cookie", &header).send().await.unwrap();
    assert_eq!(r.status(), 404, "another tenant's export");

    // Every page at both widths: no serious or critical axe-core violation;
    // a screenshot each, with something on every page (a connection, a
    // SCIM target and its repair asked for).
    // A connection that refuses pushes when full: its refusal counted on it.
    let entra = s.connect_directory(&t, "Microsoft Entra ID", Some("refuse")).await;
    let refused = entra.request(reqwest::Method::POST, "/Users", Some(&json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "eve@example.test", "active": true}))).await;
    assert_eq!(refused.status, 403, "{:?}", refused.body);
    b.goto(&format!("{base}/tenants/{t}/directory")).await;
    let text = b.wait_for_text("Microsoft Entra ID").await;
    let row = text.lines().find(|l| l.contains("Microsoft Entra ID")).unwrap_or_default().to_string();
    assert!(row.contains("0 users, 0 groups") && row.contains("1"), "one push refused for the seat cap: {row}");
    let target = json!({"base_url": format!("{}/{t}", s.scim_url), "token": s.scim_token});
    let (code, answer) = s.put_target(&t, "okta", &target).await;
    assert_eq!(code, 201, "{answer}");
    b.goto(&format!("{base}/tenants/{t}/targets")).await;
    b.click("button[aria-label='Repair drift now on okta']").await;
    b.wait_for_text("A drift repair was queued").await;
    for width in [1280, 390] {
        b.set_width(width).await;
        for (page, path) in PAGES {
            b.goto(&format!("{base}/tenants/{t}/{path}")).await;
            b.find("main h1").await;
            let violations = b.axe_serious().await;
            assert!(violations.is_empty(), "{page} at {width}px: {}", serde_json::to_string_pretty(&violations).unwrap());
            b.screenshot(&format!("{page}-{width}")).await;
        }
    }
    b.set_width(1280).await;
    b.goto(&url).await;
    b.wait_for_text("This link was used").await;
    assert!(b.axe_serious().await.is_empty());
    b.screenshot("link-used-1280").await;

    // Signing out takes the session's CSRF token too; then the session is gone.
    let r = client().post(format!("{base}/signout")).header("cookie", &header).header("content-type", "application/x-www-form-urlencoded").body("csrf=0000").send().await.unwrap();
    assert_eq!(r.status(), 403, "a sign-out without the session's token");
    b.goto(&format!("{base}/tenants/{t}/overview")).await;
    b.click("form.signout button").await;
    b.wait_for_text("Your session has ended").await;
    b.goto(&format!("{base}/tenants/{t}/overview")).await;
    b.wait_for_text("You are not signed in").await;
    let url = link(&s, &t, json!({"admin": "ann"})).await;
    b.goto(&url).await;
    b.click("form button[type=submit]").await;
    b.wait_for_url("/overview").await;
    // The admin loses the role: the session ends at the next request.
    let (code, body) = s.update_member(&t, "ann", &json!({"groups": []})).await;
    assert_eq!(code, 200, "{body}");
    b.goto(&format!("{base}/tenants/{t}/overview")).await;
    b.wait_for_text("no longer an admin").await;
    b.stop().await;
}

/// The seats page pages through a line longer than a page (100), in the
/// line's order, each member once; a cursor that is no place in the seat
/// order is refused.
#[tokio::test]
async fn the_seats_page_pages_through_a_long_line() {
    let s = Stack::connect().await;
    let t = tenant(&s).await;
    let users: Vec<String> = (0..110).map(|i| format!("w{i:03}")).collect();
    for u in &users {
        let (code, body) = s.create_member(&t, &member_body(u, &[])).await;
        assert_eq!(code, 201, "{body}");
    }
    // The page reads the stored seat order: wait until provision has caught up with the creations.
    s.settle(&t).await;
    let url = link(&s, &t, json!({"admin": "ann"})).await;
    let http = client();
    let opened = http.post(&url).send().await.unwrap();
    assert_eq!(opened.status(), 303);
    let cookie = opened.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let base = portal(&s);
    let given = |html: &str| -> Vec<String> { html.split("aria-label=\"Give a seat to ").skip(1).map(|r| r.split('"').next().unwrap().to_string()).collect() };
    let first = http.get(format!("{base}/tenants/{t}/seats")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    let page_one = given(&first);
    assert_eq!(page_one.len(), 100, "a page of the line");
    let next = first.split("href=\"").find(|h| h.contains("line_after=")).expect("a link to the next page").split('"').next().unwrap().replace("&amp;", "&");
    let query = next.split_once('?').unwrap().1;
    let second = http.get(format!("{base}/tenants/{t}/seats?{query}")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    let page_two = given(&second);
    // cid (waiting since before them) and the 110.
    assert_eq!(page_one.len() + page_two.len(), 111, "{page_two:?}");
    let all: Vec<String> = page_one.iter().chain(&page_two).cloned().collect();
    let mut want = vec!["cid".to_string()];
    want.extend(users);
    assert_eq!(all, want, "the line in its order, each once");
    assert!(!second.contains("Next in line"));
    let r = http.get(format!("{base}/tenants/{t}/seats?line_after=nonsense")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(r.status(), 400);
}
