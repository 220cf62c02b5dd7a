//! [`Portal`] in memory: links, their per-minute counters, sessions.

use super::Memory;
use crate::app::ports::*;
use crate::core::portal::{Link, LinkState, Session};

impl Portal for Memory {
    async fn put_link(&self, key: &str, link: &Link, now: i64, per_minute: u32) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        let made = db.portal_minutes.entry((link.tenant.clone(), now.div_euclid(60))).or_default();
        if *made >= per_minute {
            return Ok(false);
        }
        *made += 1;
        db.portal_links.insert(key.to_string(), link.clone());
        Ok(true)
    }
    async fn link(&self, key: &str) -> Result<Option<Link>, PortError> {
        Ok(self.db.lock().unwrap().portal_links.get(key).cloned())
    }
    async fn spend_link(&self, key: &str, now: i64) -> Result<Option<Link>, PortError> {
        let mut db = self.db.lock().unwrap();
        let Some(link) = db.portal_links.get_mut(key) else { return Ok(None) };
        if !matches!(LinkState::of(Some(link.clone()), now), LinkState::Open(_)) {
            return Ok(None);
        }
        link.used_at = Some(now);
        Ok(Some(link.clone()))
    }
    async fn put_session(&self, key: &str, session: &Session) -> Result<(), PortError> {
        self.db.lock().unwrap().portal_sessions.insert(key.to_string(), session.clone());
        Ok(())
    }
    async fn session(&self, key: &str) -> Result<Option<Session>, PortError> {
        Ok(self.db.lock().unwrap().portal_sessions.get(key).cloned())
    }
    async fn touch_session(&self, key: &str, now: i64) -> Result<(), PortError> {
        if let Some(s) = self.db.lock().unwrap().portal_sessions.get_mut(key) {
            s.last_seen = now;
        }
        Ok(())
    }
    async fn end_session(&self, key: &str) -> Result<(), PortError> {
        self.db.lock().unwrap().portal_sessions.remove(key);
        Ok(())
    }
}
