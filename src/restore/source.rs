//! A snapshot read back for a restore: its small JSON parts in memory, its
//! leads export copied (checksum-verified) to a private temporary file and
//! read from there row by row, so a 500,000-lead campaign never sits in memory.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::db::Pool;
use serde_json::{Map, Value};

use crate::snapshot::store::{self, PartKind, SnapshotInfo, StoreError};

/// The operations whose snapshots can be rebuilt as a new campaign.
pub const CAMPAIGN_OPERATIONS: &[&str] = &["campaign.delete", "campaign.stop"];

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("snapshot {snapshot_id} is {state}, not complete; only a complete snapshot can be restored (`safedelete snapshots show {snapshot_id}`)")]
    NotComplete { snapshot_id: i64, state: String },
    #[error("snapshot {snapshot_id} was taken for {operation}, which a campaign restore cannot rebuild (it rebuilds {}); `safedelete snapshots export {snapshot_id}` gives its data back", CAMPAIGN_OPERATIONS.join(" and "))]
    NotACampaign { snapshot_id: i64, operation: String },
    #[error("snapshot {snapshot_id}: its {kind} part is not what SmartLead sends ({problem})")]
    BadPart {
        snapshot_id: i64,
        kind: PartKind,
        problem: String,
    },
    #[error("cannot write the leads export to {path}: {source}")]
    TempFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot {snapshot_id}: the leads export cannot be read as CSV: {source}")]
    Csv {
        snapshot_id: i64,
        #[source]
        source: csv::Error,
    },
}

/// What a campaign snapshot holds, ready to plan a restore from.
#[derive(Debug)]
pub struct Captured {
    pub snapshot: SnapshotInfo,
    pub campaign: Map<String, Value>,
    pub sequences: Vec<Value>,
    pub webhooks: Vec<Value>,
    pub email_accounts: Vec<Value>,
    /// The leads export, as SmartLead sent it.
    pub leads_csv: TempFile,
}

/// Reads a complete campaign snapshot.
pub async fn read(pool: &Pool, snapshot_id: i64) -> Result<Captured, SourceError> {
    let snapshot = store::get_snapshot(pool, snapshot_id).await?;
    if !CAMPAIGN_OPERATIONS.contains(&snapshot.operation.as_str()) {
        return Err(SourceError::NotACampaign {
            snapshot_id,
            operation: snapshot.operation,
        });
    }
    if snapshot.state != "complete" {
        return Err(SourceError::NotComplete {
            snapshot_id,
            state: snapshot.state,
        });
    }
    let campaign = match json_part(pool, snapshot_id, PartKind::Campaign).await? {
        Value::Object(map) => map,
        other => {
            return Err(bad(
                snapshot_id,
                PartKind::Campaign,
                not_a("an object", &other),
            ))
        }
    };
    let sequences = array_part(pool, snapshot_id, PartKind::Sequences).await?;
    let webhooks = array_part(pool, snapshot_id, PartKind::Webhooks).await?;
    let email_accounts = array_part(pool, snapshot_id, PartKind::EmailAccounts).await?;
    let leads_csv = TempFile::create(&format!("restore-{snapshot_id}-leads.csv"))?;
    let mut file = tokio::fs::File::from_std(leads_csv.reopen()?);
    store::export_part(pool, snapshot_id, PartKind::LeadsCsv, &mut file).await?;
    Ok(Captured {
        snapshot,
        campaign,
        sequences,
        webhooks,
        email_accounts,
        leads_csv,
    })
}

pub(super) async fn json_part(pool: &Pool, id: i64, kind: PartKind) -> Result<Value, SourceError> {
    let mut bytes = Vec::new();
    store::export_part(pool, id, kind, &mut bytes).await?;
    serde_json::from_slice(&bytes).map_err(|e| bad(id, kind, format!("not JSON: {e}")))
}

/// A list part: a bare array, or SmartLead's `{"data": [...]}` envelope.
pub(super) async fn array_part(
    pool: &Pool,
    id: i64,
    kind: PartKind,
) -> Result<Vec<Value>, SourceError> {
    match json_part(pool, id, kind).await? {
        Value::Array(items) => Ok(items),
        Value::Object(mut map) => match map.remove("data") {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(bad(id, kind, "an object without a `data` array".into())),
        },
        other => Err(bad(id, kind, not_a("an array", &other))),
    }
}

pub(super) fn bad(snapshot_id: i64, kind: PartKind, problem: String) -> SourceError {
    SourceError::BadPart {
        snapshot_id,
        kind,
        problem,
    }
}

fn not_a(wanted: &str, got: &Value) -> String {
    let what = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    format!("{what}, not {wanted}")
}

/// One lead of the export, with what a restore sends and what decides
/// whether it may be emailed again.
#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    pub email: String,
    /// `first_name`, `last_name`, `phone_number`, ...: the add-leads fields
    /// the export has, as text.
    pub fields: Vec<(&'static str, String)>,
    pub custom_fields: Map<String, Value>,
    /// The lead's status in the campaign (`STARTED`, `BLOCKED`, ...).
    pub status: String,
    pub category: String,
    pub is_unsubscribed: bool,
}

/// The add-leads fields (reference §1.7) besides `email` and `custom_fields`,
/// each read from the export column of the same name.
pub const LEAD_FIELDS: &[&str] = &[
    "first_name",
    "last_name",
    "phone_number",
    "company_name",
    "website",
    "location",
    "linkedin_profile",
    "company_url",
];

/// Reads the leads export row by row, by column name (exports have had 20,
/// 21 and 22 columns).
pub struct LeadReader {
    rows: csv::StringRecordsIntoIter<std::fs::File>,
    snapshot_id: i64,
    email: usize,
    fields: Vec<(&'static str, usize)>,
    custom_fields: Option<usize>,
    status: Option<usize>,
    category: Option<usize>,
    is_unsubscribed: Option<usize>,
}

impl LeadReader {
    pub fn open(captured: &Captured) -> Result<LeadReader, SourceError> {
        let snapshot_id = captured.snapshot.id;
        let csv_error = |source| SourceError::Csv {
            snapshot_id,
            source,
        };
        let mut reader = csv::ReaderBuilder::new()
            .flexible(true)
            .from_reader(captured.leads_csv.reopen()?);
        let headers = reader.headers().map_err(csv_error)?.clone();
        let at = |name: &str| headers.iter().position(|h| h.trim() == name);
        let email = at("email").ok_or_else(|| {
            bad(
                snapshot_id,
                PartKind::LeadsCsv,
                "the header row has no `email` column".into(),
            )
        })?;
        Ok(LeadReader {
            fields: LEAD_FIELDS
                .iter()
                .filter_map(|f| at(f).map(|i| (*f, i)))
                .collect(),
            custom_fields: at("custom_fields"),
            status: at("status"),
            category: at("category"),
            is_unsubscribed: at("is_unsubscribed"),
            email,
            snapshot_id,
            rows: reader.into_records(),
        })
    }
}

impl Iterator for LeadReader {
    type Item = Result<Lead, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        let row = match self.rows.next()? {
            Ok(row) => row,
            Err(source) => {
                return Some(Err(SourceError::Csv {
                    snapshot_id: self.snapshot_id,
                    source,
                }))
            }
        };
        let cell = |i: Option<usize>| i.and_then(|i| row.get(i)).unwrap_or("").to_string();
        let custom_fields = match serde_json::from_str::<Value>(&cell(self.custom_fields)) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        Some(Ok(Lead {
            email: cell(Some(self.email)).trim().to_string(),
            fields: self
                .fields
                .iter()
                .map(|(name, i)| (*name, cell(Some(*i))))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            custom_fields,
            status: cell(self.status),
            category: cell(self.category),
            is_unsubscribed: cell(self.is_unsubscribed).eq_ignore_ascii_case("true"),
        }))
    }
}

/// A private (0600) file in the system's temporary directory, removed when
/// dropped.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    fn create(name: &str) -> Result<TempFile, SourceError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = std::env::temp_dir().join(format!(
            "safedelete-{}-{}-{name}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        let mut file = file.map_err(|source| SourceError::TempFile {
            path: path.clone(),
            source,
        })?;
        file.flush().ok();
        Ok(TempFile { path })
    }

    /// The file, opened again for reading and writing from its start.
    pub fn reopen(&self) -> Result<std::fs::File, SourceError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|source| SourceError::TempFile {
                path: self.path.clone(),
                source,
            })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
