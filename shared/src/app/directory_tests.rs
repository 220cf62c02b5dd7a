//! The directory's use cases against the ports in memory: concurrent
//! pushes of one user, crashes in the middle of a group's rename or
//! delete, the refusal of a push and what it announces, and a push decided
//! on the tenant's access as it was before a walk.

use super::directory::{self, connections, Session};
use super::memory::{crm_change, is_injected_crash, Crashing, Memory};
use super::ports::{Change, CommitError, Directories, Tenants, Write};
use super::*;
use crate::core::access::MemberStatus;
use crate::core::audit::{AuditAction, AuditRecord, Cause, CauseKind};
use crate::core::ids::{TenantId, UserId};
use crate::core::model::{LicensingModel, WhenFull};
use crate::core::provider::connection::{Connection, NewConnection};
use crate::core::provider::schemas::{GROUP, USER};
use chrono::Utc;
use serde_json::{json, Value};
use std::sync::Arc;

fn model() -> Arc<LicensingModel> {
    Arc::new(LicensingModel::default_model())
}

async fn licensed(store: &Memory, t: &TenantId, seats: u32) {
    licenses::record_change(store, &crm_change(t, 1, seats), "h1", Utc::now()).await.unwrap();
    reconcile::reconcile(store, t, &Cause::new(CauseKind::Reconcile, "seed"), Utc::now()).await.unwrap();
}

async fn connected(store: &Memory, t: &TenantId, when_full: Option<WhenFull>) -> Connection {
    let (c, _) = connections::issue(store, t, &NewConnection { name: "okta".into(), when_full }, ([1; 8], [2; 32]), &Cause::api_call("req"), Utc::now()).await.unwrap();
    c
}

fn session<'a, S>(store: &'a S, t: &TenantId, c: &Connection, request: &str) -> Session<'a, S> {
    Session { store, tenant: t.clone(), connection: c.clone(), request_id: request.into(), base: "https://dir/scim/v2/tenants/t".into(), now: Utc::now(), targets: Default::default() }
}

fn user(name: &str) -> Value {
    json!({"schemas": [USER], "userName": name, "active": true})
}

async fn records(store: &Memory, t: &TenantId) -> Vec<AuditRecord> {
    let (records, _) = store.audit_page(t, 0, 100_000).await.unwrap();
    records.iter().map(|r| serde_json::from_str::<AuditRecord>(&r.json).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_user_pushed_by_sixteen_concurrent_requests_is_one_member() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = TenantId::parse("race").unwrap();
    licensed(&store, &t, 5).await;
    let c = connected(&store, &t, None).await;
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (store, t, c) = (store.clone(), t.clone(), c.clone());
            tokio::spawn(async move { session(&store, &t, &c, &format!("req-{i}")).create_user(&user("Same@Example.test")).await })
        })
        .collect();
    let mut created = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => created += 1,
            Err(Error::Rejected(r)) => assert_eq!(r.details["scimType"], "uniqueness", "{r:?}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(created, 1);
    audit::integrate(&store, &t, Utc::now()).await.unwrap();
    let created: Vec<AuditRecord> = records(&store, &t).await.into_iter().filter(|r| r.event.action == AuditAction::MemberCreated).collect();
    assert_eq!(created.len(), 1);
    assert_eq!(store.meta(&t).await.unwrap().unwrap().seats_used, 1);
}

#[tokio::test]
async fn a_refused_push_stores_nothing_but_its_audit_record_and_announces_it() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = TenantId::parse("full").unwrap();
    licensed(&store, &t, 1).await;
    let c = connected(&store, &t, Some(WhenFull::Refuse)).await;
    let s = session(&store, &t, &c, "r1");
    s.create_user(&user("first@x.test")).await.unwrap();
    let before = store.tenant(&t).await.unwrap().unwrap();
    let e = s.create_user(&user("second@x.test")).await.unwrap_err();
    let Error::Rejected(r) = e else { panic!("{e}") };
    assert_eq!((r.code, r.details["seats"].clone()), ("seat_limit_reached", json!({"total": 1, "used": 1})));
    let after = store.tenant(&t).await.unwrap().unwrap();
    assert_eq!(after.members, before.members, "no member stored");
    assert_eq!(store.user_by_name(&t, "second@x.test").await.unwrap(), None);
    let refused: Vec<AuditRecord> = records(&store, &t).await.into_iter().filter(|r| r.event.action == AuditAction::DirectoryPushRefused).collect();
    assert_eq!(refused.len(), 1);
    assert!(store.stream().iter().any(|e| e["type"] == "tenant.seat_limit_reached" && e["seats"] == json!({"total": 1, "used": 1})));
}

#[tokio::test]
async fn a_suspension_announces_when_its_pending_record_is_chained() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = TenantId::parse("susp").unwrap();
    licensed(&store, &t, 3).await;
    let c = connected(&store, &t, None).await;
    let s = session(&store, &t, &c, "r1");
    let u = s.create_user(&user("a@x.test")).await.unwrap().resource;
    let id = u["id"].as_str().unwrap();
    let off = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "Replace", "path": "active", "value": "False"}]});
    s.patch_user(id, &off, None).await.unwrap();
    assert!(!store.stream().iter().any(|e| e["type"] == "member.access_changed"), "nothing announced before the record is chained");
    audit::integrate(&store, &t, Utc::now()).await.unwrap();
    let stream = store.stream();
    let e = stream.iter().find(|e| e["type"] == "member.access_changed" && e["user_id"] == id).expect("announced once chained");
    assert_eq!((e["status"]["after"].as_str(), e["seat"].as_str()), (Some("suspended"), Some("lost")));
    assert_eq!(e["cause"]["kind"], "directory");
    assert_eq!(store.member(&t, &UserId::parse(id).unwrap()).await.unwrap().unwrap().access.status, MemberStatus::Suspended);
    assert_eq!(store.meta(&t).await.unwrap().unwrap().seats_used, 0);
}

/// Members of a group, each in a group "admins" pushed by the directory.
async fn grouped(store: &Memory, t: &TenantId, c: &Connection, n: usize) -> (String, Vec<String>) {
    let s = session(store, t, c, "seed");
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(s.create_user(&user(&format!("u{i}@x.test"))).await.unwrap().resource["id"].as_str().unwrap().to_string());
    }
    let members: Vec<Value> = ids.iter().map(|i| json!({"value": i})).collect();
    let g = s.create_group(&json!({"schemas": [GROUP], "displayName": "admins", "members": members}), "g1").await.unwrap();
    (g.resource["id"].as_str().unwrap().to_string(), ids)
}

async fn groups_of(store: &Memory, t: &TenantId, ids: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for i in ids {
        let item = store.member(t, &UserId::parse(i.clone()).unwrap()).await.unwrap().unwrap();
        out.push(item.member.groups.into_iter().collect());
    }
    out
}

#[tokio::test]
async fn a_rename_cut_off_after_every_transaction_is_finished_by_the_next_write() {
    let m = model();
    for crash_after in 0..6 {
        let store = Memory::new(m.clone());
        let t = TenantId::parse("rename").unwrap();
        licensed(&store, &t, 10).await;
        let c = connected(&store, &t, None).await;
        let (gid, ids) = grouped(&store, &t, &c, 4).await;
        let crashing = Crashing::after(&store, crash_after);
        let rename = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [{"op": "replace", "path": "displayName", "value": "owners"}]});
        match session(&crashing, &t, &c, "rename").patch_group(&gid, &rename, None, true).await {
            Ok(_) => {}
            Err(e) => assert!(is_injected_crash(&e), "{e}"),
        }
        // The IdP sends it again (it got no answer): finished, nothing doubled.
        session(&store, &t, &c, "rename-again").patch_group(&gid, &rename, None, true).await.unwrap();
        assert_eq!(groups_of(&store, &t, &ids).await, vec![vec!["owners".to_string()]; 4], "crash after {crash_after}");
        for i in &ids {
            let item = store.member(&t, &UserId::parse(i.clone()).unwrap()).await.unwrap().unwrap();
            assert!(item.access.roles.contains("owner"), "{:?}", item.access);
        }
        assert_eq!(store.group_by_name(&t, "admins").await.unwrap(), None);
        assert_eq!(store.group_by_name(&t, "owners").await.unwrap().unwrap().id, gid);
    }
}

#[tokio::test]
async fn a_delete_cut_off_after_every_transaction_is_finished_by_the_next_delete() {
    let m = model();
    for crash_after in 0..6 {
        let store = Memory::new(m.clone());
        let t = TenantId::parse("delete").unwrap();
        licensed(&store, &t, 10).await;
        let c = connected(&store, &t, None).await;
        let (gid, ids) = grouped(&store, &t, &c, 4).await;
        let crashing = Crashing::after(&store, crash_after);
        let first = session(&crashing, &t, &c, "delete").delete_group(&gid, None).await;
        if let Err(e) = &first {
            assert!(is_injected_crash(e), "{e}");
            // Marked deleted first: already gone for SCIM (when the mark landed).
            if crash_after > 0 {
                assert!(session(&store, &t, &c, "get").get_group(&gid, true).await.is_err());
            }
        }
        session(&store, &t, &c, "delete-again").delete_group(&gid, None).await.unwrap_or_else(|e| {
            // Deleted by the first attempt after all.
            assert!(first.is_ok() && matches!(&e, Error::Rejected(r) if r.kind == crate::core::rejection::Kind::NotFound), "{e}");
        });
        assert_eq!(groups_of(&store, &t, &ids).await, vec![Vec::<String>::new(); 4], "crash after {crash_after}");
        assert_eq!(store.group(&t, &gid).await.unwrap(), None);
        assert!(store.group_members(&t, &gid).await.unwrap().is_empty());
        // Its name is free again.
        session(&store, &t, &c, "again").create_group(&json!({"schemas": [GROUP], "displayName": "admins"}), "g2").await.unwrap();
    }
}

#[tokio::test]
async fn a_push_decided_before_a_walk_never_lands_after_it() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = TenantId::parse("walkrace").unwrap();
    licensed(&store, &t, 10).await;
    let meta = store.meta(&t).await.unwrap().unwrap();
    // A tier change walks the tenant: its goal moves.
    let mut upgrade = crm_change(&t, 2, 10);
    upgrade.update.tier = "enterprise".into();
    licenses::record_change(&store, &upgrade, "h2", Utc::now()).await.unwrap();
    reconcile::reconcile(&store, &t, &Cause::new(CauseKind::Reconcile, "walk"), Utc::now()).await.unwrap();
    assert_ne!(store.meta(&t).await.unwrap().unwrap().walk_goal, meta.walk_goal);
    // A write decided on the META read before is refused, whatever else it holds.
    let mut change = Change::new(Utc::now());
    change.meta.walk_goal_is = Some(meta.walk_goal.clone());
    change.writes.push(Write::Edge(crate::core::provider::Edge { group: "g".into(), user: UserId::parse("u").unwrap(), name: "n".into(), entry: Value::Null }));
    assert!(matches!(store.commit_unchained(&t, &change, "stale").await, Err(CommitError::Seats)));
    change.meta.walk_goal_is = Some(store.meta(&t).await.unwrap().unwrap().walk_goal);
    store.commit_unchained(&t, &change, "fresh").await.unwrap();
}

#[tokio::test]
async fn a_push_authenticated_on_its_own_read_answers_as_the_general_path() {
    let m = model();
    let store = Memory::new(m.clone());
    let t = TenantId::parse("fast").unwrap();
    licensed(&store, &t, 1).await;
    let (c, token) = connections::issue(&store, &t, &NewConnection { name: "okta".into(), when_full: None }, ([3; 8], [4; 32]), &Cause::api_call("req"), Utc::now()).await.unwrap();
    let bearer = format!("Bearer {token}");
    let push = |tenant: &'static str, authorization: Option<String>, body: Value| {
        let store = store.clone();
        async move {
            directory::push_user(&store, directory::Incoming { tenant, authorization: authorization.as_deref(), request_id: "req-push".into(), base: "https://dir".into(), now: Utc::now() }, &body)
                .await
                .map(|o| o.map(|(s, a)| (s.connection.id, a)))
        }
    };
    let unauthenticated = |r: Result<Option<(String, directory::Answer)>, Error>| matches!(r, Err(Error::Rejected(r)) if r.code == "unauthenticated");
    // No token, a token that is no token, and a wrong secret: 401, nothing stored.
    assert!(unauthenticated(push("fast", None, user("a@x.test")).await));
    assert!(unauthenticated(push("fast", Some("Bearer nope".into()), user("a@x.test")).await));
    let forged = format!("{}{}", &bearer[..bearer.len() - 4], "0000");
    assert!(unauthenticated(push("fast", Some(forged), user("a@x.test")).await));
    // Another tenant's path, or a body that is no User: the general path answers (404, 400).
    assert!(push("other", Some(bearer.clone()), user("a@x.test")).await.unwrap().is_none());
    assert!(push("fast", Some(bearer.clone()), json!({"schemas": [USER]})).await.unwrap().is_none());
    assert_eq!(store.meta(&t).await.unwrap().unwrap().seats_used, 0, "nothing was stored");
    // A push: created on the connection's behalf, with the seat.
    let (conn, a) = push("fast", Some(bearer.clone()), user("A@x.test")).await.unwrap().unwrap();
    assert_eq!(conn, c.id);
    assert!(a.changed);
    assert_eq!(store.meta(&t).await.unwrap().unwrap().seats_used, 1);
    // Its userName, whatever its case, under another externalId: 409 uniqueness.
    let again = push("fast", Some(bearer.clone()), json!({"schemas": [USER], "userName": "a@X.test", "externalId": "other-id", "active": true})).await;
    assert!(matches!(&again, Err(Error::Rejected(r)) if r.details["scimType"] == "uniqueness"), "{again:?}");
    // The same User again (RFC 7644 §3.3: 409), nothing written twice.
    let same = push("fast", Some(bearer), user("A@x.test")).await;
    assert!(matches!(&same, Err(Error::Rejected(r)) if r.details["scimType"] == "uniqueness"), "{same:?}");
    assert_eq!(store.meta(&t).await.unwrap().unwrap().seats_used, 1);
    audit::integrate(&store, &t, Utc::now()).await.unwrap();
    assert_eq!(records(&store, &t).await.iter().filter(|r| r.event.action == AuditAction::MemberCreated).count(), 1, "audited once");
}

/// What the portal's directory page shows of a connection, counted from its
/// pushes: the last change, the Users and Groups its creations and
/// deletions leave it holding, the pushes refused for the seat cap; a
/// second connection's pushes are its own.
#[tokio::test]
async fn a_connections_pushes_are_counted_on_it() {
    let store = Memory::new(model());
    let t = TenantId::parse("stats").unwrap();
    licensed(&store, &t, 1).await;
    let c = connected(&store, &t, Some(WhenFull::Refuse)).await;
    let s = session(&store, &t, &c, "r1");
    let ann = s.create_user(&user("ann@example.test")).await.unwrap().resource["id"].as_str().unwrap().to_string();
    assert!(matches!(s.create_user(&user("bob@example.test")).await, Err(Error::Rejected(r)) if r.code == "seat_limit_reached"));
    s.create_group(&json!({"schemas": [GROUP], "displayName": "eng"}), "g1").await.unwrap();
    let stats = store.push_stats(&t).await.unwrap();
    let mine = &stats[&c.id];
    assert_eq!((mine.users, mine.groups, mine.refused), (1, 1, 1), "{mine:?}");
    assert!(mine.last_push.is_some() && mine.last_refused.is_some());
    s.delete_user(&ann, None).await.unwrap();
    s.delete_group("g1", None).await.unwrap();
    let mine = &store.push_stats(&t).await.unwrap()[&c.id];
    assert_eq!((mine.users, mine.groups, mine.refused), (0, 0, 1), "{mine:?}");
    let (other, _) = connections::issue(&store, &t, &NewConnection { name: "entra".into(), when_full: None }, ([5; 8], [6; 32]), &Cause::api_call("req-2"), Utc::now()).await.unwrap();
    assert!(!store.push_stats(&t).await.unwrap().contains_key(&other.id), "nothing pushed through it yet");
}
