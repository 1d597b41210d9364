//! The peer cache's server side (docs/contract.md §8): with agent.yaml `peers: {listen: ADDR}`
//! the agent serves the host's package cache dirs, read-only, over HTTP/1.1, so other hosts
//! (and plain pacman, through `CacheServer =`) can download packages from it.
//!
//! This module owns what is served and how much: the name filter ([`servable`]: a complete
//! package file or its `.sig`, one path component, never a database, a `.part` or a pacman
//! `download-*` temporary), the opening of the file (`O_NOFOLLOW`, a regular file only, in one
//! of the cache dirs the caller passes), the response (`GET` and `HEAD /<file name>`, one
//! `Range`, streamed, with `Content-Length`), and the bounds ([`Limits`]: connections, the time a
//! client has to send its request head, bytes per second per connection). Which dirs are the
//! cache dirs (pacman.conf's `CacheDir`) and when the server starts and stops is the agent's
//! business. hyper 1.x over the agent's tokio runtime; no pacfleet module below it.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Default [`Limits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;
/// Default [`Limits::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`Limits::bytes_per_second`]: 32 MiB/s per connection.
pub const DEFAULT_BYTES_PER_SECOND: u64 = 32 << 20;
/// Default [`Limits::write_timeout`].
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The extensions of a package file (makepkg's `PKGEXT` choices).
pub const PACKAGE_EXTENSIONS: &[&str] = &[
    ".pkg.tar.zst",
    ".pkg.tar.xz",
    ".pkg.tar.gz",
    ".pkg.tar.bz2",
    ".pkg.tar.lz4",
    ".pkg.tar.lrz",
    ".pkg.tar.lzo",
    ".pkg.tar.Z",
    ".pkg.tar",
];

/// How much the server gives out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more is closed at once, unanswered.
    pub max_connections: usize,
    /// How long a client has to send a request's head; then the connection is closed.
    pub header_timeout: Duration,
    /// The most bytes per second one connection's response bodies are sent at.
    pub bytes_per_second: u64,
    /// How long a write to a client may wait (a client that stops reading); then the
    /// connection is closed and its slot is free again.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            bytes_per_second: DEFAULT_BYTES_PER_SECOND,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }
}

/// A connection whose writes may wait at most `timeout` each: a client that stops reading
/// cannot hold one of the server's slots for ever.
struct Stalled<T> {
    inner: T,
    timeout: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Stalled<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        Stalled {
            inner,
            timeout,
            deadline: None,
        }
    }

    /// After a write that could not go on: `Pending` until the deadline, then an error.
    fn waited(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timeout = self.timeout;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing for the write timeout",
        ))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stalled<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Stalled<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Pending => self.waited(cx).map(Err),
            done => {
                self.deadline = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.waited(cx).map(Err),
            done => {
                self.deadline = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum PeerServeError {
    /// The listening socket could not be bound.
    #[error(
        "agent.yaml `peers.listen`: cannot listen on {addr}: {source}; choose a free address and port, or remove `peers:`"
    )]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// The thread or runtime of a [`Background`] server could not be started.
    #[error("cannot start the peer cache server: {0}")]
    Start(#[source] io::Error),
}

/// A peer cache server on a thread of its own, with its own tokio runtime, for a caller that
/// has none (`fleetctl demo`): it serves from [`spawn`] until it is dropped, which stops it
/// and waits for its thread.
pub struct Background {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// The address it listens on (the port, when `addr` asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// [`bind`] and run on a thread of its own; returns once the socket is bound (or could not be).
pub fn spawn(
    addr: SocketAddr,
    cache_dirs: Vec<PathBuf>,
    limits: Limits,
    identity: Identity,
) -> Result<Background, PeerServeError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(PeerServeError::Start)?;
    let server = rt.block_on(bind(addr, cache_dirs, limits, identity))?;
    let addr = server.local_addr().map_err(PeerServeError::Start)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("peer-serve".into())
        .spawn(move || {
            rt.block_on(async {
                tokio::select! {
                    () = server.run() => {}
                    _ = stopped => {}
                }
            });
        })
        .map_err(PeerServeError::Start)?;
    Ok(Background {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Whether `name` (a URL path's one component, decoded) may be served: a package file name
/// (see [`PACKAGE_EXTENSIONS`]) or one with `.sig` after it, of the characters package file
/// names have (ASCII letters, digits, `@._+-:`), not starting with `.` or `download-`
/// (pacman's temporary download dirs), without `..`. Databases (`*.db`, `*.files`), partial
/// downloads (`*.part`) and everything else are not.
pub fn servable(name: &str) -> bool {
    if name.is_empty()
        || name.len() > 255
        || name.starts_with('.')
        || name.starts_with("download-")
        || name.contains("..")
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._+-:".contains(&b))
    {
        return false;
    }
    let package = name.strip_suffix(".sig").unwrap_or(name);
    PACKAGE_EXTENSIONS.iter().any(|ext| {
        package
            .strip_suffix(ext)
            .is_some_and(|stem| !stem.is_empty())
    })
}

/// The file name a request path asks for: `/<name>`, percent-decoded; `None` for any other
/// shape (more components, bad escapes, not UTF-8).
fn requested_name(path: &str) -> Option<String> {
    let raw = path.strip_prefix('/')?;
    let mut bytes = Vec::with_capacity(raw.len());
    let mut it = raw.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next()?, it.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    let name = String::from_utf8(bytes).ok()?;
    servable(&name).then_some(name)
}

/// A bound server; [`PeerServer::run`] serves.
pub struct PeerServer {
    listener: TcpListener,
    cache_dirs: Arc<[PathBuf]>,
    limits: Limits,
    identity: Arc<Identity>,
}

/// Who this server is, on `peers::STATUS_PATH`: the host's name and the status file its
/// passes write (`download::STATUS_FILE` in the state dir; absent: nothing being fetched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// agent.yaml `hostname`.
    pub host: String,
    /// The pass's peer status file.
    pub status_file: PathBuf,
}

/// Binds `addr` to serve `cache_dirs` (searched in order, as pacman does).
pub async fn bind(
    addr: SocketAddr,
    cache_dirs: Vec<PathBuf>,
    limits: Limits,
    identity: Identity,
) -> Result<PeerServer, PeerServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| PeerServeError::Bind { addr, source })?;
    Ok(PeerServer {
        listener,
        cache_dirs: cache_dirs.into(),
        limits,
        identity: Arc::new(identity),
    })
}

impl PeerServer {
    /// The address it listens on (the port, when `listen` asked for port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the future is dropped (which closes every connection too).
    pub async fn run(self) {
        let permits = Arc::new(Semaphore::new(self.limits.max_connections));
        let mut connections = tokio::task::JoinSet::new();
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.header_timeout);
        let builder = Arc::new(builder);
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // E.g. out of file descriptors: wait a little rather than spin.
                    tracing::warn!("peer cache: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            while connections.try_join_next().is_some() {}
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(
                    "peer cache: closing the connection from {peer}: {} connections are being served already",
                    self.limits.max_connections
                );
                drop(stream);
                continue;
            };
            let dirs = self.cache_dirs.clone();
            let identity = self.identity.clone();
            let rate = self.limits.bytes_per_second;
            let write_timeout = self.limits.write_timeout;
            let builder = builder.clone();
            connections.spawn(async move {
                let _permit = permit;
                let service = hyper::service::service_fn(move |req| {
                    let (dirs, identity) = (dirs.clone(), identity.clone());
                    async move {
                        Ok::<_, Infallible>(respond(&dirs, &identity, req, rate, peer).await)
                    }
                });
                if let Err(e) = builder
                    .serve_connection(TokioIo::new(Stalled::new(stream, write_timeout)), service)
                    .await
                {
                    tracing::debug!("peer cache: connection from {peer}: {e}");
                }
            });
        }
    }
}

/// The response to one request.
async fn respond(
    dirs: &[PathBuf],
    identity: &Identity,
    req: Request<Incoming>,
    rate: u64,
    peer: SocketAddr,
) -> Response<Body> {
    let head = match *req.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD only\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
    };
    let path = req.uri().path();
    if path == crate::peers::STATUS_PATH {
        return status(identity, head).await;
    }
    let Some(name) = requested_name(path) else {
        tracing::debug!("peer cache: {peer}: {path}: refused (not a package file name)");
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let Some((file, len)) = open(dirs, &name).await else {
        tracing::debug!("peer cache: {peer}: {name}: not in the cache");
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, len));
    let (status, start, end) = match range {
        None => (StatusCode::OK, 0, len),
        Some(Ok((start, end))) => (StatusCode::PARTIAL_CONTENT, start, end),
        Some(Err(())) => {
            let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    tracing::debug!(
        "peer cache: {peer}: {} {name}: {status}, bytes {start}..{end} of {len}",
        req.method()
    );
    let body = if head {
        Body::empty()
    } else {
        let mut file = file;
        if start > 0
            && let Err(e) = file.seek(io::SeekFrom::Start(start)).await
        {
            tracing::warn!("peer cache: {name}: cannot seek: {e}");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot read the file\n");
        }
        Body::file(file, end - start, rate)
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{len}", end - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    r
}

/// This host's name and what its pass is fetching (`peers::PeerStatus`, JSON): the status file
/// as the pass wrote it (at most 1 MiB, its lists bounded, nothing when it expired), under this
/// server's own host name.
async fn status(identity: &Identity, head: bool) -> Response<Body> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let read = match tokio::fs::File::open(&identity.status_file).await {
        Ok(f) => f.take(1 << 20).read_to_end(&mut bytes).await.map(|_| ()),
        Err(e) => Err(e),
    };
    let mut status = match read {
        Ok(()) => serde_json::from_slice::<crate::peers::PeerStatus>(&bytes)
            .unwrap_or_default()
            .bounded(chrono::Utc::now()),
        Err(_) => crate::peers::PeerStatus::default(),
    };
    status.host.clone_from(&identity.host);
    status.expires_at = None;
    let json = serde_json::to_vec(&status).unwrap_or_else(|_| b"{}".to_vec());
    let len = json.len();
    let mut r = Response::new(if head {
        Body::empty()
    } else {
        Body {
            kind: Kind::Text(Some(Bytes::from(json))),
        }
    });
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `name` in the first of `dirs` that has it as a regular file, opened without following
/// symlinks (a symlink is not served, even one pointing inside the cache dir); its length.
async fn open(dirs: &[PathBuf], name: &str) -> Option<(tokio::fs::File, u64)> {
    for dir in dirs {
        let path = dir.join(name);
        let opened = tokio::fs::OpenOptions::new()
            .read(true)
            // O_NONBLOCK: opening a FIFO must not hang; it changes nothing for a regular file.
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
            .await;
        let file = match opened {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::debug!("peer cache: not serving {}: {e}", path.display());
                continue;
            }
        };
        match file.metadata().await {
            Ok(m) if m.is_file() => return Some((file, m.len())),
            Ok(_) => tracing::debug!(
                "peer cache: not serving {}: not a regular file",
                path.display()
            ),
            Err(e) => tracing::debug!("peer cache: not serving {}: {e}", path.display()),
        }
    }
    None
}

/// One `Range: bytes=…` of a file of `len` bytes as `[start, end)`: `None` to send the whole
/// file (no such header, several ranges, or a header it does not understand), `Err` for a
/// range that starts past the end.
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        if suffix == 0 {
            return Some(Err(()));
        }
        return Some(Ok((len.saturating_sub(suffix), len)));
    }
    let start: u64 = first.parse().ok()?;
    let end = if last.is_empty() {
        len
    } else {
        let last: u64 = last.parse().ok()?;
        if last < start {
            return None;
        }
        last.saturating_add(1).min(len)
    };
    if start >= len {
        return Some(Err(()));
    }
    Some(Ok((start, end)))
}

fn text(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut r = Response::new(Body::text(message));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A response body: nothing, a short text, or a file streamed in chunks at a bounded rate.
pub struct Body {
    kind: Kind,
}

enum Kind {
    Text(Option<Bytes>),
    File(Box<FileBody>),
}

struct FileBody {
    file: tokio::fs::File,
    remaining: u64,
    sent: u64,
    started: Instant,
    bytes_per_second: u64,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    buf: Vec<u8>,
}

/// The most read from the file at once.
const CHUNK: usize = 64 << 10;

impl Body {
    fn empty() -> Body {
        Body {
            kind: Kind::Text(None),
        }
    }

    fn text(s: &'static str) -> Body {
        Body {
            kind: Kind::Text(Some(Bytes::from_static(s.as_bytes()))),
        }
    }

    fn file(file: tokio::fs::File, len: u64, bytes_per_second: u64) -> Body {
        Body {
            kind: Kind::File(Box::new(FileBody {
                file,
                remaining: len,
                sent: 0,
                started: Instant::now(),
                bytes_per_second: bytes_per_second.max(1),
                pause: None,
                buf: vec![0; CHUNK],
            })),
        }
    }
}

impl FileBody {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<io::Result<Frame<Bytes>>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        // The rate bound: the next chunk waits until what was sent is within the rate.
        let due =
            self.started + Duration::from_secs_f64(self.sent as f64 / self.bytes_per_second as f64);
        if self.pause.is_none() && due > Instant::now() {
            self.pause = Some(Box::pin(tokio::time::sleep_until(due)));
        }
        if let Some(pause) = &mut self.pause {
            ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        let want = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        let mut buf = ReadBuf::new(&mut self.buf[..want]);
        ready!(Pin::new(&mut self.file).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        if n == 0 {
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file became shorter while it was being served",
            ))));
        }
        let chunk = Bytes::copy_from_slice(buf.filled());
        self.remaining -= n as u64;
        self.sent += n as u64;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Text(t) => Poll::Ready(t.take().map(|b| Ok(Frame::data(b)))),
            Kind::File(f) => f.poll_chunk(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Text(t) => t.is_none(),
            Kind::File(f) => f.remaining == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Text(t) => SizeHint::with_exact(t.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::File(f) => SizeHint::with_exact(f.remaining),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_package_files_and_their_signatures_only() {
        for ok in [
            "app-1.0-1-x86_64.pkg.tar.zst",
            "app-1.0-1-x86_64.pkg.tar.zst.sig",
            "lib32-glibc-2:2.40-1-x86_64.pkg.tar.xz",
            "gtk+-2.24-1-any.pkg.tar.gz",
            "a@b_c-1-1-any.pkg.tar",
            "x-1-1-any.pkg.tar.bz2",
            "x-1-1-any.pkg.tar.lz4",
            "x-1-1-any.pkg.tar.lrz",
            "x-1-1-any.pkg.tar.lzo",
            "x-1-1-any.pkg.tar.Z",
        ] {
            assert!(servable(ok), "{ok}");
        }
        for refused in [
            "",
            "core.db",
            "core.db.sig",
            "core.files",
            "core.db.tar.gz",
            "app-1.0-1-x86_64.pkg.tar.zst.part",
            "app-1.0-1-x86_64.pkg.tar.zst.sig.part",
            "download-AbC123",
            "download-x-1-1-any.pkg.tar.zst",
            ".pkg.tar.zst",
            ".hidden-1-1-any.pkg.tar.zst",
            "..",
            "../etc/passwd",
            "a/../x-1-1-any.pkg.tar.zst",
            "sub/x-1-1-any.pkg.tar.zst",
            "x..y-1-1-any.pkg.tar.zst",
            "x-1-1-any.pkg.tar.zst\0",
            "x y-1-1-any.pkg.tar.zst",
            "x-1-1-any.pkg.tar.zstd",
            "x-1-1-any.pkg.tar.zst.sig.sig",
            "passwd",
            "x%2e-1.pkg.tar.zst",
        ] {
            assert!(!servable(refused), "{refused:?}");
        }
        assert!(!servable(&format!("{}.pkg.tar", "a".repeat(250))));
    }

    #[test]
    fn request_paths_are_one_decoded_component() {
        assert_eq!(
            requested_name("/app-1%3A1.0-1-any.pkg.tar.zst").as_deref(),
            Some("app-1:1.0-1-any.pkg.tar.zst")
        );
        assert_eq!(
            requested_name("/app-1.0-1-any.pkg.tar.zst.sig").as_deref(),
            Some("app-1.0-1-any.pkg.tar.zst.sig")
        );
        for refused in [
            "app-1.0-1-any.pkg.tar.zst",
            "/",
            "/core/os/x86_64/app-1.0-1-any.pkg.tar.zst",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fapp-1.0-1-any.pkg.tar.zst",
            "/..%2fapp-1.0-1-any.pkg.tar.zst",
            "/app%00-1.0-1-any.pkg.tar.zst",
            "/app%zz-1.0-1-any.pkg.tar.zst",
            "/app%-1.0-1-any.pkg.tar.zst",
            "/%ff-1.0-1-any.pkg.tar.zst",
        ] {
            assert_eq!(requested_name(refused), None, "{refused}");
        }
    }

    /// Reads `body` to its end: the bytes and how long it took.
    async fn drain(mut body: Body) -> (Vec<u8>, Duration) {
        use http_body::Body as _;
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
        {
            out.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }
        (out, started.elapsed())
    }

    #[tokio::test]
    async fn a_served_file_streams_at_the_rate_bound_and_no_faster() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..256 * 1024u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(dir.path().join("x-1-1-any.pkg.tar.zst"), &content).unwrap();
        let (file, len) = open(&[dir.path().to_path_buf()], "x-1-1-any.pkg.tar.zst")
            .await
            .unwrap();
        assert_eq!(len, content.len() as u64);
        // 4 chunks at 512 KiB/s: the last may go at 192 KiB / 512 KiB/s = 375 ms.
        let (bytes, took) = drain(Body::file(file, len, 512 << 10)).await;
        assert!(bytes == content);
        assert!(took >= Duration::from_millis(350), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        // Unbounded in practice: the default rate sends it at once.
        let (file, len) = open(&[dir.path().to_path_buf()], "x-1-1-any.pkg.tar.zst")
            .await
            .unwrap();
        let (bytes, took) = drain(Body::file(file, len, DEFAULT_BYTES_PER_SECOND)).await;
        assert!(bytes == content);
        assert!(took < Duration::from_millis(350), "{took:?}");
    }

    #[test]
    fn a_background_server_serves_until_dropped() {
        use std::io::{Read as _, Write as _};
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a-1-1-any.pkg.tar.zst"), b"package").unwrap();
        let server = spawn(
            "127.0.0.1:0".parse().unwrap(),
            vec![dir.path().to_path_buf()],
            Limits::default(),
            Identity {
                host: "ws-01".into(),
                status_file: dir.path().join("none.json"),
            },
        )
        .unwrap();
        let addr = server.addr();
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(b"GET /a-1-1-any.pkg.tar.zst HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert!(
            got.starts_with("HTTP/1.1 200") && got.ends_with("package"),
            "{got}"
        );
        drop(server);
        assert!(std::net::TcpStream::connect(addr).is_err());
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_loses_its_slot_after_the_write_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        // Larger than what the socket buffers hold, so the server's writes wait.
        let big = vec![7u8; 32 << 20];
        std::fs::write(dir.path().join("big-1-1-any.pkg.tar.zst"), &big).unwrap();
        let limits = Limits {
            max_connections: 1,
            write_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let server = bind(
            "127.0.0.1:0".parse().unwrap(),
            vec![dir.path().to_path_buf()],
            limits,
            Identity {
                host: "peer-01".into(),
                status_file: dir.path().join("no-status.json"),
            },
        )
        .await
        .unwrap();
        let addr = server.local_addr().unwrap();
        let task = tokio::spawn(server.run());
        let get = b"GET /big-1-1-any.pkg.tar.zst HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
        stalled.write_all(get).await.unwrap();
        // It reads nothing; after the timeout its slot serves the next client.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut next = tokio::net::TcpStream::connect(addr).await.unwrap();
        next.write_all(
            b"HEAD /big-1-1-any.pkg.tar.zst HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), next.read_to_end(&mut answer))
            .await
            .expect("the second client is served")
            .unwrap();
        assert!(
            answer.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        task.abort();
    }

    #[tokio::test]
    async fn only_regular_files_are_opened_and_no_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("real-1-1-any.pkg.tar.zst"), b"x").unwrap();
        std::os::unix::fs::symlink(
            d.join("real-1-1-any.pkg.tar.zst"),
            d.join("link-1-1-any.pkg.tar.zst"),
        )
        .unwrap();
        std::fs::create_dir(d.join("dir-1-1-any.pkg.tar.zst")).unwrap();
        let fifo =
            std::ffi::CString::new(d.join("fifo-1-1-any.pkg.tar.zst").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let dirs = [d.to_path_buf()];
        assert!(open(&dirs, "real-1-1-any.pkg.tar.zst").await.is_some());
        for refused in [
            "link-1-1-any.pkg.tar.zst",
            "dir-1-1-any.pkg.tar.zst",
            "fifo-1-1-any.pkg.tar.zst",
            "missing-1-1-any.pkg.tar.zst",
        ] {
            assert!(open(&dirs, refused).await.is_none(), "{refused}");
        }
        // The first dir that has it as a regular file.
        let second = tempfile::tempdir().unwrap();
        std::fs::write(second.path().join("link-1-1-any.pkg.tar.zst"), b"yz").unwrap();
        let (_, len) = open(
            &[d.to_path_buf(), second.path().to_path_buf()],
            "link-1-1-any.pkg.tar.zst",
        )
        .await
        .unwrap();
        assert_eq!(len, 2);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-", 10), Some(Ok((0, 10))));
        assert_eq!(parse_range("bytes=4-", 10), Some(Ok((4, 10))));
        assert_eq!(parse_range("bytes=2-5", 10), Some(Ok((2, 6))));
        assert_eq!(parse_range("bytes=2-50", 10), Some(Ok((2, 10))));
        assert_eq!(parse_range("bytes=-3", 10), Some(Ok((7, 10))));
        assert_eq!(parse_range("bytes=10-", 10), Some(Err(())));
        assert_eq!(parse_range("bytes=-0", 10), Some(Err(())));
        assert_eq!(parse_range("bytes=5-2", 10), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), None);
        assert_eq!(parse_range("items=0-1", 10), None);
        assert_eq!(parse_range("bytes=x-", 10), None);
    }
}
