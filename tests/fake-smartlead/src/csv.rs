//! The leads export (`GET /campaigns/{id}/leads-export`): the 22-column header of
//! reference §1.3, every field quoted, `custom_fields` as a JSON object in one
//! cell. Rows are generated a chunk at a time as hyper asks for more, so a
//! half-million-lead export streams with flat memory; [`expected_csv`] walks the
//! very same chunks so tests can compare bytes exactly.

use bytes::Bytes;
use futures_util::stream;

use crate::body::ByteStream;
use crate::lead::Lead;
use crate::state::LeadSet;

/// The export's header row, in the order SmartLead sends it.
pub const COLUMNS: [&str; 22] = [
    "id",
    "campaign_lead_map_id",
    "status",
    "category",
    "is_interested",
    "created_at",
    "first_name",
    "last_name",
    "email",
    "phone_number",
    "company_name",
    "website",
    "location",
    "custom_fields",
    "linkedin_profile",
    "company_url",
    "is_unsubscribed",
    "unsubscribed_client_id_map",
    "last_email_sequence_sent",
    "open_count",
    "click_count",
    "reply_count",
];

/// Rows generated per body chunk (~150 KB).
const ROWS_PER_CHUNK: usize = 500;

/// Where a walk over the export has got to.
struct Cursor {
    leads: LeadSet,
    next_slot: usize,
    header_done: bool,
}

impl Cursor {
    fn new(leads: LeadSet) -> Self {
        Self {
            leads,
            next_slot: 0,
            header_done: false,
        }
    }

    /// The next chunk of the file, or `None` when it is complete.
    fn next_chunk(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(64 * 1024);
        if !self.header_done {
            self.header_done = true;
            write_row(&mut out, COLUMNS.iter().copied());
        } else if self.next_slot >= self.leads.slots() {
            return None;
        }
        let mut rows = 0;
        while rows < ROWS_PER_CHUNK && self.next_slot < self.leads.slots() {
            if let Some(lead) = self.leads.get(self.next_slot) {
                write_lead(&mut out, &lead);
                rows += 1;
            }
            self.next_slot += 1;
        }
        Some(out)
    }
}

/// The export body as a lazily generated stream.
pub fn stream_csv(leads: LeadSet) -> ByteStream {
    Box::pin(stream::unfold(
        Cursor::new(leads),
        |mut cursor| async move {
            let chunk = cursor.next_chunk()?;
            Some((Ok(Bytes::from(chunk)), cursor))
        },
    ))
}

/// The exact bytes [`stream_csv`] produces for the same leads.
pub fn expected_csv(leads: LeadSet) -> Vec<u8> {
    let mut cursor = Cursor::new(leads);
    let mut out = Vec::new();
    while let Some(chunk) = cursor.next_chunk() {
        out.extend_from_slice(&chunk);
    }
    out
}

fn write_lead(out: &mut Vec<u8>, lead: &Lead) {
    let custom = serde_json::Value::Object(lead.custom_fields.clone()).to_string();
    let fields: [&str; 22] = [
        &lead.id.to_string(),
        &lead.campaign_lead_map_id.to_string(),
        &lead.status,
        &lead.category,
        bool_str(lead.is_interested()),
        &lead.created_at,
        &lead.first_name,
        &lead.last_name,
        &lead.email,
        &lead.phone_number,
        &lead.company_name,
        &lead.website,
        &lead.location,
        &custom,
        &lead.linkedin_profile,
        &lead.company_url,
        bool_str(lead.counts.is_unsubscribed),
        "",
        &lead.counts.last_email_sequence_sent.to_string(),
        &lead.counts.open_count.to_string(),
        &lead.counts.click_count.to_string(),
        &lead.counts.reply_count.to_string(),
    ];
    write_row(out, fields.iter().copied());
}

fn bool_str(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// Writes one line with every field quoted and inner quotes doubled.
fn write_row<'a>(out: &mut Vec<u8>, fields: impl Iterator<Item = &'a str>) {
    for (n, field) in fields.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        out.push(b'"');
        for &b in field.as_bytes() {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
    }
    out.push(b'\n');
}
