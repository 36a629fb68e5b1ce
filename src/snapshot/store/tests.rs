use crate::db::testing::store_tests;
use crate::db::Pool;
use sha2::{Digest, Sha256};

use super::*;

/// A new snapshot of a whole campaign, as `campaign.delete` takes it.
fn campaign_snapshot(campaign_id: i64) -> NewSnapshot<'static> {
    let target: &'static str = Box::leak(format!("campaign:{campaign_id}").into_boxed_str());
    NewSnapshot {
        operation_id: None,
        operation: "campaign.delete",
        campaign_id: Some(campaign_id),
        target,
        target_id: None,
        parts: &PartKind::CAMPAIGN,
    }
}

/// Deterministic bytes mixing compressible text with noise, so chunks differ.
fn varied_data(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        if state.is_multiple_of(3) {
            out.extend_from_slice(
                format!("lead-{},someone@example.com,\n", state % 10_000).as_bytes(),
            );
        } else {
            out.extend_from_slice(&state.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

async fn write_part(pool: &Pool, snapshot_id: i64, kind: PartKind, data: &[u8]) -> PartSummary {
    let mut part = PartWriter::begin(pool, snapshot_id, kind, Some("application/json"), 200)
        .await
        .expect("begin part");
    part.write(data).await.expect("write part");
    part.finish().await.expect("finish part")
}

async fn export(pool: &Pool, snapshot_id: i64, kind: PartKind) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    let n = export_part(pool, snapshot_id, kind, &mut out).await?;
    assert_eq!(n, out.len() as u64);
    Ok(out)
}

store_tests! {
    async fn a_large_part_is_chunked_and_exports_byte_identical(pool) {
        let id = create_snapshot(&pool, &campaign_snapshot(101))
            .await
            .expect("create");
        let data = varied_data(CHUNK_SIZE * 7 / 2);

        let mut part = PartWriter::begin(&pool, id, PartKind::LeadsCsv, Some("text/csv"), 200)
            .await
            .expect("begin");
        let mut rest = &data[..];
        let mut i = 0usize;
        while !rest.is_empty() {
            // Mostly small writes, with a large one (crossing chunk edges) now and then.
            let size = if i % 500 == 499 {
                CHUNK_SIZE / 2 + 17
            } else {
                1 + (i * 37) % 3000
            };
            let (now, later) = rest.split_at(size.min(rest.len()));
            part.write(now).await.expect("write");
            rest = later;
            i += 1;
        }
        let summary = part.finish().await.expect("finish");

        let sha = format!("{:x}", Sha256::digest(&data));
        assert_eq!(summary.bytes, data.len() as u64);
        assert_eq!(summary.chunks, 4);
        assert_eq!(summary.sha256, sha);
        let (stored, chunks): (i64, i64) =
            sqlx::query_as("SELECT CAST(SUM(LENGTH(data)) AS BIGINT), COUNT(*) FROM snapshot_chunks")
                .fetch_one(&pool)
                .await
                .expect("count chunks");
        assert_eq!((stored as u64, chunks), (summary.stored_bytes, 4));

        let info = get_snapshot(&pool, id).await.expect("get");
        let p = &info.parts[0];
        assert_eq!(
            (p.kind.as_str(), p.state.as_str()),
            ("leads_csv", "complete")
        );
        assert_eq!(p.bytes, data.len() as i64);
        assert_eq!(p.stored_bytes, stored);
        assert_eq!(p.chunks, 4);
        assert_eq!(p.sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(p.content_type.as_deref(), Some("text/csv"));
        assert_eq!(p.upstream_status, Some(200));

        assert!(export(&pool, id, PartKind::LeadsCsv).await.expect("export") == data);
    }
}

store_tests! {
    async fn an_empty_part_stores_no_chunks_and_exports_nothing(pool) {
        let id = create_snapshot(&pool, &campaign_snapshot(5))
            .await
            .expect("create");
        let summary = write_part(&pool, id, PartKind::Webhooks, b"").await;
        assert_eq!((summary.bytes, summary.chunks), (0, 0));
        assert_eq!(summary.sha256, format!("{:x}", Sha256::digest(b"")));
        assert!(export(&pool, id, PartKind::Webhooks)
            .await
            .expect("export")
            .is_empty());
    }
}

store_tests! {
    async fn complete_snapshot_requires_all_six_parts_complete(pool) {
        let id = create_snapshot(&pool, &campaign_snapshot(7))
            .await
            .expect("create");
        for kind in &PartKind::CAMPAIGN[..5] {
            write_part(&pool, id, *kind, b"{}").await;
        }

        let err = complete_snapshot(&pool, id)
            .await
            .expect_err("analytics missing");
        assert!(
            matches!(&err, StoreError::Incomplete { kind: PartKind::Analytics, state, .. } if state == "missing"),
            "{err}"
        );
        assert_eq!(
            get_snapshot(&pool, id).await.expect("get").state,
            "in_progress"
        );

        let mut last = PartWriter::begin(&pool, id, PartKind::Analytics, None, 200)
            .await
            .expect("begin");
        let err = complete_snapshot(&pool, id)
            .await
            .expect_err("analytics in progress");
        assert!(
            matches!(&err, StoreError::Incomplete { kind: PartKind::Analytics, state, .. } if state == "in_progress"),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("snapshot {id}")), "{err}");

        last.write(b"{\"sent\":3}").await.expect("write");
        last.finish().await.expect("finish");
        complete_snapshot(&pool, id).await.expect("complete");
        let info = get_snapshot(&pool, id).await.expect("get");
        assert_eq!(info.state, "complete");
        assert!(info.completed_at.is_some());
        assert_eq!(info.parts.len(), 6);

        // A complete snapshot takes no more parts.
        let err = PartWriter::begin(&pool, id, PartKind::Campaign, None, 200)
            .await
            .err()
            .expect("complete snapshot refuses a new part");
        assert!(matches!(err, StoreError::NotInProgress { .. }), "{err}");
    }
}

store_tests! {
    async fn a_corrupted_chunk_makes_the_export_fail_naming_snapshot_and_part(pool) {
        let id = create_snapshot(&pool, &campaign_snapshot(9))
            .await
            .expect("create");
        let data = varied_data(CHUNK_SIZE + 1000);
        write_part(&pool, id, PartKind::Sequences, &data).await;

        // A valid frame of other bytes: only the checksum can tell.
        let other = zstd::bulk::compress(&varied_data(1000)[..], 3).expect("compress");
        sqlx::query("UPDATE snapshot_chunks SET data = $1 WHERE seq = 1")
            .bind(&other)
            .execute(&pool)
            .await
            .expect("corrupt");
        let err = export(&pool, id, PartKind::Sequences)
            .await
            .expect_err("checksum");
        assert!(matches!(err, StoreError::ChecksumMismatch { .. }), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("snapshot {id}: part sequences")),
            "{err}"
        );

        // Garbage that is not zstd at all.
        sqlx::query("UPDATE snapshot_chunks SET data = $1 WHERE seq = 0")
            .bind(&b"not a zstd frame"[..])
            .execute(&pool)
            .await
            .expect("corrupt");
        let err = export(&pool, id, PartKind::Sequences)
            .await
            .expect_err("decompress");
        assert!(
            matches!(err, StoreError::Decompress { seq: 0, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("snapshot {id}")), "{err}");
        assert!(err.to_string().contains("part sequences"), "{err}");
    }
}

store_tests! {
    async fn export_refuses_unfinished_and_missing_parts(pool) {
        let id = create_snapshot(&pool, &campaign_snapshot(11))
            .await
            .expect("create");
        let mut part = PartWriter::begin(&pool, id, PartKind::Campaign, None, 200)
            .await
            .expect("begin");
        part.write(b"{\"id\":11}").await.expect("write");

        let err = export(&pool, id, PartKind::Campaign)
            .await
            .expect_err("in progress");
        assert!(matches!(err, StoreError::Incomplete { .. }), "{err}");
        let err = export(&pool, id, PartKind::Webhooks)
            .await
            .expect_err("no part");
        assert!(matches!(err, StoreError::NoSuchPart { .. }), "{err}");
        let err = export(&pool, id + 1, PartKind::Webhooks)
            .await
            .expect_err("no snapshot");
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");

        part.fail("upstream said 500").await.expect("fail part");
        let err = export(&pool, id, PartKind::Campaign)
            .await
            .expect_err("failed");
        assert!(
            matches!(&err, StoreError::Incomplete { state, .. } if state == "failed"),
            "{err}"
        );
    }
}

store_tests! {
    async fn mark_interrupted_settles_only_unfinished_snapshots(pool) {

        let done = create_snapshot(&pool, &campaign_snapshot(1))
            .await
            .expect("create");
        for &kind in PartKind::CAMPAIGN.iter() {
            write_part(&pool, done, kind, b"[]").await;
        }
        complete_snapshot(&pool, done).await.expect("complete");

        let cut = create_snapshot(&pool, &campaign_snapshot(2))
            .await
            .expect("create");
        write_part(&pool, cut, PartKind::Campaign, b"{}").await;
        let mut leads = PartWriter::begin(&pool, cut, PartKind::LeadsCsv, Some("text/csv"), 200)
            .await
            .expect("begin");
        leads
            .write(&varied_data(CHUNK_SIZE + 1))
            .await
            .expect("write");
        drop(leads); // the gateway stops mid-export

        assert_eq!(mark_interrupted(&pool).await.expect("mark"), 1);
        assert_eq!(mark_interrupted(&pool).await.expect("mark again"), 0);

        let info = get_snapshot(&pool, cut).await.expect("get");
        assert_eq!(info.state, "incomplete");
        assert_eq!(info.error.as_deref(), Some(INTERRUPTED));
        let states: Vec<_> = info
            .parts
            .iter()
            .map(|p| (p.kind.as_str(), p.state.as_str()))
            .collect();
        assert_eq!(states, [("campaign", "complete"), ("leads_csv", "failed")]);

        let info = get_snapshot(&pool, done).await.expect("get");
        assert_eq!(info.state, "complete");
        assert!(info.parts.iter().all(|p| p.state == "complete"));
    }
}

store_tests! {
    async fn fail_snapshot_records_the_error_and_fails_unfinished_parts(pool) {
        let id = create_snapshot(&pool, &campaign_snapshot(3))
            .await
            .expect("create");
        let _part = PartWriter::begin(&pool, id, PartKind::Campaign, None, 200)
            .await
            .expect("begin");
        fail_snapshot(&pool, id, "leads export: upstream 503 after 4 attempts")
            .await
            .expect("fail");
        let info = get_snapshot(&pool, id).await.expect("get");
        assert_eq!(info.state, "failed");
        assert_eq!(
            info.error.as_deref(),
            Some("leads export: upstream 503 after 4 attempts")
        );
        assert_eq!(info.parts[0].state, "failed");
        let err = complete_snapshot(&pool, id)
            .await
            .expect_err("failed stays failed");
        assert!(matches!(err, StoreError::NotInProgress { .. }), "{err}");
        let err = fail_snapshot(&pool, 999, "x")
            .await
            .expect_err("no such snapshot");
        assert!(
            matches!(err, StoreError::NotFound { snapshot_id: 999 }),
            "{err}"
        );
    }
}

store_tests! {
    async fn a_retried_part_starts_again_from_nothing(pool) {
        let id = create_snapshot(&pool, &campaign_snapshot(4))
            .await
            .expect("create");

        let mut first = PartWriter::begin(&pool, id, PartKind::LeadsCsv, Some("text/csv"), 200)
            .await
            .expect("begin");
        first
            .write(&varied_data(CHUNK_SIZE * 2 + 10))
            .await
            .expect("write");
        first.fail("connection reset").await.expect("fail");

        let retry = b"id,email\n1,a@example.com\n";
        let summary = write_part(&pool, id, PartKind::LeadsCsv, retry).await;
        assert_eq!((summary.bytes, summary.chunks), (retry.len() as u64, 1));

        let chunks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM snapshot_chunks")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(chunks, 1);
        let info = get_snapshot(&pool, id).await.expect("get");
        assert_eq!(info.parts.len(), 1);
        assert_eq!(info.parts[0].state, "complete");
        assert_eq!(
            info.parts[0].content_type.as_deref(),
            Some("application/json")
        );
        assert_eq!(
            export(&pool, id, PartKind::LeadsCsv).await.expect("export"),
            retry
        );
    }
}

store_tests! {
    async fn list_snapshots_filters_by_campaign_newest_first(pool) {
        let a1 = create_snapshot(&pool, &campaign_snapshot(100))
            .await
            .expect("create");
        let b1 = create_snapshot(&pool, &campaign_snapshot(200))
            .await
            .expect("create");
        let a2 = create_snapshot(&pool, &campaign_snapshot(100))
            .await
            .expect("create");
        write_part(&pool, a2, PartKind::Campaign, b"{}").await;

        let ids = |v: Vec<SnapshotInfo>| v.into_iter().map(|s| s.id).collect::<Vec<_>>();
        let of_a = list_snapshots(&pool, Some(100), 10).await.expect("list");
        assert_eq!(of_a[0].parts.len(), 1);
        assert_eq!(ids(of_a), [a2, a1]);
        assert_eq!(
            ids(list_snapshots(&pool, None, 10).await.expect("list")),
            [a2, b1, a1]
        );
        assert_eq!(
            ids(list_snapshots(&pool, None, 2).await.expect("list")),
            [a2, b1]
        );
        assert!(list_snapshots(&pool, Some(300), 10)
            .await
            .expect("list")
            .is_empty());
    }
}

#[test]
fn part_kinds_round_trip_and_name_their_files() {
    for &kind in PartKind::ALL {
        assert_eq!(PartKind::parse(kind.as_str()), Some(kind));
        assert_eq!(
            serde_json::to_value(kind).expect("serialize"),
            serde_json::Value::from(kind.as_str())
        );
    }
    assert_eq!(PartKind::parse("nope"), None);
    assert_eq!(
        PartKind::LeadsCsv.file_name("campaign-101"),
        "campaign-101-leads.csv"
    );
    assert_eq!(
        PartKind::Sequences.file_name("campaign-101"),
        "campaign-101-sequences.json"
    );
}

store_tests! {
    async fn only_a_recent_complete_snapshot_of_the_same_campaign_version_is_reusable(pool) {
        const V1: &str = "2025-11-25T10:43:46.826Z";
        let long_ago = "2000-01-01T00:00:00.000Z";

        let failed = create_snapshot(&pool, &campaign_snapshot(7))
            .await
            .expect("create");
        set_campaign_version(&pool, failed, V1)
            .await
            .expect("version");
        fail_snapshot(&pool, failed, "500 three times")
            .await
            .expect("fail");
        assert_eq!(
            find_reusable(&pool, "campaign.delete", "campaign:7", V1, long_ago)
                .await
                .expect("find"),
            None
        );

        let done = create_snapshot(&pool, &campaign_snapshot(7))
            .await
            .expect("create");
        set_campaign_version(&pool, done, V1)
            .await
            .expect("version");
        for &kind in PartKind::CAMPAIGN.iter() {
            write_part(&pool, done, kind, b"[]").await;
        }
        complete_snapshot(&pool, done).await.expect("complete");
        let unversioned = create_snapshot(&pool, &campaign_snapshot(7))
            .await
            .expect("create");
        for &kind in PartKind::CAMPAIGN.iter() {
            write_part(&pool, unversioned, kind, b"[]").await;
        }
        complete_snapshot(&pool, unversioned)
            .await
            .expect("complete");

        assert_eq!(
            find_reusable(&pool, "campaign.delete", "campaign:7", V1, long_ago)
                .await
                .expect("find"),
            Some(done),
            "the newest complete snapshot of that version, never one without a version"
        );
        let changed = "2025-11-25T10:44:00.000Z";
        assert_eq!(
            find_reusable(&pool, "campaign.delete", "campaign:7", changed, long_ago)
                .await
                .expect("find"),
            None
        );
        assert_eq!(
            find_reusable(&pool, "campaign.delete", "campaign:8", V1, long_ago)
                .await
                .expect("find"),
            None
        );
        let future = "2999-01-01T00:00:00.000Z";
        assert_eq!(
            find_reusable(&pool, "campaign.delete", "campaign:7", V1, future)
                .await
                .expect("find"),
            None,
            "too old"
        );
    }
}
