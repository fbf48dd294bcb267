//! The web console of `threshold serve --console`: over a simulated day,
//! its numbers equal `threshold report attempts` for the same filter, and
//! headless Chromium loads each page, finds the numbers on it and saves a
//! screenshot under `target/console-shots/`.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::*;
use threshold_auth::{LocalTokens, Role};

/// A `threshold serve --console` child, stopped when dropped.
struct Console {
    child: Child,
    grpc: String,
    addr: String,
    data: std::path::PathBuf,
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Console {
    fn start(data: &Path) -> Self {
        let mut child = Command::new(BIN)
            .args(["serve", "--simulation", "--listen", "127.0.0.1:0"])
            .args(["--console", "127.0.0.1:0", "--data"])
            .arg(data)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let lines = lines_of(&mut child);
        let seen = until_line(&lines, "threshold serving on");
        let word_after = |prefix: &str| {
            seen.iter()
                .find_map(|l| l.strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no {prefix:?} in {seen:?}"))
                .to_owned()
        };
        let addr = word_after("console on http://")
            .trim_end_matches('/')
            .to_owned();
        let grpc = format!("http://{}", word_after("threshold serving on "));
        assert!(
            seen.iter()
                .any(|l| l.contains("planner: http://") && l.contains("/signin?code=")),
            "a sign-in link is printed: {seen:?}"
        );
        Console {
            child,
            grpc,
            addr,
            data: data.to_path_buf(),
        }
    }

    /// `METHOD PATH` with `headers`; the status and body.
    fn http(&self, head: &str, headers: &str) -> (u16, String) {
        let (status, _, body) = self.http_full(head, headers);
        (status, body)
    }

    /// `METHOD PATH` with `headers`; the status, head and body.
    fn http_full(&self, head: &str, headers: &str) -> (u16, String, String) {
        let mut s = std::net::TcpStream::connect(&self.addr).expect("connect");
        let body = headers.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let headers = headers.split_once("\r\n\r\n").map_or(headers, |(h, _)| h);
        let headers = if headers.is_empty() || headers.ends_with("\r\n") {
            headers.to_owned()
        } else {
            format!("{headers}\r\n")
        };
        write!(
            s,
            "{head} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n{body}",
            self.addr,
            body.len()
        )
        .expect("write");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read");
        let (h, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = h
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, h.to_owned(), body.to_owned())
    }

    fn token(&self, role: Role) -> String {
        LocalTokens::load(&self.data)
            .expect("local tokens")
            .token(role)
            .expect("token")
            .to_owned()
    }

    /// A fresh one-time sign-in URL for `role`'s local token, leading to `next`.
    fn sign_in_url(&self, role: Role, next: &str) -> String {
        let (status, path) = self.http(
            "POST /codes",
            &format!("Authorization: Bearer {}\r\n", self.token(role)),
        );
        assert_eq!(status, 200, "{path}");
        format!("http://{}{path}&next={next}", self.addr)
    }

    /// `path` as `role`, signed in by a fresh link: its body.
    fn page(&self, role: Role, path: &str) -> String {
        let cookie = self.cookie(role);
        let (status, body) = self.http(&format!("GET {path}"), &format!("Cookie: {cookie}\r\n"));
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// A session cookie for `role`, by a fresh sign-in link.
    fn cookie(&self, role: Role) -> String {
        let url = self.sign_in_url(role, "/");
        let signin = url.split_once(&self.addr).expect("path").1;
        // Opened as a browser opens a link pasted from a terminal.
        let (status, head, _) =
            self.http_full(&format!("GET {signin}"), "Sec-Fetch-Site: none\r\n");
        assert_eq!(status, 303, "{head}");
        head.lines()
            .find_map(|l| l.strip_prefix("set-cookie: "))
            .and_then(|c| c.split(';').next())
            .unwrap_or_else(|| panic!("no cookie in {head}"))
            .to_owned()
    }
}

/// `threshold report attempts --by BY --json [extra]` against the server.
fn report(c: &Console, by: &str, extra: &[&str]) -> serde_json::Value {
    let data = c.data.to_str().expect("path");
    let mut args = vec!["report", "attempts", "--by", by, "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--server", &c.grpc, "--data", data]);
    let out = threshold(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// The console's CSV as rows of (group, the eight numbers as text).
fn csv_rows(body: &str) -> Vec<Vec<String>> {
    body.lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect()
}

/// The report's rows and total in the CSV's order and form.
fn report_rows(r: &serde_json::Value, by: &str) -> Vec<Vec<String>> {
    let rows = r["rows"].as_array().expect("rows");
    rows.iter()
        .chain([&r["total"]])
        .map(|row| {
            let mut v = vec![row[by].as_str().expect("group").to_owned()];
            for k in [
                "parcels",
                "attempted",
                "attempts",
                "attempts_per_parcel",
                "repeat_attempt_rate",
                "first_attempt_success_rate",
                "delivered",
                "returned",
            ] {
                v.push(row[k].to_string());
            }
            v
        })
        .collect()
}

/// The same groups and counts, and rates equal to 1e-12 (the server's
/// report and the console sum the same counters, not always in one order).
fn same_numbers(a: &[Vec<String>], b: &[Vec<String>]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter().zip(y).all(|(u, v)| {
                    u == v
                        || matches!((u.parse::<f64>(), v.parse::<f64>()),
                            (Ok(p), Ok(q)) if (p - q).abs() < 1e-12)
                })
        })
}

#[test]
fn the_console_shows_the_report_s_numbers_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let out = Command::new(BIN)
        .args([
            "run",
            "--demo",
            "--days",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--seed",
            "12",
            "--data",
        ])
        .arg(&data)
        .output()
        .expect("run --demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = Console::start(&data);

    // Every split and filter: the console's CSV equals the CLI's report,
    // once the console's read model has read the log (it follows it).
    let cases: [(&str, &str, &[&str]); 7] = [
        ("country", "", &[]),
        ("depot", "", &[]),
        ("service", "&country=SE", &["--country", "SE"]),
        ("method", "", &[]),
        ("partner", "&depot=STO-1", &["--depot", "STO-1"]),
        ("reason", "&service=doorstep", &["--service", "doorstep"]),
        ("day", "&country=NO", &["--country", "NO"]),
    ];
    for (by, query, flags) in cases {
        let want = report_rows(&report(&c, by, flags), by);
        assert!(want.len() > 1, "{by}: the day has rows");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = csv_rows(&c.page(Role::Analyst, &format!("/report.csv?by={by}{query}")));
            if same_numbers(&got, &want) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{by}: console {got:?} != report {want:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // Failures by local hour add up to the report's failed attempts by reason.
    let reasons = report(&c, "reason", &[]);
    let failed: u64 = reasons["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| r["attempts"].as_u64().expect("attempts"))
        .sum();
    let by_hour: u64 = csv_rows(&c.page(Role::Analyst, "/analytics/hours.csv"))
        .iter()
        .map(|r| r[1].parse::<u64>().expect("count"))
        .sum();
    assert!(failed > 0);
    assert_eq!(by_hour, failed, "failures by hour");

    // The analytics page's headline equals the report's total.
    let total = &report(&c, "country", &[])["total"];
    let parcels = total["parcels"].as_u64().expect("parcels");
    let page = c.page(Role::Analyst, "/analytics");
    assert!(
        page.contains(&format!("<b data-kpi=parcels>{parcels}</b>")),
        "{parcels} parcels on the page"
    );

    // Copenhagen's depot (on the coast, so the map has outlines), else the
    // depot with most parcels: its stops on the map and in the CSV.
    let depots = report(&c, "depot", &[]);
    let rows = depots["rows"].as_array().expect("rows");
    let depot = rows
        .iter()
        .find(|r| r["depot"] == "CPH-1")
        .or_else(|| rows.iter().max_by_key(|r| r["parcels"].as_u64()))
        .and_then(|r| r["depot"].as_str())
        .expect("a depot")
        .to_owned();
    let stops_csv = c.page(Role::Planner, &format!("/depot/{depot}/stops.csv"));
    let stops = stops_csv.lines().count() - 1;
    assert!(stops > 0, "{depot} has stops: {stops_csv}");
    let page = c.page(Role::Planner, &format!("/depot/{depot}"));
    assert!(
        page.contains(&format!("<b data-kpi=stops>{stops}</b>")),
        "{depot}: {stops} stops"
    );

    // Replanning the day shows what moved: every planned stop either kept
    // its van or moved.
    let cookie = c.cookie(Role::Planner);
    let (_, page) = c.http(
        &format!("GET /depot/{depot}"),
        &format!("Cookie: {cookie}\r\n"),
    );
    let at = page.find("name=csrf value=\"").expect("a form") + "name=csrf value=\"".len();
    let csrf = page[at..].split('"').next().expect("csrf");
    let date = page
        .split("name=date value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("date");
    let (status, moved) = c.http(
        &format!("POST /depot/{depot}/replan"),
        &format!(
            "Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\ncsrf={csrf}&date={date}"
        ),
    );
    assert_eq!(status, 200, "{moved}");
    let number = |kpi: &str| -> usize {
        let at = moved.find(&format!("data-kpi={kpi}>")).expect(kpi) + kpi.len() + 10;
        moved[at..]
            .split('<')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("a number")
    };
    assert_eq!(
        number("stops_kept") + number("stops_moved"),
        stops,
        "{moved}"
    );

    browser(&c, &depot, parcels, stops);

    // A manifest upload shows each refused row with its line, field and
    // message, and loads the rest.
    let good = "SE-STO-1-UPLOAD,hemmabutiken,SE,STO-1,2026-11-24,Sveavägen 25,165 71,Stockholm,59.34403,18.03572,locker,0.7,,";
    let bad = good
        .replace("SE-STO-1-UPLOAD", "SE-STO-1-UPLOAD2")
        .replace(",0.7,", ",heavy,");
    let header = std::fs::read_to_string(samples().join("2026-11-23-se.csv"))
        .expect("sample")
        .lines()
        .next()
        .expect("header")
        .to_owned();
    let file = format!("{header}\n{good}\n{bad}\n");
    let cookie = c.cookie(Role::Planner);
    let (_, page) = c.http("GET /depot/STO-1", &format!("Cookie: {cookie}\r\n"));
    let at = page.find("name=csrf value=\"").expect("a form") + "name=csrf value=\"".len();
    let csrf = page[at..].split('"').next().expect("csrf");
    let boundary = "console-test-boundary";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"manifest\"; filename=\"upload-test.csv\"\r\n\
         Content-Type: text/csv\r\n\r\n{file}\r\n--{boundary}--\r\n"
    );
    let (status, loaded) = c.http(
        "POST /depot/STO-1/manifest",
        &format!(
            "Cookie: {cookie}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\r\n{form}"
        ),
    );
    assert_eq!(status, 200, "{loaded}");
    assert!(loaded.contains("<b data-kpi=accepted>1</b>"), "{loaded}");
    assert!(loaded.contains("<b data-kpi=refused>1</b>"), "{loaded}");
    assert!(
        loaded.contains("<tr><td>3</td><td>weight_kg</td>"),
        "{loaded}"
    );
}

/// Chromium, installed if missing (Debian's package); `None` when it
/// cannot be.
fn chromium() -> Option<String> {
    let found = || {
        ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .map(str::to_owned)
    };
    if let Some(p) = found() {
        return Some(p);
    }
    let _ = Command::new("apt-get")
        .args(["install", "-y", "chromium"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    found()
}

fn browser(c: &Console, depot: &str, parcels: u64, stops: usize) {
    let Some(chromium) = chromium() else {
        eprintln!(
            "SKIPPED the browser part: no chromium at /usr/bin/chromium and \
             `apt-get install -y chromium` could not install it"
        );
        return;
    };
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target")
        .join("console-shots");
    std::fs::create_dir_all(&shots).expect("shots dir");
    // Chromium, started beside the rest of the suite on two busy cores, now
    // and then exits failed before loading anything (stderr holding only
    // its complaints about the missing D-Bus); such a start is tried again,
    // twice at most, and a run that never succeeds fails with every
    // attempt's stderr. What a page holds is asserted on the run that
    // succeeded, never retried.
    let run = |extra: &[String], url: &str| {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let profile = tempfile::tempdir().expect("profile");
            let out = Command::new(&chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--hide-scrollbars",
                ])
                .arg(format!("--user-data-dir={}", profile.path().display()))
                .args(extra)
                .arg(url)
                .output()
                .expect("run chromium");
            if out.status.success() {
                if !failures.is_empty() {
                    eprintln!(
                        "chromium failed {} time(s) before it ran:\n{}",
                        failures.len(),
                        failures.join("\n---\n")
                    );
                }
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            failures.push(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        panic!("chromium failed 3 times:\n{}", failures.join("\n---\n"));
    };
    let pages = [
        (
            Role::Analyst,
            "/analytics%3Fsplit%3Dcountry".to_owned(),
            "analytics",
            format!("data-kpi=\"parcels\">{parcels}<"),
        ),
        (
            Role::Planner,
            format!("/depot/{depot}"),
            "depot",
            format!("data-kpi=\"stops\">{stops}<"),
        ),
    ];
    for (role, path, name, number) in pages {
        let dom = run(&["--dump-dom".to_owned()], &c.sign_in_url(role, &path));
        assert!(
            dom.contains(&number),
            "{name}: {number} in the page Chromium loaded"
        );
        assert!(dom.contains("<svg"), "{name}: a chart or a map");
        // Every drawn path was parsed as closed: none holds other shapes
        // (a lost `/>` hides everything after it).
        for (i, _) in dom.match_indices("<path") {
            let rest = &dom[i..];
            let inner = &rest[rest.find('>').map_or(0, |e| e + 1)..];
            assert!(
                inner.starts_with("</path>") || inner.starts_with("<title>"),
                "{name}: a path holds {}",
                &inner[..inner.len().min(80)]
            );
        }
        assert!(dom.contains("<circle"), "{name}: points drawn");
        let file = shots.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&file);
        run(
            &[
                format!("--screenshot={}", file.display()),
                "--window-size=1280,900".to_owned(),
            ],
            &c.sign_in_url(role, &path),
        );
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 10_000, "{name}: a screenshot at {}", file.display());
    }
}
