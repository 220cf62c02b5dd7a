//! What the directory serves about itself (RFC 7643 §5-§7, RFC 7644 §4):
//! `ServiceProviderConfig`, `ResourceTypes`, `Schemas`. The schemas list
//! exactly the attributes Entitle keeps and gives back as sent; others a
//! provider sends are dropped (RFC 7644 §3.3: "the service provider MAY
//! ignore" them), so what `/Schemas` says is what a round trip does.

use serde_json::{json, Value};

pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
/// Entitle's view of a member (its seat, roles and entitlements): read-only.
pub const ENTITLE: &str = "urn:entitle:params:scim:schemas:extension:access:2.0:User";
pub const LIST: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
pub const SEARCH: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";
const SPC: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
const RESOURCE_TYPE: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// Most resources one list answer holds (`count` above it is lowered).
pub const MAX_RESULTS: usize = 200;

/// One attribute's definition.
struct A {
    name: &'static str,
    kind: &'static str,
    multi: bool,
    required: bool,
    mutability: &'static str,
    returned: &'static str,
    uniqueness: &'static str,
    case_exact: bool,
    canonical: &'static [&'static str],
    reference: &'static [&'static str],
    subs: Vec<A>,
}

fn a(name: &'static str) -> A {
    A { name, kind: "string", multi: false, required: false, mutability: "readWrite", returned: "default", uniqueness: "none", case_exact: false, canonical: &[], reference: &[], subs: Vec::new() }
}

impl A {
    fn kind(mut self, k: &'static str) -> Self {
        self.kind = k;
        self
    }
    fn multi(mut self) -> Self {
        self.multi = true;
        self
    }
    fn required(mut self) -> Self {
        self.required = true;
        self
    }
    fn read_only(mut self) -> Self {
        self.mutability = "readOnly";
        self
    }
    fn unique(mut self) -> Self {
        self.uniqueness = "server";
        self
    }
    fn exact(mut self) -> Self {
        self.case_exact = true;
        self
    }
    fn canonical(mut self, c: &'static [&'static str]) -> Self {
        self.canonical = c;
        self
    }
    fn reference(mut self, r: &'static [&'static str]) -> Self {
        self.kind = "reference";
        self.reference = r;
        self
    }
    fn complex(mut self, subs: Vec<A>) -> Self {
        self.kind = "complex";
        self.subs = subs;
        self
    }
    fn json(&self) -> Value {
        let mut v = json!({
            "name": self.name, "type": self.kind, "multiValued": self.multi, "description": "",
            "required": self.required, "mutability": self.mutability, "returned": self.returned,
        });
        if self.kind != "complex" {
            v["caseExact"] = json!(self.case_exact);
            v["uniqueness"] = json!(self.uniqueness);
        }
        if !self.canonical.is_empty() {
            v["canonicalValues"] = json!(self.canonical);
        }
        if !self.reference.is_empty() {
            v["referenceTypes"] = json!(self.reference);
        }
        if !self.subs.is_empty() {
            v["subAttributes"] = Value::Array(self.subs.iter().map(A::json).collect());
        }
        v
    }
}

/// A multi-valued complex attribute of the usual shape (value, type, primary, display).
fn values(name: &'static str, types: &'static [&'static str]) -> A {
    a(name).multi().complex(vec![a("value"), a("display"), a("type").canonical(types), a("primary").kind("boolean")])
}

fn user_attributes() -> Vec<A> {
    vec![
        a("userName").required().unique(),
        a("name").complex(vec![a("formatted"), a("familyName"), a("givenName"), a("middleName"), a("honorificPrefix"), a("honorificSuffix")]),
        a("displayName"),
        a("nickName"),
        a("profileUrl").reference(&["external"]),
        a("title"),
        a("userType"),
        a("preferredLanguage"),
        a("locale"),
        a("timezone"),
        a("active").kind("boolean"),
        // Entitle needs an email: `userName` when it is one, otherwise the primary email.
        a("emails").multi().required().complex(vec![a("value").required(), a("display"), a("type").canonical(&["work", "home", "other"]), a("primary").kind("boolean")]),
        values("phoneNumbers", &["work", "home", "mobile", "fax", "pager", "other"]),
        a("addresses").multi().complex(vec![
            a("formatted"),
            a("streetAddress"),
            a("locality"),
            a("region"),
            a("postalCode"),
            a("country"),
            a("type").canonical(&["work", "home", "other"]),
            a("primary").kind("boolean"),
        ]),
        a("roles").multi().complex(vec![a("value"), a("display"), a("type"), a("primary").kind("boolean")]),
        a("groups").multi().read_only().complex(vec![
            a("value").read_only().exact(),
            a("$ref").reference(&["Group"]).read_only(),
            a("display").read_only(),
            a("type").canonical(&["direct"]).read_only(),
        ]),
    ]
}

fn enterprise_attributes() -> Vec<A> {
    vec![
        a("employeeNumber"),
        a("costCenter"),
        a("organization"),
        a("division"),
        a("department"),
        a("manager").complex(vec![a("value").exact(), a("$ref").reference(&["User"]), a("displayName").read_only()]),
    ]
}

fn entitle_attributes() -> Vec<A> {
    vec![
        a("status").read_only().canonical(&["active", "pending_seat", "suspended", "deprovisioned"]),
        a("seat").read_only().canonical(&["held", "waiting", "none"]),
        a("tier").read_only(),
        a("roles").multi().read_only(),
        a("entitlements").multi().read_only().complex(vec![a("name").read_only(), a("value").read_only()]),
    ]
}

fn group_attributes() -> Vec<A> {
    vec![a("displayName").required().unique(), a("members").multi().complex(vec![a("value").exact(), a("$ref").reference(&["User"]), a("display"), a("type").canonical(&["User"])])]
}

fn schema(id: &str, name: &str, description: &str, attrs: Vec<A>, base: &str) -> Value {
    json!({
        "schemas": [SCHEMA],
        "id": id, "name": name, "description": description,
        "attributes": attrs.iter().map(A::json).collect::<Vec<_>>(),
        "meta": {"resourceType": "Schema", "location": format!("{base}/Schemas/{id}")},
    })
}

/// Every schema, as `/Schemas` lists them.
pub fn all(base: &str) -> Vec<Value> {
    vec![
        schema(USER, "User", "User Account (a member of the tenant)", user_attributes(), base),
        schema(ENTERPRISE, "EnterpriseUser", "Enterprise User", enterprise_attributes(), base),
        schema(ENTITLE, "EntitleAccess", "The member's access as Entitle decides it: its seat, roles and entitlements (read-only)", entitle_attributes(), base),
        schema(GROUP, "Group", "Group (its name is a group of the tenant's members, as the licensing model's role rules name them)", group_attributes(), base),
    ]
}

/// The top-level attributes a User keeps, lowercase (besides `externalId`).
pub fn user_kept() -> Vec<String> {
    user_attributes().iter().filter(|a| a.mutability != "readOnly").map(|a| a.name.to_ascii_lowercase()).collect()
}

/// The enterprise extension's attributes a User keeps, lowercase.
pub fn enterprise_kept() -> Vec<String> {
    enterprise_attributes().iter().map(|a| a.name.to_ascii_lowercase()).collect()
}

/// The resource types, as `/ResourceTypes` lists them.
pub fn resource_types(base: &str) -> Vec<Value> {
    vec![
        json!({
            "schemas": [RESOURCE_TYPE], "id": "User", "name": "User", "endpoint": "/Users",
            "description": "A member of the tenant", "schema": USER,
            "schemaExtensions": [{"schema": ENTERPRISE, "required": false}, {"schema": ENTITLE, "required": false}],
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/User")},
        }),
        json!({
            "schemas": [RESOURCE_TYPE], "id": "Group", "name": "Group", "endpoint": "/Groups",
            "description": "A group of the tenant's members", "schema": GROUP,
            "meta": {"resourceType": "ResourceType", "location": format!("{base}/ResourceTypes/Group")},
        }),
    ]
}

/// What the directory supports.
pub fn service_provider_config(base: &str, docs: &str) -> Value {
    json!({
        "schemas": [SPC],
        "documentationUri": docs,
        "patch": {"supported": true},
        "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
        "filter": {"supported": true, "maxResults": MAX_RESULTS},
        "changePassword": {"supported": false},
        "sort": {"supported": false},
        "etag": {"supported": true},
        "authenticationSchemes": [{
            "type": "oauthbearertoken", "name": "Bearer token",
            "description": "The directory connection's token (POST /tenants/{tenant}/directories), as Authorization: Bearer <token>",
            "primary": true,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig")},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_names_its_attributes_fully() {
        for s in all("https://x/scim/v2/tenants/t1") {
            fn check(a: &Value) {
                for key in ["name", "type", "multiValued", "required", "mutability", "returned"] {
                    assert!(a.get(key).is_some(), "{key} missing in {a}");
                }
                // Nothing is returned "always": a resource is whole without it.
                assert_ne!(a["returned"], "always");
                if let Some(subs) = a.get("subAttributes") {
                    subs.as_array().unwrap().iter().for_each(check);
                }
            }
            s["attributes"].as_array().unwrap().iter().for_each(check);
        }
        assert!(user_kept().contains(&"emails".to_string()) && !user_kept().contains(&"groups".to_string()));
    }
}
