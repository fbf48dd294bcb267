//! What the `threshold` command's tests share: the binary, the sample
//! manifests, a `threshold serve` child on 127.0.0.1:0, the CLI run to its
//! end, a simulated day's report, a deployment of processes on Kafka, and
//! the day's plan handheld events need.
#![allow(dead_code)]

pub(crate) use std::io::{BufRead, BufReader};
pub(crate) use std::path::Path;
pub(crate) use std::process::{Child, Command, Stdio};

/// The `threshold` binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_threshold");

/// The household of the Swedish sample's first row (SE-STO-1-00001), as
/// `threshold privacy forget` names it by its address.
pub(crate) const SVEAVAGEN_25: [&str; 8] = [
    "--street",
    "Sveavägen 25",
    "--postal-code",
    "165 71",
    "--city",
    "Stockholm",
    "--country",
    "SE",
];

/// The project's Python environment (`scripts/python-env.sh`), with the
/// module of `spec` (`MODULE[:PACKAGE]`) installed: its python.
pub(crate) fn python_with(spec: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/python-env.sh");
    let out = Command::new(&script)
        .arg(spec)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} could not install {spec}: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("a path")
        .trim()
        .to_owned()
}

/// The bundled sample manifests of 2026-11-23.
pub(crate) fn samples() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/manifest/samples")
}

/// A `threshold serve` child, stopped with SIGINT when dropped.
pub(crate) struct Served {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) data: std::path::PathBuf,
    /// Its admin port (`host:port`), when served with `--admin`.
    pub(crate) admin: Option<String>,
}

impl Served {
    /// `threshold serve --simulation` on 127.0.0.1:0 over `data`.
    pub(crate) fn start(data: &Path) -> Self {
        let mut serve = Command::new(BIN);
        serve
            .args(["serve", "--simulation", "--listen", "127.0.0.1:0", "--data"])
            .arg(data);
        Self::spawn(serve, data)
    }

    /// Spawns `serve` (a `threshold serve` command) and waits for its
    /// address (and its admin port's, printed before it, if it has one).
    pub(crate) fn spawn(mut serve: Command, data: &Path) -> Self {
        let mut child = serve.stdout(Stdio::piped()).spawn().expect("spawn serve");
        let mut out = BufReader::new(child.stdout.as_mut().expect("stdout"));
        let mut admin = None;
        let addr = loop {
            let mut line = String::new();
            let read = out.read_line(&mut line).expect("a line");
            assert!(read > 0, "serve ended before it listened");
            if let Some(a) = line.strip_prefix("metrics on http://") {
                admin = Some(a.trim().trim_end_matches("/metrics").to_owned());
                continue;
            }
            break line
                .split_whitespace()
                .find(|w| w.starts_with("127.0.0.1:"))
                .unwrap_or_else(|| panic!("no address in {line:?}"))
                .to_owned();
        };
        Self {
            child,
            url: format!("http://{addr}"),
            data: data.to_path_buf(),
            admin,
        }
    }

    /// Its admin port's `/metrics`, whole.
    pub(crate) fn metrics(&self) -> String {
        use std::io::{Read as _, Write as _};
        let admin = self.admin.as_deref().expect("served with --admin");
        let mut conn = std::net::TcpStream::connect(admin).expect("admin port");
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("request");
        let mut body = String::new();
        conn.read_to_string(&mut body).expect("response");
        body
    }

    /// Events this server has appended so far, by its admin port's
    /// `threshold_events_appended_total` (every category and country).
    pub(crate) fn appended(&self) -> u64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with("threshold_events_appended_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// Its data directory, as the CLI's --data.
    pub(crate) fn data(&self) -> &str {
        self.data.to_str().expect("path")
    }

    /// A gRPC connection to it.
    pub(crate) async fn plain(&self) -> tonic::transport::Channel {
        tonic::transport::Channel::from_shared(self.url.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect")
    }

    /// A gRPC connection to it as the local credential of `role`.
    pub(crate) async fn channel(&self, role: threshold_auth::Role) -> threshold_auth::Authed {
        threshold_auth::LocalTokens::load(&self.data)
            .expect("local tokens")
            .channel(self.plain().await, role)
            .expect("token")
    }

    /// Ctrl-C, then wait: the server closes the log cleanly.
    pub(crate) fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("wait")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `threshold ARGS`, run to its end.
pub(crate) fn threshold(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run threshold")
}

/// What a command printed: its standard output, then its standard error.
pub(crate) fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `threshold credentials add --role analyst --tenant '*' --name NAME
/// [rest...]`: a carrier-wide analyst's credential, its token on stdout.
pub(crate) fn add_analyst(name: &str, rest: &[&str]) -> std::process::Output {
    let mut args = vec![
        "credentials",
        "add",
        "--role",
        "analyst",
        "--tenant",
        "*",
        "--name",
        name,
    ];
    args.extend_from_slice(rest);
    threshold(&args)
}

/// `threshold report attempts --server URL --token TOKEN --data DIR`: a
/// call that needs an analyst's credential.
pub(crate) fn report_attempts(url: &str, token: &str, data: &Path) -> std::process::Output {
    threshold(&[
        "report",
        "attempts",
        "--server",
        url,
        "--token",
        token,
        "--data",
        data.to_str().expect("path"),
    ])
}

/// `threshold manifest load FILE --server URL --data DIR [extra...]`.
pub(crate) fn load_manifest(
    file: &Path,
    server: &str,
    data: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "manifest",
        "load",
        file.to_str().expect("path"),
        "--server",
        server,
        "--data",
        data.to_str().expect("path"),
    ];
    args.extend_from_slice(extra);
    threshold(&args)
}

/// The in-home lines and the report tables of a simulated day's output.
pub(crate) fn day_report(text: &str) -> String {
    let grants = text
        .lines()
        .filter(|l| l.starts_with("in-home") || l.starts_with("alerts raised"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!grants.is_empty(), "no in-home lines in {text}");
    let report = text
        .split_once("\n\n")
        .map(|(_, r)| r.to_owned())
        .unwrap_or_else(|| panic!("no report in {text}"));
    format!("{grants}\n{report}")
        .lines()
        .filter(|l| !l.starts_with("threshold stopped"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The report part of `threshold run --demo`'s output (what follows the
/// first blank line), for one seed on a fresh store.
pub(crate) fn demo_report(seed: u64) -> String {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(BIN)
        .args([
            "run",
            "--demo",
            "--days",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            &seed.to_string(),
            "--data",
        ])
        .arg(dir.path().join("data"))
        .output()
        .expect("run --demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    day_report(&String::from_utf8_lossy(&out.stdout))
}

/// Processes of one deployment on Kafka, on this machine.
pub(crate) struct Deployment {
    /// Every process's data directory is in it.
    pub(crate) root: tempfile::TempDir,
    /// The local tokens, for the simulator and the CLI.
    pub(crate) shared: std::path::PathBuf,
    pub(crate) broker: String,
    pub(crate) prefix: String,
    /// The vault's key-encryption key (THRESHOLD_VAULT_KEK of every
    /// process): the vault is the deployment's vault topic.
    pub(crate) kek: String,
    tokens_made: std::sync::OnceLock<()>,
}

impl Deployment {
    /// A deployment on `broker` with topics named `prefix.…`: its
    /// credentials in its credentials topic (local tokens for every role
    /// made there by the CLI, their tokens in `shared` for the simulator)
    /// and its vault in its vault topic; each process has its own data
    /// directory, and nothing is shared on disk.
    pub(crate) fn new(broker: &str, prefix: &str) -> Self {
        let root = tempfile::tempdir().expect("dir");
        let shared = root.path().join("shared");
        Self {
            root,
            shared,
            broker: broker.to_owned(),
            prefix: prefix.to_owned(),
            kek: threshold_privacy::Kek::generate_hex(),
            tokens_made: std::sync::OnceLock::new(),
        }
    }

    /// Makes the local tokens, once, before the first process starts (the
    /// broker must be up).
    fn make_tokens(&self) {
        self.tokens_made.get_or_init(|| {
            let store = self.store_args();
            let mut args = vec!["credentials", "local-tokens", "--data", self.tokens()];
            args.extend(store.iter().map(String::as_str));
            let out = threshold(&args);
            assert!(
                out.status.success(),
                "credentials local-tokens: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
    }

    /// The flags that name this deployment's credentials store to
    /// `threshold credentials`.
    pub(crate) fn store_args(&self) -> Vec<String> {
        vec![
            "--log".into(),
            format!("kafka://{}", self.broker),
            "--topic-prefix".into(),
            self.prefix.clone(),
        ]
    }

    /// The data directory holding the local tokens, as the CLI's --data.
    pub(crate) fn tokens(&self) -> &str {
        self.shared.to_str().expect("path")
    }

    /// `threshold serve --services SERVICES --name NAME` on Kafka, with its
    /// own data directory (the same for the same name).
    pub(crate) fn serve(&self, services: &str, name: &str, listen: &str) -> Served {
        self.serve_with(services, name, listen, &[])
    }

    /// [`Deployment::serve`] with `extra` flags.
    pub(crate) fn serve_with(
        &self,
        services: &str,
        name: &str,
        listen: &str,
        extra: &[&str],
    ) -> Served {
        self.make_tokens();
        let data = self.root.path().join(name);
        std::fs::create_dir_all(&data).expect("data dir");
        let mut serve = Command::new(BIN);
        serve
            .args(["serve", "--simulation", "--listen", listen])
            .args(["--log", &format!("kafka://{}", self.broker)])
            .args(["--services", services, "--name", name])
            .args(["--topic-prefix", &self.prefix])
            .env("THRESHOLD_VAULT_KEK", &self.kek)
            .args(extra)
            .arg("--data")
            .arg(&data);
        Served::spawn(serve, &data)
    }

    /// `threshold simulate` of the sample day, seed 12, with `--server`
    /// and `--service-url`s as given.
    pub(crate) fn simulate(&self, server: &str, service_urls: &[(&str, &str)]) -> Day {
        Day::new(self.simulate_command(server, service_urls))
    }

    /// The `threshold simulate` child of [`Deployment::simulate`], its
    /// stdout and stderr piped.
    fn simulate_command(&self, server: &str, service_urls: &[(&str, &str)]) -> Child {
        let mut simulate = Command::new(BIN);
        simulate
            .args(["simulate", "--date", "2026-11-23", "--seed", "12"])
            .args(["--server", server])
            .arg("--data")
            .arg(&self.shared);
        for country in ["dk", "fi", "no", "se"] {
            simulate
                .arg("--manifest")
                .arg(samples().join(format!("2026-11-23-{country}.csv")));
        }
        for (service, url) in service_urls {
            simulate.args(["--service-url", &format!("{service}={url}")]);
        }
        simulate
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("simulate")
    }
}

/// A simulated day running: its stdout a line at a time, its stderr kept
/// whole (read on a thread, so the child never blocks on a full pipe), and
/// a deadline for its end that kills it and says where it stood.
pub(crate) struct Day {
    child: Child,
    pub(crate) lines: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// Every stdout line taken so far, in order.
    pub(crate) seen: Vec<String>,
}

/// How long a simulated day may take in a test before it counts as hung.
pub(crate) const DAY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

impl Day {
    pub(crate) fn new(mut child: Child) -> Self {
        let lines = lines_of(&mut child);
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err = child.stderr.take().expect("stderr");
        let keep = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let mut s = keep.lock().expect("stderr");
                s.push_str(&line);
                s.push('\n');
            }
        });
        Self {
            child,
            lines,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line starting with `prefix`.
    pub(crate) fn until_line(&mut self, prefix: &str) {
        if let Err(e) = lines_until(&self.lines, prefix, &mut self.seen, DAY_DEADLINE) {
            self.fail(&format!("no line starting {prefix:?} ({e})"));
        }
    }

    /// Waits for the day to end, within [`DAY_DEADLINE`]; its whole stdout.
    /// Fails the test, with its stderr, unless the day succeeded.
    pub(crate) fn finish(self) -> String {
        self.finish_or(String::new)
    }

    /// [`Day::finish`], adding `more` to the failure's message.
    pub(crate) fn finish_or(mut self, more: impl Fn() -> String) -> String {
        let until = std::time::Instant::now() + DAY_DEADLINE;
        loop {
            self.seen.extend(self.lines.try_iter());
            match self.child.try_wait().expect("wait for simulate") {
                Some(status) => {
                    // Its stdout closed with it: every line is in.
                    self.seen.extend(self.lines.iter());
                    if !status.success() {
                        self.fail(&format!("ended with {status}\n{}", more()));
                    }
                    return self.seen.join("\n");
                }
                None if std::time::Instant::now() >= until => {
                    self.fail(&format!("not ended after {DAY_DEADLINE:?}\n{}", more()))
                }
                None => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
    }

    /// Kills the day and fails the test with what it printed.
    fn fail(&mut self, what: &str) -> ! {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.seen.extend(self.lines.try_iter());
        panic!(
            "the simulated day: {what}\n--- stdout\n{}\n--- stderr\n{}",
            self.seen.join("\n"),
            self.stderr.lock().expect("stderr")
        );
    }
}

impl Drop for Day {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `child`'s stdout on a thread: each line to `lines` as it comes.
pub(crate) fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line starting with `prefix`; returns every line up to it.
pub(crate) fn until_line(lines: &std::sync::mpsc::Receiver<String>, prefix: &str) -> Vec<String> {
    let mut seen = Vec::new();
    if let Err(e) = lines_until(
        lines,
        prefix,
        &mut seen,
        std::time::Duration::from_secs(300),
    ) {
        panic!("no line starting {prefix:?} ({e}) after {seen:?}");
    }
    seen
}

/// Moves lines from `lines` to `seen` until one starts with `prefix`, for
/// at most `within`.
fn lines_until(
    lines: &std::sync::mpsc::Receiver<String>,
    prefix: &str,
    seen: &mut Vec<String>,
    within: std::time::Duration,
) -> Result<(), std::sync::mpsc::RecvTimeoutError> {
    let until = std::time::Instant::now() + within;
    loop {
        let line =
            lines.recv_timeout(until.saturating_duration_since(std::time::Instant::now()))?;
        let done = line.starts_with(prefix);
        seen.push(line);
        if done {
            return Ok(());
        }
    }
}

/// The test broker's address (`make test` starts one on loopback).
pub(crate) fn test_broker() -> String {
    std::env::var("THRESHOLD_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "THRESHOLD_TEST_KAFKA is not set: this test needs a Kafka broker; \
             `make test` starts one on loopback"
        )
    })
}

/// A free port on loopback.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The totals line of a report's first table: (attempts, delivered).
pub(crate) fn totals(report: &str) -> (u64, u64) {
    let line = report
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap_or_else(|| panic!("no total in {report}"));
    let n: Vec<&str> = line.split_whitespace().collect();
    (
        n[2].parse().expect("attempts"),
        n[5].parse().expect("delivered"),
    )
}

/// `request` sent now on a simulation server's clock (`serve --simulation`
/// takes the time a handheld stream is sent at from it).
pub(crate) fn sent_now<T>(request: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(request);
    r.metadata_mut().insert(
        threshold_api::SIMULATED_TIME_HEADER,
        chrono::Utc::now().to_rfc3339().parse().expect("ascii"),
    );
    r
}

/// The day's routes planned through the served server's PlanningService:
/// every planned parcel with its driver, whose handheld may report on it.
pub(crate) async fn plan_day(server: &Served) -> std::collections::BTreeMap<String, String> {
    threshold_testkit::fixtures::plan_day(
        server.channel(threshold_auth::Role::Planner).await,
        server.channel(threshold_auth::Role::Handheld).await,
        threshold_testkit::fixtures::day(),
    )
    .await
}

/// Requests a webhook receiver got, in arrival order: headers and body.
pub(crate) type Got = std::sync::Arc<std::sync::Mutex<Vec<(hyper::HeaderMap, bytes::Bytes)>>>;

/// A receiver on 127.0.0.1:0 answering 200 to everything; its address.
pub(crate) fn receiver(rt: &tokio::runtime::Runtime) -> (std::net::SocketAddr, Got) {
    receiver_answering(rt, 200)
}

/// A receiver on 127.0.0.1:0 answering `status` to everything.
pub(crate) fn receiver_answering(
    rt: &tokio::runtime::Runtime,
    status: u16,
) -> (std::net::SocketAddr, Got) {
    use http_body_util::BodyExt as _;
    let got: Got = std::sync::Arc::default();
    let g = std::sync::Arc::clone(&got);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let g = std::sync::Arc::clone(&g);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let g = std::sync::Arc::clone(&g);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            g.lock().expect("got").push((parts.headers, body));
                            let mut answer = hyper::Response::new(http_body_util::Full::new(
                                bytes::Bytes::new(),
                            ));
                            *answer.status_mut() =
                                hyper::StatusCode::from_u16(status).expect("a status");
                            Ok::<_, std::convert::Infallible>(answer)
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, got)
}
