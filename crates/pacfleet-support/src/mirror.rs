//! A counting HTTP mirror for the tests and the benchmarks: serves the files of one directory
//! (a sync repository: `<repo>.db`, `.files`, `.sig`s and package files) read-only on
//! `127.0.0.1:<free port>`, and counts the bytes and requests it served per file name, so a
//! test can say how much a site took from upstream. Optionally it models a WAN link: a rate
//! shared by all connections and a latency before each response.
//!
//! Plain `std::net` with a thread per connection, bounded: at most [`MAX_CONNECTIONS`] at
//! once (the next ones are closed unanswered), each idle one closed after 30 s. HTTP/1.1 `GET`
//! and `HEAD` of `/<file name>` only (no subdirectories, no `..`), keep-alive, `Range: bytes=N-`
//! (libalpm resumes `.part` files with it). `GET /_counts` answers the counts as text, one
//! `<name>\t<bytes>\t<requests>` line per file (not counted itself).

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 128;

/// How the mirror models its link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Link {
    /// Bytes per second, shared by all connections (`None`: as fast as loopback goes).
    pub rate: Option<u64>,
    /// Waited before each response's head.
    pub latency: Duration,
}

/// Per file name: bytes of bodies sent, requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Body bytes written to clients.
    pub bytes: u64,
    /// Requests for it (`GET` and `HEAD`, answered or not).
    pub requests: u64,
}

#[derive(Debug, Default)]
struct Shared {
    counts: Mutex<BTreeMap<String, Count>>,
    /// When the shared link is free again (rate pacing).
    link_free: Mutex<Option<Instant>>,
    stop: AtomicBool,
    open: AtomicUsize,
}

/// A running mirror; stops when dropped.
#[derive(Debug)]
pub struct Mirror {
    /// `http://127.0.0.1:<port>`, no trailing `/`: pacman.conf's `Server =`.
    pub url: String,
    /// The directory served.
    pub dir: PathBuf,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Mirror {
    /// Serves `dir` on a free port of 127.0.0.1, as fast as loopback goes.
    pub fn start(dir: &Path) -> io::Result<Mirror> {
        Mirror::start_with(dir, Link::default(), 0)
    }

    /// Serves `dir` on `port` of 127.0.0.1 (0: a free one) over `link`.
    pub fn start_with(dir: &Path, link: Link, port: u16) -> io::Result<Mirror> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared::default());
        let dir = dir.to_path_buf();
        let accept = {
            let shared = Arc::clone(&shared);
            let dir = dir.clone();
            std::thread::spawn(move || accept_loop(listener, dir, link, shared))
        };
        Ok(Mirror {
            url,
            dir,
            shared,
            accept: Some(accept),
        })
    }

    /// The counts so far, per file name.
    pub fn counts(&self) -> BTreeMap<String, Count> {
        lock(&self.shared.counts).clone()
    }

    /// All body bytes served so far.
    pub fn bytes_served(&self) -> u64 {
        self.counts().values().map(|c| c.bytes).sum()
    }

    /// Body bytes of package files (`*.pkg.tar.*`, not their `.sig`s) served so far.
    pub fn package_bytes(&self) -> u64 {
        self.counts()
            .iter()
            .filter(|(n, _)| is_package(n))
            .map(|(_, c)| c.bytes)
            .sum()
    }

    /// Body bytes of `name` served so far.
    pub fn bytes_for(&self, name: &str) -> u64 {
        self.counts().get(name).map_or(0, |c| c.bytes)
    }

    /// Requests for `name` so far.
    pub fn requests_for(&self, name: &str) -> u64 {
        self.counts().get(name).map_or(0, |c| c.requests)
    }

    /// Forgets the counts.
    pub fn reset(&self) {
        lock(&self.shared.counts).clear();
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Whether `name` is a package file (not a signature, not a database).
pub fn is_package(name: &str) -> bool {
    name.contains(".pkg.tar") && !name.ends_with(".sig")
}

/// The counts as `/_counts` gives them: `<name>\t<bytes>\t<requests>` lines.
pub fn counts_text(counts: &BTreeMap<String, Count>) -> String {
    counts
        .iter()
        .map(|(n, c)| format!("{n}\t{}\t{}\n", c.bytes, c.requests))
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn accept_loop(listener: TcpListener, dir: PathBuf, link: Link, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if shared.open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                    drop(stream);
                    continue;
                }
                shared.open.fetch_add(1, Ordering::SeqCst);
                let shared = Arc::clone(&shared);
                let dir = dir.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &dir, link, &shared);
                    shared.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// One connection: requests until the client closes, asks to close, idles 30 s, or the
/// mirror stops.
fn serve(stream: TcpStream, dir: &Path, link: Link, shared: &Shared) -> io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut line = String::new();
        if reader.by_ref().take(8192).read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let mut range_from: Option<u64> = None;
        let mut close = false;
        for _ in 0..100 {
            let mut h = String::new();
            if reader.by_ref().take(8192).read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((k, v)) = h.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "range" {
                range_from = v
                    .strip_prefix("bytes=")
                    .and_then(|r| r.strip_suffix('-'))
                    .and_then(|n| n.parse().ok());
            } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
        let head = method == "HEAD";
        if method != "GET" && !head {
            respond(
                &mut out,
                "405 Method Not Allowed",
                b"method not allowed\n",
                head,
            )?;
            return Ok(());
        }
        let path = target.split('?').next().unwrap_or("");
        let name = path.strip_prefix('/').unwrap_or("");
        if name == "_counts" {
            let text = counts_text(&lock(&shared.counts));
            respond(&mut out, "200 OK", text.as_bytes(), head)?;
        } else if name.is_empty()
            || name.contains('/')
            || name.contains('\\')
            || name.starts_with('.')
            || name.contains('%')
        {
            respond(&mut out, "404 Not Found", b"not found\n", head)?;
        } else {
            {
                let mut c = lock(&shared.counts);
                c.entry(name.to_owned()).or_default().requests += 1;
            }
            if !link.latency.is_zero() {
                std::thread::sleep(link.latency);
            }
            send_file(
                &mut out,
                &dir.join(name),
                name,
                range_from,
                head,
                link,
                shared,
            )?;
        }
        if close {
            return Ok(());
        }
    }
}

fn respond(out: &mut TcpStream, status: &str, body: &[u8], head: bool) -> io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
        body.len()
    )?;
    if !head {
        out.write_all(body)?;
    }
    out.flush()
}

fn send_file(
    out: &mut TcpStream,
    path: &Path,
    name: &str,
    range_from: Option<u64>,
    head: bool,
    link: Link,
    shared: &Shared,
) -> io::Result<()> {
    let file = match std::fs::File::open(path) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => f,
        _ => return respond(out, "404 Not Found", b"not found\n", head),
    };
    let len = file.metadata()?.len();
    let from = range_from.unwrap_or(0);
    if from > len || (range_from.is_some() && from == len && len > 0) {
        write!(
            out,
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n"
        )?;
        return out.flush();
    }
    if range_from.is_some() {
        write!(
            out,
            "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{len}\r\nContent-Type: application/octet-stream\r\n\r\n",
            len - from,
            len.saturating_sub(1)
        )?;
    } else {
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nContent-Type: application/octet-stream\r\nAccept-Ranges: bytes\r\n\r\n"
        )?;
    }
    if head {
        return out.flush();
    }
    let mut file = BufReader::new(file);
    io::copy(&mut file.by_ref().take(from), &mut io::sink())?;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for chunk in buf[..n].chunks(16 << 10) {
            pace(link, shared, chunk.len());
            out.write_all(chunk)?;
            lock(&shared.counts)
                .entry(name.to_owned())
                .or_default()
                .bytes += chunk.len() as u64;
        }
    }
    out.flush()
}

/// Waits until the shared link has carried `n` more bytes at its rate.
fn pace(link: Link, shared: &Shared, n: usize) {
    let Some(rate) = link.rate.filter(|r| *r > 0) else {
        return;
    };
    let cost = Duration::from_secs_f64(n as f64 / rate as f64);
    let until = {
        let mut free = lock(&shared.link_free);
        let now = Instant::now();
        let start = free.map_or(now, |f| f.max(now));
        let until = start + cost;
        *free = Some(until);
        until
    };
    let now = Instant::now();
    if until > now {
        std::thread::sleep(until - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url: &str, path: &str, extra: &str) -> (String, Vec<u8>) {
        let addr = url.strip_prefix("http://").unwrap();
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        (
            String::from_utf8_lossy(&all[..split]).into_owned(),
            all[split + 4..].to_vec(),
        )
    }

    #[test]
    fn serves_files_counts_them_and_refuses_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("core.db"), b"database").unwrap();
        std::fs::write(dir.path().join("a-1-1-any.pkg.tar.zst"), vec![7u8; 100_000]).unwrap();
        let m = Mirror::start(dir.path()).unwrap();
        let (h, body) = get(&m.url, "/a-1-1-any.pkg.tar.zst", "");
        assert!(h.starts_with("HTTP/1.1 200"), "{h}");
        assert_eq!(body.len(), 100_000);
        let (h, body) = get(&m.url, "/a-1-1-any.pkg.tar.zst", "Range: bytes=99990-\r\n");
        assert!(h.starts_with("HTTP/1.1 206"), "{h}");
        assert_eq!(body.len(), 10);
        assert_eq!(get(&m.url, "/core.db", "").1, b"database");
        for bad in ["/../etc/passwd", "/sub/x", "/missing", "/"] {
            assert!(get(&m.url, bad, "").0.starts_with("HTTP/1.1 404"), "{bad}");
        }
        assert_eq!(m.bytes_for("a-1-1-any.pkg.tar.zst"), 100_010);
        assert_eq!(m.requests_for("a-1-1-any.pkg.tar.zst"), 2);
        assert_eq!(m.package_bytes(), 100_010);
        assert_eq!(m.bytes_served(), 100_018);
        let (_, counts) = get(&m.url, "/_counts", "");
        assert!(
            String::from_utf8_lossy(&counts).contains("core.db\t8\t1\n"),
            "{}",
            String::from_utf8_lossy(&counts)
        );
    }

    #[test]
    fn a_rate_limit_paces_the_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("big"), vec![0u8; 200_000]).unwrap();
        let link = Link {
            rate: Some(1_000_000),
            latency: Duration::from_millis(50),
        };
        let m = Mirror::start_with(dir.path(), link, 0).unwrap();
        let t = Instant::now();
        assert_eq!(get(&m.url, "/big", "").1.len(), 200_000);
        assert!(
            t.elapsed() >= Duration::from_millis(200),
            "{:?}",
            t.elapsed()
        );
    }
}
