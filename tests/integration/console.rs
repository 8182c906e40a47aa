//! The admin console over HTTP: who can sign in, the session cookie, the
//! CSRF check of every form, expiry, revocation and sign-out, and that a
//! refused form writes nothing. The browser drives the pages themselves in
//! `browser.rs`.

use std::time::Duration;

use events::event::TokenScope;
use rollcall::state::ServerConfig;

use crate::scim::Scim;
use crate::util::{Skew, TestServer};

/// A browser without a browser: keeps the console's cookies, follows no
/// redirects, reads CSRF tokens out of forms.
pub(crate) struct Visitor<'s> {
    server: &'s TestServer,
    client: reqwest::Client,
    cookies: Vec<(String, String)>,
    /// Sent with every request (a proxy's `X-Forwarded-Proto`, say).
    headers: Vec<(&'static str, &'static str)>,
}

pub(crate) struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub html: String,
}

impl Page {
    /// The value of the first hidden `csrf` field.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.html.find(marker).expect("a csrf field") + marker.len();
        let end = self.html[start..].find('"').unwrap();
        self.html[start..start + end].to_owned()
    }
}

impl<'s> Visitor<'s> {
    pub(crate) fn new(server: &'s TestServer) -> Visitor<'s> {
        let client = {
            rollcall::webhooks::deliver::install_tls_provider();
            reqwest::Client::builder()
        }
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
        Visitor { server, client, cookies: Vec::new(), headers: Vec::new() }
    }

    /// A visitor behind a TLS-terminating proxy.
    pub(crate) fn behind_https_proxy(server: &'s TestServer) -> Visitor<'s> {
        Visitor { headers: vec![("x-forwarded-proto", "https")], ..Visitor::new(server) }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .request(method, self.server.url(path))
            .header("cookie", self.cookie_header());
        for (name, value) in &self.headers {
            request = request.header(*name, *value);
        }
        request
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let location =
            response.headers().get("location").map(|value| value.to_str().unwrap().to_owned());
        let set_cookies: Vec<String> = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|value| value.to_str().unwrap().to_owned())
            .collect();
        for line in &set_cookies {
            let pair = line.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.retain(|(kept, _)| kept != name);
            if !value.is_empty() && !line.contains("Max-Age=0") {
                self.cookies.push((name.to_owned(), value.to_owned()));
            }
        }
        let html = response.text().await.unwrap();
        Page { status, location, set_cookies, html }
    }

    pub(crate) async fn get(&mut self, path: &str) -> Page {
        let response = self.request(reqwest::Method::GET, path).send().await.unwrap();
        self.finish(response).await
    }

    pub(crate) async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let response = self
            .request(reqwest::Method::POST, path)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(serde_urlencoded::to_string(fields).unwrap())
            .send()
            .await
            .unwrap();
        self.finish(response).await
    }

    /// Signs in with a token, as the sign-in form does.
    pub(crate) async fn sign_in(&mut self, secret: &str) -> Page {
        let form = self.get("/admin/sign-in").await;
        assert_eq!(form.status, 200);
        let csrf = form.csrf();
        self.post("/admin/sign-in", &[("csrf", &csrf), ("next", "/admin"), ("token", secret)]).await
    }

    pub(crate) fn has_session(&self) -> bool {
        self.cookies.iter().any(|(name, _)| name == "rollcall_session")
    }
}

async fn runs(server: &TestServer) -> u64 {
    server
        .store
        .read(|connection| {
            connection
                .query_row("SELECT count(*) FROM sync_runs", [], |row| row.get::<_, i64>(0))
                .map_err(|error| rollcall::error::Error::Internal(error.to_string()))
        })
        .unwrap() as u64
}

#[tokio::test]
async fn only_admin_tokens_sign_in_and_every_form_needs_the_session_csrf_token() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    let (_, audit) = server.token("acme", TokenScope::Audit).await;

    // No cookie: every page sends the browser to sign in, and back after.
    let mut visitor = Visitor::new(&server);
    let page = visitor.get("/admin/provisioning").await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/admin/sign-in?next=%2Fadmin%2Fprovisioning"));
    let page = visitor.post("/admin/provisioning/sync", &[("csrf", "x")]).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/admin/sign-in"));
    assert_eq!(visitor.get("/admin").await.location.as_deref(), Some("/admin/sign-in"));

    // A SCIM token cannot sign in; neither can a made-up one.
    let page = visitor.sign_in(&scim.token).await;
    assert_eq!(page.status, 403, "{}", page.html);
    assert!(page.html.contains("SCIM token"), "{}", page.html);
    assert!(!visitor.has_session());
    let page = visitor.sign_in("rc_not-a-token").await;
    assert_eq!(page.status, 401);
    assert!(!visitor.has_session());

    // The sign-in form itself is CSRF-protected (double submit).
    let mut stranger = Visitor::new(&server);
    let page = stranger.post("/admin/sign-in", &[("csrf", "guess"), ("token", &admin)]).await;
    assert_eq!(page.status, 403);
    assert!(!stranger.has_session());

    // An admin token signs in: an HttpOnly, SameSite=Strict cookie.
    let page = visitor.sign_in(&admin).await;
    assert_eq!(page.status, 303, "{}", page.html);
    assert_eq!(page.location.as_deref(), Some("/admin"));
    let cookie =
        page.set_cookies.iter().find(|line| line.starts_with("rollcall_session=")).unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP on loopback: {cookie}");
    let response = visitor
        .client
        .get(server.url("/admin/provisioning"))
        .header("cookie", visitor.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/html; charset=utf-8");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'self'")
    );
    let page = visitor.get("/admin/provisioning").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("User Provisioning"));
    assert!(page.html.contains("/scim/v2"), "the Tenant URL is shown");
    assert_eq!(page.set_cookies.len(), 0);

    // A form without the session's CSRF token is 403 and writes nothing.
    let csrf = page.csrf();
    let head = server.log_head();
    let refused = visitor.post("/admin/provisioning/sync", &[]).await;
    assert_eq!(refused.status, 403);
    let refused = visitor.post("/admin/provisioning/sync", &[("csrf", "0123")]).await;
    assert_eq!(refused.status, 403);
    assert_eq!(server.log_head(), head, "refused forms append nothing");
    assert_eq!(runs(&server).await, 0);
    let done = visitor.post("/admin/provisioning/sync", &[("csrf", &csrf)]).await;
    assert_eq!(done.status, 303, "{}", done.html);
    assert!(done.location.unwrap().starts_with("/admin/provisioning/syncs/"));
    assert_eq!(runs(&server).await, 1);

    // Bad input is a page with a message, and writes nothing.
    let head = server.log_head();
    let page = visitor
        .post(
            "/admin/provisioning/schedule",
            &[
                ("csrf", &csrf),
                ("daily", "on"),
                ("time", "25:00"),
                ("time_zone", "UTC"),
                ("share_percent", "20"),
                ("minimum", "10"),
                ("grace_days", "30"),
            ],
        )
        .await;
    assert_eq!(page.status, 400, "{}", page.html);
    assert!(page.html.contains("class=\"notice error\""), "{}", page.html);
    assert_eq!(server.log_head(), head, "a refused setting appends nothing");

    // An audit token opens the audit pages only.
    let mut auditor = Visitor::new(&server);
    assert_eq!(auditor.sign_in(&audit).await.status, 303);
    assert_eq!(auditor.get("/admin").await.location.as_deref(), Some("/admin/audit"));
    assert_eq!(auditor.get("/admin/audit").await.status, 200);
    assert_eq!(auditor.get("/admin/provisioning").await.status, 403);
    assert_eq!(auditor.get("/admin/members").await.status, 403);

    // Signing out ends the session on the server, not just in the browser.
    let stolen = visitor.cookies.clone();
    let page = visitor.post("/admin/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.location.as_deref(), Some("/admin/sign-in"));
    assert!(!visitor.has_session());
    visitor.cookies = stolen;
    assert_eq!(visitor.get("/admin/provisioning").await.status, 303);
}

/// The session cookie is `Secure` wherever clients reach rollcall over
/// TLS: behind `--public-url https://...`, or a proxy that says
/// `X-Forwarded-Proto: https`.
#[tokio::test]
async fn the_session_cookie_is_secure_behind_tls() {
    let config = ServerConfig {
        public_url: Some("https://rollcall.example.com".to_owned()),
        ..ServerConfig::default()
    };
    let behind_public_url = TestServer::start_with(config).await;
    let proxied = TestServer::start().await;
    for (server, proxied) in [(&behind_public_url, false), (&proxied, true)] {
        server.tenant("acme").await;
        let (_, admin) = server.token("acme", TokenScope::Admin).await;
        let mut visitor =
            if proxied { Visitor::behind_https_proxy(server) } else { Visitor::new(server) };
        let page = visitor.sign_in(&admin).await;
        assert_eq!(page.status, 303, "proxied {proxied}: {}", page.html);
        let session =
            page.set_cookies.iter().find(|line| line.contains("rollcall_session=")).unwrap();
        assert!(session.contains("; Secure"), "proxied {proxied}: {session}");
        assert!(
            session.starts_with("__Host-rollcall_session=") && session.contains("Path=/;"),
            "a __Host- cookie, which no sibling subdomain can set: {session}"
        );
    }
}

static OUTLIVE_SKEW: Skew = Skew::new();

fn outlive_clock() -> jiff::Timestamp {
    OUTLIVE_SKEW.now()
}

/// A session never outlives its token: signed in with a token that expires
/// in an hour, the eight-hour session ends with it.
#[tokio::test]
async fn a_session_never_outlives_its_token() {
    let server = TestServer::start_with_clock(ServerConfig::default(), outlive_clock).await;
    server.tenant("acme").await;
    let (_, secret) = rollcall::tenancy::issue_token(
        &server.store,
        rollcall::tenancy::TenantRef::Name("acme".to_owned()),
        rollcall::tenancy::TokenRequest {
            scope: TokenScope::Admin,
            lifetime: Some(jiff::SignedDuration::from_hours(1)),
            label: None,
            client_id: None,
        },
        events::CommandContext::new(events::Actor::System),
    )
    .await
    .unwrap();
    let mut visitor = Visitor::new(&server);
    let page = visitor.sign_in(secret.expose()).await;
    assert_eq!(page.status, 303);
    let cookie = page.set_cookies.iter().find(|line| line.contains("rollcall_session=")).unwrap();
    let max_age: u64 = cookie
        .split("; ")
        .find_map(|attribute| attribute.strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&max_age), "the token's hour, not eight: {cookie}");
    OUTLIVE_SKEW.advance(Duration::from_secs(3540));
    assert_eq!(visitor.get("/admin/members").await.status, 200);
    OUTLIVE_SKEW.advance(Duration::from_secs(61));
    assert_eq!(visitor.get("/admin/members").await.status, 303, "ended with its token");
}

/// The sign-in forms' CSRF tokens are signed by the server: a cookie tossed
/// in by a sibling subdomain (the same site, so SameSite lets it through)
/// with a form that repeats it is refused, and one form's token does not
/// open the other.
#[tokio::test]
async fn a_tossed_sign_in_cookie_does_not_sign_anyone_in() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    let mut attacker = Visitor::new(&server);
    attacker.cookies.push(("rollcall_sign_in".to_owned(), "f".repeat(64)));
    let page = attacker
        .post("/admin/sign-in", &[("csrf", &"f".repeat(64)), ("next", "/admin"), ("token", &admin)])
        .await;
    assert_eq!(page.status, 403, "{}", page.html);
    assert!(!attacker.has_session());

    // A real form's nonce and token, but the token posted to the other form.
    let mut visitor = Visitor::new(&server);
    let form = visitor.get("/admin/sign-in").await;
    let csrf = form.csrf();
    let refused = visitor.post("/admin/sign-in/link", &[("csrf", &csrf), ("code", "x")]).await;
    assert_eq!(refused.status, 403, "bound to its form");
    let page = visitor
        .post("/admin/sign-in", &[("csrf", &csrf), ("next", "/admin"), ("token", &admin)])
        .await;
    assert_eq!(page.status, 303, "{}", page.html);
    assert!(visitor.has_session());
}

static SESSION_SKEW: Skew = Skew::new();

fn session_clock() -> jiff::Timestamp {
    SESSION_SKEW.now()
}

#[tokio::test]
async fn sessions_end_with_their_lifetime_and_with_their_token() {
    let config = ServerConfig {
        console_session_lifetime: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let server = TestServer::start_with_clock(config, session_clock).await;
    server.tenant("acme").await;
    let (token_id, admin) = server.token("acme", TokenScope::Admin).await;

    let mut visitor = Visitor::new(&server);
    let page = visitor.sign_in(&admin).await;
    assert!(
        page.set_cookies.iter().any(|line| line.contains("Max-Age=3600")),
        "{:?}",
        page.set_cookies
    );
    assert_eq!(visitor.get("/admin/members").await.status, 200);
    SESSION_SKEW.advance(Duration::from_secs(3590));
    assert_eq!(visitor.get("/admin/members").await.status, 200, "ten seconds left");
    SESSION_SKEW.advance(Duration::from_secs(10));
    let page = visitor.get("/admin/members").await;
    assert_eq!(page.status, 303, "an expired session signs in again");
    assert_eq!(page.location.as_deref(), Some("/admin/sign-in?next=%2Fadmin%2Fmembers"));

    // Revoking the token ends a live session at its next request.
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let (token_id_2, admin) = server.token("acme", TokenScope::Admin).await;
    assert_ne!(token_id, token_id_2);
    let mut visitor = Visitor::new(&server);
    visitor.sign_in(&admin).await;
    assert_eq!(visitor.get("/admin/members").await.status, 200);
    rollcall::tenancy::revoke_token(
        &server.store,
        &token_id_2,
        None,
        events::CommandContext::new(events::Actor::System),
    )
    .await
    .unwrap();
    assert_eq!(visitor.get("/admin/members").await.status, 303);
}

#[tokio::test]
async fn a_sign_in_link_works_once() {
    let server = TestServer::start().await;
    server.tenant("acme").await;
    let store = server.store.clone();
    let (code, token) = tokio::task::spawn_blocking(move || {
        rollcall::console::session::issue_link(
            &store,
            "acme",
            Duration::from_secs(3600),
            events::CommandContext::new(events::Actor::System),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(token.scope, TokenScope::Admin);

    let mut visitor = Visitor::new(&server);
    // Opening the link (as a mail scanner would) does not use it up.
    let page = visitor.get(&format!("/admin/sign-in/link?code={code}")).await;
    assert_eq!(page.status, 200);
    let csrf = page.csrf();
    let page = visitor.post("/admin/sign-in/link", &[("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(page.status, 303, "{}", page.html);
    assert!(visitor.has_session());
    let page = visitor.get("/admin/provisioning").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("console sign-in link"), "the session names its token");

    let mut again = Visitor::new(&server);
    let page = again.get(&format!("/admin/sign-in/link?code={code}")).await;
    let csrf = page.csrf();
    let page = again.post("/admin/sign-in/link", &[("csrf", &csrf), ("code", &code)]).await;
    assert_eq!(page.status, 410);
    assert!(!again.has_session());
}

/// A preview not decided within the request's wait (none here) is decided
/// in the background: the page says so and refreshes itself, then shows
/// the preview from memory; a change the IdP pushes meanwhile is decided
/// again.
#[tokio::test]
async fn a_large_preview_is_decided_in_the_background_and_kept() {
    let config = ServerConfig { preview_wait: Duration::ZERO, ..ServerConfig::default() };
    let server = TestServer::start_with(config).await;
    let scim = Scim::new(&server, "acme").await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    let mut visitor = Visitor::new(&server);
    assert_eq!(visitor.sign_in(&admin).await.status, 303);
    for index in 0..5 {
        scim.create_user(&format!("u{index}@example.com")).await;
    }

    let first = visitor.get("/admin/provisioning/pending").await;
    assert_eq!(first.status, 200);
    assert!(
        first.html.contains("Deciding what the next Synchronize would change"),
        "{}",
        first.html
    );
    assert!(first.html.contains("data-refresh=\"2\""));
    let decided =
        until(&mut visitor, "/admin/provisioning/pending", "5 users, 0 groups pending").await;
    for index in 0..5 {
        assert!(decided.contains(&format!("u{index}@example.com")), "{decided}");
    }
    let overview = visitor.get("/admin/provisioning").await;
    assert!(overview.html.contains("5 users, 0 groups pending"), "the overview reads it too");

    // The IdP pushes one more: the kept preview no longer holds.
    scim.create_user("u5@example.com").await;
    let moved = visitor.get("/admin/provisioning/pending").await;
    assert!(moved.html.contains("Deciding what the next Synchronize"), "{}", moved.html);
    let decided =
        until(&mut visitor, "/admin/provisioning/pending", "6 users, 0 groups pending").await;
    assert!(decided.contains("u5@example.com"));

    // After a Synchronize nothing is pending, decided within the request.
    let page = visitor.get("/admin/provisioning").await;
    let synced = visitor.post("/admin/provisioning/sync", &[("csrf", &page.csrf())]).await;
    assert_eq!(synced.status, 303, "{}", synced.html);
    until(&mut visitor, "/admin/provisioning/pending", "0 users, 0 groups pending").await;
}

/// Fetches `path` until its page contains `wanted` (ten seconds at most).
async fn until(visitor: &mut Visitor<'_>, path: &str, wanted: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let page = visitor.get(path).await;
        assert_eq!(page.status, 200);
        if page.html.contains(wanted) {
            return page.html;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} never said {wanted:?}: {}",
            page.html
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The Synchronize button does not hold the browser for a long run: past
/// `console_sync_wait` it shows the run's page, which follows the run
/// (refreshing itself while it is running) until it completes with its
/// counts.
#[tokio::test]
async fn synchronize_shows_the_run_while_it_goes_on() {
    let config = ServerConfig { console_sync_wait: Duration::ZERO, ..ServerConfig::default() };
    let server = TestServer::start_with(config).await;
    let scim = Scim::new(&server, "acme").await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    let mut visitor = Visitor::new(&server);
    assert_eq!(visitor.sign_in(&admin).await.status, 303);
    crate::synchronize::bulk_users(&scim, 0, 3000).await;

    let page = visitor.get("/admin/provisioning").await;
    let started = visitor.post("/admin/provisioning/sync", &[("csrf", &page.csrf())]).await;
    assert_eq!(started.status, 303, "{}", started.html);
    let run_page = started.location.unwrap();
    assert!(run_page.starts_with("/admin/provisioning/syncs/"), "{run_page}");
    // The run has started, and has six batches to go, one writer command
    // each: a command holding the writer now keeps the run from committing
    // its next one until the page has been seen mid-run.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let blocker = server.store.command(None, move |_| {
        let _ = held.recv();
        Ok(())
    });
    let page = visitor.get(&run_page).await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains("id=\"run-status\" class=\"badge running\""), "{}", page.html);
    assert!(page.html.contains("data-refresh"), "a running run's page refreshes itself");
    release.send(()).unwrap();
    blocker.await.unwrap();
    let clock = std::time::Instant::now();
    loop {
        let page = visitor.get(&run_page).await;
        assert_eq!(page.status, 200);
        let running = page.html.contains("id=\"run-status\" class=\"badge running\"");
        assert_eq!(running, page.html.contains("data-refresh"), "{}", page.html);
        if page.html.contains("class=\"badge completed\"") {
            assert!(page.html.contains("3000"), "the counts: {}", page.html);
            break;
        }
        assert!(running, "{}", page.html);
        assert!(clock.elapsed() < Duration::from_secs(60), "the run never completed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(runs(&server).await, 1);
}
