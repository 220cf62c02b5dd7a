//! SCIM targets as they really are: the delivery lifecycle against SCIMMY
//! (the stack's second SCIM engine, `dev/scimmy/server.mjs`), one account
//! per profile, each behaving as its vendor documents (AWS IAM Identity
//! Center lists groups without members, Slack and Salesforce never delete,
//! GitHub's DELETE cannot be undone, Google takes one member change a
//! request and lists nothing without a filter, ...). The end state is read
//! from the server's own store, past the profile's restrictions: what the
//! target really holds.

use entitle_tests::{crm_license, member_body, unique, Stack};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const PROFILES: [&str; 7] = ["generic", "aws-identity-center", "slack", "github-emu", "google", "atlassian", "salesforce"];

/// A user as the target stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    id: String,
    active: bool,
}

/// What the account really holds: users by externalId, and each group's members by externalId.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Store {
    users: BTreeMap<String, Held>,
    groups: BTreeMap<String, BTreeSet<String>>,
    deletes: u64,
}

struct Account {
    base: String,
    store_url: String,
    token: String,
}

impl Account {
    fn new(s: &Stack, profile: &str, name: &str) -> Account {
        let url = s.settings["ENTITLE_SCIMMY_URL"].clone();
        Account { base: format!("{url}/{profile}/{name}"), store_url: format!("{url}/__store/{profile}/{name}"), token: s.settings["ENTITLE_SCIMMY_TOKEN"].clone() }
    }

    async fn store(&self, s: &Stack) -> Store {
        let raw: Value = s.http.get(&self.store_url).send().await.unwrap().json().await.unwrap();
        let mut by_id = BTreeMap::new();
        let mut out = Store { deletes: raw["deletes"].as_u64().unwrap_or(0), ..Default::default() };
        for u in raw["users"].as_array().unwrap() {
            if u["hidden"] == true {
                continue;
            }
            let ext = u["externalId"].as_str().unwrap_or("?").to_string();
            by_id.insert(u["id"].as_str().unwrap().to_string(), ext.clone());
            out.users.insert(ext, Held { id: u["id"].as_str().unwrap().to_string(), active: u["active"] != false });
        }
        for g in raw["groups"].as_array().unwrap() {
            let members = g["members"].as_array().into_iter().flatten().map(|m| by_id.get(m["value"].as_str().unwrap()).cloned().unwrap_or_else(|| "?".into())).collect();
            out.groups.insert(g["displayName"].as_str().unwrap().to_string(), members);
        }
        out
    }

    /// Waits (up to 90 s) until the store satisfies `pred`.
    async fn until(&self, s: &Stack, what: &str, pred: impl Fn(&Store) -> bool) -> Store {
        let start = Instant::now();
        loop {
            let store = self.store(s).await;
            if pred(&store) {
                return store;
            }
            assert!(start.elapsed() < entitle_tests::WAIT, "{what}: timed out; the target holds {store:#?}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A member added to or removed from a group by the target's own admin,
    /// in the form the target takes (Salesforce's `{"members": [...]}`).
    async fn change_member(&self, s: &Stack, group_id: &str, op: &str, user: &str) {
        let ops = if self.base.contains("/salesforce/") {
            json!([{"op": op, "path": "members", "value": {"members": [{"value": user}]}}])
        } else if op == "add" {
            json!([{"op": "add", "path": "members", "value": [{"value": user}]}])
        } else {
            json!([{"op": "remove", "path": format!("members[value eq \"{user}\"]")}])
        };
        self.patch_group(s, group_id, ops).await;
    }

    /// A SCIM request straight to the account (an admin of the target acting behind Entitle's back).
    async fn patch_group(&self, s: &Stack, group_id: &str, ops: Value) {
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": ops});
        let resp = s.http.patch(format!("{}/Groups/{group_id}", self.base)).bearer_auth(&self.token).header("User-Agent", "the target's admin").json(&body).send().await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }

    /// A user made on the target by its own admin (no externalId): its id.
    async fn create_user(&self, s: &Stack, user_name: &str) -> String {
        let name = if self.base.contains("/slack/") { user_name.split('@').next().unwrap() } else { user_name };
        let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name, "active": true});
        let resp = s.http.post(format!("{}/Users", self.base)).bearer_auth(&self.token).header("User-Agent", "the target's admin").json(&body).send().await.unwrap();
        let created: Value = resp.json().await.unwrap();
        created["id"].as_str().unwrap_or_else(|| panic!("{created}")).to_string()
    }

    async fn group_id(&self, s: &Stack, name: &str) -> String {
        let raw: Value = s.http.get(&self.store_url).send().await.unwrap().json().await.unwrap();
        raw["groups"].as_array().unwrap().iter().find(|g| g["displayName"] == name).unwrap()["id"].as_str().unwrap().to_string()
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn members(store: &Store, group: &str) -> BTreeSet<String> {
    store.groups.get(group).cloned().unwrap_or_default()
}

/// Create, a role change with the seat kept, a seat cut, a removal and a
/// drift repair, on a target of `profile`: each step ends with the target
/// holding exactly what access says.
async fn lifecycle(profile: &'static str) {
    let s = Stack::connect().await;
    let t = unique(&format!("p-{}", &profile[..3]));
    assert_eq!(s.crm(&crm_license(&t, 1, "business", 3)).await.1["status"], "applied");
    s.tenant_where(&t, "business, three seats", |v| v["seats"]["total"] == 3).await;
    for (u, groups) in [("a", vec!["finance"]), ("b", vec![]), ("c", vec![])] {
        assert_eq!(s.create_member(&t, &member_body(u, &groups)).await.1["status"], "active");
    }
    let account = Account::new(&s, profile, &t);
    let body = json!({"base_url": account.base, "token": account.token, "mapping": {"group_prefix": "entitle-"}, "profile": profile});
    let (code, view) = s.put_target(&t, "idp", &body).await;
    assert_eq!((code, view["profile"].as_str()), (201, Some(profile)), "{view}");
    assert!(view["guarantees"]["group_memberships"].is_string(), "{view}");

    // Created: a is a billing admin (finance, business tier); all three in member.
    let first = account
        .until(&s, "a, b, c provisioned", |st| {
            ["a", "b", "c"].iter().all(|u| st.users.get(*u).is_some_and(|h| h.active)) && members(st, "entitle-member") == set(&["a", "b", "c"]) && members(st, "entitle-billing-admin") == set(&["a"])
        })
        .await;

    // A role change, the seat kept: business -> team takes billing-admin away.
    assert_eq!(s.crm(&crm_license(&t, 2, "team", 3)).await.1["status"], "applied");
    account.until(&s, "a out of billing-admin, still a member", |st| members(st, "entitle-billing-admin").is_empty() && members(st, "entitle-member") == set(&["a", "b", "c"])).await;

    // A seat cut: c, the most recently seated, loses its seat: deactivated, out of member.
    assert_eq!(s.crm(&crm_license(&t, 3, "team", 2)).await.1["status"], "applied");
    account.until(&s, "c deactivated, out of member", |st| st.users.get("c").is_some_and(|h| !h.active) && members(st, "entitle-member") == set(&["a", "b"])).await;

    // A removal: b's user is deleted where the target deletes, deactivated
    // where it does not (or cannot undo a delete); out of every group. Its
    // seat goes to the line: c is active and a member again.
    assert_eq!(s.delete_member(&t, "b").await.0, 200);
    let deletes = matches!(profile, "generic" | "aws-identity-center" | "google");
    let removed = account
        .until(&s, "b removed, c back", |st| {
            members(st, "entitle-member") == set(&["a", "c"])
                && st.users.get("c").is_some_and(|h| h.active)
                && if deletes { !st.users.contains_key("b") } else { st.users.get("b").is_some_and(|h| !h.active) }
        })
        .await;
    if !deletes {
        assert_eq!(removed.deletes, 0, "{profile}: a removal is a deactivation, never a DELETE");
    }

    // Drift behind Entitle's back: a taken out of member; where the target
    // lists members, a user Entitle does not know put into it. The repair
    // undoes what it can see.
    let group = account.group_id(&s, "entitle-member").await;
    account.change_member(&s, &group, "remove", &first.users["a"].id).await;
    let lists_members = !matches!(profile, "aws-identity-center" | "google");
    if lists_members {
        let stranger = account.create_user(&s, "stranger@example.test").await;
        account.change_member(&s, &group, "add", &stranger).await;
    }
    assert_eq!(s.repair(&t, "idp").await.0, 202);
    let end = account.until(&s, "drift repaired", |st| members(st, "entitle-member") == set(&["a", "c"])).await;
    assert!(end.users["a"].active && end.users["c"].active, "{profile}: {end:#?}");
    assert!(members(&end, "entitle-billing-admin").is_empty() && members(&end, "entitle-admin").is_empty(), "{profile}: {end:#?}");

    // Nothing waits or is parked, and the target reads healthy.
    let v = s
        .eventually(&format!("{profile}: nothing pending"), || async {
            let v = s.target(&t, "idp").await;
            (v["pending"] == 0 && v["status"] == "healthy" && v["parked"] == json!([]), v)
        })
        .await;
    assert!(v["health"]["contradiction"].is_null(), "{v}");
    assert_eq!(s.verify(&t).await["ok"], true);
}

#[tokio::test]
async fn lifecycle_on_a_generic_rfc7644_target() {
    lifecycle(PROFILES[0]).await;
}

/// AWS lists groups without members: a downgraded billing admin still
/// leaves its group, a seat cut still leaves the member group (asked per
/// member, never taken as "not listed, not a member").
#[tokio::test]
async fn lifecycle_on_aws_identity_center() {
    lifecycle(PROFILES[1]).await;
}

#[tokio::test]
async fn lifecycle_on_slack() {
    lifecycle(PROFILES[2]).await;
}

#[tokio::test]
async fn lifecycle_on_github_emu() {
    lifecycle(PROFILES[3]).await;
}

#[tokio::test]
async fn lifecycle_on_google() {
    lifecycle(PROFILES[4]).await;
}

#[tokio::test]
async fn lifecycle_on_atlassian() {
    lifecycle(PROFILES[5]).await;
}

#[tokio::test]
async fn lifecycle_on_salesforce() {
    lifecycle(PROFILES[6]).await;
}

/// A target configured as generic that behaves as AWS does (groups listed
/// without members): the contradiction is reported (target view, audit), its
/// lists are not trusted, and a seat cut still leaves the member group.
#[tokio::test]
async fn a_target_that_contradicts_its_profile_is_reported_not_trusted() {
    let s = Stack::connect().await;
    let t = unique("contra");
    assert_eq!(s.crm(&crm_license(&t, 1, "team", 2)).await.1["status"], "applied");
    s.tenant_where(&t, "two seats", |v| v["seats"]["total"] == 2).await;
    for u in ["a", "b"] {
        s.create_member(&t, &member_body(u, &[])).await;
    }
    let account = Account::new(&s, "aws-identity-center", &t);
    let body = json!({"base_url": account.base, "token": account.token, "mapping": {"group_prefix": "entitle-"}});
    assert_eq!(s.put_target(&t, "idp", &body).await.0, 201);
    account.until(&s, "a and b in member", |st| members(st, "entitle-member") == set(&["a", "b"])).await;
    assert_eq!(s.crm(&crm_license(&t, 2, "team", 1)).await.1["status"], "applied");
    account.until(&s, "b out of member", |st| members(st, "entitle-member") == set(&["a"]) && st.users.get("b").is_some_and(|h| !h.active)).await;
    // The next drift repair sees the member group listed empty although a,
    // delivered, belongs in it.
    assert_eq!(s.repair(&t, "idp").await.0, 202);
    let v = s
        .eventually("the contradiction reported", || async {
            let v = s.target(&t, "idp").await;
            (v["health"]["contradiction"].is_string(), v)
        })
        .await;
    assert!(v["health"]["contradiction"].as_str().unwrap().contains("entitle-member"), "{v}");
    let audit = s.audit(&t).await;
    assert_eq!(audit.iter().filter(|r| r["action"] == "target_contradicts_profile").count(), 1, "reported once");
    // And counted: the delivery metric line of that run says so.
    let lines = s.metric_lines("tenant", t.as_str(), 1).await;
    assert!(lines.iter().any(|l| l["TargetContradictions"] == 1.0), "{lines:?}");
}

/// GitHub's DELETE cannot be undone: it is sent only when the target's
/// configuration asks for it.
#[tokio::test]
async fn an_irreversible_delete_is_sent_only_when_configured() {
    let s = Stack::connect().await;
    let t = unique("ghdel");
    assert_eq!(s.crm(&crm_license(&t, 1, "team", 2)).await.1["status"], "applied");
    s.tenant_where(&t, "two seats", |v| v["seats"]["total"] == 2).await;
    s.create_member(&t, &member_body("a", &[])).await;
    let account = Account::new(&s, "github-emu", &t);
    let body = json!({"base_url": account.base, "token": account.token, "mapping": {"group_prefix": "entitle-"}, "profile": "github-emu", "delete_users": true});
    let (code, view) = s.put_target(&t, "idp", &body).await;
    assert_eq!(code, 201, "{view}");
    assert!(view["guarantees"]["removal"].as_str().unwrap().starts_with("DELETE"), "{view}");
    account.until(&s, "a provisioned", |st| st.users.contains_key("a")).await;
    assert_eq!(s.delete_member(&t, "a").await.0, 200);
    let end = account.until(&s, "a deleted", |st| !st.users.contains_key("a")).await;
    assert_eq!(end.deletes, 1);
}

/// A target's documented rate limit paces the client: a write beyond it
/// ends the run as paced (not a failure of the target), and the next run of
/// the same process starts from what was spent.
#[tokio::test]
async fn writes_beyond_a_targets_rate_limit_are_paced_to_a_later_run() {
    use entitle::adapters::scim_client::{http_client, Pace, ScimClient};
    use entitle::core::egress::EgressPolicy;
    use entitle::core::scim::{DesiredUser, ProfileName, TargetError};
    use std::sync::{Arc, Mutex};
    let s = Stack::connect().await;
    let account = Account::new(&s, "github-emu", &unique("pace"));
    let mut profile = ProfileName::GithubEmu.profile();
    profile.creations_per_hour = Some(2);
    let pace = Arc::new(Mutex::new(Pace::of(&profile)));
    let client = || ScimClient::new(http_client(EgressPolicy::Local), &account.base, account.token.clone(), EgressPolicy::Local).with_profile(profile.clone(), pace.clone());
    let desired = |i: usize| DesiredUser {
        user_id: entitle::core::ids::UserId::parse(format!("u{i}")).unwrap(),
        user_name: format!("u{i}@example.test"),
        email: format!("u{i}@example.test"),
        keep_user_name: true,
        present: true,
        active: true,
        groups: BTreeSet::new(),
        enterprise: BTreeMap::new(),
    };
    let run = client();
    for i in 0..2 {
        assert!(run.sync_member(&desired(i), &BTreeSet::new(), None).await.unwrap().created);
    }
    let paced = run.sync_member(&desired(2), &BTreeSet::new(), None).await.unwrap_err();
    assert!(matches!(&paced, TargetError::Paced { reason } if reason.contains("github-emu")), "{paced:?}");
    // The next run (same process) is still within the hour's limit.
    assert!(matches!(client().sync_member(&desired(3), &BTreeSet::new(), None).await, Err(TargetError::Paced { .. })));
    assert_eq!(account.store(&s).await.users.len(), 2, "no creation past the limit");
}
