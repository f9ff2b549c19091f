//! Keep-alive HTTP/1.1 connections from the ingress to the local app: one [`UpstreamPool`]
//! per ingress thread, so a request, its upstream connection and the task driving that
//! connection stay on one thread.
//!
//! Why not hyper-util's pooled client: per request it clones and rewrites the URI, locks a
//! pool shared by every host, and spawns a task that waits for the connection to become
//! idle again. The ingress talks to one address over plain HTTP/1.1; this pool hands out a
//! connection, and the response body gives it back once the app's answer has been read to
//! its end (hyper's own per-connection API, [`hyper::client::conn::http1`]). Measured in
//! `docs/BENCHMARKS.md` (sidecar section).
//!
//! A connection is reused only after its response was read to the end; one whose answer
//! was abandoned is dropped, which closes it. A request that could not be written because
//! the pooled connection had closed (the app timed it out) is retried once on a new
//! connection; one already written is sent again only when it is idempotent, has no body,
//! and the app closed a connection idle for over a second without answering.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

// tokio's clock (std's outside tests), so the tests can advance idle time.
use tokio::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use crate::body::UpstreamBody;
use crate::refusal::Refusal;

/// Idle connections kept per thread at most; more are closed when their answer ends. A burst
/// of N concurrent requests opens N connections; at 512 a flood left a thousand idle ones
/// (their buffers, about 11 MB) for a minute after it ended. 64 per thread still covers the
/// concurrency the benchmarks run (docs/BENCHMARKS.md).
const MAX_IDLE: usize = 64;

/// Idle time after which a reused connection may meet the app closing it, so an idempotent
/// request without a body sent on it is kept for one more try.
const RACE_AFTER_IDLE: Duration = Duration::from_secs(1);

/// A copy of `request` to send again, if it is idempotent and has no body.
fn replayable(request: &Request<UpstreamBody>) -> Option<Request<UpstreamBody>> {
    use http::Method;
    let idempotent = [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ];
    if !idempotent.contains(request.method()) || !request.body().is_end_stream() {
        return None;
    }
    let body = http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed();
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

/// Idle keep-alive connections to one app address (see the module docs).
pub struct UpstreamPool {
    addr: SocketAddr,
    connect_timeout: Duration,
    idle_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

impl UpstreamPool {
    /// A pool for the app at `addr`; connections idle longer than `idle_timeout` are closed
    /// instead of reused.
    pub fn new(addr: SocketAddr, connect_timeout: Duration, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            addr,
            connect_timeout,
            idle_timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Idle connections held now.
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// Sends `request` (origin-form URI, `Host` set) on an idle connection or a new one.
    /// The response body returns the connection to the pool when read to its end.
    pub async fn send(
        self: &Arc<Self>,
        request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, Refusal> {
        let mut request = request;
        if let Some((mut sender, idle_for)) = self.checkout() {
            // An app may close a keep-alive connection it thinks idle just as a request is
            // written on it (gunicorn's default keep-alive is 2 s). A request that is
            // idempotent and has no body can then be sent again (RFC 9110 9.2.2): keep a
            // copy when the connection has been idle long enough for that race.
            let replay = (idle_for >= RACE_AFTER_IDLE)
                .then(|| replayable(&request))
                .flatten();
            // Usually ready at once; if the app closed the connection meanwhile, this fails
            // and nothing has been sent yet.
            if sender.ready().await.is_ok() {
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok(self.wrap(response, sender)),
                    Err(mut e) => match (e.take_message(), replay) {
                        // Not written: the connection closed under us. Retry once below.
                        (Some(unsent), _) => request = unsent,
                        // Written, but the app closed without a byte of answer.
                        (None, Some(copy)) if e.error().is_incomplete_message() => {
                            request = copy;
                        }
                        (None, _) => return Err(refused(&e.into_error())),
                    },
                }
            }
        }
        let mut sender = self.connect().await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| refused(&e))?;
        Ok(self.wrap(response, sender))
    }

    fn wrap(
        self: &Arc<Self>,
        response: Response<Incoming>,
        sender: SendRequest<UpstreamBody>,
    ) -> Response<PooledBody> {
        response.map(|inner| PooledBody {
            inner,
            sender: Some(sender),
            pool: Arc::clone(self),
        })
    }

    /// The most recently used idle connection that is still open and not idle too long,
    /// and how long it has been idle.
    fn checkout(&self) -> Option<(SendRequest<UpstreamBody>, Duration)> {
        let now = Instant::now();
        let mut idle = self.lock();
        while let Some(entry) = idle.pop() {
            let idle_for = now.duration_since(entry.since);
            if !entry.sender.is_closed() && idle_for < self.idle_timeout {
                return Some((entry.sender, idle_for));
            }
        }
        None
    }

    /// Takes back a connection whose answer was read to the end. One still sending its
    /// request body (the app answered before reading it all) is not ready for another
    /// request: a task waits for it, so no request is handed a connection it would have
    /// to wait on.
    fn checkin(self: &Arc<Self>, mut sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        if !sender.is_ready() {
            // Outside a runtime (a body dropped at shutdown) the connection just closes.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let pool = Arc::clone(self);
                runtime.spawn(async move {
                    if sender.ready().await.is_ok() {
                        pool.keep(sender);
                    }
                });
            }
            return;
        }
        self.keep(sender);
    }

    fn keep(&self, sender: SendRequest<UpstreamBody>) {
        let now = Instant::now();
        let mut idle = self.lock();
        self.drop_stale(&mut idle, now);
        if idle.len() < MAX_IDLE {
            idle.push(Idle { sender, since: now });
        }
    }

    /// Closes the connections idle for `idle_timeout` or longer. The oldest entries sit at
    /// the bottom (LIFO use).
    fn drop_stale(&self, idle: &mut Vec<Idle>, now: Instant) {
        let stale = idle
            .iter()
            .take_while(|e| now.duration_since(e.since) >= self.idle_timeout)
            .count();
        idle.drain(..stale);
    }

    /// Closes idle connections once they are stale, every half `idle_timeout`, until `stop`:
    /// without traffic nothing else would (a request or an answer is what sweeps).
    pub async fn close_stale_until(&self, stop: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.idle_timeout / 2);
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {
                    let mut idle = self.lock();
                    self.drop_stale(&mut idle, Instant::now());
                }
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, Refusal> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(self.addr),
        )
        .await
        .map_err(|_| {
            Refusal::AppUnreachable(format!("connecting to the app at {} timed out", self.addr))
        })?
        .map_err(|e| {
            Refusal::AppUnreachable(format!("connecting to the app at {}: {e}", self.addr))
        })?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| refused(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection to the app ended");
            }
        });
        Ok(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The pool holds plain data: a panic elsewhere cannot leave it half-updated.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The app's response body; gives its connection back to the pool once read to the end.
pub struct PooledBody {
    inner: Incoming,
    sender: Option<SendRequest<UpstreamBody>>,
    pool: Arc<UpstreamPool>,
}

impl PooledBody {
    fn release_if_done(&mut self) {
        if self.inner.is_end_stream()
            && let Some(sender) = self.sender.take()
        {
            self.pool.checkin(sender);
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(sender) = self.sender.take() {
                    self.pool.checkin(sender);
                }
            }
            Poll::Ready(Some(Ok(_))) => self.release_if_done(),
            // An error leaves the connection unusable: it is dropped with the body.
            Poll::Ready(Some(Err(_))) => self.sender = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Dropped after the last byte (hyper stops polling a body whose length it has
        // written) or with nothing to read (HEAD, 204, 304): the connection is reusable.
        // Dropped earlier, the connection is dropped too and hyper closes it.
        self.release_if_done();
    }
}

/// The refusal for a failed exchange with the app: a request body over the limit (it
/// surfaces here while streaming to the app) is the client's; anything else is the app's.
fn refused(e: &(dyn std::error::Error + 'static)) -> Refusal {
    if caused_by_body_limit(e) {
        Refusal::BodyTooLarge { close: false }
    } else {
        Refusal::AppUnreachable(e.to_string())
    }
}

fn caused_by_body_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt as _, Empty, Full};
    use hyper::service::service_fn;
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpListener;

    use super::*;

    /// A listener on 127.0.0.1 serving each connection with `serve` on its own task and
    /// counting the connections it accepted.
    async fn listen<F, Fut>(serve: F) -> (SocketAddr, Arc<AtomicUsize>)
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        (addr, accepted)
    }

    /// An app answering every request with `answer(path)`; when `gate` is set, each request
    /// waits there first.
    async fn app(
        answer: fn(&str) -> Response<Full<Bytes>>,
        gate: Option<Arc<tokio::sync::Barrier>>,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        listen(move |stream| {
            let gate = gate.clone();
            async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let gate = gate.clone();
                    async move {
                        if let Some(gate) = gate {
                            gate.wait().await;
                        }
                        Ok::<_, std::convert::Infallible>(answer(req.uri().path()))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            }
        })
        .await
    }

    /// A raw app on 127.0.0.1 that answers `ok` as soon as it has a request head, counting
    /// connections. Then it either closes the connection without saying so in the answer
    /// (`keep_reading` false), or keeps it open, reading and discarding what follows.
    async fn raw_app(keep_reading: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        raw_app_answering(keep_reading, usize::MAX).await
    }

    /// [`raw_app`] that answers only the first `answers` requests of each connection and
    /// closes the connection on the next one, after reading its head, without a byte of
    /// answer: an app closing a keep-alive connection it thought idle.
    async fn raw_app_answering(
        keep_reading: bool,
        answers: usize,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        listen(move |mut stream| async move {
            use tokio::io::AsyncReadExt as _;
            let mut buf = [0u8; 1024];
            for answered in 0.. {
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if answered == answers {
                    return; // drops the connection unanswered
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                if answers == usize::MAX {
                    break;
                }
            }
            if keep_reading {
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            } else {
                let _ = stream.shutdown().await;
            }
        })
        .await
    }

    fn ok(_: &str) -> Response<Full<Bytes>> {
        Response::new(Full::new(Bytes::from_static(b"ok")))
    }

    fn request(path: &str) -> Request<UpstreamBody> {
        Request::builder()
            .uri(path)
            .header(http::header::HOST, "app")
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap()
    }

    fn pool(addr: SocketAddr, idle_timeout: Duration) -> Arc<UpstreamPool> {
        UpstreamPool::new(addr, Duration::from_secs(5), idle_timeout)
    }

    /// The pool's idle count once the tasks returning connections have run (they are on
    /// this thread: yielding lets them).
    async fn idle_after_returns(pool: &UpstreamPool, expected: usize) -> usize {
        for _ in 0..1000 {
            if pool.idle_count() == expected {
                break;
            }
            tokio::task::yield_now().await;
        }
        pool.idle_count()
    }

    async fn read_all(pool: &Arc<UpstreamPool>, path: &str) -> Bytes {
        let response = pool.send(request(path)).await.unwrap();
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn idle_connections_are_closed_once_stale_even_without_traffic() {
        let (addr, _) = app(ok, None).await;
        let pool = pool(addr, Duration::from_secs(60));
        assert_eq!(read_all(&pool, "/").await, "ok");
        assert_eq!(idle_after_returns(&pool, 1).await, 1);
        tokio::time::pause();
        let stop = tokio_util::sync::CancellationToken::new();
        let sweeper = {
            let (pool, stop) = (Arc::clone(&pool), stop.clone());
            tokio::spawn(async move { pool.close_stale_until(stop.cancelled_owned()).await })
        };
        tokio::time::sleep(Duration::from_secs(45)).await;
        assert_eq!(pool.idle_count(), 1, "not stale yet");
        tokio::time::sleep(Duration::from_secs(46)).await;
        assert_eq!(pool.idle_count(), 0, "closed with no request to sweep it");
        stop.cancel();
        sweeper.await.unwrap();
    }

    #[tokio::test]
    async fn answers_read_to_the_end_give_their_connection_back() {
        let (addr, accepted) = app(ok, None).await;
        let pool = pool(addr, Duration::from_secs(60));
        for _ in 0..5 {
            assert_eq!(read_all(&pool, "/").await, "ok");
            assert_eq!(idle_after_returns(&pool, 1).await, 1);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for five requests"
        );
    }

    #[tokio::test]
    async fn an_answer_with_no_body_gives_its_connection_back_when_dropped() {
        fn no_content(_: &str) -> Response<Full<Bytes>> {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = http::StatusCode::NO_CONTENT;
            r
        }
        let (addr, accepted) = app(no_content, None).await;
        let pool = pool(addr, Duration::from_secs(60));
        for _ in 0..3 {
            let response = pool.send(request("/")).await.unwrap();
            assert_eq!(response.status(), http::StatusCode::NO_CONTENT);
            drop(response);
            assert_eq!(idle_after_returns(&pool, 1).await, 1);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_abandoned_answer_is_never_reused() {
        fn big(_: &str) -> Response<Full<Bytes>> {
            Response::new(Full::new(Bytes::from(vec![b'x'; 1 << 20])))
        }
        let (addr, accepted) = app(big, None).await;
        let pool = pool(addr, Duration::from_secs(60));
        let response = pool.send(request("/")).await.unwrap();
        let mut body = response.into_body();
        // Read one frame of the megabyte, then walk away.
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(
            pool.idle_count(),
            0,
            "a half-read connection went back to the pool"
        );
        assert_eq!(read_all(&pool, "/").await.len(), 1 << 20);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(idle_after_returns(&pool, 1).await, 1);
    }

    #[tokio::test]
    async fn an_app_that_closes_after_each_answer_fails_no_request() {
        // The pooled connection is dead when the next request comes.
        let (addr, accepted) = raw_app(false).await;
        let pool = pool(addr, Duration::from_secs(60));
        for i in 1..=4 {
            assert_eq!(read_all(&pool, "/").await, "ok", "request {i}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn concurrent_requests_get_their_own_connections_and_all_return() {
        const N: usize = 8;
        // Every request waits until all N are at the app: only N connections allow that.
        let (addr, accepted) = app(ok, Some(Arc::new(tokio::sync::Barrier::new(N)))).await;
        let pool = pool(addr, Duration::from_secs(60));
        let tasks: Vec<_> = (0..N)
            .map(|_| {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move { read_all(&pool, "/").await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), N);
        assert_eq!(idle_after_returns(&pool, N).await, N);
    }

    #[tokio::test]
    async fn a_connection_still_sending_its_body_is_not_handed_to_the_next_request() {
        // The app answers without reading the request body, whose sender never finishes:
        // that connection must not serve the next request, which would wait behind it.
        let (addr, accepted) = app(ok, None).await;
        let pool = pool(addr, Duration::from_secs(60));
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        tx.send(Bytes::from_static(b"part")).await.unwrap();
        let endless = Unfinished(rx).boxed();
        let first = Request::builder()
            .method("POST")
            .uri("/")
            .header(http::header::HOST, "app")
            .body(endless)
            .unwrap();
        let answer = pool.send(first).await.unwrap();
        assert_eq!(answer.into_body().collect().await.unwrap().to_bytes(), "ok");
        let second = tokio::time::timeout(Duration::from_secs(20), read_all(&pool, "/"))
            .await
            .expect("the second request waited behind the first one's body");
        assert_eq!(second, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        drop(tx);
    }

    #[tokio::test]
    async fn a_connection_still_sending_its_body_comes_back_once_the_body_is_done() {
        // The app answers at once and reads the body afterwards: the client's connection is
        // still busy sending when the answer ends, and must come back to the pool only when
        // its request body is finished.
        let (addr, accepted) = raw_app(true).await;
        let pool = pool(addr, Duration::from_secs(60));
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        tx.send(Bytes::from_static(b"part")).await.unwrap();
        let first = Request::builder()
            .method("POST")
            .uri("/")
            .header(http::header::HOST, "app")
            .body(Unfinished(rx).boxed())
            .unwrap();
        let answer = pool.send(first).await.unwrap();
        assert_eq!(answer.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(
            pool.idle_count(),
            0,
            "a connection still sending was pooled"
        );
        // Meanwhile another request gets a connection of its own.
        assert_eq!(read_all(&pool, "/").await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(idle_after_returns(&pool, 1).await, 1);
        // The first body ends: its connection is ready again and joins the pool.
        drop(tx);
        assert_eq!(idle_after_returns(&pool, 2).await, 2);
    }

    /// A pool holding one connection, idle past the race threshold, that the app will close
    /// unanswered on the next request it reads.
    async fn a_connection_the_app_will_drop() -> (Arc<UpstreamPool>, Arc<AtomicUsize>) {
        let (addr, accepted) = raw_app_answering(true, 1).await;
        let pool = pool(addr, Duration::from_secs(60));
        assert_eq!(read_all(&pool, "/").await, "ok");
        tokio::time::pause();
        tokio::time::advance(RACE_AFTER_IDLE * 2).await;
        tokio::time::resume();
        (pool, accepted)
    }

    #[tokio::test]
    async fn a_get_the_app_drops_on_a_long_idle_connection_is_sent_again_once() {
        let (pool, accepted) = a_connection_the_app_will_drop().await;
        assert_eq!(read_all(&pool, "/").await, "ok");
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "sent again on a new connection"
        );
    }

    #[tokio::test]
    async fn a_post_with_a_body_the_app_drops_is_never_sent_twice() {
        let (pool, accepted) = a_connection_the_app_will_drop().await;
        let post = Request::builder()
            .method("POST")
            .uri("/")
            .header(http::header::HOST, "app")
            .body(
                http_body_util::Full::new(Bytes::from_static(b"update"))
                    .map_err(|never| match never {})
                    .boxed(),
            )
            .unwrap();
        let Err(e) = pool.send(post).await else {
            panic!("the app dropped the request, yet an answer came");
        };
        assert!(matches!(e, Refusal::AppUnreachable(_)), "{e:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "a body was sent twice");
    }

    /// A request body that sends what the channel gives and ends when it closes.
    struct Unfinished(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Unfinished {
        type Data = Bytes;
        type Error = crate::body::BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        }
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_not_reused() {
        let (addr, accepted) = app(ok, None).await;
        let pool = pool(addr, Duration::ZERO);
        for _ in 0..3 {
            assert_eq!(read_all(&pool, "/").await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_app_that_is_not_listening_is_an_upstream_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pool = pool(addr, Duration::from_secs(60));
        let Err(e) = pool.send(request("/")).await else {
            panic!("an app that is not listening answered");
        };
        let Refusal::AppUnreachable(why) = &e else {
            panic!("{e:?}");
        };
        assert!(why.contains("connecting to the app"), "{why}");
        assert_eq!(e.public_reason(), "the app could not be reached");
    }
}
