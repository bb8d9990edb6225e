//! A minimal HTTP/1.1 keep-alive client (one connection per closed-loop
//! client, requests written in one syscall, responses read by
//! `Content-Length` or chunked framing), so that the load generator spends
//! little of the CPU it shares with the server, as `wrk` does. Header
//! lines every request carries (`--auth`'s `authorization`) are formatted
//! once per connection, with the request line's tail and `host`. Watches,
//! which stream without end, go through reqwest over HTTP/1.1 and through
//! [`crate::h2raw`] over HTTP/2.

use std::io;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::util::Failure;

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    /// What follows the path in every request: ` HTTP/1.1`, `host` and
    /// the extra header lines, without the final CRLF ([`head`]).
    head: Vec<u8>,
    buf: Vec<u8>,
    out: Vec<u8>,
}

/// A response: status code and body length (the body is read, not kept,
/// but for the first [`ERROR_BODY`] bytes of an error's).
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body length in bytes.
    pub len: usize,
    /// With a status of 400 or more: the start of the body (a problem's
    /// JSON), to report it.
    pub error: Option<String>,
}

/// Bytes of an error response's body kept in [`Response::error`].
const ERROR_BODY: usize = 1024;

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// What follows the path in every request to `host` (request line's tail,
/// `host` and the `extra` header lines, each `\r\nname: value`), without
/// the CRLF that ends the last line.
fn head(host: &str, extra: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + host.len() + extra.len());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(extra);
    out
}

/// Writes the request `method path` with `head` ([`head`]) and a JSON
/// `body` (none for a `GET` without one) into `out`, cleared first.
fn write_request(out: &mut Vec<u8>, method: &str, path: &str, head: &[u8], body: &[u8]) {
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(head);
    if body.is_empty() && method == "GET" {
        out.extend_from_slice(b"\r\n\r\n");
    } else {
        out.extend_from_slice(
            format!(
                "\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(body);
    }
}

impl Conn {
    /// Connects to `base` (`http://host:port`); every request carries the
    /// header lines `extra` (each `\r\nname: value`, e.g.
    /// [`crate::auth::Token::raw_line`]; empty for none).
    pub async fn connect(base: &str, extra: &[u8]) -> io::Result<Conn> {
        let host = base
            .strip_prefix("http://")
            .ok_or_else(|| bad(format!("{base}: only http:// URLs")))?
            .trim_end_matches('/');
        let stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            head: head(host, extra),
            buf: Vec::with_capacity(16 * 1024),
            out: Vec::with_capacity(4 * 1024),
        })
    }

    /// Sends one request with a JSON body (if any) and reads the response.
    pub async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<Response> {
        self.send(method, path, body).await?;
        self.read_response(None).await
    }

    /// Sends a `GET` and reads the whole response body into `into`
    /// (cleared first; its capacity is kept across calls).
    pub async fn get_into(&mut self, path: &str, into: &mut Vec<u8>) -> io::Result<Response> {
        into.clear();
        self.send("GET", path, b"").await?;
        self.read_response(Some(into)).await
    }

    async fn send(&mut self, method: &str, path: &str, body: &[u8]) -> io::Result<()> {
        write_request(&mut self.out, method, path, &self.head, body);
        self.stream.write_all(&self.out).await
    }

    async fn fill(&mut self) -> io::Result<()> {
        // Reads into spare capacity (no zero-filling).
        self.buf.reserve(64 * 1024);
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }

    async fn read_response(&mut self, sink: Option<&mut Vec<u8>>) -> io::Result<Response> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(|_| bad("head not UTF-8"))?;
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status"))?;
        let mut length = None;
        let mut chunked = false;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.trim().eq_ignore_ascii_case("chunked");
            }
        }
        self.buf.drain(..head_end);
        // An error's body is kept (its start) when the caller keeps none.
        let mut kept = Vec::new();
        let sink = match sink {
            Some(sink) => Some(sink),
            None if status >= 400 => Some(&mut kept),
            None => None,
        };
        let len = match (length, chunked) {
            (_, true) => self.read_chunked(sink).await?,
            (Some(n), false) => {
                while self.buf.len() < n {
                    self.fill().await?;
                }
                if let Some(sink) = sink {
                    sink.extend_from_slice(&self.buf[..n]);
                }
                self.buf.drain(..n);
                n
            }
            (None, false) => return Err(bad("response without length")),
        };
        let error = (status >= 400).then(|| {
            let end = kept.len().min(ERROR_BODY);
            String::from_utf8_lossy(&kept[..end]).into_owned()
        });
        Ok(Response { status, len, error })
    }

    async fn read_chunked(&mut self, mut sink: Option<&mut Vec<u8>>) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill().await?;
            };
            let size_text =
                std::str::from_utf8(&self.buf[..line_end]).map_err(|_| bad("chunk size"))?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("chunk size"))?;
            // The chunk, its CRLF (and for the last chunk, the final CRLF).
            let need = line_end + 2 + size + 2;
            while self.buf.len() < need {
                self.fill().await?;
            }
            if let Some(sink) = sink.as_deref_mut() {
                sink.extend_from_slice(&self.buf[line_end + 2..line_end + 2 + size]);
            }
            self.buf.drain(..need);
            total += size;
            if size == 0 {
                return Ok(total);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One lazily opened connection per closed-loop client, client `c` on
/// `bases[c % bases.len()]` (the replicas of one store share the clients
/// out); a connection that fails is dropped and reopened by the next
/// request. Every request carries the pool's extra header lines.
pub struct Pool {
    bases: Vec<String>,
    extra: Arc<[u8]>,
    conns: Vec<Mutex<Option<Conn>>>,
}

impl Pool {
    /// A pool for `clients` clients of `bases` (at least one), whose
    /// requests carry the header lines `extra` ([`Conn::connect`]).
    pub fn new(bases: &[String], clients: usize, extra: Arc<[u8]>) -> Pool {
        assert!(!bases.is_empty(), "a pool needs a server");
        Pool {
            bases: bases.to_vec(),
            extra,
            conns: (0..clients).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Sends a request on client `c`'s connection.
    pub async fn request(
        &self,
        c: usize,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Response, Failure> {
        let mut slot = self.conns[c].lock().await;
        if slot.is_none() {
            let base = &self.bases[c % self.bases.len()];
            let conn = Conn::connect(base, &self.extra).await.map_err(|e| {
                Failure::new(format!("connect: {e}"), format!("connect to {base}: {e}"))
            })?;
            *slot = Some(conn);
        }
        let conn = slot.as_mut().expect("connected above");
        match conn.request(method, path, body).await {
            Ok(r) => Ok(r),
            Err(e) => {
                *slot = None;
                Err(Failure::new(
                    format!("{method}: {e}"),
                    format!("{method} {path}: {e}"),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, path: &str, extra: &[u8], body: &[u8]) -> String {
        let mut out = b"left over".to_vec();
        write_request(&mut out, method, path, &head("127.0.0.1:8080", extra), body);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn requests_carry_host_then_the_extra_lines() {
        assert_eq!(
            request("GET", "/a", b"", b""),
            "GET /a HTTP/1.1\r\nhost: 127.0.0.1:8080\r\n\r\n"
        );
        let auth = b"\r\nauthorization: Bearer mh_t";
        assert_eq!(
            request("GET", "/a", auth, b""),
            "GET /a HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nauthorization: Bearer mh_t\r\n\r\n"
        );
        assert_eq!(
            request("POST", "/c", auth, b"{}"),
            "POST /c HTTP/1.1\r\nhost: 127.0.0.1:8080\r\nauthorization: Bearer mh_t\r\n\
             content-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
        );
    }

    /// A server of one connection that answers `200` with a 2-byte body
    /// to a request with the header `authorization: Bearer mh_t`, `401`
    /// to one without; answers how many requests it read.
    async fn server() -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (mut requests, mut buf) = (0, Vec::new());
            loop {
                let Some(end) = find(&buf, b"\r\n\r\n") else {
                    if stream.read_buf(&mut buf).await.unwrap() == 0 {
                        return requests;
                    }
                    continue;
                };
                let head: Vec<u8> = buf.drain(..end + 4).collect();
                let answer: &[u8] = if find(&head, b"\r\nauthorization: Bearer mh_t\r\n").is_some()
                {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                } else {
                    b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\nno"
                };
                requests += 1;
                stream.write_all(answer).await.unwrap();
            }
        });
        (base, task)
    }

    #[tokio::test]
    async fn a_pool_sends_its_header_on_every_request() {
        let (base, task) = server().await;
        let extra: Arc<[u8]> = b"\r\nauthorization: Bearer mh_t".as_slice().into();
        let pool = Pool::new(std::slice::from_ref(&base), 1, extra);
        for _ in 0..3 {
            let resp = pool.request(0, "GET", "/x", b"").await.unwrap();
            assert_eq!((resp.status, resp.len), (200, 2));
        }
        drop(pool);
        assert_eq!(task.await.unwrap(), 3);
        // Without it: refused, the error's body kept.
        let (base, _task) = server().await;
        let mut conn = Conn::connect(&base, b"").await.unwrap();
        let resp = conn.request("GET", "/x", b"").await.unwrap();
        assert_eq!((resp.status, resp.error.as_deref()), (401, Some("no")));
    }
}
