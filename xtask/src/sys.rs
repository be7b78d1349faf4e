//! What the system tells about itself: this process's peak RSS and CPU time (/proc), CPU
//! temperature (hwmon), CPU package energy (RAPL powercap), NVIDIA temperature and energy
//! (NVML, loaded at run time when present), and the environment record (env.json).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// Peak resident set size of this process (`VmHWM` in /proc/self/status), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    status_kib(&s, "VmHWM:").map(|k| k * 1024)
}

fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Clock ticks per second of /proc/*/stat's times (`getconf CLK_TCK`, 100 on Linux).
fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU time (user + system) this process has used, seconds.
pub fn cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_stat_cpu(&s).map(|ticks| ticks as f64 / clk_tck())
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line, in ticks. The command name
/// (field 2) is in parentheses and may hold spaces: fields are counted after its `)`.
pub fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The hottest CPU-ish hwmon temperature sensor, °C (`/sys/class/hwmon/*/temp*_input`).
pub fn cpu_temp_c() -> Option<f64> {
    let mut best: Option<f64> = None;
    for dir in std::fs::read_dir("/sys/class/hwmon").ok()?.flatten() {
        let name = std::fs::read_to_string(dir.path().join("name")).unwrap_or_default();
        // GPUs (amdgpu, nouveau) report through hwmon too: keep to the CPU's sensors
        if ["amdgpu", "nouveau", "radeon", "nvme"].iter().any(|g| name.trim() == *g) {
            continue;
        }
        for f in std::fs::read_dir(dir.path()).into_iter().flatten().flatten() {
            let n = f.file_name().to_string_lossy().to_string();
            if n.starts_with("temp") && n.ends_with("_input") {
                if let Some(v) = read_num(&f.path()) {
                    let c = v / 1000.0;
                    best = Some(best.map_or(c, |b: f64| b.max(c)));
                }
            }
        }
    }
    best
}

fn read_num(p: &Path) -> Option<f64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// The CPU packages' RAPL energy counters (`/sys/class/powercap/intel-rapl:N`, AMD's too).
#[derive(Debug, Clone)]
pub struct Rapl {
    zones: Vec<(PathBuf, f64)>,
}

impl Rapl {
    pub fn open() -> Option<Rapl> {
        let mut zones = Vec::new();
        for d in std::fs::read_dir("/sys/class/powercap").ok()?.flatten() {
            let n = d.file_name().to_string_lossy().to_string();
            // top-level package zones only (intel-rapl:0, not intel-rapl:0:0)
            if n.matches(':').count() == 1 && read_num(&d.path().join("energy_uj")).is_some() {
                let max = read_num(&d.path().join("max_energy_range_uj")).unwrap_or(f64::MAX);
                zones.push((d.path().join("energy_uj"), max));
            }
        }
        (!zones.is_empty()).then_some(Rapl { zones })
    }
    /// Per-zone counters, µJ.
    pub fn read(&self) -> Vec<f64> {
        self.zones.iter().map(|(p, _)| read_num(p).unwrap_or(0.0)).collect()
    }
    /// Joules between two readings (counters wrap at `max_energy_range_uj`).
    pub fn joules(&self, a: &[f64], b: &[f64]) -> f64 {
        self.zones.iter().zip(a.iter().zip(b)).map(|((_, max), (x, y))| counter_delta(*x, *y, *max)).sum::<f64>() / 1e6
    }
}

/// `b − a` of a counter that wraps at `max`.
pub fn counter_delta(a: f64, b: f64, max: f64) -> f64 {
    if b >= a {
        b - a
    } else {
        max - a + b
    }
}

/// NVIDIA GPUs through NVML, when libnvidia-ml loads.
pub struct Nv {
    nvml: nvml_wrapper::Nvml,
    count: u32,
}

impl Nv {
    pub fn open() -> Option<Nv> {
        let nvml = nvml_wrapper::Nvml::init().ok()?;
        let count = nvml.device_count().ok()?;
        (count > 0).then_some(Nv { nvml, count })
    }
    /// (max temperature °C, total energy mJ, power W) over the devices.
    pub fn sample(&self) -> (Option<f64>, Option<f64>, Option<f64>) {
        let (mut t, mut e, mut p) = (None::<f64>, None::<f64>, None::<f64>);
        for i in 0..self.count {
            let Ok(d) = self.nvml.device_by_index(i) else { continue };
            if let Ok(c) = d.temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu) {
                t = Some(t.map_or(c as f64, |x| x.max(c as f64)));
            }
            if let Ok(mj) = d.total_energy_consumption() {
                e = Some(e.unwrap_or(0.0) + mj as f64);
            }
            if let Ok(mw) = d.power_usage() {
                p = Some(p.unwrap_or(0.0) + mw as f64 / 1e3);
            }
        }
        (t, e, p)
    }
    pub fn describe(&self) -> Value {
        let names: Vec<String> =
            (0..self.count).filter_map(|i| self.nvml.device_by_index(i).ok()?.name().ok()).collect();
        json!({"driver": self.nvml.sys_driver_version().ok(), "devices": names})
    }
}

fn cmd_out(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// `YYYY-MM-DDTHH:MM:SSZ` now (UTC).
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    iso_utc(secs)
}

/// Seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn iso_utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// CPU model name and flags from /proc/cpuinfo.
pub fn cpu_info() -> (String, String) {
    let s = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    (field("model name"), field("flags"))
}

/// The SIMD levels the CPU engine can use here.
pub fn simd() -> Vec<&'static str> {
    let mut v = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            v.push("avx2");
        }
        if std::arch::is_x86_feature_detected!("fma") {
            v.push("fma");
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            v.push("avx512f");
        }
        if std::arch::is_x86_feature_detected!("avx512bw") {
            v.push("avx512bw");
        }
        if std::arch::is_x86_feature_detected!("avx512vnni") {
            v.push("avx512vnni");
        }
        if std::arch::is_x86_feature_detected!("avx512bf16") {
            v.push("avx512bf16");
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        v.push("neon");
    }
    v
}

/// Everything about this machine and build, except the Python side and the adapters
/// (added by the caller).
pub fn environment(root: &Path) -> Value {
    let (model, flags) = cpu_info();
    let mem = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| status_kib(&s, "MemTotal:")).map(|k| k * 1024);
    let dirty = cmd_out("git", &["-C", &root.display().to_string(), "status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty());
    json!({
        "date": utc_now(),
        "git_commit": cmd_out("git", &["-C", &root.display().to_string(), "rev-parse", "HEAD"]).unwrap_or_else(|| "n/a".into()),
        "git_dirty": dirty,
        "rustc": cmd_out("rustc", &["-V"]).unwrap_or_else(|| "n/a".into()),
        "os": std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_string()).unwrap_or_else(|_| std::env::consts::OS.into()),
        "cpu_model": model,
        "cpu_flags": flags,
        "cpu_simd_used": simd(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "memory_bytes": mem,
        "hwmon_temperature": if cpu_temp_c().is_some() { "yes" } else { "n/a" },
        "rapl_energy": if Rapl::open().is_some() { "yes" } else { "n/a" },
        "nvml": Nv::open().map(|n| n.describe()).unwrap_or_else(|| json!("n/a")),
        "vk_icd_filenames": std::env::var("VK_ICD_FILENAMES").unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 30 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu(stat), Some(280));
        assert_eq!(status_kib("Name:\tx\nVmHWM:\t  2048 kB\nVmRSS: 1 kB\n", "VmHWM:"), Some(2048));
        assert!(peak_rss_bytes().unwrap() > 0);
        assert!(cpu_seconds().is_some());
    }

    #[test]
    fn wrap_and_dates() {
        assert_eq!(counter_delta(10.0, 25.0, 100.0), 15.0);
        assert_eq!(counter_delta(90.0, 5.0, 100.0), 15.0);
        assert_eq!(iso_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso_utc(1_795_825_800), "2026-11-28T00:30:00Z");
        assert_eq!(iso_utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
