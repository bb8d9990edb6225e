//! `--auth`: every request the bench makes to modelhub carries
//! `Authorization: Bearer TOKEN`, to measure what authentication costs
//! (issue 22). The token is given (`--token-file`, `MODELHUB_BENCH_TOKEN`)
//! or created through the API right after the server is up, while it has
//! none and admits anonymous admins on loopback. The token is never printed:
//! its `Debug` hides it and no message holds it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};

/// The environment variable a token is read from with `--auth` (and no
/// `--token-file`).
pub const TOKEN_ENV: &str = "MODELHUB_BENCH_TOKEN";

/// A bearer token (`mh_` and 64 hex digits from modelhub, but any
/// visible ASCII is taken).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// The token of `text` (surrounding whitespace, e.g. a file's final
    /// newline, dropped): refused if empty or holding anything but visible
    /// ASCII, which could not go into a header line. The error does not
    /// repeat the text.
    pub fn parse(text: &str) -> Result<Token, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("the token is empty".into());
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token holds other characters than visible ASCII".into());
        }
        Ok(Token(t.into()))
    }

    /// The `Authorization` header's value: `Bearer TOKEN`.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// The header line the minimal HTTP/1.1 client appends after `host`
    /// ([`crate::raw`]): `\r\nauthorization: Bearer TOKEN`.
    pub fn raw_line(&self) -> Vec<u8> {
        format!("\r\nauthorization: {}", self.header_value()).into_bytes()
    }

    /// Default headers for a reqwest client: the `Authorization` header,
    /// marked sensitive (never in reqwest's debug output).
    pub fn headers(&self) -> HeaderMap {
        let mut value = HeaderValue::from_str(&self.header_value()).expect("visible ASCII");
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        headers
    }
}

/// How the bench authenticates to modelhub.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    /// No `Authorization` header (anonymous: an admin on loopback while
    /// the server has no token).
    #[default]
    Off,
    /// A token created through the API on each server (or store) when it
    /// is up.
    Create,
    /// This token, on every server.
    Given(Token),
}

impl Auth {
    /// The command line's choice: off without `--auth`; with it, the token
    /// of `token_file`, else of `env` (the value of [`TOKEN_ENV`]), else
    /// one created on each server.
    pub fn choose(
        auth: bool,
        token_file: Option<&Path>,
        env: Option<&str>,
    ) -> Result<Auth, String> {
        if !auth {
            return Ok(Auth::Off);
        }
        if let Some(path) = token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
            return Token::parse(&text)
                .map(Auth::Given)
                .map_err(|e| format!("--token-file {}: {e}", path.display()));
        }
        match env {
            Some(text) => Token::parse(text)
                .map(Auth::Given)
                .map_err(|e| format!("{TOKEN_ENV}: {e}")),
            None => Ok(Auth::Create),
        }
    }

    /// For a server on a fresh database (which knows no token yet): a
    /// token created on it, if on.
    pub fn fresh(&self) -> Auth {
        match self {
            Auth::Off => Auth::Off,
            _ => Auth::Create,
        }
    }
}

/// The body of `POST /api/v1beta1/tokens` for the bench's token `name`:
/// an admin (who may also set the privileged fields of the bench's cells:
/// their containers' bind mounts).
pub fn token_request(name: &str) -> Value {
    json!({"name": name, "role": "admin"})
}

/// The name of the bench's token for run `run` (a hex id: a valid name).
pub fn token_name(run: &str) -> String {
    format!("bench-{run}")
}

/// Creates admin token `name` on the server at `base`, anonymously (an
/// admin while the server has no token and listens on loopback only).
pub async fn create(base: &str, name: &str) -> Result<Token, String> {
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{base}/api/v1beta1/tokens"))
        .json(&token_request(name))
        .send()
        .await
        .map_err(|e| format!("creating a token on {base}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("creating a token on {base}: {e}"))?;
    if status != 201 {
        let hint = if status == 401 {
            " (the server has a token already: give one with --token-file or \
             MODELHUB_BENCH_TOKEN)"
        } else {
            ""
        };
        // The body of a refusal is a problem's JSON: no token in it.
        return Err(format!(
            "creating a token on {base}: {status}{hint}: {}",
            String::from_utf8_lossy(&body[..body.len().min(512)])
        ));
    }
    let v: Value = serde_json::from_slice(&body)
        .map_err(|e| format!("creating a token on {base}: the answer is not JSON: {e}"))?;
    let token = v["token"]
        .as_str()
        .ok_or_else(|| format!("creating a token on {base}: no `token` in the answer"))?;
    Token::parse(token).map_err(|e| format!("creating a token on {base}: {e}"))
}

/// The status of `GET /api/v1beta1/realms?limit=1` on `base` through
/// `http` (0 if it failed).
async fn probe(http: &reqwest::Client, base: &str) -> u16 {
    match http
        .get(format!("{base}/api/v1beta1/realms?limit=1"))
        .send()
        .await
    {
        Ok(resp) => resp.status().as_u16(),
        Err(_) => 0,
    }
}

/// Whether `token` is accepted on `base` now (a read answers 200).
pub async fn accepted(token: &Token, base: &str) -> bool {
    let http = client(reqwest::Client::builder(), Some(token));
    probe(&http, base).await == 200
}

/// Checks that every server of `bases` accepts `token` (with several,
/// replicas of one store, which re-read the tokens every 2 s: waits for
/// each, at most 15 s), then that each refuses an anonymous request (401):
/// from then on, every request needs the token, so one without shows as an
/// error in the figures.
pub async fn check(token: &Token, bases: &[String]) -> Result<(), String> {
    let authed = client(reqwest::Client::builder(), Some(token));
    let anonymous = reqwest::Client::new();
    let wait = if bases.len() > 1 {
        Duration::from_secs(15)
    } else {
        Duration::ZERO
    };
    for base in bases {
        let deadline = Instant::now() + wait;
        loop {
            match probe(&authed, base).await {
                200 => break,
                status if Instant::now() >= deadline => {
                    return Err(format!(
                        "{base} does not accept the token (a read answers {status})"
                    ));
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        match probe(&anonymous, base).await {
            401 => {}
            status => {
                return Err(format!(
                    "{base} answers an anonymous read {status}, not 401: \
                     authentication is not on"
                ));
            }
        }
    }
    Ok(())
}

/// A reqwest client from `builder` whose every request carries `token`
/// (if any).
pub fn client(builder: reqwest::ClientBuilder, token: Option<&Token>) -> reqwest::Client {
    match token {
        Some(t) => builder.default_headers(t.headers()),
        None => builder,
    }
    .build()
    .expect("client")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_trimmed_checked_and_never_shown() {
        let t = Token::parse(" mh_0123abcd\n").expect("valid");
        assert_eq!(t.header_value(), "Bearer mh_0123abcd");
        assert_eq!(t.raw_line(), b"\r\nauthorization: Bearer mh_0123abcd");
        assert_eq!(format!("{t:?}"), "Token(..)");
        assert_eq!(format!("{:?}", Auth::Given(t.clone())), "Given(Token(..))");
        let headers = t.headers();
        let value = headers.get(AUTHORIZATION).expect("authorization");
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Bearer mh_0123abcd");
        // A header line cannot be broken out of.
        for bad in ["", "  \n", "mh_1\r\nx-evil: 1", "mh 1", "mh_\u{e9}"] {
            let err = Token::parse(bad).unwrap_err();
            assert!(!err.contains("mh"), "{err}");
        }
    }

    #[test]
    fn the_command_line_chooses_how_to_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "mh_fromfile\n").unwrap();
        let given = |a: Auth| match a {
            Auth::Given(t) => t.header_value(),
            other => format!("{other:?}"),
        };
        assert!(matches!(
            Auth::choose(false, None, Some("mh_env")),
            Ok(Auth::Off)
        ));
        assert!(matches!(Auth::choose(true, None, None), Ok(Auth::Create)));
        assert_eq!(
            given(Auth::choose(true, None, Some("mh_env")).unwrap()),
            "Bearer mh_env"
        );
        assert_eq!(
            given(Auth::choose(true, Some(&file), Some("mh_env")).unwrap()),
            "Bearer mh_fromfile"
        );
        let missing = dir.path().join("none");
        assert!(Auth::choose(true, Some(&missing), None).is_err());
        assert!(Auth::choose(true, None, Some("")).is_err());
        // A fresh server knows no given token: one is created on it.
        assert!(matches!(
            Auth::choose(true, None, Some("mh_env")).unwrap().fresh(),
            Auth::Create
        ));
        assert!(matches!(Auth::Off.fresh(), Auth::Off));
    }

    #[test]
    fn the_token_request_is_an_admin_named_after_the_run() {
        assert_eq!(token_name("18f3a"), "bench-18f3a");
        assert_eq!(
            token_request("bench-18f3a"),
            json!({"name": "bench-18f3a", "role": "admin"})
        );
    }
}
