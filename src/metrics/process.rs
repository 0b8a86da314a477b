//! `process_*` metrics (the Prometheus client conventions), read from
//! `/proc/self` at each scrape; on other systems they are left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of `/proc/*/stat` times: USER_HZ, 100 on every
/// Linux architecture kawal builds for (Prometheus' procfs assumes the same).
const USER_HZ: f64 = 100.0;

/// Reads the process' figures at scrape time.
#[derive(Debug)]
pub struct Process;

/// The figures from `/proc`.
#[derive(Debug, PartialEq)]
struct Figures {
    cpu_seconds: f64,
    start_time_seconds: f64,
    resident_bytes: i64,
}

/// `stat`: /proc/self/stat; `boot_time`: `btime` of /proc/stat;
/// `status`: /proc/self/status.
fn parse(stat: &str, boot_time: u64, status: &str) -> Option<Figures> {
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let (utime, stime, start) = (field(14)?, field(15)?, field(22)?);
    let rss_kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(Figures {
        cpu_seconds: (utime + stime) as f64 / USER_HZ,
        start_time_seconds: boot_time as f64 + start as f64 / USER_HZ,
        resident_bytes: rss_kib * 1024,
    })
}

fn read() -> Option<(Figures, i64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
    Some((parse(&stat, btime, &status)?, fds))
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some((f, fds)) = read() else { return Ok(()) };
        let cpu = ConstCounter::new(f.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, ConstGauge<f64>); 3] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                ConstGauge::new(f.resident_bytes as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                ConstGauge::new(fds as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                ConstGauge::new(f.start_time_seconds),
            ),
        ];
        for (name, help, g) in gauges {
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (kawal (x) y) S 1 4242 4242 0 -1 4194560 2000 0 0 0 150 50 0 0 20 0 3 0 12345 1000000 500 18446744073709551615";
        let status = "Name:\tkawal\nVmRSS:\t   20480 kB\nThreads:\t3\n";
        assert_eq!(
            parse(stat, 1_700_000_000, status),
            Some(Figures {
                cpu_seconds: 2.0,
                start_time_seconds: 1_700_000_123.45,
                resident_bytes: 20480 * 1024,
            })
        );
        assert_eq!(parse("garbage", 0, status), None);
        assert_eq!(parse(stat, 0, "Name: x\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let (f, fds) = read().expect("/proc is mounted on Linux");
        assert!(f.resident_bytes > 0 && fds > 0 && f.start_time_seconds > 1.0e9);
    }
}
