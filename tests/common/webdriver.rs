//! A headless Chromium driven through ChromeDriver's W3C WebDriver
//! endpoints, for the console's browser tests and its benchmark. Both
//! programs come from Debian (`chromium`, `chromium-driver`), or from
//! `MODELHUB_CHROMIUM` and `MODELHUB_CHROMEDRIVER`. ChromeDriver listens on
//! 127.0.0.1 on a port picked here and is killed by its PID on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Chromium and ChromeDriver, or why they cannot be used.
pub fn binaries() -> Result<(PathBuf, PathBuf), String> {
    let find = |var: &str, names: &[&str]| -> Option<PathBuf> {
        if let Ok(p) = std::env::var(var) {
            return Some(PathBuf::from(p));
        }
        names.iter().map(PathBuf::from).find(|p| p.exists())
    };
    let chromium = find(
        "MODELHUB_CHROMIUM",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    )
    .ok_or("no Chromium (install Debian's chromium, or set MODELHUB_CHROMIUM)")?;
    let driver = find("MODELHUB_CHROMEDRIVER", &["/usr/bin/chromedriver"]).ok_or(
        "no ChromeDriver (install Debian's chromium-driver, or set MODELHUB_CHROMEDRIVER)",
    )?;
    Ok((chromium, driver))
}

/// One browser session.
pub struct Browser {
    driver: Child,
    session: String,
    base: String,
    http: reqwest::blocking::Client,
    _profile: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium with a fresh profile
    /// and a window of `width` x `height`.
    pub fn start(width: u32, height: u32) -> Result<Browser, String> {
        Browser::start_with(width, height, &[])
    }

    /// [`Browser::start`] with extra Chromium arguments.
    pub fn start_with(width: u32, height: u32, extra: &[&str]) -> Result<Browser, String> {
        let (chromium, driver_bin) = binaries()?;
        let port = free_port();
        let driver = Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", driver_bin.display()))?;
        let profile = tempfile::tempdir().map_err(|e| e.to_string())?;
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut b = Browser {
            driver,
            session: String::new(),
            base,
            http,
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = b
                .http
                .get(format!("{}/status", b.base))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                return Err("ChromeDriver did not become ready within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // As the machine's notes advise: no background networking (the
        // closed network refuses it), a fresh profile, no sandbox (root).
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            format!("--user-data-dir={}", b._profile.path().display()),
            format!("--window-size={width},{height}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
            "goog:loggingPrefs": {"browser": "ALL", "performance": "ALL"},
        }}});
        let v = b.call("POST", "/session", Some(caps))?;
        b.session = v["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {v}"))?
            .to_string();
        Ok(b)
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{}", self.base, path);
        let req = match method {
            "GET" => self.http.get(&url),
            "DELETE" => self.http.delete(&url),
            _ => self.http.post(&url).json(&body.unwrap_or(json!({}))),
        };
        let resp = req.send().map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status();
        let v: Value = resp.json().map_err(|e| format!("{method} {path}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{method} {path}: {status}: {}", v["value"]));
        }
        Ok(v["value"].clone())
    }

    fn session_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let p = format!("/session/{}{}", self.session, path);
        self.call(method, &p, body)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens `url` and waits for its load.
    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", Some(json!({"url": url})));
    }

    /// Runs `script` (a function body; `arguments` are `args`) and answers
    /// what it returns.
    pub fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Runs `script`, which calls its last argument with the result.
    pub fn exec_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.session_call(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// Polls `script` every 50 ms until it answers something truthy (not
    /// false, null, 0 or ""); panics naming `what` after `timeout`.
    pub fn wait_for(&self, what: &str, script: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.exec(script, vec![]);
            let truthy = match &v {
                Value::Null | Value::Bool(false) => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; page text: {}",
                    self.exec("return document.body.innerText", vec![])
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn element(&self, css: &str) -> String {
        let v = self.session_call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {v}"))
            .to_string()
    }

    /// Clicks the element `css` selects.
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.session_call("POST", &format!("/element/{id}/click"), None);
    }

    /// Types `text` into the element `css` selects (as keystrokes).
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.session_call("POST", &format!("/element/{id}/clear"), None);
        self.session_call(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        );
    }

    /// Sends keys to the element that has the focus.
    pub fn keys(&self, text: &str) {
        let actions: Vec<Value> = text
            .chars()
            .flat_map(|c| {
                [
                    json!({"type": "keyDown", "value": c.to_string()}),
                    json!({"type": "keyUp", "value": c.to_string()}),
                ]
            })
            .collect();
        self.session_call(
            "POST",
            "/actions",
            Some(json!({"actions": [{"type": "key", "id": "kbd", "actions": actions}]})),
        );
        self.session_call("DELETE", "/actions", None);
    }

    /// Resizes the window.
    pub fn resize(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine as _;
        let v = self.session_call("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 screenshot"))
            .expect("a base64 screenshot")
    }

    /// The browser console's messages since the last call.
    pub fn console_log(&self) -> Vec<Value> {
        let p = format!("/session/{}/se/log", self.session);
        self.call("POST", &p, Some(json!({"type": "browser"})))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Every request sent since the last call (from the DevTools network
    /// log, so streams still open count too): the URL of the document that
    /// sent it, its URL and its headers.
    pub fn requests(&self) -> Vec<(String, String, Value)> {
        let p = format!("/session/{}/se/log", self.session);
        let entries = self
            .call("POST", &p, Some(json!({"type": "performance"})))
            .unwrap_or_else(|e| panic!("{e}"));
        entries
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| serde_json::from_str::<Value>(e["message"].as_str()?).ok())
            .filter(|m| m["message"]["method"] == "Network.requestWillBeSent")
            .map(|m| {
                let params = &m["message"]["params"];
                let req = &params["request"];
                (
                    params["documentURL"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    req["url"].as_str().unwrap_or_default().to_string(),
                    req["headers"].clone(),
                )
            })
            .collect()
    }

    /// Chromium's processes' resident memory, summed (KiB), from /proc.
    pub fn rss_kib(&self) -> u64 {
        let root = self.driver.id();
        let mut total = 0;
        let mut frontier = vec![root];
        let procs: Vec<(u32, u32, u64)> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
                let field = |name: &str| -> Option<u64> {
                    status
                        .lines()
                        .find_map(|l| l.strip_prefix(name))?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                };
                Some((pid, field("PPid:")? as u32, field("VmRSS:").unwrap_or(0)))
            })
            .collect();
        while let Some(p) = frontier.pop() {
            for &(pid, ppid, rss) in &procs {
                if ppid == p {
                    total += rss;
                    frontier.push(pid);
                }
            }
        }
        total
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let p = format!("/session/{}", self.session);
            let _ = self.call("DELETE", &p, None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
