//! The admin JSON API on a database filled by real traffic through the
//! gateway: audit filters and cursor pages, a campaign's history, snapshot
//! listings, and parts streamed back byte for byte (or visibly broken).

mod common;

use bytes::Bytes;
use common::*;
use fake_smartlead::{FakeConfig, FakeHandle, Fault, FaultRule};
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

const TOKEN: &str = "admin-token-0123456789";

async fn fake(leads: usize) -> FakeHandle {
    fake_smartlead::start(FakeConfig::with_leads(leads))
        .await
        .unwrap()
}

async fn delete(gw: &Gateway, campaign_id: i64) -> Reply {
    let target = format!("/api/v1/campaigns/{campaign_id}?api_key={KEY}");
    send(
        Request::delete(gw.url(&target))
            .body(Full::default())
            .unwrap(),
    )
    .await
}

async fn read(gw: &Gateway, campaign_id: i64) -> Reply {
    get(&gw.url(&format!("/api/v1/campaigns/{campaign_id}?api_key={KEY}"))).await
}

fn snapshot_id(reply: &Reply) -> i64 {
    reply
        .header("x-safedelete-snapshot-id")
        .expect("a snapshot id header")
        .parse()
        .unwrap()
}

/// An admin GET answered 200 with JSON.
async fn ok_json(gw: &Gateway, target: &str) -> Value {
    let reply = get(&gw.admin_url(target)).await;
    assert_eq!(reply.status, 200, "{target}: {:?}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}

/// An admin GET refused with `status` and a JSON error mentioning `needle`.
async fn refused(gw: &Gateway, target: &str, status: u16, needle: &str) {
    let reply = get(&gw.admin_url(target)).await;
    assert_eq!(reply.status, status, "{target}: {:?}", reply.body);
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains(needle), "{target}: {error}");
}

fn ids(items: &Value) -> Vec<i64> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect()
}

/// The ids of the whole trail, newest first.
async fn all_ids(gw: &Gateway, query: &str) -> Vec<i64> {
    let page = ok_json(gw, &format!("/v1/audit?limit=1000&{query}")).await;
    assert!(page["next_cursor"].is_null());
    ids(&page["items"])
}

#[tokio::test]
async fn audit_filters_narrow_the_trail_to_what_was_asked() {
    let up = fake(25).await;
    let gw = Gateway::start(&up.url()).await;
    assert_eq!(read(&gw, 101).await.status, 200);
    assert_eq!(read(&gw, 102).await.status, 200);
    assert_eq!(read(&gw, 999).await.status, 404);
    let archived = delete(&gw, 102).await;
    assert_eq!(archived.header("x-safedelete-action"), Some("archived"));
    gw.wait_for_audit_rows(4).await;

    let everything = ok_json(&gw, "/v1/audit").await;
    let items = everything["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 4, "{everything}");
    assert!(everything["next_cursor"].is_null());
    let newest_first = ids(&everything["items"]);
    assert!(
        newest_first.windows(2).all(|w| w[0] > w[1]),
        "{newest_first:?}"
    );
    assert_eq!(items[0]["method"], "DELETE");
    assert!(
        !items[0]["query"].as_str().unwrap().contains(KEY),
        "the key was redacted"
    );

    let campaign = ok_json(&gw, "/v1/audit?campaign=102").await;
    let campaign = campaign["items"].as_array().unwrap();
    assert_eq!(campaign.len(), 2);
    assert!(campaign.iter().all(|e| e["campaign_id"] == 102));

    let by_action = ok_json(&gw, "/v1/audit?action=archived").await;
    // The policy's word finds the same records.
    let by_policy_word = ok_json(&gw, "/v1/audit?action=archive").await;
    assert_eq!(ids(&by_policy_word["items"]), ids(&by_action["items"]));
    assert_eq!(ids(&by_action["items"]), vec![newest_first[0]]);
    assert_eq!(by_action["items"][0]["snapshot_id"], snapshot_id(&archived));
    let by_method = ok_json(&gw, "/v1/audit?method=delete").await;
    assert_eq!(ids(&by_method["items"]), vec![newest_first[0]]);
    let gets = ok_json(&gw, "/v1/audit?method=GET&status=200").await;
    assert_eq!(gets["items"].as_array().unwrap().len(), 2);
    let not_found = ok_json(&gw, "/v1/audit?status=404").await;
    assert_eq!(not_found["items"].as_array().unwrap().len(), 1);
    assert_eq!(not_found["items"][0]["campaign_id"], 999);
    let combined = ok_json(&gw, "/v1/audit?campaign=102&method=GET").await;
    assert_eq!(combined["items"].as_array().unwrap().len(), 1);

    // Absolute bounds: since <= time < until, in any offset.
    let times: Vec<String> = items
        .iter()
        .map(|e| e["time"].as_str().unwrap().to_string())
        .collect();
    let middle = &times[1];
    let expect = |keep: &dyn Fn(&str) -> bool| -> Vec<i64> {
        items
            .iter()
            .filter(|e| keep(e["time"].as_str().unwrap()))
            .map(|e| e["id"].as_i64().unwrap())
            .collect()
    };
    let since = all_ids(&gw, &format!("since={middle}")).await;
    assert_eq!(since, expect(&|t| t >= middle.as_str()));
    assert!(!since.is_empty() && since.len() < items.len(), "{times:?}");
    let until = all_ids(&gw, &format!("until={middle}")).await;
    assert_eq!(until, expect(&|t| t < middle.as_str()));
    assert_eq!(since.len() + until.len(), items.len());
    let shifted = in_plus_two(middle);
    assert_eq!(all_ids(&gw, &format!("since={shifted}")).await, since);

    // Relative bounds count back from now.
    assert_eq!(all_ids(&gw, "since=1h").await, newest_first);
    assert_eq!(all_ids(&gw, "since=7d&until=0s").await, newest_first);
    assert!(all_ids(&gw, "until=30m").await.is_empty());
    assert!(all_ids(&gw, "since=2999-01-01T00:00:00Z").await.is_empty());

    // Bad parameters are refused, named.
    refused(&gw, "/v1/audit?campaign=abc", 400, "campaign").await;
    refused(&gw, "/v1/audit?campaign=0", 400, "campaign").await;
    refused(&gw, "/v1/audit?since=yesterday", 400, "since").await;
    refused(&gw, "/v1/audit?until=24", 400, "until").await;
    refused(&gw, "/v1/audit?limit=0", 400, "limit").await;
    refused(&gw, "/v1/audit?limit=1001", 400, "limit").await;
    refused(&gw, "/v1/audit?status=abc", 400, "status").await;
    refused(&gw, "/v1/audit?action=archve", 400, "action").await;
    refused(&gw, "/v1/audit?method=GE%20T", 400, "method").await;
    refused(&gw, "/v1/audit?cursor=next", 400, "cursor").await;
    refused(&gw, "/v1/audit?campaing=101", 400, "campaing").await;
    refused(&gw, "/v1/audit?limit=1&limit=2", 400, "limit").await;
}

/// `2024-05-01T10:00:00.123Z` as `2024-05-01T12:00:00.123+02:00`.
fn in_plus_two(stored: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let t = time::OffsetDateTime::parse(stored, &Rfc3339).unwrap();
    let shifted = t.to_offset(time::macros::offset!(+2));
    let text = shifted.format(&Rfc3339).unwrap();
    assert!(text.ends_with("+02:00"), "{text}");
    text.replace('+', "%2B")
}

#[tokio::test]
async fn cursor_pages_cover_the_trail_once_in_order() {
    let up = fake(5).await;
    let gw = Gateway::start(&up.url()).await;
    for i in 0..25 {
        assert_eq!(read(&gw, [101, 102, 103][i % 3]).await.status, 200);
    }
    gw.wait_for_audit_rows(25).await;
    let full = all_ids(&gw, "").await;
    assert_eq!(full.len(), 25);

    for limit in [7, 5, 25, 1] {
        let mut pages: Vec<Vec<i64>> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let target = match &cursor {
                None => format!("/v1/audit?limit={limit}"),
                Some(c) => format!("/v1/audit?limit={limit}&cursor={c}"),
            };
            let page = ok_json(&gw, &target).await;
            let items = ids(&page["items"]);
            assert!(!items.is_empty(), "an empty page at {target}");
            assert!(items.len() <= limit);
            pages.push(items);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
            assert!(pages.len() <= 25, "the cursor never ends");
        }
        assert_eq!(pages.len(), 25usize.div_ceil(limit), "limit {limit}");
        let joined: Vec<i64> = pages.concat();
        assert_eq!(joined, full, "limit {limit}: pages overlap or skip");
    }

    // A filter and a cursor together page through the filtered list.
    let only_101 = all_ids(&gw, "campaign=101").await;
    let first = ok_json(&gw, "/v1/audit?campaign=101&limit=4").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let rest = all_ids(&gw, &format!("campaign=101&cursor={cursor}")).await;
    assert_eq!([ids(&first["items"]), rest].concat(), only_101);
}

#[tokio::test]
async fn history_tells_of_a_campaign_archived_then_deleted() {
    let up = fake(25).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[[policy.rules]]\nname = \"archived-may-go\"\naction = \"allow\"\nstatuses = [\"ARCHIVED\"]\n",
            ..Extra::default()
        },
    )
    .await;
    assert_eq!(read(&gw, 102).await.status, 200);
    let first = delete(&gw, 102).await;
    assert_eq!(first.header("x-safedelete-action"), Some("archived"));
    let second = delete(&gw, 102).await;
    assert_eq!(second.header("x-safedelete-action"), Some("allowed"));
    assert!(up.campaign(102).is_none());
    gw.wait_for_audit_rows(3).await;

    let history = ok_json(&gw, "/v1/history/102").await;
    assert_eq!(history["campaign_id"], 102);
    let ops = history["operations"].as_array().unwrap();
    assert_eq!(ops.len(), 2, "{history}");
    assert_eq!(ops[0]["action"], "archive");
    assert_eq!(ops[0]["state"], "done");
    assert!(ops[0]["sent_upstream"]
        .as_str()
        .unwrap()
        .contains("archived"));
    assert_eq!(ops[0]["snapshot"]["id"], snapshot_id(&first));
    assert_eq!(ops[1]["action"], "allow");
    assert_eq!(ops[1]["rule"], "archived-may-go");
    assert!(ops[1]["sent_upstream"]
        .as_str()
        .unwrap()
        .starts_with("DELETE"));
    assert_eq!(ops[1]["snapshot"]["id"], snapshot_id(&second));
    assert_eq!(ops[1]["snapshot"]["state"], "complete");
    assert_eq!(history["passthrough_requests"], 1);
    assert!(history["first_seen"].as_str().unwrap() <= history["last_seen"].as_str().unwrap());

    refused(&gw, "/v1/history/101", 404, "campaign 101").await;
    refused(&gw, "/v1/history/abc", 400, "campaign_id").await;
    refused(&gw, "/v1/history/-1", 400, "campaign_id").await;

    // The same two snapshots, newest first, in the listing and one by one.
    let list = ok_json(&gw, "/v1/snapshots?campaign=102").await;
    let listed = ids(&list["items"]);
    assert_eq!(listed, vec![snapshot_id(&second), snapshot_id(&first)]);
    for item in list["items"].as_array().unwrap() {
        assert_eq!(item["campaign_id"], 102);
        assert_eq!(item["state"], "complete");
        assert_eq!(item["parts"].as_array().unwrap().len(), 6);
        let one = ok_json(&gw, &format!("/v1/snapshots/{}", item["id"])).await;
        assert_eq!(&one, item);
    }
    assert_eq!(ids(&ok_json(&gw, "/v1/snapshots").await["items"]), listed);
    assert_eq!(
        ids(&ok_json(&gw, "/v1/snapshots?limit=1").await["items"]),
        vec![snapshot_id(&second)]
    );
    assert!(ids(&ok_json(&gw, "/v1/snapshots?campaign=101").await["items"]).is_empty());
    refused(&gw, "/v1/snapshots/9999", 404, "snapshot 9999").await;
    refused(&gw, "/v1/snapshots/abc", 400, "id").await;
    refused(&gw, "/v1/snapshots?limit=5000", 400, "limit").await;
    refused(&gw, "/v1/snapshots?campaign=x", 400, "campaign").await;
}

/// A part download: status, headers, and the body or its failure.
async fn download(
    gw: &Gateway,
    snapshot_id: i64,
    kind: &str,
) -> (http::response::Parts, Result<Bytes, String>) {
    let url = gw.admin_url(&format!("/v1/snapshots/{snapshot_id}/parts/{kind}"));
    let resp = client()
        .request(Request::get(url).body(Full::default()).unwrap())
        .await
        .expect("response head");
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string());
    (parts, body)
}

fn header<'a>(parts: &'a http::response::Parts, name: &str) -> &'a str {
    parts.headers.get(name).unwrap().to_str().unwrap()
}

#[tokio::test]
async fn a_hundred_thousand_lead_part_streams_back_byte_for_byte() {
    let up = fake(100_000).await;
    // Captured before the DELETE: what SmartLead held.
    let expected = up.expected_leads_csv(101);
    let gw = Gateway::start(&up.url()).await;
    let reply = delete(&gw, 101).await;
    assert_eq!(reply.header("x-safedelete-action"), Some("archived"));
    let id = snapshot_id(&reply);

    let (parts, body) = download(&gw, id, "leads_csv").await;
    assert_eq!(parts.status, 200);
    assert_eq!(header(&parts, "content-type"), "text/csv; charset=utf-8");
    assert_eq!(
        header(&parts, "content-disposition"),
        "attachment; filename=\"campaign-101-leads.csv\""
    );
    let body = body.expect("a clean transfer");
    assert_eq!(body.len(), expected.len());
    assert!(
        body == expected,
        "the download differs from what SmartLead served"
    );

    let (parts, body) = download(&gw, id, "campaign").await;
    assert_eq!(parts.status, 200);
    assert_eq!(header(&parts, "content-type"), "application/json");
    assert_eq!(
        header(&parts, "content-disposition"),
        "attachment; filename=\"campaign-101-campaign.json\""
    );
    let campaign: Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!(campaign["id"], 101);

    refused(
        &gw,
        &format!("/v1/snapshots/{id}/parts/leads"),
        404,
        "leads_csv",
    )
    .await;
    refused(
        &gw,
        "/v1/snapshots/9999/parts/leads_csv",
        404,
        "snapshot 9999",
    )
    .await;
    refused(&gw, "/v1/snapshots/x/parts/leads_csv", 400, "id").await;
}

#[tokio::test]
async fn a_part_that_is_not_complete_is_a_conflict() {
    let up = fake(5_000).await;
    up.fault(FaultRule {
        method: Some("GET".into()),
        path: "/api/v1/campaigns/101/leads-export".into(),
        times: None,
        fault: Fault {
            drop_after_bytes: Some(10_000),
            ..Fault::default()
        },
    });
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            tables: "[guard]\nsnapshot_budget = \"2s\"\n",
            ..Extra::default()
        },
    )
    .await;
    let reply = delete(&gw, 101).await;
    assert_eq!(reply.header("x-safedelete-action"), Some("refused"));
    let list = ok_json(&gw, "/v1/snapshots?campaign=101").await;
    let snapshot = &list["items"][0];
    assert_eq!(snapshot["state"], "failed", "{list}");
    let id = snapshot["id"].as_i64().unwrap();
    let leads = snapshot["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["kind"] == "leads_csv")
        .expect("the leads part was started");
    assert_ne!(leads["state"], "complete");
    refused(
        &gw,
        &format!("/v1/snapshots/{id}/parts/leads_csv"),
        409,
        "not complete",
    )
    .await;
    // The part captured before the failure is still there.
    let (parts, body) = download(&gw, id, "campaign").await;
    assert_eq!(parts.status, 200);
    assert!(body.is_ok());
}

#[tokio::test]
async fn a_corrupt_chunk_breaks_the_download_instead_of_truncating_it() {
    let up = fake(5_000).await;
    let expected = up.expected_leads_csv(101);
    let gw = Gateway::start(&up.url()).await;
    let id = snapshot_id(&delete(&gw, 101).await);
    let (_, clean) = download(&gw, id, "leads_csv").await;
    assert!(clean.unwrap() == expected);

    let pool = safedelete::db::open_existing(&gw.store).await.unwrap();
    let chunk = |kind: &'static str, seq: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_as::<_, (i64, Vec<u8>)>(
                "SELECT c.part_id, c.data FROM snapshot_chunks c \
                 JOIN snapshot_parts p ON p.id = c.part_id \
                 WHERE p.snapshot_id = $1 AND p.kind = $2 AND c.seq = $3",
            )
            .bind(id)
            .bind(kind)
            .bind(seq)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let set_chunk = |part_id: i64, seq: i64, data: Vec<u8>| {
        let pool = pool.clone();
        async move {
            let done =
                sqlx::query("UPDATE snapshot_chunks SET data = $1 WHERE part_id = $2 AND seq = $3")
                    .bind(data)
                    .bind(part_id)
                    .bind(seq)
                    .execute(&pool)
                    .await
                    .unwrap();
            assert_eq!(done.rows_affected(), 1);
        }
    };
    let (leads_part, first) = chunk("leads_csv", 0).await;
    let (_, _) = chunk("leads_csv", 1).await; // more than one chunk

    // One byte changed, still a valid frame: only the checksum at the end
    // can tell, after every byte has gone out. The client must not get a
    // clean file.
    let mut raw = zstd::bulk::decompress(&first, 1 << 20).unwrap();
    raw[0] ^= 0x20;
    set_chunk(leads_part, 0, zstd::bulk::compress(&raw, 3).unwrap()).await;
    let (parts, body) = download(&gw, id, "leads_csv").await;
    assert_eq!(parts.status, 200);
    assert!(
        body.is_err(),
        "a part failing its checksum downloaded cleanly"
    );

    // An undecodable chunk mid-part cuts the transfer there.
    set_chunk(leads_part, 1, vec![0]).await;
    let (parts, body) = download(&gw, id, "leads_csv").await;
    assert_eq!(parts.status, 200);
    assert!(
        body.is_err(),
        "a part with a broken chunk downloaded cleanly"
    );

    // An undecodable first chunk fails before any byte: a plain 500.
    let (sequences_part, _) = chunk("sequences", 0).await;
    set_chunk(sequences_part, 0, vec![0]).await;
    let reply = get(&gw.admin_url(&format!("/v1/snapshots/{id}/parts/sequences"))).await;
    assert_eq!(reply.status, 500);
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert!(
        !error.contains("zstd") && !error.contains("chunk"),
        "internal detail leaked: {error}"
    );
    pool.close().await;
}

async fn with_token(gw: &Gateway, target: &str, token: Option<&str>) -> Reply {
    let mut req = Request::get(gw.admin_url(target));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    send(req.body(Full::default()).unwrap()).await
}

#[tokio::test]
async fn the_admin_token_guards_the_api_but_not_health() {
    let up = fake(5).await;
    let gw = Gateway::start_with(
        &up.url(),
        Extra {
            admin: "token = \"admin-token-0123456789\"\n",
            ..Extra::default()
        },
    )
    .await;
    let id = snapshot_id(&delete(&gw, 101).await);
    assert_eq!(get(&gw.admin_url("/healthz")).await.status, 200);
    assert_eq!(get(&gw.admin_url("/readyz")).await.status, 200);
    for target in [
        "/v1/audit".to_string(),
        "/v1/history/101".to_string(),
        "/v1/snapshots".to_string(),
        format!("/v1/snapshots/{id}"),
        format!("/v1/snapshots/{id}/parts/leads_csv"),
    ] {
        let missing = with_token(&gw, &target, None).await;
        assert_eq!(missing.status, 401, "{target}");
        assert!(missing.json()["error"].is_string());
        let wrong = with_token(&gw, &target, Some("admin-token-0123456788")).await;
        assert_eq!(wrong.status, 401, "{target}");
        let right = with_token(&gw, &target, Some(TOKEN)).await;
        assert_eq!(right.status, 200, "{target}");
    }
    let right = with_token(&gw, "/v1/audit", Some(TOKEN)).await;
    assert_eq!(right.json()["items"][0]["method"], "DELETE");
}
