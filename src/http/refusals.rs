//! The answers hyper gives by itself, in the shape of the surface asked.
//!
//! A request hyper cannot read (a head over `HEAD_BYTES_MAX` or with more
//! than 100 header fields: 431; a URI over 65,534 bytes: 414; a request line or
//! header that is not HTTP: 400) never reaches the router: hyper writes a
//! bare status line with `content-length: 0` and closes. An identity
//! provider would log an error with no reason, so this wrapper of the
//! connection replaces that answer with the same status and a body saying
//! why: a SCIM error (RFC 7644 section 3.12) when the request's path began
//! with `/scim`, the JSON error elsewhere.
//!
//! It sees the first bytes of each request (to tell the surface; a request
//! pipelined behind another, read before the first was answered, is told
//! in the JSON shape) and the
//! start of each response head (to recognise hyper's own). The router's
//! answers always carry a body or a length of their own, so they are never
//! mistaken for one of hyper's. It owns no policy: the limits are hyper's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::error::{Error, Surface};

/// How many bytes of a request tell its surface (`GET /scim/...`, the
/// longest method being a few letters).
const START_BYTES: usize = 24;

/// A connection whose automatic refusals get a body.
#[derive(Debug)]
pub struct Refusals<I> {
    inner: I,
    /// The first bytes of the request being read, at most `START_BYTES`.
    start: Vec<u8>,
    /// A replacement answer, and how much of it is written.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<I> Refusals<I> {
    pub fn new(inner: I) -> Refusals<I> {
        Refusals { inner, start: Vec::with_capacity(START_BYTES), replacement: None }
    }

    fn surface(&self) -> Surface {
        let path = self
            .start
            .iter()
            .position(|byte| *byte == b' ')
            .and_then(|space| self.start.get(space + 1..))
            .unwrap_or_default();
        if path.starts_with(b"/scim") { Surface::Scim } else { Surface::Api }
    }
}

/// The status of hyper's own refusal, if `head` is one: a 400, 414 or 431
/// whose head says `content-length: 0` (hyper writes header names in lower
/// case, and the router never answers these bodiless).
fn automatic_refusal(head: &[u8]) -> Option<StatusCode> {
    let status = match head.get(..13)? {
        b"HTTP/1.1 400 " | b"HTTP/1.0 400 " => StatusCode::BAD_REQUEST,
        b"HTTP/1.1 414 " | b"HTTP/1.0 414 " => StatusCode::URI_TOO_LONG,
        b"HTTP/1.1 431 " | b"HTTP/1.0 431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    let end = head.windows(4).position(|window| window == b"\r\n\r\n")?;
    let fields = head.get(..end + 4)?;
    let empty =
        fields.windows(21).any(|window| window.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    empty.then_some(status)
}

/// The whole answer that replaces hyper's.
fn answer(status: StatusCode, surface: Surface) -> Vec<u8> {
    let message = match status.as_u16() {
        414 => {
            "the request URI is longer than 65,534 bytes; send a long SCIM filter with POST .search"
        }
        431 => "the request's header fields are too large: at most 100 fields and 128 KiB in all",
        _ => "the request could not be read as HTTP/1.1 (a malformed request line or header field)",
    };
    let (content_type, body) = surface.body(Error::Unreadable { status, message });
    let body = body.to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

impl<I: AsyncWrite + Unpin> Refusals<I> {
    /// Writes out a pending replacement; ready once none is left.
    fn drive(&mut self, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            let Some(rest) = bytes.get(*written..).filter(|rest| !rest.is_empty()) else {
                self.replacement = None;
                break;
            };
            let wrote = ready!(Pin::new(&mut self.inner).poll_write(context, rest))?;
            if wrote == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += wrote;
        }
        Poll::Ready(Ok(()))
    }

    /// Looks at what hyper writes first (a response head starts a write;
    /// hyper's refusal is a head alone): takes a refusal whole and queues
    /// the answer that replaces it (true), or notes that a response begins,
    /// so what is read next starts a request.
    fn intercept(&mut self, context: &mut Context<'_>, first: &[u8]) -> io::Result<bool> {
        if !first.starts_with(b"HTTP/1.") {
            return Ok(false);
        }
        let Some(status) = automatic_refusal(first) else {
            self.start.clear();
            return Ok(false);
        };
        self.replacement = Some((answer(status, self.surface()), 0));
        // Hyper's bytes are dropped; ours go out now, or at the next write,
        // flush or shutdown.
        if let Poll::Ready(Err(error)) = self.drive(context) {
            return Err(error);
        }
        Ok(true)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Refusals<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(context, buf))?;
        let wanted = START_BYTES.saturating_sub(self.start.len());
        if wanted > 0 {
            let new = buf.filled().get(before..).unwrap_or_default();
            let taken = new.get(..wanted.min(new.len())).unwrap_or_default();
            self.start.extend_from_slice(taken);
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Refusals<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drive(context))?;
        if self.intercept(context, buf)? {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(context, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drive(context))?;
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drive(context))?;
        Pin::new(&mut self.inner).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.drive(context))?;
        let first = slices.iter().find(|slice| !slice.is_empty()).map(|slice| &**slice);
        if self.intercept(context, first.unwrap_or_default())? {
            return Poll::Ready(Ok(slices.iter().map(|slice| slice.len()).sum()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(context, slices)
    }

    // Vectored like the connection beneath, so hyper keeps queueing bodies
    // beside their heads instead of copying them into one buffer per
    // connection.
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_refusals_are_recognised() {
        let hyper =
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        assert_eq!(automatic_refusal(hyper), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        let uri = b"HTTP/1.1 414 URI Too Long\r\ndate: x\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_refusal(uri), Some(StatusCode::URI_TOO_LONG));
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n\r\n0123456789";
        assert_eq!(automatic_refusal(with_body), None);
        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(automatic_refusal(ok), None);
        let unfinished = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n";
        assert_eq!(automatic_refusal(unfinished), None);
    }

    #[test]
    fn the_answer_is_in_the_shape_of_the_surface_asked() {
        let mut scim = Refusals::new(());
        scim.start.extend_from_slice(b"GET /scim/v2/Us");
        assert_eq!(scim.surface(), Surface::Scim);
        let text = String::from_utf8(answer(StatusCode::URI_TOO_LONG, scim.surface())).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{head}");
        assert!(head.contains("content-type: application/scim+json"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["status"], "414");
        assert!(body["detail"].as_str().unwrap().contains("65,534"), "{body}");

        let mut api = Refusals::new(());
        api.start.extend_from_slice(b"GET /api/v1/");
        let text = String::from_utf8(answer(StatusCode::BAD_REQUEST, api.surface())).unwrap();
        let body: serde_json::Value =
            serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(body["error"], "malformed_request");
    }
}
