//! Accepted connections, with HTTP/2 writes coalesced.
//!
//! The h2 crate writes each DATA frame of 256 bytes or more with a system
//! call of its own (it chains the payload instead of copying it) and
//! flushes after each, so one watch event sent to the 200 streams of a
//! connection costs 200 `writev`s. [`Coalesce`] copies writes into a buffer
//! and puts off a flush that follows a write. A round of sending whose last
//! frame was such a DATA frame ends with a flush that no write precedes,
//! which sends the whole buffer in one call. Otherwise the put-off flush
//! has woken the connection's task, whose next poll (every poll of an h2
//! connection reads until the socket has nothing, then sends) flushes
//! again: data waits at most one poll, and a flush is never lost. The
//! buffer stays under 256 KiB plus one write. HTTP/1.1 connections
//! pass through untouched (hyper already gathers their writes); the
//! protocol is told by the first bytes the client sends.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface starts with this (no HTTP/1.1 method does).
const H2_PREFIX: &[u8] = b"PRI";
/// Buffered bytes beyond which a write first sends what is buffered.
const HIGH_WATER: usize = 256 * 1024;
/// A buffer that grew past this is freed once sent.
const KEEP_CAPACITY: usize = 64 * 1024;

/// The protocol of a connection, as far as known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Fewer than three bytes read yet.
    Sniffing,
    /// HTTP/1.x: pass through.
    Plain,
    /// HTTP/2: coalesce.
    H2,
}

/// An accepted connection (see the module doc).
#[derive(Debug)]
pub struct Coalesce<T> {
    inner: T,
    mode: Mode,
    head: Vec<u8>,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already sent.
    sent: usize,
    /// A write came after the last flush.
    dirty: bool,
    /// Polls of the connection so far, as counted by reads that found
    /// nothing to read (h2 reads until then at the start of every poll).
    round: u64,
    /// The round in which a flush of the buffered bytes was first put off.
    held: Option<u64>,
}

impl<T> Coalesce<T> {
    /// Wraps an accepted connection.
    pub fn new(inner: T) -> Coalesce<T> {
        Coalesce {
            inner,
            mode: Mode::Sniffing,
            head: Vec::with_capacity(H2_PREFIX.len()),
            buf: Vec::new(),
            sent: 0,
            dirty: false,
            round: 0,
            held: None,
        }
    }

    fn sniff(&mut self, fresh: &[u8]) {
        let take = (H2_PREFIX.len() - self.head.len()).min(fresh.len());
        self.head.extend_from_slice(&fresh[..take]);
        if self.head.len() == H2_PREFIX.len() {
            self.mode = if self.head == H2_PREFIX {
                Mode::H2
            } else {
                Mode::Plain
            };
            self.head = Vec::new();
        }
    }
}

impl<T: AsyncWrite + Unpin> Coalesce<T> {
    /// Sends everything buffered.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if self.buf.capacity() > KEEP_CAPACITY {
            // A large response went out: do not hold its buffer for the
            // connection's lifetime.
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.sent = 0;
        self.held = None;
        Poll::Ready(Ok(()))
    }

    /// Makes room before buffering more: sends the buffer once it is past
    /// the high-water mark (pending only while it stays past it), and drops
    /// what a partial send already sent, so that a slow peer cannot make
    /// the buffer grow.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.len() - self.sent >= HIGH_WATER {
            match self.poll_send(cx) {
                Poll::Pending if self.buf.len() - self.sent >= HIGH_WATER => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                _ => {}
            }
        }
        if self.sent > 0 {
            self.buf.drain(..self.sent);
            self.sent = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Coalesce<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = out.filled().len();
        let Poll::Ready(read) = Pin::new(&mut this.inner).poll_read(cx, out) else {
            this.round += 1;
            return Poll::Pending;
        };
        read?;
        if this.mode == Mode::Sniffing {
            this.sniff(&out.filled()[before..]);
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalesce<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.mode != Mode::H2 {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        ready!(this.poll_room(cx))?;
        this.buf.extend_from_slice(data);
        this.dirty = true;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.mode != Mode::H2 {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        ready!(this.poll_room(cx))?;
        let mut n = 0;
        for b in bufs {
            this.buf.extend_from_slice(b);
            n += b.len();
        }
        this.dirty = true;
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.dirty {
            this.dirty = false;
            let held_before = this.held.is_some_and(|r| r != this.round);
            if !held_before {
                // More frames may follow in this round: send them all with
                // a later flush. The wake makes sure there is one.
                if this.sent < this.buf.len() {
                    this.held.get_or_insert(this.round);
                    cx.waker().wake_by_ref();
                }
                return Poll::Ready(Ok(()));
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        this.dirty = false;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// A listener whose connections are [`Coalesce`]d.
#[derive(Debug)]
pub struct Coalescing<L>(pub L);

impl<L> axum::serve::Listener for Coalescing<L>
where
    L: axum::serve::Listener,
{
    type Io = Coalesce<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (Coalesce::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    /// A connection whose client sent `preface`, and the client's end.
    async fn opened(
        preface: &[u8],
    ) -> (Coalesce<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, mut client) = duplex(1 << 20);
        let mut conn = Coalesce::new(server);
        client.write_all(preface).await.unwrap();
        let mut got = vec![0; preface.len()];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(got, preface);
        (conn, client)
    }

    /// What the client can read right now.
    async fn available(client: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut out = vec![0; 1 << 16];
        match tokio::time::timeout(std::time::Duration::from_millis(20), client.read(&mut out))
            .await
        {
            Ok(n) => {
                out.truncate(n.unwrap());
                out
            }
            Err(_) => Vec::new(),
        }
    }

    #[tokio::test]
    async fn http2_writes_go_out_at_the_flush_no_write_precedes() {
        let (mut conn, mut client) = opened(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        for frame in [&b"one"[..], b"two", b"three"] {
            conn.write_all(frame).await.unwrap();
            conn.flush().await.unwrap();
        }
        assert!(available(&mut client).await.is_empty(), "held back");
        conn.flush().await.unwrap();
        assert_eq!(available(&mut client).await, b"onetwothree");
    }

    #[tokio::test]
    async fn a_put_off_flush_wakes_the_task() {
        let (mut conn, _client) = opened(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        conn.write_all(b"frame").await.unwrap();
        let waker = futures_util::task::noop_waker();
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        struct Count(std::sync::Arc<std::sync::atomic::AtomicUsize>);
        impl std::task::Wake for Count {
            fn wake(self: std::sync::Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let counting = std::task::Waker::from(std::sync::Arc::new(Count(counter.clone())));
        let mut cx = Context::from_waker(&counting);
        assert!(Pin::new(&mut conn).poll_flush(&mut cx).is_ready());
        assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 1);
        // The next flush sends, and wakes nobody.
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            Pin::new(&mut conn).poll_flush(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert!(conn.buf.is_empty());
        assert_eq!(counter.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn http1_passes_through() {
        let (mut conn, mut client) = opened(b"GET / HTTP/1.1\r\n\r\n").await;
        conn.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        assert_eq!(available(&mut client).await, b"HTTP/1.1 200 OK\r\n");
        assert!(conn.buf.is_empty());
    }

    #[tokio::test]
    async fn the_protocol_is_told_across_short_reads() {
        let (server, mut client) = duplex(1 << 20);
        let mut conn = Coalesce::new(server);
        let mut one = [0u8; 1];
        for b in b"PRI" {
            client.write_all(&[*b]).await.unwrap();
            conn.read_exact(&mut one).await.unwrap();
        }
        assert_eq!(conn.mode, Mode::H2);
        let (server, mut client) = duplex(1 << 20);
        let mut conn = Coalesce::new(server);
        for b in b"PUT" {
            client.write_all(&[*b]).await.unwrap();
            conn.read_exact(&mut one).await.unwrap();
        }
        assert_eq!(conn.mode, Mode::Plain);
    }

    #[tokio::test]
    async fn a_flush_put_off_in_one_poll_is_sent_in_the_next() {
        let (mut conn, mut client) = opened(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        conn.write_all(b"small").await.unwrap();
        conn.flush().await.unwrap();
        assert!(available(&mut client).await.is_empty(), "held back");
        // The connection's next poll: a read that finds nothing, then more
        // frames and their flush, which now sends everything.
        let mut none = [0u8; 16];
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut rb = ReadBuf::new(&mut none);
        assert!(Pin::new(&mut conn).poll_read(&mut cx, &mut rb).is_pending());
        conn.write_all(b"more").await.unwrap();
        conn.flush().await.unwrap();
        assert_eq!(available(&mut client).await, b"smallmore");
    }

    #[tokio::test]
    async fn a_slow_peer_does_not_grow_the_buffer() {
        let (server, mut client) = duplex(64 * 1024);
        let mut conn = Coalesce::new(server);
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        client.write_all(preface).await.unwrap();
        conn.read_exact(&mut [0u8; 24]).await.unwrap();
        let total = 4 * 1024 * 1024;
        let reader = tokio::spawn(async move {
            let (mut got, mut b) = (0, vec![0u8; 4096]);
            while got < total {
                got += client.read(&mut b).await.unwrap();
                tokio::task::yield_now().await;
            }
            got
        });
        let chunk = vec![1u8; 16 * 1024];
        let mut largest = 0;
        for _ in 0..total / chunk.len() {
            conn.write_all(&chunk).await.unwrap();
            conn.flush().await.unwrap();
            largest = largest.max(conn.buf.len());
        }
        conn.flush().await.unwrap();
        assert!(
            largest <= HIGH_WATER + chunk.len(),
            "buffer reached {largest} bytes"
        );
        assert_eq!(reader.await.unwrap(), total);
    }

    /// One step of a connection's writer: a write of `n` bytes (plain or
    /// vectored in two slices) or a flush.
    #[derive(Debug, Clone)]
    enum Op {
        Write(usize, bool),
        Flush,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (1usize..40_000, any::<bool>()).prop_map(|(n, v)| Op::Write(n, v)),
            1 => Just(Op::Flush),
        ]
    }

    proptest::proptest! {
        /// Whatever the writes and flushes, the peer receives exactly the
        /// bytes written, in order: a flush after a flush (as h2 ends each
        /// round) sends everything, and so does a shutdown.
        #[test]
        fn the_byte_stream_is_kept(
            ops in proptest::collection::vec(op(), 1..40),
            just_shut in proptest::prelude::any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (mut conn, mut client) = opened(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
                let reader = tokio::spawn(async move {
                    let mut got = Vec::new();
                    client.read_to_end(&mut got).await.unwrap();
                    got
                });
                let mut sent = Vec::new();
                let mut next = 0u8;
                for op in ops {
                    match op {
                        Op::Write(n, vectored) => {
                            let data: Vec<u8> = (0..n).map(|_| { next = next.wrapping_add(1); next }).collect();
                            if vectored {
                                let (a, b) = data.split_at(n / 2);
                                let slices = [io::IoSlice::new(a), io::IoSlice::new(b)];
                                let mut done = 0;
                                while done < n {
                                    // A short vectored write is resumed by hand.
                                    done += if done == 0 {
                                        conn.write_vectored(&slices).await.unwrap()
                                    } else {
                                        conn.write(&data[done..]).await.unwrap()
                                    };
                                }
                            } else {
                                conn.write_all(&data).await.unwrap();
                            }
                            sent.extend_from_slice(&data);
                        }
                        Op::Flush => conn.flush().await.unwrap(),
                    }
                }
                if !just_shut {
                    conn.flush().await.unwrap();
                    conn.flush().await.unwrap();
                    assert!(conn.buf.is_empty(), "a flush after a flush sends everything");
                }
                conn.shutdown().await.unwrap();
                drop(conn);
                assert_eq!(reader.await.unwrap(), sent);
            });
        }
    }

    #[tokio::test]
    async fn a_full_buffer_is_sent_before_more_is_taken() {
        let (mut conn, mut client) = opened(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        let big = vec![7u8; HIGH_WATER];
        conn.write_all(&big).await.unwrap();
        conn.write_all(b"x").await.unwrap();
        assert_eq!(conn.buf, b"x", "the full buffer went out first");
        let mut got = vec![0; HIGH_WATER];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, big);
        conn.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"x");
    }
}
