//! The portal's pages: maud templates, checked when the function is
//! compiled; every value is escaped unless marked otherwise (nothing here
//! is), so a group or attribute named `<script>` is shown as text.

use crate::handler::Ctx;
use crate::web::{Brand, Site};
use entitle::app::portal::Live;
use entitle::core::audit::{AuditRecord, Verification};
use entitle::core::portal::Link;
use entitle::core::rejection::Rejection;
use entitle::core::scim::TargetView;
use entitle::core::tenant::MemberItem;
use entitle::core::views::{MemberView, TenantView};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

/// What every page is framed with: the vendor's brand, where it is
/// served, and the session (none on the link's pages).
pub struct Shell<'a> {
    pub brand: &'a Brand,
    pub site: &'a Site,
    pub live: Option<&'a Live>,
}

/// What a form did, shown on the page it redirects to (`?notice=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    SeatGiven,
    SeatReleased,
    SeatHanded,
    Connected,
    Rotated,
    Revoked,
    RepairQueued,
}

impl Notice {
    const ALL: [Notice; 7] = [Notice::SeatGiven, Notice::SeatReleased, Notice::SeatHanded, Notice::Connected, Notice::Rotated, Notice::Revoked, Notice::RepairQueued];
    pub fn code(self) -> &'static str {
        match self {
            Notice::SeatGiven => "seat-given",
            Notice::SeatReleased => "seat-released",
            Notice::SeatHanded => "seat-handed",
            Notice::Connected => "connected",
            Notice::Rotated => "rotated",
            Notice::Revoked => "revoked",
            Notice::RepairQueued => "repair-queued",
        }
    }
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.code() == code)
    }
    fn text(self) -> &'static str {
        match self {
            Notice::SeatGiven => "The seat was given. It is kept for that member until you release it.",
            Notice::SeatReleased => "The seat was released. It goes to the first member in line.",
            Notice::SeatHanded => "The seat was handed on. Its former holder joins the line.",
            Notice::Connected => "The connection was made.",
            Notice::Rotated => "The token was rotated.",
            Notice::Revoked => "The connection was revoked: its tokens are refused from now on. The users and groups it pushed stay.",
            Notice::RepairQueued => "A drift repair was queued. Its outcome shows here and in the audit trail.",
        }
    }
}

/// The vendor's accent as CSS (served as `/assets/theme.css`: no inline style).
pub fn theme(brand: &Brand) -> String {
    format!(":root {{ --accent: {}; --on-accent: {}; }}\n", brand.accent, brand.on_accent)
}

const PAGES: [(&str, &str); 6] = [("overview", "Overview"), ("seats", "Seats"), ("members", "Members"), ("directory", "Directory"), ("targets", "Targets"), ("audit", "Audit")];

fn layout(shell: &Shell, title: &str, current: Option<&str>, body: Markup) -> Markup {
    let asset = |name: &str| shell.site.url(&format!("/assets/{name}"));
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                title { (title) " · " (shell.brand.product) " admin" }
                link rel="stylesheet" href=(asset("portal.css"));
                link rel="stylesheet" href=(asset("theme.css"));
                script src=(asset("portal.js")) defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.bar {
                    span.product { (shell.brand.product) " admin" }
                    @if let Some(live) = shell.live {
                        span.who { "Tenant " strong { (live.session.tenant) } " · signed in as " strong { (live.session.admin) } }
                        form.signout method="post" action=(shell.site.url("/signout")) {
                            input type="hidden" name="csrf" value=(live.session.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                @if let (Some(live), Some(current)) = (shell.live, current) {
                    nav aria-label="Sections" {
                        ul {
                            @for (page, label) in PAGES {
                                li {
                                    @if page == current {
                                        a href=(shell.site.url(&format!("/tenants/{}/{page}", live.session.tenant))) aria-current="page" { (label) }
                                    } @else {
                                        a href=(shell.site.url(&format!("/tenants/{}/{page}", live.session.tenant))) { (label) }
                                    }
                                }
                            }
                        }
                    }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

pub fn message(shell: &Shell, title: &str, text: &str) -> Markup {
    layout(shell, title, None, html! { p { (text) } })
}

/// A link's page: what it opens, and the one button that spends it.
pub fn landing(shell: &Shell, token: &str, link: &Link) -> Markup {
    let expires = chrono::DateTime::from_timestamp(link.expires_at, 0).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)).unwrap_or_default();
    layout(
        shell,
        "Open the admin portal",
        None,
        html! {
            p { "This link opens the admin portal of tenant " strong { (link.tenant) } " for " strong { (link.admin) } ". It opens once, and is valid until " (when(&expires)) "." }
            form method="post" action=(shell.site.url(&format!("/links/{token}"))) {
                button.primary type="submit" { "Open the portal" }
            }
        },
    )
}

/// An instant in UTC: the page's script shows it in the admin's time zone,
/// with UTC on hover.
fn when(rfc3339: &str) -> Markup {
    let shown = chrono::DateTime::parse_from_rfc3339(rfc3339).map(|t| t.with_timezone(&chrono::Utc).format("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_else(|_| rfc3339.to_string());
    html! { time datetime=(rfc3339) title=(shown) { (shown) } }
}

fn csrf(ctx: &Ctx) -> Markup {
    html! { input type="hidden" name="csrf" value=(ctx.live.session.csrf); }
}

fn notice_box(notice: Option<Notice>) -> Markup {
    html! { @if let Some(n) = notice { p.notice role="status" { (n.text()) } } }
}

fn refusal_box(r: Option<&Rejection>) -> Markup {
    html! { @if let Some(r) = r { p.refusal role="alert" { strong { "Not done: " } (r.message) } } }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn status_text(v: impl serde::Serialize) -> String {
    serde_json::to_value(v).map(|v| text(&v)).unwrap_or_default().replace('_', " ")
}

pub fn overview(ctx: &Ctx, view: Option<&TenantView>, targets: &[TargetView], reviews: usize) -> Markup {
    layout(
        &ctx.shell(),
        "Overview",
        Some("overview"),
        html! {
            @match view {
                None => p { "No license has been applied to this tenant yet." },
                Some(v) => {
                    dl.facts {
                        div { dt { "Tier" } dd { (v.tier) } }
                        div { dt { "Status" } dd { (status_text(v.status)) } }
                        div { dt { "Seats used" } dd { (v.seats.used) " of " (v.seats.total) } }
                        div { dt { "Waiting for a seat" } dd { (v.seats_pending) } }
                        div { dt { "Expires" } dd { @match &v.expires_at { Some(e) => (when(e)), None => "never" } } }
                        div { dt { "Contract changes waiting for review" } dd { (reviews) } }
                        @if !v.add_ons.is_empty() { div { dt { "Add-ons" } dd { (v.add_ons.iter().cloned().collect::<Vec<_>>().join(", ")) } } }
                    }
                }
            }
            h2 { "SCIM targets" }
            @if targets.is_empty() {
                p { "No SCIM target is configured." }
            } @else {
                ul.plain {
                    @for t in targets {
                        li { strong { (t.target_id) } " — " (status_text(t.status)) ", " (t.pending) " change(s) waiting" }
                    }
                }
            }
        },
    )
}

fn member_rows(ctx: &Ctx, list: &[MemberView], holders: bool) -> Markup {
    html! {
        @for m in list {
            tr {
                th scope="row" { (m.user_id) }
                td {
                    @if let Some(since) = m.seat.as_ref().and_then(|s| s.since.as_ref()) { (when(since)) } @else { "—" }
                }
                td {
                    @match m.seat.as_ref().and_then(|s| s.pin.as_ref()) {
                        Some(p) if p.hold => { "Given by " (p.by) " " (when(&p.at)) }
                        Some(p) => { "Released by " (p.by) " " (when(&p.at)) }
                        None => "—",
                    }
                }
                td {
                    form.inline method="post" action=(ctx.page_url("seats")) {
                        (csrf(ctx))
                        input type="hidden" name="user" value=(m.user_id);
                        @if holders {
                            input type="hidden" name="action" value="release";
                            button type="submit" aria-label=(format!("Release the seat of {}", m.user_id)) { "Release" }
                        } @else {
                            input type="hidden" name="action" value="give";
                            button type="submit" aria-label=(format!("Give a seat to {}", m.user_id)) { "Give a seat" }
                        }
                    }
                }
            }
        }
    }
}

/// Where each list of the seats page starts, and where its next page would.
pub struct SeatPages {
    pub holders_after: Option<String>,
    pub line_after: Option<String>,
    pub holders_next: Option<String>,
    pub line_next: Option<String>,
}

fn seats_url(ctx: &Ctx, holders_after: Option<&str>, line_after: Option<&str>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(h) = holders_after {
        query.append_pair("holders_after", h);
    }
    if let Some(l) = line_after {
        query.append_pair("line_after", l);
    }
    format!("{}?{}", ctx.page_url("seats"), query.finish())
}

/// One list of the seat order (`id`: holders or line), a page of it, and
/// the links to the others.
fn seat_table(ctx: &Ctx, id: &str, columns: [&str; 2], list: &[MemberView], paging: Markup) -> Markup {
    html! {
        div.table role="region" aria-labelledby=(id) tabindex="0" {
            table {
                thead { tr { th scope="col" { (columns[0]) } th scope="col" { (columns[1]) } th scope="col" { "Pinned" } th scope="col" { "Action" } } }
                tbody { (member_rows(ctx, list, id == "holders")) }
            }
        }
        p.more { (paging) }
    }
}

pub fn seats(ctx: &Ctx, holders: &[MemberView], line: &[MemberView], pages: &SeatPages, notice: Option<&Result<Notice, Rejection>>) -> Markup {
    let meta = &ctx.live.meta;
    let total = meta.access.as_ref().map(|a| a.seats_total).unwrap_or(0);
    layout(
        &ctx.shell(),
        "Seats",
        Some("seats"),
        html! {
            @match notice {
                Some(Ok(n)) => (notice_box(Some(*n))),
                Some(Err(r)) => (refusal_box(Some(r))),
                None => {},
            }
            p { (meta.seats_used) " of " (total) " seats are held; " (meta.seats_pending) " member(s) wait in line." }
            h2 #holders { "Holders" }
            @if holders.is_empty() { p { "Nobody holds a seat." } } @else {
                (seat_table(ctx, "holders", ["Member", "Since"], holders, html! {
                    @if pages.holders_after.is_some() { a href=(seats_url(ctx, None, pages.line_after.as_deref())) { "First holders" } " " }
                    @if let Some(next) = &pages.holders_next { a href=(seats_url(ctx, Some(next), pages.line_after.as_deref())) { "Next holders" } }
                }))
            }
            h2 #line { "The line" }
            @if line.is_empty() { p { "Nobody is waiting." } } @else {
                (seat_table(ctx, "line", ["Member (first in line first)", "Waiting since"], line, html! {
                    @if pages.line_after.is_some() { a href=(seats_url(ctx, pages.holders_after.as_deref(), None)) { "Start of the line" } " " }
                    @if let Some(next) = &pages.line_next { a href=(seats_url(ctx, pages.holders_after.as_deref(), Some(next))) { "Next in line" } }
                }))
            }
            h2 { "Hand a seat on" }
            form.stack method="post" action=(ctx.page_url("seats")) {
                (csrf(ctx))
                input type="hidden" name="action" value="hand";
                label for="hand-from" { "From the holder" }
                input #hand-from name="from" type="text" autocomplete="off" required list="holder-ids";
                label for="hand-to" { "To the member" }
                input #hand-to name="user" type="text" autocomplete="off" required list="line-ids";
                datalist #holder-ids { @for m in holders { option value=(m.user_id) {} } }
                datalist #line-ids { @for m in line { option value=(m.user_id) {} } }
                button.primary type="submit" { "Hand the seat on" }
            }
        },
    )
}

pub fn members(ctx: &Ctx, q: Option<&str>, found: Option<&(MemberView, MemberItem, Vec<String>)>) -> Markup {
    layout(
        &ctx.shell(),
        "Members",
        Some("members"),
        html! {
            form.stack role="search" method="get" action=(ctx.page_url("members")) {
                label for="q" { "User id or email" }
                input #q name="q" type="search" value=(q.unwrap_or_default()) required;
                button.primary type="submit" { "Find" }
            }
            @if let Some(q) = q {
                @match found {
                    None => p { "No member of this tenant is " strong { (q) } "." },
                    Some((view, item, fired)) => {
                        h2 { (view.user_id) }
                        dl.facts {
                            div { dt { "Status" } dd { (status_text(view.status)) } }
                            div { dt { "Email" } dd { (item.member.email) } }
                            div { dt { "Groups" } dd { @if item.member.groups.is_empty() { "none" } @else { ul.plain { @for g in &item.member.groups { li { (g) } } } } } }
                            div { dt { "Attributes" } dd { @if item.member.attributes.is_empty() { "none" } @else { ul.plain { @for (k, v) in &item.member.attributes { li { (k) ": " (v) } } } } } }
                            div { dt { "Roles" } dd { (view.roles.iter().cloned().collect::<Vec<_>>().join(", ")) } }
                            div { dt { "Entitlements" } dd { (serde_json::to_string(&view.entitlements).unwrap_or_default()) } }
                        }
                        h3 { "Why" }
                        ul.plain {
                            @if fired.is_empty() { li { "No role rule fired: the model's default roles, with a seat." } }
                            @for rule in fired { li { "Role rule " strong { (rule) } " fired." } }
                            li {
                                @match view.seat.as_ref().and_then(|s| s.pin.as_ref()) {
                                    Some(p) if p.hold => { "Its seat was given by " (p.by) " and is kept through cuts while an unpinned holder remains." }
                                    Some(p) => { "Its seat was released by " (p.by) ": it waits out of the line until given one." }
                                    None => { "Its seat follows the tenant's seat order (privileged roles first, then the oldest)." }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn setup_steps(base: &str) -> Markup {
    html! {
        details {
            summary { "Set up Okta" }
            ol {
                li { "In Okta's Admin Console, open Applications, then your app integration (or create a SAML or OIDC one), then General and enable SCIM provisioning." }
                li { "On the Provisioning tab, set the SCIM connector base URL to " code { (base) } " and the unique identifier field for users to " code { "userName" } "." }
                li { "Choose Push New Users, Push Profile Updates and Push Groups; set the authentication mode to HTTP Header and paste the token as the Bearer token." }
                li { "Test the connector configuration, save, then on To App enable Create Users, Update User Attributes and Deactivate Users." }
            }
        }
        details {
            summary { "Set up Microsoft Entra ID" }
            ol {
                li { "In the Microsoft Entra admin center, open Enterprise applications, New application, Create your own application (a non-gallery one)." }
                li { "Under Provisioning, set the mode to Automatic; set the Tenant URL to " code { (base) } " and the Secret Token to the token." }
                li { "Test Connection, save, assign the users and groups to provision, then Start provisioning." }
            }
        }
    }
}

pub fn directory(ctx: &Ctx, list: &[Value], notice: Option<Notice>, shown: Option<(&str, &str)>, refused: Option<&Rejection>) -> Markup {
    let base = entitle::edge::config::directory_base(&ctx.tenant);
    layout(
        &ctx.shell(),
        "Directory",
        Some("directory"),
        html! {
            (notice_box(notice))
            (refusal_box(refused))
            @if let Some((id, token)) = shown {
                section.token aria-labelledby="token-title" {
                    h2 #token-title { "The token of " (id) }
                    p { "Copy it now: it is shown this once, and only its hash is kept." }
                    label for="token" { "Bearer token" }
                    input #token type="text" readonly value=(token);
                    p { "SCIM base URL: " code { (base) } }
                }
            }
            p { "Your identity provider pushes users and groups to this tenant through a connection: a SCIM base URL and a bearer token. Pushes that would go beyond your seats wait in line or are refused, as your license says." }
            h2 #connections { "Connections" }
            @if list.is_empty() { p { "No connection yet." } } @else {
                div.table role="region" aria-labelledby="connections" tabindex="0" {
                    table {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Id" } th scope="col" { "Made" } th scope="col" { "Rotated" } th scope="col" { "Last push" } th scope="col" { "Holds" } th scope="col" { "Refused for the seat cap" } th scope="col" { "When full" } th scope="col" { "Actions" } } }
                        tbody {
                            @for c in list {
                                @let id = text(&c["directory_id"]);
                                tr {
                                    th scope="row" { (text(&c["name"])) }
                                    td { code { (id) } }
                                    td { @if let Some(at) = c["created_at"].as_str() { (when(at)) } }
                                    td {
                                        @if let Some(at) = c["rotated_at"].as_str() { (when(at)) } @else { "never" }
                                        @if let Some(until) = c["previous_token_valid_until"].as_str() { br; small { "previous token valid until " (when(until)) } }
                                    }
                                    td { @if let Some(at) = c["stats"]["last_push"].as_str() { (when(at)) } @else { "never" } }
                                    td { (c["stats"]["users"].as_i64().unwrap_or(0)) " users, " (c["stats"]["groups"].as_i64().unwrap_or(0)) " groups" }
                                    td {
                                        (c["stats"]["refused"].as_u64().unwrap_or(0))
                                        @if let Some(at) = c["stats"]["last_refused"].as_str() { br; small { "last " (when(at)) } }
                                    }
                                    td { (text(&c["when_full"]).replace('_', " ")) }
                                    td.actions {
                                        form.inline method="post" action=(ctx.page_url(&format!("directory/{id}/rotate"))) {
                                            (csrf(ctx))
                                            label for=(format!("grace-{id}")) { "Old token valid for (hours)" }
                                            input id=(format!("grace-{id}")) name="grace_hours" type="number" min="0" max="168" value="24" inputmode="numeric";
                                            button type="submit" aria-label=(format!("Rotate the token of {}", text(&c["name"]))) { "Rotate" }
                                        }
                                        form.inline method="post" action=(ctx.page_url(&format!("directory/{id}/revoke"))) {
                                            (csrf(ctx))
                                            button.danger type="submit" aria-label=(format!("Revoke {}", text(&c["name"]))) { "Revoke" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Connect an identity provider" }
            form.stack method="post" action=(ctx.page_url("directory")) {
                (csrf(ctx))
                label for="name" { "Name (for example, Okta)" }
                input #name name="name" type="text" maxlength="100" required;
                button.primary type="submit" { "Make the connection" }
            }
            h2 { "Setup steps" }
            (setup_steps(&base))
        },
    )
}

pub fn targets(ctx: &Ctx, views: &[TargetView], notice: Option<Notice>) -> Markup {
    layout(
        &ctx.shell(),
        "Targets",
        Some("targets"),
        html! {
            (notice_box(notice))
            @if views.is_empty() { p { "No SCIM target is configured. Your application's operator adds them." } }
            @for t in views {
                section.card aria-labelledby=(format!("target-{}", t.target_id)) {
                    h2 id=(format!("target-{}", t.target_id)) { (t.target_id) }
                    dl.facts {
                        div { dt { "Status" } dd { (status_text(t.status)) } }
                        div { dt { "Base URL" } dd { code { (t.base_url) } } }
                        div { dt { "Profile" } dd { (status_text(t.profile)) } }
                        div { dt { "Waiting changes" } dd { (t.pending) } }
                        div { dt { "Refused changes" } dd { (t.parked.len()) } }
                        div { dt { "Drift repair every" } dd { (t.repair_interval_minutes) " minutes" } }
                    }
                    details {
                        summary { "Health and guarantees" }
                        pre { (serde_json::to_string_pretty(&serde_json::json!({"health": t.health, "guarantees": t.guarantees})).unwrap_or_default()) }
                    }
                    form.inline method="post" action=(ctx.page_url(&format!("targets/{}/repair", t.target_id))) {
                        (csrf(ctx))
                        button type="submit" aria-label=(format!("Repair drift now on {}", t.target_id)) { "Repair drift now" }
                    }
                }
            }
        },
    )
}

pub struct AuditFilters<'a> {
    pub member: Option<&'a str>,
    pub action: Option<&'a str>,
}

pub fn audit(ctx: &Ctx, records: &[AuditRecord], next: Option<u64>, pending: u64, f: &AuditFilters, verification: Option<&Verification>) -> Markup {
    let mut next_url = format!("{}?before={}", ctx.page_url("audit"), next.unwrap_or_default());
    for (k, v) in [("member", f.member), ("action", f.action)] {
        if let Some(v) = v {
            next_url.push_str(&format!("&{k}={}", url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()));
        }
    }
    layout(
        &ctx.shell(),
        "Audit",
        Some("audit"),
        html! {
            @if let Some(v) = verification {
                @if v.ok {
                    p.notice role="status" #verified { "The chain verifies: " (v.records) " record(s), head " code { (v.head_hash) } "." @if v.pending > 0 { " " (v.pending) " record(s) of the last moments are not chained yet." } }
                } @else {
                    p.refusal role="alert" #verified { "The chain does not verify" @if let Some(seq) = v.first_bad_seq { " at record " (seq) } ": " (v.problem.clone().unwrap_or_default()) }
                }
            }
            form.stack role="search" method="get" action=(ctx.page_url("audit")) {
                label for="member" { "Member (user id)" }
                input #member name="member" type="text" value=(f.member.unwrap_or_default());
                label for="action" { "Action (as the trail names it)" }
                input #action name="action" type="text" value=(f.action.unwrap_or_default());
                button.primary type="submit" { "Filter" }
            }
            form.inline method="post" action=(ctx.page_url("audit/verify")) {
                (csrf(ctx))
                button type="submit" { "Verify the chain" }
            }
            form.inline method="get" action=(ctx.page_url("audit/export")) {
                label for="from_seq" { "Export from record" }
                input #from_seq name="from_seq" type="number" min="1" value="1" inputmode="numeric";
                button type="submit" { "Download the signed export" }
            }
            p.more { "An export is JSON Lines: each record as hashed, then a checkpoint signed with the audit key, which verifies offline with the public key. One file holds up to 5 MB of records; its name says the last, and the next starts after it." }
            @if pending > 0 { p { (pending) " record(s) of the last moments are not chained yet: they show within seconds." } }
            h2 #trail { "The trail, newest first" }
            @if records.is_empty() { p { "No record matches." } } @else {
                div.table role="region" aria-labelledby="trail" tabindex="0" {
                    table {
                        thead { tr { th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Action" } th scope="col" { "Subject" } th scope="col" { "Cause" } th scope="col" { "Rule" } } }
                        tbody {
                            @for r in records {
                                tr {
                                    th.nowrap scope="row" { (r.seq) }
                                    td.nowrap { (when(&r.at)) }
                                    td.nowrap { code { (serde_json::to_value(r.event.action).map(|v| text(&v)).unwrap_or_default()) } }
                                    td { (r.event.subject) }
                                    td { (r.event.cause.to_string()) }
                                    td { (r.event.rule) }
                                }
                            }
                        }
                    }
                }
            }
            @if next.is_some() { p { a href=(next_url) { "Older records" } } }
        },
    )
}
