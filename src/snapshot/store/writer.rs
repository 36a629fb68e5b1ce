//! Writing one part: bytes are buffered to [`CHUNK_SIZE`], then hashed,
//! compressed and stored one chunk row per short transaction, in the
//! background while the next chunk is read.

use crate::db::Pool;
use tokio::task::JoinHandle;

use super::{not_in_progress, PartKind, StoreError, CHUNK_SIZE};

/// zstd level: fast, and CSV/JSON compress well at it anyway.
const ZSTD_LEVEL: i32 = 1;

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

/// Streams one part into chunk rows. Bytes are buffered up to
/// [`CHUNK_SIZE`]; each full buffer is hashed, compressed into one zstd frame
/// and inserted as one chunk row in its own short transaction, so a large
/// export never holds the write lock for long.
///
/// Storing a chunk overlaps with reading the next: one full chunk at a time
/// is hashed, compressed and committed in the background while the caller
/// fills the other buffer, so a capture runs at the speed of the download
/// rather than of download + compression + commit. Memory stays
/// O(`CHUNK_SIZE`): two buffers and one frame.
///
/// A writer dropped without [`finish`](PartWriter::finish) or
/// [`fail`](PartWriter::fail) leaves its part `in_progress` (a chunk in
/// flight is abandoned); [`fail_snapshot`](super::fail_snapshot) or
/// [`mark_interrupted`](super::mark_interrupted) settle it.
pub struct PartWriter {
    part: Part,
    /// The running hash; `None` while the chunk in flight holds it (chunks
    /// are hashed in order, so one holds it at a time).
    hasher: Option<crate::digest::Context>,
    /// The chunk being stored in the background.
    in_flight: Option<JoinHandle<Result<Stored, StoreError>>>,
    /// The buffer being filled.
    buf: Vec<u8>,
    /// Totals of the chunks committed so far.
    bytes: u64,
    stored_bytes: u64,
    chunks: u64,
}

/// Which part a chunk belongs to: what a background chunk needs.
#[derive(Clone)]
struct Part {
    pool: Pool,
    snapshot_id: i64,
    kind: PartKind,
    part_id: i64,
}

/// A chunk committed in the background: its buffer (to be filled again),
/// the hash carried past it, and its sizes.
struct Stored {
    buf: Vec<u8>,
    hasher: crate::digest::Context,
    stored_bytes: u64,
}

impl PartWriter {
    /// Starts (state `in_progress`) the `kind` part of an `in_progress`
    /// snapshot. If that part already exists (a retried fetch), its chunks are
    /// deleted and it starts again from nothing; any earlier writer for it must
    /// be gone by then.
    pub async fn begin(
        pool: &Pool,
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
             SELECT id, $1, $2, $3, 'in_progress' FROM snapshots WHERE id = $4 AND state = 'in_progress' \
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
        sqlx::query("DELETE FROM snapshot_chunks WHERE part_id = $1")
            .bind(part_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(PartWriter {
            part: Part {
                pool: pool.clone(),
                snapshot_id,
                kind,
                part_id,
            },
            hasher: Some(crate::digest::sha256_stream()),
            in_flight: None,
            buf: Vec::with_capacity(CHUNK_SIZE),
            bytes: 0,
            stored_bytes: 0,
            chunks: 0,
        })
    }

    /// Adds bytes to the part, handing a chunk to the background each time
    /// [`CHUNK_SIZE`] raw bytes have accumulated. An error is the chunk
    /// before's, reported here or by [`finish`](PartWriter::finish).
    pub async fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        while !data.is_empty() {
            let take = (CHUNK_SIZE - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK_SIZE {
                self.send_chunk().await?;
            }
        }
        Ok(())
    }

    /// Stores the last chunk, waits for every chunk to be committed, and
    /// marks the part `complete` with its sizes and SHA-256.
    pub async fn finish(mut self) -> Result<PartSummary, StoreError> {
        if !self.buf.is_empty() {
            self.send_chunk().await?;
        }
        self.settle().await?;
        let hasher = self
            .hasher
            .take()
            .expect("settled: no chunk holds the hash");
        let sha256 = crate::digest::hex(hasher.finish().as_ref());
        let mut tx = self.part.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE snapshot_parts SET state = 'complete', byte_count = $1, stored_bytes = $2, \
             chunk_count = $3, sha256 = $4 WHERE id = $5 AND state = 'in_progress' AND chunk_count = $6",
        )
        .bind(self.bytes as i64)
        .bind(self.stored_bytes as i64)
        .bind(self.chunks as i64)
        .bind(&sha256)
        .bind(self.part.part_id)
        .bind(self.chunks as i64)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(self.part.reset());
        }
        tx.commit().await?;
        Ok(PartSummary {
            kind: self.part.kind,
            bytes: self.bytes,
            stored_bytes: self.stored_bytes,
            chunks: self.chunks,
            sha256,
        })
    }

    /// Marks the part `failed` (its partial chunks stay) and logs why; the
    /// snapshot's own error is set with [`fail_snapshot`](super::fail_snapshot).
    pub async fn fail(mut self, error: &str) -> Result<(), StoreError> {
        // The chunk in flight settles first, so nothing lands after `failed`.
        let _ = self.settle().await;
        tracing::warn!(
            snapshot_id = self.part.snapshot_id,
            part = %self.part.kind,
            error,
            "snapshot part failed"
        );
        sqlx::query(
            "UPDATE snapshot_parts SET state = 'failed' WHERE id = $1 AND state = 'in_progress'",
        )
        .bind(self.part.part_id)
        .execute(&self.part.pool)
        .await?;
        Ok(())
    }

    /// Hands the full buffer to the background once the chunk before it is
    /// committed (at most one chunk in flight), and takes that chunk's
    /// buffer to fill next.
    async fn send_chunk(&mut self) -> Result<(), StoreError> {
        let spare = self.settle().await?;
        let buf = std::mem::replace(&mut self.buf, spare);
        let hasher = self
            .hasher
            .take()
            .expect("settled: no chunk holds the hash");
        let seq = self.chunks;
        self.in_flight = Some(tokio::spawn(
            self.part.clone().store_chunk(seq, buf, hasher),
        ));
        Ok(())
    }

    /// Waits for the chunk in flight, if any, and counts it; returns an
    /// empty buffer to fill.
    async fn settle(&mut self) -> Result<Vec<u8>, StoreError> {
        let Some(in_flight) = self.in_flight.take() else {
            return Ok(Vec::with_capacity(CHUNK_SIZE));
        };
        let stored = in_flight
            .await
            .map_err(|err| self.part.compress_error(err.into()))??;
        let Stored {
            mut buf,
            hasher,
            stored_bytes,
        } = stored;
        self.bytes += buf.len() as u64;
        self.stored_bytes += stored_bytes;
        self.chunks += 1;
        self.hasher = Some(hasher);
        buf.clear();
        Ok(buf)
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.abort();
        }
    }
}

impl Part {
    /// Hashes and compresses one chunk (on the blocking pool) and commits it
    /// as chunk `seq`.
    async fn store_chunk(
        self,
        seq: u64,
        buf: Vec<u8>,
        mut hasher: crate::digest::Context,
    ) -> Result<Stored, StoreError> {
        let (buf, hasher, frame) = tokio::task::spawn_blocking(move || {
            hasher.update(&buf);
            let frame = zstd::bulk::compress(&buf, ZSTD_LEVEL);
            (buf, hasher, frame)
        })
        .await
        .map_err(|err| self.compress_error(err.into()))?;
        let frame = frame.map_err(|err| self.compress_error(err))?;

        let mut tx = self.pool.begin().await?;
        // The running totals make a part's progress visible, and the
        // sequence check stops a writer whose part was reset or failed
        // meanwhile.
        let done = sqlx::query(
            "UPDATE snapshot_parts SET byte_count = byte_count + $1, \
             stored_bytes = stored_bytes + $2, chunk_count = chunk_count + 1 \
             WHERE id = $3 AND state = 'in_progress' AND chunk_count = $4",
        )
        .bind(buf.len() as i64)
        .bind(frame.len() as i64)
        .bind(self.part_id)
        .bind(seq as i64)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(self.reset());
        }
        sqlx::query("INSERT INTO snapshot_chunks (part_id, seq, data) VALUES ($1, $2, $3)")
            .bind(self.part_id)
            .bind(seq as i64)
            .bind(&frame)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Stored {
            buf,
            hasher,
            stored_bytes: frame.len() as u64,
        })
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
