//! The account-wide objects, the ones that belong to the SmartLead account rather
//! than to one campaign: sender email accounts (campaigns hold only their ids),
//! lead lists, global webhooks, client API keys and the domain block list, with
//! their default seeds. Their routes are in [`crate::account_routes`].
//!
//! Seeds: each seeded campaign `C` owns accounts `C*10+1` ("Alice Sender") and
//! `C*10+2` ("Bob Sender"); account [`SHARED_ACCOUNT_ID`] is attached to the
//! first two seeds as well; lead list 501 holds leads 50101..50103; global
//! webhook 9101; client API keys 301 and 302; block-list entries 701 and 702.
//!
//! The account's unsubscribe list holds every email unsubscribed account-wide
//! (`POST /leads/{id}/unsubscribe`, [`AccountWide::unsubscribe`]) plus the
//! generated leads that are born unsubscribed (see
//! [`crate::lead::Counts::for_index`]); it outlives the campaigns, so a lead
//! re-uploaded after its campaign was deleted is still refused.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};

use crate::state::USER_ID;

/// The sender account attached to the first two seeded campaigns.
pub const SHARED_ACCOUNT_ID: u64 = 9001;

/// One lead list and its leads (`{"id","email","first_name","last_name","company_name"}`).
#[derive(Clone, Debug)]
pub struct LeadList {
    pub id: u64,
    pub name: String,
    pub created_at: String,
    pub leads: Vec<Value>,
}

impl LeadList {
    /// The object of `GET /lead-list/{id}`.
    pub fn summary(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "lead_count": self.leads.len(),
        })
    }
}

/// Everything account-wide, each kind keyed (and listed) by id.
#[derive(Clone, Debug, Default)]
pub struct AccountWide {
    pub email_accounts: BTreeMap<u64, Value>,
    pub lead_lists: BTreeMap<u64, LeadList>,
    pub webhooks: BTreeMap<u64, Value>,
    pub api_keys: BTreeMap<u64, Value>,
    pub block_list: BTreeMap<u64, Value>,
    /// Emails (lower-cased) unsubscribed account-wide through the API.
    pub unsubscribed: HashSet<String>,
    /// How many generated leads each seeded campaign started with, for the
    /// born-unsubscribed part of the unsubscribe list.
    generated: BTreeMap<u64, usize>,
}

impl AccountWide {
    /// The default account-wide objects, with the own accounts of `campaigns`
    /// (given as id and number of generated leads).
    pub fn seeded(campaigns: impl IntoIterator<Item = (u64, usize)>) -> Self {
        let mut a = Self::default();
        for (id, leads) in campaigns {
            a.add_own_accounts(id);
            a.generated.insert(id, leads);
        }
        a.email_accounts
            .entry(SHARED_ACCOUNT_ID)
            .or_insert_with(shared_account);
        let list = LeadList {
            id: 501,
            name: "Imported March".to_owned(),
            created_at: "2025-03-03T09:00:00.000Z".to_owned(),
            leads: [
                ("ann", "Ann", "Archer", "Acme Ltd"),
                ("ben", "Ben", "Baker", "Bakery Co"),
                ("cy", "Cy", "Cole", "Cole & Sons"),
            ]
            .iter()
            .zip(50_101u64..)
            .map(|(&(user, first, last, company), id)| {
                json!({
                    "id": id, "email": format!("{user}@list.example.com"),
                    "first_name": first, "last_name": last, "company_name": company,
                })
            })
            .collect(),
        };
        a.lead_lists.insert(list.id, list);
        a.webhooks.insert(
            9101,
            json!({
                "id": 9101, "name": "All replies",
                "webhook_url": "https://hooks.example.com/smartlead/all",
                "event_types": ["EMAIL_REPLY"], "categories": [],
            }),
        );
        for (id, letter, client, key) in [
            (301, "A", 11, "clk_live_A_0123456789abcdef"),
            (302, "B", 12, "clk_live_B_fedcba9876543210"),
        ] {
            a.api_keys.insert(
                id,
                json!({
                    "id": id, "name": format!("Client {letter}"), "client_id": client,
                    "api_key": key, "status": "active", "created_at": "2025-02-01T12:00:00.000Z",
                }),
            );
        }
        for (id, domain) in [(701, "competitor.example"), (702, "blocked@person.example")] {
            a.block_list.insert(
                id,
                json!({
                    "id": id, "domain": domain, "client_id": Value::Null,
                    "created_at": "2025-02-10T08:30:00.000Z",
                }),
            );
        }
        a
    }

    /// Puts `email` on the account's unsubscribe list.
    pub fn unsubscribe(&mut self, email: &str) {
        self.unsubscribed.insert(email.to_ascii_lowercase());
    }

    /// Whether `email` (lower-cased) is on the account's unsubscribe list.
    pub fn is_unsubscribed(&self, email: &str) -> bool {
        if self.unsubscribed.contains(email) {
            return true;
        }
        // Generated `lead{i}@example{campaign}.com`, born unsubscribed.
        let Some((local, domain)) = email.split_once('@') else {
            return false;
        };
        let index = local
            .strip_prefix("lead")
            .and_then(|i| i.parse::<usize>().ok());
        let campaign = domain
            .strip_prefix("example")
            .and_then(|d| d.strip_suffix(".com"))
            .and_then(|c| c.parse::<u64>().ok());
        match (index, campaign) {
            (Some(i), Some(c)) => {
                self.generated.get(&c).is_some_and(|&n| i < n)
                    && crate::lead::Counts::for_index(i).is_unsubscribed
            }
            _ => false,
        }
    }

    /// Whether `email` (lower-cased) or its domain is on the block list.
    pub fn is_blocked(&self, email: &str) -> bool {
        let domain = email.rsplit_once('@').map_or("", |(_, d)| d);
        self.block_list.values().any(|entry| {
            entry["domain"]
                .as_str()
                .is_some_and(|b| b.eq_ignore_ascii_case(email) || b.eq_ignore_ascii_case(domain))
        })
    }

    /// The account objects for `ids`, in that order, skipping unknown ids.
    pub fn attached(&self, ids: &[u64]) -> Vec<Value> {
        ids.iter()
            .filter_map(|id| self.email_accounts.get(id).cloned())
            .collect()
    }

    /// Stores campaign `campaign_id`'s own two sender accounts (see
    /// [`own_account_ids`]) unless accounts with those ids exist already.
    pub fn add_own_accounts(&mut self, campaign_id: u64) {
        let [alice, bob] = own_account_ids(campaign_id);
        for (id, name) in [(alice, "Alice Sender"), (bob, "Bob Sender")] {
            self.email_accounts
                .entry(id)
                .or_insert_with(|| email_account(id, name));
        }
    }
}

/// The ids of the two accounts every campaign starts with.
pub fn own_account_ids(campaign_id: u64) -> [u64; 2] {
    [campaign_id * 10 + 1, campaign_id * 10 + 2]
}

/// A full sender account object.
fn email_account(id: u64, from_name: &str) -> Value {
    let user = from_name
        .split(' ')
        .next()
        .unwrap_or("sender")
        .to_lowercase();
    full_account(id, from_name, &format!("{user}{id}@sender.example.com"))
}

/// [`SHARED_ACCOUNT_ID`]'s object.
fn shared_account() -> Value {
    full_account(
        SHARED_ACCOUNT_ID,
        "Shared Sender",
        "shared@outreach.example.com",
    )
}

fn full_account(id: u64, from_name: &str, email: &str) -> Value {
    json!({
        "id": id,
        "from_name": from_name,
        "from_email": email,
        "username": email,
        "user_id": USER_ID,
        "type": "SMTP",
        "smtp_host": "smtp.sender.example.com",
        "smtp_port": 587,
        "message_per_day": 40,
        "daily_sent_count": 0,
        "is_smtp_success": true,
        "is_imap_success": true,
    })
}
