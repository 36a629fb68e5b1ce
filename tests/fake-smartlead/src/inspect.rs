//! [`FakeHandle`] accessors that read the store directly, so a test can check the
//! effect of a destructive call without going through the routes. Each returns
//! what the matching read route would show right now, or `None` once the object
//! (or its campaign) is gone. [`CampaignState`] and [`FakeHandle::campaign_state`]
//! give a whole campaign at once, for comparing a restore with its original.

use serde_json::Value;

use crate::lead;
use crate::server::FakeHandle;

impl FakeHandle {
    /// Lead `lead_id` as `GET /leads/{lead_id}` shows it (its one `data` entry);
    /// `None` once deleted (or if it never existed).
    pub fn lead(&self, lead_id: u64) -> Option<Value> {
        let store = self.api().store();
        let lead = store.lead_campaign(lead_id)?.lead(lead_id)?;
        Some(lead.to_lead_object())
    }

    /// The status of lead `lead_id` in campaign `campaign_id` (`STARTED`,
    /// `INPROGRESS`, `COMPLETED`, `PAUSED`, `STOPPED`); `None` if the lead is not
    /// (or no longer) in that campaign.
    pub fn lead_status(&self, campaign_id: u64, lead_id: u64) -> Option<String> {
        let store = self.api().store();
        Some(store.campaigns.get(&campaign_id)?.lead(lead_id)?.status)
    }

    /// Whether lead `lead_id` is unsubscribed in campaign `campaign_id`; `None`
    /// if the lead is not (or no longer) in that campaign.
    pub fn lead_unsubscribed(&self, campaign_id: u64, lead_id: u64) -> Option<bool> {
        let store = self.api().store();
        let lead = store.campaigns.get(&campaign_id)?.lead(lead_id)?;
        Some(lead.counts.is_unsubscribed)
    }

    /// The id of the first live lead of campaign `campaign_id`; `None` if the
    /// campaign is gone or holds no leads.
    pub fn first_lead_id(&self, campaign_id: u64) -> Option<u64> {
        let store = self.api().store();
        let index = store
            .campaigns
            .get(&campaign_id)?
            .leads
            .live_indices(0)
            .next()?;
        Some(lead::lead_id(campaign_id, index))
    }

    /// Sender account `id` as `GET /email-accounts/{id}` shows it.
    pub fn email_account(&self, id: u64) -> Option<Value> {
        self.api().store().account.email_accounts.get(&id).cloned()
    }

    /// The ids of the sender accounts attached to campaign `campaign_id`, in the
    /// order `GET /campaigns/{id}/email-accounts` lists them.
    pub fn campaign_email_account_ids(&self, campaign_id: u64) -> Option<Vec<u64>> {
        let store = self.api().store();
        Some(store.campaigns.get(&campaign_id)?.email_account_ids.clone())
    }

    /// Lead list `id` as `GET /lead-list/{id}` shows it
    /// (`{"id","name","created_at","lead_count"}`).
    pub fn lead_list(&self, id: u64) -> Option<Value> {
        let store = self.api().store();
        Some(store.account.lead_lists.get(&id)?.summary())
    }

    /// Global webhook `id` as `GET /webhook` lists it.
    pub fn global_webhook(&self, id: u64) -> Option<Value> {
        self.api().store().account.webhooks.get(&id).cloned()
    }

    /// The ids of campaign `campaign_id`'s own webhooks, in list order.
    pub fn campaign_webhook_ids(&self, campaign_id: u64) -> Option<Vec<u64>> {
        let store = self.api().store();
        let hooks = &store.campaigns.get(&campaign_id)?.webhooks;
        Some(hooks.iter().filter_map(|w| w["id"].as_u64()).collect())
    }

    /// Client API key `id` as `GET /client/api-key` lists it (key included).
    pub fn client_api_key(&self, id: u64) -> Option<Value> {
        self.api().store().account.api_keys.get(&id).cloned()
    }

    /// Block-list entry `id` as `GET /leads/get-domain-block-list` lists it.
    pub fn domain_block(&self, id: u64) -> Option<Value> {
        self.api().store().account.block_list.get(&id).cloned()
    }
}

/// Everything a restore writes into a campaign, as the read routes show it:
/// what a test compares field by field between an original and its restore.
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignState {
    /// `GET /campaigns/{id}` (without tags).
    pub object: Value,
    /// `GET /campaigns/{id}/sequences`.
    pub sequences: Vec<Value>,
    /// `GET /campaigns/{id}/webhooks`.
    pub webhooks: Vec<Value>,
    /// The attached sender accounts' ids, in `GET .../email-accounts` order.
    pub email_account_ids: Vec<u64>,
    /// Every live lead, in export order, as the `lead` object of a
    /// `GET /campaigns/{id}/leads` entry (custom fields included).
    pub leads: Vec<Value>,
}

impl FakeHandle {
    /// Campaign `id`'s full state; `None` if there is no such campaign.
    /// Walks every lead: fine for tests, not for benchmarks.
    pub fn campaign_state(&self, id: u64) -> Option<CampaignState> {
        let store = self.api().store();
        let c = store.campaigns.get(&id)?;
        let leads = c
            .leads
            .live_indices(0)
            .filter_map(|i| c.leads.get(i))
            .map(|l| l.to_list_entry()["lead"].take())
            .collect();
        Some(CampaignState {
            object: c.to_json(false),
            sequences: c.sequences.clone(),
            webhooks: c.webhooks.clone(),
            email_account_ids: c.email_account_ids.clone(),
            leads,
        })
    }

    /// The ids of every campaign, ascending (created ones start at 1000).
    pub fn campaign_ids(&self) -> Vec<u64> {
        self.api().store().campaigns.keys().copied().collect()
    }

    /// How many live leads campaign `id` holds.
    pub fn lead_count(&self, id: u64) -> Option<usize> {
        Some(self.api().store().campaigns.get(&id)?.leads.len())
    }

    /// Puts `email` on the account's unsubscribe list, as an account-wide
    /// `POST /leads/{id}/unsubscribe` would.
    pub fn unsubscribe_email(&self, email: &str) {
        self.api().store().account.unsubscribe(email);
    }
}
