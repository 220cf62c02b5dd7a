//! A tenant's directory: its connections, groups, group members and name
//! claims, in a partition of their own (`D#<tenant>`), so that reading a
//! tenant's members or head never reads them.
//!
//! | sk | what |
//! | --- | --- |
//! | `CONN#<id>` | a directory connection (its token's hash, never the token) |
//! | `UN#<userName, lowercase>` | the member a pushed User's userName names |
//! | `G#<id>` | a directory group |
//! | `GN#<name, lowercase>` | the group a name names (unique per tenant) |
//! | `GM#<group>#<user>` | a member of a group |
//! | `STAT#<connection>` | what a connection's pushes did (counted after each lands) |

use super::*;
use crate::app::ports::{Directories, PushView};
use crate::core::provider::connection::{Connection, PushNote, PushStats};
use crate::core::provider::{DirGroup, Edge};

pub(crate) fn directory_pk(tenant: &TenantId) -> String {
    format!("D#{tenant}")
}
pub(crate) fn connection_sk(id: &str) -> String {
    format!("CONN#{id}")
}
pub(crate) fn user_name_sk(user_name: &str) -> String {
    format!("UN#{}", user_name.to_lowercase())
}
pub(crate) fn group_sk(id: &str) -> String {
    format!("G#{id}")
}
pub(crate) fn group_name_sk(name: &str) -> String {
    format!("GN#{}", name.to_lowercase())
}
pub(crate) fn edge_sk(group: &str, user: &UserId) -> String {
    format!("GM#{group}#{user}")
}

impl Dynamo {
    async fn directory_item(&self, tenant: &TenantId, sk: &str) -> Result<Option<Item>, PortError> {
        self.get(directory_pk(tenant), sk.to_string()).await
    }
}

impl Directories for Dynamo {
    async fn note_push(&self, tenant: &TenantId, connection: &str, note: PushNote, at: DateTime<Utc>) -> Result<(), PortError> {
        let at = rfc3339(at);
        let (set, when) = if note.refused { ("last_refused", ", refused :one") } else { ("last_push", "") };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.state)
            .key("pk", s(directory_pk(tenant)))
            .key("sk", s(format!("STAT#{connection}")))
            // Both are reserved words of DynamoDB's expressions.
            .update_expression(format!("SET {set} = :at ADD #users :users, #groups :groups{when}"))
            .expression_attribute_names("#users", "users")
            .expression_attribute_names("#groups", "groups")
            .expression_attribute_values(":at", s(at))
            .expression_attribute_values(":users", n(note.users))
            .expression_attribute_values(":groups", n(note.groups));
        if note.refused {
            update = update.expression_attribute_values(":one", n(1));
        }
        update.send().await.map_err(failed("UpdateItem"))?;
        Ok(())
    }

    async fn push_stats(&self, tenant: &TenantId) -> Result<std::collections::BTreeMap<String, PushStats>, PortError> {
        let int = |i: &Item, k: &str| i.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        Ok(self
            .query_partition(directory_pk(tenant), "STAT#")
            .await?
            .iter()
            .filter_map(|i| {
                let id = get_s(i, "sk")?.strip_prefix("STAT#")?.to_string();
                let stats = PushStats {
                    last_push: get_s(i, "last_push").map(str::to_string),
                    users: int(i, "users"),
                    groups: int(i, "groups"),
                    refused: u64::try_from(int(i, "refused")).unwrap_or(0),
                    last_refused: get_s(i, "last_refused").map(str::to_string),
                };
                Some((id, stats))
            })
            .collect())
    }

    async fn connection(&self, tenant: &TenantId, id: &str) -> Result<Option<Connection>, PortError> {
        let sk = connection_sk(id);
        match self.directory_item(tenant, &sk).await? {
            None => Ok(None),
            Some(item) => json_attr(&item, "connection", &format!("{}/{sk}", directory_pk(tenant))),
        }
    }

    async fn connections(&self, tenant: &TenantId) -> Result<Vec<Connection>, PortError> {
        let pk = directory_pk(tenant);
        self.query_partition(pk.clone(), "CONN#").await?.iter().map(|i| required(i, "connection", &pk)).collect()
    }

    async fn user_by_name(&self, tenant: &TenantId, user_name: &str) -> Result<Option<UserId>, PortError> {
        let key = |i: &Item| get_s(i, "user_id").and_then(|u| UserId::parse(u).ok());
        if let Some(item) = self.directory_item(tenant, &user_name_sk(user_name)).await? {
            return Ok(key(&item));
        }
        Ok(self.get(email_pk(tenant), crate::core::tenant::email_key(user_name)).await?.as_ref().and_then(key))
    }

    /// One `TransactGetItems`: `META`, the member, the connection, the
    /// userName's claim and the email it may be.
    async fn push_view(&self, tenant: &TenantId, connection: &str, user: &UserId, user_name: &str) -> Result<PushView, PortError> {
        let keys = [
            (tenant_pk(tenant), member_sk(user)),
            (directory_pk(tenant), connection_sk(connection)),
            (directory_pk(tenant), user_name_sk(user_name)),
            (email_pk(tenant), crate::core::tenant::email_key(user_name)),
        ];
        let (meta, items) = self.get_with_meta(tenant, &keys).await?;
        let legacy = self.legacy().await?;
        let at = |i: usize| items.get(i).cloned().flatten();
        let key = |i: usize| format!("{}/{}", keys[i].0, keys[i].1);
        let holder = |i: usize| at(i).as_ref().and_then(|item| get_s(item, "user_id")).and_then(|u| UserId::parse(u).ok());
        Ok(PushView {
            meta,
            member: at(0).map(|i| super::tenants::member_from_item(&i, &key(0), &legacy)).transpose()?,
            connection: match at(1) {
                None => None,
                Some(i) => json_attr(&i, "connection", &key(1))?,
            },
            // As `user_by_name`: a pushed User's claim first, then an email.
            name_holder: if at(2).is_some() { holder(2) } else { holder(3) },
        })
    }

    async fn group(&self, tenant: &TenantId, id: &str) -> Result<Option<DirGroup>, PortError> {
        let sk = group_sk(id);
        match self.directory_item(tenant, &sk).await? {
            None => Ok(None),
            Some(item) => json_attr(&item, "group", &format!("{}/{sk}", directory_pk(tenant))),
        }
    }

    async fn group_by_name(&self, tenant: &TenantId, name: &str) -> Result<Option<DirGroup>, PortError> {
        let Some(claim) = self.directory_item(tenant, &group_name_sk(name)).await? else { return Ok(None) };
        match get_s(&claim, "group_id") {
            Some(id) => self.group(tenant, id).await,
            None => Ok(None),
        }
    }

    async fn groups_page(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> Result<(Vec<DirGroup>, Option<String>), PortError> {
        let pk = directory_pk(tenant);
        let (items, next) = self.query_page(pk.clone(), "G#", after.map(group_sk), limit).await?;
        let groups = items.iter().map(|i| required::<DirGroup>(i, "group", &pk)).collect::<Result<Vec<_>, _>>()?;
        Ok((groups, next.map(|sk| sk.trim_start_matches("G#").to_string())))
    }

    async fn group_members(&self, tenant: &TenantId, group: &str) -> Result<Vec<Edge>, PortError> {
        let pk = directory_pk(tenant);
        self.query_partition(pk.clone(), &format!("GM#{group}#")).await?.iter().map(|i| required(i, "edge", &pk)).collect()
    }
}
