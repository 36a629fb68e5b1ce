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
    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            match b {
                // A doubled quote inside quotes toggles twice: no change.
                b'"' => {
                    self.in_quotes = !self.in_quotes;
                    self.line_has_data = true;
                }
                b'\n' if !self.in_quotes => {
                    self.records += 1;
                    self.line_has_data = false;
                }
                b'\r' => {}
                _ => self.line_has_data = true,
            }
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
    fn data_rows_leave_out_the_header() {
        let mut rows = CsvRows::default();
        rows.feed(b"\"id\"\n\"1\"\n\"2\"\n");
        assert_eq!(rows.data_rows(), 2);
        assert_eq!(CsvRows::default().data_rows(), 0);
    }
}
