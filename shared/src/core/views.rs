//! The JSON shapes of what the API shows and takes about tenants and
//! members: the stable contract with the app.

use crate::core::access::{MemberAccess, MemberItem, MemberStatus};
use crate::core::ids::{TenantId, UserId};
use crate::core::license::TenantAccess;
use crate::core::model::Entitlements;
use crate::core::rejection::Rejection;
use crate::core::seats::Pin;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Seats {
    pub total: u32,
    pub used: u32,
}

/// `GET /tenants/{tenant}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TenantView {
    pub tenant_id: TenantId,
    pub tier: String,
    pub status: crate::core::license::TenantStatus,
    pub seats: Seats,
    pub entitlements: Entitlements,
    pub expires_at: Option<String>,
    pub add_ons: BTreeSet<String>,
    pub seats_pending: u32,
    /// The licensing model version the tenant follows (with its pin and a
    /// move waiting for its period's end, if any).
    pub model: serde_json::Value,
}

impl TenantView {
    pub fn of(tenant_id: TenantId, meta: &crate::core::tenant::TenantMeta) -> Option<Self> {
        let access = meta.access.as_ref()?;
        Some(TenantView { model: crate::core::versions::tenant_model_view(meta), ..Self::new(tenant_id, access, meta.seats_used, meta.seats_pending) })
    }

    pub fn new(tenant_id: TenantId, access: &TenantAccess, used: u32, pending: u32) -> Self {
        TenantView {
            tenant_id,
            tier: access.tier.clone(),
            status: access.status,
            seats: Seats { total: access.seats_total, used },
            entitlements: access.entitlements.clone(),
            expires_at: access.expires_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            add_ons: access.addons.clone(),
            seats_pending: pending,
            model: serde_json::Value::Null,
        }
    }
}

/// `GET /tenants/{tenant}/members/{user}` and the answer to member creation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberView {
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub status: MemberStatus,
    pub roles: BTreeSet<String>,
    pub entitlements: Entitlements,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seat: Option<SeatView>,
    /// The licensing model version its access was decided under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<crate::core::ids::ModelVersion>,
}

/// A member's place in the seat order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SeatView {
    /// When the member got its seat (`active`) or joined the line (`pending_seat`).
    pub since: Option<String>,
    /// Given (`hold: true`) or released (`hold: false`) by the tenant's admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
}

impl MemberView {
    pub fn new(tenant_id: TenantId, user_id: UserId, access: &MemberAccess) -> Self {
        MemberView { tenant_id, user_id, status: access.status, roles: access.roles.clone(), entitlements: access.entitlements.clone(), seat: None, model: None }
    }
    /// A member item as the app reads it, with its place in the seat order.
    pub fn of(tenant_id: TenantId, item: &MemberItem) -> Self {
        let since = chrono::DateTime::from_timestamp_micros(i64::try_from(item.seat.since).unwrap_or(0)).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        MemberView { seat: Some(SeatView { since, pin: item.seat.pin.clone() }), model: Some(item.model_version.clone()), ..MemberView::new(tenant_id, item.member.user_id.clone(), &item.access) }
    }
}

/// `POST /tenants/{tenant}/members`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NewMember {
    pub user_id: UserId,
    pub email: String,
    #[serde(default)]
    pub groups: BTreeSet<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// `PATCH /tenants/{tenant}/members/{user}`: what changes (absent: kept).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MemberUpdate {
    #[serde(default)]
    pub groups: Option<BTreeSet<String>>,
    #[serde(default)]
    pub attributes: Option<BTreeMap<String, String>>,
}

impl MemberUpdate {
    pub fn validate(&self) -> Result<(), Rejection> {
        let empty = BTreeSet::new();
        let no_attributes = BTreeMap::new();
        NewMember {
            user_id: UserId::parse("x").expect("a valid id"),
            email: "x@example.com".into(),
            groups: self.groups.clone().unwrap_or(empty),
            attributes: self.attributes.clone().unwrap_or(no_attributes),
        }
        .validate()
    }
}

impl NewMember {
    pub fn validate(&self) -> Result<(), Rejection> {
        let email_ok =
            self.email.chars().count() <= 254 && self.email.split_once('@').is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains('@')) && !self.email.chars().any(char::is_whitespace);
        if !email_ok {
            return Err(Rejection::new(crate::core::rejection::Kind::Invalid, "invalid_member", "email: not a valid address"));
        }
        if self.groups.len() > 100 || self.groups.iter().any(|g| g.is_empty() || g.chars().count() > 128) {
            return Err(Rejection::new(crate::core::rejection::Kind::Invalid, "invalid_member", "groups: at most 100 names of 1 to 128 characters"));
        }
        if self.attributes.len() > 50 || self.attributes.iter().any(|(k, v)| k.is_empty() || k.chars().count() > 128 || v.chars().count() > 1024) {
            return Err(Rejection::new(crate::core::rejection::Kind::Invalid, "invalid_member", "attributes: at most 50, keys of 1 to 128 and values of up to 1024 characters"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_validation() {
        let mut m: NewMember = serde_json::from_slice(br#"{"user_id":"u1","email":"a@example.com","groups":["admins"]}"#).unwrap();
        assert!(m.validate().is_ok());
        m.email = "not-an-email".into();
        assert_eq!(m.validate().unwrap_err().kind, crate::core::rejection::Kind::Invalid);
    }
}
