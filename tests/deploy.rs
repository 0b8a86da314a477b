//! What can be checked of the container deployment without a container
//! engine (none runs on the build machine, and no image registry is
//! reachable): the Dockerfile's stages, user, health check, entrypoint and
//! that every file it copies exists and is not docker-ignored; the compose
//! file's services, shared network namespaces, mounts and the kawal configs
//! they mount (checked with certificates from docker/certs.sh); the
//! Kubernetes example's native sidecar, probes, Secret and grace period.

use std::path::{Path, PathBuf};
use std::process::Command;

use kawal::config::Config;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Dockerfile instructions: (KEYWORD, arguments), continuation lines joined.
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        current.push_str(line.trim_end_matches('\\').trim());
        current.push(' ');
        if !line.ends_with('\\') {
            let (keyword, args) = current.trim().split_once(' ').unwrap_or((current.trim(), ""));
            out.push((keyword.to_ascii_uppercase(), args.trim().to_string()));
            current.clear();
        }
    }
    out
}

/// A JSON exec-form argument list (`["a", "b"]`).
fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("not exec form ({e}): {args}"))
}

fn certs_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("deploy-{}-{name}", std::process::id()));
    let ok = Command::new(format!("{ROOT}/docker/certs.sh"))
        .arg(dir.join("tls"))
        .status()
        .unwrap()
        .success();
    assert!(ok, "docker/certs.sh");
    dir
}

/// `kawal check` on `config` placed beside the demo certificates, as the
/// containers see it (/etc/kawal/kawal.toml beside /etc/kawal/tls).
fn check_with_certs(config: &Path, dir: &Path) {
    let copy = dir.join(config.file_name().unwrap());
    std::fs::copy(config, &copy).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kawal"))
        .arg("check")
        .arg(&copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        config.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // And the files it names exist: start-time checks read them.
    let cfg = Config::load(&copy).unwrap();
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(t) = cfg.inbound.as_ref().and_then(|i| i.tls.as_ref()) {
        files.extend([t.cert.clone(), t.key.clone()]);
        files.extend(t.client_ca.clone());
    }
    for t in cfg.upstreams.values().filter_map(|u| u.tls.as_ref()) {
        files.extend(
            [t.ca.clone(), t.cert.clone(), t.key.clone()]
                .into_iter()
                .flatten(),
        );
    }
    for f in files {
        assert!(
            f.exists(),
            "{}: {} is not made by docker/certs.sh",
            config.display(),
            f.display()
        );
    }
}

#[test]
fn dockerfile_builds_in_one_stage_and_runs_kawal_as_non_root_in_a_small_one() {
    let steps = instructions(&read("Dockerfile"));
    let stages: Vec<(String, String)> = steps
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, a)| {
            let parts: Vec<&str> = a.split_whitespace().collect();
            assert!(
                parts.len() == 3 && parts[1].eq_ignore_ascii_case("AS"),
                "FROM IMAGE AS NAME: {a}"
            );
            (parts[0].to_string(), parts[2].to_string())
        })
        .collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert!(stages[0].0.starts_with("rust:"), "{stages:?}");
    assert!(
        stages[1].0.starts_with("gcr.io/distroless/cc")
            || stages[1].0.contains("debian") && stages[1].0.contains("slim"),
        "{stages:?}"
    );
    let final_at = steps.iter().rposition(|(k, _)| k == "FROM").unwrap();
    let (build, run) = steps.split_at(final_at);
    // The builder runs the profile-guided build script, the one bench/pgo.sh
    // runs: a release build with the merged profile.
    assert!(
        build
            .iter()
            .any(|(k, a)| k == "RUN" && a.contains("docker/pgo-build.sh)")),
        "{build:?}"
    );
    let script = read("docker/pgo-build.sh");
    assert!(script.contains("cargo build --release --locked --bin kawal"));
    assert!(script.contains("-Cprofile-use="));
    assert!(read("bench/pgo.sh").contains("docker/pgo-build.sh"));

    // Every COPY from the context exists and is not docker-ignored; every
    // COPY --from names a stage.
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let mut copied_to = Vec::new();
    let mut copied = Vec::new();
    for (_, args) in steps.iter().filter(|(k, _)| k == "COPY") {
        let mut parts: Vec<&str> = args.split_whitespace().collect();
        let dest = parts.pop().unwrap();
        copied_to.push(dest.to_string());
        if let Some(from) = parts.first().and_then(|p| p.strip_prefix("--from=")) {
            assert!(stages.iter().any(|(_, name)| name == from), "COPY --from={from}");
            continue;
        }
        for src in parts.iter().filter(|p| !p.starts_with("--")) {
            assert!(
                Path::new(ROOT).join(src).exists(),
                "COPY {src}: no such file in the repository"
            );
            let src = src.trim_start_matches("./").trim_end_matches('/');
            copied.push(src.to_string());
            assert!(
                !ignored
                    .iter()
                    .any(|i| src == i || src.starts_with(&format!("{i}/"))),
                "COPY {src} is excluded by .dockerignore"
            );
        }
    }

    // What the script reads is in the builder: the crate, the scripts it
    // runs and the examples it builds.
    let mut needed = vec!["Cargo.toml".to_string(), "Cargo.lock".into(), "src".into()];
    let words: Vec<&str> = script.split_whitespace().collect();
    for pair in words.windows(2) {
        if pair[0] == "--example" {
            needed.push(format!("examples/{}.rs", pair[1]));
        }
    }
    needed.extend(
        words
            .iter()
            .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '/' && c != '.' && c != '-'))
            .filter(|w| w.starts_with("docker/") && w.ends_with(".sh"))
            .map(String::from),
    );
    assert!(needed.iter().any(|n| n == "docker/certs.sh"), "{needed:?}");
    assert!(needed.iter().any(|n| n == "examples/soak.rs"), "{needed:?}");
    for file in &needed {
        assert!(
            copied.contains(file),
            "the builder does not COPY {file}, which docker/pgo-build.sh reads: {copied:?}"
        );
    }

    let last = |kw: &str| run.iter().rev().find(|(k, _)| k == kw).map(|(_, a)| a.clone());
    let user = last("USER").expect("a USER in the final stage");
    let uid = user.split(':').next().unwrap();
    assert!(!["root", "0"].contains(&uid), "USER {user}");

    let entrypoint = exec_form(&last("ENTRYPOINT").expect("an ENTRYPOINT"));
    assert_eq!(
        entrypoint,
        ["/usr/local/bin/kawal", "--config", "/etc/kawal/kawal.toml"]
    );
    assert!(
        copied_to.contains(&entrypoint[0]),
        "the binary is copied to {}",
        entrypoint[0]
    );
    assert!(
        copied_to.contains(&entrypoint[2]),
        "a default config is copied to {}",
        entrypoint[2]
    );

    // The health check is kawal's own probe of its admin port's /ready.
    let health = last("HEALTHCHECK").expect("a HEALTHCHECK");
    let cmd = exec_form(health.split_once("CMD ").expect("HEALTHCHECK ... CMD [...]").1);
    assert_eq!(&cmd[..2], [entrypoint[0].as_str(), "probe"], "{cmd:?}");

    // The default config is valid and its ports are the exposed ones.
    let cfg = Config::load(&Path::new(ROOT).join("docker/kawal.toml")).unwrap();
    let admin = cfg.admin.listen.0.port();
    assert_eq!(cmd[2], format!("http://127.0.0.1:{admin}/ready"));
    let exposed: Vec<u16> = last("EXPOSE")
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    for port in [
        cfg.inbound.unwrap().listen.0.port(),
        cfg.outbound.unwrap().listen.0.port(),
        admin,
    ] {
        assert!(exposed.contains(&port), "EXPOSE {exposed:?} lacks {port}");
    }
}

#[test]
fn compose_runs_two_services_each_with_kawal_in_its_network_namespace() {
    let doc = &yaml("docker/compose.yml")[0];
    let services = doc["services"].as_hash().expect("services");
    let name = |y: &Yaml| y.as_str().unwrap().to_string();
    let names: Vec<String> = services.keys().map(name).collect();
    for s in [
        "order-app",
        "order-kawal",
        "payment-app",
        "payment-kawal",
        "jaeger",
        "prometheus",
    ] {
        assert!(names.iter().any(|n| n == s), "no service {s} in {names:?}");
    }
    let certs = certs_dir("compose");
    let docker = Path::new(ROOT).join("docker");
    for (key, service) in services {
        let key = name(key);
        let mounts = service["volumes"].as_vec().cloned().unwrap_or_default();
        for mount in &mounts {
            let mount = mount.as_str().unwrap();
            let host = mount.split(':').next().unwrap();
            if host == "./certs" {
                // Made by docker/certs.sh (its default output directory).
                assert!(read("docker/certs.sh").contains("$(dirname \"$0\")/certs"));
                continue;
            }
            assert!(docker.join(host).exists(), "{key}: {host} does not exist");
        }
        if !key.ends_with("-kawal") {
            continue;
        }
        // Built from this repository's Dockerfile (through the shared anchor).
        let build = if service["build"].is_badvalue() {
            &service["<<"]["build"]
        } else {
            &service["build"]
        };
        assert!(
            docker
                .join(build["context"].as_str().unwrap())
                .join("Dockerfile")
                .exists(),
            "{key}"
        );
        let app = key.replace("-kawal", "-app");
        assert_eq!(
            service["network_mode"].as_str(),
            Some(format!("service:{app}").as_str()),
            "{key}"
        );
        let config = mounts
            .iter()
            .filter_map(Yaml::as_str)
            .find_map(|m| m.strip_suffix(":/etc/kawal/kawal.toml:ro"))
            .unwrap_or_else(|| panic!("{key} mounts no /etc/kawal/kawal.toml"));
        assert!(
            mounts
                .iter()
                .any(|m| m.as_str() == Some("./certs:/etc/kawal/tls:ro")),
            "{key}"
        );
        let config = docker.join(config);
        check_with_certs(&config, &certs);
        let cfg = Config::load(&config).unwrap();
        // Spans go to the Jaeger service, metrics are scraped from the admin port.
        let otlp = cfg.tracing.otlp_endpoint.clone().expect("otlp_endpoint");
        assert_eq!(otlp, "http://jaeger:4318", "{key}");
        let target = format!("{app}:{}", cfg.admin.listen.0.port());
        assert!(
            read("docker/prometheus.yml").contains(&format!("\"{target}\"")),
            "{target}"
        );
        assert!(
            cfg.admin.listen.0.ip().is_unspecified(),
            "{key}: admin unreachable by Prometheus"
        );
    }
    // order's kawal reaches payment's kawal by the app container's name.
    let order = Config::load(&docker.join("../examples/two-services/order.toml")).unwrap();
    assert_eq!(
        order.upstreams["payment"].endpoints[0].to_string(),
        "payment-app:15006"
    );
}

#[test]
fn kubernetes_example_runs_kawal_as_a_native_sidecar_with_probes_on_the_admin_port() {
    let docs = yaml("docker/k8s/order.yaml");
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let config = kind("ConfigMap")["data"]["kawal.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let cfg = Config::from_toml_str(&config, "docker/k8s/order.yaml").unwrap_or_else(|e| panic!("{e}"));
    let pod = &kind("Deployment")["spec"]["template"]["spec"];
    let sidecar = &pod["initContainers"][0];
    assert_eq!(
        sidecar["restartPolicy"].as_str(),
        Some("Always"),
        "a native sidecar"
    );
    let port_named = |name: &str| {
        sidecar["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap()["containerPort"]
            .as_i64()
            .unwrap()
    };
    // Probes on the admin port, which listens where the kubelet reaches it.
    assert_eq!(port_named("admin"), i64::from(cfg.admin.listen.0.port()));
    assert!(cfg.admin.listen.0.ip().is_unspecified());
    for (probe, path) in [
        ("readinessProbe", "/ready"),
        ("livenessProbe", "/live"),
        ("startupProbe", "/live"),
    ] {
        assert_eq!(sidecar[probe]["httpGet"]["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            sidecar[probe]["httpGet"]["port"].as_str(),
            Some("admin"),
            "{probe}"
        );
    }
    // The grace period covers kawal's drain after the app has stopped.
    let grace = pod["terminationGracePeriodSeconds"].as_i64().unwrap() as u64;
    assert!(
        grace > (cfg.service.drain_delay.0 + cfg.service.shutdown_grace.0).as_secs() + 5,
        "{grace}"
    );
    // Certificates from a Secret, mounted where the config names them.
    let tls_dir = cfg
        .inbound
        .as_ref()
        .unwrap()
        .tls
        .as_ref()
        .unwrap()
        .cert
        .parent()
        .unwrap()
        .to_path_buf();
    let volume = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| !v["secret"].is_badvalue())
        .expect("a Secret volume");
    let mount = sidecar["volumeMounts"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .unwrap();
    assert_eq!(Path::new(mount["mountPath"].as_str().unwrap()), tls_dir);
    // The app's calls go to kawal's outbound listener.
    let proxy = pod["containers"][0]["env"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some("HTTP_PROXY"))
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(proxy, format!("http://{}", cfg.outbound.unwrap().listen.0));
    // The config file the sidecar runs is the ConfigMap's.
    let command: Vec<&str> = sidecar["command"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(
        command,
        ["/usr/local/bin/kawal", "--config", "/etc/kawal/config/kawal.toml"]
    );
}
