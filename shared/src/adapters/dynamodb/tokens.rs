//! Members' signed tokens, cached on their items (`token`): read with the
//! member in one `GetItem`; written by an `UpdateItem` conditional on the
//! member's revision. Any write of the member replaces the whole item, so
//! its token goes with it.

use super::tenants::member_from_item;
use super::*;
use crate::app::ports::TokenCache;
use crate::core::tenant::MemberItem;
use crate::core::token::CachedToken;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;

impl TokenCache for Dynamo {
    async fn member_and_token(&self, tenant: &TenantId, user: &UserId) -> Result<(Option<MemberItem>, Option<CachedToken>), PortError> {
        let key = format!("{}/{}", tenant_pk(tenant), member_sk(user));
        match self.get(tenant_pk(tenant), member_sk(user)).await? {
            None => Ok((None, None)),
            Some(item) => Ok((Some(member_from_item(&item, &key, &self.legacy().await?)?), json_attr(&item, "token", &key)?)),
        }
    }

    async fn cache_token(&self, tenant: &TenantId, user: &UserId, token: &CachedToken) -> Result<bool, PortError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.state)
            .key("pk", s(tenant_pk(tenant)))
            .key("sk", s(member_sk(user)))
            .update_expression("SET #t = :t")
            .condition_expression("rev = :rev")
            .expression_attribute_names("#t", "token")
            .expression_attribute_values(":t", s(to_json(token)))
            .expression_attribute_values(":rev", n(token.rev))
            .send()
            .await;
        match out {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) => Ok(false),
            Err(e) => Err(failed("UpdateItem")(e)),
        }
    }
}
