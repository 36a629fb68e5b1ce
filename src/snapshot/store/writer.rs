//! Writing one part: bytes are hashed, buffered to [`CHUNK_SIZE`], compressed
//! and stored one chunk row per short transaction.

use sqlx::SqlitePool;

use super::{not_in_progress, PartKind, StoreError, CHUNK_SIZE};

/// zstd level: fast, and CSV/JSON compress well at it anyway.
const ZSTD_LEVEL: i32 = 3;

/// What [`PartWriter::finish`] stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartSummary {
    pub kind: PartKind,
    /// Uncompressed.
    pub bytes: u64,
    /// Compressed, as stored in the chunk rows.
    pub stored_bytes: u64,
    pub chunks: u64,
    /// Hex SHA-256 of the uncompressed bytes.
    pub sha256: String,
}

/// Streams one part into chunk rows. Bytes are hashed as they arrive and
/// buffered up to [`CHUNK_SIZE`]; each full buffer becomes one zstd frame in
/// one chunk row, inserted in its own short transaction so a large export
/// never holds the write lock for long. Memory stays O(`CHUNK_SIZE`).
///
/// A writer dropped without [`finish`](PartWriter::finish) or
/// [`fail`](PartWriter::fail) leaves its part `in_progress`;
/// [`fail_snapshot`](super::fail_snapshot) or [`mark_interrupted`](super::mark_interrupted) settle it.
pub struct PartWriter {
    pool: SqlitePool,
    snapshot_id: i64,
    kind: PartKind,
    part_id: i64,
    hasher: crate::digest::Context,
    buf: Vec<u8>,
    bytes: u64,
    stored_bytes: u64,
    chunks: u64,
}

impl PartWriter {
    /// Starts (state `in_progress`) the `kind` part of an `in_progress`
    /// snapshot. If that part already exists (a retried fetch), its chunks are
    /// deleted and it starts again from nothing; any earlier writer for it must
    /// be gone by then.
    pub async fn begin(
        pool: &SqlitePool,
        snapshot_id: i64,
        kind: PartKind,
        content_type: Option<&str>,
        upstream_status: u16,
    ) -> Result<PartWriter, StoreError> {
        let mut tx = pool.begin().await?;
        // `WHERE` makes the upsert's SELECT unambiguous and refuses snapshots
        // that are no longer being captured.
        let part_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO snapshot_parts (snapshot_id, kind, content_type, upstream_status, state) \
             SELECT id, ?, ?, ?, 'in_progress' FROM snapshots WHERE id = ? AND state = 'in_progress' \
             ON CONFLICT (snapshot_id, kind) DO UPDATE SET \
             content_type = excluded.content_type, upstream_status = excluded.upstream_status, \
             state = 'in_progress', byte_count = 0, stored_bytes = 0, chunk_count = 0, sha256 = NULL \
             RETURNING id",
        )
        .bind(kind.as_str())
        .bind(content_type)
        .bind(i64::from(upstream_status))
        .bind(snapshot_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(part_id) = part_id else {
            return Err(not_in_progress(&mut tx, snapshot_id).await);
        };
        sqlx::query("DELETE FROM snapshot_chunks WHERE part_id = ?")
            .bind(part_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(PartWriter {
            pool: pool.clone(),
            snapshot_id,
            kind,
            part_id,
            hasher: crate::digest::sha256_stream(),
            buf: Vec::with_capacity(CHUNK_SIZE),
            bytes: 0,
            stored_bytes: 0,
            chunks: 0,
        })
    }

    /// Adds bytes to the part, storing a chunk each time [`CHUNK_SIZE`] raw
    /// bytes have accumulated.
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(data);
        while !data.is_empty() {
            let take = (CHUNK_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK_SIZE {
                self.store_chunk().await?;
            }
        }
        Ok(())
    }

    /// Stores the last chunk and marks the part `complete` with its sizes and
    /// SHA-256.
    pub async fn finish(mut self) -> Result<PartSummary, StoreError> {
        if !self.buf.is_empty() {
            self.store_chunk().await?;
        }
        let hasher = std::mem::replace(&mut self.hasher, crate::digest::sha256_stream());
        let sha256 = crate::digest::hex(hasher.finish().as_ref());
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE snapshot_parts SET state = 'complete', byte_count = ?, stored_bytes = ?, \
             chunk_count = ?, sha256 = ? WHERE id = ? AND state = 'in_progress' AND chunk_count = ?",
        )
        .bind(self.bytes as i64)
        .bind(self.stored_bytes as i64)
        .bind(self.chunks as i64)
        .bind(&sha256)
        .bind(self.part_id)
        .bind(self.chunks as i64)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(self.reset());
        }
        tx.commit().await?;
        Ok(PartSummary {
            kind: self.kind,
            bytes: self.bytes,
            stored_bytes: self.stored_bytes,
            chunks: self.chunks,
            sha256,
        })
    }

    /// Marks the part `failed` (its partial chunks stay) and logs why; the
    /// snapshot's own error is set with [`fail_snapshot`](super::fail_snapshot).
    pub async fn fail(self, error: &str) -> Result<(), StoreError> {
        tracing::warn!(
            snapshot_id = self.snapshot_id,
            part = %self.kind,
            error,
            "snapshot part failed"
        );
        sqlx::query(
            "UPDATE snapshot_parts SET state = 'failed' WHERE id = ? AND state = 'in_progress'",
        )
        .bind(self.part_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Compresses the buffer into one chunk row and empties it.
    async fn store_chunk(&mut self) -> Result<(), StoreError> {
        // The buffer moves to the blocking pool and back, so its allocation is reused.
        let buf = std::mem::take(&mut self.buf);
        let (mut buf, frame) = tokio::task::spawn_blocking(move || {
            let frame = zstd::bulk::compress(&buf, ZSTD_LEVEL);
            (buf, frame)
        })
        .await
        .map_err(|err| self.compress_error(err.into()))?;
        let frame = frame.map_err(|err| self.compress_error(err))?;

        let mut tx = self.pool.begin().await?;
        // The running totals make a part's progress visible, and the state
        // check stops a writer whose part was reset or failed meanwhile.
        let done = sqlx::query(
            "UPDATE snapshot_parts SET byte_count = byte_count + ?, \
             stored_bytes = stored_bytes + ?, chunk_count = chunk_count + 1 \
             WHERE id = ? AND state = 'in_progress' AND chunk_count = ?",
        )
        .bind(buf.len() as i64)
        .bind(frame.len() as i64)
        .bind(self.part_id)
        .bind(self.chunks as i64)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(self.reset());
        }
        sqlx::query("INSERT INTO snapshot_chunks (part_id, seq, data) VALUES (?, ?, ?)")
            .bind(self.part_id)
            .bind(self.chunks as i64)
            .bind(&frame)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;

        self.bytes += buf.len() as u64;
        self.stored_bytes += frame.len() as u64;
        self.chunks += 1;
        buf.clear();
        self.buf = buf;
        Ok(())
    }

    fn compress_error(&self, source: std::io::Error) -> StoreError {
        StoreError::Compress {
            snapshot_id: self.snapshot_id,
            kind: self.kind,
            source,
        }
    }

    fn reset(&self) -> StoreError {
        StoreError::PartReset {
            snapshot_id: self.snapshot_id,
            kind: self.kind,
        }
    }
}
