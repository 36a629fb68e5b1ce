//! Counting CSV records as bytes stream past, without holding them: a line
//! break ends a record only outside a quoted field (quoted cells may hold line
//! breaks and doubled quotes). Used while capturing a leads export and when
//! re-reading one.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// A streaming CSV record counter; also an [`AsyncWrite`] sink.
#[derive(Debug, Default)]
pub struct CsvRows {
    records: u64,
    in_quotes: bool,
    /// Bytes seen since the last record ended.
    line_has_data: bool,
}

impl CsvRows {
    pub fn feed(&mut self, mut data: &[u8]) {
        // Hundreds of MB pass through here during a snapshot, and a leads
        // export quotes every cell: rather than stop at every quote, jump
        // from line feed to line feed and count the quotes between (SIMD).
        // An odd count flips whether the line feed is inside quotes (a
        // doubled quote counts twice: no change).
        while let Some(i) = memchr::memchr(b'\n', data) {
            let line = &data[..i];
            self.line(line);
            if !self.in_quotes {
                self.records += 1;
                self.line_has_data = false;
            }
            data = &data[i + 1..];
        }
        self.line(data);
    }

    /// Bytes without a line feed.
    fn line(&mut self, bytes: &[u8]) {
        let quotes = bytecount::count(bytes, b'"');
        self.in_quotes ^= quotes % 2 == 1;
        // Data, unless only `\r`.
        if !self.line_has_data {
            self.line_has_data = quotes > 0 || bytes.iter().any(|&b| b != b'\r');
        }
    }

    /// Every record, a last one without a line break included.
    pub fn records(&self) -> u64 {
        self.records + u64::from(self.line_has_data)
    }

    /// Records minus the header row.
    pub fn data_rows(&self) -> u64 {
        self.records().saturating_sub(1)
    }
}

impl AsyncWrite for CsvRows {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().feed(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::CsvRows;

    fn count(data: &[u8]) -> u64 {
        let mut rows = CsvRows::default();
        // Two pieces, split mid-field, as chunks arrive.
        let (a, b) = data.split_at(data.len() / 2);
        rows.feed(a);
        rows.feed(b);
        rows.records()
    }

    #[test]
    fn quoted_line_breaks_and_doubled_quotes_do_not_end_a_record() {
        assert_eq!(count(b"a,b\n\"1\",\"x\ny\"\n\"2\",\"say \"\"hi\"\"\"\n"), 3);
        assert_eq!(
            count(b"a,b\r\n1,2\r\n3,4"),
            3,
            "a last line without a line break counts"
        );
        assert_eq!(count(b""), 0);
    }

    #[test]
    fn every_split_point_gives_the_same_count() {
        let data: &[u8] = b"\"id\",\"note\"\r\n\"1\",\"a\r\nb\"\r\n\"2\",\"\"\"q\"\"\"\r\n\r\n3,x";
        for at in 0..=data.len() {
            let mut rows = CsvRows::default();
            rows.feed(&data[..at]);
            rows.feed(&data[at..]);
            // Header, two rows, an empty line (a record, as before), a last row.
            assert_eq!(rows.records(), 5, "split at {at}");
        }
    }

    /// The rules, one byte at a time: what the block counter must agree with.
    fn by_bytes(data: &[u8]) -> u64 {
        let (mut records, mut in_quotes, mut begun) = (0, false, false);
        for &b in data {
            match b {
                b'"' => {
                    in_quotes = !in_quotes;
                    begun = true;
                }
                b'\n' if !in_quotes => {
                    records += 1;
                    begun = false;
                }
                b'\n' | b'\r' => {}
                _ => begun = true,
            }
        }
        records + u64::from(begun)
    }

    #[test]
    fn the_block_counter_agrees_with_the_rules_byte_by_byte() {
        // Random CSV-ish bytes of every length around the block size, split
        // at a random point, so quotes and line feeds fall at block edges.
        let mut rng = fastrand::Rng::with_seed(14);
        for round in 0..5_000 {
            let len = rng.usize(0..300);
            let data: Vec<u8> = (0..len).map(|_| b"\"\n\rab,"[rng.usize(0..6)]).collect();
            let at = rng.usize(0..=len);
            let mut rows = CsvRows::default();
            rows.feed(&data[..at]);
            rows.feed(&data[at..]);
            assert_eq!(
                rows.records(),
                by_bytes(&data),
                "round {round}: {:?} split at {at}",
                String::from_utf8_lossy(&data)
            );
        }
    }

    #[test]
    fn data_rows_leave_out_the_header() {
        let mut rows = CsvRows::default();
        rows.feed(b"\"id\"\n\"1\"\n\"2\"\n");
        assert_eq!(rows.data_rows(), 2);
        assert_eq!(CsvRows::default().data_rows(), 0);
    }
}
