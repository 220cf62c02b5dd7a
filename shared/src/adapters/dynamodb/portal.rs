//! [`Portal`] in the state table: a link is `PORTAL#<sha256 of its token>`
//! / `LINK`, spent by one `UpdateItem` conditional on it being unused and
//! unexpired; a session is `PORTAL#<sha256 of its id>` / `SESSION`; a
//! tenant's links per minute are counted in `PORTAL#RATE#<tenant>` /
//! `<minute>` by an `UpdateItem` conditional on the count. Every item has
//! a `ttl`, so DynamoDB removes them after they stop mattering (the
//! conditions, not the `ttl`, decide: DynamoDB deletes expired items
//! within days).

use super::*;
use crate::app::ports::Portal;
use crate::core::portal::{Intent, Link, Session, IDLE_SECS};
use aws_sdk_dynamodb::types::ReturnValue;

const DAY: i64 = 86_400;

fn pk(key: &str) -> String {
    format!("PORTAL#{key}")
}

fn link_of(item: &Item, key: &str) -> Result<Link, PortError> {
    let corrupt = |why: &str| PortError::Corrupt { key: format!("{}/LINK", pk(key)), why: why.to_string() };
    let tenant = get_s(item, "tenant").and_then(|t| TenantId::parse(t.to_string()).ok()).ok_or_else(|| corrupt("no tenant"))?;
    let admin = get_s(item, "admin").and_then(|a| UserId::parse(a.to_string()).ok()).ok_or_else(|| corrupt("no admin"))?;
    let intent: Intent = get_s(item, "intent").and_then(|i| serde_json::from_value(serde_json::Value::String(i.to_string())).ok()).ok_or_else(|| corrupt("no intent"))?;
    let expires_at = get_n(item, "expires_at").ok_or_else(|| corrupt("no expires_at"))? as i64;
    let used_at = get_n(item, "used_at").map(|u| u as i64);
    Ok(Link { tenant, admin, intent, expires_at, used_at })
}

fn session_of(item: &Item, key: &str) -> Result<Session, PortError> {
    let corrupt = |why: &str| PortError::Corrupt { key: format!("{}/SESSION", pk(key)), why: why.to_string() };
    Ok(Session {
        tenant: get_s(item, "tenant").and_then(|t| TenantId::parse(t.to_string()).ok()).ok_or_else(|| corrupt("no tenant"))?,
        admin: get_s(item, "admin").and_then(|a| UserId::parse(a.to_string()).ok()).ok_or_else(|| corrupt("no admin"))?,
        csrf: get_s(item, "csrf").ok_or_else(|| corrupt("no csrf"))?.to_string(),
        last_seen: get_n(item, "last_seen").ok_or_else(|| corrupt("no last_seen"))? as i64,
    })
}

impl Portal for Dynamo {
    async fn put_link(&self, key: &str, link: &Link, now: i64, per_minute: u32) -> Result<bool, PortError> {
        let minute = now.div_euclid(60);
        let counted = self
            .client
            .update_item()
            .table_name(&self.state)
            .key("pk", s(format!("PORTAL#RATE#{}", link.tenant)))
            .key("sk", s(minute.to_string()))
            .update_expression("ADD made :one SET #ttl = :ttl")
            .condition_expression("attribute_not_exists(made) OR made < :max")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(per_minute))
            .expression_attribute_values(":ttl", n(minute * 60 + DAY))
            .send()
            .await;
        if !condition_held("UpdateItem", counted)? {
            return Ok(false);
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.state)
            .item("pk", s(pk(key)))
            .item("sk", s("LINK"))
            .item("tenant", s(link.tenant.as_str()))
            .item("admin", s(link.admin.as_str()))
            .item("intent", s(link.intent.page()))
            .item("expires_at", n(link.expires_at))
            .item("ttl", n(link.expires_at + DAY))
            // A token is 256 random bits: a collision is a bug, never overwritten.
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        if !condition_held("PutItem", put)? {
            return Err(PortError::Corrupt { key: format!("{}/LINK", pk(key)), why: "a link with this token exists".into() });
        }
        Ok(true)
    }

    async fn link(&self, key: &str) -> Result<Option<Link>, PortError> {
        self.get(pk(key), "LINK".into()).await?.map(|item| link_of(&item, key)).transpose()
    }

    async fn spend_link(&self, key: &str, now: i64) -> Result<Option<Link>, PortError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.state)
            .key("pk", s(pk(key)))
            .key("sk", s("LINK"))
            .update_expression("SET used_at = :now")
            .condition_expression("attribute_exists(pk) AND attribute_not_exists(used_at) AND expires_at > :now")
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match out {
            Ok(o) => o.attributes.map(|item| link_of(&item, key)).transpose(),
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(failed("UpdateItem")(e)),
        }
    }

    async fn put_session(&self, key: &str, session: &Session) -> Result<(), PortError> {
        self.client
            .put_item()
            .table_name(&self.state)
            .item("pk", s(pk(key)))
            .item("sk", s("SESSION"))
            .item("tenant", s(session.tenant.as_str()))
            .item("admin", s(session.admin.as_str()))
            .item("csrf", s(&session.csrf))
            .item("last_seen", n(session.last_seen))
            .item("ttl", n(session.last_seen + IDLE_SECS + DAY))
            .send()
            .await
            .map_err(failed("PutItem"))?;
        Ok(())
    }

    async fn session(&self, key: &str) -> Result<Option<Session>, PortError> {
        self.get(pk(key), "SESSION".into()).await?.map(|item| session_of(&item, key)).transpose()
    }

    async fn touch_session(&self, key: &str, now: i64) -> Result<(), PortError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.state)
            .key("pk", s(pk(key)))
            .key("sk", s("SESSION"))
            .update_expression("SET last_seen = :now, #ttl = :ttl")
            // Never brings an ended session back.
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":ttl", n(now + IDLE_SECS + DAY))
            .send()
            .await;
        condition_held("UpdateItem", out).map(|_| ())
    }

    async fn end_session(&self, key: &str) -> Result<(), PortError> {
        self.client.delete_item().table_name(&self.state).key("pk", s(pk(key))).key("sk", s("SESSION")).send().await.map_err(failed("DeleteItem"))?;
        Ok(())
    }
}
