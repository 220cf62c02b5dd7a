//! The tenant's directory end to end: what Okta and Microsoft Entra ID
//! send (their published request shapes), the seat rules at the moment of
//! a push in both modes, the connections' tokens (issue, rotation,
//! revocation, isolation between tenants), bad input, concurrent pushes,
//! and the public conformance checkers (`scim2 test`, `scim-sanity probe`).

use entitle_tests::directory::{encode, Directory};
use entitle_tests::{far_future, member_body, unique, Stack};
use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;

const ENTITLE: &str = "urn:entitle:params:scim:schemas:extension:access:2.0:User";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

fn crm(t: &str, version: i64, seats: u64) -> Value {
    json!({"event_id": format!("crm-{t}-{version}"), "tenant_id": t, "license_id": "crm-lic-1", "tier": "team",
        "seats": seats, "add_ons": [], "starts_at": "2026-01-01T00:00:00Z", "expires_at": far_future(),
        "status": "active", "source_version": version})
}

async fn licensed(s: &Stack, t: &str, seats: u64) {
    assert_eq!(s.crm(&crm(t, 1, seats)).await.1["status"], "applied");
    s.tenant_where(t, "the license provisioned", |v| v["seats"]["total"] == seats).await;
}

/// Okta's create request (its SCIM 2.0 guide,
/// https://developer.okta.com/docs/api/openapi/okta-scim/guides/scim-20): a
/// plain-text password and an empty `groups` it sends along.
fn okta_user(login: &str, okta_id: &str) -> Value {
    json!({
        "schemas": [USER],
        "userName": login,
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": true, "value": login, "type": "work"}],
        "displayName": "Test User",
        "locale": "en-US",
        "externalId": okta_id,
        "groups": [],
        "password": "1mz050nq",
        "active": true
    })
}

fn patch_op(ops: Value) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops})
}

fn records<'a>(audit: &'a [Value], action: &str) -> Vec<&'a Value> {
    audit.iter().filter(|r| r["action"] == action).collect()
}

/// Okta's sequence for one user and one pushed group: a lookup by userName
/// before the create, the create, a profile update by PUT (its GET first),
/// a deactivation by PATCH `{"active": false}` (Okta never DELETEs a user),
/// a reactivation, a group pushed empty, its members added and removed in
/// one PATCH, a rename (sent with the group's read-only id), the group
/// deleted. Each step as the app sees it (the access API), and audited with
/// cause `directory`, the connection and the request id.
#[tokio::test]
async fn okta_provisions_updates_deactivates_and_groups_a_user() {
    let s = Stack::connect().await;
    let t = unique("okta");
    licensed(&s, &t, 3).await;
    let d = s.connect_directory(&t, "Okta", None).await;
    // Lookup first: nobody.
    let lookup = d.get(&format!("/Users?filter={}&startIndex=1&count=100", encode("userName eq \"test.user@okta.local\""))).await;
    assert_eq!((lookup.status, lookup.body["totalResults"].as_u64()), (200, Some(0)), "{}", lookup.body);
    assert_eq!(lookup.content_type.as_deref(), Some("application/scim+json"));
    // The create.
    let created = d.request(Method::POST, "/Users", Some(&okta_user("test.user@okta.local", "00ujl29u0le5T6Aj10h7"))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let u = &created.body;
    let id = u["id"].as_str().unwrap().to_string();
    assert_eq!(id, "00ujl29u0le5T6Aj10h7", "the externalId is the member's id");
    assert_eq!(created.location.as_deref(), u["meta"]["location"].as_str());
    assert_eq!(created.etag.as_deref(), u["meta"]["version"].as_str());
    assert!(u.get("password").is_none(), "a password is never kept nor shown");
    assert_eq!((u[ENTITLE]["seat"].as_str(), u[ENTITLE]["status"].as_str()), (Some("held"), Some("active")));
    let (code, m) = s.member(&t, &id).await;
    assert_eq!((code, m["status"].as_str()), (200, Some("active")), "{m}");
    // The profile update: GET, then PUT of the whole User.
    let mut full = d.get(&format!("/Users/{id}")).await.body;
    full["name"] = json!({"givenName": "Another", "middleName": "Excited", "familyName": "User"});
    let put = d.request(Method::PUT, &format!("/Users/{id}"), Some(&full)).await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["name"]["givenName"], "Another");
    assert_eq!(put.body[ENTITLE]["seat"], "held", "a profile update keeps the seat");
    // Deactivated: suspended, its seat freed.
    let off = d.patch(&format!("/Users/{id}"), json!([{"op": "replace", "value": {"active": false}}])).await;
    assert_eq!((off.status, off.body["active"].as_bool()), (200, Some(false)), "{}", off.body);
    assert_eq!(off.body[ENTITLE]["seat"], "none");
    s.statuses_are(&t, &[(&id, "suspended")]).await;
    s.tenant_where(&t, "the seat freed", |v| v["seats"]["used"] == 0).await;
    // Still listed (Okta expects inactive users to be found).
    assert_eq!(d.users_where("userName eq \"TEST.user@okta.local\"").await.len(), 1);
    // Reactivated: a seat again.
    let on = d.patch(&format!("/Users/{id}"), json!([{"op": "replace", "value": {"active": true}}])).await;
    assert_eq!((on.status, on.body[ENTITLE]["seat"].as_str()), (200, Some("held")), "{}", on.body);
    s.statuses_are(&t, &[(&id, "active")]).await;
    // A second user, and a group pushed empty.
    let other = d.create_user(&okta_user("second@okta.local", "00u2")).await["id"].as_str().unwrap().to_string();
    let g = d.request(Method::POST, "/Groups", Some(&json!({"schemas": [GROUP], "displayName": "admins", "members": []}))).await;
    assert_eq!(g.status, 201, "{}", g.body);
    let gid = g.body["id"].as_str().unwrap().to_string();
    // Members in one PATCH: add both, then remove the second by filter (Okta's shape).
    let add = d.patch(&format!("/Groups/{gid}"), json!([{"op": "add", "path": "members", "value": [{"value": id, "display": "test.user@okta.local"}, {"value": other, "display": "second@okta.local"}]}])).await;
    assert_eq!(add.status, 200, "{}", add.body);
    let mixed = d.patch(&format!("/Groups/{gid}"), json!([
        {"op": "remove", "path": format!("members[value eq \"{other}\"]")},
        {"op": "add", "path": "members", "value": [{"value": id, "display": "test.user@okta.local"}]}
    ])).await;
    assert_eq!(mixed.status, 200, "{}", mixed.body);
    assert_eq!(mixed.body["members"], json!([{"value": id, "display": "test.user@okta.local"}]));
    // The model's role rules apply to the group's name: admins are admins.
    let admin = s.eventually("the admin role", || async {
        let (c, m) = s.member(&t, &id).await;
        (c == 200 && m["roles"].as_array().is_some_and(|r| r.contains(&json!("admin"))), m)
    }).await;
    assert_eq!(admin["status"], "active");
    let user_view = d.get(&format!("/Users/{id}")).await.body;
    assert_eq!(user_view["groups"][0]["display"], "admins");
    assert!(user_view[ENTITLE]["roles"].as_array().unwrap().contains(&json!("admin")));
    // Okta renames with its read-only id in the value.
    let renamed = d.patch(&format!("/Groups/{gid}"), json!([{"op": "replace", "value": {"id": gid, "displayName": "viewers-team"}}])).await;
    assert_eq!((renamed.status, renamed.body["displayName"].as_str()), (200, Some("viewers-team")), "{}", renamed.body);
    s.eventually("the admin role gone with the name", || async {
        let (c, m) = s.member(&t, &id).await;
        (c == 200 && !m["roles"].as_array().is_some_and(|r| r.contains(&json!("admin"))), m)
    }).await;
    // The group deleted: gone for SCIM, its members out of it.
    let gone = d.request(Method::DELETE, &format!("/Groups/{gid}"), None).await;
    assert_eq!(gone.status, 204, "{}", gone.body);
    assert_eq!(d.get(&format!("/Groups/{gid}")).await.status, 404);
    assert!(d.get(&format!("/Users/{id}")).await.body.get("groups").is_none());
    // The trail: every change by cause `directory`, this connection, a request id.
    let audit = s.audit(&t).await;
    let by_directory: Vec<&Value> = audit.iter().filter(|r| r["cause"]["kind"] == "directory").collect();
    assert!(by_directory.iter().all(|r| r["cause"]["connection"] == d.id.as_str() && r["cause"]["id"].as_str().is_some_and(|i| !i.is_empty())), "{by_directory:?}");
    for action in ["member_created", "member_updated", "member_suspended", "member_reactivated", "directory_group_created", "directory_group_updated", "directory_group_deleted"] {
        assert!(by_directory.iter().any(|r| r["action"] == action), "no {action} by the directory: {by_directory:?}");
    }
    assert_eq!(records(&audit, "member_created").len(), 2, "each member created once");
    let v = s.verify(&t).await;
    assert_eq!(v["ok"], true, "{v}");
}
