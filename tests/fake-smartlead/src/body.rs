//! The single response body type: a boxed stream of byte chunks with an optional
//! exact length, so that buffered JSON, the streamed CSV export and fault-bent
//! bodies (slow, truncated) all travel the same way through hyper.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{self, Stream};
use http_body::{Frame, SizeHint};

/// A stream of body chunks; an `Err` aborts the connection mid-body.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// A response body: a chunk stream plus, when known, its exact length.
pub struct FakeBody {
    stream: Option<ByteStream>,
    len: Option<u64>,
}

impl FakeBody {
    /// A body with nothing in it.
    pub fn empty() -> Self {
        Self {
            stream: None,
            len: Some(0),
        }
    }

    /// A fully buffered body of known length.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes: Bytes = bytes.into();
        if bytes.is_empty() {
            return Self::empty();
        }
        let len = bytes.len() as u64;
        Self {
            stream: Some(Box::pin(stream::once(async move { Ok(bytes) }))),
            len: Some(len),
        }
    }

    /// A streamed body of unknown length (sent chunked on HTTP/1.1).
    pub fn streaming(stream: ByteStream) -> Self {
        Self {
            stream: Some(stream),
            len: None,
        }
    }

    /// Takes the body apart into its stream (empty if none) and declared length.
    pub fn into_parts(self) -> (ByteStream, Option<u64>) {
        let stream = self
            .stream
            .unwrap_or_else(|| Box::pin(stream::empty::<Result<Bytes, io::Error>>()));
        (stream, self.len)
    }

    /// Rebuilds a body from a stream and a declared length.
    pub fn from_parts(stream: ByteStream, len: Option<u64>) -> Self {
        Self {
            stream: Some(stream),
            len,
        }
    }
}

impl http_body::Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        match stream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                self.stream = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// The content type of every JSON answer.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// A JSON response with an explicit `Content-Length`.
pub fn json_response(status: u16, value: &serde_json::Value) -> http::Response<FakeBody> {
    let bytes = Bytes::from(value.to_string());
    let mut response = http::Response::new(FakeBody::empty());
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    headers.insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from(bytes.len()),
    );
    *response.body_mut() = FakeBody::full(bytes);
    response
}
