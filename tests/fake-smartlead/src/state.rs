//! The fake's mutable world: campaigns with their leads (and the per-lead changes
//! made through the API), sequences, attached sender accounts and webhooks,
//! seeded from [`CampaignSeed`]s, plus the account-wide objects of
//! [`crate::account`]. Everything sits behind one `std::sync::Mutex` that is
//! never held across an `.await`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::account::{self, AccountWide};
use crate::lead::{self, Counts, Lead};
use crate::settings;
use crate::CampaignSeed;

/// The user every campaign belongs to.
pub const USER_ID: u64 = 196_026;
/// Ids of campaigns created through the API start here.
const FIRST_CREATED_ID: u64 = 1000;

/// An immutable view of a campaign's leads, cheap to clone, that a streaming
/// export can walk while the campaign keeps changing. Per-lead changes made
/// through the API (pause, resume, unsubscribe, delete) sit in copy-on-write
/// maps beside the generated leads, so every route that reads a lead sees them.
#[derive(Clone, Debug)]
pub struct LeadSet {
    campaign_id: u64,
    generated: usize,
    extra: Arc<Vec<Lead>>,
    removed: Arc<BTreeSet<usize>>,
    /// Statuses set through the API, by slot index.
    statuses: Arc<BTreeMap<usize, String>>,
    /// Slots unsubscribed through the API.
    unsubscribed: Arc<BTreeSet<usize>>,
}

impl LeadSet {
    /// How many index slots exist (live or removed).
    pub fn slots(&self) -> usize {
        self.generated + self.extra.len()
    }

    /// How many leads the campaign holds now.
    pub fn len(&self) -> usize {
        self.slots() - self.removed.len()
    }

    /// Whether the campaign has no leads.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The lead at slot `index`, or `None` if the slot is removed or out of range.
    pub fn get(&self, index: usize) -> Option<Lead> {
        if self.removed.contains(&index) {
            return None;
        }
        let mut lead = if index < self.generated {
            Lead::generate(self.campaign_id, index)
        } else {
            self.extra.get(index - self.generated).cloned()?
        };
        if let Some(status) = self.statuses.get(&index) {
            lead.status.clone_from(status);
        }
        lead.counts.is_unsubscribed |= self.unsubscribed.contains(&index);
        Some(lead)
    }

    /// The live slot holding lead `lead_id`, if any.
    pub fn index_of(&self, lead_id: u64) -> Option<usize> {
        let index = lead_id
            .checked_sub(lead::lead_id(self.campaign_id, 0))
            .and_then(|i| usize::try_from(i).ok())?;
        (index < self.slots() && !self.removed.contains(&index)).then_some(index)
    }

    /// Live slot indices in order, starting at the `skip`-th live lead.
    pub fn live_indices(&self, skip: usize) -> impl Iterator<Item = usize> + '_ {
        // With nothing removed, slot and position agree: start at `skip`
        // directly, so paging through a big campaign is not quadratic.
        let (start, rest) = if self.removed.is_empty() {
            (skip.min(self.slots()), 0)
        } else {
            (0, skip)
        };
        (start..self.slots())
            .filter(|i| !self.removed.contains(i))
            .skip(rest)
    }

    /// The status, category and counters of slot `index`, without building the
    /// whole lead; `None` if the slot is removed or out of range.
    pub fn light(&self, index: usize) -> Option<(&str, &str, Counts)> {
        if self.removed.contains(&index) {
            return None;
        }
        let (status, category, mut counts) = if index < self.generated {
            (
                lead::status_for(index),
                lead::category_for(index),
                Counts::for_index(index),
            )
        } else {
            let l = self.extra.get(index - self.generated)?;
            (l.status.as_str(), l.category.as_str(), l.counts)
        };
        let status = self.statuses.get(&index).map_or(status, String::as_str);
        counts.is_unsubscribed |= self.unsubscribed.contains(&index);
        Some((status, category, counts))
    }

    /// Whether generated slot `index` is live and has `email` (compared
    /// case-insensitively).
    pub fn generated_has(&self, index: usize, email: &str) -> bool {
        index < self.generated
            && self
                .get(index)
                .is_some_and(|l| l.email.eq_ignore_ascii_case(email))
    }

    /// Totals over the live leads, for the analytics route.
    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for (_, category, c) in self.live_indices(0).filter_map(|i| self.light(i)) {
            t.leads += 1;
            t.interested += u64::from(category == "Interested");
            t.sent += c.last_email_sequence_sent;
            t.unique_sent += u64::from(c.last_email_sequence_sent > 0);
            t.opens += c.open_count;
            t.unique_opens += u64::from(c.open_count > 0);
            t.clicks += c.click_count;
            t.unique_clicks += u64::from(c.click_count > 0);
            t.replies += u64::from(c.reply_count > 0);
            t.unsubscribed += u64::from(c.is_unsubscribed);
        }
        t
    }
}

/// Counters summed over a campaign's live leads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub leads: u64,
    pub interested: u64,
    pub sent: u64,
    pub unique_sent: u64,
    pub opens: u64,
    pub unique_opens: u64,
    pub clicks: u64,
    pub unique_clicks: u64,
    pub replies: u64,
    pub unsubscribed: u64,
}

/// One campaign and everything hanging off it.
#[derive(Clone, Debug)]
pub struct Campaign {
    pub id: u64,
    pub name: String,
    pub status: String,
    pub client_id: Option<u64>,
    pub created_at: String,
    pub updated_at: String,
    pub leads: LeadSet,
    pub sequences: Vec<Value>,
    /// Sender accounts attached, in attach order; the objects live in
    /// [`AccountWide::email_accounts`].
    pub email_account_ids: Vec<u64>,
    pub webhooks: Vec<Value>,
    /// The configurable fields of the campaign object (see [`crate::settings`]).
    pub fields: Map<String, Value>,
    /// Lower-cased email -> slot of every live uploaded lead, so that
    /// de-duplicating an upload costs O(1) per lead.
    uploaded_emails: HashMap<String, usize>,
    next_object_id: u64,
}

impl Campaign {
    /// A seeded campaign: generated leads, two sequence steps, its own two
    /// sender accounts, one webhook, the reference's example settings.
    fn seeded(
        id: u64,
        name: String,
        status: String,
        client_id: Option<u64>,
        leads: usize,
        created_at: String,
    ) -> Self {
        Self {
            id,
            name,
            status,
            client_id,
            updated_at: created_at.clone(),
            created_at,
            leads: LeadSet {
                campaign_id: id,
                generated: leads,
                extra: Arc::new(Vec::new()),
                removed: Arc::new(BTreeSet::new()),
                statuses: Arc::new(BTreeMap::new()),
                unsubscribed: Arc::new(BTreeSet::new()),
            },
            sequences: default_sequences(id),
            email_account_ids: account::own_account_ids(id).to_vec(),
            webhooks: vec![json!({
                "id": id * 100 + 1,
                "name": format!("Replies for {id}"),
                "webhook_url": format!("https://hooks.example.com/smartlead/{id}"),
                "event_types": ["EMAIL_REPLY"],
                "categories": ["Interested"],
            })],
            fields: settings::seeded(),
            uploaded_emails: HashMap::new(),
            next_object_id: id * 100_000 + 50_000,
        }
    }

    /// A campaign made by `POST /campaigns/create`: DRAFTED, with no leads,
    /// steps, sender accounts or webhooks, and [`settings::fresh`] fields.
    fn created(id: u64, name: String, client_id: Option<u64>, created_at: String) -> Self {
        let mut c = Self::seeded(id, name, "DRAFTED".to_owned(), client_id, 0, created_at);
        c.sequences.clear();
        c.email_account_ids.clear();
        c.webhooks.clear();
        c.fields = settings::fresh();
        c
    }

    /// The bare campaign object of reference §1.2.
    pub fn to_json(&self, include_tags: bool) -> Value {
        let mut v = json!({
            "id": self.id,
            "user_id": USER_ID,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "status": self.status,
            "name": self.name,
        });
        if let Some(o) = v.as_object_mut() {
            o.extend(self.fields.clone());
            o.insert("parent_campaign_id".into(), Value::Null);
            o.insert("client_id".into(), json!(self.client_id));
        }
        if include_tags {
            v["tags"] = json!([]);
        }
        v
    }

    /// Marks the campaign as changed now.
    pub fn touch(&mut self) {
        self.updated_at = now();
    }

    /// A fresh id for a webhook or sequence step of this campaign.
    pub fn next_id(&mut self) -> u64 {
        self.next_object_id += 1;
        self.next_object_id
    }

    /// Appends an uploaded lead.
    pub fn add_lead(&mut self, make: impl FnOnce(u64, usize) -> Lead) {
        let index = self.leads.slots();
        let lead = make(self.id, index);
        self.uploaded_emails
            .insert(lead.email.to_ascii_lowercase(), index);
        Arc::make_mut(&mut self.leads.extra).push(lead);
    }

    /// Whether a live lead has this (lower-cased) email.
    pub fn has_email(&self, email: &str) -> bool {
        if self.uploaded_emails.contains_key(email) {
            return true;
        }
        // A generated lead's email is `lead{i}@example{campaign}.com`.
        let suffix = format!("@example{}.com", self.id);
        email
            .strip_prefix("lead")
            .and_then(|r| r.strip_suffix(suffix.as_str()))
            .and_then(|i| i.parse::<usize>().ok())
            .is_some_and(|i| self.leads.generated_has(i, email))
    }

    /// Removes the lead with id `lead_id`; `false` if there is no such live lead.
    pub fn remove_lead(&mut self, lead_id: u64) -> bool {
        let Some(index) = self.leads.index_of(lead_id) else {
            return false;
        };
        if let Some(lead) = self.leads.get(index) {
            self.uploaded_emails
                .remove(&lead.email.to_ascii_lowercase());
        }
        Arc::make_mut(&mut self.leads.removed).insert(index);
        true
    }

    /// Sets the status of live lead `lead_id`; `false` if there is no such lead.
    pub fn set_lead_status(&mut self, lead_id: u64, status: &str) -> bool {
        let Some(index) = self.leads.index_of(lead_id) else {
            return false;
        };
        Arc::make_mut(&mut self.leads.statuses).insert(index, status.to_owned());
        true
    }

    /// Marks live lead `lead_id` unsubscribed; `false` if there is no such lead.
    pub fn unsubscribe_lead(&mut self, lead_id: u64) -> bool {
        let Some(index) = self.leads.index_of(lead_id) else {
            return false;
        };
        Arc::make_mut(&mut self.leads.unsubscribed).insert(index);
        true
    }

    /// Live lead `lead_id` as it reads now.
    pub fn lead(&self, lead_id: u64) -> Option<Lead> {
        self.leads.get(self.leads.index_of(lead_id)?)
    }
}

/// All campaigns, the account-wide objects, and the id counter for campaigns
/// the API creates.
#[derive(Debug)]
pub struct Store {
    pub campaigns: BTreeMap<u64, Campaign>,
    pub account: AccountWide,
    next_campaign_id: u64,
}

impl Store {
    /// A store holding the seeded campaigns.
    pub fn new(seeds: &[CampaignSeed]) -> Self {
        let campaigns: BTreeMap<u64, Campaign> = seeds
            .iter()
            .map(|s| {
                let created = lead::timestamp(1_732_527_826 + s.id * 60);
                let c = Campaign::seeded(
                    s.id,
                    s.name.clone(),
                    s.status.clone(),
                    s.client_id,
                    s.leads,
                    created,
                );
                (s.id, c)
            })
            .collect();
        let next_campaign_id = campaigns
            .keys()
            .next_back()
            .map_or(FIRST_CREATED_ID, |max| (max + 1).max(FIRST_CREATED_ID));
        let mut store = Self {
            campaigns,
            account: AccountWide::seeded(seeds.iter().map(|s| (s.id, s.leads))),
            next_campaign_id,
        };
        // The account shared by the first two seeds goes after their own two.
        for seed in seeds.iter().take(2) {
            if let Some(c) = store.campaigns.get_mut(&seed.id) {
                c.email_account_ids.push(account::SHARED_ACCOUNT_ID);
            }
        }
        store
    }

    /// Creates an empty DRAFTED campaign (see [`Campaign::created`]) and returns it.
    pub fn create_campaign(&mut self, name: String, client_id: Option<u64>) -> &Campaign {
        let id = self.next_campaign_id;
        self.next_campaign_id += 1;
        let campaign = Campaign::created(id, name, client_id, now());
        self.campaigns.entry(id).or_insert(campaign)
    }

    /// The campaign holding live lead `lead_id` (lead ids are campaign-scoped).
    pub fn lead_campaign(&self, lead_id: u64) -> Option<&Campaign> {
        let c = self.campaigns.get(&lead::campaign_of(lead_id)?)?;
        c.leads.index_of(lead_id).map(|_| c)
    }

    /// [`Store::lead_campaign`], mutably.
    pub fn lead_campaign_mut(&mut self, lead_id: u64) -> Option<&mut Campaign> {
        let c = self.campaigns.get_mut(&lead::campaign_of(lead_id)?)?;
        c.leads.index_of(lead_id).is_some().then_some(c)
    }
}

/// The current time in the API's timestamp format.
pub fn now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    lead::timestamp(secs)
}

fn default_sequences(campaign_id: u64) -> Vec<Value> {
    (1..=2u64)
        .map(|n| {
            let id = campaign_id * 1000 + n;
            let subject = if n == 1 { "Hello {{first_name}}" } else { "" };
            json!({
                "id": id,
                "created_at": "2025-11-25T10:43:46.826Z",
                "updated_at": "2025-11-25T10:43:46.826Z",
                "email_campaign_id": campaign_id,
                "seq_number": n,
                "subject": subject,
                "email_body": format!("<p>Step {n} for campaign {campaign_id}</p>"),
                "seq_delay_details": {"delay_in_days": if n == 1 { 0 } else { 3 }},
                "sequence_variants": [{
                    "id": id * 10 + 1,
                    "variant_label": "A",
                    "subject": subject,
                    "email_body": format!("<p>Step {n} variant A</p>"),
                    "variant_distribution_percentage": Value::Null,
                }],
            })
        })
        .collect()
}
