//! [`Directories`] in memory: connections, groups and their members, and
//! the lookups by name.

use super::Memory;
use crate::app::ports::*;
use crate::core::ids::{TenantId, UserId};
use crate::core::provider::connection::{Connection, PushNote, PushStats};
use crate::core::provider::{DirGroup, Edge};

impl Directories for Memory {
    async fn note_push(&self, tenant: &TenantId, connection: &str, note: PushNote, at: chrono::DateTime<chrono::Utc>) -> Result<(), PortError> {
        let mut db = self.db.lock().unwrap();
        let stats = db.push_stats.entry((tenant.clone(), connection.to_string())).or_default();
        let at = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if note.refused {
            stats.refused += 1;
            stats.last_refused = Some(at);
        } else {
            stats.last_push = Some(at);
        }
        stats.users += note.users;
        stats.groups += note.groups;
        Ok(())
    }
    async fn push_stats(&self, tenant: &TenantId) -> Result<std::collections::BTreeMap<String, PushStats>, PortError> {
        Ok(self.db.lock().unwrap().push_stats.iter().filter(|((t, _), _)| t == tenant).map(|((_, c), s)| (c.clone(), s.clone())).collect())
    }
    async fn connection(&self, tenant: &TenantId, id: &str) -> Result<Option<Connection>, PortError> {
        Ok(self.db.lock().unwrap().connections.get(&(tenant.clone(), id.to_string())).cloned())
    }
    async fn connections(&self, tenant: &TenantId) -> Result<Vec<Connection>, PortError> {
        Ok(self.db.lock().unwrap().connections.iter().filter(|((t, _), _)| t == tenant).map(|(_, c)| c.clone()).collect())
    }
    async fn user_by_name(&self, tenant: &TenantId, user_name: &str) -> Result<Option<UserId>, PortError> {
        Ok(self.db.lock().unwrap().name_holder(tenant, user_name))
    }
    async fn push_view(&self, tenant: &TenantId, connection: &str, user: &UserId, user_name: &str) -> Result<PushView, PortError> {
        let db = self.db.lock().unwrap();
        Ok(PushView {
            connection: db.connections.get(&(tenant.clone(), connection.to_string())).cloned(),
            meta: db.meta.get(tenant).cloned(),
            member: db.members.get(&(tenant.clone(), user.clone())).cloned(),
            name_holder: db.name_holder(tenant, user_name),
        })
    }
    async fn group(&self, tenant: &TenantId, id: &str) -> Result<Option<DirGroup>, PortError> {
        Ok(self.db.lock().unwrap().groups.get(&(tenant.clone(), id.to_string())).cloned())
    }
    async fn group_by_name(&self, tenant: &TenantId, name: &str) -> Result<Option<DirGroup>, PortError> {
        let db = self.db.lock().unwrap();
        Ok(db.group_names.get(&(tenant.clone(), name.to_lowercase())).and_then(|id| db.groups.get(&(tenant.clone(), id.clone()))).cloned())
    }
    async fn groups_page(&self, tenant: &TenantId, after: Option<&str>, limit: usize) -> Result<(Vec<DirGroup>, Option<String>), PortError> {
        let db = self.db.lock().unwrap();
        let all: Vec<DirGroup> = db.groups.iter().filter(|((t, id), _)| t == tenant && after.is_none_or(|a| id.as_str() > a)).map(|(_, g)| g.clone()).collect();
        let more = all.len() > limit;
        let page: Vec<DirGroup> = all.into_iter().take(limit).collect();
        let next = if more { page.last().map(|g| g.id.clone()) } else { None };
        Ok((page, next))
    }
    async fn group_members(&self, tenant: &TenantId, group: &str) -> Result<Vec<Edge>, PortError> {
        Ok(self.db.lock().unwrap().edges.iter().filter(|((t, g, _), _)| t == tenant && g == group).map(|(_, e)| e.clone()).collect())
    }
}
