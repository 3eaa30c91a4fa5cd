//! CPUs: parsing `--cpus` lists, pinning threads, and a thread's own CPU time.

use crate::error::BenchError;

/// Parses `0-3,8` into `[0, 1, 2, 3, 8]` (order kept; duplicates allowed, as taskset).
pub fn parse_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.split(',').map(str::trim) {
        let num = |s: &str| {
            s.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{s}` in `{text}` is not a CPU number"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("`{part}` runs backwards"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(num(part)?),
        }
    }
    Ok(cpus)
}

/// The CPUs this process may run on.
pub fn allowed() -> Vec<usize> {
    core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect()
}

/// Pins the calling thread to `cpu`.
pub fn pin(cpu: usize) -> Result<(), BenchError> {
    let ok = allowed().contains(&cpu)
        && core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
    if ok {
        return Ok(());
    }
    let allowed: Vec<String> = allowed().iter().map(usize::to_string).collect();
    Err(BenchError::Pin {
        cpu,
        allowed: allowed.join(","),
    })
}

/// Seconds of CPU the calling thread has used.
pub fn thread_time_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write into.
    let r = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if r != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Asks the kernel to wake the calling thread's timed waits within 1 ns of their deadline
/// rather than the default 50 µs slack: open-loop sends are scheduled to the microsecond.
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists() {
        assert_eq!(parse_list("0-3,8").unwrap(), [0, 1, 2, 3, 8]);
        assert_eq!(parse_list("1").unwrap(), [1]);
        assert!(parse_list("3-1").is_err());
        assert!(parse_list("a").is_err());
        assert!(parse_list("").is_err());
    }

    #[test]
    fn pinning_to_a_cpu_we_may_not_use_says_which_we_may() {
        let e = pin(usize::MAX).unwrap_err().to_string();
        assert!(e.contains("--cpus"), "{e}");
        assert!(thread_time_s() > 0.0);
    }
}
