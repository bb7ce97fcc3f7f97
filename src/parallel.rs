//! kcirc's own parallelism. candle's CPU matmul scales poorly over threads at the sizes kcirc uses (1.2–1.4×
//! on 2 cores), so kcirc runs candle single-threaded and spreads independent work units (row chunks of a batch,
//! groups of candidate circuits) over its own threads instead (≈1.9×).
//!
//! Work units are fixed by the inputs, never by the thread count, so results are byte-identical whatever
//! `--threads` says.
use std::sync::atomic::{AtomicUsize, Ordering};

static THREADS: AtomicUsize = AtomicUsize::new(1);

/// Sets kcirc's worker count and makes candle's kernels single-threaded. Call it before any other thread
/// starts (first thing in `main`): it sets `RAYON_NUM_THREADS=1` for this process.
pub fn configure(threads: usize) {
    // SAFETY-relevant: environment writes race with readers on other threads; callers do this at start-up.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    THREADS.store(threads.max(1), Ordering::Relaxed);
    keep_freed_memory();
}

/// Keeps freed tensor buffers in the process instead of handing them back to the kernel. kcirc allocates and
/// frees the same few large sizes thousands of times per second (candidate batches); glibc serves blocks above
/// its mmap threshold with fresh mappings, and the page faults of zero-filling them cost ~8% of discovery time.
/// One arena for every thread: otherwise kcirc's workers (eval after discovery, say) cannot reuse what the main
/// thread freed and the heaps add up (discover + eval on SmolLM2: 3.8 → 2.9 GB peak, 20.8 → 14.9 s).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters; called at start-up.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// kcirc's worker count (1 unless [`configure`]d).
pub fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// Memory the system can still give (`MemAvailable` of /proc/meminfo) in bytes; `None` where unknown. Used only
/// to decide how much work runs at once, never what is computed.
pub fn memory_available() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The machine's available parallelism.
pub fn available() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// Maps `f` over `items` on up to [`threads`] workers, keeping the order of `items`.
pub fn map<I: Sync, T: Send>(items: &[I], f: impl Fn(&I) -> T + Sync) -> Vec<T> {
    let n = threads().min(items.len());
    if n <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, T)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    let mut done = vec![];
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= items.len() {
                            break done;
                        }
                        done.push((i, f(&items[i])));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("worker panicked")).collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, t)| t).collect()
}
