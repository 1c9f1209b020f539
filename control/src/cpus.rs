//! The CPUs offloadd may run on (its affinity mask) and what the configured workers
//! and cores make of them: warnings, logged at start, for workers that will share
//! CPUs or cores a worker cannot be pinned to. The device runs anyway; a core that
//! does not exist at all is a config error (crate::config).

use crate::config::DataplaneConfig;

/// The CPUs this process may run on (sched_getaffinity), in order; all of the
/// machine's as far as std can tell if the call fails.
pub fn allowed() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel writes at most
    // its size into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        return (0..n).collect();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: cpu < CPU_SETSIZE, the size of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// What is wrong with `d`'s workers and cores for a process allowed on `allowed`,
/// one sentence each (empty: nothing).
pub fn warnings(d: &DataplaneConfig, allowed: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    if d.workers > allowed.len() {
        out.push(format!(
            "dataplane.workers = {} but offloadd may use {} CPU(s) ({}): workers will share CPUs",
            d.workers,
            allowed.len(),
            cpu_list(allowed)
        ));
    }
    for core in shared_cores(&d.cores) {
        out.push(format!(
            "dataplane.cores lists core {core} more than once: those workers share it"
        ));
    }
    for &core in d.cores.iter().filter(|c| !allowed.contains(c)) {
        out.push(format!(
            "dataplane.cores: core {core} is not among the CPUs offloadd may use ({}): \
             its worker runs unpinned or outside that set",
            cpu_list(allowed)
        ));
    }
    out
}

/// The cores listed more than once, each once, in order.
fn shared_cores(cores: &[usize]) -> Vec<usize> {
    let mut sorted = cores.to_vec();
    sorted.sort_unstable();
    let mut shared: Vec<usize> = sorted
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    shared.dedup();
    shared
}

/// `cpus` as the kernel writes CPU lists: "0-3,6".
pub fn cpu_list(cpus: &[usize]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        parts.push(if cpus[i] == start {
            start.to_string()
        } else {
            format!("{start}-{}", cpus[i])
        });
        i += 1;
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dataplane(workers: usize, cores: &[usize]) -> DataplaneConfig {
        DataplaneConfig {
            workers,
            cores: cores.to_vec(),
            ..DataplaneConfig::default()
        }
    }

    #[test]
    fn cpu_lists_are_ranges() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(cpu_list(&[1]), "1");
        assert_eq!(cpu_list(&[0, 2, 3]), "0,2-3");
        assert_eq!(cpu_list(&[]), "none");
    }

    #[test]
    fn workers_within_the_allowed_cpus_are_quiet() {
        assert!(warnings(&dataplane(2, &[]), &[0, 1]).is_empty());
        assert!(warnings(&dataplane(2, &[2, 3]), &[2, 3]).is_empty());
        assert!(warnings(&dataplane(1, &[1]), &[0, 1, 2]).is_empty());
    }

    #[test]
    fn more_workers_than_cpus_is_a_warning() {
        let w = warnings(&dataplane(3, &[]), &[2, 3]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("workers = 3") && w[0].contains("2 CPU(s) (2-3)"),
            "{w:?}"
        );
    }

    #[test]
    fn shared_cores_are_named_once() {
        let w = warnings(&dataplane(4, &[1, 0, 1, 1]), &[0, 1, 2, 3]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("core 1 more than once"), "{w:?}");
    }

    #[test]
    fn cores_outside_the_affinity_are_named() {
        let w = warnings(&dataplane(2, &[0, 3]), &[0, 1]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("core 3 is not among") && w[0].contains("(0-1)"),
            "{w:?}"
        );
    }

    #[test]
    fn this_process_may_use_some_cpu() {
        let a = allowed();
        assert!(!a.is_empty());
        assert!(a.windows(2).all(|w| w[0] < w[1]), "{a:?}");
    }
}
