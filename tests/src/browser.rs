//! A real browser for the portal's tests: Debian's headless Chromium driven
//! through its WebDriver (chromedriver, the W3C WebDriver protocol over
//! HTTP), started on 127.0.0.1 on a port of its own and stopped by its
//! process id; axe-core run inside the page; screenshots into `target/`.

use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The key of an element reference in WebDriver's answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: tokio::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("its address").port()
}

impl Browser {
    /// Chromium, headless, in a window `width` pixels wide.
    pub async fn start(width: u32) -> Browser {
        let port = free_port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (dev/bootstrap-browser.sh installs Debian's chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder().timeout(Duration::from_secs(90)).build().expect("client");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = http.get(format!("{base}/status")).send().await {
                if r.json::<Value>().await.ok().is_some_and(|v| v["value"]["ready"] == true) {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not become ready within 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let profile = std::env::temp_dir().join(format!("entitle-chromium-{port}"));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                         "--lang=en-US", format!("--window-size={width},900"), format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let answer: Value = http.post(format!("{base}/session")).json(&caps).send().await.expect("chromedriver answers").json().await.expect("JSON");
        let session = answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {answer}")).to_string();
        let b = Browser { driver, base, session, http };
        b.ok("POST", "/timeouts", Some(json!({"pageLoad": 60_000, "script": 60_000, "implicit": 0}))).await;
        b
    }

    /// One WebDriver command: its value, or its error (`no such element`, ...).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let answer: Value = req.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}")).json().await.expect("JSON");
        match answer["value"]["error"].as_str() {
            Some(e) => Err(format!("{e}: {}", answer["value"]["message"])),
            None => Ok(answer["value"].clone()),
        }
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, path, body).await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Navigates to `url`. `cargo lambda watch` (the local stand-in for
    /// function URLs) sometimes answers a large page 500 itself, with its
    /// own problem JSON, while another function answers (see
    /// `emulator_lost_response`): such a GET is asked again, twice at most.
    pub async fn goto(&self, url: &str) {
        for _ in 0..3 {
            self.ok("POST", "/url", Some(json!({"url": url}))).await;
            let text = self.text().await;
            if !serde_json::from_str::<Value>(&text).is_ok_and(|body| crate::emulator_lost_response(500, &body)) {
                return;
            }
        }
    }

    pub async fn url(&self) -> String {
        self.ok("GET", "/url", None).await.as_str().unwrap_or_default().to_string()
    }

    pub async fn set_width(&self, width: u32) {
        self.ok("POST", "/window/rect", Some(json!({"width": width, "height": 900}))).await;
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.ok("GET", "/source", None).await.as_str().unwrap_or_default().to_string()
    }

    /// The text a person reads on the page.
    pub async fn text(&self) -> String {
        self.script("return document.body ? document.body.innerText : '';", json!([])).await.as_str().unwrap_or_default().to_string()
    }

    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.ok("POST", "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    async fn element(&self, css: &str) -> Option<String> {
        let v = self.call("POST", "/element", Some(json!({"using": "css selector", "value": css}))).await.ok()?;
        v[ELEMENT].as_str().map(str::to_string)
    }

    /// Asks `check` again every 100 ms until it answers `Ok`, for up to
    /// 30 s; then fails with its answer. `check(true)` is the last ask: its
    /// `Err` says what the page showed.
    async fn until<T, Fut: std::future::Future<Output = Result<T, String>>>(&self, mut check: impl FnMut(bool) -> Fut) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let last = Instant::now() >= deadline;
            match check(last).await {
                Ok(v) => return v,
                Err(why) if last => panic!("{why}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// The element `css` finds, waiting up to 30 s for it to show.
    pub async fn find(&self, css: &str) -> String {
        self.until(|last| async move {
            match self.element(css).await {
                Some(e) => Ok(e),
                None if last => Err(format!("no element {css} on {} within 30 s:\n{}", self.url().await, self.text().await)),
                None => Err(String::new()),
            }
        })
        .await
    }

    pub async fn exists(&self, css: &str) -> bool {
        self.element(css).await.is_some()
    }

    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.ok("POST", &format!("/element/{e}/click"), None).await;
    }

    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.ok("POST", &format!("/element/{e}/clear"), None).await;
        self.ok("POST", &format!("/element/{e}/value"), Some(json!({"text": text}))).await;
    }

    pub async fn value(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.ok("GET", &format!("/element/{e}/property/value"), None).await.as_str().unwrap_or_default().to_string()
    }

    /// Waits up to 30 s until the page's text contains `want`.
    pub async fn wait_for_text(&self, want: &str) -> String {
        self.until(|last| async move {
            let text = self.text().await;
            match text.contains(want) {
                true => Ok(text),
                false if last => Err(format!("{want:?} never showed on {} within 30 s; the page reads:\n{text}", self.url().await)),
                false => Err(String::new()),
            }
        })
        .await
    }

    /// Waits up to 30 s until the page's URL contains `want` (a navigation landed).
    pub async fn wait_for_url(&self, want: &str) -> String {
        self.until(|_| async move {
            let url = self.url().await;
            if url.contains(want) {
                Ok(url)
            } else {
                Err(format!("the page never reached a URL with {want:?} within 30 s: it is at {url}"))
            }
        })
        .await
    }

    /// Whether a JavaScript dialog (an `alert`) is open.
    pub async fn alert_open(&self) -> bool {
        self.call("GET", "/alert/text", None).await.is_ok()
    }

    /// The browser's cookies for the page's site.
    pub async fn cookies(&self) -> Vec<Value> {
        self.ok("GET", "/cookie", None).await.as_array().cloned().unwrap_or_default()
    }

    /// axe-core (dev/node_modules/axe-core) run over the page as it is:
    /// the violations of impact `serious` or `critical`.
    pub async fn axe_serious(&self) -> Vec<Value> {
        let axe = std::fs::read_to_string(format!("{}/../dev/node_modules/axe-core/axe.min.js", env!("CARGO_MANIFEST_DIR"))).expect("axe-core is installed in dev/node_modules (dev/bootstrap.sh)");
        // Injected through WebDriver (not a <script> of the page), which the
        // page's Content-Security-Policy does not govern.
        self.script(&format!("{axe}\n;return true;"), json!([])).await;
        let result = self
            .ok("POST", "/execute/async", Some(json!({"script": "const done = arguments[arguments.length - 1]; axe.run(document, {resultTypes: ['violations']}).then(r => done({violations: r.violations, passes: r.passes.length}), e => done({error: String(e)}));", "args": []})))
            .await;
        assert!(!result["error"].is_string(), "axe-core failed: {result}");
        // A run that checked nothing proves nothing.
        assert!(result["passes"].as_u64().unwrap_or(0) > 0, "axe-core ran no check: {result}");
        result["violations"].as_array().cloned().unwrap_or_default().into_iter().filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical"))).collect()
    }

    /// A screenshot of the window into `target/portal-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let png = self.ok("GET", "/screenshot", None).await;
        let bytes = base64::engine::general_purpose::STANDARD.decode(png.as_str().expect("a screenshot")).expect("base64");
        let dir = PathBuf::from(format!("{}/../target/portal-screenshots", env!("CARGO_MANIFEST_DIR")));
        std::fs::create_dir_all(&dir).expect("target/ is writable");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("screenshot written");
        path
    }

    /// Ends the browser session and stops chromedriver (by its process id).
    pub async fn stop(mut self) {
        let _ = self.http.delete(format!("{}/session/{}", self.base, self.session)).send().await;
        let _ = self.driver.kill().await;
    }
}
