//! A minimal HTTP/2 cleartext client (prior knowledge, RFC 9113) for the
//! watch fan-out: one task per connection opens its `GET` streams, then
//! reads frames and hands each DATA payload, with the time it was read, to
//! the caller; there is no task, channel or lock per stream. It is to
//! reqwest's HTTP/2 what [`crate::raw`] is to its HTTP/1.1: the load
//! generator shares the CPU with the server, and 1,000 watchers through
//! reqwest cost it about as much per delivered event as the server spends.
//!
//! Only what a watch needs: no request bodies, no server push, response
//! headers checked for `:status 200` only, flow control windows opened
//! wide at the start and refilled as data is read. A request may carry an
//! `authorization` header (`--auth`).

use std::io;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const WINDOW_UPDATE: u8 = 0x8;

/// The largest flow-control window (2^31 - 1).
const WINDOW: u32 = 0x7fff_ffff;
/// The default initial window, which the connection starts with.
const DEFAULT_WINDOW: u32 = 65_535;
/// Received bytes after which a window is topped up again.
const REFILL: u32 = 1 << 30;

/// HPACK static table entry `:status: 200`, indexed (RFC 7541, Appendix A).
const STATUS_200: u8 = 0x88;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & WINDOW).to_be_bytes());
    out.extend_from_slice(payload);
}

fn window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    frame(out, WINDOW_UPDATE, 0, stream, &increment.to_be_bytes());
}

/// An HPACK integer with an `n`-bit prefix, the prefix's other bits `high`.
fn hpack_int(out: &mut Vec<u8>, n: u8, high: u8, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A literal header field without indexing, its name the static table's
/// entry `name`, its value a plain (not Huffman-coded) string.
fn hpack_literal(out: &mut Vec<u8>, name: usize, value: &str) {
    hpack_int(out, 4, 0x00, name);
    hpack_int(out, 7, 0x00, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// The same, never indexed (RFC 7541, 6.2.3: no intermediary may put the
/// value into a table), for a credential.
fn hpack_never_indexed(out: &mut Vec<u8>, name: usize, value: &str) {
    hpack_int(out, 4, 0x10, name);
    hpack_int(out, 7, 0x00, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// HPACK static table entry naming `authorization`.
const AUTHORIZATION: usize = 23;

/// The header block of `GET path` to `authority` over `http`, with
/// `authorization` if given (its value, e.g. `Bearer TOKEN`).
fn get_headers(authority: &str, path: &str, authorization: Option<&str>) -> Vec<u8> {
    // Static table: 2 is `:method: GET`, 6 `:scheme: http`; 1 and 4 name
    // `:authority` and `:path`.
    let mut block = vec![0x82, 0x86];
    hpack_literal(&mut block, 4, path);
    hpack_literal(&mut block, 1, authority);
    if let Some(value) = authorization {
        hpack_never_indexed(&mut block, AUTHORIZATION, value);
    }
    block
}

/// What the caller made of an [`Event`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Nothing new (e.g. a bookmark, or an event already seen).
    Nothing,
    /// Something new: the idle timeout starts again.
    New,
    /// Everything wanted has arrived: the connection is closed.
    Done,
}

/// What a watch connection reports for one of its streams.
pub enum Event<'a> {
    /// Every stream answered `200`: the watches are registered.
    Ready,
    /// Response body bytes of stream number `stream` (an index into the
    /// paths), read at `at`.
    Data {
        /// Index of the stream's path.
        stream: usize,
        /// The bytes.
        data: &'a [u8],
        /// When they were handed over: after the read, and after the
        /// frames before them in the same read were handed over.
        at: Instant,
    },
}

/// Opens one connection to `base` (`http://host:port`) with one `GET`
/// stream per path (each with the `authorization` header's value, if
/// given), and calls `on` for each [`Event`] until it answers
/// [`Seen::Done`]. Fails if the connection ends first (closed, GOAWAY, or
/// `idle` without anything [`Seen::New`]: bookmarks alone do not keep it
/// open), if a stream is refused, reset or ended, or on a protocol error;
/// the caller keeps what it was given before.
pub async fn watch<F>(
    base: &str,
    paths: &[String],
    authorization: Option<&str>,
    idle: Duration,
    mut on: F,
) -> io::Result<()>
where
    F: FnMut(Event<'_>) -> Seen,
{
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| bad(format!("{base}: only http:// URLs")))?
        .trim_end_matches('/');
    let mut stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;

    let mut out = Vec::with_capacity(64 * 1024);
    out.extend_from_slice(PREFACE);
    let mut settings = Vec::new();
    for (id, value) in [
        (SETTINGS_ENABLE_PUSH, 0),
        (SETTINGS_INITIAL_WINDOW_SIZE, WINDOW),
    ] {
        settings.extend_from_slice(&id.to_be_bytes());
        settings.extend_from_slice(&value.to_be_bytes());
    }
    frame(&mut out, SETTINGS, 0, 0, &settings);
    window_update(&mut out, 0, WINDOW - DEFAULT_WINDOW);
    for (i, path) in paths.iter().enumerate() {
        let block = get_headers(authority, path, authorization);
        frame(
            &mut out,
            HEADERS,
            END_HEADERS | END_STREAM,
            id_of(i),
            &block,
        );
    }
    stream.write_all(&out).await?;

    // Bytes received since the last window update: the connection's, then
    // each stream's.
    let mut conn_unacked: u32 = 0;
    let mut unacked = vec![0u32; paths.len()];
    let mut answered = vec![false; paths.len()];
    let mut unanswered = paths.len();
    // One timer, pushed back at most once a second while there is news.
    let timer = tokio::time::sleep(idle);
    tokio::pin!(timer);
    let mut armed = Instant::now();
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    let mut start = 0;
    loop {
        out.clear();
        let mut news = false;
        // Whole frames from `start`.
        while buf.len() - start >= FRAME_HEADER {
            let head = &buf[start..start + FRAME_HEADER];
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            if buf.len() - start < FRAME_HEADER + len {
                break;
            }
            let (kind, flags) = (head[3], head[4]);
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & WINDOW;
            let payload = &buf[start + FRAME_HEADER..start + FRAME_HEADER + len];
            start += FRAME_HEADER + len;
            let seen = match kind {
                DATA => {
                    let index = index_of(id, paths.len())?;
                    let data = unpad(payload, flags)?;
                    conn_unacked += len as u32;
                    unacked[index] += len as u32;
                    if unacked[index] >= REFILL {
                        window_update(&mut out, id, unacked[index]);
                        unacked[index] = 0;
                    }
                    let seen = if data.is_empty() {
                        Seen::Nothing
                    } else {
                        on(Event::Data {
                            stream: index,
                            data,
                            at: Instant::now(),
                        })
                    };
                    if flags & END_STREAM != 0 && seen != Seen::Done {
                        return Err(bad(format!("stream {id}: the server ended the watch")));
                    }
                    seen
                }
                HEADERS => {
                    let index = index_of(id, paths.len())?;
                    if answered[index] {
                        return Err(bad(format!("stream {id}: a second header block")));
                    }
                    if flags & END_HEADERS == 0 {
                        return Err(bad(format!("stream {id}: headers continue")));
                    }
                    let mut block = unpad(payload, flags)?;
                    if flags & PRIORITY != 0 {
                        block = block.get(5..).ok_or_else(|| bad("short HEADERS"))?;
                    }
                    if status(block) != Some(STATUS_200) {
                        return Err(bad(format!("stream {id}: status is not 200")));
                    }
                    if flags & END_STREAM != 0 {
                        return Err(bad(format!("stream {id}: the watch ended at once")));
                    }
                    answered[index] = true;
                    unanswered -= 1;
                    if unanswered == 0 {
                        on(Event::Ready)
                    } else {
                        Seen::New
                    }
                }
                RST_STREAM => {
                    return Err(bad(format!(
                        "stream {id}: reset by the server (error code {})",
                        be32(payload)
                    )));
                }
                GOAWAY => {
                    return Err(bad(format!(
                        "the server went away (last stream {}, error code {})",
                        be32(payload) & WINDOW,
                        be32(payload.get(4..).unwrap_or_default())
                    )));
                }
                SETTINGS if flags & ACK == 0 => {
                    frame(&mut out, SETTINGS, ACK, 0, &[]);
                    Seen::Nothing
                }
                PING if flags & ACK == 0 => {
                    frame(&mut out, PING, ACK, 0, payload);
                    Seen::Nothing
                }
                _ => Seen::Nothing,
            };
            match seen {
                Seen::Done => return Ok(()),
                Seen::New => news = true,
                Seen::Nothing => {}
            }
        }
        if news && armed.elapsed() >= Duration::from_secs(1) {
            armed = Instant::now();
            timer.as_mut().reset(tokio::time::Instant::now() + idle);
        }
        if conn_unacked >= REFILL {
            window_update(&mut out, 0, conn_unacked);
            conn_unacked = 0;
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
        }
        buf.drain(..start);
        start = 0;
        buf.reserve(128 * 1024);
        tokio::select! {
            biased;
            read = stream.read_buf(&mut buf) => if read? == 0 {
                return Err(bad("the server closed the connection"));
            },
            () = &mut timer => {
                return Err(bad(format!("nothing new for {idle:?}")));
            }
        }
    }
}

/// The first header of a response header block, past any dynamic table
/// size updates (RFC 7541, 6.3: `001xxxxx`, a 5-bit prefix integer).
fn status(mut block: &[u8]) -> Option<u8> {
    while let Some(&first) = block.first() {
        if first & 0xe0 != 0x20 {
            return Some(first);
        }
        // The update's integer: continuation bytes have the high bit set.
        let mut len = 1;
        if first & 0x1f == 0x1f {
            while block.get(len)? & 0x80 != 0 {
                len += 1;
            }
            len += 1;
        }
        block = block.get(len..)?;
    }
    None
}

/// A 32-bit big-endian number at the start of `bytes` (0 if too short).
fn be32(bytes: &[u8]) -> u32 {
    bytes
        .get(..4)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// The stream id of the `i`th request (client streams are odd).
fn id_of(i: usize) -> u32 {
    2 * i as u32 + 1
}

/// The request index of stream `id`.
fn index_of(id: u32, streams: usize) -> io::Result<usize> {
    let index = (id as usize).wrapping_sub(1) / 2;
    if id % 2 == 1 && index < streams {
        Ok(index)
    } else {
        Err(bad(format!("a frame on unknown stream {id}")))
    }
}

/// A frame's payload without its padding (if flagged PADDED).
fn unpad(payload: &[u8], flags: u8) -> io::Result<&[u8]> {
    if flags & PADDED == 0 {
        return Ok(payload);
    }
    let pad = usize::from(*payload.first().ok_or_else(|| bad("short padded frame"))?);
    payload
        .get(1..payload.len().saturating_sub(pad))
        .filter(|_| pad < payload.len())
        .ok_or_else(|| bad("padding longer than the frame"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::body::{Body, Bytes};
    use futures_util::StreamExt;

    /// The line `i` of a test stream: 1.5 KB, like a watch event.
    fn line(i: usize) -> String {
        format!("{{\"n\":{i},\"pad\":\"{}\"}}\n", "x".repeat(1500))
    }

    /// An HTTP/2 (and HTTP/1.1) server, hyper's through axum as modelhub's
    /// is: `/lines` answers `LINES` lines, then stays open; `/ended`
    /// answers one line and ends.
    const LINES: usize = 300;

    async fn server() -> String {
        let app = axum::Router::new()
            .route(
                "/private",
                axum::routing::get(|headers: axum::http::HeaderMap| async move {
                    let authorized = headers
                        .get("authorization")
                        .is_some_and(|v| v == "Bearer mh_t");
                    if authorized {
                        Ok(Body::from_stream(
                            futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from(
                                line(0),
                            ))])
                            .chain(futures_util::stream::pending()),
                        ))
                    } else {
                        Err(axum::http::StatusCode::UNAUTHORIZED)
                    }
                }),
            )
            .route(
                "/lines",
                axum::routing::get(|| async {
                    let lines = futures_util::stream::iter(
                        (0..LINES).map(|i| Ok::<_, std::io::Error>(Bytes::from(line(i)))),
                    )
                    .chain(futures_util::stream::pending());
                    Body::from_stream(lines)
                }),
            )
            .route("/ended", axum::routing::get(|| async { line(0) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    #[tokio::test]
    async fn every_stream_gets_its_whole_body_past_the_default_windows() {
        // 300 lines of 1.5 KB per stream: 450 KB each, 2.7 MB in all, well
        // past the default 64 KB windows of a stream and of the connection.
        let base = server().await;
        let paths = vec!["/lines".to_string(); 6];
        let want: String = (0..LINES).map(line).collect();
        let mut got = vec![Vec::new(); paths.len()];
        let mut ready = 0;
        let result = watch(
            &base,
            &paths,
            None,
            Duration::from_secs(10),
            |event| match event {
                Event::Ready => {
                    ready += 1;
                    Seen::New
                }
                Event::Data { stream, data, .. } => {
                    got[stream].extend_from_slice(data);
                    if got.iter().all(|g| g.len() == want.len()) {
                        Seen::Done
                    } else {
                        Seen::New
                    }
                }
            },
        )
        .await;
        result.unwrap();
        assert_eq!(ready, 1);
        for g in got {
            assert_eq!(String::from_utf8(g).unwrap(), want);
        }
    }

    #[tokio::test]
    async fn a_stream_that_ends_is_an_error_after_its_data() {
        let base = server().await;
        let mut got = Vec::new();
        let err = watch(
            &base,
            &["/ended".to_string()],
            None,
            Duration::from_secs(10),
            |event| {
                if let Event::Data { data, .. } = event {
                    got.extend_from_slice(data);
                }
                Seen::New
            },
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("ended the watch"), "{err}");
        assert_eq!(String::from_utf8(got).unwrap(), line(0));
    }

    /// The error that ends a watch of `path` whose every event is answered
    /// `answer`.
    async fn error_of(path: &str, idle: Duration, answer: Seen) -> String {
        let base = server().await;
        watch(&base, &[path.to_string()], None, idle, |_| answer)
            .await
            .unwrap_err()
            .to_string()
    }

    #[tokio::test]
    async fn nothing_new_for_the_idle_time_is_an_error() {
        let started = Instant::now();
        let idle = Duration::from_millis(300);
        let err = error_of("/lines", idle, Seen::Nothing).await;
        assert!(err.contains("nothing new"), "{err}");
        assert!(started.elapsed() >= idle);
    }

    #[tokio::test]
    async fn a_refused_request_is_an_error() {
        let err = error_of("/missing", Duration::from_secs(10), Seen::New).await;
        assert!(err.contains("status is not 200"), "{err}");
    }

    #[test]
    fn hpack_integers_follow_rfc_7541_examples() {
        // C.1.1: 10 with a 5-bit prefix; C.1.2: 1337 with a 5-bit prefix.
        let mut out = Vec::new();
        hpack_int(&mut out, 5, 0, 10);
        assert_eq!(out, [10]);
        out.clear();
        hpack_int(&mut out, 5, 0, 1337);
        assert_eq!(out, [31, 154, 10]);
    }

    #[test]
    fn get_headers_are_static_entries_and_literals() {
        let block = get_headers("h:1", "/p", None);
        assert_eq!(
            block,
            [0x82, 0x86, 0x04, 2, b'/', b'p', 0x01, 3, b'h', b':', b'1']
        );
        // authorization: static entry 23, never indexed (0x1f 0x08: 23 in
        // a 4-bit prefix).
        let block = get_headers("h:1", "/p", Some("Bearer t"));
        let mut want = vec![0x82, 0x86, 0x04, 2, b'/', b'p', 0x01, 3, b'h', b':', b'1'];
        want.extend_from_slice(&[0x1f, 0x08, 8]);
        want.extend_from_slice(b"Bearer t");
        assert_eq!(block, want);
    }

    #[tokio::test]
    async fn the_authorization_header_reaches_the_server() {
        let base = server().await;
        let paths = vec!["/private".to_string(); 3];
        let mut got = vec![0; paths.len()];
        watch(
            &base,
            &paths,
            Some("Bearer mh_t"),
            Duration::from_secs(10),
            |event| match event {
                Event::Ready => Seen::New,
                Event::Data { stream, data, .. } => {
                    got[stream] += data.len();
                    if got.iter().all(|g| *g == line(0).len()) {
                        Seen::Done
                    } else {
                        Seen::New
                    }
                }
            },
        )
        .await
        .unwrap();
        for token in [None, Some("Bearer other")] {
            let err = watch(&base, &paths, token, Duration::from_secs(10), |_| Seen::New)
                .await
                .unwrap_err();
            assert!(err.to_string().contains("status is not 200"), "{err}");
        }
    }

    #[test]
    fn stream_ids_and_indexes_round_trip() {
        for i in [0, 1, 199] {
            assert_eq!(index_of(id_of(i), 200).unwrap(), i);
        }
        assert!(index_of(2, 200).is_err());
        assert!(index_of(id_of(200), 200).is_err());
    }

    #[test]
    fn status_skips_table_size_updates() {
        assert_eq!(status(&[0x88, 0x5f]), Some(0x88));
        // Size 0, then size 4096 (0x3f 0xe1 0x1f), then :status 200.
        assert_eq!(status(&[0x20, 0x3f, 0xe1, 0x1f, 0x88]), Some(0x88));
        assert_eq!(status(&[0x3f, 0xe1]), None);
        assert_eq!(status(&[]), None);
    }

    #[test]
    fn padding_is_removed() {
        assert_eq!(unpad(&[2, b'a', b'b', 0, 0], PADDED).unwrap(), b"ab");
        assert_eq!(unpad(b"ab", 0).unwrap(), b"ab");
        assert!(unpad(&[9, b'a'], PADDED).is_err());
    }
}
