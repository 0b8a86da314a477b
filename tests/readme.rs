//! The README's walk-through, run as it is written: its shell block is cut
//! out of README.md and run with bash, on free ports instead of the fixed
//! ones (several test runs may share a machine) and with the binary this
//! test build made instead of `target/release/kawal` (the one `cargo build
//! --release` line is dropped). Any command that fails fails the test.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The first ```sh block after the `heading` line.
fn shell_block(readme: &str, heading: &str) -> String {
    let at = readme
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?} in README.md"));
    let start = at + readme[at..].find("```sh\n").expect("a sh block") + "```sh\n".len();
    let end = start + readme[start..].find("```").expect("its end");
    readme[start..end].to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `script` with bash from the repository root, failing on the first
/// failing command; kills what it left running; bounded by `limit`.
fn run(script: &str, limit: Duration) -> String {
    let script = format!("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n{script}");
    let mut child = Command::new("bash")
        .args(["-c", &script])
        .current_dir(ROOT)
        .env_remove("RUST_LOG")
        // The machine's proxy settings must not catch curl's loopback calls.
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("all_proxy")
        .env_remove("ALL_PROXY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    match status {
        Some(s) if s.success() => out,
        _ => panic!("{status:?}\n--- script\n{script}\n--- stdout\n{out}\n--- stderr\n{err}"),
    }
}

#[test]
fn the_walk_through_works_as_pasted() {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).unwrap();
    let block = shell_block(&readme, "## Walk-through");
    assert!(
        block.contains("target/release/kawal --config config/demo.toml"),
        "{block}"
    );
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let mut config = std::fs::read_to_string(format!("{ROOT}/config/demo.toml")).unwrap();
    let mut script: String = block
        .lines()
        .filter(|l| l.trim() != "cargo build --release")
        .map(|l| format!("{l}\n"))
        .collect();
    for port in ["8080", "15006", "15001", "15000"] {
        let free = free_port().to_string();
        config = config.replace(port, &free);
        script = script.replace(port, &free);
    }
    let config_path = dir.join("demo.toml");
    std::fs::write(&config_path, config).unwrap();
    let script = script
        .replace("target/release/kawal", env!("CARGO_BIN_EXE_kawal"))
        .replace("config/demo.toml", &config_path.display().to_string());

    let out = run(&script, Duration::from_secs(90));
    // Step 3 and 4: the app's answer through inbound (with the trace id) and outbound.
    assert!(
        out.matches("HTTP/1.1 200").count() >= 2 || out.matches("HTTP/1.0 200").count() >= 2,
        "{out}"
    );
    assert!(out.to_ascii_lowercase().contains("x-trace-id: "), "{out}");
    // Step 5: the access lines, the metrics and the upstreams.
    let access: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("\"direction\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        access
            .iter()
            .any(|l| l["direction"] == "inbound" && l["statusCode"] == 200),
        "{out}"
    );
    assert!(
        access
            .iter()
            .any(|l| l["direction"] == "outbound" && l["statusCode"] == 200),
        "{out}"
    );
    assert!(out.contains("kawal_requests_total"), "{out}");
    assert!(out.contains("\"upstreams\""), "{out}");
    assert!(out.contains("kawal stopped"), "{out}");
}
