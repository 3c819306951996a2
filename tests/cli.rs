//! The `penghubung` binary as an operator runs it: `serve` exits 0 on SIGTERM, and the demo's
//! printed curl commands work when pasted.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use http::Version;
use std::net::SocketAddr;

use support::Edit;
use support::{config_text, recording_upstream, replace_once, Client, Served, TestPki};

const BIN: &str = env!("CARGO_BIN_EXE_penghubung");

/// Kills the child on drop, so a failing test leaves no process behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (bounded) for the child to exit.
fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads stdout lines until one satisfies `last`, bounded by `within`. A thread keeps draining
/// stdout afterwards, so the child never writes into a closed pipe.
fn read_until(child: &mut Child, last: impl Fn(&str) -> bool, within: Duration) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + within;
    while let Ok(line) =
        rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        let done = last(&line);
        lines.push(line);
        if done {
            break;
        }
    }
    lines
}

/// The answer to `GET /dinkes/faskes` once the starting gateway answers (within 30 s).
async fn first_answer(client: &Client) -> support::Answer {
    for _ in 0..1200 {
        if let Ok(answer) = client.get("/dinkes/faskes").await {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the gateway never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_then_exits_zero_on_sigterm() {
    let pki = TestPki::new();
    let (upstream, recorder) = recording_upstream(&pki).await;
    let text = config_text(&upstream, "5s", "");
    let mut served = Served::start(pki.path(), &text, |file| {
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--config"])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    })
    .await;
    let client = Client::new(served.addr(), &pki.ca, Some(&pki.dinkes), Version::HTTP_11);
    assert_eq!(first_answer(&client).await.status, 200);
    assert_eq!(recorder.count(), 1);
    sigterm(&served.child);
    let status = wait_exit(&mut served.child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn demo_curl_commands_work_when_pasted() {
    if Command::new("curl").arg("--version").output().is_err() {
        panic!("curl is needed to check the demo's printed commands: apt-get install -y curl");
    }
    let work = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .current_dir(work.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = read_until(
        &mut child,
        |l| l.starts_with("penghubung agreement sign"),
        Duration::from_secs(60),
    );
    let mut guard = Guard(child);
    let commands: Vec<&String> = lines.iter().filter(|l| l.starts_with("curl ")).collect();
    assert_eq!(commands.len(), 8, "printed:\n{}", lines.join("\n"));
    let run = |cmd: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(work.path())
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(
        run(commands[0]).contains("\"nama\":\"WARGA CONTOH SATU\""),
        "{}",
        run(commands[0])
    );
    let again = run(commands[1]).to_ascii_lowercase();
    assert!(
        again.contains("\nage: ") && again.contains("warga contoh satu"),
        "the second lookup was not served from the cache:\n{again}"
    );
    let commands = [&commands[..1], &commands[2..]].concat();
    assert!(run(commands[1]).contains("\"cocok\":true"));
    let invalid = run(commands[2]);
    assert!(
        invalid.contains("urn:penghubung:problem:request-schema-violation")
            && invalid.contains("\"pointer\":\"/nik\""),
        "{invalid}"
    );
    let commands = [&commands[..2], &commands[3..]].concat();
    assert!(run(commands[2]).contains("Puskesmas Contoh Parigi"));
    let refused = run(commands[3]);
    assert!(
        refused.contains("urn:penghubung:problem:clearance-insufficient"),
        "{refused}"
    );
    let refusal = run(commands[4]);
    assert!(
        refusal.contains("404") && refusal.contains("urn:penghubung:problem:no-operation"),
        "{refusal}"
    );
    assert!(run(commands[5]).contains("refused at the TLS handshake"));
    sigterm(&guard.0);
    assert!(wait_exit(&mut guard.0, Duration::from_secs(15)).success());

    // The demo ships agreements its data owner signed; widened, one no longer loads, until the
    // owner signs it again with the printed command.
    let check = || run(&format!("{BIN} check --config demo/penghubung.toml"));
    assert!(check().contains("valid"), "{}", check());
    let config = work.path().join("demo/penghubung.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.edit_once("rate = \"20/s\"", "rate = \"40/s\""),
    )
    .unwrap();
    let refused = check();
    assert!(
        refused.contains("agreements[0].owner_signature") && refused.contains("`rate`"),
        "{refused}"
    );
    let terms = lines
        .iter()
        .find(|l| l.starts_with("penghubung agreement terms"))
        .unwrap();
    assert!(run(&terms.replacen("penghubung", BIN, 1)).contains("\"rate\":\"40/s\""));
    let sign = lines.last().unwrap().replacen("penghubung", BIN, 1);
    assert_eq!(run(&sign), "");
    assert!(check().contains("valid"), "{}", check());
}

#[test]
fn certs_lists_every_certificate_warns_and_fails_on_an_expired_one() {
    use time::{Duration as Span, OffsetDateTime};
    let pki = TestPki::new();
    let now = OffsetDateTime::now_utc();
    let soon = pki
        .ca
        // Ten days and a half: a certificate's times are whole seconds, and the days left are
        // counted down from the moment `certs` runs, so exactly ten days would read "9 days"
        // whenever a second boundary falls between issuing and checking.
        .issue_client_valid(
            "soon.test",
            now - Span::days(300),
            now + Span::days(10) + Span::hours(12),
        )
        .unwrap();
    let gone = pki
        .ca
        .issue_client_valid("gone.test", now - Span::days(400), now - Span::days(2))
        .unwrap();
    std::fs::write(pki.path().join("soon.crt"), &soon.cert_pem).unwrap();
    std::fs::write(pki.path().join("gone.crt"), &gone.cert_pem).unwrap();
    let base = config_text("https://127.0.0.1:9", "5s", "");
    let with_soon = base.edit(
        "client_ca = [\"ca.crt\"]",
        "client_ca = [\"ca.crt\", \"soon.crt\"]",
    );
    let run = |text: &str, args: &[&str]| {
        let file = support::write_config(pki.path(), text);
        let out = Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    let (status, out) = run(&with_soon, &["certs"]);
    assert!(status.success(), "{out}");
    for expected in [
        "tls.cert",
        "tls.client_ca[0]",
        "tls.client_ca[1]",
        "services[0].upstream_ca",
        "tls.crl[0]",
    ] {
        assert!(out.contains(expected), "{expected} missing:\n{out}");
    }
    assert!(
        out.contains("CN=soon.test") && out.contains("(10 days)  WARNING"),
        "{out}"
    );
    assert!(
        out.contains("CRL of CN=Test Regency CA") && out.contains("next update due"),
        "{out}"
    );
    assert!(out.contains("0 expired"), "{out}");
    // A higher threshold flags more; check shows the same inventory.
    let (_, out) = run(&with_soon, &["certs", "--warn-days", "400"]);
    assert!(out.contains("0 expired, 3 expiring"), "{out}");
    let (status, out) = run(&with_soon, &["check"]);
    assert!(
        status.success() && out.contains("certificates (warning under 30 days)"),
        "{out}"
    );
    assert!(out.contains("WARNING: no [audit] section"), "{out}");

    // An expired upstream CA: listed as EXPIRED, and both commands exit 1.
    let with_gone = with_soon.edit_once("upstream_ca = \"ca.crt\"", "upstream_ca = \"gone.crt\"");
    let (status, out) = run(&with_gone, &["certs"]);
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("CN=gone.test") && out.contains("EXPIRED") && out.contains("1 expired"),
        "{out}"
    );
    let (status, _) = run(&with_gone, &["check"]);
    assert!(!status.success());
}

/// Sends `signal` (e.g. `-HUP`) to the child.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn serve_reloads_on_sighup_and_with_watch_when_the_file_changes() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    for watch in [false, true] {
        let text = config_text(&upstream, "5s", "");
        let served = Served::start(pki.path(), &text, |file| {
            let mut command = Command::new(BIN);
            command
                .args(["serve", "--config"])
                .arg(file)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if watch {
                command.arg("--watch");
            }
            command
        })
        .await;
        let mut served = served;
        let text = std::fs::read_to_string(&served.file).unwrap();
        let client = Client::new(served.addr(), &pki.ca, Some(&pki.dinkes), Version::HTTP_11);
        let status = |client: Client| async move {
            client
                .get("/dinkes/faskes")
                .await
                .ok()
                .map(|a| a.status.as_u16())
        };
        assert_eq!(status(client.clone()).await, Some(200));
        // The new file removes the terbuka service; an invalid one in between changes nothing.
        // That it was read and refused, not merely not yet read, the failure counter says.
        let failures = || admin_metric(served.admin, "penghubung_config_reload_failures_total");
        assert_eq!(failures().await, 0.0);
        std::fs::write(
            &served.file,
            replace_once(&text, "prefix = \"/dinkes\"", "prefix = 5"),
        )
        .unwrap();
        if !watch {
            signal(&served.child, "-HUP");
        }
        let mut refused = false;
        for _ in 0..200 {
            if failures().await >= 1.0 {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(refused, "watch={watch}: the invalid file was never read");
        assert_eq!(
            status(client.clone()).await,
            Some(200),
            "an invalid file was applied"
        );
        let without = replace_once(&text, "prefix = \"/dinkes\"", "prefix = \"/dinkes-lama\"");
        std::fs::write(&served.file, without).unwrap();
        if !watch {
            signal(&served.child, "-HUP");
        }
        let mut after = None;
        for _ in 0..100 {
            after = status(client.clone()).await;
            if after == Some(404) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(after, Some(404), "watch={watch}: the reload did not take");
        sigterm(&served.child);
        assert!(wait_exit(&mut served.child, Duration::from_secs(15)).success());
    }
}

/// One sample of the gateway's `/metrics` on its (plain, loopback) admin port.
async fn admin_metric(admin: u16, name: &str) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", admin)).await else {
        return f64::NAN;
    };
    let _ = stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
        .await;
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_exchange_span() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    // Dinkes' agreement covers the lookup only.
    let text = replace_once(
        &config_text(&upstream, "5s", ""),
        "service = \"dukcapil-penduduk\"\npurpose",
        "service = \"dukcapil-penduduk\"\noperations = [\"get-penduduk\"]\npurpose",
    );
    let mut guard = Served::start(pki.path(), &text, |file| {
        let mut command = Command::new(BIN);
        command
            .args(["--log-format", "json", "serve", "--config"])
            .arg(file)
            .env("RUST_LOG", "info,penghubung=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    })
    .await;
    let client = Client::new(guard.addr(), &pki.ca, Some(&pki.dinkes), Version::HTTP_11);
    first_answer(&client).await;
    // Refused: Dinkes' agreement does not cover the verification operation.
    let refused = client
        .send(
            http::Request::post("/dukcapil/penduduk/verifikasi")
                .header(
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                )
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 403);
    let exchange_id = refused.headers["spl-exchange-id"]
        .to_str()
        .unwrap()
        .to_owned();
    sigterm(&guard.child);

    let stderr = guard.child.stderr.take().unwrap();
    let lines: Vec<serde_json::Value> = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .map(|line| {
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
        })
        .collect();
    let of_refusal: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["span"]["id"] == exchange_id.as_str())
        .collect();
    let refusal = of_refusal
        .iter()
        .find(|l| l["level"] == "INFO")
        .unwrap_or_else(|| panic!("no refusal line for {exchange_id}: {lines:#?}"));
    let span = &refusal["span"];
    assert_eq!(span["name"], "exchange");
    assert_eq!(span["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(span["consumer"], "dinkes");
    assert_eq!(span["service"], "dukcapil-penduduk");
    assert_eq!(span["operation"], "verifikasi");
    assert_eq!(span["outcome"], "operation-not-covered");
    let concluded = of_refusal
        .iter()
        .find(|l| l["fields"]["message"] == "exchange concluded")
        .unwrap_or_else(|| panic!("no access line for {exchange_id}: {lines:#?}"));
    assert_eq!(concluded["fields"]["status"], 403);
    let status = wait_exit(&mut guard.child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status:?}");
}

/// CPU time (user + system, in clock ticks) the process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; the fields after it are space-separated.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Out of file descriptors, a listener cannot take the connection waiting in its backlog, and
/// accept fails again at once: both listeners back off instead of spinning on it. The process
/// runs with `ulimit -n 64`, and more connections than that wait on each listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_back_off_when_out_of_descriptors() {
    let pki = TestPki::new();
    let (upstream, _) = recording_upstream(&pki).await;
    let text = config_text(&upstream, "5s", "");
    let guard = Served::start(pki.path(), &text, |file| {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("ulimit -n 64 && exec {BIN} serve --config \"$0\""))
            .arg(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    })
    .await;
    let (addr, admin) = (
        guard.addr(),
        SocketAddr::from(([127, 0, 0, 1], guard.admin)),
    );
    let client = Client::new(addr, &pki.ca, Some(&pki.dinkes), Version::HTTP_11);
    assert_eq!(first_answer(&client).await.status, 200);
    // Connections that never begin their TLS handshake hold a descriptor each for the
    // handshake timeout; these take every one there is, with more left waiting.
    let mut held = Vec::new();
    for target in [addr, admin] {
        for _ in 0..80 {
            held.push(tokio::net::TcpStream::connect(target).await.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = guard.child.id();
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_ticks(pid) - before;
    // Spinning on accept burns a core: about 200 ticks in 2 s at 100 Hz.
    assert!(
        used < 40,
        "{used} ticks of CPU in 2 s while out of descriptors"
    );
    drop(held);
    // Descriptors come back; the listener serves again.
    assert_eq!(first_answer(&client).await.status, 200);
}
