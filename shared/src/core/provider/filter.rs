//! SCIM filters (RFC 7644 §3.4.2.2) and attribute paths (§3.5.2), parsed
//! once and evaluated over a resource as Entitle renders it (JSON).
//!
//! The grammar, with `not` binding tighter than `and`, tighter than `or`;
//! operators, `and`/`or`/`not` and attribute names are case-insensitive:
//!
//! ```text
//! FILTER    = attrExp / logExp / valuePath / "not" "(" FILTER ")" / "(" FILTER ")"
//! valuePath = attrPath "[" FILTER "]"
//! attrExp   = attrPath SP "pr" / attrPath SP compareOp SP compValue
//! compValue = false / null / true / number / string
//! compareOp = eq / ne / co / sw / ew / gt / lt / ge / le
//! attrPath  = [URI ":"] ATTRNAME ["." subAttr]
//! ```
//!
//! A comparison on a multi-valued attribute matches when any value does;
//! on a complex attribute without a sub-attribute (`emails eq "a@b"`,
//! `members eq "u1"`) it compares the `value` sub-attribute. Strings
//! compare case-insensitively except for the case-exact attributes
//! (`id`, `externalId`, the `value` of `members` and `groups`, `meta.version`).

use crate::core::rejection::Rejection;
use serde_json::Value;
use std::cmp::Ordering;

/// A filter that cannot be read: SCIM's `invalidFilter`.
pub fn invalid_filter(why: impl Into<String>) -> Rejection {
    Rejection::malformed("invalid_filter", why).with("scimType", "invalidFilter")
}

/// A PATCH path that cannot be read or names nothing: SCIM's `invalidPath`.
pub fn invalid_path(why: impl Into<String>) -> Rejection {
    Rejection::malformed("invalid_path", why).with("scimType", "invalidPath")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Lt,
    Ge,
    Le,
}

impl CompareOp {
    fn parse(word: &str) -> Option<Self> {
        Some(match word.to_ascii_lowercase().as_str() {
            "eq" => CompareOp::Eq,
            "ne" => CompareOp::Ne,
            "co" => CompareOp::Co,
            "sw" => CompareOp::Sw,
            "ew" => CompareOp::Ew,
            "gt" => CompareOp::Gt,
            "lt" => CompareOp::Lt,
            "ge" => CompareOp::Ge,
            "le" => CompareOp::Le,
            _ => return None,
        })
    }
}

/// An attribute path: an optional schema URN, an attribute, an optional
/// sub-attribute. Names are kept as written; lookups ignore case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    pub schema: Option<String>,
    pub attr: String,
    pub sub: Option<String>,
}

impl AttrPath {
    /// Reads `urn:...:attr.sub`, `attr.sub` or `attr`.
    pub fn parse(text: &str) -> Result<Self, Rejection> {
        let text = text.trim();
        let (schema, rest) = split_urn(text);
        let (attr, sub) = match rest.split_once('.') {
            Some((a, s)) => (a, Some(s)),
            None => (rest, None),
        };
        let name_ok = |n: &str| !n.is_empty() && n.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '$') && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$'));
        if !name_ok(attr) || sub.is_some_and(|s| !name_ok(s)) {
            return Err(invalid_path(format!("not an attribute path: {text:?}")));
        }
        Ok(AttrPath { schema: schema.map(str::to_string), attr: attr.to_string(), sub: sub.map(str::to_string) })
    }

    /// The attribute's name as a lowercase key, with its schema when it is
    /// an extension's (`urn:...:user:department`).
    pub fn is(&self, name: &str) -> bool {
        self.attr.eq_ignore_ascii_case(name)
    }

    /// The object holding the attribute in a resource: the resource itself,
    /// or an extension's object (the core schema's URN is the resource).
    pub fn container<'a>(&self, resource: &'a Value) -> Option<&'a Value> {
        match &self.schema {
            Some(urn) if !is_core(urn) => get_ci(resource, urn),
            _ => Some(resource),
        }
    }

    /// The values the path names in a resource (a multi-valued attribute's
    /// values one by one).
    pub fn values<'a>(&self, resource: &'a Value) -> Vec<&'a Value> {
        let found = self.container(resource).and_then(|c| get_ci(c, &self.attr));
        // An extension's attribute named without its URN (`manager`,
        // `department`): looked up in the resource's extensions.
        let found = found.or_else(|| match (&self.schema, resource.as_object()) {
            (None, Some(map)) => map.iter().filter(|(k, _)| k.len() > 4 && k[..4].eq_ignore_ascii_case("urn:")).find_map(|(_, ext)| get_ci(ext, &self.attr)),
            _ => None,
        });
        let Some(top) = found else { return Vec::new() };
        let items: Vec<&Value> = match top {
            Value::Array(a) => a.iter().collect(),
            Value::Null => Vec::new(),
            v => vec![v],
        };
        match &self.sub {
            None => items,
            Some(sub) => items.into_iter().filter_map(|v| get_ci(v, sub)).filter(|v| !v.is_null()).collect(),
        }
    }

    /// Whether values under this path compare exactly (case-sensitively).
    fn case_exact(&self) -> bool {
        let a = self.attr.to_ascii_lowercase();
        let sub = self.sub.as_deref().map(str::to_ascii_lowercase);
        matches!(a.as_str(), "id" | "externalid") || (matches!(a.as_str(), "members" | "groups") && sub.as_deref().is_none_or(|s| s == "value")) || (a == "meta" && sub.as_deref() == Some("version"))
    }
}

/// The core schemas' URNs: an attribute under them is the resource's own.
pub fn is_core(urn: &str) -> bool {
    urn.eq_ignore_ascii_case(super::schemas::USER) || urn.eq_ignore_ascii_case(super::schemas::GROUP)
}

/// Splits `urn:a:b:c:attr.sub` into the URN and `attr.sub` (the last
/// colon-separated part, where the path starts with `urn:`).
pub fn split_urn(text: &str) -> (Option<&str>, &str) {
    if text.len() > 4 && text[..4].eq_ignore_ascii_case("urn:") {
        if let Some(i) = text.rfind(':') {
            return (Some(&text[..i]), &text[i + 1..]);
        }
    }
    (None, text)
}

/// A member of an object by name, ignoring case (SCIM names are case-insensitive).
pub fn get_ci<'a>(object: &'a Value, name: &str) -> Option<&'a Value> {
    let map = object.as_object()?;
    map.get(name).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    /// `attr[filter]`: some value of `attr` matches the inner filter (its
    /// paths relative to that value).
    Has {
        path: AttrPath,
        filter: Box<Filter>,
    },
}

/// The longest filter read (a list query's whole filter).
pub const MAX_FILTER: usize = 4096;

impl Filter {
    pub fn parse(text: &str) -> Result<Self, Rejection> {
        if text.len() > MAX_FILTER {
            return Err(invalid_filter(format!("a filter is at most {MAX_FILTER} characters")));
        }
        let tokens = lex(text)?;
        let mut p = Parser { tokens, at: 0, depth: 0 };
        let f = p.or()?;
        match p.tokens.get(p.at) {
            None => Ok(f),
            Some(t) => Err(invalid_filter(format!("unexpected {} in filter {text:?}", t.describe()))),
        }
    }

    /// Whether a resource (as rendered) matches.
    pub fn matches(&self, resource: &Value) -> bool {
        match self {
            Filter::And(a, b) => a.matches(resource) && b.matches(resource),
            Filter::Or(a, b) => a.matches(resource) || b.matches(resource),
            Filter::Not(f) => !f.matches(resource),
            Filter::Present(path) => present(path, resource),
            Filter::Compare { path, op, value } => {
                let values = compared_values(path, resource);
                match op {
                    // `ne` holds where no value equals (an absent attribute included).
                    CompareOp::Ne => !values.iter().any(|v| compare(v, CompareOp::Eq, value, path.case_exact())),
                    _ => values.iter().any(|v| compare(v, *op, value, path.case_exact())),
                }
            }
            Filter::Has { path, filter } => {
                let values = AttrPath { sub: None, ..path.clone() }.values(resource);
                values.into_iter().any(|v| filter.matches(v))
            }
        }
    }

    /// The value of an `eq` comparison on `attr` (any case) that the whole
    /// filter requires, if it has one at its top (alone, or in an `and`):
    /// what a lookup by key can answer without reading every resource.
    pub fn required_eq(&self, attr: &str) -> Option<&str> {
        match self {
            Filter::Compare { path, op: CompareOp::Eq, value: Value::String(s) } if path.sub.is_none() && path.is(attr) && path.schema.as_deref().is_none_or(is_core) => Some(s),
            Filter::And(a, b) => a.required_eq(attr).or_else(|| b.required_eq(attr)),
            _ => None,
        }
    }

    /// Whether the filter names an attribute (at any depth).
    pub fn mentions(&self, attr: &str) -> bool {
        match self {
            Filter::Compare { path, .. } | Filter::Present(path) => path.is(attr),
            Filter::And(a, b) | Filter::Or(a, b) => a.mentions(attr) || b.mentions(attr),
            Filter::Not(f) => f.mentions(attr),
            Filter::Has { path, filter } => path.is(attr) || filter.mentions(attr),
        }
    }
}

/// The values a comparison looks at: a complex attribute's `value`.
fn compared_values<'a>(path: &AttrPath, resource: &'a Value) -> Vec<&'a Value> {
    path.values(resource).into_iter().filter_map(|v| if v.is_object() && path.sub.is_none() { get_ci(v, "value") } else { Some(v) }).collect()
}

fn present(path: &AttrPath, resource: &Value) -> bool {
    path.values(resource).into_iter().any(|v| match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    })
}

fn compare(have: &Value, op: CompareOp, want: &Value, exact: bool) -> bool {
    match (have, want) {
        (Value::String(h), Value::String(w)) => {
            let (h, w) = if exact { (h.clone(), w.clone()) } else { (h.to_lowercase(), w.to_lowercase()) };
            match op {
                CompareOp::Eq => h == w,
                CompareOp::Ne => h != w,
                CompareOp::Co => h.contains(&w),
                CompareOp::Sw => h.starts_with(&w),
                CompareOp::Ew => h.ends_with(&w),
                CompareOp::Gt => h > w,
                CompareOp::Lt => h < w,
                CompareOp::Ge => h >= w,
                CompareOp::Le => h <= w,
            }
        }
        (Value::Bool(h), Value::Bool(w)) => match op {
            CompareOp::Eq => h == w,
            CompareOp::Ne => h != w,
            _ => false,
        },
        (Value::Number(h), Value::Number(w)) => {
            let ord = h.as_f64().zip(w.as_f64()).and_then(|(a, b)| a.partial_cmp(&b));
            match (op, ord) {
                (CompareOp::Eq, Some(o)) => o == Ordering::Equal,
                (CompareOp::Ne, Some(o)) => o != Ordering::Equal,
                (CompareOp::Gt, Some(o)) => o == Ordering::Greater,
                (CompareOp::Lt, Some(o)) => o == Ordering::Less,
                (CompareOp::Ge, Some(o)) => o != Ordering::Less,
                (CompareOp::Le, Some(o)) => o != Ordering::Greater,
                _ => false,
            }
        }
        // A boolean sent as a string (`"True"`), as some providers do.
        (Value::Bool(h), Value::String(w)) => match (op, w.to_ascii_lowercase().as_str()) {
            (CompareOp::Eq, "true") => *h,
            (CompareOp::Eq, "false") => !*h,
            _ => false,
        },
        (_, Value::Null) => false,
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Open,
    Close,
    LBracket,
    RBracket,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Word(w) => format!("{w:?}"),
            Token::Str(s) => format!("string {s:?}"),
            Token::Open => "'('".into(),
            Token::Close => "')'".into(),
            Token::LBracket => "'['".into(),
            Token::RBracket => "']'".into(),
        }
    }
}

fn lex(text: &str) -> Result<Vec<Token>, Rejection> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' | ')' | '[' | ']' => {
                chars.next();
                out.push(match c {
                    '(' => Token::Open,
                    ')' => Token::Close,
                    '[' => Token::LBracket,
                    _ => Token::RBracket,
                });
            }
            '"' => {
                chars.next();
                let mut raw = String::from("\"");
                let mut closed = false;
                while let Some(c) = chars.next() {
                    raw.push(c);
                    if c == '\\' {
                        if let Some(n) = chars.next() {
                            raw.push(n);
                        }
                    } else if c == '"' {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err(invalid_filter(format!("unterminated string in filter {text:?}")));
                }
                let s: String = serde_json::from_str(&raw).map_err(|_| invalid_filter(format!("bad string {raw} in filter")))?;
                out.push(Token::Str(s));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '"') || (c == '[' || c == ']') {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

/// How deep filters may nest.
const MAX_DEPTH: usize = 32;

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek_word(&self, w: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Word(x)) if x.eq_ignore_ascii_case(w))
    }

    fn or(&mut self) -> Result<Filter, Rejection> {
        let mut left = self.and()?;
        while self.peek_word("or") {
            self.at += 1;
            let right = self.and()?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, Rejection> {
        let mut left = self.unary()?;
        while self.peek_word("and") {
            self.at += 1;
            let right = self.unary()?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn nested(&mut self, close: Token) -> Result<Filter, Rejection> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(invalid_filter(format!("filters nest at most {MAX_DEPTH} deep")));
        }
        let f = self.or()?;
        self.depth -= 1;
        if self.tokens.get(self.at) != Some(&close) {
            return Err(invalid_filter(format!("expected {} in filter", close.describe())));
        }
        self.at += 1;
        Ok(f)
    }

    fn unary(&mut self) -> Result<Filter, Rejection> {
        if self.peek_word("not") && self.tokens.get(self.at + 1) == Some(&Token::Open) {
            self.at += 2;
            return Ok(Filter::Not(Box::new(self.nested(Token::Close)?)));
        }
        match self.tokens.get(self.at).cloned() {
            Some(Token::Open) => {
                self.at += 1;
                self.nested(Token::Close)
            }
            Some(Token::Word(w)) => {
                self.at += 1;
                let path = AttrPath::parse(&w).map_err(|_| invalid_filter(format!("not an attribute path: {w:?}")))?;
                if self.tokens.get(self.at) == Some(&Token::LBracket) {
                    self.at += 1;
                    let inner = self.nested(Token::RBracket)?;
                    // `emails[type eq "work"].value eq "x"` (Microsoft Entra ID's
                    // uniqueness lookup): the sub-attribute's test joins the value filter.
                    if let Some(Token::Word(w)) = self.tokens.get(self.at).cloned() {
                        if let Some(sub) = w.strip_prefix('.') {
                            self.at += 1;
                            let test = self.comparison(AttrPath::parse(sub).map_err(|_| invalid_filter(format!("not a sub-attribute: {w:?}")))?, sub)?;
                            return Ok(Filter::Has { path, filter: Box::new(Filter::And(Box::new(inner), Box::new(test))) });
                        }
                    }
                    return Ok(Filter::Has { path, filter: Box::new(inner) });
                }
                self.comparison(path, &w)
            }
            other => Err(invalid_filter(format!("expected an attribute, got {}", other.map_or("the end".into(), |t| t.describe())))),
        }
    }

    /// The operator and value after an attribute path.
    fn comparison(&mut self, path: AttrPath, w: &str) -> Result<Filter, Rejection> {
        let op = match self.tokens.get(self.at) {
            Some(Token::Word(o)) => o.clone(),
            other => return Err(invalid_filter(format!("expected an operator after {w:?}, got {}", other.map_or("the end".into(), Token::describe)))),
        };
        self.at += 1;
        if op.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let op = CompareOp::parse(&op).ok_or_else(|| invalid_filter(format!("unknown operator {op:?} (eq, ne, co, sw, ew, gt, lt, ge, le, pr)")))?;
        let value = match self.tokens.get(self.at).cloned() {
            Some(Token::Str(s)) => Value::String(s),
            Some(Token::Word(v)) => match v.to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                "null" => Value::Null,
                // An unquoted word is a string, as an older Microsoft
                // Entra ID sample sends it (`externalId eq jyoung`).
                _ => serde_json::from_str::<serde_json::Number>(&v).map_or_else(|_| Value::String(v.clone()), Value::Number),
            },
            other => return Err(invalid_filter(format!("expected a value after {w} {op:?}, got {}", other.map_or("the end".into(), |t| t.describe())))),
        };
        self.at += 1;
        Ok(Filter::Compare { path, op, value })
    }
}

/// A PATCH path: an attribute, optionally narrowed by a value filter, and
/// a sub-attribute of the values it selects (`emails[type eq "work"].value`).
#[derive(Debug, Clone, PartialEq)]
pub struct PatchPath {
    pub attr: AttrPath,
    pub filter: Option<Filter>,
    /// The sub-attribute after a value filter.
    pub sub: Option<String>,
}

impl PatchPath {
    pub fn parse(text: &str) -> Result<Self, Rejection> {
        let text = text.trim();
        match text.find('[') {
            None => Ok(PatchPath { attr: AttrPath::parse(text)?, filter: None, sub: None }),
            Some(open) => {
                let close = text.rfind(']').filter(|&c| c > open).ok_or_else(|| invalid_path(format!("unclosed '[' in path {text:?}")))?;
                let attr = AttrPath::parse(&text[..open])?;
                if attr.sub.is_some() {
                    return Err(invalid_path(format!("a value filter follows an attribute, not a sub-attribute: {text:?}")));
                }
                let filter = Filter::parse(&text[open + 1..close]).map_err(|e| invalid_path(format!("bad value filter in path {text:?}: {}", e.message)))?;
                let rest = &text[close + 1..];
                let sub = match rest.strip_prefix('.') {
                    Some(s) if !s.is_empty() => Some(s.to_string()),
                    None if rest.is_empty() => None,
                    _ => return Err(invalid_path(format!("unexpected {rest:?} after the value filter in {text:?}"))),
                };
                Ok(PatchPath { attr, filter: Some(filter), sub })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> Value {
        json!({
            "id": "u1", "externalId": "ext-1", "userName": "Alice@Example.com", "active": true,
            "displayName": "Alice Liddell",
            "name": {"givenName": "Alice", "familyName": "Liddell"},
            "emails": [{"value": "alice@example.com", "type": "work", "primary": true}, {"value": "a@home.test", "type": "home"}],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "Finance"},
            "meta": {"version": "W/\"3\"", "lastModified": "2026-12-01T10:00:00Z"}
        })
    }

    fn m(f: &str) -> bool {
        Filter::parse(f).unwrap().matches(&user())
    }

    #[test]
    fn the_filters_identity_providers_send() {
        assert!(m(r#"userName eq "alice@example.com""#), "userName compares case-insensitively");
        assert!(m(r#"USERNAME Eq "ALICE@example.com""#), "operators and names too");
        assert!(m(r#"externalId eq "ext-1""#));
        assert!(!m(r#"externalId eq "EXT-1""#), "externalId is case-exact");
        assert!(m(r#"emails[type eq "work" and value co "alice"]"#));
        assert!(m(r#"emails eq "a@home.test""#), "a complex attribute compares its value");
        assert!(m(r#"emails.value sw "alice""#));
        assert!(m(r#"displayName co "lidd" and active eq true"#));
        assert!(m(r#"name.familyName ew "dell" or userName eq "nobody""#));
        assert!(m("title pr or externalId pr"));
        assert!(!m("title pr"));
        assert!(m(r#"not (userName eq "bob@example.com")"#));
        assert!(m(r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "finance""#));
        assert!(m(r#"meta.lastModified gt "2026-11-30T00:00:00Z""#));
        assert!(m(r#"active eq "True""#), "a boolean sent as a string");
        assert!(m(r#"userName ne "bob@example.com""#));
        assert!(!m(r#"title ne "x" and title eq "x""#));
        // Microsoft Entra ID: a uniqueness lookup through a value filter, an unquoted value.
        assert!(m(r#"emails[type eq "work"].value eq "ALICE@example.com""#));
        assert!(!m(r#"emails[type eq "home"].value eq "alice@example.com""#));
        assert!(m("externalId eq ext-1"));
        // An extension's attribute named without its URN.
        assert!(m(r#"department eq "finance""#));
    }

    #[test]
    fn and_binds_tighter_than_or() {
        // a or (b and c), not (a or b) and c.
        assert!(m(r#"userName eq "alice@example.com" or userName eq "x" and active eq false"#));
        assert!(!m(r#"(userName eq "alice@example.com" or userName eq "x") and active eq false"#));
    }

    #[test]
    fn group_membership_filters() {
        let g = json!({"id": "g1", "displayName": "Admins", "members": [{"value": "u1"}, {"value": "u2", "display": "b"}]});
        let f = |s: &str| Filter::parse(s).unwrap().matches(&g);
        assert!(f(r#"members[value eq "u2"]"#));
        assert!(f(r#"members eq "u1""#));
        assert!(!f(r#"members eq "U1""#), "member ids are case-exact");
        assert!(f(r#"id eq "g1" and members[value eq "u1"]"#));
        assert!(f(r#"displayName eq "admins""#));
    }

    #[test]
    fn lookups_by_key_are_found_at_the_top() {
        let f = Filter::parse(r#"userName eq "a@b.c" and active eq true"#).unwrap();
        assert_eq!(f.required_eq("username"), Some("a@b.c"));
        assert_eq!(Filter::parse(r#"userName eq "a" or userName eq "b""#).unwrap().required_eq("userName"), None);
        assert_eq!(Filter::parse(r#"emails[value eq "a"]"#).unwrap().required_eq("emails"), None);
    }

    #[test]
    fn bad_filters_are_named() {
        for bad in ["userName", "userName eq", "userName xx \"a\"", "(userName eq \"a\"", "userName eq \"a", "emails[type eq \"w\"", "and", "userName eq \"a\" )", ""] {
            let e = Filter::parse(bad).unwrap_err();
            assert_eq!(e.details["scimType"], "invalidFilter", "{bad}");
        }
        let deep = format!("{}userName pr{}", "(".repeat(40), ")".repeat(40));
        assert!(Filter::parse(&deep).is_err());
    }

    #[test]
    fn patch_paths() {
        let p = PatchPath::parse(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(p.attr.attr, "emails");
        assert_eq!(p.sub.as_deref(), Some("value"));
        assert!(p.filter.is_some());
        let p = PatchPath::parse("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value").unwrap();
        assert_eq!(p.attr.schema.as_deref(), Some("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"));
        assert_eq!((p.attr.attr.as_str(), p.attr.sub.as_deref()), ("manager", Some("value")));
        let p = PatchPath::parse("name.givenName").unwrap();
        assert_eq!((p.attr.attr.as_str(), p.attr.sub.as_deref()), ("name", Some("givenName")));
        for bad in ["", "emails[type eq \"work\"", "emails[type eq \"work\"]value", "9lives", "a b"] {
            assert!(PatchPath::parse(bad).is_err(), "{bad}");
        }
    }
}
