//! [`Targets`] in memory (SCIM targets and their delivery records) and
//! their bearer tokens ([`Tokens`]).

use super::Memory;
use crate::app::ports::*;
use crate::core::ids::{TargetId, TenantId, UserId};
use crate::core::scim::{Pending, Target, MAX_REFUSALS};

impl Targets for Memory {
    async fn targets(&self, tenant: &TenantId) -> Result<Vec<Target>, PortError> {
        Ok(self.db.lock().unwrap().targets.iter().filter(|((t, _), _)| t == tenant).map(|(_, x)| x.clone()).collect())
    }

    async fn pending(&self, tenant: &TenantId, target: &TargetId) -> Result<Vec<Pending>, PortError> {
        Ok(self.db.lock().unwrap().deliveries.iter().filter(|((t, x, _), _)| t == tenant && x == target).map(|(_, p)| p.clone()).collect())
    }

    async fn delivered(&self, tenant: &TenantId, target: &TargetId, user: &UserId, seq: u64) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        let key = (tenant.clone(), target.clone(), user.clone());
        if db.deliveries.get(&key).is_some_and(|p| p.seq == seq) {
            db.deliveries.remove(&key);
            return Ok(true);
        }
        Ok(false)
    }

    async fn refused(&self, tenant: &TenantId, target: &TargetId, pending: &Pending, reason: &str) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        match db.deliveries.get_mut(&(tenant.clone(), target.clone(), pending.member.user_id.clone())) {
            Some(p) if p.seq == pending.seq => {
                p.refusals += 1;
                if p.refusals >= MAX_REFUSALS {
                    p.parked = Some(reason.to_string());
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn save_health(&self, tenant: &TenantId, target: &Target) -> Result<bool, PortError> {
        let mut db = self.db.lock().unwrap();
        match db.targets.get_mut(&(tenant.clone(), target.target_id.clone())) {
            Some(t) => {
                t.health = target.health.clone();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn drop_deliveries(&self, tenant: &TenantId, target: &TargetId) -> Result<usize, PortError> {
        let mut db = self.db.lock().unwrap();
        let before = db.deliveries.len();
        db.deliveries.retain(|(t, x, _), _| !(t == tenant && x == target));
        Ok(before - db.deliveries.len())
    }
}

impl Tokens for Memory {
    async fn get(&self, tenant: &TenantId, target: &TargetId) -> Result<String, PortError> {
        self.tokens.lock().unwrap().get(&(tenant.clone(), target.clone())).cloned().ok_or_else(|| PortError::Corrupt { key: format!("{tenant}/{target}"), why: "no token".into() })
    }

    async fn put(&self, tenant: &TenantId, target: &TargetId, token: &str) -> Result<(), PortError> {
        self.tokens.lock().unwrap().insert((tenant.clone(), target.clone()), token.to_string());
        Ok(())
    }

    async fn delete(&self, tenant: &TenantId, target: &TargetId) -> Result<(), PortError> {
        self.tokens.lock().unwrap().remove(&(tenant.clone(), target.clone()));
        Ok(())
    }
}
