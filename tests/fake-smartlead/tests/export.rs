//! The leads export: exact header row, quoting, the custom_fields cell, and that
//! it streams (chunked, no Content-Length) with the same bytes the handle predicts.

mod common;

use common::{api, build, exchange, fields, KEY};
use fake_smartlead::{start, FakeConfig};
use tokio::net::TcpStream;

const HEADER: &str = r#""id","campaign_lead_map_id","status","category","is_interested","created_at","first_name","last_name","email","phone_number","company_name","website","location","custom_fields","linkedin_profile","company_url","is_unsubscribed","unsubscribed_client_id_map","last_email_sequence_sent","open_count","click_count","reply_count""#;

#[tokio::test]
async fn export_has_the_22_column_header_and_every_field_quoted() {
    let h = start(FakeConfig::default()).await.unwrap();
    let r = api(&h, "GET", "/campaigns/101/leads-export", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/csv"));
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=sl_campaign_101_leads.csv")
    );
    let text = r.text();
    assert!(text.ends_with('\n') && !text.contains('\r'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], HEADER);
    assert_eq!(lines.len(), 26, "header plus 25 leads");
    for line in &lines[1..] {
        assert_eq!(fields(line).len(), 22, "{line}");
    }
    let row = fields(lines[1]);
    assert_eq!(
        (row[2].as_str(), row[3].as_str(), row[4].as_str()),
        ("STARTED", "Interested", "true")
    );
    assert_eq!(row[8], "lead0@example101.com");
    let custom: serde_json::Value =
        serde_json::from_str(&row[13]).expect("custom_fields is a JSON object");
    assert!(custom.is_object());
    assert!(lines[1].contains(r#","{""index"":""0"",""job_title"":""Title 0""}","#));
    assert_eq!(row[17], "", "unsubscribed_client_id_map is empty");
    assert!(row[18].parse::<u64>().is_ok() && row[21].parse::<u64>().is_ok());
    // Row 9 has quotes and a comma-free company name; row 1 a comma inside a field.
    assert_eq!(fields(lines[10])[10], r#"The "Best" Co 9"#);
    assert_eq!(fields(lines[2])[10], "Company 1, Inc.");
    assert_eq!(r.body, h.expected_leads_csv(101));
}

#[tokio::test]
async fn an_empty_campaign_exports_just_the_header() {
    let h = start(FakeConfig::default()).await.unwrap();
    let r = api(&h, "GET", "/campaigns/103/leads-export", "").await;
    assert_eq!(r.text(), format!("{HEADER}\n"));
}

#[tokio::test]
async fn a_large_export_streams_in_chunks_without_content_length() {
    let h = start(FakeConfig::with_leads(20_000)).await.unwrap();
    let r = api(&h, "GET", "/campaigns/101/leads-export", "").await;
    assert!(r.chunked, "export must be chunked");
    assert!(r.complete);
    assert_eq!(r.header("content-length"), None);
    assert!(
        r.chunks >= 40,
        "20k rows in 500-row chunks, got {} chunks",
        r.chunks
    );
    assert_eq!(r.text().lines().count(), 20_001);
    assert_eq!(r.body, h.expected_leads_csv(101));
}

#[tokio::test]
async fn head_on_the_export_sends_no_body_and_keeps_the_connection_usable() {
    let h = start(FakeConfig::default()).await.unwrap();
    let mut conn = TcpStream::connect(h.addr()).await.unwrap();
    let target = format!("/api/v1/campaigns/101/leads-export?api_key={KEY}");
    let head = exchange(&mut conn, &build("HEAD", &target, &[], b""), true)
        .await
        .unwrap();
    assert_eq!(
        (head.status, head.header("content-type")),
        (200, Some("text/csv"))
    );
    let get = exchange(&mut conn, &build("GET", &target, &[], b""), false)
        .await
        .unwrap();
    assert_eq!(get.status, 200);
    assert_eq!(get.body, h.expected_leads_csv(101));
    assert_eq!(h.connections_accepted(), 1);
}
