//! Running as a host service, against the real binary: readiness and
//! stopping reported to a service manager through `NOTIFY_SOCKET`
//! (systemd's `Type=notify`), listeners given in the environment, and the
//! shell completions and manual pages the package ships.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// A server process, killed if the test ends without stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `modelhub serve` on a fresh database in `dir` with `env`, its
/// stdout and stderr discarded (readiness is learnt from the notify socket
/// alone).
fn serve(dir: &Path, env: &[(&str, &str)]) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .arg("serve")
        .arg("--data")
        .arg(dir.join("hub.redb"))
        .env_remove("MODELHUB_LISTEN")
        .env_remove("NOTIFY_SOCKET")
        .env("MODELHUB_SPARE_SPACE", "0")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn modelhub");
    Running(child)
}

/// The next notification on `socket` (waiting up to 30 s).
fn next_message(socket: &UnixDatagram, server: &mut Running) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8(buf[..n].to_vec()).expect("a UTF-8 notification"),
        Err(e) => {
            let _ = server.0.kill();
            let mut log = String::new();
            let _ = server.0.stderr.take().unwrap().read_to_string(&mut log);
            panic!("no notification ({e}); the server's log: {log}");
        }
    }
}

/// The value of `KEY=` in a notification.
fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// Sends SIGTERM and waits for a clean exit.
fn terminate(server: &mut Running) {
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn wait_success(server: &mut Running) {
    let status = server.0.wait().expect("wait");
    let mut log = String::new();
    let _ = server.0.stderr.take().unwrap().read_to_string(&mut log);
    assert!(status.success(), "exited with {status}; log: {log}");
}

#[test]
fn ready_is_sent_once_every_listener_accepts_and_stopping_at_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let sock = dir.path().join("modelhub.sock");
    // Both listeners from one comma-separated variable, as the package's
    // /etc/default/modelhub gives them.
    let listen = format!("127.0.0.1:0,unix:{}", sock.display());
    let mut server = serve(
        dir.path(),
        &[
            ("MODELHUB_LISTEN", listen.as_str()),
            ("NOTIFY_SOCKET", notify_path.to_str().unwrap()),
        ],
    );

    let ready = next_message(&notify, &mut server);
    assert_eq!(field(&ready, "READY"), Some("1"), "{ready:?}");
    let status = field(&ready, "STATUS").expect("a STATUS line");
    let addresses: Vec<&str> = status
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{status:?}"))
        .split(", ")
        .collect();
    assert_eq!(addresses.len(), 2, "{status:?}");
    assert!(addresses[0].starts_with("http://127.0.0.1:"), "{status:?}");
    assert_eq!(addresses[1], format!("unix:{}", sock.display()));

    // At READY, both listeners answer at once, without a retry.
    let tcp = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = tcp
        .get(format!("{}/healthz", addresses[0]))
        .send()
        .expect("GET /healthz over TCP right after READY=1");
    assert_eq!(r.status(), 200);
    let unix = reqwest::blocking::Client::builder()
        .unix_socket(sock.as_path())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = unix
        .get("http://localhost/healthz")
        .send()
        .expect("GET /healthz over the unix socket right after READY=1");
    assert_eq!(r.status(), 200);

    terminate(&mut server);
    let stopping = next_message(&notify, &mut server);
    assert_eq!(field(&stopping, "STOPPING"), Some("1"), "{stopping:?}");
    assert_eq!(
        field(&stopping, "STATUS"),
        Some("stopping: shutdown requested")
    );
    wait_success(&mut server);
}

#[test]
#[cfg(target_os = "linux")]
fn an_abstract_notify_socket_is_reached_and_a_missing_one_is_no_failure() {
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::net::SocketAddr;

    let dir = tempfile::tempdir().unwrap();
    let name = format!("modelhub-service-test-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let notify = UnixDatagram::bind_addr(&addr).unwrap();
    let at_name = format!("@{name}");
    let mut server = serve(
        dir.path(),
        &[
            ("MODELHUB_LISTEN", "127.0.0.1:0"),
            ("NOTIFY_SOCKET", at_name.as_str()),
        ],
    );
    let ready = next_message(&notify, &mut server);
    assert_eq!(field(&ready, "READY"), Some("1"), "{ready:?}");
    terminate(&mut server);
    let stopping = next_message(&notify, &mut server);
    assert_eq!(field(&stopping, "STOPPING"), Some("1"), "{stopping:?}");
    wait_success(&mut server);

    // Nobody listens at the path: the server warns and goes on serving.
    let gone = dir.path().join("no-manager");
    let mut server = serve(
        dir.path(),
        &[
            ("MODELHUB_LISTEN", "127.0.0.1:0"),
            ("NOTIFY_SOCKET", gone.to_str().unwrap()),
        ],
    );
    let mut stderr = server.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut log = String::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            log.push_str(&String::from_utf8_lossy(&buf[..n]));
            if log.contains("cannot notify the service manager") {
                let _ = tx.send(log.clone());
            }
        }
        let _ = tx.send(log);
    });
    let log = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server's log");
    assert!(
        log.contains("cannot notify the service manager"),
        "no warning in the log: {log}"
    );
    assert!(
        server.0.try_wait().unwrap().is_none(),
        "a server without a manager exited: {log}"
    );
    terminate(&mut server);
    let status = server.0.wait().unwrap();
    assert!(status.success(), "exited with {status}");
}

/// Runs `modelhub ARGS` to completion.
fn modelhub(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_modelhub"))
        .args(args)
        .output()
        .expect("run modelhub");
    assert!(
        out.status.success(),
        "modelhub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn completions_for_each_shell_know_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = String::from_utf8(modelhub(&["completions", shell]).stdout).unwrap();
        assert!(!script.trim().is_empty(), "{shell}: empty");
        for word in ["serve", "token", "listen", "socket-group"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let bash = modelhub(&["completions", "bash"]).stdout;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("modelhub.bash");
    std::fs::write(&file, bash).unwrap();
    let check = Command::new("bash").arg("-n").arg(&file).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn man_pages_document_every_subcommand_and_the_serve_flags() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man1");
    modelhub(&["man", "--dir", out.to_str().unwrap()]);
    let page = |name: &str| {
        let path = out.join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    for name in [
        "modelhub.1",
        "modelhub-serve.1",
        "modelhub-token.1",
        "modelhub-token-create.1",
        "modelhub-apply.1",
        "modelhub-get.1",
        "modelhub-backup.1",
        "modelhub-restore.1",
        "modelhub-completions.1",
    ] {
        let text = page(name);
        // The title comes before any section (after roff's preamble of
        // string definitions).
        let th = text
            .find("\n.TH ")
            .unwrap_or_else(|| panic!("{name}: no .TH"));
        let sh = text
            .find("\n.SH ")
            .unwrap_or_else(|| panic!("{name}: no .SH"));
        assert!(th < sh, "{name}: .TH after a section");
    }
    let serve = page("modelhub-serve.1");
    for flag in [
        "listen",
        "socket\\-group",
        "data",
        "tls\\-cert",
        "store",
        "etcd\\-endpoints",
        "max\\-connections",
    ] {
        assert!(serve.contains(&format!("\\-\\-{flag}")), "no --{flag}");
    }
    // With the environment variable of each flag.
    assert!(serve.contains("MODELHUB_LISTEN"));
    assert!(serve.contains("MODELHUB_DATA"));
    let main = page("modelhub.1");
    assert!(main.contains("modelhub\\-serve(1)"), "no SEE ALSO of serve");
}
