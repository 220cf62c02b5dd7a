//! The portal's HTTP glue: where it is served from, its cookie, forms, the
//! headers every answer carries, and the vendor's brand.

use entitle::edge::config::ConfigError;
use entitle::edge::http;
use lambda_http::{Body, Request, Response};

/// The session cookie's name.
pub const COOKIE: &str = "entitle_portal";

/// The vendor's product name and accent colour (`PORTAL_PRODUCT_NAME`,
/// `PORTAL_ACCENT` as `#rrggbb`), so that the pages are theirs; the text
/// on the accent is black or white, whichever contrasts more.
#[derive(Debug, Clone)]
pub struct Brand {
    pub product: String,
    pub accent: String,
    pub on_accent: &'static str,
}

impl Brand {
    pub fn from_env() -> Result<Self, ConfigError> {
        let product = std::env::var("PORTAL_PRODUCT_NAME").ok().filter(|p| !p.trim().is_empty()).unwrap_or_else(|| "Entitle".into());
        let accent = std::env::var("PORTAL_ACCENT").ok().filter(|a| !a.is_empty()).unwrap_or_else(|| "#1f4fd1".into());
        Brand::new(product, &accent).ok_or(ConfigError::Invalid { name: "PORTAL_ACCENT", why: format!("{accent:?}: expected a colour as #rrggbb") })
    }

    pub fn new(product: String, accent: &str) -> Option<Self> {
        let hex = accent.strip_prefix('#').filter(|h| h.len() == 6 && h.bytes().all(|b| b.is_ascii_hexdigit()))?;
        let channel = |i: usize| {
            let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).expect("checked hex")) / 255.0;
            if c <= 0.03928 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        // WCAG 2 relative luminance; contrast with white is 1.05 / (L + 0.05), with black (L + 0.05) / 0.05.
        let l = 0.2126 * channel(0) + 0.7152 * channel(2) + 0.0722 * channel(4);
        let on_accent = if 1.05 / (l + 0.05) >= (l + 0.05) / 0.05 { "#ffffff" } else { "#000000" };
        Some(Brand { product: product.trim().to_string(), accent: format!("#{}", hex.to_ascii_lowercase()), on_accent })
    }
}

/// Where this request was served, for the URLs of its page: relative to
/// the request's own path (`../../`), so that they hold behind a function
/// URL (the portal at `/`) and locally (behind `/lambda-url/portal`, a
/// prefix the function never sees); and whether over HTTPS.
#[derive(Debug, Clone)]
pub struct Site {
    pub up: String,
    pub secure: bool,
}

impl Site {
    pub fn of(req: &Request, path: &str) -> Self {
        let depth = http::segments(path).len().saturating_sub(if path.ends_with('/') { 0 } else { 1 });
        let secure = http::header(req, "x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https")) || req.uri().scheme_str() == Some("https");
        Site { up: "../".repeat(depth), secure }
    }

    /// A path of the portal (`/tenants/...`) as this page must link to it.
    pub fn url(&self, path: &str) -> String {
        let path = path.trim_start_matches('/');
        if self.up.is_empty() {
            format!("./{path}")
        } else {
            format!("{}{path}", self.up)
        }
    }

    pub fn cookie(&self, value: &str) -> String {
        format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict{}", if self.secure { "; Secure" } else { "" })
    }

    pub fn clear_cookie(&self) -> String {
        format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}", if self.secure { "; Secure" } else { "" })
    }
}

/// The session cookie's value, if the request carries one.
pub fn cookie(req: &Request) -> Option<String> {
    req.headers().get_all("cookie").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| c.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')).map(str::to_string))
}

/// A form's fields (`application/x-www-form-urlencoded`).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn of(req: &Request) -> Result<Self, entitle::core::rejection::Rejection> {
        let body = http::body(req)?;
        Ok(Form(url::form_urlencoded::parse(body).into_owned().collect()))
    }
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }
}

/// The policy of every page: nothing inline, nothing from elsewhere, no
/// framing, forms to the portal only.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn secured(builder: lambda_http::http::response::Builder) -> lambda_http::http::response::Builder {
    builder
        .header("content-security-policy", CSP)
        .header("x-content-type-options", "nosniff")
        .header("x-frame-options", "DENY")
        // A link's token is in its URL: never sent on as a referrer.
        .header("referrer-policy", "no-referrer")
        .header("cache-control", "no-store")
}

pub fn html(status: u16, page: maud::Markup) -> Response<Body> {
    secured(Response::builder().status(status).header("content-type", "text/html; charset=utf-8")).body(Body::Text(page.into_string())).expect("valid status and headers")
}

/// A file to save (an audit export).
pub fn download(content_type: &str, file_name: &str, text: String) -> Response<Body> {
    secured(Response::builder().status(200).header("content-type", content_type))
        .header("content-disposition", format!("attachment; filename=\"{file_name}\""))
        .body(Body::Text(text))
        .expect("valid status and headers")
}

/// 303 See Other: the browser GETs `location` (after a form's POST).
pub fn see_other(location: &str, cookie: Option<&str>) -> Response<Body> {
    let mut b = secured(Response::builder().status(303).header("location", location));
    if let Some(c) = cookie {
        b = b.header("set-cookie", c);
    }
    b.body(Body::Empty).expect("valid status and headers")
}

pub fn asset(content_type: &str, text: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-type", content_type)
        .header("x-content-type-options", "nosniff")
        .header("cache-control", "public, max-age=300")
        .body(Body::Text(text.into()))
        .expect("valid status and headers")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_to_the_page_so_that_they_hold_behind_any_prefix() {
        let req = Request::default();
        assert_eq!(Site::of(&req, "/tenants/acme/seats").url("/tenants/acme/audit"), "../../tenants/acme/audit");
        assert_eq!(Site::of(&req, "/tenants/acme/directory/d1/rotate").url("/assets/portal.css"), "../../../../assets/portal.css");
        assert_eq!(Site::of(&req, "/links/abc").url("/links/abc"), "../links/abc");
        assert_eq!(Site::of(&req, "/").url("/assets/portal.css"), "./assets/portal.css");
        assert!(!Site::of(&req, "/").secure);
    }

    #[test]
    fn the_text_on_the_accent_is_whichever_contrasts_more() {
        assert_eq!(Brand::new("Acme".into(), "#1f4fd1").unwrap().on_accent, "#ffffff");
        assert_eq!(Brand::new("Acme".into(), "#ffd400").unwrap().on_accent, "#000000");
        assert_eq!(Brand::new("Acme".into(), "#FFFFFF").unwrap().accent, "#ffffff");
        assert!(Brand::new("Acme".into(), "red").is_none());
        assert!(Brand::new("Acme".into(), "#12345").is_none());
        assert!(Brand::new("Acme".into(), "#1234567").is_none());
        assert!(Brand::new("Acme".into(), "#12345g").is_none());
    }
}
