//! Change control (issue #18): the `start` and `reload` records carry the policy diff against
//! the previous generation, field by field; every applied configuration is archived read-only
//! under `<data_dir>/config/`; `penghubung audit config` prints one; the review report lists
//! the changes, the agreements never used and those about to end. The real binary throughout.

mod support;

use std::process::Command;

use http::Version;
use penghubung::audit::Record;
use penghubung::changes::{Action, Change, Kind};
use support::{audited_config, quiet_serve, recording_upstream, Client, Edit, Served, TestPki};

const BIN: &str = env!("CARGO_BIN_EXE_penghubung");
const NIK_PATH: &str = "/dukcapil/penduduk/penduduk/7208014101900001";

/// `penghubung ARGS`: (success, stdout, stderr).
fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn configuration_records(pki: &TestPki) -> Vec<Record> {
    let mut all = Vec::new();
    penghubung::audit::walk(&pki.path().join("data/audit"), |r, _| {
        if r.kind == "admin" && (r.outcome == "start" || r.outcome == "reload") {
            all.push(r.clone());
        }
        Ok(())
    })
    .unwrap();
    all
}

/// `kind id change field,field`, one line per change.
fn said(changes: &[Change]) -> Vec<String> {
    changes
        .iter()
        .map(|c| {
            let fields: Vec<&str> = c.fields.iter().map(|f| f.field.as_str()).collect();
            let kind = serde_json::to_value(c.kind).unwrap();
            let change = serde_json::to_value(c.change).unwrap();
            format!(
                "{} {} {} {}",
                kind.as_str().unwrap(),
                c.id,
                change.as_str().unwrap(),
                fields.join(",")
            )
            .trim_end()
            .to_owned()
        })
        .collect()
}

fn in_days(days: i64) -> String {
    (time::OffsetDateTime::now_utc().date() + time::Duration::days(days)).to_string()
}

/// The gateway on `file` as it is (its ports included), killed when dropped.
struct Restarted(std::process::Child);

impl Restarted {
    async fn start(file: &std::path::Path, port: u16) -> Restarted {
        let mut child = quiet_serve(file).spawn().unwrap();
        for _ in 0..400 {
            assert!(child.try_wait().unwrap().is_none(), "the gateway exited");
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Restarted(child);
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the gateway did not listen again on {port}");
    }
}

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn reload(admin: u16) -> (u16, serde_json::Value) {
    let url = format!("http://127.0.0.1:{admin}/v1/reload");
    let out = Command::new("curl")
        .args(["-s", "-X", "POST", "-w", "\n%{http_code}", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap();
    (
        status.parse().unwrap(),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn each_change_is_recorded_field_by_field_archived_and_reported() {
    let pki = TestPki::new();
    let (upstream, _recorder) = recording_upstream(&pki).await;
    let text = audited_config(&upstream, &pki);
    let served = Served::start(pki.path(), &text, quiet_serve).await;
    let file = served.file.clone();
    let config = file.to_str().unwrap();

    // The first start: everything is new, and the file is archived read-only.
    let first = configuration_records(&pki);
    assert_eq!(first.len(), 1);
    let started = std::fs::read_to_string(&file).unwrap();
    let sha = penghubung::keys::sha256_hex(started.as_bytes());
    assert_eq!(first[0].config_sha256.as_deref(), Some(sha.as_str()));
    let added = first[0].changes.as_deref().unwrap();
    assert!(added.iter().all(|c| c.change == Action::Added), "{added:?}");
    for entry in ["dinkes", "dukcapil", "dukcapil-penduduk", "PKS-TEST-1"] {
        assert!(added.iter().any(|c| c.id == entry), "{entry}: {added:?}");
    }
    let archived = pki.path().join(format!("data/config/{sha}.toml"));
    assert!(std::fs::metadata(&archived)
        .unwrap()
        .permissions()
        .readonly());
    let (ok, out, err) = cli(&["audit", "config", &sha[..12], "--config", config]);
    assert!(ok, "{err}");
    assert_eq!(out, started);

    // One reload with a change of every kind.
    let edited = started
        .edit(
            "name = \"Dinas Kesehatan\"",
            "name = \"Dinas Kesehatan Kabupaten\"\nclearance_basis = \"Keputusan Kepala Dinas 12/2026\"",
        )
        .edit("timeout = \"5s\"", "timeout = \"7s\"")
        .edit(
            "  [[services.operations]]\n  id = \"verifikasi\"\n  method = \"POST\"\n  path = \"/verifikasi\"\n",
            "",
        )
        .edit(
            "  path = \"/faskes\"\n",
            "  path = \"/faskes\"\n\n  [[services.operations]]\n  id = \"detail-faskes\"\n  method = \"GET\"\n  path = \"/faskes/{id}\"\n",
        )
        .edit(
            "purpose = \"Pengujian gateway\"\nvalid_from = 2020-01-01\nvalid_until = 2099-12-31\n",
            &format!(
                "purpose = \"Pelayanan kesehatan\"\nvalid_from = 2020-01-01\nvalid_until = {}\n\n\
                 [[agreements]]\nid = \"PKS-TEST-2\"\nconsumer = \"dukcapil\"\nservice = \"dinkes-faskes\"\n\
                 purpose = \"Rujukan\"\nvalid_from = 2020-01-01\nvalid_until = {}\n\n\
                 [[peers]]\nid = \"spl-sulteng\"\nkind = \"provincial\"\nidentities = [\"spl.sulteng.test\"]\n\n\
                 [governance]\nowner_consent = \"warn\"\n",
                in_days(45),
                in_days(20)
            ),
        );
    std::fs::write(&file, &edited).unwrap();
    let (status, answer) = reload(served.admin).await;
    assert_eq!(status, 200, "{answer}");
    let expected = [
        "section governance added",
        "agency dinkes changed clearance_basis,name",
        "peer spl-sulteng added",
        "service dukcapil-penduduk changed timeout",
        "operation dukcapil-penduduk/verifikasi removed",
        "operation dinkes-faskes/detail-faskes added",
        "agreement PKS-TEST-1 changed purpose,valid_until",
        "agreement PKS-TEST-2 added",
    ];
    let answered: Vec<Change> = serde_json::from_value(answer["changes"].clone()).unwrap();
    assert_eq!(said(&answered), expected);
    let records = configuration_records(&pki);
    let reloaded = records.last().unwrap();
    assert_eq!(reloaded.outcome, "reload");
    let changes = reloaded.changes.as_deref().unwrap();
    assert_eq!(said(changes), expected);
    // Field by field, with the values before and after.
    let purpose = &changes[6].fields[0];
    assert_eq!(purpose.old, Some("Pengujian gateway".into()));
    assert_eq!(purpose.new, Some("Pelayanan kesehatan".into()));
    assert_eq!(changes[1].kind, Kind::Agency);
    let new_sha = penghubung::keys::sha256_hex(edited.as_bytes());
    assert_eq!(reloaded.config_sha256.as_deref(), Some(new_sha.as_str()));
    let (ok, out, _) = cli(&["audit", "config", &new_sha, "--config", config]);
    assert!(ok);
    assert_eq!(out, edited);
    let (ok, listed, _) = cli(&["audit", "config", "--config", config]);
    assert!(ok);
    let mut both = [sha.clone(), new_sha.clone()];
    both.sort();
    assert_eq!(listed, format!("{}\n{}\n", both[0], both[1]));

    // An exchange under PKS-TEST-1; none under PKS-TEST-2.
    let dinkes = Client::new(served.addr(), &pki.ca, Some(&pki.dinkes), Version::HTTP_11);
    assert_eq!(dinkes.get(NIK_PATH).await.unwrap().status, 200);

    // A restart with the same file changes nothing, and says so.
    let (port, admin) = (served.port, served.admin);
    drop(served);
    let restarted = Restarted::start(&file, port).await;
    let records = configuration_records(&pki);
    let start = records.last().unwrap();
    assert_eq!(start.outcome, "start");
    assert_eq!(start.changes.as_deref(), Some(&[][..]));

    // The review report: the changes, the agreement never used, the two about to end.
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let audit_dir = pki.path().join("data/audit");
    let (ok, report, err) = cli(&[
        "report",
        "--audit",
        audit_dir.to_str().unwrap(),
        "--since",
        &today,
        "--until",
        &today,
        "--timezone",
        "UTC",
    ]);
    assert!(ok, "{err}");
    let section = |title: &str| {
        let from = report
            .find(title)
            .unwrap_or_else(|| panic!("{title}:\n{report}"));
        let rest = &report[from + title.len()..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_owned()
    };
    let changed = section("## Configuration changes");
    assert!(
        changed.contains("| reload | ") && changed.contains("| agreement `PKS-TEST-1` | changed | purpose: \"Pengujian gateway\" → \"Pelayanan kesehatan\""),
        "{changed}"
    );
    assert!(changed.contains("| operation `dukcapil-penduduk/verifikasi` | removed |"));
    let cleared = section("## Clearances and their basis");
    assert!(
        cleared.contains("| dinkes | terbatas | Keputusan Kepala Dinas 12/2026 |")
            && cleared.contains("| dukcapil | rahasia | — |"),
        "{cleared}"
    );
    let unused = section("## Agreements never used in the window");
    assert!(
        unused.contains("| PKS-TEST-2 | dukcapil | dinkes-faskes |"),
        "{unused}"
    );
    assert!(!unused.contains("PKS-TEST-1"), "{unused}");
    let soon = section("## Agreements ending within 30 days");
    assert!(
        soon.contains("| PKS-TEST-2 |") && soon.contains("| 20 |"),
        "{soon}"
    );
    assert!(!soon.contains("PKS-TEST-1"), "{soon}");
    let later = section("## Agreements ending within 31 to 60 days");
    assert!(
        later.contains("| PKS-TEST-1 |") && later.contains("| 45 |"),
        "{later}"
    );

    // A configuration that cannot be archived is not applied.
    let config_dir = pki.path().join("data/config");
    let kept = pki.path().join("config-kept");
    std::fs::rename(&config_dir, &kept).unwrap();
    std::fs::write(&config_dir, "not a directory").unwrap();
    std::fs::write(&file, edited.edit("timeout = \"7s\"", "timeout = \"9s\"")).unwrap();
    let (status, problem) = reload(admin).await;
    assert_eq!(status, 500, "{problem}");
    assert_eq!(problem["type"], "urn:penghubung:problem:reload-failed");
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("could not be archived"));
    let after = configuration_records(&pki);
    assert_eq!(
        after.last().unwrap().outcome,
        "start",
        "a reload was recorded"
    );
    drop(restarted);

    // An archived configuration altered behind the gateway's back is refused, not shown, and
    // the gateway does not start on a history it cannot read.
    std::fs::remove_file(&config_dir).unwrap();
    std::fs::rename(&kept, &config_dir).unwrap();
    let archived = config_dir.join(format!("{new_sha}.toml"));
    std::fs::write(&archived, "# rewritten\n").unwrap();
    let (ok, _, err) = cli(&["audit", "config", &new_sha, "--config", config]);
    assert!(!ok && err.contains("was altered"), "{err}");
    let err = support::serve_refused(&file);
    assert!(err.contains("was altered"), "{err}");
}
