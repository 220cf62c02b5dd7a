//! SCIM targets as the delivery use case's ports: [`Scim`] opens a
//! [`ScimClient`] per target and run (sharing what the process learnt of
//! each target's removal requests and rate limits), and the client is the
//! run's [`DirectorySession`].

use super::pacing::Pace;
use super::transport::{http_client, Http};
use super::{ScimClient, FIRST_REMOVALS};
use crate::app::ports::{Directory, DirectorySession};
use crate::core::egress::EgressPolicy;
use crate::core::scim::{DesiredUser, GroupChange, Known, ScimGroup, ScimUser, SyncOutcome, Target, TargetError};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// SCIM targets over HTTP: one client per process, a [`ScimClient`] per
/// target and run; what the process learnt of each target's removal
/// requests (by URL and token) outlives the runs.
#[derive(Clone)]
pub struct Scim {
    pub http: Http,
    pub egress: EgressPolicy,
    removal_sizes: Arc<Mutex<BTreeMap<String, Arc<AtomicUsize>>>>,
    /// Each target account's rate limits, as this process spends them.
    paces: Arc<Mutex<BTreeMap<String, Arc<Mutex<Pace>>>>>,
}

impl Scim {
    pub fn new(egress: EgressPolicy) -> Self {
        Scim { http: http_client(egress), egress, removal_sizes: Arc::default(), paces: Arc::default() }
    }
}

impl Directory for Scim {
    type Session = ScimClient;

    fn open(&self, target: &Target, token: String, deadline: Instant, read_budget: usize) -> ScimClient {
        // One account at the target: its URL and its token (hosted SCIM
        // endpoints serve every customer at one URL), the token hashed.
        let account = crate::core::audit::hash_of(&format!("{}\n{token}", target.base()));
        let learnt = self.removal_sizes.lock().expect("not poisoned").entry(account.clone()).or_insert_with(|| Arc::new(AtomicUsize::new(FIRST_REMOVALS))).clone();
        let profile = target.profile.profile();
        let pace = self.paces.lock().expect("not poisoned").entry(account).or_insert_with(|| Arc::new(Mutex::new(Pace::of(&profile)))).clone();
        ScimClient::new(self.http.clone(), target.base(), token, self.egress).with_deadline(deadline).with_read_budget(read_budget).with_removal_sizing(learnt).with_profile(profile, pace)
    }
}

impl DirectorySession for ScimClient {
    async fn sync_member(&self, desired: &DesiredUser, managed: &BTreeSet<String>, known: Option<Known>) -> Result<SyncOutcome, TargetError> {
        ScimClient::sync_member(self, desired, managed, known).await
    }
    async fn sync_user_deferred(&self, desired: &DesiredUser, managed: &BTreeSet<String>, known: Option<Known>) -> Result<(SyncOutcome, Vec<GroupChange>), TargetError> {
        let mut changes = Vec::new();
        let out = ScimClient::sync_user(self, desired, managed, known, Some(&mut changes)).await?;
        Ok((out, changes))
    }
    async fn apply_group_changes(&self, changes: &[GroupChange]) -> Result<(), TargetError> {
        ScimClient::apply_group_changes(self, changes).await
    }
    async fn users(&self) -> Result<Vec<ScimUser>, TargetError> {
        ScimClient::users(self).await
    }
    async fn groups(&self) -> Result<Vec<ScimGroup>, TargetError> {
        ScimClient::groups(self).await
    }
    async fn remove_from_group(&self, group_id: &str, group: &str, scim_user: &str) -> Result<(), TargetError> {
        ScimClient::remove_from_group(self, group_id, group, scim_user).await
    }
    fn contradiction(&self) -> Option<String> {
        ScimClient::contradiction(self)
    }
    fn rosters_agreed(&self) -> bool {
        ScimClient::rosters_agreed(self)
    }
}
