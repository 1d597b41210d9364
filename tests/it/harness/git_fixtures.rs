//! Generic git fixtures: a temporary directory with an isolated `HOME` for the `git` CLI
//! (no system or user configuration leaks into the repositories made there), and a smart-HTTP
//! server (`git http-backend` behind a small python3 server) on loopback. Nothing here depends
//! on pacfleet.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A temporary directory with an isolated `HOME` for the `git` CLI: no system or user
/// configuration leaks into the repositories made here.
pub struct Fixture {
    tmp: tempfile::TempDir,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    /// A new empty fixture.
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("create temporary directory");
        std::fs::create_dir_all(tmp.path().join("home")).expect("create home");
        Fixture { tmp }
    }

    /// The fixture's root directory.
    pub fn root(&self) -> PathBuf {
        self.tmp.path().to_owned()
    }

    /// `name` inside the fixture.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// The environment for every git process: isolated from host configuration.
    pub fn configure(&self, cmd: &mut Command) {
        cmd.env("HOME", self.path("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", self.path("home/.gitconfig"))
            .env("GIT_TERMINAL_PROMPT", "0")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_OBJECT_DIRECTORY");
    }

    /// A `git -C dir` command with the isolated environment.
    pub fn git_cmd(&self, dir: &Path) -> Command {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(dir);
        self.configure(&mut cmd);
        cmd
    }

    /// Run `git -C dir args…`, panic on failure, return trimmed stdout.
    pub fn git(&self, dir: &Path, args: &[&str]) -> String {
        let out = self
            .git_cmd(dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?} in {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Like [`Fixture::git`], feeding `input` on stdin.
    pub fn git_stdin(&self, dir: &Path, args: &[&str], input: &str) -> String {
        let mut child = self
            .git_cmd(dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run git");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait for git");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A new non-bare repository `name` on branch `main`, with a committer identity.
    pub fn init(&self, name: &str) -> PathBuf {
        let dir = self.path(name);
        self.git(
            &self.root(),
            &["init", "-q", "-b", "main", &dir.to_string_lossy()],
        );
        self.git(&dir, &["config", "user.name", "Fleet Test"]);
        self.git(&dir, &["config", "user.email", "fleet@example.invalid"]);
        self.git(&dir, &["config", "commit.gpgsign", "false"]);
        dir
    }

    /// Write `files` (path, content) into the work tree of `repo`, commit everything,
    /// return the new commit id.
    pub fn commit(&self, repo: &Path, files: &[(&str, &str)], message: &str) -> String {
        for (path, content) in files {
            let file = repo.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).expect("create parent dir");
            }
            std::fs::write(&file, content).expect("write file");
        }
        self.git(repo, &["add", "-A"]);
        self.git(repo, &["commit", "-q", "-m", message]);
        self.git(repo, &["rev-parse", "HEAD"])
    }
}

/// A loopback port that nothing listens on (at the moment of the call).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr").port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `git http-backend` (smart HTTP) behind a minimal Python HTTP server acting as the CGI
/// host, serving every repository under a root directory on 127.0.0.1; killed on drop.
/// URLs are `http://127.0.0.1:<port>/<path below root>`.
pub struct HttpServer {
    child: Child,
    /// The port it listens on.
    pub port: u16,
}

const CGI_HOST: &str = r#"
import http.server, os, subprocess, sys

ROOT = sys.argv[1]

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.cgi()

    def do_POST(self):
        self.cgi()

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def cgi(self):
        path, _, query = self.path.partition("?")
        body = self.read_body()
        env = dict(os.environ)
        env.update({
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.0",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
        })
        for name in ("Git-Protocol", "Content-Encoding"):
            value = self.headers.get(name)
            if value:
                env["HTTP_" + name.upper().replace("-", "_")] = value
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             stdout=subprocess.PIPE).stdout
        head, sep, rest = out.partition(b"\r\n\r\n")
        if not sep:
            head, sep, rest = out.partition(b"\n\n")
        status, reason, headers = 200, "OK", []
        for line in head.decode("latin-1").splitlines():
            key, _, value = line.partition(":")
            value = value.strip()
            if key.lower() == "status":
                status, _, reason = value.partition(" ")
                status = int(status)
            elif key:
                headers.append((key, value))
        self.send_response(status, reason)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

impl HttpServer {
    /// Start it and wait until it accepts connections; `None` if `python3` is missing.
    pub fn start(fx: &Fixture, root: &Path) -> Option<HttpServer> {
        let script = fx.path("cgi-host.py");
        std::fs::write(&script, CGI_HOST).expect("write CGI host script");
        let mut cmd = Command::new("python3");
        fx.configure(&mut cmd);
        let mut child = match cmd
            .arg(&script)
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(child) => child,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
            Err(err) => panic!("spawn python3: {err}"),
        };
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read port");
        let Ok(port) = line.trim().parse() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("CGI host did not report its port (got {line:?})");
        };
        wait_for_port(port, &mut child, "CGI host");
        Some(HttpServer { child, port })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
