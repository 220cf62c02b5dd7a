//! The licensing model: tiers, entitlements, add-ons, billing mappings, role
//! rules, expiry and review policy. Loaded once at start from TOML and
//! validated, so that the rest of the code can rely on every name it holds.

use crate::core::ids::ModelVersion;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The model shipped with the product (`infra/licensing-model.toml`).
pub const DEFAULT_MODEL_TOML: &str = include_str!("../../../infra/licensing-model.toml");

/// One entitlement value: a feature flag or a numeric limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Entitlement {
    Flag(bool),
    Limit(u64),
}

impl Entitlement {
    /// Uniting two grants of the same entitlement: flags OR, limits max.
    pub fn unite(self, other: Entitlement) -> Entitlement {
        match (self, other) {
            (Entitlement::Flag(a), Entitlement::Flag(b)) => Entitlement::Flag(a || b),
            (Entitlement::Limit(a), Entitlement::Limit(b)) => Entitlement::Limit(a.max(b)),
            // Validation forbids mixing kinds; keep the richer grant if it happens.
            (a, _) => a,
        }
    }
}

pub type Entitlements = BTreeMap<String, Entitlement>;

// Every rule type serialises to its canonical form (`LicensingModel::fingerprint`):
// a field at its default is left out, so that a rule written out at its
// default, or a new optional field added at its default, keeps the fingerprint.

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    pub name: String,
    /// Upper bound on seats at this tier, whatever the licenses say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_seats: Option<u32>,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub allows_addons: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entitlements: Entitlements,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Addon {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entitlements: Entitlements,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceMapping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addon: Option<String>,
}

/// Stripe prices -> a tier or an add-on. Real accounts name a price three
/// ways, so each has its table: a price's `lookup_key` (`prices`), its id
/// (`price_ids`; a legacy plan's id too) and its product's id (`products`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StripeMapping {
    /// By the price's `lookup_key`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, PriceMapping>,
    /// By the price's (or plan's) id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub price_ids: BTreeMap<String, PriceMapping>,
    /// By the id of the price's (or plan's) product.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub products: BTreeMap<String, PriceMapping>,
}

/// How one subscription item names what it sells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PriceRef<'a> {
    pub lookup_key: Option<&'a str>,
    pub price_id: Option<&'a str>,
    pub product_id: Option<&'a str>,
}

impl StripeMapping {
    /// The mapping of a price: by lookup key first, then price id, then
    /// product id (the most specific name wins).
    pub fn find(&self, price: &PriceRef<'_>) -> Option<&PriceMapping> {
        fn by<'m>(table: &'m BTreeMap<String, PriceMapping>, key: Option<&str>) -> Option<&'m PriceMapping> {
            key.and_then(|k| table.get(k))
        }
        by(&self.prices, price.lookup_key).or_else(|| by(&self.price_ids, price.price_id)).or_else(|| by(&self.products, price.product_id))
    }

    fn tables(&self) -> [(&'static str, &BTreeMap<String, PriceMapping>); 3] {
        [("prices", &self.prices), ("price_ids", &self.price_ids), ("products", &self.products)]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeMatch {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRule {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<AttributeMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tier: Option<String>,
    pub roles: Vec<String>,
    /// When this rule fires, the default roles are not granted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub replace_defaults: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndAction {
    Downgrade,
    Suspend,
    Revoke,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OnEnd {
    pub action: EndAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expiry {
    pub grace_days: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notice_days: Vec<u32>,
    /// Keyed by license source: `stripe`, `crm`, `contract`.
    pub on_end: BTreeMap<String, OnEnd>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Review {
    pub max_seat_reduction_percent: u32,
    pub seat_reduction_below_usage: bool,
    pub privileged_role_removal: bool,
    pub tier_downgrade: bool,
    /// Four eyes: an amendment held for review is approved by someone other
    /// than who submitted it (403 `same_submitter` otherwise).
    #[serde(default, skip_serializing_if = "is_false")]
    pub four_eyes: bool,
}

/// What a push from a tenant's identity provider (the SCIM directory)
/// does when no seat is free.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The user is created and waits for a seat (`pending_seat`), as an
    /// account the app creates does.
    #[default]
    Wait,
    /// The push is refused with a SCIM error naming the cap; nothing is
    /// stored; `tenant.seat_limit_reached` is announced.
    Refuse,
}

/// How users pushed by identity providers become members.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryRules {
    /// The default of every directory connection (each may set its own).
    #[serde(default, skip_serializing_if = "is_default")]
    pub when_full: WhenFull,
    /// Member attributes (what `role_rules` match) taken from a pushed
    /// User: attribute name -> SCIM attribute path (`userType`,
    /// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department`).
    /// Values are taken lowercase.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// A member token's lifetime when the model names none: 15 minutes.
pub const DEFAULT_MEMBER_TOKEN_SECONDS: u64 = 15 * 60;

/// Signed member tokens (`GET .../members/{user}/token`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRules {
    /// How long a member token is valid: the bound on a revoked member's
    /// access in an app that checks tokens offline.
    #[serde(default = "member_seconds", skip_serializing_if = "is_default_member_seconds")]
    pub member_seconds: u64,
}

fn is_default_member_seconds(s: &u64) -> bool {
    *s == DEFAULT_MEMBER_TOKEN_SECONDS
}

fn member_seconds() -> u64 {
    DEFAULT_MEMBER_TOKEN_SECONDS
}

impl Default for TokenRules {
    fn default() -> Self {
        TokenRules { member_seconds: member_seconds() }
    }
}

/// What a deploy of a model does to the tenants that exist (`[rollout]`).
/// Not a rule of any tenant's access: it is left out of the fingerprint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RolloutRule {
    #[serde(default)]
    pub existing: Existing,
    #[serde(default)]
    pub at: MoveAt,
}

/// `[rollout] existing`: every existing tenant is brought to the new
/// version (`migrate`, an automatic rollout), or keeps the one it follows
/// until a rollout or a pin moves it (`grandfather`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Existing {
    #[default]
    Migrate,
    Grandfather,
}

/// When a tenant moves: at once, or at the end of its current billing
/// period (Stripe's current period, a CRM record's or a contract's term);
/// a tenant with none moves at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveAt {
    #[default]
    Now,
    PeriodEnd,
}

impl MoveAt {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveAt::Now => "now",
            MoveAt::PeriodEnd => "period_end",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LicensingModel {
    /// Names this set of rules for ever (registered with its fingerprint:
    /// another set of rules under the same version is refused).
    #[serde(skip_serializing)]
    pub version: ModelVersion,
    pub roles: Vec<String>,
    pub privileged_roles: Vec<String>,
    pub default_roles: Vec<String>,
    pub tiers: Vec<Tier>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addons: BTreeMap<String, Addon>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub stripe: StripeMapping,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub role_rules: Vec<RoleRule>,
    pub expiry: Expiry,
    pub review: Review,
    #[serde(default, skip_serializing_if = "is_default")]
    pub directory: DirectoryRules,
    #[serde(default, skip_serializing_if = "is_default")]
    pub tokens: TokenRules,
    #[serde(default, skip_serializing)]
    pub rollout: RolloutRule,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("licensing model {origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("licensing model {origin}: {}", problems.join("; "))]
    Invalid { origin: String, problems: Vec<String> },
    #[error("licensing model {origin}: cannot read: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
}

pub const SOURCES: [&str; 3] = ["stripe", "crm", "contract"];

/// The deployed model's text and where it comes from: `ENTITLE_MODEL_PATH`
/// if set, else the one embedded at build time.
fn deployed_text() -> Result<(String, String), ModelError> {
    match std::env::var("ENTITLE_MODEL_PATH") {
        Ok(path) if !path.is_empty() => {
            let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Read { origin: path.clone(), source })?;
            Ok((text, path))
        }
        _ => Ok((DEFAULT_MODEL_TOML.to_string(), "infra/licensing-model.toml".to_string())),
    }
}

/// The deployed model's text (what is registered under its version).
pub fn text_from_env() -> Result<String, ModelError> {
    Ok(deployed_text()?.0)
}

/// JSON with every object's keys in order, whatever the map type: the
/// canonical text a fingerprint is taken of.
pub fn canonical_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let fields: Vec<String> = keys.into_iter().map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&map[k]))).collect();
            format!("{{{}}}", fields.join(","))
        }
        Value::Array(items) => format!("[{}]", items.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

impl LicensingModel {
    /// The rules in their canonical form: the parsed model as JSON, keys
    /// in order, every field at its default left out, without its
    /// `version` and `[rollout]` (which say what the rules are called and
    /// what a deploy does, not what they are).
    pub fn canonical(&self) -> String {
        canonical_json(&serde_json::to_value(self).expect("a model serialises"))
    }

    /// A fingerprint of the rules (SHA-256 of [`Self::canonical`]): the same
    /// rules give the same fingerprint, whatever the file's layout, comments
    /// or defaults written out, and whatever code reads them.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.canonical().as_bytes()))
    }

    /// Parses and validates a model. `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ModelError> {
        let model: LicensingModel = toml::from_str(text).map_err(|e| ModelError::Syntax { origin: origin.to_string(), message: e.to_string().trim_end().replace('\n', " | ") })?;
        let problems = model.problems();
        if problems.is_empty() {
            Ok(model)
        } else {
            Err(ModelError::Invalid { origin: origin.to_string(), problems })
        }
    }

    /// The model this process runs with: `ENTITLE_MODEL_PATH` if set, else the
    /// one embedded at build time.
    pub fn load_from_env() -> Result<Self, ModelError> {
        let (text, origin) = deployed_text()?;
        Self::from_toml(&text, &origin)
    }

    pub fn default_model() -> Self {
        Self::from_toml(DEFAULT_MODEL_TOML, "infra/licensing-model.toml").expect("the shipped licensing model is validated by its unit test")
    }

    /// Every semantic problem, each naming the field it is about.
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let roles: BTreeSet<&str> = self.roles.iter().map(String::as_str).collect();
        let tiers: BTreeSet<&str> = self.tiers.iter().map(|t| t.name.as_str()).collect();
        if self.tiers.is_empty() {
            p.push("tiers: at least one tier is required".into());
        }
        if tiers.len() != self.tiers.len() {
            p.push("tiers: tier names must be unique".into());
        }
        for (field, list) in [("privileged_roles", &self.privileged_roles), ("default_roles", &self.default_roles)] {
            for (i, r) in list.iter().enumerate() {
                if !roles.contains(r.as_str()) {
                    p.push(format!("{field}[{i}]: unknown role {r:?}"));
                }
            }
        }
        // One entitlement name, one kind (flag or limit), across tiers and add-ons.
        let mut kinds: BTreeMap<String, (bool, String)> = BTreeMap::new();
        let mut check_kind = |name: &str, e: &Entitlement, at: String, p: &mut Vec<String>| {
            let is_flag = matches!(e, Entitlement::Flag(_));
            match kinds.get(name) {
                Some((k, first)) if *k != is_flag => {
                    p.push(format!("{at}: entitlement {name:?} is a {} here but a {} at {first}", if is_flag { "flag" } else { "limit" }, if *k { "flag" } else { "limit" }))
                }
                Some(_) => {}
                None => {
                    kinds.insert(name.to_string(), (is_flag, at));
                }
            }
        };
        for (i, t) in self.tiers.iter().enumerate() {
            for (name, e) in &t.entitlements {
                check_kind(name, e, format!("tiers[{i}].entitlements.{name}"), &mut p);
            }
        }
        for (a, addon) in &self.addons {
            for (name, e) in &addon.entitlements {
                check_kind(name, e, format!("addons.{a}.entitlements.{name}"), &mut p);
            }
        }
        for (table, mappings) in self.stripe.tables() {
            for (key, m) in mappings {
                match (&m.tier, &m.addon) {
                    (Some(t), None) if !tiers.contains(t.as_str()) => p.push(format!("stripe.{table}.{key}.tier: unknown tier {t:?}")),
                    (None, Some(a)) if !self.addons.contains_key(a) => p.push(format!("stripe.{table}.{key}.addon: unknown add-on {a:?}")),
                    (Some(_), Some(_)) | (None, None) => p.push(format!("stripe.{table}.{key}: exactly one of `tier` or `addon` is required")),
                    _ => {}
                }
            }
        }
        for (i, r) in self.role_rules.iter().enumerate() {
            if r.group.is_none() == r.attribute.is_none() {
                p.push(format!("role_rules[{i}] ({}): exactly one of `group` or `attribute` is required", r.name));
            }
            if let Some(t) = &r.min_tier {
                if !tiers.contains(t.as_str()) {
                    p.push(format!("role_rules[{i}].min_tier: unknown tier {t:?}"));
                }
            }
            for (j, role) in r.roles.iter().enumerate() {
                if !roles.contains(role.as_str()) {
                    p.push(format!("role_rules[{i}].roles[{j}]: unknown role {role:?}"));
                }
            }
        }
        for source in SOURCES {
            match self.expiry.on_end.get(source) {
                None => p.push(format!("expiry.on_end.{source}: missing (every license source needs an end action)")),
                Some(OnEnd { action: EndAction::Downgrade, tier }) => match tier {
                    None => p.push(format!("expiry.on_end.{source}.tier: `downgrade` needs a tier")),
                    Some(t) if !tiers.contains(t.as_str()) => p.push(format!("expiry.on_end.{source}.tier: unknown tier {t:?}")),
                    _ => {}
                },
                Some(_) => {}
            }
        }
        for key in self.expiry.on_end.keys() {
            if !SOURCES.contains(&key.as_str()) {
                p.push(format!("expiry.on_end.{key}: unknown license source (known: stripe, crm, contract)"));
            }
        }
        if self.review.max_seat_reduction_percent > 100 {
            p.push("review.max_seat_reduction_percent: must be between 0 and 100".into());
        }
        if !(60..=86_400).contains(&self.tokens.member_seconds) {
            p.push("tokens.member_seconds: 60 to 86400 (a revoked member keeps a token this long)".into());
        }
        for (name, path) in &self.directory.attributes {
            if name.is_empty() || name.len() > 128 {
                p.push(format!("directory.attributes.{name}: a name of 1 to 128 characters"));
            }
            if let Err(e) = crate::core::provider::filter::AttrPath::parse(path) {
                p.push(format!("directory.attributes.{name}: {}", e.message));
            }
        }
        p
    }

    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.name == name)
    }

    /// Position of a tier, lowest first.
    pub fn tier_rank(&self, name: &str) -> Option<usize> {
        self.tiers.iter().position(|t| t.name == name)
    }

    pub fn is_privileged(&self, role: &str) -> bool {
        self.privileged_roles.iter().any(|r| r == role)
    }

    pub fn on_end(&self, source: &str) -> &OnEnd {
        // Validation guarantees every source has an entry.
        &self.expiry.on_end[source]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_model_is_valid() {
        let m = LicensingModel::from_toml(DEFAULT_MODEL_TOML, "shipped").unwrap();
        assert_eq!(m.tiers.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), ["free", "team", "business", "enterprise"]);
        assert_eq!(m.stripe.prices["team_monthly"].tier.as_deref(), Some("team"));
        assert_eq!(m.stripe.prices["sso_addon"].addon.as_deref(), Some("sso"));
        assert_eq!(m.on_end("contract").action, EndAction::Suspend);
        assert_eq!(m.expiry.grace_days, 7);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let bad = DEFAULT_MODEL_TOML.replacen("grace_days = 7", "grace_days = \"seven\"", 1);
        let err = LicensingModel::from_toml(&bad, "m.toml").unwrap_err().to_string();
        assert!(err.contains("m.toml"), "{err}");
        assert!(err.contains("line"), "{err}");
        assert!(err.contains("grace_days"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let bad = DEFAULT_MODEL_TOML.replacen("max_seats = 1", "max_seat = 1", 1);
        let err = LicensingModel::from_toml(&bad, "m.toml").unwrap_err().to_string();
        assert!(err.contains("max_seat"), "{err}");
    }

    #[test]
    fn semantic_errors_name_every_bad_field() {
        let bad = DEFAULT_MODEL_TOML
            .replacen("roles = [\"billing-admin\"]", "roles = [\"superuser\"]", 1)
            .replacen("team_monthly = { tier = \"team\" }", "team_monthly = { tier = \"gold\" }", 1)
            .replacen("contract = { action = \"suspend\" }", "contract = { action = \"downgrade\" }", 1);
        let err = LicensingModel::from_toml(&bad, "m.toml").unwrap_err().to_string();
        assert!(err.contains("role_rules[2].roles[0]: unknown role \"superuser\""), "{err}");
        assert!(err.contains("stripe.prices.team_monthly.tier: unknown tier \"gold\""), "{err}");
        assert!(err.contains("expiry.on_end.contract.tier"), "{err}");
    }

    #[test]
    fn mixed_entitlement_kinds_are_rejected() {
        let bad = DEFAULT_MODEL_TOML.replacen("entitlements = { sso = true }", "entitlements = { sso = 5 }", 1);
        let err = LicensingModel::from_toml(&bad, "m.toml").unwrap_err().to_string();
        assert!(err.contains("addons.sso.entitlements.sso"), "{err}");
    }

    #[test]
    fn the_fingerprint_is_of_the_rules_not_of_the_file() {
        let shipped = LicensingModel::from_toml(DEFAULT_MODEL_TOML, "shipped").unwrap();
        // Comments, layout and defaults written out keep it; so do the
        // version and the rollout rule, which are not rules of access.
        let same = DEFAULT_MODEL_TOML
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
            // Defaults written out.
            .replacen("name = \"team\"", "name = \"team\"\nallows_addons = true", 1)
            .replacen("roles = [\"admin\"]", "roles = [\"admin\"]\nreplace_defaults = false", 1)
            .replacen("[stripe.price_ids]", "[stripe.products]\n\n[stripe.price_ids]", 1)
            // The name and the rollout rule say nothing of the rules.
            .replacen("version = \"2026-11-01\"", "version = \"renamed\"", 1)
            .replacen("existing = \"migrate\"\nat = \"now\"", "existing = \"grandfather\"\nat = \"period_end\"", 1);
        let same = LicensingModel::from_toml(&same, "same").unwrap();
        assert_eq!(same.rollout, RolloutRule { existing: Existing::Grandfather, at: MoveAt::PeriodEnd });
        assert_eq!(same.fingerprint(), shipped.fingerprint());
        // Optional rules left out are their defaults: the same rules.
        let without_defaults =
            DEFAULT_MODEL_TOML.replacen("[tokens]\nmember_seconds = 900", "", 1).replacen("when_full = \"wait\"", "", 1).replacen("[rollout]\nexisting = \"migrate\"\nat = \"now\"", "", 1);
        assert_ne!(without_defaults, DEFAULT_MODEL_TOML);
        assert_eq!(LicensingModel::from_toml(&without_defaults, "w").unwrap().fingerprint(), shipped.fingerprint());
        // The canonical form names no default and no version.
        let canonical = shipped.canonical();
        assert!(!canonical.contains("member_seconds") && !canonical.contains("2026-11-01") && !canonical.contains("allows_addons\":true"), "{canonical}");
        // Any rule changed is another fingerprint.
        for (from, to) in [
            ("projects = 50", "projects = 75"),
            ("grace_days = 7", "grace_days = 8"),
            ("min_tier = \"business\"", "min_tier = \"team\""),
            ("member_seconds = 900", "member_seconds = 600"),
            ("sso_addon = { addon = \"sso\" }\nextra", "sso_addon = { addon = \"extra_projects\" }\nextra"),
            ("max_seats = 1", "max_seats = 2"),
        ] {
            let changed = DEFAULT_MODEL_TOML.replacen(from, to, 1);
            assert_ne!(changed, DEFAULT_MODEL_TOML, "{from} is in the shipped model");
            assert_ne!(LicensingModel::from_toml(&changed, "c").unwrap().fingerprint(), shipped.fingerprint(), "{from} -> {to}");
        }
    }

    #[test]
    fn a_version_is_required_and_well_formed() {
        let without = DEFAULT_MODEL_TOML.replacen("version = \"2026-11-01\"", "", 1);
        assert!(LicensingModel::from_toml(&without, "m").unwrap_err().to_string().contains("version"));
        let bad = DEFAULT_MODEL_TOML.replacen("version = \"2026-11-01\"", "version = \"a b\"", 1);
        assert!(LicensingModel::from_toml(&bad, "m").unwrap_err().to_string().contains("version"));
    }

    #[test]
    fn canonical_json_orders_keys_at_every_depth() {
        let v = serde_json::json!({"b": [{"z": 1, "a": 2}], "a": {"y": true, "x": null}});
        assert_eq!(canonical_json(&v), r#"{"a":{"x":null,"y":true},"b":[{"a":2,"z":1}]}"#);
    }

    #[test]
    fn unite_ors_flags_and_maxes_limits() {
        use Entitlement::*;
        assert_eq!(Flag(false).unite(Flag(true)), Flag(true));
        assert_eq!(Limit(3).unite(Limit(50)), Limit(50));
        assert_eq!(Limit(50).unite(Limit(3)), Limit(50));
    }
}
