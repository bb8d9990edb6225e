//! A minimal HTTP/1.1 keep-alive client (one connection per closed-loop
//! client, requests written in one syscall, responses read by
//! `Content-Length` or chunked framing), so that the load generator spends
//! little of the CPU it shares with the server, as `wrk` does. Watches,
//! which stream without end, go through reqwest over HTTP/1.1 and through
//! [`crate::h2raw`] over HTTP/2.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::util::Failure;

/// One keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    host: String,
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

impl Conn {
    /// Connects to `base` (`http://host:port`).
    pub async fn connect(base: &str) -> io::Result<Conn> {
        let host = base
            .strip_prefix("http://")
            .ok_or_else(|| bad(format!("{base}: only http:// URLs")))?
            .trim_end_matches('/')
            .to_string();
        let stream = TcpStream::connect(&host).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            host,
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
        self.out.clear();
        self.out.extend_from_slice(method.as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(path.as_bytes());
        self.out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
        self.out.extend_from_slice(self.host.as_bytes());
        if body.is_empty() && method == "GET" {
            self.out.extend_from_slice(b"\r\n\r\n");
        } else {
            self.out.extend_from_slice(
                format!(
                    "\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            self.out.extend_from_slice(body);
        }
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
/// request.
pub struct Pool {
    bases: Vec<String>,
    conns: Vec<Mutex<Option<Conn>>>,
}

impl Pool {
    /// A pool for `clients` clients of `bases` (at least one).
    pub fn new(bases: &[String], clients: usize) -> Pool {
        assert!(!bases.is_empty(), "a pool needs a server");
        Pool {
            bases: bases.to_vec(),
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
            let conn = Conn::connect(base).await.map_err(|e| {
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
