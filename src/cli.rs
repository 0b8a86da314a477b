//! The command line: which command to run, `--help`, `--version`, and
//! `kawal probe URL`, the health check a container image without curl runs
//! (a blocking HTTP/1.1 GET with the standard library; exit 0 on 2xx).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use kawal::config::Config;

/// `kawal --help`.
pub const USAGE: &str = "\
kawal: a sidecar reverse proxy (mTLS, tracing, JSON logs, retries, circuit breaking)

usage:
  kawal --config FILE     run (-c FILE); SIGTERM/SIGINT drain, SIGHUP reloads FILE
  kawal check FILE        validate FILE and load the files it names: exit 0, or every problem on stderr and exit 2
  kawal probe URL         GET an http:// URL (e.g. http://127.0.0.1:15000/ready): exit 0 on 2xx, else 1
  kawal --help | -h       this text
  kawal --version | -V    the version

Every option, with its default: config/kawal.toml in the source tree.
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// Serve with the config at this path.
    Run(PathBuf),
    /// Validate the config at this path.
    Check(PathBuf),
    /// GET this URL, succeed on 2xx.
    Probe(String),
    /// Print the usage.
    Help,
    /// Print the version.
    Version,
}

/// Parses the arguments after the program name; `Err` is the message for
/// stderr (with the usage).
pub fn parse(args: &[String]) -> Result<Command, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args[..] {
        ["--config" | "-c", path] => Ok(Command::Run(path.into())),
        ["check", path] => Ok(Command::Check(path.into())),
        ["probe", url] => Ok(Command::Probe(url.into())),
        ["--help" | "-h" | "help"] => Ok(Command::Help),
        ["--version" | "-V" | "version"] => Ok(Command::Version),
        [] => Err("no command given".into()),
        _ => Err(format!("cannot read the arguments: {}", args.join(" "))),
    }
}

/// `kawal VERSION`.
pub fn version() -> String {
    format!("kawal {}", env!("CARGO_PKG_VERSION"))
}

/// `kawal check FILE`: the config, then every file it names, loaded as start would.
pub fn check(path: &Path) -> ExitCode {
    match Config::check_files(path) {
        Ok(_) => print(&format!("{}: ok", path.display())),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

/// `kawal probe URL`.
pub fn run_probe(url: &str) -> ExitCode {
    match probe(url) {
        Ok(code) if (200..300).contains(&code) => ExitCode::SUCCESS,
        Ok(code) => {
            eprintln!("{url}: {code}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `text` on stdout: exit 0.
pub fn print(text: &str) -> ExitCode {
    println!("{}", text.trim_end());
    ExitCode::SUCCESS
}

/// GETs `url` (http only) with a 2 s bound on each step; the status code, or
/// what went wrong.
pub fn probe(url: &str) -> Result<u16, String> {
    let (authority, path) = split_url(url)?;
    let timeout = Duration::from_secs(2);
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut conn = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    conn.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("{addr}: {e}"))?;
    // The status line is all a probe needs; 64 bytes hold it.
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < head.len() {
        match conn.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) => return Err(format!("{addr}: {e}")),
        }
        if head[..len].contains(&b'\n') {
            break;
        }
    }
    status_code(&head[..len]).ok_or_else(|| format!("{addr}: not an HTTP response"))
}

/// `http://host:port/path` → (`host:port`, `/path`).
fn split_url(url: &str) -> Result<(&str, &str), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs can be probed"))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    if authority
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(format!("{url}: expected http://HOST:PORT/PATH"));
    }
    Ok((authority, path))
}

/// The code of an `HTTP/1.x NNN ...` status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = std::str::from_utf8(head.split(|&b| b == b'\n').next()?).ok()?;
    let mut parts = line.split(' ');
    parts.next().filter(|v| v.starts_with("HTTP/1."))?;
    parts
        .next()?
        .trim()
        .parse()
        .ok()
        .filter(|c| (100..1000).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_every_command_and_refuses_the_rest() {
        for (line, want) in [
            ("--config a.toml", Ok(Command::Run("a.toml".into()))),
            ("-c a.toml", Ok(Command::Run("a.toml".into()))),
            ("check a.toml", Ok(Command::Check("a.toml".into()))),
            (
                "probe http://127.0.0.1:1/ready",
                Ok(Command::Probe("http://127.0.0.1:1/ready".into())),
            ),
            ("--help", Ok(Command::Help)),
            ("-h", Ok(Command::Help)),
            ("--version", Ok(Command::Version)),
            ("-V", Ok(Command::Version)),
            ("", Err(())),
            ("--config", Err(())),
            ("check", Err(())),
            ("--config a b", Err(())),
            ("run a.toml", Err(())),
        ] {
            assert_eq!(parse(&args(line)).map_err(|_| ()), want, "{line:?}");
        }
    }

    #[test]
    fn splits_probe_urls() {
        for (url, want) in [
            ("http://127.0.0.1:15000/ready", Ok(("127.0.0.1:15000", "/ready"))),
            ("http://localhost:8080", Ok(("localhost:8080", "/"))),
            ("http://[::1]:15000/live", Ok(("[::1]:15000", "/live"))),
            ("https://127.0.0.1:15000/ready", Err(())),
            ("http://127.0.0.1/ready", Err(())),
            ("127.0.0.1:15000", Err(())),
        ] {
            assert_eq!(split_url(url).map_err(|_| ()), want, "{url}");
        }
    }

    #[test]
    fn reads_the_status_code() {
        for (head, want) in [
            (&b"HTTP/1.1 200 OK\r\n"[..], Some(200)),
            (b"HTTP/1.0 503 Service Unavailable\r\n", Some(503)),
            (b"HTTP/1.1 204", Some(204)),
            (b"SSH-2.0-OpenSSH\r\n", None),
            (b"HTTP/1.1 abc\r\n", None),
            (b"", None),
        ] {
            assert_eq!(status_code(head), want, "{head:?}");
        }
    }
}
