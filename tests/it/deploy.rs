//! The deployment recipes of deploy/ (README, "Deploying"): the systemd
//! unit and its upgrade drop-in pass `systemd-analyze verify` with the
//! built binary; the Kubernetes manifests pass `kubernetes-validate
//! --strict` offline, and the ConfigMap's configuration passes `check` and
//! answers the probes; the Dockerfile is checked statically (multi-stage,
//! non-root, nothing secret copied in).
//!
//! A tool missing here skips its test only off CI: with `PORTCULLIS_CI=1`
//! (set by .ci/run, which installs them) a missing tool fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::common::gateway::{check, free_addr, run_bounded, Gateway, BIN};
use crate::common::request;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The program, or `None` when it is absent and this is not CI (the test
/// then returns); on CI a missing tool is a failure.
fn tool(name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain(extra_dirs.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("PORTCULLIS_CI").is_none(),
            "{name} is not installed (scripts/setup.sh installs it)"
        );
        eprintln!("skipped: {name} is not installed");
    }
    found
}

fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn deploy_systemd_unit_is_hardened_and_verifies() {
    let unit = read("deploy/systemd/portcullis.service");
    let set = directives(&unit);
    let value = |key: &str| -> Vec<&str> {
        set.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    for (key, want) in [
        ("Type", "forking"),
        ("PIDFile", "/run/portcullis/portcullis.pid"),
        (
            "ExecStart",
            "/usr/local/bin/portcullis run --daemon -c /etc/portcullis/portcullis.toml",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("KillSignal", "SIGTERM"),
        ("User", "portcullis"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("StateDirectory", "portcullis"),
        ("RuntimeDirectory", "portcullis"),
        ("LimitNOFILE", "1048576"),
    ] {
        assert_eq!(value(key), vec![want], "{key}");
    }
    let upgrade = read("deploy/systemd/upgrade.conf");
    let reload: Vec<String> = directives(&upgrade)
        .into_iter()
        .filter(|(k, _)| k == "ExecReload")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        reload,
        [
            "",
            "/usr/local/bin/portcullis check -c /etc/portcullis/portcullis.toml",
            "/bin/kill -QUIT $MAINPID",
            "/usr/local/bin/portcullis run --upgrade --daemon -c /etc/portcullis/portcullis.toml",
        ]
    );

    let Some(analyze) = tool("systemd-analyze", &[]) else {
        return;
    };
    // verify needs every Exec* binary to exist: the unit and its drop-in
    // are checked with the built binary's path.
    let dir = tempfile::tempdir().unwrap();
    let with_bin = |text: &str| text.replace("/usr/local/bin/portcullis", BIN);
    fs::write(dir.path().join("portcullis.service"), with_bin(&unit)).unwrap();
    fs::create_dir(dir.path().join("portcullis.service.d")).unwrap();
    fs::write(
        dir.path().join("portcullis.service.d/upgrade.conf"),
        with_bin(&upgrade),
    )
    .unwrap();
    let verify = |name: &str| {
        let mut cmd = Command::new(&analyze);
        cmd.arg("verify")
            .arg(dir.path().join(name))
            .env("SYSTEMD_LOG_LEVEL", "notice");
        let out = run_bounded(cmd, Duration::from_secs(60));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), said)
    };
    let (ok, said) = verify("portcullis.service");
    // Warnings (an unknown or misspelt directive) exit 0 too: any line
    // about our unit fails the test. Other units of the machine may warn.
    let ours: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("portcullis") || l.contains("upgrade.conf"))
        .collect();
    assert!(ok && ours.is_empty(), "systemd-analyze verify:\n{said}");

    // The check is live: a misspelt directive is reported.
    fs::write(
        dir.path().join("typo.service"),
        with_bin(&unit).replace("ProtectHome=", "ProtectHom="),
    )
    .unwrap();
    let (_, said) = verify("typo.service");
    assert!(said.contains("ProtectHom"), "{said}");
}

/// The files of deploy/kubernetes, sorted.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn deploy_kubernetes_manifests_validate_offline() {
    let files = manifests();
    let kinds: String = files
        .iter()
        .map(|f| fs::read_to_string(f).unwrap())
        .collect();
    for kind in [
        "kind: Deployment",
        "kind: Service",
        "kind: PodDisruptionBudget",
        "kind: HorizontalPodAutoscaler",
        "apiVersion: autoscaling/v2",
        "kind: ConfigMap",
        "kind: Secret",
        "name: portcullis-redis",
    ] {
        assert!(kinds.contains(kind), "deploy/kubernetes lacks {kind}");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let Some(validate) = tool("kubernetes-validate", &[home.join(".local/bin")]) else {
        return;
    };
    let mut cmd = Command::new(validate);
    cmd.arg("--strict").args(&files);
    let out = run_bounded(cmd, Duration::from_secs(120));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate:\n{said}");
    assert!(!said.contains("ERROR"), "{said}");
    // Every document was validated, none skipped as unknown.
    assert_eq!(said.matches(" passed for resource ").count(), 9, "{said}");

    // The validator is live: an unknown field fails under --strict.
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.yaml");
    fs::write(
        &typo,
        read("deploy/kubernetes/deployment.yaml").replace("readinessProbe:", "readynessProbe:"),
    )
    .unwrap();
    let mut cmd = Command::new(tool("kubernetes-validate", &[home.join(".local/bin")]).unwrap());
    cmd.arg("--strict").arg(&typo);
    assert!(!run_bounded(cmd, Duration::from_secs(120)).status.success());
}

/// The `KEY: |` blocks of the ConfigMap's `data`, unindented.
fn config_map_files(text: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line
            .strip_prefix("  ")
            .and_then(|l| l.strip_suffix(": |"))
            .filter(|n| !n.starts_with(' '))
        {
            files.push((name.to_string(), String::new()));
        } else if let (Some(body), Some((_, file))) = (line.strip_prefix("    "), files.last_mut())
        {
            file.push_str(body);
            file.push('\n');
        } else if line.trim().is_empty() {
            if let Some((_, file)) = files.last_mut() {
                file.push('\n');
            }
        } else if !line.starts_with("    ") && !files.is_empty() && !line.starts_with("  #") {
            break;
        }
    }
    files
}

#[test]
fn deploy_kubernetes_config_checks_rolls_and_answers_probes() {
    let config_map = read("deploy/kubernetes/configmap.yaml");
    let deployment = read("deploy/kubernetes/deployment.yaml");
    // The checksum annotation is the ConfigMap's: a config change rolls.
    let sum = hex::encode(Sha256::digest(config_map.as_bytes()));
    assert!(
        deployment.contains(&format!("checksum/config: \"{sum}\"")),
        "update the checksum/config annotation to {sum} (sha256sum deploy/kubernetes/configmap.yaml)"
    );
    for probe in ["path: /readyz", "path: /healthz", "port: admin"] {
        assert!(deployment.contains(probe), "{probe}");
    }
    let files = config_map_files(&config_map);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["portcullis.toml", "api_keys.toml"]);
    let main = &files[0].1;
    assert!(main.contains("kind = \"redis\"") && main.contains("redis://portcullis-redis:6379"));
    assert!(main.contains("listen = \"0.0.0.0:9901\""));
    let secret = read("deploy/kubernetes/secret.yaml");
    let token = secret
        .lines()
        .find_map(|l| l.trim().strip_prefix("admin.token: "))
        .expect("admin.token in secret.yaml");
    assert!(token.len() >= 16 && token.starts_with("REPLACE-ME"));

    // The pod's paths and ports, moved into a temporary directory and free
    // loopback ports.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_string_lossy().to_string();
    let (http, admin) = (free_addr(), free_addr());
    let local = |text: &str| {
        text.replace("/etc/portcullis-admin/", &format!("{d}/"))
            .replace("/etc/portcullis/", &format!("{d}/"))
            .replace("/run/portcullis/", &format!("{d}/"))
            .replace("/var/lib/portcullis/", &format!("{d}/"))
            .replace("0.0.0.0:8080", &http.to_string())
            .replace("0.0.0.0:9901", &admin.to_string())
            .replace("grace_period_seconds = 20", "grace_period_seconds = 1")
    };
    for (name, body) in &files {
        fs::write(dir.path().join(name), local(body)).unwrap();
    }
    fs::write(dir.path().join("admin.token"), token).unwrap();
    let out = check(&dir.path().join("portcullis.toml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Redis is absent here: on_error = "local" serves anyway, and the
    // probes answer without the token whatever Host the kubelet sends.
    let full = fs::read_to_string(dir.path().join("portcullis.toml")).unwrap();
    let gw = Gateway::start_full(full, http, dir);
    for path in ["/healthz", "/readyz"] {
        let mut ok = false;
        crate::common::wait_until(Duration::from_secs(10), || {
            ok = request(admin, "GET", path, &[("host", "10.1.2.3:9901")], None).status == 200;
            ok
        });
        assert!(ok, "{path}: {}", gw.stderr());
    }
    let status = request(admin, "GET", "/status", &[("host", "10.1.2.3:9901")], None);
    assert_eq!(status.status, 401);
    assert_eq!(request(http, "GET", "/ping", &[], None).status, 200);
}

#[test]
fn deploy_dockerfile_is_multi_stage_non_root_and_copies_no_secret() {
    let text = read("deploy/container/Dockerfile");
    // Instructions, with continuation lines joined.
    let joined = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let (op, rest) = l.trim().split_once(' ')?;
            Some((op.to_ascii_uppercase(), rest.trim().to_string()))
        })
        .collect();
    let froms: Vec<&(String, String)> =
        instructions.iter().filter(|(op, _)| op == "FROM").collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");
    assert_eq!(froms[0].1, "rust:1-bookworm AS build");
    assert_eq!(froms[1].1, "debian:bookworm-slim");
    let runtime_start = instructions
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .unwrap();
    let (build, runtime) = instructions.split_at(runtime_start);

    // Build stage: the build packages .ci/run installs, and only sources.
    let ci = read(".ci/run");
    let apt = |stage: &[(String, String)]| -> Vec<String> {
        stage
            .iter()
            .filter(|(op, _)| op == "RUN")
            .filter_map(|(_, cmd)| cmd.split("--no-install-recommends").nth(1))
            .flat_map(|rest| rest.split("&&").next().unwrap_or("").split_whitespace())
            .map(str::to_string)
            .collect()
    };
    let build_packages = apt(build);
    assert!(!build_packages.is_empty());
    for p in &build_packages {
        assert!(
            ci.contains(&format!(" {p}")),
            "{p} is not in .ci/run's packages"
        );
    }
    for (op, args) in build {
        if op == "COPY" || op == "ADD" {
            assert_eq!(op, "COPY", "ADD fetches or unpacks: use COPY");
            let sources: Vec<&str> = args.split_whitespace().collect();
            for s in &sources[..sources.len() - 1] {
                assert!(
                    ["Cargo.toml", "Cargo.lock", "src", "benches"].contains(s),
                    "the build stage copies {s}"
                );
            }
        }
    }

    // Runtime stage: only runtime libraries, the binary from the build
    // stage, a non-root user, the ports, SIGTERM, no HEALTHCHECK.
    let mut runtime_packages = apt(runtime);
    runtime_packages.sort();
    assert_eq!(
        runtime_packages,
        [
            "ca-certificates",
            "libmodsecurity3",
            "libssl3",
            "modsecurity-crs"
        ]
    );
    let copies: Vec<&String> = runtime
        .iter()
        .filter(|(op, _)| op == "COPY" || op == "ADD")
        .map(|(_, a)| a)
        .collect();
    assert_eq!(
        copies,
        ["--from=build /src/target/release/portcullis /usr/local/bin/portcullis"]
    );
    let users: Vec<&String> = runtime
        .iter()
        .filter(|(op, _)| op == "USER")
        .map(|(_, a)| a)
        .collect();
    let user = users.last().expect("a USER in the runtime stage");
    let name = user.split(':').next().unwrap();
    assert!(
        name != "root" && name != "0" && !name.is_empty(),
        "USER {user}"
    );
    let last_user = instructions
        .iter()
        .rposition(|(op, _)| op == "USER")
        .unwrap();
    assert!(
        instructions[last_user + 1..]
            .iter()
            .all(|(op, _)| op != "RUN" && op != "USER"),
        "nothing runs after USER, and it stays non-root"
    );
    let has = |op: &str, args: &str| instructions.iter().any(|(o, a)| o == op && a == args);
    assert!(has("EXPOSE", "8080 8443 9901"));
    assert!(has("STOPSIGNAL", "SIGTERM"));
    assert!(!instructions.iter().any(|(op, _)| op == "HEALTHCHECK"));
    for (op, args) in &instructions {
        if op == "ENV" || op == "ARG" || op == "LABEL" {
            let upper = args.to_ascii_uppercase();
            for word in ["SECRET", "TOKEN", "PASSWORD", "KEY"] {
                assert!(!upper.contains(word), "{op} {args} names a secret");
            }
        }
    }
    // The build context leaves out build output and the demo keys.
    let ignore = read(".dockerignore");
    for entry in ["target", "certs", "conf", "*.pem", "*.key", "*.token"] {
        assert!(ignore.lines().any(|l| l == entry), ".dockerignore: {entry}");
    }
}
