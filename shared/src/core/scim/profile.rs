//! What a SCIM target can do, as its vendor documents it: a profile per
//! kind of target. The client behaves from the profile, never from what a
//! lenient server happens to accept. Each fact below cites the vendor's
//! own SCIM documentation.
//!
//! | profile | source |
//! | --- | --- |
//! | `aws-identity-center` | <https://docs.aws.amazon.com/singlesignon/latest/developerguide/what-is-scim.html> (ListGroups, GetGroup, PatchGroup, ListUsers) |
//! | `slack` | <https://docs.slack.dev/reference/scim-api>, <https://docs.slack.dev/reference/scim-api/rate-limits> |
//! | `github-emu` | <https://docs.github.com/en/rest/enterprise-admin/scim> |
//! | `google` | <https://docs.cloud.google.com/identity/docs/scim/reference/rest> |
//! | `atlassian` | <https://developer.atlassian.com/cloud/admin/user-provisioning/rest/> |
//! | `salesforce` | <https://help.salesforce.com/s/articleView?id=sf.identity_scim_manage_groups.htm> |
//! | `generic` | RFC 7644 |

use serde::{Deserialize, Serialize};

/// A kind of SCIM target (`"profile"` in a target's configuration).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileName {
    #[default]
    Generic,
    AwsIdentityCenter,
    Slack,
    GithubEmu,
    Google,
    Atlassian,
    Salesforce,
}

impl ProfileName {
    pub const ALL: [ProfileName; 7] =
        [ProfileName::Generic, ProfileName::AwsIdentityCenter, ProfileName::Slack, ProfileName::GithubEmu, ProfileName::Google, ProfileName::Atlassian, ProfileName::Salesforce];
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileName::Generic => "generic",
            ProfileName::AwsIdentityCenter => "aws-identity-center",
            ProfileName::Slack => "slack",
            ProfileName::GithubEmu => "github-emu",
            ProfileName::Google => "google",
            ProfileName::Atlassian => "atlassian",
            ProfileName::Salesforce => "salesforce",
        }
    }
    pub fn profile(self) -> Profile {
        profile(self)
    }
}

/// How the target tells whether a user is in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Membership {
    /// `GET /Groups` answers with each group's members: read whole.
    Listed,
    /// Members are never listed, but `filter=id eq "<group>" and members eq
    /// "<user>"` answers the group when the user is in it (AWS).
    Asked,
    /// Members are never listed and cannot be asked for: Entitle adds the
    /// member to the groups it belongs in and removes it from every other
    /// managed group (a removal of a non-member changes nothing).
    Unknown,
}

/// How members leave a group in a `PatchOp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveForm {
    /// One operation whose value filter names them all:
    /// `members[value eq "a" or value eq "b"]` (RFC 7644 §3.5.2.2).
    FilterOr,
    /// One operation per member: `members[value eq "a"]` (Slack, Google, AWS, GitHub, Atlassian).
    OnePerOperation,
    /// `{"op": "remove", "path": "members", "value": {"members": [...]}}` (Salesforce).
    MembersObject,
}

/// What a removed member becomes on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteMeans {
    /// `DELETE /Users/{id}` deletes; the user can be created again.
    Deletes,
    /// `DELETE` only deactivates (as `active: false` does): Entitle sends `active: false`.
    Deactivates,
    /// `DELETE` cannot be undone (GitHub's hard deprovision, Atlassian's
    /// removal from SCIM): Entitle sends `active: false` unless the target's
    /// configuration sets `delete_users`.
    Irreversible,
}

/// How a target's lists are paged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Paging {
    /// `startIndex` and `count` (RFC 7644 §3.4.2.4).
    Index,
    /// `cursor` and `count`, `nextCursor` in the answer (AWS).
    Cursor,
    /// None: a list needs a filter, and answers at most one page (Google).
    None,
}

/// What a target can do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub name: ProfileName,
    /// How the target tells group membership.
    pub membership: Membership,
    pub remove: RemoveForm,
    /// Membership changes a group `PatchOp` may carry.
    pub changes_per_request: usize,
    pub delete: DeleteMeans,
    /// Users may be found by `externalId` (else by `userName` only).
    pub find_by_external_id: bool,
    /// Every user can be listed without a filter (drift repair reads them all).
    pub lists_users: bool,
    pub paging: Paging,
    /// Items a page holds at most.
    pub page_size: usize,
    /// The `attributes` query parameter is taken.
    pub attributes_param: bool,
    /// Filters may use `and`, `pr` (else `eq` alone).
    pub rich_filters: bool,
    /// The longest `userName` the target takes, and whether Entitle sends
    /// a name of its own making (Slack: `[A-Za-z0-9._-]`, 21 characters).
    pub user_name_max: Option<usize>,
    /// The target rewrites the `userName` it is given (GitHub appends its
    /// short code): it is never compared or sent again.
    pub rewrites_user_name: bool,
    /// Writes per minute Entitle sends at most (the target's documented
    /// limit, with room for others); `None`: no documented limit.
    pub writes_per_minute: Option<u32>,
    /// User creations per hour at most (GitHub).
    pub creations_per_hour: Option<u32>,
}

pub fn profile(name: ProfileName) -> Profile {
    let generic = Profile {
        name,
        membership: Membership::Listed,
        remove: RemoveForm::FilterOr,
        changes_per_request: 100,
        delete: DeleteMeans::Deletes,
        find_by_external_id: true,
        lists_users: true,
        paging: Paging::Index,
        page_size: 100,
        attributes_param: true,
        rich_filters: true,
        user_name_max: None,
        rewrites_user_name: false,
        writes_per_minute: None,
        creations_per_hour: None,
    };
    match name {
        ProfileName::Generic => generic,
        // "GetGroup and ListGroups return an empty member list"; membership by
        // filter (id and member); "Only eq with and is supported"; "startIndex,
        // attributes, and excludedAttributes" not supported; cursor paging,
        // 100 a page; "A maximum of 100 membership changes are allowed in a
        // single request"; 429 ThrottlingException.
        ProfileName::AwsIdentityCenter => {
            Profile { membership: Membership::Asked, remove: RemoveForm::OnePerOperation, paging: Paging::Cursor, attributes_param: false, rich_filters: false, ..generic }
        }
        // Groups list their members; a member leaves with
        // `members[value eq U123]`, one per operation; "Users can not be
        // permanently deleted from Slack, they can only be deactivated";
        // userName "Max of 21 characters", periods, underscores and hyphens;
        // writes 600 a minute for the whole organisation, one update of a
        // group at a time.
        ProfileName::Slack => Profile { remove: RemoveForm::OnePerOperation, delete: DeleteMeans::Deactivates, user_name_max: Some(21), writes_per_minute: Some(300), rich_filters: false, ..generic },
        // `DELETE` "Suspends a SCIM user permanently ... This action is
        // irreversible"; `active: false` suspends; "Multiple filters are not
        // supported"; userName normalised with `_SHORTCODE`; "do not assign
        // more than 1,000 users per hour"; a User-Agent is required (the
        // client always sends one).
        ProfileName::GithubEmu => {
            Profile { remove: RemoveForm::OnePerOperation, delete: DeleteMeans::Irreversible, rich_filters: false, rewrites_user_name: true, creations_per_hour: Some(900), ..generic }
        }
        // "Requests must specify a filter"; Users "only supports equality on
        // userName"; Group.members "is not currently returned"; "A maximum of
        // 1 member addition or removal is supported per Group patch request";
        // no pagination; "only the first 50 results will be returned".
        ProfileName::Google => Profile {
            membership: Membership::Unknown,
            remove: RemoveForm::OnePerOperation,
            changes_per_request: 1,
            find_by_external_id: false,
            lists_users: false,
            paging: Paging::None,
            page_size: 50,
            rich_filters: false,
            ..generic
        },
        // Groups are filtered by displayName only; `DELETE` deactivates the
        // user and removes it from SCIM (it cannot be brought back through
        // SCIM); a synced group cannot be renamed.
        ProfileName::Atlassian => Profile { remove: RemoveForm::OnePerOperation, delete: DeleteMeans::Irreversible, rich_filters: false, ..generic },
        // Users are deactivated, never deleted (`DELETE` is `active: false`);
        // group members are added and removed as `path: "members"` with
        // `value: {"members": [...]}`; filtered lists stop at 200.
        ProfileName::Salesforce => Profile { remove: RemoveForm::MembersObject, delete: DeleteMeans::Deactivates, rich_filters: false, ..generic },
    }
}

/// What Entitle can and cannot guarantee on a target of this profile (the
/// target view and docs/scim-targets.md show it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Guarantees {
    /// Verified: each member's user exists (or not) and is active as access says.
    pub users: &'static str,
    pub group_memberships: &'static str,
    pub drift_repair: &'static str,
    pub removal: &'static str,
}

impl Profile {
    pub fn guarantees(&self, delete_users: bool) -> Guarantees {
        let group_memberships = match self.membership {
            Membership::Listed => "verified: each managed group's members are read and made equal to access, strangers removed",
            Membership::Asked => "verified per member: the target is asked whether each member is in each managed group (it does not list members)",
            Membership::Unknown => "enforced, not read: each member is added to the groups it belongs in and removed from every other managed group; the target cannot say who is in a group",
        };
        let drift_repair = match (self.membership, self.lists_users) {
            (Membership::Listed, true) => "users and memberships listed and repaired, including memberships added behind Entitle's back",
            (_, true) => "users listed and repaired, memberships of members repaired; a non-member added to a managed group behind Entitle's back is not seen (the target does not list members)",
            (_, false) => {
                "each member's user looked up and repaired, memberships re-asserted; users and memberships added behind Entitle's back are not seen (the target lists nothing without a filter)"
            }
        };
        let removal = match (self.delete, delete_users) {
            (DeleteMeans::Deletes, _) => "DELETE (the user is deleted)",
            (DeleteMeans::Deactivates, _) => "active: false (the target never deletes users)",
            (DeleteMeans::Irreversible, false) => "active: false (its DELETE cannot be undone; set delete_users to send it)",
            (DeleteMeans::Irreversible, true) => "DELETE, which this target cannot undo (delete_users is set)",
        };
        Guarantees { users: "verified: created, updated, deactivated as access says", group_memberships, drift_repair, removal }
    }

    /// Whether a removed member's user is deleted (else deactivated).
    pub fn deletes_on_removal(&self, delete_users: bool) -> bool {
        match self.delete {
            DeleteMeans::Deletes => true,
            DeleteMeans::Deactivates => false,
            DeleteMeans::Irreversible => delete_users,
        }
    }

    /// The `userName` Entitle sends for a member's email: the email, or
    /// where the target takes only short names, the email's local part in
    /// the target's characters, cut to its length.
    pub fn user_name(&self, email: &str) -> String {
        match self.user_name_max {
            None => email.to_string(),
            Some(max) => {
                let local = email.split('@').next().unwrap_or(email);
                let name: String = local.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c.to_ascii_lowercase() } else { '_' }).collect();
                name.chars().take(max).collect()
            }
        }
    }
}

/// A sliding window of sends: at most `limit` within `span` (a target's
/// documented rate limit, as one process spends it).
#[derive(Debug, Clone)]
pub struct Window {
    limit: usize,
    span: std::time::Duration,
    sent: std::collections::VecDeque<std::time::Instant>,
}

impl Window {
    pub fn new(limit: u32, span: std::time::Duration) -> Self {
        Window { limit: limit.max(1) as usize, span, sent: Default::default() }
    }
    /// Takes a send at `now` if the window has room; otherwise how long
    /// until it has.
    pub fn admit(&mut self, now: std::time::Instant) -> Result<(), std::time::Duration> {
        while self.sent.front().is_some_and(|t| now.saturating_duration_since(*t) >= self.span) {
            self.sent.pop_front();
        }
        if self.sent.len() < self.limit {
            self.sent.push_back(now);
            return Ok(());
        }
        Err((self.sent[0] + self.span).saturating_duration_since(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_has_its_name_and_round_trips() {
        for name in ProfileName::ALL {
            assert_eq!(profile(name).name, name);
            let json = serde_json::to_value(name).unwrap();
            assert_eq!(json, name.as_str());
            assert_eq!(serde_json::from_value::<ProfileName>(json).unwrap(), name);
        }
        assert!(serde_json::from_value::<ProfileName>(serde_json::json!("okta")).is_err());
    }

    #[test]
    fn removals_never_delete_irreversibly_unless_asked() {
        assert!(profile(ProfileName::Generic).deletes_on_removal(false));
        for name in [ProfileName::Slack, ProfileName::Salesforce] {
            assert!(!profile(name).deletes_on_removal(true), "{name:?} never deletes");
        }
        for name in [ProfileName::GithubEmu, ProfileName::Atlassian] {
            assert!(!profile(name).deletes_on_removal(false));
            assert!(profile(name).deletes_on_removal(true));
        }
    }

    #[test]
    fn short_user_names_are_made_from_the_email() {
        let slack = profile(ProfileName::Slack);
        assert_eq!(slack.user_name("Ann.Lee+ops@example.com"), "ann.lee_ops");
        assert_eq!(slack.user_name("a-very-long-local-part-indeed@example.com").len(), 21);
        assert_eq!(profile(ProfileName::Generic).user_name("Ann@example.com"), "Ann@example.com");
    }

    #[test]
    fn a_window_admits_its_limit_then_says_how_long_to_wait() {
        let start = std::time::Instant::now();
        let mut w = Window::new(2, std::time::Duration::from_secs(60));
        assert!(w.admit(start).is_ok() && w.admit(start + std::time::Duration::from_secs(1)).is_ok());
        assert_eq!(w.admit(start + std::time::Duration::from_secs(2)), Err(std::time::Duration::from_secs(58)));
        assert!(w.admit(start + std::time::Duration::from_secs(60)).is_ok(), "the first send left the window");
    }

    #[test]
    fn guarantees_say_what_cannot_be_seen() {
        assert!(profile(ProfileName::AwsIdentityCenter).guarantees(false).drift_repair.contains("not seen"));
        assert!(profile(ProfileName::Google).guarantees(false).group_memberships.contains("cannot say"));
        assert!(profile(ProfileName::Generic).guarantees(false).drift_repair.contains("behind Entitle's back"));
        assert!(profile(ProfileName::GithubEmu).guarantees(false).removal.starts_with("active: false"));
    }
}
