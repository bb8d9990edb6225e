//! The transport against the real binary: unix sockets (mode, group,
//! stale and live sockets, peer credentials), TLS (server certificates,
//! client certificates, reload), and slow or greedy clients (header, idle
//! and body timeouts, header limits, the connection cap).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Server;
use modelhub::client::{Client, ClientOptions, Token};
use modelhub::model::Kind;

/// Whether the server's log comes to hold `needle` within 5 s (the log
/// is read from its stderr by another thread).
fn logged(s: &Server, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !s.log_text().contains(needle) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// A blocking client over the unix socket at `path`.
fn unix_client(path: &Path) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .unix_socket(path)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The host:port of an `http://` or `https://` address.
fn host_port(address: &str) -> String {
    address.split("://").nth(1).unwrap().to_string()
}

/// Starts the binary with `args` expecting it to refuse to start; its
/// stderr.
fn refused_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .arg("serve")
        .arg("--data")
        .arg(dir.path().join("hub.redb"))
        .args(args)
        .env("MODELHUB_SPARE_SPACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_unix_socket_has_its_mode_and_group_carries_peer_credentials_and_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("modelhub.sock");
    let listen = format!("unix:{}", sock.display());
    let root = rustix::process::geteuid().is_root();
    // Root may give the socket any group: use one it is not in.
    let (group_args, want_gid) = if root {
        (vec!["--socket-group", "1"], 1)
    } else {
        (vec![], rustix::process::getegid().as_raw())
    };
    let mut args = vec!["--listen", &listen];
    args.extend(group_args);
    let mut s = Server::start_args(&args);
    assert_eq!(s.addresses[1], listen);
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    assert_eq!(meta.gid(), want_gid);

    let http = unix_client(&sock);
    let r = http.get("http://localhost/healthz").send().unwrap();
    assert_eq!(r.status(), 200);

    // The Rust client over the socket: a create and a read.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Client::connect(&listen, &ClientOptions::default()).unwrap();
        assert_eq!(c.server(), listen);
        let realm: modelhub::model::AnyObject = modelhub::api::v1beta1::decode_document(
            serde_json::json!({"apiVersion": "v1beta1", "kind": "Realm", "metadata": {"name": "over-socket"}}),
        )
        .unwrap();
        c.create(&realm).await.unwrap();
        let (realms, _) = c.list(Kind::Realm, &[]).await.unwrap();
        assert_eq!(realms.len(), 1);
    });
    // The connection's peer is the socket's, with our credentials.
    let uid = rustix::process::geteuid().as_raw();
    assert!(
        logged(&s, &format!("peer=Unix {{ uid: {uid}, gid: ")),
        "no unix peer in the log: {}",
        s.log_text()
    );

    s.stop();
    assert!(!sock.exists(), "the socket is removed at a clean stop");
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_or_another_file_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    // A socket file nobody listens on: what a killed server leaves.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let listen = format!("unix:{}", sock.display());
    let s = Server::start_args(&["--listen", &listen]);
    let r = unix_client(&sock)
        .get("http://localhost/healthz")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    // A second server on the live socket refuses to start, and the first
    // keeps its socket.
    let err = refused_start(&["--listen", "127.0.0.1:0", "--listen", &listen]);
    assert!(err.contains("another server is listening"), "{err}");
    let r = unix_client(&sock)
        .get("http://localhost/healthz")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(s);

    // A file that is not a socket is never replaced.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").unwrap();
    let err = refused_start(&["--listen", &format!("unix:{}", file.display())]);
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    // No private directory is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".modelhub-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_socket_group_the_server_cannot_use_refuses_start() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix:{}", dir.path().join("m.sock").display());
    let err = refused_start(&[
        "--listen",
        &listen,
        "--socket-group",
        "no-such-group-for-modelhub",
    ]);
    assert!(err.contains("no such group"), "{err}");
    if rustix::process::geteuid().is_root() {
        println!("skipped the membership check: root may use any group");
        return;
    }
    let mine = rustix::process::getgroups().unwrap();
    let other = (1..60000u32)
        .find(|g| {
            *g != rustix::process::getegid().as_raw()
                && !mine.contains(&rustix::fs::Gid::from_raw(*g))
        })
        .unwrap();
    let err = refused_start(&["--listen", &listen, "--socket-group", &other.to_string()]);
    assert!(err.contains("is not in group"), "{err}");
}

/// A test PKI: a CA, certificates it signs, written as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Issuer<'static, rcgen::KeyPair>,
    ca_pem: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        Pki {
            dir,
            ca: rcgen::Issuer::new(params, key),
            ca_pem,
        }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Signs a certificate for `names` (SANs) with CN `cn`; its PEM and
    /// its key's PEM.
    fn issue(&self, cn: &str, names: &[&str], client: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![if client {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Writes a server certificate for 127.0.0.1 and localhost to
    /// `cert`/`key` (replacing them whole).
    fn server_files(&self, cert: &Path, key: &Path) {
        let (c, k) = self.issue("modelhub", &["127.0.0.1", "localhost"], false);
        for (path, text) in [(cert, c), (key, k)] {
            let temp = path.with_extension("new");
            std::fs::write(&temp, text).unwrap();
            std::fs::rename(&temp, path).unwrap();
        }
    }

    fn trusting(&self) -> reqwest::blocking::ClientBuilder {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
    }
}

#[test]
fn tls_lets_a_client_trusting_the_ca_in_and_refuses_plain_http_and_strangers() {
    let pki = Pki::new("test CA");
    let (cert, key) = (pki.dir.path().join("s.pem"), pki.dir.path().join("s.key"));
    pki.server_files(&cert, &key);
    let s = Server::start_args(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-handshake-timeout",
        "1s",
    ]);
    assert!(s.base.starts_with("https://127.0.0.1:"), "{}", s.base);
    let hp = host_port(&s.base);

    let good = pki.trusting().build().unwrap();
    assert_eq!(
        good.get(format!("{}/healthz", s.base))
            .send()
            .unwrap()
            .status(),
        200
    );
    let h2 = pki.trusting().http2_prior_knowledge().build().unwrap();
    let r = h2.get(format!("{}/healthz", s.base)).send().unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_2)
    );
    // By name too (the SAN localhost).
    let port = hp.rsplit(':').next().unwrap();
    let by_name = format!("https://localhost:{port}/healthz");
    assert_eq!(good.get(&by_name).send().unwrap().status(), 200);

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    assert!(plain.get(format!("http://{hp}/healthz")).send().is_err());
    // A client that does not trust the CA refuses the server.
    let stranger = Pki::new("another CA").trusting().build().unwrap();
    assert!(stranger.get(format!("{}/healthz", s.base)).send().is_err());
    // A client that never starts its handshake is cut off.
    let mut silent = TcpStream::connect(&hp).unwrap();
    let opened = Instant::now();
    assert!(closed_by(&mut silent, opened + Duration::from_secs(6)));
    assert!(opened.elapsed() >= Duration::from_millis(900));

    // The Rust client and the CLI with --ca-cert (given after the
    // subcommand, as kubectl allows).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let options = ClientOptions {
            ca_cert: Some(pki.ca_path()),
            ..ClientOptions::default()
        };
        let c = Client::connect(&s.base, &options).unwrap();
        let (realms, _) = c.list(Kind::Realm, &[]).await.unwrap();
        assert!(realms.is_empty());
    });
    let out = Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .args(["get", "realms", "--server", &s.base, "--ca-cert"])
        .arg(pki.ca_path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_client_certificates_are_optional_and_their_cn_reaches_the_peer() {
    let pki = Pki::new("test CA");
    let clients = Pki::new("client CA");
    let (cert, key) = (pki.dir.path().join("s.pem"), pki.dir.path().join("s.key"));
    pki.server_files(&cert, &key);
    let s = Server::start_args(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-client-ca",
        clients.ca_path().to_str().unwrap(),
    ]);
    let url = format!("{}/healthz", s.base);
    // An admin token (created anonymously: none exists yet), then tokens
    // named alice and bob.
    let plain = pki.trusting().build().unwrap();
    let mut admin = None::<String>;
    for (name, role) in [("ops", "admin"), ("alice", "reader"), ("bob", "reader")] {
        let mut req = plain
            .post(format!("{}/api/v1beta1/tokens", s.base))
            .json(&serde_json::json!({"name": name, "role": role}));
        if let Some(t) = &admin {
            req = req.bearer_auth(t);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), 201);
        let body: serde_json::Value = resp.json().unwrap();
        admin.get_or_insert_with(|| body["token"].as_str().unwrap().to_string());
    }
    let realms = format!("{}/api/v1beta1/realms", s.base);
    let (c, k) = clients.issue("alice", &[], true);
    let identity = reqwest::Identity::from_pem(format!("{c}\n{k}").as_bytes()).unwrap();
    let with_cert = pki.trusting().identity(identity).build().unwrap();
    assert_eq!(with_cert.get(&url).send().unwrap().status(), 200);
    // A known CN authenticates as its token (a reader: it may not write).
    assert_eq!(with_cert.get(&realms).send().unwrap().status(), 200);
    assert_eq!(
        with_cert
            .post(&realms)
            .json(&serde_json::json!({"metadata": {"name": "x"}}))
            .send()
            .unwrap()
            .status(),
        403
    );
    // No certificate, or one whose CN names no token: 401 on the API.
    assert_eq!(plain.get(&realms).send().unwrap().status(), 401);
    let (c, k) = clients.issue("carol", &[], true);
    let carol = reqwest::Identity::from_pem(format!("{c}\n{k}").as_bytes()).unwrap();
    let carol = pki.trusting().identity(carol).build().unwrap();
    let resp = carol.get(&realms).send().unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().unwrap().contains("carol"));
    assert!(
        logged(&s, "client_cn=alice"),
        "no CN in the log: {}",
        s.log_text()
    );
    // Without a certificate the TLS layer lets the client in
    // (authentication decides).
    assert_eq!(
        pki.trusting()
            .build()
            .unwrap()
            .get(&url)
            .send()
            .unwrap()
            .status(),
        200
    );
    // A certificate from a CA the server does not trust is refused.
    let (c, k) = Pki::new("rogue CA").issue("mallory", &[], true);
    let rogue = reqwest::Identity::from_pem(format!("{c}\n{k}").as_bytes()).unwrap();
    let rogue = pki.trusting().identity(rogue).build().unwrap();
    assert!(rogue.get(&url).send().is_err());
    assert!(!s.log_text().contains("client_cn=mallory"));

    // The CLI's --client-cert/--client-key.
    let (cp, kp) = (
        clients.dir.path().join("bob.pem"),
        clients.dir.path().join("bob.key"),
    );
    let (c, k) = clients.issue("bob", &[], true);
    std::fs::write(&cp, c).unwrap();
    std::fs::write(&kp, k).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .args(["--server", &s.base, "get", "realms", "--ca-cert"])
        .arg(pki.ca_path())
        .arg("--client-cert")
        .arg(&cp)
        .arg("--client-key")
        .arg(&kp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logged(&s, "client_cn=bob"));
}

#[test]
fn a_renewed_certificate_is_picked_up_without_a_restart() {
    let old = Pki::new("old CA");
    let (cert, key) = (old.dir.path().join("s.pem"), old.dir.path().join("s.key"));
    old.server_files(&cert, &key);
    let s = Server::start_args(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let url = format!("{}/healthz", s.base);
    assert_eq!(
        old.trusting()
            .build()
            .unwrap()
            .get(&url)
            .send()
            .unwrap()
            .status(),
        200
    );

    // A broken key first: the old pair stays in use.
    std::fs::write(&key, "not a key").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        old.trusting()
            .build()
            .unwrap()
            .get(&url)
            .send()
            .unwrap()
            .status(),
        200
    );
    assert!(logged(&s, "TLS certificate not reloaded"));

    let new = Pki::new("new CA");
    new.server_files(&cert, &key);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A fresh client each time: a new connection, a new handshake.
        if new.trusting().build().unwrap().get(&url).send().is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(old.trusting().build().unwrap().get(&url).send().is_err());
    assert!(logged(&s, "TLS certificate reloaded"));
}

/// Reads from `conn` until it is closed (EOF or an error) or `until`;
/// whether it was closed.
fn closed_by(conn: &mut TcpStream, until: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        conn.set_read_timeout(Some(left)).unwrap();
        match conn.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Sends a whole request on `conn` and reads one response's status line
/// (the response must fit one read of 64 KiB).
fn exchange(conn: &mut TcpStream, request: &str) -> String {
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = conn.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn slowloris_connections_are_closed_after_the_header_timeout() {
    const CONNS: usize = 1000;
    // The server inherits the raised limit.
    match rlimit::increase_nofile_limit(4 * CONNS as u64) {
        Ok(n) if n >= 2 * CONNS as u64 + 200 => {}
        other => {
            println!("skipped: cannot raise RLIMIT_NOFILE enough ({other:?})");
            return;
        }
    }
    let s = Server::start_args(&["--header-timeout", "2s"]);
    let hp = host_port(&s.base);
    let start = Instant::now();
    let mut conns: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let mut c = TcpStream::connect(&hp).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            c
        })
        .collect();
    // HTTP/2 clients that stall in the preface or never open a stream.
    for preface in [
        &b"PRI * HTTP/2.0\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        for _ in 0..10 {
            let mut c = TcpStream::connect(&hp).unwrap();
            c.write_all(preface).unwrap();
            conns.push(c);
        }
    }
    let opened = start.elapsed();
    // A well-behaved client meanwhile.
    let mut good = TcpStream::connect(&hp).unwrap();
    assert_eq!(exchange(&mut good, HEALTHZ), "HTTP/1.1 200 OK");
    // All closed within the timeout plus a few seconds (from the moment
    // the last one opened).
    let until = Instant::now() + Duration::from_secs(2 + 4);
    let mut open = 0;
    let total = conns.len();
    for c in &mut conns {
        if !closed_by(c, until) {
            open += 1;
        }
    }
    let took = start.elapsed();
    println!("{total} stalled connections opened in {opened:?}, all closed after {took:?}");
    assert_eq!(open, 0, "{open} of {total} still open after {took:?}");
}

#[test]
fn an_oversized_head_is_refused() {
    let s = Server::start_args(&["--max-header-bytes", "16KiB", "--max-headers", "50"]);
    let hp = host_port(&s.base);
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let status = exchange(&mut TcpStream::connect(&hp).unwrap(), &big);
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    let many: String = (0..60).map(|i| format!("X-H{i}: v\r\n")).collect();
    let status = exchange(
        &mut TcpStream::connect(&hp).unwrap(),
        &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
    );
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    // Within the limits, fine.
    let status = exchange(&mut TcpStream::connect(&hp).unwrap(), HEALTHZ);
    assert_eq!(status, "HTTP/1.1 200 OK");
}

#[test]
fn past_the_connection_cap_new_tcp_connections_are_closed_but_open_ones_and_the_socket_work() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    let listen = format!("unix:{}", sock.display());
    let s = Server::start_args(&["--max-connections", "4", "--listen", &listen]);
    let hp = host_port(&s.base);
    let mut open: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(&hp).unwrap();
            assert_eq!(exchange(&mut c, HEALTHZ), "HTTP/1.1 200 OK");
            c
        })
        .collect();
    // The fifth is accepted and closed at once.
    let mut extra = TcpStream::connect(&hp).unwrap();
    let _ = extra.write_all(HEALTHZ.as_bytes());
    assert!(closed_by(
        &mut extra,
        Instant::now() + Duration::from_secs(5)
    ));
    // The open ones keep working, and the unix socket has its reserve.
    for c in &mut open {
        assert_eq!(exchange(c, HEALTHZ), "HTTP/1.1 200 OK");
    }
    let r = unix_client(&sock)
        .get("http://localhost/healthz")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    assert!(logged(&s, "connection cap reached"));
    // Once one closes, a new connection gets in.
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = TcpStream::connect(&hp).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = c.write_all(HEALTHZ.as_bytes());
        let mut buf = [0u8; 512];
        if matches!(c.read(&mut buf), Ok(n) if n > 0) {
            break;
        }
        assert!(Instant::now() < deadline, "no slot freed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_idle_connection_is_closed_but_not_one_with_a_watch_open() {
    let s = Server::start_args(&[
        "--idle-timeout",
        "2s",
        "--header-timeout",
        "30s",
        "--bookmark-interval",
        "500ms",
    ]);
    let hp = host_port(&s.base);
    let mut idle = TcpStream::connect(&hp).unwrap();
    assert_eq!(exchange(&mut idle, HEALTHZ), "HTTP/1.1 200 OK");
    // An HTTP/2 connection, idle after one request, is closed too (its
    // client would reconnect unseen: the log tells).
    let h2 = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2.get(format!("{}/healthz", s.base)).send().unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    drop(r);
    let mut watching = TcpStream::connect(&hp).unwrap();
    watching
        .write_all(b"GET /api/v1beta1/watch HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    assert!(
        closed_by(&mut idle, start + Duration::from_secs(8)),
        "{}",
        s.log_text()
    );
    println!("idle connection closed after {:?}", start.elapsed());
    // The watch stream is still sending bookmarks 4 s on.
    std::thread::sleep(Duration::from_secs(4).saturating_sub(start.elapsed()));
    let mut got = 0;
    watching
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 65536];
    while let Ok(n) = watching.read(&mut buf) {
        assert!(n > 0, "the watch connection was closed");
        got += n;
        if start.elapsed() > Duration::from_secs(5) {
            break;
        }
    }
    assert!(got > 0, "no bookmarks");
    let deadline = Instant::now() + Duration::from_secs(5);
    while s.log_text().matches("closing an idle connection").count() < 2 {
        assert!(Instant::now() < deadline, "{}", s.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(h2);
}

#[test]
fn a_kept_alive_connection_may_idle_past_the_header_timeout_but_not_dawdle_over_a_head() {
    let s = Server::start_args(&["--header-timeout", "1s", "--idle-timeout", "30s"]);
    let hp = host_port(&s.base);
    let mut c = TcpStream::connect(&hp).unwrap();
    assert_eq!(exchange(&mut c, HEALTHZ), "HTTP/1.1 200 OK");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(exchange(&mut c, HEALTHZ), "HTTP/1.1 200 OK");
    // Half of the next head, then nothing: closed after the header timeout.
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let sent = Instant::now();
    assert!(closed_by(&mut c, sent + Duration::from_secs(5)));
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "{:?}",
        sent.elapsed()
    );
}

#[test]
fn a_stalled_request_body_ends_with_408() {
    let s = Server::start_args(&["--body-timeout", "1s"]);
    let hp = host_port(&s.base);
    let mut c = TcpStream::connect(&hp).unwrap();
    let started = Instant::now();
    let status = exchange(
        &mut c,
        "POST /api/v1beta1/realms HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{\"metadata\"",
    );
    assert_eq!(status, "HTTP/1.1 408 Request Timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn global_client_flags_go_anywhere_and_a_token_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    let listen = format!("unix:{}", sock.display());
    let s = Server::start_args(&["--listen", &listen]);
    // The first token, created over the unix socket by its owner (an
    // admin there without a token); printed once on stdout.
    let out = Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .args(["token", "create", "--name", "cli", "--role", "reader"])
        .args(["--server", &listen])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created = String::from_utf8(out.stdout).unwrap();
    let secret = created.trim();
    assert!(
        secret.starts_with("mh_") && !created.trim().contains('\n'),
        "{created}"
    );
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{secret}\n")).unwrap();
    for args in [
        vec![
            "--server",
            listen.as_str(),
            "--token",
            secret,
            "get",
            "realms",
        ],
        vec![
            "get",
            "realms",
            "--server",
            listen.as_str(),
            "--token",
            secret,
        ],
        vec![
            "get",
            "--server",
            listen.as_str(),
            "realms",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_modelhub"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A failure does not show the token.
    let out = Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .args(["get", "realms", "--server", "unix:/nonexistent/m.sock"])
        .env("MODELHUB_TOKEN", secret)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("unix:/nonexistent/m.sock"), "{stderr}");
    assert!(!stderr.contains(secret), "{stderr}");
    let help = Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .args(["get", "--help"])
        .env("MODELHUB_TOKEN", secret)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains(secret));
    let options = ClientOptions {
        token: Some(Token::new(secret)),
        ..ClientOptions::default()
    };
    let c = Client::connect(&listen, &options).unwrap();
    assert!(!format!("{options:?} {c:?}").contains(secret));
    drop(s);
}

#[test]
fn the_watcher_sends_the_token_on_every_reconnect() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // A fake server that records each request head and ends each
        // watch at once, so that the watcher reconnects.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            loop {
                let (mut c, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let n = c.read(&mut buf).await.unwrap_or(0);
                    let _ = tx.send(String::from_utf8_lossy(&buf[..n]).into_owned());
                    let _ = c
                        .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                });
            }
        });
        let options = ClientOptions {
            token: Some(Token::new("watch-token")),
            ..ClientOptions::default()
        };
        let client = Client::connect(&base, &options).unwrap();
        let watcher = modelhub::client::watcher::Watcher::new(client, Default::default())
            .backoff(Duration::from_millis(10), Duration::from_millis(20));
        let _events = watcher.run();
        for _ in 0..3 {
            let head = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a reconnect")
                .unwrap();
            assert!(head.starts_with("GET /api/v1beta1/watch"), "{head}");
            assert!(
                head.to_ascii_lowercase().contains("authorization: bearer watch-token"),
                "{head}"
            );
        }
    });
}
