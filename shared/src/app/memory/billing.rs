//! Stripe's subscriptions in memory, for the billing use cases' tests.

use crate::app::ports::*;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A read that stops after taking its answer: (it has read, it may go on).
type Pause = (Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>);

/// Stripe's subscriptions in memory, for the billing use cases' tests: what
/// Stripe holds now (listed in the order they were created), how many
/// reads it served, an error it answers with instead while set, and a
/// pause after a read (to change Stripe and race another writer meanwhile).
#[derive(Clone, Default)]
pub struct StripeAccount {
    subscriptions: Arc<Mutex<Vec<Value>>>,
    pub reads: Arc<AtomicUsize>,
    failing: Arc<Mutex<Option<String>>>,
    pause: Arc<Mutex<Option<Pause>>>,
}

impl StripeAccount {
    /// Creates or replaces a subscription (by its `id`).
    pub fn put(&self, subscription: Value) {
        let mut subs = self.subscriptions.lock().unwrap();
        match subs.iter_mut().find(|s| s["id"] == subscription["id"]) {
            Some(s) => *s = subscription,
            None => subs.push(subscription),
        }
    }

    pub fn remove(&self, id: &str) {
        self.subscriptions.lock().unwrap().retain(|s| s["id"] != id);
    }

    /// Answers every request with this error (`None`: answers again).
    pub fn fail(&self, detail: Option<&str>) {
        *self.failing.lock().unwrap() = detail.map(str::to_string);
    }

    /// The next subscription read takes its answer, then says so (`read`)
    /// and waits for `proceed` before returning it.
    pub fn pause_after_next_read(&self) -> (Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>) {
        let pair = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        *self.pause.lock().unwrap() = Some(pair.clone());
        pair
    }

    fn answer(&self) -> Result<(), Upstream> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        match self.failing.lock().unwrap().clone() {
            Some(detail) => Err(Upstream { service: "stripe", detail, retry_after: None }),
            None => Ok(()),
        }
    }
}

impl Billing for StripeAccount {
    async fn subscription(&self, id: &crate::core::ids::LicenseId) -> Result<Option<Value>, Upstream> {
        tokio::task::yield_now().await;
        self.answer()?;
        let answer = self.subscriptions.lock().unwrap().iter().find(|s| s["id"] == id.as_str()).cloned();
        let pause = self.pause.lock().unwrap().take();
        if let Some((read, proceed)) = pause {
            read.notify_one();
            proceed.notified().await;
        }
        Ok(answer)
    }

    async fn subscriptions(&self, starting_after: Option<&str>, limit: u32) -> Result<SubscriptionPage, Upstream> {
        self.answer()?;
        let subs = self.subscriptions.lock().unwrap();
        let start = starting_after.and_then(|a| subs.iter().position(|s| s["id"] == a)).map_or(0, |i| i + 1);
        let data: Vec<Value> = subs.iter().skip(start).take(limit as usize).cloned().collect();
        Ok(SubscriptionPage { has_more: start + data.len() < subs.len(), data })
    }
}
