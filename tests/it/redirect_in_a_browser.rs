//! A redirect link in a real browser (headless Chromium through chromedriver), on a phone-sized
//! viewport: the mailed link shows the Continue page, pressing the button (a form, no script)
//! posts it, and the browser lands on the simulator's hosted flow for the user's inquiry. Only a
//! browser judges the page's CSP — its `form-action` also governs the redirect after the POST.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::support::app::repo_root;
use crate::support::daemon::{PATIENCE, free_port};
use crate::support::redirect::{link_of, redirect_daemon};

/// Where Debian's `chromium` and `chromium-driver` packages put them (`.ci/run` installs both).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The README's screenshot; rewritten when `UPDATE_SCREENSHOTS=1`.
const SCREENSHOT: &str = "docs/redirect-continue-page.png";

/// A phone: CSS pixels of an iPhone 12-sized screen.
const PHONE: (u32, u32) = (390, 844);

/// chromedriver on a loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Both binaries, or a skip outside CI (where a missing browser is a failure).
fn browser_installed() -> bool {
    let found = Path::new(CHROMIUM).is_file() && Path::new(CHROMEDRIVER).is_file();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {CHROMIUM} or {CHROMEDRIVER} is missing: .ci/run installs Debian's chromium and chromium-driver"
        );
        eprintln!(
            "SKIPPED: {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver); CI=true makes this a failure"
        );
    }
    found
}

async fn start_driver() -> Driver {
    let port = free_port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ready = http
            .get(format!("{}/status", driver.url))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success());
        if ready.is_some() {
            return driver;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver not ready in {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn capabilities(profile: &Path) -> serde_json::Map<String, Value> {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                format!("--user-data-dir={}", profile.display()),
            ],
            "mobileEmulation": {
                "deviceMetrics": {"width": PHONE.0, "height": PHONE.1, "pixelRatio": 2.0}
            }
        }
    });
    match caps {
        Value::Object(m) => m,
        _ => unreachable!("an object literal"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_browser_opens_the_mailed_link_presses_continue_and_lands_on_the_hosted_flow() {
    if !browser_installed() {
        return;
    }
    let (stack, _daemon, invites) = redirect_daemon(1, &[], &[]).await;
    let link = link_of(&invites, "usr_0");
    let driver = start_driver().await;
    let profile = tempfile::tempdir().expect("a fresh browser profile");
    let browser = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities(profile.path()))
        .connect(&driver.url)
        .await
        .expect("a Chromium session");

    browser.goto(&link).await.expect("the mailed link opens");
    let button = browser
        .find(Locator::Css("form[method=post] button[type=submit]"))
        .await
        .expect("a Continue button in a POST form");
    assert_eq!(button.text().await.unwrap(), "Continue");
    // Laid out for the phone: no sideways scrolling, the button inside the screen.
    let fits = browser
        .execute(
            "const b = document.querySelector('button').getBoundingClientRect();\
             return [window.innerWidth, document.documentElement.scrollWidth, b.left, b.right];",
            vec![],
        )
        .await
        .unwrap();
    let [width, scroll, left, right] = [0, 1, 2, 3].map(|i| fits[i].as_f64().unwrap());
    assert_eq!(width, f64::from(PHONE.0), "a phone-sized viewport");
    assert!(scroll <= width, "no sideways scroll: {fits}");
    assert!(left >= 0.0 && right <= width, "the button fits: {fits}");
    let png = browser.screenshot().await.expect("a screenshot");
    save_screenshot(&png);

    button.click().await.expect("Continue is pressed");
    let deadline = Instant::now() + PATIENCE;
    let hosted = stack.sim.hosted_flow_url();
    let landed = loop {
        let url = browser.current_url().await.unwrap();
        if url.as_str().starts_with(hosted.as_str()) {
            break url;
        }
        assert!(
            Instant::now() < deadline,
            "still on {url} after pressing Continue (a CSP refusing the redirect stays here)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        landed.query_pairs().any(|(k, _)| k == "code"),
        "landed on a one-time link"
    );
    let shown = browser
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let opened: Value = serde_json::from_str(&shown).expect("the simulator's answer");
    let inquiries = stack.sim.inquiries();
    assert_eq!(inquiries.len(), 1, "the click made the user's one inquiry");
    assert_eq!(opened["ok"], true, "{opened}");
    assert_eq!(opened["inquiry-id"], inquiries[0].id.as_str(), "{opened}");
    browser.close().await.expect("the session ends");
}

/// Kept under target/ on every run, and as the README's picture when asked to.
fn save_screenshot(png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let under_target: PathBuf = repo_root().join("target/screenshots");
    std::fs::create_dir_all(&under_target).unwrap();
    std::fs::write(under_target.join("redirect-continue-page.png"), png).unwrap();
    if std::env::var("UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        std::fs::write(repo_root().join(SCREENSHOT), png).unwrap();
    }
}
