//! Attacks on the console over real HTTP on 127.0.0.1: each one refused.
//!
//! The console runs over an embedded log in a temporary directory, with
//! credentials written there as `threshold credentials add` writes them;
//! requests are plain HTTP/1.1 over a TCP socket, as a browser or a script
//! would send them.

use std::net::SocketAddr;
use std::sync::Arc;

use threshold_auth::{Authenticator, Credentials, Role};
use threshold_console::{Console, Models};
use threshold_domain::pb;
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog};
use threshold_privacy::Vault;
use threshold_projections::{SqliteTrackStore, TrackStore};
use threshold_routing::depot::Fleets;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An answer: status, headers (lower-case names) and body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The session cookie a sign-in set, as a `Cookie` header value.
    fn cookie(&self) -> String {
        let set = self.header("set-cookie").expect("a session cookie");
        set.split(';').next().expect("name=value").to_owned()
    }
}

/// Sends `request` (without the Host and Connection lines) and reads the answer.
async fn send(addr: SocketAddr, head: &str, body: &[u8]) -> Answer {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("{head}\r\nHost: {addr}\r\nConnection: close\r\n");
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write head");
    // A server may refuse before reading all of an oversized body.
    let _ = s.write_all(body).await;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Answer {
    let cookie = cookie
        .map(|c| format!("\r\nCookie: {c}"))
        .unwrap_or_default();
    send(addr, &format!("GET {path} HTTP/1.1{cookie}"), b"").await
}

/// A sign-in link opened as a browser opens what its user pasted or
/// clicked in another application: `Sec-Fetch-Site: none`.
async fn open_link(addr: SocketAddr, path: &str) -> Answer {
    send(
        addr,
        &format!("GET {path} HTTP/1.1\r\nSec-Fetch-Site: none"),
        b"",
    )
    .await
}

/// A sign-in form posted with `headers` (each line led by `\r\n`).
async fn post_signin(addr: SocketAddr, headers: &str, form: &[u8]) -> Answer {
    send(
        addr,
        &format!(
            "POST /signin HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded{headers}"
        ),
        form,
    )
    .await
}

async fn post_form(addr: SocketAddr, path: &str, cookie: Option<&str>, form: &[u8]) -> Answer {
    let cookie = cookie
        .map(|c| format!("\r\nCookie: {c}"))
        .unwrap_or_default();
    send(
        addr,
        &format!("POST {path} HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded{cookie}"),
        form,
    )
    .await
}

struct Running {
    addr: SocketAddr,
    console: Console,
    log: Arc<dyn EventLog>,
    track: Arc<dyn TrackStore>,
    tokens: std::collections::HashMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// A session cookie for credential `who`, by the one-time link.
    async fn sign_in(&self, who: &str) -> String {
        let path = self
            .console
            .sign_in_path_for_token(&self.tokens[who])
            .expect("a known token");
        let a = open_link(self.addr, &path).await;
        assert_eq!(a.status, 303, "{}", a.body);
        a.cookie()
    }
}

async fn start() -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut tokens = std::collections::HashMap::new();
    for (name, role, tenant) in [
        ("planner-sto", Role::Planner, "STO-1"),
        ("planner-cph", Role::Planner, "CPH-1"),
        ("analyst-se", Role::Analyst, "SE"),
        ("analyst-dk", Role::Analyst, "DK"),
        ("courier", Role::Handheld, "driver-1"),
    ] {
        tokens.insert(
            name,
            Credentials::add(dir.path(), name, role, tenant).expect("credential"),
        );
    }
    let log = EmbeddedLog::open(dir.path().join("log"), EmbeddedOptions::default()).expect("log");
    let log: Arc<dyn EventLog> = Arc::new(log);
    let vault = Arc::new(Vault::open(dir.path().join("vault")).expect("vault"));
    let fleets = Fleets::from_json("depots.json", include_str!("../../../config/depots.json"))
        .expect("fleets");
    let track: Arc<dyn TrackStore> =
        Arc::new(SqliteTrackStore::open(&dir.path().join("track.sqlite")).expect("track store"));
    tokio::spawn(threshold_projections::track::follow(
        Arc::clone(&log),
        Arc::clone(&track),
        "console-test".into(),
    ));
    let console = Console::new(
        Models::follow(Arc::clone(&log), vault),
        fleets,
        Authenticator::new(dir.path()),
    )
    .with_track(Arc::clone(&track));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (addr, _task) = console
        .clone()
        .spawn(listener, std::future::pending())
        .expect("serve");
    Running {
        addr,
        console,
        log,
        track,
        tokens,
        _dir: dir,
    }
}

#[tokio::test]
async fn a_planner_of_one_depot_is_refused_another_depot_s_pages() {
    let c = start().await;
    let sto = c.sign_in("planner-sto").await;
    let own = get(c.addr, "/depot/STO-1", Some(&sto)).await;
    assert_eq!(own.status, 200, "{}", own.body);
    for path in [
        "/depot/CPH-1",
        "/depot/CPH-1/stops.csv",
        "/analytics?depot=CPH-1",
        "/report.csv?by=reason&depot=CPH-1",
        "/analytics/daily.csv?depot=CPH-1",
    ] {
        let a = get(c.addr, path, Some(&sto)).await;
        assert_eq!(a.status, 403, "{path}: {}", a.body);
        assert!(a.body.contains("STO-1"), "{path} says why: {}", a.body);
    }
}

#[tokio::test]
async fn an_analyst_of_one_country_is_refused_another_s_and_every_depot_map() {
    let c = start().await;
    let se = c.sign_in("analyst-se").await;
    let own = get(c.addr, "/analytics?country=SE", Some(&se)).await;
    assert_eq!(own.status, 200, "{}", own.body);
    for path in [
        "/analytics?country=DK",
        "/report.csv?by=reason&country=DK",
        "/analytics/daily.csv?country=DK",
        "/depot/STO-1",
    ] {
        let a = get(c.addr, path, Some(&se)).await;
        assert_eq!(a.status, 403, "{path}: {}", a.body);
    }
    // A handheld reads neither.
    let courier = c.sign_in("courier").await;
    for path in ["/analytics", "/depot/STO-1"] {
        assert_eq!(
            get(c.addr, path, Some(&courier)).await.status,
            403,
            "{path}"
        );
    }
}

#[tokio::test]
async fn no_cookie_and_a_forged_cookie_are_refused() {
    let c = start().await;
    for path in ["/", "/depot/STO-1", "/analytics", "/report.csv?by=reason"] {
        let a = get(c.addr, path, None).await;
        assert_eq!(a.status, 401, "{path}");
        let forged = format!("threshold_session={}", "ab".repeat(32));
        assert_eq!(get(c.addr, path, Some(&forged)).await.status, 401, "{path}");
    }
    // A real session's cookie, one digit changed, is no session.
    let real = c.sign_in("planner-sto").await;
    let mut forged = real.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).expect("ascii");
    assert_eq!(get(c.addr, "/depot/STO-1", Some(&forged)).await.status, 401);
    assert_eq!(get(c.addr, "/depot/STO-1", Some(&real)).await.status, 200);
}

#[tokio::test]
async fn a_sign_in_code_works_once_and_the_cookie_is_http_only_and_strict() {
    let c = start().await;
    let path = c
        .console
        .sign_in_path_for_token(&c.tokens["planner-sto"])
        .expect("known token");
    let first = open_link(c.addr, &path).await;
    assert_eq!(first.status, 303);
    let set = first.header("set-cookie").expect("cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let id = first.cookie();
    assert_eq!(id.len(), "threshold_session=".len() + 64, "256 random bits");
    let replay = open_link(c.addr, &path).await;
    assert_eq!(replay.status, 401, "a replayed code: {}", replay.body);
    assert!(replay.header("set-cookie").is_none());
    // A sign-in link leads only to this console's own pages.
    for (next, to) in [
        ("/analytics", "/analytics"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        // Browsers drop a tab from a URL: `/\t/evil.example` is `//evil.example`.
        ("/%09/evil.example", "/"),
        ("/%20/evil.example", "/"),
    ] {
        let path = c
            .console
            .sign_in_path_for_token(&c.tokens["planner-sto"])
            .expect("known token");
        let a = open_link(c.addr, &format!("{path}&next={next}")).await;
        assert_eq!(a.header("location"), Some(to), "next={next}");
    }
    // An unknown token signs no one in.
    let a = post_form(c.addr, "/signin", None, b"token=not-a-token").await;
    assert_eq!(a.status, 401);
    assert!(c.console.sign_in_path_for_token("not-a-token").is_none());
}

#[tokio::test]
async fn a_post_without_the_session_s_csrf_token_is_refused() {
    let c = start().await;
    let cookie = c.sign_in("planner-sto").await;
    let a = post_form(c.addr, "/signout", Some(&cookie), b"csrf=0000").await;
    assert_eq!(a.status, 403, "{}", a.body);
    // Still signed in.
    assert_eq!(get(c.addr, "/depot/STO-1", Some(&cookie)).await.status, 200);
}

/// The CSRF token a page's forms carry.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=csrf value=\"").expect("a form") + "name=csrf value=\"".len();
    page[at..].split('"').next().expect("value").to_owned()
}

#[tokio::test]
async fn a_replan_needs_the_session_s_csrf_token_and_the_planner_s_own_depot() {
    let c = start().await;
    let sto = c.sign_in("planner-sto").await;
    let page = get(c.addr, "/depot/STO-1", Some(&sto)).await;
    let csrf = csrf_of(&page.body);
    assert_eq!(csrf.len(), 64);
    let forged = post_form(
        c.addr,
        "/depot/STO-1/replan",
        Some(&sto),
        b"csrf=00&date=2026-11-23",
    )
    .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    let other = post_form(
        c.addr,
        "/depot/CPH-1/replan",
        Some(&sto),
        format!("csrf={csrf}&date=2026-11-23").as_bytes(),
    )
    .await;
    assert_eq!(other.status, 403, "{}", other.body);
    // Another session's token is not this one's.
    let cph = c.sign_in("planner-cph").await;
    let a = post_form(
        c.addr,
        "/depot/CPH-1/replan",
        Some(&cph),
        format!("csrf={csrf}&date=2026-11-23").as_bytes(),
    )
    .await;
    assert_eq!(a.status, 403, "{}", a.body);
    // No cookie at all.
    let a = post_form(
        c.addr,
        "/depot/STO-1/replan",
        None,
        format!("csrf={csrf}&date=2026-11-23").as_bytes(),
    )
    .await;
    assert_eq!(a.status, 401);
}

/// A multipart upload of `file` with `csrf`.
fn upload_form(csrf: &str, file: &[u8]) -> Vec<u8> {
    let mut form = format!(
        "--b0undary\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n\
         --b0undary\r\nContent-Disposition: form-data; name=\"manifest\"; filename=\"m.csv\"\r\n\r\n"
    )
    .into_bytes();
    form.extend_from_slice(file);
    form.extend_from_slice(b"\r\n--b0undary--\r\n");
    form
}

async fn post_upload(addr: SocketAddr, path: &str, cookie: &str, form: &[u8]) -> Answer {
    send(
        addr,
        &format!(
            "POST {path} HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=b0undary\r\nCookie: {cookie}"
        ),
        form,
    )
    .await
}

#[tokio::test]
async fn a_manifest_upload_is_refused_for_another_depot_without_csrf_or_oversized() {
    let c = start().await;
    let sto = c.sign_in("planner-sto").await;
    let csrf = csrf_of(&get(c.addr, "/depot/STO-1", Some(&sto)).await.body);
    let small = b"parcel_id\nx\n";
    let other = post_upload(
        c.addr,
        "/depot/CPH-1/manifest",
        &sto,
        &upload_form(&csrf, small),
    )
    .await;
    assert_eq!(other.status, 403, "{}", other.body);
    let forged = post_upload(
        c.addr,
        "/depot/STO-1/manifest",
        &sto,
        &upload_form("00", small),
    )
    .await;
    assert_eq!(forged.status, 403, "{}", forged.body);
    let big = vec![b'a'; threshold_console::MAX_UPLOAD + 1];
    let over = post_upload(
        c.addr,
        "/depot/STO-1/manifest",
        &sto,
        &upload_form(&csrf, &big),
    )
    .await;
    assert_eq!(over.status, 413, "{}", over.body);
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let c = start().await;
    let cookie = c.sign_in("planner-sto").await;
    let big = vec![b'a'; threshold_console::MAX_BODY + 1];
    let mut form = b"token=".to_vec();
    form.extend_from_slice(&big);
    let a = post_form(c.addr, "/signin", None, &form).await;
    assert_eq!(a.status, 413, "{}", a.body);
    let mut form = b"csrf=".to_vec();
    form.extend_from_slice(&big);
    let a = post_form(c.addr, "/signout", Some(&cookie), &form).await;
    assert_eq!(a.status, 413, "{}", a.body);
}

/// Manifests `parcel` of nordshop at `depot` in `country`, left out by a
/// plan for `reason`, and waits until track and trace has it.
async fn left_out(c: &Running, parcel: &str, country: pb::Country, depot: &str, reason: &str) {
    use chrono::{NaiveDate, Utc};
    use threshold_domain::parcel::{Command, Parcel};
    use threshold_domain::{EventId, ParcelId, StreamId};
    let day = NaiveDate::from_ymd_opt(2026, 11, 23).expect("date");
    let stream = StreamId::parcel(&ParcelId::new(parcel).expect("id"));
    let manifested = pb::ParcelManifested {
        parcel_id: parcel.into(),
        partner_id: "nordshop".into(),
        country: country as i32,
        depot_id: depot.into(),
        delivery_date: Some(threshold_domain::country::date_to_proto(day)),
        service: pb::Service::Doorstep as i32,
        weight_grams: 1200,
        ..Default::default()
    };
    for command in [
        Command::Manifest(Box::new(manifested)),
        Command::LeaveOut {
            date: day,
            reason: reason.into(),
            planned_at: Utc::now(),
            placed_since: false,
        },
    ] {
        threshold_log::decide::<Parcel>(&*c.log, &stream, &command, |_| {
            (EventId::new(), Utc::now())
        })
        .await
        .expect("parcel command");
    }
    for _ in 0..400 {
        if c.track
            .summary(parcel)
            .await
            .expect("summary")
            .is_some_and(|s| s.version == 2)
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("track and trace never had {parcel}");
}

#[tokio::test]
async fn a_parcel_is_tracked_only_by_its_depot_s_planner_and_its_country_s_analyst() {
    let c = start().await;
    left_out(
        &c,
        "SE-1",
        pb::Country::Se,
        "STO-1",
        "more than any van <b>carries</b>",
    )
    .await;
    left_out(&c, "DK-1", pb::Country::Dk, "CPH-1", "no van").await;

    let sto = c.sign_in("planner-sto").await;
    let own = get(c.addr, "/parcel?id=SE-1", Some(&sto)).await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert!(
        own.body.contains("<b data-status>left_out</b>"),
        "{}",
        own.body
    );
    assert!(
        own.body.contains("data-step=\"manifested\""),
        "{}",
        own.body
    );
    assert!(
        own.body
            .contains("more than any van &lt;b&gt;carries&lt;/b&gt;"),
        "the planner's reason, escaped: {}",
        own.body
    );
    assert!(!own.body.contains("<b>carries"), "{}", own.body);
    let se = c.sign_in("analyst-se").await;
    assert_eq!(get(c.addr, "/parcel?id=SE-1", Some(&se)).await.status, 200);

    // Another depot's parcel, another country's, one that does not exist:
    // the same answer.
    let dk = c.sign_in("analyst-dk").await;
    for (cookie, path) in [
        (&sto, "/parcel?id=DK-1"),
        (&sto, "/parcel?id=NOPE-1"),
        (&dk, "/parcel?id=SE-1"),
        (&se, "/parcel?id=DK-1"),
    ] {
        let a = get(c.addr, path, Some(cookie)).await;
        assert_eq!(a.status, 404, "{path}: {}", a.body);
        assert!(a.body.contains("No parcel"), "{path}: {}", a.body);
        assert!(!a.body.contains("data-status"), "{path}: {}", a.body);
    }
    let id = "x".repeat(129);
    let long = get(c.addr, &format!("/parcel?id={id}"), Some(&sto)).await;
    assert_eq!(long.status, 400, "{}", long.body);
    let courier = c.sign_in("courier").await;
    assert_eq!(
        get(c.addr, "/parcel?id=SE-1", Some(&courier)).await.status,
        403
    );
    assert_eq!(get(c.addr, "/parcel?id=SE-1", None).await.status, 401);
    // An id is text on the page, never markup.
    let odd = get(c.addr, "/parcel?id=%3Cscript%3E", Some(&sto)).await;
    assert_eq!(odd.status, 404);
    assert!(!odd.body.contains("<script>"), "{}", odd.body);
}

/// A session lasts as long as its credential: revoked, the browser signed
/// in with it is refused at its next page, and a code issued before the
/// revocation signs no one in.
#[tokio::test]
async fn a_revoked_credentials_sessions_and_codes_end_with_it() {
    let c = start().await;
    let cookie = c.sign_in("planner-sto").await;
    assert_eq!(get(c.addr, "/depot/STO-1", Some(&cookie)).await.status, 200);
    let code = c
        .console
        .sign_in_path_for_token(&c.tokens["planner-sto"])
        .expect("known token");
    assert!(
        threshold_auth::FileCredentials::new(c._dir.path())
            .remove("planner-sto")
            .expect("revoked")
    );
    // Added again under its name, role and tenant with a new token (how a
    // stolen token is replaced): the old token's session is still over.
    let fresh = Credentials::add(c._dir.path(), "planner-sto", Role::Planner, "STO-1")
        .expect("added again");
    let refused = get(c.addr, "/depot/STO-1", Some(&cookie)).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let path = c
        .console
        .sign_in_path_for_token(&fresh)
        .expect("the new token");
    let renewed = open_link(c.addr, &path).await.cookie();
    assert_eq!(
        get(c.addr, "/depot/STO-1", Some(&renewed)).await.status,
        200
    );
    let redeemed = open_link(c.addr, &code).await;
    let cookie = redeemed.header("set-cookie").map(|_| redeemed.cookie());
    assert!(
        cookie.is_none() || get(c.addr, "/depot/STO-1", cookie.as_deref()).await.status == 401,
        "a code from before the revocation signed someone in"
    );
    // Another credential's session goes on.
    let other = c.sign_in("planner-cph").await;
    assert_eq!(get(c.addr, "/depot/CPH-1", Some(&other)).await.status, 200);
}

/// A planner cannot hold the server's upload reads: while one upload of
/// its credential stalls half sent, another of the same credential is
/// refused at once (429) before its body is read; another planner
/// uploads meanwhile, and once the stalled one is gone the first planner
/// uploads again.
#[tokio::test]
async fn a_stalled_upload_holds_one_place_and_only_its_credentials() {
    let c = start().await;
    let sto = c.sign_in("planner-sto").await;
    let csrf = csrf_of(&get(c.addr, "/depot/STO-1", Some(&sto)).await.body);
    let form = upload_form(&csrf, b"parcel_id\nx\n");
    // Half a form, and the connection kept open.
    let mut stalled = tokio::net::TcpStream::connect(c.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /depot/STO-1/manifest HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; \
         boundary=b0undary\r\nCookie: {sto}\r\nContent-Length: {}\r\n\r\n",
        c.addr,
        form.len()
    );
    stalled.write_all(head.as_bytes()).await.expect("head");
    stalled
        .write_all(&form[..form.len() / 2])
        .await
        .expect("half the body");
    let mut refused = None;
    for _ in 0..100 {
        let a = post_upload(c.addr, "/depot/STO-1/manifest", &sto, &form).await;
        if a.status == 429 {
            refused = Some(a);
            break;
        }
        // The stalled one may not have reached the handler yet.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let refused = refused.expect("a second upload refused while the first stalls");
    assert!(refused.body.contains("try again"), "{}", refused.body);
    let cph = c.sign_in("planner-cph").await;
    let cph_csrf = csrf_of(&get(c.addr, "/depot/CPH-1", Some(&cph)).await.body);
    let theirs = post_upload(
        c.addr,
        "/depot/CPH-1/manifest",
        &cph,
        &upload_form(&cph_csrf, b"parcel_id\nx\n"),
    )
    .await;
    assert_ne!(theirs.status, 429, "{}", theirs.body);
    drop(stalled);
    let mut again = None;
    for _ in 0..100 {
        let a = post_upload(c.addr, "/depot/STO-1/manifest", &sto, &form).await;
        if a.status != 429 {
            again = Some(a);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        again.is_some(),
        "the stalled upload's place was not given back"
    );
}

/// `POST /codes` gives a sign-in path only to the roles the console
/// serves: a courier's token gets none.
#[tokio::test]
async fn a_sign_in_code_is_given_to_planners_and_analysts_only() {
    let c = start().await;
    let ask = |who: &str| {
        format!(
            "POST /codes HTTP/1.1\r\nAuthorization: Bearer {}",
            c.tokens[who]
        )
    };
    let courier = send(c.addr, &ask("courier"), b"").await;
    assert_eq!(courier.status, 403, "{}", courier.body);
    assert!(!courier.body.contains("code="), "{}", courier.body);
    for who in ["planner-sto", "analyst-se"] {
        let a = send(c.addr, &ask(who), b"").await;
        assert_eq!(a.status, 200, "{who}: {}", a.body);
        assert!(a.body.starts_with("/signin?code="), "{who}: {}", a.body);
    }
}

/// Another site's page cannot sign a browser in as a credential it chose
/// (login CSRF): a sign-in link followed from it only asks, naming whom it
/// signs in, and spends nothing; a sign-in posted from it is refused. A
/// chat's link preview (no browser headers) spends no code either.
#[tokio::test]
async fn another_site_cannot_sign_a_browser_in_and_a_preview_spends_no_code() {
    let c = start().await;
    let path = c
        .console
        .sign_in_path_for_token(&c.tokens["planner-cph"])
        .expect("known token");
    let code = path.split_once("code=").expect("a code").1.to_owned();
    for (how, extra) in [
        ("from another site", "\r\nSec-Fetch-Site: cross-site"),
        ("from a sibling site", "\r\nSec-Fetch-Site: same-site"),
        ("by a link preview", ""),
    ] {
        let a = send(
            c.addr,
            &format!("GET {path}&next=/depot/CPH-1 HTTP/1.1{extra}"),
            b"",
        )
        .await;
        assert_eq!(a.status, 200, "{how}: {}", a.body);
        assert!(a.header("set-cookie").is_none(), "{how}: signed in");
        assert!(
            a.body.contains("planner <b>planner-cph</b> (CPH-1)"),
            "{how}: says whom it signs in: {}",
            a.body
        );
        assert!(a.body.contains(&format!("value=\"{code}\"")), "{how}");
    }
    // The user confirms on the console's own page: one session, once.
    let origin = format!(
        "\r\nOrigin: http://{}\r\nSec-Fetch-Site: same-origin",
        c.addr
    );
    let confirm = format!("code={code}&next=%2Fdepot%2FCPH-1");
    let signed = post_signin(c.addr, &origin, confirm.as_bytes()).await;
    assert_eq!(signed.status, 303, "{}", signed.body);
    assert_eq!(signed.header("location"), Some("/depot/CPH-1"));
    let cookie = signed.cookie();
    assert_eq!(get(c.addr, "/depot/CPH-1", Some(&cookie)).await.status, 200);
    assert_eq!(
        post_signin(c.addr, &origin, confirm.as_bytes())
            .await
            .status,
        401,
        "once"
    );
    assert_eq!(open_link(c.addr, &path).await.status, 401, "spent");

    // Posted from another site's page: refused, with a token or a code.
    let fresh = c
        .console
        .sign_in_path_for_token(&c.tokens["planner-cph"])
        .expect("known token");
    let fresh_code = fresh.split_once("code=").expect("a code").1.to_owned();
    let token = format!("token={}", c.tokens["planner-cph"]);
    for (how, headers) in [
        (
            "another origin",
            "\r\nOrigin: https://evil.example".to_owned(),
        ),
        ("an opaque origin", "\r\nOrigin: null".to_owned()),
        (
            "a look-alike origin",
            format!("\r\nOrigin: http://{}.evil.example", c.addr),
        ),
        (
            "another site, no origin",
            "\r\nSec-Fetch-Site: cross-site".to_owned(),
        ),
    ] {
        for form in [token.clone(), format!("code={fresh_code}")] {
            let a = post_signin(c.addr, &headers, form.as_bytes()).await;
            assert_eq!(a.status, 403, "{how}: {}", a.body);
            assert!(a.header("set-cookie").is_none(), "{how}");
        }
    }
    // The refused posts spent nothing: the code still signs in, from here.
    assert_eq!(open_link(c.addr, &fresh).await.status, 303);

    // Behind a proxy that rewrites Host, the console's own page still
    // signs in: by Sec-Fetch-Site where the browser sends it, else by an
    // Origin matching X-Forwarded-Host (no case, no default port).
    for (how, headers) in [
        (
            "a proxy, a current browser",
            "\r\nOrigin: https://console.carrier.example\r\nSec-Fetch-Site: same-origin",
        ),
        (
            "a proxy, an older browser",
            "\r\nOrigin: https://Console.Carrier.Example:443\r\nX-Forwarded-Host: console.carrier.example",
        ),
    ] {
        let a = post_signin(c.addr, headers, token.as_bytes()).await;
        assert_eq!(a.status, 303, "{how}: {}", a.body);
    }
    let elsewhere = post_signin(
        c.addr,
        "\r\nOrigin: https://evil.example\r\nX-Forwarded-Host: console.carrier.example",
        token.as_bytes(),
    )
    .await;
    assert_eq!(elsewhere.status, 403, "behind a proxy, another origin");
}

/// Behind a TLS-terminating proxy the session cookie is `Secure`.
#[tokio::test]
async fn the_session_cookie_is_secure_behind_an_https_proxy() {
    let c = start().await;
    for (proxy, secure) in [
        ("X-Forwarded-Proto: https", true),
        (
            "Forwarded: for=192.0.2.60;proto=https;by=203.0.113.43",
            true,
        ),
        ("X-Forwarded-Proto: http", false),
    ] {
        let path = c
            .console
            .sign_in_path_for_token(&c.tokens["planner-sto"])
            .expect("known token");
        let a = send(
            c.addr,
            &format!("GET {path} HTTP/1.1\r\nSec-Fetch-Site: none\r\n{proxy}"),
            b"",
        )
        .await;
        assert_eq!(a.status, 303, "{proxy}: {}", a.body);
        let set = a.header("set-cookie").expect("a cookie");
        assert_eq!(set.ends_with("; Secure"), secure, "{proxy}: {set}");
    }
}
