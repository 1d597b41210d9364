//! The example fleet's CI (example-fleet/.github/workflows/fleet.yaml) as shipped. The workflow
//! parses, and every `run:` step is one line: the two before fleetctl exists, then `bash
//! .github/fleet-ci.sh <step>` for prepare, install, validate, diff and comment, in that order,
//! with the cache steps keyed on what `prepare` computes. Then that script, run the way the
//! steps run it (in a checkout, with the GITHUB_* environment pointing at temporary files, and
//! this build's fleetctl first on PATH), against a scripted pull request: a copy of
//! example-fleet on `main`, a branch changing it, GitHub's merge of it as `pull/7/merge`, and
//! `main` moving on after that (a re-run: `origin/main` is newer than the merge's base), cloned;
//! and a fake GitHub REST API on loopback that records every request and keeps the comments:
//!
//! - same repository: one POST of a comment starting with the marker, holding exactly fleetctl's
//!   markdown diff of what the pull request changes (the branch's package, not main's newer
//!   one), found again past a page of other comments (and not a person's comment quoting the
//!   marker) and PATCHed on the next run, never a second POST;
//! - from a fork: no request at all, and the job summary says why there is no comment;
//! - no change: the summary has fleetctl's "No change to any pool or host.", exit 0;
//! - an invalid fleet: the validate step fails with fleetctl's exit code, and so does diff;
//! - install: fleetctl on PATH is used (nothing installed); with nothing configured it fails
//!   naming the settings; the pacman-repository and build-from-source ways against fake `pacman`,
//!   `pacman-key` and `cargo` that record what they are asked (nothing is installed or built).

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde_json::{Value, json};

use crate::harness::{FleetRepo, Packager, TempDir, fleetctl, run, tempdir};
use crate::harness::{copy_dir, example_fleet};

const MARKER: &str = "<!-- pacfleet-diff -->";
const REPO: &str = "acme/fleet";
const PR: u64 = 7;
const TOKEN: &str = "ghs_test-token";

fn example_file(path: &str) -> String {
    fs::read_to_string(example_fleet().join(path)).expect("read an example-fleet file")
}

// ---------------------------------------------------------------------------------------------
// The workflow file.

fn workflow() -> serde_yaml::Value {
    let text = example_file(".github/workflows/fleet.yaml");
    serde_yaml::from_str(&text).expect("fleet.yaml is valid YAML")
}

fn s(v: &serde_yaml::Value) -> &str {
    v.as_str().unwrap_or("")
}

#[test]
fn ci_workflow_runs_only_the_script_after_checkout() {
    let wf = workflow();
    assert_eq!(s(&wf["permissions"]["contents"]), "read");
    assert_eq!(s(&wf["permissions"]["pull-requests"]), "write");
    assert!(
        wf["on"]
            .as_mapping()
            .is_some_and(|on| on.contains_key("pull_request")),
        "runs on pull_request"
    );
    let jobs = wf["jobs"].as_mapping().expect("jobs");
    assert_eq!(jobs.len(), 1, "one job");
    let job = jobs.values().next().expect("the job");
    assert_eq!(s(&job["container"]), "archlinux:latest");

    // Every setting the script reads is in the job's env: (not vars: forks do not get them).
    let script = example_file(".github/fleet-ci.sh");
    let mut settings = BTreeSet::new();
    for (i, _) in script.match_indices("PACFLEET_") {
        let name: String = script[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        settings.insert(name);
    }
    let env: BTreeSet<String> = job["env"]
        .as_mapping()
        .expect("job env")
        .keys()
        .map(|k| s(k).to_owned())
        .collect();
    assert_eq!(settings, env, "the script's settings are the job's env");

    let steps = job["steps"].as_sequence().expect("steps");
    let checkout = steps
        .iter()
        .position(|st| s(&st["uses"]) == "actions/checkout@v4")
        .expect("a checkout step");
    assert_eq!(
        steps[checkout]["with"]["fetch-depth"].as_u64(),
        Some(0),
        "a full clone: the diff needs the base branch"
    );
    let mut inline = Vec::new();
    let mut subcommands = Vec::new();
    let mut position = std::collections::BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        let Some(cmd) = step["run"].as_str() else {
            continue;
        };
        let cmd = cmd.trim_end();
        assert!(!cmd.contains('\n'), "one line per run: step, not:\n{cmd}");
        match cmd.strip_prefix("bash .github/fleet-ci.sh ") {
            Some(sub) => {
                assert!(i > checkout, "{cmd}: before the checkout");
                subcommands.push(sub.to_owned());
                position.insert(sub.to_owned(), i);
            }
            None => inline.push(cmd.to_owned()),
        }
    }
    assert_eq!(
        inline,
        [
            "pacman -Syu --noconfirm --needed git",
            "git config --global --add safe.directory \"$GITHUB_WORKSPACE\"",
        ],
        "only git for checkout and safe.directory are inline"
    );
    assert_eq!(
        subcommands,
        ["prepare", "install", "validate", "diff", "comment"]
    );
    assert_eq!(s(&steps[position["prepare"]]["id"]), "prepare");
    assert_eq!(
        s(&steps[position["comment"]]["env"]["GITHUB_TOKEN"]),
        "${{ github.token }}"
    );

    // The cache of a build from source: restored before install, saved after, on the key
    // prepare computes, at the path install builds into.
    for (action, before_install) in [
        ("actions/cache/restore@v4", true),
        ("actions/cache/save@v4", false),
    ] {
        let i = steps
            .iter()
            .position(|st| s(&st["uses"]) == action)
            .unwrap_or_else(|| panic!("a step using {action}"));
        assert_eq!(i < position["install"], before_install, "{action}'s place");
        assert!(i > position["prepare"], "{action} after prepare");
        assert_eq!(s(&steps[i]["with"]["path"]), "~/.cargo/bin/fleetctl");
        assert_eq!(
            s(&steps[i]["with"]["key"]),
            "${{ steps.prepare.outputs.key }}"
        );
        assert!(
            s(&steps[i]["if"]).contains("steps.prepare.outputs.method == 'source'"),
            "{action} only for a build from source"
        );
    }

    let text = example_file(".github/workflows/fleet.yaml");
    assert!(!text.contains("your-org"), "no placeholder URL");
}

// ---------------------------------------------------------------------------------------------
// A fake GitHub REST API: issue comments of one pull request.

#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    authorization: String,
    body: String,
}

#[derive(Default)]
struct Forge {
    comments: Vec<Value>,
    requests: Vec<Request>,
    next_id: u64,
}

struct FakeGitHub {
    url: String,
    port: u16,
    forge: Arc<Mutex<Forge>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeGitHub {
    /// Serves the comments of pull request [`PR`] of [`REPO`]: at first `people` comments by
    /// a person (one quoting the marker), so that listing them takes two pages.
    fn start(people: u64) -> FakeGitHub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        let mut forge = Forge::default();
        for id in 1..=people {
            let body = if id == 3 {
                format!("{MARKER}\nquoted by hand")
            } else {
                format!("comment {id}")
            };
            forge
                .comments
                .push(json!({"id": id, "body": body, "user": {"login": "alice", "type": "User"}}));
        }
        forge.next_id = people + 1;
        let forge = Arc::new(Mutex::new(forge));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (forge, stop) = (forge.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(stream) = stream {
                        serve(stream, &forge);
                    }
                }
            })
        };
        FakeGitHub {
            url: format!("http://127.0.0.1:{port}"),
            port,
            forge,
            stop,
            thread: Some(thread),
        }
    }

    fn requests(&self) -> Vec<Request> {
        self.forge.lock().expect("forge").requests.clone()
    }

    fn bot_comments(&self) -> Vec<Value> {
        let forge = self.forge.lock().expect("forge");
        forge
            .comments
            .iter()
            .filter(|c| c["user"]["type"] == "Bot")
            .cloned()
            .collect()
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(stream: TcpStream, forge: &Mutex<Forge>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let target = parts.next().unwrap_or("").to_owned();
    let (mut length, mut authorization, mut expect) = (0usize, String::new(), false);
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').unwrap_or((&header, ""));
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().unwrap_or(0),
            "authorization" => authorization = value.to_owned(),
            "expect" => expect = value.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
    }
    let mut out = stream;
    if expect {
        let _ = out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    let (status, answer) = {
        let mut f = forge.lock().expect("forge");
        f.requests.push(Request {
            method: method.clone(),
            path: target.clone(),
            authorization,
            body: body.clone(),
        });
        route(&mut f, &method, &target, &body)
    };
    let text = answer.to_string();
    let _ = write!(
        out,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn route(f: &mut Forge, method: &str, target: &str, body: &str) -> (u16, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let param = |name: &str| {
        query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let list = format!("/repos/{REPO}/issues/{PR}/comments");
    let one = format!("/repos/{REPO}/issues/comments/");
    let new_body = || {
        serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v["body"].as_str().map(str::to_owned))
    };
    match method {
        "GET" if path == list => {
            let per_page = param("per_page").unwrap_or(30);
            let page = param("page").unwrap_or(1).max(1);
            let items: Vec<Value> = f
                .comments
                .iter()
                .skip((page - 1) * per_page)
                .take(per_page)
                .cloned()
                .collect();
            (200, Value::Array(items))
        }
        "POST" if path == list => {
            let Some(text) = new_body() else {
                return (422, json!({"message": "body is missing"}));
            };
            let id = f.next_id;
            f.next_id += 1;
            let comment = json!({
                "id": id, "body": text,
                "user": {"login": "github-actions[bot]", "type": "Bot"},
                "html_url": format!("https://github.com/{REPO}/pull/{PR}#issuecomment-{id}"),
            });
            f.comments.push(comment.clone());
            (201, comment)
        }
        "PATCH" if path.starts_with(&one) => {
            let id: Option<u64> = path[one.len()..].parse().ok();
            let (Some(text), Some(c)) = (
                new_body(),
                f.comments
                    .iter_mut()
                    .find(|c| c["id"].as_u64().is_some() && c["id"].as_u64() == id),
            ) else {
                return (404, json!({"message": "Not Found"}));
            };
            c["body"] = Value::String(text);
            (200, c.clone())
        }
        _ => (404, json!({"message": "Not Found"})),
    }
}

// ---------------------------------------------------------------------------------------------
// A scripted pull request and the job's environment.

/// The forge's repository and a checkout of pull request [`PR`] as actions/checkout makes it.
struct PullRequest {
    _tmp: TempDir,
    tmp: PathBuf,
    /// The checkout: HEAD at `pull/7/merge`, `origin/main` at main's newest commit.
    work: PathBuf,
    /// The job's files: summary, outputs, path, event, RUNNER_TEMP, HOME.
    job: PathBuf,
}

/// Example-fleet on `main`; the pull request's branch writes `files`; GitHub merges it into
/// main as `pull/7/merge`; then main adds strace to the builders (after the merge was made).
fn pull_request(files: &[(&str, &str)]) -> PullRequest {
    let tmp = tempdir();
    let repo = FleetRepo::new(tmp.path());
    copy_dir(&example_fleet(), &repo.dir);
    repo.commit_unsigned("the acme fleet", &[]);
    repo.git(&["switch", "-q", "-c", "change"]);
    repo.commit_unsigned("the change", files);
    repo.git(&["switch", "-q", "-c", "pull/7/merge", "main"]);
    repo.git(&["merge", "-q", "--no-ff", "--no-edit", "change"]);
    repo.git(&["switch", "-q", "main"]);
    let build =
        example_file("packages/build.yaml").replace("  - python\n", "  - python\n  - strace\n");
    repo.commit_unsigned("strace on the builders", &[("packages/build.yaml", &build)]);
    let work = tmp.path().join("work");
    let out = Command::new("git")
        .args(["clone", "-q", "--branch", "pull/7/merge"])
        .arg(&repo.dir)
        .arg(&work)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git clone");
    crate::harness::stdout_ok("git clone", &out);
    let job = tmp.path().join("job");
    for dir in ["temp", "home"] {
        fs::create_dir_all(job.join(dir)).expect("create job dirs");
    }
    for file in ["summary.md", "output", "path"] {
        fs::write(job.join(file), "").expect("create job files");
    }
    let pr = PullRequest {
        tmp: tmp.path().to_owned(),
        _tmp: tmp,
        work,
        job,
    };
    pr.event(REPO);
    pr
}

/// `first`, the directory of this build's fleetctl, then PATH without any other fleetctl.
fn path_with_fleetctl(first: &[&Path]) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_fleetctl"))
        .parent()
        .expect("fleetctl's directory");
    join_path(first.iter().copied().chain([bin]))
}

/// `first`, then PATH without any directory holding a fleetctl.
fn path_without_fleetctl(first: &[&Path]) -> String {
    join_path(first.iter().copied())
}

fn join_path<'a>(first: impl Iterator<Item = &'a Path>) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = first.map(Path::to_path_buf).collect();
    dirs.extend(std::env::split_paths(&path).filter(|d| !d.join("fleetctl").exists()));
    std::env::join_paths(dirs)
        .expect("join PATH")
        .to_string_lossy()
        .into_owned()
}

impl PullRequest {
    /// Writes the pull_request event, its head in `head_repo`.
    fn event(&self, head_repo: &str) {
        let event = json!({
            "action": "synchronize",
            "number": PR,
            "pull_request": {
                "number": PR,
                "base": {"ref": "main", "repo": {"full_name": REPO}},
                "head": {"ref": "change", "repo": {"full_name": head_repo}},
            },
        });
        fs::write(self.job.join("event.json"), event.to_string()).expect("write event");
    }

    fn summary(&self) -> String {
        fs::read_to_string(self.job.join("summary.md")).expect("read summary")
    }

    fn job_file(&self, name: &str) -> String {
        fs::read_to_string(self.job.join(name)).expect("read a job file")
    }

    /// `bash .github/fleet-ci.sh STEP` in the checkout, as the workflow's step runs it, with
    /// `path` as PATH and `env` added: (exit code, stdout, stderr).
    fn step_with(&self, step: &str, path: &str, env: &[(&str, &str)]) -> (i32, String, String) {
        let mut cmd = Command::new("bash");
        cmd.arg(".github/fleet-ci.sh")
            .arg(step)
            .current_dir(&self.work);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("GITHUB_")
                || k.starts_with("RUNNER_")
                || k.starts_with("PACFLEET_")
                || ["CARGO_HOME", "PACMAN_CONF", "GNUPGHOME", "RUST_LOG"].contains(&&*k)
            {
                cmd.env_remove(&*k);
            }
        }
        cmd.env("PATH", path)
            .env("HOME", self.job.join("home"))
            .env("LC_ALL", "C")
            .env("NO_COLOR", "1")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GITHUB_ACTIONS", "true")
            .env("GITHUB_BASE_REF", "main")
            .env("GITHUB_REPOSITORY", REPO)
            .env("GITHUB_EVENT_PATH", self.job.join("event.json"))
            .env("GITHUB_STEP_SUMMARY", self.job.join("summary.md"))
            .env("GITHUB_OUTPUT", self.job.join("output"))
            .env("GITHUB_PATH", self.job.join("path"))
            .env("GITHUB_SERVER_URL", "https://github.com")
            .env("GITHUB_RUN_ID", "4242")
            .env("RUNNER_TEMP", self.job.join("temp"))
            .envs(env.iter().copied());
        run(&mut cmd)
    }

    /// A step with this build's fleetctl first on PATH.
    fn step(&self, step: &str, env: &[(&str, &str)]) -> (i32, String, String) {
        self.step_with(step, &path_with_fleetctl(&[]), env)
    }

    /// The comment step against `api`, with the token the workflow gives it.
    fn comment(&self, api: &FakeGitHub) -> (i32, String, String) {
        self.step(
            "comment",
            &[("GITHUB_API_URL", &api.url), ("GITHUB_TOKEN", TOKEN)],
        )
    }

    /// fleetctl's own markdown diff of what the pull request changes.
    fn expected_markdown(&self) -> (i32, String) {
        let (code, out, err) = run(fleetctl()
            .args(["diff", "origin/main...HEAD", "--format", "markdown"])
            .current_dir(&self.work));
        assert!(code == 0 || code == 1, "fleetctl diff: exit {code}\n{err}");
        (code, out)
    }
}

fn ok(what: &str, (code, out, err): (i32, String, String)) {
    assert_eq!(
        code, 0,
        "{what}: exit {code}\n--- stdout\n{out}\n--- stderr\n{err}"
    );
}

fn with_tcpdump() -> String {
    example_file("packages/core-tools.yaml").replace("  - rsync\n", "  - rsync\n  - tcpdump\n")
}

// ---------------------------------------------------------------------------------------------
// The steps against scripted pull requests.

#[test]
fn ci_workflow_same_repository_pull_request_gets_one_comment_updated_in_place() {
    let pr = pull_request(&[("packages/core-tools.yaml", &with_tcpdump())]);
    let api = FakeGitHub::start(120);

    ok("validate", pr.step("validate", &[]));
    ok("diff", pr.step("diff", &[]));
    let (code, markdown) = pr.expected_markdown();
    assert_eq!(code, 1, "the pull request changes the fleet");
    assert!(markdown.contains("tcpdump"), "{markdown}");
    assert!(
        !markdown.contains("strace"),
        "only what the pull request changes, not what main did since:\n{markdown}"
    );
    assert_eq!(pr.summary(), markdown, "the summary is fleetctl's markdown");

    ok("comment", pr.comment(&api));
    let requests = api.requests();
    let posts: Vec<&Request> = requests.iter().filter(|r| r.method != "GET").collect();
    assert_eq!(posts.len(), 1, "{requests:#?}");
    let post = posts[0];
    assert_eq!(post.method, "POST");
    assert_eq!(post.path, format!("/repos/{REPO}/issues/{PR}/comments"));
    assert_eq!(post.authorization, format!("Bearer {TOKEN}"));
    let body: Value = serde_json::from_str(&post.body).expect("a JSON body");
    assert_eq!(
        body["body"].as_str(),
        Some(format!("{MARKER}\n{markdown}").as_str())
    );
    assert!(
        requests
            .iter()
            .all(|r| r.authorization == format!("Bearer {TOKEN}")),
        "every request has the token"
    );
    let bots = api.bot_comments();
    assert_eq!(bots.len(), 1);
    let id = bots[0]["id"].as_u64().expect("the comment's id");

    // The next push: the same comment (now on the second page, after 120 others and a
    // person's quoting the marker) is updated; no second one.
    let before = api.requests().len();
    ok("diff again", pr.step("diff", &[]));
    ok("comment again", pr.comment(&api));
    let again: Vec<Request> = api.requests()[before..].to_vec();
    let methods: Vec<(&str, &str)> = again
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    let list = format!("/repos/{REPO}/issues/{PR}/comments?per_page=100");
    let patch = format!("/repos/{REPO}/issues/comments/{id}");
    assert_eq!(
        methods,
        [
            ("GET", format!("{list}&page=1").as_str()),
            ("GET", format!("{list}&page=2").as_str()),
            ("PATCH", patch.as_str()),
        ],
        "{again:#?}"
    );
    let body: Value = serde_json::from_str(&again[2].body).expect("a JSON body");
    assert_eq!(
        body["body"].as_str(),
        Some(format!("{MARKER}\n{markdown}").as_str())
    );
    assert_eq!(api.bot_comments().len(), 1, "still one comment");
}

#[test]
fn ci_workflow_fork_pull_request_gets_the_summary_and_no_request() {
    let pr = pull_request(&[("packages/core-tools.yaml", &with_tcpdump())]);
    pr.event("mallory/fleet");
    let api = FakeGitHub::start(0);
    ok("validate", pr.step("validate", &[]));
    ok("diff", pr.step("diff", &[]));
    let (_, markdown) = pr.expected_markdown();
    let (code, out, err) = pr.comment(&api);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        api.requests().is_empty(),
        "no request at all: {:#?}",
        api.requests()
    );
    let summary = pr.summary();
    assert!(summary.starts_with(&markdown), "{summary}");
    let note = &summary[markdown.len()..];
    assert!(
        note.contains("not posted as a comment")
            && note.contains("mallory/fleet")
            && note.contains("read-only token"),
        "the summary says why there is no comment: {note}"
    );
}

#[test]
fn ci_workflow_pull_request_without_change_says_so() {
    let readme = format!("{}\nA line for the README.\n", example_file("README.md"));
    let pr = pull_request(&[("README.md", &readme)]);
    let api = FakeGitHub::start(0);
    ok("validate", pr.step("validate", &[]));
    let (code, out, err) = pr.step("diff", &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (fleetctl_code, markdown) = pr.expected_markdown();
    assert_eq!(fleetctl_code, 0, "fleetctl diff: no change");
    assert!(
        markdown.contains("No change to any pool or host."),
        "{markdown}"
    );
    assert_eq!(pr.summary(), markdown);
    // The comment says so too (an earlier diff on the pull request would be out of date).
    ok("comment", pr.comment(&api));
    let bots = api.bot_comments();
    assert_eq!(bots.len(), 1);
    assert_eq!(
        bots[0]["body"].as_str(),
        Some(format!("{MARKER}\n{markdown}").as_str())
    );
}

#[test]
fn ci_workflow_invalid_fleet_fails_validate_with_fleetctls_exit_code() {
    let canary =
        example_file("pools/canary.yaml").replace("[base, desktop]", "[base, desktop, nosuchset]");
    let pr = pull_request(&[("pools/canary.yaml", &canary)]);
    let (expected, _, problems) = run(fleetctl().args(["validate", "."]).current_dir(&pr.work));
    assert_eq!(expected, 2, "fleetctl validate: {problems}");
    let (code, out, err) = pr.step("validate", &[]);
    assert_eq!(code, expected, "{out}\n{err}");
    assert!(err.contains("nosuchset"), "fleetctl's problems: {err}");
    assert!(
        pr.summary().contains("fleetctl validate failed** (exit 2)"),
        "{}",
        pr.summary()
    );
    let (code, _, err) = pr.step("diff", &[]);
    assert_eq!(code, 2, "diff of an invalid side: {err}");
    assert!(pr.summary().contains("fleetctl diff failed** (exit 2)"));
}

// ---------------------------------------------------------------------------------------------
// Install, without installing anything.

/// Fake `pacman`, `pacman-key` and `cargo` in `dir` that log their arguments to `dir/log`;
/// `pacman -Q pacman` answers 7.1.0-1, and `cargo` "builds" fleetctl: a link to this build's.
fn fakes(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).expect("create fakes dir");
    let log = dir.join("log");
    fs::write(&log, "").expect("create log");
    let scripts = [
        (
            "pacman",
            format!(
                "echo \"pacman $*\" >> '{log}'\n[ \"$1\" != -Q ] || echo 'pacman 7.1.0-1'\n",
                log = log.display()
            ),
        ),
        (
            "pacman-key",
            format!("echo \"pacman-key $*\" >> '{}'\n", log.display()),
        ),
        (
            "cargo",
            format!(
                "echo \"cargo $* LTO=$CARGO_PROFILE_RELEASE_LTO CGU=$CARGO_PROFILE_RELEASE_CODEGEN_UNITS\" >> '{log}'\n\
                 mkdir -p \"$HOME/.cargo/bin\" && ln -sf '{bin}' \"$HOME/.cargo/bin/fleetctl\"\n",
                log = log.display(),
                bin = env!("CARGO_BIN_EXE_fleetctl"),
            ),
        ),
    ];
    for (name, body) in scripts {
        let path = dir.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write a fake");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod a fake");
    }
    log
}

fn log_lines(log: &Path) -> Vec<String> {
    fs::read_to_string(log)
        .expect("read the fakes' log")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn ci_workflow_install_uses_fleetctl_on_path() {
    let pr = pull_request(&[]);
    let fakes_dir = pr.tmp.join("fakes");
    let log = fakes(&fakes_dir);
    let path = path_with_fleetctl(&[&fakes_dir]);
    ok("prepare", pr.step_with("prepare", &path, &[]));
    assert_eq!(pr.job_file("output"), "method=path\n");
    let (code, out, err) = pr.step_with("install", &path, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains(env!("CARGO_BIN_EXE_fleetctl")),
        "says which: {err}"
    );
    assert_eq!(log_lines(&log), Vec::<String>::new(), "nothing installed");
    assert_eq!(pr.job_file("path"), "", "PATH as it was");
}

#[test]
fn ci_workflow_install_without_a_way_names_the_settings() {
    let pr = pull_request(&[]);
    let fakes_dir = pr.tmp.join("fakes");
    let log = fakes(&fakes_dir);
    let path = path_without_fleetctl(&[&fakes_dir]);
    for step in ["prepare", "install"] {
        let (code, out, err) = pr.step_with(step, &path, &[]);
        assert_eq!(code, 2, "{step}: {out}\n{err}");
        for name in [
            "PACFLEET_PACMAN_SERVER",
            "PACFLEET_PACMAN_KEY",
            "PACFLEET_GIT",
            "PACFLEET_REV",
            ".github/workflows/fleet.yaml",
        ] {
            assert!(err.contains(name), "{step}: names {name}: {err}");
        }
    }
    for (set, missing) in [
        ("PACFLEET_GIT", "PACFLEET_REV"),
        ("PACFLEET_REV", "PACFLEET_GIT"),
        ("PACFLEET_PACMAN_SERVER", "PACFLEET_PACMAN_KEY"),
    ] {
        let (code, _, err) = pr.step_with("install", &path, &[(set, "x")]);
        assert_eq!(code, 2, "{set} alone: {err}");
        assert!(
            err.contains(&format!("{set} is set but {missing} is not")),
            "{err}"
        );
    }
    assert_eq!(log_lines(&log), Vec::<String>::new(), "nothing installed");
    assert_eq!(pr.job_file("output"), "");
}

#[test]
fn ci_workflow_install_builds_from_source_once_per_cache_key() {
    let pr = pull_request(&[]);
    let fakes_dir = pr.tmp.join("fakes");
    let log = fakes(&fakes_dir);
    let path = path_without_fleetctl(&[&fakes_dir]);
    let git = "https://git.example.com/ops/pacfleet.git";
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let env = [("PACFLEET_GIT", git), ("PACFLEET_REV", rev)];
    ok("prepare", pr.step_with("prepare", &path, &env));
    let arch = run(Command::new("uname").arg("-m")).1;
    assert_eq!(
        pr.job_file("output"),
        format!(
            "method=source\nkey=fleetctl-{}-pacman-7.1.0-1-{rev}\n",
            arch.trim()
        )
    );
    ok("install", pr.step_with("install", &path, &env));
    let home = pr.job.join("home");
    assert_eq!(
        log_lines(&log),
        [
            "pacman -Q pacman".to_owned(),
            "pacman -S --noconfirm --needed rust base-devel cmake jq".to_owned(),
            format!(
                "cargo install --locked --force --git {git} --rev {rev} --bin fleetctl LTO=off CGU=16"
            ),
        ]
    );
    assert_eq!(
        pr.job_file("path"),
        format!("{}/.cargo/bin\n", home.display()),
        "where the cache step restores it"
    );
    // A cache hit: the binary is there and runs; nothing is built.
    ok("install again", pr.step_with("install", &path, &env));
    assert_eq!(log_lines(&log).len(), 3, "{:?}", log_lines(&log));
}

#[test]
fn ci_workflow_install_from_a_pacman_repository() {
    let pr = pull_request(&[]);
    let fakes_dir = pr.tmp.join("fakes");
    let log = fakes(&fakes_dir);
    let path = path_without_fleetctl(&[&fakes_dir]);
    let packager = Packager::default_key();
    let key = pr.work.join(".github/packager.asc");
    fs::write(&key, packager.public_key_armored()).expect("write the key");
    let conf = pr.tmp.join("pacman.conf");
    fs::write(
        &conf,
        "[options]\nArchitecture = auto\n\n[core]\nInclude = /etc/pacman.d/mirrorlist\n",
    )
    .expect("write pacman.conf");
    let server = "https://pkg.example.com/pacfleet/$arch";
    let env = [
        ("PACFLEET_PACMAN_SERVER", server),
        ("PACFLEET_PACMAN_KEY", ".github/packager.asc"),
        ("PACMAN_CONF", conf.to_str().expect("utf-8 path")),
    ];
    ok("prepare", pr.step_with("prepare", &path, &env));
    assert_eq!(pr.job_file("output"), "method=pacman\n");
    for _ in 0..2 {
        ok("install", pr.step_with("install", &path, &env));
    }
    let once = [
        "pacman-key --init".to_owned(),
        "pacman-key --add .github/packager.asc".to_owned(),
        format!("pacman-key --lsign-key {}", packager.fingerprint()),
        "pacman -Syu --noconfirm --needed pacfleet jq".to_owned(),
    ];
    assert_eq!(log_lines(&log), [once.clone(), once].concat());
    let text = fs::read_to_string(&conf).expect("read pacman.conf");
    assert!(
        text.ends_with(&format!("\n[pacfleet]\nServer = {server}\n")),
        "{text}"
    );
    assert_eq!(text.matches("[pacfleet]").count(), 1, "added once: {text}");
}

#[test]
fn ci_workflow_huge_diff_is_cut_at_a_line_with_a_pointer_to_the_summary() {
    let pr = pull_request(&[]);
    let api = FakeGitHub::start(0);
    // 6000 table rows of 40 bytes (with a two-byte character each): 240 kB.
    let rows: String = (0..6000)
        .map(|i| format!("| ws-{i:05} | pkg-é{i:05} | added | ………… |\n"))
        .collect();
    let diff = format!("### Fleet diff\n\n{rows}");
    fs::write(pr.job.join("temp/pacfleet-diff.md"), &diff).expect("write the diff");
    ok("comment", pr.comment(&api));
    let bots = api.bot_comments();
    let body = bots[0]["body"].as_str().expect("a body");
    assert!(body.chars().count() <= 65536, "GitHub's limit");
    let (kept, note) = body
        .rsplit_once("\n\n… cut at ")
        .expect("a note where it was cut");
    let kept = kept
        .strip_prefix(&format!("{MARKER}\n"))
        .expect("the marker first");
    assert!(diff.starts_with(&format!("{kept}\n")), "whole lines");
    assert!(kept.len() > 50_000, "most of what fits: {}", kept.len());
    assert!(
        note.contains("(https://github.com/acme/fleet/actions/runs/4242)"),
        "{note}"
    );
}
