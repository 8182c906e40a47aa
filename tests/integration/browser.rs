//! The console end to end in real headless Chromium (Debian's `chromium`
//! and `chromium-driver`; `scripts/test` installs them): sign in, see the
//! pending count after a SCIM push, Synchronize, see the members, change
//! the mapping and preview it, approve a held run, sign out; and, on a
//! phone-sized window too, that every page names its controls for a screen
//! reader and never scrolls sideways. A screenshot of each step goes to
//! target/console-screenshots/.
//!
//! The driver is spoken to over the W3C WebDriver protocol with the
//! reqwest client the other tests use: the handful of commands below is
//! all this test needs.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use events::event::TokenScope;
use serde_json::{Value, json};

use crate::scim::{GROUP, Scim, USER};
use crate::util::TestServer;

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

struct Browser {
    http: reqwest::Client,
    session: String,
    driver_url: String,
    driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Whether the browser test can run here. Without Chromium it is skipped
/// with a message, so `cargo test` works on a machine without it;
/// `scripts/test` installs it and sets `ROLLCALL_REQUIRE_BROWSER`, so in CI a
/// missing browser fails the test rather than skipping it.
fn browser_available() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|program| !std::path::Path::new(program).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{} missing: run scripts/test, which installs Debian's chromium and chromium-driver",
        missing.join(" and ")
    );
    assert!(std::env::var_os("ROLLCALL_REQUIRE_BROWSER").is_none(), "{message}");
    eprintln!("SKIPPED the browser test: {message}");
    false
}

impl Browser {
    async fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver_url = format!("http://127.0.0.1:{port}");
        let http = {
            rollcall::webhooks::deliver::install_tls_provider();
            reqwest::Client::new()
        };
        let started = Instant::now();
        while http.get(format!("{driver_url}/status")).send().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
                    "--window-size=1280,1100", format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        } } });
        let answer: Value = http
            .post(format!("{driver_url}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser { http, session, driver_url, driver, _profile: profile, shots }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.driver_url, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        answer["value"].clone()
    }

    async fn go(&self, url: &str) {
        self.command(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    async fn url(&self) -> String {
        self.command(reqwest::Method::GET, "/url", None).await.as_str().unwrap().to_owned()
    }

    /// The element `css` selects, waiting up to ten seconds for it.
    async fn find(&self, css: &str) -> String {
        let started = Instant::now();
        loop {
            let found = self
                .command(
                    reqwest::Method::POST,
                    "/element",
                    Some(json!({ "using": "css selector", "value": css })),
                )
                .await;
            if let Some(id) = found[ELEMENT].as_str() {
                return id.to_owned();
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no element {css} on {}: {found}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{id}/click"), Some(json!({}))).await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command(reqwest::Method::POST, &format!("/element/{id}/clear"), Some(json!({}))).await;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn text(&self, css: &str) -> String {
        let id = self.find(css).await;
        self.command(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    async fn value(&self, css: &str) -> String {
        let id = self.find(css).await;
        let value = self
            .command(reqwest::Method::GET, &format!("/element/{id}/property/value"), None)
            .await;
        value.as_str().unwrap_or("").to_owned()
    }

    /// Waits until the element's text contains `wanted`.
    async fn wait_text(&self, css: &str, wanted: &str) -> String {
        let started = Instant::now();
        loop {
            let text = self.text(css).await;
            if text.contains(wanted) {
                return text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{css} says {text:?}, not {wanted:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) {
        let encoded = self.command(reqwest::Method::GET, "/screenshot", None).await;
        let png =
            base64::engine::general_purpose::STANDARD.decode(encoded.as_str().unwrap()).unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn execute(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
        .await
    }

    async fn resize(&self, width: u32, height: u32) {
        self.command(
            reqwest::Method::POST,
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .await;
    }

    /// Checks what a reader of the page needs whatever their screen: every
    /// form control has a name a screen reader says (a label, or
    /// aria-label), there is one h1, and the page never scrolls sideways
    /// (wide tables scroll inside their own box). Then a screenshot.
    async fn check_page(&self, shot: &str) {
        self.screenshot(shot).await;
        let unnamed = self
            .execute(
                "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea, button')]\
                   .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') \
                     && !(e.tagName === 'BUTTON' && e.textContent.trim()))\
                   .map((e) => e.outerHTML);",
            )
            .await;
        assert_eq!(unnamed, json!([]), "controls without a name on {}", self.url().await);
        let headings = self.execute("return document.querySelectorAll('h1').length;").await;
        assert_eq!(headings, json!(1), "one h1 on {}", self.url().await);
        let sideways =
            self.execute("return [document.documentElement.scrollWidth, window.innerWidth];").await;
        assert!(
            sideways[0].as_u64() <= sideways[1].as_u64(),
            "{} scrolls sideways: {sideways}",
            self.url().await
        );
    }

    async fn quit(self) {
        self.command(reqwest::Method::DELETE, "", None).await;
    }
}

#[tokio::test]
async fn an_admin_signs_in_synchronizes_maps_approves_and_signs_out() {
    let server = TestServer::start().await;
    let scim = Scim::new(&server, "acme").await;
    let (_, admin) = server.token("acme", TokenScope::Admin).await;
    if !browser_available() {
        return;
    }
    let browser = Browser::start().await;

    // Sign in.
    browser.go(&server.url("/admin")).await;
    assert!(browser.url().await.contains("/admin/sign-in"));
    browser.type_into("#token", &admin).await;
    browser.screenshot("01-sign-in").await;
    browser.click("form[action='/admin/sign-in'] button").await;
    browser.wait_text("h1", "User Provisioning").await;
    assert!(browser.text("#pending-summary").await.contains("0 users"));

    // The identity provider pushes three users and a group.
    let mut ids = Vec::new();
    for (name, nick) in
        [("ada@example.com", "ada"), ("bob@example.com", "bobby"), ("cy@example.com", "cy")]
    {
        let answer = scim.post("/Users", json!({ "schemas": [USER], "userName": name, "nickName": nick, "displayName": name })).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
        ids.push(answer.body["id"].as_str().unwrap().to_owned());
    }
    let group = json!({ "schemas": [GROUP], "displayName": "Engineering", "members": [{ "value": ids[0] }, { "value": ids[1] }] });
    assert_eq!(scim.post("/Groups", group).await.status, 201);
    browser.go(&server.url("/admin/provisioning")).await;
    browser.wait_text("#pending-summary", "3 users, 1 groups pending").await;
    browser.check_page("02-pending").await;

    // Synchronize: the run's page, then the members.
    browser.click("form[action='/admin/provisioning/sync'] button").await;
    browser.wait_text("#run-status", "completed").await;
    browser.screenshot("03-synchronized").await;
    browser.go(&server.url("/admin/members")).await;
    let members = browser.wait_text("#members", "ada@example.com").await;
    assert!(members.contains("bob@example.com") && members.contains("cy@example.com"), "{members}");
    browser.check_page("04-members").await;

    // On a phone: the same pages, readable without sideways scrolling.
    browser.resize(390, 844).await;
    for (path, shot) in [
        ("/admin/provisioning", "04a-phone-provisioning"),
        ("/admin/provisioning/pending", "04b-phone-pending"),
        ("/admin/members", "04c-phone-members"),
        ("/admin/mapping", "04d-phone-mapping"),
        ("/admin/webhooks", "04f-phone-webhooks"),
    ] {
        browser.go(&server.url(path)).await;
        browser.find("h1").await;
        browser.check_page(shot).await;
    }
    browser.resize(1280, 1100).await;
    for path in ["/admin/bindings", "/admin/provisioning/log", "/admin/audit"] {
        browser.go(&server.url(path)).await;
        browser.find("h1").await;
        browser.check_page(&format!("04e-{}", path.rsplit('/').next().unwrap())).await;
    }

    // Map nickName to a new property: the preview shows the updates, then save.
    browser.go(&server.url("/admin/mapping")).await;
    let rows: usize = browser.value("#mapping-form input[name='rows']").await.parse().unwrap();
    assert!(rows >= 8, "the default mapping and blank rows");
    let blank = rows - 3;
    browser.type_into(&format!("input[name='r{blank}.property']"), "nickname").await;
    browser.type_into(&format!("input[name='r{blank}.source']"), "nickName").await;
    browser.click("button[value='preview']").await;
    let preview = browser.wait_text("#mapping-preview", "bobby").await;
    assert!(preview.contains("update"), "{preview}");
    browser.screenshot("05-mapping-preview").await;
    browser.click("button[value='save']").await;
    browser.wait_text(".notice", "The attribute mapping is saved").await;

    // A tight safeguard, then the IdP removes two of three: the run is held.
    browser.go(&server.url("/admin/provisioning")).await;
    browser.type_into("#minimum", "1").await;
    browser.type_into("#share", "10").await;
    browser.click("form[action='/admin/provisioning/schedule'] button").await;
    browser.wait_text(".notice", "The schedule is saved").await;
    for id in &ids[1..] {
        assert_eq!(scim.delete(&format!("/Users/{id}")).await.status, 204);
    }
    browser.go(&server.url("/admin/provisioning")).await;
    browser.click("form[action='/admin/provisioning/sync'] button").await;
    browser.wait_text("#run-status", "held").await;
    browser.screenshot("06-held").await;
    browser.click("form[action$='/approve'] button").await;
    browser.wait_text("#run-status", "approved").await;
    browser.go(&server.url("/admin/members?status=left")).await;
    let left = browser.wait_text("#members", "bob@example.com").await;
    assert!(left.contains("cy@example.com") && !left.contains("ada@example.com"), "{left}");
    browser.screenshot("07-approved").await;

    // Erase a leaver: the confirmation names what goes, then the member
    // reads as erased.
    let listed: Value = server
        .get("/api/v1/members?status=left&search=bob", Some(&admin))
        .await
        .json()
        .await
        .unwrap();
    let bob = listed["members"][0]["member_id"].as_str().unwrap().to_owned();
    browser.go(&server.url(&format!("/admin/members/{bob}"))).await;
    let offer = browser.wait_text("#erase + p", "bob@example.com").await;
    assert!(offer.contains("cannot be undone"), "{offer}");
    browser.click("input[name='confirm']").await;
    browser.type_into("input[name='reason']", "GDPR request 7").await;
    browser.screenshot("07a-erase").await;
    browser.click("form[action$='/erase'] button").await;
    browser.command(reqwest::Method::POST, "/alert/accept", Some(json!({}))).await;
    browser.wait_text(".notice", "Erased").await;
    assert!(browser.text("h1").await.contains("[erased]"));
    browser.screenshot("07b-erased").await;

    // Sign out: the console is closed again.
    browser.click("form.sign-out button").await;
    browser.wait_text("h1", "Sign in").await;
    browser.go(&server.url("/admin/members")).await;
    assert!(browser.url().await.contains("/admin/sign-in"));
    browser.screenshot("08-signed-out").await;
    browser.quit().await;
}
