//! Deterministic leads. A generated lead is a pure function of (campaign id,
//! index), so the streamed export, the paginated `/leads` route, the analytics and
//! the tests' expected CSV all agree without storing hundreds of thousands of rows.

use serde_json::{json, Map, Value};

/// Lead statuses within a campaign, cycled by index.
const STATUSES: [&str; 5] = ["STARTED", "INPROGRESS", "COMPLETED", "PAUSED", "STOPPED"];
/// Lead categories, cycled by index (`""` means uncategorised).
const CATEGORIES: [&str; 3] = ["Interested", "", "Not Interested"];

/// One lead as it sits in a campaign.
#[derive(Clone, Debug, PartialEq)]
pub struct Lead {
    pub id: u64,
    pub campaign_lead_map_id: u64,
    pub status: String,
    pub category: String,
    pub created_at: String,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    pub phone_number: String,
    pub company_name: String,
    pub website: String,
    pub location: String,
    pub custom_fields: Map<String, Value>,
    pub linkedin_profile: String,
    pub company_url: String,
    pub counts: Counts,
}

/// The lead id for index `index` of campaign `campaign_id`.
pub fn lead_id(campaign_id: u64, index: usize) -> u64 {
    campaign_id * 10_000_000 + index as u64 + 1
}

/// The campaign whose leads use id `lead_id` (the inverse of [`lead_id`]); the
/// lead itself may not exist.
pub fn campaign_of(lead_id: u64) -> Option<u64> {
    lead_id.checked_sub(1).map(|i| i / 10_000_000)
}

/// The category that index `index` would be generated with.
pub fn category_for(index: usize) -> &'static str {
    CATEGORIES[index % CATEGORIES.len()]
}

/// The status that index `index` would be generated with.
pub fn status_for(index: usize) -> &'static str {
    STATUSES[index % STATUSES.len()]
}

/// A lead's activity counters, cheap to compute without building the lead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub last_email_sequence_sent: u64,
    pub open_count: u64,
    pub click_count: u64,
    pub reply_count: u64,
    pub is_unsubscribed: bool,
}

impl Counts {
    /// The counters of generated index `i`.
    pub fn for_index(i: usize) -> Self {
        Self {
            last_email_sequence_sent: (i % 3) as u64,
            open_count: (i % 5) as u64,
            click_count: (i % 3) as u64,
            reply_count: (i % 2) as u64,
            is_unsubscribed: i % 50 == 49,
        }
    }
}

impl Lead {
    /// The generated lead at `index` of campaign `campaign_id`.
    pub fn generate(campaign_id: u64, index: usize) -> Self {
        let i = index;
        let id = lead_id(campaign_id, i);
        let company_name = if i % 10 == 9 {
            format!("The \"Best\" Co {i}")
        } else {
            format!("Company {i}, Inc.")
        };
        let mut custom_fields = Map::new();
        custom_fields.insert(
            "job_title".to_owned(),
            Value::from(format!("Title {}", i % 7)),
        );
        custom_fields.insert("index".to_owned(), Value::from(i.to_string()));
        Self {
            id,
            campaign_lead_map_id: 900_000_000_000 + id,
            status: status_for(i).to_owned(),
            category: category_for(i).to_owned(),
            created_at: timestamp(1_735_689_600 + i as u64),
            first_name: format!("First{i}"),
            last_name: format!("Last{i}"),
            email: format!("lead{i}@example{campaign_id}.com"),
            phone_number: if i % 4 == 3 {
                String::new()
            } else {
                format!("+1555{:07}", i % 10_000_000)
            },
            company_name,
            website: if i % 4 == 2 {
                String::new()
            } else {
                format!("https://company{i}.example")
            },
            location: format!("City {}", i % 100),
            custom_fields,
            linkedin_profile: format!("https://linkedin.com/in/lead{i}"),
            company_url: format!("https://company{i}.example"),
            counts: Counts::for_index(i),
        }
    }

    /// A lead added through `POST /campaigns/{id}/leads` from one `lead_list` entry.
    pub fn from_upload(
        campaign_id: u64,
        index: usize,
        entry: &Map<String, Value>,
        email: &str,
    ) -> Self {
        let text = |key: &str| match entry.get(key) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let id = lead_id(campaign_id, index);
        let custom_fields = match entry.get("custom_fields") {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        Self {
            id,
            campaign_lead_map_id: 900_000_000_000 + id,
            status: "STARTED".to_owned(),
            category: String::new(),
            created_at: timestamp(1_767_225_600 + index as u64),
            first_name: text("first_name"),
            last_name: text("last_name"),
            email: email.to_owned(),
            phone_number: text("phone_number"),
            company_name: text("company_name"),
            website: text("website"),
            location: text("location"),
            custom_fields,
            linkedin_profile: text("linkedin_profile"),
            company_url: text("company_url"),
            counts: Counts::default(),
        }
    }

    /// Whether the lead's category is "Interested".
    pub fn is_interested(&self) -> bool {
        self.category == "Interested"
    }

    /// The numeric category id the `/leads` route reports (`null` if none).
    pub fn lead_category_id(&self) -> Value {
        match self.category.as_str() {
            "Interested" => json!(1),
            "Not Interested" => json!(3),
            _ => Value::Null,
        }
    }

    /// The account-wide lead object of `GET /leads/{lead_id}` (one `data` entry).
    pub fn to_lead_object(&self) -> Value {
        json!({
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "email": self.email,
            "phone_number": self.phone_number,
            "company_name": self.company_name,
            "website": self.website,
            "location": self.location,
            "custom_fields": self.custom_fields,
            "linkedin_profile": self.linkedin_profile,
            "company_url": self.company_url,
            "is_unsubscribed": self.counts.is_unsubscribed,
            "unsubscribed_client_id_map": Value::Null,
            "created_at": self.created_at,
        })
    }

    /// One entry of `GET /campaigns/{id}/leads` `data` (reference §1.4).
    pub fn to_list_entry(&self) -> Value {
        json!({
            "campaign_lead_map_id": self.campaign_lead_map_id,
            "lead_category_id": self.lead_category_id(),
            "status": self.status,
            "created_at": self.created_at,
            "lead": {
                "id": self.id,
                "first_name": self.first_name,
                "last_name": self.last_name,
                "email": self.email,
                "phone_number": self.phone_number,
                "company_name": self.company_name,
                "website": self.website,
                "location": self.location,
                "linkedin_profile": self.linkedin_profile,
                "company_url": self.company_url,
                "custom_fields": self.custom_fields,
                "is_unsubscribed": self.counts.is_unsubscribed,
                "unsubscribed_client_id_map": Value::Null,
            }
        })
    }
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SS.000Z`.
pub fn timestamp(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Howard Hinnant's days-since-epoch to (year, month, day) conversion.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_utc() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_735_689_600 + 3661), "2025-01-01T01:01:01.000Z");
        assert_eq!(timestamp(1_709_164_800), "2024-02-29T00:00:00.000Z");
    }

    #[test]
    fn generation_is_deterministic() {
        assert_eq!(Lead::generate(101, 7), Lead::generate(101, 7));
        assert_eq!(Lead::generate(101, 0).email, "lead0@example101.com");
        assert_ne!(Lead::generate(101, 0).id, Lead::generate(102, 0).id);
    }
}
