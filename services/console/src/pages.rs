//! The pages, their CSV, and who may see which.
//!
//! Every handler starts from [`signed_in`] (no session, no page) and then
//! asks [`Scope`] what the principal may see: a planner their depot(s), an
//! analyst their country (or every one, tenant `*`); a request for anything
//! else is refused with 403 before any model is read.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use threshold_auth::{ANY_TENANT, Principal, Role};
use threshold_domain::{Country, pb};
use threshold_projections::{Dimension, Filter, PlannableParcel, ReportRow};
use threshold_routing::matrix::{Point, great_circle_m};

use crate::session::{SESSION_TTL, Session, same};
use crate::svg::{self, LonLat, Series, View};
use crate::{Console, esc};

/// One number of a report row, as charted.
type Metric = fn(&ReportRow) -> f64;
/// One number of a report row, as a table shows it.
type Shown = fn(&ReportRow) -> String;

/// The session cookie's name.
const COOKIE: &str = "threshold_session";

pub(crate) fn routes() -> Router<Console> {
    Router::new()
        .route("/", get(index))
        .route("/signin", get(signin_page).post(signin_token))
        .route("/signout", post(signout))
        .route("/codes", post(new_code))
        .route("/depot/{depot}", get(depot_page))
        .route("/depot/{depot}/stops.csv", get(stops_csv))
        .route("/depot/{depot}/replan", post(replan))
        .route(
            "/depot/{depot}/manifest",
            post(upload).layer(axum::extract::DefaultBodyLimit::max(crate::MAX_UPLOAD)),
        )
        .route("/parcel", get(parcel_page))
        .route("/analytics", get(analytics_page))
        .route("/analytics/daily.csv", get(daily_csv))
        .route("/analytics/hours.csv", get(hours_csv))
        .route("/report.csv", get(report_csv))
}

/// A refusal, as the browser sees it.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = if self.0 == StatusCode::UNAUTHORIZED {
            format!("<p class=err>{}</p>{}", esc(&self.1), signin_form_html())
        } else {
            format!(
                "<p class=err>{}</p><p><a href=\"/\">Back</a></p>",
                esc(&self.1)
            )
        };
        html(self.0, "Refused", &body)
    }
}

fn forbidden(why: impl Into<String>) -> Refused {
    Refused(StatusCode::FORBIDDEN, why.into())
}

fn bad(why: impl Into<String>) -> Refused {
    Refused(StatusCode::BAD_REQUEST, why.into())
}

/// Headers every answer carries: nothing cached, no referrer (a sign-in
/// link must not leak), no script, no framing.
fn harden(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: header::HeaderName, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(headers, header::CACHE_CONTROL, "no-store");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.2em 2em;color:#222}\
table{border-collapse:collapse;margin:.5em 0 1.2em}td,th{border-bottom:1px solid #ddd;padding:2px 8px;text-align:right}\
td:first-child,th:first-child{text-align:left}.err{color:#b00020;font-weight:600}\
nav{margin-bottom:1em}nav a,nav form{margin-right:1em;display:inline}h2{margin-top:1.4em}\
.kpi{display:inline-block;margin-right:2em}.kpi b{font-size:1.4em;display:block}\
.map{background:#eaf2fb;border:1px solid #bcd}.side{display:flex;gap:2em}small{color:#666}";

fn html(status: StatusCode, title: &str, body: &str) -> Response {
    let page = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>{} · Threshold</title>\
         <style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    );
    let mut r = (status, page).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    harden(r.headers_mut());
    r
}

fn csv(name: &str, body: String) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    harden(r.headers_mut());
    r
}

fn redirect(to: &str, cookie: Option<String>) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    harden(r.headers_mut());
    r
}

/// The session cookie for session `id`; `Secure` when the browser reached
/// the console over HTTPS (see [`over_https`]).
fn session_cookie(id: &str, headers: &HeaderMap) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if over_https(headers) { "; Secure" } else { "" }
    )
}

/// Whether the browser's request reached the console over HTTPS: the
/// console speaks plain HTTP, on loopback or behind a TLS-terminating
/// proxy, which says so in `X-Forwarded-Proto` or `Forwarded`. A client
/// that claims it falsely only marks its own cookie.
fn over_https(headers: &HeaderMap) -> bool {
    let value = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
    };
    value("x-forwarded-proto").is_some_and(|p| p.split(',').next().map(str::trim) == Some("https"))
        || value("forwarded").is_some_and(|f| {
            f.split(',')
                .next()
                .into_iter()
                .flat_map(|first| first.split(';'))
                .any(|kv| kv.trim() == "proto=https")
        })
}

/// What a browser's `Sec-Fetch-Site` says of where a request came from:
/// `none` (typed, pasted, a bookmark, another application), `same-origin`,
/// `same-site` or `cross-site`; absent from older browsers and from
/// anything that is not a browser.
fn fetch_site(headers: &HeaderMap) -> Option<&str> {
    headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
}

/// Whether a form was posted from a page that is not this console's. A
/// sign-in from there would sign the browser in as whoever the other page
/// chose (login CSRF). `Sec-Fetch-Site` decides where the browser sends it
/// (every current one does): it must be `same-origin` (or `none`). Where it
/// does not, `Origin` decides: `null`, or an origin whose host is neither
/// the request's `Host` nor the `X-Forwarded-Host` a proxy set, is from
/// elsewhere (hosts compared without case and without the scheme's default
/// port). A client that sends neither header is not a browser, and nothing
/// is forged through it.
fn posted_from_elsewhere(headers: &HeaderMap) -> bool {
    if let Some(site) = fetch_site(headers) {
        return !matches!(site, "same-origin" | "none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Some((scheme, authority)) = origin.to_str().ok().and_then(|o| o.split_once("://")) else {
        return true;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => ":80",
        "https" => ":443",
        _ => return true,
    };
    let normal = |a: &str| {
        let a = a.trim().to_ascii_lowercase();
        a.strip_suffix(default_port).map(str::to_owned).unwrap_or(a)
    };
    let origin_host = normal(authority);
    let mut ours = [header::HOST.as_str(), "x-forwarded-host"]
        .into_iter()
        .filter_map(|h| headers.get(h).and_then(|v| v.to_str().ok()))
        .flat_map(|v| v.split(','))
        .map(normal)
        .peekable();
    // No host to compare with (HTTP/2 carries it elsewhere): nothing says
    // the origin is another.
    ours.peek().is_some() && !ours.any(|h| h == origin_host)
}

/// The session id the request's cookie names.
fn cookie_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// The request's session, or 401.
fn signed_in(console: &Console, headers: &HeaderMap) -> Result<Session, Refused> {
    let id = cookie_id(headers).ok_or_else(|| {
        Refused(
            StatusCode::UNAUTHORIZED,
            "Not signed in: paste your token, or open the sign-in link the server printed.".into(),
        )
    })?;
    let session = console.0.sessions.get(id).ok_or_else(|| {
        Refused(
            StatusCode::UNAUTHORIZED,
            "Your session is unknown or has expired: sign in again.".into(),
        )
    })?;
    // A session lasts as long as its credential: revoked, its token
    // replaced, or expired, it ends here.
    if let Some(lapse) = session.standing.lapse() {
        console.0.sessions.close(id);
        return Err(Refused(
            StatusCode::UNAUTHORIZED,
            format!("The credential you signed in with {lapse}: sign in again."),
        ));
    }
    Ok(session)
}

fn signin_form_html() -> String {
    "<h1>Threshold console</h1><form method=post action=\"/signin\">\
     <label>Token <input type=password name=token size=50 autocomplete=off></label> \
     <button>Sign in</button></form>\
     <p><small>The same bearer token as the CLI and gRPC; or open a one-time sign-in \
     link (<code>/signin?code=…</code>).</small></p>"
        .into()
}

fn nav(s: &Session) -> String {
    let mut links = String::new();
    match s.principal.role {
        Role::Planner => links.push_str(
            "<a href=\"/\">Depots</a><a href=\"/analytics\">Attempts</a>\
             <a href=\"/parcel\">Track a parcel</a>",
        ),
        _ => links
            .push_str("<a href=\"/analytics\">Attempts</a><a href=\"/parcel\">Track a parcel</a>"),
    }
    format!(
        "<nav>{links}<small>{} {} ({})</small> \
         <form method=post action=\"/signout\"><input type=hidden name=csrf value=\"{}\">\
         <button>Sign out</button></form></nav>",
        esc(s.principal.role.as_str()),
        esc(&s.principal.name),
        esc(&s.principal.tenant),
        esc(&s.csrf)
    )
}

#[derive(Deserialize)]
struct CodeQuery {
    code: Option<String>,
    /// Where to go once signed in: a path of this console, nothing else.
    next: Option<String>,
}

/// `next` when it is a path on this console; "/" otherwise, so that a
/// sign-in link cannot send anyone elsewhere.
fn local_path(next: Option<&str>) -> &str {
    match next {
        // A browser drops tabs and line breaks from a URL (`/\t/x` is
        // `//x`, another host), so no control character or space at all.
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains('\\')
                && !n.chars().any(|c| c.is_control() || c.is_whitespace())
                && n.len() <= 512 =>
        {
            n
        }
        _ => "/",
    }
}

/// A sign-in link. Opened as a browser opens what its user typed, pasted or
/// clicked in another application (`Sec-Fetch-Site: none`), or from the
/// console's own pages, it signs in at once. Followed from another site's
/// page, or fetched by something that is not a browser (a chat's link
/// preview), it only asks, naming whom it would sign in, and the code
/// stays unused: another site cannot sign a browser in as the credential it
/// chose, and a preview does not spend the code.
async fn signin_page(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(q): Query<CodeQuery>,
) -> Response {
    let Some(code) = q.code else {
        return html(StatusCode::OK, "Sign in", &signin_form_html());
    };
    let next = local_path(q.next.as_deref());
    let spent = || {
        Refused(
            StatusCode::UNAUTHORIZED,
            "This sign-in link is used, expired or unknown: ask for a new one.".into(),
        )
        .into_response()
    };
    if !matches!(fetch_site(&headers), Some("none" | "same-origin")) {
        let Some(who) = console.0.sessions.peek(&code) else {
            return spent();
        };
        let body = format!(
            "<h1>Threshold console</h1><p>Sign in as {} <b>{}</b> ({})?</p>\
             <form method=post action=\"/signin\"><input type=hidden name=code value=\"{}\">\
             <input type=hidden name=next value=\"{}\"><button>Sign in</button></form>\
             <p><small>If you did not ask for this link, close this page.</small></p>",
            esc(who.role.as_str()),
            esc(&who.name),
            esc(&who.tenant),
            esc(&code),
            esc(next)
        );
        return html(StatusCode::OK, "Sign in", &body);
    }
    match console.0.sessions.redeem(&code) {
        Some(id) => redirect(next, Some(session_cookie(&id, &headers))),
        None => spent(),
    }
}

/// The sign-in form: a token pasted in, or a link's code confirmed.
#[derive(Deserialize)]
struct SigninForm {
    token: Option<String>,
    code: Option<String>,
    next: Option<String>,
}

async fn signin_token(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(f): Form<SigninForm>,
) -> Response {
    if posted_from_elsewhere(&headers) {
        return forbidden(
            "A sign-in posted from another site's page is refused: sign in on the console's own page.",
        )
        .into_response();
    }
    if let Some(code) = f.code {
        return match console.0.sessions.redeem(&code) {
            Some(id) => redirect(
                local_path(f.next.as_deref()),
                Some(session_cookie(&id, &headers)),
            ),
            None => Refused(
                StatusCode::UNAUTHORIZED,
                "This sign-in link is used, expired or unknown: ask for a new one.".into(),
            )
            .into_response(),
        };
    }
    let token = f.token.unwrap_or_default();
    match console
        .0
        .auth
        .standing(Some(format!("Bearer {}", token.trim()).as_bytes()))
    {
        Ok(p) => redirect(
            "/",
            Some(session_cookie(&console.0.sessions.open(p), &headers)),
        ),
        Err(_) => Refused(StatusCode::UNAUTHORIZED, "Unknown token.".into()).into_response(),
    }
}

/// A fresh one-time sign-in path for the bearer of the request's token:
/// how a script opens the console in a browser without a token in a URL.
async fn new_code(State(console): State<Console>, headers: HeaderMap) -> Response {
    let header = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    match console.0.auth.standing(header) {
        // Only the roles the console serves sign in to it.
        Ok(p) if !matches!(p.principal().role, Role::Planner | Role::Analyst) => (
            StatusCode::FORBIDDEN,
            format!(
                "the console serves planners and analysts, not a {}",
                p.principal().role
            ),
        )
            .into_response(),
        Ok(p) => {
            let mut r = (StatusCode::OK, console.sign_in_path(p)).into_response();
            harden(r.headers_mut());
            r
        }
        Err(s) => (StatusCode::UNAUTHORIZED, s.message().to_owned()).into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn signout(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    let s = signed_in(&console, &headers)?;
    if !same(&f.csrf, &s.csrf) {
        return Err(forbidden(
            "The form's CSRF token does not match your session.",
        ));
    }
    if let Some(id) = cookie_id(&headers) {
        console.0.sessions.close(id);
    }
    Ok(redirect(
        "/signin",
        Some(format!(
            "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        )),
    ))
}

#[derive(Deserialize)]
struct ParcelQuery {
    id: Option<String>,
}

/// The longest parcel id the page looks up.
const MAX_PARCEL_ID: usize = 128;

/// Track and trace: one parcel's steps, for its depot's planner or an
/// analyst of its country. Anyone else's parcel is not found, like one
/// that does not exist.
async fn parcel_page(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(q): Query<ParcelQuery>,
) -> Result<Response, Refused> {
    let s = signed_in(&console, &headers)?;
    if !matches!(s.principal.role, Role::Planner | Role::Analyst) {
        return Err(forbidden(format!(
            "A {} credential tracks no parcels here: the console is the planners' and analysts'.",
            s.principal.role
        )));
    }
    let id = q.id.unwrap_or_default().trim().to_owned();
    if id.len() > MAX_PARCEL_ID {
        return Err(bad(format!(
            "A parcel id is at most {MAX_PARCEL_ID} bytes, not {}.",
            id.len()
        )));
    }
    let mut body = nav(&s);
    let _ = write!(
        body,
        "<h1>Track a parcel</h1><form method=get action=\"/parcel\">\
         <label>Parcel id <input name=id size=30 value=\"{}\"></label> \
         <button>Track</button></form>",
        esc(&id)
    );
    if id.is_empty() {
        return Ok(html(StatusCode::OK, "Track a parcel", &body));
    }
    let store = console.0.track.as_ref().ok_or_else(|| {
        Refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "This console keeps no track-and-trace model (its process runs no outcomes).".into(),
        )
    })?;
    let unreadable = |e: threshold_projections::StoreError| {
        tracing::warn!(error = %e, "track and trace could not be read");
        Refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "Track and trace could not be read: try again.".into(),
        )
    };
    // Anyone else's parcel after the same one lookup as a missing one.
    let summary = store.summary(&id).await.map_err(unreadable)?.filter(|t| {
        s.principal
            .may_follow_parcel(&t.partner, &t.depot, t.country.code())
    });
    let Some(summary) = summary else {
        let _ = write!(body, "<p class=err>No parcel {} to track.</p>", esc(&id));
        return Ok(html(StatusCode::NOT_FOUND, "Not found", &body));
    };
    let track = threshold_projections::ParcelTrack {
        events: store.steps(&id).await.map_err(unreadable)?,
        summary,
    };
    let t = &track.summary;
    let tz = t.country.tz();
    let _ = write!(
        body,
        "<h2 data-parcel=\"{id}\">{id}</h2><p><span class=kpi><b data-status>{status}</b>status</span>\
         <span class=kpi><b>{attempts}</b>attempts</span>\
         <span class=kpi><b>{day}</b>due</span><span class=kpi><b>{depot}</b>{country}</span>\
         <span class=kpi><b>{partner}</b>partner</span></p>\
         <table><tr><th>when ({country} time)</th><th>what</th><th>attempt</th><th>detail</th></tr>",
        id = esc(&t.parcel_id),
        status = esc(t.status.as_str()),
        attempts = t.attempts,
        day = t.day,
        depot = esc(&t.depot),
        country = t.country.code(),
        partner = esc(&t.partner),
    );
    for e in &track.events {
        let _ = write!(
            body,
            "<tr data-step=\"{m}\"><td>{at}</td><td>{m}</td><td>{attempt}</td><td>{detail}</td></tr>",
            at = e.occurred_at.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
            m = esc(e.milestone.as_str()),
            attempt = if e.attempt == 0 {
                String::new()
            } else {
                e.attempt.to_string()
            },
            detail = esc(&e.detail),
        );
    }
    body.push_str("</table>");
    Ok(html(StatusCode::OK, &t.parcel_id, &body))
}

/// The depots a planner may see: theirs, or every known one for `*`.
fn depots_of(console: &Console, p: &Principal) -> Vec<String> {
    if p.tenant != ANY_TENANT {
        return vec![p.tenant.clone()];
    }
    let mut depots: Vec<String> = console.0.fleets.depots.keys().cloned().collect();
    let known = console.0.models.depot_days().depots();
    depots.extend(known);
    depots.sort();
    depots.dedup();
    depots
}

async fn index(State(console): State<Console>, headers: HeaderMap) -> Result<Response, Refused> {
    let s = signed_in(&console, &headers)?;
    if s.principal.role != Role::Planner {
        return Ok(redirect("/analytics", None));
    }
    let mut body = nav(&s);
    body.push_str("<h1>Depots</h1><table><tr><th>depot</th><th>days with parcels</th></tr>");
    let days = console.0.models.depot_days();
    for d in depots_of(&console, &s.principal) {
        let mut links = String::new();
        for (day, n) in days.days_of(&d).iter().rev().take(14) {
            let _ = write!(
                links,
                "<a href=\"/depot/{0}?date={day}\">{day}</a> <small>({n})</small> ",
                esc(&d)
            );
        }
        let _ = write!(
            body,
            "<tr><td><a href=\"/depot/{0}\">{0}</a></td><td>{links}</td></tr>",
            esc(&d)
        );
    }
    body.push_str("</table>");
    Ok(html(StatusCode::OK, "Depots", &body))
}

#[derive(Deserialize, Default)]
struct DayQuery {
    date: Option<String>,
}

/// What a depot page shows, gathered under the models' locks and drawn
/// after.
struct DepotDay {
    depot: String,
    date: NaiveDate,
    country: Option<Country>,
    routes: Vec<VanRoute>,
    unplanned: Vec<Unplanned>,
    depot_at: Option<LonLat>,
}

/// A parcel of the day on no route, and why.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Unplanned {
    parcel_id: String,
    why: std::borrow::Cow<'static, str>,
    /// Whether `why` is the planner's own reason, from the log, rather
    /// than what the page infers.
    planners: bool,
}

struct VanRoute {
    route_id: String,
    vehicle_id: String,
    plan_version: u32,
    stops: Vec<Stop>,
    km: f64,
    hours: f64,
    utilisation: f64,
}

struct Stop {
    index: u32,
    parcels: Vec<String>,
    at: Option<LonLat>,
    arrival: Option<DateTime<Utc>>,
    departure: Option<DateTime<Utc>>,
    window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    granted: bool,
}

fn depot_day(
    console: &Console,
    s: &Session,
    depot: &str,
    q: &DayQuery,
) -> Result<DepotDay, Refused> {
    if s.principal.role != Role::Planner {
        return Err(forbidden(format!(
            "A {} credential sees no depot's routes: they are the planners'.",
            s.principal.role
        )));
    }
    if !s.principal.covers(depot) {
        return Err(forbidden(format!(
            "Your credential plans depot {:?}, not {depot:?}.",
            s.principal.tenant
        )));
    }
    let days = console.0.models.depot_days();
    let date = match q.date.as_deref().filter(|d| !d.is_empty()) {
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|e| bad(format!("date {d:?}: {e} (YYYY-MM-DD)")))?,
        None => days
            .days_of(depot)
            .last()
            .map(|(d, _)| *d)
            .unwrap_or_else(|| Utc::now().date_naive()),
    };
    let listed = days.parcels(depot, date);
    let parcels: HashMap<&str, &PlannableParcel> =
        listed.iter().map(|p| (p.parcel_id.as_str(), p)).collect();
    let fleet = console.0.fleets.of(depot);
    let depot_at = fleet
        .latitude
        .zip(fleet.longitude)
        .map(|(lat, lon)| LonLat { lon, lat });
    let routes_model = console.0.models.routes();
    let mut on_route = std::collections::HashSet::new();
    let mut routes = Vec::new();
    for r in routes_model.for_depot(depot, date) {
        if r.stops.is_empty() {
            continue;
        }
        let mut stops = Vec::new();
        let mut grams = 0u64;
        for st in &r.stops {
            let first = st.parcel_ids.first().and_then(|p| parcels.get(p.as_str()));
            let at = st
                .position
                .or_else(|| first.and_then(|p| p.position))
                .map(|g| LonLat {
                    lon: g.longitude,
                    lat: g.latitude,
                });
            for p in &st.parcel_ids {
                on_route.insert(p.clone());
                grams += parcels
                    .get(p.as_str())
                    .map_or(0, |p| u64::from(p.weight_grams));
            }
            let instant = |t: &Option<prost_types::Timestamp>| {
                t.as_ref()
                    .and_then(|t| threshold_domain::country::instant(t).ok())
            };
            stops.push(Stop {
                index: st.index,
                parcels: st.parcel_ids.clone(),
                at,
                arrival: instant(&st.planned_arrival),
                departure: instant(&st.planned_departure),
                window: first.and_then(|p| p.in_home()),
                granted: first.is_some_and(|p| p.granted()),
            });
        }
        let mut km = 0.0;
        let mut last = depot_at;
        for p in stops.iter().filter_map(|s| s.at).chain(depot_at) {
            if let Some(l) = last {
                km += great_circle_m(point(l), point(p)) / 1000.0;
            }
            last = Some(p);
        }
        let hours = match (
            stops.iter().find_map(|s| s.arrival),
            stops.iter().rev().find_map(|s| s.departure),
        ) {
            (Some(a), Some(b)) => (b - a).num_seconds() as f64 / 3600.0,
            _ => 0.0,
        };
        routes.push(VanRoute {
            route_id: r.route_id.clone(),
            vehicle_id: r.vehicle_id.clone(),
            plan_version: r.plan_version,
            stops,
            km,
            hours,
            utilisation: if fleet.capacity_kg > 0.0 {
                grams as f64 / 1000.0 / fleet.capacity_kg
            } else {
                0.0
            },
        });
    }
    let planned = !routes.is_empty();
    // The planner's reason when the log has one for this day (a parcel on
    // no route of the latest plan was left out by it); else inferred.
    let mut unplanned: Vec<Unplanned> = parcels
        .values()
        .filter(|p| !on_route.contains(&p.parcel_id))
        .map(|p| {
            let (why, planners) = if let Some(l) = &p.left_out {
                (l.reason.clone().into(), true)
            } else if p.position.is_none() {
                (
                    "no position: the manifest row had none, or the address was erased".into(),
                    false,
                )
            } else if !planned {
                ("the day is not planned yet".into(), false)
            } else {
                (
                    "left out by the plan: no van could fit it (capacity, shift or in-home window)"
                        .into(),
                    false,
                )
            };
            Unplanned {
                parcel_id: p.parcel_id.clone(),
                why,
                planners,
            }
        })
        .collect();
    unplanned.sort();
    Ok(DepotDay {
        depot: depot.to_owned(),
        date,
        country: parcels.values().next().map(|p| p.country),
        routes,
        unplanned,
        depot_at,
    })
}

fn point(p: LonLat) -> Point {
    Point {
        latitude: p.lat,
        longitude: p.lon,
    }
}

fn local(country: Option<Country>, t: Option<DateTime<Utc>>) -> String {
    match (country, t) {
        (Some(c), Some(t)) => t.with_timezone(&c.tz()).format("%H:%M").to_string(),
        (None, Some(t)) => t.format("%H:%MZ").to_string(),
        _ => "–".into(),
    }
}

async fn depot_page(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(depot): Path<String>,
    Query(q): Query<DayQuery>,
) -> Result<Response, Refused> {
    let s = signed_in(&console, &headers)?;
    let d = depot_day(&console, &s, &depot, &q)?;
    let c = d.country;
    let mut body = nav(&s);
    let stops: usize = d.routes.iter().map(|r| r.stops.len()).sum();
    let km: f64 = d.routes.iter().map(|r| r.km).sum();
    let hours: f64 = d.routes.iter().map(|r| r.hours).sum();
    let _ = write!(
        body,
        "<h1>{} · {}</h1><form method=get><label>Day <input name=date value=\"{}\"></label> \
         <button>Show</button></form>\
         <p><span class=kpi><b data-kpi=vans>{}</b>vans</span><span class=kpi><b data-kpi=stops>{stops}</b>stops</span>\
         <span class=kpi><b data-kpi=km>{km:.1}</b>km</span><span class=kpi><b data-kpi=hours>{hours:.1}</b>van-hours</span>\
         <span class=kpi><b data-kpi=unplanned>{}</b>unplanned</span></p>",
        esc(&d.depot),
        d.date,
        d.date,
        d.routes.len(),
        d.unplanned.len()
    );
    if console.0.replan.is_some() {
        let _ = write!(
            body,
            "<form method=post action=\"/depot/{}/replan\"><input type=hidden name=csrf value=\"{}\">\
             <input type=hidden name=date value=\"{}\"><button>Replan this day</button> \
             <small>plans the day again from the log; the result shows what moved</small></form>",
            esc(&d.depot),
            esc(&s.csrf),
            d.date
        );
    }
    if console.0.upload.is_some() {
        let _ = write!(
            body,
            "<form method=post enctype=multipart/form-data action=\"/depot/{}/manifest\">\
             <input type=hidden name=csrf value=\"{}\"><label>Manifest (CSV) \
             <input type=file name=manifest accept=\".csv,text/csv\"></label> \
             <button>Upload</button></form>",
            esc(&d.depot),
            esc(&s.csrf)
        );
    }
    body.push_str(&map_svg(&d));
    body.push_str(
        "<h2>Vans</h2><table><tr><th>route</th><th>van</th><th>plan</th><th>stops</th>\
         <th>km</th><th>hours</th><th>utilisation</th></tr>",
    );
    for (i, r) in d.routes.iter().enumerate() {
        let _ = write!(
            body,
            "<tr><td><span style=\"color:{}\">■</span> {}</td><td>{}</td><td>v{}</td><td>{}</td>\
             <td>{:.1}</td><td>{:.1}</td><td>{:.0}%</td></tr>",
            svg::PALETTE[i % svg::PALETTE.len()],
            esc(&r.route_id),
            esc(&r.vehicle_id),
            r.plan_version,
            r.stops.len(),
            r.km,
            r.hours,
            r.utilisation * 100.0
        );
    }
    let _ = write!(
        body,
        "</table><p><a href=\"/depot/{}/stops.csv?date={}\">Stops as CSV</a></p>",
        esc(&d.depot),
        d.date
    );
    body.push_str("<h2>Stops</h2>");
    for r in &d.routes {
        let _ = write!(
            body,
            "<h3>{}</h3><table><tr><th>#</th><th>parcels</th><th>arrival</th><th>departure</th>\
             <th>in-home window</th></tr>",
            esc(&r.route_id)
        );
        for st in &r.stops {
            let window = match st.window {
                Some((a, b)) => format!(
                    "{}–{}{}",
                    local(c, Some(a)),
                    local(c, Some(b)),
                    if st.granted { " (grant)" } else { " (booked)" }
                ),
                None => "doorstep".into(),
            };
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                st.index + 1,
                esc(&st.parcels.join(" ")),
                local(c, st.arrival),
                local(c, st.departure),
                window
            );
        }
        body.push_str("</table>");
    }
    let _ = write!(
        body,
        "<h2>Unplanned parcels ({})</h2><table><tr><th>parcel</th><th>why</th></tr>",
        d.unplanned.len()
    );
    for u in &d.unplanned {
        // The planner's reason is text from the log: escaped like any.
        let _ = write!(
            body,
            "<tr><td>{}</td><td{}>{}</td></tr>",
            esc(&u.parcel_id),
            if u.planners { " data-why=planner" } else { "" },
            esc(&u.why)
        );
    }
    body.push_str("</table>");
    Ok(html(
        StatusCode::OK,
        &format!("{} {}", d.depot, d.date),
        &body,
    ))
}

#[derive(Deserialize)]
struct ReplanForm {
    csrf: String,
    date: String,
}

/// Plans a depot-day again and shows what moved.
async fn replan(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(depot): Path<String>,
    Form(f): Form<ReplanForm>,
) -> Result<Response, Refused> {
    let s = signed_in(&console, &headers)?;
    if !same(&f.csrf, &s.csrf) {
        return Err(forbidden(
            "The form's CSRF token does not match your session.",
        ));
    }
    if s.principal.role != Role::Planner || !s.principal.covers(&depot) {
        return Err(forbidden(format!(
            "Your credential plans depot {:?}, not {depot:?}.",
            s.principal.tenant
        )));
    }
    let date = NaiveDate::parse_from_str(&f.date, "%Y-%m-%d")
        .map_err(|e| bad(format!("date {:?}: {e} (YYYY-MM-DD)", f.date)))?;
    let Some(plan) = console.0.replan.clone() else {
        return Err(Refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "This server does not run the planning service.".into(),
        ));
    };
    let r = plan(s.principal.clone(), depot.clone(), date)
        .await
        .map_err(|e| Refused(StatusCode::BAD_GATEWAY, format!("Replanning failed: {e}")))?;
    let mut body = nav(&s);
    let _ = write!(
        body,
        "<h1>Replanned {} · {date}</h1>\
         <p><span class=kpi><b data-kpi=routes_changed>{}</b>routes changed</span>\
         <span class=kpi><b data-kpi=stops_kept>{}</b>stops kept on their van</span>\
         <span class=kpi><b data-kpi=stops_moved>{}</b>stops moved to another van</span>\
         <span class=kpi><b data-kpi=vans>{} / {}</b>vans used</span>\
         <span class=kpi><b data-kpi=km>{:.1}</b>km</span></p>\
         <h2>Unassigned ({})</h2><table><tr><th>parcel</th><th>reason</th></tr>",
        esc(&depot),
        r.routes_changed,
        r.stops_kept_on_van,
        r.stops_moved,
        r.vans_used,
        r.vans_available,
        r.km,
        r.unassigned.len()
    );
    for (p, why) in &r.unassigned {
        let _ = write!(body, "<tr><td>{}</td><td>{}</td></tr>", esc(p), esc(why));
    }
    let _ = write!(
        body,
        "</table><p><a href=\"/depot/{0}?date={date}\">Back to {0} on {date}</a></p>",
        esc(&depot)
    );
    Ok(html(
        StatusCode::OK,
        &format!("Replanned {depot} {date}"),
        &body,
    ))
}

/// A broken or oversized upload: 413 over [`crate::MAX_UPLOAD`], else 400.
fn upload_refused(what: &str, e: &axum::extract::multipart::MultipartError) -> Refused {
    let status = e.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Refused(
            status,
            format!(
                "{what}: the upload is over {} MiB",
                crate::MAX_UPLOAD / (1024 * 1024)
            ),
        )
    } else {
        Refused(status, format!("{what}: {}", e.body_text()))
    }
}

/// Loads an uploaded manifest and shows each refused row with its line,
/// field and message.
async fn upload(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(depot): Path<String>,
    mut form: axum::extract::Multipart,
) -> Result<Response, Refused> {
    let s = signed_in(&console, &headers)?;
    if s.principal.role != Role::Planner || !s.principal.covers(&depot) {
        return Err(forbidden(format!(
            "Your credential plans depot {:?}, not {depot:?}.",
            s.principal.tenant
        )));
    }
    // Before a byte of the body is read: one upload at a time per
    // credential and a few in all, each within a time.
    let _uploading = console.0.uploads.take(&s.principal.name).map_err(|_| {
        Refused(
            StatusCode::TOO_MANY_REQUESTS,
            "An upload of yours is still being read, or the server is reading as many as it \
             may: try again in a moment."
                .into(),
        )
    })?;
    let read = async {
        let (mut csrf, mut file) = (None, None);
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| upload_refused("the upload", &e))?
        {
            match field.name() {
                Some("csrf") => {
                    csrf = Some(field.text().await.map_err(|e| upload_refused("csrf", &e))?)
                }
                Some("manifest") => {
                    let name = field.file_name().unwrap_or("manifest.csv").to_owned();
                    let bytes = field
                        .bytes()
                        .await
                        .map_err(|e| upload_refused("the manifest file", &e))?;
                    file = Some((name, bytes.to_vec()));
                }
                _ => {}
            }
        }
        Ok::<_, Refused>((csrf, file))
    };
    let (csrf, file) = tokio::time::timeout(crate::UPLOAD_READ, read)
        .await
        .map_err(|_| {
            Refused(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "The upload did not arrive within {} s.",
                    crate::UPLOAD_READ.as_secs()
                ),
            )
        })??;
    if !csrf.is_some_and(|c| same(&c, &s.csrf)) {
        return Err(forbidden(
            "The form's CSRF token does not match your session.",
        ));
    }
    let (name, bytes) = file.ok_or_else(|| bad("No manifest file was chosen."))?;
    let Some(load) = console.0.upload.clone() else {
        return Err(Refused(
            StatusCode::SERVICE_UNAVAILABLE,
            "This server does not run the manifest service.".into(),
        ));
    };
    let id = name.trim_end_matches(".csv").to_owned();
    let r = load(s.principal.clone(), id, bytes)
        .await
        .map_err(|e| bad(format!("The manifest was refused: {e}")))?;
    let mut body = nav(&s);
    let _ = write!(
        body,
        "<h1>Manifest {}</h1><p><span class=kpi><b data-kpi=rows>{}</b>rows</span>\
         <span class=kpi><b data-kpi=accepted>{}</b>accepted</span>\
         <span class=kpi><b data-kpi=unchanged>{}</b>already loaded</span>\
         <span class=kpi><b data-kpi=refused>{}</b>refused</span></p>\
         <table><tr><th>line</th><th>field</th><th>message</th></tr>",
        esc(&r.manifest_id),
        r.rows,
        r.accepted,
        r.unchanged,
        r.refused.len()
    );
    for (line, field, message) in &r.refused {
        let _ = write!(
            body,
            "<tr><td>{line}</td><td>{}</td><td>{}</td></tr>",
            esc(field),
            esc(message)
        );
    }
    let _ = write!(
        body,
        "</table><p><a href=\"/depot/{0}\">Back to {0}</a></p>",
        esc(&depot)
    );
    Ok(html(StatusCode::OK, "Manifest", &body))
}

fn map_svg(d: &DepotDay) -> String {
    let mut points: Vec<LonLat> = d
        .routes
        .iter()
        .flat_map(|r| r.stops.iter().filter_map(|s| s.at))
        .collect();
    points.extend(d.depot_at);
    let Some(view) = View::of(&points, 900.0, 640.0) else {
        return "<p>No positions to draw.</p>".into();
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg class=map viewBox=\"0 0 {w:.0} {h:.0}\" width=\"{w:.0}\" height=\"{h:.0}\" role=img \
         aria-label=\"routes of {}\"><path d=\"{}\" fill=none stroke=\"#7a8a99\" stroke-width=\"1\"/>",
        esc(&d.depot),
        view.outlines(crate::map::rings()),
        w = view.w,
        h = view.h,
    );
    for (i, r) in d.routes.iter().enumerate() {
        let colour = svg::PALETTE[i % svg::PALETTE.len()];
        let mut path = String::new();
        for p in d
            .depot_at
            .iter()
            .copied()
            .chain(r.stops.iter().filter_map(|s| s.at))
            .chain(d.depot_at)
        {
            let (x, y) = view.xy(p);
            let _ = write!(
                path,
                "{}{x:.1},{y:.1}",
                if path.is_empty() { "M" } else { " L" }
            );
        }
        let _ = write!(
            s,
            "<path d=\"{path}\" fill=none stroke=\"{colour}\" stroke-width=1.5 opacity=\".8\"/>"
        );
        for st in &r.stops {
            let Some(p) = st.at else { continue };
            let (x, y) = view.xy(p);
            let title = format!(
                "{} stop {}: {} · {}–{}{}",
                r.route_id,
                st.index + 1,
                st.parcels.join(" "),
                local(d.country, st.arrival),
                local(d.country, st.departure),
                match st.window {
                    Some((a, b)) => format!(
                        " · in-home {}–{}{}",
                        local(d.country, Some(a)),
                        local(d.country, Some(b)),
                        if st.granted { " (grant)" } else { "" }
                    ),
                    None => String::new(),
                }
            );
            if st.window.is_some() {
                // In-home stops are squares, ringed black when a grant names them.
                let _ = write!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=8 height=8 fill=\"{colour}\" stroke=\"{}\" \
                     stroke-width=1.5><title>{}</title></rect>",
                    x - 4.0,
                    y - 4.0,
                    if st.granted { "#000" } else { "#fff" },
                    esc(&title)
                );
            } else {
                let _ = write!(
                    s,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=3 fill=\"{colour}\"><title>{}</title></circle>",
                    esc(&title)
                );
            }
        }
    }
    if let Some(p) = d.depot_at {
        let (x, y) = view.xy(p);
        let _ = write!(
            s,
            "<path d=\"M{:.1},{:.1} l7,12 h-14z\" fill=\"#000\"><title>depot {}</title></path>",
            x,
            y - 8.0,
            esc(&d.depot)
        );
    }
    s.push_str(
        "</svg><p><small>● doorstep stop · ■ in-home stop (black edge: under a resident's grant) \
         · ▲ depot · outlines: Natural Earth (public domain)</small></p>",
    );
    s
}

async fn stops_csv(
    State(console): State<Console>,
    headers: HeaderMap,
    Path(depot): Path<String>,
    Query(q): Query<DayQuery>,
) -> Result<Response, Refused> {
    let s = signed_in(&console, &headers)?;
    let d = depot_day(&console, &s, &depot, &q)?;
    let mut out = String::from(
        "route,vehicle,stop,parcels,planned_arrival,planned_departure,in_home_from,in_home_to,granted\n",
    );
    let rfc = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    for r in &d.routes {
        for st in &r.stops {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{}",
                csv_field(&r.route_id),
                csv_field(&r.vehicle_id),
                st.index + 1,
                csv_field(&st.parcels.join(" ")),
                rfc(st.arrival),
                rfc(st.departure),
                rfc(st.window.map(|w| w.0)),
                rfc(st.window.map(|w| w.1)),
                st.granted
            );
        }
    }
    Ok(csv(&format!("{}-{}-stops.csv", d.depot, d.date), out))
}

/// A CSV field, quoted when it must be, and never read as a formula by a
/// spreadsheet.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_owned()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The analytics query, as forms and links carry it.
#[derive(Deserialize, Default)]
struct AnalyticsQuery {
    country: Option<String>,
    depot: Option<String>,
    service: Option<String>,
    from: Option<String>,
    to: Option<String>,
    split: Option<String>,
    by: Option<String>,
}

fn given(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn service_of(s: &str) -> Result<pb::Service, Refused> {
    match s {
        "in_home" => Ok(pb::Service::InHome),
        "doorstep" => Ok(pb::Service::Doorstep),
        "locker" => Ok(pb::Service::Locker),
        "pickup_point" => Ok(pb::Service::PickupPoint),
        other => Err(bad(format!(
            "service {other:?} is not one of in_home, doorstep, locker, pickup_point"
        ))),
    }
}

/// The filter a principal asked for, narrowed to what it may see: a
/// planner's depot, an analyst's country. Asking for another is refused.
fn scope(p: &Principal, q: &AnalyticsQuery) -> Result<Filter, Refused> {
    let date = |s: &Option<String>, name: &str| {
        given(s)
            .map(|d| {
                NaiveDate::parse_from_str(d, "%Y-%m-%d")
                    .map_err(|e| bad(format!("{name} {d:?}: {e} (YYYY-MM-DD)")))
            })
            .transpose()
    };
    let mut f = Filter {
        country: given(&q.country)
            .map(|c| {
                c.parse::<Country>()
                    .map_err(|e| bad(format!("country {c:?}: {e}")))
            })
            .transpose()?,
        depot: given(&q.depot).map(str::to_owned),
        from: date(&q.from, "from")?,
        to: date(&q.to, "to")?,
        service: given(&q.service).map(service_of).transpose()?,
    };
    match p.role {
        Role::Analyst if p.tenant == ANY_TENANT => {}
        Role::Analyst => {
            let mine: Country = p.tenant.parse().map_err(|_| {
                forbidden(format!(
                    "Analyst credential {:?} names tenant {:?}, which is not a country.",
                    p.name, p.tenant
                ))
            })?;
            if f.country.is_some_and(|c| c != mine) {
                return Err(forbidden(format!(
                    "Your credential reads {}, not {}.",
                    mine.code(),
                    f.country.map_or("", |c| c.code())
                )));
            }
            f.country = Some(mine);
        }
        Role::Planner if p.tenant == ANY_TENANT => {}
        Role::Planner => {
            if f.depot.as_ref().is_some_and(|d| *d != p.tenant) {
                return Err(forbidden(format!(
                    "Your credential plans depot {:?}, not {:?}.",
                    p.tenant,
                    f.depot.as_deref().unwrap_or("")
                )));
            }
            f.depot = Some(p.tenant.clone());
        }
        other => {
            return Err(forbidden(format!(
                "A {other} credential reads no reports: they are the analysts' and planners'."
            )));
        }
    }
    Ok(f)
}

fn dimension(s: Option<&str>, default: Dimension) -> Result<Dimension, Refused> {
    s.map_or(Ok(default), |s| s.parse().map_err(bad))
}

/// The filter as a query string, for links to CSV and other splits.
fn query_string(f: &Filter, split: Dimension) -> String {
    let mut q = format!("split={}", split.as_str());
    if let Some(c) = f.country {
        let _ = write!(q, "&country={}", c.code());
    }
    if let Some(d) = &f.depot {
        let _ = write!(q, "&depot={}", url_escape(d));
    }
    if let Some(s) = f.service {
        let _ = write!(
            q,
            "&service={}",
            s.as_str_name()
                .trim_start_matches("SERVICE_")
                .to_ascii_lowercase()
        );
    }
    if let Some(d) = f.from {
        let _ = write!(q, "&from={d}");
    }
    if let Some(d) = f.to {
        let _ = write!(q, "&to={d}");
    }
    q
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const REPORT_HEADER: &str = "parcels,attempted,attempts,attempts_per_parcel,repeat_attempt_rate,first_attempt_success_rate,delivered,returned";

fn report_line(out: &mut String, first: &[&str], r: &ReportRow) {
    for f in first {
        out.push_str(&csv_field(f));
        out.push(',');
    }
    let _ = writeln!(
        out,
        "{},{},{},{},{},{},{},{}",
        r.parcels,
        r.attempted,
        r.attempts,
        r.attempts_per_parcel,
        r.repeat_attempt_rate,
        r.first_attempt_success_rate,
        r.delivered,
        r.returned
    );
}

/// `threshold report attempts --by BY` with the same filter, as CSV.
async fn report_csv(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(q): Query<AnalyticsQuery>,
) -> Result<Response, Refused> {
    let s = signed_in(&console, &headers)?;
    let f = scope(&s.principal, &q)?;
    let by = dimension(given(&q.by), Dimension::Country)?;
    let report = console.0.models.attempts().report(by, &f);
    let mut out = format!("{},{REPORT_HEADER}\n", by.as_str());
    for r in report.rows.iter().chain([&report.total]) {
        report_line(&mut out, &[&r.group], r);
    }
    Ok(csv(&format!("attempts-by-{}.csv", by.as_str()), out))
}

async fn daily_csv(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(q): Query<AnalyticsQuery>,
) -> Result<Response, Refused> {
    let s = signed_in(&console, &headers)?;
    let f = scope(&s.principal, &q)?;
    let split = dimension(given(&q.split), Dimension::Country)?;
    let series = console.0.models.attempts().daily(split, &f);
    let mut out = format!("{},day,{REPORT_HEADER}\n", split.as_str());
    for (name, rows) in &series {
        for r in rows {
            report_line(&mut out, &[name, &r.group], r);
        }
    }
    Ok(csv(&format!("daily-by-{}.csv", split.as_str()), out))
}

/// Failed attempts by the local hour they failed at, as CSV.
async fn hours_csv(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(q): Query<AnalyticsQuery>,
) -> Result<Response, Refused> {
    let s = signed_in(&console, &headers)?;
    let f = scope(&s.principal, &q)?;
    let hours = console.0.models.attempts().failures_by_hour(&f);
    let mut out = String::from("local_hour,failed_attempts\n");
    for (h, n) in hours.iter().enumerate() {
        let _ = writeln!(out, "{h},{n}");
    }
    Ok(csv("failures-by-hour.csv", out))
}

async fn analytics_page(
    State(console): State<Console>,
    headers: HeaderMap,
    Query(q): Query<AnalyticsQuery>,
) -> Result<Response, Refused> {
    let s = signed_in(&console, &headers)?;
    let f = scope(&s.principal, &q)?;
    let split = dimension(given(&q.split), Dimension::Country)?;
    if matches!(split, Dimension::Day | Dimension::Reason) {
        return Err(bad(
            "split must be one of country, depot, service, method, partner".to_owned(),
        ));
    }
    let (series, reasons, services, total, hours) = {
        let m = console.0.models.attempts();
        let services = m.report(Dimension::Service, &f);
        (
            m.daily(split, &f),
            m.report(Dimension::Reason, &f),
            services.rows,
            services.total,
            m.failures_by_hour(&f),
        )
    };
    let qs = query_string(&f, split);
    let mut body = nav(&s);
    body.push_str("<h1>Attempts per parcel</h1>");
    body.push_str(&filter_form(&f, split, &s.principal));
    let _ = write!(
        body,
        "<p><span class=kpi><b data-kpi=parcels>{}</b>parcels</span>\
         <span class=kpi><b data-kpi=attempts_per_parcel>{:.3}</b>attempts per parcel</span>\
         <span class=kpi><b data-kpi=repeat_attempt_rate>{:.1}%</b>repeat-attempt rate</span>\
         <span class=kpi><b data-kpi=first_attempt_success_rate>{:.1}%</b>first-attempt success</span></p>",
        total.parcels,
        total.attempts_per_parcel,
        total.repeat_attempt_rate * 100.0,
        total.first_attempt_success_rate * 100.0
    );

    // The largest series are drawn; the CSV has every one.
    let mut ranked: Vec<&(String, Vec<ReportRow>)> = series.iter().collect();
    ranked.sort_by_key(|(_, rows)| std::cmp::Reverse(rows.iter().map(|r| r.parcels).sum::<u64>()));
    ranked.truncate(svg::PALETTE.len());
    ranked.sort_by(|a, b| a.0.cmp(&b.0));
    let mut days: Vec<String> = series
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|r| r.group.clone()))
        .collect();
    days.sort();
    days.dedup();
    let charts: [(&str, Metric, bool); 3] = [
        ("Attempts per parcel", |r| r.attempts_per_parcel, false),
        ("Repeat-attempt rate", |r| r.repeat_attempt_rate, true),
        (
            "First-attempt success",
            |r| r.first_attempt_success_rate,
            true,
        ),
    ];
    for (title, value, percent) in charts {
        let drawn: Vec<Series<'_>> = ranked
            .iter()
            .map(|(name, rows)| Series {
                name,
                points: rows
                    .iter()
                    .filter(|r| r.attempted > 0)
                    .map(|r| (r.group.clone(), value(r)))
                    .collect(),
            })
            .collect();
        let _ = write!(
            body,
            "<h2>{title} per day, by {}</h2>{}<p><a href=\"/analytics/daily.csv?{}\">CSV</a>{}</p>",
            split.as_str(),
            svg::lines(title, &days, &drawn, percent),
            esc(&qs),
            if series.len() > ranked.len() {
                format!(
                    " <small>(the {} largest of {} drawn; the CSV has all)</small>",
                    ranked.len(),
                    series.len()
                )
            } else {
                String::new()
            }
        );
    }
    body.push_str("<p>Split by: ");
    for d in ["country", "depot", "service", "method", "partner"] {
        let mut alt = qs.clone();
        alt.replace_range(..alt.find('&').unwrap_or(alt.len()), &format!("split={d}"));
        let _ = write!(body, "<a href=\"/analytics?{}\">{d}</a> ", esc(&alt));
    }
    body.push_str("</p>");

    let mut ranked_reasons: Vec<(String, f64)> = reasons
        .rows
        .iter()
        .map(|r| (r.group.clone(), r.attempts as f64))
        .collect();
    ranked_reasons.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let _ = write!(
        body,
        "<h2>Failed attempts by reason</h2>{}<table><tr><th>reason</th><th>failed attempts</th></tr>",
        svg::bars("Failed attempts by reason", &ranked_reasons, false)
    );
    for (reason, n) in &ranked_reasons {
        let _ = write!(
            body,
            "<tr><td>{}</td><td data-reason=\"{0}\">{n}</td></tr>",
            esc(reason)
        );
    }
    let by_reason = qs.replacen(&format!("split={}", split.as_str()), "by=reason", 1);
    let _ = write!(
        body,
        "</table><p><a href=\"/report.csv?{}\">CSV</a></p>",
        esc(&by_reason)
    );

    let hour_bars: Vec<(String, f64)> = hours
        .iter()
        .enumerate()
        .map(|(h, n)| (format!("{h:02}:00"), *n as f64))
        .collect();
    let _ = write!(
        body,
        "<h2>Failed attempts by local hour</h2>{}<p><a href=\"/analytics/hours.csv?{}\">CSV</a></p>",
        svg::bars("Failed attempts by local hour", &hour_bars, false),
        esc(&qs)
    );

    body.push_str(
        "<h2>In-home and doorstep, side by side</h2><div class=side><table><tr><th></th>",
    );
    let pair: Vec<&ReportRow> = ["in_home", "doorstep"]
        .iter()
        .filter_map(|s| services.iter().find(|r| r.group == *s))
        .collect();
    for r in &pair {
        let _ = write!(body, "<th>{}</th>", esc(&r.group));
    }
    body.push_str("</tr>");
    let lines: [(&str, Shown); 6] = [
        ("parcels", |r| r.parcels.to_string()),
        ("attempts per parcel", |r| {
            format!("{:.3}", r.attempts_per_parcel)
        }),
        ("repeat-attempt rate", |r| {
            format!("{:.1}%", r.repeat_attempt_rate * 100.0)
        }),
        ("first-attempt success", |r| {
            format!("{:.1}%", r.first_attempt_success_rate * 100.0)
        }),
        ("delivered", |r| r.delivered.to_string()),
        ("returned", |r| r.returned.to_string()),
    ];
    for (name, value) in lines {
        let _ = write!(body, "<tr><td>{name}</td>");
        for r in &pair {
            let _ = write!(body, "<td>{}</td>", value(r));
        }
        body.push_str("</tr>");
    }
    let bars: Vec<(String, f64)> = pair
        .iter()
        .map(|r| (r.group.clone(), r.first_attempt_success_rate))
        .collect();
    let by_service = qs.replacen(&format!("split={}", split.as_str()), "by=service", 1);
    let _ = write!(
        body,
        "</table><div>{}</div></div><p><a href=\"/report.csv?{}\">CSV</a></p>",
        svg::bars("First-attempt success by service", &bars, true),
        esc(&by_service)
    );
    Ok(html(StatusCode::OK, "Attempts per parcel", &body))
}

fn filter_form(f: &Filter, split: Dimension, p: &Principal) -> String {
    let mut s = String::from("<form method=get action=\"/analytics\">");
    let mine_country = p.role == Role::Analyst && p.tenant != ANY_TENANT;
    s.push_str("<label>Country <select name=country>");
    if !mine_country {
        s.push_str("<option value=\"\">all</option>");
    }
    for c in Country::ALL {
        if mine_country && f.country != Some(c) {
            continue;
        }
        let _ = write!(
            s,
            "<option{}>{}</option>",
            if f.country == Some(c) {
                " selected"
            } else {
                ""
            },
            c.code()
        );
    }
    let _ = write!(
        s,
        "</select></label> <label>Depot <input name=depot size=8 value=\"{}\"></label> ",
        esc(f.depot.as_deref().unwrap_or(""))
    );
    s.push_str("<label>Service <select name=service><option value=\"\">all</option>");
    for name in ["in_home", "doorstep", "locker", "pickup_point"] {
        let selected = f
            .service
            .and_then(|x| service_of(name).ok().filter(|y| *y == x));
        let _ = write!(
            s,
            "<option{}>{name}</option>",
            if selected.is_some() { " selected" } else { "" }
        );
    }
    let date = |d: Option<NaiveDate>| d.map(|d| d.to_string()).unwrap_or_default();
    let _ = write!(
        s,
        "</select></label> <label>From <input name=from size=10 value=\"{}\"></label> \
         <label>To <input name=to size=10 value=\"{}\"></label> \
         <input type=hidden name=split value=\"{}\"><button>Show</button></form>",
        date(f.from),
        date(f.to),
        split.as_str()
    );
    s
}
