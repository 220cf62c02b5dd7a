//! A SCIM service provider of scim2-server, read and changed directly.

use serde_json::Value;

/// One SCIM service provider on scim2-server, read and changed directly
/// (what an admin of the target would do behind Entitle's back).
pub struct Scim {
    pub base: String,
    pub token: String,
    pub(crate) http: reqwest::Client,
}

/// A user as the tests compare it: active, externalId, groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenUser {
    pub id: String,
    pub external_id: Option<String>,
    pub active: bool,
    pub groups: std::collections::BTreeSet<String>,
    pub department: Option<String>,
}

impl Scim {
    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/scim+json").body(b.to_string());
        }
        let resp = req.send().await.expect("scim2-server answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    async fn all(&self, path: &str) -> Vec<Value> {
        let (code, body) = self.request(reqwest::Method::GET, &format!("{path}?count=1000"), None).await;
        assert_eq!(code, 200, "{body}");
        body["Resources"].as_array().cloned().unwrap_or_default()
    }

    pub async fn create_user(&self, user_name: &str, external_id: Option<&str>) -> String {
        let mut body = serde_json::json!({"schemas": [entitle::core::scim::USER_SCHEMA], "userName": user_name, "active": true});
        if let Some(e) = external_id {
            body["externalId"] = e.into();
        }
        let (code, created) = self.request(reqwest::Method::POST, "/Users", Some(body)).await;
        assert_eq!(code, 201, "{created}");
        created["id"].as_str().unwrap().to_string()
    }

    pub async fn patch(&self, path: &str, ops: Vec<entitle::core::scim::PatchOp>) {
        let (code, body) = self.request(reqwest::Method::PATCH, path, Some(entitle::core::scim::patch_body(&ops))).await;
        assert!(code == 200 || code == 204, "PATCH {path}: {code} {body}");
    }

    pub async fn group_id(&self, name: &str) -> Option<String> {
        self.all("/Groups").await.iter().find(|g| g["displayName"] == name).and_then(|g| g["id"].as_str().map(str::to_string))
    }

    /// Every user by userName, with the groups they are in.
    pub async fn view(&self) -> std::collections::BTreeMap<String, SeenUser> {
        let groups = self.all("/Groups").await;
        let mut out = std::collections::BTreeMap::new();
        for u in self.all("/Users").await {
            let id = u["id"].as_str().unwrap().to_string();
            let in_groups =
                groups.iter().filter(|g| g["members"].as_array().into_iter().flatten().any(|m| m["value"] == id.as_str())).map(|g| g["displayName"].as_str().unwrap().to_string()).collect();
            let seen = SeenUser {
                id,
                external_id: u["externalId"].as_str().map(str::to_string),
                active: u["active"].as_bool().unwrap_or(true),
                groups: in_groups,
                department: u[entitle::core::scim::ENTERPRISE_SCHEMA]["department"].as_str().map(str::to_string),
            };
            let name = u["userName"].as_str().unwrap().to_string();
            assert!(out.insert(name.clone(), seen).is_none(), "two users named {name}");
        }
        out
    }
}
